//! The CSI Node service: stage (attach the loop device and mount, or bind the directory), publish
//! (bind into the Pod's path, read-only when asked), unpublish, unstage, stats and node expansion.
//! Every call is idempotent: the mount table, not memory, says what is already done.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::MsFlags;
use tonic::{Request, Response, Status};

use crate::access;
use crate::driver::{CAPACITY_KEY, Driver, Kind, Mode, volume_key};
use crate::error::{CsiError, Result};
use crate::failpoint;
use crate::mount::{self, MountEntry};
use crate::params::Backend;
use crate::pool::{Range, Usage, loopdev};
use crate::proto::node_server::Node;
use crate::proto::node_service_capability::rpc::Type as Rpc;
use crate::proto::*;
use crate::record::{Access, VolumeRecord};
use crate::validate::{self, Id};

pub struct NodeService(pub Arc<Driver>);

impl NodeService {
    fn require(&self) -> std::result::Result<(), Status> {
        if self.0.serves_node() {
            Ok(())
        } else {
            Err(Status::unimplemented(format!(
                "this plugin instance runs in {:?} mode and serves no node RPCs",
                self.0.mode
            )))
        }
    }
}

fn capability<'a>(cap: &'a Option<VolumeCapability>, field: &str) -> Result<&'a VolumeCapability> {
    cap.as_ref()
        .ok_or_else(|| CsiError::invalid(field, "is required"))
}

/// Kernel flags for a capability's mount flags, plus read-only.
fn flags_for(cap: &VolumeCapability, read_only: bool) -> (MsFlags, Vec<String>) {
    let flags = access::mount_of(cap)
        .map(|m| m.mount_flags.clone())
        .unwrap_or_default();
    let (mut ms, data) = mount::split_mount_flags(&flags);
    if read_only {
        ms |= MsFlags::MS_RDONLY;
    }
    (ms, data)
}

/// Bind mounts cannot carry filesystem options: refuse them rather than drop them silently.
fn no_data_options(data: &[String]) -> Result<()> {
    match data.first() {
        None => Ok(()),
        Some(opt) => Err(CsiError::invalid(
            "volume_capability.mount.mount_flags",
            format!("{opt:?} cannot be applied to a bind mount of a directory volume"),
        )),
    }
}

/// Whether an existing mount at a target is the one we would make; `Ok(true)` means done already.
fn already_mounted(
    existing: Option<MountEntry>,
    expected: Option<&MountEntry>,
    read_only: bool,
    target: &Path,
) -> Result<bool> {
    let Some(existing) = existing else {
        return Ok(false);
    };
    let same_source =
        expected.is_none_or(|e| e.device == existing.device && e.root == existing.root);
    if same_source && existing.read_only() == read_only {
        return Ok(true);
    }
    Err(CsiError::AlreadyExists(format!(
        "{} is already mounted with a different source or read-only setting",
        target.display()
    )))
}

/// SINGLE_NODE_SINGLE_WRITER allows one publication: refuse a second target for the same source.
fn check_single_writer(
    cap: &VolumeCapability,
    source: Option<&MountEntry>,
    skip: &[&Path],
    id: &Id,
) -> Result<()> {
    use crate::proto::volume_capability::access_mode::Mode;
    let single = cap
        .access_mode
        .as_ref()
        .is_some_and(|m| m.mode() == Mode::SingleNodeSingleWriter);
    let Some(source) = source.filter(|_| single) else {
        return Ok(());
    };
    let table = mount::mount_table()?;
    if let Some(other) = table.iter().find(|m| {
        m.device == source.device
            && m.root == source.root
            && !skip.iter().any(|s| m.mount_point == *s)
    }) {
        return Err(CsiError::FailedPrecondition(format!(
            "volume {id} has access mode SINGLE_NODE_SINGLE_WRITER and is already published at {}",
            other.mount_point.display()
        )));
    }
    Ok(())
}

fn make_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(CsiError::io("create", path))
}

fn local_record(d: &Driver, id: &Id) -> Result<VolumeRecord> {
    d.local()?.must_get(id)
}

