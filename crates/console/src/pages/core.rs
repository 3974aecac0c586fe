//! Sign-in and sign-out, the dashboards, the user's keys and the provider list.
//!
//! Conventions for every page module: handlers call the management services directly (the
//! same ones the JSON API uses), render a template with `c.views.page(&viewer, name, nav,
//! ctx)`, return `viewer.finish(response)` (it carries refreshed session cookies), check the
//! anti-CSRF token first in every POST, and answer a post with a redirect (post/redirect/get)
//! or the same page with inline validation messages.

use aether_admin::ApiError;
use aether_admin::auth::CallerIp;
use aether_admin::service::keys::NewKey;
use aether_admin::service::providers::{NewProvider, ProviderPatch};
use aether_domain::ProviderId;
use aether_domain::entities::Role;
use aether_store::{ApiKeyFilter, Page, ProviderFilter};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::CookieJar;
use minijinja::context;
use serde::Deserialize;

use crate::Console;
use crate::session::{AdminViewer, Viewer, cleared, with_tokens};

pub const TEMPLATES: &[(&str, &str)] = &[
    ("login.html", include_str!("../../templates/login.html")),
    (
        "user/dashboard.html",
        include_str!("../../templates/user/dashboard.html"),
    ),
    (
        "user/keys.html",
        include_str!("../../templates/user/keys.html"),
    ),
    (
        "admin/dashboard.html",
        include_str!("../../templates/admin/dashboard.html"),
    ),
    (
        "admin/providers.html",
        include_str!("../../templates/admin/providers.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(user_dashboard))
        .route("/keys", get(user_keys).post(create_user_key))
        .route("/admin", get(admin_dashboard))
        .route(
            "/admin/providers",
            get(admin_providers).post(create_provider),
        )
        .route("/admin/providers/{id}/active", post(toggle_provider))
}

/// An error from the services, as a message for the page.
pub(super) fn message(e: &ApiError) -> String {
    match e {
        ApiError::Unauthenticated(m) => m.clone(),
        other => other.to_string(),
    }
}

pub(super) fn pages(total: i64) -> i64 {
    ((total + i64::from(PAGE_SIZE) - 1) / i64::from(PAGE_SIZE)).max(1)
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only local paths: never redirect off-site after login.
fn safe_next(next: Option<&str>, admin: bool) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => {
            n.to_string()
        }
        _ if admin => "/admin".to_string(),
        _ => "/".to_string(),
    }
}

async fn login_page(State(c): State<Console>, Query(q): Query<LoginQuery>) -> Response {
    c.views
        .render(
            "login.html",
            context! { next => q.next.unwrap_or_default() },
        )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(c): State<Console>,
    CallerIp(ip): CallerIp,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<LoginForm>,
) -> Response {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match c.admin.login(&f.email, &f.password, ip, ua).await {
        Ok(tokens) => {
            let admin = tokens.user.role == Role::Admin;
            let jar = with_tokens(jar, &tokens, c.admin.refresh_ttl_seconds());
            let next = safe_next(
                Some(&f.next).filter(|n| !n.is_empty()).map(String::as_str),
                admin,
            );
            (jar, Redirect::to(&next)).into_response()
        }
        Err(e) => {
            let status = match e {
                ApiError::Throttled(..) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            (
                status,
                c.views.render(
                    "login.html",
                    context! { next => f.next, email => f.email, error => message(&e) },
                ),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

async fn logout(
    State(c): State<Console>,
    v: Viewer,
    jar: CookieJar,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    if let Err(e) = c.admin.logout(&v.who).await {
        tracing::warn!(error = %e, "console logout");
    }
    (cleared(jar), Redirect::to("/login")).into_response()
}

// ---- user pages ----

/// The last 30 UTC days (today included) of a viewer's (or, for admins on /admin,
/// everyone's) usage: totals, daily charts of requests and cost, cost per model, and the
/// daily table. Finished days come from the daily rollups, today from the records.
async fn usage_overview(c: &Console, v: &Viewer) -> minijinja::Value {
    use aether_admin::service::usage::{UsageGroupBy, UsageQuery};
    let actor = v.who.actor();
    let today = aether_domain::Timestamp::now().millis() / 86_400_000;
    let f = UsageQuery {
        since: Some(aether_domain::Timestamp::from_millis(
            (today - 29) * 86_400_000,
        )),
        ..UsageQuery::default()
    }
    .into_filter();
    // Independent reads, run side by side.
    let (summary, days, models) = tokio::join!(
        c.admin.usage_summary_by_days(&actor, &f),
        c.admin
            .usage_breakdown_by_days(&actor, &f, UsageGroupBy::Day),
        c.admin
            .usage_breakdown_by_days(&actor, &f, UsageGroupBy::Model),
    );
    let (summary, days, models) = (
        summary.ok(),
        days.unwrap_or_default(),
        models.unwrap_or_default(),
    );
    // Every one of the 30 days on the chart's axis, quiet days included.
    let days: Vec<_> = (today - 29..=today)
        .map(|d| {
            let t = aether_domain::Timestamp::from_millis(d * 86_400_000).to_datetime();
            let key = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
            days.iter().find(|r| r.key == key).cloned().unwrap_or(
                aether_admin::service::usage::UsageGroupTotals {
                    key,
                    label: None,
                    requests: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    cache_read_tokens: 0,
                    cache_creation_tokens: 0,
                    cost: aether_domain::Usd::ZERO,
                    actual_cost: aether_domain::Usd::ZERO,
                },
            )
        })
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let requests_chart = super::usage::daily_svg(
        &days,
        "Requests per day",
        |r| r.requests as f64,
        |r| format!("{} requests", r.requests),
    );
    let cost_chart = super::usage::daily_svg(
        &days,
        "Cost per day",
        |r| r.cost.to_f64_lossy(),
        |r| format!("${}", r.cost),
    );
    context! {
        summary => summary, days => days, models => models,
        requests_chart => requests_chart, cost_chart => cost_chart,
    }
}

async fn user_dashboard(State(c): State<Console>, v: Viewer) -> Response {
    let user = v.who.user.clone();
    let keys = c
        .admin
        .list_keys(
            &ApiKeyFilter {
                user_id: Some(user.id),
                ..ApiKeyFilter::default()
            },
            Page::all(),
        )
        .await
        .map(|p| p.items.len())
        .unwrap_or(0);
    let usage = usage_overview(&c, &v).await;
    let html = c.views.page(
        &v,
        "user/dashboard.html",
        "dashboard",
        context! { user => user, keys => keys, usage => usage },
    );
    v.finish(html)
}

async fn user_keys(State(c): State<Console>, v: Viewer) -> Response {
    let html = keys_page(&c, &v, None, None).await;
    v.finish(html)
}

async fn keys_page(
    c: &Console,
    v: &Viewer,
    created: Option<String>,
    error: Option<String>,
) -> axum::response::Html<String> {
    let keys = c
        .admin
        .list_keys(
            &ApiKeyFilter {
                user_id: Some(v.who.user.id),
                ..ApiKeyFilter::default()
            },
            Page::all(),
        )
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    c.views.page(
        v,
        "user/keys.html",
        "keys",
        context! { keys => keys, created => created, error => error },
    )
}

#[derive(Deserialize)]
struct NewKeyForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

async fn create_user_key(
    State(c): State<Console>,
    v: Viewer,
    Form(f): Form<NewKeyForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let n: Result<NewKey, _> = serde_json::from_value(serde_json::json!({ "name": f.name }));
    let result = match n {
        Ok(n) => c
            .admin
            .create_user_key(&v.who.actor(), v.who.user.id, n)
            .await
            .map_err(|e| message(&e)),
        Err(e) => Err(e.to_string()),
    };
    // The full key is shown on this response only; it is never stored or shown again.
    let html = match result {
        Ok(k) => keys_page(&c, &v, Some(k.key), None).await,
        Err(e) => keys_page(&c, &v, None, Some(e)).await,
    };
    v.finish(html)
}

// ---- admin pages ----

async fn admin_dashboard(State(c): State<Console>, AdminViewer(v): AdminViewer) -> Response {
    let stats = c.admin.system_stats().await.ok();
    let usage = usage_overview(&c, &v).await;
    let html = c.views.page(
        &v,
        "admin/dashboard.html",
        "dashboard",
        context! { stats => stats, usage => usage },
    );
    v.finish(html)
}

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    pub search: Option<String>,
    pub page: Option<u32>,
}

pub(super) const PAGE_SIZE: u32 = 25;

pub(super) fn page_of(q: &ListQuery) -> (Page, u32) {
    let n = q.page.unwrap_or(1).max(1);
    (
        Page {
            limit: PAGE_SIZE,
            offset: (n - 1) * PAGE_SIZE,
        },
        n,
    )
}

async fn providers_page(
    c: &Console,
    v: &Viewer,
    q: &ListQuery,
    form_error: Option<(String, String)>,
    saved: Option<&str>,
) -> axum::response::Html<String> {
    let (page, n) = page_of(q);
    let providers = c
        .admin
        .list_providers(
            &ProviderFilter {
                search: q.search.clone().filter(|s| !s.is_empty()),
                ..ProviderFilter::default()
            },
            page,
        )
        .await;
    let (items, total) = providers.map_or((Vec::new(), 0), |p| (p.items, p.total));
    // Health chips, the priority dialog and flash messages (admin_providers.rs).
    let extra = super::admin_providers::list_extras(c, &items, saved).await;
    c.views.page(
        v,
        "admin/providers.html",
        "providers",
        context! {
            providers => items, total => total, page => n,
            pages => pages(total),
            search => q.search.clone().unwrap_or_default(),
            error_field => form_error.as_ref().map(|e| e.0.clone()),
            error => form_error.map(|e| e.1),
            ..extra
        },
    )
}

async fn admin_providers(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<ListQuery>,
    Query(flash): Query<super::admin_providers::ListFlash>,
) -> Response {
    let html = providers_page(&c, &v, &q, None, flash.saved.as_deref()).await;
    v.finish(html)
}

#[derive(Deserialize)]
struct NewProviderForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    billing_type: String,
    #[serde(default)]
    provider_priority: String,
}

async fn create_provider(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<NewProviderForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let priority = if f.provider_priority.trim().is_empty() {
        Ok(100)
    } else {
        f.provider_priority.trim().parse::<i32>().map_err(|_| {
            (
                "provider_priority".to_string(),
                "a whole number; lower is preferred".to_string(),
            )
        })
    };
    let result = match priority {
        Err(e) => Err(e),
        Ok(priority) => {
            let n = serde_json::json!({
                "name": f.name.trim(),
                "display_name": Some(f.display_name.trim()).filter(|d| !d.is_empty()),
                "billing_type": if f.billing_type.is_empty() { "pay_as_you_go" } else { f.billing_type.as_str() },
                "provider_priority": priority,
            });
            match serde_json::from_value::<NewProvider>(n) {
                Err(e) => Err(("billing_type".to_string(), e.to_string())),
                Ok(n) => c
                    .admin
                    .create_provider(&v.who.actor(), n)
                    .await
                    .map(|_| ())
                    .map_err(|e| match &e {
                        ApiError::Invalid { field, .. } => {
                            (field.unwrap_or_default().to_string(), message(&e))
                        }
                        _ => (String::new(), message(&e)),
                    }),
            }
        }
    };
    match result {
        Ok(()) => v.finish(Redirect::to("/admin/providers")),
        Err(err) => {
            let html = providers_page(&c, &v, &ListQuery::default(), Some(err), None).await;
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}

#[derive(Deserialize)]
struct ToggleForm {
    #[serde(default)]
    csrf: String,
    active: String,
}

async fn toggle_provider(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    Form(f): Form<ToggleForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let patch: ProviderPatch =
        match serde_json::from_value(serde_json::json!({ "is_active": f.active == "true" })) {
            Ok(p) => p,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
    match c.admin.update_provider(&v.who.actor(), id, patch).await {
        Ok(_) => v.finish(Redirect::to("/admin/providers")),
        Err(e) => {
            let html = c.views.error(&v, StatusCode::BAD_REQUEST, &message(&e));
            v.finish((StatusCode::BAD_REQUEST, html))
        }
    }
}
