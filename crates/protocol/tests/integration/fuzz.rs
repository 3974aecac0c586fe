//! Property tests: no input panics any parser or rewriter; incremental decoders are
//! chunking-invariant (including where their size bounds trip); rewrites round-trip.

use aether_domain::format::Dialect;
use aether_protocol::classify::{
    classify_first_element, classify_first_event, classify_response, error_message,
    retry_after_from_body,
};
use aether_protocol::gemini_stream::{JsonArrayDecoder, JsonArrayError};
use aether_protocol::request::{ensure_include_usage, inspect, replace_model};
use aether_protocol::sse::{SseDecoder, SseError, SseEvent, encode_event};
use aether_protocol::tokens::estimate_input_tokens;
use aether_protocol::usage::{StreamUsage, from_response, is_usage_only_chunk};
use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value};

const DIALECTS: [Dialect; 4] = [
    Dialect::AnthropicMessages,
    Dialect::OpenaiChat,
    Dialect::OpenaiResponses,
    Dialect::Gemini,
];

// ---- generators ----------------------------------------------------------------------------

/// SSE-ish byte soup: field names, every line terminator, BOMs, NULs and random bytes, so the
/// interesting paths are hit far more often than with uniform bytes.
fn sse_input() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"data:".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"id: ".to_vec()),
        Just(b"retry: 1".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b":".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\0".to_vec()),
        Just(br#"{"type":"message_delta","usage":{"output_tokens":3}}"#.to_vec()),
        "[a-z0-9 ]{0,8}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..4),
    ];
    vec(fragment, 0..48).prop_map(|parts| parts.concat())
}

/// Bracket/string soup for the JSON-array decoder.
fn array_input() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(br#"{"a":"}]\"","b":[1,{}]}"#.to_vec()),
        "[a-z0-9 :]{0,6}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..3),
    ];
    vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _./-]{0,12}",
        vec(any::<char>(), 0..8).prop_map(|cs| cs.into_iter().collect()),
        Just("1h".to_string()),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_]{1,8}",
        1 => Just("model".to_string()),
        1 => Just("stream_options".to_string()),
        1 => Just("include_usage".to_string()),
        1 => Just("cache_control".to_string()),
        1 => Just("ttl".to_string()),
        1 => Just("usage".to_string()),
        1 => Just("error".to_string()),
        1 => arb_string(),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(arb_key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(arb_key(), arb_json(), 0..8).prop_map(|m| m.into_iter().collect())
}

fn to_bytes(v: &impl serde::Serialize, pretty: bool) -> Vec<u8> {
    let out = if pretty {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    };
    out.expect("serialisable")
}

// ---- drivers -------------------------------------------------------------------------------

/// Splits `input` at `cuts` (clamped, sorted) into consecutive pieces.
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    points.sort_unstable();
    points.push(input.len());
    let mut out = Vec::new();
    let mut prev = 0;
    for p in points {
        out.push(&input[prev..p]);
        prev = p;
    }
    out
}

fn run_sse(input: &[u8], cuts: &[usize], limit: usize) -> (Vec<SseEvent>, Option<SseError>) {
    let mut d = SseDecoder::new(limit);
    let mut events = Vec::new();
    for piece in pieces(input, cuts) {
        let fed = d.feed(piece);
        events.extend(d.drain());
        if let Err(e) = fed {
            return (events, Some(e));
        }
    }
    events.extend(d.finish());
    events.extend(d.drain());
    (events, None)
}

fn run_array(
    input: &[u8],
    cuts: &[usize],
    limit: usize,
) -> (Vec<Bytes>, Result<(), JsonArrayError>) {
    let mut d = JsonArrayDecoder::new(limit);
    let mut elements = Vec::new();
    for piece in pieces(input, cuts) {
        let fed = d.feed(piece);
        elements.extend(std::iter::from_fn(|| d.next_element()));
        if let Err(e) = fed {
            return (elements, Err(e));
        }
    }
    (elements, d.finish())
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1 << 20), 1usize..96]
}

