//! The HTTP side: one fallback handler that classifies each request, records
//! it, checks the credential, consumes the credential's next [`Step`] and
//! answers in the request's dialect.
//!
//! Stream bodies are built from pre-rendered frames and paced by a small
//! state machine ([`paced_body`]) that implements the timing faults. A body
//! that yields an error makes hyper abort the connection without the
//! terminating chunk, which is how `MidStreamDisconnect` cuts a stream.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::watch;

use crate::control;
use crate::dialect::{self, AuthFailure, Dialect, Endpoint, ErrorCtx, ErrorReply};
use crate::render::{self, Mode, RenderTool, Reply};
use crate::state::{InFlight, RecordedRequest, Shared};
use crate::step::{Action, Step, Usage};

/// Largest request body accepted (Anthropic's documented limit is 32 MB).
const MAX_BODY: usize = 32 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Resolves when the mock is shutting down (its handle was dropped).
pub(crate) async fn shutdown_signal(rx: &watch::Receiver<()>) {
    let mut rx = rx.clone();
    // We never send a value, so this only returns once the sender is gone.
    while rx.changed().await.is_ok() {}
}

async fn handle(State(st): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(rest) = parts.uri.path().strip_prefix("/__mock/") {
        return control::handle(&st, &parts.method, rest, body).await;
    }
    let path = parts.uri.path();
    let query = parts.uri.query();
    let endpoint = dialect::classify(&parts.method, path, &parts.headers, query);
    let seq = st.next_seq();
    let cred = endpoint
        .as_ref()
        .and_then(|e| dialect::credential(e.dialect(), &parts.headers, query));
    // In flight from arrival until the response body is finished or dropped.
    let guard = st.begin(cred.as_deref());

    let body = axum::body::to_bytes(body, MAX_BODY).await;
    if st.recording() {
        st.record(RecordedRequest {
            seq,
            method: parts.method.to_string(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.as_ref().map(Bytes::clone).unwrap_or_default(),
            credential: cred.clone(),
            endpoint: endpoint.as_ref().map(|e| e.name().to_owned()),
            timestamp_ms: u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX),
        });
    }

    let response = match endpoint {
        None => plain_json(
            StatusCode::NOT_FOUND,
            r#"{"error":{"message":"mock upstream: no such route","type":"not_found_error"}}"#,
        ),
        Some(endpoint) => {
            let ctx = RequestCtx::new(&st, endpoint, seq, query);
            match body {
                Err(_) => ctx.error_response(
                    dialect::too_large(ctx.dialect, &ctx.request_id),
                    &HeaderMap::new(),
                ),
                Ok(body) => ctx.serve(&st, cred, body).await,
            }
        }
    };
    attach_guard(response, guard)
}

/// Keep `guard` alive exactly as long as the response body.
fn attach_guard(response: Response, guard: InFlight) -> Response {
    // `map_err` keeps the body's size hint (so Content-Length survives); its
    // closure owns the guard and is dropped together with the body.
    response.map(|body| {
        Body::new(body.map_err(move |e| {
            let _held = &guard;
            e
        }))
    })
}

