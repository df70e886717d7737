//! Listening sockets handed over by a service manager (systemd socket activation:
//! `LISTEN_PID`, `LISTEN_FDS`, descriptors from 3), used in place of binding.
//!
//! The service manager keeps the socket open while `webui` restarts, so clients that
//! connect in between wait in the kernel's accept queue and are served by the next
//! process instead of being refused (docs/RELIABILITY.md); it also lets an
//! unprivileged `webui` serve ports 80 and 443. A socket is matched to a `--listen` /
//! `--http-listen` address by its own local address, so the unit's `ListenStream=`
//! lines and the flags name the same addresses.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use socket2::{SockRef, Type};

/// The first descriptor of the protocol (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;
/// More than any unit would pass; bounds what a stray variable can make us adopt.
const MAX_FDS: RawFd = 64;

/// Taken once, on the first `take`; `None` until then.
static INHERITED: Mutex<Option<Vec<(SocketAddr, TcpListener)>>> = Mutex::new(None);

/// The inherited listening socket bound to exactly `addr`, if the service manager
/// passed one (each is handed out once).
pub fn take(addr: SocketAddr) -> Option<TcpListener> {
    let mut guard = INHERITED.lock().ok()?;
    let list = guard.get_or_insert_with(collect);
    let at = list.iter().position(|(a, _)| *a == addr)?;
    Some(list.remove(at).1)
}

/// Addresses of inherited sockets that no listen address asked for; they are closed
/// (the service manager still holds them).
pub fn unused() -> Vec<SocketAddr> {
    let Ok(mut guard) = INHERITED.lock() else {
        return Vec::new();
    };
    guard
        .get_or_insert_with(collect)
        .drain(..)
        .map(|(a, _)| a)
        .collect()
}

fn collect() -> Vec<(SocketAddr, TcpListener)> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .unwrap_or(0);
    if !ours || count <= 0 {
        return Vec::new();
    }
    if count > MAX_FDS {
        tracing::warn!(
            count,
            "LISTEN_FDS is implausibly large; ignoring the passed sockets"
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for fd in FIRST_FD..FIRST_FD + count {
        // SAFETY: LISTEN_PID names this process, so the service manager passed it
        // descriptors 3..3+LISTEN_FDS; each is wrapped exactly once (this runs once,
        // under the lock) and nothing else in the program uses these numbers.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Not inherited further by what we spawn.
        let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
        let listener = TcpListener::from(owned);
        let sock = SockRef::from(&listener);
        let usable =
            sock.r#type().is_ok_and(|t| t == Type::STREAM) && sock.is_listener().unwrap_or(false);
        match listener.local_addr() {
            Ok(addr) if usable => out.push((addr, listener)),
            _ => tracing::warn!(
                fd,
                "a passed descriptor is not a listening TCP socket; ignoring it"
            ),
        }
    }
    out
}
