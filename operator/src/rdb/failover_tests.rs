//! Tests of the role state machine: table-driven cases for each policy and a property test over random
//! event sequences (node loss, pod crash and deletion, operator crash mid-reconcile, spec changes) that
//! checks there are never two primaries and that a stable world converges to exactly one.

use std::collections::BTreeMap;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::api::replicated_database::{FailoverPolicy, Mode, Transition, TransitionKind};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn pod(ordinal: i32, role: Role, ready: bool, node_ready: bool) -> PodView {
    PodView {
        name: format!("db-{ordinal}"),
        ordinal,
        role: Some(role),
        applied: Some(role),
        ready,
        node: Some(format!("n{ordinal}")),
        node_ready,
        terminating: false,
        member_node: None,
        spec_hash: None,
    }
}

struct Case<'a> {
    policy: FailoverPolicy,
    spec_primary: i32,
    members: &'a [i32],
    pods: Vec<PodView>,
    status_primary: Option<i32>,
    transition: Option<Transition>,
    unavailable_since: Option<i64>,
    now: i64,
    positions: BTreeMap<i32, i64>,
    reschedule: Result<(), String>,
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            policy: FailoverPolicy::Pinned,
            spec_primary: 0,
            members: &[0, 1, 2],
            pods: vec![],
            status_primary: Some(0),
            transition: None,
            unavailable_since: None,
            now: 100,
            positions: BTreeMap::new(),
            reschedule: Ok(()),
        }
    }
}

fn run(c: &Case) -> Decision {
    decide(&Input {
        mode: Mode::PrimaryReplica,
        policy: c.policy,
        after_seconds: 30,
        spec_primary: c.spec_primary,
        members: c.members,
        retire: &[],
        pods: &c.pods,
        status_primary: c.status_primary,
        transition: c.transition.as_ref(),
        unavailable_since: c.unavailable_since.map(t),
        now: t(c.now),
        positions: &c.positions,
        reschedule_possible: c.reschedule.clone(),
        spec_primary_pin_ok: true,
    })
}

fn healthy() -> Vec<PodView> {
    vec![
        pod(0, Role::Primary, true, true),
        pod(1, Role::Replica, true, true),
        pod(2, Role::Replica, true, true),
    ]
}

fn lost_primary() -> Vec<PodView> {
    vec![
        pod(0, Role::Primary, false, false),
        pod(1, Role::Replica, true, true),
        pod(2, Role::Replica, true, true),
    ]
}

fn transition(kind: TransitionKind, from: i32, to: i32) -> Transition {
    Transition {
        kind,
        from_ordinal: from,
        to_ordinal: to,
        started_at: Time(t(0)),
        demoted_position: None,
        from_node: Some(format!("n{from}")),
    }
}

#[test]
fn fresh_database_creates_the_primary_and_replicas_with_their_roles() {
    let d = run(&Case {
        status_primary: None,
        ..Default::default()
    });
    assert_eq!(
        d.actions,
        [
            Action::CreatePod {
                ordinal: 0,
                role: Role::Primary,
                avoid_node: None
            },
            Action::CreatePod {
                ordinal: 1,
                role: Role::Replica,
                avoid_node: None
            },
            Action::CreatePod {
                ordinal: 2,
                role: Role::Replica,
                avoid_node: None
            },
        ]
    );
    assert_eq!(d.primary, Some(0));
}

#[test]
fn steady_state_does_nothing() {
    let d = run(&Case {
        pods: healthy(),
        ..Default::default()
    });
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.transition, None);
    assert_eq!(d.unavailable_since, None);
    assert!(d.notices.is_empty());
}

#[test]
fn replica_pod_lost_is_recreated_with_its_ordinal() {
    let mut pods = healthy();
    pods.remove(2);
    let d = run(&Case {
        pods,
        ..Default::default()
    });
    assert_eq!(
        d.actions,
        [Action::CreatePod {
            ordinal: 2,
            role: Role::Replica,
            avoid_node: None
        }]
    );
}

