//! Where volumes live: the node-local pool (`local`: directories or btrfs subvolumes, and loop image
//! files) and the shared pools (`shared`: directories on a filesystem every node mounts). This module
//! holds the pure sizing and idempotency rules both use.

pub mod btrfs;
pub mod local;
pub mod loopdev;
pub mod projquota;
pub mod shared;

use std::path::Path;

use crate::error::{CsiError, Result};
use crate::record::VolumeRecord;

/// What a volume's usage looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub inodes_used: Option<u64>,
    pub inodes_total: Option<u64>,
    /// Why the volume is abnormal, if it is.
    pub abnormal: Option<String>,
}

/// Capacity when the CO asks for none.
pub const DEFAULT_CAPACITY: u64 = 1 << 30;
const ALIGN: u64 = 4096;

/// A requested capacity range; 0 means "not set", as in the CSI message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    pub required: u64,
    pub limit: u64,
}

impl Range {
    pub fn from_proto(r: Option<&crate::proto::CapacityRange>) -> Result<Range> {
        let Some(r) = r else {
            return Ok(Range::default());
        };
        if r.required_bytes < 0 || r.limit_bytes < 0 {
            return Err(CsiError::invalid(
                "capacity_range",
                "bytes must not be negative",
            ));
        }
        let range = Range {
            required: r.required_bytes as u64,
            limit: r.limit_bytes as u64,
        };
        if range.limit != 0 && range.required > range.limit {
            return Err(CsiError::invalid(
                "capacity_range",
                format!(
                    "required_bytes {} exceeds limit_bytes {}",
                    range.required, range.limit
                ),
            ));
        }
        Ok(range)
    }

    /// The size an expansion asks for: required_bytes, else limit_bytes; `None` when neither is set.
    pub fn expansion_target(&self) -> Option<u64> {
        [self.required, self.limit].into_iter().find(|&b| b > 0)
    }

    /// OUT_OF_RANGE when volume `id`, now `bytes` large, is above the limit (volumes do not shrink).
    pub fn check_grown(&self, id: &impl std::fmt::Display, bytes: u64) -> Result<()> {
        if self.limit != 0 && bytes > self.limit {
            return Err(CsiError::OutOfRange(format!(
                "volume {id} already has {bytes} bytes, above capacity_range.limit_bytes {} \
                 (volumes do not shrink)",
                self.limit
            )));
        }
        Ok(())
    }

    /// Whether an existing capacity satisfies this range.
    pub fn admits(&self, bytes: u64) -> bool {
        bytes >= self.required && (self.limit == 0 || bytes <= self.limit)
    }
}

/// The capacity to provision: at least what is required, what the source holds and the backend's
/// minimum, 4 KiB aligned, and never above the limit.
pub fn resolve_capacity(range: Range, minimum: u64, source: Option<u64>) -> Result<u64> {
    let wanted = if range.required > 0 {
        range.required
    } else if range.limit > 0 {
        DEFAULT_CAPACITY.min(range.limit)
    } else {
        DEFAULT_CAPACITY
    };
    let floor = minimum.max(source.unwrap_or(0));
    let size = wanted.max(floor).div_ceil(ALIGN) * ALIGN;
    if range.limit != 0 && size > range.limit {
        let why = match source {
            Some(s) if s > range.limit => format!("the source holds {s} bytes"),
            _ => format!("this backend needs at least {minimum} bytes"),
        };
        return Err(CsiError::OutOfRange(format!(
            "capacity_range.limit_bytes {} is too small: {why}",
            range.limit
        )));
    }
    Ok(size)
}

/// Whether an existing volume may be returned for a repeated CreateVolume, or the error that says
/// why not (the spec's ALREADY_EXISTS).
pub fn check_same(existing: &VolumeRecord, wanted: &VolumeRecord, range: Range) -> Result<()> {
    let differs = |what: &str| {
        Err(CsiError::AlreadyExists(format!(
            "volume {:?} already exists with a different {what}",
            existing.name
        )))
    };
    if !range.admits(existing.capacity_bytes) {
        return differs("capacity");
    }
    if existing.backend != wanted.backend || existing.fs_type != wanted.fs_type {
        return differs("backend or filesystem");
    }
    if existing.access != wanted.access {
        return differs("access type (block or mount)");
    }
    if existing.source != wanted.source {
        return differs("content source");
    }
    if existing.parameters != wanted.parameters {
        return differs("set of parameters");
    }
    Ok(())
}

