//! Certificates and keys for the test control plane: a cluster CA, the API server's serving
//! certificate, an admin client certificate (group `system:masters`, used by every component and test),
//! and the service-account signing key pair; plus the kubeconfig that points at them.
//! Generated once per state dir and reused, so `up` after `up` keeps clients' credentials valid.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Errors while making or writing the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Paths of every file the PKI consists of.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

impl PkiFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        }
    }

    fn all(&self) -> [&PathBuf; 8] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.apiserver_cert,
            &self.apiserver_key,
            &self.admin_cert,
            &self.admin_key,
            &self.sa_key,
            &self.sa_pub,
        ]
    }

    pub fn complete(&self) -> bool {
        self.all().iter().all(|p| p.is_file())
    }
}

/// The names the API server's certificate must be valid for: loopback (how everything here reaches
/// it) and the in-cluster `kubernetes` Service names and ClusterIP.
pub const APISERVER_SANS: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

fn generate_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

fn params(
    cn: &str,
    org: Option<&str>,
    sans: &[&str],
    what: &str,
) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(generate_err(what))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    p.distinguished_name = dn;
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 1, 1);
    Ok(p)
}

/// Makes the PKI in `dir` unless it is already complete there. Returns the file paths.
pub fn ensure(dir: &Path) -> Result<(PkiFiles, bool), PkiError> {
    let files = PkiFiles::in_dir(dir);
    if files.complete() {
        return Ok((files, false));
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let ca_key = KeyPair::generate().map_err(generate_err("CA key"))?;
    let mut ca_params = params("berth-e2e-ca", None, &[], "CA")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate_err("CA"))?;
    let ca_cert_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |cn: &str, org: Option<&str>, sans: &[&str], server: bool| {
        let key = KeyPair::generate().map_err(generate_err(cn))?;
        let mut p = params(cn, org, sans, cn)?;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = p.signed_by(&key, &issuer).map_err(generate_err(cn))?;
        Ok::<_, PkiError>((cert.pem(), key.serialize_pem()))
    };
    let (api_cert, api_key) = leaf("kube-apiserver", None, APISERVER_SANS, true)?;
    let (admin_cert, admin_key) = leaf("berth-e2e-admin", Some("system:masters"), &[], false)?;

    let sa = KeyPair::generate().map_err(generate_err("service-account key"))?;

    write(&files.ca_cert, &ca_cert_pem, false)?;
    write(&files.ca_key, &ca_key_pem, true)?;
    write(&files.apiserver_cert, &api_cert, false)?;
    write(&files.apiserver_key, &api_key, true)?;
    write(&files.admin_cert, &admin_cert, false)?;
    write(&files.admin_key, &admin_key, true)?;
    write(&files.sa_key, &sa.serialize_pem(), true)?;
    write(&files.sa_pub, &sa.public_key_pem(), false)?;
    Ok((files, true))
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, text).map_err(err)?;
    let mode = if secret { 0o600 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

/// A kubeconfig for the admin identity (certificate paths, not embedded data, so it stays readable).
pub fn kubeconfig(server: &str, files: &PkiFiles) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: berth-e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: berth-e2e
  context:
    cluster: berth-e2e
    user: admin
current-context: berth-e2e
",
        ca = files.ca_cert.display(),
        cert = files.admin_cert.display(),
        key = files.admin_key.display(),
    )
}

/// Writes the kubeconfig next to the PKI (rewritten every `up`: the port may have changed).
pub fn write_kubeconfig(path: &Path, server: &str, files: &PkiFiles) -> Result<(), PkiError> {
    write(path, &kubeconfig(server, files), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (files, made) = ensure(dir.path()).unwrap();
        assert!(made);
        assert!(files.complete());
        let ca_before = std::fs::read_to_string(&files.ca_cert).unwrap();
        let (_, made_again) = ensure(dir.path()).unwrap();
        assert!(!made_again);
        assert_eq!(std::fs::read_to_string(&files.ca_cert).unwrap(), ca_before);
        let mode = std::fs::metadata(&files.admin_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&files.sa_pub)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }

    #[test]
    fn kubeconfig_names_server_and_files() {
        let files = PkiFiles::in_dir(Path::new("/s/pki"));
        let k = kubeconfig("https://127.0.0.1:1234", &files);
        assert!(k.contains("server: https://127.0.0.1:1234"));
        assert!(k.contains("certificate-authority: /s/pki/ca.crt"));
        assert!(k.contains("client-key: /s/pki/admin.key"));
        let parsed: serde_yaml::Value = serde_yaml::from_str(&k).unwrap();
        assert_eq!(parsed["current-context"], "berth-e2e");
    }
}