/// Runs every byte-consuming entry point of the crate; the assertion is "no panic".
fn exercise_everything(bytes: &[u8], status: u16) {
    let _ = inspect(bytes);
    let _ = replace_model(bytes, "m");
    let _ = ensure_include_usage(bytes);
    let _ = classify_first_element(bytes);
    let _ = error_message(bytes);
    let _ = retry_after_from_body(bytes);
    let text = String::from_utf8_lossy(bytes).into_owned();
    for d in DIALECTS {
        let _ = from_response(d, bytes);
        let _ = estimate_input_tokens(d, bytes);
        for ct in [
            None,
            Some("application/json"),
            Some("text/html"),
            Some("text/event-stream"),
        ] {
            let _ = classify_response(d, status, ct, bytes);
        }
        let mut acc = StreamUsage::new(d);
        acc.observe_json(bytes);
        for event in [
            None,
            Some("error"),
            Some("message_start"),
            Some("response.failed"),
        ] {
            let ev = SseEvent {
                event: event.map(str::to_string),
                data: text.clone(),
                ..SseEvent::default()
            };
            acc.observe_sse(&ev);
            let _ = classify_first_event(d, &ev);
            let _ = is_usage_only_chunk(&ev);
        }
        let _ = acc.usage();
    }
}

proptest! {
    #[test]
    fn sse_is_chunking_invariant(input in sse_input(), cuts in vec(0usize..800, 0..10), limit in limit()) {
        prop_assert_eq!(run_sse(&input, &cuts, limit), run_sse(&input, &[], limit));
    }

    #[test]
    fn sse_byte_by_byte_matches_whole(input in sse_input()) {
        let every: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(run_sse(&input, &every, 1 << 20), run_sse(&input, &[], 1 << 20));
    }

    #[test]
    fn sse_arbitrary_bytes(input in vec(any::<u8>(), 0..600), cuts in vec(0usize..600, 0..6), limit in limit()) {
        prop_assert_eq!(run_sse(&input, &cuts, limit), run_sse(&input, &[], limit));
    }

    #[test]
    fn sse_events_respect_the_bound(input in sse_input(), limit in 1usize..96) {
        let (events, _) = run_sse(&input, &[], limit);
        for ev in events {
            let held = ev.data.len() + ev.event.map_or(0, |e| e.len()) + ev.id.map_or(0, |i| i.len());
            // Lossy UTF-8 decoding may widen an invalid byte to U+FFFD (3 bytes).
            prop_assert!(held <= limit * 3, "{} > {}", held, limit);
        }
    }

    #[test]
    fn sse_encode_decode_round_trip(
        event in proptest::option::of("[^\r\n]{0,12}"),
        data in vec(prop_oneof![arb_string(), Just("\n".to_string()), Just("\r\n".to_string()), Just("\r".to_string())], 0..6),
        cuts in vec(0usize..200, 0..4),
    ) {
        let data: String = data.concat();
        let bytes = encode_event(event.as_deref(), &data);
        let (events, err) = run_sse(&bytes, &cuts, 1 << 20);
        prop_assert_eq!(err, None);
        let want = SseEvent {
            event: event.filter(|e| !e.is_empty()),
            data: data.replace("\r\n", "\n").replace('\r', "\n"),
            ..SseEvent::default()
        };
        prop_assert_eq!(events, vec![want]);
    }

    #[test]
    fn decoded_events_re_encode_to_themselves(input in sse_input()) {
        let (events, _) = run_sse(&input, &[], 1 << 20);
        let encoded: Vec<u8> = events.iter().flat_map(|e| e.encode().to_vec()).collect();
        let (again, err) = run_sse(&encoded, &[], 1 << 20);
        prop_assert_eq!(err, None);
        prop_assert_eq!(again, events);
    }

    #[test]
    fn json_array_round_trips_under_any_chunking(
        values in vec(arb_object(), 0..5),
        pretty in any::<bool>(),
        sep in prop_oneof![Just(","), Just("\r\n,\r\n"), Just(" , "), Just(",\n")],
        cuts in vec(0usize..2000, 0..8),
    ) {
        let body: Vec<u8> = {
            let parts: Vec<Vec<u8>> = values.iter().map(|v| to_bytes(v, pretty)).collect();
            let mut out = b"[".to_vec();
            out.extend(parts.join(sep.as_bytes()));
            out.extend_from_slice(b"]");
            out
        };
        let (elements, end) = run_array(&body, &cuts, 1 << 20);
        prop_assert_eq!(end, Ok(()));
        // Compare parses of the same bytes: serde_json's default float parsing is not
        // exactly round-trip, so the generated values themselves are not the reference.
        let parsed: Vec<Map<String, Value>> = elements
            .iter()
            .map(|e| serde_json::from_slice(e).expect("each element is one JSON object"))
            .collect();
        let want: Vec<Map<String, Value>> = values
            .iter()
            .map(|v| serde_json::from_slice(&to_bytes(v, pretty)).expect("valid JSON"))
            .collect();
        prop_assert_eq!(parsed, want);
    }

    #[test]
    fn json_array_soup_is_chunking_invariant(input in array_input(), cuts in vec(0usize..400, 0..8), limit in limit()) {
        prop_assert_eq!(run_array(&input, &cuts, limit), run_array(&input, &[], limit));
    }

    #[test]
    fn json_array_arbitrary_bytes(input in vec(any::<u8>(), 0..400), cuts in vec(0usize..400, 0..6)) {
        prop_assert_eq!(run_array(&input, &cuts, 64), run_array(&input, &[], 64));
    }

    #[test]
    fn replace_model_changes_only_the_top_level_model(obj in arb_object(), model in arb_string(), pretty in any::<bool>()) {
        let body = to_bytes(&obj, pretty);
        let out = replace_model(&body, &model).expect("valid object");
        // The reference is the original *bytes* parsed (see the float note above).
        let obj: Map<String, Value> = serde_json::from_slice(&body).expect("valid JSON");
        if obj.contains_key("model") {
            let mut want = obj.clone();
            want.insert("model".into(), Value::String(model));
            let got: Map<String, Value> = serde_json::from_slice(&out).expect("still JSON");
            prop_assert_eq!(got, want);
        } else {
            prop_assert_eq!(out, body);
        }
    }

    #[test]
    fn ensure_include_usage_merges_minimally(obj in arb_object(), pretty in any::<bool>()) {
        let body = to_bytes(&obj, pretty);
        let (out, asked) = ensure_include_usage(&body).expect("valid object");
        let obj: Map<String, Value> = serde_json::from_slice(&body).expect("valid JSON");
        let mut want = obj.clone();
        let already = obj.get("stream_options").and_then(|o| o.get("include_usage")) == Some(&Value::Bool(true));
        match want.get_mut("stream_options") {
            Some(Value::Object(options)) => {
                options.insert("include_usage".into(), Value::Bool(true));
            }
            _ => {
                want.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
            }
        }
        let got: Map<String, Value> = serde_json::from_slice(&out).expect("still JSON");
        prop_assert_eq!(got, want);
        prop_assert_eq!(asked, already);
        if asked {
            prop_assert_eq!(out, body);
        }
    }

    #[test]
    fn inspect_agrees_with_serde(obj in arb_object(), pretty in any::<bool>()) {
        let info = inspect(&to_bytes(&obj, pretty)).expect("valid object");
        prop_assert_eq!(info.model.as_deref(), obj.get("model").and_then(Value::as_str));
        prop_assert_eq!(
            info.stream_include_usage,
            obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool)
        );
    }

    #[test]
    fn cache_ttl_detection_agrees_with_a_tree_walk(obj in arb_object(), pretty in any::<bool>()) {
        fn reference(v: &Value) -> bool {
            match v {
                Value::Object(m) => m.iter().any(|(k, v)| {
                    (k == "cache_control" && v.get("ttl").and_then(Value::as_str) == Some("1h")) || reference(v)
                }),
                Value::Array(items) => items.iter().any(reference),
                _ => false,
            }
        }
        // Plant a 1h breakpoint somewhere half of the time so both answers are exercised.
        let mut obj = obj;
        if pretty {
            obj.insert("system".into(), serde_json::json!([{"text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]));
        }
        let want = reference(&Value::Object(obj.clone()));
        for p in [false, true] {
            let info = inspect(&to_bytes(&obj, p)).expect("valid object");
            prop_assert_eq!(info.has_cache_ttl_1h, want);
        }
    }

    #[test]
    fn estimates_ignore_formatting(obj in arb_object()) {
        for d in DIALECTS {
            prop_assert_eq!(
                estimate_input_tokens(d, &to_bytes(&obj, true)),
                estimate_input_tokens(d, &to_bytes(&obj, false))
            );
        }
    }

    #[test]
    fn nothing_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..300), status in 100u16..600) {
        exercise_everything(&bytes, status);
    }

    #[test]
    fn nothing_panics_on_arbitrary_json(value in arb_json(), pretty in any::<bool>(), status in 100u16..600) {
        exercise_everything(&to_bytes(&value, pretty), status);
    }

    #[test]
    fn nothing_panics_on_truncated_json(obj in arb_object(), cut in any::<prop::sample::Index>(), status in 100u16..600) {
        let body = to_bytes(&obj, false);
        let end = cut.index(body.len() + 1);
        exercise_everything(&body[..end], status);
    }
}
