//! The proxy service's image, made from the running `webui` executable: there is no
//! registry holding our binary, and the proxy runs on this (manager) node only.
//!
//! The root filesystem is a tar of: `/webui` (this executable), every shared
//! library the process has mapped (`/proc/self/maps`) at the same path plus the
//! ELF interpreter at the path the binary names (`PT_INTERP`), the CA roots
//! (`/etc/ssl/certs/ca-certificates.crt`, for ACME), a minimal `/etc` (passwd,
//! group, nsswitch.conf "hosts: files dns", hosts, resolv.conf), `/tmp` and
//! `/var/lib/webui` (the proxy's state volume). It is imported like `docker import`
//! (`POST /images/create?fromSrc=-` with the tar as the body) as
//! `webui.invalid/proxy:<version>-<first 12 hex digits of the binary's SHA-256>`; an image
//! with that tag already present is reused.
//!
//! Every library is on the manager's disk and glibc >= 2.34 has the NSS `files`
//! and `dns` modules built in, so nothing is loaded later from a missing file.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::docker::{engine_message, is_not_found};
use crate::output::Printer;

/// Under the reserved `.invalid` domain (RFC 2606), so it names no registry: the
/// swarm agent's pull before each start fails at once and the local image is used.
/// A Docker Hub name like `webui/proxy` would be pulled, and run, if someone ever
/// pushed that tag there.
pub const REPO: &str = "webui.invalid/proxy";
/// Where the binary sits in the image.
pub const BINARY: &str = "/webui";
/// The proxy's state directory inside the image (a volume at run time).
pub const STATE_DIR: &str = "/var/lib/webui";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The tag `<version>-<sha12>` for the executable's bytes.
pub fn tag_for(binary_sha256: &str) -> String {
    format!(
        "{}-{}",
        env!("CARGO_PKG_VERSION"),
        &binary_sha256[..12.min(binary_sha256.len())]
    )
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The shared objects mapped into this process (`/proc/self/maps`): absolute paths
/// containing `.so`, deduplicated.
pub fn mapped_libraries(maps: &str) -> Vec<PathBuf> {
    let mut out = BTreeSet::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        if path.starts_with('/') && (name.ends_with(".so") || name.contains(".so.")) {
            out.insert(PathBuf::from(path));
        }
    }
    out.into_iter().collect()
}

/// The ELF interpreter (`PT_INTERP`) of a 64-bit little-endian executable, e.g.
/// `/lib64/ld-linux-x86-64.so.2`; None for a static binary or another format.
pub fn elf_interpreter(elf: &[u8]) -> Option<String> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    // "\x7fELF", class 2 (64-bit), data 1 (little-endian).
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? == 3 {
            let off = usize::try_from(u64_at(ph + 8)?).ok()?;
            let len = usize::try_from(u64_at(ph + 32)?).ok()?;
            let raw = elf.get(off..off.checked_add(len)?)?;
            let s = std::str::from_utf8(raw).ok()?.trim_end_matches('\0');
            return Some(s.to_string());
        }
    }
    None
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h
}

fn add_dir<W: Write>(b: &mut tar::Builder<W>, path: &str, mode: u32) -> anyhow::Result<()> {
    let mut h = header(0, mode, tar::EntryType::Directory);
    b.append_data(&mut h, path.trim_start_matches('/'), std::io::empty())?;
    Ok(())
}

fn add_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> anyhow::Result<()> {
    let mut h = header(data.len() as u64, mode, tar::EntryType::Regular);
    b.append_data(&mut h, path.trim_start_matches('/'), data)?;
    Ok(())
}

fn add_file<W: Write>(
    b: &mut tar::Builder<W>,
    dirs: &mut BTreeSet<String>,
    inside: &str,
    from: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    // Parent directories first, each once.
    let rel = inside.trim_start_matches('/');
    if let Some((parents, _)) = rel.rsplit_once('/') {
        let mut parent = String::new();
        for part in parents.split('/') {
            parent = format!("{parent}/{part}");
            if dirs.insert(parent.clone()) {
                add_dir(b, &parent, 0o755)?;
            }
        }
    }
    // Follow symlinks: the image gets the file itself.
    let f = std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let len = f.metadata()?.len();
    let mut h = header(len, mode, tar::EntryType::Regular);
    b.append_data(&mut h, inside.trim_start_matches('/'), f)
        .with_context(|| format!("adding {} to the proxy image", from.display()))?;
    Ok(())
}

