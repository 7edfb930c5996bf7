//! Which members exist and where they may run: ordinals from `replicas.count` or one per matching node
//! (`perMatchingNode`), node constraints from the primary's pin, members to retire on scale-down, PVCs to
//! delete by retention policy, and whether a primary's volumes can be reached from another node.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement};

use super::model::{NodeView, PodView, PvcView};
use crate::api::replicated_database::{ReplicatedDatabaseSpec, RetentionPolicy};

/// Where a member may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// Anywhere the template allows.
    Any,
    /// Only on this node (a `nodeName` pin, or a `perMatchingNode` member's node).
    Node(String),
    /// Only on nodes with all these labels (a `nodeSelector` pin).
    Selector(BTreeMap<String, String>),
}

/// One member that should exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPlan {
    /// Its ordinal.
    pub ordinal: i32,
    /// Where it may run.
    pub constraint: Constraint,
    /// For `perMatchingNode` replicas, the node it belongs to (recorded on its Pod and PVCs).
    pub member_node: Option<String>,
}

/// A problem worth an Event: the reason and a message naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Event reason (CamelCase).
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

/// The placement decision.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Placement {
    /// Members that should exist, by ordinal.
    pub members: Vec<MemberPlan>,
    /// Ordinals whose Pods exist but are no longer members (scale-down, unlabelled node).
    pub retire: Vec<i32>,
    /// PVCs of removed members to delete (only with `whenScaled: Delete`, and only once their Pod is gone).
    pub delete_pvcs: Vec<String>,
    /// Refusals and warnings for Events.
    pub notices: Vec<Notice>,
}

impl Placement {
    /// The plan of one ordinal.
    pub fn member(&self, ordinal: i32) -> Option<&MemberPlan> {
        self.members.iter().find(|m| m.ordinal == ordinal)
    }
}

/// Computes the members. `current_primary` is never dropped from the plan (a scale-down that would remove
/// the primary waits for the switchover back to `spec.primary.ordinal`).
pub fn place(
    spec: &ReplicatedDatabaseSpec,
    current_primary: Option<i32>,
    pods: &[PodView],
    pvcs: &[PvcView],
    nodes: &[NodeView],
) -> Placement {
    let pin = primary_constraint(spec);
    let spec_primary = spec.primary.ordinal;
    let mut notices = Vec::new();
    if let Constraint::Selector(sel) = &pin
        && !nodes.iter().any(|n| n.matches(sel) && !n.unschedulable)
    {
        notices.push(Notice {
            reason: "NoNodeForPrimary",
            message: format!(
                "no schedulable node matches spec.primary.nodeSelector {}; the primary stays Pending",
                fmt_selector(sel)
            ),
        });
    }
    if let Constraint::Node(n) = &pin
        && !nodes.iter().any(|v| &v.name == n)
    {
        notices.push(Notice {
            reason: "NoNodeForPrimary",
            message: format!("spec.primary.nodeName {n} names no node; the primary stays Pending"),
        });
    }

    let mut members = vec![MemberPlan {
        ordinal: spec_primary,
        constraint: pin,
        member_node: None,
    }];
    match (&spec.replicas.count, &spec.replicas.per_matching_node) {
        (Some(count), _) => {
            members.extend(
                (0..*count)
                    .filter(|o| *o != spec_primary)
                    .map(|ordinal| MemberPlan {
                        ordinal,
                        constraint: Constraint::Any,
                        member_node: None,
                    }),
            );
        }
        (None, Some(per_node)) => {
            members.extend(per_matching_node(
                spec_primary,
                &per_node.node_selector,
                pods,
                pvcs,
                nodes,
            ));
        }
        // The CRD's CEL rule makes this unreachable for stored objects; only the primary then.
        (None, None) => notices.push(Notice {
            reason: "InvalidSpec",
            message: "spec.replicas sets neither count nor perMatchingNode; only the primary runs"
                .into(),
        }),
    }
    if let Some(p) = current_primary
        && !members.iter().any(|m| m.ordinal == p)
        && pods.iter().any(|pod| pod.ordinal == p && !pod.terminating)
    {
        let member_node = pods
            .iter()
            .find(|pod| pod.ordinal == p)
            .and_then(|pod| pod.member_node.clone());
        notices.push(Notice {
            reason: "RetireWaitsForSwitchover",
            message: format!(
                "member {p} is the primary and is no longer wanted; it stays until the primary is back on \
                 spec.primary.ordinal {spec_primary}"
            ),
        });
        members.push(MemberPlan {
            ordinal: p,
            constraint: member_node
                .clone()
                .map(Constraint::Node)
                .unwrap_or(Constraint::Any),
            member_node,
        });
    }
    members.sort_by_key(|m| m.ordinal);
    members.dedup_by_key(|m| m.ordinal);

    let wanted: BTreeSet<i32> = members.iter().map(|m| m.ordinal).collect();
    let retire: BTreeSet<i32> = pods
        .iter()
        .filter(|p| !wanted.contains(&p.ordinal) && !p.terminating)
        .map(|p| p.ordinal)
        .collect();
    let delete_pvcs = match spec.persistent_volume_claim_retention_policy.when_scaled {
        RetentionPolicy::Retain => Vec::new(),
        RetentionPolicy::Delete => pvcs
            .iter()
            .filter(|c| !wanted.contains(&c.ordinal) && !c.terminating)
            .filter(|c| !pods.iter().any(|p| p.ordinal == c.ordinal))
            .map(|c| c.name.clone())
            .collect(),
    };
    Placement {
        members,
        retire: retire.into_iter().collect(),
        delete_pvcs,
        notices,
    }
}

