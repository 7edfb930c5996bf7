//! `RegistryMirror` (cluster-scoped): Docker's `registry-mirrors` / `insecure-registries` for every node.
//! The node agent turns one into containerd's `<config_path>/<registry>/hosts.toml` (or a CRI-O
//! `registries.conf.d` drop-in) and reports, per node, whether it could.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Mirrors (and settings) for one registry host.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "RegistryMirror",
    doc = "Registry mirrors and plain-HTTP registries for a set of nodes: Docker's registry-mirrors and insecure-registries.",
    status = "RegistryMirrorStatus",
    printcolumn = r#"{"name":"Registry","type":"string","jsonPath":".spec.registry"}"#,
    printcolumn = r#"{"name":"Applied","type":"integer","jsonPath":".status.nodesApplied"}"#,
    printcolumn = r#"{"name":"Problems","type":"integer","jsonPath":".status.nodesWithProblems"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RegistryMirrorSpec {
    /// The registry host these settings are for, as it appears in image references (`docker.io`,
    /// `registry.example.com:5000`), or `_default` for every registry without settings of its own.
    #[x_kube(validation = kube::core::Rule::new(
        "self == '_default' || (size(self) <= 253 && self.matches('^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]{1,5})?$'))"
    ).message("spec.registry must be a registry host (optionally with :port) such as docker.io, or _default"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf")
        .message("spec.registry is immutable: create another RegistryMirror for another registry"))]
    #[schemars(length(max = 260))]
    pub registry: String,

    /// Where the registry itself is reached when no mirror serves a request, e.g. `http://registry.lan:5000`
    /// for a plain-HTTP private registry. Default: `https://<registry>` (Docker Hub's real endpoint for
    /// `docker.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(
        "size(self) <= 2048 && self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')"
    ).message("spec.server must be an http:// or https:// URL"))]
    pub server: Option<String>,

    /// Mirrors tried in order before the registry itself.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub mirrors: Vec<Mirror>,

    /// Labels a Node must carry for this mirror to be configured on it. Empty: every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && size(self[k]) <= 63 && self[k].matches('^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$'))"
    ).message("spec.nodeSelector must map label keys to label values (at most 64 entries)"))]
    pub node_selector: BTreeMap<String, String>,
}

/// One mirror endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.caSecretRef) || self.url.startsWith('https://')")
    .message("spec.mirrors[].caSecretRef needs an https:// url: a plain-HTTP mirror has no certificate"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.skipVerify) || !self.skipVerify || self.url.startsWith('https://')")
    .message("spec.mirrors[].skipVerify needs an https:// url: a plain-HTTP mirror has no certificate"))]
pub struct Mirror {
    /// The mirror's URL: `https://host[:port][/path]`, or `http://...` for a plain-HTTP mirror (Docker's
    /// `insecure-registries`).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(
        "size(self) <= 2048 && self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')"
    ).message("spec.mirrors[].url must be an http:// or https:// URL"))]
    pub url: String,

    /// What the mirror may be asked to do: `pull` (fetch content), `resolve` (turn a tag into a digest),
    /// `push`. Default `[pull, resolve]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3), inner(length(max = 16)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(c, c in ['pull', 'resolve', 'push'])")
        .message("spec.mirrors[].capabilities entries must be pull, resolve or push"))]
    pub capabilities: Vec<String>,

    /// Accept any TLS certificate from this mirror. Only for tests and trusted networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_verify: Option<bool>,

    /// A CA bundle (PEM) to trust for this mirror, from a Secret key; written beside `hosts.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,

    /// Send requests to the URL's path as-is instead of appending `/v2` (for mirrors served under a
    /// sub-path, such as some artifact managers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_path: Option<bool>,
}

/// A key of a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's namespace.
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self) <= 63")
        .message("spec.mirrors[].caSecretRef.namespace must be a namespace name"))]
    #[schemars(length(max = 63))]
    pub namespace: String,
    /// The Secret's name.
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$') && size(self) <= 253")
        .message("spec.mirrors[].caSecretRef.name must be a Secret name"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// The key holding the PEM bundle. Default `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[-._a-zA-Z0-9]+$') && size(self) <= 253")
        .message("spec.mirrors[].caSecretRef.key must be a Secret key"))]
    #[schemars(length(max = 253))]
    pub key: Option<String>,
}

/// Per-node outcome. Each node's agent owns its own entry (server-side apply, one field manager per node).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistryMirrorStatus {
    /// Nodes that report this mirror applied and in effect (maintained by the agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_applied: Option<i32>,
    /// Nodes that report a problem (maintained by the agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_with_problems: Option<i32>,
    /// One entry per node: what the agent did there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["node".into()]))]
    pub nodes: Vec<NodeMirrorStatus>,
}

/// What one node's agent did with this mirror.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeMirrorStatus {
    /// The node.
    pub node: String,
    /// `Applied`, `Conflict` (a file Berth does not own is in the way), `NoConfigPath` (containerd has no
    /// `config_path`), `NotSelected`, or `Error`.
    pub state: String,
    /// The file written, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What to do about a problem, e.g. the exact line to add to containerd's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation of the spec the node applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
