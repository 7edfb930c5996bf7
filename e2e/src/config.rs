//! What a test cluster looks like: ports, simulated nodes and their labels, pools, and which CSI plugin
//! runs behind the sidecars. Saved as `cluster.json` in the state dir so `status`, `down` and the tests
//! see exactly what `up` built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors in the harness configuration given on the command line or read from the state dir.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--node-label {0:?}: expected NODE:KEY=VALUE")]
    NodeLabelSyntax(String),
    #[error("--node-label {spec:?}: node {node:?} is not one of the {count} simulated nodes")]
    UnknownNode {
        spec: String,
        node: String,
        count: usize,
    },
    #[error("--label {0:?}: expected KEY=VALUE")]
    LabelSyntax(String),
    #[error("--nodes must be between 1 and 200, got {0}")]
    NodeCount(usize),
    #[error("{flag} {value:?}: expected a size such as 512M, 2G or a byte count")]
    Size { flag: &'static str, value: String },
    #[error("--pool-fs {0:?}: expected btrfs, ext4 or xfs")]
    PoolFs(String),
    #[error("--shared-pool {0:?}: expected NAME (a DNS label)")]
    PoolName(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a cluster config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Which CSI plugin the harness wires behind the sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// Berth's own driver (`berth-csi`): local.csi.berth.dev and shared.csi.berth.dev.
    Berth,
    /// csi-driver-host-path's `hostpathplugin` as `hostpath.csi.k8s.io`, the benchmark peer (local only).
    Hostpath,
}

/// Ports on 127.0.0.1, all derived from one base so two clusters never collide when bases differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
    pub kwok: u16,
}

impl Ports {
    pub fn from_base(base: u16) -> Self {
        Self {
            etcd_client: base,
            etcd_peer: base + 1,
            apiserver: base + 2,
            controller_manager: base + 3,
            scheduler: base + 4,
            kwok: base + 5,
        }
    }
}

/// One simulated node and the labels it carries besides the standard ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A shared pool: a directory every simulated node sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPool {
    pub name: String,
    pub path: PathBuf,
}

/// The whole cluster description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub state_dir: PathBuf,
    pub ports: Ports,
    pub nodes: Vec<NodeSpec>,
    pub plugin: PluginKind,
    /// Node label keys the local driver copies into its topology (besides its node key).
    pub topology_labels: Vec<String>,
    pub shared_pools: Vec<SharedPool>,
    /// How often csi-provisioner refreshes CSIStorageCapacity objects.
    pub capacity_poll_seconds: u32,
    /// Per node, the size in bytes of a loop-mounted filesystem image backing its local pool (so
    /// capacity is real and differs between nodes). A node not listed gets a plain directory.
    #[serde(default)]
    pub pool_sizes: BTreeMap<String, u64>,
    /// The filesystem of those images: btrfs, ext4 or xfs.
    #[serde(default = "default_pool_fs")]
    pub pool_fs: String,
    /// Also run a shared pool `nolinks` on nolinkfs (FUSE, refuses hard links), for the
    /// capability-refusal tests.
    #[serde(default)]
    pub nolinks_pool: bool,
}

/// The name of the shared pool served through nolinkfs.
pub const NOLINKS_POOL: &str = "nolinks";

fn default_pool_fs() -> String {
    "btrfs".into()
}

/// The label key, present on every node, that a test can use for spreading and placement.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

