//! Scripts per credential, the control API, recording, concurrency tracking,
//! real client captures, and the `aether-mock` binary.
// Test crate: helpers outside #[test] fns are test code too (clippy.toml's
// allow-unwrap-in-tests only sees #[test] bodies).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use aether_testkit::{Action, MockOptions, MockUpstream, Step, Usage};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn scripts_are_fifo_per_credential_then_default() {
    let mock = MockUpstream::start().await;
    mock.script("k1", [Step::status(429), Step::status(500)]);
    mock.script("k2", [Step::status(529)]);
    mock.script("k1", [Step::status(503)]); // appends
    assert_eq!(mock.pending_steps("k1"), 3);

    let status = |key: &'static str| {
        let mock = &mock;
        async move {
            anthropic(mock, key, &anthropic_body(false))
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("k2").await, 529);
    assert_eq!(status("k1").await, 429);
    assert_eq!(status("k2").await, 200, "k2's queue is empty: default step");
    assert_eq!(status("k1").await, 500);
    assert_eq!(status("k1").await, 503);
    assert_eq!(status("k1").await, 200);

    mock.set_default(Step::status(502));
    assert_eq!(status("k3").await, 502);
    mock.script("k3", [Step::ok()]);
    assert_eq!(status("k3").await, 200);
    assert_eq!(status("k3").await, 502);

    // Model lists and token counts never consume steps.
    mock.script("k4", [Step::status(429)]);
    let r = client()
        .get(format!("{}/v1/models", mock.url()))
        .bearer_auth("k4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.pending_steps("k4"), 1);
}

#[test]
fn steps_serialise_to_the_documented_json() {
    let cases = [
        (Step::ok(), json!({"type": "ok"})),
        (
            Step::ok()
                .text("hi")
                .usage(Usage {
                    input: 1,
                    output: 2,
                    ..Usage::default()
                })
                .tool_call("f", json!({"a": 1}))
                .header("x-a", "b"),
            json!({"type": "ok", "text": "hi",
                   "usage": {"input": 1, "output": 2, "cache_read": 0, "cache_creation_5m": 0, "cache_creation_1h": 0, "reasoning": 0},
                   "tool_call": {"name": "f", "arguments": {"a": 1}}, "headers": {"x-a": "b"}}),
        ),
        (
            Step::status(429).retry_after(3).body("{}"),
            json!({"type": "status", "code": 429, "retry_after": 3, "body": "{}"}),
        ),
        (
            Step::delay_headers(5),
            json!({"type": "delay_headers", "ms": 5}),
        ),
        (
            Step::slow_stream(5),
            json!({"type": "slow_stream", "chunk_delay_ms": 5}),
        ),
        (
            Step::first_byte_delay(5),
            json!({"type": "first_byte_delay", "ms": 5}),
        ),
        (Step::embedded_error(), json!({"type": "embedded_error"})),
        (
            Step::embedded_error_code(429),
            json!({"type": "embedded_error", "code": 429}),
        ),
        (
            Step::disconnect_after(2),
            json!({"type": "mid_stream_disconnect", "after_chunks": 2}),
        ),
        (Step::html(502), json!({"type": "html", "status": 502})),
        (Step::empty_stream(), json!({"type": "empty_stream"})),
        (Step::hang(), json!({"type": "hang"})),
    ];
    for (step, expected) in cases {
        assert_eq!(serde_json::to_value(&step).unwrap(), expected);
        assert_eq!(serde_json::from_value::<Step>(expected).unwrap(), step);
    }
    // Partial usage objects fill in zeros.
    let s: Step = serde_json::from_value(json!({"type": "ok", "usage": {"output": 7}})).unwrap();
    assert_eq!(s.usage.unwrap().output, 7);
    assert_eq!(s.action, Action::Ok);
    assert!(serde_json::from_value::<Step>(json!({"type": "explode"})).is_err());
}

