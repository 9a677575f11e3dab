//! The body of `POST /v1/messages`: any bytes are a valid submission within
//! the limits or the text of a 400, never a panic.
#![no_main]

use edgepush_core::submit::{Limits, Submission};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(submission) = Submission::parse(data, &limits) {
        assert!(!submission.to.is_empty() && submission.to.len() <= limits.max_recipients);
        assert!(submission.data.get().len() <= limits.max_data_bytes);
        if let Some(key) = &submission.idempotency_key {
            assert!(!key.is_empty() && key.len() <= limits.max_idempotency_key_len);
        }
    }
});
