//! The driver's state shared by the three CSI services: which driver and mode it runs as, the pools
//! it serves, the node's topology, and the per-volume locks. Also the one helper every RPC goes
//! through to take its locks, run blocking filesystem work off the async threads, and log errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::Status;
use tracing::{info, warn};

use crate::error::{CsiError, Result};
use crate::locks::KeyedLocks;
use crate::pool::local::LocalPool;
use crate::pool::shared::SharedPool;
use crate::record::VolumeRecord;
use crate::topology::{self, Segments};
use crate::validate::{self, Id};

pub const LOCAL_DRIVER: &str = "local.csi.berth.dev";
pub const SHARED_DRIVER: &str = "shared.csi.berth.dev";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `local.csi.berth.dev`: volumes on this node's pool.
    Local,
    /// `shared.csi.berth.dev`: directories on shared filesystems.
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Node service only (NodeStage/NodePublish...).
    Node,
    /// Controller service only (CreateVolume/DeleteVolume...).
    Controller,
    /// Both (the local driver's distributed provisioning, and tests).
    All,
    /// The endpoint a central csi-resizer connects to for local volumes (`--driver local` only; no
    /// pool). Local volumes grow on their own node, so this instance serves no volume: it answers
    /// that the Controller service cannot expand and the Node service can, which makes csi-resizer
    /// record the new size and leave the growing to NodeExpandVolume on the volume's node.
    Resizer,
}

/// What the driver is started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub kind: Kind,
    pub mode: Mode,
    pub node_id: String,
    pub pool: Option<PathBuf>,
    pub shared_pools: Vec<(String, PathBuf)>,
    pub topology_labels: Vec<String>,
    pub node_labels: BTreeMap<String, String>,
}

pub struct Driver {
    pub kind: Kind,
    pub mode: Mode,
    pub node_id: String,
    /// The segments NodeGetInfo reports and local volumes carry.
    pub segments: Segments,
    pub local: Option<LocalPool>,
    pub shared: BTreeMap<String, SharedPool>,
    locks: KeyedLocks,
}

impl Driver {
    /// Opens the pools (recovering from any interrupted operation) and computes the topology.
    pub fn new(config: Config) -> Result<Driver> {
        if config.node_id.is_empty() {
            return Err(CsiError::invalid("--node-id", "a node ID is required"));
        }
        let controller = config.mode != Mode::Node;
        let (local, shared, segments) = match config.kind {
            Kind::Local if config.mode == Mode::Resizer => {
                if config.pool.is_some() || !config.shared_pools.is_empty() {
                    return Err(CsiError::invalid(
                        "--mode",
                        "resizer serves no volumes; give it no --pool or --shared-pool",
                    ));
                }
                info!("serving the node-only expansion answers for a central csi-resizer");
                (None, BTreeMap::new(), Segments::new())
            }
            Kind::Shared if config.mode == Mode::Resizer => {
                return Err(CsiError::invalid(
                    "--mode",
                    "resizer is for --driver local; shared volumes expand in --mode controller",
                ));
            }
            Kind::Local => {
                let root = config.pool.as_ref().ok_or_else(|| {
                    CsiError::invalid("--pool", "the local driver needs a pool directory")
                })?;
                if !config.shared_pools.is_empty() {
                    return Err(CsiError::invalid(
                        "--shared-pool",
                        "only for --driver shared",
                    ));
                }
                let pool = LocalPool::open(root)?;
                info!(pool = %pool.root().display(), enforcement = ?pool.dir_enforcement(), "local pool ready");
                let seg = topology::local_segments(
                    &config.node_id,
                    &config.node_labels,
                    &config.topology_labels,
                );
                (Some(pool), BTreeMap::new(), seg)
            }
            Kind::Shared => {
                if config.shared_pools.is_empty() {
                    return Err(CsiError::invalid(
                        "--shared-pool",
                        "the shared driver needs at least one NAME=PATH",
                    ));
                }
                if config.pool.is_some() {
                    return Err(CsiError::invalid("--pool", "only for --driver local"));
                }
                let mut pools = BTreeMap::new();
                let mut seg = Segments::new();
                for (name, path) in &config.shared_pools {
                    validate::pool_name(name).map_err(|e| CsiError::invalid("--shared-pool", e))?;
                    if pools.contains_key(name) {
                        return Err(CsiError::invalid(
                            "--shared-pool",
                            format!("pool {name:?} given twice"),
                        ));
                    }
                    pools.insert(name.clone(), SharedPool::open(name, path, controller)?);
                    seg.insert(topology::shared_pool_key(name), "true".to_string());
                }
                (None, pools, seg)
            }
        };
        Ok(Driver {
            kind: config.kind,
            mode: config.mode,
            node_id: config.node_id,
            segments,
            local,
            shared,
            locks: KeyedLocks::default(),
        })
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Local => LOCAL_DRIVER,
            Kind::Shared => SHARED_DRIVER,
        }
    }

    /// Whether the Controller service's volume RPCs are served.
    pub fn serves_controller(&self) -> bool {
        matches!(self.mode, Mode::Controller | Mode::All)
    }

    /// Whether the Node service's volume RPCs are served.
    pub fn serves_node(&self) -> bool {
        matches!(self.mode, Mode::Node | Mode::All)
    }

    /// Whether Identity reports CONTROLLER_SERVICE: every mode but node (csi-resizer refuses a
    /// plugin without it, so the resizer front reports it too).
    pub fn reports_controller_service(&self) -> bool {
        self.mode != Mode::Node
    }

    pub fn local(&self) -> Result<&LocalPool> {
        self.local
            .as_ref()
            .ok_or_else(|| CsiError::Unimplemented(format!("{} has no local pool", self.name())))
    }

    /// The shared pool holding volume `id`, with its record.
    pub fn find_shared(&self, id: &Id) -> Result<Option<(&SharedPool, VolumeRecord)>> {
        for pool in self.shared.values() {
            if let Some(rec) = pool.get(id)? {
                return Ok(Some((pool, rec)));
            }
        }
        Ok(None)
    }

    /// The record of volume `id` in whichever pool holds it.
    pub fn find_volume(&self, id: &Id) -> Result<Option<VolumeRecord>> {
        match self.kind {
            Kind::Local => self.local()?.get(id),
            Kind::Shared => Ok(self.find_shared(id)?.map(|(_, r)| r)),
        }
    }

    /// Runs `work` with `keys` locked on the blocking thread pool; logs and converts its error.
    pub async fn run<T, F>(
        self: &Arc<Self>,
        rpc: &'static str,
        keys: Vec<String>,
        work: F,
    ) -> std::result::Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Driver) -> Result<T> + Send + 'static,
    {
        let held = self.locks.lock(&keys).await;
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = work(&me);
            drop(held);
            r
        })
        .await
        .map_err(|e| Status::internal(format!("{rpc} panicked: {e}")))?;
        result.map_err(|e| {
            warn!(rpc, code = ?e.code(), error = %e, "request failed");
            Status::from(e)
        })
    }
}

/// Lock key of a volume.
pub fn volume_key(id: &str) -> String {
    format!("volume/{id}")
}

/// Lock key of a snapshot.
pub fn snapshot_key(id: &str) -> String {
    format!("snapshot/{id}")
}

/// Lock key taken by every operation that changes how much of a pool is reserved.
pub const CAPACITY_KEY: &str = "pool-capacity";
