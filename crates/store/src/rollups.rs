//! Hourly and daily usage rollups: `usage_records` summed per bucket and per combination of
//! the dimensions the dashboards filter and group by, so a month of figures reads a few
//! thousand rows instead of every request.
//!
//! A bucket is always recomputed whole — its rows deleted and inserted again from the source
//! in one transaction — never incremented, so a re-run over any range gives the same rows.
//! Hours are computed from `usage_records`, days from the hourly rows (UTC days). A record
//! can still change after its hour ends (it settles up to the request timeout later), so
//! [`RollupRepo::run_rollups`] redoes the hours that may still change on every run, plus the
//! hours after its watermark (`rollup_state.hours_done`), a bounded number per run.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

use aether_domain::{ApiFormat, ApiKeyId, ProviderId, Timestamp, UserId};
use async_trait::async_trait;

use crate::SqlStore;
use crate::args;
use crate::db::{Arg, Exec, Row};
use crate::error::Result;
use crate::sql::usd;
use crate::usage::{UsageGroup, UsageGroupRow, UsageSummary};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The width of a rollup bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    /// The bucket width in milliseconds.
    #[must_use]
    pub const fn millis(self) -> i64 {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
        }
    }

    /// The stored `period` value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The start of the bucket `t` falls in.
    #[must_use]
    pub const fn floor(self, t: Timestamp) -> Timestamp {
        Timestamp::from_millis(t.millis().div_euclid(self.millis()) * self.millis())
    }

    /// The start of the first bucket at or after `t`.
    #[must_use]
    pub const fn ceil(self, t: Timestamp) -> Timestamp {
        let w = self.millis();
        let f = t.millis().div_euclid(w) * w;
        Timestamp::from_millis(if f == t.millis() {
            f
        } else {
            f.saturating_add(w)
        })
    }
}

/// The figures of a rollup row, in this order in [`RollupRow::figures`]. All are sums over
/// the bucket's records (money in nano-USD); `*_count` count the records that have a
/// latency / time to first byte, so a mean is `*_sum / *_count`.
pub const ROLLUP_FIGURES: [&str; 21] = [
    "requests",
    "successes",
    "failures",
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
    "input_cost",
    "output_cost",
    "cache_creation_5m_cost",
    "cache_creation_1h_cost",
    "cache_read_cost",
    "request_cost",
    "total_cost",
    "actual_total_cost",
    "latency_sum",
    "latency_count",
    "ttfb_sum",
    "ttfb_count",
];

/// What one usage record contributes to each of [`ROLLUP_FIGURES`].
const RECORD_FIGURES: [&str; 21] = [
    "1",
    "CASE WHEN status = 'completed' THEN 1 ELSE 0 END",
    "CASE WHEN status = 'failed' THEN 1 ELSE 0 END",
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
    "input_cost",
    "output_cost",
    "cache_creation_5m_cost",
    "cache_creation_1h_cost",
    "cache_read_cost",
    "request_cost",
    "total_cost",
    "actual_total_cost",
    "COALESCE(latency_ms, 0)",
    "CASE WHEN latency_ms IS NULL THEN 0 ELSE 1 END",
    "COALESCE(ttfb_ms, 0)",
    "CASE WHEN ttfb_ms IS NULL THEN 0 ELSE 1 END",
];

/// The dimensions of a rollup row (after `period, bucket_start`).
const DIMS: [&str; 7] = [
    "user_id",
    "api_key_id",
    "provider_id",
    "global_model_id",
    "requested_model",
    "api_format",
    "status",
];

/// Each dimension read from a usage record: a missing one is `''`.
const RECORD_DIMS: [&str; 7] = [
    "COALESCE(user_id, '')",
    "COALESCE(api_key_id, '')",
    "COALESCE(provider_id, '')",
    "COALESCE(global_model_id, '')",
    "requested_model",
    "api_format",
    "status",
];

/// The `rollup_state` row holding the end of the hours rolled up so far.
const WATERMARK: &str = "hours_done";

