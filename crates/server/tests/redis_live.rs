//! Live state in Redis (`redis_url` set): limits hold across instances, and an unreachable
//! Redis stops the start with a message naming the setting. Deployments with different
//! `redis_prefix`es share nothing in one Redis. A Redis outage while serving (simulated by a
//! TCP proxy in front of the test Redis that is cut) answers budgeted callers 503 "live state
//! unavailable" in their own dialect — not "quota exhausted" — serves the others from the
//! instance's own state, and is counted in `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_domain::entities::UsageStatus;
use aether_store::Backend;
use aether_testkit::MockUpstream;
use common::{Opts, TestApp};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

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

/// A prefix no other test uses.
fn private_prefix(tag: &str) -> String {
    format!("aether-test:{}:{tag}:", uuid::Uuid::now_v7().simple())
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key under `prefix`.
async fn keys_under(prefix: &str) -> Vec<String> {
    let mut conn = redis_conn().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn delete_under(prefix: &str) {
    let keys = keys_under(prefix).await;
    if !keys.is_empty() {
        let mut conn = redis_conn().await;
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

async fn wait_until_leader(app: &TestApp, what: &str) {
    let started = Instant::now();
    while !app.leader.is_leader() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two deployments over the same database (so every entity id, and thus every key name after
/// the prefix, is the same) and one Redis, with different prefixes: nothing is shared — not
/// the RPM windows, not the leader lease, not the change channel.
#[tokio::test]
async fn deployments_with_different_prefixes_share_nothing_in_one_redis() {
    let mock = MockUpstream::start().await;
    let (pa, pb) = (private_prefix("a"), private_prefix("b"));
    let a = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        redis_url: Some(redis_url()),
        redis_prefix: Some(pa.clone()),
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
    let (uid, _) = a.gateway_key(&admin, "prefix@example.com").await;
    let (s, k) = a
        .post(
            &format!("/api/admin/users/{uid}/api-keys"),
            &admin,
            json!({ "name": "limited", "rate_limit": 2 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    let key_id = k["id"].as_str().unwrap().to_string();
    // B starts on the configuration A wrote: it loads it at start.
    let b = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        database_url: Some(a.db.as_ref().unwrap().url.clone()),
        redis_url: Some(redis_url()),
        redis_prefix: Some(pb.clone()),
        cluster_secrets: true,
        ..Default::default()
    })
    .await;
    a.wait_for_model(&key, MODEL).await;
    b.wait_for_model(&key, MODEL).await;

    // RPM windows: each deployment counts its own two requests.
    for app in [&a, &a, &b, &b] {
        assert_eq!(claude(app, &key).await, StatusCode::OK);
    }
    assert_eq!(claude(&a, &key).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(claude(&b, &key).await, StatusCode::TOO_MANY_REQUESTS);

    // Leader lease: one database, yet each deployment has its own leader.
    wait_until_leader(&a, "A never became its deployment's leader").await;
    wait_until_leader(&b, "B never became its deployment's leader").await;

    // Keys: the same names under each prefix, none under the default one.
    let rpm = format!("rpm:a:{key_id}");
    for p in [&pa, &pb] {
        let keys = keys_under(p).await;
        assert!(keys.contains(&format!("{p}{rpm}")), "{keys:?}");
        assert!(
            keys.iter().any(|k| k.starts_with(&format!("{p}leader:"))),
            "{keys:?}"
        );
    }
    let mut conn = redis_conn().await;
    let default_rpm: i64 = redis::cmd("EXISTS")
        .arg(format!("aether:{rpm}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(default_rpm, 0, "nothing under the default prefix");

    // Change channel: A announces on its own channel only.
    let mut pubsub = redis::Client::open(redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(format!("{pa}config")).await.unwrap();
    pubsub.subscribe(format!("{pb}config")).await.unwrap();
    let (s, _) = a
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "announce@example.com", "password": "user-password-1" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut messages = pubsub.on_message();
    let first = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("A announced its change")
        .unwrap();
    assert_eq!(first.get_channel_name(), format!("{pa}config"));
    let more = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(
        more.is_err(),
        "one announcement, on A's channel only: {:?}",
        more.ok()
            .flatten()
            .map(|m| m.get_channel_name().to_string())
    );
    drop(messages);

    b.stop().await;
    a.stop().await;
    delete_under(&pa).await;
    delete_under(&pb).await;
}

/// A TCP proxy to the test Redis that can be cut (connections dropped, port closed) and
/// restored on the same port.
struct Proxy {
    port: u16,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let inner = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                inner.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { port, tasks }
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Sends one request in `path`'s dialect; (status, body, request id).
async fn ask(app: &TestApp, path: &str, key: &str) -> (StatusCode, Value, Option<String>) {
    // The same body is a valid Claude messages and OpenAI chat request.
    let body = json!({"model": MODEL, "max_tokens": 32,
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = app
        .client
        .post(format!("{}{path}", app.url))
        .header("x-api-key", key)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let id = r
        .headers()
        .get("x-aether-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, r.json().await.unwrap_or(Value::Null), id)
}

/// The value of one series in a `/metrics` text, 0 when absent.
async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_redis_outage_answers_budgeted_callers_503_in_their_dialect_and_is_counted() {
    let mock = MockUpstream::start().await;
    let proxy = Proxy::start(0).await;
    let prefix = private_prefix("outage");
    let app = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        redis_url: Some(format!("redis://127.0.0.1:{}", proxy.port)),
        redis_prefix: Some(prefix.clone()),
        ..Default::default()
    })
    .await;
    let admin = app.admin_token().await;
    for (name, format, secret) in [("pc", "CLAUDE", "sk-c"), ("po", "OPENAI", "sk-o")] {
        app.add_route(
            &admin,
            name,
            format,
            &mock.url(),
            &[(secret, 0)],
            MODEL,
            MODEL,
            0,
        )
        .await;
    }
    let (s, u) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "budgeted@example.com", "password": "user-password-1", "quota_usd": "10" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let (s, k) = app
        .post(
            &format!("/api/admin/users/{}/api-keys", u["id"].as_str().unwrap()),
            &admin,
            json!({ "name": "budgeted" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let budgeted = k["key"].as_str().unwrap().to_string();
    let (_, free) = app.gateway_key(&admin, "free@example.com").await;
    app.wait_for_model(&budgeted, MODEL).await;
    app.wait_for_model(&free, MODEL).await;
    assert_eq!(ask(&app, "/v1/messages", &budgeted).await.0, StatusCode::OK);
    let budget_errors = "aether_live_state_errors_total{op=\"budget\"}";
    assert_eq!(metric(&app, budget_errors).await, 0, "Redis is up");
    let ready = |app: &TestApp| {
        let req = app.client.get(format!("{}/ready", app.url));
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["redis"], "ok", "{body}");

    proxy.cut();
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (body["database"].as_str(), body["redis"].as_str()),
        (Some("ok"), Some("error")),
        "{body}"
    );
    let sent = mock.stats().total_requests;
    // Claude dialect: 503 api_error, not 429 "quota exhausted".
    let (status, body, id) = ask(&app, "/v1/messages", &budgeted).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("live state unavailable"), "{message}");
    assert!(!message.contains("exhausted"), "{message}");
    let record = app.usage(&id.expect("request id")).await;
    assert_eq!(record.status, UsageStatus::Failed);
    assert_eq!(record.status_code, Some(503));
    assert_eq!(record.error_type.as_deref(), Some("live_state_unavailable"));
    // OpenAI dialect: 503 in OpenAI's error shape.
    let (status, body, _) = ask(&app, "/v1/chat/completions", &budgeted).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("live state unavailable"),
        "{body}"
    );
    assert_eq!(
        mock.stats().total_requests,
        sent,
        "refused requests never left"
    );
    // A caller without a quota or balance is served from the instance's own state.
    assert_eq!(ask(&app, "/v1/messages", &free).await.0, StatusCode::OK);
    assert!(metric(&app, budget_errors).await >= 2, "outage counted");
    assert!(metric(&app, "aether_live_state_errors_total{op=\"lease\"}").await >= 1);

    // Back: the budgeted caller is served again.
    let proxy = Proxy::start(proxy.port).await;
    let started = Instant::now();
    while ask(&app, "/v1/messages", &budgeted).await.0 != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Redis not used again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready(&app).await.0, StatusCode::OK, "ready again");
    app.stop().await;
    delete_under(&prefix).await;
    proxy.cut();
}
