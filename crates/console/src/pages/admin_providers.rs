//! A provider's page: its settings (with an edit form), endpoints, upstream keys (masked,
//! with breaker, health and concurrency) and models; forms to add an endpoint, a key and a
//! model, and to reset a key's breaker.

use aether_admin::ApiError;
use aether_admin::service::models::NewProviderModel;
use aether_admin::service::providers::{NewEndpoint, NewProviderKey, ProviderPatch};
use aether_domain::entities::BillingType;
use aether_domain::{EndpointId, ProviderId, ProviderKeyId, Usd};
use aether_store::{GlobalModelFilter, Page};
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::{Deserialize, Serialize};
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
        .route(
            "/admin/providers/{id}",
            get(provider_page).post(update_settings),
        )
        .route("/admin/providers/{id}/endpoints", post(add_endpoint))
        .route("/admin/providers/{id}/models", post(add_model))
        .route("/admin/endpoints/{id}/keys", post(add_key))
        .route("/admin/keys/{id}/breaker-reset", post(reset_breaker))
}

/// Billing types as the settings form offers them: (value, label).
const BILLING: [(&str, &str); 3] = [
    ("pay_as_you_go", "pay as you go"),
    ("monthly_quota", "period quota"),
    ("free_tier", "free tier"),
];

/// A form that failed: which one, the field at fault, why, and what was typed (secrets
/// left out) so the form shows it again.
struct Failure {
    form: &'static str,
    field: String,
    message: String,
    typed: minijinja::Value,
}

/// The field at fault and why.
type FieldError = (String, String);

fn fail(form: &'static str, typed: &impl Serialize, (field, message): FieldError) -> Failure {
    Failure {
        form,
        field,
        message,
        typed: minijinja::Value::from_serialize(typed),
    }
}

