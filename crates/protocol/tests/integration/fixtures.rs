//! Real client request captures through inspection, rewriting and estimation.

use aether_domain::format::Dialect;
use aether_protocol::request::{RequestInfo, ensure_include_usage, inspect, replace_model};
use aether_protocol::tokens::estimate_input_tokens;
use serde_json::Value;

use crate::{CLAUDE_CODE, CODEX, GEMINI_CLI, capture_body};

/// Each capture as (name, dialect, raw pretty body, compact re-serialisation).
fn bodies() -> Vec<(&'static str, Dialect, Vec<u8>, Vec<u8>)> {
    [
        ("claude-code", Dialect::AnthropicMessages, CLAUDE_CODE),
        ("codex", Dialect::OpenaiResponses, CODEX),
        ("gemini-cli", Dialect::Gemini, GEMINI_CLI),
    ]
    .into_iter()
    .map(|(name, dialect, text)| {
        let raw = capture_body(text).to_vec();
        let v: Value = serde_json::from_slice(&raw).expect("capture body is JSON");
        (
            name,
            dialect,
            raw,
            serde_json::to_vec(&v).expect("serialisable"),
        )
    })
    .collect()
}

#[test]
fn captures_are_inspected_correctly() {
    let expected = [
        RequestInfo {
            model: Some("claude-sonnet-4-5".into()),
            stream: Some(true),
            max_tokens: Some(32_000),
            ..RequestInfo::default()
        },
        RequestInfo {
            model: Some("gpt-5".into()),
            stream: Some(true),
            prompt_cache_key: Some("01a21878-2ccb-7651-8022-1fce6467ca92".into()),
            ..RequestInfo::default()
        },
        RequestInfo::default(),
    ];
    for ((name, _, raw, compact), want) in bodies().into_iter().zip(expected) {
        assert_eq!(inspect(&raw).unwrap(), want, "{name} (pretty)");
        assert_eq!(inspect(&compact).unwrap(), want, "{name} (compact)");
    }
}

#[test]
fn claude_code_cache_ttl_detection() {
    // The capture uses plain 5-minute ephemeral breakpoints; switching one to 1h is detected.
    let raw = capture_body(CLAUDE_CODE);
    assert!(!inspect(raw).unwrap().has_cache_ttl_1h);
    let text = std::str::from_utf8(raw).unwrap();
    let with_1h = text.replacen(
        "\"cache_control\": {\n",
        "\"cache_control\": {\n\"ttl\": \"1h\",\n",
        1,
    );
    assert_ne!(with_1h, text, "the capture has a cache_control block");
    assert!(inspect(with_1h.as_bytes()).unwrap().has_cache_ttl_1h);
}

#[test]
fn replace_model_touches_only_the_model_span() {
    for (name, _, raw, compact) in bodies() {
        for body in [&raw, &compact] {
            let out = replace_model(body, "upstream/model-\u{e9}\"x\"").unwrap();
            let mut want: Value = serde_json::from_slice(body).unwrap();
            if let Some(m) = want.get_mut("model") {
                *m = Value::from("upstream/model-\u{e9}\"x\"");
            } else {
                assert_eq!(&out, body, "{name}: no top-level model, unchanged");
                continue;
            }
            let got: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(got, want, "{name}");
            // Byte-exactness: everything outside the value is identical.
            let prefix = body.iter().zip(&out).take_while(|(a, b)| a == b).count();
            let suffix = body
                .iter()
                .rev()
                .zip(out.iter().rev())
                .take_while(|(a, b)| a == b)
                .count();
            let old_value_len = body.len() - prefix - suffix;
            assert!(
                old_value_len <= "\"claude-sonnet-4-5\"".len(),
                "{name}: only the value changed"
            );
        }
    }
}

#[test]
fn include_usage_injection_on_a_real_body() {
    let (_, _, raw, _) = bodies().swap_remove(1);
    let (out, asked) = ensure_include_usage(&raw).unwrap();
    assert!(!asked);
    assert_eq!(
        out.len(),
        raw.len() + r#""stream_options":{"include_usage":true},"#.len()
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    let (again, asked) = ensure_include_usage(&out).unwrap();
    assert!(asked);
    assert_eq!(again, out);
}

#[test]
fn token_estimates_are_plausible() {
    for (name, dialect, raw, compact) in bodies() {
        let pretty = estimate_input_tokens(dialect, &raw);
        let tight = estimate_input_tokens(dialect, &compact);
        // Whitespace does not count; only escaping differs between the two spellings
        // (the capture escapes non-ASCII as `\uXXXX`, serde_json writes UTF-8).
        assert!(
            pretty.abs_diff(tight) <= pretty / 20,
            "{name}: {pretty} vs {tight}"
        );
        // Roughly a quarter of the body, never more than the body itself.
        assert!(
            pretty > compact.len() as u64 / 8 && pretty < compact.len() as u64 / 3,
            "{name}: {pretty} tokens for {} bytes",
            compact.len()
        );
        // Other dialects look at other members: read as Anthropic, a Gemini body only
        // contributes its `tools` (its `contents` and `systemInstruction` are not prompt).
        if dialect == Dialect::Gemini {
            let as_anthropic = estimate_input_tokens(Dialect::AnthropicMessages, &raw);
            assert!(
                as_anthropic > 0 && as_anthropic < pretty,
                "{as_anthropic} vs {pretty}"
            );
        }
    }
}
