//! Retention per data class and quota period resets, run identically against SQLite and
//! PostgreSQL (each test on a fresh database, as in `contract.rs`). Rows are aged by writing
//! old timestamps (and, for traces, ids of an old time) straight into the tables.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

#[macro_use]
mod backends;

use aether_domain::entities::*;
use aether_domain::pricing::{CostBreakdown, TokenUsage};
use aether_domain::*;
use aether_store::db::Exec as _;
use aether_store::retention::QuotaResets;
use aether_store::*;
use serde_json::json;

contract!(
    bodies_compress_then_drop_and_headers_age_on_their_own,
    headers_can_go_before_bodies,
    usage_traces_and_audit_age_at_their_own_cutoffs,
    every_step_is_bounded_by_its_batch,
    hourly_rollups_go_an_hour_at_a_time_and_days_stay,
    user_quota_periods_reset_once_at_the_boundary,
    provider_quota_periods_reset_on_their_own_grid,
);

const DAY: i64 = 86_400;

fn days_ago(d: i64) -> Timestamp {
    Timestamp::now().plus_secs(-d * DAY)
}

fn t(x: &str) -> Timestamp {
    Timestamp::parse_rfc3339(x).unwrap()
}

async fn sql(
    s: &SqlStore,
    q: &'static str,
    a: Vec<aether_store::db::Arg>,
) -> Vec<aether_store::db::Row> {
    s.db().clone().fetch_all(q.into(), a).await.unwrap()
}

fn bodies(tag: &str) -> UsageBodies {
    UsageBodies {
        request_headers: Some(json!({"x-api-key": "sk-a…bcd", "tag": tag})),
        request_body: Some(format!("{{\"model\":\"x\",\"tag\":\"{tag}\"}}").repeat(20)),
        response_headers: Some(json!({"content-type": "text/event-stream"})),
        response_body: Some(format!("data: {{\"delta\":\"é ✓ {tag}\"}}\n\n").repeat(20)),
    }
}

