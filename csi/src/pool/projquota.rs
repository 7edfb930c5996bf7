//! ext4/XFS project quotas for dir volumes: each volume directory gets its own project ID
//! (inherited by everything created in it) and a hard block limit on that project.
//!
//! Used only when the pool's filesystem is mounted with `prjquota`; this project's test machines
//! have no kernel quota support, so the ioctl/quotactl calls here are exercised on real nodes only,
//! and the pure parts (detection, project IDs, limits) are unit-tested.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{CsiError, Result};
use crate::mount::MountEntry;

/// Whether a mount enforces project quotas (ext4 and XFS both show `prjquota` in super options).
pub fn enabled(pool_mount: &MountEntry) -> bool {
    matches!(pool_mount.fs_type.as_str(), "ext4" | "xfs")
        && pool_mount
            .super_options
            .iter()
            .any(|o| o == "prjquota" || o == "pquota")
}

/// A stable project ID for a volume: derived from its ID, above the range admins use by hand.
pub fn project_id(volume_id: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(volume_id.as_bytes());
    let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    (1 << 20) + n % ((1 << 31) - (1 << 20))
}

/// The quota hard limit in the 1 KiB blocks quotactl counts in, rounded up.
pub fn limit_blocks(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

#[repr(C)]
#[derive(Default)]
struct FsxAttr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

#[repr(C)]
#[derive(Default)]
struct DqBlk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const PRJQUOTA: i32 = 2;
const Q_SETQUOTA: i32 = 0x80_0008;
const Q_GETQUOTA: i32 = 0x80_0007;
const QIF_BLIMITS: u32 = 1;

nix::ioctl_read!(fs_ioc_fsgetxattr, b'X', 31, FsxAttr);
nix::ioctl_write_ptr!(fs_ioc_fssetxattr, b'X', 32, FsxAttr);

fn qcmd(cmd: i32) -> i32 {
    (cmd << 8) | (PRJQUOTA & 0xff)
}

fn c_path(path: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| CsiError::invalid("path", "contains NUL"))
}

/// Puts `dir` in project `projid` (inherited by new files) and limits the project to `bytes`.
pub fn assign(dir: &Path, device: &Path, projid: u32, bytes: u64) -> Result<()> {
    let f = File::open(dir).map_err(CsiError::io("open", dir))?;
    let mut attr = FsxAttr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a struct fsxattr we own.
    unsafe { fs_ioc_fsgetxattr(f.as_raw_fd(), &mut attr) }
        .map_err(|e| CsiError::io("get project of", dir)(e.into()))?;
    attr.projid = projid;
    attr.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: FS_IOC_FSSETXATTR reads the struct fsxattr we pass.
    unsafe { fs_ioc_fssetxattr(f.as_raw_fd(), &attr) }
        .map_err(|e| CsiError::io("set project of", dir)(e.into()))?;
    set_limit(device, projid, bytes)
}

/// Sets project `projid`'s hard block limit on the filesystem on `device`.
pub fn set_limit(device: &Path, projid: u32, bytes: u64) -> Result<()> {
    let dev = c_path(device)?;
    let mut q = DqBlk {
        bhardlimit: limit_blocks(bytes),
        bsoftlimit: limit_blocks(bytes),
        valid: QIF_BLIMITS,
        ..Default::default()
    };
    // SAFETY: quotactl reads a struct if_dqblk we own; the device string is NUL-terminated.
    let rc = unsafe {
        libc::quotactl(
            qcmd(Q_SETQUOTA),
            dev.as_ptr(),
            projid as i32,
            (&mut q as *mut DqBlk).cast(),
        )
    };
    if rc != 0 {
        return Err(CsiError::io("set project quota on", device)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Bytes used by project `projid` on the filesystem on `device`.
pub fn used_bytes(device: &Path, projid: u32) -> Result<u64> {
    let dev = c_path(device)?;
    let mut q = DqBlk::default();
    // SAFETY: quotactl fills a struct if_dqblk we own; the device string is NUL-terminated.
    let rc = unsafe {
        libc::quotactl(
            qcmd(Q_GETQUOTA),
            dev.as_ptr(),
            projid as i32,
            (&mut q as *mut DqBlk).cast(),
        )
    };
    if rc != 0 {
        return Err(CsiError::io("read project quota on", device)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(q.curspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fs: &str, opts: &str) -> MountEntry {
        MountEntry {
            device: "8:1".into(),
            root: "/".into(),
            mount_point: "/pool".into(),
            options: vec!["rw".into()],
            fs_type: fs.into(),
            source: "/dev/sdb".into(),
            super_options: opts.split(',').map(str::to_string).collect(),
        }
    }

    #[test]
    fn detection_needs_the_mount_option_on_a_supporting_filesystem() {
        assert!(enabled(&entry("ext4", "rw,prjquota")));
        assert!(enabled(&entry("xfs", "rw,attr2,inode64,prjquota")));
        assert!(enabled(&entry("xfs", "rw,pquota")));
        assert!(!enabled(&entry("ext4", "rw,relatime")));
        assert!(!enabled(&entry("btrfs", "rw,prjquota")));
        assert!(!enabled(&entry("tmpfs", "rw")));
    }

    #[test]
    fn project_ids_are_stable_distinct_and_out_of_the_manual_range() {
        let a = project_id("pvc-1");
        assert_eq!(a, project_id("pvc-1"));
        assert_ne!(a, project_id("pvc-2"));
        for id in ["a", "pvc-0b0c", "h-0123456789"] {
            let p = project_id(id);
            assert!((1 << 20..1 << 31).contains(&p), "{p}");
        }
    }

    #[test]
    fn limits_round_up_to_whole_blocks() {
        assert_eq!(limit_blocks(0), 0);
        assert_eq!(limit_blocks(1), 1);
        assert_eq!(limit_blocks(1024), 1);
        assert_eq!(limit_blocks(1 << 30), 1 << 20);
    }

    #[test]
    fn this_kernel_refuses_project_quotas_with_an_error_not_a_panic() {
        // Without kernel quota support quotactl fails; the caller gets an error naming the device.
        let err = used_bytes(Path::new("/dev/does-not-exist"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("/dev/does-not-exist"), "{err}");
    }
}
