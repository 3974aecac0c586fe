//! Anthropic Messages (`POST /v1/messages`): requests, responses and the SSE stream.
//!
//! Wire facts this codec keeps (API reference and the official SDKs' stream accumulators):
//!
//! * `system` is a string or an array of `text` blocks; message `content` is a string or an
//!   array of blocks. `max_tokens` is required, and must exceed `thinking.budget_tokens`
//!   (≥ 1024). With thinking on, `temperature` may only be 1, `top_p` only 0.95–1, `top_k` is
//!   refused, and `tool_choice` may not force a tool.
//! * Roles alternate (consecutive turns are merged here), the first turn is the user's, text
//!   blocks may not be empty, `tool_result` blocks open the user turn that answers the
//!   previous assistant turn's `tool_use` blocks (one result per call, no strays), tool ids
//!   are `[A-Za-z0-9_-]+`, and thinking blocks sent back need their signature.
//! * `input_tokens` excludes cache reads and writes; canonical `input` includes them.
//! * Stream: `message_start` (with usage) → `ping` → per block `content_block_start` (tool
//!   blocks start with `input: {}`, thinking blocks with `signature: ""`) → `content_block_delta`s
//!   (`text_delta`, `thinking_delta`, `signature_delta`, `input_json_delta`) →
//!   `content_block_stop` → `message_delta` (stop reason, cumulative usage) → `message_stop`.
//!
//! What cannot cross is listed in `docs/conversion.md` ("Anthropic Messages").

use std::collections::{HashMap, HashSet};
use std::fmt::Display;

use aether_protocol::errors::ErrorKind;
use serde_json::{Map, Number, Value, json};

use crate::util::{fresh_id, json_string, parse_data_url, str_at};
use crate::{
    Block, BlockKind, ConvertError, Delta, Effort, Event, Frame, ImageSource, Message,
    OutputFormat, Reasoning, Request, RequestContext, Response, Role, StopReason, StreamDecoder,
    StreamEncoder, Tool, ToolChoice, Usage,
};

/// `max_tokens` when the source request set none (the API requires one).
const DEFAULT_MAX_TOKENS: u64 = 8_192;
/// The smallest thinking budget the API accepts.
const MIN_BUDGET: u64 = 1_024;
/// Room for the answer added on top of a thinking budget when `max_tokens` was not given.
const ANSWER_ROOM: u64 = 4_096;
/// The name a structured-output schema gets (Anthropic's `output_config.format` has none).
const SCHEMA_NAME: &str = "output";
/// The user turn put first when a conversation would otherwise start with the assistant or
/// be empty (the API requires a first user turn with non-empty text).
const PLACEHOLDER: &str = ".";
/// The result sent for a call the conversation never answered.
const MISSING_RESULT: &str = "No result was returned for this tool call.";

// ---------------------------------------------------------------------------------------------
// Requests: parsing
// ---------------------------------------------------------------------------------------------

fn bad(path: impl Display, what: &str) -> ConvertError {
    ConvertError::invalid(format!("{path}: {what}"))
}

/// `v[key]`, with JSON `null` read as absent.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// `path.key` (just `key` at the top level).
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn opt_str<'a>(v: &'a Value, key: &str, path: &str) -> Result<Option<&'a str>, ConvertError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(join(path, key), "must be a string")),
    }
}

fn req_str<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a str, ConvertError> {
    opt_str(v, key, path)?.ok_or_else(|| bad(join(path, key), "required string is missing"))
}

fn opt_u64(v: &Value, key: &str, path: &str) -> Result<Option<u64>, ConvertError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(join(path, key), "must be a non-negative integer")),
        Some(_) => Err(bad(join(path, key), "must be a non-negative integer")),
    }
}

fn opt_number(v: &Value, key: &str) -> Result<Option<Number>, ConvertError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.clone())),
        Some(_) => Err(bad(key, "must be a number")),
    }
}

fn opt_bool(v: &Value, key: &str, path: &str) -> Result<Option<bool>, ConvertError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(join(path, key), "must be a boolean")),
    }
}

/// Parses a client's Messages request.
pub(crate) fn parse_request(v: &Value, ctx: &RequestContext) -> Result<Request, ConvertError> {
    if !v.is_object() {
        return Err(bad("body", "must be a JSON object"));
    }
    let model = match opt_str(v, "model", "")? {
        Some(m) => m.to_owned(),
        None => ctx
            .model
            .clone()
            .ok_or_else(|| bad("model", "required string is missing"))?,
    };
    let (tool_choice, parallel_tool_calls) = parse_tool_choice(field(v, "tool_choice"))?;
    Ok(Request {
        model,
        system: parse_system(field(v, "system"))?,
        messages: parse_messages(field(v, "messages"))?,
        tools: parse_tools(field(v, "tools"))?,
        tool_choice,
        parallel_tool_calls,
        max_tokens: opt_u64(v, "max_tokens", "")?,
        temperature: opt_number(v, "temperature")?,
        top_p: opt_number(v, "top_p")?,
        top_k: opt_u64(v, "top_k", "")?,
        stop: parse_stop_sequences(field(v, "stop_sequences"))?,
        stream: opt_bool(v, "stream", "")?.unwrap_or(false) || ctx.stream,
        output: parse_output(v)?,
        reasoning: parse_thinking(v)?,
    })
}

fn parse_system(v: Option<&Value>) -> Result<Vec<String>, ConvertError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(if s.is_empty() {
            Vec::new()
        } else {
            vec![s.clone()]
        }),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let path = format!("system.{i}");
                if !p.is_object() {
                    return Err(bad(path, "must be a text block object"));
                }
                if str_at(p, "type") != Some("text") {
                    return Err(bad(format!("{path}.type"), "must be \"text\""));
                }
                let text = req_str(p, "text", &path)?;
                if !text.is_empty() {
                    out.push(text.to_owned());
                }
            }
            Ok(out)
        }
        Some(_) => Err(bad("system", "must be a string or an array of text blocks")),
    }
}

fn parse_messages(v: Option<&Value>) -> Result<Vec<Message>, ConvertError> {
    let items = match v {
        Some(Value::Array(items)) => items,
        None => return Err(bad("messages", "required array is missing")),
        Some(_) => return Err(bad("messages", "must be an array")),
    };
    // Tool-call id → tool name, so results can carry the name (Gemini needs it).
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let path = format!("messages.{i}");
        if !m.is_object() {
            return Err(bad(path, "must be an object"));
        }
        let role = match str_at(m, "role") {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(_) => {
                return Err(bad(
                    format!("{path}.role"),
                    "must be \"user\" or \"assistant\"",
                ));
            }
            None => return Err(bad(format!("{path}.role"), "required string is missing")),
        };
        let content = match field(m, "content") {
            Some(Value::String(s)) => vec![Block::Text { text: s.clone() }],
            Some(Value::Array(blocks)) => {
                let mut content = Vec::with_capacity(blocks.len());
                for (j, b) in blocks.iter().enumerate() {
                    if let Some(block) = parse_block(b, &format!("{path}.content.{j}"), &mut names)?
                    {
                        content.push(block);
                    }
                }
                content
            }
            _ => {
                return Err(bad(
                    format!("{path}.content"),
                    "must be a string or an array of content blocks",
                ));
            }
        };
        out.push(Message { role, content });
    }
    Ok(out)
}

fn block_type<'a>(b: &'a Value, path: &str) -> Result<&'a str, ConvertError> {
    if !b.is_object() {
        return Err(bad(path, "must be a content block object"));
    }
    str_at(b, "type").ok_or_else(|| bad(format!("{path}.type"), "required string is missing"))
}

/// One message content block; `None` for the kinds the canonical model cannot hold.
fn parse_block(
    b: &Value,
    path: &str,
    names: &mut HashMap<String, String>,
) -> Result<Option<Block>, ConvertError> {
    Ok(match block_type(b, path)? {
        "text" => Some(Block::Text {
            text: req_str(b, "text", path)?.to_owned(),
        }),
        "image" => parse_image(b, path)?.map(|source| Block::Image { source }),
        "tool_use" => {
            let id = req_str(b, "id", path)?.to_owned();
            let name = req_str(b, "name", path)?.to_owned();
            let input = match field(b, "input") {
                None => Value::Object(Map::new()),
                Some(Value::Object(m)) => Value::Object(m.clone()),
                Some(_) => return Err(bad(format!("{path}.input"), "must be an object")),
            };
            names.insert(id.clone(), name.clone());
            Some(Block::ToolUse { id, name, input })
        }
        "tool_result" => {
            let id = req_str(b, "tool_use_id", path)?.to_owned();
            let content = parse_result_content(field(b, "content"), path)?;
            let is_error = opt_bool(b, "is_error", path)?.unwrap_or(false);
            let name = names.get(&id).cloned().unwrap_or_default();
            Some(Block::ToolResult {
                id,
                name,
                content,
                is_error,
            })
        }
        "thinking" => Some(Block::Thinking {
            text: opt_str(b, "thinking", path)?.unwrap_or_default().to_owned(),
            signature: opt_str(b, "signature", path)?
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }),
        // redacted_thinking, document, search_result, server tool blocks, container uploads…
        _ => None,
    })
}

fn parse_result_content(v: Option<&Value>, path: &str) -> Result<Vec<Block>, ConvertError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Block::Text { text: s.clone() }]),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}.content.{i}");
                match block_type(item, &p)? {
                    "text" => out.push(Block::Text {
                        text: req_str(item, "text", &p)?.to_owned(),
                    }),
                    "image" => {
                        if let Some(source) = parse_image(item, &p)? {
                            out.push(Block::Image { source });
                        }
                    }
                    _ => {}
                }
            }
            Ok(out)
        }
        Some(_) => Err(bad(
            format!("{path}.content"),
            "must be a string or an array of blocks",
        )),
    }
}

fn parse_image(b: &Value, path: &str) -> Result<Option<ImageSource>, ConvertError> {
    let src_path = format!("{path}.source");
    let src = field(b, "source")
        .filter(|s| s.is_object())
        .ok_or_else(|| bad(&src_path, "must be an object"))?;
    Ok(match str_at(src, "type") {
        Some("base64") => Some(ImageSource::Base64 {
            media_type: req_str(src, "media_type", &src_path)?.to_owned(),
            data: req_str(src, "data", &src_path)?.to_owned(),
        }),
        Some("url") => Some(ImageSource::Url {
            url: req_str(src, "url", &src_path)?.to_owned(),
        }),
        // Files-API ids cannot be resolved anywhere else.
        _ => None,
    })
}

fn parse_tools(v: Option<&Value>) -> Result<Vec<Tool>, ConvertError> {
    let items = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("tools", "must be an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, t) in items.iter().enumerate() {
        let path = format!("tools.{i}");
        if !t.is_object() {
            return Err(bad(path, "must be an object"));
        }
        // Server and Anthropic-defined tools (web_search_*, bash_*, text_editor_*, …) carry a
        // versioned `type` and run at Anthropic; only custom tools can cross.
        if opt_str(t, "type", &path)?.is_some_and(|ty| ty != "custom") {
            continue;
        }
        let name = req_str(t, "name", &path)?.to_owned();
        let parameters = match field(t, "input_schema") {
            Some(s @ Value::Object(_)) => s.clone(),
            Some(_) => return Err(bad(format!("{path}.input_schema"), "must be an object")),
            None => {
                return Err(bad(
                    format!("{path}.input_schema"),
                    "required object is missing",
                ));
            }
        };
        out.push(Tool {
            name,
            description: opt_str(t, "description", &path)?.map(str::to_owned),
            parameters,
        });
    }
    Ok(out)
}

