//! Finishing a request: pricing, the final usage record, billing, attempt traces and the
//! request log ([`Finish`]), and relaying a committed stream to the client ([`relay`]).
//!
//! A stream is forwarded chunk by chunk as it arrives; a side parser (the project's one SSE
//! decoder, or the Gemini JSON-array decoder) reads usage from the events without holding the
//! stream. [`Finish`] is a drop guard: if the client goes away mid-stream, dropping the body
//! drops the upstream response (closing that connection) and records the request as 499 with
//! the tokens seen so far.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_coord::{Lease, LiveState};
use aether_domain::entities::{
    AttemptTrace, GlobalModel, TraceStatus, UsageBodies, UsageRecord, UsageStatus,
};
use aether_domain::format::Dialect;
use aether_domain::pricing::{CostBreakdown, CostInput, TokenUsage, compute_cost};
use aether_domain::{Multiplier, Timestamp, Usd};
use aether_protocol::errors::{ErrorKind, error_body, stream_error_event};
use aether_protocol::gemini_stream::JsonArrayDecoder;
use aether_protocol::sse::{SseDecoder, SseEvent, encode_event};
use aether_protocol::usage::{StreamUsage, is_usage_only_chunk};
use aether_store::Billing;
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt as _, Stream, StreamExt};

use crate::limits::{Reservation, provider_budget};
use crate::snapshot::{Caller, Route};
use crate::usage::{UsageEvent, UsageWriter};

/// Largest single SSE event / JSON-array element the side parser accepts (bounded memory).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// What is logged of a request besides usage (per the `log_level` setting).
#[derive(Debug, Default)]
pub struct LogCapture {
    pub bodies: Option<UsageBodies>,
    /// Response bytes are captured up to this many (0 = not at all).
    pub response_cap: usize,
    response: BytesMut,
}

impl LogCapture {
    #[must_use]
    pub fn new(bodies: Option<UsageBodies>, response_cap: usize) -> Self {
        Self {
            bodies,
            response_cap,
            response: BytesMut::new(),
        }
    }

    pub fn capture(&mut self, chunk: &[u8]) {
        let room = self.response_cap.saturating_sub(self.response.len());
        if room > 0 {
            self.response
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }
}

/// Prices a request served by `route`. Returns the breakdown and whether the model had no
/// price (recorded with the `unpriced` flag: never silently free).
#[must_use]
pub fn price(
    route: &Route,
    model: &GlobalModel,
    usage: &TokenUsage,
    success: bool,
) -> (CostBreakdown, bool) {
    let Some(pricing) = route.model.effective_pricing(model) else {
        return (
            CostBreakdown {
                multiplier: route.key.key.rate_multiplier,
                ..CostBreakdown::default()
            },
            true,
        );
    };
    let cost = compute_cost(&CostInput {
        pricing,
        per_request: route.model.effective_price_per_request(model),
        usage,
        success,
        multiplier: route.key.key.rate_multiplier,
        free_tier: route.is_free_tier(),
    });
    match cost {
        Some(c) => (c, false),
        None => (CostBreakdown::default(), true),
    }
}

/// The end of a request: writes the final record, its billing, its traces and its log, once.
pub struct Finish {
    pub writer: UsageWriter,
    pub record: UsageRecord,
    pub traces: Vec<AttemptTrace>,
    pub route: Option<Arc<Route>>,
    pub model: Arc<GlobalModel>,
    pub caller: Arc<Caller>,
    pub started: Instant,
    pub usage: StreamUsage,
    pub log: LogCapture,
    /// Concurrency leases held until the request (or its stream) ends.
    pub holds: Vec<Lease>,
    /// The live state budgets are settled in (`None`: nothing to settle).
    pub live: Option<Arc<dyn LiveState>>,
    /// The caller's budget reservation, settled to the charge when the request ends.
    pub reservation: Option<Reservation>,
    /// Where the request's figures are counted (`None`: not counted).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The gateway's shutdown signal: a request dropped after it fired was cut by the
    /// shutdown, not by its client.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    done: bool,
}

impl Finish {
    #[must_use]
    pub fn new(
        writer: UsageWriter,
        record: UsageRecord,
        model: Arc<GlobalModel>,
        caller: Arc<Caller>,
        started: Instant,
        dialect: Dialect,
    ) -> Self {
        Self {
            writer,
            record,
            traces: Vec::new(),
            route: None,
            model,
            caller,
            started,
            usage: StreamUsage::new(dialect),
            log: LogCapture::default(),
            holds: Vec::new(),
            live: None,
            reservation: None,
            metrics: None,
            shutdown: None,
            done: false,
        }
    }

