//! The console's admin Users pages on the real server: the list (search, role and status
//! filters, paging, quota use), "New user" with inline validation, a user's page whose edit
//! form changes quota and allow-lists (checked through the JSON API and through the gateway,
//! which then refuses a format the user may no longer use), "Reset quota" after real spend,
//! the user's keys (created and shown once, disabled, enabled, deleted), deleting the user;
//! the admin kept from locking themselves out; forged forms and non-admins refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;
mod console_kit;

use std::time::Duration;

use aether_domain::entities::{QuotaPeriod, Role, User};
use aether_domain::{Timestamp, Usd, UserId};
use aether_store::UserRepo as _;
use aether_testkit::MockUpstream;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use console_kit::{csrf, page, shown_secret, sign_in, submit};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5";
const USER: &str = "alice@example.com";
const USER_PASSWORD: &str = "user-password-1";

/// The `<tr>` of the row marked `marker` (e.g. `data-user="x"`).
fn row<'a>(html: &'a str, marker: &str) -> &'a str {
    let from = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} on the page"));
    let end = html[from..].find("</tr>").unwrap() + from;
    &html[from..end]
}

fn usd(v: &Value) -> Usd {
    v.as_str()
        .unwrap_or_else(|| panic!("an amount: {v}"))
        .parse()
        .unwrap()
}

/// A user's keys through the JSON API.
async fn user_keys(app: &TestApp, admin: &str, uid: &str) -> Vec<Value> {
    let (s, keys) = app
        .get(&format!("/api/admin/users/{uid}/api-keys"), admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{keys}");
    keys["items"].as_array().unwrap().clone()
}

/// One Claude Messages request with a gateway key; returns the status.
async fn claude(app: &TestApp, key: &str) -> StatusCode {
    app.client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({ "model": MODEL, "max_tokens": 32,
                       "messages": [{"role": "user", "content": "Hello"}] }))
        .send()
        .await
        .unwrap()
        .status()
}

/// One OpenAI Chat request with a gateway key; returns the status.
async fn openai(app: &TestApp, key: &str) -> StatusCode {
    app.client
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(key)
        .json(&json!({ "model": MODEL, "max_tokens": 32,
                       "messages": [{"role": "user", "content": "Hello"}] }))
        .send()
        .await
        .unwrap()
        .status()
}

