//! Hourly and daily usage rollups, run identically against SQLite and PostgreSQL (each test
//! on a fresh database, as in `contract.rs`): the rolled-up figures equal a direct aggregate
//! of the usage records, a re-run writes the same rows, late settlements are picked up, days
//! are the sums of their hours.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

#[macro_use]
mod backends;

use std::collections::BTreeMap;
use std::time::Duration;

use aether_domain::entities::*;
use aether_domain::pricing::{CostBreakdown, TokenUsage};
use aether_domain::*;
use aether_store::rollups::{Granularity, ROLLUP_FIGURES, RollupQuery, RollupRow};
use aether_store::*;

contract!(
    rollups_equal_a_direct_aggregate,
    a_rerun_writes_the_same_rows,
    a_late_settlement_shows_after_the_next_run,
    days_are_the_sums_of_their_hours,
    empty_ranges_and_an_empty_database,
    runs_catch_up_a_backlog_in_bounded_steps,
    the_live_part_comes_from_the_records,
    concurrent_runs_take_turns,
);

const HOUR: i64 = 3600;

fn t(x: &str) -> Timestamp {
    Timestamp::parse_rfc3339(x).unwrap()
}

/// 2026-05-01T00:00:00Z.
fn base() -> Timestamp {
    t("2026-05-01T00:00:00Z")
}

fn record(model: &str, when: Timestamp) -> UsageRecord {
    UsageRecord {
        id: RequestId::new(),
        client_request_id: None,
        user_id: None,
        api_key_id: None,
        provider_id: None,
        endpoint_id: None,
        provider_key_id: None,
        global_model_id: None,
        requested_model: model.into(),
        upstream_model: None,
        api_format: ApiFormat::Claude,
        endpoint_api_format: None,
        is_stream: false,
        status: UsageStatus::Completed,
        status_code: Some(200),
        error_type: None,
        error_message: None,
        tokens: TokenUsage::default(),
        cost: CostBreakdown::default(),
        unpriced: false,
        latency_ms: None,
        ttfb_ms: None,
        client_ip: None,
        user_agent: None,
        created_at: when,
        updated_at: when,
    }
}

