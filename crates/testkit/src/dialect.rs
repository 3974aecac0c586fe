//! The four upstream dialects: route classification, credential extraction and
//! each dialect's exact error bodies.
//!
//! Routing is by path *suffix* so the same endpoints also answer under any
//! prefix (`/relay/v1/messages`, `/openai/v1/chat/completions`,
//! `/x/v1beta/models/m:generateContent`), which lets gateway tests exercise
//! custom upstream paths without configuring the mock.

use axum::http::{HeaderMap, Method};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

/// Wire dialect of a request, which decides every response shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI Chat Completions.
    OpenAiChat,
    /// OpenAI Responses API.
    OpenAiResponses,
    /// Google Gemini (Generative Language API v1beta).
    Gemini,
}

/// A matched route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    AnthropicMessages,
    AnthropicCountTokens,
    AnthropicModels,
    ChatCompletions,
    Responses,
    OpenAiModels,
    GeminiGenerate { model: String },
    GeminiStream { model: String },
    GeminiCountTokens { model: String },
    GeminiModels,
}

impl Endpoint {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Endpoint::AnthropicMessages
            | Endpoint::AnthropicCountTokens
            | Endpoint::AnthropicModels => Dialect::Anthropic,
            Endpoint::ChatCompletions | Endpoint::OpenAiModels => Dialect::OpenAiChat,
            Endpoint::Responses => Dialect::OpenAiResponses,
            Endpoint::GeminiGenerate { .. }
            | Endpoint::GeminiStream { .. }
            | Endpoint::GeminiCountTokens { .. }
            | Endpoint::GeminiModels => Dialect::Gemini,
        }
    }

    /// Stable name used in recorded requests.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Endpoint::AnthropicMessages => "anthropic.messages",
            Endpoint::AnthropicCountTokens => "anthropic.count_tokens",
            Endpoint::AnthropicModels => "anthropic.models",
            Endpoint::ChatCompletions => "openai.chat_completions",
            Endpoint::Responses => "openai.responses",
            Endpoint::OpenAiModels => "openai.models",
            Endpoint::GeminiGenerate { .. } => "gemini.generate_content",
            Endpoint::GeminiStream { .. } => "gemini.stream_generate_content",
            Endpoint::GeminiCountTokens { .. } => "gemini.count_tokens",
            Endpoint::GeminiModels => "gemini.models",
        }
    }
}

