//! Real components for the node agent's tests: a private containerd (own root, state and socket under a
//! temp dir), a `docker-registry` on 127.0.0.1, and small OCI images built locally with umoci from the
//! static busybox and imported with `ctr`. Nothing comes from the internet. Every process started here is
//! killed by PID when its handle drops (the stage script also kills leftovers by the PID files written
//! under `$BERTH_NA_TMP`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the real-component tests cannot run here, or `None` when they can.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (containerd mounts overlay filesystems)".into());
    }
    for tool in [
        "containerd",
        "ctr",
        "runc",
        "docker-registry",
        "umoci",
        "skopeo",
    ] {
        if which(tool).is_none() {
            return Some(format!(
                "`{tool}` is not installed: run scripts/test.d/30-node-agent.sh, which installs it"
            ));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox (busybox-static) is not installed".into());
    }
    None
}

/// Skips the calling test, saying why, when the real components are not available.
#[macro_export]
macro_rules! require_real_components {
    () => {
        if let Some(why) = support::skip_reason() {
            if std::env::var_os("BERTH_REQUIRE_REAL").is_some() {
                panic!("real-component test cannot run: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

/// A scratch directory for one test, under `$BERTH_NA_TMP` when the stage script sets it.
pub fn scratch(name: &str) -> tempfile::TempDir {
    let base = std::env::var_os("BERTH_NA_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("scratch base");
    tempfile::Builder::new()
        .prefix(&format!("na-{name}-"))
        .tempdir_in(base)
        .expect("scratch dir")
}

/// A free TCP port on 127.0.0.1 in an unusual range.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let port = 38000 + (rand_u16() % 2000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 38000-39999");
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    ((t ^ std::process::id().wrapping_mul(2_654_435_761)) % 65_521) as u16
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_pid(dir: &Path, name: &str, pid: u32) {
    std::fs::write(dir.join(format!("{name}.pid")), pid.to_string()).expect("pid file");
}

fn kill(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
}

/// A private containerd.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The registry `config_path` (`None`: started without one).
    pub certs_d: Option<PathBuf>,
    pub sandbox_image: String,
    child: Child,
}

impl Containerd {
    /// Starts containerd under `dir` with `config_path = <dir>/certs.d` (or without, when `config_path`
    /// is false), its sandbox image set to `sandbox_image`.
    pub fn start(dir: &Path, config_path: bool, sandbox_image: &str) -> Self {
        let socket = dir.join("containerd.sock");
        let certs_d = config_path.then(|| dir.join("certs.d"));
        let registry = match &certs_d {
            Some(p) => {
                std::fs::create_dir_all(p).expect("certs.d");
                format!(
                    "  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"{}\"\n",
                    p.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{dir}/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_cgroup = false
  # Settings for a containerd that itself runs inside a container (as kind sets them).
  restrict_oom_score_adj = true
  disable_apparmor = true
{registry}  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("config.toml"), config).expect("config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        write_pid(dir, "containerd", child.id());
        let this = Self {
            dir: dir.to_path_buf(),
            socket,
            certs_d,
            sandbox_image: sandbox_image.into(),
            child,
        };
        wait_for("the containerd socket", Duration::from_secs(20), || {
            this.ctr_output(&["version"]).is_ok()
        });
        this
    }

    /// Runs `ctr -n k8s.io ARGS` against this containerd; its stdout.
    pub fn ctr_output(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "ctr {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs `ctr`, panicking on failure.
    pub fn ctr(&self, args: &[&str]) -> String {
        self.ctr_output(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The image names containerd holds in `k8s.io` (without the `sha256:` ID records CRI adds).
    pub fn image_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ctr(&["images", "ls", "-q"])
            .lines()
            .filter(|l| !l.starts_with("sha256:"))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    /// Starts a long-running container from `image` with `ctr run -d` (outside CRI, as the issue asks).
    pub fn run_detached(&self, image: &str, id: &str) {
        self.ctr(&["run", "-d", image, id]);
    }

    /// Imports an image archive.
    pub fn import(&self, tar: &Path, base_name: &str) {
        self.ctr(&[
            "images",
            "import",
            "--base-name",
            base_name,
            &tar.to_string_lossy(),
        ]);
    }

    fn stop_tasks(&self) {
        if let Ok(list) = self.ctr_output(&["tasks", "ls", "-q"]) {
            for id in list.lines().filter(|l| !l.is_empty()) {
                let _ = self.ctr_output(&["tasks", "kill", "-s", "SIGKILL", id]);
                for _ in 0..50 {
                    if self.ctr_output(&["tasks", "delete", id]).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if let Ok(list) = self.ctr_output(&["containers", "ls", "-q"]) {
            for id in list.lines().filter(|l| !l.is_empty()) {
                let _ = self.ctr_output(&["containers", "delete", id]);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first: their shims outlive containerd otherwise.
        self.stop_tasks();
        kill(&mut self.child);
        // Overlay mounts left by a crashed test would keep the temp dir from being removed.
        let root = self.dir.join("root");
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for line in mounts.lines() {
                if let Some(mp) = line.split_whitespace().nth(1)
                    && mp.starts_with(&*self.dir.to_string_lossy())
                {
                    let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        let _ = root;
    }
}

/// A `docker-registry` (distribution) on 127.0.0.1.
pub struct Registry {
    pub addr: String,
    pub log: PathBuf,
    child: Child,
}

impl Registry {
    pub fn start(dir: &Path, name: &str) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join(format!("{name}-data")).display()
            ),
        )
        .expect("registry config");
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(f.try_clone().expect("log"))
            .stderr(f)
            .spawn()
            .expect("start docker-registry");
        write_pid(dir, name, child.id());
        wait_for("the registry port", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Self { addr, log, child }
    }

    /// The registry's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pushes tag `tag` of the OCI layout to `repo:dest_tag` here.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, dest_tag: &str) {
        let status = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{dest_tag}", self.addr))
            .status()
            .expect("skopeo");
        assert!(status.success(), "skopeo copy to the registry");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// An OCI layout of small busybox images, one tag per name, each with a distinct layer (so each is a
/// distinct image with its own ID), plus an archive of it for `ctr images import`.
pub struct Images {
    pub layout: PathBuf,
}

impl Images {
    /// Builds `tags` (each `sleep`s when run) in `<dir>/layout`.
    pub fn build(dir: &Path, tags: &[&str]) -> Self {
        Self::build_with_payload(dir, tags, 0)
    }

    /// Like `build`, each image also carrying `payload` bytes of its own random (incompressible) data.
    pub fn build_with_payload(dir: &Path, tags: &[&str], payload: usize) -> Self {
        let layout = dir.join("layout");
        let umoci = |args: &[&str]| {
            let out = Command::new("umoci").args(args).output().expect("umoci");
            assert!(
                out.status.success(),
                "umoci {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let l = layout.to_string_lossy().into_owned();
        umoci(&["init", "--layout", &l]);
        umoci(&["new", "--image", &format!("{l}:base")]);
        umoci(&[
            "insert",
            "--image",
            &format!("{l}:base"),
            "/bin/busybox",
            "/bin/busybox",
        ]);
        umoci(&[
            "config",
            "--image",
            &format!("{l}:base"),
            "--config.entrypoint",
            "/bin/busybox",
            "--config.cmd",
            "sleep",
            "--config.cmd",
            "100000",
        ]);
        for tag in tags {
            let marker = dir.join(format!("id-{tag}"));
            std::fs::write(&marker, tag).expect("marker");
            umoci(&["tag", "--image", &format!("{l}:base"), tag]);
            umoci(&[
                "insert",
                "--image",
                &format!("{l}:{tag}"),
                &marker.to_string_lossy(),
                "/id",
            ]);
            if payload > 0 {
                let mut data = vec![0u8; payload];
                let mut f = std::fs::File::open("/dev/urandom").expect("urandom");
                std::io::Read::read_exact(&mut f, &mut data).expect("random payload");
                let file = dir.join(format!("payload-{tag}"));
                std::fs::write(&file, &data).expect("payload");
                umoci(&[
                    "insert",
                    "--image",
                    &format!("{l}:{tag}"),
                    &file.to_string_lossy(),
                    "/payload",
                ]);
            }
        }
        umoci(&["rm", "--image", &format!("{l}:base")]);
        umoci(&["gc", "--layout", &l]);
        Self { layout }
    }

    /// A tar of the whole layout (every tag), for `ctr images import --base-name`.
    pub fn archive(&self, dir: &Path) -> PathBuf {
        let tar = dir.join("images.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&self.layout)
            .args(["-cf"])
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success(), "tar");
        tar
    }
}
