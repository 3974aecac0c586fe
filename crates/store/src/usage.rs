//! Usage records, their stored headers/bodies, and attempt traces — written in batches by the
//! gateway's usage writer, read by the console.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use aether_domain::entities::{
    AttemptTrace, QuotaPeriod, TraceStatus, UsageBodies, UsageRecord, UsageStatus,
};
pub use aether_domain::entities::{HealthBucket, HealthState};
use aether_domain::pricing::{CostBreakdown, TokenUsage};
use aether_domain::{
    ApiFormat, ApiKeyId, EndpointId, GlobalModelId, LedgerId, Multiplier, ProviderId,
    ProviderKeyId, RequestId, Timestamp, TraceId, Usd, UserId,
};
use async_trait::async_trait;

use crate::SqlStore;
use crate::args;
use crate::db::{Arg, Backend, Exec, Row};
use crate::error::Result;
use crate::sql::{
    Count, Filter, Page, Paged, oj, opt_json, opt_parse, opt_u32, parse, ts, u32_, usd,
};

/// Which usage records a listing or an aggregate covers; every field narrows (`None` = any).
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
    pub provider_id: Option<ProviderId>,
    /// The upstream key that served the request.
    pub provider_key_id: Option<ProviderKeyId>,
    /// Exact: the requested model name, or the name or id of the global model the request
    /// resolved to (so one global model's name also finds the requests of its aliases).
    pub model: Option<String>,
    /// The client-facing API format.
    pub api_format: Option<ApiFormat>,
    /// `pending`, `streaming`, `completed` or `failed`.
    pub status: Option<String>,
    pub is_stream: Option<bool>,
    /// `created_at >= since`.
    pub since: Option<Timestamp>,
    /// `created_at < until`.
    pub until: Option<Timestamp>,
}

/// Totals over a [`UsageFilter`]: the dashboard's figures. Money is exact (nano-USD sums);
/// ratios are left to [`UsageSummary::cache_hit_rate`] and friends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSummary {
    pub requests: u64,
    /// Records with status `completed`.
    pub successes: u64,
    /// Records with status `failed` (the rest are still in flight).
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_5m_tokens: u64,
    pub cache_creation_1h_tokens: u64,
    pub cache_read_tokens: u64,
    /// List cost (what callers were charged).
    pub cost: Usd,
    /// Actual cost (what the upstreams cost).
    pub actual_cost: Usd,
    /// Mean over the records that have a latency, rounded down; `None` when none has.
    pub avg_latency_ms: Option<i64>,
    /// Mean over the records that have a time to first byte, rounded down.
    pub avg_ttfb_ms: Option<i64>,
}

impl UsageSummary {
    /// Cache writes of both lifetimes.
    #[must_use]
    pub fn cache_creation_tokens(&self) -> u64 {
        self.cache_creation_5m_tokens
            .saturating_add(self.cache_creation_1h_tokens)
    }

    /// Every prompt-side token: `input + cache reads + cache writes` (`input` excludes cached
    /// tokens in every dialect) — the denominator of the cache hit rate.
    #[must_use]
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_creation_tokens())
    }

    /// `cache_read / (input + cache_read + cache writes)`, `0.0` without any prompt tokens.
    /// For display only.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn cache_hit_rate(&self) -> f64 {
        match self.prompt_tokens() {
            0 => 0.0,
            d => self.cache_read_tokens as f64 / d as f64,
        }
    }
}

/// What [`UsageRepo::usage_breakdown`] groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageGroup {
    /// The global model's name when the request resolved to one, else the requested model.
    Model,
    /// The provider's id (`""` for requests no provider served); the label is its name.
    Provider,
    /// The client-facing API format.
    Format,
    /// The user's id (`""` for standalone keys); the label is the username.
    User,
    /// The UTC day of `created_at`, as `YYYY-MM-DD`.
    Day,
}

/// One group of a usage breakdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGroupRow {
    pub key: String,
    /// A display name where the key is an id (provider name, username, global model display
    /// name), when known.
    pub label: Option<String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    /// Cache writes of both lifetimes.
    pub cache_creation_tokens: u64,
    pub cost: Usd,
    pub actual_cost: Usd,
}

/// Requests in one hour of the week (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeatCell {
    /// 0 = Sunday … 6 = Saturday.
    pub weekday: u8,
    /// 0–23.
    pub hour: u8,
    pub requests: u64,
}

/// What a finished request costs, applied exactly once (guarded by the record's `billed` flag).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Billing {
    pub request_id: RequestId,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
    /// Standalone keys pay from their balance (with a ledger entry); users' keys count
    /// against the user's quota.
    pub standalone: bool,
    /// List cost: charged to the user or the standalone key.
    pub charged: Usd,
    pub provider_id: Option<ProviderId>,
    /// Actual cost: counts against the provider's period quota.
    pub actual: Usd,
    pub global_model_id: Option<GlobalModelId>,
    pub at: Timestamp,
    /// The start of the user's quota period the charge belongs to (`QuotaPeriod::period_start`
    /// of the charge time); `None` = no period tracking, the charge simply accumulates.
    pub user_period_start: Option<Timestamp>,
    /// The start of the provider's quota period the actual cost belongs to
    /// (`Provider::period_start`); `None` = no period tracking.
    pub provider_period_start: Option<Timestamp>,
}

/// A health timeline request: `buckets` equal buckets over `[since, until)` (the last one
/// takes the remainder), optionally narrowed to one API format, endpoint or upstream key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthQuery {
    pub since: Timestamp,
    pub until: Timestamp,
    /// Clamped to `1..=500` (and to the span's milliseconds).
    pub buckets: u32,
    pub api_format: Option<ApiFormat>,
    pub endpoint_id: Option<EndpointId>,
    pub provider_key_id: Option<ProviderKeyId>,
}

/// Most buckets a timeline has.
pub const MAX_HEALTH_BUCKETS: u32 = 500;

