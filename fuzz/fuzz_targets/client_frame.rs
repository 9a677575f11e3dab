//! A text frame from a client: any text parses to a frame or an error, and
//! a frame that parses serialises back to one that parses the same.
#![no_main]

use edgepush_core::protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = ClientFrame::parse(text) {
        let again = serde_json::to_string(&frame).expect("a parsed frame serialises");
        assert_eq!(ClientFrame::parse(&again).expect("and parses again"), frame);
    }
});
