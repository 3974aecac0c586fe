//! Successful replies and in-stream error events, rendered exactly as each
//! upstream sends them.
//!
//! Every renderer produces either one JSON body (non-stream) or a list of
//! *frames*: one frame is one complete SSE event (or one element of Gemini's
//! JSON-array stream). Frames are the unit that `SlowStream` paces and
//! `MidStreamDisconnect` counts.
//!
//! Shapes follow the public SDK types (anthropic, openai, google-genai) and
//! recorded live payloads. They are written as borrowed `Serialize` structs
//! rather than `serde_json::Value`s for two reasons: keys come out in the
//! providers' own order (`"type"` first, as the real APIs send it; a `Value`
//! map would sort them), and nothing is allocated per field on the hot path.
//! SDK stream accumulators need some fields that look optional (e.g.
//! `logprobs` on Responses text events), so those are always present.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::dialect::{Dialect, ErrorBody};
use crate::step::Usage;

/// Text used when a step does not script any.
pub(crate) const DEFAULT_TEXT: &str =
    "Hello! This is a deterministic reply from the Aether mock upstream.";

/// How the client asked to receive the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One JSON body.
    Json,
    /// Server-sent events.
    Sse,
    /// Gemini `streamGenerateContent` without `alt=sse`: a JSON array
    /// flushed element by element.
    JsonArray,
}

impl Mode {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Mode::Sse => "text/event-stream",
            Mode::Json | Mode::JsonArray => "application/json",
        }
    }
}

/// Tool call ready to render: arguments pre-serialised once.
pub(crate) struct RenderTool<'a> {
    pub(crate) name: &'a str,
    pub(crate) args: &'a Value,
    pub(crate) args_json: String,
}

/// Everything a renderer needs for one successful reply.
pub(crate) struct Reply<'a> {
    pub(crate) model: &'a str,
    pub(crate) text: &'a str,
    pub(crate) tool: Option<RenderTool<'a>>,
    pub(crate) usage: Usage,
    /// Request sequence number, used to make ids unique and deterministic.
    pub(crate) seq: u64,
    /// Unix seconds for `created` fields.
    pub(crate) created: u64,
    /// OpenAI chat: `stream_options.include_usage`.
    pub(crate) include_usage: bool,
}

impl Reply<'_> {
    /// Whether to emit a text block: always unless the reply is a bare tool call.
    fn has_text(&self) -> bool {
        !self.text.is_empty() || self.tool.is_none()
    }
}

/// Split text into stream deltas at word boundaries (each delta keeps its
/// trailing whitespace), grouping words so a long text never exceeds 32
/// deltas.
pub(crate) fn split_text(text: &str) -> Vec<&str> {
    let mut starts = vec![0];
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        if prev_ws && !c.is_whitespace() {
            starts.push(i);
        }
        prev_ws = c.is_whitespace();
    }
    let per = starts.len().div_ceil(32).max(1);
    let starts: Vec<usize> = starts.into_iter().step_by(per).collect();
    let mut out = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let e = starts.get(n + 1).copied().unwrap_or(text.len());
        if e > s {
            out.push(&text[s..e]);
        }
    }
    out
}

/// Split tool arguments JSON into up to three fragments on char boundaries,
/// like the partial JSON deltas upstreams stream.
fn split_args(s: &str) -> Vec<&str> {
    let len = s.len();
    if len < 6 {
        return vec![s];
    }
    let mut cuts = vec![0];
    for target in [len / 3, 2 * len / 3] {
        let mut c = target;
        while !s.is_char_boundary(c) {
            c += 1;
        }
        if c > *cuts.last().unwrap_or(&0) && c < len {
            cuts.push(c);
        }
    }
    cuts.push(len);
    cuts.windows(2).map(|w| &s[w[0]..w[1]]).collect()
}

/// Deterministic default output count: words in the text plus a rough token
/// count for the tool arguments.
pub(crate) fn default_output_tokens(text: &str, tool_args_json: Option<&str>) -> u64 {
    let words = text.split_whitespace().count() as u64;
    let tool = tool_args_json.map_or(0, |a| a.len() as u64 / 4 + 1);
    (words + tool).max(1)
}

/// Serialise into `out`. Our types only hold strings, numbers and JSON
/// values, and writing to a `Vec` cannot fail, so errors are impossible.
fn write_json(out: &mut Vec<u8>, v: &impl Serialize) {
    let _ = serde_json::to_writer(out, v);
}

