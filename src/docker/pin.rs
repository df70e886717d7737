//! Pinned images and the project's history (`<project dir>/history.json`).
//!
//! `webui up` records the digest it runs (label `webui.image-digest`). A tag such as
//! `:main` moves (PITFALLS 18): a `docker pull` elsewhere, `webui update --check`, or
//! `--pull always` can make the configured reference resolve to another image. A
//! later `webui up` must not switch versions silently, so [`keep_running`] keeps the
//! image the running container was made from when:
//! - the configured reference is the one the container was created from, but now
//!   names another image (the tag moved); or
//! - `webui update` moved the project away from the configured reference (the pin it
//!   recorded names the configured reference and the image still running).
//!
//! Any other change of reference (`--version v0.6.6` after `v0.6.5`) is the user's
//! explicit choice and is followed. `webui update` is how to move a pinned project.
//!
//! ```text
//! history.json   {"pin": {"configured", "image", "image_id", "digest", "at"} | null,
//!                 "last_update": {"at", "from", "to", "outcome", "detail"} | null,
//!                 "last_backup": {"at", "file", "bytes"} | null}
//! ```

use std::path::PathBuf;

use bollard::Docker;
use serde::{Deserialize, Serialize};

use super::ensure::Existing;
use super::project::ProjectState;
use super::spec::{self, ContainerSpec, LABEL_DIGEST};
use crate::output::Printer;

/// The image `webui update` (or a pinned `up`) decided the project runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The image reference `webui up` was configured with when the pin was made.
    pub configured: String,
    /// The reference the container runs (`repo:tag` or `repo@sha256:...`).
    pub image: String,
    /// The local image id.
    pub image_id: String,
    /// The repository digest, when the image came from a registry.
    pub digest: Option<String>,
    /// RFC 3339 UTC.
    pub at: String,
}

/// The last `webui update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRecord {
    pub at: String,
    /// Digest (or image reference) before.
    pub from: String,
    /// Digest (or image reference) the update aimed at.
    pub to: String,
    /// `updated` or `rolled-back` (or `failed` when even the rollback failed).
    pub outcome: String,
    pub detail: Option<String>,
}

/// The last backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub at: String,
    pub file: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub pin: Option<Pin>,
    #[serde(default)]
    pub last_update: Option<UpdateRecord>,
    #[serde(default)]
    pub last_backup: Option<BackupRecord>,
    /// The backups `webui update` made (archives, and rolling updates' database
    /// dumps), oldest first: the ones `update --keep-backups` may remove. Backups made
    /// with `webui backup` are never listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_backups: Vec<String>,
    /// Where `up --backup-every` last wrote (for `webui backup --list` when no `up`
    /// runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_dir: Option<String>,
}

fn history_path(state: &ProjectState) -> PathBuf {
    state.dir().join("history.json")
}

impl History {
    /// The recorded history; empty when there is none or it cannot be read.
    pub fn load(state: &ProjectState) -> History {
        std::fs::read_to_string(history_path(state))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Changes and saves the history (0600: it names files, not secrets, but lives
    /// beside them).
    pub fn update(state: &ProjectState, f: impl FnOnce(&mut History)) -> anyhow::Result<()> {
        let mut h = Self::load(state);
        f(&mut h);
        if let Some(parent) = state.dir().parent() {
            crate::state::create_private_dir(parent)?;
        }
        crate::state::create_private_dir(state.dir())?;
        crate::state::write_private(&history_path(state), &serde_json::to_vec_pretty(&h)?)
    }
}

/// Now, RFC 3339 UTC to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The decision of [`decide`]: keep the running image, or follow the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Follow,
    /// Keep running this image (reference, id, digest); `why` is printed.
    Keep {
        image: String,
        image_id: String,
        digest: Option<String>,
        why: String,
    },
}

/// What the running container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// `Config.Image`: the reference it was created from.
    pub image: String,
    pub image_id: String,
    pub digest: Option<String>,
}

/// Pure: whether `configured` (resolving to `resolved_id`) replaces `running`.
pub fn decide(
    configured: &str,
    resolved_id: &str,
    running: Option<&Running>,
    pin: Option<&Pin>,
) -> Decision {
    let Some(r) = running else {
        return Decision::Follow;
    };
    if r.image_id == resolved_id || r.image_id.is_empty() {
        return Decision::Follow;
    }
    let shown = r
        .digest
        .clone()
        .unwrap_or_else(|| spec::short_id(&r.image_id));
    let keep = |why: String| Decision::Keep {
        image: r.image.clone(),
        image_id: r.image_id.clone(),
        digest: r.digest.clone(),
        why,
    };
    if r.image == configured {
        return keep(format!(
            "{configured} now names another image ({}) than the one running ({shown}); keeping the running one. `webui update` moves to the new one (with a backup and rollback)",
            spec::short_id(resolved_id)
        ));
    }
    if let Some(p) = pin
        && p.configured == configured
        && p.image_id == r.image_id
    {
        return keep(format!(
            "running {} ({shown}), set by `webui update` on {}; the configured {configured} is not used. `webui update --image {configured}` goes back to it",
            p.image, p.at
        ));
    }
    Decision::Follow
}