    /// Turns the guard off without recording anything (its request is recorded elsewhere).
    pub fn disarm(&mut self) {
        self.done = true;
    }

    /// Records the outcome. `usage` overrides what the stream parser saw (non-stream bodies).
    pub fn complete(
        &mut self,
        status: UsageStatus,
        code: u16,
        usage: Option<TokenUsage>,
        error: Option<(&str, String)>,
    ) {
        if self.done {
            return;
        }
        self.done = true;
        let now = Timestamp::now();
        let tokens = usage.or_else(|| self.usage.usage()).unwrap_or_default();
        let r = &mut self.record;
        r.status = status;
        r.status_code = Some(code);
        r.tokens = tokens;
        r.latency_ms = Some(i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX));
        r.updated_at = now;
        if let Some((kind, message)) = error {
            r.error_type = Some(kind.to_string());
            r.error_message = Some(message.chars().take(2000).collect());
        }
        let mut billing = None;
        if let Some(route) = &self.route {
            let success = status == UsageStatus::Completed;
            let (cost, unpriced) = price(route, &self.model, &tokens, success);
            if unpriced && !tokens.is_empty() {
                tracing::warn!(model = %self.model.name, provider = %route.provider.name, "request served by a model without a price; recorded as unpriced");
            }
            r.cost = cost;
            r.unpriced = unpriced;
            let user_period_start = self
                .caller
                .user
                .as_ref()
                .and_then(|u| u.quota_period.period_start(now));
            let provider_period_start = route.provider.period_start(now);
            if let Some(live) = &self.live
                && let Some((account, seed, _)) = provider_budget(&route.provider, now)
                && !r.cost.actual_total.is_zero()
            {
                live.budget_settle(account, seed, Usd::ZERO, r.cost.actual_total);
            }
            billing = Some(Billing {
                request_id: r.id,
                user_id: r.user_id,
                api_key_id: r.api_key_id,
                standalone: self.caller.key.is_standalone,
                charged: r.cost.total,
                provider_id: r.provider_id,
                actual: r.cost.actual_total,
                global_model_id: r.global_model_id,
                at: now,
                user_period_start,
                provider_period_start,
            });
        } else {
            r.cost = CostBreakdown {
                multiplier: Multiplier::ONE,
                ..CostBreakdown::default()
            };
        }
        if let (Some(live), Some(res)) = (&self.live, self.reservation.take()) {
            let charged = billing.as_ref().map_or(Usd::ZERO, |b| b.charged);
            live.budget_settle(res.account, res.seed, res.amount, charged);
        }
        if let Some(m) = &self.metrics {
            m.finished(r, &self.model.name, self.started.elapsed());
        }
        let w = &self.writer;
        if !self.traces.is_empty() {
            let finished = Some(now);
            for t in &mut self.traces {
                if t.status == TraceStatus::Streaming {
                    t.status = if status == UsageStatus::Completed {
                        TraceStatus::Success
                    } else {
                        TraceStatus::Failed
                    };
                    t.status_code = Some(code);
                    t.finished_at = finished;
                    t.latency_ms = Some(now.millis() - t.started_at.millis());
                }
            }
            // A request served by its first attempt, with nothing skipped, has a one-step trace
            // that its usage record already holds (route, status, latency, TTFB): it is not
            // written twice. Readers synthesise it from the record. Traces are queued before
            // the final record, so whoever sees the record finished also sees its traces.
            let trivial = self.traces.len() == 1 && self.traces[0].status == TraceStatus::Success;
            if !trivial {
                w.send_detached(UsageEvent::Traces(std::mem::take(&mut self.traces)));
            }
        }
        // Journaled here, before the caller hands the client the end of its response.
        w.finish(r.clone(), billing);
        if let Some(mut bodies) = self.log.bodies.take() {
            if self.log.response_cap > 0
                && bodies.response_body.is_none()
                && !self.log.response.is_empty()
            {
                bodies.response_body =
                    Some(String::from_utf8_lossy(&self.log.response).into_owned());
            }
            w.send_detached(UsageEvent::Bodies(r.id, Box::new(bodies)));
        }
        self.holds.clear();
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.done {
            if self.shutdown.as_ref().is_some_and(|s| *s.borrow()) {
                self.complete(
                    UsageStatus::Failed,
                    503,
                    None,
                    Some((
                        "server_shutdown",
                        "the gateway shut down before the request finished".into(),
                    )),
                );
                return;
            }
            // The client went away (or the task was cancelled) before the end: the upstream
            // connection is dropped with us; bill what was generated so far.
            self.complete(
                UsageStatus::Failed,
                499,
                None,
                Some((
                    "client_disconnected",
                    "the client closed the connection".into(),
                )),
            );
        }
    }
}

