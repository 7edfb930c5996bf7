//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder reconciles. A replica takes the
//! Lease when it is free or expired; the holder renews it and the process exits when it cannot (a second
//! controller acting on stale leadership could undo a fence).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use super::metrics::Metrics;

/// Leader election errors.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Reading or writing the Lease failed.
    #[error("Lease {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Lease could not be renewed within its duration.
    #[error("lost the Lease {namespace}/{name}: {why}")]
    Lost {
        namespace: String,
        name: String,
        why: String,
    },
}

/// Whether `me` may take or keep a Lease held by `holder`, last renewed at `renewed`, valid for `duration`.
pub fn may_hold(
    holder: Option<&str>,
    renewed: Option<Timestamp>,
    duration: Duration,
    me: &str,
    now: Timestamp,
) -> bool {
    match (holder, renewed) {
        (None, _) | (Some(""), _) => true,
        (Some(h), _) if h == me => true,
        (Some(_), None) => true,
        (Some(_), Some(at)) => {
            now.as_millisecond() - at.as_millisecond() > duration.as_millis() as i64
        }
    }
}

/// A Lease-based elector.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
    metrics: Option<std::sync::Arc<Metrics>>,
}

impl Elector {
    /// An elector for the Lease `namespace/name`, held as `identity`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration,
            metrics: None,
        }
    }

    /// Counts the Lease writes in these metrics (they are the controller's only writes at rest).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_write(&self, verb: &str) {
        if let Some(m) = &self.metrics {
            m.write(verb, "Lease");
        }
    }

    fn err(&self) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        |source| LeaderError::Kube {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// One attempt to take or renew the Lease; `Ok(false)` when another holder has it.
    pub async fn try_hold(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(self.err())? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            self.count_write("create");
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err()(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone();
        let duration = spec
            .lease_duration_seconds
            .map_or(self.duration, |s| Duration::from_secs(s.max(1) as u64));
        if !may_hold(
            holder.as_deref(),
            spec.renew_time.as_ref().map(|t| t.0),
            duration,
            &self.identity,
            now,
        ) {
            return Ok(false);
        }
        if holder.as_deref() != Some(self.identity.as_str()) {
            info!(previous = ?holder, "taking over the Lease");
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        // replace carries the resourceVersion read above: a concurrent taker makes this fail with 409.
        self.count_write("update");
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err()(e)),
        }
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "leading");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.duration / 4).await;
        }
    }

    /// Renews the Lease until that fails for longer than its duration (then returns the error).
    pub async fn keep(&self) -> LeaderError {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_hold().await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => {
                    return LeaderError::Lost {
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                        why: "another holder took it".into(),
                    };
                }
                Err(e) => {
                    warn!(error = %e, "renewing the Lease failed");
                    // Stop acting before another replica may take over.
                    if last_ok.elapsed() > self.duration * 2 / 3 {
                        return LeaderError::Lost {
                            namespace: self.namespace.clone(),
                            name: self.name.clone(),
                            why: e.to_string(),
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_may_be_held_when_free_mine_or_expired() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let d = Duration::from_secs(15);
        let cases = [
            (None, None, 0, true),
            (Some("me"), Some(t(0)), 1, true),
            (Some("other"), Some(t(0)), 10, false),
            (Some("other"), Some(t(0)), 16, true),
            (Some("other"), None, 0, true),
            (Some(""), Some(t(0)), 0, true),
        ];
        for (holder, renewed, now, want) in cases {
            assert_eq!(
                may_hold(holder, renewed, d, "me", t(now)),
                want,
                "{holder:?} {renewed:?} {now}"
            );
        }
    }
}
