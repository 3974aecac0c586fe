//! Global models and their default pricing: the list (search, paging) with a "New model"
//! form, and a model's page with the same form prefilled and the providers serving it.
//!
//! The pricing editor is a table of context-size tiers, each with input / output /
//! cache-write 5 m / cache-write 1 h / cache-read prices per 1M tokens. The form arrives flat
//! (`up_to_0`, `input_0`, …, `up_to_1`, …); the page's script may add rows with higher
//! indices, so the rows are whatever indices arrive, in order. Empty rows are ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aether_admin::ApiError;
use aether_admin::service::models::{GlobalModelPatch, NewGlobalModel};
use aether_domain::entities::GlobalModel;
use aether_domain::pricing::{PriceTier, TieredPricing};
use aether_domain::{GlobalModelId, ProviderId, Usd};
use aether_store::GlobalModelFilter;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use minijinja::context;
use serde::Serialize;
use serde_json::json;

use super::core::{ListQuery, message, page_of, pages};
use crate::Console;
use crate::session::{AdminViewer, Viewer};

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin/models.html",
        include_str!("../../templates/admin/models.html"),
    ),
    (
        "admin/model.html",
        include_str!("../../templates/admin/model.html"),
    ),
    (
        "admin/model_tiers.html",
        include_str!("../../templates/admin/model_tiers.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/models", get(models).post(create_model))
        .route("/admin/models/{id}", get(model_page).post(update_model))
}

/// Rows the pricing editor shows at least (the script adds more).
const MIN_ROWS: usize = 3;
/// Rows read from a form at most.
const MAX_ROWS: usize = 50;

/// The field at fault and why.
type FieldError = (String, String);

/// One row of the pricing editor, as typed (or as stored, formatted). The provider page's
/// price override uses the same editor and parsing.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct TierRow {
    pub(super) up_to: String,
    pub(super) input: String,
    pub(super) output: String,
    pub(super) cache_5m: String,
    pub(super) cache_1h: String,
    pub(super) cache_read: String,
}

impl TierRow {
    pub(super) fn is_empty(&self) -> bool {
        [
            &self.up_to,
            &self.input,
            &self.output,
            &self.cache_5m,
            &self.cache_1h,
            &self.cache_read,
        ]
        .iter()
        .all(|s| s.trim().is_empty())
    }

    pub(super) fn of(t: &PriceTier) -> Self {
        let s = |u: Option<Usd>| u.map(|u| u.to_string()).unwrap_or_default();
        Self {
            up_to: t.up_to.map(|n| n.to_string()).unwrap_or_default(),
            input: t.input_per_m.to_string(),
            output: t.output_per_m.to_string(),
            cache_5m: s(t.cache_creation_per_m),
            cache_1h: s(t.cache_creation_1h_per_m),
            cache_read: s(t.cache_read_per_m),
        }
    }
}

/// The editor's rows: `rows` padded with empty ones up to [`MIN_ROWS`], with at least one.
fn padded(mut rows: Vec<TierRow>) -> Vec<TierRow> {
    // At least one empty row, so a tier can be added without the script.
    while rows.len() < MIN_ROWS || rows.last().is_some_and(|r| !r.is_empty()) {
        rows.push(TierRow::default());
    }
    rows
}

fn rows_of(p: Option<&TieredPricing>) -> Vec<TierRow> {
    padded(p.map_or_else(Vec::new, |p| p.tiers.iter().map(TierRow::of).collect()))
}

/// The form arrives flat; see the module doc.
type Fields = HashMap<String, String>;

const PREFIXES: [&str; 6] = [
    "up_to_",
    "input_",
    "output_",
    "cache_5m_",
    "cache_1h_",
    "cache_read_",
];

