//! Mapping driver errors onto the port's [`StoreError`].
//!
//! The split matters to callers: `Unavailable` means "retry later" (collect
//! answers 503), `Backend` means something is wrong that a retry will not fix.

use edgepush_core::StoreError;
use mongodb::error::{Error, ErrorKind, WriteFailure};

/// Server error codes that mean "this server cannot serve you right now":
/// shutting down, stepping down, not primary, network trouble seen by the
/// server, time limits, write concern timeouts.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Labels the driver or server put on errors worth retrying.
const TRANSIENT_LABELS: &[&str] = &[
    mongodb::error::RETRYABLE_WRITE_ERROR,
    mongodb::error::TRANSIENT_TRANSACTION_ERROR,
    mongodb::error::SYSTEM_OVERLOADED_ERROR,
    mongodb::error::RETRYABLE_ERROR,
];

/// The server-reported code of `err`, if it carries one (command error,
/// write error or write concern error).
pub(crate) fn code(err: &Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        _ => None,
    }
}

/// Whether `err` is a unique index violation (E11000).
pub(crate) fn is_duplicate_key(err: &Error) -> bool {
    matches!(code(err), Some(11000 | 11001))
}

/// Whether a duplicate key error names the index on `_id` or on
/// `(user, seq)`, i.e. the seq was taken. MongoDB names the index in the
/// message; FerretDB does not, so `false` means "unknown".
pub(crate) fn is_seq_conflict(err: &Error) -> bool {
    let message = match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => &e.message,
        ErrorKind::Command(e) => &e.message,
        _ => return false,
    };
    message.contains("index: _id_ ") || message.contains("index: user_seq ")
}

/// Whether `err` means the server is down, unreachable or too busy.
pub(crate) fn is_transient(err: &Error) -> bool {
    let kind_transient = matches!(
        err.kind.as_ref(),
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Shutdown
    );
    kind_transient
        || TRANSIENT_LABELS.iter().any(|l| err.contains_label(l))
        || code(err).is_some_and(|c| TRANSIENT_CODES.contains(&c))
}

/// Maps a driver error, met while doing `what`, onto the port's error.
pub(crate) fn store_error(what: &str, err: Error) -> StoreError {
    if is_transient(&err) {
        StoreError::Unavailable(format!("{what}: {err}"))
    } else {
        StoreError::Backend(format!("{what}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn io_errors_are_unavailable() {
        let err = Error::from(ErrorKind::Io(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        assert!(matches!(store_error("x", err), StoreError::Unavailable(_)));
        let err = Error::from(ErrorKind::Io(Arc::new(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        ))));
        assert!(matches!(store_error("x", err), StoreError::Unavailable(_)));
    }

    #[test]
    fn other_errors_are_backend() {
        let err = Error::custom("something odd");
        assert!(!is_duplicate_key(&err));
        assert!(matches!(store_error("x", err), StoreError::Backend(_)));
    }
}