fn stage(d: &Driver, req: &NodeStageVolumeRequest, id: &Id, staging: &Path) -> Result<()> {
    let pool = d.local()?;
    let mut rec = local_record(d, id)?;
    let cap = capability(&req.volume_capability, "volume_capability")?;
    let access = access::check(d.kind, rec.backend, cap, "volume_capability")?;
    if access != rec.access {
        return Err(CsiError::invalid(
            "volume_capability",
            format!("volume {id} is a {:?} volume", rec.access),
        ));
    }
    let data = pool.data_path(&rec);
    match (rec.backend, rec.access) {
        (Backend::Dir, _) => {
            let (ms, extra) = flags_for(cap, false);
            no_data_options(&extra)?;
            let expected = mount_of_path(&data)?;
            if already_mounted(
                mount::mount_at(staging)?,
                expected.as_ref(),
                ms.contains(MsFlags::MS_RDONLY),
                staging,
            )? {
                return Ok(());
            }
            make_dir(staging)?;
            mount::bind(&data, staging, ms)
        }
        (Backend::Loop, Access::Block) => loopdev::attach(&data).map(drop),
        (Backend::Loop, Access::Mount) => {
            let fs_type = rec.fs_type.map(|f| f.as_str()).unwrap_or("ext4");
            let device = loopdev::attach(&data)?;
            failpoint::hit("node-stage-after-attach");
            let existing = mount::mount_at(staging)?;
            if let Some(m) = &existing {
                if Path::new(&m.source) != device {
                    return Err(CsiError::AlreadyExists(format!(
                        "{} is already mounted from {}",
                        staging.display(),
                        m.source
                    )));
                }
            } else {
                pool.grow_fs(&mut rec, &device, None)?;
                make_dir(staging)?;
                let (ms, mut extra) = flags_for(cap, false);
                if fs_type == "xfs" {
                    // Clones and restores share their source's XFS UUID; XFS refuses a second
                    // mount of one UUID unless told not to check.
                    extra.push("nouuid".to_string());
                }
                mount::mount_fs(&device, staging, fs_type, ms, &extra)?;
            }
            pool.grow_fs(&mut rec, &device, Some(staging))
        }
    }
}

/// The mount-table view of a directory as a bind source (its device and root within the fs).
fn mount_of_path(path: &Path) -> Result<Option<MountEntry>> {
    let table = mount::mount_table()?;
    let Some(m) = table
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
    else {
        return Ok(None);
    };
    let rel = path.strip_prefix(&m.mount_point).unwrap_or(Path::new(""));
    let mut root = m.root.clone();
    root.push(rel);
    // btrfs shows a subvolume's path relative to the filesystem top; a subvolume bind keeps it.
    Ok(Some(MountEntry { root, ..m.clone() }))
}

fn unstage(d: &Driver, id: &Id, staging: &Path) -> Result<()> {
    let rec = local_record(d, id);
    let mounted = mount::mount_at(staging)?.is_some();
    if rec.is_err() && !mounted {
        return rec.map(drop);
    }
    mount::unmount(staging)?;
    if let Ok(rec) = rec
        && rec.backend == Backend::Loop
    {
        loopdev::detach(&d.local()?.data_path(&rec))?;
    }
    Ok(())
}

fn publish(d: &Driver, req: &NodePublishVolumeRequest, id: &Id, target: &Path) -> Result<()> {
    let cap = capability(&req.volume_capability, "volume_capability")?;
    let read_only = req.readonly || access::read_only_mode(cap);
    match d.kind {
        Kind::Shared => {
            let (pool, rec) = d
                .find_shared(id)?
                .ok_or_else(|| CsiError::NotFound(format!("volume {id} does not exist")))?;
            access::check(d.kind, rec.backend, cap, "volume_capability")?;
            let (ms, extra) = flags_for(cap, read_only);
            no_data_options(&extra)?;
            let source = pool.data_path(id);
            let expected = mount_of_path(&source)?;
            if already_mounted(
                mount::mount_at(target)?,
                expected.as_ref(),
                read_only,
                target,
            )? {
                return Ok(());
            }
            check_single_writer(cap, expected.as_ref(), &[target], id)?;
            make_dir(target)?;
            mount::bind(&source, target, ms)
        }
        Kind::Local => {
            let rec = local_record(d, id)?;
            let access = access::check(d.kind, rec.backend, cap, "volume_capability")?;
            if access != rec.access {
                return Err(CsiError::invalid(
                    "volume_capability",
                    format!("volume {id} is a {:?} volume", rec.access),
                ));
            }
            let staging = validate::co_path("staging_target_path", &req.staging_target_path)?;
            let (ms, extra) = flags_for(cap, read_only);
            no_data_options(&extra)?;
            let source: PathBuf = match rec.access {
                Access::Block => loopdev::find(&d.local()?.data_path(&rec))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        CsiError::FailedPrecondition(format!(
                            "volume {id} is not staged on this node"
                        ))
                    })?,
                Access::Mount => {
                    if mount::mount_at(&staging)?.is_none() {
                        return Err(CsiError::FailedPrecondition(format!(
                            "volume {id} is not staged at {}",
                            staging.display()
                        )));
                    }
                    staging.clone()
                }
            };
            let expected = match rec.access {
                Access::Mount => mount::mount_at(&staging)?,
                Access::Block => mount_of_path(&source)?,
            };
            if already_mounted(
                mount::mount_at(target)?,
                expected.as_ref(),
                read_only,
                target,
            )? {
                return Ok(());
            }
            check_single_writer(cap, expected.as_ref(), &[target, &staging, &source], id)?;
            match rec.access {
                Access::Mount => make_dir(target)?,
                Access::Block => {
                    if fs::symlink_metadata(target).is_err() {
                        fs::File::create(target).map_err(CsiError::io("create", target))?;
                    }
                }
            }
            mount::bind(&source, target, ms)?;
            failpoint::hit("node-publish-after-mount");
            Ok(())
        }
    }
}