/// `webui up`'s pin: given the Open WebUI spec built from the settings and the
/// existing container, keeps the running image when the configuration did not
/// explicitly change (module doc). When the container must be recreated anyway
/// (another setting changed), the immutable digest reference is used so a moved tag
/// cannot sneak in.
pub async fn keep_running(
    docker: &Docker,
    state: &ProjectState,
    mut ow: ContainerSpec,
    existing: Option<&Existing>,
    printer: &Printer,
) -> anyhow::Result<ContainerSpec> {
    let Some(old) = existing.filter(|c| c.managed_by().is_some()) else {
        return Ok(ow);
    };
    let image_id = match docker.inspect_container(&old.name, None).await {
        Ok(c) => c.image.unwrap_or_default(),
        Err(e) if super::is_not_found(&e) => return Ok(ow),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot inspect {}", old.name)));
        }
    };
    let running = Running {
        image: old.image.clone(),
        image_id,
        digest: old.labels.get(LABEL_DIGEST).cloned(),
    };
    let history = History::load(state);
    let configured = ow.image.clone();
    let Decision::Keep {
        image,
        image_id,
        digest,
        why,
    } = decide(
        &configured,
        &ow.image_id,
        Some(&running),
        history.pin.as_ref(),
    )
    else {
        return Ok(ow);
    };
    printer.line(why);
    ow.image = image;
    ow.image_id = image_id.clone();
    match &digest {
        Some(d) => ow.labels.insert(LABEL_DIGEST.to_string(), d.clone()),
        None => ow.labels.remove(LABEL_DIGEST),
    };
    if old.hash() != Some(ow.hash().as_str()) {
        // Recreated anyway: by digest (or id), never by the moved tag.
        ow.image = digest.clone().unwrap_or(image_id.clone());
    }
    if history
        .pin
        .as_ref()
        .is_none_or(|p| p.configured != configured || p.image_id != image_id)
        && let Err(e) = History::update(state, |h| {
            h.pin = Some(Pin {
                configured,
                image: ow.image.clone(),
                image_id,
                digest,
                at: now_rfc3339(),
            })
        })
    {
        tracing::debug!("cannot record the pin: {e:#}");
    }
    Ok(ow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(image: &str, id: &str) -> Running {
        Running {
            image: image.into(),
            image_id: id.into(),
            digest: Some("r/x@sha256:aa".into()),
        }
    }

    #[test]
    fn a_moved_tag_is_not_followed() {
        let r = running("r/x:main", "sha256:old");
        assert!(matches!(
            decide("r/x:main", "sha256:new", Some(&r), None),
            Decision::Keep { ref image_id, .. } if image_id == "sha256:old"
        ));
        assert_eq!(
            decide("r/x:main", "sha256:old", Some(&r), None),
            Decision::Follow
        );
        assert_eq!(
            decide("r/x:main", "sha256:new", None, None),
            Decision::Follow
        );
    }

    #[test]
    fn an_explicit_new_reference_is_followed() {
        let r = running("r/x:v1", "sha256:v1");
        assert_eq!(
            decide("r/x:v2", "sha256:v2", Some(&r), None),
            Decision::Follow
        );
    }

    #[test]
    fn an_update_is_kept_until_the_configuration_changes() {
        let r = running("r/x:v2", "sha256:v2");
        let pin = Pin {
            configured: "r/x:v1".into(),
            image: "r/x:v2".into(),
            image_id: "sha256:v2".into(),
            digest: None,
            at: "2024-01-01T00:00:00Z".into(),
        };
        assert!(matches!(
            decide("r/x:v1", "sha256:v1", Some(&r), Some(&pin)),
            Decision::Keep { .. }
        ));
        assert_eq!(
            decide("r/x:v3", "sha256:v3", Some(&r), Some(&pin)),
            Decision::Follow
        );
    }

    #[test]
    fn history_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ps = ProjectState::new(dir.path(), &crate::config::up::Project::default());
        assert_eq!(History::load(&ps), History::default());
        History::update(&ps, |h| {
            h.last_backup = Some(BackupRecord {
                at: "t".into(),
                file: "f".into(),
                bytes: 1,
            })
        })
        .unwrap();
        assert_eq!(History::load(&ps).last_backup.unwrap().file, "f");
    }
}
