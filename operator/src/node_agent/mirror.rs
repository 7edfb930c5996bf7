//! Applies one `RegistryMirror` to this node's runtime and says what happened, as the node's entry in the
//! RegistryMirror's status: containerd gets `<config_path>/<registry>/hosts.toml` (read on the next pull,
//! no restart), CRI-O a `registries.conf.d` drop-in and a reload.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::api::registry_mirror::{NodeMirrorStatus, RegistryMirrorSpec};
use crate::cri::RuntimeInfo;

use super::mirror_files::{self, ApplyOutcome, MirrorFileError};
use super::mirror_render;

/// Where the suggested `config_path` points when containerd has none.
pub const SUGGESTED_CONFIG_PATH: &str = "/etc/containerd/certs.d";

/// The node state values written to `status.nodes[].state`.
pub mod state {
    pub const APPLIED: &str = "Applied";
    pub const CONFLICT: &str = "Conflict";
    pub const NO_CONFIG_PATH: &str = "NoConfigPath";
    pub const ERROR: &str = "Error";
}

/// The runtime's registry configuration target on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// containerd with `config_path` (as seen by the agent, host root applied).
    Containerd { config_path: PathBuf },
    /// containerd without `config_path`: nothing can be applied; the hint says what to add.
    ContainerdWithoutConfigPath { hint: String },
    /// CRI-O: drop-ins in this directory, then SIGHUP to the process in `pid_file` (if given).
    Crio {
        dropin_dir: PathBuf,
        pid_file: Option<PathBuf>,
    },
}

/// Decides the target from what the runtime reports (`config_path_override` wins when set).
pub fn target(
    info: &RuntimeInfo,
    host_root: &Path,
    config_path_override: Option<&Path>,
    crio_dir: &Path,
    crio_pid_file: Option<&Path>,
) -> Target {
    if info.runtime_name.eq_ignore_ascii_case("cri-o") {
        return Target::Crio {
            dropin_dir: crio_dir.to_path_buf(),
            pid_file: crio_pid_file.map(Path::to_path_buf),
        };
    }
    let configured = config_path_override
        .map(|p| p.to_string_lossy().into_owned())
        .or_else(|| info.registry_config_path.clone())
        .unwrap_or_default();
    // containerd accepts a ':'-separated list; hosts.toml files go into the first directory.
    match configured.split(':').next().filter(|p| !p.is_empty()) {
        Some(p) => Target::Containerd {
            config_path: host_root.join(p.trim_start_matches('/')),
        },
        None => Target::ContainerdWithoutConfigPath {
            hint: mirror_files::config_path_hint(&info.runtime_version, SUGGESTED_CONFIG_PATH),
        },
    }
}

fn status(
    node: &str,
    state: &str,
    path: Option<&Path>,
    message: Option<String>,
    generation: Option<i64>,
) -> NodeMirrorStatus {
    NodeMirrorStatus {
        node: node.to_owned(),
        state: state.to_owned(),
        path: path.map(|p| p.display().to_string()),
        message,
        observed_generation: generation,
    }
}

