//! Operations: the Prometheus `/metrics` exposition after real gateway traffic, structured
//! JSON logs of the real binary, and `aether backup`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;
mod proc_kit;

use std::time::Duration;

use aether_store::testing::TestStore;
use aether_store::{Backend, UserRepo as _};
use aether_testkit::{MockUpstream, Step, Usage};
use common::{TestApp, request_id};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5";

async fn claude(app: &TestApp, key: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({ "model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}] }))
        .send()
        .await
        .unwrap()
}

async fn scrape(app: &TestApp) -> String {
    let r = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(str::to_string)
    })
}

fn value(text: &str, series: &str) -> u64 {
    sample(text, series)
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_failovers_errors_tokens_cost_and_breakers() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.add_route(
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
    // sk-a first, always (no affinity reordering).
    let (s, _) = app
        .put(
            "/api/admin/system/configs/scheduling_mode",
            &admin,
            json!({ "value": "fixed_order" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, key) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&key, MODEL).await;

    let before = scrape(&app).await;
    assert_eq!(
        value(&before, "aether_breaker_keys{state=\"closed\"}"),
        2,
        "{before}"
    );
    assert_eq!(value(&before, "aether_breaker_keys{state=\"open\"}"), 0);
    assert!(sample(&before, "aether_requests_total{").is_none());

    let used = Usage {
        input: 1000,
        output: 200,
        cache_read: 100,
        cache_creation_5m: 50,
        ..Usage::default()
    };
    // 1: a success on sk-a.
    mock.script("sk-a", [Step::ok().usage(used)]);
    let r1 = claude(&app, &key).await;
    assert_eq!(r1.status(), StatusCode::OK);
    // 2: sk-a answers 500, sk-b serves it.
    mock.script("sk-a", [Step::status(500)]);
    mock.script("sk-b", [Step::ok().usage(used)]);
    let r2 = claude(&app, &key).await;
    assert_eq!(r2.status(), StatusCode::OK);
    assert_eq!(mock.request_count("sk-b"), 1);
    // 3: both keys are rate limited: the client gets 429.
    mock.script("sk-a", [Step::status(429)]);
    mock.script("sk-b", [Step::status(429)]);
    let r3 = claude(&app, &key).await;
    assert_eq!(r3.status(), StatusCode::TOO_MANY_REQUESTS);

    let mut cost = 0i64;
    for r in [&r1, &r2] {
        let rec = app.usage(&request_id(r)).await;
        cost += rec.cost.total.nanos();
    }
    assert!(cost > 0);

    let m = scrape(&app).await;
    let ok =
        "aether_requests_total{api_format=\"CLAUDE\",status_class=\"2xx\",outcome=\"success\"}";
    assert_eq!(value(&m, ok), 2, "{m}");
    assert_eq!(
        value(
            &m,
            "aether_requests_total{api_format=\"CLAUDE\",status_class=\"4xx\",outcome=\"upstream_exhausted\"}"
        ),
        1,
        "{m}"
    );
    assert_eq!(
        value(&m, "aether_failovers_total{api_format=\"CLAUDE\"}"),
        2
    );
    assert_eq!(value(&m, "aether_upstream_errors_total{class=\"5xx\"}"), 1);
    assert_eq!(value(&m, "aether_upstream_errors_total{class=\"429\"}"), 2);
    for (kind, n) in [
        ("input", 2000),
        ("output", 400),
        ("cache_read", 200),
        ("cache_write", 100),
    ] {
        assert_eq!(
            value(
                &m,
                &format!("aether_tokens_total{{model=\"{MODEL}\",kind=\"{kind}\"}}")
            ),
            n,
            "{kind}"
        );
    }
    assert_eq!(
        value(
            &m,
            &format!("aether_cost_nanousd_total{{model=\"{MODEL}\"}}")
        ) as i64,
        cost,
        "the cost counter is the exact sum of the records"
    );

    // Histograms: cumulative buckets ending in +Inf = count; every request took < 30 s.
    let lat = "aether_request_duration_seconds";
    let mut last = 0;
    let mut buckets = 0;
    for l in m
        .lines()
        .filter(|l| l.starts_with(&format!("{lat}_bucket{{api_format=\"CLAUDE\"")))
    {
        let n: u64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= last, "cumulative: {l}");
        last = n;
        buckets += 1;
    }
    assert_eq!(buckets, 16, "15 bounds and +Inf");
    assert_eq!(
        value(
            &m,
            &format!("{lat}_bucket{{api_format=\"CLAUDE\",le=\"+Inf\"}}")
        ),
        3
    );
    assert_eq!(
        value(
            &m,
            &format!("{lat}_bucket{{api_format=\"CLAUDE\",le=\"30\"}}")
        ),
        3
    );
    assert_eq!(
        value(&m, &format!("{lat}_count{{api_format=\"CLAUDE\"}}")),
        3
    );
    assert!(sample(&m, &format!("{lat}_sum{{api_format=\"CLAUDE\"}}")).is_some());
    assert_eq!(
        value(
            &m,
            "aether_ttfb_seconds_bucket{api_format=\"CLAUDE\",le=\"+Inf\"}"
        ),
        2,
        "only answered requests have a first byte"
    );
    assert!(m.contains("# TYPE aether_request_duration_seconds histogram"));

    // Gauges read at scrape time.
    app.usage(&request_id(&r3)).await;
    let depth = value(&m, "aether_usage_queue_depth");
    assert!(depth < 100, "{depth}");
    assert!(m.contains("# TYPE aether_usage_journal_outstanding gauge"));
    assert_eq!(value(&m, "aether_usage_journal_errors_total"), 0);
    // Once the writer has committed, nothing is left for a crash to replay.
    let mut outstanding = u64::MAX;
    for _ in 0..100 {
        outstanding = value(&scrape(&app).await, "aether_usage_journal_outstanding");
        if outstanding == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(outstanding, 0, "the journal empties as batches commit");
    assert_eq!(value(&m, "aether_leases_held{scope=\"provider_key\"}"), 0);
    assert_eq!(value(&m, "aether_leases_held{scope=\"endpoint\"}"), 0);

    // Two more failures on sk-a: 4 of its last 5 results failed, so its breaker opens.
    for _ in 0..2 {
        mock.script("sk-a", [Step::status(500)]);
        assert_eq!(claude(&app, &key).await.status(), StatusCode::OK);
    }
    let m = scrape(&app).await;
    assert_eq!(value(&m, "aether_breaker_keys{state=\"open\"}"), 1, "{m}");
    assert_eq!(value(&m, "aether_breaker_keys{state=\"closed\"}"), 1);
    assert_eq!(value(&m, "aether_upstream_errors_total{class=\"5xx\"}"), 3);
    assert!(
        !m.contains(&key) && !m.contains("sk-a") && !m.contains("dev@example.com"),
        "no secrets or user data in labels"
    );
    app.stop().await;
}

// ---------------------------------------------------------------- the real binary ----------

use proc_kit::{aether, start, tmpdir};

#[tokio::test]
async fn json_logs_carry_request_id_method_path_status_and_latency_and_no_secrets() {
    let dir = tmpdir("log");
    let s = start(&dir, &["--log-format", "json"], &[]);
    let client = reqwest::Client::new();
    // A client request with a (wrong) key in a header and in the query string.
    let r = client
        .post(format!("{}/v1/messages?key=sk-query-secret-123", s.url))
        .header("x-api-key", "sk-header-secret-456")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({ "model": MODEL, "max_tokens": 8, "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let gw_id = request_id(&r);
    // A management request without a token.
    let r = client
        .get(format!("{}/api/users/me", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let api_id = request_id(&r);
    assert_ne!(gw_id, api_id);
    let lines = s.stop();

    let events: Vec<Value> = lines
        .iter()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let find = |id: &str| {
        events
            .iter()
            .find(|e| e["request_id"] == id)
            .unwrap_or_else(|| panic!("no log line for {id}: {lines:#?}"))
            .clone()
    };
    let g = find(&gw_id);
    assert_eq!(g["method"], "POST");
    assert_eq!(g["path"], "/v1/messages");
    assert_eq!(g["status"], 401);
    assert!(g["latency_ms"].is_u64(), "{g}");
    assert_eq!(g["level"], "INFO");
    assert_eq!(g["ip"], "127.0.0.1");
    assert!(g["timestamp"].is_string());
    let a = find(&api_id);
    assert_eq!(a["method"], "GET");
    assert_eq!(a["path"], "/api/users/me");
    assert_eq!(a["status"], 401);
    let all = lines.join("\n");
    assert!(
        !all.contains("sk-query-secret-123") && !all.contains("sk-header-secret-456"),
        "secrets never reach the log: {all}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn backup_of_a_running_sqlite_server_opens_with_its_data() {
    let dir = tmpdir("backup");
    let s = start(&dir, &[], &[]);
    let backup = dir.join("copy.db");
    let out = aether()
        .arg("--data-dir")
        .arg(&dir)
        .args(["backup", "--out", backup.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop();
    let copy = aether_store::SqlStore::open(
        &format!("sqlite://{}", backup.display()),
        &aether_store::ConnectOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(copy.count_users(None).await.unwrap(), 1, "the first admin");
    assert!(
        copy.find_user_by_login("admin@aether.local")
            .await
            .unwrap()
            .is_some()
    );
    copy.close().await;

    // An existing file is never overwritten.
    let again = aether()
        .arg("--data-dir")
        .arg(&dir)
        .args(["backup", "--out", backup.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn backup_refuses_postgresql_and_points_to_pg_dump() {
    let db = TestStore::new(Backend::Postgres).await.unwrap();
    let dir = tmpdir("pg");
    let out = aether()
        .arg("--data-dir")
        .arg(&dir)
        .args(["--database-url", &db.url])
        .args(["backup", "--out"])
        .arg(dir.join("x.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!dir.join("x.db").exists());
    db.teardown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_subject_to_ip_rules() {
    let app = TestApp::start_with(common::Opts {
        trusted_proxies: 1,
        ..Default::default()
    })
    .await;
    let admin = app.admin_token().await;
    let (s, r) = app
        .post(
            "/api/admin/security/ip-rules",
            &admin,
            json!({ "cidr": "203.0.113.0/24", "action": "block", "note": "scraper" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let from = |ip: &'static str| {
        let c = app.client.clone();
        let url = format!("{}/metrics", app.url);
        async move {
            c.get(url)
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(from("203.0.113.9").await, StatusCode::FORBIDDEN);
    assert_eq!(from("198.51.100.1").await, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_gauge_shows_a_request_in_flight() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "anthropic",
        "CLAUDE",
        &mock.url(),
        &[("sk-a", 1)],
        MODEL,
        "claude-up",
        10,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    mock.script("sk-a", [Step::delay_headers(1_500)]);
    let app = std::sync::Arc::new(app);
    let a = app.clone();
    let k = key.clone();
    let slow = tokio::spawn(async move { claude(&a, &k).await.status() });
    let mut seen = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        seen = value(
            &scrape(&app).await,
            "aether_leases_held{scope=\"provider_key\"}",
        );
        if seen == 1 {
            break;
        }
    }
    assert_eq!(seen, 1, "the in-flight request holds its key's lease");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(
        value(
            &scrape(&app).await,
            "aether_leases_held{scope=\"provider_key\"}"
        ),
        0,
        "released when it ends"
    );
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}
