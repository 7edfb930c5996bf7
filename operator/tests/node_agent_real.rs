//! The node agent against a real containerd and a real registry (see `support`): image garbage
//! collection as containerd sees it, and registry mirrors that change what a CRI PullImage fetches.
//! Each test starts its own containerd. Skipped, saying why, where the components are missing (the stage
//! script `scripts/test.d/30-node-agent.sh` installs them and sets BERTH_REQUIRE_REAL so nothing skips).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use berth_operator::api::image_cache_policy::{ImageCachePolicySpec, PruneSpec};
use berth_operator::api::registry_mirror::{Mirror, RegistryMirrorSpec};
use berth_operator::cri::CriClient;
use berth_operator::node_agent::gc::{self, NoPods, PassOptions};
use berth_operator::node_agent::gc_plan::{Decision, GcPolicy, KeepReason, RemoveReason};
use berth_operator::node_agent::mirror::{self, state};
use berth_operator::node_agent::reference;
use berth_operator::node_agent::usage::UsageStore;
use support::{Containerd, Images, Registry};

const BASE: &str = "berth.test/img";
const PAUSE: &str = "berth.test/img:pause";

fn now() -> i64 {
    berth_operator::node_agent::cli::now()
}

fn opts(dry_run: bool, now: i64) -> PassOptions<'static> {
    PassOptions {
        dry_run,
        now,
        host_root: Path::new("/"),
        sandbox_image_override: None,
    }
}

