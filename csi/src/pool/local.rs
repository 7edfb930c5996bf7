//! The node-local pool: one directory on the node holding every local volume and snapshot.
//!
//! Layout (each object is a directory whose record lives beside its data):
//! ```text
//! <pool>/volumes/<id>/volume.json     + data/ (dir backend: a btrfs subvolume where possible)
//!                                     | disk.img (loop backend: sparse image file)
//! <pool>/snapshots/<id>/snapshot.json + data/ | disk.img
//! <pool>/tmp/                          objects being built or deleted; emptied at start-up
//! ```
//! Creation builds the object under `tmp/` and renames it into place as the last step; deletion
//! renames it into `tmp/` as the first step. A crash at any point therefore leaves either a complete
//! object or debris in `tmp/`, which `open` removes (detaching any loop device first).

use std::fs;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::{Usage, btrfs, check_same, fs_space, loopdev, projquota, tree_usage};
use crate::cmd;
use crate::error::{CsiError, Result};
use crate::failpoint;
use crate::mount;
use crate::params::{Backend, FsType};
use crate::record::{self, Access, Enforcement, SnapshotRecord, Source, VolumeRecord};
use crate::validate::Id;

const VOLUME_RECORD: &str = "volume.json";
const SNAPSHOT_RECORD: &str = "snapshot.json";
const DATA_DIR: &str = "data";
const IMAGE: &str = "disk.img";

pub struct LocalPool {
    root: PathBuf,
    /// How dir volumes' capacity is enforced on this pool's filesystem.
    dir_enforcement: Enforcement,
    /// `major:minor` of the pool's filesystem in the mount table.
    device: String,
    /// The block device holding the pool (for project quotas).
    source: PathBuf,
}