fn parse_tool_choice(
    v: Option<&Value>,
) -> Result<(Option<ToolChoice>, Option<bool>), ConvertError> {
    let Some(tc) = v else {
        return Ok((None, None));
    };
    if !tc.is_object() {
        return Err(bad("tool_choice", "must be an object"));
    }
    let choice = match str_at(tc, "type") {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => ToolChoice::Tool(req_str(tc, "name", "tool_choice")?.to_owned()),
        _ => return Err(bad("tool_choice.type", "must be auto, any, tool or none")),
    };
    let parallel = opt_bool(tc, "disable_parallel_tool_use", "tool_choice")?.map(|d| !d);
    Ok((Some(choice), parallel))
}

fn parse_stop_sequences(v: Option<&Value>) -> Result<Vec<String>, ConvertError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("stop_sequences.{i}"), "must be a string"))
            })
            .collect(),
        Some(_) => Err(bad("stop_sequences", "must be an array of strings")),
    }
}

/// `output_config.format` (or the older beta `output_format`).
fn parse_output(v: &Value) -> Result<Option<OutputFormat>, ConvertError> {
    let (format, path) = match field(v, "output_config").and_then(|c| field(c, "format")) {
        Some(f) => (f, "output_config.format"),
        None => match field(v, "output_format") {
            Some(f) => (f, "output_format"),
            None => return Ok(None),
        },
    };
    if str_at(format, "type") != Some("json_schema") {
        return Ok(None);
    }
    let schema = field(format, "schema")
        .filter(|s| s.is_object())
        .ok_or_else(|| bad(format!("{path}.schema"), "must be an object"))?;
    Ok(Some(OutputFormat::JsonSchema {
        name: SCHEMA_NAME.to_owned(),
        schema: schema.clone(),
        strict: true,
    }))
}

fn parse_thinking(v: &Value) -> Result<Option<Reasoning>, ConvertError> {
    let Some(t) = field(v, "thinking") else {
        return Ok(None);
    };
    if !t.is_object() {
        return Err(bad("thinking", "must be an object"));
    }
    let effort = field(v, "output_config")
        .and_then(|c| str_at(c, "effort"))
        .and_then(|e| {
            if e == "max" {
                Some(Effort::High)
            } else {
                Effort::parse(e)
            }
        });
    match str_at(t, "type") {
        Some("enabled") => Ok(Some(Reasoning {
            budget_tokens: opt_u64(t, "budget_tokens", "thinking")?,
            effort,
        })),
        Some("adaptive" | "between_tools") => Ok(Some(Reasoning {
            budget_tokens: None,
            effort,
        })),
        Some("disabled") => Ok(None),
        _ => Err(bad(
            "thinking.type",
            "must be enabled, adaptive or disabled",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: rendering
// ---------------------------------------------------------------------------------------------

/// A tool-call id the API accepts (`^[a-zA-Z0-9_-]+$`): other characters become `_`.
fn tool_id(id: &str) -> String {
    if id.is_empty() {
        return "toolu_".to_owned();
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn image_json(source: &ImageSource) -> Value {
    let src = match source {
        ImageSource::Base64 { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        ImageSource::Url { url } => match parse_data_url(url) {
            Some((media_type, data)) => {
                json!({"type": "base64", "media_type": media_type, "data": data})
            }
            None => json!({"type": "url", "url": url}),
        },
    };
    json!({"type": "image", "source": src})
}

/// A text block, or nothing for text the API refuses (empty or whitespace only).
fn text_json(text: &str) -> Option<Value> {
    (!text.trim().is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn result_json(id: &str, content: &[Block], is_error: bool) -> Value {
    let parts: Vec<Value> = content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => text_json(text),
            Block::Image { source } => Some(image_json(source)),
            _ => None,
        })
        .collect();
    let mut r = Map::new();
    r.insert("type".into(), "tool_result".into());
    r.insert("tool_use_id".into(), tool_id(id).into());
    if !parts.is_empty() {
        r.insert("content".into(), Value::Array(parts));
    }
    if is_error {
        r.insert("is_error".into(), true.into());
    }
    Value::Object(r)
}

/// The blocks of one canonical message the API takes in that role.
fn render_blocks(m: &Message) -> Vec<Value> {
    let user = m.role == Role::User;
    m.content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => text_json(text),
            Block::Image { source } => Some(image_json(source)),
            Block::ToolUse { id, name, input } if !user => Some(json!({
                "type": "tool_use",
                "id": tool_id(id),
                "name": name,
                "input": if input.is_object() { input.clone() } else { json!({}) },
            })),
            Block::ToolResult {
                id,
                content,
                is_error,
                ..
            } if user => Some(result_json(id, content, *is_error)),
            // Unsigned thinking (from another dialect) would be refused.
            Block::Thinking {
                text,
                signature: Some(sig),
            } if !user && !sig.is_empty() => Some(json!({
                "type": "thinking",
                "thinking": text,
                "signature": sig,
            })),
            _ => None,
        })
        .collect()
}

fn is_type(b: &Value, ty: &str) -> bool {
    str_at(b, "type") == Some(ty)
}

/// The ids of the `tool_use` blocks in `blocks`, in order.
fn call_ids(blocks: &[Value]) -> Vec<String> {
    blocks
        .iter()
        .filter(|b| is_type(b, "tool_use"))
        .filter_map(|b| str_at(b, "id").map(str::to_owned))
        .collect()
}

/// A stray `tool_result` (its call is not in the previous turn) as the text it carried.
fn stray_result_as_content(b: Value) -> Vec<Value> {
    let id = str_at(&b, "tool_use_id").unwrap_or_default().to_owned();
    let mut out = vec![json!({"type": "text", "text": format!("[result of tool call {id}]")})];
    if let Some(Value::Array(parts)) = b.get("content") {
        out.extend(parts.iter().cloned());
    }
    out
}

/// The conversation as the API accepts it: roles alternate starting with the user, no empty
/// turns or text, each assistant turn's calls answered first thing in the next user turn.
fn render_messages(messages: &[Message]) -> Vec<(Role, Vec<Value>)> {
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    for m in messages {
        let blocks = render_blocks(m);
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((role, content)) if *role == m.role => content.extend(blocks),
            _ => turns.push((m.role, blocks)),
        }
    }
    if turns
        .first()
        .is_none_or(|(role, _)| *role == Role::Assistant)
    {
        turns.insert(
            0,
            (
                Role::User,
                vec![json!({"type": "text", "text": PLACEHOLDER})],
            ),
        );
    }
    // Pair calls and results (turns alternate now, so an assistant turn's answer is the next
    // turn; calls in a final assistant turn have none yet).
    let mut prev_calls: Vec<String> = Vec::new();
    for (role, content) in &mut turns {
        if *role == Role::Assistant {
            prev_calls = call_ids(content);
            continue;
        }
        let old = std::mem::take(content);
        let mut answered: HashSet<String> = HashSet::new();
        let mut results = Vec::new();
        let mut rest = Vec::new();
        for b in old {
            if is_type(&b, "tool_result") {
                let id = str_at(&b, "tool_use_id").unwrap_or_default().to_owned();
                if prev_calls.contains(&id) && answered.insert(id) {
                    results.push(b);
                } else {
                    rest.extend(stray_result_as_content(b));
                }
            } else {
                rest.push(b);
            }
        }
        // Calls nobody answered get an error result.
        let mut ordered = results;
        for id in prev_calls.iter().filter(|id| !answered.contains(*id)) {
            ordered.push(json!({
                "type": "tool_result",
                "tool_use_id": id,
                "content": [{"type": "text", "text": MISSING_RESULT}],
                "is_error": true,
            }));
        }
        ordered.extend(rest);
        *content = ordered;
        prev_calls.clear();
    }
    // A final assistant turn (prefill) may not end with whitespace.
    if let Some((Role::Assistant, content)) = turns.last_mut()
        && let Some(Value::Object(last)) = content.last_mut()
        && last.get("type").and_then(Value::as_str) == Some("text")
        && let Some(Value::String(text)) = last.get_mut("text")
    {
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
    }
    turns
}

/// The JSON Schema subset structured outputs accept: every object closed
/// (`additionalProperties: false`), `oneOf` read as `anyOf`, and unsupported keywords moved
/// into the description so the model still sees them.
fn output_schema(schema: &Value) -> Value {
    const STRING_FORMATS: [&str; 10] = [
        "date-time",
        "time",
        "date",
        "duration",
        "email",
        "hostname",
        "uri",
        "ipv4",
        "ipv6",
        "uuid",
    ];
    let Value::Object(m) = schema else {
        return schema.clone();
    };
    let types_include = |want: &str| match m.get("type") {
        Some(Value::String(t)) => t == want,
        Some(Value::Array(ts)) => ts.iter().any(|t| t.as_str() == Some(want)),
        _ => false,
    };
    let is_object =
        types_include("object") || (m.get("type").is_none() && m.contains_key("properties"));
    let mut out = Map::new();
    let mut extra: Vec<String> = Vec::new();
    for (k, v) in m {
        match (k.as_str(), v) {
            ("properties" | "$defs" | "definitions", Value::Object(props)) => {
                let mapped = props
                    .iter()
                    .map(|(name, s)| (name.clone(), output_schema(s)))
                    .collect();
                out.insert(k.clone(), Value::Object(mapped));
            }
            ("anyOf" | "oneOf" | "allOf", Value::Array(items)) => {
                let key = if k == "allOf" { "allOf" } else { "anyOf" };
                out.insert(
                    key.into(),
                    Value::Array(items.iter().map(output_schema).collect()),
                );
            }
            ("items", _) => {
                out.insert(k.clone(), output_schema(v));
            }
            ("type" | "enum" | "const" | "required" | "description" | "title" | "$ref", _) => {
                out.insert(k.clone(), v.clone());
            }
            ("format", Value::String(f)) if STRING_FORMATS.contains(&f.as_str()) => {
                out.insert(k.clone(), v.clone());
            }
            ("minItems", Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 1) => {
                out.insert(k.clone(), v.clone());
            }
            ("additionalProperties" | "$schema", _) => {}
            _ => extra.push(format!("{k}: {}", json_string(v))),
        }
    }
    if is_object {
        out.insert("additionalProperties".into(), false.into());
        out.entry("properties").or_insert_with(|| json!({}));
    }
    if !extra.is_empty() {
        let note = format!("{{{}}}", extra.join(", "));
        let description = match out.get("description").and_then(Value::as_str) {
            Some(d) => format!("{d}\n\n{note}"),
            None => note,
        };
        out.insert("description".into(), description.into());
    }
    Value::Object(out)
}

fn tool_schema(parameters: &Value) -> Value {
    match parameters {
        Value::Object(m) => {
            let mut m = m.clone();
            m.entry("type").or_insert_with(|| "object".into());
            Value::Object(m)
        }
        _ => json!({"type": "object", "properties": {}}),
    }
}

fn as_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(0.0)
}

/// Renders a canonical request as a Messages request body.
pub(crate) fn render_request(r: &Request) -> Value {
    let turns = render_messages(&r.messages);
    let mut tools: Vec<Value> = r
        .tools
        .iter()
        .map(|t| {
            let mut o = Map::new();
            o.insert("name".into(), t.name.clone().into());
            if let Some(d) = t.description.as_deref().filter(|d| !d.is_empty()) {
                o.insert("description".into(), d.into());
            }
            o.insert("input_schema".into(), tool_schema(&t.parameters));
            Value::Object(o)
        })
        .collect();
    let mut tool_choice = r.tool_choice.clone();
    let mut parallel = r.parallel_tool_calls;
    if tools.is_empty() {
        // A history with tool calls needs the tools defined; declare the called names and
        // forbid new calls.
        let mut seen: Vec<&str> = Vec::new();
        for (_, content) in &turns {
            for b in content.iter().filter(|b| is_type(b, "tool_use")) {
                if let Some(name) = str_at(b, "name")
                    && !seen.contains(&name)
                {
                    seen.push(name);
                }
            }
        }
        tools = seen
            .iter()
            .map(|name| json!({"name": name, "input_schema": {"type": "object", "properties": {}}}))
            .collect();
        tool_choice = (!tools.is_empty()).then_some(ToolChoice::None);
        parallel = None;
    }

    // Thinking, within what the API allows.
    let forced = matches!(
        tool_choice,
        Some(ToolChoice::Required | ToolChoice::Tool(_))
    );
    let last_assistant_unthought = turns
        .iter()
        .rev()
        .find(|(role, _)| *role == Role::Assistant)
        .is_some_and(|(_, content)| {
            content.iter().any(|b| is_type(b, "tool_use"))
                && !content.first().is_some_and(|b| is_type(b, "thinking"))
        });
    // Reasoning with neither a budget nor an effort (adaptive thinking) gets a medium budget.
    let mut budget = r
        .reasoning
        .map(|x| x.budget().unwrap_or(Effort::Medium.budget_tokens()))
        .filter(|b| *b > 0)
        .map(|b| b.max(MIN_BUDGET));
    if forced || last_assistant_unthought {
        budget = None;
    }
    let mut max_tokens = r.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(b) = budget
        && max_tokens <= b
    {
        if r.max_tokens.is_some() {
            // The client's cap stands; thinking gets half of it.
            let half = max_tokens / 2;
            budget = (half >= MIN_BUDGET).then_some(half);
        } else {
            max_tokens = b.saturating_add(ANSWER_ROOM);
        }
    }

    let mut body = Map::new();
    body.insert("model".into(), r.model.clone().into());
    body.insert("max_tokens".into(), max_tokens.into());
    let system: Vec<Value> = r.system.iter().filter_map(|s| text_json(s)).collect();
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| {
            let role = if role == Role::User {
                "user"
            } else {
                "assistant"
            };
            json!({"role": role, "content": content})
        })
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
        let choice = match (&tool_choice, parallel) {
            (Some(ToolChoice::Auto), _) | (None, Some(false)) => Some(json!({"type": "auto"})),
            (Some(ToolChoice::Required), _) => Some(json!({"type": "any"})),
            (Some(ToolChoice::None), _) => Some(json!({"type": "none"})),
            (Some(ToolChoice::Tool(name)), _) => Some(json!({"type": "tool", "name": name})),
            (None, _) => None,
        };
        if let Some(mut choice) = choice {
            if let (Some(p), Some(o)) = (parallel, choice.as_object_mut())
                && !matches!(tool_choice, Some(ToolChoice::None))
            {
                o.insert("disable_parallel_tool_use".into(), (!p).into());
            }
            body.insert("tool_choice".into(), choice);
        }
    }
    let thinking = budget.is_some();
    if let Some(t) = &r.temperature {
        let f = as_f64(t);
        if !thinking || f == 1.0 {
            // Anthropic's range is 0–1 (OpenAI's goes to 2).
            let v = if f > 1.0 {
                Number::from(1u64)
            } else {
                t.clone()
            };
            body.insert("temperature".into(), Value::Number(v));
        }
    }
    if let Some(p) = &r.top_p
        && (!thinking || (0.95..=1.0).contains(&as_f64(p)))
    {
        body.insert("top_p".into(), Value::Number(p.clone()));
    }
    if let Some(k) = r.top_k
        && !thinking
    {
        body.insert("top_k".into(), k.into());
    }
    let stops: Vec<&String> = r.stop.iter().filter(|s| !s.trim().is_empty()).collect();
    if !stops.is_empty() {
        body.insert("stop_sequences".into(), json!(stops));
    }
    if let Some(b) = budget {
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": b}),
        );
    }
    if let Some(OutputFormat::JsonSchema { schema, .. }) = &r.output {
        body.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": output_schema(schema)}}),
        );
    }
    if r.stream {
        body.insert("stream".into(), true.into());
    }
    Value::Object(body)
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// Anthropic's own usage counts, as they arrive (cumulative; absent fields keep their value).
#[derive(Debug, Clone, Copy, Default)]
struct RawUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    thinking: u64,
}

