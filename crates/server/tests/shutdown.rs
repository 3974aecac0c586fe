//! Graceful shutdown of the real binary: on SIGTERM `aether serve` stops accepting, lets the
//! requests and streams in flight finish for up to `--shutdown-timeout`, and drains the usage
//! writer before it exits, so what the clients were answered is recorded and billed. A stream
//! longer than the grace is cut at the deadline and its record still settles.
//!
//! Providers are configured through an in-process instance on the same SQLite database (as in
//! `crash.rs`); the binary then starts on that database with the same secrets, against the
//! mock upstream of this process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;
mod proc_kit;

use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aether_domain::entities::{UsageRecord, UsageStatus};
use aether_store::testing::TestStore;
use aether_store::{Backend, UsageRepo as _, UserRepo as _};
use aether_testkit::{MockUpstream, Step, Usage};
use common::{Opts, TestApp, request_id};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODEL: &str = "shutdown-model";
const KEY: &str = "sk-shutdown-up";

/// A database with one Anthropic route to the mock and a user with a gateway key, plus the
/// data directory the binary runs in (its usage journal lives there).
struct Deployment {
    mock: MockUpstream,
    db: TestStore,
    dir: std::path::PathBuf,
    user_id: String,
    key: String,
}

impl Deployment {
    async fn new(tag: &str) -> Self {
        let mock = MockUpstream::start().await;
        let db = TestStore::new(Backend::Sqlite)
            .await
            .expect("test database");
        let mut setup = TestApp::start_with(Opts {
            database_url: Some(db.url.clone()),
            cluster_secrets: true,
            ..Opts::default()
        })
        .await;
        let admin = setup.admin_token().await;
        setup
            .add_route(
                &admin,
                "shut",
                "CLAUDE",
                &mock.url(),
                &[(KEY, 1)],
                MODEL,
                MODEL,
                1,
            )
            .await;
        let (user_id, key) = setup.gateway_key(&admin, "shutdown@example.com").await;
        setup.wait_for_model(&key, MODEL).await;
        setup.shutdown().await;
        let _ = std::fs::remove_dir_all(&setup.data_dir);
        Self {
            mock,
            db,
            dir: proc_kit::tmpdir(tag),
            user_id,
            key,
        }
    }

    /// Starts `aether serve` on this deployment with `--shutdown-timeout grace_secs`.
    fn serve(&self, grace_secs: u64) -> proc_kit::Server {
        let grace = grace_secs.to_string();
        proc_kit::start(
            &self.dir,
            &["--database-url", &self.db.url, "--shutdown-timeout", &grace],
            &common::cluster_secret_env(),
        )
    }

    async fn record(&self, request_id: &str) -> Option<UsageRecord> {
        self.db
            .store
            .get_usage(request_id.parse().unwrap())
            .await
            .unwrap()
    }

    /// What the user has been billed so far, in nano-dollars.
    async fn billed(&self) -> i64 {
        let user = self.db.store.get_user(self.user_id.parse().unwrap());
        user.await.unwrap().unwrap().total_usd.nanos()
    }

    async fn teardown(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        self.db.teardown().await;
    }
}

/// A reply text of `n` words: the mock streams it as `n` deltas.
fn words(n: usize) -> String {
    (0..n).map(|i| format!("w{i} ")).collect()
}

fn tokens(input: u64, output: u64) -> Usage {
    Usage {
        input,
        output,
        ..Usage::default()
    }
}

/// A client that never reuses a connection, so every request is a new connection.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `POST /v1/messages`; returns the response once its head has arrived.
async fn messages(url: &str, key: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({ "model": MODEL, "max_tokens": 256, "stream": stream,
                       "messages": [{"role": "user", "content": "Hello"}] }),
        )
        .send()
        .await
        .expect("the request reaches the gateway")
}

/// What a client read of a stream: the text, whether the body ended cleanly, and when it ended.
struct Read {
    text: String,
    clean_end: bool,
    ended: Instant,
}

