//! The driver's one error type, and the single place where errors become gRPC status codes.
//!
//! The code matters to the caller: csi-provisioner treats UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED,
//! CANCELLED and RESOURCE_EXHAUSTED as "maybe still in progress" and retries forever, so terminal
//! errors must never map to them, and RESOURCE_EXHAUSTED is kept for "this node cannot, another could".

use std::path::PathBuf;

use tonic::{Code, Status};

/// Everything that can go wrong while serving a CSI call.
#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    /// A request field or StorageClass parameter is missing or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// The named volume, snapshot or path does not exist.
    #[error("{0}")]
    NotFound(String),

    /// A volume or snapshot with this name exists with incompatible properties.
    #[error("{0}")]
    AlreadyExists(String),

    /// The requested capacity cannot be served by this driver (too small, too large, shrink...).
    #[error("{0}")]
    OutOfRange(String),

    /// This node cannot host the volume (no room, not in the requested topology); another node could.
    #[error("{0}")]
    NoRoomHere(String),

    /// The request is valid but the system is not in a state to serve it (missing pool capability,
    /// volume still in use...). Retrying without a change will not help.
    #[error("{0}")]
    FailedPrecondition(String),

    /// A pagination token this driver did not hand out (the spec asks for ABORTED).
    #[error("{0}")]
    BadToken(String),

    /// The RPC is not offered in this driver or mode.
    #[error("{0}")]
    Unimplemented(String),

    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An external command (mkfs, losetup, resize2fs...) failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// A record on disk could not be parsed: the pool was changed behind the driver's back.
    #[error("corrupt record {path}: {reason}")]
    CorruptRecord { path: PathBuf, reason: String },
}

pub type Result<T, E = CsiError> = std::result::Result<T, E>;

impl CsiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CsiError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Wraps an `io::Error` with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CsiError::Io { op, path, source }
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            CsiError::InvalidArgument { .. } => Code::InvalidArgument,
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::AlreadyExists(_) => Code::AlreadyExists,
            CsiError::OutOfRange(_) => Code::OutOfRange,
            CsiError::NoRoomHere(_) => Code::ResourceExhausted,
            CsiError::FailedPrecondition(_) => Code::FailedPrecondition,
            CsiError::BadToken(_) => Code::Aborted,
            CsiError::Unimplemented(_) => Code::Unimplemented,
            CsiError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            CsiError::Command { .. } | CsiError::CorruptRecord { .. } => Code::Internal,
        }
    }
}

impl From<CsiError> for Status {
    fn from(e: CsiError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes on which csi-provisioner assumes the operation may still be running and retries forever.
    const RETRIED_FOREVER: [Code; 5] = [
        Code::Unavailable,
        Code::Aborted,
        Code::DeadlineExceeded,
        Code::Cancelled,
        Code::ResourceExhausted,
    ];

    fn io(errno: i32) -> CsiError {
        CsiError::Io {
            op: "write",
            path: "/pool/x".into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn every_error_maps_to_its_code() {
        let table: Vec<(CsiError, Code)> = vec![
            (CsiError::invalid("name", "empty"), Code::InvalidArgument),
            (CsiError::NotFound("v".into()), Code::NotFound),
            (CsiError::AlreadyExists("v".into()), Code::AlreadyExists),
            (CsiError::OutOfRange("v".into()), Code::OutOfRange),
            (CsiError::NoRoomHere("v".into()), Code::ResourceExhausted),
            (
                CsiError::FailedPrecondition("v".into()),
                Code::FailedPrecondition,
            ),
            (CsiError::Unimplemented("v".into()), Code::Unimplemented),
            (CsiError::BadToken("v".into()), Code::Aborted),
            (io(libc::EIO), Code::Internal),
            (io(libc::EACCES), Code::Internal),
            (io(libc::ENOSPC), Code::ResourceExhausted),
            (io(libc::EDQUOT), Code::ResourceExhausted),
            (
                CsiError::Command {
                    command: "mkfs".into(),
                    status: "1".into(),
                    stderr: "x".into(),
                },
                Code::Internal,
            ),
            (
                CsiError::CorruptRecord {
                    path: "/p".into(),
                    reason: "x".into(),
                },
                Code::Internal,
            ),
        ];
        for (err, code) in table {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn terminal_errors_are_never_retried_forever() {
        let terminal = [
            CsiError::invalid("parameters.backend", "unknown"),
            CsiError::NotFound("v".into()),
            CsiError::AlreadyExists("v".into()),
            CsiError::OutOfRange("v".into()),
            CsiError::FailedPrecondition("missing hardlinks".into()),
            CsiError::Unimplemented("v".into()),
            io(libc::EIO),
        ];
        for err in terminal {
            assert!(
                !RETRIED_FOREVER.contains(&err.code()),
                "{err} -> {:?}",
                err.code()
            );
        }
    }

    #[test]
    fn status_message_names_the_field() {
        let status: Status =
            CsiError::invalid("parameters.fsType", "\"ntfs\" is not ext4 or xfs").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("parameters.fsType"));
    }
}
