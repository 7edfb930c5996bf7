//! The CSI side of the benchmark: connect to a plugin's Unix socket, learn what it can do, and run
//! full volume cycles the way a CO would (Create → [ControllerPublish] → [Stage] → Publish →
//! Unpublish → [Unstage] → [ControllerUnpublish] → Delete), timing every RPC.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_csi::proto::controller_client::ControllerClient;
use berth_csi::proto::identity_client::IdentityClient;
use berth_csi::proto::node_client::NodeClient;
use berth_csi::proto::{
    self, CapacityRange, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, DeleteVolumeRequest, NodePublishVolumeRequest, NodeStageVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, TopologyRequirement, VolumeCapability,
    controller_service_capability, node_service_capability, volume_capability,
};
use tonic::transport::Channel;

use crate::stats::Samples;

/// Why a benchmark run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("connecting to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("{rpc} of volume {volume}: {code:?}: {message}")]
    Rpc {
        rpc: &'static str,
        volume: String,
        code: tonic::Code,
        message: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the plugin does not offer {0}, so it cannot provision volumes")]
    Missing(&'static str),
    #[error("CreateVolume of {0} returned no volume")]
    NoVolume(String),
}

fn rpc_error(rpc: &'static str, volume: &str, s: tonic::Status) -> CycleError {
    CycleError::Rpc {
        rpc,
        volume: volume.to_string(),
        code: s.code(),
        message: s.message().to_string(),
    }
}

/// Opens one HTTP/2 channel to the plugin's socket, shared by every worker (requests multiplex).
pub async fn connect(socket: &Path, timeout: Duration) -> Result<Channel, CycleError> {
    berth_csi::client::connect(socket, timeout)
        .await
        .map_err(|source| CycleError::Connect {
            path: socket.to_path_buf(),
            source,
        })
}

/// What the plugin said about itself before the run.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub name: String,
    pub vendor_version: String,
    pub node_id: String,
    pub topology: Option<proto::Topology>,
    pub stage: bool,
    pub controller_publish: bool,
    /// What the plugin got wrong without stopping the benchmark.
    pub warnings: Vec<String>,
}

/// Asks the Identity, Controller and Node services what the plugin is and can do.
pub async fn probe(channel: &Channel) -> Result<Plugin, CycleError> {
    // Identity is informational here: a plugin built without a version (hostpathplugin without
    // its -ldflags answers UNAVAILABLE) can still be benchmarked.
    let (name, vendor_version, mut warnings) = match IdentityClient::new(channel.clone())
        .get_plugin_info(proto::GetPluginInfoRequest {})
        .await
    {
        Ok(info) => {
            let info = info.into_inner();
            (info.name, info.vendor_version, vec![])
        }
        Err(s) => (
            "unknown".to_string(),
            "unknown".to_string(),
            vec![format!("GetPluginInfo: {:?}: {}", s.code(), s.message())],
        ),
    };
    let ctrl = ControllerClient::new(channel.clone())
        .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
        .await
        .map_err(|s| rpc_error("ControllerGetCapabilities", "-", s))?
        .into_inner();
    let ctrl_rpcs: Vec<i32> = ctrl
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(controller_service_capability::Type::Rpc(r)) => Some(r.r#type),
            _ => None,
        })
        .collect();
    use controller_service_capability::rpc::Type as Ctrl;
    if !ctrl_rpcs.contains(&(Ctrl::CreateDeleteVolume as i32)) {
        return Err(CycleError::Missing("CREATE_DELETE_VOLUME"));
    }
    let mut node = NodeClient::new(channel.clone());
    let node_caps = node
        .node_get_capabilities(proto::NodeGetCapabilitiesRequest {})
        .await
        .map_err(|s| rpc_error("NodeGetCapabilities", "-", s))?
        .into_inner();
    let stage = node_caps.capabilities.iter().any(|c| {
        matches!(&c.r#type, Some(node_service_capability::Type::Rpc(r))
            if r.r#type == node_service_capability::rpc::Type::StageUnstageVolume as i32)
    });
    let node_info = node
        .node_get_info(proto::NodeGetInfoRequest {})
        .await
        .map_err(|s| rpc_error("NodeGetInfo", "-", s))?
        .into_inner();
    if node_info.node_id.is_empty() {
        warnings.push("NodeGetInfo returned an empty node_id".to_string());
    }
    Ok(Plugin {
        name,
        vendor_version,
        warnings,
        node_id: node_info.node_id,
        topology: node_info.accessible_topology,
        stage,
        controller_publish: ctrl_rpcs.contains(&(Ctrl::PublishUnpublishVolume as i32)),
    })
}

