//! The pure decisions of the pass-through: which open flags reach the source, who owns a new
//! entry, which mount options a command line asks for, how a `stat` becomes a FUSE attribute.
//! Kept free of I/O so they are unit-tested in a table.

use std::time::{Duration, SystemTime};

use fuser::{FileAttr, FileType, INodeNo};

/// Errors in the command line's `-o` options.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error(
        "unknown mount option `{0}` (known: allow_other, allow_root, default_permissions, ro, rw, fsname=NAME)"
    )]
    Unknown(String),
}

/// What the command line's `-o` options ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Everybody may use the mount (`allow_other`), or root and the owner only (`allow_root`).
    pub allow_other: bool,
    pub allow_root: bool,
    pub read_only: bool,
    /// The kernel checks permissions against the mirrored mode bits. On by default: without it the
    /// daemon, running as root, would let every caller do anything.
    pub default_permissions: bool,
    pub fsname: Option<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: true,
            allow_root: false,
            read_only: false,
            default_permissions: true,
            fsname: None,
        }
    }
}

/// Parses `-o a,b,c` values (any number of `-o`, each comma-separated) into mount options.
/// `allow_other` and `default_permissions` are on unless the caller names `allow_root`.
pub fn parse_mount_options(values: &[String]) -> Result<MountOptions, OptionError> {
    let mut opts = MountOptions::default();
    for value in values {
        for opt in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match opt {
                "allow_other" => {
                    opts.allow_other = true;
                    opts.allow_root = false;
                }
                "allow_root" => {
                    opts.allow_root = true;
                    opts.allow_other = false;
                }
                "default_permissions" => opts.default_permissions = true,
                "ro" => opts.read_only = true,
                "rw" => opts.read_only = false,
                other => match other.strip_prefix("fsname=") {
                    Some(name) if !name.is_empty() => opts.fsname = Some(name.to_string()),
                    _ => return Err(OptionError::Unknown(other.to_string())),
                },
            }
        }
    }
    Ok(opts)
}

/// The flags an `open`/`create` from the kernel is replayed with on the source. Creation flags
/// are the kernel's business (it already decided), and `O_NOFOLLOW` must go because the file is
/// reached through the `/proc/self/fd/N` magic link.
pub fn source_open_flags(kernel_flags: i32) -> i32 {
    kernel_flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW)
}

/// The owner a new entry must get when the daemon creates it on the caller's behalf, or `None` when
/// the daemon's own identity is already right. Only root can give files away, so an unprivileged
/// daemon leaves ownership alone (the mount is then effectively single-user anyway). The group
/// follows BSD/`setgid` directory semantics, as the kernel would apply them for the caller.
pub fn new_owner(
    daemon_uid: u32,
    caller_uid: u32,
    caller_gid: u32,
    parent_mode: u32,
    parent_gid: u32,
) -> Option<(u32, u32)> {
    if daemon_uid != 0 {
        return None;
    }
    let gid = if parent_mode & libc::S_ISGID != 0 {
        parent_gid
    } else {
        caller_gid
    };
    if caller_uid == 0 && gid == 0 {
        return None;
    }
    Some((caller_uid, gid))
}

/// The file type bits of a `st_mode` as a FUSE file type.
pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0);
    if sec >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::new(0, nsec)
    }
}

/// A source `stat` as the FUSE attribute of mirror inode `ino`. The inode number users see is the
/// mirror's own (the kernel requires it to be the node id); everything else is the source's.
pub fn attr_from_stat(ino: u64, st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
        flags: 0,
    }
}

