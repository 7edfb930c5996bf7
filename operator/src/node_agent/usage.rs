//! The usage record: when the agent first saw each image and when it last saw it in use, kept on disk
//! (written atomically: temp file, fsync, rename, fsync of the directory) so image ages survive restarts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::gc_plan::{ImageInfo, InUse};

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("reading usage record {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "usage record {path} is not valid (it is set aside as {path}.corrupt and started afresh): {source}"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing usage record {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `last_used` moves forward only in steps of at least this many seconds.
pub const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// What the agent knows about one image's history on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageEntry {
    /// Seconds since the epoch when the agent first saw the image.
    pub first_seen: i64,
    /// Seconds since the epoch when the agent last saw a container or Pod using the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
}

/// The record for every image on the node, by image ID.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Format version of the file.
    #[serde(default = "version")]
    pub version: u32,
    pub images: BTreeMap<String, UsageEntry>,
}

fn version() -> u32 {
    1
}

impl UsageRecord {
    /// The entry for an image ID.
    pub fn get(&self, id: &str) -> Option<&UsageEntry> {
        self.images.get(id)
    }

    /// Brings the record up to date with what the runtime holds now: new images get `first_seen = now`,
    /// images in use get `last_used = now`, and images that are gone are forgotten. Returns whether
    /// anything changed (so an idle node does not rewrite the file).
    pub fn observe(&mut self, images: &[ImageInfo], in_use: &InUse, now: i64) -> bool {
        let before = self.clone();
        let present: std::collections::HashSet<&str> =
            images.iter().map(|i| i.id.as_str()).collect();
        self.images.retain(|id, _| present.contains(id.as_str()));
        for img in images {
            let e = self.images.entry(img.id.clone()).or_insert(UsageEntry {
                first_seen: now,
                last_used: None,
            });
            // A minute's precision is plenty for ages counted in hours, and it keeps a node whose images
            // are continuously in use from rewriting the file on every observation.
            if in_use.contains(img)
                && e.last_used
                    .is_none_or(|t| now - t >= LAST_USED_RESOLUTION_SECS)
            {
                e.last_used = Some(now);
            }
        }
        self.version = version();
        *self != before
    }
}

/// The record's file.
#[derive(Debug, Clone)]
pub struct UsageStore {
    path: PathBuf,
}

impl UsageStore {
    /// A store at `path` (its directory is created on first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the record lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the record; a missing file is an empty record. A corrupt file is moved aside (so the agent
    /// keeps working) and reported, since ages restart from now for every image.
    pub fn load(&self) -> Result<(UsageRecord, Option<UsageError>), UsageError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((UsageRecord::default(), None));
            }
            Err(source) => {
                return Err(UsageError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(r) => Ok((r, None)),
            Err(source) => {
                let aside = self.path.with_extension("corrupt");
                std::fs::rename(&self.path, &aside).map_err(|source| UsageError::Write {
                    path: aside.clone(),
                    source,
                })?;
                Ok((
                    UsageRecord::default(),
                    Some(UsageError::Corrupt {
                        path: self.path.clone(),
                        source,
                    }),
                ))
            }
        }
    }

    /// Saves the record atomically: a reader (or a crash) sees the old file or the new one, never a mix.
    pub fn save(&self, record: &UsageRecord) -> Result<(), UsageError> {
        let bytes = serde_json::to_vec(record).map_err(|e| UsageError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.path, &bytes, 0o600).map_err(|source| UsageError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Writes `bytes` to `path` via a temp file in the same directory, fsync, rename, and fsync of the
/// directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, tag: &str) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            repo_tags: vec![tag.into()],
            ..Default::default()
        }
    }

    #[test]
    fn observe_tracks_first_seen_last_used_and_forgets_gone_images() {
        let mut r = UsageRecord::default();
        let mut in_use = InUse::default();
        in_use.add("a:1");
        assert!(r.observe(&[img("A", "a:1"), img("B", "b:1")], &in_use, 100));
        assert_eq!(
            r.get("A"),
            Some(&UsageEntry {
                first_seen: 100,
                last_used: Some(100)
            })
        );
        assert_eq!(
            r.get("B"),
            Some(&UsageEntry {
                first_seen: 100,
                last_used: None
            })
        );

        // Later: A no longer in use keeps its last use; B is gone; C is new.
        let none = InUse::default();
        assert!(r.observe(&[img("A", "a:1"), img("C", "c:1")], &none, 200));
        assert_eq!(
            r.get("A"),
            Some(&UsageEntry {
                first_seen: 100,
                last_used: Some(100)
            })
        );
        assert_eq!(r.get("B"), None);
        assert_eq!(r.get("C").map(|e| e.first_seen), Some(200));

        // Nothing changed: no rewrite needed.
        assert!(!r.observe(&[img("A", "a:1"), img("C", "c:1")], &none, 300));

        // Still in use a few seconds later: no rewrite; a minute later: last use moves.
        assert!(r.observe(&[img("A", "a:1"), img("C", "c:1")], &in_use, 400));
        assert!(!r.observe(&[img("A", "a:1"), img("C", "c:1")], &in_use, 430));
        assert!(r.observe(&[img("A", "a:1"), img("C", "c:1")], &in_use, 460));
        assert_eq!(r.get("A").and_then(|e| e.last_used), Some(460));
    }

    #[test]
    fn record_survives_a_reload_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = UsageStore::new(dir.path().join("sub/usage.json"));
        let (empty, warn) = store.load().expect("load missing");
        assert!(empty.images.is_empty() && warn.is_none());
        let mut r = UsageRecord::default();
        r.observe(&[img("A", "a:1")], &InUse::default(), 42);
        store.save(&r).expect("save");
        let (back, _) = UsageStore::new(store.path()).load().expect("reload");
        assert_eq!(back, r);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("readdir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "no temp files left behind");
    }

    #[test]
    fn corrupt_record_is_set_aside_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("usage.json");
        std::fs::write(&path, b"{not json").expect("write");
        let (r, warn) = UsageStore::new(&path).load().expect("load");
        assert!(r.images.is_empty());
        assert!(matches!(warn, Some(UsageError::Corrupt { .. })));
        assert!(dir.path().join("usage.corrupt").exists());
    }
}