fn unpublish(d: &Driver, id: &Id, target: &Path) -> Result<()> {
    let exists = d.find_volume(id)?.is_some();
    let mounted = mount::mount_at(target)?.is_some();
    if !exists && !mounted && fs::symlink_metadata(target).is_err() {
        return Err(CsiError::NotFound(format!("volume {id} does not exist")));
    }
    mount::unmount(target)?;
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => fs::remove_dir(target).map_err(CsiError::io("remove", target)),
        Ok(_) => fs::remove_file(target).map_err(CsiError::io("remove", target)),
        Err(_) => Ok(()),
    }
}

fn stats(d: &Driver, id: &Id, path: &Path) -> Result<NodeGetVolumeStatsResponse> {
    let rec = d
        .find_volume(id)?
        .ok_or_else(|| CsiError::NotFound(format!("volume {id} does not exist")))?;
    if fs::symlink_metadata(path).is_err() {
        return Err(CsiError::NotFound(format!(
            "volume_path {} does not exist",
            path.display()
        )));
    }
    let usage: Usage = match d.kind {
        Kind::Local => d.local()?.usage(&rec, path)?,
        Kind::Shared => {
            let (pool, _) = d
                .find_shared(id)?
                .ok_or_else(|| CsiError::NotFound(format!("volume {id} does not exist")))?;
            pool.usage(&rec)?
        }
    };
    let mut list = vec![VolumeUsage {
        available: usage.total_bytes.saturating_sub(usage.used_bytes) as i64,
        total: usage.total_bytes as i64,
        used: usage.used_bytes as i64,
        unit: volume_usage::Unit::Bytes as i32,
    }];
    if let Some(used) = usage.inodes_used {
        let total = usage.inodes_total.unwrap_or(0);
        list.push(VolumeUsage {
            available: total.saturating_sub(used) as i64,
            total: total as i64,
            used: used as i64,
            unit: volume_usage::Unit::Inodes as i32,
        });
    }
    Ok(NodeGetVolumeStatsResponse {
        usage: list,
        volume_condition: Some(VolumeCondition {
            abnormal: usage.abnormal.is_some(),
            message: usage.abnormal.unwrap_or_default(),
        }),
    })
}

