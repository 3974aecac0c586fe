//! OpenAI Responses (`POST /v1/responses`), the API Codex CLI speaks.
//!
//! * **Requests**: `instructions` and `system`/`developer` message items become the canonical
//!   system prompt; `input` (a string or items) is grouped into alternating canonical
//!   messages — `function_call` and `reasoning` items join the assistant message around them,
//!   `function_call_output` items become `ToolResult` blocks of a user message (their function
//!   name is filled in from the matching call).
//! * **Namespaces**: Codex groups tools under `{"type":"namespace"}` (a namespace name plus
//!   function tools) and the model calls them as `function_call` items carrying the
//!   `namespace` next to the bare `name`. The canonical model has no namespaces, so they are
//!   flattened to `<namespace>--<name>` (one function tool each) and split back at the first
//!   `--` when a call is written to a Responses client ([`split_name`]).
//! * **Custom (freeform) tools** become a function with one string parameter `input`, and
//!   `custom_tool_call` items a call with `{"input": …}`; `local_shell_call` items a call of
//!   `local_shell` with the action as arguments. Hosted tools are dropped.
//! * **Reasoning**: a `reasoning` item is a `Thinking` block — its summary parts joined by a
//!   blank line, its `encrypted_content` as the signature. Rendered for an upstream only when
//!   the signature is OpenAI's own encrypted reasoning (a Fernet token, `gAAAAA…`).
//! * **Stateful features** (`previous_response_id`, `conversation`, `item_reference` items)
//!   cannot cross to another format and are refused with a 400.
//! * **Streams** follow the real event sequence: `response.created`, `response.in_progress`,
//!   then per output item `output_item.added` → content events → `output_item.done` (with the
//!   complete item, which Codex builds its history from), and `response.completed` (or
//!   `response.incomplete`) with the whole response and usage; every event carries
//!   `sequence_number`, and the item events `output_index`, `item_id` and `content_index` /
//!   `summary_index`.

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

/// Joins a namespace and a function name into one canonical tool name.
const NS_SEP: &str = "--";

/// The Responses API rejects `max_output_tokens` below this.
const MIN_OUTPUT_TOKENS: u64 = 16;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn bad(path: &str, what: &str) -> ConvertError {
    ConvertError::invalid(format!("{path}: {what}"))
}

/// `v[key]`, treating JSON `null` as absent.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn opt_str<'a>(v: &'a Value, key: &str, path: &str) -> Result<Option<&'a str>, ConvertError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(&format!("{path}{key}"), "must be a string")),
    }
}

fn req_str<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a str, ConvertError> {
    opt_str(v, key, path)?.ok_or_else(|| bad(&format!("{path}{key}"), "required string is missing"))
}

fn opt_bool(v: &Value, key: &str) -> Result<Option<bool>, ConvertError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(key, "must be a boolean")),
    }
}

fn opt_number(v: &Value, key: &str) -> Result<Option<Number>, ConvertError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.clone())),
        Some(_) => Err(bad(key, "must be a number")),
    }
}

fn opt_u64(v: &Value, key: &str) -> Result<Option<u64>, ConvertError> {
    match field(v, key) {
        None => Ok(None),
        Some(_) => u64_at(v, key)
            .map(Some)
            .ok_or_else(|| bad(key, "must be a non-negative integer")),
    }
}

/// The canonical name of a (possibly namespaced) function.
fn flat_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}{NS_SEP}{name}"),
        _ => name.to_owned(),
    }
}

/// Splits a canonical tool name into the `namespace` and `name` of a Responses
/// `function_call` (the inverse of [`flat_name`]).
fn split_name(flat: &str) -> (Option<&str>, &str) {
    match flat.split_once(NS_SEP) {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => (Some(ns), name),
        _ => (None, flat),
    }
}

/// Writes `name` (and `namespace`, when the canonical name carries one) into a call item.
fn put_name(item: &mut Map<String, Value>, flat: &str) {
    let (ns, name) = split_name(flat);
    item.insert("name".into(), Value::String(name.to_owned()));
    if let Some(ns) = ns {
        item.insert("namespace".into(), Value::String(ns.to_owned()));
    }
}

/// A Responses id (`resp_…`) for a canonical response id.
fn response_id(raw: &str) -> String {
    if raw.starts_with("resp_") {
        raw.to_owned()
    } else if raw.is_empty() {
        fresh_id("resp_")
    } else {
        format!("resp_{raw}")
    }
}

/// Item ids derive from the response id, so a response renders the same way every time.
fn item_id(prefix: &str, resp_id: &str, n: usize) -> String {
    let base = resp_id.strip_prefix("resp_").unwrap_or(resp_id);
    format!("{prefix}_{base}_{n}")
}

/// Whether a thinking signature is OpenAI's own encrypted reasoning (a Fernet token), the
/// only kind a Responses upstream accepts back.
fn is_openai_encrypted(sig: &str) -> bool {
    sig.starts_with("gAAAAA")
}

fn image_block(url: &str) -> Block {
    let source = match parse_data_url(url) {
        Some((media_type, data)) => ImageSource::Base64 { media_type, data },
        None => ImageSource::Url {
            url: url.to_owned(),
        },
    };
    Block::Image { source }
}

fn image_url(source: &ImageSource) -> String {
    match source {
        ImageSource::Base64 { media_type, data } => data_url(media_type, data),
        ImageSource::Url { url } => url.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: client → canonical
// ---------------------------------------------------------------------------------------------

/// Accumulates canonical messages, merging consecutive blocks of one role.
#[derive(Default)]
struct Builder {
    system: Vec<String>,
    messages: Vec<Message>,
    /// call id → canonical function name, to name the results.
    names: HashMap<String, String>,
}

impl Builder {
    fn push(&mut self, role: Role, block: Block) {
        if let Block::ToolUse { id, name, .. } = &block {
            self.names.insert(id.clone(), name.clone());
        }
        match self.messages.last_mut() {
            Some(m) if m.role == role => m.content.push(block),
            _ => self.messages.push(Message {
                role,
                content: vec![block],
            }),
        }
    }

    fn result(&mut self, id: &str, content: Vec<Block>) {
        let name = self.names.get(id).cloned().unwrap_or_default();
        self.push(
            Role::User,
            Block::ToolResult {
                id: id.to_owned(),
                name,
                content,
                is_error: false,
            },
        );
    }
}

pub(crate) fn parse_request(v: &Value, ctx: &RequestContext) -> Result<Request, ConvertError> {
    if !v.is_object() {
        return Err(ConvertError::invalid("body: must be a JSON object"));
    }
    if field(v, "previous_response_id").is_some() {
        return Err(bad(
            "previous_response_id",
            "a stateful continuation cannot be converted to another API format; send the whole \
             conversation in `input` (with `store: false`) instead",
        ));
    }
    if field(v, "conversation").is_some() {
        return Err(bad(
            "conversation",
            "a stored conversation cannot be converted to another API format; send the whole \
             conversation in `input` instead",
        ));
    }
    let model = match opt_str(v, "model", "")? {
        Some(m) => m.to_owned(),
        None => ctx
            .model
            .clone()
            .ok_or_else(|| bad("model", "required string is missing"))?,
    };

    let mut b = Builder::default();
    if let Some(instr) = opt_str(v, "instructions", "")?
        && !instr.is_empty()
    {
        b.system.push(instr.to_owned());
    }
    match field(v, "input") {
        None => {}
        Some(Value::String(s)) if !s.is_empty() => {
            b.push(Role::User, Block::Text { text: s.clone() })
        }
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                parse_item(&mut b, item, &format!("input[{i}]"))?;
            }
        }
        Some(_) => return Err(bad("input", "must be a string or an array of items")),
    }

    let tools = match field(v, "tools") {
        None => Vec::new(),
        Some(Value::Array(list)) => parse_tools(list)?,
        Some(_) => return Err(bad("tools", "must be an array")),
    };

    Ok(Request {
        model,
        system: b.system,
        messages: b.messages,
        tools,
        tool_choice: parse_tool_choice(field(v, "tool_choice"))?,
        parallel_tool_calls: opt_bool(v, "parallel_tool_calls")?,
        max_tokens: opt_u64(v, "max_output_tokens")?,
        temperature: opt_number(v, "temperature")?,
        top_p: opt_number(v, "top_p")?,
        top_k: None,
        stop: Vec::new(),
        stream: opt_bool(v, "stream")?.unwrap_or(false),
        output: parse_text_format(field(v, "text"))?,
        reasoning: parse_reasoning(field(v, "reasoning"))?,
    })
}

fn parse_item(b: &mut Builder, item: &Value, path: &str) -> Result<(), ConvertError> {
    if !item.is_object() {
        return Err(bad(path, "must be an object"));
    }
    let p = format!("{path}.");
    let ty = match opt_str(item, "type", &p)? {
        Some(t) => t,
        // EasyInputMessage: `{role, content}` without a type.
        None if item.get("role").is_some() => "message",
        None => return Err(bad(&format!("{p}type"), "required string is missing")),
    };
    match ty {
        "message" => parse_message(b, item, &p)?,
        "function_call" => {
            let id = req_str(item, "call_id", &p)?;
            let name = req_str(item, "name", &p)?;
            let ns = opt_str(item, "namespace", &p)?;
            b.push(
                Role::Assistant,
                Block::ToolUse {
                    id: id.to_owned(),
                    name: flat_name(ns, name),
                    input: args_object(item.get("arguments")),
                },
            );
        }
        "custom_tool_call" => {
            let id = req_str(item, "call_id", &p)?;
            let name = req_str(item, "name", &p)?;
            let ns = opt_str(item, "namespace", &p)?;
            let input = opt_str(item, "input", &p)?.unwrap_or_default();
            b.push(
                Role::Assistant,
                Block::ToolUse {
                    id: id.to_owned(),
                    name: flat_name(ns, name),
                    input: json!({ "input": input }),
                },
            );
        }
        "local_shell_call" => {
            let id = match opt_str(item, "call_id", &p)? {
                Some(id) => id,
                None => req_str(item, "id", &p)?,
            };
            b.push(
                Role::Assistant,
                Block::ToolUse {
                    id: id.to_owned(),
                    name: "local_shell".to_owned(),
                    input: args_object(item.get("action")),
                },
            );
        }
        "function_call_output" | "custom_tool_call_output" | "local_shell_call_output" => {
            let id = match opt_str(item, "call_id", &p)? {
                Some(id) => id,
                None if ty == "local_shell_call_output" => req_str(item, "id", &p)?,
                None => return Err(bad(&format!("{p}call_id"), "required string is missing")),
            };
            let content = parse_output(item.get("output"), &format!("{p}output"))?;
            b.result(id, content);
        }
        "reasoning" => {
            let text = reasoning_text(item);
            let signature = opt_str(item, "encrypted_content", &p)?.map(str::to_owned);
            if !text.is_empty() || signature.is_some() {
                b.push(Role::Assistant, Block::Thinking { text, signature });
            }
        }
        "item_reference" => {
            return Err(bad(
                path,
                "an item_reference points at server-side state, which cannot be converted to another \
                 API format; send the item itself",
            ));
        }
        // Hosted tool calls and their outputs (web/file search, computer use, MCP, image
        // generation, code interpreter, tool search), compaction items and unknown types.
        _ => {}
    }
    Ok(())
}

fn parse_message(b: &mut Builder, item: &Value, p: &str) -> Result<(), ConvertError> {
    let role = req_str(item, "role", p)?;
    let blocks = parse_content(item.get("content"), &format!("{p}content"))?;
    match role {
        "user" => blocks.into_iter().for_each(|bl| b.push(Role::User, bl)),
        "assistant" => blocks
            .into_iter()
            .filter(|bl| matches!(bl, Block::Text { .. }))
            .for_each(|bl| b.push(Role::Assistant, bl)),
        "system" | "developer" => {
            for bl in blocks {
                if let Block::Text { text } = bl {
                    b.system.push(text);
                }
            }
        }
        _ => {
            return Err(bad(
                &format!("{p}role"),
                "must be user, assistant, system or developer",
            ));
        }
    }
    Ok(())
}

/// Message content: a string or an array of parts.
fn parse_content(v: Option<&Value>, path: &str) -> Result<Vec<Block>, ConvertError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(if s.is_empty() {
            Vec::new()
        } else {
            vec![Block::Text { text: s.clone() }]
        }),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                if let Some(bl) = parse_part(part, &format!("{path}[{i}]"))? {
                    out.push(bl);
                }
            }
            Ok(out)
        }
        Some(_) => Err(bad(path, "must be a string or an array of content parts")),
    }
}

fn parse_part(part: &Value, path: &str) -> Result<Option<Block>, ConvertError> {
    if !part.is_object() {
        return Err(bad(path, "must be an object"));
    }
    let p = format!("{path}.");
    let text = |key: &str| -> Result<Option<Block>, ConvertError> {
        let t = opt_str(part, key, &p)?.unwrap_or_default();
        Ok((!t.is_empty()).then(|| Block::Text { text: t.to_owned() }))
    };
    match str_at(part, "type").unwrap_or_default() {
        "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => text("text"),
        "refusal" => text("refusal"),
        "input_image" | "image_url" => {
            let url = match field(part, "image_url") {
                Some(Value::String(u)) => Some(u.as_str()),
                // Chat's `{ "url": … }` shape, accepted leniently.
                Some(obj @ Value::Object(_)) => str_at(obj, "url"),
                Some(_) => return Err(bad(&format!("{p}image_url"), "must be a string")),
                None => None,
            };
            // An image given only by `file_id` refers to OpenAI's file store: dropped.
            Ok(url.filter(|u| !u.is_empty()).map(image_block))
        }
        // input_file, input_audio and unknown parts.
        _ => Ok(None),
    }
}