impl RawUsage {
    fn update(&mut self, u: &Value) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(n) = get("input_tokens") {
            self.input = n;
        }
        if let Some(n) = get("output_tokens") {
            self.output = n;
        }
        if let Some(n) = get("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = get("cache_creation_input_tokens") {
            self.cache_write = n;
        }
        if let Some(n) = u
            .pointer("/output_tokens_details/thinking_tokens")
            .and_then(Value::as_u64)
        {
            self.thinking = n;
        }
    }

    const fn canonical(self) -> Usage {
        Usage {
            input: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_write),
            output: self.output,
            cache_read: self.cache_read,
            cache_write: self.cache_write,
            reasoning: self.thinking,
        }
    }
}

fn usage_json(u: &Usage) -> Value {
    let mut o = Map::new();
    o.insert("input_tokens".into(), u.uncached_input().into());
    o.insert("cache_creation_input_tokens".into(), u.cache_write.into());
    o.insert("cache_read_input_tokens".into(), u.cache_read.into());
    o.insert("output_tokens".into(), u.output.into());
    if u.reasoning > 0 {
        o.insert(
            "output_tokens_details".into(),
            json!({"thinking_tokens": u.reasoning}),
        );
    }
    Value::Object(o)
}

fn parse_stop(reason: Option<&str>, sequence: Option<&str>) -> StopReason {
    match reason {
        Some("max_tokens" | "model_context_window_exceeded") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence(sequence.map(str::to_owned)),
        Some("tool_use") => StopReason::ToolUse,
        Some("refusal") => StopReason::ContentFilter,
        // end_turn, pause_turn and anything newer.
        _ => StopReason::EndTurn,
    }
}

/// `stop_reason` and `stop_sequence`; an end of turn after tool calls is a `tool_use` stop.
fn stop_json(stop: &StopReason, called: bool) -> (Value, Value) {
    let reason = match stop {
        StopReason::EndTurn if called => "tool_use",
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence(Some(s)) => return ("stop_sequence".into(), s.clone().into()),
        StopReason::StopSequence(None) => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
    };
    (reason.into(), Value::Null)
}

/// Parses an upstream's non-streamed Messages body.
pub(crate) fn parse_response(v: &Value) -> Result<Response, ConvertError> {
    if !v.is_object() {
        return Err(bad("body", "must be a JSON object"));
    }
    let Some(Value::Array(blocks)) = field(v, "content") else {
        return Err(bad("content", "required array is missing"));
    };
    let mut content = Vec::with_capacity(blocks.len());
    for (i, b) in blocks.iter().enumerate() {
        let path = format!("content.{i}");
        match block_type(b, &path)? {
            "text" => content.push(Block::Text {
                text: req_str(b, "text", &path)?.to_owned(),
            }),
            "thinking" => content.push(Block::Thinking {
                text: opt_str(b, "thinking", &path)?
                    .unwrap_or_default()
                    .to_owned(),
                signature: opt_str(b, "signature", &path)?
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            }),
            "tool_use" => content.push(Block::ToolUse {
                id: req_str(b, "id", &path)?.to_owned(),
                name: req_str(b, "name", &path)?.to_owned(),
                input: match field(b, "input") {
                    Some(i @ Value::Object(_)) => i.clone(),
                    _ => json!({}),
                },
            }),
            _ => {}
        }
    }
    let mut usage = RawUsage::default();
    if let Some(u) = field(v, "usage") {
        usage.update(u);
    }
    Ok(Response {
        id: str_at(v, "id").unwrap_or_default().to_owned(),
        model: str_at(v, "model").unwrap_or_default().to_owned(),
        content,
        stop: parse_stop(str_at(v, "stop_reason"), str_at(v, "stop_sequence")),
        usage: usage.canonical(),
    })
}

/// Renders a canonical response as a Messages body.
pub(crate) fn render_response(r: &Response) -> Value {
    let content: Vec<Value> = r
        .content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => Some(json!({"type": "text", "text": text})),
            Block::Thinking { text, signature } => Some(json!({
                "type": "thinking",
                "thinking": text,
                "signature": signature.clone().unwrap_or_default(),
            })),
            Block::ToolUse { id, name, input } => Some(json!({
                "type": "tool_use",
                "id": if id.is_empty() { fresh_id("toolu_") } else { id.clone() },
                "name": name,
                "input": if input.is_object() { input.clone() } else { json!({}) },
            })),
            Block::Image { .. } | Block::ToolResult { .. } => None,
        })
        .collect();
    let called = r.content.iter().any(|b| matches!(b, Block::ToolUse { .. }));
    let (stop_reason, stop_sequence) = stop_json(&r.stop, called);
    json!({
        "id": if r.id.is_empty() { fresh_id("msg_") } else { r.id.clone() },
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_json(&r.usage),
    })
}

// ---------------------------------------------------------------------------------------------
// Streams: decoding
// ---------------------------------------------------------------------------------------------

/// The error class of an Anthropic `error.type`.
fn error_kind(ty: &str) -> ErrorKind {
    match ty {
        "invalid_request_error" | "billing_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" => ErrorKind::PermissionDenied,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::RequestTooLarge,
        "rate_limit_error" => ErrorKind::RateLimited,
        "overloaded_error" => ErrorKind::Overloaded,
        "timeout_error" => ErrorKind::Timeout,
        _ => ErrorKind::UpstreamError,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    Tool,
}

/// The block the upstream has open.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// The upstream's `index`.
    upstream: Option<u64>,
    /// The canonical index (`None`: a block the canonical model cannot hold, skipped).
    index: Option<usize>,
    kind: Option<Kind>,
}

/// Messages SSE events → canonical events.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    started: bool,
    /// `message_stop` or `error` seen: nothing more is read.
    done: bool,
    finished: bool,
    open: Option<Open>,
    next: usize,
    usage: RawUsage,
}

