//! Token-usage extraction, normalised into [`TokenUsage`].
//!
//! [`TokenUsage`] semantics: `input` excludes cache reads and cache writes, `output` includes
//! reasoning tokens, `reasoning` is informational. Each dialect reports differently:
//!
//! | dialect | `input` | `cache_read` | cache writes | `output` | `reasoning` |
//! |---|---|---|---|---|---|
//! | Anthropic | `input_tokens` (already excludes cache) | `cache_read_input_tokens` | `cache_creation.ephemeral_5m/1h_input_tokens`; a bare `cache_creation_input_tokens` counts as 5m | `output_tokens` | 0 (not reported separately) |
//! | OpenAI Chat | `prompt_tokens − cached_tokens` | `prompt_tokens_details.cached_tokens` | 0 | `completion_tokens` | `completion_tokens_details.reasoning_tokens` |
//! | Responses | `input_tokens − cached_tokens` | `input_tokens_details.cached_tokens` | 0 | `output_tokens` | `output_tokens_details.reasoning_tokens` |
//! | Gemini | `promptTokenCount − cachedContentTokenCount + toolUsePromptTokenCount` | `cachedContentTokenCount` | 0 | `candidatesTokenCount + thoughtsTokenCount` | `thoughtsTokenCount` |
//!
//! Gemini's `thoughtsTokenCount` is *separate* from `candidatesTokenCount` but billed as
//! output, hence the sum. Tool-use prompt tokens (function-response context) are billed as
//! input. Counts are read leniently: a missing or `null` field is 0, a negative number is 0,
//! and a fractional one is truncated, because one odd field must not lose the whole record.
//!
//! For streams, [`StreamUsage`] accumulates what each dialect reports (all four report
//! *cumulative* figures, so the latest value replaces, never adds) and can be read at any
//! time — a stream cut mid-way still yields what was seen, for partial billing.

use aether_domain::format::Dialect;
use aether_domain::pricing::TokenUsage;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::sse::SseEvent;

/// A token count that never fails to deserialise (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).unwrap_or(0)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                // `as` saturates (and maps NaN to 0), which is exactly the leniency wanted.
                Ok(Count(if v.is_finite() && v > 0.0 {
                    v as u64
                } else {
                    0
                }))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                Ok(Count(v.trim().parse().unwrap_or(0)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_none<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Count, D2::Error> {
                Count::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(0))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(0))
            }
        }
        d.deserialize_any(V)
    }
}

fn n(c: Option<Count>) -> u64 {
    c.map_or(0, |c| c.0)
}

// ---- Anthropic -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<Count>,
    output_tokens: Option<Count>,
    cache_creation_input_tokens: Option<Count>,
    cache_read_input_tokens: Option<Count>,
    cache_creation: Option<AnthropicCacheCreation>,
}

#[derive(Debug, Default, Deserialize)]
struct AnthropicCacheCreation {
    ephemeral_5m_input_tokens: Option<Count>,
    ephemeral_1h_input_tokens: Option<Count>,
}

impl AnthropicUsage {
    /// `(5m, 1h)` cache-write tokens, or `None` when nothing about cache writes was reported.
    ///
    /// With a breakdown, any part of the total it does not explain is attributed to the 5-minute
    /// bucket (the default TTL); without one, the whole total is 5-minute.
    fn cache_writes(&self) -> Option<(u64, u64)> {
        let total = self.cache_creation_input_tokens.map(|c| c.0);
        let split = self.cache_creation.as_ref().and_then(|c| {
            (c.ephemeral_5m_input_tokens.is_some() || c.ephemeral_1h_input_tokens.is_some()).then(
                || {
                    (
                        n(c.ephemeral_5m_input_tokens),
                        n(c.ephemeral_1h_input_tokens),
                    )
                },
            )
        });
        match (total, split) {
            (None, None) => None,
            (Some(t), None) => Some((t, 0)),
            (t, Some((m5, h1))) => {
                let explained = m5.saturating_add(h1);
                let rest = t.unwrap_or(explained).saturating_sub(explained);
                Some((m5.saturating_add(rest), h1))
            }
        }
    }