/// A tool output: a string, or an array of `input_text` / `input_image` / `input_file` parts.
fn parse_output(v: Option<&Value>, path: &str) -> Result<Vec<Block>, ConvertError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(_)) | Some(Value::String(_)) => parse_content(v, path),
        // Anything else (e.g. an object some clients send) is kept as its JSON text.
        Some(other) => Ok(vec![Block::Text {
            text: json_string(other),
        }]),
    }
}

/// The thinking text of a reasoning item: its summary parts joined by a blank line, or its
/// raw `reasoning_text` content when it has no summary.
fn reasoning_text(item: &Value) -> String {
    let texts = |key: &str| -> Vec<&str> {
        item.get(key)
            .and_then(Value::as_array)
            .map(|parts| parts.iter().filter_map(|p| str_at(p, "text")).collect())
            .unwrap_or_default()
    };
    let summary = texts("summary");
    if summary.is_empty() {
        texts("content").join("")
    } else {
        summary.join("\n\n")
    }
}

fn parse_tools(list: &[Value]) -> Result<Vec<Tool>, ConvertError> {
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let path = format!("tools[{i}]");
        if !t.is_object() {
            return Err(bad(&path, "must be an object"));
        }
        let p = format!("{path}.");
        match str_at(t, "type").unwrap_or_default() {
            "function" => out.push(function_tool(t, None, &p)?),
            "custom" => out.push(custom_tool(t, None, &p)?),
            "namespace" => {
                let ns = req_str(t, "name", &p)?;
                let Some(inner) = field(t, "tools") else {
                    continue;
                };
                let Value::Array(inner) = inner else {
                    return Err(bad(&format!("{p}tools"), "must be an array"));
                };
                for (j, f) in inner.iter().enumerate() {
                    let ip = format!("{p}tools[{j}].");
                    match str_at(f, "type").unwrap_or_default() {
                        "function" => out.push(function_tool(f, Some(ns), &ip)?),
                        "custom" => out.push(custom_tool(f, Some(ns), &ip)?),
                        _ => {}
                    }
                }
            }
            // Hosted tools: web_search(_preview), file_search, computer_use(_preview),
            // code_interpreter, image_generation, mcp, local_shell, shell, apply_patch,
            // tool_search.
            _ => {}
        }
    }
    Ok(out)
}

fn function_tool(t: &Value, ns: Option<&str>, p: &str) -> Result<Tool, ConvertError> {
    let name = req_str(t, "name", p)?;
    let parameters = match field(t, "parameters") {
        None => json!({ "type": "object", "properties": {} }),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(bad(
                &format!("{p}parameters"),
                "must be a JSON Schema object",
            ));
        }
    };
    Ok(Tool {
        name: flat_name(ns, name),
        description: opt_str(t, "description", p)?.map(str::to_owned),
        parameters,
    })
}

/// A freeform tool as a function taking its text in one string parameter, `input`.
fn custom_tool(t: &Value, ns: Option<&str>, p: &str) -> Result<Tool, ConvertError> {
    let name = req_str(t, "name", p)?;
    let mut description = opt_str(t, "description", p)?.unwrap_or_default().to_owned();
    if let Some(format) = field(t, "format")
        && str_at(format, "type") == Some("grammar")
        && let Some(definition) = str_at(format, "definition")
    {
        let syntax = str_at(format, "syntax").unwrap_or("lark");
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!(
            "The `input` argument must follow this {syntax} grammar:\n{definition}"
        ));
    }
    Ok(Tool {
        name: flat_name(ns, name),
        description: (!description.is_empty()).then_some(description),
        parameters: json!({
            "type": "object",
            "properties": { "input": { "type": "string" } },
            "required": ["input"],
            "additionalProperties": false
        }),
    })
}

fn parse_tool_choice(v: Option<&Value>) -> Result<Option<ToolChoice>, ConvertError> {
    Ok(match v {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => {
                return Err(bad(
                    "tool_choice",
                    "must be auto, none, required or an object",
                ));
            }
        },
        Some(obj @ Value::Object(_)) => match str_at(obj, "type").unwrap_or_default() {
            "function" | "custom" => {
                let name = req_str(obj, "name", "tool_choice.")?;
                Some(ToolChoice::Tool(flat_name(str_at(obj, "namespace"), name)))
            }
            "allowed_tools" => Some(if str_at(obj, "mode") == Some("required") {
                ToolChoice::Required
            } else {
                ToolChoice::Auto
            }),
            // A hosted tool forced by type: its tool is dropped, so is the choice.
            _ => None,
        },
        Some(_) => return Err(bad("tool_choice", "must be a string or an object")),
    })
}

fn parse_text_format(text: Option<&Value>) -> Result<Option<OutputFormat>, ConvertError> {
    let Some(text) = text else { return Ok(None) };
    if !text.is_object() {
        return Err(bad("text", "must be an object"));
    }
    let Some(format) = field(text, "format") else {
        return Ok(None);
    };
    if !format.is_object() {
        return Err(bad("text.format", "must be an object"));
    }
    Ok(match str_at(format, "type").unwrap_or_default() {
        "json_object" => Some(OutputFormat::JsonObject),
        "json_schema" => {
            let schema = match field(format, "schema") {
                Some(s @ Value::Object(_)) => s.clone(),
                _ => return Err(bad("text.format.schema", "must be a JSON Schema object")),
            };
            Some(OutputFormat::JsonSchema {
                name: opt_str(format, "name", "text.format.")?
                    .unwrap_or("response")
                    .to_owned(),
                schema,
                strict: format
                    .get("strict")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        }
        // "text" and unknown formats.
        _ => None,
    })
}

fn parse_reasoning(v: Option<&Value>) -> Result<Option<Reasoning>, ConvertError> {
    let Some(r) = v else { return Ok(None) };
    if !r.is_object() {
        return Err(bad("reasoning", "must be an object"));
    }
    let effort = opt_str(r, "effort", "reasoning.")?.and_then(Effort::parse);
    Ok(Some(Reasoning {
        budget_tokens: None,
        effort,
    }))
}

// ---------------------------------------------------------------------------------------------
// Requests: canonical → upstream
// ---------------------------------------------------------------------------------------------

pub(crate) fn render_request(r: &Request) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(r.model));
    if !r.system.is_empty() {
        body.insert("instructions".into(), json!(r.system.join("\n\n")));
    }
    body.insert("input".into(), Value::Array(render_input(&r.messages)));
    if !r.tools.is_empty() {
        let tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                let mut o = Map::new();
                o.insert("type".into(), json!("function"));
                o.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    o.insert("description".into(), json!(d));
                }
                o.insert("parameters".into(), t.parameters.clone());
                // The Responses API defaults `strict` to true, which rejects most schemas.
                o.insert("strict".into(), json!(false));
                Value::Object(o)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &r.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::Required => json!("required"),
            ToolChoice::None => json!("none"),
            ToolChoice::Tool(name) => json!({ "type": "function", "name": name }),
        };
        body.insert("tool_choice".into(), v);
    }
    if let Some(p) = r.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(p));
    }
    if let Some(m) = r.max_tokens {
        body.insert("max_output_tokens".into(), json!(m.max(MIN_OUTPUT_TOKENS)));
    }
    if let Some(t) = &r.temperature {
        body.insert("temperature".into(), Value::Number(t.clone()));
    }
    if let Some(t) = &r.top_p {
        body.insert("top_p".into(), Value::Number(t.clone()));
    }
    if let Some(f) = &r.output {
        let format = match f {
            OutputFormat::JsonObject => json!({ "type": "json_object" }),
            OutputFormat::JsonSchema {
                name,
                schema,
                strict,
            } => json!({
                "type": "json_schema",
                "name": name,
                "schema": schema,
                "strict": strict
            }),
        };
        body.insert("text".into(), json!({ "format": format }));
    }
    if let Some(reasoning) = &r.reasoning {
        let mut o = Map::new();
        if let Some(level) = reasoning.level() {
            o.insert("effort".into(), json!(level.as_str()));
        }
        o.insert("summary".into(), json!("auto"));
        body.insert("reasoning".into(), Value::Object(o));
        // Without server-side storage the reasoning only survives as encrypted content.
        body.insert("include".into(), json!(["reasoning.encrypted_content"]));
    }
    body.insert("store".into(), json!(false));
    body.insert("stream".into(), json!(r.stream));
    Value::Object(body)
}

fn render_input(messages: &[Message]) -> Vec<Value> {
    let mut items = Vec::new();
    for m in messages {
        let mut parts: Vec<Value> = Vec::new();
        let flush = |parts: &mut Vec<Value>, items: &mut Vec<Value>| {
            if !parts.is_empty() {
                let role = if m.role == Role::User {
                    "user"
                } else {
                    "assistant"
                };
                items.push(json!({
                    "type": "message",
                    "role": role,
                    "content": std::mem::take(parts)
                }));
            }
        };
        for (i, block) in m.content.iter().enumerate() {
            match (m.role, block) {
                (Role::User, Block::Text { text }) => {
                    parts.push(json!({ "type": "input_text", "text": text }))
                }
                (Role::User, Block::Image { source }) => parts.push(input_image(source)),
                (Role::User, Block::ToolResult { id, content, .. }) => {
                    flush(&mut parts, &mut items);
                    items.push(json!({
                        "type": "function_call_output",
                        "call_id": id,
                        "output": render_output(content)
                    }));
                }
                (Role::Assistant, Block::Text { text }) => {
                    parts.push(json!({ "type": "output_text", "text": text, "annotations": [] }));
                }
                (Role::Assistant, Block::ToolUse { id, name, input }) => {
                    flush(&mut parts, &mut items);
                    items.push(json!({
                        "type": "function_call",
                        "call_id": id,
                        "name": name,
                        "arguments": json_string(input)
                    }));
                }
                (Role::Assistant, Block::Thinking { text, signature }) => {
                    // Only OpenAI's own encrypted reasoning can be sent back (without it,
                    // and with `store: false`, the item would be refused), and only with the
                    // item it led to after it (the API refuses a reasoning item without one).
                    let followed = m.content.get(i + 1..).is_some_and(|rest| {
                        rest.iter()
                            .any(|b| matches!(b, Block::Text { .. } | Block::ToolUse { .. }))
                    });
                    if let Some(sig) = signature
                        .as_deref()
                        .filter(|s| followed && is_openai_encrypted(s))
                    {
                        flush(&mut parts, &mut items);
                        let summary: Vec<Value> = if text.is_empty() {
                            Vec::new()
                        } else {
                            vec![json!({ "type": "summary_text", "text": text })]
                        };
                        items.push(json!({
                            "type": "reasoning",
                            "summary": summary,
                            "encrypted_content": sig
                        }));
                    }
                }
                // Images in assistant turns, tool results from the assistant, tool calls
                // and thinking from the user: no Responses item holds them.
                _ => {}
            }
        }
        flush(&mut parts, &mut items);
    }
    items
}

fn input_image(source: &ImageSource) -> Value {
    json!({ "type": "input_image", "image_url": image_url(source), "detail": "auto" })
}

/// A tool result's `output`: a string when it is only text, else content parts.
fn render_output(content: &[Block]) -> Value {
    let only_text = content.iter().all(|b| matches!(b, Block::Text { .. }));
    if only_text {
        let text: String = content
            .iter()
            .filter_map(|b| match b {
                Block::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        return Value::String(text);
    }
    let parts: Vec<Value> = content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => Some(json!({ "type": "input_text", "text": text })),
            Block::Image { source } => Some(input_image(source)),
            _ => None,
        })
        .collect();
    Value::Array(parts)
}

// ---------------------------------------------------------------------------------------------
// Responses (non-streamed)
// ---------------------------------------------------------------------------------------------

pub(crate) fn parse_response(v: &Value) -> Result<Response, ConvertError> {
    if !v.is_object() {
        return Err(ConvertError::invalid("body: must be a JSON object"));
    }
    let status = str_at(v, "status").unwrap_or("completed");
    if status == "failed" {
        let msg = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("the response failed");
        return Err(bad("status", &format!("failed: {msg}")));
    }
    let output = match field(v, "output") {
        None => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => return Err(bad("output", "must be an array")),
    };
    let mut content = Vec::new();
    let mut refusal = false;
    for item in output {
        match str_at(item, "type").unwrap_or_default() {
            "message" => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let text = match str_at(part, "type") {
                        Some("output_text") => str_at(part, "text"),
                        Some("refusal") => {
                            refusal = true;
                            str_at(part, "refusal")
                        }
                        _ => None,
                    };
                    if let Some(t) = text.filter(|t| !t.is_empty()) {
                        content.push(Block::Text { text: t.to_owned() });
                    }
                }
            }
            "reasoning" => {
                let text = reasoning_text(item);
                let signature = str_at(item, "encrypted_content").map(str::to_owned);
                if !text.is_empty() || signature.is_some() {
                    content.push(Block::Thinking { text, signature });
                }
            }
            "function_call" => content.push(Block::ToolUse {
                id: call_id_of(item),
                name: flat_name(
                    str_at(item, "namespace"),
                    str_at(item, "name").unwrap_or_default(),
                ),
                input: args_object(item.get("arguments")),
            }),
            "custom_tool_call" => content.push(Block::ToolUse {
                id: call_id_of(item),
                name: flat_name(
                    str_at(item, "namespace"),
                    str_at(item, "name").unwrap_or_default(),
                ),
                input: json!({ "input": str_at(item, "input").unwrap_or_default() }),
            }),
            // Hosted tool calls and anything unknown.
            _ => {}
        }
    }
    let has_calls = content.iter().any(|b| matches!(b, Block::ToolUse { .. }));
    let stop = stop_of(
        status,
        v.pointer("/incomplete_details/reason")
            .and_then(Value::as_str),
        has_calls,
        refusal,
    );
    Ok(Response {
        id: str_at(v, "id").unwrap_or_default().to_owned(),
        model: str_at(v, "model").unwrap_or_default().to_owned(),
        content,
        stop,
        usage: v.get("usage").map(usage_of).unwrap_or_default(),
    })
}