pub(crate) fn to_json_bytes(v: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(512);
    write_json(&mut out, v);
    Bytes::from(out)
}

fn sse_event(name: &str, data: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json(&mut out, data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn sse_data(data: &impl Serialize, sep: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    write_json(&mut out, data);
    out.extend_from_slice(sep);
    Bytes::from(out)
}

/// Render a non-stream JSON body.
pub(crate) fn json_body(dialect: Dialect, r: &Reply<'_>) -> Bytes {
    match dialect {
        Dialect::Anthropic => to_json_bytes(&anthropic_message(r, &anthropic_ids(r.seq))),
        Dialect::OpenAiChat => chat_completion_bytes(r),
        Dialect::OpenAiResponses => {
            let ids = ResponsesIds::new(r.seq);
            let output = responses_output(r, &ids);
            to_json_bytes(&responses_object(
                r,
                &ids,
                "completed",
                &output,
                Some(responses_usage(&r.usage)),
            ))
        }
        Dialect::Gemini => gemini_response(r),
    }
}

/// Render the stream frames for `mode` (Sse or JsonArray).
pub(crate) fn stream_frames(dialect: Dialect, r: &Reply<'_>, mode: Mode) -> Vec<Bytes> {
    match dialect {
        Dialect::Anthropic => anthropic_stream(r),
        Dialect::OpenAiChat => chat_stream(r),
        Dialect::OpenAiResponses => responses_stream(r),
        Dialect::Gemini => gemini_stream(r, mode),
    }
}

/// The dialect's in-stream error event for `err` (the same error the
/// dialect returns for the HTTP status).
pub(crate) fn error_frame(err: &ErrorBody, mode: Mode) -> Bytes {
    match err {
        ErrorBody::Anthropic { .. } => sse_event("error", err),
        ErrorBody::OpenAi {
            responses: false, ..
        } => sse_data(err, b"\n\n"),
        ErrorBody::OpenAi {
            responses: true,
            message,
            kind,
            param,
            code,
        } => {
            // Production nests the error object; the SDK's type is flat. Send
            // both so either kind of parser finds its fields.
            #[derive(Serialize)]
            struct Inner<'a> {
                #[serde(rename = "type")]
                kind: &'a str,
                code: Option<&'a str>,
                message: &'a str,
                param: Option<&'a str>,
            }
            #[derive(Serialize)]
            struct Ev<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                sequence_number: u64,
                code: Option<&'a str>,
                message: &'a str,
                param: Option<&'a str>,
                error: Inner<'a>,
            }
            let inner = Inner {
                kind,
                code: *code,
                message,
                param: *param,
            };
            sse_event(
                "error",
                &Ev {
                    kind: "error",
                    sequence_number: 0,
                    code: *code,
                    message,
                    param: *param,
                    error: inner,
                },
            )
        }
        ErrorBody::Gemini { .. } => match mode {
            Mode::JsonArray => {
                let mut out = b"[".to_vec();
                write_json(&mut out, err);
                out.extend_from_slice(b"\r\n]");
                Bytes::from(out)
            }
            _ => sse_data(err, b"\r\n\r\n"),
        },
    }
}

/// `[]` on the wire.
const EMPTY_LIST: [(); 0] = [];

/// `{}` on the wire.
#[derive(Serialize)]
struct EmptyObject {}

// ---------------------------------------------------------------- Anthropic

struct AnthropicIds {
    msg: String,
    tool: String,
}

fn anthropic_ids(seq: u64) -> AnthropicIds {
    AnthropicIds {
        msg: format!("msg_01Mock{seq:014}"),
        tool: format!("toolu_01Mock{seq:014}"),
    }
}

#[derive(Serialize)]
struct AnthropicUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation: AnthropicCacheCreation,
    output_tokens: u64,
    service_tier: &'static str,
}

