//! The role state machine: who is primary, when to fail over (`Pinned`, `Reschedule`, `Promote`), switchover
//! by `spec.primary.ordinal`, and which member Pods to create, relabel, promote, demote, fence or delete.
//!
//! Safety rule, enforced here and checked by a property test: a member is made primary (created as primary,
//! or relabelled and promoted) only when no other member Pod is "primary-ish" — labelled `primary` or
//! `fenced`, or told by a hook that it is primary. An old primary is therefore fenced (relabelled out of
//! `-rw`, then deleted) and gone before any promotion, and since every step is recomputed from what is
//! observed (plus the transition recorded in status before acting), an operator crash between steps cannot
//! leave two primaries.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::model::{PodView, Role};
use super::placement::Notice;
use crate::api::replicated_database::{
    FailoverPolicy, FailoverRecord, Mode, Transition, TransitionKind,
};

/// How long a switchover waits for its target to reach the old primary's final position before it gives
/// up and brings the old primary back.
pub const SWITCHOVER_CATCH_UP_SECONDS: i64 = 120;

/// What the decision needs to know.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// `spec.mode`.
    pub mode: Mode,
    /// `spec.failover.policy`.
    pub policy: FailoverPolicy,
    /// `spec.failover.afterSeconds`.
    pub after_seconds: i64,
    /// `spec.primary.ordinal`.
    pub spec_primary: i32,
    /// The ordinals that should exist (from placement).
    pub members: &'a [i32],
    /// Ordinals whose Pods should go (from placement); never the primary or a transition's members.
    pub retire: &'a [i32],
    /// Member Pods as observed (at most one per ordinal: the Pod name is `<name>-<ordinal>`).
    pub pods: &'a [PodView],
    /// `status.primary.ordinal`.
    pub status_primary: Option<i32>,
    /// `status.transition`.
    pub transition: Option<&'a Transition>,
    /// `status.primaryUnavailableSince`.
    pub unavailable_since: Option<Timestamp>,
    /// The clock.
    pub now: Timestamp,
    /// Replication positions gathered for the ordinals a previous call asked for in `need_positions`.
    pub positions: &'a BTreeMap<i32, i64>,
    /// For `Reschedule`: whether the primary's volumes can be reached from another eligible node.
    pub reschedule_possible: Result<(), String>,
    /// Whether the node of `spec.primary.ordinal`'s Pod satisfies `spec.primary`'s pin (a switchover to a
    /// member running off the pinned nodes is refused).
    pub spec_primary_pin_ok: bool,
}

/// One step for the reconcile to carry out, in order; it stops at the first failure and decides again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the member's Pod with this role (and its PVCs if missing); `avoid_node` keeps a rescheduled
    /// primary off the node it was lost on.
    CreatePod {
        ordinal: i32,
        role: Role,
        avoid_node: Option<String>,
    },
    /// Set the role label.
    SetRole { ordinal: i32, role: Role },
    /// Run the engine's promote hook in the Pod, then record `applied-role: primary` on it.
    Promote { ordinal: i32 },
    /// Run the engine's demote hook in the (fenced) old primary; its output is the final position.
    Demote { ordinal: i32 },
    /// Delete the Pod (`force`: grace period 0, for a Pod whose node is lost).
    DeletePod { ordinal: i32, force: bool },
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decision {
    /// Steps to carry out, in order (after the status below has been written).
    pub actions: Vec<Action>,
    /// The primary's ordinal to record in status (`None` for `Peers`).
    pub primary: Option<i32>,
    /// The transition to record in status before acting.
    pub transition: Option<Transition>,
    /// When the primary was first seen unavailable (`None` when it is available).
    pub unavailable_since: Option<Timestamp>,
    /// A transition completed by this decision.
    pub completed: Option<FailoverRecord>,
    /// Ordinals whose replication position is needed before deciding: gather them and decide again.
    pub need_positions: Vec<i32>,
    /// Seconds after which to look again even if nothing changes (a failover timer is running).
    pub requeue_after: Option<i64>,
    /// Decisions and refusals, for Events.
    pub notices: Vec<Notice>,
}

fn ceil_second(t: Timestamp) -> Timestamp {
    let secs = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    Timestamp::from_second(secs).unwrap_or(t)
}

fn ts(t: Timestamp) -> Time {
    Time(t)
}

