//! Test support: run the real `berth-csi` binary on a Unix socket, talk to it with the generated
//! gRPC clients, and build real filesystems (btrfs on a loop-mounted image) that are torn down —
//! mounts unmounted, loop devices detached, processes killed — even when a test fails.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_csi::proto::controller_client::ControllerClient;
use berth_csi::proto::identity_client::IdentityClient;
use berth_csi::proto::node_client::NodeClient;
use berth_csi::proto::volume_capability::access_mode::Mode;
use berth_csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use berth_csi::proto::*;
use tonic::transport::Channel;

/// A scratch directory whose mounts and loop devices are cleaned up on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "berth-test-{tag}-{}-{:08x}",
            std::process::id(),
            rand_u32()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// A btrfs filesystem of `size` (sparse image, loop-mounted) with quotas on, mounted at `rel`.
    pub fn btrfs(&self, rel: &str, size: &str) -> PathBuf {
        let img = self.path(&format!("{rel}.img"));
        let mnt = self.path(rel);
        std::fs::create_dir_all(&mnt).unwrap();
        run("truncate", &["-s", size, img.to_str().unwrap()]);
        run("mkfs.btrfs", &["-q", img.to_str().unwrap()]);
        run(
            "mount",
            &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()],
        );
        run("btrfs", &["quota", "enable", mnt.to_str().unwrap()]);
        mnt
    }

    /// An ext4 filesystem (no quota support in this kernel) mounted at `rel`.
    pub fn ext4(&self, rel: &str, size: &str) -> PathBuf {
        let img = self.path(&format!("{rel}.img"));
        let mnt = self.path(rel);
        std::fs::create_dir_all(&mnt).unwrap();
        run("truncate", &["-s", size, img.to_str().unwrap()]);
        run("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
        run(
            "mount",
            &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()],
        );
        mnt
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        cleanup_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unmounts everything under `dir` (deepest first) and detaches loop devices backed by files in it.
pub fn cleanup_under(dir: &Path) {
    // Loop devices first, while their backing paths still resolve under `dir`: once a lazy unmount has
    // detached the filesystem holding an image, its loop device no longer names a path under `dir`.
    // On a device still mounted, detaching only marks it to clear itself when the mount goes.
    for dev in loops_under(dir) {
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
    }
    for _ in 0..3 {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = berth_csi::mount::parse_mountinfo(&table)
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|m| m.starts_with(dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in &mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if mounts.is_empty() {
            break;
        }
    }
    for dev in loops_under(dir) {
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
    }
}

/// Loop devices whose backing file is under `dir`.
pub fn loops_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file"))
            && Path::new(b.trim_end()).starts_with(dir)
        {
            out.push(format!("/dev/{name}"));
        }
    }
    out
}

/// Mount points under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    berth_csi::mount::parse_mountinfo(&table)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(dir))
        .collect()
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish() as u32
}

/// A running `berth-csi` process; killed on drop.
pub struct Plugin {
    child: Option<Child>,
    pub socket: PathBuf,
    args: Vec<String>,
    pub log: PathBuf,
}

impl Plugin {
    /// Starts `berth-csi ARGS --endpoint unix://<socket>` with extra environment.
    pub fn start(socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Plugin {
        let mut p = Plugin {
            child: None,
            socket: socket.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            log: socket.with_extension("log"),
        };
        p.spawn(env);
        p
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth-csi"))
            .args(&self.args)
            .arg("--endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }

            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("berth-csi exited at start ({status}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("berth-csi did not create its socket: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Restarts the plugin (after a crash) with a new environment.
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.kill();
        self.spawn(env);
    }

    /// Waits for the process to exit by itself (e.g. at a failpoint) and returns whether it was
    /// killed by a signal.
    pub fn wait_killed(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let child = self.child.as_mut().expect("running");
        for _ in 0..400 {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.signal() == Some(9);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("berth-csi did not die at the failpoint");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by PID.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        let status = self.child.as_mut().expect("running").wait().unwrap();
        self.child = None;
        status
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn clients(&self) -> Clients {
        let ch = berth_csi::client::connect(&self.socket, Duration::from_secs(60))
            .await
            .unwrap();
        Clients::new(ch)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone)]
pub struct Clients {
    pub id: IdentityClient<Channel>,
    pub ctl: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl Clients {
    fn new(ch: Channel) -> Clients {
        Clients {
            id: IdentityClient::new(ch.clone()),
            ctl: ControllerClient::new(ch.clone()),
            node: NodeClient::new(ch),
        }
    }
}

pub fn mount_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

pub fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

pub fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn create_req(
    name: &str,
    bytes: i64,
    params: HashMap<String, String>,
    cap: VolumeCapability,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        parameters: params,
        ..Default::default()
    }
}

pub fn stage_req(id: &str, staging: &Path, cap: VolumeCapability) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: staging.to_string_lossy().into(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

pub fn publish_req(
    id: &str,
    staging: &Path,
    target: &Path,
    cap: VolumeCapability,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: staging.to_string_lossy().into(),
        target_path: target.to_string_lossy().into(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

/// Writes `bytes` of data to `path`; returns the error that stopped it, if any.
pub fn write_bytes(path: &Path, bytes: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0xabu8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.sync_all()
}
