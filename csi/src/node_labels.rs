//! The node's labels, for the topology labels the driver copies: from the API server when one is
//! configured (in-cluster or `--kubeconfig`), else from `--node-labels`.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, Config};

/// Parses `k=v,k2=v2`.
pub fn parse(raw: &str) -> anyhow::Result<BTreeMap<String, String>> {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--node-labels entry {pair:?} is not key=value"))?;
            anyhow::ensure!(
                !k.is_empty(),
                "--node-labels entry {pair:?} has an empty key"
            );
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Reads node `name`'s labels from the API server.
pub async fn from_api_server(
    name: &str,
    kubeconfig: Option<&Path>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => Config::incluster()?,
    };
    let client = Client::try_from(config)?;
    let node = Api::<Node>::all(client).get(name).await?;
    Ok(node.metadata.labels.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_label_lists() {
        let m = parse("topology.kubernetes.io/zone=a, rack=r1,").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["rack"], "r1");
        assert!(parse("novalue").is_err());
        assert!(parse("=v").is_err());
        assert!(parse("").unwrap().is_empty());
    }
}
