//! Probing an upstream on an admin's behalf ("test model", "fetch upstream models"; SPEC §7).
//!
//! The requests go out exactly as the request path sends them — URL per format and custom
//! path ([`upstream::url`]), upstream authentication and endpoint headers
//! ([`upstream::headers`]), the endpoint's proxy client from the shared [`Clients`] pool —
//! but outside the request path: no admission, no usage record, no billing, no breaker or
//! health change. Every probe is bounded in time and in the bytes it reads.
//!
//! The management layer calls these through its `UpstreamProbe` trait (the server adapts
//! them), so the admin crate never depends on this one.
//!
//! [`Clients`]: crate::snapshot::Clients

use std::time::{Duration, Instant};

use aether_domain::ApiFormat;
use aether_domain::entities::Endpoint;
use aether_domain::format::Dialect;
use aether_domain::pricing::TokenUsage;
use aether_protocol::classify::{self, ClientErrorKind, KeyErrorClass, Outcome};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::Gateway;
use crate::upstream::{self, Operation};

/// What a test asks.
pub const PROMPT: &str = "Say hi";
/// Output tokens a test may use.
pub const MAX_OUTPUT_TOKENS: u32 = 16;
/// A test waits at most this long (or the endpoint's shorter timeout).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Each page of a model list waits at most this long (or the endpoint's shorter timeout).
pub const LIST_PAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Model-list pages followed at most.
pub const MAX_LIST_PAGES: u32 = 5;
/// Models kept at most.
pub const MAX_MODELS: usize = 2000;
/// Bytes read of a test answer / of one model-list page.
const MAX_TEST_BODY: usize = 1 << 20;
const MAX_LIST_BODY: usize = 8 << 20;
/// Characters of the answer kept as the excerpt.
const EXCERPT_CHARS: usize = 200;
/// Characters of an unrecognised error body kept as the message.
const ERROR_CHARS: usize = 400;

/// What one test request amounted to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestOutcome {
    pub ok: bool,
    /// `None` when no answer arrived.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub url: String,
    pub answered_model: Option<String>,
    pub excerpt: Option<String>,
    pub usage: Option<TokenUsage>,
    pub error_class: Option<&'static str>,
    pub error: Option<String>,
}

/// One model of an upstream list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedModel {
    pub id: String,
    pub display_name: Option<String>,
}

/// An upstream model list as fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOutcome {
    /// At least the first page was read.
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The first page's URL.
    pub url: String,
    pub models: Vec<ListedModel>,
    pub pages: u32,
    pub truncated: bool,
    pub error_class: Option<&'static str>,
    pub error: Option<String>,
}

