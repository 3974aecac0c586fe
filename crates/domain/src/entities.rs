//! The entities of SPEC §1, as the store persists them and the services reason about them.
//! Field names follow the original Aether's JSON where its names are sound, so its users feel
//! at home; secrets never serialize (`#[serde(skip_serializing)]`).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::format::ApiFormat;
use crate::ids::*;
use crate::money::{Multiplier, Usd};
use crate::pricing::{CostBreakdown, TieredPricing, TokenUsage};
use crate::ts::Timestamp;

macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $v),* }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$v),*];

            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)*
                    other => Err(format!(
                        "unknown {} `{}` (expected one of: {})",
                        stringify!($name),
                        other,
                        [$($s),*].join(", ")
                    )),
                }
            }
        }
    };
}

str_enum!(Role { Admin => "admin", User => "user" });

str_enum!(
    /// How a user's quota renews.
    QuotaPeriod { None => "none", Daily => "daily", Monthly => "monthly" }
);

str_enum!(
    /// How a provider bills. Free-tier providers cost 0 actual.
    BillingType { PayAsYouGo => "pay_as_you_go", MonthlyQuota => "monthly_quota", FreeTier => "free_tier" }
);

str_enum!(LedgerKind { TopUp => "topup", Charge => "charge", Refund => "refund", Adjustment => "adjustment" });

str_enum!(IpAction { Allow => "allow", Block => "block" });

str_enum!(
    /// Usage record lifecycle: `pending → streaming → completed | failed`.
    UsageStatus { Pending => "pending", Streaming => "streaming", Completed => "completed", Failed => "failed" }
);

str_enum!(
    /// Attempt trace status.
    TraceStatus {
        Available => "available",
        Pending => "pending",
        Streaming => "streaming",
        Success => "success",
        Failed => "failed",
        Skipped => "skipped",
    }
);

str_enum!(AnnouncementKind { Info => "info", Warning => "warning", Maintenance => "maintenance", Important => "important" });

/// An allow-list; `None` means "everything".
pub type AllowList<T> = Option<Vec<T>>;

/// A console/API account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub username: String,
    #[serde(skip_serializing, default)]
    pub password_hash: String,
    pub role: Role,
    pub is_active: bool,
    /// `None` = unlimited.
    pub quota_usd: Option<Usd>,
    /// Spend in the current quota period.
    pub used_usd: Usd,
    /// Lifetime spend.
    pub total_usd: Usd,
    pub quota_period: QuotaPeriod,
    pub period_started_at: Option<Timestamp>,
    pub allowed_providers: AllowList<ProviderId>,
    pub allowed_api_formats: AllowList<ApiFormat>,
    pub allowed_models: AllowList<String>,
    /// Model name (or glob) → capability names to require, e.g. `{"claude-opus-*": ["cache_1h"]}`.
    pub model_capability_settings: BTreeMap<String, Vec<String>>,
    pub last_login_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl QuotaPeriod {
    /// Whether `at` falls in a later period than one that started at `started` (UTC days and
    /// calendar months).
    #[must_use]
    pub fn has_rolled_over(self, started: Timestamp, at: Timestamp) -> bool {
        let (a, b) = (started.to_datetime(), at.to_datetime());
        match self {
            Self::None => false,
            Self::Daily => b.date() > a.date(),
            Self::Monthly => (b.year(), u8::from(b.month())) > (a.year(), u8::from(a.month())),
        }
    }
}

/// Milliseconds in a UTC day (Unix time has no leap seconds).
const DAY_MS: i64 = 86_400_000;

impl QuotaPeriod {
    /// The start of the period `at` falls in: UTC midnight of its day (`Daily`), 00:00 UTC of
    /// the 1st of its month (`Monthly`); `None` for `QuotaPeriod::None`.
    #[must_use]
    pub fn period_start(self, at: Timestamp) -> Option<Timestamp> {
        match self {
            Self::None => None,
            Self::Daily => Some(Timestamp::from_millis(
                at.millis().div_euclid(DAY_MS) * DAY_MS,
            )),
            Self::Monthly => {
                let d = at.to_datetime().date();
                Some(utc_midnight(d.year(), d.month()))
            }
        }
    }

