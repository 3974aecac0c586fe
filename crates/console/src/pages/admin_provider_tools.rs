//! Provider tools (SPEC §7): "test model" and "fetch upstream models" for a provider, as
//! drawers on the provider page (admin/provider_tools.html) and as pages of their own that
//! work without JavaScript. A GET shows the form; a POST does the work and renders the
//! result (with JavaScript the drawer posts in the background and shows progress). Fetched
//! models can be added as provider models, each served as a chosen global model, in one post.
//! The upstream is called through the request path's [`Probe`] (an extension the server
//! installs); nothing is billed or recorded as usage, and the key is never shown unmasked.

use std::collections::{BTreeMap, HashMap};

use aether_admin::ApiError;
use aether_admin::service::probe::{
    Probe, TestModelReport, TestModelRequest, UpstreamModel, UpstreamModelPick,
};
use aether_domain::{GlobalModelId, ProviderId, ProviderKeyId, ProviderModelId};
use aether_store::{GlobalModelFilter, Page};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use super::core::message;
use crate::Console;
use crate::session::{AdminViewer, Viewer};

/// Templates rendered by this module: (name, source). `admin/provider_tools.html` is the
/// partial the provider page includes.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin/provider_tools.html",
        include_str!("../../templates/admin/provider_tools.html"),
    ),
    (
        "admin/provider_tools_macros.html",
        include_str!("../../templates/admin/provider_tools_macros.html"),
    ),
    (
        "admin/provider_tools_test.html",
        include_str!("../../templates/admin/provider_tools_test.html"),
    ),
    (
        "admin/provider_tools_upstream.html",
        include_str!("../../templates/admin/provider_tools_upstream.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/providers/{id}/test", get(test_page).post(run_test))
        .route(
            "/admin/providers/{id}/upstream-models",
            get(upstream_page).post(fetch_models),
        )
        .route(
            "/admin/providers/{id}/upstream-models/add",
            post(add_models),
        )
}

/// The field at fault (empty: the form as a whole) and why.
type FieldError = (String, String);

/// Rows of a submitted upstream list kept at most (a list holds at most 2,000 models).
const MAX_ROWS: usize = 5000;

fn unavailable() -> ApiError {
    ApiError::Internal("upstream probing is not available in this process".into())
}

/// How a service error is shown: the status of the page and the inline error.
fn failure(e: &ApiError) -> (StatusCode, FieldError) {
    match e {
        ApiError::Invalid { field, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            (field.unwrap_or_default().to_string(), message(e)),
        ),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, (String::new(), message(e))),
        ApiError::Internal(m) => {
            tracing::error!(error = %m, "provider tool failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                (String::new(), "internal error; see the server log".into()),
            )
        }
        other => (other.status(), (String::new(), message(e))),
    }
}

fn not_found(c: &Console, v: Viewer, e: &ApiError) -> Response {
    let html = c.views.error(&v, StatusCode::NOT_FOUND, &message(e));
    v.finish((StatusCode::NOT_FOUND, html))
}

/// The provider's endpoints with their keys, as the key pickers show them.
async fn endpoints(c: &Console, id: ProviderId) -> Vec<Value> {
    let mut out = Vec::new();
    for e in c.admin.list_endpoints(id).await.unwrap_or_default() {
        let keys: Vec<Value> = c
            .admin
            .list_provider_keys(e.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|k| context! { key => k })
            .collect();
        out.push(context! { endpoint => e, keys => keys });
    }
    out
}

fn opt_id<T: std::str::FromStr>(s: &str, field: &str, what: &str) -> Result<Option<T>, FieldError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| (field.to_string(), format!("choose {what} from the list")))
}

// ---- test model ----

#[derive(Deserialize, Serialize, Default)]
struct TestForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    provider_model_id: String,
    #[serde(default)]
    upstream_model: String,
    #[serde(default)]
    key_id: String,
}

async fn render_test(
    c: &Console,
    v: Viewer,
    id: ProviderId,
    status: StatusCode,
    typed: Option<&TestForm>,
    failure: Option<FieldError>,
    report: Option<&TestModelReport>,
) -> Response {
    let p = match c.admin.get_provider(id).await {
        Ok(p) => p,
        Err(e) => return not_found(c, v, &e),
    };
    let eps = endpoints(c, id).await;
    let models = c.admin.list_provider_models(id).await.unwrap_or_default();
    let (error_field, error) = failure.unzip();
    let html = c.views.page(
        &v,
        "admin/provider_tools_test.html",
        "providers",
        context! {
            p => p, endpoints => eps, models => models, typed => typed,
            error_field => error_field, error => error, report => report,
        },
    );
    v.finish((status, html))
}

