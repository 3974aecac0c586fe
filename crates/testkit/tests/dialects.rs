//! Successful replies of every dialect: shapes, event order, usage conventions,
//! tool calls, auth and validation errors, model lists.
// Test crate: helpers outside #[test] fns are test code too (clippy.toml's
// allow-unwrap-in-tests only sees #[test] bodies).
#![allow(clippy::unwrap_used)]

mod common;

use aether_testkit::{MockOptions, MockUpstream, Step};
use common::*;
use serde_json::{Value, json};

async fn mock_with_usage() -> MockUpstream {
    let mock = MockUpstream::start().await;
    mock.set_default(
        Step::ok()
            .text("The quick brown fox jumps over the lazy dog.")
            .usage(scripted_usage()),
    );
    mock
}

// ------------------------------------------------------------------ Anthropic

#[tokio::test]
async fn anthropic_non_stream_renders_usage_with_cache_split() {
    let mock = mock_with_usage().await;
    let resp = anthropic(&mock, KEY, &anthropic_body(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json");
    assert!(header(&resp, "request-id").unwrap().starts_with("req_"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        v["content"][0],
        json!({"type": "text", "text": "The quick brown fox jumps over the lazy dog."})
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    let u = &v["usage"];
    // Anthropic: input_tokens excludes cache reads and writes.
    assert_eq!(u["input_tokens"], 100);
    assert_eq!(u["cache_read_input_tokens"], 50);
    assert_eq!(u["cache_creation_input_tokens"], 40);
    assert_eq!(u["cache_creation"]["ephemeral_5m_input_tokens"], 30);
    assert_eq!(u["cache_creation"]["ephemeral_1h_input_tokens"], 10);
    assert_eq!(u["output_tokens"], 20);
}

#[tokio::test]
async fn anthropic_stream_has_named_events_in_order() {
    let mock = mock_with_usage().await;
    let resp = anthropic(&mock, KEY, &anthropic_body(true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "text/event-stream");
    let events = sse_of(resp).await;
    let names = event_names(&events);
    let deltas = names.iter().filter(|n| *n == "content_block_delta").count();
    assert!(deltas >= 3, "text must be split into several deltas");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let start = events[0].json();
    assert_eq!(start["message"]["model"], "claude-sonnet-4-5");
    assert_eq!(start["message"]["usage"]["input_tokens"], 100);
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 50);
    assert_eq!(
        start["message"]["usage"]["cache_creation"]["ephemeral_1h_input_tokens"],
        10
    );
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "The quick brown fox jumps over the lazy dog.");
    let delta = events[events.len() - 2].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 20);
}

#[tokio::test]
async fn anthropic_tool_call_stream_and_non_stream() {
    let mock = MockUpstream::start().await;
    let args = json!({"location": "Paris", "unit": "celsius"});
    mock.script(
        KEY,
        [
            Step::ok().tool_call("get_weather", args.clone()),
            Step::ok().tool_call("get_weather", args.clone()),
        ],
    );

    let v: Value = anthropic(&mock, KEY, &anthropic_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["name"], "get_weather");
    assert_eq!(v["content"][0]["input"], args);
    assert!(
        v["content"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_")
    );

    let events = sse_of(anthropic(&mock, KEY, &anthropic_body(true)).await).await;
    let names = event_names(&events);
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(events[1].json()["content_block"]["type"], "tool_use");
    assert_eq!(events[1].json()["content_block"]["input"], json!({}));
    let partial: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            let d = e.json();
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), args);
    assert!(names.iter().filter(|n| *n == "content_block_delta").count() >= 3);
    assert_eq!(
        events[events.len() - 2].json()["delta"]["stop_reason"],
        "tool_use"
    );
}

#[tokio::test]
async fn anthropic_auth_count_tokens_and_models() {
    let mock = MockUpstream::start_with(MockOptions {
        keys: Some(vec![KEY.to_owned()]),
        ..MockOptions::default()
    })
    .await;
    let c = client();
    let url = format!("{}/v1/messages", mock.url());

    let missing = c
        .post(&url)
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let v: Value = missing.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));

    let unknown = anthropic(&mock, "sk-nope", &anthropic_body(false)).await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"]["message"],
        "invalid x-api-key"
    );

    // Bearer works too, and anthropic-version is optional.
    let bearer = c
        .post(&url)
        .bearer_auth(KEY)
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    let count = c
        .post(format!("{}/v1/messages/count_tokens", mock.url()))
        .header("x-api-key", KEY)
        .json(&json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(count.status(), 200);
    assert!(
        count.json::<Value>().await.unwrap()["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let models: Value = c
        .get(format!("{}/v1/models", mock.url()))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["type"], "model");
    assert_eq!(models["has_more"], false);
    assert!(models["first_id"].is_string());
}

// ---------------------------------------------------------------- OpenAI chat

#[tokio::test]
async fn chat_non_stream_counts_cached_inside_prompt() {
    let mock = mock_with_usage().await;
    let resp = openai(&mock, "chat/completions", KEY, &chat_body(false, None)).await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "x-request-id").unwrap().starts_with("req_"));
    assert!(header(&resp, "x-ratelimit-remaining-requests").is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The quick brown fox jumps over the lazy dog."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    // OpenAI: prompt_tokens includes cached tokens (and cache writes).
    assert_eq!(u["prompt_tokens"], 190);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 50);
    assert_eq!(u["completion_tokens"], 20);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 5);
    assert_eq!(u["total_tokens"], 210);
}

