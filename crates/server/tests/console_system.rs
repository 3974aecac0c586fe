//! The console's admin "System" pages on the real server: the health monitor, cache affinity,
//! IP rules, the audit log, announcements and the settings form (with configuration export
//! and import) — rendered with real data, every form submitted, and refused to non-admins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use aether_testkit::MockUpstream;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use reqwest::{Client, StatusCode, redirect};
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5";

/// A browser-like client: keeps cookies, does not follow redirects (so post/redirect/get is
/// visible).
fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> Client {
    let c = browser();
    let r = c
        .post(format!("{}/login", app.url))
        .form(&[("email", email), ("password", password), ("next", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "console login {email}");
    c
}

async fn page(app: &TestApp, c: &Client, path: &str) -> (StatusCode, String) {
    let r = c.get(format!("{}{path}", app.url)).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The anti-CSRF token of a rendered page.
fn csrf(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a csrf field")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// Posts a form; returns status, `Location` and body.
async fn submit(
    app: &TestApp,
    c: &Client,
    path: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let r = c
        .post(format!("{}{path}", app.url))
        .form(fields)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

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
    assert!(html.contains("Configuration imported."), "{html}");
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