impl Read {
    fn deltas(&self) -> usize {
        self.text.matches("event: content_block_delta").count()
    }
}

/// Reads a stream to its end (or its break), counting deltas into `seen` as they arrive.
async fn read_stream(mut resp: reqwest::Response, seen: Arc<AtomicUsize>) -> Read {
    let mut text = String::new();
    let clean_end = loop {
        match tokio::time::timeout(Duration::from_secs(20), resp.chunk()).await {
            Ok(Ok(Some(b))) => {
                text.push_str(&String::from_utf8_lossy(&b));
                seen.store(
                    text.matches("event: content_block_delta").count(),
                    Ordering::SeqCst,
                );
            }
            Ok(Ok(None)) => break true,
            Ok(Err(_)) => break false,
            Err(_) => panic!("the stream stalled for 20 s: {text}"),
        }
    };
    Read {
        text,
        clean_end,
        ended: Instant::now(),
    }
}

/// Polls `cond` every 10 ms for at most `limit`.
async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (without blocking the runtime, which also runs the mock and the clients) at most
/// `limit` for the process to exit.
async fn exited(server: &mut proc_kit::Server, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tries new connections for up to 2 s; returns when one is refused (the listener is closed).
async fn refused(url: &str) -> reqwest::Error {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match client().get(format!("{url}/health")).send().await {
            Err(e) => return e,
            Ok(r) => assert!(
                Instant::now() < deadline,
                "a new connection is still served 2 s after SIGTERM ({})",
                r.status()
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_inflight_stream_and_requests_refuses_new_ones_and_flushes_usage() {
    let d = Deployment::new("graceful").await;
    // ~3.4 s of stream (17 events, 200 ms apart); two plain requests slow in different ways.
    let (u_stream, u_late, u_slow) = (tokens(1200, 340), tokens(800, 60), tokens(500, 25));
    d.mock.script(
        KEY,
        [
            Step::slow_stream(200).text(words(12)).usage(u_stream),
            Step::delay_headers(1_500).usage(u_late),
            Step::slow_stream(400).usage(u_slow),
        ],
    );
    let mut server = d.serve(10);
    let url = server.url.clone();

    let resp = messages(&url, &d.key, true).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stream_id = request_id(&resp);
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn(read_stream(resp, seen.clone()));
    wait_until("the first deltas", Duration::from_secs(5), || {
        seen.load(Ordering::SeqCst) >= 2
    })
    .await;
    // Two non-stream requests, each in flight at the upstream when the signal arrives.
    let mut plain = Vec::new();
    for n in 2..=3 {
        let (url, key) = (url.clone(), d.key.clone());
        plain.push(tokio::spawn(async move {
            let r = messages(&url, &key, false).await;
            let id = request_id(&r);
            (r.status(), id, r.json::<Value>().await.unwrap())
        }));
        wait_until(
            "the upstream sees the request",
            Duration::from_secs(5),
            || d.mock.request_count(KEY) == n,
        )
        .await;
    }

    let term = Instant::now();
    server.signal("TERM");
    let err = refused(&url).await;
    let refused_at = Instant::now();
    assert!(err.is_connect(), "new connections are refused: {err:?}");
    assert!(
        refused_at - term < Duration::from_secs(1),
        "refused promptly, took {:?}",
        refused_at - term
    );
    assert!(
        !reader.is_finished(),
        "the old stream is still running when new connections are refused"
    );
    let during = seen.load(Ordering::SeqCst);

    let status = exited(&mut server, Duration::from_secs(12)).await;
    let exit = term.elapsed();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    // The stream went on to its end: every delta, the terminal event, a clean end of body.
    let read = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(read.clean_end, "the stream ended cleanly: {}", read.text);
    assert_eq!(read.deltas(), 12, "every delta arrived: {}", read.text);
    assert!(read.deltas() > during, "deltas kept coming after SIGTERM");
    assert!(read.text.contains("event: message_stop"), "{}", read.text);
    for w in ["w0 ", "w11 "] {
        assert!(read.text.contains(w), "{w} in {}", read.text);
    }
    assert!(read.ended - term <= exit, "the process outlived the stream");
    assert!(
        exit < Duration::from_secs(10),
        "exited before the grace ran out"
    );
    eprintln!(
        "refused {:?} after SIGTERM; stream ended after {:?}; exit after {exit:?}",
        refused_at - term,
        read.ended - term
    );

    // Both plain requests got their whole answer.
    let mut ids = vec![(stream_id, u_stream)];
    for (task, usage) in plain.into_iter().zip([u_late, u_slow]) {
        let (status, id, body) = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["type"], "message", "{body}");
        assert!(
            body["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("deterministic reply")),
            "{body}"
        );
        assert_eq!(body["usage"]["output_tokens"], usage.output, "{body}");
        ids.push((id, usage));
    }

    // Read right after the exit, with no restart (which would replay the journal): the writer
    // drained before the process ended. Every request is completed with its tokens and billed.
    let mut cost = 0;
    for (id, usage) in &ids {
        let r = d
            .record(id)
            .await
            .unwrap_or_else(|| panic!("no usage record for {id}"));
        assert_eq!(r.status, UsageStatus::Completed, "{id}: {r:?}");
        assert_eq!(r.status_code, Some(200));
        assert_eq!(
            (r.tokens.input, r.tokens.output),
            (usage.input, usage.output)
        );
        assert!(r.cost.total.nanos() > 0, "{id} is priced");
        cost += r.cost.total.nanos();
    }
    assert!(d.record(&ids[0].0).await.unwrap().is_stream);
    assert_eq!(
        d.billed().await,
        cost,
        "each request billed once, before exit"
    );
    d.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_grace_is_cut_at_the_deadline_and_its_record_settles() {
    let d = Deployment::new("deadline").await;
    // ~14 s of stream (46 events, 300 ms apart) against a 1 s grace.
    d.mock.script(
        KEY,
        [Step::slow_stream(300)
            .text(words(40))
            .usage(tokens(900, 400))],
    );
    let mut server = d.serve(1);
    let resp = messages(&server.url, &d.key, true).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = request_id(&resp);
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn(read_stream(resp, seen.clone()));
    wait_until("the first deltas", Duration::from_secs(5), || {
        seen.load(Ordering::SeqCst) >= 2
    })
    .await;

    let term = Instant::now();
    server.signal("TERM");
    let status = exited(&mut server, Duration::from_secs(6)).await;
    let exit = term.elapsed();
    assert!(
        status.success(),
        "exit 0 after the grace ran out, got {status}"
    );
    assert!(
        exit >= Duration::from_millis(900),
        "the stream had its grace before the cut ({exit:?})"
    );
    let read = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !read.text.contains("message_stop") && read.deltas() < 40,
        "the stream was cut: {}",
        read.text
    );
    assert!(
        read.deltas() >= 4,
        "deltas flowed during the grace: {}",
        read.text
    );

    // The client was told why its stream ended, in its own dialect.
    assert!(
        read.text.contains("event: error") && read.text.contains("shutting down"),
        "the cut stream ends with an error event: {}",
        read.text
    );
    // The usage writer drained after the cut: the record is settled right after the exit,
    // without a restart, as a failure of the server (not of the client), billed once for what
    // the upstream reported before the cut.
    let settled = d
        .record(&id)
        .await
        .expect("the record exists after the exit");
    assert_eq!(settled.status, UsageStatus::Failed, "{settled:?}");
    assert_eq!(settled.status_code, Some(503), "{settled:?}");
    assert_eq!(
        settled.error_type.as_deref(),
        Some("server_shutdown"),
        "{settled:?}"
    );
    assert_eq!(
        settled.tokens.input, 900,
        "what the upstream reported before the cut"
    );
    assert_eq!(
        d.billed().await,
        settled.cost.total.nanos(),
        "the cut stream is billed once, for what it used"
    );
    d.teardown().await;
}
