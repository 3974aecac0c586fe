//! Global models and their default pricing: the list, and a form with a tiered pricing editor
//! (context-size tiers, each with input / output / cache-write 5 m / cache-write 1 h /
//! cache-read prices per 1M tokens) and an optional per-request price.

use aether_admin::ApiError;
use aether_admin::service::models::NewGlobalModel;
use aether_domain::Usd;
use aether_store::GlobalModelFilter;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::get;
use minijinja::context;
use serde_json::{Value, json};

use super::core::{ListQuery, message, page_of, pages};
use crate::Console;
use crate::session::{AdminViewer, Viewer};

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[(
    "admin/models.html",
    include_str!("../../templates/admin/models.html"),
)];

pub fn routes() -> Router<Console> {
    Router::new().route("/admin/models", get(models).post(create_model))
}

/// Rows the pricing editor offers (empty rows are ignored).
const TIER_ROWS: usize = 3;

async fn render(
    c: &Console,
    v: &Viewer,
    q: &ListQuery,
    error: Option<(String, String)>,
) -> axum::response::Html<String> {
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
    c.views.page(
        v,
        "admin/models.html",
        "models",
        context! {
            models => items, total => total, page => n, pages => pages(total),
            search => q.search.clone().unwrap_or_default(),
            rows => (0..TIER_ROWS).collect::<Vec<_>>(),
            error_field => error.as_ref().map(|e| e.0.clone()),
            error => error.map(|e| e.1),
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

/// The form arrives flat (`name`, `up_to_0`, `input_0`, …); tiers are read row by row.
type Fields = std::collections::HashMap<String, String>;

fn money(fields: &Fields, key: &str) -> Result<Option<Usd>, (String, String)> {
    let v = fields.get(key).map_or("", |s| s.trim());
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<Usd>().map(Some).map_err(|_| {
        (
            key.to_string(),
            format!("“{v}” is not a price: a decimal amount of USD per 1M tokens"),
        )
    })
}

/// The pricing the editor describes, or the field at fault.
fn pricing(fields: &Fields) -> Result<Option<Value>, (String, String)> {
    let mut tiers = Vec::new();
    for i in 0..TIER_ROWS {
        let input = money(fields, &format!("input_{i}"))?;
        let output = money(fields, &format!("output_{i}"))?;
        let up_to = fields.get(&format!("up_to_{i}")).map_or("", |s| s.trim());
        let (Some(input), Some(output)) = (input, output) else {
            if input.is_some() || output.is_some() || !up_to.is_empty() {
                return Err((
                    format!("input_{i}"),
                    "a tier needs both an input and an output price".into(),
                ));
            }
            continue;
        };
        let up_to: Option<u64> = if up_to.is_empty() {
            None
        } else {
            Some(up_to.replace([',', '_'], "").parse().map_err(|_| {
                (
                    format!("up_to_{i}"),
                    "a context size in tokens, or empty for no limit".to_string(),
                )
            })?)
        };
        tiers.push(json!({
            "up_to": up_to, "input_per_m": input, "output_per_m": output,
            "cache_creation_per_m": money(fields, &format!("cache_5m_{i}"))?,
            "cache_creation_1h_per_m": money(fields, &format!("cache_1h_{i}"))?,
            "cache_read_per_m": money(fields, &format!("cache_read_{i}"))?,
        }));
    }
    Ok((!tiers.is_empty()).then(|| json!({ "tiers": tiers })))
}

async fn create_model(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<Fields>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, f.get("csrf").map_or("", String::as_str)) {
        return r;
    }
    let result = async {
        let tiers = pricing(&f)?;
        let per_request = money(&f, "price_per_request")?;
        let n: NewGlobalModel = serde_json::from_value(json!({
            "name": f.get("name").map_or("", |s| s.trim()),
            "display_name": f.get("display_name").map(|s| s.trim()).filter(|s| !s.is_empty()),
            "default_tiered_pricing": tiers,
            "default_price_per_request": per_request,
        }))
        .map_err(|e| ("name".to_string(), e.to_string()))?;
        c.admin
            .create_global_model(&v.who.actor(), n)
            .await
            .map(|_| ())
            .map_err(|e| match &e {
                ApiError::Invalid { field, .. } => {
                    (field.unwrap_or_default().to_string(), message(&e))
                }
                _ => (String::new(), message(&e)),
            })
    }
    .await;
    match result {
        Ok(()) => v.finish(Redirect::to("/admin/models")),
        Err(err) => {
            let html = render(&c, &v, &ListQuery::default(), Some(err)).await;
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}
