//! The console's user pages (model catalog with capability preferences, announcements,
//! profile and password, health) and the admin standalone-keys pages, on the real server:
//! rendered with real data, every form submitted, and admin pages refused to users.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;
mod console_kit;

use aether_testkit::MockUpstream;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use console_kit::{csrf, page, shown_secret, sign_in, submit, try_sign_in};
use reqwest::StatusCode;
use serde_json::json;

const MODEL: &str = "claude-sonnet-4-5";
const USER: &str = "alice@example.com";
const USER_PASSWORD: &str = "user-password-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_pages_render_and_their_forms_work() {
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
    let (_, key) = app.gateway_key(&admin, USER).await;
    app.wait_for_model(&key, MODEL).await;
    let user_token = app.login(USER, USER_PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // One successful request: the health view has something to summarise.
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
    let (s, a) = app
        .post(
            "/api/announcements",
            &admin,
            json!({ "title": "Scheduled maintenance", "content": "Sunday 02:00 UTC, ten minutes.",
                    "type": "maintenance" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let (s, a) = app
        .post(
            "/api/announcements",
            &admin,
            json!({ "title": "Hidden draft", "content": "not yet", "is_active": false }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");

    let c = sign_in(&app, USER, USER_PASSWORD).await;

    // The catalog: the model and its prices per tier (defaults derived for cache prices).
    let (s, html) = page(&app, &c, "/models").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains(&format!(r#"data-model="{MODEL}""#)), "{html}");
    for price in [
        "$3.00",
        "$15.00",
        "$6.00",
        "$22.50",
        "$0.30",
        "$3.75",
        "200,000 tokens",
    ] {
        assert!(html.contains(price), "{price} on the catalog");
    }
    assert!(html.contains("cache_1h") && html.contains("context_1m"));
    assert!(html.contains(r#"href="/models" aria-current="page""#));

    // A capability preference: refused without a capability, then saved and persisted.
    let token = csrf(&html);
    let (s, _, body) = submit(
        &app,
        &c,
        "/models/capabilities",
        &[("csrf", &token), ("op", "save"), ("model", "claude-*")],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("choose at least one capability"), "{body}");
    let (s, _, _) = submit(
        &app,
        &c,
        "/models/capabilities",
        &[
            ("csrf", "forged"),
            ("op", "save"),
            ("model", "claude-*"),
            ("cap", "cache_1h"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a forged form is refused");
    let (s, location, _) = submit(
        &app,
        &c,
        "/models/capabilities",
        &[
            ("csrf", &token),
            ("op", "save"),
            ("model", "claude-*"),
            ("cap", "cache_1h"),
            ("cap", "context_1m"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location, "/models?saved=saved");
    let (_, caps) = app
        .get("/api/users/me/model-capabilities", &user_token)
        .await;
    assert_eq!(caps, json!({ "claude-*": ["cache_1h", "context_1m"] }));
    let (_, html) = page(&app, &c, &location).await;
    assert!(html.contains("Capability preference saved"));
    assert!(html.contains(r#"data-pref="claude-*""#), "{html}");
    assert!(html.contains(r#"<span class="chip ok" title="you prefer this">cache_1h</span>"#));
    // Removed again, then saved once more for the later checks.
    let (s, location, _) = submit(
        &app,
        &c,
        "/models/capabilities",
        &[("csrf", &token), ("op", "remove"), ("model", "claude-*")],
    )
    .await;
    assert_eq!(
        (s, location.as_str()),
        (StatusCode::SEE_OTHER, "/models?saved=removed")
    );
    let (_, caps) = app
        .get("/api/users/me/model-capabilities", &user_token)
        .await;
    assert_eq!(caps, json!({}));

    // An allow-list without the model hides it from the catalog.
    let (_, uid) = app.get("/api/users/me", &user_token).await;
    let uid = uid["id"].as_str().unwrap().to_string();
    let (s, u) = app
        .put(
            &format!("/api/admin/users/{uid}"),
            &admin,
            json!({ "allowed_models": ["gpt-*"] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    let (_, html) = page(&app, &c, "/models").await;
    assert!(!html.contains(&format!(r#"data-model="{MODEL}""#)));
    assert!(html.contains("Only the models your account may use are listed."));
    let (s, u) = app
        .put(
            &format!("/api/admin/users/{uid}"),
            &admin,
            json!({ "allowed_models": ["claude-*"] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    let (_, html) = page(&app, &c, "/models").await;
    assert!(html.contains(&format!(r#"data-model="{MODEL}""#)));

    // Announcements: the active one only.
    let (s, html) = page(&app, &c, "/announcements").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("Scheduled maintenance") && html.contains("Sunday 02:00 UTC"));
    assert!(!html.contains("Hidden draft"));

    // Health: every format; CLAUDE served its one request.
    let (s, html) = page(&app, &c, "/status").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    for f in ["CLAUDE", "OPENAI", "GEMINI_CLI"] {
        assert!(html.contains(&format!(r#"data-format="{f}""#)), "{f}");
    }
    assert!(html.contains(r#"<svg class="status-bar""#));
    let claude = &html[html.find(r#"data-format="CLAUDE""#).unwrap()..];
    let claude = &claude[..claude.find("</tr>").unwrap()];
    assert!(
        claude.contains("operational") && claude.contains("100.0 %"),
        "{claude}"
    );
    assert!(claude.contains(r#"class="hb success""#));
    let gemini = &html[html.find(r#"data-format="GEMINI""#).unwrap()..];
    assert!(gemini[..gemini.find("</tr>").unwrap()].contains("no traffic"));

    // Profile: shown, edited (with inline validation), and saved.
    let (s, html) = page(&app, &c, "/profile").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(&format!(r#"value="{USER}""#)));
    let token = csrf(&html);
    let (s, _, body) = submit(
        &app,
        &c,
        "/profile",
        &[
            ("csrf", &token),
            ("email", "not-an-email"),
            ("username", "alice"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains(r#"class="field-error""#), "{body}");
    let (s, location, _) = submit(
        &app,
        &c,
        "/profile",
        &[("csrf", &token), ("email", USER), ("username", "alice-w")],
    )
    .await;
    assert_eq!(
        (s, location.as_str()),
        (StatusCode::SEE_OTHER, "/profile?done=profile")
    );
    let (_, html) = page(&app, &c, &location).await;
    assert!(html.contains("Profile saved.") && html.contains(r#"value="alice-w""#));

    // Password: a wrong current password is an inline error; the right one changes it.
    let new_password = "a-much-better-passphrase";
    let (s, _, body) = submit(
        &app,
        &c,
        "/profile/password",
        &[
            ("csrf", &token),
            ("old_password", "wrong-password"),
            ("new_password", new_password),
            ("confirm_password", new_password),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("the current password is wrong"), "{body}");
    let (s, _, body) = submit(
        &app,
        &c,
        "/profile/password",
        &[
            ("csrf", &token),
            ("old_password", USER_PASSWORD),
            ("new_password", new_password),
            ("confirm_password", "something-else-entirely"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("the two new passwords differ"));
    let (s, location, _) = submit(
        &app,
        &c,
        "/profile/password",
        &[
            ("csrf", &token),
            ("old_password", USER_PASSWORD),
            ("new_password", new_password),
            ("confirm_password", new_password),
        ],
    )
    .await;
    assert_eq!(
        (s, location.as_str()),
        (StatusCode::SEE_OTHER, "/profile?done=password")
    );
    // This browser was signed in again; the API token of the old session is revoked.
    let (s, html) = page(&app, &c, &location).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Password changed."));
    let (s, _) = app.get("/api/users/me", &user_token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = try_sign_in(&app, USER, USER_PASSWORD).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the old password no longer works"
    );
    let c = sign_in(&app, USER, new_password).await;
    let (s, _) = page(&app, &c, "/profile").await;
    assert_eq!(s, StatusCode::OK);

    // Admin pages are refused.
    for path in [
        "/admin/keys",
        "/admin/keys/00000000-0000-0000-0000-000000000000",
    ] {
        let (s, _) = page(&app, &c, path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    let (s, _, _) = submit(
        &app,
        &c,
        "/admin/keys",
        &[
            ("csrf", &token),
            ("name", "x"),
            ("initial_balance_usd", "5"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_standalone_keys() {
    let app = TestApp::start().await;
    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    let (s, html) = page(&app, &c, "/admin/keys").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("No standalone keys yet."));
    assert!(html.contains(r#"href="/admin/keys" aria-current="page""#));
    let token = csrf(&html);

    // Inline validation.
    let (s, _, body) = submit(
        &app,
        &c,
        "/admin/keys",
        &[
            ("csrf", &token),
            ("name", "acme"),
            ("initial_balance_usd", "lots"),
            ("expire_days", ""),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains(r#"class="field-error""#) && body.contains("positive decimal"));
    assert!(
        body.contains(r#"value="acme""#),
        "the form keeps what was typed"
    );

    // Created: the full key appears once, on this response only.
    let (s, _, body) = submit(
        &app,
        &c,
        "/admin/keys",
        &[
            ("csrf", &token),
            ("name", "acme"),
            ("initial_balance_usd", "5"),
            ("expire_days", "30"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let full = shown_secret(&body).expect("the new key shown once");
    assert!(full.starts_with("sk-") && full.len() > 20, "{full}");
    let at = body.find(r#"<a href="/admin/keys/"#).unwrap() + 21;
    let id = body[at..].split('"').next().unwrap().to_string();

    let (s, html) = page(&app, &c, "/admin/keys").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("acme") && html.contains("$5.00"));
    assert!(!html.contains(&full), "the list never shows the full key");
    let (s, html) = page(&app, &c, &format!("/admin/keys/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(!html.contains(&full), "the detail never shows the full key");
    assert!(
        html.contains("opening balance"),
        "the opening top-up is in the ledger"
    );

    // Top up by 10: the balance and a ledger row.
    let token = csrf(&html);
    let (s, location, _) = submit(
        &app,
        &c,
        &format!("/admin/keys/{id}/balance"),
        &[
            ("csrf", &token),
            ("amount_usd", "10"),
            ("kind", "topup"),
            ("reason", "invoice 42"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location, format!("/admin/keys/{id}?done=adjusted"));
    let (_, html) = page(&app, &c, &location).await;
    assert!(html.contains("Balance adjusted."));
    assert!(
        html.contains("<strong data-balance>$15.00</strong>"),
        "{html}"
    );
    assert!(html.contains("invoice 42") && html.contains("$10.00"));
    assert_eq!(html.matches(r#"data-ledger="topup""#).count(), 2);

    // Below zero is refused, inline, and nothing changes.
    let (s, _, body) = submit(
        &app,
        &c,
        &format!("/admin/keys/{id}/balance"),
        &[
            ("csrf", &token),
            ("amount_usd", "-100"),
            ("kind", "adjustment"),
            ("reason", "too much"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("insufficient balance"), "{body}");
    assert!(body.contains(r#"class="field-error""#));
    assert!(body.contains("<strong data-balance>$15.00</strong>"));
    // A negative top-up is refused by the service too.
    let (s, _, body) = submit(
        &app,
        &c,
        &format!("/admin/keys/{id}/balance"),
        &[("csrf", &token), ("amount_usd", "-1"), ("kind", "topup")],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("top-ups and refunds are positive"), "{body}");

    // Disable, enable, delete.
    let (s, location, _) = submit(
        &app,
        &c,
        &format!("/admin/keys/{id}/active"),
        &[("csrf", &token), ("active", "false")],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, html) = page(&app, &c, &location).await;
    assert!(html.contains("Key disabled") && html.contains("Enable key"));
    let (_, html) = page(&app, &c, "/admin/keys").await;
    assert!(html.contains(r#"<span class="chip">disabled</span>"#));
    let (s, location, _) = submit(
        &app,
        &c,
        &format!("/admin/keys/{id}/delete"),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(
        (s, location.as_str()),
        (StatusCode::SEE_OTHER, "/admin/keys?deleted=1")
    );
    let (_, html) = page(&app, &c, &location).await;
    assert!(html.contains("Key deleted.") && !html.contains(&format!(r#"data-key="{id}""#)));
    let (s, _) = page(&app, &c, &format!("/admin/keys/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    app.stop().await;
}
