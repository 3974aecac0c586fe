//! The crash test: a bounded loopback load with upstream faults injected, the gateway killed
//! with SIGKILL in the middle of it and started again on the same data directory. Every
//! request the client saw complete must have exactly one completed usage record, and billing
//! must have charged each settled record exactly once — nothing acknowledged is lost, nothing
//! is counted twice (see "What recorded means" in docs/operations.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod proc_kit;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aether_domain::entities::{UsageRecord, UsageStatus};
use aether_store::testing::TestStore;
use aether_store::{Backend, Page, UsageFilter, UsageRepo as _, UserRepo as _};
use aether_testkit::{MockUpstream, Step};
use common::{Opts, TestApp};
use serde_json::json;

const MODEL: &str = "crash-model";
const WORKERS: usize = 12;

/// Upstream behaviour per key, cycled: successes (some slow, so requests are in flight when
/// the kill lands), rate limits, server errors, slow headers and broken streams.
fn faults() -> Vec<Step> {
    let cycle = [
        Step::ok(),
        Step::slow_stream(3),
        Step::ok(),
        Step::status(500),
        Step::slow_stream(6),
        Step::delay_headers(25),
        Step::ok(),
        Step::disconnect_after(2),
        Step::status(429).header("retry-after", "0"),
        Step::ok(),
        Step::slow_stream(2),
        Step::status(503),
    ];
    cycle.iter().cycle().take(6000).cloned().collect()
}

/// Configures providers through an in-process instance on the same database, so the binary
/// starts with them (and the same secrets) in place. Returns (user id, gateway key).
async fn configure(db_url: &str, backend: Backend, mock: &MockUpstream) -> (String, String) {
    let mut setup = TestApp::start_with(Opts {
        backend,
        database_url: Some(db_url.to_string()),
        cluster_secrets: true,
        ..Opts::default()
    })
    .await;
    let admin = setup.admin_token().await;
    for (name, format, keys, prio) in [
        (
            "crash-a",
            "CLAUDE",
            &[("sk-crash-a1", 1), ("sk-crash-a2", 2)][..],
            1,
        ),
        ("crash-b", "CLAUDE", &[("sk-crash-b1", 1)][..], 2),
        ("crash-o", "OPENAI", &[("sk-crash-o1", 1)][..], 1),
    ] {
        setup
            .add_route(&admin, name, format, &mock.url(), keys, MODEL, MODEL, prio)
            .await;
        for (k, _) in keys {
            mock.script(k, faults());
        }
    }
    let (uid, key) = setup.gateway_key(&admin, "crash@example.com").await;
    setup.wait_for_model(&key, MODEL).await;
    setup.shutdown().await;
    let _ = std::fs::remove_dir_all(&setup.data_dir);
    (uid, key)
}

/// One client request; `Some(id)` when the client saw it complete: a 200 whose body arrived
/// whole (a stream to its end, with its terminal event).
async fn one(client: &reqwest::Client, url: &str, key: &str, n: usize, id: &str) -> Option<()> {
    let stream = n % 2 == 1;
    let (path, body, terminal) = if n % 4 < 2 {
        (
            "/v1/messages",
            json!({"model": MODEL, "max_tokens": 64, "stream": stream,
                   "messages": [{"role": "user", "content": format!("request {n}")}]}),
            "message_stop",
        )
    } else {
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "max_tokens": 64, "stream": stream,
                   "messages": [{"role": "user", "content": format!("request {n}")}]}),
            "[DONE]",
        )
    };
    let resp = client
        .post(format!("{url}{path}"))
        .header("x-api-key", key)
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
        .header("x-request-id", id)
        .json(&body)
        .send()
        .await
        .ok()?;
    let ok = resp.status() == reqwest::StatusCode::OK;
    let bytes = resp.bytes().await.ok()?;
    if !ok {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes);
    if stream {
        text.contains(terminal).then_some(())
    } else {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .map(|_| ())
    }
}