    fn to_usage(&self) -> TokenUsage {
        let (m5, h1) = self.cache_writes().unwrap_or((0, 0));
        TokenUsage {
            input: n(self.input_tokens),
            output: n(self.output_tokens),
            cache_creation_5m: m5,
            cache_creation_1h: h1,
            cache_read: n(self.cache_read_input_tokens),
            reasoning: 0,
        }
    }

    /// Applies a `message_delta` usage on top of what `message_start` reported: output is
    /// cumulative and replaces; input-side fields replace only when present and non-zero
    /// (deltas usually omit them or repeat zeros).
    fn apply_delta(&self, u: &mut TokenUsage) {
        if let Some(out) = self.output_tokens {
            u.output = out.0;
        }
        if let Some(i) = self.input_tokens.filter(|c| c.0 > 0) {
            u.input = i.0;
        }
        if let Some(r) = self.cache_read_input_tokens.filter(|c| c.0 > 0) {
            u.cache_read = r.0;
        }
        let has_split = self.cache_creation.as_ref().is_some_and(|c| {
            c.ephemeral_5m_input_tokens.is_some() || c.ephemeral_1h_input_tokens.is_some()
        });
        if let Some((m5, h1)) = self.cache_writes()
            && m5.saturating_add(h1) > 0
        {
            if has_split {
                u.cache_creation_5m = m5;
                u.cache_creation_1h = h1;
            } else {
                // A total without its breakdown (deltas often repeat only the total): keep the
                // 1-hour part `message_start` reported and attribute the rest to 5 minutes.
                let total = m5;
                u.cache_creation_1h = u.cache_creation_1h.min(total);
                u.cache_creation_5m = total - u.cache_creation_1h;
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct AnthropicMessage {
    usage: Option<AnthropicUsage>,
}

#[derive(Debug, Deserialize)]
struct AnthropicEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<AnthropicMessage>,
    usage: Option<AnthropicUsage>,
}

// ---- OpenAI Chat -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct ChatUsage {
    prompt_tokens: Option<Count>,
    completion_tokens: Option<Count>,
    prompt_tokens_details: Option<CachedDetails>,
    completion_tokens_details: Option<ReasoningDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct CachedDetails {
    cached_tokens: Option<Count>,
}

#[derive(Debug, Default, Deserialize)]
struct ReasoningDetails {
    reasoning_tokens: Option<Count>,
}

impl ChatUsage {
    fn to_usage(&self) -> TokenUsage {
        let cached = n(self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens));
        TokenUsage {
            input: n(self.prompt_tokens).saturating_sub(cached),
            output: n(self.completion_tokens),
            cache_read: cached,
            reasoning: n(self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)),
            ..TokenUsage::default()
        }
    }
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    usage: Option<ChatUsage>,
}

// ---- OpenAI Responses --------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct ResponsesUsage {
    input_tokens: Option<Count>,
    output_tokens: Option<Count>,
    input_tokens_details: Option<CachedDetails>,
    output_tokens_details: Option<ReasoningDetails>,
}

impl ResponsesUsage {
    fn to_usage(&self) -> TokenUsage {
        let cached = n(self
            .input_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens));
        TokenUsage {
            input: n(self.input_tokens).saturating_sub(cached),
            output: n(self.output_tokens),
            cache_read: cached,
            reasoning: n(self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)),
            ..TokenUsage::default()
        }
    }
}

#[derive(Debug, Deserialize)]
struct ResponsesBody {
    usage: Option<ResponsesUsage>,
}

#[derive(Debug, Deserialize)]
struct ResponsesEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    response: Option<ResponsesBody>,
}

// ---- Gemini ------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: Option<Count>,
    candidates_token_count: Option<Count>,
    cached_content_token_count: Option<Count>,
    thoughts_token_count: Option<Count>,
    tool_use_prompt_token_count: Option<Count>,
}

impl GeminiUsage {
    fn to_usage(&self) -> TokenUsage {
        let cached = n(self.cached_content_token_count);
        let thoughts = n(self.thoughts_token_count);
        TokenUsage {
            input: n(self.prompt_token_count)
                .saturating_sub(cached)
                .saturating_add(n(self.tool_use_prompt_token_count)),
            output: n(self.candidates_token_count).saturating_add(thoughts),
            cache_read: cached,
            reasoning: thoughts,
            ..TokenUsage::default()
        }
    }
}

