//! Stats rollups end to end: the real application on PostgreSQL (leader by advisory lock,
//! jobs every 100 ms), real gateway requests to the mock upstream; the rolled-up figures
//! (requests, tokens, cost) equal the usage records, stay identical when the job runs again,
//! and follow new requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;
mod console_kit;
mod proc_kit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_domain::Timestamp;
use aether_domain::entities::{UsageRecord, UsageStatus};
use aether_server::jobs::rollups::roll;
use aether_server::leader::LeaderConfig;
use aether_store::UsageBatch;
use aether_store::db::Exec as _;
use aether_store::rollups::{Granularity, RollupQuery, RollupRow};
use aether_store::{Backend, DynStore, RollupRepo as _, UsageFilter, UsageRepo as _, UsageSummary};
use aether_testkit::{MockUpstream, Step, Usage};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Opts, TestApp};
use reqwest::StatusCode;
use serde_json::json;

const MODEL: &str = "rollup-model";
const SECRET: &str = "sk-rollup-upstream";
const HOUR: i64 = 3600;

/// A Claude request through the gateway; returns its settled usage record.
async fn request(app: &TestApp, mock: &MockUpstream, key: &str, usage: Usage) -> UsageRecord {
    mock.script(SECRET, [Step::ok().text("Rolled.").usage(usage)]);
    let resp = app
        .client
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({ "model": MODEL, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "Hello"}] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-aether-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = resp.text().await.unwrap();
    app.usage(&id).await
}

/// Hours around now: every request of the test falls in them.
fn window() -> (Timestamp, Timestamp) {
    let now = Timestamp::now();
    (now.plus_secs(-2 * HOUR), now.plus_secs(2 * HOUR))
}

/// The same figures straight from the usage records, over whole hours.
async fn direct(app: &TestApp) -> UsageSummary {
    let (since, until) = window();
    app.store()
        .usage_summary(&UsageFilter {
            since: Some(Granularity::Hour.floor(since)),
            until: Some(Granularity::Hour.ceil(until)),
            ..UsageFilter::default()
        })
        .await
        .unwrap()
}

async fn rolled(app: &TestApp, g: Granularity) -> UsageSummary {
    let (since, until) = window();
    app.store()
        .rollup_summary(&RollupQuery::new(g, since, until))
        .await
        .unwrap()
}

async fn rows(app: &TestApp) -> (Vec<RollupRow>, Vec<RollupRow>) {
    let (since, until) = window();
    let s = app.store();
    (
        s.list_rollups(Granularity::Hour, since, until)
            .await
            .unwrap(),
        s.list_rollups(
            Granularity::Day,
            since.plus_secs(-24 * HOUR),
            until.plus_secs(24 * HOUR),
        )
        .await
        .unwrap(),
    )
}

/// The day rollups over every day the window touches.
async fn rolled_days(app: &TestApp) -> UsageSummary {
    let (since, until) = window();
    app.store()
        .rollup_summary(&RollupQuery::new(
            Granularity::Day,
            since.plus_secs(-24 * HOUR),
            until.plus_secs(24 * HOUR),
        ))
        .await
        .unwrap()
}

/// Totals of the records themselves, summed here.
fn sum(records: &[UsageRecord]) -> (u64, u64, u64, u64, i64, i64) {
    records.iter().fold((0, 0, 0, 0, 0, 0), |a, r| {
        (
            a.0 + 1,
            a.1 + r.tokens.input,
            a.2 + r.tokens.output,
            a.3 + r.tokens.cache_read,
            a.4 + r.cost.total.nanos(),
            a.5 + r.cost.actual_total.nanos(),
        )
    })
}

