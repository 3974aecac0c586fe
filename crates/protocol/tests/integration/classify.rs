//! The outcome classifier over realistic upstream answers, and the header helpers.

use aether_domain::format::Dialect;
use aether_protocol::classify::{
    ClientErrorKind, KeyErrorClass, Outcome, RateLimitKind, classify_http, classify_response,
    error_message, rate_limit_kind, retry_after_from_body, retry_after_secs, retry_after_secs_at,
};

const A: Dialect = Dialect::AnthropicMessages;
const C: Dialect = Dialect::OpenaiChat;
const R: Dialect = Dialect::OpenaiResponses;
const G: Dialect = Dialect::Gemini;
const JSON: Option<&str> = Some("application/json");

const CLOUDFLARE_502: &str = r#"<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"#;

const CLOUDFLARE_413: &str = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

/// (name, dialect, status, content type, body, expected outcome)
type ResponseCase = (
    &'static str,
    Dialect,
    u16,
    Option<&'static str>,
    &'static str,
    Outcome,
);

/// Response headers as `(name, value)` pairs.
type Headers = &'static [(&'static str, &'static str)];

fn client(kind: ClientErrorKind) -> Outcome {
    Outcome::ClientError { kind }
}

fn key(class: KeyErrorClass) -> Outcome {
    Outcome::KeyError { class }
}

fn rate(kind: RateLimitKind) -> Outcome {
    key(KeyErrorClass::RateLimited { kind })
}

