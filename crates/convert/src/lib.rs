//! Conversion between the four wire dialects — Anthropic Messages, OpenAI Chat Completions,
//! OpenAI Responses and Gemini generateContent — through one canonical model ([`ir`]).
//!
//! Each dialect module parses its requests, responses and stream events into the canonical
//! form and renders them back out, so any of the 12 directed pairs is `parse(from)` then
//! `render(to)`. Streams go through a [`Transcoder`]: the upstream dialect's stateful
//! [`StreamDecoder`] turns SSE events into canonical [`Event`]s, the client dialect's stateful
//! [`StreamEncoder`] turns those into frames. What a target dialect cannot express is dropped
//! on purpose (`docs/conversion.md` lists it); nothing here panics on any input (see the
//! property tests).

use aether_domain::format::Dialect;
use aether_protocol::errors::{ErrorKind, error_body, stream_error_event};
use aether_protocol::sse::{SseDecoder, encode_event};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

mod anthropic;
mod chat;
mod gemini;
pub mod ir;
mod responses;
mod util;

pub use ir::*;

/// Why a body could not be converted. Rendered to the client as a 400 in its own dialect for
/// requests, or treated as an upstream failure for responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    /// The JSON does not have the dialect's shape; the message names the field.
    #[error("{0}")]
    Invalid(String),
}

impl ConvertError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

/// What a request says outside its body.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The model from the URL (Gemini puts it there).
    pub model: Option<String>,
    /// Whether the URL asked for a stream (Gemini's `streamGenerateContent`).
    pub stream: bool,
}

/// Parses a client's request body in dialect `d`.
///
/// # Errors
/// The body is not JSON or not a request of that dialect.
pub fn parse_request(
    d: Dialect,
    body: &[u8],
    ctx: &RequestContext,
) -> Result<Request, ConvertError> {
    let v = json(body)?;
    match d {
        Dialect::AnthropicMessages => anthropic::parse_request(&v, ctx),
        Dialect::OpenaiChat => chat::parse_request(&v, ctx),
        Dialect::OpenaiResponses => responses::parse_request(&v, ctx),
        Dialect::Gemini => gemini::parse_request(&v, ctx),
    }
}

/// Renders a request for an upstream of dialect `d`. Gemini's model and stream flag belong in
/// the URL, so its body has neither; every other dialect's body carries `req.model` and, when
/// streaming, asks for usage in the stream.
#[must_use]
pub fn render_request(d: Dialect, req: &Request) -> Vec<u8> {
    let v = match d {
        Dialect::AnthropicMessages => anthropic::render_request(req),
        Dialect::OpenaiChat => chat::render_request(req),
        Dialect::OpenaiResponses => responses::render_request(req),
        Dialect::Gemini => gemini::render_request(req),
    };
    to_vec(&v)
}

/// Parses an upstream's complete (non-streamed) success body in dialect `d`.
///
/// # Errors
/// The body is not JSON or not a response of that dialect.
pub fn parse_response(d: Dialect, body: &[u8]) -> Result<Response, ConvertError> {
    let v = json(body)?;
    match d {
        Dialect::AnthropicMessages => anthropic::parse_response(&v),
        Dialect::OpenaiChat => chat::parse_response(&v),
        Dialect::OpenaiResponses => responses::parse_response(&v),
        Dialect::Gemini => gemini::parse_response(&v),
    }
}

/// Renders a complete response for a client of dialect `d`.
#[must_use]
pub fn render_response(d: Dialect, resp: &Response) -> Vec<u8> {
    let v = match d {
        Dialect::AnthropicMessages => anthropic::render_response(resp),
        Dialect::OpenaiChat => chat::render_response(resp),
        Dialect::OpenaiResponses => responses::render_response(resp),
        Dialect::Gemini => gemini::render_response(resp),
    };
    to_vec(&v)
}

/// Converts an upstream error (its status and body, in any dialect) into the status and body a
/// client of dialect `to` expects: the upstream's message is kept, the class follows the status.
#[must_use]
pub fn convert_error(to: Dialect, status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let message = error_message(body).unwrap_or_else(|| format!("upstream returned HTTP {status}"));
    error_body(to, kind_for_status(status), &message)
}

