//! Berth's end-to-end harness: a real control plane on this machine (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler built from the Go module proxy) with simulated nodes (kwok),
//! Berth's CSI plugins behind the real CSI sidecars, and helpers the e2e tests use to reach it.

pub mod cluster;
pub mod config;
pub mod control_plane;
pub mod csi;
pub mod mounts;
pub mod nodes;
pub mod pki;
pub mod process;
pub mod testing;

use std::path::PathBuf;

/// The default state dir: `$BERTH_CACHE/cluster` (`$BERTH_CACHE` defaults to `~/.cache/berth`).
pub fn default_state_dir() -> PathBuf {
    let cache = std::env::var_os("BERTH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/berth")
        });
    cache.join("cluster")
}

/// Selects rustls's crypto provider (ring) for this process. kube's rustls feature leaves the choice
/// to the program, and without one the first TLS connection panics. Idempotent.
pub fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
