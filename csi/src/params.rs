//! StorageClass parameters: parsed into typed values, every unknown key refused with its name, so a
//! typo in a StorageClass fails provisioning loudly instead of being silently ignored.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{CsiError, Result};
use crate::probe::Capability;

/// Keys that the external-provisioner adds or passes through; they are for the CO, not for Berth.
const CO_PREFIX: &str = "csi.storage.k8s.io/";

/// How a local volume is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A directory (a btrfs subvolume where the pool is btrfs).
    Dir,
    /// A sparse image file attached to a loop device.
    Loop,
}

/// Filesystems a loop volume can be formatted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    fn parse(field: &str, raw: &str) -> Result<FsType> {
        match raw {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            other => Err(CsiError::invalid(
                field,
                format!("{other:?} is not a supported filesystem (ext4, xfs)"),
            )),
        }
    }

    /// The smallest image mkfs accepts for this filesystem (XFS refuses under 300 MiB).
    pub fn min_bytes(self) -> u64 {
        match self {
            FsType::Ext4 => 16 << 20,
            FsType::Xfs => 300 << 20,
        }
    }
}

/// Parameters of a `local.csi.berth.dev` StorageClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalParams {
    pub backend: Backend,
    /// Filesystem for `loop` volumes; `None` means the default (ext4) or the capability's fs_type.
    pub fs_type: Option<FsType>,
}

impl LocalParams {
    pub fn parse(params: &HashMap<String, String>) -> Result<LocalParams> {
        let mut out = LocalParams {
            backend: Backend::Dir,
            fs_type: None,
        };
        for (key, value) in params {
            let field = format!("parameters.{key}");
            match key.as_str() {
                "backend" => {
                    out.backend = match value.as_str() {
                        "dir" => Backend::Dir,
                        "loop" => Backend::Loop,
                        other => {
                            return Err(CsiError::invalid(
                                field,
                                format!("{other:?} is not a backend (dir, loop)"),
                            ));
                        }
                    }
                }
                "fsType" => out.fs_type = Some(FsType::parse(&field, value)?),
                k if k.starts_with(CO_PREFIX) => {}
                _ => return Err(unknown(key, "backend, fsType")),
            }
        }
        if out.fs_type.is_some() && out.backend == Backend::Dir {
            return Err(CsiError::invalid(
                "parameters.fsType",
                "only applies to backend \"loop\" (a dir volume uses the pool's filesystem)",
            ));
        }
        Ok(out)
    }
}

/// What happens to a shared volume's data when its volume is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// The directory is removed.
    Delete,
    /// The directory is moved to `<pool>/archive/<name>-<time>`.
    Archive,
    /// The directory is moved to `<pool>/retained/<name>` and kept as it is.
    Retain,
}

/// Parameters of a `shared.csi.berth.dev` StorageClass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedParams {
    pub pool: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub on_delete: OnDelete,
    pub required_capabilities: BTreeSet<Capability>,
}

impl SharedParams {
    pub fn parse(params: &HashMap<String, String>) -> Result<SharedParams> {
        let mut out = SharedParams {
            pool: None,
            uid: None,
            gid: None,
            mode: None,
            on_delete: OnDelete::Delete,
            required_capabilities: BTreeSet::new(),
        };
        for (key, value) in params {
            let field = format!("parameters.{key}");
            match key.as_str() {
                "pool" => out.pool = Some(value.clone()),
                "uid" => out.uid = Some(parse_id(&field, value)?),
                "gid" => out.gid = Some(parse_id(&field, value)?),
                "mode" => out.mode = Some(parse_mode(&field, value)?),
                "onDelete" => {
                    out.on_delete = match value.as_str() {
                        "delete" => OnDelete::Delete,
                        "archive" => OnDelete::Archive,
                        "retain" => OnDelete::Retain,
                        other => {
                            return Err(CsiError::invalid(
                                field,
                                format!("{other:?} is not one of delete, archive, retain"),
                            ));
                        }
                    }
                }
                "requiredCapabilities" => {
                    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                        let cap = Capability::parse(word).ok_or_else(|| {
                            CsiError::invalid(
                                &field,
                                format!(
                                    "{word:?} is not a capability ({})",
                                    Capability::ALL.map(Capability::as_str).join(", ")
                                ),
                            )
                        })?;
                        out.required_capabilities.insert(cap);
                    }
                }
                k if k.starts_with(CO_PREFIX) => {}
                _ => {
                    return Err(unknown(
                        key,
                        "pool, uid, gid, mode, onDelete, requiredCapabilities",
                    ));
                }
            }
        }
        Ok(out)
    }
}

