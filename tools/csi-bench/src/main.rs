//! `csi-bench`: how many full volume cycles per second a CSI plugin sustains over its Unix socket,
//! with per-RPC p50/p95 latencies and the plugin's idle resident memory. Works against any CSI
//! v1 plugin (Berth's, csi-driver-host-path's...), so the same workload compares them fairly.
//!
//! Prints a human summary on stderr and one JSON line on stdout for scripts.

mod cycle;
mod parse;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};

use crate::cycle::{Clients, CycleError, Plugin, Workload};
use crate::stats::{Report, Rss, Samples};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VolumeMode {
    Mount,
    Block,
}

/// Benchmark a CSI plugin: CreateVolume, [ControllerPublish], [NodeStage], NodePublish,
/// NodeUnpublish, [NodeUnstage], [ControllerUnpublish], DeleteVolume — repeated, timed.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The plugin's socket: unix:///path/csi.sock or a path.
    #[arg(long, visible_alias = "socket", value_parser = parse::endpoint_path)]
    endpoint: PathBuf,
    /// Measured cycles.
    #[arg(long, default_value_t = 100)]
    cycles: usize,
    /// Cycles run before measuring (not counted), to warm caches on both sides.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Cycles in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Requested capacity of each volume (bytes, or with k/M/G/Ki/Mi/Gi).
    #[arg(long, default_value = "64Mi", value_parser = parse::size)]
    capacity: i64,
    /// A StorageClass parameter KEY=VALUE for CreateVolume (repeatable).
    #[arg(short = 'p', long = "parameter", value_parser = parse::parameter)]
    parameters: Vec<(String, String)>,
    /// Filesystem volumes or raw block volumes.
    #[arg(long, value_enum, default_value_t = VolumeMode::Mount)]
    volume_mode: VolumeMode,
    /// fs_type of the mount capability (empty: the plugin's default).
    #[arg(long, default_value = "")]
    fs_type: String,
    /// Access mode of the volume capability.
    #[arg(long, default_value = "single-node-writer", value_parser = parse::access_mode)]
    access_mode: berth_csi::proto::volume_capability::access_mode::Mode,
    /// Directory under which each volume's staging directory is made (created if missing).
    #[arg(long)]
    staging_dir: Option<PathBuf>,
    /// Directory under which each volume's target path lies (created if missing).
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// The plugin's process id: report its resident memory (VmRSS) idle and after the run.
    #[arg(long)]
    pid: Option<u32>,
    /// Pause after the run before reading the "after" RSS.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// A label for the report (default: the driver name).
    #[arg(long)]
    label: Option<String>,
    /// Volume names are PREFIX-RUN-N.
    #[arg(long, default_value = "csibench")]
    name_prefix: String,
    /// Deadline of each RPC, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

/// Why csi-bench stopped.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Cycle(#[from] CycleError),
    #[error("reading /proc/{pid}/status: {source}")]
    Proc { pid: u32, source: std::io::Error },
    #[error("/proc/{pid}/status: {source}")]
    ProcParse { pid: u32, source: parse::ParseError },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

fn read_vm(pid: u32, field: &str) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|source| Error::Proc { pid, source })?;
    parse::vm_field_kib(&status, field).map_err(|source| Error::ProcParse { pid, source })
}

/// CPU time of `pid` and its waited-for children, in milliseconds.
fn read_cpu_ms(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| Error::Proc { pid, source })?;
    let ticks = parse::cpu_ticks(&stat).map_err(|source| Error::ProcParse { pid, source })?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(ticks as f64 * 1000.0 / hz)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("csi-bench: {}", Error::Runtime(e));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            if report.error.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("csi-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Base directories: the given ones, or fresh ones under the temp dir that are removed at the end.
struct Dirs {
    staging: PathBuf,
    target: PathBuf,
    own: Option<PathBuf>,
}

impl Dirs {
    fn new(args: &Args, run_id: &str) -> Result<Dirs, Error> {
        let own = std::env::temp_dir().join(format!("csi-bench-{run_id}"));
        let staging = args
            .staging_dir
            .clone()
            .unwrap_or_else(|| own.join("staging"));
        let target = args
            .target_dir
            .clone()
            .unwrap_or_else(|| own.join("target"));
        for dir in [&staging, &target] {
            std::fs::create_dir_all(dir).map_err(|source| {
                Error::Cycle(CycleError::Io {
                    what: "base directory",
                    path: dir.clone(),
                    source,
                })
            })?;
        }
        let own = (args.staging_dir.is_none() || args.target_dir.is_none()).then_some(own);
        Ok(Dirs {
            staging,
            target,
            own,
        })
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            // Only empty directories go: a leftover mount below stays visible instead of being
            // deleted through.
            for d in [self.staging.as_path(), self.target.as_path(), own.as_path()] {
                if d.starts_with(own) {
                    let _ = std::fs::remove_dir(d);
                }
            }
        }
    }
}

