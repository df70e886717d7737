//! A first `webui up` explains itself, and claims the admin account before the site
//! opens (issue #13 items 1 and 3, PITFALLS 15), against the real dockerd and the
//! stand-in Open WebUI image (which keeps its users in its data volume and records
//! how each signup arrived: `GET /standin/users`).
//!
//! The terminal test runs `webui up` in a pseudo-terminal through tmux (its own
//! server socket, `send-keys`/`capture-pane`); tmux is installed by
//! `tests/infra/setup.sh`. Same rules as `tests/docker.rs`: a project
//! `t-fr-<name>-<pid>` per test removed by a guard; skipped with a reason without
//! dockerd or tmux outside CI, a failure in CI.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ::webui::output::strip;
use serde_json::Value;
use support::webui::{self, Webui};
use sv::*;

/// The stand-in's users, asked on the container's loopback port (not through the
/// proxy).
async fn users(port: u16) -> Value {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/standin/users"))
        .await
        .expect("stand-in answers on loopback");
    r.json().await.expect("users JSON")
}

fn admins(users: &Value) -> Vec<Value> {
    users["users"]
        .as_array()
        .map(|u| u.iter().filter(|u| u["role"] == "admin").cloned().collect())
        .unwrap_or_default()
}

fn project_dir(state: &Path, p: &Cleanup) -> PathBuf {
    state.join("projects").join(&p.name)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// Signs in through the proxy at `base` (`https://host:port`); the role when it
/// worked.
async fn signin(c: &reqwest::Client, base: &str, email: &str, password: &str) -> Option<String> {
    let r = c
        .post(format!("{base}/api/v1/auths/signin"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v["role"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn piped_first_up_claims_the_admin_before_the_site_opens_and_says_so_plainly() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("fr-pipe");
    let state = webui::state_dir();
    // Answers 503 on /health for its first 5 s, like a real first start, so the
    // stranger below surely tries while the site is still closed.
    let image = img.tag("slowstart");
    let port = free_port();
    let w = up(
        state.path(),
        &p,
        &image,
        port,
        "127.0.0.1:0",
        &["--admin-email", "Boss@First-Run.test"],
    );
    let c = client(state.path());

    // A stranger tries to sign up through the public site from the first moment on,
    // the way a bot watching new certificates would.
    let racer = {
        let c = c.clone();
        let url = w.https_url("/api/v1/auths/signup");
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(120) {
                let r = c
                    .post(&url)
                    .json(&serde_json::json!({
                        "name": "Stranger",
                        "email": "stranger@evil.test",
                        "password": "stranger-password",
                    }))
                    .send()
                    .await;
                if let Ok(r) = r {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    let done = status != 503;
                    seen.push((status, body));
                    if done {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    wait_ready(&w);
    let seen = racer.await.unwrap();
    assert!(
        seen.iter().filter(|(s, _)| *s == 503).count() >= 1,
        "the stranger saw the starting page while webui was setting up: {seen:?}"
    );

    // Exactly one admin, the one asked for, created by webui on loopback (no
    // X-Forwarded-For: it did not come through the proxy).
    let u = users(port).await;
    let a = admins(&u);
    assert_eq!(a.len(), 1, "{u}");
    assert_eq!(a[0]["email"], "boss@first-run.test", "{u}");
    assert_eq!(a[0]["via"]["x_forwarded_for"], Value::Null, "{u}");
    assert!(
        a[0]["via"]["user_agent"]
            .as_str()
            .unwrap_or("")
            .starts_with("webui/"),
        "{u}"
    );
    let first_id = a[0]["id"].clone();
    // The stranger's one request that got through (after the site opened) did not
    // make an account: signup was closed by the admin's creation.
    let (last_status, last_body) = seen.last().cloned().unwrap();
    assert_eq!(last_status, 403, "{last_body}");
    for user in u["users"].as_array().unwrap() {
        assert_ne!(user["email"], "stranger@evil.test", "{u}");
    }

    // The generated password: not printed (not a terminal), in a 0600 file, and it
    // signs in through the site.
    let out = w.output_text();
    let pw_file = project_dir(state.path(), &p).join("admin_password");
    let password = std::fs::read_to_string(&pw_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(password.len(), 24, "{password}");
    assert_eq!(mode(&pw_file), 0o600);
    assert!(
        !out.contains(&password),
        "password printed to a pipe:\n{out}"
    );
    assert_eq!(
        signin(&c, &w.https_url(""), "boss@first-run.test", &password)
            .await
            .as_deref(),
        Some("admin")
    );
    assert_eq!(
        signin(
            &c,
            &w.https_url(""),
            "boss@first-run.test",
            "wrong-password"
        )
        .await,
        None
    );

    // Piped: the same facts as plain lines, no escape codes at all.
    assert!(
        !out.contains("\x1b["),
        "escape codes in piped output:\n{out}"
    );
    for want in [
        "Open WebUI is ready at https://127.0.0.1:".to_string(),
        "certificate:".to_string(),
        webui::local_ca(state.path()).display().to_string(),
        "admin:".to_string(),
        "created boss@first-run.test".to_string(),
        pw_file.display().to_string(),
        format!("Docker volume {}", p.n("open-webui")),
        project_dir(state.path(), &p)
            .join("secret_key")
            .display()
            .to_string(),
        format!("webui --project {} status", p.name),
        format!("webui --project {} logs -f", p.name),
        format!("webui --project {} backup", p.name),
        format!("webui --project {} down", p.name),
    ] {
        assert!(out.contains(&want), "`{want}` in:\n{out}");
    }
    stop(w);

    // A second `up` on the same data: no new account, nothing changed, and it says so.
    let w = up(
        state.path(),
        &p,
        &image,
        port,
        "127.0.0.1:0",
        &["--admin-email", "other@first-run.test"],
    );
    wait_ready(&w);
    let again = users(port).await;
    assert_eq!(
        again["users"], u["users"],
        "accounts changed on the second up"
    );
    assert_eq!(admins(&again)[0]["id"], first_id);
    assert_eq!(
        std::fs::read_to_string(&pw_file).unwrap().trim(),
        password,
        "the stored password was replaced"
    );
    let out = w.output_text();
    assert!(
        out.contains("boss@first-run.test (created by webui"),
        "existing admin reported:\n{out}"
    );
    assert!(!out.contains("other@first-run.test"), "{out}");
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_password_from_the_environment_is_used_and_not_stored() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("fr-env");
    let state = webui::state_dir();
    let image = img.tag("v1");
    let port = free_port().to_string();
    let mut cmd = webui::command(state.path());
    cmd.args(up_args(&p, &image, &port, "127.0.0.1:0"))
        .env("WEBUI_ADMIN_EMAIL", "ops@first-run.test")
        .env("WEBUI_ADMIN_PASSWORD", "e2e-Passw0rd!");
    let w = Webui::start_cmd(cmd, START);
    wait_ready(&w);
    let c = client(state.path());
    assert_eq!(
        signin(&c, &w.https_url(""), "ops@first-run.test", "e2e-Passw0rd!")
            .await
            .as_deref(),
        Some("admin")
    );
    assert!(
        !project_dir(state.path(), &p)
            .join("admin_password")
            .exists(),
        "a given password is not written anywhere"
    );
    let out = w.output_text();
    assert!(out.contains("WEBUI_ADMIN_PASSWORD"), "{out}");
    assert!(!out.contains("e2e-Passw0rd!"), "{out}");
    stop(w);
}

// ------------------------------------------------------------------ the terminal

/// tmux on its own server socket (in a temporary directory), killed on drop.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn available() -> bool {
        let ok = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            if std::env::var_os("CI").is_some() {
                panic!("tmux required in CI (tests/infra/setup.sh installs it)");
            }
            eprintln!("skipping: tmux is not installed (bash tests/infra/setup.sh installs it)");
        }
        ok
    }

    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(self.dir.path().join("socket"))
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `argv` in a 200x60 terminal with exactly `env` (plus PATH and HOME).
    fn start(&self, env: &[(&str, String)], argv: &[String]) {
        let mut words = vec!["env".to_string(), "-i".to_string()];
        for k in ["PATH", "HOME", "DOCKER_HOST"] {
            if let Ok(v) = std::env::var(k) {
                words.push(format!("{k}={v}"));
            }
        }
        words.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        words.extend(argv.iter().cloned());
        // Keep the pane after the program exits, so the transcript can be read.
        let shell = format!(
            "{}; echo EXITED $?; sleep 600",
            words
                .iter()
                .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
                .collect::<Vec<_>>()
                .join(" ")
        );
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "60",
            &shell,
        ]);
    }

    /// The pane's whole history, with the escape codes of its attributes (`-e`).
    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-e", "-J", "-S", "-", "-t", "t"])
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = self.capture();
            if strip(&text).contains(needle) {
                return text;
            }
            if start.elapsed() > limit || strip(&text).contains("EXITED") {
                panic!("`{needle}` not shown in the terminal:\n{}", strip(&text));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

fn up_argv(state: &Path, p: &Cleanup, image: &str, port: u16, listen: &str) -> Vec<String> {
    let mut v = vec![
        webui::bin().to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
    ];
    v.extend(
        up_args(p, image, &port.to_string(), listen)
            .into_iter()
            .map(str::to_string),
    );
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn first_up_in_a_terminal_shows_url_certificate_admin_and_next_steps() {
    let Some(img) = docker_available() else {
        return;
    };
    if !Tmux::available() {
        return;
    }
    let p = Cleanup::new("fr-tty");
    let state = webui::state_dir();
    let image = img.tag("v1");
    let port = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let argv = up_argv(state.path(), &p, &image, port, &listen);

    let tmux = Tmux::new();
    tmux.start(&[("TERM", "xterm-256color".to_string())], &argv);
    let screen = tmux.wait_for("next:", READY);
    let text = strip(&screen);
    // Colour on a terminal (sparingly: headings and prefixes).
    assert!(
        screen.contains("\x1b["),
        "no colour on a terminal:\n{screen}"
    );
    let pw_file = project_dir(state.path(), &p).join("admin_password");
    let password = std::fs::read_to_string(&pw_file)
        .unwrap()
        .trim()
        .to_string();
    for want in [
        format!("Open WebUI is ready at https://{listen}"),
        "self-signed by webui's local CA".to_string(),
        webui::local_ca(state.path()).display().to_string(),
        "update-ca-certificates".to_string(),
        "created admin@localhost".to_string(),
        format!("password: {password}"),
        pw_file.display().to_string(),
        format!("Docker volume {}", p.n("open-webui")),
        format!("webui --project {} status", p.name),
        format!("webui --project {} logs -f", p.name),
        format!("webui --project {} backup", p.name),
        format!("webui --project {} down", p.name),
    ] {
        assert!(text.contains(&want), "`{want}` in:\n{text}");
    }
    // The password shown works.
    let c = client(state.path());
    let base = format!("https://{listen}");
    assert_eq!(
        signin(&c, &base, "admin@localhost", &password)
            .await
            .as_deref(),
        Some("admin")
    );
    tmux.run(&["send-keys", "-t", "t", "C-c"]);
    tmux.wait_for("EXITED 0", Duration::from_secs(30));
    drop(tmux);

    // Again on a terminal with NO_COLOR: no colour codes at all; the admin exists.
    let tmux = Tmux::new();
    tmux.start(
        &[
            ("TERM", "xterm-256color".to_string()),
            ("NO_COLOR", "1".to_string()),
        ],
        &argv,
    );
    let screen = tmux.wait_for("next:", READY);
    assert!(
        !screen.contains("\x1b["),
        "colour codes with NO_COLOR:\n{screen:?}"
    );
    assert!(
        screen.contains("admin@localhost (created by webui"),
        "{screen}"
    );
    assert!(!screen.contains(&password), "shown once only:\n{screen}");
    tmux.run(&["send-keys", "-t", "t", "C-c"]);
    tmux.wait_for("EXITED 0", Duration::from_secs(30));

    // -q: only the URL (and errors).
    drop(tmux);
    let mut argv_q = argv.clone();
    argv_q.insert(1, "-q".to_string());
    let tmux = Tmux::new();
    tmux.start(&[("TERM", "xterm-256color".to_string())], &argv_q);
    let screen = strip(&tmux.wait_for(&format!("https://{listen}"), READY));
    tmux.run(&["send-keys", "-t", "t", "C-c"]);
    let screen_end = strip(&tmux.wait_for("EXITED 0", Duration::from_secs(30)));
    let lines: Vec<&str> = screen_end
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("EXITED"))
        .collect();
    assert_eq!(lines, vec![format!("https://{listen}")], "{screen}");
}

// ------------------------------------------------------------------ errors and colour

#[test]
fn errors_are_plain_when_piped_coloured_when_forced_and_exit_codes_are_documented() {
    let state = webui::state_dir();
    let bad = ["up", "--admin-email", "not-an-address"];
    let f = webui::run(state.path(), &bad, Duration::from_secs(30));
    assert_eq!(f.status.code(), Some(1), "a user error: {}", f.stderr);
    assert!(
        f.stderr
            .starts_with("error: --admin-email `not-an-address` is not an email address"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("\n  hint: "), "{}", f.stderr);
    assert!(
        !f.stderr.contains("\x1b["),
        "piped: no colour\n{}",
        f.stderr
    );
    // Nothing was started or written for it.
    assert!(!state.path().join("projects").exists());

    let mut forced = vec!["--color", "always"];
    forced.extend_from_slice(&bad);
    let g = webui::run(state.path(), &forced, Duration::from_secs(30));
    assert_eq!(g.status.code(), Some(1));
    assert!(g.stderr.contains("\x1b["), "--color always: {:?}", g.stderr);
    assert_eq!(strip(&g.stderr), f.stderr, "colour only, the same words");

    let mut never = vec!["--color", "never"];
    never.extend_from_slice(&bad);
    let h = webui::run(state.path(), &never, Duration::from_secs(30));
    assert_eq!(h.stderr, f.stderr);

    let help = webui::run(state.path(), &["--help"], Duration::from_secs(30));
    assert!(help.status.success());
    let text = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "Exit status: 0 ok; 1 a user or configuration error",
        "2 an unexpected failure; 3 unhealthy (`status`, `doctor`, `cert status`)",
        "--color <WHEN>",
    ] {
        assert!(text.contains(want), "`{want}` in --help:\n{}", help.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_account_that_cannot_be_created_keeps_the_site_closed() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("fr-refused");
    let state = webui::state_dir();
    let image = img.tag("v1");
    let port = free_port();
    let mut w = up(
        state.path(),
        &p,
        &image,
        port,
        "127.0.0.1:0",
        &["--env", "STANDIN_REFUSE_SIGNUP=1"],
    );
    let c = client(state.path());
    let url = w.https_url("/api/config");
    let mut seen = Vec::new();
    let start = Instant::now();
    let status = loop {
        if let Ok(r) = c.get(&url).send().await {
            seen.push(r.status().as_u16());
        }
        if let Some(s) = w.wait(Duration::from_millis(20)) {
            break s;
        }
        assert!(
            start.elapsed() < READY,
            "webui up kept running:\n{}",
            w.output_text()
        );
    };
    let out = w.output_text();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        seen.iter().all(|s| *s == 503),
        "the site was opened without an admin: {seen:?}"
    );
    assert!(!seen.is_empty());
    for want in [
        "error: creating the admin account failed",
        "caused by: Open WebUI refused to create the admin account admin@localhost: 403",
        "hint: ",
    ] {
        assert!(out.contains(want), "`{want}` in:\n{out}");
    }
    assert!(!out.contains("Open WebUI is ready at"), "{out}");
    // The container keeps running, still without an account, for the operator to fix.
    assert_eq!(users(port).await["users"], serde_json::json!([]));
}
