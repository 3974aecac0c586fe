//! OpenAI Chat Completions (`POST /v1/chat/completions`): requests, complete responses and
//! `chat.completion.chunk` streams.
//!
//! Choices this codec makes (the full list of what is dropped is in `docs/conversion.md`):
//!
//! * **Requests.** `system` and `developer` messages become the canonical system prompt (one
//!   part per message or text part); `tool` messages become `ToolResult` blocks of one user
//!   message, which also takes in a `user` message that directly follows them (the Anthropic
//!   shape); the result's `name` comes from the matching earlier tool call. Assistant
//!   `reasoning_content` (DeepSeek; `reasoning` from vLLM / OpenRouter) becomes a leading
//!   `Thinking` block. `max_completion_tokens` wins over `max_tokens`.
//! * **Rendering for an upstream.** The output cap is sent as `max_completion_tokens`: OpenAI
//!   deprecated `max_tokens` and its reasoning models (o-series, gpt-5) reject it, and the model
//!   named in the body is still the client's name here, so it cannot pick the field. The system
//!   prompt is one `system` message (parts joined by a blank line: several system messages
//!   trip some OpenAI-compatible chat templates). Thinking is not sent back (OpenAI and other
//!   strict servers reject `reasoning_content` in input messages). Tool-result images move
//!   into the user message after the `tool` messages (a `tool` message holds text only).
//!   Tool-call ids over OpenAI's 40-character limit are replaced by a stable hash (calls and
//!   results alike). At most 4 stop sequences. `tool_choice` and `parallel_tool_calls` only
//!   go out with tools (OpenAI rejects them otherwise). Tool schemas get Gemini-style upper-case
//!   `type` names lower-cased, a root `type: object` and `items` for item-less arrays.
//! * **Streams.** The encoder writes what OpenAI writes with `include_usage`: a first chunk with
//!   `role`, content / `reasoning_content` / `tool_calls` deltas (each call its own `index`,
//!   the first fragment carrying `id`, `type` and `name`), a chunk with `finish_reason`, a usage
//!   chunk with `choices: []`, then `[DONE]`.

use std::collections::HashMap;

use aether_protocol::errors::ErrorKind;
use serde_json::{Map, Number, Value, json};

use crate::util::{
    args_object, data_url, fresh_id, json_string, parse_data_url, str_at, u64_at, unix_now,
};
use crate::{
    Block, BlockKind, ConvertError, Delta, Effort, Event, Frame, ImageSource, Message,
    OutputFormat, Reasoning, Request, RequestContext, Response, Role, StopReason, StreamDecoder,
    StreamEncoder, Tool, ToolChoice, Usage,
};

/// OpenAI's limit on tool-call ids in Chat requests.
const MAX_CALL_ID: usize = 40;
/// OpenAI accepts at most this many stop sequences.
const MAX_STOP: usize = 4;

// ---- requests: parse ------------------------------------------------------------------------

pub(crate) fn parse_request(v: &Value, ctx: &RequestContext) -> Result<Request, ConvertError> {
    if !v.is_object() {
        return Err(ConvertError::invalid("body: expected a JSON object"));
    }
    let model = match v.get("model") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => ctx
            .model
            .clone()
            .ok_or_else(|| ConvertError::invalid("model: missing"))?,
        Some(_) => return Err(ConvertError::invalid("model: expected a string")),
    };
    let messages = match v.get("messages") {
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ConvertError::invalid("messages: must not be empty"));
        }
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(ConvertError::invalid("messages: missing")),
        Some(_) => return Err(ConvertError::invalid("messages: expected an array")),
    };
    let mut req = Request {
        model,
        ..Request::default()
    };
    parse_messages(messages, &mut req)?;
    req.tools = parse_tools(v.get("tools"))?;
    req.tool_choice = parse_tool_choice(v.get("tool_choice"))?;
    req.parallel_tool_calls = opt_bool(v, "parallel_tool_calls")?;
    req.max_tokens = match opt_u64(v, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_u64(v, "max_tokens")?,
    };
    req.temperature = opt_number(v, "temperature")?;
    req.top_p = opt_number(v, "top_p")?;
    // Not an OpenAI field, but vLLM and other compatible servers take it.
    req.top_k = u64_at(v, "top_k");
    req.stop = parse_stop(v.get("stop"))?;
    req.stream = opt_bool(v, "stream")?.unwrap_or(false) || ctx.stream;
    req.output = parse_response_format(v.get("response_format"))?;
    req.reasoning = match v.get("reasoning_effort") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Effort::parse(s).map(|e| Reasoning {
            budget_tokens: None,
            effort: Some(e),
        }),
        Some(_) => return Err(ConvertError::invalid("reasoning_effort: expected a string")),
    };
    Ok(req)
}

fn parse_messages(msgs: &[Value], req: &mut Request) -> Result<(), ConvertError> {
    // Tool-call id → function name, for the results.
    let mut names: HashMap<String, String> = HashMap::new();
    // The last canonical message is a user message opened by `tool` messages: further tool
    // results and a directly following `user` message join it.
    let mut tool_turn = false;
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        if !m.is_object() {
            return Err(ConvertError::invalid(format!("{path}: expected an object")));
        }
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            None | Some(Value::Null) => {
                return Err(ConvertError::invalid(format!("{path}.role: missing")));
            }
            Some(_) => {
                return Err(ConvertError::invalid(format!(
                    "{path}.role: expected a string"
                )));
            }
        };
        match role {
            "system" | "developer" => {
                let content =
                    parse_content(m.get("content"), &format!("{path}.content"), Side::System)?;
                req.system
                    .extend(content.into_iter().filter_map(|b| match b {
                        Block::Text { text } => Some(text),
                        _ => None,
                    }));
            }
            "user" => {
                let content =
                    parse_content(m.get("content"), &format!("{path}.content"), Side::User)?;
                match req.messages.last_mut() {
                    Some(last) if tool_turn => last.content.extend(content),
                    _ => req.messages.push(Message {
                        role: Role::User,
                        content,
                    }),
                }
                tool_turn = false;
            }
            "assistant" => {
                let content = parse_assistant(m, &path, &mut names)?;
                if !content.is_empty() {
                    req.messages.push(Message {
                        role: Role::Assistant,
                        content,
                    });
                }
                tool_turn = false;
            }
            "tool" => {
                let id = match m.get("tool_call_id") {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => {
                        return Err(ConvertError::invalid(format!(
                            "{path}.tool_call_id: missing"
                        )));
                    }
                    Some(_) => {
                        return Err(ConvertError::invalid(format!(
                            "{path}.tool_call_id: expected a string"
                        )));
                    }
                };
                let content =
                    parse_content(m.get("content"), &format!("{path}.content"), Side::Tool)?;
                let name = names
                    .get(&id)
                    .cloned()
                    .or_else(|| str_at(m, "name").map(str::to_owned))
                    .unwrap_or_default();
                let block = Block::ToolResult {
                    id,
                    name,
                    content,
                    is_error: false,
                };
                match req.messages.last_mut() {
                    Some(last) if tool_turn => last.content.push(block),
                    _ => req.messages.push(Message {
                        role: Role::User,
                        content: vec![block],
                    }),
                }
                tool_turn = true;
            }
            // The deprecated `function_call` protocol's results: dropped.
            "function" => tool_turn = false,
            other => {
                return Err(ConvertError::invalid(format!(
                    "{path}.role: unknown role \"{other}\""
                )));
            }
        }
    }
    Ok(())
}

fn parse_assistant(
    m: &Value,
    path: &str,
    names: &mut HashMap<String, String>,
) -> Result<Vec<Block>, ConvertError> {
    let mut content = Vec::new();
    if let Some(text) = reasoning_text(m)
        && !text.is_empty()
    {
        content.push(Block::Thinking {
            text: text.to_owned(),
            signature: None,
        });
    }
    content.extend(parse_content(
        m.get("content"),
        &format!("{path}.content"),
        Side::Assistant,
    )?);
    if let Some(refusal) = str_at(m, "refusal")
        && !refusal.is_empty()
    {
        content.push(Block::Text {
            text: refusal.to_owned(),
        });
    }
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(content),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(ConvertError::invalid(format!(
                "{path}.tool_calls: expected an array"
            )));
        }
    };
    for (j, call) in calls.iter().enumerate() {
        let cpath = format!("{path}.tool_calls[{j}]");
        if !call.is_object() {
            return Err(ConvertError::invalid(format!(
                "{cpath}: expected an object"
            )));
        }
        match call.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "function" => {}
            // Custom-tool calls: their tools are dropped too.
            Some(Value::String(_)) => continue,
            Some(_) => {
                return Err(ConvertError::invalid(format!(
                    "{cpath}.type: expected a string"
                )));
            }
        }
        let Some(id) = str_at(call, "id") else {
            return Err(ConvertError::invalid(format!("{cpath}.id: missing")));
        };
        let Some(function) = call.get("function").filter(|f| f.is_object()) else {
            return Err(ConvertError::invalid(format!("{cpath}.function: missing")));
        };
        let Some(name) = str_at(function, "name") else {
            return Err(ConvertError::invalid(format!(
                "{cpath}.function.name: missing"
            )));
        };
        names.insert(id.to_owned(), name.to_owned());
        content.push(Block::ToolUse {
            id: id.to_owned(),
            name: name.to_owned(),
            input: args_object(function.get("arguments")),
        });
    }
    Ok(content)
}

