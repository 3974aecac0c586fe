//! Live state in Redis (`redis_url` set): limits hold across instances, and an unreachable
//! Redis stops the start with a message naming the setting.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::time::Duration;

use aether_store::Backend;
use aether_testkit::MockUpstream;
use common::{Opts, TestApp};
use reqwest::StatusCode;
use serde_json::json;

const MODEL: &str = "redis-live-model";

fn redis_url() -> String {
    std::env::var("AETHER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn claude(app: &TestApp, key: &str) -> StatusCode {
    app.client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", key)
        .json(&json!({"model": MODEL, "max_tokens": 32,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_gateway_keys_rpm_limit_holds_across_two_instances() {
    let mock = MockUpstream::start().await;
    let a = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        redis_url: Some(redis_url()),
        cluster_secrets: true,
        ..Default::default()
    })
    .await;
    let b = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        database_url: Some(a.db.as_ref().unwrap().url.clone()),
        redis_url: Some(redis_url()),
        cluster_secrets: true,
        ..Default::default()
    })
    .await;
    let admin = a.admin_token().await;
    a.add_route(
        &admin,
        "p1",
        "CLAUDE",
        &mock.url(),
        &[("sk-a", 0)],
        MODEL,
        MODEL,
        0,
    )
    .await;
    let (uid, _) = a.gateway_key(&admin, "rpm@example.com").await;
    let (s, k) = a
        .post(
            &format!("/api/admin/users/{uid}/api-keys"),
            &admin,
            json!({ "name": "limited", "rate_limit": 2 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    a.wait_for_model(&key, MODEL).await;
    b.wait_for_model(&key, MODEL).await;

    assert_eq!(claude(&a, &key).await, StatusCode::OK);
    assert_eq!(claude(&b, &key).await, StatusCode::OK);
    // Two requests this minute, one on each instance: the window is shared.
    assert_eq!(claude(&a, &key).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(claude(&b, &key).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        mock.stats().total_requests,
        2,
        "refused requests never left"
    );
    b.stop().await;
    a.stop().await;
}

#[test]
fn an_unreachable_redis_stops_the_start_naming_the_setting() {
    let dir = std::env::temp_dir().join(format!(
        "aether-redis-down-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aether"))
        .env_remove("AETHER_CONFIG")
        .env_remove("AETHER_DATABASE_URL")
        .env_remove("AETHER_REDIS_URL")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            "redis://127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`redis_url`"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
