//! The console's provider page and models & pricing pages on the real server: a global model
//! with two price tiers made in the tiered pricing editor (bad prices and unordered tiers
//! caught inline), then edited; a provider (made through the JSON API) given an endpoint, an
//! upstream key and a model, and its settings edited, all through the console's forms; the
//! upstream secret never in a page; and every page refused to non-admins. Then the edit and
//! delete forms of endpoints, upstream keys (the secret write-only) and provider models (name
//! mappings and a price override), provider deletion, and the list's health chips and priority
//! dialog — each change checked through the JSON API and by a gateway request to the mock
//! upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;
mod console_kit;

use aether_domain::secret::mask;
use aether_testkit::MockUpstream;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use console_kit::{csrf, page, sign_in, submit};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "sk-ant-api03-console-test-SECRET-0123456789";

/// The text between `start` and the next `"` after the first `marker`… `start` in `html`.
fn attr_after(html: &str, marker: &str, start: &str) -> String {
    let from = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} on the page"));
    let at = html[from..].find(start).expect(start) + from + start.len();
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_and_model_pages_render_and_their_forms_work() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // ---- models: the list, a bad price, unordered tiers, then a model with two tiers ----
    let (s, html) = page(&app, &c, "/admin/models").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("No models yet."), "{html}");
    assert!(html.contains("data-tier-editor"), "the pricing editor");
    for i in 0..3 {
        assert!(html.contains(&format!(r#"name="input_{i}""#)), "row {i}");
    }
    let token = csrf(&html);

    let (s, _, _) = submit(&app, &c, "/admin/models", &[("csrf", "forged")]).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a form without the session's token"
    );

    let (s, loc, html) = submit(
        &app,
        &c,
        "/admin/models",
        &[
            ("csrf", &token),
            ("name", "console-model"),
            ("up_to_0", "200000"),
            ("input_0", "3"),
            ("output_0", "15"),
            ("input_1", "three dollars"),
            ("output_1", "22.5"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a bad price: {loc}");
    assert!(html.contains("field-error"), "{html}");
    assert!(html.contains("is not a price"), "{html}");
    assert!(html.contains("Tier 2"), "the error names its row");
    assert!(
        html.contains(r#"value="three dollars""#),
        "what was typed is shown again"
    );
    assert!(html.contains(r#"value="console-model""#));

    let (s, _, html) = submit(
        &app,
        &c,
        "/admin/models",
        &[
            ("csrf", &token),
            ("name", "console-model"),
            ("up_to_0", "200000"),
            ("input_0", "3"),
            ("output_0", "15"),
            ("up_to_1", "1000"),
            ("input_1", "6"),
            ("output_1", "22.5"),
            ("input_2", "7"),
            ("output_2", "30"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "tiers not ascending");
    assert!(html.contains("greater than the previous"), "{html}");

    // Row indices as the page's script adds them (0, 1, then 5) are all read.
    let (s, loc, _) = submit(
        &app,
        &c,
        "/admin/models",
        &[
            ("csrf", &token),
            ("name", "console-model"),
            ("display_name", "Console Model"),
            ("supported_capabilities", "cache_1h, context_1m"),
            ("up_to_0", "200,000"),
            ("input_0", "3"),
            ("output_0", "15"),
            ("cache_1h_0", "6"),
            ("up_to_1", ""),
            ("input_1", ""),
            ("output_1", ""),
            ("input_5", "6"),
            ("output_5", "22.5"),
        ],
    )
    .await;
    assert_eq!((s, loc.as_str()), (StatusCode::SEE_OTHER, "/admin/models"));

    let (s, html) = page(&app, &c, "/admin/models?search=console").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(r#"data-model="console-model""#), "{html}");
    let model_path = attr_after(&html, r#"data-model="console-model""#, r#"<a href=""#);
    assert!(model_path.starts_with("/admin/models/"), "{model_path}");
    let model_id = model_path.trim_start_matches("/admin/models/").to_string();
    assert!(html.contains("≤ 200,000: in $3.00 · out $15.00"), "{html}");
    assert!(html.contains("above: in $6.00 · out $22.50"), "{html}");
    assert!(html.contains("cache_1h"));
    let (_, html) = page(&app, &c, "/admin/models?search=nothing-like-it").await;
    assert!(!html.contains(r#"data-model="console-model""#));
    assert!(html.contains("No model matches"));

    // ---- the model's page: both tiers, the editor prefilled; a bad edit, a good one ----
    let (s, html) = page(&app, &c, &model_path).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Console Model"));
    assert!(
        html.contains("≤ 200,000: in $3.00 · out $15.00 · write 1 h $6.00"),
        "{html}"
    );
    assert!(html.contains("above: in $6.00 · out $22.50"), "{html}");
    assert!(
        html.contains(r#"name="up_to_0" value="200000""#),
        "prefilled: {html}"
    );
    assert!(
        html.contains(r#"name="output_1" value="22.5""#),
        "prefilled"
    );
    assert!(html.contains("No provider serves this model yet."));
    let token = csrf(&html);
    let (s, _, html) = submit(
        &app,
        &c,
        &model_path,
        &[
            ("csrf", &token),
            ("display_name", "Console Model"),
            ("input_0", "3"),
            ("output_0", "15"),
            ("price_per_request", "a cent"),
            ("is_active", "on"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("field-error"));
    assert!(html.contains("“a cent” is not a price"), "{html}");
    let (s, loc, _) = submit(
        &app,
        &c,
        &model_path,
        &[
            ("csrf", &token),
            ("display_name", "Console Model v2"),
            ("supported_capabilities", "cache_1h"),
            ("up_to_0", "200000"),
            ("input_0", "3"),
            ("output_0", "15"),
            ("input_1", "6"),
            ("output_1", "30"),
            ("price_per_request", "0.01"),
            ("is_active", "on"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, model_path.as_str())
    );
    let (_, html) = page(&app, &c, &model_path).await;
    assert!(html.contains("Console Model v2"));
    assert!(html.contains("above: in $6.00 · out $30.00"), "{html}");
    assert!(html.contains("$0.01"), "the per-request price");

    // ---- a provider (made through the JSON API), linked from the list ----
    let (s, p) = app
        .post(
            "/api/admin/providers",
            &admin,
            json!({ "name": "acme", "display_name": "Acme Cloud" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let provider_id = p["id"].as_str().unwrap().to_string();
    let provider_path = format!("/admin/providers/{provider_id}");
    let (_, html) = page(&app, &c, "/admin/providers").await;
    assert!(
        html.contains(&format!(r#"<a href="{provider_path}">"#)),
        "{html}"
    );

    let (s, html) = page(&app, &c, &provider_path).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Acme Cloud"));
    assert!(html.contains("No endpoints yet."));
    assert!(html.contains("No models yet."));
    assert!(
        html.contains(&format!(r#"<option value="{model_id}""#)),
        "the global models to choose from"
    );
    let token = csrf(&html);

    // ---- settings: a bad quota, then a good edit ----
    let (s, _, html) = submit(
        &app,
        &c,
        &provider_path,
        &[
            ("csrf", &token),
            ("display_name", "Acme Cloud"),
            ("provider_priority", "10"),
            ("billing_type", "monthly_quota"),
            ("quota_usd", "lots"),
            ("quota_period_days", "30"),
            ("rpm_limit", ""),
            ("is_active", "on"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("“lots” is not an amount"), "{html}");
    let (s, loc, _) = submit(
        &app,
        &c,
        &provider_path,
        &[
            ("csrf", &token),
            ("display_name", "Acme Cloud EU"),
            ("provider_priority", "10"),
            ("billing_type", "monthly_quota"),
            ("quota_usd", "50"),
            ("quota_period_days", "7"),
            ("rpm_limit", "600"),
            ("is_active", "on"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, provider_path.as_str())
    );
    let (_, html) = page(&app, &c, &provider_path).await;
    assert!(html.contains("Acme Cloud EU"));
    assert!(html.contains("$0.00 / $50.00"), "{html}");
    assert!(html.contains("every 7 days"));
    assert!(html.contains("<strong>600</strong>"), "the RPM limit");
    assert!(html.contains("monthly quota"));

    // ---- an endpoint: a bad timeout, then a good one ----
    let endpoint_path = format!("{provider_path}/endpoints");
    let (s, _, html) = submit(
        &app,
        &c,
        &endpoint_path,
        &[
            ("csrf", &token),
            ("api_format", "CLAUDE"),
            ("base_url", "https://api.example.com"),
            ("timeout", "soon"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("a whole number"), "{html}");
    let (s, loc, _) = submit(
        &app,
        &c,
        &endpoint_path,
        &[
            ("csrf", &token),
            ("api_format", "CLAUDE"),
            ("base_url", "https://api.example.com"),
            ("timeout", "120"),
            ("max_retries", "2"),
            ("max_concurrent", ""),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, provider_path.as_str())
    );
    let (_, html) = page(&app, &c, &provider_path).await;
    assert!(html.contains(r#"data-endpoint="CLAUDE""#), "{html}");
    assert!(html.contains("timeout 120 s · max retries 2 · concurrency unlimited"));
    assert!(html.contains("No keys yet."));

    // ---- an upstream key: a bad multiplier (the secret not echoed), then a good one ----
    let keys_path = attr_after(&html, r#"data-endpoint="CLAUDE""#, r#"action=""#);
    assert!(keys_path.ends_with("/keys"), "{keys_path}");
    let keys_path = keys_path.replace("&#x2f;", "/");
    let (s, _, html) = submit(
        &app,
        &c,
        &keys_path,
        &[
            ("csrf", &token),
            ("provider_id", &provider_id),
            ("name", "primary"),
            ("api_key", SECRET),
            ("rate_multiplier", "cheap"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("a decimal factor"), "{html}");
    assert!(!html.contains(SECRET), "the secret is not echoed back");
    assert!(html.contains(r#"value="primary""#), "the name is");
    let (s, loc, _) = submit(
        &app,
        &c,
        &keys_path,
        &[
            ("csrf", &token),
            ("provider_id", &provider_id),
            ("name", "primary"),
            ("api_key", SECRET),
            ("internal_priority", "5"),
            ("rate_multiplier", "0.55"),
            ("max_concurrent", "4"),
            ("rate_limit", "120"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, provider_path.as_str())
    );

    // ---- a model: the global model chosen, served under an upstream name ----
    let (s, loc, _) = submit(
        &app,
        &c,
        &format!("{provider_path}/models"),
        &[
            ("csrf", &token),
            ("global_model_id", &model_id),
            ("provider_model_name", "acme-console-upstream"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, provider_path.as_str())
    );
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{provider_path}/models"),
        &[("csrf", &token), ("global_model_id", "not-an-id")],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("choose a global model"), "{html}");

    // ---- the provider's page: the masked key (never the secret) and the model ----
    let (s, html) = page(&app, &c, &provider_path).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!html.contains(SECRET), "the upstream secret is never shown");
    assert!(html.contains(&mask(SECRET)), "the masked key: {html}");
    assert!(html.contains(r#"data-key="primary""#));
    assert!(html.contains("× 0.55"));
    assert!(html.contains("fixed 4"), "the fixed concurrency");
    assert!(
        html.contains(r#"<td class="num">120</td>"#),
        "the key's RPM"
    );
    assert!(
        html.contains(r#"data-model="acme-console-upstream""#),
        "{html}"
    );
    assert!(html.contains("console-model"), "the global model's name");
    assert!(html.contains("the global default"), "no price override");

    // The breaker can be reset once the key has live state (else the page shows "—").
    if html.contains("breaker-reset") {
        let path = {
            let at = html.find("/breaker-reset").unwrap();
            let start = html[..at].rfind('"').unwrap() + 1;
            html[start..at + "/breaker-reset".len()].replace("&#x2f;", "/")
        };
        let (s, loc, _) = submit(
            &app,
            &c,
            &path,
            &[("csrf", &token), ("provider_id", &provider_id)],
        )
        .await;
        assert_eq!(
            (s, loc.as_str()),
            (StatusCode::SEE_OTHER, provider_path.as_str())
        );
    }

    // ---- the model's page lists the provider serving it ----
    let (_, html) = page(&app, &c, &model_path).await;
    assert!(html.contains("Acme Cloud EU"), "{html}");
    assert!(html.contains("acme-console-upstream"));
    assert!(html.contains(&format!(r#"href="{provider_path}""#)));

    // ---- unknown ids ----
    let (s, _) = page(
        &app,
        &c,
        "/admin/providers/00000000-0000-7000-8000-000000000000",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = page(
        &app,
        &c,
        "/admin/models/00000000-0000-7000-8000-000000000000",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // ---- a normal user gets 403 on every page and form ----
    app.user_token(&admin, "dev@example.com").await;
    let u = sign_in(&app, "dev@example.com", "user-password-1").await;
    let (_, html) = page(&app, &u, "/").await;
    let user_token = csrf(&html);
    for path in ["/admin/models", model_path.as_str(), provider_path.as_str()] {
        let (s, _) = page(&app, &u, path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "GET {path}");
    }
    for path in [
        "/admin/models".to_string(),
        model_path.clone(),
        provider_path.clone(),
        endpoint_path.clone(),
        keys_path.clone(),
        format!("{provider_path}/models"),
    ] {
        let (s, _, _) = submit(&app, &u, &path, &[("csrf", &user_token)]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "POST {path}");
    }

    app.stop().await;
}

// ---- edits and deletions, with routing checked at the mock upstream ----

/// The global model every route below serves.
const ROUTED: &str = "console-routed-model";
const SECRET_A: &str = "sk-ant-console-key-A-0123456789";
const SECRET_B: &str = "sk-ant-console-key-B-0123456789";
const SECRET_NEW: &str = "sk-ant-console-key-NEW-98765432";
const ZERO_ID: &str = "00000000-0000-7000-8000-000000000000";

/// A provider made through the JSON API: one CLAUDE endpoint at the mock, the given keys
/// (name, secret, priority within the endpoint), serving [`ROUTED`] as `claude-up`.
struct Deployed {
    provider_id: String,
    endpoint_id: String,
    key_ids: Vec<String>,
    /// The provider model.
    model_id: String,
    global_id: String,
}

async fn deploy(
    app: &TestApp,
    admin: &str,
    upstream: &str,
    name: &str,
    priority: i32,
    keys: &[(&str, &str, i32)],
) -> Deployed {
    let global_id = app.ensure_model(admin, ROUTED).await;
    let (s, p) = app
        .post(
            "/api/admin/providers",
            admin,
            json!({ "name": name, "provider_priority": priority }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let provider_id = p["id"].as_str().unwrap().to_string();
    let (s, e) = app
        .post(
            &format!("/api/admin/endpoints/providers/{provider_id}/endpoints"),
            admin,
            json!({ "api_format": "CLAUDE", "base_url": upstream, "timeout": 5, "max_retries": 1 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let endpoint_id = e["id"].as_str().unwrap().to_string();
    let mut key_ids = Vec::new();
    for (key_name, secret, prio) in keys {
        let (s, k) = app
            .post(
                &format!("/api/admin/endpoints/{endpoint_id}/keys"),
                admin,
                json!({ "api_key": secret, "name": key_name, "internal_priority": prio }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{k}");
        key_ids.push(k["id"].as_str().unwrap().to_string());
    }
    let (s, m) = app
        .post(
            &format!("/api/admin/providers/{provider_id}/models"),
            admin,
            json!({ "global_model_id": global_id, "provider_model_name": "claude-up" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    Deployed {
        provider_id,
        endpoint_id,
        key_ids,
        model_id: m["id"].as_str().unwrap().to_string(),
        global_id,
    }
}

/// A Claude request through the gateway: status and request id.
async fn ask(app: &TestApp, key: &str) -> (StatusCode, String) {
    let r = app
        .client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({ "model": ROUTED, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}] }))
        .send()
        .await
        .unwrap();
    let id = r
        .headers()
        .get("x-aether-request-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), id)
}

/// The upstream credential and body of the mock's last request.
fn last_upstream(mock: &MockUpstream) -> (String, Value) {
    let r = mock.requests().pop().expect("the mock got a request");
    (
        r.credential.clone().unwrap_or_default(),
        r.body_json().unwrap_or(Value::Null),
    )
}

/// The table row of `marker` (up to its `</tr>`).
fn row<'a>(html: &'a str, marker: &str) -> &'a str {
    let from = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} on the page"));
    let to = html[from..].find("</tr>").map_or(html.len(), |i| from + i);
    &html[from..to]
}

fn rendered(html: &str) {
    assert!(!html.contains("could not be rendered"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_and_key_forms_edit_and_delete_and_routing_follows() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let d = deploy(
        &app,
        &admin,
        &mock.url(),
        "acme",
        10,
        &[("alpha", SECRET_A, 1), ("beta", SECRET_B, 2)],
    )
    .await;
    let (_, gw) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&gw, ROUTED).await;
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(last_upstream(&mock).0, SECRET_A, "alpha is preferred");

    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let provider_path = format!("/admin/providers/{}", d.provider_id);
    let (s, html) = page(&app, &c, &provider_path).await;
    assert_eq!(s, StatusCode::OK);
    rendered(&html);
    let (key_a, key_b) = (&d.key_ids[0], &d.key_ids[1]);
    let key_a_path = format!("/admin/provider-keys/{key_a}");
    let key_b_path = format!("/admin/provider-keys/{key_b}");
    let endpoint_path = format!("/admin/endpoints/{}", d.endpoint_id);
    for action in [&key_a_path, &key_b_path, &endpoint_path] {
        assert!(html.contains(&format!(r#"action="{action}""#)), "{action}");
    }
    assert!(html.contains(r#"data-form="key-edit""#));
    assert!(html.contains(r#"data-form="endpoint-edit""#));
    assert!(
        !html.contains(SECRET_A) && !html.contains(SECRET_B),
        "no secret"
    );
    assert!(html.contains(&mask(SECRET_A)));
    assert!(
        row(&html, r#"data-key="alpha""#).contains("adaptive"),
        "no fixed limit: adaptive concurrency"
    );
    let token = csrf(&html);

    // ---- key edits: refused without the session's token, bad values shown inline ----
    let (s, _, _) = submit(&app, &c, &key_a_path, &[("csrf", "forged"), ("name", "x")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let good_a = |multiplier: &'static str, concurrency: &'static str, secret: &'static str| {
        vec![
            ("name", "alpha-renamed"),
            ("note", "kept for failover"),
            ("internal_priority", "1"),
            ("global_priority", "7"),
            ("rate_multiplier", multiplier),
            ("max_concurrent", concurrency),
            ("rate_limit", "30"),
            ("allowed_models", ""),
            ("capabilities", "cache_1h"),
            ("api_key", secret),
        ]
    };
    for (fields, expect) in [
        (good_a("cheap", "", SECRET_NEW), "a decimal factor"),
        (good_a("1", "0", ""), "must be at least 1"),
        (good_a("1", "", "abc"), "4–4096 printable characters"),
    ] {
        let mut form = vec![("csrf", token.as_str())];
        form.extend(fields);
        let (s, _, html) = submit(&app, &c, &key_a_path, &form).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{expect}");
        rendered(&html);
        assert!(html.contains("field-error"), "{expect}: {html}");
        assert!(html.contains(expect), "{expect}: {html}");
        assert!(
            html.contains(r#"value="alpha-renamed""#),
            "what was typed is shown again"
        );
        assert!(!html.contains(SECRET_NEW), "a typed secret is never echoed");
    }
    let (_, k) = app
        .get(&format!("/api/admin/endpoints/keys/{key_a}"), &admin)
        .await;
    assert_eq!(k["name"], "alpha", "nothing saved by refused forms");

    // ---- a good edit turns alpha off: routing moves to beta ----
    let mut form = vec![("csrf", token.as_str())];
    form.extend(good_a("0.8", "", ""));
    let (s, loc, _) = submit(&app, &c, &key_a_path, &form).await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{provider_path}?saved=key").as_str()
        )
    );
    let (_, k) = app
        .get(&format!("/api/admin/endpoints/keys/{key_a}"), &admin)
        .await;
    assert_eq!(k["is_active"], false, "{k}");
    assert_eq!(k["name"], "alpha-renamed");
    assert_eq!(k["note"], "kept for failover");
    assert_eq!(k["global_priority"], 7);
    assert_eq!(k["rate_limit"], 30);
    assert_eq!(k["max_concurrent"], Value::Null);
    assert_eq!(k["capabilities"], json!(["cache_1h"]));
    assert_eq!(k["rate_multiplier"], 0.8);
    assert_eq!(
        k["api_key_masked"],
        mask(SECRET_A),
        "an empty secret field keeps the key"
    );
    let (_, html) = page(&app, &c, &format!("{provider_path}?saved=key")).await;
    assert!(html.contains("Upstream key saved"), "the flash message");
    let alpha = row(&html, r#"data-key="alpha-renamed""#);
    assert!(
        alpha.contains(r#"<span class="chip">off</span>"#),
        "{alpha}"
    );
    assert!(alpha.contains("global 7") && alpha.contains("kept for failover"));
    assert!(alpha.contains("cache_1h"));
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        last_upstream(&mock).0,
        SECRET_B,
        "a turned-off key is not used"
    );

    // ---- beta's secret replaced: the mock sees the new one, the page only its mask ----
    let (s, loc, _) = submit(
        &app,
        &c,
        &key_b_path,
        &[
            ("csrf", &token),
            ("name", "beta"),
            ("internal_priority", "2"),
            ("rate_multiplier", "1"),
            ("max_concurrent", "3"),
            ("api_key", SECRET_NEW),
            ("is_active", "on"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.contains("saved=key")),
        (StatusCode::SEE_OTHER, true)
    );
    let (s, id) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        last_upstream(&mock).0,
        SECRET_NEW,
        "the replaced secret is used"
    );
    app.usage(&id).await;
    let (_, html) = page(&app, &c, &provider_path).await;
    assert!(!html.contains(SECRET_NEW) && !html.contains(SECRET_B));
    let beta = row(&html, r#"data-key="beta""#);
    assert!(beta.contains(&mask(SECRET_NEW)), "{beta}");
    assert!(beta.contains("fixed 3"), "{beta}");
    assert!(
        beta.contains("data-success>100 %"),
        "the success rate of its requests: {beta}"
    );

    // ---- endpoint edits: bad values inline, then headers that reach the upstream ----
    let endpoint_form = |timeout: &'static str, headers: &'static str, base: String| {
        vec![
            ("base_url", base),
            ("custom_path", String::new()),
            ("headers", headers.to_string()),
            ("timeout", timeout.to_string()),
            ("max_retries", "1".to_string()),
            ("max_concurrent", "5".to_string()),
            ("is_active", "on".to_string()),
        ]
    };
    let hdrs = "X-Console-Edit: yes\ncookie: hdr-secret-value-42";
    for (form, expect) in [
        (
            endpoint_form("0", hdrs, mock.url()),
            "between 1 and 3600 seconds",
        ),
        (
            endpoint_form("30", "X-Console-Edit yes", mock.url()),
            "is not `Name: value`",
        ),
        (
            endpoint_form("30", hdrs, "ftp://example.com".into()),
            "is not an absolute http(s) URL",
        ),
        (
            endpoint_form("30", "Host: elsewhere", mock.url()),
            "is set by the gateway",
        ),
    ] {
        let mut fields: Vec<(&str, &str)> = vec![("csrf", &token)];
        fields.extend(form.iter().map(|(k, v)| (*k, v.as_str())));
        let (s, _, html) = submit(&app, &c, &endpoint_path, &fields).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{expect}");
        rendered(&html);
        assert!(html.contains("field-error"), "{expect}");
        assert!(html.contains(expect), "{expect}: {html}");
    }
    let form = endpoint_form("30", hdrs, mock.url());
    let mut fields: Vec<(&str, &str)> = vec![("csrf", &token)];
    fields.extend(form.iter().map(|(k, v)| (*k, v.as_str())));
    let (s, loc, _) = submit(&app, &c, &endpoint_path, &fields).await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{provider_path}?saved=endpoint").as_str()
        )
    );
    let (_, e) = app
        .get(&format!("/api/admin/endpoints/{}", d.endpoint_id), &admin)
        .await;
    assert_eq!(e["timeout"], 30, "{e}");
    assert_eq!(e["max_concurrent"], 5);
    assert_eq!(e["headers"]["x-console-edit"], "yes");
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    let up = mock.requests().pop().unwrap();
    assert_eq!(
        up.header("x-console-edit"),
        Some("yes"),
        "the edited endpoint is used"
    );
    let (_, html) = page(&app, &c, &provider_path).await;
    assert!(html.contains("timeout 30 s · max retries 1 · concurrency 5"));
    assert!(
        !html.contains("hdr-secret-value-42"),
        "secret header values are masked"
    );
    assert!(html.contains("cookie: ********"));

    // The masked value sent back keeps the secret; a proxy (password write-only) is added.
    let (s, _, html) = submit(
        &app,
        &c,
        &endpoint_path,
        &[
            ("csrf", &token),
            ("base_url", &mock.url()),
            ("headers", "x-console-edit: yes\ncookie: ********"),
            ("timeout", "30"),
            ("max_retries", "1"),
            ("is_active", "on"),
            ("proxy_url", "ftp://proxy.example"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("a proxy URL looks like"), "{html}");
    let (s, _, _) = submit(
        &app,
        &c,
        &endpoint_path,
        &[
            ("csrf", &token),
            ("base_url", &mock.url()),
            ("headers", "x-console-edit: yes\ncookie: ********"),
            ("timeout", "30"),
            ("max_retries", "1"),
            ("is_active", "on"),
            ("proxy_url", "http://127.0.0.1:3128"),
            ("proxy_username", "px-user"),
            ("proxy_password", "px-password-SECRET"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, e) = app
        .get(&format!("/api/admin/endpoints/{}", d.endpoint_id), &admin)
        .await;
    assert_eq!(e["headers"]["cookie"], "hdr-secret-value-42", "{e}");
    assert_eq!(e["proxy"]["url"], "http://127.0.0.1:3128");
    assert_eq!(e["proxy"]["username"], "px-user");
    assert_eq!(e["max_concurrent"], Value::Null, "emptied: unlimited");
    let (_, html) = page(&app, &c, &provider_path).await;
    assert!(html.contains("127.0.0.1:3128") && html.contains("px-user"));
    assert!(!html.contains("px-password-SECRET"), "the proxy password");

    // ---- deletions: a key, then the endpoint; unknown ids are 404 ----
    let key_delete = format!("{key_a_path}/delete");
    let (s, _, _) = submit(&app, &c, &key_delete, &[("csrf", "forged")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, loc, _) = submit(&app, &c, &key_delete, &[("csrf", &token)]).await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{provider_path}?saved=key-deleted").as_str()
        )
    );
    let (_, keys) = app
        .get(
            &format!("/api/admin/endpoints/{}/keys", d.endpoint_id),
            &admin,
        )
        .await;
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    let (s, _, _) = submit(&app, &c, &key_delete, &[("csrf", &token)]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "already gone");
    let endpoint_delete = format!("{endpoint_path}/delete");
    let (s, loc, _) = submit(&app, &c, &endpoint_delete, &[("csrf", &token)]).await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{provider_path}?saved=endpoint-deleted").as_str()
        )
    );
    let (_, html) = page(&app, &c, &format!("{provider_path}?saved=endpoint-deleted")).await;
    assert!(html.contains("Endpoint deleted"));
    assert!(html.contains("No endpoints yet."));
    let (_, eps) = app
        .get(
            &format!("/api/admin/endpoints/providers/{}/endpoints", d.provider_id),
            &admin,
        )
        .await;
    assert_eq!(eps, json!([]));
    let (s, _) = ask(&app, &gw).await;
    assert_ne!(s, StatusCode::OK, "no endpoint left to serve the model");
    for path in [
        format!("/admin/provider-keys/{ZERO_ID}"),
        format!("/admin/endpoints/{ZERO_ID}"),
        format!("/admin/endpoints/{ZERO_ID}/delete"),
    ] {
        let (s, _, _) = submit(&app, &c, &path, &[("csrf", &token)]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }

    // ---- a normal user is refused every form ----
    let u = sign_in(&app, "dev@example.com", "user-password-1").await;
    let (_, html) = page(&app, &u, "/").await;
    let user_token = csrf(&html);
    for path in [
        key_b_path.clone(),
        format!("{key_b_path}/delete"),
        endpoint_path.clone(),
        endpoint_delete.clone(),
        format!("{provider_path}/delete"),
        format!("{provider_path}/models/{}", d.model_id),
        format!("{provider_path}/models/{}/delete", d.model_id),
        "/admin/providers/priority".to_string(),
    ] {
        let (s, _, _) = submit(&app, &u, &path, &[("csrf", &user_token)]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "POST {path}");
    }
    let (s, _) = app
        .get(&format!("/api/admin/providers/{}", d.provider_id), &admin)
        .await;
    assert_eq!(s, StatusCode::OK, "not deleted by the refused user");
    let (_, models) = app
        .get(
            &format!("/api/admin/providers/{}/models", d.provider_id),
            &admin,
        )
        .await;
    assert_eq!(models.as_array().map(Vec::len), Some(1), "{models}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_form_edits_mappings_and_prices_and_routing_follows() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let d = deploy(
        &app,
        &admin,
        &mock.url(),
        "mapped",
        10,
        &[("only", SECRET_A, 1)],
    )
    .await;
    let (_, gw) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&gw, ROUTED).await;
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(last_upstream(&mock).1["model"], "claude-up");

    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let provider_path = format!("/admin/providers/{}", d.provider_id);
    let model_path = format!("{provider_path}/models/{}", d.model_id);
    let (_, html) = page(&app, &c, &provider_path).await;
    rendered(&html);
    assert!(
        html.contains(&format!(r#"action="{model_path}""#)),
        "{html}"
    );
    assert!(html.contains("data-map-editor") && html.contains("data-add-map"));
    assert!(
        html.contains(r#"name="map_name_0" value="""#),
        "an empty row"
    );
    assert!(
        html.contains(r#"name="map_remove_0""#),
        "rows can be removed without the script"
    );
    let token = csrf(&html);
    let gid = d.global_id.as_str();

    // ---- bad rows are reported on their row, with what was typed ----
    for (extra, expect) in [
        (
            vec![("map_name_0", "claude-mapped"), ("map_formats_0", "SOAP")],
            "unknown API format",
        ),
        (vec![("map_name_0", "two words")], "no spaces"),
        (
            vec![("map_name_0", "claude-mapped"), ("map_priority_0", "0")],
            "a whole number from 1",
        ),
        (
            vec![("map_priority_0", "3")],
            "a mapping needs an upstream model name",
        ),
        (
            vec![("input_0", "three"), ("output_0", "2")],
            "is not a price",
        ),
        (
            vec![("up_to_0", "1000"), ("input_0", "1"), ("output_0", "2")],
            "the last tier must be unbounded",
        ),
        (vec![("price_per_request", "a cent")], "is not a price"),
    ] {
        let mut form = vec![
            ("csrf", token.as_str()),
            ("global_model_id", gid),
            ("provider_model_name", "claude-up"),
            ("is_active", "on"),
        ];
        form.extend(extra.iter().copied());
        let (s, _, html) = submit(&app, &c, &model_path, &form).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{expect}: {html}");
        rendered(&html);
        assert!(html.contains("field-error"), "{expect}");
        assert!(html.contains(expect), "{expect}: {html}");
        for (name, value) in extra {
            assert!(
                html.contains(&format!(r#"name="{name}" value="{value}""#)),
                "{name} shown again: {html}"
            );
        }
    }
    let mut form = vec![
        ("csrf", token.as_str()),
        ("global_model_id", "not-an-id"),
        ("provider_model_name", "claude-up"),
    ];
    let (s, _, html) = submit(&app, &c, &model_path, &form).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("choose a global model"));
    let (_, m) = app
        .get(
            &format!(
                "/api/admin/providers/{}/models/{}",
                d.provider_id, d.model_id
            ),
            &admin,
        )
        .await;
    assert_eq!(m["provider_model_mappings"], json!([]), "nothing saved");

    // ---- two mappings (the second at an index the script would add) and a price override ----
    form = vec![
        ("csrf", token.as_str()),
        ("global_model_id", gid),
        ("provider_model_name", "claude-up"),
        ("map_name_0", "claude-mapped"),
        ("map_priority_0", "1"),
        ("map_formats_0", "claude"),
        ("map_name_1", ""),
        ("map_name_4", "claude-backup"),
        ("map_priority_4", "5"),
        ("input_0", "1"),
        ("output_0", "2"),
        ("price_per_request", "0.002"),
        ("is_active", "on"),
    ];
    let (s, loc, _) = submit(&app, &c, &model_path, &form).await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{provider_path}?saved=model").as_str()
        )
    );
    let (_, m) = app
        .get(
            &format!(
                "/api/admin/providers/{}/models/{}",
                d.provider_id, d.model_id
            ),
            &admin,
        )
        .await;
    assert_eq!(
        m["provider_model_mappings"],
        json!([
            { "name": "claude-mapped", "priority": 1, "api_formats": ["CLAUDE"] },
            { "name": "claude-backup", "priority": 5, "api_formats": null },
        ]),
        "{m}"
    );
    assert_eq!(
        m["tiered_pricing"]["tiers"].as_array().map(Vec::len),
        Some(1)
    );
    let (_, html) = page(&app, &c, &format!("{provider_path}?saved=model")).await;
    assert!(html.contains("Model saved"));
    let model_row = row(&html, r#"data-model="claude-up""#);
    assert!(model_row.contains(r#"data-mapping="claude-mapped""#));
    assert!(model_row.contains("own prices"));
    assert!(
        model_row.contains("any size: in $1.00 · out $2.00"),
        "{model_row}"
    );
    assert!(model_row.contains("per request $0.002"));
    assert!(
        html.contains(r#"name="map_name_0" value="claude-mapped""#)
            && html.contains(r#"name="map_name_1" value="claude-backup""#)
            && html.contains(r#"name="map_name_2" value="""#),
        "the editor prefilled, with an empty row"
    );
    assert!(html.contains(r#"name="input_0" value="1""#));
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        last_upstream(&mock).1["model"],
        "claude-mapped",
        "the best mapping is the upstream name"
    );

    // ---- removing the first mapping and every tier: the backup name, the global prices ----
    form = vec![
        ("csrf", token.as_str()),
        ("global_model_id", gid),
        ("provider_model_name", "claude-up"),
        ("map_name_0", "claude-mapped"),
        ("map_priority_0", "1"),
        ("map_remove_0", "on"),
        ("map_name_1", "claude-backup"),
        ("map_priority_1", "5"),
        ("input_0", ""),
        ("output_0", ""),
        ("is_active", "on"),
    ];
    let (s, _, _) = submit(&app, &c, &model_path, &form).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, m) = app
        .get(
            &format!(
                "/api/admin/providers/{}/models/{}",
                d.provider_id, d.model_id
            ),
            &admin,
        )
        .await;
    assert_eq!(
        m["provider_model_mappings"],
        json!([{ "name": "claude-backup", "priority": 5, "api_formats": null }])
    );
    assert_eq!(
        m["tiered_pricing"],
        Value::Null,
        "back to the global prices"
    );
    assert_eq!(m["price_per_request"], Value::Null);
    let (_, html) = page(&app, &c, &provider_path).await;
    assert!(row(&html, r#"data-model="claude-up""#).contains("the global default"));
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(last_upstream(&mock).1["model"], "claude-backup");

    // ---- deleting the model ----
    let delete = format!("{model_path}/delete");
    let (s, _, _) = submit(&app, &c, &delete, &[("csrf", "forged")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, loc, _) = submit(&app, &c, &delete, &[("csrf", &token)]).await;
    assert_eq!(
        (s, loc.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("{provider_path}?saved=model-deleted").as_str()
        )
    );
    let (_, models) = app
        .get(
            &format!("/api/admin/providers/{}/models", d.provider_id),
            &admin,
        )
        .await;
    assert_eq!(models, json!([]), "{models}");
    let (_, html) = page(&app, &c, &format!("{provider_path}?saved=model-deleted")).await;
    assert!(html.contains("Model removed") && html.contains("No models yet."));
    let (s, _, _) = submit(&app, &c, &model_path, &[("csrf", &token)]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an edit of a deleted model");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_list_health_chips_priority_dialog_and_provider_deletion() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let a = deploy(
        &app,
        &admin,
        &mock.url(),
        "first",
        10,
        &[("ka", SECRET_A, 1)],
    )
    .await;
    let b = deploy(
        &app,
        &admin,
        &mock.url(),
        "second",
        20,
        &[("kb", SECRET_B, 1)],
    )
    .await;
    let (_, gw) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&gw, ROUTED).await;
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        last_upstream(&mock).0,
        SECRET_A,
        "provider `first` is preferred"
    );

    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (s, html) = page(&app, &c, "/admin/providers").await;
    assert_eq!(s, StatusCode::OK);
    rendered(&html);
    let first = row(&html, r#"data-provider="first""#);
    assert!(
        first.contains(r#"<span class="chip ok" data-health="CLAUDE""#),
        "{first}"
    );
    assert!(first.contains("CLAUDE · 100 %"), "{first}");
    assert!(first.contains("1 / 1"), "endpoint and key counts");
    assert!(
        html.contains(r#"data-form="priority""#),
        "the priority dialog"
    );
    let (pa, pb) = (
        format!("prio_{}", a.provider_id),
        format!("prio_{}", b.provider_id),
    );
    assert!(
        html.contains(&format!(
            r#"name="{pa}" inputmode="numeric" required aria-label="Priority of first" value="10""#
        )),
        "{html}"
    );
    assert!(html.contains(r#"value="provider" checked"#));
    assert!(html.contains(r#"value="cache_affinity" checked"#));
    let token = csrf(&html);

    // ---- the dialog: refused without the token, bad values inline and nothing saved ----
    let (s, _, _) = submit(
        &app,
        &c,
        "/admin/providers/priority",
        &[("csrf", "forged"), ("priority_mode", "provider")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (mode, sched, prio_b, expect) in [
        (
            "provider",
            "fixed_order",
            "first",
            "a whole number; lower is preferred",
        ),
        (
            "provider",
            "random",
            "5",
            "choose one of cache_affinity, fixed_order",
        ),
        (
            "cheapest",
            "fixed_order",
            "5",
            "choose one of provider, global_key",
        ),
    ] {
        let (s, _, html) = submit(
            &app,
            &c,
            "/admin/providers/priority",
            &[
                ("csrf", &token),
                ("priority_mode", mode),
                ("scheduling_mode", sched),
                (&pa, "30"),
                (&pb, prio_b),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{expect}");
        rendered(&html);
        assert!(html.contains("field-error"), "{expect}");
        assert!(html.contains(expect), "{expect}: {html}");
        assert!(
            html.contains(r#"aria-label="Priority of first" value="30""#),
            "typed values shown again"
        );
    }
    let (_, sm) = app
        .get("/api/admin/system/configs/scheduling_mode", &admin)
        .await;
    assert_eq!(sm["value"], "cache_affinity", "nothing saved: {sm}");
    let (_, p) = app
        .get(&format!("/api/admin/providers/{}", a.provider_id), &admin)
        .await;
    assert_eq!(p["provider_priority"], 10);

    // ---- reordered with a fixed order: `second` now serves ----
    let (s, loc, _) = submit(
        &app,
        &c,
        "/admin/providers/priority",
        &[
            ("csrf", &token),
            ("priority_mode", "provider"),
            ("scheduling_mode", "fixed_order"),
            (&pa, "30"),
            (&pb, "5"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/admin/providers?saved=priorities")
    );
    let (_, html) = page(&app, &c, "/admin/providers?saved=priorities").await;
    assert!(html.contains("Priorities saved"));
    assert!(html.contains(r#"value="fixed_order" checked"#));
    let (_, p) = app
        .get(&format!("/api/admin/providers/{}", b.provider_id), &admin)
        .await;
    assert_eq!(p["provider_priority"], 5);
    let (_, sm) = app
        .get("/api/admin/system/configs/scheduling_mode", &admin)
        .await;
    assert_eq!(sm["value"], "fixed_order");
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(last_upstream(&mock).0, SECRET_B, "the new order routes");

    // ---- global key priority: the keys' own global priorities decide ----
    for (key, prio) in [(&a.key_ids[0], 1), (&b.key_ids[0], 2)] {
        let (s, _) = app
            .put(
                &format!("/api/admin/endpoints/keys/{key}"),
                &admin,
                json!({ "global_priority": prio }),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _, _) = submit(
        &app,
        &c,
        "/admin/providers/priority",
        &[
            ("csrf", &token),
            ("priority_mode", "global_key"),
            ("scheduling_mode", "fixed_order"),
            (&pa, "30"),
            (&pb, "5"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, pm) = app
        .get("/api/admin/system/configs/priority_mode", &admin)
        .await;
    assert_eq!(pm["value"], "global_key");
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        last_upstream(&mock).0,
        SECRET_A,
        "key ka has global priority 1"
    );

    // ---- a provider without an active key shows a bad chip ----
    let (s, _) = app
        .put(
            &format!("/api/admin/endpoints/keys/{}", b.key_ids[0]),
            &admin,
            json!({ "is_active": false }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, html) = page(&app, &c, "/admin/providers").await;
    let second = row(&html, r#"data-provider="second""#);
    assert!(
        second.contains(r#"<span class="chip bad" data-health="CLAUDE""#),
        "{second}"
    );
    assert!(second.contains("CLAUDE · no keys"), "{second}");

    // ---- deleting `second` from its page, confirmed by its name ----
    let second_path = format!("/admin/providers/{}", b.provider_id);
    let (_, html) = page(&app, &c, &second_path).await;
    assert!(html.contains(r#"data-form="provider-delete""#));
    let delete = format!("{second_path}/delete");
    let (s, _, _) = submit(
        &app,
        &c,
        &delete,
        &[("csrf", "forged"), ("confirm", "second")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, html) = submit(&app, &c, &delete, &[("csrf", &token), ("confirm", "first")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    rendered(&html);
    assert!(
        html.contains("type the provider’s name") || html.contains("type the provider&#x27;s name"),
        "{html}"
    );
    assert!(html.contains(r#"value="first""#), "the typed confirmation");
    let (s, _) = app
        .get(&format!("/api/admin/providers/{}", b.provider_id), &admin)
        .await;
    assert_eq!(s, StatusCode::OK, "not deleted");
    let (s, loc, _) = submit(
        &app,
        &c,
        &delete,
        &[("csrf", &token), ("confirm", "second")],
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/admin/providers?saved=deleted")
    );
    let (s, _) = app
        .get(&format!("/api/admin/providers/{}", b.provider_id), &admin)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, html) = page(&app, &c, "/admin/providers?saved=deleted").await;
    assert!(html.contains("Provider deleted"));
    assert!(!html.contains(r#"data-provider="second""#));
    assert!(html.contains(r#"data-provider="first""#));
    let (s, _) = page(&app, &c, &second_path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ask(&app, &gw).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(last_upstream(&mock).0, SECRET_A);

    // ---- a normal user is refused the dialog and the deletion ----
    let u = sign_in(&app, "dev@example.com", "user-password-1").await;
    let (_, html) = page(&app, &u, "/").await;
    let user_token = csrf(&html);
    let (s, _, _) = submit(
        &app,
        &u,
        "/admin/providers/priority",
        &[
            ("csrf", &user_token),
            ("priority_mode", "provider"),
            ("scheduling_mode", "cache_affinity"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = submit(
        &app,
        &u,
        &format!("/admin/providers/{}/delete", a.provider_id),
        &[("csrf", &user_token), ("confirm", "first")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, pm) = app
        .get("/api/admin/system/configs/priority_mode", &admin)
        .await;
    assert_eq!(pm["value"], "global_key", "untouched");
    app.stop().await;
}
