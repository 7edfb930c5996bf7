//! Probes what a filesystem can really do for a database — hard links, symlinks, chown, fsync, atomic
//! rename, POSIX locks, xattrs — by trying each in a scratch directory, so a StorageClass can require
//! them and provisioning can refuse a pool that would make a database crash-loop.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One thing a filesystem may or may not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Hardlinks,
    Symlinks,
    Chown,
    Fsync,
    Rename,
    Locks,
    Xattrs,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Hardlinks,
        Capability::Symlinks,
        Capability::Chown,
        Capability::Fsync,
        Capability::Rename,
        Capability::Locks,
        Capability::Xattrs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Hardlinks => "hardlinks",
            Capability::Symlinks => "symlinks",
            Capability::Chown => "chown",
            Capability::Fsync => "fsync",
            Capability::Rename => "rename",
            Capability::Locks => "locks",
            Capability::Xattrs => "xattrs",
        }
    }

    pub fn parse(raw: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == raw)
    }

    /// Why a database cares, for the message that refuses a pool lacking it.
    pub fn why_needed(self) -> &'static str {
        match self {
            Capability::Hardlinks => {
                "databases such as PostgreSQL link WAL and control files into place (initdb fails without link())"
            }
            Capability::Symlinks => "databases symlink tablespaces and log directories",
            Capability::Chown => {
                "the database user must own its data directory (PostgreSQL refuses a data directory it does not own)"
            }
            Capability::Fsync => "without durable fsync a crash loses committed transactions",
            Capability::Rename => {
                "databases replace files atomically with rename(); without it a crash corrupts them"
            }
            Capability::Locks => {
                "databases take POSIX locks to keep two servers off the same data directory"
            }
            Capability::Xattrs => "extended attributes hold ACLs and security labels",
        }
    }
}

/// The outcome of probing one filesystem: for each capability, supported or the error seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub results: BTreeMap<Capability, Result<(), String>>,
}

impl ProbeReport {
    pub fn supports(&self, cap: Capability) -> bool {
        matches!(self.results.get(&cap), Some(Ok(())))
    }

    /// The first of `required` this filesystem lacks, with the error that showed it.
    pub fn first_missing<'a>(
        &self,
        required: impl IntoIterator<Item = &'a Capability>,
    ) -> Option<(Capability, String)> {
        required
            .into_iter()
            .find_map(|&cap| match self.results.get(&cap) {
                Some(Ok(())) => None,
                Some(Err(e)) => Some((cap, e.clone())),
                None => Some((cap, "not probed".to_string())),
            })
    }

    /// One line per capability, for logs and `berth-csi probe`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (cap, result) in &self.results {
            match result {
                Ok(()) => out.push_str(&format!("{:<10} yes\n", cap.as_str())),
                Err(e) => out.push_str(&format!("{:<10} no  ({e})\n", cap.as_str())),
            }
        }
        out
    }
}

/// Probes the filesystem at `dir` in a scratch directory that is removed afterwards.
pub fn probe(dir: &Path) -> std::io::Result<ProbeReport> {
    let scratch = dir.join(format!(".berth-probe-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir(&scratch)?;
    let report = probe_in(&scratch);
    let _ = fs::remove_dir_all(&scratch);
    Ok(report)
}

fn probe_in(scratch: &Path) -> ProbeReport {
    let mut results = BTreeMap::new();
    let file = scratch.join("file");
    let prepared = fs::write(&file, b"berth");
    let mut check = |cap: Capability, f: &dyn Fn() -> std::io::Result<()>| {
        let r = match &prepared {
            Ok(()) => f().map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot create a file: {e}")),
        };
        results.insert(cap, r);
    };
    check(Capability::Hardlinks, &|| {
        fs::hard_link(&file, scratch.join("link"))?;
        let nlink = fs::metadata(&file)?.nlink();
        if nlink != 2 {
            return Err(std::io::Error::other(format!(
                "link() succeeded but the file has {nlink} links"
            )));
        }
        Ok(())
    });
    check(Capability::Symlinks, &|| {
        let link = scratch.join("symlink");
        std::os::unix::fs::symlink("file", &link)?;
        if fs::read(&link)? != b"berth" {
            return Err(std::io::Error::other(
                "symlink does not resolve to its target",
            ));
        }
        Ok(())
    });
    check(Capability::Chown, &|| {
        let probe_id = 4242;
        std::os::unix::fs::chown(&file, Some(probe_id), Some(probe_id))?;
        let meta = fs::metadata(&file)?;
        if (meta.uid(), meta.gid()) != (probe_id, probe_id) {
            return Err(std::io::Error::other(format!(
                "chown succeeded but the owner is {}:{}",
                meta.uid(),
                meta.gid()
            )));
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640))?;
        Ok(())
    });
    check(Capability::Fsync, &|| {
        let mut f = OpenOptions::new().append(true).open(&file)?;
        f.write_all(b"!")?;
        f.sync_all()?;
        File::open(scratch)?.sync_all()
    });
    check(Capability::Rename, &|| {
        let tmp = scratch.join("file.tmp");
        fs::write(&tmp, b"new")?;
        let target = scratch.join("target");
        fs::write(&target, b"old")?;
        fs::rename(&tmp, &target)?;
        if fs::read(&target)? != b"new" || tmp.exists() {
            return Err(std::io::Error::other(
                "rename over an existing file was not atomic",
            ));
        }
        Ok(())
    });
    check(Capability::Locks, &|| {
        let f = OpenOptions::new().read(true).write(true).open(&file)?;
        let lock = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: fcntl with F_SETLK reads a valid, initialised flock struct.
        let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &lock) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    });
    check(Capability::Xattrs, &|| {
        let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
            .map_err(std::io::Error::other)?;
        let value = b"1";
        // SAFETY: all pointers are valid NUL-terminated strings / buffers of the given length.
        let rc = unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"user.berth.probe".as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    });
    ProbeReport { results }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_filesystem_supports_everything_but_maybe_xattrs() {
        let dir = tempfile::tempdir().unwrap();
        let report = probe(dir.path()).unwrap();
        for cap in [
            Capability::Hardlinks,
            Capability::Symlinks,
            Capability::Fsync,
            Capability::Rename,
            Capability::Locks,
        ] {
            assert!(report.supports(cap), "{cap:?}: {}", report.render());
        }
        assert_eq!(report.results.len(), Capability::ALL.len());
        // The scratch directory is gone.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn first_missing_names_the_capability_and_error() {
        let mut report = ProbeReport::default();
        report.results.insert(Capability::Fsync, Ok(()));
        report
            .results
            .insert(Capability::Hardlinks, Err("Operation not permitted".into()));
        assert_eq!(report.first_missing(&[Capability::Fsync]), None);
        assert_eq!(
            report.first_missing(&[Capability::Fsync, Capability::Hardlinks]),
            Some((Capability::Hardlinks, "Operation not permitted".into()))
        );
        assert_eq!(
            report.first_missing(&[Capability::Locks]),
            Some((Capability::Locks, "not probed".into()))
        );
    }

    #[test]
    fn capability_names_round_trip() {
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Some(cap));
            assert!(!cap.why_needed().is_empty());
        }
        assert_eq!(Capability::parse("teleport"), None);
    }
}
