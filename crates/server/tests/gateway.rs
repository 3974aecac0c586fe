//! The request path end to end: the real server, a real database, real HTTP to the mock
//! upstream. Every format, stream and non-stream; failover; stream commit; disconnects;
//! accounting to the nano-dollar.

#![recursion_limit = "256"]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::time::Duration;

use aether_domain::entities::{TraceStatus, UsageStatus};
use aether_testkit::{MockUpstream, RecordedRequest, Step, Usage};
use common::{TestApp, request_id};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5";

/// The six client formats and how a client of each calls the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
enum F {
    Claude,
    ClaudeCli,
    Openai,
    OpenaiCli,
    Gemini,
    GeminiCli,
}

impl F {
    const ALL: [F; 6] = [
        F::Claude,
        F::ClaudeCli,
        F::Openai,
        F::OpenaiCli,
        F::Gemini,
        F::GeminiCli,
    ];

    fn name(self) -> &'static str {
        match self {
            F::Claude => "CLAUDE",
            F::ClaudeCli => "CLAUDE_CLI",
            F::Openai => "OPENAI",
            F::OpenaiCli => "OPENAI_CLI",
            F::Gemini => "GEMINI",
            F::GeminiCli => "GEMINI_CLI",
        }
    }

    fn upstream_model(self) -> String {
        format!("up-{}", self.name().to_lowercase())
    }

    fn is_gemini(self) -> bool {
        matches!(self, F::Gemini | F::GeminiCli)
    }

    fn is_claude(self) -> bool {
        matches!(self, F::Claude | F::ClaudeCli)
    }

    /// Path (with query) and body of a request for `model`.
    fn request(self, model: &str, stream: bool) -> (String, Value) {
        match self {
            F::Claude | F::ClaudeCli => (
                "/v1/messages".into(),
                json!({ "model": model, "max_tokens": 256, "stream": stream, "messages": [{"role": "user", "content": "Hello"}] }),
            ),
            F::Openai => (
                "/v1/chat/completions".into(),
                json!({ "model": model, "stream": stream, "messages": [{"role": "user", "content": "Hello"}] }),
            ),
            F::OpenaiCli => (
                "/v1/responses".into(),
                json!({ "model": model, "stream": stream, "input": "Hello" }),
            ),
            F::Gemini | F::GeminiCli => (
                if stream {
                    format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
                } else {
                    format!("/v1beta/models/{model}:generateContent")
                },
                json!({ "contents": [{"role": "user", "parts": [{"text": "Hello"}]}] }),
            ),
        }
    }

    /// The client's credential header and format markers.
    fn client(self, rb: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
        let rb = rb
            .header("x-stainless-os", "Linux")
            .header("cookie", "session=secret")
            .header("x-forwarded-for", "6.6.6.6");
        match self {
            F::Claude => rb
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01"),
            F::ClaudeCli => rb
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
                .header("x-app", "cli"),
            F::Openai | F::OpenaiCli => rb.bearer_auth(key),
            F::Gemini => rb.header("x-goog-api-key", key),
            F::GeminiCli => rb.header("x-goog-api-key", key).header(
                "user-agent",
                "GeminiCLI/0.61.0/gemini-2.5-flash (linux; x64)",
            ),
        }
    }

    /// The upstream credential as the mock must have received it.
    fn check_upstream_auth(self, r: &RecordedRequest, secret: &str) {
        match self {
            F::Claude => assert_eq!(r.header("x-api-key"), Some(secret)),
            F::ClaudeCli | F::Openai | F::OpenaiCli => assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {secret}").as_str())
            ),
            F::Gemini | F::GeminiCli => assert_eq!(r.header("x-goog-api-key"), Some(secret)),
        }
        if self == F::ClaudeCli {
            assert!(
                r.header("x-api-key").is_none(),
                "the client's key must not travel upstream"
            );
        }
    }

    /// The scripted usage and the cost it must produce at $3/$15 (cache read $0.3, 5m write
    /// $3.75, 1h write $6).
    fn usage_and_cost(self) -> (Usage, &'static str) {
        if self.is_claude() {
            (
                Usage {
                    input: 1000,
                    output: 500,
                    cache_read: 10_000,
                    cache_creation_5m: 2000,
                    cache_creation_1h: 1000,
                    reasoning: 0,
                },
                "0.027",
            )
        } else {
            (
                Usage {
                    input: 1000,
                    output: 500,
                    cache_read: 10_000,
                    reasoning: 100,
                    ..Default::default()
                },
                "0.0135",
            )
        }
    }
}