/// Value of query parameter `name` (percent-decoded), if present.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Classify a request by method and path suffix (any prefix allowed).
pub(crate) fn classify(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Endpoint> {
    let path = path.strip_suffix('/').unwrap_or(path);
    // Gemini model methods: `.../models/{model}:{method}`. The colon only
    // appears in Gemini paths, so check it first.
    if let Some(idx) = path.rfind("/models/") {
        let rest = &path[idx + "/models/".len()..];
        if let Some((model, verb)) = rest.rsplit_once(':') {
            if *method != Method::POST || model.is_empty() {
                return None;
            }
            let model = model.to_owned();
            return match verb {
                "generateContent" => Some(Endpoint::GeminiGenerate { model }),
                "streamGenerateContent" => Some(Endpoint::GeminiStream { model }),
                "countTokens" => Some(Endpoint::GeminiCountTokens { model }),
                _ => None,
            };
        }
    }
    if *method == Method::POST {
        if path.ends_with("/messages/count_tokens") {
            return Some(Endpoint::AnthropicCountTokens);
        }
        if path.ends_with("/messages") {
            return Some(Endpoint::AnthropicMessages);
        }
        if path.ends_with("/chat/completions") {
            return Some(Endpoint::ChatCompletions);
        }
        if path.ends_with("/responses") {
            return Some(Endpoint::Responses);
        }
        return None;
    }
    if *method == Method::GET && path.ends_with("/models") {
        // `/v1/models` is shared by Anthropic and OpenAI: the Anthropic SDK
        // always sends `anthropic-version` (and usually `x-api-key`), OpenAI
        // clients send neither.
        if path.ends_with("/v1beta/models")
            || headers.contains_key("x-goog-api-key")
            || query_param(query, "key").is_some()
        {
            return Some(Endpoint::GeminiModels);
        }
        if headers.contains_key("x-api-key") || headers.contains_key("anthropic-version") {
            return Some(Endpoint::AnthropicModels);
        }
        return Some(Endpoint::OpenAiModels);
    }
    None
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = header_str(headers, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The upstream credential a request carries, per the dialect's auth rules.
pub(crate) fn credential(
    dialect: Dialect,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<String> {
    match dialect {
        Dialect::Anthropic => header_str(headers, "x-api-key")
            .map(str::to_owned)
            .or_else(|| bearer(headers)),
        Dialect::OpenAiChat | Dialect::OpenAiResponses => bearer(headers),
        // Gemini CLI can also send the API key as a bearer token.
        Dialect::Gemini => header_str(headers, "x-goog-api-key")
            .map(str::to_owned)
            .or_else(|| query_param(query, "key").filter(|k| !k.is_empty()))
            .or_else(|| bearer(headers)),
    }
}

/// Why a request was refused before reaching a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    Missing,
    Unknown,
}

/// An error rendered for a dialect: status plus body.
pub(crate) struct ErrorReply {
    pub(crate) status: u16,
    pub(crate) body: ErrorBody,
}

/// A dialect's error envelope. Serialised by hand so keys keep the
/// providers' order (`{"type":"error","error":{"type",..}}` for Anthropic)
/// instead of the sorted order of a `serde_json::Value` map.
#[derive(Clone, Debug)]
pub(crate) enum ErrorBody {
    /// `{"type":"error","error":{"type","message"},"request_id"}`
    Anthropic {
        kind: &'static str,
        message: String,
        request_id: String,
    },
    /// `{"error":{"message","type","param","code"}}`; `responses` picks the
    /// Responses API's in-stream event shape.
    OpenAi {
        responses: bool,
        message: String,
        kind: &'static str,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    /// `{"error":{"code","message","status","details"?}}` (google.rpc.Status)
    Gemini {
        code: u16,
        message: String,
        status: &'static str,
        details: Option<Value>,
    },
}

impl Serialize for ErrorBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct AnthropicInner<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct AnthropicEnv<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            error: AnthropicInner<'a>,
            request_id: &'a str,
        }
        #[derive(Serialize)]
        struct OpenAiInner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct GeminiInner<'a> {
            code: u16,
            message: &'a str,
            status: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a Value>,
        }
        #[derive(Serialize)]
        struct Env<T> {
            error: T,
        }
        match self {
            ErrorBody::Anthropic {
                kind,
                message,
                request_id,
            } => AnthropicEnv {
                kind: "error",
                error: AnthropicInner { kind, message },
                request_id,
            }
            .serialize(s),
            ErrorBody::OpenAi {
                message,
                kind,
                param,
                code,
                ..
            } => Env {
                error: OpenAiInner {
                    message,
                    kind,
                    param: *param,
                    code: *code,
                },
            }
            .serialize(s),
            ErrorBody::Gemini {
                code,
                message,
                status,
                details,
            } => Env {
                error: GeminiInner {
                    code: *code,
                    message,
                    status,
                    details: details.as_ref(),
                },
            }
            .serialize(s),
        }
    }
}

/// Mask a key the way OpenAI does in "Incorrect API key provided" messages.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// The dialect's response to a missing or unknown credential.
pub(crate) fn auth_error(
    dialect: Dialect,
    failure: AuthFailure,
    key: Option<&str>,
    request_id: &str,
) -> ErrorReply {
    match (dialect, failure) {
        (Dialect::Anthropic, AuthFailure::Missing) => anthropic_error(
            401,
            "authentication_error",
            "x-api-key header is required",
            request_id,
        ),
        (Dialect::Anthropic, AuthFailure::Unknown) => {
            anthropic_error(401, "authentication_error", "invalid x-api-key", request_id)
        }
        (Dialect::OpenAiChat | Dialect::OpenAiResponses, AuthFailure::Missing) => openai_error(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            None,
        ),
        (Dialect::OpenAiChat | Dialect::OpenAiResponses, AuthFailure::Unknown) => openai_error(
            401,
            &format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                mask_key(key.unwrap_or_default())
            ),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        // The real Generative Language API answers a request without any
        // credential with 403 PERMISSION_DENIED, and a bad key with 400.
        (Dialect::Gemini, AuthFailure::Missing) => gemini_error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            None,
        ),
        (Dialect::Gemini, AuthFailure::Unknown) => {
            let msg = "API key not valid. Please pass a valid API key.";
            let details = json!([
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": msg
                }
            ]);
            gemini_error(400, "INVALID_ARGUMENT", msg, Some(details))
        }
    }
}