/// The reasoning text of a message or delta: `reasoning_content` (DeepSeek, Qwen, Kimi), or
/// `reasoning` when it is a string (vLLM, OpenRouter).
fn reasoning_text(v: &Value) -> Option<&str> {
    str_at(v, "reasoning_content").or_else(|| str_at(v, "reasoning"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    System,
    User,
    Assistant,
    Tool,
}

/// A message's `content`: a string or an array of parts. Empty texts are skipped; parts the
/// canonical model cannot hold (audio, files) are dropped.
fn parse_content(
    content: Option<&Value>,
    path: &str,
    side: Side,
) -> Result<Vec<Block>, ConvertError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![Block::Text { text: s.clone() }]),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(ConvertError::invalid(format!(
                "{path}: expected a string or an array of content parts"
            )));
        }
    };
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let ppath = format!("{path}[{j}]");
        if !part.is_object() {
            return Err(ConvertError::invalid(format!(
                "{ppath}: expected an object"
            )));
        }
        let Some(kind) = str_at(part, "type") else {
            return Err(ConvertError::invalid(format!("{ppath}.type: missing")));
        };
        match kind {
            "text" | "refusal" => {
                let Some(text) = str_at(part, kind) else {
                    return Err(ConvertError::invalid(format!(
                        "{ppath}.{kind}: expected a string"
                    )));
                };
                if !text.is_empty() {
                    out.push(Block::Text {
                        text: text.to_owned(),
                    });
                }
            }
            "image_url" if matches!(side, Side::User | Side::Tool) => {
                let url = match part.get("image_url") {
                    Some(Value::String(url)) => Some(url.as_str()),
                    Some(obj @ Value::Object(_)) => str_at(obj, "url"),
                    _ => None,
                };
                let Some(url) = url else {
                    return Err(ConvertError::invalid(format!(
                        "{ppath}.image_url.url: missing"
                    )));
                };
                out.push(Block::Image {
                    source: image_source(url),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

fn image_source(url: &str) -> ImageSource {
    match parse_data_url(url) {
        Some((media_type, data)) => ImageSource::Base64 { media_type, data },
        None => ImageSource::Url {
            url: url.to_owned(),
        },
    }
}

fn parse_tools(v: Option<&Value>) -> Result<Vec<Tool>, ConvertError> {
    let tools = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(ConvertError::invalid("tools: expected an array")),
    };
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        if !t.is_object() {
            return Err(ConvertError::invalid(format!("{path}: expected an object")));
        }
        match t.get("type") {
            Some(Value::String(kind)) if kind == "function" => {}
            None | Some(Value::Null) if t.get("function").is_some() => {}
            // Custom (grammar / free-form) tools and hosted tools: dropped.
            Some(Value::String(_)) => continue,
            _ => return Err(ConvertError::invalid(format!("{path}.type: missing"))),
        }
        let Some(f) = t.get("function").filter(|f| f.is_object()) else {
            return Err(ConvertError::invalid(format!("{path}.function: missing")));
        };
        let Some(name) = str_at(f, "name") else {
            return Err(ConvertError::invalid(format!(
                "{path}.function.name: missing"
            )));
        };
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ConvertError::invalid(format!(
                    "{path}.function.description: expected a string"
                )));
            }
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ConvertError::invalid(format!(
                    "{path}.function.parameters: expected an object"
                )));
            }
        };
        out.push(Tool {
            name: name.to_owned(),
            description,
            parameters,
        });
    }
    Ok(out)
}

fn parse_tool_choice(v: Option<&Value>) -> Result<Option<ToolChoice>, ConvertError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(ConvertError::invalid(format!(
                "tool_choice: unknown value \"{other}\""
            ))),
        },
        Some(obj @ Value::Object(_)) => match str_at(obj, "type") {
            Some("function") => obj
                .get("function")
                .and_then(|f| str_at(f, "name"))
                .map(|name| Some(ToolChoice::Tool(name.to_owned())))
                .ok_or_else(|| ConvertError::invalid("tool_choice.function.name: missing")),
            // The allowed subset is dropped; the mode stays.
            Some("allowed_tools") => Ok(
                match obj.get("allowed_tools").and_then(|a| str_at(a, "mode")) {
                    Some("required") => Some(ToolChoice::Required),
                    _ => Some(ToolChoice::Auto),
                },
            ),
            Some(_) => Ok(None),
            None => Err(ConvertError::invalid("tool_choice.type: missing")),
        },
        Some(_) => Err(ConvertError::invalid(
            "tool_choice: expected a string or an object",
        )),
    }
}

fn parse_stop(v: Option<&Value>) -> Result<Vec<String>, ConvertError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ConvertError::invalid(format!("stop[{i}]: expected a string")))
            })
            .collect(),
        Some(_) => Err(ConvertError::invalid(
            "stop: expected a string or an array of strings",
        )),
    }
}

fn parse_response_format(v: Option<&Value>) -> Result<Option<OutputFormat>, ConvertError> {
    let Some(rf) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if !rf.is_object() {
        return Err(ConvertError::invalid("response_format: expected an object"));
    }
    match str_at(rf, "type") {
        Some("json_object") => Ok(Some(OutputFormat::JsonObject)),
        Some("json_schema") => {
            let Some(js) = rf.get("json_schema").filter(|j| j.is_object()) else {
                return Err(ConvertError::invalid(
                    "response_format.json_schema: missing",
                ));
            };
            let schema = match js.get("schema") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(s @ Value::Object(_)) => s.clone(),
                Some(_) => {
                    return Err(ConvertError::invalid(
                        "response_format.json_schema.schema: expected an object",
                    ));
                }
            };
            Ok(Some(OutputFormat::JsonSchema {
                name: str_at(js, "name").unwrap_or("response").to_owned(),
                schema,
                strict: js.get("strict").and_then(Value::as_bool).unwrap_or(false),
            }))
        }
        Some(_) => Ok(None),
        None => Err(ConvertError::invalid("response_format.type: missing")),
    }
}

fn opt_bool(v: &Value, key: &str) -> Result<Option<bool>, ConvertError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ConvertError::invalid(format!("{key}: expected a boolean"))),
    }
}

fn opt_u64(v: &Value, key: &str) -> Result<Option<u64>, ConvertError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => u64_at(v, key).map(Some).ok_or_else(|| {
            ConvertError::invalid(format!("{key}: expected a non-negative integer"))
        }),
    }
}

fn opt_number(v: &Value, key: &str) -> Result<Option<Number>, ConvertError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.clone())),
        Some(_) => Err(ConvertError::invalid(format!("{key}: expected a number"))),
    }
}

// ---- requests: render -----------------------------------------------------------------------

pub(crate) fn render_request(r: &Request) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(r.model.clone()));
    let mut messages = Vec::new();
    let system: Vec<&str> = r
        .system
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system.join("\n\n")}));
    }
    for m in &r.messages {
        match m.role {
            Role::User => render_user(&m.content, &mut messages),
            Role::Assistant => render_assistant(&m.content, &mut messages),
        }
    }
    body.insert("messages".into(), Value::Array(messages));
    if !r.tools.is_empty() {
        let tools = r
            .tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), Value::String(t.name.clone()));
                if let Some(d) = &t.description {
                    f.insert("description".into(), Value::String(d.clone()));
                }
                f.insert("parameters".into(), clean_schema(&t.parameters));
                json!({"type": "function", "function": f})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &r.tool_choice {
            let v = match tc {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::Required => json!("required"),
                ToolChoice::None => json!("none"),
                ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
            };
            body.insert("tool_choice".into(), v);
        }
        if let Some(p) = r.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), Value::Bool(p));
        }
    }
    if let Some(n) = r.max_tokens {
        body.insert("max_completion_tokens".into(), json!(n));
    }
    if let Some(t) = &r.temperature {
        body.insert("temperature".into(), Value::Number(t.clone()));
    }
    if let Some(p) = &r.top_p {
        body.insert("top_p".into(), Value::Number(p.clone()));
    }
    if !r.stop.is_empty() {
        let stop = r
            .stop
            .iter()
            .take(MAX_STOP)
            .cloned()
            .map(Value::String)
            .collect();
        body.insert("stop".into(), Value::Array(stop));
    }
    if r.stream {
        body.insert("stream".into(), Value::Bool(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    match &r.output {
        Some(OutputFormat::JsonObject) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(OutputFormat::JsonSchema {
            name,
            schema,
            strict,
        }) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {
                    "name": schema_name(name), "schema": schema, "strict": strict,
                }}),
            );
        }
        None => {}
    }
    if let Some(level) = r.reasoning.and_then(|x| x.level()) {
        body.insert("reasoning_effort".into(), json!(level.as_str()));
    }
    Value::Object(body)
}

/// A user turn: its tool results as `tool` messages first, then the rest (with the results'
/// images, which a `tool` message cannot hold) as one `user` message.
fn render_user(content: &[Block], out: &mut Vec<Value>) {
    let mut parts = Vec::new();
    let mut results = 0usize;
    for b in content {
        if let Block::ToolResult {
            id, content: inner, ..
        } = b
        {
            results += 1;
            let mut text = Vec::new();
            for c in inner {
                match c {
                    Block::Text { text: t } => text.push(t.as_str()),
                    Block::Image { source } => parts.push(image_part(source)),
                    _ => {}
                }
            }
            out.push(json!({
                "role": "tool",
                "tool_call_id": wire_call_id(id),
                "content": text.join("\n"),
            }));
        }
    }
    for b in content {
        match b {
            Block::Text { text } => parts.push(json!({"type": "text", "text": text})),
            Block::Image { source } => parts.push(image_part(source)),
            _ => {}
        }
    }
    let content = match parts.as_slice() {
        [] if results > 0 => return,
        [] => json!(""),
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
            only.get("text").cloned().unwrap_or_else(|| json!(""))
        }
        _ => Value::Array(parts),
    };
    out.push(json!({"role": "user", "content": content}));
}

fn render_assistant(content: &[Block], out: &mut Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in content {
        match b {
            Block::Text { text: t } => text.push_str(t),
            Block::ToolUse { id, name, input } => calls.push(json!({
                "id": wire_call_id(id),
                "type": "function",
                "function": {"name": name, "arguments": json_string(input)},
            })),
            _ => {}
        }
    }
    if text.is_empty() && calls.is_empty() {
        return;
    }
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    m.insert(
        "content".into(),
        if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(m));
}

fn image_part(source: &ImageSource) -> Value {
    let url = match source {
        ImageSource::Base64 { media_type, data } => data_url(media_type, data),
        ImageSource::Url { url } => url.clone(),
    };
    json!({"type": "image_url", "image_url": {"url": url}})
}

