//! Storage e2e: Berth's CSI drivers behind the real csi-provisioner, csi-resizer, csi-snapshotter and
//! snapshot-controller, against a real kube-apiserver, controller-manager and scheduler with kwok
//! nodes. Nodes have no kubelet, so nothing is ever mounted into a Pod: the tests check what the
//! control plane and the driver do (binding, placement, capacity, expansion, deletion, snapshots) and
//! look at the pools on this host, where the simulated nodes' volumes really are.
//!
//! Needs a running cluster: `scripts/test.d/40-e2e.sh` brings one up and runs these with --ignored.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use berth_e2e::csi::{LOCAL_CLASS, LOCAL_NODE_KEY, SHARED_CLASS};
use berth_e2e::testing::{
    TestCluster, events_for, pod, pod_running, pvc, pvc_bound, wait_for, wait_gone,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::json;

const NEEDS_CLUSTER: &str = "needs the e2e cluster: scripts/test.d/40-e2e.sh";
const SHARED_POOL: &str = "default";

async fn setup(ns: &str) -> TestCluster {
    let c = TestCluster::connect()
        .await
        .unwrap_or_else(|e| panic!("{NEEDS_CLUSTER}: {e}"));
    c.fresh_namespace(ns).await.unwrap();
    c
}

fn pvcs(c: &TestCluster, ns: &str) -> Api<PersistentVolumeClaim> {
    Api::namespaced(c.client.clone(), ns)
}
fn pods(c: &TestCluster, ns: &str) -> Api<Pod> {
    Api::namespaced(c.client.clone(), ns)
}
fn pvs(c: &TestCluster) -> Api<PersistentVolume> {
    Api::all(c.client.clone())
}

async fn bound_pv(c: &TestCluster, ns: &str, claim: &str, secs: u64) -> PersistentVolume {
    let claim_obj = wait_for(&pvcs(c, ns), claim, "Bound", secs, pvc_bound)
        .await
        .unwrap();
    let pv_name = claim_obj
        .spec
        .and_then(|s| s.volume_name)
        .expect("bound claim names its PV");
    pvs(c).get(&pv_name).await.unwrap()
}

/// The node values of the PV's required node affinity for `key`.
fn affinity_values(pv: &PersistentVolume, key: &str) -> Vec<String> {
    pv.spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| {
            r.node_selector_terms
                .iter()
                .flat_map(|t| t.match_expressions.clone().unwrap_or_default())
                .filter(|e| e.key == key)
                .flat_map(|e| e.values.unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

fn local_volume_dir(c: &TestCluster, node: &str, pv: &str) -> PathBuf {
    c.cfg.local_pool(node).join("volumes").join(pv)
}

fn shared_volume_dir(c: &TestCluster, pool: &str, pv: &str) -> PathBuf {
    let p = c
        .cfg
        .shared_pools
        .iter()
        .find(|p| p.name == pool)
        .unwrap_or_else(|| panic!("no shared pool {pool} in the cluster config"));
    p.path.join("volumes").join(pv)
}

fn name(pv: &PersistentVolume) -> String {
    pv.metadata.name.clone().unwrap()
}

async fn node_of(c: &TestCluster, ns: &str, pod_name: &str) -> String {
    let p = wait_for(&pods(c, ns), pod_name, "Running", 90, pod_running)
        .await
        .unwrap();
    p.spec
        .and_then(|s| s.node_name)
        .expect("running pod has a node")
}

async fn create_class(c: &TestCluster, obj: serde_json::Value) {
    let classes: Api<StorageClass> = Api::all(c.client.clone());
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let _ = classes.delete(&name, &DeleteParams::default()).await;
    wait_gone(&classes, &name, 30).await.unwrap();
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn local_volume_is_made_on_the_node_the_pod_is_scheduled_to_and_outlives_the_pod() {
    let ns = "e2e-local-node";
    let c = setup(ns).await;
    pvcs(&c, ns)
        .create(
            &PostParams::default(),
            &pvc("data", LOCAL_CLASS, "32Mi", "ReadWriteOnce", None),
        )
        .await
        .unwrap();
    // WaitForFirstConsumer: nothing is provisioned before a Pod wants the claim.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let early = pvcs(&c, ns).get("data").await.unwrap();
    assert!(
        !pvc_bound(&early),
        "a WaitForFirstConsumer claim bound without a consumer"
    );

    pods(&c, ns)
        .create(
            &PostParams::default(),
            &pod("writer", &["data"], Some("node-2")),
        )
        .await
        .unwrap();
    let pv = bound_pv(&c, ns, "data", 90).await;
    assert_eq!(affinity_values(&pv, LOCAL_NODE_KEY), ["node-2"]);
    let dir = local_volume_dir(&c, "node-2", &name(&pv));
    assert!(dir.join("data").is_dir(), "{} missing", dir.display());
    for other in ["node-1", "node-3"] {
        assert!(
            !local_volume_dir(&c, other, &name(&pv)).exists(),
            "volume also on {other}"
        );
    }
    assert_eq!(node_of(&c, ns, "writer").await, "node-2");

    // Scenario 1: the Pod goes, a new one with the same claim lands where the data is.
    std::fs::write(dir.join("data/hello.txt"), "kept").unwrap();
    pods(&c, ns)
        .delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pods(&c, ns), "writer", 60).await.unwrap();
    pods(&c, ns)
        .create(&PostParams::default(), &pod("reader", &["data"], None))
        .await
        .unwrap();
    assert_eq!(
        node_of(&c, ns, "reader").await,
        "node-2",
        "the scheduler put the Pod away from its local volume"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("data/hello.txt")).unwrap(),
        "kept"
    );

    // Reclaim Delete: deleting the claim removes the PV and the data.
    pods(&c, ns)
        .delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pods(&c, ns), "reader", 60).await.unwrap();
    pvcs(&c, ns)
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pvs(&c), &name(&pv), 90).await.unwrap();
    assert!(!dir.exists(), "{} survived reclaim Delete", dir.display());
}

#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn capacity_is_published_per_node_and_the_scheduler_avoids_a_node_without_room() {
    let ns = "e2e-capacity";
    let c = setup(ns).await;
    let caps: Api<CSIStorageCapacity> = Api::all(c.client.clone());
    let list = caps.list(&ListParams::default()).await.unwrap();
    let mut per_node: BTreeMap<String, i64> = BTreeMap::new();
    for cap in list
        .items
        .iter()
        .filter(|c| c.storage_class_name == LOCAL_CLASS)
    {
        let node = cap
            .node_topology
            .as_ref()
            .and_then(|t| t.match_labels.as_ref())
            .and_then(|m| m.get(LOCAL_NODE_KEY))
            .cloned()
            .expect("local capacity is per node");
        let bytes = cap
            .capacity
            .as_ref()
            .map(parse_quantity)
            .expect("capacity set");
        assert!(
            per_node.insert(node.clone(), bytes).is_none(),
            "two capacity objects for {node}"
        );
    }
    let nodes: Vec<String> = c.cfg.nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(
        per_node.keys().cloned().collect::<Vec<_>>(),
        nodes,
        "one CSIStorageCapacity per node"
    );
    assert!(per_node.values().all(|b| *b > 0), "{per_node:?}");

    let Some((small, small_size)) = c
        .cfg
        .pool_sizes
        .iter()
        .min_by_key(|(_, s)| **s)
        .map(|(n, s)| (n.clone(), *s))
    else {
        eprintln!("skipped the placement half: the cluster has no sized pools (--pool-size)");
        return;
    };
    assert!(
        (per_node[&small] as u64) <= small_size,
        "{small} reports {} bytes on a {small_size}-byte pool",
        per_node[&small]
    );
    // A claim bigger than the small node's free space but smaller than the others'.
    let others_min = per_node
        .iter()
        .filter(|(n, _)| **n != small)
        .map(|(_, b)| *b)
        .min()
        .unwrap();
    let want = (per_node[&small] + others_min) / 2;
    assert!(
        want > per_node[&small] && want < others_min,
        "pool sizes leave no room for the test: {per_node:?}"
    );
    let size = format!("{}Mi", want >> 20);

    pvcs(&c, ns)
        .create(
            &PostParams::default(),
            &pvc("too-big", LOCAL_CLASS, &size, "ReadWriteOnce", None),
        )
        .await
        .unwrap();
    pods(&c, ns)
        .create(
            &PostParams::default(),
            &pod("pinned", &["too-big"], Some(&small)),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let reason = loop {
        let ev = events_for(&c.client, ns, "Pod", "pinned").await;
        if let Some(e) = ev.iter().find(|e| e.contains("enough free storage")) {
            break e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no FailedScheduling for lack of storage; events: {ev:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert!(reason.starts_with("FailedScheduling"), "{reason}");
    let p = pods(&c, ns).get("pinned").await.unwrap();
    assert!(p.spec.unwrap().node_name.is_none(), "pinned pod was placed");
    assert!(!pvc_bound(&pvcs(&c, ns).get("too-big").await.unwrap()));

    // The same size, unpinned, goes to a node with room.
    pvcs(&c, ns)
        .create(
            &PostParams::default(),
            &pvc("fits", LOCAL_CLASS, &size, "ReadWriteOnce", None),
        )
        .await
        .unwrap();
    pods(&c, ns)
        .create(&PostParams::default(), &pod("free", &["fits"], None))
        .await
        .unwrap();
    let node = node_of(&c, ns, "free").await;
    assert_ne!(node, small, "scheduled onto the node without room");
    let pv = bound_pv(&c, ns, "fits", 60).await;
    assert_eq!(affinity_values(&pv, LOCAL_NODE_KEY), [node]);

    pods(&c, ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    pvcs(&c, ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    wait_gone(&pvs(&c), &name(&pv), 90).await.unwrap();
}

fn parse_quantity(q: &Quantity) -> i64 {
    let s = q.0.as_str();
    let units = [
        ("Ki", 1i64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<i64>().unwrap() * mult;
        }
    }
    s.parse().unwrap()
}

#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn shared_rwx_volume_binds_at_once_lives_in_the_shared_pool_and_serves_every_node() {
    let ns = "e2e-shared";
    let c = setup(ns).await;
    pvcs(&c, ns)
        .create(
            &PostParams::default(),
            &pvc("cache", SHARED_CLASS, "16Mi", "ReadWriteMany", None),
        )
        .await
        .unwrap();
    // Immediate binding: no Pod needed.
    let pv = bound_pv(&c, ns, "cache", 60).await;
    let key = format!("shared.berth.dev/{SHARED_POOL}");
    assert_eq!(affinity_values(&pv, &key), ["true"]);
    assert!(affinity_values(&pv, LOCAL_NODE_KEY).is_empty());
    let dir = shared_volume_dir(&c, SHARED_POOL, &name(&pv));
    assert!(dir.join("data").is_dir(), "{} missing", dir.display());

    // Scenario 3: Pods on every node use the one volume.
    for n in &c.cfg.nodes {
        pods(&c, ns)
            .create(
                &PostParams::default(),
                &pod(&format!("user-{}", n.name), &["cache"], Some(&n.name)),
            )
            .await
            .unwrap();
    }
    for n in &c.cfg.nodes {
        assert_eq!(node_of(&c, ns, &format!("user-{}", n.name)).await, n.name);
    }

    // Scenario 4: the single writer moves off its node and finds its data.
    std::fs::write(dir.join("data/state"), "v1").unwrap();
    let mut moved = pod("moved", &["cache"], None);
    moved.spec.as_mut().unwrap().affinity = Some(
        serde_json::from_value(
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["node-1"]}]}]}}}),
        )
        .unwrap(),
    );
    pods(&c, ns)
        .create(&PostParams::default(), &moved)
        .await
        .unwrap();
    assert_ne!(node_of(&c, ns, "moved").await, "node-1");
    assert_eq!(
        std::fs::read_to_string(dir.join("data/state")).unwrap(),
        "v1"
    );

    pods(&c, ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    pvcs(&c, ns)
        .delete("cache", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pvs(&c), &name(&pv), 90).await.unwrap();
    assert!(!dir.exists(), "{} survived reclaim Delete", dir.display());
}

