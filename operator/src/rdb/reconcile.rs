//! The reconcile of one ReplicatedDatabase: read (member Pods and PVCs listed fresh from the API server,
//! nodes from the shared cache) → decide (the pure `placement` and `failover` modules) → record the
//! transition in status → act (server-side apply with field manager `berth`, role relabels, hooks through
//! pods/exec, deletions) → status and Events. Every write is skipped when the object already says the same,
//! so a database at rest costs no API writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use super::desired::{self, DesiredError};
use super::engine::{self, Hook};
use super::failover::{self, Action};
use super::metrics::Metrics;
use super::model::{self, ANNOTATION_APPLIED_ROLE, NodeView, PodView, Role};
use super::placement::{self, Notice, Placement};
use super::rollout;
use crate::api::replicated_database::{
    FailoverPolicy, LABEL_ROLE, MemberStatus, Mode, PrimaryStatus, ReplicatedDatabase,
    ReplicatedDatabaseStatus,
};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "berth";

/// What can go wrong in a reconcile; the variant name is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The desired objects could not be built from the spec.
    #[error(transparent)]
    Desired(#[from] DesiredError),
    /// A hook ran and failed.
    #[error("{hook:?} hook in {pod} failed: {message}")]
    Hook {
        hook: Hook,
        pod: String,
        message: String,
    },
    /// Serialising an object failed (a bug).
    #[error("serialising {0}: {1}")]
    Serialize(&'static str, serde_json::Error),
}

impl Error {
    /// The metric label of this error.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Desired(_) => "desired",
            Error::Hook { .. } => "hook",
            Error::Serialize(..) => "serialize",
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Nodes, from the controller's node watch.
    pub nodes: Store<Node>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Notices already published per object, so a condition that persists is reported once, not on every
    /// reconcile (Events are API writes).
    pub published: Mutex<HashMap<String, BTreeSet<(&'static str, String)>>>,
}

/// Reconciles one ReplicatedDatabase.
pub async fn reconcile(rdb: Arc<ReplicatedDatabase>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let start = std::time::Instant::now();
    let result = reconcile_inner(&rdb, &ctx).await;
    ctx.metrics.observe_reconcile(
        start.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

/// What the controller does after a failed reconcile: log, count, retry soon.
pub fn error_policy(rdb: Arc<ReplicatedDatabase>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    warn!(rdb = %rdb.name_any(), namespace = ?rdb.namespace(), %error, "reconcile failed");
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile_inner(rdb: &ReplicatedDatabase, ctx: &Context) -> Result<Requeue, Error> {
    let (Some(ns), name) = (rdb.namespace(), rdb.name_any()) else {
        return Ok(Requeue::await_change());
    };
    if rdb.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove Pods, Services and (with whenDeleted: Delete)
        // PVCs; nothing else needs cleaning up, so there is no finalizer.
        return Ok(Requeue::await_change());
    }
    let client = &ctx.client;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pvcs_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let rdb_api: Api<ReplicatedDatabase> = Api::namespaced(client.clone(), &ns);
    let selector = ListParams::default().labels(&desired::selector_string(&name));

    // Read. Pods are listed from the API server, not a cache: a stale view could hide a primary.
    let pods = pods_api
        .list(&selector)
        .await
        .map_err(kube_err(format!("listing Pods of {ns}/{name}")))?
        .items;
    let pvcs = pvcs_api
        .list(&selector)
        .await
        .map_err(kube_err(format!("listing PVCs of {ns}/{name}")))?
        .items;
    // Views straight from the shared cache: cloning every Node per reconcile costs memory at scale.
    let node_views = model::node_views(ctx.nodes.state().iter().map(|n| n.as_ref()));
    let pod_views = model::pod_views(&pods, &node_views);
    let pvc_views = model::pvc_views(&pvcs);
    // The status as stored now: the cached object can lag behind our own last write, and deciding from an
    // older transition would repeat steps (harmless, since every step is idempotent, but noisy).
    let fresh = rdb_api
        .get_status(&name)
        .await
        .map_err(kube_err(format!("reading {ns}/{name}")))?;
    let status = fresh.status.unwrap_or_default();

    // Decide.
    let current_primary = status.primary.as_ref().map(|p| p.ordinal);
    let placement = placement::place(
        &rdb.spec,
        current_primary,
        &pod_views,
        &pvc_views,
        &node_views,
    );
    let members: Vec<i32> = placement.members.iter().map(|m| m.ordinal).collect();
    let reschedule_possible = reschedule_check(
        rdb,
        client,
        &ns,
        &name,
        current_primary,
        &pod_views,
        &node_views,
    )
    .await?;
    let spec_primary_pin_ok = pin_ok(rdb, &pod_views, &node_views);
    let now = Timestamp::now();
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let decision = loop {
        let d = failover::decide(&failover::Input {
            mode: rdb.spec.mode,
            policy: rdb.spec.failover.policy,
            after_seconds: i64::from(rdb.spec.failover.after_seconds),
            spec_primary: rdb.spec.primary.ordinal,
            members: &members,
            retire: &placement.retire,
            pods: &pod_views,
            status_primary: current_primary,
            transition: status.transition.as_ref(),
            unavailable_since: status.primary_unavailable_since.as_ref().map(|t| t.0),
            now,
            positions: &positions,
            reschedule_possible: reschedule_possible.clone(),
            spec_primary_pin_ok,
        });
        let missing: Vec<i32> = d
            .need_positions
            .iter()
            .copied()
            .filter(|o| !positions.contains_key(o))
            .collect();
        if missing.is_empty() {
            break d;
        }
        for o in missing {
            let pos = match hook_command_for(rdb, Hook::Position) {
                Some(argv) => {
                    let pod = desired::pod_name(&name, o);
                    match exec(&pods_api, &pod, &desired::engine_container(rdb)?, &argv).await {
                        Ok(out) => engine::parse_position(&out).unwrap_or(i64::MIN),
                        Err(e) => {
                            warn!(%pod, error = %e, "position hook failed; treating the member as least advanced");
                            i64::MIN
                        }
                    }
                }
                None => i64::MIN,
            };
            positions.insert(o, pos);
        }
    };

    // A changed template rolls out one member at a time, only when nothing else is being done.
    let mut decision = decision;
    if decision.actions.is_empty()
        && let Some(o) = rollout::next_restart(
            &pod_views,
            &members,
            &rollout::spec_hash(&rdb.spec),
            decision.transition.is_some(),
        )
    {
        decision.notices.push(Notice {
            reason: "RollingOut",
            message: format!(
                "restarting {} with the changed template",
                desired::pod_name(&name, o)
            ),
        });
        decision.actions.push(Action::DeletePod {
            ordinal: o,
            force: false,
        });
    }

    // Record the transition (and who is primary) before acting, so a restarted operator resumes it.
    let mut written = status.clone();
    let mut new_status = status.clone();
    new_status.primary = decision
        .primary
        .map(|o| primary_status(&name, o, &pod_views));
    new_status.transition = decision.transition.clone();
    new_status.primary_unavailable_since = decision.unavailable_since.map(Time);
    if let Some(done) = &decision.completed {
        new_status.last_failover = Some(done.clone());
        ctx.metrics.failover_completed(done);
    }
    if new_status.transition != written.transition
        || new_status.primary.as_ref().map(|p| p.ordinal)
            != written.primary.as_ref().map(|p| p.ordinal)
    {
        write_status(&rdb_api, &name, &new_status, &ctx.metrics).await?;
        written = new_status.clone();
    }

    let volume_notices = placement::volume_notices(&pending_claims(client, &ns, &pvcs).await?);
    let notices: Vec<Notice> = placement
        .notices
        .iter()
        .chain(&decision.notices)
        .chain(&volume_notices)
        .cloned()
        .collect();
    publish_notices(ctx, rdb, &notices).await;

    // Act.
    // A Service that cannot be applied (say, the cluster's service range is full) must not keep members
    // from running: it is reported and retried after the members are taken care of.
    let shared = apply_shared_objects(rdb, ctx, &ns).await;
    if let Err(e) = &shared {
        publish_notices_once(ctx, rdb, "ServiceFailed", e.to_string()).await;
    }
    ensure_pvcs(rdb, &placement, &pvcs, &pvcs_api, &ctx.metrics).await?;
    for action in &decision.actions {
        let position = act(rdb, &placement, action, &pods_api, &pods, &ctx.metrics).await?;
        publish(ctx, rdb, &action_notice(&name, action, position)).await;
        if let Some(position) = position
            && let Some(t) = new_status.transition.as_mut()
        {
            t.demoted_position = Some(position);
            write_status(&rdb_api, &name, &new_status, &ctx.metrics).await?;
            written = new_status.clone();
        }
    }
    for pvc in &placement.delete_pvcs {
        info!(%pvc, "deleting PVC of a removed member (whenScaled: Delete)");
        ctx.metrics.write("delete", "PersistentVolumeClaim");
        match pvcs_api.delete(pvc, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err(format!("deleting PVC {ns}/{pvc}"))(e)),
        }
    }

    // Status from what is observed now (the actions' effects arrive as watch events and reconcile again).
    let final_status = observed_status(rdb, &name, &placement, &pod_views, &pvc_views, new_status);
    if final_status != written {
        write_status(&rdb_api, &name, &final_status, &ctx.metrics).await?;
    }
    shared?;

    let requeue = match (&decision.transition, decision.requeue_after) {
        (Some(_), _) => Duration::from_secs(2),
        (None, Some(s)) => Duration::from_secs(s.max(1) as u64),
        (None, None) => Duration::from_secs(300),
    };
    Ok(Requeue::requeue(requeue))
}

fn hook_command_for(rdb: &ReplicatedDatabase, hook: Hook) -> Option<Vec<String>> {
    engine::hook_command(&rdb.spec.engine, hook)
}

fn primary_status(name: &str, ordinal: i32, pods: &[PodView]) -> PrimaryStatus {
    PrimaryStatus {
        ordinal,
        pod: desired::pod_name(name, ordinal),
        node: pods
            .iter()
            .find(|p| p.ordinal == ordinal)
            .and_then(|p| p.node.clone()),
    }
}

/// Whether `spec.primary.ordinal`'s Pod runs where `spec.primary` pins the primary.
fn pin_ok(rdb: &ReplicatedDatabase, pods: &[PodView], nodes: &[NodeView]) -> bool {
    let constraint = placement::primary_constraint(&rdb.spec);
    let Some(node) = pods
        .iter()
        .find(|p| p.ordinal == rdb.spec.primary.ordinal)
        .and_then(|p| p.node.as_ref())
    else {
        return true;
    };
    nodes
        .iter()
        .find(|n| &n.name == node)
        .is_none_or(|n| placement::satisfies(n, &constraint))
}

/// For `Reschedule`: can the primary's volumes be reached from another node? Only looked up when the
/// primary's node is not Ready (the only time it matters).
async fn reschedule_check(
    rdb: &ReplicatedDatabase,
    client: &Client,
    ns: &str,
    name: &str,
    primary: Option<i32>,
    pods: &[PodView],
    nodes: &[NodeView],
) -> Result<Result<(), String>, Error> {
    if rdb.spec.failover.policy != FailoverPolicy::Reschedule {
        return Ok(Ok(()));
    }
    let ordinal = primary.unwrap_or(rdb.spec.primary.ordinal);
    let Some(pod) = pods.iter().find(|p| p.ordinal == ordinal && !p.node_ready) else {
        return Ok(Ok(()));
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut affinities = Vec::new();
    for t in &rdb.spec.volume_claim_templates {
        let claim = desired::pvc_name(
            t.metadata.name.as_deref().unwrap_or_default(),
            name,
            ordinal,
        );
        let Some(pvc) = pvcs
            .get_opt(&claim)
            .await
            .map_err(kube_err(format!("reading PVC {ns}/{claim}")))?
        else {
            continue;
        };
        let Some(pv_name) = pvc.spec.and_then(|s| s.volume_name) else {
            continue;
        };
        let pv = pvs
            .get_opt(&pv_name)
            .await
            .map_err(kube_err(format!("reading PV {pv_name}")))?;
        let required = pv.and_then(|pv| pv.spec?.node_affinity?.required);
        affinities.push((format!("{pv_name} (PVC {claim})"), required));
    }
    let constraint = if ordinal == rdb.spec.primary.ordinal {
        placement::primary_constraint(&rdb.spec)
    } else {
        placement::Constraint::Any
    };
    Ok(placement::volumes_reachable_elsewhere(
        &affinities,
        nodes,
        pod.node.as_deref(),
        &constraint,
    ))
}

/// Publishes the notices that were not already published for this object (a persisting condition is
/// reported once; Events are API writes).
async fn publish_notices(ctx: &Context, rdb: &ReplicatedDatabase, notices: &[Notice]) {
    let key = format!("{}/{}", rdb.namespace().unwrap_or_default(), rdb.name_any());
    let now: BTreeSet<(&'static str, String)> = notices
        .iter()
        .map(|n| (n.reason, n.message.clone()))
        .collect();
    let fresh: Vec<(&'static str, String)> = {
        let Ok(mut published) = ctx.published.lock() else {
            return;
        };
        let seen = published.entry(key).or_default();
        let fresh = now.difference(seen).cloned().collect();
        *seen = now;
        fresh
    };
    for (reason, message) in fresh {
        publish(ctx, rdb, &Notice { reason, message }).await;
    }
}

/// Publishes one Warning per distinct message (an error that repeats on every retry is reported once).
async fn publish_notices_once(
    ctx: &Context,
    rdb: &ReplicatedDatabase,
    reason: &'static str,
    message: String,
) {
    let key = format!(
        "{}/{}#errors",
        rdb.namespace().unwrap_or_default(),
        rdb.name_any()
    );
    let fresh = match ctx.published.lock() {
        Ok(mut published) => published
            .entry(key)
            .or_default()
            .insert((reason, message.clone())),
        Err(_) => false,
    };
    if fresh {
        publish(ctx, rdb, &Notice { reason, message }).await;
    }
}

/// Refusals and waits are Warnings; decisions carried out are Normal.
const WARNING_REASONS: &[&str] = &[
    "NoNodeForPrimary",
    "FailoverRefused",
    "RescheduleRefused",
    "SwitchoverRefused",
    "PrimaryUnavailable",
    "TransitionAborted",
    "InvalidSpec",
    "PrimaryWaitsForFence",
    "StorageClassMissing",
    "VolumeProvisioningFailed",
    "RetireWaitsForSwitchover",
    "ServiceFailed",
];

async fn publish(ctx: &Context, rdb: &ReplicatedDatabase, notice: &Notice) {
    let warning = WARNING_REASONS.contains(&notice.reason);
    info!(rdb = %rdb.name_any(), reason = notice.reason, message = %notice.message, "decision");
    ctx.metrics.write("create", "Event");
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.into(),
        note: Some(notice.message.clone()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &rdb.object_ref(&())).await {
        warn!(reason = notice.reason, error = %e, "publishing an Event failed");
    }
}

/// The Event that records a step carried out.
fn action_notice(name: &str, action: &Action, position: Option<i64>) -> Notice {
    let pod = |o: &i32| desired::pod_name(name, *o);
    let (reason, message) = match action {
        Action::CreatePod {
            ordinal,
            role,
            avoid_node,
        } => (
            "MemberCreated",
            format!(
                "created {} as {}{}",
                pod(ordinal),
                role.as_str(),
                avoid_node
                    .as_ref()
                    .map(|n| format!(", away from lost node {n}"))
                    .unwrap_or_default()
            ),
        ),
        Action::SetRole {
            ordinal,
            role: Role::Fenced,
        } => (
            "Fenced",
            format!("{} fenced: out of -rw, it is stopped next", pod(ordinal)),
        ),
        Action::SetRole { ordinal, role } => (
            "RoleChanged",
            format!("{} is now {}", pod(ordinal), role.as_str()),
        ),
        Action::Promote { ordinal } => (
            "Promoted",
            format!("{} promoted (engine hook done)", pod(ordinal)),
        ),
        Action::Demote { ordinal } => (
            "Demoted",
            match position {
                Some(p) => format!("{} demoted; final position {p}", pod(ordinal)),
                None => format!("{} demoted", pod(ordinal)),
            },
        ),
        Action::DeletePod {
            ordinal,
            force: true,
        } => (
            "MemberDeleted",
            format!("{} force-deleted: its node is lost", pod(ordinal)),
        ),
        Action::DeletePod {
            ordinal,
            force: false,
        } => ("MemberDeleted", format!("{} deleted", pod(ordinal))),
    };
    Notice { reason, message }
}

/// The member PVCs that are still Pending, with their class's existence and the provisioner's last
/// failure (looked up only for claims pending for more than 10 seconds, so a healthy start reads nothing).
async fn pending_claims(
    client: &Client,
    ns: &str,
    pvcs: &[PersistentVolumeClaim],
) -> Result<Vec<placement::PendingClaim>, Error> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let now = Timestamp::now();
    let mut out = Vec::new();
    for pvc in pvcs {
        let pending = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        let age = pvc
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| now.as_second() - t.0.as_second());
        if !pending || age < 10 {
            continue;
        }
        let name = pvc.name_any();
        let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
        let class_exists = match &class {
            Some(c) => classes
                .get_opt(c)
                .await
                .map_err(kube_err(format!("reading StorageClass {c}")))?
                .is_some(),
            None => true,
        };
        let lp = ListParams::default().fields(&format!(
            "involvedObject.name={name},reason=ProvisioningFailed"
        ));
        let failure = events
            .list(&lp)
            .await
            .map_err(kube_err(format!("reading Events of PVC {ns}/{name}")))?
            .items
            .into_iter()
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
            .and_then(|e| e.message);
        out.push(placement::PendingClaim {
            name,
            class,
            class_exists,
            provisioning_failure: failure,
        });
    }
    Ok(out)
}

/// Services and the scripts ConfigMap, applied only when they differ from what is there.
async fn apply_shared_objects(
    rdb: &ReplicatedDatabase,
    ctx: &Context,
    ns: &str,
) -> Result<(), Error> {
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for svc in desired::services(rdb)? {
        let name = svc.name_any();
        let current = svc_api
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading Service {ns}/{name}")))?;
        let same = current.as_ref().is_some_and(|c| {
            let (Some(want), Some(have)) = (svc.spec.as_ref(), c.spec.as_ref()) else {
                return false;
            };
            want.selector == have.selector
                && ports_same(want.ports.as_deref(), have.ports.as_deref())
                && (want.cluster_ip.is_none() || want.cluster_ip == have.cluster_ip)
                && c.metadata.owner_references == svc.metadata.owner_references
        });
        if !same {
            ctx.metrics.write("apply", "Service");
            svc_api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(typed(&svc, "v1", "Service")?),
                )
                .await
                .map_err(kube_err(format!("applying Service {ns}/{name}")))?;
        }
    }
    if let Some(cm) = desired::scripts_config_map(rdb)? {
        let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        let name = cm.name_any();
        let current = cm_api
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading ConfigMap {ns}/{name}")))?;
        if current.is_none_or(|c| c.data != cm.data) {
            ctx.metrics.write("apply", "ConfigMap");
            cm_api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(typed(&cm, "v1", "ConfigMap")?),
                )
                .await
                .map_err(kube_err(format!("applying ConfigMap {ns}/{name}")))?;
        }
    }
    Ok(())
}

fn ports_same(
    a: Option<&[k8s_openapi::api::core::v1::ServicePort]>,
    b: Option<&[k8s_openapi::api::core::v1::ServicePort]>,
) -> bool {
    let key = |p: &k8s_openapi::api::core::v1::ServicePort| {
        (p.name.clone(), p.port, p.target_port.clone())
    };
    let a: Vec<_> = a.unwrap_or_default().iter().map(key).collect();
    let b: Vec<_> = b.unwrap_or_default().iter().map(key).collect();
    a == b
}

/// An object as an apply patch body (with apiVersion and kind, which typed k8s-openapi values omit).
fn typed<T: serde::Serialize>(
    obj: &T,
    api_version: &str,
    kind: &str,
) -> Result<serde_json::Value, Error> {
    let mut v = serde_json::to_value(obj).map_err(|e| Error::Serialize("object", e))?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

/// Creates the missing PVCs of every member (never updates one: a PVC's spec is the user's from then on).
async fn ensure_pvcs(
    rdb: &ReplicatedDatabase,
    placement: &Placement,
    existing: &[PersistentVolumeClaim],
    api: &Api<PersistentVolumeClaim>,
    metrics: &Metrics,
) -> Result<(), Error> {
    for plan in &placement.members {
        for pvc in desired::member_pvcs(rdb, plan)? {
            let name = pvc.name_any();
            if existing.iter().any(|e| e.name_any() == name) {
                continue;
            }
            metrics.write("create", "PersistentVolumeClaim");
            match api
                .create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &pvc,
                )
                .await
            {
                Ok(_) => info!(pvc = %name, "created PVC"),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(kube_err(format!("creating PVC {name}"))(e)),
            }
        }
    }
    Ok(())
}

/// Carries out one decided step. Returns the demoted position when a demote hook printed one.
async fn act(
    rdb: &ReplicatedDatabase,
    placement: &Placement,
    action: &Action,
    pods_api: &Api<Pod>,
    pods: &[Pod],
    metrics: &Metrics,
) -> Result<Option<i64>, Error> {
    let name = rdb.name_any();
    match action {
        Action::CreatePod {
            ordinal,
            role,
            avoid_node,
        } => {
            let plan = placement
                .member(*ordinal)
                .cloned()
                .unwrap_or(placement::MemberPlan {
                    ordinal: *ordinal,
                    constraint: placement::Constraint::Any,
                    member_node: None,
                });
            let pod = desired::member_pod(rdb, &plan, *role, avoid_node.as_deref())?;
            let pod_name = pod.name_any();
            info!(pod = %pod_name, role = role.as_str(), "creating member Pod");
            metrics.write("apply", "Pod");
            // Server-side apply creates it; if a Pod of that name appeared meanwhile, apply only merges our
            // fields, so a create is used to never touch an existing member.
            match pods_api
                .create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &pod,
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(kube_err(format!("creating Pod {pod_name}"))(e)),
            }
        }
        Action::SetRole { ordinal, role } => {
            let pod = desired::pod_name(&name, *ordinal);
            info!(%pod, role = role.as_str(), "relabelling member");
            metrics.write("patch", "Pod");
            let patch = json!({"metadata": {"labels": {LABEL_ROLE: role.as_str()}}});
            pods_api
                .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err(format!(
                    "relabelling Pod {pod} as {}",
                    role.as_str()
                )))?;
        }
        Action::Promote { ordinal } => {
            let pod = desired::pod_name(&name, *ordinal);
            if let Some(argv) = hook_command_for(rdb, Hook::Promote) {
                info!(%pod, "running the promote hook");
                exec(pods_api, &pod, &desired::engine_container(rdb)?, &argv)
                    .await
                    .map_err(|message| Error::Hook {
                        hook: Hook::Promote,
                        pod: pod.clone(),
                        message,
                    })?;
            }
            metrics.write("patch", "Pod");
            let patch = json!({"metadata": {"annotations": {ANNOTATION_APPLIED_ROLE: Role::Primary.as_str()}}});
            pods_api
                .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err(format!("recording the promotion of {pod}")))?;
        }
        Action::Demote { ordinal } => {
            let pod = desired::pod_name(&name, *ordinal);
            if let Some(argv) = hook_command_for(rdb, Hook::Demote) {
                info!(%pod, "running the demote hook");
                match exec(pods_api, &pod, &desired::engine_container(rdb)?, &argv).await {
                    Ok(out) => return Ok(engine::parse_position(&out)),
                    // The Pod is fenced already and is deleted next; a failed demote only loses the
                    // catch-up check, which the log says.
                    Err(message) => {
                        warn!(%pod, %message, "demote hook failed; continuing with the fence")
                    }
                }
            }
        }
        Action::DeletePod { ordinal, force } => {
            let pod = desired::pod_name(&name, *ordinal);
            let uid = pods
                .iter()
                .find(|p| p.name_any() == pod)
                .and_then(|p| p.metadata.uid.clone());
            info!(%pod, force, "deleting member Pod");
            metrics.write("delete", "Pod");
            let mut dp = if *force {
                DeleteParams::default().grace_period(0)
            } else {
                DeleteParams::default()
            };
            // Only the Pod we decided about: a recreated Pod of the same name is left alone.
            dp.preconditions = uid.map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            });
            match pods_api.delete(&pod, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(kube_err(format!("deleting Pod {pod}"))(e)),
            }
        }
    }
    Ok(None)
}