/// The constraint of the member `spec.primary.ordinal`.
pub fn primary_constraint(spec: &ReplicatedDatabaseSpec) -> Constraint {
    match (&spec.primary.node_name, &spec.primary.node_selector) {
        (Some(n), _) => Constraint::Node(n.clone()),
        (None, Some(sel)) => Constraint::Selector(sel.clone()),
        (None, None) => Constraint::Any,
    }
}

/// Whether a node satisfies a constraint.
pub fn satisfies(node: &NodeView, constraint: &Constraint) -> bool {
    match constraint {
        Constraint::Any => true,
        Constraint::Node(n) => &node.name == n,
        Constraint::Selector(sel) => node.matches(sel),
    }
}

/// One replica per matching schedulable node. A node keeps the ordinal it had (found on its Pod, or on
/// the retained PVCs of a retired member), so relabelling a node brings its data back; a new node gets the
/// lowest ordinal that no node claims.
fn per_matching_node(
    spec_primary: i32,
    selector: &BTreeMap<String, String>,
    pods: &[PodView],
    pvcs: &[PvcView],
    nodes: &[NodeView],
) -> Vec<MemberPlan> {
    // The primary member's node already hosts a member; it gets no second one.
    let primary_node = pods
        .iter()
        .find(|p| p.ordinal == spec_primary && !p.terminating)
        .and_then(|p| p.node.clone());
    // ordinal -> node it belongs to: Pods first (they are current), then retained PVCs.
    let mut claimed: BTreeMap<i32, String> = BTreeMap::new();
    for p in pods.iter().filter(|p| p.ordinal != spec_primary) {
        if let Some(n) = &p.member_node {
            claimed.entry(p.ordinal).or_insert_with(|| n.clone());
        }
    }
    for c in pvcs
        .iter()
        .filter(|c| c.ordinal != spec_primary && !c.terminating)
    {
        if let Some(n) = &c.member_node {
            claimed.entry(c.ordinal).or_insert_with(|| n.clone());
        }
    }
    // Ordinals that carry anything (Pods or PVCs) but no node are free to reuse only if unclaimed.
    let mut node_to_ordinal: BTreeMap<&str, i32> = BTreeMap::new();
    for (o, n) in &claimed {
        node_to_ordinal.entry(n.as_str()).or_insert(*o);
    }
    let mut used: BTreeSet<i32> = claimed.keys().copied().collect();
    used.insert(spec_primary);

    let mut eligible: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| {
            n.matches(selector) && !n.unschedulable && Some(&n.name) != primary_node.as_ref()
        })
        .collect();
    eligible.sort_by(|a, b| a.name.cmp(&b.name));
    let mut plans = Vec::new();
    // Nodes that already own an ordinal first, so a new node never takes a returning node's ordinal.
    let mut new_nodes = Vec::new();
    for n in eligible {
        match node_to_ordinal.get(n.name.as_str()) {
            Some(o) => plans.push(MemberPlan {
                ordinal: *o,
                constraint: Constraint::Node(n.name.clone()),
                member_node: Some(n.name.clone()),
            }),
            None => new_nodes.push(n),
        }
    }
    let mut next = 0;
    for n in new_nodes {
        while used.contains(&next) {
            next += 1;
        }
        used.insert(next);
        plans.push(MemberPlan {
            ordinal: next,
            constraint: Constraint::Node(n.name.clone()),
            member_node: Some(n.name.clone()),
        });
    }
    plans
}

