//! Usage: records with filters, totals, breakdowns and the weekly activity heatmap; a request's
//! detail with its cost breakdown by component at the applied tier, the attempt-trace
//! timeline, and the logged headers and bodies. Admins see every caller (`/admin/usage`);
//! users their own (`/usage`). Charts are SVG drawn here.

use std::fmt::Write as _;

use aether_admin::service::usage::{UsageGroupBy, UsageHeatCell, UsageQuery};
use aether_domain::entities::{AttemptTrace, TraceStatus};
use aether_domain::{ApiFormat, RequestId, Timestamp};
use aether_store::rollups::Granularity;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use serde::Deserialize;

use super::core::{PAGE_SIZE, message, pages};
use crate::Console;
use crate::session::{AdminViewer, Viewer};

pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "usage/list.html",
        include_str!("../../templates/usage/list.html"),
    ),
    (
        "usage/detail.html",
        include_str!("../../templates/usage/detail.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/usage", get(admin_list))
        .route("/admin/usage/{id}", get(admin_detail))
        .route("/usage", get(user_list))
        .route("/usage/{id}", get(user_detail))
}

/// The filter form's fields (all optional; empty means any).
#[derive(Debug, Default, Deserialize)]
struct Filters {
    #[serde(default)]
    model: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    api_format: String,
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    page: Option<u32>,
}

impl Filters {
    fn query(&self) -> UsageQuery {
        // Whole UTC days, today included: the totals and breakdowns then read finished days
        // from the daily rollups (the list and the heatmap read the records).
        let days = i64::from(self.days.unwrap_or(7).clamp(1, 366));
        let today = Granularity::Day.floor(Timestamp::now());
        UsageQuery {
            model: Some(self.model.trim().to_string()).filter(|m| !m.is_empty()),
            status: self.status.parse().ok(),
            api_format: self.api_format.parse::<ApiFormat>().ok(),
            since: Some(today.plus_secs(-(days - 1) * 86_400)),
            ..UsageQuery::default()
        }
    }

