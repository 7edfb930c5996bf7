//! The agent's `/metrics` (Prometheus text) and `/healthz` endpoint: what the last GC pass saw and did,
//! and how many mirrors are in each state. A deliberately tiny HTTP/1.1 responder (one request per
//! connection, GET only), so the agent pulls in no HTTP server for two read-only pages.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("listening on {addr} for /metrics: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Labels naming a policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// Labels naming a removal reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Labels naming a mirror state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// Every metric the agent exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub images: Family<PolicyLabels, Gauge>,
    pub images_in_use: Family<PolicyLabels, Gauge>,
    pub image_bytes: Family<PolicyLabels, Gauge>,
    pub reclaimable_bytes: Family<PolicyLabels, Gauge>,
    pub removed: Family<ReasonLabels, Counter>,
    pub freed_bytes: Counter,
    pub pass_errors: Family<PolicyLabels, Counter>,
    pub pass_seconds: Family<PolicyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub mirrors: Family<StateLabels, Gauge<i64, AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let (images, images_in_use, image_bytes, reclaimable_bytes) = (
            Family::default(),
            Family::default(),
            Family::default(),
            Family::default(),
        );
        let (removed, freed_bytes, pass_errors) =
            (Family::default(), Counter::default(), Family::default());
        let (pass_seconds, mirrors) = (Family::default(), Family::default());
        let mut r = Registry::with_prefix("berth_node_agent");
        r.register(
            "images",
            "Images the runtime holds (last pass of the policy)",
            images.clone(),
        );
        r.register(
            "images_in_use",
            "Images in use (last pass)",
            images_in_use.clone(),
        );
        r.register(
            "image_bytes",
            "Bytes of all images (last pass)",
            image_bytes.clone(),
        );
        r.register(
            "reclaimable_bytes",
            "Bytes the last pass planned to remove",
            reclaimable_bytes.clone(),
        );
        r.register(
            "images_removed",
            "Images removed, by reason",
            removed.clone(),
        );
        r.register(
            "freed_bytes",
            "Bytes freed by removals",
            freed_bytes.clone(),
        );
        r.register(
            "gc_pass_errors",
            "GC passes that failed",
            pass_errors.clone(),
        );
        r.register(
            "gc_pass_seconds",
            "Duration of the last GC pass",
            pass_seconds.clone(),
        );
        r.register(
            "registry_mirrors",
            "RegistryMirrors on this node by state",
            mirrors.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            images,
            images_in_use,
            image_bytes,
            reclaimable_bytes,
            removed,
            freed_bytes,
            pass_errors,
            pass_seconds,
            mirrors,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            warn!(error = %e, "encoding metrics failed");
        }
        s
    }
}

/// The response to one request line.
pub fn respond(request_line: &str, metrics: &Metrics) -> (u16, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/metrics") => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ("GET", "/healthz") => (200, "text/plain", "ok\n".into()),
        ("GET", _) => (404, "text/plain", "not found\n".into()),
        _ => (405, "text/plain", "method not allowed\n".into()),
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the task is dropped.
pub async fn serve(addr: &str, metrics: Metrics) -> Result<(), MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: addr.into(),
            source,
        })?;
    info!(addr, "serving /metrics and /healthz");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Read the request head (bounded; a slow or huge client is simply dropped).
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let (code, ctype, body) = respond(head.lines().next().unwrap_or(""), &metrics);
            let reason = match code {
                200 => "OK",
                404 => "Not Found",
                _ => "Method Not Allowed",
            };
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_health_pages() {
        let m = Metrics::default();
        m.images
            .get_or_create(&PolicyLabels {
                policy: "weekly".into(),
            })
            .set(7);
        m.removed
            .get_or_create(&ReasonLabels {
                reason: "dangling".into(),
            })
            .inc_by(2);
        let (code, _, body) = respond("GET /metrics HTTP/1.1", &m);
        assert_eq!(code, 200);
        assert!(
            body.contains("berth_node_agent_images{policy=\"weekly\"} 7"),
            "{body}"
        );
        assert!(
            body.contains("berth_node_agent_images_removed_total{reason=\"dangling\"} 2"),
            "{body}"
        );
        assert_eq!(respond("GET /healthz HTTP/1.1", &m).0, 200);
        assert_eq!(respond("GET /nope HTTP/1.1", &m).0, 404);
        assert_eq!(respond("POST /metrics HTTP/1.1", &m).0, 405);
    }

    #[tokio::test]
    async fn served_over_tcp() {
        let m = Metrics::default();
        m.freed_bytes.inc_by(5);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let server = tokio::spawn({
            let addr = addr.clone();
            async move { serve(&addr, m).await }
        });
        let mut body = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("write");
                s.read_to_string(&mut body).await.expect("read");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        server.abort();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("berth_node_agent_freed_bytes_total 5"),
            "{body}"
        );
    }
}