/// The side parser of a stream.
pub enum Decoder {
    Sse(SseDecoder),
    /// Gemini's `streamGenerateContent` without `alt=sse`: a JSON array, element by element.
    Array(JsonArrayDecoder),
}

impl Decoder {
    #[must_use]
    pub fn for_stream(gemini_array: bool) -> Self {
        if gemini_array {
            Self::Array(JsonArrayDecoder::new(MAX_EVENT_BYTES))
        } else {
            Self::Sse(SseDecoder::new(MAX_EVENT_BYTES))
        }
    }
}

/// One parsed unit of a stream.
pub enum Unit {
    Event(SseEvent),
    Element(Bytes),
}

impl Decoder {
    /// Feeds bytes; returns the complete units they finished.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Unit>, String> {
        let mut out = Vec::new();
        match self {
            Self::Sse(d) => {
                d.feed(chunk).map_err(|e| e.to_string())?;
                while let Some(ev) = d.next_event() {
                    out.push(Unit::Event(ev));
                }
            }
            Self::Array(d) => {
                d.feed(chunk).map_err(|e| e.to_string())?;
                while let Some(el) = d.next_element() {
                    out.push(Unit::Element(el));
                }
            }
        }
        Ok(out)
    }

    /// The last unit when the stream ends without a final delimiter.
    pub fn end(&mut self) -> Vec<Unit> {
        match self {
            Self::Sse(d) => d.finish().map(Unit::Event).into_iter().collect(),
            Self::Array(d) => {
                let _ = d.finish();
                Vec::new()
            }
        }
    }
}

