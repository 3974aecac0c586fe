//! Input rules shared by the API, the CLI and the console. Each error names its field.

use aether_domain::ApiFormat;
use aether_domain::pricing::TieredPricing;

use crate::{ApiError, ApiResult};

pub fn email(field: &'static str, s: &str) -> ApiResult<String> {
    let e = s.trim().to_lowercase();
    let valid = e.len() <= 254
        && !e.chars().any(char::is_whitespace)
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if valid {
        Ok(e)
    } else {
        Err(ApiError::invalid(
            field,
            format!("`{}` is not a valid email address", s.trim()),
        ))
    }
}

pub fn username(field: &'static str, s: &str) -> ApiResult<String> {
    let u = s.trim();
    if (2..=50).contains(&u.chars().count())
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        Ok(u.to_string())
    } else {
        Err(ApiError::invalid(
            field,
            "a username has 2–50 characters: letters, digits, `_`, `.` or `-`",
        ))
    }
}

pub fn password(field: &'static str, s: &str) -> ApiResult<()> {
    let n = s.chars().count();
    if (8..=128).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "a password has 8–128 characters"))
    }
}

/// A machine name (provider slug): lower-case letters, digits, `-`, `_`, `.`; 1–100 chars.
pub fn slug(field: &'static str, s: &str) -> ApiResult<String> {
    let v = s.trim();
    let ok = (1..=100).contains(&v.len())
        && v.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(v.to_string())
    } else {
        Err(ApiError::invalid(
            field,
            "use 1–100 lower-case letters, digits, `-`, `_` or `.`, starting with a letter or digit",
        ))
    }
}

/// A non-empty display text of at most `max` characters.
pub fn text(field: &'static str, s: &str, max: usize) -> ApiResult<String> {
    let v = s.trim();
    if v.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("at most {max} characters"),
        ));
    }
    Ok(v.to_string())
}

/// An absolute `http(s)` URL without a trailing slash.
pub fn base_url(field: &'static str, s: &str) -> ApiResult<String> {
    let v = s.trim().trim_end_matches('/');
    match url::Url::parse(v) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.query().is_none() =>
        {
            Ok(v.to_string())
        }
        _ => Err(ApiError::invalid(
            field,
            format!("`{v}` is not an absolute http(s) URL without a query"),
        )),
    }
}

/// An outbound proxy URL: http, https or socks5 (socks5h) with a host and a port.
pub fn proxy_url(field: &'static str, s: &str) -> ApiResult<String> {
    let v = s.trim();
    match url::Url::parse(v) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h")
                && u.host_str().is_some()
                && u.port_or_known_default().is_some() =>
        {
            if !u.username().is_empty() || u.password().is_some() {
                return Err(ApiError::invalid(
                    field,
                    "put proxy credentials in `username` / `password`, not in the URL",
                ));
            }
            Ok(v.trim_end_matches('/').to_string())
        }
        _ => Err(ApiError::invalid(
            field,
            "a proxy URL looks like http://host:port, https://host:port or socks5://host:port",
        )),
    }
}

/// A URL path starting with `/`.
pub fn path(field: &'static str, s: &str) -> ApiResult<String> {
    let v = s.trim();
    if v.starts_with('/') && !v.contains("://") && !v.chars().any(char::is_whitespace) {
        Ok(v.to_string())
    } else {
        Err(ApiError::invalid(field, "a path starts with `/`"))
    }
}

pub fn pricing(field: &'static str, p: &TieredPricing) -> ApiResult<()> {
    p.validate()
        .map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// Capability tags: short lower-case names (`cache_1h`, `context_1m`).
pub fn capabilities(field: &'static str, caps: &[String]) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(caps.len());
    for c in caps {
        let c = c.trim().to_lowercase();
        if c.is_empty() || c.len() > 50 || !c.chars().all(|x| x.is_ascii_alphanumeric() || x == '_')
        {
            return Err(ApiError::invalid(
                field,
                format!("`{c}` is not a capability name"),
            ));
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

pub fn positive(field: &'static str, v: Option<u32>) -> ApiResult<Option<u32>> {
    match v {
        Some(0) => Err(ApiError::invalid(
            field,
            "must be at least 1 (or null for no limit)",
        )),
        other => Ok(other),
    }
}

/// Normalises an allow-list: `Some([])` is kept (it means "nothing allowed").
pub fn formats(v: Option<Vec<ApiFormat>>) -> Option<Vec<ApiFormat>> {
    v.map(|mut f| {
        f.sort();
        f.dedup();
        f
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_their_field() {
        assert_eq!(
            email("email", " Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in ["alice", "a@b", "@x.io", "a b@x.io", "a@x.io."] {
            let e = email("email", bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ApiError::Invalid {
                        field: Some("email"),
                        ..
                    }
                ),
                "{bad}"
            );
        }
        assert!(username("username", "bob_1.x").is_ok());
        assert!(username("username", "b").is_err());
        assert!(password("password", "short").is_err());
        assert_eq!(slug("name", "anthropic-main").unwrap(), "anthropic-main");
        assert!(slug("name", "Bad Name").is_err());
        assert_eq!(
            base_url("base_url", "https://api.anthropic.com/").unwrap(),
            "https://api.anthropic.com"
        );
        assert!(base_url("base_url", "ftp://x").is_err());
        assert!(base_url("base_url", "not a url").is_err());
        assert!(proxy_url("proxy.url", "socks5://127.0.0.1:1080").is_ok());
        assert!(proxy_url("proxy.url", "socks5://u:p@127.0.0.1:1080").is_err());
        assert_eq!(
            capabilities("capabilities", &["Cache_1H".into(), "cache_1h".into()]).unwrap(),
            vec!["cache_1h"]
        );
        assert!(positive("rate_limit", Some(0)).is_err());
    }
}
