//! Users (admin): the list (search, role and status filters, paging, quota use) with a "New
//! user" drawer, and a user's page: the edit form (email, username, new password, role,
//! active, quota and its period, allow-lists of providers, models and API formats as
//! checkboxes over the real catalog), "Reset quota", delete (confirmed by typing the email),
//! and the user's API keys (masked; a new key shown once on the response page; enable,
//! disable, delete).
//!
//! Every change goes through the `Admin` services, which validate, audit and refuse what
//! must not happen (deactivating or deleting oneself, removing the last admin); their
//! refusals are shown inline next to the form that caused them.

use std::collections::BTreeSet;

use aether_admin::ApiError;
use aether_admin::service::keys::{KeyPatch, NewKey};
use aether_admin::service::users::{NewUser, UserPatch};
use aether_domain::entities::{ApiKey, QuotaPeriod, Role, User};
use aether_domain::{ApiFormat, ApiKeyId, ProviderId, Timestamp, Usd, UserId};
use aether_store::{ApiKeyFilter, GlobalModelFilter, Page, ProviderFilter, UserFilter};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use super::core::{CsrfForm, PAGE_SIZE, message, pages};
use crate::Console;
use crate::session::{AdminViewer, Viewer};

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin/users.html",
        include_str!("../../templates/admin/users.html"),
    ),
    (
        "admin/user.html",
        include_str!("../../templates/admin/user.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/{id}", get(user).post(update_user))
        .route("/admin/users/{id}/reset-quota", post(reset_quota))
        .route("/admin/users/{id}/delete", post(delete_user))
        .route("/admin/users/{id}/keys", post(create_key))
        .route("/admin/users/{id}/keys/{key}/active", post(toggle_key))
        .route("/admin/users/{id}/keys/{key}/delete", post(delete_key))
}

/// The field at fault (empty: the whole form) and why.
type FieldError = (String, String);

/// A service refusal as an inline error: the field it names, if any, and the status of the
/// page that shows it (422 for bad input, 409 for a refused change, 404 for a missing record).
fn service_error(e: &ApiError) -> (StatusCode, FieldError) {
    match e {
        ApiError::Invalid { field, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            (field.unwrap_or_default().to_string(), message(e)),
        ),
        ApiError::Conflict(m) => {
            // Uniqueness conflicts name the column; put them by their field.
            let field = if m.contains("email") {
                "email"
            } else if m.contains("username") {
                "username"
            } else {
                ""
            };
            (StatusCode::CONFLICT, (field.to_string(), m.clone()))
        }
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, (String::new(), message(e))),
        _ => (
            StatusCode::UNPROCESSABLE_ENTITY,
            (String::new(), message(e)),
        ),
    }
}

fn invalid(field: &str, why: impl Into<String>) -> (StatusCode, FieldError) {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        (field.to_string(), why.into()),
    )
}

fn error_page(c: &Console, v: Viewer, status: StatusCode, msg: &str) -> Response {
    let html = c.views.error(&v, status, msg);
    v.finish((status, html))
}

/// Percent-encodes a query-string value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A quota typed by a person: empty is unlimited; `$`, spaces and thousands separators are
/// allowed; the amount is exact (at most 9 decimal places) and never negative.
fn parse_quota(raw: &str) -> Result<Option<Usd>, String> {
    let t: String = raw
        .trim()
        .trim_start_matches('$')
        .chars()
        .filter(|c| !matches!(c, ',' | '_' | ' '))
        .collect();
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<Usd>() {
        Ok(u) if u.is_negative() => Err("must not be negative; empty means unlimited".into()),
        Ok(u) => Ok(Some(u)),
        Err(aether_domain::MoneyError::TooPrecise(..)) => {
            Err("at most 9 decimal places (a nano-dollar)".into())
        }
        Err(_) => Err(format!(
            "“{}” is not an amount: a decimal number of USD such as 25 or 12.50",
            raw.trim()
        )),
    }
}

