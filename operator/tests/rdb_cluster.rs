//! ReplicatedDatabase scenarios 8-13 (../shared/SCENARIOS.md) in the e2e cluster: a real control plane,
//! simulated kwok nodes whose Pods become Ready, the real CSI sidecars provisioning `berth-local` volumes,
//! and the `berth-operator controller` binary. Node loss is simulated by taking a node away from kwok
//! (no more heartbeats) and marking it NotReady, as the node lifecycle controller would.
//!
//! Needs `BERTH_KUBECONFIG` (scripts/test.d/20-operator.sh brings up the cluster and sets it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_operator::api::replicated_database::{LABEL_NAME, LABEL_ROLE, ReplicatedDatabase};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use common::wait_for;

const NS: &str = "berth-rdb-e2e";
const SYSTEM_NS: &str = "berth-rdb-e2e-system";
const T: Duration = Duration::from_secs(120);

/// The operator as a child process, killed when the test ends (also on panic).
struct Operator(Child);

impl Operator {
    fn start(kubeconfig: &str, metrics_port: u16) -> Operator {
        let log =
            std::fs::File::create(std::env::temp_dir().join("berth-operator-rdb-e2e.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth-operator"))
            .args([
                "controller",
                "--lease-name",
                "berth-rdb-e2e",
                "--lease-seconds",
                "6",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", SYSTEM_NS)
            .env("POD_NAME", "berth-operator-e2e")
            .env("BERTH_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "info,kube=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting berth-operator");
        Operator(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rdb(name: &str, spec: serde_json::Value) -> ReplicatedDatabase {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "ReplicatedDatabase",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .unwrap()
}

/// A database spec on simulated nodes: a container kwok "runs", one `berth-local` volume per member.
fn spec(replicas: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({
        "template": {"spec": {
            "containers": [{"name": "db", "image": "berth.dev/fake-db:1", "ports": [{"name": "db", "containerPort": 5432}]}],
        }},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": "berth-local",
            "resources": {"requests": {"storage": "16Mi"}}}}],
        "replicas": replicas,
        "engine": {"generic": {}},
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

struct Cluster {
    client: Client,
    pods: Api<Pod>,
    pvcs: Api<PersistentVolumeClaim>,
    rdbs: Api<ReplicatedDatabase>,
    nodes: Api<Node>,
    slices: Api<EndpointSlice>,
}

impl Cluster {
    async fn members(&self, name: &str) -> Vec<Pod> {
        self.pods
            .list(&ListParams::default().labels(&format!("{LABEL_NAME}={name}")))
            .await
            .unwrap()
            .items
    }

    /// Member Pods by name: (role, node, ready).
    async fn member_states(&self, name: &str) -> BTreeMap<String, (String, String, bool)> {
        self.members(name)
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let role = p.labels().get(LABEL_ROLE).cloned().unwrap_or_default();
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                (p.name_any(), (role, node, ready))
            })
            .collect()
    }

    /// Pods behind a Service's ready endpoints.
    async fn endpoints(&self, service: &str) -> BTreeSet<String> {
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        let mut pods = BTreeSet::new();
        for s in self.slices.list(&lp).await.unwrap().items {
            for e in s.endpoints.into_iter().flatten() {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                if let (true, Some(t)) = (ready, e.target_ref.as_ref()) {
                    pods.insert(t.name.clone().unwrap_or_default());
                }
            }
        }
        pods
    }

    async fn pvc_uid(&self, name: &str) -> Option<String> {
        self.pvcs
            .get_opt(name)
            .await
            .unwrap()
            .and_then(|p| p.metadata.uid)
    }

    async fn status(&self, name: &str) -> serde_json::Value {
        serde_json::to_value(self.rdbs.get(name).await.unwrap().status).unwrap()
    }

    async fn label_node(&self, node: &str, key: &str, value: Option<&str>) {
        let patch = json!({"metadata": {"labels": {key: value}}});
        self.nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Takes a node away from kwok and marks it NotReady (what the node lifecycle controller does when
    /// heartbeats stop), or gives it back.
    async fn set_node_lost(&self, node: &str, lost: bool) {
        let annotation = if lost { json!(null) } else { json!("fake") };
        let patch = json!({"metadata": {"annotations": {"kwok.x-k8s.io/node": annotation}}});
        self.nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        if lost {
            let mut n = self.nodes.get_status(node).await.unwrap();
            if let Some(cs) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                for c in cs.iter_mut().filter(|c| c.type_ == "Ready") {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                }
            }
            self.nodes
                .replace_status(node, &PostParams::default(), &n)
                .await
                .unwrap();
        }
    }

    async fn events(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), NS);
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        events
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }
}

fn primaries(states: &BTreeMap<String, (String, String, bool)>) -> Vec<String> {
    states
        .iter()
        .filter(|(_, (r, _, _))| r == "primary")
        .map(|(n, _)| n.clone())
        .collect()
}

#[tokio::test]
async fn replicated_database_scenarios() {
    let Some(kc) = common::kubeconfig() else {
        return;
    };
    let client = common::client(&kc).await;
    common::install_crds(&client).await;
    common::fresh_namespace(&client, SYSTEM_NS).await;
    common::fresh_namespace(&client, NS).await;
    let c = Cluster {
        client: client.clone(),
        pods: Api::namespaced(client.clone(), NS),
        pvcs: Api::namespaced(client.clone(), NS),
        rdbs: Api::namespaced(client.clone(), NS),
        nodes: Api::all(client.clone()),
        slices: Api::namespaced(client.clone(), NS),
    };
    let mut nodes: Vec<String> = c
        .nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|n| {
            n.annotations()
                .get("kwok.x-k8s.io/node")
                .is_some_and(|v| v == "fake")
        })
        .map(|n| n.name_any())
        .collect();
    nodes.sort();
    assert!(
        nodes.len() >= 4,
        "the scenarios need 4 simulated nodes, found {nodes:?}"
    );
    let _operator = Operator::start(&kc, 18000 + (std::process::id() % 1000) as u16);

    pinned_primary_and_labelled_replicas(&c, &nodes).await;
    scale_down_and_up_keeps_volumes_and_replica_recreated(&c).await;
    switchover_by_spec(&c).await;
    primary_node_loss(&c, &nodes).await;
    common::delete_namespace(&client, NS).await;
}

/// Scenarios 8 and 9: pinned primary, one replica per labelled node, scale by labelling.
async fn pinned_primary_and_labelled_replicas(c: &Cluster, nodes: &[String]) {
    eprintln!("scenario 8: pinned primary, labelled replicas");
    let (a, b, cc, d) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    c.label_node(a, "db", Some("primary")).await;
    c.label_node(b, "db", Some("replica")).await;
    c.label_node(cc, "db", Some("replica")).await;
    let s = spec(
        json!({"perMatchingNode": {"nodeSelector": {"db": "replica"}}}),
        json!({"primary": {"nodeSelector": {"db": "primary"}}}),
    );
    c.rdbs
        .create(&PostParams::default(), &rdb("pinned", s))
        .await
        .unwrap();
    wait_for("3 Ready members", T, || async {
        let st = c.member_states("pinned").await;
        st.len() == 3 && st.values().all(|(_, _, r)| *r)
    })
    .await;
    let st = c.member_states("pinned").await;
    assert_eq!(st["pinned-0"].0, "primary");
    assert_eq!(
        &st["pinned-0"].1, a,
        "the primary runs on the node labelled db=primary"
    );
    let replica_nodes: BTreeSet<&String> = st
        .values()
        .filter(|(r, _, _)| r == "replica")
        .map(|(_, n, _)| n)
        .collect();
    assert_eq!(
        replica_nodes,
        [b, cc].into_iter().collect(),
        "one replica on each db=replica node"
    );
    for pod in st.keys() {
        let pvc = format!("data-{pod}");
        assert!(c.pvc_uid(&pvc).await.is_some(), "{pvc} exists");
    }
    wait_for("-rw has the primary, -ro the replicas", T, || async {
        c.endpoints("pinned-rw").await == ["pinned-0".to_string()].into()
            && c.endpoints("pinned-ro").await.len() == 2
    })
    .await;
    // Status is written by the reconcile after the one that made the members Ready: wait for it.
    wait_for("status: primary pinned-0, 3 Ready members", T, || async {
        let status = c.status("pinned").await;
        status["primary"]["pod"] == "pinned-0" && status["readyMembers"] == 3
    })
    .await;

    eprintln!("scenario 9: scale by labelling nodes");
    c.label_node(d, "db", Some("replica")).await;
    wait_for("a replica on the newly labelled node", T, || async {
        let st = c.member_states("pinned").await;
        st.values()
            .any(|(r, n, ready)| r == "replica" && n == d && *ready)
    })
    .await;
    wait_for("it joins -ro", T, || async {
        c.endpoints("pinned-ro").await.len() == 3
    })
    .await;
    let st = c.member_states("pinned").await;
    let (b_pod, _) = st.iter().find(|(_, (_, n, _))| n == b).unwrap();
    let b_pod = b_pod.clone();
    let b_pvc_uid = c.pvc_uid(&format!("data-{b_pod}")).await.unwrap();
    c.label_node(b, "db", None).await;
    wait_for(
        "the replica of the unlabelled node is retired",
        T,
        || async { !c.member_states("pinned").await.contains_key(&b_pod) },
    )
    .await;
    assert_eq!(
        c.pvc_uid(&format!("data-{b_pod}")).await,
        Some(b_pvc_uid.clone()),
        "its PVC is retained"
    );
    c.label_node(b, "db", Some("replica")).await;
    wait_for(
        "the node labelled again gets its old member back",
        T,
        || async {
            c.member_states("pinned")
                .await
                .get(&b_pod)
                .is_some_and(|(_, n, r)| n == b && *r)
        },
    )
    .await;
    assert_eq!(
        c.pvc_uid(&format!("data-{b_pod}")).await,
        Some(b_pvc_uid),
        "with the same volume"
    );
    c.rdbs
        .delete("pinned", &DeleteParams::default())
        .await
        .unwrap();
    for n in [a, b, cc, d] {
        c.label_node(n, "db", None).await;
    }
}

/// Scenarios 10 and 11.
async fn scale_down_and_up_keeps_volumes_and_replica_recreated(c: &Cluster) {
    eprintln!("scenario 10: scale 4 -> 2 -> 4 keeps the volumes");
    c.rdbs
        .create(
            &PostParams::default(),
            &rdb("scaled", spec(json!({"count": 4}), json!({}))),
        )
        .await
        .unwrap();
    wait_for("4 Ready members", T, || async {
        let st = c.member_states("scaled").await;
        st.len() == 4 && st.values().all(|(_, _, r)| *r)
    })
    .await;
    let mut uids = BTreeMap::new();
    for o in 0..4 {
        uids.insert(o, c.pvc_uid(&format!("data-scaled-{o}")).await.unwrap());
    }
    let scale = |n: i32| async move {
        c.rdbs
            .patch_scale(
                "scaled",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await
            .unwrap();
    };
    scale(2).await;
    wait_for("members 2 and 3 gone", T, || async {
        c.member_states("scaled")
            .await
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            == ["scaled-0", "scaled-1"]
    })
    .await;
    for o in 2..4 {
        assert_eq!(
            c.pvc_uid(&format!("data-scaled-{o}")).await.as_ref(),
            Some(&uids[&o]),
            "PVC {o} retained"
        );
    }
    scale(4).await;
    wait_for("4 Ready members again", T, || async {
        let st = c.member_states("scaled").await;
        st.len() == 4 && st.values().all(|(_, _, r)| *r)
    })
    .await;
    for o in 0..4 {
        assert_eq!(
            c.pvc_uid(&format!("data-scaled-{o}")).await.as_ref(),
            Some(&uids[&o]),
            "PVC {o} re-attached"
        );
    }

    eprintln!("scenario 11: a replica Pod dies and comes back on its node with its volume");
    let before = c.member_states("scaled").await["scaled-2"].clone();
    let old_uid = c.pods.get("scaled-2").await.unwrap().metadata.uid;
    c.pods
        .delete("scaled-2", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_for("scaled-2 recreated and Ready", T, || async {
        let p = c.pods.get_opt("scaled-2").await.unwrap();
        p.as_ref().is_some_and(|p| p.metadata.uid != old_uid)
            && c.member_states("scaled")
                .await
                .get("scaled-2")
                .is_some_and(|(_, _, r)| *r)
    })
    .await;
    let after = c.member_states("scaled").await["scaled-2"].clone();
    assert_eq!(after.0, "replica");
    assert_eq!(after.1, before.1, "same node (its local volume is there)");
    assert_eq!(c.pvc_uid("data-scaled-2").await.as_ref(), Some(&uids[&2]));
}

/// Scenario 13 (on the database of scenario 10).
async fn switchover_by_spec(c: &Cluster) {
    eprintln!("scenario 13: switchover by spec.primary.ordinal");
    let start = Instant::now();
    c.rdbs
        .patch(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"primary": {"ordinal": 1}}})),
        )
        .await
        .unwrap();
    let max_primaries = AtomicUsize::new(0);
    wait_for("scaled-1 is the primary behind -rw", T, || async {
        let st = c.member_states("scaled").await;
        max_primaries.fetch_max(primaries(&st).len(), Ordering::SeqCst);
        c.endpoints("scaled-rw").await == ["scaled-1".to_string()].into()
            && st
                .get("scaled-1")
                .is_some_and(|(r, _, ready)| r == "primary" && *ready)
    })
    .await;
    assert!(
        max_primaries.into_inner() <= 1,
        "two primaries seen during the switchover"
    );
    wait_for("the old primary rejoins as a replica", T, || async {
        c.member_states("scaled")
            .await
            .get("scaled-0")
            .is_some_and(|(r, _, ready)| r == "replica" && *ready)
    })
    .await;
    wait_for("status: a Switchover to ordinal 1", T, || async {
        let status = c.status("scaled").await;
        status["lastFailover"]["kind"] == "Switchover" && status["primary"]["ordinal"] == 1
    })
    .await;
    let status = c.status("scaled").await;
    eprintln!(
        "  switchover took {:?} (status: {} ms)",
        start.elapsed(),
        status["lastFailover"]["durationMillis"]
    );
    c.rdbs
        .delete("scaled", &DeleteParams::default())
        .await
        .unwrap();
}

