//! A cheap local estimate of a request's input tokens.
//!
//! Used when an upstream has no count-tokens endpoint and to reserve quota before a request
//! is sent; the real usage settles the account afterwards. The estimate is deliberately
//! simple and errs high:
//!
//! - Only the prompt-bearing top-level members count: Anthropic `system`, `messages`,
//!   `tools`; OpenAI Chat `messages`, `tools`, `functions`; Responses `instructions`, `input`,
//!   `tools`; Gemini `contents`, `systemInstruction`, `tools` (snake_case too). Sampling
//!   settings, metadata, model names and cache keys are not prompt text.
//! - Inside them, every string value, object key and number contributes its byte length
//!   (escapes counted as written) and the total is divided by [`BYTES_PER_TOKEN`], rounded up.
//!   Keys stand in for the per-message and tool-schema overhead the model also sees.
//! - Base64 media (a `data` string longer than 256 bytes, or any `data:` URL) counts as a
//!   flat [`MEDIA_TOKENS`] instead of its size, which would be wildly off.
//! - Opaque replay blobs (`signature`, `thoughtSignature`, `encrypted_content`) count 0: they
//!   are not tokenised as text.
//!
//! Invalid JSON falls back to the whole body's length divided by [`BYTES_PER_TOKEN`].

use aether_domain::format::Dialect;

use crate::json_scan::{Token, members, skip_ws, tokens};

/// Average bytes per token assumed for text (English prose and code are ~3.5–4.5).
pub const BYTES_PER_TOKEN: u64 = 4;

/// Tokens charged per embedded image/document/audio blob: Anthropic's figure for an image of
/// about 1.15 megapixels, the upper end of what the dialects charge per image.
pub const MEDIA_TOKENS: u64 = 1_600;

/// Base64 `data` strings at least this long are media, not text.
const MEDIA_MIN_BYTES: usize = 256;

#[derive(Default)]
struct Tally {
    bytes: u64,
    media: u64,
}

fn prompt_members(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::AnthropicMessages => &["system", "messages", "tools"],
        Dialect::OpenaiChat => &["messages", "tools", "functions"],
        Dialect::OpenaiResponses => &["instructions", "input", "tools"],
        Dialect::Gemini => &[
            "contents",
            "systemInstruction",
            "system_instruction",
            "tools",
        ],
    }
}

/// Estimated input tokens of a request body in `dialect` (see the module docs).
#[must_use]
pub fn estimate_input_tokens(dialect: Dialect, body: &[u8]) -> u64 {
    let fallback = (body.len() as u64).div_ceil(BYTES_PER_TOKEN);
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return fallback;
    }
    let open = skip_ws(body, 0);
    if body.get(open) != Some(&b'{') {
        return fallback;
    }
    let wanted = prompt_members(dialect);
    let mut tally = Tally::default();
    for m in members(body, open) {
        let key = body
            .get(m.key.start + 1..m.key.end.saturating_sub(1))
            .unwrap_or_default();
        if wanted.iter().any(|w| w.as_bytes() == key) {
            walk(body, m.value.start, key, &mut tally);
        }
    }
    tally
        .bytes
        .div_ceil(BYTES_PER_TOKEN)
        .saturating_add(tally.media.saturating_mul(MEDIA_TOKENS))
}

fn is_opaque_key(key: &[u8]) -> bool {
    matches!(
        key,
        b"signature" | b"thoughtSignature" | b"thought_signature" | b"encrypted_content"
    )
}

/// Adds the value starting at `at` (the value of top-level member `key`) to the tally, in one
/// linear pass.
fn walk(body: &[u8], at: usize, key: &[u8], tally: &mut Tally) {
    /// The key a scalar in this container belongs to: the current member's key in an object,
    /// the enclosing member's key in an array (so `"data": ["..."]` is still `data`).
    struct Frame<'a> {
        object: bool,
        key: &'a [u8],
    }
    let mut frames: Vec<Frame<'_>> = Vec::new();
    let inner = |span: std::ops::Range<usize>| -> &[u8] {
        body.get(span.start + 1..span.end.saturating_sub(1))
            .unwrap_or_default()
    };
    for token in tokens(body, at) {
        match token {
            Token::Open { object } => {
                let key = frames.last().map_or(key, |f| f.key);
                frames.push(Frame { object, key });
            }
            Token::Close => {
                frames.pop();
            }
            Token::Key(span) => {
                let k = inner(span);
                tally.bytes += k.len() as u64;
                if let Some(f) = frames.last_mut().filter(|f| f.object) {
                    f.key = k;
                }
            }
            Token::Scalar(span) => {
                let owner = frames.last().map_or(key, |f| f.key);
                if body.get(span.start) == Some(&b'"') {
                    let text = inner(span);
                    if is_opaque_key(owner) {
                        continue;
                    }
                    if text.starts_with(b"data:")
                        || (owner == b"data" && text.len() >= MEDIA_MIN_BYTES)
                    {
                        tally.media += 1;
                    } else {
                        tally.bytes += text.len() as u64;
                    }
                } else {
                    // Numbers are tokens too; `true`/`false`/`null` hardly matter either way.
                    tally.bytes += span.len() as u64;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_prompt_text_only() {
        let body = br#"{"model":"claude-sonnet-4-5-with-a-very-long-name","max_tokens":1024,
            "messages":[{"role":"user","content":"abcdefgh"}]}"#;
        // keys role+content (11) + values user+abcdefgh (12) = 23 bytes -> 6 tokens
        assert_eq!(estimate_input_tokens(Dialect::AnthropicMessages, body), 6);
        // Chat counts `messages` too, Gemini does not.
        assert_eq!(estimate_input_tokens(Dialect::OpenaiChat, body), 6);
        assert_eq!(estimate_input_tokens(Dialect::Gemini, body), 0);
    }

    #[test]
    fn media_is_flat_and_signatures_are_free() {
        let blob = "A".repeat(100_000);
        let body = format!(
            r#"{{"messages":[{{"content":[{{"type":"image","source":{{"type":"base64","data":"{blob}"}}}},
               {{"type":"thinking","thinking":"","signature":"{blob}"}},
               {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{blob}"}}}}]}}]}}"#
        );
        let est = estimate_input_tokens(Dialect::AnthropicMessages, body.as_bytes());
        assert!(
            (2 * MEDIA_TOKENS..2 * MEDIA_TOKENS + 100).contains(&est),
            "{est}"
        );
    }

    #[test]
    fn invalid_json_falls_back_to_length() {
        assert_eq!(estimate_input_tokens(Dialect::OpenaiChat, b"{not json"), 3);
        assert_eq!(estimate_input_tokens(Dialect::OpenaiChat, b"[1,2]"), 2);
        assert_eq!(estimate_input_tokens(Dialect::OpenaiChat, b""), 0);
    }
}