#[test]
fn realistic_upstream_answers() {
    use ClientErrorKind::*;
    use KeyErrorClass::*;
    let cases: &[ResponseCase] = &[
        // ---- Anthropic
        (
            "prompt too long",
            A,
            400,
            JSON,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 247583 tokens > 200000 maximum"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
            client(ContextLengthExceeded),
        ),
        (
            "input + max_tokens over the context",
            A,
            400,
            JSON,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 189136 + 20000 > 204648, decrease input length or `max_tokens` and try again"}}"#,
            client(ContextLengthExceeded),
        ),
        (
            "image too large",
            A,
            400,
            JSON,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages.0.content.1.image.source.base64: image exceeds 5 MB maximum: 7340032 bytes > 5242880 bytes"}}"#,
            client(RequestTooLarge),
        ),
        (
            "content filter",
            A,
            400,
            JSON,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#,
            client(ContentPolicy),
        ),
        (
            "plain validation error",
            A,
            400,
            JSON,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
            client(InvalidRequest),
        ),
        (
            "credit balance (a 400 that is the key's fault)",
            A,
            400,
            JSON,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
            key(Billing),
        ),
        (
            "self-imposed spend limit",
            A,
            400,
            JSON,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC."}}"#,
            key(Billing),
        ),
        (
            "bad key",
            A,
            401,
            JSON,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            key(Unauthorized),
        ),
        (
            "permission",
            A,
            403,
            JSON,
            r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#,
            key(Unauthorized),
        ),
        (
            "model not found",
            A,
            404,
            JSON,
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-foo"}}"#,
            key(NotFound),
        ),
        (
            "cloudflare 413",
            A,
            413,
            Some("text/html"),
            CLOUDFLARE_413,
            client(RequestTooLarge),
        ),
        (
            "input-token rate limit",
            A,
            429,
            JSON,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (a1b2) of 40,000 input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."}}"#,
            rate(RateLimitKind::Tokens),
        ),
        (
            "concurrency limit",
            A,
            429,
            JSON,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of concurrent connections has exceeded your rate limit."}}"#,
            rate(RateLimitKind::Concurrency),
        ),
        (
            "tier spend cap",
            A,
            429,
            JSON,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have exceeded your monthly spend limit.","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
            key(Billing),
        ),
        (
            "billing_error 402",
            A,
            402,
            JSON,
            r#"{"type":"error","error":{"type":"billing_error","message":"Payment required"}}"#,
            key(Billing),
        ),
        (
            "overloaded 529",
            A,
            529,
            JSON,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            Outcome::Overloaded,
        ),
        (
            "overloaded via a relay's 503",
            A,
            503,
            JSON,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            Outcome::Overloaded,
        ),
        (
            "api_error 500",
            A,
            500,
            JSON,
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
            Outcome::Server { status: 500 },
        ),
        (
            "timeout 504",
            A,
            504,
            JSON,
            r#"{"type":"error","error":{"type":"timeout_error","message":"Request timed out"}}"#,
            Outcome::Server { status: 504 },
        ),
        // ---- OpenAI
        (
            "context_length_exceeded",
            C,
            400,
            JSON,
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            client(ContextLengthExceeded),
        ),
        (
            "content policy",
            C,
            400,
            JSON,
            r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#,
            client(ContentPolicy),
        ),
        (
            "invalid key",
            C,
            401,
            JSON,
            r#"{"error":{"message":"Incorrect API key provided: sk-abc***. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            key(Unauthorized),
        ),
        (
            "region",
            C,
            403,
            JSON,
            r#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#,
            key(Unauthorized),
        ),
        (
            "model_not_found",
            C,
            404,
            JSON,
            r#"{"error":{"message":"The model `gpt-x` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
            key(NotFound),
        ),
        (
            "TPM",
            C,
            429,
            JSON,
            r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
            rate(RateLimitKind::Tokens),
        ),
        (
            "insufficient_quota",
            C,
            429,
            JSON,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            key(Billing),
        ),
        (
            "engine overloaded",
            C,
            503,
            JSON,
            r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#,
            Outcome::Overloaded,
        ),
        (
            "server_error",
            C,
            500,
            JSON,
            r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#,
            Outcome::Server { status: 500 },
        ),
        (
            "responses: missing tool output",
            R,
            400,
            JSON,
            r#"{"error":{"message":"No tool output found for function call call_xxx.","type":"invalid_request_error","param":"input","code":null}}"#,
            client(InvalidRequest),
        ),
        (
            "responses: context window",
            R,
            400,
            JSON,
            r#"{"error":{"message":"Your input exceeds the context window of this model. Please adjust your input and try again.","type":"invalid_request_error","param":"input","code":"context_length_exceeded"}}"#,
            client(ContextLengthExceeded),
        ),
        // ---- Gemini
        (
            "API_KEY_INVALID is a key error despite the 400",
            G,
            400,
            JSON,
            r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}},{"@type":"type.googleapis.com/google.rpc.LocalizedMessage","locale":"en-US","message":"API key not valid. Please pass a valid API key."}]}}"#,
            key(Unauthorized),
        ),
        (
            "token count over the limit",
            G,
            400,
            JSON,
            r#"{"error":{"code":400,"message":"The input token count (3475108) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
            client(ContextLengthExceeded),
        ),
        (
            "invalid argument",
            G,
            400,
            JSON,
            r#"{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT","errors":[{"message":"Request contains an invalid argument.","domain":"global","reason":"badRequest"}]}}"#,
            client(InvalidRequest),
        ),
        (
            "location not supported",
            G,
            400,
            JSON,
            r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#,
            key(Unauthorized),
        ),
        (
            "leaked key",
            G,
            403,
            JSON,
            r#"{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}"#,
            key(Unauthorized),
        ),
        (
            "unknown model",
            G,
            404,
            JSON,
            r#"{"error":{"code":404,"message":"models/foo is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.","status":"NOT_FOUND"}}"#,
            key(NotFound),
        ),
        (
            "free-tier requests quota",
            G,
            429,
            JSON,
            r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"},"quotaValue":"10"}]},{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more about Gemini API quotas","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"42s"}]}}"#,
            rate(RateLimitKind::Requests),
        ),
        (
            "internal",
            G,
            500,
            JSON,
            r#"{"error":{"code":500,"message":"An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting","status":"INTERNAL"}}"#,
            Outcome::Server { status: 500 },
        ),
        (
            "model overloaded",
            G,
            503,
            JSON,
            r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
            Outcome::Overloaded,
        ),
        (
            "deadline",
            G,
            504,
            JSON,
            r#"{"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}"#,
            Outcome::Server { status: 504 },
        ),
        (
            "array-wrapped error on the non-SSE stream path",
            G,
            200,
            JSON,
            r#"[{"error":{"code":400,"message":"API key expired. Please renew the API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_EXPIRED"}]}}]"#,
            key(Unauthorized),
        ),
        // ---- shapes and statuses, whatever the dialect
        (
            "cloudflare 502 page",
            A,
            502,
            Some("text/html; charset=UTF-8"),
            CLOUDFLARE_502,
            Outcome::Html { status: 502 },
        ),
        (
            "html without content type",
            C,
            500,
            None,
            CLOUDFLARE_502,
            Outcome::Html { status: 500 },
        ),
        (
            "captive portal on 200",
            G,
            200,
            Some("text/html"),
            "<!DOCTYPE html><html></html>",
            Outcome::Html { status: 200 },
        ),
        (
            "html on 200 sent as json",
            R,
            200,
            JSON,
            "\n  <!DOCTYPE html>",
            Outcome::Html { status: 200 },
        ),
        (
            "empty 200",
            C,
            200,
            JSON,
            "",
            Outcome::EmptyBody { status: 200 },
        ),
        (
            "blank 200",
            A,
            200,
            None,
            " \r\n\t",
            Outcome::EmptyBody { status: 200 },
        ),
        (
            "event stream awaits its events",
            A,
            200,
            Some("text/event-stream; charset=utf-8"),
            "",
            Outcome::Success,
        ),
        (
            "anthropic message",
            A,
            200,
            JSON,
            r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"{\"error\":1}"}],"usage":{"input_tokens":1,"output_tokens":1}}"#,
            Outcome::Success,
        ),
        (
            "responses body with error: null",
            R,
            200,
            JSON,
            r#"{"id":"resp_1","status":"completed","error":null}"#,
            Outcome::Success,
        ),
        (
            "responses body that failed",
            R,
            200,
            JSON,
            r#"{"id":"resp_1","status":"failed","error":{"code":"server_error","message":"boom"},"usage":null}"#,
            Outcome::Server { status: 500 },
        ),
        (
            "truncated json on 200",
            C,
            200,
            JSON,
            r#"{"choices":[{"#,
            Outcome::Malformed { status: 200 },
        ),
        (
            "plain text on 200",
            C,
            200,
            Some("text/plain"),
            "OK",
            Outcome::Malformed { status: 200 },
        ),
        (
            "gemini array success",
            G,
            200,
            JSON,
            r#"[{"candidates":[]},{"candidates":[]}]"#,
            Outcome::Success,
        ),
        (
            "422",
            C,
            422,
            JSON,
            r#"{"detail":[{"loc":["body","model"],"msg":"field required"}]}"#,
            client(InvalidRequest),
        ),
        (
            "relay error string",
            C,
            400,
            JSON,
            r#"{"error":"invalid model"}"#,
            client(InvalidRequest),
        ),
        (
            "relay plain-text 401",
            C,
            401,
            Some("text/plain"),
            "Unauthorized",
            key(Unauthorized),
        ),
        ("408", R, 408, None, "", Outcome::Server { status: 408 }),
        ("409", A, 409, JSON, "{}", Outcome::Server { status: 409 }),
        (
            "502 empty",
            G,
            502,
            None,
            "",
            Outcome::Server { status: 502 },
        ),
        (
            "redirect",
            C,
            301,
            None,
            "",
            Outcome::Server { status: 301 },
        ),
        ("402 bare", C, 402, None, "", key(Billing)),
        (
            "405 is the request's problem",
            C,
            405,
            None,
            "",
            client(InvalidRequest),
        ),
    ];
    for (name, dialect, status, ct, body, want) in cases {
        assert_eq!(
            classify_response(*dialect, *status, *ct, body.as_bytes()),
            *want,
            "{name}"
        );
    }
}

