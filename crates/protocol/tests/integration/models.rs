//! Model lists in each dialect, byte for byte.

use aether_domain::format::Dialect;
use aether_protocol::models::{ModelEntry, render_model, render_model_list};
use serde_json::Value;

fn sonnet() -> ModelEntry {
    ModelEntry {
        id: "claude-sonnet-4-5-20250929".into(),
        display_name: "Claude Sonnet 4.5".into(),
        created_unix: 1_759_104_000,
        owned_by: "anthropic".into(),
        input_token_limit: Some(200_000),
        output_token_limit: Some(64_000),
    }
}

fn flash() -> ModelEntry {
    ModelEntry {
        id: "gemini-2.5-flash".into(),
        display_name: "Gemini \"2.5\" Flash".into(),
        created_unix: 0,
        owned_by: "google".into(),
        input_token_limit: None,
        output_token_limit: None,
    }
}

#[test]
fn lists_byte_for_byte() {
    let models = [sonnet(), flash()];
    let cases: &[(Dialect, &str)] = &[
        (
            Dialect::AnthropicMessages,
            r#"{"data":[{"type":"model","id":"claude-sonnet-4-5-20250929","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z","max_input_tokens":200000,"max_tokens":64000},{"type":"model","id":"gemini-2.5-flash","display_name":"Gemini \"2.5\" Flash","created_at":"1970-01-01T00:00:00Z"}],"has_more":false,"first_id":"claude-sonnet-4-5-20250929","last_id":"gemini-2.5-flash"}"#,
        ),
        (
            Dialect::OpenaiChat,
            r#"{"object":"list","data":[{"id":"claude-sonnet-4-5-20250929","object":"model","created":1759104000,"owned_by":"anthropic"},{"id":"gemini-2.5-flash","object":"model","created":0,"owned_by":"google"}]}"#,
        ),
        (
            Dialect::Gemini,
            r#"{"models":[{"name":"models/claude-sonnet-4-5-20250929","displayName":"Claude Sonnet 4.5","inputTokenLimit":200000,"outputTokenLimit":64000,"supportedGenerationMethods":["generateContent","streamGenerateContent","countTokens"]},{"name":"models/gemini-2.5-flash","displayName":"Gemini \"2.5\" Flash","supportedGenerationMethods":["generateContent","streamGenerateContent","countTokens"]}]}"#,
        ),
    ];
    for (dialect, want) in cases {
        let got = render_model_list(*dialect, &models);
        assert_eq!(std::str::from_utf8(&got).unwrap(), *want, "{dialect:?}");
    }
    assert_eq!(
        render_model_list(Dialect::OpenaiResponses, &models),
        render_model_list(Dialect::OpenaiChat, &models)
    );
}

#[test]
fn empty_lists() {
    let cases = [
        (
            Dialect::AnthropicMessages,
            r#"{"data":[],"has_more":false,"first_id":null,"last_id":null}"#,
        ),
        (Dialect::OpenaiChat, r#"{"object":"list","data":[]}"#),
        (Dialect::Gemini, r#"{"models":[]}"#),
    ];
    for (dialect, want) in cases {
        assert_eq!(
            std::str::from_utf8(&render_model_list(dialect, &[])).unwrap(),
            want
        );
    }
}

#[test]
fn single_model_is_the_list_element() {
    for dialect in [
        Dialect::AnthropicMessages,
        Dialect::OpenaiChat,
        Dialect::OpenaiResponses,
        Dialect::Gemini,
    ] {
        let list: Value = serde_json::from_slice(&render_model_list(dialect, &[sonnet()])).unwrap();
        let one: Value = serde_json::from_slice(&render_model(dialect, &sonnet())).unwrap();
        let element = match dialect {
            Dialect::Gemini => &list["models"][0],
            _ => &list["data"][0],
        };
        assert_eq!(element, &one, "{dialect:?}");
    }
}
