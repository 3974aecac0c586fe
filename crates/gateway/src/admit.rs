//! Admission (SPEC §3.1): find the caller's key in the snapshot by its hash — no database —
//! and check it may make this request at all.

use std::sync::Arc;

use aether_domain::{ApiFormat, Timestamp};
use axum::http::HeaderMap;

use crate::error::GwError;
use crate::plan::format_allowed;
use crate::snapshot::{Caller, Snapshot};

/// The gateway key a client presented. Real clients use different headers: Claude Code and the
/// Anthropic SDK send `x-api-key` (or `Authorization: Bearer` with an auth token), Codex and the
/// OpenAI SDK `Authorization: Bearer`, Gemini CLI and google-genai `x-goog-api-key` (or
/// `?key=`). Every route accepts all of them.
#[must_use]
pub fn presented_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    header("x-api-key")
        .or_else(|| {
            header("authorization").and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
        })
        .or_else(|| header("x-goog-api-key"))
        .or_else(|| header("api-key"))
        .or_else(|| {
            query?
                .split('&')
                .find_map(|p| p.strip_prefix("key="))
                .filter(|k| !k.is_empty())
        })
}

/// Checks the presented key alone: known, active, unexpired, owner active. Enough for model
/// listings; requests also need [`admit`].
pub fn identify(
    snap: &Snapshot,
    headers: &HeaderMap,
    query: Option<&str>,
    now: Timestamp,
) -> Result<Arc<Caller>, GwError> {
    let Some(presented) = presented_key(headers, query) else {
        return Err(GwError::auth(
            "missing API key: send it as `x-api-key`, `Authorization: Bearer` or `x-goog-api-key`",
        ));
    };
    let Some(caller) = snap.caller(presented) else {
        return Err(GwError::auth("invalid API key"));
    };
    if !caller.key.is_active {
        return Err(GwError::auth("this API key is disabled"));
    }
    if caller.key.expires_at.is_some_and(|t| t <= now) {
        return Err(GwError::auth("this API key has expired"));
    }
    if caller.user.as_ref().is_some_and(|u| !u.is_active) {
        return Err(GwError::permission(
            "the account of this API key is disabled",
        ));
    }
    Ok(caller.clone())
}

/// Admits a caller for a request of `format`: a valid key and the format allowed for the key
/// and its user. Quota and balance are checked by reservation once the request is planned
/// ([`crate::limits`]).
pub fn admit(
    snap: &Snapshot,
    headers: &HeaderMap,
    query: Option<&str>,
    format: ApiFormat,
    now: Timestamp,
) -> Result<Arc<Caller>, GwError> {
    let caller = identify(snap, headers, query, now)?;
    if !format_allowed(&caller, format) {
        return Err(GwError::permission(format!(
            "this API key may not use the {format} API"
        )));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn keys_are_read_from_every_header_real_clients_use() {
        let mut h = HeaderMap::new();
        assert_eq!(
            presented_key(&h, Some("alt=sse&key=from-query")),
            Some("from-query")
        );
        h.insert("x-goog-api-key", HeaderValue::from_static("goog"));
        assert_eq!(presented_key(&h, Some("key=q")), Some("goog"));
        h.insert("authorization", HeaderValue::from_static("Bearer  bear "));
        assert_eq!(presented_key(&h, None), Some("bear"));
        h.insert("x-api-key", HeaderValue::from_static("anthropic"));
        assert_eq!(presented_key(&h, None), Some("anthropic"));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&basic, None), None);
    }
}
