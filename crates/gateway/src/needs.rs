//! What a request asks of its route, derived from the caller, the headers and the body:
//! capability requirements (SPEC §1 "Capabilities"), the client session for cache affinity,
//! and the masked headers kept for the request log.

use aether_domain::entities::GlobalModel;
use aether_domain::secret::mask;
use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::plan::{Needs, glob};
use crate::snapshot::Caller;

/// Headers whose values are always masked in logs and stored headers.
const ALWAYS_MASKED: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// Capability requirements. Sources: the user's per-model preferences, the key's forced
/// capabilities, `X-Require-Capability: a,-b`, and detection (`anthropic-beta` naming
/// `context-1m`; a body `cache_control` with `ttl: "1h"`). Requirements the model does not
/// support are ignored — the upstream decides — so a preference can never make a model
/// unreachable.
#[must_use]
pub fn needs(
    caller: &Caller,
    model: &GlobalModel,
    headers: &HeaderMap,
    stream: bool,
    wants_1h_cache: bool,
) -> Needs {
    let mut require: Vec<String> = Vec::new();
    let mut exclude: Vec<String> = Vec::new();
    let add = |c: &str, list: &mut Vec<String>| {
        let c = c.trim().to_ascii_lowercase();
        if !c.is_empty() && !list.contains(&c) {
            list.push(c);
        }
    };
    if let Some(user) = &caller.user {
        for (pattern, caps) in &user.model_capability_settings {
            if glob(pattern, &model.name) {
                for c in caps {
                    add(c, &mut require);
                }
            }
        }
    }
    for c in &caller.key.force_capabilities {
        add(c, &mut require);
    }
    if let Some(v) = headers
        .get("x-require-capability")
        .and_then(|v| v.to_str().ok())
    {
        for part in v.split(',') {
            match part.trim().strip_prefix('-') {
                Some(c) => add(c, &mut exclude),
                None => add(part, &mut require),
            }
        }
    }
    let beta = headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if beta.split(',').any(|b| b.trim().starts_with("context-1m")) {
        add("context_1m", &mut require);
    }
    if wants_1h_cache {
        add("cache_1h", &mut require);
    }
    require.retain(|c| model.supported_capabilities.contains(c) && !exclude.contains(c));
    Needs {
        stream,
        require,
        exclude,
    }
}

/// The client's own session, when it names one: Claude Code's `x-claude-code-session-id`,
/// Codex's `session-id` / `session_id` headers or its body `prompt_cache_key`.
#[must_use]
pub fn client_session(headers: &HeaderMap, prompt_cache_key: Option<&str>) -> Option<String> {
    [
        "x-claude-code-session-id",
        "session-id",
        "session_id",
        "conversation_id",
    ]
    .iter()
    .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
    .or(prompt_cache_key)
    .map(str::trim)
    .filter(|s| !s.is_empty())
    .map(|s| s.chars().take(128).collect())
}

/// Headers as a JSON object for the request log, with credentials and configured names masked.
#[must_use]
pub fn masked_headers(headers: &HeaderMap, extra: &[String]) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let n = name.as_str();
        let v = value.to_str().unwrap_or("<binary>");
        let shown = if ALWAYS_MASKED.contains(&n) || extra.iter().any(|e| e == n) {
            mask(v)
        } else {
            v.to_string()
        };
        out.insert(n.to_string(), Value::String(shown));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_domain::entities::{ApiKey, ModelCapabilities};
    use aether_domain::{ApiKeyId, GlobalModelId, Timestamp, Usd};
    use axum::http::HeaderValue;

    fn model() -> GlobalModel {
        GlobalModel {
            id: GlobalModelId::new(),
            name: "claude-opus-4".into(),
            display_name: String::new(),
            description: None,
            is_active: true,
            capabilities: ModelCapabilities::default(),
            supported_capabilities: vec!["cache_1h".into(), "context_1m".into()],
            default_tiered_pricing: None,
            default_price_per_request: None,
            config: serde_json::json!({}),
            usage_count: 0,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    fn caller(force: &[&str]) -> Caller {
        Caller {
            key: ApiKey {
                id: ApiKeyId::new(),
                user_id: None,
                key_hash: String::new(),
                key_display: String::new(),
                name: String::new(),
                is_active: true,
                is_standalone: true,
                balance_usd: Usd::ZERO,
                expires_at: None,
                auto_delete_on_expiry: false,
                allowed_providers: None,
                allowed_api_formats: None,
                allowed_models: None,
                force_capabilities: force.iter().map(|s| (*s).to_string()).collect(),
                rate_limit: None,
                concurrent_limit: None,
                total_requests: 0,
                total_cost_usd: Usd::ZERO,
                last_used_at: None,
                created_by: None,
                created_at: Timestamp(0),
                updated_at: Timestamp(0),
            },
            user: None,
        }
    }

    #[test]
    fn requirements_come_from_every_source_and_respect_the_model() {
        let mut h = HeaderMap::new();
        h.insert(
            "anthropic-beta",
            HeaderValue::from_static("claude-code-20250219, context-1m-2025-08-07"),
        );
        let n = needs(&caller(&[]), &model(), &h, true, true);
        assert_eq!(n.require, vec!["context_1m", "cache_1h"]);
        h.insert(
            "x-require-capability",
            HeaderValue::from_static("-context_1m, vision_plus"),
        );
        let n = needs(&caller(&["CACHE_1H"]), &model(), &h, false, false);
        assert_eq!(
            n.require,
            vec!["cache_1h"],
            "excluded and unsupported requirements drop out"
        );
        assert_eq!(n.exclude, vec!["context_1m"]);
    }

    #[test]
    fn sessions_and_masking() {
        let mut h = HeaderMap::new();
        assert_eq!(client_session(&h, Some("pck")), Some("pck".into()));
        h.insert(
            "x-claude-code-session-id",
            HeaderValue::from_static("2bbb5c3f"),
        );
        assert_eq!(client_session(&h, Some("pck")), Some("2bbb5c3f".into()));
        h.insert("x-api-key", HeaderValue::from_static("sk-abcdefghijklmnop"));
        h.insert("x-secret-thing", HeaderValue::from_static("short"));
        let m = masked_headers(&h, &["x-secret-thing".into()]);
        assert_eq!(m["x-api-key"], "sk-abc…mnop");
        assert_eq!(m["x-secret-thing"], "****");
    }
}
