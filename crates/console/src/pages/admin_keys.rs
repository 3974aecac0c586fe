//! Standalone keys (admin): the list with balances, creation with an opening balance (the
//! full key shown once, on the response page), and a key's page with its balance ledger,
//! balance adjustments, enable/disable and delete.

use aether_admin::ApiError;
use aether_admin::service::keys::{BalanceAdjust, KeyPatch, NewKey};
use aether_domain::entities::LedgerKind;
use aether_domain::{ApiKeyId, Timestamp, Usd};
use aether_store::{ApiKeyFilter, Page};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::Deserialize;

use super::core::{ListQuery, PAGE_SIZE, message, page_of, pages};
use crate::Console;
use crate::session::{AdminViewer, Viewer};

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin/keys.html",
        include_str!("../../templates/admin/keys.html"),
    ),
    (
        "admin/key.html",
        include_str!("../../templates/admin/key.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/keys", get(keys).post(create_key))
        .route("/admin/keys/{id}", get(key))
        .route("/admin/keys/{id}/balance", post(adjust))
        .route("/admin/keys/{id}/active", post(toggle))
        .route("/admin/keys/{id}/delete", post(delete))
}

/// An inline error: the form field it belongs to (empty: the whole form) and the message.
type FormError = (String, String);

fn form_error(e: &ApiError) -> FormError {
    match e {
        ApiError::Invalid { field, .. } => (field.unwrap_or_default().to_string(), message(e)),
        _ => (String::new(), message(e)),
    }
}

fn error_page(c: &Console, v: Viewer, status: StatusCode, msg: &str) -> Response {
    let html = c.views.error(&v, status, msg);
    v.finish((status, html))
}

/// A positive (or, with `signed`, any non-zero) amount in USD typed by a person.
fn parse_usd(field: &str, raw: &str, signed: bool) -> Result<Usd, FormError> {
    let raw = raw.trim().trim_start_matches('$').trim();
    let hint = if signed {
        "a decimal amount in USD, e.g. 10 or -2.50"
    } else {
        "a positive decimal amount in USD, e.g. 10 or 2.50"
    };
    match raw.parse::<Usd>() {
        Ok(u) if u.is_zero() => Err((field.into(), "must not be zero".into())),
        Ok(u) if u.is_negative() && !signed => Err((field.into(), hint.into())),
        Ok(u) => Ok(u),
        Err(_) => Err((field.into(), hint.into())),
    }
}

// ---- list and create ----

#[derive(Deserialize, Default)]
struct KeysQuery {
    search: Option<String>,
    page: Option<u32>,
    deleted: Option<String>,
}

/// The form as typed, to refill it after a refusal.
#[derive(Deserialize, Default, serde::Serialize)]
struct NewKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    initial_balance_usd: String,
    #[serde(default)]
    expire_days: String,
}

struct ListExtra {
    created: Option<(String, ApiKeyId)>,
    deleted: bool,
    error: Option<FormError>,
    draft: Option<NewKeyForm>,
}

async fn keys_page(c: &Console, v: &Viewer, q: &KeysQuery, x: ListExtra) -> Html<String> {
    let (page, n) = page_of(&ListQuery {
        search: None,
        page: q.page,
    });
    let search = q.search.clone().unwrap_or_default();
    let list = c
        .admin
        .list_keys(
            &ApiKeyFilter {
                standalone: Some(true),
                search: Some(search.trim().to_string()).filter(|s| !s.is_empty()),
                ..ApiKeyFilter::default()
            },
            page,
        )
        .await;
    let (items, total, load_error) = match list {
        Ok(p) => (p.items, p.total, None),
        Err(e) => (Vec::new(), 0, Some(message(&e))),
    };
    let now = Timestamp::now();
    let rows: Vec<_> = items
        .into_iter()
        .map(|k| {
            let expired = k.expires_at.is_some_and(|t| t <= now);
            context! { key => k, expired => expired }
        })
        .collect();
    let (created, created_id) = x
        .created
        .map_or((None, None), |(k, id)| (Some(k), Some(id)));
    c.views.page(
        v,
        "admin/keys.html",
        "standalone",
        context! {
            keys => rows, total => total, page => n, pages => pages(total),
            search => search, load_error => load_error,
            created => created, created_id => created_id, deleted => x.deleted,
            error_field => x.error.as_ref().map(|e| e.0.clone()),
            error => x.error.map(|e| e.1),
            draft => x.draft.unwrap_or_default(),
        },
    )
}

async fn keys(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<KeysQuery>,
) -> Response {
    let deleted = q.deleted.is_some();
    let html = keys_page(
        &c,
        &v,
        &q,
        ListExtra {
            created: None,
            deleted,
            error: None,
            draft: None,
        },
    )
    .await;
    v.finish(html)
}

