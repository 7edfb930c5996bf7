//! Helpers for the e2e tests: connect to the running cluster, make a throw-away namespace, and wait
//! for objects to reach a state.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolumeClaim, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::cluster::{self, ClusterError};
use crate::config::ClusterConfig;

/// A running cluster, as the tests see it.
pub struct TestCluster {
    pub cfg: ClusterConfig,
    pub client: Client,
}

/// The state dir the tests use: `BERTH_E2E_STATE_DIR`, else the harness default.
pub fn state_dir() -> PathBuf {
    std::env::var_os("BERTH_E2E_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(crate::default_state_dir)
}

impl TestCluster {
    /// Connects to the cluster `berth-cluster up` made in [`state_dir`].
    pub async fn connect() -> Result<Self, ClusterError> {
        let cfg = ClusterConfig::load(&state_dir())?;
        let client = cluster::client(&cfg.kubeconfig()).await?;
        Ok(Self { cfg, client })
    }

    /// Creates namespace `name` (deleting a leftover of an earlier run first) and waits for its
    /// default ServiceAccount, without which Pods are refused.
    pub async fn fresh_namespace(&self, name: &str) -> Result<(), ClusterError> {
        let ns: Api<Namespace> = Api::all(self.client.clone());
        if ns.get_opt(name).await.ok().flatten().is_some() {
            let _ = ns.delete(name, &DeleteParams::default()).await;
            cluster::wait_until(
                &format!("old namespace {name} gone"),
                Duration::from_secs(120),
                "",
                || async { matches!(ns.get_opt(name).await, Ok(None)) },
            )
            .await?;
        }
        ns.patch(
            name,
            &PatchParams::apply("berth-e2e-test"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            ),
        )
        .await
        .map_err(|source| ClusterError::Kube {
            what: format!("creating namespace {name}"),
            source,
        })?;
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        cluster::wait_until(
            &format!("default ServiceAccount in {name}"),
            Duration::from_secs(60),
            "",
            || async { matches!(sas.get_opt("default").await, Ok(Some(_))) },
        )
        .await?;
        Ok(())
    }
}

/// A PVC object. `source` is a VolumeSnapshot name to restore from.
pub fn pvc(
    name: &str,
    class: &str,
    size: &str,
    access: &str,
    source: Option<&str>,
) -> PersistentVolumeClaim {
    let mut v = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"storageClassName": class, "accessModes": [access],
                 "resources": {"requests": {"storage": size}}},
    });
    if let Some(snap) = source {
        v["spec"]["dataSource"] =
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap});
    }
    serde_json::from_value(v).expect("valid PVC")
}

/// A Pod that mounts `claims` at /data0, /data1...; on `node` if given (by node selector, so the
/// scheduler still decides and still checks volumes). kwok runs it without pulling the image.
pub fn pod(name: &str, claims: &[&str], node: Option<&str>) -> Pod {
    let volumes: Vec<_> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    let mounts: Vec<_> = (0..claims.len())
        .map(|i| json!({"name": format!("v{i}"), "mountPath": format!("/data{i}")}))
        .collect();
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [{"name": "app", "image": "registry.invalid/berth-e2e:none",
                            "volumeMounts": mounts}],
            "volumes": volumes,
            "terminationGracePeriodSeconds": 0,
        },
    });
    if let Some(n) = node {
        v["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": n});
    }
    serde_json::from_value(v).expect("valid Pod")
}

/// Polls `get` until `done` holds for the object, returning it; fails with `what` after `secs`.
pub async fn wait_for<K, F>(
    api: &Api<K>,
    name: &str,
    what: &str,
    secs: u64,
    done: F,
) -> Result<K, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    loop {
        match api.get_opt(name).await {
            Ok(Some(obj)) => {
                if done(&obj) {
                    return Ok(obj);
                }
                last = Some(obj);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "get failed; retrying"),
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{name}: {what} not reached in {secs}s; last seen: {last:#?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `name` is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, secs: u64) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(None) = api.get_opt(name).await {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{name} still exists after {secs}s"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn pvc_bound(p: &PersistentVolumeClaim) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

pub fn pod_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Messages of the Events about one object in `ns`.
pub async fn events_for(client: &Client, ns: &str, kind: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| {
                    e.involved_object.kind.as_deref() == Some(kind)
                        && e.involved_object.name.as_deref() == Some(name)
                })
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