/// (policy, seconds since unavailable, reschedule possible, transition kind, actions, first notice reason)
type PolicyCase = (
    FailoverPolicy,
    i64,
    Result<(), String>,
    Option<TransitionKind>,
    Vec<Action>,
    &'static str,
);

#[test]
fn primary_node_loss_under_each_policy() {
    // (policy, seconds since unavailable, reschedule possible, expected transition kind, expected actions)
    let fence0 = vec![
        Action::SetRole {
            ordinal: 0,
            role: Role::Fenced,
        },
        Action::DeletePod {
            ordinal: 0,
            force: true,
        },
    ];
    let cases: Vec<PolicyCase> = vec![
        (
            FailoverPolicy::Pinned,
            3600,
            Ok(()),
            None,
            vec![],
            "PrimaryUnavailable",
        ),
        (FailoverPolicy::Promote, 10, Ok(()), None, vec![], ""),
        (
            FailoverPolicy::Promote,
            30,
            Ok(()),
            Some(TransitionKind::Failover),
            fence0.clone(),
            "FailoverStarted",
        ),
        (
            FailoverPolicy::Reschedule,
            30,
            Ok(()),
            Some(TransitionKind::Reschedule),
            fence0.clone(),
            "RescheduleStarted",
        ),
        (
            FailoverPolicy::Reschedule,
            30,
            Err("pv local".into()),
            None,
            vec![],
            "RescheduleRefused",
        ),
    ];
    for (policy, elapsed, reschedule, kind, actions, reason) in cases {
        let d = run(&Case {
            policy,
            pods: lost_primary(),
            unavailable_since: Some(100 - elapsed),
            reschedule,
            positions: [(1, 5), (2, 5)].into(),
            ..Default::default()
        });
        assert_eq!(
            d.transition.as_ref().map(|t| t.kind),
            kind,
            "{policy:?} after {elapsed}s"
        );
        assert_eq!(d.actions, actions, "{policy:?} after {elapsed}s");
        assert_eq!(
            d.notices.first().map(|n| n.reason).unwrap_or(""),
            reason,
            "{policy:?} after {elapsed}s"
        );
        assert_eq!(
            d.primary,
            Some(0),
            "the primary does not change before the old one is gone"
        );
        if elapsed < 30 && policy != FailoverPolicy::Pinned {
            assert_eq!(d.requeue_after, Some(30 - elapsed));
        }
    }
}

#[test]
fn promote_picks_the_most_advanced_ready_replica_after_asking_for_positions() {
    let c = Case {
        policy: FailoverPolicy::Promote,
        pods: lost_primary(),
        unavailable_since: Some(0),
        ..Default::default()
    };
    let d = run(&c);
    assert_eq!(d.need_positions, [1, 2]);
    assert!(d.actions.is_empty());
    let cases: &[(&[(i32, i64)], i32)] = &[
        (&[(1, 10), (2, 20)], 2),
        (&[(1, 30), (2, 20)], 1),
        (&[(1, 7), (2, 7)], 1),
    ];
    for (positions, want) in cases {
        let d = run(&Case {
            positions: positions.iter().copied().collect(),
            ..c.clone_case()
        });
        assert_eq!(d.transition.unwrap().to_ordinal, *want, "{positions:?}");
    }
}

impl Case<'_> {
    fn clone_case(&self) -> Self {
        Case {
            policy: self.policy,
            spec_primary: self.spec_primary,
            members: self.members,
            pods: self.pods.clone(),
            status_primary: self.status_primary,
            transition: self.transition.clone(),
            unavailable_since: self.unavailable_since,
            now: self.now,
            positions: self.positions.clone(),
            reschedule: self.reschedule.clone(),
        }
    }
}

#[test]
fn promote_with_no_ready_replica_is_refused() {
    let mut pods = lost_primary();
    pods[1].ready = false;
    pods[2].node_ready = false;
    let d = run(&Case {
        policy: FailoverPolicy::Promote,
        pods,
        unavailable_since: Some(0),
        ..Default::default()
    });
    assert_eq!(d.transition, None);
    assert_eq!(d.notices[0].reason, "FailoverRefused");
}

