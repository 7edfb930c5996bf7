//! CSI wiring for simulated nodes. With no kubelet, the harness does what node-driver-registrar and
//! the kubelet do: it asks each node plugin for NodeGetInfo over its socket, then writes the CSINode
//! driver entry (node ID, topology keys, volume limit) and the topology labels and node-ID annotation
//! on the Node. It also builds the command lines of the plugins and the sidecars beside them
//! (distributed csi-provisioner per node for local volumes, central ones for shared volumes), and
//! the CSIDriver and StorageClass objects. Object construction is pure; the I/O is at the bottom.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_csi::proto::identity_client::IdentityClient;
use berth_csi::proto::node_client::NodeClient;
use berth_csi::proto::{GetPluginInfoRequest, NodeGetInfoRequest, NodeGetInfoResponse};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSINode;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tonic::transport::Channel;

use crate::config::{ClusterConfig, NodeSpec, PluginKind};

pub const LOCAL_DRIVER: &str = "local.csi.berth.dev";
pub const SHARED_DRIVER: &str = "shared.csi.berth.dev";
pub const HOSTPATH_DRIVER: &str = "hostpath.csi.k8s.io";
pub const LOCAL_CLASS: &str = "berth-local";
pub const SHARED_CLASS: &str = "berth-shared";
pub const HOSTPATH_CLASS: &str = "hostpath-local";
/// The node topology key of Berth's local driver.
pub const LOCAL_NODE_KEY: &str = "topology.berth.dev/node";
/// The annotation kubelet keeps on a Node: a JSON map of driver name to node ID.
pub const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";
/// The field manager of what the registrar role writes (so it never fights the node config).
pub const REGISTRAR_MANAGER: &str = "berth-e2e-registrar";
/// Capacity the hostpath peer reports per node (it has no real pool to measure).
pub const HOSTPATH_CAPACITY: &str = "local=100Gi";

/// Errors while talking to plugins or writing registration objects.
#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    #[error("connecting to CSI socket {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("{rpc} on {socket}: {status}")]
    Rpc {
        rpc: &'static str,
        socket: PathBuf,
        status: tonic::Status,
    },
    #[error("plugin on {socket} says it is {got:?}, expected {want:?}")]
    WrongDriver {
        socket: PathBuf,
        got: String,
        want: String,
    },
    #[error("plugin on {socket} reported an empty node ID")]
    EmptyNodeId { socket: PathBuf },
    #[error(
        "node {node}: label {key} is {existing:?} but driver {driver} reports topology {wanted:?}"
    )]
    LabelConflict {
        node: String,
        key: String,
        existing: String,
        wanted: String,
        driver: String,
    },
    #[error("writing {what}: {source}")]
    Apply { what: String, source: kube::Error },
}

/// One process the harness runs for CSI: its name in the pid dir, binary, args and env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSpec {
    pub name: String,
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Paths of the Go-built sidecars and the plugin binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub berth_csi: PathBuf,
    pub hostpathplugin: Option<PathBuf>,
    pub provisioner: PathBuf,
    pub resizer: PathBuf,
    pub snapshotter: PathBuf,
    pub snapshot_controller: PathBuf,
}

/// A node plugin the registrar role must register: which node, which driver, which socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlugin {
    pub node: String,
    pub driver: String,
    pub socket: PathBuf,
}

