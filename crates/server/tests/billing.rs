//! Golden billing cases (SPEC §5) driven through the real gateway: the real server on an
//! ephemeral port, a real database, real HTTP to the mock upstream.
//!
//! Every expected figure below is computed BY HAND, in the comments next to it, from the
//! prices configured in [`deploy`] and the usage the mock is scripted to report. Nothing
//! here calls the product's pricing code: the literals are the specification. Money is
//! exact to the nano-dollar; a cost component is `tokens × price per 1M / 10⁶`, rounded
//! half-to-even once per component.
//!
//! The mock takes usage in *normalised* terms (`input` = uncached input tokens, `output`
//! includes reasoning) and renders it in each dialect's own convention: Anthropic's
//! `input_tokens` excludes cached tokens, OpenAI Chat's `prompt_tokens`, Responses'
//! `input_tokens` and Gemini's `promptTokenCount` include them, and Gemini reports
//! thinking tokens apart from `candidatesTokenCount`. The non-stream cases assert those
//! wire figures on the client's response, so each case really exercises the gateway's
//! per-dialect normalisation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::time::Duration;

use aether_domain::entities::{UsageRecord, UsageStatus};
use aether_domain::{Multiplier, Usd};
use aether_testkit::{MockUpstream, Step, Usage};
use common::{TestApp, request_id};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn usd(s: &str) -> Usd {
    s.parse().unwrap()
}

// ---------------------------------------------------------------- the deployment

/// Claude: two tiers split at 100k context; tier 0 gives every cache price explicitly,
/// tier 1 relies on the SPEC defaults (5m write = input × 1.25 = $7.5, 1h write =
/// input × 2 = $12, read = input × 0.1 = $0.6). Per-request price $0.01 (global default).
/// Provider pay-as-you-go; key multiplier 0.55.
const CLAUDE_MODEL: &str = "golden-claude";
const CLAUDE_SECRET: &str = "sk-golden-anthropic";

/// OpenAI Chat: tiers split at 128k (inclusive); tier 0 read $1.25 explicit, tier 1 read
/// defaults to $0.5. No per-request price. Provider FREE TIER (its key also carries a 0.55
/// multiplier: free tier wins, actual cost is 0).
const GPT_MODEL: &str = "golden-gpt";
const GPT_SECRET: &str = "sk-golden-openai";

/// OpenAI Responses: the real prices are a *provider-model override* (the global default is
/// a decoy at $100/$100 per 1M and $1 per request): tiers split at 272k, tier 0 read
/// $0.125 explicit, tier 1 read defaults to $0.25; per-request $0.002. Key multiplier 0.55.
const CODEX_MODEL: &str = "golden-codex";
const CODEX_SECRET: &str = "sk-golden-codex";

/// Gemini: sub-cent prices that are not whole nano-dollars per token, to pin the rounding:
/// tier 0 (≤ 200k) $0.075 in (75 n/token), $0.3 out (300 n/token), read $0.01875
/// (18.75 n/token); tier 1 $0.1375 in (137.5 n/token), $0.55 out (550 n/token), read
/// defaults to $0.01375 (13.75 n/token). No per-request price; multiplier 1.
const GEMINI_MODEL: &str = "golden-gemini";
const GEMINI_SECRET: &str = "sk-golden-gemini";

/// A model whose only key always answers 500; per-request price $0.05.
const BROKEN_MODEL: &str = "golden-broken";
const BROKEN_SECRET: &str = "sk-golden-broken";

