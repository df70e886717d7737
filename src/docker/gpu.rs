//! `--gpu auto|all|none` against what the engine offers, decided from `docker info`
//! before anything is created.
//!
//! Without the NVIDIA container toolkit, a container asking for GPUs fails at start
//! with `could not select device driver "" with capabilities: [[gpu]]`, after it was
//! created. webui looks first: an `nvidia` runtime in `docker info` (what
//! `nvidia-ctk runtime configure` registers) or CDI devices named `nvidia.com/gpu`
//! (engines >= 25 list them) count as GPU support.

use bollard::models::SystemInfo;

use crate::cli::GpuMode;
use crate::error::UserError;

/// What the engine reports about GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Support {
    /// Runtime names, for the error message.
    pub runtimes: Vec<String>,
    pub nvidia_runtime: bool,
    pub cdi_gpus: bool,
}

impl Support {
    pub fn any(&self) -> bool {
        self.nvidia_runtime || self.cdi_gpus
    }
}

/// Reads GPU support out of `docker info`.
pub fn detect(info: &SystemInfo) -> Support {
    let mut runtimes: Vec<String> = info
        .runtimes
        .as_ref()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    runtimes.sort();
    let nvidia_runtime = runtimes.iter().any(|r| r.contains("nvidia"))
        || info
            .default_runtime
            .as_deref()
            .is_some_and(|r| r.contains("nvidia"));
    let cdi_gpus = info.discovered_devices.as_ref().is_some_and(|devs| {
        devs.iter().any(|d| {
            d.id.as_deref()
                .is_some_and(|id| id.starts_with("nvidia.com/gpu"))
        })
    });
    Support {
        runtimes,
        nvidia_runtime,
        cdi_gpus,
    }
}

/// Whether to request GPUs, and a note for the user when they asked for `auto` and
/// there are none. `--gpu all` without support is a user error.
pub fn decide(
    mode: GpuMode,
    support: &Support,
    bundled_ollama: bool,
) -> anyhow::Result<(bool, Option<String>)> {
    match mode {
        GpuMode::None => Ok((false, None)),
        GpuMode::Auto if support.any() => Ok((true, None)),
        GpuMode::Auto => Ok((
            false,
            bundled_ollama.then(|| {
                "no GPU runtime in the Docker engine: Ollama runs on the CPU (install nvidia-container-toolkit for GPUs)".to_string()
            }),
        )),
        GpuMode::All if support.any() => Ok((true, None)),
        GpuMode::All => Err(UserError::new(format!(
            "--gpu all: the Docker engine has no GPU runtime (runtimes: {}); containers asking for GPUs would fail with `could not select device driver \"\" with capabilities: [[gpu]]`",
            if support.runtimes.is_empty() {
                "none listed".to_string()
            } else {
                support.runtimes.join(", ")
            }
        ))
        .hint("install the NVIDIA driver and nvidia-container-toolkit, run `nvidia-ctk runtime configure --runtime=docker` and restart Docker; or use --gpu none")
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{DeviceInfo, Runtime};
    use std::collections::HashMap;

    fn info(runtimes: &[&str]) -> SystemInfo {
        SystemInfo {
            runtimes: Some(
                runtimes
                    .iter()
                    .map(|r| (r.to_string(), Runtime::default()))
                    .collect::<HashMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn runtimes_and_cdi() {
        assert!(!detect(&info(&["runc", "io.containerd.runc.v2"])).any());
        assert!(detect(&info(&["runc", "nvidia"])).nvidia_runtime);
        let mut i = info(&["runc"]);
        i.discovered_devices = Some(vec![DeviceInfo {
            source: Some("cdi".into()),
            id: Some("nvidia.com/gpu=0".into()),
        }]);
        assert!(detect(&i).cdi_gpus);
    }

    #[test]
    fn decisions() {
        let none = detect(&info(&["runc"]));
        let nvidia = detect(&info(&["nvidia", "runc"]));
        assert_eq!(decide(GpuMode::Auto, &nvidia, true).unwrap(), (true, None));
        let (use_gpu, note) = decide(GpuMode::Auto, &none, true).unwrap();
        assert!(!use_gpu && note.unwrap().contains("CPU"));
        assert_eq!(decide(GpuMode::Auto, &none, false).unwrap(), (false, None));
        assert_eq!(decide(GpuMode::None, &nvidia, true).unwrap(), (false, None));
        let e = decide(GpuMode::All, &none, false).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        let text = crate::error::render(&e);
        assert!(
            text.contains("[[gpu]]")
                && text.contains("nvidia-container-toolkit")
                && text.contains("runc"),
            "{text}"
        );
    }
}
