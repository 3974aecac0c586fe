//! The admin "System" pages: the health monitor (one SVG timeline per API format), live cache
//! affinity with its hit/switch statistics (an SVG bar per minute of the last hour), IP rules, the audit log, announcements, and the settings form generated from the
//! settings declaration (with configuration export and import).

use std::fmt::Write as _;

use aether_admin::ApiError;
use aether_admin::auth::CallerIp;
use aether_admin::service::affinity::AffinityStatsView;
use aether_admin::service::config_io::{
    ExportV1, ImportAction, ImportKind, ImportStats, MergeMode,
};
use aether_admin::service::health::TimelineQuery;
use aether_admin::service::system::{NewAnnouncement, NewIpRule, SettingView};
use aether_coord::AffinityBucket;
use aether_domain::entities::{AnnouncementKind, HealthBucket, HealthState, IpAction};
use aether_domain::settings::{self, SettingKind};
use aether_domain::{AnnouncementId, ApiFormat, IpRuleId, Timestamp};
use aether_store::{AuditFilter, Page};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::core::{CsrfForm, PAGE_SIZE, message, pages};
use crate::Console;
use crate::session::{AdminViewer, Viewer};

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin/health.html",
        include_str!("../../templates/admin/health.html"),
    ),
    (
        "admin/affinity.html",
        include_str!("../../templates/admin/affinity.html"),
    ),
    (
        "admin/security.html",
        include_str!("../../templates/admin/security.html"),
    ),
    (
        "admin/audit.html",
        include_str!("../../templates/admin/audit.html"),
    ),
    (
        "admin/announcements.html",
        include_str!("../../templates/admin/announcements.html"),
    ),
    (
        "admin/settings.html",
        include_str!("../../templates/admin/settings.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/health", get(health))
        .route("/admin/affinity", get(affinity))
        .route("/admin/affinity/clear", post(clear_affinity))
        .route("/admin/security", get(security).post(create_ip_rule))
        .route("/admin/security/{id}/delete", post(delete_ip_rule))
        .route("/admin/audit", get(audit))
        .route(
            "/admin/announcements",
            get(announcements).post(create_announcement),
        )
        .route(
            "/admin/announcements/{id}/delete",
            post(delete_announcement),
        )
        .route("/admin/settings", get(settings_page).post(save_settings))
        .route("/admin/settings/export", get(export_config))
        .route(
            "/admin/settings/import",
            // A pasted or chosen export may be large (the JSON API takes up to 16 MiB too).
            post(import_config).layer(DefaultBodyLimit::max(16 * 1024 * 1024)),
        )
}

/// The field an error is about (for `field_error`), or `""` for a form-level message.
fn field_of(e: &ApiError) -> String {
    match e {
        ApiError::Invalid { field, .. } => field.unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// `2026-05-01 14:03` (UTC).
fn minute(t: Timestamp) -> String {
    let d = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute()
    )
}

/// A `datetime-local` input (`2026-05-01T14:03`, taken as UTC); empty is `None`.
fn parse_local_time(s: &str) -> Result<Option<Timestamp>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    [s.to_string(), format!("{s}Z"), format!("{s}:00Z")]
        .iter()
        .find_map(|c| Timestamp::parse_rfc3339(c).ok())
        .map(Some)
        .ok_or_else(|| "a date and time, e.g. 2026-05-01T14:00 (UTC)".to_string())
}

fn error_page(c: &Console, v: Viewer, status: StatusCode, msg: &str) -> Response {
    let html = c.views.error(&v, status, msg);
    v.finish((status, html))
}

// ---- health monitor ----

const HOURS: [u32; 5] = [1, 6, 12, 24, 48];

#[derive(Deserialize, Default)]
struct HealthParams {
    hours: Option<String>,
}

