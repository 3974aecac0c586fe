//! A provider's page and the provider list's extras.
//!
//! The page shows the provider's settings (with an edit form), its endpoints, its upstream
//! keys (masked, with priority, multiplier, adaptive/learned or fixed concurrency, RPM, the
//! success rate of the last 24 hours, the breaker and capabilities) and its models (prices,
//! name mappings). Everything is editable in right-side drawers with inline validation: add,
//! edit and delete endpoints, keys and models; reset a key's breaker; delete the provider
//! (confirmed by typing its name). A key's secret is write-only: the edit form has an empty
//! field that replaces it when filled, and the page only ever shows the masked key.
//!
//! A provider model's drawer has two row editors: the tiered price override (the same editor
//! as the global models, `up_to_0`, `input_0`, …) and the name mappings (`map_name_0`,
//! `map_priority_0`, `map_formats_0`, `map_remove_0`, …). The page's script may add rows with
//! higher indices, so the rows are whatever indices arrive, in order; empty rows are ignored,
//! so both editors work without the script.
//!
//! For the list (`core.rs` renders it), [`list_extras`] adds per-format health chips and the
//! priority dialog: the priority mode and the scheduling mode (system settings) and every
//! provider's priority in one form, posted to `/admin/providers/priority`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aether_admin::ApiError;
use aether_admin::service::health::{KeyHealth, TimelineQuery};
use aether_admin::service::models::{NewProviderModel, ProviderModelPatch};
use aether_admin::service::providers::{
    EndpointPatch, NewEndpoint, NewProviderKey, ProviderKeyPatch, ProviderPatch, ProviderSummary,
    ProxyInput,
};
use aether_coord::breaker::BreakerState;
use aether_domain::entities::{BillingType, Endpoint, ModelMapping, ProviderModel};
use aether_domain::{
    ApiFormat, EndpointId, GlobalModelId, Multiplier, ProviderId, ProviderKeyId, ProviderModelId,
    Usd,
};
use aether_store::{GlobalModelFilter, Page, ProviderFilter};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::admin_models::{TierRow, price, pricing, submitted_rows as submitted_tiers};
use super::core::{ListQuery, message, page_of, pages};
use crate::Console;
use crate::session::{AdminViewer, Viewer};

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin/provider.html",
        include_str!("../../templates/admin/provider.html"),
    ),
    (
        "admin/provider_forms.html",
        include_str!("../../templates/admin/provider_forms.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/providers/priority", post(save_priorities))
        .route(
            "/admin/providers/{id}",
            get(provider_page).post(update_settings),
        )
        .route("/admin/providers/{id}/delete", post(delete_provider))
        .route("/admin/providers/{id}/endpoints", post(add_endpoint))
        .route("/admin/providers/{id}/models", post(add_model))
        .route("/admin/providers/{id}/models/{model}", post(update_model))
        .route(
            "/admin/providers/{id}/models/{model}/delete",
            post(delete_model),
        )
        .route("/admin/endpoints/{id}", post(update_endpoint))
        .route("/admin/endpoints/{id}/delete", post(delete_endpoint))
        .route("/admin/endpoints/{id}/keys", post(add_key))
        .route("/admin/provider-keys/{id}", post(update_key))
        .route("/admin/provider-keys/{id}/delete", post(delete_key))
        .route("/admin/keys/{id}/breaker-reset", post(reset_breaker))
}

/// Billing types as the settings form offers them: (value, label).
const BILLING: [(&str, &str); 3] = [
    ("pay_as_you_go", "pay as you go"),
    ("monthly_quota", "period quota"),
    ("free_tier", "free tier"),
];

/// Header names whose values are secrets: shown masked, kept when the mask comes back.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// What a secret header's value looks like in the endpoint form.
const MASKED_VALUE: &str = "********";

/// Rows an editor shows at least (the script adds more).
const MIN_ROWS: usize = 2;
/// Rows read from a form at most.
const MAX_ROWS: usize = 50;

/// A form arriving with rows (keys with an index suffix).
type Fields = HashMap<String, String>;

/// The field at fault and why.
type FieldError = (String, String);

/// A form that failed: which one, for which endpoint/key/model, the field at fault, why, and
/// what was typed (secrets left out) so the form shows it again.
struct Failure {
    form: &'static str,
    /// The id of the endpoint, key or model whose form failed (empty: the page's own forms).
    target: String,
    field: String,
    message: String,
    typed: minijinja::Value,
    /// The row editors of a model form, as typed.
    tiers: Vec<TierRow>,
    maps: Vec<MapRow>,
}

fn fail(form: &'static str, typed: &impl Serialize, (field, message): FieldError) -> Failure {
    Failure {
        form,
        target: String::new(),
        field,
        message,
        typed: minijinja::Value::from_serialize(typed),
        tiers: Vec::new(),
        maps: Vec::new(),
    }
}

impl Failure {
    fn on(mut self, target: impl ToString) -> Self {
        self.target = target.to_string();
        self
    }
}

