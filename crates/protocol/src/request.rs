//! Request-body inspection and byte-exact rewriting.
//!
//! [`inspect`] reads the few top-level members routing needs in one `serde_json` pass that also
//! validates the document (it runs on every request, so it does nothing twice).
//!
//! The gateway forwards client bodies untouched except for the one value it has to change
//! (the model name, or OpenAI's `stream_options.include_usage`). Re-serialising would reorder
//! keys, reformat numbers and re-escape strings — invisible to most upstreams but a needless
//! risk (signatures over thinking blocks, cache keys computed over prompt bytes). So the
//! rewriting functions:
//!
//! 1. validates the whole document with `serde_json` (malformed JSON or a non-object top level
//!    is a [`RequestError`], which the caller turns into a 400; note that `serde_json` refuses
//!    nesting deeper than 128 levels), then
//! 2. locates byte spans with a small scanner and splices only the targeted value.
//!
//! Duplicate keys: the effective value is the *last* occurrence (what serde_json's map,
//! Python and JavaScript parsers do), so inspection reports the last one and rewrites target
//! the last one — except [`replace_model`], which rewrites every top-level `model` so that no
//! parser can see the old name.

use crate::json_scan::{self, Token, decode_str, key_is, last_member, members, skip_ws};

/// Why a body cannot be inspected or rewritten. Both mean "reply 400 to the client".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a JSON document.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but the top level is not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
}

/// What the gateway needs to know about a request before routing it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    /// Top-level `model` (absent for Gemini, whose model is in the URL).
    pub model: Option<String>,
    /// Top-level `stream` when it is a boolean.
    pub stream: Option<bool>,
    /// The output-token cap, from the first present of `max_completion_tokens` (OpenAI, newer),
    /// `max_output_tokens` (Responses), `max_tokens` (Anthropic, legacy OpenAI),
    /// `generationConfig.maxOutputTokens` (Gemini; snake_case spellings accepted too).
    /// Only non-negative integer literals count.
    pub max_tokens: Option<u64>,
    /// Codex's `prompt_cache_key` (its conversation id).
    pub prompt_cache_key: Option<String>,
    /// Some `cache_control` object anywhere in the body has `"ttl": "1h"` (Anthropic 1-hour
    /// cache writes are priced differently).
    pub has_cache_ttl_1h: bool,
    /// OpenAI Chat `stream_options.include_usage` when it is a boolean.
    pub stream_include_usage: Option<bool>,
}

/// Validates `body` and returns the index of its top-level `{`.
fn validate(body: &[u8]) -> Result<usize, RequestError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let open = skip_ws(body, 0);
    if body.get(open) == Some(&b'{') {
        Ok(open)
    } else {
        Err(RequestError::NotAnObject)
    }
}

/// Reads the routing-relevant fields of a request body in one `serde_json` pass, which also
/// validates the whole document: interesting top-level members are decoded (the last
/// occurrence wins), everything else is skipped without allocating.
///
/// # Errors
/// The body is not valid JSON, or not a JSON object.
pub fn inspect(body: &[u8]) -> Result<RequestInfo, RequestError> {
    let open = skip_ws(body, 0);
    if body.get(open) != Some(&b'{') {
        // Keep serde's message for garbage; a valid non-object gets its own error.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(RequestError::NotAnObject),
            Err(e) => Err(RequestError::InvalidJson(e.to_string())),
        };
    }
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let uint = |v: &Option<serde_json::Value>| v.as_ref().and_then(serde_json::Value::as_u64);
    let gemini = probe.generation_config.as_ref().and_then(|g| {
        ["maxOutputTokens", "max_output_tokens"]
            .iter()
            .rev()
            .find_map(|k| g.get(*k).and_then(serde_json::Value::as_u64))
    });
    Ok(RequestInfo {
        model: probe.model.and_then(|v| v.as_str().map(str::to_string)),
        stream: probe.stream.and_then(|v| v.as_bool()),
        max_tokens: uint(&probe.max_completion_tokens)
            .or(uint(&probe.max_output_tokens))
            .or(uint(&probe.max_tokens))
            .or(gemini),
        prompt_cache_key: probe
            .prompt_cache_key
            .and_then(|v| v.as_str().map(str::to_string)),
        has_cache_ttl_1h: has_cache_ttl_1h(body, open),
        stream_include_usage: probe
            .stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool),
    })
}

