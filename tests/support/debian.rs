//! A fresh Debian server for tests: a container of a `debootstrap --variant=minbase
//! bookworm` root filesystem (plus curl and wget), built once by
//! `tests/install/image.sh` and imported into the real dockerd, then reused.
//! Containers run with `--network host`, are labelled `webui.test=1` and removed on
//! drop. Shared by `tests/install.rs` (install.sh) and `tests/deb.rs` (the .deb);
//! included with `#[path]`.
//!
//! Needs root, dockerd and debootstrap (tests/infra/setup.sh installs them).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

pub struct Env {
    pub docker: PathBuf,
    pub image: String,
}

/// Docker CLI and the fresh-Debian image, prepared once per test process.
pub fn env() -> Result<&'static Env, String> {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    ENV.get_or_init(prepare_env).as_ref().map_err(Clone::clone)
}

impl Env {
    /// The fresh image plus Debian `packages` (apt, from the image's mirror), built once
    /// and kept under a tag naming the base image and the packages; returns that tag.
    pub fn with_packages(&self, packages: &[&str]) -> Result<String, String> {
        let base = self.image.replace([':', '/'], "-");
        let tag = format!("webui-test/debian-plus:{base}-{}", packages.join("-"));
        let present = Command::new(&self.docker)
            .args(["image", "inspect", &tag])
            .output()
            .is_ok_and(|o| o.status.success());
        if present {
            return Ok(tag);
        }
        let dockerfile = format!(
            "FROM {}\nRUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {} >/dev/null && rm -rf /var/lib/apt/lists/*\n",
            self.image,
            packages.join(" ")
        );
        let mut child = Command::new(&self.docker)
            .args(["build", "--network", "host", "-t", &tag, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("docker build: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(dockerfile.as_bytes())
                .map_err(|e| format!("docker build: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("docker build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot build {tag} (apt-get install {}): {}",
                packages.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(tag)
    }
}

pub fn prepare_env() -> Result<Env, String> {
    let docker = match std::env::var_os("WEBUI_TEST_DOCKER_CLI") {
        Some(cli) if !cli.is_empty() => PathBuf::from(cli),
        _ if Path::new("/usr/bin/docker").exists() => PathBuf::from("/usr/bin/docker"),
        _ => PathBuf::from("docker"),
    };
    match Command::new(&docker)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "docker is not available ({} info: {}); run tests/infra/setup.sh",
                docker.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Err(format!("docker CLI {} not usable: {e}", docker.display())),
    }
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("tests/install/image.sh"))
        .env("WEBUI_TEST_DOCKER_CLI", &docker)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run tests/install/image.sh: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    if !out.status.success() {
        return Err(format!(
            "tests/install/image.sh could not make the fresh Debian image (needs root and debootstrap): {}",
            stderr.trim()
        ));
    }
    let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!(
        "install tests: image {image} ready in {:.1?}",
        started.elapsed()
    );
    Ok(Env { docker, image })
}

pub struct Run {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(what: String, out: Output) -> Run {
        let run = Run {
            what,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "---- {} -> exit {:?}\n{}{}",
            run.what, run.code, run.stdout, run.stderr
        );
        run
    }

    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "{} failed:\n{}", self.what, self.text());
        self
    }

    pub fn failed(self) -> Run {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "{} should have failed:\n{}",
            self.what,
            self.text()
        );
        self
    }

    pub fn says(&self, needle: &str) -> &Run {
        assert!(
            self.text().contains(needle),
            "{}: expected {needle:?} in:\n{}",
            self.what,
            self.text()
        );
        self
    }
}

/// A fresh server: the debootstrap image, tests/install mounted at /t, host network.
pub struct Container {
    pub docker: PathBuf,
    pub id: String,
}

impl Container {
    pub fn start(env: &Env, tag: &str) -> Container {
        Self::start_image(env, &env.image, tag)
    }

    /// Like [`Container::start`] from another image, e.g. [`Env::with_packages`].
    pub fn start_image(env: &Env, image: &str, tag: &str) -> Container {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "webui-test-install-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mount = format!("{REPO}/tests/install:/t:ro");
        let out = Command::new(&env.docker)
            .args([
                "run",
                "-d",
                "--network",
                "host",
                "--label",
                "webui.test=1",
                "--name",
                &name,
            ])
            .args(["-v", &mount, image, "sleep", "infinity"])
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Container {
            docker: env.docker.clone(),
            id,
        }
    }

    pub fn exec(&self, user: Option<&str>, envs: &[(&str, &str)], script: &str) -> Run {
        let mut cmd = Command::new(&self.docker);
        cmd.arg("exec");
        if let Some(user) = user {
            cmd.args(["-u", user]);
        }
        for (k, v) in envs {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        cmd.args([&self.id, "timeout", "600", "sh", "-c", script]);
        let what = match user {
            Some(u) => format!("[{u}] {script}"),
            None => script.to_string(),
        };
        Run::from(what, cmd.output().expect("docker exec"))
    }

    /// Copies a host file into the container.
    pub fn copy_in(&self, host: &Path, path: &str) {
        let out = Command::new(&self.docker)
            .arg("cp")
            .arg(host)
            .arg(format!("{}:{path}", self.id))
            .output()
            .expect("docker cp");
        assert!(
            out.status.success(),
            "docker cp {}: {}",
            host.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn sh(&self, script: &str) -> Run {
        self.exec(None, &[], script)
    }

    /// Inode, size, mode and mtime (ns) of a file: equal before and after = untouched.
    pub fn stat(&self, path: &str) -> String {
        self.sh(&format!("stat -c '%i %s %a %y' {path}"))
            .ok()
            .stdout
            .trim()
            .to_string()
    }

    pub fn sha256(&self, path: &str) -> String {
        let run = self.sh(&format!("sha256sum {path}")).ok();
        run.stdout.split_whitespace().next().unwrap().to_string()
    }

    pub fn exists(&self, path: &str) -> bool {
        self.sh(&format!("test -e {path}")).code == Some(0)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(&self.docker)
            .args(["rm", "-f", &self.id])
            .output();
    }
}