/// What every cycle of a run asks for.
#[derive(Debug, Clone)]
pub struct Workload {
    pub capacity: i64,
    pub parameters: HashMap<String, String>,
    pub block: bool,
    pub fs_type: String,
    pub access_mode: volume_capability::access_mode::Mode,
    pub staging_base: PathBuf,
    pub target_base: PathBuf,
}

impl Workload {
    fn capability(&self) -> VolumeCapability {
        let access_type = if self.block {
            volume_capability::AccessType::Block(volume_capability::BlockVolume {})
        } else {
            volume_capability::AccessType::Mount(volume_capability::MountVolume {
                fs_type: self.fs_type.clone(),
                ..Default::default()
            })
        };
        VolumeCapability {
            access_mode: Some(volume_capability::AccessMode {
                mode: self.access_mode as i32,
            }),
            access_type: Some(access_type),
        }
    }
}

/// The clients of one worker (cheap clones of the shared channel).
#[derive(Clone)]
pub struct Clients {
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
}

impl Clients {
    pub fn new(channel: &Channel) -> Clients {
        Clients {
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel.clone()),
        }
    }
}

fn mkdir(what: &'static str, path: &Path) -> Result<(), CycleError> {
    std::fs::create_dir_all(path).map_err(|source| CycleError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Removes what the CO created for a cycle (and anything the plugin left at the target).
fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_dir(path).or_else(|_| std::fs::remove_file(path));
}

/// How far a cycle got, so a failure cleans up exactly what exists.
#[derive(Default)]
struct Progress {
    volume_id: Option<String>,
    publish_context: HashMap<String, String>,
    controller_published: bool,
    staged: bool,
    published: bool,
}

/// Runs one full cycle for volume `name`, recording each RPC's latency. On failure, undoes what
/// the cycle created (best effort) before returning the error.
pub async fn run_cycle(
    clients: &mut Clients,
    plugin: &Plugin,
    work: &Workload,
    name: &str,
    samples: &mut Samples,
) -> Result<(), CycleError> {
    let mut progress = Progress::default();
    let result = cycle(clients, plugin, work, name, samples, &mut progress).await;
    if result.is_err() {
        undo(clients, plugin, work, name, &progress).await;
    }
    result
}

fn paths(work: &Workload, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let staging = work.staging_base.join(name);
    let target_parent = work.target_base.join(name);
    let target = target_parent.join(if work.block { "dev" } else { "mount" });
    (staging, target_parent, target)
}

async fn cycle(
    c: &mut Clients,
    plugin: &Plugin,
    work: &Workload,
    name: &str,
    samples: &mut Samples,
    p: &mut Progress,
) -> Result<(), CycleError> {
    let capability = work.capability();
    let (staging, target_parent, target) = paths(work, name);

    let t = Instant::now();
    let created = c
        .controller
        .create_volume(CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: work.capacity,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability.clone()],
            parameters: work.parameters.clone(),
            accessibility_requirements: plugin.topology.clone().map(|t| TopologyRequirement {
                requisite: vec![t.clone()],
                preferred: vec![t],
            }),
            ..Default::default()
        })
        .await
        .map_err(|s| rpc_error("CreateVolume", name, s))?
        .into_inner()
        .volume
        .ok_or_else(|| CycleError::NoVolume(name.to_string()))?;
    samples.record("CreateVolume", t.elapsed());
    let volume_id = created.volume_id.clone();
    p.volume_id = Some(volume_id.clone());

    if plugin.controller_publish {
        let t = Instant::now();
        let resp = c
            .controller
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: plugin.node_id.clone(),
                volume_capability: Some(capability.clone()),
                volume_context: created.volume_context.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| rpc_error("ControllerPublishVolume", name, s))?
            .into_inner();
        samples.record("ControllerPublishVolume", t.elapsed());
        p.controller_published = true;
        p.publish_context = resp.publish_context;
    }

    if plugin.stage {
        // The CO creates the staging directory (CSI spec).
        mkdir("staging directory", &staging)?;
        let t = Instant::now();
        c.node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: p.publish_context.clone(),
                staging_target_path: staging.to_string_lossy().into_owned(),
                volume_capability: Some(capability.clone()),
                volume_context: created.volume_context.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| rpc_error("NodeStageVolume", name, s))?;
        samples.record("NodeStageVolume", t.elapsed());
        p.staged = true;
    }

    // The CO creates the target's parent; the plugin creates the target itself (CSI spec).
    mkdir("target parent directory", &target_parent)?;
    let t = Instant::now();
    c.node
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: volume_id.clone(),
            publish_context: p.publish_context.clone(),
            staging_target_path: if plugin.stage {
                staging.to_string_lossy().into_owned()
            } else {
                String::new()
            },
            target_path: target.to_string_lossy().into_owned(),
            volume_capability: Some(capability.clone()),
            readonly: false,
            volume_context: created.volume_context.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| rpc_error("NodePublishVolume", name, s))?;
    samples.record("NodePublishVolume", t.elapsed());
    p.published = true;

    let t = Instant::now();
    unpublish(c, &volume_id, &target)
        .await
        .map_err(|s| rpc_error("NodeUnpublishVolume", name, s))?;
    samples.record("NodeUnpublishVolume", t.elapsed());
    p.published = false;
    remove_quietly(&target);
    remove_quietly(&target_parent);

    if plugin.stage {
        let t = Instant::now();
        unstage(c, &volume_id, &staging)
            .await
            .map_err(|s| rpc_error("NodeUnstageVolume", name, s))?;
        samples.record("NodeUnstageVolume", t.elapsed());
        p.staged = false;
        remove_quietly(&staging);
    }

    if plugin.controller_publish {
        let t = Instant::now();
        controller_unpublish(c, &volume_id, &plugin.node_id)
            .await
            .map_err(|s| rpc_error("ControllerUnpublishVolume", name, s))?;
        samples.record("ControllerUnpublishVolume", t.elapsed());
        p.controller_published = false;
    }

    let t = Instant::now();
    delete(c, &volume_id)
        .await
        .map_err(|s| rpc_error("DeleteVolume", name, s))?;
    samples.record("DeleteVolume", t.elapsed());
    p.volume_id = None;
    Ok(())
}

