//! The FUSE filesystem: mirrors a source directory operation by operation, except `link()`, which
//! always fails with EPERM — what Linux returns when "the filesystem containing oldpath and newpath
//! does not support the creation of hard links", as on an SMB share without UNIX extensions.
//!
//! Design (after libfuse's `passthrough_ll`): each mirror inode holds an `O_PATH` descriptor of its
//! source file, looked up by `(st_dev, st_ino)` so that one source file is one mirror inode. The
//! descriptor pins the source inode, so its number cannot be reused while the kernel remembers it;
//! `forget` drops it. Open files and directory listings live in handle tables.
//!
//! Extended attributes are passed through (the source's rules apply). POSIX and BSD locks are left
//! to the kernel, which handles them locally because the filesystem does not ask for
//! `FUSE_POSIX_LOCKS`: correct on one machine, which is all a test needs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, info};

use crate::decide::{attr_from_stat, new_owner, source_open_flags};
use crate::sys;

/// How long the kernel may cache attributes and names. Short, because tests also look at the
/// source directly and expect the mirror to catch up quickly.
const TTL: Duration = Duration::from_secs(1);

/// One mirrored source file.
struct Inode {
    fd: OwnedFd,
    key: (u64, u64),
    /// How many lookups the kernel holds; the inode is dropped when `forget` brings it to 0.
    nlookup: AtomicU64,
}

#[derive(Default)]
struct Inodes {
    by_ino: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
    next: u64,
}

/// The changes one `setattr` asks for.
struct SetAttr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    fh: Option<FileHandle>,
}

/// A directory listing taken at `opendir`, served by offset.
struct DirListing {
    entries: Vec<(u64, FileType, Vec<u8>)>,
}

pub struct NoLinkFs {
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<DirListing>>>,
    next_fh: AtomicU64,
    daemon_uid: u32,
    read_only: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another request never leaves these tables half-updated: recover the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn time_spec(t: Option<TimeOrNow>) -> sys::TimeSpec {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(t) => Some(t),
        TimeOrNow::Now => None,
    })
}

