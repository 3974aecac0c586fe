//! One classifier for upstream outcomes, streaming or not.
//!
//! The gateway has to decide, for every upstream attempt, whether to hand the answer to the
//! client, to fail over to another key/provider (and how to penalise this one), or to give up.
//! [`classify_response`] judges a status line + body; for streams, the commit point (the
//! moment the first byte goes to the client) additionally reads ahead with
//! [`classify_first_event`] / [`classify_first_element`] until real data arrives, because every
//! dialect can report errors *inside* a 200 stream.
//!
//! Rules for [`classify_response`], first match wins:
//!
//! 1. 2xx: `text/event-stream` → `Success` (the body is judged event by event); an empty body →
//!    `EmptyBody`; an HTML page → `Html`; unparseable JSON → `Malformed`; a JSON error envelope
//!    (`{"error":…}`, `{"type":"error",…}`, Gemini's `[{"error":…}]`) → classified as below
//!    with the status implied by the error; anything else → `Success`.
//! 2. 413 → `ClientError(RequestTooLarge)` — even as an HTML page (Cloudflare answers 413 in
//!    front of Anthropic), since retrying elsewhere cannot help.
//! 3. An HTML page → `Html`.
//! 4. Key signals in the body, whatever the status: Gemini `ErrorInfo.reason` `API_KEY_*` or
//!    OpenAI `invalid_api_key` → `Unauthorized`; quota/billing exhaustion (`insufficient_quota`,
//!    `billing_error`, `usage_not_included`, Anthropic "credit balance is too low" / "reached
//!    your specified API usage limits" / `enforced_spend_limit_reached`) → `Billing`.
//! 5. By status: 401/403 → `Unauthorized`; 402 → `Billing`; 404 → `NotFound`; 429 →
//!    `RateLimited` (kind from the message, else `Unknown`; refine with [`rate_limit_kind`]
//!    or use [`classify_http`]); 529 or `overloaded_error` → `Overloaded`; 408/409 and 5xx →
//!    `Server` (5xx saying "overloaded" → `Overloaded`); Gemini `FAILED_PRECONDITION`
//!    (unsupported region, billing not enabled) → `Unauthorized`; any other 4xx →
//!    `ClientError` (context length, content policy or plain invalid request).

use aether_domain::format::Dialect;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::sse::SseEvent;

/// Bodies larger than this are not parsed for error details (error bodies are small; a huge
/// body is judged by its status alone), which keeps classification cheap and bounded.
pub const MAX_ERROR_BODY_BYTES: usize = 1 << 20;

/// What an upstream attempt amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Forward to the client.
    Success,
    /// The request itself is at fault: return the upstream answer as-is, no failover.
    ClientError {
        /// Why.
        kind: ClientErrorKind,
    },
    /// This upstream key cannot serve the request: penalise the key, fail over.
    KeyError {
        /// How.
        class: KeyErrorClass,
    },
    /// The upstream is out of capacity (Anthropic 529): fail over, no key penalty.
    Overloaded,
    /// The upstream failed (5xx, 408, 409, unexpected 1xx/3xx, or an error inside a 200).
    Server {
        /// HTTP status as received.
        status: u16,
    },
    /// An HTML page (proxy/CDN error page, captive portal) instead of an API answer.
    Html {
        /// HTTP status as received.
        status: u16,
    },
    /// A successful status with nothing in the body.
    EmptyBody {
        /// HTTP status as received.
        status: u16,
    },
    /// A successful status whose body is not the JSON the dialect promises.
    Malformed {
        /// HTTP status as received.
        status: u16,
    },
}

/// Why a request was rejected as the client's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientErrorKind {
    /// Generic validation failure (400/422 and unlisted 4xx).
    InvalidRequest,
    /// The prompt (plus `max_tokens`) does not fit the model's context window.
    ContextLengthExceeded,
    /// Refused by a content/safety policy.
    ContentPolicy,
    /// The body or an attachment (image, PDF) is too large.
    RequestTooLarge,
}