/// One bucket per cell, coloured by state, each with a tooltip of its time and counts.
fn timeline_svg(format: &str, buckets: &[HealthBucket]) -> String {
    let (w, gap, h) = (8, 1, 26);
    let mut s = format!(
        r#"<svg class="health-timeline" viewBox="0 0 {} {h}" preserveAspectRatio="none" role="img" aria-label="{format}: {} buckets, oldest first">"#,
        buckets.len() * (w + gap),
        buckets.len()
    );
    for (i, b) in buckets.iter().enumerate() {
        let state = b.state.as_str();
        let _ = write!(
            s,
            r#"<rect x="{}" y="0" width="{w}" height="{h}" rx="1.5" class="hb {state}"><title>{} – {} UTC · {} ok, {} failed{}</title></rect>"#,
            i * (w + gap),
            minute(b.start),
            minute(b.end),
            b.successes,
            b.failures,
            if b.state == HealthState::NoData {
                " (no data)"
            } else {
                ""
            }
        );
    }
    s.push_str("</svg>");
    s
}

async fn health(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<HealthParams>,
) -> Response {
    let hours = q
        .hours
        .and_then(|h| h.parse::<u32>().ok())
        .filter(|h| HOURS.contains(h))
        .unwrap_or(24);
    let mut rows = Vec::new();
    for f in ApiFormat::ALL {
        let t = c
            .admin
            .health_timeline(TimelineQuery {
                hours: Some(hours),
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
                context! {
                    format => f.as_str(),
                    svg => timeline_svg(f.as_str(), &t.buckets),
                    successes => ok, failures => failed,
                    rate => rate.map(|r| format!("{r:.1}")),
                    since => minute(t.since), until => minute(t.until),
                }
            }
            Err(e) => context! { format => f.as_str(), error => message(&e) },
        });
    }
    let html = c.views.page(
        &v,
        "admin/health.html",
        "health",
        context! { rows => rows, hours => hours, choices => HOURS },
    );
    v.finish(html)
}

// ---- cache affinity ----

#[derive(Deserialize, Default)]
struct AffinityParams {
    cleared: Option<String>,
}

/// `75.0` for a 0–1 rate.
fn pct(rate: Option<f64>) -> Option<String> {
    rate.map(|r| format!("{:.1}", r * 100.0))
}