fn endpoint(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

pub fn local_socket(cfg: &ClusterConfig, node: &str) -> PathBuf {
    cfg.socket_dir().join(format!("{node}-local.sock"))
}
pub fn shared_socket(cfg: &ClusterConfig, node: &str) -> PathBuf {
    cfg.socket_dir().join(format!("{node}-shared.sock"))
}
pub fn shared_controller_socket(cfg: &ClusterConfig) -> PathBuf {
    cfg.socket_dir().join("shared-controller.sock")
}
/// The local driver's resizer front, which the central csi-resizer for local volumes talks to.
pub fn local_resizer_socket(cfg: &ClusterConfig) -> PathBuf {
    cfg.socket_dir().join("local-resizer.sock")
}

fn shared_pool_args(cfg: &ClusterConfig) -> Vec<String> {
    cfg.shared_pools
        .iter()
        .flat_map(|p| {
            [
                "--shared-pool".to_string(),
                format!("{}={}", p.name, p.path.display()),
            ]
        })
        .collect()
}

fn node_labels_arg(node: &NodeSpec) -> String {
    crate::nodes::node_labels(node)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether the shared driver is deployed: it is, with Berth, unless no shared pool is configured
/// (the benchmark leaves it out so both peers run the same set of processes).
pub fn has_shared(cfg: &ClusterConfig) -> bool {
    cfg.plugin == PluginKind::Berth && !cfg.shared_pools.is_empty()
}

/// The plugin processes: per node, a local plugin (node + distributed controller) and a shared node
/// plugin; one central shared controller and one local resizer front. For the hostpath peer, one
/// hostpathplugin per node.
pub fn plugin_procs(cfg: &ClusterConfig, bin: &Binaries) -> Vec<ProcSpec> {
    let mut out = Vec::new();
    match cfg.plugin {
        PluginKind::Berth => {
            for node in &cfg.nodes {
                let mut local = vec![
                    "--driver".into(),
                    "local".into(),
                    "--mode".into(),
                    "all".into(),
                    "--node-id".into(),
                    node.name.clone(),
                    "--endpoint".into(),
                    endpoint(&local_socket(cfg, &node.name)),
                    "--pool".into(),
                    cfg.local_pool(&node.name).display().to_string(),
                    // The node's labels are handed over directly (as a chart would from the
                    // downward API), so the plugin needs no API server access to start.
                    "--node-labels".into(),
                    node_labels_arg(node),
                ];
                for key in &cfg.topology_labels {
                    local.extend(["--topology-label".to_string(), key.clone()]);
                }
                out.push(ProcSpec {
                    name: format!("csi-local-{}", node.name),
                    exe: bin.berth_csi.clone(),
                    args: local,
                    env: vec![],
                });
                let mut shared = vec![
                    "--driver".into(),
                    "shared".into(),
                    "--mode".into(),
                    "node".into(),
                    "--node-id".into(),
                    node.name.clone(),
                    "--endpoint".into(),
                    endpoint(&shared_socket(cfg, &node.name)),
                    "--node-labels".into(),
                    node_labels_arg(node),
                ];
                shared.extend(shared_pool_args(cfg));
                out.push(ProcSpec {
                    name: format!("csi-shared-{}", node.name),
                    exe: bin.berth_csi.clone(),
                    args: shared,
                    env: vec![],
                });
            }
            let mut ctrl = vec![
                "--driver".into(),
                "shared".into(),
                "--mode".into(),
                "controller".into(),
                "--node-id".into(),
                "shared-controller".into(),
                "--endpoint".into(),
                endpoint(&shared_controller_socket(cfg)),
            ];
            ctrl.extend(shared_pool_args(cfg));
            out.push(ProcSpec {
                name: "csi-shared-controller".into(),
                exe: bin.berth_csi.clone(),
                args: ctrl,
                env: vec![],
            });
            out.push(ProcSpec {
                name: "csi-local-resizer".into(),
                exe: bin.berth_csi.clone(),
                args: vec![
                    "--driver".into(),
                    "local".into(),
                    "--mode".into(),
                    "resizer".into(),
                    "--node-id".into(),
                    "local-resizer".into(),
                    "--endpoint".into(),
                    endpoint(&local_resizer_socket(cfg)),
                ],
                env: vec![],
            });
        }
        PluginKind::Hostpath => {
            let exe = bin
                .hostpathplugin
                .clone()
                .unwrap_or_else(|| PathBuf::from("hostpathplugin"));
            for node in &cfg.nodes {
                out.push(ProcSpec {
                    name: format!("csi-hostpath-{}", node.name),
                    exe: exe.clone(),
                    args: vec![
                        format!("--drivername={HOSTPATH_DRIVER}"),
                        format!("--endpoint={}", endpoint(&local_socket(cfg, &node.name))),
                        format!("--nodeid={}", node.name),
                        format!("--statedir={}", cfg.local_pool(&node.name).display()),
                        format!("--capacity={HOSTPATH_CAPACITY}"),
                        "--enable-topology=true".into(),
                    ],
                    env: vec![],
                });
            }
        }
    }
    if !has_shared(cfg) {
        out.retain(|p| !p.name.starts_with("csi-shared"));
    }
    out
}

/// The node plugins whose registration the harness plays.
pub fn node_plugins(cfg: &ClusterConfig) -> Vec<NodePlugin> {
    let mut out = Vec::new();
    for node in &cfg.nodes {
        match cfg.plugin {
            PluginKind::Berth => {
                out.push(NodePlugin {
                    node: node.name.clone(),
                    driver: LOCAL_DRIVER.into(),
                    socket: local_socket(cfg, &node.name),
                });
                out.push(NodePlugin {
                    node: node.name.clone(),
                    driver: SHARED_DRIVER.into(),
                    socket: shared_socket(cfg, &node.name),
                });
            }
            PluginKind::Hostpath => out.push(NodePlugin {
                node: node.name.clone(),
                driver: HOSTPATH_DRIVER.into(),
                socket: local_socket(cfg, &node.name),
            }),
        }
    }
    if !has_shared(cfg) {
        out.retain(|p| p.driver != SHARED_DRIVER);
    }
    out
}

/// Sidecars: per node, a csi-provisioner in node-deployment mode with capacity tracking and a
/// csi-snapshotter in node-deployment mode beside the local plugin; a central csi-resizer beside the
/// local resizer front; a central csi-provisioner and csi-resizer for the shared driver; one
/// snapshot-controller.
pub fn sidecar_procs(cfg: &ClusterConfig, bin: &Binaries) -> Vec<ProcSpec> {
    let kc = format!("--kubeconfig={}", cfg.kubeconfig().display());
    let mut out = Vec::new();
    for node in &cfg.nodes {
        let sock = local_socket(cfg, &node.name).display().to_string();
        let env = vec![("NODE_NAME".to_string(), node.name.clone())];
        out.push(ProcSpec {
            name: format!("provisioner-local-{}", node.name),
            exe: bin.provisioner.clone(),
            args: vec![
                format!("--csi-address={sock}"),
                kc.clone(),
                "--node-deployment=true".into(),
                "--enable-capacity=true".into(),
                // No Pod owns these processes, so the CSIStorageCapacity objects get no owner.
                "--capacity-ownerref-level=-1".into(),
                format!("--capacity-poll-interval={}s", cfg.capacity_poll_seconds),
                "--feature-gates=Topology=true".into(),
                "--strict-topology=true".into(),
                "--immediate-topology=false".into(),
                "--extra-create-metadata=true".into(),
                "--leader-election=false".into(),
                "--timeout=60s".into(),
                "--worker-threads=20".into(),
                "--v=3".into(),
            ],
            env: env.clone(),
        });
        out.push(ProcSpec {
            name: format!("snapshotter-local-{}", node.name),
            exe: bin.snapshotter.clone(),
            args: vec![
                format!("--csi-address={sock}"),
                kc.clone(),
                "--node-deployment=true".into(),
                "--leader-election=false".into(),
                "--timeout=60s".into(),
                "--v=3".into(),
            ],
            env,
        });
    }
    if cfg.plugin == PluginKind::Berth {
        // csi-resizer has no per-node mode (kubernetes-csi/external-resizer#142), so local volumes
        // are resized centrally through the resizer front: csi-resizer sees node-only expansion,
        // records the new size, and the volume's node plugin grows it on NodeExpandVolume.
        out.push(ProcSpec {
            name: "resizer-local".into(),
            exe: bin.resizer.clone(),
            args: vec![
                format!("--csi-address={}", local_resizer_socket(cfg).display()),
                kc.clone(),
                "--leader-election=false".into(),
                "--timeout=60s".into(),
                "--v=3".into(),
            ],
            env: vec![],
        });
    }
    if has_shared(cfg) {
        let sock = shared_controller_socket(cfg).display().to_string();
        out.push(ProcSpec {
            name: "provisioner-shared".into(),
            exe: bin.provisioner.clone(),
            args: vec![
                format!("--csi-address={sock}"),
                kc.clone(),
                "--feature-gates=Topology=true".into(),
                "--extra-create-metadata=true".into(),
                "--leader-election=false".into(),
                "--timeout=60s".into(),
                "--v=3".into(),
            ],
            env: vec![],
        });
        out.push(ProcSpec {
            name: "resizer-shared".into(),
            exe: bin.resizer.clone(),
            args: vec![
                format!("--csi-address={sock}"),
                kc.clone(),
                "--leader-election=false".into(),
                "--timeout=60s".into(),
                "--v=3".into(),
            ],
            env: vec![],
        });
        // No csi-snapshotter for shared: the shared driver has no snapshot capability.
    }
    out.push(ProcSpec {
        name: "snapshot-controller".into(),
        exe: bin.snapshot_controller.clone(),
        // Distributed snapshotting: the controller labels each VolumeSnapshotContent with the
        // source volume's node, which is how the per-node csi-snapshotter knows it is theirs.
        args: vec![
            kc,
            "--leader-election=false".into(),
            "--enable-distributed-snapshotting=true".into(),
            "--v=3".into(),
        ],
        env: vec![],
    });
    out
}

/// The CSIDriver objects (server-side-apply bodies).
pub fn csi_drivers(cfg: &ClusterConfig) -> Vec<serde_json::Value> {
    let driver = |name: &str, spec: serde_json::Value| {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
               "metadata": {"name": name}, "spec": spec})
    };
    let mut out = match cfg.plugin {
        PluginKind::Berth => vec![
            driver(
                LOCAL_DRIVER,
                json!({"attachRequired": false, "storageCapacity": true, "fsGroupPolicy": "File",
                       "podInfoOnMount": false, "volumeLifecycleModes": ["Persistent"]}),
            ),
            driver(
                SHARED_DRIVER,
                json!({"attachRequired": false, "fsGroupPolicy": "File",
                       "volumeLifecycleModes": ["Persistent"]}),
            ),
        ],
        PluginKind::Hostpath => vec![driver(
            HOSTPATH_DRIVER,
            json!({"attachRequired": false, "storageCapacity": true, "fsGroupPolicy": "File",
                   "podInfoOnMount": true, "volumeLifecycleModes": ["Persistent"]}),
        )],
    };
    if !has_shared(cfg) {
        out.retain(|d| d["metadata"]["name"] != SHARED_DRIVER);
    }
    out
}

