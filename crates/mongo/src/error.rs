//! Mapping driver errors onto the port's [`StoreError`].
//!
//! The split matters to callers: `Unavailable` means "retry later" (collect
//! answers 503), `Backend` means something is wrong that a retry will not fix.

use edgepush_core::StoreError;
use mongodb::bson::Document;
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

/// Which unique index a duplicate-key write error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DuplicateOf {
    /// `_id` or `(<user or topic>, seq)`: the seq is taken.
    Seq,
    /// `(source, idem, <user or topic>)`: this request's copy exists.
    Idempotency,
    /// The server did not say (FerretDB v1 sends no `keyPattern`).
    Unknown,
}

/// Classifies a duplicate-key write error from the server's structured
/// fields: `keyPattern` (the index's keys), else `keyValue` (the offending
/// values). Never from the message text, which quotes the caller's data (an
/// idempotency key may contain anything, `index: _id_ ` included).
pub(crate) fn duplicate_of(write_error: &Document) -> DuplicateOf {
    let keys = write_error
        .get_document("keyPattern")
        .or_else(|_| write_error.get_document("keyValue"));
    let Ok(keys) = keys else {
        return DuplicateOf::Unknown;
    };
    let has = |k: &str| keys.contains_key(k);
    if has("idem") || has("source") {
        DuplicateOf::Idempotency
    } else if has("_id") || has("seq") {
        DuplicateOf::Seq
    } else {
        DuplicateOf::Unknown
    }
}

/// Whether a server error code means "try again later".
pub(crate) fn is_transient_code(code: i32) -> bool {
    TRANSIENT_CODES.contains(&code)
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
    fn duplicates_are_classified_by_key_pattern_not_text() {
        use mongodb::bson::doc;
        let seq = doc! { "code": 11000, "errmsg": "E11000 dup key: { idem: \"key:index: user_seq \" }", "keyPattern": { "_id": 1 }, "keyValue": { "_id": "u:1" } };
        assert_eq!(duplicate_of(&seq), DuplicateOf::Seq);
        let user_seq = doc! { "code": 11000, "keyPattern": { "user": 1, "seq": 1 } };
        assert_eq!(duplicate_of(&user_seq), DuplicateOf::Seq);
        let idem = doc! {
            "code": 11000,
            "errmsg": "E11000 duplicate key error collection: m index: _id_ dup key",
            "keyPattern": { "source": 1, "idem": 1, "user": 1 },
            "keyValue": { "source": "api", "idem": "key:index: _id_ ", "user": "u" },
        };
        assert_eq!(duplicate_of(&idem), DuplicateOf::Idempotency);
        let only_value =
            doc! { "code": 11000, "keyValue": { "source": "api", "idem": "key:x", "user": "u" } };
        assert_eq!(duplicate_of(&only_value), DuplicateOf::Idempotency);
        let bare = doc! { "code": 11000, "errmsg": "index: _id_ dup key" };
        assert_eq!(duplicate_of(&bare), DuplicateOf::Unknown);
    }

    #[test]
    fn other_errors_are_backend() {
        let err = Error::custom("something odd");
        assert!(!is_duplicate_key(&err));
        assert!(matches!(store_error("x", err), StoreError::Backend(_)));
    }
}
