//! Two instances of the real application in one process, sharing one PostgreSQL schema (and
//! Redis): a change made through one instance's management API is in force on the other
//! within a second — over Redis pub/sub, or PostgreSQL LISTEN/NOTIFY without Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use aether_store::Backend;
use aether_testkit::MockUpstream;
use common::{Opts, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODEL: &str = "cluster-model";
/// The propagation budget of the issue.
const BUDGET: Duration = Duration::from_secs(1);

fn redis_url() -> String {
    std::env::var("AETHER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Instance A owns a fresh PostgreSQL schema; instance B shares it (and the secrets).
async fn two_instances(redis: Option<String>) -> (TestApp, TestApp) {
    let a = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        redis_url: redis.clone(),
        cluster_secrets: true,
        ..Default::default()
    })
    .await;
    let b = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        database_url: Some(a.db.as_ref().unwrap().url.clone()),
        redis_url: redis,
        cluster_secrets: true,
        ..Default::default()
    })
    .await;
    assert_ne!(a.url, b.url);
    (a, b)
}

/// Polls `probe` every 25 ms until it holds; returns how long that took (panics after 5 s).
async fn time_until<F, Fut>(started: Instant, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while started.elapsed() < Duration::from_secs(5) {
        if probe().await {
            let took = started.elapsed();
            eprintln!("{what}: {took:?}");
            return took;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not seen within 5 s");
}

async fn claude_status(app: &TestApp, key: &str) -> StatusCode {
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

async fn chat_status(app: &TestApp, key: &str) -> StatusCode {
    app.client
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(key)
        .json(&json!({"model": MODEL, "max_tokens": 32,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn offers_model(app: &TestApp, key: &str) -> bool {
    let r = app
        .client
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::OK {
        return false;
    }
    let v: Value = r.json().await.unwrap();
    v["data"]
        .as_array()
        .is_some_and(|d| d.iter().any(|m| m["id"] == MODEL))
}

/// The scenario, over whichever transport the instances were started with.
async fn changes_on_a_reach_b(a: &TestApp, b: &TestApp, mock: &MockUpstream, label: &str) {
    let admin = a.admin_token().await;

    // A new route and gateway key, created on A, are served by B within the budget.
    let route = a
        .add_route(
            &admin,
            "cluster-provider",
            "CLAUDE",
            &mock.url(),
            &[("sk-cluster", 1)],
            MODEL,
            MODEL,
            1,
        )
        .await;
    let (_, key) = a.gateway_key(&admin, "cluster@example.com").await;
    let created = Instant::now();
    let took = time_until(created, "new route on B", || offers_model(b, &key)).await;
    assert!(took < BUDGET, "{label}: new route reached B after {took:?}");
    assert_eq!(claude_status(b, &key).await, StatusCode::OK);
    let served = mock.request_count("sk-cluster");
    assert!(served >= 1);

    // A setting changed on A: cross-format conversion is off by default, so B cannot serve an
    // OpenAI-dialect request from a Claude-only provider — until A turns it on.
    assert_eq!(
        chat_status(b, &key).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "{label}: conversion is off by default"
    );
    let started = Instant::now();
    let (s, v) = a
        .put(
            "/api/admin/system/configs/allow_cross_format",
            &admin,
            json!({ "value": true }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let took = time_until(started, "allow_cross_format on B", || async {
        chat_status(b, &key).await == StatusCode::OK
    })
    .await;
    assert!(took < BUDGET, "{label}: setting reached B after {took:?}");
    // B's management view of the settings was reloaded too (before its snapshot).
    let b_admin = b.admin_token().await;
    let (s, v) = b
        .get("/api/admin/system/configs/allow_cross_format", &b_admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"], json!(true), "{label}: B's settings: {v}");

    // A key turned off on A: B stops routing to it.
    let started = Instant::now();
    let (s, v) = a
        .put(
            &format!("/api/admin/endpoints/keys/{}", route.key_ids[0]),
            &admin,
            json!({ "is_active": false }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let took = time_until(started, "disabled key on B", || async {
        claude_status(b, &key).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(
        took < BUDGET,
        "{label}: key change reached B after {took:?}"
    );
    let after = mock.request_count("sk-cluster");
    assert_eq!(
        claude_status(b, &key).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        mock.request_count("sk-cluster"),
        after,
        "{label}: B no longer sends anything to the disabled key"
    );

    // And back on, from B this time: A follows.
    let b_started = Instant::now();
    let (s, _) = b
        .put(
            &format!("/api/admin/endpoints/keys/{}", route.key_ids[0]),
            &b_admin,
            json!({ "is_active": true }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let took = time_until(b_started, "re-enabled key on A", || async {
        claude_status(a, &key).await == StatusCode::OK
    })
    .await;
    assert!(
        took < BUDGET,
        "{label}: B's change reached A after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_propagate_over_redis() {
    let mock = MockUpstream::start().await;
    let (a, b) = two_instances(Some(redis_url())).await;
    changes_on_a_reach_b(&a, &b, &mock, "redis").await;
    b.stop().await;
    a.stop().await;
    mock.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_propagate_over_postgres_notify() {
    let mock = MockUpstream::start().await;
    let (a, b) = two_instances(None).await;
    changes_on_a_reach_b(&a, &b, &mock, "postgres").await;
    b.stop().await;
    a.stop().await;
    mock.shutdown(Duration::from_secs(2)).await;
}
