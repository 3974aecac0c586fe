//! The official Python SDKs (`anthropic`, `openai`, `google-genai`) complete sync and streaming
//! calls — tool calls included — through the gateway. `.ci/run` installs them into a
//! virtualenv and points `AETHER_SDK_PYTHON` at its interpreter; without it the test says so
//! and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use aether_domain::entities::UsageStatus;
use aether_store::{Page, UsageFilter, UsageRepo as _};
use aether_testkit::{MockUpstream, Step};
use common::TestApp;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_through_the_gateway() {
    let Ok(python) = std::env::var("AETHER_SDK_PYTHON") else {
        eprintln!(
            "NOTE: AETHER_SDK_PYTHON is not set; the Python SDK check did not run (.ci/run runs it)"
        );
        return;
    };
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "anthropic",
        "CLAUDE",
        &mock.url(),
        &[("sk-ant", 1)],
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        1,
    )
    .await;
    app.add_route(
        &admin,
        "openai",
        "OPENAI",
        &mock.url(),
        &[("sk-oai", 1)],
        "gpt-5",
        "gpt-5-2025-08-07",
        1,
    )
    .await;
    let codex = app
        .add_route(
            &admin,
            "codex",
            "OPENAI_CLI",
            &mock.url(),
            &[("sk-codex", 1)],
            "gpt-5",
            "gpt-5-2025-08-07",
            1,
        )
        .await;
    app.add_route(
        &admin,
        "google",
        "GEMINI",
        &mock.url(),
        &[("sk-gem", 1)],
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        1,
    )
    .await;
    let _ = codex;
    let (_, key) = app.gateway_key(&admin, "sdk@example.com").await;
    app.wait_for_model(&key, "gemini-2.5-flash").await;

    // The script's calls, in order, per upstream key.
    let tool = || Step::ok().tool_call("get_weather", json!({ "city": "Paris" }));
    mock.script("sk-ant", [Step::ok(), Step::ok(), tool(), tool()]);
    mock.script("sk-oai", [Step::ok(), Step::ok(), Step::ok(), tool()]);
    mock.script("sk-gem", [Step::ok(), Step::ok(), tool()]);

    let script = format!("{}/tests/sdk/check.py", env!("CARGO_MANIFEST_DIR"));
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("AETHER_URL", url)
            .env("AETHER_KEY", key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all SDK checks passed"), "{stdout}");

    // Every generation call was accounted.
    let mut done = 0;
    for _ in 0..100 {
        let page = app
            .store()
            .list_usage(&UsageFilter::default(), Page::new(100, 0))
            .await
            .unwrap();
        done = page
            .items
            .iter()
            .filter(|r| r.status == UsageStatus::Completed)
            .count();
        if done >= 13 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        done, 13,
        "4 Anthropic, 4 Chat, 2 Responses and 3 Gemini generations are accounted"
    );
    app.stop().await;
}