fn plain_json(status: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Per-request facts shared by the reply paths.
struct RequestCtx {
    endpoint: Endpoint,
    dialect: Dialect,
    seq: u64,
    request_id: String,
    /// Gemini stream without `alt=sse`: errors are array-wrapped too.
    array_mode: bool,
    shutdown: watch::Receiver<()>,
}

impl RequestCtx {
    fn new(st: &Shared, endpoint: Endpoint, seq: u64, query: Option<&str>) -> Self {
        let dialect = endpoint.dialect();
        let request_id = match dialect {
            Dialect::Anthropic => format!("req_011CMock{seq:014}"),
            // 32 hex digits like the real ids; two multiplicative hashes of
            // the sequence number keep them unique and deterministic.
            Dialect::OpenAiChat | Dialect::OpenAiResponses => format!(
                "req_{:016x}{:016x}",
                seq.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                seq.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ),
            Dialect::Gemini => String::new(),
        };
        let array_mode = matches!(endpoint, Endpoint::GeminiStream { .. })
            && dialect::query_param(query, "alt").as_deref() != Some("sse");
        RequestCtx {
            endpoint,
            dialect,
            seq,
            request_id,
            array_mode,
            shutdown: st.shutdown.clone(),
        }
    }

    /// Headers every response of this dialect carries (request id, rate limits).
    fn base_headers(&self, content_type: &'static str) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(12);
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        match self.dialect {
            Dialect::Anthropic => {
                put("request-id", &self.request_id);
                put(
                    "anthropic-organization-id",
                    "00000000-0000-4000-8000-00000000a0e7",
                );
                let reset = rfc3339(unix_now().as_secs() + 60);
                put("anthropic-ratelimit-requests-limit", "4000");
                put("anthropic-ratelimit-requests-remaining", "3999");
                put("anthropic-ratelimit-requests-reset", &reset);
                put("anthropic-ratelimit-tokens-limit", "2000000");
                put("anthropic-ratelimit-tokens-remaining", "2000000");
                put("anthropic-ratelimit-tokens-reset", &reset);
            }
            Dialect::OpenAiChat | Dialect::OpenAiResponses => {
                put("x-request-id", &self.request_id);
                put("openai-organization", "org-mock");
                put("openai-processing-ms", "1");
                put("openai-version", "2020-10-01");
                put("x-ratelimit-limit-requests", "10000");
                put("x-ratelimit-remaining-requests", "9999");
                put("x-ratelimit-reset-requests", "6ms");
                put("x-ratelimit-limit-tokens", "30000000");
                put("x-ratelimit-remaining-tokens", "29999000");
                put("x-ratelimit-reset-tokens", "2ms");
            }
            // The Generative Language API sends no request-id or rate-limit
            // headers; the body's `responseId` identifies a reply.
            Dialect::Gemini => {}
        }
        h
    }

    fn error_response(&self, err: ErrorReply, extra: &HeaderMap) -> Response {
        // The JSON-array stream endpoint wraps errors in an array too.
        let bytes = if self.array_mode {
            render::to_json_bytes(&[&err.body])
        } else {
            render::to_json_bytes(&err.body)
        };
        let mut r = Response::new(Body::from(bytes));
        *r.status_mut() = status_code(err.status);
        let mut headers = self.base_headers("application/json");
        headers.extend(extra.clone());
        *r.headers_mut() = headers;
        r
    }

    async fn serve(&self, st: &Shared, cred: Option<String>, body: Bytes) -> Response {
        let Some(cred) = cred else {
            return self.error_response(
                dialect::auth_error(self.dialect, AuthFailure::Missing, None, &self.request_id),
                &HeaderMap::new(),
            );
        };
        if let Some(keys) = &st.accepted_keys
            && !keys.contains(&cred)
        {
            return self.error_response(
                dialect::auth_error(
                    self.dialect,
                    AuthFailure::Unknown,
                    Some(&cred),
                    &self.request_id,
                ),
                &HeaderMap::new(),
            );
        }
        match &self.endpoint {
            Endpoint::AnthropicModels => self.static_json(ANTHROPIC_MODELS),
            Endpoint::OpenAiModels => self.static_json(OPENAI_MODELS),
            Endpoint::GeminiModels => self.static_json(GEMINI_MODELS),
            Endpoint::AnthropicCountTokens => match parse_anthropic(&body, false) {
                Err(msg) => self.bad_request(&msg),
                Ok(_) => {
                    self.json_string(format!(r#"{{"input_tokens":{}}}"#, estimate_input(&body)))
                }
            },
            Endpoint::GeminiCountTokens { .. } => {
                match serde_json::from_slice::<HashMap<String, IgnoredAny>>(&body) {
                    Err(e) => self.bad_request(&gemini_json_error(&e)),
                    Ok(_) => {
                        let n = estimate_input(&body);
                        self.json_string(format!(
                            r#"{{"totalTokens":{n},"promptTokensDetails":[{{"modality":"TEXT","tokenCount":{n}}}]}}"#
                        ))
                    }
                }
            }
            _ => match self.parse_generation(&body) {
                Err(msg) => self.bad_request(&msg),
                Ok(g) => {
                    let step = st.next_step(&cred);
                    self.run_step(&step, &g, body.len()).await
                }
            },
        }
    }

    fn static_json(&self, body: &'static str) -> Response {
        let mut r = Response::new(Body::from(body));
        *r.headers_mut() = self.base_headers("application/json");
        r
    }

    fn json_string(&self, body: String) -> Response {
        let mut r = Response::new(Body::from(body));
        *r.headers_mut() = self.base_headers("application/json");
        r
    }

    fn bad_request(&self, msg: &str) -> Response {
        self.error_response(
            dialect::bad_request(self.dialect, msg, &self.request_id),
            &HeaderMap::new(),
        )
    }

    /// Validate a generation request and extract what the reply needs.
    fn parse_generation(&self, body: &[u8]) -> Result<Generation, String> {
        match &self.endpoint {
            Endpoint::AnthropicMessages => {
                let r = parse_anthropic(body, true)?;
                Ok(Generation {
                    model: r.model.unwrap_or_default(),
                    mode: if r.stream.unwrap_or(false) {
                        Mode::Sse
                    } else {
                        Mode::Json
                    },
                    include_usage: false,
                })
            }
            Endpoint::ChatCompletions => {
                let r: ChatReq = serde_json::from_slice(body).map_err(|e| openai_json_error(&e))?;
                let model = r
                    .model
                    .filter(|m| !m.is_empty())
                    .ok_or("you must provide a model parameter")?;
                if r.messages.is_none() {
                    return Err("Missing required parameter: 'messages'.".into());
                }
                let stream = r.stream.unwrap_or(false);
                Ok(Generation {
                    model,
                    mode: if stream { Mode::Sse } else { Mode::Json },
                    include_usage: stream
                        && r.stream_options
                            .and_then(|o| o.include_usage)
                            .unwrap_or(false),
                })
            }
            Endpoint::Responses => {
                let r: ResponsesReq =
                    serde_json::from_slice(body).map_err(|e| openai_json_error(&e))?;
                let model = r
                    .model
                    .filter(|m| !m.is_empty())
                    .ok_or("Missing required parameter: 'model'.")?;
                Ok(Generation {
                    model,
                    mode: if r.stream.unwrap_or(false) {
                        Mode::Sse
                    } else {
                        Mode::Json
                    },
                    include_usage: false,
                })
            }
            Endpoint::GeminiGenerate { model } | Endpoint::GeminiStream { model } => {
                let r: GeminiReq =
                    serde_json::from_slice(body).map_err(|e| gemini_json_error(&e))?;
                if r.contents.is_none_or(|c| c.is_empty()) {
                    return Err(
                        "* GenerateContentRequest.contents: contents is not specified\n".into(),
                    );
                }
                let mode = match (&self.endpoint, self.array_mode) {
                    (Endpoint::GeminiGenerate { .. }, _) => Mode::Json,
                    (_, true) => Mode::JsonArray,
                    (_, false) => Mode::Sse,
                };
                Ok(Generation {
                    model: model.clone(),
                    mode,
                    include_usage: false,
                })
            }
            // Not generation endpoints; `serve` routes them elsewhere.
            _ => Err("unsupported".into()),
        }
    }

    async fn run_step(&self, step: &Step, g: &Generation, body_len: usize) -> Response {
        let extra = extra_headers(step);
        match &step.action {
            Action::Status {
                code,
                retry_after,
                body,
            } => {
                let mut extra = extra;
                if let Some(secs) = retry_after
                    && let Ok(v) = HeaderValue::from_str(&secs.to_string())
                {
                    extra.insert(RETRY_AFTER, v);
                }
                match body {
                    Some(raw) => {
                        let mut r = Response::new(Body::from(raw.clone()));
                        *r.status_mut() = status_code(*code);
                        let mut headers = self.base_headers("application/json");
                        headers.extend(extra);
                        *r.headers_mut() = headers;
                        r
                    }
                    None => {
                        let ctx = ErrorCtx {
                            model: &g.model,
                            request_id: &self.request_id,
                            retry_after: *retry_after,
                        };
                        self.error_response(
                            dialect::status_error(self.dialect, *code, &ctx),
                            &extra,
                        )
                    }
                }
            }
            Action::Html { status } => {
                let mut r = Response::new(Body::from(dialect::html_page(*status)));
                *r.status_mut() = status_code(*status);
                let h = r.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
                h.insert("server", HeaderValue::from_static("cloudflare"));
                h.insert("cf-ray", HeaderValue::from_static("8f0mock0000000-AMS"));
                h.extend(extra);
                r
            }
            Action::Hang => {
                shutdown_signal(&self.shutdown).await;
                aborted_response()
            }
            Action::EmptyStream => {
                let content_type = if g.mode == Mode::JsonArray {
                    Mode::JsonArray
                } else {
                    Mode::Sse
                };
                self.frames_response(
                    Vec::new(),
                    Pacing::default(),
                    content_type.content_type(),
                    extra,
                )
            }
            Action::EmbeddedError { code } => {
                let code = code.unwrap_or_else(|| dialect::default_embedded_status(self.dialect));
                let ctx = ErrorCtx {
                    model: &g.model,
                    request_id: &self.request_id,
                    retry_after: None,
                };
                let err = dialect::status_error(self.dialect, code, &ctx);
                let mode = if g.mode == Mode::JsonArray {
                    Mode::JsonArray
                } else {
                    Mode::Sse
                };
                let frame = render::error_frame(&err.body, mode);
                self.frames_response(vec![frame], Pacing::default(), mode.content_type(), extra)
            }
            Action::Ok
            | Action::DelayHeaders { .. }
            | Action::SlowStream { .. }
            | Action::FirstByteDelay { .. }
            | Action::MidStreamDisconnect { .. }
            | Action::TruncatedStream { .. }
            | Action::StreamError { .. } => {
                if let Action::DelayHeaders { ms } = step.action {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        () = shutdown_signal(&self.shutdown) => return aborted_response(),
                    }
                }
                self.reply(step, g, body_len, extra)
            }
        }
    }

    /// A successful reply, with the step's pacing faults applied.
    fn reply(&self, step: &Step, g: &Generation, body_len: usize, extra: HeaderMap) -> Response {
        let tool = step.tool_call.as_ref().map(|t| RenderTool {
            name: &t.name,
            args: &t.arguments,
            args_json: serde_json::to_string(&t.arguments).unwrap_or_else(|_| "{}".into()),
        });
        let text = match (&step.text, &tool) {
            (Some(t), _) => t.as_str(),
            (None, Some(_)) => "",
            (None, None) => render::DEFAULT_TEXT,
        };
        let usage = step.usage.unwrap_or_else(|| Usage {
            input: estimate_input_len(body_len),
            output: render::default_output_tokens(
                text,
                tool.as_ref().map(|t| t.args_json.as_str()),
            ),
            ..Usage::default()
        });
        let reply = Reply {
            model: &g.model,
            text,
            tool,
            usage,
            seq: self.seq,
            created: unix_now().as_secs(),
            include_usage: g.include_usage,
        };

        let mut pacing = Pacing::default();
        match step.action {
            Action::SlowStream { chunk_delay_ms } => {
                pacing.between = Duration::from_millis(chunk_delay_ms)
            }
            Action::FirstByteDelay { ms } => pacing.first = Duration::from_millis(ms),
            _ => {}
        }
        let frames = match g.mode {
            Mode::Json => {
                let body = render::json_body(self.dialect, &reply);
                match step.action {
                    // Fast path: a plain body keeps its Content-Length.
                    Action::Ok | Action::DelayHeaders { .. } => {
                        let mut r = Response::new(Body::from(body));
                        let mut headers = self.base_headers("application/json");
                        headers.extend(extra);
                        *r.headers_mut() = headers;
                        return r;
                    }
                    // For timing faults on a non-stream reply, the JSON body
                    // itself is sent in pieces.
                    Action::MidStreamDisconnect { after_chunks } => {
                        split_bytes(&body, after_chunks + 1)
                    }
                    _ => split_bytes(&body, 4),
                }
            }
            mode => {
                let mut frames = render::stream_frames(self.dialect, &reply, mode);
                match step.action {
                    Action::TruncatedStream { after_chunks } => {
                        frames.truncate(after_chunks.min(frames.len().saturating_sub(1)));
                    }
                    Action::StreamError { after_chunks } => {
                        frames.truncate(after_chunks.min(frames.len().saturating_sub(1)));
                        let ctx = ErrorCtx {
                            model: &g.model,
                            request_id: &self.request_id,
                            retry_after: None,
                        };
                        let code = dialect::default_embedded_status(self.dialect);
                        let err = dialect::status_error(self.dialect, code, &ctx);
                        frames.push(render::error_frame(&err.body, mode));
                    }
                    _ => {}
                }
                frames
            }
        };
        if let Action::MidStreamDisconnect { after_chunks } = step.action {
            // Never deliver the last frame, so the cut is always observable.
            pacing.fail_after = Some(after_chunks.min(frames.len().saturating_sub(1)));
        }
        self.frames_response(frames, pacing, g.mode.content_type(), extra)
    }

    fn frames_response(
        &self,
        frames: Vec<Bytes>,
        pacing: Pacing,
        content_type: &'static str,
        extra: HeaderMap,
    ) -> Response {
        let mut r = Response::new(paced_body(frames, pacing, self.shutdown.clone()));
        let mut headers = self.base_headers(content_type);
        if content_type == "text/event-stream" {
            headers.insert("cache-control", HeaderValue::from_static("no-cache"));
        }
        headers.extend(extra);
        *r.headers_mut() = headers;
        r
    }
}

/// What a generation request asked for.
struct Generation {
    model: String,
    mode: Mode,
    include_usage: bool,
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn extra_headers(step: &Step) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in &step.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    h
}

/// A response whose body fails at once: the client sees a broken response
/// instead of a clean one (used when the mock shuts down mid-request).
fn aborted_response() -> Response {
    let mut r = Response::new(Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, _>(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "mock upstream shut down",
        ))
    })));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