fn parse_period(raw: &str) -> Result<QuotaPeriod, String> {
    match raw.trim() {
        "" => Ok(QuotaPeriod::None),
        p => p
            .parse::<QuotaPeriod>()
            .map_err(|_| "one of none, daily, monthly".to_string()),
    }
}

fn parse_role(raw: &str) -> Result<Role, String> {
    match raw.trim() {
        "" => Ok(Role::User),
        r => r
            .parse::<Role>()
            .map_err(|_| "either user or admin".to_string()),
    }
}

/// An optional positive whole number typed by a person.
fn opt_count(raw: &str, field: &str, what: &str) -> Result<Option<u32>, (StatusCode, FieldError)> {
    let t = raw.trim().replace([',', '_'], "");
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(invalid(
            field,
            format!("a whole number of {what} above zero, or empty"),
        )),
    }
}

/// Quota use for display: spend of the current period (nothing once the period rolled
/// over), the limit, and how full it is in whole percent (exact integer arithmetic).
fn quota_view(u: &User, now: Timestamp) -> Value {
    let used = u.period_used(now);
    let percent = u.quota_usd.map(|q| {
        if q.nanos() <= 0 {
            100
        } else {
            let p = i128::from(used.nanos().max(0)) * 100 / i128::from(q.nanos());
            i64::try_from(p.min(100)).unwrap_or(100)
        }
    });
    context! {
        used => used,
        limit => u.quota_usd,
        percent => percent,
        exhausted => u.quota_usd.is_some_and(|q| used >= q),
        next_reset => u.quota_period.next_period_start(now),
    }
}

// ---- the list and "New user" ----

#[derive(Deserialize, Default)]
struct UsersQuery {
    #[serde(default)]
    search: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    active: String,
    page: Option<u32>,
    saved: Option<String>,
    /// The user just created (for the notice's link).
    id: Option<UserId>,
}

impl UsersQuery {
    fn filter(&self) -> UserFilter {
        UserFilter {
            search: Some(self.search.trim().to_string()).filter(|s| !s.is_empty()),
            role: self.role.parse::<Role>().ok(),
            is_active: match self.active.as_str() {
                "active" => Some(true),
                "disabled" => Some(false),
                _ => None,
            },
        }
    }

    /// The filters as a query string, for the pager's links.
    fn qs(&self) -> String {
        format!(
            "search={}&role={}&active={}",
            urlencode(self.search.trim()),
            urlencode(&self.role),
            urlencode(&self.active)
        )
    }
}

/// The "New user" form as typed (the password is never sent back).
#[derive(Deserialize, Serialize, Default)]
struct NewUserForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    username: String,
    #[serde(default, skip_serializing)]
    password: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    quota_usd: String,
    #[serde(default)]
    quota_period: String,
}

async fn users_page(
    c: &Console,
    v: &Viewer,
    q: &UsersQuery,
    failure: Option<(FieldError, NewUserForm)>,
) -> Html<String> {
    let n = q.page.unwrap_or(1).max(1);
    let page = Page {
        limit: PAGE_SIZE,
        offset: (n - 1).saturating_mul(PAGE_SIZE),
    };
    let (items, total, load_error) = match c.admin.list_users(&q.filter(), page).await {
        Ok(p) => (p.items, p.total, None),
        Err(e) => (Vec::new(), 0, Some(message(&e))),
    };
    let now = Timestamp::now();
    let mut rows = Vec::with_capacity(items.len());
    for u in items {
        let keys = c
            .admin
            .list_keys(
                &ApiKeyFilter {
                    user_id: Some(u.id),
                    ..ApiKeyFilter::default()
                },
                Page::new(1, 0),
            )
            .await
            .map(|p| p.total)
            .ok();
        let quota = quota_view(&u, now);
        rows.push(context! { u => u, quota => quota, keys => keys });
    }
    let notice = match q.saved.as_deref() {
        Some("created") => Some("User created."),
        Some("deleted") => Some("User deleted, with their API keys."),
        _ => None,
    };
    let (error_field, error, draft) = match failure {
        Some(((f, m), d)) => (Some(f), Some(m), d),
        None => (None, None, NewUserForm::default()),
    };
    c.views.page(
        v,
        "admin/users.html",
        "users",
        context! {
            users => rows, total => total, page => n, pages => pages(total),
            search => q.search.clone(), role => q.role.clone(), active => q.active.clone(),
            qs => q.qs(), filtered => q.filter().search.is_some() || !q.role.is_empty() || !q.active.is_empty(),
            load_error => load_error, notice => notice, created_id => q.id,
            error_field => error_field, error => error, draft => draft,
        },
    )
}