impl LocalPool {
    /// Opens (creating if needed) the pool at `root`, detects how capacity can be enforced, and
    /// removes whatever a crash left half-built or half-deleted.
    pub fn open(root: &Path) -> Result<LocalPool> {
        for sub in ["volumes", "snapshots", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(CsiError::io("create", &dir))?;
        }
        let root = fs::canonicalize(root).map_err(CsiError::io("resolve", root))?;
        let pool_mount = mount::mount_table()?
            .into_iter()
            .filter(|m| root.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len());
        let dir_enforcement = detect_enforcement(&root, pool_mount.as_ref());
        let pool = LocalPool {
            root,
            dir_enforcement,
            device: pool_mount
                .as_ref()
                .map(|m| m.device.clone())
                .unwrap_or_default(),
            source: pool_mount
                .map(|m| PathBuf::from(m.source))
                .unwrap_or_default(),
        };
        pool.recover()?;
        Ok(pool)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir_enforcement(&self) -> Enforcement {
        self.dir_enforcement
    }

    fn volume_dir(&self, id: &Id) -> PathBuf {
        self.root.join("volumes").join(id.as_str())
    }

    fn snapshot_dir(&self, id: &Id) -> PathBuf {
        self.root.join("snapshots").join(id.as_str())
    }

    fn tmp_dir(&self, id: &Id, what: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{id}.{what}.{:08x}", rand::random::<u32>()))
    }

    /// The volume's data: its directory (dir backend) or image file (loop backend).
    pub fn data_path(&self, rec: &VolumeRecord) -> PathBuf {
        let dir = self.root.join("volumes").join(&rec.id);
        match rec.backend {
            Backend::Dir => dir.join(DATA_DIR),
            Backend::Loop => dir.join(IMAGE),
        }
    }

    /// Removes debris from interrupted creations and deletions.
    fn recover(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(CsiError::io("read", &tmp))? {
            let path = entry.map_err(CsiError::io("read", &tmp))?.path();
            warn!(path = %path.display(), "removing debris of an interrupted operation");
            loopdev::detach(&path.join(IMAGE))?;
            for m in mount::mount_table()?.into_iter().rev() {
                if m.mount_point.starts_with(&path) {
                    mount::unmount(&m.mount_point)?;
                }
            }
            btrfs::remove_tree(&path)?;
        }
        record::sync_dir(&tmp)
    }

    pub fn get(&self, id: &Id) -> Result<Option<VolumeRecord>> {
        record::read_object(&self.volume_dir(id), VOLUME_RECORD)
    }

    /// The volume's record, or NOT_FOUND.
    pub fn must_get(&self, id: &Id) -> Result<VolumeRecord> {
        self.get(id)?
            .ok_or_else(|| CsiError::NotFound(format!("volume {id} does not exist on this node")))
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>> {
        list_records(&self.root.join("volumes"), VOLUME_RECORD)
    }

    pub fn get_snapshot(&self, id: &Id) -> Result<Option<SnapshotRecord>> {
        record::read_object(&self.snapshot_dir(id), SNAPSHOT_RECORD)
    }

    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        list_records(&self.root.join("snapshots"), SNAPSHOT_RECORD)
    }

    /// Total size of the pool's filesystem and what is still free for new volumes: the free space,
    /// but never more than the size minus what existing volumes may grow to (thick accounting, so
    /// the scheduler's view holds even when every volume fills up).
    pub fn capacity(&self) -> Result<(u64, u64)> {
        let (total, free) = fs_space(&self.root)?;
        let reserved: u64 = self.list()?.iter().map(|v| v.capacity_bytes).sum();
        Ok((total, free.min(total.saturating_sub(reserved))))
    }

    /// The smallest volume the backend can make.
    pub fn minimum(backend: Backend, fs: Option<FsType>, access: Access) -> u64 {
        match (backend, access) {
            (Backend::Dir, _) => 4096,
            (Backend::Loop, Access::Block) => 1 << 20,
            (Backend::Loop, Access::Mount) => fs.unwrap_or(FsType::Ext4).min_bytes(),
        }
    }

    /// Creates the volume `wanted` describes, or returns the existing one when the same name was
    /// already created compatibly.
    pub fn create(&self, mut wanted: VolumeRecord, range: super::Range) -> Result<VolumeRecord> {
        let id = Id::parse("volume", "volume_id", &wanted.id)?;
        if let Some(existing) = self.get(&id)? {
            check_same(&existing, &wanted, range)?;
            return Ok(existing);
        }
        let (_, available) = self.capacity()?;
        if wanted.capacity_bytes > available {
            return Err(CsiError::NoRoomHere(format!(
                "node pool has {available} bytes free for new volumes, {} requested",
                wanted.capacity_bytes
            )));
        }
        wanted.enforcement = match wanted.backend {
            Backend::Dir => self.dir_enforcement,
            Backend::Loop => Enforcement::ImageSize,
        };
        let tmp = self.tmp_dir(&id, "creating");
        fs::create_dir(&tmp).map_err(CsiError::io("create", &tmp))?;
        let built = self.build(&tmp, &mut wanted);
        if let Err(e) = built {
            let _ = btrfs::remove_tree(&tmp);
            return Err(e);
        }
        failpoint::hit("create-volume-before-commit");
        let dest = self.volume_dir(&id);
        fs::rename(&tmp, &dest).map_err(CsiError::io("rename into", &dest))?;
        record::sync_dir(&self.root.join("volumes"))?;
        failpoint::hit("create-volume-after-commit");
        info!(volume = %id, backend = ?wanted.backend, bytes = wanted.capacity_bytes, "created volume");
        Ok(wanted)
    }

    /// Fills `tmp` with the volume's data and record.
    fn build(&self, tmp: &Path, rec: &mut VolumeRecord) -> Result<()> {
        let source_data = match &rec.source {
            None => None,
            Some(Source::Snapshot(sid)) => {
                let sid = Id::parse(
                    "snapshot",
                    "volume_content_source.snapshot.snapshot_id",
                    sid,
                )?;
                let snap = self.get_snapshot(&sid)?.ok_or_else(|| {
                    CsiError::NotFound(format!("source snapshot {sid} does not exist"))
                })?;
                check_source_kind(rec, snap.backend, snap.access, snap.fs_type)?;
                let dir = self.snapshot_dir(&sid);
                Some(match snap.backend {
                    Backend::Dir => dir.join(DATA_DIR),
                    Backend::Loop => dir.join(IMAGE),
                })
            }
            Some(Source::Volume(vid)) => {
                let vid = Id::parse("volume", "volume_content_source.volume.volume_id", vid)?;
                let src = self.get(&vid)?.ok_or_else(|| {
                    CsiError::NotFound(format!("source volume {vid} does not exist"))
                })?;
                check_source_kind(rec, src.backend, src.access, src.fs_type)?;
                Some(self.data_path(&src))
            }
        };
        match rec.backend {
            Backend::Dir => {
                let data = tmp.join(DATA_DIR);
                match (&source_data, rec.enforcement) {
                    (Some(src), Enforcement::BtrfsQgroup) if btrfs::is_subvolume(src) => {
                        btrfs::snapshot(src, tmp, DATA_DIR, false)?
                    }
                    (Some(src), Enforcement::ProjectQuota) => {
                        // The project is set first so every copied file is counted in it.
                        fs::create_dir(&data).map_err(CsiError::io("create", &data))?;
                        projquota::assign(
                            &data,
                            &self.source,
                            projquota::project_id(&rec.id),
                            rec.capacity_bytes,
                        )?;
                        copy_tree(&src.join("."), &data)?
                    }
                    (Some(src), _) => copy_tree(src, &data)?,
                    (None, Enforcement::BtrfsQgroup) => btrfs::create_subvolume(tmp, DATA_DIR)?,
                    (None, _) => fs::create_dir(&data).map_err(CsiError::io("create", &data))?,
                }
                match rec.enforcement {
                    Enforcement::BtrfsQgroup => btrfs::set_limit(&data, rec.capacity_bytes)?,
                    Enforcement::ProjectQuota if source_data.is_none() => projquota::assign(
                        &data,
                        &self.source,
                        projquota::project_id(&rec.id),
                        rec.capacity_bytes,
                    )?,
                    _ => {}
                }
            }
            Backend::Loop => {
                let image = tmp.join(IMAGE);
                if let Some(src) = &source_data {
                    copy_image(src, &image)?;
                    rec.fs_bytes = fs::metadata(src).map_err(CsiError::io("stat", src))?.len();
                }
                let f = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&image)
                    .map_err(CsiError::io("create", &image))?;
                f.set_len(rec.capacity_bytes)
                    .map_err(CsiError::io("size", &image))?;
                drop(f);
                if let (None, Some(fs_type), Access::Mount) =
                    (&source_data, rec.fs_type, rec.access)
                {
                    mkfs(fs_type, &image)?;
                    rec.fs_bytes = rec.capacity_bytes;
                }
            }
        }
        record::write_atomic(&tmp.join(VOLUME_RECORD), rec)
    }

