//! Finding and removing mounts under the harness's directories, so `down` leaves nothing mounted even
//! when a test or plugin died half-way (a plugin's pool, a loop device, a bind mount of a volume).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

/// Errors while reading the mount table.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
}

/// Undoes the octal escapes the kernel uses in mountinfo paths (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points in `mountinfo` text that lie under `root` (or are `root`), deepest first, so
/// nested mounts come off before their parents.
pub fn mounts_under(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape(f)))
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Lazily unmounts everything under `root`; returns what was unmounted. A mount that cannot be
/// removed is logged and left (the caller reports it).
pub fn unmount_all_under(root: &Path) -> Result<Vec<PathBuf>, MountError> {
    let mut done = Vec::new();
    // Stacked mounts on one point need one umount each: repeat until nothing is left (bounded).
    for _ in 0..16 {
        let info =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
        let targets = mounts_under(&info, root);
        if targets.is_empty() {
            break;
        }
        let mut progressed = false;
        for t in targets {
            match umount2(&t, MntFlags::MNT_DETACH) {
                Ok(()) => {
                    progressed = true;
                    done.push(t);
                }
                Err(e) => tracing::warn!(path = %t.display(), error = %e, "cannot unmount"),
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
30 22 7:0 / /st/pools/local/node-1 rw - btrfs /dev/loop0 rw
31 30 7:0 /vol /st/pools/local/node-1/mnt/pvc-1 rw - btrfs /dev/loop0 rw
32 22 0:40 / /st/with\\040space rw - tmpfs tmpfs rw
33 22 0:41 / /stx/other rw - tmpfs tmpfs rw
";

    #[test]
    fn finds_mounts_under_the_root_deepest_first_and_unescaped() {
        let got = mounts_under(INFO, Path::new("/st"));
        assert_eq!(
            got,
            [
                PathBuf::from("/st/pools/local/node-1/mnt/pvc-1"),
                PathBuf::from("/st/pools/local/node-1"),
                PathBuf::from("/st/with space"),
            ]
        );
    }

    #[test]
    fn a_sibling_with_a_common_prefix_is_not_under_the_root() {
        assert!(
            !mounts_under(INFO, Path::new("/st"))
                .iter()
                .any(|p| p.starts_with("/stx"))
        );
    }

    #[test]
    fn unmounts_a_real_tmpfs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m");
        std::fs::create_dir(&target).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let done = unmount_all_under(dir.path()).unwrap();
        assert_eq!(done, std::slice::from_ref(&target));
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(mounts_under(&info, dir.path()).is_empty());
    }
}