async fn users(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<UsersQuery>,
) -> Response {
    let html = users_page(&c, &v, &q, None).await;
    v.finish(html)
}

async fn create_user(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<NewUserForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result: Result<User, (StatusCode, FieldError)> = async {
        let quota = parse_quota(&f.quota_usd).map_err(|m| invalid("quota_usd", m))?;
        let quota_period = parse_period(&f.quota_period).map_err(|m| invalid("quota_period", m))?;
        let role = parse_role(&f.role).map_err(|m| invalid("role", m))?;
        let n = NewUser {
            email: f.email.trim().to_string(),
            username: Some(f.username.trim().to_string()).filter(|s| !s.is_empty()),
            password: f.password.clone(),
            role,
            // Empty is unlimited, as the form says (not the default-quota setting).
            quota_usd: Some(quota),
            quota_period,
            allowed_providers: None,
            allowed_api_formats: None,
            allowed_models: None,
            is_active: true,
        };
        c.admin
            .create_user(&v.who.actor(), n)
            .await
            .map_err(|e| service_error(&e))
    }
    .await;
    match result {
        Ok(u) => v.finish(Redirect::to(&format!(
            "/admin/users?saved=created&id={}",
            u.id
        ))),
        Err((status, err)) => {
            let html = users_page(&c, &v, &UsersQuery::default(), Some((err, f))).await;
            v.finish((status, html))
        }
    }
}

// ---- one user ----

#[derive(Deserialize, Default)]
struct UserQuery {
    saved: Option<String>,
}

/// The edit form's values: what was typed after a refusal, else the stored account.
#[derive(Serialize, Default)]
struct Draft {
    email: String,
    username: String,
    role: String,
    is_active: bool,
    quota_usd: String,
    quota_period: String,
    /// `all` or `only`, per allow-list.
    providers_mode: String,
    providers: Vec<String>,
    models_mode: String,
    models: Vec<String>,
    /// Model names or patterns not in the catalog, comma-separated.
    models_other: String,
    formats_mode: String,
    formats: Vec<String>,
}

fn mode<T>(l: Option<&Vec<T>>) -> String {
    if l.is_some() { "only" } else { "all" }.to_string()
}

impl Draft {
    fn of(u: &User, catalog: &BTreeSet<String>) -> Self {
        let models: Vec<String> = u.allowed_models.clone().unwrap_or_default();
        Self {
            email: u.email.clone(),
            username: u.username.clone(),
            role: u.role.as_str().to_string(),
            is_active: u.is_active,
            quota_usd: u.quota_usd.map(|q| q.to_string()).unwrap_or_default(),
            quota_period: u.quota_period.as_str().to_string(),
            providers_mode: mode(u.allowed_providers.as_ref()),
            providers: u
                .allowed_providers
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect(),
            models_mode: mode(u.allowed_models.as_ref()),
            models_other: models
                .iter()
                .filter(|m| !catalog.contains(*m))
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            models: models.into_iter().filter(|m| catalog.contains(m)).collect(),
            formats_mode: mode(u.allowed_api_formats.as_ref()),
            formats: u
                .allowed_api_formats
                .iter()
                .flatten()
                .map(|f| f.as_str().to_string())
                .collect(),
        }
    }
}

/// The "New key" form as typed.
#[derive(Deserialize, Serialize, Default)]
struct KeyForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expire_days: String,
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    concurrent_limit: String,
}

