//! `webui up --replicas N`: several Open WebUI containers on one host sharing one
//! Postgres database, one Redis and one data volume. Pure specs and names, unit-tested
//! without Docker; `commands/up.rs` runs them and `supervisor` watches them.
//!
//! # Names
//! - Replica 1 is today's container (`Names::open_webui`, `<prefix>open-webui`) on
//!   `--port`, so a single install grows in place; replica k >= 2 is
//!   `<prefix>open-webui-<k>` on `--port + k - 1`. Every replica publishes on
//!   127.0.0.1 only (bridge network; host networking is refused with replicas, since
//!   every replica would listen on the same port).
//! - With N > 1 each replica carries the label `webui.replica=<k>`; all of them the
//!   role `open-webui` and `webui.upstream=http://127.0.0.1:<port>`.
//! - Postgres: container and volume `<prefix>postgres` (role `postgres`, data
//!   `/var/lib/postgresql/data`), network alias `postgres`, user and database
//!   `openwebui`, the password generated once into the state dir
//!   (`ProjectState::postgres_password`, 0600). Nothing published.
//! - Redis: container and volume `<prefix>redis` (role `redis`, data `/data`), network
//!   alias `redis`. Nothing published.
//!
//! # Replicas' environment
//! Everything of a single Open WebUI (the one `WEBUI_SECRET_KEY`, so a session made on
//! one replica is valid on all), plus `DATABASE_URL` (secret: it holds the password;
//! `postgresql+psycopg://`, see [`database_url`]),
//! `REDIS_URL`, `WEBSOCKET_MANAGER=redis` and `WEBSOCKET_REDIS_URL` (PITFALLS 20-21:
//! without them websockets get 403 on the replicas that did not open the session, and
//! settings do not sync).
//!
//! Replica 1 starts first and must be healthy before the others are created, so
//! Open WebUI's migrations run once; replicas 2..N also carry
//! `ENABLE_DB_MIGRATIONS=false` (Open WebUI >= 0.6), so a restart of one of them never
//! migrates beside replica 1.
//!
//! # Engine side
//! [`wait_postgres`] (`pg_isready` inside the container, over TCP so the entrypoint's
//! init-only server does not count) and [`refuse_sqlite_users`] (the safety check of
//! a single install growing: its accounts live in SQLite, and replicas on a new
//! Postgres would show everyone an empty site).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::Uri;

use super::Role;
use super::ensure::Existing;
use super::spec::{self, ContainerSpec, LABEL_DIGEST, LABEL_UPSTREAM, Names, Net, Publish};
use crate::config::up::Project;
use crate::error::UserError;

pub const LABEL_REPLICA: &str = "webui.replica";
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:17";
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7";
pub const POSTGRES_DATA: &str = "/var/lib/postgresql/data";
pub const REDIS_DATA: &str = "/data";
pub const POSTGRES_ALIAS: &str = "postgres";
pub const REDIS_ALIAS: &str = "redis";
pub const POSTGRES_PORT: u16 = 5432;
pub const REDIS_PORT: u16 = 6379;
/// Postgres user and database.
pub const POSTGRES_USER: &str = "openwebui";
pub const POSTGRES_DB: &str = "openwebui";
/// Most replicas `up` runs: each holds a database connection pool and a few hundred
/// MB of memory; more belongs on several hosts (`--swarm`).
pub const MAX_REPLICAS: u32 = 16;

/// One Open WebUI replica: its index (1 first), container name and loopback port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub index: u32,
    pub name: String,
    pub port: u16,
}