    /// The start of the period after the one `at` falls in (the current period's exclusive
    /// end); `None` for `QuotaPeriod::None`.
    #[must_use]
    pub fn next_period_start(self, at: Timestamp) -> Option<Timestamp> {
        match self {
            Self::None => None,
            Self::Daily => self
                .period_start(at)
                .map(|s| Timestamp::from_millis(s.millis().saturating_add(DAY_MS))),
            Self::Monthly => {
                let d = at.to_datetime().date();
                let (y, m) = match d.month() {
                    time::Month::December => (d.year() + 1, time::Month::January),
                    m => (d.year(), m.next()),
                };
                Some(utc_midnight(y, m))
            }
        }
    }
}

/// 00:00 UTC of the 1st of `month` in `year`.
fn utc_midnight(year: i32, month: time::Month) -> Timestamp {
    time::Date::from_calendar_date(year, month, 1).map_or(Timestamp::from_millis(0), |d| {
        Timestamp::from_millis(
            d.midnight()
                .assume_utc()
                .unix_timestamp()
                .saturating_mul(1000),
        )
    })
}

impl User {
    /// Spend that counts against the quota at `now`: nothing once the period has rolled over.
    #[must_use]
    pub fn period_used(&self, now: Timestamp) -> Usd {
        match self.period_started_at {
            Some(start) if self.quota_period.has_rolled_over(start, now) => Usd::ZERO,
            _ => self.used_usd,
        }
    }
}

/// A gateway key. A user's key has `user_id`; a standalone key has none and a balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub user_id: Option<UserId>,
    #[serde(skip_serializing, default)]
    pub key_hash: String,
    /// Masked form for display, e.g. `sk-AbC…xyz1`.
    pub key_display: String,
    pub name: String,
    pub is_active: bool,
    pub is_standalone: bool,
    /// Standalone keys: prepaid balance. Changed only through the ledger.
    pub balance_usd: Usd,
    pub expires_at: Option<Timestamp>,
    pub auto_delete_on_expiry: bool,
    pub allowed_providers: AllowList<ProviderId>,
    pub allowed_api_formats: AllowList<ApiFormat>,
    pub allowed_models: AllowList<String>,
    pub force_capabilities: Vec<String>,
    /// Requests per minute; `None` = unlimited.
    pub rate_limit: Option<u32>,
    pub concurrent_limit: Option<u32>,
    pub total_requests: i64,
    pub total_cost_usd: Usd,
    pub last_used_at: Option<Timestamp>,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One movement of a standalone key's balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    pub id: LedgerId,
    pub api_key_id: ApiKeyId,
    pub kind: LedgerKind,
    /// Signed: top-ups and refunds are positive, charges negative.
    pub amount_usd: Usd,
    pub balance_after_usd: Usd,
    pub reason: Option<String>,
    pub request_id: Option<RequestId>,
    pub actor_id: Option<UserId>,
    pub created_at: Timestamp,
}