#[test]
fn failover_promotes_only_after_the_old_primary_is_gone() {
    let tr = transition(TransitionKind::Failover, 0, 2);
    // Old primary still there (fenced, terminating on a lost node): force-delete again, promote nothing.
    let mut pods = lost_primary();
    pods[0].role = Some(Role::Fenced);
    pods[0].terminating = true;
    let d = run(&Case {
        policy: FailoverPolicy::Promote,
        pods,
        transition: Some(tr.clone()),
        ..Default::default()
    });
    assert_eq!(
        d.actions,
        [Action::DeletePod {
            ordinal: 0,
            force: true
        }]
    );
    assert_eq!(d.primary, Some(0));
    // Old primary gone: relabel and promote the target; the old ordinal comes back as a replica.
    let pods = lost_primary()[1..].to_vec();
    let d = run(&Case {
        policy: FailoverPolicy::Promote,
        pods,
        transition: Some(tr.clone()),
        ..Default::default()
    });
    assert_eq!(
        d.actions,
        [
            Action::SetRole {
                ordinal: 2,
                role: Role::Primary
            },
            Action::Promote { ordinal: 2 },
            Action::CreatePod {
                ordinal: 0,
                role: Role::Replica,
                avoid_node: None
            },
        ]
    );
    assert_eq!(d.primary, Some(2));
    // Target promoted and Ready: completed with the measured duration; the old primary rejoins as replica.
    let mut pods = lost_primary()[1..].to_vec();
    pods[1].role = Some(Role::Primary);
    pods[1].applied = Some(Role::Primary);
    let d = run(&Case {
        policy: FailoverPolicy::Promote,
        pods,
        status_primary: Some(2),
        transition: Some(tr),
        now: 37,
        ..Default::default()
    });
    assert_eq!(d.transition, None);
    assert_eq!(d.completed.as_ref().unwrap().duration_millis, 37_000);
    assert_eq!(
        d.actions,
        [Action::CreatePod {
            ordinal: 0,
            role: Role::Replica,
            avoid_node: None
        }]
    );
}

#[test]
fn failover_target_lost_before_promotion_aborts() {
    let tr = transition(TransitionKind::Failover, 0, 2);
    let mut pods = lost_primary()[1..].to_vec();
    pods[1].ready = false;
    let d = run(&Case {
        policy: FailoverPolicy::Promote,
        pods,
        transition: Some(tr),
        ..Default::default()
    });
    assert_eq!(d.transition, None);
    assert_eq!(d.notices[0].reason, "TransitionAborted");
    assert_eq!(d.primary, Some(0));
}

#[test]
fn reschedule_recreates_the_primary_away_from_the_lost_node() {
    let tr = transition(TransitionKind::Reschedule, 0, 0);
    let pods = lost_primary()[1..].to_vec();
    let d = run(&Case {
        policy: FailoverPolicy::Reschedule,
        pods,
        transition: Some(tr.clone()),
        ..Default::default()
    });
    assert_eq!(
        d.actions,
        [Action::CreatePod {
            ordinal: 0,
            role: Role::Primary,
            avoid_node: Some("n0".into())
        }]
    );
    let mut pods = healthy();
    pods[0].node = Some("n9".into());
    let d = run(&Case {
        policy: FailoverPolicy::Reschedule,
        pods,
        transition: Some(tr),
        ..Default::default()
    });
    assert_eq!(d.transition, None);
    assert!(d.completed.is_some());
}

