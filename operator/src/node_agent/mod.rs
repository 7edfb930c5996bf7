//! The node agent (`berth-operator node-agent`, one per node): applies `ImageCachePolicy` (image garbage
//! collection through the CRI API) and `RegistryMirror` (containerd `hosts.toml` / CRI-O drop-ins) to the
//! node it runs on. Decisions live in pure modules (`gc_plan`, `mirror_render`, `reference`); the rest is
//! thin I/O around them.

pub mod cli;
pub mod gc;
pub mod gc_plan;
pub mod metrics;
pub mod mirror;
pub mod mirror_files;
pub mod mirror_render;
pub mod reference;
pub mod report;
pub mod run;
pub mod usage;
