//! The 12 directed dialect pairs, table-driven: requests, complete responses and streams
//! carried from each dialect to every other keep what both sides can express — system prompt,
//! text, images, tool calls with their ids paired to their results, stop sequences, sampling
//! settings, structured output, stop reasons and usage. The real client captures
//! (Claude Code, Codex, Gemini CLI) cross to every other dialect too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aether_convert::{
    Block, BlockKind, Delta, Event, Framing, ImageSource, Message, OutputFormat, Request,
    RequestContext, Response, Role, StopReason, Tool, ToolChoice, Transcoder, Usage,
};
use aether_domain::format::Dialect;
use aether_protocol::sse::SseDecoder;
use serde_json::{Value, json};

const ALL: [Dialect; 4] = [
    Dialect::AnthropicMessages,
    Dialect::OpenaiChat,
    Dialect::OpenaiResponses,
    Dialect::Gemini,
];

fn pairs() -> impl Iterator<Item = (Dialect, Dialect)> {
    ALL.into_iter()
        .flat_map(|a| ALL.into_iter().map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
}

fn ctx(req: &Request) -> RequestContext {
    RequestContext {
        model: Some(req.model.clone()),
        stream: req.stream,
    }
}

/// Renders in `d` and parses back (what a client of `d` would have sent).
fn through(d: Dialect, req: &Request) -> Request {
    let body = aether_convert::render_request(d, req);
    aether_convert::parse_request(d, &body, &ctx(req)).unwrap_or_else(|e| {
        panic!(
            "{d:?} cannot parse its own rendering: {e}\n{}",
            String::from_utf8_lossy(&body)
        )
    })
}

fn conversation() -> Request {
    Request {
        model: "m".into(),
        system: vec!["You are terse.".into()],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    Block::Text {
                        text: "What is in this picture, and the weather in Paris?".into(),
                    },
                    Block::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        },
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    Block::Text {
                        text: "A cat. Checking both cities.".into(),
                    },
                    Block::ToolUse {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Paris"}),
                    },
                    Block::ToolUse {
                        id: "call_2".into(),
                        name: "get_time".into(),
                        input: json!({"tz": "Europe/Paris"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    Block::ToolResult {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        content: vec![Block::Text {
                            text: "18°C, sunny".into(),
                        }],
                        is_error: false,
                    },
                    Block::ToolResult {
                        id: "call_2".into(),
                        name: "get_time".into(),
                        content: vec![Block::Text {
                            text: "no such zone".into(),
                        }],
                        is_error: true,
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![Block::Text {
                    text: "18°C and sunny.".into(),
                }],
            },
            Message {
                role: Role::User,
                content: vec![Block::Text {
                    text: "Thanks. Summarise as JSON.".into(),
                }],
            },
        ],
        tools: vec![
            Tool {
                name: "get_weather".into(),
                description: Some("Weather by city".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            },
            Tool {
                name: "get_time".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {"tz": {"type": "string"}}}),
            },
        ],
        tool_choice: Some(ToolChoice::Auto),
        parallel_tool_calls: None,
        max_tokens: Some(1000),
        temperature: Some(serde_json::Number::from_f64(0.5).unwrap()),
        top_p: None,
        top_k: None,
        stop: vec!["\n\nEND".into()],
        stream: false,
        output: Some(OutputFormat::JsonSchema {
            name: "summary".into(),
            schema: json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            strict: true,
        }),
        reasoning: None,
    }
}

fn texts(req: &Request) -> Vec<(Role, String)> {
    req.messages
        .iter()
        .flat_map(|m| {
            m.content.iter().filter_map(move |b| match b {
                Block::Text { text } => Some((m.role, text.clone())),
                _ => None,
            })
        })
        .collect()
}

fn calls(req: &Request) -> Vec<(String, String, Value)> {
    req.messages
        .iter()
        .flat_map(|m| m.content.iter())
        .filter_map(|b| match b {
            Block::ToolUse { id, name, input } => Some((id.clone(), name.clone(), input.clone())),
            _ => None,
        })
        .collect()
}

/// Tool results as (id, name, text, is_error).
fn results(req: &Request) -> Vec<(String, String, String, bool)> {
    req.messages
        .iter()
        .flat_map(|m| m.content.iter())
        .filter_map(|b| match b {
            Block::ToolResult {
                id,
                name,
                content,
                is_error,
            } => Some((
                id.clone(),
                name.clone(),
                content
                    .iter()
                    .filter_map(|c| match c {
                        Block::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect::<String>(),
                *is_error,
            )),
            _ => None,
        })
        .collect()
}

fn images(req: &Request) -> usize {
    req.messages
        .iter()
        .flat_map(|m| m.content.iter())
        .filter(|b| matches!(b, Block::Image { .. }))
        .count()
}

#[test]
fn requests_cross_every_pair() {
    let original = conversation();
    for (from, to) in pairs() {
        let ctx_name = format!("{from:?} → {to:?}");
        let client = through(from, &original);
        let upstream = through(to, &client);
        assert_eq!(
            upstream.system.join("\n\n"),
            "You are terse.",
            "{ctx_name}: system prompt"
        );
        assert_eq!(texts(&upstream), texts(&original), "{ctx_name}: text turns");
        assert_eq!(images(&upstream), 1, "{ctx_name}: the image");
        let (orig_calls, up_calls) = (calls(&original), calls(&upstream));
        assert_eq!(up_calls.len(), 2, "{ctx_name}: tool calls");
        for (o, u) in orig_calls.iter().zip(&up_calls) {
            assert_eq!(
                (&o.1, &o.2),
                (&u.1, &u.2),
                "{ctx_name}: tool call name and args"
            );
        }
        // Every result answers a call made before it, under the same id.
        let up_results = results(&upstream);
        assert_eq!(up_results.len(), 2, "{ctx_name}: tool results");
        for (r, c) in up_results.iter().zip(&up_calls) {
            assert_eq!(r.0, c.0, "{ctx_name}: result id pairs with its call");
            assert_eq!(r.1, c.1, "{ctx_name}: result names its function");
        }
        assert_eq!(up_results[0].2, "18°C, sunny", "{ctx_name}");
        assert!(up_results[1].2.contains("no such zone"), "{ctx_name}");
        assert_eq!(
            upstream
                .tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["get_weather", "get_time"],
            "{ctx_name}: tools"
        );
        assert_eq!(
            upstream.tools[0].parameters["properties"]["city"]["type"], "string",
            "{ctx_name}: tool schema"
        );
        assert_eq!(upstream.max_tokens, Some(1000), "{ctx_name}: max tokens");
        assert_eq!(
            upstream
                .temperature
                .as_ref()
                .and_then(serde_json::Number::as_f64),
            Some(0.5),
            "{ctx_name}: temperature"
        );
        if [from, to].contains(&Dialect::OpenaiResponses) {
            // The Responses API has no stop sequences: dropped (docs/conversion.md).
            assert!(upstream.stop.is_empty(), "{ctx_name}");
        } else {
            assert_eq!(upstream.stop, ["\n\nEND"], "{ctx_name}: stop sequences");
        }
        match &upstream.output {
            Some(OutputFormat::JsonSchema { schema, .. }) => {
                assert_eq!(schema["required"], json!(["text"]), "{ctx_name}");
            }
            other => {
                // Anthropic has no portable structured output; it may drop it.
                assert!(
                    from == Dialect::AnthropicMessages || to == Dialect::AnthropicMessages,
                    "{ctx_name}: structured output lost: {other:?}"
                );
            }
        }
    }
}

#[test]
fn streaming_flag_and_upstream_model_are_rendered() {
    let mut req = conversation();
    req.stream = true;
    req.model = "upstream-name".into();
    for d in ALL {
        let body: Value = serde_json::from_slice(&aether_convert::render_request(d, &req)).unwrap();
        match d {
            Dialect::Gemini => assert!(body.get("model").is_none() && body.get("stream").is_none()),
            _ => {
                assert_eq!(body["model"], "upstream-name", "{d:?}");
                assert_eq!(body["stream"], true, "{d:?}");
            }
        }
        if d == Dialect::OpenaiChat {
            assert_eq!(
                body["stream_options"]["include_usage"], true,
                "usage is asked for"
            );
        }
    }
}

fn capture(name: &str) -> Value {
    let path = format!(
        "{}/../../../shared/fixtures/clients/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path)
        .or_else(|_| {
            std::fs::read_to_string(format!(
                "{}/../../fixtures/clients/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
        })
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str::<Value>(&text).unwrap()["body"].clone()
}

#[test]
fn real_client_captures_cross_to_every_other_dialect() {
    let cases = [
        (
            "claude-code-2.1.328.messages.json",
            Dialect::AnthropicMessages,
            None,
        ),
        (
            "codex-cli-0.169.0.responses.json",
            Dialect::OpenaiResponses,
            None,
        ),
        (
            "gemini-cli-0.61.0.streamGenerateContent.json",
            Dialect::Gemini,
            Some("gemini-2.5-flash"),
        ),
    ];
    for (file, from, model) in cases {
        let body = capture(file);
        let ctx = RequestContext {
            model: model.map(str::to_string),
            stream: true,
        };
        let raw = serde_json::to_vec(&body).unwrap();
        let req = aether_convert::parse_request(from, &raw, &ctx)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!req.system.is_empty(), "{file}: a system prompt");
        assert!(!req.messages.is_empty(), "{file}: messages");
        assert!(req.tools.len() >= 3, "{file}: tools: {}", req.tools.len());
        assert!(req.stream, "{file}");
        for to in ALL.into_iter().filter(|d| *d != from) {
            let out = aether_convert::render_request(to, &req);
            let back = aether_convert::parse_request(to, &out, &ctx)
                .unwrap_or_else(|e| panic!("{file} → {to:?}: {e}"));
            assert_eq!(back.tools.len(), req.tools.len(), "{file} → {to:?}: tools");
            assert_eq!(
                back.system.join("\n\n").len(),
                req.system.join("\n\n").len(),
                "{file} → {to:?}: the system prompt"
            );
            assert_eq!(texts(&back), texts(&req), "{file} → {to:?}: the turns");
        }
    }
}

fn answer() -> Response {
    Response {
        id: "resp_1".into(),
        model: "m-upstream".into(),
        content: vec![
            Block::Thinking {
                text: "The user wants weather.".into(),
                signature: None,
            },
            Block::Text {
                text: "Checking two cities.".into(),
            },
            Block::ToolUse {
                id: "call_a".into(),
                name: "get_weather".into(),
                input: json!({"city": "Paris"}),
            },
            Block::ToolUse {
                id: "call_b".into(),
                name: "get_weather".into(),
                input: json!({"city": "Lyon", "units": {"temp": "C"}}),
            },
        ],
        stop: StopReason::ToolUse,
        usage: Usage {
            input: 1200,
            output: 80,
            cache_read: 1000,
            cache_write: 0,
            reasoning: 20,
        },
    }
}

/// What matters of an answer: thinking, text, tool calls (name, args), stop, usage.
#[derive(Debug, PartialEq, Default)]
struct Gist {
    thinking: String,
    text: String,
    calls: Vec<(String, Value)>,
    stop: Option<StopReason>,
    input: u64,
    output: u64,
    cache_read: u64,
}

fn gist(resp: &Response) -> Gist {
    let mut g = Gist {
        stop: Some(resp.stop.clone()),
        input: resp.usage.input,
        output: resp.usage.output,
        cache_read: resp.usage.cache_read,
        ..Gist::default()
    };
    for b in &resp.content {
        match b {
            Block::Thinking { text, .. } => g.thinking.push_str(text),
            Block::Text { text } => g.text.push_str(text),
            Block::ToolUse { name, input, .. } => g.calls.push((name.clone(), input.clone())),
            _ => {}
        }
    }
    g
}

fn fold(events: &[Event]) -> Gist {
    let mut g = Gist::default();
    let mut args: Vec<String> = Vec::new();
    let mut usage = Usage::default();
    for ev in events {
        match ev {
            Event::BlockStart {
                kind: BlockKind::ToolUse { name, .. },
                ..
            } => {
                g.calls.push((name.clone(), Value::Null));
                args.push(String::new());
            }
            Event::Delta { delta, .. } => match delta {
                Delta::Text(t) => g.text.push_str(t),
                Delta::Thinking(t) => g.thinking.push_str(t),
                Delta::ToolArgs(a) => args
                    .last_mut()
                    .expect("args inside a tool block")
                    .push_str(a),
                Delta::Signature(_) => {}
            },
            Event::Usage(u) => usage = usage.merge(*u),
            Event::Finish { stop } => g.stop = Some(stop.clone()),
            Event::Error { message, .. } => panic!("unexpected error event: {message}"),
            _ => {}
        }
    }
    for (c, a) in g.calls.iter_mut().zip(args) {
        c.1 = serde_json::from_str(&a).unwrap_or_else(|e| panic!("{e}: {a}"));
    }
    g.input = usage.input;
    g.output = usage.output;
    g.cache_read = usage.cache_read;
    g
}

/// Decodes a client stream of dialect `d` back into canonical events.
fn decode(d: Dialect, bytes: &[u8]) -> Vec<Event> {
    let mut sse = SseDecoder::new(1 << 20);
    sse.feed(bytes).unwrap();
    let mut dec = aether_convert::decoder(d);
    let mut out = Vec::new();
    while let Some(ev) = sse.next_event() {
        dec.event(ev.event.as_deref(), &ev.data, &mut out);
    }
    if let Some(ev) = sse.finish() {
        dec.event(ev.event.as_deref(), &ev.data, &mut out);
    }
    dec.end(&mut out);
    out
}

/// Checks the canonical ordering contract of a decoded stream.
fn well_ordered(events: &[Event]) {
    assert!(
        matches!(events.first(), Some(Event::Start { .. })),
        "{events:?}"
    );
    let mut open: Option<usize> = None;
    let mut next = 0;
    for ev in events {
        match ev {
            Event::Start { .. } => {}
            Event::BlockStart { index, .. } => {
                assert!(open.is_none(), "one block at a time: {events:?}");
                assert_eq!(*index, next, "indices count up: {events:?}");
                open = Some(*index);
                next += 1;
            }
            Event::Delta { index, .. } => assert_eq!(open, Some(*index), "{events:?}"),
            Event::BlockStop { index } => {
                assert_eq!(open, Some(*index), "{events:?}");
                open = None;
            }
            _ => {}
        }
    }
}

#[test]
fn responses_cross_every_pair() {
    let original = answer();
    for (from, to) in pairs() {
        let name = format!("{from:?} → {to:?}");
        let upstream_body = aether_convert::render_response(from, &original);
        let parsed = aether_convert::parse_response(from, &upstream_body)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let client_body = aether_convert::render_response(to, &parsed);
        let client = aether_convert::parse_response(to, &client_body)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (want, got) = (gist(&original), gist(&client));
        assert_eq!(got.text, want.text, "{name}");
        assert_eq!(got.calls, want.calls, "{name}");
        assert_eq!(got.stop, want.stop, "{name}");
        assert_eq!(
            (got.input, got.output),
            (want.input, want.output),
            "{name}: usage"
        );
        assert_eq!(got.cache_read, want.cache_read, "{name}: cached tokens");
        // Thinking crosses where both sides can carry it (Chat has only a de-facto field).
        if ![from, to].contains(&Dialect::OpenaiChat) {
            assert_eq!(got.thinking, want.thinking, "{name}: thinking");
        }
    }
}

#[test]
fn streams_cross_every_pair_in_any_chunking() {
    let original = answer();
    for (from, to) in pairs() {
        let name = format!("{from:?} → {to:?}");
        let upstream = aether_convert::stream_of_response(from, Framing::Sse, &original);
        // Whole, byte by byte, and in uneven pieces: the same client stream.
        let mut outputs = Vec::new();
        for step in [upstream.len(), 1, 7, 64] {
            let mut t = Transcoder::new(from, to, Framing::Sse, 1 << 20);
            let mut out = Vec::new();
            for piece in upstream.chunks(step.max(1)) {
                out.extend_from_slice(&t.feed(piece));
            }
            out.extend_from_slice(&t.finish());
            assert!(t.is_done(), "{name}");
            assert_eq!(t.stop(), Some(&StopReason::ToolUse), "{name}");
            assert_eq!(t.usage().output, 80, "{name}: usage seen by the transcoder");
            outputs.push(out);
        }
        let events = decode(to, &outputs[0]);
        well_ordered(&events);
        let got = fold(&events);
        let want = gist(&original);
        assert_eq!(
            got.text,
            want.text,
            "{name}: {}",
            String::from_utf8_lossy(&outputs[0])
        );
        assert_eq!(got.calls, want.calls, "{name}");
        assert_eq!(got.stop, want.stop, "{name}");
        assert_eq!(
            (got.input, got.output),
            (want.input, want.output),
            "{name}: usage"
        );
        for other in &outputs[1..] {
            assert_eq!(
                fold(&decode(to, other)),
                got,
                "{name}: chunking changes nothing"
            );
        }
    }
}

#[test]
fn gemini_json_array_framing_is_one_valid_array() {
    let original = answer();
    for from in [
        Dialect::AnthropicMessages,
        Dialect::OpenaiChat,
        Dialect::OpenaiResponses,
    ] {
        let upstream = aether_convert::stream_of_response(from, Framing::Sse, &original);
        let mut t = Transcoder::new(from, Dialect::Gemini, Framing::JsonArray, 1 << 20);
        let mut out = t.feed(&upstream).to_vec();
        out.extend_from_slice(&t.finish());
        let arr: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{from:?}: {e}: {}", String::from_utf8_lossy(&out)));
        let parts: Vec<Value> = arr
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| {
                c["candidates"][0]["content"]["parts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let calls: Vec<&Value> = parts.iter().filter_map(|p| p.get("functionCall")).collect();
        assert_eq!(calls.len(), 2, "{from:?}: {arr}");
        assert_eq!(calls[1]["args"]["units"]["temp"], "C");
    }
}

#[test]
fn errors_cross_in_the_clients_dialect() {
    let anthropic_429 =
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    let (status, body) = aether_convert::convert_error(Dialect::OpenaiChat, 429, anthropic_429);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 429);
    assert_eq!(v["error"]["message"], "slow down");
    let gemini_400 =
        br#"{"error":{"code":400,"message":"bad schema","status":"INVALID_ARGUMENT"}}"#;
    let (status, body) = aether_convert::convert_error(Dialect::AnthropicMessages, 400, gemini_400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 400);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "bad schema");
    // A mid-stream error event from the upstream ends the client stream in its dialect.
    let mut t = Transcoder::new(
        Dialect::AnthropicMessages,
        Dialect::OpenaiResponses,
        Framing::Sse,
        1 << 20,
    );
    let mut out = t
        .feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n")
        .to_vec();
    out.extend_from_slice(&t.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"));
    out.extend_from_slice(&t.finish());
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("response.failed"), "{text}");
    assert!(!text.contains("response.completed"), "{text}");
}