/// The editor rows of a submitted form, in index order (non-empty ones only).
pub(super) fn submitted_rows(f: &Fields) -> Vec<TierRow> {
    let mut indices = BTreeSet::new();
    for key in f.keys() {
        for p in PREFIXES {
            if let Some(i) = key.strip_prefix(p).and_then(|n| n.parse::<usize>().ok())
                && i < MAX_ROWS
            {
                indices.insert(i);
            }
        }
    }
    let get = |p: &str, i: usize| f.get(&format!("{p}{i}")).cloned().unwrap_or_default();
    indices
        .into_iter()
        .map(|i| TierRow {
            up_to: get("up_to_", i),
            input: get("input_", i),
            output: get("output_", i),
            cache_5m: get("cache_5m_", i),
            cache_1h: get("cache_1h_", i),
            cache_read: get("cache_read_", i),
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// A price typed in field `key`: empty is `None`, anything but a decimal amount an error.
pub(super) fn price(v: &str, key: String) -> Result<Option<Usd>, FieldError> {
    let v = v.trim().trim_start_matches('$').trim();
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<Usd>() {
        Ok(u) if u.is_negative() => Err((key, "a price must not be negative".into())),
        Ok(u) => Ok(Some(u)),
        Err(_) => Err((
            key,
            format!("“{v}” is not a price: a decimal amount of USD such as 3 or 3.75"),
        )),
    }
}

/// The pricing the rows describe (row `i` is the `i`-th rendered row), or the field at fault.
/// No rows at all is no pricing.
pub(super) fn pricing(rows: &[TierRow]) -> Result<Option<TieredPricing>, FieldError> {
    let mut tiers = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let input = price(&r.input, format!("input_{i}"))?;
        let output = price(&r.output, format!("output_{i}"))?;
        let (Some(input_per_m), Some(output_per_m)) = (input, output) else {
            let missing = if input.is_none() { "input_" } else { "output_" };
            return Err((
                format!("{missing}{i}"),
                "a tier needs both an input and an output price".into(),
            ));
        };
        let up_to = r.up_to.trim().replace([',', '_', ' '], "");
        let up_to = if up_to.is_empty() {
            None
        } else {
            Some(up_to.parse::<u64>().map_err(|_| {
                (
                    format!("up_to_{i}"),
                    "a context size in tokens, or empty for no limit".to_string(),
                )
            })?)
        };
        tiers.push(PriceTier {
            up_to,
            input_per_m,
            output_per_m,
            cache_creation_per_m: price(&r.cache_5m, format!("cache_5m_{i}"))?,
            cache_creation_1h_per_m: price(&r.cache_1h, format!("cache_1h_{i}"))?,
            cache_read_per_m: price(&r.cache_read, format!("cache_read_{i}"))?,
        });
    }
    Ok((!tiers.is_empty()).then_some(TieredPricing { tiers }))
}

/// Capability tags typed as a comma- or space-separated list.
fn capability_list(f: &Fields) -> Vec<String> {
    f.get("supported_capabilities")
        .map(|s| {
            s.split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(f: &'a Fields, key: &str) -> &'a str {
    f.get(key).map_or("", |s| s.trim())
}

fn service_error(e: &ApiError) -> FieldError {
    match e {
        ApiError::Invalid { field, .. } => (field.unwrap_or_default().to_string(), message(e)),
        _ => (String::new(), message(e)),
    }
}

/// What a re-rendered form shows: the values typed, and the error.
struct Retry {
    fields: Fields,
    rows: Vec<TierRow>,
    error: FieldError,
}

fn retry_context(r: Option<&Retry>) -> minijinja::Value {
    match r {
        None => context! {},
        Some(r) => context! {
            typed => r.fields.iter().filter(|(k, _)| k.as_str() != "csrf").collect::<BTreeMap<_, _>>(),
            error_field => r.error.0.clone(),
            error => r.error.1.clone(),
        },
    }
}

async fn render(c: &Console, v: &Viewer, q: &ListQuery, retry: Option<Retry>) -> Html<String> {
    let (page, n) = page_of(q);
    let list = c
        .admin
        .list_global_models(
            &GlobalModelFilter {
                search: q.search.clone().filter(|s| !s.is_empty()),
                ..GlobalModelFilter::default()
            },
            page,
        )
        .await;
    let (items, total) = list.map_or((Vec::new(), 0), |p| (p.items, p.total));
    let rows = padded(retry.as_ref().map(|r| r.rows.clone()).unwrap_or_default());
    c.views.page(
        v,
        "admin/models.html",
        "models",
        context! {
            models => items, total => total, page => n, pages => pages(total),
            search => q.search.clone().unwrap_or_default(),
            rows => rows,
            ..retry_context(retry.as_ref())
        },
    )
}

async fn models(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<ListQuery>,
) -> Response {
    let html = render(&c, &v, &q, None).await;
    v.finish(html)
}

async fn create_model(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<Fields>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, f.get("csrf").map_or("", String::as_str)) {
        return r;
    }
    let rows = submitted_rows(&f);
    let result = async {
        let tiers = pricing(&rows)?;
        let per_request = price(text(&f, "price_per_request"), "price_per_request".into())?;
        let n = NewGlobalModel {
            name: text(&f, "name").to_string(),
            display_name: Some(text(&f, "display_name").to_string()).filter(|s| !s.is_empty()),
            description: None,
            capabilities: None,
            supported_capabilities: capability_list(&f),
            default_tiered_pricing: tiers,
            default_price_per_request: per_request,
            is_active: true,
            config: None,
        };
        c.admin
            .create_global_model(&v.who.actor(), n)
            .await
            .map_err(|e| service_error(&e))
    }
    .await;
    match result {
        // Back to the list (the new model is on it, linked to its page).
        Ok(_) => v.finish(Redirect::to("/admin/models")),
        Err(error) => {
            let retry = Retry {
                fields: f,
                rows,
                error,
            };
            let html = render(&c, &v, &ListQuery::default(), Some(retry)).await;
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}

async fn render_model(
    c: &Console,
    v: &Viewer,
    id: GlobalModelId,
    retry: Option<Retry>,
) -> Result<Html<String>, Response> {
    let m: GlobalModel = match c.admin.get_global_model(id).await {
        Ok(m) => m,
        Err(e) => {
            let html = c.views.error(v, StatusCode::NOT_FOUND, &message(&e));
            return Err((StatusCode::NOT_FOUND, html).into_response());
        }
    };
    let serving = c.admin.global_model_providers(id).await.unwrap_or_default();
    let mut names: BTreeMap<ProviderId, String> = BTreeMap::new();
    for pm in &serving {
        if !names.contains_key(&pm.provider_id)
            && let Ok(p) = c.admin.get_provider(pm.provider_id).await
        {
            names.insert(pm.provider_id, p.display_name.clone());
        }
    }
    let providers: Vec<_> = serving
        .iter()
        .map(|pm| {
            context! {
                pm => pm,
                provider => names.get(&pm.provider_id).cloned().unwrap_or_else(|| pm.provider_id.to_string()),
            }
        })
        .collect();
    let rows = match &retry {
        Some(r) => padded(r.rows.clone()),
        None => rows_of(m.default_tiered_pricing.as_ref()),
    };
    Ok(c.views.page(
        v,
        "admin/model.html",
        "models",
        context! {
            m => m, providers => providers, rows => rows,
            cross_default => c.admin.settings().allow_cross_format(),
            ..retry_context(retry.as_ref())
        },
    ))
}

async fn model_page(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<GlobalModelId>,
) -> Response {
    match render_model(&c, &v, id, None).await {
        Ok(html) => v.finish(html),
        Err(r) => v.finish(r),
    }
}

async fn update_model(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<GlobalModelId>,
    Form(f): Form<Fields>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, f.get("csrf").map_or("", String::as_str)) {
        return r;
    }
    let rows = submitted_rows(&f);
    let result = async {
        let tiers = pricing(&rows)?;
        let per_request = price(text(&f, "price_per_request"), "price_per_request".into())?;
        let display = text(&f, "display_name");
        let mut caps = c
            .admin
            .get_global_model(id)
            .await
            .map_err(|e| service_error(&e))?
            .capabilities;
        caps.streaming = f.contains_key("cap_streaming");
        caps.vision = f.contains_key("cap_vision");
        caps.function_calling = f.contains_key("cap_function_calling");
        caps.extended_thinking = f.contains_key("cap_extended_thinking");
        caps.allow_cross_format = match text(&f, "allow_cross_format") {
            "" | "default" => None,
            "on" => Some(true),
            "off" => Some(false),
            _ => {
                return Err((
                    "allow_cross_format".to_string(),
                    "choose the system default, allowed or not allowed".to_string(),
                ));
            }
        };
        // `null` clears pricing (double options), so the patch is written as JSON.
        let patch: GlobalModelPatch = serde_json::from_value(json!({
            "display_name": Some(display).filter(|s| !s.is_empty()),
            "capabilities": caps,
            "supported_capabilities": capability_list(&f),
            "default_tiered_pricing": tiers,
            "default_price_per_request": per_request,
            "is_active": f.contains_key("is_active"),
        }))
        .map_err(|e| (String::new(), e.to_string()))?;
        c.admin
            .update_global_model(&v.who.actor(), id, patch)
            .await
            .map_err(|e| service_error(&e))
    }
    .await;
    match result {
        Ok(_) => v.finish(Redirect::to(&format!("/admin/models/{id}"))),
        Err(error) => {
            let retry = Retry {
                fields: f,
                rows,
                error,
            };
            match render_model(&c, &v, id, Some(retry)).await {
                Ok(html) => v.finish((StatusCode::UNPROCESSABLE_ENTITY, html)),
                Err(r) => v.finish(r),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(up_to: &str, input: &str, output: &str) -> TierRow {
        TierRow {
            up_to: up_to.into(),
            input: input.into(),
            output: output.into(),
            ..TierRow::default()
        }
    }

    #[test]
    fn rows_follow_the_submitted_indices() {
        let f: Fields = [
            ("input_7", "6"),
            ("output_7", "30"),
            ("up_to_0", "200000"),
            ("input_0", "3"),
            ("output_0", "15"),
            ("input_1", ""),
            ("input_99", "1"),
            ("name", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let rows = submitted_rows(&f);
        assert_eq!(rows.len(), 2);
        let p = pricing(&rows).unwrap().unwrap();
        assert_eq!(p.tiers[0].up_to, Some(200_000));
        assert_eq!(p.tiers[1].up_to, None);
        assert_eq!(p.tiers[1].input_per_m, "6".parse().unwrap());
    }

    #[test]
    fn bad_prices_name_their_field() {
        let e = pricing(&[row("", "abc", "1")]).unwrap_err();
        assert_eq!(e.0, "input_0");
        let e = pricing(&[row("1,000", "1", "2"), row("", "1", "-2")]).unwrap_err();
        assert_eq!(e.0, "output_1");
        let e = pricing(&[row("lots", "1", "2")]).unwrap_err();
        assert_eq!(e.0, "up_to_0");
        let e = pricing(&[row("", "1", "")]).unwrap_err();
        assert_eq!(e.0, "output_0");
        assert_eq!(pricing(&[]).unwrap(), None);
    }

    #[test]
    fn stored_tiers_prefill_the_editor() {
        let p = TieredPricing {
            tiers: vec![PriceTier::flat(
                "3.75".parse().unwrap(),
                "15".parse().unwrap(),
            )],
        };
        let rows = rows_of(Some(&p));
        assert_eq!(rows.len(), MIN_ROWS);
        assert_eq!(rows[0].input, "3.75");
        assert!(rows[1].is_empty());
        let full = TieredPricing {
            tiers: vec![p.tiers[0].clone(); MIN_ROWS],
        };
        let rows = rows_of(Some(&full));
        assert_eq!(rows.len(), MIN_ROWS + 1, "one empty row to add a tier");
        assert!(rows[MIN_ROWS].is_empty());
    }
}