/// NodeExpandVolume. Growing the backing store happens here too when the volume is still smaller
/// than asked: with the resizer front (`--mode resizer`) csi-resizer only records the new size,
/// and kubelet's NodeExpandVolume on the volume's node is the first call that can reach its pool.
/// Then a loop volume's device is refreshed and its filesystem grown.
fn expand(d: &Driver, id: &Id, range: Range, path: &Path, staging: Option<PathBuf>) -> Result<u64> {
    let mut rec = d
        .find_volume(id)?
        .ok_or_else(|| CsiError::NotFound(format!("volume {id} does not exist")))?;
    if d.kind == Kind::Shared {
        return Ok(rec.capacity_bytes);
    }
    let pool = d.local()?;
    if let Some(wanted) = range.expansion_target() {
        rec = pool.expand(id, wanted)?;
        range.check_grown(id, rec.capacity_bytes)?;
    }
    if rec.backend == Backend::Dir {
        return Ok(rec.capacity_bytes);
    }
    let image = pool.data_path(&rec);
    let device = loopdev::find(&image)?.into_iter().next().ok_or_else(|| {
        CsiError::FailedPrecondition(format!("volume {id} is not staged on this node"))
    })?;
    loopdev::refresh(&device)?;
    if rec.access == Access::Mount {
        let mounted_at = staging
            .filter(|s| matches!(mount::mount_at(s), Ok(Some(_))))
            .unwrap_or_else(|| path.to_path_buf());
        pool.grow_fs(&mut rec, &device, Some(&mounted_at))?;
    }
    Ok(rec.capacity_bytes)
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> std::result::Result<Response<NodeStageVolumeResponse>, Status> {
        self.require()?;
        if self.0.kind == Kind::Shared {
            return Err(Status::unimplemented("shared volumes are not staged"));
        }
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        let staging = validate::co_path("staging_target_path", &req.staging_target_path)
            .map_err(Status::from)?;
        capability(&req.volume_capability, "volume_capability").map_err(Status::from)?;
        self.0
            .run("NodeStageVolume", vec![volume_key(id.as_str())], move |d| {
                stage(d, &req, &id, &staging)
            })
            .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> std::result::Result<Response<NodeUnstageVolumeResponse>, Status> {
        self.require()?;
        if self.0.kind == Kind::Shared {
            return Err(Status::unimplemented("shared volumes are not staged"));
        }
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        let staging = validate::co_path("staging_target_path", &req.staging_target_path)
            .map_err(Status::from)?;
        self.0
            .run(
                "NodeUnstageVolume",
                vec![volume_key(id.as_str())],
                move |d| unstage(d, &id, &staging),
            )
            .await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> std::result::Result<Response<NodePublishVolumeResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        let target = validate::co_path("target_path", &req.target_path).map_err(Status::from)?;
        capability(&req.volume_capability, "volume_capability").map_err(Status::from)?;
        if self.0.kind == Kind::Local {
            validate::co_path("staging_target_path", &req.staging_target_path)
                .map_err(Status::from)?;
        }
        self.0
            .run(
                "NodePublishVolume",
                vec![volume_key(id.as_str())],
                move |d| publish(d, &req, &id, &target),
            )
            .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<NodeUnpublishVolumeResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        let target = validate::co_path("target_path", &req.target_path).map_err(Status::from)?;
        self.0
            .run(
                "NodeUnpublishVolume",
                vec![volume_key(id.as_str())],
                move |d| unpublish(d, &id, &target),
            )
            .await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> std::result::Result<Response<NodeGetVolumeStatsResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        let path = validate::volume_path(&req.volume_path).map_err(Status::from)?;
        self.0
            .run("NodeGetVolumeStats", vec![], move |d| stats(d, &id, &path))
            .await
            .map(Response::new)
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> std::result::Result<Response<NodeExpandVolumeResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        let path = validate::volume_path(&req.volume_path).map_err(Status::from)?;
        let staging = if req.staging_target_path.is_empty() {
            None
        } else {
            Some(
                validate::co_path("staging_target_path", &req.staging_target_path)
                    .map_err(Status::from)?,
            )
        };
        let range = Range::from_proto(req.capacity_range.as_ref()).map_err(Status::from)?;
        let bytes = self
            .0
            .run(
                "NodeExpandVolume",
                vec![volume_key(id.as_str()), CAPACITY_KEY.to_string()],
                move |d| expand(d, &id, range, &path, staging),
            )
            .await?;
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: bytes as i64,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let rpcs: &[Rpc] = match (self.0.serves_node(), self.0.kind) {
            // The resizer front: csi-resizer, seeing node expansion only, records the new size
            // and kubelet has the volume's node plugin grow it.
            (false, Kind::Local) if self.0.mode == Mode::Resizer => &[Rpc::ExpandVolume],
            (false, _) => &[],
            (true, Kind::Local) => &[
                Rpc::StageUnstageVolume,
                Rpc::GetVolumeStats,
                Rpc::ExpandVolume,
                Rpc::VolumeCondition,
                Rpc::SingleNodeMultiWriter,
            ],
            (true, Kind::Shared) => &[
                Rpc::GetVolumeStats,
                Rpc::VolumeCondition,
                Rpc::SingleNodeMultiWriter,
            ],
        };
        let capabilities = rpcs
            .iter()
            .map(|&t| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(
                    node_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> std::result::Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.0.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(Topology {
                segments: self.0.segments.clone().into_iter().collect(),
            }),
        }))
    }
}
