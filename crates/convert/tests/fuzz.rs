//! The fuzz target: no input panics a converter or the stream transcoder.
//!
//! Property-based (proptest), so it runs in CI with the normal test command. The budget is
//! fixed per run: `AETHER_FUZZ_CASES` cases per property (default 512; `.ci/run` sets a
//! larger budget). Inputs are built to get past the JSON parser and deep into the codecs:
//! arbitrary JSON trees shaped like each dialect's requests, responses and stream events,
//! arbitrary byte streams cut at arbitrary points, and arbitrary canonical event sequences.

#![allow(clippy::unwrap_used)]

use aether_convert::{
    Block, BlockKind, Delta, Event, Framing, Response, StopReason, Transcoder, Usage,
};
use aether_domain::format::Dialect;
use aether_protocol::errors::ErrorKind;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const ALL: [Dialect; 4] = [
    Dialect::AnthropicMessages,
    Dialect::OpenaiChat,
    Dialect::OpenaiResponses,
    Dialect::Gemini,
];

fn cases() -> u32 {
    std::env::var("AETHER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Keys the four dialects use, so generated objects hit real code paths.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "system",
    "role",
    "content",
    "type",
    "text",
    "tools",
    "tool_choice",
    "tool_calls",
    "tool_call_id",
    "function",
    "name",
    "arguments",
    "input",
    "id",
    "call_id",
    "output",
    "instructions",
    "contents",
    "parts",
    "functionCall",
    "functionResponse",
    "args",
    "response",
    "inlineData",
    "fileData",
    "mimeType",
    "data",
    "image_url",
    "url",
    "source",
    "media_type",
    "tool_use_id",
    "is_error",
    "thinking",
    "signature",
    "thought",
    "max_tokens",
    "max_output_tokens",
    "generationConfig",
    "maxOutputTokens",
    "stop",
    "stop_sequences",
    "temperature",
    "top_p",
    "choices",
    "delta",
    "message",
    "finish_reason",
    "stop_reason",
    "usage",
    "usageMetadata",
    "candidates",
    "finishReason",
    "index",
    "item",
    "output_index",
    "content_block",
    "partial_json",
    "error",
    "response_format",
    "text.format",
    "format",
    "schema",
    "json_schema",
    "reasoning",
    "effort",
    "budget_tokens",
    "summary",
    "parameters",
    "input_schema",
    "functionDeclarations",
    "systemInstruction",
    "toolConfig",
    "stream",
    "prompt_tokens",
    "input_tokens",
    "output_tokens",
    "promptTokenCount",
    "status",
];

const STRINGS: &[&str] = &[
    "user",
    "assistant",
    "model",
    "system",
    "developer",
    "tool",
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "function",
    "function_call",
    "function_call_output",
    "message",
    "input_text",
    "output_text",
    "input_image",
    "reasoning",
    "auto",
    "any",
    "none",
    "required",
    "json_object",
    "json_schema",
    "end_turn",
    "tool_calls",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "text_delta",
    "input_json_delta",
    "message_delta",
    "response.created",
    "response.output_text.delta",
    "response.completed",
    "data:image/png;base64,AAAA",
    "{\"a\":1}",
    "{",
    "",
    "\u{0}",
    "é",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(STRINGS).prop_map(|s| Value::String(s.to_string())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

fn dialect() -> impl Strategy<Value = Dialect> {
    prop::sample::select(ALL.to_vec())
}

/// A stream of SSE events with plausible names and JSON or junk data, as raw bytes.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::option::of(prop::sample::select(STRINGS));
    let data = prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        Just("[DONE]".to_string()),
        ".{0,20}",
    ];
    prop::collection::vec((names, data), 0..24).prop_map(|events| {
        let mut out = Vec::new();
        for (name, data) in events {
            if let Some(n) = name {
                out.extend_from_slice(format!("event: {n}\n").as_bytes());
            }
            for line in data.split('\n') {
                out.extend_from_slice(format!("data: {line}\n").as_bytes());
            }
            out.push(b'\n');
        }
        out
    })
}

fn event() -> impl Strategy<Value = Event> {
    let idx = 0usize..4;
    prop_oneof![
        (".{0,8}", ".{0,8}").prop_map(|(id, model)| Event::Start { id, model }),
        (idx.clone(), 0u8..3, ".{0,6}").prop_map(|(index, k, name)| Event::BlockStart {
            index,
            kind: match k {
                0 => BlockKind::Text,
                1 => BlockKind::Thinking,
                _ => BlockKind::ToolUse {
                    id: format!("call_{index}"),
                    name,
                },
            },
        }),
        (idx.clone(), 0u8..4, ".{0,10}").prop_map(|(index, k, s)| Event::Delta {
            index,
            delta: match k {
                0 => Delta::Text(s),
                1 => Delta::Thinking(s),
                2 => Delta::Signature(s),
                _ => Delta::ToolArgs(s),
            },
        }),
        idx.prop_map(|index| Event::BlockStop { index }),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(i, o, c)| Event::Usage(Usage {
            input: u64::from(i),
            output: u64::from(o),
            cache_read: u64::from(c),
            cache_write: 0,
            reasoning: 0,
        })),
        prop::sample::select(vec![
            StopReason::EndTurn,
            StopReason::MaxTokens,
            StopReason::ToolUse,
            StopReason::ContentFilter,
            StopReason::StopSequence(Some("END".into())),
            StopReason::StopSequence(None),
        ])
        .prop_map(|stop| Event::Finish { stop }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn no_request_panics_any_converter(v in json_value(), from in dialect(), model in prop::option::of(".{0,6}"), stream in any::<bool>()) {
        let body = serde_json::to_vec(&v).unwrap();
        let ctx = aether_convert::RequestContext { model, stream };
        if let Ok(req) = aether_convert::parse_request(from, &body, &ctx) {
            for to in ALL {
                let out = aether_convert::render_request(to, &req);
                // What we render is JSON, and a dialect reads back what it rendered.
                let _: Value = serde_json::from_slice(&out).unwrap();
                let _ = aether_convert::parse_request(to, &out, &ctx);
            }
        }
    }

    #[test]
    fn no_response_panics_any_converter(v in json_value(), from in dialect()) {
        let body = serde_json::to_vec(&v).unwrap();
        if let Ok(resp) = aether_convert::parse_response(from, &body) {
            for to in ALL {
                let out = aether_convert::render_response(to, &resp);
                let _: Value = serde_json::from_slice(&out).unwrap();
                let _ = aether_convert::stream_of_response(to, Framing::Sse, &resp);
            }
        }
        let _ = aether_convert::convert_error(from, 500, &body);
    }

    #[test]
    fn raw_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), d in dialect()) {
        let ctx = aether_convert::RequestContext::default();
        let _ = aether_convert::parse_request(d, &bytes, &ctx);
        let _ = aether_convert::parse_response(d, &bytes);
        for to in ALL {
            let mut t = Transcoder::new(d, to, Framing::Sse, 4096);
            let _ = t.feed(&bytes);
            let _ = t.finish();
        }
    }

    #[test]
    fn no_stream_panics_the_transcoder(
        stream in sse_stream(),
        from in dialect(),
        to in dialect(),
        cut in prop::collection::vec(1usize..40, 1..8),
        array in any::<bool>(),
        fail in any::<bool>(),
    ) {
        let framing = if array { Framing::JsonArray } else { Framing::Sse };
        let mut t = Transcoder::new(from, to, framing, 1 << 16);
        let mut out = Vec::new();
        let mut rest = stream.as_slice();
        let mut i = 0;
        while !rest.is_empty() {
            let n = cut[i % cut.len()].min(rest.len());
            out.extend_from_slice(&t.feed(&rest[..n]));
            rest = &rest[n..];
            i += 1;
        }
        if fail {
            out.extend_from_slice(&t.fail_with(ErrorKind::UpstreamError, "cut"));
        }
        out.extend_from_slice(&t.finish());
        prop_assert!(t.is_done());
        // The client always gets a complete frame sequence: for a Gemini array, valid JSON.
        if to == Dialect::Gemini && array {
            let parsed: Result<Value, _> = serde_json::from_slice(&out);
            prop_assert!(parsed.is_ok(), "{}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn no_event_sequence_panics_an_encoder(events in prop::collection::vec(event(), 0..40), to in dialect()) {
        let mut enc = aether_convert::encoder(to);
        let mut frames = Vec::new();
        for e in &events {
            enc.event(e, &mut frames);
        }
        enc.end(&mut frames);
        for f in &frames {
            if f.data != "[DONE]" {
                let _: Value = serde_json::from_str(&f.data).unwrap();
            }
        }
    }

    #[test]
    fn rendered_responses_round_trip_text_and_calls(
        text in ".{0,40}",
        args in prop::collection::vec(("[a-z]{1,6}", ".{0,10}"), 0..3),
        from in dialect(),
        to in dialect(),
    ) {
        let mut content = Vec::new();
        if !text.is_empty() {
            content.push(Block::Text { text: text.clone() });
        }
        for (i, (k, v)) in args.iter().enumerate() {
            content.push(Block::ToolUse { id: format!("call_{i}"), name: format!("f{i}"), input: json!({ k.clone(): v }) });
        }
        let stop = if args.is_empty() { StopReason::EndTurn } else { StopReason::ToolUse };
        let resp = Response { id: "r".into(), model: "m".into(), content, stop: stop.clone(), usage: Usage { input: 3, output: 4, ..Usage::default() } };
        let mid = aether_convert::parse_response(from, &aether_convert::render_response(from, &resp)).unwrap();
        let back = aether_convert::parse_response(to, &aether_convert::render_response(to, &mid)).unwrap();
        let said: String = back.content.iter().filter_map(|b| match b { Block::Text { text } => Some(text.as_str()), _ => None }).collect();
        prop_assert_eq!(said, text);
        let calls: Vec<Value> = back.content.iter().filter_map(|b| match b { Block::ToolUse { input, .. } => Some(input.clone()), _ => None }).collect();
        let want: Vec<Value> = args.iter().map(|(k, v)| json!({ k.clone(): v })).collect();
        prop_assert_eq!(calls, want);
        prop_assert_eq!(back.stop, stop);
    }
}