/// One stored rollup row, as written (dimensions `''` when the records had none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub granularity: Granularity,
    pub bucket_start: Timestamp,
    pub user_id: String,
    pub api_key_id: String,
    pub provider_id: String,
    pub global_model_id: String,
    pub requested_model: String,
    pub api_format: String,
    pub status: String,
    /// In the order of [`ROLLUP_FIGURES`].
    pub figures: Vec<i64>,
}

/// What one [`RollupRepo::run_rollups`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupRun {
    /// The hours recomputed, `[from, to)`.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Hourly rows written.
    pub rows: u64,
    /// The watermark after the run: every hour before it has been rolled up.
    pub watermark: Timestamp,
    /// Whether hours before the current one are still waiting (the run hit its bound).
    pub behind: bool,
}

/// Which rolled-up usage a dashboard query covers; every dimension narrows (`None` = any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupQuery {
    /// The bucket width of the answer (series, `since`/`until` rounding).
    pub granularity: Granularity,
    /// Buckets from the one containing `since` …
    pub since: Timestamp,
    /// … up to (excluding) the first bucket at or after `until`.
    pub until: Timestamp,
    /// Buckets from the one containing this instant on are aggregated from `usage_records`
    /// directly rather than read from the rollups: the recent part the job has not (or not
    /// finally) rolled up. `None` = rollups only.
    pub live_from: Option<Timestamp>,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
    pub provider_id: Option<ProviderId>,
    /// Exact: the requested model, or the name or id of the global model the requests
    /// resolved to (as [`crate::UsageFilter::model`]).
    pub model: Option<String>,
    pub api_format: Option<ApiFormat>,
    /// `pending`, `streaming`, `completed` or `failed`.
    pub status: Option<String>,
}

impl RollupQuery {
    /// Every usage in the buckets covering `[since, until)`, from the rollups alone.
    #[must_use]
    pub fn new(granularity: Granularity, since: Timestamp, until: Timestamp) -> Self {
        Self {
            granularity,
            since,
            until,
            live_from: None,
            user_id: None,
            api_key_id: None,
            provider_id: None,
            model: None,
            api_format: None,
            status: None,
        }
    }
}

/// The figures of one bucket of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupPoint {
    pub start: Timestamp,
    pub totals: UsageSummary,
}