/// An upstream vendor account or relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Provider {
    pub id: ProviderId,
    /// Slug, unique.
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    pub website: Option<String>,
    pub billing_type: BillingType,
    /// Period quota in USD (`monthly_quota_usd` in the original).
    pub quota_usd: Option<Usd>,
    pub quota_used_usd: Usd,
    /// Period length in days (`quota_reset_day` in the original).
    pub quota_period_days: u32,
    pub period_started_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub rpm_limit: Option<u32>,
    /// Lower = preferred.
    pub provider_priority: i32,
    pub is_active: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Provider {
    /// The start of the quota period `at` falls in. Periods are `quota_period_days` long and
    /// anchored at `period_started_at`: `s + k·days` with `k = floor((at − s) / days)`, and `s`
    /// itself when `at` is before it. `None` (no period tracking: spend simply accumulates)
    /// without a quota, without a period length, or without a start.
    #[must_use]
    pub fn period_start(&self, at: Timestamp) -> Option<Timestamp> {
        let s = self.period_started_at?;
        if self.quota_usd.is_none() || self.quota_period_days == 0 {
            return None;
        }
        if at <= s {
            return Some(s);
        }
        let len = i64::from(self.quota_period_days).saturating_mul(DAY_MS);
        let k = (at.millis() - s.millis()) / len;
        Some(Timestamp::from_millis(
            s.millis().saturating_add(k.saturating_mul(len)),
        ))
    }

    /// Spend that counts against the quota at `now`: nothing once a later period than the
    /// stored one has begun.
    #[must_use]
    pub fn period_used(&self, now: Timestamp) -> Usd {
        match (self.period_started_at, self.period_start(now)) {
            (Some(stored), Some(current)) if current > stored => Usd::ZERO,
            _ => self.quota_used_usd,
        }
    }
}

/// Outbound proxy of an endpoint. The password is sealed at rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProxyConfig {
    /// `http://`, `https://` or `socks5://` host and port.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Sealed (`enc:v1:…`); never serialized to clients.
    #[serde(default, skip_serializing)]
    pub password_sealed: Option<String>,
}

