//! The `ReplicatedDatabase` custom resource: a StatefulSet-like set of per-ordinal database members with a
//! pinned primary, label-driven replicas and an explicit failover policy.
//!
//! Every field's doc comment becomes its `kubectl explain` text; the schema constraints and CEL rules here
//! make the API server refuse a bad object with a message that names the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on every member Pod naming its ReplicatedDatabase.
pub const LABEL_NAME: &str = "berth.dev/replicated-database";
/// Label on every member Pod and PVC carrying its ordinal.
pub const LABEL_ORDINAL: &str = "berth.dev/ordinal";
/// Label carrying a member's role (`primary`, `replica`, `fenced`, or `peer`); the Services select on it.
pub const LABEL_ROLE: &str = "berth.dev/role";

/// A set of database members (Pods `<name>-<ordinal>`, PVCs `<claim>-<name>-<ordinal>`) owned directly by
/// the operator: one primary pinned where you say, replicas by count or one per labelled node, and a failover
/// policy that never leaves two primaries.
// Two printer columns share `type_ = "integer"`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "ReplicatedDatabase",
    plural = "replicateddatabases",
    singular = "replicateddatabase",
    shortname = "rdb",
    category = "berth",
    namespaced,
    status = "ReplicatedDatabaseStatus",
    derive = "PartialEq",
    doc = "A primary/replica (or peer) database whose members are per-ordinal Pods and PVCs owned by Berth.",
    scale(
        spec_replicas_path = ".spec.replicas.count",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.primary.pod",
        description = "The Pod that is primary now"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyMembers",
        description = "Members that are Ready"
    ),
    printcolumn(
        name = "Members",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Members that should exist"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.replicas.count) || self.primary.ordinal < self.replicas.count",
        "message": "spec.primary.ordinal must be less than spec.replicas.count (ordinals start at 0)",
        "fieldPath": ".primary.ordinal"
    },
    {
        "rule": "self.failover.policy != 'Promote' || !has(self.replicas.count) || self.replicas.count >= 2",
        "message": "spec.failover.policy Promote needs spec.replicas.count >= 2: there must be a replica to promote",
        "fieldPath": ".failover.policy"
    },
    {
        "rule": "self.mode != 'Peers' || self.failover.policy != 'Promote'",
        "message": "spec.failover.policy Promote needs spec.mode PrimaryReplica: peers have no primary to replace",
        "fieldPath": ".failover.policy"
    }
]))]
pub struct ReplicatedDatabaseSpec {
    /// How members relate. `PrimaryReplica` (default): one primary takes writes and the replicas stream from
    /// it. `Peers`: every member reads and writes (a distributed database); member 0 seeds the cluster and the
    /// others join it. Immutable.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "spec.mode is immutable"}
    ]))]
    pub mode: Mode,

    /// The Pod template of every member, as in a StatefulSet. Berth adds the member labels, the role
    /// environment (`BERTH_ROLE`, `BERTH_PRIMARY_HOST`, ...), a downward-API volume at `/etc/berth/podinfo`,
    /// the per-ordinal volumes and, for the built-in engine profiles, its scripts at `/etc/berth/scripts`.
    pub template: PodTemplateSpec,

    /// Volume claims every member gets, as in a StatefulSet: member `<ordinal>` gets PVC
    /// `<claim>-<name>-<ordinal>`, mounted as the volume named `<claim>`. Immutable.
    #[serde(default)]
    #[schemars(length(max = 8), transform = bound_claim_names)]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(t, has(t.metadata) && has(t.metadata.name) && t.metadata.name.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))",
         "message": "spec.volumeClaimTemplates[].metadata.name must be set to a DNS label (lower case letters, digits, '-')"},
        {"rule": "self.all(a, self.exists_one(b, b.metadata.name == a.metadata.name))",
         "message": "spec.volumeClaimTemplates[].metadata.name must be unique"},
        {"rule": "self.map(t, t.metadata.name) == oldSelf.map(t, t.metadata.name)",
         "message": "spec.volumeClaimTemplates is immutable: claims cannot be added, removed or renamed"}
    ]))]
    pub volume_claim_templates: Vec<PersistentVolumeClaim>,

    /// Which ordinal is the primary and where it is pinned. Changing `ordinal` is a switchover.
    #[serde(default)]
    pub primary: PrimarySpec,

    /// How many members, or which nodes get one. Set exactly one of `count` or `perMatchingNode`.
    pub replicas: ReplicasSpec,

    /// What happens when the primary is unavailable.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// Whether member PVCs are kept or deleted when members are removed by scaling down or when the
    /// ReplicatedDatabase is deleted. Both default to `Retain`.
    #[serde(default)]
    pub persistent_volume_claim_retention_policy: PvcRetentionPolicy,

    /// How Berth promotes and demotes members: the built-in `postgres` profile, or `generic` commands.
    /// Set exactly one.
    pub engine: EngineSpec,
}

