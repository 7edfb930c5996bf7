//! Mounts the real nolinkfs binary on a temp dir (needs root and /dev/fuse) and checks it behaves
//! like SMB without UNIX extensions: `link()` fails, and everything a database or a CSI driver's
//! capability probe relies on otherwise works and lands in the source directory.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why this machine cannot run the mount tests, if it cannot.
fn cannot_mount() -> Option<&'static str> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (mount(2) on /dev/fuse)");
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse on this machine");
    }
    None
}

fn is_mounted(mountpoint: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mountpoint.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

/// A running nolinkfs. Dropping it unmounts (`fusermount3 -u`, lazily if that fails) and kills
/// the daemon, so a failing assertion never leaves a mount behind.
struct Mounted {
    child: Option<Child>,
    source: PathBuf,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    fn start() -> Mounted {
        let dir = tempfile::Builder::new()
            .prefix("nolinkfs-test-")
            .tempdir()
            .expect("temp dir");
        // Other users must reach the mount for the allow_other test.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let source = dir.path().join("source");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&source).expect("mkdir source");
        fs::create_dir(&mnt).expect("mkdir mnt");
        fs::set_permissions(&source, fs::Permissions::from_mode(0o755)).expect("chmod");
        let child = Command::new(env!("CARGO_BIN_EXE_nolinkfs"))
            .arg(&source)
            .arg(&mnt)
            .args(["-o", "allow_other"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nolinkfs");
        let mut m = Mounted {
            child: Some(child),
            source,
            mnt,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&m.mnt) {
            if let Some(Ok(Some(status))) = m.child.as_mut().map(|c| c.try_wait()) {
                panic!("nolinkfs exited before mounting: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "nolinkfs did not mount within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Waits for the daemon to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("child");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "nolinkfs did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

macro_rules! skip_unless_mountable {
    () => {
        if let Some(why) = cannot_mount() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn raw_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn hard_links_fail_and_everything_else_works() {
    skip_unless_mountable!();
    let m = Mounted::start();
    let (mnt, src) = (&m.mnt, &m.source);

    // create, write, fsync, read back; the data is in the source.
    let file = mnt.join("data");
    {
        let mut f = File::create(&file).expect("create");
        f.write_all(b"hello, world").expect("write");
        f.sync_all().expect("fsync");
        f.sync_data().expect("fdatasync");
    }
    assert_eq!(fs::read(&file).expect("read"), b"hello, world");
    assert_eq!(
        fs::read(src.join("data")).expect("read source"),
        b"hello, world"
    );

    // The one refusal: EPERM, and nothing appears in the source.
    let err = fs::hard_link(&file, mnt.join("data.link")).expect_err("hard link must fail");
    assert_eq!(raw_errno(&err), libc::EPERM, "link() error: {err}");
    assert!(
        !src.join("data.link").exists(),
        "a refused link left an entry"
    );
    assert!(!mnt.join("data.link").exists());

    // symlink + readlink.
    std::os::unix::fs::symlink("data", mnt.join("sym")).expect("symlink");
    assert_eq!(
        fs::read_link(mnt.join("sym")).expect("readlink"),
        Path::new("data")
    );
    assert_eq!(
        fs::read_link(src.join("sym")).expect("readlink source"),
        Path::new("data")
    );
    assert_eq!(
        fs::read(mnt.join("sym")).expect("read through symlink"),
        b"hello, world"
    );

    // Atomic replace: write a temp file, fsync, rename over the target.
    {
        let mut t = File::create(mnt.join("data.tmp")).expect("create tmp");
        t.write_all(b"replaced").expect("write tmp");
        t.sync_all().expect("fsync tmp");
    }
    fs::rename(mnt.join("data.tmp"), &file).expect("rename over");
    assert_eq!(fs::read(&file).expect("read"), b"replaced");
    assert!(!mnt.join("data.tmp").exists());
    assert_eq!(
        fs::read(src.join("data")).expect("read source"),
        b"replaced"
    );

    // chown and chmod reach the source.
    std::os::unix::fs::chown(&file, Some(1234), Some(5678)).expect("chown");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");
    for path in [&file, &src.join("data")] {
        let md = fs::metadata(path).expect("stat");
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1234, 5678, 0o640),
            "{path:?}"
        );
    }
    std::os::unix::fs::lchown(mnt.join("sym"), Some(42), Some(43)).expect("lchown symlink");
    assert_eq!(
        fs::symlink_metadata(src.join("sym")).expect("lstat").uid(),
        42
    );

    // truncate, seek and partial write through an open file.
    {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .expect("open rw");
        f.set_len(3).expect("truncate");
        f.seek(SeekFrom::Start(3)).expect("seek");
        f.write_all(b"!").expect("write");
        let mut s = String::new();
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.read_to_string(&mut s).expect("read");
        assert_eq!(s, "rep!");
    }

    // POSIX record lock (the kernel handles it for the mount).
    {
        let f = OpenOptions::new().write(true).open(&file).expect("open");
        let mut lock = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: a valid descriptor and a valid `struct flock`.
        let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &mut lock) };
        assert_eq!(rc, 0, "F_SETLK: {}", std::io::Error::last_os_error());
    }

    // mkdir, readdir, O_EXCL, unlink, rmdir.
    fs::create_dir(mnt.join("dir")).expect("mkdir");
    File::create(mnt.join("dir/inner")).expect("create inner");
    let err = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(mnt.join("dir/inner"))
        .expect_err("O_EXCL on an existing file");
    assert_eq!(raw_errno(&err), libc::EEXIST);
    let mut names: Vec<String> = fs::read_dir(mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["data", "dir", "sym"]);
    let err = fs::remove_dir(mnt.join("dir")).expect_err("rmdir of a non-empty dir");
    assert_eq!(raw_errno(&err), libc::ENOTEMPTY);
    fs::remove_file(mnt.join("dir/inner")).expect("unlink");
    fs::remove_dir(mnt.join("dir")).expect("rmdir");
    assert!(!src.join("dir").exists());

    // Directory fsync (what a careful atomic write does after the rename).
    File::open(mnt)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");

    // statfs reports the source's filesystem.
    let mut mnt_st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    let mut src_st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    let cpath = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: valid C strings and buffers.
    unsafe {
        assert_eq!(libc::statvfs(cpath(mnt).as_ptr(), mnt_st.as_mut_ptr()), 0);
        assert_eq!(libc::statvfs(cpath(src).as_ptr(), src_st.as_mut_ptr()), 0);
    }
    // SAFETY: both calls succeeded.
    let (a, b) = unsafe { (mnt_st.assume_init(), src_st.assume_init()) };
    assert_eq!((a.f_blocks, a.f_bsize), (b.f_blocks, b.f_bsize));

    // Extended attributes pass through: the mount agrees with the source about support.
    let name = std::ffi::CString::new("user.berth").expect("name");
    let set = |p: &Path| {
        // SAFETY: valid C strings and a 2-byte buffer.
        unsafe {
            libc::setxattr(
                cpath(p).as_ptr(),
                name.as_ptr(),
                b"ok".as_ptr().cast(),
                2,
                0,
            )
        }
    };
    let direct = File::create(src.join("x")).map(|_| set(&src.join("x")));
    let through = set(&mnt.join("x"));
    assert_eq!(
        direct.expect("create x"),
        through,
        "xattr support differs from the source"
    );
    if through == 0 {
        let mut buf = [0u8; 8];
        // SAFETY: valid C strings and an 8-byte buffer.
        let n = unsafe {
            libc::getxattr(
                cpath(mnt.join("x").as_path()).as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                8,
            )
        };
        assert_eq!(&buf[..n as usize], b"ok");
    }
}

#[test]
fn other_users_get_in_and_own_what_they_create() {
    skip_unless_mountable!();
    let m = Mounted::start();
    fs::create_dir(m.mnt.join("open")).expect("mkdir");
    fs::set_permissions(m.mnt.join("open"), fs::Permissions::from_mode(0o777)).expect("chmod");
    fs::create_dir(m.mnt.join("closed")).expect("mkdir");

    let as_nobody = |script: &str| {
        Command::new("sh")
            .args(["-c", script])
            .uid(65534)
            .gid(65534) // as root, std also clears the supplementary groups
            .status()
            .expect("run sh as nobody")
    };
    let open = m.mnt.join("open/f");
    let closed = m.mnt.join("closed/f");
    assert!(
        as_nobody(&format!("echo hi > '{}'", open.display())).success(),
        "allow_other: nobody could not write into a 0777 directory"
    );
    let md = fs::metadata(m.source.join("open/f")).expect("stat source");
    assert_eq!(
        (md.uid(), md.gid()),
        (65534, 65534),
        "the new file must belong to its creator"
    );

    // default_permissions: the mode bits are enforced for other users.
    assert!(
        !as_nobody(&format!("(echo hi > '{}') 2>/dev/null", closed.display())).success(),
        "nobody wrote into root's 0755 directory"
    );
    assert!(!m.source.join("closed/f").exists());
}

#[test]
fn sigterm_unmounts() {
    skip_unless_mountable!();
    let mut m = Mounted::start();
    fs::write(m.mnt.join("f"), b"x").expect("write");
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGTERM) }, 0);
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "nolinkfs exit status on SIGTERM: {status}"
    );
    assert!(!is_mounted(&m.mnt), "still mounted after SIGTERM");
    assert_eq!(
        fs::read(m.source.join("f")).expect("source keeps the data"),
        b"x"
    );
}

#[test]
fn sigterm_on_a_busy_mount_detaches_it_and_exits_when_released() {
    skip_unless_mountable!();
    let mut m = Mounted::start();
    let mut busy = File::create(m.mnt.join("open")).expect("create");
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(&m.mnt) {
        assert!(
            Instant::now() < deadline,
            "a busy mount was not detached on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Detached, not gone: the open file still works until it is closed.
    busy.write_all(b"still here")
        .expect("write to the detached mount");
    busy.sync_all().expect("fsync on the detached mount");
    drop(busy);
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "nolinkfs exit status: {status}");
    assert_eq!(
        fs::read(m.source.join("open")).expect("source"),
        b"still here"
    );
}

#[test]
fn refuses_unknown_options_and_missing_source() {
    // Neither case reaches mount(2), so this runs without root too.
    let bin = env!("CARGO_BIN_EXE_nolinkfs");
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin)
        .arg(dir.path())
        .arg(dir.path())
        .args(["-o", "bogus"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mount option `bogus`"));
    let out = Command::new(bin)
        .arg(dir.path().join("missing"))
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    assert!(!is_mounted(dir.path()));
}