async fn create_key(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<NewKeyForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result: Result<_, FormError> = async {
        let name = f.name.trim();
        if name.is_empty() {
            return Err(("name".into(), "a name, e.g. the customer's".into()));
        }
        let balance = parse_usd("initial_balance_usd", &f.initial_balance_usd, false)?;
        let days = f.expire_days.trim();
        let expire_days = if days.is_empty() {
            None
        } else {
            Some(days.parse::<u32>().ok().filter(|d| *d > 0).ok_or_else(|| {
                (
                    "expire_days".to_string(),
                    "a whole number of days, or empty for no expiry".to_string(),
                )
            })?)
        };
        let n = NewKey {
            name: name.to_string(),
            expire_days,
            initial_balance_usd: Some(balance),
            ..NewKey::default()
        };
        c.admin
            .create_standalone_key(&v.who.actor(), n)
            .await
            .map_err(|e| form_error(&e))
    }
    .await;
    match result {
        // The full key is shown on this response only; it is never stored or shown again.
        Ok(k) => {
            let html = keys_page(
                &c,
                &v,
                &KeysQuery::default(),
                ListExtra {
                    created: Some((k.key, k.api_key.id)),
                    deleted: false,
                    error: None,
                    draft: None,
                },
            )
            .await;
            v.finish(html)
        }
        Err(err) => {
            let html = keys_page(
                &c,
                &v,
                &KeysQuery::default(),
                ListExtra {
                    created: None,
                    deleted: false,
                    error: Some(err),
                    draft: Some(NewKeyForm {
                        csrf: String::new(),
                        ..f
                    }),
                },
            )
            .await;
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}

// ---- one key ----

#[derive(Deserialize, Default)]
struct KeyQuery {
    page: Option<u32>,
    done: Option<String>,
}

/// The adjust form as typed.
#[derive(Deserialize, Default, serde::Serialize)]
struct AdjustForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    amount_usd: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    reason: String,
}

async fn key_page(
    c: &Console,
    v: Viewer,
    id: ApiKeyId,
    q: &KeyQuery,
    error: Option<FormError>,
    draft: Option<AdjustForm>,
) -> Response {
    let k = match c.admin.get_key(id).await {
        Ok(k) if k.is_standalone => k,
        Ok(_) => return error_page(c, v, StatusCode::NOT_FOUND, "standalone key not found"),
        Err(e) => return error_page(c, v, StatusCode::NOT_FOUND, &message(&e)),
    };
    let n = q.page.unwrap_or(1).max(1);
    let ledger = c
        .admin
        .ledger(
            id,
            Page {
                limit: PAGE_SIZE,
                offset: (n - 1) * PAGE_SIZE,
            },
        )
        .await;
    let (entries, total, load_error) = match ledger {
        Ok(p) => (p.items, p.total, None),
        Err(e) => (Vec::new(), 0, Some(message(&e))),
    };
    let notice = match q.done.as_deref() {
        Some("adjusted") => Some("Balance adjusted."),
        Some("enabled") => Some("Key enabled."),
        Some("disabled") => Some("Key disabled: requests with it are refused."),
        _ => None,
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let expired = k.expires_at.is_some_and(|t| t <= Timestamp::now());
    let html = c.views.page(
        &v,
        "admin/key.html",
        "standalone",
        context! {
            key => k, expired => expired,
            entries => entries, total => total, page => n, pages => pages(total),
            search => "", load_error => load_error, notice => notice,
            kinds => [LedgerKind::TopUp.as_str(), LedgerKind::Refund.as_str(), LedgerKind::Adjustment.as_str()],
            error_field => error.as_ref().map(|e| e.0.clone()),
            error => error.map(|e| e.1),
            draft => draft.unwrap_or_default(),
        },
    );
    v.finish((status, html))
}

async fn key(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ApiKeyId>,
    Query(q): Query<KeyQuery>,
) -> Response {
    key_page(&c, v, id, &q, None, None).await
}

async fn adjust(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ApiKeyId>,
    Form(f): Form<AdjustForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result: Result<(), FormError> = async {
        let amount = parse_usd("amount_usd", &f.amount_usd, true)?;
        let kind = match f.kind.trim() {
            "" => None,
            k => Some(k.parse::<LedgerKind>().map_err(|_| {
                (
                    "kind".to_string(),
                    "one of topup, refund, adjustment".to_string(),
                )
            })?),
        };
        let reason = Some(f.reason.trim().to_string()).filter(|r| !r.is_empty());
        c.admin
            .adjust_balance(
                &v.who.actor(),
                id,
                BalanceAdjust {
                    amount_usd: amount,
                    kind,
                    reason,
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| match &e {
                // The service refuses a balance below zero as a conflict; show it by the amount.
                ApiError::Conflict(m) => ("amount_usd".to_string(), m.clone()),
                _ => form_error(&e),
            })
    }
    .await;
    match result {
        Ok(()) => v.finish(Redirect::to(&format!("/admin/keys/{id}?done=adjusted"))),
        Err(err) => {
            let draft = AdjustForm {
                csrf: String::new(),
                ..f
            };
            key_page(&c, v, id, &KeyQuery::default(), Some(err), Some(draft)).await
        }
    }
}

#[derive(Deserialize)]
struct ToggleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    active: String,
}

async fn toggle(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ApiKeyId>,
    Form(f): Form<ToggleForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let on = f.active == "true";
    let patch = KeyPatch {
        is_active: Some(on),
        ..KeyPatch::default()
    };
    match c.admin.update_key(&v.who.actor(), id, patch).await {
        Ok(_) => {
            let done = if on { "enabled" } else { "disabled" };
            v.finish(Redirect::to(&format!("/admin/keys/{id}?done={done}")))
        }
        Err(e) => {
            let status = if matches!(e, ApiError::NotFound(_)) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            error_page(&c, v, status, &message(&e))
        }
    }
}

async fn delete(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<ApiKeyId>,
    Form(f): Form<super::core::CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    match c.admin.get_key(id).await {
        Ok(k) if k.is_standalone => {}
        Ok(_) => return error_page(&c, v, StatusCode::NOT_FOUND, "standalone key not found"),
        Err(e) => return error_page(&c, v, StatusCode::NOT_FOUND, &message(&e)),
    }
    match c.admin.delete_key(&v.who.actor(), id).await {
        Ok(()) => v.finish(Redirect::to("/admin/keys?deleted=1")),
        Err(e) => error_page(&c, v, StatusCode::BAD_REQUEST, &message(&e)),
    }
}