    /// Where a volume is in use on this node, if it is (mounted or attached).
    pub fn in_use(&self, rec: &VolumeRecord) -> Result<Option<String>> {
        match rec.backend {
            Backend::Loop => Ok(loopdev::find(&self.data_path(rec))?
                .first()
                .map(|d| format!("its image is attached to {}", d.display()))),
            Backend::Dir => {
                let suffix = Path::new("volumes").join(&rec.id).join(DATA_DIR);
                Ok(mount::mount_table()?
                    .into_iter()
                    .find(|m| m.device == self.device && m.root.ends_with(&suffix))
                    .map(|m| format!("it is mounted at {}", m.mount_point.display())))
            }
        }
    }

    /// Deletes a volume; deleting one that does not exist succeeds.
    pub fn delete(&self, id: &Id) -> Result<()> {
        let Some(rec) = self.get(id)? else {
            return Ok(());
        };
        if let Some(where_) = self.in_use(&rec)? {
            return Err(CsiError::FailedPrecondition(format!(
                "volume {id} is still in use on this node: {where_}"
            )));
        }
        let doomed = self.tmp_dir(id, "deleting");
        fs::rename(self.volume_dir(id), &doomed).map_err(CsiError::io("rename", &doomed))?;
        record::sync_dir(&self.root.join("volumes"))?;
        failpoint::hit("delete-volume-after-unlink");
        btrfs::remove_tree(&doomed)?;
        info!(volume = %id, "deleted volume");
        Ok(())
    }

