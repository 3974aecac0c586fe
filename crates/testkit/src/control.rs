//! Control API under `/__mock/`, for the `aether-mock` binary and tests that
//! drive the mock from another process.
//!
//! | method & path              | body / result                                                    |
//! |----------------------------|------------------------------------------------------------------|
//! | `POST /__mock/script`      | `{"key": "...", "steps": [Step...], "replace": false}` → `{"queued": n}` |
//! | `POST /__mock/default`     | a `Step` → `{"ok": true}`                                        |
//! | `GET /__mock/requests`     | `[RecordedRequest...]`                                           |
//! | `DELETE /__mock/requests`  | forget recorded requests                                         |
//! | `GET /__mock/stats`        | [`MockStats`](crate::MockStats)                                  |
//! | `POST /__mock/reset`       | forget scripts, requests and counters; default step back to `ok` |
//! | `POST /__mock/recording`   | `{"enabled": bool}`                                              |
//!
//! Control requests are neither recorded nor counted.

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::state::Shared;
use crate::step::Step;

/// Control bodies are small; anything bigger is a mistake.
const MAX_CONTROL_BODY: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct ScriptReq {
    key: String,
    steps: Vec<Step>,
    #[serde(default)]
    replace: bool,
}

#[derive(Deserialize)]
struct RecordingReq {
    enabled: bool,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn ok_json(v: &impl serde::Serialize) -> Response {
    json_response(StatusCode::OK, serde_json::to_vec(v).unwrap_or_default())
}

fn error(status: StatusCode, msg: &str) -> Response {
    json_response(
        status,
        serde_json::to_vec(&serde_json::json!({ "error": msg })).unwrap_or_default(),
    )
}

async fn parse<T: DeserializeOwned>(body: Body) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(body, MAX_CONTROL_BODY)
        .await
        .map_err(|e| error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")))
}

pub(crate) async fn handle(st: &Shared, method: &Method, rest: &str, body: Body) -> Response {
    match (method.as_str(), rest) {
        ("POST", "script") => match parse::<ScriptReq>(body).await {
            Ok(req) => {
                let queued = st.push_steps(&req.key, req.steps, req.replace);
                ok_json(&serde_json::json!({ "queued": queued }))
            }
            Err(r) => r,
        },
        ("POST", "default") => match parse::<Step>(body).await {
            Ok(step) => {
                st.set_default(step);
                ok_json(&serde_json::json!({ "ok": true }))
            }
            Err(r) => r,
        },
        ("GET", "requests") => ok_json(&st.requests()),
        ("DELETE", "requests") => {
            st.clear_requests();
            ok_json(&serde_json::json!({ "ok": true }))
        }
        ("GET", "stats") => ok_json(&st.stats()),
        ("POST", "reset") => {
            st.reset();
            ok_json(&serde_json::json!({ "ok": true }))
        }
        ("POST", "recording") => match parse::<RecordingReq>(body).await {
            Ok(req) => {
                st.set_recording(req.enabled);
                ok_json(&serde_json::json!({ "ok": true }))
            }
            Err(r) => r,
        },
        _ => error(StatusCode::NOT_FOUND, "unknown control endpoint"),
    }
}
