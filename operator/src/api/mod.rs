//! The `berth.dev/v1alpha1` API: one module per custom resource.

pub mod image_cache_policy;
pub mod registry_mirror;
pub mod replicated_database;
