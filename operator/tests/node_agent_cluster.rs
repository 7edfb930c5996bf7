//! The node agent as it runs in a cluster: ImageCachePolicy and RegistryMirror objects reach it through a
//! real kube-apiserver (the e2e harness's), it acts on its own containerd (one per simulated node), and
//! its results come back as status, per-node reports and Events. Also proves the CRDs' validation rules
//! are accepted and enforced by the real API server.
//!
//! Needs `BERTH_NA_KUBECONFIG` (the stage script brings the harness up and sets it); skipped, saying why,
//! without it.

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use berth_operator::api::image_cache_policy::{ImageCachePolicy, ImageCacheReport};
use berth_operator::api::registry_mirror::RegistryMirror;
use berth_operator::cri::CriClient;
use common::{install_crds, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Containerd, Images, Registry};

const BASE: &str = "berth.test/img";
const PAUSE: &str = "berth.test/img:pause";

fn kubeconfig() -> Option<PathBuf> {
    std::env::var_os("BERTH_NA_KUBECONFIG")
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

/// The harness's kubeconfig, or `None` (after saying why the test is skipped).
fn cluster_or_skip() -> Option<PathBuf> {
    if let Some(why) = support::skip_reason() {
        if std::env::var_os("BERTH_REQUIRE_REAL").is_some() {
            panic!("real-component test cannot run: {why}");
        }
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let found = kubeconfig();
    if found.is_none() {
        if std::env::var_os("BERTH_REQUIRE_CLUSTER").is_some() {
            panic!("BERTH_NA_KUBECONFIG is not set to a kubeconfig");
        }
        eprintln!(
            "SKIPPED: BERTH_NA_KUBECONFIG is not set (scripts/test.d/30-node-agent.sh brings the e2e harness up and sets it)"
        );
    }
    found
}

/// The agent binary for one simulated node, killed by PID on drop.
struct Agent(Child);

impl Agent {
    fn start(kubeconfig: &Path, node: &str, ctd: &Containerd, state: &Path, log: &Path) -> Self {
        Self::start_with(kubeconfig, node, ctd, state, log, &[])
    }

    fn start_with(
        kubeconfig: &Path,
        node: &str,
        ctd: &Containerd,
        state: &Path,
        log: &Path,
        extra: &[&str],
    ) -> Self {
        let f = std::fs::File::create(log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_berth-operator"))
            .arg("node-agent")
            .args(extra)
            .args(["--node-name", node])
            .arg("--cri-socket")
            .arg(&ctd.socket)
            .arg("--state-dir")
            .arg(state)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,berth_operator=debug")
            .stdout(f.try_clone().expect("log"))
            .stderr(f)
            .spawn()
            .expect("start agent");
        std::fs::write(ctd.dir.join("agent.pid"), child.id().to_string()).expect("pid");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// Whether an Event with this reason regards the named object.
async fn has_event(
    events: &Api<k8s_openapi::api::events::v1::Event>,
    reason: &str,
    name: &str,
) -> bool {
    events.list(&ListParams::default()).await.is_ok_and(|l| {
        l.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
    })
}

async fn create_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = nodes.delete(name, &DeleteParams::default()).await;
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "labels": { "berth.test/agent": "yes" } },
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

/// The node the agent serves: the harness's simulated (kwok) node named by `BERTH_NA_SIMULATED_NODE`,
/// labelled for the test, or else a Node object created for it.
async fn test_node(client: &Client, prefix: &str) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    match std::env::var("BERTH_NA_SIMULATED_NODE") {
        Ok(name) if !name.is_empty() => {
            let patch = json!({"metadata": {"labels": {"berth.test/agent": "yes"}}});
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("label the simulated node");
            name
        }
        _ => {
            let name = unique(prefix);
            create_node(client, &name).await;
            name
        }
    }
}

/// Undoes `test_node`: removes the label from the simulated node, or deletes the created node.
async fn release_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    if std::env::var("BERTH_NA_SIMULATED_NODE").is_ok_and(|n| n == name) {
        let patch = json!({"metadata": {"labels": {"berth.test/agent": null}}});
        let _ = nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    } else {
        let _ = nodes.delete(name, &DeleteParams::default()).await;
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_validation_refuses_bad_objects_naming_the_field() {
    let Some(kubeconfig) = cluster_or_skip() else {
        return;
    };
    let client = common::client(&kubeconfig.to_string_lossy()).await;
    install_crds(&client).await;
    let policies: Api<ImageCachePolicy> = Api::all(client.clone());
    let mirrors: Api<RegistryMirror> = Api::all(client.clone());
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"interval": "7d"}),
            "spec.interval must be a duration",
        ),
        (
            json!({"interval": "30s"}),
            "spec.interval must be a duration of at least 1m",
        ),
        (
            json!({"diskPressure": {"highPercent": 50, "lowPercent": 60}}),
            "spec.diskPressure.lowPercent must be below spec.diskPressure.highPercent",
        ),
        (
            json!({"prune": {"unusedFor": "a week"}}),
            "spec.prune.unusedFor must be a duration",
        ),
        (
            json!({"prune": {"keepLatestPerRepository": 0}}),
            "spec.prune.keepLatestPerRepository must be between 1 and 1000",
        ),
        (
            json!({"keep": ["no spaces allowed"]}),
            "spec.keep entries must be image reference patterns",
        ),
        (
            json!({"nodeSelector": {"bad key!": "x"}}),
            "spec.nodeSelector must map label keys to label values",
        ),
    ];
    for (spec, want) in cases {
        let obj: ImageCachePolicy = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ImageCachePolicy", "metadata": {"name": "bad"}, "spec": spec,
        }))
        .expect("object");
        let err = policies
            .create(&PostParams::default(), &obj)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(want), "{spec}: {err}");
    }
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"registry": "bad/host"}),
            "spec.registry must be a registry host",
        ),
        (
            json!({"registry": "docker.io", "mirrors": [{"url": "ftp://x"}]}),
            "spec.mirrors[].url must be an http:// or https:// URL",
        ),
        (
            json!({"registry": "docker.io", "mirrors": [{"url": "http://x", "skipVerify": true}]}),
            "skipVerify needs an https:// url",
        ),
        (
            json!({"registry": "docker.io", "mirrors": [{"url": "https://x", "capabilities": ["fly"]}]}),
            "capabilities entries must be pull, resolve or push",
        ),
    ];
    for (spec, want) in cases {
        let obj: RegistryMirror = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "RegistryMirror", "metadata": {"name": "bad"}, "spec": spec,
        }))
        .expect("object");
        let err = mirrors
            .create(&PostParams::default(), &obj)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(want), "{spec}: {err}");
    }
    // A good one is accepted, and its registry cannot be changed afterwards.
    let name = unique("immutable");
    let obj: RegistryMirror = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "RegistryMirror", "metadata": {"name": name},
        "spec": {"registry": "docker.io", "mirrors": [{"url": "http://127.0.0.1:1"}], "nodeSelector": {"berth.test/none": "x"}},
    }))
    .expect("object");
    mirrors
        .create(&PostParams::default(), &obj)
        .await
        .expect("valid RegistryMirror accepted");
    let err = mirrors
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"registry": "quay.io"}})),
        )
        .await
        .expect_err("registry change refused");
    assert!(
        err.to_string().contains("spec.registry is immutable"),
        "{err}"
    );
    mirrors
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reaches_the_agent_dry_run_reports_then_prune_keeps_images_of_pods_bound_to_the_node()
 {
    let Some(kubeconfig) = cluster_or_skip() else {
        return;
    };
    let client = common::client(&kubeconfig.to_string_lossy()).await;
    install_crds(&client).await;
    let tmp = support::scratch("cluster-gc");
    let images = Images::build(
        tmp.path(),
        &["pause", "old-1", "old-2", "pending-pod", "keep-1"],
    );
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    ctd.import(&images.archive(tmp.path()), BASE);
    let node = test_node(&client, "berth-na-gc").await;

    // A Pod bound to the node that has not started (no kubelet; kwok may only pretend it runs): its
    // image must survive.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod_name = unique("waiting");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": format!("{BASE}:pending-pod")}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    let state = tmp.path().join("agent");
    // Every image looks two hours old to the agent: its record says it first saw them then.
    let two_hours_ago = berth_operator::node_agent::cli::now() - 7200;
    let cri = CriClient::connect(&ctd.socket).await.expect("cri");
    let mut record = berth_operator::node_agent::usage::UsageRecord::default();
    for img in cri.list_images().await.expect("images") {
        record.images.insert(
            img.id,
            berth_operator::node_agent::usage::UsageEntry {
                first_seen: two_hours_ago,
                last_used: None,
            },
        );
    }
    berth_operator::node_agent::usage::UsageStore::new(state.join("image-usage.json"))
        .save(&record)
        .expect("seed record");
    let metrics_addr = format!("127.0.0.1:{}", support::free_port());
    let _agent = Agent::start_with(
        &kubeconfig,
        &node,
        &ctd,
        &state,
        &tmp.path().join("agent.log"),
        &["--metrics-addr", &metrics_addr],
    );

    let policy_name = unique("prune");
    let policies: Api<ImageCachePolicy> = Api::all(client.clone());
    let policy: ImageCachePolicy = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ImageCachePolicy", "metadata": {"name": policy_name},
        "spec": {
            "nodeSelector": {"berth.test/agent": "yes"},
            "dryRun": true,
            "prune": {"dangling": true, "unusedFor": "1h"},
            "keep": [format!("{BASE}:keep-*")],
        },
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");

    // Dry-run: the node's report shows what containerd holds and what would go; nothing is removed.
    let reports: Api<ImageCacheReport> = Api::all(client.clone());
    let report_name = format!("{policy_name}.{node}");
    let names_before = ctd.image_names();
    wait_for("the dry-run report", Duration::from_secs(60), || async {
        reports
            .get_opt(&report_name)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.status)
            .and_then(|s| s.last_run)
            .is_some()
    })
    .await;
    let r = reports
        .get(&report_name)
        .await
        .expect("report")
        .status
        .expect("status");
    assert_eq!(r.images, 5, "{r:?}");
    assert_eq!(
        r.in_use, 1,
        "the pending Pod's image counts as in use: {r:?}"
    );
    let last = r.last_run.clone().expect("last run");
    assert!(
        last.dry_run && last.removed == 0 && last.planned == 2,
        "{last:?}"
    );
    let planned: BTreeSet<String> = last.images.iter().map(|i| i.image.clone()).collect();
    assert_eq!(
        planned,
        [format!("{BASE}:old-1"), format!("{BASE}:old-2")]
            .into_iter()
            .collect()
    );
    assert_eq!(ctd.image_names(), names_before, "dry-run removed nothing");
    wait_for("the policy's totals", Duration::from_secs(30), || async {
        policies
            .get(&policy_name)
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| s.nodes == 1 && s.images == 5)
    })
    .await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(client.clone());
    wait_for(
        "a DryRun Event on the policy",
        Duration::from_secs(30),
        || async { has_event(&events, "DryRun", &policy_name).await },
    )
    .await;

    // Prune for real: exactly old-1 and old-2 go; the pending Pod's image, the pause image and the keep
    // match stay.
    policies
        .patch(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dryRun": false}})),
        )
        .await
        .expect("turn off dry-run");
    wait_for("the pruning run", Duration::from_secs(60), || async {
        reports
            .get_opt(&report_name)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.status)
            .and_then(|s| s.last_run)
            .is_some_and(|l| !l.dry_run)
    })
    .await;
    let last = reports
        .get(&report_name)
        .await
        .expect("report")
        .status
        .and_then(|s| s.last_run)
        .expect("last run");
    assert_eq!((last.removed, last.planned), (2, 2), "{last:?}");
    let after: BTreeSet<String> = ctd.image_names().into_iter().collect();
    let want: BTreeSet<String> = ["pause", "pending-pod", "keep-1"]
        .iter()
        .map(|t| format!("{BASE}:{t}"))
        .collect();
    assert_eq!(after, want);
    wait_for(
        "an ImagesRemoved Event",
        Duration::from_secs(30),
        || async { has_event(&events, "ImagesRemoved", &policy_name).await },
    )
    .await;
    wait_for(
        "the policy's totals after pruning",
        Duration::from_secs(30),
        || async {
            policies
                .get(&policy_name)
                .await
                .ok()
                .and_then(|p| p.status)
                .is_some_and(|s| s.last_run_removed == 2 && s.images == 5)
        },
    )
    .await;

    // The agent's /metrics says the same.
    let metrics = http_get(&metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("berth_node_agent_images_removed_total{reason=\"unusedFor\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "berth_node_agent_images{{policy=\"{policy_name}\"}} 5"
        )),
        "{metrics}"
    );
    assert!(http_get(&metrics_addr, "/healthz").await.ends_with("ok\n"));

    pods.delete(&pod_name, &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("delete policy");
    release_node(&client, &node).await;
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the agent's metrics port");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    body
}

fn pulls_of(registry: &Registry, path: &str) -> usize {
    registry
        .log_text()
        .lines()
        .filter(|l| (l.contains("\"GET ") || l.contains("\"HEAD ")) && l.contains(path))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_mirror_reaches_the_agent_edit_applies_live_delete_restores() {
    let Some(kubeconfig) = cluster_or_skip() else {
        return;
    };
    let client = common::client(&kubeconfig.to_string_lossy()).await;
    install_crds(&client).await;
    let tmp = support::scratch("cluster-mirror");
    let images = Images::build(tmp.path(), &["v1", "v2"]);
    let reg_a = Registry::start(tmp.path(), "registry-a");
    let reg_b = Registry::start(tmp.path(), "registry-b");
    reg_a.push(&images.layout, "v1", "team/app", "v1");
    reg_b.push(&images.layout, "v2", "team/app", "v2");
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    let cri = CriClient::connect(&ctd.socket).await.expect("cri");
    let node = test_node(&client, "berth-na-mirror").await;
    let agent = Agent::start(
        &kubeconfig,
        &node,
        &ctd,
        &tmp.path().join("agent"),
        &tmp.path().join("agent.log"),
    );

    let mirrors: Api<RegistryMirror> = Api::all(client.clone());
    let name = unique("example");
    let hosts = ctd
        .certs_d
        .clone()
        .expect("config_path")
        .join("registry.example.test/hosts.toml");
    let obj: RegistryMirror = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "RegistryMirror", "metadata": {"name": name},
        "spec": {"registry": "registry.example.test", "mirrors": [{"url": format!("http://{}", reg_a.addr)}]},
    }))
    .expect("mirror");
    mirrors
        .create(&PostParams::default(), &obj)
        .await
        .expect("create mirror");
    let entry_state = |m: &RegistryMirror| {
        m.status.as_ref().and_then(|s| {
            s.nodes
                .iter()
                .find(|n| n.node == node)
                .map(|n| (n.state.clone(), n.observed_generation))
        })
    };
    wait_for(
        "this node's Applied entry",
        Duration::from_secs(60),
        || async {
            mirrors
                .get(&name)
                .await
                .ok()
                .and_then(|m| entry_state(&m))
                .is_some_and(|(s, _)| s == "Applied")
        },
    )
    .await;
    assert!(hosts.exists());
    let m = mirrors.get(&name).await.expect("get");
    assert_eq!(
        m.status.as_ref().and_then(|s| s.nodes_applied),
        Some(1),
        "{:?}",
        m.status
    );
    cri.pull_image("registry.example.test/team/app:v1")
        .await
        .expect("pull through mirror A");
    assert!(
        pulls_of(&reg_a, "/v2/team/app/manifests/v1") >= 1,
        "served by registry A"
    );

    // Edit: point at registry B; the agent rewrites hosts.toml and the next pull goes there.
    let edited = mirrors
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"mirrors": [{"url": format!("http://{}", reg_b.addr)}]}}),
            ),
        )
        .await
        .expect("edit");
    let generation = edited.metadata.generation;
    wait_for("the edit applied", Duration::from_secs(60), || async {
        mirrors
            .get(&name)
            .await
            .ok()
            .and_then(|m| entry_state(&m))
            .is_some_and(|(s, g)| s == "Applied" && g == generation)
    })
    .await;
    cri.pull_image("registry.example.test/team/app:v2")
        .await
        .expect("pull through mirror B");
    assert!(
        pulls_of(&reg_b, "/v2/team/app/manifests/v2") >= 1,
        "served by registry B"
    );
    assert_eq!(pulls_of(&reg_a, "/v2/team/app/manifests/v2"), 0);

    // Delete: the file goes, and the pull fails again.
    mirrors
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("hosts.toml removed", Duration::from_secs(60), || async {
        !hosts.exists()
    })
    .await;
    cri.remove_image("registry.example.test/team/app:v2")
        .await
        .expect("forget image");
    assert!(
        cri.pull_image("registry.example.test/team/app:v2")
            .await
            .is_err(),
        "no mirror: the pull fails"
    );

    // A foreign hosts.toml: the node reports a conflict with the path, and the file is untouched.
    let foreign = ctd
        .certs_d
        .clone()
        .expect("config_path")
        .join("docker.io/hosts.toml");
    std::fs::create_dir_all(foreign.parent().expect("dir")).expect("mkdir");
    std::fs::write(&foreign, "server = \"https://mine.example\"\n").expect("write");
    let hub = unique("hub");
    let obj: RegistryMirror = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "RegistryMirror", "metadata": {"name": hub},
        "spec": {"registry": "docker.io", "mirrors": [{"url": format!("http://{}", reg_a.addr)}]},
    }))
    .expect("mirror");
    mirrors
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    wait_for("a Conflict entry", Duration::from_secs(60), || async {
        mirrors
            .get(&hub)
            .await
            .ok()
            .and_then(|m| entry_state(&m))
            .is_some_and(|(s, _)| s == "Conflict")
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&foreign).expect("read"),
        "server = \"https://mine.example\"\n"
    );
    let m = mirrors.get(&hub).await.expect("get");
    assert_eq!(
        m.status.as_ref().and_then(|s| s.nodes_with_problems),
        Some(1),
        "{:?}",
        m.status
    );
    mirrors
        .delete(&hub, &DeleteParams::default())
        .await
        .expect("delete");

    // A RegistryMirror deleted while the agent is down: the restarted agent removes its file.
    let late = unique("late");
    let obj: RegistryMirror = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "RegistryMirror", "metadata": {"name": late},
        "spec": {"registry": "late.example.test", "mirrors": [{"url": format!("http://{}", reg_a.addr)}]},
    }))
    .expect("mirror");
    mirrors
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    let late_hosts = ctd
        .certs_d
        .clone()
        .expect("config_path")
        .join("late.example.test/hosts.toml");
    wait_for(
        "late hosts.toml written",
        Duration::from_secs(60),
        || async { late_hosts.exists() },
    )
    .await;
    drop(agent);
    mirrors
        .delete(&late, &DeleteParams::default())
        .await
        .expect("delete while the agent is down");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        late_hosts.exists(),
        "nobody removed it while the agent was down"
    );
    let _agent = Agent::start(
        &kubeconfig,
        &node,
        &ctd,
        &tmp.path().join("agent"),
        &tmp.path().join("agent-2.log"),
    );
    wait_for(
        "the restarted agent removes the orphaned hosts.toml",
        Duration::from_secs(60),
        || async { !late_hosts.exists() },
    )
    .await;
    assert!(foreign.exists(), "the foreign file is still untouched");
    release_node(&client, &node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_ca_comes_from_a_secret_and_a_missing_secret_is_reported() {
    let Some(kubeconfig) = cluster_or_skip() else {
        return;
    };
    let client = common::client(&kubeconfig.to_string_lossy()).await;
    install_crds(&client).await;
    let tmp = support::scratch("cluster-ca");
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    let node = test_node(&client, "berth-na-ca").await;
    let _agent = Agent::start(
        &kubeconfig,
        &node,
        &ctd,
        &tmp.path().join("agent"),
        &tmp.path().join("agent.log"),
    );

    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let secret_name = unique("mirror-ca");
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name},
        "stringData": {"ca.crt": pem},
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");

    let mirrors: Api<RegistryMirror> = Api::all(client.clone());
    let name = unique("with-ca");
    let obj: RegistryMirror = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "RegistryMirror", "metadata": {"name": name},
        "spec": {"registry": "ca.example.test", "mirrors": [
            {"url": "https://mirror.example.test", "caSecretRef": {"namespace": "default", "name": secret_name}},
            {"url": "https://other.example.test", "caSecretRef": {"namespace": "default", "name": "does-not-exist"}},
        ]},
    }))
    .expect("mirror");
    mirrors
        .create(&PostParams::default(), &obj)
        .await
        .expect("create mirror");
    let entry = |m: &RegistryMirror| {
        m.status
            .as_ref()
            .and_then(|s| s.nodes.iter().find(|n| n.node == node).cloned())
    };
    wait_for(
        "an Error entry naming the missing Secret",
        Duration::from_secs(60),
        || async {
            mirrors
                .get(&name)
                .await
                .ok()
                .and_then(|m| entry(&m))
                .is_some_and(|e| e.state == "Error")
        },
    )
    .await;
    let e = mirrors
        .get(&name)
        .await
        .ok()
        .and_then(|m| entry(&m))
        .expect("entry");
    let msg = e.message.unwrap_or_default();
    assert!(
        msg.contains("spec.mirrors[1].caSecretRef") && msg.contains("does-not-exist"),
        "{msg}"
    );
    let dir = ctd
        .certs_d
        .clone()
        .expect("config_path")
        .join("ca.example.test");
    assert!(!dir.join("hosts.toml").exists(), "nothing half-applied");

    // Fixed: only the mirror with a good CA remains; the CA lands beside hosts.toml and is referenced.
    mirrors
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mirrors": [
                {"url": "https://mirror.example.test", "caSecretRef": {"namespace": "default", "name": secret_name}},
            ]}})),
        )
        .await
        .expect("fix");
    wait_for(
        "the fixed mirror applied",
        Duration::from_secs(60),
        || async {
            mirrors
                .get(&name)
                .await
                .ok()
                .and_then(|m| entry(&m))
                .is_some_and(|e| e.state == "Applied")
        },
    )
    .await;
    let hosts = std::fs::read_to_string(dir.join("hosts.toml")).expect("hosts.toml");
    let ca = dir.join("berth-mirror-0-ca.crt");
    assert_eq!(std::fs::read_to_string(&ca).expect("ca file"), pem);
    assert!(
        hosts.contains(&format!("ca = \"{}\"", ca.display())),
        "{hosts}"
    );

    mirrors
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("files removed", Duration::from_secs(60), || async {
        !dir.exists()
    })
    .await;
    secrets
        .delete(&secret_name, &DeleteParams::default())
        .await
        .expect("delete secret");
    release_node(&client, &node).await;
}
