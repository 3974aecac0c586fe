//! Every scripted fault does what it says, observed through a real HTTP client.
// Test crate: helpers outside #[test] fns are test code too (clippy.toml's
// allow-unwrap-in-tests only sees #[test] bodies).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use aether_testkit::{MockUpstream, Step};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn status_429_with_retry_after_per_dialect() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, vec![Step::status(429).retry_after(3); 4]);

    let r = anthropic(&mock, KEY, &anthropic_body(true)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("3"));
    assert_eq!(content_type(&r), "application/json");
    assert!(header(&r, "request-id").is_some());
    let raw = r.text().await.unwrap();
    // Same key order as the real API, for byte-level scanners.
    assert!(
        raw.starts_with(r#"{"type":"error","error":{"type":"rate_limit_error","#),
        "{raw}"
    );
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));

    let r = openai(&mock, "chat/completions", KEY, &chat_body(false, None)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("3"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again in 3s")
    );

    let r = openai(&mock, "responses", KEY, &responses_body(true)).await;
    assert_eq!(r.status(), 429);

    let r = gemini(&mock, "generateContent", KEY, &gemini_body()).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    let retry = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
        .unwrap();
    assert_eq!(retry["retryDelay"], "3s");
}

#[tokio::test]
async fn anthropic_error_catalogue() {
    let mock = MockUpstream::start().await;
    mock.script(
        KEY,
        [
            Step::status(529),
            Step::status(400),
            Step::status(500),
            Step::status(401),
            Step::status(503)
                .body("upstream connect error")
                .header("x-envoy-overloaded", "true"),
        ],
    );
    let expect = [
        (529, "overloaded_error", "Overloaded"),
        (400, "invalid_request_error", "prompt is too long"),
        (500, "api_error", "Internal server error"),
        (401, "authentication_error", "invalid x-api-key"),
    ];
    for (status, kind, msg) in expect {
        let r = anthropic(&mock, KEY, &anthropic_body(false)).await;
        assert_eq!(r.status(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], kind);
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(msg),
            "{v}"
        );
    }
    let r = anthropic(&mock, KEY, &anthropic_body(false)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "x-envoy-overloaded").as_deref(), Some("true"));
    assert_eq!(r.text().await.unwrap(), "upstream connect error");
}

#[tokio::test]
async fn embedded_error_is_the_first_event() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, vec![Step::embedded_error(); 4]);

    let r = anthropic(&mock, KEY, &anthropic_body(true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "text/event-stream");
    let events = sse_of(r).await;
    assert_eq!(events[0].event.as_deref(), Some("error"));
    assert_eq!(events[0].json()["error"]["type"], "overloaded_error");
    assert_eq!(events.len(), 1);

    let events = sse_of(openai(&mock, "chat/completions", KEY, &chat_body(true, None)).await).await;
    assert_eq!(events[0].json()["error"]["type"], "server_error");
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    let events = sse_of(openai(&mock, "responses", KEY, &responses_body(true)).await).await;
    assert_eq!(events[0].event.as_deref(), Some("error"));
    let e = events[0].json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "server_error");

    let r = gemini(&mock, "streamGenerateContent?alt=sse", KEY, &gemini_body()).await;
    assert_eq!(r.status(), 200);
    let events = sse_of(r).await;
    assert_eq!(events[0].json()["error"]["status"], "UNAVAILABLE");
}

#[tokio::test]
async fn mid_stream_disconnect_is_an_error_not_eof() {
    let mock = MockUpstream::start().await;
    mock.script(
        KEY,
        [
            Step::disconnect_after(2),
            Step::disconnect_after(3),
            Step::disconnect_after(1),
        ],
    );

    // Anthropic: message_start and content_block_start arrive, then the abort.
    let r = anthropic(&mock, KEY, &anthropic_body(true)).await;
    assert_eq!(r.status(), 200);
    let (body, err) = read_body(r).await;
    let err = err.expect("the client must see an error, not a clean end of body");
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );
    let events = parse_sse(&String::from_utf8(body).unwrap());
    let names: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(names, ["message_start", "content_block_start"]);

    // OpenAI chat: exactly three chunks, never [DONE].
    let r = openai(&mock, "chat/completions", KEY, &chat_body(true, Some(true))).await;
    let (body, err) = read_body(r).await;
    assert!(err.is_some());
    let events = parse_sse(&String::from_utf8(body).unwrap());
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    // Non-stream: the JSON body is cut short.
    let r = openai(&mock, "chat/completions", KEY, &chat_body(false, None)).await;
    assert_eq!(r.status(), 200);
    let (body, err) = read_body(r).await;
    assert!(err.is_some());
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn disconnect_beyond_the_end_still_cuts_the_stream() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::disconnect_after(1000)]);
    let r = gemini(&mock, "streamGenerateContent?alt=sse", KEY, &gemini_body()).await;
    let (body, err) = read_body(r).await;
    assert!(err.is_some());
    let chunks = parse_sse(&String::from_utf8(body).unwrap());
    assert!(!chunks.is_empty());
    assert!(
        chunks
            .iter()
            .all(|c| c.json()["candidates"][0].get("finishReason").is_none())
    );
}