    /// Grows a volume to at least `bytes` on the controller side: the quota or the image file.
    /// Returns the record, and whether the node must still grow a filesystem.
    pub fn expand(&self, id: &Id, bytes: u64) -> Result<VolumeRecord> {
        let mut rec = self.must_get(id)?;
        let bytes = bytes.div_ceil(4096) * 4096;
        if bytes <= rec.capacity_bytes {
            return Ok(rec);
        }
        let (_, available) = self.capacity()?;
        let growth = bytes - rec.capacity_bytes;
        if growth > available {
            return Err(CsiError::OutOfRange(format!(
                "node pool has {available} bytes free for growth, {growth} more requested"
            )));
        }
        let data = self.data_path(&rec);
        match (rec.backend, rec.enforcement) {
            (Backend::Dir, Enforcement::BtrfsQgroup) => btrfs::set_limit(&data, bytes)?,
            (Backend::Dir, Enforcement::ProjectQuota) => {
                projquota::set_limit(&self.source, projquota::project_id(&rec.id), bytes)?
            }
            (Backend::Dir, _) => {}
            (Backend::Loop, _) => {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&data)
                    .map_err(CsiError::io("open", &data))?;
                f.set_len(bytes).map_err(CsiError::io("grow", &data))?;
                failpoint::hit("expand-volume-after-grow");
                for dev in loopdev::find(&data)? {
                    loopdev::refresh(&dev)?;
                }
            }
        }
        rec.capacity_bytes = bytes;
        record::write_atomic(&self.volume_dir(id).join(VOLUME_RECORD), &rec)?;
        info!(volume = %id, bytes, "expanded volume");
        Ok(rec)
    }

    /// Grows a loop volume's filesystem to its capacity when it is smaller (after ControllerExpand
    /// or a restore into a larger volume). `mounted_at` is `None` before the filesystem is mounted:
    /// ext4 is then grown offline (after a forced check), which needs no CAP_SYS_RESOURCE; XFS only
    /// grows mounted, so it is grown once `mounted_at` is given.
    pub fn grow_fs(
        &self,
        rec: &mut VolumeRecord,
        device: &Path,
        mounted_at: Option<&Path>,
    ) -> Result<()> {
        let Some(fs_type) = rec.fs_type else {
            return Ok(());
        };
        if rec.access != Access::Mount || rec.fs_bytes >= rec.capacity_bytes {
            return Ok(());
        }
        loopdev::refresh(device)?;
        let dev = device.to_string_lossy();
        match (fs_type, mounted_at) {
            (FsType::Ext4, None) => {
                cmd::run("e2fsck", &["-f", "-p", &dev])?;
                cmd::run("resize2fs", &[&dev])?;
            }
            (FsType::Ext4, Some(_)) => {
                if let Err(e) = cmd::run("resize2fs", &[&dev]) {
                    if e.to_string().contains("Permission denied") {
                        return Err(CsiError::FailedPrecondition(format!(
                            "growing the mounted ext4 filesystem of volume {} needs CAP_SYS_RESOURCE, which \
                             this plugin lacks; it is grown when the volume is next staged ({e})",
                            rec.id
                        )));
                    }
                    return Err(e);
                }
            }
            (FsType::Xfs, None) => return Ok(()),
            (FsType::Xfs, Some(at)) => {
                cmd::run("xfs_growfs", &[&at.to_string_lossy()])?;
            }
        }
        rec.fs_bytes = rec.capacity_bytes;
        let id = Id::parse("volume", "volume_id", &rec.id)?;
        record::write_atomic(&self.volume_dir(&id).join(VOLUME_RECORD), rec)?;
        info!(volume = %rec.id, bytes = rec.capacity_bytes, "grew filesystem");
        Ok(())
    }

    /// Snapshots volume `source` as snapshot `id` (read-only btrfs snapshot, reflink or copy).
    pub fn create_snapshot(&self, id: &Id, name: &str, source: &Id) -> Result<SnapshotRecord> {
        if let Some(existing) = self.get_snapshot(id)? {
            if existing.source_volume_id != source.as_str() {
                return Err(CsiError::AlreadyExists(format!(
                    "snapshot {name:?} already exists for volume {}",
                    existing.source_volume_id
                )));
            }
            return Ok(existing);
        }
        let vol = self.get(source)?.ok_or_else(|| {
            CsiError::NotFound(format!(
                "source volume {source} does not exist on this node"
            ))
        })?;
        let tmp = self.tmp_dir(id, "snapshotting");
        fs::create_dir(&tmp).map_err(CsiError::io("create", &tmp))?;
        let rec = SnapshotRecord {
            id: id.to_string(),
            name: name.to_string(),
            source_volume_id: source.to_string(),
            size_bytes: vol.capacity_bytes,
            backend: vol.backend,
            fs_type: vol.fs_type,
            access: vol.access,
            created_unix: record::now_unix(),
        };
        let built = (|| {
            let src = self.data_path(&vol);
            match vol.backend {
                Backend::Dir if btrfs::is_subvolume(&src) => {
                    btrfs::snapshot(&src, &tmp, DATA_DIR, true)?
                }
                Backend::Dir => copy_tree(&src, &tmp.join(DATA_DIR))?,
                Backend::Loop => copy_image(&src, &tmp.join(IMAGE))?,
            }
            record::write_atomic(&tmp.join(SNAPSHOT_RECORD), &rec)
        })();
        if let Err(e) = built {
            let _ = btrfs::remove_tree(&tmp);
            return Err(e);
        }
        let dest = self.snapshot_dir(id);
        fs::rename(&tmp, &dest).map_err(CsiError::io("rename into", &dest))?;
        record::sync_dir(&self.root.join("snapshots"))?;
        info!(snapshot = %id, volume = %source, "created snapshot");
        Ok(rec)
    }

    pub fn delete_snapshot(&self, id: &Id) -> Result<()> {
        let dir = self.snapshot_dir(id);
        if self.get_snapshot(id)?.is_none() {
            return Ok(());
        }
        let doomed = self.tmp_dir(id, "deleting");
        fs::rename(&dir, &doomed).map_err(CsiError::io("rename", &doomed))?;
        record::sync_dir(&self.root.join("snapshots"))?;
        btrfs::remove_tree(&doomed)?;
        info!(snapshot = %id, "deleted snapshot");
        Ok(())
    }

    /// Usage of a volume for NodeGetVolumeStats; `mounted_at` is where its filesystem is mounted.
    pub fn usage(&self, rec: &VolumeRecord, mounted_at: &Path) -> Result<Usage> {
        let data = self.data_path(rec);
        if fs::symlink_metadata(&data).is_err() {
            return Ok(Usage {
                total_bytes: rec.capacity_bytes,
                used_bytes: 0,
                inodes_used: None,
                inodes_total: None,
                abnormal: Some(format!("the volume's data at {} is gone", data.display())),
            });
        }
        let mut usage = match (rec.backend, rec.enforcement) {
            (Backend::Loop, _) => {
                if rec.access == Access::Block {
                    return Ok(Usage {
                        total_bytes: rec.capacity_bytes,
                        used_bytes: 0,
                        inodes_used: None,
                        inodes_total: None,
                        abnormal: None,
                    });
                }
                let s = nix::sys::statvfs::statvfs(mounted_at)
                    .map_err(|e| CsiError::io("statvfs", mounted_at)(e.into()))?;
                let fr = s.fragment_size() as u64;
                let total = s.blocks() as u64 * fr;
                Usage {
                    total_bytes: total,
                    used_bytes: total - s.blocks_free() as u64 * fr,
                    inodes_used: Some(s.files() as u64 - s.files_free() as u64),
                    inodes_total: Some(s.files() as u64),
                    abnormal: None,
                }
            }
            (Backend::Dir, Enforcement::BtrfsQgroup) => Usage {
                total_bytes: rec.capacity_bytes,
                used_bytes: btrfs::referenced_bytes(&data)?,
                inodes_used: Some(tree_usage(&data).1),
                inodes_total: None,
                abnormal: None,
            },
            (Backend::Dir, Enforcement::ProjectQuota) => Usage {
                total_bytes: rec.capacity_bytes,
                used_bytes: projquota::used_bytes(&self.source, projquota::project_id(&rec.id))?,
                inodes_used: Some(tree_usage(&data).1),
                inodes_total: None,
                abnormal: None,
            },
            (Backend::Dir, _) => {
                let (bytes, inodes) = tree_usage(&data);
                Usage {
                    total_bytes: rec.capacity_bytes,
                    used_bytes: bytes,
                    inodes_used: Some(inodes),
                    inodes_total: None,
                    abnormal: None,
                }
            }
        };
        if usage.used_bytes > usage.total_bytes {
            usage.abnormal = Some(format!(
                "{} bytes used exceeds the capacity of {} bytes (this pool's filesystem cannot enforce capacity)",
                usage.used_bytes, usage.total_bytes
            ));
        }
        Ok(usage)
    }
}

