//! Shared by the operator's tests against a real kube-apiserver: the client from `BERTH_KUBECONFIG` (the
//! e2e harness writes it), CRD installation, namespaces and waiting.

#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

/// The kubeconfig path, or `None` (with the reason printed) when the tests must be skipped.
pub fn kubeconfig() -> Option<String> {
    match std::env::var("BERTH_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!(
                "SKIPPED: BERTH_KUBECONFIG is not set; scripts/test.d/20-operator.sh brings up the e2e \
                 cluster and sets it"
            );
            None
        }
    }
}

/// A client for the kubeconfig.
pub async fn client(path: &str) -> Client {
    let kc = Kubeconfig::read_from(path).expect("reading BERTH_KUBECONFIG");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(cfg).expect("client")
}

/// Applies the committed CRD files (what `kubectl apply -f crds/` does) and waits until they are served.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for entry in std::fs::read_dir(&dir).expect("crds/") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        let mut body = serde_json::to_value(&crd).unwrap();
        body["apiVersion"] = json!("apiextensions.k8s.io/v1");
        body["kind"] = json!("CustomResourceDefinition");
        api.patch(
            &name,
            &PatchParams::apply("berth-test").force(),
            &Patch::Apply(body),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refused {}: {e}", path.display()));
        wait_for(
            &format!("CRD {name} Established"),
            Duration::from_secs(30),
            || async {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            },
        )
        .await;
    }
}

/// Creates a fresh namespace (deleting a leftover first).
pub async fn fresh_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await.unwrap().is_some() {
        let _ = api.delete(name, &DeleteParams::default()).await;
        wait_for(
            &format!("old namespace {name} gone"),
            Duration::from_secs(120),
            || async { matches!(api.get_opt(name).await, Ok(None)) },
        )
        .await;
    }
    api.patch(
        name,
        &PatchParams::apply("berth-test"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
    )
    .await
    .unwrap();
}

/// Creates a namespace with a unique name (`prefix-<suffix>`): a bare API server has no namespace
/// controller, so a deleted namespace never goes away and names are not reused between runs.
pub async fn unique_namespace(client: &Client, prefix: &str) -> String {
    let suffix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    let name = format!("{prefix}-{suffix}");
    fresh_namespace(client, &name).await;
    name
}

/// Deletes a namespace (best effort).
pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Polls `ok` every 200 ms until it is true; panics after `timeout`. Returns the time it took.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut ok: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !ok().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("  {what}: {:?}", start.elapsed());
    start.elapsed()
}
