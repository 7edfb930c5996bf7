//! Benchmark of the pure GC decision: a plan for 10,000 images and 5,000 containers (synthetic inputs),
//! every rule enabled (dangling, unusedFor, keepLatestPerRepository, disk pressure, keep patterns).
//! Run: `cargo run --release -p berth-operator --example bench_gc_plan` (or scripts/bench-node-agent.sh).

use std::time::Instant;

use berth_operator::api::image_cache_policy::{DiskPressure, ImageCachePolicySpec, PruneSpec};
use berth_operator::node_agent::gc_plan::{FsUsage, GcPolicy, ImageInfo, InUse, PlanInput, plan};
use berth_operator::node_agent::usage::{UsageEntry, UsageRecord};

const IMAGES: usize = 10_000;
const CONTAINERS: usize = 5_000;
const NOW: i64 = 2_000_000_000;

fn main() {
    let policy = GcPolicy::from_spec(&ImageCachePolicySpec {
        prune: PruneSpec {
            dangling: true,
            unused_for: Some("168h".into()),
            keep_latest_per_repository: Some(3),
        },
        disk_pressure: Some(DiskPressure {
            high_percent: 80,
            low_percent: 60,
        }),
        keep: vec!["registry.example.test/keep/*".into(), "postgres:*".into()],
        ..Default::default()
    })
    .expect("policy");

    // 500 repositories x 20 tags; every 50th image dangling; sizes 1-100 MiB; ages 0-30 days.
    let mut images = Vec::with_capacity(IMAGES);
    let mut usage = UsageRecord::default();
    for i in 0..IMAGES {
        let id = format!("sha256:{i:064x}");
        let repo_tags = if i % 50 == 0 {
            vec![]
        } else {
            vec![format!(
                "registry.example.test/team{}/app{}:v{}",
                i % 7,
                i % 500,
                i / 500
            )]
        };
        images.push(ImageInfo {
            id: id.clone(),
            repo_tags,
            repo_digests: vec![format!(
                "registry.example.test/team{}/app{}@sha256:{i:064x}",
                i % 7,
                i % 500
            )],
            size: ((i * 7919) % 100 + 1) as u64 * (1 << 20),
            pinned: i % 997 == 0,
        });
        let age = ((i * 104_729) % (30 * 86_400)) as i64;
        usage.images.insert(
            id,
            UsageEntry {
                first_seen: NOW - 40 * 86_400,
                last_used: Some(NOW - age),
            },
        );
    }
    // 5,000 containers over 2,500 distinct images, half referenced by ID and half by tag.
    let mut in_use = InUse::default();
    for c in 0..CONTAINERS {
        let i = (c * 2) % IMAGES;
        if c % 2 == 0 {
            in_use.add(&images[i].id);
        } else if let Some(t) = images[i].repo_tags.first() {
            in_use.add(t);
        }
    }
    let total: u64 = images.iter().map(|i| i.size).sum();
    let fs = FsUsage {
        capacity_bytes: total + total / 10,
        used_bytes: total,
    };

    let input = PlanInput {
        policy: &policy,
        images: &images,
        in_use: &in_use,
        usage: &usage,
        fs: Some(fs),
        sandbox_image: Some("registry.k8s.io/pause:3.10"),
        now: NOW,
    };
    let _warm = plan(&input);
    let runs = 20;
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        last = Some(plan(&input));
        times.push(start.elapsed());
    }
    times.sort();
    let p = last.expect("ran");
    println!(
        "gc plan: {IMAGES} images, {CONTAINERS} containers: median {:.1} ms, max {:.1} ms over {runs} runs ({} removals, {} in use, {:.1} GiB reclaimable)",
        times[runs / 2].as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3,
        p.removals().count(),
        p.in_use,
        p.reclaimable_bytes as f64 / (1u64 << 30) as f64,
    );
}