#[derive(Serialize)]
struct AnthropicCacheCreation {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

fn anthropic_usage(u: &Usage, output: u64) -> AnthropicUsage {
    AnthropicUsage {
        input_tokens: u.input,
        cache_creation_input_tokens: u.cache_creation(),
        cache_read_input_tokens: u.cache_read,
        cache_creation: AnthropicCacheCreation {
            ephemeral_5m_input_tokens: u.cache_creation_5m,
            ephemeral_1h_input_tokens: u.cache_creation_1h,
        },
        output_tokens: output,
        service_tier: "standard",
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
}

#[derive(Serialize)]
struct AnthropicMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<AnthropicBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: AnthropicUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct AnthropicStop {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct AnthropicDeltaUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicEvent<'a> {
    MessageStart {
        message: AnthropicMessage<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: AnthropicBlock<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: AnthropicDelta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: AnthropicStop,
        usage: AnthropicDeltaUsage,
    },
    MessageStop,
}

impl AnthropicEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            AnthropicEvent::MessageStart { .. } => "message_start",
            AnthropicEvent::ContentBlockStart { .. } => "content_block_start",
            AnthropicEvent::Ping => "ping",
            AnthropicEvent::ContentBlockDelta { .. } => "content_block_delta",
            AnthropicEvent::ContentBlockStop { .. } => "content_block_stop",
            AnthropicEvent::MessageDelta { .. } => "message_delta",
            AnthropicEvent::MessageStop => "message_stop",
        }
    }

    /// The SSE frame: the Anthropic SDK dispatches on the `event:` line.
    fn frame(&self) -> Bytes {
        sse_event(self.name(), self)
    }
}

fn anthropic_stop_reason(r: &Reply<'_>) -> &'static str {
    if r.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn anthropic_message<'a>(r: &'a Reply<'a>, ids: &'a AnthropicIds) -> AnthropicMessage<'a> {
    let mut content = Vec::with_capacity(2);
    if r.has_text() {
        content.push(AnthropicBlock::Text { text: r.text });
    }
    if let Some(t) = &r.tool {
        content.push(AnthropicBlock::ToolUse {
            id: &ids.tool,
            name: t.name,
            input: t.args,
        });
    }
    AnthropicMessage {
        id: &ids.msg,
        kind: "message",
        role: "assistant",
        model: r.model,
        content,
        stop_reason: Some(anthropic_stop_reason(r)),
        stop_sequence: None,
        usage: anthropic_usage(&r.usage, r.usage.output),
    }
}

fn anthropic_stream(r: &Reply<'_>) -> Vec<Bytes> {
    let ids = anthropic_ids(r.seq);
    let empty_input = Value::Object(serde_json::Map::new());
    let mut f = Vec::with_capacity(16);
    f.push(
        AnthropicEvent::MessageStart {
            message: AnthropicMessage {
                id: &ids.msg,
                kind: "message",
                role: "assistant",
                model: r.model,
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                // Like the real API: input-side counts up front, a placeholder output.
                usage: anthropic_usage(&r.usage, r.usage.output.min(1)),
            },
        }
        .frame(),
    );
    let mut index = 0;
    let mut pinged = false;
    let mut ping = |f: &mut Vec<Bytes>| {
        // The API sends one ping right after the first block opens.
        if !pinged {
            pinged = true;
            f.push(AnthropicEvent::Ping.frame());
        }
    };
    if r.has_text() {
        f.push(
            AnthropicEvent::ContentBlockStart {
                index,
                content_block: AnthropicBlock::Text { text: "" },
            }
            .frame(),
        );
        ping(&mut f);
        for piece in split_text(r.text) {
            f.push(
                AnthropicEvent::ContentBlockDelta {
                    index,
                    delta: AnthropicDelta::TextDelta { text: piece },
                }
                .frame(),
            );
        }
        f.push(AnthropicEvent::ContentBlockStop { index }.frame());
        index += 1;
    }
    if let Some(t) = &r.tool {
        f.push(
            AnthropicEvent::ContentBlockStart {
                index,
                content_block: AnthropicBlock::ToolUse {
                    id: &ids.tool,
                    name: t.name,
                    input: &empty_input,
                },
            }
            .frame(),
        );
        ping(&mut f);
        // The API opens tool input with an empty fragment, then streams the JSON.
        let mut pieces = vec![""];
        pieces.extend(split_args(&t.args_json));
        for piece in pieces {
            f.push(
                AnthropicEvent::ContentBlockDelta {
                    index,
                    delta: AnthropicDelta::InputJsonDelta {
                        partial_json: piece,
                    },
                }
                .frame(),
            );
        }
        f.push(AnthropicEvent::ContentBlockStop { index }.frame());
    }
    let u = &r.usage;
    f.push(
        AnthropicEvent::MessageDelta {
            delta: AnthropicStop {
                stop_reason: anthropic_stop_reason(r),
                stop_sequence: None,
            },
            // Cumulative totals, as the current API sends them.
            usage: AnthropicDeltaUsage {
                input_tokens: u.input,
                cache_creation_input_tokens: u.cache_creation(),
                cache_read_input_tokens: u.cache_read,
                output_tokens: u.output,
            },
        }
        .frame(),
    );
    f.push(AnthropicEvent::MessageStop.frame());
    f
}

