//! `/api/users/me/*` and `/api/announcements` reads: what any signed-in user may do.

use std::collections::BTreeMap;

use aether_domain::entities::{Announcement, ApiKey, User};
use aether_domain::{AnnouncementId, ApiKeyId};
use aether_store::ApiKeyFilter;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, List, Message, P, Paging, Q};
use crate::auth::AuthUser;
use crate::service::keys::{CreatedKey, KeyPatch, NewKey};
use crate::service::users::ProfilePatch;
use crate::{Admin, ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(get_profile, update_profile))
        .routes(routes!(change_password))
        .routes(routes!(list_my_keys, create_my_key))
        .routes(routes!(get_my_key, update_my_key, delete_my_key))
        .routes(routes!(get_capabilities, put_capabilities))
        .routes(routes!(list_announcements))
        .routes(routes!(get_announcement))
}

/// My profile.
#[utoipa::path(get, path = "/api/users/me", tag = "me", security(("bearer" = [])), responses((status = 200, body = User)))]
async fn get_profile(who: AuthUser) -> Json<User> {
    Json(who.user)
}

/// Change my email or username.
#[utoipa::path(put, path = "/api/users/me", tag = "me", security(("bearer" = [])), request_body = ProfilePatch, responses((status = 200, body = User)))]
async fn update_profile(
    State(a): State<Admin>,
    who: AuthUser,
    Body(p): Body<ProfilePatch>,
) -> ApiResult<Json<User>> {
    Ok(Json(a.update_profile(&who.actor(), p).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChange {
    pub old_password: Option<String>,
    pub new_password: String,
}

/// Change my password. Every session of the account ends; sign in again.
#[utoipa::path(patch, path = "/api/users/me/password", tag = "me", security(("bearer" = [])), request_body = PasswordChange, responses((status = 200, body = Message)))]
async fn change_password(
    State(a): State<Admin>,
    who: AuthUser,
    Body(p): Body<PasswordChange>,
) -> ApiResult<Json<Message>> {
    a.change_password(&who.actor(), p.old_password.as_deref(), &p.new_password)
        .await?;
    Ok(Json(Message {
        message: "password changed; sign in again",
    }))
}

/// My gateway keys.
#[utoipa::path(get, path = "/api/users/me/api-keys", tag = "me", security(("bearer" = [])), params(Paging), responses((status = 200, body = List<ApiKey>)))]
async fn list_my_keys(
    State(a): State<Admin>,
    who: AuthUser,
    Q(p): Q<Paging>,
) -> ApiResult<Json<List<ApiKey>>> {
    let f = ApiKeyFilter {
        user_id: Some(who.user.id),
        ..Default::default()
    };
    Ok(Json(a.list_keys(&f, p.page()).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MyNewKey {
    pub name: String,
    #[serde(default)]
    pub expire_days: Option<u32>,
}

/// Create a gateway key. The full key is in this response only.
#[utoipa::path(post, path = "/api/users/me/api-keys", tag = "me", security(("bearer" = [])), request_body = MyNewKey, responses((status = 201, body = CreatedKey)))]
async fn create_my_key(
    State(a): State<Admin>,
    who: AuthUser,
    Body(n): Body<MyNewKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let key = a
        .create_user_key(
            &who.actor(),
            who.user.id,
            NewKey {
                name: n.name,
                expire_days: n.expire_days,
                ..Default::default()
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// One of my keys (never the full key).
#[utoipa::path(get, path = "/api/users/me/api-keys/{key_id}", tag = "me", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 200, body = ApiKey), (status = 404)))]
async fn get_my_key(
    State(a): State<Admin>,
    who: AuthUser,
    P(id): P<ApiKeyId>,
) -> ApiResult<Json<ApiKey>> {
    let k = a.get_key(id).await?;
    if k.user_id != Some(who.user.id) {
        return Err(ApiError::NotFound("API key"));
    }
    Ok(Json(k))
}

/// Rename, enable/disable, or set the expiry of one of my keys.
#[utoipa::path(patch, path = "/api/users/me/api-keys/{key_id}", tag = "me", security(("bearer" = [])),
    params(("key_id" = String, Path)), request_body = KeyPatch, responses((status = 200, body = ApiKey)))]
async fn update_my_key(
    State(a): State<Admin>,
    who: AuthUser,
    P(id): P<ApiKeyId>,
    Body(p): Body<KeyPatch>,
) -> ApiResult<Json<ApiKey>> {
    let mut actor = who.actor();
    // Users act as users on their own keys even when they are admins elsewhere.
    actor.role = aether_domain::entities::Role::User;
    Ok(Json(a.update_key(&actor, id, p).await?))
}

/// Delete one of my keys.
#[utoipa::path(delete, path = "/api/users/me/api-keys/{key_id}", tag = "me", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 204)))]
async fn delete_my_key(
    State(a): State<Admin>,
    who: AuthUser,
    P(id): P<ApiKeyId>,
) -> ApiResult<StatusCode> {
    let mut actor = who.actor();
    actor.role = aether_domain::entities::Role::User;
    a.delete_key(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// My per-model capability preferences (model name or glob → capabilities).
#[utoipa::path(get, path = "/api/users/me/model-capabilities", tag = "me", security(("bearer" = [])), responses((status = 200, body = BTreeMap<String, Vec<String>>)))]
async fn get_capabilities(who: AuthUser) -> Json<BTreeMap<String, Vec<String>>> {
    Json(who.user.model_capability_settings)
}

/// Replace my per-model capability preferences.
#[utoipa::path(put, path = "/api/users/me/model-capabilities", tag = "me", security(("bearer" = [])),
    request_body = BTreeMap<String, Vec<String>>, responses((status = 200, body = BTreeMap<String, Vec<String>>)))]
async fn put_capabilities(
    State(a): State<Admin>,
    who: AuthUser,
    Body(m): Body<BTreeMap<String, Vec<String>>>,
) -> ApiResult<Json<BTreeMap<String, Vec<String>>>> {
    Ok(Json(
        a.set_model_capabilities(&who.actor(), m)
            .await?
            .model_capability_settings,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnnouncementQuery {
    /// Admins only: include inactive and scheduled announcements.
    #[serde(default)]
    pub all: bool,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// Announcements visible now (pinned first).
#[utoipa::path(get, path = "/api/announcements", tag = "announcements", security(("bearer" = [])), params(AnnouncementQuery), responses((status = 200, body = List<Announcement>)))]
async fn list_announcements(
    State(a): State<Admin>,
    who: AuthUser,
    Q(q): Q<AnnouncementQuery>,
) -> ApiResult<Json<List<Announcement>>> {
    let page = aether_store::Page::new(q.limit.unwrap_or(50), q.offset.unwrap_or(0));
    Ok(Json(
        a.list_announcements(&who.actor(), q.all, page)
            .await?
            .into(),
    ))
}

/// One announcement.
#[utoipa::path(get, path = "/api/announcements/{id}", tag = "announcements", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Announcement), (status = 404)))]
async fn get_announcement(
    State(a): State<Admin>,
    who: AuthUser,
    P(id): P<AnnouncementId>,
) -> ApiResult<Json<Announcement>> {
    Ok(Json(a.get_announcement(&who.actor(), id).await?))
}
