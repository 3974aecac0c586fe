//! Realistic upstream streams of all four dialects, end to end: decoding under every
//! chunking, usage accumulation (complete and cut short), the usage-only chunk, and the
//! commit-point classifier.

use aether_domain::format::Dialect;
use aether_domain::pricing::TokenUsage;
use aether_protocol::classify::{
    ClientErrorKind, FirstEvent, KeyErrorClass, Outcome, RateLimitKind, classify_first_element,
    classify_first_event,
};
use aether_protocol::gemini_stream::JsonArrayDecoder;
use aether_protocol::sse::SseEvent;
use aether_protocol::usage::{StreamUsage, is_usage_only_chunk};

use crate::sse_events;

const ANTHROPIC: &str = "\
: upstream keep-alive

event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":11,\"cache_creation_input_tokens\":188,\"cache_read_input_tokens\":1024,\"cache_creation\":{\"ephemeral_5m_input_tokens\":88,\"ephemeral_1h_input_tokens\":100},\"output_tokens\":1,\"service_tier\":\"standard\"}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there! \\\"usage\\\" is just a word\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":6}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

const OPENAI_CHAT: &str = "\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1726012687,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}

data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1726012687,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}

data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1726012687,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}

data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1726012687,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":1,\"audio_tokens\":0}}}

data: [DONE]

";

const RESPONSES: &str = "\
event: response.created
data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}

event: response.in_progress
data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}

event: response.output_item.added
data: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}

event: response.output_text.delta
data: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi there!\"}

event: response.output_item.done
data: {\"type\":\"response.output_item.done\",\"sequence_number\":4,\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi there!\",\"annotations\":[]}]}}

event: response.completed
data: {\"type\":\"response.completed\",\"sequence_number\":5,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":2},\"output_tokens\":3,\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":15}}}

";

/// Gemini SSE as captured live (CRLF framing, pretty spacing inside the JSON).
const GEMINI_SSE: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Here you go!\\n\\n1.  **English:** Hi\\n2.  \"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 5,\"candidatesTokenCount\": 39,\"totalTokenCount\": 230,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 5}],\"thoughtsTokenCount\": 186},\"modelVersion\": \"models/gemini-2.5-flash-preview-05-20\",\"responseId\": \"AdVRaMmDCYekqtsPrb_-iAw\"}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"**Italian:** Ciao\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 5,\"candidatesTokenCount\": 44,\"totalTokenCount\": 235,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 5}],\"thoughtsTokenCount\": 186},\"modelVersion\": \"models/gemini-2.5-flash-preview-05-20\",\"responseId\": \"AdVRaMmDCYekqtsPrb_-iAw\"}\r\n\r\n";

/// Gemini without `alt=sse`: one pretty-printed JSON array, `\r\n,\r\n` between elements.
const GEMINI_ARRAY: &str = "[{\r\n  \"candidates\": [\r\n    {\r\n      \"content\": {\r\n        \"parts\": [\r\n          {\r\n            \"text\": \"Here you go {\\\"]\"\r\n          }\r\n        ],\r\n        \"role\": \"model\"\r\n      },\r\n      \"index\": 0\r\n    }\r\n  ],\r\n  \"usageMetadata\": {\r\n    \"promptTokenCount\": 1200,\r\n    \"candidatesTokenCount\": 3,\r\n    \"totalTokenCount\": 1203,\r\n    \"cachedContentTokenCount\": 1024\r\n  },\r\n  \"modelVersion\": \"gemini-2.0-flash\"\r\n}\r\n,\r\n{\r\n  \"candidates\": [\r\n    {\r\n      \"content\": {\r\n        \"parts\": [\r\n          {\r\n            \"text\": \"!\"\r\n          }\r\n        ],\r\n        \"role\": \"model\"\r\n      },\r\n      \"finishReason\": \"STOP\",\r\n      \"index\": 0\r\n    }\r\n  ],\r\n  \"usageMetadata\": {\r\n    \"promptTokenCount\": 1200,\r\n    \"candidatesTokenCount\": 4,\r\n    \"totalTokenCount\": 1214,\r\n    \"cachedContentTokenCount\": 1024,\r\n    \"thoughtsTokenCount\": 10\r\n  },\r\n  \"modelVersion\": \"gemini-2.0-flash\"\r\n}\r\n]";

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

