//! `berth-operator controller`: leader election, the watches that trigger reconciles (ReplicatedDatabases,
//! their Pods, Services and PVCs, and node changes that matter to placement), and the `/metrics` endpoint.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Service};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{error, info, warn};

use super::leader::Elector;
use super::metrics::Metrics;
use super::reconcile::{self, Context};
use crate::api::replicated_database::{LABEL_NAME, ReplicatedDatabase};

/// Settings of the controller process.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease (its Pod name).
    pub identity: String,
    /// How long a Lease lasts without renewal.
    pub lease_duration: Duration,
    /// How many databases are reconciled at once.
    pub concurrency: u16,
}

/// What of a node matters to placement and failover: labels, cordon, readiness. Heartbeats that change
/// nothing else trigger no reconcile.
fn node_relevance(node: &Node) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.labels().hash(&mut h);
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .hash(&mut h);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    ready.hash(&mut h);
    Some(h.finish())
}

/// Runs the controller until the process is signalled or leadership is lost.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(serve_metrics(opts.metrics_addr, metrics.clone()));

    let elector = Elector::new(
        client.clone(),
        &opts.lease_namespace,
        &opts.lease_name,
        &opts.identity,
        opts.lease_duration,
    )
    .with_metrics(metrics.clone());
    elector.acquire().await?;

    // Nodes: a cache for placement, and a trigger that reconciles every database when a node changes in a
    // way that matters. Reconciles wait for the cache: an empty one would look like every node was lost.
    let (nodes, writer) = reflector::store::<Node>();
    let (tx, rx) = futures::channel::mpsc::channel::<()>(16);
    let node_stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(node_relevance, Default::default());
    tokio::spawn(async move {
        let mut tx = tx;
        let mut s = std::pin::pin!(node_stream);
        while let Some(ev) = s.next().await {
            match ev {
                Ok(_) => {
                    // A full channel already holds a pending "reconcile all".
                    let _ = tx.try_send(());
                }
                Err(e) => warn!(error = %e, "node watch error"),
            }
        }
    });
    nodes.wait_until_ready().await?;
    info!(nodes = nodes.state().len(), "node cache ready");

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "berth-operator".into(),
                instance: Some(opts.identity.clone()),
            },
        ),
        nodes,
        metrics,
        published: Mutex::new(HashMap::new()),
    });
    let members = watcher::Config::default().labels(LABEL_NAME);
    let controller = Controller::new(
        Api::<ReplicatedDatabase>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client.clone()), members.clone())
    .owns(Api::<Service>::all(client.clone()), members.clone())
    .watches(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        members,
        |pvc| {
            let ns = pvc.namespace()?;
            pvc.labels()
                .get(LABEL_NAME)
                .map(|n| ObjectRef::new(n).within(&ns))
        },
    )
    .reconcile_all_on(rx)
    .shutdown_on_signal()
    .run(reconcile::reconcile, reconcile::error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            warn!(error = %e, "controller");
        }
    });
    tokio::select! {
        _ = controller => info!("controller stopped"),
        lost = elector.keep() => {
            error!(error = %lost, "leadership lost; exiting so that only the leader acts");
            return Err(lost.into());
        }
    }
    Ok(())
}

/// A minimal HTTP endpoint: `GET /metrics` (Prometheus text) and `GET /healthz`.
async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(%addr, error = %e, "cannot serve /metrics");
            return;
        }
    };
    info!(%addr, "serving /metrics");
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.encode(),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