async fn write(s: &SqlStore, records: Vec<UsageRecord>) {
    s.write_batch(&UsageBatch {
        records,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// The entities the fixture's records point at.
struct Fixture {
    a: UserId,
    b: UserId,
    k1: ApiKeyId,
    p: ProviderId,
    g: GlobalModelId,
}

/// Two users and standalone keys, a provider (and none), a global model with an alias and an
/// unmodelled model, two formats, every status, latencies and TTFBs some missing — 90
/// records over 60 hours from [`base`] (three UTC days).
async fn fixture(s: &SqlStore) -> Fixture {
    let mk_user = |name: &str| User {
        id: UserId::new(),
        email: format!("{name}@example.com"),
        username: name.into(),
        password_hash: "$argon2id$fake".into(),
        role: Role::User,
        is_active: true,
        quota_usd: None,
        used_usd: Usd::ZERO,
        total_usd: Usd::ZERO,
        quota_period: QuotaPeriod::Monthly,
        period_started_at: None,
        allowed_providers: None,
        allowed_api_formats: None,
        allowed_models: None,
        model_capability_settings: BTreeMap::new(),
        created_at: base(),
        updated_at: base(),
        last_login_at: None,
    };
    let (a, b) = (mk_user("ann"), mk_user("bob"));
    s.insert_user(&a).await.unwrap();
    s.insert_user(&b).await.unwrap();
    let p = provider();
    s.insert_provider(&p).await.unwrap();
    let g = global_model();
    s.insert_global_model(&g).await.unwrap();
    let k1 = ApiKeyId::new();
    let k2 = ApiKeyId::new();
    let statuses = [
        UsageStatus::Completed,
        UsageStatus::Completed,
        UsageStatus::Failed,
        UsageStatus::Pending,
        UsageStatus::Streaming,
    ];
    let mut records = Vec::new();
    for i in 0..90i64 {
        let when = base().plus_secs(((i * 7) % 60) * HOUR + (i * 17) % 3600);
        let model = ["claude-x", "claude-x-alias", "gpt-y"][(i % 3) as usize];
        let mut r = record(model, when);
        r.user_id = [Some(a.id), Some(b.id), None][(i % 4 % 3) as usize];
        r.api_key_id = Some(if i % 2 == 0 { k1 } else { k2 });
        r.provider_id = (i % 5 != 0).then_some(p.id);
        r.global_model_id = (model != "gpt-y").then_some(g.id);
        r.api_format = if i % 2 == 0 {
            ApiFormat::Claude
        } else {
            ApiFormat::Openai
        };
        r.status = statuses[(i % 5) as usize];
        r.tokens = TokenUsage {
            input: 100 + i as u64,
            output: 10 * i as u64,
            cache_creation_5m: (i % 3) as u64,
            cache_creation_1h: (i % 4) as u64 * 2,
            cache_read: (i % 7) as u64 * 100,
            reasoning: (i % 2) as u64,
        };
        r.cost.input = Usd::from_nanos(1000 * i);
        r.cost.output = Usd::from_nanos(333 * i + 1);
        r.cost.cache_read = Usd::from_nanos(7 * i);
        r.cost.per_request = Usd::from_nanos(5);
        r.cost.total = Usd::from_nanos(1340 * i + 6);
        r.cost.actual_total = Usd::from_nanos(900 * i + 3);
        r.latency_ms = (i % 6 != 0).then_some(100 + 13 * i);
        r.ttfb_ms = (i % 4 != 0).then_some(10 + i);
        records.push(r);
    }
    write(s, records).await;
    Fixture {
        a: a.id,
        b: b.id,
        k1,
        p: p.id,
        g: g.id,
    }
}

fn provider() -> Provider {
    Provider {
        id: ProviderId::new(),
        name: "acme".into(),
        display_name: "ACME".into(),
        description: None,
        website: None,
        billing_type: BillingType::PayAsYouGo,
        quota_usd: None,
        quota_used_usd: Usd::ZERO,
        quota_period_days: 30,
        period_started_at: None,
        expires_at: None,
        rpm_limit: None,
        provider_priority: 10,
        is_active: true,
        config: serde_json::json!({}),
        created_at: base(),
        updated_at: base(),
    }
}

fn global_model() -> GlobalModel {
    GlobalModel {
        id: GlobalModelId::new(),
        name: "claude-x".into(),
        display_name: "Claude X".into(),
        description: None,
        is_active: true,
        capabilities: ModelCapabilities::default(),
        supported_capabilities: Vec::new(),
        default_tiered_pricing: None,
        default_price_per_request: None,
        config: serde_json::json!({}),
        usage_count: 0,
        created_at: base(),
        updated_at: base(),
    }
}

/// The fixture's whole span, rolled up.
async fn roll_all(s: &SqlStore) {
    s.rollup_hours(base(), base().plus_secs(72 * HOUR))
        .await
        .unwrap();
    s.rollup_days(base(), base().plus_secs(72 * HOUR))
        .await
        .unwrap();
}

fn span() -> (Timestamp, Timestamp) {
    (base(), base().plus_secs(72 * HOUR))
}

/// The same selection as a rollup query (hours or days) and as a record filter.
fn both(g: Granularity, f: &UsageFilter) -> (RollupQuery, UsageFilter) {
    let (since, until) = (f.since.unwrap(), f.until.unwrap());
    let mut q = RollupQuery::new(g, since, until);
    q.user_id = f.user_id;
    q.api_key_id = f.api_key_id;
    q.provider_id = f.provider_id;
    q.model.clone_from(&f.model);
    q.api_format = f.api_format;
    q.status.clone_from(&f.status);
    (q, f.clone())
}

async fn rollups_equal_a_direct_aggregate(s: &SqlStore) {
    let fx = fixture(s).await;
    roll_all(s).await;
    let (since, until) = span();
    let all = UsageFilter {
        since: Some(since),
        until: Some(until),
        ..UsageFilter::default()
    };
    let filters = [
        all.clone(),
        UsageFilter {
            user_id: Some(fx.a),
            ..all.clone()
        },
        UsageFilter {
            user_id: Some(fx.b),
            api_format: Some(ApiFormat::Openai),
            ..all.clone()
        },
        UsageFilter {
            api_key_id: Some(fx.k1),
            ..all.clone()
        },
        UsageFilter {
            provider_id: Some(fx.p),
            ..all.clone()
        },
        // A global model's name finds its alias's requests too; its id likewise.
        UsageFilter {
            model: Some("claude-x".into()),
            ..all.clone()
        },
        UsageFilter {
            model: Some(fx.g.to_string()),
            ..all.clone()
        },
        UsageFilter {
            model: Some("gpt-y".into()),
            ..all.clone()
        },
        UsageFilter {
            status: Some("failed".into()),
            ..all.clone()
        },
        // Part of the span: from 05:00 on the first day to 13:00 on the second.
        UsageFilter {
            since: Some(base().plus_secs(5 * HOUR)),
            until: Some(base().plus_secs(37 * HOUR)),
            ..all.clone()
        },
    ];
    for f in &filters {
        let direct = s.usage_summary(f).await.unwrap();
        let (q, _) = both(Granularity::Hour, f);
        assert_eq!(s.rollup_summary(&q).await.unwrap(), direct, "{f:?}");
        for by in [
            UsageGroup::Model,
            UsageGroup::Provider,
            UsageGroup::Format,
            UsageGroup::User,
            UsageGroup::Day,
        ] {
            assert_eq!(
                s.rollup_breakdown(&q, by).await.unwrap(),
                s.usage_breakdown(f, by).await.unwrap(),
                "{by:?} {f:?}"
            );
        }
    }
    let direct = s.usage_summary(&all).await.unwrap();
    assert_eq!(direct.requests, 90);
    assert!(direct.avg_latency_ms.is_some() && direct.cost.nanos() > 0);
    // Whole days: the daily rollups give the same totals.
    let (q, _) = both(Granularity::Day, &all);
    assert_eq!(s.rollup_summary(&q).await.unwrap(), direct);

    // The hourly series: every non-empty hour, each equal to that hour's records.
    let (q, _) = both(Granularity::Hour, &all);
    let series = s.rollup_series(&q).await.unwrap();
    assert_eq!(series.len(), 60);
    for p in &series {
        let hour = UsageFilter {
            since: Some(p.start),
            until: Some(p.start.plus_secs(HOUR)),
            ..UsageFilter::default()
        };
        assert_eq!(p.totals, s.usage_summary(&hour).await.unwrap());
    }
    let (q, _) = both(Granularity::Day, &all);
    let days = s.rollup_series(&q).await.unwrap();
    let starts: Vec<_> = days.iter().map(|p| p.start).collect();
    assert_eq!(
        starts,
        vec![
            base(),
            base().plus_secs(24 * HOUR),
            base().plus_secs(48 * HOUR)
        ]
    );
    let sum: u64 = days.iter().map(|p| p.totals.requests).sum();
    assert_eq!(sum, 90);
}

async fn a_rerun_writes_the_same_rows(s: &SqlStore) {
    fixture(s).await;
    roll_all(s).await;
    let (since, until) = span();
    let hours = s
        .list_rollups(Granularity::Hour, since, until)
        .await
        .unwrap();
    let days = s
        .list_rollups(Granularity::Day, since, until)
        .await
        .unwrap();
    assert!(hours.len() >= 60 && days.len() >= 3);
    assert!(
        hours
            .iter()
            .all(|r| r.figures.len() == ROLLUP_FIGURES.len())
    );
    // Again, and again through the job's entry point over the same span.
    roll_all(s).await;
    assert_eq!(
        s.list_rollups(Granularity::Hour, since, until)
            .await
            .unwrap(),
        hours
    );
    assert_eq!(
        s.list_rollups(Granularity::Day, since, until)
            .await
            .unwrap(),
        days
    );
    let now = base().plus_secs(60 * HOUR);
    s.run_rollups(now, Duration::from_secs(100 * 3600), 100)
        .await
        .unwrap();
    s.run_rollups(now, Duration::from_secs(100 * 3600), 100)
        .await
        .unwrap();
    assert_eq!(
        s.list_rollups(Granularity::Hour, since, until)
            .await
            .unwrap(),
        hours
    );
    assert_eq!(
        s.list_rollups(Granularity::Day, since, until)
            .await
            .unwrap(),
        days
    );
    // Re-rolling part of the span leaves the rest and gives the same rows.
    s.rollup_hours(base().plus_secs(10 * HOUR), base().plus_secs(12 * HOUR))
        .await
        .unwrap();
    assert_eq!(
        s.list_rollups(Granularity::Hour, since, until)
            .await
            .unwrap(),
        hours
    );
}

async fn a_late_settlement_shows_after_the_next_run(s: &SqlStore) {
    // A request starts at 10:50 and is still streaming at 11:05: hour 10 has not settled
    // (it ended less than `settle` ago), so the 11:05 run leaves it to the live records.
    let start = base().plus_secs(10 * HOUR + 50 * 60);
    let mut r = record("claude-x", start);
    r.status = UsageStatus::Streaming;
    r.status_code = None;
    let done = record("claude-x", base().plus_secs(10 * HOUR + 5 * 60));
    write(s, vec![r.clone(), done]).await;
    let settle = Duration::from_secs(3600 + 300);
    let run = s
        .run_rollups(base().plus_secs(11 * HOUR + 5 * 60), settle, 48)
        .await
        .unwrap();
    assert_eq!(run.rows, 0);
    assert!(!run.behind);
    let hour10 = |g| RollupQuery::new(g, base().plus_secs(10 * HOUR), base().plus_secs(11 * HOUR));
    let before = s.rollup_summary(&hour10(Granularity::Hour)).await.unwrap();
    assert_eq!(before.requests, 0, "an unsettled hour is not rolled up");

    // It completes at 11:30; the 12:10 run rolls hour 10 up, once, with its final figures.
    r.status = UsageStatus::Completed;
    r.tokens.output = 500;
    r.cost.total = Usd::from_nanos(12_345);
    r.cost.actual_total = Usd::from_nanos(6_000);
    r.latency_ms = Some(40 * 60 * 1000);
    r.updated_at = base().plus_secs(11 * HOUR + 30 * 60);
    write(s, vec![r.clone()]).await;
    let run = s
        .run_rollups(base().plus_secs(12 * HOUR + 10 * 60), settle, 48)
        .await
        .unwrap();
    assert_eq!(
        (run.from, run.to, run.watermark),
        (
            base().plus_secs(10 * HOUR),
            base().plus_secs(11 * HOUR),
            base().plus_secs(11 * HOUR)
        )
    );
    let direct = s
        .usage_summary(&UsageFilter {
            since: Some(base().plus_secs(10 * HOUR)),
            until: Some(base().plus_secs(11 * HOUR)),
            ..UsageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!((direct.successes, direct.output_tokens), (2, 500));
    assert_eq!(
        s.rollup_summary(&hour10(Granularity::Hour)).await.unwrap(),
        direct
    );
    // The day follows its hours.
    let day = s
        .rollup_summary(&RollupQuery::new(
            Granularity::Day,
            base(),
            base().plus_secs(24 * HOUR),
        ))
        .await
        .unwrap();
    assert_eq!(day, direct);

    // Once an hour has settled it is no longer redone: a change long after (which the
    // gateway never makes) shows only after an explicit re-run of that hour.
    r.tokens.output = 999;
    write(s, vec![r.clone()]).await;
    s.run_rollups(base().plus_secs(20 * HOUR), settle, 48)
        .await
        .unwrap();
    let stale = s.rollup_summary(&hour10(Granularity::Hour)).await.unwrap();
    assert_eq!(stale.output_tokens, 500);
    s.rollup_hours(base().plus_secs(10 * HOUR), base().plus_secs(11 * HOUR))
        .await
        .unwrap();
    s.rollup_days(base(), base().plus_secs(HOUR)).await.unwrap();
    let fixed = s.rollup_summary(&hour10(Granularity::Hour)).await.unwrap();
    assert_eq!(fixed.output_tokens, 999);
    let day = s
        .rollup_summary(&RollupQuery::new(Granularity::Day, base(), base()))
        .await
        .unwrap();
    assert_eq!(day, UsageSummary::default(), "an empty range is empty");
    let day = s
        .rollup_summary(&RollupQuery::new(
            Granularity::Day,
            base(),
            base().plus_secs(1),
        ))
        .await
        .unwrap();
    assert_eq!(day.output_tokens, 999);
}

async fn days_are_the_sums_of_their_hours(s: &SqlStore) {
    fixture(s).await;
    roll_all(s).await;
    let (since, until) = span();
    let hours = s
        .list_rollups(Granularity::Hour, since, until)
        .await
        .unwrap();
    // Group the hourly rows by day and dimensions, summing every figure.
    let mut expected: BTreeMap<Vec<String>, Vec<i64>> = BTreeMap::new();
    for h in &hours {
        let day = h.bucket_start.millis().div_euclid(86_400_000) * 86_400_000;
        let e = expected
            .entry(key(day, h))
            .or_insert_with(|| vec![0; ROLLUP_FIGURES.len()]);
        for (sum, v) in e.iter_mut().zip(&h.figures) {
            *sum += v;
        }
    }
    let days = s
        .list_rollups(Granularity::Day, since, until)
        .await
        .unwrap();
    let got: BTreeMap<Vec<String>, Vec<i64>> = days
        .iter()
        .map(|d| (key(d.bucket_start.millis(), d), d.figures.clone()))
        .collect();
    assert_eq!(got.len(), days.len(), "one row per day and group");
    assert_eq!(got, expected);
    assert!(days.iter().all(|d| d.granularity == Granularity::Day));
}

fn key(bucket: i64, r: &RollupRow) -> Vec<String> {
    vec![
        format!("{bucket:020}"),
        r.user_id.clone(),
        r.api_key_id.clone(),
        r.provider_id.clone(),
        r.global_model_id.clone(),
        r.requested_model.clone(),
        r.api_format.clone(),
        r.status.clone(),
    ]
}

async fn empty_ranges_and_an_empty_database(s: &SqlStore) {
    let (since, until) = span();
    assert_eq!(s.rollup_watermark().await.unwrap(), None);
    assert_eq!(s.rollup_hours(since, until).await.unwrap(), 0);
    assert_eq!(s.rollup_days(since, until).await.unwrap(), 0);
    let q = RollupQuery::new(Granularity::Hour, since, until);
    assert_eq!(s.rollup_summary(&q).await.unwrap(), UsageSummary::default());
    assert!(s.rollup_series(&q).await.unwrap().is_empty());
    assert!(
        s.rollup_breakdown(&q, UsageGroup::Model)
            .await
            .unwrap()
            .is_empty()
    );
    // A first run on an empty database starts at the settled hours and sets the watermark.
    let now = base().plus_secs(5 * HOUR + 1);
    let run = s
        .run_rollups(now, Duration::from_secs(600), 48)
        .await
        .unwrap();
    assert_eq!((run.rows, run.to), (0, base().plus_secs(4 * HOUR)));
    assert_eq!(
        s.rollup_watermark().await.unwrap(),
        Some(base().plus_secs(4 * HOUR))
    );
    // Records exist but not in the range; a reversed range is empty.
    fixture(s).await;
    assert_eq!(
        s.rollup_hours(base().plus_secs(-5 * HOUR), base())
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.rollup_hours(until, since).await.unwrap(), 0);
    assert!(
        s.list_rollups(Granularity::Hour, since, until)
            .await
            .unwrap()
            .is_empty()
    );
    let q = RollupQuery::new(Granularity::Hour, until, since);
    assert_eq!(s.rollup_summary(&q).await.unwrap(), UsageSummary::default());
}

async fn runs_catch_up_a_backlog_in_bounded_steps(s: &SqlStore) {
    fixture(s).await;
    // 100 hours after the first record, with 24 hours per run.
    let now = base().plus_secs(100 * HOUR + 60);
    let settle = Duration::from_secs(600);
    let mut runs = Vec::new();
    loop {
        let run = s.run_rollups(now, settle, 24).await.unwrap();
        runs.push(run);
        if !run.behind {
            break;
        }
        assert!(runs.len() < 10, "never catches up: {runs:?}");
    }
    let spans: Vec<_> = runs.iter().map(|r| (r.from, r.to)).collect();
    let h = |n| base().plus_secs(n * HOUR);
    assert_eq!(
        spans,
        vec![
            (h(0), h(24)),
            (h(24), h(48)),
            (h(48), h(72)),
            (h(72), h(96)),
            (h(96), h(99)),
        ]
    );
    // Caught up: nothing has settled since; the next run does nothing.
    let run = s.run_rollups(now, settle, 24).await.unwrap();
    assert_eq!((run.from, run.to, run.watermark), (h(99), h(99), h(99)));
    let (since, until) = span();
    let all = UsageFilter {
        since: Some(since),
        until: Some(until),
        ..UsageFilter::default()
    };
    let direct = s.usage_summary(&all).await.unwrap();
    for g in [Granularity::Hour, Granularity::Day] {
        let (q, _) = both(g, &all);
        assert_eq!(s.rollup_summary(&q).await.unwrap(), direct, "{g:?}");
    }
}

async fn the_live_part_comes_from_the_records(s: &SqlStore) {
    fixture(s).await;
    // Only the first day is rolled up.
    s.rollup_hours(base(), base().plus_secs(24 * HOUR))
        .await
        .unwrap();
    s.rollup_days(base(), base().plus_secs(24 * HOUR))
        .await
        .unwrap();
    let (since, until) = span();
    let all = UsageFilter {
        since: Some(since),
        until: Some(until),
        ..UsageFilter::default()
    };
    let direct = s.usage_summary(&all).await.unwrap();
    for g in [Granularity::Hour, Granularity::Day] {
        let (mut q, _) = both(g, &all);
        let rolled = s.rollup_summary(&q).await.unwrap();
        assert!(rolled.requests < direct.requests, "{g:?}");
        // From the second day on, the records themselves.
        q.live_from = Some(base().plus_secs(24 * HOUR + 30));
        assert_eq!(s.rollup_summary(&q).await.unwrap(), direct, "{g:?}");
        for by in [UsageGroup::Model, UsageGroup::User, UsageGroup::Day] {
            assert_eq!(
                s.rollup_breakdown(&q, by).await.unwrap(),
                s.usage_breakdown(&all, by).await.unwrap(),
                "{g:?} {by:?}"
            );
        }
        let series = s.rollup_series(&q).await.unwrap();
        assert_eq!(
            series.iter().map(|p| p.totals.requests).sum::<u64>(),
            direct.requests
        );
    }
}

async fn concurrent_runs_take_turns(s: &SqlStore) {
    fixture(s).await;
    // Every fixture hour has settled: the runs do real work next to the explicit re-runs.
    let now = base().plus_secs(100 * HOUR);
    let settle = Duration::from_secs(600);
    let (since, until) = span();
    let (a, b, c, d) = tokio::join!(
        s.run_rollups(now, settle, 100),
        s.run_rollups(now, settle, 100),
        s.rollup_hours(since, until),
        s.rollup_days(since, until),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    d.unwrap();
    let hours = s
        .list_rollups(Granularity::Hour, since, until)
        .await
        .unwrap();
    let days = s
        .list_rollups(Granularity::Day, since, until)
        .await
        .unwrap();
    roll_all(s).await;
    assert_eq!(
        s.list_rollups(Granularity::Hour, since, until)
            .await
            .unwrap(),
        hours
    );
    assert_eq!(
        s.list_rollups(Granularity::Day, since, until)
            .await
            .unwrap(),
        days
    );
}
