//! Rolling out a changed Pod template: member Pods carry the hash of the spec they were built from, and
//! when it differs from the current spec's, members are restarted one at a time — replicas first (highest
//! ordinal first), the primary last (restarted in place) — and only while every member is Ready and no
//! failover or switchover is in progress, so a rollout never costs more than one member at a time.

use std::hash::{Hash, Hasher};

use super::model::{PodView, Role};
use crate::api::replicated_database::ReplicatedDatabaseSpec;

/// The hash of what member Pods are built from (template, claims, engine, mode).
pub fn spec_hash(spec: &ReplicatedDatabaseSpec) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // serde_json's output of these types is deterministic (maps are BTreeMaps, structs in field order).
    serde_json::to_string(&(
        &spec.template,
        &spec.volume_claim_templates,
        &spec.engine,
        &spec.mode,
    ))
    .unwrap_or_default()
    .hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The member to restart next, if any. Pods without a hash (made by an older operator) are left alone.
pub fn next_restart(
    pods: &[PodView],
    members: &[i32],
    want: &str,
    transition: bool,
) -> Option<i32> {
    if transition {
        return None;
    }
    let all_ready = members
        .iter()
        .all(|o| pods.iter().any(|p| p.ordinal == *o && p.available()));
    if !all_ready || pods.iter().any(|p| p.terminating) {
        return None;
    }
    let outdated = |p: &&PodView| {
        p.spec_hash.as_deref().is_some_and(|h| h != want) && members.contains(&p.ordinal)
    };
    let mut candidates: Vec<&PodView> = pods.iter().filter(outdated).collect();
    // Replicas (and peers) before the primary; high ordinals first.
    candidates.sort_by_key(|p| (p.role == Some(Role::Primary), -p.ordinal));
    candidates.first().map(|p| p.ordinal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, role: Role, hash: Option<&str>, ready: bool) -> PodView {
        PodView {
            name: format!("db-{ordinal}"),
            ordinal,
            role: Some(role),
            applied: Some(role),
            ready,
            node: Some("n".into()),
            node_ready: true,
            terminating: false,
            member_node: None,
            spec_hash: hash.map(Into::into),
        }
    }

    #[test]
    fn one_member_at_a_time_replicas_first_primary_last() {
        let members = [0, 1, 2];
        let cases: Vec<(&str, Vec<PodView>, bool, Option<i32>)> = vec![
            (
                "all current",
                vec![
                    pod(0, Role::Primary, Some("new"), true),
                    pod(1, Role::Replica, Some("new"), true),
                ],
                false,
                None,
            ),
            (
                "highest replica first",
                vec![
                    pod(0, Role::Primary, Some("old"), true),
                    pod(1, Role::Replica, Some("old"), true),
                    pod(2, Role::Replica, Some("old"), true),
                ],
                false,
                Some(2),
            ),
            (
                "primary last",
                vec![
                    pod(0, Role::Primary, Some("old"), true),
                    pod(1, Role::Replica, Some("new"), true),
                    pod(2, Role::Replica, Some("new"), true),
                ],
                false,
                Some(0),
            ),
            (
                "waits while a member is not Ready",
                vec![
                    pod(0, Role::Primary, Some("old"), true),
                    pod(1, Role::Replica, Some("new"), false),
                    pod(2, Role::Replica, Some("old"), true),
                ],
                false,
                None,
            ),
            (
                "waits during a transition",
                vec![
                    pod(0, Role::Primary, Some("old"), true),
                    pod(1, Role::Replica, Some("old"), true),
                    pod(2, Role::Replica, Some("old"), true),
                ],
                true,
                None,
            ),
            (
                "pods of an older operator are left alone",
                vec![
                    pod(0, Role::Primary, None, true),
                    pod(1, Role::Replica, None, true),
                    pod(2, Role::Replica, None, true),
                ],
                false,
                None,
            ),
        ];
        for (name, pods, transition, want) in cases {
            assert_eq!(
                next_restart(&pods, &members, "new", transition),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn hash_changes_with_the_template_only() {
        let mut spec: ReplicatedDatabaseSpec = serde_yaml::from_str(
            "template: {spec: {containers: [{name: db, image: db:1}]}}\nreplicas: {count: 3}\nengine: {generic: {}}\n",
        )
        .unwrap();
        let a = spec_hash(&spec);
        spec.replicas.count = Some(5);
        spec.primary.ordinal = 2;
        assert_eq!(
            spec_hash(&spec),
            a,
            "scaling and switchover do not restart members"
        );
        spec.template.spec.as_mut().unwrap().containers[0].image = Some("db:2".into());
        assert_ne!(spec_hash(&spec), a);
    }
}
