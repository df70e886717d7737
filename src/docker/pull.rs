//! Making sure an image is present: pull per `--pull`, with a progress bar per layer
//! and a total on a terminal (plain lines otherwise), and the digest that ended up
//! local recorded.
//!
//! Pull errors arrive as JSON frames inside a 200 stream (PITFALLS 25) or as the HTTP
//! status of the request; both are read by [`classify`] into what they are: not
//! found, unauthorized, rate limited, network, disk full.

use std::collections::BTreeMap;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{engine_message, is_not_found};
use crate::cli::PullPolicy;
use crate::config::up::split_tag;
use crate::error::UserError;
use crate::output::Printer;

/// A local image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `sha256:...`, the local image id.
    pub id: String,
    /// `repo@sha256:...`, when the image came from a registry.
    pub digest: Option<String>,
    /// True when this call pulled it.
    pub pulled: bool,
}

/// Why a pull failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NotFound,
    Unauthorized,
    RateLimited,
    Network,
    DiskFull,
    Other,
}

/// Reads an engine's pull error message.
pub fn classify(message: &str) -> Failure {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if has(&["no space left on device", "disk quota exceeded"]) {
        Failure::DiskFull
    } else if has(&["toomanyrequests", "too many requests", "rate limit"]) {
        Failure::RateLimited
    } else if has(&[
        "unauthorized",
        "authentication required",
        "denied: ",
        "access denied",
        "requested access to the resource is denied",
        "insufficient_scope",
    ]) {
        Failure::Unauthorized
    } else if has(&[
        "manifest unknown",
        "not found",
        "does not exist",
        "no such image",
        "name unknown",
    ]) {
        Failure::NotFound
    } else if has(&[
        "connection refused",
        "connection reset",
        "i/o timeout",
        "no such host",
        "network is unreachable",
        "tls handshake timeout",
        "timeout exceeded",
        "temporary failure in name resolution",
        "unexpected eof",
        "server misbehaving",
        "context deadline exceeded",
        "dial tcp",
        "eof",
    ]) {
        Failure::Network
    } else {
        Failure::Other
    }
}

/// The error for a failed pull of `image`.
pub fn pull_error(image: &str, message: &str) -> anyhow::Error {
    let message = message.trim();
    match classify(message) {
        Failure::NotFound => UserError::new(format!(
            "image {image} was not found in its registry ({message})"
        ))
        .hint("check the image name and tag; --version vX.Y.Z picks an Open WebUI release")
        .into(),
        Failure::Unauthorized => UserError::new(format!(
            "the registry refused to give {image}: not authorized ({message})"
        ))
        .hint(format!(
            "check the name; for a private image run `docker login {}` and `docker pull {image}`, then `webui up --pull never`",
            registry_of(image)
        ))
        .into(),
        Failure::RateLimited => UserError::new(format!(
            "the registry rate-limited the pull of {image} ({message})"
        ))
        .hint("wait and run `webui up` again, or log in to the registry with `docker login`")
        .into(),
        Failure::Network => UserError::new(format!(
            "downloading {image} failed: network error ({message})"
        ))
        .hint("check this host's internet access (DNS, proxy, firewall) and run `webui up` again; finished layers are kept")
        .into(),
        Failure::DiskFull => UserError::new(format!(
            "downloading {image} failed: the disk is full ({message})"
        ))
        .hint("free space under Docker's data root (see `docker system df`; `docker image prune` removes unused images)")
        .into(),
        Failure::Other => anyhow::anyhow!("pulling {image} failed: {message}"),
    }
}

/// The registry host of an image reference (`docker.io` when none is named).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// `fromImage` and `tag` for the pull API: the tag (or digest) separately, `latest`
/// when none is given (an empty tag would pull every tag).
fn pull_params(image: &str) -> (String, String) {
    let (repo, rest) = split_tag(image);
    let tag = if let Some(d) = rest.rsplit_once('@') {
        d.1.to_string()
    } else if let Some(t) = rest.strip_prefix(':') {
        t.to_string()
    } else {
        "latest".to_string()
    };
    (repo.to_string(), tag)
}