/// The error class an upstream HTTP status stands for.
#[must_use]
pub const fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::RequestTooLarge,
        429 => ErrorKind::RateLimited,
        529 => ErrorKind::Overloaded,
        503 => ErrorKind::Unavailable,
        504 => ErrorKind::Timeout,
        400..=499 => ErrorKind::InvalidRequest,
        _ => ErrorKind::UpstreamError,
    }
}

/// The human message of an error body in any of the dialects: `error.message` (Anthropic,
/// OpenAI, Gemini — also inside Gemini's one-element array), or a top-level `message`.
#[must_use]
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = match &v {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let msg = v
        .pointer("/error/message")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)?;
    Some(msg.to_owned())
}

/// One frame of a client stream: an optional SSE event name and its JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub event: Option<&'static str>,
    pub data: String,
}

impl Frame {
    #[must_use]
    pub fn data(data: String) -> Self {
        Self { event: None, data }
    }

    #[must_use]
    pub fn named(event: &'static str, data: String) -> Self {
        Self {
            event: Some(event),
            data,
        }
    }
}

/// Turns one upstream dialect's stream events into canonical events. Stateful, one per stream.
///
/// Implementations never panic, whatever the input, and keep the order [`Event`] documents
/// even for nonsense input (unparseable events are skipped).
pub trait StreamDecoder: Send {
    /// One SSE event from the upstream (`name` is the `event:` field).
    fn event(&mut self, name: Option<&str>, data: &str, out: &mut Vec<Event>);
    /// The upstream stream ended (cleanly or not). Emits nothing the stream did not imply.
    fn end(&mut self, out: &mut Vec<Event>);
}

/// Turns canonical events into one client dialect's frames. Stateful, one per stream.
///
/// Never sees `Event::Error` (the [`Transcoder`] writes errors itself). Must not panic on any
/// event sequence, and must write a well-formed stream for every sequence a decoder may emit.
pub trait StreamEncoder: Send {
    fn event(&mut self, event: &Event, out: &mut Vec<Frame>);
    /// The stream is over: close open blocks, write the stop reason, usage and terminator.
    fn end(&mut self, out: &mut Vec<Frame>);
}

/// A new decoder for an upstream stream of dialect `d` (always SSE: the gateway asks Gemini
/// for `alt=sse` when it converts).
#[must_use]
pub fn decoder(d: Dialect) -> Box<dyn StreamDecoder> {
    match d {
        Dialect::AnthropicMessages => Box::new(anthropic::Decoder::default()),
        Dialect::OpenaiChat => Box::new(chat::Decoder::default()),
        Dialect::OpenaiResponses => Box::new(responses::Decoder::default()),
        Dialect::Gemini => Box::new(gemini::Decoder::default()),
    }
}

/// A new encoder for a client stream of dialect `d`.
#[must_use]
pub fn encoder(d: Dialect) -> Box<dyn StreamEncoder> {
    match d {
        Dialect::AnthropicMessages => Box::new(anthropic::Encoder::default()),
        Dialect::OpenaiChat => Box::new(chat::Encoder::default()),
        Dialect::OpenaiResponses => Box::new(responses::Encoder::default()),
        Dialect::Gemini => Box::new(gemini::Encoder::default()),
    }
}

/// How the client wants a stream framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events.
    Sse,
    /// Gemini without `alt=sse`: one JSON array, an element per chunk.
    JsonArray,
}

/// The stateful stream converter: upstream SSE bytes in, client-dialect bytes out.
pub struct Transcoder {
    sse: SseDecoder,
    dec: Box<dyn StreamDecoder>,
    enc: Box<dyn StreamEncoder>,
    client: Dialect,
    framing: Framing,
    events: Vec<Event>,
    frames: Vec<Frame>,
    /// Array framing: whether the opening `[` was written.
    opened: bool,
    /// An error was written or `finish` ran: nothing more is written.
    done: bool,
    usage: Usage,
    stop: Option<StopReason>,
    /// OpenAI Chat clients that did not ask for `stream_options.include_usage` get no
    /// usage-only chunk.
    drop_usage_chunk: bool,
}