fn split_bytes(b: &Bytes, pieces: usize) -> Vec<Bytes> {
    let pieces = pieces.clamp(1, b.len().max(1));
    let size = b.len().div_ceil(pieces).max(1);
    (0..b.len())
        .step_by(size)
        .map(|s| b.slice(s..(s + size).min(b.len())))
        .collect()
}

/// Timing of a frame stream.
#[derive(Default)]
struct Pacing {
    /// Before the first frame (headers are already out).
    first: Duration,
    /// Between frames.
    between: Duration,
    /// Abort the connection after this many frames.
    fail_after: Option<usize>,
}

struct Pacer {
    frames: std::vec::IntoIter<Bytes>,
    sent: usize,
    pacing: Pacing,
    shutdown: watch::Receiver<()>,
    done: bool,
}

/// Stream `frames` as the response body with `pacing` applied.
fn paced_body(frames: Vec<Bytes>, pacing: Pacing, shutdown: watch::Receiver<()>) -> Body {
    if pacing.first.is_zero() && pacing.between.is_zero() && pacing.fail_after.is_none() {
        // No timing involved: hand hyper every frame at once.
        let iter = frames.into_iter().map(Ok::<_, io::Error>);
        return Body::from_stream(futures_util::stream::iter(iter));
    }
    let pacer = Pacer {
        frames: frames.into_iter(),
        sent: 0,
        pacing,
        shutdown,
        done: false,
    };
    Body::from_stream(futures_util::stream::unfold(pacer, |mut p| async move {
        if p.done {
            return None;
        }
        let delay = if p.sent == 0 {
            p.pacing.first
        } else {
            p.pacing.between
        };
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown_signal(&p.shutdown) => {
                    p.done = true;
                    return Some((Err(io::Error::new(io::ErrorKind::ConnectionAborted, "mock upstream shut down")), p));
                }
            }
        }
        if p.pacing.fail_after == Some(p.sent) {
            // Yield once so hyper flushes the frames already written before
            // the error below makes it drop the connection.
            tokio::task::yield_now().await;
            p.done = true;
            return Some((
                Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "mock upstream: scripted mid-stream disconnect",
                )),
                p,
            ));
        }
        let frame = p.frames.next()?;
        p.sent += 1;
        Some((Ok(frame), p))
    }))
}

