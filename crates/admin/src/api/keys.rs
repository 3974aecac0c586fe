//! `/api/admin/api-keys/*`: standalone keys with prepaid balances (admin).

use aether_domain::ApiKeyId;
use aether_domain::entities::{ApiKey, LedgerEntry};
use aether_store::ApiKeyFilter;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, List, P, Paging, Q};
use crate::auth::AdminUser;
use crate::service::keys::{BalanceAdjust, CreatedKey, KeyPatch, NewKey};
use crate::{Admin, ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(list_standalone, create_standalone))
        .routes(routes!(
            get_standalone,
            update_standalone,
            delete_standalone
        ))
        .routes(routes!(adjust_balance))
        .routes(routes!(ledger))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    pub search: Option<String>,
    pub is_active: Option<bool>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    pub skip: Option<u32>,
}

/// Standalone keys.
#[utoipa::path(get, path = "/api/admin/api-keys", tag = "api-keys", security(("bearer" = [])), params(KeyQuery), responses((status = 200, body = List<ApiKey>)))]
async fn list_standalone(
    State(a): State<Admin>,
    _: AdminUser,
    Q(q): Q<KeyQuery>,
) -> ApiResult<Json<List<ApiKey>>> {
    let f = ApiKeyFilter {
        standalone: Some(true),
        is_active: q.is_active,
        search: q.search,
        ..Default::default()
    };
    let page = Paging {
        limit: q.limit,
        offset: q.offset,
        skip: q.skip,
    }
    .page();
    Ok(Json(a.list_keys(&f, page).await?.into()))
}

/// Create a standalone key with an opening balance (`initial_balance_usd`, required).
#[utoipa::path(post, path = "/api/admin/api-keys", tag = "api-keys", security(("bearer" = [])), request_body = NewKey, responses((status = 201, body = CreatedKey)))]
async fn create_standalone(
    State(a): State<Admin>,
    who: AdminUser,
    Body(n): Body<NewKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_standalone_key(&who.actor(), n).await?),
    ))
}

async fn standalone(a: &Admin, id: ApiKeyId) -> ApiResult<ApiKey> {
    let k = a.get_key(id).await?;
    if k.is_standalone {
        Ok(k)
    } else {
        Err(ApiError::NotFound("standalone key"))
    }
}

#[utoipa::path(get, path = "/api/admin/api-keys/{key_id}", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 200, body = ApiKey), (status = 404)))]
async fn get_standalone(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<ApiKeyId>,
) -> ApiResult<Json<ApiKey>> {
    Ok(Json(standalone(&a, id).await?))
}

#[utoipa::path(put, path = "/api/admin/api-keys/{key_id}", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path)), request_body = KeyPatch, responses((status = 200, body = ApiKey)))]
async fn update_standalone(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ApiKeyId>,
    Body(p): Body<KeyPatch>,
) -> ApiResult<Json<ApiKey>> {
    standalone(&a, id).await?;
    Ok(Json(a.update_key(&who.actor(), id, p).await?))
}

#[utoipa::path(delete, path = "/api/admin/api-keys/{key_id}", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 204)))]
async fn delete_standalone(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ApiKeyId>,
) -> ApiResult<StatusCode> {
    standalone(&a, id).await?;
    a.delete_key(&who.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Top up, refund or adjust the balance; a deduction never takes it below zero (409).
#[utoipa::path(patch, path = "/api/admin/api-keys/{key_id}/balance", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path)), request_body = BalanceAdjust, responses((status = 200, body = LedgerEntry), (status = 409, description = "insufficient balance")))]
async fn adjust_balance(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ApiKeyId>,
    Body(b): Body<BalanceAdjust>,
) -> ApiResult<Json<LedgerEntry>> {
    Ok(Json(a.adjust_balance(&who.actor(), id, b).await?))
}

/// The balance ledger, newest first.
#[utoipa::path(get, path = "/api/admin/api-keys/{key_id}/ledger", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path), Paging), responses((status = 200, body = List<LedgerEntry>)))]
async fn ledger(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<ApiKeyId>,
    Q(p): Q<Paging>,
) -> ApiResult<Json<List<LedgerEntry>>> {
    Ok(Json(a.ledger(id, p.page()).await?.into()))
}
