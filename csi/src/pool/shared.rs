//! A shared pool: a directory on a filesystem every node mounts (NFS, SMB, CephFS...). A volume is a
//! directory in it, reachable from any node, with ownership set from StorageClass parameters and a
//! delete policy. The pool's filesystem is probed at start so volumes are only handed out on pools
//! that can do what the StorageClass requires.
//!
//! Layout: `<pool>/volumes/<id>/{volume.json,data/}`, `<pool>/tmp/` (debris, removed by the
//! controller at start), `<pool>/archive/<name>-<time>/` and `<pool>/retained/<name>/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::{btrfs, check_same, local::list_records, tree_usage};
use crate::error::{CsiError, Result};
use crate::failpoint;
use crate::params::{OnDelete, SharedParams};
use crate::probe::{self, ProbeReport};
use crate::record::{self, VolumeRecord};
use crate::validate::Id;

const VOLUME_RECORD: &str = "volume.json";
const DATA_DIR: &str = "data";

pub struct SharedPool {
    pub name: String,
    root: PathBuf,
    pub report: ProbeReport,
}

impl SharedPool {
    /// Opens the pool and probes its filesystem. `owner` (the controller) also removes debris of
    /// interrupted operations; node plugins must not, since the controller may be mid-operation.
    pub fn open(name: &str, root: &Path, owner: bool) -> Result<SharedPool> {
        let subdirs: &[&str] = if owner {
            &["volumes", "tmp", "archive", "retained"]
        } else {
            &[]
        };
        for sub in subdirs {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(CsiError::io("create", &dir))?;
        }
        let root = fs::canonicalize(root).map_err(CsiError::io("resolve", root))?;
        let report = probe::probe(&root).map_err(CsiError::io("probe", &root))?;
        info!(pool = name, path = %root.display(), "shared pool capabilities:\n{}", report.render());
        let pool = SharedPool {
            name: name.to_string(),
            root,
            report,
        };
        if owner {
            let tmp = pool.root.join("tmp");
            for entry in fs::read_dir(&tmp).map_err(CsiError::io("read", &tmp))? {
                let path = entry.map_err(CsiError::io("read", &tmp))?.path();
                warn!(path = %path.display(), "removing debris of an interrupted operation");
                btrfs::remove_tree(&path)?;
            }
        }
        Ok(pool)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn volume_dir(&self, id: &Id) -> PathBuf {
        self.root.join("volumes").join(id.as_str())
    }

    /// The directory a shared volume's users see.
    pub fn data_path(&self, id: &Id) -> PathBuf {
        self.volume_dir(id).join(DATA_DIR)
    }

    pub fn get(&self, id: &Id) -> Result<Option<VolumeRecord>> {
        record::read_object(&self.volume_dir(id), VOLUME_RECORD)
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>> {
        list_records(&self.root.join("volumes"), VOLUME_RECORD)
    }

    /// Refuses a pool that lacks a capability the StorageClass requires, saying which and why.
    pub fn check_capabilities(&self, params: &SharedParams) -> Result<()> {
        if let Some((cap, err)) = self.report.first_missing(&params.required_capabilities) {
            return Err(CsiError::FailedPrecondition(format!(
                "shared pool {:?} lacks capability {:?} required by parameters.requiredCapabilities \
                 (probing it failed: {err}); {}",
                self.name,
                cap.as_str(),
                cap.why_needed()
            )));
        }
        Ok(())
    }

    /// Creates the volume directory with its ownership and mode, or returns the existing volume.
    pub fn create(
        &self,
        wanted: VolumeRecord,
        params: &SharedParams,
        range: super::Range,
    ) -> Result<VolumeRecord> {
        let id = Id::parse("volume", "volume_id", &wanted.id)?;
        if let Some(existing) = self.get(&id)? {
            check_same(&existing, &wanted, range)?;
            return Ok(existing);
        }
        self.check_capabilities(params)?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{id}.creating.{:08x}", rand::random::<u32>()));
        let built = (|| {
            let data = tmp.join(DATA_DIR);
            fs::create_dir_all(&data).map_err(CsiError::io("create", &data))?;
            if params.uid.is_some() || params.gid.is_some() {
                std::os::unix::fs::chown(&data, params.uid, params.gid)
                    .map_err(CsiError::io("chown", &data))?;
            }
            let mode = params.mode.unwrap_or(0o755);
            fs::set_permissions(&data, fs::Permissions::from_mode(mode))
                .map_err(CsiError::io("chmod", &data))?;
            record::write_atomic(&tmp.join(VOLUME_RECORD), &wanted)
        })();
        if let Err(e) = built {
            let _ = btrfs::remove_tree(&tmp);
            return Err(e);
        }
        failpoint::hit("create-volume-before-commit");
        let dest = self.volume_dir(&id);
        fs::rename(&tmp, &dest).map_err(CsiError::io("rename into", &dest))?;
        record::sync_dir(&self.root.join("volumes"))?;
        failpoint::hit("create-volume-after-commit");
        info!(pool = %self.name, volume = %id, "created shared volume");
        Ok(wanted)
    }

    /// Deletes, archives or retains a volume per its `onDelete` policy.
    pub fn delete(&self, id: &Id) -> Result<()> {
        let Some(rec) = self.get(id)? else {
            return Ok(());
        };
        let policy = rec.on_delete.unwrap_or(OnDelete::Delete);
        let dir = self.volume_dir(id);
        match policy {
            OnDelete::Delete => {
                let doomed = self
                    .root
                    .join("tmp")
                    .join(format!("{id}.deleting.{:08x}", rand::random::<u32>()));
                fs::rename(&dir, &doomed).map_err(CsiError::io("rename", &doomed))?;
                record::sync_dir(&self.root.join("volumes"))?;
                failpoint::hit("delete-volume-after-unlink");
                btrfs::remove_tree(&doomed)?;
            }
            OnDelete::Archive | OnDelete::Retain => {
                let dest = keep_path(&self.root, &rec, policy);
                fs::rename(&dir, &dest).map_err(CsiError::io("rename", &dest))?;
                record::sync_dir(&self.root.join("volumes"))?;
                info!(volume = %id, to = %dest.display(), "kept the data of a deleted shared volume");
            }
        }
        info!(pool = %self.name, volume = %id, policy = ?policy, "deleted shared volume");
        Ok(())
    }

    /// Records a new capacity (shared pools cannot enforce it; usage is reported against it).
    pub fn expand(&self, id: &Id, bytes: u64) -> Result<VolumeRecord> {
        let mut rec = self
            .get(id)?
            .ok_or_else(|| CsiError::NotFound(format!("volume {id} does not exist")))?;
        if bytes > rec.capacity_bytes {
            rec.capacity_bytes = bytes;
            record::write_atomic(&self.volume_dir(id).join(VOLUME_RECORD), &rec)?;
        }
        Ok(rec)
    }

    /// Bytes and inodes used by a volume, and whether it is abnormal.
    pub fn usage(&self, rec: &VolumeRecord) -> Result<super::Usage> {
        let id = Id::parse("volume", "volume_id", &rec.id)?;
        let data = self.data_path(&id);
        if fs::symlink_metadata(&data).is_err() {
            return Ok(super::Usage {
                total_bytes: rec.capacity_bytes,
                used_bytes: 0,
                inodes_used: None,
                inodes_total: None,
                abnormal: Some(format!("the volume's directory {} is gone", data.display())),
            });
        }
        let (used, inodes) = tree_usage(&data);
        let abnormal = (used > rec.capacity_bytes).then(|| {
            format!(
                "{used} bytes used exceeds the capacity of {} bytes (shared pools do not enforce capacity)",
                rec.capacity_bytes
            )
        });
        Ok(super::Usage {
            total_bytes: rec.capacity_bytes,
            used_bytes: used,
            inodes_used: Some(inodes),
            inodes_total: None,
            abnormal,
        })
    }
}

/// Where an archived or retained volume's directory goes: never over an existing one.
fn keep_path(root: &Path, rec: &VolumeRecord, policy: OnDelete) -> PathBuf {
    let safe_name = Id::from_name("name", &rec.name)
        .map(|i| i.to_string())
        .unwrap_or_else(|_| rec.id.clone());
    let base = match policy {
        OnDelete::Archive => root
            .join("archive")
            .join(format!("{safe_name}-{}", record::now_unix())),
        _ => root.join("retained").join(&safe_name),
    };
    let mut path = base.clone();
    let mut n = 1;
    while fs::symlink_metadata(&path).is_ok() {
        path = PathBuf::from(format!("{}.{n}", base.display()));
        n += 1;
    }
    path
}