#[test]
fn oversized_error_bodies_are_judged_by_status() {
    let huge = format!(
        r#"{{"error":{{"message":"{}","code":"invalid_api_key"}}}}"#,
        "x".repeat(aether_protocol::classify::MAX_ERROR_BODY_BYTES)
    );
    assert_eq!(
        classify_response(C, 400, JSON, huge.as_bytes()),
        client(ClientErrorKind::InvalidRequest)
    );
}

#[test]
fn failover_policy() {
    assert!(!Outcome::Success.should_failover());
    assert!(!client(ClientErrorKind::ContextLengthExceeded).should_failover());
    for o in [
        key(KeyErrorClass::Unauthorized),
        rate(RateLimitKind::Unknown),
        Outcome::Overloaded,
        Outcome::Server { status: 500 },
        Outcome::Html { status: 200 },
        Outcome::EmptyBody { status: 200 },
        Outcome::Malformed { status: 200 },
    ] {
        assert!(o.should_failover(), "{o:?}");
    }
}

#[test]
fn rate_limit_kind_from_headers() {
    let cases: &[(Dialect, Headers, RateLimitKind)] = &[
        (
            A,
            &[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-tokens-remaining", "0"),
            ],
            RateLimitKind::Requests,
        ),
        (
            A,
            &[
                ("Anthropic-RateLimit-Requests-Remaining", "12"),
                ("anthropic-ratelimit-input-tokens-remaining", "0"),
                ("anthropic-ratelimit-output-tokens-remaining", "8000"),
            ],
            RateLimitKind::Tokens,
        ),
        (
            A,
            &[("anthropic-ratelimit-output-tokens-remaining", " 0 ")],
            RateLimitKind::Tokens,
        ),
        (
            A,
            &[
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("anthropic-ratelimit-tokens-remaining", "38000"),
            ],
            RateLimitKind::Concurrency,
        ),
        (A, &[("retry-after", "5")], RateLimitKind::Unknown),
        (
            A,
            &[("x-ratelimit-remaining-requests", "0")],
            RateLimitKind::Unknown,
        ),
        (
            C,
            &[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-remaining-tokens", "150000"),
            ],
            RateLimitKind::Requests,
        ),
        (
            R,
            &[
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-remaining-tokens", "0"),
            ],
            RateLimitKind::Tokens,
        ),
        (
            C,
            &[("x-ratelimit-remaining-tokens", "garbage")],
            RateLimitKind::Unknown,
        ),
        (
            G,
            &[("x-ratelimit-remaining-requests", "0")],
            RateLimitKind::Unknown,
        ),
    ];
    for (dialect, headers, want) in cases {
        assert_eq!(
            rate_limit_kind(*dialect, headers),
            *want,
            "{dialect:?} {headers:?}"
        );
    }
}