/// One API format of a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoint {
    pub id: EndpointId,
    pub provider_id: ProviderId,
    pub api_format: ApiFormat,
    pub base_url: String,
    pub custom_path: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// Seconds.
    pub timeout: u32,
    pub max_retries: u32,
    pub max_concurrent: Option<u32>,
    pub proxy: Option<ProxyConfig>,
    pub is_active: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An upstream credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderKey {
    pub id: ProviderKeyId,
    pub endpoint_id: EndpointId,
    pub provider_id: ProviderId,
    pub name: String,
    pub note: Option<String>,
    /// Sealed with the store cipher; never serialized.
    #[serde(skip_serializing, default)]
    pub secret_sealed: String,
    /// SHA-256 of the plaintext, to find duplicates without decrypting every key.
    #[serde(skip_serializing, default)]
    pub secret_fingerprint: String,
    /// Masked plaintext for display.
    pub api_key_masked: String,
    pub rate_multiplier: Multiplier,
    pub internal_priority: i32,
    pub global_priority: Option<i32>,
    /// `None` = adaptive.
    pub max_concurrent: Option<u32>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
    pub allowed_models: AllowList<String>,
    pub capabilities: Vec<String>,
    pub cache_ttl_minutes: u32,
    pub max_probe_interval_minutes: Option<u32>,
    pub expires_at: Option<Timestamp>,
    pub is_active: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a model can do (`GlobalModel.config` in the original).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelCapabilities {
    #[serde(default = "yes")]
    pub streaming: bool,
    #[serde(default)]
    pub vision: bool,
    #[serde(default)]
    pub function_calling: bool,
    #[serde(default)]
    pub extended_thinking: bool,
    #[serde(default)]
    pub image_generation: bool,
    #[serde(default)]
    pub context_limit: Option<u64>,
    #[serde(default)]
    pub output_limit: Option<u64>,
    /// May a request for this model be converted to another API format and served by an
    /// upstream of that format? `None`: the `allow_cross_format` system setting decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_cross_format: Option<bool>,
}

fn yes() -> bool {
    true
}

impl Default for ModelCapabilities {
    fn default() -> Self {
        Self {
            streaming: true,
            vision: false,
            function_calling: false,
            extended_thinking: false,
            image_generation: false,
            context_limit: None,
            output_limit: None,
            allow_cross_format: None,
        }
    }
}

/// A public model name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GlobalModel {
    pub id: GlobalModelId,
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    pub is_active: bool,
    pub capabilities: ModelCapabilities,
    /// Capability tags the model supports (`cache_1h`, `context_1m`).
    pub supported_capabilities: Vec<String>,
    pub default_tiered_pricing: Option<TieredPricing>,
    pub default_price_per_request: Option<Usd>,
    /// Free-form extra metadata (icon, family, …).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Value,
    pub usage_count: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An alternative upstream name for a provider model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelMapping {
    pub name: String,
    /// Lower wins; default 1.
    #[serde(default = "one")]
    pub priority: i32,
    /// Formats this mapping applies to; `None` = all.
    #[serde(default)]
    pub api_formats: Option<Vec<ApiFormat>>,
}

fn one() -> i32 {
    1
}

/// One provider's implementation of a global model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderModel {
    pub id: ProviderModelId,
    pub provider_id: ProviderId,
    pub global_model_id: GlobalModelId,
    pub provider_model_name: String,
    pub provider_model_mappings: Vec<ModelMapping>,
    /// Overrides of the global model's prices; `None` = inherit.
    pub tiered_pricing: Option<TieredPricing>,
    pub price_per_request: Option<Usd>,
    pub supports_streaming: Option<bool>,
    pub supports_vision: Option<bool>,
    pub supports_function_calling: Option<bool>,
    pub supports_extended_thinking: Option<bool>,
    pub supports_image_generation: Option<bool>,
    pub is_active: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ProviderModel {
    /// Effective pricing: provider override, else the global model's default.
    #[must_use]
    pub fn effective_pricing<'a>(&'a self, gm: &'a GlobalModel) -> Option<&'a TieredPricing> {
        self.tiered_pricing
            .as_ref()
            .or(gm.default_tiered_pricing.as_ref())
    }

    #[must_use]
    pub fn effective_price_per_request(&self, gm: &GlobalModel) -> Option<Usd> {
        self.price_per_request.or(gm.default_price_per_request)
    }
}

/// One gateway request, as accounted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRecord {
    pub id: RequestId,
    /// The client's own `x-request-id`, kept apart and never used as a key.
    pub client_request_id: Option<String>,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
    pub provider_id: Option<ProviderId>,
    pub endpoint_id: Option<EndpointId>,
    pub provider_key_id: Option<ProviderKeyId>,
    pub global_model_id: Option<GlobalModelId>,
    pub requested_model: String,
    pub upstream_model: Option<String>,
    pub api_format: ApiFormat,
    pub endpoint_api_format: Option<ApiFormat>,
    pub is_stream: bool,
    pub status: UsageStatus,
    pub status_code: Option<u16>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub tokens: TokenUsage,
    pub cost: CostBreakdown,
    /// `true` when the model had no price: recorded, flagged, never silently free.
    pub unpriced: bool,
    pub latency_ms: Option<i64>,
    pub ttfb_ms: Option<i64>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Logged headers and bodies of a request (subject to the log level and retention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageBodies {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub request_headers: Option<Value>,
    pub request_body: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub response_headers: Option<Value>,
    pub response_body: Option<String>,
}

/// One attempt of a request against one candidate (or a skipped candidate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptTrace {
    pub id: TraceId,
    pub request_id: RequestId,
    pub candidate_index: u32,
    pub retry_index: u32,
    pub provider_id: Option<ProviderId>,
    pub endpoint_id: Option<EndpointId>,
    pub provider_key_id: Option<ProviderKeyId>,
    pub status: TraceStatus,
    pub skip_reason: Option<String>,
    pub status_code: Option<u16>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub latency_ms: Option<i64>,
    pub concurrency: Option<u32>,
    /// Which conversion ran, if any (e.g. `CLAUDE→OPENAI`).
    pub conversion: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

str_enum!(
    /// How an upstream fared in one bucket of the health timeline.
    HealthState {
        /// Only successes.
        Success => "success",
        /// Successes and failures.
        Partial => "partial",
        /// Only failures.
        Failure => "failure",
        /// No upstream attempt.
        NoData => "no_data",
    }
);

impl HealthState {
    #[must_use]
    pub const fn of(successes: u64, failures: u64) -> Self {
        match (successes, failures) {
            (0, 0) => Self::NoData,
            (_, 0) => Self::Success,
            (0, _) => Self::Failure,
            _ => Self::Partial,
        }
    }
}

/// One bucket `[start, end)` of the health timeline: upstream attempts that succeeded and
/// failed (client errors excluded — they are the request's fault, not the upstream's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthBucket {
    pub start: Timestamp,
    pub end: Timestamp,
    pub successes: u64,
    pub failures: u64,
    pub state: HealthState,
}

/// An entry of the audit log (admin and security events only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: AuditId,
    pub actor_id: Option<UserId>,
    pub actor_email: Option<String>,
    /// e.g. `user.create`, `provider.update`, `auth.login_failed`.
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
    pub ip: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Announcement {
    pub id: AnnouncementId,
    pub title: String,
    pub content: String,
    #[serde(rename = "type")]
    pub kind: AnnouncementKind,
    pub priority: i32,
    pub is_active: bool,
    pub is_pinned: bool,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub author_id: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Announcement {
    /// Whether users see it now.
    #[must_use]
    pub fn is_visible_at(&self, now: Timestamp) -> bool {
        self.is_active
            && self.start_time.is_none_or(|s| s <= now)
            && self.end_time.is_none_or(|e| now < e)
    }
}

/// An IP allow/block rule (CIDR).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IpRule {
    pub id: IpRuleId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.0.0.0/8"))]
    pub cidr: IpNet,
    pub action: IpAction,
    pub note: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
}

/// A login session: one refresh-token family. Each refresh rotates the token; presenting an
/// already-rotated token revokes the whole session (token theft detection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    #[serde(skip_serializing, default)]
    pub refresh_hash: String,
    /// Hash of the previous refresh token, to detect reuse.
    #[serde(skip_serializing, default)]
    pub previous_hash: Option<String>,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Timestamp,
    pub last_refreshed_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_periods_roll_over_at_utc_boundaries() {
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let start = t("2026-01-31T23:00:00Z");
        assert!(!QuotaPeriod::Daily.has_rolled_over(start, t("2026-01-31T23:59:59Z")));
        assert!(QuotaPeriod::Daily.has_rolled_over(start, t("2026-02-01T00:00:00Z")));
        assert!(!QuotaPeriod::Monthly.has_rolled_over(start, t("2026-01-01T00:00:00Z")));
        assert!(QuotaPeriod::Monthly.has_rolled_over(start, t("2026-02-01T00:00:00Z")));
        assert!(
            QuotaPeriod::Monthly
                .has_rolled_over(t("2025-12-15T00:00:00Z"), t("2026-01-01T00:00:00Z"))
        );
        assert!(!QuotaPeriod::None.has_rolled_over(start, t("2030-01-01T00:00:00Z")));
    }

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn quota_period_starts_at_utc_midnight_and_the_first_of_the_month() {
        let d = QuotaPeriod::Daily;
        assert_eq!(
            d.period_start(t("2026-03-15T13:45:10.5Z")),
            Some(t("2026-03-15T00:00:00Z"))
        );
        // Exactly at midnight: that day's period.
        assert_eq!(
            d.period_start(t("2026-03-15T00:00:00Z")),
            Some(t("2026-03-15T00:00:00Z"))
        );
        assert_eq!(
            d.period_start(t("2026-03-14T23:59:59.999Z")),
            Some(t("2026-03-14T00:00:00Z"))
        );
        // Before 1970: still the day's midnight, not the next one.
        assert_eq!(
            d.period_start(t("1969-12-31T12:00:00Z")),
            Some(t("1969-12-31T00:00:00Z"))
        );
        assert_eq!(
            d.next_period_start(t("2026-03-15T00:00:00Z")),
            Some(t("2026-03-16T00:00:00Z"))
        );

        let m = QuotaPeriod::Monthly;
        assert_eq!(
            m.period_start(t("2026-02-28T23:59:59.999Z")),
            Some(t("2026-02-01T00:00:00Z"))
        );
        assert_eq!(
            m.period_start(t("2026-03-01T00:00:00Z")),
            Some(t("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            m.period_start(t("2025-12-31T23:59:59.999Z")),
            Some(t("2025-12-01T00:00:00Z"))
        );
        assert_eq!(
            m.next_period_start(t("2026-02-10T08:00:00Z")),
            Some(t("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            m.next_period_start(t("2026-12-31T23:59:59Z")),
            Some(t("2027-01-01T00:00:00Z"))
        );

        assert_eq!(
            QuotaPeriod::None.period_start(t("2026-03-15T13:00:00Z")),
            None
        );
        assert_eq!(
            QuotaPeriod::None.next_period_start(t("2026-03-15T13:00:00Z")),
            None
        );
    }

    fn quota_provider(days: u32, started: Option<Timestamp>) -> Provider {
        Provider {
            id: ProviderId::new(),
            name: "p".into(),
            display_name: "P".into(),
            description: None,
            website: None,
            billing_type: BillingType::MonthlyQuota,
            quota_usd: Some(Usd::dollars(100)),
            quota_used_usd: Usd::dollars(7),
            quota_period_days: days,
            period_started_at: started,
            expires_at: None,
            rpm_limit: None,
            provider_priority: 1,
            is_active: true,
            config: Value::Null,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn provider_periods_step_by_whole_periods_from_the_anchor() {
        let s = t("2026-01-10T06:30:00Z");
        let p = quota_provider(7, Some(s));
        // k = 0: inside the first period, including its very first instant.
        assert_eq!(p.period_start(s), Some(s));
        assert_eq!(p.period_start(t("2026-01-17T06:29:59.999Z")), Some(s));
        // Exactly one period later: k = 1.
        assert_eq!(
            p.period_start(t("2026-01-17T06:30:00Z")),
            Some(t("2026-01-17T06:30:00Z"))
        );
        // k = 3 (21 days), one millisecond before the 4th boundary.
        assert_eq!(
            p.period_start(t("2026-02-07T06:29:59.999Z")),
            Some(t("2026-01-31T06:30:00Z"))
        );
        // Before the anchor: the anchor.
        assert_eq!(p.period_start(t("2026-01-01T00:00:00Z")), Some(s));

        // No period tracking without an anchor, a quota or a length.
        assert_eq!(quota_provider(7, None).period_start(s), None);
        assert_eq!(quota_provider(0, Some(s)).period_start(s), None);
        let mut free = quota_provider(7, Some(s));
        free.quota_usd = None;
        assert_eq!(free.period_start(s), None);
    }

    #[test]
    fn provider_period_used_is_zero_once_a_later_period_began() {
        let s = t("2026-01-10T06:30:00Z");
        let p = quota_provider(30, Some(s));
        assert_eq!(
            p.period_used(t("2026-02-09T06:29:59.999Z")),
            Usd::dollars(7)
        );
        assert_eq!(p.period_used(t("2026-02-09T06:30:00Z")), Usd::ZERO);
        assert_eq!(p.period_used(t("2026-01-01T00:00:00Z")), Usd::dollars(7));
        // Plain accumulation without period tracking.
        let q = quota_provider(30, None);
        assert_eq!(q.period_used(t("2030-01-01T00:00:00Z")), Usd::dollars(7));
    }

    #[test]
    fn health_state_follows_the_counts() {
        assert_eq!(HealthState::of(0, 0), HealthState::NoData);
        assert_eq!(HealthState::of(3, 0), HealthState::Success);
        assert_eq!(HealthState::of(3, 1), HealthState::Partial);
        assert_eq!(HealthState::of(0, 1), HealthState::Failure);
        assert_eq!(
            serde_json::to_string(&HealthState::NoData).unwrap(),
            "\"no_data\""
        );
    }
}
