//! Turns a GC pass into the compact per-node report (`ImageCacheReport` status: the `docker system df`
//! view plus what the last run did) and sums reports into the policy's fleet-wide status. Pure.

use crate::api::image_cache_policy::{
    ImageCachePolicyStatus, ImageCacheReportStatus, LastRun, PlannedRemoval,
};

use super::gc::GcOutcome;

/// How many planned images a report lists by name; the counts cover all of them.
pub const LISTED_IMAGES: usize = 20;

/// Kubernetes integers are signed 64-bit; no real count or size comes near the limit.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The report for one pass. `time` is RFC 3339.
pub fn node_report(outcome: &GcOutcome, time: &str) -> ImageCacheReportStatus {
    let planned: Vec<PlannedRemoval> = outcome
        .plan
        .removals()
        .take(LISTED_IMAGES)
        .map(|(i, r)| PlannedRemoval {
            image: i.display.clone(),
            reason: r.as_str().to_owned(),
            bytes: clamp(i.bytes),
        })
        .collect();
    let error = if outcome.failed.is_empty() {
        None
    } else {
        let (img, e) = &outcome.failed[0];
        Some(format!(
            "{} removal(s) failed; first: {img}: {e}",
            outcome.failed.len()
        ))
    };
    ImageCacheReportStatus {
        images: clamp(outcome.images),
        in_use: clamp(outcome.plan.in_use),
        total_bytes: clamp(outcome.plan.total_bytes),
        reclaimable_bytes: clamp(outcome.plan.reclaimable_bytes),
        image_fs_used_percent: outcome.fs.map(|f| i32::from(f.used_percent())),
        last_run: Some(LastRun {
            time: time.to_owned(),
            dry_run: outcome.dry_run,
            planned: clamp(outcome.plan.removals().count() as u64),
            removed: clamp(outcome.removed.len() as u64),
            freed_bytes: clamp(outcome.freed_bytes),
            skipped_in_use: clamp(outcome.skipped_in_use.len() as u64),
            images: planned,
        }),
        error,
    }
}

/// The fleet-wide totals of a policy from its per-node reports.
pub fn aggregate<'a>(
    reports: impl IntoIterator<Item = &'a ImageCacheReportStatus>,
    generation: Option<i64>,
) -> ImageCachePolicyStatus {
    let mut s = ImageCachePolicyStatus {
        observed_generation: generation,
        ..Default::default()
    };
    for r in reports {
        s.nodes += 1;
        if r.error.is_some() {
            s.nodes_with_errors += 1;
        }
        s.images += r.images;
        s.in_use += r.in_use;
        s.total_bytes += r.total_bytes;
        s.reclaimable_bytes += r.reclaimable_bytes;
        if let Some(l) = &r.last_run {
            s.last_run_removed += l.removed;
            s.last_run_freed_bytes += l.freed_bytes;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_agent::gc_plan::{Decision, ImagePlan, KeepReason, Plan, RemoveReason};

    fn outcome(n_remove: usize) -> GcOutcome {
        let mut plan = Plan {
            total_bytes: 1000,
            in_use: 2,
            reclaimable_bytes: 30 * n_remove as u64,
            ..Default::default()
        };
        for i in 0..n_remove {
            plan.images.push(ImagePlan {
                id: format!("id{i}"),
                display: format!("img:{i}"),
                bytes: 30,
                decision: Decision::Remove(RemoveReason::UnusedFor),
            });
        }
        plan.images.push(ImagePlan {
            id: "k".into(),
            display: "k".into(),
            bytes: 1,
            decision: Decision::Keep(KeepReason::InUse),
        });
        GcOutcome {
            plan,
            images: n_remove as u64 + 1,
            dry_run: true,
            ..Default::default()
        }
    }

    #[test]
    fn report_is_small_whatever_the_plan_size() {
        let r = node_report(&outcome(500), "2026-01-01T00:00:00Z");
        let last = r.last_run.as_ref().expect("last run");
        assert_eq!(last.planned, 500);
        assert_eq!(last.images.len(), LISTED_IMAGES);
        assert_eq!(last.images[0].reason, "unusedFor");
        assert_eq!((r.images, r.in_use, r.reclaimable_bytes), (501, 2, 15_000));
        assert!(
            serde_json::to_vec(&r).expect("json").len() < 4096,
            "a report stays a few KiB"
        );
    }

    #[test]
    fn aggregate_sums_nodes() {
        let a = node_report(&outcome(1), "t");
        let mut b = node_report(&outcome(2), "t");
        b.error = Some("boom".into());
        let s = aggregate([&a, &b], Some(4));
        assert_eq!(
            (
                s.nodes,
                s.nodes_with_errors,
                s.images,
                s.in_use,
                s.reclaimable_bytes
            ),
            (2, 1, 5, 4, 90)
        );
        assert_eq!(s.observed_generation, Some(4));
    }
}