/// Applies `spec` (RegistryMirror `name`) to `target`. `ca_bundles[i]` is mirror i's CA bundle (PEM),
/// already read from its Secret, or `Err(reason)` when it could not be.
pub fn apply(
    node: &str,
    target: &Target,
    name: &str,
    generation: Option<i64>,
    spec: &RegistryMirrorSpec,
    ca_bundles: &[Result<Option<Vec<u8>>, String>],
) -> NodeMirrorStatus {
    if let Some((i, Err(why))) = ca_bundles.iter().enumerate().find(|(_, c)| c.is_err()) {
        return status(
            node,
            state::ERROR,
            None,
            Some(format!("spec.mirrors[{i}].caSecretRef: {why}")),
            generation,
        );
    }
    match target {
        Target::ContainerdWithoutConfigPath { hint } => status(
            node,
            state::NO_CONFIG_PATH,
            None,
            Some(hint.clone()),
            generation,
        ),
        Target::Containerd { config_path } => {
            let dir = match mirror_files::host_dir(config_path, &spec.registry) {
                Ok(d) => d,
                Err(e) => return status(node, state::ERROR, None, Some(e.to_string()), generation),
            };
            let mut ca_paths = Vec::new();
            let mut ca_files = Vec::new();
            for (i, ca) in ca_bundles.iter().enumerate() {
                match ca {
                    Ok(Some(bytes)) => {
                        let file = mirror_render::ca_file_name(i);
                        ca_paths.push(Some(dir.join(&file).display().to_string()));
                        ca_files.push((file, bytes.clone()));
                    }
                    _ => ca_paths.push(None),
                }
            }
            let content =
                match mirror_render::containerd_hosts_toml(name, generation, spec, &ca_paths) {
                    Ok(c) => c,
                    Err(e) => {
                        return status(node, state::ERROR, None, Some(e.to_string()), generation);
                    }
                };
            match mirror_files::apply_hosts(config_path, &spec.registry, name, &content, &ca_files)
            {
                Ok(ApplyOutcome::Written(path)) => {
                    info!(mirror = name, path = %path.display(), "wrote hosts.toml");
                    status(node, state::APPLIED, Some(&path), None, generation)
                }
                Ok(ApplyOutcome::Unchanged(path)) => {
                    status(node, state::APPLIED, Some(&path), None, generation)
                }
                Err(e) => file_error(node, e, generation),
            }
        }
        Target::Crio {
            dropin_dir,
            pid_file,
        } => {
            let content = match mirror_render::crio_dropin(name, generation, spec) {
                Ok(c) => c,
                Err(e) => return status(node, state::ERROR, None, Some(e.to_string()), generation),
            };
            let file_name = mirror_render::crio_dropin_name(name);
            match mirror_files::apply_crio_dropin(dropin_dir, &file_name, name, &content) {
                Ok(ApplyOutcome::Written(path)) => {
                    let message = reload_crio(pid_file.as_deref()).err();
                    status(node, state::APPLIED, Some(&path), message, generation)
                }
                Ok(ApplyOutcome::Unchanged(path)) => {
                    status(node, state::APPLIED, Some(&path), None, generation)
                }
                Err(e) => file_error(node, e, generation),
            }
        }
    }
}

fn file_error(node: &str, e: MirrorFileError, generation: Option<i64>) -> NodeMirrorStatus {
    let st = match e {
        MirrorFileError::Conflict { .. } | MirrorFileError::OwnedByOther { .. } => state::CONFLICT,
        _ => state::ERROR,
    };
    warn!(error = %e, "registry mirror not applied");
    status(node, st, None, Some(e.to_string()), generation)
}

/// Removes what RegistryMirror `name` wrote for `registry`. Returns whether a file was removed.
pub fn remove(target: &Target, name: &str, registry: &str) -> Result<bool, MirrorFileError> {
    match target {
        Target::Containerd { config_path } => {
            mirror_files::remove_hosts(config_path, registry, name)
        }
        Target::ContainerdWithoutConfigPath { .. } => Ok(false),
        Target::Crio {
            dropin_dir,
            pid_file,
        } => {
            let removed = mirror_files::remove_crio_dropin(
                dropin_dir,
                &mirror_render::crio_dropin_name(name),
                name,
            )?;
            if removed && let Err(e) = reload_crio(pid_file.as_deref()) {
                warn!(error = %e, "CRI-O reload after removing a drop-in failed");
            }
            Ok(removed)
        }
    }
}

