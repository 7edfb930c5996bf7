//! The command lines of the control plane: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok, all on 127.0.0.1. Pure functions of the cluster config, so the flags are
//! reviewed and unit-tested in one place; `cluster.rs` starts them.

use std::path::Path;

use crate::config::ClusterConfig;
use crate::pki::PkiFiles;

/// The Service CIDR; its first address is in the API server certificate.
pub const SERVICE_CIDR: &str = "10.0.0.0/16";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// etcd, single member, plain HTTP on loopback. fsync is off: the data is thrown away with the
/// cluster and fsync on a shared CI disk makes every write wait.
pub fn etcd_args(cfg: &ClusterConfig) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", cfg.ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", cfg.ports.etcd_peer);
    vec![
        "--name=berth-e2e".into(),
        format!("--data-dir={}", p(&cfg.state_dir.join("etcd"))),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=berth-e2e={peer}"),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
        "--quota-backend-bytes=4294967296".into(),
    ]
}

pub fn apiserver_args(cfg: &ClusterConfig, pki: &PkiFiles) -> Vec<String> {
    vec![
        format!("--etcd-servers=http://127.0.0.1:{}", cfg.ports.etcd_client),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={}", cfg.ports.apiserver),
        format!("--tls-cert-file={}", p(&pki.apiserver_cert)),
        format!("--tls-private-key-file={}", p(&pki.apiserver_key)),
        format!("--client-ca-file={}", p(&pki.ca_cert)),
        format!("--service-account-key-file={}", p(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        // A loopback address may not be an Endpoints address, so the `kubernetes` Service's
        // endpoints are not maintained; nothing here reaches the API server through it.
        "--endpoint-reconciler-type=none".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

pub fn controller_manager_args(cfg: &ClusterConfig, pki: &PkiFiles) -> Vec<String> {
    let kc = p(&cfg.kubeconfig());
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", cfg.ports.controller_manager),
        format!("--service-account-private-key-file={}", p(&pki.sa_key)),
        format!("--root-ca-file={}", p(&pki.ca_cert)),
        format!("--cluster-signing-cert-file={}", p(&pki.ca_cert)),
        format!("--cluster-signing-key-file={}", p(&pki.ca_key)),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--use-service-account-credentials=false".into(),
        // The default client rate (20/s) makes the PV controller the bottleneck when many claims
        // bind at once; a real control plane node has the same knob.
        "--kube-api-qps=200".into(),
        "--kube-api-burst=400".into(),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

pub fn scheduler_args(cfg: &ClusterConfig) -> Vec<String> {
    let kc = p(&cfg.kubeconfig());
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", cfg.ports.scheduler),
        "--kube-api-qps=200".into(),
        "--kube-api-burst=400".into(),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

/// The annotation that marks a Node as kwok's to simulate (kwok manages only those).
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// kwok with its built-in stages: nodes become Ready and keep their leases; Pods bound to them
/// become Running and Ready, and go away when deleted.
pub fn kwok_args(cfg: &ClusterConfig) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", p(&cfg.kubeconfig())),
        "--manage-all-nodes=false".into(),
        format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
        "--cidr=10.244.0.0/16".into(),
        "--node-ip=127.0.0.1".into(),
        format!("--server-address=127.0.0.1:{}", cfg.ports.kwok),
        "--node-lease-duration-seconds=40".into(),
        // The config file is ours (empty), so a ~/.kwok/kwok.yaml of the user's changes nothing.
        format!("--config={}", p(&cfg.state_dir.join("kwok.yaml"))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PluginKind, Ports};

    fn cfg() -> ClusterConfig {
        ClusterConfig {
            state_dir: "/st".into(),
            ports: Ports::from_base(30000),
            nodes: vec![],
            plugin: PluginKind::Berth,
            topology_labels: vec![],
            shared_pools: vec![],
            capacity_poll_seconds: 5,
            pool_sizes: Default::default(),
            pool_fs: "btrfs".into(),
            nolinks_pool: false,
        }
    }

    fn has(args: &[String], want: &str) -> bool {
        args.iter().any(|a| a == want)
    }

    #[test]
    fn everything_listens_on_loopback_at_the_configured_ports() {
        let c = cfg();
        let pki = PkiFiles::in_dir(Path::new("/st/pki"));
        let e = etcd_args(&c);
        assert!(has(&e, "--listen-client-urls=http://127.0.0.1:30000"));
        assert!(has(&e, "--data-dir=/st/etcd"));
        let a = apiserver_args(&c, &pki);
        assert!(has(&a, "--etcd-servers=http://127.0.0.1:30000"));
        assert!(has(&a, "--secure-port=30002"));
        assert!(has(&a, "--bind-address=127.0.0.1"));
        assert!(has(&a, "--service-account-key-file=/st/pki/sa.pub"));
        let m = controller_manager_args(&c, &pki);
        assert!(has(&m, "--secure-port=30003"));
        assert!(has(&m, "--kubeconfig=/st/kubeconfig"));
        assert!(has(&m, "--service-account-private-key-file=/st/pki/sa.key"));
        let s = scheduler_args(&c);
        assert!(has(&s, "--secure-port=30004"));
        let k = kwok_args(&c);
        assert!(has(&k, "--server-address=127.0.0.1:30005"));
        assert!(has(
            &k,
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake"
        ));
    }
}