#[test]
fn switchover_fences_and_demotes_then_waits_for_catch_up_then_promotes() {
    // Start: spec says 1, primary is 0 and healthy, 1 is a Ready replica.
    let d = run(&Case {
        spec_primary: 1,
        pods: healthy(),
        ..Default::default()
    });
    assert_eq!(
        d.transition.as_ref().unwrap().kind,
        TransitionKind::Switchover
    );
    assert_eq!(
        d.actions,
        [
            Action::SetRole {
                ordinal: 0,
                role: Role::Fenced
            },
            Action::Demote { ordinal: 0 },
            Action::DeletePod {
                ordinal: 0,
                force: false
            },
        ]
    );
    // Old primary gone, it stopped at position 50: ask for the target's position, wait, then promote.
    let mut tr = transition(TransitionKind::Switchover, 0, 1);
    tr.demoted_position = Some(50);
    let pods = healthy()[1..].to_vec();
    let base = Case {
        spec_primary: 1,
        pods,
        transition: Some(tr),
        ..Default::default()
    };
    assert_eq!(run(&base).need_positions, [1]);
    let d = run(&Case {
        positions: [(1, 49)].into(),
        ..base.clone_case()
    });
    assert!(d.actions.is_empty());
    assert_eq!(d.notices[0].reason, "SwitchoverWaitsForCatchUp");
    let d = run(&Case {
        positions: [(1, 50)].into(),
        ..base.clone_case()
    });
    assert_eq!(
        d.actions,
        [
            Action::SetRole {
                ordinal: 1,
                role: Role::Primary
            },
            Action::Promote { ordinal: 1 },
            Action::CreatePod {
                ordinal: 0,
                role: Role::Replica,
                avoid_node: None
            },
        ]
    );
    // A target that never catches up: the switchover is aborted and the old primary comes back.
    let d = run(&Case {
        positions: [(1, 49)].into(),
        now: SWITCHOVER_CATCH_UP_SECONDS + 1,
        ..base.clone_case()
    });
    assert_eq!(d.transition, None);
    assert_eq!(d.notices[0].reason, "TransitionAborted");
    assert_eq!(
        d.actions,
        [Action::CreatePod {
            ordinal: 0,
            role: Role::Primary,
            avoid_node: None
        }]
    );
}

#[test]
fn switchover_waits_for_the_target_to_be_a_ready_replica() {
    let mut pods = healthy();
    pods[1].ready = false;
    let d = run(&Case {
        spec_primary: 1,
        pods,
        ..Default::default()
    });
    assert_eq!(d.transition, None);
    assert!(d.actions.is_empty());
}

#[test]
fn a_stray_primary_is_fenced_and_blocks_creating_the_primary() {
    // Status says 1 is primary, 1 has no Pod, but 0 still carries the primary label (interrupted fence).
    let mut pods = healthy();
    pods.remove(1);
    let d = run(&Case {
        status_primary: Some(1),
        pods,
        ..Default::default()
    });
    assert_eq!(
        d.actions,
        [
            Action::SetRole {
                ordinal: 0,
                role: Role::Fenced
            },
            Action::DeletePod {
                ordinal: 0,
                force: false
            }
        ]
    );
    assert_eq!(d.notices.last().unwrap().reason, "PrimaryWaitsForFence");
}

#[test]
fn interrupted_promotion_is_resumed() {
    let mut pods = healthy();
    pods[0].applied = Some(Role::Replica);
    let d = run(&Case {
        pods,
        ..Default::default()
    });
    assert_eq!(d.actions, [Action::Promote { ordinal: 0 }]);
}

#[test]
fn peers_are_all_peers() {
    let d = decide(&Input {
        mode: Mode::Peers,
        policy: FailoverPolicy::Pinned,
        after_seconds: 30,
        spec_primary: 0,
        members: &[0, 1],
        retire: &[],
        pods: &[],
        status_primary: None,
        transition: None,
        unavailable_since: None,
        now: t(0),
        positions: &BTreeMap::new(),
        reschedule_possible: Ok(()),
        spec_primary_pin_ok: true,
    });
    assert_eq!(
        d.actions,
        [
            Action::CreatePod {
                ordinal: 0,
                role: Role::Peer,
                avoid_node: None
            },
            Action::CreatePod {
                ordinal: 1,
                role: Role::Peer,
                avoid_node: None
            },
        ]
    );
    assert_eq!(d.primary, None);
}