/// Bounds each claim template's `metadata.name` to a DNS label's length, so the API server can bound the
/// cost of the CEL rules that check claim names (it refuses rules over unbounded strings).
fn bound_claim_names(schema: &mut schemars::Schema) {
    if let Some(name) = schema
        .get_mut("items")
        .and_then(|i| i.get_mut("properties"))
        .and_then(|p| p.get_mut("metadata"))
        .and_then(|m| m.get_mut("properties"))
        .and_then(|p| p.get_mut("name"))
        .and_then(|n| n.as_object_mut())
    {
        name.insert("maxLength".into(), 63.into());
    }
}

/// How the members of a ReplicatedDatabase relate to each other.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Mode {
    /// One primary takes writes; replicas stream from it and serve reads.
    #[default]
    PrimaryReplica,
    /// Every member reads and writes; member 0 seeds the cluster and the others join it.
    Peers,
}

/// The primary: its ordinal and where it is pinned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.nodeName) && has(self.nodeSelector))",
     "message": "spec.primary: set at most one of nodeName or nodeSelector"}
]))]
pub struct PrimarySpec {
    /// The ordinal of the member that should be primary (default 0). Changing it is a switchover: the old
    /// primary is demoted and fenced before the new one is promoted.
    #[serde(default)]
    #[schemars(range(min = 0, max = 999))]
    pub ordinal: i32,

    /// Pin the primary to this node: it only ever runs there (unless the failover policy moves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: Option<String>,

    /// Pin the primary to nodes carrying all these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "size(self) > 0", "message": "spec.primary.nodeSelector must name at least one label"}
    ]))]
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// How many members there are, or which nodes get one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.count) != has(self.perMatchingNode)",
     "message": "spec.replicas: set exactly one of count or perMatchingNode (kubectl scale works only with count)"}
]))]
pub struct ReplicasSpec {
    /// The number of members, the primary included (as a StatefulSet's `replicas`). Members get ordinals
    /// `0..count`. `kubectl scale rdb` sets this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<i32>,

    /// One replica on every schedulable node carrying the labels: labelling a node adds a replica there and
    /// removing the label retires it. The primary is a member on top of these (unless its node matches too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_matching_node: Option<PerMatchingNode>,
}

/// Label-driven placement of replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerMatchingNode {
    /// The labels a node must carry (all of them) to get a replica.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "size(self) > 0", "message": "spec.replicas.perMatchingNode.nodeSelector must name at least one label"}
    ]))]
    pub node_selector: BTreeMap<String, String>,
}

/// What happens when the primary is unavailable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// `Pinned` (default): the primary only ever runs where it is pinned; replicas keep serving reads while
    /// it is away. `Reschedule`: the primary's Pod is fenced and recreated on another eligible node, only when
    /// its volumes are reachable from there (shared volumes). `Promote`: the most advanced ready replica
    /// becomes primary; the old primary is fenced and rejoins as a replica.
    #[serde(default)]
    pub policy: FailoverPolicy,

    /// How long the primary must be unavailable before `Reschedule` or `Promote` acts, in seconds
    /// (default 30).
    #[serde(default = "default_after_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub after_seconds: i32,
}

