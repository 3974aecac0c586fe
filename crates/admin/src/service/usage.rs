//! Usage, read side: the records (with their attempt trace and logged headers/bodies), totals,
//! breakdowns and the weekly activity heatmap — for the API, the console and the dashboard.
//! Every figure is aggregated by the store in SQL.
//!
//! Ownership: admins see every record; anyone else only the records of their own account
//! (the filter's `user_id` is forced to theirs, and another account's record is "not found").

use aether_domain::entities::{AttemptTrace, UsageBodies, UsageRecord, UsageStatus};
use aether_domain::{
    ApiFormat, ApiKeyId, ProviderId, ProviderKeyId, RequestId, Timestamp, Usd, UserId,
};
use aether_store::rollups::{Granularity, RollupQuery};
use aether_store::{HeatCell, Page, Paged, UsageFilter, UsageGroup, UsageGroupRow, UsageSummary};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Actor, Admin, ApiError, ApiResult};

/// Which usage records to show or aggregate; every parameter narrows.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Admins only; other callers always see their own records.
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
    pub provider_id: Option<ProviderId>,
    /// The upstream key that served the request.
    pub provider_key_id: Option<ProviderKeyId>,
    /// Exact: the requested model, or the name or id of a global model (which also finds the
    /// requests made under its aliases).
    pub model: Option<String>,
    /// The client-facing API format.
    pub api_format: Option<ApiFormat>,
    pub status: Option<UsageStatus>,
    pub is_stream: Option<bool>,
    /// From (inclusive), RFC 3339.
    pub since: Option<Timestamp>,
    /// To (exclusive), RFC 3339.
    pub until: Option<Timestamp>,
}

impl UsageQuery {
    #[must_use]
    pub fn into_filter(self) -> UsageFilter {
        UsageFilter {
            user_id: self.user_id,
            api_key_id: self.api_key_id,
            provider_id: self.provider_id,
            provider_key_id: self.provider_key_id,
            model: self.model.filter(|m| !m.is_empty()),
            api_format: self.api_format,
            status: self.status.map(|s| s.as_str().to_string()),
            is_stream: self.is_stream,
            since: self.since,
            until: self.until,
        }
    }
}

/// What a usage breakdown groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroupBy {
    /// The global model's name when the request resolved to one, else the requested model.
    Model,
    /// The provider's id (`""`: no provider served the request).
    Provider,
    /// The client-facing API format.
    Format,
    /// The user's id (`""`: standalone keys).
    User,
    /// The UTC day, `YYYY-MM-DD`.
    Day,
}

impl From<UsageGroupBy> for UsageGroup {
    fn from(g: UsageGroupBy) -> Self {
        match g {
            UsageGroupBy::Model => Self::Model,
            UsageGroupBy::Provider => Self::Provider,
            UsageGroupBy::Format => Self::Format,
            UsageGroupBy::User => Self::User,
            UsageGroupBy::Day => Self::Day,
        }
    }
}

/// One request in full: the record, its attempt trace, and the logged headers and bodies
/// when they were stored (log level, retention).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageDetail {
    pub record: UsageRecord,
    /// Attempts ordered by candidate, then retry.
    pub traces: Vec<AttemptTrace>,
    pub bodies: Option<UsageBodies>,
}

/// Totals over the selected records (the dashboard's figures).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageTotals {
    pub requests: u64,
    /// Completed requests.
    pub successes: u64,
    /// Failed requests (the rest are still in flight).
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_5m_tokens: u64,
    pub cache_creation_1h_tokens: u64,
    /// Cache writes of both lifetimes.
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    /// List cost: what the callers were charged.
    pub cost: Usd,
    /// Actual cost: what the upstreams cost.
    pub actual_cost: Usd,
    /// Mean latency in ms (rounded down) of the requests that have one.
    pub avg_latency_ms: Option<i64>,
    /// Mean time to first byte in ms (rounded down) of the requests that have one.
    pub avg_ttfb_ms: Option<i64>,
    /// `cache_read / (input + cache_read + cache writes)`, 0–1; 0 without prompt tokens.
    pub cache_hit_rate: f64,
}

impl From<UsageSummary> for UsageTotals {
    fn from(s: UsageSummary) -> Self {
        Self {
            requests: s.requests,
            successes: s.successes,
            failures: s.failures,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            cache_creation_5m_tokens: s.cache_creation_5m_tokens,
            cache_creation_1h_tokens: s.cache_creation_1h_tokens,
            cache_creation_tokens: s.cache_creation_tokens(),
            cache_read_tokens: s.cache_read_tokens,
            cost: s.cost,
            actual_cost: s.actual_cost,
            avg_latency_ms: s.avg_latency_ms,
            avg_ttfb_ms: s.avg_ttfb_ms,
            cache_hit_rate: s.cache_hit_rate(),
        }
    }
}

/// One group of a usage breakdown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageGroupTotals {
    /// The model name, provider id, API format, user id or day (`YYYY-MM-DD`, UTC); `""` for
    /// records without a provider or user.
    pub key: String,
    /// The provider's name, the username or the global model's display name, when known.
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

impl From<UsageGroupRow> for UsageGroupTotals {
    fn from(r: UsageGroupRow) -> Self {
        Self {
            key: r.key,
            label: r.label,
            requests: r.requests,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cache_read_tokens: r.cache_read_tokens,
            cache_creation_tokens: r.cache_creation_tokens,
            cost: r.cost,
            actual_cost: r.actual_cost,
        }
    }
}

/// Requests in one hour of the week (UTC).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct UsageHeatCell {
    /// 0 = Sunday … 6 = Saturday.
    pub weekday: u8,
    /// 0–23.
    pub hour: u8,
    pub requests: u64,
}

