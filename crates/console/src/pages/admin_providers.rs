//! A provider's page: its settings, endpoints, upstream keys (masked, with breaker, health and
//! concurrency) and models; forms to add an endpoint, a key and a model, and to reset a key's
//! breaker.

use aether_admin::ApiError;
use aether_admin::service::models::NewProviderModel;
use aether_admin::service::providers::{NewEndpoint, NewProviderKey};
use aether_domain::{EndpointId, ProviderId, ProviderKeyId};
use aether_store::{GlobalModelFilter, Page};
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::core::message;
use crate::Console;
use crate::session::{AdminViewer, Viewer};

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[(
    "admin/provider.html",
    include_str!("../../templates/admin/provider.html"),
)];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/providers/{id}", get(provider_page))
        .route("/admin/providers/{id}/endpoints", post(add_endpoint))
        .route("/admin/providers/{id}/models", post(add_model))
        .route("/admin/endpoints/{id}/keys", post(add_key))
        .route("/admin/keys/{id}/breaker-reset", post(reset_breaker))
}

/// Which form failed, on which field, and why (shown inline).
type FormError = (&'static str, String, String);

async fn render(
    c: &Console,
    v: &Viewer,
    id: ProviderId,
    error: Option<FormError>,
) -> Result<axum::response::Html<String>, Response> {
    let provider = match c.admin.get_provider(id).await {
        Ok(p) => p,
        Err(e) => {
            let html = c.views.error(v, StatusCode::NOT_FOUND, &message(&e));
            return Err((StatusCode::NOT_FOUND, html).into_response());
        }
    };
    let endpoints = c.admin.list_endpoints(id).await.unwrap_or_default();
    let mut eps = Vec::new();
    for e in endpoints {
        let mut keys = Vec::new();
        for k in c.admin.list_provider_keys(e.id).await.unwrap_or_default() {
            let health = c.admin.key_health(k.id).await.ok();
            keys.push(context! { key => k, health => health });
        }
        eps.push(context! { endpoint => e, keys => keys });
    }
    let models = c.admin.list_provider_models(id).await.unwrap_or_default();
    let globals = c
        .admin
        .list_global_models(&GlobalModelFilter::default(), Page::all())
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let names: std::collections::BTreeMap<String, String> = globals
        .iter()
        .map(|g| (g.model.id.to_string(), g.model.name.clone()))
        .collect();
    Ok(c.views.page(
        v,
        "admin/provider.html",
        "providers",
        context! {
            p => provider, endpoints => eps, models => models, globals => globals, names => names,
            formats => aether_domain::ApiFormat::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            form => error.as_ref().map(|e| e.0),
            error_field => error.as_ref().map(|e| e.1.clone()),
            error => error.map(|e| e.2),
        },
    ))
}

async fn provider_page(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
) -> Response {
    match render(&c, &v, id, None).await {
        Ok(html) => v.finish(html),
        Err(r) => v.finish(r),
    }
}

fn field_of(e: &ApiError) -> String {
    match e {
        ApiError::Invalid { field, .. } => field.unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// After a form: back to the provider page, or the page again with the inline error.
async fn answer(c: &Console, v: Viewer, id: ProviderId, result: Result<(), FormError>) -> Response {
    match result {
        Ok(()) => v.finish(Redirect::to(&format!("/admin/providers/{id}"))),
        Err(err) => match render(c, &v, id, Some(err)).await {
            Ok(html) => v.finish((StatusCode::UNPROCESSABLE_ENTITY, html)),
            Err(r) => v.finish(r),
        },
    }
}

/// Optional whole number from a form field.
fn opt_u32(s: &str, field: &'static str) -> Result<Option<u32>, (String, String)> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<u32>()
        .map(Some)
        .map_err(|_| (field.to_string(), "a whole number".to_string()))
}

#[derive(Deserialize)]
struct EndpointForm {
    #[serde(default)]
    csrf: String,
    api_format: String,
    base_url: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    max_concurrent: String,
}

async fn add_endpoint(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    Form(f): Form<EndpointForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = async {
        let timeout = opt_u32(&f.timeout, "timeout")?.unwrap_or(300);
        let max_concurrent = opt_u32(&f.max_concurrent, "max_concurrent")?;
        let n: NewEndpoint = serde_json::from_value(json!({
            "api_format": f.api_format, "base_url": f.base_url.trim(),
            "timeout": timeout, "max_concurrent": max_concurrent,
        }))
        .map_err(|e| ("api_format".to_string(), e.to_string()))?;
        c.admin
            .create_endpoint(&v.who.actor(), id, n)
            .await
            .map(|_| ())
            .map_err(|e| (field_of(&e), message(&e)))
    }
    .await
    .map_err(|(field, m)| ("endpoint", field, m));
    answer(&c, v, id, result).await
}

#[derive(Deserialize)]
struct KeyForm {
    #[serde(default)]
    csrf: String,
    provider_id: ProviderId,
    api_key: String,
    name: String,
    #[serde(default)]
    internal_priority: String,
    #[serde(default)]
    rate_multiplier: String,
    #[serde(default)]
    max_concurrent: String,
}

async fn add_key(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(endpoint): Path<EndpointId>,
    Form(f): Form<KeyForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = async {
        let priority = opt_u32(&f.internal_priority, "internal_priority")?.unwrap_or(50);
        let max_concurrent = opt_u32(&f.max_concurrent, "max_concurrent")?;
        let multiplier = if f.rate_multiplier.trim().is_empty() {
            "1".to_string()
        } else {
            f.rate_multiplier.trim().to_string()
        };
        let multiplier: aether_domain::Multiplier = multiplier.parse().map_err(|_| {
            (
                "rate_multiplier".to_string(),
                "a decimal factor such as 1 or 0.55".to_string(),
            )
        })?;
        let n: NewProviderKey = serde_json::from_value(json!({
            "api_key": f.api_key.trim(), "name": f.name.trim(),
            "internal_priority": priority, "rate_multiplier": multiplier,
            "max_concurrent": max_concurrent,
        }))
        .map_err(|e| ("api_key".to_string(), e.to_string()))?;
        c.admin
            .create_provider_key(&v.who.actor(), endpoint, n)
            .await
            .map(|_| ())
            .map_err(|e| (field_of(&e), message(&e)))
    }
    .await
    .map_err(|(field, m)| ("key", field, m));
    answer(&c, v, f.provider_id, result).await
}

#[derive(Deserialize)]
struct ModelForm {
    #[serde(default)]
    csrf: String,
    global_model_id: String,
    #[serde(default)]
    provider_model_name: String,
}

async fn add_model(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    Form(f): Form<ModelForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = async {
        let n: NewProviderModel = serde_json::from_value(json!({
            "global_model_id": f.global_model_id,
            "provider_model_name": Some(f.provider_model_name.trim()).filter(|s| !s.is_empty()),
        }))
        .map_err(|_| {
            (
                "global_model_id".to_string(),
                "choose a global model".to_string(),
            )
        })?;
        c.admin
            .create_provider_model(&v.who.actor(), id, n)
            .await
            .map(|_| ())
            .map_err(|e| (field_of(&e), message(&e)))
    }
    .await
    .map_err(|(field, m)| ("model", field, m));
    answer(&c, v, id, result).await
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    csrf: String,
    provider_id: ProviderId,
}

async fn reset_breaker(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(key): Path<ProviderKeyId>,
    Form(f): Form<ResetForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = c
        .admin
        .reset_breaker(&v.who.actor(), key)
        .await
        .map(|_| ())
        .map_err(|e| ("key", String::new(), message(&e)));
    answer(&c, v, f.provider_id, result).await
}