fn all_streams() -> [(Dialect, &'static str, usize, TokenUsage); 4] {
    [
        (
            Dialect::AnthropicMessages,
            ANTHROPIC,
            8,
            tu(11, 6, 88, 100, 1024, 0),
        ),
        (Dialect::OpenaiChat, OPENAI_CHAT, 5, tu(5, 2, 0, 0, 4, 1)),
        (
            Dialect::OpenaiResponses,
            RESPONSES,
            6,
            tu(10, 3, 0, 0, 2, 1),
        ),
        (Dialect::Gemini, GEMINI_SSE, 2, tu(5, 230, 0, 0, 0, 186)),
    ]
}

fn usage_of(dialect: Dialect, events: &[SseEvent]) -> Option<TokenUsage> {
    let mut acc = StreamUsage::new(dialect);
    for ev in events {
        acc.observe_sse(ev);
    }
    acc.usage()
}

#[test]
fn every_chunking_yields_the_same_events() {
    for (dialect, text, count, _) in all_streams() {
        let bytes = text.as_bytes();
        let whole = sse_events(bytes, &[]);
        assert_eq!(whole.len(), count, "{dialect:?}");
        for cut in 0..=bytes.len() {
            assert_eq!(sse_events(bytes, &[cut]), whole, "{dialect:?} cut at {cut}");
        }
        for size in [1, 2, 3, 7, 64] {
            let cuts: Vec<usize> = (0..bytes.len()).step_by(size).collect();
            assert_eq!(
                sse_events(bytes, &cuts),
                whole,
                "{dialect:?} chunks of {size}"
            );
        }
    }
}

#[test]
fn line_ending_styles_decode_identically() {
    for (dialect, text, _, _) in all_streams() {
        let lf = text.replace("\r\n", "\n");
        let want = sse_events(lf.as_bytes(), &[]);
        for style in ["\r\n", "\r"] {
            let other = lf.replace('\n', style);
            assert_eq!(
                sse_events(other.as_bytes(), &[]),
                want,
                "{dialect:?} {style:?}"
            );
        }
    }
}

#[test]
fn complete_streams_report_final_usage() {
    for (dialect, text, _, want) in all_streams() {
        let events = sse_events(text.as_bytes(), &[]);
        assert_eq!(usage_of(dialect, &events), Some(want), "{dialect:?}");
    }
}

#[test]
fn streams_cut_short_report_what_was_seen() {
    let cases: &[(Dialect, &str, usize, Option<TokenUsage>)] = &[
        // Only message_start arrived: input side plus the placeholder output.
        (
            Dialect::AnthropicMessages,
            ANTHROPIC,
            3,
            Some(tu(11, 1, 88, 100, 1024, 0)),
        ),
        (Dialect::AnthropicMessages, ANTHROPIC, 0, None),
        // Chat without the final usage chunk has nothing to report.
        (Dialect::OpenaiChat, OPENAI_CHAT, 3, None),
        (Dialect::OpenaiResponses, RESPONSES, 5, None),
        // Gemini's first chunk already carries cumulative usage.
        (
            Dialect::Gemini,
            GEMINI_SSE,
            1,
            Some(tu(5, 225, 0, 0, 0, 186)),
        ),
    ];
    for (dialect, text, keep, want) in cases {
        let events = sse_events(text.as_bytes(), &[]);
        assert_eq!(
            usage_of(*dialect, &events[..*keep]),
            *want,
            "{dialect:?} first {keep}"
        );
    }
}

#[test]
fn a_cut_mid_event_flushes_nothing_half_parsed() {
    // The connection dies in the middle of message_delta's data line: `finish` dispatches
    // the truncated JSON, which usage extraction must shrug off.
    let cut = ANTHROPIC.find("\"usage\":{\"output_tokens\":6").unwrap() + 10;
    let events = sse_events(&ANTHROPIC.as_bytes()[..cut], &[]);
    assert_eq!(
        usage_of(Dialect::AnthropicMessages, &events),
        Some(tu(11, 1, 88, 100, 1024, 0))
    );
}

#[test]
fn openai_usage_only_chunk_is_exactly_the_last_json_chunk() {
    let events = sse_events(OPENAI_CHAT.as_bytes(), &[]);
    let flags: Vec<bool> = events.iter().map(is_usage_only_chunk).collect();
    assert_eq!(flags, [false, false, false, true, false]);
}

#[test]
fn gemini_array_stream_frames_and_counts_under_any_chunking() {
    let bytes = GEMINI_ARRAY.as_bytes();
    let split = |cuts: &[usize]| {
        let mut d = JsonArrayDecoder::new(1 << 16);
        let mut prev = 0;
        let mut out = Vec::new();
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            d.feed(&bytes[prev..c]).unwrap();
            out.extend(std::iter::from_fn(|| d.next_element()));
            prev = c;
        }
        d.finish().unwrap();
        out
    };
    let whole = split(&[]);
    assert_eq!(whole.len(), 2);
    for cut in 0..=bytes.len() {
        assert_eq!(split(&[cut]), whole, "cut at {cut}");
    }
    let mut acc = StreamUsage::new(Dialect::Gemini);
    for el in &whole {
        assert_eq!(classify_first_element(el), FirstEvent::Data);
        acc.observe_json(el);
    }
    assert_eq!(acc.usage(), Some(tu(176, 14, 0, 0, 1024, 10)));
    assert_eq!(
        aether_protocol::usage::from_response(Dialect::Gemini, bytes),
        Some(tu(176, 14, 0, 0, 1024, 10)),
        "the array read to the end gives the same answer"
    );
}

