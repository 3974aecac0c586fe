//! Provider tools on the real server against the mock upstream: "test model" (console drawer
//! form and page, and `POST /api/admin/providers/{id}/test-model`) in the Claude, OpenAI Chat,
//! OpenAI Responses and Gemini dialects — success with status, latency, excerpt and tokens;
//! upstream 401/500 and a timeout reported with their status and class; the key never in a
//! page or answer; no usage record — and "fetch upstream models" (console and
//! `GET /api/admin/providers/{id}/upstream-models`): the list with configured models marked,
//! two picked models added in one post and then used by routing. Bad input gets 422 with a
//! message, forged forms 403, non-admins 403.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;
mod console_kit;

use aether_testkit::{MockOptions, MockUpstream, Step, Usage};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use console_kit::{csrf, page, sign_in, submit};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLAUDE_KEY: &str = "sk-ant-api03-tools-CLAUDE-SECRET-0123456789";
const OPENAI_KEY: &str = "sk-proj-tools-OPENAI-SECRET-0123456789";
const RESPONSES_KEY: &str = "sk-proj-tools-RESPONSES-SECRET-0123456789";
const GEMINI_KEY: &str = "AIzaSy-tools-GEMINI-SECRET-0123456789";
const WRONG_KEY: &str = "sk-proj-tools-WRONG-SECRET-0123456789";

/// The text of the test-result panel (so assertions do not match the form's help text).
fn result_panel(html: &str) -> &str {
    let at = html
        .find("data-probe-result")
        .unwrap_or_else(|| panic!("a result panel: {html}"));
    let end = html[at..].find("</section>").unwrap() + at;
    &html[at..end]
}