/// Decides the next steps. Pure: the same observation always gives the same decision.
pub fn decide(input: &Input) -> Decision {
    let mut d = Decision::default();
    if input.mode == Mode::Peers {
        peers(input, &mut d);
        return d;
    }
    let pod = |o: i32| input.pods.iter().find(|p| p.ordinal == o);
    let labelled_primary: Vec<&PodView> = input
        .pods
        .iter()
        .filter(|p| p.role == Some(Role::Primary) && !p.terminating)
        .collect();
    // A recorded primary that is no longer a member (scaled away before it ever ran) gives way to the spec.
    let mut primary = input
        .status_primary
        .filter(|p| input.members.contains(p))
        .or_else(|| (labelled_primary.len() == 1).then(|| labelled_primary[0].ordinal))
        .unwrap_or(input.spec_primary);
    // Another Pod than `o` that may still act as primary blocks making `o` primary.
    let blocked = |o: i32| input.pods.iter().any(|p| p.ordinal != o && p.primary_ish());

    let primary_available =
        pod(primary).is_some_and(|p| p.available() && p.role == Some(Role::Primary));
    // Status times have whole seconds: a first sighting is rounded up, so that the stored time is never
    // earlier than the real one and a failover never starts before afterSeconds.
    d.unavailable_since = if primary_available {
        None
    } else {
        Some(
            input
                .unavailable_since
                .unwrap_or_else(|| ceil_second(input.now)),
        )
    };
    let mut transition = input.transition.cloned();

    if let Some(t) = &input.transition {
        continue_transition(input, t, &mut primary, &mut transition, &mut d);
    } else {
        // A primary-ish Pod that is not the primary should not exist (a leftover of an interrupted fence):
        // finish fencing it.
        for p in input
            .pods
            .iter()
            .filter(|p| p.ordinal != primary && p.primary_ish())
        {
            fence(p, &mut d);
            d.notices.push(Notice {
                reason: "Fencing",
                message: format!(
                    "fencing {}: it is not the primary (member {primary} is)",
                    p.name
                ),
            });
        }
        if primary_available {
            if input.spec_primary != primary {
                start_switchover(input, primary, &mut transition, &mut d);
            }
        } else if let Some(since) = d.unavailable_since {
            start_failover(input, primary, since, &mut transition, &mut d);
        }
    }
    d.transition = transition;
    if !d.need_positions.is_empty() {
        // Nothing is done until the positions are known.
        d.actions.clear();
        d.primary = Some(primary);
        return d;
    }

    // Member maintenance: create missing members, resume interrupted promotions, retire nothing here (the
    // reconcile retires what placement says, never a transition's members or the primary).
    // A transition's members are handled by the transition; the old primary's ordinal is recreated (as a
    // replica) only once the target carries the primary label.
    let in_transition = |o: i32| {
        d.transition.as_ref().is_some_and(|t| {
            t.to_ordinal == o || (t.from_ordinal == o && primary == t.from_ordinal)
        })
    };
    let mut fresh = Vec::new();
    for &o in input.members {
        if in_transition(o) || d.actions.iter().any(|a| action_ordinal(a) == o) {
            continue;
        }
        match pod(o) {
            None => {
                let role = if o == primary {
                    Role::Primary
                } else {
                    Role::Replica
                };
                if role == Role::Primary && blocked(o) {
                    d.notices.push(Notice {
                        reason: "PrimaryWaitsForFence",
                        message: format!(
                            "member {o} waits for the old primary to be fenced before it starts"
                        ),
                    });
                    continue;
                }
                fresh.push(Action::CreatePod {
                    ordinal: o,
                    role,
                    avoid_node: None,
                });
            }
            Some(p) if !p.terminating => {
                if o == primary && p.role != Some(Role::Primary) && !blocked(o) {
                    // The primary's Pod carries another role (status was lost or a relabel was interrupted).
                    fresh.push(Action::SetRole {
                        ordinal: o,
                        role: Role::Primary,
                    });
                    if p.node_ready {
                        fresh.push(Action::Promote { ordinal: o });
                    }
                } else if o == primary
                    && p.role == Some(Role::Primary)
                    && p.applied != Some(Role::Primary)
                    && p.node_ready
                    && !blocked(o)
                {
                    fresh.push(Action::Promote { ordinal: o });
                } else if o != primary && p.role.is_none() {
                    fresh.push(Action::SetRole {
                        ordinal: o,
                        role: Role::Replica,
                    });
                }
            }
            Some(_) => {}
        }
    }
    for &o in input.retire {
        if o == primary
            || in_transition(o)
            || d.transition.as_ref().is_some_and(|t| t.to_ordinal == o)
        {
            continue;
        }
        if let Some(p) = pod(o).filter(|p| !p.terminating) {
            fresh.push(Action::DeletePod {
                ordinal: o,
                force: !p.node_ready,
            });
        }
    }
    d.actions.extend(fresh);
    // Defence in depth: one decision never makes two different members primary.
    let mut made_primary: Option<i32> = None;
    d.actions.retain(|a| {
        let o = match a {
            Action::CreatePod {
                ordinal,
                role: Role::Primary,
                ..
            }
            | Action::SetRole {
                ordinal,
                role: Role::Primary,
            }
            | Action::Promote { ordinal } => *ordinal,
            _ => return true,
        };
        *made_primary.get_or_insert(o) == o
    });
    d.primary = Some(primary);
    d
}

