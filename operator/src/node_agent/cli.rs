//! The `berth-operator node-agent` command line: flags, and the one-shot mode (`--once-policy FILE`) that
//! runs a single GC pass of a policy read from a file, without an API server (used by the real-runtime
//! tests and the benchmark).

use std::path::PathBuf;

use anyhow::Context;

use crate::api::image_cache_policy::ImageCachePolicy;
use crate::cri::{self, CriClient};

use super::gc::{self, NoPods, PassOptions};
use super::gc_plan::GcPolicy;
use super::report;
use super::usage::UsageStore;

/// Flags of `berth-operator node-agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeAgentArgs {
    /// This node's name (the DaemonSet sets it from the downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The container runtime's CRI socket.
    #[arg(long, env = "BERTH_CRI_SOCKET", default_value = cri::DEFAULT_SOCKET)]
    pub cri_socket: PathBuf,
    /// Where the agent keeps its usage record (survives restarts; a hostPath in the DaemonSet).
    #[arg(
        long,
        env = "BERTH_STATE_DIR",
        default_value = "/var/lib/berth/node-agent"
    )]
    pub state_dir: PathBuf,
    /// Where the host's filesystem is mounted in the agent's container (`/` when run on the host).
    #[arg(long, env = "BERTH_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// containerd's registry config_path, when the runtime does not report it.
    #[arg(long)]
    pub containerd_config_path: Option<PathBuf>,
    /// CRI-O's registries.conf.d directory.
    #[arg(long, default_value = "/etc/containers/registries.conf.d")]
    pub crio_registries_dir: PathBuf,
    /// CRI-O's PID file, to send it SIGHUP after changing a drop-in.
    #[arg(long)]
    pub crio_pid_file: Option<PathBuf>,
    /// The sandbox (pause) image, when the runtime does not report it.
    #[arg(long)]
    pub sandbox_image: Option<String>,
    /// Serve /metrics and /healthz on this address (e.g. 0.0.0.0:9817); off when unset.
    #[arg(long, env = "BERTH_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Run one GC pass of the ImageCachePolicy in this YAML file and print the node report as JSON,
    /// without an API server.
    #[arg(long)]
    pub once_policy: Option<PathBuf>,
}

impl NodeAgentArgs {
    /// The usage record's file.
    pub fn usage_store(&self) -> UsageStore {
        UsageStore::new(self.state_dir.join("image-usage.json"))
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now as RFC 3339.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Runs the agent: one pass from a file, or the reconcile loops against the API server.
pub async fn run(args: NodeAgentArgs) -> anyhow::Result<()> {
    match &args.once_policy {
        Some(file) => once(&args, file).await,
        None => Ok(super::run::run(args).await?),
    }
}

async fn once(args: &NodeAgentArgs, file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let policy: ImageCachePolicy =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let gc_policy = GcPolicy::from_spec(&policy.spec)?;
    let cri = CriClient::connect(&args.cri_socket).await?;
    let start = std::time::Instant::now();
    let outcome = gc::run_pass(
        &cri,
        &args.usage_store(),
        &gc_policy,
        &NoPods,
        &PassOptions {
            dry_run: policy.spec.dry_run,
            now: now(),
            host_root: &args.host_root,
            sandbox_image_override: args.sandbox_image.as_deref(),
        },
    )
    .await?;
    let elapsed = start.elapsed();
    let report = report::node_report(&outcome, &now_rfc3339());
    let removed: Vec<&str> = outcome.removed.iter().map(|(p, _)| p.id.as_str()).collect();
    let planned: Vec<&str> = outcome
        .plan
        .removals()
        .map(|(p, _)| p.id.as_str())
        .collect();
    let out = serde_json::json!({
        "report": report,
        "plannedIds": planned,
        "removedIds": removed,
        "passMillis": elapsed.as_millis() as u64,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