// ---------------------------------------------------------------- OpenAI chat

const FINGERPRINT: &str = "fp_mock0001";

fn chat_ids(seq: u64) -> (String, String) {
    (
        format!("chatcmpl-Mock{seq:020}"),
        format!("call_Mock{seq:016}"),
    )
}

#[derive(Serialize)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

fn chat_usage(u: &Usage) -> ChatUsage {
    let prompt = u.total_input();
    ChatUsage {
        prompt_tokens: prompt,
        completion_tokens: u.output,
        total_tokens: prompt + u.output,
        prompt_tokens_details: PromptDetails {
            cached_tokens: u.cache_read,
            audio_tokens: 0,
        },
        completion_tokens_details: CompletionDetails {
            reasoning_tokens: u.reasoning,
            audio_tokens: 0,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
        },
    }
}

#[derive(Serialize)]
struct ChatFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ChatToolCall<'a> {
    /// Only in stream deltas.
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: ChatFunction<'a>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    annotations: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ChatToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: ChatUsage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

/// A chunk delta; absent fields are omitted, `Some(None)` renders `null`.
#[derive(Serialize, Default)]
struct ChatDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ChatToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ChatChunkChoice<'a> {
    index: u32,
    delta: ChatDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: Vec<ChatChunkChoice<'a>>,
    /// Absent unless the client set `stream_options.include_usage`; then
    /// `null` on every chunk but the final usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<ChatUsage>>,
}

fn chat_finish_reason(r: &Reply<'_>) -> &'static str {
    if r.tool.is_some() {
        "tool_calls"
    } else {
        "stop"
    }
}

/// The single choice of a chat chunk.
fn one_choice<'a>(
    delta: ChatDelta<'a>,
    finish_reason: Option<&'static str>,
) -> Vec<ChatChunkChoice<'a>> {
    vec![ChatChunkChoice {
        index: 0,
        delta,
        logprobs: None,
        finish_reason,
    }]
}

fn chat_stream(r: &Reply<'_>) -> Vec<Bytes> {
    let (id, call_id) = chat_ids(r.seq);
    let chunk = |choices: Vec<ChatChunkChoice<'_>>, usage: Option<ChatUsage>| {
        let c = ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created: r.created,
            model: r.model,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
            choices,
            usage: r.include_usage.then_some(usage),
        };
        sse_data(&c, b"\n\n")
    };
    let mut f = Vec::with_capacity(16);
    f.push(chunk(
        one_choice(
            ChatDelta {
                role: Some("assistant"),
                content: Some(r.has_text().then_some("")),
                refusal: Some(None),
                tool_calls: None,
            },
            None,
        ),
        None,
    ));
    if r.has_text() {
        for piece in split_text(r.text) {
            f.push(chunk(
                one_choice(
                    ChatDelta {
                        content: Some(Some(piece)),
                        ..ChatDelta::default()
                    },
                    None,
                ),
                None,
            ));
        }
    }
    if let Some(t) = &r.tool {
        // First fragment names the call; later ones only append arguments.
        let head = ChatToolCall {
            index: Some(0),
            id: Some(&call_id),
            kind: Some("function"),
            function: ChatFunction {
                name: Some(t.name),
                arguments: "",
            },
        };
        f.push(chunk(
            one_choice(
                ChatDelta {
                    tool_calls: Some([head]),
                    ..ChatDelta::default()
                },
                None,
            ),
            None,
        ));
        for piece in split_args(&t.args_json) {
            let frag = ChatToolCall {
                index: Some(0),
                id: None,
                kind: None,
                function: ChatFunction {
                    name: None,
                    arguments: piece,
                },
            };
            f.push(chunk(
                one_choice(
                    ChatDelta {
                        tool_calls: Some([frag]),
                        ..ChatDelta::default()
                    },
                    None,
                ),
                None,
            ));
        }
    }
    f.push(chunk(
        one_choice(ChatDelta::default(), Some(chat_finish_reason(r))),
        None,
    ));
    if r.include_usage {
        f.push(chunk(Vec::new(), Some(chat_usage(&r.usage))));
    }
    f.push(Bytes::from_static(b"data: [DONE]\n\n"));
    f
}

