//! Which volume capabilities (access modes, block or filesystem access) each driver serves: the
//! pure checks behind CreateVolume, ValidateVolumeCapabilities and the node calls.

use crate::driver::Kind;
use crate::error::{CsiError, Result};
use crate::params::Backend;
use crate::proto::VolumeCapability;
use crate::proto::volume_capability::access_mode::Mode;
use crate::proto::volume_capability::{AccessType, MountVolume};
use crate::record::Access;

/// Whether `kind` can serve access `mode`: local volumes live on one node, shared ones anywhere.
pub fn mode_supported(kind: Kind, mode: Mode) -> bool {
    match mode {
        Mode::Unknown => false,
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => true,
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter => {
            kind == Kind::Shared
        }
    }
}

/// Whether an access mode only ever reads.
pub fn read_only_mode(cap: &VolumeCapability) -> bool {
    matches!(
        cap.access_mode.as_ref().map(|m| m.mode()),
        Some(Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
    )
}

/// The mount part of a capability, if it asks for a filesystem.
pub fn mount_of(cap: &VolumeCapability) -> Option<&MountVolume> {
    match &cap.access_type {
        Some(AccessType::Mount(m)) => Some(m),
        _ => None,
    }
}

/// Checks one capability and says whether it is block or mount access.
pub fn check(kind: Kind, backend: Backend, cap: &VolumeCapability, field: &str) -> Result<Access> {
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| CsiError::invalid(format!("{field}.access_mode"), "is required"))?
        .mode();
    if !mode_supported(kind, mode) {
        return Err(CsiError::invalid(
            format!("{field}.access_mode"),
            format!("{mode:?} is not supported by {kind:?} volumes (they live on one node)"),
        ));
    }
    match &cap.access_type {
        None => Err(CsiError::invalid(
            format!("{field}.access_type"),
            "block or mount is required",
        )),
        Some(AccessType::Mount(_)) => Ok(Access::Mount),
        Some(AccessType::Block(_)) if kind == Kind::Local && backend == Backend::Loop => {
            Ok(Access::Block)
        }
        Some(AccessType::Block(_)) => Err(CsiError::invalid(
            format!("{field}.block"),
            "raw block volumes need the local driver with parameters.backend=loop",
        )),
    }
}

/// Checks every capability of a request; all must agree on block or mount access.
pub fn check_all(kind: Kind, backend: Backend, caps: &[VolumeCapability]) -> Result<Access> {
    if caps.is_empty() {
        return Err(CsiError::invalid(
            "volume_capabilities",
            "at least one is required",
        ));
    }
    let mut access = None;
    for (i, cap) in caps.iter().enumerate() {
        let a = check(kind, backend, cap, &format!("volume_capabilities[{i}]"))?;
        if access.is_some_and(|prev| prev != a) {
            return Err(CsiError::invalid(
                "volume_capabilities",
                "mixes block and mount access",
            ));
        }
        access = Some(a);
    }
    Ok(access.unwrap_or(Access::Mount))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::volume_capability::{AccessMode, BlockVolume};

    fn cap(mode: Mode, block: bool) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(if block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume::default())
            }),
        }
    }

    #[test]
    fn access_table() {
        use Backend::*;
        use Kind::*;
        let table = [
            (
                Local,
                Dir,
                Mode::SingleNodeWriter,
                false,
                Some(Access::Mount),
            ),
            (
                Local,
                Dir,
                Mode::SingleNodeMultiWriter,
                false,
                Some(Access::Mount),
            ),
            (Local, Dir, Mode::MultiNodeMultiWriter, false, None),
            (Local, Dir, Mode::MultiNodeReaderOnly, false, None),
            (Local, Dir, Mode::SingleNodeWriter, true, None),
            (
                Local,
                Loop,
                Mode::SingleNodeWriter,
                true,
                Some(Access::Block),
            ),
            (Local, Loop, Mode::Unknown, false, None),
            (
                Shared,
                Dir,
                Mode::MultiNodeMultiWriter,
                false,
                Some(Access::Mount),
            ),
            (
                Shared,
                Dir,
                Mode::MultiNodeReaderOnly,
                false,
                Some(Access::Mount),
            ),
            (Shared, Dir, Mode::MultiNodeMultiWriter, true, None),
        ];
        for (kind, backend, mode, block, want) in table {
            let got = check(kind, backend, &cap(mode, block), "volume_capability").ok();
            assert_eq!(got, want, "{kind:?} {backend:?} {mode:?} block={block}");
        }
    }

    #[test]
    fn missing_parts_and_mixtures_are_named() {
        let no_mode = VolumeCapability {
            access_mode: None,
            access_type: cap(Mode::SingleNodeWriter, false).access_type,
        };
        let err = check(Kind::Local, Backend::Dir, &no_mode, "volume_capability").unwrap_err();
        assert!(err.to_string().contains("volume_capability.access_mode"));
        let err = check_all(Kind::Local, Backend::Loop, &[]).unwrap_err();
        assert!(err.to_string().contains("volume_capabilities"));
        let mixed = [
            cap(Mode::SingleNodeWriter, false),
            cap(Mode::SingleNodeWriter, true),
        ];
        assert!(check_all(Kind::Local, Backend::Loop, &mixed).is_err());
        assert!(read_only_mode(&cap(Mode::MultiNodeReaderOnly, false)));
        assert!(!read_only_mode(&cap(Mode::SingleNodeWriter, false)));
    }
}