/// How dir volumes on the filesystem at `root` can have their capacity enforced.
fn detect_enforcement(root: &Path, pool_mount: Option<&mount::MountEntry>) -> Enforcement {
    if btrfs::is_btrfs(root) {
        if !btrfs::quota_enabled(root) {
            match btrfs::enable_quota(root) {
                Ok(()) => info!(pool = %root.display(), "enabled btrfs quotas on the local pool"),
                Err(e) => {
                    warn!(pool = %root.display(), error = %e, "btrfs quotas cannot be enabled")
                }
            }
        }
        if btrfs::quota_enabled(root) {
            info!(pool = %root.display(), "dir volumes are btrfs subvolumes with qgroup limits");
            return Enforcement::BtrfsQgroup;
        }
    }
    if let Some(m) = pool_mount.filter(|m| projquota::enabled(m)) {
        info!(pool = %root.display(), fs = %m.fs_type, "dir volumes get project quotas");
        return Enforcement::ProjectQuota;
    }
    warn!(
        pool = %root.display(),
        "this pool's filesystem cannot enforce capacity for dir volumes (needs btrfs with quotas, or ext4/XFS mounted with prjquota); \
         usage is tracked and reported, and volumes above capacity are reported abnormal. \
         Use backend=loop for a hard limit"
    );
    Enforcement::None
}

