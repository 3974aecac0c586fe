//! Cross-format conversion through the running gateway: every client dialect, stream and
//! non-stream, with a tool call and its result in the conversation, served by an upstream of
//! every other dialect (the mock), answered well-formed in the client's own dialect; the
//! upstream got a well-formed request in its dialect; usage is recorded in the upstream's
//! terms and the trace names the conversion. Plus the admin switch: without it no
//! cross-format candidate exists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)] // tests fail loudly

mod common;

use aether_domain::entities::UsageStatus;
use aether_testkit::{MockUpstream, Step};
use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Upstream dialects: (endpoint format, model served only by it, mock key).
const UPSTREAMS: [(&str, &str, &str); 4] = [
    ("CLAUDE", "via-claude", "sk-up-claude"),
    ("OPENAI", "via-chat", "sk-up-chat"),
    ("OPENAI_CLI", "via-responses", "sk-up-responses"),
    ("GEMINI", "via-gemini", "sk-up-gemini"),
];

/// Client dialects, named by the format their route implies.
const CLIENTS: [&str; 4] = ["CLAUDE", "OPENAI", "OPENAI_CLI", "GEMINI"];

fn weather_tool_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

/// A request in the client's dialect: a system prompt, a user turn, the assistant's tool call,
/// the tool's result, and a follow-up question.
fn request(client: &str, model: &str, stream: bool) -> (String, Value) {
    match client {
        "CLAUDE" => (
            "/v1/messages".into(),
            json!({
                "model": model, "max_tokens": 256, "stream": stream,
                "system": "You are terse.",
                "tools": [{"name": "get_weather", "description": "Weather by city", "input_schema": weather_tool_schema()}],
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C, sunny"},
                        {"type": "text", "text": "And Lyon?"}]}
                ]
            }),
        ),
        "OPENAI" => (
            "/v1/chat/completions".into(),
            json!({
                "model": model, "max_tokens": 256, "stream": stream,
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city", "parameters": weather_tool_schema()}}],
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_A", "content": "18°C, sunny"},
                    {"role": "user", "content": "And Lyon?"}
                ]
            }),
        ),
        "OPENAI_CLI" => (
            "/v1/responses".into(),
            json!({
                "model": model, "stream": stream, "instructions": "You are terse.",
                "tools": [{"type": "function", "name": "get_weather", "description": "Weather by city", "parameters": weather_tool_schema()}],
                "input": [
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
                    {"type": "function_call", "call_id": "call_A", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                    {"type": "function_call_output", "call_id": "call_A", "output": "18°C, sunny"},
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And Lyon?"}]}
                ]
            }),
        ),
        _ => (
            format!(
                "/v1beta/models/{model}:{}",
                if stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                }
            ),
            json!({
                "systemInstruction": {"parts": [{"text": "You are terse."}]},
                "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather by city", "parameters": weather_tool_schema()}]}],
                "contents": [
                    {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
                    {"role": "model", "parts": [{"text": "Checking."}, {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "18°C, sunny"}}}, {"text": "And Lyon?"}]}
                ],
                "generationConfig": {"maxOutputTokens": 256}
            }),
        ),
    }
}

/// The SSE events of a body: (event name, JSON data); `[DONE]` comes back as a string.
fn sse(body: &str) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    for block in body.replace("\r\n", "\n").split("\n\n") {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.trim_start());
            }
        }
        if data.is_empty() {
            continue;
        }
        let v = serde_json::from_str(&data).unwrap_or(Value::String(data));
        out.push((name, v));
    }
    out
}

