//! Volume and snapshot records: small JSON files stored beside the data they describe, written
//! atomically (temp file, fsync, rename, fsync of the directory) so a crash leaves either the old
//! record or the new one, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{CsiError, Result};
use crate::params::{Backend, FsType, OnDelete};

/// How a volume's capacity is enforced, reported honestly in its condition and stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Enforcement {
    /// A btrfs qgroup limit on the volume's subvolume.
    BtrfsQgroup,
    /// An ext4/XFS project quota on the volume's directory.
    ProjectQuota,
    /// The size of the volume's image file: writes past it fail with ENOSPC.
    ImageSize,
    /// Nothing stops writes past the capacity; usage is tracked and reported.
    None,
}

/// What a volume was created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

/// How a local volume is accessed: as a filesystem, or as a raw block device (loop only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Access {
    Mount,
    Block,
}

/// Everything the driver knows about one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub id: String,
    /// The name the CO gave in CreateVolume (the idempotency key).
    pub name: String,
    pub capacity_bytes: u64,
    pub backend: Backend,
    /// Set for loop volumes formatted with a filesystem.
    pub fs_type: Option<FsType>,
    pub access: Access,
    pub enforcement: Enforcement,
    pub source: Option<Source>,
    /// Shared volumes only: the pool, and what happens on delete.
    pub pool: Option<String>,
    pub on_delete: Option<OnDelete>,
    /// The StorageClass parameters it was created with (compared on a repeated CreateVolume).
    pub parameters: std::collections::BTreeMap<String, String>,
    pub created_unix: i64,
    /// Loop volumes with a filesystem: the size it was made or last grown to. Staging or node
    /// expansion grows it when the capacity is larger (after ControllerExpand or a restore).
    #[serde(default)]
    pub fs_bytes: u64,
}

/// Everything the driver knows about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    pub id: String,
    pub name: String,
    pub source_volume_id: String,
    pub size_bytes: u64,
    pub backend: Backend,
    pub fs_type: Option<FsType>,
    pub access: Access,
    pub created_unix: i64,
}

/// Writes `value` as JSON to `path` atomically and durably.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().ok_or_else(|| CsiError::CorruptRecord {
        path: path.to_path_buf(),
        reason: "record path has no parent".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| CsiError::CorruptRecord {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut f = File::create(&tmp).map_err(CsiError::io("create", &tmp))?;
    f.write_all(&bytes).map_err(CsiError::io("write", &tmp))?;
    f.sync_all().map_err(CsiError::io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(CsiError::io("rename", path))?;
    sync_dir(dir)
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CsiError::io("fsync", dir))
}

/// Reads the record `file` of the object directory `dir`. Only a real directory holding a regular
/// file counts: a symlink planted in the pool is treated as absent, so no call follows it out.
pub fn read_object<T: DeserializeOwned>(dir: &Path, file: &str) -> Result<Option<T>> {
    let real_dir = fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    let path = dir.join(file);
    let real_file = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
    if !real_dir || !real_file {
        return Ok(None);
    }
    read(&path)
}

/// Reads a record; `Ok(None)` when the file does not exist.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CsiError::CorruptRecord {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CsiError::io("read", path)(e)),
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volume.json");
        let rec = SnapshotRecord {
            id: "s1".into(),
            name: "snap".into(),
            source_volume_id: "v1".into(),
            size_bytes: 4096,
            backend: Backend::Loop,
            fs_type: Some(FsType::Xfs),
            access: Access::Mount,
            created_unix: 7,
        };
        write_atomic(&path, &rec).unwrap();
        write_atomic(&path, &rec).unwrap();
        assert_eq!(read::<SnapshotRecord>(&path).unwrap(), Some(rec));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("volume.json")]);
    }

    #[test]
    fn missing_is_none_and_garbage_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read::<SnapshotRecord>(&dir.path().join("nope")).unwrap(),
            None
        );
        let bad = dir.path().join("bad.json");
        fs::write(&bad, b"{not json").unwrap();
        let err = read::<SnapshotRecord>(&bad).unwrap_err();
        assert!(matches!(err, CsiError::CorruptRecord { .. }), "{err}");
    }
}
