//! Writes and removes the registry configuration files a `RegistryMirror` becomes on this node, safely:
//! atomically (temp, fsync, rename), only files Berth owns (first line marker), never over a file
//! someone else wrote (that is reported as a conflict), and on removal leaving the directory as it was.

use std::path::{Path, PathBuf};

use super::mirror_render::{OWNER_MARKER, is_berth_owned};
use super::usage::write_atomic;

/// Dropped into a host directory Berth had to create, so removal knows it may delete the directory.
const CREATED_MARKER: &str = ".berth-created";

/// Why a file could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorFileError {
    #[error(
        "{path} exists and was not written by Berth: left untouched (remove it, or move its settings into the RegistryMirror)"
    )]
    Conflict { path: PathBuf },
    #[error(
        "{path} is managed by RegistryMirror {owner:?}; two RegistryMirrors cannot configure the same registry"
    )]
    OwnedByOther { path: PathBuf, owner: String },
    #[error("spec.registry {registry:?} cannot be a directory name under config_path")]
    BadRegistry { registry: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MirrorFileError + '_ {
    move |source| MirrorFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The file was written (created or changed).
    Written(PathBuf),
    /// The file already had this content.
    Unchanged(PathBuf),
}

/// The owning RegistryMirror named in a Berth file's marker line.
pub fn owner_of(content: &str) -> Option<&str> {
    content
        .lines()
        .next()?
        .strip_prefix(OWNER_MARKER)
        .map(str::trim)
}

/// The host directory for a registry, refusing anything that could escape `config_path`.
pub fn host_dir(config_path: &Path, registry: &str) -> Result<PathBuf, MirrorFileError> {
    let ok = !registry.is_empty()
        && registry.len() <= 260
        && registry != "."
        && registry != ".."
        && registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !ok {
        return Err(MirrorFileError::BadRegistry {
            registry: registry.to_owned(),
        });
    }
    Ok(config_path.join(registry))
}

/// Writes `<config_path>/<registry>/hosts.toml` (and the CA files beside it) for RegistryMirror `owner`.
pub fn apply_hosts(
    config_path: &Path,
    registry: &str,
    owner: &str,
    content: &str,
    ca_files: &[(String, Vec<u8>)],
) -> Result<ApplyOutcome, MirrorFileError> {
    let dir = host_dir(config_path, registry)?;
    let file = dir.join("hosts.toml");
    let written = write_owned(&file, owner, content)?;
    for (name, bytes) in ca_files {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            write_atomic(&path, bytes, 0o644).map_err(io(&path))?;
        }
    }
    // CA files of mirrors that no longer have one go too.
    let keep: Vec<&str> = ca_files.iter().map(|(n, _)| n.as_str()).collect();
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("berth-mirror-")
            && name.ends_with("-ca.crt")
            && !keep.contains(&name.as_str())
        {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    Ok(outcome(written, file))
}

fn outcome(written: bool, file: PathBuf) -> ApplyOutcome {
    if written {
        ApplyOutcome::Written(file)
    } else {
        ApplyOutcome::Unchanged(file)
    }
}

/// Writes a Berth-owned file unless a foreign (or another owner's) file is in the way. Records in
/// `CREATED_MARKER` whether the parent directory had to be created. Returns whether it wrote.
fn write_owned(file: &Path, owner: &str, content: &str) -> Result<bool, MirrorFileError> {
    let dir = file.parent().ok_or_else(|| MirrorFileError::BadRegistry {
        registry: file.display().to_string(),
    })?;
    match std::fs::read_to_string(file) {
        Ok(existing) => {
            if !is_berth_owned(&existing) {
                return Err(MirrorFileError::Conflict {
                    path: file.to_path_buf(),
                });
            }
            if let Some(other) = owner_of(&existing).filter(|o| *o != owner) {
                return Err(MirrorFileError::OwnedByOther {
                    path: file.to_path_buf(),
                    owner: other.to_owned(),
                });
            }
            if existing == content {
                return Ok(false);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let marker = dir.join(CREATED_MARKER);
                write_atomic(
                    &marker,
                    b"This directory was created by Berth's node agent.\n",
                    0o644,
                )
                .map_err(io(&marker))?;
            }
        }
        Err(e) => {
            return Err(MirrorFileError::Io {
                path: file.to_path_buf(),
                source: e,
            });
        }
    }
    write_atomic(file, content.as_bytes(), 0o644).map_err(io(file))?;
    Ok(true)
}

