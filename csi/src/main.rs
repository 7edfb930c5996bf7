//! `berth-csi`: the CSI plugin binary (`--driver local|shared --mode node|controller|all ...`), and
//! `berth-csi probe --path P`, which prints what a filesystem can do for a database.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use berth_csi::driver::{Config, Driver, Kind, Mode};
use berth_csi::{node_labels, probe, server};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Berth CSI plugin: local.csi.berth.dev and shared.csi.berth.dev"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Probe a directory's filesystem for what databases need and print the result.
    Probe {
        #[arg(long)]
        path: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Which driver to serve.
    #[arg(long, value_enum)]
    driver: Option<Kind>,
    /// Which CSI services to serve.
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// This node's name (the Kubernetes Node name).
    #[arg(long, env = "NODE_NAME")]
    node_id: Option<String>,
    /// The CSI endpoint, unix:///path/to/csi.sock.
    #[arg(long, default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// The local pool directory (--driver local).
    #[arg(long)]
    pool: Option<PathBuf>,
    /// A shared pool, NAME=PATH (--driver shared; repeatable).
    #[arg(long = "shared-pool", value_parser = parse_pool)]
    shared_pools: Vec<(String, PathBuf)>,
    /// A node label copied into the topology (repeatable), e.g. topology.kubernetes.io/zone.
    #[arg(long = "topology-label")]
    topology_labels: Vec<String>,
    /// The node's labels as k=v,... (used when no API server is configured).
    #[arg(long)]
    node_labels: Option<String>,
    /// Read the node's labels from the API server with this kubeconfig (in-cluster config is
    /// used automatically inside a Pod).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

fn parse_pool(raw: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not NAME=PATH"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Some(Command::Probe { path }) = cli.command {
        let report = probe::probe(&path).with_context(|| format!("probing {}", path.display()))?;
        print!("{}", report.render());
        return Ok(());
    }
    let args = cli.serve;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let kind = args.driver.context("--driver local|shared is required")?;
        let node_id = args
            .node_id
            .context("--node-id (or NODE_NAME) is required")?;
        let mut labels = match &args.node_labels {
            Some(raw) => node_labels::parse(raw)?,
            None => Default::default(),
        };
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if !args.topology_labels.is_empty() && (args.kubeconfig.is_some() || in_cluster) {
            let from_api = node_labels::from_api_server(&node_id, args.kubeconfig.as_deref())
                .await
                .with_context(|| format!("reading node {node_id}'s labels from the API server"))?;
            labels.extend(from_api);
        }
        let socket = server::socket_path(&args.endpoint)?;
        let config = Config {
            kind,
            mode: args.mode,
            node_id,
            pool: args.pool,
            shared_pools: args.shared_pools,
            topology_labels: args.topology_labels,
            node_labels: labels,
        };
        let driver = tokio::task::spawn_blocking(move || Driver::new(config)).await??;
        server::serve(Arc::new(driver), &socket).await
    })
}