struct Deployment {
    admin: String,
    user_id: String,
    key: String,
    /// Provider ids by name.
    providers: Vec<(&'static str, String)>,
}

async fn global_model(
    app: &TestApp,
    admin: &str,
    name: &str,
    pricing: Value,
    per_request: Option<&str>,
) -> String {
    let (s, g) = app
        .post(
            "/api/admin/models/global",
            admin,
            json!({ "name": name, "default_tiered_pricing": pricing,
                    "default_price_per_request": per_request }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    g["id"].as_str().unwrap().to_string()
}

/// A provider with one endpoint of `format`, one key and one model; returns the provider id.
#[allow(clippy::too_many_arguments)]
async fn provider(
    app: &TestApp,
    admin: &str,
    name: &str,
    billing_type: &str,
    format: &str,
    base_url: &str,
    secret: &str,
    multiplier: f64,
    model_id: &str,
    upstream_model: &str,
    model_overrides: Value,
) -> String {
    let (s, p) = app
        .post(
            "/api/admin/providers",
            admin,
            json!({ "name": name, "billing_type": billing_type, "provider_priority": 10 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["billing_type"], billing_type);
    let pid = p["id"].as_str().unwrap().to_string();
    let (s, e) = app
        .post(
            &format!("/api/admin/endpoints/providers/{pid}/endpoints"),
            admin,
            json!({ "api_format": format, "base_url": base_url, "timeout": 5, "max_retries": 1 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let eid = e["id"].as_str().unwrap();
    let (s, k) = app
        .post(
            &format!("/api/admin/endpoints/{eid}/keys"),
            admin,
            json!({ "api_key": secret, "name": secret, "rate_multiplier": multiplier }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    assert_eq!(k["rate_multiplier"], multiplier);
    let mut body = json!({ "global_model_id": model_id, "provider_model_name": upstream_model });
    for (k, v) in model_overrides.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, m) = app
        .post(&format!("/api/admin/providers/{pid}/models"), admin, body)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    pid
}

async fn deploy(app: &TestApp, mock: &MockUpstream) -> Deployment {
    let admin = app.admin_token().await;
    let url = mock.url();

    let claude = global_model(
        app,
        &admin,
        CLAUDE_MODEL,
        json!({"tiers": [
            {"up_to": 100000, "input_per_m": "3", "output_per_m": "15",
             "cache_creation_per_m": "3.75", "cache_creation_1h_per_m": "6", "cache_read_per_m": "0.3"},
            {"up_to": null, "input_per_m": "6", "output_per_m": "22.5"}]}),
        Some("0.01"),
    )
    .await;
    let gpt = global_model(
        app,
        &admin,
        GPT_MODEL,
        json!({"tiers": [
            {"up_to": 128000, "input_per_m": "2.5", "output_per_m": "10", "cache_read_per_m": "1.25"},
            {"up_to": null, "input_per_m": "5", "output_per_m": "20"}]}),
        None,
    )
    .await;
    let codex = global_model(
        app,
        &admin,
        CODEX_MODEL,
        json!({"tiers": [{"up_to": null, "input_per_m": "100", "output_per_m": "100"}]}),
        Some("1"),
    )
    .await;
    let gemini = global_model(
        app,
        &admin,
        GEMINI_MODEL,
        json!({"tiers": [
            {"up_to": 200000, "input_per_m": "0.075", "output_per_m": "0.3", "cache_read_per_m": "0.01875"},
            {"up_to": null, "input_per_m": "0.1375", "output_per_m": "0.55"}]}),
        None,
    )
    .await;
    let broken = global_model(
        app,
        &admin,
        BROKEN_MODEL,
        json!({"tiers": [{"up_to": null, "input_per_m": "3", "output_per_m": "15"}]}),
        Some("0.05"),
    )
    .await;

    let providers = vec![
        (
            "g-anthropic",
            provider(
                app,
                &admin,
                "g-anthropic",
                "pay_as_you_go",
                "CLAUDE",
                &url,
                CLAUDE_SECRET,
                0.55,
                &claude,
                "up-claude",
                json!({}),
            )
            .await,
        ),
        (
            "g-openai",
            provider(
                app,
                &admin,
                "g-openai",
                "free_tier",
                "OPENAI",
                &url,
                GPT_SECRET,
                0.55,
                &gpt,
                "up-gpt",
                json!({}),
            )
            .await,
        ),
        (
            "g-codex",
            provider(
                app,
                &admin,
                "g-codex",
                "pay_as_you_go",
                "OPENAI_CLI",
                &url,
                CODEX_SECRET,
                0.55,
                &codex,
                "up-codex",
                json!({
                    "tiered_pricing": {"tiers": [
                        {"up_to": 272000, "input_per_m": "1.25", "output_per_m": "10", "cache_read_per_m": "0.125"},
                        {"up_to": null, "input_per_m": "2.5", "output_per_m": "15"}]},
                    "price_per_request": "0.002"
                }),
            )
            .await,
        ),
        (
            "g-gemini",
            provider(
                app,
                &admin,
                "g-gemini",
                "pay_as_you_go",
                "GEMINI",
                &url,
                GEMINI_SECRET,
                1.0,
                &gemini,
                "up-gemini",
                json!({}),
            )
            .await,
        ),
        (
            "g-broken",
            provider(
                app,
                &admin,
                "g-broken",
                "pay_as_you_go",
                "CLAUDE",
                &url,
                BROKEN_SECRET,
                1.0,
                &broken,
                "up-broken",
                json!({}),
            )
            .await,
        ),
    ];

    let (user_id, key) = app.gateway_key(&admin, "payer@example.com").await;
    for m in [
        CLAUDE_MODEL,
        GPT_MODEL,
        CODEX_MODEL,
        GEMINI_MODEL,
        BROKEN_MODEL,
    ] {
        app.wait_for_model(&key, m).await;
    }
    Deployment {
        admin,
        user_id,
        key,
        providers,
    }
}

// ---------------------------------------------------------------- the client side

#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    /// Anthropic Messages (`CLAUDE`).
    Claude { stream: bool },
    /// OpenAI Chat Completions (`OPENAI`).
    Chat { stream: bool },
    /// OpenAI Responses (`OPENAI_CLI`).
    Responses { stream: bool },
    /// Gemini generateContent / streamGenerateContent?alt=sse (`GEMINI`).
    Gemini { stream: bool },
    /// Gemini streamGenerateContent without `alt=sse`: a JSON-array stream.
    GeminiJsonArray,
}

impl Call {
    fn stream(self) -> bool {
        match self {
            Call::Claude { stream }
            | Call::Chat { stream }
            | Call::Responses { stream }
            | Call::Gemini { stream } => stream,
            Call::GeminiJsonArray => true,
        }
    }

    fn format(self) -> &'static str {
        match self {
            Call::Claude { .. } => "CLAUDE",
            Call::Chat { .. } => "OPENAI",
            Call::Responses { .. } => "OPENAI_CLI",
            Call::Gemini { .. } | Call::GeminiJsonArray => "GEMINI",
        }
    }

    async fn send(self, app: &TestApp, key: &str, model: &str) -> reqwest::Response {
        let (path, body) = match self {
            Call::Claude { stream } => (
                "/v1/messages".to_string(),
                json!({ "model": model, "max_tokens": 256, "stream": stream,
                        "messages": [{"role": "user", "content": "Hello"}] }),
            ),
            Call::Chat { stream } => (
                "/v1/chat/completions".to_string(),
                json!({ "model": model, "stream": stream,
                        "messages": [{"role": "user", "content": "Hello"}] }),
            ),
            Call::Responses { stream } => (
                "/v1/responses".to_string(),
                json!({ "model": model, "stream": stream, "input": "Hello" }),
            ),
            Call::Gemini { stream } => (
                if stream {
                    format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
                } else {
                    format!("/v1beta/models/{model}:generateContent")
                },
                json!({ "contents": [{"role": "user", "parts": [{"text": "Hello"}]}] }),
            ),
            Call::GeminiJsonArray => (
                format!("/v1beta/models/{model}:streamGenerateContent"),
                json!({ "contents": [{"role": "user", "parts": [{"text": "Hello"}]}] }),
            ),
        };
        let rb = app.client.post(format!("{}{path}", app.url)).json(&body);
        let rb = match self {
            Call::Claude { .. } => rb
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01"),
            Call::Chat { .. } | Call::Responses { .. } => rb.bearer_auth(key),
            Call::Gemini { .. } | Call::GeminiJsonArray => rb.header("x-goog-api-key", key),
        };
        rb.send().await.unwrap()
    }
}

// ---------------------------------------------------------------- the golden table

/// One golden case. Token fields are the *normalised* record (input excludes every cached
/// token); money fields are hand-computed decimal literals.
struct Case {
    name: &'static str,
    call: Call,
    model: &'static str,
    secret: &'static str,
    provider: &'static str,
    /// What the mock reports (normalised terms, rendered per dialect).
    scripted: Usage,
    /// Wire figures on a non-stream response (JSON pointer, value): proof of the dialect's
    /// own counting convention.
    wire: &'static [(&'static str, u64)],
    /// Expected record tokens: (input, output, cache 5m, cache 1h, cache read, reasoning).
    tokens: (u64, u64, u64, u64, u64, u64),
    tier_index: usize,
    tier_up_to: Option<u64>,
    input: &'static str,
    output: &'static str,
    cache_5m: &'static str,
    cache_1h: &'static str,
    cache_read: &'static str,
    per_request: &'static str,
    /// List cost: charged to the user.
    total: &'static str,
    /// What the upstream account pays.
    actual: &'static str,
    multiplier: &'static str,
}

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    vec![
        // ---- Anthropic Messages, non-stream, tier 0, both cache writes, read, 0.55.
        // context = 1234 + 20000 read + 3000 (5m) + 2000 (1h) = 26234 ≤ 100000 → tier 0
        //   input  1234 × $3    = 3702 µ$  → 0.003702
        //   output  567 × $15   = 8505 µ$  → 0.008505
        //   5m     3000 × $3.75 = 11250 µ$ → 0.01125
        //   1h     2000 × $6    = 12000 µ$ → 0.012
        //   read  20000 × $0.3  = 6000 µ$  → 0.006
        //   per request                    → 0.01
        //   total = 0.003702 + 0.008505 + 0.01125 + 0.012 + 0.006 + 0.01 = 0.051457
        //   actual = 0.051457 × 0.55 = 0.02830135
        Case {
            name: "claude non-stream, tier 0, 5m+1h writes, read, per-request, ×0.55",
            call: Call::Claude { stream: false },
            model: CLAUDE_MODEL,
            secret: CLAUDE_SECRET,
            provider: "g-anthropic",
            scripted: Usage {
                input: 1234,
                output: 567,
                cache_read: 20_000,
                cache_creation_5m: 3000,
                cache_creation_1h: 2000,
                reasoning: 0,
            },
            wire: &[
                ("/usage/input_tokens", 1234),
                ("/usage/cache_read_input_tokens", 20_000),
                ("/usage/cache_creation_input_tokens", 5000),
                ("/usage/cache_creation/ephemeral_5m_input_tokens", 3000),
                ("/usage/cache_creation/ephemeral_1h_input_tokens", 2000),
                ("/usage/output_tokens", 567),
            ],
            tokens: (1234, 567, 3000, 2000, 20_000, 0),
            tier_index: 0,
            tier_up_to: Some(100_000),
            input: "0.003702",
            output: "0.008505",
            cache_5m: "0.01125",
            cache_1h: "0.012",
            cache_read: "0.006",
            per_request: "0.01",
            total: "0.051457",
            actual: "0.02830135",
            multiplier: "0.55",
        },
        // ---- Anthropic Messages, stream, tier 1 only because cache writes count toward
        // the context (Claude formats): input + read = 60500 ≤ 100000, but
        // 500 + 60000 + 30000 + 10001 = 100501 > 100000 → tier 1 (defaults: 5m $7.5,
        // 1h $12, read $0.6).
        //   input    500 × $6    = 3000 µ$   → 0.003
        //   output  2000 × $22.5 = 45000 µ$  → 0.045
        //   5m     30000 × $7.5  = 225000 µ$ → 0.225
        //   1h     10001 × $12   = 120012 µ$ → 0.120012
        //   read   60000 × $0.6  = 36000 µ$  → 0.036
        //   per request                      → 0.01
        //   total = 0.003 + 0.045 + 0.225 + 0.120012 + 0.036 + 0.01 = 0.439012
        //   actual = 0.439012 × 0.55 = 0.2414566
        Case {
            name: "claude stream, tier 1 via cache writes, default cache prices, ×0.55",
            call: Call::Claude { stream: true },
            model: CLAUDE_MODEL,
            secret: CLAUDE_SECRET,
            provider: "g-anthropic",
            scripted: Usage {
                input: 500,
                output: 2000,
                cache_read: 60_000,
                cache_creation_5m: 30_000,
                cache_creation_1h: 10_001,
                reasoning: 0,
            },
            wire: &[],
            tokens: (500, 2000, 30_000, 10_001, 60_000, 0),
            tier_index: 1,
            tier_up_to: None,
            input: "0.003",
            output: "0.045",
            cache_5m: "0.225",
            cache_1h: "0.120012",
            cache_read: "0.036",
            per_request: "0.01",
            total: "0.439012",
            actual: "0.2414566",
            multiplier: "0.55",
        },
        // ---- OpenAI Chat, non-stream, context exactly on the boundary (inclusive → tier 0).
        // Wire: prompt_tokens = 128000 *including* cached_tokens = 100000 → input 28000.
        // context = 28000 + 100000 = 128000 ≤ 128000 → tier 0
        //   input  28000 × $2.5  = 70000 µ$  → 0.07
        //   output  3210 × $10   = 32100 µ$  → 0.0321   (reasoning 1000 is inside output)
        //   read  100000 × $1.25 = 125000 µ$ → 0.125
        //   total = 0.07 + 0.0321 + 0.125 = 0.2271
        //   (billing the cached tokens twice would add 100000 × $2.5 = 0.25)
        //   actual = 0: free-tier provider (its key's 0.55 does not matter)
        Case {
            name: "openai chat non-stream, boundary → tier 0, cached inside prompt, free tier",
            call: Call::Chat { stream: false },
            model: GPT_MODEL,
            secret: GPT_SECRET,
            provider: "g-openai",
            scripted: Usage {
                input: 28_000,
                output: 3210,
                cache_read: 100_000,
                reasoning: 1000,
                ..Usage::default()
            },
            wire: &[
                ("/usage/prompt_tokens", 128_000),
                ("/usage/prompt_tokens_details/cached_tokens", 100_000),
                ("/usage/completion_tokens", 3210),
                ("/usage/completion_tokens_details/reasoning_tokens", 1000),
            ],
            tokens: (28_000, 3210, 0, 0, 100_000, 1000),
            tier_index: 0,
            tier_up_to: Some(128_000),
            input: "0.07",
            output: "0.0321",
            cache_5m: "0",
            cache_1h: "0",
            cache_read: "0.125",
            per_request: "0",
            total: "0.2271",
            actual: "0",
            multiplier: "0.55",
        },
        // ---- OpenAI Chat, stream, one token over the boundary → tier 1 (read default $0.5).
        // Wire: prompt_tokens = 128001 including cached 78000 → input 50001.
        //   input  50001 × $5   = 250005 µ$ → 0.250005
        //   output   999 × $20  = 19980 µ$  → 0.01998
        //   read   78000 × $0.5 = 39000 µ$  → 0.039
        //   total = 0.250005 + 0.01998 + 0.039 = 0.308985 ; actual 0 (free tier)
        Case {
            name: "openai chat stream, tier 1, default read price, free tier",
            call: Call::Chat { stream: true },
            model: GPT_MODEL,
            secret: GPT_SECRET,
            provider: "g-openai",
            scripted: Usage {
                input: 50_001,
                output: 999,
                cache_read: 78_000,
                ..Usage::default()
            },
            wire: &[],
            tokens: (50_001, 999, 0, 0, 78_000, 0),
            tier_index: 1,
            tier_up_to: None,
            input: "0.250005",
            output: "0.01998",
            cache_5m: "0",
            cache_1h: "0",
            cache_read: "0.039",
            per_request: "0",
            total: "0.308985",
            actual: "0",
            multiplier: "0.55",
        },
        // ---- OpenAI Responses, non-stream, tier 0, provider-model price override.
        // Wire: input_tokens = 50000 including input_tokens_details.cached_tokens = 43000
        // → input 7000; context 50000 ≤ 272000 → tier 0
        //   input   7000 × $1.25  = 8750 µ$  → 0.00875
        //   output  1500 × $10    = 15000 µ$ → 0.015   (reasoning 700 inside)
        //   read   43000 × $0.125 = 5375 µ$  → 0.005375
        //   per request (override; the global default $1 must not apply) → 0.002
        //   total = 0.00875 + 0.015 + 0.005375 + 0.002 = 0.031125
        //   actual = 0.031125 × 0.55 = 0.01711875
        Case {
            name: "responses non-stream, tier 0, override prices, per-request, ×0.55",
            call: Call::Responses { stream: false },
            model: CODEX_MODEL,
            secret: CODEX_SECRET,
            provider: "g-codex",
            scripted: Usage {
                input: 7000,
                output: 1500,
                cache_read: 43_000,
                reasoning: 700,
                ..Usage::default()
            },
            wire: &[
                ("/usage/input_tokens", 50_000),
                ("/usage/input_tokens_details/cached_tokens", 43_000),
                ("/usage/output_tokens", 1500),
                ("/usage/output_tokens_details/reasoning_tokens", 700),
            ],
            tokens: (7000, 1500, 0, 0, 43_000, 700),
            tier_index: 0,
            tier_up_to: Some(272_000),
            input: "0.00875",
            output: "0.015",
            cache_5m: "0",
            cache_1h: "0",
            cache_read: "0.005375",
            per_request: "0.002",
            total: "0.031125",
            actual: "0.01711875",
            multiplier: "0.55",
        },
        // ---- OpenAI Responses, stream, tier 1 (read default $0.25).
        // Wire: input_tokens = 300000 including cached 200000 → input 100000;
        // context 300000 > 272000 → tier 1
        //   input  100000 × $2.5  → 0.25
        //   output   4000 × $15   → 0.06   (reasoning 2500 inside)
        //   read   200000 × $0.25 → 0.05
        //   per request           → 0.002
        //   total = 0.25 + 0.06 + 0.05 + 0.002 = 0.362 ; actual = 0.362 × 0.55 = 0.1991
        Case {
            name: "responses stream, tier 1, default read price, per-request, ×0.55",
            call: Call::Responses { stream: true },
            model: CODEX_MODEL,
            secret: CODEX_SECRET,
            provider: "g-codex",
            scripted: Usage {
                input: 100_000,
                output: 4000,
                cache_read: 200_000,
                reasoning: 2500,
                ..Usage::default()
            },
            wire: &[],
            tokens: (100_000, 4000, 0, 0, 200_000, 2500),
            tier_index: 1,
            tier_up_to: None,
            input: "0.25",
            output: "0.06",
            cache_5m: "0",
            cache_1h: "0",
            cache_read: "0.05",
            per_request: "0.002",
            total: "0.362",
            actual: "0.1991",
            multiplier: "0.55",
        },
        // ---- Gemini, non-stream, tier 0, rounding.
        // Wire: promptTokenCount = 12678 including cachedContentTokenCount = 333 → input
        // 12345; candidatesTokenCount 6000 + thoughtsTokenCount 789 → output 6789.
        // context = 12678 ≤ 200000 → tier 0
        //   input  12345 × 75 n    = 925875 n  → 0.000925875
        //   output  6789 × 300 n   = 2036700 n → 0.0020367
        //   read     333 × 18.75 n = 6243.75 n → 6244 n (rounded) → 0.000006244
        //   total = 925875 + 2036700 + 6244 = 2968819 n → 0.002968819 ; actual = total
        Case {
            name: "gemini non-stream, tier 0, thoughts billed as output, rounding",
            call: Call::Gemini { stream: false },
            model: GEMINI_MODEL,
            secret: GEMINI_SECRET,
            provider: "g-gemini",
            scripted: Usage {
                input: 12_345,
                output: 6789,
                cache_read: 333,
                reasoning: 789,
                ..Usage::default()
            },
            wire: &[
                ("/usageMetadata/promptTokenCount", 12_678),
                ("/usageMetadata/cachedContentTokenCount", 333),
                ("/usageMetadata/candidatesTokenCount", 6000),
                ("/usageMetadata/thoughtsTokenCount", 789),
            ],
            tokens: (12_345, 6789, 0, 0, 333, 789),
            tier_index: 0,
            tier_up_to: Some(200_000),
            input: "0.000925875",
            output: "0.0020367",
            cache_5m: "0",
            cache_1h: "0",
            cache_read: "0.000006244",
            per_request: "0",
            total: "0.002968819",
            actual: "0.002968819",
            multiplier: "1",
        },
        // ---- Gemini, SSE stream, tier 1, a half-nano tie rounding to even (down).
        // Wire: promptTokenCount = 210003 including cached 60000 → input 150003;
        // candidates 2222 + thoughts 1111 → output 3333. context 210003 > 200000 → tier 1
        //   input  150003 × 137.5 n = 20625412.5 n → 20625412 n (tie → even) → 0.020625412
        //   output   3333 × 550 n   = 1833150 n  → 0.00183315
        //   read    60000 × 13.75 n = 825000 n   → 0.000825   (default = $0.1375 × 0.1)
        //   total = 20625412 + 1833150 + 825000 = 23283562 n → 0.023283562 ; actual = total
        Case {
            name: "gemini sse stream, tier 1, default read price, half-even tie",
            call: Call::Gemini { stream: true },
            model: GEMINI_MODEL,
            secret: GEMINI_SECRET,
            provider: "g-gemini",
            scripted: Usage {
                input: 150_003,
                output: 3333,
                cache_read: 60_000,
                reasoning: 1111,
                ..Usage::default()
            },
            wire: &[],
            tokens: (150_003, 3333, 0, 0, 60_000, 1111),
            tier_index: 1,
            tier_up_to: None,
            input: "0.020625412",
            output: "0.00183315",
            cache_5m: "0",
            cache_1h: "0",
            cache_read: "0.000825",
            per_request: "0",
            total: "0.023283562",
            actual: "0.023283562",
            multiplier: "1",
        },
        // ---- Gemini, JSON-array stream (no alt=sse), tier 0, a tie rounding up to even.
        // Wire: promptTokenCount = 1003 including cached 2 → input 1001.
        //   input  1001 × 75 n    = 75075 n → 0.000075075
        //   output   10 × 300 n   = 3000 n  → 0.000003
        //   read      2 × 18.75 n = 37.5 n  → 38 n (tie → even) → 0.000000038
        //   total = 75075 + 3000 + 38 = 78113 n → 0.000078113 ; actual = total
        Case {
            name: "gemini json-array stream, tier 0, half-even tie",
            call: Call::GeminiJsonArray,
            model: GEMINI_MODEL,
            secret: GEMINI_SECRET,
            provider: "g-gemini",
            scripted: Usage {
                input: 1001,
                output: 10,
                cache_read: 2,
                ..Usage::default()
            },
            wire: &[],
            tokens: (1001, 10, 0, 0, 2, 0),
            tier_index: 0,
            tier_up_to: Some(200_000),
            input: "0.000075075",
            output: "0.000003",
            cache_5m: "0",
            cache_1h: "0",
            cache_read: "0.000000038",
            per_request: "0",
            total: "0.000078113",
            actual: "0.000078113",
            multiplier: "1",
        },
    ]
}

// ---------------------------------------------------------------- the checks

async fn user_spend(app: &TestApp, d: &Deployment) -> (Usd, Usd) {
    let (s, u) = app
        .get(&format!("/api/admin/users/{}", d.user_id), &d.admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    (
        usd(u["used_usd"].as_str().unwrap()),
        usd(u["total_usd"].as_str().unwrap()),
    )
}

/// Waits (billing is applied asynchronously by the usage writer) until the user's spend
/// reaches `want`, then asserts it exactly.
async fn expect_spend(app: &TestApp, d: &Deployment, want: Usd, what: &str) {
    for _ in 0..200 {
        if user_spend(app, d).await == (want, want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        user_spend(app, d).await,
        (want, want),
        "{what}: user used_usd / total_usd"
    );
}

/// The id of the only usage record of `model` (for a response without a request-id header).
async fn failed_request_id(app: &TestApp, model: &str) -> String {
    use aether_store::{Page, UsageFilter, UsageRepo as _};
    let f = UsageFilter {
        model: Some(model.to_string()),
        ..UsageFilter::default()
    };
    for _ in 0..400 {
        let page = app.store().list_usage(&f, Page::default()).await.unwrap();
        if let [r] = page.items.as_slice() {
            return r.id.to_string();
        }
        assert!(page.items.len() <= 1, "one request of {model}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no usage record for {model}");
}

fn check_record(c: &Case, rec: &UsageRecord) {
    let n = c.name;
    assert_eq!(
        rec.status,
        UsageStatus::Completed,
        "{n}: {:?}",
        rec.error_message
    );
    assert_eq!(rec.status_code, Some(200), "{n}");
    assert_eq!(rec.is_stream, c.call.stream(), "{n}");
    assert_eq!(rec.api_format.to_string(), c.call.format(), "{n}");
    assert!(!rec.unpriced, "{n}: priced");
    let t = &rec.tokens;
    assert_eq!(
        (
            t.input,
            t.output,
            t.cache_creation_5m,
            t.cache_creation_1h,
            t.cache_read,
            t.reasoning
        ),
        c.tokens,
        "{n}: normalised tokens (input, output, 5m, 1h, read, reasoning)"
    );
    let k = &rec.cost;
    assert_eq!(
        (k.tier_index, k.tier_up_to),
        (c.tier_index, c.tier_up_to),
        "{n}: tier"
    );
    let got = [
        ("input", k.input),
        ("output", k.output),
        ("cache_creation_5m", k.cache_creation_5m),
        ("cache_creation_1h", k.cache_creation_1h),
        ("cache_read", k.cache_read),
        ("per_request", k.per_request),
        ("total", k.total),
        ("actual_total", k.actual_total),
    ];
    let want = [
        c.input,
        c.output,
        c.cache_5m,
        c.cache_1h,
        c.cache_read,
        c.per_request,
        c.total,
        c.actual,
    ];
    for ((field, g), w) in got.iter().zip(want) {
        assert_eq!(*g, usd(w), "{n}: cost.{field} (got {g}, want {w})");
    }
    assert_eq!(
        k.multiplier,
        c.multiplier.parse::<Multiplier>().unwrap(),
        "{n}: multiplier"
    );
}

/// Each dialect, stream and non-stream, through the real gateway: tokens, every cost
/// component, tier, list and actual totals, the user's spend and the providers' spend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_billing_cases() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    let d = deploy(&app, &mock).await;

    let mut charged = Usd::ZERO;
    let mut actual_by_provider: Vec<(&str, Usd)> =
        d.providers.iter().map(|(n, _)| (*n, Usd::ZERO)).collect();

    let table = cases();
    for c in &table {
        // The table must add up (guards typos in the hand computation).
        assert_eq!(
            [
                c.input,
                c.output,
                c.cache_5m,
                c.cache_1h,
                c.cache_read,
                c.per_request
            ]
            .iter()
            .map(|s| usd(s))
            .sum::<Usd>(),
            usd(c.total),
            "{}: the hand-computed components add up to the total",
            c.name
        );

        mock.script(c.secret, [Step::ok().text("Golden.").usage(c.scripted)]);
        let resp = c.call.send(&app, &d.key, c.model).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", c.name);
        let id = request_id(&resp);
        let body = resp.text().await.unwrap();
        if !c.wire.is_empty() {
            let v: Value = serde_json::from_str(&body).unwrap();
            for (ptr, want) in c.wire {
                assert_eq!(
                    v.pointer(ptr).and_then(Value::as_u64),
                    Some(*want),
                    "{}: wire {ptr} in {body}",
                    c.name
                );
            }
        }
        assert_eq!(
            mock.pending_steps(c.secret),
            0,
            "{}: one upstream call",
            c.name
        );

        let rec = app.usage(&id).await;
        check_record(c, &rec);

        charged += usd(c.total);
        expect_spend(&app, &d, charged, c.name).await;
        let p = actual_by_provider
            .iter_mut()
            .find(|(n, _)| *n == c.provider)
            .unwrap();
        p.1 += usd(c.actual);
    }

    // ---- A failed request: the only key answers 500. It costs nothing — in particular not
    // the model's $0.05 per-request price — and charges nobody.
    mock.script(BROKEN_SECRET, (0..8).map(|_| Step::status(500)));
    let resp = Call::Claude { stream: false }
        .send(&app, &d.key, BROKEN_MODEL)
        .await;
    let status = resp.status();
    let header_id = resp
        .headers()
        .get("x-aether-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.text().await.unwrap();
    eprintln!("failed request: {status} id={header_id:?} {body}");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(mock.request_count(BROKEN_SECRET) >= 1);
    let id = match header_id {
        Some(id) => id,
        // README: "Every response carries x-aether-request-id" — the gateway's own
        // all-candidates-failed error does not (reported); find the record by model.
        None => failed_request_id(&app, BROKEN_MODEL).await,
    };
    let rec = app.usage(&id).await;
    assert_eq!(rec.status, UsageStatus::Failed, "{rec:?}");
    assert!(rec.tokens.is_empty(), "{:?}", rec.tokens);
    assert_eq!(
        rec.cost.per_request,
        Usd::ZERO,
        "no per-request price on failure"
    );
    assert_eq!(rec.cost.total, Usd::ZERO, "a failed request costs nothing");
    assert_eq!(rec.cost.actual_total, Usd::ZERO);

    // A last successful request after the failure, so the writer has provably applied
    // everything before it: the user's spend is exactly the sum of the list totals above
    // (0.051457 + 0.439012 + 0.2271 + 0.308985 + 0.031125 + 0.362 + 0.002968819
    //  + 0.023283562 + 0.000078113 = 1.446009494) plus this one.
    assert_eq!(
        charged,
        usd("1.446009494"),
        "sum of the table's list totals"
    );
    let c = &table[0];
    mock.script(c.secret, [Step::ok().text("Golden.").usage(c.scripted)]);
    let resp = c.call.send(&app, &d.key, c.model).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = request_id(&resp);
    let _ = resp.text().await;
    check_record(c, &app.usage(&id).await);
    charged += usd(c.total);
    actual_by_provider[0].1 += usd(c.actual);
    // 1.446009494 + 0.051457 = 1.497466494
    assert_eq!(charged, usd("1.497466494"));
    expect_spend(&app, &d, charged, "after the failed request").await;

    // Actual cost counts against each provider (free tier: nothing).
    // g-anthropic: 2 × 0.02830135 + 0.2414566 = 0.2980593
    // g-openai: 0 ; g-codex: 0.01711875 + 0.1991 = 0.21621875
    // g-gemini: 0.002968819 + 0.023283562 + 0.000078113 = 0.026330494 ; g-broken: 0
    let want_actual = [
        ("g-anthropic", "0.2980593"),
        ("g-openai", "0"),
        ("g-codex", "0.21621875"),
        ("g-gemini", "0.026330494"),
        ("g-broken", "0"),
    ];
    for ((name, hand), (n2, sum)) in want_actual.iter().zip(&actual_by_provider) {
        assert_eq!(name, n2);
        assert_eq!(usd(hand), *sum, "{name}: hand sum of actual totals");
    }
    for ((name, want), (_, pid)) in want_actual.iter().zip(&d.providers) {
        let mut got = Value::Null;
        for _ in 0..200 {
            got = app
                .get(&format!("/api/admin/providers/{pid}"), &d.admin)
                .await
                .1;
            if got["quota_used_usd"].as_str().map(usd) == Some(usd(want)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            got["quota_used_usd"].as_str().map(usd),
            Some(usd(want)),
            "{name}: provider quota_used_usd = sum of actual totals: {got}"
        );
    }

    app.stop().await;
}