/// Why no usable answer came back.
struct Failure {
    status: Option<u16>,
    class: &'static str,
    message: String,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The endpoint's timeout, capped.
fn bounded(ep: &Endpoint, cap: Duration) -> Duration {
    Duration::from_secs(u64::from(ep.timeout).max(1)).min(cap)
}

/// Client headers a CLI-shaped request carries, so relays that only accept CLI traffic
/// answer a test of a CLI endpoint as they would answer the CLI (they pass the gateway's
/// header allow-list like a real client's).
fn client_headers(format: ApiFormat) -> HeaderMap {
    let mut h = HeaderMap::new();
    let pairs: &[(&str, &str)] = match format {
        ApiFormat::ClaudeCli => &[
            ("user-agent", "claude-cli/2.0.0 (external, cli)"),
            ("x-app", "cli"),
        ],
        ApiFormat::OpenaiCli => &[
            ("user-agent", "codex_cli_rs/0.50.0"),
            ("originator", "codex_cli_rs"),
        ],
        ApiFormat::GeminiCli => &[("user-agent", "GeminiCLI/0.10.0")],
        _ => &[("user-agent", "aether-probe")],
    };
    for (k, v) in pairs {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

/// The test request in the endpoint's dialect.
fn test_request(format: ApiFormat, model: &str) -> (Operation, Value) {
    match format.dialect() {
        Dialect::AnthropicMessages => (
            Operation::Messages,
            json!({ "model": model, "max_tokens": MAX_OUTPUT_TOKENS,
                    "messages": [{ "role": "user", "content": PROMPT }] }),
        ),
        // `max_completion_tokens`: OpenAI's reasoning models refuse `max_tokens`.
        Dialect::OpenaiChat => (
            Operation::ChatCompletions,
            json!({ "model": model, "max_completion_tokens": MAX_OUTPUT_TOKENS, "stream": false,
                    "messages": [{ "role": "user", "content": PROMPT }] }),
        ),
        Dialect::OpenaiResponses => (
            Operation::Responses,
            json!({ "model": model, "input": PROMPT, "max_output_tokens": MAX_OUTPUT_TOKENS,
                    "stream": false, "store": false }),
        ),
        Dialect::Gemini => (
            Operation::Generate { stream: false },
            json!({ "contents": [{ "role": "user", "parts": [{ "text": PROMPT }] }],
                    "generationConfig": { "maxOutputTokens": MAX_OUTPUT_TOKENS } }),
        ),
    }
}

/// A query-string value, percent-encoded.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The model-list URL: `/v1/models` (Anthropic, OpenAI) or `/v1beta/models` (Gemini) on the
/// endpoint's base URL, with the same rule as generation URLs for a base that already ends
/// in the version segment. A custom path is for generation and does not apply.
fn list_url(ep: &Endpoint, query: &str) -> String {
    let path = if ep.api_format.dialect() == Dialect::Gemini {
        "/v1beta/models"
    } else {
        "/v1/models"
    };
    let as_custom = Endpoint {
        custom_path: Some(path.to_string()),
        ..ep.clone()
    };
    upstream::url(&as_custom, Operation::Messages, "", query)
}

/// Reads at most `cap` bytes of a body.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> reqwest::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - out.len();
        if chunk.len() >= room {
            out.extend_from_slice(&chunk[..room]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn transport(e: &reqwest::Error) -> Failure {
    let class = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Failure {
        status: None,
        class,
        message,
    }
}

fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "ok",
        Outcome::ClientError { kind } => match kind {
            ClientErrorKind::InvalidRequest => "invalid_request",
            ClientErrorKind::ContextLengthExceeded => "context_length",
            ClientErrorKind::ContentPolicy => "content_policy",
            ClientErrorKind::RequestTooLarge => "request_too_large",
        },
        Outcome::KeyError { class } => match class {
            KeyErrorClass::Unauthorized => "unauthorized",
            KeyErrorClass::Billing => "billing",
            KeyErrorClass::NotFound => "not_found",
            KeyErrorClass::RateLimited { .. } => "rate_limited",
        },
        Outcome::Overloaded => "overloaded",
        Outcome::Server { .. } => "server_error",
        Outcome::Html { .. } => "html_page",
        Outcome::EmptyBody { .. } => "empty_body",
        Outcome::Malformed { .. } => "malformed_body",
    }
}

/// The start of `s`, on one line.
fn excerpt(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        flat.chars().take(max).collect::<String>() + "…"
    } else {
        flat
    }
}

/// Why an answer failed, in words.
fn failure_message(o: Outcome, status: u16, body: &[u8]) -> String {
    if let Some(m) = classify::error_message(body).filter(|m| !m.trim().is_empty()) {
        return excerpt(&m, ERROR_CHARS);
    }
    match o {
        Outcome::Html { .. } => {
            format!(
                "HTTP {status}: an HTML page instead of an API answer (a proxy or CDN error page?)"
            )
        }
        Outcome::EmptyBody { .. } => format!("HTTP {status} with an empty body"),
        _ => {
            let text = String::from_utf8_lossy(body);
            if text.trim().is_empty() {
                format!("HTTP {status}")
            } else {
                excerpt(&text, ERROR_CHARS)
            }
        }
    }
}

fn strs(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// The answering model and the answer's text of a successful non-streaming body.
fn answer(dialect: Dialect, v: &Value) -> (Option<String>, Option<String>) {
    let join = |parts: Vec<&str>| {
        let t = parts.concat();
        (!t.trim().is_empty()).then(|| excerpt(&t, EXCERPT_CHARS))
    };
    let empty = Vec::new();
    match dialect {
        Dialect::AnthropicMessages => (
            strs(&v["model"]).map(str::to_string),
            join(
                v["content"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect(),
            ),
        ),
        Dialect::OpenaiChat => {
            let content = &v["choices"][0]["message"]["content"];
            let text = match content {
                Value::String(s) => join(vec![s.as_str()]),
                Value::Array(parts) => {
                    join(parts.iter().filter_map(|p| p["text"].as_str()).collect())
                }
                _ => None,
            };
            (strs(&v["model"]).map(str::to_string), text)
        }
        Dialect::OpenaiResponses => (
            strs(&v["model"]).map(str::to_string),
            join(
                v["output"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter(|o| o["type"] == "message")
                    .flat_map(|o| o["content"].as_array().unwrap_or(&empty).iter())
                    .filter(|c| c["type"] == "output_text")
                    .filter_map(|c| c["text"].as_str())
                    .collect(),
            ),
        ),
        Dialect::Gemini => (
            strs(&v["modelVersion"]).map(str::to_string),
            join(
                v["candidates"][0]["content"]["parts"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter(|p| p["thought"] != true)
                    .filter_map(|p| p["text"].as_str())
                    .collect(),
            ),
        ),
    }
}

/// Models of one list page, whatever the dialect (relays do not always answer in the one
/// they were asked in), and the query for the next page, if the upstream says there is one.
fn parse_page(v: &Value) -> Option<(Vec<ListedModel>, Option<String>)> {
    let name =
        |m: &Value, keys: &[&str]| keys.iter().find_map(|k| strs(&m[*k]).map(str::to_string));
    if let Some(data) = v["data"].as_array() {
        let models = data
            .iter()
            .filter_map(|m| {
                Some(ListedModel {
                    id: strs(&m["id"])?.to_string(),
                    display_name: name(m, &["display_name", "name"]),
                })
            })
            .collect();
        // Anthropic: `has_more` + `last_id` → `after_id`; OpenAI-style lists that page use
        // the same fields with `after`.
        let next = (v["has_more"] == true)
            .then(|| strs(&v["last_id"]))
            .flatten()
            .map(str::to_string);
        return Some((models, next));
    }
    if let Some(list) = v["models"].as_array() {
        let models = list
            .iter()
            .filter_map(|m| {
                let id = strs(&m["name"]).or_else(|| strs(&m["id"]))?;
                Some(ListedModel {
                    id: id.strip_prefix("models/").unwrap_or(id).to_string(),
                    display_name: name(m, &["displayName", "display_name"]),
                })
            })
            .collect();
        let next = strs(&v["nextPageToken"]).map(str::to_string);
        return Some((models, next));
    }
    None
}

/// The query of a model-list page: the first (`None`) or the one after `cursor`.
fn page_query(dialect: Dialect, cursor: Option<&str>) -> String {
    match (dialect, cursor) {
        (Dialect::AnthropicMessages, None) => "limit=1000".to_string(),
        (Dialect::AnthropicMessages, Some(c)) => format!("limit=1000&after_id={}", enc(c)),
        (Dialect::Gemini, None) => "pageSize=1000".to_string(),
        (Dialect::Gemini, Some(c)) => format!("pageSize=1000&pageToken={}", enc(c)),
        (_, None) => String::new(),
        (_, Some(c)) => format!("after={}", enc(c)),
    }
}

impl Gateway {
    fn probe_client(&self, ep: &Endpoint) -> Result<reqwest::Client, Failure> {
        self.inner
            .clients
            .for_proxy(ep.proxy.as_ref(), &self.inner.cipher)
            .map_err(|message| Failure {
                status: None,
                class: "proxy",
                message: format!("the endpoint's proxy is unusable: {message}"),
            })
    }

    /// Sends one request; returns the status, the response headers and the body (at most
    /// `cap` bytes), all within `wait`.
    async fn probe_send(
        req: reqwest::RequestBuilder,
        wait: Duration,
        cap: usize,
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>), Failure> {
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| {
                    v.to_str()
                        .ok()
                        .map(|v| (k.as_str().to_string(), v.to_string()))
                })
                .collect();
            let body = read_capped(resp, cap).await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        match tokio::time::timeout(wait, exchange).await {
            Err(_) => Err(Failure {
                status: None,
                class: "timeout",
                message: format!("no complete answer within {} s", wait.as_secs()),
            }),
            Ok(Err(e)) => Err(transport(&e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Test model: one minimal non-streaming generation through `secret` on `ep`.
    pub async fn probe_model(&self, ep: &Endpoint, secret: &str, model: &str) -> TestOutcome {
        let dialect = ep.api_format.dialect();
        let model = if dialect == Dialect::Gemini {
            model.strip_prefix("models/").unwrap_or(model)
        } else {
            model
        };
        let (op, body) = test_request(ep.api_format, model);
        let url = upstream::url(ep, op, model, "");
        let mut out = TestOutcome {
            url: url.clone(),
            ..TestOutcome::default()
        };
        let client = match self.probe_client(ep) {
            Ok(c) => c,
            Err(f) => {
                out.error_class = Some(f.class);
                out.error = Some(f.message);
                return out;
            }
        };
        let headers = upstream::headers(&client_headers(ep.api_format), ep, secret);
        let req = client.post(&url).headers(headers).body(body.to_string());
        let started = Instant::now();
        let sent = Self::probe_send(req, bounded(ep, TEST_TIMEOUT), MAX_TEST_BODY).await;
        out.latency_ms = ms(started.elapsed());
        let (status, headers, body) = match sent {
            Ok(r) => r,
            Err(f) => {
                out.status = f.status;
                out.error_class = Some(f.class);
                out.error = Some(f.message);
                return out;
            }
        };
        out.status = Some(status);
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let outcome = classify::classify_http(dialect, status, &pairs, &body);
        if outcome == Outcome::Success {
            out.ok = true;
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                (out.answered_model, out.excerpt) = answer(dialect, &v);
            }
            out.usage = aether_protocol::usage::from_response(dialect, &body);
        } else {
            out.error_class = Some(outcome_class(outcome));
            out.error = Some(failure_message(outcome, status, &body));
        }
        out
    }

    /// Fetch upstream models: the endpoint's model list as `secret` sees it, following up to
    /// [`MAX_LIST_PAGES`] pages and keeping up to [`MAX_MODELS`] models.
    pub async fn probe_model_list(&self, ep: &Endpoint, secret: &str) -> ListOutcome {
        let dialect = ep.api_format.dialect();
        let mut out = ListOutcome {
            url: list_url(ep, &page_query(dialect, None)),
            ..ListOutcome::default()
        };
        let client = match self.probe_client(ep) {
            Ok(c) => c,
            Err(f) => {
                out.error_class = Some(f.class);
                out.error = Some(f.message);
                return out;
            }
        };
        let mut headers = upstream::headers(&client_headers(ep.api_format), ep, secret);
        headers.remove("content-type");
        let wait = bounded(ep, LIST_PAGE_TIMEOUT);
        let started = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = list_url(ep, &page_query(dialect, cursor.as_deref()));
            let req = client.get(&url).headers(headers.clone());
            let sent = Self::probe_send(req, wait, MAX_LIST_BODY).await;
            out.latency_ms = ms(started.elapsed());
            let failure = match sent {
                Err(f) => f,
                Ok((status, hdrs, body)) => {
                    out.status = Some(status);
                    let pairs: Vec<(&str, &str)> =
                        hdrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let outcome = classify::classify_http(dialect, status, &pairs, &body);
                    let page = (outcome == Outcome::Success)
                        .then(|| serde_json::from_slice::<Value>(&body).ok())
                        .flatten()
                        .and_then(|v| parse_page(&v));
                    match page {
                        Some((models, next)) => {
                            out.ok = true;
                            out.pages += 1;
                            for m in models {
                                if out.models.len() >= MAX_MODELS {
                                    out.truncated = true;
                                    break;
                                }
                                if seen.insert(m.id.clone()) {
                                    out.models.push(m);
                                }
                            }
                            match next {
                                Some(_) if out.truncated => return out,
                                Some(_) if out.pages >= MAX_LIST_PAGES => {
                                    out.truncated = true;
                                    return out;
                                }
                                // A cursor that does not move would loop.
                                Some(n) if cursor.as_deref() != Some(n.as_str()) => {
                                    cursor = Some(n);
                                    continue;
                                }
                                _ => return out,
                            }
                        }
                        None if outcome == Outcome::Success => Failure {
                            status: Some(status),
                            class: "malformed_body",
                            message: format!(
                                "not a model list: {}",
                                excerpt(&String::from_utf8_lossy(&body), ERROR_CHARS)
                            ),
                        },
                        None => Failure {
                            status: Some(status),
                            class: outcome_class(outcome),
                            message: failure_message(outcome, status, &body),
                        },
                    }
                }
            };
            // A later page failing keeps what was read.
            out.truncated = out.ok;
            out.status = failure.status;
            out.error_class = Some(failure.class);
            out.error = Some(failure.message);
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_domain::{EndpointId, ProviderId, Timestamp};

    fn ep(format: ApiFormat, base: &str) -> Endpoint {
        Endpoint {
            id: EndpointId::new(),
            provider_id: ProviderId::new(),
            api_format: format,
            base_url: base.into(),
            custom_path: Some("/relay/chat".into()),
            headers: Default::default(),
            timeout: 300,
            max_retries: 3,
            max_concurrent: None,
            proxy: None,
            is_active: true,
            config: json!({}),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn list_urls_per_dialect() {
        assert_eq!(
            list_url(
                &ep(ApiFormat::Claude, "https://api.anthropic.com"),
                "limit=1000"
            ),
            "https://api.anthropic.com/v1/models?limit=1000"
        );
        assert_eq!(
            list_url(&ep(ApiFormat::Openai, "https://api.openai.com/v1/"), ""),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            list_url(
                &ep(ApiFormat::GeminiCli, "https://g.example/x"),
                &page_query(Dialect::Gemini, Some("a b"))
            ),
            "https://g.example/x/v1beta/models?pageSize=1000&pageToken=a%20b"
        );
    }

    #[test]
    fn pages_of_each_dialect() {
        let (m, next) = parse_page(&json!({"data":[{"id":"claude-x","display_name":"Claude X"}],"has_more":true,"last_id":"claude-x"})).unwrap();
        assert_eq!(m[0].id, "claude-x");
        assert_eq!(m[0].display_name.as_deref(), Some("Claude X"));
        assert_eq!(next.as_deref(), Some("claude-x"));
        let (m, next) = parse_page(&json!({"object":"list","data":[{"id":"gpt-4o"}]})).unwrap();
        assert_eq!((m[0].id.as_str(), next), ("gpt-4o", None));
        let (m, next) = parse_page(&json!({"models":[{"name":"models/gemini-2.5-pro","displayName":"Pro"}],"nextPageToken":"t"})).unwrap();
        assert_eq!(m[0].id, "gemini-2.5-pro");
        assert_eq!(next.as_deref(), Some("t"));
        assert!(parse_page(&json!({"hello": 1})).is_none());
    }

    #[test]
    fn answers_of_each_dialect() {
        let (m, t) = answer(
            Dialect::AnthropicMessages,
            &json!({"model":"claude-x","content":[{"type":"text","text":"Hi\nthere"}]}),
        );
        assert_eq!(
            (m.as_deref(), t.as_deref()),
            (Some("claude-x"), Some("Hi there"))
        );
        let (_, t) = answer(
            Dialect::OpenaiResponses,
            &json!({"model":"gpt","output":[{"type":"reasoning"},{"type":"message","content":[{"type":"output_text","text":"Hello"}]}]}),
        );
        assert_eq!(t.as_deref(), Some("Hello"));
        let (m, t) = answer(
            Dialect::Gemini,
            &json!({"modelVersion":"gemini-2.5-flash","candidates":[{"content":{"parts":[{"text":"plan","thought":true},{"text":"Hi!"}]}}]}),
        );
        assert_eq!(
            (m.as_deref(), t.as_deref()),
            (Some("gemini-2.5-flash"), Some("Hi!"))
        );
        let long = "x".repeat(500);
        let (_, t) = answer(
            Dialect::OpenaiChat,
            &json!({"choices":[{"message":{"content": long}}]}),
        );
        assert_eq!(t.unwrap().chars().count(), EXCERPT_CHARS + 1);
    }
}