#[tokio::test]
async fn html_error_page() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::html(502)]);
    let r = openai(&mock, "responses", KEY, &responses_body(true)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(content_type(&r), "text/html");
    let body = r.text().await.unwrap();
    assert!(body.contains("<title>502 Bad Gateway</title>"));
    assert!(body.contains("cloudflare"));
}

#[tokio::test]
async fn empty_stream_ends_without_events() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::empty_stream()]);
    let r = anthropic(&mock, KEY, &anthropic_body(true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "text/event-stream");
    let (body, err) = read_body(r).await;
    assert!(err.is_none());
    assert!(body.is_empty());
}

#[tokio::test]
async fn delay_headers_trips_a_client_timeout_or_just_delays() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::delay_headers(2_000), Step::delay_headers(150)]);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(600))
        .build()
        .unwrap();
    let url = format!("{}/v1/messages", mock.url());

    let started = Instant::now();
    let err = c
        .post(&url)
        .header("x-api-key", KEY)
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(started.elapsed() < Duration::from_millis(1_500));

    let started = Instant::now();
    let r = c
        .post(&url)
        .header("x-api-key", KEY)
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "message");
}

#[tokio::test]
async fn hang_needs_a_client_timeout() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::hang()]);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = c
        .post(format!("{}/v1/chat/completions", mock.url()))
        .bearer_auth(KEY)
        .json(&chat_body(true, None))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    // The client hung up, so hyper drops the waiting handler: no longer in flight.
    drop(c);
    assert!(mock.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(mock.key_stats(KEY).max_in_flight, 1);
}

#[tokio::test]
async fn dropping_the_mock_releases_a_hanging_request() {
    let mock = MockUpstream::start().await;
    mock.set_default(Step::hang());
    let url = format!("{}/v1/messages", mock.url());
    let req = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("x-api-key", KEY)
            .json(&anthropic_body(false))
            .send()
            .await
    });
    // Wait (bounded) until the request is in flight, then drop the mock.
    for _ in 0..200 {
        if mock.in_flight(KEY) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.in_flight(KEY), 1);
    drop(mock);
    let outcome = tokio::time::timeout(Duration::from_secs(2), req)
        .await
        .expect("request must end when the mock is dropped")
        .unwrap();
    match outcome {
        Err(_) => {}
        Ok(r) => {
            assert_ne!(r.status(), 200);
            let (_, err) = read_body(r).await;
            assert!(err.is_some());
        }
    }
}

#[tokio::test]
async fn first_byte_delay_sends_headers_first() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::first_byte_delay(300)]);
    let started = Instant::now();
    let mut r = anthropic(&mock, KEY, &anthropic_body(true)).await;
    let headers_at = started.elapsed();
    assert_eq!(r.status(), 200);
    assert!(
        headers_at < Duration::from_millis(250),
        "headers took {headers_at:?}"
    );
    let first = r.chunk().await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(first.starts_with(b"event: message_start"));
    let (rest, err) = read_body(r).await;
    assert!(err.is_none());
    assert!(String::from_utf8(rest).unwrap().contains("message_stop"));
}

#[tokio::test]
async fn slow_stream_paces_every_chunk() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::slow_stream(40).text("one two three four")]);
    let started = Instant::now();
    let r = openai(&mock, "chat/completions", KEY, &chat_body(true, None)).await;
    let mut r = r;
    let mut arrivals = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        arrivals.push((started.elapsed(), c));
    }
    let body: Vec<u8> = arrivals.iter().flat_map(|(_, c)| c.to_vec()).collect();
    let events = parse_sse(&String::from_utf8(body).unwrap());
    // role + 4 words + finish + [DONE] = 7 frames, 6 gaps of 40 ms.
    assert_eq!(events.len(), 7);
    assert!(started.elapsed() >= Duration::from_millis(240));
    assert!(
        arrivals.len() >= 3,
        "chunks arrive separately, got {}",
        arrivals.len()
    );
}

#[tokio::test]
async fn embedded_error_with_custom_code_in_gemini_array_mode() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::embedded_error_code(429)]);
    let r = gemini(&mock, "streamGenerateContent", KEY, &gemini_body()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(v[0]["error"]["code"], json!(429));
}
