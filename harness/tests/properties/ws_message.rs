//! The WebSocket API's request decoder over generated frames: arbitrary JSON and arbitrary
//! bytes never panic it, and a request with a string or number `id` is answered with that id,
//! a number with exactly the characters it was sent with (docs/protocol.md).

use harness::api::protocol::parse_incoming;
use harness::api::{Message, MessageType, RequestId};

use crate::seeded::{mutate, run_cases, string_of};

/// Numbers as a client may write them: beyond 2^53, beyond u64, negative, fractions, exponents,
/// and beyond a double's range.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "7",
    "9007199254740993",
    "18446744073709551617",
    "12345678901234567890123",
    "-9223372036854775809",
    "1.50",
    "-1.5E+3",
    "2e-7",
    "1e400",
    "-1e400",
];

/// A JSON string literal with escapes, non-ASCII text and surrogate pairs.
fn string(rng: &mut fastrand::Rng) -> String {
    let parts = [
        "a",
        "Z",
        "9",
        " ",
        "é",
        "\\n",
        "\\\"",
        "\\\\",
        "\\u00e9",
        "\\ud83d\\ude00",
        "/",
        "\\/",
    ];
    let body: String = (0..rng.usize(..6))
        .map(|_| *rng.choice(&parts).unwrap())
        .collect();
    format!("\"{body}\"")
}

/// Any JSON value, as text, at most `depth` levels deep.
fn value(rng: &mut fastrand::Rng, depth: u32) -> String {
    match rng.u8(..if depth == 0 { 4 } else { 6 }) {
        0 => (*rng.choice(["null", "true", "false"]).unwrap()).to_string(),
        1 => (*rng.choice(NUMBERS).unwrap()).to_string(),
        2 | 3 => string(rng),
        4 => {
            let items: Vec<String> = (0..rng.usize(..4)).map(|_| value(rng, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let members: Vec<String> = (0..rng.usize(..4))
                .map(|_| format!("{}: {}", string(rng), value(rng, depth - 1)))
                .collect();
            format!("{{{}}}", members.join(", "))
        }
    }
}

/// A frame that is a JSON object: an id (a string, a number, or something else), the
/// envelope's fields with good or bad values, and extra members, in a random order.
fn frame(rng: &mut fastrand::Rng) -> (String, Option<String>) {
    let mut members = Vec::new();
    let id = match rng.u8(..4) {
        0 => None,
        1 => Some(string(rng)),
        _ => Some((*rng.choice(NUMBERS).unwrap()).to_string()),
    };
    if let Some(id) = &id {
        members.push(format!("\"id\": {id}"));
    }
    let action = match rng.u8(..4) {
        0 => value(rng, 1),
        1 => string(rng),
        _ => format!(
            "\"{}\"",
            rng.choice(harness::api::protocol::ACTIONS).unwrap()
        ),
    };
    if rng.u8(..5) != 0 {
        members.push(format!("\"action\": {action}"));
    }
    for (key, good) in [
        ("type", "\"request\""),
        ("version", "1"),
        (
            "params",
            "{\"name\": \"db\", \"service\": \"db\", \"action\": \"stop\", \"package\": \"p\"}",
        ),
    ] {
        match rng.u8(..4) {
            0 => {}
            1 => members.push(format!("\"{key}\": {}", value(rng, 3))),
            _ => members.push(format!("\"{key}\": {good}")),
        }
    }
    for _ in 0..rng.usize(..3) {
        members.push(format!("{}: {}", string(rng), value(rng, 3)));
    }
    rng.shuffle(&mut members);
    // A second `id` before the first one counts for nothing: the last one is the id.
    if rng.u8(..8) == 0 {
        members.insert(0, format!("\"id\": {}", value(rng, 1)));
    }
    (format!("{{{}}}", members.join(", ")), id)
}

/// The answer's id is the id sent: for a number, the same characters.
fn assert_id_kept(text: &str, sent: &str) {
    let incoming = parse_incoming(text);
    let id = incoming.id.clone();
    match (&id, sent.as_bytes()[0]) {
        (Some(RequestId::Number(n)), b'-' | b'0'..=b'9') => assert_eq!(n.as_str(), sent, "{text}"),
        (Some(RequestId::Text(s)), b'"') => {
            assert_eq!(*s, serde_json::from_str::<String>(sent).unwrap(), "{text}")
        }
        _ => panic!("id {sent} not kept: {incoming:?}\n--- the frame: {text}"),
    }
    let kind = match incoming.request {
        Ok(_) => MessageType::Response,
        Err(_) => MessageType::Error,
    };
    let answer = Message {
        id,
        kind,
        action: incoming.action,
        params: serde_json::Value::Object(Default::default()),
        version: Some(1),
    }
    .to_json();
    if sent.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        assert!(answer.starts_with(&format!("{{\"id\":{sent},")), "{answer}");
    }
}

#[test]
fn requests_are_answered_with_the_id_as_sent() {
    run_cases("requests_are_answered_with_the_id_as_sent", 2000, |rng| {
        let (text, id) = frame(rng);
        let incoming = parse_incoming(&text);
        if let Err(error) = &incoming.request {
            assert!(!error.message.is_empty(), "{text}");
        }
        if let Some(id) = id {
            assert_id_kept(&text, &id);
        }
    });
}

#[test]
fn any_json_or_bytes_never_panic_the_decoder() {
    run_cases("any_json_or_bytes_never_panic_the_decoder", 2000, |rng| {
        let text = match rng.u8(..4) {
            0 => value(rng, 4),
            1 => {
                let (frame, _) = frame(rng);
                mutate(rng, &frame)
            }
            2 => {
                let bytes: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            _ => string_of(rng, "{}[]\":,0123456789.eE+-truefalsnl \\u", 0..40),
        };
        let incoming = parse_incoming(&text);
        if let Err(error) = &incoming.request {
            assert!(!error.message.is_empty(), "{text}");
        }
        let _ = serde_json::to_string(&incoming.id).unwrap();
    });
}