/// Non-stream chat body.
fn chat_completion_bytes(r: &Reply<'_>) -> Bytes {
    let (id, call_id) = chat_ids(r.seq);
    let tool_calls = r.tool.as_ref().map(|t| {
        [ChatToolCall {
            index: None,
            id: Some(&call_id),
            kind: Some("function"),
            function: ChatFunction {
                name: Some(t.name),
                arguments: &t.args_json,
            },
        }]
    });
    to_json_bytes(&ChatCompletion {
        id: &id,
        object: "chat.completion",
        created: r.created,
        model: r.model,
        choices: [ChatChoice {
            index: 0,
            message: ChatMessage {
                role: "assistant",
                // A bare tool call has `content: null`.
                content: r.has_text().then_some(r.text),
                refusal: None,
                annotations: EMPTY_LIST,
                tool_calls,
            },
            logprobs: None,
            finish_reason: chat_finish_reason(r),
        }],
        usage: chat_usage(&r.usage),
        service_tier: "default",
        system_fingerprint: FINGERPRINT,
    })
}

// ---------------------------------------------------------------- OpenAI Responses

struct ResponsesIds {
    resp: String,
    msg: String,
    fc: String,
    call: String,
}

impl ResponsesIds {
    fn new(seq: u64) -> Self {
        ResponsesIds {
            resp: format!("resp_Mock{seq:040}"),
            msg: format!("msg_Mock{seq:040}"),
            fc: format!("fc_Mock{seq:040}"),
            call: format!("call_Mock{seq:016}"),
        }
    }
}

#[derive(Serialize)]
struct ResponsesUsage {
    input_tokens: u64,
    input_tokens_details: CachedDetails,
    output_tokens: u64,
    output_tokens_details: ReasoningDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct CachedDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningDetails {
    reasoning_tokens: u64,
}

fn responses_usage(u: &Usage) -> ResponsesUsage {
    let input = u.total_input();
    ResponsesUsage {
        input_tokens: input,
        input_tokens_details: CachedDetails {
            cached_tokens: u.cache_read,
        },
        output_tokens: u.output,
        output_tokens_details: ReasoningDetails {
            reasoning_tokens: u.reasoning,
        },
        total_tokens: input + u.output,
    }
}

#[derive(Serialize, Clone, Copy)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
    logprobs: [(); 0],
}

fn output_text(text: &str) -> OutputText<'_> {
    OutputText {
        kind: "output_text",
        text,
        annotations: EMPTY_LIST,
        logprobs: EMPTY_LIST,
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResponsesItem<'a> {
    Message {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        status: &'static str,
        role: &'static str,
        content: Vec<OutputText<'a>>,
    },
    FunctionCall {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        status: &'static str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
}

fn message_item<'a>(
    ids: &'a ResponsesIds,
    status: &'static str,
    content: Vec<OutputText<'a>>,
) -> ResponsesItem<'a> {
    ResponsesItem::Message {
        id: &ids.msg,
        kind: "message",
        status,
        role: "assistant",
        content,
    }
}

fn call_item<'a>(
    ids: &'a ResponsesIds,
    status: &'static str,
    name: &'a str,
    arguments: &'a str,
) -> ResponsesItem<'a> {
    ResponsesItem::FunctionCall {
        id: &ids.fc,
        kind: "function_call",
        status,
        call_id: &ids.call,
        name,
        arguments,
    }
}

#[derive(Serialize)]
struct NullReasoning {
    effort: Option<()>,
    summary: Option<()>,
}

#[derive(Serialize)]
struct TextFormat {
    format: TextFormatKind,
}

#[derive(Serialize)]
struct TextFormatKind {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct ResponsesObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    error: Option<()>,
    incomplete_details: Option<()>,
    instructions: Option<()>,
    max_output_tokens: Option<()>,
    model: &'a str,
    output: &'a [ResponsesItem<'a>],
    parallel_tool_calls: bool,
    previous_response_id: Option<()>,
    reasoning: NullReasoning,
    service_tier: &'static str,
    store: bool,
    temperature: f64,
    text: TextFormat,
    tool_choice: &'static str,
    tools: [(); 0],
    top_p: f64,
    truncation: &'static str,
    usage: Option<ResponsesUsage>,
    user: Option<()>,
    metadata: EmptyObject,
}