async fn all_records(store: &aether_store::SqlStore) -> Vec<UsageRecord> {
    let mut out = Vec::new();
    loop {
        let page = store
            .list_usage(
                &UsageFilter::default(),
                Page {
                    limit: 500,
                    offset: u32::try_from(out.len()).unwrap(),
                },
            )
            .await
            .unwrap();
        let n = page.items.len();
        out.extend(page.items);
        if n < 500 {
            return out;
        }
    }
}

async fn crash_and_restart(backend: Backend) {
    let mock = MockUpstream::start().await;
    let db = TestStore::new(backend).await.expect("test database");
    let (uid, key) = configure(&db.url, backend, &mock).await;
    let dir = proc_kit::tmpdir("crash");
    let env = common::cluster_secret_env();
    let args = ["--database-url", db.url.as_str()];
    let server = proc_kit::start(&dir, &args, &env);

    // The load: WORKERS clients in a loop until the server is gone.
    let completed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done_count = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (client, url, key) = (client.clone(), server.url.clone(), key.clone());
        let (completed, done_count, killed) =
            (completed.clone(), done_count.clone(), killed.clone());
        workers.push(tokio::spawn(async move {
            // Bounded: at most 2000 requests per worker.
            for i in 0..2000 {
                let n = w * 2000 + i;
                let id = format!("crash-{w}-{i}");
                let r = one(&client, &url, &key, n, &id).await;
                if killed.load(Ordering::SeqCst) && r.is_none() {
                    return;
                }
                if r.is_some() {
                    completed.lock().unwrap().push(id);
                    done_count.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // Kill mid-run, once a good number of requests have completed.
    let started = Instant::now();
    while done_count.load(Ordering::SeqCst) < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the load made no progress: {} completed",
            done_count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    killed.store(true, Ordering::SeqCst);
    server.kill();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("workers stop once the server is gone")
            .unwrap();
    }
    let seen: Vec<String> = completed.lock().unwrap().clone();
    let seen_set: HashSet<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(seen.len(), seen_set.len());

    // Start again on the same data directory: what the dead process journaled is committed.
    let server = proc_kit::start(&dir, &args, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = all_records(&db.store).await;
        let completed_ids: HashSet<&str> = records
            .iter()
            .filter(|r| r.status == UsageStatus::Completed)
            .filter_map(|r| r.client_request_id.as_deref())
            .collect();
        let missing = seen_set
            .iter()
            .filter(|id| !completed_ids.contains(**id))
            .count();
        if missing == 0 {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} requests the client saw complete have no completed usage record",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = server.stop();

    // Exactly one record per client request (ids are keys; the client's id is not).
    let mut per_client: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        if let Some(c) = r.client_request_id.as_deref() {
            *per_client.entry(c).or_default() += 1;
        }
    }
    for id in &seen {
        assert_eq!(per_client[id.as_str()], 1, "request {id} has one record");
    }
    // Billing ran exactly once per settled record, the replayed ones included: the user's
    // lifetime spend is the sum of the settled records' charges.
    let settled: i64 = records
        .iter()
        .filter(|r| matches!(r.status, UsageStatus::Completed | UsageStatus::Failed))
        .map(|r| r.cost.total.nanos())
        .sum();
    let user = db
        .store
        .get_user(uid.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        user.total_usd.nanos(),
        settled,
        "billed exactly once per settled record"
    );
    let failed = records
        .iter()
        .filter(|r| r.status == UsageStatus::Failed)
        .count();
    let replayed = stderr.iter().any(|l| l.contains("replaying"));
    eprintln!(
        "{backend:?}: {} requests completed for the client before the kill, {} records, {failed} failed (faults), journal replay on restart: {replayed}",
        seen.len(),
        records.len()
    );
    assert!(failed > 0, "the injected faults produced failed requests");
    let _ = std::fs::remove_dir_all(&dir);
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_completed_request_sqlite() {
    crash_and_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_completed_request_postgres() {
    crash_and_restart(Backend::Postgres).await;
}