fn call_id_of(item: &Value) -> String {
    str_at(item, "call_id")
        .or_else(|| str_at(item, "id"))
        .map_or_else(|| fresh_id("call_"), str::to_owned)
}

fn stop_of(status: &str, reason: Option<&str>, has_calls: bool, refusal: bool) -> StopReason {
    if status == "incomplete" {
        return match reason {
            Some("content_filter") => StopReason::ContentFilter,
            Some("max_output_tokens") | None => StopReason::MaxTokens,
            Some(_) => StopReason::EndTurn,
        };
    }
    if has_calls {
        StopReason::ToolUse
    } else if refusal {
        StopReason::ContentFilter
    } else {
        StopReason::EndTurn
    }
}

fn usage_of(u: &Value) -> Usage {
    let nested = |obj: &str, key: &str| u.get(obj).and_then(|d| u64_at(d, key)).unwrap_or(0);
    Usage {
        input: u64_at(u, "input_tokens").unwrap_or(0),
        output: u64_at(u, "output_tokens").unwrap_or(0),
        cache_read: nested("input_tokens_details", "cached_tokens"),
        cache_write: 0,
        reasoning: nested("output_tokens_details", "reasoning_tokens"),
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": { "cached_tokens": u.cache_read },
        "output_tokens": u.output,
        "output_tokens_details": { "reasoning_tokens": u.reasoning },
        "total_tokens": u.input.saturating_add(u.output)
    })
}

/// `status` and `incomplete_details` for a stop reason.
fn status_of(stop: &StopReason) -> (&'static str, Value) {
    match stop {
        StopReason::MaxTokens => ("incomplete", json!({ "reason": "max_output_tokens" })),
        StopReason::ContentFilter => ("incomplete", json!({ "reason": "content_filter" })),
        _ => ("completed", Value::Null),
    }
}

/// A Response object with every field the SDKs read.
fn response_object(
    id: &str,
    model: &str,
    created_at: u64,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": { "effort": null, "summary": null },
        "store": false,
        "temperature": null,
        "text": { "format": { "type": "text" } },
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage.map_or(Value::Null, usage_json),
        "metadata": {}
    })
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "content": [output_text_part(text)],
        "role": "assistant"
    })
}

fn output_text_part(text: &str) -> Value {
    json!({ "type": "output_text", "annotations": [], "logprobs": [], "text": text })
}

fn reasoning_item(id: &str, text: &str, summarized: bool, signature: Option<&str>) -> Value {
    let summary: Vec<Value> = if summarized {
        vec![json!({ "type": "summary_text", "text": text })]
    } else {
        Vec::new()
    };
    let mut item = json!({ "id": id, "type": "reasoning", "summary": summary });
    if let (Some(sig), Some(o)) = (signature, item.as_object_mut()) {
        o.insert("encrypted_content".into(), json!(sig));
    }
    item
}

fn call_item(id: &str, status: &str, call_id: &str, flat: &str, arguments: &str) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert("type".into(), json!("function_call"));
    o.insert("status".into(), json!(status));
    o.insert("arguments".into(), json!(arguments));
    o.insert("call_id".into(), json!(call_id));
    put_name(&mut o, flat);
    Value::Object(o)
}

pub(crate) fn render_response(r: &Response) -> Value {
    let id = response_id(&r.id);
    let mut output = Vec::new();
    for block in &r.content {
        let n = output.len();
        match block {
            Block::Text { text } => {
                output.push(message_item(&item_id("msg", &id, n), "completed", text))
            }
            Block::Thinking { text, signature } => output.push(reasoning_item(
                &item_id("rs", &id, n),
                text,
                !text.is_empty(),
                signature.as_deref(),
            )),
            Block::ToolUse {
                id: call_id,
                name,
                input,
            } => output.push(call_item(
                &item_id("fc", &id, n),
                "completed",
                call_id,
                name,
                &json_string(input),
            )),
            Block::Image { .. } | Block::ToolResult { .. } => {}
        }
    }
    let (status, incomplete) = status_of(&r.stop);
    response_object(
        &id,
        &r.model,
        unix_now(),
        status,
        incomplete,
        output,
        Some(&r.usage),
    )
}

// ---------------------------------------------------------------------------------------------
// Stream decoder: upstream Responses events → canonical
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    Tool,
}

/// The canonical block open for one upstream output item.
struct Open {
    index: usize,
    kind: Kind,
    item_id: Option<String>,
    output_index: Option<u64>,
    /// Everything emitted into the block, to send only what a `done` event adds.
    emitted: String,
    /// The reasoning summary part being streamed.
    part: Option<u64>,
}

impl Open {
    fn is(&self, kind: Kind, item_id: Option<&str>, output_index: Option<u64>) -> bool {
        if self.kind != kind {
            return false;
        }
        match (self.item_id.as_deref(), item_id) {
            (Some(a), Some(b)) => a == b,
            _ => match (self.output_index, output_index) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
        }
    }
}

/// What `output_item.added` said about a function call.
struct CallInfo {
    item_id: Option<String>,
    output_index: Option<u64>,
    call_id: String,
    name: String,
}

#[derive(Default)]
pub(crate) struct Decoder {
    started: bool,
    /// A `Finish` or an `Error` was emitted: the rest is ignored.
    done: bool,
    next: usize,
    open: Option<Open>,
    calls: Vec<CallInfo>,
    saw_tool: bool,
    refusal: bool,
}

impl Decoder {
    fn start(&mut self, resp: Option<&Value>, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = resp
            .and_then(|r| str_at(r, "id"))
            .map_or_else(|| fresh_id("resp_"), str::to_owned);
        let model = resp
            .and_then(|r| str_at(r, "model"))
            .unwrap_or_default()
            .to_owned();
        out.push(Event::Start { id, model });
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some(open) = self.open.take() {
            if open.kind == Kind::Tool && open.emitted.trim().is_empty() {
                out.push(Event::Delta {
                    index: open.index,
                    delta: Delta::ToolArgs("{}".to_owned()),
                });
            }
            out.push(Event::BlockStop { index: open.index });
        }
    }

    /// The index of the block for this item, opening it (and closing another) if needed.
    fn ensure(
        &mut self,
        kind: Kind,
        item_id: Option<&str>,
        output_index: Option<u64>,
        out: &mut Vec<Event>,
    ) -> usize {
        if let Some(open) = &self.open
            && open.is(kind, item_id, output_index)
        {
            return open.index;
        }
        self.close(out);
        let index = self.next;
        self.next += 1;
        let block = match kind {
            Kind::Text => BlockKind::Text,
            Kind::Thinking => BlockKind::Thinking,
            Kind::Tool => {
                self.saw_tool = true;
                let info = self
                    .calls
                    .iter()
                    .rev()
                    .find(|c| match (&c.item_id, item_id) {
                        (Some(a), Some(b)) => a == b,
                        _ => c.output_index.is_some() && c.output_index == output_index,
                    });
                match info {
                    Some(c) => BlockKind::ToolUse {
                        id: c.call_id.clone(),
                        name: c.name.clone(),
                    },
                    None => BlockKind::ToolUse {
                        id: fresh_id("call_"),
                        name: String::new(),
                    },
                }
            }
        };
        out.push(Event::BlockStart { index, kind: block });
        self.open = Some(Open {
            index,
            kind,
            item_id: item_id.map(str::to_owned),
            output_index,
            emitted: String::new(),
            part: None,
        });
        index
    }

    fn delta(
        &mut self,
        kind: Kind,
        item_id: Option<&str>,
        output_index: Option<u64>,
        text: &str,
        out: &mut Vec<Event>,
    ) {
        if text.is_empty() {
            return;
        }
        let index = self.ensure(kind, item_id, output_index, out);
        if let Some(open) = &mut self.open {
            open.emitted.push_str(text);
        }
        let delta = match kind {
            Kind::Text => Delta::Text(text.to_owned()),
            Kind::Thinking => Delta::Thinking(text.to_owned()),
            Kind::Tool => Delta::ToolArgs(text.to_owned()),
        };
        out.push(Event::Delta { index, delta });
    }

    /// Emits what a final text adds to what was streamed (all of it when nothing was).
    fn finish_text(
        &mut self,
        kind: Kind,
        item_id: Option<&str>,
        output_index: Option<u64>,
        full: &str,
        out: &mut Vec<Event>,
    ) {
        let emitted = match &self.open {
            Some(open) if open.is(kind, item_id, output_index) => open.emitted.as_str(),
            _ => "",
        };
        if let Some(rest) = full.strip_prefix(emitted)
            && !rest.is_empty()
        {
            let rest = rest.to_owned();
            self.delta(kind, item_id, output_index, &rest, out);
        }
    }

    /// Starts reasoning summary part `part`, separating it from the previous one.
    fn summary_part(
        &mut self,
        item_id: Option<&str>,
        output_index: Option<u64>,
        part: u64,
        out: &mut Vec<Event>,
    ) {
        let sep = match &mut self.open {
            Some(open) if open.is(Kind::Thinking, item_id, output_index) => {
                let sep = open.part.is_some_and(|p| p != part) && !open.emitted.is_empty();
                open.part = Some(part);
                sep
            }
            _ => false,
        };
        if sep {
            self.delta(Kind::Thinking, item_id, output_index, "\n\n", out);
        }
    }

    fn item_added(&mut self, ev: &Value, out: &mut Vec<Event>) {
        let Some(item) = ev.get("item") else { return };
        if str_at(item, "type") != Some("function_call") {
            // Messages and reasoning open lazily, on their first content.
            return;
        }
        let item_id = str_at(item, "id");
        let output_index = u64_at(ev, "output_index");
        self.calls.push(CallInfo {
            item_id: item_id.map(str::to_owned),
            output_index,
            call_id: call_id_of(item),
            name: flat_name(
                str_at(item, "namespace"),
                str_at(item, "name").unwrap_or_default(),
            ),
        });
        self.ensure(Kind::Tool, item_id, output_index, out);
        if let Some(args) = str_at(item, "arguments") {
            self.finish_text(Kind::Tool, item_id, output_index, args, out);
        }
    }

    fn item_done(&mut self, ev: &Value, out: &mut Vec<Event>) {
        let Some(item) = ev.get("item") else { return };
        let item_id = str_at(item, "id");
        let output_index = u64_at(ev, "output_index");
        match str_at(item, "type").unwrap_or_default() {
            "message" => {
                let mut full = String::new();
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match str_at(part, "type") {
                        Some("output_text") => {
                            full.push_str(str_at(part, "text").unwrap_or_default())
                        }
                        Some("refusal") => {
                            self.refusal = true;
                            full.push_str(str_at(part, "refusal").unwrap_or_default());
                        }
                        _ => {}
                    }
                }
                self.finish_text(Kind::Text, item_id, output_index, &full, out);
                self.close_if(Kind::Text, item_id, output_index, out);
            }
            "reasoning" => {
                let full = reasoning_text(item);
                self.finish_text(Kind::Thinking, item_id, output_index, &full, out);
                if let Some(sig) = str_at(item, "encrypted_content").filter(|s| !s.is_empty()) {
                    let index = self.ensure(Kind::Thinking, item_id, output_index, out);
                    out.push(Event::Delta {
                        index,
                        delta: Delta::Signature(sig.to_owned()),
                    });
                }
                self.close_if(Kind::Thinking, item_id, output_index, out);
            }
            "function_call" => {
                if !self
                    .calls
                    .iter()
                    .any(|c| c.item_id.as_deref() == item_id && item_id.is_some())
                {
                    self.calls.push(CallInfo {
                        item_id: item_id.map(str::to_owned),
                        output_index,
                        call_id: call_id_of(item),
                        name: flat_name(
                            str_at(item, "namespace"),
                            str_at(item, "name").unwrap_or_default(),
                        ),
                    });
                }
                self.ensure(Kind::Tool, item_id, output_index, out);
                let args = str_at(item, "arguments").unwrap_or_default();
                self.finish_text(Kind::Tool, item_id, output_index, args, out);
                self.close(out);
            }
            _ => {}
        }
    }

    fn close_if(
        &mut self,
        kind: Kind,
        item_id: Option<&str>,
        output_index: Option<u64>,
        out: &mut Vec<Event>,
    ) {
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.is(kind, item_id, output_index))
        {
            self.close(out);
        }
    }

    /// `response.completed` / `response.incomplete`.
    fn terminal(&mut self, ev: &Value, out: &mut Vec<Event>) {
        self.close(out);
        let resp = ev.get("response");
        if self.next == 0 {
            // Nothing was streamed item by item: take the output of the final response.
            let items = resp.and_then(|r| r.get("output")).and_then(Value::as_array);
            for (i, item) in items.into_iter().flatten().enumerate() {
                let synthetic = json!({ "item": item, "output_index": i });
                self.item_added(&synthetic, out);
                self.item_done(&synthetic, out);
            }
            self.close(out);
        }
        if let Some(u) = resp.and_then(|r| r.get("usage")).filter(|u| u.is_object()) {
            out.push(Event::Usage(usage_of(u)));
        }
        let status = resp.and_then(|r| str_at(r, "status")).unwrap_or(
            if str_at(ev, "type") == Some("response.incomplete") {
                "incomplete"
            } else {
                "completed"
            },
        );
        let reason = resp
            .and_then(|r| r.pointer("/incomplete_details/reason"))
            .and_then(Value::as_str);
        out.push(Event::Finish {
            stop: stop_of(status, reason, self.saw_tool, self.refusal),
        });
        self.done = true;
    }

    fn failed(&mut self, err: Option<&Value>, out: &mut Vec<Event>) {
        let code = err.and_then(|e| str_at(e, "code"));
        let ty = err.and_then(|e| str_at(e, "type"));
        let message = err
            .and_then(|e| str_at(e, "message"))
            .filter(|m| !m.is_empty())
            .unwrap_or("the upstream response failed")
            .to_owned();
        out.push(Event::Error {
            kind: error_kind(code.or(ty)),
            message,
        });
        self.done = true;
    }
}

