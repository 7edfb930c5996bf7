//! `berth-operator`: the controller for Berth's custom resources, the node agent, and CRD generation.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Berth operator, node agent and CRD generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the YAML of every Berth CustomResourceDefinition (what `crds/` holds).
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        write: Option<std::path::PathBuf>,
    },
    /// Run the controller for ReplicatedDatabases (leader-elected).
    Controller(ControllerArgs),
    /// Run the node agent: ImageCachePolicy and RegistryMirror on this node.
    NodeAgent(Box<berth_operator::node_agent::cli::NodeAgentArgs>),
}

/// Settings of `berth-operator controller`.
#[derive(clap::Args)]
struct ControllerArgs {
    /// Address of the /metrics and /healthz endpoint.
    #[arg(long, env = "BERTH_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "berth-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "berth-operator-rdb")]
    lease_name: String,
    /// This replica's identity in the Lease (defaults to the Pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// How many databases are reconciled at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
}

fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let identity = match args.identity {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("berth-operator-{}", std::process::id())),
    };
    let opts = berth_operator::rdb::controller::Options {
        metrics_addr: args.metrics_addr,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        lease_duration: std::time::Duration::from_secs(args.lease_seconds.max(2)),
        concurrency: args.concurrency.max(1),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(berth_operator::rdb::controller::run(opts))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { write: None } => {
            print!("{}", berth_operator::crdgen::all_crds_yaml()?);
            Ok(())
        }
        Command::Crds { write: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for crd in berth_operator::crdgen::crds() {
                let path = dir.join(berth_operator::crdgen::file_name(&crd));
                std::fs::write(&path, berth_operator::crdgen::render(&crd)?)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Controller(args) => run_controller(args),
        Command::NodeAgent(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(berth_operator::node_agent::cli::run(*args))
        }
    }
}