/// The top-level members `inspect` reads, kept as small JSON values.
#[derive(Default)]
struct Probe {
    model: Option<serde_json::Value>,
    stream: Option<serde_json::Value>,
    max_completion_tokens: Option<serde_json::Value>,
    max_output_tokens: Option<serde_json::Value>,
    max_tokens: Option<serde_json::Value>,
    prompt_cache_key: Option<serde_json::Value>,
    generation_config: Option<serde_json::Value>,
    stream_options: Option<serde_json::Value>,
}

impl<'de> serde::Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Probe;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Probe, A::Error> {
                let mut p = Probe::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let slot = match &*key {
                        "model" => &mut p.model,
                        "stream" => &mut p.stream,
                        "max_completion_tokens" => &mut p.max_completion_tokens,
                        "max_output_tokens" => &mut p.max_output_tokens,
                        "max_tokens" => &mut p.max_tokens,
                        "prompt_cache_key" => &mut p.prompt_cache_key,
                        "generationConfig" | "generation_config" => &mut p.generation_config,
                        "stream_options" => &mut p.stream_options,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(p)
            }
        }
        d.deserialize_map(V)
    }
}

fn has_cache_ttl_1h(body: &[u8], open: usize) -> bool {
    // Cheap pre-filter, exact: a `ttl` key is either spelled out or has one of its letters
    // escaped (`\u0074`, `\u006c`). Without either, no cache_control can carry a TTL, and the
    // token walk over a large prompt is spared — the common case (Claude Code marks its cache
    // breakpoints without one; non-ASCII escapes elsewhere in a prompt do not matter).
    let find = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    if !find(b"\"ttl\"") && !find(b"\\u0074") && !find(b"\\u006c") && !find(b"\\u006C") {
        return false;
    }
    /// Per open container: is it an object that is the value of a `cache_control` key, and
    /// what do we know about the key currently being read in it.
    struct Frame {
        cache_control_object: bool,
        key_is_cache_control: bool,
        key_is_ttl: bool,
    }
    let mut frames: Vec<Frame> = Vec::new();
    for token in json_scan::tokens(body, open) {
        match token {
            Token::Open { object } => {
                let parent_key_cc = frames.last().is_some_and(|f| f.key_is_cache_control);
                frames.push(Frame {
                    cache_control_object: object && parent_key_cc,
                    key_is_cache_control: false,
                    key_is_ttl: false,
                });
            }
            Token::Close => {
                frames.pop();
            }
            Token::Key(span) => {
                if let Some(f) = frames.last_mut() {
                    f.key_is_cache_control = key_is(body, span.clone(), "cache_control");
                    f.key_is_ttl = key_is(body, span, "ttl");
                }
            }
            Token::Scalar(span) => {
                if let Some(f) = frames.last_mut() {
                    if f.cache_control_object
                        && f.key_is_ttl
                        && decode_str(body, span).is_some_and(|v| v == "1h")
                    {
                        return true;
                    }
                    // A scalar value ends the member: the next key decides again.
                    f.key_is_cache_control = false;
                }
            }
        }
    }
    false
}

/// Replaces the value of every top-level `model` member with `new_model`, leaving every other
/// byte untouched. Nested `model` keys (e.g. inside tool schemas or metadata) are never
/// changed. A body without a top-level `model` (Gemini) is returned unchanged.
///
/// # Errors
/// The body is not valid JSON, or not a JSON object.
pub fn replace_model(body: &[u8], new_model: &str) -> Result<Vec<u8>, RequestError> {
    let open = validate(body)?;
    let mut encoded = Vec::with_capacity(new_model.len() + 2);
    json_scan::push_json_str(&mut encoded, new_model);
    let mut out = Vec::with_capacity(body.len() + encoded.len());
    let mut copied = 0;
    for m in members(body, open).filter(|m| key_is(body, m.key.clone(), "model")) {
        out.extend_from_slice(body.get(copied..m.value.start).unwrap_or_default());
        out.extend_from_slice(&encoded);
        copied = m.value.end;
    }
    out.extend_from_slice(body.get(copied..).unwrap_or_default());
    Ok(out)
}

