//! Model-list responses in each dialect (`GET /v1/models`, `GET /v1beta/models`, and the
//! single-model variants).
//!
//! Shapes:
//! - Anthropic: `{"data":[{"type":"model","id","display_name","created_at"}],"has_more":false,
//!   "first_id","last_id"}` (`created_at` RFC 3339; `first_id`/`last_id` null when empty).
//!   The optional newer `max_input_tokens`/`max_tokens` fields are added when limits are known.
//! - OpenAI (Chat and Responses): `{"object":"list","data":[{"id","object":"model","created",
//!   "owned_by"}]}`.
//! - Gemini: `{"models":[{"name":"models/<id>","displayName","inputTokenLimit",
//!   "outputTokenLimit","supportedGenerationMethods":[...]}]}` (limits omitted when unknown).
//!
//! The whole list is rendered as one page; pagination parameters are the caller's business.

use aether_domain::Timestamp;
use aether_domain::format::Dialect;

use crate::json_scan::push_json_str;

/// What the gateway knows about a model it serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelEntry {
    /// The id clients send as `model` (Gemini: the part after `models/`).
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// Creation time, Unix seconds.
    pub created_unix: i64,
    /// OpenAI's `owned_by`.
    pub owned_by: String,
    /// Context window, if known.
    pub input_token_limit: Option<u64>,
    /// Maximum output tokens, if known.
    pub output_token_limit: Option<u64>,
}

/// Gemini's generation methods the gateway proxies.
const GEMINI_METHODS: &str = r#"["generateContent","streamGenerateContent","countTokens"]"#;

fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

fn push_num(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    out.extend_from_slice(n.to_string().as_bytes());
}

fn rfc3339(unix: i64) -> String {
    Timestamp::from_millis(unix.saturating_mul(1000)).to_string()
}

fn anthropic_model(out: &mut Vec<u8>, m: &ModelEntry) {
    push(out, r#"{"type":"model","id":"#);
    push_json_str(out, &m.id);
    push(out, r#","display_name":"#);
    push_json_str(out, &m.display_name);
    push(out, r#","created_at":"#);
    push_json_str(out, &rfc3339(m.created_unix));
    if let Some(n) = m.input_token_limit {
        push(out, r#","max_input_tokens":"#);
        push_num(out, n);
    }
    if let Some(n) = m.output_token_limit {
        push(out, r#","max_tokens":"#);
        push_num(out, n);
    }
    push(out, "}");
}

fn openai_model(out: &mut Vec<u8>, m: &ModelEntry) {
    push(out, r#"{"id":"#);
    push_json_str(out, &m.id);
    push(out, r#","object":"model","created":"#);
    push_num(out, m.created_unix);
    push(out, r#","owned_by":"#);
    push_json_str(out, &m.owned_by);
    push(out, "}");
}

fn gemini_model(out: &mut Vec<u8>, m: &ModelEntry) {
    push(out, r#"{"name":"#);
    push_json_str(out, &format!("models/{}", m.id));
    push(out, r#","displayName":"#);
    push_json_str(out, &m.display_name);
    if let Some(n) = m.input_token_limit {
        push(out, r#","inputTokenLimit":"#);
        push_num(out, n);
    }
    if let Some(n) = m.output_token_limit {
        push(out, r#","outputTokenLimit":"#);
        push_num(out, n);
    }
    push(out, r#","supportedGenerationMethods":"#);
    push(out, GEMINI_METHODS);
    push(out, "}");
}

fn render_one(out: &mut Vec<u8>, dialect: Dialect, m: &ModelEntry) {
    match dialect {
        Dialect::AnthropicMessages => anthropic_model(out, m),
        Dialect::OpenaiChat | Dialect::OpenaiResponses => openai_model(out, m),
        Dialect::Gemini => gemini_model(out, m),
    }
}

fn push_list(out: &mut Vec<u8>, dialect: Dialect, models: &[ModelEntry]) {
    push(out, "[");
    for (i, m) in models.iter().enumerate() {
        if i > 0 {
            push(out, ",");
        }
        render_one(out, dialect, m);
    }
    push(out, "]");
}

fn push_opt_id(out: &mut Vec<u8>, m: Option<&ModelEntry>) {
    match m {
        Some(m) => push_json_str(out, &m.id),
        None => push(out, "null"),
    }
}

/// The model-list body in `dialect`.
#[must_use]
pub fn render_model_list(dialect: Dialect, models: &[ModelEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + models.len() * 160);
    match dialect {
        Dialect::AnthropicMessages => {
            push(&mut out, r#"{"data":"#);
            push_list(&mut out, dialect, models);
            push(&mut out, r#","has_more":false,"first_id":"#);
            push_opt_id(&mut out, models.first());
            push(&mut out, r#","last_id":"#);
            push_opt_id(&mut out, models.last());
            push(&mut out, "}");
        }
        Dialect::OpenaiChat | Dialect::OpenaiResponses => {
            push(&mut out, r#"{"object":"list","data":"#);
            push_list(&mut out, dialect, models);
            push(&mut out, "}");
        }
        Dialect::Gemini => {
            push(&mut out, r#"{"models":"#);
            push_list(&mut out, dialect, models);
            push(&mut out, "}");
        }
    }
    out
}

/// The single-model body (`GET /v1/models/{id}`, `GET /v1beta/models/{id}`) in `dialect`.
#[must_use]
pub fn render_model(dialect: Dialect, model: &ModelEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    render_one(&mut out, dialect, model);
    out
}
