//! The user's own pages: the model catalog with prices and capability preferences,
//! announcements, profile and password, and a simple health view per API format.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aether_admin::ApiError;
use aether_admin::auth::CallerIp;
use aether_admin::service::health::TimelineQuery;
use aether_admin::service::users::ProfilePatch;
use aether_domain::ApiFormat;
use aether_domain::entities::HealthBucket;
use aether_store::{GlobalModelFilter, Page};
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::CookieJar;
use minijinja::{Value, context};
use serde::Deserialize;

use super::core::{ListQuery, message, page_of, pages};
use crate::Console;
use crate::session::{Viewer, cleared, with_tokens};

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "user/models.html",
        include_str!("../../templates/user/models.html"),
    ),
    (
        "user/announcements.html",
        include_str!("../../templates/user/announcements.html"),
    ),
    (
        "user/profile.html",
        include_str!("../../templates/user/profile.html"),
    ),
    (
        "user/status.html",
        include_str!("../../templates/user/status.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/models", get(models))
        .route("/models/capabilities", post(save_capabilities))
        .route("/announcements", get(announcements))
        .route("/profile", get(profile).post(save_profile))
        .route("/profile/password", post(change_password))
        .route("/status", get(status))
}

/// The capability tags offered as checkboxes even when no model declares them.
const KNOWN_CAPABILITIES: [&str; 2] = ["cache_1h", "context_1m"];

/// `*` wildcards, as the gateway matches allow-lists (`aether_gateway::plan::glob`).
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// An inline error: the form field it belongs to (empty: the whole form) and the message.
type FormError = (String, String);

fn form_error(e: &ApiError) -> FormError {
    match e {
        ApiError::Invalid { field, .. } => (field.unwrap_or_default().to_string(), message(e)),
        _ => (String::new(), message(e)),
    }
}

// ---- model catalog and capability preferences ----

#[derive(Deserialize, Default)]
struct NoticeQuery {
    saved: Option<String>,
}

