//! Starting and stopping the cluster's host processes. Each one runs detached in its own process
//! group with its output in `logs/<name>.log`, and is recorded in `pids/<name>.json`; `down` stops
//! exactly the recorded processes (checking the PID still runs the recorded binary, so a reused PID is
//! never signalled), newest first.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Errors while starting, finding or stopping processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {name} ({exe}): {source}")]
    Spawn {
        name: String,
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} exited right after start (see {log})")]
    ExitedEarly { name: String, log: PathBuf },
}

/// What `pids/<name>.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    pub name: String,
    pub pid: i32,
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    /// Start time in milliseconds since the epoch; `down` stops the newest first.
    pub started_ms: u128,
}

/// The processes of one state dir.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pid_dir: PathBuf,
    log_dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProcessError + '_ {
    move |source| ProcessError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Supervisor {
    pub fn new(pid_dir: PathBuf, log_dir: PathBuf) -> Result<Self, ProcessError> {
        std::fs::create_dir_all(&pid_dir).map_err(io_err(&pid_dir))?;
        std::fs::create_dir_all(&log_dir).map_err(io_err(&log_dir))?;
        Ok(Self { pid_dir, log_dir })
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.pid_dir.join(format!("{name}.json"))
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// The record of `name` if that process is still alive.
    pub fn running(&self, name: &str) -> Option<ProcRecord> {
        let text = std::fs::read_to_string(self.record_path(name)).ok()?;
        let rec: ProcRecord = serde_json::from_str(&text).ok()?;
        alive(&rec).then_some(rec)
    }

    /// Starts `exe args` as `name` unless a process of that name already runs with that command line
    /// (then returns its record and `false`; one with another command line is restarted). The process outlives the caller: own process group, stdin closed, output to its log.
    pub fn ensure(
        &self,
        name: &str,
        exe: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(ProcRecord, bool), ProcessError> {
        if let Some(rec) = self.running(name) {
            if rec.exe == exe && rec.args == args {
                return Ok((rec, false));
            }
            // Same name, different command line (a new version or flag): replace it.
            tracing::info!(name, "command line changed; restarting");
            self.stop(&rec, std::time::Duration::from_secs(10));
        }
        let log = self.log_path(name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(&log))?;
        let err = out.try_clone().map_err(io_err(&log))?;
        let child = Command::new(exe)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                name: name.to_string(),
                exe: exe.to_path_buf(),
                source,
            })?;
        let rec = ProcRecord {
            name: name.to_string(),
            pid: child.id() as i32,
            exe: exe.to_path_buf(),
            args: args.to_vec(),
            log,
            started_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
        };
        // The child is not waited for here: it must outlive this process. `alive` reaps it if it
        // dies while we are still around.
        drop(child);
        let path = self.record_path(name);
        let text = serde_json::to_string_pretty(&rec).expect("record serializes");
        std::fs::write(&path, text).map_err(io_err(&path))?;
        Ok((rec, true))
    }

    /// Starts like [`Self::ensure`] and fails if the process dies within `grace` (bad flags, port taken).
    pub fn ensure_stays_up(
        &self,
        name: &str,
        exe: &Path,
        args: &[String],
        env: &[(String, String)],
        grace: Duration,
    ) -> Result<(ProcRecord, bool), ProcessError> {
        let (rec, started) = self.ensure(name, exe, args, env)?;
        if started {
            std::thread::sleep(grace);
            if !alive(&rec) {
                return Err(ProcessError::ExitedEarly {
                    name: name.to_string(),
                    log: rec.log,
                });
            }
        }
        Ok((rec, started))
    }

    /// Every record in the pid dir, alive or not, oldest first.
    pub fn records(&self) -> Vec<ProcRecord> {
        let mut recs: Vec<ProcRecord> = std::fs::read_dir(&self.pid_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect();
        recs.sort_by_key(|r: &ProcRecord| r.started_ms);
        recs
    }

    /// Which recorded processes are alive, by name.
    pub fn status(&self) -> BTreeMap<String, (ProcRecord, bool)> {
        self.records()
            .into_iter()
            .map(|r| {
                let up = alive(&r);
                (r.name.clone(), (r, up))
            })
            .collect()
    }

    /// Stops one recorded process (TERM, then KILL after `timeout`) and forgets it.
    pub fn stop(&self, rec: &ProcRecord, timeout: Duration) -> bool {
        let stopped = stop_process(rec, timeout);
        let _ = std::fs::remove_file(self.record_path(&rec.name));
        stopped
    }

    /// Stops every recorded process whose name matches `filter`, newest first. Returns the names stopped.
    pub fn stop_all(&self, filter: impl Fn(&str) -> bool, timeout: Duration) -> Vec<String> {
        let mut stopped = Vec::new();
        for rec in self.records().into_iter().rev() {
            if filter(&rec.name) {
                if alive(&rec) {
                    self.stop(&rec, timeout);
                    stopped.push(rec.name.clone());
                } else {
                    let _ = std::fs::remove_file(self.record_path(&rec.name));
                }
            }
        }
        stopped
    }
}

/// True if `rec.pid` is alive and still runs `rec.exe` (so a recycled PID is never taken for ours).
pub fn alive(rec: &ProcRecord) -> bool {
    // Reap it if it is our own child that died (otherwise a zombie looks alive).
    let _ = waitpid(Pid::from_raw(rec.pid), Some(WaitPidFlag::WNOHANG));
    let Some(cmdline) = read_cmdline(rec.pid) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    if argv0 != rec.exe.as_os_str().as_encoded_bytes() {
        return false;
    }
    // A zombie of someone else's: dead all the same.
    match std::fs::read_to_string(format!("/proc/{}/stat", rec.pid)) {
        Ok(stat) => !stat_state_is_zombie(&stat),
        Err(_) => false,
    }
}

/// The command line of a process. Right after spawn returns, the child can still be inside execve with
/// its new argument area not yet set up, when `/proc/PID/cmdline` reads empty: wait briefly for it.
fn read_cmdline(pid: i32) -> Option<Vec<u8>> {
    for _ in 0..40 {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !cmdline.is_empty() {
            return Some(cmdline);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(Vec::new())
}

/// `/proc/PID/stat` is "pid (comm) S ..."; comm may contain spaces and parentheses, so the state is
/// the first field after the last ')'.
fn stat_state_is_zombie(stat: &str) -> bool {
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|s| s == "Z" || s == "X")
}

fn stop_process(rec: &ProcRecord, timeout: Duration) -> bool {
    if !alive(rec) {
        return true;
    }
    let pg = Pid::from_raw(rec.pid);
    let _ = killpg(pg, Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(rec) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::warn!(name = %rec.name, pid = rec.pid, "did not stop on SIGTERM; sending SIGKILL");
    let _ = killpg(pg, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !alive(rec) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombie_state_is_read_after_the_command_name() {
        assert!(stat_state_is_zombie("123 (a) b) Z 1 2 3"));
        assert!(!stat_state_is_zombie("123 (sleep) S 1 2 3"));
        assert!(!stat_state_is_zombie("garbage"));
    }

    #[test]
    fn ensure_is_idempotent_and_stop_all_stops_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path().join("pids"), dir.path().join("logs")).unwrap();
        let sleep = PathBuf::from("/bin/sleep");
        let (a, started) = sup.ensure("a", &sleep, &["60".into()], &[]).unwrap();
        assert!(started);
        let (a2, started2) = sup.ensure("a", &sleep, &["60".into()], &[]).unwrap();
        assert!(!started2, "second ensure must find the running process");
        assert_eq!(a.pid, a2.pid);
        let (a3, started3) = sup.ensure("a", &sleep, &["61".into()], &[]).unwrap();
        assert!(started3, "changed arguments must restart the process");
        assert!(!alive(&a2));
        let a = a3;
        let (b, _) = sup.ensure("b", &sleep, &["60".into()], &[]).unwrap();
        assert!(alive(&a) && alive(&b));
        let stopped = sup.stop_all(|n| n == "b", Duration::from_secs(5));
        assert_eq!(stopped, ["b"]);
        assert!(!alive(&b));
        assert!(alive(&a));
        sup.stop_all(|_| true, Duration::from_secs(5));
        assert!(!alive(&a));
        assert!(sup.records().is_empty());
    }

    #[test]
    fn a_record_whose_pid_runs_another_binary_is_not_alive() {
        let rec = ProcRecord {
            name: "x".into(),
            pid: std::process::id() as i32,
            exe: "/definitely/not/this/binary".into(),
            args: vec![],
            log: "/dev/null".into(),
            started_ms: 0,
        };
        assert!(!alive(&rec));
    }

    #[test]
    fn early_exit_is_reported_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path().join("pids"), dir.path().join("logs")).unwrap();
        let err = sup
            .ensure_stays_up(
                "f",
                Path::new("/bin/false"),
                &[],
                &[],
                Duration::from_millis(300),
            )
            .unwrap_err();
        assert!(err.to_string().contains("f.log"), "{err}");
    }
}