/// A tool-call id OpenAI accepts: ids up to 40 characters pass unchanged, longer ones become
/// `call_` + a 128-bit hash of the original (the same for the call and its result).
fn wire_call_id(id: &str) -> String {
    if !id.is_empty() && id.len() <= MAX_CALL_ID {
        return id.to_owned();
    }
    let a = fnv1a(id.as_bytes(), 0xcbf2_9ce4_8422_2325);
    let b = fnv1a(id.as_bytes(), 0x6c62_272e_07bb_0142);
    format!("call_{a:016x}{b:016x}")
}

fn fnv1a(bytes: &[u8], basis: u64) -> u64 {
    bytes.iter().fold(basis, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `response_format.json_schema.name` must match `^[a-zA-Z0-9_-]{1,64}$`.
fn schema_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        "response".to_owned()
    } else {
        clean
    }
}

/// Function parameters OpenAI's schema validation accepts: an object schema at the root,
/// lower-case `type` names (Gemini's OpenAPI style writes `OBJECT`), `items` on every array.
fn clean_schema(v: &Value) -> Value {
    let mut out = if v.is_object() {
        v.clone()
    } else {
        Value::Object(Map::new())
    };
    fix_schema(&mut out);
    if let Value::Object(map) = &mut out {
        if !map.contains_key("type") {
            map.insert("type".into(), json!("object"));
        }
        if map.get("type").and_then(Value::as_str) == Some("object")
            && !map.contains_key("properties")
        {
            map.insert("properties".into(), Value::Object(Map::new()));
        }
    }
    out
}

fn fix_schema(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(t)) = map.get_mut("type")
                && t.chars().any(|c| c.is_ascii_uppercase())
            {
                *t = t.to_ascii_lowercase();
            }
            if map.get("type").and_then(Value::as_str) == Some("array")
                && !map.contains_key("items")
            {
                map.insert("items".into(), Value::Object(Map::new()));
            }
            for (k, child) in map.iter_mut() {
                // Literal values, not schemas.
                if matches!(
                    k.as_str(),
                    "enum" | "const" | "default" | "examples" | "example"
                ) {
                    continue;
                }
                fix_schema(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(fix_schema),
        _ => {}
    }
}

// ---- responses --------------------------------------------------------------------------------

pub(crate) fn parse_response(v: &Value) -> Result<Response, ConvertError> {
    if !v.is_object() {
        return Err(ConvertError::invalid("body: expected a JSON object"));
    }
    let choices = match v.get("choices") {
        Some(Value::Array(c)) => c,
        _ => return Err(ConvertError::invalid("choices: missing")),
    };
    let mut content = Vec::new();
    let mut stop = StopReason::EndTurn;
    if let Some(choice) = choices
        .iter()
        .find(|c| u64_at(c, "index").unwrap_or(0) == 0)
        .or_else(|| choices.first())
    {
        let Some(msg) = choice.get("message").filter(|m| m.is_object()) else {
            return Err(ConvertError::invalid("choices[0].message: missing"));
        };
        if let Some(r) = reasoning_text(msg)
            && !r.is_empty()
        {
            content.push(Block::Thinking {
                text: r.to_owned(),
                signature: None,
            });
        }
        let mut text = String::new();
        let mut thinking = String::new();
        content_pieces(msg.get("content"), &mut text, &mut thinking);
        if !thinking.is_empty() {
            content.push(Block::Thinking {
                text: thinking,
                signature: None,
            });
        }
        if !text.is_empty() {
            content.push(Block::Text { text });
        }
        let refused = match str_at(msg, "refusal") {
            Some(r) if !r.is_empty() => {
                content.push(Block::Text { text: r.to_owned() });
                true
            }
            _ => false,
        };
        let mut calls = 0usize;
        for call in msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(f) = call.get("function") else {
                continue;
            };
            calls += 1;
            content.push(Block::ToolUse {
                id: str_at(call, "id")
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| fresh_id("call_"), str::to_owned),
                name: str_at(f, "name").unwrap_or_default().to_owned(),
                input: args_object(f.get("arguments")),
            });
        }
        stop = finish_to_stop(
            str_at(choice, "finish_reason"),
            calls > 0,
            refused,
            str_at(choice, "stop_reason"),
        );
    }
    Ok(Response {
        id: str_at(v, "id")
            .filter(|s| !s.is_empty())
            .map_or_else(|| fresh_id("chatcmpl-"), str::to_owned),
        model: str_at(v, "model").unwrap_or_default().to_owned(),
        content,
        stop,
        usage: v.get("usage").map(parse_usage).unwrap_or_default(),
    })
}

/// Text and thinking from a `content` that is a string or (Mistral) an array of `text` and
/// `thinking` parts.
fn content_pieces(content: Option<&Value>, text: &mut String, thinking: &mut String) {
    match content {
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                match str_at(p, "type") {
                    Some("text") => text.push_str(str_at(p, "text").unwrap_or_default()),
                    Some("thinking") => match p.get("thinking") {
                        Some(Value::String(s)) => thinking.push_str(s),
                        Some(Value::Array(inner)) => {
                            for i in inner {
                                thinking.push_str(str_at(i, "text").unwrap_or_default());
                            }
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

pub(crate) fn render_response(r: &Response) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in &r.content {
        match b {
            Block::Text { text: t } => text.push_str(t),
            Block::Thinking { text: t, .. } => reasoning.push_str(t),
            Block::ToolUse { id, name, input } => calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": json_string(input)},
            })),
            Block::Image { .. } | Block::ToolResult { .. } => {}
        }
    }
    let has_calls = !calls.is_empty();
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && has_calls {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    message.insert("refusal".into(), Value::Null);
    message.insert("annotations".into(), json!([]));
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if has_calls {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    json!({
        "id": response_id(&r.id),
        "object": "chat.completion",
        "created": unix_now(),
        "model": r.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": stop_to_finish(&r.stop, has_calls),
        }],
        "usage": render_usage(&r.usage),
    })
}

fn response_id(id: &str) -> String {
    if id.is_empty() {
        fresh_id("chatcmpl-")
    } else {
        id.to_owned()
    }
}

fn finish_to_stop(
    reason: Option<&str>,
    tool_calls: bool,
    refused: bool,
    matched: Option<&str>,
) -> StopReason {
    match reason {
        Some("length" | "max_tokens" | "model_length") => StopReason::MaxTokens,
        Some("content_filter") => StopReason::ContentFilter,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        _ if refused => StopReason::ContentFilter,
        _ if tool_calls => StopReason::ToolUse,
        // vLLM names the stop string that matched.
        Some("stop") if matched.is_some() => StopReason::StopSequence(matched.map(str::to_owned)),
        _ => StopReason::EndTurn,
    }
}

fn stop_to_finish(stop: &StopReason, tool_calls: bool) -> &'static str {
    match stop {
        StopReason::MaxTokens => "length",
        StopReason::ContentFilter => "content_filter",
        StopReason::EndTurn | StopReason::StopSequence(_) | StopReason::ToolUse if tool_calls => {
            "tool_calls"
        }
        StopReason::EndTurn | StopReason::StopSequence(_) | StopReason::ToolUse => "stop",
    }
}

fn parse_usage(u: &Value) -> Usage {
    let ptd = u.get("prompt_tokens_details").unwrap_or(&Value::Null);
    let ctd = u.get("completion_tokens_details").unwrap_or(&Value::Null);
    Usage {
        input: u64_at(u, "prompt_tokens").unwrap_or(0),
        output: u64_at(u, "completion_tokens").unwrap_or(0),
        // DeepSeek reports cache hits at the top level.
        cache_read: u64_at(ptd, "cached_tokens")
            .or_else(|| u64_at(u, "prompt_cache_hit_tokens"))
            .unwrap_or(0),
        // Newer OpenAI models (and OpenRouter) report cache writes.
        cache_write: u64_at(ptd, "cache_write_tokens").unwrap_or(0),
        reasoning: u64_at(ctd, "reasoning_tokens").unwrap_or(0),
    }
}