/// Filesystem size and free space (bytes) of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> Result<(u64, u64)> {
    let s =
        nix::sys::statvfs::statvfs(path).map_err(|e| CsiError::io("statvfs", path)(e.into()))?;
    let frsize = s.fragment_size() as u64;
    Ok((
        s.blocks() as u64 * frsize,
        s.blocks_available() as u64 * frsize,
    ))
}

/// Bytes and inodes used under `dir`, walked without following symlinks (for pools without a quota
/// mechanism, where this is the only honest measure).
pub fn tree_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const MIB: u64 = 1 << 20;

    #[test]
    fn expansion_target_and_limit_table() {
        let r = |required, limit| Range { required, limit };
        // (range, target, grown-to size, accepted)
        let table = [
            (r(0, 0), None, 10 * MIB, true),
            (r(10 * MIB, 0), Some(10 * MIB), 10 * MIB, true),
            (r(0, 20 * MIB), Some(20 * MIB), 20 * MIB, true),
            (r(10 * MIB, 20 * MIB), Some(10 * MIB), 12 * MIB, true),
            (r(10 * MIB, 20 * MIB), Some(10 * MIB), 30 * MIB, false),
        ];
        for (range, target, grown, accepted) in table {
            assert_eq!(range.expansion_target(), target, "{range:?}");
            let checked = range.check_grown(&"v", grown);
            assert_eq!(checked.is_ok(), accepted, "{range:?} {grown}");
            if let Err(e) = checked {
                assert_eq!(e.code(), Code::OutOfRange);
                assert!(e.to_string().contains("limit_bytes"), "{e}");
            }
        }
    }

    #[test]
    fn capacity_table() {
        let r = |required, limit| Range { required, limit };
        let ok: Vec<(Range, u64, Option<u64>, u64)> = vec![
            (r(0, 0), 0, None, DEFAULT_CAPACITY),
            (r(10 * MIB, 0), 0, None, 10 * MIB),
            (r(10 * MIB + 1, 0), 0, None, 10 * MIB + 4096),
            (r(0, 100 * MIB), 0, None, 100 * MIB),
            (r(MIB, 0), 16 * MIB, None, 16 * MIB),
            (r(MIB, 0), 0, Some(5 * MIB), 5 * MIB),
            (
                r(0, 0),
                300 * MIB,
                Some(2 * DEFAULT_CAPACITY),
                2 * DEFAULT_CAPACITY,
            ),
        ];
        for (range, min, src, want) in ok {
            assert_eq!(
                resolve_capacity(range, min, src).unwrap(),
                want,
                "{range:?} {min} {src:?}"
            );
        }
        let err = resolve_capacity(r(MIB, 2 * MIB), 300 * MIB, None).unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange);
        assert!(err.to_string().contains("at least"));
        let err = resolve_capacity(r(0, 2 * MIB), 0, Some(5 * MIB)).unwrap_err();
        assert!(err.to_string().contains("source"), "{err}");
    }

    #[test]
    fn ranges_are_validated() {
        use crate::proto::CapacityRange;
        let bad = CapacityRange {
            required_bytes: 10,
            limit_bytes: 5,
        };
        assert_eq!(
            Range::from_proto(Some(&bad)).unwrap_err().code(),
            Code::InvalidArgument
        );
        let neg = CapacityRange {
            required_bytes: -1,
            limit_bytes: 0,
        };
        assert_eq!(
            Range::from_proto(Some(&neg)).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(Range::from_proto(None).unwrap(), Range::default());
        assert!(
            Range {
                required: 5,
                limit: 0
            }
            .admits(10)
        );
        assert!(
            !Range {
                required: 5,
                limit: 8
            }
            .admits(10)
        );
    }
}