/// Scenario 12 under Pinned, Promote and (when a shared class exists) Reschedule.
async fn primary_node_loss(c: &Cluster, nodes: &[String]) {
    let anti_affinity = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "spread"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    let template = |class: &str| {
        json!({
            "template": {"metadata": {"labels": {"app": "spread"}}, "spec": {
                "containers": [{"name": "db", "image": "berth.dev/fake-db:1", "ports": [{"containerPort": 5432}]}],
                "affinity": anti_affinity.clone()}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": [if class == "berth-shared" { "ReadWriteMany" } else { "ReadWriteOnce" }],
                "storageClassName": class, "resources": {"requests": {"storage": "16Mi"}}}}],
        })
    };
    let classes: Api<StorageClass> = Api::all(c.client.clone());
    let shared = classes.get_opt("berth-shared").await.unwrap().is_some();
    let mut policies = vec!["Promote", "Pinned"];
    if shared {
        policies.push("Reschedule");
    } else {
        eprintln!("scenario 12 Reschedule SKIPPED: no berth-shared StorageClass in this cluster");
    }
    for policy in policies {
        eprintln!("scenario 12: primary node loss under {policy}");
        let name = format!("loss-{}", policy.to_lowercase());
        let mut s = template(if policy == "Reschedule" {
            "berth-shared"
        } else {
            "berth-local"
        });
        s["replicas"] = json!({"count": 3});
        s["engine"] = json!({"generic": {}});
        s["failover"] = json!({"policy": policy, "afterSeconds": 5});
        c.rdbs
            .create(&PostParams::default(), &rdb(&name, s))
            .await
            .unwrap();
        wait_for("3 Ready members", T, || async {
            let st = c.member_states(&name).await;
            st.len() == 3 && st.values().all(|(_, _, r)| *r)
        })
        .await;
        wait_for("-rw ready", T, || async {
            c.endpoints(&format!("{name}-rw")).await.len() == 1
        })
        .await;
        let st = c.member_states(&name).await;
        let old_primary = primaries(&st)[0].clone();
        let lost = st[&old_primary].1.clone();
        assert!(nodes.contains(&lost));
        let lost_at = Instant::now();
        c.set_node_lost(&lost, true).await;
        match policy {
            "Promote" => {
                let max_primaries = AtomicUsize::new(0);
                let took = wait_for("a promoted replica behind -rw", T, || async {
                    let st = c.member_states(&name).await;
                    max_primaries.fetch_max(primaries(&st).len(), Ordering::SeqCst);
                    let rw = c.endpoints(&format!("{name}-rw")).await;
                    rw.len() == 1
                        && !rw.contains(&old_primary)
                        && st
                            .get(rw.iter().next().unwrap())
                            .is_some_and(|(r, _, ready)| r == "primary" && *ready)
                })
                .await;
                assert!(
                    max_primaries.into_inner() <= 1,
                    "two primaries seen during the failover"
                );
                wait_for("status: lastFailover is the Failover", T, || async {
                    c.status(&name).await["lastFailover"]["kind"] == "Failover"
                })
                .await;
                let status = c.status(&name).await;
                eprintln!(
                    "  FAILOVER (Promote, afterSeconds 5): node lost -> new primary behind -rw in {:?} \
                     (target 10 s); status says {} ms",
                    took, status["lastFailover"]["durationMillis"]
                );
                assert!(took < Duration::from_secs(30), "failover took {took:?}");
                let events = c.events(&name).await;
                assert!(events.iter().any(|r| r == "FailoverStarted"), "{events:?}");
            }
            "Pinned" => {
                tokio::time::sleep(Duration::from_secs(12)).await;
                let st = c.member_states(&name).await;
                assert_eq!(
                    primaries(&st),
                    std::slice::from_ref(&old_primary),
                    "Pinned never moves the primary"
                );
                assert_eq!(
                    c.endpoints(&format!("{name}-ro")).await.len(),
                    2,
                    "replicas keep serving reads"
                );
                let status = c.status(&name).await;
                let degraded = status["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["type"] == "Degraded")
                    .cloned();
                assert_eq!(degraded.unwrap()["status"], "True");
                let events = c.events(&name).await;
                assert!(
                    events.iter().any(|r| r == "PrimaryUnavailable"),
                    "{events:?}"
                );
            }
            _ => {
                let took = wait_for("the primary restarted on another node", T, || async {
                    let st = c.member_states(&name).await;
                    st.get(&old_primary)
                        .is_some_and(|(r, n, ready)| r == "primary" && n != &lost && *ready)
                })
                .await;
                eprintln!("  RESCHEDULE: node lost -> primary Ready elsewhere in {took:?}");
                wait_for("status: lastFailover is the Reschedule", T, || async {
                    c.status(&name).await["lastFailover"]["kind"] == "Reschedule"
                })
                .await;
            }
        }
        eprintln!(
            "  {policy}: {:?} from node loss to checks done",
            lost_at.elapsed()
        );
        c.set_node_lost(&lost, false).await;
        wait_for("the node is back", T, || async {
            c.nodes
                .get(&lost)
                .await
                .ok()
                .and_then(|n| n.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .await;
        c.rdbs
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
        wait_for("its members gone", T, || async {
            c.members(&name).await.is_empty()
        })
        .await;
    }
}