/// Whether every volume of a lost primary can be reached from some Ready, schedulable node other than
/// `lost_node` that also satisfies the primary's constraint. `volume_affinities` holds, per PV, its
/// `spec.nodeAffinity.required` (`None` means reachable from anywhere). Returns the reason when not.
pub fn volumes_reachable_elsewhere(
    volume_affinities: &[(String, Option<NodeSelector>)],
    nodes: &[NodeView],
    lost_node: Option<&str>,
    constraint: &Constraint,
) -> Result<(), String> {
    let candidates: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| {
            n.ready
                && !n.unschedulable
                && Some(n.name.as_str()) != lost_node
                && satisfies(n, constraint)
        })
        .collect();
    if candidates.is_empty() {
        return Err("no other Ready node satisfies the primary's pin".into());
    }
    if candidates.iter().any(|n| {
        volume_affinities
            .iter()
            .all(|(_, aff)| aff.as_ref().is_none_or(|a| node_selector_matches(a, n)))
    }) {
        Ok(())
    } else {
        let only_local: Vec<&str> = volume_affinities
            .iter()
            .filter(|(_, aff)| {
                aff.as_ref()
                    .is_some_and(|a| !candidates.iter().any(|n| node_selector_matches(a, n)))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        Err(format!(
            "volume(s) {} can only be reached from the lost node; Reschedule needs shared volumes",
            only_local.join(", ")
        ))
    }
}

/// Evaluates a PV's required node affinity against a node (terms are ORed, expressions ANDed).
pub fn node_selector_matches(selector: &NodeSelector, node: &NodeView) -> bool {
    selector.node_selector_terms.iter().any(|term| {
        let exprs_ok = term
            .match_expressions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .all(|e| requirement_matches(e, node.labels.get(&e.key).map(String::as_str)));
        let fields_ok = term
            .match_fields
            .as_deref()
            .unwrap_or_default()
            .iter()
            .all(|e| {
                let value = (e.key == "metadata.name").then_some(node.name.as_str());
                requirement_matches(e, value)
            });
        exprs_ok && fields_ok
    })
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// A member PVC that is not bound yet, with what is known about why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingClaim {
    /// The PVC's name.
    pub name: String,
    /// Its StorageClass, if it names one.
    pub class: Option<String>,
    /// Whether that StorageClass exists.
    pub class_exists: bool,
    /// The latest provisioning failure reported on the PVC (Event `ProvisioningFailed`), if any.
    pub provisioning_failure: Option<String>,
}

/// Notices for member volumes that cannot be provisioned: a missing StorageClass, or the provisioner's
/// own reason (for example a pool that lacks a capability the class requires).
pub fn volume_notices(pending: &[PendingClaim]) -> Vec<Notice> {
    let mut out = Vec::new();
    for c in pending {
        match (&c.class, c.class_exists, &c.provisioning_failure) {
            (Some(class), false, _) => out.push(Notice {
                reason: "StorageClassMissing",
                message: format!(
                    "PVC {} asks for StorageClass {class}, which does not exist (spec.volumeClaimTemplates[].spec.storageClassName)",
                    c.name
                ),
            }),
            (_, _, Some(why)) => out.push(Notice {
                reason: "VolumeProvisioningFailed",
                message: format!("PVC {} cannot be provisioned: {why}", c.name),
            }),
            _ => {}
        }
    }
    out
}

fn fmt_selector(sel: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::replicated_database::*;
    use k8s_openapi::api::core::v1::NodeSelectorTerm;

    fn spec(count: Option<i32>, per_node: Option<&[(&str, &str)]>) -> ReplicatedDatabaseSpec {
        ReplicatedDatabaseSpec {
            mode: Mode::PrimaryReplica,
            template: Default::default(),
            volume_claim_templates: vec![],
            primary: PrimarySpec::default(),
            replicas: ReplicasSpec {
                count,
                per_matching_node: per_node.map(|kv| PerMatchingNode {
                    node_selector: kv
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }),
            },
            failover: FailoverSpec::default(),
            persistent_volume_claim_retention_policy: Default::default(),
            engine: Default::default(),
        }
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
            unschedulable: false,
        }
    }

    fn pod(ordinal: i32, node: Option<&str>, member_node: Option<&str>) -> PodView {
        PodView {
            name: format!("db-{ordinal}"),
            ordinal,
            role: None,
            applied: None,
            ready: true,
            node: node.map(Into::into),
            node_ready: true,
            terminating: false,
            member_node: member_node.map(Into::into),
            spec_hash: None,
        }
    }

    fn pvc(ordinal: i32, member_node: Option<&str>) -> PvcView {
        PvcView {
            name: format!("data-db-{ordinal}"),
            ordinal,
            member_node: member_node.map(Into::into),
            terminating: false,
        }
    }

    fn ordinals(p: &Placement) -> Vec<i32> {
        p.members.iter().map(|m| m.ordinal).collect()
    }

    #[test]
    fn count_gives_ordinals_zero_to_count() {
        let cases: &[(i32, i32, &[i32])] = &[
            (1, 0, &[0]),
            (3, 0, &[0, 1, 2]),
            (3, 2, &[0, 1, 2]),
            (4, 1, &[0, 1, 2, 3]),
        ];
        for (count, primary, want) in cases {
            let mut s = spec(Some(*count), None);
            s.primary.ordinal = *primary;
            let p = place(&s, None, &[], &[], &[]);
            assert_eq!(ordinals(&p), *want, "count {count} primary {primary}");
        }
    }

    #[test]
    fn primary_pin_constrains_only_the_primary_ordinal() {
        let mut s = spec(Some(3), None);
        s.primary.ordinal = 1;
        s.primary.node_selector = Some([("db".to_string(), "primary".to_string())].into());
        let nodes = [node("n1", &[("db", "primary")])];
        let p = place(&s, None, &[], &[], &nodes);
        assert_eq!(
            p.member(1).unwrap().constraint,
            Constraint::Selector([("db".into(), "primary".into())].into())
        );
        assert_eq!(p.member(0).unwrap().constraint, Constraint::Any);
        assert!(p.notices.is_empty());
    }

    #[test]
    fn primary_selector_matching_no_node_is_a_notice() {
        let mut s = spec(Some(2), None);
        s.primary.node_selector = Some([("db".to_string(), "primary".to_string())].into());
        let p = place(&s, None, &[], &[], &[node("n1", &[])]);
        assert_eq!(p.notices[0].reason, "NoNodeForPrimary");
        assert!(
            p.notices[0]
                .message
                .contains("spec.primary.nodeSelector {db=primary}")
        );
    }

    #[test]
    fn per_matching_node_places_one_replica_per_labelled_schedulable_node() {
        let s = spec(None, Some(&[("db", "replica")]));
        let mut cordoned = node("n4", &[("db", "replica")]);
        cordoned.unschedulable = true;
        let nodes = [
            node("n0", &[("db", "primary")]),
            node("n1", &[("db", "replica")]),
            node("n2", &[("db", "replica")]),
            node("n3", &[]),
            cordoned,
        ];
        let p = place(&s, None, &[pod(0, Some("n0"), None)], &[], &nodes);
        assert_eq!(ordinals(&p), [0, 1, 2]);
        assert_eq!(
            p.member(1).unwrap().constraint,
            Constraint::Node("n1".into())
        );
        assert_eq!(p.member(2).unwrap().member_node.as_deref(), Some("n2"));
    }

    #[test]
    fn relabelled_node_gets_its_old_ordinal_back_from_retained_pvcs() {
        let s = spec(None, Some(&[("db", "replica")]));
        // n1 had ordinal 1 and was unlabelled (its PVC retained); n2 has ordinal 2; n1 is labelled again and
        // a brand-new node n3 appears: n1 must get 1 back and n3 the lowest unclaimed ordinal (3).
        let nodes = [
            node("n1", &[("db", "replica")]),
            node("n2", &[("db", "replica")]),
            node("n3", &[("db", "replica")]),
        ];
        let pods = [pod(0, Some("n0"), None), pod(2, Some("n2"), Some("n2"))];
        let pvcs = [pvc(1, Some("n1")), pvc(2, Some("n2"))];
        let p = place(&s, None, &pods, &pvcs, &nodes);
        assert_eq!(ordinals(&p), [0, 1, 2, 3]);
        assert_eq!(p.member(1).unwrap().member_node.as_deref(), Some("n1"));
        assert_eq!(p.member(3).unwrap().member_node.as_deref(), Some("n3"));
    }

    #[test]
    fn unlabelling_a_node_retires_its_replica() {
        let s = spec(None, Some(&[("db", "replica")]));
        let nodes = [node("n1", &[("db", "replica")]), node("n2", &[])];
        let pods = [
            pod(0, Some("n0"), None),
            pod(1, Some("n1"), Some("n1")),
            pod(2, Some("n2"), Some("n2")),
        ];
        let p = place(&s, None, &pods, &[], &nodes);
        assert_eq!(ordinals(&p), [0, 1]);
        assert_eq!(p.retire, [2]);
    }

    #[test]
    fn scale_down_retires_high_ordinals_and_pvcs_follow_the_retention_policy() {
        // (whenScaled, pods still present, expected PVC deletions)
        let cases: &[(RetentionPolicy, &[i32], &[&str])] = &[
            (RetentionPolicy::Retain, &[0, 1], &[]),
            (RetentionPolicy::Delete, &[0, 1, 2, 3], &[]), // Pods first, PVCs once they are gone
            (
                RetentionPolicy::Delete,
                &[0, 1],
                &["data-db-2", "data-db-3"],
            ),
        ];
        for (policy, pod_ordinals, want) in cases {
            let mut s = spec(Some(2), None);
            s.persistent_volume_claim_retention_policy.when_scaled = *policy;
            let pods: Vec<_> = pod_ordinals
                .iter()
                .map(|o| pod(*o, Some("n"), None))
                .collect();
            let pvcs: Vec<_> = (0..4).map(|o| pvc(o, None)).collect();
            let p = place(&s, None, &pods, &pvcs, &[]);
            assert_eq!(ordinals(&p), [0, 1]);
            let want_retire: Vec<i32> = pod_ordinals.iter().copied().filter(|o| *o >= 2).collect();
            assert_eq!(p.retire, want_retire, "{policy:?}");
            assert_eq!(
                p.delete_pvcs, *want,
                "{policy:?} with pods {pod_ordinals:?}"
            );
        }
    }

    #[test]
    fn current_primary_is_never_retired() {
        let s = spec(Some(2), None);
        let pods: Vec<_> = (0..4).map(|o| pod(o, Some("n"), None)).collect();
        let p = place(&s, Some(3), &pods, &[], &[]);
        assert_eq!(ordinals(&p), [0, 1, 3]);
        assert_eq!(p.retire, [2]);
        assert_eq!(p.notices[0].reason, "RetireWaitsForSwitchover");
    }

    fn affinity(key: &str, op: &str, values: &[&str]) -> Option<NodeSelector> {
        Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: op.into(),
                    values: Some(values.iter().map(|v| v.to_string()).collect()),
                }]),
                match_fields: None,
            }],
        })
    }

    type Volumes = Vec<(String, Option<NodeSelector>)>;

    #[test]
    fn unprovisionable_volumes_are_explained() {
        let claim = |class: Option<&str>, exists: bool, failure: Option<&str>| PendingClaim {
            name: "data-db-0".into(),
            class: class.map(Into::into),
            class_exists: exists,
            provisioning_failure: failure.map(Into::into),
        };
        let cases = [
            (
                claim(Some("fast"), false, None),
                Some("StorageClassMissing"),
            ),
            (
                claim(Some("berth-local"), true, Some("pool lacks hardlinks")),
                Some("VolumeProvisioningFailed"),
            ),
            (claim(Some("berth-local"), true, None), None),
            (claim(None, false, None), None),
        ];
        for (c, want) in cases {
            let got = volume_notices(std::slice::from_ref(&c));
            assert_eq!(got.first().map(|n| n.reason), want, "{c:?}");
            if let Some(n) = got.first() {
                assert!(n.message.contains("data-db-0"), "{}", n.message);
            }
        }
    }

    #[test]
    fn reschedule_needs_volumes_reachable_from_another_eligible_node() {
        let nodes = [
            node("n1", &[("pool", "a")]),
            node("n2", &[("pool", "a")]),
            node("n3", &[]),
        ];
        let any = Constraint::Any;
        let cases: Vec<(&str, Volumes, Constraint, bool)> = vec![
            (
                "no affinity (shared)",
                vec![("pv1".into(), None)],
                any.clone(),
                true,
            ),
            (
                "pool label on others",
                vec![("pv1".into(), affinity("pool", "In", &["a"]))],
                any.clone(),
                true,
            ),
            (
                "local to n1",
                vec![(
                    "pv1".into(),
                    affinity("kubernetes.io/hostname", "In", &["n1"]),
                )],
                any.clone(),
                false,
            ),
            (
                "pinned to n1 by name",
                vec![("pv1".into(), None)],
                Constraint::Node("n1".into()),
                false,
            ),
            (
                "one shared one local",
                vec![
                    ("pv1".into(), None),
                    (
                        "pv2".into(),
                        affinity("kubernetes.io/hostname", "In", &["n1"]),
                    ),
                ],
                any.clone(),
                false,
            ),
        ];
        for (name, vols, constraint, want) in cases {
            let got = volumes_reachable_elsewhere(&vols, &nodes, Some("n1"), &constraint);
            assert_eq!(got.is_ok(), want, "{name}: {got:?}");
        }
        let err = volumes_reachable_elsewhere(
            &[(
                "pv9".into(),
                affinity("kubernetes.io/hostname", "In", &["n1"]),
            )],
            &nodes,
            Some("n1"),
            &Constraint::Any,
        )
        .unwrap_err();
        assert!(err.contains("pv9"), "{err}");
    }
}