fn figures(s: &UsageSummary) -> (u64, u64, u64, u64, i64, i64) {
    (
        s.requests,
        s.input_tokens,
        s.output_tokens,
        s.cache_read_tokens,
        s.cost.nanos(),
        s.actual_cost.nanos(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_follow_real_requests_and_reruns_change_nothing() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        leader: Some(LeaderConfig {
            ttl: Duration::from_millis(1500),
            renew_every: Duration::from_millis(100),
            jobs_every: Duration::from_millis(100),
        }),
        ..Default::default()
    })
    .await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "rollup-provider",
        "CLAUDE",
        &mock.url(),
        &[(SECRET, 50)],
        MODEL,
        "up-rollup",
        10,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "rollups@example.com").await;
    app.wait_for_model(&key, MODEL).await;

    let mut records = Vec::new();
    for (input, output, cache_read) in [(1000, 200, 0), (20_000, 1500, 300), (7, 3, 40)] {
        let usage = Usage {
            input,
            output,
            cache_read,
            ..Usage::default()
        };
        records.push(request(&app, &mock, &key, usage).await);
    }
    assert!(
        records
            .iter()
            .all(|r| r.status == UsageStatus::Completed && !r.cost.total.is_zero())
    );

    // The leader's job runs by itself (it sets the watermark); the requests' hour has not
    // settled yet, so they are read live until it has.
    let started = Instant::now();
    while app.store().rollup_watermark().await.unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the leader never ran the rollup job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Once their hour has settled (two hours later), a run rolls them up; runs after it,
    // and an explicit re-run of the same hours, write the same rows.
    let store: DynStore = Arc::new(app.store().clone());
    let later = Timestamp::now().plus_secs(2 * HOUR);
    roll(&store, 600, later).await.unwrap();
    let first = rows(&app).await;
    assert!(!first.0.is_empty() && !first.1.is_empty());
    roll(&store, 600, later).await.unwrap();
    assert_eq!(rows(&app).await, first, "a re-run writes the same rows");
    let rerun = || async {
        let (since, until) = window();
        store.rollup_hours(since, until).await.unwrap();
        store.rollup_days(since, until).await.unwrap();
    };
    rerun().await;
    assert_eq!(
        rows(&app).await,
        first,
        "an explicit re-run writes the same rows"
    );
    let expected = direct(&app).await;
    assert_eq!(figures(&expected), sum(&records));
    assert_eq!(rolled(&app, Granularity::Hour).await, expected);
    assert_eq!(rolled_days(&app).await, expected);

    // More requests in hours already rolled up (only a re-run takes such late records in).
    for (input, output) in [(50, 5), (60, 6)] {
        let usage = Usage {
            input,
            output,
            ..Usage::default()
        };
        records.push(request(&app, &mock, &key, usage).await);
    }
    rerun().await;
    let expected = direct(&app).await;
    assert_eq!(expected.requests, 5);
    assert_eq!(figures(&expected), sum(&records));
    assert_eq!(rolled(&app, Granularity::Hour).await, expected);
    assert_eq!(rolled_days(&app).await, expected);
    let again = rows(&app).await;
    rerun().await;
    assert_eq!(rows(&app).await, again);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_finished_days_from_the_rollups_and_today_from_the_records() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start_with(Opts {
        leader: Some(LeaderConfig {
            ttl: Duration::from_millis(1500),
            renew_every: Duration::from_millis(100),
            jobs_every: Duration::from_millis(100),
        }),
        ..Default::default()
    })
    .await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "rollup-provider",
        "CLAUDE",
        &mock.url(),
        &[(SECRET, 50)],
        MODEL,
        "up-rollup",
        10,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "dash@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    let usage = Usage {
        input: 10,
        output: 5,
        ..Usage::default()
    };
    let today = request(&app, &mock, &key, usage).await;

    // A request of yesterday, rolled up (an explicit re-run of its day, as after a restore),
    // then gone from the records (as retention would delete it): only the rollups know it.
    let day_start = Granularity::Day.floor(Timestamp::now());
    let mut old = today.clone();
    old.id = aether_domain::RequestId::new();
    old.created_at = day_start.plus_secs(-12 * HOUR);
    old.updated_at = old.created_at;
    old.cost.total = aether_domain::Usd::from_nanos(4_200_000_000);
    let s = app.store();
    s.write_batch(&UsageBatch {
        records: vec![old.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    s.rollup_hours(old.created_at, day_start).await.unwrap();
    s.rollup_days(old.created_at, day_start).await.unwrap();
    let gone = s
        .db()
        .clone()
        .execute(
            "DELETE FROM usage_records WHERE id = $1".into(),
            aether_store::args![old.id.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(gone, 1);

    let browser = console_kit::sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (status, html) = console_kit::page(&app, &browser, "/admin").await;
    assert_eq!(status, StatusCode::OK);
    let yesterday = old.created_at.to_datetime().date();
    let row = format!(
        "<td>{:04}-{:02}-{:02}</td><td class=\"num\">1</td>",
        yesterday.year(),
        u8::from(yesterday.month()),
        yesterday.day()
    );
    assert!(html.contains(&row), "yesterday from the rollups: {row}");
    assert!(
        html.contains("<span>Requests (30 days)</span><strong>2</strong>"),
        "today's request from the records, yesterday's from the rollups"
    );
    assert!(html.contains("$4.2"), "yesterday's cost is shown");

    // The API reads the same way when asked for whole days; by default it sums the records
    // over the exact bounds (where yesterday's request no longer exists).
    let since = urlencoding(&day_start.plus_secs(-HOUR).to_string());
    let (status, exact) = app
        .get(&format!("/api/admin/usage/summary?since={since}"), &admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{exact}");
    assert_eq!(exact["requests"], 1, "records only: {exact}");
    let (status, days) = app
        .get(
            &format!("/api/admin/usage/summary?since={since}&whole_days=true"),
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{days}");
    assert_eq!(days["requests"], 2, "yesterday from the rollups: {days}");
    assert_eq!(
        days["cost"]
            .as_str()
            .unwrap()
            .parse::<aether_domain::Usd>()
            .unwrap(),
        old.cost.total + today.cost.total
    );
    let (status, per_day) = app
        .get(
            &format!("/api/admin/usage/breakdown?by=day&since={since}&whole_days=true"),
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{per_day}");
    let per_day: Vec<(String, u64)> = per_day
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_day.len(), 2, "{per_day:?}");
    assert!(per_day.iter().all(|(_, n)| *n == 1), "{per_day:?}");

    // A user's own whole-day summary reads the rollups scoped to them: the owner sees both
    // requests, another account (the admin acting as a user) none.
    let mine = format!("/api/users/me/usage/summary?since={since}&whole_days=true");
    let owner = app.login("dash@example.com", "user-password-1").await;
    let (status, own) = app
        .get(&mine, owner["access_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(
        own["requests"], 2,
        "the owner's rolled-up day counts: {own}"
    );
    let (status, other) = app.get(&mine, &admin).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_eq!(
        other["requests"], 0,
        "another account's rollups stay out: {other}"
    );
    app.stop().await;
}

/// `+` and `:` of an RFC 3339 time, escaped for a query string.
fn urlencoding(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// The operator's tools: `aether rollup --days N` rebuilds recent rollups from the records
/// (here: requests the leader's minute job has not rolled up yet), and `aether jobs` run
/// afterwards changes nothing — both are the same idempotent recomputation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rebuilds_rollups_and_a_jobs_run_changes_nothing() {
    let mock = MockUpstream::start().await;
    let mut app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "rollup-cli",
        "CLAUDE",
        &mock.url(),
        &[(SECRET, 50)],
        MODEL,
        "up-rollup",
        10,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "rollup-cli@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    let mut records = Vec::new();
    for input in [100, 2000] {
        let usage = Usage {
            input,
            output: 50,
            ..Usage::default()
        };
        records.push(request(&app, &mock, &key, usage).await);
    }
    // Stop the server (its leader would roll up at the next minute); the database stays.
    app.shutdown().await;
    let before = rolled(&app, Granularity::Hour).await;
    assert!(
        before.requests < 2,
        "the minute job has not rolled these up yet"
    );

    let cli = |args: &[&str]| {
        let dir = proc_kit::tmpdir("rollup-cli");
        let out = proc_kit::aether()
            .arg("--data-dir")
            .arg(&dir)
            .args(["--database-url", &app.db.as_ref().unwrap().url])
            .args(args)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let said = cli(&["rollup", "--days", "1"]);
    assert!(
        said.contains("rebuilt the rollups of the last 1 days"),
        "{said}"
    );
    let rebuilt = rolled(&app, Granularity::Hour).await;
    assert_eq!(
        figures(&rebuilt),
        sum(&records),
        "rollups equal the records"
    );
    assert_eq!(figures(&rebuilt), figures(&direct(&app).await));
    assert_eq!(figures(&rolled_days(&app).await), sum(&records));
    let stored = rows(&app).await;

    let said = cli(&["jobs"]);
    assert!(said.contains("background jobs ran"), "{said}");
    assert_eq!(
        rows(&app).await,
        stored,
        "a jobs run rewrites the same rows"
    );
    app.stop().await;
}
