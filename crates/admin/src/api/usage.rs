//! `/api/admin/usage/*` (every record, admin) and `/api/users/me/usage/*` (the caller's own):
//! usage records, one request in full (attempt trace, logged headers/bodies), totals,
//! breakdowns and the activity heatmap.

use aether_domain::RequestId;
use aether_domain::entities::{Role, UsageRecord};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{List, P, Paging, Q};
use crate::auth::{AdminUser, AuthUser};
use crate::service::usage::{
    UsageDetail, UsageGroupBy, UsageGroupTotals, UsageHeatCell, UsageQuery, UsageTotals,
};
use crate::{Actor, Admin, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(list_usage))
        .routes(routes!(usage_summary))
        .routes(routes!(usage_breakdown))
        .routes(routes!(usage_heatmap))
        .routes(routes!(usage_detail))
        .routes(routes!(list_my_usage))
        .routes(routes!(my_usage_summary))
        .routes(routes!(my_usage_detail))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BreakdownQuery {
    /// `model`, `provider`, `format`, `user` or `day`.
    #[param(inline)]
    pub by: UsageGroupBy,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DaysQuery {
    /// `true`: `since` is rounded down and `until` up to whole UTC days, and finished days are
    /// read from the daily rollups (today, and days the rollup job has not reached, from the
    /// records) — fast over months of records. Filters the rollups do not keep
    /// (`provider_key_id`, `is_stream`) fall back to the records. Default: the exact bounds,
    /// summed from the records.
    pub whole_days: Option<bool>,
}

/// Usage records, newest first.
#[utoipa::path(get, path = "/api/admin/usage", tag = "usage", security(("bearer" = [])),
    params(UsageQuery, Paging), responses((status = 200, body = List<UsageRecord>)))]
async fn list_usage(
    State(a): State<Admin>,
    who: AdminUser,
    Q(q): Q<UsageQuery>,
    Q(p): Q<Paging>,
) -> ApiResult<Json<List<UsageRecord>>> {
    Ok(Json(
        a.list_usage(&who.actor(), &q.into_filter(), p.page())
            .await?
            .into(),
    ))
}

/// Totals: requests, successes, failures, tokens, list and actual cost, mean latency and
/// TTFB, cache hit rate.
#[utoipa::path(get, path = "/api/admin/usage/summary", tag = "usage", security(("bearer" = [])),
    params(UsageQuery, DaysQuery), responses((status = 200, body = UsageTotals)))]
async fn usage_summary(
    State(a): State<Admin>,
    who: AdminUser,
    Q(q): Q<UsageQuery>,
    Q(d): Q<DaysQuery>,
) -> ApiResult<Json<UsageTotals>> {
    summary(&a, &who.actor(), q, &d).await
}

async fn summary(
    a: &Admin,
    actor: &Actor,
    q: UsageQuery,
    d: &DaysQuery,
) -> ApiResult<Json<UsageTotals>> {
    let f = q.into_filter();
    Ok(Json(if d.whole_days == Some(true) {
        a.usage_summary_by_days(actor, &f).await?
    } else {
        a.usage_summary(actor, &f).await?
    }))
}

/// Totals per model, provider, API format, user or UTC day: most expensive first (days
/// oldest first).
#[utoipa::path(get, path = "/api/admin/usage/breakdown", tag = "usage", security(("bearer" = [])),
    params(BreakdownQuery, UsageQuery, DaysQuery), responses((status = 200, body = Vec<UsageGroupTotals>)))]
async fn usage_breakdown(
    State(a): State<Admin>,
    who: AdminUser,
    Q(b): Q<BreakdownQuery>,
    Q(q): Q<UsageQuery>,
    Q(d): Q<DaysQuery>,
) -> ApiResult<Json<Vec<UsageGroupTotals>>> {
    let (actor, f) = (who.actor(), q.into_filter());
    Ok(Json(if d.whole_days == Some(true) {
        a.usage_breakdown_by_days(&actor, &f, b.by).await?
    } else {
        a.usage_breakdown(&actor, &f, b.by).await?
    }))
}

/// Requests per UTC weekday (0 = Sunday) and hour; empty cells are left out.
#[utoipa::path(get, path = "/api/admin/usage/heatmap", tag = "usage", security(("bearer" = [])),
    params(UsageQuery), responses((status = 200, body = Vec<UsageHeatCell>)))]
async fn usage_heatmap(
    State(a): State<Admin>,
    who: AdminUser,
    Q(q): Q<UsageQuery>,
) -> ApiResult<Json<Vec<UsageHeatCell>>> {
    Ok(Json(a.usage_heatmap(&who.actor(), &q.into_filter()).await?))
}

/// One request in full: the record, its attempt trace, and the logged headers and bodies
/// when they were stored.
#[utoipa::path(get, path = "/api/admin/usage/{request_id}", tag = "usage", security(("bearer" = [])),
    params(("request_id" = String, Path)), responses((status = 200, body = UsageDetail), (status = 404)))]
async fn usage_detail(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<RequestId>,
) -> ApiResult<Json<UsageDetail>> {
    Ok(Json(a.usage_detail(&who.actor(), id).await?))
}

/// The caller acting on their own records, whatever their role.
fn me(who: &AuthUser) -> Actor {
    let mut actor = who.actor();
    actor.role = Role::User;
    actor
}

/// My usage records, newest first (`user_id` is ignored: always mine).
#[utoipa::path(get, path = "/api/users/me/usage", tag = "usage", security(("bearer" = [])),
    params(UsageQuery, Paging), responses((status = 200, body = List<UsageRecord>)))]
async fn list_my_usage(
    State(a): State<Admin>,
    who: AuthUser,
    Q(q): Q<UsageQuery>,
    Q(p): Q<Paging>,
) -> ApiResult<Json<List<UsageRecord>>> {
    Ok(Json(
        a.list_usage(&me(&who), &q.into_filter(), p.page())
            .await?
            .into(),
    ))
}

/// Totals over my usage.
#[utoipa::path(get, path = "/api/users/me/usage/summary", tag = "usage", security(("bearer" = [])),
    params(UsageQuery, DaysQuery), responses((status = 200, body = UsageTotals)))]
async fn my_usage_summary(
    State(a): State<Admin>,
    who: AuthUser,
    Q(q): Q<UsageQuery>,
    Q(d): Q<DaysQuery>,
) -> ApiResult<Json<UsageTotals>> {
    summary(&a, &me(&who), q, &d).await
}

/// One of my requests in full; another account's request is not found.
#[utoipa::path(get, path = "/api/users/me/usage/{request_id}", tag = "usage", security(("bearer" = [])),
    params(("request_id" = String, Path)), responses((status = 200, body = UsageDetail), (status = 404)))]
async fn my_usage_detail(
    State(a): State<Admin>,
    who: AuthUser,
    P(id): P<RequestId>,
) -> ApiResult<Json<UsageDetail>> {
    Ok(Json(a.usage_detail(&me(&who), id).await?))
}