#[test]
fn commit_point_over_successful_streams() {
    use FirstEvent::{Data, Ignorable};
    let expected: [(Dialect, &str, &[FirstEvent]); 4] = [
        (
            Dialect::AnthropicMessages,
            ANTHROPIC,
            &[Data, Data, Ignorable, Data],
        ),
        (
            Dialect::OpenaiChat,
            OPENAI_CHAT,
            &[Data, Data, Data, Data, Data],
        ),
        (
            Dialect::OpenaiResponses,
            RESPONSES,
            &[Ignorable, Ignorable, Data, Data, Data, Data],
        ),
        (Dialect::Gemini, GEMINI_SSE, &[Data, Data]),
    ];
    for (dialect, text, verdicts) in expected {
        let events = sse_events(text.as_bytes(), &[]);
        let got: Vec<FirstEvent> = events
            .iter()
            .take(verdicts.len())
            .map(|e| classify_first_event(dialect, e))
            .collect();
        assert_eq!(got, verdicts, "{dialect:?}");
    }
}

#[test]
fn errors_inside_200_streams_are_caught_before_commit() {
    let server = Outcome::Server { status: 500 };
    let cases: &[(Dialect, &str, Outcome, &str)] = &[
        (
            Dialect::AnthropicMessages,
            "event: ping\ndata: {\"type\": \"ping\"}\n\nevent: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
            Outcome::Overloaded,
            "Overloaded",
        ),
        (
            Dialect::AnthropicMessages,
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n",
            server,
            "Internal server error",
        ),
        (
            Dialect::OpenaiChat,
            "data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
            server,
            "The server had an error while processing your request. Sorry about that!",
        ),
        (
            Dialect::OpenaiChat,
            // Azure's filter preamble comes first and must not commit the stream.
            "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\ndata: {\"error\":{\"message\":\"Rate limit reached for gpt-4o on requests per min (RPM): Limit 3.\",\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n",
            Outcome::KeyError {
                class: KeyErrorClass::RateLimited {
                    kind: RateLimitKind::Requests,
                },
            },
            "Rate limit reached for gpt-4o on requests per min (RPM): Limit 3.",
        ),
        (
            Dialect::OpenaiResponses,
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached for gpt-5 on tokens per min (TPM): Limit 30000. Please try again in 2s.\"}}}\n\n",
            Outcome::KeyError {
                class: KeyErrorClass::RateLimited {
                    kind: RateLimitKind::Tokens,
                },
            },
            "Rate limit reached for gpt-5 on tokens per min (TPM): Limit 30000. Please try again in 2s.",
        ),
        (
            Dialect::OpenaiResponses,
            "event: error\ndata: {\"type\":\"error\",\"sequence_number\":2,\"error\":{\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\",\"message\":\"Your input exceeds the context window of this model. Please adjust your input and try again.\",\"param\":\"input\"}}\n\n",
            Outcome::ClientError {
                kind: ClientErrorKind::ContextLengthExceeded,
            },
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
        ),
        (
            Dialect::OpenaiResponses,
            // The SDK's flat shape.
            "data: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"param\":null,\"sequence_number\":1}\n\n",
            server,
            "boom",
        ),
        (
            Dialect::OpenaiResponses,
            "data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"insufficient_quota\",\"message\":\"You exceeded your current quota.\"}}}\n\n",
            Outcome::KeyError {
                class: KeyErrorClass::Billing,
            },
            "You exceeded your current quota.",
        ),
        (
            Dialect::Gemini,
            "data: {\"error\": {\"code\": 429, \"message\": \"Resource exhausted. Please try again later.\", \"status\": \"RESOURCE_EXHAUSTED\"}}\r\n\r\n",
            Outcome::KeyError {
                class: KeyErrorClass::RateLimited {
                    kind: RateLimitKind::Unknown,
                },
            },
            "Resource exhausted. Please try again later.",
        ),
        (
            Dialect::Gemini,
            "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded. Please try again later.\", \"status\": \"UNAVAILABLE\"}}\n\n",
            Outcome::Overloaded,
            "The model is overloaded. Please try again later.",
        ),
    ];
    for (dialect, text, outcome, message) in cases {
        let events = sse_events(text.as_bytes(), &[]);
        let verdict = events
            .iter()
            .map(|e| classify_first_event(*dialect, e))
            .find(|v| *v != FirstEvent::Ignorable)
            .expect("a decisive event");
        assert_eq!(
            verdict,
            FirstEvent::Error {
                outcome: *outcome,
                message: (*message).to_string(),
            },
            "{text}"
        );
    }
}