fn render_usage(u: &Usage) -> Value {
    let mut prompt = Map::new();
    prompt.insert("cached_tokens".into(), json!(u.cache_read));
    prompt.insert("audio_tokens".into(), json!(0));
    if u.cache_write > 0 {
        prompt.insert("cache_write_tokens".into(), json!(u.cache_write));
    }
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input.saturating_add(u.output),
        "prompt_tokens_details": prompt,
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

// ---- stream decoder ---------------------------------------------------------------------------

/// The block the decoder has open.
enum Open {
    Text(usize),
    Thinking(usize),
    /// Canonical index, OpenAI tool index and call id.
    Tool(usize, usize, String),
}

impl Open {
    const fn index(&self) -> usize {
        match self {
            Self::Text(i) | Self::Thinking(i) | Self::Tool(i, ..) => *i,
        }
    }
}

/// `chat.completion.chunk` events → canonical events. Only choice 0 is read. Content after
/// `finish_reason` is ignored (usage is still read); nothing after `[DONE]` or an error is.
#[derive(Default)]
pub(crate) struct Decoder {
    started: bool,
    /// `[DONE]` or an error was seen.
    done: bool,
    errored: bool,
    /// `finish_reason` was seen (the `Finish` is out).
    finished: bool,
    open: Option<Open>,
    next_index: usize,
    /// OpenAI tool indices opened so far.
    tools: Vec<usize>,
    refused: bool,
}

impl StreamDecoder for Decoder {
    fn event(&mut self, name: Option<&str>, data: &str, out: &mut Vec<Event>) {
        if self.done {
            return;
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if !v.is_object() {
            return;
        }
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            out.push(error_event(err));
            self.done = true;
            self.errored = true;
            return;
        }
        if name == Some("error") {
            out.push(error_event(&v));
            self.done = true;
            self.errored = true;
            return;
        }
        let choices = v.get("choices").and_then(Value::as_array);
        let choice = choices.and_then(|c| c.iter().find(|c| u64_at(c, "index").unwrap_or(0) == 0));
        let usage = v.get("usage").filter(|u| u.is_object());
        if !self.started && (choice.is_some() || usage.is_some()) {
            self.started = true;
            out.push(Event::Start {
                id: str_at(&v, "id")
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| fresh_id("chatcmpl-"), str::to_owned),
                model: str_at(&v, "model").unwrap_or_default().to_owned(),
            });
        }
        if let Some(c) = choice
            && !self.finished
        {
            self.choice(c, out);
        }
        if let Some(u) = usage {
            out.push(Event::Usage(parse_usage(u)));
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if !self.errored {
            self.close(out);
        }
        self.done = true;
    }
}

impl Decoder {
    fn choice(&mut self, c: &Value, out: &mut Vec<Event>) {
        if let Some(d) = c.get("delta").filter(|d| d.is_object()) {
            if let Some(r) = reasoning_text(d) {
                self.thinking(r, out);
            }
            let mut text = String::new();
            let mut thinking = String::new();
            content_pieces(d.get("content"), &mut text, &mut thinking);
            self.thinking(&thinking, out);
            self.text(&text, out);
            if let Some(r) = str_at(d, "refusal")
                && !r.is_empty()
            {
                self.refused = true;
                self.text(r, out);
            }
            if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
                for tc in calls {
                    self.tool(tc, out);
                }
            }
        }
        if let Some(reason) = str_at(c, "finish_reason").filter(|r| !r.is_empty()) {
            self.close(out);
            out.push(Event::Finish {
                stop: finish_to_stop(
                    Some(reason),
                    !self.tools.is_empty(),
                    self.refused,
                    str_at(c, "stop_reason"),
                ),
            });
            self.finished = true;
        }
    }

    fn text(&mut self, s: &str, out: &mut Vec<Event>) {
        if s.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => self.open_block(Open::Text, BlockKind::Text, out),
        };
        out.push(Event::Delta {
            index,
            delta: Delta::Text(s.to_owned()),
        });
    }

    fn thinking(&mut self, s: &str, out: &mut Vec<Event>) {
        if s.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Thinking(i)) => i,
            _ => self.open_block(Open::Thinking, BlockKind::Thinking, out),
        };
        out.push(Event::Delta {
            index,
            delta: Delta::Thinking(s.to_owned()),
        });
    }

    /// Closes the open block and opens a new one at the next index.
    fn open_block(
        &mut self,
        open: fn(usize) -> Open,
        kind: BlockKind,
        out: &mut Vec<Event>,
    ) -> usize {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        out.push(Event::BlockStart { index, kind });
        self.open = Some(open(index));
        index
    }

    fn tool(&mut self, tc: &Value, out: &mut Vec<Event>) {
        let f = tc.get("function").unwrap_or(&Value::Null);
        let id = str_at(tc, "id").filter(|s| !s.is_empty());
        let args = match f.get("arguments") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(other) => json_string(other),
        };
        let next_new = self.tools.iter().max().map_or(0, |m| m + 1);
        // Some compatible servers omit `index`: a new id starts a new call.
        let tindex = match (
            u64_at(tc, "index").and_then(|n| usize::try_from(n).ok()),
            &self.open,
        ) {
            (Some(i), _) => i,
            (None, Some(Open::Tool(_, t, cur))) => match id {
                Some(new) if new != cur.as_str() => next_new,
                _ => *t,
            },
            (None, _) => next_new,
        };
        let index = match &self.open {
            Some(Open::Tool(i, t, _)) if *t == tindex => *i,
            // A fragment of a call already closed cannot be appended any more: dropped.
            _ if self.tools.contains(&tindex) => return,
            _ => {
                self.close(out);
                let id = id.map_or_else(|| fresh_id("call_"), str::to_owned);
                let index = self.next_index;
                self.next_index += 1;
                out.push(Event::BlockStart {
                    index,
                    kind: BlockKind::ToolUse {
                        id: id.clone(),
                        name: str_at(f, "name").unwrap_or_default().to_owned(),
                    },
                });
                self.tools.push(tindex);
                self.open = Some(Open::Tool(index, tindex, id));
                index
            }
        };
        if !args.is_empty() {
            out.push(Event::Delta {
                index,
                delta: Delta::ToolArgs(args),
            });
        }
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some(o) = self.open.take() {
            out.push(Event::BlockStop { index: o.index() });
        }
    }
}

/// A mid-stream error object (OpenAI's `{"error": {...}}` chunk, or a proxy's variant).
fn error_event(err: &Value) -> Event {
    let message = match err {
        Value::String(s) => s.clone(),
        _ => str_at(err, "message")
            .or_else(|| err.get("error").and_then(|e| str_at(e, "message")))
            .unwrap_or("the upstream stream failed")
            .to_owned(),
    };
    Event::Error {
        kind: error_kind(err),
        message,
    }
}

fn error_kind(err: &Value) -> ErrorKind {
    if let Some(status) = err
        .get("code")
        .filter(|c| c.is_number())
        .and_then(|_| u64_at(err, "code"))
        .and_then(|c| u16::try_from(c).ok())
    {
        return crate::kind_for_status(status);
    }
    let tags = [str_at(err, "code"), str_at(err, "type")];
    for tag in tags.into_iter().flatten() {
        let kind = match tag {
            "rate_limit_exceeded" | "rate_limit_error" | "insufficient_quota" => {
                ErrorKind::RateLimited
            }
            "invalid_api_key" | "authentication_error" => ErrorKind::Authentication,
            "permission_error" | "permission_denied" => ErrorKind::PermissionDenied,
            "not_found_error" | "model_not_found" => ErrorKind::NotFound,
            "invalid_request_error" | "context_length_exceeded" | "invalid_prompt" => {
                ErrorKind::InvalidRequest
            }
            "overloaded_error" | "overloaded" | "server_overloaded" => ErrorKind::Overloaded,
            "timeout" | "timeout_error" => ErrorKind::Timeout,
            "server_error" | "api_error" => ErrorKind::UpstreamError,
            _ => continue,
        };
        return kind;
    }
    ErrorKind::UpstreamError
}

// ---- stream encoder ---------------------------------------------------------------------------

/// A tool call the encoder has written (its position in `Encoder::tools` is its OpenAI index).
struct EncTool {
    /// The canonical block index.
    index: usize,
    /// Some argument text went out.
    args: bool,
    /// Closed without arguments, so `{}` went out: later fragments are dropped.
    filled: bool,
}

/// Canonical events → `chat.completion.chunk` frames. Text and thinking need no state (they
/// are plain `content` / `reasoning_content` deltas); tool calls do.
#[derive(Default)]
pub(crate) struct Encoder {
    started: bool,
    ended: bool,
    id: String,
    model: String,
    created: u64,
    tools: Vec<EncTool>,
    /// The OpenAI index of the open tool call.
    open_tool: Option<usize>,
    stop: Option<StopReason>,
    usage: Usage,
}

impl StreamEncoder for Encoder {
    fn event(&mut self, e: &Event, out: &mut Vec<Frame>) {
        if self.ended {
            return;
        }
        match e {
            Event::Start { id, model } => {
                if !self.started {
                    self.begin(id, model, out);
                }
            }
            Event::BlockStart { index, kind } => {
                self.ensure_started(out);
                self.close(out);
                if let BlockKind::ToolUse { id, name } = kind {
                    self.open_tool(*index, id, name, out);
                }
            }
            Event::Delta { index, delta } => {
                self.ensure_started(out);
                self.delta(*index, delta, out);
            }
            Event::BlockStop { index } => {
                if self.open_index() == Some(*index) {
                    self.close(out);
                }
            }
            Event::Usage(u) => self.usage = self.usage.merge(*u),
            Event::Finish { stop } => self.stop = Some(stop.clone()),
            Event::Error { .. } => {}
        }
    }

    fn end(&mut self, out: &mut Vec<Frame>) {
        if self.ended {
            return;
        }
        self.ensure_started(out);
        self.close(out);
        self.ended = true;
        let stop = self.stop.clone().unwrap_or_default();
        let finish = stop_to_finish(&stop, !self.tools.is_empty());
        out.push(self.chunk(&json!({}), Some(finish)));
        let usage = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": render_usage(&self.usage),
        });
        out.push(Frame::data(json_string(&usage)));
        out.push(Frame::data("[DONE]".to_owned()));
    }
}

impl Encoder {
    fn begin(&mut self, id: &str, model: &str, out: &mut Vec<Frame>) {
        self.started = true;
        self.id = response_id(id);
        model.clone_into(&mut self.model);
        self.created = unix_now();
        out.push(self.chunk(
            &json!({"role": "assistant", "content": "", "refusal": null}),
            None,
        ));
    }

    fn ensure_started(&mut self, out: &mut Vec<Frame>) {
        if !self.started {
            self.begin("", "", out);
        }
    }