fn action_ordinal(a: &Action) -> i32 {
    match a {
        Action::CreatePod { ordinal, .. }
        | Action::SetRole { ordinal, .. }
        | Action::Promote { ordinal }
        | Action::Demote { ordinal }
        | Action::DeletePod { ordinal, .. } => *ordinal,
    }
}

/// Relabel out of `-rw` first (takes effect even if the delete hangs), then delete.
fn fence(p: &PodView, d: &mut Decision) {
    if p.role != Some(Role::Fenced) {
        d.actions.push(Action::SetRole {
            ordinal: p.ordinal,
            role: Role::Fenced,
        });
    }
    if !p.terminating || !p.node_ready {
        d.actions.push(Action::DeletePod {
            ordinal: p.ordinal,
            force: !p.node_ready,
        });
    }
}

fn peers(input: &Input, d: &mut Decision) {
    for &o in input.retire {
        if let Some(p) = input.pods.iter().find(|p| p.ordinal == o && !p.terminating) {
            d.actions.push(Action::DeletePod {
                ordinal: o,
                force: !p.node_ready,
            });
        }
    }
    for &o in input.members {
        match input.pods.iter().find(|p| p.ordinal == o) {
            None => d.actions.push(Action::CreatePod {
                ordinal: o,
                role: Role::Peer,
                avoid_node: None,
            }),
            Some(p) if !p.terminating && p.role != Some(Role::Peer) => {
                d.actions.push(Action::SetRole {
                    ordinal: o,
                    role: Role::Peer,
                })
            }
            Some(_) => {}
        }
    }
}

fn start_switchover(
    input: &Input,
    primary: i32,
    transition: &mut Option<Transition>,
    d: &mut Decision,
) {
    let target = input.spec_primary;
    let Some(tp) = input.pods.iter().find(|p| p.ordinal == target) else {
        return; // the member is being created; switch over once it is a Ready replica
    };
    if !(input.members.contains(&target) && tp.available() && tp.role == Some(Role::Replica)) {
        return;
    }
    if !input.spec_primary_pin_ok {
        d.notices.push(Notice {
            reason: "SwitchoverRefused",
            message: format!(
                "switchover to member {target} refused: its node does not satisfy spec.primary's nodeName/nodeSelector"
            ),
        });
        return;
    }
    let Some(old) = input.pods.iter().find(|p| p.ordinal == primary) else {
        return;
    };
    *transition = Some(Transition {
        kind: TransitionKind::Switchover,
        from_ordinal: primary,
        to_ordinal: target,
        started_at: ts(input.now),
        demoted_position: None,
        from_node: old.node.clone(),
    });
    d.notices.push(Notice {
        reason: "SwitchoverStarted",
        message: format!(
            "switching the primary from member {primary} to member {target} (spec.primary.ordinal)"
        ),
    });
    d.actions.push(Action::SetRole {
        ordinal: primary,
        role: Role::Fenced,
    });
    d.actions.push(Action::Demote { ordinal: primary });
    d.actions.push(Action::DeletePod {
        ordinal: primary,
        force: false,
    });
}