/// Removes what `apply_hosts` wrote for `owner`: the file (only if it is still that owner's), Berth's CA
/// files, and the directory if Berth created it and nothing else is left in it. Returns whether a file
/// was removed.
pub fn remove_hosts(
    config_path: &Path,
    registry: &str,
    owner: &str,
) -> Result<bool, MirrorFileError> {
    let dir = host_dir(config_path, registry)?;
    let file = dir.join("hosts.toml");
    let removed = remove_owned(&file, owner)?;
    if !removed {
        return Ok(false);
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("berth-mirror-") && name.ends_with("-ca.crt") {
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
    }
    remove_created_dir(&dir)?;
    Ok(true)
}

fn remove_owned(file: &Path, owner: &str) -> Result<bool, MirrorFileError> {
    match std::fs::read_to_string(file) {
        Ok(existing) if owner_of(&existing) == Some(owner) => {
            std::fs::remove_file(file).map_err(io(file))?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MirrorFileError::Io {
            path: file.to_path_buf(),
            source: e,
        }),
    }
}

fn remove_created_dir(dir: &Path) -> Result<(), MirrorFileError> {
    let marker = dir.join(CREATED_MARKER);
    if !marker.exists() {
        return Ok(());
    }
    let others = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .any(|e| e.file_name() != CREATED_MARKER);
    if !others {
        std::fs::remove_file(&marker).map_err(io(&marker))?;
        std::fs::remove_dir(dir).map_err(io(dir))?;
    }
    Ok(())
}

/// Every Berth-owned `hosts.toml` under `config_path`, as (registry, owning RegistryMirror), so files of
/// RegistryMirrors deleted while the agent was down can be cleaned up.
pub fn scan_owned_hosts(config_path: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(config_path) else {
        return out;
    };
    for entry in entries.flatten() {
        let file = entry.path().join("hosts.toml");
        if let Ok(content) = std::fs::read_to_string(&file)
            && let Some(owner) = owner_of(&content)
        {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                owner.to_owned(),
            ));
        }
    }
    out.sort();
    out
}

/// Writes a CRI-O drop-in `<dir>/<name>` for `owner`, with the same ownership rules.
pub fn apply_crio_dropin(
    dir: &Path,
    name: &str,
    owner: &str,
    content: &str,
) -> Result<ApplyOutcome, MirrorFileError> {
    let file = dir.join(name);
    let written = write_owned(&file, owner, content)?;
    Ok(outcome(written, file))
}

/// Removes a CRI-O drop-in if it is `owner`'s.
pub fn remove_crio_dropin(dir: &Path, name: &str, owner: &str) -> Result<bool, MirrorFileError> {
    remove_owned(&dir.join(name), owner)
}