// ---- rows of the editors ----

/// One row of the name-mapping editor, as typed (or as stored, formatted).
#[derive(Debug, Clone, Default, Serialize)]
struct MapRow {
    name: String,
    priority: String,
    formats: String,
}

impl MapRow {
    fn is_empty(&self) -> bool {
        [&self.name, &self.priority, &self.formats]
            .iter()
            .all(|s| s.trim().is_empty())
    }

    fn of(m: &ModelMapping) -> Self {
        Self {
            name: m.name.clone(),
            priority: m.priority.to_string(),
            formats: m
                .api_formats
                .as_ref()
                .map(|f| f.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
        }
    }
}

/// Editor rows padded with empty ones: at least [`MIN_ROWS`], and always one empty row at the
/// end so a row can be added without the script.
fn padded<T: Default>(mut rows: Vec<T>, is_empty: impl Fn(&T) -> bool) -> Vec<T> {
    while rows.len() < MIN_ROWS || rows.last().is_some_and(|r| !is_empty(r)) {
        rows.push(T::default());
    }
    rows
}

/// The row indices present in a form for any of `prefixes`, in order.
fn indices(f: &Fields, prefixes: &[&str]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for key in f.keys() {
        for p in prefixes {
            if let Some(i) = key.strip_prefix(p).and_then(|n| n.parse::<usize>().ok())
                && i < MAX_ROWS
            {
                out.insert(i);
            }
        }
    }
    out
}

fn field(f: &Fields, key: &str) -> String {
    f.get(key).cloned().unwrap_or_default()
}

/// The mapping editor's rows of a submitted form, in index order: empty rows and rows marked
/// for removal are left out.
fn submitted_maps(f: &Fields) -> Vec<MapRow> {
    indices(f, &["map_name_", "map_priority_", "map_formats_"])
        .into_iter()
        .filter(|i| !f.contains_key(&format!("map_remove_{i}")))
        .map(|i| MapRow {
            name: field(f, &format!("map_name_{i}")),
            priority: field(f, &format!("map_priority_{i}")),
            formats: field(f, &format!("map_formats_{i}")),
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// The name mappings the rows describe, or the field at fault (`map_name_3`, …).
fn mappings(rows: &[MapRow]) -> Result<Vec<ModelMapping>, FieldError> {
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let name = r.name.trim();
        if name.is_empty() {
            return Err((
                format!("map_name_{i}"),
                "a mapping needs an upstream model name (or clear the row)".into(),
            ));
        }
        if name.chars().any(char::is_whitespace) {
            return Err((
                format!("map_name_{i}"),
                format!("“{name}” is not a model name: no spaces"),
            ));
        }
        let priority = match r.priority.trim() {
            "" => 1,
            p => p.parse::<i32>().ok().filter(|p| *p >= 1).ok_or_else(|| {
                (
                    format!("map_priority_{i}"),
                    "a whole number from 1; the lowest is used".to_string(),
                )
            })?,
        };
        let mut formats = Vec::new();
        for f in r.formats.split([',', ' ']).filter(|s| !s.trim().is_empty()) {
            let f = f
                .parse::<ApiFormat>()
                .map_err(|e| (format!("map_formats_{i}"), e.to_string()))?;
            if !formats.contains(&f) {
                formats.push(f);
            }
        }
        out.push(ModelMapping {
            name: name.to_string(),
            priority,
            api_formats: (!formats.is_empty()).then_some(formats),
        });
    }
    Ok(out)
}

// ---- small parsers of typed values ----

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

/// A required whole number.
fn req_u32(s: &str, field: &'static str, hint: &str) -> Result<u32, FieldError> {
    opt_u32(s, field)
        .ok()
        .flatten()
        .ok_or_else(|| (field.to_string(), hint.to_string()))
}

/// Optional (signed) whole number.
fn opt_i32(s: &str, field: &'static str, hint: &str) -> Result<Option<i32>, FieldError> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<i32>()
        .map(Some)
        .map_err(|_| (field.to_string(), hint.to_string()))
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

fn multiplier(s: &str) -> Result<Multiplier, FieldError> {
    let m = match s.trim() {
        "" => "1",
        m => m,
    };
    m.parse().map_err(|_| {
        (
            "rate_multiplier".to_string(),
            "a decimal factor such as 1 or 0.55".to_string(),
        )
    })
}

/// Names typed as a comma- or space-separated list.
fn list(s: &str) -> Vec<String> {
    s.split([',', ' ', '\n', '\r', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn opt_text(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

fn is_secret_header(name: &str, extra: &[String]) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&n.as_str()) || extra.contains(&n)
}

/// An endpoint's extra headers as the form shows them: `Name: value` lines, secrets masked.
fn headers_text(h: &BTreeMap<String, String>, extra: &[String]) -> String {
    h.iter()
        .map(|(k, v)| {
            let v = if is_secret_header(k, extra) {
                MASKED_VALUE
            } else {
                v.as_str()
            };
            format!("{k}: {v}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Headers typed as `Name: value` lines. A secret header whose value comes back masked keeps
/// its stored value.
fn parse_headers(
    s: &str,
    stored: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FieldError> {
    let mut out = BTreeMap::new();
    for (i, line) in s.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':').filter(|(n, _)| !n.trim().is_empty()) else {
            return Err((
                "headers".into(),
                format!("line {}: “{line}” is not `Name: value`", i + 1),
            ));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        let value = match stored.get(&name) {
            Some(old) if value == MASKED_VALUE => old.clone(),
            _ => value.to_string(),
        };
        out.insert(name, value);
    }
    Ok(out)
}

fn service_error(e: &ApiError) -> FieldError {
    match e {
        ApiError::Invalid { field, .. } => (field.unwrap_or_default().to_string(), message(e)),
        _ => (String::new(), message(e)),
    }
}

fn not_found(c: &Console, v: Viewer, e: &ApiError) -> Response {
    let status = if matches!(e, ApiError::NotFound(_)) {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    };
    let html = c.views.error(&v, status, &message(e));
    v.finish((status, html))
}

// ---- the page ----

#[derive(Deserialize, Default)]
struct PageQuery {
    saved: Option<String>,
}

/// The flash message of a `?saved=` redirect.
fn notice(saved: Option<&str>) -> Option<&'static str> {
    Some(match saved? {
        "settings" => "Settings saved.",
        "endpoint" => "Endpoint saved; routing uses it at once.",
        "endpoint-deleted" => "Endpoint deleted, with its keys.",
        "key" => "Upstream key saved; routing uses it at once.",
        "key-deleted" => "Upstream key deleted.",
        "model" => "Model saved; routing uses it at once.",
        "model-deleted" => "Model removed from this provider.",
        _ => return None,
    })
}

/// Success rate of a key's upstream attempts over the last 24 hours: (percent, attempts).
async fn success_rate(c: &Console, id: ProviderKeyId) -> Option<(u64, u64)> {
    let t = c
        .admin
        .health_timeline(TimelineQuery {
            hours: Some(24),
            key_id: Some(id),
            ..TimelineQuery::default()
        })
        .await
        .ok()?;
    let ok: u64 = t.buckets.iter().map(|b| b.successes).sum();
    let failed: u64 = t.buckets.iter().map(|b| b.failures).sum();
    let total = ok + failed;
    (total > 0).then(|| ((ok * 100 + total / 2) / total, total))
}

async fn render(
    c: &Console,
    v: &Viewer,
    id: ProviderId,
    failure: Option<Failure>,
    saved: Option<&str>,
) -> Result<Html<String>, Response> {
    let provider = match c.admin.get_provider(id).await {
        Ok(p) => p,
        Err(e) => {
            let html = c.views.error(v, StatusCode::NOT_FOUND, &message(&e));
            return Err((StatusCode::NOT_FOUND, html).into_response());
        }
    };
    let masked = c.admin.settings().masked_headers();
    let endpoints = c.admin.list_endpoints(id).await.unwrap_or_default();
    let mut eps = Vec::new();
    for e in endpoints {
        let mut keys = Vec::new();
        for k in c.admin.list_provider_keys(e.id).await.unwrap_or_default() {
            // No live state yet (or any error): the page shows "—".
            let health = c.admin.key_health(k.id).await.ok();
            let success = success_rate(c, k.id)
                .await
                .map(|(rate, total)| context! { rate => rate, total => total });
            keys.push(context! { key => k, health => health, success => success });
        }
        let headers = headers_text(&e.headers, &masked);
        eps.push(context! { endpoint => e, keys => keys, headers => headers });
    }
    let (form, target, error_field, error, typed, tiers, maps) = match failure {
        Some(f) => (
            Some(f.form),
            Some(f.target),
            Some(f.field),
            Some(f.message),
            Some(f.typed),
            f.tiers,
            f.maps,
        ),
        None => (None, None, None, None, None, Vec::new(), Vec::new()),
    };
    let models: Vec<ProviderModel> = c.admin.list_provider_models(id).await.unwrap_or_default();
    let models: Vec<_> = models
        .into_iter()
        .map(|m| {
            let mine = form == Some("model-edit") && target.as_deref() == Some(&m.id.to_string());
            let (t, r) = if mine {
                (
                    padded(tiers.clone(), TierRow::is_empty),
                    padded(maps.clone(), MapRow::is_empty),
                )
            } else {
                (
                    padded(
                        m.tiered_pricing
                            .as_ref()
                            .map_or_else(Vec::new, |p| p.tiers.iter().map(TierRow::of).collect()),
                        TierRow::is_empty,
                    ),
                    padded(
                        m.provider_model_mappings.iter().map(MapRow::of).collect(),
                        MapRow::is_empty,
                    ),
                )
            };
            context! { m => m, tiers => t, maps => r }
        })
        .collect();
    let globals = c
        .admin
        .list_global_models(&GlobalModelFilter::default(), Page::all())
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let names: BTreeMap<String, String> = globals
        .iter()
        .map(|g| (g.model.id.to_string(), g.model.name.clone()))
        .collect();
    Ok(c.views.page(
        v,
        "admin/provider.html",
        "providers",
        context! {
            p => provider, endpoints => eps, models => models, globals => globals, names => names,
            formats => ApiFormat::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            billing => BILLING.iter().map(|(v, l)| context! { value => v, label => l }).collect::<Vec<_>>(),
            masked_value => MASKED_VALUE,
            notice => notice(saved),
            form => form, target => target, error_field => error_field, error => error, typed => typed,
        },
    ))
}

async fn provider_page(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    Query(q): Query<PageQuery>,
) -> Response {
    match render(&c, &v, id, None, q.saved.as_deref()).await {
        Ok(html) => v.finish(html),
        Err(r) => v.finish(r),
    }
}

/// After a form: back to the provider page (with a flash message when `saved` is given), or
/// the page again with the inline error.
async fn answer(
    c: &Console,
    v: Viewer,
    id: ProviderId,
    saved: Option<&str>,
    result: Result<(), Failure>,
) -> Response {
    match result {
        Ok(()) => {
            let to = match saved {
                Some(s) => format!("/admin/providers/{id}?saved={s}"),
                None => format!("/admin/providers/{id}"),
            };
            v.finish(Redirect::to(&to))
        }
        Err(failure) => match render(c, &v, id, Some(failure), None).await {
            Ok(html) => v.finish((StatusCode::UNPROCESSABLE_ENTITY, html)),
            Err(r) => v.finish(r),
        },
    }
}

// ---- provider settings and deletion ----

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
        let provider_priority = opt_i32(
            &f.provider_priority,
            "provider_priority",
            "a whole number; lower is preferred",
        )?;
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
            display_name: opt_text(&f.display_name),
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
    answer(&c, v, id, None, result).await
}

#[derive(Deserialize, Serialize)]
struct DeleteProviderForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    /// The provider's name typed again.
    #[serde(default)]
    confirm: String,
}

async fn delete_provider(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    Form(f): Form<DeleteProviderForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let p = match c.admin.get_provider(id).await {
        Ok(p) => p,
        Err(e) => return not_found(&c, v, &e),
    };
    if f.confirm.trim() != p.name {
        let failure = fail(
            "delete",
            &f,
            (
                "confirm".into(),
                format!("type the provider's name, “{}”, to delete it", p.name),
            ),
        );
        return answer(&c, v, id, None, Err(failure)).await;
    }
    match c.admin.delete_provider(&v.who.actor(), id).await {
        Ok(()) => v.finish(Redirect::to("/admin/providers?saved=deleted")),
        Err(e) => not_found(&c, v, &e),
    }
}

// ---- endpoints ----

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
    answer(&c, v, id, None, result).await
}

/// The endpoint edit form. The proxy password is write-only: never shown, kept when empty.
#[derive(Deserialize, Serialize)]
struct EndpointEditForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    custom_path: String,
    #[serde(default)]
    headers: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    max_retries: String,
    #[serde(default)]
    max_concurrent: String,
    #[serde(default)]
    is_active: Option<String>,
    #[serde(default)]
    proxy_url: String,
    #[serde(default)]
    proxy_username: String,
    #[serde(default, skip_serializing)]
    proxy_password: String,
    #[serde(default)]
    proxy_clear_password: Option<String>,
}

fn endpoint_patch(f: &EndpointEditForm, e: &Endpoint) -> Result<EndpointPatch, FieldError> {
    let timeout = req_u32(
        &f.timeout,
        "timeout",
        "a whole number of seconds, 1 to 3600",
    )?;
    let max_retries = req_u32(&f.max_retries, "max_retries", "a whole number, 0 to 10")?;
    let proxy = if f.proxy_url.trim().is_empty() {
        None
    } else {
        let password = if f.proxy_clear_password.is_some() {
            Some(String::new())
        } else {
            Some(f.proxy_password.clone()).filter(|p| !p.is_empty())
        };
        Some(ProxyInput {
            url: f.proxy_url.trim().to_string(),
            username: opt_text(&f.proxy_username),
            password,
        })
    };
    Ok(EndpointPatch {
        base_url: Some(f.base_url.trim().to_string()),
        custom_path: Some(opt_text(&f.custom_path)),
        headers: Some(parse_headers(&f.headers, &e.headers)?),
        timeout: Some(timeout),
        max_retries: Some(max_retries),
        max_concurrent: Some(opt_u32(&f.max_concurrent, "max_concurrent")?),
        proxy: Some(proxy),
        is_active: Some(f.is_active.is_some()),
        config: None,
    })
}

async fn update_endpoint(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<EndpointId>,
    Form(f): Form<EndpointEditForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let e = match c.admin.get_endpoint(id).await {
        Ok(e) => e,
        Err(err) => return not_found(&c, v, &err),
    };
    let result = async {
        let patch = endpoint_patch(&f, &e)?;
        c.admin
            .update_endpoint(&v.who.actor(), id, patch)
            .await
            .map(|_| ())
            .map_err(|e| match &e {
                // The proxy's fields are named `proxy.url` by the service.
                ApiError::Invalid { field: Some(f), .. } if f.starts_with("proxy") => {
                    ("proxy_url".to_string(), message(&e))
                }
                _ => service_error(&e),
            })
    }
    .await
    .map_err(|err| fail("endpoint-edit", &f, err).on(id));
    answer(&c, v, e.provider_id, Some("endpoint"), result).await
}

async fn delete_endpoint(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<EndpointId>,
    Form(f): Form<super::core::CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let e = match c.admin.get_endpoint(id).await {
        Ok(e) => e,
        Err(err) => return not_found(&c, v, &err),
    };
    match c.admin.delete_endpoint(&v.who.actor(), id).await {
        Ok(()) => answer(&c, v, e.provider_id, Some("endpoint-deleted"), Ok(())).await,
        Err(err) => not_found(&c, v, &err),
    }
}

// ---- upstream keys ----

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
        let internal_priority = opt_i32(
            &f.internal_priority,
            "internal_priority",
            "a whole number; lower is used first",
        )?
        .unwrap_or(50);
        let rate_multiplier = multiplier(&f.rate_multiplier)?;
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
    // Which endpoint's form to open again.
    .map_err(|e| fail("key", &f, e).on(endpoint));
    answer(&c, v, f.provider_id, None, result).await
}

/// The key edit form. `api_key` is write-only: empty keeps the stored secret.
#[derive(Deserialize, Serialize)]
struct KeyEditForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default, skip_serializing)]
    api_key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    internal_priority: String,
    #[serde(default)]
    global_priority: String,
    #[serde(default)]
    rate_multiplier: String,
    #[serde(default)]
    max_concurrent: String,
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    allowed_models: String,
    #[serde(default)]
    capabilities: String,
    #[serde(default)]
    is_active: Option<String>,
}

fn key_patch(f: &KeyEditForm) -> Result<ProviderKeyPatch, FieldError> {
    let internal_priority = opt_i32(
        &f.internal_priority,
        "internal_priority",
        "a whole number; lower is used first",
    )?
    .ok_or_else(|| {
        (
            "internal_priority".to_string(),
            "a whole number; lower is used first".to_string(),
        )
    })?;
    let allowed = list(&f.allowed_models);
    Ok(ProviderKeyPatch {
        api_key: Some(f.api_key.trim().to_string()).filter(|k| !k.is_empty()),
        name: Some(f.name.trim().to_string()),
        note: Some(opt_text(&f.note)),
        rate_multiplier: Some(multiplier(&f.rate_multiplier)?),
        internal_priority: Some(internal_priority),
        global_priority: Some(opt_i32(
            &f.global_priority,
            "global_priority",
            "a whole number, or empty; lower is used first",
        )?),
        max_concurrent: Some(opt_u32(&f.max_concurrent, "max_concurrent")?),
        rate_limit: Some(opt_u32(&f.rate_limit, "rate_limit")?),
        allowed_models: Some((!allowed.is_empty()).then_some(allowed)),
        capabilities: Some(list(&f.capabilities)),
        is_active: Some(f.is_active.is_some()),
        ..ProviderKeyPatch::default()
    })
}

async fn update_key(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderKeyId>,
    Form(f): Form<KeyEditForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let k = match c.admin.get_provider_key(id).await {
        Ok(k) => k,
        Err(e) => return not_found(&c, v, &e),
    };
    let result = async {
        let patch = key_patch(&f)?;
        c.admin
            .update_provider_key(&v.who.actor(), id, patch)
            .await
            .map(|_| ())
            .map_err(|e| service_error(&e))
    }
    .await
    .map_err(|e| fail("key-edit", &f, e).on(id));
    answer(&c, v, k.provider_id, Some("key"), result).await
}

async fn delete_key(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderKeyId>,
    Form(f): Form<super::core::CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let k = match c.admin.get_provider_key(id).await {
        Ok(k) => k,
        Err(e) => return not_found(&c, v, &e),
    };
    match c.admin.delete_provider_key(&v.who.actor(), id).await {
        Ok(()) => answer(&c, v, k.provider_id, Some("key-deleted"), Ok(())).await,
        Err(e) => not_found(&c, v, &e),
    }
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
        .map_err(|e| fail("breaker", &(), (String::new(), message(&e))));
    answer(&c, v, f.provider_id, None, result).await
}

// ---- provider models ----

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
            "provider_model_name": opt_text(&f.provider_model_name),
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
    answer(&c, v, id, None, result).await
}