/// What is wrong with the upstream key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyErrorClass {
    /// Invalid, revoked, leaked, or not permitted (401/403, Gemini `API_KEY_INVALID`).
    Unauthorized,
    /// Out of credit / spend cap / plan does not include the usage: needs a human, not a
    /// cool-down.
    Billing,
    /// The model does not exist for this key/provider (404).
    NotFound,
    /// Rate limited (429).
    RateLimited {
        /// Which limit, as far as can be told.
        kind: RateLimitKind,
    },
}

/// Which rate limit was hit; drives the key's cool-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitKind {
    /// Requests per period exhausted.
    Requests,
    /// Tokens per period exhausted.
    Tokens,
    /// Limits report capacity left, so it is a concurrency/burst limit (frees up quickly).
    Concurrency,
    /// Nothing tells.
    Unknown,
}

impl Outcome {
    /// Whether another key/provider should be tried (everything except `Success` and
    /// `ClientError`).
    #[must_use]
    pub const fn should_failover(self) -> bool {
        !matches!(self, Self::Success | Self::ClientError { .. })
    }
}

// ---- error-envelope extraction -----------------------------------------------------------

/// The parts of an upstream error envelope, whatever the dialect that produced it (relays
/// often answer in a dialect other than the one requested, so extraction is dialect-agnostic).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ErrorInfo {
    message: Option<String>,
    /// Anthropic / OpenAI `type`.
    kind: Option<String>,
    /// OpenAI string `code`.
    code: Option<String>,
    /// Gemini numeric `code` (an HTTP status).
    numeric_code: Option<u16>,
    /// Gemini `status` (google.rpc code name).
    status: Option<String>,
    /// Gemini `details[].reason` and `details[].violations[].quotaId`, plus Anthropic
    /// `details.error_code`.
    reasons: Vec<String>,
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

impl ErrorInfo {
    /// Reads an error object (the value of `error`, or a flat error event).
    fn from_object(e: &Value) -> Self {
        let mut info = Self {
            message: str_field(e, "message"),
            kind: str_field(e, "type"),
            status: str_field(e, "status"),
            ..Self::default()
        };
        match e.get("code") {
            Some(Value::String(s)) => info.code = Some(s.clone()),
            Some(Value::Number(n)) => {
                info.numeric_code = n.as_u64().and_then(|c| u16::try_from(c).ok())
            }
            _ => {}
        }
        match e.get("details") {
            Some(Value::Array(details)) => {
                for d in details {
                    info.reasons.extend(str_field(d, "reason"));
                    if let Some(Value::Array(violations)) = d.get("violations") {
                        info.reasons
                            .extend(violations.iter().filter_map(|v| str_field(v, "quotaId")));
                    }
                }
            }
            Some(d @ Value::Object(_)) => info.reasons.extend(str_field(d, "error_code")),
            _ => {}
        }
        info
    }

