//! `ImageCachePolicy` (cluster-scoped): image garbage collection for a set of nodes, the fleet-wide
//! `docker image prune` / `docker system df`; and `ImageCacheReport`, the small per-node report the node
//! agent writes so that the policy's own status stays a handful of aggregate counts on any cluster size.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Go-style duration (`90s`, `30m`, `168h`, `1h30m`); CEL's `duration()` accepts exactly these units.
pub const DURATION_PATTERN: &str = "^([0-9]+(ns|us|ms|s|m|h))+$";

/// Characters an image reference pattern may hold: a reference plus the `*` and `?` wildcards.
pub const IMAGE_PATTERN_PATTERN: &str = "^[a-zA-Z0-9][a-zA-Z0-9*?._:/@-]*$";

/// Which nodes' image caches to manage, and how.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "ImageCachePolicy",
    shortname = "icp",
    doc = "Image garbage collection for the nodes a selector picks: the fleet's `docker image prune`.",
    status = "ImageCachePolicyStatus",
    printcolumn = r#"{"name":"Dry-run","type":"boolean","jsonPath":".spec.dryRun"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Images","type":"integer","jsonPath":".status.images"}"#,
    printcolumn = r#"{"name":"Reclaimable","type":"integer","jsonPath":".status.reclaimableBytes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageCachePolicySpec {
    /// Labels a Node must carry for this policy to apply to it. Empty: every node running the agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && size(self[k]) <= 63 && self[k].matches('^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$'))"
    ).message("spec.nodeSelector must map label keys to label values (at most 64 entries)"))]
    pub node_selector: BTreeMap<String, String>,

    /// How often each node evaluates the policy, as a duration of at least one minute (`30m`, `6h`).
    /// Default `1h`.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.matches('^([0-9]+(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m')"
    ).message("spec.interval must be a duration of at least 1m such as 30m or 6h (units ns, us, ms, s, m, h)"))]
    pub interval: String,

    /// Report what would be removed without removing anything (`docker system df` for the fleet).
    #[serde(default)]
    pub dry_run: bool,

    /// Which unused images to remove regardless of disk usage.
    #[serde(default)]
    pub prune: PruneSpec,

    /// Remove least recently used images when the image filesystem fills up. Unset: no disk-based removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_pressure: Option<DiskPressure>,

    /// Image reference patterns never removed, e.g. `postgres:*`, `registry.example.com/team/*`.
    /// `*` matches any run of characters, `?` one character. A pattern without a registry host means
    /// Docker Hub, as in `docker pull` (`postgres:*` is `docker.io/library/postgres:*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 512)))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(p, size(p) <= 512 && p.matches('^[a-zA-Z0-9*?][a-zA-Z0-9*?._:/@-]*$'))"
    ).message("spec.keep entries must be image reference patterns of at most 512 characters: letters, digits, '._:/@-' and the wildcards '*' and '?'"))]
    pub keep: Vec<String>,
}

fn default_interval() -> String {
    "1h".to_owned()
}

/// Which unused images to remove regardless of disk usage. Images in use, pinned images, the sandbox
/// (pause) image and `keep` matches are never removed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PruneSpec {
    /// Remove dangling images: images with no tag left (`docker image prune`). Default true.
    #[serde(default = "default_true")]
    pub dangling: bool,

    /// Remove images not used by any container for at least this long, as a duration (`168h` is a week).
    /// Age counts from the last time the agent saw the image in use, or from when it first saw the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.matches('^([0-9]+(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m')"
    ).message("spec.prune.unusedFor must be a duration of at least 1m such as 168h (units ns, us, ms, s, m, h)"))]
    pub unused_for: Option<String>,

    /// Keep at most this many images per repository (most recently used first); older unused ones go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 1000")
        .message("spec.prune.keepLatestPerRepository must be between 1 and 1000"))]
    pub keep_latest_per_repository: Option<i32>,
}