/// Asks for `size` on the claim and waits until csi-resizer has given its PV that capacity.
async fn grow_claim_and_wait_for_pv(
    c: &TestCluster,
    ns: &str,
    claim: &str,
    pv: &str,
    size: &str,
) -> Quantity {
    pvcs(c, ns)
        .patch(
            claim,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": size}}}})),
        )
        .await
        .unwrap();
    let want = Quantity(size.into());
    wait_for(&pvs(c), pv, &format!("PV capacity {size}"), 60, |p| {
        p.spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            == Some(&want)
    })
    .await
    .unwrap();
    want
}

/// The capacity the driver recorded in a volume's directory (`volume.json`).
fn recorded_capacity(volume_dir: &std::path::Path) -> i64 {
    let text = std::fs::read_to_string(volume_dir.join("volume.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["capacityBytes"]
        .as_i64()
        .unwrap_or_else(|| panic!("no capacityBytes in {record}"))
}

#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn shared_volume_grows_through_csi_resizer() {
    let ns = "e2e-expand";
    let c = setup(ns).await;
    let claims = pvcs(&c, ns);
    claims
        .create(
            &PostParams::default(),
            &pvc("grow", SHARED_CLASS, "16Mi", "ReadWriteMany", None),
        )
        .await
        .unwrap();
    let pv = bound_pv(&c, ns, "grow", 60).await;
    let want = grow_claim_and_wait_for_pv(&c, ns, "grow", &name(&pv), "48Mi").await;
    // A shared volume needs no node step, so the claim's status shows the new size at once.
    wait_for(&claims, "grow", "PVC status capacity 48Mi", 60, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            == Some(&want)
    })
    .await
    .unwrap();
    assert_eq!(
        recorded_capacity(&shared_volume_dir(&c, SHARED_POOL, &name(&pv))),
        48 << 20
    );
    claims
        .delete("grow", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pvs(&c), &name(&pv), 90).await.unwrap();
}

