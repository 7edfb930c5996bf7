//! Thin, safe wrappers around the `*at` system calls the pass-through uses.
//!
//! Every inode of the mirror holds an `O_PATH` descriptor of the source file, and every operation
//! goes through that descriptor (or `/proc/self/fd/N` where the kernel offers no `*at` form), so a
//! rename in the source never leaves the filesystem holding a stale path.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::SystemTime;

/// Turns a `-1` return into the thread's `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A name from the kernel as a C string; a name with a NUL byte cannot exist, so it is EINVAL.
pub fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

const EMPTY: &CStr = c"";

/// `/proc/self/fd/N`: reaches the file an `O_PATH` descriptor names, for calls without an `*at` form.
pub fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn proc_cpath(fd: BorrowedFd<'_>) -> CString {
    // A decimal number never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

pub fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string; the returned descriptor is owned by nobody else.
    let fd = check(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: `fd` was just opened and is not shared.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `O_PATH` descriptor of `name` in `dir`, not following a final symlink.
pub fn open_path(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat(dir.as_raw_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)
}

/// Opens the file an `O_PATH` descriptor names, with real access flags.
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    openat(libc::AT_FDCWD, &proc_cpath(fd), flags, 0)
}

pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is large enough for a `struct stat`; the empty path with AT_EMPTY_PATH names `fd`.
    check(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled the struct.
    Ok(unsafe { st.assume_init() })
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: valid descriptors and C strings.
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for its length; the empty path names the symlink `fd` itself.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// chown of the entry `name` in `dir` (or of `dir` itself when `name` is empty), never following a
/// symlink. `None` leaves that id unchanged.
pub fn chown_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: Option<u32>,
    gid: Option<u32>,
) -> io::Result<()> {
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // u32::MAX is (uid_t)-1: "leave unchanged".
    let uid = uid.unwrap_or(u32::MAX);
    let gid = gid.unwrap_or(u32::MAX);
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) }).map(drop)
}

pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let path = proc_cpath(fd);
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
}

pub fn truncate_fd(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let size =
        libc::off_t::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let path = proc_cpath(fd);
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(path.as_ptr(), size) }).map(drop)
}

/// A timestamp for `utimensat`: `None` leaves it alone, `Some(None)` is "now".
pub type TimeSpec = Option<Option<SystemTime>>;

fn timespec(t: TimeSpec) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(None) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(Some(t)) => {
            let (sec, nsec) = split_time(t);
            libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            }
        }
    }
}

/// Seconds and nanoseconds of a time relative to the epoch (negative seconds before it).
pub fn split_time(t: SystemTime) -> (i64, i64) {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
        Err(e) => {
            let d = e.duration();
            let nanos = i64::from(d.subsec_nanos());
            if nanos == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - nanos)
            }
        }
    }
}

/// Sets access and modification times. A symlink is changed itself (`AT_EMPTY_PATH` on the
/// `O_PATH` descriptor), anything else through `/proc/self/fd/N`.
pub fn utimens_fd(
    fd: BorrowedFd<'_>,
    is_symlink: bool,
    atime: TimeSpec,
    mtime: TimeSpec,
) -> io::Result<()> {
    let times = [timespec(atime), timespec(mtime)];
    let ret = if is_symlink {
        // SAFETY: valid descriptor, C string and a two-element array.
        unsafe {
            libc::utimensat(
                fd.as_raw_fd(),
                EMPTY.as_ptr(),
                times.as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        }
    } else {
        let path = proc_cpath(fd);
        // SAFETY: valid C string and a two-element array.
        unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) }
    };
    check(ret).map(drop)
}

pub fn statvfs_fd(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `st` is large enough; fstatvfs works on O_PATH descriptors since Linux 3.12.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded.
    Ok(unsafe { st.assume_init() })
}

pub fn setxattr_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let path = proc_cpath(fd);
    // SAFETY: valid C strings and a readable buffer of the given length.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// getxattr; with `size == 0` only the value's length is asked for.
pub fn getxattr_fd(fd: BorrowedFd<'_>, name: &CStr, size: usize) -> io::Result<Vec<u8>> {
    let path = proc_cpath(fd);
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings and a writable buffer of `size` bytes (NULL-equivalent when 0).
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if size == 0 {
        return Ok(vec![0u8; n as usize]);
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// listxattr; with `size == 0` only the list's length is asked for.
pub fn listxattr_fd(fd: BorrowedFd<'_>, size: usize) -> io::Result<Vec<u8>> {
    let path = proc_cpath(fd);
    let mut buf = vec![0u8; size];
    // SAFETY: valid C string and a writable buffer of `size` bytes.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if size == 0 {
        return Ok(vec![0u8; n as usize]);
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn removexattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let path = proc_cpath(fd);
    // SAFETY: valid C strings.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// Sets the process umask and returns the old one. The pass-through applies the caller's umask
/// itself, so its own must be 0 or it would mask twice.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn split_time_handles_both_sides_of_the_epoch() {
        let cases = [
            (SystemTime::UNIX_EPOCH, (0, 0)),
            (SystemTime::UNIX_EPOCH + Duration::new(5, 7), (5, 7)),
            (SystemTime::UNIX_EPOCH - Duration::new(2, 0), (-2, 0)),
            (
                SystemTime::UNIX_EPOCH - Duration::new(1, 500_000_000),
                (-2, 500_000_000),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(split_time(t), want, "{t:?}");
        }
    }
}
