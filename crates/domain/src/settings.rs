//! System settings, each declared exactly once: name, type, default, help. The admin API
//! validates against this table, the console generates its settings page from it, and the
//! typed accessors below are the only way code reads a setting.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::money::Usd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SettingKind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Text,
    Enum {
        options: &'static [&'static str],
    },
    TextList,
    /// A USD amount as a decimal string; `null` allowed.
    MoneyOrNull,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SettingDef {
    pub key: &'static str,
    pub group: &'static str,
    pub kind: SettingKind,
    #[serde(skip)]
    pub default: fn() -> Value,
    pub help: &'static str,
}

impl SettingDef {
    #[must_use]
    pub fn default_value(&self) -> Value {
        (self.default)()
    }

    /// Checks a candidate value, returning it normalised.
    pub fn validate(&self, v: &Value) -> Result<Value, String> {
        let bad = |what: &str| Err(format!("setting `{}` must be {what}", self.key));
        match self.kind {
            SettingKind::Bool => v
                .as_bool()
                .map_or_else(|| bad("true or false"), |b| Ok(json!(b))),
            SettingKind::Int { min, max } => match v.as_i64() {
                Some(i) if (min..=max).contains(&i) => Ok(json!(i)),
                _ => bad(&format!("an integer between {min} and {max}")),
            },
            SettingKind::Text => v
                .as_str()
                .map_or_else(|| bad("a string"), |s| Ok(json!(s.trim()))),
            SettingKind::Enum { options } => match v.as_str() {
                Some(s) if options.contains(&s) => Ok(json!(s)),
                _ => bad(&format!("one of {}", options.join(", "))),
            },
            SettingKind::TextList => match v.as_array() {
                Some(a) if a.iter().all(Value::is_string) => Ok(v.clone()),
                _ => bad("a list of strings"),
            },
            SettingKind::MoneyOrNull => match v {
                Value::Null => Ok(Value::Null),
                other => serde_json::from_value::<Usd>(other.clone())
                    .ok()
                    .filter(|u| !u.is_negative())
                    .map_or_else(
                        || bad("a non-negative USD amount or null"),
                        |u| Ok(json!(u)),
                    ),
            },
        }
    }
}

macro_rules! settings {
    ($($key:literal, $group:literal, $kind:expr, $default:expr, $help:literal;)*) => {
        /// Every setting, in display order.
        pub const SETTINGS: &[SettingDef] = &[$(SettingDef {
            key: $key,
            group: $group,
            kind: $kind,
            default: || json!($default),
            help: $help,
        }),*];
    };
}

const fn int(min: i64, max: i64) -> SettingKind {
    SettingKind::Int { min, max }
}

settings! {
    "log_level", "Logging", SettingKind::Enum { options: &["basic", "headers", "full"] }, "basic",
        "What is stored per request: `basic` (usage only), `headers` (+ masked headers), `full` (+ bodies).";
    "log_body_max_bytes", "Logging", int(0, 16 * 1024 * 1024), 65_536,
        "Stored request/response bodies are cut at this many bytes.";
    "masked_headers", "Logging", SettingKind::TextList, Vec::<String>::new(),
        "Extra header names masked in logs and stored headers (credentials are always masked).";
    "max_request_body_bytes", "Gateway", int(1024, 512 * 1024 * 1024), 32 * 1024 * 1024,
        "Largest accepted request body; larger requests get 413 in the caller's dialect.";
    "priority_mode", "Routing", SettingKind::Enum { options: &["provider", "global_key"] }, "provider",
        "`provider`: provider priority, then key priority. `global_key`: key global priority across providers.";
    "scheduling_mode", "Routing", SettingKind::Enum { options: &["cache_affinity", "fixed_order"] }, "cache_affinity",
        "`cache_affinity` keeps a user on the key that last served them (better prompt-cache hits).";
    "allow_cross_format", "Routing", SettingKind::Bool, false,
        "Default for models without their own setting: may a request be converted to another API format?";
    "stream_first_byte_timeout_secs", "Gateway", int(1, 600), 30,
        "How long a stream may take to produce its first data event before failing over.";
    "request_timeout_secs", "Gateway", int(5, 7200), 600,
        "Overall deadline of a request across all attempts (streams: until the first byte).";
    "unpriced_model_policy", "Billing", SettingKind::Enum { options: &["reject", "record_flagged"] }, "reject",
        "A model without a price is refused (`reject`) or served and recorded with an `unpriced` flag.";
    "default_user_quota_usd", "Users", SettingKind::MoneyOrNull, Value::Null,
        "Quota given to newly registered users (null = unlimited).";
    "registration_enabled", "Users", SettingKind::Bool, false,
        "Whether people may create their own accounts.";
    "api_key_prefix", "Users", SettingKind::Text, "sk-",
        "Prefix of newly created gateway keys.";
    "delete_expired_keys", "Users", SettingKind::Bool, false,
        "Delete expired keys that ask for it (otherwise they are only refused).";
    "login_attempts_per_minute", "Security", int(1, 1000), 10,
        "Failed logins allowed per client IP per minute before 429.";
    "retention_days_bodies", "Retention", int(0, 3650), 7,
        "Days request/response bodies are kept (0 = never stored).";
    "compress_bodies_after_days", "Retention", int(0, 3650), 1,
        "Bodies older than this are compressed.";
    "retention_days_headers", "Retention", int(0, 3650), 30,
        "Days stored headers are kept.";
    "retention_days_usage", "Retention", int(1, 36500), 365,
        "Days usage records are kept (rollups are kept forever).";
    "retention_days_traces", "Retention", int(1, 3650), 30,
        "Days attempt traces are kept.";
    "retention_days_audit", "Retention", int(1, 36500), 365,
        "Days audit log entries are kept.";
}