/// A local volume grows in two steps, as on a real cluster: the central csi-resizer, talking to the
/// resizer front, records the new size (PV capacity, claim waiting for the node); then NodeExpandVolume
/// on the volume's own node raises its limit. With no kubelet on kwok nodes, the test plays the
/// kubelet for that step: it stages and publishes the volume on node-1's plugin and calls
/// NodeExpandVolume there, then writes past the old limit.
#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn local_volume_grows_through_csi_resizer_and_its_node() {
    use berth_csi::proto::volume_capability::{AccessMode, AccessType, MountVolume, access_mode};
    use berth_csi::proto::*;
    let ns = "e2e-expand-local";
    let c = setup(ns).await;
    let claims = pvcs(&c, ns);
    claims
        .create(
            &PostParams::default(),
            &pvc("grow", LOCAL_CLASS, "16Mi", "ReadWriteOnce", None),
        )
        .await
        .unwrap();
    pods(&c, ns)
        .create(
            &PostParams::default(),
            &pod("app", &["grow"], Some("node-1")),
        )
        .await
        .unwrap();
    let pv = bound_pv(&c, ns, "grow", 90).await;
    let handle = pv
        .spec
        .as_ref()
        .unwrap()
        .csi
        .as_ref()
        .unwrap()
        .volume_handle
        .clone();
    let dir = local_volume_dir(&c, "node-1", &name(&pv));
    assert_eq!(recorded_capacity(&dir), 16 << 20);

    grow_claim_and_wait_for_pv(&c, ns, "grow", &name(&pv), "48Mi").await;
    wait_for(&claims, "grow", "the claim waiting for its node", 60, |p| {
        let status = p.status.clone().unwrap_or_default();
        let condition = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "FileSystemResizePending");
        let allocated = status
            .allocated_resource_statuses
            .unwrap_or_default()
            .get("storage")
            .is_some_and(|s| s == "NodeResizePending");
        condition || allocated
    })
    .await
    .unwrap();
    assert_eq!(
        recorded_capacity(&dir),
        16 << 20,
        "grown before its node was asked"
    );

    // The kubelet's part, on node-1's plugin.
    let channel = berth_csi::client::connect(
        &berth_e2e::csi::local_socket(&c.cfg, "node-1"),
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut node = node_client::NodeClient::new(channel);
    let work = c.cfg.state_dir.join("e2e-kubelet").join(&handle);
    let (staging, target) = (work.join("staging"), work.join("target"));
    let cap = VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    };
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    node.node_stage_volume(NodeStageVolumeRequest {
        volume_id: handle.clone(),
        staging_target_path: path(&staging),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    node.node_publish_volume(NodePublishVolumeRequest {
        volume_id: handle.clone(),
        staging_target_path: path(&staging),
        target_path: path(&target),
        volume_capability: Some(cap),
        ..Default::default()
    })
    .await
    .unwrap();
    let grown = node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: handle.clone(),
            volume_path: path(&target),
            capacity_range: Some(CapacityRange {
                required_bytes: 48 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await;
    let written = std::fs::write(target.join("big"), vec![7u8; 32 << 20]);
    node.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: handle.clone(),
        target_path: path(&target),
    })
    .await
    .unwrap();
    node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: handle.clone(),
        staging_target_path: path(&staging),
    })
    .await
    .unwrap();
    assert_eq!(grown.unwrap().into_inner().capacity_bytes, 48 << 20);
    written.expect("32 MiB fits once the 16 MiB volume has grown to 48 MiB");
    assert_eq!(recorded_capacity(&dir), 48 << 20);

    pods(&c, ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    claims
        .delete("grow", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pvs(&c), &name(&pv), 90).await.unwrap();
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn reclaim_retain_keeps_the_data_and_ownership_comes_from_the_class() {
    let ns = "e2e-retain";
    let c = setup(ns).await;
    create_class(
        &c,
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "e2e-shared-retain"}, "provisioner": "shared.csi.berth.dev",
               "reclaimPolicy": "Retain", "volumeBindingMode": "Immediate",
               "parameters": {"pool": SHARED_POOL, "uid": "999", "gid": "999", "mode": "0770"}}),
    )
    .await;
    let claims = pvcs(&c, ns);
    claims
        .create(
            &PostParams::default(),
            &pvc("keep", "e2e-shared-retain", "8Mi", "ReadWriteMany", None),
        )
        .await
        .unwrap();
    let pv = bound_pv(&c, ns, "keep", 60).await;
    let data = shared_volume_dir(&c, SHARED_POOL, &name(&pv)).join("data");
    // Scenario 6: the database user owns its volume without an init container.
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (999, 999));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o770);
    std::fs::write(data.join("precious"), "yes").unwrap();

    claims
        .delete("keep", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&pvs(&c), &name(&pv), "Released", 60, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(data.join("precious")).unwrap(),
        "yes"
    );
    // The retained PV is the admin's to clean up; the test removes it (the data stays).
    pvs(&c)
        .delete(&name(&pv), &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pvs(&c), &name(&pv), 30).await.unwrap();
    assert!(data.join("precious").exists());
}