/// Stores bodies for a new request as if written `age` days ago.
async fn stored_bodies(s: &SqlStore, tag: &str, age: i64) -> (RequestId, UsageBodies) {
    let id = RequestId::new();
    let b = bodies(tag);
    s.write_batch(&UsageBatch {
        bodies: vec![(id, b.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    sql(
        s,
        "UPDATE usage_bodies SET created_at = $1 WHERE request_id = $2",
        args![days_ago(age).millis(), id.to_string()],
    )
    .await;
    (id, b)
}

async fn raw_request_body(s: &SqlStore, id: RequestId) -> Option<String> {
    sql(
        s,
        "SELECT request_body FROM usage_bodies WHERE request_id = $1",
        args![id.to_string()],
    )
    .await
    .first()
    .and_then(|r| r.opt_text("request_body").unwrap())
}

/// The job's order (drop, then compress what is left) at the default settings: compress
/// after 1 day, bodies 7 days, headers 30 days.
async fn run_defaults(s: &SqlStore) -> u64 {
    s.drop_bodies(days_ago(7), 1000).await.unwrap()
        + s.drop_headers(days_ago(30), 1000).await.unwrap()
        + s.compress_bodies(days_ago(1), 1000).await.unwrap()
}

async fn bodies_compress_then_drop_and_headers_age_on_their_own(s: &SqlStore) {
    let (fresh, fresh_b) = stored_bodies(s, "fresh", 0).await;
    let (aged, aged_b) = stored_bodies(s, "aged", 2).await;
    let (old, old_b) = stored_bodies(s, "old", 10).await;
    let (ancient, _) = stored_bodies(s, "ancient", 40).await;

    assert_eq!(
        run_defaults(s).await,
        4,
        "old + ancient dropped, ancient deleted, aged compressed"
    );

    assert_eq!(s.get_usage_bodies(fresh).await.unwrap().unwrap(), fresh_b);
    assert_eq!(
        s.get_usage_bodies(aged).await.unwrap().unwrap(),
        aged_b,
        "a compressed body reads back identical"
    );
    let raw = raw_request_body(s, aged).await.unwrap();
    assert_ne!(
        Some(&raw),
        aged_b.request_body.as_ref(),
        "stored compressed"
    );
    assert!(raw.len() < aged_b.request_body.as_ref().unwrap().len());
    assert_eq!(
        s.get_usage_bodies(old).await.unwrap().unwrap(),
        UsageBodies {
            request_body: None,
            response_body: None,
            ..old_b
        },
        "bodies past 7 days go, headers (30 days) stay"
    );
    assert!(
        s.get_usage_bodies(ancient).await.unwrap().is_none(),
        "nothing left: row deleted"
    );

    assert_eq!(run_defaults(s).await, 0, "a second run finds nothing to do");
    assert_eq!(s.get_usage_bodies(aged).await.unwrap().unwrap(), aged_b);

    // Rewriting a compressed row stores (and reads) plain text again.
    let again = bodies("rewritten");
    s.write_batch(&UsageBatch {
        bodies: vec![(aged, again.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.get_usage_bodies(aged).await.unwrap().unwrap(), again);
}

async fn headers_can_go_before_bodies(s: &SqlStore) {
    let (id, b) = stored_bodies(s, "short-headers", 5).await;
    let (young, young_b) = stored_bodies(s, "young", 1).await;
    // Headers kept 3 days, bodies 7, compressed after 2.
    assert_eq!(s.drop_bodies(days_ago(7), 100).await.unwrap(), 0);
    assert_eq!(s.drop_headers(days_ago(3), 100).await.unwrap(), 1);
    assert_eq!(s.compress_bodies(days_ago(2), 100).await.unwrap(), 1);
    assert_eq!(
        s.get_usage_bodies(id).await.unwrap().unwrap(),
        UsageBodies {
            request_headers: None,
            response_headers: None,
            ..b
        },
        "headers gone, compressed bodies still read back"
    );
    assert_eq!(s.get_usage_bodies(young).await.unwrap().unwrap(), young_b);
    // Later the bodies expire too: nothing is left, the row goes.
    assert_eq!(s.drop_bodies(days_ago(4), 100).await.unwrap(), 1);
    assert!(s.get_usage_bodies(id).await.unwrap().is_none());
    assert_eq!(s.get_usage_bodies(young).await.unwrap().unwrap(), young_b);
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
        requested_model: "m".into(),
        upstream_model: None,
        api_format: ApiFormat::Claude,
        endpoint_api_format: None,
        is_stream: false,
        status,
        status_code: None,
        error_type: None,
        error_message: None,
        tokens: TokenUsage::default(),
        cost: CostBreakdown::default(),
        unpriced: false,
        latency_ms: None,
        ttfb_ms: None,
        client_ip: None,
        user_agent: None,
        created_at,
        updated_at: created_at,
    }
}

/// A trace whose id, like a real one, was made at `started_at` (UUIDv7).
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
        status_code: Some(500),
        error_type: None,
        error_message: None,
        latency_ms: Some(1),
        concurrency: None,
        conversion: None,
        started_at,
        finished_at: Some(started_at),
    }
}

fn audit(created_at: Timestamp) -> AuditEntry {
    AuditEntry {
        id: AuditId::new(),
        actor_id: None,
        actor_email: None,
        action: "user.update".into(),
        target_type: None,
        target_id: None,
        details: json!({}),
        ip: None,
        created_at,
    }
}

async fn count(s: &SqlStore, q: &'static str) -> i64 {
    sql(s, q, Vec::new()).await[0].i64("n").unwrap()
}

async fn usage_traces_and_audit_age_at_their_own_cutoffs(s: &SqlStore) {
    let old_done = record(UsageStatus::Completed, days_ago(400));
    let old_failed = record(UsageStatus::Failed, days_ago(366));
    let old_pending = record(UsageStatus::Pending, days_ago(400));
    let old_streaming = record(UsageStatus::Streaming, days_ago(400));
    let recent = record(UsageStatus::Completed, days_ago(364));
    let records = vec![
        old_done.clone(),
        old_failed.clone(),
        old_pending.clone(),
        old_streaming.clone(),
        recent.clone(),
    ];
    let old_trace = trace(recent.id, days_ago(31));
    let new_trace = trace(recent.id, days_ago(29));
    s.write_batch(&UsageBatch {
        records,
        traces: vec![old_trace.clone(), new_trace.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    for e in [audit(days_ago(366)), audit(days_ago(364))] {
        s.insert_audit(&e).await.unwrap();
    }

    // Usage 365 days, traces 30, audit 365.
    assert_eq!(s.delete_usage(days_ago(365), 100).await.unwrap(), 2);
    assert_eq!(s.delete_traces(days_ago(30), 100).await.unwrap(), 1);
    assert_eq!(s.delete_audit(days_ago(365), 100).await.unwrap(), 1);

    for gone in [old_done.id, old_failed.id] {
        assert!(s.get_usage(gone).await.unwrap().is_none());
    }
    for kept in [old_pending.id, old_streaming.id, recent.id] {
        assert!(
            s.get_usage(kept).await.unwrap().is_some(),
            "in flight or young: kept"
        );
    }
    let traces: Vec<TraceId> = sql(s, "SELECT id FROM attempt_traces", Vec::new())
        .await
        .iter()
        .map(|r| r.text("id").unwrap().parse().unwrap())
        .collect();
    assert_eq!(traces, vec![new_trace.id]);
    assert_eq!(
        count(s, "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM audit_log").await,
        1
    );

    // A trace id that is not time-ordered is only deleted once it is old by its start time.
    let mut odd = trace(recent.id, days_ago(1));
    odd.id = TraceId(uuid::Uuid::nil());
    s.write_batch(&UsageBatch {
        traces: vec![odd],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.delete_traces(days_ago(30), 100).await.unwrap(), 0);

    // Nothing left to age at these cutoffs.
    assert_eq!(s.delete_usage(days_ago(365), 100).await.unwrap(), 0);
    assert_eq!(s.delete_audit(days_ago(365), 100).await.unwrap(), 0);
}

/// Hourly rollups older than the cutoff go one hour bucket per call, oldest first; the daily
/// rollups summed from them stay.
async fn hourly_rollups_go_an_hour_at_a_time_and_days_stay(s: &SqlStore) {
    let day =
        |d: i64| Timestamp::from_millis((Timestamp::now().millis() / 86_400_000 - d) * 86_400_000);
    // Records in three hours of a day 10 days back (two in the first hour) and one recent.
    let old = day(10);
    let records = vec![
        record(UsageStatus::Completed, old.plus_secs(60)),
        record(UsageStatus::Completed, old.plus_secs(120)),
        record(UsageStatus::Completed, old.plus_secs(3600 + 60)),
        record(UsageStatus::Failed, old.plus_secs(5 * 3600)),
        record(UsageStatus::Completed, day(1).plus_secs(60)),
    ];
    s.write_batch(&UsageBatch {
        records,
        ..Default::default()
    })
    .await
    .unwrap();
    s.rollup_hours(day(11), day(0)).await.unwrap();
    s.rollup_days(day(11), day(0)).await.unwrap();
    let hours = "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_rollups WHERE period = 'hour'";
    let day_requests = "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n FROM usage_rollups WHERE period = 'day'";
    assert_eq!(
        count(s, hours).await,
        4,
        "one group per hour: three old hours and a recent one"
    );
    assert_eq!(count(s, day_requests).await, 5);

    let cutoff = day(5);
    assert_eq!(
        s.delete_hourly_rollups(cutoff).await.unwrap(),
        1,
        "the oldest hour's one group"
    );
    assert_eq!(count(s, hours).await, 3);
    assert_eq!(s.delete_hourly_rollups(cutoff).await.unwrap(), 1);
    assert_eq!(s.delete_hourly_rollups(cutoff).await.unwrap(), 1);
    assert_eq!(
        s.delete_hourly_rollups(cutoff).await.unwrap(),
        0,
        "the recent hour stays"
    );
    assert_eq!(count(s, hours).await, 1);
    assert_eq!(count(s, day_requests).await, 5, "daily rollups are kept");
}

async fn every_step_is_bounded_by_its_batch(s: &SqlStore) {
    let records: Vec<_> = (0..7)
        .map(|_| record(UsageStatus::Completed, days_ago(10)))
        .collect();
    let traces: Vec<_> = records.iter().map(|r| trace(r.id, days_ago(10))).collect();
    s.write_batch(&UsageBatch {
        records,
        traces,
        ..Default::default()
    })
    .await
    .unwrap();
    for _ in 0..7 {
        s.insert_audit(&audit(days_ago(10))).await.unwrap();
    }
    for i in 0..25 {
        stored_bodies(s, &format!("b{i}"), 10).await;
    }
    let cut = days_ago(5);
    for (name, step) in [("usage", 0), ("traces", 1), ("audit", 2)] {
        let mut runs = Vec::new();
        loop {
            let n = match step {
                0 => s.delete_usage(cut, 3).await,
                1 => s.delete_traces(cut, 3).await,
                _ => s.delete_audit(cut, 3).await,
            }
            .unwrap();
            runs.push(n);
            if n == 0 {
                break;
            }
        }
        assert_eq!(runs, vec![3, 3, 1, 0], "{name}");
    }
    // Compression works in rounds smaller than a batch but never exceeds it.
    assert_eq!(s.compress_bodies(cut, 3).await.unwrap(), 3);
    assert_eq!(s.compress_bodies(cut, 21).await.unwrap(), 21);
    assert_eq!(s.compress_bodies(cut, 21).await.unwrap(), 1);
    assert_eq!(s.drop_headers(cut, 10).await.unwrap(), 10);
    // 10 rows have lost their headers: 10 are deleted, 5 cleared in this batch of 15.
    assert_eq!(s.drop_bodies(cut, 15).await.unwrap(), 15);
    assert_eq!(
        count(s, "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_bodies").await,
        15
    );
    assert_eq!(s.drop_bodies(cut, 100).await.unwrap(), 10);
    assert_eq!(
        s.drop_headers(cut, 100).await.unwrap(),
        15,
        "all bodies gone: rows deleted"
    );
    assert_eq!(
        count(s, "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_bodies").await,
        0
    );
}

fn user(email: &str, period: QuotaPeriod, started: Option<Timestamp>, used: &str) -> User {
    User {
        id: UserId::new(),
        email: email.to_string(),
        username: email.split('@').next().unwrap().to_string(),
        password_hash: "$argon2id$fake".into(),
        role: Role::User,
        is_active: true,
        quota_usd: Some(Usd::dollars(10)),
        used_usd: used.parse().unwrap(),
        total_usd: used.parse().unwrap(),
        quota_period: period,
        period_started_at: started,
        allowed_providers: None,
        allowed_api_formats: None,
        allowed_models: None,
        model_capability_settings: Default::default(),
        last_login_at: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    }
}

/// A completed request at `at` charged `charged` to `u`, billed as the gateway bills it.
async fn charge(s: &SqlStore, u: &User, at: Timestamp, charged: &str) {
    let rec = UsageRecord {
        user_id: Some(u.id),
        ..record(UsageStatus::Completed, at)
    };
    let bill = Billing {
        request_id: rec.id,
        user_id: Some(u.id),
        api_key_id: None,
        standalone: false,
        charged: charged.parse().unwrap(),
        provider_id: None,
        actual: Usd::ZERO,
        global_model_id: None,
        at,
        user_period_start: u.quota_period.period_start(at),
        provider_period_start: None,
    };
    let applied = s
        .write_batch(&UsageBatch {
            records: vec![rec],
            billing: vec![bill],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(applied, 1);
}

async fn user_state(s: &SqlStore, u: &User) -> (String, String, Option<Timestamp>) {
    let got = s.get_user(u.id).await.unwrap().unwrap();
    (
        got.used_usd.to_string(),
        got.total_usd.to_string(),
        got.period_started_at,
    )
}

fn users(n: u64) -> QuotaResets {
    QuotaResets {
        users: n,
        providers: 0,
    }
}

async fn user_quota_periods_reset_once_at_the_boundary(s: &SqlStore) {
    let d10 = t("2026-03-10T00:00:00Z");
    let daily = user("daily@example.com", QuotaPeriod::Daily, Some(d10), "3");
    let monthly = user(
        "monthly@example.com",
        QuotaPeriod::Monthly,
        Some(t("2026-03-10T14:00:00Z")),
        "4",
    );
    let never = user("never@example.com", QuotaPeriod::None, Some(d10), "5");
    let unset = user("unset@example.com", QuotaPeriod::Daily, None, "1");
    for u in [&daily, &monthly, &never, &unset] {
        s.insert_user(u).await.unwrap();
    }
    // A missing start is an earlier period, as billing treats it: `unset` starts today's.
    assert_eq!(
        s.reset_quota_periods(t("2026-03-10T23:59:59Z"))
            .await
            .unwrap(),
        users(1)
    );
    assert_eq!(
        user_state(s, &unset).await,
        ("0".into(), "1".into(), Some(d10))
    );
    assert_eq!(
        user_state(s, &daily).await,
        ("3".into(), "3".into(), Some(d10)),
        "not yet"
    );

    // At midnight the daily period ends; once only.
    let d11 = t("2026-03-11T00:00:00Z");
    assert_eq!(s.reset_quota_periods(d11).await.unwrap(), users(2));
    assert_eq!(
        user_state(s, &daily).await,
        ("0".into(), "3".into(), Some(d11))
    );
    assert_eq!(
        s.reset_quota_periods(t("2026-03-11T00:01:00Z"))
            .await
            .unwrap(),
        users(0),
        "idempotent"
    );

    // A charge between two runs is kept: the next run (same period) leaves it alone.
    charge(s, &daily, t("2026-03-11T09:00:00Z"), "1.5").await;
    assert_eq!(
        s.reset_quota_periods(t("2026-03-11T23:00:00Z"))
            .await
            .unwrap(),
        users(0)
    );
    assert_eq!(
        user_state(s, &daily).await,
        ("1.5".into(), "4.5".into(), Some(d11))
    );

    // Billing of the new period got there before the job: the job must not wipe the charge.
    let d12 = t("2026-03-12T00:00:00Z");
    charge(s, &daily, t("2026-03-12T00:00:01Z"), "2").await;
    assert_eq!(
        user_state(s, &daily).await,
        ("2".into(), "6.5".into(), Some(d12))
    );
    let r = s
        .reset_quota_periods(t("2026-03-12T00:00:02Z"))
        .await
        .unwrap();
    assert_eq!(r, users(1), "only `unset` (still on the 11th) rolls over");
    assert_eq!(
        user_state(s, &daily).await,
        ("2".into(), "6.5".into(), Some(d12))
    );

    // Monthly: a mid-month start lasts until the 1st; `none` never resets.
    assert_eq!(
        user_state(s, &monthly).await,
        ("4".into(), "4".into(), Some(t("2026-03-10T14:00:00Z")))
    );
    let apr = t("2026-04-01T00:00:00Z");
    s.reset_quota_periods(apr).await.unwrap();
    assert_eq!(
        user_state(s, &monthly).await,
        ("0".into(), "4".into(), Some(apr))
    );
    assert_eq!(
        user_state(s, &never).await,
        ("5".into(), "5".into(), Some(d10))
    );
    // A charge after the reset accumulates in the new period.
    charge(s, &monthly, t("2026-04-02T10:00:00Z"), "0.25").await;
    assert_eq!(
        user_state(s, &monthly).await,
        ("0.25".into(), "4.25".into(), Some(apr))
    );
}

fn provider(name: &str, quota: Option<Usd>, days: u32, started: Option<Timestamp>) -> Provider {
    Provider {
        id: ProviderId::new(),
        name: name.into(),
        display_name: name.to_uppercase(),
        description: None,
        website: None,
        billing_type: BillingType::MonthlyQuota,
        quota_usd: quota,
        quota_used_usd: "5".parse().unwrap(),
        quota_period_days: days,
        period_started_at: started,
        expires_at: None,
        rpm_limit: None,
        provider_priority: 10,
        is_active: true,
        config: json!({}),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    }
}

async fn provider_state(s: &SqlStore, p: &Provider) -> (String, Option<Timestamp>) {
    let got = s.get_provider(p.id).await.unwrap().unwrap();
    (got.quota_used_usd.to_string(), got.period_started_at)
}

async fn provider_quota_periods_reset_on_their_own_grid(s: &SqlStore) {
    let start = t("2026-03-01T06:00:00Z");
    let weekly = provider("weekly", Some(Usd::dollars(100)), 7, Some(start));
    let unlimited = provider("unlimited", None, 7, Some(start));
    let untracked = provider("untracked", Some(Usd::dollars(100)), 7, None);
    for p in [&weekly, &unlimited, &untracked] {
        s.insert_provider(p).await.unwrap();
    }
    let provs = |n| QuotaResets {
        users: 0,
        providers: n,
    };
    assert_eq!(
        s.reset_quota_periods(t("2026-03-08T05:59:59Z"))
            .await
            .unwrap(),
        provs(0)
    );
    // Two whole periods later: the start moves to the current one on the 7-day grid.
    let now = t("2026-03-20T00:00:00Z");
    assert_eq!(s.reset_quota_periods(now).await.unwrap(), provs(1));
    let current = t("2026-03-15T06:00:00Z");
    assert_eq!(
        provider_state(s, &weekly).await,
        ("0".into(), Some(current))
    );
    let expected = Provider {
        quota_used_usd: Usd::ZERO,
        period_started_at: Some(current),
        ..weekly.clone()
    };
    assert_eq!(
        expected.period_start(now),
        Some(current),
        "same grid as billing"
    );
    assert_eq!(s.reset_quota_periods(now).await.unwrap(), provs(0));
    assert_eq!(
        provider_state(s, &unlimited).await,
        ("5".into(), Some(start))
    );
    assert_eq!(provider_state(s, &untracked).await, ("5".into(), None));
}