    /// Finds the error envelope in a parsed body or event, if there is one.
    fn find(v: &Value) -> Option<Self> {
        if let Value::Array(items) = v {
            return items.iter().find_map(Self::find);
        }
        let obj = v.as_object()?;
        match obj.get("error") {
            Some(e @ Value::Object(_)) => return Some(Self::from_object(e)),
            Some(Value::String(s)) => {
                return Some(Self {
                    message: Some(s.clone()),
                    ..Self::default()
                });
            }
            _ => {}
        }
        match obj.get("type").and_then(Value::as_str) {
            // The SDK's flat Responses `error` event: fields at the top level.
            Some("error") => Some(Self::from_object(v)),
            Some("response.failed") => Some(
                v.pointer("/response/error")
                    .filter(|e| e.is_object())
                    .map(Self::from_object)
                    .unwrap_or_default(),
            ),
            _ => None,
        }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        [&self.code, &self.kind, &self.status]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The HTTP status an in-band error stands for: Gemini's numeric code when it is one,
    /// else the first recognised name among `code`, `type` and `status`.
    fn implied_status(&self) -> Option<u16> {
        if let Some(c) = self.numeric_code.filter(|c| (400..=599).contains(c)) {
            return Some(c);
        }
        self.names().find_map(status_for_name)
    }

    fn message_lower(&self) -> String {
        self.message
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    fn has_name(&self, names: &[&str]) -> bool {
        self.names()
            .chain(self.reasons.iter().map(String::as_str))
            .any(|n| names.contains(&n))
    }
}

/// Maps the error names of all dialects to the status they are sent with.
fn status_for_name(name: &str) -> Option<u16> {
    Some(match name {
        "invalid_request_error"
        | "invalid_prompt"
        | "context_length_exceeded"
        | "INVALID_ARGUMENT"
        | "FAILED_PRECONDITION"
        | "OUT_OF_RANGE" => 400,
        "authentication_error" | "invalid_api_key" | "UNAUTHENTICATED" => 401,
        "billing_error" => 402,
        "permission_error" | "PERMISSION_DENIED" => 403,
        "not_found_error" | "model_not_found" | "NOT_FOUND" => 404,
        "request_too_large" => 413,
        "rate_limit_error"
        | "rate_limit_exceeded"
        | "insufficient_quota"
        | "RESOURCE_EXHAUSTED"
        | "usage_not_included" => 429,
        "api_error" | "server_error" | "INTERNAL" | "UNKNOWN" => 500,
        "UNAVAILABLE" => 503,
        "timeout_error" | "DEADLINE_EXCEEDED" => 504,
        "overloaded_error" => 529,
        _ => return None,
    })
}

const BILLING_NAMES: &[&str] = &[
    "insufficient_quota",
    "billing_error",
    "usage_not_included",
    "billing_hard_limit_reached",
    "enforced_spend_limit_reached",
];

const BILLING_PHRASES: &[&str] = &[
    "credit balance is too low",
    "reached your specified api usage limits",
];

const CONTEXT_PHRASES: &[&str] = &[
    "prompt is too long",
    "maximum context length",
    "context length",
    "context window",
    "exceed context limit",
    "exceeds the maximum number of tokens",
    "too many tokens",
    "input is too long",
];

const POLICY_NAMES: &[&str] = &["content_policy_violation", "content_filter"];
const POLICY_PHRASES: &[&str] = &[
    "content filtering policy",
    "content policy",
    "safety system",
];
const TOO_LARGE_PHRASES: &[&str] = &[
    "image exceeds",
    "image too large",
    "too large",
    "exceeds the maximum allowed size",
];

fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| haystack.contains(n))
}

/// Rate-limit kind from a 429 message or quota ids (Gemini `quotaId`s such as
/// `GenerateRequestsPerMinutePerProjectPerModel`).
fn rate_limit_kind_from_body(info: &ErrorInfo) -> RateLimitKind {
    let mut text = info.message_lower();
    for r in &info.reasons {
        text.push(' ');
        text.push_str(&r.to_ascii_lowercase());
    }
    if text.contains("concurren") {
        RateLimitKind::Concurrency
    } else if contains_any(
        &text,
        &[
            "tokens per",
            "tokensper",
            "(tpm)",
            "tpm:",
            "token rate limit",
        ],
    ) {
        RateLimitKind::Tokens
    } else if contains_any(&text, &["requests per", "requestsper", "(rpm)", "rpm:"]) {
        RateLimitKind::Requests
    } else {
        RateLimitKind::Unknown
    }
}

fn client_error_kind(status: u16, info: Option<&ErrorInfo>) -> ClientErrorKind {
    if status == 413 {
        return ClientErrorKind::RequestTooLarge;
    }
    let Some(info) = info else {
        return ClientErrorKind::InvalidRequest;
    };
    let msg = info.message_lower();
    if info.has_name(&["context_length_exceeded"]) || contains_any(&msg, CONTEXT_PHRASES) {
        ClientErrorKind::ContextLengthExceeded
    } else if info.has_name(POLICY_NAMES) || contains_any(&msg, POLICY_PHRASES) {
        ClientErrorKind::ContentPolicy
    } else if info.has_name(&["request_too_large"]) || contains_any(&msg, TOO_LARGE_PHRASES) {
        ClientErrorKind::RequestTooLarge
    } else {
        ClientErrorKind::InvalidRequest
    }
}

