//! `/api/admin/users/*`: accounts and their gateway keys (admin).

use aether_domain::entities::{ApiKey, Role, User};
use aether_domain::{ApiKeyId, UserId};
use aether_store::{ApiKeyFilter, UserFilter};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, List, P, Paging, Q};
use crate::auth::AdminUser;
use crate::service::keys::{CreatedKey, KeyPatch, NewKey};
use crate::service::users::{NewUser, UserPatch};
use crate::{Admin, ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(reset_quota))
        .routes(routes!(list_user_keys, create_user_key))
        .routes(routes!(update_user_key, delete_user_key))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Substring of email or username.
    pub search: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    pub skip: Option<u32>,
}

/// Accounts, newest first.
#[utoipa::path(get, path = "/api/admin/users", tag = "users", security(("bearer" = [])), params(UserQuery), responses((status = 200, body = List<User>)))]
async fn list_users(
    State(a): State<Admin>,
    _: AdminUser,
    Q(q): Q<UserQuery>,
) -> ApiResult<Json<List<User>>> {
    let f = UserFilter {
        search: q.search,
        role: q.role,
        is_active: q.is_active,
    };
    let page = Paging {
        limit: q.limit,
        offset: q.offset,
        skip: q.skip,
    }
    .page();
    Ok(Json(a.list_users(&f, page).await?.into()))
}

/// Create an account.
#[utoipa::path(post, path = "/api/admin/users", tag = "users", security(("bearer" = [])), request_body = NewUser,
    responses((status = 201, body = User), (status = 400), (status = 409, description = "email or username taken")))]
async fn create_user(
    State(a): State<Admin>,
    who: AdminUser,
    Body(n): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_user(&who.actor(), n).await?),
    ))
}

#[utoipa::path(get, path = "/api/admin/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path)), responses((status = 200, body = User), (status = 404)))]
async fn get_user(State(a): State<Admin>, _: AdminUser, P(id): P<UserId>) -> ApiResult<Json<User>> {
    Ok(Json(a.get_user(id).await?))
}

/// Change an account. Absent fields stay; `null` clears (e.g. `quota_usd: null` = unlimited).
/// Setting a password or deactivating ends the account's sessions.
#[utoipa::path(put, path = "/api/admin/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path)), request_body = UserPatch, responses((status = 200, body = User)))]
async fn update_user(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<UserId>,
    Body(p): Body<UserPatch>,
) -> ApiResult<Json<User>> {
    Ok(Json(a.update_user(&who.actor(), id, p).await?))
}

/// Delete an account and its keys (not yourself, not the last admin).
#[utoipa::path(delete, path = "/api/admin/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path)), responses((status = 204), (status = 409)))]
async fn delete_user(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<UserId>,
) -> ApiResult<StatusCode> {
    a.delete_user(&who.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reset the account's spend for the current quota period.
#[utoipa::path(patch, path = "/api/admin/users/{user_id}/quota", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path)), responses((status = 200, body = User)))]
async fn reset_quota(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<UserId>,
) -> ApiResult<Json<User>> {
    Ok(Json(a.reset_user_quota(&who.actor(), id).await?))
}

/// The account's gateway keys.
#[utoipa::path(get, path = "/api/admin/users/{user_id}/api-keys", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path), Paging), responses((status = 200, body = List<ApiKey>)))]
async fn list_user_keys(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<UserId>,
    Q(p): Q<Paging>,
) -> ApiResult<Json<List<ApiKey>>> {
    a.get_user(id).await?;
    let f = ApiKeyFilter {
        user_id: Some(id),
        ..Default::default()
    };
    Ok(Json(a.list_keys(&f, p.page()).await?.into()))
}

/// Create a gateway key for the account. The full key is in this response only.
#[utoipa::path(post, path = "/api/admin/users/{user_id}/api-keys", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path)), request_body = NewKey, responses((status = 201, body = CreatedKey)))]
async fn create_user_key(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<UserId>,
    Body(n): Body<NewKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_user_key(&who.actor(), id, n).await?),
    ))
}

async fn owned_key(a: &Admin, user: UserId, key: ApiKeyId) -> ApiResult<()> {
    if a.get_key(key).await?.user_id == Some(user) {
        Ok(())
    } else {
        Err(ApiError::NotFound("API key"))
    }
}

/// Change one of the account's keys (limits, allow-lists, expiry, active).
#[utoipa::path(put, path = "/api/admin/users/{user_id}/api-keys/{key_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path), ("key_id" = String, Path)), request_body = KeyPatch, responses((status = 200, body = ApiKey)))]
async fn update_user_key(
    State(a): State<Admin>,
    who: AdminUser,
    P((user, key)): P<(UserId, ApiKeyId)>,
    Body(p): Body<KeyPatch>,
) -> ApiResult<Json<ApiKey>> {
    owned_key(&a, user, key).await?;
    Ok(Json(a.update_key(&who.actor(), key, p).await?))
}

#[utoipa::path(delete, path = "/api/admin/users/{user_id}/api-keys/{key_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path), ("key_id" = String, Path)), responses((status = 204)))]
async fn delete_user_key(
    State(a): State<Admin>,
    who: AdminUser,
    P((user, key)): P<(UserId, ApiKeyId)>,
) -> ApiResult<StatusCode> {
    owned_key(&a, user, key).await?;
    a.delete_key(&who.actor(), key).await?;
    Ok(StatusCode::NO_CONTENT)
}
