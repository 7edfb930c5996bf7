//! The observed world as the decision modules see it: plain views of member Pods, PVCs and Nodes, and the
//! pure functions that extract them from Kubernetes objects (so decisions never touch a client).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::ResourceExt;

use crate::api::replicated_database::{LABEL_ORDINAL, LABEL_ROLE};

/// Annotation on a member Pod naming the role whose engine hook has run (`primary` after promotion); the
/// label says what the operator wants, this says what the database was told.
pub const ANNOTATION_APPLIED_ROLE: &str = "berth.dev/applied-role";
/// Annotation on member Pods and PVCs naming the node a `perMatchingNode` member belongs to, so a node that
/// is labelled again gets its old ordinal (and data) back.
pub const ANNOTATION_NODE: &str = "berth.dev/node";
/// Annotation on member Pods with the hash of what they were built from (template, role env, pins).
pub const ANNOTATION_SPEC_HASH: &str = "berth.dev/spec-hash";

/// A member's role, as carried by the label `berth.dev/role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Takes writes; selected by `<name>-rw`.
    Primary,
    /// Streams from the primary; selected by `<name>-ro` when Ready.
    Replica,
    /// An old primary taken out of `-rw` and being stopped; never selected by any Service.
    Fenced,
    /// A member of a `Peers` database: reads and writes.
    Peer,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Fenced => "fenced",
            Role::Peer => "peer",
        }
    }

    /// Parses a label value; unknown values are `None` (the Pod is then treated as needing a relabel).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "primary" => Some(Role::Primary),
            "replica" => Some(Role::Replica),
            "fenced" => Some(Role::Fenced),
            "peer" => Some(Role::Peer),
            _ => None,
        }
    }
}

/// A member Pod as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// The Pod's name (`<name>-<ordinal>`).
    pub name: String,
    /// The member ordinal.
    pub ordinal: i32,
    /// The role label; `None` when missing or unknown.
    pub role: Option<Role>,
    /// The role whose hook ran (annotation); a Pod created with a role has it applied from the start.
    pub applied: Option<Role>,
    /// Whether the Pod is Ready.
    pub ready: bool,
    /// The node it is bound to.
    pub node: Option<String>,
    /// Whether that node is Ready (false when the node is missing or NotReady; true when unscheduled).
    pub node_ready: bool,
    /// Whether the Pod is being deleted.
    pub terminating: bool,
    /// The node a `perMatchingNode` member belongs to (annotation).
    pub member_node: Option<String>,
    /// The spec hash annotation.
    pub spec_hash: Option<String>,
}

impl PodView {
    /// Whether this Pod may be acting as a primary database now: labelled primary or fenced (a fenced
    /// Pod is an old primary that is still stopping), or told to be primary by a hook.
    pub fn primary_ish(&self) -> bool {
        matches!(self.role, Some(Role::Primary) | Some(Role::Fenced))
            || self.applied == Some(Role::Primary)
    }

    /// Whether it is available to serve: Ready, on a Ready node, not being deleted.
    pub fn available(&self) -> bool {
        self.ready && self.node_ready && !self.terminating
    }
}

/// A member PVC as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct PvcView {
    /// The PVC's name.
    pub name: String,
    /// The member ordinal (label).
    pub ordinal: i32,
    /// The node a `perMatchingNode` member belongs to (annotation).
    pub member_node: Option<String>,
    /// Whether it is being deleted.
    pub terminating: bool,
}

/// A node as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// The node's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// Whether it is cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
}

impl NodeView {
    /// Whether the node carries every label of `selector`.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The ordinal of an object from its label, if it parses.
fn ordinal_label(labels: &BTreeMap<String, String>) -> Option<i32> {
    labels.get(LABEL_ORDINAL)?.parse().ok().filter(|o| *o >= 0)
}

/// Views of member Pods; Pods without a valid ordinal label are ignored (they are not ours to manage).
pub fn pod_views(pods: &[Pod], nodes: &[NodeView]) -> Vec<PodView> {
    let mut views: Vec<PodView> = pods
        .iter()
        .filter_map(|p| {
            let ordinal = ordinal_label(p.labels())?;
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let node_ready = match &node {
                None => true,
                Some(n) => nodes.iter().any(|v| &v.name == n && v.ready),
            };
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Some(PodView {
                name: p.name_any(),
                ordinal,
                role: p.labels().get(LABEL_ROLE).and_then(|r| Role::parse(r)),
                applied: p
                    .annotations()
                    .get(ANNOTATION_APPLIED_ROLE)
                    .and_then(|r| Role::parse(r)),
                ready,
                node,
                node_ready,
                terminating: p.metadata.deletion_timestamp.is_some(),
                member_node: p.annotations().get(ANNOTATION_NODE).cloned(),
                spec_hash: p.annotations().get(ANNOTATION_SPEC_HASH).cloned(),
            })
        })
        .collect();
    views.sort_by(|a, b| a.ordinal.cmp(&b.ordinal).then(a.name.cmp(&b.name)));
    views
}

/// Views of member PVCs (those with an ordinal label).
pub fn pvc_views(pvcs: &[PersistentVolumeClaim]) -> Vec<PvcView> {
    pvcs.iter()
        .filter_map(|c| {
            Some(PvcView {
                name: c.name_any(),
                ordinal: ordinal_label(c.labels())?,
                member_node: c.annotations().get(ANNOTATION_NODE).cloned(),
                terminating: c.metadata.deletion_timestamp.is_some(),
            })
        })
        .collect()
}

/// Views of nodes.
pub fn node_views<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<NodeView> {
    nodes
        .into_iter()
        .map(|n| NodeView {
            name: n.name_any(),
            labels: n.labels().clone(),
            ready: n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            unschedulable: n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
        })
        .collect()
}