/// A volume cloned from a source must have the same shape.
fn check_source_kind(
    rec: &VolumeRecord,
    backend: Backend,
    access: Access,
    fs: Option<FsType>,
) -> Result<()> {
    if rec.backend != backend
        || rec.access != access
        || (access == Access::Mount && rec.fs_type != fs)
    {
        return Err(CsiError::invalid(
            "volume_content_source",
            format!(
                "the source is a {backend:?}/{access:?} volume{}, but a {:?}/{:?} volume was requested",
                fs.map(|f| format!(" with {}", f.as_str()))
                    .unwrap_or_default(),
                rec.backend,
                rec.access
            ),
        ));
    }
    Ok(())
}

fn mkfs(fs_type: FsType, image: &Path) -> Result<()> {
    let image = image.to_string_lossy();
    match fs_type {
        FsType::Ext4 => cmd::run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                &image,
            ],
        )?,
        FsType::Xfs => cmd::run("mkfs.xfs", &["-q", "-f", "-K", &image])?,
    };
    Ok(())
}

/// Copies a volume image, sharing extents where the filesystem can. When the image's filesystem is
/// mounted it is frozen for the copy, so the copy holds everything written so far, consistently.
fn copy_image(src: &Path, dest: &Path) -> Result<()> {
    let devices = loopdev::find(src)?;
    let frozen = mount::mount_table()?
        .into_iter()
        .find(|m| devices.iter().any(|d| Path::new(&m.source) == d))
        .map(|m| m.mount_point);
    if let Some(mp) = &frozen {
        cmd::run("fsfreeze", &["--freeze", &mp.to_string_lossy()])?;
    }
    let copied = cmd::run(
        "cp",
        &[
            "--reflink=auto",
            "--sparse=always",
            &src.to_string_lossy(),
            &dest.to_string_lossy(),
        ],
    );
    if let Some(mp) = &frozen {
        cmd::run("fsfreeze", &["--unfreeze", &mp.to_string_lossy()])?;
    }
    copied.map(drop)
}

/// Copies a directory tree exactly (owners, modes, links, xattrs), sharing extents where the
/// filesystem can.
fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    cmd::run(
        "cp",
        &[
            "-a",
            "--reflink=auto",
            &src.to_string_lossy(),
            &dest.to_string_lossy(),
        ],
    )
    .map(drop)
}

pub(crate) fn list_records<T: serde::de::DeserializeOwned>(
    dir: &Path,
    file: &str,
) -> Result<Vec<T>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(CsiError::io("read", dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Some(rec) = record::read_object(&dir.join(&name), file)? {
            out.push(rec);
        }
    }
    Ok(out)
}
