//! The Postgres and Redis test images (`tests/infra/db-images.sh`, pushed by
//! `tests/infra/setup.sh` as `WEBUI_TEST_POSTGRES_IMAGE` / `WEBUI_TEST_REDIS_IMAGE`)
//! behave like the official images where webui relies on them: pulled from the local
//! registry through dockerd, reached from another container on a private network,
//! password login over TCP, data kept across container re-creation on the same
//! volume, a clean stop, Redis PING/SET/GET.
//!
//! Without dockerd or the variables the test skips with a reason, except in CI
//! (`CI` set), where that is a failure.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(60);

struct Images {
    postgres: String,
    redis: String,
}

fn images() -> Option<Images> {
    let ok = Command::new(sv::docker_cli())
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        sv::skip(
            "`docker info` fails: dockerd is not running (bash tests/infra/setup.sh starts it)",
        );
        return None;
    }
    match (
        std::env::var("WEBUI_TEST_POSTGRES_IMAGE"),
        std::env::var("WEBUI_TEST_REDIS_IMAGE"),
    ) {
        (Ok(postgres), Ok(redis)) if !postgres.is_empty() && !redis.is_empty() => {
            Some(Images { postgres, redis })
        }
        _ => {
            sv::skip(
                "WEBUI_TEST_POSTGRES_IMAGE / WEBUI_TEST_REDIS_IMAGE are not set (source /var/lib/webui-ci/env)",
            );
            None
        }
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new(sv::docker_cli())
        .args(args)
        .output()
        .expect("run the docker CLI")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs docker and fails the test unless it succeeds; returns stdout, trimmed.
fn must(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Everything of one test project carries the label `webui.test.project=<name>` (and
/// `webui.test=1`, which tests/infra/cleanup.sh removes); dropping the guard removes
/// it all by that label.
struct Project {
    name: String,
}

impl Project {
    fn new() -> Self {
        let p = Self {
            name: format!("t-h3-db-{}", std::process::id()),
        };
        p.remove_all();
        p
    }

    fn n(&self, base: &str) -> String {
        format!("{}-{base}", self.name)
    }

    fn label(&self) -> String {
        format!("webui.test.project={}", self.name)
    }

    fn filter(&self) -> String {
        format!("label={}", self.label())
    }

    fn ids(&self, list: &[&str]) -> Vec<String> {
        let mut args = list.to_vec();
        let filter = self.filter();
        args.extend_from_slice(&["--filter", &filter, "-q"]);
        let o = docker(&args);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn leftovers(&self) -> Vec<String> {
        let mut all = self.ids(&["ps", "-a"]);
        all.extend(self.ids(&["network", "ls"]));
        all.extend(self.ids(&["volume", "ls"]));
        all
    }

    fn remove_all(&self) {
        for c in self.ids(&["ps", "-a"]) {
            docker(&["rm", "-f", "-v", &c]);
        }
        for n in self.ids(&["network", "ls"]) {
            docker(&["network", "rm", &n]);
        }
        for v in self.ids(&["volume", "ls"]) {
            docker(&["volume", "rm", "-f", &v]);
        }
    }

    /// `docker run -d` of a server in this project, on its network.
    fn start(&self, name: &str, net: &str, extra: &[&str], image: &str) {
        let label = self.label();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "webui.test=1",
            "--label",
            &label,
            "--network",
            net,
        ];
        args.extend_from_slice(extra);
        args.push(image);
        must(&args);
    }

    /// A throw-away client container on the project network: `docker run --rm`.
    fn client(&self, net: &str, extra: &[&str], image: &str, cmd: &[&str]) -> Output {
        let label = self.label();
        let mut args = vec![
            "run",
            "--rm",
            "--label",
            "webui.test=1",
            "--label",
            &label,
            "--network",
            net,
        ];
        args.extend_from_slice(extra);
        args.push(image);
        args.extend_from_slice(cmd);
        docker(&args)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// psql from another container over TCP (password auth), one SQL command, tuples only.
fn psql(p: &Project, net: &str, image: &str, host: &str, password: &str, sql: &str) -> Output {
    let pw = format!("PGPASSWORD={password}");
    p.client(
        net,
        &["-e", &pw],
        image,
        &[
            "psql",
            "-h",
            host,
            "-U",
            "app",
            "-d",
            "appdb",
            "-v",
            "ON_ERROR_STOP=1",
            "-qtA",
            "-c",
            sql,
        ],
    )
}

fn wait_postgres(name: &str) {
    let start = Instant::now();
    loop {
        // Over TCP: the entrypoint's init server listens on the Unix socket only.
        let o = docker(&[
            "exec",
            name,
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-U",
            "app",
            "-d",
            "appdb",
        ]);
        if o.status.success() {
            return;
        }
        let logs = docker(&["logs", name]);
        assert!(
            start.elapsed() < READY,
            "postgres never became ready ({}):\n{}",
            text(&o),
            text(&logs)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn postgres_and_redis_images_work_like_the_official_ones() {
    let Some(img) = images() else {
        return;
    };
    let p = Project::new();
    // A real pull through dockerd from the local registry.
    must(&["pull", "-q", &img.postgres]);
    must(&["pull", "-q", &img.redis]);

    let label = p.label();
    let net = p.n("net");
    must(&[
        "network",
        "create",
        "--label",
        "webui.test=1",
        "--label",
        &label,
        &net,
    ]);
    let vol = p.n("pgdata");
    must(&[
        "volume",
        "create",
        "--label",
        "webui.test=1",
        "--label",
        &label,
        &vol,
    ]);
    let pg = p.n("postgres");
    let mount = format!("{vol}:/var/lib/postgresql/data");
    let pg_args = |password: &'static str| {
        vec![
            "-v".to_string(),
            mount.clone(),
            "-e".into(),
            format!("POSTGRES_PASSWORD={password}"),
            "-e".into(),
            "POSTGRES_USER=app".into(),
            "-e".into(),
            "POSTGRES_DB=appdb".into(),
        ]
    };
    let args = pg_args("first-secret");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    p.start(&pg, &net, &args, &img.postgres);
    wait_postgres(&pg);

    // Password login from another container; the server runs as `postgres`.
    let o = psql(
        &p,
        &net,
        &img.postgres,
        &pg,
        "first-secret",
        "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept'); SELECT current_user || ' ' || current_database();",
    );
    assert!(o.status.success(), "psql with the password:\n{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "app appdb");
    let o = psql(&p, &net, &img.postgres, &pg, "wrong", "SELECT 1");
    assert!(!o.status.success(), "a wrong password was accepted");
    assert!(
        text(&o).contains("password authentication failed"),
        "wrong password: {}",
        text(&o)
    );
    let server_user = must(&[
        "exec",
        &pg,
        "sh",
        "-c",
        "stat -c %U /proc/$(head -n 1 \"$PGDATA/postmaster.pid\")",
    ]);
    assert_eq!(server_user, "postgres", "the server's user");

    // docker stop: a clean, fast shutdown (the official image stops with SIGINT).
    let t = Instant::now();
    must(&["stop", &pg]);
    let stopped_in = t.elapsed();
    assert_eq!(must(&["inspect", "-f", "{{.State.ExitCode}}", &pg]), "0");
    let logs = text(&docker(&["logs", &pg]));
    assert!(
        logs.contains("database system is shut down"),
        "no clean shutdown in the log:\n{logs}"
    );
    assert!(
        stopped_in < Duration::from_secs(9),
        "docker stop took {stopped_in:?}: the server was killed, not shut down"
    );

    // A new container on the same volume: no second initdb, the table and the first
    // password are kept (POSTGRES_PASSWORD only applies to an empty PGDATA).
    must(&["rm", "-f", &pg]);
    let args = pg_args("ignored-now");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    p.start(&pg, &net, &args, &img.postgres);
    wait_postgres(&pg);
    let logs = text(&docker(&["logs", &pg]));
    assert!(
        logs.contains("Skipping initialization"),
        "PGDATA was initialised again:\n{logs}"
    );
    let o = psql(
        &p,
        &net,
        &img.postgres,
        &pg,
        "first-secret",
        "SELECT body FROM notes",
    );
    assert!(o.status.success(), "psql after re-creation:\n{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "kept");

    // Redis: reachable from another container (protected mode off), PING/SET/GET.
    let redis = p.n("redis");
    p.start(&redis, &net, &[], &img.redis);
    let cli = |cmd: &[&str]| -> Output {
        let mut all = vec!["redis-cli", "-h", redis.as_str()];
        all.extend_from_slice(cmd);
        p.client(&net, &[], &img.redis, &all)
    };
    let start = Instant::now();
    loop {
        let o = cli(&["PING"]);
        if String::from_utf8_lossy(&o.stdout).trim() == "PONG" {
            break;
        }
        assert!(
            start.elapsed() < READY,
            "redis never answered PONG: {}\n{}",
            text(&o),
            text(&docker(&["logs", &redis]))
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let o = cli(&["SET", "webui:key", "value-1"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "OK",
        "{}",
        text(&o)
    );
    let o = cli(&["GET", "webui:key"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "value-1",
        "{}",
        text(&o)
    );

    p.remove_all();
    assert_eq!(p.leftovers(), Vec::<String>::new(), "left behind by label");
}
