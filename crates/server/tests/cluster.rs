//! Two instances of the real application in one process, sharing one PostgreSQL schema (and
//! Redis): a change made through one instance's management API is in force on the other
//! within a second — over Redis pub/sub, or PostgreSQL LISTEN/NOTIFY without Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod proc_kit;

use std::time::{Duration, Instant};

use aether_store::Backend;
use aether_testkit::MockUpstream;
use common::{Opts, TestApp, request_id};
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

/// A change made with the CLI — another process, no server — reaches a running instance
/// within a second: the command announces it as an instance would, instead of leaving it to
/// the 30 s reconcile.
async fn a_cli_change_reaches_a_running_instance(redis: Option<String>, label: &str) {
    let app = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        redis_url: redis.clone(),
        cluster_secrets: true,
        ..Default::default()
    })
    .await;
    let admin = app.admin_token().await;
    let email = "cli-change@example.com";
    let (s, u) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": email, "password": "user-password-1" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let dir = proc_kit::tmpdir("cli-change");
    let mut cmd = proc_kit::aether();
    cmd.arg("--data-dir")
        .arg(&dir)
        .args(["--database-url", &app.db.as_ref().unwrap().url])
        .args(["--mode", "production"])
        .env(
            "AETHER_JWT_SECRET",
            "cluster-test-jwt-secret-0123456789abcdef",
        )
        .env(
            "AETHER_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        );
    if let Some(r) = &redis {
        cmd.args(["--redis-url", r]);
    }
    let out = cmd
        .args(["key", "create", "--user", email, "--name", "from-cli"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = Instant::now();
    let key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let took = time_until(done, &format!("{label}: CLI key usable"), || async {
        app.client
            .get(format!("{}/v1/models", app.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    })
    .await;
    assert!(
        took < BUDGET,
        "{label}: the CLI's key worked after {took:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_propagate_over_redis() {
    a_cli_change_reaches_a_running_instance(Some(redis_url()), "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_propagate_over_postgres_notify() {
    a_cli_change_reaches_a_running_instance(None, "postgres").await;
}

// ---------------------------------------------------------------------------------------------
// Limits shared across instances (both over one Redis). They stay apart from other tests because
// every Redis key names a fresh entity id (upstream key, user) of the test's own schema.
// ---------------------------------------------------------------------------------------------

mod shared_limits {
    use super::*;

    use aether_domain::entities::{UsageRecord, UsageStatus};
    use aether_store::{Page, UsageFilter, UsageRepo as _};

    /// The bound on any one test step that waits on the gateway.
    const WAIT: Duration = Duration::from_secs(20);

    /// Every usage record of `user` once `n` of them exist and all have settled.
    pub(super) async fn settled_usage(app: &TestApp, user: &str, n: usize) -> Vec<UsageRecord> {
        let f = UsageFilter {
            user_id: Some(user.parse().unwrap()),
            ..Default::default()
        };
        let started = Instant::now();
        loop {
            let page = app
                .store()
                .list_usage(
                    &f,
                    Page {
                        limit: 1000,
                        offset: 0,
                    },
                )
                .await
                .unwrap();
            let settled = page
                .items
                .iter()
                .all(|r| matches!(r.status, UsageStatus::Completed | UsageStatus::Failed));
            if page.items.len() >= n && settled {
                return page.items;
            }
            assert!(
                started.elapsed() < WAIT,
                "usage records: {} of {n}, all settled: {settled}",
                page.items.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A user created with `quota_usd` (or none) and a gateway key; (user id, key).
    pub(super) async fn user_with_key(
        app: &TestApp,
        admin: &str,
        email: &str,
        quota: Option<&str>,
    ) -> (String, String) {
        let (s, u) = app
            .post(
                "/api/admin/users",
                admin,
                json!({ "email": email, "password": "user-password-1", "quota_usd": quota }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        let uid = u["id"].as_str().unwrap().to_string();
        let (s, k) = app
            .post(
                &format!("/api/admin/users/{uid}/api-keys"),
                admin,
                json!({ "name": "test" }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{k}");
        (uid, k["key"].as_str().unwrap().to_string())
    }

    /// A Claude-dialect request with an exact body (its length drives the reservation).
    pub(super) fn claude_body(max_tokens: u64, stream: bool) -> Vec<u8> {
        serde_json::to_vec(
            &json!({ "model": MODEL, "max_tokens": max_tokens, "stream": stream,
                                    "messages": [{"role": "user", "content": "Hello"}] }),
        )
        .unwrap()
    }

    pub(super) async fn send_claude(
        app_url: &str,
        client: &reqwest::Client,
        key: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        client
            .post(format!("{app_url}/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// What the client saw of one request.
    #[derive(Debug)]
    pub(super) struct Seen {
        pub id: String,
        pub status: StatusCode,
        pub body: String,
    }

    /// `n` concurrent Claude requests, alternating between `a` and `b`, each bounded by `WAIT`.
    pub(super) async fn burst(
        a: &TestApp,
        b: &TestApp,
        key: &str,
        n: usize,
        body: &[u8],
    ) -> Vec<Seen> {
        let mut tasks = Vec::new();
        for i in 0..n {
            let app = if i % 2 == 0 { a } else { b };
            let (url, client, key, body) = (
                app.url.clone(),
                app.client.clone(),
                key.to_string(),
                body.to_vec(),
            );
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(WAIT, async move {
                    let r = send_claude(&url, &client, &key, body).await;
                    let id = request_id(&r);
                    let status = r.status();
                    let body = r.text().await.unwrap();
                    Seen { id, status, body }
                })
                .await
                .expect("request finished in time")
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen
    }

    /// The user's spend as the management API reports it.
    pub(super) async fn user_used(app: &TestApp, admin: &str, uid: &str) -> aether_domain::Usd {
        let (s, u) = app.get(&format!("/api/admin/users/{uid}"), admin).await;
        assert_eq!(s, StatusCode::OK, "{u}");
        serde_json::from_value(u["used_usd"].clone()).unwrap()
    }

    /// A clean refusal in the Claude dialect.
    pub(super) fn assert_clean_refusal(s: &Seen, statuses: &[StatusCode]) {
        assert!(statuses.contains(&s.status), "{}: {}", s.status, s.body);
        let v: Value = serde_json::from_str(&s.body)
            .unwrap_or_else(|e| panic!("refusal is JSON ({e}): {}", s.body));
        assert_eq!(v["type"], "error", "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_of_3_holds_across_two_instances_under_20_concurrent_streams() {
    use aether_domain::entities::UsageStatus;
    use aether_testkit::Step;
    use shared_limits::*;

    let mock = MockUpstream::start().await;
    let (a, b) = two_instances(Some(redis_url())).await;
    let admin = a.admin_token().await;
    let route = a
        .add_route(
            &admin,
            "cluster-limited",
            "CLAUDE",
            &mock.url(),
            &[("sk-limit3", 1)],
            MODEL,
            MODEL,
            1,
        )
        .await;
    let (s, v) = a
        .put(
            &format!("/api/admin/endpoints/keys/{}", route.key_ids[0]),
            &admin,
            json!({ "max_concurrent": 3 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The gateway key is made after the limit, so once both instances serve it they also
    // have the limit.
    let (uid, key) = user_with_key(&a, &admin, "streams@example.com", None).await;
    a.wait_for_model(&key, MODEL).await;
    b.wait_for_model(&key, MODEL).await;
    // One request first binds the caller to the key (cache affinity, shared in Redis): a
    // caller without affinity may use only `limit × (1 − r)` slots, one with it all three.
    let warm = send_claude(&b.url, &b.client, &key, claude_body(64, false)).await;
    assert_eq!(warm.status(), StatusCode::OK);
    warm.bytes().await.unwrap();
    // Each stream takes well over a second, so all 20 overlap.
    mock.set_default(Step::slow_stream(250));

    let seen = burst(&a, &b, &key, 20, &shared_limits::claude_body(64, true)).await;
    let mut complete = 0;
    for s in &seen {
        if s.status == StatusCode::OK {
            assert!(
                s.body.contains("message_stop"),
                "a stream that began ran to its end: {}",
                s.body
            );
            complete += 1;
        } else {
            assert_clean_refusal(
                s,
                &[
                    StatusCode::TOO_MANY_REQUESTS,
                    StatusCode::SERVICE_UNAVAILABLE,
                ],
            );
        }
    }
    eprintln!(
        "complete streams: {complete}, refused: {}, upstream max concurrency: {}",
        20 - complete,
        mock.max_concurrency("sk-limit3")
    );
    assert!(
        mock.max_concurrency("sk-limit3") <= 3,
        "the upstream saw {} concurrent requests on a key limited to 3",
        mock.max_concurrency("sk-limit3")
    );
    assert!(complete >= 3, "the key's three slots were used: {complete}");
    assert_eq!(
        mock.request_count("sk-limit3"),
        complete as u64 + 1,
        "a refused request never reached the upstream"
    );

    // Exactly one settled usage record per request (and the warm-up), matching what the client
    // saw.
    let records = settled_usage(&a, &uid, 21).await;
    assert_eq!(records.len(), 21, "one usage record per request");
    for s in &seen {
        let matching: Vec<_> = records
            .iter()
            .filter(|r| r.id.to_string() == s.id)
            .collect();
        assert_eq!(matching.len(), 1, "request {} has one usage record", s.id);
        let r = matching[0];
        if s.status == StatusCode::OK {
            assert_eq!(r.status, UsageStatus::Completed, "{r:?}");
        } else {
            assert_eq!(r.status, UsageStatus::Failed, "{r:?}");
            assert_eq!(r.status_code, Some(s.status.as_u16()), "{r:?}");
        }
    }
    b.stop().await;
    a.stop().await;
    mock.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_quota_overshoots_by_at_most_one_reservation_per_instance() {
    use aether_domain::Usd;
    use aether_domain::entities::UsageStatus;
    use aether_testkit::{Step, Usage};
    use shared_limits::*;

    let mock = MockUpstream::start().await;
    let (a, b) = two_instances(Some(redis_url())).await;
    let admin = a.admin_token().await;
    a.add_route(
        &admin,
        "cluster-quota",
        "CLAUDE",
        &mock.url(),
        &[("sk-quota", 1)],
        MODEL,
        MODEL,
        1,
    )
    .await;
    let quota: Usd = "0.01".parse().unwrap();
    let (uid, key) = user_with_key(&a, &admin, "quota@example.com", Some("0.01")).await;
    a.wait_for_model(&key, MODEL).await;
    b.wait_for_model(&key, MODEL).await;

    // Each admitted request costs 10 input + 200 output tokens at $3 / $15 per 1M = $0.00303;
    // replies are held 300 ms so a burst overlaps at the quota's edge.
    const MAX_TOKENS: u64 = 200;
    mock.set_default(Step::delay_headers(300).usage(Usage {
        input: 10,
        output: 200,
        ..Usage::default()
    }));
    let body = claude_body(MAX_TOKENS, false);
    // The reservation `limits::estimate` makes for this body: ⌈len / 3⌉ input tokens at the
    // dearest input-side price ($6 / 1M, the 1 h cache write) + max_tokens at $15 / 1M.
    let reservation = Usd::per_million((body.len() as u64).div_ceil(3), Usd::dollars(6))
        + Usd::per_million(MAX_TOKENS, Usd::dollars(15));
    let per_request: Usd = "0.00303".parse().unwrap();

    // Bursts of 10 (5 per instance) until one is refused entirely; each burst settles first.
    let mut ok = 0i64;
    let mut sent = 0usize;
    let mut refused_burst = false;
    for _ in 0..10 {
        let seen = burst(&a, &b, &key, 10, &body).await;
        sent += seen.len();
        let mut burst_ok = 0;
        for s in &seen {
            if s.status == StatusCode::OK {
                burst_ok += 1;
            } else {
                assert_clean_refusal(s, &[StatusCode::TOO_MANY_REQUESTS]);
                assert!(s.body.contains("quota exhausted"), "{}", s.body);
            }
        }
        ok += burst_ok;
        let expected = Usd::from_nanos(per_request.nanos() * ok);
        let started = Instant::now();
        while user_used(&a, &admin, &uid).await != expected {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "charges reach the database"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if burst_ok == 0 {
            refused_burst = true;
            break;
        }
    }
    assert!(
        refused_burst,
        "the quota was never enforced ({ok} admitted)"
    );
    assert!(
        ok >= 2,
        "requests were admitted while the quota had room: {ok}"
    );

    // Everything settled: the charges recorded per request add up to the user's spend.
    let records = settled_usage(&a, &uid, sent).await;
    assert_eq!(records.len(), sent, "one usage record per request");
    let completed: Vec<_> = records
        .iter()
        .filter(|r| r.status == UsageStatus::Completed)
        .collect();
    assert_eq!(completed.len() as i64, ok);
    let recorded = completed
        .iter()
        .fold(Usd::ZERO, |acc, r| acc + r.cost.actual_total);
    let largest = completed.iter().map(|r| r.cost.actual_total).max().unwrap();
    let used = user_used(&a, &admin, &uid).await;
    assert_eq!(
        user_used(&b, &admin, &uid).await,
        used,
        "both instances report one spend"
    );
    assert_eq!(
        recorded, used,
        "the spend is the sum of the recorded charges"
    );
    assert!(
        largest <= reservation,
        "{largest} within its reservation {reservation}"
    );
    eprintln!(
        "quota {quota}, used {used} over {ok} requests, overshoot {}, reservation {reservation}",
        used - quota
    );
    assert!(
        used >= quota,
        "admission stopped only once the quota was used up: {used}"
    );
    let bound = reservation + reservation;
    assert!(
        used - quota <= bound,
        "used {used} overshoots {quota} by more than one reservation per instance ({bound})"
    );

    // Exhausted on both instances: refused before anything is sent upstream.
    let before = mock.stats().total_requests;
    for app in [&a, &b] {
        let r = send_claude(&app.url, &app.client, &key, body.clone()).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(mock.stats().total_requests, before);
    b.stop().await;
    a.stop().await;
    mock.shutdown(Duration::from_secs(2)).await;
}
