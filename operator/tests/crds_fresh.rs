//! The CRDs as users meet them: `crds/` is exactly what the Rust types generate (never edited by hand),
//! every field has a description (`kubectl explain`), and every CEL rule has a message. Regenerate with
//! `BERTH_UPDATE_CRDS=1 cargo test -p berth-operator --test crds_fresh` (or `berth-operator crds --write crds`).

use berth_operator::crdgen::{crds, file_name, render};

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let update = std::env::var_os("BERTH_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for crd in crds() {
        let (file, yaml) = (file_name(&crd), render(&crd).expect("CRD renders"));
        let path = dir.join(&file);
        if update {
            std::fs::create_dir_all(&dir).expect("create crds/");
            std::fs::write(&path, &yaml).expect("write CRD");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == yaml => {}
            _ => stale.push(file),
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is stale for {stale:?}: run BERTH_UPDATE_CRDS=1 cargo test -p berth-operator --test crds_fresh"
    );
}

#[test]
fn every_field_is_documented_and_validations_carry_messages() {
    for crd in crds() {
        let (file, yaml) = (file_name(&crd), render(&crd).expect("CRD renders"));
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("CRD is YAML");
        let schema = &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut undocumented = Vec::new();
        let mut unmessaged = Vec::new();
        walk(schema, "spec", &mut undocumented, &mut unmessaged);
        assert!(
            undocumented.is_empty(),
            "{file}: fields without a description: {undocumented:?}"
        );
        assert!(
            unmessaged.is_empty(),
            "{file}: CEL rules without a message: {unmessaged:?}"
        );
    }
}

fn walk(
    v: &serde_yaml::Value,
    path: &str,
    undocumented: &mut Vec<String>,
    unmessaged: &mut Vec<String>,
) {
    if let Some(rules) = v
        .get("x-kubernetes-validations")
        .and_then(|r| r.as_sequence())
    {
        for r in rules {
            let msg = r.get("message").and_then(|m| m.as_str()).unwrap_or("");
            if msg.is_empty() {
                unmessaged.push(path.to_owned());
            }
        }
    }
    if let Some(props) = v.get("properties").and_then(|p| p.as_mapping()) {
        for (k, child) in props {
            let key = k.as_str().unwrap_or("?");
            let child_path = format!("{path}.{key}");
            if child
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("")
                .is_empty()
            {
                undocumented.push(child_path.clone());
            }
            walk(child, &child_path, undocumented, unmessaged);
        }
    }
    if let Some(items) = v.get("items") {
        walk(items, &format!("{path}[]"), undocumented, unmessaged);
    }
}