/// Retries `f` until it answers `want` (configuration reaches the gateway's snapshot on its
/// own schedule); returns the last answer.
async fn eventually<F, Fut>(want: StatusCode, mut f: F) -> StatusCode
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let mut last = StatusCode::IM_A_TEAPOT;
    for _ in 0..80 {
        last = f().await;
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_filters_pages_and_creates_users() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    let (s, html) = page(&app, &c, "/admin/users").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(&format!(r#"data-user="{ADMIN_EMAIL}""#)),
        "{html}"
    );
    assert!(html.contains("New user"));
    let token = csrf(&html);

    // A forged form is refused and creates nobody.
    let (s, _, _) = submit(
        &app,
        &c,
        "/admin/users",
        &[
            ("csrf", "forged"),
            ("email", "bob@example.com"),
            ("password", "long-enough-1"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, list) = app.get("/api/admin/users?search=bob", &admin).await;
    assert_eq!(list["total"], 0, "{list}");

    // Bad money: inline, with what was typed (but never the password) shown again.
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/users",
        &[
            ("csrf", &token),
            ("email", "bob@example.com"),
            ("password", "long-enough-1"),
            ("quota_usd", "ten dollars"),
            ("quota_period", "monthly"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("field-error"), "{html}");
    assert!(html.contains("is not an amount"), "{html}");
    assert!(
        html.contains(r#"value="bob@example.com""#),
        "typed email kept"
    );
    assert!(html.contains(r#"value="ten dollars""#), "typed quota kept");
    assert!(
        !html.contains("long-enough-1"),
        "the password is never echoed"
    );
    assert!(
        html.contains("<details class=\"drawer\" open"),
        "the drawer stays open"
    );

    // Finer than a nano-dollar is refused, not rounded.
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/users",
        &[
            ("csrf", &token),
            ("email", "bob@example.com"),
            ("password", "long-enough-1"),
            ("quota_usd", "0.0000000001"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("at most 9 decimal places"), "{html}");

    // A short password, and an email that is taken: the service's words, by the field.
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/users",
        &[
            ("csrf", &token),
            ("email", "bob@example.com"),
            ("password", "short"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("field-error"), "{html}");
    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/users",
        &[
            ("csrf", &token),
            ("email", ADMIN_EMAIL),
            ("password", "long-enough-1"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        html.contains("a user with this email already exists"),
        "{html}"
    );

    // A good one: exact money, then back to the list with a notice.
    let (s, loc, _) = submit(
        &app,
        &c,
        "/admin/users",
        &[
            ("csrf", &token),
            ("email", "bob@example.com"),
            ("username", "bobby"),
            ("password", "long-enough-1"),
            ("role", "user"),
            ("quota_usd", "$1,234.567890123"),
            ("quota_period", "monthly"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(loc.starts_with("/admin/users?saved=created&id="), "{loc}");
    let (_, list) = app.get("/api/admin/users?search=bob", &admin).await;
    let bob = &list["items"][0];
    assert_eq!(bob["username"], "bobby");
    assert_eq!(
        usd(&bob["quota_usd"]),
        "1234.567890123".parse::<Usd>().unwrap()
    );
    assert_eq!(bob["quota_period"], "monthly");
    let (s, html) = page(&app, &c, &loc).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("User created."), "{html}");
    assert!(html.contains(&format!("/admin/users/{}", bob["id"].as_str().unwrap())));
    let r = row(&html, r#"data-user="bob@example.com""#);
    assert!(r.contains("$0.00 / $1234.567890123"), "{r}");
    assert!(r.contains("monthly"));

    // More accounts through the JSON API: an admin and a disabled user.
    let (s, _) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "dave@example.com", "password": "long-enough-1", "role": "admin" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "carol@example.com", "password": "long-enough-1", "is_active": false }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (_, html) = page(&app, &c, "/admin/users?role=admin").await;
    assert!(html.contains(r#"data-user="dave@example.com""#));
    assert!(html.contains(&format!(r#"data-user="{ADMIN_EMAIL}""#)));
    assert!(!html.contains(r#"data-user="bob@example.com""#));
    assert!(
        html.contains(r#"<option selected>admin</option>"#),
        "the filter stays set"
    );
    let (_, html) = page(&app, &c, "/admin/users?active=disabled").await;
    assert!(html.contains(r#"data-user="carol@example.com""#));
    assert!(row(&html, r#"data-user="carol@example.com""#).contains("disabled"));
    assert!(!html.contains(r#"data-user="bob@example.com""#));
    let (_, html) = page(&app, &c, "/admin/users?search=BOBBY").await;
    assert!(
        html.contains(r#"data-user="bob@example.com""#),
        "search by username"
    );
    assert!(!html.contains(r#"data-user="carol@example.com""#));
    let (_, html) = page(&app, &c, "/admin/users?search=nobody-like-this").await;
    assert!(html.contains("No user matches these filters."));

    // Paging: 30 more users (written straight to the store: hashing 30 passwords is slow).
    let now = Timestamp::now();
    for i in 0..30 {
        let u = User {
            id: UserId::new(),
            email: format!("bulk{i:02}@example.com"),
            username: format!("bulk{i:02}"),
            password_hash: "not-a-hash".into(),
            role: Role::User,
            is_active: true,
            quota_usd: None,
            used_usd: Usd::ZERO,
            total_usd: Usd::ZERO,
            quota_period: QuotaPeriod::None,
            period_started_at: Some(now),
            allowed_providers: None,
            allowed_api_formats: None,
            allowed_models: None,
            model_capability_settings: Default::default(),
            last_login_at: None,
            created_at: now,
            updated_at: now,
        };
        app.store().insert_user(&u).await.unwrap();
    }
    let (_, html) = page(&app, &c, "/admin/users?search=bulk&role=user").await;
    assert_eq!(html.matches("data-user=\"bulk").count(), 25);
    assert!(html.contains("Page 1 of 2"), "{html}");
    assert!(
        html.replace("&amp;", "&")
            .contains(r#"href="/admin/users?search=bulk&role=user&active=&page=2""#),
        "the next page keeps the filters: {html}"
    );
    let (s, html) = page(
        &app,
        &c,
        "/admin/users?search=bulk&role=user&active=&page=2",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(html.matches("data-user=\"bulk").count(), 5);
    assert!(html.contains("Page 2 of 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_page_edits_quota_allow_lists_keys_and_deletes() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let claude_route = app
        .add_route(
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
    let openai_route = app
        .add_route(
            &admin,
            "openai-relay",
            "OPENAI",
            &mock.url(),
            &[("sk-upstream-b", 1)],
            MODEL,
            "gpt-up",
            10,
        )
        .await;
    let (uid, key) = app.gateway_key(&admin, USER).await;
    app.wait_for_model(&key, MODEL).await;
    assert_eq!(claude(&app, &key).await, StatusCode::OK);
    assert_eq!(openai(&app, &key).await, StatusCode::OK);
    // The two requests are billed to alice (asynchronously).
    let mut spent = Usd::ZERO;
    for _ in 0..200 {
        let (_, u) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
        spent = usd(&u["used_usd"]);
        if !spent.is_zero() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!spent.is_zero(), "the requests were billed");

    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let path = format!("/admin/users/{uid}");

    // The list links to the page and shows the spend.
    let (_, html) = page(&app, &c, "/admin/users").await;
    let r = row(&html, &format!(r#"data-user="{USER}""#));
    assert!(r.contains(&format!(r#"href="{path}""#)), "{r}");
    assert!(r.contains(&format!("${} / ", money(spent))), "{r}");

    // ---- the page: account, spend, access, keys (masked), the catalog as checkboxes ----
    let (s, html) = page(&app, &c, &path).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(USER));
    assert!(
        html.contains("all providers") && html.contains("all models"),
        "{html}"
    );
    let (_, keys) = app
        .get(&format!("/api/admin/users/{uid}/api-keys"), &admin)
        .await;
    let display = keys["items"][0]["key_display"].as_str().unwrap();
    assert!(html.contains(display), "the masked key is listed");
    assert!(!html.contains(&key), "the full key is never shown again");
    for p in [&claude_route.provider_id, &openai_route.provider_id] {
        assert!(
            html.contains(&format!(r#"name="provider" value="{p}""#)),
            "provider {p} offered"
        );
    }
    assert!(html.contains(&format!(r#"name="model" value="{MODEL}""#)));
    for f in [
        "CLAUDE",
        "CLAUDE_CLI",
        "OPENAI",
        "OPENAI_CLI",
        "GEMINI",
        "GEMINI_CLI",
    ] {
        assert!(
            html.contains(&format!(r#"name="format" value="{f}""#)),
            "{f}"
        );
    }
    let token = csrf(&html);

    let good_edit = |quota: &'static str, providers_mode: &'static str| {
        vec![
            ("email", USER),
            ("username", "alice-renamed"),
            ("role", "user"),
            ("is_active", "on"),
            ("quota_usd", quota),
            ("quota_period", "daily"),
            ("providers_mode", providers_mode),
            ("models_mode", "only"),
            ("model", MODEL),
            ("models_other", "gpt-*"),
            ("formats_mode", "only"),
            ("format", "CLAUDE"),
            ("format", "CLAUDE_CLI"),
        ]
    };

    // A forged edit changes nothing.
    let mut fields = good_edit("1", "all");
    fields.push(("csrf", "forged"));
    let (s, _, _) = submit(&app, &c, &path, &fields).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, u) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
    assert!(
        u["quota_usd"].is_null() && u["allowed_api_formats"].is_null(),
        "{u}"
    );

    // Bad money: inline, everything typed shown again.
    let mut fields = good_edit("lots", "all");
    fields.push(("csrf", &token));
    let (s, _, html) = submit(&app, &c, &path, &fields).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("field-error") && html.contains("is not an amount"),
        "{html}"
    );
    assert!(html.contains(r#"value="lots""#));
    assert!(html.contains(r#"value="alice-renamed""#));
    assert!(html.contains(r#"value="gpt-*""#));
    assert!(
        html.contains(r#"name="format" value="CLAUDE_CLI" checked"#),
        "{html}"
    );
    assert!(!html.contains(r#"name="format" value="OPENAI" checked"#));
    assert!(html.contains(r#"<details class="drawer wide" open"#));

    // "Only" with nothing checked would refuse everything: caught inline.
    let mut fields = good_edit("7.125", "only");
    fields.push(("csrf", &token));
    let (s, _, html) = submit(&app, &c, &path, &fields).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("check at least one provider"), "{html}");

    // A provider id that is not in the catalog is refused.
    let mut fields = good_edit("7.125", "only");
    fields.push(("provider", "not-a-provider"));
    fields.push(("csrf", &token));
    let (s, _, html) = submit(&app, &c, &path, &fields).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("unknown provider"), "{html}");

    // The real edit.
    let mut fields = good_edit("7.125", "only");
    fields.push(("provider", &claude_route.provider_id));
    fields.push(("csrf", &token));
    let (s, loc, _) = submit(&app, &c, &path, &fields).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(loc, format!("{path}?saved=updated"));
    let (_, u) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
    assert_eq!(u["username"], "alice-renamed");
    assert_eq!(usd(&u["quota_usd"]), "7.125".parse::<Usd>().unwrap());
    assert_eq!(u["quota_period"], "daily");
    assert_eq!(u["allowed_providers"], json!([claude_route.provider_id]));
    assert_eq!(u["allowed_models"], json!([MODEL, "gpt-*"]));
    assert_eq!(u["allowed_api_formats"], json!(["CLAUDE", "CLAUDE_CLI"]));
    let (_, html) = page(&app, &c, &loc).await;
    assert!(html.contains("Changes saved."));
    assert!(
        html.contains(&format!("${} / $7.125", money(spent))),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="chip">anthropic</span>"#),
        "{html}"
    );
    assert!(html.contains(r#"<span class="chip">gpt-*</span>"#));
    assert!(html.contains(r#"<span class="chip">CLAUDE_CLI</span>"#));
    assert!(
        html.contains(r#"name="format" value="CLAUDE" checked"#),
        "the form shows the stored lists"
    );
    assert!(
        html.contains(r#"value="gpt-*""#),
        "a pattern stays in the free-text field"
    );

    // The gateway follows: OpenAI-format requests are now refused for alice, Claude ones work.
    assert_eq!(
        eventually(StatusCode::FORBIDDEN, || openai(&app, &key)).await,
        StatusCode::FORBIDDEN
    );
    let (_, before) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
    let before = usd(&before["total_usd"]);
    assert_eq!(claude(&app, &key).await, StatusCode::OK);
    // Wait for that request's billing, so it cannot land after the reset below.
    let mut total = before;
    for _ in 0..200 {
        let (_, u) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
        total = usd(&u["total_usd"]);
        if total != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(total > before, "the request was billed");

    // ---- reset quota: the period's spend goes to zero, the lifetime total stays ----
    let (s, _, _) = submit(
        &app,
        &c,
        &format!("{path}/reset-quota"),
        &[("csrf", "forged")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, u) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
    assert!(
        !usd(&u["used_usd"]).is_zero(),
        "a forged reset does nothing"
    );
    let (s, loc, _) = submit(
        &app,
        &c,
        &format!("{path}/reset-quota"),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{path}?saved=quota-reset").as_str()
        )
    );
    let (_, u) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
    assert!(usd(&u["used_usd"]).is_zero(), "{u}");
    assert_eq!(usd(&u["total_usd"]), total);
    let (_, html) = page(&app, &c, &loc).await;
    assert!(html.contains("Quota reset"));
    assert!(html.contains("$0.00 / $7.125"), "{html}");

    // ---- keys: bad input, then one shown once, disabled, enabled, deleted ----
    let keys_path = format!("{path}/keys");
    let (s, _, html) = submit(
        &app,
        &c,
        &keys_path,
        &[("csrf", &token), ("name", "ci"), ("rate_limit", "fast")],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("requests per minute above zero"), "{html}");
    assert!(html.contains(r#"value="fast""#));
    let (s, _, html) = submit(&app, &c, &keys_path, &[("csrf", &token), ("name", "  ")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("field-error"));
    let (s, _, _) = submit(&app, &c, &keys_path, &[("csrf", "forged"), ("name", "ci")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, _, html) = submit(
        &app,
        &c,
        &keys_path,
        &[
            ("csrf", &token),
            ("name", "ci"),
            ("rate_limit", "60"),
            ("expire_days", "30"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let new_key = shown_secret(&html).expect("the new key is shown");
    assert!(new_key.starts_with("sk-"), "{new_key}");
    assert!(html.contains("shown only this once"));
    assert_eq!(
        eventually(StatusCode::OK, || claude(&app, &new_key)).await,
        StatusCode::OK,
        "the key works at once"
    );
    let (_, html) = page(&app, &c, &path).await;
    assert!(!html.contains(&new_key), "never shown again");
    let (_, keys) = app
        .get(&format!("/api/admin/users/{uid}/api-keys"), &admin)
        .await;
    let ci = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .expect("the key in the API")
        .clone();
    assert_eq!(ci["rate_limit"], 60);
    assert!(!ci["expires_at"].is_null());
    let ci_id = ci["id"].as_str().unwrap().to_string();
    assert!(html.contains(ci["key_display"].as_str().unwrap()));
    assert!(row(&html, r#"data-key="ci""#).contains("active"));

    let (s, loc, _) = submit(
        &app,
        &c,
        &format!("{keys_path}/{ci_id}/active"),
        &[("csrf", &token), ("active", "false")],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{path}?saved=key-disabled").as_str()
        )
    );
    assert_eq!(
        eventually(StatusCode::UNAUTHORIZED, || claude(&app, &new_key)).await,
        StatusCode::UNAUTHORIZED,
        "a disabled key is refused"
    );
    let (_, html) = page(&app, &c, &loc).await;
    assert!(html.contains("Key disabled"));
    assert!(row(&html, r#"data-key="ci""#).contains("disabled"));
    assert!(row(&html, r#"data-key="ci""#).contains(">Enable<"));
    let (s, _, _) = submit(
        &app,
        &c,
        &format!("{keys_path}/{ci_id}/active"),
        &[("csrf", &token), ("active", "true")],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let k = user_keys(&app, &admin, &uid).await;
    assert_eq!(
        k.iter().find(|k| k["id"] == ci_id.as_str()).unwrap()["is_active"],
        true
    );

    // Someone else's key cannot be reached through alice's page.
    let (s, other) = app
        .post(
            "/api/users/me/api-keys",
            &admin,
            json!({ "name": "admin-own" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    let other_id = other["id"].as_str().unwrap();
    let (s, _, _) = submit(
        &app,
        &c,
        &format!("{keys_path}/{other_id}/delete"),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .get(&format!("/api/users/me/api-keys/{other_id}"), &admin)
        .await;
    assert_eq!(s, StatusCode::OK, "the admin's key is untouched");

    let (s, _, _) = submit(
        &app,
        &c,
        &format!("{keys_path}/{ci_id}/delete"),
        &[("csrf", "forged")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, loc, _) = submit(
        &app,
        &c,
        &format!("{keys_path}/{ci_id}/delete"),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{path}?saved=key-deleted").as_str()
        )
    );
    assert!(
        !user_keys(&app, &admin, &uid)
            .await
            .iter()
            .any(|k| k["id"] == ci_id.as_str()),
        "the key is gone"
    );
    let (_, html) = page(&app, &c, &loc).await;
    assert!(html.contains("Key deleted."));
    assert!(!html.contains(r#"data-key="ci""#));

    // ---- delete the user: confirmed by typing the email ----
    let del = format!("{path}/delete");
    let (s, _, html) = submit(&app, &c, &del, &[("csrf", &token), ("confirm", "yes")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains(&format!("type {USER} to confirm")), "{html}");
    assert!(html.contains(r#"<details class="confirm" open"#));
    let (s, _) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
    assert_eq!(s, StatusCode::OK, "still there");
    let (s, _, _) = submit(&app, &c, &del, &[("csrf", "forged"), ("confirm", USER)]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, loc, _) = submit(&app, &c, &del, &[("csrf", &token), ("confirm", USER)]).await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/admin/users?saved=deleted")
    );
    let (s, _) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        eventually(StatusCode::UNAUTHORIZED, || claude(&app, &key)).await,
        StatusCode::UNAUTHORIZED,
        "the deleted user's keys are gone"
    );
    let (_, html) = page(&app, &c, &loc).await;
    assert!(html.contains("User deleted"));
    assert!(!html.contains(&format!(r#"data-user="{USER}""#)));
    let (s, html) = page(&app, &c, &path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(html.contains("not found"), "{html}");
}

/// `$` amounts as the pages print them (at least cents, trailing zeros trimmed).
fn money(u: Usd) -> String {
    let t = u.to_string();
    match t.split_once('.') {
        Some((i, f)) => {
            let f = f.trim_end_matches('0');
            format!("{i}.{f:0<2}")
        }
        None => format!("{t}.00"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_cannot_lock_themselves_out_and_users_are_refused() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (_, me) = app.get("/api/users/me", &admin).await;
    let me_id = me["id"].as_str().unwrap().to_string();
    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let path = format!("/admin/users/{me_id}");
    let (s, html) = page(&app, &c, &path).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(r#"<span class="chip">you</span>"#));
    let token = csrf(&html);
    let edit = |active: &'static str, role: &'static str| {
        vec![
            ("email", ADMIN_EMAIL),
            ("username", "admin"),
            ("role", role),
            ("is_active", active),
            ("quota_usd", ""),
            ("quota_period", "none"),
            ("providers_mode", "all"),
            ("models_mode", "all"),
            ("formats_mode", "all"),
        ]
    };

    // Demoting the only admin, deactivating oneself, deleting oneself: refused, inline.
    let mut f = edit("on", "user");
    f.push(("csrf", &token));
    let (s, _, html) = submit(&app, &c, &path, &f).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(html.contains("last active admin"), "{html}");
    assert!(html.contains(r#"<details class="drawer wide" open"#));

    // With a second admin the last-admin rule no longer applies, but one still cannot
    // deactivate oneself.
    let (s, _) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "second@example.com", "password": "long-enough-1", "role": "admin" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut f = edit("", "admin");
    f.push(("csrf", &token));
    let (s, _, html) = submit(&app, &c, &path, &f).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        html.contains("you cannot deactivate your own account"),
        "{html}"
    );
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{path}/delete"),
        &[("csrf", &token), ("confirm", ADMIN_EMAIL)],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        html.contains("you cannot delete your own account"),
        "{html}"
    );
    let (_, u) = app.get(&format!("/api/admin/users/{me_id}"), &admin).await;
    assert_eq!(
        (u["is_active"].clone(), u["role"].clone()),
        (json!(true), json!("admin"))
    );

    // An unknown user is a 404 page.
    let (s, html) = page(&app, &c, &format!("/admin/users/{}", UserId::new())).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(html.contains("not found"));

    // A normal user: every page and form refused, nothing changed.
    let (uid, _) = app.user_token(&admin, "mallory@example.com").await;
    let u = sign_in(&app, "mallory@example.com", USER_PASSWORD).await;
    let (_, own) = page(&app, &u, "/").await;
    let token = csrf(&own);
    for p in [
        "/admin/users".to_string(),
        format!("/admin/users/{uid}"),
        path.clone(),
    ] {
        let (s, html) = page(&app, &u, &p).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
        assert!(html.contains("for administrators"), "{html}");
    }
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/admin/users".into(),
            vec![
                ("csrf", &token),
                ("email", "x@example.com"),
                ("password", "long-enough-1"),
                ("role", "admin"),
            ],
        ),
        (format!("/admin/users/{uid}"), {
            let mut f = edit("on", "admin");
            f[0] = ("email", "mallory@example.com");
            f.push(("csrf", &token));
            f
        }),
        (
            format!("/admin/users/{uid}/reset-quota"),
            vec![("csrf", &token)],
        ),
        (
            format!("/admin/users/{uid}/keys"),
            vec![("csrf", &token), ("name", "sneaky")],
        ),
        (
            format!("{path}/delete"),
            vec![("csrf", &token), ("confirm", ADMIN_EMAIL)],
        ),
    ];
    for (p, f) in &posts {
        let (s, _, _) = submit(&app, &u, p, f).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "POST {p}");
    }
    let (_, m) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
    assert_eq!(m["role"], "user", "not promoted");
    let (_, keys) = app
        .get(&format!("/api/admin/users/{uid}/api-keys"), &admin)
        .await;
    assert_eq!(keys["total"], 0, "no key made");
    let (_, list) = app.get("/api/admin/users?search=x%40example", &admin).await;
    assert_eq!(list["total"], 0, "nobody created");
    let (s, _) = app.get(&format!("/api/admin/users/{me_id}"), &admin).await;
    assert_eq!(s, StatusCode::OK, "the admin still exists");
}
