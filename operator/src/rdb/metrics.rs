//! The controller's Prometheus metrics (served on `/metrics`): reconciles and their errors, API writes by
//! verb and kind (a database at rest should cause none), and completed failovers with their duration.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::replicated_database::FailoverRecord;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    verb: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_seconds: Histogram,
    writes: Family<WriteLabels, Counter>,
    failovers: Family<KindLabels, Counter>,
    failover_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth_rdb");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result (ok or the error kind)",
            reconciles.clone(),
        );
        let reconcile_seconds = Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]);
        registry.register(
            "reconcile_seconds",
            "Time spent in one reconcile",
            reconcile_seconds.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "API write requests made by the controller",
            writes.clone(),
        );
        let failovers = Family::<KindLabels, Counter>::default();
        registry.register(
            "failovers",
            "Completed failovers and switchovers by kind",
            failovers.clone(),
        );
        let failover_seconds =
            Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]);
        registry.register(
            "failover_seconds",
            "Duration of completed failovers (primary unavailable until a new primary is Ready)",
            failover_seconds.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            writes,
            failovers,
            failover_seconds,
        }
    }
}

impl Metrics {
    /// Counts a reconcile.
    pub fn observe_reconcile(&self, took: Duration, error: Option<&'static str>) {
        self.reconcile_seconds.observe(took.as_secs_f64());
        self.reconciles
            .get_or_create(&ResultLabels {
                result: error.unwrap_or("ok").into(),
            })
            .inc();
    }

    /// Counts an API write.
    pub fn write(&self, verb: &str, kind: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                verb: verb.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Records a completed failover or switchover.
    pub fn failover_completed(&self, record: &FailoverRecord) {
        self.failovers
            .get_or_create(&KindLabels {
                kind: format!("{:?}", record.kind),
            })
            .inc();
        self.failover_seconds
            .observe(record.duration_millis as f64 / 1000.0);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reconciles_appear_in_the_exposition() {
        let m = Metrics::default();
        m.write("apply", "Pod");
        m.observe_reconcile(Duration::from_millis(3), None);
        m.observe_reconcile(Duration::from_millis(3), Some("kube"));
        let text = m.encode();
        assert!(
            text.contains(r#"berth_rdb_api_writes_total{verb="apply",kind="Pod"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"berth_rdb_reconciles_total{result="kube"} 1"#),
            "{text}"
        );
    }
}