#[tokio::test]
async fn control_api_drives_the_mock() {
    let mock = MockUpstream::start().await;
    let c = client();
    let ctl = |p: &str| format!("{}/__mock/{p}", mock.url());

    let r = c
        .post(ctl("script"))
        .json(&json!({"key": KEY, "steps": [{"type": "status", "code": 429, "retry_after": 1}, {"type": "ok", "text": "scripted"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["queued"], 2);
    let r = c
        .post(ctl("default"))
        .json(&json!({"type": "ok", "text": "from default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = openai(&mock, "chat/completions", KEY, &chat_body(false, None)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    let v: Value = openai(&mock, "chat/completions", KEY, &chat_body(false, None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "scripted");
    let v: Value = openai(&mock, "chat/completions", KEY, &chat_body(false, None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "from default");

    let reqs: Vec<Value> = c
        .get(ctl("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0]["credential"], KEY);
    assert_eq!(reqs[0]["path"], "/v1/chat/completions");
    assert_eq!(
        serde_json::from_str::<Value>(reqs[0]["body"].as_str().unwrap()).unwrap()["model"],
        "gpt-4o"
    );
    // The JSON form deserialises back into the Rust type.
    let typed: Vec<aether_testkit::RecordedRequest> = c
        .get(ctl("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(typed, mock.requests());

    let stats: Value = c
        .get(ctl("stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["keys"][KEY]["requests"], 3);
    assert_eq!(stats["keys"][KEY]["max_in_flight"], 1);

    assert_eq!(
        c.delete(ctl("requests")).send().await.unwrap().status(),
        200
    );
    assert!(mock.requests().is_empty());

    let bad = c.post(ctl("script")).body("{").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad = c
        .post(ctl("default"))
        .json(&json!({"type": "nonsense"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(c.get(ctl("nope")).send().await.unwrap().status(), 404);

    assert_eq!(c.post(ctl("reset")).send().await.unwrap().status(), 200);
    assert_eq!(mock.stats().keys.len(), 0);
    let v: Value = openai(&mock, "chat/completions", KEY, &chat_body(false, None))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(v["choices"][0]["message"]["content"], "from default");
    assert!(
        mock.requests()
            .iter()
            .all(|r| !r.path.starts_with("/__mock"))
    );
}

#[tokio::test]
async fn records_everything_and_stays_bounded() {
    let mock = MockUpstream::start_with(MockOptions {
        max_recorded: 3,
        ..MockOptions::default()
    })
    .await;
    let r = client()
        .post(format!("{}/v1/messages?beta=true", mock.url()))
        .header("x-api-key", KEY)
        .header("x-custom", "1")
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rec = &mock.requests()[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/v1/messages");
    assert_eq!(rec.query.as_deref(), Some("beta=true"));
    assert_eq!(rec.header("X-Custom"), Some("1"));
    assert_eq!(
        rec.header("anthropic-version"),
        None,
        "absent anthropic-version is accepted"
    );
    assert_eq!(rec.credential.as_deref(), Some(KEY));
    assert_eq!(rec.body_json().unwrap(), anthropic_body(false));
    assert!(rec.timestamp_ms > 1_600_000_000_000);

    for _ in 0..4 {
        anthropic(&mock, "other", &anthropic_body(false)).await;
    }
    let recs = mock.requests();
    assert_eq!(recs.len(), 3, "bounded");
    assert!(
        recs.iter()
            .all(|r| r.credential.as_deref() == Some("other"))
    );
    assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(mock.requests_for("other").len(), 3);
    assert_eq!(mock.request_count(KEY), 1);
    assert_eq!(mock.request_count("other"), 4);

    mock.clear();
    assert!(mock.requests().is_empty());
    mock.set_recording(false);
    anthropic(&mock, KEY, &anthropic_body(false)).await;
    assert!(mock.requests().is_empty());
    assert_eq!(
        mock.request_count(KEY),
        2,
        "counting continues without recording"
    );

    let quiet = MockUpstream::start_with(MockOptions {
        record: false,
        ..MockOptions::default()
    })
    .await;
    anthropic(&quiet, KEY, &anthropic_body(false)).await;
    assert!(quiet.requests().is_empty());
}

#[tokio::test]
async fn max_concurrency_counts_requests_until_their_body_ends() {
    let mock = MockUpstream::start().await;
    mock.set_default(Step::delay_headers(200));
    let reqs = (0..5).map(|_| {
        let url = mock.url();
        tokio::spawn(async move {
            let r = client()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(KEY)
                .json(&chat_body(true, None))
                .send()
                .await
                .unwrap();
            read_body(r).await.1.is_none()
        })
    });
    let reqs: Vec<_> = reqs.collect();
    for r in reqs {
        assert!(r.await.unwrap());
    }
    assert_eq!(mock.max_concurrency(KEY), 5);
    assert!(mock.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(mock.in_flight(KEY), 0);
    assert_eq!(mock.request_count(KEY), 5);

    // A slow body keeps its request in flight after the headers arrived.
    mock.set_default(Step::slow_stream(30));
    let mut r = anthropic(&mock, "k-slow", &anthropic_body(true)).await;
    let _first = r.chunk().await.unwrap();
    assert_eq!(mock.in_flight("k-slow"), 1);
    let (_, err) = read_body(r).await;
    assert!(err.is_none());
    assert!(mock.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(mock.in_flight("k-slow"), 0);
    assert_eq!(mock.max_concurrency("k-slow"), 1);

    // A client that gives up mid-body also ends the request.
    mock.set_default(Step::slow_stream(50));
    let mut r = anthropic(&mock, "k-drop", &anthropic_body(true)).await;
    let _first = r.chunk().await.unwrap();
    drop(r);
    assert!(mock.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(mock.in_flight("k-drop"), 0);
}

// ------------------------------------------------------- real client captures

struct Capture {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Value,
}

fn capture(name: &str) -> Capture {
    let path = format!(
        "{}/../../fixtures/clients/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    Capture {
        method: v["method"].as_str().unwrap().to_owned(),
        path: v["path"].as_str().unwrap().to_owned(),
        query: v["query"].as_str().map(str::to_owned),
        headers: v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect(),
        body: v["body"].clone(),
    }
}

/// Replay a capture as the client sent it (minus hop-by-hop and length headers,
/// which no longer match the redacted body).
async fn replay(mock: &MockUpstream, cap: &Capture) -> reqwest::Response {
    let url = match &cap.query {
        Some(q) => format!("{}{}?{q}", mock.url(), cap.path),
        None => format!("{}{}", mock.url(), cap.path),
    };
    let mut req = client().request(cap.method.parse().unwrap(), url);
    for (k, v) in &cap.headers {
        if !["host", "content-length", "connection", "accept-encoding"].contains(&k.as_str()) {
            req = req.header(k, v);
        }
    }
    req.body(serde_json::to_vec(&cap.body).unwrap())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn real_client_captures_are_accepted() {
    let mock = MockUpstream::start().await;
    mock.set_default(Step::ok().usage(scripted_usage()));

    let cap = capture("claude-code-2.1.328.messages.json");
    let r = replay(&mock, &cap).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "text/event-stream");
    let events = sse_of(r).await;
    let names = event_names(&events);
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(events[0].json()["message"]["model"], "claude-sonnet-4-5");

    let cap = capture("codex-cli-0.169.0.responses.json");
    let r = replay(&mock, &cap).await;
    assert_eq!(r.status(), 200);
    let events = sse_of(r).await;
    let names = event_names(&events);
    assert_eq!(names.last().map(String::as_str), Some("response.completed"));
    assert_eq!(events.last().unwrap().json()["response"]["model"], "gpt-5");

    let cap = capture("gemini-cli-0.61.0.streamGenerateContent.json");
    let r = replay(&mock, &cap).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "text/event-stream");
    let events = sse_of(r).await;
    let last = events.last().unwrap().json();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["modelVersion"], "gemini-2.5-flash");

    let recs = mock.requests();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(recs[0].query.as_deref(), Some("beta=true"));
    assert!(recs.iter().all(|r| r.credential.is_some()));
}

// -------------------------------------------------------------------- binary

#[test]
fn binary_prints_its_url_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aether-mock"))
        .args(["--listen", "127.0.0.1:0", "--no-record"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("first line names the URL")
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client();
        c.post(format!("{url}/__mock/script"))
            .json(&json!({"key": KEY, "steps": [{"type": "status", "code": 529}]}))
            .send()
            .await
            .unwrap();
        let r = c
            .post(format!("{url}/v1/messages"))
            .header("x-api-key", KEY)
            .json(&anthropic_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 529);
        let reqs: Vec<Value> = c
            .get(format!("{url}/__mock/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(reqs.is_empty(), "--no-record");
        let stats: Value = c
            .get(format!("{url}/__mock/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["keys"][KEY]["requests"], 1);
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Bounded wait for the exit.
    for _ in 0..300 {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("aether-mock did not stop on SIGTERM");
}
