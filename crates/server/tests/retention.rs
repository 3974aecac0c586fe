//! Retention end to end: the real application on SQLite (always its own leader) runs its
//! background jobs every 100 ms; rows aged by writing old timestamps straight through the
//! store disappear at their class's setting, young ones stay, compressed bodies still read
//! back through the admin API, and ended quota periods restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use aether_domain::entities::{
    AttemptTrace, AuditEntry, QuotaPeriod, TraceStatus, UsageBodies, UsageRecord, UsageStatus,
};
use aether_domain::pricing::{CostBreakdown, TokenUsage};
use aether_domain::{ApiFormat, AuditId, RequestId, Timestamp, TraceId, UserId};
use aether_server::leader::LeaderConfig;
use aether_store::db::Exec as _;
use aether_store::{AdminRepo as _, RollupRepo as _, UsageBatch, UsageRepo as _, UserRepo as _};
use common::{Opts, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DAY: i64 = 86_400;

fn days_ago(d: i64) -> Timestamp {
    Timestamp::now().plus_secs(-d * DAY)
}

fn record(status: UsageStatus, created_at: Timestamp) -> UsageRecord {
    UsageRecord {
        id: RequestId::new(),
        client_request_id: None,
        user_id: None,
        api_key_id: None,
        provider_id: None,
        endpoint_id: None,
        provider_key_id: None,
        global_model_id: None,
        requested_model: "retention-model".into(),
        upstream_model: None,
        api_format: ApiFormat::Claude,
        endpoint_api_format: None,
        is_stream: false,
        status,
        status_code: Some(200),
        error_type: None,
        error_message: None,
        tokens: TokenUsage::default(),
        cost: CostBreakdown::default(),
        unpriced: false,
        latency_ms: Some(5),
        ttfb_ms: None,
        client_ip: None,
        user_agent: None,
        created_at,
        updated_at: created_at,
    }
}

/// A trace whose UUIDv7 id was made at `started_at`, as the gateway makes them.
fn trace(request: RequestId, started_at: Timestamp) -> AttemptTrace {
    let ms = u64::try_from(started_at.millis()).unwrap();
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        ms / 1000,
        u32::try_from(ms % 1000).unwrap() * 1_000_000,
    );
    AttemptTrace {
        id: TraceId(uuid::Uuid::new_v7(ts)),
        request_id: request,
        candidate_index: 0,
        retry_index: 0,
        provider_id: None,
        endpoint_id: None,
        provider_key_id: None,
        status: TraceStatus::Failed,
        skip_reason: None,
        status_code: Some(502),
        error_type: Some("upstream_error".into()),
        error_message: None,
        latency_ms: Some(3),
        concurrency: None,
        conversion: None,
        started_at,
        finished_at: Some(started_at),
    }
}

fn bodies(tag: &str) -> UsageBodies {
    UsageBodies {
        request_headers: Some(json!({ "user-agent": tag })),
        request_body: Some(format!("{{\"prompt\":\"{tag} ✓\"}}").repeat(30)),
        response_headers: Some(json!({ "content-type": "application/json" })),
        response_body: Some(format!("{{\"reply\":\"{tag}\"}}").repeat(30)),
    }
}