/// The StorageClasses the harness provides (until the Helm chart takes them over). `berth-shared`
/// names the first shared pool: the driver wants a pool named once there are several.
pub fn storage_classes(cfg: &ClusterConfig) -> Vec<serde_json::Value> {
    let class = |name: &str, driver: &str, binding: &str, params: serde_json::Value| {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": name}, "provisioner": driver, "reclaimPolicy": "Delete",
               "volumeBindingMode": binding, "allowVolumeExpansion": true, "parameters": params})
    };
    let shared_params = match cfg.shared_pools.first() {
        Some(p) => json!({"pool": p.name}),
        None => json!({}),
    };
    let mut out = match cfg.plugin {
        PluginKind::Berth => vec![
            class(LOCAL_CLASS, LOCAL_DRIVER, "WaitForFirstConsumer", json!({})),
            class(SHARED_CLASS, SHARED_DRIVER, "Immediate", shared_params),
        ],
        PluginKind::Hostpath => vec![class(
            HOSTPATH_CLASS,
            HOSTPATH_DRIVER,
            "WaitForFirstConsumer",
            json!({"kind": "local"}),
        )],
    };
    if !has_shared(cfg) {
        out.retain(|c| c["metadata"]["name"] != SHARED_CLASS);
    }
    out
}

/// One VolumeSnapshotClass per driver that has snapshots.
pub fn snapshot_classes(plugin: PluginKind) -> Vec<serde_json::Value> {
    let class = |name: &str, driver: &str| {
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": name}, "driver": driver, "deletionPolicy": "Delete"})
    };
    match plugin {
        PluginKind::Berth => vec![class("berth-local", LOCAL_DRIVER)],
        PluginKind::Hostpath => vec![class("hostpath-local", HOSTPATH_DRIVER)],
    }
}

