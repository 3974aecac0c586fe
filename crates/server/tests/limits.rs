//! Limits, health and money on the running gateway (SPEC §4–5): concurrency leases held to the
//! end of a stream, RPM windows, circuit breakers, adaptive limits, provider quotas and quota
//! reservations under concurrency. Exact window and clock rules are unit-tested in
//! `aether-coord` with a manual clock; here the whole path is exercised.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::time::Duration;

use aether_domain::Usd;
use aether_domain::entities::{TraceStatus, UsageStatus};
use aether_testkit::{MockUpstream, Step, Usage};
use common::{TestApp, request_id};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5";

async fn claude(app: &TestApp, key: &str, stream: bool, max_tokens: u64) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({ "model": MODEL, "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "user", "content": "Hello"}] }),
        )
        .send()
        .await
        .unwrap()
}

/// One provider, one endpoint, keys `sk-a` (preferred) and `sk-b`; a user with a key.
async fn setup(mock: &MockUpstream) -> (TestApp, String, common::Route, String, String) {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let route = app
        .add_route(
            &admin,
            "anthropic",
            "CLAUDE",
            &mock.url(),
            &[("sk-a", 1), ("sk-b", 2)],
            MODEL,
            "claude-up",
            10,
        )
        .await;
    let (uid, key) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    (app, admin, route, uid, key)
}

