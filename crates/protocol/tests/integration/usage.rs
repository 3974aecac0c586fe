//! `usage::from_response` over realistic non-streaming bodies, and the streaming accumulator's
//! per-dialect rules.

use aether_domain::format::Dialect;
use aether_domain::pricing::TokenUsage;
use aether_protocol::usage::{StreamUsage, from_response};

fn tu(input: u64, output: u64, c5: u64, c1: u64, read: u64, reasoning: u64) -> TokenUsage {
    TokenUsage {
        input,
        output,
        cache_creation_5m: c5,
        cache_creation_1h: c1,
        cache_read: read,
        reasoning,
    }
}

#[test]
fn non_stream_bodies() {
    let cases: &[(&str, Dialect, &str, Option<TokenUsage>)] = &[
        (
            "anthropic with 5m/1h breakdown",
            Dialect::AnthropicMessages,
            r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
               "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,
               "usage":{"input_tokens":21,"cache_creation_input_tokens":188,"cache_read_input_tokens":1024,
                        "cache_creation":{"ephemeral_5m_input_tokens":88,"ephemeral_1h_input_tokens":100},
                        "output_tokens":42,"service_tier":"standard",
                        "server_tool_use":{"web_search_requests":0,"web_fetch_requests":0}}}"#,
            Some(tu(21, 42, 88, 100, 1024, 0)),
        ),
        (
            "anthropic with only the cache-creation total",
            Dialect::AnthropicMessages,
            r#"{"usage":{"input_tokens":377,"cache_creation_input_tokens":50,"cache_read_input_tokens":null,"output_tokens":65}}"#,
            Some(tu(377, 65, 50, 0, 0, 0)),
        ),
        (
            "anthropic error body",
            Dialect::AnthropicMessages,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            None,
        ),
        (
            "openai chat",
            Dialect::OpenaiChat,
            r#"{"id":"chatcmpl-A6","object":"chat.completion","created":1726012687,"model":"gpt-4o-2024-08-06",
               "choices":[{"index":0,"message":{"role":"assistant","content":"This is a test!"},"finish_reason":"stop"}],
               "usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,
                        "prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},
                        "completion_tokens_details":{"reasoning_tokens":10,"audio_tokens":0}}}"#,
            Some(tu(93, 46, 0, 0, 1024, 10)),
        ),
        (
            "openai chat from an old compat backend (no details)",
            Dialect::OpenaiChat,
            r#"{"usage":{"prompt_tokens":80,"completion_tokens":17,"total_tokens":97}}"#,
            Some(tu(80, 17, 0, 0, 0, 0)),
        ),
        (
            "openai chat without usage",
            Dialect::OpenaiChat,
            r#"{"usage":null}"#,
            None,
        ),
        (
            "responses",
            Dialect::OpenaiResponses,
            r#"{"id":"resp_67cc","object":"response","status":"completed","error":null,
               "output":[{"type":"message","content":[{"type":"output_text","text":"Hi there!"}]}],
               "usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":20},"output_tokens":87,
                        "output_tokens_details":{"reasoning_tokens":64},"total_tokens":123}}"#,
            Some(tu(16, 87, 0, 0, 20, 64)),
        ),
        (
            "gemini with cache and thoughts",
            Dialect::Gemini,
            r#"{"candidates":[{"content":{"parts":[{"text":"It's 18°C and sunny."}],"role":"model"},"finishReason":"STOP","index":0}],
               "usageMetadata":{"promptTokenCount":1200,"candidatesTokenCount":12,"totalTokenCount":1402,
                                "cachedContentTokenCount":1024,"thoughtsTokenCount":190,
                                "promptTokensDetails":[{"modality":"TEXT","tokenCount":1200}]},
               "modelVersion":"gemini-2.5-flash","responseId":"AdVRaMmDCYekqtsPrb_-iAw"}"#,
            Some(tu(176, 202, 0, 0, 1024, 190)),
        ),
        (
            "gemini tool-use prompt tokens are input",
            Dialect::Gemini,
            r#"{"usageMetadata":{"promptTokenCount":10,"toolUsePromptTokenCount":5,"candidatesTokenCount":1}}"#,
            Some(tu(15, 1, 0, 0, 0, 0)),
        ),
        (
            "gemini blocked prompt still reports usage",
            Dialect::Gemini,
            r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}"#,
            Some(tu(7, 0, 0, 0, 0, 0)),
        ),
        (
            "gemini array: the last element with usage wins",
            Dialect::Gemini,
            r#"[{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3}},
                {"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":4}},
                {"candidates":[]}]"#,
            Some(tu(5, 4, 0, 0, 0, 0)),
        ),
        (
            "gemini array error",
            Dialect::Gemini,
            r#"[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]"#,
            None,
        ),
        ("not json", Dialect::OpenaiChat, "<html>502</html>", None),
        (
            "truncated",
            Dialect::OpenaiResponses,
            r#"{"usage":{"input_tokens":3"#,
            None,
        ),
    ];
    for (name, dialect, body, want) in cases {
        assert_eq!(from_response(*dialect, body.as_bytes()), *want, "{name}");
    }
}