fn chat_chunks(events: &[Sse]) -> Vec<Value> {
    assert_eq!(
        events.last().unwrap().data,
        "[DONE]",
        "chat streams end with data: [DONE]"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| {
            assert!(e.event.is_none(), "chat streams are data-only");
            e.json()
        })
        .collect()
}

#[tokio::test]
async fn chat_stream_without_include_usage_has_no_usage() {
    let mock = mock_with_usage().await;
    let resp = openai(&mock, "chat/completions", KEY, &chat_body(true, None)).await;
    assert_eq!(content_type(&resp), "text/event-stream");
    let chunks = chat_chunks(&sse_of(resp).await);
    assert!(chunks.len() >= 4);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4o");
        assert!(
            c.get("usage").is_none(),
            "no usage key without include_usage: {c}"
        );
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "The quick brown fox jumps over the lazy dog.");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn chat_stream_with_include_usage_ends_with_usage_chunk() {
    let mock = mock_with_usage().await;
    let resp = openai(&mock, "chat/completions", KEY, &chat_body(true, Some(true))).await;
    let chunks = chat_chunks(&sse_of(resp).await);
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 190);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 50);
    assert_eq!(last["usage"]["completion_tokens"], 20);
    for c in rest {
        assert_eq!(c["usage"], Value::Null, "earlier chunks carry usage: null");
    }
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");

    // include_usage: false behaves like absent.
    let resp = openai(
        &mock,
        "chat/completions",
        KEY,
        &chat_body(true, Some(false)),
    )
    .await;
    let chunks = chat_chunks(&sse_of(resp).await);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn chat_tool_call_stream_and_non_stream() {
    let mock = MockUpstream::start().await;
    let args = json!({"location": "Paris"});
    mock.set_default(Step::ok().tool_call("get_weather", args.clone()));

    let v: Value = openai(&mock, "chat/completions", KEY, &chat_body(false, None))
        .await
        .json()
        .await
        .unwrap();
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], Value::Null);
    assert_eq!(msg["tool_calls"][0]["type"], "function");
    assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_weather");
    let a: Value = serde_json::from_str(
        msg["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(a, args);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    let chunks = chat_chunks(
        &sse_of(openai(&mock, "chat/completions", KEY, &chat_body(true, None)).await).await,
    );
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert!(calls.len() >= 3, "name fragment plus argument deltas");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let joined: String = calls
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), args);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

// ----------------------------------------------------------- OpenAI Responses

#[tokio::test]
async fn responses_non_stream_and_stream() {
    let mock = mock_with_usage().await;
    let v: Value = openai(&mock, "responses", KEY, &responses_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-5");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "The quick brown fox jumps over the lazy dog."
    );
    assert_eq!(v["usage"]["input_tokens"], 190);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 50);
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 210);

    let resp = openai(&mock, "responses", KEY, &responses_body(true)).await;
    assert_eq!(content_type(&resp), "text/event-stream");
    let events = sse_of(resp).await;
    let names = event_names(&events);
    let deltas = names
        .iter()
        .filter(|n| *n == "response.output_text.delta")
        .count();
    assert!(deltas >= 3);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.json()["sequence_number"], i as u64);
    }
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["usage"]["input_tokens"], 190);
    assert_eq!(done["response"]["usage"]["output_tokens"], 20);
    assert_eq!(events[0].json()["response"]["usage"], Value::Null);
}