/// Polls `check` until it holds (the leader's next job runs), or fails after 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_ages_out_each_class_and_restarts_quota_periods() {
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
    let store = app.store();

    // Usage: 40 days old (finished and in flight), and 1 day old.
    let old = record(UsageStatus::Completed, days_ago(40));
    let old_pending = record(UsageStatus::Pending, days_ago(40));
    let young = record(UsageStatus::Completed, days_ago(1));
    let compressed = record(UsageStatus::Completed, days_ago(3));
    let stripped = record(UsageStatus::Completed, days_ago(10));
    let (old_trace, new_trace) = (trace(young.id, days_ago(31)), trace(young.id, days_ago(2)));
    store
        .write_batch(&UsageBatch {
            records: vec![
                old.clone(),
                old_pending.clone(),
                young.clone(),
                compressed.clone(),
                stripped.clone(),
            ],
            traces: vec![old_trace, new_trace.clone()],
            bodies: vec![
                (compressed.id, bodies("compressed")),
                (stripped.id, bodies("stripped")),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    // Their hourly and daily rollups (as the rollup job writes them).
    store
        .rollup_hours(days_ago(41), Timestamp::now())
        .await
        .unwrap();
    store
        .rollup_days(days_ago(41), Timestamp::now())
        .await
        .unwrap();
    for (id, age) in [(compressed.id, 3), (stripped.id, 10)] {
        store
            .db()
            .clone()
            .execute(
                "UPDATE usage_bodies SET created_at = $1 WHERE request_id = $2".into(),
                aether_store::args![days_ago(age).millis(), id.to_string()],
            )
            .await
            .unwrap();
    }
    let old_audit = AuditEntry {
        id: AuditId::new(),
        actor_id: None,
        actor_email: None,
        action: "retention.test".into(),
        target_type: None,
        target_id: None,
        details: json!({}),
        ip: None,
        created_at: days_ago(400),
    };
    store.insert_audit(&old_audit).await.unwrap();

    // A user whose daily period began two days ago, with spend in it.
    let (s, u) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "daily@example.com", "username": "daily", "password": "long-enough-pw-1",
                    "quota_usd": "10" }),
        )
        .await;
    assert!(s.is_success(), "{s} {u}");
    let uid: UserId = u["id"].as_str().unwrap().parse().unwrap();
    let mut user = store.get_user(uid).await.unwrap().unwrap();
    user.quota_period = QuotaPeriod::Daily;
    user.period_started_at = QuotaPeriod::Daily.period_start(days_ago(2));
    store.update_user(&user).await.unwrap();
    // Spend counters only move atomically (billing), never through update_user: set it here.
    store
        .db()
        .clone()
        .execute(
            "UPDATE users SET used_usd = $1 WHERE id = $2".into(),
            aether_store::args![
                "2.5".parse::<aether_domain::Usd>().unwrap().nanos(),
                uid.to_string()
            ],
        )
        .await
        .unwrap();

    let detail = |id: RequestId| {
        let app = &app;
        let admin = admin.clone();
        async move { app.get(&format!("/api/admin/usage/{id}"), &admin).await }
    };

    // Defaults: traces 30 days, audit 365, bodies 7 (compressed after 1), headers 30.
    eventually("the old trace and audit entry go", || async {
        let (_, d) = detail(young.id).await;
        let traces = d["traces"].as_array().cloned().unwrap_or_default();
        store
            .get_usage_bodies(stripped.id)
            .await
            .unwrap()
            .unwrap()
            .request_body
            .is_none()
            && traces.len() == 1
            && traces[0]["id"] == json!(new_trace.id.to_string())
            && store
                .list_audit(&Default::default(), aether_store::Page::default())
                .await
                .unwrap()
                .items
                .iter()
                .all(|e| e.id != old_audit.id)
    })
    .await;
    let (s, d) = detail(stripped.id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        d["bodies"]["request_headers"],
        json!({ "user-agent": "stripped" })
    );
    assert_eq!(d["bodies"]["request_body"], Value::Null, "{d}");
    let (_, d) = detail(compressed.id).await;
    let want = serde_json::to_value(bodies("compressed")).unwrap();
    assert_eq!(d["bodies"], want, "a compressed body reads back identical");
    let raw = store
        .db()
        .clone()
        .fetch_optional(
            "SELECT request_body FROM usage_bodies WHERE request_id = $1".into(),
            aether_store::args![compressed.id.to_string()],
        )
        .await
        .unwrap()
        .unwrap()
        .opt_text("request_body")
        .unwrap();
    assert_ne!(
        raw.as_ref(),
        bodies("compressed").request_body.as_ref(),
        "stored compressed"
    );

    // Usage is kept 365 days by default; at 30 the 40-day-old finished record goes.
    assert_eq!(detail(old.id).await.0, StatusCode::OK);
    let (s, v) = app
        .put(
            "/api/admin/system/configs/retention_days_usage",
            &admin,
            json!({ "value": 30 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    eventually("the old usage record goes", || async {
        detail(old.id).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    // An in-flight record this old is one whose instance died: the stale sweep of the same
    // job run fails it first (the store tests show in-flight rows themselves are never
    // deleted), so it ages out with the others.
    assert_eq!(detail(old_pending.id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(detail(young.id).await.0, StatusCode::OK);
    // The hourly rollups of days past the usage retention go; the daily ones stay.
    let rollups = |period: &'static str, older: bool| {
        let store = store.clone();
        async move {
            let sql = if older {
                "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n FROM usage_rollups \
                 WHERE period = $1 AND bucket_start < $2"
            } else {
                "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n FROM usage_rollups \
                 WHERE period = $1 AND bucket_start >= $2"
            };
            store
                .db()
                .clone()
                .fetch_optional(
                    sql.into(),
                    aether_store::args![period, days_ago(30).millis()],
                )
                .await
                .unwrap()
                .unwrap()
                .i64("n")
                .unwrap()
        }
    };
    eventually("the old hourly rollups go", || async {
        rollups("hour", true).await == 0
    })
    .await;
    assert!(rollups("hour", false).await >= 3, "young hours stay");
    assert_eq!(
        rollups("day", true).await,
        2,
        "old days stay: the finished and the pending record"
    );

    // The user's period ended: spend back to 0, the period starts today (each job run
    // resets it; the test's own write above may land after the first one).
    eventually("the user's daily period restarts", || async {
        let (_, got) = app.get(&format!("/api/admin/users/{uid}"), &admin).await;
        let user = store.get_user(uid).await.unwrap().unwrap();
        got["used_usd"] == json!("0")
            && user.period_started_at == QuotaPeriod::Daily.period_start(Timestamp::now())
    })
    .await;
    app.stop().await;
}