/// The patch a model form describes (its rows already read), or the field at fault.
async fn model_patch(
    c: &Console,
    f: &Fields,
    tiers: &[TierRow],
    maps: &[MapRow],
) -> Result<ProviderModelPatch, FieldError> {
    let choose = || {
        (
            "global_model_id".to_string(),
            "choose a global model".to_string(),
        )
    };
    let global: GlobalModelId = field(f, "global_model_id")
        .trim()
        .parse()
        .map_err(|_| choose())?;
    let global = c
        .admin
        .get_global_model(global)
        .await
        .map_err(|_| choose())?;
    let tiered_pricing = pricing(tiers)?;
    let price_per_request = price(&field(f, "price_per_request"), "price_per_request".into())?;
    let name = field(f, "provider_model_name");
    Ok(ProviderModelPatch {
        global_model_id: Some(global.id),
        // Empty: the global model's own name.
        provider_model_name: Some(opt_text(&name).unwrap_or(global.name)),
        provider_model_mappings: Some(mappings(maps)?),
        tiered_pricing: Some(tiered_pricing),
        price_per_request: Some(price_per_request),
        is_active: Some(f.contains_key("is_active")),
        ..ProviderModelPatch::default()
    })
}

async fn update_model(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path((id, model)): Path<(ProviderId, ProviderModelId)>,
    Form(f): Form<Fields>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, f.get("csrf").map_or("", String::as_str)) {
        return r;
    }
    if let Err(e) = c.admin.get_provider_model(id, model).await {
        return not_found(&c, v, &e);
    }
    let tiers = submitted_tiers(&f);
    let maps = submitted_maps(&f);
    let result = async {
        let patch = model_patch(&c, &f, &tiers, &maps).await?;
        c.admin
            .update_provider_model(&v.who.actor(), id, model, patch)
            .await
            .map(|_| ())
            .map_err(|e| service_error(&e))
    }
    .await
    .map_err(|e| {
        let typed: BTreeMap<&String, &String> =
            f.iter().filter(|(k, _)| k.as_str() != "csrf").collect();
        let mut failure = fail("model-edit", &typed, e).on(model);
        failure.tiers = tiers;
        failure.maps = maps;
        failure
    });
    answer(&c, v, id, Some("model"), result).await
}