/// Whether an error that ends the FUSE session only says the kernel closed the connection:
/// ECONNABORTED, when a lazily detached mount is released while a serving thread waits. (fuser
/// itself ends the session cleanly on ENODEV, the usual unmount.) The mount is gone either way.
pub fn session_ended_by_kernel(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(libc::ECONNABORTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_from_the_command_line() {
        let ok =
            |s: &[&str]| parse_mount_options(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let default = MountOptions::default();
        let cases: Vec<(&[&str], Result<MountOptions, OptionError>)> = vec![
            (&[], Ok(default.clone())),
            (&["allow_other"], Ok(default.clone())),
            (
                &["allow_root"],
                Ok(MountOptions {
                    allow_other: false,
                    allow_root: true,
                    ..default.clone()
                }),
            ),
            (
                &["allow_other,ro", "fsname=pool"],
                Ok(MountOptions {
                    read_only: true,
                    fsname: Some("pool".into()),
                    ..default.clone()
                }),
            ),
            (&["ro,rw,,"], Ok(default.clone())),
            (
                &["hard_remove"],
                Err(OptionError::Unknown("hard_remove".into())),
            ),
            (&["fsname="], Err(OptionError::Unknown("fsname=".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(ok(input), want, "{input:?}");
        }
    }

    #[test]
    fn open_flags_lose_creation_and_nofollow() {
        let cases = [
            (libc::O_RDONLY, libc::O_RDONLY),
            (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, libc::O_RDWR),
            (
                libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW,
                libc::O_WRONLY | libc::O_APPEND,
            ),
            (
                libc::O_RDWR | libc::O_SYNC | libc::O_NOCTTY,
                libc::O_RDWR | libc::O_SYNC,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(source_open_flags(input), want, "{input:#o}");
        }
    }

    #[test]
    fn new_entries_belong_to_the_caller() {
        // (daemon uid, caller uid, caller gid, parent mode, parent gid) -> owner
        let cases = [
            ((0, 0, 0, 0o755, 0), None),
            ((0, 1000, 1000, 0o777, 0), Some((1000, 1000))),
            ((0, 1000, 1000, 0o2777, 50), Some((1000, 50))),
            ((0, 0, 0, 0o2775, 50), Some((0, 50))),
            ((1000, 2000, 2000, 0o777, 0), None),
        ];
        for ((d, u, g, pm, pg), want) in cases {
            assert_eq!(new_owner(d, u, g, pm, pg), want, "{:?}", (d, u, g, pm, pg));
        }
    }

    #[test]
    fn file_types_from_mode_bits() {
        let cases = [
            (libc::S_IFDIR | 0o755, FileType::Directory),
            (libc::S_IFREG | 0o644, FileType::RegularFile),
            (libc::S_IFLNK | 0o777, FileType::Symlink),
            (libc::S_IFIFO, FileType::NamedPipe),
            (libc::S_IFSOCK, FileType::Socket),
            (libc::S_IFCHR, FileType::CharDevice),
            (libc::S_IFBLK, FileType::BlockDevice),
        ];
        for (mode, want) in cases {
            assert_eq!(file_type(mode), want, "{mode:#o}");
        }
    }

    #[test]
    fn attributes_keep_the_sources_metadata_but_the_mirrors_inode() {
        // SAFETY: an all-zero `struct stat` is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_ino = 4242;
        st.st_mode = libc::S_IFREG | 0o4750;
        st.st_size = 12;
        st.st_nlink = 1;
        st.st_uid = 7;
        st.st_gid = 8;
        st.st_mtime = 10;
        st.st_mtime_nsec = 5;
        st.st_atime = -1;
        let attr = attr_from_stat(3, &st);
        assert_eq!(attr.ino, INodeNo(3));
        assert_eq!(attr.perm, 0o4750);
        assert_eq!((attr.uid, attr.gid, attr.size, attr.nlink), (7, 8, 12, 1));
        assert_eq!(attr.mtime, SystemTime::UNIX_EPOCH + Duration::new(10, 5));
        assert_eq!(attr.atime, SystemTime::UNIX_EPOCH - Duration::from_secs(1));
    }

    #[test]
    fn only_a_closed_connection_ends_the_session_cleanly() {
        use std::io::Error;
        for (err, clean) in [
            (Error::from_raw_os_error(libc::ECONNABORTED), true),
            (Error::from_raw_os_error(libc::EIO), false),
            (Error::from_raw_os_error(libc::EBADF), false),
            (Error::other("no errno"), false),
        ] {
            assert_eq!(session_ended_by_kernel(&err), clean, "{err}");
        }
    }
}