/// One stacked bar per minute (hits at the bottom, then switches, then new), scaled to the
/// busiest minute, each with a tooltip of its time and counts; an empty minute is a hairline.
fn affinity_svg(buckets: &[AffinityBucket]) -> String {
    let (w, gap, h) = (8u64, 2u64, 48u64);
    let max = buckets
        .iter()
        .map(|b| b.counts.total())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = u64::try_from(buckets.len()).unwrap_or(0);
    let mut s = format!(
        r#"<svg class="affinity-chart" viewBox="0 0 {} {h}" preserveAspectRatio="none" role="img" aria-label="Cache affinity per minute, oldest first: hits, switches and new bindings">"#,
        n * (w + gap)
    );
    // The top of a stack holding `cum` requests (integer scaling, so stacks never overflow).
    let top = |cum: u64| h - cum.saturating_mul(h) / max;
    for (i, b) in (0u64..).zip(buckets) {
        let c = b.counts;
        let x = i * (w + gap);
        let _ = write!(
            s,
            r#"<g><title>{} UTC · {} hits, {} switches, {} new</title>"#,
            minute(Timestamp::from_millis(b.start_ms)),
            c.hits,
            c.switches,
            c.new
        );
        if c.total() == 0 {
            let _ = write!(
                s,
                r#"<rect x="{x}" y="{}" width="{w}" height="1" class="aff none"/>"#,
                h - 1
            );
        }
        let mut cum = 0;
        for (count, class) in [(c.hits, "hit"), (c.switches, "switch"), (c.new, "new")] {
            if count == 0 {
                continue;
            }
            let (y0, y1) = (top(cum), top(cum + count));
            cum += count;
            let _ = write!(
                s,
                r#"<rect x="{x}" y="{y1}" width="{w}" height="{}" class="aff {class}"/>"#,
                (y0 - y1).max(1)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

fn affinity_stats_context(st: &AffinityStatsView) -> minijinja::Value {
    let rows: Vec<_> = st
        .formats
        .iter()
        .filter(|f| f.total.total() > 0)
        .map(|f| {
            context! {
                format => f.api_format.as_str(),
                window => f.window, total => f.total,
                window_count => f.window.total(),
                rate => pct(f.hit_rate),
                total_rate => pct(f.total.hit_rate()),
            }
        })
        .collect();
    context! {
        rows => rows,
        window => st.window, total => st.total,
        window_count => st.window.total(), total_count => st.total.total(),
        rate => pct(st.hit_rate), total_rate => pct(st.total.hit_rate()),
        minutes => st.window_minutes,
        since => minute(st.since), window_start => minute(st.window_start),
        until => minute(Timestamp::now()),
        svg => affinity_svg(&st.buckets),
    }
}

async fn affinity(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<AffinityParams>,
) -> Response {
    let (bindings, error) = match c.admin.list_affinity(500).await {
        Ok(b) => (b, None),
        Err(e) => (Vec::new(), Some(message(&e))),
    };
    let stats = c
        .admin
        .affinity_stats(None)
        .await
        .ok()
        .map(|st| affinity_stats_context(&st));
    let html = c.views.page(
        &v,
        "admin/affinity.html",
        "affinity",
        context! {
            bindings => bindings, error => error, stats => stats,
            cleared => q.cleared.is_some(),
            enabled => c.admin.settings().cache_affinity(),
        },
    );
    v.finish(html)
}

async fn clear_affinity(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    match c.admin.clear_affinity(&v.who.actor()).await {
        Ok(()) => v.finish(Redirect::to("/admin/affinity?cleared=1")),
        Err(e) => error_page(&c, v, StatusCode::SERVICE_UNAVAILABLE, &message(&e)),
    }
}

// ---- IP security ----

#[derive(Deserialize, Default, Serialize)]
struct IpRuleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    cidr: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    expires_at: String,
}

async fn security_page(
    c: &Console,
    v: &Viewer,
    ip: std::net::IpAddr,
    form: Option<&IpRuleForm>,
    form_error: Option<(String, String)>,
) -> Html<String> {
    let (rules, list_error) = match c.admin.list_ip_rules().await {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(message(&e))),
    };
    let now = Timestamp::now();
    let live = |r: &&aether_domain::entities::IpRule| r.expires_at.is_none_or(|e| now < e);
    let allow = rules
        .iter()
        .filter(live)
        .filter(|r| r.action == IpAction::Allow)
        .count();
    let block = rules
        .iter()
        .filter(live)
        .filter(|r| r.action == IpAction::Block)
        .count();
    let rows: Vec<_> = rules
        .iter()
        .map(|r| {
            context! {
                id => r.id, cidr => r.cidr.to_string(), action => r.action.as_str(),
                note => r.note, expires_at => r.expires_at, created_at => r.created_at,
                expired => r.expires_at.is_some_and(|e| e <= now),
                matches_me => r.cidr.contains(&ip),
            }
        })
        .collect();
    c.views.page(
        v,
        "admin/security.html",
        "security",
        context! {
            rules => rows, allow => allow, block => block, list_error => list_error,
            my_ip => ip.to_string(),
            form => form.map(|f| context! { cidr => f.cidr, action => f.action, note => f.note, expires_at => f.expires_at }),
            error_field => form_error.as_ref().map(|e| e.0.clone()),
            error => form_error.map(|e| e.1),
        },
    )
}

async fn security(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    CallerIp(ip): CallerIp,
) -> Response {
    let html = security_page(&c, &v, ip, None, None).await;
    v.finish(html)
}

async fn create_ip_rule(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    CallerIp(ip): CallerIp,
    Form(f): Form<IpRuleForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = async {
        let action = match f.action.as_str() {
            "allow" => IpAction::Allow,
            "block" | "" => IpAction::Block,
            _ => return Err(("action".to_string(), "allow or block".to_string())),
        };
        if f.cidr.trim().is_empty() {
            return Err((
                "cidr".to_string(),
                "an IP address or a CIDR block, e.g. 203.0.113.0/24".to_string(),
            ));
        }
        let expires_at =
            parse_local_time(&f.expires_at).map_err(|m| ("expires_at".to_string(), m))?;
        if expires_at.is_some_and(|e| e <= Timestamp::now()) {
            return Err((
                "expires_at".to_string(),
                "must be in the future".to_string(),
            ));
        }
        c.admin
            .create_ip_rule(
                &v.who.actor(),
                NewIpRule {
                    cidr: f.cidr.trim().to_string(),
                    action,
                    note: Some(f.note.trim().to_string()).filter(|n| !n.is_empty()),
                    expires_at,
                },
            )
            .await
            .map_err(|e| (field_of(&e), message(&e)))
    }
    .await;
    match result {
        Ok(_) => v.finish(Redirect::to("/admin/security")),
        Err(err) => {
            let html = security_page(&c, &v, ip, Some(&f), Some(err)).await;
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}

async fn delete_ip_rule(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<IpRuleId>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    match c.admin.delete_ip_rule(&v.who.actor(), id).await {
        Ok(()) => v.finish(Redirect::to("/admin/security")),
        Err(e) => error_page(&c, v, StatusCode::NOT_FOUND, &message(&e)),
    }
}

// ---- audit log ----

#[derive(Deserialize, Default)]
struct AuditParams {
    #[serde(default)]
    action: String,
    #[serde(default)]
    search: String,
    page: Option<u32>,
}

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

async fn audit(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<AuditParams>,
) -> Response {
    let n = q.page.unwrap_or(1).max(1);
    let filter = AuditFilter {
        action_prefix: Some(q.action.trim().to_string()).filter(|a| !a.is_empty()),
        search: Some(q.search.trim().to_string()).filter(|s| !s.is_empty()),
        ..AuditFilter::default()
    };
    let page = Page {
        limit: PAGE_SIZE,
        offset: (n - 1) * PAGE_SIZE,
    };
    let (entries, total, capped, error) = match c.admin.list_audit(&filter, page).await {
        Ok(p) => (p.items, p.total, p.total_capped, None),
        Err(e) => (Vec::new(), 0, false, Some(message(&e))),
    };
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            let mut details = match &e.details {
                Value::Null => String::new(),
                Value::Object(m) if m.is_empty() => String::new(),
                d => d.to_string(),
            };
            if details.chars().count() > 300 {
                details = details.chars().take(300).collect::<String>() + "…";
            }
            context! {
                created_at => e.created_at, actor => e.actor_email, action => e.action,
                target_type => e.target_type, target_id => e.target_id, ip => e.ip,
                details => details,
            }
        })
        .collect();
    let html = c.views.page(
        &v,
        "admin/audit.html",
        "audit",
        context! {
            entries => rows, total => total, capped => capped, error => error,
            page => n, pages => pages(total),
            action => q.action, search => q.search,
            qs => format!("action={}&search={}", urlencode(&q.action), urlencode(&q.search)),
        },
    );
    v.finish(html)
}

// ---- announcements ----

#[derive(Deserialize, Default)]
struct PageParams {
    page: Option<u32>,
}

#[derive(Deserialize, Default, Serialize)]
struct AnnouncementForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    is_pinned: Option<String>,
    #[serde(default)]
    is_active: Option<String>,
    #[serde(default)]
    start_time: String,
    #[serde(default)]
    end_time: String,
}

async fn announcements_page(
    c: &Console,
    v: &Viewer,
    n: u32,
    form: Option<&AnnouncementForm>,
    form_error: Option<(String, String)>,
) -> Html<String> {
    let page = Page {
        limit: PAGE_SIZE,
        offset: (n.max(1) - 1) * PAGE_SIZE,
    };
    let (items, total, list_error) =
        match c.admin.list_announcements(&v.who.actor(), true, page).await {
            Ok(p) => (p.items, p.total, None),
            Err(e) => (Vec::new(), 0, Some(message(&e))),
        };
    let now = Timestamp::now();
    let rows: Vec<_> = items
        .iter()
        .map(|a| {
            context! {
                id => a.id, title => a.title, kind => a.kind.as_str(),
                excerpt => if a.content.chars().count() > 160 {
                    a.content.chars().take(160).collect::<String>() + "…"
                } else {
                    a.content.clone()
                },
                priority => a.priority, is_pinned => a.is_pinned, is_active => a.is_active,
                visible => a.is_visible_at(now), start_time => a.start_time,
                end_time => a.end_time, created_at => a.created_at,
            }
        })
        .collect();
    c.views.page(
        v,
        "admin/announcements.html",
        "announcements",
        context! {
            announcements => rows, total => total, page => n.max(1), pages => pages(total),
            list_error => list_error,
            kinds => ["info", "warning", "maintenance", "important"],
            form => form.map(|f| context! {
                title => f.title, content => f.content, kind => f.kind, priority => f.priority,
                is_pinned => f.is_pinned.is_some(), is_active => f.is_active.is_some(),
                start_time => f.start_time, end_time => f.end_time,
            }),
            error_field => form_error.as_ref().map(|e| e.0.clone()),
            error => form_error.map(|e| e.1),
        },
    )
}

async fn announcements(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<PageParams>,
) -> Response {
    let html = announcements_page(&c, &v, q.page.unwrap_or(1), None, None).await;
    v.finish(html)
}

async fn create_announcement(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<AnnouncementForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = async {
        let kind = if f.kind.is_empty() {
            AnnouncementKind::Info
        } else {
            f.kind.parse::<AnnouncementKind>().map_err(|_| {
                (
                    "type".to_string(),
                    "one of info, warning, maintenance, important".to_string(),
                )
            })?
        };
        let priority = if f.priority.trim().is_empty() {
            0
        } else {
            f.priority.trim().parse::<i32>().map_err(|_| {
                (
                    "priority".to_string(),
                    "a whole number; higher shows first".to_string(),
                )
            })?
        };
        let start_time =
            parse_local_time(&f.start_time).map_err(|m| ("start_time".to_string(), m))?;
        let end_time = parse_local_time(&f.end_time).map_err(|m| ("end_time".to_string(), m))?;
        c.admin
            .create_announcement(
                &v.who.actor(),
                NewAnnouncement {
                    title: f.title.clone(),
                    content: f.content.clone(),
                    kind,
                    priority,
                    is_pinned: f.is_pinned.is_some(),
                    is_active: f.is_active.is_some(),
                    start_time,
                    end_time,
                },
            )
            .await
            .map_err(|e| (field_of(&e), message(&e)))
    }
    .await;
    match result {
        Ok(_) => v.finish(Redirect::to("/admin/announcements")),
        Err(err) => {
            let html = announcements_page(&c, &v, 1, Some(&f), Some(err)).await;
            v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
        }
    }
}

async fn delete_announcement(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<AnnouncementId>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    match c.admin.delete_announcement(&v.who.actor(), id).await {
        Ok(()) => v.finish(Redirect::to("/admin/announcements")),
        Err(e) => error_page(&c, v, StatusCode::NOT_FOUND, &message(&e)),
    }
}

// ---- settings ----

/// A setting as a form field: the input chosen by its kind, its value as the input's text.
#[derive(Serialize)]
struct Field {
    key: &'static str,
    /// `checkbox`, `select`, `number`, `text`, `textarea` or `money`.
    input: &'static str,
    options: Vec<&'static str>,
    min: Option<i64>,
    max: Option<i64>,
    value: String,
    checked: bool,
    help: &'static str,
    default: String,
    is_default: bool,
    error: Option<String>,
}

#[derive(Serialize)]
struct Group {
    name: &'static str,
    fields: Vec<Field>,
}

/// A setting's value as the text its input shows.
fn as_text(kind: SettingKind, v: &Value) -> String {
    match (kind, v) {
        (_, Value::Null) => String::new(),
        (_, Value::String(s)) => s.clone(),
        (SettingKind::TextList, Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join("\n"),
        (_, other) => other.to_string(),
    }
}

/// What an input submitted, as the setting's JSON value (before the declaration validates it).
fn from_input(kind: SettingKind, raw: Option<&str>) -> Result<Value, String> {
    let raw = raw.unwrap_or("");
    match kind {
        SettingKind::Bool => Ok(json!(matches!(raw, "on" | "true" | "1"))),
        SettingKind::Int { min, max } => raw
            .trim()
            .parse::<i64>()
            .map(|i| json!(i))
            .map_err(|_| format!("a whole number between {min} and {max}")),
        SettingKind::Text | SettingKind::Enum { .. } => Ok(json!(raw)),
        SettingKind::TextList => Ok(json!(
            raw.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
        )),
        SettingKind::MoneyOrNull => {
            let t = raw.trim();
            Ok(if t.is_empty() { Value::Null } else { json!(t) })
        }
    }
}

fn fields(
    views: Vec<SettingView>,
    submitted: &[(String, String)],
    errors: &[(&'static str, String)],
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for s in views {
        let error = errors
            .iter()
            .find(|(k, _)| *k == s.key)
            .map(|(_, m)| m.clone());
        // A field that failed keeps what was typed, so it can be corrected.
        let value = match &error {
            Some(_) => submitted
                .iter()
                .find(|(k, _)| k == s.key)
                .map_or_else(String::new, |(_, v)| v.clone()),
            None => as_text(s.kind, &s.value),
        };
        let (input, options, min, max) = match s.kind {
            SettingKind::Bool => ("checkbox", Vec::new(), None, None),
            SettingKind::Int { min, max } => ("number", Vec::new(), Some(min), Some(max)),
            SettingKind::Text => ("text", Vec::new(), None, None),
            SettingKind::Enum { options } => ("select", options.to_vec(), None, None),
            SettingKind::TextList => ("textarea", Vec::new(), None, None),
            SettingKind::MoneyOrNull => ("money", Vec::new(), None, None),
        };
        let field = Field {
            key: s.key,
            input,
            options,
            min,
            max,
            checked: s.value.as_bool().unwrap_or(false),
            value,
            help: s.help,
            default: match s.kind {
                SettingKind::MoneyOrNull if s.default.is_null() => "empty (none)".to_string(),
                SettingKind::TextList if s.default.as_array().is_some_and(Vec::is_empty) => {
                    "empty".to_string()
                }
                k => as_text(k, &s.default),
            },
            is_default: s.is_default,
            error,
        };
        match groups.iter_mut().find(|g| g.name == s.group) {
            Some(g) => g.fields.push(field),
            None => groups.push(Group {
                name: s.group,
                fields: vec![field],
            }),
        }
    }
    groups
}

#[derive(Deserialize, Default)]
struct SettingsParams {
    saved: Option<u32>,
}

#[derive(Default)]
struct SettingsExtra {
    submitted: Vec<(String, String)>,
    errors: Vec<(&'static str, String)>,
    saved: Option<u32>,
    import_result: Option<ImportStats>,
    import_error: Option<String>,
    import_document: String,
    import_mode: String,
}

/// Names listed per kind and action in the import summary; the rest are counted.
const IMPORT_NAMES_SHOWN: usize = 12;

/// The import summary: per kind of record its counts and the names behind them.
fn import_summary(st: &ImportStats) -> minijinja::Value {
    let kinds = [
        (ImportKind::GlobalModel, "Global models", st.global_models),
        (ImportKind::Provider, "Providers", st.providers),
        (ImportKind::Endpoint, "Endpoints", st.endpoints),
        (ImportKind::Key, "Upstream keys", st.keys),
        (ImportKind::Model, "Provider models", st.models),
    ];
    let rows: Vec<_> = kinds
        .iter()
        .map(|(kind, label, counts)| {
            let names = |action: ImportAction| {
                let all: Vec<&str> = st
                    .items
                    .iter()
                    .filter(|i| i.kind == *kind && i.action == action)
                    .map(|i| i.name.as_str())
                    .collect();
                let more = all.len().saturating_sub(IMPORT_NAMES_SHOWN);
                context! {
                    shown => all.iter().take(IMPORT_NAMES_SHOWN).collect::<Vec<_>>(),
                    more => more,
                }
            };
            context! {
                label => label, created => counts.created, updated => counts.updated,
                skipped => counts.skipped,
                created_names => names(ImportAction::Created),
                updated_names => names(ImportAction::Updated),
                skipped_names => names(ImportAction::Skipped),
            }
        })
        .collect();
    let changed = st.items.iter().any(|i| i.action != ImportAction::Skipped);
    context! { rows => rows, errors => st.errors, changed => changed }
}

fn render_settings(c: &Console, v: &Viewer, x: SettingsExtra) -> Html<String> {
    let groups = fields(c.admin.list_settings(), &x.submitted, &x.errors);
    c.views.page(
        v,
        "admin/settings.html",
        "settings",
        context! {
            groups => groups, saved => x.saved, failed => x.errors.len(),
            import_result => x.import_result.as_ref().map(import_summary),
            import_error => x.import_error,
            import_document => x.import_document,
            import_mode => if x.import_mode.is_empty() { "skip".to_string() } else { x.import_mode },
        },
    )
}

async fn settings_page(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(q): Query<SettingsParams>,
) -> Response {
    let html = render_settings(
        &c,
        &v,
        SettingsExtra {
            saved: q.saved,
            ..SettingsExtra::default()
        },
    );
    v.finish(html)
}

/// Saves the settings whose submitted value differs from the current one, one by one; a
/// value that does not validate is reported on its field and the others are still saved.
async fn save_settings(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let csrf = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    if let Some(r) = v.refuse_csrf(&c, csrf) {
        return r;
    }
    let actor = v.who.actor();
    let mut saved = 0;
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    for current in c.admin.list_settings() {
        let Some(def) = settings::def(current.key) else {
            continue;
        };
        // A checkbox comes with a hidden `false` companion, so a checked box sends both
        // values; a setting missing from the form is left alone.
        let mut values = form.iter().filter(|(k, _)| k == def.key).map(|(_, v)| v);
        let raw = if def.kind == SettingKind::Bool {
            let all: Vec<_> = values.collect();
            if all.is_empty() {
                continue;
            }
            Some(if all.iter().any(|v| *v == "on" || *v == "true") {
                "true"
            } else {
                "false"
            })
        } else {
            match values.next() {
                Some(v) => Some(v.as_str()),
                None => continue,
            }
        };
        let candidate = match from_input(def.kind, raw) {
            Ok(c) => c,
            Err(m) => {
                errors.push((def.key, m));
                continue;
            }
        };
        if def.validate(&candidate).is_ok_and(|n| n == current.value) {
            continue;
        }
        match c.admin.put_setting(&actor, def.key, &candidate).await {
            Ok(_) => saved += 1,
            Err(e) => errors.push((def.key, message(&e))),
        }
    }
    if errors.is_empty() {
        return v.finish(Redirect::to(&format!("/admin/settings?saved={saved}")));
    }
    let html = render_settings(
        &c,
        &v,
        SettingsExtra {
            submitted: form,
            errors,
            saved: Some(saved),
            ..SettingsExtra::default()
        },
    );
    v.finish((StatusCode::UNPROCESSABLE_ENTITY, html))
}

/// The provider/model configuration as a JSON download (format v1.0); upstream keys are not
/// included (only their masked form).
async fn export_config(State(c): State<Console>, AdminViewer(v): AdminViewer) -> Response {
    match c.admin.export_config(&v.who.actor(), false).await {
        Ok(doc) => match serde_json::to_string_pretty(&doc) {
            Ok(body) => {
                let d = Timestamp::now().to_datetime();
                let disposition = format!(
                    "attachment; filename=\"aether-config-{:04}{:02}{:02}.json\"",
                    d.year(),
                    u8::from(d.month()),
                    d.day()
                );
                let mut resp = (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body,
                )
                    .into_response();
                if let Ok(h) = HeaderValue::from_str(&disposition) {
                    resp.headers_mut().insert(header::CONTENT_DISPOSITION, h);
                }
                v.finish(resp)
            }
            Err(e) => error_page(&c, v, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Err(e) => error_page(&c, v, StatusCode::INTERNAL_SERVER_ERROR, &message(&e)),
    }
}

#[derive(Deserialize)]
struct ImportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    document: String,
    #[serde(default)]
    merge_mode: String,
}

async fn import_config(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Form(f): Form<ImportForm>,
) -> Response {
    if let Some(r) = v.refuse_csrf(&c, &f.csrf) {
        return r;
    }
    let result = async {
        let mode = MergeMode::parse(Some(if f.merge_mode.is_empty() {
            "skip"
        } else {
            f.merge_mode.as_str()
        }))
        .map_err(|e| message(&e))?;
        if f.document.trim().is_empty() {
            return Err("paste an exported configuration (JSON, version 1.0)".to_string());
        }
        let doc: ExportV1 = serde_json::from_str(&f.document)
            .map_err(|e| format!("not a configuration document: {e}"))?;
        c.admin
            .import_config(&v.who.actor(), doc, mode)
            .await
            .map_err(|e| message(&e))
    }
    .await;
    // The summary is shown on this response (it is not kept anywhere to show after a redirect).
    let (status, extra) = match result {
        Ok(stats) => (
            StatusCode::OK,
            SettingsExtra {
                import_result: Some(stats),
                import_mode: f.merge_mode,
                ..SettingsExtra::default()
            },
        ),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            SettingsExtra {
                import_error: Some(e),
                import_document: f.document,
                import_mode: f.merge_mode,
                ..SettingsExtra::default()
            },
        ),
    };
    let html = render_settings(&c, &v, extra);
    v.finish((status, html))
}