pub type UpstreamBody = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A stream committed to the client.
pub struct Committed {
    pub upstream: UpstreamBody,
    pub decoder: Decoder,
    /// Raw chunks read ahead before the commit, and the units parsed from them.
    pub preread: Vec<Bytes>,
    pub preread_units: Vec<Unit>,
    /// OpenAI Chat: the gateway asked for the usage chunk; the client did not, so it is
    /// removed from what the client sees (the events are re-encoded).
    pub strip_usage_chunk: bool,
    pub idle_timeout: Duration,
    pub dialect: Dialect,
    /// The dialect the upstream speaks (differs from `dialect` when transcoding).
    pub upstream_dialect: Dialect,
    /// The upstream speaks another dialect: what the client sees is transcoded (the side
    /// parser still reads usage from the upstream's own events).
    pub transcoder: Option<aether_convert::Transcoder>,
    /// The gateway's shutdown signal (see `Gateway::abort_in_flight`).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

struct State {
    c: Committed,
    fin: Finish,
    /// Bytes ready for the client.
    out: BytesMut,
    ended: bool,
    /// The upstream sent its stream's terminal event (see [`is_terminal`]).
    terminal: bool,
    /// The upstream reported an error inside its stream (same-dialect streams; a converted
    /// stream's transcoder handles its own): relayed untouched, recorded as a failure.
    upstream_error: Option<String>,
}

/// The event after which an upstream stream is complete: Anthropic's `message_stop`, OpenAI
/// Chat's `[DONE]`, the Responses API's `response.completed`. Gemini has none (its stream is
/// complete when it ends).
fn is_terminal(upstream: Dialect, ev: &SseEvent) -> bool {
    match upstream {
        Dialect::AnthropicMessages => {
            ev.event.as_deref() == Some("message_stop")
                || (ev.event.is_none() && ev.data.contains("\"message_stop\""))
        }
        Dialect::OpenaiChat => ev.data.trim() == "[DONE]",
        Dialect::OpenaiResponses => {
            ev.event.as_deref() == Some("response.completed")
                || (ev.event.is_none() && ev.data.contains("\"response.completed\""))
        }
        Dialect::Gemini => false,
    }
}

/// Whether an upstream stream event reports an error, and its message: Anthropic's
/// `event: error`, the Responses API's `error` / `response.failed`, or (OpenAI Chat, Gemini)
/// a payload whose top level is an `error` object.
fn stream_error(upstream: Dialect, ev: &SseEvent) -> Option<String> {
    let named = match upstream {
        Dialect::AnthropicMessages => ev.event.as_deref() == Some("error"),
        Dialect::OpenaiResponses => {
            matches!(ev.event.as_deref(), Some("error" | "response.failed"))
        }
        Dialect::OpenaiChat | Dialect::Gemini => false,
    };
    if !named && !ev.data.contains("\"error\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&ev.data).ok()?;
    let err = v
        .get("error")
        .or_else(|| v.get("response").and_then(|r| r.get("error")))
        .filter(|e| !e.is_null());
    if !named && err.is_none() {
        return None;
    }
    let message = err
        .and_then(|e| {
            e.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .or_else(|| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "the upstream sent an error event".to_string());
    Some(message)
}

/// Upper bound of bytes gathered into one write to the client.
const COALESCE_BYTES: usize = 64 * 1024;

impl State {
    /// Observes units; in strip mode returns the re-encoded bytes to send instead of the raw ones.
    /// Observes units; in strip mode, and when transcoding, returns the bytes to send instead
    /// of the raw ones (a converted stream is transcoded from these units: parsed once).
    fn observe(&mut self, units: Vec<Unit>) -> Option<Bytes> {
        let mut re = (self.c.strip_usage_chunk || self.c.transcoder.is_some()).then(BytesMut::new);
        for u in units {
            match u {
                Unit::Event(ev) => {
                    self.fin.usage.observe_sse(&ev);
                    self.terminal |= is_terminal(self.c.upstream_dialect, &ev);
                    if self.c.transcoder.is_none() && self.upstream_error.is_none() {
                        self.upstream_error = stream_error(self.c.upstream_dialect, &ev);
                    }
                    if let Some(t) = self.c.transcoder.as_mut() {
                        if let Some(buf) = re.as_mut() {
                            buf.extend_from_slice(&t.push(ev.event.as_deref(), &ev.data));
                        }
                    } else if let Some(buf) = re.as_mut()
                        && !is_usage_only_chunk(&ev)
                    {
                        buf.extend_from_slice(&encode_event(ev.event.as_deref(), &ev.data));
                    }
                }
                Unit::Element(el) => {
                    self.fin.usage.observe_json(&el);
                    if let (Some(t), Some(buf)) = (self.c.transcoder.as_mut(), re.as_mut()) {
                        buf.extend_from_slice(&t.push(None, &String::from_utf8_lossy(&el)));
                    }
                }
            }
        }
        re.map(BytesMut::freeze)
    }

    /// Handles one item of the upstream body: a chunk (parsed, passed on), the end (the
    /// request completes), or a transport error (the stream ends with an error event).
    fn take(&mut self, item: Option<reqwest::Result<Bytes>>) {
        match item {
            Some(Err(e)) => self.fail(
                ErrorKind::UpstreamError,
                format!("upstream stream broke: {e}"),
            ),
            None => {
                let units = self.c.decoder.end();
                if let Some(b) = self.observe(units) {
                    self.fin.log.capture(&b);
                    self.out.extend_from_slice(&b);
                }
                if let Some(t) = self.c.transcoder.as_mut() {
                    self.out.extend_from_slice(&t.end());
                }
                self.settle_at_end();
                self.ended = true;
            }
            Some(Ok(chunk)) => match self.c.decoder.push(&chunk) {
                Err(e) => self.fail(
                    ErrorKind::UpstreamError,
                    format!("upstream stream is malformed: {e}"),
                ),
                Ok(units) => {
                    let send = self.observe(units).unwrap_or(chunk);
                    self.settle_if_terminal();
                    self.fin.log.capture(&send);
                    self.out.extend_from_slice(&send);
                    if self.c.transcoder.as_ref().is_some_and(|t| t.is_done()) {
                        // The upstream reported an error inside its stream; the client got it
                        // in its own dialect.
                        self.fin.complete(
                            UsageStatus::Failed,
                            502,
                            None,
                            Some((
                                "stream_interrupted",
                                "the upstream sent an error event".to_string(),
                            )),
                        );
                        self.ended = true;
                    }
                }
            },
        }
    }

    /// Once the upstream's terminal event has been read, the request is complete: it is
    /// recorded (journaled) before that event is handed to the client, so a client that saw
    /// the end of its stream always has a record, even if the process dies before the upstream
    /// closes the connection.
    fn settle_if_terminal(&mut self) {
        if self.terminal && !self.ended && self.upstream_error.is_none() {
            self.fin.complete(UsageStatus::Completed, 200, None, None);
        }
    }

    /// The upstream closed its stream cleanly. Complete — unless it reported an error inside
    /// the stream, or (for dialects that have one) closed before its terminal event: then the
    /// client got a cut answer, recorded as failed (`stream_interrupted`), billed for what
    /// was generated. What the client received is not altered either way.
    fn settle_at_end(&mut self) {
        let truncated = !self.terminal
            && self.c.transcoder.is_none()
            && self.c.upstream_dialect != Dialect::Gemini;
        if let Some(message) = self.upstream_error.take() {
            self.fin.complete(
                UsageStatus::Failed,
                502,
                None,
                Some((
                    "stream_interrupted",
                    format!("the upstream sent an error event: {message}"),
                )),
            );
        } else if truncated {
            self.fin.complete(
                UsageStatus::Failed,
                502,
                None,
                Some((
                    "stream_interrupted",
                    "the upstream closed the stream before its final event".to_string(),
                )),
            );
        } else {
            self.fin.complete(UsageStatus::Completed, 200, None, None);
        }
    }

    fn fail(&mut self, kind: ErrorKind, message: String) {
        let code = if kind == ErrorKind::Timeout { 504 } else { 502 };
        self.fail_as(kind, code, "stream_interrupted", message);
    }

    /// Ends the stream with an error event in the client's dialect and records it as failed.
    fn fail_as(&mut self, kind: ErrorKind, code: u16, error_type: &str, message: String) {
        let event = match (&mut self.c.transcoder, &self.c.decoder) {
            (Some(t), _) => t.fail_with(kind, &message),
            // Gemini's JSON-array stream: one more element, the error, and close the array.
            (None, Decoder::Array(_)) => {
                let (_, body) = error_body(Dialect::Gemini, kind, &message);
                let mut b = BytesMut::with_capacity(body.len() + 3);
                b.extend_from_slice(b",\r\n");
                b.extend_from_slice(&body);
                b.extend_from_slice(b"]");
                b.freeze()
            }
            (None, Decoder::Sse(_)) => stream_error_event(self.c.dialect, kind, &message),
        };
        self.out.extend_from_slice(&event);
        self.fin
            .complete(UsageStatus::Failed, code, None, Some((error_type, message)));
        self.ended = true;
    }
}

/// Turns a committed upstream stream into the client's response body.
pub fn relay(
    mut c: Committed,
    fin: Finish,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let preread = std::mem::take(&mut c.preread);
    let preread_units = std::mem::take(&mut c.preread_units);
    let mut state = State {
        c,
        fin,
        out: BytesMut::new(),
        ended: false,
        terminal: false,
        upstream_error: None,
    };
    let first = match state.observe(preread_units) {
        Some(rewritten) => vec![rewritten],
        None => preread,
    };
    state.settle_if_terminal();
    for b in first {
        state.fin.log.capture(&b);
        state.out.extend_from_slice(&b);
    }
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if !st.out.is_empty() {
                return Some((Ok(st.out.split().freeze()), st));
            }
            if st.ended {
                return None;
            }
            let next = tokio::select! {
                biased;
                _ = st.c.shutdown.wait_for(|v| *v) => None,
                r = tokio::time::timeout(st.c.idle_timeout, st.c.upstream.next()) => Some(r),
            };
            let Some(next) = next else {
                st.fail_as(
                    ErrorKind::Unavailable,
                    503,
                    "server_shutdown",
                    "the gateway is shutting down; the stream was cut".into(),
                );
                continue;
            };
            match next {
                Err(_) => {
                    let secs = st.c.idle_timeout.as_secs();
                    st.fail(
                        ErrorKind::Timeout,
                        format!("upstream sent nothing for {secs} s"),
                    );
                }
                Ok(item) => st.take(item),
            }
            // Take whatever else has already arrived, so a burst of events leaves in one
            // write instead of one system call per event. The upstream connection hands its
            // body over frame by frame from another task, so yield a couple of times to let it
            // catch up before writing.
            let mut yields = 0;
            while !st.ended && st.out.len() < COALESCE_BYTES {
                match st.c.upstream.next().now_or_never() {
                    Some(item) => {
                        yields = 0;
                        st.take(item);
                    }
                    None if yields < 4 => {
                        yields += 1;
                        tokio::task::yield_now().await;
                    }
                    None => break,
                }
            }
        }
    })
}
