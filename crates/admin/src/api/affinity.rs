//! `/api/admin/monitoring/cache/*`: cache affinity — the live bindings, clearing them, and
//! the hit/switch/new statistics per API format (admin).

use axum::Json;
use axum::extract::State;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Message, Q};
use crate::auth::AdminUser;
use crate::service::affinity::{AffinityEntry, AffinityStatsQuery, AffinityStatsView};
use crate::{Admin, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(list_affinities, clear_affinities))
        .routes(routes!(affinity_stats))
}

#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AffinityListQuery {
    /// At most this many bindings (1–10000, default 500), longest-lived first.
    pub limit: Option<usize>,
}

/// Live cache-affinity bindings: caller (gateway key, format, model, session) → upstream key,
/// with the time left.
#[utoipa::path(get, path = "/api/admin/monitoring/cache/affinities", tag = "cache", security(("bearer" = [])),
    params(AffinityListQuery), responses((status = 200, body = Vec<AffinityEntry>)))]
async fn list_affinities(
    State(a): State<Admin>,
    _: AdminUser,
    Q(q): Q<AffinityListQuery>,
) -> ApiResult<Json<Vec<AffinityEntry>>> {
    let limit = q.limit.unwrap_or(500).clamp(1, 10_000);
    Ok(Json(a.list_affinity(limit).await?))
}

/// Drop every binding (audited); each caller picks a key afresh on its next request.
#[utoipa::path(delete, path = "/api/admin/monitoring/cache/affinities", tag = "cache", security(("bearer" = [])),
    responses((status = 200, body = Message)))]
async fn clear_affinities(State(a): State<Admin>, who: AdminUser) -> ApiResult<Json<Message>> {
    a.clear_affinity(&who.actor()).await?;
    Ok(Json(Message {
        message: "cache affinity cleared",
    }))
}

/// What cache affinity did for served requests, per API format: `hits` (the bound key
/// served), `switches` (another key served; the binding moved), `new` (first binding) — since
/// counting began and over the last `minutes` in one-minute buckets.
#[utoipa::path(get, path = "/api/admin/monitoring/cache/stats", tag = "cache", security(("bearer" = [])),
    params(AffinityStatsQuery), responses((status = 200, body = AffinityStatsView), (status = 400)))]
async fn affinity_stats(
    State(a): State<Admin>,
    _: AdminUser,
    Q(q): Q<AffinityStatsQuery>,
) -> ApiResult<Json<AffinityStatsView>> {
    Ok(Json(a.affinity_stats(q.minutes).await?))
}