impl Transcoder {
    /// For an OpenAI Chat client that did not ask for usage in its stream: the final
    /// usage-only chunk (`choices: []`) is left out, as OpenAI itself does.
    #[must_use]
    pub fn without_usage_chunk(mut self) -> Self {
        self.drop_usage_chunk = self.client == Dialect::OpenaiChat;
        self
    }

    /// `max_event_bytes` bounds one upstream SSE event (a larger one fails the stream).
    #[must_use]
    pub fn new(
        upstream: Dialect,
        client: Dialect,
        framing: Framing,
        max_event_bytes: usize,
    ) -> Self {
        let framing = if client == Dialect::Gemini {
            framing
        } else {
            Framing::Sse
        };
        Self {
            sse: SseDecoder::new(max_event_bytes),
            dec: decoder(upstream),
            enc: encoder(client),
            client,
            framing,
            events: Vec::new(),
            frames: Vec::new(),
            opened: false,
            done: false,
            usage: Usage::default(),
            stop: None,
            drop_usage_chunk: false,
        }
    }

    /// Feeds upstream bytes; returns the client bytes they complete (possibly empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        if self.done {
            return out.freeze();
        }
        if let Err(e) = self.sse.feed(chunk) {
            self.fail(ErrorKind::UpstreamError, &e.to_string(), &mut out);
            return out.freeze();
        }
        while let Some(ev) = self.sse.next_event() {
            self.event(ev.event.as_deref(), &ev.data, &mut out);
            if self.done {
                break;
            }
        }
        out.freeze()
    }

    /// One upstream event that the caller already decoded (an SSE event, or an element of a
    /// Gemini JSON-array stream as `data`), so a stream is parsed once, not twice. Use either
    /// this and [`end`](Self::end), or [`feed`](Self::feed) and [`finish`](Self::finish).
    pub fn push(&mut self, name: Option<&str>, data: &str) -> Bytes {
        let mut out = BytesMut::new();
        if !self.done {
            self.event(name, data, &mut out);
        }
        out.freeze()
    }

    /// The upstream stream ended: flushes a last unterminated event and closes the client
    /// stream properly. Idempotent.
    pub fn finish(&mut self) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        let mut out = BytesMut::new();
        if let Some(ev) = self.sse.finish() {
            self.event(ev.event.as_deref(), &ev.data, &mut out);
        }
        out.put(self.end());
        out.freeze()
    }

    /// The upstream stream ended (events given through [`push`](Self::push)): closes the
    /// client stream properly. Idempotent.
    pub fn end(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        if self.done {
            return out.freeze();
        }
        self.dec.end(&mut self.events);
        self.pump(&mut out);
        if !self.done {
            self.enc.end(&mut self.frames);
            self.write_frames(&mut out);
            if self.framing == Framing::JsonArray {
                if !self.opened {
                    out.put_u8(b'[');
                }
                out.put_u8(b']');
            }
            self.done = true;
        }
        out.freeze()
    }

    /// Ends the client stream with an error event in its dialect (for a failure the
    /// transcoder did not see, e.g. the upstream connection dropping).
    pub fn fail_with(&mut self, kind: ErrorKind, message: &str) -> Bytes {
        let mut out = BytesMut::new();
        if !self.done {
            self.fail(kind, message, &mut out);
        }
        out.freeze()
    }

    /// Usage seen so far, in canonical terms.
    #[must_use]
    pub const fn usage(&self) -> Usage {
        self.usage
    }

    /// The stop reason, once the upstream gave one.
    #[must_use]
    pub const fn stop(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// Whether the client stream is complete (finished or failed).
    #[must_use]
    pub const fn is_done(&self) -> bool {
        self.done
    }

    fn event(&mut self, name: Option<&str>, data: &str, out: &mut BytesMut) {
        self.dec.event(name, data, &mut self.events);
        self.pump(out);
    }

    fn pump(&mut self, out: &mut BytesMut) {
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            match ev {
                Event::Error { kind, message } => {
                    self.fail(*kind, message, out);
                    break;
                }
                Event::Usage(u) => self.usage = self.usage.merge(*u),
                Event::Finish { stop } => self.stop = Some(stop.clone()),
                _ => {}
            }
            if !matches!(ev, Event::Error { .. }) {
                self.enc.event(ev, &mut self.frames);
            }
        }
        self.events = events;
        self.events.clear();
        self.write_frames(out);
    }

    fn write_frames(&mut self, out: &mut BytesMut) {
        for f in self.frames.drain(..) {
            if self.drop_usage_chunk && is_usage_only(&f.data) {
                continue;
            }
            match self.framing {
                Framing::Sse => out.put(encode_event(f.event, &f.data)),
                Framing::JsonArray => {
                    out.put_u8(if self.opened { b',' } else { b'[' });
                    if self.opened {
                        out.put_u8(b'\n');
                    }
                    self.opened = true;
                    out.put(f.data.as_bytes());
                }
            }
        }
    }

    fn fail(&mut self, kind: ErrorKind, message: &str, out: &mut BytesMut) {
        self.write_frames(out);
        match self.framing {
            Framing::Sse => out.put(stream_error_event(self.client, kind, message)),
            Framing::JsonArray => {
                out.put_u8(if self.opened { b',' } else { b'[' });
                out.put(error_body(Dialect::Gemini, kind, message).1.as_slice());
                out.put_u8(b']');
            }
        }
        self.done = true;
    }
}

