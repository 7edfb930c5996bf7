//! Berth's operator library: the API types (`api`), the ReplicatedDatabase controller (`rdb`), the node
//! agent (`node_agent`) and CRD generation (`crdgen`).

pub mod api;
pub mod crdgen;
pub mod cri;
pub mod node_agent;
pub mod rdb;
