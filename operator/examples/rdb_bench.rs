//! The ReplicatedDatabase benchmark: N databases of 3 members on the simulated nodes of the e2e cluster,
//! from apply until every member is Ready; the operator's peak resident memory; its API writes during a
//! steady-state window; and the failover time under `Promote` (primary node lost until `-rw` points at a
//! Ready new primary). Run through `scripts/rdb-bench.sh`, which brings up the cluster.
//!
//! Usage: rdb_bench --operator PATH [--databases 200] [--steady-seconds 300] [--after-seconds 5]
//! (kubeconfig from BERTH_KUBECONFIG)

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::json;

const NS: &str = "berth-rdb-bench";
const SYSTEM_NS: &str = "berth-rdb-bench-system";
const METRICS: &str = "127.0.0.1:27590";

struct Args {
    operator: String,
    databases: usize,
    steady_seconds: u64,
    after_seconds: i32,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        operator: String::new(),
        databases: 200,
        steady_seconds: 300,
        after_seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--operator" => a.operator = value,
            "--databases" => a.databases = value.parse()?,
            "--steady-seconds" => a.steady_seconds = value.parse()?,
            "--after-seconds" => a.after_seconds = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.operator.is_empty() {
        bail!("--operator PATH is required");
    }
    Ok(a)
}

struct Operator(Child);

/// Asks the kernel to send SIGTERM to the child when the benchmark process goes away.
trait PdeathsigExt {
    fn pre_exec_pdeathsig(&mut self) -> &mut Self;
}