async fn models_page(
    c: &Console,
    v: &Viewer,
    saved: Option<String>,
    err: Option<FormError>,
    draft: Option<(String, Vec<String>)>,
) -> Html<String> {
    let user = c
        .admin
        .get_user(v.who.user.id)
        .await
        .unwrap_or_else(|_| v.who.user.clone());
    let all = c
        .admin
        .list_global_models(
            &GlobalModelFilter {
                is_active: Some(true),
                ..GlobalModelFilter::default()
            },
            Page::all(),
        )
        .await;
    let (models, error) = match all {
        Ok(p) => (p.items, None),
        Err(e) => (Vec::new(), Some(message(&e))),
    };
    let allowed = user.allowed_models.clone();
    let mut capabilities: Vec<String> = KNOWN_CAPABILITIES.map(str::to_string).to_vec();
    let rows: Vec<Value> = models
        .into_iter()
        .map(|m| (m.provider_count, m.model))
        .filter(|(_, m)| {
            allowed
                .as_ref()
                .is_none_or(|l| l.iter().any(|p| glob(p, &m.name)))
        })
        .map(|(providers, m)| {
            for cap in &m.supported_capabilities {
                if !capabilities.contains(cap) {
                    capabilities.push(cap.clone());
                }
            }
            let tiers: Vec<Value> = m
                .default_tiered_pricing
                .as_ref()
                .map(|p| {
                    p.tiers
                        .iter()
                        .map(|t| {
                            let u = t.unit_prices();
                            context! {
                                up_to => t.up_to,
                                input => u.input, output => u.output,
                                cache_5m => u.cache_creation_5m,
                                cache_1h => u.cache_creation_1h,
                                cache_read => u.cache_read,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            // The user's preferences that apply to this model.
            let preferred: Vec<String> = user
                .model_capability_settings
                .iter()
                .filter(|(p, _)| glob(p, &m.name))
                .flat_map(|(_, caps)| caps.iter().cloned())
                .collect();
            context! {
                name => m.name, display_name => m.display_name, description => m.description,
                capabilities => m.capabilities,
                supported => m.supported_capabilities,
                tiers => tiers, per_request => m.default_price_per_request,
                preferred => preferred, served => providers > 0,
            }
        })
        .collect();
    let prefs: Vec<Value> = user
        .model_capability_settings
        .iter()
        .map(|(model, caps)| context! { model => model, caps => caps })
        .collect();
    let (draft_model, draft_caps) = draft.unwrap_or_default();
    c.views.page(
        v,
        "user/models.html",
        "user-models",
        context! {
            models => rows, prefs => prefs, capabilities => capabilities,
            restricted => allowed.is_some(),
            load_error => error, saved => saved,
            error_field => err.as_ref().map(|e| e.0.clone()),
            error => err.map(|e| e.1),
            draft_model => draft_model, draft_caps => draft_caps,
        },
    )
}

async fn models(State(c): State<Console>, v: Viewer, Query(q): Query<NoticeQuery>) -> Response {
    let html = models_page(&c, &v, q.saved, None, None).await;
    v.finish(html)
}

/// The preference form: `csrf`, `op` (`save` or `remove`), `model`, any number of `cap`
/// checkboxes and a free-text `other` (comma-separated). Read as pairs because checkboxes
/// repeat a name.
async fn save_capabilities(
    State(c): State<Console>,
    v: Viewer,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let one = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, x)| x.trim().to_string())
            .unwrap_or_default()
    };
    if let Some(r) = v.refuse_csrf(&c, &one("csrf")) {
        return r;
    }
    let model = one("model");
    let mut caps: Vec<String> = fields
        .iter()
        .filter(|(n, _)| n == "cap")
        .map(|(_, x)| x.trim().to_string())
        .collect();
    caps.extend(
        one("other")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    );
    let remove = one("op") == "remove";
    let err = if model.is_empty() {
        Some((
            "model".to_string(),
            "a model name or a pattern like claude-*".to_string(),
        ))
    } else if !remove && caps.is_empty() {
        Some((
            "caps".to_string(),
            "choose at least one capability (or remove the preference)".to_string(),
        ))
    } else {
        None
    };
    let result = match err {
        Some(e) => Err(e),
        None => match c.admin.get_user(v.who.user.id).await {
            Err(e) => Err(form_error(&e)),
            Ok(u) => {
                let mut settings: BTreeMap<String, Vec<String>> = u.model_capability_settings;
                if remove {
                    settings.remove(&model);
                } else {
                    settings.insert(model.clone(), caps.clone());
                }
                c.admin
                    .set_model_capabilities(&v.who.actor(), settings)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let (field, msg) = form_error(&e);
                        // The service names the whole map; the form shows it by the checkboxes.
                        let field = if field == "model_capability_settings" {
                            "caps".to_string()
                        } else {
                            field
                        };
                        (field, msg)
                    })
            }
        },
    };
    match result {
        Ok(()) => {
            let what = if remove { "removed" } else { "saved" };
            v.finish(Redirect::to(&format!("/models?saved={what}")))
        }
        Err(err) => {
            let html = models_page(&c, &v, None, Some(err), Some((model, caps))).await;
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}

// ---- announcements ----

async fn announcements(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<ListQuery>,
) -> Response {
    let (page, n) = page_of(&q);
    let list = c
        .admin
        .list_announcements(&v.who.actor(), false, page)
        .await;
    let (items, total, error) = match list {
        Ok(p) => (p.items, p.total, None),
        Err(e) => (Vec::new(), 0, Some(message(&e))),
    };
    let html = c.views.page(
        &v,
        "user/announcements.html",
        "user-announcements",
        context! {
            announcements => items, total => total, page => n, pages => pages(total),
            search => "", load_error => error,
        },
    );
    v.finish(html)
}

// ---- profile and password ----

#[derive(Deserialize, Default)]
struct ProfileQuery {
    done: Option<String>,
}

fn profile_page(
    c: &Console,
    v: &Viewer,
    done: Option<&str>,
    err: Option<FormError>,
    draft: Option<(String, String)>,
) -> Html<String> {
    let u = &v.who.user;
    let (email, username) = draft.unwrap_or_else(|| (u.email.clone(), u.username.clone()));
    let notice = match done {
        Some("profile") => Some("Profile saved."),
        Some("password") => Some(
            "Password changed. Your other sessions were signed out; this browser stays signed in.",
        ),
        _ => None,
    };
    c.views.page(
        v,
        "user/profile.html",
        "profile",
        context! {
            user => u, email => email, username => username, notice => notice,
            error_field => err.as_ref().map(|e| e.0.clone()),
            error => err.map(|e| e.1),
        },
    )
}

async fn profile(State(c): State<Console>, v: Viewer, Query(q): Query<ProfileQuery>) -> Response {
    let html = profile_page(&c, &v, q.done.as_deref(), None, None);
    v.finish(html)
}

#[derive(Deserialize)]
struct ProfileForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    username: String,
}

async fn save_profile(State(c): State<Console>, v: Viewer, Form(f): Form<ProfileForm>) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let patch = ProfilePatch {
        email: Some(f.email.trim().to_string()),
        username: Some(f.username.trim().to_string()),
    };
    match c.admin.update_profile(&v.who.actor(), patch).await {
        Ok(_) => v.finish(Redirect::to("/profile?done=profile")),
        Err(e) => {
            let html = profile_page(
                &c,
                &v,
                None,
                Some(form_error(&e)),
                Some((f.email, f.username)),
            );
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    old_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

async fn change_password(
    State(c): State<Console>,
    v: Viewer,
    CallerIp(ip): CallerIp,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let refuse = |v: Viewer, err: FormError| {
        let html = profile_page(&c, &v, None, Some(err), None);
        v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
    };
    if f.new_password != f.confirm_password {
        return refuse(
            v,
            (
                "confirm_password".into(),
                "the two new passwords differ".into(),
            ),
        );
    }
    let result = c
        .admin
        .change_password(&v.who.actor(), Some(&f.old_password), &f.new_password)
        .await;
    if let Err(e) = result {
        return refuse(v, form_error(&e));
    }
    // Every session of the account ended, this one too: sign this browser in again with the
    // new password so the user stays where they are.
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    match c
        .admin
        .login(&v.who.user.email, &f.new_password, ip, ua)
        .await
    {
        Ok(tokens) => {
            let jar = with_tokens(jar, &tokens, c.admin.refresh_ttl_seconds());
            (jar, Redirect::to("/profile?done=password")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: signing in again after a password change");
            (cleared(jar), Redirect::to("/login?next=/profile")).into_response()
        }
    }
}

// ---- health ----

/// Hours shown on the health view.
const STATUS_HOURS: u32 = 24;

/// A small bar of `cells` columns (each a slice of the look-back), coloured by how its
/// attempts fared, with a tooltip of the counts.
fn status_svg(format: &str, buckets: &[HealthBucket], cells: usize) -> String {
    let n = buckets.len().max(1);
    let (w, gap, h) = (10, 2, 18);
    let mut s = format!(
        r#"<svg class="status-bar" viewBox="0 0 {} {h}" role="img" aria-label="{format}: last {STATUS_HOURS} hours, oldest first">"#,
        cells * (w + gap) - gap
    );
    for i in 0..cells {
        let slice =
            &buckets[(i * n / cells).min(buckets.len())..((i + 1) * n / cells).min(buckets.len())];
        let ok: u64 = slice.iter().map(|b| b.successes).sum();
        let failed: u64 = slice.iter().map(|b| b.failures).sum();
        let state = aether_domain::entities::HealthState::of(ok, failed);
        let hours_ago = cells - i;
        let _ = write!(
            s,
            r#"<rect x="{}" y="0" width="{w}" height="{h}" rx="2" class="hb {}"><title>{}–{} h ago · {ok} ok, {failed} failed</title></rect>"#,
            i * (w + gap),
            state.as_str(),
            hours_ago,
            hours_ago - 1,
        );
    }
    s.push_str("</svg>");
    s
}

async fn status(State(c): State<Console>, v: Viewer) -> Response {
    let formats: Vec<ApiFormat> = match &v.who.user.allowed_api_formats {
        Some(l) => ApiFormat::ALL
            .into_iter()
            .filter(|f| l.contains(f))
            .collect(),
        None => ApiFormat::ALL.to_vec(),
    };
    let mut rows = Vec::new();
    for f in formats {
        let t = c
            .admin
            .health_timeline(TimelineQuery {
                hours: Some(STATUS_HOURS),
                api_format: Some(f),
                ..TimelineQuery::default()
            })
            .await;
        rows.push(match t {
            Ok(t) => {
                let ok: u64 = t.buckets.iter().map(|b| b.successes).sum();
                let failed: u64 = t.buckets.iter().map(|b| b.failures).sum();
                #[allow(clippy::cast_precision_loss)]
                let rate = (ok + failed > 0).then(|| 100.0 * ok as f64 / (ok + failed) as f64);
                let state = match rate {
                    None => "idle",
                    Some(r) if r >= 99.0 => "ok",
                    Some(r) if r >= 90.0 => "warn",
                    Some(_) => "bad",
                };
                context! {
                    format => f.as_str(), state => state,
                    rate => rate.map(|r| format!("{r:.1}")),
                    successes => ok, failures => failed,
                    svg => status_svg(f.as_str(), &t.buckets, STATUS_HOURS as usize),
                }
            }
            Err(e) => context! { format => f.as_str(), state => "unknown", error => message(&e) },
        });
    }
    let html = c.views.page(
        &v,
        "user/status.html",
        "status",
        context! { rows => rows, hours => STATUS_HOURS },
    );
    v.finish(html)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_like_the_gateway() {
        assert!(glob("claude-*", "claude-opus-4"));
        assert!(glob("*", "anything"));
        assert!(glob("claude-*-4", "claude-opus-4"));
        assert!(!glob("claude-*-4", "claude-opus-4-1"));
        assert!(glob("gpt-4o", "gpt-4o"));
        assert!(!glob("gpt-4o", "gpt-4o-mini"));
        assert!(glob("*mini", "gpt-4o-mini"));
    }
}
