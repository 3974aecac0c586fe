//! Error rendering: exact bytes, the status table, and a round trip through the decoder and
//! the classifier (what we emit must be recognised as the error we meant).

use aether_domain::format::Dialect;
use aether_protocol::classify::{
    ClientErrorKind, FirstEvent, KeyErrorClass, Outcome, RateLimitKind, classify_first_event,
    classify_response,
};
use aether_protocol::errors::{ErrorKind, error_body, stream_error_event};
use serde_json::{Value, json};

use crate::sse_events;

const DIALECTS: [Dialect; 4] = [
    Dialect::AnthropicMessages,
    Dialect::OpenaiChat,
    Dialect::OpenaiResponses,
    Dialect::Gemini,
];

#[test]
fn exact_bodies() {
    let cases: &[(Dialect, ErrorKind, u16, &str)] = &[
        (
            Dialect::AnthropicMessages,
            ErrorKind::Overloaded,
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded \"now\""}}"#,
        ),
        (
            Dialect::AnthropicMessages,
            ErrorKind::Timeout,
            504,
            r#"{"type":"error","error":{"type":"timeout_error","message":"Overloaded \"now\""}}"#,
        ),
        (
            Dialect::OpenaiChat,
            ErrorKind::Authentication,
            401,
            r#"{"error":{"message":"Overloaded \"now\"","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        ),
        (
            Dialect::OpenaiResponses,
            ErrorKind::Overloaded,
            503,
            r#"{"error":{"message":"Overloaded \"now\"","type":"server_error","param":null,"code":null}}"#,
        ),
        (
            Dialect::Gemini,
            ErrorKind::RateLimited,
            429,
            r#"{"error":{"code":429,"message":"Overloaded \"now\"","status":"RESOURCE_EXHAUSTED"}}"#,
        ),
    ];
    for (dialect, kind, status, body) in cases {
        let (got_status, got) = error_body(*dialect, *kind, "Overloaded \"now\"");
        assert_eq!(
            (got_status, std::str::from_utf8(&got).unwrap()),
            (*status, *body)
        );
    }
}

#[test]
fn status_table() {
    use ErrorKind::*;
    let table = [
        (
            InvalidRequest,
            400,
            "invalid_request_error",
            "INVALID_ARGUMENT",
        ),
        (
            Authentication,
            401,
            "authentication_error",
            "UNAUTHENTICATED",
        ),
        (
            PermissionDenied,
            403,
            "permission_error",
            "PERMISSION_DENIED",
        ),
        (NotFound, 404, "not_found_error", "NOT_FOUND"),
        (
            RequestTooLarge,
            413,
            "request_too_large",
            "INVALID_ARGUMENT",
        ),
        (RateLimited, 429, "rate_limit_error", "RESOURCE_EXHAUSTED"),
        (Overloaded, 503, "overloaded_error", "UNAVAILABLE"),
        (UpstreamError, 502, "api_error", "UNAVAILABLE"),
        (Unavailable, 503, "api_error", "UNAVAILABLE"),
        (Timeout, 504, "timeout_error", "DEADLINE_EXCEEDED"),
        (Internal, 500, "api_error", "INTERNAL"),
    ];
    assert_eq!(table.len(), ErrorKind::ALL.len());
    for (kind, status, anthropic, gemini) in table {
        assert_eq!(kind.status(), status, "{kind:?}");
        assert_eq!(kind.anthropic_type(), anthropic, "{kind:?}");
        assert_eq!(kind.gemini_status(), gemini, "{kind:?}");
        for d in DIALECTS {
            let want = if kind == Overloaded && d == Dialect::AnthropicMessages {
                529
            } else {
                status
            };
            assert_eq!(kind.status_for(d), want, "{kind:?} {d:?}");
        }
    }
}

#[test]
fn every_body_is_well_formed_json_in_its_dialect() {
    let message = "line1\nline2 \u{1} é \\ \"q\"";
    for kind in ErrorKind::ALL {
        for d in DIALECTS {
            let (status, body) = error_body(d, kind, message);
            let v: Value = serde_json::from_slice(&body).unwrap();
            let expect = match d {
                Dialect::AnthropicMessages => json!({
                    "type": "error",
                    "error": {"type": kind.anthropic_type(), "message": message}
                }),
                Dialect::OpenaiChat | Dialect::OpenaiResponses => json!({
                    "error": {"message": message, "type": kind.openai_type(), "param": null, "code": kind.openai_code()}
                }),
                Dialect::Gemini => json!({
                    "error": {"code": status, "message": message, "status": kind.gemini_status()}
                }),
            };
            assert_eq!(v, expect, "{kind:?} {d:?}");
        }
    }
}