async fn test_page(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
) -> Response {
    render_test(&c, v, id, StatusCode::OK, None, None, None).await
}

fn test_request(f: &TestForm) -> Result<TestModelRequest, FieldError> {
    Ok(TestModelRequest {
        provider_model_id: opt_id::<ProviderModelId>(
            &f.provider_model_id,
            "provider_model_id",
            "a model",
        )?,
        upstream_model: Some(f.upstream_model.trim().to_string()).filter(|s| !s.is_empty()),
        key_id: opt_id::<ProviderKeyId>(&f.key_id, "key_id", "a key")?,
        endpoint_id: None,
    })
}

async fn run_test(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    probe: Option<Extension<Probe>>,
    Form(f): Form<TestForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let req = match test_request(&f) {
        Ok(r) => r,
        Err(fe) => {
            return render_test(
                &c,
                v,
                id,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&f),
                Some(fe),
                None,
            )
            .await;
        }
    };
    let result = match probe {
        Some(Extension(p)) => {
            c.admin
                .test_model(&v.who.actor(), p.0.as_ref(), id, req)
                .await
        }
        None => Err(unavailable()),
    };
    match result {
        Ok(report) => render_test(&c, v, id, StatusCode::OK, Some(&f), None, Some(&report)).await,
        Err(e @ ApiError::NotFound("provider")) => not_found(&c, v, &e),
        Err(e) => {
            let (status, fe) = failure(&e);
            render_test(&c, v, id, status, Some(&f), Some(fe), None).await
        }
    }
}

// ---- fetch upstream models and add some ----

/// What the upstream-models page shows besides the form.
#[derive(Default)]
struct UpstreamView {
    key_id: Option<String>,
    /// The fetched (or submitted) list.
    list: Option<Value>,
    picks: Vec<usize>,
    chosen: BTreeMap<usize, String>,
    failure: Option<FieldError>,
    notice: Option<String>,
}

async fn render_upstream(
    c: &Console,
    v: Viewer,
    id: ProviderId,
    status: StatusCode,
    view: UpstreamView,
) -> Response {
    let p = match c.admin.get_provider(id).await {
        Ok(p) => p,
        Err(e) => return not_found(c, v, &e),
    };
    let eps = endpoints(c, id).await;
    let models = c.admin.list_provider_models(id).await.unwrap_or_default();
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
    let (error_field, error) = view.failure.unzip();
    let html = c.views.page(
        &v,
        "admin/provider_tools_upstream.html",
        "providers",
        context! {
            p => p, endpoints => eps, models => models, globals => globals, names => names,
            key_id => view.key_id, list => view.list, picks => view.picks, chosen => view.chosen,
            error_field => error_field, error => error, notice => view.notice,
        },
    );
    v.finish((status, html))
}

#[derive(Deserialize)]
struct UpstreamQuery {
    saved: Option<u32>,
}

async fn upstream_page(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    Query(q): Query<UpstreamQuery>,
) -> Response {
    let notice = q.saved.map(|n| match n {
        0 => "No models added: the picked ones are already served by this provider.".to_string(),
        1 => "1 model added; routing uses it at once.".to_string(),
        n => format!("{n} models added; routing uses them at once."),
    });
    let view = UpstreamView {
        notice,
        ..UpstreamView::default()
    };
    render_upstream(&c, v, id, StatusCode::OK, view).await
}

#[derive(Deserialize)]
struct FetchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key_id: String,
}

async fn fetch_models(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    probe: Option<Extension<Probe>>,
    Form(f): Form<FetchForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let key_id = Some(f.key_id.trim().to_string()).filter(|s| !s.is_empty());
    let key = match opt_id::<ProviderKeyId>(&f.key_id, "key_id", "a key") {
        Ok(k) => k,
        Err(fe) => {
            let view = UpstreamView {
                key_id,
                failure: Some(fe),
                ..UpstreamView::default()
            };
            return render_upstream(&c, v, id, StatusCode::UNPROCESSABLE_ENTITY, view).await;
        }
    };
    let result = match probe {
        Some(Extension(p)) => {
            c.admin
                .fetch_upstream_models(&v.who.actor(), p.0.as_ref(), id, None, key)
                .await
        }
        None => Err(unavailable()),
    };
    match result {
        Ok(list) => {
            let view = UpstreamView {
                key_id,
                list: Some(Value::from_serialize(&list)),
                ..UpstreamView::default()
            };
            render_upstream(&c, v, id, StatusCode::OK, view).await
        }
        Err(e @ ApiError::NotFound("provider")) => not_found(&c, v, &e),
        Err(e) => {
            let (status, fe) = failure(&e);
            let view = UpstreamView {
                key_id,
                failure: Some(fe),
                ..UpstreamView::default()
            };
            render_upstream(&c, v, id, status, view).await
        }
    }
}