/// Makes an OpenAI Chat streaming request ask for usage (`stream_options.include_usage: true`)
/// with the smallest possible edit.
///
/// Returns the body to forward and whether the *client* asked for usage itself. When it did
/// not (`false`), the gateway must strip the extra usage-only chunk (see
/// [`crate::usage::is_usage_only_chunk`]) from what the client sees. Edits, in order of
/// preference: nothing (already `true`); replace a non-`true` `include_usage` value; insert the
/// member into an existing `stream_options` object; replace a non-object `stream_options`
/// (e.g. `null`); insert a `stream_options` member right after the top-level `{`.
///
/// Only call this for `"stream": true` requests: OpenAI rejects `stream_options` otherwise.
///
/// # Errors
/// The body is not valid JSON, or not a JSON object.
pub fn ensure_include_usage(body: &[u8]) -> Result<(Vec<u8>, bool), RequestError> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true}"#;
    const OBJECT: &[u8] = br#"{"include_usage":true}"#;
    const FLAG: &[u8] = br#""include_usage":true"#;

    let open = validate(body)?;
    let Some(options) = last_member(body, open, "stream_options") else {
        return Ok((insert_first_member(body, open, MEMBER), false));
    };
    if body.get(options.value.start) != Some(&b'{') {
        return Ok((splice(body, options.value, OBJECT), false));
    }
    match last_member(body, options.value.start, "include_usage") {
        Some(flag) if body.get(flag.value.clone()) == Some(b"true") => Ok((body.to_vec(), true)),
        Some(flag) => Ok((splice(body, flag.value, b"true"), false)),
        None => Ok((insert_first_member(body, options.value.start, FLAG), false)),
    }
}

/// Inserts `member` right after the `{` at `open`, adding a comma when the object already has
/// members.
fn insert_first_member(body: &[u8], open: usize, member: &[u8]) -> Vec<u8> {
    let non_empty = members(body, open).next().is_some();
    let mut out = Vec::with_capacity(body.len() + member.len() + 1);
    out.extend_from_slice(body.get(..=open).unwrap_or_default());
    out.extend_from_slice(member);
    if non_empty {
        out.push(b',');
    }
    out.extend_from_slice(body.get(open + 1..).unwrap_or_default());
    out
}