async fn unpublish(c: &mut Clients, volume_id: &str, target: &Path) -> Result<(), tonic::Status> {
    c.node
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: volume_id.to_string(),
            target_path: target.to_string_lossy().into_owned(),
        })
        .await
        .map(drop)
}

async fn unstage(c: &mut Clients, volume_id: &str, staging: &Path) -> Result<(), tonic::Status> {
    c.node
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume_id.to_string(),
            staging_target_path: staging.to_string_lossy().into_owned(),
        })
        .await
        .map(drop)
}

async fn controller_unpublish(
    c: &mut Clients,
    volume_id: &str,
    node_id: &str,
) -> Result<(), tonic::Status> {
    c.controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: volume_id.to_string(),
            node_id: node_id.to_string(),
            ..Default::default()
        })
        .await
        .map(drop)
}

async fn delete(c: &mut Clients, volume_id: &str) -> Result<(), tonic::Status> {
    c.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume_id.to_string(),
            ..Default::default()
        })
        .await
        .map(drop)
}

/// Best-effort teardown after a failed cycle, in reverse order; errors are reported, not fatal.
async fn undo(c: &mut Clients, plugin: &Plugin, work: &Workload, name: &str, p: &Progress) {
    let Some(volume_id) = &p.volume_id else {
        return;
    };
    let (staging, target_parent, target) = paths(work, name);
    if p.published
        && let Err(s) = unpublish(c, volume_id, &target).await
    {
        eprintln!("cleanup: NodeUnpublishVolume {name}: {}", s.message());
    }
    remove_quietly(&target);
    remove_quietly(&target_parent);
    if p.staged
        && let Err(s) = unstage(c, volume_id, &staging).await
    {
        eprintln!("cleanup: NodeUnstageVolume {name}: {}", s.message());
    }
    remove_quietly(&staging);
    if p.controller_published
        && let Err(s) = controller_unpublish(c, volume_id, &plugin.node_id).await
    {
        eprintln!("cleanup: ControllerUnpublishVolume {name}: {}", s.message());
    }
    if let Err(s) = delete(c, volume_id).await {
        eprintln!("cleanup: DeleteVolume {name}: {}", s.message());
    }
}
