//! The web console in a real browser: headless Chromium driven through Selenium by
//! `tests/browser/console.py` — sign-in, every page of the navigation, forms with inline
//! validation, a provider turned off (and routing changing with it), a normal user kept out of
//! admin pages, a key shown once. `.ci/run` installs Chromium, chromedriver and Selenium and
//! points `AETHER_BROWSER_PYTHON` at the interpreter; without it the test says so and does
//! nothing. `AETHER_SCREENSHOTS=dir` saves screenshots of the main pages (docs/screenshots).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use aether_testkit::MockUpstream;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use reqwest::StatusCode;
use serde_json::json;

const MODEL: &str = "claude-sonnet-4-5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let Ok(python) = std::env::var("AETHER_BROWSER_PYTHON") else {
        eprintln!(
            "NOTE: AETHER_BROWSER_PYTHON is not set; the browser test did not run (.ci/run runs it)"
        );
        return;
    };
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let route = app
        .add_route(
            &admin,
            "browser-anthropic",
            "CLAUDE",
            &mock.url(),
            &[("sk-browser", 1)],
            MODEL,
            "claude-up",
            1,
        )
        .await;
    let (_, key) = app.gateway_key(&admin, "caller@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    let ask = || async {
        app.client
            .post(format!("{}/v1/messages", app.url))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({ "model": MODEL, "max_tokens": 64,
                           "messages": [{"role": "user", "content": "Hello"}] }))
            .send()
            .await
            .unwrap()
    };
    let r = ask().await;
    assert_eq!(r.status(), StatusCode::OK);
    let request_id = r.headers()["x-aether-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    app.usage(&request_id).await; // recorded before the browser looks for it

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(script)
        .args(["--url", &app.url])
        .args(["--admin-email", ADMIN_EMAIL])
        .args(["--admin-password", ADMIN_PASSWORD])
        .args(["--provider", "browser-anthropic"])
        .args(["--request-id", &request_id]);
    if let Ok(dir) = std::env::var("AETHER_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        cmd.args(["--shots", &dir]);
    }
    if let Ok(driver) = std::env::var("AETHER_CHROMEDRIVER") {
        cmd.args(["--chromedriver", &driver]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("the browser script runs");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser flow failed:\n{log}");
    assert!(log.contains("OK"), "{log}");

    // The provider the admin turned off in the browser is out of routing.
    let (_, p) = app
        .get(
            &format!("/api/admin/providers/{}", route.provider_id),
            &admin,
        )
        .await;
    assert_eq!(p["is_active"], false, "{p}");
    let r = ask().await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    app.stop().await;
}