/// A form of the user's page that failed: which one, the status, the field and message, and
/// (for the edit and key forms) what was typed.
struct Failure {
    form: &'static str,
    status: StatusCode,
    field: String,
    message: String,
    draft: Option<Draft>,
    key_draft: Option<KeyForm>,
}

impl Failure {
    fn new(form: &'static str, (status, (field, message)): (StatusCode, FieldError)) -> Self {
        Self {
            form,
            status,
            field,
            message,
            draft: None,
            key_draft: None,
        }
    }
}

/// What the page shows besides the account.
#[derive(Default)]
struct Extra {
    failure: Option<Failure>,
    /// A key just created: the only time its full text is shown.
    created_key: Option<String>,
    notice: Option<&'static str>,
}

/// The real catalog the allow-lists offer: providers (id, name, label, active) and global
/// model names.
async fn catalog(c: &Console) -> (Vec<(ProviderId, String, String, bool)>, BTreeSet<String>) {
    let providers = c
        .admin
        .list_providers(&ProviderFilter::default(), Page::all())
        .await
        .map(|p| {
            p.items
                .into_iter()
                .map(|s| {
                    let p = s.provider;
                    let label = if p.display_name.trim().is_empty() {
                        p.name.clone()
                    } else {
                        p.display_name.clone()
                    };
                    (p.id, p.name, label, p.is_active)
                })
                .collect()
        })
        .unwrap_or_default();
    let models = c
        .admin
        .list_global_models(&GlobalModelFilter::default(), Page::all())
        .await
        .map(|p| p.items.into_iter().map(|g| g.model.name).collect())
        .unwrap_or_default();
    (providers, models)
}

async fn render(c: &Console, v: Viewer, id: UserId, x: Extra) -> Response {
    let u = match c.admin.get_user(id).await {
        Ok(u) => u,
        Err(e) => return error_page(c, v, StatusCode::NOT_FOUND, &message(&e)),
    };
    let (providers, models) = catalog(c).await;
    let keys = c
        .admin
        .list_keys(
            &ApiKeyFilter {
                user_id: Some(id),
                ..ApiKeyFilter::default()
            },
            Page::all(),
        )
        .await;
    let (keys, keys_error) = match keys {
        Ok(p) => (p.items, None),
        Err(e) => (Vec::new(), Some(message(&e))),
    };
    let now = Timestamp::now();
    let key_rows: Vec<Value> = keys
        .into_iter()
        .map(|k| {
            let expired = k.expires_at.is_some_and(|t| t <= now);
            context! { key => k, expired => expired }
        })
        .collect();

    let status = x.failure.as_ref().map_or(StatusCode::OK, |f| f.status);
    let (form, error_field, error, draft, key_draft) = match x.failure {
        Some(f) => (
            Some(f.form),
            Some(f.field),
            Some(f.message),
            f.draft,
            f.key_draft,
        ),
        None => (None, None, None, None, None),
    };
    let edit = draft.unwrap_or_else(|| Draft::of(&u, &models));

    // Checkbox options over the real catalog, plus anything the account still lists that
    // the catalog no longer has (so it is visible, and dropped only when unchecked).
    let mut provider_opts: Vec<Value> = providers
        .iter()
        .map(|(pid, name, label, active)| {
            let s = pid.to_string();
            context! {
                id => s.clone(), name => name, label => label, active => active,
                checked => edit.providers.contains(&s),
            }
        })
        .collect();
    for p in &edit.providers {
        if !providers.iter().any(|(pid, ..)| pid.to_string() == *p) {
            provider_opts.push(context! {
                id => p, name => p, label => "deleted provider", active => false, checked => true,
            });
        }
    }
    let model_opts: Vec<Value> = models
        .iter()
        .map(|m| context! { name => m, checked => edit.models.contains(m) })
        .collect();
    let format_opts: Vec<Value> = ApiFormat::ALL
        .iter()
        .map(|f| context! { name => f.as_str(), checked => edit.formats.iter().any(|x| x == f.as_str()) })
        .collect();
    // Names for the read-only summary of the stored allow-lists.
    let allowed_providers: Option<Vec<String>> = u.allowed_providers.as_ref().map(|l| {
        l.iter()
            .map(|pid| {
                providers.iter().find(|(p, ..)| p == pid).map_or_else(
                    || format!("{pid} (deleted)"),
                    |(_, _, label, _)| label.clone(),
                )
            })
            .collect()
    });

    let quota = quota_view(&u, now);
    let is_self = u.id == v.who.user.id;
    let html = c.views.page(
        &v,
        "admin/user.html",
        "users",
        context! {
            u => u, quota => quota, is_self => is_self,
            keys => key_rows, keys_error => keys_error,
            allowed_providers => allowed_providers,
            provider_opts => provider_opts, model_opts => model_opts, format_opts => format_opts,
            periods => ["none", "daily", "monthly"],
            edit => edit, key_draft => key_draft.unwrap_or_default(),
            form => form, error_field => error_field, error => error,
            created_key => x.created_key, notice => x.notice,
        },
    );
    v.finish((status, html))
}