async fn patch_key(app: &TestApp, admin: &str, key_id: &str, body: Value) {
    let (s, v) = app
        .put(&format!("/api/admin/endpoints/keys/{key_id}"), admin, body)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn key_health(app: &TestApp, admin: &str, key_id: &str) -> Value {
    let (s, v) = app
        .get(&format!("/api/admin/endpoints/keys/{key_id}/health"), admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_of_two_holds_for_the_whole_stream() {
    let mock = MockUpstream::start().await;
    let (app, admin, route, _, key) = setup(&mock).await;
    patch_key(
        &app,
        &admin,
        &route.key_ids[0],
        json!({ "max_concurrent": 2 }),
    )
    .await;
    // Streams that take ~1.5 s: the leases must be held until they end, not until they start.
    mock.set_default(Step::slow_stream(300));

    let mut open = Vec::new();
    for _ in 0..3 {
        let r = claude(&app, &key, true, 64).await;
        assert_eq!(r.status(), StatusCode::OK);
        let id = request_id(&r);
        let mut body = r.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(!first.is_empty(), "committed streams have started");
        open.push((id, body));
    }
    assert_eq!(
        (mock.request_count("sk-a"), mock.request_count("sk-b")),
        (2, 1),
        "the third stream moved to the next key"
    );
    assert_eq!(mock.max_concurrency("sk-a"), 2);
    let h = key_health(&app, &admin, &route.key_ids[0]).await;
    assert_eq!(h["in_flight"], 2, "both streams still hold their slots");

    let mut ids = Vec::new();
    for (id, mut body) in open {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
        ids.push(id);
    }
    let third = app.traces(&ids[2]).await;
    assert!(
        third.iter().any(|t| t.status == TraceStatus::Skipped
            && t.skip_reason.as_deref() == Some("upstream key at its concurrency limit")),
        "{third:?}"
    );
    // Slots come back when the streams end.
    for _ in 0..50 {
        if key_health(&app, &admin, &route.key_ids[0]).await["in_flight"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        key_health(&app, &admin, &route.key_ids[0]).await["in_flight"],
        0
    );
    mock.set_default(Step::ok());
    // (A caller without affinity: the first one is bound to sk-b by its last stream.)
    let (_, fresh) = app.gateway_key(&admin, "fresh@example.com").await;
    let r = claude(&app, &fresh, false, 64).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(mock.request_count("sk-a"), 3);

    // A client that walks away mid-stream frees its slot too.
    patch_key(
        &app,
        &admin,
        &route.key_ids[0],
        json!({ "max_concurrent": 1 }),
    )
    .await;
    mock.set_default(Step::slow_stream(300));
    let r = claude(&app, &fresh, true, 64).await;
    assert_eq!(mock.request_count("sk-a"), 4);
    assert_eq!(
        key_health(&app, &admin, &route.key_ids[0]).await["in_flight"],
        1
    );
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let mut freed = false;
    for _ in 0..100 {
        if key_health(&app, &admin, &route.key_ids[0]).await["in_flight"] == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "a disconnected stream gives its slot back");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_limits_answer_429_with_retry_after_or_skip_the_upstream() {
    let mock = MockUpstream::start().await;
    let (app, admin, route, uid, key) = setup(&mock).await;
    // The caller's own key: 3 per minute.
    let (s, list) = app
        .get(&format!("/api/admin/users/{uid}/api-keys"), &admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    let key_id = list
        .as_array()
        .or_else(|| list["items"].as_array())
        .unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = app
        .put(
            &format!("/api/admin/users/{uid}/api-keys/{key_id}"),
            &admin,
            json!({ "rate_limit": 3 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for _ in 0..3 {
        assert_eq!(claude(&app, &key, false, 64).await.status(), StatusCode::OK);
    }
    let r = claude(&app, &key, false, 64).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic dialect: {v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(
        mock.stats().total_requests,
        3,
        "the refused request never left"
    );

    // An upstream key's window: a full key is skipped, not waited for.
    let (app2_admin, app2_key) = (admin.clone(), {
        let (_, k) = app.gateway_key(&admin, "other@example.com").await;
        k
    });
    patch_key(
        &app,
        &app2_admin,
        &route.key_ids[0],
        json!({ "rate_limit": 1 }),
    )
    .await;
    let (a0, b0) = (mock.request_count("sk-a"), mock.request_count("sk-b"));
    assert_eq!(
        claude(&app, &app2_key, false, 64).await.status(),
        StatusCode::OK
    );
    let r = claude(&app, &app2_key, false, 64).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        (
            mock.request_count("sk-a") - a0,
            mock.request_count("sk-b") - b0
        ),
        (1, 1)
    );
    let traces = app.traces(&request_id(&r)).await;
    assert!(traces.iter().any(
        |t| t.skip_reason.as_deref() == Some("upstream key requests-per-minute limit reached")
    ));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_failures_ignores_client_errors_and_resets() {
    let mock = MockUpstream::start().await;
    let (app, admin, route, _, key) = setup(&mock).await;
    let a = route.key_ids[0].clone();
    // No cache affinity on the fallback key, so every request tries sk-a first.
    patch_key(
        &app,
        &admin,
        &route.key_ids[1],
        json!({ "cache_ttl_minutes": 0 }),
    )
    .await;

    // Client errors are the request's fault: returned as-is, never counted.
    mock.script("sk-a", std::iter::repeat_n(Step::status(400), 6));
    for _ in 0..6 {
        assert_eq!(
            claude(&app, &key, false, 64).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    let h = key_health(&app, &admin, &a).await;
    assert_eq!(h["breaker"]["state"], "closed", "{h}");
    assert_eq!(h["breaker"]["window_failures"], 0);
    assert_eq!(
        mock.request_count("sk-b"),
        0,
        "no failover on a bad request"
    );

    // Five server errors in a row open it; each request was still served by sk-b.
    mock.script("sk-a", std::iter::repeat_n(Step::status(500), 5));
    for _ in 0..5 {
        assert_eq!(claude(&app, &key, false, 64).await.status(), StatusCode::OK);
    }
    let h = key_health(&app, &admin, &a).await;
    assert_eq!(h["breaker"]["state"], "open", "{h}");
    assert!(h["breaker"]["health"].as_f64().unwrap() < 1.0);
    let before = mock.request_count("sk-a");
    let r = claude(&app, &key, false, 64).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        mock.request_count("sk-a"),
        before,
        "an open breaker gets no traffic"
    );
    let traces = app.traces(&request_id(&r)).await;
    assert!(
        traces
            .iter()
            .any(|t| t.skip_reason.as_deref() == Some("circuit breaker open"))
    );

    // The admin reset closes it; traffic returns.
    let (s, v) = app
        .post(
            &format!("/api/admin/endpoints/keys/{a}/breaker/reset"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["breaker"]["state"], "closed");
    let r = claude(&app, &key, false, 64).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(mock.request_count("sk-a"), before + 1);
    app.usage(&request_id(&r)).await; // written

    // The timeline counts both outcomes for the key.
    let (s, t) = app
        .get(
            &format!("/api/admin/health/timeline?hours=1&key_id={a}"),
            &admin,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let buckets = t["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 100);
    let failures: u64 = buckets
        .iter()
        .map(|b| b["failures"].as_u64().unwrap())
        .sum();
    let successes: u64 = buckets
        .iter()
        .map(|b| b["successes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        (failures, successes),
        (5, 1),
        "client 400s are not failures"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_key_learns_its_limit_from_concurrency_429s() {
    let mock = MockUpstream::start().await;
    let (app, admin, route, _, key) = setup(&mock).await;
    let a = route.key_ids[0].clone();
    patch_key(
        &app,
        &admin,
        &route.key_ids[1],
        json!({ "cache_ttl_minutes": 0 }),
    )
    .await;
    assert_eq!(key_health(&app, &admin, &a).await["learned_limit"], 50);
    // A 429 whose rate-limit headers show requests and tokens left: a concurrency limit.
    mock.script(
        "sk-a",
        [Step::status(429)
            .header("anthropic-ratelimit-requests-remaining", "40")
            .header("anthropic-ratelimit-tokens-remaining", "90000")],
    );
    assert_eq!(claude(&app, &key, false, 64).await.status(), StatusCode::OK);
    let h = key_health(&app, &admin, &a).await;
    assert_eq!(h["learned_limit"], 3, "max(3, ⌊1 × 0.85⌋): {h}");
    assert_eq!(h["limit_history"][0]["reason"], "concurrency_429");
    // A requests-per-minute 429 is not a concurrency signal.
    let b = route.key_ids[1].clone();
    mock.script(
        "sk-b",
        [Step::status(429).header("anthropic-ratelimit-requests-remaining", "0")],
    );
    mock.script("sk-a", [Step::status(500)]);
    claude(&app, &key, false, 64).await;
    assert_eq!(key_health(&app, &admin, &b).await["learned_limit"], 50);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_overshoot_a_quota_by_more_than_one_reservation() {
    let mock = MockUpstream::start().await;
    let (app, admin, _, uid, key) = setup(&mock).await;
    let (s, v) = app
        .put(
            &format!("/api/admin/users/{uid}"),
            &admin,
            json!({ "quota_usd": "1" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // $1 left. Each request: 10 input + 20,000 output tokens at $3 / $15 per 1M = $0.30003,
    // within its reservation (max_tokens 20,000). Replies are held 300 ms so all 50 overlap.
    mock.set_default(Step::delay_headers(300).usage(Usage {
        input: 10,
        output: 20_000,
        ..Usage::default()
    }));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = app.client.clone();
        let url = app.url.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{url}/v1/messages"))
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({ "model": MODEL, "max_tokens": 20_000,
                               "messages": [{"role": "user", "content": "Hello"}] }))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut ok = 0u32;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        if status == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("quota exhausted"),
                "{body}"
            );
        }
    }
    assert!(
        ok >= 3,
        "requests were admitted while the quota had room: {ok}"
    );
    // Every charge has reached the database.
    let used = loop {
        let (_, u) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
        let used: Usd = serde_json::from_value(u["used_usd"].clone()).unwrap();
        let per = "0.30003".parse::<Usd>().unwrap();
        if used == Usd::from_nanos(per.nanos() * i64::from(ok)) {
            break used;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The largest single reservation: this body's input estimate at the dearest input-side
    // price ($6 / 1M, the 1 h cache write) + 20,000 output tokens at $15 / 1M.
    let quota = Usd::dollars(1);
    let largest_reservation = "0.3005".parse::<Usd>().unwrap();
    assert!(
        used <= quota + largest_reservation,
        "used {used} overshoots {quota} by more than one reservation"
    );
    assert!(
        used >= quota,
        "admission stopped only when the quota was used up"
    );
    // Exhausted: the next request is refused before it leaves.
    let before = mock.stats().total_requests;
    let r = claude(&app, &key, false, 20_000).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(mock.stats().total_requests, before);
    let rec = app.usage(&request_id(&r)).await;
    assert_eq!(rec.status, UsageStatus::Failed);
    assert_eq!(rec.error_type.as_deref(), Some("quota_exhausted"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_provider_leaves_routing_until_its_quota_is_reset() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let first = app
        .add_route(
            &admin,
            "prepaid",
            "CLAUDE",
            &mock.url(),
            &[("sk-p", 1)],
            MODEL,
            "claude-up",
            1,
        )
        .await;
    app.add_route(
        &admin,
        "fallback",
        "CLAUDE",
        &mock.url(),
        &[("sk-f", 1)],
        MODEL,
        "claude-up",
        2,
    )
    .await;
    let (s, v) = app
        .put(
            &format!("/api/admin/providers/{}", first.provider_id),
            &admin,
            json!({ "quota_usd": "0.01", "quota_period_days": 30 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, key) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    mock.set_default(Step::ok().usage(Usage {
        input: 10,
        output: 1000,
        ..Usage::default()
    }));
    // $0.01503 actual on a $0.01 quota: exhausted after one request.
    assert_eq!(
        claude(&app, &key, false, 1000).await.status(),
        StatusCode::OK
    );
    let r = claude(&app, &key, false, 1000).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        (mock.request_count("sk-p"), mock.request_count("sk-f")),
        (1, 1)
    );
    let traces = app.traces(&request_id(&r)).await;
    assert!(
        traces
            .iter()
            .any(|t| t.skip_reason.as_deref() == Some("provider period quota exhausted"))
    );
    let (s, v) = app
        .patch(
            &format!("/api/admin/providers/{}/quota", first.provider_id),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A caller without cache affinity (the first one is bound to the fallback now).
    let (_, fresh) = app.gateway_key(&admin, "fresh@example.com").await;
    assert_eq!(
        claude(&app, &fresh, false, 1000).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        mock.request_count("sk-p"),
        2,
        "back in routing after the reset"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_key_is_full_the_client_gets_429_with_retry_after() {
    let mock = MockUpstream::start().await;
    let (app, admin, route, _, key) = setup(&mock).await;
    for id in &route.key_ids {
        patch_key(&app, &admin, id, json!({ "max_concurrent": 1 })).await;
    }
    mock.set_default(Step::slow_stream(300));
    let mut open = Vec::new();
    for _ in 0..2 {
        let r = claude(&app, &key, true, 64).await;
        assert_eq!(r.status(), StatusCode::OK);
        let mut body = r.bytes_stream();
        body.next().await.unwrap().unwrap();
        open.push(body);
    }
    assert_eq!(
        (mock.request_count("sk-a"), mock.request_count("sk-b")),
        (1, 1)
    );
    let r = claude(&app, &key, false, 64).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!(mock.stats().total_requests, 2, "nothing was sent upstream");
    drop(open);
    app.stop().await;
}
