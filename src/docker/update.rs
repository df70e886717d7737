//! Docker steps of `webui update`: the running container's spec read back from its
//! labels and environment (so the new one gets the same volume, environment, secret,
//! ports and network without `webui up`'s flags), and the swap primitives (stop,
//! rename aside, create, start, remove).
//!
//! The old container is not removed before the new one is healthy: it is stopped and
//! renamed `<name>-pre-update`, so a rollback starts the very container (same image
//! digest, same settings) that ran before.

use std::collections::BTreeMap;

use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{RemoveContainerOptions, RenameContainerOptions};

use super::Role;
use super::is_not_found;
use super::spec::{
    ContainerSpec, LABEL_DIGEST, LABEL_HASH, LABEL_MANAGED, LABEL_PROJECT, LABEL_ROLE, LABEL_SPEC,
    Net, Publish,
};
use crate::error::UserError;

/// The suffix of the old container while an update runs.
pub const ASIDE_SUFFIX: &str = "-pre-update";

/// The spec a webui-made container was created from, read back from its `webui.spec`
/// label (which names every setting, secrets redacted) and its environment (which
/// has the secret values). Also returns whether its hash matches `webui.spec-hash`
/// (false for containers of an older webui: the next `webui up` then recreates it).
pub fn spec_of(c: &ContainerInspectResponse) -> anyhow::Result<(ContainerSpec, bool)> {
    let config = c.config.clone().unwrap_or_default();
    let labels = config.labels.clone().unwrap_or_default();
    let name = c
        .name
        .clone()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    let not_ours = || {
        UserError::new(format!(
            "{name} has no webui settings label; it was not made by this webui"
        ))
        .hint("run `webui up` once so that webui recreates it, then update")
    };
    let summary: BTreeMap<String, String> = labels
        .get(LABEL_SPEC)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(not_ours)?;
    let role = labels
        .get(LABEL_ROLE)
        .and_then(|r| Role::parse(r))
        .ok_or_else(not_ours)?;
    let get = |k: &str| summary.get(k).cloned().unwrap_or_default();

    let all_env = config.env.clone().unwrap_or_default();
    let mut env = BTreeMap::new();
    let mut secret_env = if role == Role::OpenWebui {
        vec!["WEBUI_SECRET_KEY".to_string(), "OPENAI_API_KEY".to_string()]
    } else {
        vec![]
    };
    for (k, shown) in &summary {
        let Some(key) = k.strip_prefix("env ") else {
            continue;
        };
        let value = all_env
            .iter()
            .find_map(|e| e.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| {
                anyhow::anyhow!("{name}: {key} is in its settings but not its environment")
            })?;
        env.insert(key.to_string(), value.to_string());
        if shown.starts_with("(secret") && !secret_env.iter().any(|s| s == key) {
            secret_env.push(key.to_string());
        }
    }
    let (volume, mount_target) = get("volume")
        .split_once(" at ")
        .map(|(v, t)| (v.to_string(), t.to_string()))
        .ok_or_else(not_ours)?;
    let network = get("network");
    let net = if network == "host" {
        Net::Host
    } else if let Some((n, rest)) = network.split_once(" (alias ") {
        Net::Bridge {
            network: n.to_string(),
            aliases: rest
                .trim_end_matches(')')
                .split(", ")
                .map(str::to_string)
                .collect(),
        }
    } else {
        Net::Bridge {
            network,
            aliases: vec![],
        }
    };
    let publish = get("published").split_once(" -> ").and_then(|(host, c)| {
        let (ip, port) = host.rsplit_once(':')?;
        Some(Publish {
            host_ip: ip.to_string(),
            host_port: port.parse().ok()?,
            container_port: c.parse().ok()?,
        })
    });
    let extra_hosts = summary
        .get("extra hosts")
        .map(|h| h.split(", ").map(str::to_string).collect())
        .unwrap_or_default();
    // Config.Labels also holds the image's labels: keep webui's own only.
    let labels: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| {
            [LABEL_MANAGED, LABEL_PROJECT, LABEL_ROLE, LABEL_DIGEST].contains(&k.as_str())
                || summary.contains_key(&format!("label {k}"))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let spec = ContainerSpec {
        name,
        role,
        image: config.image.clone().unwrap_or_default(),
        image_id: c.image.clone().unwrap_or_default(),
        env,
        secret_env,
        labels,
        volume,
        mount_target,
        net,
        publish,
        extra_hosts,
        gpus: get("gpus") == "all",
    };
    let exact = config
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_HASH))
        .is_some_and(|h| *h == spec.hash());
    Ok((spec, exact))
}

/// `spec` running another image.
pub fn with_image(
    mut spec: ContainerSpec,
    image: &str,
    image_id: &str,
    digest: Option<&str>,
) -> ContainerSpec {
    spec.image = image.to_string();
    spec.image_id = image_id.to_string();
    match digest {
        Some(d) => spec.labels.insert(LABEL_DIGEST.to_string(), d.to_string()),
        None => spec.labels.remove(LABEL_DIGEST),
    };
    spec
}