fn start_failover(
    input: &Input,
    primary: i32,
    since: Timestamp,
    transition: &mut Option<Transition>,
    d: &mut Decision,
) {
    let ppod = input.pods.iter().find(|p| p.ordinal == primary);
    let what = match ppod {
        None => format!("the primary (member {primary}) has no Pod"),
        Some(p) if !p.node_ready => {
            format!(
                "the primary {}'s node {} is not Ready",
                p.name,
                p.node.as_deref().unwrap_or("?")
            )
        }
        Some(p) => format!("the primary {} is not Ready", p.name),
    };
    let elapsed_ms = input.now.as_millisecond() - since.as_millisecond();
    let elapsed = elapsed_ms / 1000;
    match input.policy {
        FailoverPolicy::Pinned => {
            // Recreating a missing Pod on its pinned node is member maintenance, and a starting or crashing
            // Pod on a healthy node is the kubelet's: only a lost node is worth a warning.
            if ppod.is_some_and(|p| !p.node_ready) {
                d.notices.push(Notice {
                    reason: "PrimaryUnavailable",
                    message: format!("{what}; failover.policy Pinned: waiting for it, replicas keep serving reads"),
                });
            }
            return;
        }
        _ if ppod.is_none() || ppod.is_some_and(|p| p.node_ready && !p.terminating) => {
            // A missing Pod is recreated in place; a crashing Pod on a healthy node is the kubelet's to
            // restart. Failover is for a primary whose node is lost.
            return;
        }
        _ if elapsed_ms < input.after_seconds * 1000 => {
            // Round up: looking again a little late is fine, early is not.
            d.requeue_after = Some((input.after_seconds * 1000 - elapsed_ms + 999) / 1000);
            return;
        }
        _ => {}
    }
    let Some(old) = ppod else { return };
    match input.policy {
        FailoverPolicy::Pinned => {}
        FailoverPolicy::Promote => {
            let candidates: Vec<&PodView> = input
                .pods
                .iter()
                .filter(|p| {
                    p.ordinal != primary
                        && input.members.contains(&p.ordinal)
                        && p.role == Some(Role::Replica)
                        && p.available()
                        && !p.primary_ish()
                })
                .collect();
            let missing: Vec<i32> = candidates
                .iter()
                .map(|p| p.ordinal)
                .filter(|o| !input.positions.contains_key(o))
                .collect();
            if candidates.len() > 1 && !missing.is_empty() {
                d.need_positions = missing;
                return;
            }
            // Most advanced first; ties (or no position hook) go to the lowest ordinal.
            let best = candidates.iter().max_by_key(|p| {
                (
                    input.positions.get(&p.ordinal).copied().unwrap_or(i64::MIN),
                    -p.ordinal,
                )
            });
            let Some(best) = best else {
                d.notices.push(Notice {
                    reason: "FailoverRefused",
                    message: format!("{what} for {elapsed}s; failover.policy Promote: no Ready replica to promote"),
                });
                return;
            };
            *transition = Some(Transition {
                kind: TransitionKind::Failover,
                from_ordinal: primary,
                to_ordinal: best.ordinal,
                started_at: ts(since),
                demoted_position: None,
                from_node: old.node.clone(),
            });
            d.notices.push(Notice {
                reason: "FailoverStarted",
                message: format!(
                    "{what} for {elapsed}s; fencing it and promoting member {} (most advanced Ready replica)",
                    best.ordinal
                ),
            });
            fence(old, d);
        }
        FailoverPolicy::Reschedule => {
            if let Err(why) = &input.reschedule_possible {
                d.notices.push(Notice {
                    reason: "RescheduleRefused",
                    message: format!("{what}; failover.policy Reschedule cannot move it: {why}"),
                });
                return;
            }
            *transition = Some(Transition {
                kind: TransitionKind::Reschedule,
                from_ordinal: primary,
                to_ordinal: primary,
                started_at: ts(since),
                demoted_position: None,
                from_node: old.node.clone(),
            });
            d.notices.push(Notice {
                reason: "RescheduleStarted",
                message: format!(
                    "{what} for {elapsed}s; fencing it and recreating it on another node"
                ),
            });
            fence(old, d);
        }
    }
}

fn complete(input: &Input, t: &Transition, transition: &mut Option<Transition>, d: &mut Decision) {
    let completed_at = input.now;
    let duration_millis = completed_at.as_millisecond() - t.started_at.0.as_millisecond();
    d.completed = Some(FailoverRecord {
        kind: t.kind,
        from_ordinal: t.from_ordinal,
        to_ordinal: t.to_ordinal,
        started_at: t.started_at.clone(),
        completed_at: ts(completed_at),
        duration_millis,
    });
    d.notices.push(Notice {
        reason: "PrimaryReady",
        message: format!(
            "{:?} from member {} to member {} completed in {} ms",
            t.kind, t.from_ordinal, t.to_ordinal, duration_millis
        ),
    });
    *transition = None;
}

