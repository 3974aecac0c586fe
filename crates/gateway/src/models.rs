//! Model listings in the caller's dialect (filtered by what the caller may use) and Gemini's
//! `countTokens` (a local estimate).

use aether_domain::format::Dialect;
use aether_domain::{ApiFormat, Timestamp};
use aether_protocol::models::{ModelEntry, render_model, render_model_list};
use aether_protocol::tokens::estimate_input_tokens;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Response, header};

use crate::Gateway;
use crate::admit::{admit, identify};
use crate::error::GwError;
use crate::plan::model_allowed;

fn json(bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `GET /v1/models[/{id}]`, `GET /v1beta/models[/{id}]`.
pub fn list(
    gw: &Gateway,
    dialect: Dialect,
    headers: &HeaderMap,
    query: Option<&str>,
    one: Option<&str>,
) -> Response<Body> {
    let snap = gw.snapshot();
    let caller = match identify(&snap, headers, query, Timestamp::now()) {
        Ok(c) => c,
        Err(e) => return e.render(dialect),
    };
    let mut entries: Vec<ModelEntry> = snap
        .listed_models()
        .filter(|m| model_allowed(&caller, m, &m.name))
        .map(|m| ModelEntry {
            id: m.name.clone(),
            display_name: m.display_name.clone(),
            created_unix: m.created_at.millis() / 1000,
            owned_by: "aether".to_string(),
            input_token_limit: m.capabilities.context_limit,
            output_token_limit: m.capabilities.output_limit,
        })
        .collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    match one {
        None => json(render_model_list(dialect, &entries)),
        Some(id) => {
            let id = id.strip_prefix("models/").unwrap_or(id);
            match entries.iter().find(|e| e.id == id) {
                Some(e) => json(render_model(dialect, e)),
                None => GwError::not_found(format!("model `{id}` not found")).render(dialect),
            }
        }
    }
}

/// Gemini `countTokens`: answered locally with an estimate (`{"totalTokens": n}`).
pub async fn gemini_count_tokens(
    gw: &Gateway,
    format: ApiFormat,
    parts: Parts,
    body: Body,
) -> Response<Body> {
    let snap = gw.snapshot();
    if let Err(e) = admit(
        &snap,
        &parts.headers,
        parts.uri.query(),
        format,
        Timestamp::now(),
    ) {
        return e.render(Dialect::Gemini);
    }
    let Ok(bytes) = axum::body::to_bytes(body, snap.settings.max_request_body_bytes()).await else {
        return GwError::too_large("the request body is too large").render(Dialect::Gemini);
    };
    let n = estimate_input_tokens(Dialect::Gemini, &bytes);
    let mut r = json(
        serde_json::json!({ "totalTokens": n })
            .to_string()
            .into_bytes(),
    );
    r.headers_mut()
        .insert("x-aether-estimated", HeaderValue::from_static("true"));
    r
}