#[derive(Debug, Deserialize)]
struct GeminiChunk {
    #[serde(rename = "usageMetadata", alias = "usage_metadata")]
    usage_metadata: Option<GeminiUsage>,
}

fn first_non_ws(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|c| !c.is_ascii_whitespace())
}

/// Usage of a complete (non-streaming) response body, or `None` when the body carries no
/// usage object (error bodies, unparseable JSON).
///
/// Gemini bodies may also be the JSON array of a non-SSE stream read to the end; the last
/// element carrying `usageMetadata` wins.
#[must_use]
pub fn from_response(dialect: Dialect, body: &[u8]) -> Option<TokenUsage> {
    match dialect {
        Dialect::AnthropicMessages => serde_json::from_slice::<AnthropicMessage>(body)
            .ok()?
            .usage
            .map(|u| u.to_usage()),
        Dialect::OpenaiChat => serde_json::from_slice::<ChatBody>(body)
            .ok()?
            .usage
            .map(|u| u.to_usage()),
        Dialect::OpenaiResponses => serde_json::from_slice::<ResponsesBody>(body)
            .ok()?
            .usage
            .map(|u| u.to_usage()),
        Dialect::Gemini => {
            if first_non_ws(body) == Some(b'[') {
                serde_json::from_slice::<Vec<GeminiChunk>>(body)
                    .ok()?
                    .into_iter()
                    .rev()
                    .find_map(|c| c.usage_metadata)
                    .map(|u| u.to_usage())
            } else {
                serde_json::from_slice::<GeminiChunk>(body)
                    .ok()?
                    .usage_metadata
                    .map(|u| u.to_usage())
            }
        }
    }
}

/// Accumulates usage over a streamed response; see the module docs.
///
/// Which events are read:
/// - Anthropic: `message_start.message.usage` (input side plus a placeholder output), then
///   every `message_delta.usage` (cumulative output; input-side fields when non-zero).
/// - OpenAI Chat: any chunk with a non-null `usage` (normally the final `choices: []` chunk,
///   present only with `stream_options.include_usage`).
/// - Responses: `response.completed`, `response.incomplete` and `response.failed` carrying
///   `response.usage`.
/// - Gemini: `usageMetadata` of every chunk (SSE `data` or JSON-array element); the last wins.
#[derive(Debug, Clone)]
pub struct StreamUsage {
    dialect: Dialect,
    usage: Option<TokenUsage>,
}

impl StreamUsage {
    /// An empty accumulator for a stream in `dialect`.
    #[must_use]
    pub const fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            usage: None,
        }
    }

    /// Observes one SSE event of the stream.
    pub fn observe_sse(&mut self, ev: &SseEvent) {
        self.observe_json(ev.data.as_bytes());
    }

    /// Observes one JSON payload: an SSE `data` field or a Gemini JSON-array element.
    pub fn observe_json(&mut self, element: &[u8]) {
        // Every usage-bearing payload spells out "usage" (or "usageMetadata"); skipping the
        // rest avoids parsing every text delta.
        if memchr::memmem::find(element, b"usage").is_none() {
            return;
        }
        match self.dialect {
            Dialect::AnthropicMessages => self.observe_anthropic(element),
            Dialect::OpenaiChat => {
                if let Ok(ChatBody { usage: Some(u) }) = serde_json::from_slice(element) {
                    self.usage = Some(u.to_usage());
                }
            }
            Dialect::OpenaiResponses => {
                if let Ok(ev) = serde_json::from_slice::<ResponsesEvent>(element)
                    && matches!(
                        ev.kind.as_deref(),
                        Some("response.completed" | "response.incomplete" | "response.failed")
                    )
                    && let Some(u) = ev.response.and_then(|r| r.usage)
                {
                    self.usage = Some(u.to_usage());
                }
            }
            Dialect::Gemini => {
                if let Ok(GeminiChunk {
                    usage_metadata: Some(u),
                }) = serde_json::from_slice(element)
                {
                    self.usage = Some(u.to_usage());
                }
            }
        }
    }

    fn observe_anthropic(&mut self, data: &[u8]) {
        let Ok(ev) = serde_json::from_slice::<AnthropicEvent>(data) else {
            return;
        };
        match ev.kind.as_deref() {
            Some("message_start") => {
                if let Some(u) = ev.message.and_then(|m| m.usage) {
                    self.usage = Some(u.to_usage());
                }
            }
            Some("message_delta") => {
                if let Some(u) = ev.usage {
                    let mut acc = self.usage.unwrap_or_default();
                    u.apply_delta(&mut acc);
                    self.usage = Some(acc);
                }
            }
            _ => {}
        }
    }

    /// The usage seen so far, or `None` if no usage-bearing event was observed.
    #[must_use]
    pub const fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }
}