/// Ids, timestamps and sequence numbers differ between two calls of the mock; everything
/// else must be byte-identical.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if s[i..].starts_with("Mock") {
            out.push_str("Mock#");
            i += 4;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            continue;
        }
        for key in ["\"created\":", "\"created_at\":", "\"sequence_number\":"] {
            if s[i..].starts_with(key) {
                out.push_str(key);
                i += key.len();
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b' ') {
                    i += 1;
                }
                out.push('#');
            }
        }
        if i < b.len() {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

async fn send(app: &TestApp, f: F, key: &str, path: &str, body: &Value) -> reqwest::Response {
    f.client(app.client.post(format!("{}{path}", app.url)), key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// What the mock answers when called directly with the same request (for "relayed unchanged").
async fn direct(mock: &MockUpstream, f: F, secret: &str, stream: bool) -> String {
    let (path, mut body) = f.request(&f.upstream_model(), stream);
    if !f.is_gemini() {
        body["model"] = json!(f.upstream_model());
    }
    let url = format!("{}{}", mock.url(), path);
    let rb = reqwest::Client::new().post(url).json(&body);
    let rb = match f {
        F::Claude => rb.header("x-api-key", secret),
        F::Gemini | F::GeminiCli => rb.header("x-goog-api-key", secret),
        _ => rb.bearer_auth(secret),
    };
    rb.send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_stream_and_not_is_forwarded_relayed_and_accounted() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    for (i, f) in F::ALL.iter().enumerate() {
        let secret = format!("sk-up-{}", f.name().to_lowercase());
        app.add_route(
            &admin,
            &format!("p{i}"),
            f.name(),
            &mock.url(),
            &[(&secret, 50)],
            MODEL,
            &f.upstream_model(),
            10,
        )
        .await;
    }
    let (uid, key) = app.gateway_key(&admin, "everyone@example.com").await;
    app.wait_for_model(&key, MODEL).await;

    let mut expected_total = aether_domain::Usd::ZERO;
    for f in F::ALL {
        for stream in [false, true] {
            let secret = format!("sk-up-{}", f.name().to_lowercase());
            let (usage, cost) = f.usage_and_cost();
            mock.set_default(
                Step::ok()
                    .text("The quick brown fox jumps over the lazy dog.")
                    .usage(usage),
            );
            mock.clear();
            let (path, body) = f.request(MODEL, stream);
            let resp = send(&app, f, &key, &path, &body).await;
            assert_eq!(resp.status(), StatusCode::OK, "{f:?} stream={stream}");
            let request_id = request_id(&resp);
            let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
            let got = resp.text().await.unwrap();
            if stream {
                assert!(
                    content_type.starts_with("text/event-stream"),
                    "{f:?}: {content_type}"
                );
            }

            // The upstream request: the endpoint's auth, the mapped model, allowed headers only.
            let reqs = mock.requests_for(&secret);
            assert_eq!(
                reqs.len(),
                1,
                "{f:?} stream={stream}: exactly one upstream call"
            );
            let up = &reqs[0];
            f.check_upstream_auth(up, &secret);
            if f.is_gemini() {
                assert!(
                    up.path.contains(&f.upstream_model()),
                    "model in the URL: {}",
                    up.path
                );
                assert_eq!(
                    up.query.as_deref().map(|q| q.contains("alt=sse")),
                    Some(stream)
                        .filter(|s| *s)
                        .or(up.query.as_ref().map(|_| false))
                );
            } else {
                assert_eq!(
                    up.body_json().unwrap()["model"],
                    f.upstream_model(),
                    "{f:?}: mapped model"
                );
            }
            assert_eq!(up.header("x-stainless-os"), Some("Linux"));
            assert_eq!(up.header("x-endpoint-extra"), Some("yes"));
            assert!(up.header("cookie").is_none() && up.header("x-forwarded-for").is_none());
            assert!(
                !up.headers.iter().any(|(_, v)| v.contains(&key)),
                "the gateway key never leaves"
            );
            if f == F::Openai && stream {
                assert_eq!(
                    up.body_json().unwrap()["stream_options"]["include_usage"],
                    true,
                    "usage is asked for upstream"
                );
            }

            // The response is what the upstream said (the usage chunk the client did not ask
            // for is removed from OpenAI streams).
            let want = direct(&mock, f, &secret, stream).await;
            // The one visible trace of the usage the gateway asked for on the client's behalf:
            // OpenAI puts `"usage":null` on every chunk once usage is requested.
            let got = if f == F::Openai && stream {
                got.replace(",\"usage\":null", "")
            } else {
                got
            };
            assert_eq!(
                normalize(&got),
                normalize(&want),
                "{f:?} stream={stream}: relayed unchanged"
            );

            // Usage and cost, exactly.
            let rec = app.usage(&request_id).await;
            assert_eq!(
                rec.status,
                UsageStatus::Completed,
                "{f:?} stream={stream}: {:?}",
                rec.error_message
            );
            assert_eq!(rec.status_code, Some(200));
            assert_eq!(rec.is_stream, stream);
            assert_eq!(
                rec.upstream_model.as_deref(),
                Some(f.upstream_model().as_str())
            );
            assert_eq!(rec.api_format.to_string(), f.name());
            assert_eq!(
                (
                    rec.tokens.input,
                    rec.tokens.output,
                    rec.tokens.cache_read,
                    rec.tokens.cache_creation_5m,
                    rec.tokens.cache_creation_1h
                ),
                (
                    usage.input,
                    usage.output,
                    usage.cache_read,
                    usage.cache_creation_5m,
                    usage.cache_creation_1h
                ),
                "{f:?} stream={stream}: normalised tokens"
            );
            assert_eq!(
                rec.cost.total.to_string(),
                cost,
                "{f:?} stream={stream}: cost"
            );
            assert!(rec.ttfb_ms.is_some() && rec.latency_ms.is_some());
            expected_total += rec.cost.total;
        }
    }
    // Every request was charged once to the user.
    for _ in 0..100 {
        let user = app.get(&format!("/api/admin/users/{uid}"), &admin).await.1;
        if user["total_usd"].as_str() == Some(expected_total.to_string().as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let user = app.get(&format!("/api/admin/users/{uid}"), &admin).await.1;
    assert_eq!(
        user["total_usd"].as_str(),
        Some(expected_total.to_string().as_str())
    );
    app.stop().await;
}

/// A deployment with two keys on one Claude endpoint: `sk-a` (preferred) and `sk-b`.
async fn two_keys(mock: &MockUpstream) -> (TestApp, String, String) {
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
    let (_, key) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    (app, admin, key)
}

async fn claude(app: &TestApp, key: &str, stream: bool) -> reqwest::Response {
    let (path, body) = F::Claude.request(MODEL, stream);
    send(app, F::Claude, key, &path, &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_key_fails_over_and_the_trace_shows_both() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;
    mock.script("sk-a", [Step::status(429).retry_after(30)]);
    let resp = claude(&app, &key, false).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = request_id(&resp);
    assert_eq!(
        (mock.request_count("sk-a"), mock.request_count("sk-b")),
        (1, 1)
    );
    let rec = app.usage(&id).await;
    assert_eq!(rec.status, UsageStatus::Completed);
    let traces = app.traces(&id).await;
    let summary: Vec<_> = traces.iter().map(|t| (t.status, t.status_code)).collect();
    assert_eq!(
        summary,
        vec![
            (TraceStatus::Failed, Some(429)),
            (TraceStatus::Success, Some(200))
        ]
    );
    assert_eq!(traces[0].error_type.as_deref(), Some("rate_limited"));

    // Retry-After rests the key: the next request goes straight to sk-b.
    let resp = claude(&app, &key, false).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        (mock.request_count("sk-a"), mock.request_count("sk-b")),
        (1, 2)
    );
    let id = request_id(&resp);
    let traces = app.traces(&id).await;
    assert!(traces.iter().any(|t| t.status == TraceStatus::Skipped
        && t.skip_reason.as_deref() == Some("cooling down after a rate limit")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_before_the_first_byte_fail_over() {
    let mock = MockUpstream::start().await;
    let (app, admin, key) = two_keys(&mock).await;
    // Keep sk-a first for every case (cache affinity would follow the failover to sk-b).
    let (s, _) = app
        .put(
            "/api/admin/system/configs/scheduling_mode",
            &admin,
            json!({ "value": "fixed_order" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let cases: Vec<(&str, Step, bool)> = vec![
        ("500", Step::status(500), false),
        ("529 overloaded", Step::status(529), false),
        ("timeout", Step::delay_headers(8_000), false),
        ("HTML page", Step::html(502), false),
        ("HTML page in a stream", Step::html(200), true),
        ("embedded stream error", Step::embedded_error(), true),
        ("empty stream", Step::empty_stream(), true),
        ("first byte too late", Step::first_byte_delay(8_000), true),
    ];
    let (_, providers) = app.get("/api/admin/providers", &admin).await;
    let pid = providers["items"][0]["id"].as_str().unwrap().to_string();
    let (_, eps) = app
        .get(
            &format!("/api/admin/endpoints/providers/{pid}/endpoints"),
            &admin,
        )
        .await;
    let eid = eps[0]["id"].as_str().unwrap().to_string();
    let (_, keys) = app
        .get(&format!("/api/admin/endpoints/{eid}/keys"), &admin)
        .await;
    let sk_a = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "sk-a")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, step, stream) in cases {
        mock.reset();
        // Eight failures in a row would open sk-a's breaker; each case starts closed.
        let (s, _) = app
            .post(
                &format!("/api/admin/endpoints/keys/{sk_a}/breaker/reset"),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        mock.script("sk-a", [step]);
        let resp = claude(&app, &key, stream).await;
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        let id = request_id(&resp);
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("The quick") || text.contains("text"),
            "{name}: the answer came from sk-b: {text}"
        );
        assert_eq!(mock.request_count("sk-b"), 1, "{name}");
        let traces = app.traces(&id).await;
        assert_eq!(traces.len(), 2, "{name}: {traces:?}");
        assert_eq!(traces[0].status, TraceStatus::Failed, "{name}: {traces:?}");
        assert_eq!(
            app.usage(&id).await.status,
            UsageStatus::Completed,
            "{name}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_fails_over() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    // A port nothing listens on: bind, note it, close it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    app.add_route(
        &admin,
        "dead",
        "CLAUDE",
        &format!("http://{dead}"),
        &[("sk-dead", 1)],
        MODEL,
        "claude-up",
        1,
    )
    .await;
    app.add_route(
        &admin,
        "alive",
        "CLAUDE",
        &mock.url(),
        &[("sk-alive", 1)],
        MODEL,
        "claude-up",
        2,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "dev@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    let resp = claude(&app, &key, true).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = request_id(&resp);
    resp.text().await.unwrap();
    let traces = app.traces(&id).await;
    assert_eq!(
        traces[0].error_type.as_deref(),
        Some("connect_error"),
        "{traces:?}"
    );
    assert_eq!(mock.request_count("sk-alive"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_is_returned_as_is_without_failover() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;
    mock.script("sk-a", [Step::status(400)]);
    let resp = claude(&app, &key, true).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let id = request_id(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        mock.request_count("sk-b"),
        0,
        "no failover for the client's own mistake"
    );
    let rec = app.usage(&id).await;
    assert_eq!(
        (rec.status, rec.status_code),
        (UsageStatus::Failed, Some(400))
    );
    // No health penalty: the same key serves the next request (affinity is not dropped
    // either; the preferred key stays first).
    let resp = claude(&app, &key, false).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(mock.request_count("sk-a"), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_break_mid_stream_ends_with_an_error_event_and_is_recorded() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;
    mock.script(
        "sk-a",
        [Step::disconnect_after(4).usage(Usage {
            input: 40,
            output: 30,
            ..Default::default()
        })],
    );
    let resp = claude(&app, &key, true).await;
    assert_eq!(resp.status(), StatusCode::OK, "committed before the break");
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(
        text.trim_end().ends_with('}') && text.contains("event: error"),
        "ends with an Anthropic error event: {text}"
    );
    assert_eq!(
        mock.request_count("sk-b"),
        0,
        "no failover after the first byte"
    );
    let rec = app.usage(&id).await;
    assert_eq!(rec.status, UsageStatus::Failed);
    assert_eq!(rec.error_type.as_deref(), Some("stream_interrupted"));
    assert_eq!(
        rec.tokens.input, 40,
        "the input tokens seen before the break are recorded"
    );
    assert!(!rec.cost.total.is_zero(), "partial usage is billed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_event_inside_a_committed_stream_is_relayed_and_recorded_as_failed() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;
    mock.script(
        "sk-a",
        [Step::stream_error_after(3).usage(Usage {
            input: 40,
            output: 30,
            ..Default::default()
        })],
    );
    let resp = claude(&app, &key, true).await;
    assert_eq!(resp.status(), StatusCode::OK, "committed before the error");
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("event: error") && !text.contains("message_stop"),
        "the upstream's error event reaches the client untouched: {text}"
    );
    assert_eq!(
        mock.request_count("sk-b"),
        0,
        "no failover after the first byte"
    );
    let rec = app.usage(&id).await;
    assert_eq!(rec.status, UsageStatus::Failed, "{rec:?}");
    assert_eq!(rec.error_type.as_deref(), Some("stream_interrupted"));
    assert!(
        rec.error_message
            .as_deref()
            .unwrap_or("")
            .contains("error event"),
        "{rec:?}"
    );
    assert_eq!(rec.tokens.input, 40, "usage seen before the error is kept");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closed_before_its_final_event_is_recorded_as_failed() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;
    mock.script(
        "sk-a",
        [Step::truncated_after(3).usage(Usage {
            input: 40,
            output: 30,
            ..Default::default()
        })],
    );
    let resp = claude(&app, &key, true).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = request_id(&resp);
    let text = resp.text().await.expect("the body ends cleanly");
    assert!(text.contains("event: message_start"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    let rec = app.usage(&id).await;
    assert_eq!(rec.status, UsageStatus::Failed, "{rec:?}");
    assert_eq!(rec.error_type.as_deref(), Some("stream_interrupted"));
    assert!(
        rec.error_message
            .as_deref()
            .unwrap_or("")
            .contains("final event"),
        "{rec:?}"
    );
    // And a complete stream is still recorded as completed.
    let resp = claude(&app, &key, true).await;
    let id = request_id(&resp);
    assert!(resp.text().await.unwrap().contains("message_stop"));
    assert_eq!(app.usage(&id).await.status, UsageStatus::Completed);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_stops_the_upstream_and_records_499() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;
    mock.script(
        "sk-a",
        [Step::slow_stream(200)
            .text("one two three four five six seven eight nine ten")
            .usage(Usage {
                input: 77,
                output: 10,
                ..Default::default()
            })],
    );
    let resp = claude(&app, &key, true).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = request_id(&resp);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(body);
    let rec = app.usage(&id).await;
    assert_eq!(
        (rec.status, rec.status_code),
        (UsageStatus::Failed, Some(499))
    );
    assert_eq!(rec.tokens.input, 77, "partial tokens are kept");
    // The upstream connection was closed, not left streaming.
    assert!(
        mock.wait_idle(Duration::from_secs(5)).await,
        "upstream request still in flight"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_candidate_fails_the_status_tells_the_client_what_to_do() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;

    mock.script("sk-a", [Step::status(429).retry_after(7)]);
    mock.script("sk-b", [Step::status(429).retry_after(3)]);
    let resp = claude(&app, &key, false).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        resp.headers()["retry-after"],
        "3",
        "the smallest Retry-After"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 upstream attempts")
    );

    // Both keys now rest; nothing can take the request.
    let resp = claude(&app, &key, false).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let mock2 = MockUpstream::start().await;
    let (app2, admin, key2) = two_keys(&mock2).await;
    app2.add_route(
        &admin,
        "oai",
        "OPENAI",
        &mock2.url(),
        &[("sk-o", 1)],
        MODEL,
        "gpt-up",
        1,
    )
    .await;
    mock2.script("sk-a", [Step::status(529)]);
    mock2.script("sk-b", [Step::status(529)]);
    assert_eq!(
        claude(&app2, &key2, true).await.status().as_u16(),
        529,
        "all overloaded: Anthropic's 529"
    );
    mock2.script("sk-a", [Step::delay_headers(8_000)]);
    mock2.script("sk-b", [Step::delay_headers(8_000)]);
    let resp = claude(&app2, &key2, false).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT, "all timed out");
    mock2.script("sk-a", [Step::status(500)]);
    mock2.script("sk-b", [Step::status(401)]);
    let resp = claude(&app2, &key2, false).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["type"],
        "error",
        "in the caller's dialect"
    );

    // OpenAI callers get their own dialect: an upstream 503 means overloaded (503), a 500
    // means failed (502).
    let (path, body) = F::Openai.request(MODEL, false);
    mock2.script("sk-o", [Step::status(503)]);
    let resp = send(&app2, F::Openai, &key2, &path, &body).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    mock2.script("sk-o", [Step::status(500)]);
    let resp = send(&app2, F::Openai, &key2, &path, &body).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 upstream attempt")
            && v["error"]["type"].is_string(),
        "{v}"
    );
    app.stop().await;
    app2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_affinity_keeps_a_user_on_one_key_and_lets_go_when_it_fails() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    // Four equal keys: the stable hash spreads users, affinity keeps each where it landed.
    app.add_route(
        &admin,
        "anthropic",
        "CLAUDE",
        &mock.url(),
        &[("sk-k1", 5), ("sk-k2", 5), ("sk-k3", 5), ("sk-k4", 5)],
        MODEL,
        "claude-up",
        10,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "sticky@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    let used = |mock: &MockUpstream| -> Vec<u64> {
        ["sk-k1", "sk-k2", "sk-k3", "sk-k4"]
            .iter()
            .map(|k| mock.request_count(k))
            .collect()
    };
    for _ in 0..5 {
        assert_eq!(claude(&app, &key, false).await.status(), StatusCode::OK);
    }
    let counts = used(&mock);
    assert_eq!(
        counts.iter().filter(|c| **c > 0).count(),
        1,
        "one key served every request: {counts:?}"
    );
    let home = counts.iter().position(|c| *c == 5).unwrap();
    let home_key = ["sk-k1", "sk-k2", "sk-k3", "sk-k4"][home];

    // The bound key fails: the request fails over, and the user moves with it.
    mock.script(home_key, [Step::status(500), Step::status(500)]);
    assert_eq!(claude(&app, &key, false).await.status(), StatusCode::OK);
    let after = used(&mock);
    let new_home = (0..4)
        .find(|i| *i != home && after[*i] > 0)
        .expect("another key took over");
    for _ in 0..3 {
        assert_eq!(claude(&app, &key, false).await.status(), StatusCode::OK);
    }
    let last = used(&mock);
    assert_eq!(
        last[new_home],
        after[new_home] + 3,
        "the user stays on the new key: {last:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_and_bad_input_are_answered_in_the_callers_dialect() {
    let mock = MockUpstream::start().await;
    let (app, admin, key) = two_keys(&mock).await;
    let anthropic = |k: &str| {
        app.client
            .post(format!("{}/v1/messages", app.url))
            .header("x-api-key", k.to_string())
    };
    let r = anthropic("sk-wrong")
        .json(&json!({"model": MODEL, "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    let r = anthropic(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let r = anthropic(&key)
        .json(&json!({"model": "no-such-model", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "not_found_error"
    );
    let r = app
        .client
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth("sk-wrong")
        .json(&json!({"model": MODEL, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let r = app
        .client
        .post(format!(
            "{}/v1beta/models/{MODEL}:generateContent?key=sk-wrong",
            app.url
        ))
        .json(&json!({"contents": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "UNAUTHENTICATED"
    );

    // Oversized bodies: 413 in the dialect.
    app.put(
        "/api/admin/system/configs/max_request_body_bytes",
        &admin,
        json!({ "value": 2048 }),
    )
    .await;
    let big = "x".repeat(4096);
    let r = anthropic(&key).json(&json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": big}]})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "request_too_large"
    );

    // A disabled key is refused at once (the snapshot follows the change).
    let (_, keys) = app.get("/api/admin/users", &admin).await;
    let uid = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "dev@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, list) = app
        .get(&format!("/api/admin/users/{uid}/api-keys"), &admin)
        .await;
    let kid = list["items"][0]["id"].as_str().unwrap().to_string();
    app.put(
        &format!("/api/admin/users/{uid}/api-keys/{kid}"),
        &admin,
        json!({ "is_active": false }),
    )
    .await;
    let mut refused = false;
    for _ in 0..100 {
        if claude(&app, &key, false).await.status() == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_listings_speak_each_dialect_and_respect_allow_lists() {
    let mock = MockUpstream::start().await;
    let (app, admin, key) = two_keys(&mock).await;
    app.add_route(
        &admin,
        "other",
        "OPENAI",
        &mock.url(),
        &[("sk-o", 1)],
        "gpt-5",
        "gpt-5",
        1,
    )
    .await;
    app.wait_for_model(&key, "gpt-5").await;
    let get = |path: &str, h: (&str, &str)| {
        app.client
            .get(format!("{}{path}", app.url))
            .header(h.0, h.1.to_string())
    };
    let oai: Value = get("/v1/models", ("authorization", &format!("Bearer {key}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oai["object"], "list");
    let ids: Vec<&str> = oai["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![MODEL, "gpt-5"]);
    let claude: Value = get("/v1/models", ("x-api-key", &key))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claude["data"][0]["type"], "model");
    let gem: Value = get("/v1beta/models", ("x-goog-api-key", &key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gem["models"][0]["name"], format!("models/{MODEL}"));
    let one: Value = get(
        &format!("/v1/models/{MODEL}"),
        ("authorization", &format!("Bearer {key}")),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(one["id"], MODEL);

    // A key allowed only claude-* sees only that.
    let (_, users) = app.get("/api/admin/users?search=dev", &admin).await;
    let uid = users["items"][0]["id"].as_str().unwrap().to_string();
    app.put(
        &format!("/api/admin/users/{uid}"),
        &admin,
        json!({ "allowed_models": ["claude-*"] }),
    )
    .await;
    let mut filtered = false;
    for _ in 0..100 {
        let v: Value = get("/v1/models", ("authorization", &format!("Bearer {key}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"].as_array().unwrap().len() == 1 {
            filtered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(filtered, "listing follows the allow-list");
    let (path, body) = F::Openai.request("gpt-5", false);
    let r = send(&app, F::Openai, &key, &path, &body).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "and so does routing");
    app.stop().await;
}

/// The real captures of Claude Code, Codex CLI and Gemini CLI go through as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_captures_are_accepted_and_forwarded() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "cc",
        "CLAUDE_CLI",
        &mock.url(),
        &[("sk-cc", 1)],
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        1,
    )
    .await;
    app.add_route(
        &admin,
        "codex",
        "OPENAI_CLI",
        &mock.url(),
        &[("sk-codex", 1)],
        "gpt-5",
        "gpt-5-2025-08-07",
        1,
    )
    .await;
    app.add_route(
        &admin,
        "gem",
        "GEMINI_CLI",
        &mock.url(),
        &[("sk-gem", 1)],
        "gemini-2.5-flash",
        "gemini-2.5-flash-001",
        1,
    )
    .await;
    let (_, key) = app.gateway_key(&admin, "cli@example.com").await;
    app.wait_for_model(&key, "gemini-2.5-flash").await;
    let fixtures = [
        (
            "claude-code-2.1.328.messages.json",
            "sk-cc",
            "claude-sonnet-4-5-20250929",
        ),
        (
            "codex-cli-0.169.0.responses.json",
            "sk-codex",
            "gpt-5-2025-08-07",
        ),
        (
            "gemini-cli-0.61.0.streamGenerateContent.json",
            "sk-gem",
            "gemini-2.5-flash-001",
        ),
    ];
    for (file, secret, upstream) in fixtures {
        let text = std::fs::read_to_string(format!(
            "{}/../../fixtures/clients/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let cap: Value = serde_json::from_str(&text).unwrap();
        let body = serde_json::to_vec(&cap["body"]).unwrap();
        let path = match cap["query"].as_str() {
            Some(q) => format!("{}?{q}", cap["path"].as_str().unwrap()),
            None => cap["path"].as_str().unwrap().to_string(),
        };
        let mut rb = app
            .client
            .post(format!("{}{path}", app.url))
            .body(body.clone());
        for (k, v) in cap["headers"].as_object().unwrap() {
            let k = k.as_str();
            if matches!(
                k,
                "host" | "content-length" | "connection" | "accept-encoding"
            ) {
                continue;
            }
            // The capture's credential is redacted: substitute the gateway key.
            let v = if matches!(k, "x-api-key" | "x-goog-api-key") {
                key.clone()
            } else if k == "authorization" {
                format!("Bearer {key}")
            } else {
                v.as_str().unwrap().to_string()
            };
            rb = rb.header(k, v);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{file}");
        let id = request_id(&resp);
        let text = resp.text().await.unwrap();
        assert!(!text.is_empty());
        let reqs = mock.requests_for(secret);
        let up = reqs.last().unwrap();
        if file.starts_with("gemini") {
            assert!(
                up.path.contains(upstream) && up.query.as_deref() == Some("alt=sse"),
                "{} {:?}",
                up.path,
                up.query
            );
            assert_eq!(
                up.body.as_ref(),
                body.as_slice(),
                "Gemini bodies pass byte for byte"
            );
        } else {
            let sent: Value = up.body_json().unwrap();
            assert_eq!(sent["model"], upstream);
            let mut original = cap["body"].clone();
            original["model"] = json!(upstream);
            assert_eq!(sent, original, "{file}: only the model changed");
        }
        if file.starts_with("claude") {
            assert_eq!(
                up.header("anthropic-beta"),
                cap["headers"]["anthropic-beta"].as_str()
            );
            assert_eq!(
                up.header("x-claude-code-session-id"),
                cap["headers"]["x-claude-code-session-id"].as_str()
            );
            assert_eq!(up.query.as_deref(), Some("beta=true"));
        }
        if file.starts_with("codex") {
            assert_eq!(
                up.header("session-id"),
                cap["headers"]["session-id"].as_str()
            );
            assert_eq!(up.header("originator"), Some("codex_exec"));
        }
        let rec = app.usage(&id).await;
        assert_eq!(
            rec.status,
            UsageStatus::Completed,
            "{file}: {:?}",
            rec.error_message
        );
        assert!(rec.tokens.input > 0, "{file}: usage parsed");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_ids_and_rate_limit_headers_are_relayed_and_client_ids_kept_apart() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;
    mock.script(
        "sk-a",
        [Step::ok()
            .header("anthropic-ratelimit-requests-remaining", "99")
            .header("set-cookie", "upstream=1")],
    );
    let (path, body) = F::Claude.request(MODEL, false);
    let resp = F::Claude
        .client(app.client.post(format!("{}{path}", app.url)), &key)
        .header("x-request-id", "client-chosen-id")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert!(
        h["request-id"].to_str().unwrap().starts_with("req_"),
        "the upstream's request id: {h:?}"
    );
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "99");
    assert!(
        h.get("set-cookie").is_none(),
        "only useful headers are relayed"
    );
    let id = h["x-aether-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, "client-chosen-id", "request ids are the gateway's own");
    let rec = app.usage(&id).await;
    assert_eq!(rec.client_request_id.as_deref(), Some("client-chosen-id"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_count_as_failures() {
    let mock = MockUpstream::start().await;
    let (app, _, key) = two_keys(&mock).await;
    mock.script(
        "sk-a",
        [Step::status(302)
            .header("location", "http://127.0.0.1:9/steal")
            .body("")],
    );
    let resp = claude(&app, &key, false).await;
    assert_eq!(resp.status(), StatusCode::OK, "served by sk-b");
    assert_eq!(mock.request_count("sk-b"), 1);
    let id = request_id(&resp);
    let traces = app.traces(&id).await;
    assert_eq!(traces[0].status_code, Some(302));
    app.stop().await;
}

/// An endpoint's outbound proxy is used: the mock plays an HTTP forward proxy here (requests
/// arrive in absolute form, for the endpoint's own host, with the proxy credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_through_the_endpoints_proxy() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let r = app
        .add_route(
            &admin,
            "proxied",
            "CLAUDE",
            "http://upstream.invalid",
            &[("sk-px", 1)],
            MODEL,
            "claude-up",
            1,
        )
        .await;
    let (s, _) = app
        .put(
            &format!("/api/admin/endpoints/{}", r.endpoint_id),
            &admin,
            json!({ "proxy": { "url": mock.url(), "username": "proxy-user", "password": "proxy-pass" } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, key) = app.gateway_key(&admin, "px@example.com").await;
    app.wait_for_model(&key, MODEL).await;
    let resp = claude(&app, &key, false).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let reqs = mock.requests_for("sk-px");
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].header("host"),
        Some("upstream.invalid"),
        "the request was for the endpoint's host"
    );
    let auth = reqs[0]
        .header("proxy-authorization")
        .expect("proxy credentials sent");
    assert!(auth.starts_with("Basic "), "{auth}");
    app.stop().await;
}

/// The database refuses usage writes for a while: requests are still served, the writer keeps
/// the records and retries, and once the database is back every record lands and is billed
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_survives_a_failing_database_and_is_billed_once() {
    use aether_store::db::Exec as _;
    let mock = MockUpstream::start().await;
    let (app, admin, key) = two_keys(&mock).await;
    mock.set_default(Step::ok().usage(Usage {
        input: 1000,
        output: 1000,
        ..Default::default()
    }));
    let db = app.store().db().clone();
    db.clone()
        .execute(
            "ALTER TABLE usage_records RENAME TO usage_records_away".into(),
            vec![],
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let resp = claude(&app, &key, false).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "serving does not wait for accounting"
        );
        ids.push(request_id(&resp));
    }
    tokio::time::sleep(Duration::from_millis(600)).await; // several failed write attempts
    db.clone()
        .execute(
            "ALTER TABLE usage_records_away RENAME TO usage_records".into(),
            vec![],
        )
        .await
        .unwrap();
    for id in &ids {
        let rec = app.usage(id).await;
        assert_eq!(rec.status, UsageStatus::Completed);
        assert_eq!(rec.cost.total.to_string(), "0.018"); // 1000 × $3/M + 1000 × $15/M
    }
    let (_, users) = app.get("/api/admin/users?search=dev", &admin).await;
    let mut total = String::new();
    for _ in 0..100 {
        let (_, u) = app
            .get(
                &format!(
                    "/api/admin/users/{}",
                    users["items"][0]["id"].as_str().unwrap()
                ),
                &admin,
            )
            .await;
        total = u["total_usd"].as_str().unwrap().to_string();
        if total == "0.09" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(total, "0.09", "five requests, each charged once");
    app.stop().await;
}

/// A graceful shutdown writes what the writer still holds before the process ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_usage_writer() {
    use aether_store::UsageRepo as _;
    let mock = MockUpstream::start().await;
    let (mut app, _, key) = two_keys(&mock).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let resp = claude(&app, &key, false).await;
        assert_eq!(resp.status(), StatusCode::OK);
        ids.push(
            resp.headers()["x-aether-request-id"]
                .to_str()
                .unwrap()
                .parse::<aether_domain::RequestId>()
                .unwrap(),
        );
    }
    app.shutdown().await;
    for id in ids {
        let rec = app
            .store()
            .get_usage(id)
            .await
            .unwrap()
            .expect("recorded before the process ended");
        assert_eq!(rec.status, UsageStatus::Completed);
    }
    app.stop().await;
}
