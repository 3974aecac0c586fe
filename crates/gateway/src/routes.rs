//! The client-facing routes of SPEC §2. Each handler only decides the API format and the
//! operation; everything else is shared (`forward::handle`).

use aether_domain::ApiFormat;
use aether_domain::format::Dialect;
use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};

use crate::Gateway;
use crate::error::GwError;
use crate::forward::{Incoming, handle};
use crate::upstream::Operation;

/// The client routes, with the gateway as state.
pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/responses", post(responses))
        .route("/v1/models", get(list_models))
        .route("/v1beta/models", get(list_gemini_models))
        .route("/v1/models/{target}", get(get_model).post(gemini))
        .route(
            "/v1beta/models/{target}",
            get(get_gemini_model).post(gemini),
        )
        .with_state(gw)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `POST /v1/messages`: Claude Code marks itself with `x-app: cli`.
async fn messages(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let format = claude_format(&parts.headers);
    handle(
        &gw,
        Incoming {
            format,
            op: Operation::Messages,
            parts,
            body,
            path_model: None,
        },
    )
    .await
}

fn claude_format(headers: &HeaderMap) -> ApiFormat {
    if header(headers, "x-app").eq_ignore_ascii_case("cli") {
        ApiFormat::ClaudeCli
    } else {
        ApiFormat::Claude
    }
}

async fn count_tokens(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let format = claude_format(&parts.headers);
    handle(
        &gw,
        Incoming {
            format,
            op: Operation::CountTokens,
            parts,
            body,
            path_model: None,
        },
    )
    .await
}

async fn chat_completions(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    handle(
        &gw,
        Incoming {
            format: ApiFormat::Openai,
            op: Operation::ChatCompletions,
            parts,
            body,
            path_model: None,
        },
    )
    .await
}

async fn responses(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    handle(
        &gw,
        Incoming {
            format: ApiFormat::OpenaiCli,
            op: Operation::Responses,
            parts,
            body,
            path_model: None,
        },
    )
    .await
}

/// Gemini CLI identifies itself in its User-Agent (`GeminiCLI/…`) or an `x-app` header.
fn gemini_format(headers: &HeaderMap) -> ApiFormat {
    let ua = header(headers, "user-agent").to_ascii_lowercase();
    let app = header(headers, "x-app").to_ascii_lowercase();
    if ua.contains("geminicli") || ua.contains("gemini-cli") || app.contains("gemini-cli") {
        ApiFormat::GeminiCli
    } else {
        ApiFormat::Gemini
    }
}

/// `POST /v1beta/models/{model}:{action}` (and under `/v1/models/`).
async fn gemini(State(gw): State<Gateway>, Path(target): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let format = gemini_format(&parts.headers);
    let Some((model, action)) = target.rsplit_once(':') else {
        return GwError::not_found(format!(
            "unknown method `{target}`; expected {{model}}:generateContent"
        ))
        .render(Dialect::Gemini);
    };
    let op = match action {
        "generateContent" => Operation::Generate { stream: false },
        "streamGenerateContent" => Operation::Generate { stream: true },
        "countTokens" => return crate::models::gemini_count_tokens(&gw, format, parts, body).await,
        other => {
            return GwError::not_found(format!("unsupported method `{other}`"))
                .render(Dialect::Gemini);
        }
    };
    handle(
        &gw,
        Incoming {
            format,
            op,
            parts,
            body,
            path_model: Some(model.to_string()),
        },
    )
    .await
}

/// Model listings answer in the caller's dialect: Anthropic when `anthropic-version` is sent,
/// Gemini for a Google key, OpenAI otherwise.
fn listing_dialect(headers: &HeaderMap, query: Option<&str>) -> Dialect {
    if headers.contains_key("anthropic-version") {
        Dialect::AnthropicMessages
    } else if headers.contains_key("x-goog-api-key")
        || query.is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")))
    {
        Dialect::Gemini
    } else {
        Dialect::OpenaiChat
    }
}

async fn list_models(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let dialect = listing_dialect(&headers, q.as_deref());
    crate::models::list(&gw, dialect, &headers, q.as_deref(), None)
}

async fn list_gemini_models(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    crate::models::list(&gw, Dialect::Gemini, &headers, q.as_deref(), None)
}

async fn get_model(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let dialect = listing_dialect(&headers, q.as_deref());
    crate::models::list(&gw, dialect, &headers, q.as_deref(), Some(&id))
}

async fn get_gemini_model(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    crate::models::list(&gw, Dialect::Gemini, &headers, q.as_deref(), Some(&id))
}

/// The dialect of a client route, for answering requests refused before routing (IP rules)
/// in the caller's own dialect. `None` for non-gateway paths.
#[must_use]
pub fn dialect_for_path(path: &str) -> Option<Dialect> {
    if path.starts_with("/v1/messages") {
        Some(Dialect::AnthropicMessages)
    } else if path.starts_with("/v1/chat/") {
        Some(Dialect::OpenaiChat)
    } else if path.starts_with("/v1/responses") || path.starts_with("/responses") {
        Some(Dialect::OpenaiResponses)
    } else if path.starts_with("/v1beta/")
        || (path.starts_with("/v1/models/") && path.contains(':'))
    {
        Some(Dialect::Gemini)
    } else if path.starts_with("/v1/models") {
        Some(Dialect::OpenaiChat)
    } else {
        None
    }
}
