//! `up`, `down` and `status` of the test cluster: starts the control plane, kwok and its nodes, the
//! CSI plugins and sidecars in order, waits for each to be ready, and reports what took how long.
//! Every step is idempotent: `up` on a running cluster checks and starts only what is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, CSIStorageCapacity, StorageClass};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{ClusterConfig, ConfigError, PluginKind};
use crate::csi::{self, Binaries, CsiError, NodeInfo, NodePlugin};
use crate::process::{ProcessError, Supervisor};
use crate::{control_plane, mounts, nodes, pki};

/// Namespace of the harness's own objects (the CSIStorageCapacity objects of the provisioners).
pub const SYSTEM_NAMESPACE: &str = "berth-system";
const FIELD_MANAGER: &str = "berth-e2e";

/// Errors of the cluster lifecycle; each names what failed and, for a process, where its log is.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Node(#[from] nodes::NodeError),
    #[error(transparent)]
    Csi(#[from] CsiError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("{what} not ready after {secs}s{hint}")]
    Timeout {
        what: String,
        secs: u64,
        hint: String,
    },
    #[error("{tool}: {reason}")]
    Tool { tool: String, reason: String },
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Kube { what, source }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Prints progress lines with the time since `up` started.
pub struct Progress {
    start: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Progress {
    pub fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>6.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Upstream binaries, built and cached by `scripts/go-tools.sh`.
#[derive(Debug, Clone)]
pub struct Tools {
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
    pub scheduler: PathBuf,
    pub kwok: PathBuf,
    pub snapshot_crds: PathBuf,
    pub kwok_stages: PathBuf,
    pub csi: Binaries,
}

/// The repository root (where `scripts/go-tools.sh` lives): `BERTH_ROOT`, else this crate's parent.
pub fn repo_root() -> PathBuf {
    std::env::var_os("BERTH_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

fn go_tool(name: &str) -> Result<PathBuf, ClusterError> {
    let script = repo_root().join("scripts/go-tools.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(name)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(io_err(&script))?;
    if !out.status.success() {
        return Err(ClusterError::Tool {
            tool: name.into(),
            reason: format!("{} {name} failed ({})", script.display(), out.status),
        });
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.exists() {
        return Err(ClusterError::Tool {
            tool: name.into(),
            reason: format!(
                "go-tools.sh printed {}, which does not exist",
                path.display()
            ),
        });
    }
    Ok(path)
}

/// The berth-csi binary: `--csi-binary`, `BERTH_CSI_BIN`, or the workspace's debug/release build.
pub fn find_berth_csi(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("BERTH_CSI_BIN") {
        return Ok(PathBuf::from(p));
    }
    find_workspace_binary("berth-csi")
}

/// A binary of this workspace in target/debug or target/release.
pub fn find_workspace_binary(name: &str) -> Result<PathBuf, ClusterError> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(ClusterError::Tool {
        tool: name.into(),
        reason: format!(
            "not found under {}; build it with `cargo build -p {name}`",
            target.display()
        ),
    })
}

/// Builds (first time) and locates every upstream tool the cluster needs.
pub fn resolve_tools(plugin: PluginKind, berth_csi: PathBuf) -> Result<Tools, ClusterError> {
    let script = repo_root().join("scripts/go-tools.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg("cluster")
        .status()
        .map_err(io_err(&script))?;
    if !status.success() {
        return Err(ClusterError::Tool {
            tool: "go-tools.sh cluster".into(),
            reason: format!("exited with {status}"),
        });
    }
    Ok(Tools {
        etcd: go_tool("etcd")?,
        apiserver: go_tool("kube-apiserver")?,
        controller_manager: go_tool("kube-controller-manager")?,
        scheduler: go_tool("kube-scheduler")?,
        kwok: go_tool("kwok")?,
        snapshot_crds: go_tool("snapshot-crds")?,
        kwok_stages: go_tool("kwok-stages")?,
        csi: Binaries {
            berth_csi,
            hostpathplugin: match plugin {
                // HOSTPATHPLUGIN names a peer built elsewhere (the Go module proxy refuses its
                // module here), as for scripts/bench-csi.sh.
                PluginKind::Hostpath => Some(match std::env::var_os("HOSTPATHPLUGIN") {
                    Some(path) => PathBuf::from(path),
                    None => go_tool("hostpathplugin")?,
                }),
                PluginKind::Berth => None,
            },
            provisioner: go_tool("csi-provisioner")?,
            resizer: go_tool("csi-resizer")?,
            snapshotter: go_tool("csi-snapshotter")?,
            snapshot_controller: go_tool("snapshot-controller")?,
        },
    })
}

/// A kube client for the cluster's admin kubeconfig.
pub async fn client(kubeconfig: &Path) -> Result<Client, ClusterError> {
    crate::init_tls();
    let kerr = |reason: String| ClusterError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        reason,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| kerr(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| kerr(e.to_string()))?;
    Client::try_from(config).map_err(|e| kerr(e.to_string()))
}

/// Polls `check` every 200 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    hint: &str,
    mut check: F,
) -> Result<Duration, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(ClusterError::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs(),
                hint: hint.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn etcd_healthy(port: u16) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    matches!(read, Ok(Ok(_))) && String::from_utf8_lossy(&buf).contains("\"health\":\"true\"")
}

/// GET `path` on a component's secure port. Their serving certificates are self-signed, and the
/// health paths need no credentials, so the check skips verification (loopback only).
async fn https_ok(port: u16, path: &str) -> bool {
    crate::init_tls();
    let Ok(uri) = format!("https://127.0.0.1:{port}").parse::<http::Uri>() else {
        return false;
    };
    let mut config = Config::new(uri);
    config.accept_invalid_certs = true;
    config.read_timeout = Some(Duration::from_secs(2));
    let Ok(c) = Client::try_from(config) else {
        return false;
    };
    let Ok(req) = http::Request::get(path).body(Vec::new()) else {
        return false;
    };
    matches!(c.request_text(req).await, Ok(body) if body.trim() == "ok")
}

async fn apiserver_ready(client: &Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
}

fn hint_log(sup: &Supervisor, name: &str) -> String {
    format!(" (see {})", sup.log_path(name).display())
}

/// Options of `up` beyond the cluster config.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub berth_csi: Option<PathBuf>,
    pub timeout: Duration,
}

/// What `up` measured, for the summary and the tests.
#[derive(Debug, Default, Clone)]
pub struct UpReport {
    pub steps: Vec<(String, Duration)>,
    pub started: Vec<String>,
}

/// Brings the cluster up (or completes a partial one). Prints progress as it goes.
pub async fn up(cfg: &ClusterConfig, opts: &UpOptions) -> Result<UpReport, ClusterError> {
    let progress = Progress::default();
    let mut report = UpReport::default();
    let t = opts.timeout;

    for dir in [
        cfg.state_dir.clone(),
        cfg.socket_dir(),
        cfg.state_dir.join("etcd"),
    ] {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    }
    if let Ok(existing) = ClusterConfig::load(&cfg.state_dir)
        && &existing != cfg
    {
        progress.say(
            "note: the cluster config differs from the one in the state dir; using the new one",
        );
    }
    cfg.save()?;

    let berth_csi = match cfg.plugin {
        PluginKind::Berth => find_berth_csi(opts.berth_csi.as_deref())?,
        PluginKind::Hostpath => opts
            .berth_csi
            .clone()
            .unwrap_or_else(|| PathBuf::from("berth-csi")),
    };
    let step = Instant::now();
    progress.say("resolving upstream binaries (scripts/go-tools.sh; a cold build takes long)");
    let plugin = cfg.plugin;
    let tools = tokio::task::spawn_blocking(move || resolve_tools(plugin, berth_csi));
    let tools = tools.await.map_err(|e| ClusterError::Tool {
        tool: "go-tools.sh".into(),
        reason: e.to_string(),
    })??;
    record(&progress, &mut report, "binaries", step);

    let step = Instant::now();
    let (pki_files, made) = pki::ensure(&cfg.pki_dir())?;
    pki::write_kubeconfig(&cfg.kubeconfig(), &cfg.apiserver_url(), &pki_files)?;
    let kwok_cfg = cfg.state_dir.join("kwok.yaml");
    let kwok_text = kwok_config(&tools.kwok_stages)?;
    std::fs::write(&kwok_cfg, kwok_text).map_err(io_err(&kwok_cfg))?;
    record(
        &progress,
        &mut report,
        if made {
            "certificates generated"
        } else {
            "certificates reused"
        },
        step,
    );

    let sup = Supervisor::new(cfg.pid_dir(), cfg.log_dir())?;
    let mut started = Vec::new();
    let mut start = |name: &str, exe: &Path, args: Vec<String>, env: Vec<(String, String)>| {
        start_proc(&sup, &mut started, name, exe, args, env)
    };

    // etcd
    let step = Instant::now();
    start("etcd", &tools.etcd, control_plane::etcd_args(cfg), vec![])?;
    let port = cfg.ports.etcd_client;
    wait_until("etcd", t, &hint_log(&sup, "etcd"), || etcd_healthy(port)).await?;
    record(&progress, &mut report, "etcd ready", step);

    // kube-apiserver
    let step = Instant::now();
    start(
        "kube-apiserver",
        &tools.apiserver,
        control_plane::apiserver_args(cfg, &pki_files),
        vec![],
    )?;
    let kube = client(&cfg.kubeconfig()).await?;
    wait_until(
        "kube-apiserver /readyz",
        t,
        &hint_log(&sup, "kube-apiserver"),
        || apiserver_ready(&kube),
    )
    .await?;
    record(&progress, &mut report, "kube-apiserver ready", step);

    // controller-manager and scheduler
    let step = Instant::now();
    start(
        "kube-controller-manager",
        &tools.controller_manager,
        control_plane::controller_manager_args(cfg, &pki_files),
        vec![],
    )?;
    start(
        "kube-scheduler",
        &tools.scheduler,
        control_plane::scheduler_args(cfg),
        vec![],
    )?;
    let (kcm, sched) = (cfg.ports.controller_manager, cfg.ports.scheduler);
    wait_until(
        "kube-controller-manager /healthz",
        t,
        &hint_log(&sup, "kube-controller-manager"),
        || https_ok(kcm, "/healthz"),
    )
    .await?;
    wait_until(
        "kube-scheduler /healthz",
        t,
        &hint_log(&sup, "kube-scheduler"),
        || https_ok(sched, "/healthz"),
    )
    .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(kube.clone(), "default");
    wait_until(
        "the default ServiceAccount (controller-manager working)",
        t,
        &hint_log(&sup, "kube-controller-manager"),
        || async { matches!(sas.get_opt("default").await, Ok(Some(_))) },
    )
    .await?;
    record(
        &progress,
        &mut report,
        "controller-manager and scheduler ready",
        step,
    );

    // kwok and nodes
    let step = Instant::now();
    start("kwok", &tools.kwok, control_plane::kwok_args(cfg), vec![])?;
    let node_api: Api<Node> = Api::all(kube.clone());
    for n in &cfg.nodes {
        nodes::apply(&node_api, n).await?;
    }
    let want: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
    wait_until(
        &format!("{} simulated nodes Ready", want.len()),
        t,
        &hint_log(&sup, "kwok"),
        || async {
            match node_api.list(&ListParams::default()).await {
                Ok(list) => want.iter().all(|w| {
                    list.items
                        .iter()
                        .any(|n| n.metadata.name.as_deref() == Some(w) && nodes::is_ready(n))
                }),
                Err(_) => false,
            }
        },
    )
    .await?;
    record(
        &progress,
        &mut report,
        &format!("kwok and {} nodes ready", want.len()),
        step,
    );

    // CSI
    let step = Instant::now();
    apply_cluster_objects(&kube, cfg, &tools).await?;
    record(
        &progress,
        &mut report,
        "CSIDrivers, StorageClasses, snapshot CRDs applied",
        step,
    );

    let step = Instant::now();
    for n in &cfg.nodes {
        prepare_local_pool(cfg, &n.name)?;
    }
    for p in &cfg.shared_pools {
        std::fs::create_dir_all(&p.path).map_err(io_err(&p.path))?;
    }
    if cfg.nolinks_pool {
        let (src, mnt) = (cfg.nolinks_source(), cfg.nolinks_mount());
        std::fs::create_dir_all(&src).map_err(io_err(&src))?;
        let exe = find_workspace_binary("nolinkfs")?;
        start(
            "nolinkfs",
            &exe,
            vec![src.display().to_string(), mnt.display().to_string()],
            vec![],
        )?;
        wait_until(
            "nolinkfs mounted",
            Duration::from_secs(20),
            &hint_log(&sup, "nolinkfs"),
            || async { is_mountpoint(&mnt) },
        )
        .await?;
    }
    start_batch(&sup, &mut started, csi::plugin_procs(cfg, &tools.csi))?;
    register_all(&kube, cfg, &sup, t).await?;
    record(
        &progress,
        &mut report,
        "CSI plugins running and registered (CSINode, node labels)",
        step,
    );

    let step = Instant::now();
    let mut sidecars = csi::sidecar_procs(cfg, &tools.csi);
    for p in &mut sidecars {
        p.env
            .push(("NAMESPACE".to_string(), SYSTEM_NAMESPACE.to_string()));
    }
    start_batch(&sup, &mut started, sidecars)?;
    wait_for_capacity(&kube, cfg, &sup, t).await?;
    record(
        &progress,
        &mut report,
        "sidecars running; CSIStorageCapacity published for every node",
        step,
    );

    report.started = started;
    if report.started.is_empty() {
        progress.say("nothing to start: every process was already running");
    } else {
        progress.say(format!("started {} processes", report.started.len()));
    }
    progress.say(format!(
        "cluster up in {:.1}s: export KUBECONFIG={}",
        progress.elapsed().as_secs_f64(),
        cfg.kubeconfig().display()
    ));
    Ok(report)
}

/// kwok's stages, as kwok's own "fast" profile: nodes get Ready and keep a lease; Pods become
/// Ready at once, complete, and are removed when deleted.
pub const KWOK_STAGES: &[&str] = &[
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
];

fn kwok_config(stage_dir: &Path) -> Result<String, ClusterError> {
    // Parallelism is spelled out: a config file without it leaves kwok's defaults at zero.
    let mut text = String::from(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n  \
         nodeLeaseParallelism: 4\n  nodeLeaseDurationSeconds: 40\n  podPlayStageParallelism: 4\n  \
         nodePlayStageParallelism: 4\n  podsOnNodeSyncParallelism: 4\n",
    );
    for s in KWOK_STAGES {
        let path = stage_dir.join(s);
        text.push_str("---\n");
        text.push_str(&std::fs::read_to_string(&path).map_err(io_err(&path))?);
    }
    Ok(text)
}

fn start_proc(
    sup: &Supervisor,
    started: &mut Vec<String>,
    name: &str,
    exe: &Path,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> Result<bool, ClusterError> {
    let (_, new) = sup.ensure_stays_up(name, exe, &args, &env, Duration::from_millis(300))?;
    if new {
        started.push(name.to_string());
    }
    Ok(new)
}

/// Starts a batch of processes and gives them one grace period together (rather than one each), then
/// fails if any of them died in it.
fn start_batch(
    sup: &Supervisor,
    started: &mut Vec<String>,
    procs: Vec<csi::ProcSpec>,
) -> Result<(), ClusterError> {
    let mut new = Vec::new();
    for p in procs {
        let (rec, fresh) = sup.ensure(&p.name, &p.exe, &p.args, &p.env)?;
        if fresh {
            started.push(p.name.clone());
            new.push(rec);
        }
    }
    if !new.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
    }
    for rec in new {
        if !crate::process::alive(&rec) {
            return Err(ProcessError::ExitedEarly {
                name: rec.name,
                log: rec.log,
            }
            .into());
        }
    }
    Ok(())
}

fn record(progress: &Progress, report: &mut UpReport, what: &str, since: Instant) {
    let d = since.elapsed();
    progress.say(format!("{what} ({:.1}s)", d.as_secs_f64()));
    report.steps.push((what.to_string(), d));
}

async fn apply_json<K>(api: &Api<K>, name: &str, obj: serde_json::Value) -> Result<(), ClusterError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(kube_err(format!("applying {name}")))?;
    Ok(())
}

fn name_of(obj: &serde_json::Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// CSIDrivers, StorageClasses, the VolumeSnapshot CRDs and classes, and the system namespace.
async fn apply_cluster_objects(
    kube: &Client,
    cfg: &ClusterConfig,
    tools: &Tools,
) -> Result<(), ClusterError> {
    let ns: Api<Namespace> = Api::all(kube.clone());
    apply_json(
        &ns,
        SYSTEM_NAMESPACE,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}),
    )
    .await?;
    let drivers: Api<CSIDriver> = Api::all(kube.clone());
    for d in csi::csi_drivers(cfg) {
        apply_json(&drivers, &name_of(&d), d).await?;
    }
    let classes: Api<StorageClass> = Api::all(kube.clone());
    for c in csi::storage_classes(cfg) {
        let name = name_of(&c);
        // StorageClass parameters are immutable: an existing class is left as it is.
        if classes
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading StorageClass {name}")))?
            .is_none()
        {
            apply_json(&classes, &name, c).await?;
        }
    }

    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    let mut names = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tools.snapshot_crds)
        .map_err(io_err(&tools.snapshot_crds))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("snapshot.storage.k8s.io_") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(io_err(&f))?;
        let value: serde_json::Value =
            serde_yaml::from_str(&text).map_err(|e| ClusterError::Manifest {
                path: f.clone(),
                reason: e.to_string(),
            })?;
        let name = name_of(&value);
        apply_json(&crds, &name, value).await?;
        names.push(name);
    }
    wait_until(
        "VolumeSnapshot and VolumeGroupSnapshot CRDs Established",
        Duration::from_secs(60),
        "",
        || async {
            let mut all = true;
            for n in &names {
                let est = crds.get_opt(n).await.ok().flatten().is_some_and(|c| {
                    c.status.and_then(|s| s.conditions).is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
                });
                all &= est;
            }
            all
        },
    )
    .await?;
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "volumesnapshotclasses");
    let vsc: Api<DynamicObject> = Api::all_with(kube.clone(), &ar);
    for c in csi::snapshot_classes(cfg.plugin) {
        let name = name_of(&c);
        vsc.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(c),
        )
        .await
        .map_err(kube_err(format!("applying VolumeSnapshotClass {name}")))?;
    }
    Ok(())
}