    fn chunk(&self, delta: &Value, finish: Option<&str>) -> Frame {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "usage": null,
        });
        Frame::data(json_string(&v))
    }

    /// The canonical index of the open tool call.
    fn open_index(&self) -> Option<usize> {
        self.open_tool
            .and_then(|t| self.tools.get(t))
            .map(|t| t.index)
    }

    /// Writes a call's first fragment (id, type, name) and opens it; returns its OpenAI index.
    fn open_tool(&mut self, index: usize, id: &str, name: &str, out: &mut Vec<Frame>) -> usize {
        let tindex = self.tools.len();
        self.tools.push(EncTool {
            index,
            args: false,
            filled: false,
        });
        let id = if id.is_empty() {
            fresh_id("call_")
        } else {
            id.to_owned()
        };
        out.push(self.chunk(
            &json!({"tool_calls": [{
                "index": tindex,
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }]}),
            None,
        ));
        self.open_tool = Some(tindex);
        tindex
    }

    fn delta(&mut self, index: usize, delta: &Delta, out: &mut Vec<Frame>) {
        let (key, s) = match delta {
            Delta::Text(s) => ("content", s),
            Delta::Thinking(s) => ("reasoning_content", s),
            // Chat has no place for a thinking signature.
            Delta::Signature(_) => return,
            Delta::ToolArgs(s) => return self.tool_args(index, s, out),
        };
        // Another block's text: the open call is over.
        if self.open_tool.is_some() && self.open_index() != Some(index) {
            self.close(out);
        }
        if !s.is_empty() {
            out.push(self.chunk(&json!({ key: s }), None));
        }
    }

    fn tool_args(&mut self, index: usize, s: &str, out: &mut Vec<Frame>) {
        let tindex = match self.open_tool {
            Some(t) if self.open_index() == Some(index) => t,
            _ => {
                self.close(out);
                match self.tools.iter().position(|t| t.index == index) {
                    // Its `{}` already went out: more text would break the JSON.
                    Some(t) if self.tools.get(t).is_some_and(|t| t.filled) => return,
                    // A call closed earlier: its arguments continue.
                    Some(t) => {
                        self.open_tool = Some(t);
                        t
                    }
                    // Arguments for a call never started: start one.
                    None => self.open_tool(index, "", "", out),
                }
            }
        };
        if !s.is_empty() {
            out.push(self.chunk(
                &json!({"tool_calls": [{"index": tindex, "function": {"arguments": s}}]}),
                None,
            ));
            if let Some(t) = self.tools.get_mut(tindex) {
                t.args = true;
            }
        }
    }

    /// Closes the open call; one that got no argument text gets `{}` (clients parse the
    /// accumulated arguments as JSON).
    fn close(&mut self, out: &mut Vec<Frame>) {
        let Some(tindex) = self.open_tool.take() else {
            return;
        };
        if let Some(t) = self.tools.get_mut(tindex)
            && !t.args
        {
            t.filled = true;
            out.push(self.chunk(
                &json!({"tool_calls": [{"index": tindex, "function": {"arguments": "{}"}}]}),
                None,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use aether_domain::format::Dialect;
    use proptest::prelude::*;

    use super::*;
    use crate::{Framing, Transcoder};

    fn num(v: f64) -> Number {
        Number::from_f64(v).unwrap()
    }

    fn text(s: &str) -> Block {
        Block::Text { text: s.to_owned() }
    }

    fn call(id: &str, name: &str, input: Value) -> Block {
        Block::ToolUse {
            id: id.to_owned(),
            name: name.to_owned(),
            input,
        }
    }

    fn result(id: &str, name: &str, content: Vec<Block>) -> Block {
        Block::ToolResult {
            id: id.to_owned(),
            name: name.to_owned(),
            content,
            is_error: false,
        }
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

    fn weather_schema() -> Value {
        json!({"type": "object", "properties": {"city": {"type": "string"}},
               "required": ["city"], "additionalProperties": false})
    }

    fn parse(v: &Value) -> Result<Request, ConvertError> {
        parse_request(v, &RequestContext::default())
    }

    // ---- requests ----

    #[test]
    fn parses_a_multi_turn_request() {
        let body = json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "developer", "content": [{"type": "text", "text": "Prefer metric units."}]},
                {"role": "user", "content": "What's the weather in Paris and Berlin?"},
                {"role": "assistant", "content": null,
                 "reasoning_content": "Two cities: call the tool twice.",
                 "tool_calls": [
                    {"id": "call_paris", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_berlin", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Berlin\"}"}}]},
                {"role": "tool", "tool_call_id": "call_paris", "content": "18°C, sunny"},
                {"role": "tool", "tool_call_id": "call_berlin",
                 "content": [{"type": "text", "text": "12°C, rain"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "And what is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]},
                {"role": "assistant", "content": "Paris 18°C sunny, Berlin 12°C rain. A cat."},
                {"role": "user", "content": "Thanks! Reply in JSON.", "name": "alice"}
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather",
                  "description": "Current weather for a city", "parameters": weather_schema(),
                  "strict": true}},
                {"type": "custom", "custom": {"name": "grammar_tool"}}
            ],
            "tool_choice": "required",
            "parallel_tool_calls": true,
            "max_tokens": 100,
            "max_completion_tokens": 2048,
            "temperature": 0.2,
            "top_p": 0.95,
            "stop": "\n\nEND",
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "weather_report", "strict": true,
                "schema": {"type": "object", "properties": {"summary": {"type": "string"}},
                           "required": ["summary"], "additionalProperties": false}}},
            "reasoning_effort": "high",
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-123", "seed": 7, "n": 1
        });
        let req = parse(&body).unwrap();
        let want = Request {
            model: "gpt-4.1".into(),
            system: vec![
                "You are a terse assistant.".into(),
                "Prefer metric units.".into(),
            ],
            messages: vec![
                user(vec![text("What's the weather in Paris and Berlin?")]),
                assistant(vec![
                    Block::Thinking {
                        text: "Two cities: call the tool twice.".into(),
                        signature: None,
                    },
                    call("call_paris", "get_weather", json!({"city": "Paris"})),
                    call("call_berlin", "get_weather", json!({"city": "Berlin"})),
                ]),
                user(vec![
                    result("call_paris", "get_weather", vec![text("18°C, sunny")]),
                    result("call_berlin", "get_weather", vec![text("12°C, rain")]),
                    text("And what is in this picture?"),
                    Block::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        },
                    },
                    Block::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/cat.jpg".into(),
                        },
                    },
                ]),
                assistant(vec![text("Paris 18°C sunny, Berlin 12°C rain. A cat.")]),
                user(vec![text("Thanks! Reply in JSON.")]),
            ],
            tools: vec![Tool {
                name: "get_weather".into(),
                description: Some("Current weather for a city".into()),
                parameters: weather_schema(),
            }],
            tool_choice: Some(ToolChoice::Required),
            parallel_tool_calls: Some(true),
            max_tokens: Some(2048),
            temperature: Some(num(0.2)),
            top_p: Some(num(0.95)),
            top_k: None,
            stop: vec!["\n\nEND".into()],
            stream: true,
            output: Some(OutputFormat::JsonSchema {
                name: "weather_report".into(),
                schema: json!({"type": "object", "properties": {"summary": {"type": "string"}},
                               "required": ["summary"], "additionalProperties": false}),
                strict: true,
            }),
            reasoning: Some(Reasoning {
                budget_tokens: None,
                effort: Some(Effort::High),
            }),
        };
        assert_eq!(req, want);
    }

    #[test]
    fn parses_small_variants() {
        let req = parse(&json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 64,
            "stop": ["a", "b"],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_object"},
            "reasoning_effort": "minimal",
            "top_k": 40,
        }))
        .unwrap();
        assert_eq!(req.max_tokens, Some(64));
        assert_eq!(req.stop, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(req.tool_choice, Some(ToolChoice::Tool("f".into())));
        assert_eq!(req.output, Some(OutputFormat::JsonObject));
        assert_eq!(req.reasoning.and_then(|r| r.effort), Some(Effort::Minimal));
        assert_eq!(req.top_k, Some(40));
        assert!(!req.stream);

        // The model and the stream flag from the context; `text` format and unknown efforts
        // ignored; a tool message whose call is unknown takes its own `name`.
        let ctx = RequestContext {
            model: Some("from-url".into()),
            stream: true,
        };
        let req = parse_request(
            &json!({"messages": [
                {"role": "tool", "tool_call_id": "x", "name": "legacy", "content": "r"},
                {"role": "assistant", "content": ""}
            ], "response_format": {"type": "text"}, "reasoning_effort": "extreme"}),
            &ctx,
        )
        .unwrap();
        assert_eq!(req.model, "from-url");
        assert!(req.stream);
        assert_eq!(req.output, None);
        assert_eq!(req.reasoning, None);
        assert_eq!(
            req.messages,
            vec![user(vec![result("x", "legacy", vec![text("r")])])]
        );
    }

    #[test]
    fn rejects_malformed_requests() {
        let cases = [
            (json!([]), "body: expected a JSON object"),
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "model: missing",
            ),
            (json!({"model": "m"}), "messages: missing"),
            (
                json!({"model": "m", "messages": []}),
                "messages: must not be empty",
            ),
            (
                json!({"model": "m", "messages": [1]}),
                "messages[0]: expected an object",
            ),
            (
                json!({"model": "m", "messages": [{"content": "x"}]}),
                "messages[0].role: missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role: unknown role \"robot\"",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
                "messages[0].content: expected a string or an array of content parts",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text: expected a string",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
                "messages[0].content[0].image_url.url: missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id: missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}]}),
                "messages[0].tool_calls[0].function.name: missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
                "messages[0].tool_calls[0].id: missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
                "temperature: expected a number",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
                "max_tokens: expected a non-negative integer",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}),
                "stop[0]: expected a string",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "always"}),
                "tool_choice: unknown value \"always\"",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"description": "d"}}]}),
                "tools[0].function.name: missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}),
                "response_format.json_schema: missing",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
                "stream: expected a boolean",
            ),
        ];
        for (body, msg) in cases {
            assert_eq!(parse(&body), Err(ConvertError::invalid(msg)), "{body}");
        }
    }

    #[test]
    fn renders_a_request_for_an_upstream() {
        let long_id = "toolu_01ThisIdIsLongerThanFortyCharactersXYZ";
        let hashed = wire_call_id(long_id);
        assert!(hashed.starts_with("call_") && hashed.len() <= MAX_CALL_ID);
        assert_eq!(hashed, wire_call_id(long_id));
        assert_ne!(
            hashed,
            wire_call_id("toolu_01ThisIdIsLongerThanFortyCharactersXYz")
        );
        let req = Request {
            model: "claude-sonnet-4-5".into(),
            system: vec!["You are Claude Code.".into(), "Be brief.".into()],
            messages: vec![
                user(vec![text("Look at the screenshot and the time.")]),
                assistant(vec![
                    Block::Thinking {
                        text: "Need both tools.".into(),
                        signature: Some("sig".into()),
                    },
                    text("Checking."),
                    call(long_id, "screenshot", json!({})),
                    call("call_t", "get_time", json!({"tz": "UTC"})),
                ]),
                user(vec![
                    Block::ToolResult {
                        id: long_id.into(),
                        name: "screenshot".into(),
                        content: vec![
                            text("captured"),
                            Block::Image {
                                source: ImageSource::Base64 {
                                    media_type: "image/png".into(),
                                    data: "AAAA".into(),
                                },
                            },
                        ],
                        is_error: true,
                    },
                    result("call_t", "get_time", vec![]),
                    text("go on"),
                ]),
                assistant(vec![Block::Thinking {
                    text: "only thoughts".into(),
                    signature: None,
                }]),
                user(vec![]),
            ],
            tools: vec![Tool {
                name: "get_time".into(),
                description: None,
                parameters: json!({"type": "OBJECT", "properties": {
                    "tz": {"type": "STRING", "enum": ["UTC", "CET"], "default": {"type": "KEEP"}},
                    "fields": {"type": "ARRAY"}}}),
            }],
            tool_choice: Some(ToolChoice::Tool("get_time".into())),
            parallel_tool_calls: Some(false),
            max_tokens: Some(32000),
            temperature: Some(num(1.0)),
            top_p: None,
            top_k: Some(5),
            stop: vec!["1".into(), "2".into(), "3".into(), "4".into(), "5".into()],
            stream: true,
            output: Some(OutputFormat::JsonSchema {
                name: "weather report!".into(),
                schema: json!({"type": "object"}),
                strict: false,
            }),
            reasoning: Some(Reasoning {
                budget_tokens: Some(10_000),
                effort: None,
            }),
        };
        let want = json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "You are Claude Code.\n\nBe brief."},
                {"role": "user", "content": "Look at the screenshot and the time."},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": hashed, "type": "function",
                     "function": {"name": "screenshot", "arguments": "{}"}},
                    {"id": "call_t", "type": "function",
                     "function": {"name": "get_time", "arguments": "{\"tz\":\"UTC\"}"}}]},
                {"role": "tool", "tool_call_id": hashed, "content": "captured"},
                {"role": "tool", "tool_call_id": "call_t", "content": ""},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "go on"}]},
                {"role": "user", "content": ""}
            ],
            "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {
                "type": "object", "properties": {
                    "tz": {"type": "string", "enum": ["UTC", "CET"], "default": {"type": "KEEP"}},
                    "fields": {"type": "array", "items": {}}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}},
            "parallel_tool_calls": false,
            "max_completion_tokens": 32000,
            "temperature": 1.0,
            "stop": ["1", "2", "3", "4"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "weather_report_", "schema": {"type": "object"}, "strict": false}},
            "reasoning_effort": "medium"
        });
        assert_eq!(render_request(&req), want);

        // Without tools, no tool_choice / parallel_tool_calls; no stream fields when not
        // streaming; a schema-less tool gets an empty object schema.
        let req = Request {
            model: "m".into(),
            messages: vec![user(vec![text("hi")])],
            tool_choice: Some(ToolChoice::Auto),
            parallel_tool_calls: Some(true),
            ..Request::default()
        };
        assert_eq!(
            render_request(&req),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        );
        assert_eq!(
            clean_schema(&json!(null)),
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request {
                model: "gpt-4o".into(),
                system: vec!["Be helpful.".into()],
                messages: vec![
                    user(vec![text("Weather in Paris and Berlin?")]),
                    assistant(vec![
                        text("Let me check."),
                        call("call_1", "get_weather", json!({"city": "Paris"})),
                        call("call_2", "get_weather", json!({"city": "Berlin"})),
                    ]),
                    user(vec![
                        result("call_1", "get_weather", vec![text("18C")]),
                        result("call_2", "get_weather", vec![text("12C")]),
                        text("And this?"),
                        Block::Image {
                            source: ImageSource::Url {
                                url: "https://example.com/a.png".into(),
                            },
                        },
                    ]),
                    assistant(vec![text("Sunny in Paris, rain in Berlin; a cat.")]),
                    user(vec![text("Thanks")]),
                ],
                tools: vec![Tool {
                    name: "get_weather".into(),
                    description: Some("Weather".into()),
                    parameters: weather_schema(),
                }],
                tool_choice: Some(ToolChoice::Auto),
                parallel_tool_calls: Some(false),
                max_tokens: Some(1024),
                temperature: Some(num(0.7)),
                top_p: Some(num(0.9)),
                top_k: None,
                stop: vec!["STOP".into(), "END".into()],
                stream: true,
                output: Some(OutputFormat::JsonObject),
                reasoning: Some(Reasoning {
                    budget_tokens: None,
                    effort: Some(Effort::Low),
                }),
            },
            Request {
                model: "o3".into(),
                messages: vec![user(vec![text("json please")])],
                tools: vec![Tool {
                    name: "f".into(),
                    description: None,
                    parameters: json!({"type": "object", "properties": {}}),
                }],
                tool_choice: Some(ToolChoice::Tool("f".into())),
                output: Some(OutputFormat::JsonSchema {
                    name: "answer".into(),
                    schema: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
                    strict: true,
                }),
                ..Request::default()
            },
        ];
        for req in reqs {
            let rendered = render_request(&req);
            let bytes = crate::render_request(Dialect::OpenaiChat, &req);
            assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), rendered);
            assert_eq!(parse(&rendered).unwrap(), req);
        }
    }

    // ---- responses ----

    fn response_body() -> Value {
        json!({
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": "deepseek-reasoner",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking both cities.",
                    "reasoning_content": "Two cities, two calls.",
                    "refusal": null,
                    "annotations": [],
                    "tool_calls": [
                        {"id": "call_paris", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_berlin", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Berlin\"}"}}
                    ]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {
                "prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fc9f1d7035"
        })
    }

    fn response() -> Response {
        Response {
            id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT".into(),
            model: "deepseek-reasoner".into(),
            content: vec![
                Block::Thinking {
                    text: "Two cities, two calls.".into(),
                    signature: None,
                },
                text("Checking both cities."),
                call("call_paris", "get_weather", json!({"city": "Paris"})),
                call("call_berlin", "get_weather", json!({"city": "Berlin"})),
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: 1117,
                output: 46,
                cache_read: 1024,
                cache_write: 0,
                reasoning: 12,
            },
        }
    }

    #[test]
    fn parses_a_response() {
        assert_eq!(parse_response(&response_body()).unwrap(), response());
        assert_eq!(
            parse_response(&json!({"id": "x"})),
            Err(ConvertError::invalid("choices: missing"))
        );
        assert_eq!(
            parse_response(&json!({"choices": [{"index": 0}]})),
            Err(ConvertError::invalid("choices[0].message: missing"))
        );
    }

    #[test]
    fn maps_finish_reasons() {
        let cases = [
            (json!("stop"), false, json!(null), StopReason::EndTurn),
            (json!("stop"), true, json!(null), StopReason::ToolUse),
            (
                json!("stop"),
                false,
                json!("END"),
                StopReason::StopSequence(Some("END".into())),
            ),
            (json!("length"), false, json!(null), StopReason::MaxTokens),
            (json!("tool_calls"), true, json!(null), StopReason::ToolUse),
            (
                json!("function_call"),
                false,
                json!(null),
                StopReason::ToolUse,
            ),
            (
                json!("content_filter"),
                false,
                json!(null),
                StopReason::ContentFilter,
            ),
            (json!(null), false, json!(null), StopReason::EndTurn),
        ];
        for (reason, with_call, matched, want) in cases {
            let mut message = json!({"role": "assistant", "content": "x"});
            if with_call {
                message["tool_calls"] = json!([{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]);
            }
            let body = json!({"id": "i", "model": "m", "choices": [{"index": 0,
                "message": message, "finish_reason": reason, "stop_reason": matched}]});
            assert_eq!(parse_response(&body).unwrap().stop, want, "{body}");
        }
        // A refusal is text plus a content-filter stop; DeepSeek's cache-hit count is read.
        let body = json!({"id": "i", "model": "m", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": null, "refusal": "I can't help with that."},
            "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_cache_hit_tokens": 8}});
        let resp = parse_response(&body).unwrap();
        assert_eq!(resp.content, vec![text("I can't help with that.")]);
        assert_eq!(resp.stop, StopReason::ContentFilter);
        assert_eq!(resp.usage.cache_read, 8);
    }

    #[test]
    fn renders_a_response() {
        let mut v = render_response(&response());
        assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
        v.as_object_mut().unwrap().remove("created");
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
                "object": "chat.completion",
                "model": "deepseek-reasoner",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Checking both cities.",
                        "refusal": null,
                        "annotations": [],
                        "reasoning_content": "Two cities, two calls.",
                        "tool_calls": [
                            {"id": "call_paris", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                            {"id": "call_berlin", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"city\":\"Berlin\"}"}}
                        ]
                    },
                    "logprobs": null,
                    "finish_reason": "tool_calls"
                }],
                "usage": {
                    "prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
                    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0,
                        "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
                }
            })
        );
        assert_eq!(
            parse_response(&render_response(&response())).unwrap(),
            response()
        );

        // Only tool calls: content is null. A stop sequence is "stop"; a max-tokens stop "length".
        let mut r = response();
        r.content = vec![call("c", "f", json!({}))];
        let v = render_response(&r);
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        r.content = vec![text("partial")];
        r.stop = StopReason::MaxTokens;
        assert_eq!(render_response(&r)["choices"][0]["finish_reason"], "length");
        r.stop = StopReason::StopSequence(Some("END".into()));
        assert_eq!(render_response(&r)["choices"][0]["finish_reason"], "stop");
        r.content = vec![];
        r.stop = StopReason::EndTurn;
        assert_eq!(render_response(&r)["choices"][0]["message"]["content"], "");
    }

    // ---- streams ----

    const RECORDED: &str = concat!(
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"reasoning_content\":\"Two cities\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"reasoning_content\":\", two calls.\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Checking\",\"reasoning_content\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" both — ☀️.\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_paris\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":\\\"Paris\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_berlin\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Berlin\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[],\"usage\":{\"prompt_tokens\":82,\"completion_tokens\":41,\"total_tokens\":123,\"prompt_tokens_details\":{\"cached_tokens\":64,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":9,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    fn recorded_events() -> Vec<Event> {
        let usage = Usage {
            input: 82,
            output: 41,
            cache_read: 64,
            cache_write: 0,
            reasoning: 9,
        };
        let d = |index, delta| Event::Delta { index, delta };
        vec![
            Event::Start {
                id: "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG".into(),
                model: "gpt-4o-2024-08-06".into(),
            },
            Event::BlockStart {
                index: 0,
                kind: BlockKind::Thinking,
            },
            d(0, Delta::Thinking("Two cities".into())),
            d(0, Delta::Thinking(", two calls.".into())),
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                kind: BlockKind::Text,
            },
            d(1, Delta::Text("Checking".into())),
            d(1, Delta::Text(" both — ☀️.".into())),
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                kind: BlockKind::ToolUse {
                    id: "call_paris".into(),
                    name: "get_weather".into(),
                },
            },
            d(2, Delta::ToolArgs("{\"city\"".into())),
            d(2, Delta::ToolArgs(":\"Paris\"}".into())),
            Event::BlockStop { index: 2 },
            Event::BlockStart {
                index: 3,
                kind: BlockKind::ToolUse {
                    id: "call_berlin".into(),
                    name: "get_weather".into(),
                },
            },
            d(3, Delta::ToolArgs("{\"city\":\"Berlin\"}".into())),
            Event::BlockStop { index: 3 },
            Event::Finish {
                stop: StopReason::ToolUse,
            },
            Event::Usage(usage),
        ]
    }

    /// The SSE events of `sse` (data fields only; Chat has no event names).
    fn sse_data(sse: &str) -> Vec<String> {
        sse.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                e.lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect()
    }

    fn decode(sse: &str) -> Vec<Event> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for data in sse_data(sse) {
            d.event(None, &data, &mut out);
        }
        d.end(&mut out);
        out
    }

    #[test]
    fn decodes_a_recorded_stream() {
        let events = decode(RECORDED);
        assert_eq!(events, recorded_events());
        check_events(&events);
    }

    /// What a client accumulates from a Chat stream (the openai-python accumulator's view),
    /// after checking the stream is well-formed.
    #[derive(Debug, Default, PartialEq)]
    struct Accumulated {
        content: String,
        reasoning: String,
        /// id, name, arguments
        tools: Vec<(String, String, String)>,
        finish: String,
        usage: Value,
    }

    fn check_stream(bytes: &[u8]) -> Accumulated {
        check_stream_args(bytes, true)
    }

    /// `json_args`: the tool arguments must parse (only when the input's did).
    fn check_stream_args(bytes: &[u8], json_args: bool) -> Accumulated {
        let s = std::str::from_utf8(bytes).unwrap();
        assert!(s.ends_with("\n\n"), "{s}");
        let datas = sse_data(s);
        assert_eq!(datas.last().map(String::as_str), Some("[DONE]"), "{s}");
        let chunks: Vec<Value> = datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(chunks.len() >= 3, "{s}");
        let id = chunks[0]["id"].as_str().unwrap().to_owned();
        assert!(!id.is_empty());
        let mut acc = Accumulated::default();
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], id.as_str());
            assert!(c["created"].is_u64());
            assert!(c["model"].is_string());
            let choices = c["choices"].as_array().unwrap();
            if i == chunks.len() - 1 {
                assert!(choices.is_empty(), "{c}");
                assert!(c["usage"]["prompt_tokens"].is_u64(), "{c}");
                assert!(c["usage"]["completion_tokens"].is_u64(), "{c}");
                assert!(c["usage"]["total_tokens"].is_u64(), "{c}");
                acc.usage = c["usage"].clone();
                continue;
            }
            assert_eq!(c["usage"], Value::Null);
            assert_eq!(choices.len(), 1, "{c}");
            let ch = &choices[0];
            assert_eq!(ch["index"], 0);
            let delta = ch["delta"].as_object().unwrap();
            if i == 0 {
                assert_eq!(delta["role"], "assistant");
            } else {
                assert!(!delta.contains_key("role"));
            }
            let finish = &ch["finish_reason"];
            if i == chunks.len() - 2 {
                assert!(delta.is_empty(), "{c}");
                acc.finish = finish.as_str().unwrap().to_owned();
                continue;
            }
            assert_eq!(*finish, Value::Null, "{c}");
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                acc.content.push_str(t);
            }
            if let Some(t) = delta.get("reasoning_content").and_then(Value::as_str) {
                acc.reasoning.push_str(t);
            }
            for tc in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = usize::try_from(tc["index"].as_u64().unwrap()).unwrap();
                let args = tc["function"]["arguments"].as_str().unwrap();
                if index == acc.tools.len() {
                    // The first fragment of a call names it.
                    assert_eq!(tc["type"], "function", "{c}");
                    let id = tc["id"].as_str().unwrap();
                    assert!(!id.is_empty());
                    let name = tc["function"]["name"].as_str().unwrap();
                    acc.tools
                        .push((id.to_owned(), name.to_owned(), args.to_owned()));
                } else {
                    assert!(index < acc.tools.len(), "tool index out of order: {c}");
                    assert!(tc.get("id").is_none() && tc["function"].get("name").is_none());
                    acc.tools[index].2.push_str(args);
                }
            }
        }
        for (_, _, args) in acc.tools.iter().filter(|_| json_args) {
            assert!(
                serde_json::from_str::<Value>(args).unwrap().is_object(),
                "{args}"
            );
        }
        if acc.tools.is_empty() {
            assert_ne!(acc.finish, "tool_calls");
        }
        acc
    }

    /// The canonical order guarantees of `Event`.
    fn check_events(events: &[Event]) {
        let mut open: Option<usize> = None;
        let mut next = 0usize;
        let mut finished = false;
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Start { .. } => assert_eq!(i, 0, "{events:?}"),
                Event::BlockStart { index, .. } => {
                    assert!(open.is_none() && !finished && *index == next, "{events:?}");
                    open = Some(*index);
                    next += 1;
                }
                Event::Delta { index, .. } => assert_eq!(open, Some(*index), "{events:?}"),
                Event::BlockStop { index } => {
                    assert_eq!(open, Some(*index), "{events:?}");
                    open = None;
                }
                Event::Finish { .. } => {
                    assert!(!finished && open.is_none(), "{events:?}");
                    finished = true;
                }
                Event::Usage(_) => {}
                Event::Error { .. } => assert_eq!(i, events.len() - 1, "{events:?}"),
            }
            if i > 0 {
                assert!(matches!(events[0], Event::Start { .. }), "{events:?}");
            }
        }
    }

    fn transcode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut t = Transcoder::new(
            Dialect::OpenaiChat,
            Dialect::OpenaiChat,
            Framing::Sse,
            1 << 20,
        );
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&t.feed(c));
        }
        out.extend_from_slice(&t.finish());
        out
    }

    fn mask_created(bytes: &[u8]) -> String {
        let s = String::from_utf8(bytes.to_vec()).unwrap();
        sse_data(&s)
            .into_iter()
            .map(|d| match serde_json::from_str::<Value>(&d) {
                Ok(mut v) => {
                    v["created"] = json!(0);
                    v.to_string()
                }
                Err(_) => d,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn transcodes_a_recorded_stream_in_any_split() {
        let bytes = RECORDED.as_bytes();
        let whole = transcode(&[bytes]);
        let acc = check_stream(&whole);
        assert_eq!(
            acc,
            Accumulated {
                content: "Checking both — ☀️.".into(),
                reasoning: "Two cities, two calls.".into(),
                tools: vec![
                    (
                        "call_paris".into(),
                        "get_weather".into(),
                        "{\"city\":\"Paris\"}".into()
                    ),
                    (
                        "call_berlin".into(),
                        "get_weather".into(),
                        "{\"city\":\"Berlin\"}".into()
                    ),
                ],
                finish: "tool_calls".into(),
                usage: json!({
                    "prompt_tokens": 82, "completion_tokens": 41, "total_tokens": 123,
                    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 9, "audio_tokens": 0,
                        "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
                }),
            }
        );
        let want = mask_created(&whole);
        // Every split point, and byte-by-byte.
        for cut in 0..=bytes.len() {
            let got = transcode(&[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(mask_created(&got), want, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(mask_created(&transcode(&singles)), want);
        let sevens: Vec<&[u8]> = bytes.chunks(7).collect();
        assert_eq!(mask_created(&transcode(&sevens)), want);

        let mut t = Transcoder::new(
            Dialect::OpenaiChat,
            Dialect::OpenaiChat,
            Framing::Sse,
            1 << 20,
        );
        let _ = t.feed(bytes);
        let _ = t.finish();
        assert_eq!(t.stop(), Some(&StopReason::ToolUse));
        assert_eq!(t.usage().cache_read, 64);
    }

    #[test]
    fn decoder_copes_with_variants_and_garbage() {
        // Azure's empty first chunk, garbage, a comment-like line, chunks without `index` on
        // tool calls (one call in one piece, then another), text after finish ignored, usage in
        // the finish chunk.
        let sse = concat!(
            "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[]}\n\n",
            "data: not json\n\n",
            "data: [1,2]\n\n",
            "data: {\"id\":\"g-1\",\"model\":\"gemini-2.5-flash\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"g-1\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}\n\n",
            "data: {\"id\":\"g-1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]}}]}\n\n",
            "data: {\"id\":\"g-1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":{\"y\":2}}}]}}]}\n\n",
            "data: {\"id\":\"g-1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"late\"}}]}}]}\n\n",
            "data: {\"id\":\"g-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n",
            "data: {\"id\":\"g-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"after finish\"}}]}\n\n",
            "data: [DONE]\n\n",
            "data: {\"id\":\"g-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"after done\"}}]}\n\n",
        );
        let events = decode(sse);
        check_events(&events);
        assert_eq!(
            events,
            vec![
                Event::Start {
                    id: "g-1".into(),
                    model: "gemini-2.5-flash".into()
                },
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Text
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Text("Hi".into())
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    kind: BlockKind::ToolUse {
                        id: "a".into(),
                        name: "f".into()
                    }
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::ToolArgs("{\"x\":1}".into())
                },
                Event::BlockStop { index: 1 },
                Event::BlockStart {
                    index: 2,
                    kind: BlockKind::ToolUse {
                        id: "b".into(),
                        name: "g".into()
                    }
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::ToolArgs("{\"y\":2}".into())
                },
                Event::BlockStop { index: 2 },
                Event::Finish {
                    stop: StopReason::ToolUse
                },
                Event::Usage(Usage {
                    input: 5,
                    output: 7,
                    ..Usage::default()
                }),
            ]
        );
    }

    #[test]
    fn decoder_reports_errors() {
        let cases = [
            (
                "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}",
                ErrorKind::UpstreamError,
                "The server had an error",
            ),
            (
                "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}",
                ErrorKind::RateLimited,
                "Rate limit reached",
            ),
            (
                "{\"error\":{\"code\":429,\"message\":\"Provider returned error\"}}",
                ErrorKind::RateLimited,
                "Provider returned error",
            ),
            (
                "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
                ErrorKind::Overloaded,
                "Overloaded",
            ),
            ("{\"error\":\"boom\"}", ErrorKind::UpstreamError, "boom"),
        ];
        for (data, kind, message) in cases {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            d.event(None, "{\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}", &mut out);
            d.event(None, data, &mut out);
            d.event(
                None,
                "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}",
                &mut out,
            );
            d.end(&mut out);
            check_events(&out);
            assert_eq!(out.len(), 4, "{out:?}");
            assert_eq!(
                out[3],
                Event::Error {
                    kind,
                    message: message.into()
                }
            );
        }
        // A named `error` event without an `error` key.
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.event(Some("error"), "{\"message\":\"bad gateway\"}", &mut out);
        assert_eq!(
            out,
            vec![Event::Error {
                kind: ErrorKind::UpstreamError,
                message: "bad gateway".into()
            }]
        );
    }

    #[test]
    fn encodes_text_thinking_and_two_tool_calls() {
        let d = |index, delta| Event::Delta { index, delta };
        let events = vec![
            Event::Start {
                id: "msg_01".into(),
                model: "claude-sonnet-4-5".into(),
            },
            Event::Usage(Usage {
                input: 120,
                output: 1,
                cache_read: 100,
                cache_write: 10,
                reasoning: 0,
            }),
            Event::BlockStart {
                index: 0,
                kind: BlockKind::Thinking,
            },
            d(0, Delta::Thinking("Let me ".into())),
            d(0, Delta::Thinking("think.".into())),
            d(0, Delta::Signature("EqQBCgIYAhIM".into())),
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                kind: BlockKind::Text,
            },
            d(1, Delta::Text("Calling tools.".into())),
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                kind: BlockKind::ToolUse {
                    id: "toolu_01".into(),
                    name: "get_weather".into(),
                },
            },
            d(2, Delta::ToolArgs(String::new())),
            d(2, Delta::ToolArgs("{\"city\":".into())),
            d(2, Delta::ToolArgs("\"Paris\"}".into())),
            Event::BlockStop { index: 2 },
            Event::BlockStart {
                index: 3,
                kind: BlockKind::ToolUse {
                    id: "toolu_02".into(),
                    name: "get_time".into(),
                },
            },
            Event::BlockStop { index: 3 },
            Event::Usage(Usage {
                input: 120,
                output: 58,
                cache_read: 100,
                cache_write: 10,
                reasoning: 0,
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
        enc.event(&events[8], &mut frames);
        assert!(frames.iter().all(|f| f.event.is_none()));
        let got: Vec<Value> = frames
            .iter()
            .map(|f| {
                let mut v: Value = serde_json::from_str(&f.data).unwrap_or(json!(f.data));
                if let Some(o) = v.as_object_mut() {
                    assert!(o.remove("created").unwrap().as_u64().unwrap() > 1_700_000_000);
                }
                v
            })
            .collect();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "msg_01", "object": "chat.completion.chunk", "model": "claude-sonnet-4-5",
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                   "usage": null})
        };
        let none = Value::Null;
        let want = vec![
            chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                none.clone(),
            ),
            chunk(json!({"reasoning_content": "Let me "}), none.clone()),
            chunk(json!({"reasoning_content": "think."}), none.clone()),
            chunk(json!({"content": "Calling tools."}), none.clone()),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "toolu_01", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}),
                none.clone(),
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                none.clone(),
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                none.clone(),
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "toolu_02", "type": "function",
                    "function": {"name": "get_time", "arguments": ""}}]}),
                none.clone(),
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
                none,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "msg_01", "object": "chat.completion.chunk", "model": "claude-sonnet-4-5",
                   "choices": [], "usage": {
                    "prompt_tokens": 120, "completion_tokens": 58, "total_tokens": 178,
                    "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0, "cache_write_tokens": 10},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                        "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}}),
            json!("[DONE]"),
        ];
        assert_eq!(got, want);

        let bytes: Vec<u8> = frames
            .iter()
            .flat_map(|f| aether_protocol::sse::encode_event(f.event, &f.data).to_vec())
            .collect();
        let acc = check_stream(&bytes);
        assert_eq!(acc.reasoning, "Let me think.");
        assert_eq!(acc.tools.len(), 2);
        // Decoding our own output gives the events back (less the signature, and with the
        // Usage after the blocks).
        let back = decode(std::str::from_utf8(&bytes).unwrap());
        check_events(&back);
        assert_eq!(
            back.iter()
                .filter(|e| matches!(e, Event::BlockStart { .. }))
                .count(),
            4
        );
        assert!(back.contains(&Event::Finish {
            stop: StopReason::ToolUse
        }));
    }

    #[test]
    fn encoder_survives_odd_sequences() {
        let d = |index, delta| Event::Delta { index, delta };
        let sequences: Vec<Vec<Event>> = vec![
            vec![],
            vec![d(0, Delta::Text("no start".into()))],
            vec![d(0, Delta::ToolArgs("{\"a\":1}".into()))],
            vec![
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::ToolUse {
                        id: String::new(),
                        name: "f".into(),
                    },
                },
                d(0, Delta::Text("text inside a tool block".into())),
                d(0, Delta::ToolArgs("{}".into())),
                Event::BlockStop { index: 7 },
                Event::Finish {
                    stop: StopReason::MaxTokens,
                },
                Event::Start {
                    id: "late".into(),
                    model: "m".into(),
                },
            ],
            vec![
                Event::Start {
                    id: "x".into(),
                    model: "m".into(),
                },
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::ToolUse {
                        id: "c".into(),
                        name: "f".into(),
                    },
                },
                d(0, Delta::ToolArgs("{\"a\"".into())),
                Event::BlockStart {
                    index: 1,
                    kind: BlockKind::Text,
                },
                d(0, Delta::ToolArgs(":1}".into())),
                Event::Finish {
                    stop: StopReason::EndTurn,
                },
            ],
        ];
        for seq in sequences {
            let mut enc = Encoder::default();
            let mut frames = Vec::new();
            for e in &seq {
                enc.event(e, &mut frames);
            }
            enc.end(&mut frames);
            let bytes: Vec<u8> = frames
                .iter()
                .flat_map(|f| aether_protocol::sse::encode_event(f.event, &f.data).to_vec())
                .collect();
            check_stream(&bytes);
        }
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        let idx = 0usize..4;
        prop_oneof![
            ("[a-z_0-9]{0,6}", "[a-z]{0,4}").prop_map(|(id, model)| Event::Start { id, model }),
            (idx.clone(), 0u8..3, "[a-z_]{0,5}").prop_map(|(index, k, name)| Event::BlockStart {
                index,
                kind: match k {
                    0 => BlockKind::Text,
                    1 => BlockKind::Thinking,
                    _ => BlockKind::ToolUse {
                        id: format!("call_{name}"),
                        name,
                    },
                },
            }),
            (idx.clone(), 0u8..4, ".{0,6}").prop_map(|(index, k, s)| Event::Delta {
                index,
                delta: match k {
                    0 => Delta::Text(s),
                    1 => Delta::Thinking(s),
                    2 => Delta::Signature(s),
                    // Fragments of one JSON object are not generated: only empty ones.
                    _ => Delta::ToolArgs(String::new()),
                },
            }),
            idx.prop_map(|index| Event::BlockStop { index }),
            (0u64..100, 0u64..100).prop_map(|(input, output)| Event::Usage(Usage {
                input,
                output,
                ..Usage::default()
            })),
            (0u8..5).prop_map(|k| Event::Finish {
                stop: match k {
                    0 => StopReason::EndTurn,
                    1 => StopReason::MaxTokens,
                    2 => StopReason::ToolUse,
                    3 => StopReason::ContentFilter,
                    _ => StopReason::StopSequence(None),
                },
            }),
        ]
    }

    proptest! {
        #[test]
        fn encoder_output_is_always_well_formed(seq in proptest::collection::vec(arb_event(), 0..24)) {
            let mut enc = Encoder::default();
            let mut frames = Vec::new();
            for e in &seq {
                enc.event(e, &mut frames);
            }
            enc.end(&mut frames);
            let bytes: Vec<u8> = frames
                .iter()
                .flat_map(|f| aether_protocol::sse::encode_event(f.event, &f.data).to_vec())
                .collect();
            check_stream(&bytes);
        }

        #[test]
        fn decoder_never_breaks_order(datas in proptest::collection::vec(prop_oneof![
            ".{0,40}",
            Just("[DONE]".to_owned()),
            (0u8..8, 0u64..3, "[a-z\"{}:]{0,6}").prop_map(|(k, i, s)| {
                let s = serde_json::to_string(&s).unwrap();
                match k {
                    0 => format!("{{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{s}}}}}]}}"),
                    1 => format!("{{\"choices\":[{{\"delta\":{{\"reasoning_content\":{s}}}}}]}}"),
                    2 => format!("{{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"id\":\"t{i}\",\"function\":{{\"name\":\"f\",\"arguments\":{s}}}}}]}}}}]}}"),
                    3 => format!("{{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"function\":{{\"arguments\":{s}}}}}]}}}}]}}"),
                    4 => "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}".to_owned(),
                    5 => "{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}".to_owned(),
                    6 => format!("{{\"choices\":[{{\"delta\":{{\"refusal\":{s}}}}}]}}"),
                    _ => "{\"error\":{\"message\":\"x\"}}".to_owned(),
                }
            }),
        ], 0..24)) {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            for data in &datas {
                d.event(None, data, &mut out);
            }
            d.end(&mut out);
            check_events(&out);
            // And the transcoder turns it into a well-formed stream, unless it failed.
            let sse: String = datas.iter().map(|d| format!("data: {}\n\n", d.replace('\n', " "))).collect();
            let bytes = transcode(&[sse.as_bytes()]);
            if !out.iter().any(|e| matches!(e, Event::Error { .. })) {
                check_stream_args(&bytes, false);
            }
        }
    }
}