/// The error class of a Responses error `code` (or `type`).
fn error_kind(code: Option<&str>) -> ErrorKind {
    match code.unwrap_or_default() {
        "rate_limit_exceeded"
        | "insufficient_quota"
        | "rate_limit_error"
        | "tokens"
        | "requests" => ErrorKind::RateLimited,
        "server_is_overloaded" | "overloaded" | "overloaded_error" | "slow_down" => {
            ErrorKind::Overloaded
        }
        "invalid_prompt"
        | "context_length_exceeded"
        | "invalid_request_error"
        | "invalid_image"
        | "invalid_image_format"
        | "invalid_base64_image"
        | "image_too_large"
        | "empty_image_file" => ErrorKind::InvalidRequest,
        "authentication_error" | "invalid_api_key" => ErrorKind::Authentication,
        "permission_error" => ErrorKind::PermissionDenied,
        "timeout" | "request_timeout" => ErrorKind::Timeout,
        _ => ErrorKind::UpstreamError,
    }
}

impl StreamDecoder for Decoder {
    fn event(&mut self, name: Option<&str>, data: &str, out: &mut Vec<Event>) {
        if self.done {
            return;
        }
        let Ok(ev) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if !ev.is_object() {
            return;
        }
        let Some(ty) = str_at(&ev, "type").or(name) else {
            return;
        };
        let ty = ty.to_owned();
        if ty == "error" {
            // The flat SDK shape, or the nested production one.
            let err = if ev.get("message").is_some() {
                Some(&ev)
            } else {
                ev.get("error")
            };
            self.start(None, out);
            self.failed(err, out);
            return;
        }
        if !ty.starts_with("response.") {
            return;
        }
        self.start(ev.get("response"), out);
        let item_id = str_at(&ev, "item_id").map(str::to_owned);
        let item_id = item_id.as_deref();
        let output_index = u64_at(&ev, "output_index");
        let delta = str_at(&ev, "delta").unwrap_or_default().to_owned();
        match ty.as_str() {
            "response.output_item.added" => self.item_added(&ev, out),
            "response.output_item.done" => self.item_done(&ev, out),
            "response.output_text.delta" => {
                self.delta(Kind::Text, item_id, output_index, &delta, out)
            }
            "response.refusal.delta" => {
                self.refusal = true;
                self.delta(Kind::Text, item_id, output_index, &delta, out);
            }
            "response.reasoning_summary_part.added" => {
                if let Some(part) = u64_at(&ev, "summary_index") {
                    self.summary_part(item_id, output_index, part, out);
                }
            }
            "response.reasoning_summary_text.delta" => {
                if delta.is_empty() {
                    return;
                }
                let part = u64_at(&ev, "summary_index").unwrap_or(0);
                self.ensure(Kind::Thinking, item_id, output_index, out);
                self.summary_part(item_id, output_index, part, out);
                self.delta(Kind::Thinking, item_id, output_index, &delta, out);
            }
            "response.reasoning_text.delta" => {
                self.delta(Kind::Thinking, item_id, output_index, &delta, out)
            }
            "response.function_call_arguments.delta" => {
                self.delta(Kind::Tool, item_id, output_index, &delta, out)
            }
            "response.function_call_arguments.done" => {
                if let Some(args) = str_at(&ev, "arguments") {
                    self.ensure(Kind::Tool, item_id, output_index, out);
                    self.finish_text(Kind::Tool, item_id, output_index, args, out);
                }
            }
            "response.completed" | "response.incomplete" | "response.done" => {
                self.terminal(&ev, out)
            }
            "response.failed" => {
                let resp = ev.get("response");
                if let Some(u) = resp.and_then(|r| r.get("usage")).filter(|u| u.is_object()) {
                    out.push(Event::Usage(usage_of(u)));
                }
                self.failed(
                    resp.and_then(|r| r.get("error")).filter(|e| e.is_object()),
                    out,
                );
            }
            // created / in_progress (handled by `start`), content_part and *.done events
            // (the item's `output_item.done` carries the final text), hosted tool progress.
            _ => {}
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if !self.done {
            self.close(out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream encoder: canonical → Responses events
// ---------------------------------------------------------------------------------------------

enum Body {
    Message {
        text: String,
    },
    Reasoning {
        text: String,
        signature: Option<String>,
        part: bool,
    },
    Call {
        call_id: String,
        name: String,
        args: String,
    },
}

struct Item {
    /// The canonical block it renders.
    block: usize,
    output_index: usize,
    id: String,
    body: Body,
}

#[derive(Default)]
pub(crate) struct Encoder {
    seq: u64,
    started: bool,
    ended: bool,
    id: String,
    model: String,
    created_at: u64,
    output: Vec<Value>,
    open: Option<Item>,
    usage: Usage,
    stop: Option<StopReason>,
    calls: bool,
}

impl Encoder {
    fn emit(&mut self, out: &mut Vec<Frame>, ty: &'static str, fields: Value) {
        let mut o = Map::new();
        o.insert("type".into(), json!(ty));
        o.insert("sequence_number".into(), json!(self.seq));
        if let Value::Object(f) = fields {
            o.extend(f);
        }
        self.seq += 1;
        out.push(Frame::named(ty, json_string(&Value::Object(o))));
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<Frame>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = response_id(id);
        self.model = model.to_owned();
        self.created_at = unix_now();
        let resp = response_object(
            &self.id,
            &self.model,
            self.created_at,
            "in_progress",
            Value::Null,
            Vec::new(),
            None,
        );
        self.emit(out, "response.created", json!({ "response": resp }));
        self.emit(out, "response.in_progress", json!({ "response": resp }));
    }

    fn open_item(&mut self, block: usize, kind: &BlockKind, out: &mut Vec<Frame>) {
        self.close(out);
        let output_index = self.output.len();
        let (id, body, item) = match kind {
            BlockKind::Text => {
                let id = item_id("msg", &self.id, output_index);
                let item = json!({
                    "id": id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"
                });
                (
                    id,
                    Body::Message {
                        text: String::new(),
                    },
                    item,
                )
            }
            BlockKind::Thinking => {
                let id = item_id("rs", &self.id, output_index);
                let item = json!({ "id": id, "type": "reasoning", "summary": [] });
                let body = Body::Reasoning {
                    text: String::new(),
                    signature: None,
                    part: false,
                };
                (id, body, item)
            }
            BlockKind::ToolUse { id: call_id, name } => {
                let id = item_id("fc", &self.id, output_index);
                let call_id = if call_id.is_empty() {
                    fresh_id("call_")
                } else {
                    call_id.clone()
                };
                let item = call_item(&id, "in_progress", &call_id, name, "");
                let body = Body::Call {
                    call_id,
                    name: name.clone(),
                    args: String::new(),
                };
                (id, body, item)
            }
        };
        self.emit(
            out,
            "response.output_item.added",
            json!({ "output_index": output_index, "item": item }),
        );
        if matches!(body, Body::Message { .. }) {
            self.emit(
                out,
                "response.content_part.added",
                json!({
                    "item_id": id, "output_index": output_index, "content_index": 0,
                    "part": output_text_part("")
                }),
            );
        }
        self.open = Some(Item {
            block,
            output_index,
            id,
            body,
        });
    }

    fn close(&mut self, out: &mut Vec<Frame>) {
        let Some(item) = self.open.take() else { return };
        let (id, oi) = (item.id, item.output_index);
        let done = match item.body {
            Body::Message { text } => {
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({ "item_id": id, "output_index": oi, "content_index": 0, "text": text, "logprobs": [] }),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({ "item_id": id, "output_index": oi, "content_index": 0, "part": output_text_part(&text) }),
                );
                message_item(&id, "completed", &text)
            }
            Body::Reasoning {
                text,
                signature,
                part,
            } => {
                if part {
                    self.emit(
                        out,
                        "response.reasoning_summary_text.done",
                        json!({ "item_id": id, "output_index": oi, "summary_index": 0, "text": text }),
                    );
                    self.emit(
                        out,
                        "response.reasoning_summary_part.done",
                        json!({
                            "item_id": id, "output_index": oi, "summary_index": 0,
                            "part": { "type": "summary_text", "text": text }
                        }),
                    );
                }
                reasoning_item(&id, &text, part, signature.as_deref())
            }
            Body::Call {
                call_id,
                name,
                mut args,
            } => {
                if args.trim().is_empty() {
                    // Every call's arguments are a JSON object.
                    args = "{}".to_owned();
                    self.emit(
                        out,
                        "response.function_call_arguments.delta",
                        json!({ "item_id": id, "output_index": oi, "delta": args }),
                    );
                }
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({ "item_id": id, "output_index": oi, "arguments": args }),
                );
                self.calls = true;
                call_item(&id, "completed", &call_id, &name, &args)
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({ "output_index": oi, "item": done }),
        );
        self.output.push(done);
    }

    fn delta(&mut self, block: usize, delta: &Delta, out: &mut Vec<Frame>) {
        let fits = |b: &Body| {
            matches!(
                (b, delta),
                (Body::Message { .. }, Delta::Text(_))
                    | (
                        Body::Reasoning { .. },
                        Delta::Thinking(_) | Delta::Signature(_)
                    )
                    | (Body::Call { .. }, Delta::ToolArgs(_))
            )
        };
        if !self
            .open
            .as_ref()
            .is_some_and(|i| i.block == block && fits(&i.body))
        {
            // A delta for a block never started (or of another kind) opens one.
            let kind = match delta {
                Delta::Text(_) => BlockKind::Text,
                Delta::Thinking(_) | Delta::Signature(_) => BlockKind::Thinking,
                Delta::ToolArgs(_) => BlockKind::ToolUse {
                    id: fresh_id("call_"),
                    name: String::new(),
                },
            };
            self.open_item(block, &kind, out);
        }
        let Some(item) = self.open.as_mut() else {
            return;
        };
        let (id, oi) = (item.id.clone(), item.output_index);
        let mut frames: Vec<(&'static str, Value)> = Vec::new();
        match (&mut item.body, delta) {
            (Body::Message { text }, Delta::Text(d)) if !d.is_empty() => {
                text.push_str(d);
                frames.push((
                    "response.output_text.delta",
                    json!({ "item_id": id, "output_index": oi, "content_index": 0, "delta": d, "logprobs": [] }),
                ));
            }
            (Body::Reasoning { text, part, .. }, Delta::Thinking(d)) if !d.is_empty() => {
                text.push_str(d);
                if !*part {
                    *part = true;
                    frames.push((
                        "response.reasoning_summary_part.added",
                        json!({
                            "item_id": id, "output_index": oi, "summary_index": 0,
                            "part": { "type": "summary_text", "text": "" }
                        }),
                    ));
                }
                frames.push((
                    "response.reasoning_summary_text.delta",
                    json!({ "item_id": id, "output_index": oi, "summary_index": 0, "delta": d }),
                ));
            }
            (Body::Reasoning { signature, .. }, Delta::Signature(s)) => {
                signature.get_or_insert_with(String::new).push_str(s);
            }
            (Body::Call { args, .. }, Delta::ToolArgs(d)) if !d.is_empty() => {
                args.push_str(d);
                frames.push((
                    "response.function_call_arguments.delta",
                    json!({ "item_id": id, "output_index": oi, "delta": d }),
                ));
            }
            _ => {}
        }
        for (ty, fields) in frames {
            self.emit(out, ty, fields);
        }
    }
}

impl StreamEncoder for Encoder {
    fn event(&mut self, e: &Event, out: &mut Vec<Frame>) {
        if self.ended {
            return;
        }
        if let Event::Start { id, model } = e {
            self.start(id, model, out);
            return;
        }
        self.start("", "", out);
        match e {
            Event::BlockStart { index, kind } => self.open_item(*index, kind, out),
            Event::Delta { index, delta } => self.delta(*index, delta, out),
            Event::BlockStop { index } => {
                if self.open.as_ref().is_some_and(|i| i.block == *index) {
                    self.close(out);
                }
            }
            Event::Usage(u) => self.usage = self.usage.merge(*u),
            Event::Finish { stop } => self.stop = Some(stop.clone()),
            Event::Start { .. } | Event::Error { .. } => {}
        }
    }

    fn end(&mut self, out: &mut Vec<Frame>) {
        if self.ended {
            return;
        }
        self.start("", "", out);
        self.close(out);
        self.ended = true;
        let stop = self.stop.clone().unwrap_or(if self.calls {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        });
        let (status, incomplete) = status_of(&stop);
        let resp = response_object(
            &self.id,
            &self.model,
            self.created_at,
            status,
            incomplete,
            std::mem::take(&mut self.output),
            Some(&self.usage),
        );
        let ty = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, ty, json!({ "response": resp }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Framing, Transcoder};
    use aether_domain::format::Dialect;
    use aether_protocol::sse::SseDecoder;

    fn parse(v: &Value) -> Request {
        parse_request(v, &RequestContext::default()).unwrap()
    }

    fn text(t: &str) -> Block {
        Block::Text { text: t.into() }
    }

    fn num(f: f64) -> Number {
        Number::from_f64(f).unwrap()
    }

    /// A multi-turn Codex-like request: instructions and a developer message, an image, a
    /// reasoning item, two parallel calls (one namespaced) and their outputs, tools of every
    /// kind, structured output and sampling settings.
    fn client_request() -> Value {
        json!({
            "model": "gpt-5",
            "instructions": "You are a coding agent.",
            "input": [
                { "type": "message", "role": "developer", "content": [{ "type": "input_text", "text": "Sandbox: read-only." }] },
                { "type": "message", "role": "user", "content": [
                    { "type": "input_text", "text": "What is in this picture? Then list files." },
                    { "type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high" },
                    { "type": "input_file", "file_id": "file_1" }
                ]},
                { "type": "reasoning", "id": "rs_1", "summary": [
                    { "type": "summary_text", "text": "**Looking**" },
                    { "type": "summary_text", "text": "Then list." }
                ], "encrypted_content": "gAAAAABenc" },
                { "type": "message", "role": "assistant", "content": [{ "type": "output_text", "text": "A cat.", "annotations": [] }] },
                { "type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}" },
                { "type": "function_call", "call_id": "call_b", "name": "spawn_agent", "namespace": "multi_agent_v1", "arguments": "{\"task\":\"review\"}" },
                { "type": "function_call_output", "call_id": "call_a", "output": "README.md\nsrc" },
                { "type": "function_call_output", "call_id": "call_b", "output": [
                    { "type": "input_text", "text": "agent started" },
                    { "type": "input_image", "image_url": "https://example.com/a.png" }
                ]},
                { "type": "web_search_call", "id": "ws_1", "status": "completed", "action": { "type": "search", "query": "x" } },
                { "role": "user", "content": "Thanks. Summarise as JSON." }
            ],
            "tools": [
                { "type": "function", "name": "exec_command", "description": "Run a command.", "strict": false,
                  "parameters": { "type": "object", "properties": { "cmd": { "type": "string" } }, "required": ["cmd"] } },
                { "type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
                    { "type": "function", "name": "spawn_agent", "parameters": { "type": "object", "properties": { "task": { "type": "string" } } } }
                ]},
                { "type": "custom", "name": "apply_patch", "description": "Edit files.",
                  "format": { "type": "grammar", "syntax": "lark", "definition": "start: patch" } },
                { "type": "web_search", "external_web_access": false }
            ],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "max_output_tokens": 2048,
            "temperature": 0.2,
            "top_p": 0.9,
            "text": { "format": { "type": "json_schema", "name": "summary", "strict": true,
                      "schema": { "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"] } },
                      "verbosity": "low" },
            "reasoning": { "effort": "high", "summary": "auto" },
            "stream": true,
            "store": false,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "abc",
            "client_metadata": { "x": "y" }
        })
    }

    fn canonical_request() -> Request {
        Request {
            model: "gpt-5".into(),
            system: vec!["You are a coding agent.".into(), "Sandbox: read-only.".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("What is in this picture? Then list files."),
                        Block::Image {
                            source: ImageSource::Base64 {
                                media_type: "image/png".into(),
                                data: "iVBORw0KGgo=".into(),
                            },
                        },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Block::Thinking {
                            text: "**Looking**\n\nThen list.".into(),
                            signature: Some("gAAAAABenc".into()),
                        },
                        text("A cat."),
                        Block::ToolUse {
                            id: "call_a".into(),
                            name: "exec_command".into(),
                            input: json!({ "cmd": "ls" }),
                        },
                        Block::ToolUse {
                            id: "call_b".into(),
                            name: "multi_agent_v1--spawn_agent".into(),
                            input: json!({ "task": "review" }),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Block::ToolResult {
                            id: "call_a".into(),
                            name: "exec_command".into(),
                            content: vec![text("README.md\nsrc")],
                            is_error: false,
                        },
                        Block::ToolResult {
                            id: "call_b".into(),
                            name: "multi_agent_v1--spawn_agent".into(),
                            content: vec![
                                text("agent started"),
                                Block::Image {
                                    source: ImageSource::Url {
                                        url: "https://example.com/a.png".into(),
                                    },
                                },
                            ],
                            is_error: false,
                        },
                        text("Thanks. Summarise as JSON."),
                    ],
                },
            ],
            tools: vec![
                Tool {
                    name: "exec_command".into(),
                    description: Some("Run a command.".into()),
                    parameters: json!({ "type": "object", "properties": { "cmd": { "type": "string" } }, "required": ["cmd"] }),
                },
                Tool {
                    name: "multi_agent_v1--spawn_agent".into(),
                    description: None,
                    parameters: json!({ "type": "object", "properties": { "task": { "type": "string" } } }),
                },
                Tool {
                    name: "apply_patch".into(),
                    description: Some(
                        "Edit files.\n\nThe `input` argument must follow this lark grammar:\nstart: patch".into(),
                    ),
                    parameters: json!({
                        "type": "object",
                        "properties": { "input": { "type": "string" } },
                        "required": ["input"],
                        "additionalProperties": false
                    }),
                },
            ],
            tool_choice: Some(ToolChoice::Required),
            parallel_tool_calls: Some(false),
            max_tokens: Some(2048),
            temperature: Some(num(0.2)),
            top_p: Some(num(0.9)),
            top_k: None,
            stop: vec![],
            stream: true,
            output: Some(OutputFormat::JsonSchema {
                name: "summary".into(),
                schema: json!({ "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"] }),
                strict: true,
            }),
            reasoning: Some(Reasoning {
                budget_tokens: None,
                effort: Some(Effort::High),
            }),
        }
    }

    #[test]
    fn parses_a_multi_turn_request() {
        assert_eq!(parse(&client_request()), canonical_request());
    }

    #[test]
    fn renders_a_request_for_an_upstream() {
        let body = render_request(&canonical_request());
        assert_eq!(
            body,
            json!({
                "model": "gpt-5",
                "instructions": "You are a coding agent.\n\nSandbox: read-only.",
                "input": [
                    { "type": "message", "role": "user", "content": [
                        { "type": "input_text", "text": "What is in this picture? Then list files." },
                        { "type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto" }
                    ]},
                    { "type": "reasoning", "summary": [{ "type": "summary_text", "text": "**Looking**\n\nThen list." }],
                      "encrypted_content": "gAAAAABenc" },
                    { "type": "message", "role": "assistant", "content": [{ "type": "output_text", "text": "A cat.", "annotations": [] }] },
                    { "type": "function_call", "call_id": "call_a", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}" },
                    { "type": "function_call", "call_id": "call_b", "name": "multi_agent_v1--spawn_agent", "arguments": "{\"task\":\"review\"}" },
                    { "type": "function_call_output", "call_id": "call_a", "output": "README.md\nsrc" },
                    { "type": "function_call_output", "call_id": "call_b", "output": [
                        { "type": "input_text", "text": "agent started" },
                        { "type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto" }
                    ]},
                    { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "Thanks. Summarise as JSON." }] }
                ],
                "tools": [
                    { "type": "function", "name": "exec_command", "description": "Run a command.", "strict": false,
                      "parameters": { "type": "object", "properties": { "cmd": { "type": "string" } }, "required": ["cmd"] } },
                    { "type": "function", "name": "multi_agent_v1--spawn_agent", "strict": false,
                      "parameters": { "type": "object", "properties": { "task": { "type": "string" } } } },
                    { "type": "function", "name": "apply_patch", "strict": false,
                      "description": "Edit files.\n\nThe `input` argument must follow this lark grammar:\nstart: patch",
                      "parameters": { "type": "object", "properties": { "input": { "type": "string" } },
                                      "required": ["input"], "additionalProperties": false } }
                ],
                "tool_choice": "required",
                "parallel_tool_calls": false,
                "max_output_tokens": 2048,
                "temperature": 0.2,
                "top_p": 0.9,
                "text": { "format": { "type": "json_schema", "name": "summary", "strict": true,
                          "schema": { "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"] } } },
                "reasoning": { "effort": "high", "summary": "auto" },
                "include": ["reasoning.encrypted_content"],
                "store": false,
                "stream": true
            })
        );
    }

    #[test]
    fn a_request_survives_its_own_rendering() {
        let mut req = canonical_request();
        // One system string: the rendering joins them.
        req.system = vec!["You are a coding agent.\n\nSandbox: read-only.".into()];
        assert_eq!(parse(&render_request(&req)), req);

        let minimal = Request {
            model: "m".into(),
            messages: vec![Message {
                role: Role::User,
                content: vec![text("hi")],
            }],
            tool_choice: Some(ToolChoice::Tool("multi_agent_v1--spawn_agent".into())),
            output: Some(OutputFormat::JsonObject),
            ..Request::default()
        };
        assert_eq!(parse(&render_request(&minimal)), minimal);
    }

    #[test]
    fn what_an_upstream_cannot_take_is_left_out() {
        let req = Request {
            model: "m".into(),
            messages: vec![Message {
                role: Role::Assistant,
                content: vec![
                    // Anthropic's signature and a bare thought: a Responses upstream refuses both.
                    Block::Thinking {
                        text: "hmm".into(),
                        signature: Some("EqQBCkYIBxgC".into()),
                    },
                    Block::Thinking {
                        text: "hmm".into(),
                        signature: None,
                    },
                    text("ok"),
                    // OpenAI's own, but nothing follows it: the API would refuse it.
                    Block::Thinking {
                        text: "done".into(),
                        signature: Some("gAAAAABtail".into()),
                    },
                ],
            }],
            max_tokens: Some(5),
            top_k: Some(40),
            stop: vec!["END".into()],
            reasoning: Some(Reasoning {
                budget_tokens: Some(3000),
                effort: None,
            }),
            ..Request::default()
        };
        let body = render_request(&req);
        assert_eq!(
            body["input"],
            json!([{ "type": "message", "role": "assistant",
                     "content": [{ "type": "output_text", "text": "ok", "annotations": [] }] }])
        );
        assert_eq!(body["max_output_tokens"], 16, "the API's minimum");
        assert_eq!(
            body["reasoning"],
            json!({ "effort": "low", "summary": "auto" })
        );
        assert!(body.get("stop").is_none() && body.get("top_k").is_none());
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let cases = [
            (json!([]), "body: must be a JSON object"),
            (
                json!({ "input": "hi" }),
                "model: required string is missing",
            ),
            (
                json!({ "model": 3, "input": "hi" }),
                "model: must be a string",
            ),
            (
                json!({ "model": "m", "input": 3 }),
                "input: must be a string or an array of items",
            ),
            (
                json!({ "model": "m", "input": [1] }),
                "input[0]: must be an object",
            ),
            (
                json!({ "model": "m", "input": [{ "type": "function_call", "name": "f", "arguments": "{}" }] }),
                "input[0].call_id: required string is missing",
            ),
            (
                json!({ "model": "m", "input": [{ "role": "robot", "content": "x" }] }),
                "input[0].role: must be user, assistant, system or developer",
            ),
            (
                json!({ "model": "m", "input": [{ "role": "user", "content": 5 }] }),
                "input[0].content: must be a string or an array of content parts",
            ),
            (
                json!({ "model": "m", "tools": {} }),
                "tools: must be an array",
            ),
            (
                json!({ "model": "m", "tools": [{ "type": "function" }] }),
                "tools[0].name: required string is missing",
            ),
            (
                json!({ "model": "m", "tool_choice": "sometimes" }),
                "tool_choice: must be auto, none, required or an object",
            ),
            (
                json!({ "model": "m", "temperature": "hot" }),
                "temperature: must be a number",
            ),
            (
                json!({ "model": "m", "max_output_tokens": -1 }),
                "max_output_tokens: must be a non-negative integer",
            ),
            (
                json!({ "model": "m", "text": { "format": { "type": "json_schema" } } }),
                "text.format.schema: must be a JSON Schema object",
            ),
            (
                json!({ "model": "m", "input": [{ "type": "item_reference", "id": "msg_1" }] }),
                "input[0]: an item_reference points at server-side state, which cannot be converted to another API format; send the item itself",
            ),
            (
                json!({ "model": "m", "previous_response_id": "resp_1", "input": "go on" }),
                "previous_response_id: a stateful continuation cannot be converted to another API format; send the whole conversation in `input` (with `store: false`) instead",
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
    fn custom_and_local_shell_calls_pair_with_their_outputs() {
        let req = parse(&json!({
            "model": "m",
            "input": [
                { "type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch" },
                { "type": "custom_tool_call_output", "call_id": "c1", "output": "Done" },
                { "type": "local_shell_call", "call_id": "c2", "status": "completed",
                  "action": { "type": "exec", "command": ["ls"] } },
                { "type": "function_call_output", "call_id": "c2", "output": "" }
            ],
            "tool_choice": { "type": "function", "name": "spawn_agent", "namespace": "multi_agent_v1" }
        }));
        assert_eq!(
            req.messages,
            vec![
                Message {
                    role: Role::Assistant,
                    content: vec![Block::ToolUse {
                        id: "c1".into(),
                        name: "apply_patch".into(),
                        input: json!({ "input": "*** Begin Patch" }),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![Block::ToolResult {
                        id: "c1".into(),
                        name: "apply_patch".into(),
                        content: vec![text("Done")],
                        is_error: false,
                    }],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![Block::ToolUse {
                        id: "c2".into(),
                        name: "local_shell".into(),
                        input: json!({ "type": "exec", "command": ["ls"] }),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![Block::ToolResult {
                        id: "c2".into(),
                        name: "local_shell".into(),
                        content: vec![],
                        is_error: false,
                    }],
                },
            ]
        );
        assert_eq!(
            req.tool_choice,
            Some(ToolChoice::Tool("multi_agent_v1--spawn_agent".into()))
        );
    }

    #[test]
    fn parses_the_codex_capture() {
        let Ok(raw) =
            std::fs::read("/work/shared/fixtures/clients/codex-cli-0.169.0.responses.json")
        else {
            eprintln!("capture not present; skipped");
            return;
        };
        let capture: Value = serde_json::from_slice(&raw).unwrap();
        let r = parse(&capture["body"]);
        assert_eq!(r.model, "gpt-5");
        assert!(r.stream);
        assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(r.parallel_tool_calls, Some(true));
        assert_eq!(
            r.reasoning,
            Some(Reasoning {
                budget_tokens: None,
                effort: None
            })
        );
        assert_eq!(r.max_tokens, None);
        // Two developer messages (the second with two parts); no `instructions`.
        assert_eq!(r.system.len(), 3);
        assert!(r.system[0].starts_with("You are a coding agent running in the Codex CLI"));
        assert!(r.system[1].starts_with("<skills_instructions>"));
        assert!(r.system[2].starts_with("<permissions instructions>"));
        // The environment context and the prompt: one user turn.
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].role, Role::User);
        assert_eq!(r.messages[0].content.len(), 2);
        assert!(
            matches!(&r.messages[0].content[0], Block::Text { text } if text.starts_with("<environment_context>"))
        );
        assert_eq!(r.messages[0].content[1], text("say hi"));
        // Functions, the multi-agent namespace flattened, web_search dropped.
        let names: Vec<&str> = r.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "exec_command",
                "write_stdin",
                "request_user_input",
                "view_image",
                "multi_agent_v1--close_agent",
                "multi_agent_v1--resume_agent",
                "multi_agent_v1--send_input",
                "multi_agent_v1--spawn_agent",
                "multi_agent_v1--wait_agent",
                "get_goal",
                "create_goal",
                "update_goal",
            ]
        );
        assert_eq!(r.tools[0].parameters["required"], json!(["cmd"]));
        assert!(r.tools.iter().all(|t| t.parameters["type"] == "object"));
    }

    // ---- complete responses ----------------------------------------------------------------

    fn upstream_response() -> Value {
        json!({
            "id": "resp_68a1", "object": "response", "created_at": 1755000000, "status": "completed",
            "error": null, "incomplete_details": null, "model": "gpt-5-2025-08-07",
            "output": [
                { "id": "rs_1", "type": "reasoning", "encrypted_content": "gAAAAABenc",
                  "summary": [{ "type": "summary_text", "text": "**Checking**" }] },
                { "id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                  "content": [{ "type": "output_text", "text": "Listing.", "annotations": [], "logprobs": [] }] },
                { "id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_a",
                  "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}" },
                { "id": "fc_2", "type": "function_call", "status": "completed", "call_id": "call_b",
                  "name": "spawn_agent", "namespace": "multi_agent_v1", "arguments": "{\"task\":\"review\"}" },
                { "id": "ws_1", "type": "web_search_call", "status": "completed" }
            ],
            "usage": { "input_tokens": 1200, "input_tokens_details": { "cached_tokens": 1024 },
                       "output_tokens": 300, "output_tokens_details": { "reasoning_tokens": 128 }, "total_tokens": 1500 }
        })
    }

    fn canonical_response() -> Response {
        Response {
            id: "resp_68a1".into(),
            model: "gpt-5-2025-08-07".into(),
            content: vec![
                Block::Thinking {
                    text: "**Checking**".into(),
                    signature: Some("gAAAAABenc".into()),
                },
                text("Listing."),
                Block::ToolUse {
                    id: "call_a".into(),
                    name: "exec_command".into(),
                    input: json!({ "cmd": "ls" }),
                },
                Block::ToolUse {
                    id: "call_b".into(),
                    name: "multi_agent_v1--spawn_agent".into(),
                    input: json!({ "task": "review" }),
                },
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: 1200,
                output: 300,
                cache_read: 1024,
                cache_write: 0,
                reasoning: 128,
            },
        }
    }

    fn without_created_at(mut v: Value) -> Value {
        if let Some(o) = v.as_object_mut() {
            assert!(
                o.remove("created_at").is_some_and(|c| c.is_u64()),
                "created_at"
            );
        }
        v
    }

    #[test]
    fn parses_a_complete_response() {
        assert_eq!(
            parse_response(&upstream_response()).unwrap(),
            canonical_response()
        );
    }

    #[test]
    fn renders_a_complete_response() {
        let v = without_created_at(render_response(&canonical_response()));
        assert_eq!(
            v,
            json!({
                "id": "resp_68a1", "object": "response", "status": "completed", "background": false,
                "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
                "model": "gpt-5-2025-08-07",
                "output": [
                    { "id": "rs_68a1_0", "type": "reasoning", "summary": [{ "type": "summary_text", "text": "**Checking**" }],
                      "encrypted_content": "gAAAAABenc" },
                    { "id": "msg_68a1_1", "type": "message", "status": "completed", "role": "assistant",
                      "content": [{ "type": "output_text", "annotations": [], "logprobs": [], "text": "Listing." }] },
                    { "id": "fc_68a1_2", "type": "function_call", "status": "completed", "arguments": "{\"cmd\":\"ls\"}",
                      "call_id": "call_a", "name": "exec_command" },
                    { "id": "fc_68a1_3", "type": "function_call", "status": "completed", "arguments": "{\"task\":\"review\"}",
                      "call_id": "call_b", "name": "spawn_agent", "namespace": "multi_agent_v1" }
                ],
                "parallel_tool_calls": true, "previous_response_id": null,
                "reasoning": { "effort": null, "summary": null }, "store": false, "temperature": null,
                "text": { "format": { "type": "text" } }, "tool_choice": "auto", "tools": [], "top_p": null,
                "truncation": "disabled",
                "usage": { "input_tokens": 1200, "input_tokens_details": { "cached_tokens": 1024 },
                           "output_tokens": 300, "output_tokens_details": { "reasoning_tokens": 128 }, "total_tokens": 1500 },
                "metadata": {}
            })
        );
        assert_eq!(
            parse_response(&render_response(&canonical_response())).unwrap(),
            canonical_response()
        );
    }

    #[test]
    fn stop_reasons_map_to_status() {
        let mut r = canonical_response();
        r.content = vec![text("cut")];
        for (stop, status, reason) in [
            (
                StopReason::MaxTokens,
                "incomplete",
                json!({ "reason": "max_output_tokens" }),
            ),
            (
                StopReason::ContentFilter,
                "incomplete",
                json!({ "reason": "content_filter" }),
            ),
            (StopReason::EndTurn, "completed", Value::Null),
        ] {
            r.stop = stop.clone();
            let v = render_response(&r);
            assert_eq!(
                (&v["status"], &v["incomplete_details"]),
                (&json!(status), &reason)
            );
            assert_eq!(parse_response(&v).unwrap().stop, stop);
        }
        // A stop sequence is a normal completion in this dialect.
        r.stop = StopReason::StopSequence(Some("END".into()));
        assert_eq!(render_response(&r)["status"], "completed");
        // A refusal is a content filter.
        let refused = json!({ "id": "resp_1", "status": "completed", "model": "m", "output": [
            { "type": "message", "role": "assistant", "content": [{ "type": "refusal", "refusal": "I can't help." }] }
        ]});
        let p = parse_response(&refused).unwrap();
        assert_eq!(
            (p.content, p.stop),
            (vec![text("I can't help.")], StopReason::ContentFilter)
        );
        let failed = json!({ "id": "resp_1", "status": "failed", "error": { "code": "server_error", "message": "boom" } });
        assert_eq!(
            parse_response(&failed),
            Err(ConvertError::invalid("status: failed: boom"))
        );
    }

    // ---- streams ---------------------------------------------------------------------------

    /// A recorded gpt-5 stream: a reasoning item with two summary parts and encrypted content,
    /// a message, and two parallel calls (the second namespaced).
    fn recorded_stream() -> String {
        let resp0 = json!({
            "id": "resp_68a1", "object": "response", "created_at": 1755000000, "status": "in_progress",
            "background": false, "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "model": "gpt-5-2025-08-07", "output": [], "parallel_tool_calls": true,
            "previous_response_id": null, "reasoning": { "effort": "medium", "summary": "auto" }, "store": false,
            "temperature": 1.0, "text": { "format": { "type": "text" }, "verbosity": "medium" },
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": null, "metadata": {}
        });
        let rs_done = json!({ "id": "rs_1", "type": "reasoning", "encrypted_content": "gAAAAABenc",
            "summary": [{ "type": "summary_text", "text": "**Checking files**" }, { "type": "summary_text", "text": "Then run both." }] });
        let msg_done = json!({ "id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{ "type": "output_text", "annotations": [], "logprobs": [], "text": "Running both." }] });
        let fc1_done = json!({ "id": "fc_1", "type": "function_call", "status": "completed",
            "arguments": "{\"cmd\":\"ls\"}", "call_id": "call_a", "name": "exec_command" });
        let fc2_done = json!({ "id": "fc_2", "type": "function_call", "status": "completed",
            "arguments": "{\"task\":\"review\"}", "call_id": "call_b", "name": "spawn_agent", "namespace": "multi_agent_v1" });
        let mut resp_done = resp0.clone();
        resp_done["status"] = json!("completed");
        resp_done["output"] = json!([rs_done, msg_done, fc1_done, fc2_done]);
        resp_done["usage"] = json!({ "input_tokens": 1200, "input_tokens_details": { "cached_tokens": 1024 },
            "output_tokens": 300, "output_tokens_details": { "reasoning_tokens": 128 }, "total_tokens": 1500 });
        let events = vec![
            json!({ "type": "response.created", "response": resp0 }),
            json!({ "type": "response.in_progress", "response": resp0 }),
            json!({ "type": "response.output_item.added", "output_index": 0,
                    "item": { "id": "rs_1", "type": "reasoning", "encrypted_content": "gAAAAABenc", "summary": [] } }),
            json!({ "type": "response.reasoning_summary_part.added", "item_id": "rs_1", "output_index": 0, "summary_index": 0,
                    "part": { "type": "summary_text", "text": "" } }),
            json!({ "type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0, "summary_index": 0,
                    "delta": "**Checking", "obfuscation": "ab" }),
            json!({ "type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0, "summary_index": 0,
                    "delta": " files**" }),
            json!({ "type": "response.reasoning_summary_text.done", "item_id": "rs_1", "output_index": 0, "summary_index": 0,
                    "text": "**Checking files**" }),
            json!({ "type": "response.reasoning_summary_part.done", "item_id": "rs_1", "output_index": 0, "summary_index": 0,
                    "part": { "type": "summary_text", "text": "**Checking files**" } }),
            json!({ "type": "response.reasoning_summary_part.added", "item_id": "rs_1", "output_index": 0, "summary_index": 1,
                    "part": { "type": "summary_text", "text": "" } }),
            json!({ "type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0, "summary_index": 1,
                    "delta": "Then run both." }),
            json!({ "type": "response.reasoning_summary_text.done", "item_id": "rs_1", "output_index": 0, "summary_index": 1,
                    "text": "Then run both." }),
            json!({ "type": "response.reasoning_summary_part.done", "item_id": "rs_1", "output_index": 0, "summary_index": 1,
                    "part": { "type": "summary_text", "text": "Then run both." } }),
            json!({ "type": "response.output_item.done", "output_index": 0, "item": rs_done }),
            json!({ "type": "response.output_item.added", "output_index": 1,
                    "item": { "id": "msg_1", "type": "message", "status": "in_progress", "content": [], "role": "assistant" } }),
            json!({ "type": "response.content_part.added", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                    "part": { "type": "output_text", "annotations": [], "logprobs": [], "text": "" } }),
            json!({ "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                    "delta": "Running ", "logprobs": [] }),
            json!({ "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                    "delta": "both.", "logprobs": [] }),
            json!({ "type": "response.output_text.done", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                    "text": "Running both.", "logprobs": [] }),
            json!({ "type": "response.content_part.done", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                    "part": { "type": "output_text", "annotations": [], "logprobs": [], "text": "Running both." } }),
            json!({ "type": "response.output_item.done", "output_index": 1, "item": msg_done }),
            json!({ "type": "response.output_item.added", "output_index": 2,
                    "item": { "id": "fc_1", "type": "function_call", "status": "in_progress", "arguments": "",
                              "call_id": "call_a", "name": "exec_command" } }),
            json!({ "type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": "{\"cmd\":" }),
            json!({ "type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": "\"ls\"}" }),
            json!({ "type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 2,
                    "arguments": "{\"cmd\":\"ls\"}" }),
            json!({ "type": "response.output_item.done", "output_index": 2, "item": fc1_done }),
            json!({ "type": "response.output_item.added", "output_index": 3,
                    "item": { "id": "fc_2", "type": "function_call", "status": "in_progress", "arguments": "",
                              "call_id": "call_b", "name": "spawn_agent", "namespace": "multi_agent_v1" } }),
            json!({ "type": "response.function_call_arguments.delta", "item_id": "fc_2", "output_index": 3,
                    "delta": "{\"task\":\"review\"}" }),
            json!({ "type": "response.function_call_arguments.done", "item_id": "fc_2", "output_index": 3,
                    "arguments": "{\"task\":\"review\"}" }),
            json!({ "type": "response.output_item.done", "output_index": 3, "item": fc2_done }),
            json!({ "type": "response.completed", "response": resp_done }),
        ];
        let mut out = String::new();
        for (seq, mut e) in events.into_iter().enumerate() {
            e["sequence_number"] = json!(seq);
            let ty = e["type"].as_str().unwrap().to_owned();
            out.push_str(&format!("event: {ty}\ndata: {e}\n\n"));
        }
        out
    }

    fn recorded_events() -> Vec<Event> {
        let d = |index, delta| Event::Delta { index, delta };
        vec![
            Event::Start {
                id: "resp_68a1".into(),
                model: "gpt-5-2025-08-07".into(),
            },
            Event::BlockStart {
                index: 0,
                kind: BlockKind::Thinking,
            },
            d(0, Delta::Thinking("**Checking".into())),
            d(0, Delta::Thinking(" files**".into())),
            d(0, Delta::Thinking("\n\n".into())),
            d(0, Delta::Thinking("Then run both.".into())),
            d(0, Delta::Signature("gAAAAABenc".into())),
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                kind: BlockKind::Text,
            },
            d(1, Delta::Text("Running ".into())),
            d(1, Delta::Text("both.".into())),
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                kind: BlockKind::ToolUse {
                    id: "call_a".into(),
                    name: "exec_command".into(),
                },
            },
            d(2, Delta::ToolArgs("{\"cmd\":".into())),
            d(2, Delta::ToolArgs("\"ls\"}".into())),
            Event::BlockStop { index: 2 },
            Event::BlockStart {
                index: 3,
                kind: BlockKind::ToolUse {
                    id: "call_b".into(),
                    name: "multi_agent_v1--spawn_agent".into(),
                },
            },
            d(3, Delta::ToolArgs("{\"task\":\"review\"}".into())),
            Event::BlockStop { index: 3 },
            Event::Usage(Usage {
                input: 1200,
                output: 300,
                cache_read: 1024,
                cache_write: 0,
                reasoning: 128,
            }),
            Event::Finish {
                stop: StopReason::ToolUse,
            },
        ]
    }

    /// Feeds SSE bytes to a fresh decoder in pieces of `step` bytes.
    fn decode_in_pieces(bytes: &[u8], step: usize) -> Vec<Event> {
        let mut sse = SseDecoder::new(1 << 20);
        let mut dec = Decoder::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            sse.feed(piece).unwrap();
            while let Some(ev) = sse.next_event() {
                dec.event(ev.event.as_deref(), &ev.data, &mut out);
            }
        }
        if let Some(ev) = sse.finish() {
            dec.event(ev.event.as_deref(), &ev.data, &mut out);
        }
        dec.end(&mut out);
        out
    }

    #[test]
    fn decodes_a_recorded_stream_in_any_chunking() {
        let bytes = recorded_stream().into_bytes();
        for step in [bytes.len(), 1, 3, 17, 64, 500] {
            assert_eq!(
                decode_in_pieces(&bytes, step),
                recorded_events(),
                "pieces of {step}"
            );
        }
    }

    /// Checks a client stream the way the openai-python accumulator and Codex read it and
    /// returns the final response.
    fn check_stream(bytes: &[u8]) -> Value {
        let mut sse = SseDecoder::new(1 << 20);
        sse.feed(bytes).unwrap();
        let mut frames = Vec::new();
        while let Some(ev) = sse.next_event() {
            frames.push((
                ev.event.unwrap_or_default(),
                serde_json::from_str::<Value>(&ev.data).unwrap(),
            ));
        }
        assert!(
            sse.finish().is_none(),
            "the stream ends on an event boundary"
        );
        let types: Vec<&str> = frames.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(types.first(), Some(&"response.created"), "{types:?}");
        assert_eq!(types.get(1), Some(&"response.in_progress"), "{types:?}");
        let mut done_items: Vec<Value> = Vec::new();
        // The item being streamed: its index, the added item and what its deltas built.
        let mut open: Option<(u64, Value, String, bool)> = None;
        let mut terminal = None;
        for (i, (name, data)) in frames.iter().enumerate() {
            assert_eq!(data["type"], json!(name), "event name and type agree");
            assert_eq!(
                data["sequence_number"],
                json!(i),
                "sequence numbers count up"
            );
            assert!(
                terminal.is_none(),
                "nothing after the terminal event: {name}"
            );
            let oi = data["output_index"].as_u64();
            let check_open = |open: &Option<(u64, Value, String, bool)>| {
                let (idx, item, _, _) = open
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name} outside an item"));
                assert_eq!(Some(*idx), oi, "{name}: output_index");
                assert_eq!(item["id"], data["item_id"], "{name}: item_id");
            };
            match name.as_str() {
                "response.created" | "response.in_progress" => {
                    assert_eq!(data["response"]["status"], "in_progress");
                    assert_eq!(data["response"]["object"], "response");
                }
                "response.output_item.added" => {
                    assert!(open.is_none(), "one item at a time");
                    assert_eq!(oi, Some(done_items.len() as u64), "output indices count up");
                    assert!(data["item"]["id"].is_string());
                    open = Some((oi.unwrap(), data["item"].clone(), String::new(), false));
                }
                "response.content_part.added" => {
                    check_open(&open);
                    assert_eq!(data["content_index"], 0);
                    assert_eq!(data["part"]["type"], "output_text");
                    open.as_mut().unwrap().3 = true;
                }
                "response.output_text.delta" => {
                    check_open(&open);
                    let o = open.as_mut().unwrap();
                    assert!(o.3, "content_part.added comes first");
                    assert_eq!(data["content_index"], 0);
                    o.2.push_str(data["delta"].as_str().unwrap());
                }
                "response.output_text.done" | "response.content_part.done" => {
                    check_open(&open);
                    let o = open.as_ref().unwrap();
                    let t = data.get("text").unwrap_or(&data["part"]["text"]);
                    assert_eq!(t.as_str(), Some(o.2.as_str()), "{name}");
                }
                "response.reasoning_summary_part.added" => {
                    check_open(&open);
                    assert_eq!(data["summary_index"], 0);
                    open.as_mut().unwrap().3 = true;
                }
                "response.reasoning_summary_text.delta" => {
                    check_open(&open);
                    let o = open.as_mut().unwrap();
                    assert!(o.3, "the summary part is added first");
                    o.2.push_str(data["delta"].as_str().unwrap());
                }
                "response.reasoning_summary_text.done" | "response.reasoning_summary_part.done" => {
                    check_open(&open);
                    let t = data.get("text").unwrap_or(&data["part"]["text"]);
                    assert_eq!(
                        t.as_str(),
                        Some(open.as_ref().unwrap().2.as_str()),
                        "{name}"
                    );
                }
                "response.function_call_arguments.delta" => {
                    check_open(&open);
                    open.as_mut()
                        .unwrap()
                        .2
                        .push_str(data["delta"].as_str().unwrap());
                }
                "response.function_call_arguments.done" => {
                    check_open(&open);
                    assert_eq!(
                        data["arguments"].as_str(),
                        Some(open.as_ref().unwrap().2.as_str())
                    );
                }
                "response.output_item.done" => {
                    let (idx, added, built, _) = open.take().expect("an open item");
                    assert_eq!(Some(idx), oi);
                    let item = &data["item"];
                    assert_eq!(item["id"], added["id"]);
                    assert_eq!(item["type"], added["type"]);
                    match item["type"].as_str().unwrap() {
                        "message" => {
                            assert_eq!(item["role"], "assistant");
                            assert_eq!(item["status"], "completed");
                            assert_eq!(item["content"][0]["text"].as_str(), Some(built.as_str()));
                            assert_eq!(item["content"][0]["annotations"], json!([]));
                        }
                        "function_call" => {
                            assert_eq!(item["arguments"].as_str(), Some(built.as_str()));
                            assert!(serde_json::from_str::<Value>(&built).unwrap().is_object());
                            assert!(item["call_id"].is_string() && item["name"].is_string());
                            assert_eq!(item["call_id"], added["call_id"]);
                        }
                        "reasoning" => {
                            let summary: String = item["summary"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|p| p["text"].as_str().unwrap())
                                .collect();
                            assert_eq!(summary, built);
                        }
                        other => panic!("unexpected item type {other}"),
                    }
                    done_items.push(item.clone());
                }
                "response.completed" | "response.incomplete" => {
                    assert!(open.is_none(), "items are closed before the end");
                    let r = &data["response"];
                    assert_eq!(
                        r["output"],
                        json!(done_items),
                        "the response holds every done item"
                    );
                    let u = &r["usage"];
                    assert_eq!(
                        u["total_tokens"].as_u64(),
                        Some(
                            u["input_tokens"].as_u64().unwrap()
                                + u["output_tokens"].as_u64().unwrap()
                        )
                    );
                    assert!(r["id"].as_str().unwrap().starts_with("resp_"));
                    terminal = Some(r.clone());
                }
                other => panic!("unexpected event {other}"),
            }
        }
        terminal.expect("a terminal event")
    }

    #[test]
    fn transcodes_a_recorded_stream_to_a_well_formed_one() {
        let bytes = recorded_stream().into_bytes();
        let mut outputs = Vec::new();
        for step in [bytes.len(), 1, 5, 29, 300] {
            let mut t = Transcoder::new(
                Dialect::OpenaiResponses,
                Dialect::OpenaiResponses,
                Framing::Sse,
                1 << 20,
            );
            let mut out = Vec::new();
            for piece in bytes.chunks(step) {
                out.extend_from_slice(&t.feed(piece));
            }
            out.extend_from_slice(&t.finish());
            assert!(t.is_done());
            assert_eq!(t.stop(), Some(&StopReason::ToolUse));
            let resp = without_created_at(check_stream(&out));
            outputs.push(resp);
        }
        let first = &outputs[0];
        assert!(
            outputs.iter().all(|o| o == first),
            "chunking changes nothing"
        );
        assert_eq!(first["status"], "completed");
        assert_eq!(
            first["output"],
            json!([
                { "id": "rs_68a1_0", "type": "reasoning",
                  "summary": [{ "type": "summary_text", "text": "**Checking files**\n\nThen run both." }],
                  "encrypted_content": "gAAAAABenc" },
                { "id": "msg_68a1_1", "type": "message", "status": "completed", "role": "assistant",
                  "content": [{ "type": "output_text", "annotations": [], "logprobs": [], "text": "Running both." }] },
                { "id": "fc_68a1_2", "type": "function_call", "status": "completed", "arguments": "{\"cmd\":\"ls\"}",
                  "call_id": "call_a", "name": "exec_command" },
                { "id": "fc_68a1_3", "type": "function_call", "status": "completed", "arguments": "{\"task\":\"review\"}",
                  "call_id": "call_b", "name": "spawn_agent", "namespace": "multi_agent_v1" }
            ])
        );
        assert_eq!(
            first["usage"],
            json!({ "input_tokens": 1200, "input_tokens_details": { "cached_tokens": 1024 },
                    "output_tokens": 300, "output_tokens_details": { "reasoning_tokens": 128 }, "total_tokens": 1500 })
        );
    }

    fn encode(events: &[Event]) -> Vec<(Option<&'static str>, Value)> {
        let mut enc = Encoder::default();
        let mut frames = Vec::new();
        for e in events {
            enc.event(e, &mut frames);
        }
        enc.end(&mut frames);
        enc.end(&mut frames); // idempotent
        frames
            .into_iter()
            .map(|f| {
                let mut v: Value = serde_json::from_str(&f.data).unwrap();
                if let Some(r) = v.get_mut("response") {
                    *r = without_created_at(r.take());
                }
                (f.event, v)
            })
            .collect()
    }

    fn to_bytes(frames: &[(Option<&'static str>, Value)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in frames {
            out.extend_from_slice(&aether_protocol::sse::encode_event(
                *name,
                &data.to_string(),
            ));
        }
        out
    }

    #[test]
    fn encodes_thinking_text_and_two_calls_exactly() {
        let d = |index, delta| Event::Delta { index, delta };
        let events = vec![
            Event::Start {
                id: "msg_01X".into(),
                model: "claude-sonnet-4-5".into(),
            },
            Event::BlockStart {
                index: 0,
                kind: BlockKind::Thinking,
            },
            d(0, Delta::Thinking("Look".into())),
            d(0, Delta::Thinking(" first.".into())),
            d(0, Delta::Signature("EqQB".into())),
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                kind: BlockKind::Text,
            },
            d(1, Delta::Text("On it.".into())),
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                kind: BlockKind::ToolUse {
                    id: "toolu_A".into(),
                    name: "exec_command".into(),
                },
            },
            d(2, Delta::ToolArgs("{\"cmd\":".into())),
            d(2, Delta::ToolArgs("\"ls\"}".into())),
            Event::BlockStop { index: 2 },
            Event::BlockStart {
                index: 3,
                kind: BlockKind::ToolUse {
                    id: "toolu_B".into(),
                    name: "multi_agent_v1--list_agents".into(),
                },
            },
            Event::BlockStop { index: 3 },
            Event::Usage(Usage {
                input: 100,
                output: 40,
                cache_read: 60,
                cache_write: 20,
                reasoning: 0,
            }),
            Event::Usage(Usage {
                input: 100,
                output: 50,
                ..Usage::default()
            }),
            Event::Finish {
                stop: StopReason::ToolUse,
            },
        ];
        let frames = encode(&events);
        let base = |status: &str, output: Value, usage: Value| {
            json!({
                "id": "resp_msg_01X", "object": "response", "status": status, "background": false, "error": null,
                "incomplete_details": null, "instructions": null, "max_output_tokens": null, "model": "claude-sonnet-4-5",
                "output": output, "parallel_tool_calls": true, "previous_response_id": null,
                "reasoning": { "effort": null, "summary": null }, "store": false, "temperature": null,
                "text": { "format": { "type": "text" } }, "tool_choice": "auto", "tools": [], "top_p": null,
                "truncation": "disabled", "usage": usage, "metadata": {}
            })
        };
        let rs = json!({ "id": "rs_msg_01X_0", "type": "reasoning",
            "summary": [{ "type": "summary_text", "text": "Look first." }], "encrypted_content": "EqQB" });
        let msg = json!({ "id": "msg_msg_01X_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{ "type": "output_text", "annotations": [], "logprobs": [], "text": "On it." }] });
        let fc1 = json!({ "id": "fc_msg_01X_2", "type": "function_call", "status": "completed",
            "arguments": "{\"cmd\":\"ls\"}", "call_id": "toolu_A", "name": "exec_command" });
        let fc2 = json!({ "id": "fc_msg_01X_3", "type": "function_call", "status": "completed",
            "arguments": "{}", "call_id": "toolu_B", "name": "list_agents", "namespace": "multi_agent_v1" });
        let expected: Vec<(Option<&'static str>, Value)> = vec![
            ("response.created", json!({ "response": base("in_progress", json!([]), Value::Null) })),
            ("response.in_progress", json!({ "response": base("in_progress", json!([]), Value::Null) })),
            ("response.output_item.added", json!({ "output_index": 0,
                "item": { "id": "rs_msg_01X_0", "type": "reasoning", "summary": [] } })),
            ("response.reasoning_summary_part.added", json!({ "item_id": "rs_msg_01X_0", "output_index": 0,
                "summary_index": 0, "part": { "type": "summary_text", "text": "" } })),
            ("response.reasoning_summary_text.delta", json!({ "item_id": "rs_msg_01X_0", "output_index": 0,
                "summary_index": 0, "delta": "Look" })),
            ("response.reasoning_summary_text.delta", json!({ "item_id": "rs_msg_01X_0", "output_index": 0,
                "summary_index": 0, "delta": " first." })),
            ("response.reasoning_summary_text.done", json!({ "item_id": "rs_msg_01X_0", "output_index": 0,
                "summary_index": 0, "text": "Look first." })),
            ("response.reasoning_summary_part.done", json!({ "item_id": "rs_msg_01X_0", "output_index": 0,
                "summary_index": 0, "part": { "type": "summary_text", "text": "Look first." } })),
            ("response.output_item.done", json!({ "output_index": 0, "item": rs })),
            ("response.output_item.added", json!({ "output_index": 1, "item": { "id": "msg_msg_01X_1",
                "type": "message", "status": "in_progress", "content": [], "role": "assistant" } })),
            ("response.content_part.added", json!({ "item_id": "msg_msg_01X_1", "output_index": 1, "content_index": 0,
                "part": { "type": "output_text", "annotations": [], "logprobs": [], "text": "" } })),
            ("response.output_text.delta", json!({ "item_id": "msg_msg_01X_1", "output_index": 1, "content_index": 0,
                "delta": "On it.", "logprobs": [] })),
            ("response.output_text.done", json!({ "item_id": "msg_msg_01X_1", "output_index": 1, "content_index": 0,
                "text": "On it.", "logprobs": [] })),
            ("response.content_part.done", json!({ "item_id": "msg_msg_01X_1", "output_index": 1, "content_index": 0,
                "part": { "type": "output_text", "annotations": [], "logprobs": [], "text": "On it." } })),
            ("response.output_item.done", json!({ "output_index": 1, "item": msg })),
            ("response.output_item.added", json!({ "output_index": 2, "item": { "id": "fc_msg_01X_2",
                "type": "function_call", "status": "in_progress", "arguments": "", "call_id": "toolu_A", "name": "exec_command" } })),
            ("response.function_call_arguments.delta", json!({ "item_id": "fc_msg_01X_2", "output_index": 2,
                "delta": "{\"cmd\":" })),
            ("response.function_call_arguments.delta", json!({ "item_id": "fc_msg_01X_2", "output_index": 2,
                "delta": "\"ls\"}" })),
            ("response.function_call_arguments.done", json!({ "item_id": "fc_msg_01X_2", "output_index": 2,
                "arguments": "{\"cmd\":\"ls\"}" })),
            ("response.output_item.done", json!({ "output_index": 2, "item": fc1 })),
            ("response.output_item.added", json!({ "output_index": 3, "item": { "id": "fc_msg_01X_3",
                "type": "function_call", "status": "in_progress", "arguments": "", "call_id": "toolu_B",
                "name": "list_agents", "namespace": "multi_agent_v1" } })),
            ("response.function_call_arguments.delta", json!({ "item_id": "fc_msg_01X_3", "output_index": 3, "delta": "{}" })),
            ("response.function_call_arguments.done", json!({ "item_id": "fc_msg_01X_3", "output_index": 3, "arguments": "{}" })),
            ("response.output_item.done", json!({ "output_index": 3, "item": fc2 })),
            ("response.completed", json!({ "response": base("completed", json!([rs, msg, fc1, fc2]), json!({
                "input_tokens": 100, "input_tokens_details": { "cached_tokens": 60 },
                "output_tokens": 50, "output_tokens_details": { "reasoning_tokens": 0 }, "total_tokens": 150 })) })),
        ]
        .into_iter()
        .enumerate()
        .map(|(seq, (name, mut data))| {
            let o = data.as_object_mut().unwrap();
            o.insert("type".into(), json!(name));
            o.insert("sequence_number".into(), json!(seq));
            (Some(name), data)
        })
        .collect();
        assert_eq!(frames.len(), expected.len());
        for (got, want) in frames.iter().zip(&expected) {
            assert_eq!(got, want);
        }
        check_stream(&to_bytes(&frames));
        // And a Responses decoder reads back what was meant.
        let back = decode_in_pieces(&to_bytes(&frames), 9);
        // What was meant, with the empty call's arguments as `{}` and the usage merged.
        let mut want = events[..14].to_vec();
        want[0] = Event::Start {
            id: "resp_msg_01X".into(),
            model: "claude-sonnet-4-5".into(),
        };
        want.extend([
            d(3, Delta::ToolArgs("{}".into())),
            Event::BlockStop { index: 3 },
            Event::Usage(Usage {
                input: 100,
                output: 50,
                cache_read: 60,
                ..Usage::default()
            }),
            Event::Finish {
                stop: StopReason::ToolUse,
            },
        ]);
        assert_eq!(back, want);
    }

    #[test]
    fn the_encoder_keeps_any_event_sequence_well_formed() {
        let d = |index, delta| Event::Delta { index, delta };
        let sequences: Vec<Vec<Event>> = vec![
            // Nothing at all.
            vec![],
            // Deltas for blocks never started, no Start, no Finish.
            vec![
                d(0, Delta::Text("a".into())),
                d(1, Delta::ToolArgs("{\"x\":1}".into())),
                d(1, Delta::Text("b".into())),
            ],
            // Overlapping blocks and a stop for the wrong index.
            vec![
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Text,
                },
                Event::BlockStart {
                    index: 1,
                    kind: BlockKind::Thinking,
                },
                d(0, Delta::Text("late".into())),
                Event::BlockStop { index: 7 },
                d(2, Delta::Signature("sig".into())),
                Event::Finish {
                    stop: StopReason::MaxTokens,
                },
                Event::Start {
                    id: "x".into(),
                    model: "m".into(),
                },
            ],
            // Empty blocks and a content filter.
            vec![
                Event::Start {
                    id: String::new(),
                    model: "m".into(),
                },
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Text,
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    kind: BlockKind::Thinking,
                },
                Event::BlockStop { index: 1 },
                Event::BlockStart {
                    index: 2,
                    kind: BlockKind::ToolUse {
                        id: String::new(),
                        name: String::new(),
                    },
                },
                Event::Finish {
                    stop: StopReason::ContentFilter,
                },
            ],
        ];
        let expect_status = ["completed", "completed", "incomplete", "incomplete"];
        for (events, status) in sequences.iter().zip(expect_status) {
            let frames = encode(events);
            let resp = check_stream(&to_bytes(&frames));
            assert_eq!(resp["status"], status, "{events:?}");
        }
        let frames = encode(&sequences[2]);
        assert_eq!(
            frames.last().unwrap().1["response"]["incomplete_details"],
            json!({ "reason": "max_output_tokens" })
        );
    }

    #[test]
    fn the_decoder_handles_failures_and_odd_streams() {
        let feed = |lines: &[Value]| {
            let mut bytes = String::new();
            for l in lines {
                bytes.push_str(&format!("data: {l}\n\n"));
            }
            decode_in_pieces(bytes.as_bytes(), 7)
        };
        // A failure mid-item: the error ends it, the open block stays open.
        let ev = feed(&[
            json!({ "type": "response.created", "response": { "id": "resp_1", "model": "m" } }),
            json!({ "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi" }),
            json!({ "type": "response.failed", "response": { "id": "resp_1", "status": "failed",
                    "error": { "code": "rate_limit_exceeded", "message": "Rate limit reached. Try again in 2s." } } }),
            json!({ "type": "response.completed", "response": { "id": "resp_1" } }),
        ]);
        assert_eq!(
            ev,
            vec![
                Event::Start {
                    id: "resp_1".into(),
                    model: "m".into()
                },
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Text
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Text("Hi".into())
                },
                Event::Error {
                    kind: ErrorKind::RateLimited,
                    message: "Rate limit reached. Try again in 2s.".into()
                },
            ]
        );
        // The `error` event (flat SDK shape).
        let ev = feed(&[
            json!({ "type": "error", "code": "server_error", "message": "boom", "param": null }),
        ]);
        assert_eq!(
            ev[1],
            Event::Error {
                kind: ErrorKind::UpstreamError,
                message: "boom".into()
            }
        );
        // Only a final response (no item events), cut by max_output_tokens.
        let ev = feed(&[
            json!({ "type": "response.created", "response": { "id": "resp_2", "model": "m" } }),
            json!({ "type": "response.incomplete", "response": { "id": "resp_2", "status": "incomplete",
                    "incomplete_details": { "reason": "max_output_tokens" },
                    "output": [{ "type": "message", "id": "m1", "content": [{ "type": "output_text", "text": "Partial" }] },
                               { "type": "function_call", "id": "f1", "call_id": "c1", "name": "f", "arguments": "" }],
                    "usage": { "input_tokens": 5, "output_tokens": 16 } } }),
        ]);
        assert_eq!(
            ev,
            vec![
                Event::Start {
                    id: "resp_2".into(),
                    model: "m".into()
                },
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Text
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Text("Partial".into())
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    kind: BlockKind::ToolUse {
                        id: "c1".into(),
                        name: "f".into()
                    }
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::ToolArgs("{}".into())
                },
                Event::BlockStop { index: 1 },
                Event::Usage(Usage {
                    input: 5,
                    output: 16,
                    ..Usage::default()
                }),
                Event::Finish {
                    stop: StopReason::MaxTokens
                },
            ]
        );
        // Interleaved items, garbage and a stream cut short keep the canonical order.
        let ev = feed(&[
            json!("not an object"),
            json!({ "type": "response.output_item.added", "output_index": 0,
                    "item": { "id": "fc_1", "type": "function_call", "call_id": "c1", "name": "a" } }),
            json!({ "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "delta": "x" }),
            json!({ "type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": "{\"k\":" }),
            json!({ "type": "response.refusal.delta", "item_id": "msg_1", "output_index": 1, "delta": "no" }),
            json!({ "type": "response.reasoning_summary_text.delta", "item_id": "rs_9", "output_index": 2, "delta": "t" }),
        ]);
        let mut open = None;
        let mut next = 0;
        assert!(matches!(ev[0], Event::Start { .. }));
        for e in &ev[1..] {
            match e {
                Event::BlockStart { index, .. } => {
                    assert!(open.is_none());
                    assert_eq!(*index, next);
                    open = Some(*index);
                    next += 1;
                }
                Event::Delta { index, .. } => assert_eq!(open, Some(*index)),
                Event::BlockStop { index } => {
                    assert_eq!(open, Some(*index));
                    open = None;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(open.is_none(), "end closes the open block");
    }

    #[test]
    fn namespaces_flatten_and_split_back() {
        assert_eq!(
            flat_name(Some("multi_agent_v1"), "spawn_agent"),
            "multi_agent_v1--spawn_agent"
        );
        assert_eq!(
            split_name("multi_agent_v1--spawn_agent"),
            (Some("multi_agent_v1"), "spawn_agent")
        );
        assert_eq!(
            split_name("mcp__github--create_issue"),
            (Some("mcp__github"), "create_issue")
        );
        // Plain names, including Codex's older `server__tool` MCP names, stay whole.
        for plain in ["exec_command", "mcp__github__create_issue", "--x", "x--"] {
            assert_eq!(split_name(plain), (None, plain));
        }
    }
}