fn responses_object<'a>(
    r: &'a Reply<'a>,
    ids: &'a ResponsesIds,
    status: &'static str,
    output: &'a [ResponsesItem<'a>],
    usage: Option<ResponsesUsage>,
) -> ResponsesObject<'a> {
    ResponsesObject {
        id: &ids.resp,
        object: "response",
        created_at: r.created,
        status,
        background: false,
        error: None,
        incomplete_details: None,
        instructions: None,
        max_output_tokens: None,
        model: r.model,
        output,
        parallel_tool_calls: true,
        previous_response_id: None,
        reasoning: NullReasoning {
            effort: None,
            summary: None,
        },
        service_tier: "default",
        store: false,
        temperature: 1.0,
        text: TextFormat {
            format: TextFormatKind { kind: "text" },
        },
        tool_choice: "auto",
        tools: EMPTY_LIST,
        top_p: 1.0,
        truncation: "disabled",
        usage,
        user: None,
        metadata: EmptyObject {},
    }
}

fn responses_output<'a>(r: &'a Reply<'a>, ids: &'a ResponsesIds) -> Vec<ResponsesItem<'a>> {
    let mut out = Vec::with_capacity(2);
    if r.has_text() {
        out.push(message_item(ids, "completed", vec![output_text(r.text)]));
    }
    if let Some(t) = &r.tool {
        out.push(call_item(ids, "completed", t.name, &t.args_json));
    }
    out
}

/// Responses stream events. Each variant starts with `sequence_number` so
/// it follows the `type` tag on the wire, as in the API.
#[derive(Serialize)]
#[serde(tag = "type")]
enum ResponsesEvent<'a> {
    #[serde(rename = "response.created")]
    Created {
        sequence_number: u64,
        response: ResponsesObject<'a>,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        sequence_number: u64,
        response: ResponsesObject<'a>,
    },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        sequence_number: u64,
        output_index: usize,
        item: ResponsesItem<'a>,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        part: OutputText<'a>,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        delta: &'a str,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        text: &'a str,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        part: OutputText<'a>,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgsDelta {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        delta: &'a str,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgsDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
        name: &'a str,
        arguments: &'a str,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        sequence_number: u64,
        output_index: usize,
        item: ResponsesItem<'a>,
    },
    #[serde(rename = "response.completed")]
    Completed {
        sequence_number: u64,
        response: ResponsesObject<'a>,
    },
}

impl ResponsesEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            ResponsesEvent::Created { .. } => "response.created",
            ResponsesEvent::InProgress { .. } => "response.in_progress",
            ResponsesEvent::ItemAdded { .. } => "response.output_item.added",
            ResponsesEvent::PartAdded { .. } => "response.content_part.added",
            ResponsesEvent::TextDelta { .. } => "response.output_text.delta",
            ResponsesEvent::TextDone { .. } => "response.output_text.done",
            ResponsesEvent::PartDone { .. } => "response.content_part.done",
            ResponsesEvent::ArgsDelta { .. } => "response.function_call_arguments.delta",
            ResponsesEvent::ArgsDone { .. } => "response.function_call_arguments.done",
            ResponsesEvent::ItemDone { .. } => "response.output_item.done",
            ResponsesEvent::Completed { .. } => "response.completed",
        }
    }
}

