//! Simulated nodes: the Node objects kwok manages (kwok makes them Ready, keeps their leases, and
//! runs the Pods bound to them). The object is built by a pure function; `apply` writes it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::config::NodeSpec;
use crate::control_plane::KWOK_NODE_ANNOTATION;

/// The field manager the harness applies node metadata with (its labels are the config's).
pub const FIELD_MANAGER: &str = "berth-e2e";

/// Errors while writing or waiting for nodes.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("applying Node {node}: {source}")]
    Apply { node: String, source: kube::Error },
    #[error("reading Node {node}: {source}")]
    Get { node: String, source: kube::Error },
}

/// The labels every simulated node carries, then the config's own.
pub fn node_labels(spec: &NodeSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), spec.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("type".to_string(), "kwok".to_string()),
    ]);
    labels.extend(spec.labels.clone());
    labels
}

/// The server-side-apply body of a simulated node's metadata.
pub fn node_object(spec: &NodeSpec) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": node_labels(spec),
            "annotations": { KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0" },
        },
    })
}

/// What a simulated node offers the scheduler: plenty, so only storage capacity ever limits placement.
pub fn node_status_patch() -> serde_json::Value {
    let res = json!({ "cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti" });
    json!({ "status": { "capacity": res, "allocatable": res } })
}

/// Creates or updates the node (metadata by server-side apply, capacity in status).
pub async fn apply(api: &Api<Node>, spec: &NodeSpec) -> Result<(), NodeError> {
    let err = |source| NodeError::Apply {
        node: spec.name.clone(),
        source,
    };
    api.patch(
        &spec.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(node_object(spec)),
    )
    .await
    .map_err(err)?;
    api.patch_status(
        &spec.name,
        &PatchParams::default(),
        &Patch::Merge(node_status_patch()),
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// True if the node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_object_carries_standard_and_configured_labels_and_the_kwok_annotation() {
        let spec = NodeSpec {
            name: "node-2".into(),
            labels: BTreeMap::from([("rack".to_string(), "r2".to_string())]),
        };
        let obj = node_object(&spec);
        assert_eq!(
            obj["metadata"]["labels"]["kubernetes.io/hostname"],
            "node-2"
        );
        assert_eq!(obj["metadata"]["labels"]["rack"], "r2");
        assert_eq!(obj["metadata"]["annotations"][KWOK_NODE_ANNOTATION], "fake");
        // The harness's own labels may override the defaults (for example a different arch).
        let spec = NodeSpec {
            name: "n".into(),
            labels: BTreeMap::from([("kubernetes.io/arch".to_string(), "arm64".to_string())]),
        };
        assert_eq!(node_labels(&spec)["kubernetes.io/arch"], "arm64");
    }

    #[test]
    fn readiness_follows_the_ready_condition() {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        assert!(!is_ready(&node));
        node.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        assert!(is_ready(&node));
        assert!(!is_ready(&Node::default()));
    }
}
