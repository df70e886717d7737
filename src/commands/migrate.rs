//! `webui migrate-db --to postgres`: move a single-instance install's database from
//! the SQLite file in its data volume into the project's Postgres container (the one
//! `up --replicas` uses, `docker::replicas`), keeping the SQLite file untouched as the
//! fallback.
//!
//! # Steps
//! 1. Checks, before anything is touched: the project's Open WebUI container exists, is
//!    webui's, on a bridge network, not already on another database (`DATABASE_URL`),
//!    the project is not already on Postgres (`database.json`), no `webui up` runs for
//!    it (its supervisor would restart what this stops), and a `--backup` file verifies
//!    and is of this project.
//! 2. Open WebUI is stopped. From here on any failure starts it again on SQLite, and
//!    a Postgres container, volume and password made by this run are removed again (they
//!    hold nothing), so `up` does not take the project for moved.
//! 3. `inspect` of the SQLite side (assets/migrate_db.py in a one-shot container of the
//!    same Open WebUI image, data volume read-only): there is a `webui.db`, and when it
//!    was last written.
//! 4. The backup: `--backup FILE` must be newer than that last write (so it holds the
//!    data being moved); otherwise migrate-db takes one itself now, while Open WebUI is
//!    stopped (`webui backup`'s code: verified, recorded in history.json).
//! 5. The Postgres container is started (or reused) with its volume and the 0600
//!    password file (`ProjectState::postgres_password`); it must hold no data yet.
//! 6. The schema: the same Open WebUI image imports `open_webui.config` once against
//!    Postgres, which runs its own Alembic migrations (DATA_DIR is a throw-away
//!    directory inside that container: the volume is not mounted).
//! 7. `inspect` again, then [`plan`] (pure, unit-tested): the same Alembic revision on
//!    both sides, every SQLite table and column present in Postgres, each column's
//!    conversion from the Postgres type ([`kind_of`]), tables in foreign-key order
//!    ([`fk_order`]). `alembic_version` (and peewee's `migratehistory`) belong to the
//!    schema creation and are not copied.
//! 8. `copy`: one transaction (see the script), row counts checked per table.
//! 9. `database.json` records the engine; `up` gives Open WebUI `DATABASE_URL` from
//!    then on. Open WebUI stays stopped; the next command is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Context;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, MigrateDbCmd, MigrateTarget};
use crate::config::Paths;
use crate::config::up::Project;
use crate::docker::project::ProjectState;
use crate::docker::spec::{self, LABEL_MANAGED, LABEL_PROJECT, Names, Net, OPENWEBUI_DATA};
use crate::docker::{self, Role, backup, ensure, pull, replicas, update as dupdate};
use crate::error::UserError;
use crate::output::Printer;

/// The copy script, run inside the Open WebUI image.
pub const SCRIPT: &str = include_str!("../../assets/migrate_db.py");
/// The state file that says which database the project's Open WebUI uses.
pub const RECORD: &str = "database.json";
/// Tables owned by the schema creation (Alembic's revision, peewee's history).
pub const SCHEMA_TABLES: &[&str] = &["alembic_version", "migratehistory"];
const SQLITE_FILE: &str = "webui.db";
const RESULT: &str = "WEBUI-RESULT ";
const ERROR: &str = "WEBUI-ERROR ";

/// `database.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// `postgres`.
    pub engine: String,
    /// The Postgres image the data directory was made by (its major version must stay).
    pub image: String,
    pub migrated_at: String,
    /// The backup that holds the SQLite data as it was moved.
    pub backup: String,
    /// Rows copied per table.
    pub rows: BTreeMap<String, u64>,
}

