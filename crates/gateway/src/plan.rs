//! Candidate planning (SPEC §3.3): which routes may serve this request, in which order, and
//! why the others may not. Pure over the snapshot — microseconds, no I/O.

use std::sync::Arc;

use aether_domain::entities::GlobalModel;
use aether_domain::{ApiFormat, ProviderId, ProviderKeyId, Timestamp};

use crate::snapshot::{Caller, Route, Snapshot};

/// What the request needs from a route.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    pub stream: bool,
    /// Capability tags the route's key must have.
    pub require: Vec<String>,
    /// Capability tags the route's key must not have (`X-Require-Capability: -tag`).
    pub exclude: Vec<String>,
}

/// A route chosen to try, with the upstream model name to send.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub route: Arc<Route>,
    pub upstream_model: String,
    /// Moved to the front by cache affinity.
    pub affinity: bool,
    /// The endpoint speaks another wire dialect: the request and its answer are converted.
    pub converted: bool,
}

/// A route that cannot serve this request, and why (kept for the attempt trace).
#[derive(Debug, Clone)]
pub struct Skipped {
    pub route: Arc<Route>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<Skipped>,
}

/// Capability tags whose keys serve *only* requests that ask for them.
const EXCLUSIVE: &[&str] = &["cache_1h"];

/// Matches a model name against an allow-list entry with `*` wildcards.
#[must_use]
pub fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    if !name.starts_with(first) {
        return false;
    }
    let mut rest = &name[first.len()..];
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn allowed_name(list: Option<&Vec<String>>, names: &[&str]) -> bool {
    list.is_none_or(|l| l.iter().any(|p| names.iter().any(|n| glob(p, n))))
}

/// 64-bit FNV-1a: a stable hash (the same in every process and every release), so a user
/// keeps the same spread over equal keys across restarts and instances.
#[must_use]
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether an endpoint of `endpoint_format` can take a request of `request_format` without
/// conversion, and at which preference (0 = its own pool; 1 = a CLI request falling back to
/// the plain pool of the same wire family — an admin with only an API key must still serve
/// Claude Code). Endpoints of other dialects rank 2 when conversion is allowed.
#[must_use]
pub fn format_rank(request: ApiFormat, endpoint: ApiFormat) -> Option<u8> {
    if request == endpoint {
        return Some(0);
    }
    let plain_of_cli = match request {
        ApiFormat::ClaudeCli => Some(ApiFormat::Claude),
        ApiFormat::GeminiCli => Some(ApiFormat::Gemini),
        // The Responses API (Codex) has no plain twin; OPENAI is a different wire dialect.
        _ => None,
    };
    (plain_of_cli == Some(endpoint)).then_some(1)
}

/// The upstream name for a route: the best mapping in scope (lowest priority; ties broken by a
/// stable hash of the caller so each caller sticks to one), else the provider model name.
#[must_use]
pub fn upstream_name(route: &Route, caller: &Caller) -> String {
    let format = route.endpoint.endpoint.api_format;
    let best = route
        .model
        .provider_model_mappings
        .iter()
        .filter(|m| {
            !m.name.is_empty() && m.api_formats.as_ref().is_none_or(|f| f.contains(&format))
        })
        .min_by_key(|m| {
            (
                m.priority.max(1),
                stable_hash(&[caller.key.id.0.as_bytes(), m.name.as_bytes()]),
            )
        });
    best.map_or_else(
        || route.model.provider_model_name.clone(),
        |m| m.name.clone(),
    )
}

fn effective_flag(own: Option<bool>, global: bool) -> bool {
    own.unwrap_or(global)
}

/// The request side of planning.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub format: ApiFormat,
    pub needs: &'a Needs,
    /// The upstream key cache affinity points at, if any.
    pub affinity: Option<ProviderKeyId>,
    /// Upstream keys resting after a rate limit.
    pub cooling: &'a [ProviderKeyId],
    /// Providers whose period quota is used up (live figures).
    pub exhausted: &'a [ProviderId],
    pub now: Timestamp,
    /// Endpoints of other wire dialects may serve the request through conversion.
    pub convert: bool,
}