/// What a client of `client` saw, reduced to: the text, the tool calls (name, arguments) and
/// whether the stop reason says "tool use". Panics with context when the answer is not
/// well-formed in that dialect.
fn answer(client: &str, stream: bool, body: &str) -> (String, Vec<(String, Value)>, bool) {
    let mut text = String::new();
    let mut calls: Vec<(String, Value)> = Vec::new();
    let tool_stop;
    if !stream {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        match client {
            "CLAUDE" => {
                assert_eq!(v["type"], "message", "{v}");
                assert_eq!(v["role"], "assistant", "{v}");
                assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
                assert!(v["usage"]["input_tokens"].is_u64(), "{v}");
                assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0, "{v}");
                for b in v["content"].as_array().unwrap() {
                    match b["type"].as_str().unwrap() {
                        "text" => text.push_str(b["text"].as_str().unwrap()),
                        "tool_use" => {
                            assert!(b["id"].as_str().is_some_and(|s| !s.is_empty()), "{b}");
                            calls.push((b["name"].as_str().unwrap().into(), b["input"].clone()));
                        }
                        other => panic!("unexpected block {other}: {v}"),
                    }
                }
                tool_stop = v["stop_reason"] == "tool_use";
            }
            "OPENAI" => {
                assert_eq!(v["object"], "chat.completion", "{v}");
                assert!(v["usage"]["prompt_tokens"].is_u64(), "{v}");
                let c = &v["choices"][0];
                text.push_str(c["message"]["content"].as_str().unwrap_or(""));
                for tc in c["message"]["tool_calls"].as_array().into_iter().flatten() {
                    assert!(tc["id"].as_str().is_some_and(|s| !s.is_empty()), "{tc}");
                    assert_eq!(tc["type"], "function");
                    let args: Value =
                        serde_json::from_str(tc["function"]["arguments"].as_str().unwrap())
                            .unwrap();
                    calls.push((tc["function"]["name"].as_str().unwrap().into(), args));
                }
                tool_stop = c["finish_reason"] == "tool_calls";
            }
            "OPENAI_CLI" => {
                assert_eq!(v["object"], "response", "{v}");
                assert_eq!(v["status"], "completed", "{v}");
                assert!(v["usage"]["input_tokens"].is_u64(), "{v}");
                for item in v["output"].as_array().unwrap() {
                    match item["type"].as_str().unwrap() {
                        "message" => {
                            for p in item["content"].as_array().unwrap() {
                                text.push_str(p["text"].as_str().unwrap());
                            }
                        }
                        "function_call" => {
                            assert!(item["call_id"].as_str().is_some_and(|s| !s.is_empty()));
                            let args: Value =
                                serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
                            calls.push((item["name"].as_str().unwrap().into(), args));
                        }
                        "reasoning" => {}
                        other => panic!("unexpected item {other}: {v}"),
                    }
                }
                tool_stop = !calls.is_empty();
            }
            _ => {
                let c = &v["candidates"][0];
                assert_eq!(c["content"]["role"], "model", "{v}");
                assert!(v["usageMetadata"]["promptTokenCount"].is_u64(), "{v}");
                for p in c["content"]["parts"].as_array().unwrap() {
                    if let Some(t) = p["text"].as_str() {
                        text.push_str(t);
                    }
                    if let Some(fc) = p.get("functionCall") {
                        calls.push((fc["name"].as_str().unwrap().into(), fc["args"].clone()));
                    }
                }
                tool_stop = c["finishReason"] == "STOP" && !calls.is_empty();
            }
        }
        return (text, calls, tool_stop);
    }
    let events = sse(body);
    assert!(!events.is_empty(), "an empty stream: {body}");
    match client {
        "CLAUDE" => {
            let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
            assert_eq!(names.first(), Some(&"message_start"), "{body}");
            assert_eq!(names.last(), Some(&"message_stop"), "{body}");
            assert!(names.contains(&"message_delta"), "{body}");
            let mut args: Vec<String> = Vec::new();
            let mut stop = Value::Null;
            let mut open: Option<usize> = None;
            for (n, d) in &events {
                assert_eq!(
                    d["type"].as_str(),
                    n.as_deref(),
                    "event name = data type: {d}"
                );
                match n.as_deref().unwrap() {
                    "content_block_start" => {
                        assert!(open.is_none(), "one block at a time: {body}");
                        open = Some(d["index"].as_u64().unwrap() as usize);
                        if d["content_block"]["type"] == "tool_use" {
                            calls.push((
                                d["content_block"]["name"].as_str().unwrap().into(),
                                Value::Null,
                            ));
                            args.push(String::new());
                        }
                    }
                    "content_block_delta" => {
                        assert_eq!(open, Some(d["index"].as_u64().unwrap() as usize), "{body}");
                        match d["delta"]["type"].as_str().unwrap() {
                            "text_delta" => text.push_str(d["delta"]["text"].as_str().unwrap()),
                            "input_json_delta" => args
                                .last_mut()
                                .unwrap()
                                .push_str(d["delta"]["partial_json"].as_str().unwrap()),
                            _ => {}
                        }
                    }
                    "content_block_stop" => open = None,
                    "message_delta" => stop = d["delta"]["stop_reason"].clone(),
                    _ => {}
                }
            }
            for (c, a) in calls.iter_mut().zip(args) {
                c.1 = serde_json::from_str(&a).unwrap();
            }
            tool_stop = stop == "tool_use";
        }
        "OPENAI" => {
            assert_eq!(
                events.last().unwrap().1,
                Value::String("[DONE]".into()),
                "{body}"
            );
            let mut finish = Value::Null;
            let mut args: Vec<String> = Vec::new();
            for (_, d) in &events[..events.len() - 1] {
                assert_eq!(d["object"], "chat.completion.chunk", "{d}");
                for c in d["choices"].as_array().unwrap() {
                    if let Some(t) = c["delta"]["content"].as_str() {
                        text.push_str(t);
                    }
                    for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                        let i = tc["index"].as_u64().unwrap() as usize;
                        if let Some(name) = tc["function"]["name"].as_str() {
                            assert!(tc["id"].as_str().is_some(), "{tc}");
                            assert_eq!(i, calls.len(), "tool indices count up");
                            calls.push((name.into(), Value::Null));
                            args.push(String::new());
                        }
                        if let Some(a) = tc["function"]["arguments"].as_str() {
                            args[i].push_str(a);
                        }
                    }
                    if !c["finish_reason"].is_null() {
                        finish = c["finish_reason"].clone();
                    }
                }
            }
            for (c, a) in calls.iter_mut().zip(args) {
                c.1 = serde_json::from_str(&a).unwrap();
            }
            tool_stop = finish == "tool_calls";
        }
        "OPENAI_CLI" => {
            let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
            assert_eq!(names.first(), Some(&"response.created"), "{body}");
            assert_eq!(names.last(), Some(&"response.completed"), "{body}");
            for (n, d) in &events {
                assert_eq!(d["type"].as_str(), n.as_deref(), "{d}");
                match n.as_deref().unwrap() {
                    "response.output_text.delta" => text.push_str(d["delta"].as_str().unwrap()),
                    "response.output_item.done" if d["item"]["type"] == "function_call" => {
                        let args: Value =
                            serde_json::from_str(d["item"]["arguments"].as_str().unwrap()).unwrap();
                        calls.push((d["item"]["name"].as_str().unwrap().into(), args));
                    }
                    _ => {}
                }
            }
            let done = &events.last().unwrap().1["response"];
            assert_eq!(done["status"], "completed", "{done}");
            assert!(
                done["usage"]["output_tokens"].as_u64().unwrap() > 0,
                "{done}"
            );
            tool_stop = !calls.is_empty();
        }
        _ => {
            let mut finish = Value::Null;
            for (_, d) in &events {
                let c = &d["candidates"][0];
                for p in c["content"]["parts"].as_array().into_iter().flatten() {
                    if let Some(t) = p["text"].as_str() {
                        text.push_str(t);
                    }
                    if let Some(fc) = p.get("functionCall") {
                        calls.push((fc["name"].as_str().unwrap().into(), fc["args"].clone()));
                    }
                }
                if !c["finishReason"].is_null() {
                    finish = c["finishReason"].clone();
                }
            }
            assert!(
                events.last().unwrap().1["usageMetadata"]["promptTokenCount"].is_u64(),
                "{body}"
            );
            tool_stop = finish == "STOP" && !calls.is_empty();
        }
    }
    (text, calls, tool_stop)
}