/// Error types of failed attempts that are the request's fault (the upstream refused a bad
/// request), not the upstream's; they do not count against its health.
const CLIENT_ERROR_TYPES: &str =
    "'invalid_request', 'context_length_exceeded', 'content_policy', 'request_too_large'";

/// One write of the usage writer: everything commits together or not at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageBatch {
    /// Inserted or replaced by id (the lifecycle `pending → streaming → completed` rewrites
    /// the same row).
    pub records: Vec<UsageRecord>,
    pub traces: Vec<AttemptTrace>,
    pub bodies: Vec<(RequestId, UsageBodies)>,
    /// Applied only for records that reached `completed` or `failed` and were not billed yet.
    pub billing: Vec<Billing>,
}

impl UsageBatch {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.traces.is_empty()
            && self.bodies.is_empty()
            && self.billing.is_empty()
    }
}

#[async_trait]
pub trait UsageRepo: Send + Sync {
    /// Writes a batch in one transaction; returns how many billings were applied. A billing
    /// whose record was billed before is skipped, so retrying a batch never charges twice.
    async fn write_batch(&self, batch: &UsageBatch) -> Result<usize>;
    async fn get_usage(&self, id: RequestId) -> Result<Option<UsageRecord>>;
    async fn list_usage(&self, f: &UsageFilter, page: Page) -> Result<Paged<UsageRecord>>;
    async fn get_usage_bodies(&self, id: RequestId) -> Result<Option<UsageBodies>>;
    /// The attempt trace of a request, ordered by candidate then retry. A request served by
    /// its first attempt with nothing skipped has no stored trace rows (the gateway does not
    /// write what the usage record already holds); for it, the one successful step is
    /// synthesised from the record.
    async fn list_traces(&self, request: RequestId) -> Result<Vec<AttemptTrace>>;
    /// Upstream health over time. Every upstream attempt counts once: a success is a
    /// completed usage record served by an upstream key (by `created_at`), a failure an
    /// attempt trace that failed for any reason but a client error (by `started_at`). Always
    /// exactly the (clamped) number of buckets, empty ones [`HealthState::NoData`]; none when
    /// `until` is not after `since`.
    async fn health_timeline(&self, q: &HealthQuery) -> Result<Vec<HealthBucket>>;
    /// Totals over the filtered records, aggregated in the database.
    async fn usage_summary(&self, f: &UsageFilter) -> Result<UsageSummary>;
    /// The filtered records grouped: by cost, most expensive first (ties: more requests, then
    /// key); [`UsageGroup::Day`] by day, oldest first. Days are UTC (`created_at / 86400000`).
    async fn usage_breakdown(&self, f: &UsageFilter, by: UsageGroup) -> Result<Vec<UsageGroupRow>>;
    /// Requests per UTC weekday and hour, only the non-empty cells, ordered by weekday then
    /// hour.
    async fn usage_heatmap(&self, f: &UsageFilter) -> Result<Vec<HeatCell>>;
    /// Marks records still `pending` or `streaming` that were created before `created_before`
    /// as `failed` with error type `stale` (their request died with its instance); returns
    /// how many. Settled records are never touched, so a late completion is not undone.
    async fn fail_stale_usage(&self, created_before: Timestamp) -> Result<u64>;
}

/// The one-step trace of a request served by its first attempt.
fn synthesised_trace(r: &UsageRecord) -> Option<AttemptTrace> {
    if r.status != UsageStatus::Completed || r.provider_key_id.is_none() {
        return None;
    }
    Some(AttemptTrace {
        id: TraceId(r.id.0),
        request_id: r.id,
        candidate_index: 0,
        retry_index: 0,
        provider_id: r.provider_id,
        endpoint_id: r.endpoint_id,
        provider_key_id: r.provider_key_id,
        status: TraceStatus::Success,
        skip_reason: None,
        status_code: r.status_code,
        error_type: None,
        error_message: None,
        latency_ms: r.latency_ms,
        concurrency: None,
        // The conversion that ran follows from the two formats (as the relay names it).
        conversion: r
            .endpoint_api_format
            .filter(|f| f.dialect() != r.api_format.dialect())
            .map(|f| format!("{}→{f}", r.api_format)),
        started_at: r.created_at,
        finished_at: Some(r.updated_at),
    })
}

const COLS: &str = "id, client_request_id, user_id, api_key_id, provider_id, endpoint_id, provider_key_id, \
    global_model_id, requested_model, upstream_model, api_format, endpoint_api_format, is_stream, status, \
    status_code, error_type, error_message, input_tokens, output_tokens, cache_creation_5m_tokens, \
    cache_creation_1h_tokens, cache_read_tokens, reasoning_tokens, input_cost, output_cost, \
    cache_creation_5m_cost, cache_creation_1h_cost, cache_read_cost, request_cost, total_cost, \
    actual_total_cost, rate_multiplier_ppm, pricing, unpriced, latency_ms, ttfb_ms, client_ip, \
    user_agent, created_at, updated_at";

/// The applied tier, stored as JSON beside the per-component costs.
#[derive(serde::Serialize, serde::Deserialize)]
struct PricingSnapshot {
    tier_index: usize,
    tier_up_to: Option<u64>,
    unit_prices: Option<aether_domain::pricing::UnitPrices>,
}

fn tokens(r: &Row, col: &str) -> Result<u64> {
    Ok(u64::try_from(r.i64(col)?).unwrap_or(0))
}