// ------------------------------------------------------------ request shapes
//
// Only the fields the mock needs are deserialised; `IgnoredAny` validates the
// JSON syntax of everything else without allocating, which keeps large
// agent requests (tens of KB of tools and history) cheap.

#[derive(Deserialize)]
struct AnthropicReq {
    model: Option<String>,
    messages: Option<Vec<IgnoredAny>>,
    max_tokens: Option<u64>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct ChatReq {
    model: Option<String>,
    messages: Option<Vec<IgnoredAny>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ResponsesReq {
    model: Option<String>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct GeminiReq {
    contents: Option<Vec<IgnoredAny>>,
}

fn parse_anthropic(body: &[u8], needs_max_tokens: bool) -> Result<AnthropicReq, String> {
    let r: AnthropicReq =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON in request body: {e}"))?;
    if r.model.as_deref().is_none_or(str::is_empty) {
        return Err("model: Field required".into());
    }
    if r.messages.is_none() {
        return Err("messages: Field required".into());
    }
    if needs_max_tokens && r.max_tokens.is_none() {
        return Err("max_tokens: Field required".into());
    }
    Ok(r)
}

fn openai_json_error(e: &serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() {
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)".into()
    } else {
        format!("Invalid type in request body: {e}")
    }
}

fn gemini_json_error(e: &serde_json::Error) -> String {
    format!("Invalid JSON payload received. {e}")
}

/// Default input estimate: about four bytes per token.
fn estimate_input_len(len: usize) -> u64 {
    (len as u64 / 4).max(1)
}

fn estimate_input(body: &[u8]) -> u64 {
    estimate_input_len(body.len())
}

/// RFC 3339 UTC timestamp for Unix seconds (civil-from-days conversion).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// --------------------------------------------------------------- model lists

const ANTHROPIC_MODELS: &str = r#"{"data":[{"type":"model","id":"claude-opus-4-1-20250805","display_name":"Claude Opus 4.1","created_at":"2025-08-05T00:00:00Z"},{"type":"model","id":"claude-sonnet-4-5-20250929","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"},{"type":"model","id":"claude-haiku-4-5-20251001","display_name":"Claude Haiku 4.5","created_at":"2025-10-01T00:00:00Z"}],"has_more":false,"first_id":"claude-opus-4-1-20250805","last_id":"claude-haiku-4-5-20251001"}"#;

const OPENAI_MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"gpt-5","object":"model","created":1754425777,"owned_by":"system"}]}"#;

const GEMINI_MODELS: &str = r#"{"models":[{"name":"models/gemini-2.5-flash","version":"001","displayName":"Gemini 2.5 Flash","description":"Stable version of Gemini 2.5 Flash","inputTokenLimit":1048576,"outputTokenLimit":65536,"supportedGenerationMethods":["generateContent","countTokens","createCachedContent","batchGenerateContent"],"temperature":1,"topP":0.95,"topK":64,"maxTemperature":2,"thinking":true},{"name":"models/gemini-2.5-pro","version":"2.5","displayName":"Gemini 2.5 Pro","description":"Stable release of Gemini 2.5 Pro","inputTokenLimit":1048576,"outputTokenLimit":65536,"supportedGenerationMethods":["generateContent","countTokens","createCachedContent","batchGenerateContent"],"temperature":1,"topP":0.95,"topK":64,"maxTemperature":2,"thinking":true}]}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn split_bytes_covers_everything() {
        let b = Bytes::from_static(b"0123456789");
        let parts = split_bytes(&b, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), b"0123456789");
        assert_eq!(split_bytes(&b, 0).len(), 1);
        assert_eq!(split_bytes(&Bytes::new(), 4).len(), 0);
    }
}
