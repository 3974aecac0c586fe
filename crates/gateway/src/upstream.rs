//! Building the upstream request: URL per the endpoint's format (and custom path), upstream
//! authentication per the endpoint's format, endpoint headers, and the allow-list of client
//! headers (SPEC §3.6). The client's own key, cookies, forwarding headers and hop-by-hop
//! headers never leave the gateway.

use aether_domain::ApiFormat;
use aether_domain::entities::Endpoint;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// Which operation of the wire API is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Anthropic Messages.
    Messages,
    /// Anthropic count_tokens.
    CountTokens,
    /// OpenAI Chat Completions.
    ChatCompletions,
    /// OpenAI Responses.
    Responses,
    /// Gemini `generateContent` / `streamGenerateContent`.
    Generate { stream: bool },
}

impl Operation {
    fn default_path(self) -> &'static str {
        match self {
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Responses => "/v1/responses",
            Self::Generate { stream: false } => "/v1beta/models/{model}:generateContent",
            Self::Generate { stream: true } => "/v1beta/models/{model}:streamGenerateContent",
        }
    }
}

/// The full upstream URL. A custom path replaces the default one and may use `{model}`;
/// a base URL that already ends in the path's version segment (`…/v1`) is not doubled.
/// `query` is the client's query string, already stripped of the client's `key`.
#[must_use]
pub fn url(ep: &Endpoint, op: Operation, model: &str, query: &str) -> String {
    let base = ep.base_url.trim_end_matches('/');
    let path = match (&ep.custom_path, op) {
        (
            Some(custom),
            Operation::Messages
            | Operation::ChatCompletions
            | Operation::Responses
            | Operation::Generate { .. },
        ) => match op {
            Operation::Generate { stream } if !custom.contains("{model}") => {
                format!(
                    "{}/{model}:{}",
                    custom.trim_end_matches('/'),
                    if stream {
                        "streamGenerateContent"
                    } else {
                        "generateContent"
                    }
                )
            }
            _ => custom.replace("{model}", model),
        },
        _ => op.default_path().replace("{model}", model),
    };
    let path = match path
        .split_once('/')
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
    {
        Some(first) if !first.is_empty() && base.ends_with(&format!("/{first}")) => {
            path[first.len() + 1..].to_string()
        }
        _ => path,
    };
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    }
}

/// The client's query string without the gateway key (`key=`), which must never be forwarded.
#[must_use]
pub fn forwarded_query(query: Option<&str>) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("key="))
        .collect::<Vec<_>>()
        .join("&")
}

/// Client headers that travel upstream. Anything else stays behind.
fn forwardable(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "accept"
            | "user-agent"
            | "anthropic-version"
            | "anthropic-beta"
            | "anthropic-dangerous-direct-browser-access"
            | "openai-beta"
            | "x-app"
            | "x-claude-code-session-id"
            | "originator"
            | "session_id"
            | "session-id"
            | "thread-id"
            | "conversation_id"
            | "x-goog-api-client"
    ) || name.starts_with("x-stainless-")
        || name.starts_with("x-codex-")
}

/// The upstream request headers.
#[must_use]
pub fn headers(client: &HeaderMap, ep: &Endpoint, secret: &str) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + ep.headers.len() + 2);
    for (name, value) in client {
        if forwardable(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    for (k, v) in &ep.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            out.insert(n, v);
        }
    }
    let secret_value = |prefix: &str| HeaderValue::try_from(format!("{prefix}{secret}")).ok();
    match ep.api_format {
        ApiFormat::Claude => {
            if let Some(v) = secret_value("") {
                out.insert("x-api-key", v);
            }
        }
        ApiFormat::ClaudeCli | ApiFormat::Openai | ApiFormat::OpenaiCli => {
            if let Some(v) = secret_value("Bearer ") {
                out.insert("authorization", v);
            }
        }
        ApiFormat::Gemini | ApiFormat::GeminiCli => {
            if let Some(v) = secret_value("") {
                out.insert("x-goog-api-key", v);
            }
        }
    }
    if matches!(ep.api_format, ApiFormat::Claude | ApiFormat::ClaudeCli)
        && !out.contains_key("anthropic-version")
    {
        out.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    if !out.contains_key("content-type") {
        out.insert("content-type", HeaderValue::from_static("application/json"));
    }
    out
}