/// Plans the candidates for one request.
#[must_use]
pub fn plan(snap: &Snapshot, caller: &Caller, model: &GlobalModel, ask: &Ask<'_>) -> Plan {
    let Ask {
        format,
        needs,
        affinity,
        cooling,
        exhausted,
        now,
        convert,
    } = *ask;
    let mut plan = Plan::default();
    let user = caller.user.as_ref();
    let mut ranked: Vec<(u8, i64, i64, u64, Candidate)> = Vec::new();
    let global_mode = snap.settings.global_key_priority();
    let reject_unpriced = snap.settings.reject_unpriced();
    for route in snap.routes(model.id) {
        let skip = |reason: String| Skipped {
            route: route.clone(),
            reason,
        };
        let ep = &route.endpoint.endpoint;
        let key = &route.key.key;
        let converted = ep.api_format.dialect() != format.dialect();
        let Some(rank) = format_rank(format, ep.api_format).or(if convert && converted {
            Some(2)
        } else {
            None
        }) else {
            continue; // another pool of the same dialect, or conversion not allowed
        };
        let provider_allowed = |list: Option<&Vec<aether_domain::ProviderId>>| {
            list.is_none_or(|l| l.contains(&route.provider.id))
        };
        let names = [
            model.name.as_str(),
            route.model.provider_model_name.as_str(),
        ];
        let reason = if !provider_allowed(user.and_then(|u| u.allowed_providers.as_ref()))
            || !provider_allowed(caller.key.allowed_providers.as_ref())
        {
            Some("provider not allowed for this key".to_string())
        } else if route.provider.expires_at.is_some_and(|t| t <= now) {
            Some("provider expired".to_string())
        } else if key.expires_at.is_some_and(|t| t <= now) {
            Some("upstream key expired".to_string())
        } else if exhausted.contains(&route.provider.id) {
            Some("provider period quota exhausted".to_string())
        } else if needs.stream
            && !effective_flag(route.model.supports_streaming, model.capabilities.streaming)
        {
            Some("streaming not supported".to_string())
        } else if !allowed_name(key.allowed_models.as_ref(), &names) {
            Some("model not allowed on this upstream key".to_string())
        } else if let Some(cap) = needs.require.iter().find(|c| !key.capabilities.contains(c)) {
            Some(format!("capability {cap} missing"))
        } else if let Some(cap) = key
            .capabilities
            .iter()
            .find(|c| EXCLUSIVE.contains(&c.as_str()) && !needs.require.contains(c))
        {
            Some(format!("key reserved for {cap} requests"))
        } else if let Some(cap) = needs.exclude.iter().find(|c| key.capabilities.contains(c)) {
            Some(format!("capability {cap} excluded by the request"))
        } else if reject_unpriced && route.model.effective_pricing(model).is_none() {
            Some("model has no price (unpriced_model_policy = reject)".to_string())
        } else if cooling.contains(&key.id) {
            Some("cooling down after a rate limit".to_string())
        } else {
            None
        };
        if let Some(r) = reason {
            plan.skipped.push(skip(r));
            continue;
        }
        let hash = stable_hash(&[caller.key.id.0.as_bytes(), key.id.0.as_bytes()]);
        let (p1, p2) = if global_mode {
            (i64::from(key.global_priority.unwrap_or(i32::MAX)), 0)
        } else {
            (
                i64::from(route.provider.provider_priority),
                i64::from(key.internal_priority),
            )
        };
        ranked.push((
            rank,
            p1,
            p2,
            hash,
            Candidate {
                route: route.clone(),
                upstream_model: upstream_name(route, caller),
                affinity: false,
                converted,
            },
        ));
    }
    // Priority first; at equal priority the request's own pool, then a CLI request's plain
    // pool, then other dialects through conversion; then the caller's stable spread.
    ranked.sort_by_key(|(rank, p1, p2, hash, _)| (*p1, *p2, *rank, *hash));
    plan.candidates = ranked.into_iter().map(|t| t.4).collect();
    if let Some(target) = affinity
        && let Some(i) = plan
            .candidates
            .iter()
            .position(|c| c.route.key.key.id == target)
    {
        let mut c = plan.candidates.remove(i);
        c.affinity = true;
        plan.candidates.insert(0, c);
    }
    plan
}

/// Whether the caller may use a model at all (user ∩ key model allow-lists).
#[must_use]
pub fn model_allowed(caller: &Caller, model: &GlobalModel, requested: &str) -> bool {
    let names = [model.name.as_str(), requested];
    allowed_name(
        caller.user.as_ref().and_then(|u| u.allowed_models.as_ref()),
        &names,
    ) && allowed_name(caller.key.allowed_models.as_ref(), &names)
}

/// Whether the caller may use an API format (user ∩ key format allow-lists).
#[must_use]
pub fn format_allowed(caller: &Caller, format: ApiFormat) -> bool {
    caller
        .user
        .as_ref()
        .and_then(|u| u.allowed_api_formats.as_ref())
        .is_none_or(|l| l.contains(&format))
        && caller
            .key
            .allowed_api_formats
            .as_ref()
            .is_none_or(|l| l.contains(&format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("claude-*", "claude-opus-4"));
        assert!(glob("*", "anything"));
        assert!(glob("claude-*-4", "claude-opus-4"));
        assert!(!glob("claude-*-4", "claude-opus-4-1"));
        assert!(glob("gpt-4o", "gpt-4o"));
        assert!(!glob("gpt-4o", "gpt-4o-mini"));
        assert!(glob("*mini", "gpt-4o-mini"));
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        assert_eq!(stable_hash(&[b"a", b"b"]), stable_hash(&[b"a", b"b"]));
        assert_ne!(
            stable_hash(&[b"ab", b""]),
            stable_hash(&[b"a", b"b"]),
            "parts are delimited"
        );
        // The published FNV-1a value anchors the constants.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in b"a" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn cli_requests_fall_back_to_plain_pools_only() {
        assert_eq!(
            format_rank(ApiFormat::ClaudeCli, ApiFormat::ClaudeCli),
            Some(0)
        );
        assert_eq!(
            format_rank(ApiFormat::ClaudeCli, ApiFormat::Claude),
            Some(1)
        );
        assert_eq!(
            format_rank(ApiFormat::Claude, ApiFormat::ClaudeCli),
            None,
            "plain never goes to CLI-only pools"
        );
        assert_eq!(
            format_rank(ApiFormat::GeminiCli, ApiFormat::Gemini),
            Some(1)
        );
        assert_eq!(format_rank(ApiFormat::OpenaiCli, ApiFormat::Openai), None);
    }
}
