//! Rendering gateway errors in the caller's dialect, both as HTTP bodies and as mid-stream
//! events (after the first byte has been sent the status line cannot change any more).
//!
//! Status and type table:
//!
//! | [`ErrorKind`] | HTTP | Anthropic `error.type` | OpenAI `type` / `code` | Gemini `status` |
//! |---|---|---|---|---|
//! | `InvalidRequest` | 400 | `invalid_request_error` | `invalid_request_error` / null | `INVALID_ARGUMENT` |
//! | `Authentication` | 401 | `authentication_error` | `invalid_request_error` / `invalid_api_key` | `UNAUTHENTICATED` |
//! | `PermissionDenied` | 403 | `permission_error` | `permission_error` / null | `PERMISSION_DENIED` |
//! | `NotFound` | 404 | `not_found_error` | `invalid_request_error` / null | `NOT_FOUND` |
//! | `RequestTooLarge` | 413 | `request_too_large` | `invalid_request_error` / `request_too_large` | `INVALID_ARGUMENT` |
//! | `RateLimited` | 429 | `rate_limit_error` | `rate_limit_error` / `rate_limit_exceeded` | `RESOURCE_EXHAUSTED` |
//! | `Overloaded` | 529 Anthropic, else 503 | `overloaded_error` | `server_error` / null | `UNAVAILABLE` |
//! | `UpstreamError` | 502 | `api_error` | `server_error` / null | `UNAVAILABLE` |
//! | `Unavailable` | 503 | `api_error` | `server_error` / null | `UNAVAILABLE` |
//! | `Timeout` | 504 | `timeout_error` | `server_error` / `timeout` | `DEADLINE_EXCEEDED` |
//! | `Internal` | 500 | `api_error` | `server_error` / null | `INTERNAL` |
//!
//! Choices where the upstreams give no single answer:
//! - OpenAI's 401 really is `invalid_request_error` + `invalid_api_key`, and its unknown-route
//!   404 is `invalid_request_error` with a null code; we mirror those.
//! - 529 is Anthropic-only; other SDKs know 503 as "overloaded, retry".
//! - 502 and 503 map to Gemini `UNAVAILABLE` (the retryable gRPC code).
//! - Anthropic's 504 type is `timeout_error` (present in the SDK's `ErrorType` enum).

use aether_domain::format::Dialect;
use bytes::Bytes;

use crate::json_scan::push_json_str;

/// A gateway-side error category, independent of the dialect it is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or semantically invalid (400).
    InvalidRequest,
    /// Missing or wrong gateway credentials (401).
    Authentication,
    /// Credentials valid but not allowed to do this (403).
    PermissionDenied,
    /// Unknown model or route (404).
    NotFound,
    /// Body over the size limit (413).
    RequestTooLarge,
    /// A quota or rate limit of the gateway or of every upstream was hit (429).
    RateLimited,
    /// Upstream capacity exhausted (529 in Anthropic, 503 elsewhere).
    Overloaded,
    /// The upstream failed or answered garbage (502).
    UpstreamError,
    /// No upstream is available to serve the request (503).
    Unavailable,
    /// The upstream did not answer in time (504).
    Timeout,
    /// A bug in the gateway (500).
    Internal,
}

impl ErrorKind {
    /// Every kind, for exhaustive tests and docs.
    pub const ALL: [Self; 11] = [
        Self::InvalidRequest,
        Self::Authentication,
        Self::PermissionDenied,
        Self::NotFound,
        Self::RequestTooLarge,
        Self::RateLimited,
        Self::Overloaded,
        Self::UpstreamError,
        Self::Unavailable,
        Self::Timeout,
        Self::Internal,
    ];