/// Rules 4 and 5 of the module docs.
fn decide(status: u16, info: Option<&ErrorInfo>) -> Outcome {
    let key = |class| Outcome::KeyError { class };
    if status == 413 {
        return Outcome::ClientError {
            kind: ClientErrorKind::RequestTooLarge,
        };
    }
    if let Some(info) = info {
        if info.reasons.iter().any(|r| r.starts_with("API_KEY_"))
            || info.has_name(&["invalid_api_key"])
        {
            return key(KeyErrorClass::Unauthorized);
        }
        if info.has_name(BILLING_NAMES) || contains_any(&info.message_lower(), BILLING_PHRASES) {
            return key(KeyErrorClass::Billing);
        }
    }
    let overloaded = info.is_some_and(|i| {
        i.has_name(&["overloaded_error"])
            || (status >= 500 && i.message_lower().contains("overloaded"))
    });
    match status {
        401 | 403 => key(KeyErrorClass::Unauthorized),
        402 => key(KeyErrorClass::Billing),
        404 => key(KeyErrorClass::NotFound),
        429 => key(KeyErrorClass::RateLimited {
            kind: info.map_or(RateLimitKind::Unknown, rate_limit_kind_from_body),
        }),
        529 => Outcome::Overloaded,
        _ if overloaded => Outcome::Overloaded,
        408 | 409 => Outcome::Server { status },
        400..=499 => {
            if info.is_some_and(|i| i.has_name(&["FAILED_PRECONDITION"])) {
                key(KeyErrorClass::Unauthorized)
            } else {
                Outcome::ClientError {
                    kind: client_error_kind(status, info),
                }
            }
        }
        _ => Outcome::Server { status },
    }
}

fn trimmed_start(body: &[u8]) -> &[u8] {
    let start = body
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(body.len());
    body.get(start..).unwrap_or_default()
}

fn mime_is(content_type: Option<&str>, mime: &str) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(mime))
}

/// An HTML page: declared as such, or starting with `<` (`<!DOCTYPE html>`, `<html>`).
fn is_html(content_type: Option<&str>, body: &[u8]) -> bool {
    mime_is(content_type, "text/html") || trimmed_start(body).first() == Some(&b'<')
}

fn parse_error_info(body: &[u8]) -> Option<ErrorInfo> {
    if body.len() > MAX_ERROR_BODY_BYTES {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    ErrorInfo::find(&v)
}

/// Result of probing a body for an error envelope without building a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ErrorProbe(bool);

impl<'de> Deserialize<'de> for ErrorProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ProbeVisitor)
    }
}

/// Visits a body (or a top-level array element) and reports whether it is an object with a
/// non-null `error` member or `"type": "error"`. Everything else is skipped with
/// `IgnoredAny`, so a large successful body is validated without allocating per value.
struct ProbeVisitor;

