//! The console's admin "System" pages on the real server: the health monitor, cache affinity
//! (bindings and hit/switch statistics from real gateway requests), IP rules, the audit log,
//! announcements and the settings form (with configuration export and import and its
//! summary) — rendered with real data, every form submitted, and refused to non-admins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;
mod console_kit;

use aether_testkit::{MockUpstream, Step};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use console_kit::{browser, csrf, page, sign_in, submit};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5";

// (The console escapes `/` in interpolated values as `&#x2f;`.)

/// The `action` of the first delete form in `html` after `marker`.
fn delete_action(html: &str, marker: &str) -> String {
    let row = &html[html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} on the page"))..];
    let at = row.find(r#"action=""#).unwrap() + 8;
    row[at..].split('"').next().unwrap().to_string()
}

const PAGES: [&str; 6] = [
    "/admin/health",
    "/admin/affinity",
    "/admin/security",
    "/admin/audit",
    "/admin/announcements",
    "/admin/settings",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_pages_render_and_their_forms_work() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "anthropic",
        "CLAUDE",
        &mock.url(),
        &[("sk-upstream-a", 1)],
        MODEL,
        "claude-up",
        10,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&key, MODEL).await;

    // One successful request through the gateway: a health bucket and an affinity binding.
    let r = app
        .client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({ "model": MODEL, "max_tokens": 32,
                       "messages": [{"role": "user", "content": "Hello"}] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.headers()["x-aether-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    r.bytes().await.unwrap();
    app.usage(&id).await;

    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for p in PAGES {
        let (s, html) = page(&app, &c, p).await;
        assert_eq!(s, StatusCode::OK, "{p}: {html}");
        assert!(!html.contains("could not be rendered"), "{p}: {html}");
    }

    // ---- health: six timelines of 100 buckets; CLAUDE has traffic ----
    let (_, html) = page(&app, &c, "/admin/health?hours=6").await;
    for f in [
        "CLAUDE",
        "CLAUDE_CLI",
        "OPENAI",
        "OPENAI_CLI",
        "GEMINI",
        "GEMINI_CLI",
    ] {
        assert!(html.contains(&format!(r#"data-format="{f}""#)), "{f}");
    }
    assert_eq!(
        html.matches("<rect ").count(),
        600,
        "100 buckets per format"
    );
    let claude = &html[html.find(r#"data-format="CLAUDE""#).unwrap()..];
    let claude = &claude[..claude.find("</section>").unwrap()];
    assert!(
        claude.contains(r#"class="hb success""#),
        "a success bucket: {claude}"
    );
    assert!(claude.contains("1 ok, 0 failed"), "tooltip counts");
    assert!(html.contains(r#"<option value="6" selected>"#));
    let (s, _) = page(&app, &c, "/admin/health?hours=7").await;
    assert_eq!(s, StatusCode::OK, "an unknown look-back falls back to 24 h");

    // ---- cache affinity: the binding, then "Clear all" ----
    let (_, html) = page(&app, &c, "/admin/affinity").await;
    assert!(html.contains("1 live binding"), "{html}");
    assert!(html.contains("sk-upstream-a"), "the upstream key's name");
    assert!(html.contains(MODEL));
    let token = csrf(&html);
    let (s, loc, _) = submit(&app, &c, "/admin/affinity/clear", &[("csrf", "forged")]).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a form without the session's token"
    );
    assert!(loc.is_empty());
    let (s, loc, _) = submit(&app, &c, "/admin/affinity/clear", &[("csrf", &token)]).await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/admin/affinity?cleared=1")
    );
    let (_, html) = page(&app, &c, "/admin/affinity?cleared=1").await;
    assert!(html.contains("No live bindings."), "{html}");
    assert!(html.contains("0 live bindings"));

    // ---- IP security: an invalid CIDR, then add and delete a rule ----
    let (_, html) = page(&app, &c, "/admin/security").await;
    assert!(html.contains("No rules"));
    assert!(html.contains("127.0.0.1"), "the caller's own address");
    let token = csrf(&html);
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/security",
        &[
            ("csrf", &token),
            ("cidr", "10.0.0.0/33"),
            ("action", "block"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains(r#"class="field-error""#), "{html}");
    assert!(html.contains("neither an IP address nor a CIDR block"));
    assert!(
        html.contains(r#"value="10.0.0.0&#x2f;33""#),
        "what was typed is kept"
    );
    let (s, loc, _) = submit(
        &app,
        &c,
        "/admin/security",
        &[
            ("csrf", &token),
            ("cidr", "203.0.113.0/24"),
            ("action", "block"),
            ("note", "scanner"),
            ("expires_at", ""),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/admin/security")
    );
    let (_, rules) = app.get("/api/admin/security/ip-rules", &admin).await;
    let (_, html) = page(&app, &c, "/admin/security").await;
    assert!(
        html.contains(r#"data-rule="203.0.113.0&#x2f;24""#),
        "{html} {rules}"
    );
    assert!(html.contains("scanner"));
    let action = delete_action(&html, r#"data-rule="203.0.113.0&#x2f;24""#);
    assert!(action.starts_with("/admin/security/") && action.ends_with("/delete"));
    let (s, loc, _) = submit(&app, &c, &action, &[("csrf", &token)]).await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/admin/security")
    );
    let (_, html) = page(&app, &c, "/admin/security").await;
    assert!(!html.contains(r#"data-rule="203.0.113.0&#x2f;24""#));

    // ---- announcements: create (with an inline error first), then delete ----
    let (_, html) = page(&app, &c, "/admin/announcements").await;
    let token = csrf(&html);
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/announcements",
        &[
            ("csrf", &token),
            ("title", "Maintenance tonight"),
            ("content", "Short downtime at 22:00 UTC."),
            ("kind", "maintenance"),
            ("priority", "high"),
            ("is_active", "on"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("a whole number; higher shows first"),
        "{html}"
    );
    let (s, loc, _) = submit(
        &app,
        &c,
        "/admin/announcements",
        &[
            ("csrf", &token),
            ("title", "Maintenance tonight"),
            ("content", "Short downtime at 22:00 UTC."),
            ("kind", "maintenance"),
            ("priority", "5"),
            ("is_pinned", "on"),
            ("is_active", "on"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/admin/announcements")
    );
    let (_, html) = page(&app, &c, "/admin/announcements").await;
    assert!(html.contains(r#"data-announcement="Maintenance tonight""#));
    assert!(html.contains("pinned") && html.contains("visible"));
    let action = delete_action(&html, r#"data-announcement="Maintenance tonight""#);
    let (s, _, _) = submit(&app, &c, &action, &[("csrf", &token)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, html) = page(&app, &c, "/admin/announcements").await;
    assert!(html.contains("No announcements yet."));

    // ---- settings: change log_level; an invalid number is reported on its field ----
    let (_, html) = page(&app, &c, "/admin/settings").await;
    for key in [
        "log_level",
        "masked_headers",
        "allow_cross_format",
        "default_user_quota_usd",
    ] {
        assert!(html.contains(&format!(r#"data-setting="{key}""#)), "{key}");
    }
    assert!(html.contains(r#"<select name="log_level""#));
    assert!(html.contains(r#"type="checkbox" name="registration_enabled""#));
    assert!(html.contains(r#"<textarea name="masked_headers""#));
    assert!(html.contains(r#"type="number" name="retention_days_audit""#));
    let token = csrf(&html);
    let (s, loc, _) = submit(
        &app,
        &c,
        "/admin/settings",
        &[
            ("csrf", &token),
            ("log_level", "headers"),
            ("masked_headers", "x-secret\n\n x-other \n"),
            // Checkbox with its hidden companion: unchanged (false) and stays so.
            ("allow_cross_format", "false"),
            ("retention_days_audit", "365"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/admin/settings?saved=2")
    );
    let (s, v) = app.get("/api/admin/system/configs/log_level", &admin).await;
    assert_eq!((s, &v["value"]), (StatusCode::OK, &json!("headers")));
    let (_, v) = app
        .get("/api/admin/system/configs/masked_headers", &admin)
        .await;
    assert_eq!(v["value"], json!(["x-secret", "x-other"]));
    let (_, html) = page(&app, &c, "/admin/settings?saved=2").await;
    assert!(html.contains("Saved 2 settings"));
    assert!(
        html.contains("<option selected>headers</option>"),
        "re-rendered"
    );
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/settings",
        &[
            ("csrf", &token),
            ("log_body_max_bytes", "lots"),
            ("retention_days_audit", "0"),
            ("registration_enabled", "false"),
            ("registration_enabled", "on"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(html.matches(r#"class="field-error""#).count(), 2, "{html}");
    assert!(html.contains("a whole number between 0 and"));
    assert!(html.contains("between 1 and 36500"));
    assert!(html.contains(r#"value="lots""#), "what was typed is kept");
    let (_, v) = app
        .get("/api/admin/system/configs/registration_enabled", &admin)
        .await;
    assert_eq!(v["value"], json!(true), "the valid field was still saved");

    // ---- export (a download without secrets) and import ----
    let r = c
        .get(format!("{}/admin/settings/export", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["version"], "1.0");
    let k = &doc["providers"][0]["endpoints"][0]["keys"][0];
    assert_eq!(k["api_key"], Value::Null, "no secret in the export: {k}");
    assert!(k["api_key_masked"].is_string());
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/settings/import",
        &[
            ("csrf", &token),
            ("document", "{not json"),
            ("merge_mode", "skip"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("not a configuration document"));
    let mut doc2 = doc.clone();
    doc2["global_models"][0]["name"] = json!("imported-model");
    let text = doc2.to_string();
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/settings/import",
        &[
            ("csrf", &token),
            ("document", &text),
            ("merge_mode", "skip"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("Configuration imported ("), "{html}");
    let (_, models) = app
        .get("/api/admin/models/global?search=imported-model", &admin)
        .await;
    assert_eq!(models["total"], 1, "{models}");

    // ---- audit log: what was just done, filtered by action ----
    let (_, html) = page(&app, &c, "/admin/audit").await;
    for a in [
        "ip_rule.create",
        "ip_rule.delete",
        "announcement.create",
        "setting.update",
        "affinity.clear",
        "config.export",
    ] {
        assert!(html.contains(&format!(r#"data-action="{a}""#)), "{a}");
    }
    let (_, html) = page(&app, &c, "/admin/audit?action=ip_rule.").await;
    assert!(html.contains(r#"data-action="ip_rule.create""#));
    assert!(!html.contains(r#"data-action="setting.update""#));
    assert!(html.contains("2 entries"), "{html}");

    app.stop().await;
    mock.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn system_pages_are_for_admins_only() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.user_token(&admin, "someone@example.com").await;
    let c = sign_in(&app, "someone@example.com", "user-password-1").await;
    let (_, home) = page(&app, &c, "/").await;
    let token = csrf(&home);
    for p in PAGES.iter().chain(&["/admin/settings/export"]) {
        let (s, html) = page(&app, &c, p).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
        assert!(html.contains("for administrators"), "{p}");
    }
    for p in [
        "/admin/affinity/clear",
        "/admin/security",
        "/admin/announcements",
        "/admin/settings",
        "/admin/settings/import",
    ] {
        let (s, _, _) = submit(
            &app,
            &c,
            p,
            &[
                ("csrf", &token),
                ("cidr", "0.0.0.0/0"),
                ("log_level", "full"),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
    }
    let (_, v) = app.get("/api/admin/system/configs/log_level", &admin).await;
    assert_eq!(v["value"], "basic", "nothing changed");
    let (_, rules) = app.get("/api/admin/security/ip-rules", &admin).await;
    assert!(!rules.to_string().contains("0.0.0.0/0"), "{rules}");
    // Signed out, the pages send to the login.
    let (s, _) = page(&app, &browser(), "/admin/health").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    app.stop().await;
}

/// A Claude request of one client session through the gateway; returns the status.
async fn session_request(app: &TestApp, key: &str, session: &str) -> StatusCode {
    let r = app
        .client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("x-claude-code-session-id", session)
        .json(&json!({ "model": MODEL, "max_tokens": 16,
                       "messages": [{"role": "user", "content": "Hi"}] }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    r.bytes().await.unwrap();
    status
}

/// The `<tr data-format="…">` row of the affinity statistics table.
fn format_row<'a>(html: &'a str, format: &str) -> &'a str {
    let table = &html[html
        .find(r#"class="affinity-formats""#)
        .expect("the statistics table")..];
    let row = &table[table
        .find(&format!(r#"<tr data-format="{format}""#))
        .unwrap_or_else(|| panic!("a {format} row: {table}"))..];
    &row[..row.find("</tr>").unwrap()]
}

fn stat(row: &str, name: &str) -> String {
    let pattern = format!(r#"data-stat="{name}">"#);
    let at = row
        .find(&pattern)
        .unwrap_or_else(|| panic!("{name} in {row}"))
        + pattern.len();
    row[at..].split('<').next().unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_hits_switches_and_new_bindings_are_counted_and_shown() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "anthropic",
        "CLAUDE",
        &mock.url(),
        &[("sk-aff-a", 1), ("sk-aff-b", 1)],
        MODEL,
        "claude-up",
        10,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "sessions@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // Nothing counted yet.
    let (s, html) = page(&app, &c, "/admin/affinity").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("No requests counted yet."), "{html}");
    assert!(
        html.contains(r#"class="affinity-chart""#),
        "the chart of the hour"
    );
    assert_eq!(
        html.matches(r#"class="aff none""#).count(),
        60,
        "60 empty minutes"
    );

    // Session s1: a first binding, then a hit on the same key.
    assert_eq!(session_request(&app, &key, "s1").await, StatusCode::OK);
    assert_eq!(session_request(&app, &key, "s1").await, StatusCode::OK);
    let served = |mock: &MockUpstream| {
        (
            mock.request_count("sk-aff-a"),
            mock.request_count("sk-aff-b"),
        )
    };
    let (a, b) = served(&mock);
    assert!(
        (a, b) == (2, 0) || (a, b) == (0, 2),
        "one key served both: {a} {b}"
    );
    let (bound, other) = if a == 2 {
        ("sk-aff-a", "sk-aff-b")
    } else {
        ("sk-aff-b", "sk-aff-a")
    };
    // Another session makes its own binding.
    assert_eq!(session_request(&app, &key, "s2").await, StatusCode::OK);

    // The bound key fails (its attempt and the affinity retry): another key serves s1 — a
    // switch — and the session stays there (a hit).
    mock.script(bound, [Step::status(500), Step::status(500)]);
    assert_eq!(session_request(&app, &key, "s1").await, StatusCode::OK);
    assert_eq!(mock.request_count(other), 1, "the other key took over");
    assert_eq!(session_request(&app, &key, "s1").await, StatusCode::OK);
    assert_eq!(mock.request_count(other), 2, "s1 stays on its new key");

    // The JSON API: 2 hits, 1 switch, 2 new for CLAUDE; hit rate 2 / 5.
    let (s, st) = app.get("/api/admin/monitoring/cache/stats", &admin).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    let claude = st["formats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["api_format"] == "CLAUDE")
        .unwrap()
        .clone();
    let want = json!({"hits": 2, "switches": 1, "new": 2});
    assert_eq!(
        (&claude["window"], &claude["total"]),
        (&want, &want),
        "{st}"
    );
    assert_eq!(claude["hit_rate"], json!(0.4));
    assert_eq!(st["window"], want, "every format together");
    assert_eq!(st["window_minutes"], 60);
    assert_eq!(st["buckets"].as_array().unwrap().len(), 60);
    let in_buckets: u64 = st["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            ["hits", "switches", "new"]
                .iter()
                .map(|k| b["counts"][k].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(in_buckets, 5, "the buckets hold every counted request");
    let openai = st["formats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["api_format"] == "OPENAI")
        .unwrap();
    assert_eq!(openai["total"], json!({"hits": 0, "switches": 0, "new": 0}));
    let (s, _) = app
        .get("/api/admin/monitoring/cache/stats?minutes=15", &admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = app
        .get("/api/admin/monitoring/cache/stats?minutes=0", &admin)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e.to_string().contains("1 to 60 minutes"), "{e}");
    let (_, list) = app
        .get("/api/admin/monitoring/cache/affinities", &admin)
        .await;
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "s1 and s2 are bound: {list}"
    );
    let (_, user) = app.user_token(&admin, "plain@example.com").await;
    let (s, _) = app.get("/api/admin/monitoring/cache/stats", &user).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "admins only");

    // The page: hit rate, the CLAUDE row, the bars of the hour.
    let (_, html) = page(&app, &c, "/admin/affinity").await;
    let kpi = &html[html.find(r#"data-kpi="hit-rate""#).unwrap()..];
    assert!(
        kpi[..kpi.find("</div>").unwrap()].contains("40.0 %"),
        "{kpi}"
    );
    let row = format_row(&html, "CLAUDE");
    assert_eq!(
        [
            stat(row, "hits"),
            stat(row, "switches"),
            stat(row, "new"),
            stat(row, "rate")
        ],
        ["2", "1", "2", "40.0 %"]
    );
    assert_eq!(stat(row, "total"), "2 / 1 / 2");
    assert!(
        !html.contains(r#"<tr data-format="OPENAI""#),
        "formats without traffic are left out"
    );
    for class in ["aff hit", "aff switch", "aff new"] {
        assert!(html.contains(&format!(r#"class="{class}""#)), "{class} bar");
    }
    assert!(html.contains("2 live bindings"), "{html}");

    // Clearing the bindings keeps the counts; with fixed_order nothing more is counted.
    let token = csrf(&html);
    let (s, _, _) = submit(&app, &c, "/admin/affinity/clear", &[("csrf", &token)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, v) = app
        .put(
            "/api/admin/system/configs/scheduling_mode",
            &admin,
            json!({"value": "fixed_order"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(session_request(&app, &key, "s1").await, StatusCode::OK);
    let (_, st) = app.get("/api/admin/monitoring/cache/stats", &admin).await;
    assert_eq!(st["window"], want, "{st}");
    let (_, html) = page(&app, &c, "/admin/affinity").await;
    assert!(
        html.contains("fixed_order"),
        "the page says why nothing is bound"
    );
    assert_eq!(stat(format_row(&html, "CLAUDE"), "hits"), "2");

    app.stop().await;
    mock.shutdown(std::time::Duration::from_secs(1)).await;
}

/// The summary row of one kind of record after an import: (created, updated, skipped) and the
/// row's HTML.
fn import_row<'a>(html: &'a str, label: &str) -> ((u32, u32, u32), &'a str) {
    let row = &html[html
        .find(&format!(r#"data-import-kind="{label}""#))
        .unwrap_or_else(|| panic!("{label} in {html}"))..];
    let row = &row[..row.find("</tr>").unwrap()];
    let n = |what: &str| -> u32 {
        let at = row.find(&format!(r#"data-count="{what}">"#)).unwrap() + what.len() + 14;
        row[at..].split('<').next().unwrap().parse().unwrap()
    };
    ((n("created"), n("updated"), n("skipped")), row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_import_shows_what_it_created_updated_and_skipped() {
    // A realistic export: a provider with an endpoint, two keys and a priced model.
    let source = TestApp::start().await;
    let admin = source.admin_token().await;
    let route = source
        .add_route(
            &admin,
            "anthropic",
            "CLAUDE",
            "https://api.anthropic.example",
            &[("sk-primary-key-1", 1)],
            MODEL,
            "claude-up",
            10,
        )
        .await;
    let (s, k) = source
        .post(
            &format!("/api/admin/endpoints/{}/keys", route.endpoint_id),
            &admin,
            json!({ "api_key": "sk-very-secret-backup", "name": "backup" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let (s, doc) = source
        .get(
            "/api/admin/system/config/export?include_secrets=true",
            &admin,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    source.stop().await;

    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, html) = page(&app, &c, "/admin/settings").await;
    assert!(html.contains("data-import"), "the form the script drives");
    assert!(html.contains("data-import-status"));
    let token = csrf(&html);
    let text = doc.to_string();
    let import = |mode: &'static str, document: String| {
        let (c, app, token) = (&c, &app, token.clone());
        async move {
            submit(
                app,
                c,
                "/admin/settings/import",
                &[
                    ("csrf", &token),
                    ("document", &document),
                    ("merge_mode", mode),
                ],
            )
            .await
        }
    };

    // A forged form writes nothing.
    let (s, _, _) = submit(
        &app,
        &c,
        "/admin/settings/import",
        &[
            ("csrf", "forged"),
            ("document", &text),
            ("merge_mode", "skip"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, providers) = app.get("/api/admin/providers", &admin).await;
    assert_eq!(providers["total"], 0, "{providers}");

    // Bad input: not JSON, another version — 422 with the message, the text kept.
    let (s, _, html) = import("skip", "{\"version\": \"1.0\", ".to_string()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("data-import-error"), "{html}");
    assert!(html.contains("not a configuration document"), "{html}");
    assert!(
        html.contains("&quot;version&quot;: &quot;1.0&quot;, </textarea>"),
        "the text is kept"
    );
    let mut v2 = doc.clone();
    v2["version"] = json!("2.0");
    let (s, _, html) = import("skip", v2.to_string()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("unsupported configuration version"), "{html}");
    let (s, _, html) = import("merge", text.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("is not one of skip, overwrite, error"),
        "{html}"
    );

    // First import: everything is created, by name; secrets never appear.
    let (s, _, html) = import("skip", text.clone()).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("Configuration imported (existing records skipped)."),
        "{html}"
    );
    let (n, row) = import_row(&html, "Global models");
    assert_eq!(n, (1, 0, 0));
    assert!(row.contains(&format!("<code>{MODEL}</code>")), "{row}");
    let (n, row) = import_row(&html, "Providers");
    assert_eq!(n, (1, 0, 0));
    assert!(row.contains("<code>anthropic</code>"));
    assert_eq!(import_row(&html, "Endpoints").0, (1, 0, 0));
    let (n, row) = import_row(&html, "Upstream keys");
    assert_eq!(n, (2, 0, 0));
    assert!(row.contains("anthropic CLAUDE backup"), "{row}");
    let (n, row) = import_row(&html, "Provider models");
    assert_eq!(n, (1, 0, 0));
    assert!(row.contains("anthropic&#x2f;claude-up"), "{row}");
    assert!(
        !html.contains("sk-very-secret-backup"),
        "no secret on the page"
    );
    let (_, providers) = app.get("/api/admin/providers", &admin).await;
    assert_eq!(providers["total"], 1, "{providers}");

    // Again with skip: nothing changes, everything is listed as skipped.
    let (s, _, html) = import("skip", text.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("— nothing changed."), "{html}");
    for label in ["Global models", "Providers", "Endpoints", "Provider models"] {
        let (n, row) = import_row(&html, label);
        assert_eq!(n, (0, 0, 1), "{label}");
        assert!(row.contains(r#"data-names="skipped""#), "{row}");
    }
    assert_eq!(
        import_row(&html, "Upstream keys").0,
        (0, 0, 2),
        "keys match by value"
    );

    // error mode stops at the first existing record and writes nothing.
    let (s, _, html) = import("error", text.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("already exists"), "{html}");

    // overwrite: the changed display name is applied; keys are never overwritten.
    let mut changed = doc.clone();
    changed["providers"][0]["display_name"] = json!("Anthropic (imported)");
    let (s, _, html) = import("overwrite", changed.to_string()).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("existing records overwritten"));
    for label in ["Global models", "Providers", "Endpoints", "Provider models"] {
        assert_eq!(import_row(&html, label).0, (0, 1, 0), "{label}");
    }
    assert_eq!(import_row(&html, "Upstream keys").0, (0, 0, 2));
    assert!(
        html.contains(r#"<option value="overwrite" selected>"#),
        "the mode is kept"
    );
    let (_, providers) = app.get("/api/admin/providers", &admin).await;
    assert_eq!(
        providers["items"][0]["display_name"],
        "Anthropic (imported)"
    );

    // The JSON API reports the same, by name.
    let mut api_doc = doc.clone();
    api_doc["merge_mode"] = json!("skip");
    let (s, r) = app
        .post("/api/admin/system/config/import", &admin, api_doc)
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(
        r["stats"]["items"]
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "provider", "name": "anthropic", "action": "skipped"})),
        "{r}"
    );

    app.stop().await;
}
