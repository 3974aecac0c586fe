//! Helpers shared by the integration tests: request bodies per dialect, an
//! SSE parser, and body readers that distinguish a clean end from an abort.
#![allow(dead_code)] // each test crate uses a different subset of the helpers

use std::time::Duration;

use aether_testkit::{MockUpstream, Usage};
use serde_json::{Value, json};

pub const KEY: &str = "sk-upstream-1";

/// The usage most tests script, in normalised terms.
pub fn scripted_usage() -> Usage {
    Usage {
        input: 100,
        output: 20,
        cache_read: 50,
        cache_creation_5m: 30,
        cache_creation_1h: 10,
        reasoning: 5,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub fn anthropic_body(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}]
    })
}

pub fn chat_body(stream: bool, include_usage: Option<bool>) -> Value {
    let mut b = json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}]
    });
    if let Some(inc) = include_usage {
        b["stream_options"] = json!({"include_usage": inc});
    }
    b
}

pub fn responses_body(stream: bool) -> Value {
    json!({"model": "gpt-5", "stream": stream, "input": "Hello"})
}

pub fn gemini_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]})
}

pub async fn anthropic(mock: &MockUpstream, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", mock.url()))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

pub async fn openai(mock: &MockUpstream, path: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/{path}", mock.url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub async fn gemini(
    mock: &MockUpstream,
    method_and_query: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:{method_and_query}",
            mock.url()
        ))
        .header("x-goog-api-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("bad JSON in {:?}: {e}", self.data))
    }
}

/// Parse an SSE body (tolerates `\n\n` and `\r\n\r\n` separators).
pub fn parse_sse(body: &str) -> Vec<Sse> {
    let norm = body.replace("\r\n", "\n");
    norm.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v.to_owned());
                } else if !line.starts_with(':') {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            Sse {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// Read a body to its end. Returns the bytes received and the error that
/// ended it, if any (None = clean end of body).
pub async fn read_body(mut resp: reqwest::Response) -> (Vec<u8>, Option<reqwest::Error>) {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

pub async fn sse_of(resp: reqwest::Response) -> Vec<Sse> {
    let (body, err) = read_body(resp).await;
    assert!(err.is_none(), "stream ended with {err:?}");
    parse_sse(&String::from_utf8(body).unwrap())
}

/// Event names of an SSE stream (`event:` lines), asserting each equals the
/// data's `type` (the Anthropic SDK dispatches on the `event:` line).
pub fn event_names(events: &[Sse]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let name = e.event.clone().expect("every event needs an `event:` line");
            assert_eq!(
                e.json()["type"],
                name.as_str(),
                "event line and data type differ"
            );
            name
        })
        .collect()
}
