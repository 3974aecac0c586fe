//! Aether's wire dialects — Anthropic Messages, OpenAI Chat Completions, OpenAI Responses and
//! Google Gemini — as pure byte-level codecs and rules. No I/O, no async, no HTTP types: the
//! server feeds bytes in and gets bytes or verdicts out, and everything here is unit- and
//! property-tested in isolation.
//!
//! Modules:
//! - [`sse`]: the incremental Server-Sent-Events decoder and encoder. It is the *only* SSE
//!   parser in the project; every stream (upstream or mock) goes through it.
//! - [`gemini_stream`]: incremental splitting of Gemini's non-SSE JSON-array stream.
//! - [`request`]: request inspection (model, stream, max tokens, cache hints) and byte-exact
//!   rewriting (`model`, `stream_options.include_usage`).
//! - [`usage`]: token usage from responses and streams, normalised to
//!   [`aether_domain::pricing::TokenUsage`].
//! - [`errors`]: gateway errors rendered in the caller's dialect, as bodies and as
//!   mid-stream events.
//! - [`classify`]: one classifier for upstream outcomes (success, client error, key error,
//!   overload, server error, HTML pages...), including errors embedded in 200 streams.
//! - [`models`]: model lists in each dialect.
//! - [`tokens`]: a cheap local input-token estimate.
//!
//! Invariants:
//! - **Bounded memory.** Stream decoders cap the bytes buffered per event/element and fail
//!   with an error past the cap; error bodies are only parsed up to a fixed size.
//! - **Nothing allocates per byte.** Scanning uses `memchr` and byte spans; allocation happens
//!   per event, per element or per rewritten body.
//! - **No panics on input.** No `unwrap`, no unchecked indexing on input-derived data;
//!   property tests feed arbitrary bytes and arbitrary chunkings to every parser.
//! - **Byte-exact forwarding.** Rewrites splice only the targeted value; everything else is
//!   copied verbatim.
//! - **Chunking invariance.** Incremental decoders produce the same events however the input
//!   is split.

#![warn(missing_docs)]

pub mod classify;
pub mod errors;
pub mod gemini_stream;
mod json_scan;
pub mod models;
pub mod request;
pub mod sse;
pub mod tokens;
pub mod usage;

pub use classify::{
    ClientErrorKind, FirstEvent, KeyErrorClass, Outcome, RateLimitKind, classify_first_element,
    classify_first_event, classify_http, classify_response, rate_limit_kind, retry_after_secs,
};
pub use errors::{ErrorKind, error_body, stream_error_event};
pub use gemini_stream::{JsonArrayDecoder, JsonArrayError};
pub use models::{ModelEntry, render_model, render_model_list};
pub use request::{RequestError, RequestInfo, ensure_include_usage, inspect, replace_model};
pub use sse::{SseDecoder, SseError, SseEvent, encode_event};
pub use tokens::estimate_input_tokens;
pub use usage::{StreamUsage, is_usage_only_chunk};