// ---------------------------------------------------------------------------------------------------------
// Property test: a simulated cluster. Pods have a role label and a database process that may act as primary;
// nodes can be lost; graceful deletion completes only on a Ready node; the operator may crash after any
// step. Invariant after every single step: at most one Pod labelled primary and at most one Pod object whose
// database acts as primary.

#[derive(Clone, Debug)]
struct SimPod {
    role: Role,
    applied: Role,
    db_primary: bool,
    ready: bool,
    node: Option<usize>,
    terminating: bool,
    position: i64,
}

#[derive(Clone, Debug)]
struct Sim {
    policy: FailoverPolicy,
    nodes_ready: Vec<bool>,
    pods: BTreeMap<i32, SimPod>,
    count: i32,
    spec_primary: i32,
    status_primary: Option<i32>,
    transition: Option<Transition>,
    unavailable_since: Option<Timestamp>,
    now: i64,
    clock_position: i64,
}

#[derive(Clone, Debug)]
enum Event {
    /// Reconcile; `crash_after` steps applied (the operator dies mid-way when shorter than the plan).
    Reconcile {
        crash_after: usize,
    },
    NodeLoss(usize),
    NodeBack(usize),
    PodCrash(i32),
    PodDeleted(i32),
    PodReady(i32),
    TerminationCompletes(i32),
    SetSpecPrimary(i32),
    SetCount(i32),
    Tick(i64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0usize..8).prop_map(|c| Event::Reconcile { crash_after: c }),
        1 => (0usize..3).prop_map(Event::NodeLoss),
        1 => (0usize..3).prop_map(Event::NodeBack),
        1 => (0i32..4).prop_map(Event::PodCrash),
        1 => (0i32..4).prop_map(Event::PodDeleted),
        3 => (0i32..4).prop_map(Event::PodReady),
        2 => (0i32..4).prop_map(Event::TerminationCompletes),
        1 => (0i32..4).prop_map(Event::SetSpecPrimary),
        1 => (1i32..5).prop_map(Event::SetCount),
        2 => (1i64..40).prop_map(Event::Tick),
    ]
}

impl Sim {
    fn new(policy: FailoverPolicy) -> Self {
        Sim {
            policy,
            nodes_ready: vec![true; 3],
            pods: BTreeMap::new(),
            count: 3,
            spec_primary: 0,
            status_primary: None,
            transition: None,
            unavailable_since: None,
            now: 0,
            clock_position: 0,
        }
    }

    fn views(&self) -> Vec<PodView> {
        self.pods
            .iter()
            .map(|(o, p)| PodView {
                name: format!("db-{o}"),
                ordinal: *o,
                role: Some(p.role),
                applied: Some(p.applied),
                ready: p.ready,
                node: p.node.map(|n| format!("n{n}")),
                node_ready: p.node.is_none_or(|n| self.nodes_ready[n]),
                terminating: p.terminating,
                member_node: None,
                spec_hash: None,
            })
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        let labelled = self
            .pods
            .values()
            .filter(|p| p.role == Role::Primary)
            .count();
        let acting = self.pods.values().filter(|p| p.db_primary).count();
        if labelled > 1 || acting > 1 {
            return Err(format!("two primaries: {:#?}", self.pods));
        }
        Ok(())
    }

    fn members(&self) -> Vec<i32> {
        let mut m: Vec<i32> = (0..self.count).collect();
        if let Some(p) = self.status_primary
            && !m.contains(&p)
            && self.pods.contains_key(&p)
        {
            m.push(p);
        }
        m
    }