fn unknown(key: &str, known: &str) -> CsiError {
    CsiError::invalid(
        format!("parameters.{key}"),
        format!("unknown StorageClass parameter (known: {known})"),
    )
}

fn parse_id(field: &str, raw: &str) -> Result<u32> {
    raw.parse::<u32>()
        .ok()
        .filter(|&v| v != u32::MAX)
        .ok_or_else(|| CsiError::invalid(field, format!("{raw:?} is not a numeric user/group ID")))
}

fn parse_mode(field: &str, raw: &str) -> Result<u32> {
    let digits = raw.strip_prefix("0o").unwrap_or(raw);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 && !digits.is_empty() => Ok(mode),
        _ => Err(CsiError::invalid(
            field,
            format!("{raw:?} is not an octal mode such as 0775"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn local_defaults_and_values() {
        assert_eq!(
            LocalParams::parse(&map(&[])).unwrap(),
            LocalParams {
                backend: Backend::Dir,
                fs_type: None
            }
        );
        assert_eq!(
            LocalParams::parse(&map(&[("backend", "loop"), ("fsType", "xfs")])).unwrap(),
            LocalParams {
                backend: Backend::Loop,
                fs_type: Some(FsType::Xfs)
            }
        );
        // Keys the external-provisioner adds are ignored.
        assert!(LocalParams::parse(&map(&[("csi.storage.k8s.io/pvc/name", "x")])).is_ok());
    }

    #[test]
    fn local_errors_name_the_parameter() {
        let table = [
            (vec![("backend", "lvm")], "parameters.backend"),
            (
                vec![("backend", "loop"), ("fsType", "ntfs")],
                "parameters.fsType",
            ),
            (vec![("fsType", "ext4")], "parameters.fsType"),
            (vec![("sizeLimit", "1")], "parameters.sizeLimit"),
        ];
        for (pairs, field) in table {
            let err = LocalParams::parse(&map(&pairs)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn shared_values() {
        let p = SharedParams::parse(&map(&[
            ("pool", "main"),
            ("uid", "999"),
            ("gid", "999"),
            ("mode", "0770"),
            ("onDelete", "archive"),
            ("requiredCapabilities", "hardlinks, fsync"),
        ]))
        .unwrap();
        assert_eq!(p.pool.as_deref(), Some("main"));
        assert_eq!((p.uid, p.gid, p.mode), (Some(999), Some(999), Some(0o770)));
        assert_eq!(p.on_delete, OnDelete::Archive);
        assert_eq!(
            p.required_capabilities.into_iter().collect::<Vec<_>>(),
            vec![Capability::Hardlinks, Capability::Fsync]
        );
    }

    #[test]
    fn shared_errors_name_the_parameter() {
        let table = [
            (("uid", "root"), "parameters.uid"),
            (("uid", "-1"), "parameters.uid"),
            (("gid", "4294967295"), "parameters.gid"),
            (("mode", "0999"), "parameters.mode"),
            (("mode", "17777"), "parameters.mode"),
            (("mode", ""), "parameters.mode"),
            (("onDelete", "shred"), "parameters.onDelete"),
            (
                ("requiredCapabilities", "hardlinks,teleport"),
                "parameters.requiredCapabilities",
            ),
            (("backend", "dir"), "parameters.backend"),
        ];
        for ((k, v), field) in table {
            let err = SharedParams::parse(&map(&[(k, v)])).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }
}
