//! Topology segments: what a node reports in NodeGetInfo and a volume carries as accessible
//! topology, and whether a CreateVolume's accessibility requirements allow this node.

use std::collections::{BTreeMap, HashMap};

use crate::proto::TopologyRequirement;

/// The segment that pins a local volume to its node.
pub const NODE_KEY: &str = "topology.berth.dev/node";

/// The segment that every node mounting shared pool `pool` carries.
pub fn shared_pool_key(pool: &str) -> String {
    format!("shared.berth.dev/{pool}")
}

pub type Segments = BTreeMap<String, String>;

/// A local node's segments: the node key, plus each label in `copy` that the node has.
pub fn local_segments(
    node_id: &str,
    labels: &BTreeMap<String, String>,
    copy: &[String],
) -> Segments {
    let mut seg = Segments::new();
    seg.insert(NODE_KEY.to_string(), node_id.to_string());
    for key in copy {
        if let Some(v) = labels.get(key) {
            seg.insert(key.clone(), v.clone());
        }
    }
    seg
}

/// Whether `topology` (one term of a requirement) admits a volume with segments `ours`: the two
/// share at least one key and agree on every key they share.
fn admits(topology: &HashMap<String, String>, ours: &Segments) -> bool {
    let mut shared = 0;
    for (k, v) in topology {
        if let Some(mine) = ours.get(k) {
            if mine != v {
                return false;
            }
            shared += 1;
        }
    }
    shared > 0
}

/// Whether a volume with segments `ours` satisfies `req`: any requisite term admits it (no requisite
/// means anywhere). Preferred terms only order choices, and a node-local volume has one choice.
pub fn satisfies(req: Option<&TopologyRequirement>, ours: &Segments) -> bool {
    match req {
        None => true,
        Some(r) if r.requisite.is_empty() => true,
        Some(r) => r.requisite.iter().any(|t| admits(&t.segments, ours)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Topology;

    fn topo(pairs: &[(&str, &str)]) -> Topology {
        Topology {
            segments: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn local_segments_copy_only_requested_labels() {
        let labels: BTreeMap<String, String> = [("zone", "a"), ("rack", "r1"), ("other", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let seg = local_segments("n1", &labels, &["zone".into(), "missing".into()]);
        assert_eq!(seg.len(), 2);
        assert_eq!(seg[NODE_KEY], "n1");
        assert_eq!(seg["zone"], "a");
    }

    #[test]
    fn requirements_table() {
        let ours = local_segments(
            "n1",
            &[("zone".to_string(), "a".to_string())]
                .into_iter()
                .collect(),
            &["zone".into()],
        );
        let table: Vec<(Option<TopologyRequirement>, bool)> = vec![
            (None, true),
            (
                Some(TopologyRequirement {
                    requisite: vec![],
                    preferred: vec![topo(&[(NODE_KEY, "n2")])],
                }),
                true,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![topo(&[(NODE_KEY, "n1")])],
                    preferred: vec![],
                }),
                true,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![topo(&[(NODE_KEY, "n2")])],
                    preferred: vec![],
                }),
                false,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![
                        topo(&[(NODE_KEY, "n2")]),
                        topo(&[(NODE_KEY, "n1"), ("zone", "a")]),
                    ],
                    preferred: vec![],
                }),
                true,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![topo(&[(NODE_KEY, "n1"), ("zone", "b")])],
                    preferred: vec![],
                }),
                false,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![topo(&[("zone", "a")])],
                    preferred: vec![],
                }),
                true,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![topo(&[("unrelated", "x")])],
                    preferred: vec![],
                }),
                false,
            ),
        ];
        for (i, (req, want)) in table.into_iter().enumerate() {
            assert_eq!(satisfies(req.as_ref(), &ours), want, "row {i}");
        }
    }

    #[test]
    fn shared_pool_terms_match_nodes_with_more_pools() {
        let ours: Segments = [(shared_pool_key("main"), "true".to_string())]
            .into_iter()
            .collect();
        let term = topo(&[
            ("shared.berth.dev/main", "true"),
            ("shared.berth.dev/fast", "true"),
        ]);
        let req = TopologyRequirement {
            requisite: vec![term],
            preferred: vec![],
        };
        assert!(satisfies(Some(&req), &ours));
    }
}