fn run_tool(cmd: &mut std::process::Command) -> Result<(), ClusterError> {
    let out = cmd.output().map_err(|e| ClusterError::Tool {
        tool: format!("{cmd:?}"),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ClusterError::Tool {
            tool: format!("{cmd:?}"),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn is_mountpoint(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| mounts::mounts_under(&info, path).iter().any(|m| m == path))
        .unwrap_or(false)
}

/// A node's local pool: a plain directory, or (with a configured size) a filesystem image mounted
/// through a loop device, so each node has its own real capacity. The loop device is set to clear
/// itself when the filesystem is unmounted, which `down` does.
fn prepare_local_pool(cfg: &ClusterConfig, node: &str) -> Result<(), ClusterError> {
    let pool = cfg.local_pool(node);
    std::fs::create_dir_all(&pool).map_err(io_err(&pool))?;
    let Some(&size) = cfg.pool_sizes.get(node) else {
        return Ok(());
    };
    if is_mountpoint(&pool) {
        return Ok(());
    }
    let images = cfg.state_dir.join("pools/images");
    std::fs::create_dir_all(&images).map_err(io_err(&images))?;
    let img = images.join(format!("{node}.img"));
    if !img.exists() {
        let f = std::fs::File::create(&img).map_err(io_err(&img))?;
        f.set_len(size).map_err(io_err(&img))?;
        let mut mkfs = std::process::Command::new(format!("mkfs.{}", cfg.pool_fs));
        match cfg.pool_fs.as_str() {
            "btrfs" | "xfs" => mkfs.arg("-q").arg("-f"),
            _ => mkfs.arg("-q").arg("-F"),
        };
        run_tool(mkfs.arg(&img))?;
    }
    run_tool(
        std::process::Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&img)
            .arg(&pool),
    )
}

/// Registers every node plugin (the node-driver-registrar + kubelet role), all nodes in parallel.
async fn register_all(
    kube: &Client,
    cfg: &ClusterConfig,
    sup: &Supervisor,
    timeout: Duration,
) -> Result<(), ClusterError> {
    let plugins = csi::node_plugins(cfg);
    let infos = join_all(plugins.iter().map(|p| async move {
        let deadline = Instant::now() + timeout;
        loop {
            match csi::node_info(p).await {
                Ok(info) => return Ok((p.clone(), info)),
                Err(e) if Instant::now() > deadline => {
                    let proc_name = plugin_proc_name(cfg, p);
                    return Err(ClusterError::Timeout {
                        what: format!("{} on {} ({e})", p.driver, p.node),
                        secs: timeout.as_secs(),
                        hint: hint_log(sup, &proc_name),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }))
    .await;
    let mut per_node: BTreeMap<String, Vec<(String, NodeInfo)>> = BTreeMap::new();
    for r in infos {
        let (p, info): (NodePlugin, NodeInfo) = r?;
        per_node
            .entry(p.node.clone())
            .or_default()
            .push((p.driver, info));
    }
    let results = join_all(
        per_node
            .iter()
            .map(|(node, drivers)| csi::register_node(kube, node, drivers)),
    )
    .await;
    for r in results {
        r?;
    }
    Ok(())
}

fn plugin_proc_name(cfg: &ClusterConfig, p: &NodePlugin) -> String {
    match (cfg.plugin, p.driver.as_str()) {
        (PluginKind::Hostpath, _) => format!("csi-hostpath-{}", p.node),
        (_, csi::SHARED_DRIVER) => format!("csi-shared-{}", p.node),
        _ => format!("csi-local-{}", p.node),
    }
}

/// The local StorageClass of the configured plugin.
pub fn local_class(cfg: &ClusterConfig) -> &'static str {
    match cfg.plugin {
        PluginKind::Berth => csi::LOCAL_CLASS,
        PluginKind::Hostpath => csi::HOSTPATH_CLASS,
    }
}

/// Waits until every node has a CSIStorageCapacity object for the local class: proof that each
/// node's provisioner runs and reaches its plugin.
async fn wait_for_capacity(
    kube: &Client,
    cfg: &ClusterConfig,
    sup: &Supervisor,
    timeout: Duration,
) -> Result<(), ClusterError> {
    let caps: Api<CSIStorageCapacity> = Api::all(kube.clone());
    let class = local_class(cfg);
    let first = cfg
        .nodes
        .first()
        .map(|n| format!("provisioner-local-{}", n.name))
        .unwrap_or_default();
    wait_until(
        &format!("CSIStorageCapacity for {class} on every node"),
        timeout,
        &hint_log(sup, &first),
        || async {
            let Ok(list) = caps.list(&ListParams::default()).await else {
                return false;
            };
            let with_class = list
                .items
                .iter()
                .filter(|c| c.storage_class_name == class)
                .count();
            with_class >= cfg.nodes.len()
        },
    )
    .await?;
    Ok(())
}

/// Stops every process of the state dir (newest first) and unmounts everything under it.
/// With `purge`, also deletes the state dir. Works on a half-started or crashed cluster.
pub fn down(state_dir: &Path, purge: bool) -> Result<(), ClusterError> {
    let progress = Progress::default();
    let sup = Supervisor::new(state_dir.join("pids"), state_dir.join("logs"))?;
    let stopped = sup.stop_all(|_| true, Duration::from_secs(10));
    progress.say(format!(
        "stopped {} processes{}",
        stopped.len(),
        if stopped.is_empty() {
            String::new()
        } else {
            format!(": {}", stopped.join(", "))
        }
    ));
    let unmounted = mounts::unmount_all_under(state_dir)?;
    if !unmounted.is_empty() {
        progress.say(format!("unmounted {} mounts", unmounted.len()));
    }
    if purge {
        match std::fs::remove_dir_all(state_dir) {
            Ok(()) => progress.say(format!("removed {}", state_dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(state_dir)(e)),
        }
    }
    Ok(())
}

/// Prints processes, nodes and CSI registration. Returns false if anything is down.
pub async fn status(state_dir: &Path) -> Result<bool, ClusterError> {
    let cfg = ClusterConfig::load(state_dir)?;
    let sup = Supervisor::new(cfg.pid_dir(), cfg.log_dir())?;
    let mut healthy = true;
    let st = sup.status();
    if st.is_empty() {
        println!("no processes recorded in {}", cfg.pid_dir().display());
        return Ok(false);
    }
    for (name, (rec, up)) in &st {
        println!(
            "{:<32} {:<8} pid {}",
            name,
            if *up { "running" } else { "DEAD" },
            rec.pid
        );
        healthy &= *up;
    }
    let kube = client(&cfg.kubeconfig()).await?;
    if !apiserver_ready(&kube).await {
        println!("kube-apiserver: not ready");
        return Ok(false);
    }
    let node_list = Api::<Node>::all(kube.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing nodes"))?;
    let ready = node_list
        .items
        .iter()
        .filter(|n| nodes::is_ready(n))
        .count();
    println!("nodes: {ready}/{} Ready", node_list.items.len());
    healthy &= ready == cfg.nodes.len();
    let csinodes = Api::<CSINode>::all(kube.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing CSINodes"))?;
    for c in &csinodes.items {
        let drivers: Vec<String> = c
            .spec
            .drivers
            .iter()
            .map(|d| {
                format!(
                    "{}(id={}, keys={})",
                    d.name,
                    d.node_id,
                    d.topology_keys.clone().unwrap_or_default().join("+")
                )
            })
            .collect();
        println!(
            "csinode {}: {}",
            c.metadata.name.as_deref().unwrap_or("?"),
            drivers.join(", ")
        );
    }
    let caps = Api::<CSIStorageCapacity>::all(kube.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing CSIStorageCapacity"))?;
    println!("CSIStorageCapacity objects: {}", caps.items.len());
    println!("export KUBECONFIG={}", cfg.kubeconfig().display());
    Ok(healthy)
}