    fn decide(&self) -> Decision {
        let views = self.views();
        let members = self.members();
        let retire: Vec<i32> = self
            .pods
            .keys()
            .copied()
            .filter(|o| !members.contains(o))
            .collect();
        let mut positions = BTreeMap::new();
        loop {
            let d = decide(&Input {
                mode: Mode::PrimaryReplica,
                policy: self.policy,
                after_seconds: 30,
                spec_primary: self.spec_primary,
                members: &members,
                retire: &retire,
                pods: &views,
                status_primary: self.status_primary,
                transition: self.transition.as_ref(),
                unavailable_since: self.unavailable_since,
                now: t(self.now),
                positions: &positions,
                reschedule_possible: Ok(()),
                spec_primary_pin_ok: true,
            });
            if d.need_positions.is_empty()
                || d.need_positions.iter().all(|o| positions.contains_key(o))
            {
                return d;
            }
            for o in &d.need_positions {
                positions.insert(*o, self.pods.get(o).map_or(0, |p| p.position));
            }
        }
    }

    /// One reconcile: status first (as the reconcile writes it before acting), then up to `limit` steps,
    /// checking the invariant after each.
    fn reconcile(&mut self, limit: usize) -> Result<(), String> {
        let d = self.decide();
        self.status_primary = d.primary;
        self.transition = d.transition.clone();
        self.unavailable_since = d.unavailable_since;
        for a in d.actions.iter().take(limit) {
            if !self.apply(a) {
                break; // a failed step ends the reconcile, as in the controller
            }
            self.check()?;
        }
        Ok(())
    }

    fn apply(&mut self, a: &Action) -> bool {
        match a {
            Action::CreatePod {
                ordinal,
                role,
                avoid_node,
            } => {
                if self.pods.contains_key(ordinal) {
                    return false; // AlreadyExists
                }
                let node = (0..self.nodes_ready.len()).find(|n| {
                    self.nodes_ready[*n] && avoid_node.as_deref() != Some(format!("n{n}").as_str())
                });
                self.pods.insert(
                    *ordinal,
                    SimPod {
                        role: *role,
                        applied: *role,
                        db_primary: false, // the database starts on PodReady
                        ready: false,
                        node,
                        terminating: false,
                        position: 0,
                    },
                );
                true
            }
            Action::SetRole { ordinal, role } => match self.pods.get_mut(ordinal) {
                Some(p) => {
                    p.role = *role;
                    true
                }
                None => false,
            },
            Action::Promote { ordinal } => {
                let ready = &self.nodes_ready;
                match self.pods.get_mut(ordinal) {
                    Some(p) if !p.terminating && p.node.is_some_and(|n| ready[n]) => {
                        p.db_primary = true;
                        p.applied = Role::Primary;
                        true
                    }
                    _ => false,
                }
            }
            Action::Demote { ordinal } => {
                let Some(p) = self.pods.get_mut(ordinal) else {
                    return false;
                };
                p.db_primary = false;
                p.ready = false;
                let last = p.position;
                if let Some(tr) = self.transition.as_mut() {
                    tr.demoted_position = Some(last);
                }
                // A clean shutdown sends everything to the replicas that are streaming.
                for r in self
                    .pods
                    .values_mut()
                    .filter(|r| r.ready && r.role == Role::Replica)
                {
                    r.position = r.position.max(last);
                }
                true
            }
            Action::DeletePod { ordinal, force } => {
                if *force {
                    self.pods.remove(ordinal);
                } else if let Some(p) = self.pods.get_mut(ordinal) {
                    p.terminating = true;
                }
                true
            }
        }
    }