/// What NodeGetInfo said, reduced to what registration uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    pub segments: BTreeMap<String, String>,
    pub max_volumes: i64,
}

impl NodeInfo {
    pub fn from_response(r: &NodeGetInfoResponse) -> Self {
        Self {
            node_id: r.node_id.clone(),
            segments: r
                .accessible_topology
                .as_ref()
                .map(|t| t.segments.clone().into_iter().collect())
                .unwrap_or_default(),
            max_volumes: r.max_volumes_per_node,
        }
    }
}

/// The CSINode driver entry kubelet writes for a registered plugin: node ID, the topology keys
/// (sorted, as kubelet lists them), and the volume limit when the plugin has one.
pub fn csinode_driver_entry(driver: &str, info: &NodeInfo) -> serde_json::Value {
    let mut entry = json!({
        "name": driver,
        "nodeID": info.node_id,
        "topologyKeys": info.segments.keys().collect::<Vec<_>>(),
    });
    if info.max_volumes > 0 {
        entry["allocatable"] = json!({"count": info.max_volumes});
    }
    entry
}

/// The whole CSINode of one node, owned by its Node (as kubelet makes it, so it goes with the node).
pub fn csinode_object(
    node: &str,
    node_uid: &str,
    drivers: &[(String, NodeInfo)],
) -> serde_json::Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSINode",
        "metadata": {
            "name": node,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}],
        },
        "spec": {"drivers": drivers.iter().map(|(d, i)| csinode_driver_entry(d, i)).collect::<Vec<_>>()},
    })
}

