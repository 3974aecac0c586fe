//! The console's provider page and models & pricing pages on the real server: a global model
//! with two price tiers made in the tiered pricing editor (bad prices and unordered tiers
//! caught inline), then edited; a provider (made through the JSON API) given an endpoint, an
//! upstream key and a model, and its settings edited, all through the console's forms; the
//! upstream secret never in a page; and every page refused to non-admins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use aether_domain::secret::mask;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use reqwest::{Client, StatusCode, redirect};
use serde_json::json;

const SECRET: &str = "sk-ant-api03-console-test-SECRET-0123456789";

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
