//! WebSocket (and any HTTP/1.1 upgrade) tunnels: once both sides have switched
//! protocols, bytes are copied both ways untouched until either side closes or the
//! tunnel has been idle for the idle timeout. There is no absolute lifetime: Open
//! WebUI's socket.io connection lives as long as the browser tab.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Joins the client's and the upstream's upgraded connections and copies between them.
pub async fn run(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, path: String) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(target: "webui::proxy", error = %e, %path, "upgrade did not complete");
            return;
        }
    };
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Activity {
        io: TokioIo::new(client),
        last: last.clone(),
        epoch,
    };
    let mut upstream = Activity {
        io: TokioIo::new(upstream),
        last: last.clone(),
        epoch,
    };
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 16 << 10, 16 << 10);
    tokio::pin!(copy);
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = epoch + since + idle;
        tokio::select! {
            res = &mut copy => {
                if let Err(e) = res {
                    tracing::debug!(target: "webui::proxy", error = %e, %path, "tunnel closed");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let quiet = epoch.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    tracing::debug!(target: "webui::proxy", %path, "tunnel idle for {idle:?}, closing");
                    return;
                }
            }
        }
    }
}

/// An I/O object that records when bytes last moved through it.
struct Activity<T> {
    io: T,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Activity<T> {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