#[tokio::test]
async fn responses_function_call_stream() {
    let mock = MockUpstream::start().await;
    let args = json!({"cmd": ["ls", "-la"]});
    mock.set_default(Step::ok().tool_call("shell", args.clone()));
    let events = sse_of(openai(&mock, "responses", KEY, &responses_body(true)).await).await;
    let names = event_names(&events);
    let deltas = names
        .iter()
        .filter(|n| *n == "response.function_call_arguments.delta")
        .count();
    assert!(deltas >= 2);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ];
    expected.extend(std::iter::repeat_n(
        "response.function_call_arguments.delta",
        deltas,
    ));
    expected.extend([
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    let added = events[2].json();
    assert_eq!(added["item"]["type"], "function_call");
    assert_eq!(added["item"]["name"], "shell");
    let joined: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.function_call_arguments.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), args);
    let item = &events.last().unwrap().json()["response"]["output"][0];
    assert_eq!(item["type"], "function_call");
    assert!(item["call_id"].as_str().unwrap().starts_with("call_"));

    let v: Value = openai(&mock, "responses", KEY, &responses_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["output"][0]["type"], "function_call");
    assert_eq!(
        serde_json::from_str::<Value>(v["output"][0]["arguments"].as_str().unwrap()).unwrap(),
        args
    );
}

// --------------------------------------------------------------------- Gemini

fn assert_gemini_final_usage(u: &Value) {
    // Gemini: promptTokenCount includes cached tokens; thoughts are separate.
    assert_eq!(u["promptTokenCount"], 190);
    assert_eq!(u["cachedContentTokenCount"], 50);
    assert_eq!(u["candidatesTokenCount"], 15);
    assert_eq!(u["thoughtsTokenCount"], 5);
    assert_eq!(u["totalTokenCount"], 210);
}

#[tokio::test]
async fn gemini_generate_content() {
    let mock = mock_with_usage().await;
    let resp = gemini(&mock, "generateContent", KEY, &gemini_body()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json");
    let v: Value = resp.json().await.unwrap();
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(
        cand["content"]["parts"][0]["text"],
        "The quick brown fox jumps over the lazy dog."
    );
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    assert!(v["responseId"].is_string());
    assert_gemini_final_usage(&v["usageMetadata"]);
}

fn check_gemini_chunks(chunks: &[Value]) {
    assert!(chunks.len() >= 3, "several chunks");
    let mut last_candidates = 0;
    for (i, c) in chunks.iter().enumerate() {
        let u = &c["usageMetadata"];
        assert_eq!(u["promptTokenCount"], 190);
        let n = u["candidatesTokenCount"].as_u64().unwrap();
        assert!(n >= last_candidates, "usage is cumulative");
        last_candidates = n;
        let finish = c["candidates"][0].get("finishReason");
        assert_eq!(
            finish.is_some(),
            i == chunks.len() - 1,
            "only the last chunk has finishReason"
        );
    }
    assert_gemini_final_usage(&chunks.last().unwrap()["usageMetadata"]);
    let text: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "The quick brown fox jumps over the lazy dog.");
}

#[tokio::test]
async fn gemini_stream_sse_vs_json_array() {
    let mock = mock_with_usage().await;

    let resp = gemini(&mock, "streamGenerateContent?alt=sse", KEY, &gemini_body()).await;
    assert_eq!(content_type(&resp), "text/event-stream");
    let (body, err) = read_body(resp).await;
    assert!(err.is_none());
    let body = String::from_utf8(body).unwrap();
    // google-genai strips exactly "data: " (with the space).
    assert!(body.starts_with("data: {"));
    let chunks: Vec<Value> = parse_sse(&body)
        .iter()
        .map(|e| {
            assert!(e.event.is_none());
            e.json()
        })
        .collect();
    check_gemini_chunks(&chunks);

    let resp = gemini(&mock, "streamGenerateContent", KEY, &gemini_body()).await;
    assert_eq!(content_type(&resp), "application/json");
    let (body, err) = read_body(resp).await;
    assert!(err.is_none());
    assert_eq!(body.first(), Some(&b'['));
    let arr: Vec<Value> = serde_json::from_slice(&body).unwrap();
    check_gemini_chunks(&arr);
}