/// The canonical events of a complete response, as a stream would have carried them.
#[must_use]
pub fn events_of(resp: &Response) -> Vec<Event> {
    let mut out = vec![
        Event::Start {
            id: resp.id.clone(),
            model: resp.model.clone(),
        },
        Event::Usage(resp.usage),
    ];
    for (index, block) in resp.content.iter().enumerate() {
        let (kind, deltas) = match block {
            Block::Text { text } => (BlockKind::Text, vec![Delta::Text(text.clone())]),
            Block::Thinking { text, signature } => {
                let mut d = vec![Delta::Thinking(text.clone())];
                if let Some(sig) = signature {
                    d.push(Delta::Signature(sig.clone()));
                }
                (BlockKind::Thinking, d)
            }
            Block::ToolUse { id, name, input } => (
                BlockKind::ToolUse {
                    id: id.clone(),
                    name: name.clone(),
                },
                vec![Delta::ToolArgs(util::json_string(input))],
            ),
            // Not part of a response.
            Block::Image { .. } | Block::ToolResult { .. } => continue,
        };
        out.push(Event::BlockStart { index, kind });
        out.extend(
            deltas
                .into_iter()
                .map(|delta| Event::Delta { index, delta }),
        );
        out.push(Event::BlockStop { index });
    }
    out.push(Event::Finish {
        stop: resp.stop.clone(),
    });
    out
}

/// A complete response rendered as a client stream of dialect `client` (for an upstream that
/// answered a stream request with one whole body).
#[must_use]
pub fn stream_of_response(client: Dialect, framing: Framing, resp: &Response) -> Bytes {
    let mut t = Transcoder::new(client, client, framing, 1024);
    let mut out = BytesMut::new();
    t.events = events_of(resp);
    // Indices must be dense even when blocks were skipped.
    let mut next = 0;
    let mut map = std::collections::HashMap::new();
    for ev in &mut t.events {
        match ev {
            Event::BlockStart { index, .. } => {
                map.insert(*index, next);
                *index = next;
                next += 1;
            }
            Event::Delta { index, .. } | Event::BlockStop { index } => {
                *index = map.get(index).copied().unwrap_or(*index);
            }
            _ => {}
        }
    }
    t.pump(&mut out);
    out.put(t.finish());
    out.freeze()
}

/// An OpenAI Chat chunk that only carries usage (`choices` empty).
fn is_usage_only(data: &str) -> bool {
    data.contains("\"choices\":[]")
        && serde_json::from_str::<Value>(data)
            .ok()
            .and_then(|v| {
                v.get("choices")
                    .and_then(Value::as_array)
                    .map(Vec::is_empty)
            })
            .unwrap_or(false)
}

fn json(body: &[u8]) -> Result<Value, ConvertError> {
    serde_json::from_slice(body).map_err(|e| ConvertError::Json(e.to_string()))
}

fn to_vec(v: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail (its map keys are strings).
    serde_json::to_vec(v).unwrap_or_default()
}