/// Writes the root filesystem tar of the proxy image to `out`.
pub fn write_rootfs<W: Write>(exe: &Path, out: W) -> anyhow::Result<W> {
    let mut b = tar::Builder::new(out);
    let mut dirs = BTreeSet::new();
    for d in [
        "/etc", "/tmp", "/var", "/var/lib", STATE_DIR, "/proc", "/sys", "/dev",
    ] {
        dirs.insert(d.to_string());
        add_dir(&mut b, d, if d == "/tmp" { 0o1777 } else { 0o755 })?;
    }
    add_file(&mut b, &mut dirs, BINARY, exe, 0o755)?;
    let maps = std::fs::read_to_string("/proc/self/maps").context("cannot read /proc/self/maps")?;
    let mut libs = mapped_libraries(&maps);
    let head = {
        let mut f = std::fs::File::open(exe)?;
        let mut buf = vec![0u8; 64 << 10];
        let n = f.read(&mut buf)?;
        buf.truncate(n);
        buf
    };
    // The interpreter at the path the binary names (maps shows the resolved one).
    if let Some(interp) = elf_interpreter(&head) {
        let p = PathBuf::from(&interp);
        if !libs.contains(&p) {
            libs.push(p);
        }
    }
    for lib in &libs {
        let inside = lib.to_string_lossy().to_string();
        add_file(&mut b, &mut dirs, &inside, lib, 0o755)?;
    }
    if Path::new(CA_BUNDLE).exists() {
        add_file(&mut b, &mut dirs, CA_BUNDLE, Path::new(CA_BUNDLE), 0o644)?;
    }
    add_bytes(
        &mut b,
        "/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
    )?;
    add_bytes(
        &mut b,
        "/etc/group",
        0o644,
        b"root:x:0:\nnogroup:x:65534:\n",
    )?;
    add_bytes(&mut b, "/etc/nsswitch.conf", 0o644, b"hosts: files dns\n")?;
    for f in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        add_bytes(&mut b, f, 0o644, b"")?;
    }
    b.into_inner().context("finishing the proxy image's tar")
}

/// The proxy image for this executable: reused when present, else built and
/// imported. Returns its reference (`webui.invalid/proxy:<tag>`).
pub async fn ensure(docker: &Docker, printer: &Printer) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the running webui executable")?;
    let sha = sha256_file(&exe)?;
    let tag = tag_for(&sha);
    let reference = format!("{REPO}:{tag}");
    match docker.inspect_image(&reference).await {
        Ok(_) => return Ok(reference),
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot look for the image {reference}: {}",
                engine_message(&e)
            ));
        }
    }
    printer.line(format!(
        "building the proxy image {reference} from {}",
        exe.display()
    ));
    let tmp = std::env::temp_dir().join(format!("webui-proxy-rootfs-{}.tar", std::process::id()));
    let exe2 = exe.clone();
    let tmp2 = tmp.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let f = std::fs::File::create(&tmp2)
            .with_context(|| format!("cannot write {}", tmp2.display()))?;
        let f = write_rootfs(&exe2, std::io::BufWriter::new(f))?;
        f.into_inner()
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp2.display()))?
            .sync_all()?;
        Ok(())
    })
    .await??;
    let result = import(docker, &tmp, &tag).await;
    let _ = std::fs::remove_file(&tmp);
    result?;
    Ok(reference)
}

async fn import(docker: &Docker, tar: &Path, tag: &str) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(tar)
        .await
        .with_context(|| format!("cannot read {}", tar.display()))?;
    let body = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let opts = CreateImageOptions {
        from_src: Some("-".to_string()),
        repo: Some(REPO.to_string()),
        tag: Some(tag.to_string()),
        changes: vec![
            format!("ENTRYPOINT [\"{BINARY}\"]"),
            "LABEL webui.managed=true".to_string(),
        ],
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(opts), Some(bollard::body_try_stream(body)), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| {
            anyhow::anyhow!("importing the proxy image failed: {}", engine_message(&e))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_come_from_the_maps_pathnames() {
        let maps = "\
55d0-55d1 r--p 00000000 08:01 123 /usr/bin/webui
7f00-7f01 r-xp 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f01-7f02 r--p 00001000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f02-7f03 r-xp 00000000 08:01 789 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f03-7f04 rw-p 00000000 00:00 0 
7f04-7f05 rw-p 00000000 00:00 0 [heap]
7f05-7f06 r--s 00000000 00:05 1 /memfd:x (deleted)
";
        assert_eq!(
            mapped_libraries(maps),
            [
                PathBuf::from("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            ]
        );
    }

    #[test]
    fn the_interpreter_of_this_test_binary_is_found_or_it_is_static() {
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        if let Some(i) = elf_interpreter(&bytes) {
            assert!(i.starts_with('/') && i.contains("ld"), "{i}");
            assert!(Path::new(&i).exists(), "{i}");
        }
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(elf_interpreter(b"\x7fELF\x02\x01"), None, "truncated");
    }

    #[test]
    fn the_rootfs_holds_the_binary_its_libraries_and_a_minimal_etc() {
        // A small stand-in for the executable: the libraries come from this
        // process's maps either way.
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("webui");
        std::fs::write(&exe, b"\x7fELF not really").unwrap();
        let tar = write_rootfs(&exe, Vec::new()).unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect();
        for want in [
            "webui",
            "etc/nsswitch.conf",
            "etc/passwd",
            "tmp",
            "var/lib/webui",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
        assert_eq!(
            tag_for("0123456789abcdef0123"),
            format!("{}-0123456789ab", env!("CARGO_PKG_VERSION"))
        );
    }
}