async fn render(
    c: &Console,
    v: &Viewer,
    id: ProviderId,
    failure: Option<Failure>,
) -> Result<Html<String>, Response> {
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
            // No live state yet (or any error): the page shows "—".
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
    let (form, error_field, error, typed) = match failure {
        Some(f) => (Some(f.form), Some(f.field), Some(f.message), Some(f.typed)),
        None => (None, None, None, None),
    };
    Ok(c.views.page(
        v,
        "admin/provider.html",
        "providers",
        context! {
            p => provider, endpoints => eps, models => models, globals => globals, names => names,
            formats => aether_domain::ApiFormat::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            billing => BILLING.iter().map(|(v, l)| context! { value => v, label => l }).collect::<Vec<_>>(),
            form => form, error_field => error_field, error => error, typed => typed,
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

fn service_error(e: &ApiError) -> FieldError {
    match e {
        ApiError::Invalid { field, .. } => (field.unwrap_or_default().to_string(), message(e)),
        _ => (String::new(), message(e)),
    }
}

/// After a form: back to the provider page, or the page again with the inline error.
async fn answer(c: &Console, v: Viewer, id: ProviderId, result: Result<(), Failure>) -> Response {
    match result {
        Ok(()) => v.finish(Redirect::to(&format!("/admin/providers/{id}"))),
        Err(failure) => match render(c, &v, id, Some(failure)).await {
            Ok(html) => v.finish((StatusCode::UNPROCESSABLE_ENTITY, html)),
            Err(r) => v.finish(r),
        },
    }
}

/// Optional whole number from a form field.
fn opt_u32(s: &str, field: &'static str) -> Result<Option<u32>, FieldError> {
    let t = s.trim().replace([',', '_'], "");
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<u32>()
        .map(Some)
        .map_err(|_| (field.to_string(), "a whole number".to_string()))
}

/// Optional amount of USD from a form field.
fn opt_usd(s: &str, field: &'static str) -> Result<Option<Usd>, FieldError> {
    let t = s.trim().trim_start_matches('$').trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<Usd>().map(Some).map_err(|_| {
        (
            field.to_string(),
            format!("“{t}” is not an amount: a decimal number of USD such as 50 or 12.5"),
        )
    })
}

#[derive(Deserialize, Serialize)]
struct SettingsForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    provider_priority: String,
    #[serde(default)]
    billing_type: String,
    #[serde(default)]
    quota_usd: String,
    #[serde(default)]
    quota_period_days: String,
    #[serde(default)]
    rpm_limit: String,
    /// A checkbox: present when checked.
    #[serde(default)]
    is_active: Option<String>,
}

async fn update_settings(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    Form(f): Form<SettingsForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = async {
        let priority = f.provider_priority.trim();
        let provider_priority = if priority.is_empty() {
            None
        } else {
            Some(priority.parse::<i32>().map_err(|_| {
                (
                    "provider_priority".to_string(),
                    "a whole number; lower is preferred".to_string(),
                )
            })?)
        };
        let billing_type = if f.billing_type.trim().is_empty() {
            None
        } else {
            Some(
                serde_json::from_value::<BillingType>(json!(f.billing_type.trim())).map_err(
                    |_| {
                        (
                            "billing_type".to_string(),
                            "choose a billing type".to_string(),
                        )
                    },
                )?,
            )
        };
        let patch = ProviderPatch {
            display_name: Some(f.display_name.trim().to_string()).filter(|s| !s.is_empty()),
            provider_priority,
            billing_type,
            quota_usd: Some(opt_usd(&f.quota_usd, "quota_usd")?),
            quota_period_days: opt_u32(&f.quota_period_days, "quota_period_days")?,
            rpm_limit: Some(opt_u32(&f.rpm_limit, "rpm_limit")?),
            is_active: Some(f.is_active.is_some()),
            ..ProviderPatch::default()
        };
        c.admin
            .update_provider(&v.who.actor(), id, patch)
            .await
            .map(|_| ())
            .map_err(|e| service_error(&e))
    }
    .await
    .map_err(|e| fail("settings", &f, e));
    answer(&c, v, id, result).await
}

#[derive(Deserialize, Serialize)]
struct EndpointForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    api_format: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    max_retries: String,
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
        let max_retries = opt_u32(&f.max_retries, "max_retries")?.unwrap_or(3);
        let max_concurrent = opt_u32(&f.max_concurrent, "max_concurrent")?;
        let n: NewEndpoint = serde_json::from_value(json!({
            "api_format": f.api_format, "base_url": f.base_url.trim(),
            "timeout": timeout, "max_retries": max_retries, "max_concurrent": max_concurrent,
        }))
        .map_err(|_| ("api_format".to_string(), "choose an API format".to_string()))?;
        c.admin
            .create_endpoint(&v.who.actor(), id, n)
            .await
            .map(|_| ())
            .map_err(|e| service_error(&e))
    }
    .await
    .map_err(|e| fail("endpoint", &f, e));
    answer(&c, v, id, result).await
}

#[derive(Deserialize, Serialize)]
struct KeyForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    provider_id: ProviderId,
    /// Never shown again, not even after a failed submit.
    #[serde(default, skip_serializing)]
    api_key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    internal_priority: String,
    #[serde(default)]
    rate_multiplier: String,
    #[serde(default)]
    max_concurrent: String,
    #[serde(default)]
    rate_limit: String,
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
        let priority = f.internal_priority.trim();
        let internal_priority = if priority.is_empty() {
            50
        } else {
            priority.parse::<i32>().map_err(|_| {
                (
                    "internal_priority".to_string(),
                    "a whole number; lower is used first".to_string(),
                )
            })?
        };
        let multiplier = match f.rate_multiplier.trim() {
            "" => "1",
            m => m,
        };
        let rate_multiplier: aether_domain::Multiplier = multiplier.parse().map_err(|_| {
            (
                "rate_multiplier".to_string(),
                "a decimal factor such as 1 or 0.55".to_string(),
            )
        })?;
        let n: NewProviderKey = serde_json::from_value(json!({
            "api_key": f.api_key.trim(), "name": f.name.trim(),
            "internal_priority": internal_priority, "rate_multiplier": rate_multiplier,
            "max_concurrent": opt_u32(&f.max_concurrent, "max_concurrent")?,
            "rate_limit": opt_u32(&f.rate_limit, "rate_limit")?,
        }))
        .map_err(|e| ("api_key".to_string(), e.to_string()))?;
        c.admin
            .create_provider_key(&v.who.actor(), endpoint, n)
            .await
            .map(|_| ())
            .map_err(|e| service_error(&e))
    }
    .await
    .map_err(|e| {
        let mut failure = fail("key", &f, e);
        // Which endpoint's form to open again.
        failure.typed = context! { endpoint => endpoint, ..failure.typed };
        failure
    });
    answer(&c, v, f.provider_id, result).await
}

#[derive(Deserialize, Serialize)]
struct ModelForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
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
            .map_err(|e| service_error(&e))
    }
    .await
    .map_err(|e| fail("model", &f, e));
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
        .map_err(|e| Failure {
            form: "breaker",
            field: String::new(),
            message: message(&e),
            typed: context! {},
        });
    answer(&c, v, f.provider_id, result).await
}
