//! The CSI Controller service: create, delete, expand, list and snapshot volumes, and report the
//! capacity the scheduler uses. Requests are validated here; pools do the filesystem work.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::access;
use crate::driver::{CAPACITY_KEY, Driver, Kind, snapshot_key, volume_key};
use crate::error::{CsiError, Result};
use crate::params::{Backend, FsType, LocalParams, SharedParams};
use crate::pool::local::LocalPool;
use crate::pool::{Range, resolve_capacity};
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::rpc::Type as Rpc;
use crate::proto::*;
use crate::record::{Access, Enforcement, SnapshotRecord, Source, VolumeRecord, now_unix};
use crate::topology;
use crate::validate::Id;

pub struct ControllerService(pub Arc<Driver>);

impl ControllerService {
    fn require(&self) -> std::result::Result<(), Status> {
        if self.0.serves_controller() {
            Ok(())
        } else {
            Err(Status::unimplemented(format!(
                "this plugin instance runs in {:?} mode and serves no controller RPCs",
                self.0.mode
            )))
        }
    }
}

/// The StorageClass parameters worth remembering (not the ones the CO adds per claim).
fn kept_parameters(params: &HashMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .filter(|(k, _)| !k.starts_with("csi.storage.k8s.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn source_of(req: &CreateVolumeRequest) -> Result<Option<Source>> {
    use volume_content_source::Type;
    match req
        .volume_content_source
        .as_ref()
        .and_then(|s| s.r#type.as_ref())
    {
        None => Ok(None),
        Some(Type::Snapshot(s)) => {
            Id::parse(
                "snapshot",
                "volume_content_source.snapshot.snapshot_id",
                &s.snapshot_id,
            )?;
            Ok(Some(Source::Snapshot(s.snapshot_id.clone())))
        }
        Some(Type::Volume(v)) => {
            Id::parse(
                "volume",
                "volume_content_source.volume.volume_id",
                &v.volume_id,
            )?;
            Ok(Some(Source::Volume(v.volume_id.clone())))
        }
    }
}

fn to_proto_volume(d: &Driver, rec: &VolumeRecord) -> Volume {
    use volume_content_source::{SnapshotSource, Type, VolumeSource};
    let content_source = rec.source.as_ref().map(|s| VolumeContentSource {
        r#type: Some(match s {
            Source::Snapshot(id) => Type::Snapshot(SnapshotSource {
                snapshot_id: id.clone(),
            }),
            Source::Volume(id) => Type::Volume(VolumeSource {
                volume_id: id.clone(),
            }),
        }),
    });
    let segments = match (&rec.pool, d.kind) {
        (Some(pool), Kind::Shared) => [(topology::shared_pool_key(pool), "true".to_string())]
            .into_iter()
            .collect(),
        _ => d.segments.clone().into_iter().collect(),
    };
    Volume {
        capacity_bytes: rec.capacity_bytes as i64,
        volume_id: rec.id.clone(),
        volume_context: HashMap::new(),
        content_source,
        accessible_topology: vec![Topology { segments }],
    }
}

fn condition(d: &Driver, rec: &VolumeRecord) -> VolumeCondition {
    let data_exists = match d.kind {
        Kind::Local => d
            .local
            .as_ref()
            .map(|p| p.data_path(rec).exists())
            .unwrap_or(false),
        Kind::Shared => Id::parse("volume", "volume_id", &rec.id)
            .ok()
            .and_then(|id| {
                d.shared
                    .get(rec.pool.as_deref().unwrap_or_default())
                    .map(|p| p.data_path(&id).exists())
            })
            .unwrap_or(false),
    };
    if !data_exists {
        return VolumeCondition {
            abnormal: true,
            message: "the volume's data is gone from its pool".into(),
        };
    }
    if rec.enforcement == Enforcement::None {
        return VolumeCondition {
            abnormal: false,
            message:
                "capacity is not enforced on this pool's filesystem; usage is tracked and reported"
                    .into(),
        };
    }
    VolumeCondition {
        abnormal: false,
        message: String::new(),
    }
}

/// One page of `all` for a ListVolumes/ListSnapshots request, and the token of the next page
/// (empty on the last). The token is the index of the next entry.
fn paginate<'a, T>(all: &'a [T], token: &str, max_entries: i32) -> Result<(&'a [T], String)> {
    if max_entries < 0 {
        return Err(CsiError::invalid("max_entries", "must not be negative"));
    }
    let start = if token.is_empty() {
        0
    } else {
        token
            .parse::<usize>()
            .ok()
            .filter(|&s| s <= all.len())
            .ok_or_else(|| {
                CsiError::BadToken(format!(
                    "starting_token {token:?} was not issued by this plugin"
                ))
            })?
    };
    let left = all.len() - start;
    let size = if max_entries == 0 {
        left
    } else {
        (max_entries as usize).min(left)
    };
    let next = if start + size < all.len() {
        (start + size).to_string()
    } else {
        String::new()
    };
    Ok((&all[start..start + size], next))
}