/// Runs a command in a member's container through pods/exec; returns stdout, or stderr and the status
/// when it fails.
async fn exec(
    api: &Api<Pod>,
    pod: &str,
    container: &str,
    argv: &[String],
) -> Result<String, String> {
    let params = AttachParams::default()
        .container(container)
        .stdout(true)
        .stderr(true);
    let mut proc = api
        .exec(pod, argv.to_vec(), &params)
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = proc.stdout() {
        let _ = out.read_to_string(&mut stdout).await;
    }
    if let Some(mut err) = proc.stderr() {
        let _ = err.read_to_string(&mut stderr).await;
    }
    let status = match proc.take_status() {
        Some(s) => s.await,
        None => None,
    };
    let _ = proc.join().await;
    match status {
        Some(s) if s.status.as_deref() == Some("Success") => Ok(stdout),
        Some(s) => Err(format!(
            "{} {}",
            s.message.unwrap_or_default(),
            stderr.trim()
        )),
        None => Err(format!("no exit status; stderr: {}", stderr.trim())),
    }
}

async fn write_status(
    api: &Api<ReplicatedDatabase>,
    name: &str,
    status: &ReplicatedDatabaseStatus,
    metrics: &Metrics,
) -> Result<(), Error> {
    metrics.write("apply", "ReplicatedDatabase/status");
    let body = json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "ReplicatedDatabase",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_err(format!("writing the status of {name}")))?;
    Ok(())
}