impl ClusterConfig {
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("cluster.json")
    }

    pub fn load(state_dir: &Path) -> Result<Self, ConfigError> {
        let path = Self::file(state_dir);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path, source })
    }

    pub fn save(&self) -> Result<(), ConfigError> {
        let path = Self::file(&self.state_dir);
        let text = serde_json::to_string_pretty(self).expect("config serializes");
        std::fs::write(&path, text).map_err(|source| ConfigError::Write { path, source })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.state_dir.join("kubeconfig")
    }
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
    pub fn pid_dir(&self) -> PathBuf {
        self.state_dir.join("pids")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.state_dir.join("sockets")
    }
    /// The local pool directory of one node.
    pub fn local_pool(&self, node: &str) -> PathBuf {
        self.state_dir.join("pools").join("local").join(node)
    }
    /// Where nolinkfs mounts the `nolinks` pool, and the directory it mirrors.
    pub fn nolinks_mount(&self) -> PathBuf {
        self.state_dir.join("pools/shared").join(NOLINKS_POOL)
    }
    pub fn nolinks_source(&self) -> PathBuf {
        self.state_dir.join("pools/shared/nolinks-source")
    }
    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }
}

/// Builds the node list: `count` nodes named `node-1`.., each with a zone label (two zones, alternating,
/// so spreading and topology tests have something to work with), plus `--label` for all and
/// `--node-label NODE:KEY=VALUE` for one.
pub fn build_nodes(
    count: usize,
    all_labels: &[String],
    node_labels: &[String],
) -> Result<Vec<NodeSpec>, ConfigError> {
    if count == 0 || count > 200 {
        return Err(ConfigError::NodeCount(count));
    }
    let common = all_labels
        .iter()
        .map(|l| parse_label(l).ok_or_else(|| ConfigError::LabelSyntax(l.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes: Vec<NodeSpec> = (1..=count)
        .map(|i| {
            let mut labels = BTreeMap::new();
            let zone = if i % 2 == 1 { "zone-a" } else { "zone-b" };
            labels.insert(ZONE_LABEL.to_string(), zone.to_string());
            for (k, v) in &common {
                labels.insert(k.clone(), v.clone());
            }
            NodeSpec {
                name: format!("node-{i}"),
                labels,
            }
        })
        .collect();
    for spec in node_labels {
        let (node, label) = spec
            .split_once(':')
            .ok_or_else(|| ConfigError::NodeLabelSyntax(spec.clone()))?;
        let (k, v) =
            parse_label(label).ok_or_else(|| ConfigError::NodeLabelSyntax(spec.clone()))?;
        let target =
            nodes
                .iter_mut()
                .find(|n| n.name == node)
                .ok_or_else(|| ConfigError::UnknownNode {
                    spec: spec.clone(),
                    node: node.to_string(),
                    count,
                })?;
        target.labels.insert(k, v);
    }
    Ok(nodes)
}

fn parse_label(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    if k.is_empty() || k.contains(char::is_whitespace) || v.contains(char::is_whitespace) {
        return None;
    }
    Some((k.to_string(), v.to_string()))
}

/// Parses a size with an optional binary suffix (K, M, G, T; `Ki`/`Mi`/... and `B` are accepted too).
pub fn parse_size(flag: &'static str, raw: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::Size {
        flag,
        value: raw.to_string(),
    };
    let t = raw.trim().trim_end_matches('B').trim_end_matches('i');
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'M')) => (&t[..i], 1 << 20),
        Some((i, 'G')) => (&t[..i], 1 << 30),
        Some((i, 'T')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(mult).filter(|b| *b > 0).ok_or_else(err)
}

/// Per-node pool sizes from `--pool-size` (every node) and `--node-pool-size NODE=SIZE`.
pub fn build_pool_sizes(
    nodes: &[NodeSpec],
    all: Option<&str>,
    per_node: &[String],
) -> Result<BTreeMap<String, u64>, ConfigError> {
    let mut out = BTreeMap::new();
    if let Some(raw) = all {
        let size = parse_size("--pool-size", raw)?;
        for n in nodes {
            out.insert(n.name.clone(), size);
        }
    }
    for spec in per_node {
        let (node, raw) = spec.split_once('=').ok_or_else(|| ConfigError::Size {
            flag: "--node-pool-size",
            value: spec.clone(),
        })?;
        if !nodes.iter().any(|n| n.name == node) {
            return Err(ConfigError::UnknownNode {
                spec: spec.clone(),
                node: node.to_string(),
                count: nodes.len(),
            });
        }
        out.insert(node.to_string(), parse_size("--node-pool-size", raw)?);
    }
    Ok(out)
}

/// Checks the pool image filesystem name.
pub fn check_pool_fs(fs: &str) -> Result<(), ConfigError> {
    match fs {
        "btrfs" | "ext4" | "xfs" => Ok(()),
        other => Err(ConfigError::PoolFs(other.to_string())),
    }
}

/// Validates a shared pool name: it becomes part of a topology key (`shared.berth.dev/<name>`).
pub fn check_pool_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::PoolName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_alternating_zones_and_their_own_labels() {
        let nodes = build_nodes(
            3,
            &["tier=db".into()],
            &["node-2:rack=r2".into(), "node-3:db=replica".into()],
        )
        .unwrap();
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node-1", "node-2", "node-3"]);
        assert_eq!(nodes[0].labels[ZONE_LABEL], "zone-a");
        assert_eq!(nodes[1].labels[ZONE_LABEL], "zone-b");
        assert_eq!(nodes[1].labels["rack"], "r2");
        assert!(!nodes[0].labels.contains_key("rack"));
        assert_eq!(nodes[2].labels["db"], "replica");
        assert!(nodes.iter().all(|n| n.labels["tier"] == "db"));
    }

    #[test]
    fn bad_label_specs_are_refused_with_the_spec_named() {
        let cases: &[(&[&str], &[&str], &str)] = &[
            (&[], &["node-1"], "expected NODE:KEY=VALUE"),
            (&[], &["node-1:rack"], "expected NODE:KEY=VALUE"),
            (
                &[],
                &["node-9:rack=a"],
                "node \"node-9\" is not one of the 2",
            ),
            (&["nolabel"], &[], "expected KEY=VALUE"),
            (&["a=b c"], &[], "expected KEY=VALUE"),
        ];
        for (all, per_node, want) in cases {
            let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
            let per: Vec<String> = per_node.iter().map(|s| s.to_string()).collect();
            let err = build_nodes(2, &all, &per).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn node_count_is_bounded() {
        assert!(build_nodes(0, &[], &[]).is_err());
        assert!(build_nodes(201, &[], &[]).is_err());
        assert_eq!(build_nodes(10, &[], &[]).unwrap().len(), 10);
    }

    #[test]
    fn pool_names_must_be_dns_labels() {
        for ok in ["default", "nolinks", "a-1"] {
            assert!(check_pool_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Upper", "a/b", &"x".repeat(64)] {
            assert!(check_pool_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        let cases = [
            ("512M", Some(512u64 << 20)),
            ("2G", Some(2 << 30)),
            ("1Gi", Some(1 << 30)),
            ("160MiB", Some(160 << 20)),
            ("4096", Some(4096)),
            ("0", None),
            ("M", None),
            ("12X", None),
            ("-1G", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_size("--pool-size", raw).ok(), want, "{raw}");
        }
    }

    #[test]
    fn pool_sizes_apply_to_all_then_per_node() {
        let nodes = build_nodes(3, &[], &[]).unwrap();
        let sizes = build_pool_sizes(&nodes, Some("512M"), &["node-3=160M".into()]).unwrap();
        assert_eq!(sizes["node-1"], 512 << 20);
        assert_eq!(sizes["node-3"], 160 << 20);
        assert!(build_pool_sizes(&nodes, None, &[]).unwrap().is_empty());
        assert!(build_pool_sizes(&nodes, None, &["node-7=1G".into()]).is_err());
        assert!(build_pool_sizes(&nodes, None, &["node-1".into()]).is_err());
        assert!(check_pool_fs("btrfs").is_ok());
        assert!(check_pool_fs("vfat").is_err());
    }

    #[test]
    fn ports_follow_the_base() {
        let p = Ports::from_base(40000);
        assert_eq!(p.etcd_client, 40000);
        assert_eq!(p.apiserver, 40002);
        assert_eq!(p.kwok, 40005);
    }
}