async fn user(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<UserId>,
    Query(q): Query<UserQuery>,
) -> Response {
    let notice = match q.saved.as_deref() {
        Some("updated") => Some("Changes saved."),
        Some("quota-reset") => Some("Quota reset: a new period starts now with nothing spent."),
        Some("key-enabled") => Some("Key enabled."),
        Some("key-disabled") => Some("Key disabled: requests with it are refused."),
        Some("key-deleted") => Some("Key deleted."),
        _ => None,
    };
    render(
        &c,
        v,
        id,
        Extra {
            notice,
            ..Extra::default()
        },
    )
    .await
}

/// A posted form whose checkboxes repeat a name, read as pairs.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn one(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    }

    fn all(&self, name: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty() && seen.insert(v.clone()))
            .collect()
    }
}

impl Draft {
    fn typed(f: &Fields) -> Self {
        Self {
            email: f.one("email"),
            username: f.one("username"),
            role: f.one("role"),
            is_active: !f.one("is_active").is_empty(),
            quota_usd: f.one("quota_usd"),
            quota_period: f.one("quota_period"),
            providers_mode: f.one("providers_mode"),
            providers: f.all("provider"),
            models_mode: f.one("models_mode"),
            models: f.all("model"),
            models_other: f.one("models_other"),
            formats_mode: f.one("formats_mode"),
            formats: f.all("format"),
        }
    }
}

/// An allow-list from its mode radio: `all` is no restriction; `only` needs at least one
/// entry (an empty list would refuse everything: deactivate the user for that).
fn allow_list<T>(
    mode: &str,
    entries: Vec<T>,
    field: &str,
    what: &str,
) -> Result<Option<Vec<T>>, (StatusCode, FieldError)> {
    match mode {
        "only" if entries.is_empty() => Err(invalid(
            field,
            format!("check at least one {what}, or allow all"),
        )),
        "only" => Ok(Some(entries)),
        _ => Ok(None),
    }
}

