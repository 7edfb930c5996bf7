//! `berth-cluster up|down|status|env`: the e2e test cluster's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_e2e::cluster::{self, UpOptions};
use berth_e2e::config::{self, ClusterConfig, PluginKind, Ports, SharedPool, ZONE_LABEL};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "A real Kubernetes control plane with simulated nodes and Berth's CSI drivers")]
struct Cli {
    /// Where certificates, logs, PIDs, etcd data and pools live.
    #[arg(long, env = "BERTH_E2E_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start (or complete) the cluster; idempotent.
    Up(Box<UpArgs>),
    /// Stop every process the state dir records and unmount everything under it.
    Down {
        /// Also delete the state dir (etcd data, pools, logs).
        #[arg(long)]
        purge: bool,
    },
    /// Show processes, nodes and CSI registration; exits 1 if anything is down.
    Status,
    /// Print `export KUBECONFIG=...` for a shell.
    Env,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Number of simulated nodes (node-1..node-N).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// A label for every node, KEY=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// A label for one node, NODE:KEY=VALUE (repeatable).
    #[arg(long = "node-label")]
    node_labels: Vec<String>,
    /// First of six consecutive loopback ports (etcd, etcd peer, apiserver, controller-manager,
    /// scheduler, kwok).
    #[arg(long, default_value_t = 26400, env = "BERTH_E2E_PORT_BASE")]
    port_base: u16,
    /// Which CSI plugin runs behind the sidecars.
    #[arg(long, value_enum, default_value = "berth")]
    plugin: PluginKind,
    /// The berth-csi binary (default: target/debug or target/release of this workspace).
    #[arg(long)]
    csi_binary: Option<PathBuf>,
    /// Node label keys the local driver copies into its topology (repeatable).
    #[arg(long = "topology-label", default_values_t = vec![ZONE_LABEL.to_string()])]
    topology_labels: Vec<String>,
    /// Shared pools, NAME or NAME=PATH (default: one pool `default` in the state dir).
    #[arg(long = "shared-pool")]
    shared_pools: Vec<String>,
    /// Back every node's local pool with a loop-mounted filesystem image of this size (e.g. 512M),
    /// so its capacity is real; default: plain directories.
    #[arg(long)]
    pool_size: Option<String>,
    /// One node's pool image size, NODE=SIZE (repeatable; overrides --pool-size).
    #[arg(long = "node-pool-size")]
    node_pool_sizes: Vec<String>,
    /// Filesystem of the pool images (btrfs, ext4, xfs).
    #[arg(long, default_value = "btrfs")]
    pool_fs: String,
    /// Add a shared pool `nolinks` served by nolinkfs (a FUSE filesystem that refuses hard links;
    /// `cargo build -p nolinkfs`).
    #[arg(long)]
    nolinks_pool: bool,
    /// How often the provisioners refresh CSIStorageCapacity.
    #[arg(long, default_value_t = 5)]
    capacity_poll_seconds: u32,
    /// How long to wait for each component to become ready.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
}

fn build_config(state_dir: PathBuf, a: &UpArgs) -> anyhow::Result<ClusterConfig> {
    let nodes = config::build_nodes(a.nodes, &a.labels, &a.node_labels)?;
    let pool_sizes = config::build_pool_sizes(&nodes, a.pool_size.as_deref(), &a.node_pool_sizes)?;
    config::check_pool_fs(&a.pool_fs)?;
    let specs = if a.shared_pools.is_empty() {
        vec!["default".to_string()]
    } else {
        a.shared_pools.clone()
    };
    let mut shared_pools = Vec::new();
    for s in specs {
        let (name, path) = match s.split_once('=') {
            Some((n, p)) => (n.to_string(), PathBuf::from(p)),
            None => (s.clone(), state_dir.join("pools/shared").join(&s)),
        };
        config::check_pool_name(&name)?;
        shared_pools.push(SharedPool { name, path });
    }
    let nolinks_mount = state_dir.join("pools/shared").join(config::NOLINKS_POOL);
    if a.nolinks_pool {
        shared_pools.push(SharedPool {
            name: config::NOLINKS_POOL.into(),
            path: nolinks_mount,
        });
    }
    Ok(ClusterConfig {
        ports: Ports::from_base(a.port_base),
        nodes,
        plugin: a.plugin,
        topology_labels: a.topology_labels.clone(),
        shared_pools,
        capacity_poll_seconds: a.capacity_poll_seconds,
        pool_sizes,
        pool_fs: a.pool_fs.clone(),
        nolinks_pool: a.nolinks_pool,
        state_dir,
    })
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let state_dir = cli.state_dir.unwrap_or_else(berth_e2e::default_state_dir);
    let state_dir = std::path::absolute(&state_dir)?;
    match cli.cmd {
        Cmd::Up(a) => {
            let cfg = build_config(state_dir, &a)?;
            let opts = UpOptions {
                berth_csi: a.csi_binary.clone(),
                timeout: Duration::from_secs(a.timeout_seconds),
            };
            cluster::up(&cfg, &opts).await?;
            Ok(true)
        }
        Cmd::Down { purge } => {
            tokio::task::spawn_blocking(move || cluster::down(&state_dir, purge)).await??;
            Ok(true)
        }
        Cmd::Status => Ok(cluster::status(&state_dir).await?),
        Cmd::Env => {
            println!(
                "export KUBECONFIG={}",
                state_dir.join("kubeconfig").display()
            );
            Ok(true)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
