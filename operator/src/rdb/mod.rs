//! The ReplicatedDatabase controller: pure decision modules (`placement`: which members and where;
//! `failover`: roles, failover and switchover; `desired`: the Pods, PVCs and Services to apply; `rollout`: template changes one member at a time) beside the
//! thin `reconcile` that reads the cluster, calls them and applies the result.

pub mod controller;
pub mod desired;
pub mod engine;
pub mod failover;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod placement;
pub mod reconcile;
pub mod rollout;