impl NoLinkFs {
    /// Mirrors `source`, which must be a directory.
    pub fn new(source: &Path, read_only: bool) -> io::Result<NoLinkFs> {
        let path = sys::cname(source.as_os_str())?;
        let fd = sys::openat(libc::AT_FDCWD, &path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let st = sys::stat_fd(fd.as_fd())?;
        let root = Arc::new(Inode {
            fd,
            key: (st.st_dev, st.st_ino),
            nlookup: AtomicU64::new(1),
        });
        let mut inodes = Inodes {
            next: 2,
            ..Inodes::default()
        };
        inodes.by_key.insert(root.key, INodeNo::ROOT.0);
        inodes.by_ino.insert(INodeNo::ROOT.0, root);
        Ok(NoLinkFs {
            inodes: Mutex::new(inodes),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            daemon_uid: sys::geteuid(),
            read_only,
        })
    }

    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, Errno> {
        lock(&self.inodes)
            .by_ino
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        lock(&self.files).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// Looks `name` up in `parent`, registering (or re-counting) its mirror inode.
    fn lookup_entry(&self, parent: &Inode, name: &OsStr) -> Result<FileAttr, Errno> {
        let cname = sys::cname(name).map_err(errno)?;
        let fd = sys::open_path(parent.fd.as_fd(), &cname).map_err(errno)?;
        let st = sys::stat_fd(fd.as_fd()).map_err(errno)?;
        let key = (st.st_dev, st.st_ino);
        let mut inodes = lock(&self.inodes);
        let ino = match inodes.by_key.get(&key).copied() {
            Some(ino) => {
                if let Some(inode) = inodes.by_ino.get(&ino) {
                    inode.nlookup.fetch_add(1, Ordering::Relaxed);
                }
                ino
            }
            None => {
                let ino = inodes.next;
                inodes.next += 1;
                inodes.by_key.insert(key, ino);
                inodes.by_ino.insert(
                    ino,
                    Arc::new(Inode {
                        fd,
                        key,
                        nlookup: AtomicU64::new(1),
                    }),
                );
                ino
            }
        };
        Ok(attr_from_stat(ino, &st))
    }

    fn attr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let inode = self.inode(ino)?;
        let st = sys::stat_fd(inode.fd.as_fd()).map_err(errno)?;
        Ok(attr_from_stat(ino.0, &st))
    }

    /// Gives a just-created entry to the caller, as the kernel would have had the caller create it.
    fn chown_new(&self, req: &Request, parent: &Inode, name: &OsStr) -> Result<(), Errno> {
        let pst = sys::stat_fd(parent.fd.as_fd()).map_err(errno)?;
        if let Some((uid, gid)) = new_owner(
            self.daemon_uid,
            req.uid(),
            req.gid(),
            pst.st_mode,
            pst.st_gid,
        ) {
            let cname = sys::cname(name).map_err(errno)?;
            sys::chown_at(parent.fd.as_fd(), &cname, Some(uid), Some(gid)).map_err(errno)?;
        }
        Ok(())
    }

    /// The common tail of mkdir/mknod/symlink: own it, look it up, reply.
    fn finish_new(&self, req: &Request, parent: &Inode, name: &OsStr, reply: ReplyEntry) {
        let result = self
            .chown_new(req, parent, name)
            .and_then(|()| self.lookup_entry(parent, name));
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn do_setattr(&self, ino: INodeNo, change: SetAttr) -> Result<FileAttr, Errno> {
        let SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
        } = change;
        self.writable()?;
        let inode = self.inode(ino)?;
        let fd = inode.fd.as_fd();
        let is_symlink = sys::stat_fd(fd).map_err(errno)?.st_mode & libc::S_IFMT == libc::S_IFLNK;
        let open_file = fh.and_then(|fh| self.file(fh).ok());
        if let Some(mode) = mode {
            if is_symlink {
                // Linux has no symlink permissions; chmod on one is EOPNOTSUPP everywhere.
                return Err(Errno::EOPNOTSUPP);
            }
            sys::chmod_fd(fd, mode & 0o7777).map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            sys::chown_at(fd, c"", uid, gid).map_err(errno)?;
        }
        if let Some(size) = size {
            match &open_file {
                Some(f) => f.set_len(size).map_err(errno)?,
                None => sys::truncate_fd(fd, size).map_err(errno)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            sys::utimens_fd(fd, is_symlink, time_spec(atime), time_spec(mtime)).map_err(errno)?;
        }
        let st = sys::stat_fd(fd).map_err(errno)?;
        Ok(attr_from_stat(ino.0, &st))
    }

    fn listing(&self, ino: INodeNo) -> Result<DirListing, Errno> {
        let inode = self.inode(ino)?;
        let path = sys::proc_path(inode.fd.as_fd());
        let mut entries = vec![
            (ino.0, FileType::Directory, b".".to_vec()),
            (1, FileType::Directory, b"..".to_vec()),
        ];
        for entry in std::fs::read_dir(path).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = match entry.file_type() {
                Ok(t) => {
                    use std::os::unix::fs::FileTypeExt;
                    if t.is_dir() {
                        FileType::Directory
                    } else if t.is_symlink() {
                        FileType::Symlink
                    } else if t.is_fifo() {
                        FileType::NamedPipe
                    } else if t.is_socket() {
                        FileType::Socket
                    } else if t.is_char_device() {
                        FileType::CharDevice
                    } else if t.is_block_device() {
                        FileType::BlockDevice
                    } else {
                        FileType::RegularFile
                    }
                }
                Err(e) => return Err(errno(e)),
            };
            // The source's inode number: readdir's d_ino is only a hint to userspace.
            entries.push((entry.ino(), kind, entry.file_name().as_bytes().to_vec()));
        }
        Ok(DirListing { entries })
    }
}

impl Filesystem for NoLinkFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.inode(parent).and_then(|p| self.lookup_entry(&p, name)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino == INodeNo::ROOT {
            return;
        }
        let mut inodes = lock(&self.inodes);
        let Some(inode) = inodes.by_ino.get(&ino.0).cloned() else {
            return;
        };
        // Counts only change under the table's lock, so load-then-store is not a race.
        let left = inode
            .nlookup
            .load(Ordering::Relaxed)
            .saturating_sub(nlookup);
        inode.nlookup.store(left, Ordering::Relaxed);
        if left == 0 {
            inodes.by_ino.remove(&ino.0);
            inodes.by_key.remove(&inode.key);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
        };
        match self.do_setattr(ino, change) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .inode(ino)
            .and_then(|i| sys::readlink_fd(i.fd.as_fd()).map_err(errno))
        {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let result = self
            .writable()
            .and_then(|()| self.inode(parent))
            .and_then(|p| {
                let cname = sys::cname(name).map_err(errno)?;
                sys::mknodat(p.fd.as_fd(), &cname, mode & !umask, u64::from(rdev))
                    .map_err(errno)?;
                Ok(p)
            });
        match result {
            Ok(p) => self.finish_new(req, &p, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self
            .writable()
            .and_then(|()| self.inode(parent))
            .and_then(|p| {
                let cname = sys::cname(name).map_err(errno)?;
                sys::mkdirat(p.fd.as_fd(), &cname, mode & !umask & 0o7777).map_err(errno)?;
                Ok(p)
            });
        match result {
            Ok(p) => self.finish_new(req, &p, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self
            .writable()
            .and_then(|()| self.inode(parent))
            .and_then(|p| {
                let cname = sys::cname(name).map_err(errno)?;
                sys::unlinkat(p.fd.as_fd(), &cname, 0).map_err(errno)
            });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self
            .writable()
            .and_then(|()| self.inode(parent))
            .and_then(|p| {
                let cname = sys::cname(name).map_err(errno)?;
                sys::unlinkat(p.fd.as_fd(), &cname, libc::AT_REMOVEDIR).map_err(errno)
            });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let result = self
            .writable()
            .and_then(|()| self.inode(parent))
            .and_then(|p| {
                let cname = sys::cname(link_name).map_err(errno)?;
                let ctarget = sys::cname(target.as_os_str()).map_err(errno)?;
                sys::symlinkat(&ctarget, p.fd.as_fd(), &cname).map_err(errno)?;
                Ok(p)
            });
        match result {
            Ok(p) => self.finish_new(req, &p, link_name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.writable().and_then(|()| {
            let old_dir = self.inode(parent)?;
            let new_dir = self.inode(newparent)?;
            let old = sys::cname(name).map_err(errno)?;
            let new = sys::cname(newname).map_err(errno)?;
            sys::renameat2(
                old_dir.fd.as_fd(),
                &old,
                new_dir.fd.as_fd(),
                &new,
                flags.bits(),
            )
            .map_err(errno)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// The one refusal: no hard links, ever, whatever the source supports.
    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        info!(ino = ino.0, newparent = newparent.0, newname = ?newname, "link() refused with EPERM");
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let wants_write =
            flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let result = (if wants_write { self.writable() } else { Ok(()) })
            .and_then(|()| self.inode(ino))
            .and_then(|i| sys::reopen(i.fd.as_fd(), source_open_flags(flags.0)).map_err(errno));
        match result {
            Ok(fd) => {
                let fh = self.new_fh();
                lock(&self.files).insert(fh, Arc::new(File::from(fd)));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.file(fh).and_then(|f| {
            let mut buf = vec![0u8; size as usize];
            let mut done = 0;
            // Short reads only at end of file: the kernel fills the rest with zeroes otherwise.
            while done < buf.len() {
                match f.read_at(&mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(done);
            Ok(buf)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self
            .file(fh)
            .and_then(|f| f.write_all_at(data, offset).map_err(errno));
        match result {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes go straight to the source; there is nothing buffered to flush here.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.files).remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.file(fh).and_then(|f| {
            if datasync {
                f.sync_data().map_err(errno)
            } else {
                f.sync_all().map_err(errno)
            }
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.listing(ino) {
            Ok(listing) => {
                let fh = self.new_fh();
                lock(&self.dirs).insert(fh, Arc::new(listing));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(listing) = lock(&self.dirs).get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return;
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in listing.entries.iter().enumerate().skip(start) {
            // The offset handed back is where the next call resumes.
            if reply.add(
                INodeNo(*ino),
                (i + 1) as u64,
                *kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.inode(ino).and_then(|i| {
            let dir =
                sys::reopen(i.fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).map_err(errno)?;
            File::from(dir).sync_all().map_err(errno)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let result = self
            .inode(ino)
            .or_else(|_| self.inode(INodeNo::ROOT))
            .and_then(|i| sys::statvfs_fd(i.fd.as_fd()).map_err(errno));
        match result {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                u32::try_from(st.f_bsize).unwrap_or(4096),
                u32::try_from(st.f_namemax).unwrap_or(255),
                u32::try_from(st.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let result = self
            .writable()
            .and_then(|()| self.inode(ino))
            .and_then(|i| {
                let cname = sys::cname(name).map_err(errno)?;
                sys::setxattr_fd(i.fd.as_fd(), &cname, value, flags).map_err(errno)
            });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let result = self.inode(ino).and_then(|i| {
            let cname = sys::cname(name).map_err(errno)?;
            sys::getxattr_fd(i.fd.as_fd(), &cname, size as usize).map_err(errno)
        });
        reply_xattr(result, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let result = self
            .inode(ino)
            .and_then(|i| sys::listxattr_fd(i.fd.as_fd(), size as usize).map_err(errno));
        reply_xattr(result, size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self
            .writable()
            .and_then(|()| self.inode(ino))
            .and_then(|i| {
                let cname = sys::cname(name).map_err(errno)?;
                sys::removexattr_fd(i.fd.as_fd(), &cname).map_err(errno)
            });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Plain files answer no ioctls (isatty() probes land here); ENOTTY is what they say.
        reply.error(Errno::ENOTTY);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self
            .writable()
            .and_then(|()| self.inode(parent))
            .and_then(|p| {
                let cname = sys::cname(name).map_err(errno)?;
                let fd = sys::openat(
                    p.fd.as_raw_fd(),
                    &cname,
                    source_open_flags(flags)
                        | libc::O_CREAT
                        | (flags & libc::O_EXCL)
                        | libc::O_NOFOLLOW,
                    mode & !umask & 0o7777,
                )
                .map_err(errno)?;
                self.chown_new(req, &p, name)?;
                let attr = self.lookup_entry(&p, name)?;
                Ok((fd, attr))
            });
        match result {
            Ok((fd, attr)) => {
                let fh = self.new_fh();
                lock(&self.files).insert(fh, Arc::new(File::from(fd)));
                debug!(ino = attr.ino.0, name = ?name, "created");
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(e),
        }
    }
}

fn reply_xattr(result: Result<Vec<u8>, Errno>, size: u32, reply: ReplyXattr) {
    match result {
        Ok(data) if size == 0 => reply.size(u32::try_from(data.len()).unwrap_or(u32::MAX)),
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(e),
    }
}