impl PdeathsigExt for Command {
    fn pre_exec_pdeathsig(&mut self) -> &mut Self {
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            self.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            })
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The operator's API writes by kind, from its /metrics.
async fn writes() -> anyhow::Result<BTreeMap<String, u64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(METRICS).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| l.starts_with("berth_rdb_api_writes_total{"))
    {
        let kind = line
            .split("kind=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let verb = line
            .split("verb=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n: f64 = line
            .rsplit(' ')
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0.0);
        *out.entry(format!("{verb} {kind}")).or_default() += n as u64;
    }
    Ok(out)
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait<F, Fut>(what: &str, timeout: Duration, mut ok: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    while !ok().await? {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let kc_path = std::env::var("BERTH_KUBECONFIG").context("BERTH_KUBECONFIG")?;
    let kc = Kubeconfig::read_from(&kc_path)?;
    let client =
        Client::try_from(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)?;

    // CRDs and namespaces.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for entry in std::fs::read_dir(dir)? {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(entry?.path())?)?;
        let mut body = serde_json::to_value(&crd)?;
        body["apiVersion"] = json!("apiextensions.k8s.io/v1");
        body["kind"] = json!("CustomResourceDefinition");
        crds.patch(
            crd.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::apply("berth-bench").force(),
            &Patch::Apply(body),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // A previous run's databases go first (the namespace controller deletes everything in them).
    for ns in [NS, SYSTEM_NS] {
        if namespaces.get_opt(ns).await?.is_some() {
            let _ = namespaces.delete(ns, &Default::default()).await;
            wait(
                "the previous run's namespace gone",
                Duration::from_secs(300),
                || async { Ok(namespaces.get_opt(ns).await?.is_none()) },
            )
            .await?;
        }
    }
    for ns in [NS, SYSTEM_NS] {
        namespaces
            .patch(
                ns,
                &PatchParams::apply("berth-bench"),
                &Patch::Apply(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                ),
            )
            .await?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let node_count = nodes.list(&ListParams::default()).await?.items.len();

    let operator = Operator(
        Command::new(&a.operator)
            .args(["controller", "--lease-name", "berth-rdb-bench"])
            .env("KUBECONFIG", &kc_path)
            .env("POD_NAMESPACE", SYSTEM_NS)
            .env("POD_NAME", "bench")
            .env("BERTH_METRICS_ADDR", METRICS)
            .env("RUST_LOG", "warn")
            // Stopped with the benchmark also when it is killed (Drop does not run then).
            .pre_exec_pdeathsig()
            .spawn()
            .context("starting the operator")?,
    );
    let pid = operator.0.id();

    // Apply N databases and wait until every member is Ready.
    let rdbs: Api<berth_operator::api::replicated_database::ReplicatedDatabase> =
        Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    for i in 0..a.databases {
        let rdb = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ReplicatedDatabase",
            "metadata": {"name": format!("db-{i}")},
            "spec": {
                "template": {"metadata": {"labels": {"bench": format!("db-{i}")}}, "spec": {
                    "containers": [{"name": "db", "image": "berth.dev/fake-db:1", "ports": [{"containerPort": 5432}]}],
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"bench": format!("db-{i}")}}, "topologyKey": "kubernetes.io/hostname"}]}}}},
                "replicas": {"count": 3},
                "failover": {"policy": "Promote", "afterSeconds": a.after_seconds},
                "engine": {"generic": {}},
            },
        }))?;
        rdbs.create(&PostParams::default(), &rdb).await?;
    }
    let want = a.databases * 3;
    wait("every member Ready", Duration::from_secs(900), || async {
        let ready = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| is_ready(p))
            .count();
        let all = rdbs.list(&ListParams::default()).await?.items;
        let status_ready = all
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.ready_members == 3))
            .count();
        Ok(ready == want && status_ready == a.databases)
    })
    .await?;
    let took = start.elapsed();
    println!(
        "RESULT apply-to-ready: {} databases x 3 members on {node_count} nodes Ready in {:.1} s (target < 60 s)",
        a.databases,
        took.as_secs_f64()
    );

    // Steady state: API writes while nothing changes.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = writes().await?;
    tokio::time::sleep(Duration::from_secs(a.steady_seconds)).await;
    let after = writes().await?;
    let mut delta: BTreeMap<String, u64> = BTreeMap::new();
    for (k, v) in &after {
        let d = v - before.get(k).copied().unwrap_or(0);
        if d > 0 {
            delta.insert(k.clone(), d);
        }
    }
    let rdb_writes: u64 = delta
        .iter()
        .filter(|(k, _)| !k.ends_with(" Lease"))
        .map(|(_, v)| v)
        .sum();
    let lease_writes: u64 = delta
        .iter()
        .filter(|(k, _)| k.ends_with(" Lease"))
        .map(|(_, v)| v)
        .sum();
    println!(
        "RESULT steady-state writes over {} s: {rdb_writes} for databases (target 0) {delta:?}; \
         {lease_writes} Lease renewals (leader election)",
        a.steady_seconds
    );
    let rss = peak_rss_kib(pid).unwrap_or(0);
    println!(
        "RESULT operator peak RSS: {:.1} MiB (target < 64 MiB)",
        rss as f64 / 1024.0
    );

    // Failover: lose the node of db-0's primary.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let rw = || async {
        let lp = ListParams::default().labels("kubernetes.io/service-name=db-0-rw");
        let mut names = BTreeSet::new();
        for s in slices.list(&lp).await?.items {
            for e in s.endpoints.into_iter().flatten() {
                if e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false)
                    && let Some(t) = e.target_ref
                {
                    names.insert(t.name.unwrap_or_default());
                }
            }
        }
        anyhow::Ok(names)
    };
    let primary = pods
        .list(
            &ListParams::default()
                .labels("berth.dev/replicated-database=db-0,berth.dev/role=primary"),
        )
        .await?
        .items
        .into_iter()
        .next()
        .context("db-0 has no primary")?;
    let lost = primary
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .context("primary not scheduled")?;
    let old = primary.name_any();
    nodes
        .patch(
            &lost,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"kwok.x-k8s.io/node": null}}})),
        )
        .await?;
    let mut n = nodes.get_status(&lost).await?;
    if let Some(cs) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
        for c in cs.iter_mut().filter(|c| c.type_ == "Ready") {
            c.status = "Unknown".into();
        }
    }
    let lost_at = Instant::now();
    nodes
        .replace_status(&lost, &PostParams::default(), &n)
        .await?;
    wait(
        "-rw on a new Ready primary",
        Duration::from_secs(300),
        || async {
            let eps = rw().await?;
            Ok(eps.len() == 1 && !eps.contains(&old))
        },
    )
    .await?;
    let failover = lost_at.elapsed();
    println!(
        "RESULT failover (Promote, afterSeconds {}): node {lost} lost -> db-0-rw on a Ready new primary in {:.1} s \
         (target {} s)",
        a.after_seconds,
        failover.as_secs_f64(),
        a.after_seconds + 5
    );
    nodes
        .patch(
            &lost,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"kwok.x-k8s.io/node": "fake"}}})),
        )
        .await?;
    drop(operator);
    Ok(())
}
