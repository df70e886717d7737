//! The Debian package (`packaging/deb.sh`) in a fresh Debian container: `dpkg -i`
//! installs it, `webui --version` runs, the bash completion loads, `man -l` renders
//! the page, the unit points at /usr/bin/webui; `dpkg -r` (and `dpkg -P`) remove the
//! binary and leave /var/lib/webui untouched.
//!
//! The package is built from the binary this `cargo test` built (the debug one; no
//! release build inside the test, which would take many minutes), with its debug info
//! stripped by the script and gzip instead of xz, so building it takes seconds.
//! `WEBUI_TEST_DEB_BINARY` packages another binary (e.g. target/release/webui).
//!
//! The container is `tests/install/image.sh`'s debootstrap'd Debian plus `man-db`
//! (built once, see `support/debian.rs`). Needs root, dockerd, debootstrap and
//! dpkg-deb; without them the test says why and skips, unless `CI` is set.

#[path = "support/debian.rs"]
mod debian;

use std::path::Path;
use std::process::Command;

use debian::{Container, env, in_ci};

const WEBUI: &str = env!("CARGO_BIN_EXE_webui");

fn skip(reason: &str) {
    if in_ci() {
        panic!("cannot run under CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Builds the .deb into `out`; its path.
fn build_deb(out: &Path) -> String {
    let binary = std::env::var("WEBUI_TEST_DEB_BINARY").unwrap_or_else(|_| WEBUI.to_string());
    eprintln!("packaging {binary} (the binary cargo test built; no release build here)");
    let run = Command::new("bash")
        .arg(Path::new(debian::REPO).join("packaging/deb.sh"))
        .args(["--binary", &binary, "--out"])
        .arg(out)
        .env("WEBUI_DEB_COMPRESS", "gzip")
        .output()
        .expect("run packaging/deb.sh");
    assert!(
        run.status.success(),
        "packaging/deb.sh failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).trim().to_string()
}

#[test]
fn the_deb_installs_runs_completes_has_a_man_page_and_removes_without_touching_data() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        return skip("dpkg-deb is not installed (Debian's dpkg)");
    }
    let env = match env() {
        Ok(env) => env,
        Err(reason) => return skip(&reason),
    };
    let image = match env.with_packages(&["man-db"]) {
        Ok(i) => i,
        Err(reason) => return skip(&reason),
    };
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let version = {
        let out = Command::new(WEBUI).arg("--version").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    let c = Container::start_image(env, &image, "deb");
    c.copy_in(Path::new(&deb), "/tmp/webui.deb");
    // Data from an earlier life of webui: the package must never touch it.
    c.sh("mkdir -p /var/lib/webui/projects/default && echo keep > /var/lib/webui/projects/default/secret_key && chmod 600 /var/lib/webui/projects/default/secret_key")
        .ok();
    let data = "/var/lib/webui/projects/default/secret_key";
    let before = (c.stat(data), c.sha256(data));

    c.sh("dpkg -i /tmp/webui.deb").ok();
    c.sh("dpkg -s webui")
        .ok()
        .says("Status: install ok installed");
    c.sh("command -v webui").ok().says("/usr/bin/webui");
    c.sh("webui --version").ok().says(&version);
    c.sh("webui version").ok().says(&version);

    // Completions: bash loads them without a word on stderr and knows the command.
    let run =
        c.sh("bash -c 'source /usr/share/bash-completion/completions/webui && complete -p webui'");
    let run = run.ok();
    assert!(run.stderr.trim().is_empty(), "bash said: {}", run.stderr);
    run.says("webui");
    for f in [
        "/usr/share/zsh/vendor-completions/_webui",
        "/usr/share/fish/vendor_completions.d/webui.fish",
    ] {
        c.sh(&format!("grep -q webui {f}")).ok();
    }

    // The man page renders.
    c.sh("MANPAGER=cat MANWIDTH=80 man -l /usr/share/man/man1/webui.1.gz")
        .ok()
        .says("NAME")
        .says("webui");
    c.sh("man -w webui")
        .ok()
        .says("/usr/share/man/man1/webui.1.gz");

    // The systemd unit, pointing at the packaged binary.
    c.sh("cat /lib/systemd/system/webui.service")
        .ok()
        .says("ExecStart=/usr/bin/webui up ");

    // Remove: the binary and the files go, the data stays as it was.
    c.sh("dpkg -r webui").ok();
    assert!(!c.exists("/usr/bin/webui"), "dpkg -r left the binary");
    assert!(!c.exists("/usr/share/bash-completion/completions/webui"));
    assert!(!c.exists("/lib/systemd/system/webui.service"));
    assert_eq!(
        (c.stat(data), c.sha256(data)),
        before,
        "dpkg -r touched the data"
    );

    // Install again and purge: the data still stays.
    c.sh("dpkg -i /tmp/webui.deb && dpkg -P webui").ok();
    assert!(!c.exists("/usr/bin/webui"));
    c.sh("dpkg -s webui").failed();
    assert_eq!(
        (c.stat(data), c.sha256(data)),
        before,
        "dpkg -P touched the data"
    );
}
