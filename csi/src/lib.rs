//! Berth's CSI plugin: one binary serving `local.csi.berth.dev` (node-local volumes) and
//! `shared.csi.berth.dev` (directories on a shared filesystem).
//!
//! Where things are: the three CSI services in `identity`, `controller`, `node`; the pools and their
//! backends in `pool/` (`local`, `shared`, `btrfs`, `loopdev`); request checks in `validate`,
//! `params`, `access`; records in `record`; mounts in `mount`; the filesystem probe in `probe`.

pub mod access;
pub mod client;
pub mod cmd;

pub mod controller;
pub mod driver;
pub mod error;
pub mod failpoint;
pub mod identity;
pub mod locks;
pub mod mount;
pub mod node;
pub mod node_labels;
pub mod params;
pub mod pool;
pub mod probe;
pub mod record;
pub mod server;
pub mod topology;
pub mod validate;

/// The CSI v1.12.0 protocol, generated from `proto/csi.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}
