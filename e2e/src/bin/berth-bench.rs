//! `berth-bench`: the provisioning benchmark. Brings up a cluster of N simulated nodes with a CSI
//! plugin behind the same sidecars (distributed csi-provisioner per node, capacity tracking on),
//! creates M claims of the plugin's local WaitForFirstConsumer class with one Pod each (spread over
//! the nodes), and measures each claim's time from creation to Bound. Runs Berth and the
//! csi-driver-host-path peer one after the other and prints both and their ratio.
//!
//! `cargo run --release -p berth-e2e --bin berth-bench` (needs root, like the e2e stage).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_e2e::cluster::{self, UpOptions, local_class};
use berth_e2e::config::{self, ClusterConfig, PluginKind, Ports, ZONE_LABEL};
use berth_e2e::testing::{TestCluster, pvc};
use clap::Parser;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Provisioning benchmark: Berth's local driver vs csi-driver-host-path")]
struct Args {
    /// Which plugins to measure.
    #[arg(long, value_enum, num_args = 1.., default_values = ["berth", "hostpath"])]
    plugin: Vec<PluginKind>,
    #[arg(long, default_value_t = 100)]
    pvcs: usize,
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    #[arg(long, default_value_t = 26500)]
    port_base: u16,
    /// Parent of the per-run state dirs (each is purged after its run).
    #[arg(long, default_value = "/tmp/berth-bench")]
    state_dir: PathBuf,
    /// The berth-csi binary (default: target/debug or target/release of this workspace).
    #[arg(long)]
    csi_binary: Option<PathBuf>,
    /// Leave the last cluster running (for looking at its logs); `berth-cluster --state-dir
    /// <state-dir>/<plugin> down --purge` stops it.
    #[arg(long)]
    keep: bool,
    /// Give up waiting for all claims to bind after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
}

/// Per-claim seconds from creation to Bound, and the whole run's wall time.
struct Run {
    plugin: PluginKind,
    secs: Vec<f64>,
    wall: f64,
    per_node: BTreeMap<String, usize>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Run {
    fn print(&self) {
        let mut s = self.secs.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{:<9} {} claims Bound in {:.1}s: p50 {:.2}s  p95 {:.2}s  max {:.2}s  {:.1} volumes/s  (per node: {:?})",
            format!("{:?}", self.plugin).to_lowercase(),
            s.len(),
            self.wall,
            percentile(&s, 50.0),
            percentile(&s, 95.0),
            s.last().copied().unwrap_or(f64::NAN),
            s.len() as f64 / self.wall,
            self.per_node.values().collect::<Vec<_>>(),
        );
    }
    fn p50(&self) -> f64 {
        let mut s = self.secs.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        percentile(&s, 50.0)
    }
}

fn bench_pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("app-{i}"), "labels": {"app": "bench"}},
        "spec": {
            "containers": [{"name": "app", "image": "registry.invalid/berth-bench:none",
                            "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": format!("claim-{i}")}}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "bench"}}}],
            "terminationGracePeriodSeconds": 0,
        },
    }))
    .expect("valid pod")
}

async fn run_one(args: &Args, plugin: PluginKind) -> anyhow::Result<Run> {
    let state_dir = args.state_dir.join(format!("{plugin:?}").to_lowercase());
    let _ = cluster::down(&state_dir, true);
    let cfg = ClusterConfig {
        ports: Ports::from_base(args.port_base),
        nodes: config::build_nodes(args.nodes, &[], &[])?,
        plugin,
        topology_labels: vec![ZONE_LABEL.to_string()],
        // Local volumes only, so both peers run the same processes on the same two cores.
        shared_pools: vec![],
        capacity_poll_seconds: 5,
        pool_sizes: BTreeMap::new(),
        pool_fs: "btrfs".into(),
        nolinks_pool: false,
        state_dir: state_dir.clone(),
    };
    let opts = UpOptions {
        berth_csi: args.csi_binary.clone(),
        timeout: Duration::from_secs(180),
    };
    let outcome = async {
        cluster::up(&cfg, &opts).await?;
        let c = TestCluster {
            cfg: cfg.clone(),
            client: cluster::client(&cfg.kubeconfig()).await?,
        };
        c.fresh_namespace("bench").await?;
        measure(args, &c, plugin).await
    }
    .await;
    if !args.keep {
        cluster::down(&state_dir, true)?;
    }
    outcome
}

async fn measure(args: &Args, c: &TestCluster, plugin: PluginKind) -> anyhow::Result<Run> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "bench");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "bench");
    let class = local_class(&c.cfg);
    let start = Instant::now();
    let mut created = BTreeMap::new();
    for i in 0..args.pvcs {
        let name = format!("claim-{i}");
        claims
            .create(
                &PostParams::default(),
                &pvc(&name, class, "16Mi", "ReadWriteOnce", None),
            )
            .await?;
        created.insert(name, start.elapsed());
        pods.create(&PostParams::default(), &bench_pod(i)).await?;
    }
    let mut bound: BTreeMap<String, f64> = BTreeMap::new();
    let deadline = start + Duration::from_secs(args.timeout_seconds);
    while bound.len() < args.pvcs {
        if Instant::now() > deadline {
            anyhow::bail!(
                "{plugin:?}: only {} of {} claims Bound after {}s",
                bound.len(),
                args.pvcs,
                args.timeout_seconds
            );
        }
        let now = start.elapsed();
        for p in claims.list(&ListParams::default()).await?.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let is_bound = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            if is_bound && !bound.contains_key(&name) {
                let t0 = created.get(&name).copied().unwrap_or_default();
                bound.insert(name, (now - t0).as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = start.elapsed().as_secs_f64();
    let mut per_node = BTreeMap::new();
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    for pv in pvs.list(&ListParams::default()).await?.items {
        let node = pv
            .spec
            .and_then(|s| s.node_affinity)
            .and_then(|a| a.required)
            .and_then(|r| r.node_selector_terms.into_iter().next())
            .and_then(|t| t.match_expressions)
            .and_then(|e| {
                // The node key of either driver (topology.berth.dev/node, topology.hostpath.csi/node).
                e.into_iter()
                    .find(|e| e.key.ends_with("/node"))
                    .and_then(|e| e.values?.into_iter().next())
            })
            .unwrap_or_else(|| "?".into());
        *per_node.entry(node).or_insert(0) += 1;
    }
    Ok(Run {
        plugin,
        secs: bound.into_values().collect(),
        wall,
        per_node,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut results = Vec::new();
    for &plugin in &args.plugin {
        println!(
            "=== {plugin:?}: {} claims over {} nodes",
            args.pvcs, args.nodes
        );
        match run_one(&args, plugin).await {
            Ok(r) => {
                r.print();
                results.push(r);
            }
            // The peer may not be buildable here (its module must come from the Go module proxy).
            Err(e) if plugin == PluginKind::Hostpath => {
                println!("hostpath peer not measured: {e:#}");
            }
            Err(e) => return Err(e),
        }
    }
    println!("=== summary");
    for r in &results {
        r.print();
    }
    if let (Some(b), Some(h)) = (
        results.iter().find(|r| r.plugin == PluginKind::Berth),
        results.iter().find(|r| r.plugin == PluginKind::Hostpath),
    ) {
        println!(
            "berth/hostpath: wall {:.2}x, p50 {:.2}x (below 1 means Berth is faster)",
            b.wall / h.wall,
            b.p50() / h.p50()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 50.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