/// The edit form: `csrf`, `email`, `username`, `password` (empty: unchanged), `role`,
/// `is_active` (checkbox), `quota_usd` (empty: unlimited), `quota_period`, and per
/// allow-list a mode radio (`providers_mode`, `models_mode`, `formats_mode`: `all` | `only`)
/// with repeated checkboxes (`provider`, `model`, `format`) and `models_other` (names or
/// `*` patterns, comma-separated).
async fn update_user(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<UserId>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields(fields);
    if let Some(r) = v.refuse_csrf(&c, &f.one("csrf")) {
        return r;
    }
    let draft = Draft::typed(&f);
    let result: Result<User, (StatusCode, FieldError)> =
        async {
            let role = parse_role(&draft.role).map_err(|m| invalid("role", m))?;
            let quota = parse_quota(&draft.quota_usd).map_err(|m| invalid("quota_usd", m))?;
            let quota_period =
                parse_period(&draft.quota_period).map_err(|m| invalid("quota_period", m))?;
            let (providers, _) = catalog(&c).await;
            let current = c.admin.get_user(id).await.map_err(|e| service_error(&e))?;
            let mut provider_ids = Vec::new();
            for p in &draft.providers {
                let known = providers.iter().any(|(pid, ..)| pid.to_string() == *p)
                    || current
                        .allowed_providers
                        .iter()
                        .flatten()
                        .any(|pid| pid.to_string() == *p);
                match p.parse::<ProviderId>() {
                    Ok(pid) if known => provider_ids.push(pid),
                    _ => {
                        return Err(invalid(
                            "allowed_providers",
                            format!("unknown provider {p}"),
                        ));
                    }
                }
            }
            let mut models = draft.models.clone();
            for m in draft.models_other.split(',').map(str::trim) {
                if m.is_empty() || models.iter().any(|x| x == m) {
                    continue;
                }
                if m.chars().any(|c| c.is_whitespace() || c.is_control()) || m.len() > 200 {
                    return Err(invalid(
                        "allowed_models",
                        format!("“{m}” is not a model name or pattern (no spaces, e.g. claude-*)"),
                    ));
                }
                models.push(m.to_string());
            }
            let mut formats = Vec::new();
            for x in &draft.formats {
                formats.push(x.parse::<ApiFormat>().map_err(|_| {
                    invalid("allowed_api_formats", format!("unknown API format {x}"))
                })?);
            }
            let patch = UserPatch {
                email: Some(draft.email.clone()),
                username: Some(draft.username.clone()),
                password: Some(f.one("password")).filter(|p| !p.is_empty()),
                role: Some(role),
                is_active: Some(draft.is_active),
                quota_usd: Some(quota),
                quota_period: Some(quota_period),
                allowed_providers: Some(allow_list(
                    &draft.providers_mode,
                    provider_ids,
                    "allowed_providers",
                    "provider",
                )?),
                allowed_api_formats: Some(allow_list(
                    &draft.formats_mode,
                    formats,
                    "allowed_api_formats",
                    "API format",
                )?),
                allowed_models: Some(allow_list(
                    &draft.models_mode,
                    models,
                    "allowed_models",
                    "model",
                )?),
                model_capability_settings: None,
            };
            c.admin
                .update_user(&v.who.actor(), id, patch)
                .await
                .map_err(|e| service_error(&e))
        }
        .await;
    match result {
        // An admin who just gave up their own admin role cannot see this page any more.
        Ok(u) if u.id == v.who.user.id && u.role != Role::Admin => v.finish(Redirect::to("/")),
        Ok(_) => v.finish(Redirect::to(&format!("/admin/users/{id}?saved=updated"))),
        Err(e) if e.0 == StatusCode::NOT_FOUND => error_page(&c, v, e.0, &e.1.1),
        Err(e) => {
            let mut failure = Failure::new("edit", e);
            failure.draft = Some(draft);
            render(
                &c,
                v,
                id,
                Extra {
                    failure: Some(failure),
                    ..Extra::default()
                },
            )
            .await
        }
    }
}

async fn reset_quota(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<UserId>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    match c.admin.reset_user_quota(&v.who.actor(), id).await {
        Ok(_) => v.finish(Redirect::to(&format!(
            "/admin/users/{id}?saved=quota-reset"
        ))),
        Err(ApiError::NotFound(_)) => error_page(&c, v, StatusCode::NOT_FOUND, "user not found"),
        Err(e) => {
            let failure = Failure::new("reset", service_error(&e));
            render(
                &c,
                v,
                id,
                Extra {
                    failure: Some(failure),
                    ..Extra::default()
                },
            )
            .await
        }
    }
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    /// The user's email, typed to confirm.
    #[serde(default)]
    confirm: String,
}