#[tokio::test]
async fn gemini_function_call_and_auth() {
    let mock = MockUpstream::start_with(MockOptions {
        keys: Some(vec![KEY.to_owned()]),
        ..MockOptions::default()
    })
    .await;
    mock.set_default(Step::ok().tool_call("get_weather", json!({"city": "Paris"})));
    let c = client();

    // ?key= works like the header.
    let v: Value = c
        .post(format!(
            "{}/v1beta/models/gemini-2.5-pro:generateContent?key={KEY}",
            mock.url()
        ))
        .json(&gemini_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["city"],
        "Paris"
    );
    assert_eq!(v["modelVersion"], "gemini-2.5-pro");

    let unknown = gemini(&mock, "generateContent", "AIza-wrong", &gemini_body()).await;
    assert_eq!(unknown.status(), 400);
    let e: Value = unknown.json().await.unwrap();
    assert_eq!(e["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(e["error"]["details"][0]["reason"], "API_KEY_INVALID");

    let missing = c
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            mock.url()
        ))
        .json(&gemini_body())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 403);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["status"],
        "PERMISSION_DENIED"
    );

    let models: Value = c
        .get(format!("{}/v1beta/models", mock.url()))
        .header("x-goog-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        models["models"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("models/")
    );
}

// ------------------------------------------------------------- cross-dialect

#[tokio::test]
async fn malformed_bodies_get_the_dialects_400_without_consuming_steps() {
    let mock = MockUpstream::start().await;
    mock.script(KEY, [Step::status(529)]);
    let c = client();
    let send = |path: &str, body: &'static str| {
        c.post(format!("{}{path}", mock.url()))
            .header("x-api-key", KEY)
            .bearer_auth(KEY)
            .header("x-goog-api-key", KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = send("/v1/messages", "{not json").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let r = send("/v1/messages", r#"{"model":"m","messages":[]}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );

    let r = send("/v1/chat/completions", "[1,2").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );

    let r = send(
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[],"stream":"yes"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    let r = send("/v1/responses", r#"{"input":"hi"}"#).await.unwrap();
    assert_eq!(r.status(), 400);

    let r = send("/v1beta/models/gemini-2.5-flash:generateContent", "")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "INVALID_ARGUMENT"
    );

    let r = send(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        r#"{"contents":[]}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    // The JSON-array endpoint wraps errors in an array.
    assert_eq!(r.json::<Value>().await.unwrap()[0]["error"]["code"], 400);

    assert_eq!(
        mock.pending_steps(KEY),
        1,
        "invalid requests do not consume steps"
    );
    let r = anthropic(&mock, KEY, &anthropic_body(false)).await;
    assert_eq!(r.status(), 529);
}

#[tokio::test]
async fn routes_answer_under_any_prefix() {
    let mock = MockUpstream::start().await;
    let c = client();
    let r = c
        .post(format!("{}/relay/v1/messages?beta=true", mock.url()))
        .header("x-api-key", KEY)
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "message");

    let r = c
        .post(format!("{}/openai/v1/chat/completions", mock.url()))
        .bearer_auth(KEY)
        .json(&chat_body(false, None))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["object"],
        "chat.completion"
    );

    let r = c
        .post(format!(
            "{}/g/v1beta/models/gemini-2.5-flash:generateContent",
            mock.url()
        ))
        .header("x-goog-api-key", KEY)
        .json(&gemini_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let models: Value = c
        .get(format!("{}/v1/models", mock.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");

    let r = c
        .get(format!("{}/nothing/here", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let endpoints: Vec<String> = mock
        .requests()
        .iter()
        .filter_map(|r| r.endpoint.clone())
        .collect();
    assert_eq!(
        endpoints,
        [
            "anthropic.messages",
            "openai.chat_completions",
            "gemini.generate_content",
            "openai.models"
        ]
    );
}

#[tokio::test]
async fn default_usage_is_deterministic() {
    let mock = MockUpstream::start().await;
    let body = anthropic_body(false);
    let a: Value = anthropic(&mock, KEY, &body).await.json().await.unwrap();
    let b: Value = anthropic(&mock, KEY, &body).await.json().await.unwrap();
    assert_eq!(a["usage"], b["usage"]);
    assert_eq!(a["content"], b["content"]);
    let len = serde_json::to_vec(&body).unwrap().len() as u64;
    assert_eq!(a["usage"]["input_tokens"], len / 4);
    let words = a["content"][0]["text"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .count();
    assert_eq!(a["usage"]["output_tokens"], words as u64);
}