/// The Node metadata kubelet adds for registered drivers: every topology segment as a label, and the
/// node-ID annotation. A segment that contradicts an existing label is an error, as in kubelet.
pub fn node_registration_patch(
    node: &str,
    existing_labels: &BTreeMap<String, String>,
    drivers: &[(String, NodeInfo)],
) -> Result<serde_json::Value, CsiError> {
    let mut labels = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (driver, info) in drivers {
        for (k, v) in &info.segments {
            if let Some(existing) = existing_labels.get(k).filter(|e| *e != v) {
                return Err(CsiError::LabelConflict {
                    node: node.to_string(),
                    key: k.clone(),
                    existing: existing.clone(),
                    wanted: v.clone(),
                    driver: driver.clone(),
                });
            }
            labels.insert(k.clone(), v.clone());
        }
        ids.insert(driver.clone(), info.node_id.clone());
    }
    let ids = serde_json::to_string(&ids).expect("map of strings serializes");
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": labels, "annotations": {NODE_ID_ANNOTATION: ids}},
    }))
}

/// A gRPC channel over a Unix socket.
pub async fn connect(socket: &Path) -> Result<Channel, CsiError> {
    berth_csi::client::connect(socket, Duration::from_secs(10))
        .await
        .map_err(|source| CsiError::Connect {
            socket: socket.to_path_buf(),
            source,
        })
}

/// Asks the plugin on `plugin.socket` who it is and where it is (GetPluginInfo + NodeGetInfo), as
/// node-driver-registrar does before registering it.
pub async fn node_info(plugin: &NodePlugin) -> Result<NodeInfo, CsiError> {
    let channel = connect(&plugin.socket).await?;
    let rpc_err = |rpc: &'static str| {
        let socket = plugin.socket.clone();
        move |status| CsiError::Rpc {
            rpc,
            socket,
            status,
        }
    };
    let info = IdentityClient::new(channel.clone())
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .map_err(rpc_err("GetPluginInfo"))?
        .into_inner();
    if info.name != plugin.driver {
        return Err(CsiError::WrongDriver {
            socket: plugin.socket.clone(),
            got: info.name,
            want: plugin.driver.clone(),
        });
    }
    let resp = NodeClient::new(channel)
        .node_get_info(NodeGetInfoRequest {})
        .await
        .map_err(rpc_err("NodeGetInfo"))?
        .into_inner();
    let info = NodeInfo::from_response(&resp);
    if info.node_id.is_empty() {
        return Err(CsiError::EmptyNodeId {
            socket: plugin.socket.clone(),
        });
    }
    Ok(info)
}

