//! Background jobs run by one leader at a time: two instances of the real application on one
//! PostgreSQL schema (with and without Redis) elect exactly one leader; when it stops, or
//! crashes, the other takes over; the leader's jobs fail stale in-flight usage records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use aether_domain::entities::{UsageRecord, UsageStatus};
use aether_domain::pricing::{CostBreakdown, TokenUsage};
use aether_domain::{ApiFormat, RequestId, Timestamp};
use aether_server::leader::LeaderConfig;
use aether_store::{Backend, UsageBatch, UsageRepo as _};
use common::{Opts, TestApp};

const TTL: Duration = Duration::from_millis(1500);

fn timing() -> LeaderConfig {
    LeaderConfig {
        ttl: TTL,
        renew_every: Duration::from_millis(100),
        jobs_every: Duration::from_millis(100),
    }
}

fn redis_url() -> String {
    std::env::var("AETHER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Instance A owns a fresh PostgreSQL schema; instance B shares it.
async fn two_instances(redis: Option<String>) -> (TestApp, TestApp) {
    let a = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        redis_url: redis.clone(),
        cluster_secrets: true,
        leader: Some(timing()),
        ..Default::default()
    })
    .await;
    let b = TestApp::start_with(Opts {
        backend: Backend::Postgres,
        database_url: Some(a.db.as_ref().unwrap().url.clone()),
        redis_url: redis,
        cluster_secrets: true,
        leader: Some(timing()),
        ..Default::default()
    })
    .await;
    (a, b)
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        if f() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {within:?}");
}

/// Waits for a leader, then checks for a while that there is exactly one; returns whether
/// it is A.
async fn exactly_one_leader(a: &TestApp, b: &TestApp) -> bool {
    wait_until("a leader is elected", Duration::from_secs(5), || {
        a.leader.is_leader() || b.leader.is_leader()
    })
    .await;
    let a_leads = a.leader.is_leader();
    for _ in 0..30 {
        assert!(
            a.leader.is_leader() ^ b.leader.is_leader(),
            "exactly one instance must be the leader"
        );
        assert_eq!(a.leader.is_leader(), a_leads, "leadership must not flap");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    a_leads
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
        requested_model: "leader-model".into(),
        upstream_model: None,
        api_format: ApiFormat::ClaudeCli,
        endpoint_api_format: None,
        is_stream: true,
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

/// A streaming record started two hours ago (past the 600 s request timeout and the margin)
/// becomes failed (`stale`); one started now stays streaming.
async fn stale_records_fail(a: &TestApp) {
    let stale = record(
        UsageStatus::Streaming,
        Timestamp::now().plus_secs(-2 * 3600),
    );
    let fresh = record(UsageStatus::Streaming, Timestamp::now());
    a.store()
        .write_batch(&UsageBatch {
            records: vec![stale.clone(), fresh.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let got = a.store().get_usage(stale.id).await.unwrap().unwrap();
        if got.status == UsageStatus::Failed {
            assert_eq!(got.error_type.as_deref(), Some("stale"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the stale record was never failed: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = a.store().get_usage(fresh.id).await.unwrap().unwrap();
    assert_eq!(got.status, UsageStatus::Streaming);
}

/// One leader; stale records fail; a stopped leader hands over at once.
async fn elect_run_and_hand_over(redis: Option<String>) {
    let (mut a, mut b) = two_instances(redis).await;
    let a_leads = exactly_one_leader(&a, &b).await;
    stale_records_fail(&a).await;

    let (leader, follower) = if a_leads {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    leader.shutdown().await;
    assert!(!leader.leader.is_leader());
    // Released on shutdown: the follower's next try takes it, long before the lease of a
    // crashed leader would lapse.
    let took = wait_until("the follower takes over", TTL / 2, || {
        follower.leader.is_leader()
    })
    .await;
    eprintln!("takeover after a clean stop: {took:?}");
    b.stop().await;
    a.stop().await;
}

/// A crashed leader (no release) is replaced once its lease lapses.
async fn crashed_leader_is_replaced(redis: Option<String>) -> Duration {
    let (a, b) = two_instances(redis).await;
    let a_leads = exactly_one_leader(&a, &b).await;
    let (leader, follower) = if a_leads { (&a, &b) } else { (&b, &a) };
    leader.leader.simulate_crash();
    let took = wait_until(
        "the follower takes over from a crashed leader",
        TTL + Duration::from_secs(2),
        || follower.leader.is_leader(),
    )
    .await;
    eprintln!("takeover after a crash: {took:?}");
    assert!(!leader.leader.is_leader());
    b.stop().await;
    a.stop().await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_leader_runs_jobs_and_hands_over() {
    elect_run_and_hand_over(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_leader_runs_jobs_and_hands_over() {
    elect_run_and_hand_over(Some(redis_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_leader_is_replaced() {
    // The advisory lock goes with the leader's session: no TTL to wait for.
    crashed_leader_is_replaced(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crashed_leader_is_replaced_after_the_ttl() {
    let took = crashed_leader_is_replaced(Some(redis_url())).await;
    // The lease was renewed at most one renewal interval before the crash, so it outlives
    // the crash by most of its TTL.
    assert!(
        took >= TTL - Duration::from_millis(400),
        "took over after {took:?}, before the lease of {TTL:?} could lapse"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_single_node_is_always_leader_and_runs_jobs() {
    let a = TestApp::start_with(Opts {
        leader: Some(timing()),
        ..Default::default()
    })
    .await;
    assert!(a.leader.is_leader());
    stale_records_fail(&a).await;
    a.stop().await;
}