#[async_trait]
pub trait RollupRepo: Send + Sync {
    /// Recomputes every hourly bucket in `[from, to)` (widened to whole hours) from the usage
    /// records, in one transaction; returns the rows written. Re-running gives the same rows.
    async fn rollup_hours(&self, from: Timestamp, to: Timestamp) -> Result<u64>;
    /// Recomputes every daily bucket in `[from, to)` (widened to whole UTC days) from the
    /// hourly rollups, in one transaction; returns the rows written.
    async fn rollup_days(&self, from: Timestamp, to: Timestamp) -> Result<u64>;
    /// One run of the rollup job, in one transaction: recomputes the hours that ended less
    /// than `settle` before `now` (their records may still change) or that come after the
    /// watermark, up to the end of the current hour but at most `max_hours` hours (the oldest
    /// first), then the days those hours fall in, and advances the watermark. Without a
    /// watermark it starts at the first usage record.
    async fn run_rollups(
        &self,
        now: Timestamp,
        settle: Duration,
        max_hours: u32,
    ) -> Result<RollupRun>;
    /// The end of the hours rolled up so far (`None`: never run).
    async fn rollup_watermark(&self) -> Result<Option<Timestamp>>;
    /// The stored rows of the buckets in `[from, to)`, ordered by bucket then dimensions.
    async fn list_rollups(
        &self,
        granularity: Granularity,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RollupRow>>;
    /// Totals over the query's buckets.
    async fn rollup_summary(&self, q: &RollupQuery) -> Result<UsageSummary>;
    /// The totals of each non-empty bucket, oldest first.
    async fn rollup_series(&self, q: &RollupQuery) -> Result<Vec<RollupPoint>>;
    /// The query's usage grouped as [`crate::UsageRepo::usage_breakdown`] groups records:
    /// most expensive first, [`UsageGroup::Day`] oldest first.
    async fn rollup_breakdown(&self, q: &RollupQuery, by: UsageGroup)
    -> Result<Vec<UsageGroupRow>>;
}

/// `DELETE` then `INSERT … SELECT` of the hourly buckets in `[from, to)` (whole hours).
static HOURS_SQL: LazyLock<String> = LazyLock::new(|| {
    let sums: Vec<String> = RECORD_FIGURES
        .iter()
        .map(|e| format!("CAST(SUM({e}) AS BIGINT)"))
        .collect();
    let bucket = format!("(created_at / {HOUR_MS}) * {HOUR_MS}");
    format!(
        "INSERT INTO usage_rollups (period, bucket_start, {dims}, {figs}) \
         SELECT 'hour', {bucket}, {rdims}, {sums} FROM usage_records \
         WHERE created_at >= $1 AND created_at < $2 GROUP BY {bucket}, {rdims}",
        dims = DIMS.join(", "),
        figs = ROLLUP_FIGURES.join(", "),
        rdims = RECORD_DIMS.join(", "),
        sums = sums.join(", "),
    )
});

/// `INSERT … SELECT` of the daily buckets in `[from, to)` from the hourly rows.
static DAYS_SQL: LazyLock<String> = LazyLock::new(|| {
    let sums: Vec<String> = ROLLUP_FIGURES
        .iter()
        .map(|c| format!("CAST(SUM({c}) AS BIGINT)"))
        .collect();
    let bucket = format!("(bucket_start / {DAY_MS}) * {DAY_MS}");
    format!(
        "INSERT INTO usage_rollups (period, bucket_start, {dims}, {figs}) \
         SELECT 'day', {bucket}, {dims}, {sums} FROM usage_rollups \
         WHERE period = 'hour' AND bucket_start >= $1 AND bucket_start < $2 \
         GROUP BY {bucket}, {dims}",
        dims = DIMS.join(", "),
        figs = ROLLUP_FIGURES.join(", "),
        sums = sums.join(", "),
    )
});

/// `INSERT … SELECT` of the cluster-wide daily buckets (`period = 'day_all'`) in `[from, to)`
/// from the daily rows: the same sums without the user and key dimensions. Dashboards that
/// do not filter by user or key read these — with many keys a `day` row stands for few
/// requests, so reading `day` over a month would read nearly as many rows as the records.
static DAY_ALL_SQL: LazyLock<String> = LazyLock::new(|| {
    let sums: Vec<String> = ROLLUP_FIGURES
        .iter()
        .map(|c| format!("CAST(SUM({c}) AS BIGINT)"))
        .collect();
    let shared = &DIMS[2..];
    format!(
        "INSERT INTO usage_rollups (period, bucket_start, {dims}, {figs}) \
         SELECT 'day_all', bucket_start, '', '', {shared}, {sums} FROM usage_rollups \
         WHERE period = 'day' AND bucket_start >= $1 AND bucket_start < $2 \
         GROUP BY bucket_start, {shared}",
        dims = DIMS.join(", "),
        figs = ROLLUP_FIGURES.join(", "),
        shared = shared.join(", "),
        sums = sums.join(", "),
    )
});

/// Replaces the buckets of `g` in `[from, to)` (already aligned); returns the rows written
/// (days: the per-user/key rows; their `day_all` sums are replaced with them).
async fn replace<E: Exec>(ex: &mut E, g: Granularity, from: i64, to: i64) -> Result<u64> {
    if to <= from {
        return Ok(0);
    }
    let delete = match g {
        Granularity::Hour => {
            "DELETE FROM usage_rollups WHERE period = 'hour' AND bucket_start >= $1 AND bucket_start < $2"
        }
        Granularity::Day => {
            "DELETE FROM usage_rollups WHERE period = 'day' AND bucket_start >= $1 AND bucket_start < $2"
        }
    };
    ex.execute(delete.into(), args![from, to]).await?;
    let insert = match g {
        Granularity::Hour => HOURS_SQL.as_str(),
        Granularity::Day => DAYS_SQL.as_str(),
    };
    let rows = ex.execute(Cow::Borrowed(insert), args![from, to]).await?;
    if g == Granularity::Day {
        ex.execute(
            "DELETE FROM usage_rollups WHERE period = 'day_all' AND bucket_start >= $1 AND bucket_start < $2"
                .into(),
            args![from, to],
        )
        .await?;
        ex.execute(Cow::Borrowed(DAY_ALL_SQL.as_str()), args![from, to])
            .await?;
    }
    Ok(rows)
}

/// The hours `[from, to)` and then the days they fall in.
async fn hours_then_days<E: Exec>(ex: &mut E, from: Timestamp, to: Timestamp) -> Result<u64> {
    let (h0, h1) = (Granularity::Hour.floor(from), Granularity::Hour.ceil(to));
    let rows = replace(ex, Granularity::Hour, h0.millis(), h1.millis()).await?;
    let (d0, d1) = (Granularity::Day.floor(h0), Granularity::Day.ceil(h1));
    replace(ex, Granularity::Day, d0.millis(), d1.millis()).await?;
    Ok(rows)
}

/// The hours one run rolls up, `[from, to)`, given the watermark (`None`: the first record's
/// time, or nothing to do yet): the hours after the watermark whose records are final — those
/// that ended at least `settle` ago — at most `max_hours` of them. Each hour is thus rolled
/// up once, when it can no longer change; what is newer is read live from the records.
fn run_window(
    now: Timestamp,
    settle: Duration,
    max_hours: u32,
    watermark: Option<Timestamp>,
) -> (Timestamp, Timestamp) {
    let max_ms = i64::from(max_hours.max(1)).saturating_mul(HOUR_MS);
    let settled = settled_end(now, settle);
    let start = watermark.map_or(settled, |w| Granularity::Hour.floor(w).millis());
    let to = settled.min(start.saturating_add(max_ms)).max(start);
    (Timestamp::from_millis(start), Timestamp::from_millis(to))
}

/// The end of the last settled hour: hours before it ended at least `settle` ago.
fn settled_end(now: Timestamp, settle: Duration) -> i64 {
    let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
    Granularity::Hour
        .floor(Timestamp::from_millis(
            now.millis().saturating_sub(settle_ms),
        ))
        .millis()
}

/// Locks (PostgreSQL: the row, for the transaction) and reads the watermark, creating the
/// row if needed; negative = none yet. Concurrent runs thus take turns.
async fn lock_watermark<E: Exec>(ex: &mut E) -> Result<Option<Timestamp>> {
    let row = ex
        .fetch_optional(
            "INSERT INTO rollup_state (name, value) VALUES ($1, -1) \
             ON CONFLICT (name) DO UPDATE SET value = rollup_state.value RETURNING value"
                .into(),
            args![WATERMARK],
        )
        .await?;
    Ok(match row {
        Some(r) => Some(r.i64("value")?).filter(|v| *v >= 0),
        None => None,
    }
    .map(Timestamp::from_millis))
}

/// The first usage record's time, if any.
async fn first_record<E: Exec>(ex: &mut E) -> Result<Option<Timestamp>> {
    let row = ex
        .fetch_optional(
            "SELECT MIN(created_at) AS first FROM usage_records".into(),
            Vec::new(),
        )
        .await?;
    Ok(match row {
        Some(r) => r.opt_i64("first")?.map(Timestamp::from_millis),
        None => None,
    })
}

/// The query's rows as one derived table of `bucket_start`, dimensions and figures: rollup
/// rows before the live boundary, usage records (one row each) from it on — then narrowed
/// by the query's dimensions. Returns the SQL and its arguments (`$1…`).
fn source(q: &RollupQuery, per_user: bool) -> (String, Vec<Arg>) {
    let g = q.granularity;
    let since = g.floor(q.since).millis();
    let until = g.ceil(q.until).millis().max(since);
    let live = q
        .live_from
        .map_or(until, |t| g.floor(t).millis().clamp(since, until));
    let w = g.millis();
    let figs = ROLLUP_FIGURES.join(", ");
    let dims = DIMS.join(", ");
    let rec_dims: Vec<String> = RECORD_DIMS
        .iter()
        .zip(DIMS)
        .map(|(e, d)| format!("{e} AS {d}"))
        .collect();
    let rec_figs: Vec<String> = RECORD_FIGURES
        .iter()
        .zip(ROLLUP_FIGURES)
        .map(|(e, c)| format!("{e} AS {c}"))
        .collect();
    let mut args = args![since, live, until];
    let mut conds = Vec::new();
    let mut cond = |template: &str, v: Arg| {
        args.push(v);
        conds.push(template.replace("{}", &format!("${}", args.len())));
    };
    if let Some(u) = q.user_id {
        cond("user_id = {}", u.to_string().into());
    }
    if let Some(k) = q.api_key_id {
        cond("api_key_id = {}", k.to_string().into());
    }
    if let Some(p) = q.provider_id {
        cond("provider_id = {}", p.to_string().into());
    }
    if let Some(m) = q.model.as_deref().filter(|m| !m.is_empty()) {
        cond(
            "(requested_model = {} OR global_model_id IN \
             (SELECT id FROM global_models WHERE name = {} OR id = {}))",
            m.into(),
        );
    }
    if let Some(f) = q.api_format {
        cond("api_format = {}", f.as_str().into());
    }
    if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
        cond("status = {}", s.into());
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let sql = format!(
        "(SELECT * FROM (\
         SELECT bucket_start, {dims}, {figs} FROM usage_rollups \
         WHERE period = '{period}' AND bucket_start >= $1 AND bucket_start < $2 \
         UNION ALL \
         SELECT (created_at / {w}) * {w} AS bucket_start, {rec_dims}, {rec_figs} \
         FROM usage_records WHERE created_at >= $2 AND created_at < $3\
         ) r{filter})",
        // Days come from the cluster-wide sums unless users or keys matter to the answer.
        period = if g == Granularity::Day
            && !per_user
            && q.user_id.is_none()
            && q.api_key_id.is_none()
        {
            "day_all"
        } else {
            g.as_str()
        },
        rec_dims = rec_dims.join(", "),
        rec_figs = rec_figs.join(", "),
    );
    (sql, args)
}

/// The aggregates of a summary over the source aliased `u`.
const SUMMARY_SUMS: &str = "CAST(COALESCE(SUM(u.requests), 0) AS BIGINT) AS requests, \
    CAST(COALESCE(SUM(u.successes), 0) AS BIGINT) AS successes, \
    CAST(COALESCE(SUM(u.failures), 0) AS BIGINT) AS failures, \
    CAST(COALESCE(SUM(u.input_tokens), 0) AS BIGINT) AS input_sum, \
    CAST(COALESCE(SUM(u.output_tokens), 0) AS BIGINT) AS output_sum, \
    CAST(COALESCE(SUM(u.cache_creation_5m_tokens), 0) AS BIGINT) AS cache_5m, \
    CAST(COALESCE(SUM(u.cache_creation_1h_tokens), 0) AS BIGINT) AS cache_1h, \
    CAST(COALESCE(SUM(u.cache_read_tokens), 0) AS BIGINT) AS cache_read_sum, \
    CAST(COALESCE(SUM(u.total_cost), 0) AS BIGINT) AS cost_sum, \
    CAST(COALESCE(SUM(u.actual_total_cost), 0) AS BIGINT) AS actual_sum, \
    CAST(COALESCE(SUM(u.latency_sum), 0) AS BIGINT) AS latency_sum, \
    CAST(COALESCE(SUM(u.latency_count), 0) AS BIGINT) AS latency_n, \
    CAST(COALESCE(SUM(u.ttfb_sum), 0) AS BIGINT) AS ttfb_sum, \
    CAST(COALESCE(SUM(u.ttfb_count), 0) AS BIGINT) AS ttfb_n";

fn count(r: &Row, col: &str) -> Result<u64> {
    Ok(u64::try_from(r.i64(col)?).unwrap_or(0))
}

/// A [`UsageSummary`] from a row of [`SUMMARY_SUMS`].
fn summary(r: &Row) -> Result<UsageSummary> {
    let mean = |sum: &str, n: &str| -> Result<Option<i64>> {
        let n = r.i64(n)?;
        (n > 0)
            .then(|| r.i64(sum).map(|s| s.div_euclid(n)))
            .transpose()
    };
    Ok(UsageSummary {
        requests: count(r, "requests")?,
        successes: count(r, "successes")?,
        failures: count(r, "failures")?,
        input_tokens: count(r, "input_sum")?,
        output_tokens: count(r, "output_sum")?,
        cache_creation_5m_tokens: count(r, "cache_5m")?,
        cache_creation_1h_tokens: count(r, "cache_1h")?,
        cache_read_tokens: count(r, "cache_read_sum")?,
        cost: usd(r, "cost_sum")?,
        actual_cost: usd(r, "actual_sum")?,
        avg_latency_ms: mean("latency_sum", "latency_n")?,
        avg_ttfb_ms: mean("ttfb_sum", "ttfb_n")?,
    })
}

/// `YYYY-MM-DD` of a UTC day number (days since 1970-01-01), as usage breakdowns key days.
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

fn rollup_row(g: Granularity, r: &Row) -> Result<RollupRow> {
    Ok(RollupRow {
        granularity: g,
        bucket_start: Timestamp::from_millis(r.i64("bucket_start")?),
        user_id: r.text("user_id")?,
        api_key_id: r.text("api_key_id")?,
        provider_id: r.text("provider_id")?,
        global_model_id: r.text("global_model_id")?,
        requested_model: r.text("requested_model")?,
        api_format: r.text("api_format")?,
        status: r.text("status")?,
        figures: ROLLUP_FIGURES
            .iter()
            .map(|c| r.i64(c))
            .collect::<Result<_>>()?,
    })
}

#[async_trait]
impl RollupRepo for SqlStore {
    async fn rollup_hours(&self, from: Timestamp, to: Timestamp) -> Result<u64> {
        let (from, to) = (Granularity::Hour.floor(from), Granularity::Hour.ceil(to));
        let mut tx = self.db.begin().await?;
        // Taken in turn with the job (and other re-runs), which would otherwise collide on
        // the rows both insert.
        lock_watermark(&mut tx).await?;
        let n = replace(&mut tx, Granularity::Hour, from.millis(), to.millis()).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn rollup_days(&self, from: Timestamp, to: Timestamp) -> Result<u64> {
        let (from, to) = (Granularity::Day.floor(from), Granularity::Day.ceil(to));
        let mut tx = self.db.begin().await?;
        // Taken in turn with the job (and other re-runs), which would otherwise collide on
        // the rows both insert.
        lock_watermark(&mut tx).await?;
        let n = replace(&mut tx, Granularity::Day, from.millis(), to.millis()).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn run_rollups(
        &self,
        now: Timestamp,
        settle: Duration,
        max_hours: u32,
    ) -> Result<RollupRun> {
        let mut tx = self.db.begin().await?;
        let mut watermark = lock_watermark(&mut tx).await?;
        if watermark.is_none() {
            watermark = first_record(&mut tx).await?;
        }
        let (from, to) = run_window(now, settle, max_hours, watermark);
        let rows = hours_then_days(&mut tx, from, to).await?;
        let done = watermark.map_or(to, |w| w.max(to));
        tx.execute(
            "UPDATE rollup_state SET value = $2 WHERE name = $1".into(),
            args![WATERMARK, done.millis()],
        )
        .await?;
        tx.commit().await?;
        Ok(RollupRun {
            from,
            to,
            rows,
            watermark: done,
            behind: done.millis() < settled_end(now, settle),
        })
    }

    async fn rollup_watermark(&self) -> Result<Option<Timestamp>> {
        let row = self
            .db
            .clone()
            .fetch_optional(
                "SELECT value FROM rollup_state WHERE name = $1".into(),
                args![WATERMARK],
            )
            .await?;
        Ok(match row {
            Some(r) => Some(r.i64("value")?).filter(|v| *v >= 0),
            None => None,
        }
        .map(Timestamp::from_millis))
    }

    async fn list_rollups(
        &self,
        g: Granularity,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RollupRow>> {
        let sql = format!(
            "SELECT bucket_start, {dims}, {figs} FROM usage_rollups \
             WHERE period = $1 AND bucket_start >= $2 AND bucket_start < $3 \
             ORDER BY bucket_start, {dims}",
            dims = DIMS.join(", "),
            figs = ROLLUP_FIGURES.join(", "),
        );
        let rows = self
            .db
            .clone()
            .fetch_all(
                Cow::Owned(sql),
                args![g.as_str(), g.floor(from).millis(), g.ceil(to).millis()],
            )
            .await?;
        rows.iter().map(|r| rollup_row(g, r)).collect()
    }

    async fn rollup_summary(&self, q: &RollupQuery) -> Result<UsageSummary> {
        let (src, args) = source(q, false);
        let sql = format!("SELECT {SUMMARY_SUMS} FROM {src} u");
        match self
            .db
            .clone()
            .fetch_optional(Cow::Owned(sql), args)
            .await?
        {
            Some(r) => summary(&r),
            None => Ok(UsageSummary::default()),
        }
    }

    async fn rollup_series(&self, q: &RollupQuery) -> Result<Vec<RollupPoint>> {
        let (src, args) = source(q, false);
        let sql = format!(
            "SELECT u.bucket_start AS bucket_start, {SUMMARY_SUMS} FROM {src} u \
             GROUP BY u.bucket_start ORDER BY u.bucket_start"
        );
        let rows = self.db.clone().fetch_all(Cow::Owned(sql), args).await?;
        rows.iter()
            .map(|r| {
                Ok(RollupPoint {
                    start: Timestamp::from_millis(r.i64("bucket_start")?),
                    totals: summary(r)?,
                })
            })
            .collect()
    }

    async fn rollup_breakdown(
        &self,
        q: &RollupQuery,
        by: UsageGroup,
    ) -> Result<Vec<UsageGroupRow>> {
        const BY_COST: &str = "cost_sum DESC, requests DESC, group_key";
        let (key, label, join, order) = match by {
            UsageGroup::Model => (
                "COALESCE(g.name, u.requested_model)",
                "MAX(g.display_name)",
                " LEFT JOIN global_models g ON g.id = u.global_model_id",
                BY_COST,
            ),
            UsageGroup::Provider => (
                "u.provider_id",
                "MAX(p.name)",
                " LEFT JOIN providers p ON p.id = u.provider_id",
                BY_COST,
            ),
            UsageGroup::Format => ("u.api_format", "CAST(NULL AS TEXT)", "", BY_COST),
            UsageGroup::User => (
                "u.user_id",
                "MAX(us.username)",
                " LEFT JOIN users us ON us.id = u.user_id",
                BY_COST,
            ),
            UsageGroup::Day => (
                "u.bucket_start / 86400000",
                "CAST(NULL AS TEXT)",
                "",
                "group_key",
            ),
        };
        let (src, args) = source(q, by == UsageGroup::User);
        let sql = format!(
            "SELECT {key} AS group_key, {label} AS group_label, \
             CAST(COALESCE(SUM(u.requests), 0) AS BIGINT) AS requests, \
             CAST(COALESCE(SUM(u.input_tokens), 0) AS BIGINT) AS input_sum, \
             CAST(COALESCE(SUM(u.output_tokens), 0) AS BIGINT) AS output_sum, \
             CAST(COALESCE(SUM(u.cache_read_tokens), 0) AS BIGINT) AS cache_read_sum, \
             CAST(COALESCE(SUM(u.cache_creation_5m_tokens + u.cache_creation_1h_tokens), 0) AS BIGINT) \
             AS cache_creation_sum, \
             CAST(COALESCE(SUM(u.total_cost), 0) AS BIGINT) AS cost_sum, \
             CAST(COALESCE(SUM(u.actual_total_cost), 0) AS BIGINT) AS actual_sum \
             FROM {src} u{join} GROUP BY group_key ORDER BY {order}"
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
                    requests: count(r, "requests")?,
                    input_tokens: count(r, "input_sum")?,
                    output_tokens: count(r, "output_sum")?,
                    cache_read_tokens: count(r, "cache_read_sum")?,
                    cache_creation_tokens: count(r, "cache_creation_sum")?,
                    cost: usd(r, "cost_sum")?,
                    actual_cost: usd(r, "actual_sum")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;

    fn at(h: i64, extra_ms: i64) -> Timestamp {
        Timestamp::from_millis(1_000 * DAY_MS + h * H + extra_ms)
    }

    #[test]
    fn buckets_round_to_whole_hours_and_days() {
        assert_eq!(Granularity::Hour.floor(at(3, 5)), at(3, 0));
        assert_eq!(Granularity::Hour.ceil(at(3, 5)), at(4, 0));
        assert_eq!(Granularity::Hour.ceil(at(3, 0)), at(3, 0));
        assert_eq!(Granularity::Day.floor(at(23, 1)), at(0, 0));
        assert_eq!(Granularity::Day.ceil(at(0, 1)), at(24, 0));
    }

    #[test]
    fn a_caught_up_run_does_only_the_hours_that_have_settled() {
        let now = at(10, 30 * 60_000);
        let settle = Duration::from_secs(3600 + 600);
        // 70 minutes before 10:30 is 9:20: hour 8 (ended 9:00) has settled, hour 9 has not.
        let (from, to) = run_window(now, settle, 48, Some(at(8, 0)));
        assert_eq!((from, to), (at(8, 0), at(9, 0)));
        // Nothing new has settled: an empty window, the watermark stays.
        let (from, to) = run_window(now, settle, 48, Some(at(9, 0)));
        assert_eq!((from, to), (at(9, 0), at(9, 0)));
    }

    #[test]
    fn a_run_behind_catches_up_at_most_max_hours_from_the_watermark() {
        let now = at(100, 0);
        let (from, to) = run_window(now, Duration::from_secs(600), 48, Some(at(2, 0)));
        assert_eq!((from, to), (at(2, 0), at(50, 0)));
        let (from, to) = run_window(now, Duration::from_secs(600), 48, Some(at(50, 0)));
        assert_eq!((from, to), (at(50, 0), at(98, 0)));
        let (from, to) = run_window(now, Duration::from_secs(600), 48, Some(at(98, 0)));
        assert_eq!((from, to), (at(98, 0), at(99, 0)));
    }

    #[test]
    fn a_watermark_ahead_of_the_settled_hours_is_left_alone() {
        let now = at(100, 0);
        let (from, to) = run_window(now, Duration::from_secs(1000 * 3600), 4, Some(at(101, 0)));
        assert_eq!((from, to), (at(101, 0), at(101, 0)));
    }

    #[test]
    fn a_first_run_on_an_empty_database_does_nothing_yet() {
        let now = at(5, 1);
        let (from, to) = run_window(now, Duration::from_secs(600), 48, None);
        assert_eq!((from, to), (at(4, 0), at(4, 0)));
    }
}
