//! The WebSocket API's request decoder over any text frame: it never panics, and a frame that
//! is a JSON object whose `id` is a string or a number is answered with that id, a number with
//! exactly the characters it was sent with (docs/protocol.md, "Errors").

#![no_main]

use std::collections::HashMap;

use harness::api::RequestId;
use harness::api::protocol::parse_incoming;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let incoming = parse_incoming(text);
    // An error always has a message, and the answer's id serializes.
    if let Err(error) = &incoming.request {
        assert!(!error.message.is_empty());
    }
    let _ = serde_json::to_string(&incoming.id).unwrap();

    // The id as sent, read independently: the last `id` member of a top-level object.
    let Ok(members) = serde_json::from_str::<HashMap<String, &RawValue>>(text) else {
        return;
    };
    let Some(raw) = members.get("id") else {
        assert_eq!(incoming.id, None);
        return;
    };
    let sent = raw.get();
    match sent.as_bytes()[0] {
        b'-' | b'0'..=b'9' => {
            let Some(RequestId::Number(n)) = &incoming.id else {
                panic!("number id {sent} not kept: {incoming:?}");
            };
            assert_eq!(n.as_str(), sent);
            assert_eq!(serde_json::to_string(&incoming.id).unwrap(), sent);
        }
        b'"' => {
            if let Ok(s) = serde_json::from_str::<String>(sent) {
                assert_eq!(
                    incoming.id,
                    Some(RequestId::Text(s)),
                    "string id {sent} not kept"
                );
            }
        }
        _ => {}
    }
});