fn anthropic_error(status: u16, kind: &'static str, message: &str, request_id: &str) -> ErrorReply {
    ErrorReply {
        status,
        body: ErrorBody::Anthropic {
            kind,
            message: message.to_owned(),
            request_id: request_id.to_owned(),
        },
    }
}

fn openai_error(
    status: u16,
    message: &str,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
) -> ErrorReply {
    ErrorReply {
        status,
        body: ErrorBody::OpenAi {
            responses: false,
            message: message.to_owned(),
            kind,
            param,
            code,
        },
    }
}

fn gemini_error(
    status: u16,
    grpc_status: &'static str,
    message: &str,
    details: Option<Value>,
) -> ErrorReply {
    ErrorReply {
        status,
        body: ErrorBody::Gemini {
            code: status,
            message: message.to_owned(),
            status: grpc_status,
            details,
        },
    }
}

/// Mark an OpenAI error as coming from the Responses API (affects only its
/// in-stream event shape).
fn for_dialect(mut e: ErrorReply, dialect: Dialect) -> ErrorReply {
    if let ErrorBody::OpenAi { responses, .. } = &mut e.body {
        *responses = dialect == Dialect::OpenAiResponses;
    }
    e
}

/// Context for the default error body of a scripted status.
pub(crate) struct ErrorCtx<'a> {
    pub(crate) model: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) retry_after: Option<u64>,
}

/// The dialect's exact error body for an HTTP status (scripted `Status` steps,
/// validation failures use [`bad_request`]).
pub(crate) fn status_error(dialect: Dialect, status: u16, ctx: &ErrorCtx<'_>) -> ErrorReply {
    match dialect {
        Dialect::Anthropic => {
            let (kind, message) = match status {
                400 => ("invalid_request_error", "prompt is too long: 247583 tokens > 200000 maximum".to_owned()),
                401 => ("authentication_error", "invalid x-api-key".to_owned()),
                402 => (
                    "billing_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.".to_owned(),
                ),
                403 => ("permission_error", "Your API key does not have permission to use the specified resource.".to_owned()),
                404 => ("not_found_error", format!("model: {}", ctx.model)),
                413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes.".to_owned()),
                429 => (
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization of 400,000 input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.".to_owned(),
                ),
                500 => ("api_error", "Internal server error".to_owned()),
                504 => ("timeout_error", "Request timed out".to_owned()),
                529 => ("overloaded_error", "Overloaded".to_owned()),
                s if s >= 500 => ("api_error", "Internal server error".to_owned()),
                _ => ("invalid_request_error", "Invalid request".to_owned()),
            };
            anthropic_error(status, kind, &message, ctx.request_id)
        }
        Dialect::OpenAiChat | Dialect::OpenAiResponses => {
            let responses = dialect == Dialect::OpenAiResponses;
            let e = match status {
                400 if responses => openai_error(
                    400,
                    "Your input exceeds the context window of this model. Please adjust your input and try again.",
                    "invalid_request_error",
                    Some("input"),
                    Some("context_length_exceeded"),
                ),
                400 => openai_error(
                    400,
                    "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens. Please reduce the length of the messages.",
                    "invalid_request_error",
                    Some("messages"),
                    Some("context_length_exceeded"),
                ),
                401 => auth_error(
                    dialect,
                    AuthFailure::Unknown,
                    Some("sk-mock-invalid-key"),
                    ctx.request_id,
                ),
                403 => openai_error(
                    403,
                    "Country, region, or territory not supported",
                    "request_forbidden",
                    None,
                    Some("unsupported_country_region_territory"),
                ),
                404 => openai_error(
                    404,
                    &format!(
                        "The model `{}` does not exist or you do not have access to it.",
                        ctx.model
                    ),
                    "invalid_request_error",
                    None,
                    Some("model_not_found"),
                ),
                429 => openai_error(
                    429,
                    &format!(
                        "Rate limit reached for {} in organization org-mock on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in {}s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                        ctx.model,
                        ctx.retry_after.unwrap_or(2)
                    ),
                    "tokens",
                    None,
                    Some("rate_limit_exceeded"),
                ),
                503 => openai_error(
                    503,
                    "The engine is currently overloaded, please try again later",
                    "server_error",
                    None,
                    None,
                ),
                s if s >= 500 => openai_error(
                    s,
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                    None,
                    None,
                ),
                s => openai_error(s, "Invalid request", "invalid_request_error", None, None),
            };
            for_dialect(e, dialect)
        }
        Dialect::Gemini => match status {
            400 => gemini_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (3475108) exceeds the maximum number of tokens allowed (1048576).",
                None,
            ),
            401 => gemini_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                None,
            ),
            403 => gemini_error(
                403,
                "PERMISSION_DENIED",
                "The caller does not have permission",
                None,
            ),
            404 => gemini_error(
                404,
                "NOT_FOUND",
                &format!(
                    "models/{} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.",
                    ctx.model
                ),
                None,
            ),
            429 => {
                let mut details = vec![
                    json!({
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            "quotaDimensions": {"location": "global", "model": ctx.model},
                            "quotaValue": "10"
                        }]
                    }),
                    json!({
                        "@type": "type.googleapis.com/google.rpc.Help",
                        "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]
                    }),
                ];
                if let Some(secs) = ctx.retry_after {
                    details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{secs}s")}));
                }
                gemini_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
                    Some(Value::Array(details)),
                )
            }
            500 => gemini_error(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                None,
            ),
            503 => gemini_error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                None,
            ),
            504 => gemini_error(
                504,
                "DEADLINE_EXCEEDED",
                "Deadline expired before operation could complete.",
                None,
            ),
            s => {
                let grpc = match s {
                    408 => "DEADLINE_EXCEEDED",
                    409 => "ABORTED",
                    412 => "FAILED_PRECONDITION",
                    501 => "UNIMPLEMENTED",
                    s if s >= 500 => "INTERNAL",
                    _ => "INVALID_ARGUMENT",
                };
                gemini_error(s, grpc, "Request failed.", None)
            }
        },
    }
}