pub use super::ensure::{create, start, stop};

pub async fn rename(docker: &Docker, from: &str, to: &str) -> anyhow::Result<()> {
    docker
        .rename_container(
            from,
            RenameContainerOptions {
                name: to.to_string(),
            },
        )
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot rename {from} to {to}")))
}

/// Removes a (stopped) container; volumes stay.
pub async fn remove(docker: &Docker, name: &str) -> anyhow::Result<()> {
    let opts = RemoveContainerOptions {
        v: false,
        force: true,
        link: false,
    };
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot remove container {name}"))),
    }
}

pub async fn exists(docker: &Docker, name: &str) -> bool {
    docker.inspect_container(name, None).await.is_ok()
}

/// After the first healthy answer: the container must stay up (no exit, no restart)
/// and healthy for `settle`, or a version that crashes right after starting would
/// count as a success.
pub async fn stays_up(
    docker: &Docker,
    name: &str,
    upstream: &str,
    settle: std::time::Duration,
) -> anyhow::Result<()> {
    let inspect = || async {
        docker
            .inspect_container(name, None)
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot inspect {name}")))
    };
    let first = inspect().await?;
    let restarts = first.restart_count.unwrap_or(0);
    let start = std::time::Instant::now();
    loop {
        let c = inspect().await?;
        let st = c.state.unwrap_or_default();
        let crashed = c.restart_count.unwrap_or(0) > restarts
            || !st.running.unwrap_or(false)
            || st.restarting.unwrap_or(false);
        if crashed {
            let tail = super::logs::tail_lines(docker, name, 10)
                .await
                .unwrap_or_default();
            let code = st
                .exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default();
            return Err(UserError::new(format!(
                "{name} crashed {} after it first answered healthy{code}; its last log lines:\n    {}",
                super::health::elapsed_text(start.elapsed()),
                tail.join("\n    ")
            ))
            .into());
        }
        if start.elapsed() >= settle {
            return match super::health::probe(upstream).await {
                super::health::Health::Healthy => Ok(()),
                h => Err(UserError::new(format!(
                    "{name} stopped being healthy after it first answered: {}",
                    h.detail().unwrap_or(h.as_str())
                ))
                .into()),
            };
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{NetworkMode, UpCmd};
    use crate::config::FileConfig;
    use crate::config::up::Project;
    use crate::docker::spec::{OpenWebuiInputs, open_webui};
    use bollard::models::{ContainerConfig, ContainerInspectResponse};

    fn inspect_of(spec: &ContainerSpec) -> ContainerInspectResponse {
        let body = spec.create_body();
        let mut env = body.env.clone().unwrap_or_default();
        env.push("PATH=/usr/bin".into());
        let mut labels = body.labels.clone().unwrap_or_default();
        labels.insert("org.opencontainers.image.version".into(), "1".into());
        ContainerInspectResponse {
            name: Some(format!("/{}", spec.name)),
            image: Some(spec.image_id.clone()),
            config: Some(ContainerConfig {
                image: body.image.clone(),
                env: Some(env),
                labels: Some(labels),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn specs_are_read_back_exactly() {
        for network in [NetworkMode::Bridge, NetworkMode::Host] {
            let p = Project::named("t-u").unwrap();
            let s = crate::config::up::up(
                &UpCmd {
                    network: Some(network),
                    ..Default::default()
                },
                &FileConfig::default(),
            )
            .unwrap();
            let spec = open_webui(&OpenWebuiInputs {
                project: &p,
                settings: &s,
                image_id: "sha256:0123".into(),
                image_digest: Some("r/x@sha256:aa".into()),
                secret_key: "0123456789abcdef0123".into(),
                public_url: "https://x".into(),
                cors: None,
                ollama_url: Some("http://host.docker.internal:11434".into()),
                host_gateway: true,
                openai_key: Some("sk-1".into()),
                extra_env: vec![("A_TOKEN".into(), "t".into()), ("FOO".into(), "b".into())],
                gpus: false,
            });
            let (back, exact) = spec_of(&inspect_of(&spec)).unwrap();
            assert_eq!(back, spec);
            assert!(exact);
            let moved = with_image(back, "r/x:v2", "sha256:2", None);
            assert_ne!(moved.hash(), spec.hash());
            assert!(!moved.labels.contains_key(LABEL_DIGEST));
        }
        let ol = crate::docker::spec::ollama(
            &Project::default(),
            NetworkMode::Bridge,
            "o:1",
            "sha256:9",
            None,
            false,
        );
        let (back, exact) = spec_of(&inspect_of(&ol)).unwrap();
        assert_eq!((back, exact), (ol, true));
    }

    #[test]
    fn a_container_without_labels_is_refused() {
        let e = spec_of(&ContainerInspectResponse::default()).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
    }
}