fn from_row(r: &Row) -> Result<UsageRecord> {
    let snap: Option<PricingSnapshot> = opt_json(r, "pricing")?;
    let snap = snap.unwrap_or(PricingSnapshot {
        tier_index: 0,
        tier_up_to: None,
        unit_prices: None,
    });
    Ok(UsageRecord {
        id: parse(r, "id")?,
        client_request_id: r.opt_text("client_request_id")?,
        user_id: opt_parse(r, "user_id")?,
        api_key_id: opt_parse(r, "api_key_id")?,
        provider_id: opt_parse(r, "provider_id")?,
        endpoint_id: opt_parse(r, "endpoint_id")?,
        provider_key_id: opt_parse(r, "provider_key_id")?,
        global_model_id: opt_parse(r, "global_model_id")?,
        requested_model: r.text("requested_model")?,
        upstream_model: r.opt_text("upstream_model")?,
        api_format: parse(r, "api_format")?,
        endpoint_api_format: opt_parse(r, "endpoint_api_format")?,
        is_stream: r.bool("is_stream")?,
        status: parse(r, "status")?,
        status_code: opt_u32(r, "status_code")?.and_then(|c| u16::try_from(c).ok()),
        error_type: r.opt_text("error_type")?,
        error_message: r.opt_text("error_message")?,
        tokens: TokenUsage {
            input: tokens(r, "input_tokens")?,
            output: tokens(r, "output_tokens")?,
            cache_creation_5m: tokens(r, "cache_creation_5m_tokens")?,
            cache_creation_1h: tokens(r, "cache_creation_1h_tokens")?,
            cache_read: tokens(r, "cache_read_tokens")?,
            reasoning: tokens(r, "reasoning_tokens")?,
        },
        cost: CostBreakdown {
            tier_index: snap.tier_index,
            tier_up_to: snap.tier_up_to,
            unit_prices: snap.unit_prices,
            input: usd(r, "input_cost")?,
            output: usd(r, "output_cost")?,
            cache_creation_5m: usd(r, "cache_creation_5m_cost")?,
            cache_creation_1h: usd(r, "cache_creation_1h_cost")?,
            cache_read: usd(r, "cache_read_cost")?,
            per_request: usd(r, "request_cost")?,
            total: usd(r, "total_cost")?,
            actual_total: usd(r, "actual_total_cost")?,
            multiplier: Multiplier::from_ppm(r.i64("rate_multiplier_ppm")?),
        },
        unpriced: r.bool("unpriced")?,
        latency_ms: r.opt_i64("latency_ms")?,
        ttfb_ms: r.opt_i64("ttfb_ms")?,
        client_ip: r.opt_text("client_ip")?,
        user_agent: r.opt_text("user_agent")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

fn usage_args(u: &UsageRecord) -> Vec<Arg> {
    let c = &u.cost;
    let snap = PricingSnapshot {
        tier_index: c.tier_index,
        tier_up_to: c.tier_up_to,
        unit_prices: c.unit_prices,
    };
    args![
        u.id.to_string(),
        u.client_request_id.clone(),
        u.user_id.map(|x| x.to_string()),
        u.api_key_id.map(|x| x.to_string()),
        u.provider_id.map(|x| x.to_string()),
        u.endpoint_id.map(|x| x.to_string()),
        u.provider_key_id.map(|x| x.to_string()),
        u.global_model_id.map(|x| x.to_string()),
        u.requested_model.as_str(),
        u.upstream_model.clone(),
        u.api_format.as_str(),
        u.endpoint_api_format.map(|f| f.as_str()),
        u.is_stream,
        u.status.as_str(),
        u.status_code,
        u.error_type.clone(),
        u.error_message.clone(),
        u.tokens.input,
        u.tokens.output,
        u.tokens.cache_creation_5m,
        u.tokens.cache_creation_1h,
        u.tokens.cache_read,
        u.tokens.reasoning,
        c.input.nanos(),
        c.output.nanos(),
        c.cache_creation_5m.nanos(),
        c.cache_creation_1h.nanos(),
        c.cache_read.nanos(),
        c.per_request.nanos(),
        c.total.nanos(),
        c.actual_total.nanos(),
        c.multiplier.ppm(),
        oj(Some(&snap)),
        u.unpriced,
        u.latency_ms,
        u.ttfb_ms,
        u.client_ip.clone(),
        u.user_agent.clone(),
        u.created_at.millis(),
        u.updated_at.millis(),
    ]
}

const UPSERT_HEAD: &str = "INSERT INTO usage_records (id, client_request_id, user_id, api_key_id, provider_id, \
    endpoint_id, provider_key_id, global_model_id, requested_model, upstream_model, api_format, \
    endpoint_api_format, is_stream, status, status_code, error_type, error_message, input_tokens, \
    output_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens, \
    reasoning_tokens, input_cost, output_cost, cache_creation_5m_cost, cache_creation_1h_cost, \
    cache_read_cost, request_cost, total_cost, actual_total_cost, rate_multiplier_ppm, pricing, \
    unpriced, latency_ms, ttfb_ms, client_ip, user_agent, created_at, updated_at) VALUES ";
const UPSERT_COLS: usize = 40;
const UPSERT_TAIL: &str = " ON CONFLICT (id) DO UPDATE SET provider_id = excluded.provider_id, \
    endpoint_id = excluded.endpoint_id, provider_key_id = excluded.provider_key_id, \
    global_model_id = excluded.global_model_id, upstream_model = excluded.upstream_model, \
    endpoint_api_format = excluded.endpoint_api_format, status = excluded.status, \
    status_code = excluded.status_code, error_type = excluded.error_type, \
    error_message = excluded.error_message, input_tokens = excluded.input_tokens, \
    output_tokens = excluded.output_tokens, cache_creation_5m_tokens = excluded.cache_creation_5m_tokens, \
    cache_creation_1h_tokens = excluded.cache_creation_1h_tokens, \
    cache_read_tokens = excluded.cache_read_tokens, reasoning_tokens = excluded.reasoning_tokens, \
    input_cost = excluded.input_cost, output_cost = excluded.output_cost, \
    cache_creation_5m_cost = excluded.cache_creation_5m_cost, \
    cache_creation_1h_cost = excluded.cache_creation_1h_cost, cache_read_cost = excluded.cache_read_cost, \
    request_cost = excluded.request_cost, total_cost = excluded.total_cost, \
    actual_total_cost = excluded.actual_total_cost, rate_multiplier_ppm = excluded.rate_multiplier_ppm, \
    pricing = excluded.pricing, unpriced = excluded.unpriced, latency_ms = excluded.latency_ms, \
    ttfb_ms = excluded.ttfb_ms, updated_at = excluded.updated_at";

/// `n` placeholders for parameters `first..first + n`, comma-separated. SQLite gets anonymous
/// `?`: it resolves a numbered parameter by scanning the statement's parameter list, which makes
/// binding a statement with n numbered parameters O(n²).
fn placeholders(backend: Backend, first: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        match backend {
            Backend::Sqlite => s.push('?'),
            Backend::Postgres => {
                s.push('$');
                s.push_str(&(first + i).to_string());
            }
        }
    }
    s
}

/// `(…),(…)…` for `rows` rows of `cols` parameters each.
fn values(backend: Backend, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(backend, r * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `head VALUES (…),(…) tail` over `items` in chunks (bounded parameter counts).
async fn insert_many<E: Exec, T>(
    ex: &mut E,
    head: &'static str,
    tail: &'static str,
    cols: usize,
    chunk: usize,
    items: &[T],
    args: impl Fn(&T) -> Vec<Arg>,
) -> Result<()> {
    for part in items.chunks(chunk) {
        let sql = format!("{head}{}{tail}", values(ex.backend(), part.len(), cols));
        let a: Vec<Arg> = part.iter().flat_map(&args).collect();
        ex.execute(Cow::Owned(sql), a).await?;
    }
    Ok(())
}

const T_COLS: &str = "id, request_id, candidate_index, retry_index, provider_id, endpoint_id, provider_key_id, \
    status, skip_reason, status_code, error_type, error_message, latency_ms, concurrency, conversion, \
    started_at, finished_at";

fn trace_from_row(r: &Row) -> Result<AttemptTrace> {
    Ok(AttemptTrace {
        id: parse(r, "id")?,
        request_id: parse(r, "request_id")?,
        candidate_index: u32_(r, "candidate_index")?,
        retry_index: u32_(r, "retry_index")?,
        provider_id: opt_parse(r, "provider_id")?,
        endpoint_id: opt_parse(r, "endpoint_id")?,
        provider_key_id: opt_parse(r, "provider_key_id")?,
        status: parse(r, "status")?,
        skip_reason: r.opt_text("skip_reason")?,
        status_code: opt_u32(r, "status_code")?.and_then(|c| u16::try_from(c).ok()),
        error_type: r.opt_text("error_type")?,
        error_message: r.opt_text("error_message")?,
        latency_ms: r.opt_i64("latency_ms")?,
        concurrency: opt_u32(r, "concurrency")?,
        conversion: r.opt_text("conversion")?,
        started_at: ts(r, "started_at")?,
        finished_at: crate::sql::opt_ts(r, "finished_at")?,
    })
}

const TRACE_HEAD: &str = "INSERT INTO attempt_traces (id, request_id, candidate_index, retry_index, \
    provider_id, endpoint_id, provider_key_id, status, skip_reason, status_code, error_type, error_message, \
    latency_ms, concurrency, conversion, started_at, finished_at) VALUES ";
const TRACE_COLS: usize = 17;
const TRACE_TAIL: &str = " ON CONFLICT (id) DO UPDATE SET status = excluded.status, status_code = excluded.status_code, \
    error_type = excluded.error_type, error_message = excluded.error_message, \
    latency_ms = excluded.latency_ms, finished_at = excluded.finished_at";

fn trace_args(t: &AttemptTrace) -> Vec<Arg> {
    args![
        t.id.to_string(),
        t.request_id.to_string(),
        t.candidate_index,
        t.retry_index,
        t.provider_id.map(|x| x.to_string()),
        t.endpoint_id.map(|x| x.to_string()),
        t.provider_key_id.map(|x| x.to_string()),
        t.status.as_str(),
        t.skip_reason.clone(),
        t.status_code,
        t.error_type.clone(),
        t.error_message.clone(),
        t.latency_ms,
        t.concurrency,
        t.conversion.clone(),
        t.started_at.millis(),
        t.finished_at.map(Timestamp::millis),
    ]
}

/// Moves the money of finished requests, exactly once each: flips the records' `billed` flags
/// and charges only the requests whose flag flipped, summed per user, key, provider and model
/// (one statement per entity, not per request).
async fn apply_billings<E: Exec>(tx: &mut E, bills: &[Billing]) -> Result<usize> {
    let mut flipped: HashSet<String> = HashSet::new();
    for part in bills.chunks(500) {
        let sql = format!(
            // The status test is wrapped in CASE so no planner picks the status index (a scan
            // of every finished request) over the primary key.
            "UPDATE usage_records SET billed = TRUE WHERE id IN ({}) AND billed = FALSE \
             AND (CASE WHEN status IN ('completed', 'failed') THEN 1 ELSE 0 END) = 1 RETURNING id",
            placeholders(tx.backend(), 1, part.len())
        );
        let ids: Vec<Arg> = part
            .iter()
            .map(|b| Arg::from(b.request_id.to_string()))
            .collect();
        for row in tx.fetch_all(Cow::Owned(sql), ids).await? {
            flipped.insert(row.text("id")?);
        }
    }
    if flipped.is_empty() {
        return Ok(0);
    }
    let applied: Vec<&Billing> = bills
        .iter()
        .filter(|b| flipped.remove(&b.request_id.to_string()))
        .collect();
    // Keyed by period too, so each period's charges apply in ascending period order.
    let mut users: BTreeMap<(UserId, Option<Timestamp>), i64> = BTreeMap::new();
    let mut keys: BTreeMap<ApiKeyId, (i64, i64, i64)> = BTreeMap::new();
    let mut balances: BTreeMap<ApiKeyId, Vec<&Billing>> = BTreeMap::new();
    let mut providers: BTreeMap<(ProviderId, Option<Timestamp>), i64> = BTreeMap::new();
    let mut models: BTreeMap<GlobalModelId, i64> = BTreeMap::new();
    for b in &applied {
        let amount = b.charged.nanos();
        if let Some(u) = b.user_id.filter(|_| !b.standalone) {
            *users.entry((u, b.user_period_start)).or_default() += amount;
        }
        if let Some(k) = b.api_key_id {
            let e = keys.entry(k).or_default();
            e.0 += 1;
            e.1 += amount;
            e.2 = e.2.max(b.at.millis());
            if b.standalone && amount != 0 {
                balances.entry(k).or_default().push(b);
            }
        }
        if let Some(p) = b.provider_id.filter(|_| !b.actual.is_zero()) {
            *providers.entry((p, b.provider_period_start)).or_default() += b.actual.nanos();
        }
        if let Some(g) = b.global_model_id {
            *models.entry(g).or_default() += 1;
        }
    }
    for ((u, start), amount) in users {
        match start {
            None => {
                tx.execute(
                    "UPDATE users SET used_usd = used_usd + $2, total_usd = total_usd + $2 WHERE id = $1"
                        .into(),
                    args![u.to_string(), amount],
                )
                .await?
            }
            // The charge's period [$3, end) against the stored period start: an earlier stored
            // period (or none) restarts the count with this charge; a stored start inside the
            // period (a period boundary, or the creation/reset time) accumulates; a later one
            // means the charge arrived after a newer period began — lifetime spend only.
            Some(start) => {
                let end = |p: QuotaPeriod| p.next_period_start(start).map(Timestamp::millis);
                tx.execute(
                    "UPDATE users SET \
                     used_usd = CASE WHEN period_started_at IS NULL OR period_started_at < $3 THEN $2 \
                       WHEN period_started_at < (CASE WHEN quota_period = 'monthly' THEN $5 ELSE $4 END) \
                       THEN used_usd + $2 ELSE used_usd END, \
                     period_started_at = CASE WHEN period_started_at IS NULL OR period_started_at < $3 \
                       THEN $3 ELSE period_started_at END, \
                     total_usd = total_usd + $2 WHERE id = $1"
                        .into(),
                    args![
                        u.to_string(),
                        amount,
                        start.millis(),
                        end(QuotaPeriod::Daily),
                        end(QuotaPeriod::Monthly),
                    ],
                )
                .await?
            }
        };
    }
    for (k, (n, amount, at)) in keys {
        tx.execute(
            "UPDATE api_keys SET total_requests = total_requests + $2, total_cost_usd = total_cost_usd + $3, \
             last_used_at = $4 WHERE id = $1"
                .into(),
            args![k.to_string(), n, amount, at],
        )
        .await?;
    }
    for (k, charges) in balances {
        let total: i64 = charges.iter().map(|b| b.charged.nanos()).sum();
        let row = tx
            .fetch_optional(
                "UPDATE api_keys SET balance_usd = balance_usd - $2 WHERE id = $1 RETURNING balance_usd".into(),
                args![k.to_string(), total],
            )
            .await?;
        let Some(row) = row else { continue };
        // One ledger entry per request; each shows the balance right after its own charge.
        let mut after = row.i64("balance_usd")? + total;
        let entries: Vec<(LedgerId, i64, i64, &Billing)> = charges
            .iter()
            .map(|b| {
                after -= b.charged.nanos();
                (LedgerId::new(), -b.charged.nanos(), after, *b)
            })
            .collect();
        insert_many(
            tx,
            "INSERT INTO balance_ledger (id, api_key_id, kind, amount_usd, balance_after_usd, reason, request_id, \
             actor_id, created_at) VALUES ",
            "",
            9,
            200,
            &entries,
            |(id, amount, after, b)| {
                args![
                    id.to_string(),
                    k.to_string(),
                    "charge",
                    *amount,
                    *after,
                    None::<String>,
                    b.request_id.to_string(),
                    None::<String>,
                    b.at.millis(),
                ]
            },
        )
        .await?;
    }
    for ((p, start), amount) in providers {
        match start {
            None => {
                tx.execute(
                    "UPDATE providers SET quota_used_usd = quota_used_usd + $2 WHERE id = $1"
                        .into(),
                    args![p.to_string(), amount],
                )
                .await?
            }
            // As for users, with periods of `quota_period_days` days.
            Some(start) => {
                tx.execute(
                    "UPDATE providers SET \
                     quota_used_usd = CASE WHEN period_started_at IS NULL OR period_started_at < $3 THEN $2 \
                       WHEN period_started_at < $3 + quota_period_days * 86400000 \
                       THEN quota_used_usd + $2 ELSE quota_used_usd END, \
                     period_started_at = CASE WHEN period_started_at IS NULL OR period_started_at < $3 \
                       THEN $3 ELSE period_started_at END \
                     WHERE id = $1"
                        .into(),
                    args![p.to_string(), amount, start.millis()],
                )
                .await?
            }
        };
    }
    for (g, n) in models {
        tx.execute(
            "UPDATE global_models SET usage_count = usage_count + $2 WHERE id = $1".into(),
            args![g.to_string(), n],
        )
        .await?;
    }
    Ok(applied.len())
}

#[async_trait]
impl UsageRepo for SqlStore {
    async fn write_batch(&self, b: &UsageBatch) -> Result<usize> {
        if b.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        insert_many(
            &mut tx,
            UPSERT_HEAD,
            UPSERT_TAIL,
            UPSERT_COLS,
            40,
            &b.records,
            usage_args,
        )
        .await?;
        // A trace written twice in one statement would trip ON CONFLICT; keep the last.
        let mut seen = HashSet::new();
        let mut traces: Vec<&AttemptTrace> = b
            .traces
            .iter()
            .rev()
            .filter(|t| seen.insert(t.id))
            .collect();
        traces.reverse();
        insert_many(
            &mut tx,
            TRACE_HEAD,
            TRACE_TAIL,
            TRACE_COLS,
            100,
            &traces,
            |t| trace_args(t),
        )
        .await?;
        for (id, body) in &b.bodies {
            tx.execute(
                "INSERT INTO usage_bodies (request_id, request_headers, request_body, response_headers, \
                 response_body, created_at) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (request_id) DO UPDATE \
                 SET request_headers = excluded.request_headers, request_body = excluded.request_body, \
                 response_headers = excluded.response_headers, response_body = excluded.response_body, \
                 retention_state = 0"
                    .into(),
                args![
                    id.to_string(),
                    oj(body.request_headers.as_ref()),
                    body.request_body.clone(),
                    oj(body.response_headers.as_ref()),
                    body.response_body.clone(),
                    Timestamp::now().millis(),
                ],
            )
            .await?;
        }
        let applied = apply_billings(&mut tx, &b.billing).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn fail_stale_usage(&self, created_before: Timestamp) -> Result<u64> {
        self.db
            .clone()
            .execute(
                "UPDATE usage_records SET status = $1, error_type = $2, error_message = $3, \
                 updated_at = $4 WHERE status IN ($5, $6) AND created_at < $7"
                    .into(),
                args![
                    UsageStatus::Failed.as_str(),
                    "stale",
                    "the request never finished: its instance stopped or lost it",
                    Timestamp::now().millis(),
                    UsageStatus::Pending.as_str(),
                    UsageStatus::Streaming.as_str(),
                    created_before.millis(),
                ],
            )
            .await
    }

    async fn get_usage(&self, id: RequestId) -> Result<Option<UsageRecord>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), COLS, "usage_records", "id")
            .await?
            .first()
            .map(from_row)
            .transpose()
    }

    async fn list_usage(&self, uf: &UsageFilter, page: Page) -> Result<Paged<UsageRecord>> {
        let mut f = Filter::new();
        for (template, arg) in usage_conditions(uf) {
            f.cond(template, arg);
        }
        f.page(
            &mut self.db.clone(),
            COLS,
            "usage_records",
            "created_at DESC, id DESC",
            page,
            Count::Ahead,
        )
        .await?
        .decode(from_row)
    }

    async fn get_usage_bodies(&self, id: RequestId) -> Result<Option<UsageBodies>> {
        let row = self
            .db
            .clone()
            .fetch_optional(
                "SELECT request_headers, request_body, response_headers, response_body, retention_state FROM usage_bodies \
                 WHERE request_id = $1"
                    .into(),
                args![id.to_string()],
            )
            .await?;
        row.map(|r| {
            Ok(UsageBodies {
                request_headers: opt_json(&r, "request_headers")?,
                request_body: crate::retention::body_text(&r, "request_body")?,
                response_headers: opt_json(&r, "response_headers")?,
                response_body: crate::retention::body_text(&r, "response_body")?,
            })
        })
        .transpose()
    }

    async fn list_traces(&self, request: RequestId) -> Result<Vec<AttemptTrace>> {
        // The record is read first: the gateway queues a request's traces before its final
        // record, so traces committed with (or before) the record read here are visible to the
        // query below, and a one-step success is never synthesised for a request whose
        // traces are merely committing concurrently.
        let record = self.get_usage(request).await?;
        let mut f = Filter::new();
        f.cond("request_id = {}", request.to_string());
        let stored = f
            .all(
                &mut self.db.clone(),
                T_COLS,
                "attempt_traces",
                "candidate_index, retry_index, started_at",
            )
            .await?
            .iter()
            .map(trace_from_row)
            .collect::<Result<Vec<_>>>()?;
        if stored.is_empty()
            && let Some(r) = record
        {
            return Ok(synthesised_trace(&r).into_iter().collect());
        }
        Ok(stored)
    }

    async fn health_timeline(&self, q: &HealthQuery) -> Result<Vec<HealthBucket>> {
        let Some(grid) = Grid::new(q) else {
            return Ok(Vec::new());
        };
        let mut counts = vec![(0u64, 0u64); grid.len()];
        let mut db = self.db.clone();

        // Successes: completed requests an upstream key served (one per request: the
        // successful attempt is the record itself).
        let mut args = args![q.since.millis(), grid.width, q.until.millis()];
        let mut sql = String::from(
            "SELECT (created_at - $1) / $2 AS bucket_index, CAST(COUNT(*) AS BIGINT) AS n \
             FROM usage_records WHERE created_at >= $1 AND created_at < $3 \
             AND status = 'completed' AND provider_key_id IS NOT NULL",
        );
        push_cond(
            &mut sql,
            &mut args,
            "endpoint_api_format",
            q.api_format.map(ApiFormat::as_str),
        );
        push_cond(
            &mut sql,
            &mut args,
            "endpoint_id",
            q.endpoint_id.map(|x| x.to_string()),
        );
        push_cond(
            &mut sql,
            &mut args,
            "provider_key_id",
            q.provider_key_id.map(|x| x.to_string()),
        );
        sql.push_str(" GROUP BY bucket_index");
        for r in db.fetch_all(Cow::Owned(sql), args).await? {
            counts[grid.index(r.i64("bucket_index")?)].0 += count(&r)?;
        }

        // Failures: failed attempts, whatever the request's final outcome, except client
        // errors. `status = 'failed'` literally, so the partial index serves the range.
        let mut args = args![q.since.millis(), grid.width, q.until.millis()];
        let mut sql = format!(
            "SELECT (started_at - $1) / $2 AS bucket_index, CAST(COUNT(*) AS BIGINT) AS n \
             FROM attempt_traces WHERE status = 'failed' AND started_at >= $1 AND started_at < $3 \
             AND (error_type IS NULL OR error_type NOT IN ({CLIENT_ERROR_TYPES}))"
        );
        if let Some(f) = q.api_format {
            args.push(f.as_str().into());
            sql.push_str(&format!(
                " AND endpoint_id IN (SELECT id FROM endpoints WHERE api_format = ${})",
                args.len()
            ));
        }
        push_cond(
            &mut sql,
            &mut args,
            "endpoint_id",
            q.endpoint_id.map(|x| x.to_string()),
        );
        push_cond(
            &mut sql,
            &mut args,
            "provider_key_id",
            q.provider_key_id.map(|x| x.to_string()),
        );
        sql.push_str(" GROUP BY bucket_index");
        for r in db.fetch_all(Cow::Owned(sql), args).await? {
            counts[grid.index(r.i64("bucket_index")?)].1 += count(&r)?;
        }

        Ok(counts
            .into_iter()
            .enumerate()
            .map(|(i, (successes, failures))| {
                let (start, end) = grid.bounds(i);
                HealthBucket {
                    start,
                    end,
                    successes,
                    failures,
                    state: HealthState::of(successes, failures),
                }
            })
            .collect())
    }

    async fn usage_summary(&self, uf: &UsageFilter) -> Result<UsageSummary> {
        let (w, args) = usage_where(uf);
        let sql = format!(
            "SELECT {SUMS}, \
             CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS successes, \
             CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failures, \
             CAST(COALESCE(SUM(cache_creation_5m_tokens), 0) AS BIGINT) AS cache_5m, \
             CAST(COALESCE(SUM(cache_creation_1h_tokens), 0) AS BIGINT) AS cache_1h, \
             CAST(COALESCE(SUM(latency_ms), 0) AS BIGINT) AS latency_sum, \
             CAST(COUNT(latency_ms) AS BIGINT) AS latency_n, \
             CAST(COALESCE(SUM(ttfb_ms), 0) AS BIGINT) AS ttfb_sum, \
             CAST(COUNT(ttfb_ms) AS BIGINT) AS ttfb_n \
             FROM usage_records u{w}"
        );
        let Some(r) = self
            .db
            .clone()
            .fetch_optional(Cow::Owned(sql), args)
            .await?
        else {
            return Ok(UsageSummary::default());
        };
        let mean = |sum: &str, n: &str| -> Result<Option<i64>> {
            let n = r.i64(n)?;
            (n > 0)
                .then(|| r.i64(sum).map(|s| s.div_euclid(n)))
                .transpose()
        };
        Ok(UsageSummary {
            requests: tokens(&r, "requests")?,
            successes: tokens(&r, "successes")?,
            failures: tokens(&r, "failures")?,
            input_tokens: tokens(&r, "input_sum")?,
            output_tokens: tokens(&r, "output_sum")?,
            cache_creation_5m_tokens: tokens(&r, "cache_5m")?,
            cache_creation_1h_tokens: tokens(&r, "cache_1h")?,
            cache_read_tokens: tokens(&r, "cache_read_sum")?,
            cost: usd(&r, "cost_sum")?,
            actual_cost: usd(&r, "actual_sum")?,
            avg_latency_ms: mean("latency_sum", "latency_n")?,
            avg_ttfb_ms: mean("ttfb_sum", "ttfb_n")?,
        })
    }

    async fn usage_breakdown(
        &self,
        uf: &UsageFilter,
        by: UsageGroup,
    ) -> Result<Vec<UsageGroupRow>> {
        // The filter applies to the records alone (a derived table), so its unqualified
        // columns never meet the joined table's.
        let (key, label, join, order) = match by {
            UsageGroup::Model => (
                "COALESCE(g.name, u.requested_model)",
                "MAX(g.display_name)",
                " LEFT JOIN global_models g ON g.id = u.global_model_id",
                BY_COST,
            ),
            UsageGroup::Provider => (
                "COALESCE(u.provider_id, '')",
                "MAX(p.name)",
                " LEFT JOIN providers p ON p.id = u.provider_id",
                BY_COST,
            ),
            UsageGroup::Format => ("u.api_format", "CAST(NULL AS TEXT)", "", BY_COST),
            UsageGroup::User => (
                "COALESCE(u.user_id, '')",
                "MAX(us.username)",
                " LEFT JOIN users us ON us.id = u.user_id",
                BY_COST,
            ),
            UsageGroup::Day => (
                "u.created_at / 86400000",
                "CAST(NULL AS TEXT)",
                "",
                "group_key",
            ),
        };
        let (w, args) = usage_where(uf);
        let sql = format!(
            "SELECT {key} AS group_key, {label} AS group_label, {SUMS}, \
             CAST(COALESCE(SUM(u.cache_creation_5m_tokens + u.cache_creation_1h_tokens), 0) AS BIGINT) \
             AS cache_creation_sum \
             FROM (SELECT * FROM usage_records{w}) u{join} \
             GROUP BY group_key ORDER BY {order}"
        );
        let rows = self.db.clone().fetch_all(Cow::Owned(sql), args).await?;
        rows.iter()
            .map(|r| {
                let key = match by {
                    UsageGroup::Day => day_key(r.i64("group_key")?),
                    _ => r.text("group_key")?,
                };
                Ok(UsageGroupRow {
                    key,
                    label: r.opt_text("group_label")?,
                    requests: tokens(r, "requests")?,
                    input_tokens: tokens(r, "input_sum")?,
                    output_tokens: tokens(r, "output_sum")?,
                    cache_read_tokens: tokens(r, "cache_read_sum")?,
                    cache_creation_tokens: tokens(r, "cache_creation_sum")?,
                    cost: usd(r, "cost_sum")?,
                    actual_cost: usd(r, "actual_sum")?,
                })
            })
            .collect()
    }

    async fn usage_heatmap(&self, uf: &UsageFilter) -> Result<Vec<HeatCell>> {
        let (w, args) = usage_where(uf);
        // One expression, the hour of the week: 1970-01-01 was a Thursday, so hour 0 since
        // the epoch is hour 4 × 24 = 96 of a week starting on Sunday. PostgreSQL keeps
        // statistics on exactly this expression (migration 0007) and hashes its 168 groups.
        let sql = format!(
            "SELECT ((created_at / 3600000) + 96) % 168 AS hour_of_week, \
             CAST(COUNT(*) AS BIGINT) AS n \
             FROM usage_records{w} GROUP BY ((created_at / 3600000) + 96) % 168 ORDER BY hour_of_week"
        );
        let rows = self.db.clone().fetch_all(Cow::Owned(sql), args).await?;
        rows.iter()
            .map(|r| {
                let how = r.i64("hour_of_week")?.rem_euclid(168);
                Ok(HeatCell {
                    weekday: u8::try_from(how / 24).unwrap_or(0),
                    hour: u8::try_from(how % 24).unwrap_or(0),
                    requests: count(r)?,
                })
            })
            .collect()
    }
}

/// The conditions of a usage filter, as `Filter` templates (`{}` = the value's placeholder).
fn usage_conditions(uf: &UsageFilter) -> Vec<(&'static str, Arg)> {
    let mut c: Vec<(&'static str, Arg)> = Vec::new();
    if let Some(u) = uf.user_id {
        c.push(("user_id = {}", u.to_string().into()));
    }
    if let Some(k) = uf.api_key_id {
        c.push(("api_key_id = {}", k.to_string().into()));
    }
    if let Some(p) = uf.provider_id {
        c.push(("provider_id = {}", p.to_string().into()));
    }
    if let Some(k) = uf.provider_key_id {
        c.push(("provider_key_id = {}", k.to_string().into()));
    }
    if let Some(m) = uf.model.as_deref().filter(|m| !m.is_empty()) {
        c.push((
            "(requested_model = {} OR global_model_id IN \
             (SELECT id FROM global_models WHERE name = {} OR id = {}))",
            m.into(),
        ));
    }
    if let Some(f) = uf.api_format {
        c.push(("api_format = {}", f.as_str().into()));
    }
    if let Some(s) = uf.status.as_deref().filter(|s| !s.is_empty()) {
        c.push(("status = {}", s.into()));
    }
    if let Some(b) = uf.is_stream {
        c.push(("is_stream = {}", b.into()));
    }
    if let Some(t) = uf.since {
        c.push(("created_at >= {}", t.millis().into()));
    }
    if let Some(t) = uf.until {
        c.push(("created_at < {}", t.millis().into()));
    }
    c
}

/// ` WHERE …` (or nothing) and its arguments, numbered from `$1`.
fn usage_where(uf: &UsageFilter) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut clauses = Vec::new();
    for (template, arg) in usage_conditions(uf) {
        args.push(arg);
        clauses.push(template.replace("{}", &format!("${}", args.len())));
    }
    if clauses.is_empty() {
        (String::new(), args)
    } else {
        (format!(" WHERE {}", clauses.join(" AND ")), args)
    }
}

/// The sums every usage aggregate has, over the records aliased `u`.
const SUMS: &str = "CAST(COUNT(*) AS BIGINT) AS requests, \
    CAST(COALESCE(SUM(u.input_tokens), 0) AS BIGINT) AS input_sum, \
    CAST(COALESCE(SUM(u.output_tokens), 0) AS BIGINT) AS output_sum, \
    CAST(COALESCE(SUM(u.cache_read_tokens), 0) AS BIGINT) AS cache_read_sum, \
    CAST(COALESCE(SUM(u.total_cost), 0) AS BIGINT) AS cost_sum, \
    CAST(COALESCE(SUM(u.actual_total_cost), 0) AS BIGINT) AS actual_sum";

/// Most expensive first; ties by more requests, then by key.
const BY_COST: &str = "cost_sum DESC, requests DESC, group_key";

const DAY_MS: i64 = 86_400_000;

/// `YYYY-MM-DD` of a UTC day number (days since 1970-01-01).
fn day_key(day: i64) -> String {
    let date = Timestamp::from_millis(day.saturating_mul(DAY_MS))
        .to_datetime()
        .date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The buckets of a timeline: `n` buckets of `width` ms from `since`, the last one extended
/// to `until`.
struct Grid {
    since: i64,
    until: i64,
    width: i64,
    n: i64,
}

impl Grid {
    fn new(q: &HealthQuery) -> Option<Self> {
        let (since, until) = (q.since.millis(), q.until.millis());
        let span = until.checked_sub(since).filter(|s| *s > 0)?;
        // At least one millisecond per bucket.
        let n = i64::from(q.buckets.clamp(1, MAX_HEALTH_BUCKETS)).min(span);
        Some(Self {
            since,
            until,
            width: span / n,
            n,
        })
    }

    fn len(&self) -> usize {
        usize::try_from(self.n).unwrap_or(0)
    }

    /// The bucket of a raw index `(t - since) / width`: the remainder past the last full
    /// width belongs to the last bucket.
    fn index(&self, raw: i64) -> usize {
        usize::try_from(raw.clamp(0, self.n - 1)).unwrap_or(0)
    }

    fn bounds(&self, i: usize) -> (Timestamp, Timestamp) {
        let i = i64::try_from(i).unwrap_or(i64::MAX);
        let start = self.since + i * self.width;
        let end = if i + 1 >= self.n {
            self.until
        } else {
            start + self.width
        };
        (Timestamp::from_millis(start), Timestamp::from_millis(end))
    }
}

/// Appends `AND <col> = $n` when the filter is set.
fn push_cond(sql: &mut String, args: &mut Vec<Arg>, col: &'static str, v: Option<impl Into<Arg>>) {
    if let Some(v) = v {
        args.push(v.into());
        sql.push_str(&format!(" AND {col} = ${}", args.len()));
    }
}

fn count(r: &Row) -> Result<u64> {
    Ok(u64::try_from(r.i64("n")?).unwrap_or(0))
}