/// The dialect's 400 for a malformed or incomplete request body.
pub(crate) fn bad_request(dialect: Dialect, message: &str, request_id: &str) -> ErrorReply {
    match dialect {
        Dialect::Anthropic => anthropic_error(400, "invalid_request_error", message, request_id),
        Dialect::OpenAiChat | Dialect::OpenAiResponses => for_dialect(
            openai_error(400, message, "invalid_request_error", None, None),
            dialect,
        ),
        Dialect::Gemini => gemini_error(400, "INVALID_ARGUMENT", message, None),
    }
}

/// The dialect's 413 for an oversized body.
pub(crate) fn too_large(dialect: Dialect, request_id: &str) -> ErrorReply {
    status_error(
        dialect,
        413,
        &ErrorCtx {
            model: "",
            request_id,
            retry_after: None,
        },
    )
}

/// Default embedded-error status per dialect: the "overloaded" flavour each
/// provider actually sends mid-stream.
pub(crate) fn default_embedded_status(dialect: Dialect) -> u16 {
    match dialect {
        Dialect::Anthropic => 529,
        Dialect::OpenAiChat | Dialect::OpenAiResponses => 500,
        Dialect::Gemini => 503,
    }
}

/// A CDN-style HTML error page (what a gateway sees when Cloudflare or a load
/// balancer answers instead of the API).
pub(crate) fn html_page(status: u16) -> String {
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Bb+c"), "a+b c");
        assert_eq!(percent_decode("bad%2"), "bad%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(
            query_param(Some("alt=sse&key=k%3D1"), "key").as_deref(),
            Some("k=1")
        );
        assert_eq!(query_param(Some("alt"), "alt").as_deref(), Some(""));
        assert_eq!(query_param(None, "alt"), None);
    }

    #[test]
    fn classification_with_prefixes() {
        let h = HeaderMap::new();
        assert_eq!(
            classify(&Method::POST, "/relay/v1/messages", &h, None),
            Some(Endpoint::AnthropicMessages)
        );
        assert_eq!(
            classify(
                &Method::POST,
                "/x/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                &h,
                None
            ),
            Some(Endpoint::GeminiStream {
                model: "gemini-2.5-flash".into()
            })
        );
        assert_eq!(
            classify(&Method::GET, "/v1/models", &h, None),
            Some(Endpoint::OpenAiModels)
        );
        assert_eq!(
            classify(&Method::GET, "/v1beta/models", &h, None),
            Some(Endpoint::GeminiModels)
        );
        assert_eq!(
            classify(&Method::POST, "/v1/models/x:explode", &h, None),
            None
        );
        assert_eq!(classify(&Method::DELETE, "/v1/messages", &h, None), None);
    }

    #[test]
    fn masking() {
        assert_eq!(mask_key("sk-abcdefghijkl"), "sk-********ijkl");
        assert_eq!(mask_key("short"), "*****");
    }
}
