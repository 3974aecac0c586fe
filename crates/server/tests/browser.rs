//! The web console in a real browser: headless Chromium driven through Selenium by
//! `tests/browser/console.py` — the admin sets up a model with two price tiers, a provider, an
//! endpoint, an upstream key and the provider's model, and a user, all in the browser; the user
//! makes a request through the gateway with a key created (and shown once) in the console and
//! finds it on the usage page with its cost breakdown and trace; the admin turns the provider
//! off and routing changes; a normal user is kept out of admin pages; every navigation page
//! renders. `.ci/run` installs Chromium, chromedriver and Selenium and
//! points `AETHER_BROWSER_PYTHON` at the interpreter; without it the test says so and does
//! nothing. `AETHER_SCREENSHOTS=dir` saves screenshots of the main pages (docs/screenshots).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use aether_testkit::MockUpstream;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};

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

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(script)
        .args(["--url", &app.url])
        .args(["--admin-email", ADMIN_EMAIL])
        .args(["--admin-password", ADMIN_PASSWORD])
        .args(["--mock-url", &mock.url()]);
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

    // What the browser did is in the database: the user, the provider (now off), the request.
    let admin = app.admin_token().await;
    let (_, users) = app
        .get("/api/admin/users?search=browser-user", &admin)
        .await;
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "{users}");
    let (_, providers) = app
        .get("/api/admin/providers?search=browser-made", &admin)
        .await;
    assert_eq!(providers["items"][0]["is_active"], false, "{providers}");
    assert_eq!(mock.request_count("sk-browser-upstream-0123456789"), 1);
    app.stop().await;
}