fn responses_stream(r: &Reply<'_>) -> Vec<Bytes> {
    let ids = ResponsesIds::new(r.seq);
    let mut f = Vec::with_capacity(24);
    let mut seq = 0u64;
    // Hands out consecutive sequence numbers in emission order.
    let mut next = || {
        seq += 1;
        seq - 1
    };
    let mut push = |ev: ResponsesEvent<'_>| f.push(sse_event(ev.name(), &ev));

    push(ResponsesEvent::Created {
        sequence_number: next(),
        response: responses_object(r, &ids, "in_progress", &[], None),
    });
    push(ResponsesEvent::InProgress {
        sequence_number: next(),
        response: responses_object(r, &ids, "in_progress", &[], None),
    });
    let mut output_index = 0;
    if r.has_text() {
        let item_id = ids.msg.as_str();
        push(ResponsesEvent::ItemAdded {
            sequence_number: next(),
            output_index,
            item: message_item(&ids, "in_progress", Vec::new()),
        });
        push(ResponsesEvent::PartAdded {
            sequence_number: next(),
            item_id,
            output_index,
            content_index: 0,
            part: output_text(""),
        });
        for piece in split_text(r.text) {
            push(ResponsesEvent::TextDelta {
                sequence_number: next(),
                item_id,
                output_index,
                content_index: 0,
                delta: piece,
                logprobs: EMPTY_LIST,
            });
        }
        push(ResponsesEvent::TextDone {
            sequence_number: next(),
            item_id,
            output_index,
            content_index: 0,
            text: r.text,
            logprobs: EMPTY_LIST,
        });
        push(ResponsesEvent::PartDone {
            sequence_number: next(),
            item_id,
            output_index,
            content_index: 0,
            part: output_text(r.text),
        });
        push(ResponsesEvent::ItemDone {
            sequence_number: next(),
            output_index,
            item: message_item(&ids, "completed", vec![output_text(r.text)]),
        });
        output_index += 1;
    }
    if let Some(t) = &r.tool {
        push(ResponsesEvent::ItemAdded {
            sequence_number: next(),
            output_index,
            item: call_item(&ids, "in_progress", t.name, ""),
        });
        for piece in split_args(&t.args_json) {
            push(ResponsesEvent::ArgsDelta {
                sequence_number: next(),
                item_id: &ids.fc,
                output_index,
                delta: piece,
            });
        }
        push(ResponsesEvent::ArgsDone {
            sequence_number: next(),
            item_id: &ids.fc,
            output_index,
            name: t.name,
            arguments: &t.args_json,
        });
        push(ResponsesEvent::ItemDone {
            sequence_number: next(),
            output_index,
            item: call_item(&ids, "completed", t.name, &t.args_json),
        });
    }
    let output = responses_output(r, &ids);
    push(ResponsesEvent::Completed {
        sequence_number: next(),
        response: responses_object(
            r,
            &ids,
            "completed",
            &output,
            Some(responses_usage(&r.usage)),
        ),
    });
    f
}

// ---------------------------------------------------------------- Gemini

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiModality {
    modality: &'static str,
    token_count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    // proto3 JSON omits zero-valued counters, and so does the real API.
    #[serde(skip_serializing_if = "is_zero")]
    cached_content_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    thoughts_token_count: u64,
    prompt_tokens_details: [GeminiModality; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_tokens_details: Option<[GeminiModality; 1]>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn gemini_usage(u: &Usage, candidates: u64) -> GeminiUsage {
    let prompt = u.total_input();
    GeminiUsage {
        prompt_token_count: prompt,
        candidates_token_count: candidates,
        total_token_count: prompt + candidates + u.reasoning,
        cached_content_token_count: u.cache_read,
        thoughts_token_count: u.reasoning,
        prompt_tokens_details: [GeminiModality {
            modality: "TEXT",
            token_count: prompt,
        }],
        cache_tokens_details: (u.cache_read > 0).then_some([GeminiModality {
            modality: "TEXT",
            token_count: u.cache_read,
        }]),
    }
}

/// Gemini's `candidatesTokenCount` excludes thinking tokens.
fn gemini_candidates(u: &Usage) -> u64 {
    u.output.saturating_sub(u.reasoning)
}

#[derive(Serialize)]
struct GeminiCall<'a> {
    name: &'a str,
    args: &'a Value,
}

#[derive(Serialize)]
#[serde(untagged)]
enum GeminiPart<'a> {
    Text {
        text: &'a str,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: GeminiCall<'a>,
    },
}

#[derive(Serialize)]
struct GeminiContent<'a> {
    parts: Vec<GeminiPart<'a>>,
    role: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCandidate<'a> {
    content: GeminiContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiChunk<'a> {
    candidates: [GeminiCandidate<'a>; 1],
    usage_metadata: GeminiUsage,
    model_version: &'a str,
    response_id: &'a str,
}

fn gemini_chunk<'a>(
    r: &'a Reply<'a>,
    response_id: &'a str,
    parts: Vec<GeminiPart<'a>>,
    finish: bool,
    candidates: u64,
) -> GeminiChunk<'a> {
    GeminiChunk {
        candidates: [GeminiCandidate {
            content: GeminiContent {
                parts,
                role: "model",
            },
            finish_reason: finish.then_some("STOP"),
            index: 0,
        }],
        usage_metadata: gemini_usage(&r.usage, candidates),
        model_version: r.model,
        response_id,
    }
}