/// Tags (canonical) of the images CRI reports, by image ID.
async fn cri_tags(cri: &CriClient) -> BTreeSet<String> {
    cri.list_images()
        .await
        .expect("ListImages")
        .iter()
        .flat_map(|i| i.repo_tags.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_what_containerd_holds_then_prune_removes_exactly_the_plan() {
    require_real_components!();
    let tmp = support::scratch("gc");
    let images = Images::build(
        tmp.path(),
        &[
            "pause", "running", "keep-1", "old-1", "old-2", "dang", "dang-new",
        ],
    );
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    ctd.import(&images.archive(tmp.path()), BASE);
    // Moving the `dang` name to another image leaves the first image without any tag: dangling.
    ctd.ctr(&[
        "images",
        "tag",
        "--force",
        &format!("{BASE}:dang-new"),
        &format!("{BASE}:dang"),
    ]);
    ctd.run_detached(&format!("{BASE}:running"), "busy");

    let cri = CriClient::connect(&ctd.socket).await.expect("connect");
    let store = UsageStore::new(tmp.path().join("agent/image-usage.json"));
    let policy = GcPolicy::from_spec(&ImageCachePolicySpec {
        dry_run: true,
        prune: PruneSpec {
            dangling: true,
            unused_for: Some("1h".into()),
            keep_latest_per_repository: None,
        },
        keep: vec![format!("{BASE}:keep-*")],
        ..Default::default()
    })
    .expect("policy");

    // Dry-run now: the report is containerd's content, and only the dangling image is planned.
    let t0 = now();
    let names_before = ctd.image_names();
    let first = gc::run_pass(&cri, &store, &policy, &NoPods, &opts(true, t0))
        .await
        .expect("dry-run pass");
    let reported: BTreeSet<String> = cri_tags(&cri).await;
    let from_ctr: BTreeSet<String> = names_before
        .iter()
        .map(|n| reference::normalize(n))
        .collect();
    assert_eq!(
        reported, from_ctr,
        "the tags the agent saw are exactly the image names containerd holds"
    );
    assert_eq!(
        first.images, 7,
        "7 distinct images (dang-new carries two names)"
    );
    assert_eq!(first.plan.in_use, 1, "the ctr container's image is in use");
    let planned: Vec<(String, RemoveReason)> = first
        .plan
        .removals()
        .map(|(p, r)| (p.display.clone(), r))
        .collect();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].1, RemoveReason::Dangling);
    assert_eq!(ctd.image_names(), names_before, "dry-run removed nothing");
    let du_total: u64 = cri
        .list_images()
        .await
        .expect("list")
        .iter()
        .map(|i| i.size)
        .sum();
    assert_eq!(
        first.plan.total_bytes, du_total,
        "total bytes are the runtime's image sizes"
    );

    // Two hours later (the pass's clock moves; the record on disk says when each image was first seen).
    let later = t0 + 2 * 3600;
    let dry = gc::run_pass(&cri, &store, &policy, &NoPods, &opts(true, later))
        .await
        .expect("dry-run later");
    let want_removed: BTreeSet<String> = dry.plan.removals().map(|(p, _)| p.id.clone()).collect();
    let keep = |display: &str| {
        dry.plan
            .images
            .iter()
            .find(|i| i.display == reference::normalize(display) || i.display == display)
            .cloned()
    };
    assert_eq!(
        keep(&format!("{BASE}:running")).map(|i| i.decision),
        Some(Decision::Keep(KeepReason::InUse))
    );
    assert_eq!(
        keep(PAUSE).map(|i| i.decision),
        Some(Decision::Keep(KeepReason::Sandbox))
    );
    assert!(matches!(
        keep(&format!("{BASE}:keep-1")).map(|i| i.decision),
        Some(Decision::Keep(KeepReason::KeepPattern(_)))
    ));
    assert_eq!(
        want_removed.len(),
        4,
        "dangling + old-1 + old-2 + dang-new: {:?}",
        dry.plan.removals().collect::<Vec<_>>()
    );

    // Prune for real: exactly the planned images go; the running container's image, the pause image and
    // the keep match stay.
    let ids_before: BTreeSet<String> = cri
        .list_images()
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    let pruned = gc::run_pass(&cri, &store, &policy, &NoPods, &opts(false, later))
        .await
        .expect("prune pass");
    let removed: BTreeSet<String> = pruned.removed.iter().map(|(p, _)| p.id.clone()).collect();
    assert_eq!(
        removed, want_removed,
        "removed exactly what the dry-run planned"
    );
    assert!(pruned.failed.is_empty(), "{:?}", pruned.failed);
    let ids_after: BTreeSet<String> = cri
        .list_images()
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        ids_after,
        ids_before.difference(&want_removed).cloned().collect(),
        "containerd lost exactly those"
    );
    let names_after = ctd.image_names();
    for must in [
        format!("{BASE}:running"),
        PAUSE.to_string(),
        format!("{BASE}:keep-1"),
    ] {
        assert!(names_after.contains(&must), "{must} kept: {names_after:?}");
    }
    for gone in ["old-1", "old-2", "dang", "dang-new"] {
        assert!(
            !names_after.contains(&format!("{BASE}:{gone}")),
            "{gone} removed: {names_after:?}"
        );
    }
    assert_eq!(pruned.freed_bytes, dry.plan.reclaimable_bytes);
    // The container still runs.
    assert!(ctd.ctr(&["tasks", "ls"]).contains("RUNNING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_comes_into_use_after_planning_is_not_removed() {
    require_real_components!();
    let tmp = support::scratch("recheck");
    let images = Images::build(tmp.path(), &["pause", "a", "b"]);
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    ctd.import(&images.archive(tmp.path()), BASE);
    let cri = CriClient::connect(&ctd.socket).await.expect("connect");
    let store = UsageStore::new(tmp.path().join("agent/image-usage.json"));
    let policy = GcPolicy::from_spec(&ImageCachePolicySpec {
        prune: PruneSpec {
            dangling: true,
            unused_for: Some("1m".into()),
            keep_latest_per_repository: None,
        },
        ..Default::default()
    })
    .expect("policy");
    gc::run_pass(&cri, &store, &policy, &NoPods, &opts(true, now()))
        .await
        .expect("record");

    /// A Pod bound to the node that has not started yet: it appears between plan and removal.
    struct LatePod(std::sync::atomic::AtomicUsize);
    impl gc::PodImages for LatePod {
        fn images(&self) -> Vec<String> {
            // First call (planning): nothing. Later calls (re-check before each removal): image `a`.
            if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                vec![]
            } else {
                vec![format!("{BASE}:a")]
            }
        }
    }
    let pods = LatePod(0.into());
    let out = gc::run_pass(&cri, &store, &policy, &pods, &opts(false, now() + 3600))
        .await
        .expect("prune");
    assert_eq!(out.plan.removals().count(), 2, "a and b were planned");
    assert_eq!(
        out.skipped_in_use,
        vec![format!("{BASE}:a")],
        "a was re-checked and kept"
    );
    let names = ctd.image_names();
    assert!(
        names.contains(&format!("{BASE}:a")) && !names.contains(&format!("{BASE}:b")),
        "{names:?}"
    );
}