impl From<HeatCell> for UsageHeatCell {
    fn from(c: HeatCell) -> Self {
        Self {
            weekday: c.weekday,
            hour: c.hour,
            requests: c.requests,
        }
    }
}

/// The filter an actor may use: admins any; anyone else their own records only.
fn scoped(actor: &Actor, f: &UsageFilter) -> ApiResult<UsageFilter> {
    let mut f = f.clone();
    if !actor.is_admin() {
        f.user_id = Some(
            actor
                .user_id
                .ok_or_else(|| ApiError::Forbidden("usage belongs to an account".into()))?,
        );
    }
    Ok(f)
}

impl Admin {
    /// Usage records, newest first.
    pub async fn list_usage(
        &self,
        actor: &Actor,
        f: &UsageFilter,
        page: Page,
    ) -> ApiResult<Paged<UsageRecord>> {
        Ok(self.store().list_usage(&scoped(actor, f)?, page).await?)
    }

    /// One request with its attempt trace and, when stored, its headers and bodies. Another
    /// account's request is "not found" to a non-admin.
    pub async fn usage_detail(&self, actor: &Actor, id: RequestId) -> ApiResult<UsageDetail> {
        let record = self
            .store()
            .get_usage(id)
            .await?
            .ok_or(ApiError::NotFound("usage record"))?;
        if !actor.is_admin() && (actor.user_id.is_none() || record.user_id != actor.user_id) {
            return Err(ApiError::NotFound("usage record"));
        }
        let traces = self.store().list_traces(id).await?;
        let bodies = self.store().get_usage_bodies(id).await?;
        Ok(UsageDetail {
            record,
            traces,
            bodies,
        })
    }

    /// Totals over the selected records.
    pub async fn usage_summary(&self, actor: &Actor, f: &UsageFilter) -> ApiResult<UsageTotals> {
        Ok(self.store().usage_summary(&scoped(actor, f)?).await?.into())
    }

    /// The selected records grouped: most expensive first, days oldest first.
    pub async fn usage_breakdown(
        &self,
        actor: &Actor,
        f: &UsageFilter,
        by: UsageGroupBy,
    ) -> ApiResult<Vec<UsageGroupTotals>> {
        Ok(self
            .store()
            .usage_breakdown(&scoped(actor, f)?, by.into())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Requests per UTC weekday and hour (non-empty cells only).
    pub async fn usage_heatmap(
        &self,
        actor: &Actor,
        f: &UsageFilter,
    ) -> ApiResult<Vec<UsageHeatCell>> {
        Ok(self
            .store()
            .usage_heatmap(&scoped(actor, f)?)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}

/// Where the rollups end for a dashboard read at `now`: today, and every day the rollup job
/// has not reached yet (its watermark), come from the records; `None` = no rollups at all.
fn live_from(watermark: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
    let today = Granularity::Day.floor(now);
    watermark.map(|w| Granularity::Day.floor(w).min(today))
}

/// The rollup query of a filter over whole UTC days (`since` rounded down to its day, `until`
/// up; no `since` = nothing), or `None` when the filter narrows by something the rollups do
/// not keep (upstream key, streaming).
fn day_query(f: &UsageFilter, live: Option<Timestamp>, now: Timestamp) -> Option<RollupQuery> {
    if f.provider_key_id.is_some() || f.is_stream.is_some() {
        return None;
    }
    let since = f.since?;
    let until = f.until.unwrap_or_else(|| now.plus_secs(1));
    let mut q = RollupQuery::new(Granularity::Day, since, until);
    q.live_from = Some(live.unwrap_or(since));
    q.user_id = f.user_id;
    q.api_key_id = f.api_key_id;
    q.provider_id = f.provider_id;
    q.model.clone_from(&f.model);
    q.api_format = f.api_format;
    q.status.clone_from(&f.status);
    Some(q)
}

impl Admin {
    /// The query for the day-based dashboard reads, or the records' filter (widened to whole
    /// days) when the rollups cannot answer it.
    async fn by_days(
        &self,
        actor: &Actor,
        f: &UsageFilter,
    ) -> ApiResult<Result<RollupQuery, UsageFilter>> {
        let mut f = scoped(actor, f)?;
        let now = Timestamp::now();
        let live = live_from(self.store().rollup_watermark().await?, now);
        Ok(day_query(&f, live, now).ok_or_else(|| {
            f.since = f.since.map(|t| Granularity::Day.floor(t));
            f.until = f.until.map(|t| Granularity::Day.ceil(t));
            f
        }))
    }

    /// [`Admin::usage_summary`] over whole UTC days (`since` rounds down to its day's start),
    /// for the dashboards: finished days are read from the daily rollups, today (and any day
    /// the rollup job has not reached) from the records — current figures without summing
    /// every record of a month.
    pub async fn usage_summary_by_days(
        &self,
        actor: &Actor,
        f: &UsageFilter,
    ) -> ApiResult<UsageTotals> {
        Ok(match self.by_days(actor, f).await? {
            Ok(q) => self.store().rollup_summary(&q).await?,
            Err(f) => self.store().usage_summary(&f).await?,
        }
        .into())
    }

    /// [`Admin::usage_breakdown`] over whole UTC days, read as [`Admin::usage_summary_by_days`].
    pub async fn usage_breakdown_by_days(
        &self,
        actor: &Actor,
        f: &UsageFilter,
        by: UsageGroupBy,
    ) -> ApiResult<Vec<UsageGroupTotals>> {
        let rows = match self.by_days(actor, f).await? {
            Ok(q) => self.store().rollup_breakdown(&q, by.into()).await?,
            Err(f) => self.store().usage_breakdown(&f, by.into()).await?,
        };
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