/// Checks the request the upstream received is its own dialect's, with the conversation's
/// tool call and tool result in place and the upstream model name set.
fn check_upstream_request(upstream: &str, model: &str, path: &str, body: &Value) {
    let s = body.to_string();
    assert!(s.contains("get_weather"), "{upstream}: {s}");
    assert!(s.contains("18°C, sunny"), "the tool result crossed: {s}");
    assert!(
        s.contains("You are terse."),
        "the system prompt crossed: {s}"
    );
    match upstream {
        "CLAUDE" => {
            assert_eq!(path, "/v1/messages");
            assert_eq!(body["model"], model);
            let msgs = body["messages"].as_array().unwrap();
            let result = msgs
                .iter()
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .find(|b| b["type"] == "tool_result")
                .expect("a tool_result block");
            let call = msgs
                .iter()
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .find(|b| b["type"] == "tool_use")
                .expect("a tool_use block");
            assert_eq!(result["tool_use_id"], call["id"], "{s}");
            assert!(body["max_tokens"].as_u64().unwrap() > 0);
        }
        "OPENAI" => {
            assert_eq!(path, "/v1/chat/completions");
            assert_eq!(body["model"], model);
            let msgs = body["messages"].as_array().unwrap();
            let tool = msgs
                .iter()
                .find(|m| m["role"] == "tool")
                .expect("a tool message");
            let call = msgs
                .iter()
                .find_map(|m| m["tool_calls"].as_array().map(|a| a[0].clone()))
                .expect("an assistant tool call");
            assert_eq!(tool["tool_call_id"], call["id"], "{s}");
        }
        "OPENAI_CLI" => {
            assert_eq!(path, "/v1/responses");
            assert_eq!(body["model"], model);
            let items = body["input"].as_array().unwrap();
            let out = items
                .iter()
                .find(|i| i["type"] == "function_call_output")
                .expect("a function_call_output item");
            let call = items
                .iter()
                .find(|i| i["type"] == "function_call")
                .expect("a function_call item");
            assert_eq!(out["call_id"], call["call_id"], "{s}");
        }
        _ => {
            assert!(
                path.starts_with(&format!("/v1beta/models/{model}:")),
                "the model is in the URL: {path}"
            );
            assert!(body.get("model").is_none(), "{s}");
            let contents = body["contents"].as_array().unwrap();
            assert!(
                contents
                    .iter()
                    .all(|c| c["role"] == "user" || c["role"] == "model")
            );
            assert!(
                s.contains("functionResponse") && s.contains("functionCall"),
                "{s}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_dialect_is_served_by_every_other_upstream_dialect() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    for (format, model, key) in UPSTREAMS {
        let r = app
            .add_route(
                &admin,
                model,
                format,
                &mock.url(),
                &[(key, 1)],
                model,
                &format!("{model}-upstream"),
                1,
            )
            .await;
        let (s, v) = app
            .patch(
                &format!("/api/admin/models/global/{}", r.model_id),
                &admin,
                json!({"capabilities": {"streaming": true, "function_calling": true, "allow_cross_format": true}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (_, gw_key) = app.gateway_key(&admin, "convert@example.com").await;
    app.wait_for_model(&gw_key, "via-gemini").await;
    mock.set_recording(true);

    let mut checked = 0;
    for client in CLIENTS {
        for (upstream, model, mock_key) in UPSTREAMS {
            if upstream == client {
                continue;
            }
            for stream in [false, true] {
                let ctx = format!("{client} client → {upstream} upstream, stream={stream}");
                mock.clear();
                mock.script(
                    mock_key,
                    [Step::ok()
                        .text("Lyon is cloudy.")
                        .tool_call("get_weather", json!({"city": "Lyon"}))],
                );
                let (path, body) = request(client, model, stream);
                let mut req = app.client.post(format!("{}{path}", app.url)).json(&body);
                req = match client {
                    "CLAUDE" => req
                        .header("x-api-key", &gw_key)
                        .header("anthropic-version", "2023-06-01"),
                    "GEMINI" => req.header("x-goog-api-key", &gw_key),
                    _ => req.bearer_auth(&gw_key),
                };
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let rid = resp
                    .headers()
                    .get("x-aether-request-id")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                let text = resp.text().await.unwrap();
                assert_eq!(status, StatusCode::OK, "{ctx}: {text}");
                if stream {
                    assert!(ct.starts_with("text/event-stream"), "{ctx}: {ct}");
                } else {
                    assert!(ct.starts_with("application/json"), "{ctx}: {ct}");
                }
                let (said, calls, tool_stop) = answer(client, stream, &text);
                assert_eq!(said, "Lyon is cloudy.", "{ctx}: {text}");
                assert_eq!(
                    calls,
                    vec![("get_weather".to_string(), json!({"city": "Lyon"}))],
                    "{ctx}: {text}"
                );
                assert!(tool_stop, "{ctx}: the stop reason says tool use: {text}");

                let seen = mock.requests_for(mock_key);
                assert_eq!(seen.len(), 1, "{ctx}");
                let up_body: Value = serde_json::from_slice(&seen[0].body).unwrap();
                check_upstream_request(
                    upstream,
                    &format!("{model}-upstream"),
                    &seen[0].path,
                    &up_body,
                );
                if upstream == "GEMINI" && stream {
                    assert_eq!(seen[0].query.as_deref(), Some("alt=sse"), "{ctx}");
                }

                let rec = app.usage(&rid).await;
                assert_eq!(rec.status, UsageStatus::Completed, "{ctx}");
                assert_eq!(rec.api_format.as_str(), client, "{ctx}");
                assert_eq!(
                    rec.endpoint_api_format.map(|f| f.as_str()),
                    Some(upstream),
                    "{ctx}"
                );
                assert!(rec.tokens.output > 0, "{ctx}: {:?}", rec.tokens);
                assert!(rec.cost.total > aether_domain::Usd::ZERO, "{ctx}: priced");
                let traces = app.traces(&rid).await;
                assert_eq!(
                    traces[0].conversion.as_deref(),
                    Some(format!("{client}→{upstream}").as_str()),
                    "{ctx}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked, 24,
        "4 client dialects × 3 other upstreams × stream and not"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_json_array_streams_and_errors_are_converted_too() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    app.add_route(
        &admin,
        "anthropic",
        "CLAUDE",
        &mock.url(),
        &[("sk-a", 1)],
        "claude-x",
        "claude-x-upstream",
        1,
    )
    .await;
    // The system default now allows conversion for models without their own setting.
    let (s, v) = app
        .put(
            "/api/admin/system/configs/allow_cross_format",
            &admin,
            json!({"value": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, gw_key) = app.gateway_key(&admin, "array@example.com").await;
    app.wait_for_model(&gw_key, "claude-x").await;

    // A Gemini client without alt=sse gets one JSON array.
    mock.script("sk-a", [Step::ok().text("Hello from Claude.")]);
    let (_, body) = request("GEMINI", "claude-x", true);
    let r = app
        .client
        .post(format!(
            "{}/v1beta/models/claude-x:streamGenerateContent",
            app.url
        ))
        .header("x-goog-api-key", &gw_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let arr: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let said: String = arr
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(said, "Hello from Claude.");

    // An upstream client error comes back in the client's dialect, with the upstream message.
    mock.script(
        "sk-a",
        [Step::from(aether_testkit::Action::Status {
            code: 400,
            retry_after: None,
            body: Some(
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}"#
                    .into(),
            ),
        })],
    );
    let (path, body) = request("OPENAI", "claude-x", false);
    let r = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(&gw_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "prompt is too long", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");

    // A request the converter cannot read is refused with a 400 in the client's dialect.
    let r = app
        .client
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(&gw_key)
        .json(&json!({"model": "claude-x", "messages": "not a list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );

    // Mid-stream upstream break after commit: the client gets an error in its own dialect.
    mock.script(
        "sk-a",
        [Step::from(aether_testkit::Action::MidStreamDisconnect {
            after_chunks: 3,
        })],
    );
    let (path, body) = request("OPENAI_CLI", "claude-x", true);
    let r = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(&gw_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let rid = r.headers()["x-aether-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = r.text().await.unwrap();
    let events = sse(&text);
    let names: Vec<&str> = events.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert!(names.contains(&"response.failed"), "{text}");
    assert!(!names.contains(&"response.completed"), "{text}");
    let rec = app.usage(&rid).await;
    assert_eq!(rec.status, UsageStatus::Failed);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_switch_no_cross_format_candidate_exists() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let r = app
        .add_route(
            &admin,
            "gemini-only",
            "GEMINI",
            &mock.url(),
            &[("sk-g", 1)],
            "gem-model",
            "gem-model",
            1,
        )
        .await;
    let (_, gw_key) = app.gateway_key(&admin, "noswitch@example.com").await;
    app.wait_for_model(&gw_key, "gem-model").await;
    let (path, body) = request("CLAUDE", "gem-model", false);
    let send = || {
        app.client
            .post(format!("{}{path}", app.url))
            .header("x-api-key", &gw_key)
            .json(&body)
            .send()
    };
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic's error envelope: {v}");
    assert_eq!(mock.request_count("sk-g"), 0);

    // Turned on for this model only: served.
    let (s, _) = app
        .patch(
            &format!("/api/admin/models/global/{}", r.model_id),
            &admin,
            json!({"capabilities": {"streaming": true, "allow_cross_format": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut ok = false;
    for _ in 0..100 {
        if send().await.unwrap().status() == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ok, "the model's own switch allows conversion");
    assert_eq!(mock.request_count("sk-g"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_format_candidates_come_first_at_equal_priority() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    // Created first, so any accidental insertion-order preference would pick it.
    let gem = app
        .add_route(
            &admin,
            "gemini",
            "GEMINI",
            &mock.url(),
            &[("sk-gem", 1)],
            "shared",
            "shared-g",
            1,
        )
        .await;
    app.add_route(
        &admin,
        "openai",
        "OPENAI",
        &mock.url(),
        &[("sk-oai", 1)],
        "shared",
        "shared-o",
        1,
    )
    .await;
    app.patch(
        &format!("/api/admin/models/global/{}", gem.model_id),
        &admin,
        json!({"capabilities": {"streaming": true, "allow_cross_format": true}}),
    )
    .await;
    let (_, gw_key) = app.gateway_key(&admin, "order@example.com").await;
    app.wait_for_model(&gw_key, "shared").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (path, body) = request("OPENAI", "shared", false);
    for _ in 0..3 {
        let r = app
            .client
            .post(format!("{}{path}", app.url))
            .bearer_auth(&gw_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        mock.request_count("sk-oai"),
        3,
        "the OpenAI client stays on OpenAI"
    );
    assert_eq!(mock.request_count("sk-gem"), 0);

    // When the same-format upstream fails, the converted one takes over.
    // (Affinity retries the bound key once — the endpoint's max_retries — before moving on.)
    mock.script("sk-oai", [Step::status(500), Step::status(500)]);
    let r = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(&gw_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rid = r.headers()["x-aether-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(mock.request_count("sk-gem"), 1);
    let traces = app.traces(&rid).await;
    let tried: Vec<Option<&str>> = traces.iter().map(|t| t.conversion.as_deref()).collect();
    assert!(
        tried.contains(&None) && tried.contains(&Some("OPENAI→GEMINI")),
        "{tried:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_parse_converted_answers() {
    let Ok(python) = std::env::var("AETHER_SDK_PYTHON") else {
        eprintln!(
            "NOTE: AETHER_SDK_PYTHON is not set; the converted-SDK check did not run (.ci/run runs it)"
        );
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_default(
        Step::ok()
            .text("Lyon is cloudy.")
            .tool_call("get_weather", json!({"city": "Lyon"})),
    );
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    for (format, model, key) in UPSTREAMS {
        app.add_route(
            &admin,
            model,
            format,
            &mock.url(),
            &[(key, 1)],
            model,
            &format!("{model}-upstream"),
            1,
        )
        .await;
    }
    let (s, v) = app
        .put(
            "/api/admin/system/configs/allow_cross_format",
            &admin,
            json!({"value": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, key) = app.gateway_key(&admin, "sdkconv@example.com").await;
    app.wait_for_model(&key, "via-gemini").await;
    let script = format!("{}/tests/sdk/convert_check.py", env!("CARGO_MANIFEST_DIR"));
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("AETHER_URL", url)
            .env("AETHER_KEY", key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "converted SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("all conversion SDK checks passed"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        24,
        "4 SDK dialects × 3 upstreams × sync and stream: {stdout}"
    );
    app.stop().await;
}

/// The real CLI captures, as the CLIs sent them (headers included), served from upstreams of
/// other dialects: Claude Code by OpenAI Chat, Codex by Anthropic, Gemini CLI by Responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_requests_are_served_across_dialects() {
    let mock = MockUpstream::start().await;
    mock.set_recording(true);
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let cases = [
        ("claude-code-2.1.328.messages.json", "OPENAI", "sk-x-chat"),
        ("codex-cli-0.169.0.responses.json", "CLAUDE", "sk-x-claude"),
        (
            "gemini-cli-0.61.0.streamGenerateContent.json",
            "OPENAI_CLI",
            "sk-x-resp",
        ),
    ];
    let (_, key) = app.gateway_key(&admin, "cli@example.com").await;
    for (file, upstream, secret) in cases {
        let text = std::fs::read_to_string(format!(
            "{}/../../fixtures/clients/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let cap: Value = serde_json::from_str(&text).unwrap();
        let model = cap["body"]["model"]
            .as_str()
            .map_or_else(|| "gemini-2.5-flash".to_string(), str::to_string);
        let r = app
            .add_route(
                &admin,
                &format!("for-{}", upstream.to_ascii_lowercase().replace('_', "-")),
                upstream,
                &mock.url(),
                &[(secret, 1)],
                &model,
                "upstream-model",
                1,
            )
            .await;
        app.patch(
            &format!("/api/admin/models/global/{}", r.model_id),
            &admin,
            json!({"capabilities": {"streaming": true, "function_calling": true, "allow_cross_format": true}}),
        )
        .await;
        app.wait_for_model(&key, &model).await;
        mock.script(
            secret,
            [Step::ok()
                .text("On it.")
                .tool_call("exec_command", json!({"cmd": "ls"}))],
        );
        let path = match cap["query"].as_str() {
            Some(q) => format!("{}?{q}", cap["path"].as_str().unwrap()),
            None => cap["path"].as_str().unwrap().to_string(),
        };
        let mut rb = app
            .client
            .post(format!("{}{path}", app.url))
            .body(serde_json::to_vec(&cap["body"]).unwrap());
        for (k, v) in cap["headers"].as_object().unwrap() {
            let k = k.as_str();
            if matches!(
                k,
                "host" | "content-length" | "connection" | "accept-encoding"
            ) {
                continue;
            }
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
        let rid = resp.headers()["x-aether-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let body = resp.text().await.unwrap();
        let client = match file {
            f if f.starts_with("claude") => "CLAUDE",
            f if f.starts_with("codex") => "OPENAI_CLI",
            _ => "GEMINI",
        };
        let (said, calls, tool_stop) = answer(client, true, &body);
        assert_eq!(said, "On it.", "{file}: {body}");
        assert_eq!(calls.len(), 1, "{file}: {body}");
        assert_eq!(calls[0].1, json!({"cmd": "ls"}), "{file}");
        assert!(tool_stop, "{file}");
        // The upstream got its own dialect, with the CLI's tools and system prompt.
        let sent: Value = mock.requests_for(secret)[0].body_json().unwrap();
        let tools = sent["tools"].as_array().unwrap();
        assert!(tools.len() >= 3, "{file}: {} tools", tools.len());
        let rec = app.usage(&rid).await;
        assert_eq!(rec.status, UsageStatus::Completed, "{file}");
        assert_eq!(
            rec.endpoint_api_format.map(|f| f.as_str()),
            Some(upstream),
            "{file}"
        );
    }
    app.stop().await;
}

/// Failure paths through a converted candidate: a 429 on the same-format key fails over to the
/// converted one; a client that goes away mid converted stream is recorded as 499 with the
/// tokens seen, and the upstream connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_candidates_take_failures_and_client_disconnects() {
    use futures_util::StreamExt as _;
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let oai = app
        .add_route(
            &admin,
            "openai",
            "OPENAI",
            &mock.url(),
            &[("sk-oai", 1)],
            "mixed",
            "mixed-o",
            1,
        )
        .await;
    app.add_route(
        &admin,
        "gemini",
        "GEMINI",
        &mock.url(),
        &[("sk-gem", 1)],
        "mixed",
        "mixed-g",
        2,
    )
    .await;
    app.patch(
        &format!("/api/admin/models/global/{}", oai.model_id),
        &admin,
        json!({"capabilities": {"streaming": true, "allow_cross_format": true}}),
    )
    .await;
    let (_, gw_key) = app.gateway_key(&admin, "fail@example.com").await;
    app.wait_for_model(&gw_key, "mixed").await;
    let send = |stream: bool| {
        let (path, body) = request("OPENAI", "mixed", stream);
        app.client
            .post(format!("{}{path}", app.url))
            .bearer_auth(&gw_key)
            .json(&body)
            .send()
    };

    // 429 on the OpenAI key: the Gemini key serves, converted.
    mock.script(
        "sk-oai",
        [Step::from(aether_testkit::Action::Status {
            code: 429,
            retry_after: Some(30),
            body: None,
        })],
    );
    let r = send(false).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rid = r.headers()["x-aether-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    let traces = app.traces(&rid).await;
    assert_eq!(traces[0].status_code, Some(429), "{traces:?}");
    assert_eq!(
        traces.last().unwrap().conversion.as_deref(),
        Some("OPENAI→GEMINI")
    );
    assert_eq!(mock.request_count("sk-gem"), 1);

    // The OpenAI key now rests (Retry-After); a Gemini stream that the client abandons.
    mock.script(
        "sk-gem",
        [Step::slow_stream(200)
            .text("one two three four five six seven eight nine ten")
            .usage(aether_testkit::Usage {
                input: 55,
                output: 10,
                ..Default::default()
            })],
    );
    let r = send(true).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rid = r.headers()["x-aether-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("chat.completion.chunk"),
        "the client got converted chunks: {}",
        String::from_utf8_lossy(&first)
    );
    drop(body);
    let rec = app.usage(&rid).await;
    assert_eq!(
        (rec.status, rec.status_code),
        (UsageStatus::Failed, Some(499))
    );
    assert_eq!(
        rec.tokens.input, 55,
        "the tokens seen before the client left"
    );
    assert!(
        mock.wait_idle(std::time::Duration::from_secs(5)).await,
        "the upstream stream was closed"
    );
    app.stop().await;
}