fn agent_once(socket: &Path, state_dir: &Path, policy_file: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-operator"))
        .arg("node-agent")
        .arg("--cri-socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--once-policy")
        .arg(policy_file)
        .output()
        .expect("run agent");
    assert!(
        out.status.success(),
        "agent failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("agent prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_record_survives_an_agent_restart() {
    require_real_components!();
    let tmp = support::scratch("restart");
    let images = Images::build(tmp.path(), &["pause", "used", "idle"]);
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    ctd.import(&images.archive(tmp.path()), BASE);
    ctd.run_detached(&format!("{BASE}:used"), "c1");
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: berth.dev/v1alpha1\nkind: ImageCachePolicy\nmetadata: {name: p}\nspec:\n  dryRun: true\n  prune: {unusedFor: 168h}\n",
    )
    .expect("policy");
    let state = tmp.path().join("agent");

    // First agent process: records first-seen for every image and last-use for the running one.
    let r1 = agent_once(&ctd.socket, &state, &policy);
    assert_eq!(r1["report"]["inUse"], 1);
    let rec1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("image-usage.json")).expect("record"))
            .expect("json");
    assert_eq!(rec1["images"].as_object().map(|m| m.len()), Some(3));

    // The container stops; a new agent process (a restart) starts two seconds later.
    ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", "c1"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = ctd.ctr_output(&["tasks", "delete", "c1"]);
    ctd.ctr(&["containers", "delete", "c1"]);
    let r2 = agent_once(&ctd.socket, &state, &policy);
    assert_eq!(r2["report"]["inUse"], 0);
    let rec2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("image-usage.json")).expect("record"))
            .expect("json");
    assert_eq!(
        rec1["images"], rec2["images"],
        "first-seen and last-used kept across the restart, not reset"
    );
    let used_id = rec1["images"]
        .as_object()
        .and_then(|m| m.iter().find(|(_, v)| v.get("lastUsed").is_some()));
    assert!(
        used_id.is_some(),
        "the running image's last use was recorded: {rec1}"
    );
}