#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn a_class_asking_for_something_impossible_leaves_the_claim_pending_with_the_reason() {
    let ns = "e2e-caps";
    let c = setup(ns).await;
    // A capability that does not exist: refused by the driver, naming the field.
    create_class(
        &c,
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "e2e-shared-bogus-cap"}, "provisioner": "shared.csi.berth.dev",
               "volumeBindingMode": "Immediate",
               "parameters": {"pool": SHARED_POOL, "requiredCapabilities": "hardlinks,teleport"}}),
    )
    .await;
    pvcs(&c, ns)
        .create(
            &PostParams::default(),
            &pvc(
                "bogus",
                "e2e-shared-bogus-cap",
                "8Mi",
                "ReadWriteMany",
                None,
            ),
        )
        .await
        .unwrap();
    let ev = wait_for_event(&c, ns, "bogus", "ProvisioningFailed").await;
    assert!(
        ev.contains("parameters.requiredCapabilities") && ev.contains("teleport"),
        "{ev}"
    );
    assert!(!pvc_bound(&pvcs(&c, ns).get("bogus").await.unwrap()));

    // A capability the pool really lacks (a pool whose filesystem refuses hard links).
    let Some(pool) = c.cfg.shared_pools.iter().find(|p| p.name == "nolinks") else {
        eprintln!(
            "skipped the missing-capability half: no shared pool `nolinks` (a filesystem without \
             hard links) in this cluster"
        );
        return;
    };
    create_class(
        &c,
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "e2e-shared-needs-links"}, "provisioner": "shared.csi.berth.dev",
               "volumeBindingMode": "Immediate",
               "parameters": {"pool": pool.name, "requiredCapabilities": "hardlinks"}}),
    )
    .await;
    pvcs(&c, ns)
        .create(
            &PostParams::default(),
            &pvc("db", "e2e-shared-needs-links", "8Mi", "ReadWriteMany", None),
        )
        .await
        .unwrap();
    let ev = wait_for_event(&c, ns, "db", "ProvisioningFailed").await;
    assert!(ev.contains("hardlinks"), "{ev}");
    assert!(!pvc_bound(&pvcs(&c, ns).get("db").await.unwrap()));
}