#[test]
fn classify_http_combines_rate_limit_headers_and_message() {
    let generic =
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}"#;
    let headers = [
        ("content-type", "application/json"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("retry-after", "12"),
    ];
    assert_eq!(
        classify_http(A, 429, &headers, generic),
        rate(RateLimitKind::Requests)
    );
    // The body is more specific than the headers.
    let tokens = br#"{"type":"error","error":{"type":"rate_limit_error","message":"exceeds 40,000 input tokens per minute"}}"#;
    assert_eq!(
        classify_http(A, 429, &headers, tokens),
        rate(RateLimitKind::Tokens)
    );
    // Headers showing capacity left on every per-minute limit: it was concurrency.
    let capacity = [
        ("anthropic-ratelimit-requests-remaining", "40"),
        ("anthropic-ratelimit-tokens-remaining", "90000"),
    ];
    assert_eq!(
        classify_http(A, 429, &capacity, tokens),
        rate(RateLimitKind::Concurrency)
    );
    // The content type comes from the headers.
    assert_eq!(
        classify_http(A, 200, &[("Content-Type", "text/event-stream")], b""),
        Outcome::Success
    );
    assert_eq!(
        classify_http(A, 500, &[("content-type", "text/html")], b"oops"),
        Outcome::Html { status: 500 }
    );
}

#[test]
fn retry_after_headers() {
    let cases: &[(Headers, Option<u64>)] = &[
        (&[("retry-after", "30")], Some(30)),
        (&[("Retry-After", " 7 ")], Some(7)),
        (&[("retry-after", "1.2")], Some(2)),
        (&[("retry-after-ms", "1500")], Some(2)),
        (
            &[("retry-after-ms", "1000"), ("retry-after", "60")],
            Some(1),
        ),
        (
            &[("retry-after-ms", "junk"), ("retry-after", "60")],
            Some(60),
        ),
        (&[("retry-after", "-1")], None),
        (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
        (&[], None),
    ];
    for (headers, want) in cases {
        assert_eq!(retry_after_secs(headers), *want, "{headers:?}");
    }
    let date = [("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")];
    let at = 1_445_412_480; // 2015-10-21T07:28:00Z
    assert_eq!(retry_after_secs_at(&date, at - 90), Some(90));
    assert_eq!(retry_after_secs_at(&date, at + 5), Some(0));
    assert_eq!(retry_after_secs_at(&[("retry-after", "3")], at), Some(3));
    assert_eq!(retry_after_secs_at(&[("retry-after", "soon")], at), None);
}

#[test]
fn retry_hints_in_bodies() {
    let cases: &[(&str, Option<u64>)] = &[
        (
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"18.4s"}]}}"#,
            Some(19),
        ),
        (
            r#"[{"error":{"code":429,"details":[{"@type":"type.googleapis.com/google.rpc.Help"},{"retryDelay":"42s"}]}}]"#,
            Some(42),
        ),
        (
            r#"{"error":{"message":"Rate limit reached ... Please try again in 2s.","code":"rate_limit_exceeded"}}"#,
            Some(2),
        ),
        (
            r#"{"error":{"message":"Please try again in 250ms."}}"#,
            Some(1),
        ),
        (
            r#"{"error":{"message":"Please try again in 1.5 seconds"}}"#,
            Some(2),
        ),
        (r#"{"error":{"message":"Please try again in 6m0s."}}"#, None),
        (r#"{"error":{"message":"Overloaded"}}"#, None),
        ("not json", None),
    ];
    for (body, want) in cases {
        assert_eq!(retry_after_from_body(body.as_bytes()), *want, "{body}");
    }
}

#[test]
fn error_messages_for_logs() {
    let cases: &[(&str, Option<&str>)] = &[
        (
            r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
            Some("boom"),
        ),
        (
            r#"{"error":{"code":500,"message":"internal","status":"INTERNAL"}}"#,
            Some("internal"),
        ),
        (r#"[{"error":{"message":"wrapped"}}]"#, Some("wrapped")),
        (r#"{"error":"flat string"}"#, Some("flat string")),
        (r#"{"ok":true}"#, None),
        ("<html>", None),
    ];
    for (body, want) in cases {
        assert_eq!(error_message(body.as_bytes()).as_deref(), *want, "{body}");
    }
}
