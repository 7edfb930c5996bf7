//! The image garbage-collection decision: from a policy, the images and containers the runtime reports,
//! the usage record and the image filesystem's fill level, which images to remove and why. Pure: no
//! runtime, no clock, no files, so every rule is tested table by table.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::api::image_cache_policy::ImageCachePolicySpec;

use super::reference::{self, Pattern};
use super::usage::UsageRecord;

/// Why a policy spec cannot be evaluated (the CRD schema refuses these; this guards older objects).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("spec.{field}: {value:?} is not a duration such as 30m or 168h")]
    BadDuration { field: &'static str, value: String },
    #[error(
        "spec.diskPressure.lowPercent ({low}) must be below spec.diskPressure.highPercent ({high}), at most 100"
    )]
    BadThresholds { low: i32, high: i32 },
    #[error("spec.prune.keepLatestPerRepository must be at least 1")]
    BadKeepLatest,
}

/// A policy spec, checked and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct GcPolicy {
    pub dangling: bool,
    pub unused_for: Option<Duration>,
    pub keep_latest_per_repository: Option<usize>,
    /// (high, low) percent.
    pub disk_pressure: Option<(u8, u8)>,
    pub keep: Vec<Pattern>,
}

impl GcPolicy {
    /// Checks and parses a spec.
    pub fn from_spec(spec: &ImageCachePolicySpec) -> Result<Self, PolicyError> {
        let unused_for = match &spec.prune.unused_for {
            Some(v) => Some(parse_duration(v).ok_or_else(|| PolicyError::BadDuration {
                field: "prune.unusedFor",
                value: v.clone(),
            })?),
            None => None,
        };
        let disk_pressure = match &spec.disk_pressure {
            Some(d)
                if d.low_percent >= d.high_percent || d.high_percent > 100 || d.low_percent < 0 =>
            {
                return Err(PolicyError::BadThresholds {
                    low: d.low_percent,
                    high: d.high_percent,
                });
            }
            // In range after the check above.
            Some(d) => Some((d.high_percent as u8, d.low_percent as u8)),
            None => None,
        };
        let keep_latest_per_repository = match spec.prune.keep_latest_per_repository {
            Some(n) if n < 1 => return Err(PolicyError::BadKeepLatest),
            Some(n) => Some(n as usize),
            None => None,
        };
        Ok(Self {
            dangling: spec.prune.dangling,
            unused_for,
            keep_latest_per_repository,
            disk_pressure,
            keep: spec.keep.iter().map(|p| Pattern::new(p)).collect(),
        })
    }
}

/// Parses a Go-style duration (`90s`, `1h30m`, `168h`); the same grammar the CRD's CEL rule accepts.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => Duration::from_nanos(n),
            "us" => Duration::from_micros(n),
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(unit)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// An image as the runtime reports it (CRI `Image`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub pinned: bool,
}

impl ImageInfo {
    /// How the image is shown to people: its first tag, else its first digest reference, else its ID.
    pub fn display(&self) -> String {
        self.repo_tags
            .first()
            .or(self.repo_digests.first())
            .cloned()
            .unwrap_or_else(|| self.id.clone())
    }

    /// Every canonical reference the image answers to.
    fn canonical_refs(&self) -> impl Iterator<Item = String> + '_ {
        self.repo_tags
            .iter()
            .chain(self.repo_digests.iter())
            .map(|r| reference::normalize(r))
    }
}

/// The images that must stay because something uses them or is about to: image IDs and canonical
/// references from containers (any state) and from Pods bound to the node that have not started yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InUse {
    refs: std::collections::HashSet<String>,
}

impl InUse {
    /// Records a reference or image ID a container or Pod uses.
    pub fn add(&mut self, reference_or_id: &str) {
        if !reference_or_id.is_empty() {
            self.refs.insert(reference::normalize(reference_or_id));
        }
    }

    /// Whether `image` is used by anything recorded.
    pub fn contains(&self, image: &ImageInfo) -> bool {
        self.refs.contains(&image.id) || image.canonical_refs().any(|r| self.refs.contains(&r))
    }