#[test]
fn anthropic_message_delta_overrides() {
    let start = br#"{"type":"message_start","message":{"usage":{"input_tokens":100,"cache_read_input_tokens":50,"cache_creation_input_tokens":10,"output_tokens":1}}}"#;
    let cases: &[(&str, TokenUsage)] = &[
        (
            r#"{"type":"message_delta","usage":{"output_tokens":30}}"#,
            tu(100, 30, 10, 0, 50, 0),
        ),
        (
            // Zeros in the delta do not erase what message_start said.
            r#"{"type":"message_delta","usage":{"output_tokens":30,"input_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}"#,
            tu(100, 30, 10, 0, 50, 0),
        ),
        (
            // Non-zero cumulative input-side fields replace it (server tools re-bill input).
            r#"{"type":"message_delta","usage":{"output_tokens":30,"input_tokens":250,"cache_read_input_tokens":70,"cache_creation_input_tokens":40,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":40}}}"#,
            tu(250, 30, 0, 40, 70, 0),
        ),
    ];
    for (delta, want) in cases {
        let mut acc = StreamUsage::new(Dialect::AnthropicMessages);
        acc.observe_json(start);
        acc.observe_json(delta.as_bytes());
        assert_eq!(acc.usage(), Some(*want), "{delta}");
    }

    // Output is cumulative: the last delta wins, deltas are never summed.
    let mut acc = StreamUsage::new(Dialect::AnthropicMessages);
    acc.observe_json(start);
    for n in [5, 17, 30] {
        acc.observe_json(
            format!(r#"{{"type":"message_delta","usage":{{"output_tokens":{n}}}}}"#).as_bytes(),
        );
    }
    assert_eq!(acc.usage().map(|u| u.output), Some(30));

    // A delta that repeats only the cache-write total keeps message_start's 5m/1h split.
    let start_split = br#"{"type":"message_start","message":{"usage":{"input_tokens":100,"cache_creation_input_tokens":3000,"cache_creation":{"ephemeral_5m_input_tokens":2000,"ephemeral_1h_input_tokens":1000},"output_tokens":1}}}"#;
    let mut acc = StreamUsage::new(Dialect::AnthropicMessages);
    acc.observe_json(start_split);
    acc.observe_json(br#"{"type":"message_delta","usage":{"output_tokens":9,"cache_creation_input_tokens":3000}}"#);
    assert_eq!(acc.usage(), Some(tu(100, 9, 2000, 1000, 0, 0)));
}

#[test]
fn responses_terminal_events() {
    let usage = r#"{"input_tokens":9,"input_tokens_details":{"cached_tokens":0},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0}}"#;
    for (kind, counted) in [
        ("response.completed", true),
        ("response.incomplete", true),
        ("response.failed", true),
        ("response.created", false),
        ("response.in_progress", false),
    ] {
        let mut acc = StreamUsage::new(Dialect::OpenaiResponses);
        acc.observe_json(
            format!(r#"{{"type":"{kind}","response":{{"usage":{usage}}}}}"#).as_bytes(),
        );
        assert_eq!(acc.usage().is_some(), counted, "{kind}");
    }
}

#[test]
fn gemini_cumulative_usage_is_never_summed() {
    let mut acc = StreamUsage::new(Dialect::Gemini);
    for n in [3, 8, 12] {
        acc.observe_json(
            format!(r#"{{"usageMetadata":{{"promptTokenCount":5,"candidatesTokenCount":{n}}}}}"#)
                .as_bytes(),
        );
        // A chunk without usage keeps the last figures.
        acc.observe_json(br#"{"candidates":[{"content":{"parts":[{"text":"x"}]}}]}"#);
    }
    assert_eq!(acc.usage(), Some(tu(5, 12, 0, 0, 0, 0)));
}

#[test]
fn openai_chat_continuous_usage_last_wins() {
    let mut acc = StreamUsage::new(Dialect::OpenaiChat);
    acc.observe_json(br#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#);
    acc.observe_json(br#"{"choices":[{"delta":{"content":"b"}}],"usage":null}"#);
    acc.observe_json(br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#);
    assert_eq!(acc.usage(), Some(tu(9, 2, 0, 0, 0, 0)));
}