impl Replica {
    /// `http://127.0.0.1:PORT/`: where it answers on this host.
    pub fn upstream(&self) -> Uri {
        // A u16 port on a literal address always parses.
        format!("http://127.0.0.1:{}/", self.port)
            .parse()
            .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1/"))
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The container name of replica `index` (1 = today's single container).
pub fn replica_name(project: &Project, index: u32) -> String {
    let base = Names::new(project).open_webui;
    match index {
        0 | 1 => base,
        k => format!("{base}-{k}"),
    }
}

/// Replicas 1..=n on `port`, `port + 1`, ... . `None` when a port would pass 65535.
pub fn layout(project: &Project, port: u16, n: u32) -> Option<Vec<Replica>> {
    (1..=n.max(1))
        .map(|k| {
            let port = u16::try_from(u32::from(port) + k - 1).ok()?;
            Some(Replica {
                index: k,
                name: replica_name(project, k),
                port,
            })
        })
        .collect()
}

/// `postgresql+psycopg://openwebui:PASSWORD@postgres:5432/openwebui`: the psycopg 3
/// driver, a dependency of Open WebUI itself; plain `postgresql://` means psycopg2,
/// which only the official image's `[postgres]` extra installs (a pip install of
/// open-webui crashes at start with `No module named 'psycopg2'`).
pub fn database_url(password: &str) -> String {
    format!(
        "postgresql+psycopg://{POSTGRES_USER}:{password}@{POSTGRES_ALIAS}:{POSTGRES_PORT}/{POSTGRES_DB}"
    )
}

/// `redis://redis:6379/0`.
pub fn redis_url() -> String {
    format!("redis://{REDIS_ALIAS}:{REDIS_PORT}/0")
}

/// What every replica gets beyond a single Open WebUI's environment. `redis`: false
/// for one replica on Postgres (after scaling back to 1): no Redis needed then.
pub fn scale_env(password: &str, redis: bool) -> Vec<(String, String)> {
    let mut env = vec![("DATABASE_URL".to_string(), database_url(password))];
    if redis {
        env.extend([
            ("REDIS_URL".to_string(), redis_url()),
            ("WEBSOCKET_MANAGER".to_string(), "redis".to_string()),
            ("WEBSOCKET_REDIS_URL".to_string(), redis_url()),
        ]);
    }
    env
}

/// Adds [`scale_env`] to replica 1's spec (`DATABASE_URL` kept secret).
pub fn with_scale_env(mut spec: ContainerSpec, env: &[(String, String)]) -> ContainerSpec {
    for (k, v) in env {
        spec.env.insert(k.clone(), v.clone());
        if k == "DATABASE_URL" && !spec.secret_env.contains(k) {
            spec.secret_env.push(k.clone());
        }
    }
    spec
}

/// Replica `r`'s spec from replica 1's (`base`, already with [`with_scale_env`]):
/// same image, environment and volume; its own name, port and labels. `labelled`:
/// N > 1, so every replica says which one it is. Replicas 2..N get
/// `ENABLE_DB_MIGRATIONS=false`: Open WebUI's migrations take no lock, and two
/// replicas migrating one empty database at once crash one of them
/// (`UniqueViolation ... alembic_version`); replica 1 migrates, alone, first.
pub fn replica_spec(base: &ContainerSpec, r: &Replica, labelled: bool) -> ContainerSpec {
    let mut s = base.clone();
    s.name = r.name.clone();
    if r.index > 1 {
        s.env
            .insert("ENABLE_DB_MIGRATIONS".to_string(), "false".to_string());
    }
    if let Some(p) = &mut s.publish {
        p.host_port = r.port;
    }
    s.labels.insert(LABEL_UPSTREAM.to_string(), r.base());
    if labelled {
        s.labels
            .insert(LABEL_REPLICA.to_string(), r.index.to_string());
    } else {
        s.labels.remove(LABEL_REPLICA);
    }
    s
}

fn service(
    project: &Project,
    role: Role,
    image: &str,
    image_id: &str,
    image_digest: Option<&str>,
    alias: &str,
    mount_target: &str,
) -> ContainerSpec {
    let names = Names::new(project);
    let mut labels = BTreeMap::new();
    labels.insert(spec::LABEL_MANAGED.to_string(), "true".to_string());
    labels.insert(spec::LABEL_PROJECT.to_string(), project.key().to_string());
    labels.insert(spec::LABEL_ROLE.to_string(), role.as_str().to_string());
    if let Some(d) = image_digest {
        labels.insert(LABEL_DIGEST.to_string(), d.to_string());
    }
    ContainerSpec {
        name: names.container(role).to_string(),
        role,
        image: image.to_string(),
        image_id: image_id.to_string(),
        env: BTreeMap::new(),
        secret_env: vec![],
        labels,
        volume: names.volume(role).to_string(),
        mount_target: mount_target.to_string(),
        net: Net::Bridge {
            network: names.network.clone(),
            aliases: vec![alias.to_string()],
        },
        publish: None::<Publish>,
        extra_hosts: vec![],
        gpus: false,
    }
}

/// The Postgres container: alias `postgres` on the project network, nothing
/// published, its data in the volume `<prefix>postgres`.
pub fn postgres(
    project: &Project,
    image: &str,
    image_id: &str,
    image_digest: Option<&str>,
    password: &str,
) -> ContainerSpec {
    let mut s = service(
        project,
        Role::Postgres,
        image,
        image_id,
        image_digest,
        POSTGRES_ALIAS,
        POSTGRES_DATA,
    );
    for (k, v) in [
        ("POSTGRES_USER", POSTGRES_USER),
        ("POSTGRES_DB", POSTGRES_DB),
        ("POSTGRES_PASSWORD", password),
        ("PGDATA", POSTGRES_DATA),
    ] {
        s.env.insert(k.to_string(), v.to_string());
    }
    s.secret_env.push("POSTGRES_PASSWORD".to_string());
    s
}

/// The Redis container: alias `redis` on the project network, nothing published,
/// `/data` in the volume `<prefix>redis`.
pub fn redis(
    project: &Project,
    image: &str,
    image_id: &str,
    image_digest: Option<&str>,
) -> ContainerSpec {
    service(
        project,
        Role::Redis,
        image,
        image_id,
        image_digest,
        REDIS_ALIAS,
        REDIS_DATA,
    )
}

/// Waits until Postgres accepts connections on TCP inside its container, up to
/// `limit`.
pub async fn wait_postgres(
    docker: &bollard::Docker,
    name: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let cmd = vec![
            "pg_isready",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            POSTGRES_USER,
            "-d",
            POSTGRES_DB,
        ];
        if super::backup::exec(docker, name, cmd).await == Some(0) {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(UserError::new(format!(
                "{name} did not accept connections within {}",
                super::health::elapsed_text(limit)
            ))
            .hint(format!(
                "see why with `docker logs {name}`; a volume initialised by another Postgres major version needs that version (--postgres-image)"
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A replica's health: `/health/db` (`{"status": true}` only while Open WebUI reaches
/// its database; `/health` stays 200 with Postgres down), so a replica that lost
/// Postgres leaves the rotation and, when all did, the site shows its hold page. An
/// Open WebUI without `/health/db` (404) is judged by `/health`.
pub async fn probe(base: &str) -> super::health::Health {
    use super::health::{self, Health};
    let url = format!("{}/health/db", base.trim_end_matches('/'));
    match health::http_get(&url, Duration::from_secs(5)).await {
        Ok((http::StatusCode::NOT_FOUND, _)) => health::probe(base).await,
        Ok((status, body)) => health::judge(status, &body),
        Err(e) => Health::Unreachable(format!("{e:#}")),
    }
}

/// Whether Open WebUI has no account, read from `GET /api/config` as `admin` reads it
/// (sign-in off counts as data of an implicit user); `None` when it does not answer.
async fn has_no_accounts(base: &str) -> Option<bool> {
    let url = format!("{}/api/config", base.trim_end_matches('/'));
    let (status, body) = super::health::http_get(&url, Duration::from_secs(5))
        .await
        .ok()?;
    if !status.is_success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(crate::admin::has_no_accounts(&v))
}

/// `up --replicas N` on a single install whose data existed and that is not on
/// Postgres yet: refused unless its running Open WebUI says it has no account (its
/// accounts and chats are in SQLite, which replicas cannot share). `existing`:
/// replica 1's container, if any.
pub async fn refuse_sqlite_users(
    existing: Option<&Existing>,
    volume: &str,
    replicas: u32,
) -> anyhow::Result<()> {
    // Already on a database of the user's own (`--env DATABASE_URL=...`).
    if existing.is_some_and(|c| c.env_value("DATABASE_URL").is_some()) {
        return Ok(());
    }
    let asked = match existing
        .filter(|c| c.running)
        .and_then(|c| c.labels.get(LABEL_UPSTREAM))
    {
        Some(u) => has_no_accounts(u).await,
        None => None,
    };
    if asked == Some(true) {
        return Ok(());
    }
    let why = match asked {
        Some(_) => "has accounts in its SQLite database",
        None => "may have accounts in its SQLite database (it is not running, so webui cannot ask)",
    };
    Err(UserError::new(format!(
        "this project's Open WebUI (volume {volume}) {why}; --replicas {replicas} would start on a new, empty Postgres database and everyone would find an empty site"
    ))
    .hint("copy the data to Postgres first with `webui migrate-db --to postgres` (the SQLite file is kept), then run `webui up --replicas N` again")
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::UpCmd;
    use crate::config::FileConfig;

    fn base(project: &Project) -> ContainerSpec {
        let s = crate::config::up::up(&UpCmd::default(), &FileConfig::default()).unwrap();
        let spec = spec::open_webui(&spec::OpenWebuiInputs {
            project,
            settings: &s,
            image_id: "sha256:01".into(),
            image_digest: None,
            secret_key: "k".repeat(32),
            public_url: "https://chat.example.com".into(),
            cors: None,
            ollama_url: None,
            host_gateway: false,
            openai_key: None,
            extra_env: vec![],
            gpus: false,
        });
        with_scale_env(spec, &scale_env("pw0123456789abcdef", true))
    }

    #[test]
    fn replica_one_keeps_todays_name_and_port_the_others_follow() {
        let p = Project::named("t-x").unwrap();
        let l = layout(&p, 3000, 3).unwrap();
        let names: Vec<(&str, u16)> = l.iter().map(|r| (r.name.as_str(), r.port)).collect();
        assert_eq!(
            names,
            [
                ("t-x-open-webui", 3000),
                ("t-x-open-webui-2", 3001),
                ("t-x-open-webui-3", 3002)
            ]
        );
        assert_eq!(l[2].upstream(), Uri::from_static("http://127.0.0.1:3002/"));
        assert!(layout(&p, 65535, 2).is_none(), "port overflow");
        assert_eq!(
            layout(&Project::default(), 3000, 1).unwrap()[0].name,
            "open-webui"
        );
    }

    #[test]
    fn every_replica_shares_secret_database_redis_and_volume() {
        let p = Project::default();
        let b = base(&p);
        let l = layout(&p, 3000, 2).unwrap();
        let r2 = replica_spec(&b, &l[1], true);
        for k in [
            "WEBUI_SECRET_KEY",
            "DATABASE_URL",
            "REDIS_URL",
            "WEBSOCKET_MANAGER",
            "WEBSOCKET_REDIS_URL",
        ] {
            assert_eq!(b.env.get(k), r2.env.get(k), "{k}");
            assert!(r2.env.contains_key(k), "{k}");
        }
        assert_eq!(r2.env["WEBSOCKET_MANAGER"], "redis");
        assert_eq!(
            r2.env["DATABASE_URL"],
            "postgresql+psycopg://openwebui:pw0123456789abcdef@postgres:5432/openwebui"
        );
        assert_eq!(r2.env["ENABLE_DB_MIGRATIONS"], "false");
        assert!(
            !replica_spec(&b, &l[0], true)
                .env
                .contains_key("ENABLE_DB_MIGRATIONS")
        );
        assert_eq!(r2.volume, b.volume);
        assert_eq!(r2.publish.as_ref().unwrap().host_port, 3001);
        assert_eq!(r2.publish.as_ref().unwrap().host_ip, "127.0.0.1");
        assert_eq!(r2.labels[LABEL_REPLICA], "2");
        assert_eq!(r2.labels[LABEL_UPSTREAM], "http://127.0.0.1:3001");
        // The password never shows in the printable summary.
        assert!(!format!("{:?}", r2.summary()).contains("pw0123456789abcdef"));
        assert_ne!(r2.hash(), b.hash());
    }

    /// A loopback HTTP server answering each path with a fixed status and body.
    async fn serve(answers: &'static [(&'static str, u16, &'static str)]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut buf = vec![0u8; 2048];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split(' ').nth(1).unwrap_or("").to_string();
                let (status, body) = answers
                    .iter()
                    .find(|(p, _, _)| *p == path)
                    .map(|(_, s, b)| (*s, *b))
                    .unwrap_or((404, "{}"));
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            }
        });
        base
    }

    #[tokio::test]
    async fn a_replica_without_its_database_is_not_healthy() {
        use crate::docker::health::Health;
        const OK: &str = r#"{"status":true}"#;
        let db_down = serve(&[
            ("/health", 200, OK),
            ("/health/db", 500, r#"{"status":false}"#),
        ])
        .await;
        assert!(matches!(probe(&db_down).await, Health::Unhealthy(_)));
        let fine = serve(&[("/health", 200, OK), ("/health/db", 200, OK)]).await;
        assert_eq!(probe(&fine).await, Health::Healthy);
        // An Open WebUI without /health/db is judged by /health.
        let old = serve(&[("/health", 200, OK)]).await;
        assert_eq!(probe(&old).await, Health::Healthy);
        let starting = serve(&[("/health", 503, "{}")]).await;
        assert!(matches!(probe(&starting).await, Health::Unhealthy(_)));
    }

    #[test]
    fn postgres_and_redis_are_on_the_network_only() {
        let p = Project::named("t-x").unwrap();
        let pg = postgres(&p, "postgres:17", "sha256:02", None, "secretpw0123456789");
        assert_eq!(pg.name, "t-x-postgres");
        assert_eq!(pg.volume, "t-x-postgres");
        assert_eq!(pg.mount_target, POSTGRES_DATA);
        assert!(pg.publish.is_none());
        assert_eq!(pg.env["POSTGRES_PASSWORD"], "secretpw0123456789");
        assert!(!format!("{:?}", pg.summary()).contains("secretpw0123456789"));
        let body = pg.create_body();
        assert!(body.host_config.unwrap().port_bindings.is_none());
        let rd = redis(&p, "redis:7", "sha256:03", None);
        assert_eq!(
            (rd.name.as_str(), rd.mount_target.as_str()),
            ("t-x-redis", "/data")
        );
        assert_eq!(
            rd.net,
            Net::Bridge {
                network: "t-x-webui".into(),
                aliases: vec!["redis".into()]
            }
        );
        assert!(rd.publish.is_none());
    }
}