/// Registers every driver of one node: Node labels + annotation, then the CSINode object.
pub async fn register_node(
    client: &kube::Client,
    node: &str,
    drivers: &[(String, NodeInfo)],
) -> Result<(), CsiError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let apply_err = |what: String| move |source| CsiError::Apply { what, source };
    let current = nodes
        .get(node)
        .await
        .map_err(apply_err(format!("Node {node}")))?;
    let uid = current.metadata.uid.clone().unwrap_or_default();
    let existing: BTreeMap<String, String> = current.metadata.labels.unwrap_or_default();
    let pp = PatchParams::apply(REGISTRAR_MANAGER).force();
    let patch = node_registration_patch(node, &existing, drivers)?;
    nodes
        .patch(node, &pp, &Patch::Apply(patch))
        .await
        .map_err(apply_err(format!("Node {node} labels")))?;
    let csinodes: Api<CSINode> = Api::all(client.clone());
    csinodes
        .patch(
            node,
            &pp,
            &Patch::Apply(csinode_object(node, &uid, drivers)),
        )
        .await
        .map_err(apply_err(format!("CSINode {node}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Ports, SharedPool};

    fn cfg(plugin: PluginKind) -> ClusterConfig {
        ClusterConfig {
            state_dir: "/st".into(),
            ports: Ports::from_base(30000),
            nodes: crate::config::build_nodes(2, &[], &[]).unwrap(),
            plugin,
            topology_labels: vec!["topology.kubernetes.io/zone".into()],
            shared_pools: vec![SharedPool {
                name: "default".into(),
                path: "/st/pools/shared/default".into(),
            }],
            capacity_poll_seconds: 5,
            pool_sizes: Default::default(),
            pool_fs: "btrfs".into(),
            nolinks_pool: false,
        }
    }

    fn bins() -> Binaries {
        Binaries {
            berth_csi: "/b/berth-csi".into(),
            hostpathplugin: Some("/b/hostpathplugin".into()),
            provisioner: "/b/csi-provisioner".into(),
            resizer: "/b/csi-resizer".into(),
            snapshotter: "/b/csi-snapshotter".into(),
            snapshot_controller: "/b/snapshot-controller".into(),
        }
    }

    fn info(id: &str, segs: &[(&str, &str)], max: i64) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            segments: segs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            max_volumes: max,
        }
    }

    #[test]
    fn berth_plugins_follow_the_cli_contract() {
        let procs = plugin_procs(&cfg(PluginKind::Berth), &bins());
        let names: Vec<_> = procs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "csi-local-node-1",
                "csi-shared-node-1",
                "csi-local-node-2",
                "csi-shared-node-2",
                "csi-shared-controller",
                "csi-local-resizer"
            ]
        );
        let local = procs[0].args.join(" ");
        assert!(local.contains("--driver local --mode all --node-id node-1"));
        assert!(local.contains("--endpoint unix:///st/sockets/node-1-local.sock"));
        assert!(local.contains("--pool /st/pools/local/node-1"));
        assert!(local.contains("--topology-label topology.kubernetes.io/zone"));
        assert!(local.contains("topology.kubernetes.io/zone=zone-a"));
        let shared = procs[1].args.join(" ");
        assert!(shared.contains("--driver shared --mode node"));
        assert!(shared.contains("--shared-pool default=/st/pools/shared/default"));
        let ctrl = procs[4].args.join(" ");
        assert!(ctrl.contains("--mode controller"));
        let front = procs[5].args.join(" ");
        assert!(front.contains("--driver local --mode resizer"), "{front}");
        assert!(!front.contains("--pool"), "{front}");
    }

    #[test]
    fn local_provisioners_are_distributed_with_capacity_and_strict_topology() {
        let procs = sidecar_procs(&cfg(PluginKind::Berth), &bins());
        let p = procs
            .iter()
            .find(|p| p.name == "provisioner-local-node-2")
            .unwrap();
        for flag in [
            "--node-deployment=true",
            "--enable-capacity=true",
            "--strict-topology=true",
            "--immediate-topology=false",
            "--feature-gates=Topology=true",
            "--csi-address=/st/sockets/node-2-local.sock",
        ] {
            assert!(p.args.iter().any(|a| a == flag), "missing {flag}");
        }
        assert_eq!(p.env, [("NODE_NAME".to_string(), "node-2".to_string())]);
        let central = procs
            .iter()
            .find(|p| p.name == "provisioner-shared")
            .unwrap();
        assert!(
            central
                .args
                .iter()
                .any(|a| a == "--csi-address=/st/sockets/shared-controller.sock")
        );
        assert!(
            !central
                .args
                .iter()
                .any(|a| a.starts_with("--node-deployment"))
        );
        assert_eq!(
            procs
                .iter()
                .filter(|p| p.name == "snapshot-controller")
                .count(),
            1
        );
        // The hostpath peer gets the same per-node sidecars and no shared ones.
        let hp = sidecar_procs(&cfg(PluginKind::Hostpath), &bins());
        assert!(hp.iter().any(|p| p.name == "provisioner-local-node-1"));
        assert!(!hp.iter().any(|p| p.name.ends_with("-shared")));
    }

    #[test]
    fn csinode_entry_matches_what_kubelet_writes() {
        let i = info(
            "node-1",
            &[
                ("topology.berth.dev/node", "node-1"),
                ("topology.kubernetes.io/zone", "zone-a"),
            ],
            0,
        );
        let e = csinode_driver_entry(LOCAL_DRIVER, &i);
        assert_eq!(e["nodeID"], "node-1");
        assert_eq!(
            e["topologyKeys"],
            json!(["topology.berth.dev/node", "topology.kubernetes.io/zone"])
        );
        assert!(e.get("allocatable").is_none());
        let limited = csinode_driver_entry(LOCAL_DRIVER, &info("n", &[], 16));
        assert_eq!(limited["allocatable"]["count"], 16);
        let obj = csinode_object("node-1", "uid-1", &[(LOCAL_DRIVER.into(), i)]);
        assert_eq!(obj["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(obj["spec"]["drivers"][0]["name"], LOCAL_DRIVER);
    }

    #[test]
    fn node_patch_has_segments_as_labels_and_the_node_id_annotation() {
        let drivers = vec![
            (
                LOCAL_DRIVER.to_string(),
                info("node-1", &[("topology.berth.dev/node", "node-1")], 0),
            ),
            (
                SHARED_DRIVER.to_string(),
                info("node-1", &[("shared.berth.dev/default", "true")], 0),
            ),
        ];
        let patch = node_registration_patch("node-1", &BTreeMap::new(), &drivers).unwrap();
        assert_eq!(
            patch["metadata"]["labels"]["topology.berth.dev/node"],
            "node-1"
        );
        assert_eq!(
            patch["metadata"]["labels"]["shared.berth.dev/default"],
            "true"
        );
        let ids: BTreeMap<String, String> = serde_json::from_str(
            patch["metadata"]["annotations"][NODE_ID_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ids[LOCAL_DRIVER], "node-1");
        assert_eq!(ids[SHARED_DRIVER], "node-1");
    }

    #[test]
    fn a_segment_contradicting_a_node_label_is_refused() {
        let existing = BTreeMap::from([(
            "topology.kubernetes.io/zone".to_string(),
            "zone-b".to_string(),
        )]);
        let drivers = vec![(
            LOCAL_DRIVER.to_string(),
            info("n", &[("topology.kubernetes.io/zone", "zone-a")], 0),
        )];
        let err = node_registration_patch("n", &existing, &drivers).unwrap_err();
        assert!(err.to_string().contains("topology.kubernetes.io/zone"));
        // The same value is no conflict (the local driver copies node labels into its topology).
        let same = BTreeMap::from([(
            "topology.kubernetes.io/zone".to_string(),
            "zone-a".to_string(),
        )]);
        assert!(node_registration_patch("n", &same, &drivers).is_ok());
    }

    #[test]
    fn csi_drivers_and_classes_have_the_documented_settings() {
        let d = csi_drivers(&cfg(PluginKind::Berth));
        assert_eq!(d[0]["metadata"]["name"], LOCAL_DRIVER);
        assert_eq!(d[0]["spec"]["attachRequired"], false);
        assert_eq!(d[0]["spec"]["storageCapacity"], true);
        assert_eq!(d[0]["spec"]["fsGroupPolicy"], "File");
        assert_eq!(d[0]["spec"]["podInfoOnMount"], false);
        assert_eq!(d[1]["metadata"]["name"], SHARED_DRIVER);
        assert_eq!(d[1]["spec"]["fsGroupPolicy"], "File");
        let c = storage_classes(&cfg(PluginKind::Berth));
        assert_eq!(c[0]["metadata"]["name"], LOCAL_CLASS);
        assert_eq!(c[0]["volumeBindingMode"], "WaitForFirstConsumer");
        assert_eq!(c[0]["allowVolumeExpansion"], true);
        assert_eq!(c[1]["metadata"]["name"], SHARED_CLASS);
        assert_eq!(c[1]["volumeBindingMode"], "Immediate");
        assert_eq!(c[1]["parameters"]["pool"], "default");
        // Without shared pools the shared driver is left out entirely.
        let mut local_only = cfg(PluginKind::Berth);
        local_only.shared_pools.clear();
        assert_eq!(csi_drivers(&local_only).len(), 1);
        assert_eq!(storage_classes(&local_only).len(), 1);
        assert!(
            !plugin_procs(&local_only, &bins())
                .iter()
                .any(|p| p.name.contains("shared"))
        );
        assert!(
            !sidecar_procs(&local_only, &bins())
                .iter()
                .any(|p| p.name.contains("shared"))
        );
        assert!(
            node_plugins(&local_only)
                .iter()
                .all(|p| p.driver == LOCAL_DRIVER)
        );
    }
}