/// True for OpenAI Chat's extra final chunk — `choices: []` with a non-null `usage` — which the
/// gateway strips when it injected `include_usage` on the client's behalf.
#[must_use]
pub fn is_usage_only_chunk(ev: &SseEvent) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        choices: Option<Vec<IgnoredAny>>,
        usage: Option<IgnoredAny>,
    }
    let data = ev.data.as_bytes();
    if memchr::memmem::find(data, b"usage").is_none() {
        return false;
    }
    matches!(
        serde_json::from_slice::<Chunk>(data),
        Ok(Chunk { choices: Some(c), usage: Some(_) }) if c.is_empty()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tu(input: u64, output: u64, c5: u64, c1: u64, read: u64, reasoning: u64) -> TokenUsage {
        TokenUsage {
            input,
            output,
            cache_creation_5m: c5,
            cache_creation_1h: c1,
            cache_read: read,
            reasoning,
        }
    }

    #[test]
    fn counts_are_lenient() {
        let cases = [
            ("1", 1),
            ("-5", 0),
            ("2.9", 2),
            ("null", 0),
            ("\"7\"", 7),
            ("{}", 0),
            ("[1]", 0),
            ("1e30", u64::MAX),
        ];
        for (json, want) in cases {
            assert_eq!(
                serde_json::from_str::<Count>(json).unwrap(),
                Count(want),
                "{json}"
            );
        }
    }

    #[test]
    fn anthropic_cache_write_split() {
        let cases: &[(&str, (u64, u64))] = &[
            (r#"{"cache_creation_input_tokens":188}"#, (188, 0)),
            (
                r#"{"cache_creation_input_tokens":188,"cache_creation":{"ephemeral_5m_input_tokens":88,"ephemeral_1h_input_tokens":100}}"#,
                (88, 100),
            ),
            (
                r#"{"cache_creation_input_tokens":200,"cache_creation":{"ephemeral_1h_input_tokens":150}}"#,
                (50, 150),
            ),
            (
                r#"{"cache_creation":{"ephemeral_5m_input_tokens":3,"ephemeral_1h_input_tokens":4}}"#,
                (3, 4),
            ),
            (
                r#"{"cache_creation_input_tokens":5,"cache_creation":null}"#,
                (5, 0),
            ),
            (r#"{}"#, (0, 0)),
        ];
        for (json, want) in cases {
            let u: AnthropicUsage = serde_json::from_str(json).unwrap();
            let got = u.to_usage();
            assert_eq!(
                (got.cache_creation_5m, got.cache_creation_1h),
                *want,
                "{json}"
            );
        }
    }

    #[test]
    fn usage_only_chunk_detection() {
        let cases = [
            (r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, true),
            (
                r#"{"choices":[{"index":0}],"usage":{"prompt_tokens":1}}"#,
                false,
            ),
            (r#"{"choices":[],"usage":null}"#, false),
            (r#"{"choices":[]}"#, false),
            (r#"{"usage":{}}"#, false),
            ("[DONE]", false),
        ];
        for (data, want) in cases {
            let ev = SseEvent {
                data: data.into(),
                ..SseEvent::default()
            };
            assert_eq!(is_usage_only_chunk(&ev), want, "{data}");
        }
    }

    #[test]
    fn message_delta_without_start_still_counts() {
        let mut s = StreamUsage::new(Dialect::AnthropicMessages);
        s.observe_json(br#"{"type":"message_delta","usage":{"output_tokens":9}}"#);
        assert_eq!(s.usage(), Some(tu(0, 9, 0, 0, 0, 0)));
    }
}
