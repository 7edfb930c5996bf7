//! The `postgres` engine profile against real PostgreSQL on 127.0.0.1, outside Kubernetes: the exact
//! scripts the operator mounts in member Pods (operator/src/rdb/postgres/) initialise a primary, clone and
//! stream a replica, switch over (demote, catch up, promote), rejoin the old primary with pg_rewind, fail
//! over after a crash (SIGKILL) and rejoin the crashed primary.
//!
//! Needs Debian's `postgresql` package and root (the scripts drop to the postgres user as in the image):
//! `scripts/test.d/20-operator.sh` installs it and sets `BERTH_PG_BIN`. Without `BERTH_PG_BIN` the test
//! says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rdb/postgres")
}

/// One member: its data, its downward-API labels file, its port, and its entrypoint process.
struct Member {
    name: String,
    dir: PathBuf,
    port: u16,
    primary_port: u16,
    pod_uid: String,
    generation: u32,
    child: Option<Child>,
}

impl Member {
    fn new(root: &Path, name: &str, port: u16, role: &str, primary_port: u16) -> Member {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("podinfo")).unwrap();
        let m = Member {
            name: name.into(),
            dir,
            port,
            primary_port,
            pod_uid: format!("{name}-uid-1"),
            generation: 1,
            child: None,
        };
        m.set_role(role);
        m
    }

    /// What the kubelet does when the operator relabels the Pod.
    fn set_role(&self, role: &str) {
        let labels = format!("berth.dev/replicated-database=\"pg\"\nberth.dev/role=\"{role}\"\n");
        std::fs::write(self.dir.join("podinfo/labels"), labels).unwrap();
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("PGDATA", self.dir.join("pgdata"))
            .env("PGPORT", self.port.to_string())
            .env("BERTH_PRIMARY_HOST", "127.0.0.1")
            .env("BERTH_PRIMARY_PORT", self.primary_port.to_string())
            .env("BERTH_PODINFO", self.dir.join("podinfo"))
            .env("BERTH_POD_UID", &self.pod_uid)
            .env("BERTH_PG_BIN", std::env::var("BERTH_PG_BIN").unwrap())
            .env("POSTGRES_PASSWORD", "berth-test-password")
            .env("HOSTNAME", &self.name);
    }

    /// Starts the entrypoint, as the container runtime starts the Pod's container.
    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join(format!("{}.log", self.pod_uid))).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg(scripts().join("entrypoint.sh"))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.env(&mut cmd);
        self.child = Some(cmd.spawn().unwrap());
    }

    /// Runs a hook as the operator does through pods/exec: `sh <scripts>/<hook>`.
    fn hook(&self, name: &str) -> Output {
        let mut cmd = Command::new("sh");
        cmd.arg(scripts().join(name));
        self.env(&mut cmd);
        cmd.output().unwrap()
    }

    fn hook_ok(&self, name: &str) -> String {
        let out = self.hook(name);
        assert!(
            out.status.success(),
            "{} on {} failed: {}\n{}",
            name,
            self.name,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn position(&self) -> i64 {
        let out = self.hook_ok("position.sh");
        out.lines()
            .last()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("position {out:?}: {e}"))
    }

    fn sql(&self, sql: &str) -> Result<String, String> {
        let bin = std::env::var("BERTH_PG_BIN").unwrap();
        let out = Command::new(format!("{bin}/psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-c", sql])
            .env("PGPASSWORD", "berth-test-password")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.pod_uid))).unwrap_or_default()
    }

    fn wait(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{}: timed out waiting for {what}\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("{}: {what} after {:?}", self.name, start.elapsed());
    }

    fn wait_ready(&self) {
        self.wait("ready.sh", || self.hook("ready.sh").status.success());
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let pid = std::fs::read_to_string(self.dir.join("pgdata/postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    /// Stops the member: SIGTERM (Pod deletion) or SIGKILL (node lost), and waits for the process.
    fn stop(&mut self, signal: i32) {
        match self.postmaster_pid() {
            // SAFETY: kill(2) on a pid we started; no memory is involved.
            Some(pid) => unsafe {
                libc::kill(pid, signal);
            },
            None => {
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                }
            }
        }
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A new Pod for the same ordinal: new UID, same volume.
    fn recreate(&mut self, role: &str, primary_port: u16) {
        self.generation += 1;
        self.pod_uid = format!("{}-uid-{}", self.name, self.generation);
        self.primary_port = primary_port;
        self.set_role(role);
        self.start();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL);
    }
}

/// The rejoin went through pg_rewind (not a fresh clone).
fn assert_rewound(m: &Member) {
    let log = m.log();
    assert!(
        !log.contains("cloning afresh"),
        "{} was re-cloned:\n{log}",
        m.name
    );
    assert!(
        log.contains("pg_rewind: Done!") || log.contains("no rewind required"),
        "{}:\n{log}",
        m.name
    );
    eprintln!(
        "{}: {}",
        m.name,
        log.lines()
            .filter(|l| l.contains("pg_rewind"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

#[test]
fn postgres_profile_init_clone_switchover_rewind_failover() {
    let Ok(bin) = std::env::var("BERTH_PG_BIN") else {
        eprintln!(
            "SKIPPED: BERTH_PG_BIN is not set (scripts/test.d/20-operator.sh installs PostgreSQL and sets it)"
        );
        return;
    };
    assert!(
        Path::new(&bin).join("postgres").exists(),
        "no postgres in BERTH_PG_BIN={bin}"
    );
    let root = tempfile::Builder::new()
        .prefix("berth-operator-rdb-pg-")
        .tempdir()
        .unwrap();
    // The scripts drop to the postgres user, which must reach the member directories.
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let base = 26000 + (std::process::id() % 1000) as u16 * 2;
    let (p0, p1) = (base, base + 1);

    // Initialise the primary and clone a streaming replica.
    let mut m0 = Member::new(root.path(), "pg-0", p0, "primary", p0);
    m0.start();
    m0.wait_ready();
    let mut m1 = Member::new(root.path(), "pg-1", p1, "replica", p0);
    m1.start();
    m1.wait_ready();
    assert_eq!(m1.sql("select pg_is_in_recovery()").unwrap(), "t");
    m0.sql("create table t (v int); insert into t values (1)")
        .unwrap();
    m1.wait("row 1 replicated", || {
        m1.sql("select count(*) from t").is_ok_and(|c| c == "1")
    });
    assert!(
        m1.sql("insert into t values (99)")
            .unwrap_err()
            .contains("read-only")
    );

    // Switchover 0 -> 1: demote (writes stop, final position printed), target catches up, old Pod deleted,
    // target relabelled and promoted.
    m0.set_role("fenced");
    let final_position: i64 = m0
        .hook_ok("demote.sh")
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    let refused = m0.sql("insert into t values (2)").unwrap_err();
    assert!(
        refused.contains("read-only"),
        "writes after demote: {refused}"
    );
    m1.wait("caught up with the demoted primary", || {
        m1.position() >= final_position
    });
    m0.stop(libc::SIGTERM);
    m1.set_role("primary");
    assert_eq!(m1.hook_ok("promote.sh").lines().last(), Some("promoted"));
    assert_eq!(
        m1.hook_ok("promote.sh").lines().last(),
        Some("promoted"),
        "promote is idempotent"
    );
    assert_eq!(m1.sql("select pg_is_in_recovery()").unwrap(), "f");
    m1.sql("insert into t values (2)").unwrap();

    // The old primary rejoins as a replica of the new one (pg_rewind) and streams.
    m0.recreate("replica", p1);
    m0.wait_ready();
    assert!(m0.log().contains("starting as replica"), "{}", m0.log());
    assert_rewound(&m0);
    m0.wait("row 2 replicated to the old primary", || {
        m0.sql("select count(*) from t").is_ok_and(|c| c == "2")
    });

    // Failover: the new primary dies hard (node lost); the replica is promoted; the crashed member rejoins.
    m1.sql("insert into t values (3)").unwrap();
    m0.wait("row 3 replicated", || {
        m0.sql("select count(*) from t").is_ok_and(|c| c == "3")
    });
    m1.stop(libc::SIGKILL);
    m0.set_role("primary");
    m0.hook_ok("promote.sh");
    m0.sql("insert into t values (4)").unwrap();
    m1.recreate("replica", p0);
    m1.wait_ready();
    m1.wait("row 4 replicated to the crashed member", || {
        m1.sql("select count(*) from t").is_ok_and(|c| c == "4")
    });
    assert_rewound(&m1);
    assert!(m1.position() <= m0.position());

    // A member demoted in this Pod does not start again if its container restarts.
    m0.set_role("fenced");
    m0.hook_ok("demote.sh");
    m0.stop(libc::SIGTERM);
    m0.start(); // same Pod UID: a container restart
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        m0.postmaster_pid().is_none() || m0.sql("select 1").is_err(),
        "a fenced member started again"
    );
    assert!(m0.log().contains("fenced"), "{}", m0.log());
    m0.stop(libc::SIGKILL);
}
