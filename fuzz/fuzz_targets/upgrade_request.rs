//! The WebSocket upgrade request an edge node reads before the upgrade:
//! any bytes must parse to a request or an error, never a panic, and what
//! admission then does with a parsed request (token, `after`, upgrade
//! checks) must not panic either.
#![no_main]

use edgepush_core::upgrade::parse_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, len))) = parse_head(data) {
        assert!(len <= data.len());
        let _ = req.token();
        let _ = req.is_websocket_upgrade();
        if let Some(after) = req.query_after.as_deref() {
            let _ = after.parse::<u64>();
        }
    }
});
