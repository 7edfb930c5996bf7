//! Latency bookkeeping and the report: per-RPC samples, percentiles, cycles per second, and the
//! JSON line scripts read. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The RPCs of one volume cycle, in the order a CO issues them.
pub const RPCS: [&str; 8] = [
    "CreateVolume",
    "ControllerPublishVolume",
    "NodeStageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeUnstageVolume",
    "ControllerUnpublishVolume",
    "DeleteVolume",
];

/// Latency samples per RPC name.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    by_rpc: BTreeMap<&'static str, Vec<Duration>>,
}

impl Samples {
    pub fn record(&mut self, rpc: &'static str, d: Duration) {
        self.by_rpc.entry(rpc).or_default().push(d);
    }

    pub fn merge(&mut self, other: Samples) {
        for (rpc, mut v) in other.by_rpc {
            self.by_rpc.entry(rpc).or_default().append(&mut v);
        }
    }

    /// Summaries in cycle order (RPCs never called are left out).
    pub fn summaries(&self) -> Vec<(&'static str, RpcSummary)> {
        RPCS.iter()
            .filter_map(|rpc| {
                let v = self.by_rpc.get(rpc)?;
                Some((*rpc, RpcSummary::of(v)?))
            })
            .collect()
    }
}

/// Count and latency percentiles of one RPC, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RpcSummary {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

impl RpcSummary {
    pub fn of(samples: &[Duration]) -> Option<RpcSummary> {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Some(RpcSummary {
            n: sorted.len(),
            p50_ms: ms(percentile(&sorted, 50.0)?),
            p95_ms: ms(percentile(&sorted, 95.0)?),
            max_ms: ms(*sorted.last()?),
        })
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample with at least `p` percent of
/// the samples at or below it. `None` for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Completed cycles per second of wall time (0 when no time passed).
pub fn rate(cycles: usize, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { cycles as f64 / s } else { 0.0 }
}

/// Resident memory of the plugin process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rss {
    pub pid: u32,
    /// Before the workload: the plugin has started and answered the probe RPCs, nothing else.
    pub idle_kib: u64,
    /// After the workload and a settle pause.
    pub after_kib: Option<u64>,
    /// The peak (VmHWM) at the end.
    pub peak_kib: Option<u64>,
    /// CPU time the plugin (and the children it waited for) spent per measured cycle: less
    /// sensitive than wall time to other load on the machine. Kernel work done in other threads
    /// (filesystem commits, udev) is not in it.
    pub cpu_ms_per_cycle: Option<f64>,
}

/// Everything one run measured; serialized as the JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub driver: String,
    pub vendor_version: String,
    pub volume_mode: String,
    pub parameters: BTreeMap<String, String>,
    pub capacity_bytes: i64,
    pub staged: bool,
    pub controller_publish: bool,
    pub cycles: usize,
    pub completed: usize,
    pub failed: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub cycles_per_sec: f64,
    pub rpc: BTreeMap<String, RpcSummary>,
    pub rss: Option<Rss>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

impl Report {
    /// The human-readable summary.
    pub fn table(&self, order: &[(&'static str, RpcSummary)]) -> String {
        let mut out = format!(
            "{} ({} {}), {} volumes, stage: {}, controller publish: {}\n\
             {} of {} cycles in {:.3} s at concurrency {}: {:.1} cycles/s\n\
             {:<26} {:>6} {:>9} {:>9} {:>9}\n",
            self.label,
            self.driver,
            self.vendor_version,
            self.volume_mode,
            yes(self.staged),
            yes(self.controller_publish),
            self.completed,
            self.cycles,
            self.seconds,
            self.concurrency,
            self.cycles_per_sec,
            "rpc",
            "n",
            "p50 ms",
            "p95 ms",
            "max ms",
        );
        for (rpc, s) in order {
            out.push_str(&format!(
                "{:<26} {:>6} {:>9.2} {:>9.2} {:>9.2}\n",
                rpc, s.n, s.p50_ms, s.p95_ms, s.max_ms
            ));
        }
        if let Some(rss) = &self.rss {
            out.push_str(&format!(
                "RSS of pid {}: idle {:.1} MiB",
                rss.pid,
                rss.idle_kib as f64 / 1024.0
            ));
            if let Some(after) = rss.after_kib {
                out.push_str(&format!(", after the run {:.1} MiB", after as f64 / 1024.0));
            }
            if let Some(peak) = rss.peak_kib {
                out.push_str(&format!(", peak {:.1} MiB", peak as f64 / 1024.0));
            }
            out.push('\n');
            if let Some(cpu) = rss.cpu_ms_per_cycle {
                out.push_str(&format!(
                    "CPU of pid {} and its children: {cpu:.2} ms per cycle\n",
                    rss.pid
                ));
            }
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("FAILED: {e}\n"));
        }
        out
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let ten = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let cases: Vec<(&[Duration], f64, Option<u64>)> = vec![
            (&ten, 50.0, Some(5)),
            (&ten, 95.0, Some(10)),
            (&ten, 90.0, Some(9)),
            (&ten, 0.0, Some(1)),
            (&ten, 100.0, Some(10)),
            (&ten[..1], 95.0, Some(1)),
            (&[], 50.0, None),
        ];
        for (samples, p, want) in cases {
            assert_eq!(
                percentile(samples, p),
                want.map(Duration::from_millis),
                "p{p} of {} samples",
                samples.len()
            );
        }
    }

    #[test]
    fn summaries_follow_cycle_order_and_skip_unused_rpcs() {
        let mut a = Samples::default();
        a.record("DeleteVolume", Duration::from_millis(4));
        a.record("CreateVolume", Duration::from_millis(2));
        let mut b = Samples::default();
        b.record("CreateVolume", Duration::from_millis(6));
        a.merge(b);
        let s = a.summaries();
        let names: Vec<_> = s.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["CreateVolume", "DeleteVolume"]);
        assert_eq!(s[0].1.n, 2);
        assert_eq!(s[0].1.p50_ms, 2.0);
        assert_eq!(s[0].1.max_ms, 6.0);
    }

    #[test]
    fn rates() {
        assert_eq!(rate(100, Duration::from_secs(4)), 25.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }
}