/// Replaces `span` of `body` with `with`.
fn splice(body: &[u8], span: std::ops::Range<usize>, with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + with.len());
    out.extend_from_slice(body.get(..span.start).unwrap_or_default());
    out.extend_from_slice(with);
    out.extend_from_slice(body.get(span.end..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn rejects_malformed_and_non_objects() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":1,}",
            b"{} {}",
            b"\xEF\xBB\xBF{}",
            b"nul",
        ] {
            assert!(
                matches!(inspect(bad), Err(RequestError::InvalidJson(_))),
                "{bad:?}"
            );
            assert!(replace_model(bad, "m").is_err());
            assert!(ensure_include_usage(bad).is_err());
        }
        for non_object in [&b"[]"[..], b"\"model\"", b"null", b" 1 "] {
            assert_eq!(inspect(non_object), Err(RequestError::NotAnObject));
        }
    }

    #[test]
    fn inspect_reads_each_dialect() {
        let cases: &[(Value, RequestInfo)] = &[
            (
                json!({"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,
                       "system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":"1h"}}]}),
                RequestInfo {
                    model: Some("claude-sonnet-4-5".into()),
                    stream: Some(true),
                    max_tokens: Some(1024),
                    has_cache_ttl_1h: true,
                    ..RequestInfo::default()
                },
            ),
            (
                json!({"model":"gpt-4o","max_tokens":10,"max_completion_tokens":512,"stream":false,
                       "stream_options":{"include_usage":false}}),
                RequestInfo {
                    model: Some("gpt-4o".into()),
                    stream: Some(false),
                    max_tokens: Some(512),
                    stream_include_usage: Some(false),
                    ..RequestInfo::default()
                },
            ),
            (
                json!({"model":"gpt-5","max_output_tokens":2048,"prompt_cache_key":"019a-uuid","stream":"yes"}),
                RequestInfo {
                    model: Some("gpt-5".into()),
                    max_tokens: Some(2048),
                    prompt_cache_key: Some("019a-uuid".into()),
                    ..RequestInfo::default()
                },
            ),
            (
                json!({"contents":[],"generationConfig":{"temperature":1,"maxOutputTokens":64}}),
                RequestInfo {
                    max_tokens: Some(64),
                    ..RequestInfo::default()
                },
            ),
            (
                json!({"generation_config":{"max_output_tokens":65}}),
                RequestInfo {
                    max_tokens: Some(65),
                    ..RequestInfo::default()
                },
            ),
            (
                json!({"model":7,"max_tokens":-1,"metadata":{"model":"nested"},
                       "x":{"cache_control":{"ttl":"5m"}},"y":{"ttl":"1h"}}),
                RequestInfo::default(),
            ),
        ];
        for (body, want) in cases {
            let bytes = serde_json::to_vec(body).unwrap();
            assert_eq!(&inspect(&bytes).unwrap(), want, "{body}");
        }
    }

    #[test]
    fn inspect_handles_escapes_and_duplicates() {
        let body = br#"{"mo\u0064el":"a\"b\u00e9","model":"last","max_tokens":1.0,
            "m":[{"cache\u005fcontrol":{"t\u0074l":"1\u0068"}}]}"#;
        let info = inspect(body).unwrap();
        assert_eq!(info.model.as_deref(), Some("last"));
        assert_eq!(info.max_tokens, None);
        assert!(info.has_cache_ttl_1h);
    }

    #[test]
    fn replace_model_is_byte_exact() {
        let body =
            b"{ \"messages\" : [ {\"model\":\"keep\"} ],\n  \"model\" :\t\"old\" , \"n\": 1.50 }";
        let out = replace_model(body, "new \"q\" é").unwrap();
        assert_eq!(
            out,
            b"{ \"messages\" : [ {\"model\":\"keep\"} ],\n  \"model\" :\t\"new \\\"q\\\" \xC3\xA9\" , \"n\": 1.50 }"
        );
        // Absent: unchanged. Duplicates: all replaced. Non-string values: replaced too.
        assert_eq!(
            replace_model(b"{\"contents\":[]}", "x").unwrap(),
            b"{\"contents\":[]}"
        );
        assert_eq!(
            replace_model(br#"{"model":"a","model":null}"#, "x").unwrap(),
            br#"{"model":"x","model":"x"}"#
        );
    }

    #[test]
    fn ensure_include_usage_minimal_edits() {
        let cases: &[(&str, &str, bool)] = &[
            (
                r#"{"stream":true}"#,
                r#"{"stream_options":{"include_usage":true},"stream":true}"#,
                false,
            ),
            (
                r#"{}"#,
                r#"{"stream_options":{"include_usage":true}}"#,
                false,
            ),
            (
                r#"{"stream_options":{"include_usage":true},"a":1}"#,
                r#"{"stream_options":{"include_usage":true},"a":1}"#,
                true,
            ),
            (
                r#"{"stream_options":{"include_usage": false }}"#,
                r#"{"stream_options":{"include_usage": true }}"#,
                false,
            ),
            (
                r#"{"stream_options":{"include_obfuscation":false}}"#,
                r#"{"stream_options":{"include_usage":true,"include_obfuscation":false}}"#,
                false,
            ),
            (
                r#"{"stream_options": {} }"#,
                r#"{"stream_options": {"include_usage":true} }"#,
                false,
            ),
            (
                r#"{"stream_options":null}"#,
                r#"{"stream_options":{"include_usage":true}}"#,
                false,
            ),
            (
                r#"{"x":{"stream_options":{}}, "stream_options" : null }"#,
                r#"{"x":{"stream_options":{}}, "stream_options" : {"include_usage":true} }"#,
                false,
            ),
        ];
        for (input, want, asked) in cases {
            let (out, client_asked) = ensure_include_usage(input.as_bytes()).unwrap();
            assert_eq!(
                (std::str::from_utf8(&out).unwrap(), client_asked),
                (*want, *asked),
                "{input}"
            );
            assert_eq!(parse(&out)["stream_options"]["include_usage"], true);
        }
    }
}
