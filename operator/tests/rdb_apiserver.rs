//! The ReplicatedDatabase CRD against a real kube-apiserver: the committed `crds/` YAML is accepted, good
//! objects are stored with their defaults, and every bad object is refused with a message naming the field
//! (OpenAPI constraints and CEL rules, including transition rules and the scale subresource).
//!
//! Needs `BERTH_KUBECONFIG` (scripts/test.d/20-operator.sh brings up the e2e cluster and sets it).

mod common;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use serde_json::{Value, json};

fn rdb_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "berth.dev".into(),
        version: "v1alpha1".into(),
        api_version: "berth.dev/v1alpha1".into(),
        kind: "ReplicatedDatabase".into(),
        plural: "replicateddatabases".into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn object(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "ReplicatedDatabase",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn good_spec() -> Value {
    json!({
        "template": {"spec": {"containers": [{"name": "db", "image": "db:1"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        "replicas": {"count": 3},
        "engine": {"generic": {}},
    })
}

/// `good_spec` with a JSON merge patch applied.
fn spec_with(patch: Value) -> Value {
    let mut spec = good_spec();
    merge(&mut spec, &patch);
    spec
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[tokio::test]
async fn crd_is_accepted_and_validates_every_field_with_messages() {
    let Some(kc) = common::kubeconfig() else {
        return;
    };
    let client = common::client(&kc).await;
    common::install_crds(&client).await;
    let ns = common::unique_namespace(&client, "berth-rdb-crd-test").await;
    let api = rdb_api(&client, &ns);

    // A good object is stored, with the documented defaults.
    let created = api
        .create(&PostParams::default(), &object("good", good_spec()))
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["mode"], "PrimaryReplica");
    assert_eq!(spec["failover"]["policy"], "Pinned");
    assert_eq!(spec["failover"]["afterSeconds"], 30);
    assert_eq!(spec["primary"]["ordinal"], 0);
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
        "Retain"
    );

    // (case, spec, text the refusal must contain)
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "count and perMatchingNode",
            spec_with(
                json!({"replicas": {"perMatchingNode": {"nodeSelector": {"db": "replica"}}}}),
            ),
            "spec.replicas: set exactly one of count or perMatchingNode",
        ),
        (
            "neither count nor perMatchingNode",
            spec_with(json!({"replicas": {"count": null}})),
            "spec.replicas: set exactly one of count or perMatchingNode",
        ),
        (
            "count 0",
            spec_with(json!({"replicas": {"count": 0}})),
            "spec.replicas.count",
        ),
        (
            "primary ordinal outside the members",
            spec_with(json!({"primary": {"ordinal": 3}})),
            "spec.primary.ordinal must be less than spec.replicas.count",
        ),
        (
            "negative primary ordinal",
            spec_with(json!({"primary": {"ordinal": -1}})),
            "spec.primary.ordinal",
        ),
        (
            "nodeName and nodeSelector",
            spec_with(json!({"primary": {"nodeName": "n1", "nodeSelector": {"db": "primary"}}})),
            "spec.primary: set at most one of nodeName or nodeSelector",
        ),
        (
            "empty primary nodeSelector",
            spec_with(json!({"primary": {"nodeSelector": {}}})),
            "spec.primary.nodeSelector must name at least one label",
        ),
        (
            "empty perMatchingNode selector",
            spec_with(
                json!({"replicas": {"count": null, "perMatchingNode": {"nodeSelector": {}}}}),
            ),
            "spec.replicas.perMatchingNode.nodeSelector must name at least one label",
        ),
        (
            "negative afterSeconds",
            spec_with(json!({"failover": {"afterSeconds": -5}})),
            "spec.failover.afterSeconds",
        ),
        (
            "unknown policy",
            spec_with(json!({"failover": {"policy": "Sometimes"}})),
            "spec.failover.policy",
        ),
        (
            "Promote without a replica",
            spec_with(json!({"replicas": {"count": 1}, "failover": {"policy": "Promote"}})),
            "spec.failover.policy Promote needs spec.replicas.count >= 2",
        ),
        (
            "Promote for peers",
            spec_with(json!({"mode": "Peers", "failover": {"policy": "Promote"}})),
            "spec.failover.policy Promote needs spec.mode PrimaryReplica",
        ),
        (
            "unknown mode",
            spec_with(json!({"mode": "Cluster"})),
            "spec.mode",
        ),
        (
            "two engines",
            spec_with(json!({"engine": {"postgres": {"passwordSecret": "s"}}})),
            "spec.engine: set exactly one of postgres or generic",
        ),
        (
            "no engine",
            spec_with(json!({"engine": {"generic": null}})),
            "spec.engine: set exactly one of postgres or generic",
        ),
        (
            "postgres without passwordSecret",
            spec_with(json!({"engine": {"generic": null, "postgres": {}}})),
            "spec.engine.postgres.passwordSecret",
        ),
        (
            "relative dataDirectory",
            spec_with(
                json!({"engine": {"generic": null, "postgres": {"passwordSecret": "s", "dataDirectory": "data"}}}),
            ),
            "spec.engine.postgres.dataDirectory must be an absolute path",
        ),
        (
            "empty promote command",
            spec_with(json!({"engine": {"generic": {"promoteCommand": [""]}}})),
            "spec.engine.generic.promoteCommand[0] must not be empty",
        ),
        (
            "claim without a name",
            spec_with(json!({"volumeClaimTemplates": [{"metadata": {}, "spec": {}}]})),
            "spec.volumeClaimTemplates[].metadata.name must be set to a DNS label",
        ),
        (
            "claim name not a DNS label",
            spec_with(
                json!({"volumeClaimTemplates": [{"metadata": {"name": "Data_1"}, "spec": {}}]}),
            ),
            "spec.volumeClaimTemplates[].metadata.name must be set to a DNS label",
        ),
        (
            "duplicate claims",
            spec_with(
                json!({"volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}, {"metadata": {"name": "d"}, "spec": {}}]}),
            ),
            "spec.volumeClaimTemplates[].metadata.name must be unique",
        ),
        (
            "no containers",
            spec_with(json!({"template": {"spec": {"containers": null}}})),
            "spec.template.spec.containers",
        ),
        (
            "retention typo",
            spec_with(json!({"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Keep"}})),
            "spec.persistentVolumeClaimRetentionPolicy.whenScaled",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (case, spec, want)) in cases.iter().enumerate() {
        match api
            .create(
                &PostParams::default(),
                &object(&format!("bad-{i}"), spec.clone()),
            )
            .await
        {
            Ok(_) => failures.push(format!("{case}: accepted")),
            Err(kube::Error::Api(s)) if s.message.contains(want) => {
                eprintln!("  refused {case}: {}", s.message)
            }
            Err(e) => failures.push(format!("{case}: refused without {want:?}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Transition rules: immutable fields.
    let updates: Vec<(&str, Value, &str)> = vec![
        (
            "mode",
            json!({"spec": {"mode": "Peers"}}),
            "spec.mode is immutable",
        ),
        (
            "claim renamed",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "other"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
            "spec.volumeClaimTemplates is immutable",
        ),
    ];
    for (case, patch, want) in updates {
        match api
            .patch("good", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => failures.push(format!("update {case}: accepted")),
            Err(kube::Error::Api(s)) if s.message.contains(want) => {
                eprintln!("  refused update {case}: {}", s.message)
            }
            Err(e) => failures.push(format!("update {case}: refused without {want:?}: {e}")),
        }
    }
    // A switchover (primary.ordinal) and a scale are ordinary updates.
    api.patch(
        "good",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"primary": {"ordinal": 2}}})),
    )
    .await
    .unwrap();

    // The scale subresource: `kubectl scale rdb good --replicas=5` changes spec.replicas.count ...
    let scale = api
        .patch_scale(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    assert_eq!(
        api.get("good").await.unwrap().data["spec"]["replicas"]["count"],
        5
    );
    // ... and is refused with a clear message on a perMatchingNode database.
    let per_node = spec_with(
        json!({"replicas": {"count": null, "perMatchingNode": {"nodeSelector": {"db": "replica"}}}}),
    );
    api.create(&PostParams::default(), &object("per-node", per_node))
        .await
        .unwrap();
    match api
        .patch_scale(
            "per-node",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
    {
        Ok(_) => failures.push("scale of a perMatchingNode database: accepted".into()),
        Err(kube::Error::Api(s)) if s.message.contains("kubectl scale works only with count") => {
            eprintln!("  refused scale: {}", s.message)
        }
        Err(e) => failures.push(format!("scale of a perMatchingNode database: {e}")),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    common::delete_namespace(&client, &ns).await;
}

/// The controller binary against the bare API server, with this test playing scheduler and kubelet (there
/// are none: it binds member Pods to Node objects it made, marks them Ready, finishes deletions on Ready
/// nodes). Checks the I/O of a Promote failover and the switchover back — relabels, force deletion of the
/// Pod on the lost node, status and Events — and that at most one Pod is ever labelled primary. The
/// scenario tests in rdb_cluster.rs do the same with kwok, the real scheduler and controllers.
#[tokio::test]
async fn promote_failover_and_failback_through_the_api_server() {
    use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    let Some(kc) = common::kubeconfig() else {
        return;
    };
    let client = common::client(&kc).await;
    common::install_crds(&client).await;
    let ns = &common::unique_namespace(&client, "berth-rdb-failover-sim").await;
    let system_ns = common::unique_namespace(&client, "berth-rdb-failover-sim-system").await;
    // No controller-manager here: make the ServiceAccount Pods need.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let _ = sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node_names = ["rdb-sim-n0", "rdb-sim-n1", "rdb-sim-n2"];
    let set_ready = |name: &'static str, ready: bool| {
        let nodes = nodes.clone();
        async move {
            let status = json!({"status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "Unknown" },
                "reason": "Sim", "lastHeartbeatTime": jiff_now(), "lastTransitionTime": jiff_now()}]}});
            nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    };
    for n in node_names {
        let _ = nodes.delete(n, &Default::default()).await;
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        set_ready(n, true).await;
    }

    // The simulated scheduler and kubelet.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let stop = Arc::new(AtomicBool::new(false));
    let max_primaries = Arc::new(AtomicUsize::new(0));
    let sim = {
        let (pods, nodes, stop, max_primaries) = (
            pods.clone(),
            nodes.clone(),
            stop.clone(),
            max_primaries.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let ready_nodes: Vec<String> = nodes
                    .list(&Default::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .filter_map(|n| n.metadata.name)
                    .collect();
                let list = pods
                    .list(&Default::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default();
                let primaries = list
                    .iter()
                    .filter(|p| {
                        p.metadata.labels.as_ref().is_some_and(|l| {
                            l.get("berth.dev/role").is_some_and(|r| r == "primary")
                        })
                    })
                    .count();
                max_primaries.fetch_max(primaries, Ordering::SeqCst);
                for p in list {
                    let name = p.metadata.name.clone().unwrap();
                    let ordinal: usize = name.rsplit('-').next().unwrap().parse().unwrap();
                    let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                    match node {
                        None => {
                            // Bind each ordinal to "its" node, as local volumes would.
                            let target = format!("rdb-sim-n{ordinal}");
                            if ready_nodes.contains(&target) {
                                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                    "target": {"apiVersion": "v1", "kind": "Node", "name": target}});
                                let _: Result<Value, _> = pods
                                    .create_subresource(
                                        "binding",
                                        &name,
                                        &PostParams::default(),
                                        &binding,
                                    )
                                    .await;
                            }
                        }
                        Some(n) if ready_nodes.contains(&n) => {
                            if p.metadata.deletion_timestamp.is_some() {
                                let _ = pods
                                    .delete(
                                        &name,
                                        &kube::api::DeleteParams::default().grace_period(0),
                                    )
                                    .await;
                            } else if !is_ready(&p) {
                                let st = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
                                let _ = pods
                                    .patch_status(
                                        &name,
                                        &PatchParams::default(),
                                        &Patch::Merge(&st),
                                    )
                                    .await;
                            }
                        }
                        Some(_) => {
                            // A lost node's kubelet reports nothing; the Pod stays as it was.
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let log =
        std::fs::File::create(std::env::temp_dir().join("berth-operator-rdb-failover-sim.log"))
            .unwrap();
    let mut operator = std::process::Command::new(env!("CARGO_BIN_EXE_berth-operator"))
        .args([
            "controller",
            "--lease-name",
            "berth-rdb-failover-sim",
            "--lease-seconds",
            "6",
        ])
        .env("KUBECONFIG", &kc)
        .env("POD_NAMESPACE", &system_ns)
        .env("POD_NAME", "sim")
        .env("BERTH_METRICS_ADDR", "127.0.0.1:0")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut operator);

    let rdbs: Api<berth_operator::api::replicated_database::ReplicatedDatabase> =
        Api::namespaced(client.clone(), ns);
    let rdb: berth_operator::api::replicated_database::ReplicatedDatabase = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "ReplicatedDatabase",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {
            "template": {"spec": {"containers": [{"name": "db", "image": "db:1", "ports": [{"containerPort": 5432}]}]}},
            "replicas": {"count": 3},
            "failover": {"policy": "Promote", "afterSeconds": 3},
            "engine": {"generic": {}},
        },
    }))
    .unwrap();
    rdbs.create(&PostParams::default(), &rdb).await.unwrap();
    let roles = || async {
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| {
                let l = p.metadata.labels.clone().unwrap_or_default();
                (
                    p.metadata.name.clone().unwrap(),
                    (
                        l.get("berth.dev/role").cloned().unwrap_or_default(),
                        is_ready(&p),
                    ),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    common::wait_for(
        "3 Ready members, db-0 primary",
        Duration::from_secs(60),
        || async {
            let r = roles().await;
            r.len() == 3 && r.values().all(|(_, ready)| *ready) && r["db-0"].0 == "primary"
        },
    )
    .await;
    common::wait_for(
        "status: 3 Ready members, primary on rdb-sim-n0",
        Duration::from_secs(30),
        || async {
            let st = rdbs.get("db").await.unwrap().status.unwrap_or_default();
            st.ready_members == 3
                && st.primary.and_then(|p| p.node).as_deref() == Some("rdb-sim-n0")
        },
    )
    .await;

    // Lose the primary's node.
    let lost_at = Instant::now();
    set_ready("rdb-sim-n0", false).await;
    let took = common::wait_for("a replica promoted", Duration::from_secs(60), || async {
        let r = roles().await;
        r.iter()
            .any(|(n, (role, ready))| n != "db-0" && role == "primary" && *ready)
    })
    .await;
    eprintln!("  failover (afterSeconds 3): {took:?} from node loss to a promoted Ready replica");
    assert!(
        took >= Duration::from_secs(3),
        "promoted before afterSeconds: {took:?}"
    );
    assert!(took < Duration::from_secs(3 + 10), "failover took {took:?}");
    common::wait_for(
        "status.lastFailover recorded",
        Duration::from_secs(10),
        || async {
            rdbs.get("db")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
                .last_failover
                .is_some()
        },
    )
    .await;
    let st = rdbs.get("db").await.unwrap().status.unwrap();
    let last = st.last_failover.clone().expect("lastFailover recorded");
    assert_eq!(format!("{:?}", last.kind), "Failover");
    eprintln!(
        "  status.lastFailover: {} ms ({} -> {})",
        last.duration_millis, last.from_ordinal, last.to_ordinal
    );
    // The old primary's Pod was force-deleted (its node is lost) and is back as a replica, Pending there.
    let r = roles().await;
    assert_eq!(
        r.get("db-0").map(|(role, _)| role.as_str()),
        Some("replica"),
        "{r:?}"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for want in [
        "FailoverStarted",
        "Fenced",
        "MemberDeleted",
        "Promoted",
        "PrimaryReady",
    ] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} Event in {reasons:?}"
        );
    }

    // The node comes back: db-0 rejoins as a replica, then the primary switches back to spec.primary.ordinal.
    set_ready("rdb-sim-n0", true).await;
    common::wait_for("switched back to db-0", Duration::from_secs(60), || async {
        let r = roles().await;
        r.get("db-0")
            .is_some_and(|(role, ready)| role == "primary" && *ready)
            && r.len() == 3
    })
    .await;
    common::wait_for(
        "status.lastFailover is the switchover",
        Duration::from_secs(10),
        || async {
            let st = rdbs.get("db").await.unwrap().status.unwrap_or_default();
            st.last_failover
                .is_some_and(|l| format!("{:?}", l.kind) == "Switchover")
        },
    )
    .await;
    let st = rdbs.get("db").await.unwrap().status.unwrap();
    assert!(st.transition.is_none());
    eprintln!("  whole sequence: {:?}", lost_at.elapsed());
    stop.store(true, Ordering::SeqCst);
    let _ = sim.await;
    assert_eq!(
        max_primaries.load(Ordering::SeqCst),
        1,
        "two Pods were labelled primary at once"
    );
    for n in node_names {
        let _ = nodes.delete(n, &Default::default()).await;
    }
    common::delete_namespace(&client, ns).await;
    common::delete_namespace(&client, &system_ns).await;
}

fn is_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn jiff_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