/// Asks CRI-O to re-read its registries configuration (it reloads on SIGHUP).
fn reload_crio(pid_file: Option<&Path>) -> Result<(), String> {
    let Some(pid_file) = pid_file else {
        return Err("drop-in written; no --crio-pid-file given, so CRI-O was not reloaded (it reads the drop-in on its next restart or SIGHUP)".into());
    };
    let pid: i32 = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("reading {}: {e}", pid_file.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", pid_file.display()))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| format!("SIGHUP to CRI-O (pid {pid}): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry_mirror::Mirror;

    fn containerd(path: Option<&str>) -> RuntimeInfo {
        RuntimeInfo {
            runtime_name: "containerd".into(),
            runtime_version: "v1.6.20".into(),
            sandbox_image: None,
            registry_config_path: path.map(str::to_owned),
        }
    }

    #[test]
    fn target_from_runtime_info() {
        let root = Path::new("/host");
        let crio = Path::new("/etc/containers/registries.conf.d");
        assert_eq!(
            target(
                &containerd(Some("/etc/containerd/certs.d:/etc/docker/certs.d")),
                root,
                None,
                crio,
                None
            ),
            Target::Containerd {
                config_path: "/host/etc/containerd/certs.d".into()
            }
        );
        match target(&containerd(Some("")), Path::new("/"), None, crio, None) {
            Target::ContainerdWithoutConfigPath { hint } => {
                assert!(
                    hint.contains(r#"config_path = "/etc/containerd/certs.d""#),
                    "{hint}"
                )
            }
            t => panic!("unexpected {t:?}"),
        }
        assert_eq!(
            target(
                &containerd(None),
                Path::new("/"),
                Some(Path::new("/x")),
                crio,
                None
            ),
            Target::Containerd {
                config_path: "/x".into()
            }
        );
        let info = RuntimeInfo {
            runtime_name: "cri-o".into(),
            ..Default::default()
        };
        assert!(matches!(
            target(&info, root, None, crio, None),
            Target::Crio { .. }
        ));
    }

    #[test]
    fn apply_reports_each_outcome() {
        let tmp = tempfile::tempdir().expect("tmp");
        let t = Target::Containerd {
            config_path: tmp.path().to_path_buf(),
        };
        let spec = RegistryMirrorSpec {
            registry: "docker.io".into(),
            mirrors: vec![Mirror {
                url: "https://m.lan".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let ok = apply(
            "n1",
            &t,
            "hub",
            Some(2),
            &spec,
            &[Ok(Some(b"PEM".to_vec()))],
        );
        assert_eq!(ok.state, state::APPLIED, "{ok:?}");
        let written =
            std::fs::read_to_string(tmp.path().join("docker.io/hosts.toml")).expect("hosts.toml");
        assert!(written.contains("berth-mirror-0-ca.crt"), "{written}");
        assert_eq!(ok.observed_generation, Some(2));

        let other = apply("n1", &t, "other", Some(1), &spec, &[Ok(None)]);
        assert_eq!(other.state, state::CONFLICT);

        let bad_ca = apply(
            "n1",
            &t,
            "hub",
            Some(3),
            &spec,
            &[Err("secret ns/ca not found".into())],
        );
        assert_eq!(bad_ca.state, state::ERROR);
        assert!(
            bad_ca
                .message
                .as_deref()
                .unwrap_or("")
                .contains("spec.mirrors[0].caSecretRef")
        );

        assert!(remove(&t, "hub", "docker.io").expect("remove"));
        assert!(!tmp.path().join("docker.io").exists());

        let none = apply(
            "n1",
            &Target::ContainerdWithoutConfigPath {
                hint: "add it".into(),
            },
            "hub",
            None,
            &spec,
            &[Ok(None)],
        );
        assert_eq!(
            (none.state.as_str(), none.message.as_deref()),
            (state::NO_CONFIG_PATH, Some("add it"))
        );
    }

    #[test]
    fn crio_dropin_is_written_and_the_process_in_the_pid_file_gets_sighup() {
        use std::os::unix::process::ExitStatusExt;
        let tmp = tempfile::tempdir().expect("tmp");
        // A stand-in for CRI-O that only has to receive the signal: SIGHUP ends `sleep`.
        let mut crio = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid_file = tmp.path().join("crio.pid");
        std::fs::write(&pid_file, crio.id().to_string()).expect("pid");
        let t = Target::Crio {
            dropin_dir: tmp.path().join("registries.conf.d"),
            pid_file: Some(pid_file),
        };
        let spec = RegistryMirrorSpec {
            registry: "docker.io".into(),
            mirrors: vec![Mirror {
                url: "http://10.0.0.5:5000".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        std::fs::create_dir_all(tmp.path().join("registries.conf.d")).expect("mkdir");
        let st = apply("n1", &t, "hub", Some(1), &spec, &[Ok(None)]);
        assert_eq!(
            (st.state.as_str(), st.message.as_deref()),
            (state::APPLIED, None),
            "{st:?}"
        );
        let status = crio.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(nix::sys::signal::Signal::SIGHUP as i32),
            "the runtime was told to reload"
        );
        let dropin = tmp.path().join("registries.conf.d/50-berth-hub.conf");
        assert!(
            std::fs::read_to_string(&dropin)
                .expect("drop-in")
                .contains("location = \"10.0.0.5:5000\"")
        );
        // Removal without a PID file: the stand-in is gone and its PID must not be signalled again.
        let t = Target::Crio {
            dropin_dir: tmp.path().join("registries.conf.d"),
            pid_file: None,
        };
        assert!(remove(&t, "hub", "docker.io").expect("remove"));
        assert!(!dropin.exists());
    }
}
