//! `/api/auth/*`: sign in, refresh, sign out, who am I, self-registration.

use aether_domain::entities::{QuotaPeriod, Role, User};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, Message};
use crate::auth::{AuthUser, CallerIp, Tokens};
use crate::service::users::NewUser;
use crate::{Actor, Admin, ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(register))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// Email or username.
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    #[serde(default)]
    pub username: Option<String>,
    pub password: String,
}

/// Sign in. Failed attempts are limited per client IP (429 with `Retry-After`).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Tokens), (status = 401, description = "wrong credentials"), (status = 429, description = "too many failed attempts")))]
async fn login(
    State(a): State<Admin>,
    CallerIp(ip): CallerIp,
    headers: HeaderMap,
    Body(r): Body<LoginRequest>,
) -> ApiResult<Json<Tokens>> {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(300).collect());
    Ok(Json(a.login(&r.email, &r.password, ip, ua).await?))
}

/// Exchange a refresh token for new tokens. The refresh token rotates: the old one stops
/// working, and presenting it again ends the session.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = Tokens), (status = 401, description = "invalid, expired or reused token")))]
async fn refresh(
    State(a): State<Admin>,
    CallerIp(ip): CallerIp,
    Body(r): Body<RefreshRequest>,
) -> ApiResult<Json<Tokens>> {
    Ok(Json(a.refresh(&r.refresh_token, ip).await?))
}

/// Sign out: ends the session of the presented access token.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])), responses((status = 200, body = Message)))]
async fn logout(State(a): State<Admin>, who: AuthUser) -> ApiResult<Json<Message>> {
    a.logout(&who).await?;
    Ok(Json(Message {
        message: "signed out",
    }))
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])), responses((status = 200, body = User)))]
async fn me(who: AuthUser) -> Json<User> {
    Json(who.user)
}

/// Create an account, when the `registration_enabled` setting allows it.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = User), (status = 403, description = "registration is closed")))]
async fn register(
    State(a): State<Admin>,
    CallerIp(ip): CallerIp,
    Body(r): Body<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    if !a.settings().registration_enabled() {
        return Err(ApiError::Forbidden("registration is closed".into()));
    }
    let actor = Actor {
        user_id: None,
        email: Some(r.email.clone()),
        role: Role::User,
        ip: Some(ip),
    };
    let user = a
        .create_user(
            &actor,
            NewUser {
                email: r.email,
                username: r.username,
                password: r.password,
                role: Role::User,
                quota_usd: None,
                quota_period: QuotaPeriod::None,
                allowed_providers: None,
                allowed_api_formats: None,
                allowed_models: None,
                is_active: true,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}