impl Decoder {
    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<Event>) {
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: id
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| fresh_id("msg_"), str::to_owned),
                model: model.unwrap_or_default().to_owned(),
            });
        }
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some(Open {
            index: Some(index), ..
        }) = self.open.take()
        {
            out.push(Event::BlockStop { index });
        }
    }

    fn block_start(&mut self, v: &Value, out: &mut Vec<Event>) {
        self.start(None, None, out);
        self.close(out);
        if self.finished {
            return;
        }
        let upstream = v.get("index").and_then(Value::as_u64);
        let Some(cb) = v.get("content_block") else {
            return;
        };
        let (kind, canonical) = match str_at(cb, "type") {
            Some("text") => (Kind::Text, BlockKind::Text),
            Some("thinking") => (Kind::Thinking, BlockKind::Thinking),
            Some("tool_use") => (
                Kind::Tool,
                BlockKind::ToolUse {
                    id: str_at(cb, "id").unwrap_or_default().to_owned(),
                    name: str_at(cb, "name").unwrap_or_default().to_owned(),
                },
            ),
            // redacted_thinking, server_tool_use, *_tool_result, container_upload: skipped,
            // but their deltas and stop must not reach another block.
            _ => {
                self.open = Some(Open {
                    upstream,
                    index: None,
                    kind: None,
                });
                return;
            }
        };
        let index = self.next;
        self.next += 1;
        self.open = Some(Open {
            upstream,
            index: Some(index),
            kind: Some(kind),
        });
        out.push(Event::BlockStart {
            index,
            kind: canonical,
        });
        // The API starts blocks empty; a proxy may not.
        let mut initial = Vec::new();
        match kind {
            Kind::Text => initial.push(Delta::Text(
                str_at(cb, "text").unwrap_or_default().to_owned(),
            )),
            Kind::Thinking => {
                initial.push(Delta::Thinking(
                    str_at(cb, "thinking").unwrap_or_default().to_owned(),
                ));
                initial.push(Delta::Signature(
                    str_at(cb, "signature").unwrap_or_default().to_owned(),
                ));
            }
            Kind::Tool => {
                if let Some(input) = cb.get("input").and_then(Value::as_object)
                    && !input.is_empty()
                {
                    initial.push(Delta::ToolArgs(json_string(&Value::Object(input.clone()))));
                }
            }
        }
        out.extend(
            initial
                .into_iter()
                .filter(|d| !delta_is_empty(d))
                .map(|delta| Event::Delta { index, delta }),
        );
    }

    fn block_delta(&mut self, v: &Value, out: &mut Vec<Event>) {
        let upstream = v.get("index").and_then(Value::as_u64);
        let Some(Open {
            upstream: open_upstream,
            index: Some(index),
            kind: Some(kind),
        }) = self.open
        else {
            return;
        };
        if open_upstream != upstream {
            return;
        }
        let Some(d) = v.get("delta") else {
            return;
        };
        let text = |k: &str| str_at(d, k).unwrap_or_default().to_owned();
        let delta = match (str_at(d, "type"), kind) {
            (Some("text_delta"), Kind::Text) => Delta::Text(text("text")),
            (Some("thinking_delta"), Kind::Thinking) => Delta::Thinking(text("thinking")),
            (Some("signature_delta"), Kind::Thinking) => Delta::Signature(text("signature")),
            (Some("input_json_delta"), Kind::Tool) => Delta::ToolArgs(text("partial_json")),
            // citations_delta and mismatched kinds.
            _ => return,
        };
        if !delta_is_empty(&delta) {
            out.push(Event::Delta { index, delta });
        }
    }

    fn block_stop(&mut self, v: &Value, out: &mut Vec<Event>) {
        let upstream = v.get("index").and_then(Value::as_u64);
        if self.open.is_some_and(|o| o.upstream == upstream) {
            self.close(out);
        }
    }

    fn message_delta(&mut self, v: &Value, out: &mut Vec<Event>) {
        self.start(None, None, out);
        self.close(out);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage.update(u);
            out.push(Event::Usage(self.usage.canonical()));
        }
        let d = v.get("delta");
        if let Some(reason) = d.and_then(|d| str_at(d, "stop_reason"))
            && !self.finished
        {
            self.finished = true;
            let sequence = d.and_then(|d| str_at(d, "stop_sequence"));
            out.push(Event::Finish {
                stop: parse_stop(Some(reason), sequence),
            });
        }
    }
}

fn delta_is_empty(d: &Delta) -> bool {
    match d {
        Delta::Text(s) | Delta::Thinking(s) | Delta::Signature(s) | Delta::ToolArgs(s) => {
            s.is_empty()
        }
    }
}

impl StreamDecoder for Decoder {
    fn event(&mut self, name: Option<&str>, data: &str, out: &mut Vec<Event>) {
        if self.done {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let Some(ty) = str_at(&v, "type").or(name) else {
            return;
        };
        match ty {
            "message_start" => {
                let m = v.get("message");
                self.start(
                    m.and_then(|m| str_at(m, "id")),
                    m.and_then(|m| str_at(m, "model")),
                    out,
                );
                if let Some(u) = m.and_then(|m| m.get("usage")).filter(|u| u.is_object()) {
                    self.usage.update(u);
                    out.push(Event::Usage(self.usage.canonical()));
                }
            }
            "content_block_start" => self.block_start(&v, out),
            "content_block_delta" => self.block_delta(&v, out),
            "content_block_stop" => self.block_stop(&v, out),
            "message_delta" => self.message_delta(&v, out),
            "message_stop" => {
                self.start(None, None, out);
                self.close(out);
                self.done = true;
            }
            "error" => {
                self.start(None, None, out);
                let e = v.get("error");
                let kind = e
                    .and_then(|e| str_at(e, "type"))
                    .map_or(ErrorKind::UpstreamError, error_kind);
                let message = e
                    .and_then(|e| str_at(e, "message"))
                    .unwrap_or("upstream stream error")
                    .to_owned();
                out.push(Event::Error { kind, message });
                self.done = true;
            }
            // ping and anything newer.
            _ => {}
        }
    }

    fn end(&mut self, _out: &mut Vec<Event>) {
        // A cut-off stream implies neither a closed block nor a stop reason.
        self.done = true;
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: encoding
// ---------------------------------------------------------------------------------------------

/// A block open in the client stream.
#[derive(Debug, Clone, Copy)]
struct EncOpen {
    /// The canonical index it was opened for.
    canonical: usize,
    /// Its index in the client stream.
    index: usize,
    kind: Kind,
}

/// Canonical events → Messages SSE frames.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    id: Option<String>,
    model: String,
    /// `message_start` written.
    started: bool,
    done: bool,
    open: Option<EncOpen>,
    next: usize,
    usage: Usage,
    stop: Option<StopReason>,
    called: bool,
}

fn frame(event: &'static str, data: &Value) -> Frame {
    Frame::named(event, json_string(data))
}

impl Encoder {
    /// Writes `message_start` (and the `ping` the API sends after it) once.
    fn begin(&mut self, out: &mut Vec<Frame>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = self
            .id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| fresh_id("msg_"));
        out.push(frame(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": usage_json(&self.usage),
                }
            }),
        ));
        out.push(frame("ping", &json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<Frame>) {
        if let Some(o) = self.open.take() {
            out.push(frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": o.index}),
            ));
        }
    }

    fn open(&mut self, canonical: usize, kind: &BlockKind, out: &mut Vec<Frame>) {
        self.begin(out);
        self.close(out);
        let index = self.next;
        self.next += 1;
        let (k, block) = match kind {
            BlockKind::Text => (Kind::Text, json!({"type": "text", "text": ""})),
            BlockKind::Thinking => (
                Kind::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ),
            BlockKind::ToolUse { id, name } => {
                self.called = true;
                let id = if id.is_empty() {
                    fresh_id("toolu_")
                } else {
                    id.clone()
                };
                (
                    Kind::Tool,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                )
            }
        };
        self.open = Some(EncOpen {
            canonical,
            index,
            kind: k,
        });
        out.push(frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
    }

    fn delta(&mut self, canonical: usize, delta: &Delta, out: &mut Vec<Frame>) {
        if delta_is_empty(delta) {
            return;
        }
        let (kind, body) = match delta {
            Delta::Text(t) => (Kind::Text, json!({"type": "text_delta", "text": t})),
            Delta::Thinking(t) => (
                Kind::Thinking,
                json!({"type": "thinking_delta", "thinking": t}),
            ),
            Delta::Signature(s) => (
                Kind::Thinking,
                json!({"type": "signature_delta", "signature": s}),
            ),
            Delta::ToolArgs(a) => (
                Kind::Tool,
                json!({"type": "input_json_delta", "partial_json": a}),
            ),
        };
        let fits = self
            .open
            .is_some_and(|o| o.canonical == canonical && o.kind == kind);
        if !fits {
            // A delta for a block never started (or of another kind) opens one.
            let block = match kind {
                Kind::Text => BlockKind::Text,
                Kind::Thinking => BlockKind::Thinking,
                Kind::Tool => BlockKind::ToolUse {
                    id: String::new(),
                    name: String::new(),
                },
            };
            self.open(canonical, &block, out);
        }
        let index = self.open.map_or(0, |o| o.index);
        out.push(frame(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": body}),
        ));
    }
}

impl StreamEncoder for Encoder {
    fn event(&mut self, event: &Event, out: &mut Vec<Frame>) {
        if self.done {
            return;
        }
        match event {
            Event::Start { id, model } => {
                if !self.started && self.id.is_none() {
                    self.id = Some(id.clone());
                    self.model.clone_from(model);
                }
            }
            Event::BlockStart { index, kind } => self.open(*index, kind, out),
            Event::Delta { index, delta } => {
                self.begin(out);
                self.delta(*index, delta, out);
            }
            Event::BlockStop { index } => {
                if self.open.is_some_and(|o| o.canonical == *index) {
                    self.close(out);
                }
            }
            Event::Usage(u) => self.usage = self.usage.merge(*u),
            Event::Finish { stop } => {
                self.begin(out);
                self.close(out);
                self.stop = Some(stop.clone());
            }
            Event::Error { .. } => {}
        }
    }

