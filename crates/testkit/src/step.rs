//! Scripted behaviour: what the mock does for one request.
//!
//! A [`Step`] is an [`Action`] (reply normally, fail with a status, stall, break
//! the stream, ...) plus optional reply content (text, usage, tool call) and
//! extra response headers. Steps are queued per credential and consumed one per
//! generation request; see [`crate::MockUpstream::script`].
//!
//! Steps are plain data so the control API (`POST /__mock/script`) can accept
//! them as JSON. The JSON shape is the flattened action tag plus the optional
//! reply fields, e.g.
//! `{"type":"status","code":429,"retry_after":3}` or
//! `{"type":"ok","text":"hi","usage":{"input":10,"output":2}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Token usage in *normalised* terms; the mock renders it in each dialect's
/// own convention.
///
/// - `input` excludes every cached token (it is Anthropic's `input_tokens`).
/// - `cache_read` are tokens served from the prompt cache.
/// - `cache_creation_5m` / `cache_creation_1h` are cache writes by TTL
///   (Anthropic only bills these separately; the OpenAI and Gemini dialects
///   count them as ordinary prompt tokens).
/// - `output` includes `reasoning` (the billed total), matching Anthropic and
///   OpenAI. Gemini reports them separately, so the Gemini renderer emits
///   `candidatesTokenCount = output - reasoning` and
///   `thoughtsTokenCount = reasoning`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens, reasoning included.
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the cache with a 5 minute TTL.
    pub cache_creation_5m: u64,
    /// Input tokens written to the cache with a 1 hour TTL.
    pub cache_creation_1h: u64,
    /// Reasoning ("thinking") tokens, a subset of `output`.
    pub reasoning: u64,
}

impl Usage {
    /// All cache writes, both TTLs.
    pub fn cache_creation(&self) -> u64 {
        self.cache_creation_5m + self.cache_creation_1h
    }

    /// Every input token, cached or not: what OpenAI and Gemini call the
    /// prompt token count.
    pub fn total_input(&self) -> u64 {
        self.input + self.cache_read + self.cache_creation()
    }
}