/// Looks a setting up by key.
#[must_use]
pub fn def(key: &str) -> Option<&'static SettingDef> {
    SETTINGS.iter().find(|d| d.key == key)
}

/// The effective settings: stored values over declared defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    values: BTreeMap<&'static str, Value>,
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_stored(&BTreeMap::new())
    }
}

impl Settings {
    /// Stored values that no longer validate (or unknown keys) fall back to the default.
    #[must_use]
    pub fn from_stored(stored: &BTreeMap<String, Value>) -> Self {
        let values = SETTINGS
            .iter()
            .map(|d| {
                let v = stored
                    .get(d.key)
                    .and_then(|v| d.validate(v).ok())
                    .unwrap_or_else(|| d.default_value());
                (d.key, v)
            })
            .collect();
        Self { values }
    }

    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    #[must_use]
    pub fn values(&self) -> &BTreeMap<&'static str, Value> {
        &self.values
    }

    fn int(&self, key: &str) -> i64 {
        self.values.get(key).and_then(Value::as_i64).unwrap_or(0)
    }

    fn text(&self, key: &str) -> &str {
        self.values.get(key).and_then(Value::as_str).unwrap_or("")
    }

    fn flag(&self, key: &str) -> bool {
        self.values
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    #[must_use]
    pub fn log_level(&self) -> &str {
        self.text("log_level")
    }
    #[must_use]
    pub fn log_body_max_bytes(&self) -> usize {
        usize::try_from(self.int("log_body_max_bytes")).unwrap_or(0)
    }
    #[must_use]
    pub fn masked_headers(&self) -> Vec<String> {
        self.values
            .get("masked_headers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
                    .collect()
            })
            .unwrap_or_default()
    }
    #[must_use]
    pub fn max_request_body_bytes(&self) -> usize {
        usize::try_from(self.int("max_request_body_bytes")).unwrap_or(32 * 1024 * 1024)
    }
    #[must_use]
    pub fn global_key_priority(&self) -> bool {
        self.text("priority_mode") == "global_key"
    }
    #[must_use]
    pub fn cache_affinity(&self) -> bool {
        self.text("scheduling_mode") == "cache_affinity"
    }
    #[must_use]
    pub fn allow_cross_format(&self) -> bool {
        self.flag("allow_cross_format")
    }
    #[must_use]
    pub fn stream_first_byte_timeout_secs(&self) -> u64 {
        u64::try_from(self.int("stream_first_byte_timeout_secs")).unwrap_or(30)
    }
    #[must_use]
    pub fn request_timeout_secs(&self) -> u64 {
        u64::try_from(self.int("request_timeout_secs")).unwrap_or(600)
    }
    #[must_use]
    pub fn reject_unpriced(&self) -> bool {
        self.text("unpriced_model_policy") == "reject"
    }
    #[must_use]
    pub fn default_user_quota(&self) -> Option<Usd> {
        self.values
            .get("default_user_quota_usd")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
    #[must_use]
    pub fn registration_enabled(&self) -> bool {
        self.flag("registration_enabled")
    }
    #[must_use]
    pub fn api_key_prefix(&self) -> &str {
        self.text("api_key_prefix")
    }
    #[must_use]
    pub fn delete_expired_keys(&self) -> bool {
        self.flag("delete_expired_keys")
    }
    #[must_use]
    pub fn login_attempts_per_minute(&self) -> u32 {
        u32::try_from(self.int("login_attempts_per_minute")).unwrap_or(10)
    }
    /// Retention of a data class in days (`bodies`, `headers`, `usage`, `traces`, `audit`).
    #[must_use]
    pub fn retention_days(&self, class: &str) -> i64 {
        self.int(&format!("retention_days_{class}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_validates() {
        for d in SETTINGS {
            assert_eq!(
                d.validate(&d.default_value()),
                Ok(d.default_value()),
                "{}",
                d.key
            );
        }
        let keys: std::collections::BTreeSet<_> = SETTINGS.iter().map(|d| d.key).collect();
        assert_eq!(keys.len(), SETTINGS.len(), "duplicate setting key");
    }

    #[test]
    fn invalid_values_are_named_and_stored_junk_falls_back() {
        let d = def("log_level").unwrap();
        let e = d.validate(&json!("verbose")).unwrap_err();
        assert!(
            e.contains("log_level") && e.contains("basic, headers, full"),
            "{e}"
        );
        let e = def("stream_first_byte_timeout_secs")
            .unwrap()
            .validate(&json!(0))
            .unwrap_err();
        assert!(e.contains("between 1 and 600"));
        let mut stored = BTreeMap::new();
        stored.insert("log_level".to_string(), json!("nonsense"));
        stored.insert("scheduling_mode".to_string(), json!("fixed_order"));
        let s = Settings::from_stored(&stored);
        assert_eq!(s.log_level(), "basic");
        assert!(!s.cache_affinity());
        assert_eq!(
            def("default_user_quota_usd")
                .unwrap()
                .validate(&json!("5.5")),
            Ok(json!("5.5"))
        );
    }
}