    /// The dialect-neutral HTTP status (`Overloaded` is 503 here; see
    /// [`status_for`](Self::status_for)).
    #[must_use]
    pub const fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::Authentication => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::RequestTooLarge => 413,
            Self::RateLimited => 429,
            Self::Overloaded | Self::Unavailable => 503,
            Self::UpstreamError => 502,
            Self::Timeout => 504,
            Self::Internal => 500,
        }
    }

    /// The HTTP status in `dialect`: like [`status`](Self::status), except that Anthropic
    /// clients get their dedicated 529 for `Overloaded`.
    #[must_use]
    pub const fn status_for(self, dialect: Dialect) -> u16 {
        match (self, dialect) {
            (Self::Overloaded, Dialect::AnthropicMessages) => 529,
            _ => self.status(),
        }
    }

    /// Anthropic's `error.type`.
    #[must_use]
    pub const fn anthropic_type(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::PermissionDenied => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimited => "rate_limit_error",
            Self::Overloaded => "overloaded_error",
            Self::UpstreamError | Self::Unavailable | Self::Internal => "api_error",
            Self::Timeout => "timeout_error",
        }
    }

    /// OpenAI's `error.type`.
    #[must_use]
    pub const fn openai_type(self) -> &'static str {
        match self {
            Self::InvalidRequest
            | Self::Authentication
            | Self::NotFound
            | Self::RequestTooLarge => "invalid_request_error",
            Self::PermissionDenied => "permission_error",
            Self::RateLimited => "rate_limit_error",
            Self::Overloaded
            | Self::UpstreamError
            | Self::Unavailable
            | Self::Timeout
            | Self::Internal => "server_error",
        }
    }

    /// OpenAI's `error.code` (often null upstream too).
    #[must_use]
    pub const fn openai_code(self) -> Option<&'static str> {
        match self {
            Self::Authentication => Some("invalid_api_key"),
            Self::RequestTooLarge => Some("request_too_large"),
            Self::RateLimited => Some("rate_limit_exceeded"),
            Self::Timeout => Some("timeout"),
            _ => None,
        }
    }

    /// The `code` of a Responses-API `response.failed` error. The SDK enumerates these values;
    /// `server_error` and `rate_limit_exceeded` are the ones Codex retries.
    #[must_use]
    pub const fn responses_failed_code(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::RequestTooLarge => "invalid_prompt",
            Self::RateLimited => "rate_limit_exceeded",
            _ => "server_error",
        }
    }

    /// Gemini's (`google.rpc.Code`) `status` string.
    #[must_use]
    pub const fn gemini_status(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::RequestTooLarge => "INVALID_ARGUMENT",
            Self::Authentication => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::RateLimited => "RESOURCE_EXHAUSTED",
            Self::Overloaded | Self::UpstreamError | Self::Unavailable => "UNAVAILABLE",
            Self::Timeout => "DEADLINE_EXCEEDED",
            Self::Internal => "INTERNAL",
        }
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// `{"type":"error","error":{"type":...,"message":...}}`
fn anthropic_json(out: &mut Vec<u8>, kind: ErrorKind, message: &str) {
    push_str(out, r#"{"type":"error","error":{"type":"#);
    push_json_str(out, kind.anthropic_type());
    push_str(out, r#","message":"#);
    push_json_str(out, message);
    push_str(out, "}}");
}

/// The inner OpenAI error object `{"message":...,"type":...,"param":null,"code":...}`.
fn openai_error_object(out: &mut Vec<u8>, kind: ErrorKind, message: &str) {
    push_str(out, r#"{"message":"#);
    push_json_str(out, message);
    push_str(out, r#","type":"#);
    push_json_str(out, kind.openai_type());
    push_str(out, r#","param":null,"code":"#);
    match kind.openai_code() {
        Some(code) => push_json_str(out, code),
        None => push_str(out, "null"),
    }
    push_str(out, "}");
}

fn openai_json(out: &mut Vec<u8>, kind: ErrorKind, message: &str) {
    push_str(out, r#"{"error":"#);
    openai_error_object(out, kind, message);
    push_str(out, "}");
}

/// `{"error":{"code":<int>,"message":...,"status":...}}`
fn gemini_json(out: &mut Vec<u8>, kind: ErrorKind, message: &str) {
    push_str(out, r#"{"error":{"code":"#);
    push_str(out, &kind.status_for(Dialect::Gemini).to_string());
    push_str(out, r#","message":"#);
    push_json_str(out, message);
    push_str(out, r#","status":"#);
    push_json_str(out, kind.gemini_status());
    push_str(out, "}}");
}

/// The HTTP status and JSON body for an error returned before any byte of a response was
/// sent. Both OpenAI dialects share the Chat envelope.
#[must_use]
pub fn error_body(dialect: Dialect, kind: ErrorKind, message: &str) -> (u16, Vec<u8>) {
    let mut out = Vec::with_capacity(message.len() + 128);
    match dialect {
        Dialect::AnthropicMessages => anthropic_json(&mut out, kind, message),
        Dialect::OpenaiChat | Dialect::OpenaiResponses => openai_json(&mut out, kind, message),
        Dialect::Gemini => gemini_json(&mut out, kind, message),
    }
    (kind.status_for(dialect), out)
}

/// The exact bytes to write when a stream fails after its first byte was sent; the caller
/// closes the stream afterwards.
///
/// - Anthropic: `event: error` with the usual error envelope — what Anthropic itself sends
///   (the SDKs raise on it).
/// - OpenAI Chat: a `data:` chunk whose top-level `error` key makes the official SDKs raise
///   `APIError`. **No `data: [DONE]` follows**: the Python SDK raises on the error chunk and
///   never reads further, while a client that ignores unknown chunks would take `[DONE]` as
///   a successful end and silently keep a truncated answer — without it such a client sees an
///   unexpected EOF instead.
/// - OpenAI Responses: an `error` event (the production nested shape, with the SDK's flat
///   `code`/`message`/`param` too), then a `response.failed` event. The OpenAI SDKs raise on
///   the first; Codex ignores `error` events and needs `response.failed` (its
///   `response.error.code`/`message` decide whether it retries) to avoid waiting for a
///   `response.completed` that will never come.
/// - Gemini: a `data:` chunk with the `google.rpc.Status` envelope, as Gemini sends mid-stream.
///   (For the non-SSE JSON-array stream the caller writes `,` + [`error_body`] + `]` itself.)
#[must_use]
pub fn stream_error_event(dialect: Dialect, kind: ErrorKind, message: &str) -> Bytes {
    let mut out = Vec::with_capacity(message.len() * 2 + 256);
    match dialect {
        Dialect::AnthropicMessages => {
            push_str(&mut out, "event: error\ndata: ");
            anthropic_json(&mut out, kind, message);
        }
        Dialect::OpenaiChat => {
            push_str(&mut out, "data: ");
            openai_json(&mut out, kind, message);
        }
        Dialect::OpenaiResponses => {
            let code = kind.responses_failed_code();
            push_str(
                &mut out,
                "event: error\ndata: {\"type\":\"error\",\"code\":",
            );
            push_json_str(&mut out, code);
            push_str(&mut out, ",\"message\":");
            push_json_str(&mut out, message);
            push_str(&mut out, ",\"param\":null,\"error\":{\"type\":");
            push_json_str(&mut out, kind.openai_type());
            push_str(&mut out, ",\"code\":");
            push_json_str(&mut out, code);
            push_str(&mut out, ",\"message\":");
            push_json_str(&mut out, message);
            push_str(&mut out, ",\"param\":null}}\n\n");
            push_str(
                &mut out,
                "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":",
            );
            push_json_str(&mut out, code);
            push_str(&mut out, ",\"message\":");
            push_json_str(&mut out, message);
            push_str(
                &mut out,
                "},\"incomplete_details\":null,\"output\":[],\"usage\":null}}",
            );
        }
        Dialect::Gemini => {
            push_str(&mut out, "data: ");
            gemini_json(&mut out, kind, message);
        }
    }
    push_str(&mut out, "\n\n");
    Bytes::from(out)
}