/// Upstream response headers worth relaying: content type, request ids, rate-limit state.
#[must_use]
pub fn relayed(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "request-id"
            | "x-request-id"
            | "retry-after"
            | "openai-processing-ms"
            | "openai-version"
    ) || name.contains("ratelimit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_domain::{EndpointId, ProviderId, Timestamp};

    fn ep(format: ApiFormat, base: &str, custom: Option<&str>) -> Endpoint {
        Endpoint {
            id: EndpointId::new(),
            provider_id: ProviderId::new(),
            api_format: format,
            base_url: base.into(),
            custom_path: custom.map(str::to_string),
            headers: [("x-team".to_string(), "blue".to_string())].into(),
            timeout: 300,
            max_retries: 3,
            max_concurrent: None,
            proxy: None,
            is_active: true,
            config: serde_json::json!({}),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn urls() {
        let e = ep(ApiFormat::Claude, "https://api.anthropic.com", None);
        assert_eq!(
            url(&e, Operation::Messages, "m", "beta=true"),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        let e = ep(ApiFormat::Openai, "https://api.openai.com/v1/", None);
        assert_eq!(
            url(&e, Operation::ChatCompletions, "m", ""),
            "https://api.openai.com/v1/chat/completions"
        );
        let e = ep(
            ApiFormat::Gemini,
            "https://generativelanguage.googleapis.com",
            None,
        );
        assert_eq!(
            url(
                &e,
                Operation::Generate { stream: true },
                "gemini-2.5-flash",
                "alt=sse"
            ),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let e = ep(
            ApiFormat::Openai,
            "https://relay.example.com",
            Some("/openai/chat"),
        );
        assert_eq!(
            url(&e, Operation::ChatCompletions, "m", ""),
            "https://relay.example.com/openai/chat"
        );
        let e = ep(
            ApiFormat::Gemini,
            "https://relay.example.com",
            Some("/g/models"),
        );
        assert_eq!(
            url(&e, Operation::Generate { stream: false }, "x", ""),
            "https://relay.example.com/g/models/x:generateContent"
        );
        assert_eq!(forwarded_query(Some("alt=sse&key=sk-secret")), "alt=sse");
    }

    #[test]
    fn headers_carry_upstream_auth_and_only_allowed_client_headers() {
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("x-api-key", "sk-client-key"),
            ("authorization", "Bearer sk-client-key"),
            ("cookie", "session=1"),
            ("x-forwarded-for", "1.2.3.4"),
            ("anthropic-beta", "context-1m-2025-08-07"),
            ("x-stainless-os", "Linux"),
            ("user-agent", "claude-cli/2.1"),
            ("connection", "keep-alive"),
            ("accept-encoding", "gzip"),
        ] {
            client.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let h = headers(
            &client,
            &ep(ApiFormat::Claude, "https://x", None),
            "sk-upstream",
        );
        assert_eq!(h["x-api-key"], "sk-upstream");
        assert!(
            h.get("authorization").is_none()
                && h.get("cookie").is_none()
                && h.get("x-forwarded-for").is_none()
        );
        assert!(h.get("connection").is_none() && h.get("accept-encoding").is_none());
        assert_eq!(h["anthropic-beta"], "context-1m-2025-08-07");
        assert_eq!(h["x-stainless-os"], "Linux");
        assert_eq!(h["anthropic-version"], "2023-06-01");
        assert_eq!(h["x-team"], "blue");
        let h = headers(&client, &ep(ApiFormat::ClaudeCli, "https://x", None), "tok");
        assert_eq!(h["authorization"], "Bearer tok");
        assert!(
            h.get("x-api-key").is_none(),
            "the client's x-api-key never leaks"
        );
        let h = headers(&client, &ep(ApiFormat::GeminiCli, "https://x", None), "g");
        assert_eq!(h["x-goog-api-key"], "g");
    }
}
