//! The agent's reconcile loop against the API server: watches ImageCachePolicies, RegistryMirrors, this
//! node and the Pods bound to it; applies every mirror selecting the node (and removes files of mirrors
//! that are gone or no longer select it); runs each selecting policy's GC pass when due; writes the
//! per-node `ImageCacheReport`, the policy's aggregate status, the mirror's per-node status entry, and
//! Events. One loop, woken by any watched change or a timer, so the agent stays small.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::api::image_cache_policy::{ImageCachePolicy, ImageCacheReport, ImageCacheReportStatus};
use crate::api::registry_mirror::{NodeMirrorStatus, RegistryMirror, RegistryMirrorStatus};
use crate::cri::CriClient;

use super::cli::{NodeAgentArgs, now, now_rfc3339};
use super::gc::{self, PassOptions, PodImages};
use super::gc_plan::{GcPolicy, parse_duration};
use super::metrics::{Metrics, PolicyLabels, ReasonLabels, StateLabels};
use super::mirror::{self, Target, state};
use super::mirror_files;
use super::report;

/// Why the loop could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "the node name is required: pass --node-name or set NODE_NAME (the DaemonSet sets it from spec.nodeName)"
    )]
    NoNodeName,
    #[error("connecting to the API server: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cri(#[from] crate::cri::CriError),
    #[error("a watch stopped before its first list completed")]
    WatchEnded,
}

/// How often the loop runs without a change to wake it (mirrors re-checked, usage observed, GC due-check).
const TICK: Duration = Duration::from_secs(30);
/// The label on reports naming their policy (for the aggregate list).
pub const POLICY_LABEL: &str = "berth.dev/image-cache-policy";
/// The label on reports naming their node.
pub const NODE_LABEL: &str = "berth.dev/node";

/// Whether `labels` carry every key/value of `selector` (empty selects everything).
pub fn selected(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The images of Pods bound to the node that are not finished (running, or about to start).
pub fn pod_images(pods: &[std::sync::Arc<Pod>]) -> Vec<String> {
    let mut out = Vec::new();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        if let Some(spec) = &pod.spec {
            out.extend(spec.containers.iter().filter_map(|c| c.image.clone()));
            out.extend(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter_map(|c| c.image.clone()),
            );
            out.extend(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .filter_map(|c| c.image.clone()),
            );
        }
        if let Some(status) = &pod.status {
            for cs in status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten())
            {
                out.push(cs.image_id.clone());
            }
        }
    }
    out
}

/// The name of the report for (policy, node): `<policy>.<node>`, shortened with a hash past 253 chars.
pub fn report_name(policy: &str, node: &str) -> String {
    let name = format!("{policy}.{node}");
    if name.len() <= 253 {
        return name;
    }
    // FNV-1a: stable across versions and platforms, enough to keep shortened names apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}.{h:016x}", &name[..236].trim_end_matches(['.', '-']))
}

/// Whether a node's mirror entry needs writing.
fn entry_changed(current: Option<&NodeMirrorStatus>, desired: &NodeMirrorStatus) -> bool {
    current != Some(desired)
}

/// (applied, with problems) counted from the entries.
pub fn mirror_counts(status: &RegistryMirrorStatus) -> (i32, i32) {
    let applied = status
        .nodes
        .iter()
        .filter(|n| n.state == state::APPLIED && n.message.is_none())
        .count() as i32;
    (applied, status.nodes.len() as i32 - applied)
}

struct PodStore(reflector::Store<Pod>);

impl PodImages for PodStore {
    fn images(&self) -> Vec<String> {
        pod_images(&self.0.state())
    }
}