async fn run(args: Args) -> Result<Report, Error> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let run_id = format!("{:x}", (stamp as u64) ^ u64::from(std::process::id()));
    let dirs = Dirs::new(&args, &run_id)?;

    let channel = cycle::connect(&args.endpoint, Duration::from_secs(args.timeout_s)).await?;
    let plugin = cycle::probe(&channel).await?;
    let work = Workload {
        capacity: args.capacity,
        parameters: args.parameters.iter().cloned().collect::<HashMap<_, _>>(),
        block: args.volume_mode == VolumeMode::Block,
        fs_type: args.fs_type.clone(),
        access_mode: args.access_mode,
        staging_base: dirs.staging.clone(),
        target_base: dirs.target.clone(),
    };

    // Idle: the plugin is up and has answered the probe, nothing more.
    let idle_kib = args.pid.map(|pid| read_vm(pid, "VmRSS")).transpose()?;

    let prefix = format!("{}-{run_id}", args.name_prefix);
    let mut error = None;
    if args.warmup > 0 {
        let (_, _, e) = run_cycles(
            &channel,
            &plugin,
            &work,
            &format!("{prefix}-w"),
            args.warmup,
            1,
        )
        .await;
        error = e;
    }
    let mut cpu_ms = None;
    let (samples, completed, elapsed) = if error.is_none() {
        let cpu_before = args.pid.and_then(|pid| read_cpu_ms(pid).ok());
        let start = Instant::now();
        let (samples, completed, e) = run_cycles(
            &channel,
            &plugin,
            &work,
            &prefix,
            args.cycles,
            usize::from(args.concurrency),
        )
        .await;
        error = e;
        let elapsed = start.elapsed();
        if let (Some(pid), Some(before)) = (args.pid, cpu_before) {
            cpu_ms = read_cpu_ms(pid).ok().map(|after| after - before);
        }
        (samples, completed, elapsed)
    } else {
        (Samples::default(), 0, Duration::ZERO)
    };

    let rss = match (args.pid, idle_kib) {
        (Some(pid), Some(idle_kib)) => {
            tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
            Some(Rss {
                pid,
                idle_kib,
                after_kib: read_vm(pid, "VmRSS").ok(),
                peak_kib: read_vm(pid, "VmHWM").ok(),
                cpu_ms_per_cycle: cpu_ms
                    .filter(|_| completed > 0)
                    .map(|ms| ms / completed as f64),
            })
        }
        _ => None,
    };
    let order = samples.summaries();
    let report = Report {
        label: args.label.clone().unwrap_or_else(|| plugin.name.clone()),
        driver: plugin.name.clone(),
        vendor_version: plugin.vendor_version.clone(),
        volume_mode: format!("{:?}", args.volume_mode).to_lowercase(),
        parameters: args.parameters.iter().cloned().collect::<BTreeMap<_, _>>(),
        capacity_bytes: args.capacity,
        staged: plugin.stage,
        controller_publish: plugin.controller_publish,
        cycles: args.cycles,
        completed,
        failed: args.cycles - completed,
        concurrency: usize::from(args.concurrency),
        seconds: elapsed.as_secs_f64(),
        cycles_per_sec: stats::rate(completed, elapsed),
        rpc: order.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        rss,
        warnings: plugin.warnings.clone(),
        error: error.map(|e| e.to_string()),
    };
    eprint!("{}", report.table(&order));
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("csi-bench: cannot serialize the report: {e}"),
    }
    Ok(report)
}

/// Runs `count` cycles with `concurrency` workers pulling from one counter. The first failure stops
/// every worker after its current cycle. Returns the samples, how many cycles completed, and the
/// first error.
async fn run_cycles(
    channel: &tonic::transport::Channel,
    plugin: &Plugin,
    work: &Workload,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> (Samples, usize, Option<CycleError>) {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count.max(1)) {
        let (next, stop) = (next.clone(), stop.clone());
        let mut clients = Clients::new(channel);
        let (plugin, work, prefix) = (plugin.clone(), work.clone(), prefix.to_string());
        tasks.spawn(async move {
            let mut samples = Samples::default();
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || stop.load(Ordering::Relaxed) {
                    return (samples, done, None);
                }
                let name = format!("{prefix}-{i}");
                if let Err(e) =
                    cycle::run_cycle(&mut clients, &plugin, &work, &name, &mut samples).await
                {
                    stop.store(true, Ordering::Relaxed);
                    return (samples, done, Some(e));
                }
                done += 1;
            }
        });
    }
    let mut all = Samples::default();
    let mut completed = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((samples, done, err)) => {
                all.merge(samples);
                completed += done;
                if first_error.is_none() {
                    first_error = err;
                }
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(CycleError::Io {
                        what: "worker task",
                        path: PathBuf::from("-"),
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }
    }
    (all, completed, first_error)
}