    fn end(&mut self, out: &mut Vec<Frame>) {
        if self.done {
            return;
        }
        self.begin(out);
        self.close(out);
        let (stop_reason, stop_sequence) = stop_json(
            self.stop.as_ref().unwrap_or(&StopReason::EndTurn),
            self.called,
        );
        out.push(frame(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage_json(&self.usage),
            }),
        ));
        out.push(frame("message_stop", &json!({"type": "message_stop"})));
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Framing, Transcoder};
    use aether_domain::format::Dialect;

    fn parse(v: &Value) -> Request {
        parse_request(v, &RequestContext::default()).unwrap()
    }

    fn text(t: &str) -> Block {
        Block::Text { text: t.into() }
    }

    fn user(content: Vec<Block>) -> Message {
        Message {
            role: Role::User,
            content,
        }
    }

    fn assistant(content: Vec<Block>) -> Message {
        Message {
            role: Role::Assistant,
            content,
        }
    }

    fn weather_tool() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Current weather for a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------------------------

    fn multi_turn_body() -> Value {
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 16000,
            "system": [
                {"type": "text", "text": "You are a weather assistant.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer briefly."}
            ],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris and Berlin? Here is a photo."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Two lookups, in parallel.", "signature": "EqQBCkYIBxgCKkB"},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
                    {"type": "text", "text": "Let me check both."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Berlin"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C, sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": true,
                     "content": [{"type": "text", "text": "upstream timeout"}], "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "Which is warmer?"}
                ]},
                {"role": "assistant", "content": "Paris is warmer."},
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
                    {"type": "text", "text": "And on this map?"}
                ]}
            ],
            "tools": [
                {"name": "get_weather", "description": "Current weather for a city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                 "cache_control": {"type": "ephemeral"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": false},
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "stop_sequences": ["\n\nObservation:"],
            "metadata": {"user_id": "user-1"},
            "stream": true
        })
    }

    fn multi_turn_request() -> Request {
        Request {
            model: "claude-sonnet-4-5".into(),
            system: vec![
                "You are a weather assistant.".into(),
                "Answer briefly.".into(),
            ],
            messages: vec![
                user(vec![
                    text("Weather in Paris and Berlin? Here is a photo."),
                    Block::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        },
                    },
                ]),
                assistant(vec![
                    Block::Thinking {
                        text: "Two lookups, in parallel.".into(),
                        signature: Some("EqQBCkYIBxgCKkB".into()),
                    },
                    text("Let me check both."),
                    Block::ToolUse {
                        id: "toolu_01A".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Paris"}),
                    },
                    Block::ToolUse {
                        id: "toolu_01B".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Berlin"}),
                    },
                ]),
                user(vec![
                    Block::ToolResult {
                        id: "toolu_01A".into(),
                        name: "get_weather".into(),
                        content: vec![text("18°C, sunny")],
                        is_error: false,
                    },
                    Block::ToolResult {
                        id: "toolu_01B".into(),
                        name: "get_weather".into(),
                        content: vec![text("upstream timeout")],
                        is_error: true,
                    },
                    text("Which is warmer?"),
                ]),
                assistant(vec![text("Paris is warmer.")]),
                user(vec![
                    Block::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/map.png".into(),
                        },
                    },
                    text("And on this map?"),
                ]),
            ],
            tools: vec![weather_tool()],
            tool_choice: Some(ToolChoice::Auto),
            parallel_tool_calls: Some(true),
            max_tokens: Some(16000),
            temperature: None,
            top_p: None,
            top_k: None,
            stop: vec!["\n\nObservation:".into()],
            stream: true,
            output: None,
            reasoning: Some(Reasoning {
                budget_tokens: Some(8000),
                effort: None,
            }),
        }
    }

    #[test]
    fn parses_a_multi_turn_request() {
        assert_eq!(parse(&multi_turn_body()), multi_turn_request());
    }

    #[test]
    fn renders_a_multi_turn_request() {
        let body = render_request(&multi_turn_request());
        let expected = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 16000,
            "system": [
                {"type": "text", "text": "You are a weather assistant."},
                {"type": "text", "text": "Answer briefly."}
            ],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris and Berlin? Here is a photo."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Two lookups, in parallel.", "signature": "EqQBCkYIBxgCKkB"},
                    {"type": "text", "text": "Let me check both."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Berlin"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "18°C, sunny"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": true,
                     "content": [{"type": "text", "text": "upstream timeout"}]},
                    {"type": "text", "text": "Which is warmer?"}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "Paris is warmer."}]},
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
                    {"type": "text", "text": "And on this map?"}
                ]}
            ],
            "tools": [
                {"name": "get_weather", "description": "Current weather for a city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": false},
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "stop_sequences": ["\n\nObservation:"],
            "stream": true
        });
        assert_eq!(body, expected);
        // And back.
        assert_eq!(parse(&body), multi_turn_request());
    }

    #[test]
    fn sampling_tool_choice_and_structured_output_round_trip() {
        let body = json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 1024,
            "system": "Extract the contact.",
            "messages": [{"role": "user", "content": "Ada Lovelace, ada@example.com"}],
            "tools": [{"name": "save_contact", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "tool", "name": "save_contact", "disable_parallel_tool_use": true},
            "temperature": 0.25,
            "top_p": 0.9,
            "top_k": 40,
            "output_config": {"format": {"type": "json_schema", "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "email": {"type": "string", "format": "email"}},
                "required": ["name", "email"],
                "additionalProperties": false
            }}}
        });
        let r = parse(&body);
        assert_eq!(r.system, vec!["Extract the contact.".to_owned()]);
        assert_eq!(
            r.messages,
            vec![user(vec![text("Ada Lovelace, ada@example.com")])]
        );
        assert_eq!(r.tool_choice, Some(ToolChoice::Tool("save_contact".into())));
        assert_eq!(r.parallel_tool_calls, Some(false));
        assert_eq!(r.temperature, Some(Number::from_f64(0.25).unwrap()));
        assert_eq!(
            r.top_p.as_ref().map(ToString::to_string).as_deref(),
            Some("0.9")
        );
        assert_eq!(r.top_k, Some(40));
        assert_eq!(r.max_tokens, Some(1024));
        assert!(!r.stream);
        let Some(OutputFormat::JsonSchema {
            name,
            schema,
            strict,
        }) = &r.output
        else {
            panic!("no output format: {:?}", r.output);
        };
        assert_eq!((name.as_str(), *strict), ("output", true));
        assert_eq!(schema["required"], json!(["name", "email"]));
        let rendered = render_request(&r);
        assert_eq!(
            rendered["system"],
            json!([{"type": "text", "text": "Extract the contact."}])
        );
        assert_eq!(
            rendered["tool_choice"],
            json!({"type": "tool", "name": "save_contact", "disable_parallel_tool_use": true})
        );
        assert_eq!(rendered["output_config"], body["output_config"]);
        assert_eq!(rendered["temperature"], json!(0.25));
        assert_eq!(rendered["top_k"], json!(40));
        assert_eq!(parse(&rendered), r);
    }

    #[test]
    fn rendering_repairs_what_the_api_would_refuse() {
        let r = Request {
            model: "gpt-4o".into(),
            system: vec!["Be terse.".into(), String::new()],
            messages: vec![
                assistant(vec![text("Hi! How can I help?")]),
                user(vec![text("weather?")]),
                user(vec![Block::Image {
                    source: ImageSource::Url {
                        url: "data:image/jpeg;base64,/9j/4AAQ".into(),
                    },
                }]),
                assistant(vec![
                    Block::Thinking {
                        text: "unsigned reasoning from another dialect".into(),
                        signature: None,
                    },
                    text("   "),
                    Block::ToolUse {
                        id: "functions.get_weather:0".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Oslo"}),
                    },
                    Block::ToolUse {
                        id: "call_2".into(),
                        name: "get_time".into(),
                        input: Value::Null,
                    },
                ]),
                user(vec![
                    text("extra note"),
                    Block::ToolResult {
                        id: "functions.get_weather:0".into(),
                        name: "get_weather".into(),
                        content: vec![text("5°C")],
                        is_error: false,
                    },
                ]),
                user(vec![Block::ToolResult {
                    id: "call_zzz".into(),
                    name: "lost".into(),
                    content: vec![text("orphan")],
                    is_error: false,
                }]),
                assistant(vec![text("Cold, and ")]),
            ],
            tools: vec![Tool {
                name: "get_weather".into(),
                description: None,
                parameters: Value::Null,
            }],
            tool_choice: Some(ToolChoice::Auto),
            parallel_tool_calls: Some(false),
            max_tokens: None,
            temperature: Some(Number::from_f64(1.5).unwrap()),
            top_p: Some(Number::from_f64(0.97).unwrap()),
            top_k: Some(5),
            stop: vec!["END".into(), "  ".into()],
            stream: false,
            output: Some(OutputFormat::JsonObject),
            reasoning: Some(Reasoning {
                budget_tokens: None,
                effort: Some(Effort::High),
            }),
        };
        let expected = json!({
            "model": "gpt-4o",
            "max_tokens": 24576 + 4096,
            "system": [{"type": "text", "text": "Be terse."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi! How can I help?"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "functions_get_weather_0", "name": "get_weather", "input": {"city": "Oslo"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "functions_get_weather_0", "content": [{"type": "text", "text": "5°C"}]},
                    {"type": "tool_result", "tool_use_id": "call_2", "is_error": true,
                     "content": [{"type": "text", "text": "No result was returned for this tool call."}]},
                    {"type": "text", "text": "extra note"},
                    {"type": "text", "text": "[result of tool call call_zzz]"},
                    {"type": "text", "text": "orphan"}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "Cold, and"}]}
            ],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "top_p": 0.97,
            "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 24576}
        });
        assert_eq!(render_request(&r), expected);
    }

    #[test]
    fn thinking_is_fitted_to_the_api_rules() {
        let base = Request {
            model: "m".into(),
            messages: vec![user(vec![text("hi")])],
            reasoning: Some(Reasoning {
                budget_tokens: Some(8000),
                effort: None,
            }),
            ..Request::default()
        };
        let thinking = |r: &Request| render_request(r).get("thinking").cloned();
        let max = |r: &Request| render_request(r)["max_tokens"].clone();

        // No max_tokens: the default, or more when the budget needs it.
        assert_eq!(max(&base), json!(8192));
        let big = Request {
            reasoning: Some(Reasoning {
                budget_tokens: Some(10_000),
                effort: None,
            }),
            ..base.clone()
        };
        assert_eq!(max(&big), json!(14096));
        assert_eq!(
            thinking(&big),
            Some(json!({"type": "enabled", "budget_tokens": 10000}))
        );
        // An explicit cap stands; thinking gets half of it, or nothing when that is too small.
        let capped = Request {
            max_tokens: Some(3000),
            ..base.clone()
        };
        assert_eq!(max(&capped), json!(3000));
        assert_eq!(
            thinking(&capped),
            Some(json!({"type": "enabled", "budget_tokens": 1500}))
        );
        let tiny = Request {
            max_tokens: Some(1500),
            ..base.clone()
        };
        assert_eq!(thinking(&tiny), None);
        // Budgets under the minimum are raised; zero means off.
        let small = Request {
            reasoning: Some(Reasoning {
                budget_tokens: Some(200),
                effort: None,
            }),
            ..base.clone()
        };
        assert_eq!(
            thinking(&small),
            Some(json!({"type": "enabled", "budget_tokens": 1024}))
        );
        let off = Request {
            reasoning: Some(Reasoning {
                budget_tokens: Some(0),
                effort: None,
            }),
            ..base.clone()
        };
        assert_eq!(thinking(&off), None);
        assert_eq!(max(&off), json!(8192));
        // A forced tool call and thinking cannot go together: thinking goes.
        let forced = Request {
            tools: vec![weather_tool()],
            tool_choice: Some(ToolChoice::Required),
            ..base.clone()
        };
        assert_eq!(thinking(&forced), None);
        assert_eq!(
            render_request(&forced)["tool_choice"],
            json!({"type": "any"})
        );
        // The last assistant turn calls a tool without a (signed) thinking block first.
        let unthought = Request {
            tools: vec![weather_tool()],
            messages: vec![
                user(vec![text("weather?")]),
                assistant(vec![Block::ToolUse {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    input: json!({"city": "Rome"}),
                }]),
                user(vec![Block::ToolResult {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    content: vec![text("20°C")],
                    is_error: false,
                }]),
            ],
            ..base.clone()
        };
        assert_eq!(thinking(&unthought), None);
        // With thinking, temperature only passes when it is 1, top_k never.
        let sampled = Request {
            temperature: Some(Number::from(1u64)),
            top_k: Some(3),
            ..base.clone()
        };
        let body = render_request(&sampled);
        assert_eq!(body["temperature"], json!(1));
        assert!(body.get("top_k").is_none());
    }

    #[test]
    fn tool_history_without_tools_declares_them() {
        let r = Request {
            model: "m".into(),
            messages: vec![
                user(vec![text("summarise our session")]),
                assistant(vec![Block::ToolUse {
                    id: "toolu_1".into(),
                    name: "Read".into(),
                    input: json!({"path": "a.rs"}),
                }]),
                user(vec![Block::ToolResult {
                    id: "toolu_1".into(),
                    name: "Read".into(),
                    content: vec![text("fn main() {}")],
                    is_error: false,
                }]),
            ],
            parallel_tool_calls: Some(false),
            ..Request::default()
        };
        let body = render_request(&r);
        assert_eq!(
            body["tools"],
            json!([{"name": "Read", "input_schema": {"type": "object", "properties": {}}}])
        );
        assert_eq!(body["tool_choice"], json!({"type": "none"}));
    }

    #[test]
    fn structured_output_schemas_are_made_strict() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "age": {"type": "integer", "minimum": 0, "description": "Years"},
                "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "minItems": 2},
                "kind": {"oneOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"type": "null"}]},
                "when": {"type": "string", "format": "date-time"}
            },
            "required": ["age"],
            "additionalProperties": true
        });
        let r = Request {
            model: "m".into(),
            messages: vec![user(vec![text("x")])],
            output: Some(OutputFormat::JsonSchema {
                name: "person".into(),
                schema,
                strict: false,
            }),
            ..Request::default()
        };
        assert_eq!(
            render_request(&r)["output_config"],
            json!({"format": {"type": "json_schema", "schema": {
                "type": "object",
                "properties": {
                    "age": {"type": "integer", "description": "Years\n\n{minimum: 0}"},
                    "tags": {"type": "array", "items": {"type": "string", "description": "{pattern: \"^[a-z]+$\"}"},
                             "description": "{minItems: 2}"},
                    "kind": {"anyOf": [
                        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false},
                        {"type": "null"}
                    ]},
                    "when": {"type": "string", "format": "date-time"}
                },
                "required": ["age"],
                "additionalProperties": false
            }}})
        );
    }

    #[test]
    fn adaptive_thinking_and_effort() {
        let body = json!({
            "model": "claude-opus-4-6", "max_tokens": 64000,
            "messages": [{"role": "user", "content": "plan a trip"}],
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "max"}
        });
        let r = parse(&body);
        assert_eq!(
            r.reasoning,
            Some(Reasoning {
                budget_tokens: None,
                effort: Some(Effort::High)
            })
        );
        assert_eq!(
            render_request(&r)["thinking"],
            json!({"type": "enabled", "budget_tokens": 24576})
        );
        let bare = json!({"model": "m", "max_tokens": 20000, "messages": [], "thinking": {"type": "adaptive"}});
        let r = parse(&bare);
        assert_eq!(
            r.reasoning,
            Some(Reasoning {
                budget_tokens: None,
                effort: None
            })
        );
        assert_eq!(
            render_request(&r)["thinking"],
            json!({"type": "enabled", "budget_tokens": 8192})
        );
        let disabled = json!({"model": "m", "max_tokens": 10, "messages": [], "thinking": {"type": "disabled"}});
        assert_eq!(parse(&disabled).reasoning, None);
        // An empty conversation still gets its first user turn.
        assert_eq!(
            render_request(&parse(&disabled))["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "."}]}])
        );
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let cases = [
            (json!([]), "body: must be a JSON object"),
            (json!({"messages": []}), "model: required string is missing"),
            (json!({"model": "m"}), "messages: required array is missing"),
            (
                json!({"model": "m", "messages": {}}),
                "messages: must be an array",
            ),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
                "messages.0.role: must be \"user\" or \"assistant\"",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": 3}]}),
                "messages.0.content: must be a string or an array of content blocks",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]}),
                "messages.0.content.0.id: required string is missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]}),
                "messages.0.content.0.input: must be an object",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
                "messages.0.content.0.source.media_type: required string is missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}]}),
                "messages.0.content.0.is_error: must be a boolean",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
                "messages.0.content.0.type: required string is missing",
            ),
            (
                json!({"model": "m", "messages": [], "max_tokens": -1}),
                "max_tokens: must be a non-negative integer",
            ),
            (
                json!({"model": "m", "messages": [], "system": 5}),
                "system: must be a string or an array of text blocks",
            ),
            (
                json!({"model": "m", "messages": [], "system": [{"type": "image"}]}),
                "system.0.type: must be \"text\"",
            ),
            (
                json!({"model": "m", "messages": [], "tools": [{"name": "f"}]}),
                "tools.0.input_schema: required object is missing",
            ),
            (
                json!({"model": "m", "messages": [], "tool_choice": {"type": "maybe"}}),
                "tool_choice.type: must be auto, any, tool or none",
            ),
            (
                json!({"model": "m", "messages": [], "tool_choice": {"type": "tool"}}),
                "tool_choice.name: required string is missing",
            ),
            (
                json!({"model": "m", "messages": [], "stop_sequences": ["a", 1]}),
                "stop_sequences.1: must be a string",
            ),
            (
                json!({"model": "m", "messages": [], "temperature": "hot"}),
                "temperature: must be a number",
            ),
            (
                json!({"model": "m", "messages": [], "thinking": {"type": "enabled", "budget_tokens": 1.5}}),
                "thinking.budget_tokens: must be a non-negative integer",
            ),
            (
                json!({"model": "m", "messages": [], "thinking": {"type": "sometimes"}}),
                "thinking.type: must be enabled, adaptive or disabled",
            ),
            (
                json!({"model": "m", "messages": [], "stream": "yes"}),
                "stream: must be a boolean",
            ),
        ];
        for (body, msg) in cases {
            assert_eq!(
                parse_request(&body, &RequestContext::default()),
                Err(ConvertError::invalid(msg)),
                "{body}"
            );
        }
    }

    #[test]
    fn parses_the_claude_code_capture() {
        let raw = std::fs::read("/work/shared/fixtures/clients/claude-code-2.1.328.messages.json");
        let Ok(raw) = raw else {
            eprintln!("capture not present; skipped");
            return;
        };
        let capture: Value = serde_json::from_slice(&raw).unwrap();
        let r = parse(&capture["body"]);
        assert_eq!(r.model, "claude-sonnet-4-5");
        assert_eq!(r.max_tokens, Some(32000));
        assert!(r.stream);
        assert_eq!(
            r.reasoning,
            Some(Reasoning {
                budget_tokens: Some(31999),
                effort: None
            })
        );
        assert_eq!(r.system.len(), 3);
        assert!(r.system[0].starts_with("x-anthropic-billing-header:"));
        assert_eq!(
            r.system[1],
            "You are a Claude agent, built on Anthropic's Claude Agent SDK."
        );
        let names: Vec<&str> = r.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Agent",
                "Bash",
                "Edit",
                "ListAgents",
                "Read",
                "ReportFindings",
                "ScheduleWakeup",
                "Skill",
                "ToolSearch",
                "Workflow",
                "DeferredToolPlaceholder",
                "Write"
            ]
        );
        assert!(r.tools.iter().all(|t| t.parameters["type"] == "object"));
        assert!(
            r.tools[1]
                .description
                .as_deref()
                .is_some_and(|d| !d.is_empty())
        );
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].role, Role::User);
        assert_eq!(r.messages[0].content.len(), 9);
        assert_eq!(r.messages[0].content.last(), Some(&text("say hi")));
        assert!(r.tool_choice.is_none() && r.output.is_none() && r.stop.is_empty());
        // Rendered back it is the same conversation minus what cannot cross.
        let body = render_request(&r);
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 31999})
        );
        assert_eq!(body["max_tokens"], json!(32000));
        assert_eq!(body["tools"].as_array().map(Vec::len), Some(12));
        assert_eq!(
            body["messages"][0]["content"][8],
            json!({"type": "text", "text": "say hi"})
        );
        assert_eq!(parse(&body), r);
    }

    // -----------------------------------------------------------------------------------------
    // Responses
    // -----------------------------------------------------------------------------------------

    fn response_body() -> Value {
        json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "thinking", "thinking": "Need the weather tool.", "signature": "EqQBCkgIBRAB"},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "text", "text": "Checking Paris.", "citations": null},
                {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 12, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 2000,
                "output_tokens": 90, "output_tokens_details": {"thinking_tokens": 40},
                "service_tier": "standard"
            }
        })
    }

    fn canonical_response() -> Response {
        Response {
            id: "msg_01XFDUDYJgAACzvnptvVoYEL".into(),
            model: "claude-sonnet-4-5-20250929".into(),
            content: vec![
                Block::Thinking {
                    text: "Need the weather tool.".into(),
                    signature: Some("EqQBCkgIBRAB".into()),
                },
                text("Checking Paris."),
                Block::ToolUse {
                    id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                    name: "get_weather".into(),
                    input: json!({"city": "Paris"}),
                },
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: 2312,
                output: 90,
                cache_read: 2000,
                cache_write: 300,
                reasoning: 40,
            },
        }
    }

    #[test]
    fn parses_and_renders_responses() {
        assert_eq!(
            parse_response(&response_body()).unwrap(),
            canonical_response()
        );
        let rendered = render_response(&canonical_response());
        assert_eq!(
            rendered,
            json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [
                    {"type": "thinking", "thinking": "Need the weather tool.", "signature": "EqQBCkgIBRAB"},
                    {"type": "text", "text": "Checking Paris."},
                    {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"city": "Paris"}}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {
                    "input_tokens": 12, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 2000,
                    "output_tokens": 90, "output_tokens_details": {"thinking_tokens": 40}
                }
            })
        );
        assert_eq!(parse_response(&rendered).unwrap(), canonical_response());
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        let with = |reason: &str, seq: Value| {
            let mut b = response_body();
            b["stop_reason"] = reason.into();
            b["stop_sequence"] = seq;
            parse_response(&b).unwrap().stop
        };
        assert_eq!(with("end_turn", Value::Null), StopReason::EndTurn);
        assert_eq!(with("pause_turn", Value::Null), StopReason::EndTurn);
        assert_eq!(with("max_tokens", Value::Null), StopReason::MaxTokens);
        assert_eq!(
            with("model_context_window_exceeded", Value::Null),
            StopReason::MaxTokens
        );
        assert_eq!(with("refusal", Value::Null), StopReason::ContentFilter);
        assert_eq!(
            with("stop_sequence", json!("END")),
            StopReason::StopSequence(Some("END".into()))
        );
        let render = |stop: StopReason, content: Vec<Block>| {
            let v = render_response(&Response {
                id: String::new(),
                model: "m".into(),
                content,
                stop,
                usage: Usage::default(),
            });
            assert!(v["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
            (v["stop_reason"].clone(), v["stop_sequence"].clone())
        };
        assert_eq!(
            render(StopReason::StopSequence(Some("END".into())), vec![]),
            (json!("stop_sequence"), json!("END"))
        );
        assert_eq!(
            render(StopReason::ContentFilter, vec![]),
            (json!("refusal"), Value::Null)
        );
        assert_eq!(
            render(StopReason::MaxTokens, vec![]),
            (json!("max_tokens"), Value::Null)
        );
        // An end of turn with calls in it is a tool_use stop for Anthropic clients.
        let call = Block::ToolUse {
            id: "call_1".into(),
            name: "f".into(),
            input: json!({}),
        };
        assert_eq!(
            render(StopReason::EndTurn, vec![call]),
            (json!("tool_use"), Value::Null)
        );
        assert!(parse_response(&json!({"id": "x"})).is_err());
    }

    // -----------------------------------------------------------------------------------------
    // Streams
    // -----------------------------------------------------------------------------------------

    const RECORDED: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":1024,"cache_read_input_tokens":20480,"output_tokens":2,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants two cities."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" I'll call the tool twice."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCkgIBRABGAIqQBh1c3RvbQ=="}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"I'll check both cities "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"for you — one moment."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_01CkDmSPbW1WfCmuxAXoSTEd","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Berlin\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":3}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":472,"cache_creation_input_tokens":1024,"cache_read_input_tokens":20480,"output_tokens":189,"output_tokens_details":{"thinking_tokens":57}}}

event: message_stop
data: {"type":"message_stop"}

"#;

    fn recorded_events() -> Vec<Event> {
        let start_usage = Usage {
            input: 21976,
            output: 2,
            cache_read: 20480,
            cache_write: 1024,
            reasoning: 0,
        };
        let d = |index: usize, delta: Delta| Event::Delta { index, delta };
        vec![
            Event::Start {
                id: "msg_01XFDUDYJgAACzvnptvVoYEL".into(),
                model: "claude-sonnet-4-5-20250929".into(),
            },
            Event::Usage(start_usage),
            Event::BlockStart {
                index: 0,
                kind: BlockKind::Thinking,
            },
            d(0, Delta::Thinking("The user wants two cities.".into())),
            d(0, Delta::Thinking(" I'll call the tool twice.".into())),
            d(0, Delta::Signature("EqQBCkgIBRABGAIqQBh1c3RvbQ==".into())),
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                kind: BlockKind::Text,
            },
            d(1, Delta::Text("I'll check both cities ".into())),
            d(1, Delta::Text("for you — one moment.".into())),
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                kind: BlockKind::ToolUse {
                    id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                    name: "get_weather".into(),
                },
            },
            d(2, Delta::ToolArgs("{\"city\": \"Pa".into())),
            d(2, Delta::ToolArgs("ris\"}".into())),
            Event::BlockStop { index: 2 },
            Event::BlockStart {
                index: 3,
                kind: BlockKind::ToolUse {
                    id: "toolu_01CkDmSPbW1WfCmuxAXoSTEd".into(),
                    name: "get_weather".into(),
                },
            },
            d(3, Delta::ToolArgs("{\"city\": \"Berlin\"}".into())),
            Event::BlockStop { index: 3 },
            Event::Usage(Usage {
                output: 189,
                reasoning: 57,
                ..start_usage
            }),
            Event::Finish {
                stop: StopReason::ToolUse,
            },
        ]
    }

    /// SSE text → (event name, data) pairs (test streams use `\n` or `\r\n`).
    fn sse(bytes: &[u8]) -> Vec<(Option<String>, String)> {
        let text = String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace("\r\n", "\n");
        text.split("\n\n")
            .filter(|chunk| !chunk.trim().is_empty())
            .map(|chunk| {
                let mut name = None;
                let mut data = Vec::new();
                for line in chunk.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = Some(n.trim().to_owned());
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
                    }
                }
                (name, data.join("\n"))
            })
            .collect()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Event> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for (name, data) in sse(bytes) {
            d.event(name.as_deref(), &data, &mut out);
        }
        d.end(&mut out);
        out
    }

    fn frames_json(frames: &[Frame]) -> Vec<(String, Value)> {
        frames
            .iter()
            .map(|f| {
                (
                    f.event.unwrap_or_default().to_owned(),
                    serde_json::from_str(&f.data).unwrap(),
                )
            })
            .collect()
    }

    /// What a client accumulates from a Messages stream, after checking that the stream is
    /// well formed: `message_start` first, every event named after its `type`, blocks opened
    /// one at a time with indices 0, 1, 2…, deltas that fit their block, one `message_delta`
    /// after the last block, `message_stop` last.
    fn check_stream(events: &[(String, Value)]) -> Value {
        let mut events = events.iter().filter(|(name, _)| name != "ping");
        let (first, start) = events.next().expect("empty stream");
        assert_eq!(first, "message_start");
        assert_eq!(start["type"], "message_start");
        let mut message = start["message"].clone();
        assert_eq!(message["type"], "message");
        assert_eq!(message["role"], "assistant");
        assert_eq!(message["content"], json!([]));
        assert!(message["id"].is_string() && message["model"].is_string());
        assert!(message["stop_reason"].is_null());
        assert!(message["usage"]["input_tokens"].is_u64());
        assert!(message["usage"]["output_tokens"].is_u64());
        let mut content: Vec<Value> = Vec::new();
        let mut json_buf = String::new();
        let mut open: Option<usize> = None;
        let mut delta_seen = false;
        let mut stopped = false;
        for (name, data) in events {
            assert!(!stopped, "{name} after message_stop");
            assert_eq!(data["type"].as_str(), Some(name.as_str()));
            match name.as_str() {
                "content_block_start" => {
                    assert!(!delta_seen, "block after message_delta");
                    assert_eq!(open, None, "block started while another is open");
                    let index = usize::try_from(data["index"].as_u64().unwrap()).unwrap();
                    assert_eq!(index, content.len());
                    let block = data["content_block"].clone();
                    match block["type"].as_str().unwrap() {
                        "text" => assert_eq!(block["text"], ""),
                        "thinking" => {
                            assert_eq!(block["thinking"], "");
                            assert_eq!(block["signature"], "");
                        }
                        "tool_use" => {
                            assert!(block["id"].is_string() && block["name"].is_string());
                            assert_eq!(block["input"], json!({}));
                        }
                        other => panic!("unexpected block type {other}"),
                    }
                    content.push(block);
                    json_buf.clear();
                    open = Some(index);
                }
                "content_block_delta" => {
                    let index = usize::try_from(data["index"].as_u64().unwrap()).unwrap();
                    assert_eq!(open, Some(index), "delta for a block that is not open");
                    let block = &mut content[index];
                    let d = &data["delta"];
                    match (block["type"].as_str().unwrap(), d["type"].as_str().unwrap()) {
                        ("text", "text_delta") => {
                            let t = format!(
                                "{}{}",
                                block["text"].as_str().unwrap(),
                                d["text"].as_str().unwrap()
                            );
                            block["text"] = t.into();
                        }
                        ("thinking", "thinking_delta") => {
                            let t = format!(
                                "{}{}",
                                block["thinking"].as_str().unwrap(),
                                d["thinking"].as_str().unwrap()
                            );
                            block["thinking"] = t.into();
                        }
                        ("thinking", "signature_delta") => {
                            block["signature"] = d["signature"].clone()
                        }
                        ("tool_use", "input_json_delta") => {
                            json_buf.push_str(d["partial_json"].as_str().unwrap())
                        }
                        (b, t) => panic!("{t} in a {b} block"),
                    }
                }
                "content_block_stop" => {
                    let index = usize::try_from(data["index"].as_u64().unwrap()).unwrap();
                    assert_eq!(open, Some(index), "stop for a block that is not open");
                    if content[index]["type"] == "tool_use" && !json_buf.is_empty() {
                        // Garbage in (the fuzz concatenates objects), garbage out.
                        if let Ok(input) = serde_json::from_str::<Value>(&json_buf) {
                            content[index]["input"] = input;
                        }
                    }
                    open = None;
                }
                "message_delta" => {
                    assert_eq!(open, None, "message_delta with a block open");
                    assert!(!delta_seen, "two message_delta events");
                    delta_seen = true;
                    assert!(data["delta"]["stop_reason"].is_string());
                    assert!(data["usage"]["output_tokens"].is_u64());
                    message["stop_reason"] = data["delta"]["stop_reason"].clone();
                    message["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                    message["usage"] = data["usage"].clone();
                }
                "message_stop" => {
                    assert!(delta_seen, "message_stop without message_delta");
                    stopped = true;
                }
                other => panic!("unexpected event {other}"),
            }
        }
        assert!(stopped, "no message_stop");
        message["content"] = Value::Array(content);
        message
    }

    fn transcode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut t = Transcoder::new(
            Dialect::AnthropicMessages,
            Dialect::AnthropicMessages,
            Framing::Sse,
            1 << 20,
        );
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&t.feed(c));
        }
        out.extend_from_slice(&t.finish());
        assert!(t.is_done());
        out
    }

    fn named(bytes: &[u8]) -> Vec<(String, Value)> {
        sse(bytes)
            .into_iter()
            .map(|(n, d)| (n.unwrap_or_default(), serde_json::from_str(&d).unwrap()))
            .collect()
    }

    #[test]
    fn decodes_a_recorded_stream() {
        assert_eq!(decode_all(RECORDED.as_bytes()), recorded_events());
    }

    #[test]
    fn transcodes_a_recorded_stream_in_any_chunking() {
        let whole = transcode(&[RECORDED.as_bytes()]);
        let message = check_stream(&named(&whole));
        assert_eq!(
            message,
            json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [
                    {"type": "thinking", "thinking": "The user wants two cities. I'll call the tool twice.",
                     "signature": "EqQBCkgIBRABGAIqQBh1c3RvbQ=="},
                    {"type": "text", "text": "I'll check both cities for you — one moment."},
                    {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_01CkDmSPbW1WfCmuxAXoSTEd", "name": "get_weather", "input": {"city": "Berlin"}}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {
                    "input_tokens": 472, "cache_creation_input_tokens": 1024, "cache_read_input_tokens": 20480,
                    "output_tokens": 189, "output_tokens_details": {"thinking_tokens": 57}
                }
            })
        );
        // message_start already carries the prompt usage.
        let first = &named(&whole)[0].1;
        assert_eq!(first["message"]["usage"]["input_tokens"], 472);
        assert_eq!(first["message"]["usage"]["cache_read_input_tokens"], 20480);
        // Decoding our own output gives the same canonical events back.
        assert_eq!(decode_all(&whole), recorded_events());

        let bytes = RECORDED.as_bytes();
        let crlf = RECORDED.replace('\n', "\r\n");
        for input in [bytes, crlf.as_bytes()] {
            for size in [1, 2, 3, 5, 7, 13, 64, 500] {
                let chunks: Vec<&[u8]> = input.chunks(size).collect();
                assert_eq!(transcode(&chunks), whole, "chunk size {size}");
            }
        }
        let mut t = Transcoder::new(
            Dialect::AnthropicMessages,
            Dialect::AnthropicMessages,
            Framing::Sse,
            1 << 20,
        );
        let _ = t.feed(bytes);
        let _ = t.finish();
        assert_eq!(t.stop(), Some(&StopReason::ToolUse));
        assert_eq!(t.usage().output, 189);
        assert_eq!(t.usage().input, 21976);
    }

    #[test]
    fn upstream_stream_errors_reach_the_client() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n\
            event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n";
        let events = decode_all(stream.as_bytes());
        assert_eq!(
            events.last(),
            Some(&Event::Error {
                kind: ErrorKind::Overloaded,
                message: "Overloaded".into()
            })
        );
        assert!(!events.contains(&Event::Delta {
            index: 0,
            delta: Delta::Text("lo".into())
        }));
        let out = named(&transcode(&[stream.as_bytes()]));
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "error"
            ]
        );
        assert_eq!(out[4].1["error"]["type"], "overloaded_error");
        for (ty, kind) in [
            ("invalid_request_error", ErrorKind::InvalidRequest),
            ("authentication_error", ErrorKind::Authentication),
            ("permission_error", ErrorKind::PermissionDenied),
            ("not_found_error", ErrorKind::NotFound),
            ("request_too_large", ErrorKind::RequestTooLarge),
            ("rate_limit_error", ErrorKind::RateLimited),
            ("timeout_error", ErrorKind::Timeout),
            ("api_error", ErrorKind::UpstreamError),
        ] {
            assert_eq!(error_kind(ty), kind);
        }
    }

    #[test]
    fn decoder_skips_what_it_cannot_hold() {
        let ev = |v: Value| {
            (
                v["type"].as_str().unwrap_or_default().to_owned(),
                v.to_string(),
            )
        };
        let input = [
            ("garbage".to_owned(), "not json".to_owned()),
            // A delta before anything started.
            ev(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}),
            ),
            ev(
                json!({"type": "message_start", "message": {"id": "msg_9", "model": "m",
                "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            ),
            ev(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "abc"}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lost"}}),
            ),
            ev(json!({"type": "content_block_stop", "index": 0})),
            ev(
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
            ),
            ev(json!({"type": "content_block_stop", "index": 1})),
            ev(
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "citations_delta", "citation": {}}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{"}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 7, "delta": {"type": "text_delta", "text": "wrong index"}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "ok"}}),
            ),
            // A block started while another is open closes it.
            ev(
                json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {"a": 1}}}),
            ),
            ev(
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
            ),
            // Nothing after the stop reason opens a block.
            ev(
                json!({"type": "content_block_start", "index": 4, "content_block": {"type": "text", "text": ""}}),
            ),
            ev(json!({"type": "message_stop"})),
            ev(
                json!({"type": "content_block_start", "index": 5, "content_block": {"type": "text", "text": ""}}),
            ),
        ];
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for (name, data) in &input {
            d.event(Some(name), data, &mut out);
        }
        d.end(&mut out);
        let usage = Usage {
            input: 3,
            output: 1,
            ..Usage::default()
        };
        assert_eq!(
            out,
            [
                Event::Start {
                    id: "msg_9".into(),
                    model: "m".into()
                },
                Event::Usage(usage),
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Text
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Text("ok".into())
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    kind: BlockKind::ToolUse {
                        id: "toolu_2".into(),
                        name: "f".into()
                    }
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::ToolArgs("{\"a\":1}".into())
                },
                Event::BlockStop { index: 1 },
                Event::Usage(Usage { output: 9, ..usage }),
                Event::Finish {
                    stop: StopReason::EndTurn
                },
            ]
        );
        // A cut-off stream leaves its block open and has no stop reason.
        let cut = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\"}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
        assert_eq!(
            decode_all(cut.as_bytes()),
            [
                Event::Start {
                    id: "msg_1".into(),
                    model: "m".into()
                },
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Text
                },
            ]
        );
    }

    #[test]
    fn encodes_text_thinking_and_two_tool_calls() {
        let usage = Usage {
            input: 100,
            output: 0,
            cache_read: 40,
            cache_write: 10,
            reasoning: 0,
        };
        let d = |index: usize, delta: Delta| Event::Delta { index, delta };
        let events = [
            Event::Start {
                id: "chatcmpl-42".into(),
                model: "gpt-4.1".into(),
            },
            Event::Usage(usage),
            Event::BlockStart {
                index: 0,
                kind: BlockKind::Thinking,
            },
            d(0, Delta::Thinking("Plan: ".into())),
            d(0, Delta::Thinking("call both.".into())),
            d(0, Delta::Signature("c2ln".into())),
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                kind: BlockKind::Text,
            },
            d(1, Delta::Text("Checking.".into())),
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                kind: BlockKind::ToolUse {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                },
            },
            d(2, Delta::ToolArgs("{\"city\":".into())),
            d(2, Delta::ToolArgs("\"Paris\"}".into())),
            Event::BlockStop { index: 2 },
            Event::BlockStart {
                index: 3,
                kind: BlockKind::ToolUse {
                    id: "call_b".into(),
                    name: "get_time".into(),
                },
            },
            d(3, Delta::ToolArgs("{}".into())),
            Event::BlockStop { index: 3 },
            Event::Usage(Usage {
                output: 50,
                reasoning: 12,
                ..usage
            }),
            Event::Finish {
                stop: StopReason::ToolUse,
            },
        ];
        let mut enc = Encoder::default();
        let mut frames = Vec::new();
        for e in &events {
            enc.event(e, &mut frames);
        }
        enc.end(&mut frames);
        enc.end(&mut frames);
        enc.event(
            &Event::BlockStart {
                index: 9,
                kind: BlockKind::Text,
            },
            &mut frames,
        );
        let start_usage = json!({"input_tokens": 50, "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 40, "output_tokens": 0});
        let cbd = |index: usize, delta: Value| {
            (
                "content_block_delta".to_owned(),
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            )
        };
        let cbs = |index: usize, block: Value| {
            (
                "content_block_start".to_owned(),
                json!({"type": "content_block_start", "index": index, "content_block": block}),
            )
        };
        let stop = |index: usize| {
            (
                "content_block_stop".to_owned(),
                json!({"type": "content_block_stop", "index": index}),
            )
        };
        let expected = vec![
            (
                "message_start".to_owned(),
                json!({"type": "message_start", "message": {
                    "id": "chatcmpl-42", "type": "message", "role": "assistant", "model": "gpt-4.1",
                    "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
            ),
            ("ping".to_owned(), json!({"type": "ping"})),
            cbs(
                0,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ),
            cbd(0, json!({"type": "thinking_delta", "thinking": "Plan: "})),
            cbd(
                0,
                json!({"type": "thinking_delta", "thinking": "call both."}),
            ),
            cbd(0, json!({"type": "signature_delta", "signature": "c2ln"})),
            stop(0),
            cbs(1, json!({"type": "text", "text": ""})),
            cbd(1, json!({"type": "text_delta", "text": "Checking."})),
            stop(1),
            cbs(
                2,
                json!({"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
            ),
            cbd(
                2,
                json!({"type": "input_json_delta", "partial_json": "{\"city\":"}),
            ),
            cbd(
                2,
                json!({"type": "input_json_delta", "partial_json": "\"Paris\"}"}),
            ),
            stop(2),
            cbs(
                3,
                json!({"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
            ),
            cbd(3, json!({"type": "input_json_delta", "partial_json": "{}"})),
            stop(3),
            (
                "message_delta".to_owned(),
                json!({"type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                    "usage": {"input_tokens": 50, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 40,
                        "output_tokens": 50, "output_tokens_details": {"thinking_tokens": 12}}}),
            ),
            ("message_stop".to_owned(), json!({"type": "message_stop"})),
        ];
        let got = frames_json(&frames);
        assert_eq!(got, expected);
        check_stream(&got);
    }

    #[test]
    fn encoder_survives_odd_sequences() {
        let run = |events: &[Event]| {
            let mut enc = Encoder::default();
            let mut frames = Vec::new();
            for e in events {
                enc.event(e, &mut frames);
            }
            enc.end(&mut frames);
            let got = frames_json(&frames);
            (check_stream(&got), got)
        };
        // Nothing at all: still a complete message.
        let (m, _) = run(&[]);
        assert_eq!(m["content"], json!([]));
        assert_eq!(m["stop_reason"], "end_turn");
        assert!(m["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
        // Deltas without a block, of a kind the open block is not, stops for other blocks.
        let (m, _) = run(&[
            Event::Delta {
                index: 0,
                delta: Delta::Text("a".into()),
            },
            Event::Delta {
                index: 0,
                delta: Delta::Signature("s".into()),
            },
            Event::BlockStop { index: 5 },
            Event::Delta {
                index: 1,
                delta: Delta::ToolArgs("{\"k\":1}".into()),
            },
            Event::Delta {
                index: 1,
                delta: Delta::Text(String::new()),
            },
            Event::Finish {
                stop: StopReason::StopSequence(Some("##".into())),
            },
            Event::Delta {
                index: 2,
                delta: Delta::Text("late".into()),
            },
        ]);
        assert_eq!(m["content"][0], json!({"type": "text", "text": "a"}));
        assert_eq!(
            m["content"][1],
            json!({"type": "thinking", "thinking": "", "signature": "s"})
        );
        assert_eq!(m["content"][2]["input"], json!({"k": 1}));
        assert_eq!(m["content"][3], json!({"type": "text", "text": "late"}));
        assert_eq!(
            (m["stop_reason"].clone(), m["stop_sequence"].clone()),
            (json!("stop_sequence"), json!("##"))
        );

        // Pseudo-random sequences are always well formed.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from((seed >> 33) % n).unwrap()
        };
        for _ in 0..500 {
            let len = next(25);
            let mut events = Vec::new();
            for _ in 0..len {
                let i = next(4);
                events.push(match next(9) {
                    0 => Event::Start {
                        id: "x".into(),
                        model: "m".into(),
                    },
                    1 => Event::BlockStart {
                        index: i,
                        kind: BlockKind::Text,
                    },
                    2 => Event::BlockStart {
                        index: i,
                        kind: BlockKind::ToolUse {
                            id: format!("t{i}"),
                            name: "f".into(),
                        },
                    },
                    3 => Event::Delta {
                        index: i,
                        delta: Delta::Text("t".into()),
                    },
                    4 => Event::Delta {
                        index: i,
                        delta: Delta::ToolArgs("{}".into()),
                    },
                    5 => Event::Delta {
                        index: i,
                        delta: Delta::Thinking("th".into()),
                    },
                    6 => Event::BlockStop { index: i },
                    7 => Event::Usage(Usage {
                        input: 10,
                        output: 3,
                        ..Usage::default()
                    }),
                    _ => Event::Finish {
                        stop: StopReason::MaxTokens,
                    },
                });
            }
            run(&events);
        }
    }

    #[test]
    fn decoder_keeps_its_order_for_any_input() {
        let mut seed: u64 = 42;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..500 {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            for _ in 0..next(20) {
                let i = next(3);
                let data = match next(10) {
                    0 => {
                        json!({"type": "message_start", "message": {"id": "m", "model": "x", "usage": {"input_tokens": 1}}})
                    }
                    1 => {
                        json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
                    }
                    2 => {
                        json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}})
                    }
                    3 => {
                        json!({"type": "content_block_start", "index": i, "content_block": {"type": "redacted_thinking", "data": "d"}})
                    }
                    4 => {
                        json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": "a"}})
                    }
                    5 => {
                        json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": "{}"}})
                    }
                    6 => json!({"type": "content_block_stop", "index": i}),
                    7 => {
                        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}})
                    }
                    8 => json!({"type": "message_stop"}),
                    _ => {
                        json!({"type": "error", "error": {"type": "api_error", "message": "boom"}})
                    }
                };
                d.event(None, &data.to_string(), &mut out);
            }
            d.end(&mut out);
            check_events(&out);
        }
    }

    /// The canonical order guarantees of `Event`.
    fn check_events(events: &[Event]) {
        let mut started = false;
        let mut open: Option<usize> = None;
        let mut next = 0;
        let mut finished = false;
        let mut errored = false;
        for e in events {
            assert!(!errored, "event after Error");
            match e {
                Event::Start { .. } => {
                    assert!(!started);
                    started = true;
                }
                Event::BlockStart { index, .. } => {
                    assert!(started && !finished && open.is_none());
                    assert_eq!(*index, next);
                    next += 1;
                    open = Some(*index);
                }
                Event::Delta { index, .. } => assert_eq!(open, Some(*index)),
                Event::BlockStop { index } => {
                    assert_eq!(open, Some(*index));
                    open = None;
                }
                Event::Usage(_) => assert!(started),
                Event::Finish { .. } => {
                    assert!(started && !finished && open.is_none());
                    finished = true;
                }
                Event::Error { .. } => errored = true,
            }
        }
    }
}