    /// Whether an image with this ID and these canonical references is used by anything recorded.
    fn contains_refs(&self, id: &str, canonical: &[String]) -> bool {
        self.refs.contains(id) || canonical.iter().any(|r| self.refs.contains(r))
    }
}

/// The image filesystem's capacity and fill level (statvfs of the mountpoint CRI ImageFsInfo names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
}

impl FsUsage {
    /// Fill level in whole percent (rounded up, so 80.1% counts as above an 80% mark).
    pub fn used_percent(&self) -> u8 {
        if self.capacity_bytes == 0 {
            return 0;
        }
        let pct = (self.used_bytes as u128 * 100).div_ceil(self.capacity_bytes as u128);
        pct.min(100) as u8
    }
}

/// Why an image is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemoveReason {
    Dangling,
    UnusedFor,
    KeepLatestPerRepository,
    DiskPressure,
}

impl RemoveReason {
    /// The name used in reports and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dangling => "dangling",
            Self::UnusedFor => "unusedFor",
            Self::KeepLatestPerRepository => "keepLatestPerRepository",
            Self::DiskPressure => "diskPressure",
        }
    }
}

/// Why an image is never removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    InUse,
    Pinned,
    Sandbox,
    KeepPattern(String),
    /// Not selected by any rule.
    NotSelected,
}

/// The decision for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Remove(RemoveReason),
    Keep(KeepReason),
}

/// One image and what to do with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePlan {
    pub id: String,
    pub display: String,
    pub bytes: u64,
    pub decision: Decision,
}

/// The removal plan for one node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// One entry per image, in the order removals should happen (removals first, oldest first).
    pub images: Vec<ImagePlan>,
    pub total_bytes: u64,
    pub in_use: u64,
    pub reclaimable_bytes: u64,
}

impl Plan {
    /// The images to remove, in order.
    pub fn removals(&self) -> impl Iterator<Item = (&ImagePlan, RemoveReason)> {
        self.images.iter().filter_map(|i| match i.decision {
            Decision::Remove(r) => Some((i, r)),
            Decision::Keep(_) => None,
        })
    }
}

/// Everything the decision depends on.
pub struct PlanInput<'a> {
    pub policy: &'a GcPolicy,
    pub images: &'a [ImageInfo],
    pub in_use: &'a InUse,
    pub usage: &'a UsageRecord,
    pub fs: Option<FsUsage>,
    /// The runtime's sandbox (pause) image reference, when known.
    pub sandbox_image: Option<&'a str>,
    /// Now, in seconds since the epoch.
    pub now: i64,
}