async fn delete_model(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path((id, model)): Path<(ProviderId, ProviderModelId)>,
    Form(f): Form<super::core::CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    match c
        .admin
        .delete_provider_model(&v.who.actor(), id, model)
        .await
    {
        Ok(()) => answer(&c, v, id, Some("model-deleted"), Ok(())).await,
        Err(e) => not_found(&c, v, &e),
    }
}

// ---- the provider list: health chips and the priority dialog ----

/// The health of one API format of a provider, from its endpoint and the live state of its
/// active keys: `ok`, `warn` (a key's breaker open or half-open, or health below 50 %),
/// `bad` (no usable key) or `off` (the endpoint is turned off).
#[derive(Debug, Clone, Serialize)]
struct FormatHealth {
    format: &'static str,
    class: &'static str,
    label: String,
    title: String,
}

fn format_health(e: &Endpoint, keys: &[(bool, Option<KeyHealth>)]) -> FormatHealth {
    let format = e.api_format.as_str();
    let chip = |class, label: String, title: String| FormatHealth {
        format,
        class,
        label,
        title,
    };
    if !e.is_active {
        return chip("off", "off".into(), "the endpoint is turned off".into());
    }
    let active: Vec<_> = keys.iter().filter(|(on, _)| *on).collect();
    if active.is_empty() {
        return chip("bad", "no keys".into(), "no active upstream key".into());
    }
    let mut health = 0.0;
    let (mut open, mut half) = (0, 0);
    for (_, h) in &active {
        match h {
            Some(h) => {
                health += h.breaker.health.clamp(0.0, 1.0);
                match h.breaker.state {
                    BreakerState::Open => open += 1,
                    BreakerState::HalfOpen => half += 1,
                    BreakerState::Closed => {}
                }
            }
            // No live state: nothing went wrong yet.
            None => health += 1.0,
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let avg = health / active.len() as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let percent = (avg * 100.0).round() as u32;
    let usable = active.len() - open;
    let class = if usable == 0 {
        "bad"
    } else if open > 0 || half > 0 || avg < 0.5 {
        "warn"
    } else {
        "ok"
    };
    let title = format!(
        "{usable} of {} active keys usable{}",
        active.len(),
        if half > 0 {
            format!(", {half} probing")
        } else {
            String::new()
        }
    );
    chip(class, format!("{percent} %"), title)
}

/// Per provider id: a health chip per API format.
async fn health_chips(
    c: &Console,
    providers: &[ProviderSummary],
) -> BTreeMap<String, Vec<FormatHealth>> {
    let mut out = BTreeMap::new();
    for p in providers {
        let mut chips = Vec::new();
        for e in c
            .admin
            .list_endpoints(p.provider.id)
            .await
            .unwrap_or_default()
        {
            let mut keys = Vec::new();
            for k in c.admin.list_provider_keys(e.id).await.unwrap_or_default() {
                let h = if k.is_active {
                    c.admin.key_health(k.id).await.ok()
                } else {
                    None
                };
                keys.push((k.is_active, h));
            }
            chips.push(format_health(&e, &keys));
        }
        out.insert(p.provider.id.to_string(), chips);
    }
    out
}

/// The list's `?saved=` flash (`deleted`, `priorities`).
#[derive(Deserialize, Default)]
pub(super) struct ListFlash {
    pub saved: Option<String>,
}

/// A failed priority dialog: the field at fault, why, and the values typed.
struct PriorityFailure {
    field: String,
    message: String,
    typed: BTreeMap<String, String>,
}

/// Everything the list page adds for this module: the health chips of `providers`, the
/// priority dialog (current modes, every provider with its priority) and the flash message.
pub(super) async fn list_extras(
    c: &Console,
    providers: &[ProviderSummary],
    saved: Option<&str>,
) -> minijinja::Value {
    extras(c, providers, saved, None).await
}

async fn extras(
    c: &Console,
    providers: &[ProviderSummary],
    saved: Option<&str>,
    failure: Option<PriorityFailure>,
) -> minijinja::Value {
    let health = health_chips(c, providers).await;
    let mut all = c
        .admin
        .list_providers(&ProviderFilter::default(), Page::all())
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    all.sort_by(|a, b| {
        (a.provider.provider_priority, &a.provider.name)
            .cmp(&(b.provider.provider_priority, &b.provider.name))
    });
    let all: Vec<_> = all
        .into_iter()
        .map(|p| {
            context! {
                id => p.provider.id, name => p.provider.name,
                display_name => p.provider.display_name,
                priority => p.provider.provider_priority, is_active => p.provider.is_active,
            }
        })
        .collect();
    let s = c.admin.settings();
    let notice = match saved {
        Some("deleted") => Some("Provider deleted, with its endpoints, keys and models."),
        Some("priorities") => Some("Priorities saved; routing uses them at once."),
        _ => None,
    };
    let (pr_field, pr_error, pr_typed) = match failure {
        Some(f) => (Some(f.field), Some(f.message), Some(f.typed)),
        None => (None, None, None),
    };
    context! {
        health => health,
        notice => notice,
        priority => context! {
            providers => all,
            priority_mode => if s.global_key_priority() { "global_key" } else { "provider" },
            scheduling_mode => if s.cache_affinity() { "cache_affinity" } else { "fixed_order" },
            field => pr_field, error => pr_error, typed => pr_typed,
        },
    }
}

/// The options of an enum setting, from its declaration.
fn options(key: &str) -> &'static [&'static str] {
    match aether_domain::settings::def(key).map(|d| d.kind) {
        Some(aether_domain::settings::SettingKind::Enum { options }) => options,
        _ => &[],
    }
}

async fn save_priorities(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<Fields>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, f.get("csrf").map_or("", String::as_str)) {
        return r;
    }
    let result: Result<(), FieldError> = async {
        // Everything is checked before anything is written.
        let mut modes = Vec::new();
        for key in ["priority_mode", "scheduling_mode"] {
            let value = field(&f, key);
            let value = value.trim();
            if !options(key).contains(&value) {
                return Err((
                    key.to_string(),
                    format!("choose one of {}", options(key).join(", ")),
                ));
            }
            modes.push((key, value.to_string()));
        }
        let providers = c
            .admin
            .list_providers(&ProviderFilter::default(), Page::all())
            .await
            .map_err(|e| service_error(&e))?
            .items;
        let mut changes = Vec::new();
        for p in &providers {
            let key = format!("prio_{}", p.provider.id);
            let Some(typed) = f.get(&key) else { continue };
            let n = typed.trim().parse::<i32>().map_err(|_| {
                (
                    key.clone(),
                    format!(
                        "{}: a whole number; lower is preferred",
                        p.provider.display_name
                    ),
                )
            })?;
            if n != p.provider.provider_priority {
                changes.push((p.provider.id, n));
            }
        }
        let actor = v.who.actor();
        let current = c.admin.settings();
        for (key, value) in modes {
            if current.get(key).and_then(|v| v.as_str()) != Some(value.as_str()) {
                c.admin
                    .put_setting(&actor, key, &json!(value))
                    .await
                    .map_err(|e| (key.to_string(), message(&e)))?;
            }
        }
        for (id, n) in changes {
            let patch = ProviderPatch {
                provider_priority: Some(n),
                ..ProviderPatch::default()
            };
            c.admin
                .update_provider(&actor, id, patch)
                .await
                .map_err(|e| (format!("prio_{id}"), message(&e)))?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => v.finish(Redirect::to("/admin/providers?saved=priorities")),
        Err((field, message)) => {
            let typed = f.into_iter().filter(|(k, _)| k != "csrf").collect();
            let failure = PriorityFailure {
                field,
                message,
                typed,
            };
            let html = list_page(&c, &v, failure).await;
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}

/// The provider list (its first page) with the priority dialog open on its error. The rest of
/// the context is the one `core.rs` gives the list.
async fn list_page(c: &Console, v: &Viewer, failure: PriorityFailure) -> Html<String> {
    let q = ListQuery::default();
    let (page, n) = page_of(&q);
    let (items, total) = c
        .admin
        .list_providers(&ProviderFilter::default(), page)
        .await
        .map_or((Vec::new(), 0), |p| (p.items, p.total));
    let extra = extras(c, &items, None, Some(failure)).await;
    c.views.page(
        v,
        "admin/providers.html",
        "providers",
        context! {
            providers => items, total => total, page => n, pages => pages(total),
            search => "", error_field => None::<String>, error => None::<String>,
            ..extra
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn mapping_rows_follow_the_indices_and_skip_removed_ones() {
        let f = fields(&[
            ("map_name_4", "late-name"),
            ("map_formats_4", "claude, openai"),
            ("map_name_0", "first"),
            ("map_priority_0", "2"),
            ("map_name_1", "gone"),
            ("map_remove_1", "on"),
            ("map_name_2", ""),
            ("map_name_77", "beyond-the-limit"),
        ]);
        let rows = submitted_maps(&f);
        assert_eq!(rows.len(), 2);
        let m = mappings(&rows).unwrap();
        assert_eq!(m[0].name, "first");
        assert_eq!(m[0].priority, 2);
        assert_eq!(m[0].api_formats, None);
        assert_eq!(m[1].name, "late-name");
        assert_eq!(
            m[1].api_formats,
            Some(vec![ApiFormat::Claude, ApiFormat::Openai])
        );
    }

    #[test]
    fn bad_mapping_rows_name_their_field() {
        let row = |n: &str, p: &str, f: &str| MapRow {
            name: n.into(),
            priority: p.into(),
            formats: f.into(),
        };
        assert_eq!(mappings(&[row("", "3", "")]).unwrap_err().0, "map_name_0");
        assert_eq!(
            mappings(&[row("a", "", ""), row("b", "zero", "")])
                .unwrap_err()
                .0,
            "map_priority_1"
        );
        assert_eq!(
            mappings(&[row("a", "0", "")]).unwrap_err().0,
            "map_priority_0"
        );
        let e = mappings(&[row("a", "", "SOAP")]).unwrap_err();
        assert_eq!(e.0, "map_formats_0");
        assert!(e.1.contains("SOAP"), "{}", e.1);
        assert_eq!(
            mappings(&[row("two words", "", "")]).unwrap_err().0,
            "map_name_0"
        );
    }

    #[test]
    fn editors_keep_an_empty_row() {
        let rows = padded(vec![MapRow::default()], MapRow::is_empty);
        assert_eq!(rows.len(), MIN_ROWS);
        let full = vec![
            MapRow {
                name: "x".into(),
                ..MapRow::default()
            };
            MIN_ROWS
        ];
        let rows = padded(full, MapRow::is_empty);
        assert_eq!(rows.len(), MIN_ROWS + 1);
        assert!(rows[MIN_ROWS].is_empty());
    }

    #[test]
    fn secret_headers_are_masked_and_kept() {
        let stored: BTreeMap<String, String> = [
            ("authorization".to_string(), "Bearer s3cr3t".to_string()),
            ("x-team".to_string(), "blue".to_string()),
        ]
        .into_iter()
        .collect();
        let text = headers_text(&stored, &[]);
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("x-team: blue"));
        // The masked value comes back unchanged: the stored secret is kept.
        let back = parse_headers(&text, &stored).unwrap();
        assert_eq!(back, stored);
        // A new value replaces it; a line without a colon is refused with its number.
        let back = parse_headers("Authorization: Bearer new\n\nX-Team: red", &stored).unwrap();
        assert_eq!(back["authorization"], "Bearer new");
        assert_eq!(back["x-team"], "red");
        let e = parse_headers("x-team: blue\nnot a header", &stored).unwrap_err();
        assert_eq!(e.0, "headers");
        assert!(e.1.starts_with("line 2"), "{}", e.1);
    }

    #[test]
    fn price_override_rows() {
        let f = fields(&[("input_3", "6"), ("output_3", "30"), ("input_0", "")]);
        let rows = submitted_tiers(&f);
        assert_eq!(rows.len(), 1);
        let p = pricing(&rows).unwrap().unwrap();
        assert_eq!(p.tiers[0].output_per_m, "30".parse().unwrap());
        assert_eq!(pricing(&[]).unwrap(), None, "no rows: the global default");
        let e = pricing(&[TierRow {
            input: "1".into(),
            output: "-1".into(),
            ..TierRow::default()
        }])
        .unwrap_err();
        assert_eq!(e.0, "output_0");
    }
}
