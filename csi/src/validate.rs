//! Validation of everything from a request that could become a path: volume and snapshot IDs, names,
//! and the CO's staging and target paths. Nothing reaches the filesystem without passing through here.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{CsiError, Result};

/// Longest ID Berth hands out (and accepts back).
const MAX_ID_LEN: usize = 128;
/// Longest name a CO may give (the spec asks plugins to take at least 128 characters).
const MAX_NAME_LEN: usize = 1024;

/// A volume or snapshot ID that is safe to use as one path component inside a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// Accepts an ID handed back by the CO. Anything Berth could not have produced is `NotFound`
    /// (it cannot name an existing object) and touches nothing.
    pub fn parse(kind: &str, field: &str, raw: &str) -> Result<Id> {
        if raw.is_empty() {
            return Err(CsiError::invalid(field, format!("{kind} ID is required")));
        }
        if !is_safe_token(raw) {
            return Err(CsiError::NotFound(format!(
                "{kind} {raw:?} does not exist (not a Berth {kind} ID)"
            )));
        }
        Ok(Id(raw.to_string()))
    }

    /// The stable ID for an object the CO names `name`: the name itself when it is a safe token
    /// (so `pvc-…` volumes are recognisable on disk), otherwise a digest of it.
    pub fn from_name(field: &str, name: &str) -> Result<Id> {
        if name.is_empty() {
            return Err(CsiError::invalid(field, "a name is required"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(CsiError::invalid(
                field,
                format!("{} bytes is longer than {MAX_NAME_LEN}", name.len()),
            ));
        }
        if name.contains('\0') {
            return Err(CsiError::invalid(field, "contains a NUL byte"));
        }
        if is_safe_token(name) {
            return Ok(Id(name.to_string()));
        }
        let digest = Sha256::digest(name.as_bytes());
        Ok(Id(format!("h-{}", &hex::encode(digest)[..40])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 bytes: never `.`/`..`, never a separator.
fn is_safe_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A staging or target path from the CO: absolute, normalised (no `.`/`..`), no NUL, not `/`.
pub fn co_path(field: &str, raw: &str) -> Result<PathBuf> {
    if raw.is_empty() {
        return Err(CsiError::invalid(field, "a path is required"));
    }
    if raw.len() > 4096 || raw.contains('\0') {
        return Err(CsiError::invalid(field, "not a usable path"));
    }
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(CsiError::invalid(field, format!("{raw:?} is not absolute")));
    }
    if raw.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(CsiError::invalid(
            field,
            format!("{raw:?} contains '.' or '..'"),
        ));
    }
    let mut normal = 0;
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(_) => normal += 1,
            _ => {
                return Err(CsiError::invalid(
                    field,
                    format!("{raw:?} contains '.' or '..'"),
                ));
            }
        }
    }
    if normal == 0 {
        return Err(CsiError::invalid(field, "must not be the root directory"));
    }
    Ok(path.to_path_buf())
}

/// A `volume_path` the CO asks about (stats, node expansion): required, and one that is not a
/// usable absolute path cannot be where a volume is published, so it is NOT_FOUND.
pub fn volume_path(raw: &str) -> Result<PathBuf> {
    if raw.is_empty() {
        return Err(CsiError::invalid("volume_path", "a path is required"));
    }
    co_path("volume_path", raw)
        .map_err(|_| CsiError::NotFound(format!("volume_path {raw:?} does not exist")))
}

/// A shared pool's name: a DNS label, since it becomes part of a topology key.
pub fn pool_name(raw: &str) -> std::result::Result<(), String> {
    let ok = !raw.is_empty()
        && raw.len() <= 63
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "pool name {raw:?} must be a DNS label (lowercase letters, digits, '-', at most 63)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn ids_that_could_escape_the_pool_are_refused() {
        let table = [
            ("", Code::InvalidArgument),
            ("..", Code::NotFound),
            (".", Code::NotFound),
            ("../etc", Code::NotFound),
            ("a/b", Code::NotFound),
            ("/abs", Code::NotFound),
            ("a\0b", Code::NotFound),
            (".hidden", Code::NotFound),
            ("-flag", Code::NotFound),
            ("a b", Code::NotFound),
        ];
        for (raw, code) in table {
            let err = Id::parse("volume", "volume_id", raw).unwrap_err();
            assert_eq!(err.code(), code, "{raw:?}");
        }
        let long = "a".repeat(129);
        assert_eq!(
            Id::parse("volume", "volume_id", &long).unwrap_err().code(),
            Code::NotFound
        );
    }

    #[test]
    fn good_ids_are_accepted() {
        for raw in [
            "pvc-0b0c0d0e-1111-2222-3333-444455556666",
            "a",
            "sanity-node-full-8C7E61B5-1A8D8ED8",
            "snap_1.2",
        ] {
            assert_eq!(Id::parse("volume", "volume_id", raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn names_become_safe_stable_ids() {
        assert_eq!(Id::from_name("name", "pvc-1").unwrap().as_str(), "pvc-1");
        let odd = Id::from_name("name", "../../etc/passwd").unwrap();
        assert!(odd.as_str().starts_with("h-") && is_safe_token(odd.as_str()));
        assert_eq!(odd, Id::from_name("name", "../../etc/passwd").unwrap());
        assert_ne!(odd, Id::from_name("name", "../../etc/shadow").unwrap());
        assert!(
            Id::from_name("name", &"x".repeat(300))
                .unwrap()
                .as_str()
                .starts_with("h-")
        );
        assert_eq!(
            Id::from_name("name", "").unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            Id::from_name("name", "a\0").unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn co_paths_must_be_absolute_and_normal() {
        assert!(co_path("target_path", "/var/lib/kubelet/pods/x/mount").is_ok());
        for bad in ["", "relative/x", "/a/../b", "/a/./b", "/", "/a\0b"] {
            let err = co_path("target_path", bad).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
            assert!(err.to_string().contains("target_path"));
        }
    }

    #[test]
    fn pool_names_are_dns_labels() {
        assert!(pool_name("main").is_ok());
        assert!(pool_name("nfs-1").is_ok());
        for bad in ["", "Main", "a_b", "-a", "a-", &"a".repeat(64), "a/b", ".."] {
            assert!(pool_name(bad).is_err(), "{bad:?}");
        }
    }
}
