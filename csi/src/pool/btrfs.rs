//! btrfs subvolumes, snapshots and qgroup limits through the kernel's ioctls (no `btrfs` process per
//! volume), plus the few reads that only `btrfs qgroup show` offers.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cmd;
use crate::error::{CsiError, Result};

/// Inode number of every subvolume's root directory.
const SUBVOLUME_ROOT_INODE: u64 = 256;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1 << 0;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

#[repr(C)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

nix::ioctl_write_ptr!(ioc_subvol_create, 0x94, 14, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy, 0x94, 15, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_create_v2, 0x94, 23, VolArgsV2);
nix::ioctl_read!(ioc_qgroup_limit, 0x94, 43, QgroupLimitArgs);

/// Whether `path` lives on a btrfs filesystem.
pub fn is_btrfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Whether `path` is the root of a btrfs subvolume.
pub fn is_subvolume(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.is_dir() && m.ino() == SUBVOLUME_ROOT_INODE)
        .unwrap_or(false)
        && is_btrfs(path)
}

/// Whether qgroups (quotas) are enabled on the filesystem holding `path`.
pub fn quota_enabled(path: &Path) -> bool {
    cmd::run(
        "btrfs",
        &["qgroup", "show", "--raw", &path.to_string_lossy()],
    )
    .is_ok()
}

/// Enables qgroups on the filesystem holding `path`.
pub fn enable_quota(path: &Path) -> Result<()> {
    cmd::run("btrfs", &["quota", "enable", &path.to_string_lossy()]).map(drop)
}

fn name_bytes<const N: usize>(name: &str) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    if name.is_empty() || name.len() >= N || name.contains('/') || name.contains('\0') {
        return Err(CsiError::invalid(
            "subvolume name",
            format!("{name:?} is not usable"),
        ));
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    Ok(buf)
}

fn open_dir(path: &Path) -> Result<File> {
    File::open(path).map_err(CsiError::io("open", path))
}

/// Creates subvolume `parent/name`.
pub fn create_subvolume(parent: &Path, name: &str) -> Result<()> {
    let dir = open_dir(parent)?;
    let args = VolArgs {
        fd: 0,
        name: name_bytes(name)?,
    };
    // SAFETY: `args` is a valid btrfs_ioctl_vol_args and `dir` an open directory.
    unsafe { ioc_subvol_create(dir.as_raw_fd(), &args) }
        .map_err(|e| CsiError::io("create subvolume in", parent)(e.into()))?;
    Ok(())
}

/// Snapshots subvolume `source` as `parent/name`, read-only when asked.
pub fn snapshot(source: &Path, parent: &Path, name: &str, read_only: bool) -> Result<()> {
    let src = open_dir(source)?;
    let dir = open_dir(parent)?;
    let args = VolArgsV2 {
        fd: src.as_raw_fd() as i64,
        transid: 0,
        flags: if read_only { BTRFS_SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: name_bytes(name)?,
    };
    // SAFETY: `args` is a valid btrfs_ioctl_vol_args_v2 whose fd stays open for the call.
    unsafe { ioc_snap_create_v2(dir.as_raw_fd(), &args) }
        .map_err(|e| CsiError::io("snapshot", source)(e.into()))?;
    Ok(())
}

/// Deletes subvolume `path` with everything in it.
pub fn delete_subvolume(path: &Path) -> Result<()> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (p, n.to_string_lossy()),
        _ => {
            return Err(CsiError::invalid(
                "subvolume path",
                path.display().to_string(),
            ));
        }
    };
    let dir = open_dir(parent)?;
    let args = VolArgs {
        fd: 0,
        name: name_bytes(&name)?,
    };
    // SAFETY: `args` is a valid btrfs_ioctl_vol_args and `dir` an open directory.
    unsafe { ioc_snap_destroy(dir.as_raw_fd(), &args) }
        .map_err(|e| CsiError::io("delete subvolume", path)(e.into()))?;
    Ok(())
}

/// Limits the data subvolume `path` may reference to `bytes`.
pub fn set_limit(path: &Path, bytes: u64) -> Result<()> {
    let dir = open_dir(path)?;
    let mut args = QgroupLimitArgs {
        // 0 means "the qgroup of the subvolume the fd is in".
        qgroupid: 0,
        lim: QgroupLimit {
            flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
            max_rfer: bytes,
            max_excl: 0,
            rsv_rfer: 0,
            rsv_excl: 0,
        },
    };
    // SAFETY: `args` is a valid btrfs_ioctl_qgroup_limit_args and `dir` an open directory.
    unsafe { ioc_qgroup_limit(dir.as_raw_fd(), &mut args) }
        .map_err(|e| CsiError::io("set qgroup limit on", path)(e.into()))?;
    Ok(())
}

/// Bytes referenced by subvolume `path` (its qgroup's `rfer`).
pub fn referenced_bytes(path: &Path) -> Result<u64> {
    let out = cmd::run(
        "btrfs",
        &["qgroup", "show", "-rf", "--raw", &path.to_string_lossy()],
    )?;
    parse_qgroup_show(&out).ok_or_else(|| CsiError::Command {
        command: format!("btrfs qgroup show -rf --raw {}", path.display()),
        status: "0".into(),
        stderr: format!("unexpected output: {out:?}"),
    })
}

/// The `Referenced` column of the single qgroup row in `btrfs qgroup show -rf --raw` output.
fn parse_qgroup_show(out: &str) -> Option<u64> {
    out.lines()
        .map(str::split_whitespace)
        .filter_map(|mut cols| {
            let id = cols.next()?;
            if !id.starts_with("0/") {
                return None;
            }
            cols.next()?.parse().ok()
        })
        .next()
}

/// Removes `path` recursively without following symlinks, deleting btrfs subvolumes with the
/// ioctl (one call instead of walking their contents).
pub fn remove_tree(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CsiError::io("stat", path)(e)),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path).map_err(CsiError::io("remove", path));
    }
    if meta.ino() == SUBVOLUME_ROOT_INODE && is_btrfs(path) {
        return delete_subvolume(path);
    }
    for entry in std::fs::read_dir(path).map_err(CsiError::io("read directory", path))? {
        let entry = entry.map_err(CsiError::io("read directory", path))?;
        remove_tree(&entry.path())?;
    }
    std::fs::remove_dir(path).map_err(CsiError::io("remove directory", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qgroup_show_with_and_without_path_column() {
        let old = "qgroupid         rfer         excl     max_rfer \n--------         ----         ----     -------- \n0/257           16384        16384     20971520 \n";
        assert_eq!(parse_qgroup_show(old), Some(16384));
        let new = "Qgroupid    Referenced    Exclusive   Max referenced   Path \n--------    ----------    ---------   --------------   ---- \n0/258         1064960      1064960         20971520   volumes/v/data\n";
        assert_eq!(parse_qgroup_show(new), Some(1_064_960));
        assert_eq!(parse_qgroup_show("garbage"), None);
    }

    #[test]
    fn subvolume_names_are_checked() {
        assert!(name_bytes::<16>("data").is_ok());
        assert!(name_bytes::<16>("").is_err());
        assert!(name_bytes::<16>("a/b").is_err());
        assert!(name_bytes::<4>("data").is_err());
    }
}