fn to_proto_snapshot(s: &SnapshotRecord) -> Snapshot {
    Snapshot {
        size_bytes: s.size_bytes as i64,
        snapshot_id: s.id.clone(),
        source_volume_id: s.source_volume_id.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: s.created_unix,
            nanos: 0,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// CreateVolume for the local driver (runs under the volume's and the capacity lock).
fn create_local(d: &Driver, req: &CreateVolumeRequest, id: Id) -> Result<VolumeRecord> {
    let pool = d.local()?;
    let params = LocalParams::parse(&req.parameters)?;
    let access = access::check_all(d.kind, params.backend, &req.volume_capabilities)?;
    let fs_type = match (params.backend, access) {
        (Backend::Loop, Access::Mount) => Some(loop_fs_type(req, params.fs_type)?),
        _ => None,
    };
    if !topology::satisfies(req.accessibility_requirements.as_ref(), &d.segments) {
        return Err(CsiError::NoRoomHere(format!(
            "node {} is not in the requested accessibility_requirements",
            d.node_id
        )));
    }
    let range = Range::from_proto(req.capacity_range.as_ref())?;
    let source = source_of(req)?;
    let source_size = match &source {
        None => None,
        Some(Source::Snapshot(sid)) => {
            let sid = Id::parse(
                "snapshot",
                "volume_content_source.snapshot.snapshot_id",
                sid,
            )?;
            Some(
                pool.get_snapshot(&sid)?
                    .ok_or_else(|| {
                        CsiError::NotFound(format!("source snapshot {sid} does not exist"))
                    })?
                    .size_bytes,
            )
        }
        Some(Source::Volume(vid)) => {
            let vid = Id::parse("volume", "volume_content_source.volume.volume_id", vid)?;
            Some(pool.must_get(&vid)?.capacity_bytes)
        }
    };
    let capacity = resolve_capacity(
        range,
        LocalPool::minimum(params.backend, fs_type, access),
        source_size,
    )?;
    let wanted = VolumeRecord {
        id: id.to_string(),
        name: req.name.clone(),
        capacity_bytes: capacity,
        backend: params.backend,
        fs_type,
        access,
        enforcement: Enforcement::None,
        source,
        pool: None,
        on_delete: None,
        parameters: kept_parameters(&req.parameters),
        created_unix: now_unix(),
        fs_bytes: 0,
    };
    pool.create(wanted, range)
}

/// The filesystem of a loop volume: the capability's fs_type or the `fsType` parameter (they must
/// agree when both are given), ext4 by default.
fn loop_fs_type(req: &CreateVolumeRequest, param: Option<FsType>) -> Result<FsType> {
    let from_cap = req
        .volume_capabilities
        .iter()
        .filter_map(access::mount_of)
        .map(|m| m.fs_type.as_str())
        .find(|f| !f.is_empty());
    let cap_fs = match from_cap {
        None => None,
        Some("ext4") => Some(FsType::Ext4),
        Some("xfs") => Some(FsType::Xfs),
        Some(other) => {
            return Err(CsiError::invalid(
                "volume_capabilities.mount.fs_type",
                format!("{other:?} is not a supported filesystem (ext4, xfs)"),
            ));
        }
    };
    match (cap_fs, param) {
        (Some(c), Some(p)) if c != p => Err(CsiError::invalid(
            "parameters.fsType",
            format!(
                "{} disagrees with the capability's fs_type {}",
                p.as_str(),
                c.as_str()
            ),
        )),
        (c, p) => Ok(c.or(p).unwrap_or(FsType::Ext4)),
    }
}

/// CreateVolume for the shared driver.
fn create_shared(d: &Driver, req: &CreateVolumeRequest, id: Id) -> Result<VolumeRecord> {
    let params = SharedParams::parse(&req.parameters)?;
    access::check_all(d.kind, Backend::Dir, &req.volume_capabilities)?;
    let pool = pick_shared_pool(d, params.pool.as_deref())?;
    if let Some((other, _)) = d.find_shared(&id)?
        && other.name != pool.name
    {
        return Err(CsiError::AlreadyExists(format!(
            "volume {:?} already exists in shared pool {:?}",
            req.name, other.name
        )));
    }
    let ours = [(topology::shared_pool_key(&pool.name), "true".to_string())]
        .into_iter()
        .collect();
    if !topology::satisfies(req.accessibility_requirements.as_ref(), &ours) {
        return Err(CsiError::NoRoomHere(format!(
            "no node in the requested accessibility_requirements mounts shared pool {:?}",
            pool.name
        )));
    }
    if req.volume_content_source.is_some() {
        return Err(CsiError::invalid(
            "volume_content_source",
            "shared volumes cannot be cloned or restored",
        ));
    }
    let range = Range::from_proto(req.capacity_range.as_ref())?;
    let capacity = resolve_capacity(range, 0, None)?;
    let wanted = VolumeRecord {
        id: id.to_string(),
        name: req.name.clone(),
        capacity_bytes: capacity,
        backend: Backend::Dir,
        fs_type: None,
        access: Access::Mount,
        enforcement: Enforcement::None,
        source: None,
        pool: Some(pool.name.clone()),
        on_delete: Some(params.on_delete),
        parameters: kept_parameters(&req.parameters),
        created_unix: now_unix(),
        fs_bytes: 0,
    };
    pool.create(wanted, &params, range)
}

fn pick_shared_pool<'a>(
    d: &'a Driver,
    wanted: Option<&str>,
) -> Result<&'a crate::pool::shared::SharedPool> {
    let names = || d.shared.keys().cloned().collect::<Vec<_>>().join(", ");
    match wanted {
        Some(name) => d.shared.get(name).ok_or_else(|| {
            CsiError::invalid(
                "parameters.pool",
                format!("no shared pool {name:?} (this driver has: {})", names()),
            )
        }),
        None if d.shared.len() == 1 => Ok(d.shared.values().next().expect("one pool")),
        None => Err(CsiError::invalid(
            "parameters.pool",
            format!(
                "is required when there are several shared pools ({})",
                names()
            ),
        )),
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> std::result::Result<Response<CreateVolumeResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::from_name("name", &req.name).map_err(Status::from)?;
        let mut keys = vec![volume_key(id.as_str()), CAPACITY_KEY.to_string()];
        if let Ok(Some(Source::Volume(v))) = source_of(&req) {
            keys.push(volume_key(&v));
        }
        if let Ok(Some(Source::Snapshot(s))) = source_of(&req) {
            keys.push(snapshot_key(&s));
        }
        let rec = self
            .0
            .run("CreateVolume", keys, move |d| match d.kind {
                Kind::Local => create_local(d, &req, id).map(|r| to_proto_volume(d, &r)),
                Kind::Shared => create_shared(d, &req, id).map(|r| to_proto_volume(d, &r)),
            })
            .await?;
        Ok(Response::new(CreateVolumeResponse { volume: Some(rec) }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> std::result::Result<Response<DeleteVolumeResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        self.0
            .run(
                "DeleteVolume",
                vec![volume_key(id.as_str()), CAPACITY_KEY.to_string()],
                move |d| match d.kind {
                    Kind::Local => d.local()?.delete(&id),
                    Kind::Shared => match d.find_shared(&id)? {
                        Some((pool, _)) => pool.delete(&id),
                        None => Ok(()),
                    },
                },
            )
            .await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<ControllerPublishVolumeRequest>,
    ) -> std::result::Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented("Berth volumes need no attach step"))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<ControllerUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented("Berth volumes need no attach step"))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> std::result::Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        if req.volume_capabilities.is_empty() {
            return Err(
                CsiError::invalid("volume_capabilities", "at least one is required").into(),
            );
        }
        self.0
            .run(
                "ValidateVolumeCapabilities",
                vec![volume_key(id.as_str())],
                move |d| {
                    let rec = d
                        .find_volume(&id)?
                        .ok_or_else(|| CsiError::NotFound(format!("volume {id} does not exist")))?;
                    let verdict = req
                        .volume_capabilities
                        .iter()
                        .map(|c| access::check(d.kind, rec.backend, c, "volume_capabilities"))
                        .find_map(|r| match r {
                            Ok(a) if a != rec.access => {
                                Some(format!("volume {id} is a {:?} volume", rec.access))
                            }
                            Ok(_) => None,
                            Err(e) => Some(e.to_string()),
                        });
                    Ok(match verdict {
                        Some(message) => ValidateVolumeCapabilitiesResponse {
                            confirmed: None,
                            message,
                        },
                        None => ValidateVolumeCapabilitiesResponse {
                            confirmed: Some(validate_volume_capabilities_response::Confirmed {
                                volume_context: req.volume_context,
                                volume_capabilities: req.volume_capabilities,
                                parameters: req.parameters,
                                mutable_parameters: req.mutable_parameters,
                            }),
                            message: String::new(),
                        },
                    })
                },
            )
            .await
            .map(Response::new)
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> std::result::Result<Response<ListVolumesResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        self.0
            .run("ListVolumes", vec![], move |d| {
                let mut all = match d.kind {
                    Kind::Local => d.local()?.list()?,
                    Kind::Shared => {
                        let mut v = Vec::new();
                        for p in d.shared.values() {
                            v.extend(p.list()?);
                        }
                        v
                    }
                };
                all.sort_by(|a, b| a.id.cmp(&b.id));
                let (page, next_token) = paginate(&all, &req.starting_token, req.max_entries)?;
                let entries = page
                    .iter()
                    .map(|rec| list_volumes_response::Entry {
                        volume: Some(to_proto_volume(d, rec)),
                        status: Some(list_volumes_response::VolumeStatus {
                            published_node_ids: vec![],
                            volume_condition: Some(condition(d, rec)),
                        }),
                    })
                    .collect();
                Ok(ListVolumesResponse {
                    entries,
                    next_token,
                })
            })
            .await
            .map(Response::new)
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> std::result::Result<Response<GetCapacityResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        self.0
            .run("GetCapacity", vec![], move |d| {
                let requirement = |segments: &topology::Segments| {
                    req.accessible_topology.as_ref().is_none_or(|t| {
                        let r = TopologyRequirement {
                            requisite: vec![t.clone()],
                            preferred: vec![],
                        };
                        topology::satisfies(Some(&r), segments)
                    })
                };
                let (available, minimum) = match d.kind {
                    Kind::Local => {
                        let params = LocalParams::parse(&req.parameters)?;
                        let access = if req.volume_capabilities.is_empty() {
                            Access::Mount
                        } else {
                            access::check_all(d.kind, params.backend, &req.volume_capabilities)?
                        };
                        let min = LocalPool::minimum(params.backend, params.fs_type, access);
                        if requirement(&d.segments) {
                            (d.local()?.capacity()?.1, min)
                        } else {
                            (0, min)
                        }
                    }
                    Kind::Shared => {
                        let params = SharedParams::parse(&req.parameters)?;
                        let pool = pick_shared_pool(d, params.pool.as_deref())?;
                        let ours = [(topology::shared_pool_key(&pool.name), "true".to_string())]
                            .into_iter()
                            .collect();
                        if requirement(&ours) {
                            (crate::pool::fs_space(pool.root())?.1, 0)
                        } else {
                            (0, 0)
                        }
                    }
                };
                Ok(GetCapacityResponse {
                    available_capacity: available as i64,
                    maximum_volume_size: Some(available as i64),
                    minimum_volume_size: Some(minimum as i64),
                })
            })
            .await
            .map(Response::new)
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let rpcs: &[Rpc] = match (self.0.serves_controller(), self.0.kind) {
            (false, _) => &[],
            (true, Kind::Local) => &[
                Rpc::CreateDeleteVolume,
                Rpc::CreateDeleteSnapshot,
                Rpc::ListSnapshots,
                Rpc::CloneVolume,
                Rpc::ExpandVolume,
                Rpc::ListVolumes,
                Rpc::GetCapacity,
                Rpc::GetVolume,
                Rpc::VolumeCondition,
                Rpc::SingleNodeMultiWriter,
            ],
            (true, Kind::Shared) => &[
                Rpc::CreateDeleteVolume,
                Rpc::ExpandVolume,
                Rpc::ListVolumes,
                Rpc::GetCapacity,
                Rpc::GetVolume,
                Rpc::VolumeCondition,
                Rpc::SingleNodeMultiWriter,
            ],
        };
        let capabilities = rpcs
            .iter()
            .map(|&t| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(
                    controller_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> std::result::Result<Response<CreateSnapshotResponse>, Status> {
        self.require()?;
        if self.0.kind != Kind::Local {
            return Err(Status::unimplemented("shared volumes have no snapshots"));
        }
        let req = request.into_inner();
        let id = Id::from_name("name", &req.name).map_err(Status::from)?;
        let source =
            Id::parse("volume", "source_volume_id", &req.source_volume_id).map_err(Status::from)?;
        if let Some(k) = req
            .parameters
            .keys()
            .find(|k| !k.starts_with("csi.storage.k8s.io/"))
        {
            return Err(CsiError::invalid(
                format!("parameters.{k}"),
                "snapshots take no parameters",
            )
            .into());
        }
        let keys = vec![snapshot_key(id.as_str()), volume_key(source.as_str())];
        let snap = self
            .0
            .run("CreateSnapshot", keys, move |d| {
                d.local()?.create_snapshot(&id, &req.name, &source)
            })
            .await?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(to_proto_snapshot(&snap)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> std::result::Result<Response<DeleteSnapshotResponse>, Status> {
        self.require()?;
        if self.0.kind != Kind::Local {
            return Err(Status::unimplemented("shared volumes have no snapshots"));
        }
        let req = request.into_inner();
        let id = Id::parse("snapshot", "snapshot_id", &req.snapshot_id).map_err(Status::from)?;
        self.0
            .run(
                "DeleteSnapshot",
                vec![snapshot_key(id.as_str())],
                move |d| d.local()?.delete_snapshot(&id),
            )
            .await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> std::result::Result<Response<ListSnapshotsResponse>, Status> {
        self.require()?;
        if self.0.kind != Kind::Local {
            return Err(Status::unimplemented("shared volumes have no snapshots"));
        }
        let req = request.into_inner();
        self.0
            .run("ListSnapshots", vec![], move |d| {
                let mut all: Vec<SnapshotRecord> = d
                    .local()?
                    .list_snapshots()?
                    .into_iter()
                    .filter(|s| req.snapshot_id.is_empty() || s.id == req.snapshot_id)
                    .filter(|s| {
                        req.source_volume_id.is_empty()
                            || s.source_volume_id == req.source_volume_id
                    })
                    .collect();
                all.sort_by(|a, b| a.id.cmp(&b.id));
                let (page, next_token) = paginate(&all, &req.starting_token, req.max_entries)?;
                let entries = page
                    .iter()
                    .map(|s| list_snapshots_response::Entry {
                        snapshot: Some(to_proto_snapshot(s)),
                    })
                    .collect();
                Ok(ListSnapshotsResponse {
                    entries,
                    next_token,
                })
            })
            .await
            .map(Response::new)
    }

    async fn get_snapshot(
        &self,
        _: Request<GetSnapshotRequest>,
    ) -> std::result::Result<Response<GetSnapshotResponse>, Status> {
        Err(Status::unimplemented(
            "GetSnapshot is not offered; use ListSnapshots",
        ))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> std::result::Result<Response<ControllerExpandVolumeResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        let range = Range::from_proto(req.capacity_range.as_ref()).map_err(Status::from)?;
        let wanted = range
            .expansion_target()
            .ok_or_else(|| Status::from(CsiError::invalid("capacity_range", "is required")))?;
        let (rec, node_expansion_required) = self
            .0
            .run(
                "ControllerExpandVolume",
                vec![volume_key(id.as_str()), CAPACITY_KEY.to_string()],
                move |d| {
                    let rec = match d.kind {
                        Kind::Local => d.local()?.expand(&id, wanted)?,
                        Kind::Shared => match d.find_shared(&id)? {
                            Some((pool, _)) => pool.expand(&id, wanted)?,
                            None => {
                                return Err(CsiError::NotFound(format!(
                                    "volume {id} does not exist"
                                )));
                            }
                        },
                    };
                    range.check_grown(&id, rec.capacity_bytes)?;
                    let node = rec.backend == Backend::Loop;
                    Ok((rec, node))
                },
            )
            .await?;
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: rec.capacity_bytes as i64,
            node_expansion_required,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> std::result::Result<Response<ControllerGetVolumeResponse>, Status> {
        self.require()?;
        let req = request.into_inner();
        let id = Id::parse("volume", "volume_id", &req.volume_id).map_err(Status::from)?;
        self.0
            .run(
                "ControllerGetVolume",
                vec![volume_key(id.as_str())],
                move |d| {
                    let rec = d
                        .find_volume(&id)?
                        .ok_or_else(|| CsiError::NotFound(format!("volume {id} does not exist")))?;
                    Ok(ControllerGetVolumeResponse {
                        volume: Some(to_proto_volume(d, &rec)),
                        status: Some(controller_get_volume_response::VolumeStatus {
                            published_node_ids: vec![],
                            volume_condition: Some(condition(d, &rec)),
                        }),
                    })
                },
            )
            .await
            .map(Response::new)
    }

    async fn controller_modify_volume(
        &self,
        _: Request<ControllerModifyVolumeRequest>,
    ) -> std::result::Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "Berth volumes have no mutable parameters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_table() {
        let all = [10, 11, 12, 13, 14];
        let table: Vec<(&str, i32, &[i32], &str)> = vec![
            ("", 0, &all, ""),
            ("", 2, &all[..2], "2"),
            ("2", 2, &all[2..4], "4"),
            ("4", 2, &all[4..], ""),
            ("5", 0, &[], ""),
        ];
        for (token, max, want, next) in table {
            let (page, n) = paginate(&all, token, max).unwrap();
            assert_eq!(
                (page, n.as_str()),
                (want, next),
                "token {token:?} max {max}"
            );
        }
        assert_eq!(
            paginate(&all, "6", 0).unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            paginate(&all, "x", 0).unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            paginate(&all, "", -1).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn loop_filesystem_comes_from_capability_or_parameter() {
        use volume_capability::{AccessType, MountVolume};
        let req = |fs: &str| CreateVolumeRequest {
            volume_capabilities: vec![VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume {
                    fs_type: fs.into(),
                    ..Default::default()
                })),
                access_mode: None,
            }],
            ..Default::default()
        };
        assert_eq!(loop_fs_type(&req(""), None).unwrap(), FsType::Ext4);
        assert_eq!(loop_fs_type(&req("xfs"), None).unwrap(), FsType::Xfs);
        assert_eq!(
            loop_fs_type(&req(""), Some(FsType::Xfs)).unwrap(),
            FsType::Xfs
        );
        assert_eq!(
            loop_fs_type(&req("xfs"), Some(FsType::Xfs)).unwrap(),
            FsType::Xfs
        );
        assert!(
            loop_fs_type(&req("ext4"), Some(FsType::Xfs))
                .unwrap_err()
                .to_string()
                .contains("parameters.fsType")
        );
        assert!(
            loop_fs_type(&req("btrfs"), None)
                .unwrap_err()
                .to_string()
                .contains("fs_type")
        );
    }
}