#[test]
fn odd_first_events() {
    let ev = |event: Option<&str>, data: &str| SseEvent {
        event: event.map(str::to_string),
        data: data.to_string(),
        ..SseEvent::default()
    };
    let malformed = FirstEvent::Error {
        outcome: Outcome::Malformed { status: 200 },
        message: "upstream sent a non-JSON stream event".into(),
    };
    let cases: &[(Dialect, SseEvent, FirstEvent)] = &[
        (
            Dialect::AnthropicMessages,
            ev(Some("ping"), ""),
            FirstEvent::Ignorable,
        ),
        (
            Dialect::AnthropicMessages,
            ev(Some("future_event"), "{}"),
            FirstEvent::Ignorable,
        ),
        (
            Dialect::AnthropicMessages,
            ev(None, "<html>"),
            malformed.clone(),
        ),
        (Dialect::OpenaiChat, ev(None, "[DONE]"), FirstEvent::Data),
        (Dialect::OpenaiChat, ev(None, "not json"), malformed.clone()),
        (
            Dialect::OpenaiChat,
            ev(None, "{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}"),
            FirstEvent::Data,
        ),
        (
            Dialect::OpenaiResponses,
            ev(Some("keepalive"), "{\"type\":\"keepalive\"}"),
            FirstEvent::Ignorable,
        ),
        (
            Dialect::OpenaiResponses,
            ev(Some("response.queued"), "{}"),
            FirstEvent::Ignorable,
        ),
        (
            Dialect::OpenaiResponses,
            ev(Some("response.completed"), "{\"response\":{}}"),
            FirstEvent::Data,
        ),
        (
            Dialect::Gemini,
            ev(None, "{\"error\":null,\"candidates\":[]}"),
            FirstEvent::Data,
        ),
        (
            Dialect::Gemini,
            ev(Some("retry"), ""),
            FirstEvent::Ignorable,
        ),
    ];
    for (dialect, event, want) in cases {
        assert_eq!(
            &classify_first_event(*dialect, event),
            want,
            "{dialect:?} {event:?}"
        );
    }
}

#[test]
fn gemini_array_error_element_is_a_key_error() {
    let body = b"[{\n  \"error\": {\n    \"code\": 400,\n    \"message\": \"API key not valid. Please pass a valid API key.\",\n    \"status\": \"INVALID_ARGUMENT\",\n    \"details\": [\n      {\n        \"@type\": \"type.googleapis.com/google.rpc.ErrorInfo\",\n        \"reason\": \"API_KEY_INVALID\",\n        \"domain\": \"googleapis.com\"\n      }\n    ]\n  }\n}\n]";
    let mut d = JsonArrayDecoder::new(4096);
    d.feed(body).unwrap();
    d.finish().unwrap();
    let first = d.next_element().unwrap();
    assert_eq!(
        classify_first_element(&first),
        FirstEvent::Error {
            outcome: Outcome::KeyError {
                class: KeyErrorClass::Unauthorized
            },
            message: "API key not valid. Please pass a valid API key.".into(),
        }
    );
    assert!(matches!(
        classify_first_element(b"{oops"),
        FirstEvent::Error { .. }
    ));
}