fn default_after_seconds() -> i32 {
    30
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            policy: FailoverPolicy::default(),
            after_seconds: default_after_seconds(),
        }
    }
}

/// The failover policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum FailoverPolicy {
    /// The primary never moves; replicas keep serving reads while it is away.
    #[default]
    Pinned,
    /// The primary's Pod is fenced and recreated on another eligible node that can reach its volumes.
    Reschedule,
    /// The most advanced ready replica is promoted after `afterSeconds`; the old primary is fenced first.
    Promote,
}

/// What happens to member PVCs when members go away.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// When members are removed by scaling down (or by unlabelling their node): `Retain` (default) keeps
    /// their PVCs so a returning member finds its data; `Delete` deletes them.
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
    /// When the ReplicatedDatabase is deleted: `Retain` (default) keeps the PVCs; `Delete` lets them be
    /// garbage-collected with it.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
}

/// Keep or delete.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RetentionPolicy {
    /// Keep the PVCs.
    #[default]
    Retain,
    /// Delete the PVCs.
    Delete,
}

/// How the database is promoted, demoted and asked how far it has replicated.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.postgres) != has(self.generic)",
     "message": "spec.engine: set exactly one of postgres or generic"}
]))]
pub struct EngineSpec {
    /// The built-in PostgreSQL profile: Berth runs its own entrypoint in the database container (initdb on the
    /// primary, pg_basebackup on replicas, pg_rewind when an old primary rejoins) and promotes with `pg_ctl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresProfile>,

    /// Any other database: the commands Berth runs (through pods/exec) to promote, demote and compare members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<GenericEngine>,
}

/// Settings of the built-in PostgreSQL profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresProfile {
    /// The container that runs PostgreSQL (default: the first container of the template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,

    /// The data directory inside the container (default `/var/lib/postgresql/data/pgdata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.startsWith('/') && !self.contains('..')",
         "message": "spec.engine.postgres.dataDirectory must be an absolute path without '..'"}
    ]))]
    pub data_directory: Option<String>,

    /// The Secret holding the `postgres` superuser's password under key `password`; replication and
    /// pg_rewind use it too. Required.
    #[schemars(length(min = 1, max = 253))]
    pub password_secret: String,
}

/// Commands for a database without a built-in profile. Each is an argv run in the database container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenericEngine {
    /// The container the commands run in (default: the first container of the template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,

    /// Run in a replica to make it the primary. Must be idempotent. Omitted: promotion only relabels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "size(self) == 0 || self[0] != ''", "message": "spec.engine.generic.promoteCommand[0] must not be empty"}
    ]))]
    pub promote_command: Vec<String>,

    /// Run in the old primary before a switchover to stop writes and flush them to the replicas; its last
    /// output line, if an integer, is the final replication position. Omitted: demotion only fences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "size(self) == 0 || self[0] != ''", "message": "spec.engine.generic.demoteCommand[0] must not be empty"}
    ]))]
    pub demote_command: Vec<String>,

    /// Prints the member's replication position as an integer (higher is more advanced); used to pick the
    /// most advanced replica and to wait for a switchover target to catch up. Omitted: lowest ordinal wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "size(self) == 0 || self[0] != ''", "message": "spec.engine.generic.positionCommand[0] must not be empty"}
    ]))]
    pub position_command: Vec<String>,
}

/// What the operator observed and did, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedDatabaseStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The member that is primary now (it may differ from `spec.primary.ordinal` during a failover or
    /// switchover, or after a `Promote` failover until the pinned member is back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<PrimaryStatus>,

    /// One entry per member, by ordinal.
    #[serde(default)]
    pub members: Vec<MemberStatus>,

    /// How many members should exist (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,

    /// Members that are Ready, the primary included.
    #[serde(default)]
    pub ready_members: i32,

    /// Replicas (not the primary) that are Ready and so receive `-ro` traffic.
    #[serde(default)]
    pub ready_replicas: i32,

    /// The label selector of the member Pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// `Ready`, `Progressing`, `Degraded` and `FailingOver`.
    #[serde(default)]
    pub conditions: Vec<Condition>,

    /// When the operator first saw the current primary unavailable; cleared when it is available again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_unavailable_since: Option<Time>,

    /// A failover or switchover in progress, recorded before each step so a restarted operator resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,

    /// The last completed failover or switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
}

