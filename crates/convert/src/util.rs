//! Small helpers shared by the dialect codecs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// `v[key]` as a string.
pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `v[key]` as an unsigned integer (also accepting an integral float or a numeric string).
pub(crate) fn u64_at(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A fresh id with `prefix`: unique within the process, URL- and Anthropic-id-safe
/// (`[A-Za-z0-9_]`).
pub(crate) fn fresh_id(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}{nanos:x}{n:04x}")
}

/// Seconds since the epoch (OpenAI's `created`).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Splits a `data:<media type>;base64,<data>` URL.
pub(crate) fn parse_data_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media.to_owned(), data.to_owned()))
}

/// Builds a `data:` URL from base64 data.
pub(crate) fn data_url(media_type: &str, data: &str) -> String {
    format!("data:{media_type};base64,{data}")
}

/// Tool-call arguments as a JSON object: a string is parsed; anything that is not an object
/// becomes `{}` (every dialect requires an object; the raw text of a malformed call would
/// be rejected upstream anyway).
pub(crate) fn args_object(v: Option<&Value>) -> Value {
    let parsed = match v {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(other) => other.clone(),
        None => Value::Null,
    };
    if parsed.is_object() {
        parsed
    } else {
        Value::Object(Map::new())
    }
}

/// A compact JSON string of `v`.
pub(crate) fn json_string(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
