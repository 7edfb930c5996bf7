//! csi-bench against a real CSI plugin: csi-driver-host-path's `hostpathplugin` on a temp socket.
//! Needs root (the plugin bind-mounts) and the plugin binary in `CSI_BENCH_HOSTPATHPLUGIN`
//! (`scripts/go-tools.sh hostpathplugin` prints its path; scripts/test.d/60-csi-bench.sh sets it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bench_bin() -> &'static str {
    env!("CARGO_BIN_EXE_csi-bench")
}

/// A running hostpathplugin; dropping it kills it and unmounts anything left below its dir.
struct HostPath {
    child: Child,
    dir: tempfile::TempDir,
}

impl HostPath {
    fn start(bin: &Path) -> HostPath {
        let dir = tempfile::Builder::new()
            .prefix("csi-bench-test-")
            .tempdir()
            .expect("temp dir");
        let sock = dir.path().join("csi.sock");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir state");
        let child = Command::new(bin)
            .args(["--nodeid", "bench-test-node", "--endpoint"])
            .arg(format!("unix://{}", sock.display()))
            .arg("--statedir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hostpathplugin");
        let mut hp = HostPath { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            if let Ok(Some(status)) = hp.child.try_wait() {
                panic!("hostpathplugin exited: {status}");
            }
            assert!(Instant::now() < deadline, "no socket after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        hp
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn mounts_below(&self) -> Vec<String> {
        let want = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&want))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for HostPath {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut mounts = self.mounts_below();
        mounts.sort();
        for m in mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

#[test]
fn full_cycles_against_hostpathplugin() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (hostpathplugin bind-mounts volumes)");
        return;
    }
    let Some(bin) = std::env::var_os("CSI_BENCH_HOSTPATHPLUGIN").map(PathBuf::from) else {
        eprintln!(
            "skipped: set CSI_BENCH_HOSTPATHPLUGIN to a hostpathplugin binary \
             (scripts/go-tools.sh hostpathplugin prints one)"
        );
        return;
    };
    let hp = HostPath::start(&bin);
    let out = Command::new(bench_bin())
        .arg("--endpoint")
        .arg(format!("unix://{}", hp.path("csi.sock").display()))
        .args([
            "--cycles",
            "6",
            "--warmup",
            "1",
            "--concurrency",
            "2",
            "--settle-ms",
            "10",
        ])
        .arg("--pid")
        .arg(hp.child.id().to_string())
        .arg("--staging-dir")
        .arg(hp.path("staging"))
        .arg("--target-dir")
        .arg(hp.path("target"))
        .args(["--label", "hostpath-test"])
        .output()
        .expect("run csi-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "csi-bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(line).expect("JSON report");

    assert_eq!(report["label"], "hostpath-test");
    assert_eq!(report["completed"], 6);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["error"], serde_json::Value::Null);
    assert!(report["cycles_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    // hostpathplugin advertises STAGE_UNSTAGE_VOLUME, so every cycle staged and unstaged.
    assert_eq!(report["staged"], true);
    for rpc in [
        "CreateVolume",
        "NodeStageVolume",
        "NodePublishVolume",
        "NodeUnpublishVolume",
        "NodeUnstageVolume",
        "DeleteVolume",
    ] {
        let s = &report["rpc"][rpc];
        assert_eq!(s["n"], 6, "{rpc}: {s}");
        let (p50, p95, max) = (
            s["p50_ms"].as_f64().unwrap_or(-1.0),
            s["p95_ms"].as_f64().unwrap_or(-1.0),
            s["max_ms"].as_f64().unwrap_or(-1.0),
        );
        assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{rpc}: {s}");
    }
    assert!(
        report["rss"]["idle_kib"].as_u64().unwrap_or(0) > 1024,
        "{}",
        report["rss"]
    );
    // CPU is counted in 10 ms ticks, so a few fast cycles may round to 0, but never below.
    let cpu = report["rss"]["cpu_ms_per_cycle"].as_f64().unwrap_or(-1.0);
    assert!(cpu >= 0.0, "{}", report["rss"]);
    assert!(stderr.contains("cycles/s"), "no human summary: {stderr}");

    // Every cycle cleaned up after itself: no mounts, no per-volume directories.
    assert_eq!(hp.mounts_below(), Vec::<String>::new());
    for base in ["staging", "target"] {
        let left: Vec<_> = std::fs::read_dir(hp.path(base))
            .expect("base dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "{base} keeps {left:?}");
    }
}

#[test]
fn an_unreachable_socket_fails_naming_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("nobody.sock");
    let out = Command::new(bench_bin())
        .arg("--endpoint")
        .arg(&sock)
        .args(["--cycles", "1", "--timeout-s", "5"])
        .arg("--staging-dir")
        .arg(dir.path().join("s"))
        .arg("--target-dir")
        .arg(dir.path().join("t"))
        .output()
        .expect("run csi-bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&*sock.to_string_lossy()), "{stderr}");
}

#[test]
fn bad_arguments_name_the_value() {
    let out = Command::new(bench_bin())
        .args(["--endpoint", "tcp://127.0.0.1:1", "-p", "novalue"])
        .output()
        .expect("run csi-bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tcp://127.0.0.1:1"), "{stderr}");
}