    fn event(&mut self, e: &Event) -> Result<(), String> {
        match e {
            Event::Reconcile { crash_after } => return self.reconcile(*crash_after),
            Event::NodeLoss(n) => {
                self.nodes_ready[*n] = false;
                for p in self.pods.values_mut().filter(|p| p.node == Some(*n)) {
                    p.ready = false;
                }
            }
            Event::NodeBack(n) => self.nodes_ready[*n] = true,
            Event::PodCrash(o) => {
                // The container dies; it restarts on a later PodReady, reading its role label anew.
                if let Some(p) = self.pods.get_mut(o) {
                    p.ready = false;
                    p.db_primary = false;
                }
            }
            Event::PodDeleted(o) => {
                self.pods.remove(o);
            }
            Event::PodReady(o) => {
                let ready_node = (0..self.nodes_ready.len()).find(|n| self.nodes_ready[*n]);
                let primary_exists = self.pods.values().any(|p| p.db_primary);
                let ready = &self.nodes_ready;
                if let Some(p) = self.pods.get_mut(o) {
                    if p.node.is_none() {
                        p.node = ready_node; // the scheduler binds a pending Pod
                    }
                    if p.node.is_some_and(|n| ready[n]) && !p.terminating && !p.ready {
                        // The entrypoint starts the database in the role its label says now.
                        match p.role {
                            Role::Primary => {
                                p.db_primary = true;
                                p.ready = true;
                            }
                            // A replica needs a primary to clone from the first time.
                            Role::Replica if primary_exists || p.position > 0 => {
                                p.ready = true;
                                p.position = p.position.max(self.clock_position);
                            }
                            _ => {}
                        }
                    }
                }
            }
            Event::TerminationCompletes(o) => {
                if self
                    .pods
                    .get(o)
                    .is_some_and(|p| p.terminating && p.node.is_none_or(|n| self.nodes_ready[n]))
                {
                    self.pods.remove(o);
                }
            }
            Event::SetSpecPrimary(o) => self.spec_primary = (*o).min(self.count - 1),
            Event::SetCount(c) => {
                self.count = *c;
                self.spec_primary = self.spec_primary.min(c - 1);
            }
            Event::Tick(s) => {
                self.now += s;
                // Writes happen on the primary; Ready replicas stream them.
                if self.pods.values().any(|p| p.db_primary && p.ready) {
                    self.clock_position += 1;
                    for p in self.pods.values_mut().filter(|p| p.ready) {
                        p.position = self.clock_position;
                    }
                }
            }
        }
        self.check()
    }

    /// Heal everything and let the world settle: every node back, terminations complete, pods get Ready.
    fn settle(&mut self) -> Result<(), String> {
        for n in 0..self.nodes_ready.len() {
            self.nodes_ready[n] = true;
        }
        for _ in 0..40 {
            self.reconcile(usize::MAX)?;
            let ordinals: Vec<i32> = self.pods.keys().copied().collect();
            for o in ordinals {
                self.event(&Event::TerminationCompletes(o))?;
                self.event(&Event::PodReady(o))?;
            }
            self.now += 40;
        }
        Ok(())
    }
}

fn policy() -> impl Strategy<Value = FailoverPolicy> {
    prop_oneof![
        Just(FailoverPolicy::Pinned),
        Just(FailoverPolicy::Promote),
        Just(FailoverPolicy::Reschedule)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_two_primaries(policy in policy(), events in proptest::collection::vec(event(), 1..80)) {
        let mut sim = Sim::new(policy);
        for e in &events {
            if let Err(msg) = sim.event(e) {
                prop_assert!(false, "after {e:?}: {msg}");
            }
        }
        if let Err(msg) = sim.settle() {
            prop_assert!(false, "while settling: {msg}");
        }
        // A healed world converges: one primary, labelled, acting, Ready, and no transition left over.
        let primaries: Vec<(&i32, &SimPod)> = sim.pods.iter().filter(|(_, p)| p.role == Role::Primary).collect();
        prop_assert_eq!(primaries.len(), 1, "pods: {:#?}\ntransition {:?}", sim.pods, sim.transition);
        prop_assert!(primaries[0].1.db_primary && primaries[0].1.ready, "{:#?}", sim.pods);
        prop_assert_eq!(sim.transition.as_ref(), None);
        prop_assert_eq!(sim.status_primary, Some(sim.spec_primary), "the primary returns to spec.primary.ordinal");
        let ordinals: Vec<i32> = sim.pods.keys().copied().collect();
        prop_assert_eq!(ordinals, (0..sim.count).collect::<Vec<_>>());
    }
}