fn hub_mirror(registry: &Registry) -> RegistryMirrorSpec {
    RegistryMirrorSpec {
        registry: "registry.example.test".into(),
        mirrors: vec![Mirror {
            url: format!("http://{}", registry.addr),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn pulls_of(registry: &Registry, path: &str) -> usize {
    // containerd resolves a tag with HEAD, then fetches by digest with GET: count both (access-log lines).
    registry
        .log_text()
        .lines()
        .filter(|l| (l.contains("\"GET ") || l.contains("\"HEAD ")) && l.contains(path))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_mirror_serves_pulls_edits_apply_live_and_delete_restores() {
    require_real_components!();
    let tmp = support::scratch("mirror");
    let images = Images::build(tmp.path(), &["pause", "v1", "v2"]);
    let reg_a = Registry::start(tmp.path(), "registry-a");
    let reg_b = Registry::start(tmp.path(), "registry-b");
    reg_a.push(&images.layout, "v1", "team/app", "v1");
    reg_b.push(&images.layout, "v2", "team/app", "v2");
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    let cri = CriClient::connect(&ctd.socket).await.expect("connect");
    let info = cri.runtime_info().await.expect("runtime info");
    let certs_d = ctd.certs_d.clone().expect("config_path");
    assert_eq!(
        info.registry_config_path.as_deref(),
        Some(certs_d.to_str().expect("utf8")),
        "containerd reports its config_path"
    );
    assert_eq!(
        info.sandbox_image.as_deref(),
        Some(PAUSE),
        "containerd reports its sandbox image"
    );
    let target = mirror::target(&info, Path::new("/"), None, Path::new("/nonexistent"), None);

    // Without a mirror, registry.example.test does not resolve: the pull fails.
    assert!(
        cri.pull_image("registry.example.test/team/app:v1")
            .await
            .is_err(),
        "no mirror: pull fails"
    );

    // Applied: the pull is served by registry A (its log shows the manifest request).
    let mut spec = hub_mirror(&reg_a);
    let st = mirror::apply("node-1", &target, "example", Some(1), &spec, &[Ok(None)]);
    assert_eq!(st.state, state::APPLIED, "{st:?}");
    let hosts = certs_d.join("registry.example.test/hosts.toml");
    assert!(hosts.exists());
    cri.pull_image("registry.example.test/team/app:v1")
        .await
        .expect("pull through mirror A");
    assert!(
        pulls_of(&reg_a, "/v2/team/app/manifests/v1") >= 1,
        "registry A served it:\n{}",
        reg_a.log_text()
    );

    // Edited to registry B: the next pull goes there, containerd untouched (same PID).
    spec = hub_mirror(&reg_b);
    let st = mirror::apply("node-1", &target, "example", Some(2), &spec, &[Ok(None)]);
    assert_eq!(st.state, state::APPLIED);
    cri.pull_image("registry.example.test/team/app:v2")
        .await
        .expect("pull through mirror B");
    assert!(
        pulls_of(&reg_b, "/v2/team/app/manifests/v2") >= 1,
        "registry B served it:\n{}",
        reg_b.log_text()
    );
    assert_eq!(
        pulls_of(&reg_a, "/v2/team/app/manifests/v2"),
        0,
        "registry A was not asked for v2"
    );

    // Deleted: the file goes and the pull fails again.
    assert!(mirror::remove(&target, "example", "registry.example.test").expect("remove"));
    assert!(!hosts.exists() && !certs_d.join("registry.example.test").exists());
    cri.remove_image("registry.example.test/team/app:v2")
        .await
        .expect("forget the pulled image");
    assert!(
        cri.pull_image("registry.example.test/team/app:v2")
            .await
            .is_err(),
        "no mirror again: pull fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_toml_is_a_conflict_and_containerd_without_config_path_is_reported() {
    require_real_components!();
    let tmp = support::scratch("conflict");
    let reg = Registry::start(tmp.path(), "registry");
    let spec = hub_mirror(&reg);

    // A hosts.toml someone else wrote: reported, untouched.
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    let cri = CriClient::connect(&ctd.socket).await.expect("connect");
    let target = mirror::target(
        &cri.runtime_info().await.expect("info"),
        Path::new("/"),
        None,
        Path::new("/x"),
        None,
    );
    let certs_d = ctd.certs_d.clone().expect("config_path");
    let theirs = certs_d.join("registry.example.test/hosts.toml");
    std::fs::create_dir_all(theirs.parent().expect("dir")).expect("mkdir");
    std::fs::write(&theirs, "server = \"https://theirs.example\"\n").expect("write");
    let st = mirror::apply("node-1", &target, "example", Some(1), &spec, &[Ok(None)]);
    assert_eq!(st.state, state::CONFLICT, "{st:?}");
    assert_eq!(
        std::fs::read_to_string(&theirs).expect("read"),
        "server = \"https://theirs.example\"\n"
    );
    drop(cri);
    drop(ctd);

    // containerd started without config_path: the node reports the exact line to add.
    let tmp2 = support::scratch("noconfigpath");
    let bare = Containerd::start(tmp2.path(), false, PAUSE);
    let cri = CriClient::connect(&bare.socket).await.expect("connect");
    let info = cri.runtime_info().await.expect("info");
    let target = mirror::target(&info, Path::new("/"), None, Path::new("/x"), None);
    let st = mirror::apply("node-1", &target, "example", Some(1), &spec, &[Ok(None)]);
    assert_eq!(st.state, state::NO_CONFIG_PATH, "{st:?}");
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains(r#"config_path = "/etc/containerd/certs.d""#)
            && msg.contains(r#"[plugins."io.containerd.grpc.v1.cri".registry]"#),
        "{msg}"
    );
}

/// Whole-filesystem fill level in percent, as the agent computes it.
fn fill_percent(path: &Path) -> u8 {
    let (cap, used) = berth_operator::cri::fs_stats(path).expect("statvfs");
    berth_operator::node_agent::gc_plan::FsUsage {
        capacity_bytes: cap,
        used_bytes: used,
    }
    .used_percent()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_pressure_removes_least_recently_used_until_below_the_low_mark() {
    require_real_components!();
    let tmp = support::scratch("pressure");
    // containerd's root on its own small filesystem, so "full" is real and measurable.
    let img = tmp.path().join("root.img");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let ok = |c: &mut Command| c.status().expect("run").success();
    assert!(ok(Command::new("truncate").args(["-s", "96M"]).arg(&img)));
    assert!(ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .arg(&img)));
    assert!(ok(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&root)));

    // Six images, each with its own 5 MiB of incompressible data.
    let tags = [
        "pause", "lru-1", "lru-2", "lru-3", "lru-4", "lru-5", "lru-6",
    ];
    let images = Images::build_with_payload(tmp.path(), &tags, 5 << 20);
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    ctd.import(&images.archive(tmp.path()), BASE);
    let cri = CriClient::connect(&ctd.socket).await.expect("connect");
    let listed = cri.list_images().await.expect("list");
    // lru-1 is the least recently used ... lru-6 the most; lru-1 is also in use by a container now.
    let store = UsageStore::new(tmp.path().join("agent/image-usage.json"));
    let mut record = berth_operator::node_agent::usage::UsageRecord::default();
    let t = now();
    for i in &listed {
        let tag = i.repo_tags.first().cloned().unwrap_or_default();
        let n: i64 = tag
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(99);
        record.images.insert(
            i.id.clone(),
            berth_operator::node_agent::usage::UsageEntry {
                first_seen: t - 86_400,
                last_used: Some(t - 3600 * (10 - n)),
            },
        );
    }
    store.save(&record).expect("seed");
    ctd.run_detached(&format!("{BASE}:lru-1"), "oldest-but-busy");

    let fill = fill_percent(&root);
    let du = Command::new("du")
        .args(["-sm"])
        .arg(&root)
        .arg(tmp.path())
        .output()
        .expect("du");
    let sizes: Vec<u64> = listed.iter().map(|i| i.size).collect();
    assert!(
        fill >= 40,
        "the images fill the small filesystem: {fill}% ({}; CRI sizes {sizes:?})",
        String::from_utf8_lossy(&du.stdout)
    );
    // High mark just below the current fill; low mark a little more than two images' worth lower.
    let (high, low) = (fill - 2, fill - 12);
    let policy = GcPolicy::from_spec(&ImageCachePolicySpec {
        prune: PruneSpec {
            dangling: false,
            unused_for: None,
            keep_latest_per_repository: None,
        },
        disk_pressure: Some(berth_operator::api::image_cache_policy::DiskPressure {
            high_percent: i32::from(high),
            low_percent: i32::from(low),
        }),
        ..Default::default()
    })
    .expect("policy");
    let out = gc::run_pass(&cri, &store, &policy, &NoPods, &opts(false, t))
        .await
        .expect("pass");
    let removed: Vec<String> = out.removed.iter().map(|(p, _)| p.display.clone()).collect();
    assert!(
        out.removed
            .iter()
            .all(|(_, r)| *r == RemoveReason::DiskPressure),
        "{removed:?}"
    );
    assert!(
        !removed.is_empty(),
        "above the high mark ({fill}% > {high}%): something must go"
    );
    // Least recently used first, skipping the busy lru-1: lru-2, lru-3, ... in that order.
    let want: Vec<String> = (2..2 + removed.len())
        .map(|n| format!("{BASE}:lru-{n}"))
        .collect();
    assert_eq!(removed, want, "LRU order, the in-use image skipped");
    let after = fill_percent(&root);
    eprintln!(
        "disk pressure: fill {fill}% (high {high}%, low {low}%) -> {after}% after removing {removed:?}"
    );
    assert!(
        after <= low,
        "the filesystem is at or below the low mark after the pass: {fill}% -> {after}% (low {low}%)"
    );
    let names = ctd.image_names();
    assert!(
        names.contains(&format!("{BASE}:lru-1")) && names.contains(&PAUSE.to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("{BASE}:lru-6")),
        "the most recently used stays: {names:?}"
    );
    drop(cri);
    drop(ctd);
    let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_created_through_cri_keeps_its_image() {
    use berth_operator::cri::pb;
    require_real_components!();
    let tmp = support::scratch("cri-pod");
    let images = Images::build(tmp.path(), &["pause", "app", "spare"]);
    let ctd = Containerd::start(tmp.path(), true, PAUSE);
    ctd.import(&images.archive(tmp.path()), BASE);
    let cri = CriClient::connect(&ctd.socket).await.expect("connect");
    let mut rt = pb::runtime_service_client::RuntimeServiceClient::new(cri.channel());

    // A pod sandbox on the host network (no CNI needed) and one container in it, the way kubelet does it.
    let logs = tmp.path().join("pod-logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let sandbox_config = pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(pb::LinuxPodSandboxConfig {
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    network: pb::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(ctd.dir.join("containerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "RunPodSandbox: {e}\ncontainerd log (last lines, newest first):\n{}",
                tail.join("\n")
            )
        })
        .into_inner()
        .pod_sandbox_id;
    let container = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(pb::ContainerConfig {
                metadata: Some(pb::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(pb::ImageSpec {
                    image: format!("{BASE}:app"),
                    ..Default::default()
                }),
                log_path: "app.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(pb::StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .expect("StartContainer");

    let listed = cri.list_containers().await.expect("ListContainers");
    assert!(
        listed
            .iter()
            .any(|c| c.id == container && c.image_ref.starts_with("sha256:")),
        "{listed:?}"
    );

    let store = UsageStore::new(tmp.path().join("agent/image-usage.json"));
    let policy = GcPolicy::from_spec(&ImageCachePolicySpec {
        prune: PruneSpec {
            dangling: true,
            unused_for: Some("1m".into()),
            keep_latest_per_repository: None,
        },
        ..Default::default()
    })
    .expect("policy");
    gc::run_pass(&cri, &store, &policy, &NoPods, &opts(true, now()))
        .await
        .expect("record");
    let out = gc::run_pass(&cri, &store, &policy, &NoPods, &opts(false, now() + 3600))
        .await
        .expect("prune");
    let removed: Vec<String> = out.removed.iter().map(|(p, _)| p.display.clone()).collect();
    assert_eq!(
        removed,
        vec![format!("{BASE}:spare")],
        "only the unused image goes"
    );
    let names = ctd.image_names();
    assert!(
        names.contains(&format!("{BASE}:app")) && names.contains(&PAUSE.to_string()),
        "{names:?}"
    );

    // Tear down as kubelet would, so no shim outlives the test.
    let _ = rt
        .stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await;
    let _ = rt
        .remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await;
}