fn continue_transition(
    input: &Input,
    t: &Transition,
    primary: &mut i32,
    transition: &mut Option<Transition>,
    d: &mut Decision,
) {
    let pod = |o: i32| input.pods.iter().find(|p| p.ordinal == o);
    let (from, to) = (t.from_ordinal, t.to_ordinal);
    // The transition says who is primary: the old one until the target carries the label.
    *primary = if pod(to).is_some_and(|p| p.role == Some(Role::Primary) && !p.terminating) {
        to
    } else {
        from
    };
    if t.kind == TransitionKind::Reschedule {
        match pod(from) {
            // The old Pod: fenced, or still on the lost node.
            Some(p)
                if p.role == Some(Role::Fenced) || (p.node.is_some() && p.node == t.from_node) =>
            {
                fence(p, d)
            }
            Some(p) if p.terminating => {}
            None => {
                if input.pods.iter().any(|p| p.primary_ish()) {
                    return;
                }
                d.actions.push(Action::CreatePod {
                    ordinal: from,
                    role: Role::Primary,
                    avoid_node: t.from_node.clone(),
                });
            }
            Some(p) if p.available() && p.role == Some(Role::Primary) => {
                d.unavailable_since = None;
                complete(input, t, transition, d);
            }
            Some(_) => {}
        }
        return;
    }

    // Failover or Switchover: every primary-ish Pod but the target must be fenced and gone first.
    let mut waiting = false;
    for p in input
        .pods
        .iter()
        .filter(|p| p.ordinal != to && p.primary_ish())
    {
        waiting = true;
        if p.ordinal == from
            && t.kind == TransitionKind::Switchover
            && t.demoted_position.is_none()
            && p.available()
        {
            if p.role != Some(Role::Fenced) {
                d.actions.push(Action::SetRole {
                    ordinal: from,
                    role: Role::Fenced,
                });
            }
            d.actions.push(Action::Demote { ordinal: from });
            d.actions.push(Action::DeletePod {
                ordinal: from,
                force: false,
            });
        } else {
            fence(p, d);
        }
    }
    if waiting {
        return;
    }
    let Some(target) = pod(to).filter(|p| !p.terminating && input.members.contains(&to)) else {
        // Whoever `primary` is now (the old one, or the target if it was already labelled) is recreated as
        // primary by member maintenance.
        abort(t, "the target's Pod is gone", *primary, transition, d);
        return;
    };
    if target.role == Some(Role::Primary) {
        *primary = to;
        if target.applied != Some(Role::Primary) {
            if target.node_ready {
                d.actions.push(Action::Promote { ordinal: to });
            }
        } else if target.available() {
            d.unavailable_since = None;
            complete(input, t, transition, d);
        }
        return;
    }
    if !target.available() {
        abort(t, "the target is no longer Ready", *primary, transition, d);
        return;
    }
    if let (TransitionKind::Switchover, Some(final_position)) = (t.kind, t.demoted_position) {
        match input.positions.get(&to) {
            None => {
                d.need_positions = vec![to];
                return;
            }
            Some(pos)
                if *pos < final_position
                    && input.now.as_second() - t.started_at.0.as_second()
                        > SWITCHOVER_CATCH_UP_SECONDS =>
            {
                let why = format!("the target stayed at position {pos} behind {final_position}");
                abort(t, &why, *primary, transition, d);
                return;
            }
            Some(pos) if *pos < final_position => {
                d.notices.push(Notice {
                    reason: "SwitchoverWaitsForCatchUp",
                    message: format!(
                        "member {to} is at position {pos}, the old primary stopped at {final_position}: waiting"
                    ),
                });
                d.requeue_after = Some(1);
                return;
            }
            Some(_) => {}
        }
    }
    d.actions.push(Action::SetRole {
        ordinal: to,
        role: Role::Primary,
    });
    d.actions.push(Action::Promote { ordinal: to });
    d.notices.push(Notice {
        reason: "Promoting",
        message: format!("promoting member {to}: member {from} is fenced and stopped"),
    });
    *primary = to;
}

fn abort(
    t: &Transition,
    why: &str,
    primary: i32,
    transition: &mut Option<Transition>,
    d: &mut Decision,
) {
    d.notices.push(Notice {
        reason: "TransitionAborted",
        message: format!(
            "{:?} from member {} to member {} aborted: {why}; member {primary} is primary",
            t.kind, t.from_ordinal, t.to_ordinal
        ),
    });
    *transition = None;
}

#[cfg(test)]
#[path = "failover_tests.rs"]
mod tests;
