//! `/api/admin/health/*` and `/api/admin/endpoints/keys/{id}/health|breaker`: upstream key
//! health, breaker reset and the health timeline (admin).

use aether_domain::ProviderKeyId;
use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{P, Q};
use crate::auth::AdminUser;
use crate::service::health::{KeyHealth, Timeline, TimelineQuery};
use crate::{Admin, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(key_health))
        .routes(routes!(reset_breaker))
        .routes(routes!(timeline))
}

/// An upstream key's circuit breaker, health score, learned concurrency limit (with its
/// history) and requests in flight.
#[utoipa::path(get, path = "/api/admin/endpoints/keys/{key_id}/health", tag = "health", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 200, body = KeyHealth), (status = 404)))]
async fn key_health(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<ProviderKeyId>,
) -> ApiResult<Json<KeyHealth>> {
    Ok(Json(a.key_health(id).await?))
}

/// Close an upstream key's circuit breaker and restore its health (audited).
#[utoipa::path(post, path = "/api/admin/endpoints/keys/{key_id}/breaker/reset", tag = "health", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 200, body = KeyHealth), (status = 404)))]
async fn reset_breaker(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderKeyId>,
) -> ApiResult<Json<KeyHealth>> {
    Ok(Json(a.reset_breaker(&who.actor(), id).await?))
}

/// Upstream attempt outcomes in 100 buckets over a look-back (1/6/12/24/48 h), per API
/// format, endpoint or key: `success`, `partial`, `failure` or `no_data`. Client errors (the
/// request's own fault) do not count.
#[utoipa::path(get, path = "/api/admin/health/timeline", tag = "health", security(("bearer" = [])),
    params(TimelineQuery), responses((status = 200, body = Timeline)))]
async fn timeline(
    State(a): State<Admin>,
    _: AdminUser,
    Q(q): Q<TimelineQuery>,
) -> ApiResult<Json<Timeline>> {
    Ok(Json(a.health_timeline(q).await?))
}