fn gemini_response_id(seq: u64) -> String {
    format!("MockResp{seq:014}")
}

fn gemini_call_part<'a>(t: &'a RenderTool<'a>) -> GeminiPart<'a> {
    GeminiPart::Call {
        function_call: GeminiCall {
            name: t.name,
            args: t.args,
        },
    }
}

fn gemini_response(r: &Reply<'_>) -> Bytes {
    let id = gemini_response_id(r.seq);
    let mut parts = Vec::with_capacity(2);
    if r.has_text() {
        parts.push(GeminiPart::Text { text: r.text });
    }
    if let Some(t) = &r.tool {
        parts.push(gemini_call_part(t));
    }
    to_json_bytes(&gemini_chunk(
        r,
        &id,
        parts,
        true,
        gemini_candidates(&r.usage),
    ))
}

fn gemini_stream(r: &Reply<'_>, mode: Mode) -> Vec<Bytes> {
    // One chunk per text delta, then the function call as one whole part
    // (Gemini does not stream call arguments); the last chunk carries
    // finishReason and the final usage. usageMetadata is cumulative.
    let id = gemini_response_id(r.seq);
    let mut parts: Vec<GeminiPart<'_>> = Vec::new();
    if r.has_text() {
        parts.extend(
            split_text(r.text)
                .into_iter()
                .map(|text| GeminiPart::Text { text }),
        );
        if parts.is_empty() {
            parts.push(GeminiPart::Text { text: "" });
        }
    }
    if let Some(t) = &r.tool {
        parts.push(gemini_call_part(t));
    }
    let total = gemini_candidates(&r.usage);
    let n = parts.len() as u64;
    let last = parts.len().saturating_sub(1);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let so_far = total * (i as u64 + 1) / n.max(1);
            let chunk = gemini_chunk(r, &id, vec![part], i == last, so_far);
            match mode {
                Mode::JsonArray => {
                    let mut out = Vec::with_capacity(320);
                    out.extend_from_slice(if i == 0 { b"[" } else { b",\r\n" });
                    write_json(&mut out, &chunk);
                    if i == last {
                        out.extend_from_slice(b"\r\n]");
                    }
                    Bytes::from(out)
                }
                _ => sse_data(&chunk, b"\r\n\r\n"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_at_words_and_rejoins() {
        let parts = split_text(DEFAULT_TEXT);
        assert!(parts.len() > 3);
        assert_eq!(parts.concat(), DEFAULT_TEXT);
        let long = "word ".repeat(1000);
        let parts = split_text(&long);
        assert!(parts.len() <= 32);
        assert_eq!(parts.concat(), long);
        assert!(split_text("").is_empty());
    }

    #[test]
    fn args_split_on_char_boundaries() {
        let s = r#"{"city":"Zürich—Straße"}"#;
        let parts = split_args(s);
        assert_eq!(parts.concat(), s);
        assert!(parts.len() > 1);
        assert_eq!(split_args("{}"), vec!["{}"]);
    }

    fn reply(tool: Option<RenderTool<'_>>) -> Reply<'_> {
        Reply {
            model: "m",
            text: DEFAULT_TEXT,
            tool,
            usage: Usage::default(),
            seq: 1,
            created: 0,
            include_usage: true,
        }
    }

    /// Keys come out in the providers' order: the type tag first.
    #[test]
    fn type_tag_leads_every_event() {
        let args = serde_json::json!({"a": 1});
        let r = reply(Some(RenderTool {
            name: "f",
            args: &args,
            args_json: args.to_string(),
        }));
        for frame in anthropic_stream(&r)
            .iter()
            .chain(responses_stream(&r).iter())
        {
            let s = std::str::from_utf8(frame).unwrap_or_default();
            let data = s.split_once("\ndata: ").map(|(_, d)| d).unwrap_or_default();
            assert!(data.starts_with(r#"{"type":""#), "{s}");
        }
        let body = json_body(Dialect::Anthropic, &r);
        assert!(body.starts_with(br#"{"id":"msg_"#));
        let chat = chat_completion_bytes(&r);
        assert!(chat.starts_with(br#"{"id":"chatcmpl-"#));
    }
}