/// The exact line to add when containerd has no `config_path`: where it goes depends on the config
/// format (containerd 2.x uses config version 3 and another plugin name).
pub fn config_path_hint(runtime_version: &str, suggested: &str) -> String {
    let v = runtime_version.trim_start_matches('v');
    let section = if v.starts_with('1') {
        r#"[plugins."io.containerd.grpc.v1.cri".registry]"#
    } else {
        r#"[plugins."io.containerd.cri.v1.images".registry]"#
    };
    format!(
        "containerd has no registry config_path, so hosts.toml files are ignored: add `config_path = \"{suggested}\"` under `{section}` in containerd's config.toml and restart containerd"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_agent::mirror_render::OWNER_MARKER;

    fn owned(owner: &str, body: &str) -> String {
        format!("{OWNER_MARKER} {owner}\n{body}")
    }

    #[test]
    fn creates_then_updates_then_removes_leaving_nothing() {
        let root = tempfile::tempdir().expect("tmp");
        let a = owned("m", "server = \"https://a\"\n");
        let out = apply_hosts(root.path(), "registry.test:5000", "m", &a, &[]).expect("apply");
        let file = root.path().join("registry.test:5000/hosts.toml");
        assert_eq!(out, ApplyOutcome::Written(file.clone()));
        assert_eq!(std::fs::read_to_string(&file).expect("read"), a);
        assert_eq!(
            apply_hosts(root.path(), "registry.test:5000", "m", &a, &[]).expect("again"),
            ApplyOutcome::Unchanged(file.clone())
        );
        let b = owned("m", "server = \"https://b\"\n");
        let ca = vec![("berth-mirror-0-ca.crt".to_string(), b"PEM".to_vec())];
        assert_eq!(
            apply_hosts(root.path(), "registry.test:5000", "m", &b, &ca).expect("edit"),
            ApplyOutcome::Written(file.clone())
        );
        assert!(
            root.path()
                .join("registry.test:5000/berth-mirror-0-ca.crt")
                .exists()
        );
        assert_eq!(
            scan_owned_hosts(root.path()),
            vec![("registry.test:5000".to_string(), "m".to_string())]
        );
        assert!(remove_hosts(root.path(), "registry.test:5000", "m").expect("remove"));
        assert!(
            !root.path().join("registry.test:5000").exists(),
            "the directory Berth created is gone"
        );
        assert!(!remove_hosts(root.path(), "registry.test:5000", "m").expect("remove twice"));
    }

    #[test]
    fn foreign_file_is_never_touched() {
        let root = tempfile::tempdir().expect("tmp");
        let dir = root.path().join("docker.io");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("hosts.toml"), "server = \"https://mine\"\n").expect("write");
        let err = apply_hosts(root.path(), "docker.io", "m", &owned("m", ""), &[]).unwrap_err();
        assert!(matches!(err, MirrorFileError::Conflict { .. }), "{err}");
        assert!(!remove_hosts(root.path(), "docker.io", "m").expect("remove"));
        assert_eq!(
            std::fs::read_to_string(dir.join("hosts.toml")).expect("read"),
            "server = \"https://mine\"\n"
        );
    }

    #[test]
    fn pre_existing_directory_and_its_files_survive_removal() {
        let root = tempfile::tempdir().expect("tmp");
        let dir = root.path().join("docker.io");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("client.cert"), "x").expect("write");
        apply_hosts(root.path(), "docker.io", "m", &owned("m", ""), &[]).expect("apply");
        assert!(remove_hosts(root.path(), "docker.io", "m").expect("remove"));
        assert!(dir.join("client.cert").exists() && !dir.join("hosts.toml").exists());
    }

    #[test]
    fn another_mirror_cannot_take_over_and_paths_cannot_escape() {
        let root = tempfile::tempdir().expect("tmp");
        apply_hosts(root.path(), "docker.io", "first", &owned("first", ""), &[]).expect("apply");
        let err = apply_hosts(
            root.path(),
            "docker.io",
            "second",
            &owned("second", ""),
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(err, MirrorFileError::OwnedByOther { ref owner, .. } if owner == "first"),
            "{err}"
        );
        assert!(!remove_hosts(root.path(), "docker.io", "second").expect("not second's"));
        for bad in ["..", "a/b", "", "x y"] {
            assert!(
                matches!(
                    host_dir(root.path(), bad),
                    Err(MirrorFileError::BadRegistry { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(host_dir(root.path(), "_default").is_ok());
    }

    #[test]
    fn crio_dropins_follow_the_same_rules() {
        let root = tempfile::tempdir().expect("tmp");
        let c = owned("m", "[[registry]]\n");
        assert!(matches!(
            apply_crio_dropin(root.path(), "50-berth-m.conf", "m", &c),
            Ok(ApplyOutcome::Written(_))
        ));
        std::fs::write(root.path().join("50-berth-x.conf"), "foreign").expect("write");
        assert!(apply_crio_dropin(root.path(), "50-berth-x.conf", "x", &owned("x", "")).is_err());
        assert!(remove_crio_dropin(root.path(), "50-berth-m.conf", "m").expect("remove"));
        assert!(!remove_crio_dropin(root.path(), "50-berth-x.conf", "x").expect("foreign stays"));
    }

    #[test]
    fn config_path_hint_names_the_section() {
        let h = config_path_hint("v1.6.20", "/etc/containerd/certs.d");
        assert!(
            h.contains(r#"config_path = "/etc/containerd/certs.d""#)
                && h.contains("io.containerd.grpc.v1.cri"),
            "{h}"
        );
        assert!(config_path_hint("2.0.1", "/x").contains("io.containerd.cri.v1.images"));
    }
}
