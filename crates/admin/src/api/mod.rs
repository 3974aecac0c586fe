//! The JSON management API under `/api`, and its OpenAPI document.
//!
//! Routes are declared with `utoipa_axum::routes!`, so the router and the document are built
//! from the same annotations and cannot drift apart. Deny by default: every route here needs
//! a valid access token except the explicit public ones (login, refresh, register); admin
//! routes take an [`AdminUser`](crate::auth::AdminUser) argument, which checks the role.

mod affinity;
mod auth;
mod health;
mod keys;
mod me;
mod models;
mod probe;
mod providers;
mod system;
mod usage;
mod users;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::routing::get;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::{Admin, ApiError};

/// A JSON body whose rejections are rendered as our 400s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

/// Query parameters whose rejections are rendered as our 400s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Q<T>(pub T);

/// Path parameters whose rejections are rendered as our 404s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct P<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                Self::bad_request("expected a JSON body (content-type: application/json)")
            }
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::NotFound("resource")
    }
}

/// A page of results.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Items matching the filter. For usage records and the audit log counting stops 1000
    /// items past the requested page: then `total_capped` is true and `total` is a lower bound.
    pub total: i64,
    pub total_capped: bool,
}

impl<T> From<aether_store::Paged<T>> for List<T> {
    fn from(p: aether_store::Paged<T>) -> Self {
        Self {
            items: p.items,
            total: p.total,
            total_capped: p.total_capped,
        }
    }
}

/// A plain confirmation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: &'static str,
}

/// Paging query parameters (`?limit=&offset=`; `skip` is accepted for the original's clients).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// 1–1000, default 100.
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    pub skip: Option<u32>,
}

impl Paging {
    #[must_use]
    pub fn page(&self) -> aether_store::Page {
        aether_store::Page::new(
            self.limit.unwrap_or(100),
            self.offset.or(self.skip).unwrap_or(0),
        )
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aether management API",
        description = "Users, keys, providers, models, settings and the audit log of an Aether gateway. \
            Authenticate with `POST /api/auth/login` and send the access token as `Authorization: Bearer`.",
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Sign in, refresh, sign out"),
        (name = "me", description = "The signed-in user's own profile and keys"),
        (name = "users", description = "Accounts (admin)"),
        (name = "api-keys", description = "Standalone keys and balances (admin)"),
        (name = "providers", description = "Providers, endpoints, upstream keys, provider models (admin)"),
        (name = "health", description = "Upstream key health: breakers, learned limits, the health timeline (admin)"),
        (name = "cache", description = "Cache affinity: live bindings, clearing, hit/switch statistics (admin)"),
        (name = "models", description = "Global models and pricing (admin)"),
        (name = "system", description = "Settings, configuration import/export, IP rules, audit log (admin)"),
        (name = "usage", description = "Usage records, totals, breakdowns and the activity heatmap (admin: all; /api/users/me: your own)"),
        (name = "announcements", description = "Announcements"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(me::routes())
        .merge(users::routes())
        .merge(keys::routes())
        .merge(providers::routes())
        .merge(probe::routes())
        .merge(models::routes())
        .merge(system::routes())
        .merge(health::routes())
        .merge(affinity::routes())
        .merge(usage::routes())
}

/// The management API router (`/api/...`) including `/api/openapi.json`.
pub fn router(admin: Admin) -> Router {
    let (router, doc) = routes().split_for_parts();
    let doc = std::sync::Arc::new(doc);
    router
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .with_state(admin)
}

/// The OpenAPI document (for tests and tooling).
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}
