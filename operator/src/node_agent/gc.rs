//! One garbage-collection pass on this node: read the runtime (images, containers, image filesystem),
//! bring the usage record up to date, compute the plan (`gc_plan`), and, unless dry-run, remove the
//! planned images one by one, re-checking right before each removal that nothing has started using it.

use std::path::Path;

use tracing::{info, warn};

use crate::cri::{ContainerRef, CriClient, CriError};

use super::gc_plan::{
    self, FsUsage, GcPolicy, ImageInfo, ImagePlan, InUse, Plan, PlanInput, RemoveReason,
};
use super::usage::{UsageError, UsageStore};

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error(transparent)]
    Usage(#[from] UsageError),
}

/// What one pass saw and did.
#[derive(Debug, Clone, Default)]
pub struct GcOutcome {
    pub plan: Plan,
    pub images: u64,
    pub fs: Option<FsUsage>,
    pub dry_run: bool,
    /// Images removed, with the reason.
    pub removed: Vec<(ImagePlan, RemoveReason)>,
    pub freed_bytes: u64,
    /// Planned images that came into use before their removal and were kept.
    pub skipped_in_use: Vec<String>,
    /// Removals the runtime refused (image, error).
    pub failed: Vec<(String, String)>,
    /// Problems worth reporting that did not stop the pass (e.g. a corrupt usage record).
    pub warnings: Vec<String>,
}

/// Images that Pods bound to this node use or are about to use (from the API server). Called again before
/// every removal, so it should read a cache, not the network.
pub trait PodImages: Send + Sync {
    fn images(&self) -> Vec<String>;
}

/// No Pods known (a node agent run without an API server, as in the real-runtime tests).
pub struct NoPods;

impl PodImages for NoPods {
    fn images(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Everything that currently uses an image: CRI containers in any state, containerd containers created
/// outside CRI (when the runtime is containerd), and Pods bound to the node.
pub async fn in_use(cri: &CriClient, pods: &dyn PodImages) -> Result<InUse, CriError> {
    let mut set = InUse::default();
    let mut add = |c: &ContainerRef| {
        set.add(&c.image);
        set.add(&c.image_ref);
    };
    for c in cri.list_containers().await? {
        add(&c);
    }
    match cri.list_containerd_containers().await {
        Ok(list) => list.iter().for_each(&mut add),
        // CRI-O (or another runtime) has no containerd API: CRI's list is then the whole truth.
        Err(CriError::Call { status, .. }) if status.code() == tonic::Code::Unimplemented => {}
        Err(e) => return Err(e),
    }
    for image in pods.images() {
        set.add(&image);
    }
    Ok(set)
}

/// The image filesystem's capacity and fill level: CRI ImageFsInfo names its mountpoint, statvfs of that
/// mountpoint gives both figures (the whole filesystem's fill is what disk pressure is about, not only the
/// runtime's share of it). `root` prefixes the mountpoint when the agent sees the host's filesystem under a
/// mount (DaemonSet).
pub async fn image_fs(cri: &CriClient, root: &Path) -> Result<Option<FsUsage>, CriError> {
    let list = cri.image_fs_info().await?;
    let Some(fs) = list.first() else {
        return Ok(None);
    };
    let mount = root.join(fs.mountpoint.trim_start_matches('/'));
    match crate::cri::fs_stats(&mount) {
        Ok((capacity_bytes, used_bytes)) if capacity_bytes > 0 => Ok(Some(FsUsage {
            capacity_bytes,
            used_bytes,
        })),
        Ok(_) => Ok(None),
        Err(e) => {
            warn!(mountpoint = %mount.display(), error = %e, "cannot read the image filesystem's usage; disk thresholds are not evaluated");
            Ok(None)
        }
    }
}

/// Settings of a pass that are not part of the policy.
pub struct PassOptions<'a> {
    pub dry_run: bool,
    pub now: i64,
    /// Prefix for host paths (the image filesystem's mountpoint), `/` outside a container.
    pub host_root: &'a Path,
    /// The sandbox image, when not learned from the runtime.
    pub sandbox_image_override: Option<&'a str>,
}

/// Runs one pass.
pub async fn run_pass(
    cri: &CriClient,
    store: &UsageStore,
    policy: &GcPolicy,
    pods: &dyn PodImages,
    opts: &PassOptions<'_>,
) -> Result<GcOutcome, GcError> {
    let mut out = GcOutcome {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let runtime = cri.runtime_info().await?;
    let sandbox = opts
        .sandbox_image_override
        .map(str::to_owned)
        .or(runtime.sandbox_image);
    let images = cri.list_images().await?;
    let used = in_use(cri, pods).await?;
    let (mut record, warning) = store.load()?;
    if let Some(w) = warning {
        warn!(error = %w, "usage record reset");
        out.warnings.push(w.to_string());
    }
    if record.observe(&images, &used, opts.now) {
        store.save(&record)?;
    }
    out.fs = image_fs(cri, opts.host_root).await?;
    out.images = images.len() as u64;
    out.plan = gc_plan::plan(&PlanInput {
        policy,
        images: &images,
        in_use: &used,
        usage: &record,
        fs: out.fs,
        sandbox_image: sandbox.as_deref(),
        now: opts.now,
    });
    if opts.dry_run {
        return Ok(out);
    }

    let by_id: std::collections::HashMap<&str, &ImageInfo> =
        images.iter().map(|i| (i.id.as_str(), i)).collect();
    let removals: Vec<(ImagePlan, RemoveReason)> =
        out.plan.removals().map(|(p, r)| (p.clone(), r)).collect();
    for (planned, reason) in removals {
        // Something may have started using the image since the plan was made (a Pod scheduled here,
        // a container created): look again, right before removing.
        let now_used = in_use(cri, pods).await?;
        if by_id
            .get(planned.id.as_str())
            .is_some_and(|img| now_used.contains(img))
        {
            info!(image = %planned.display, "kept: came into use after planning");
            out.skipped_in_use.push(planned.display.clone());
            continue;
        }
        match cri.remove_image(&planned.id).await {
            Ok(()) => {
                info!(image = %planned.display, id = %planned.id, reason = reason.as_str(), bytes = planned.bytes, "removed image");
                out.freed_bytes += planned.bytes;
                record.images.remove(&planned.id);
                out.removed.push((planned, reason));
            }
            Err(e) => {
                warn!(image = %planned.display, error = %e, "removing image failed");
                out.failed.push((planned.display.clone(), e.to_string()));
            }
        }
    }
    if !out.removed.is_empty() {
        store.save(&record)?;
    }
    Ok(out)
}

/// Records what is in use now without planning anything. The agent calls this often (every minute or so)
/// so that a container that ran only between two GC passes still counts as a use.
pub async fn observe_usage(
    cri: &CriClient,
    store: &UsageStore,
    pods: &dyn PodImages,
    now: i64,
) -> Result<(), GcError> {
    let images = cri.list_images().await?;
    let used = in_use(cri, pods).await?;
    let (mut record, warning) = store.load()?;
    if let Some(w) = warning {
        warn!(error = %w, "usage record reset");
    }
    if record.observe(&images, &used, now) {
        store.save(&record)?;
    }
    Ok(())
}