/// A function/tool call the reply should contain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Tool (function) name.
    pub name: String,
    /// Arguments as a JSON value (normally an object).
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// What the mock does with a request.
///
/// Serialised with a `type` tag in snake_case, e.g. `{"type":"hang"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// A normal successful reply (stream or not, as the request asked).
    Ok,
    /// An HTTP error. `body` replaces the dialect's default error JSON for the
    /// status; `retry_after` adds a `retry-after` header (seconds).
    Status {
        /// HTTP status code.
        code: u16,
        /// Seconds for the `retry-after` header (Gemini also gets a `RetryInfo` detail on 429).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
        /// Raw body to send instead of the dialect's error JSON.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// Wait before sending the response headers, then reply normally.
    DelayHeaders {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// Reply normally but wait between body chunks (stream events).
    SlowStream {
        /// Delay between chunks in milliseconds.
        chunk_delay_ms: u64,
    },
    /// Send the headers at once, then wait before the first body byte.
    FirstByteDelay {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// HTTP 200 with a streaming content type whose first event is the
    /// dialect's error event. `code` picks the error kind (default: the
    /// dialect's "overloaded" error: Anthropic 529, OpenAI 500, Gemini 503).
    EmbeddedError {
        /// HTTP-style status whose error kind the event carries.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
    },
    /// Send `after_chunks` body chunks, then abort the connection without a
    /// clean end of body. The final chunk is never sent, so the stream is
    /// always cut even when `after_chunks` exceeds the reply's length.
    MidStreamDisconnect {
        /// Number of chunks (stream events) delivered before the abort.
        after_chunks: usize,
    },
    /// Streams only: send `after_chunks` chunks, then end the body cleanly, without the
    /// dialect's final event (`message_stop`, `[DONE]`, `response.completed`). Non-stream
    /// replies are sent whole.
    TruncatedStream { after_chunks: usize },
    /// Streams only: send `after_chunks` chunks, then the dialect's in-stream error event
    /// (status 529 for Anthropic, 500 elsewhere, as in `EmbeddedError`), then end the body
    /// cleanly. Non-stream replies are sent whole.
    StreamError { after_chunks: usize },
    /// An HTML error page as a CDN/proxy would serve it (content-type text/html).
    Html {
        /// HTTP status code, e.g. 502.
        status: u16,
    },
    /// HTTP 200 with stream headers and a body that ends without any event.
    EmptyStream,
    /// Never send response headers (until the mock shuts down).
    Hang,
}

/// One scripted behaviour: an [`Action`] plus reply content and extra headers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// Reply text (default: a fixed sentence, or no text when `tool_call` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Usage to report (default: derived from the request and reply sizes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// A tool call to return after the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCall>,
    /// Extra response headers (on any action that sends headers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Default for Step {
    fn default() -> Self {
        Step::ok()
    }
}

impl From<Action> for Step {
    fn from(action: Action) -> Self {
        Step {
            action,
            text: None,
            usage: None,
            tool_call: None,
            headers: BTreeMap::new(),
        }
    }
}

impl Step {
    /// A normal successful reply.
    pub fn ok() -> Self {
        Action::Ok.into()
    }

    /// An HTTP error with the dialect's default error body for `code`.
    pub fn status(code: u16) -> Self {
        Action::Status {
            code,
            retry_after: None,
            body: None,
        }
        .into()
    }

    /// Delay the response headers by `ms`, then reply normally.
    pub fn delay_headers(ms: u64) -> Self {
        Action::DelayHeaders { ms }.into()
    }

    /// Reply normally with `chunk_delay_ms` between body chunks.
    pub fn slow_stream(chunk_delay_ms: u64) -> Self {
        Action::SlowStream { chunk_delay_ms }.into()
    }

    /// Send headers at once and delay the first body byte by `ms`.
    pub fn first_byte_delay(ms: u64) -> Self {
        Action::FirstByteDelay { ms }.into()
    }

    /// HTTP 200 stream whose first event is the dialect's default error event.
    pub fn embedded_error() -> Self {
        Action::EmbeddedError { code: None }.into()
    }

    /// HTTP 200 stream whose first event is the dialect's error for `code`.
    pub fn embedded_error_code(code: u16) -> Self {
        Action::EmbeddedError { code: Some(code) }.into()
    }

    /// Send `after_chunks` chunks, then abort the connection.
    pub fn disconnect_after(after_chunks: usize) -> Self {
        Action::MidStreamDisconnect { after_chunks }.into()
    }

    /// Send `after_chunks` stream chunks, then end cleanly without the final event.
    pub fn truncated_after(after_chunks: usize) -> Self {
        Action::TruncatedStream { after_chunks }.into()
    }

    /// Send `after_chunks` stream chunks, then an in-stream error event.
    pub fn stream_error_after(after_chunks: usize) -> Self {
        Action::StreamError { after_chunks }.into()
    }

    /// A CDN-style HTML error page with `status`.
    pub fn html(status: u16) -> Self {
        Action::Html { status }.into()
    }

    /// HTTP 200 stream headers, then a body with no events.
    pub fn empty_stream() -> Self {
        Action::EmptyStream.into()
    }

    /// Never respond.
    pub fn hang() -> Self {
        Action::Hang.into()
    }

    /// Set the reply text.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Set the usage to report (normalised terms, see [`Usage`]).
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Make the reply a tool call of `name` with JSON `arguments`.
    pub fn tool_call(mut self, name: impl Into<String>, arguments: serde_json::Value) -> Self {
        self.tool_call = Some(ToolCall {
            name: name.into(),
            arguments,
        });
        self
    }

    /// Add an extra response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Set `retry_after` (seconds). Only meaningful for [`Step::status`]; ignored otherwise.
    pub fn retry_after(mut self, secs: u64) -> Self {
        if let Action::Status { retry_after, .. } = &mut self.action {
            *retry_after = Some(secs);
        }
        self
    }

    /// Set a raw error body. Only meaningful for [`Step::status`]; ignored otherwise.
    pub fn body(mut self, raw: impl Into<String>) -> Self {
        if let Action::Status { body, .. } = &mut self.action {
            *body = Some(raw.into());
        }
        self
    }
}