/// Makes `image` present per `policy`. `on_progress` gets the total percentage while
/// pulling (for the starting page).
pub async fn ensure(
    docker: &Docker,
    image: &str,
    policy: PullPolicy,
    printer: &Printer,
    on_progress: &mut (dyn FnMut(u8) + Send),
) -> anyhow::Result<Image> {
    let local = inspect(docker, image).await?;
    match (policy, local) {
        (PullPolicy::Missing, Some(img)) => return Ok(img),
        (PullPolicy::Never, Some(img)) => return Ok(img),
        (PullPolicy::Never, None) => {
            return Err(UserError::new(format!(
                "image {image} is not present and --pull never was given"
            ))
            .hint(format!(
                "pull it with `docker pull {image}`, or use --pull missing"
            ))
            .into());
        }
        _ => {}
    }
    pull(docker, image, printer, on_progress).await?;
    let mut img = inspect(docker, image)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{image} was pulled but the engine does not list it"))?;
    img.pulled = true;
    let digest = img.digest.as_deref().unwrap_or("no digest");
    printer.line(format!("pulled {image} ({digest})"));
    Ok(img)
}

async fn inspect(docker: &Docker, image: &str) -> anyhow::Result<Option<Image>> {
    match docker.inspect_image(image).await {
        Ok(i) => {
            let (repo, _) = split_tag(image);
            let digests = i.repo_digests.unwrap_or_default();
            // The digest of this repository, when the image is known under several.
            let digest = digests
                .iter()
                .find(|d| d.split('@').next() == Some(repo))
                .or(digests.first())
                .cloned();
            Ok(Some(Image {
                id: i.id.unwrap_or_default(),
                digest,
                pulled: false,
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot inspect image {image}"))),
    }
}

/// Per-layer progress.
#[derive(Debug, Default, Clone)]
struct Layer {
    status: String,
    current: u64,
    total: u64,
    done: bool,
}

async fn pull(
    docker: &Docker,
    image: &str,
    printer: &Printer,
    on_progress: &mut (dyn FnMut(u8) + Send),
) -> anyhow::Result<()> {
    let (repo, tag) = pull_params(image);
    let opts = CreateImageOptions {
        from_image: Some(repo),
        tag: Some(tag),
        ..Default::default()
    };
    printer.line(format!("pulling {image}"));
    let mut stream = docker.create_image(Some(opts), None, None);

    let multi = printer.is_terminal().then(MultiProgress::new);
    // Coloured bars only when colour is on (`--color never` turns them plain too).
    let (layer_bar, whole_bar) = if printer.color() {
        ("{bar:30.cyan/blue}", "{bar:49.green}")
    } else {
        ("{bar:30}", "{bar:49}")
    };
    let layer_style = ProgressStyle::with_template(&format!(
        "  {{prefix:12}} {{msg:18}} {layer_bar} {{bytes:>10}}/{{total_bytes:10}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let total_style = ProgressStyle::with_template(&format!(
        "  {{prefix:12}} {whole_bar} {{bytes:>10}}/{{total_bytes:10}} {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let total_bar = multi.as_ref().map(|m| {
        let pb = m.add(ProgressBar::new(0));
        pb.set_style(total_style);
        pb.set_prefix("total");
        pb
    });
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut layers: BTreeMap<String, Layer> = BTreeMap::new();
    let mut last_percent = None;

    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => {
                if let Some(m) = &multi {
                    let _ = m.clear();
                }
                return Err(pull_error(image, &engine_message(&e)));
            }
        };
        let status = info.status.clone().unwrap_or_default();
        let Some(id) = info
            .id
            .clone()
            .filter(|_| info.progress_detail.is_some() || is_layer_status(&status))
        else {
            if !status.is_empty() && multi.is_none() {
                printer.line(format!("  {status}"));
            }
            continue;
        };
        let layer = layers.entry(id.clone()).or_default();
        let changed = layer.status != status;
        layer.status = status.clone();
        if let Some(p) = &info.progress_detail
            && status.starts_with("Downloading")
        {
            layer.current = p.current.unwrap_or(0).max(0) as u64;
            layer.total = p.total.unwrap_or(0).max(0) as u64;
        }
        if matches!(
            status.as_str(),
            "Download complete" | "Pull complete" | "Already exists"
        ) {
            layer.done = true;
            layer.current = layer.total;
        }
        if let Some(m) = &multi {
            let pb = bars.entry(id.clone()).or_insert_with(|| {
                let pb = m.insert_before(
                    total_bar.as_ref().unwrap_or(&ProgressBar::hidden()),
                    ProgressBar::new(0),
                );
                pb.set_style(layer_style.clone());
                pb.set_prefix(id.clone());
                pb
            });
            pb.set_length(layer.total);
            pb.set_position(layer.current);
            pb.set_message(status.clone());
        } else if changed && !status.starts_with("Downloading") && !status.starts_with("Extracting")
        {
            printer.line(format!("  {id}: {status}"));
        }
        let (cur, tot) = layers
            .values()
            .fold((0u64, 0u64), |(c, t), l| (c + l.current, t + l.total));
        if let Some(pb) = &total_bar {
            pb.set_length(tot);
            pb.set_position(cur);
        }
        if let Some(share) = cur.saturating_mul(100).checked_div(tot) {
            let percent = share.min(100) as u8;
            if last_percent != Some(percent) {
                last_percent = Some(percent);
                on_progress(percent);
            }
        }
    }
    if let Some(m) = &multi {
        for pb in bars.values() {
            pb.finish_and_clear();
        }
        if let Some(pb) = &total_bar {
            pb.finish_and_clear();
        }
        let _ = m.clear();
    }
    Ok(())
}

fn is_layer_status(status: &str) -> bool {
    [
        "Pulling fs layer",
        "Waiting",
        "Downloading",
        "Verifying Checksum",
        "Download complete",
        "Extracting",
        "Pull complete",
        "Already exists",
    ]
    .iter()
    .any(|s| status.starts_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_errors_are_named() {
        for (msg, want) in [
            (
                "manifest for 127.0.0.1:5000/x:nope not found: manifest unknown: manifest unknown",
                Failure::NotFound,
            ),
            (
                "pull access denied for foo, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
                Failure::Unauthorized,
            ),
            (
                "Head \"https://ghcr.io/v2/x/manifests/main\": unauthorized",
                Failure::Unauthorized,
            ),
            (
                "toomanyrequests: You have reached your pull rate limit",
                Failure::RateLimited,
            ),
            (
                "Get \"https://ghcr.io/v2/\": dial tcp: lookup ghcr.io: no such host",
                Failure::Network,
            ),
            (
                "read tcp 1.2.3.4:5->6.7.8.9:443: read: connection reset by peer",
                Failure::Network,
            ),
            (
                "failed to register layer: write /var/lib/docker/x: no space left on device",
                Failure::DiskFull,
            ),
            ("something odd", Failure::Other),
        ] {
            assert_eq!(classify(msg), want, "{msg}");
        }
        let e = pull_error("r/x:1", "manifest unknown");
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(crate::error::render(&e).contains("not found"));
        assert_eq!(crate::error::exit_code(&pull_error("r/x:1", "odd")), 2);
    }

    #[test]
    fn params() {
        assert_eq!(
            pull_params("127.0.0.1:5000/w/o:v1"),
            ("127.0.0.1:5000/w/o".into(), "v1".into())
        );
        assert_eq!(
            pull_params("ollama/ollama"),
            ("ollama/ollama".into(), "latest".into())
        );
        assert_eq!(
            pull_params("r/x@sha256:ab"),
            ("r/x".into(), "sha256:ab".into())
        );
        assert_eq!(registry_of("ghcr.io/open-webui/open-webui:main"), "ghcr.io");
        assert_eq!(registry_of("ollama/ollama"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/x"), "127.0.0.1:5000");
    }
}
