//! Mounting with system calls (no `mount` binary): bind mounts for directories and block devices,
//! filesystem mounts for loop volumes, read-only remounts, and the mount table read from
//! `/proc/self/mountinfo` to make every mount and unmount idempotent.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{CsiError, Result};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem's device.
    pub device: String,
    /// The directory within the filesystem that is mounted here (differs for bind mounts).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`ro`/`rw`, `nosuid`...).
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
    /// Filesystem-wide options (`prjquota`, `subvol=`...).
    pub super_options: Vec<String>,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// Decodes the octal escapes (`\040` for space...) mountinfo uses in paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a mountinfo file.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            if f.len() < 6 || p.len() < 2 {
                return None;
            }
            Some(MountEntry {
                device: f[2].to_string(),
                root: PathBuf::from(unescape(f[3])),
                mount_point: PathBuf::from(unescape(f[4])),
                options: f[5].split(',').map(str::to_string).collect(),
                fs_type: p[0].to_string(),
                source: unescape(p[1]),
                super_options: p
                    .get(2)
                    .map(|o| o.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The current mount table of this process's mount namespace.
pub fn mount_table() -> Result<Vec<MountEntry>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(CsiError::io("read", path))?;
    Ok(parse_mountinfo(&text))
}

/// The topmost mount at exactly `path`, if any.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    Ok(mount_table()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path))
}

/// Mount flags a CO may pass in `mount_flags`, as kernel flags; anything else is filesystem data.
pub fn split_mount_flags(flags: &[String]) -> (MsFlags, Vec<String>) {
    let mut ms = MsFlags::empty();
    let mut data = Vec::new();
    for flag in flags {
        match flag.as_str() {
            "ro" => ms |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => ms |= MsFlags::MS_NOSUID,
            "nodev" => ms |= MsFlags::MS_NODEV,
            "noexec" => ms |= MsFlags::MS_NOEXEC,
            "noatime" => ms |= MsFlags::MS_NOATIME,
            "nodiratime" => ms |= MsFlags::MS_NODIRATIME,
            "relatime" => ms |= MsFlags::MS_RELATIME,
            "strictatime" => ms |= MsFlags::MS_STRICTATIME,
            "sync" => ms |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => ms |= MsFlags::MS_DIRSYNC,
            other => data.push(other.to_string()),
        }
    }
    (ms, data)
}

/// Bind-mounts `source` on `target`, then applies `flags` (read-only, nosuid...) with a remount,
/// which is the only way the kernel applies them to a bind mount.
pub fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| CsiError::io("bind-mount onto", target)(e.into()))?;
    if !flags.is_empty()
        && let Err(e) = nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            None::<&str>,
        )
    {
        let _ = unmount(target);
        return Err(CsiError::io("remount with flags", target)(e.into()));
    }
    Ok(())
}

/// Mounts the filesystem on `device` at `target`.
pub fn mount_fs(
    device: &Path,
    target: &Path,
    fs_type: &str,
    flags: MsFlags,
    data: &[String],
) -> Result<()> {
    let data = data.join(",");
    nix::mount::mount(
        Some(device),
        target,
        Some(fs_type),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| CsiError::io("mount", target)(e.into()))
}

/// Unmounts every mount stacked at `target`; not being mounted is success.
pub fn unmount(target: &Path) -> Result<()> {
    for _ in 0..16 {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(CsiError::io("unmount", target)(e.into())),
        }
    }
    Err(CsiError::FailedPrecondition(format!(
        "{} still has mounts after 16 unmounts",
        target.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 22 0:31 /pool/volumes/v1/data /var/lib/kubelet/pods/a\\040b/mount rw,nosuid shared:2 - btrfs /dev/loop3 rw,space_cache
36 22 7:3 / /staging ro,relatime - ext4 /dev/loop3 ro
";

    #[test]
    fn parses_mountinfo_with_escapes_and_optional_fields() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1].mount_point,
            PathBuf::from("/var/lib/kubelet/pods/a b/mount")
        );
        assert_eq!(m[1].root, PathBuf::from("/pool/volumes/v1/data"));
        assert_eq!(m[1].device, "0:31");
        assert_eq!(m[1].fs_type, "btrfs");
        assert!(!m[1].read_only());
        assert!(m[2].read_only());
        assert_eq!(m[2].source, "/dev/loop3");
    }

    #[test]
    fn mount_flags_split_into_kernel_flags_and_data() {
        let (ms, data) = split_mount_flags(&[
            "ro".into(),
            "noatime".into(),
            "discard".into(),
            "nosuid".into(),
        ]);
        assert!(ms.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOATIME | MsFlags::MS_NOSUID));
        assert_eq!(data, vec!["discard".to_string()]);
    }

    #[test]
    fn unescape_leaves_plain_text_alone() {
        assert_eq!(unescape("/a/b"), "/a/b");
        assert_eq!(unescape("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape("/trailing\\"), "/trailing\\");
    }
}