/// The row index of upstream model `id` in a fetched list.
fn row_of(html: &str, id: &str) -> String {
    let marker = format!(r#"" value="{id}">"#);
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("{id} in the list: {html}"));
    let start = html[..at].rfind(r#"name="id_"#).unwrap() + 9;
    html[start..at].to_string()
}

/// The `<tr>` of upstream model `id`.
fn row_html<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!(r#"<tr data-upstream="{id}""#))
        .unwrap_or_else(|| panic!("row {id}: {html}"));
    let end = html[at..].find("</tr>").unwrap() + at;
    &html[at..end]
}

async fn provider_model_id(app: &TestApp, admin: &str, provider: &str, upstream: &str) -> String {
    let (s, v) = app
        .get(&format!("/api/admin/providers/{provider}/models"), admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v.as_array().or_else(|| v["items"].as_array()).unwrap();
    items
        .iter()
        .find(|m| m["provider_model_name"] == upstream)
        .unwrap_or_else(|| panic!("{upstream} among {v}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `TestApp::add_route`, with the key renamed: the harness names keys after their secret,
/// and a key's name is shown on the pages.
#[allow(clippy::too_many_arguments)]
async fn route(
    app: &TestApp,
    admin: &str,
    name: &str,
    format: &str,
    base_url: &str,
    keys: &[(&str, i32)],
    model: &str,
    upstream_model: &str,
    priority: i32,
) -> common::Route {
    let r = app
        .add_route(
            admin,
            name,
            format,
            base_url,
            keys,
            model,
            upstream_model,
            priority,
        )
        .await;
    for (i, k) in r.key_ids.iter().enumerate() {
        let (s, v) = app
            .put(
                &format!("/api/admin/endpoints/keys/{k}"),
                admin,
                json!({ "name": format!("{name}-key-{i}") }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    r
}

fn body_json(r: &aether_testkit::RecordedRequest) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_model_reports_success_per_dialect_and_failures_without_billing() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let url = mock.url();
    let claude = route(
        &app,
        &admin,
        "claude-tools",
        "CLAUDE",
        &url,
        &[(CLAUDE_KEY, 50)],
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        100,
    )
    .await;
    let openai = route(
        &app,
        &admin,
        "openai-tools",
        "OPENAI",
        &url,
        &[(OPENAI_KEY, 50)],
        "gpt-4o",
        "gpt-4o",
        100,
    )
    .await;
    let responses = route(
        &app,
        &admin,
        "codex-tools",
        "OPENAI_CLI",
        &url,
        &[(RESPONSES_KEY, 50)],
        "gpt-5",
        "gpt-5",
        100,
    )
    .await;
    let gemini = route(
        &app,
        &admin,
        "gemini-tools",
        "GEMINI",
        &url,
        &[(GEMINI_KEY, 50)],
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        100,
    )
    .await;
    let said = Step::ok().text("Hi there! How can I help?").usage(Usage {
        input: 9,
        output: 3,
        ..Usage::default()
    });

    // ---- the drawer on the provider page ----
    let claude_page = format!("/admin/providers/{}", claude.provider_id);
    let (s, html) = page(&app, &c, &claude_page).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Provider tools"), "{html}");
    assert!(
        html.contains(&format!(r#"action="{claude_page}/test""#)),
        "the test form"
    );
    assert!(
        html.contains(&format!(r#"action="{claude_page}/upstream-models""#)),
        "the fetch form"
    );
    assert!(
        html.contains("nobody is charged"),
        "the test says it is not billed"
    );
    assert!(
        html.contains(&format!(
            r#"<option value="{}" >claude-tools-key-0 · sk-ant…6789</option>"#,
            claude.key_ids[0]
        )),
        "the key picker lists the provider's keys, masked: {html}"
    );
    assert!(
        html.contains("data-probe-out"),
        "where the JavaScript puts the result"
    );
    let token = csrf(&html);

    // ---- Claude, through the provider model's id (the page's default choice) ----
    let pm = provider_model_id(
        &app,
        &admin,
        &claude.provider_id,
        "claude-sonnet-4-5-20250929",
    )
    .await;
    assert!(
        html.contains(&format!(r#"<option value="{pm}" selected>"#)),
        "first model preselected"
    );
    mock.script(CLAUDE_KEY, [said.clone()]);
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{claude_page}/test"),
        &[
            ("csrf", &token),
            ("provider_model_id", &pm),
            ("upstream_model", ""),
            ("key_id", ""),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let r = result_panel(&html);
    assert!(r.contains("Works"), "{r}");
    assert!(r.contains("data-probe-status>200<"), "{r}");
    assert!(r.contains("Hi there! How can I help?"), "the excerpt: {r}");
    assert!(r.contains("9 in · 3 out"), "the tokens: {r}");
    assert!(r.contains("claude-sonnet-4-5-20250929"), "the model: {r}");
    assert!(r.contains(" ms</td>"), "the latency: {r}");
    assert!(r.contains("No usage record was written"), "{r}");
    assert!(!html.contains(CLAUDE_KEY), "the key never appears");
    let sent = mock
        .requests_for(CLAUDE_KEY)
        .pop()
        .expect("the test reached the upstream");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.header("x-endpoint-extra"),
        Some("yes"),
        "the endpoint's headers"
    );
    let b = body_json(&sent);
    assert_eq!(b["max_tokens"], 16);
    assert_eq!(b["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(b["messages"][0]["content"], "Say hi");
    assert!(b.get("stream").is_none_or(|s| s == false), "not streamed");

    // ---- OpenAI Chat, typed name; Responses; Gemini ----
    let openai_page = format!("/admin/providers/{}", openai.provider_id);
    mock.script(OPENAI_KEY, [said.clone()]);
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{openai_page}/test"),
        &[
            ("csrf", &token),
            ("provider_model_id", ""),
            ("upstream_model", "gpt-4o"),
            ("key_id", &openai.key_ids[0]),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let r = result_panel(&html);
    assert!(
        r.contains("Works") && r.contains("Hi there!") && r.contains("9 in · 3 out"),
        "{r}"
    );
    assert!(
        html.contains(&format!(
            r#"<option value="{}" selected>"#,
            openai.key_ids[0]
        )),
        "the chosen key stays chosen"
    );
    let sent = mock.requests_for(OPENAI_KEY).pop().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(body_json(&sent)["max_completion_tokens"], 16);

    mock.script(RESPONSES_KEY, [said.clone()]);
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("/admin/providers/{}/test", responses.provider_id),
        &[("csrf", &token), ("upstream_model", "gpt-5")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let r = result_panel(&html);
    assert!(
        r.contains("Works") && r.contains("Hi there!") && r.contains("9 in · 3 out"),
        "{r}"
    );
    let sent = mock.requests_for(RESPONSES_KEY).pop().unwrap();
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(body_json(&sent)["input"], "Say hi");

    mock.script(GEMINI_KEY, [said.clone()]);
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("/admin/providers/{}/test", gemini.provider_id),
        &[("csrf", &token), ("upstream_model", "gemini-2.5-flash")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let r = result_panel(&html);
    assert!(
        r.contains("Works") && r.contains("Hi there!") && r.contains("9 in · 3 out"),
        "{r}"
    );
    let sent = mock.requests_for(GEMINI_KEY).pop().unwrap();
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_KEY));
    assert_eq!(body_json(&sent)["generationConfig"]["maxOutputTokens"], 16);

    // ---- upstream failures: reported with their status; the key never shown ----
    mock.script(CLAUDE_KEY, [Step::status(401).body(format!(
        r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key {CLAUDE_KEY}"}}}}"#
    ))]);
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{claude_page}/test"),
        &[("csrf", &token), ("provider_model_id", &pm)],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "a failed test is still a result");
    let r = result_panel(&html);
    assert!(r.contains("Failed"), "{r}");
    assert!(r.contains("data-probe-status>401<"), "{r}");
    assert!(
        r.contains("unauthorized") && r.contains("invalid x-api-key"),
        "{r}"
    );
    assert!(!html.contains(CLAUDE_KEY), "an echoed key is masked: {r}");
    mock.script(OPENAI_KEY, [Step::status(500)]);
    let (_, _, html) = submit(
        &app,
        &c,
        &format!("{openai_page}/test"),
        &[("csrf", &token), ("upstream_model", "gpt-4o")],
    )
    .await;
    let r = result_panel(&html);
    assert!(
        r.contains("Failed") && r.contains("data-probe-status>500<") && r.contains("server error"),
        "{r}"
    );
    assert!(!html.contains(OPENAI_KEY));

    // ---- a hanging upstream: bounded by the endpoint's timeout, no status ----
    let (s, e) = app
        .put(
            &format!("/api/admin/endpoints/{}", gemini.endpoint_id),
            &admin,
            json!({ "timeout": 1 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    mock.script(GEMINI_KEY, [Step::hang()]);
    let started = std::time::Instant::now();
    let (_, _, html) = submit(
        &app,
        &c,
        &format!("/admin/providers/{}/test", gemini.provider_id),
        &[("csrf", &token), ("upstream_model", "gemini-2.5-flash")],
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let r = result_panel(&html);
    assert!(
        r.contains("Failed") && r.contains("no answer") && r.contains("timeout"),
        "{r}"
    );

    // ---- bad input: 422 with the message, what was typed kept ----
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{claude_page}/test"),
        &[
            ("csrf", &token),
            ("provider_model_id", ""),
            ("upstream_model", ""),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("field-error")
            && html.contains("choose a model of this provider or type an upstream model name"),
        "{html}"
    );
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{claude_page}/test"),
        &[("csrf", &token), ("upstream_model", "claude sonnet")],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("a model name has no spaces"), "{html}");
    assert!(
        html.contains(r#"value="claude sonnet""#),
        "typed value shown again"
    );
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{claude_page}/test"),
        &[
            ("csrf", &token),
            ("upstream_model", "x"),
            ("key_id", &openai.key_ids[0]),
        ],
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "another provider's key"
    );
    assert!(
        html.contains("not an upstream key of this provider"),
        "{html}"
    );

    // ---- forged form, the page without JavaScript, unknown provider ----
    let (s, _, _) = submit(
        &app,
        &c,
        &format!("{claude_page}/test"),
        &[("csrf", "forged"), ("upstream_model", "x")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, html) = page(&app, &c, &format!("{claude_page}/test")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("Test a model") && html.contains(r#"data-form="test-model""#),
        "{html}"
    );
    assert!(
        !html.contains("data-probe-result"),
        "no result before a test"
    );
    let (s, _) = page(
        &app,
        &c,
        "/admin/providers/00000000-0000-7000-8000-000000000000/test",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // ---- the JSON API ----
    mock.script(OPENAI_KEY, [said.clone()]);
    let api = format!("/api/admin/providers/{}/test-model", openai.provider_id);
    let (s, v) = app
        .post(&api, &admin, json!({ "upstream_model": "gpt-4o" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["ok"], true, "{v}");
    assert_eq!(v["result"]["status"], 200);
    assert_eq!(v["result"]["usage"]["input"], 9);
    assert_eq!(v["result"]["usage"]["output"], 3);
    assert_eq!(v["target"]["api_format"], "OPENAI");
    assert_eq!(v["target"]["key_id"], openai.key_ids[0].as_str());
    assert!(!v.to_string().contains(OPENAI_KEY));
    mock.script(OPENAI_KEY, [Step::status(401)]);
    let (s, v) = app
        .post(&api, &admin, json!({ "upstream_model": "gpt-4o" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["ok"], false);
    assert_eq!(v["result"]["status"], 401);
    assert_eq!(v["result"]["error_class"], "unauthorized");
    let (s, v) = app.post(&api, &admin, json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "upstream_model");
    let (s, _) = app
        .post(
            "/api/admin/providers/00000000-0000-7000-8000-000000000000/test-model",
            &admin,
            json!({ "upstream_model": "x" }),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // ---- nothing was billed or recorded; the tests are audited ----
    let (_, usage) = app.get("/api/admin/usage", &admin).await;
    assert_eq!(usage["total"], 0, "no usage record: {usage}");
    let (_, audit) = app
        .get(
            "/api/admin/monitoring/audit-logs?action=provider.test_model",
            &admin,
        )
        .await;
    assert!(audit["total"].as_i64().unwrap() >= 8, "{audit}");
    assert!(!audit.to_string().contains(CLAUDE_KEY));

    // ---- non-admins ----
    let (_, user) = app.user_token(&admin, "dev@example.com").await;
    let (s, _) = app
        .post(&api, &user, json!({ "upstream_model": "gpt-4o" }))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let u = sign_in(&app, "dev@example.com", "user-password-1").await;
    let (_, html) = page(&app, &u, "/").await;
    let user_csrf = csrf(&html);
    let (s, _) = page(&app, &u, &format!("{claude_page}/test")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = submit(
        &app,
        &u,
        &format!("{claude_page}/test"),
        &[("csrf", &user_csrf), ("upstream_model", "x")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_upstream_models_lists_marks_and_adds_models_that_route() {
    // The mock knows the good keys only: anything else gets the dialect's 401.
    let mock = MockUpstream::start_with(MockOptions {
        keys: Some(vec![
            OPENAI_KEY.into(),
            CLAUDE_KEY.into(),
            GEMINI_KEY.into(),
        ]),
        ..MockOptions::default()
    })
    .await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let c = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let url = mock.url();
    let openai = route(
        &app,
        &admin,
        "openai-list",
        "OPENAI",
        &url,
        &[(OPENAI_KEY, 50)],
        "gpt-4o",
        "gpt-4o",
        100,
    )
    .await;
    let gpt5 = app.ensure_model(&admin, "gpt-5").await;
    let mini = app.ensure_model(&admin, "mini-model").await;
    let base = format!("/admin/providers/{}", openai.provider_id);

    // ---- the list, with what is configured marked ----
    let (_, html) = page(&app, &c, &base).await;
    let token = csrf(&html);
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{base}/upstream-models"),
        &[("csrf", &token), ("key_id", "")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let list = result_panel(&html);
    assert!(list.contains("<strong>3</strong> models"), "{list}");
    let row = row_html(&html, "gpt-4o");
    assert!(
        row.contains("configured") && row.contains("checked disabled"),
        "{row}"
    );
    let row = row_html(&html, "gpt-5");
    assert!(!row.contains("checked"), "{row}");
    assert!(
        row.contains(&format!(r#"<option value="{gpt5}" selected>"#)),
        "same-named global preselected: {row}"
    );
    let row = row_html(&html, "gpt-4o-mini");
    assert!(
        !row.contains("configured") && !row.contains("selected>"),
        "{row}"
    );
    assert!(!html.contains(OPENAI_KEY));
    let sent = mock.requests_for(OPENAI_KEY).pop().unwrap();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );

    let (i_4o, i_mini, i_5) = (
        row_of(&html, "gpt-4o"),
        row_of(&html, "gpt-4o-mini"),
        row_of(&html, "gpt-5"),
    );
    let rows: Vec<(String, String)> =
        [(&i_4o, "gpt-4o"), (&i_mini, "gpt-4o-mini"), (&i_5, "gpt-5")]
            .iter()
            .flat_map(|(i, id)| {
                [
                    (format!("id_{i}"), (*id).to_string()),
                    (format!("name_{i}"), String::new()),
                ]
            })
            .collect();
    let form = |extra: &[(String, String)]| {
        let mut f: Vec<(String, String)> = vec![
            ("csrf".into(), token.clone()),
            ("api_format".into(), "OPENAI".into()),
        ];
        f.extend(rows.iter().cloned());
        f.extend(extra.iter().cloned());
        f
    };
    let add = format!("{base}/upstream-models/add");
    let post = |fields: Vec<(String, String)>| {
        let c = c.clone();
        let to = format!("{}{add}", app.url);
        async move {
            let r = c.post(to).form(&fields).send().await.unwrap();
            let s = r.status();
            let loc = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string())
                .unwrap_or_default();
            (s, loc, r.text().await.unwrap())
        }
    };

    // ---- bad input: 422, the list shown again as it was ticked ----
    let (s, _, html) = post(form(&[])).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Tick at least one model to add."), "{html}");
    let (s, _, html) = post(form(&[
        (format!("pick_{i_mini}"), "on".into()),
        (format!("global_{i_mini}"), String::new()),
        (format!("pick_{i_5}"), "on".into()),
        (format!("global_{i_5}"), gpt5.clone()),
    ]))
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("field-error")
            && html.contains("Choose the global model gpt-4o-mini is served as."),
        "{html}"
    );
    assert!(
        row_html(&html, "gpt-4o-mini").contains("checked"),
        "still ticked"
    );
    assert!(
        row_html(&html, "gpt-4o").contains("configured"),
        "still marked"
    );
    let (s, _, _) = post(vec![
        ("csrf".into(), "forged".into()),
        (format!("pick_{i_5}"), "on".into()),
    ])
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, v) = app
        .get(
            &format!("/api/admin/providers/{}/models", openai.provider_id),
            &admin,
        )
        .await;
    assert_eq!(
        v.as_array()
            .or_else(|| v["items"].as_array())
            .unwrap()
            .len(),
        1,
        "nothing added yet: {v}"
    );

    // ---- two models added in one post ----
    let (s, loc, _) = post(form(&[
        (format!("pick_{i_mini}"), "on".into()),
        (format!("global_{i_mini}"), mini.clone()),
        (format!("pick_{i_5}"), "on".into()),
        (format!("global_{i_5}"), gpt5.clone()),
        (format!("global_{i_4o}"), mini.clone()),
    ]))
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(loc, format!("{base}/upstream-models?saved=2"));
    let (s, html) = page(&app, &c, &loc).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("2 models added"), "{html}");
    assert!(
        html.contains(r#"<tr data-model="gpt-4o-mini">"#) && html.contains("mini-model"),
        "{html}"
    );
    let mini_pm = provider_model_id(&app, &admin, &openai.provider_id, "gpt-4o-mini").await;
    let (_, pm) = app
        .get(
            &format!(
                "/api/admin/providers/{}/models/{mini_pm}",
                openai.provider_id
            ),
            &admin,
        )
        .await;
    assert_eq!(pm["global_model_id"], mini.as_str(), "{pm}");
    provider_model_id(&app, &admin, &openai.provider_id, "gpt-5").await;

    // ---- routing uses the new model at once ----
    let (_, key) = app.gateway_key(&admin, "caller@example.com").await;
    app.wait_for_model(&key, "mini-model").await;
    mock.clear();
    let r = app
        .client
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(&key)
        .json(&json!({ "model": "mini-model", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sent = mock
        .requests_for(OPENAI_KEY)
        .pop()
        .expect("routed upstream");
    assert_eq!(
        body_json(&sent)["model"],
        "gpt-4o-mini",
        "served by the added provider model"
    );

    // ---- the JSON API, and the other dialects' lists ----
    let api = format!(
        "/api/admin/providers/{}/upstream-models",
        openai.provider_id
    );
    let (s, v) = app.get(&api, &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true);
    let ids: Vec<(&str, bool)> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap(),
                m["configured"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [("gpt-4o", true), ("gpt-4o-mini", true), ("gpt-5", true)],
        "{v}"
    );
    let (s, _) = app
        .get(&format!("{api}?key_id={}", uuid::Uuid::now_v7()), &admin)
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a key that is not the provider's"
    );
    let (s, _) = app
        .get(
            "/api/admin/providers/00000000-0000-7000-8000-000000000000/upstream-models",
            &admin,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let claude = route(
        &app,
        &admin,
        "claude-list",
        "CLAUDE",
        &url,
        &[(CLAUDE_KEY, 50)],
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        100,
    )
    .await;
    let (s, v) = app
        .get(
            &format!(
                "/api/admin/providers/{}/upstream-models",
                claude.provider_id
            ),
            &admin,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let m = v["models"].as_array().unwrap();
    assert!(
        m.iter().any(|m| m["id"] == "claude-sonnet-4-5-20250929"
            && m["configured"] == true
            && m["display_name"] == "Claude Sonnet 4.5"),
        "{v}"
    );
    assert!(
        m.iter()
            .any(|m| m["id"] == "claude-haiku-4-5-20251001" && m["configured"] == false),
        "{v}"
    );
    let sent = mock.requests_for(CLAUDE_KEY).pop().unwrap();
    assert_eq!(sent.path, "/v1/models");
    assert_eq!(sent.header("x-api-key"), Some(CLAUDE_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));

    let gemini = route(
        &app,
        &admin,
        "gemini-list",
        "GEMINI",
        &url,
        &[(GEMINI_KEY, 50)],
        "gemini-2.5-pro",
        "gemini-2.5-pro",
        100,
    )
    .await;
    let (_, v) = app
        .get(
            &format!(
                "/api/admin/providers/{}/upstream-models",
                gemini.provider_id
            ),
            &admin,
        )
        .await;
    let ids: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["gemini-2.5-flash", "gemini-2.5-pro"],
        "without `models/`: {v}"
    );
    let sent = mock.requests_for(GEMINI_KEY).pop().unwrap();
    assert_eq!(sent.path, "/v1beta/models");
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_KEY));

    // ---- a key the upstream refuses: a failure with its status, the key masked ----
    let wrong = route(
        &app,
        &admin,
        "wrong-key",
        "OPENAI",
        &url,
        &[(WRONG_KEY, 50)],
        "gpt-4o",
        "gpt-4o",
        100,
    )
    .await;
    let wrong_base = format!("/admin/providers/{}", wrong.provider_id);
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{wrong_base}/upstream-models"),
        &[("csrf", &token), ("key_id", &wrong.key_ids[0])],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let r = result_panel(&html);
    assert!(
        r.contains("Failed") && r.contains("data-probe-status>401<") && r.contains("unauthorized"),
        "{r}"
    );
    assert!(!html.contains(WRONG_KEY));
    let (_, v) = app
        .get(
            &format!("/api/admin/providers/{}/upstream-models", wrong.provider_id),
            &admin,
        )
        .await;
    assert_eq!(
        (v["ok"].clone(), v["status"].clone()),
        (json!(false), json!(401)),
        "{v}"
    );
    assert!(!v.to_string().contains(WRONG_KEY));

    // ---- bad key choice, forged form, the page without JavaScript ----
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{base}/upstream-models"),
        &[("csrf", &token), ("key_id", &wrong.key_ids[0])],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("field-error") && html.contains("not an upstream key of this provider"),
        "{html}"
    );
    let (s, _, html) = submit(
        &app,
        &c,
        &format!("{base}/upstream-models"),
        &[("csrf", &token), ("key_id", "not-a-key")],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("choose a key from the list"), "{html}");
    let (s, _, _) = submit(
        &app,
        &c,
        &format!("{base}/upstream-models"),
        &[("csrf", "forged")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, html) = page(&app, &c, &format!("{base}/upstream-models")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(r#"data-form="upstream-models""#)
            && html.contains("Models this provider serves"),
        "{html}"
    );

    // ---- non-admins ----
    let (_, user) = app.user_token(&admin, "dev@example.com").await;
    let (s, _) = app.get(&api, &user).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let u = sign_in(&app, "dev@example.com", "user-password-1").await;
    let (_, html) = page(&app, &u, "/").await;
    let user_csrf = csrf(&html);
    let (s, _) = page(&app, &u, &format!("{base}/upstream-models")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for path in [format!("{base}/upstream-models"), add.clone()] {
        let (s, _, _) = submit(&app, &u, &path, &[("csrf", &user_csrf)]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "POST {path}");
    }

    app.stop().await;
}