impl<'de> serde::de::Visitor<'de> for ProbeVisitor {
    type Value = ErrorProbe;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ErrorProbe, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<ProbeKey>()? {
            match key {
                ProbeKey::Error => found |= map.next_value::<Option<IgnoredAny>>()?.is_some(),
                ProbeKey::Type => found |= map.next_value::<IsErrorStr>()?.0,
                ProbeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ErrorProbe(found))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ErrorProbe, A::Error> {
        let mut found = false;
        while let Some(ErrorProbe(f)) = seq.next_element::<ErrorProbe>()? {
            found |= f;
        }
        Ok(ErrorProbe(found))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<ErrorProbe, E> {
        Ok(ErrorProbe(false))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<ErrorProbe, E> {
        Ok(ErrorProbe(false))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<ErrorProbe, E> {
        Ok(ErrorProbe(false))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<ErrorProbe, E> {
        Ok(ErrorProbe(false))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<ErrorProbe, E> {
        Ok(ErrorProbe(false))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<ErrorProbe, E> {
        Ok(ErrorProbe(false))
    }
}

/// The object keys the probe cares about, matched without allocating.
enum ProbeKey {
    Error,
    Type,
    Other,
}

impl<'de> Deserialize<'de> for ProbeKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ProbeKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProbeKey, E> {
                Ok(match v {
                    "error" => ProbeKey::Error,
                    "type" => ProbeKey::Type,
                    _ => ProbeKey::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// Whether a value is the string `"error"`; any other value is skipped.
struct IsErrorStr(bool);

impl<'de> Deserialize<'de> for IsErrorStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = IsErrorStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IsErrorStr, E> {
                Ok(IsErrorStr(v == "error"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<IsErrorStr, E> {
                Ok(IsErrorStr(false))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<IsErrorStr, E> {
                Ok(IsErrorStr(false))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<IsErrorStr, E> {
                Ok(IsErrorStr(false))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<IsErrorStr, E> {
                Ok(IsErrorStr(false))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<IsErrorStr, E> {
                Ok(IsErrorStr(false))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<IsErrorStr, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsErrorStr(false))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<IsErrorStr, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsErrorStr(false))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether a successful-status body carries an error envelope; `Err` when it is not JSON.
fn success_body_has_error(body: &[u8]) -> Result<bool, serde_json::Error> {
    serde_json::from_slice::<ErrorProbe>(body).map(|p| p.0)
}

/// Classifies an upstream response from its status, `Content-Type` and complete body.
///
/// For a 2xx stream pass the headers only (an empty `body`) when the content type is
/// `text/event-stream`; for Gemini's JSON-array stream read the first element and use
/// [`classify_first_element`] instead. `dialect` is accepted for symmetry and future
/// dialect-specific rules; today's rules recognise every dialect's envelope everywhere,
/// because relays do not always answer in the dialect they were asked in.
#[must_use]
pub fn classify_response(
    dialect: Dialect,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Outcome {
    let _ = dialect;
    if (200..300).contains(&status) {
        if mime_is(content_type, "text/event-stream") {
            return Outcome::Success;
        }
        if trimmed_start(body).is_empty() {
            return Outcome::EmptyBody { status };
        }
        if is_html(content_type, body) {
            return Outcome::Html { status };
        }
        return match success_body_has_error(body) {
            Err(_) => Outcome::Malformed { status },
            Ok(false) => Outcome::Success,
            Ok(true) => {
                let info = parse_error_info(body).unwrap_or_default();
                decide(info.implied_status().unwrap_or(500), Some(&info))
            }
        };
    }
    if status == 413 {
        return decide(413, None);
    }
    if is_html(content_type, body) {
        return Outcome::Html { status };
    }
    let info = parse_error_info(body);
    decide(status, info.as_ref())
}

/// Like [`classify_response`], but takes the response headers: the content type is read from
/// them, and a rate limit whose body does not say which limit was hit is refined with
/// [`rate_limit_kind`].
#[must_use]
pub fn classify_http(
    dialect: Dialect,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Outcome {
    let content_type = header(headers, "content-type");
    match classify_response(dialect, status, content_type, body) {
        // The message names the exhausted limit more precisely than the headers; but headers
        // that show capacity left on every per-minute limit mean none of them was hit, so it
        // was concurrency, whatever a generic message says.
        Outcome::KeyError {
            class: KeyErrorClass::RateLimited { kind: from_body },
        } => Outcome::KeyError {
            class: KeyErrorClass::RateLimited {
                kind: match (from_body, rate_limit_kind(dialect, headers)) {
                    (RateLimitKind::Unknown, h) | (_, h @ RateLimitKind::Concurrency) => h,
                    (b, _) => b,
                },
            },
        },
        other => other,
    }
}

/// The human-readable message of an upstream error body, for logs.
#[must_use]
pub fn error_message(body: &[u8]) -> Option<String> {
    parse_error_info(body)?.message
}

// ---- headers -----------------------------------------------------------------------------

fn header<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Which limit a 429 hit, from the rate-limit headers:
///
/// - Anthropic: `anthropic-ratelimit-requests-remaining: 0` → `Requests`;
///   `anthropic-ratelimit-{tokens,input-tokens,output-tokens}-remaining: 0` → `Tokens`.
/// - OpenAI (Chat and Responses): `x-ratelimit-remaining-requests: 0` → `Requests`;
///   `x-ratelimit-remaining-tokens: 0` → `Tokens`.
/// - When such headers are present but none reads 0, the per-period limits still have room,
///   so the 429 came from a concurrency/burst limit → `Concurrency`.
/// - No headers (Gemini never sends them) → `Unknown`.
#[must_use]
pub fn rate_limit_kind(dialect: Dialect, headers: &[(&str, &str)]) -> RateLimitKind {
    let (requests, tokens): (&[&str], &[&str]) = match dialect {
        Dialect::AnthropicMessages => (
            &["anthropic-ratelimit-requests-remaining"],
            &[
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-input-tokens-remaining",
                "anthropic-ratelimit-output-tokens-remaining",
            ],
        ),
        Dialect::OpenaiChat | Dialect::OpenaiResponses => (
            &["x-ratelimit-remaining-requests"],
            &["x-ratelimit-remaining-tokens"],
        ),
        Dialect::Gemini => (&[], &[]),
    };
    let remaining = |names: &[&str]| -> Vec<u64> {
        names
            .iter()
            .filter_map(|n| header(headers, n))
            .filter_map(|v| v.parse::<f64>().ok())
            .map(|v| {
                if v.is_finite() && v > 0.0 {
                    v.ceil() as u64
                } else {
                    0
                }
            })
            .collect()
    };
    let (req, tok) = (remaining(requests), remaining(tokens));
    if req.contains(&0) {
        RateLimitKind::Requests
    } else if tok.contains(&0) {
        RateLimitKind::Tokens
    } else if !req.is_empty() || !tok.is_empty() {
        RateLimitKind::Concurrency
    } else {
        RateLimitKind::Unknown
    }
}

/// Parses a non-negative decimal number of seconds (`"30"`, `"1.5"`), rounding up.
fn parse_secs(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    let f: f64 = v.parse().ok()?;
    f.is_finite().then(|| f.ceil() as u64)
}

/// How long to wait before retrying, in whole seconds (rounded up), from `retry-after-ms`
/// (preferred, as the Stainless SDKs do) or a delta-seconds `retry-after`.
///
/// An HTTP-date `retry-after` needs the current time: see [`retry_after_secs_at`].
#[must_use]
pub fn retry_after_secs(headers: &[(&str, &str)]) -> Option<u64> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(parse_secs) {
        return Some(ms.div_ceil(1000));
    }
    header(headers, "retry-after").and_then(parse_secs)
}

/// [`retry_after_secs`], also accepting an IMF-fixdate `retry-after`
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) relative to `now_unix` (a date in the past means 0).
#[must_use]
pub fn retry_after_secs_at(headers: &[(&str, &str)], now_unix: i64) -> Option<u64> {
    if let Some(s) = retry_after_secs(headers) {
        return Some(s);
    }
    let at = parse_http_date(header(headers, "retry-after")?)?;
    Some(u64::try_from(at.saturating_sub(now_unix)).unwrap_or(0))
}

/// Parses an IMF-fixdate into Unix seconds. The obsolete RFC 850 and asctime forms are not
/// accepted (RFC 9110 requires senders to use IMF-fixdate).
fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: i64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&m)
        || !(0..=60).contains(&sec)
    {
        return None;
    }
    if !(1..=9999).contains(&year) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic-Gregorian date (the classic era-based conversion:
/// years are shifted to start in March so the leap day is the last day of the year).
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds to wait according to the body: Gemini's `RetryInfo.retryDelay` (`"42s"`,
/// `"18.4s"`) or an OpenAI-style "try again in 2s / 250ms" message. Rounded up.
#[must_use]
pub fn retry_after_from_body(body: &[u8]) -> Option<u64> {
    if body.len() > MAX_ERROR_BODY_BYTES {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = match &v {
        Value::Array(items) => items.iter().find_map(|i| i.get("error"))?,
        other => other.get("error")?,
    };
    if let Some(Value::Array(details)) = error.get("details") {
        let delay = details
            .iter()
            .filter_map(|d| d.get("retryDelay").and_then(Value::as_str))
            .find_map(|d| parse_secs(d.trim().strip_suffix('s')?));
        if delay.is_some() {
            return delay;
        }
    }
    let msg = error
        .get("message")
        .and_then(Value::as_str)?
        .to_ascii_lowercase();
    let after = msg.split("try again in").nth(1)?.trim_start();
    let digits_end = after
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(after.len());
    let (number, unit) = after.split_at(digits_end);
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let unit = unit.trim_start();
    if unit.starts_with("ms") {
        Some((value / 1000.0).ceil() as u64)
    } else if unit.starts_with('s') {
        Some(value.ceil() as u64)
    } else {
        None
    }
}

// ---- stream commit point -------------------------------------------------------------------

/// Verdict on one event read ahead before committing a stream to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstEvent {
    /// Real data: commit (forward everything buffered so far, then stream).
    Data,
    /// Keep-alive or bookkeeping: buffer it and read the next event.
    Ignorable,
    /// An error inside the 200 stream: treat like an error response (fail over or report).
    Error {
        /// The error classified exactly like an HTTP error response would be (the status is
        /// implied by the error's code/type; unknown errors count as `Server { status: 500 }`).
        outcome: Outcome,
        /// The upstream's message, for logs.
        message: String,
    },
}

const ANTHROPIC_DATA_EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
];

fn stream_error(info: &ErrorInfo) -> FirstEvent {
    FirstEvent::Error {
        outcome: decide(info.implied_status().unwrap_or(500), Some(info)),
        message: info
            .message
            .clone()
            .unwrap_or_else(|| "upstream stream error".to_string()),
    }
}

/// A payload that is not JSON where JSON was promised: treated as a failed attempt.
fn malformed_event() -> FirstEvent {
    FirstEvent::Error {
        outcome: Outcome::Malformed { status: 200 },
        message: "upstream sent a non-JSON stream event".to_string(),
    }
}

/// Classifies an SSE event read before the stream is committed.
///
/// What counts as real data, per dialect:
/// - **Anthropic**: `message_start`, `content_block_*`, `message_delta`, `message_stop`.
///   `error` is an error; `ping` and unknown event types are ignorable. (Anthropic's
///   mid-stream `overloaded_error` usually comes *after* `message_start`, so committing there
///   trades that failover for time-to-first-byte.)
/// - **OpenAI Chat**: any chunk with a non-empty `choices` array (the role-only first delta
///   included), a usage chunk, and `[DONE]`. A chunk with a top-level `error` is an error;
///   other chunks with empty `choices` (Azure's `prompt_filter_results` preamble) are
///   ignorable.
/// - **Responses**: every `response.*` event except `response.created`, `response.in_progress`
///   and `response.queued` (bookkeeping, ignorable) and `response.failed` (an error); `error`
///   is an error; non-`response.*` types are ignorable.
/// - **Gemini**: every chunk, unless it carries `error`.
///
/// Events without data (only `event:`/`id:`/`retry:`) are ignorable. A `data` payload that is
/// not JSON (other than `[DONE]`) is reported as an error with outcome `Malformed`.
#[must_use]
pub fn classify_first_event(dialect: Dialect, ev: &SseEvent) -> FirstEvent {
    let data = ev.data.trim();
    if data.is_empty() {
        return if dialect == Dialect::AnthropicMessages && ev.event.as_deref() == Some("error") {
            FirstEvent::Error {
                outcome: Outcome::Server { status: 500 },
                message: "upstream stream error".to_string(),
            }
        } else {
            FirstEvent::Ignorable
        };
    }
    if dialect == Dialect::OpenaiChat && data.starts_with("[DONE]") {
        return FirstEvent::Data;
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return malformed_event();
    };
    let data_type = v.get("type").and_then(Value::as_str);
    match dialect {
        Dialect::AnthropicMessages => {
            let kind = ev.event.as_deref().or(data_type).unwrap_or_default();
            if kind == "error" || data_type == Some("error") {
                stream_error(&ErrorInfo::find(&v).unwrap_or_default())
            } else if ANTHROPIC_DATA_EVENTS.contains(&kind) {
                FirstEvent::Data
            } else {
                FirstEvent::Ignorable
            }
        }
        Dialect::OpenaiChat => {
            if let Some(info) = v
                .get("error")
                .filter(|e| !e.is_null())
                .and(ErrorInfo::find(&v))
            {
                return stream_error(&info);
            }
            let choices = v.get("choices").and_then(Value::as_array).map(Vec::len);
            let has_usage = v.get("usage").is_some_and(|u| !u.is_null());
            if choices.is_some_and(|n| n > 0) || has_usage || choices.is_none() {
                FirstEvent::Data
            } else {
                FirstEvent::Ignorable
            }
        }
        Dialect::OpenaiResponses => {
            let kind = data_type.or(ev.event.as_deref()).unwrap_or_default();
            match kind {
                "error" | "response.failed" => {
                    stream_error(&ErrorInfo::find(&v).unwrap_or_default())
                }
                "response.created" | "response.in_progress" | "response.queued" => {
                    FirstEvent::Ignorable
                }
                k if k.starts_with("response.") => FirstEvent::Data,
                _ => FirstEvent::Ignorable,
            }
        }
        Dialect::Gemini => gemini_verdict(&v),
    }
}

fn gemini_verdict(v: &Value) -> FirstEvent {
    let has_error = match v {
        Value::Array(items) => items
            .iter()
            .any(|i| i.get("error").is_some_and(|e| !e.is_null())),
        other => other.get("error").is_some_and(|e| !e.is_null()),
    };
    if has_error {
        stream_error(&ErrorInfo::find(v).unwrap_or_default())
    } else {
        FirstEvent::Data
    }
}

/// Classifies the first element of Gemini's JSON-array stream (see
/// [`crate::gemini_stream::JsonArrayDecoder`]): `{"error": ...}` is an error, anything else
/// is data.
#[must_use]
pub fn classify_first_element(element: &[u8]) -> FirstEvent {
    match serde_json::from_slice::<Value>(element) {
        Ok(v) => gemini_verdict(&v),
        Err(_) => malformed_event(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let cases = [
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
            ("Tue, 29 Feb 2000 12:00:00 GMT", Some(951_825_600)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", None),
            ("Sun Nov  6 08:49:37 1994", None),
            ("Sun, 06 Nov 1994 08:49:37 UTC", None),
            ("Sun, 32 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 08:49 GMT", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_http_date(s), want, "{s}");
        }
    }

    #[test]
    fn implied_status_prefers_numeric_code_then_names() {
        let info = ErrorInfo {
            numeric_code: Some(429),
            status: Some("INTERNAL".into()),
            ..ErrorInfo::default()
        };
        assert_eq!(info.implied_status(), Some(429));
        let info = ErrorInfo {
            code: Some("context_length_exceeded".into()),
            kind: Some("server_error".into()),
            ..ErrorInfo::default()
        };
        assert_eq!(info.implied_status(), Some(400));
        assert_eq!(ErrorInfo::default().implied_status(), None);
    }
}