#[test]
fn exact_stream_events() {
    let cases: &[(Dialect, ErrorKind, &str)] = &[
        (
            Dialect::AnthropicMessages,
            ErrorKind::Overloaded,
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"m\"}}\n\n",
        ),
        (
            Dialect::OpenaiChat,
            ErrorKind::UpstreamError,
            "data: {\"error\":{\"message\":\"m\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
        ),
        (
            Dialect::OpenaiResponses,
            ErrorKind::RateLimited,
            "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"m\",\"param\":null,\"error\":{\"type\":\"rate_limit_error\",\"code\":\"rate_limit_exceeded\",\"message\":\"m\",\"param\":null}}\n\n\
             event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"m\"},\"incomplete_details\":null,\"output\":[],\"usage\":null}}\n\n",
        ),
        (
            Dialect::Gemini,
            ErrorKind::Timeout,
            "data: {\"error\":{\"code\":504,\"message\":\"m\",\"status\":\"DEADLINE_EXCEEDED\"}}\n\n",
        ),
    ];
    for (dialect, kind, want) in cases {
        let got = stream_error_event(*dialect, *kind, "m");
        assert_eq!(std::str::from_utf8(&got).unwrap(), *want, "{dialect:?}");
    }
}

/// What the classifier should make of each rendered error (the gateway's own errors read
/// back as if they came from an upstream).
fn expected_outcome(kind: ErrorKind, dialect: Dialect) -> Outcome {
    use ErrorKind::*;
    let key = |class| Outcome::KeyError { class };
    match kind {
        InvalidRequest => Outcome::ClientError {
            kind: ClientErrorKind::InvalidRequest,
        },
        RequestTooLarge => Outcome::ClientError {
            kind: ClientErrorKind::RequestTooLarge,
        },
        Authentication | PermissionDenied => key(KeyErrorClass::Unauthorized),
        NotFound => key(KeyErrorClass::NotFound),
        RateLimited => key(KeyErrorClass::RateLimited {
            kind: RateLimitKind::Unknown,
        }),
        // Only Anthropic has a distinct overload signal (529 / `overloaded_error`); elsewhere
        // it renders as a plain 503 and reads back as a server error.
        Overloaded if dialect == Dialect::AnthropicMessages => Outcome::Overloaded,
        _ => Outcome::Server {
            status: kind.status_for(dialect),
        },
    }
}

#[test]
fn rendered_http_errors_classify_back() {
    for kind in ErrorKind::ALL {
        for d in DIALECTS {
            let (status, body) = error_body(d, kind, "something failed");
            let got = classify_response(d, status, Some("application/json"), &body);
            assert_eq!(got, expected_outcome(kind, d), "{kind:?} {d:?}");
        }
    }
}

#[test]
fn rendered_stream_errors_decode_and_classify_back() {
    for kind in ErrorKind::ALL {
        for d in DIALECTS {
            let bytes = stream_error_event(d, kind, "mid-stream failure");
            let events = sse_events(&bytes, &[]);
            assert!(!events.is_empty());
            for ev in &events {
                let FirstEvent::Error { outcome, message } = classify_first_event(d, ev) else {
                    panic!("{kind:?} {d:?}: {ev:?} not recognised as an error");
                };
                assert_eq!(message, "mid-stream failure");
                // In-band errors carry no HTTP status: the status is implied by the error
                // names, so only the broad category is compared. One pair is ambiguous:
                // OpenAI spells "not found" as `invalid_request_error` with a null code (like
                // any bad request), so in-band it reads as the client's fault.
                let failover = match (kind, d) {
                    (ErrorKind::NotFound, Dialect::OpenaiChat) => false,
                    _ => expected_outcome(kind, d).should_failover(),
                };
                assert_eq!(
                    outcome.should_failover(),
                    failover,
                    "{kind:?} {d:?}: {outcome:?}"
                );
            }
        }
    }
}