/// Decides, for every image, whether to remove it and why.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let images = input.images;
    let sandbox = input.sandbox_image.map(reference::normalize);
    // Per image, computed once: its canonical references and when it was last active (last in use, else
    // first seen, else now: an image the record has never seen is new, not old).
    let refs: Vec<Vec<String>> = images
        .iter()
        .map(|i| i.canonical_refs().collect())
        .collect();
    let activity: Vec<i64> = images
        .iter()
        .map(|img| {
            input
                .usage
                .get(&img.id)
                .map(|u| u.last_used.unwrap_or(u.first_seen))
                .unwrap_or(input.now)
        })
        .collect();

    let protect = |idx: usize| -> Option<KeepReason> {
        let img = &images[idx];
        if input.in_use.contains_refs(&img.id, &refs[idx]) {
            return Some(KeepReason::InUse);
        }
        if img.pinned {
            return Some(KeepReason::Pinned);
        }
        if let Some(s) = &sandbox
            && (img.id == *s || refs[idx].iter().any(|r| r == s))
        {
            return Some(KeepReason::Sandbox);
        }
        for p in &input.policy.keep {
            if refs[idx].iter().any(|r| p.matches(r)) {
                return Some(KeepReason::KeepPattern(p.as_str().to_owned()));
            }
        }
        None
    };

    // keepLatestPerRepository: rank every image of a repository by activity (newest first; ties by ID so
    // the result is stable). In-use and protected images count towards the N kept.
    let mut beyond_latest = vec![false; images.len()];
    if let Some(n) = input.policy.keep_latest_per_repository {
        let mut repos: HashMap<String, Vec<usize>> = HashMap::new();
        let mut in_some_repo = vec![false; images.len()];
        for (idx, img) in images.iter().enumerate() {
            let names: BTreeSet<String> = img
                .repo_tags
                .iter()
                .filter_map(|t| reference::parse(t))
                .map(|r| r.repository)
                .collect();
            for name in names {
                repos.entry(name).or_default().push(idx);
                in_some_repo[idx] = true;
            }
        }
        // An image tagged into several repositories goes only if it is old in all of them.
        beyond_latest = in_some_repo;
        for list in repos.values_mut() {
            list.sort_by(|&a, &b| {
                activity[b]
                    .cmp(&activity[a])
                    .then_with(|| images[a].id.cmp(&images[b].id))
            });
            for (rank, &idx) in list.iter().enumerate() {
                beyond_latest[idx] = beyond_latest[idx] && rank >= n;
            }
        }
    }

    let mut out = Plan::default();
    let mut decisions: Vec<Decision> = Vec::with_capacity(images.len());
    let mut candidates_for_pressure: Vec<usize> = Vec::new();
    for (idx, img) in images.iter().enumerate() {
        out.total_bytes += img.size;
        let decision = if let Some(k) = protect(idx) {
            if k == KeepReason::InUse {
                out.in_use += 1;
            }
            Decision::Keep(k)
        } else if input.policy.dangling && img.repo_tags.is_empty() {
            Decision::Remove(RemoveReason::Dangling)
        } else if input
            .policy
            .unused_for
            .is_some_and(|d| input.now.saturating_sub(activity[idx]) >= d.as_secs() as i64)
        {
            Decision::Remove(RemoveReason::UnusedFor)
        } else if beyond_latest[idx] {
            Decision::Remove(RemoveReason::KeepLatestPerRepository)
        } else {
            candidates_for_pressure.push(idx);
            Decision::Keep(KeepReason::NotSelected)
        };
        decisions.push(decision);
    }

    // Disk pressure: above the high mark, remove least recently used until at or below the low mark,
    // counting what the rules above already free.
    if let (Some((high, low)), Some(fs)) = (input.policy.disk_pressure, input.fs)
        && fs.used_percent() > high
    {
        let already: u64 = images
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| matches!(d, Decision::Remove(_)))
            .map(|(i, _)| i.size)
            .sum();
        let target = (fs.capacity_bytes as u128 * low as u128 / 100) as u64;
        let mut used = fs.used_bytes.saturating_sub(already);
        candidates_for_pressure.sort_by(|&a, &b| {
            activity[a]
                .cmp(&activity[b])
                .then_with(|| images[b].size.cmp(&images[a].size))
                .then_with(|| images[a].id.cmp(&images[b].id))
        });
        for idx in candidates_for_pressure {
            if used <= target {
                break;
            }
            decisions[idx] = Decision::Remove(RemoveReason::DiskPressure);
            used = used.saturating_sub(images[idx].size);
        }
    }

    // Removals first, least recently active first, so an interrupted run has removed the oldest.
    let mut order: Vec<usize> = (0..images.len()).collect();
    let removing = |i: usize| matches!(decisions[i], Decision::Remove(_));
    order.sort_by(|&a, &b| {
        removing(b)
            .cmp(&removing(a))
            .then_with(|| activity[a].cmp(&activity[b]))
            .then_with(|| images[a].id.cmp(&images[b].id))
    });
    out.images = order
        .into_iter()
        .map(|idx| {
            let img = &images[idx];
            ImagePlan {
                id: img.id.clone(),
                display: img.display(),
                bytes: img.size,
                decision: decisions[idx].clone(),
            }
        })
        .collect();
    out.reclaimable_bytes = out.removals().map(|(i, _)| i.bytes).sum();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::image_cache_policy::{DiskPressure, PruneSpec};
    use crate::node_agent::usage::UsageEntry;
    use std::collections::BTreeMap;

    const DAY: i64 = 86_400;
    const NOW: i64 = 100 * DAY;

    fn img(id: &str, tags: &[&str], size: u64) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            size,
            ..Default::default()
        }
    }

    /// A usage record where each image was last used `days_ago`.
    fn usage(entries: &[(&str, i64)]) -> UsageRecord {
        let mut r = UsageRecord::default();
        for (id, days_ago) in entries {
            r.images.insert(
                id.to_string(),
                UsageEntry {
                    first_seen: NOW - 365 * DAY,
                    last_used: Some(NOW - days_ago * DAY),
                },
            );
        }
        r
    }

    fn policy(f: impl FnOnce(&mut ImageCachePolicySpec)) -> GcPolicy {
        let mut spec = ImageCachePolicySpec {
            prune: PruneSpec {
                dangling: false,
                unused_for: None,
                keep_latest_per_repository: None,
            },
            ..Default::default()
        };
        f(&mut spec);
        GcPolicy::from_spec(&spec).expect("valid policy")
    }

    fn decisions(p: &Plan) -> BTreeMap<String, Decision> {
        p.images
            .iter()
            .map(|i| (i.id.clone(), i.decision.clone()))
            .collect()
    }

    struct Case {
        name: &'static str,
        policy: GcPolicy,
        images: Vec<ImageInfo>,
        in_use: Vec<&'static str>,
        usage: UsageRecord,
        fs: Option<FsUsage>,
        sandbox: Option<&'static str>,
        want: Vec<(&'static str, Decision)>,
    }

    fn run(cases: Vec<Case>) {
        for c in cases {
            let mut in_use = InUse::default();
            for r in &c.in_use {
                in_use.add(r);
            }
            let p = plan(&PlanInput {
                policy: &c.policy,
                images: &c.images,
                in_use: &in_use,
                usage: &c.usage,
                fs: c.fs,
                sandbox_image: c.sandbox,
                now: NOW,
            });
            let got = decisions(&p);
            for (id, want) in &c.want {
                assert_eq!(got.get(*id), Some(want), "case {:?}: image {id}", c.name);
            }
            assert_eq!(
                got.len(),
                c.images.len(),
                "case {:?}: one decision per image",
                c.name
            );
        }
    }

    use Decision::{Keep, Remove};
    use KeepReason::{KeepPattern, NotSelected, Pinned, Sandbox};
    use RemoveReason::*;

    #[test]
    fn prune_rules() {
        run(vec![
            Case {
                name: "dangling removed only when enabled",
                policy: policy(|s| s.prune.dangling = true),
                images: vec![img("a", &[], 10), img("b", &["app:1"], 10)],
                in_use: vec![],
                usage: usage(&[("a", 0), ("b", 0)]),
                fs: None,
                sandbox: None,
                want: vec![("a", Remove(Dangling)), ("b", Keep(NotSelected))],
            },
            Case {
                name: "dangling kept when disabled",
                policy: policy(|_| {}),
                images: vec![img("a", &[], 10)],
                in_use: vec![],
                usage: usage(&[("a", 0)]),
                fs: None,
                sandbox: None,
                want: vec![("a", Keep(NotSelected))],
            },
            Case {
                name: "unusedFor counts from last use",
                policy: policy(|s| s.prune.unused_for = Some("168h".into())),
                images: vec![
                    img("old", &["app:1"], 1),
                    img("new", &["app:2"], 1),
                    img("edge", &["app:3"], 1),
                ],
                in_use: vec![],
                usage: usage(&[("old", 8), ("new", 6), ("edge", 7)]),
                fs: None,
                sandbox: None,
                want: vec![
                    ("old", Remove(UnusedFor)),
                    ("new", Keep(NotSelected)),
                    ("edge", Remove(UnusedFor)),
                ],
            },
            Case {
                name: "unusedFor: an image never seen before is new, not old",
                policy: policy(|s| s.prune.unused_for = Some("1h".into())),
                images: vec![img("unseen", &["app:1"], 1)],
                in_use: vec![],
                usage: UsageRecord::default(),
                fs: None,
                sandbox: None,
                want: vec![("unseen", Keep(NotSelected))],
            },
            Case {
                name: "keepLatestPerRepository keeps the N most recently used per repository",
                policy: policy(|s| s.prune.keep_latest_per_repository = Some(2)),
                images: vec![
                    img("a1", &["app:1"], 1),
                    img("a2", &["app:2"], 1),
                    img("a3", &["app:3"], 1),
                    img("b1", &["other:1"], 1),
                ],
                in_use: vec![],
                usage: usage(&[("a1", 30), ("a2", 2), ("a3", 1), ("b1", 50)]),
                fs: None,
                sandbox: None,
                want: vec![
                    ("a1", Remove(KeepLatestPerRepository)),
                    ("a2", Keep(NotSelected)),
                    ("a3", Keep(NotSelected)),
                    ("b1", Keep(NotSelected)),
                ],
            },
            Case {
                name: "keepLatestPerRepository: an in-use image counts toward N and stays",
                policy: policy(|s| s.prune.keep_latest_per_repository = Some(1)),
                images: vec![img("a1", &["app:1"], 1), img("a2", &["app:2"], 1)],
                in_use: vec!["docker.io/library/app:1"],
                usage: usage(&[("a1", 0), ("a2", 3)]),
                fs: None,
                sandbox: None,
                want: vec![
                    ("a1", Keep(KeepReason::InUse)),
                    ("a2", Remove(KeepLatestPerRepository)),
                ],
            },
            Case {
                name: "keepLatestPerRepository: tagged into two repositories, recent in one: kept",
                policy: policy(|s| s.prune.keep_latest_per_repository = Some(1)),
                images: vec![
                    img("x", &["app:old", "mirror/app:v1"], 1),
                    img("y", &["app:new"], 1),
                ],
                in_use: vec![],
                usage: usage(&[("x", 10), ("y", 1)]),
                fs: None,
                sandbox: None,
                want: vec![("x", Keep(NotSelected)), ("y", Keep(NotSelected))],
            },
        ]);
    }

    #[test]
    fn never_removed() {
        let everything = policy(|s| {
            s.prune.dangling = true;
            s.prune.unused_for = Some("1m".into());
            s.prune.keep_latest_per_repository = Some(1);
            s.keep = vec!["postgres:*".into(), "registry.example.test/team/*".into()];
        });
        run(vec![Case {
            name: "in use (by ID, tag, short name, digest), pinned, sandbox, keep patterns",
            policy: everything,
            images: vec![
                img("sha256:running", &["app:1"], 1),
                img("sha256:bytag", &["busybox:1.36"], 1),
                ImageInfo {
                    id: "sha256:bydigest".into(),
                    repo_digests: vec!["registry.example.test/x@sha256:d1".into()],
                    ..Default::default()
                },
                ImageInfo {
                    id: "sha256:pinned".into(),
                    repo_tags: vec!["p:1".into()],
                    pinned: true,
                    ..Default::default()
                },
                img("sha256:pause", &["registry.k8s.io/pause:3.9"], 1),
                img("sha256:pg", &["postgres:16"], 1),
                img("sha256:team", &["registry.example.test/team/app:v1"], 1),
                img("sha256:danglingpinned", &[], 1),
                img("sha256:gone", &["junk:1"], 1),
            ],
            in_use: vec![
                "sha256:running",
                "busybox:1.36",
                "registry.example.test/x@sha256:d1",
                "sha256:danglingpinned",
            ],
            usage: usage(&[
                ("sha256:running", 400),
                ("sha256:bytag", 400),
                ("sha256:bydigest", 400),
                ("sha256:pinned", 400),
                ("sha256:pause", 400),
                ("sha256:pg", 400),
                ("sha256:team", 400),
                ("sha256:gone", 400),
            ]),
            fs: Some(FsUsage {
                capacity_bytes: 100,
                used_bytes: 100,
            }),
            sandbox: Some("registry.k8s.io/pause:3.9"),
            want: vec![
                ("sha256:running", Keep(KeepReason::InUse)),
                ("sha256:bytag", Keep(KeepReason::InUse)),
                ("sha256:bydigest", Keep(KeepReason::InUse)),
                ("sha256:pinned", Keep(Pinned)),
                ("sha256:pause", Keep(Sandbox)),
                (
                    "sha256:pg",
                    Keep(KeepPattern("docker.io/library/postgres:*".into())),
                ),
                (
                    "sha256:team",
                    Keep(KeepPattern("registry.example.test/team/*".into())),
                ),
                ("sha256:danglingpinned", Keep(KeepReason::InUse)),
                ("sha256:gone", Remove(UnusedFor)),
            ],
        }]);
    }

    #[test]
    fn disk_pressure() {
        let pressure = |high, low| {
            policy(|s| {
                s.disk_pressure = Some(DiskPressure {
                    high_percent: high,
                    low_percent: low,
                })
            })
        };
        let images = || {
            vec![
                img("oldest", &["a:1"], 20),
                img("older", &["b:1"], 20),
                img("newer", &["c:1"], 20),
                img("newest", &["d:1"], 20),
                img("busy", &["e:1"], 20),
            ]
        };
        let rec = || {
            usage(&[
                ("oldest", 40),
                ("older", 30),
                ("newer", 20),
                ("newest", 10),
                ("busy", 50),
            ])
        };
        run(vec![
            Case {
                name: "below the high mark nothing goes",
                policy: pressure(90, 50),
                images: images(),
                in_use: vec!["e:1"],
                usage: rec(),
                fs: Some(FsUsage {
                    capacity_bytes: 1000,
                    used_bytes: 900,
                }),
                sandbox: None,
                want: vec![
                    ("oldest", Keep(NotSelected)),
                    ("busy", Keep(KeepReason::InUse)),
                ],
            },
            Case {
                name: "above the high mark, LRU first down to the low mark",
                policy: pressure(80, 70),
                images: images(),
                in_use: vec!["e:1"],
                usage: rec(),
                // 85% used: removing the oldest unused image (20) reaches 65%, at or below 70%.
                fs: Some(FsUsage {
                    capacity_bytes: 100,
                    used_bytes: 85,
                }),
                sandbox: None,
                want: vec![
                    ("oldest", Remove(DiskPressure)),
                    ("older", Keep(NotSelected)),
                    ("busy", Keep(KeepReason::InUse)),
                ],
            },
            Case {
                name: "LRU order, in-use skipped even though it is the oldest",
                policy: pressure(50, 45),
                images: images(),
                in_use: vec!["e:1"],
                usage: rec(),
                fs: Some(FsUsage {
                    capacity_bytes: 100,
                    used_bytes: 85,
                }),
                sandbox: None,
                want: vec![
                    ("busy", Keep(KeepReason::InUse)),
                    ("oldest", Remove(DiskPressure)),
                    ("older", Remove(DiskPressure)),
                    ("newer", Keep(NotSelected)),
                    ("newest", Keep(NotSelected)),
                ],
            },
            Case {
                name: "cannot reach the low mark: removes every candidate, never a protected one",
                policy: pressure(10, 5),
                images: images(),
                in_use: vec!["e:1"],
                usage: rec(),
                fs: Some(FsUsage {
                    capacity_bytes: 100,
                    used_bytes: 100,
                }),
                sandbox: None,
                want: vec![
                    ("busy", Keep(KeepReason::InUse)),
                    ("oldest", Remove(DiskPressure)),
                    ("older", Remove(DiskPressure)),
                    ("newer", Remove(DiskPressure)),
                    ("newest", Remove(DiskPressure)),
                ],
            },
            Case {
                name: "no filesystem figures: no disk-pressure removals",
                policy: pressure(10, 5),
                images: images(),
                in_use: vec![],
                usage: rec(),
                fs: None,
                sandbox: None,
                want: vec![("oldest", Keep(NotSelected))],
            },
        ]);
    }

    #[test]
    fn disk_pressure_counts_what_other_rules_free() {
        let p = policy(|s| {
            s.prune.dangling = true;
            s.disk_pressure = Some(DiskPressure {
                high_percent: 80,
                low_percent: 70,
            });
        });
        let images = vec![
            img("dang", &[], 20),
            img("old", &["a:1"], 20),
            img("new", &["b:1"], 20),
        ];
        let in_use = InUse::default();
        let rec = usage(&[("dang", 1), ("old", 30), ("new", 1)]);
        let out = plan(&PlanInput {
            policy: &p,
            images: &images,
            in_use: &in_use,
            usage: &rec,
            fs: Some(FsUsage {
                capacity_bytes: 100,
                used_bytes: 90,
            }),
            sandbox_image: None,
            now: NOW,
        });
        let d = decisions(&out);
        // 90 - 20 (dangling) = 70, already at the low mark: nothing else goes.
        assert_eq!(d["dang"], Remove(Dangling));
        assert_eq!(d["old"], Keep(NotSelected));
        assert_eq!(out.reclaimable_bytes, 20);
        assert_eq!(out.images[0].id, "dang", "removals come first");
    }

    #[test]
    fn removals_ordered_oldest_first_and_totals() {
        let p = policy(|s| s.prune.unused_for = Some("1h".into()));
        let images = vec![
            img("b", &["b:1"], 5),
            img("a", &["a:1"], 7),
            img("c", &["c:1"], 11),
        ];
        let mut in_use = InUse::default();
        in_use.add("c:1");
        let rec = usage(&[("a", 9), ("b", 3), ("c", 1)]);
        let out = plan(&PlanInput {
            policy: &p,
            images: &images,
            in_use: &in_use,
            usage: &rec,
            fs: None,
            sandbox_image: None,
            now: NOW,
        });
        let ids: Vec<&str> = out.removals().map(|(i, _)| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            (out.total_bytes, out.in_use, out.reclaimable_bytes),
            (23, 1, 12)
        );
    }

    #[test]
    fn durations() {
        let ok = [
            ("90s", 90),
            ("1h30m", 5400),
            ("168h", 604_800),
            ("1m", 60),
            ("1500ms", 1),
        ];
        for (s, secs) in ok {
            assert_eq!(parse_duration(s).map(|d| d.as_secs()), Some(secs), "{s}");
        }
        for bad in ["", "h", "7d", "1.5h", "-1h", "10", "1h 2m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_specs_are_refused_with_the_field() {
        let mut s = ImageCachePolicySpec::default();
        s.prune.unused_for = Some("7d".into());
        let e = GcPolicy::from_spec(&s).unwrap_err();
        assert!(e.to_string().contains("spec.prune.unusedFor"), "{e}");
        let s = ImageCachePolicySpec {
            disk_pressure: Some(DiskPressure {
                high_percent: 50,
                low_percent: 50,
            }),
            ..Default::default()
        };
        assert!(
            GcPolicy::from_spec(&s)
                .unwrap_err()
                .to_string()
                .contains("lowPercent")
        );
        let mut s = ImageCachePolicySpec::default();
        s.prune.keep_latest_per_repository = Some(0);
        assert_eq!(
            GcPolicy::from_spec(&s).unwrap_err(),
            PolicyError::BadKeepLatest
        );
    }

    #[test]
    fn fs_percent_rounds_up() {
        assert_eq!(
            FsUsage {
                capacity_bytes: 1000,
                used_bytes: 801
            }
            .used_percent(),
            81
        );
        assert_eq!(
            FsUsage {
                capacity_bytes: 1000,
                used_bytes: 800
            }
            .used_percent(),
            80
        );
        assert_eq!(
            FsUsage {
                capacity_bytes: 0,
                used_bytes: 8
            }
            .used_percent(),
            0
        );
    }
}