    fn qs(&self) -> String {
        format!(
            "model={}&status={}&api_format={}&days={}",
            urlencode(&self.model),
            urlencode(&self.status),
            urlencode(&self.api_format),
            self.days.unwrap_or(7)
        )
    }
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

/// The weekly activity heatmap: 7 rows (Sunday first) × 24 hours, darker = more requests.
fn heatmap_svg(cells: &[UsageHeatCell]) -> String {
    let max = cells.iter().map(|c| c.requests).max().unwrap_or(0).max(1);
    let (cw, ch, left, top) = (22, 18, 34, 16);
    let mut s = format!(
        r#"<svg class="heatmap" viewBox="0 0 {} {}" role="img" aria-label="Requests by weekday and hour (UTC)">"#,
        left + 24 * cw,
        top + 7 * ch
    );
    for h in (0..24).step_by(3) {
        let _ = write!(
            s,
            r#"<text x="{}" y="11" class="axis">{h:02}</text>"#,
            left + h * cw + 2
        );
    }
    for (d, name) in ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        .iter()
        .enumerate()
    {
        let _ = write!(
            s,
            r#"<text x="0" y="{}" class="axis">{name}</text>"#,
            top + d * ch + 13
        );
        for h in 0..24 {
            let n = cells
                .iter()
                .find(|c| usize::from(c.weekday) == d && usize::from(c.hour) == h)
                .map_or(0, |c| c.requests);
            #[allow(clippy::cast_precision_loss)]
            let level = if n == 0 {
                0.06
            } else {
                0.15 + 0.85 * (n as f64 / max as f64)
            };
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="{}" height="{}" rx="2" class="cell" fill-opacity="{level:.2}"><title>{name} {h:02}:00 — {n} requests</title></rect>"#,
                left + h * cw,
                top + d * ch,
                cw - 2,
                ch - 2
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A daily bar chart: one bar per UTC day of `rows` (a `Day` breakdown), height by `value`.
pub(super) fn daily_svg(
    rows: &[aether_admin::service::usage::UsageGroupTotals],
    label: &str,
    value: impl Fn(&aether_admin::service::usage::UsageGroupTotals) -> f64,
    fmt: impl Fn(&aether_admin::service::usage::UsageGroupTotals) -> String,
) -> String {
    let (w, h, left, bottom) = (640.0_f64, 140.0_f64, 8.0_f64, 18.0_f64);
    let max = rows
        .iter()
        .map(&value)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    #[allow(clippy::cast_precision_loss)]
    let slot = w / rows.len().max(1) as f64;
    let mut s = format!(
        r#"<svg class="daily" viewBox="0 0 {} {}" role="img" aria-label="{}">"#,
        w + 2.0 * left,
        h + bottom,
        minijinja::HtmlEscape(label)
    );
    for (i, r) in rows.iter().enumerate() {
        let v = value(r);
        let bh = (v / max * (h - 4.0)).max(if v > 0.0 { 2.0 } else { 0.0 });
        #[allow(clippy::cast_precision_loss)]
        let x = left + slot * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" rx="2" class="col"><title>{} — {}</title></rect>"#,
            h - bh,
            (slot - 3.0).max(1.0),
            minijinja::HtmlEscape(&r.key),
            minijinja::HtmlEscape(&fmt(r))
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let _ = write!(
            s,
            r#"<text x="{left}" y="{}" class="axis">{}</text><text x="{}" y="{}" class="axis" text-anchor="end">{}</text>"#,
            h + 14.0,
            minijinja::HtmlEscape(&first.key),
            w + left,
            h + 14.0,
            minijinja::HtmlEscape(&last.key)
        );
    }
    s.push_str("</svg>");
    s
}

/// The attempt-trace timeline: one bar per attempt on a shared time axis.
fn trace_svg(traces: &[AttemptTrace]) -> String {
    let Some(t0) = traces.iter().map(|t| t.started_at.millis()).min() else {
        return String::new();
    };
    let end = traces
        .iter()
        .map(|t| {
            t.finished_at
                .map_or(t.started_at.millis(), Timestamp::millis)
        })
        .max()
        .unwrap_or(t0);
    let span = (end - t0).max(1);
    let (w, row, left) = (640_i64, 26_i64, 150_i64);
    let mut s = format!(
        r#"<svg class="trace" viewBox="0 0 {} {}" role="img" aria-label="Attempt trace timeline">"#,
        left + w + 10,
        row * i64::try_from(traces.len()).unwrap_or(0) + 20
    );
    for (i, t) in traces.iter().enumerate() {
        let y = row * i64::try_from(i).unwrap_or(0) + 4;
        let start = t.started_at.millis() - t0;
        let len = t
            .finished_at
            .map_or(0, |f| f.millis() - t.started_at.millis())
            .max(0);
        let x = left + start * w / span;
        let bw = (len * w / span).max(3);
        let class = match t.status {
            TraceStatus::Success => "ok",
            TraceStatus::Failed => "bad",
            TraceStatus::Skipped => "skip",
            _ => "run",
        };
        let label = format!(
            "#{} retry {} · {}",
            t.candidate_index,
            t.retry_index,
            t.status.as_str()
        );
        let detail = t
            .skip_reason
            .clone()
            .or_else(|| t.error_message.clone())
            .unwrap_or_default();
        let _ = write!(
            s,
            r#"<text x="0" y="{}" class="axis">{}</text><rect x="{x}" y="{y}" width="{bw}" height="{}" rx="3" class="bar {class}"><title>{} — {} ms {}</title></rect>"#,
            y + 14,
            minijinja::HtmlEscape(&label),
            row - 8,
            minijinja::HtmlEscape(&label),
            len,
            minijinja::HtmlEscape(&detail)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{left}" y="{}" class="axis">0 ms</text><text x="{}" y="{}" class="axis" text-anchor="end">{span} ms</text></svg>"#,
        row * i64::try_from(traces.len()).unwrap_or(0) + 16,
        left + w,
        row * i64::try_from(traces.len()).unwrap_or(0) + 16
    );
    s
}

async fn list(c: &Console, v: &Viewer, f: &Filters, admin: bool) -> Response {
    let actor = v.who.actor();
    let filter = f.query().into_filter();
    let n = f.page.unwrap_or(1).max(1);
    let page = aether_store::Page {
        limit: PAGE_SIZE,
        offset: (n - 1) * PAGE_SIZE,
    };
    // The page's queries are independent: they run side by side, each on its own connection.
    let (records, summary, heat, by_model, by_format, by_provider) = tokio::join!(
        c.admin.list_usage(&actor, &filter, page),
        c.admin.usage_summary_by_days(&actor, &filter),
        c.admin.usage_heatmap(&actor, &filter),
        c.admin
            .usage_breakdown_by_days(&actor, &filter, UsageGroupBy::Model),
        c.admin
            .usage_breakdown_by_days(&actor, &filter, UsageGroupBy::Format),
        async {
            if admin {
                c.admin
                    .usage_breakdown_by_days(&actor, &filter, UsageGroupBy::Provider)
                    .await
                    .ok()
            } else {
                None
            }
        },
    );
    let (items, total, capped) = match records {
        Ok(p) => (p.items, p.total, p.total_capped),
        Err(e) => {
            let html = c
                .views
                .error(v, StatusCode::INTERNAL_SERVER_ERROR, &message(&e));
            return (StatusCode::INTERNAL_SERVER_ERROR, html).into_response();
        }
    };
    let html = c.views.page(
        v,
        "usage/list.html",
        "usage",
        context! {
            base => if admin { "/admin/usage" } else { "/usage" },
            admin => admin,
            records => items, total => total, capped => capped, page => n, pages => pages(total),
            summary => summary.ok(),
            heatmap => heat.ok().map(|h| heatmap_svg(&h)),
            by_model => by_model.ok(), by_format => by_format.ok(), by_provider => by_provider,
            f => context! { model => f.model.clone(), status => f.status.clone(),
                            api_format => f.api_format.clone(), days => f.days.unwrap_or(7) },
            qs => f.qs(),
            formats => ApiFormat::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        },
    );
    (StatusCode::OK, html).into_response()
}

async fn admin_list(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Query(f): Query<Filters>,
) -> Response {
    let r = list(&c, &v, &f, true).await;
    v.finish(r)
}

async fn user_list(State(c): State<Console>, v: Viewer, Query(f): Query<Filters>) -> Response {
    let r = list(&c, &v, &f, false).await;
    v.finish(r)
}

async fn detail(c: &Console, v: &Viewer, id: &str, admin: bool) -> Response {
    let Ok(id) = id.parse::<RequestId>() else {
        let html = c.views.error(v, StatusCode::NOT_FOUND, "No such request.");
        return (StatusCode::NOT_FOUND, html).into_response();
    };
    match c.admin.usage_detail(&v.who.actor(), id).await {
        Ok(d) => {
            let timeline = trace_svg(&d.traces);
            let html = c.views.page(
                v,
                "usage/detail.html",
                "usage",
                context! {
                    base => if admin { "/admin/usage" } else { "/usage" },
                    admin => admin,
                    r => d.record, traces => d.traces, bodies => d.bodies,
                    timeline => timeline,
                },
            );
            (StatusCode::OK, html).into_response()
        }
        Err(e) => {
            let status = match e {
                aether_admin::ApiError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let html = c.views.error(v, status, &message(&e));
            (status, html).into_response()
        }
    }
}

async fn admin_detail(
    State(c): State<Console>,
    AdminViewer(v): AdminViewer,
    Path(id): Path<String>,
) -> Response {
    let r = detail(&c, &v, &id, true).await;
    v.finish(r)
}

async fn user_detail(State(c): State<Console>, v: Viewer, Path(id): Path<String>) -> Response {
    let r = detail(&c, &v, &id, false).await;
    v.finish(r)
}