impl DatabaseRecord {
    pub fn load(state: &ProjectState) -> anyhow::Result<Option<Self>> {
        let path = state.dir().join(RECORD);
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .with_context(|| format!("{} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save(&self, state: &ProjectState) -> anyhow::Result<()> {
        let path = state.dir().join(RECORD);
        let tmp = state.dir().join(format!("{RECORD}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

// ---------------------------------------------------------------- the plan (pure)

/// What `inspect` reports of one side.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Side {
    pub tables: BTreeMap<String, TableInfo>,
    #[serde(default)]
    pub alembic: Vec<String>,
    /// SQLite only: the last write to the database files (epoch seconds).
    #[serde(default)]
    pub mtime: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
    pub rows: u64,
    /// Postgres only: the tables this one's foreign keys point to.
    #[serde(default)]
    pub refs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// `inspect`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Inspect {
    /// None when the volume has no `webui.db`.
    pub sqlite: Option<Side>,
    pub postgres: Side,
}

/// How a value is turned into what its Postgres column takes (the script's
/// `converter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// SQLite's 0/1 (or 'true'/'false') to a boolean.
    Bool,
    Int,
    Float,
    /// Text without NUL characters (Postgres refuses them).
    Text,
    /// JSON text checked, NUL escapes removed; non-JSON kept as a JSON string.
    Json,
    Bytes,
    /// Epoch numbers to timestamps; text passed on.
    Timestamp,
    Timestamptz,
    Date,
    Keep,
}

/// The conversion for a Postgres `information_schema` data type.
pub fn kind_of(pg_type: &str) -> Kind {
    let t = pg_type.trim().to_ascii_lowercase();
    match t.as_str() {
        "boolean" => Kind::Bool,
        "smallint" | "integer" | "bigint" => Kind::Int,
        "real" | "double precision" | "numeric" => Kind::Float,
        "json" | "jsonb" => Kind::Json,
        "bytea" => Kind::Bytes,
        "date" => Kind::Date,
        "timestamp with time zone" => Kind::Timestamptz,
        _ if t.starts_with("timestamp") => Kind::Timestamp,
        "text" | "character varying" | "character" | "uuid" | "citext" => Kind::Text,
        _ => Kind::Keep,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanColumn {
    pub name: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanTable {
    pub name: String,
    pub columns: Vec<PlanColumn>,
    /// Rows in SQLite: the count Postgres must have after the copy.
    pub rows: u64,
}

/// What `copy` does, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub tables: Vec<PlanTable>,
    /// Emptied first: every Postgres table but [`SCHEMA_TABLES`].
    pub truncate: Vec<String>,
}

/// Tables ordered so that each comes after the tables its foreign keys point to
/// (ties by name, so the order is stable); a cycle is broken at the first table by name.
pub fn fk_order(tables: &BTreeMap<String, TableInfo>) -> Vec<String> {
    let mut done: Vec<String> = Vec::new();
    let mut left: BTreeSet<&str> = tables.keys().map(String::as_str).collect();
    while !left.is_empty() {
        let ready = left.iter().copied().find(|t| {
            tables[*t]
                .refs
                .iter()
                .all(|r| r == t || !left.contains(r.as_str()))
        });
        // A cycle: take the first by name; the copy runs with triggers off.
        let next = ready.unwrap_or_else(|| left.iter().copied().next().unwrap_or_default());
        left.remove(next);
        done.push(next.to_string());
    }
    done
}

/// Tables of the target that already hold data (the schema's own excepted).
pub fn target_data(pg: &Side) -> Vec<(String, u64)> {
    pg.tables
        .iter()
        .filter(|(n, t)| t.rows > 0 && !SCHEMA_TABLES.contains(&n.as_str()))
        .map(|(n, t)| (n.clone(), t.rows))
        .collect()
}

/// The copy plan, or what stands in the way (a user error: versions differ).
pub fn plan(i: &Inspect) -> Result<Plan, UserError> {
    let Some(sqlite) = &i.sqlite else {
        return Err(UserError::new(format!(
            "there is no {SQLITE_FILE} in Open WebUI's data volume: nothing to migrate"
        )));
    };
    let pg = &i.postgres;
    if sqlite.alembic != pg.alembic {
        return Err(UserError::new(format!(
            "the SQLite database is at schema revision {}, but this Open WebUI image made Postgres at {}",
            show_revs(&sqlite.alembic),
            show_revs(&pg.alembic)
        ))
        .hint("start this version once on SQLite (`webui up`) so it upgrades its database, stop it, then migrate"));
    }
    let mut problems = Vec::new();
    let mut copy: BTreeMap<String, TableInfo> = BTreeMap::new();
    let mut columns: BTreeMap<String, Vec<PlanColumn>> = BTreeMap::new();
    for (name, st) in &sqlite.tables {
        if SCHEMA_TABLES.contains(&name.as_str()) {
            continue;
        }
        let Some(pt) = pg.tables.get(name) else {
            if st.rows > 0 {
                problems.push(format!(
                    "table {name} ({} rows) is not in the new schema",
                    st.rows
                ));
            }
            continue;
        };
        let mut cols = Vec::new();
        for c in &st.columns {
            match pt.columns.iter().find(|p| p.name == c.name) {
                Some(p) => cols.push(PlanColumn {
                    name: c.name.clone(),
                    kind: kind_of(&p.ty),
                }),
                None if st.rows > 0 => {
                    problems.push(format!("column {name}.{} is not in the new schema", c.name))
                }
                None => {}
            }
        }
        columns.insert(name.clone(), cols);
        copy.insert(name.clone(), pt.clone());
    }
    if !problems.is_empty() {
        return Err(UserError::new(format!(
            "the SQLite database does not match the schema this Open WebUI image makes: {}",
            problems.join("; ")
        ))
        .hint("the data would not fit; start this version once on SQLite (`webui up`) so it upgrades its database, then migrate"));
    }
    let tables = fk_order(&copy)
        .into_iter()
        .map(|name| PlanTable {
            rows: sqlite.tables[&name].rows,
            columns: columns.remove(&name).unwrap_or_default(),
            name,
        })
        .collect();
    let truncate = pg
        .tables
        .keys()
        .filter(|n| !SCHEMA_TABLES.contains(&n.as_str()))
        .cloned()
        .collect();
    Ok(Plan { tables, truncate })
}

fn show_revs(r: &[String]) -> String {
    if r.is_empty() {
        "(none)".into()
    } else {
        r.join("+")
    }
}

/// Whether a backup made at `backup_epoch` holds the database last written at
/// `db_mtime` (both epoch seconds; the file times have sub-second precision).
pub fn backup_is_fresh(backup_epoch: f64, db_mtime: Option<f64>) -> bool {
    // Manifest times are whole seconds: allow the second it was made in.
    db_mtime.is_none_or(|m| backup_epoch + 1.0 >= m)
}

// ---------------------------------------------------------------- the command

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Summary {
    project: String,
    engine: &'static str,
    postgres_container: String,
    postgres_volume: String,
    backup: String,
    rows: BTreeMap<String, u64>,
    repairs: BTreeMap<String, u64>,
    sqlite_kept: String,
    seconds: f64,
}

#[derive(Debug, Deserialize)]
struct CopyResult {
    copied: BTreeMap<String, u64>,
    #[serde(default)]
    repairs: BTreeMap<String, u64>,
}

pub async fn run(global: &GlobalArgs, cmd: &MigrateDbCmd, printer: Printer) -> anyhow::Result<u8> {
    let MigrateTarget::Postgres = cmd.to;
    // --json: stdout carries the summary only; progress is quiet, warnings on stderr.
    let printer = if cmd.json {
        Printer::new(true)
    } else {
        printer
    };
    let started = Instant::now();
    let paths = Paths::resolve(global);
    let project = Project::resolve(global.project.as_deref())?;
    let state = ProjectState::new(&paths.state_dir, &project);
    let names = Names::new(&project);
    let pflag = project.flag();

    if let Some(r) = DatabaseRecord::load(&state)? {
        return Err(UserError::new(format!(
            "project `{}` is already on {} (since {}, {})",
            project.key(),
            r.engine,
            r.migrated_at,
            state.dir().join(RECORD).display()
        ))
        .hint(format!("start it with `webui{pflag} up --replicas N`"))
        .into());
    }
    if let Some(run) = state.run_info() {
        return Err(UserError::new(format!(
            "`webui up` (pid {}) is serving project `{}`; it would restart Open WebUI while the data is copied",
            run.pid,
            project.key()
        ))
        .hint("stop it first (Ctrl-C, or `systemctl stop webui`), then migrate")
        .into());
    }
    let given_backup = match &cmd.backup {
        Some(f) => {
            let file = f.clone();
            let m = tokio::task::spawn_blocking(move || backup::verify(&file)).await??;
            if m.project != project.key() {
                return Err(UserError::new(format!(
                    "{} is a backup of project `{}`, not `{}`",
                    f.display(),
                    m.project,
                    project.key()
                ))
                .into());
            }
            Some((f.clone(), m))
        }
        None => None,
    };

    let docker = docker::connect().await?;
    let ow = &names.open_webui;
    let c = match docker.inspect_container(ow, None).await {
        Ok(c) => c,
        Err(e) if docker::is_not_found(&e) => {
            return Err(UserError::new(format!(
                "there is no Open WebUI container {ow} in project `{}`: nothing to migrate",
                project.key()
            ))
            .hint(format!(
                "`webui{pflag} up` makes the install; check --project"
            ))
            .into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot inspect {ow}"))),
    };
    let (spec, _) = dupdate::spec_of(&c)?;
    if let Some(url) = spec.env.get("DATABASE_URL") {
        let scheme = url.split("://").next().unwrap_or_default();
        return Err(UserError::new(format!(
            "{ow} already uses another database (DATABASE_URL={scheme}://...), not the SQLite file"
        ))
        .into());
    }
    let network = match &spec.net {
        Net::Bridge { network, .. } => network.clone(),
        Net::Host => {
            return Err(UserError::new(
                "migrate-db needs the bridge network (Open WebUI reaches Postgres by name there); this install uses --network host",
            )
            .hint(format!("run `webui{pflag} up --network bridge` once, stop it, then migrate"))
            .into());
        }
    };
    let image_id = c.image.clone().unwrap_or_default();
    let env = c
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let was_running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);

    // 2. The Postgres image now (a pull can be slow; nothing is stopped yet).
    let pg_image = cmd
        .postgres_image
        .clone()
        .unwrap_or_else(|| replicas::DEFAULT_POSTGRES_IMAGE.to_string());
    let mut ignore = |_: u8| {};
    let img = pull::ensure(
        &docker,
        &pg_image,
        crate::cli::PullPolicy::Missing,
        &printer,
        &mut ignore,
    )
    .await?;
    let pg_volume = names.postgres.clone();
    let volume_made = match ensure::volume_owner(&docker, &pg_volume, &project).await? {
        ensure::Owner::Absent => true,
        ensure::Owner::Ours => false,
        _ => {
            return Err(UserError::new(format!(
                "a volume named `{pg_volume}` exists that is not this project's Postgres (webui did not make it for `{}`)",
                project.key()
            ))
            .hint("move it aside (or use another --project) and run again")
            .into());
        }
    };
    // What this run makes is removed again if it fails: an empty Postgres and its
    // password must not make the next `up` think the project moved.
    let password_existed = state.postgres_password_path().exists();
    let mut stopped = false;
    let mut ctx = Ctx {
        docker: &docker,
        project: &project,
        network,
        image_id,
        env,
        volume: spec.volume.clone(),
        url: None,
        printer: &printer,
    };
    let outcome = async {
        // 3. Stop Open WebUI; from here on, a failure starts it again on SQLite.
        if was_running {
            printer.line(format!("stopping {ow} (its SQLite file stays as it is)"));
            stopped = true;
            dupdate::stop(&docker, ow).await?;
        }
        let backup = fresh_backup(&ctx, &paths, given_backup).await?;
        let pg = Postgres {
            image: &pg_image,
            image_id: &img.id,
            digest: img.digest.as_deref(),
            volume_made,
        };
        ctx.url = Some(start_postgres(&ctx, &state, &pg).await?);
        migrate(&ctx, &state, backup, &pg_image).await
    }
    .await;
    let pg_name = names.postgres.clone();
    let (record, copied) = match outcome {
        Ok(v) => v,
        Err(e) => {
            if volume_made && !password_existed {
                undo(&docker, &pg_name, &pg_volume, &state, &printer).await;
            }
            if stopped {
                match dupdate::start(&docker, ow).await {
                    Ok(()) => printer.warn(format!(
                        "migration stopped; {ow} runs again on its SQLite file (unchanged)"
                    )),
                    Err(e2) => printer.warn(format!("cannot start {ow} again: {e2:#}")),
                }
            }
            return Err(e);
        }
    };

    let total: u64 = copied.copied.values().sum();
    let sqlite_kept = format!("{}:{OPENWEBUI_DATA}/{SQLITE_FILE}", spec.volume);
    if cmd.json {
        let s = Summary {
            project: project.key().to_string(),
            engine: "postgres",
            postgres_container: pg_name.clone(),
            postgres_volume: pg_volume.clone(),
            backup: record.backup.clone(),
            rows: copied.copied.clone(),
            repairs: copied.repairs.clone(),
            sqlite_kept,
            seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        };
        printer.result(serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    for (what, n) in &copied.repairs {
        printer.warn(format!("{what} ({n} values)"));
    }
    printer.result(format!(
        "migrated {total} rows in {} tables to Postgres ({pg_name}) in {:.0} s; backup: {}",
        copied.copied.len(),
        started.elapsed().as_secs_f64(),
        record.backup
    ));
    printer.line(format!(
        "recorded in {}: `webui up` now runs Open WebUI on Postgres",
        state.dir().join(RECORD).display()
    ));
    printer.line("next:");
    printer.line(format!(
        "  webui{pflag} up --replicas 3 ...   (your usual flags; Open WebUI is stopped until then)"
    ));
    printer.line(
        "to go back to SQLite (the file is untouched; changes made on Postgres are not in it):",
    );
    printer.line(format!(
        "  stop webui, delete {}, then `webui{pflag} up` as before",
        state.dir().join(RECORD).display()
    ));
    Ok(0)
}

struct Ctx<'a> {
    docker: &'a Docker,
    project: &'a Project,
    network: String,
    image_id: String,
    /// Open WebUI's environment as it ran (its secret key included).
    env: Vec<String>,
    volume: String,
    /// Open WebUI's `DATABASE_URL`, once Postgres runs.
    url: Option<String>,
    printer: &'a Printer,
}

/// The Postgres container to make or reuse.
struct Postgres<'a> {
    image: &'a str,
    image_id: &'a str,
    digest: Option<&'a str>,
    volume_made: bool,
}

/// Step 4: the backup that holds the data being moved (Open WebUI is stopped). The
/// SQLite file is read first: there must be one, and its last write time decides
/// whether a `--backup` is fresh.
async fn fresh_backup(
    ctx: &Ctx<'_>,
    paths: &Paths,
    given: Option<(std::path::PathBuf, backup::Manifest)>,
) -> anyhow::Result<String> {
    let p = ctx.printer;
    let first: Inspect = script(ctx, "inspect", &[]).await?;
    let Some(sqlite) = &first.sqlite else {
        return Err(UserError::new(format!(
            "there is no {SQLITE_FILE} in volume {}: nothing to migrate",
            ctx.volume
        ))
        .into());
    };
    match given {
        Some((file, m)) => {
            let at = humantime::parse_rfc3339(&m.created)
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            if !backup_is_fresh(at, sqlite.mtime) {
                return Err(UserError::new(format!(
                    "{} was made {}, before Open WebUI last wrote its database: it does not hold everything being moved",
                    file.display(),
                    m.created
                ))
                .hint("leave out --backup: migrate-db then takes a fresh backup itself while Open WebUI is stopped")
                .into());
            }
            p.line(format!(
                "backup {} verified and newer than the database's last change",
                file.display()
            ));
            Ok(file.display().to_string())
        }
        None => {
            p.line(
                "taking a backup first (Open WebUI is stopped, so it holds exactly what is moved)",
            );
            let files = super::backup::state_files(paths, ctx.project);
            let made = super::backup::make(ctx.docker, ctx.project, &files, None, p).await?;
            Ok(made.path.display().to_string())
        }
    }
}

/// Step 5: the project's Postgres container (volume, 0600 password) running; returns
/// Open WebUI's `DATABASE_URL` for it.
async fn start_postgres(
    ctx: &Ctx<'_>,
    state: &ProjectState,
    pg: &Postgres<'_>,
) -> anyhow::Result<String> {
    let (docker, project, printer) = (ctx.docker, ctx.project, ctx.printer);
    let password = state.postgres_password()?;
    let spec = replicas::postgres(project, pg.image, pg.image_id, pg.digest, &password);
    if pg.volume_made {
        docker
            .create_volume(spec::volume_body(project, Role::Postgres))
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context(format!("cannot create volume {}", spec.volume))
            })?;
    }
    if !dupdate::exists(docker, &spec.name).await {
        ensure::create(docker, &spec).await?;
        printer.line(format!(
            "created {} ({}, volume {}, password in {})",
            spec.name,
            pg.image,
            spec.volume,
            state.postgres_password_path().display()
        ));
    }
    ensure::start(docker, &spec.name).await?;
    replicas::wait_postgres(docker, &spec.name, Duration::from_secs(120)).await?;
    printer.line(format!("{} accepts connections", spec.name));
    Ok(sqlalchemy_url(&replicas::database_url(&password)))
}

/// Steps 5 (the emptiness check) to 9, once Postgres runs.
async fn migrate(
    ctx: &Ctx<'_>,
    state: &ProjectState,
    backup_file: String,
    pg_image: &str,
) -> anyhow::Result<(DatabaseRecord, CopyResult)> {
    let p = ctx.printer;
    let url = ctx.url.clone().unwrap_or_default();
    // 5. The target must be empty.
    let first: Inspect = script(ctx, "inspect", &[]).await?;
    let data = target_data(&first.postgres);
    if !data.is_empty() {
        let list: Vec<String> = data.iter().map(|(t, n)| format!("{t} ({n})")).collect();
        return Err(UserError::new(format!(
            "the Postgres database already holds data: {}; migrate-db only fills an empty one",
            list.join(", ")
        ))
        .hint(format!(
            "if that is an earlier migration you no longer want, remove the container and volume {} (docker rm -f / docker volume rm) and run again",
            Names::new(ctx.project).postgres
        ))
        .into());
    }

    // 6. Open WebUI's own migrations make the schema.
    p.line("creating Open WebUI's tables in Postgres with its own migrations");
    let mut env = without(&ctx.env, &["DATABASE_URL", "DATA_DIR"]);
    env.push(format!("DATABASE_URL={url}"));
    env.push("DATA_DIR=/tmp/webui-migrate-data".into());
    let code = "import os; os.makedirs('/tmp/webui-migrate-data', exist_ok=True); import open_webui.config";
    let (exit, lines) = one_shot(ctx, env, vec!["-c".into(), code.into()], false).await?;
    if exit != 0 {
        let tail: Vec<String> = lines.iter().rev().take(15).rev().cloned().collect();
        anyhow::bail!(
            "Open WebUI could not create its schema in Postgres (exit {exit}):\n{}",
            tail.join("\n")
        );
    }

    // 7. The plan.
    let second: Inspect = script(ctx, "inspect", &[]).await?;
    let plan = plan(&second)?;
    let rows: u64 = plan.tables.iter().map(|t| t.rows).sum();
    p.line(format!(
        "copying {rows} rows of {} tables in one transaction",
        plan.tables.len()
    ));

    // 8. The copy.
    let plan_json = serde_json::to_string(&plan)?;
    let copied: CopyResult = script(ctx, "copy", &[("WEBUI_MIGRATE_PLAN", &plan_json)]).await?;

    // 9. Recorded.
    let record = DatabaseRecord {
        engine: "postgres".into(),
        image: pg_image.to_string(),
        migrated_at: crate::docker::pin::now_rfc3339(),
        backup: backup_file,
        rows: copied.copied.clone(),
    };
    record.save(state)?;
    Ok((record, copied))
}

/// `env` without the variables named in `drop`.
fn without(env: &[String], drop: &[&str]) -> Vec<String> {
    env.iter()
        .filter(|e| {
            let key = e.split('=').next().unwrap_or_default();
            !drop.contains(&key)
        })
        .cloned()
        .collect()
}

/// Runs the script in `mode`; its `WEBUI-RESULT` line parsed, or its error.
async fn script<T: serde::de::DeserializeOwned>(
    ctx: &Ctx<'_>,
    mode: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<T> {
    let mut env = vec![format!(
        "WEBUI_MIGRATE_SQLITE={OPENWEBUI_DATA}/{SQLITE_FILE}"
    )];
    if let Some(url) = &ctx.url {
        env.push(format!("WEBUI_MIGRATE_PG={}", libpq_url(url)));
    }
    env.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    let cmd = vec!["-c".to_string(), SCRIPT.to_string(), mode.to_string()];
    let (exit, lines) = one_shot(ctx, env, cmd, true).await?;
    for l in &lines {
        if l.starts_with("copied ") && !l.ends_with(": 0 rows") {
            ctx.printer.line(format!("  {l}"));
        }
    }
    if let Some(r) = lines.iter().rev().find_map(|l| l.strip_prefix(RESULT)) {
        return serde_json::from_str(r)
            .with_context(|| format!("the migration script's {mode} answer is not understood"));
    }
    if let Some(e) = lines.iter().rev().find_map(|l| l.strip_prefix(ERROR)) {
        anyhow::bail!("{mode} failed (nothing was changed in Postgres): {e}");
    }
    let tail: Vec<String> = lines.iter().rev().take(15).rev().cloned().collect();
    anyhow::bail!(
        "the migration script ({mode}) exited {exit} without an answer:\n{}",
        tail.join("\n")
    )
}

/// Open WebUI's `DATABASE_URL` with the psycopg (3) driver named: its images have
/// psycopg 3 (its async engine needs it) but not always psycopg2, SQLAlchemy's default
/// for `postgresql://`, which its migrations would then fail to import.
pub fn sqlalchemy_url(url: &str) -> String {
    match url.split_once("://") {
        Some(("postgresql" | "postgres", rest)) => format!("postgresql+psycopg://{rest}"),
        _ => url.to_string(),
    }
}

/// The libpq form of a SQLAlchemy URL (`postgresql+psycopg://` -> `postgresql://`).
pub fn libpq_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgres") => format!("postgresql://{rest}"),
        _ => url.to_string(),
    }
}

/// Runs `python3 ARGS` once in a container of Open WebUI's image on the project's
/// network (the data volume read-only when `mount`), waits, returns the exit code and
/// its output lines; the container is removed.
async fn one_shot(
    ctx: &Ctx<'_>,
    env: Vec<String>,
    args: Vec<String>,
    mount: bool,
) -> anyhow::Result<(i64, Vec<String>)> {
    let name = ctx.project.prefixed("migrate-db");
    remove_quietly(ctx.docker, &name).await;
    let mut labels = std::collections::HashMap::new();
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
    labels.insert(LABEL_PROJECT.to_string(), ctx.project.key().to_string());
    labels.insert("webui.role".to_string(), "migrate-db".to_string());
    let mounts = mount.then(|| {
        vec![Mount {
            target: Some(OPENWEBUI_DATA.to_string()),
            source: Some(ctx.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(true),
            ..Default::default()
        }]
    });
    let body = ContainerCreateBody {
        image: Some(ctx.image_id.clone()),
        entrypoint: Some(vec!["python3".to_string()]),
        cmd: Some(args),
        env: Some(env),
        labels: Some(labels),
        host_config: Some(HostConfig {
            mounts,
            network_mode: Some(ctx.network.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    ctx.docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot create {name}")))?;
    let result = async {
        ensure::start(ctx.docker, &name).await?;
        let mut wait = ctx.docker.wait_container(
            &name,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        let exit = match wait.next().await {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => {
                return Err(anyhow::Error::new(e).context(format!("waiting for {name}")));
            }
            None => -1,
        };
        let lines = crate::docker::logs::tail_lines(ctx.docker, &name, 5000).await?;
        Ok((exit, lines))
    }
    .await;
    remove_quietly(ctx.docker, &name).await;
    result
}

async fn remove_quietly(docker: &Docker, name: &str) {
    let _ = docker
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                v: false,
                link: false,
            }),
        )
        .await;
}

/// Removes the Postgres container, volume and password this run made (they hold no
/// data: the copy is one transaction).
async fn undo(docker: &Docker, name: &str, volume: &str, state: &ProjectState, printer: &Printer) {
    let removed = async {
        ensure::stop_and_remove(docker, name).await?;
        match docker
            .remove_volume(
                volume,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await
        {
            Ok(()) => {}
            Err(e) if docker::is_not_found(&e) => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot remove {volume}"))),
        }
        match std::fs::remove_file(state.postgres_password_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                Err(anyhow::Error::new(e).context("cannot remove the Postgres password file"))
            }
        }
    }
    .await;
    match removed {
        Ok(()) => printer.line(format!(
            "removed {name}, its volume and password again (made by this run, holding nothing)"
        )),
        Err(e) => printer.warn(format!(
            "could not remove the new, empty Postgres {name} ({e:#}); remove it (container, volume {volume}, {}) before `webui up`",
            state.postgres_password_path().display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            ty: ty.into(),
        }
    }

    fn table(cols: &[(&str, &str)], rows: u64, refs: &[&str]) -> TableInfo {
        TableInfo {
            columns: cols.iter().map(|(n, t)| col(n, t)).collect(),
            rows,
            refs: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn side(tables: Vec<(&str, TableInfo)>, rev: &str) -> Side {
        Side {
            tables: tables
                .into_iter()
                .map(|(n, t)| (n.to_string(), t))
                .collect(),
            alembic: vec![rev.to_string()],
            mtime: None,
        }
    }

    #[test]
    fn postgres_types_map_to_conversions() {
        assert_eq!(kind_of("boolean"), Kind::Bool);
        assert_eq!(kind_of("bigint"), Kind::Int);
        assert_eq!(kind_of("integer"), Kind::Int);
        assert_eq!(kind_of("double precision"), Kind::Float);
        assert_eq!(kind_of("json"), Kind::Json);
        assert_eq!(kind_of("JSONB"), Kind::Json);
        assert_eq!(kind_of("text"), Kind::Text);
        assert_eq!(kind_of("character varying"), Kind::Text);
        assert_eq!(kind_of("bytea"), Kind::Bytes);
        assert_eq!(kind_of("date"), Kind::Date);
        assert_eq!(kind_of("timestamp without time zone"), Kind::Timestamp);
        assert_eq!(kind_of("timestamp with time zone"), Kind::Timestamptz);
        assert_eq!(kind_of("ARRAY"), Kind::Keep);
        // The plan's JSON is what the script switches on.
        assert_eq!(
            serde_json::to_string(&Kind::Timestamptz).unwrap(),
            "\"timestamptz\""
        );
    }

    #[test]
    fn parents_come_before_children_and_cycles_do_not_hang() {
        let mut t = BTreeMap::new();
        t.insert("chat_message".into(), table(&[], 0, &["chat", "user"]));
        t.insert("chat".into(), table(&[], 0, &["user", "folder"]));
        t.insert("folder".into(), table(&[], 0, &["folder", "user"])); // self reference
        t.insert("user".into(), table(&[], 0, &[]));
        t.insert("tag".into(), table(&[], 0, &[]));
        let o = fk_order(&t);
        let pos = |n: &str| o.iter().position(|x| x == n).unwrap();
        assert_eq!(o.len(), 5);
        assert!(pos("user") < pos("folder"));
        assert!(pos("folder") < pos("chat"));
        assert!(pos("chat") < pos("chat_message"));
        assert_eq!(o, fk_order(&t), "stable");

        let mut c = BTreeMap::new();
        c.insert("a".into(), table(&[], 0, &["b"]));
        c.insert("b".into(), table(&[], 0, &["a"]));
        c.insert("z".into(), table(&[], 0, &["a"]));
        let o = fk_order(&c);
        assert_eq!(o.len(), 3);
        assert_eq!(o.last().map(String::as_str), Some("z"));
    }

    fn owui_pg() -> Side {
        side(
            vec![
                (
                    "alembic_version",
                    table(&[("version_num", "character varying")], 1, &[]),
                ),
                (
                    "user",
                    table(
                        &[
                            ("id", "character varying"),
                            ("settings", "json"),
                            ("new_col", "text"),
                        ],
                        0,
                        &[],
                    ),
                ),
                (
                    "chat",
                    table(
                        &[
                            ("id", "character varying"),
                            ("user_id", "character varying"),
                            ("archived", "boolean"),
                            ("created_at", "bigint"),
                        ],
                        0,
                        &["user"],
                    ),
                ),
                (
                    "config",
                    table(&[("key", "text"), ("value", "json")], 0, &[]),
                ),
            ],
            "rev2",
        )
    }

    #[test]
    fn plan_copies_every_sqlite_table_in_order_with_pg_kinds() {
        let sqlite = side(
            vec![
                (
                    "alembic_version",
                    table(&[("version_num", "varchar")], 1, &[]),
                ),
                (
                    "chat",
                    table(
                        &[
                            ("id", "varchar"),
                            ("user_id", "varchar"),
                            ("archived", "boolean"),
                            ("created_at", "bigint"),
                        ],
                        7,
                        &[],
                    ),
                ),
                (
                    "user",
                    table(&[("id", "varchar"), ("settings", "json")], 2, &[]),
                ),
                (
                    "config",
                    table(&[("key", "text"), ("value", "json")], 1, &[]),
                ),
            ],
            "rev2",
        );
        let p = plan(&Inspect {
            sqlite: Some(sqlite),
            postgres: owui_pg(),
        })
        .unwrap();
        let names: Vec<&str> = p.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["config", "user", "chat"],
            "alembic_version is the schema's; user before chat"
        );
        let chat = &p.tables[2];
        assert_eq!(chat.rows, 7);
        assert_eq!(
            chat.columns.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [Kind::Text, Kind::Text, Kind::Bool, Kind::Int]
        );
        assert_eq!(p.tables[1].columns[1].kind, Kind::Json);
        // Only the SQLite columns are copied: new_col keeps its default.
        assert_eq!(p.tables[1].columns.len(), 2);
        assert_eq!(p.truncate, ["chat", "config", "user"]);
    }

    #[test]
    fn plan_refuses_other_revisions_and_missing_tables_or_columns() {
        let mut pg = owui_pg();
        let sqlite = side(vec![("user", table(&[("id", "varchar")], 1, &[]))], "rev1");
        let e = plan(&Inspect {
            sqlite: Some(sqlite),
            postgres: pg.clone(),
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("revision rev1") && e.to_string().contains("rev2"),
            "{e}"
        );

        let sqlite = side(
            vec![
                (
                    "user",
                    table(&[("id", "varchar"), ("gone", "text")], 1, &[]),
                ),
                ("old_stuff", table(&[("id", "integer")], 3, &[])),
                ("empty_old", table(&[("id", "integer")], 0, &[])),
            ],
            "rev2",
        );
        let e = plan(&Inspect {
            sqlite: Some(sqlite.clone()),
            postgres: pg.clone(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("column user.gone"), "{e}");
        assert!(e.contains("table old_stuff (3 rows)"), "{e}");
        assert!(
            !e.contains("empty_old"),
            "an empty leftover table is skipped: {e}"
        );

        pg.tables
            .get_mut("user")
            .unwrap()
            .columns
            .push(col("gone", "text"));
        pg.tables
            .insert("old_stuff".into(), table(&[("id", "integer")], 0, &[]));
        let p = plan(&Inspect {
            sqlite: Some(sqlite),
            postgres: pg,
        })
        .unwrap();
        assert_eq!(p.tables.len(), 2);

        let e = plan(&Inspect::default()).unwrap_err().to_string();
        assert!(e.contains("nothing to migrate"), "{e}");
    }

    #[test]
    fn target_with_data_is_reported_schema_rows_are_not() {
        let mut pg = owui_pg();
        assert!(
            target_data(&pg).is_empty(),
            "alembic_version's row is the schema's"
        );
        pg.tables.get_mut("user").unwrap().rows = 3;
        assert_eq!(target_data(&pg), [("user".to_string(), 3)]);
    }

    #[test]
    fn a_backup_is_fresh_only_when_made_after_the_last_write() {
        assert!(backup_is_fresh(1000.0, Some(999.5)));
        assert!(backup_is_fresh(1000.0, Some(1000.7)), "same second");
        assert!(!backup_is_fresh(1000.0, Some(1005.0)));
        assert!(backup_is_fresh(1000.0, None));
    }

    #[test]
    fn libpq_url_drops_the_driver() {
        assert_eq!(
            libpq_url("postgresql+psycopg://u:p@postgres:5432/db"),
            "postgresql://u:p@postgres:5432/db"
        );
        assert_eq!(libpq_url("postgresql://u:p@h/db"), "postgresql://u:p@h/db");
        assert_eq!(
            sqlalchemy_url("postgresql://u:p@h/db"),
            "postgresql+psycopg://u:p@h/db"
        );
        assert_eq!(
            sqlalchemy_url("postgresql+psycopg://u:p@h/db"),
            "postgresql+psycopg://u:p@h/db"
        );
    }

    #[test]
    fn without_drops_named_variables_only() {
        let env = vec![
            "A=1".to_string(),
            "DATA_DIR=/x".into(),
            "DATA_DIRX=2".into(),
        ];
        assert_eq!(without(&env, &["DATA_DIR"]), ["A=1", "DATA_DIRX=2"]);
    }

    #[test]
    fn the_script_is_compiled_in() {
        assert!(SCRIPT.contains("def copy(plan)") && SCRIPT.contains("WEBUI-RESULT"));
    }
}