struct Agent {
    args: NodeAgentArgs,
    node: String,
    client: Client,
    cri: CriClient,
    recorder: Recorder,
    policies: reflector::Store<ImageCachePolicy>,
    mirrors: reflector::Store<RegistryMirror>,
    nodes: reflector::Store<Node>,
    pods: PodStore,
    /// Per policy: when it last ran, under which generation.
    last_gc: HashMap<String, (Instant, Option<i64>)>,
    /// Policies this node has a report for (to delete it when the policy stops selecting the node).
    reported: HashSet<String>,
    last_observe: Option<Instant>,
    metrics: Metrics,
}

/// Runs until SIGTERM / SIGINT.
pub async fn run(args: NodeAgentArgs) -> Result<(), RunError> {
    let node = args
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(RunError::NoNodeName)?;
    let client = Client::try_default().await?;
    let cri = CriClient::connect(&args.cri_socket).await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "berth-node-agent".into(),
            instance: Some(node.clone()),
        },
    );
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);

    fn spawn_reflector<K>(
        api: Api<K>,
        cfg: watcher::Config,
        wake: tokio::sync::mpsc::Sender<()>,
    ) -> reflector::Store<K>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let (store, writer) = reflector::store::<K>();
        let stream = reflector(writer, watcher(api, cfg).default_backoff());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(_) => {
                        let _ = wake.try_send(());
                    }
                    Err(e) => warn!(error = %e, "watch error (retrying)"),
                }
            }
        });
        store
    }

    let policies = spawn_reflector(
        Api::<ImageCachePolicy>::all(client.clone()),
        watcher::Config::default(),
        wake_tx.clone(),
    );
    let mirrors = spawn_reflector(
        Api::<RegistryMirror>::all(client.clone()),
        watcher::Config::default(),
        wake_tx.clone(),
    );
    let nodes = spawn_reflector(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node}")),
        wake_tx.clone(),
    );
    let pods = spawn_reflector(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        wake_tx.clone(),
    );
    // Never act on a partial view: a mirror missing from an unsynced cache would have its files removed.
    for ready in [
        policies.wait_until_ready().await,
        mirrors.wait_until_ready().await,
    ] {
        ready.map_err(|_| RunError::WatchEnded)?;
    }
    nodes
        .wait_until_ready()
        .await
        .map_err(|_| RunError::WatchEnded)?;
    pods.wait_until_ready()
        .await
        .map_err(|_| RunError::WatchEnded)?;
    info!(node = %node, socket = %args.cri_socket.display(), "node agent started");

    let mut agent = Agent {
        args,
        node,
        client,
        cri,
        recorder,
        policies,
        mirrors,
        nodes,
        pods: PodStore(pods),
        last_gc: HashMap::new(),
        reported: HashSet::new(),
        last_observe: None,
        metrics: Metrics::default(),
    };
    if let Some(addr) = agent.args.metrics_addr.clone() {
        let metrics = agent.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = super::metrics::serve(&addr, metrics).await {
                warn!(error = %e, "the metrics endpoint is not available");
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| RunError::Kube(kube::Error::Service(Box::new(e))))?;
    loop {
        agent.pass().await;
        tokio::select! {
            _ = wake_rx.recv() => {
                // Coalesce a burst of watch events into one pass.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while wake_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(TICK) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!("node agent stopping");
    Ok(())
}

impl Agent {
    fn node_labels(&self) -> BTreeMap<String, String> {
        self.nodes
            .state()
            .first()
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }

    async fn pass(&mut self) {
        self.mirrors_pass().await;
        self.gc_pass().await;
    }

    // ---- RegistryMirror ----

    async fn mirrors_pass(&mut self) {
        let info = match self.cri.runtime_info().await {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "cannot read the runtime's configuration; mirrors not reconciled");
                return;
            }
        };
        let target = mirror::target(
            &info,
            &self.args.host_root,
            self.args.containerd_config_path.as_deref(),
            &self.args.crio_registries_dir,
            self.args.crio_pid_file.as_deref(),
        );
        let labels = self.node_labels();
        let all = self.mirrors.state();
        let mut live: HashSet<String> = HashSet::new();
        let mut states: HashMap<String, i64> = HashMap::new();
        for rm in &all {
            let name = rm.name_any();
            if rm.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if !selected(&rm.spec.node_selector, &labels) {
                if let Ok(true) = mirror::remove(&target, &name, &rm.spec.registry) {
                    info!(mirror = %name, "removed: the RegistryMirror no longer selects this node");
                }
                self.write_mirror_entry(rm, None).await;
                continue;
            }
            live.insert(name.clone());
            let cas = self.ca_bundles(rm).await;
            let entry = mirror::apply(
                &self.node,
                &target,
                &name,
                rm.metadata.generation,
                &rm.spec,
                &cas,
            );
            *states.entry(entry.state.clone()).or_default() += 1;
            let problem =
                (entry.state != state::APPLIED).then(|| entry.message.clone().unwrap_or_default());
            // An Event only when this node's outcome changes, not on every periodic pass.
            if self.write_mirror_entry(rm, Some(entry)).await
                && let Some(problem) = problem
            {
                let note = format!("node {}: {problem}", self.node);
                self.event(rm.as_ref(), EventType::Warning, "MirrorNotApplied", &note)
                    .await;
            }
        }
        self.metrics.mirrors.clear();
        for (st, n) in states {
            self.metrics
                .mirrors
                .get_or_create(&StateLabels { state: st })
                .set(n);
        }
        // Files of RegistryMirrors that were deleted (also while the agent was down) go.
        if let Target::Containerd { config_path } = &target {
            for (registry, owner) in mirror_files::scan_owned_hosts(config_path) {
                if !live.contains(&owner) {
                    match mirror_files::remove_hosts(config_path, &registry, &owner) {
                        Ok(true) => {
                            info!(mirror = %owner, registry = %registry, "removed hosts.toml of a deleted RegistryMirror")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            warn!(error = %e, "removing a deleted RegistryMirror's hosts.toml failed")
                        }
                    }
                }
            }
        }
    }

    async fn ca_bundles(&self, rm: &RegistryMirror) -> Vec<Result<Option<Vec<u8>>, String>> {
        let mut out = Vec::new();
        for m in &rm.spec.mirrors {
            let Some(r) = &m.ca_secret_ref else {
                out.push(Ok(None));
                continue;
            };
            let key = r.key.clone().unwrap_or_else(|| "ca.crt".into());
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
            out.push(match api.get_opt(&r.name).await {
                Ok(Some(s)) => match s.data.as_ref().and_then(|d| d.get(&key)) {
                    Some(b) => Ok(Some(b.0.clone())),
                    None => Err(format!(
                        "Secret {}/{} has no key {key:?}",
                        r.namespace, r.name
                    )),
                },
                Ok(None) => Err(format!("Secret {}/{} not found", r.namespace, r.name)),
                Err(e) => Err(format!("reading Secret {}/{}: {e}", r.namespace, r.name)),
            });
        }
        out
    }

    /// Server-side applies this node's entry (None: removes it) under a field manager of its own, so
    /// every node owns exactly its entry; then brings the counts up to date. Returns whether the entry
    /// changed.
    async fn write_mirror_entry(
        &self,
        rm: &RegistryMirror,
        entry: Option<NodeMirrorStatus>,
    ) -> bool {
        let current = rm
            .status
            .as_ref()
            .and_then(|s| s.nodes.iter().find(|n| n.node == self.node));
        let changed = match &entry {
            Some(e) => entry_changed(current, e),
            None => current.is_some(),
        };
        let api: Api<RegistryMirror> = Api::all(self.client.clone());
        let name = rm.name_any();
        let mut latest = rm.status.clone().unwrap_or_default();
        if changed {
            let manager = format!("berth-node-agent-{}", self.node);
            let manager = &manager[..manager.len().min(128)];
            let patch = json!({
                "apiVersion": "berth.dev/v1alpha1",
                "kind": "RegistryMirror",
                "status": { "nodes": entry.iter().collect::<Vec<_>>() },
            });
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(manager).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(obj) => latest = obj.status.unwrap_or_default(),
                Err(e) => {
                    warn!(mirror = %name, error = %e, "writing this node's RegistryMirror status failed");
                    return false;
                }
            }
        }
        let (applied, problems) = mirror_counts(&latest);
        if latest.nodes_applied != Some(applied) || latest.nodes_with_problems != Some(problems) {
            let patch = json!({
                "apiVersion": "berth.dev/v1alpha1",
                "kind": "RegistryMirror",
                "status": { "nodesApplied": applied, "nodesWithProblems": problems },
            });
            if let Err(e) = api
                .patch_status(
                    &name,
                    &PatchParams::apply("berth-node-agent-counts").force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                warn!(mirror = %name, error = %e, "writing RegistryMirror counts failed");
            }
        }
        changed
    }

    // ---- ImageCachePolicy ----

    async fn gc_pass(&mut self) {
        let labels = self.node_labels();
        let policies = self.policies.state();
        let mut selecting = HashSet::new();
        let mut ran_any = false;
        for p in &policies {
            let name = p.name_any();
            if p.metadata.deletion_timestamp.is_some() || !selected(&p.spec.node_selector, &labels)
            {
                continue;
            }
            selecting.insert(name.clone());
            let interval = parse_duration(&p.spec.interval).unwrap_or(Duration::from_secs(3600));
            let due = match self.last_gc.get(&name) {
                None => true,
                Some((at, generation)) => {
                    *generation != p.metadata.generation || at.elapsed() >= interval
                }
            };
            if !due {
                continue;
            }
            self.last_gc
                .insert(name.clone(), (Instant::now(), p.metadata.generation));
            ran_any = true;
            self.run_policy(p).await;
        }
        // A policy that stopped selecting this node (or was deleted) no longer counts it.
        let stale: Vec<String> = self
            .reported
            .iter()
            .filter(|p| !selecting.contains(*p))
            .cloned()
            .collect();
        for policy in stale {
            let api: Api<ImageCacheReport> = Api::all(self.client.clone());
            match api
                .delete(&report_name(&policy, &self.node), &DeleteParams::default())
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {
                    self.reported.remove(&policy);
                    self.last_gc.remove(&policy);
                    if let Some(p) = policies.iter().find(|p| p.name_any() == policy) {
                        self.aggregate(p).await;
                    }
                }
                Err(e) => warn!(policy = %policy, error = %e, "deleting this node's report failed"),
            }
        }
        // Between passes, keep the usage record current so short-lived uses are not missed.
        if !ran_any && self.last_observe.is_none_or(|t| t.elapsed() >= TICK) {
            self.last_observe = Some(Instant::now());
            if let Err(e) =
                gc::observe_usage(&self.cri, &self.args.usage_store(), &self.pods, now()).await
            {
                warn!(error = %e, "recording image usage failed");
            }
        }
    }

    async fn run_policy(&mut self, p: &ImageCachePolicy) {
        let name = p.name_any();
        let status = match GcPolicy::from_spec(&p.spec) {
            Err(e) => {
                self.event(
                    p,
                    EventType::Warning,
                    "InvalidPolicy",
                    &format!("node {}: {e}", self.node),
                )
                .await;
                ImageCacheReportStatus {
                    error: Some(e.to_string()),
                    ..Default::default()
                }
            }
            Ok(policy) => {
                let opts = PassOptions {
                    dry_run: p.spec.dry_run,
                    now: now(),
                    host_root: &self.args.host_root,
                    sandbox_image_override: self.args.sandbox_image.as_deref(),
                };
                let started = Instant::now();
                let labels = PolicyLabels {
                    policy: name.clone(),
                };
                match gc::run_pass(
                    &self.cri,
                    &self.args.usage_store(),
                    &policy,
                    &self.pods,
                    &opts,
                )
                .await
                {
                    Ok(outcome) => {
                        self.gc_events(p, &outcome).await;
                        self.record_metrics(&labels, &outcome, started.elapsed());
                        report::node_report(&outcome, &now_rfc3339())
                    }
                    Err(e) => {
                        self.metrics.pass_errors.get_or_create(&labels).inc();
                        self.event(
                            p,
                            EventType::Warning,
                            "GarbageCollectionFailed",
                            &format!("node {}: {e}", self.node),
                        )
                        .await;
                        ImageCacheReportStatus {
                            error: Some(e.to_string()),
                            ..Default::default()
                        }
                    }
                }
            }
        };
        if self.write_report(p, &status).await {
            self.reported.insert(name);
        }
        self.aggregate(p).await;
    }

    fn record_metrics(&self, labels: &PolicyLabels, o: &gc::GcOutcome, took: Duration) {
        let m = &self.metrics;
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        m.images.get_or_create(labels).set(clamp(o.images));
        m.images_in_use
            .get_or_create(labels)
            .set(clamp(o.plan.in_use));
        m.image_bytes
            .get_or_create(labels)
            .set(clamp(o.plan.total_bytes));
        m.reclaimable_bytes
            .get_or_create(labels)
            .set(clamp(o.plan.reclaimable_bytes));
        m.pass_seconds.get_or_create(labels).set(took.as_secs_f64());
        for (_, reason) in &o.removed {
            m.removed
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str().into(),
                })
                .inc();
        }
        m.freed_bytes.inc_by(o.freed_bytes);
    }

    async fn gc_events(&self, p: &ImageCachePolicy, o: &gc::GcOutcome) {
        let list = |items: Vec<String>| {
            let n = items.len();
            let mut s = items.into_iter().take(5).collect::<Vec<_>>().join(", ");
            if n > 5 {
                s.push_str(&format!(" and {} more", n - 5));
            }
            s
        };
        if o.dry_run {
            let planned: Vec<String> = o
                .plan
                .removals()
                .map(|(i, r)| format!("{} ({})", i.display, r.as_str()))
                .collect();
            if !planned.is_empty() {
                let note = format!(
                    "node {}: dry-run, would remove {} image(s), {} bytes: {}",
                    self.node,
                    planned.len(),
                    o.plan.reclaimable_bytes,
                    list(planned)
                );
                self.event(p, EventType::Normal, "DryRun", &note).await;
            }
            return;
        }
        if !o.removed.is_empty() {
            let removed: Vec<String> = o
                .removed
                .iter()
                .map(|(i, r)| format!("{} ({})", i.display, r.as_str()))
                .collect();
            let note = format!(
                "node {}: removed {} image(s), freed {} bytes: {}",
                self.node,
                removed.len(),
                o.freed_bytes,
                list(removed)
            );
            self.event(p, EventType::Normal, "ImagesRemoved", &note)
                .await;
        }
        if !o.failed.is_empty() {
            let failed: Vec<String> = o.failed.iter().map(|(i, e)| format!("{i}: {e}")).collect();
            let note = format!(
                "node {}: {} removal(s) failed: {}",
                self.node,
                failed.len(),
                list(failed)
            );
            self.event(p, EventType::Warning, "ImageRemovalFailed", &note)
                .await;
        }
    }

    /// Creates or updates this node's report (server-side apply), owned by the policy.
    async fn write_report(&self, p: &ImageCachePolicy, status: &ImageCacheReportStatus) -> bool {
        let api: Api<ImageCacheReport> = Api::all(self.client.clone());
        let policy = p.name_any();
        let name = report_name(&policy, &self.node);
        let owner = p.controller_owner_ref(&()).map(|mut o| {
            o.controller = Some(false);
            o
        });
        let obj = json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "ImageCacheReport",
            "metadata": {
                "name": name,
                "labels": { POLICY_LABEL: policy, NODE_LABEL: self.node },
                "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
            },
            "spec": { "policy": policy, "node": self.node },
        });
        let pp = PatchParams::apply("berth-node-agent").force();
        if let Err(e) = api.patch(&name, &pp, &Patch::Apply(&obj)).await {
            warn!(report = %name, error = %e, "writing the ImageCacheReport failed");
            return false;
        }
        let st = json!({ "apiVersion": "berth.dev/v1alpha1", "kind": "ImageCacheReport", "status": status });
        if let Err(e) = api.patch_status(&name, &pp, &Patch::Apply(&st)).await {
            warn!(report = %name, error = %e, "writing the ImageCacheReport status failed");
            return false;
        }
        debug!(report = %name, "report written");
        true
    }

    /// Recomputes the policy's totals from every node's report. Each agent does this after its own pass;
    /// the last one to write has seen every report written before it, and any agent's next pass fixes a
    /// total that a concurrent write left behind.
    async fn aggregate(&self, p: &ImageCachePolicy) {
        let reports: Api<ImageCacheReport> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{POLICY_LABEL}={}", p.name_any()));
        let list = match reports.list(&lp).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "listing reports failed");
                return;
            }
        };
        let statuses: Vec<ImageCacheReportStatus> =
            list.items.into_iter().filter_map(|r| r.status).collect();
        let total = report::aggregate(statuses.iter(), p.metadata.generation);
        if p.status.as_ref() == Some(&total) {
            return;
        }
        let api: Api<ImageCachePolicy> = Api::all(self.client.clone());
        let patch = json!({ "status": total });
        if let Err(e) = api
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            warn!(policy = %p.name_any(), error = %e, "writing the policy's totals failed");
        }
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(reason, error = %e, "publishing an Event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec, PodStatus};

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert!(selected(&BTreeMap::new(), &labels));
        assert!(selected(&[("a".into(), "1".into())].into(), &labels));
        assert!(!selected(&[("a".into(), "2".into())].into(), &labels));
        assert!(!selected(&[("c".into(), "1".into())].into(), &labels));
    }

    #[test]
    fn pod_images_cover_pending_and_running_pods_not_finished_ones() {
        let pod = |phase: &str, image: &str| {
            std::sync::Arc::new(Pod {
                spec: Some(PodSpec {
                    containers: vec![Container {
                        image: Some(image.into()),
                        ..Default::default()
                    }],
                    init_containers: Some(vec![Container {
                        image: Some(format!("{image}-init")),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                status: Some(PodStatus {
                    phase: Some(phase.into()),
                    container_statuses: Some(vec![ContainerStatus {
                        image_id: format!("{image}@sha256:1"),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let got = pod_images(&[
            pod("Pending", "a"),
            pod("Running", "b"),
            pod("Succeeded", "c"),
            pod("Failed", "d"),
        ]);
        assert_eq!(
            got,
            ["a", "a-init", "a@sha256:1", "b", "b-init", "b@sha256:1"]
        );
    }

    #[test]
    fn report_names_are_valid_and_stable() {
        assert_eq!(report_name("weekly", "node-1"), "weekly.node-1");
        let long = report_name(&"p".repeat(200), &"n".repeat(200));
        assert!(long.len() <= 253, "{}", long.len());
        assert_eq!(long, report_name(&"p".repeat(200), &"n".repeat(200)));
        assert_ne!(
            long,
            report_name(&"p".repeat(200), &format!("{}x", "n".repeat(199)))
        );
    }

    #[test]
    fn mirror_counts_split_applied_and_problems() {
        let e = |state: &str, message: Option<&str>| NodeMirrorStatus {
            node: "n".into(),
            state: state.into(),
            message: message.map(str::to_owned),
            ..Default::default()
        };
        let s = RegistryMirrorStatus {
            nodes: vec![
                e("Applied", None),
                e("Applied", Some("not reloaded")),
                e("Conflict", Some("x")),
                e("NoConfigPath", Some("y")),
            ],
            ..Default::default()
        };
        assert_eq!(mirror_counts(&s), (1, 3));
    }
}