impl Default for PruneSpec {
    fn default() -> Self {
        Self {
            dangling: true,
            unused_for: None,
            keep_latest_per_repository: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Disk thresholds on the image filesystem, in percent of its capacity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.lowPercent < self.highPercent")
    .message("spec.diskPressure.lowPercent must be below spec.diskPressure.highPercent"))]
pub struct DiskPressure {
    /// When the image filesystem is fuller than this, least recently used images are removed.
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 100")
        .message("spec.diskPressure.highPercent must be between 1 and 100"))]
    pub high_percent: i32,
    /// Removal stops once the image filesystem is at or below this fill level.
    #[x_kube(validation = kube::core::Rule::new("self >= 0 && self <= 99")
        .message("spec.diskPressure.lowPercent must be between 0 and 99"))]
    pub low_percent: i32,
}

/// Fleet-wide totals, summed over the per-node `ImageCacheReport`s of this policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageCachePolicyStatus {
    /// The generation of the spec these totals were computed under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes that have reported under this policy.
    #[serde(default)]
    pub nodes: i32,
    /// Nodes whose last run ended with an error (see their `ImageCacheReport`).
    #[serde(default)]
    pub nodes_with_errors: i32,
    /// Images on all nodes.
    #[serde(default)]
    pub images: i64,
    /// Images in use on all nodes.
    #[serde(default)]
    pub in_use: i64,
    /// Bytes of all images on all nodes (as the runtime reports image sizes).
    #[serde(default)]
    pub total_bytes: i64,
    /// Bytes the policy would free (or freed, when not in dry-run) on all nodes in their last run.
    #[serde(default)]
    pub reclaimable_bytes: i64,
    /// Images removed by the last run on every node.
    #[serde(default)]
    pub last_run_removed: i64,
    /// Bytes freed by the last run on every node.
    #[serde(default)]
    pub last_run_freed_bytes: i64,
}

/// One node's view under one policy: what `docker system df` shows and what the last run did. Written by
/// the node agent, named `<policy>.<node>`, owned by the policy (deleted with it).
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "ImageCacheReport",
    doc = "One node's image cache under one ImageCachePolicy (written by the node agent).",
    status = "ImageCacheReportStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Images","type":"integer","jsonPath":".status.images"}"#,
    printcolumn = r#"{"name":"In-use","type":"integer","jsonPath":".status.inUse"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","jsonPath":".status.totalBytes"}"#,
    printcolumn = r#"{"name":"Reclaimable","type":"integer","jsonPath":".status.reclaimableBytes"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageCacheReportSpec {
    /// The ImageCachePolicy this report is for.
    pub policy: String,
    /// The node this report describes.
    pub node: String,
}

/// The `docker system df` view of one node and the outcome of the policy's last run there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageCacheReportStatus {
    /// Images the runtime holds.
    pub images: i64,
    /// Images used by a container or by a Pod bound to the node.
    pub in_use: i64,
    /// Bytes of all images, as the runtime reports them.
    pub total_bytes: i64,
    /// Bytes of the images the last run planned to remove.
    pub reclaimable_bytes: i64,
    /// Fill level of the image filesystem in percent, when the runtime reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs_used_percent: Option<i32>,
    /// What the last run did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    /// Why the last run failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of one policy run on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// When the run finished (RFC 3339).
    pub time: String,
    /// Whether the run only reported (dry-run) instead of removing.
    pub dry_run: bool,
    /// Images the plan selected for removal.
    pub planned: i64,
    /// Images actually removed (0 in dry-run).
    pub removed: i64,
    /// Bytes freed by the removals (0 in dry-run).
    pub freed_bytes: i64,
    /// Images skipped at removal time because they had come into use since the plan was made.
    #[serde(default)]
    pub skipped_in_use: i64,
    /// The first planned images with the reason for each (at most 20, to keep the object small).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<PlannedRemoval>,
}

/// One image the plan selected, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRemoval {
    /// The image's first tag, or its ID when it has none.
    pub image: String,
    /// Why it was selected (`dangling`, `unusedFor`, `keepLatestPerRepository`, `diskPressure`).
    pub reason: String,
    /// Its size in bytes.
    pub bytes: i64,
}
