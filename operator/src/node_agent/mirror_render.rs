//! Renders a `RegistryMirror` as the runtime's registry configuration: containerd's `hosts.toml` and
//! CRI-O's `registries.conf.d` drop-in. Pure text generation; files are written by `mirror_files`.

use crate::api::registry_mirror::{Mirror, RegistryMirrorSpec};

/// The first line of every file Berth writes. A file without it is someone else's and is never touched.
pub const OWNER_MARKER: &str = "# Managed by Berth (berth.dev RegistryMirror):";

/// Why a mirror cannot be rendered for a runtime.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error(
        "RegistryMirror {name}: spec.mirrors[{index}].url {url:?} is not an http:// or https:// URL"
    )]
    BadUrl {
        name: String,
        index: usize,
        url: String,
    },
    #[error(
        "RegistryMirror {name}: CRI-O has no catch-all registry section, so spec.registry `_default` cannot be applied there"
    )]
    CrioDefault { name: String },
}

/// The file name of the CA bundle written beside `hosts.toml` for mirror `index`.
pub fn ca_file_name(index: usize) -> String {
    format!("berth-mirror-{index}-ca.crt")
}

/// The upstream server for a registry when the spec does not name one.
fn default_server(registry: &str) -> Option<String> {
    match registry {
        "_default" => None,
        // Docker Hub's registry API is not served at docker.io itself.
        "docker.io" => Some("https://registry-1.docker.io".to_owned()),
        host => Some(format!("https://{host}")),
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn check_url(name: &str, index: usize, m: &Mirror) -> Result<(), RenderError> {
    let ok = (m.url.starts_with("http://") || m.url.starts_with("https://"))
        && m.url
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !m.url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(RenderError::BadUrl {
            name: name.to_owned(),
            index,
            url: m.url.clone(),
        })
    }
}

/// containerd's `hosts.toml` for `<config_path>/<registry>/`. `ca_paths[i]` is the absolute path the CA
/// bundle of mirror `i` is written to, when it has one.
pub fn containerd_hosts_toml(
    name: &str,
    generation: Option<i64>,
    spec: &RegistryMirrorSpec,
    ca_paths: &[Option<String>],
) -> Result<String, RenderError> {
    let mut s = String::new();
    s.push_str(&format!("{OWNER_MARKER} {name}\n"));
    s.push_str(&format!(
        "# generation {}. Edits are overwritten; delete the RegistryMirror to remove this file.\n",
        generation.unwrap_or(0)
    ));
    if let Some(server) = spec
        .server
        .clone()
        .or_else(|| default_server(&spec.registry))
    {
        s.push_str(&format!("server = {}\n", toml_str(&server)));
    }
    for (i, m) in spec.mirrors.iter().enumerate() {
        check_url(name, i, m)?;
        s.push_str(&format!(
            "\n[host.{}]\n",
            toml_str(m.url.trim_end_matches('/'))
        ));
        let caps: Vec<&str> = if m.capabilities.is_empty() {
            vec!["pull", "resolve"]
        } else {
            m.capabilities.iter().map(String::as_str).collect()
        };
        let caps: Vec<String> = caps.iter().map(|c| toml_str(c)).collect();
        s.push_str(&format!("  capabilities = [{}]\n", caps.join(", ")));
        if m.skip_verify == Some(true) {
            s.push_str("  skip_verify = true\n");
        }
        if let Some(Some(ca)) = ca_paths.get(i) {
            s.push_str(&format!("  ca = {}\n", toml_str(ca)));
        }
        if m.override_path == Some(true) {
            s.push_str("  override_path = true\n");
        }
    }
    Ok(s)
}

/// The file name of the CRI-O drop-in for a RegistryMirror.
pub fn crio_dropin_name(name: &str) -> String {
    format!("50-berth-{name}.conf")
}

/// A CRI-O `registries.conf.d` drop-in (containers-registries.conf(5), v2 format).
pub fn crio_dropin(
    name: &str,
    generation: Option<i64>,
    spec: &RegistryMirrorSpec,
) -> Result<String, RenderError> {
    if spec.registry == "_default" {
        return Err(RenderError::CrioDefault {
            name: name.to_owned(),
        });
    }
    // CRI-O locations carry no scheme: plain HTTP (and skipVerify) is `insecure = true`.
    let location = |url: &str| {
        url.split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(url)
            .trim_end_matches('/')
            .to_owned()
    };
    let mut s = String::new();
    s.push_str(&format!("{OWNER_MARKER} {name}\n"));
    s.push_str(&format!("# generation {}\n", generation.unwrap_or(0)));
    s.push_str("[[registry]]\n");
    s.push_str(&format!("prefix = {}\n", toml_str(&spec.registry)));
    match &spec.server {
        Some(server) => {
            s.push_str(&format!("location = {}\n", toml_str(&location(server))));
            if server.starts_with("http://") {
                s.push_str("insecure = true\n");
            }
        }
        None => s.push_str(&format!("location = {}\n", toml_str(&spec.registry))),
    }
    for (i, m) in spec.mirrors.iter().enumerate() {
        check_url(name, i, m)?;
        s.push_str("\n[[registry.mirror]]\n");
        s.push_str(&format!("location = {}\n", toml_str(&location(&m.url))));
        if m.url.starts_with("http://") || m.skip_verify == Some(true) {
            s.push_str("insecure = true\n");
        }
        // A mirror that may not resolve tags is only used for pulls by digest.
        if !m.capabilities.is_empty() && !m.capabilities.iter().any(|c| c == "resolve") {
            s.push_str("pull-from-mirror = \"digest-only\"\n");
        }
    }
    Ok(s)
}

/// Whether file content was written by Berth.
pub fn is_berth_owned(content: &str) -> bool {
    content.starts_with(OWNER_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry_mirror::SecretKeyRef;

    fn mirror(url: &str) -> Mirror {
        Mirror {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn containerd_docker_hub_through_plain_http_mirror() {
        let spec = RegistryMirrorSpec {
            registry: "docker.io".into(),
            mirrors: vec![mirror("http://10.0.0.5:5000/")],
            ..Default::default()
        };
        let got = containerd_hosts_toml("hub", Some(3), &spec, &[]).expect("renders");
        let want = "# Managed by Berth (berth.dev RegistryMirror): hub\n\
# generation 3. Edits are overwritten; delete the RegistryMirror to remove this file.\n\
server = \"https://registry-1.docker.io\"\n\
\n\
[host.\"http://10.0.0.5:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n";
        assert_eq!(got, want);
        assert!(is_berth_owned(&got));
    }

    #[test]
    fn containerd_every_mirror_option() {
        let spec = RegistryMirrorSpec {
            registry: "registry.example.test".into(),
            server: Some("http://registry.example.test:80".into()),
            mirrors: vec![
                Mirror {
                    url: "https://mirror.lan/v2/proxy".into(),
                    capabilities: vec!["pull".into()],
                    skip_verify: Some(true),
                    override_path: Some(true),
                    ..Default::default()
                },
                Mirror {
                    url: "https://secure.lan".into(),
                    ca_secret_ref: Some(SecretKeyRef {
                        namespace: "ns".into(),
                        name: "ca".into(),
                        key: None,
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let ca = vec![
            None,
            Some("/etc/containerd/certs.d/registry.example.test/berth-mirror-1-ca.crt".to_string()),
        ];
        let got = containerd_hosts_toml("x", None, &spec, &ca).expect("renders");
        assert!(
            got.contains("server = \"http://registry.example.test:80\"\n"),
            "{got}"
        );
        assert!(got.contains(
            "[host.\"https://mirror.lan/v2/proxy\"]\n  capabilities = [\"pull\"]\n  skip_verify = true\n  override_path = true\n"
        ));
        assert!(got.contains(
            "[host.\"https://secure.lan\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"/etc/containerd/certs.d/registry.example.test/berth-mirror-1-ca.crt\"\n"
        ));
        // The mirror order is the order containerd tries them in.
        assert!(got.find("mirror.lan").expect("first") < got.find("secure.lan").expect("second"));
    }

    #[test]
    fn containerd_default_has_no_server_line() {
        let spec = RegistryMirrorSpec {
            registry: "_default".into(),
            mirrors: vec![mirror("http://127.0.0.1:5000")],
            ..Default::default()
        };
        let got = containerd_hosts_toml("d", None, &spec, &[]).expect("renders");
        assert!(!got.contains("server ="), "{got}");
    }

    #[test]
    fn quotes_are_escaped_and_bad_urls_refused() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
        let spec = RegistryMirrorSpec {
            registry: "r.test".into(),
            mirrors: vec![mirror("ftp://x")],
            ..Default::default()
        };
        assert_eq!(
            containerd_hosts_toml("m", None, &spec, &[]),
            Err(RenderError::BadUrl {
                name: "m".into(),
                index: 0,
                url: "ftp://x".into()
            })
        );
        let spec = RegistryMirrorSpec {
            registry: "r.test".into(),
            mirrors: vec![mirror("http:///path")],
            ..Default::default()
        };
        assert!(containerd_hosts_toml("m", None, &spec, &[]).is_err());
    }

    #[test]
    fn crio_dropin_rendering() {
        let spec = RegistryMirrorSpec {
            registry: "docker.io".into(),
            mirrors: vec![
                mirror("http://10.0.0.5:5000"),
                Mirror {
                    url: "https://m2.lan/".into(),
                    capabilities: vec!["pull".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let got = crio_dropin("hub", Some(1), &spec).expect("renders");
        let want = "# Managed by Berth (berth.dev RegistryMirror): hub\n# generation 1\n[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\n[[registry.mirror]]\nlocation = \"10.0.0.5:5000\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"m2.lan\"\npull-from-mirror = \"digest-only\"\n";
        assert_eq!(got, want);
        assert_eq!(crio_dropin_name("hub"), "50-berth-hub.conf");
        let d = RegistryMirrorSpec {
            registry: "_default".into(),
            ..Default::default()
        };
        assert!(matches!(
            crio_dropin("d", None, &d),
            Err(RenderError::CrioDefault { .. })
        ));
    }

    #[test]
    fn ownership_marker() {
        assert!(!is_berth_owned("server = \"https://x\"\n"));
        assert!(!is_berth_owned(""));
    }
}