/// One row of a submitted upstream list.
struct Row {
    index: usize,
    id: String,
    name: String,
}

/// The rows of a submitted list (`id_<n>`, `name_<n>`), in order.
fn rows(f: &HashMap<String, String>) -> Vec<Row> {
    let mut out: Vec<Row> = f
        .iter()
        .filter_map(|(k, v)| {
            let index = k.strip_prefix("id_")?.parse::<usize>().ok()?;
            (index < MAX_ROWS && !v.trim().is_empty()).then(|| Row {
                index,
                id: v.trim().to_string(),
                name: f
                    .get(&format!("name_{index}"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by_key(|r| r.index);
    out
}

async fn add_models(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ProviderId>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let f: HashMap<String, String> = fields.into_iter().collect();
    let csrf = f.get("csrf").map_or("", String::as_str);
    if let Some(r) = v.refuse_csrf(&c, csrf) {
        return r;
    }
    let rows = rows(&f);
    let picks: Vec<usize> = rows
        .iter()
        .filter(|r| {
            f.get(&format!("pick_{}", r.index))
                .is_some_and(|x| x == "on")
        })
        .map(|r| r.index)
        .collect();
    let chosen: BTreeMap<usize, String> = rows
        .iter()
        .filter_map(|r| {
            let g = f.get(&format!("global_{}", r.index))?.trim();
            (!g.is_empty()).then(|| (r.index, g.to_string()))
        })
        .collect();
    let checked = (|| {
        if picks.is_empty() {
            return Err((String::new(), "Tick at least one model to add.".to_string()));
        }
        let mut out = Vec::with_capacity(picks.len());
        for r in rows.iter().filter(|r| picks.contains(&r.index)) {
            let field = format!("global_{}", r.index);
            let global = chosen
                .get(&r.index)
                .ok_or_else(|| {
                    (
                        field.clone(),
                        format!("Choose the global model {} is served as.", r.id),
                    )
                })?
                .parse::<GlobalModelId>()
                .map_err(|_| (field, "choose a global model from the list".to_string()))?;
            out.push(UpstreamModelPick {
                upstream_model: r.id.clone(),
                global_model_id: global,
            });
        }
        Ok(out)
    })();
    let result = match checked {
        Ok(picked) => c
            .admin
            .add_upstream_models(&v.who.actor(), id, picked)
            .await
            .map_err(|e| failure(&e)),
        Err(fe) => Err((StatusCode::UNPROCESSABLE_ENTITY, fe)),
    };
    match result {
        Ok(created) => v.finish(Redirect::to(&format!(
            "/admin/providers/{id}/upstream-models?saved={}",
            created.len()
        ))),
        Err((StatusCode::NOT_FOUND, _)) => not_found(&c, v, &ApiError::NotFound("provider")),
        Err((status, fe)) => {
            // The submitted list again, compared with the configuration as it is now.
            let upstream: Vec<UpstreamModel> = rows
                .iter()
                .map(|r| UpstreamModel {
                    id: r.id.clone(),
                    display_name: Some(r.name.clone()).filter(|s| !s.is_empty()),
                })
                .collect();
            let models = c
                .admin
                .upstream_views(id, upstream)
                .await
                .unwrap_or_default();
            let list = context! {
                ok => true, url => "", pages => 1, truncated => false,
                target => context! {
                    endpoint_id => f.get("endpoint_id").cloned().unwrap_or_default(),
                    api_format => f.get("api_format").cloned().unwrap_or_default(),
                },
                models => Value::from_serialize(&models),
            };
            let view = UpstreamView {
                list: Some(list),
                picks,
                chosen,
                failure: Some(fe),
                ..UpstreamView::default()
            };
            render_upstream(&c, v, id, status, view).await
        }
    }
}