/// The status from what is observed: members, counts, conditions (timestamps kept when unchanged).
fn observed_status(
    rdb: &ReplicatedDatabase,
    name: &str,
    placement: &Placement,
    pods: &[PodView],
    pvcs: &[model::PvcView],
    mut status: ReplicatedDatabaseStatus,
) -> ReplicatedDatabaseStatus {
    let members: Vec<MemberStatus> = placement
        .members
        .iter()
        .map(|m| {
            let pod = pods.iter().find(|p| p.ordinal == m.ordinal);
            let role = pod
                .and_then(|p| p.role)
                .map(Role::as_str)
                .unwrap_or("none")
                .to_string();
            let phase = match pod {
                None => "Missing",
                Some(p) if p.terminating => "Terminating",
                Some(p) if p.role == Some(Role::Fenced) => "Fenced",
                Some(p) if p.ready && p.node_ready => "Ready",
                Some(p) if p.node.is_some() => "Running",
                Some(_) => "Pending",
            };
            MemberStatus {
                ordinal: m.ordinal,
                pod: desired::pod_name(name, m.ordinal),
                role,
                node: pod.and_then(|p| p.node.clone()),
                ready: pod.is_some_and(|p| p.available()),
                pvcs: pvcs
                    .iter()
                    .filter(|c| c.ordinal == m.ordinal)
                    .map(|c| c.name.clone())
                    .collect(),
                phase: phase.into(),
            }
        })
        .collect();
    let ready_members = members.iter().filter(|m| m.ready).count() as i32;
    let ready_replicas = members
        .iter()
        .filter(|m| m.ready && m.role == Role::Replica.as_str())
        .count() as i32;
    let primary_ready = match rdb.spec.mode {
        Mode::Peers => ready_members > 0,
        Mode::PrimaryReplica => status.primary.as_ref().is_some_and(|p| {
            members
                .iter()
                .any(|m| m.ordinal == p.ordinal && m.ready && m.role == "primary")
        }),
    };
    let all_ready = ready_members as usize == members.len();
    let failing_over = status.transition.is_some();
    let generation = rdb.metadata.generation;
    let cond = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    };
    let wanted = vec![
        cond(
            "Ready",
            primary_ready,
            if primary_ready {
                "PrimaryReady"
            } else {
                "PrimaryNotReady"
            },
            format!("{ready_members}/{} members Ready", members.len()),
        ),
        cond(
            "Progressing",
            !all_ready || failing_over,
            if all_ready {
                "AllMembersReady"
            } else {
                "MembersStarting"
            },
            format!("{ready_members}/{} members Ready", members.len()),
        ),
        cond(
            "Degraded",
            !primary_ready || (!all_ready && status.primary_unavailable_since.is_some()),
            if primary_ready {
                "PrimaryAvailable"
            } else {
                "PrimaryUnavailable"
            },
            match &status.primary_unavailable_since {
                Some(t) => format!("the primary is unavailable since {}", t.0),
                None => "the primary is available".into(),
            },
        ),
        cond(
            "FailingOver",
            failing_over,
            if failing_over {
                "TransitionInProgress"
            } else {
                "Stable"
            },
            match &status.transition {
                Some(t) => format!(
                    "{:?} from member {} to member {}",
                    t.kind, t.from_ordinal, t.to_ordinal
                ),
                None => "no failover or switchover in progress".into(),
            },
        ),
    ];
    status.conditions = wanted
        .into_iter()
        .map(|mut c| {
            if let Some(old) = status.conditions.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect();
    status.members = members;
    status.replicas = placement.members.len() as i32;
    status.ready_members = ready_members;
    status.ready_replicas = ready_replicas;
    status.selector = Some(desired::selector_string(name));
    status.observed_generation = generation;
    status.primary = status
        .primary
        .map(|p| primary_status(name, p.ordinal, pods));
    if rdb.spec.mode == Mode::Peers {
        status.primary = None;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_status_keeps_condition_times_and_counts_members() {
        let rdb: ReplicatedDatabase = serde_yaml::from_str(
            r#"
apiVersion: berth.dev/v1alpha1
kind: ReplicatedDatabase
metadata: {name: pg, namespace: db, generation: 3}
spec:
  template: {spec: {containers: [{name: pg, image: postgres}]}}
  replicas: {count: 2}
  engine: {generic: {}}
"#,
        )
        .unwrap();
        let placement = placement::place(&rdb.spec, Some(0), &[], &[], &[]);
        let pod = |o: i32, role: Role| PodView {
            name: format!("pg-{o}"),
            ordinal: o,
            role: Some(role),
            applied: Some(role),
            ready: true,
            node: Some("n1".into()),
            node_ready: true,
            terminating: false,
            member_node: None,
            spec_hash: None,
        };
        let pods = [pod(0, Role::Primary), pod(1, Role::Replica)];
        let base = ReplicatedDatabaseStatus {
            primary: Some(PrimaryStatus {
                ordinal: 0,
                pod: "pg-0".into(),
                node: None,
            }),
            ..Default::default()
        };
        let first = observed_status(&rdb, "pg", &placement, &pods, &[], base);
        assert_eq!(
            (first.replicas, first.ready_members, first.ready_replicas),
            (2, 2, 1)
        );
        assert_eq!(first.primary.as_ref().unwrap().node.as_deref(), Some("n1"));
        assert_eq!(first.observed_generation, Some(3));
        let ready = first
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        std::thread::sleep(Duration::from_millis(5));
        let second = observed_status(&rdb, "pg", &placement, &pods, &[], first.clone());
        assert_eq!(
            first, second,
            "an unchanged world gives an identical status (no write)"
        );
    }
}