/// Where the primary is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryStatus {
    /// Its ordinal.
    pub ordinal: i32,
    /// Its Pod's name.
    pub pod: String,
    /// The node its Pod runs on, once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One member as observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member's ordinal.
    pub ordinal: i32,
    /// Its Pod's name.
    pub pod: String,
    /// `primary`, `replica`, `fenced` or `peer`.
    pub role: String,
    /// The node its Pod runs on, once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether its Pod is Ready.
    pub ready: bool,
    /// Its PVCs.
    #[serde(default)]
    pub pvcs: Vec<String>,
    /// `Pending`, `Running`, `Ready`, `Fenced`, `Missing` or `Terminating`.
    pub phase: String,
}

/// A failover or switchover in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// `Failover` (the primary was lost), `Reschedule` (the primary moves nodes) or `Switchover` (planned).
    pub kind: TransitionKind,
    /// The primary being replaced.
    pub from_ordinal: i32,
    /// The member becoming primary.
    pub to_ordinal: i32,
    /// When it started (the primary became unavailable, or the spec asked for a switchover).
    pub started_at: Time,
    /// The old primary's final replication position, when its demotion reported one; the target must reach
    /// it before it is promoted (no lost writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demoted_position: Option<i64>,
    /// The node the old primary ran on when it was lost; a rescheduled primary avoids it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_node: Option<String>,
}

/// The kind of a primary change.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TransitionKind {
    /// The primary was unavailable for `afterSeconds` and a replica is promoted.
    Failover,
    /// The primary's Pod is recreated on another node that can reach its volumes.
    Reschedule,
    /// A planned change of primary (`spec.primary.ordinal` changed, or failing back to it).
    Switchover,
}

/// A completed failover or switchover, with its measured duration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// What kind of change it was.
    pub kind: TransitionKind,
    /// The old primary's ordinal.
    pub from_ordinal: i32,
    /// The new primary's ordinal.
    pub to_ordinal: i32,
    /// When it started.
    pub started_at: Time,
    /// When the new primary was Ready behind `-rw`.
    pub completed_at: Time,
    /// `completedAt - startedAt` in milliseconds.
    pub duration_millis: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_object_gets_documented_defaults() {
        let rdb: ReplicatedDatabase = serde_yaml::from_str(
            r#"
apiVersion: berth.dev/v1alpha1
kind: ReplicatedDatabase
metadata: {name: pg, namespace: db}
spec:
  template: {spec: {containers: [{name: pg, image: postgres}]}}
  replicas: {count: 3}
  engine: {postgres: {passwordSecret: pg-password}}
"#,
        )
        .unwrap();
        assert_eq!(rdb.spec.mode, Mode::PrimaryReplica);
        assert_eq!(rdb.spec.primary.ordinal, 0);
        assert_eq!(rdb.spec.failover.policy, FailoverPolicy::Pinned);
        assert_eq!(rdb.spec.failover.after_seconds, 30);
        assert_eq!(
            rdb.spec
                .persistent_volume_claim_retention_policy
                .when_scaled,
            RetentionPolicy::Retain
        );
    }

    #[test]
    fn crd_has_scale_status_short_name_and_printer_columns() {
        use kube::CustomResourceExt;
        let crd = ReplicatedDatabase::crd();
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["rdb".to_string()][..])
        );
        let version = &crd.spec.versions[0];
        let sub = version.subresources.as_ref().unwrap();
        assert!(sub.status.is_some());
        assert_eq!(
            sub.scale.as_ref().unwrap().spec_replicas_path,
            ".spec.replicas.count"
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Primary", "Ready", "Members", "Age"]);
    }
}