async fn delete_user(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<UserId>,
    Form(f): Form<DeleteForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let u = match c.admin.get_user(id).await {
        Ok(u) => u,
        Err(e) => return error_page(&c, v, StatusCode::NOT_FOUND, &message(&e)),
    };
    let result = if f.confirm.trim().eq_ignore_ascii_case(&u.email) {
        c.admin
            .delete_user(&v.who.actor(), id)
            .await
            .map_err(|e| service_error(&e))
    } else {
        Err(invalid(
            "confirm",
            format!("type {} to confirm the deletion", u.email),
        ))
    };
    match result {
        Ok(()) => v.finish(Redirect::to("/admin/users?saved=deleted")),
        Err(e) => {
            let failure = Failure::new("delete", e);
            render(
                &c,
                v,
                id,
                Extra {
                    failure: Some(failure),
                    ..Extra::default()
                },
            )
            .await
        }
    }
}

async fn create_key(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<UserId>,
    Form(f): Form<KeyForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = async {
        let name = f.name.trim();
        if name.is_empty() {
            return Err(invalid("name", "a name, e.g. laptop or ci"));
        }
        let n = NewKey {
            name: name.to_string(),
            expire_days: opt_count(&f.expire_days, "expire_days", "days")?,
            rate_limit: opt_count(&f.rate_limit, "rate_limit", "requests per minute")?,
            concurrent_limit: opt_count(&f.concurrent_limit, "concurrent_limit", "requests")?,
            ..NewKey::default()
        };
        c.admin
            .create_user_key(&v.who.actor(), id, n)
            .await
            .map_err(|e| service_error(&e))
    }
    .await;
    match result {
        // The full key is shown on this response only; it is never stored or shown again.
        Ok(k) => {
            render(
                &c,
                v,
                id,
                Extra {
                    created_key: Some(k.key),
                    notice: Some("Key created."),
                    ..Extra::default()
                },
            )
            .await
        }
        Err(e) if e.0 == StatusCode::NOT_FOUND => error_page(&c, v, e.0, &e.1.1),
        Err(e) => {
            let mut failure = Failure::new("key", e);
            failure.key_draft = Some(f);
            render(
                &c,
                v,
                id,
                Extra {
                    failure: Some(failure),
                    ..Extra::default()
                },
            )
            .await
        }
    }
}

/// The user's own key, or a 404 page (a key of someone else is not reachable from here).
async fn own_key(c: &Console, user: UserId, key: ApiKeyId) -> Result<ApiKey, String> {
    match c.admin.get_key(key).await {
        Ok(k) if k.user_id == Some(user) => Ok(k),
        Ok(_) => Err("API key not found".to_string()),
        Err(e) => Err(message(&e)),
    }
}

#[derive(Deserialize)]
struct ToggleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    active: String,
}

async fn toggle_key(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path((id, key)): Path<(UserId, ApiKeyId)>,
    Form(f): Form<ToggleForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    if let Err(m) = own_key(&c, id, key).await {
        return error_page(&c, v, StatusCode::NOT_FOUND, &m);
    }
    let on = f.active == "true";
    let patch = KeyPatch {
        is_active: Some(on),
        ..KeyPatch::default()
    };
    match c.admin.update_key(&v.who.actor(), key, patch).await {
        Ok(_) => {
            let done = if on { "key-enabled" } else { "key-disabled" };
            v.finish(Redirect::to(&format!("/admin/users/{id}?saved={done}")))
        }
        Err(e) => {
            let failure = Failure::new("keys", service_error(&e));
            render(
                &c,
                v,
                id,
                Extra {
                    failure: Some(failure),
                    ..Extra::default()
                },
            )
            .await
        }
    }
}

async fn delete_key(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path((id, key)): Path<(UserId, ApiKeyId)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    if let Err(m) = own_key(&c, id, key).await {
        return error_page(&c, v, StatusCode::NOT_FOUND, &m);
    }
    match c.admin.delete_key(&v.who.actor(), key).await {
        Ok(()) => v.finish(Redirect::to(&format!(
            "/admin/users/{id}?saved=key-deleted"
        ))),
        Err(e) => {
            let failure = Failure::new("keys", service_error(&e));
            render(
                &c,
                v,
                id,
                Extra {
                    failure: Some(failure),
                    ..Extra::default()
                },
            )
            .await
        }
    }
}