async fn wait_for_event(c: &TestCluster, ns: &str, claim: &str, reason: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ev = events_for(&c.client, ns, "PersistentVolumeClaim", claim).await;
        if let Some(e) = ev.iter().find(|e| e.starts_with(reason)) {
            return e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {reason} event for {claim}; events: {ev:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn snapshots(c: &TestCluster, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    Api::namespaced_with(
        c.client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots"),
    )
}

#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn a_local_volume_is_snapshotted_and_restored_through_volume_snapshots() {
    let ns = "e2e-snap";
    let c = setup(ns).await;
    pvcs(&c, ns)
        .create(
            &PostParams::default(),
            &pvc("src", LOCAL_CLASS, "16Mi", "ReadWriteOnce", None),
        )
        .await
        .unwrap();
    pods(&c, ns)
        .create(
            &PostParams::default(),
            &pod("src-user", &["src"], Some("node-1")),
        )
        .await
        .unwrap();
    let src = bound_pv(&c, ns, "src", 90).await;
    let src_data = local_volume_dir(&c, "node-1", &name(&src)).join("data");
    std::fs::write(src_data.join("row"), "42").unwrap();

    let snap: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap", "namespace": ns},
        "spec": {"volumeSnapshotClassName": "berth-local",
                 "source": {"persistentVolumeClaimName": "src"}},
    }))
    .unwrap();
    snapshots(&c, ns)
        .create(&PostParams::default(), &snap)
        .await
        .unwrap();
    wait_for(&snapshots(&c, ns), "snap", "readyToUse", 90, |s| {
        s.data["status"]["readyToUse"] == json!(true)
    })
    .await
    .unwrap();
    // Written after the snapshot: must not appear in the restore.
    std::fs::write(src_data.join("later"), "no").unwrap();

    pvcs(&c, ns)
        .create(
            &PostParams::default(),
            &pvc(
                "restored",
                LOCAL_CLASS,
                "16Mi",
                "ReadWriteOnce",
                Some("snap"),
            ),
        )
        .await
        .unwrap();
    pods(&c, ns)
        .create(
            &PostParams::default(),
            &pod("restored-user", &["restored"], Some("node-1")),
        )
        .await
        .unwrap();
    let restored = bound_pv(&c, ns, "restored", 90).await;
    let data = local_volume_dir(&c, "node-1", &name(&restored)).join("data");
    assert_eq!(std::fs::read_to_string(data.join("row")).unwrap(), "42");
    assert!(
        !data.join("later").exists(),
        "restore saw a write made after the snapshot"
    );

    pods(&c, ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    snapshots(&c, ns)
        .delete("snap", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&snapshots(&c, ns), "snap", 60).await.unwrap();
    pvcs(&c, ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    wait_gone(&pvs(&c), &name(&restored), 90).await.unwrap();
    wait_gone(&pvs(&c), &name(&src), 90).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the e2e cluster: scripts/test.d/40-e2e.sh"]
async fn replicas_spread_over_nodes_each_get_their_own_local_volume() {
    // Scenario 2: a StatefulSet (the real controller) with anti-affinity and a claim template.
    let ns = "e2e-sts";
    let c = setup(ns).await;
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "cache"},
        "spec": {
            "replicas": 2, "serviceName": "cache",
            "selector": {"matchLabels": {"app": "cache"}},
            "template": {
                "metadata": {"labels": {"app": "cache"}},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "cache"}},
                         "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{"name": "c", "image": "registry.invalid/berth-e2e:none",
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "storageClassName": LOCAL_CLASS, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "16Mi"}}}}],
        },
    }))
    .unwrap();
    let api: Api<StatefulSet> = Api::namespaced(c.client.clone(), ns);
    api.create(&PostParams::default(), &sts).await.unwrap();
    let mut seen = Vec::new();
    for i in 0..2 {
        let node = node_of(&c, ns, &format!("cache-{i}")).await;
        let pv = bound_pv(&c, ns, &format!("data-cache-{i}"), 60).await;
        assert_eq!(
            affinity_values(&pv, LOCAL_NODE_KEY),
            std::slice::from_ref(&node)
        );
        assert!(
            local_volume_dir(&c, &node, &name(&pv))
                .join("data")
                .is_dir()
        );
        seen.push((node, name(&pv)));
    }
    assert_ne!(seen[0].0, seen[1].0, "replicas share a node");
    assert_ne!(seen[0].1, seen[1].1, "replicas share a volume");

    api.delete("cache", &DeleteParams::default()).await.unwrap();
    pods(&c, ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    pvcs(&c, ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    for (_, pv) in &seen {
        wait_gone(&pvs(&c), pv, 90).await.unwrap();
    }
}
