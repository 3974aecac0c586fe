//! Gemini `generateContent` / `streamGenerateContent` (`v1beta` REST shape).
//!
//! The model and the stream flag live in the URL ([`RequestContext`]); bodies carry neither.
//! Field names are read in Google's camelCase and, as the REST endpoints also accept,
//! snake_case (`systemInstruction` / `system_instruction`); they are written in camelCase.
//!
//! Decisions (see `docs/conversion.md`, section Gemini, for what is dropped):
//!
//! * **Ids.** Gemini's `functionCall.id` is optional and the public API rejects `id` on
//!   `functionCall` / `functionResponse` in requests on several endpoints ("Unknown name
//!   \"id\""), so rendered *requests* never carry ids (Gemini pairs responses with calls by
//!   name and order). Parsed requests keep a client's ids and synthesise `call_<n>` (in order
//!   of appearance) for calls without one; a `functionResponse` takes the id of the call it
//!   answers — by id when the id matches a call, else the first unanswered call of the same
//!   name in the latest model turn. Responses and streams rendered for a Gemini *client* do
//!   carry the canonical id (the SDKs read `functionCall.id`; gemini-cli echoes it back), and
//!   ids synthesised while parsing an upstream *response* are process-unique (`call_…`) so two
//!   turns never reuse one.
//! * **Thought signatures.** A `thought: true` part is a `Thinking` block (consecutive ones
//!   merge). A `thoughtSignature` on any other part (a `functionCall`, a text part, an empty
//!   signature-only part) becomes the signature of the unsigned `Thinking` block right before
//!   it, or of a new empty `Thinking` block. Rendering reverses this: a `Thinking` block's
//!   signature goes onto the next non-thought part of the same message (else onto the thought
//!   part itself, or for an empty block onto the previous part). In a rendered request the
//!   first `functionCall` of every model turn that still has no signature gets Google's
//!   documented `skip_thought_signature_validator` (required by Gemini 3 for calls that did not
//!   come from Gemini, e.g. a conversation started on another model).
//! * **Tool schemas** are sent as `parametersJsonSchema` (JSON Schema, stored by Gemini as a
//!   free-form value) rather than `parameters` (an OpenAPI-subset proto that rejects
//!   `$schema`, `additionalProperties`, `exclusiveMinimum`, `const`, `propertyNames`, … with
//!   "Unknown name"). Local `$ref`s are inlined (Gemini rejects `$ref` next to other keywords
//!   and unresolved `$defs` references), and `$schema`, `$id`, `$comment`, `$defs`,
//!   `definitions` are removed; a tool without parameters gets no schema. Structured output
//!   uses `responseJsonSchema` with the same cleaning. Parsed `parameters` / `responseSchema`
//!   (OpenAPI subset) are turned into JSON Schema (lower-case types, `nullable`, snake_case
//!   keywords).
//! * **Thinking** is rendered as `thinkingConfig.thinkingBudget` (accepted by Gemini 2.5 and 3;
//!   `thinkingLevel` is rejected by 2.5), capped at 24 576 (2.5 Flash's maximum), with
//!   `includeThoughts: true` so thought summaries come back; budget 0 disables thinking.
//! * **Tool results** are `functionResponse.response = {"result": text}` (`{"error": text}`
//!   when `is_error`); their images follow as `inlineData` parts of the same user turn.
//! * **Usage**: `input = promptTokenCount + toolUsePromptTokenCount` (cache reads included),
//!   `output = candidatesTokenCount + thoughtsTokenCount`, `reasoning = thoughtsTokenCount`,
//!   `cache_read = cachedContentTokenCount`.

use std::collections::{BTreeMap, HashMap};

use aether_protocol::errors::ErrorKind;
use serde_json::{Map, Value, json};

use crate::util::{args_object, fresh_id, json_string, parse_data_url};
use crate::{
    Block, BlockKind, ConvertError, Delta, Effort, Event, Frame, ImageSource, Message,
    OutputFormat, Reasoning, Request, RequestContext, Response, Role, StopReason, StreamDecoder,
    StreamEncoder, Tool, ToolChoice, Usage, kind_for_status,
};

/// The signature Google documents for function calls that did not come from Gemini.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";
/// Gemini accepts at most five stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;
/// The largest thinking budget every Gemini thinking model accepts (2.5 Flash).
const MAX_THINKING_BUDGET: u64 = 24_576;
/// Name given to a structured-output schema (Gemini has none).
const SCHEMA_NAME: &str = "response";
/// Bounds on schema cleaning (inlined `$ref`s can multiply a schema).
const MAX_SCHEMA_DEPTH: usize = 48;
const MAX_SCHEMA_NODES: usize = 20_000;

// ---- field access ---------------------------------------------------------------------------

/// `v[key]` (camelCase), or its snake_case spelling.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    match obj.get(key) {
        Some(found) => Some(found),
        None if key.bytes().any(|b| b.is_ascii_uppercase()) => obj.get(&snake_case(key)),
        None => None,
    }
}

/// `v[key]`, treating JSON `null` as absent.
fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    field(v, key).filter(|x| !x.is_null())
}

fn fstr<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    field(v, key).and_then(Value::as_str)
}

fn flag(v: &Value, key: &str) -> bool {
    field(v, key).and_then(Value::as_bool) == Some(true)
}

/// A count field (integer, integral float or numeric string); absent or unreadable is 0.
fn count(v: &Value, key: &str) -> u64 {
    field(v, key).and_then(as_u64).unwrap_or(0)
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn snake_case(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn camel_case(key: &str) -> String {
    if !key.contains('_') || key.starts_with('_') {
        return key.to_owned();
    }
    let mut s = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            s.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            s.push(c);
        }
    }
    s
}

/// A signature we may write: Gemini's `thoughtSignature` is `bytes`, so the API and the
/// SDKs (the Python SDK strictly) decode it as base64; anything else would fail the whole
/// request or response, so it is left out.
fn writable_signature(sig: Option<&str>) -> Option<&str> {
    sig.filter(|s| is_base64(s))
}

/// Standard or URL-safe base64, padded or not, with zero unused bits (what pydantic accepts).
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    let pad = s.len() - body.len();
    let rem = body.len() % 4;
    let padding_ok = match pad {
        0 => rem != 1,
        1 => rem == 3,
        2 => rem == 2,
        _ => false,
    };
    if body.is_empty() || !padding_ok {
        return false;
    }
    let mut last = 0u8;
    for b in body.bytes() {
        last = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return false,
        };
    }
    match rem {
        2 => last & 0x0F == 0,
        3 => last & 0x03 == 0,
        _ => true,
    }
}

fn invalid(path: &str, what: &str) -> ConvertError {
    ConvertError::invalid(format!("{path}: {what}"))
}

// ---- requests: parse ------------------------------------------------------------------------

pub(crate) fn parse_request(v: &Value, ctx: &RequestContext) -> Result<Request, ConvertError> {
    if !v.is_object() {
        return Err(ConvertError::invalid("body: expected a JSON object"));
    }
    let model = ctx
        .model
        .clone()
        .or_else(|| fstr(v, "model").map(|m| m.strip_prefix("models/").unwrap_or(m).to_owned()))
        .unwrap_or_default();
    let mut req = Request {
        model,
        stream: ctx.stream,
        system: parse_system(present(v, "systemInstruction"))?,
        messages: parse_contents(field(v, "contents"))?,
        tools: parse_tools(present(v, "tools"))?,
        tool_choice: parse_tool_choice(present(v, "toolConfig"))?,
        ..Request::default()
    };
    if let Some(g) = present(v, "generationConfig") {
        parse_generation(g, &mut req)?;
    }
    Ok(req)
}

fn parse_system(v: Option<&Value>) -> Result<Vec<String>, ConvertError> {
    let path = "systemInstruction";
    let parts = match v {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(non_empty(s).into_iter().collect()),
        Some(obj @ Value::Object(_)) => match present(obj, "parts") {
            None => return Ok(Vec::new()),
            Some(Value::Array(parts)) => parts,
            Some(_) => return Err(invalid("systemInstruction.parts", "expected an array")),
        },
        Some(_) => return Err(invalid(path, "expected a Content object")),
    };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match present(p, "text") {
            None => {}
            Some(Value::String(s)) => out.extend(non_empty(s)),
            Some(_) => {
                return Err(invalid(
                    &format!("{path}.parts[{j}].text"),
                    "expected a string",
                ));
            }
        }
    }
    Ok(out)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Tool-call ids while parsing a conversation (see the module docs).
#[derive(Default)]
struct Ids {
    /// Ids synthesised for an upstream response: process-unique.
    unique: bool,
    n: usize,
    /// Every call id seen, with its function name.
    names: HashMap<String, String>,
    /// The calls of the latest model turn: id, name, answered.
    batch: Vec<(String, String, bool)>,
}

impl Ids {
    fn synthesise(&mut self) -> String {
        if self.unique {
            return fresh_id("call_");
        }
        loop {
            self.n += 1;
            let id = format!("call_{}", self.n);
            if !self.names.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_turn(&mut self) {
        self.batch.clear();
    }

    fn call(&mut self, given: Option<&str>, name: &str) -> String {
        let id = match given.filter(|s| !s.is_empty()) {
            Some(g) => g.to_owned(),
            None => self.synthesise(),
        };
        self.names.insert(id.clone(), name.to_owned());
        self.batch.push((id.clone(), name.to_owned(), false));
        id
    }

    /// The id and function name a `functionResponse` answers.
    fn result(&mut self, given: Option<&str>, name: Option<&str>) -> (String, String) {
        let given = given.filter(|s| !s.is_empty());
        let name = name.filter(|s| !s.is_empty());
        if let Some(g) = given
            && let Some(known) = self.names.get(g)
        {
            let known = known.clone();
            if let Some(entry) = self.batch.iter_mut().find(|c| c.0 == g) {
                entry.2 = true;
            }
            return (g.to_owned(), name.map_or(known, str::to_owned));
        }
        if let Some(n) = name
            && let Some(entry) = self.batch.iter_mut().find(|c| !c.2 && c.1 == n)
        {
            entry.2 = true;
            return (entry.0.clone(), n.to_owned());
        }
        let id = given.map_or_else(|| self.synthesise(), str::to_owned);
        (id, name.unwrap_or_default().to_owned())
    }
}

fn parse_contents(v: Option<&Value>) -> Result<Vec<Message>, ConvertError> {
    let items = match v {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(invalid("contents", "required")),
        Some(_) => return Err(invalid("contents", "expected an array of Content objects")),
    };
    let mut ids = Ids::default();
    let mut out: Vec<Message> = Vec::new();
    for (i, c) in items.iter().enumerate() {
        let path = format!("contents[{i}]");
        if !c.is_object() {
            return Err(invalid(&path, "expected a Content object"));
        }
        let role = match present(c, "role") {
            None => Role::User,
            Some(Value::String(r)) => match r.as_str() {
                "" | "user" | "function" => Role::User,
                "model" => Role::Assistant,
                other => {
                    return Err(invalid(
                        &format!("{path}.role"),
                        &format!("unknown role \"{other}\" (expected \"user\" or \"model\")"),
                    ));
                }
            },
            Some(_) => return Err(invalid(&format!("{path}.role"), "expected a string")),
        };
        let parts = parts_of(c, &path)?;
        let blocks = match role {
            Role::User => user_blocks(parts, &path, &mut ids)?,
            Role::Assistant => model_blocks(parts, &path, &mut ids)?,
        };
        push_message(&mut out, role, blocks);
    }
    Ok(out)
}

fn parts_of<'a>(content: &'a Value, path: &str) -> Result<&'a [Value], ConvertError> {
    match present(content, "parts") {
        None => Ok(&[]),
        Some(Value::Array(parts)) => Ok(parts),
        Some(_) => Err(invalid(&format!("{path}.parts"), "expected an array")),
    }
}

/// Appends a message, merging it into the previous one of the same role.
fn push_message(out: &mut Vec<Message>, role: Role, blocks: Vec<Block>) {
    if blocks.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => out.push(Message {
            role,
            content: blocks,
        }),
    }
}

/// The `text` of a part, if it has one (must be a string).
fn part_text<'a>(p: &'a Value, path: &str) -> Result<Option<&'a str>, ConvertError> {
    match present(p, "text") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&format!("{path}.text"), "expected a string")),
    }
}

fn user_blocks(parts: &[Value], path: &str, ids: &mut Ids) -> Result<Vec<Block>, ConvertError> {
    let mut blocks = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let pp = format!("{path}.parts[{j}]");
        if !p.is_object() {
            return Err(invalid(&pp, "expected a Part object"));
        }
        if let Some(text) = part_text(p, &pp)? {
            if !flag(p, "thought") && !text.is_empty() {
                blocks.push(Block::Text {
                    text: text.to_owned(),
                });
            }
        } else if let Some(r) = present(p, "functionResponse") {
            blocks.push(tool_result(r, &format!("{pp}.functionResponse"), ids)?);
        } else if let Some(img) = media_block(p, &pp)? {
            blocks.push(img);
        }
    }
    Ok(blocks)
}

fn model_blocks(parts: &[Value], path: &str, ids: &mut Ids) -> Result<Vec<Block>, ConvertError> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut first_call = true;
    for (j, p) in parts.iter().enumerate() {
        let pp = format!("{path}.parts[{j}]");
        if !p.is_object() {
            return Err(invalid(&pp, "expected a Part object"));
        }
        let sig = fstr(p, "thoughtSignature").filter(|s| !s.is_empty());
        let text = part_text(p, &pp)?;
        if flag(p, "thought") && present(p, "functionCall").is_none() {
            let text = text.unwrap_or_default();
            match blocks.last_mut() {
                Some(Block::Thinking {
                    text: prev,
                    signature,
                }) if signature.is_none() => {
                    prev.push_str(text);
                    *signature = sig.map(str::to_owned);
                }
                _ if text.is_empty() && sig.is_none() => {}
                _ => blocks.push(Block::Thinking {
                    text: text.to_owned(),
                    signature: sig.map(str::to_owned),
                }),
            }
            continue;
        }
        if let Some(s) = sig {
            attach_signature(&mut blocks, s);
        }
        if let Some(text) = text {
            if !text.is_empty() {
                blocks.push(Block::Text {
                    text: text.to_owned(),
                });
            }
        } else if let Some(fc) = present(p, "functionCall") {
            let fp = format!("{pp}.functionCall");
            if !fc.is_object() {
                return Err(invalid(&fp, "expected an object"));
            }
            let name =
                fstr(fc, "name").ok_or_else(|| invalid(&format!("{fp}.name"), "required"))?;
            if first_call {
                ids.new_turn();
                first_call = false;
            }
            let id = ids.call(fstr(fc, "id"), name);
            blocks.push(Block::ToolUse {
                id,
                name: name.to_owned(),
                input: args_object(present(fc, "args")),
            });
        } else if let Some(img) = media_block(p, &pp)? {
            blocks.push(img);
        }
    }
    Ok(blocks)
}

/// Gives `sig` to the unsigned `Thinking` block that ends `blocks`, or to a new empty one.
fn attach_signature(blocks: &mut Vec<Block>, sig: &str) {
    if let Some(Block::Thinking { signature, .. }) = blocks.last_mut()
        && signature.is_none()
    {
        *signature = Some(sig.to_owned());
        return;
    }
    blocks.push(Block::Thinking {
        text: String::new(),
        signature: Some(sig.to_owned()),
    });
}

/// An `inlineData` / `fileData` part as an image block (`None`: not an image, dropped).
fn media_block(p: &Value, path: &str) -> Result<Option<Block>, ConvertError> {
    if let Some(d) = present(p, "inlineData") {
        let dp = format!("{path}.inlineData");
        let mime =
            fstr(d, "mimeType").ok_or_else(|| invalid(&format!("{dp}.mimeType"), "required"))?;
        let data = fstr(d, "data").ok_or_else(|| invalid(&format!("{dp}.data"), "required"))?;
        return Ok(is_image(mime).then(|| Block::Image {
            source: ImageSource::Base64 {
                media_type: mime.to_owned(),
                data: data.to_owned(),
            },
        }));
    }
    if let Some(d) = present(p, "fileData") {
        let dp = format!("{path}.fileData");
        let uri =
            fstr(d, "fileUri").ok_or_else(|| invalid(&format!("{dp}.fileUri"), "required"))?;
        let image = fstr(d, "mimeType").map_or_else(|| guess_image_type(uri).is_some(), is_image);
        return Ok(image.then(|| Block::Image {
            source: ImageSource::Url {
                url: uri.to_owned(),
            },
        }));
    }
    Ok(None)
}

fn is_image(mime: &str) -> bool {
    mime.get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("image/"))
}

/// The image media type a URL's file extension suggests.
fn guess_image_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    match ext.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        "heic" => Some("image/heic"),
        "heif" => Some("image/heif"),
        _ => None,
    }
}

fn tool_result(r: &Value, path: &str, ids: &mut Ids) -> Result<Block, ConvertError> {
    if !r.is_object() {
        return Err(invalid(path, "expected an object"));
    }
    let (text, is_error) = response_text(present(r, "response"));
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(Block::Text { text });
    }
    // Gemini 3 multimodal function responses: media inside the functionResponse.
    if let Some(Value::Array(parts)) = present(r, "parts") {
        for (k, q) in parts.iter().enumerate() {
            if let Some(img) = media_block(q, &format!("{path}.parts[{k}]"))? {
                content.push(img);
            }
        }
    }
    let (id, name) = ids.result(fstr(r, "id"), fstr(r, "name"));
    if name.is_empty() {
        return Err(invalid(&format!("{path}.name"), "required"));
    }
    Ok(Block::ToolResult {
        id,
        name,
        content,
        is_error,
    })
}

/// The text of a `functionResponse.response` and whether it reports an error.
fn response_text(response: Option<&Value>) -> (String, bool) {
    match response {
        None => (String::new(), false),
        Some(Value::String(s)) => (s.clone(), false),
        Some(Value::Object(m)) if m.len() == 1 => match m.iter().next() {
            Some((k, Value::String(s)))
                if matches!(k.as_str(), "result" | "output" | "content") =>
            {
                (s.clone(), false)
            }
            Some((k, Value::String(s))) if k == "error" => (s.clone(), true),
            Some((k, other)) if k == "error" => (json_string(other), true),
            _ => (response.map(json_string).unwrap_or_default(), false),
        },
        Some(other) => (json_string(other), false),
    }
}

fn parse_tools(v: Option<&Value>) -> Result<Vec<Tool>, ConvertError> {
    let tools = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools", "expected an array")),
    };
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        if !t.is_object() {
            return Err(invalid(&path, "expected a Tool object"));
        }
        let decls = match present(t, "functionDeclarations") {
            None => continue, // googleSearch, codeExecution, urlContext, …: dropped
            Some(Value::Array(d)) => d,
            Some(_) => {
                return Err(invalid(
                    &format!("{path}.functionDeclarations"),
                    "expected an array",
                ));
            }
        };
        for (k, d) in decls.iter().enumerate() {
            let dp = format!("{path}.functionDeclarations[{k}]");
            let name = fstr(d, "name").ok_or_else(|| invalid(&format!("{dp}.name"), "required"))?;
            let parameters = if let Some(p) = present(d, "parametersJsonSchema") {
                p.clone()
            } else if let Some(p) = present(d, "parameters") {
                from_openapi(p)
            } else {
                json!({"type": "object", "properties": {}})
            };
            out.push(Tool {
                name: name.to_owned(),
                description: fstr(d, "description").map(str::to_owned),
                parameters,
            });
        }
    }
    Ok(out)
}

fn parse_tool_choice(v: Option<&Value>) -> Result<Option<ToolChoice>, ConvertError> {
    let Some(cfg) = v.and_then(|tc| present(tc, "functionCallingConfig")) else {
        return Ok(None);
    };
    let path = "toolConfig.functionCallingConfig";
    let allowed: Vec<&str> = match present(cfg, "allowedFunctionNames") {
        None => Vec::new(),
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        Some(_) => {
            return Err(invalid(
                &format!("{path}.allowedFunctionNames"),
                "expected an array",
            ));
        }
    };
    let Some(mode) = fstr(cfg, "mode") else {
        return Ok(None);
    };
    let choice = match mode.to_ascii_uppercase().as_str() {
        "MODE_UNSPECIFIED" => return Ok(None),
        "AUTO" | "VALIDATED" => ToolChoice::Auto,
        "NONE" => ToolChoice::None,
        "ANY" => match allowed.as_slice() {
            [one] => ToolChoice::Tool((*one).to_owned()),
            _ => ToolChoice::Required,
        },
        other => {
            return Err(invalid(
                &format!("{path}.mode"),
                &format!("unknown mode \"{other}\" (expected AUTO, ANY or NONE)"),
            ));
        }
    };
    Ok(Some(choice))
}

fn parse_generation(g: &Value, req: &mut Request) -> Result<(), ConvertError> {
    let path = "generationConfig";
    if !g.is_object() {
        return Err(invalid(path, "expected an object"));
    }
    let int = |key: &str| -> Result<Option<u64>, ConvertError> {
        match present(g, key) {
            None => Ok(None),
            Some(v) => as_u64(v).map(Some).ok_or_else(|| {
                invalid(&format!("{path}.{key}"), "expected a non-negative integer")
            }),
        }
    };
    let number = |key: &str| -> Result<Option<serde_json::Number>, ConvertError> {
        match present(g, key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(n.clone())),
            Some(_) => Err(invalid(&format!("{path}.{key}"), "expected a number")),
        }
    };
    if let Some(n) = int("candidateCount")?
        && n != 1
    {
        return Err(invalid(
            &format!("{path}.candidateCount"),
            "only 1 candidate is supported",
        ));
    }
    req.max_tokens = int("maxOutputTokens")?;
    req.temperature = number("temperature")?;
    req.top_p = number("topP")?;
    req.top_k = int("topK")?;
    req.stop = match present(g, "stopSequences") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(&format!("{path}.stopSequences"), "expected strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(
                &format!("{path}.stopSequences"),
                "expected an array",
            ));
        }
    };
    let schema = present(g, "responseJsonSchema")
        .cloned()
        .or_else(|| present(g, "responseSchema").map(from_openapi));
    req.output = match schema {
        Some(schema) => Some(OutputFormat::JsonSchema {
            name: SCHEMA_NAME.to_owned(),
            schema,
            strict: false,
        }),
        None if fstr(g, "responseMimeType") == Some("application/json") => {
            Some(OutputFormat::JsonObject)
        }
        None => None,
    };
    if let Some(tc) = present(g, "thinkingConfig") {
        req.reasoning = parse_thinking(tc)?;
    }
    Ok(())
}

fn parse_thinking(tc: &Value) -> Result<Option<Reasoning>, ConvertError> {
    let path = "generationConfig.thinkingConfig";
    let budget = match present(tc, "thinkingBudget") {
        None => None,
        Some(v) => {
            let n = v
                .as_i64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(|| invalid(&format!("{path}.thinkingBudget"), "expected an integer"))?;
            // -1 asks for a dynamic budget: thinking on, no number.
            Some(u64::try_from(n).ok())
        }
    };
    let level = fstr(tc, "thinkingLevel").and_then(|l| Effort::parse(&l.to_ascii_lowercase()));
    if budget.is_none() && level.is_none() && !flag(tc, "includeThoughts") {
        return Ok(None);
    }
    Ok(Some(Reasoning {
        budget_tokens: budget.flatten(),
        effort: level,
    }))
}

/// An OpenAPI-subset `Schema` (Gemini `parameters` / `responseSchema`) as JSON Schema.
fn from_openapi(v: &Value) -> Value {
    let Value::Object(m) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    let mut nullable = false;
    for (k, val) in m {
        let key = camel_case(k);
        match key.as_str() {
            "type" => match val.as_str() {
                Some(t) if t.eq_ignore_ascii_case("TYPE_UNSPECIFIED") => {}
                Some(t) => {
                    out.insert(key, Value::String(t.to_ascii_lowercase()));
                }
                None => {
                    out.insert(key, val.clone());
                }
            },
            "nullable" => nullable = val.as_bool() == Some(true),
            "propertyOrdering" => {}
            "properties" => {
                let converted = match val {
                    Value::Object(props) => Value::Object(
                        props
                            .iter()
                            .map(|(n, s)| (n.clone(), from_openapi(s)))
                            .collect(),
                    ),
                    other => other.clone(),
                };
                out.insert(key, converted);
            }
            "items" => {
                out.insert(key, from_openapi(val));
            }
            "anyOf" => {
                let converted = match val {
                    Value::Array(items) => Value::Array(items.iter().map(from_openapi).collect()),
                    other => other.clone(),
                };
                out.insert(key, converted);
            }
            _ => {
                out.insert(key, val.clone());
            }
        }
    }
    if nullable && let Some(Value::String(t)) = out.get("type") {
        let t = t.clone();
        out.insert("type".to_owned(), json!([t, "null"]));
    }
    Value::Object(out)
}

// ---- requests: render -----------------------------------------------------------------------

pub(crate) fn render_request(r: &Request) -> Value {
    let mut body = Map::new();
    body.insert(
        "contents".to_owned(),
        Value::Array(render_contents(&r.messages)),
    );
    let system: Vec<Value> = r
        .system
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| json!({"text": s}))
        .collect();
    if !system.is_empty() {
        body.insert("systemInstruction".to_owned(), json!({"parts": system}));
    }
    if !r.tools.is_empty() {
        let decls: Vec<Value> = r.tools.iter().map(declaration).collect();
        body.insert("tools".to_owned(), json!([{"functionDeclarations": decls}]));
        if let Some(choice) = &r.tool_choice {
            let cfg = match choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
            };
            body.insert(
                "toolConfig".to_owned(),
                json!({"functionCallingConfig": cfg}),
            );
        }
    }
    let generation = render_generation(r);
    if !generation.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(generation));
    }
    Value::Object(body)
}

fn declaration(t: &Tool) -> Value {
    let mut d = Map::new();
    d.insert("name".to_owned(), Value::String(t.name.clone()));
    if let Some(desc) = t.description.as_deref().filter(|s| !s.is_empty()) {
        d.insert("description".to_owned(), Value::String(desc.to_owned()));
    }
    if let Some(schema) = tool_schema(&t.parameters) {
        d.insert("parametersJsonSchema".to_owned(), schema);
    }
    Value::Object(d)
}

/// A tool's parameters for `parametersJsonSchema`: cleaned, an object schema, or nothing
/// when the function takes no parameters.
fn tool_schema(parameters: &Value) -> Option<Value> {
    let Value::Object(mut m) = clean_schema(parameters) else {
        return None;
    };
    match m.get("type") {
        Some(Value::String(t)) if t == "object" => {}
        None if m.contains_key("properties") => {
            m.insert("type".to_owned(), Value::String("object".to_owned()));
        }
        _ => return None,
    }
    let has_props = m
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    let open_map = m.get("additionalProperties").is_some_and(Value::is_object);
    (has_props || open_map).then_some(Value::Object(m))
}

fn render_generation(r: &Request) -> Map<String, Value> {
    let mut g = Map::new();
    if let Some(n) = r.max_tokens {
        g.insert("maxOutputTokens".to_owned(), n.into());
    }
    if let Some(t) = &r.temperature {
        g.insert("temperature".to_owned(), Value::Number(t.clone()));
    }
    if let Some(p) = &r.top_p {
        g.insert("topP".to_owned(), Value::Number(p.clone()));
    }
    if let Some(k) = r.top_k {
        g.insert("topK".to_owned(), k.into());
    }
    let stop: Vec<Value> = r
        .stop
        .iter()
        .filter(|s| !s.is_empty())
        .take(MAX_STOP_SEQUENCES)
        .map(|s| Value::String(s.clone()))
        .collect();
    if !stop.is_empty() {
        g.insert("stopSequences".to_owned(), Value::Array(stop));
    }
    match &r.output {
        None => {}
        Some(OutputFormat::JsonObject) => {
            g.insert("responseMimeType".to_owned(), "application/json".into());
        }
        Some(OutputFormat::JsonSchema { schema, .. }) => {
            g.insert("responseMimeType".to_owned(), "application/json".into());
            g.insert("responseJsonSchema".to_owned(), clean_schema(schema));
        }
    }
    if let Some(reasoning) = &r.reasoning {
        let tc = match reasoning.budget() {
            Some(0) => json!({"thinkingBudget": 0}),
            Some(n) => {
                json!({"thinkingBudget": n.min(MAX_THINKING_BUDGET), "includeThoughts": true})
            }
            None => json!({"includeThoughts": true}),
        };
        g.insert("thinkingConfig".to_owned(), tc);
    }
    g
}

fn render_contents(messages: &[Message]) -> Vec<Value> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in messages {
        for b in &m.content {
            if let Block::ToolUse { id, name, .. } = b {
                names.insert(id, name);
            }
        }
    }
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    for m in messages {
        let parts = match m.role {
            Role::User => user_parts(&m.content, &names),
            Role::Assistant => model_parts(&m.content, false),
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((role, prev)) if *role == m.role => prev.extend(parts),
            _ => turns.push((m.role, parts)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut parts)| {
            if role == Role::Assistant {
                sign_first_call(&mut parts);
            }
            let role = if role == Role::User { "user" } else { "model" };
            json!({"role": role, "parts": parts})
        })
        .collect()
}

/// Gives the first `functionCall` of a model turn the documented placeholder signature when
/// it has none (Gemini 3 rejects unsigned calls in the current turn).
fn sign_first_call(parts: &mut [Value]) {
    if let Some(Value::Object(p)) = parts.iter_mut().find(|p| p.get("functionCall").is_some())
        && !p.contains_key("thoughtSignature")
    {
        p.insert("thoughtSignature".to_owned(), SKIP_SIGNATURE.into());
    }
}

/// A user turn: function responses first (Gemini wants them answering the previous model
/// turn), then the images of tool results, then the user's own parts.
fn user_parts(blocks: &[Block], names: &HashMap<&str, &str>) -> Vec<Value> {
    let mut responses = Vec::new();
    let mut media = Vec::new();
    let mut rest = Vec::new();
    for b in blocks {
        match b {
            Block::Text { text } if !text.is_empty() => rest.push(json!({"text": text})),
            Block::Image { source } => rest.push(image_part(source)),
            Block::ToolResult {
                id,
                name,
                content,
                is_error,
            } => {
                let name = if name.is_empty() {
                    names
                        .get(id.as_str())
                        .copied()
                        .unwrap_or("unknown_function")
                } else {
                    name.as_str()
                };
                let text = content
                    .iter()
                    .filter_map(|c| match c {
                        Block::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let key = if *is_error { "error" } else { "result" };
                responses.push(json!({
                    "functionResponse": {"name": name, "response": {key: text}}
                }));
                for c in content {
                    if let Block::Image { source } = c {
                        media.push(image_part(source));
                    }
                }
            }
            _ => {}
        }
    }
    responses.extend(media);
    responses.extend(rest);
    responses
}

fn image_part(source: &ImageSource) -> Value {
    match source {
        ImageSource::Base64 { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        ImageSource::Url { url } => match parse_data_url(url) {
            Some((media_type, data)) => {
                json!({"inlineData": {"mimeType": media_type, "data": data}})
            }
            None => json!({"fileData": {
                "mimeType": guess_image_type(url).unwrap_or("image/jpeg"),
                "fileUri": url,
            }}),
        },
    }
}

/// A model turn's parts (see the module docs for where signatures go). `ids`: write
/// `functionCall.id` (responses to Gemini clients), not in upstream requests.
fn model_parts(blocks: &[Block], ids: bool) -> Vec<Value> {
    let mut parts: Vec<Value> = Vec::new();
    // A signature waiting for the next non-thought part, and where it goes otherwise.
    let mut pending: Option<(String, Option<usize>)> = None;
    for b in blocks {
        let part = match b {
            Block::Thinking { text, signature } => {
                if let Some((sig, fallback)) = pending.take() {
                    place_signature(&mut parts, sig, fallback);
                }
                let own = if text.is_empty() {
                    None
                } else {
                    parts.push(json!({"text": text, "thought": true}));
                    Some(parts.len() - 1)
                };
                if let Some(sig) = writable_signature(signature.as_deref()) {
                    let fallback = own.or_else(|| parts.len().checked_sub(1));
                    pending = Some((sig.to_owned(), fallback));
                }
                continue;
            }
            Block::Text { text } if !text.is_empty() => json!({"text": text}),
            Block::Image { source } => image_part(source),
            Block::ToolUse { id, name, input } => {
                let mut call = Map::new();
                call.insert("name".to_owned(), Value::String(name.clone()));
                call.insert("args".to_owned(), args_object(Some(input)));
                if ids && !id.is_empty() {
                    call.insert("id".to_owned(), Value::String(id.clone()));
                }
                json!({"functionCall": call})
            }
            _ => continue,
        };
        let mut part = part;
        if let Some((sig, _)) = pending.take()
            && let Value::Object(p) = &mut part
        {
            p.insert("thoughtSignature".to_owned(), Value::String(sig));
        }
        parts.push(part);
    }
    if let Some((sig, fallback)) = pending {
        place_signature(&mut parts, sig, fallback);
    }
    parts
}

fn place_signature(parts: &mut [Value], sig: String, at: Option<usize>) {
    if let Some(Value::Object(p)) = at.and_then(|i| parts.get_mut(i))
        && !p.contains_key("thoughtSignature")
    {
        p.insert("thoughtSignature".to_owned(), Value::String(sig));
    }
}

/// A JSON Schema cleaned for Gemini (see the module docs).
fn clean_schema(schema: &Value) -> Value {
    let mut cleaner = Cleaner {
        root: schema,
        stack: Vec::new(),
        budget: MAX_SCHEMA_NODES,
    };
    cleaner.node(schema, 0)
}

struct Cleaner<'a> {
    root: &'a Value,
    /// `$ref`s being expanded (a repeat is a recursive schema: cut there).
    stack: Vec<String>,
    budget: usize,
}

impl Cleaner<'_> {
    fn node(&mut self, node: &Value, depth: usize) -> Value {
        let Value::Object(m) = node else {
            return node.clone();
        };
        if depth > MAX_SCHEMA_DEPTH || self.budget == 0 {
            return Value::Object(Map::new());
        }
        self.budget -= 1;
        let mut out = Map::new();
        if let Some(r) = m.get("$ref").and_then(Value::as_str)
            && !self.stack.iter().any(|s| s == r)
            && let Some(target) = resolve_ref(self.root, r)
        {
            self.stack.push(r.to_owned());
            if let Value::Object(inlined) = self.node(target, depth + 1) {
                out = inlined;
            }
            self.stack.pop();
        }
        for (k, v) in m {
            let cleaned = match k.as_str() {
                "$ref" | "$schema" | "$id" | "$comment" | "$defs" | "definitions" => continue,
                "properties" | "patternProperties" | "dependentSchemas" => match v {
                    Value::Object(map) => {
                        let mut props = Map::new();
                        for (name, s) in map {
                            props.insert(name.clone(), self.node(s, depth + 1));
                        }
                        Value::Object(props)
                    }
                    other => other.clone(),
                },
                "items" | "prefixItems" | "anyOf" | "oneOf" | "allOf" => match v {
                    Value::Array(list) => {
                        Value::Array(list.iter().map(|s| self.node(s, depth + 1)).collect())
                    }
                    other => self.node(other, depth + 1),
                },
                "additionalProperties"
                | "additionalItems"
                | "not"
                | "contains"
                | "propertyNames"
                | "if"
                | "then"
                | "else"
                | "unevaluatedProperties"
                | "unevaluatedItems" => self.node(v, depth + 1),
                _ => v.clone(),
            };
            out.insert(k.clone(), cleaned);
        }
        Value::Object(out)
    }
}

/// A local `$ref` (`#`, `#/$defs/X`, any JSON pointer into the document).
fn resolve_ref<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    match r.strip_prefix('#')? {
        "" => Some(root),
        pointer if pointer.starts_with('/') => root.pointer(pointer),
        _ => None,
    }
}

// ---- responses ------------------------------------------------------------------------------

pub(crate) fn parse_response(v: &Value) -> Result<Response, ConvertError> {
    if !v.is_object() {
        return Err(ConvertError::invalid("body: expected a JSON object"));
    }
    if let Some(err) = present(v, "error") {
        return Err(ConvertError::invalid(format!("error: {}", error_of(err).1)));
    }
    let candidate = present(v, "candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let mut ids = Ids {
        unique: true,
        ..Ids::default()
    };
    let (content, stop) = match candidate {
        Some(c) => {
            let parts = match present(c, "content") {
                Some(content) => parts_of(content, "candidates[0].content")?,
                None => &[],
            };
            let content = model_blocks(parts, "candidates[0].content", &mut ids)?;
            let saw_tool = content.iter().any(|b| matches!(b, Block::ToolUse { .. }));
            let stop = stop_reason(fstr(c, "finishReason").unwrap_or_default(), saw_tool);
            (content, stop)
        }
        None if blocked(v) => (Vec::new(), StopReason::ContentFilter),
        None if present(v, "usageMetadata").is_some() => (Vec::new(), StopReason::EndTurn),
        None => return Err(invalid("candidates", "missing")),
    };
    Ok(Response {
        id: fstr(v, "responseId")
            .filter(|s| !s.is_empty())
            .map_or_else(|| fresh_id("gen_"), str::to_owned),
        model: fstr(v, "modelVersion").unwrap_or_default().to_owned(),
        content,
        stop,
        usage: present(v, "usageMetadata")
            .map(usage_of)
            .unwrap_or_default(),
    })
}

/// Whether the prompt itself was blocked (`promptFeedback.blockReason`).
fn blocked(v: &Value) -> bool {
    present(v, "promptFeedback")
        .and_then(|f| fstr(f, "blockReason"))
        .is_some_and(|r| !r.is_empty() && r != "BLOCK_REASON_UNSPECIFIED")
}

fn stop_reason(reason: &str, saw_tool: bool) -> StopReason {
    match reason {
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "IMAGE_OTHER" => StopReason::ContentFilter,
        // STOP, OTHER, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, … (a stop sequence
        // also ends with STOP)
        _ if saw_tool => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

const fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence(_) | StopReason::ToolUse => "STOP",
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter => "SAFETY",
    }
}

fn usage_of(u: &Value) -> Usage {
    let thoughts = count(u, "thoughtsTokenCount");
    Usage {
        input: count(u, "promptTokenCount").saturating_add(count(u, "toolUsePromptTokenCount")),
        output: count(u, "candidatesTokenCount").saturating_add(thoughts),
        cache_read: count(u, "cachedContentTokenCount"),
        cache_write: 0,
        reasoning: thoughts,
    }
}

fn usage_json(u: &Usage) -> Value {
    let mut m = Map::new();
    m.insert("promptTokenCount".to_owned(), u.input.into());
    m.insert(
        "candidatesTokenCount".to_owned(),
        u.output.saturating_sub(u.reasoning).into(),
    );
    m.insert(
        "totalTokenCount".to_owned(),
        u.input.saturating_add(u.output).into(),
    );
    if u.cache_read > 0 {
        m.insert("cachedContentTokenCount".to_owned(), u.cache_read.into());
    }
    if u.reasoning > 0 {
        m.insert("thoughtsTokenCount".to_owned(), u.reasoning.into());
    }
    Value::Object(m)
}

pub(crate) fn render_response(r: &Response) -> Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": model_parts(&r.content, true)},
            "finishReason": finish_reason(&r.stop),
            "index": 0,
        }],
        "usageMetadata": usage_json(&r.usage),
        "modelVersion": r.model,
        "responseId": r.id,
    })
}

/// The error class and message of a `google.rpc.Status` error object.
fn error_of(err: &Value) -> (ErrorKind, String) {
    let message = fstr(err, "message")
        .map(str::to_owned)
        .or_else(|| err.as_str().map(str::to_owned))
        .unwrap_or_else(|| json_string(err));
    let kind = match field(err, "code")
        .and_then(as_u64)
        .and_then(|c| u16::try_from(c).ok())
    {
        Some(code) if code >= 400 => kind_for_status(code),
        _ => match fstr(err, "status").unwrap_or_default() {
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
                ErrorKind::InvalidRequest
            }
            "UNAUTHENTICATED" => ErrorKind::Authentication,
            "PERMISSION_DENIED" => ErrorKind::PermissionDenied,
            "NOT_FOUND" => ErrorKind::NotFound,
            "RESOURCE_EXHAUSTED" => ErrorKind::RateLimited,
            "UNAVAILABLE" => ErrorKind::Unavailable,
            "DEADLINE_EXCEEDED" => ErrorKind::Timeout,
            _ => ErrorKind::UpstreamError,
        },
    };
    (kind, message)
}

// ---- stream decoder -------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking { signed: bool },
}

/// Gemini SSE chunks (each a `GenerateContentResponse`) → canonical events.
#[derive(Default)]
pub(crate) struct Decoder {
    started: bool,
    failed: bool,
    open: Option<(usize, Open)>,
    next: usize,
    saw_tool: bool,
    /// The last `finishReason` (the Finish is written once the stream ends).
    finish: Option<String>,
    blocked: bool,
    /// A signature that arrived on the text part being streamed: it becomes its own
    /// `Thinking` block when that text block closes.
    text_signature: Option<String>,
    usage: Option<Usage>,
}

impl Decoder {
    fn chunk(&mut self, v: &Value, out: &mut Vec<Event>) {
        if !v.is_object() {
            return;
        }
        if let Some(err) = present(v, "error") {
            let (kind, message) = error_of(err);
            out.push(Event::Error { kind, message });
            self.failed = true;
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: fstr(v, "responseId")
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| fresh_id("gen_"), str::to_owned),
                model: fstr(v, "modelVersion").unwrap_or_default().to_owned(),
            });
        }
        let candidate = present(v, "candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        if let Some(c) = candidate {
            let parts = present(c, "content")
                .and_then(|content| present(content, "parts"))
                .and_then(Value::as_array);
            for p in parts.into_iter().flatten() {
                self.part(p, out);
            }
            if let Some(r) = fstr(c, "finishReason")
                && !r.is_empty()
                && r != "FINISH_REASON_UNSPECIFIED"
            {
                self.finish = Some(r.to_owned());
            }
        } else if blocked(v) {
            self.blocked = true;
        }
        if let Some(u) = present(v, "usageMetadata").filter(|u| u.is_object()) {
            let u = usage_of(u);
            if self.usage != Some(u) {
                self.usage = Some(u);
                out.push(Event::Usage(u));
            }
        }
    }

    fn part(&mut self, p: &Value, out: &mut Vec<Event>) {
        if !p.is_object() {
            return;
        }
        let sig = fstr(p, "thoughtSignature")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let text = fstr(p, "text");
        if flag(p, "thought") && present(p, "functionCall").is_none() {
            let text = text.unwrap_or_default();
            if text.is_empty() && sig.is_none() {
                return;
            }
            let index = match self.open {
                Some((i, Open::Thinking { signed: false })) => i,
                _ => self.open_block(Open::Thinking { signed: false }, out),
            };
            if !text.is_empty() {
                out.push(delta(index, Delta::Thinking(text.to_owned())));
            }
            if let Some(s) = sig {
                out.push(delta(index, Delta::Signature(s)));
                self.open = Some((index, Open::Thinking { signed: true }));
            }
            return;
        }
        if let Some(fc) = present(p, "functionCall").filter(|fc| fc.is_object()) {
            if let Some(s) = sig
                && !self.sign_open_thinking(&s, out)
            {
                self.close(out);
                self.signature_block(s, out);
            }
            self.close(out);
            let id = fstr(fc, "id")
                .filter(|s| !s.is_empty())
                .map_or_else(|| fresh_id("call_"), str::to_owned);
            let name = fstr(fc, "name").unwrap_or_default().to_owned();
            let index = self.next;
            self.next += 1;
            out.push(Event::BlockStart {
                index,
                kind: BlockKind::ToolUse { id, name },
            });
            let args = json_string(&args_object(present(fc, "args")));
            out.push(delta(index, Delta::ToolArgs(args)));
            out.push(Event::BlockStop { index });
            self.saw_tool = true;
            return;
        }
        let text = text.unwrap_or_default();
        let mut after_text = None;
        if let Some(s) = sig {
            if self.sign_open_thinking(&s, out) {
                // the signature closed the thinking block before this part
            } else if !text.is_empty() {
                after_text = Some(s);
            } else if matches!(self.open, Some((_, Open::Text))) {
                self.text_signature = Some(s);
            } else {
                self.close(out);
                self.signature_block(s, out);
            }
        }
        if !text.is_empty() {
            let index = match self.open {
                Some((i, Open::Text)) => i,
                _ => self.open_block(Open::Text, out),
            };
            out.push(delta(index, Delta::Text(text.to_owned())));
            if after_text.is_some() {
                self.text_signature = after_text;
            }
        }
        // inlineData, executableCode, codeExecutionResult, …: no canonical block.
    }

    /// Gives `sig` to the open unsigned thinking block and closes it.
    fn sign_open_thinking(&mut self, sig: &str, out: &mut Vec<Event>) -> bool {
        if let Some((index, Open::Thinking { signed: false })) = self.open {
            out.push(delta(index, Delta::Signature(sig.to_owned())));
            self.close(out);
            return true;
        }
        false
    }

    fn open_block(&mut self, kind: Open, out: &mut Vec<Event>) -> usize {
        self.close(out);
        let index = self.next;
        self.next += 1;
        out.push(Event::BlockStart {
            index,
            kind: match kind {
                Open::Text => BlockKind::Text,
                Open::Thinking { .. } => BlockKind::Thinking,
            },
        });
        self.open = Some((index, kind));
        index
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some((index, kind)) = self.open.take() {
            out.push(Event::BlockStop { index });
            if kind == Open::Text
                && let Some(sig) = self.text_signature.take()
            {
                self.signature_block(sig, out);
            }
        }
    }

    /// A thinking block holding only a signature.
    fn signature_block(&mut self, sig: String, out: &mut Vec<Event>) {
        let index = self.next;
        self.next += 1;
        out.push(Event::BlockStart {
            index,
            kind: BlockKind::Thinking,
        });
        out.push(delta(index, Delta::Signature(sig)));
        out.push(Event::BlockStop { index });
    }
}

const fn delta(index: usize, delta: Delta) -> Event {
    Event::Delta { index, delta }
}

impl StreamDecoder for Decoder {
    fn event(&mut self, _name: Option<&str>, data: &str, out: &mut Vec<Event>) {
        if self.failed {
            return;
        }
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match &v {
            Value::Array(items) => {
                for item in items {
                    self.chunk(item, out);
                    if self.failed {
                        break;
                    }
                }
            }
            other => self.chunk(other, out),
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if self.failed || !self.started {
            return;
        }
        let stop = match &self.finish {
            Some(reason) => Some(stop_reason(reason, self.saw_tool)),
            None if self.blocked => Some(StopReason::ContentFilter),
            None => None,
        };
        if let Some(stop) = stop {
            self.close(out);
            out.push(Event::Finish { stop });
            self.finish = None;
            self.blocked = false;
        }
    }
}

// ---- stream encoder -------------------------------------------------------------------------

struct PendingCall {
    id: String,
    name: String,
    args: String,
}

/// Canonical events → Gemini SSE chunks (`data:` only; the transcoder frames them as an
/// array for clients without `alt=sse`).
#[derive(Default)]
pub(crate) struct Encoder {
    id: String,
    model: String,
    /// Tool calls being streamed, by block index: written whole at their `BlockStop`.
    calls: BTreeMap<usize, PendingCall>,
    /// A thinking signature waiting for the next non-thought part.
    signature: Option<String>,
    usage: Option<Usage>,
    stop: Option<StopReason>,
    ended: bool,
}

impl Encoder {
    /// One chunk; the last one (`last`) also carries the usage.
    fn chunk(&mut self, parts: Vec<Value>, finish: Option<&str>, last: bool) -> Frame {
        if self.id.is_empty() {
            self.id = fresh_id("gen_");
        }
        let mut obj = Map::new();
        if !parts.is_empty() || finish.is_some() {
            let mut candidate = Map::new();
            if !parts.is_empty() {
                candidate.insert(
                    "content".to_owned(),
                    json!({"role": "model", "parts": parts}),
                );
            }
            if let Some(f) = finish {
                candidate.insert("finishReason".to_owned(), f.into());
            }
            candidate.insert("index".to_owned(), 0.into());
            obj.insert("candidates".to_owned(), json!([candidate]));
        }
        if last && let Some(u) = &self.usage {
            obj.insert("usageMetadata".to_owned(), usage_json(u));
        }
        obj.insert("modelVersion".to_owned(), Value::String(self.model.clone()));
        obj.insert("responseId".to_owned(), Value::String(self.id.clone()));
        Frame::data(json_string(&Value::Object(obj)))
    }

    /// A part that may carry the waiting signature.
    fn emit(&mut self, mut part: Value, out: &mut Vec<Frame>) {
        if let Some(sig) = self.signature.take()
            && let Value::Object(p) = &mut part
        {
            p.insert("thoughtSignature".to_owned(), Value::String(sig));
        }
        let frame = self.chunk(vec![part], None, false);
        out.push(frame);
    }

    /// The waiting signature on its own (it belongs to the thinking before it).
    fn signature_part(&mut self) -> Option<Value> {
        self.signature
            .take()
            .map(|sig| json!({"text": "", "thought": true, "thoughtSignature": sig}))
    }

    fn flush_signature(&mut self, out: &mut Vec<Frame>) {
        if let Some(part) = self.signature_part() {
            let frame = self.chunk(vec![part], None, false);
            out.push(frame);
        }
    }

    fn emit_call(&mut self, call: PendingCall, out: &mut Vec<Frame>) {
        let mut fc = Map::new();
        fc.insert("name".to_owned(), Value::String(call.name));
        fc.insert(
            "args".to_owned(),
            args_object(Some(&Value::String(call.args))),
        );
        if !call.id.is_empty() {
            fc.insert("id".to_owned(), Value::String(call.id));
        }
        self.emit(json!({"functionCall": fc}), out);
    }
}

impl StreamEncoder for Encoder {
    fn event(&mut self, e: &Event, out: &mut Vec<Frame>) {
        if self.ended {
            return;
        }
        match e {
            Event::Start { id, model } => {
                if self.id.is_empty() {
                    self.id.clone_from(id);
                }
                if self.model.is_empty() {
                    self.model.clone_from(model);
                }
            }
            Event::BlockStart {
                index,
                kind: BlockKind::ToolUse { id, name },
            } => {
                if let Some(previous) = self.calls.remove(index) {
                    self.emit_call(previous, out);
                }
                self.calls.insert(
                    *index,
                    PendingCall {
                        id: id.clone(),
                        name: name.clone(),
                        args: String::new(),
                    },
                );
            }
            Event::BlockStart { .. } => {}
            Event::Delta { index, delta } => match delta {
                Delta::Text(t) if !t.is_empty() => self.emit(json!({"text": t}), out),
                Delta::Thinking(t) if !t.is_empty() => {
                    self.flush_signature(out);
                    self.emit(json!({"text": t, "thought": true}), out);
                }
                Delta::Signature(s) => {
                    self.flush_signature(out);
                    self.signature = writable_signature(Some(s)).map(str::to_owned);
                }
                Delta::ToolArgs(a) => {
                    self.calls
                        .entry(*index)
                        .or_insert_with(|| PendingCall {
                            id: fresh_id("call_"),
                            name: String::new(),
                            args: String::new(),
                        })
                        .args
                        .push_str(a);
                }
                _ => {}
            },
            Event::BlockStop { index } => {
                if let Some(call) = self.calls.remove(index) {
                    self.emit_call(call, out);
                }
            }
            Event::Usage(u) => {
                self.usage = Some(self.usage.map_or(*u, |prev| prev.merge(*u)));
            }
            Event::Finish { stop } => self.stop = Some(stop.clone()),
            Event::Error { .. } => {}
        }
    }

    fn end(&mut self, out: &mut Vec<Frame>) {
        if self.ended {
            return;
        }
        self.ended = true;
        for (_, call) in std::mem::take(&mut self.calls) {
            self.emit_call(call, out);
        }
        let parts: Vec<Value> = self.signature_part().into_iter().collect();
        let finish = self.stop.as_ref().map(finish_reason);
        if finish.is_some() || self.usage.is_some() || !parts.is_empty() {
            let frame = self.chunk(parts, finish, true);
            out.push(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Framing, Transcoder};
    use aether_domain::format::Dialect;
    use serde_json::Number;

    fn ctx(model: &str, stream: bool) -> RequestContext {
        RequestContext {
            model: Some(model.to_owned()),
            stream,
        }
    }

    fn num(s: &str) -> Number {
        serde_json::from_str(s).unwrap()
    }

    fn text(t: &str) -> Block {
        Block::Text { text: t.to_owned() }
    }

    fn thinking(t: &str, sig: Option<&str>) -> Block {
        Block::Thinking {
            text: t.to_owned(),
            signature: sig.map(str::to_owned),
        }
    }

    fn tool_use(id: &str, name: &str, input: Value) -> Block {
        Block::ToolUse {
            id: id.to_owned(),
            name: name.to_owned(),
            input,
        }
    }

    fn tool_result(id: &str, name: &str, content: Vec<Block>, is_error: bool) -> Block {
        Block::ToolResult {
            id: id.to_owned(),
            name: name.to_owned(),
            content,
            is_error,
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

    /// A Gemini-native multi-turn request: system prompt, images, thinking with signatures,
    /// parallel calls without ids, their results (one an error), structured output.
    fn native_request() -> Value {
        json!({
            "systemInstruction": {"role": "user", "parts": [
                {"text": "You are a weather bot."}, {"text": "Answer briefly."}
            ]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Paris and London? Here is a map."},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/sky.jpg"}},
                    {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}
                ]},
                {"role": "model", "parts": [
                    {"text": "Planning the lookups.", "thought": true},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                     "thoughtSignature": "c2lnLTE="},
                    {"functionCall": {"name": "get_weather", "args": {"city": "London"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "18°C, sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"error": "service unavailable"}}}
                ]},
                {"role": "model", "parts": [
                    {"text": "Paris is sunny; London failed.", "thoughtSignature": "c2lnLTI="}
                ]},
                {"role": "user", "parts": [{"text": "Thanks!"}]}
            ],
            "tools": [
                {"functionDeclarations": [
                    {"name": "get_weather", "description": "Current weather",
                     "parametersJsonSchema": {"type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false}},
                    {"name": "get_time", "parameters": {"type": "OBJECT",
                        "properties": {"tz": {"type": "STRING", "nullable": true}},
                        "required": ["tz"], "propertyOrdering": ["tz"]}}
                ]},
                {"googleSearch": {}}
            ],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {
                "maxOutputTokens": 1024, "temperature": 0.7, "topP": 0.95, "topK": 40,
                "stopSequences": ["END"], "candidateCount": 1,
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "properties": {"summary": {"type": "string"}}},
                "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}
            },
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
        })
    }

    fn native_canonical() -> Request {
        Request {
            model: "gemini-2.5-flash".to_owned(),
            system: vec![
                "You are a weather bot.".to_owned(),
                "Answer briefly.".to_owned(),
            ],
            messages: vec![
                user(vec![
                    text("Weather in Paris and London? Here is a map."),
                    Block::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".to_owned(),
                            data: "iVBORw0KGgo=".to_owned(),
                        },
                    },
                    Block::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/sky.jpg".to_owned(),
                        },
                    },
                ]),
                assistant(vec![
                    thinking("Planning the lookups.", Some("c2lnLTE=")),
                    tool_use("call_1", "get_weather", json!({"city": "Paris"})),
                    tool_use("call_2", "get_weather", json!({"city": "London"})),
                ]),
                user(vec![
                    tool_result("call_1", "get_weather", vec![text("18°C, sunny")], false),
                    tool_result(
                        "call_2",
                        "get_weather",
                        vec![text("service unavailable")],
                        true,
                    ),
                ]),
                assistant(vec![
                    thinking("", Some("c2lnLTI=")),
                    text("Paris is sunny; London failed."),
                ]),
                user(vec![text("Thanks!")]),
            ],
            tools: vec![
                Tool {
                    name: "get_weather".to_owned(),
                    description: Some("Current weather".to_owned()),
                    parameters: json!({"type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false}),
                },
                Tool {
                    name: "get_time".to_owned(),
                    description: None,
                    parameters: json!({"type": "object",
                        "properties": {"tz": {"type": ["string", "null"]}},
                        "required": ["tz"]}),
                },
            ],
            tool_choice: Some(ToolChoice::Tool("get_weather".to_owned())),
            parallel_tool_calls: None,
            max_tokens: Some(1024),
            temperature: Some(num("0.7")),
            top_p: Some(num("0.95")),
            top_k: Some(40),
            stop: vec!["END".to_owned()],
            stream: true,
            output: Some(OutputFormat::JsonSchema {
                name: "response".to_owned(),
                schema: json!({"type": "object", "properties": {"summary": {"type": "string"}}}),
                strict: false,
            }),
            reasoning: Some(Reasoning {
                budget_tokens: Some(2048),
                effort: None,
            }),
        }
    }

    #[test]
    fn parses_a_native_multi_turn_request() {
        let req = parse_request(&native_request(), &ctx("gemini-2.5-flash", true)).unwrap();
        assert_eq!(req, native_canonical());
    }

    #[test]
    fn renders_a_native_request_back_to_what_gemini_accepts() {
        let body = render_request(&native_canonical());
        assert_eq!(
            body,
            json!({
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "Weather in Paris and London? Here is a map."},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/sky.jpg"}}
                    ]},
                    {"role": "model", "parts": [
                        {"text": "Planning the lookups.", "thought": true},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                         "thoughtSignature": "c2lnLTE="},
                        {"functionCall": {"name": "get_weather", "args": {"city": "London"}}}
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"result": "18°C, sunny"}}},
                        {"functionResponse": {"name": "get_weather", "response": {"error": "service unavailable"}}}
                    ]},
                    {"role": "model", "parts": [
                        {"text": "Paris is sunny; London failed.", "thoughtSignature": "c2lnLTI="}
                    ]},
                    {"role": "user", "parts": [{"text": "Thanks!"}]}
                ],
                "systemInstruction": {"parts": [{"text": "You are a weather bot."}, {"text": "Answer briefly."}]},
                "tools": [{"functionDeclarations": [
                    {"name": "get_weather", "description": "Current weather",
                     "parametersJsonSchema": {"type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false}},
                    {"name": "get_time", "parametersJsonSchema": {"type": "object",
                        "properties": {"tz": {"type": ["string", "null"]}}, "required": ["tz"]}}
                ]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
                "generationConfig": {
                    "maxOutputTokens": 1024, "temperature": 0.7, "topP": 0.95, "topK": 40,
                    "stopSequences": ["END"],
                    "responseMimeType": "application/json",
                    "responseJsonSchema": {"type": "object", "properties": {"summary": {"type": "string"}}},
                    "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}
                }
            })
        );
        // No model and no stream flag in a Gemini body.
        assert!(body.get("model").is_none() && body.get("stream").is_none());
    }

    #[test]
    fn request_round_trips_through_the_canonical_form() {
        let req = native_canonical();
        let again = parse_request(&render_request(&req), &ctx("gemini-2.5-flash", true)).unwrap();
        assert_eq!(again, req);
    }

    /// A conversation that came from another dialect (Anthropic-style ids, no Gemini
    /// signatures, results without names, schemas with `$ref`).
    #[test]
    fn renders_a_foreign_conversation() {
        let req = Request {
            model: "gemini-3-pro-preview".to_owned(),
            system: vec!["Be terse.".to_owned()],
            messages: vec![
                user(vec![
                    text("hi"),
                    Block::Image {
                        source: ImageSource::Url {
                            url: "data:image/png;base64,AAAA".to_owned(),
                        },
                    },
                    Block::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/cat.webp?size=2".to_owned(),
                        },
                    },
                ]),
                assistant(vec![
                    thinking("Need both files.", None),
                    text("Reading them."),
                    tool_use("toolu_01", "read_file", json!({"path": "a.rs"})),
                    tool_use("toolu_02", "read_file", json!({"path": "b.rs"})),
                ]),
                user(vec![
                    text("and then?"),
                    tool_result("toolu_01", "read_file", vec![text("fn main() {}")], false),
                    tool_result("toolu_02", "", vec![text("not found")], true),
                ]),
                assistant(vec![tool_use("toolu_03", "list", json!({}))]),
                user(vec![tool_result(
                    "toolu_03",
                    "list",
                    vec![
                        text("a.rs"),
                        text("b.rs"),
                        Block::Image {
                            source: ImageSource::Base64 {
                                media_type: "image/png".to_owned(),
                                data: "QUJD".to_owned(),
                            },
                        },
                    ],
                    false,
                )]),
            ],
            tools: vec![
                Tool {
                    name: "read_file".to_owned(),
                    description: Some("Read a file".to_owned()),
                    parameters: json!({
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "type": "object",
                        "properties": {
                            "path": {"$ref": "#/$defs/Path", "description": "the file"},
                            "range": {"type": "integer", "exclusiveMinimum": 0}
                        },
                        "required": ["path"],
                        "additionalProperties": false,
                        "$defs": {"Path": {"type": "string", "minLength": 1}}
                    }),
                },
                Tool {
                    name: "list".to_owned(),
                    description: None,
                    parameters: json!({"type": "object", "properties": {}}),
                },
            ],
            tool_choice: Some(ToolChoice::Required),
            parallel_tool_calls: Some(false),
            max_tokens: Some(4096),
            temperature: Some(num("1")),
            top_p: None,
            top_k: None,
            stop: ["a", "b", "c", "d", "e", "f"].map(str::to_owned).to_vec(),
            stream: false,
            output: Some(OutputFormat::JsonObject),
            reasoning: Some(Reasoning {
                budget_tokens: None,
                effort: Some(Effort::High),
            }),
        };
        assert_eq!(
            render_request(&req),
            json!({
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "hi"},
                        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}}
                    ]},
                    {"role": "model", "parts": [
                        {"text": "Need both files.", "thought": true},
                        {"text": "Reading them."},
                        {"functionCall": {"name": "read_file", "args": {"path": "a.rs"}},
                         "thoughtSignature": "skip_thought_signature_validator"},
                        {"functionCall": {"name": "read_file", "args": {"path": "b.rs"}}}
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "read_file", "response": {"result": "fn main() {}"}}},
                        {"functionResponse": {"name": "read_file", "response": {"error": "not found"}}},
                        {"text": "and then?"}
                    ]},
                    {"role": "model", "parts": [
                        {"functionCall": {"name": "list", "args": {}},
                         "thoughtSignature": "skip_thought_signature_validator"}
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "list", "response": {"result": "a.rs\nb.rs"}}},
                        {"inlineData": {"mimeType": "image/png", "data": "QUJD"}}
                    ]}
                ],
                "systemInstruction": {"parts": [{"text": "Be terse."}]},
                "tools": [{"functionDeclarations": [
                    {"name": "read_file", "description": "Read a file", "parametersJsonSchema": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string", "minLength": 1, "description": "the file"},
                            "range": {"type": "integer", "exclusiveMinimum": 0}
                        },
                        "required": ["path"],
                        "additionalProperties": false
                    }},
                    {"name": "list"}
                ]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
                "generationConfig": {
                    "maxOutputTokens": 4096, "temperature": 1,
                    "stopSequences": ["a", "b", "c", "d", "e"],
                    "responseMimeType": "application/json",
                    "thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": true}
                }
            })
        );
    }

    #[test]
    fn signature_placement_round_trips() {
        // Gemini-shaped model turns parse and render back unchanged.
        let turns = [
            json!([{"text": "think", "thought": true, "thoughtSignature": "UzE="}]),
            json!([{"text": "b", "thought": true, "thoughtSignature": "UzE="},
                   {"text": "c", "thought": true, "thoughtSignature": "UzI="}]),
            json!([{"text": "answer", "thoughtSignature": "UzE="}]),
            json!([{"text": "x"}, {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "UzE="}]),
            json!([{"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "UzE="},
                   {"functionCall": {"name": "g", "args": {}}}]),
        ];
        for parts in turns {
            let body = json!({"contents": [
                {"role": "user", "parts": [{"text": "q"}]},
                {"role": "model", "parts": parts}
            ]});
            let req = parse_request(&body, &RequestContext::default()).unwrap();
            assert_eq!(
                render_request(&req)["contents"],
                body["contents"],
                "{parts}"
            );
        }
        // The merged thought text keeps its signature.
        let body = json!({"contents": [{"role": "model", "parts": [
            {"text": "a", "thought": true}, {"text": "b", "thought": true, "thoughtSignature": "UzE="}
        ]}]});
        let req = parse_request(&body, &RequestContext::default()).unwrap();
        assert_eq!(req.messages[0].content, vec![thinking("ab", Some("UzE="))]);
        // An empty thinking block's signature lands on the part before it when nothing follows.
        let msgs = vec![assistant(vec![text("done"), thinking("", Some("UzE="))])];
        assert_eq!(
            render_contents(&msgs),
            vec![json!({"role": "model", "parts": [{"text": "done", "thoughtSignature": "UzE="}]})]
        );
    }

    #[test]
    fn only_base64_signatures_are_written() {
        for ok in [
            "c2lnLTE=",
            "abc",
            "EqQBCkgIARABGAIiQPtM+/x9lQ==",
            "EqQBCkgIARABGAIiQPtM-_x9lQ",
            SKIP_SIGNATURE,
        ] {
            assert!(is_base64(ok), "{ok}");
        }
        for bad in [
            "",
            "=",
            "a",
            "ab=",
            "abc==",
            "abcd=",
            "ab===",
            "EqQBCkgIARABGAIiQPtM+/x9lS==",
            "a b",
        ] {
            assert!(!is_base64(bad), "{bad}");
        }
        // A foreign, undecodable signature is left out; the call gets the placeholder.
        let msgs = vec![assistant(vec![
            thinking("hm", Some("not base64!")),
            tool_use("t", "f", json!({})),
        ])];
        assert_eq!(
            render_contents(&msgs),
            vec![json!({"role": "model", "parts": [
                {"text": "hm", "thought": true},
                {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": SKIP_SIGNATURE}
            ]})]
        );
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        enc.event(
            &delta(0, Delta::Signature("not base64!".to_owned())),
            &mut out,
        );
        enc.event(&delta(1, Delta::Text("hi".to_owned())), &mut out);
        assert_eq!(
            frames_json(&out)[0]["candidates"][0]["content"]["parts"],
            json!([{"text": "hi"}])
        );
    }

    #[test]
    fn function_responses_match_calls_by_id_then_by_name() {
        let body = json!({"contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": [
                {"functionCall": {"id": "fc-a", "name": "search", "args": {"q": "x"}}},
                {"functionCall": {"name": "search", "args": {"q": "y"}}},
                {"functionCall": {"name": "open", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "open", "response": {"output": "opened"}}},
                {"functionResponse": {"id": "gemini-cli-generated", "name": "search", "response": {"output": "y hits"}}},
                {"functionResponse": {"id": "fc-a", "response": {"content": "x hits"}}}
            ]}
        ]});
        let req = parse_request(&body, &RequestContext::default()).unwrap();
        assert_eq!(
            req.messages[2].content,
            vec![
                tool_result("call_2", "open", vec![text("opened")], false),
                // No call has that id: the first unanswered `search` call is matched by name.
                tool_result("fc-a", "search", vec![text("y hits")], false),
                // Known id, name filled in from the call.
                tool_result("fc-a", "search", vec![text("x hits")], false),
            ]
        );
        assert_eq!(
            req.messages[1].content[1],
            tool_use("call_1", "search", json!({"q": "y"}))
        );
    }

    #[test]
    fn function_response_shapes() {
        assert_eq!(
            response_text(Some(&json!({"result": "ok"}))),
            ("ok".to_owned(), false)
        );
        assert_eq!(
            response_text(Some(&json!({"output": "ok"}))),
            ("ok".to_owned(), false)
        );
        assert_eq!(
            response_text(Some(&json!({"error": "boom"}))),
            ("boom".to_owned(), true)
        );
        assert_eq!(
            response_text(Some(&json!({"error": {"code": 3}}))),
            ("{\"code\":3}".to_owned(), true)
        );
        assert_eq!(
            response_text(Some(&json!({"temp": 18, "unit": "C"}))),
            ("{\"temp\":18,\"unit\":\"C\"}".to_owned(), false)
        );
        assert_eq!(
            response_text(Some(&json!({"result": 5}))),
            ("{\"result\":5}".to_owned(), false)
        );
        assert_eq!(response_text(None), (String::new(), false));
        // Gemini 3 multimodal function responses keep their images.
        let body = json!({"contents": [
            {"role": "model", "parts": [{"functionCall": {"name": "shot", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "shot", "response": {"result": "see image"},
                "parts": [{"inlineData": {"mimeType": "image/png", "data": "QUJD"}}]}}]}
        ]});
        let req = parse_request(&body, &RequestContext::default()).unwrap();
        assert_eq!(
            req.messages[1].content,
            vec![tool_result(
                "call_1",
                "shot",
                vec![
                    text("see image"),
                    Block::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".to_owned(),
                            data: "QUJD".to_owned()
                        }
                    }
                ],
                false
            )]
        );
    }

    #[test]
    fn accepts_snake_case_fields_and_other_settings() {
        let body = json!({
            "system_instruction": {"parts": [{"text": "sys"}]},
            "contents": [{"parts": [{"text": "hello"},
                {"inline_data": {"mime_type": "image/jpeg", "data": "/9j/"}}]}],
            "tools": [{"function_declarations": [{"name": "f", "parameters": {
                "type": "OBJECT", "properties": {"xs": {"type": "ARRAY", "items": {"type": "INTEGER"}, "max_items": 3}}}}]}],
            "tool_config": {"function_calling_config": {"mode": "none"}},
            "generation_config": {"max_output_tokens": 10, "stop_sequences": "STOP",
                "response_mime_type": "application/json",
                "thinking_config": {"thinking_level": "LOW"}}
        });
        let req = parse_request(&body, &RequestContext::default()).unwrap();
        assert_eq!(req.system, vec!["sys".to_owned()]);
        assert_eq!(req.messages.len(), 1);
        assert_eq!(req.messages[0].content.len(), 2);
        assert_eq!(
            req.tools[0].parameters,
            json!({"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}}})
        );
        assert_eq!(req.tool_choice, Some(ToolChoice::None));
        assert_eq!(req.max_tokens, Some(10));
        assert_eq!(req.stop, vec!["STOP".to_owned()]);
        assert_eq!(req.output, Some(OutputFormat::JsonObject));
        assert_eq!(
            req.reasoning,
            Some(Reasoning {
                budget_tokens: None,
                effort: Some(Effort::Low)
            })
        );
        // Low effort renders as its budget (thinkingLevel is refused by Gemini 2.5).
        assert_eq!(
            render_request(&req)["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 2048, "includeThoughts": true})
        );
    }

    #[test]
    fn thinking_budgets() {
        let parse = |tc: Value| {
            let body = json!({"contents": [], "generationConfig": {"thinkingConfig": tc}});
            parse_request(&body, &RequestContext::default())
                .unwrap()
                .reasoning
        };
        let r = |budget: Option<u64>, effort: Option<Effort>| {
            Some(Reasoning {
                budget_tokens: budget,
                effort,
            })
        };
        assert_eq!(parse(json!({"thinkingBudget": -1})), r(None, None));
        assert_eq!(parse(json!({"thinkingBudget": 0})), r(Some(0), None));
        assert_eq!(parse(json!({"includeThoughts": true})), r(None, None));
        assert_eq!(parse(json!({"includeThoughts": false})), None);
        assert_eq!(
            parse(json!({"thinkingBudget": 512, "thinkingLevel": "high"})),
            r(Some(512), Some(Effort::High))
        );
        let render = |reasoning| {
            let req = Request {
                reasoning,
                ..Request::default()
            };
            render_request(&req)["generationConfig"]["thinkingConfig"].clone()
        };
        assert_eq!(render(r(Some(0), None)), json!({"thinkingBudget": 0}));
        assert_eq!(render(r(None, None)), json!({"includeThoughts": true}));
        assert_eq!(
            render(r(Some(31_999), None)),
            json!({"thinkingBudget": 24576, "includeThoughts": true})
        );
        assert_eq!(render(None), Value::Null);
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let err = |body: Value| match parse_request(&body, &RequestContext::default()) {
            Err(ConvertError::Invalid(m)) => m,
            other => panic!("expected an error, got {other:?}"),
        };
        assert_eq!(err(json!([])), "body: expected a JSON object");
        assert_eq!(err(json!({})), "contents: required");
        assert_eq!(
            err(json!({"contents": {}})),
            "contents: expected an array of Content objects"
        );
        assert_eq!(
            err(json!({"contents": [{"role": "system", "parts": []}]})),
            "contents[0].role: unknown role \"system\" (expected \"user\" or \"model\")"
        );
        assert_eq!(
            err(json!({"contents": [{"parts": {}}]})),
            "contents[0].parts: expected an array"
        );
        assert_eq!(
            err(json!({"contents": [{"parts": [{"text": 5}]}]})),
            "contents[0].parts[0].text: expected a string"
        );
        assert_eq!(
            err(
                json!({"contents": [{"role": "model", "parts": [{"functionCall": {"args": {}}}]}]})
            ),
            "contents[0].parts[0].functionCall.name: required"
        );
        assert_eq!(
            err(json!({"contents": [{"parts": [{"functionResponse": {"response": {}}}]}]})),
            "contents[0].parts[0].functionResponse.name: required"
        );
        assert_eq!(
            err(json!({"contents": [{"parts": [{"inlineData": {"data": "x"}}]}]})),
            "contents[0].parts[0].inlineData.mimeType: required"
        );
        assert_eq!(
            err(json!({"contents": [], "generationConfig": {"candidateCount": 2}})),
            "generationConfig.candidateCount: only 1 candidate is supported"
        );
        assert_eq!(
            err(json!({"contents": [], "generationConfig": {"temperature": "hot"}})),
            "generationConfig.temperature: expected a number"
        );
        assert_eq!(
            err(
                json!({"contents": [], "tools": [{"functionDeclarations": [{"description": "x"}]}]})
            ),
            "tools[0].functionDeclarations[0].name: required"
        );
        assert_eq!(
            err(
                json!({"contents": [], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}})
            ),
            "toolConfig.functionCallingConfig.mode: unknown mode \"SOMETIMES\" (expected AUTO, ANY or NONE)"
        );
    }

    #[test]
    fn schemas_are_cleaned_for_gemini() {
        // Recursive references are cut, pointers into the document resolve.
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "node": {"$ref": "#/definitions/Node"},
                "again": {"$ref": "#/properties/node"},
                "remote": {"$ref": "https://example.com/x.json", "description": "kept"},
                "enum_like": {"enum": ["$ref", "$schema"], "default": {"$ref": "data"}}
            },
            "definitions": {"Node": {"type": "object", "properties": {
                "child": {"$ref": "#/definitions/Node"}, "name": {"type": "string"}}}}
        });
        let node =
            json!({"type": "object", "properties": {"child": {}, "name": {"type": "string"}}});
        assert_eq!(
            clean_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "node": node,
                    "again": node,
                    "remote": {"description": "kept"},
                    "enum_like": {"enum": ["$ref", "$schema"], "default": {"$ref": "data"}}
                }
            })
        );
        // A self-referencing root does not loop.
        let looped = json!({"type": "object", "properties": {"me": {"$ref": "#"}}});
        assert_eq!(
            clean_schema(&looped),
            json!({"type": "object", "properties": {"me": {"type": "object", "properties": {"me": {}}}}})
        );
        // Exponential reference fan-out stays bounded.
        let mut defs = Map::new();
        for i in 0..40 {
            defs.insert(
                format!("D{i}"),
                json!({"type": "object", "properties": {
                    "a": {"$ref": format!("#/$defs/D{}", i + 1)},
                    "b": {"$ref": format!("#/$defs/D{}", i + 1)}}}),
            );
        }
        let wide =
            json!({"type": "object", "properties": {"x": {"$ref": "#/$defs/D0"}}, "$defs": defs});
        let cleaned = json_string(&clean_schema(&wide));
        assert!(cleaned.len() < 5_000_000, "{}", cleaned.len());
        // Tool schemas without parameters are omitted; non-object ones are refused.
        assert_eq!(tool_schema(&json!({"type": "object"})), None);
        assert_eq!(tool_schema(&json!({})), None);
        assert_eq!(tool_schema(&json!({"type": "string"})), None);
        assert_eq!(
            tool_schema(&json!({"properties": {"a": {"type": "string"}}})),
            Some(json!({"type": "object", "properties": {"a": {"type": "string"}}}))
        );
        assert_eq!(
            tool_schema(&json!({"type": "object", "additionalProperties": {"type": "number"}})),
            Some(json!({"type": "object", "additionalProperties": {"type": "number"}}))
        );
    }

    #[test]
    fn parses_the_gemini_cli_capture() {
        let capture: Value = serde_json::from_str(include_str!(
            "../../../fixtures/clients/gemini-cli-0.61.0.streamGenerateContent.json"
        ))
        .unwrap();
        let req = parse_request(&capture["body"], &ctx("gemini-2.5-flash", true)).unwrap();
        assert_eq!(req.model, "gemini-2.5-flash");
        assert!(req.stream);
        assert_eq!(req.system.len(), 1);
        assert!(req.system[0].starts_with("You are a non-interactive CLI agent"));
        assert_eq!(req.messages.len(), 1);
        assert_eq!(req.messages[0].role, Role::User);
        assert_eq!(req.messages[0].content.len(), 2);
        assert!(
            matches!(&req.messages[0].content[0], Block::Text { text } if text.starts_with("<session_context>"))
        );
        assert_eq!(req.messages[0].content[1], text("say hi"));
        let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "update_topic",
                "list_directory",
                "read_file",
                "grep_search",
                "glob",
                "google_web_search",
                "enter_plan_mode",
                "invoke_agent"
            ]
        );
        let read_file = &req.tools[2];
        assert_eq!(
            read_file.parameters["properties"]["start_line"]["minimum"],
            json!(1)
        );
        assert!(
            read_file
                .description
                .as_deref()
                .is_some_and(|d| !d.is_empty())
        );
        assert_eq!(req.tool_choice, None);
        assert_eq!(req.temperature, Some(num("1")));
        assert_eq!(req.top_p, Some(num("0.95")));
        assert_eq!(req.top_k, Some(64));
        assert_eq!(
            req.reasoning,
            Some(Reasoning {
                budget_tokens: Some(8192),
                effort: None
            })
        );
        // And back: the same tools and config.
        let body = render_request(&req);
        assert_eq!(
            body["generationConfig"], capture["body"]["generationConfig"],
            "generation config survives unchanged"
        );
        assert_eq!(body["contents"], capture["body"]["contents"]);
        let decls = body["tools"][0]["functionDeclarations"].as_array().unwrap();
        assert_eq!(decls.len(), 8);
        for (ours, theirs) in decls.iter().zip(
            capture["body"]["tools"][0]["functionDeclarations"]
                .as_array()
                .unwrap(),
        ) {
            assert_eq!(ours, theirs);
        }
    }

    // ---- responses ----

    fn native_response() -> Value {
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "The user wants two forecasts.", "thought": true},
                    {"text": "Let me check both cities."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTE="},
                    {"functionCall": {"name": "get_weather", "args": {"city": "London"}}}
                ]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {
                "promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 190,
                "cachedContentTokenCount": 64, "thoughtsTokenCount": 40,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}]
            },
            "modelVersion": "gemini-2.5-pro",
            "responseId": "mGxRaN3eLqSu1MkPgZ2A4Qk"
        })
    }

    fn ids_of(content: &[Block]) -> Vec<String> {
        content
            .iter()
            .filter_map(|b| match b {
                Block::ToolUse { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn parses_a_response_with_thinking_tools_and_cache_usage() {
        let resp = parse_response(&native_response()).unwrap();
        let ids = ids_of(&resp.content);
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|id| id.starts_with("call_")) && ids[0] != ids[1]);
        assert_eq!(
            resp,
            Response {
                id: "mGxRaN3eLqSu1MkPgZ2A4Qk".to_owned(),
                model: "gemini-2.5-pro".to_owned(),
                content: vec![
                    thinking("The user wants two forecasts.", None),
                    text("Let me check both cities."),
                    thinking("", Some("c2lnLTE=")),
                    tool_use(&ids[0], "get_weather", json!({"city": "Paris"})),
                    tool_use(&ids[1], "get_weather", json!({"city": "London"})),
                ],
                stop: StopReason::ToolUse,
                usage: Usage {
                    input: 120,
                    output: 70,
                    cache_read: 64,
                    cache_write: 0,
                    reasoning: 40
                },
            }
        );
        // Ids synthesised for two responses never repeat.
        let again = parse_response(&native_response()).unwrap();
        assert!(ids_of(&again.content).iter().all(|id| !ids.contains(id)));
    }

    #[test]
    fn renders_a_response_as_gemini_sends_it() {
        let resp = Response {
            id: "mGxRaN3eLqSu1MkPgZ2A4Qk".to_owned(),
            model: "gemini-2.5-pro".to_owned(),
            content: vec![
                thinking("The user wants two forecasts.", None),
                text("Let me check both cities."),
                thinking("", Some("c2lnLTE=")),
                tool_use("toolu_1", "get_weather", json!({"city": "Paris"})),
                tool_use("toolu_2", "get_weather", json!({"city": "London"})),
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: 120,
                output: 70,
                cache_read: 64,
                cache_write: 0,
                reasoning: 40,
            },
        };
        let body = render_response(&resp);
        assert_eq!(
            body,
            json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [
                        {"text": "The user wants two forecasts.", "thought": true},
                        {"text": "Let me check both cities."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "toolu_1"},
                         "thoughtSignature": "c2lnLTE="},
                        {"functionCall": {"name": "get_weather", "args": {"city": "London"}, "id": "toolu_2"}}
                    ]},
                    "finishReason": "STOP",
                    "index": 0
                }],
                "usageMetadata": {
                    "promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 190,
                    "cachedContentTokenCount": 64, "thoughtsTokenCount": 40
                },
                "modelVersion": "gemini-2.5-pro",
                "responseId": "mGxRaN3eLqSu1MkPgZ2A4Qk"
            })
        );
        // Ids given to the client come back unchanged.
        assert_eq!(parse_response(&body).unwrap(), resp);
    }

    #[test]
    fn finish_reasons_and_blocked_prompts() {
        let with = |reason: &str, parts: Value| {
            parse_response(&json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": reason}]}))
                .unwrap()
                .stop
        };
        assert_eq!(with("STOP", json!([{"text": "hi"}])), StopReason::EndTurn);
        assert_eq!(
            with("MAX_TOKENS", json!([{"text": "hi"}])),
            StopReason::MaxTokens
        );
        for r in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(with(r, json!([])), StopReason::ContentFilter, "{r}");
        }
        assert_eq!(
            with("MALFORMED_FUNCTION_CALL", json!([])),
            StopReason::EndTurn
        );
        assert_eq!(with("OTHER", json!([])), StopReason::EndTurn);
        let blocked = parse_response(&json!({
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}
        }))
        .unwrap();
        assert_eq!(blocked.stop, StopReason::ContentFilter);
        assert!(blocked.content.is_empty());
        assert_eq!(blocked.usage.input, 7);
        // Candidate without content (safety stop).
        let empty =
            parse_response(&json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]}))
                .unwrap();
        assert_eq!(empty.stop, StopReason::ContentFilter);
        assert!(parse_response(&json!({"modelVersion": "x"})).is_err());
        assert!(parse_response(&json!({"error": {"code": 400, "message": "bad"}})).is_err());
        // And out.
        let render = |stop| {
            let r = Response {
                id: "r".to_owned(),
                model: "m".to_owned(),
                content: vec![],
                stop,
                usage: Usage::default(),
            };
            render_response(&r)["candidates"][0]["finishReason"].clone()
        };
        assert_eq!(render(StopReason::EndTurn), json!("STOP"));
        assert_eq!(
            render(StopReason::StopSequence(Some("END".to_owned()))),
            json!("STOP")
        );
        assert_eq!(render(StopReason::ToolUse), json!("STOP"));
        assert_eq!(render(StopReason::MaxTokens), json!("MAX_TOKENS"));
        assert_eq!(render(StopReason::ContentFilter), json!("SAFETY"));
    }

    // ---- streams ----

    /// A stream as Gemini 2.5 sends it with `alt=sse` (CRLF-separated events): thoughts,
    /// text, two parallel calls (the first signed), usage growing, a final chunk.
    const RECORDED: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"**Planning**\\n\\nTwo cities.\",\"thought\": true}],\"role\": \"model\"},\"index\": 0}],",
        "\"usageMetadata\": {\"promptTokenCount\": 75,\"totalTokenCount\": 120,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 75}],\"thoughtsTokenCount\": 45},",
        "\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mGxRaN3eLqSu1MkPgZ2A4Qk\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"I'll look up\"}],\"role\": \"model\"},\"index\": 0}],",
        "\"usageMetadata\": {\"promptTokenCount\": 75,\"candidatesTokenCount\": 4,\"totalTokenCount\": 124,\"thoughtsTokenCount\": 45},",
        "\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mGxRaN3eLqSu1MkPgZ2A4Qk\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" both cities — ☀️.\"}],\"role\": \"model\"},\"index\": 0}],",
        "\"usageMetadata\": {\"promptTokenCount\": 75,\"candidatesTokenCount\": 12,\"totalTokenCount\": 132,\"thoughtsTokenCount\": 45},",
        "\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mGxRaN3eLqSu1MkPgZ2A4Qk\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [",
        "{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Paris\"}},\"thoughtSignature\": \"CiQB0e2Kb3dSm4dwm5o=\"},",
        "{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"London\"}}}],\"role\": \"model\"},",
        "\"finishReason\": \"STOP\",\"index\": 0}],",
        "\"usageMetadata\": {\"promptTokenCount\": 75,\"candidatesTokenCount\": 40,\"totalTokenCount\": 180,",
        "\"cachedContentTokenCount\": 32,\"thoughtsTokenCount\": 65},",
        "\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mGxRaN3eLqSu1MkPgZ2A4Qk\"}\r\n\r\n",
    );

    fn expected_events(ids: &[String]) -> Vec<Event> {
        let u1 = Usage {
            input: 75,
            output: 45,
            cache_read: 0,
            cache_write: 0,
            reasoning: 45,
        };
        vec![
            Event::Start {
                id: "mGxRaN3eLqSu1MkPgZ2A4Qk".to_owned(),
                model: "gemini-2.5-flash".to_owned(),
            },
            Event::BlockStart {
                index: 0,
                kind: BlockKind::Thinking,
            },
            delta(0, Delta::Thinking("**Planning**\n\nTwo cities.".to_owned())),
            Event::Usage(u1),
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                kind: BlockKind::Text,
            },
            delta(1, Delta::Text("I'll look up".to_owned())),
            Event::Usage(Usage { output: 49, ..u1 }),
            delta(1, Delta::Text(" both cities — ☀️.".to_owned())),
            Event::Usage(Usage { output: 57, ..u1 }),
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                kind: BlockKind::Thinking,
            },
            delta(2, Delta::Signature("CiQB0e2Kb3dSm4dwm5o=".to_owned())),
            Event::BlockStop { index: 2 },
            Event::BlockStart {
                index: 3,
                kind: BlockKind::ToolUse {
                    id: ids[0].clone(),
                    name: "get_weather".to_owned(),
                },
            },
            delta(3, Delta::ToolArgs("{\"city\":\"Paris\"}".to_owned())),
            Event::BlockStop { index: 3 },
            Event::BlockStart {
                index: 4,
                kind: BlockKind::ToolUse {
                    id: ids[1].clone(),
                    name: "get_weather".to_owned(),
                },
            },
            delta(4, Delta::ToolArgs("{\"city\":\"London\"}".to_owned())),
            Event::BlockStop { index: 4 },
            Event::Usage(Usage {
                input: 75,
                output: 105,
                cache_read: 32,
                cache_write: 0,
                reasoning: 65,
            }),
            Event::Finish {
                stop: StopReason::ToolUse,
            },
        ]
    }

    fn tool_ids(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::BlockStart {
                    kind: BlockKind::ToolUse { id, .. },
                    ..
                } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Feeds SSE text through the project's SSE decoder into a Gemini decoder.
    fn decode(chunks: &[&[u8]]) -> Vec<Event> {
        let mut sse = aether_protocol::sse::SseDecoder::new(1 << 20);
        let mut dec = Decoder::default();
        let mut out = Vec::new();
        for c in chunks {
            sse.feed(c).unwrap();
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

    /// The order guarantees of [`Event`].
    fn assert_well_formed(events: &[Event]) {
        let mut started = false;
        let mut open: Option<usize> = None;
        let mut next = 0;
        let mut finished = false;
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Start { .. } => {
                    assert!(!started && i == 0, "Start first and once: {events:?}");
                    started = true;
                }
                Event::BlockStart { index, .. } => {
                    assert!(
                        started && !finished && open.is_none() && *index == next,
                        "{events:?}"
                    );
                    open = Some(*index);
                    next += 1;
                }
                Event::Delta { index, .. } => assert_eq!(open, Some(*index), "{events:?}"),
                Event::BlockStop { index } => {
                    assert_eq!(open, Some(*index), "{events:?}");
                    open = None;
                }
                Event::Usage(_) => assert!(started),
                Event::Finish { .. } => {
                    assert!(started && !finished && open.is_none(), "{events:?}");
                    finished = true;
                }
                Event::Error { .. } => assert_eq!(i, events.len() - 1),
            }
        }
    }

    #[test]
    fn decodes_a_recorded_stream_in_any_split() {
        let bytes = RECORDED.as_bytes();
        let whole = decode(&[bytes]);
        let ids = tool_ids(&whole);
        assert_eq!(ids.len(), 2);
        assert_eq!(whole, expected_events(&ids));
        assert_well_formed(&whole);
        for size in [1, 2, 3, 7, 64, 333] {
            let pieces: Vec<&[u8]> = bytes.chunks(size).collect();
            let got = decode(&pieces);
            assert_eq!(got, expected_events(&tool_ids(&got)), "chunk size {size}");
        }
        // Every two-way split.
        for cut in (0..bytes.len()).step_by(5) {
            let got = decode(&[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(got, expected_events(&tool_ids(&got)), "cut at {cut}");
        }
    }

    #[test]
    fn decoder_edge_cases() {
        let run = |datas: &[&str]| {
            let mut dec = Decoder::default();
            let mut out = Vec::new();
            for d in datas {
                dec.event(None, d, &mut out);
            }
            dec.end(&mut out);
            assert_well_formed(&out);
            out
        };
        // Garbage is skipped; no finish reason: blocks stay open, no Finish.
        let out = run(&[
            "not json",
            "",
            "[DONE]",
            "42",
            r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}"#,
        ]);
        assert!(matches!(&out[0], Event::Start { model, .. } if model.is_empty()));
        assert_eq!(out.len(), 3);
        // A mid-stream error ends it.
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"responseId":"r"}"#,
            r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"ignored"}]},"finishReason":"STOP"}]}"#,
        ]);
        assert_eq!(
            out.last(),
            Some(&Event::Error {
                kind: ErrorKind::RateLimited,
                message: "Resource has been exhausted".to_owned()
            })
        );
        assert_eq!(out.len(), 4);
        // A blocked prompt.
        let out = run(&[
            r#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":3}}"#,
        ]);
        assert_eq!(
            out.last(),
            Some(&Event::Finish {
                stop: StopReason::ContentFilter
            })
        );
        // Gemini 3: the signature on the last text part, then an empty signed part.
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"Hello"}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":" world","thoughtSignature":"UzE="}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"","thoughtSignature":"UzI="}]},"finishReason":"MAX_TOKENS"}]}"#,
        ]);
        assert_eq!(
            out[1..].to_vec(),
            vec![
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Text
                },
                delta(0, Delta::Text("Hello".to_owned())),
                delta(0, Delta::Text(" world".to_owned())),
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    kind: BlockKind::Thinking
                },
                delta(1, Delta::Signature("UzI=".to_owned())),
                Event::BlockStop { index: 1 },
                Event::Finish {
                    stop: StopReason::MaxTokens
                },
            ]
        );
        // Thoughts continuing after a signature start a new block; a signed call closes the
        // unsigned thinking block it follows.
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"a","thought":true,"thoughtSignature":"UzE="},{"text":"b","thought":true}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","id":"fc1"},"thoughtSignature":"UzI="}]},"finishReason":"STOP"}]}"#,
        ]);
        assert_eq!(
            out[1..].to_vec(),
            vec![
                Event::BlockStart {
                    index: 0,
                    kind: BlockKind::Thinking
                },
                delta(0, Delta::Thinking("a".to_owned())),
                delta(0, Delta::Signature("UzE=".to_owned())),
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    kind: BlockKind::Thinking
                },
                delta(1, Delta::Thinking("b".to_owned())),
                delta(1, Delta::Signature("UzI=".to_owned())),
                Event::BlockStop { index: 1 },
                Event::BlockStart {
                    index: 2,
                    kind: BlockKind::ToolUse {
                        id: "fc1".to_owned(),
                        name: "f".to_owned()
                    }
                },
                delta(2, Delta::ToolArgs("{}".to_owned())),
                Event::BlockStop { index: 2 },
                Event::Finish {
                    stop: StopReason::ToolUse
                },
            ]
        );
        // An empty stream says nothing.
        assert!(run(&[]).is_empty());
    }

    fn frames_json(frames: &[Frame]) -> Vec<Value> {
        frames
            .iter()
            .map(|f| {
                assert_eq!(f.event, None);
                serde_json::from_str(&f.data).unwrap()
            })
            .collect()
    }

    #[test]
    fn encodes_text_thinking_and_two_tool_calls() {
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        let events = vec![
            Event::Start {
                id: "msg_01".to_owned(),
                model: "claude-sonnet-4-5".to_owned(),
            },
            Event::Usage(Usage {
                input: 50,
                cache_read: 20,
                ..Usage::default()
            }),
            Event::BlockStart {
                index: 0,
                kind: BlockKind::Thinking,
            },
            delta(0, Delta::Thinking("Let me".to_owned())),
            delta(0, Delta::Thinking(" think.".to_owned())),
            delta(0, Delta::Signature("EqQBCkgIAQ==".to_owned())),
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                kind: BlockKind::Text,
            },
            delta(1, Delta::Text("Reading both.".to_owned())),
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                kind: BlockKind::ToolUse {
                    id: "toolu_a".to_owned(),
                    name: "read".to_owned(),
                },
            },
            delta(2, Delta::ToolArgs("{\"path\":".to_owned())),
            delta(2, Delta::ToolArgs("\"a.rs\"}".to_owned())),
            Event::BlockStop { index: 2 },
            Event::BlockStart {
                index: 3,
                kind: BlockKind::ToolUse {
                    id: "toolu_b".to_owned(),
                    name: "read".to_owned(),
                },
            },
            delta(3, Delta::ToolArgs("{\"path\":\"b.rs\"}".to_owned())),
            Event::BlockStop { index: 3 },
            Event::Usage(Usage {
                output: 80,
                reasoning: 30,
                ..Usage::default()
            }),
            Event::Finish {
                stop: StopReason::ToolUse,
            },
        ];
        for e in &events {
            enc.event(e, &mut out);
        }
        enc.end(&mut out);
        enc.end(&mut out); // idempotent
        let meta = |mut v: Value| {
            v["modelVersion"] = json!("claude-sonnet-4-5");
            v["responseId"] = json!("msg_01");
            v
        };
        let part = |p: Value| {
            meta(json!({"candidates": [{"content": {"role": "model", "parts": [p]}, "index": 0}]}))
        };
        assert_eq!(
            frames_json(&out),
            vec![
                part(json!({"text": "Let me", "thought": true})),
                part(json!({"text": " think.", "thought": true})),
                part(json!({"text": "Reading both.", "thoughtSignature": "EqQBCkgIAQ=="})),
                part(
                    json!({"functionCall": {"name": "read", "args": {"path": "a.rs"}, "id": "toolu_a"}})
                ),
                part(
                    json!({"functionCall": {"name": "read", "args": {"path": "b.rs"}, "id": "toolu_b"}})
                ),
                meta(json!({
                    "candidates": [{"finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 50, "totalTokenCount": 130,
                        "cachedContentTokenCount": 20, "thoughtsTokenCount": 30}
                })),
            ]
        );
    }

    #[test]
    fn encoder_survives_any_event_order() {
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        // No Start, deltas for blocks never started, a stop for nothing, a dangling call.
        enc.event(&delta(5, Delta::Text("x".to_owned())), &mut out);
        enc.event(&delta(7, Delta::ToolArgs("{\"a\":1".to_owned())), &mut out);
        enc.event(&Event::BlockStop { index: 9 }, &mut out);
        enc.event(&delta(8, Delta::Signature("UzE=".to_owned())), &mut out);
        enc.end(&mut out);
        let frames = frames_json(&out);
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[0]["candidates"][0]["content"]["parts"][0],
            json!({"text": "x"})
        );
        // The dangling call is written at the end, carrying the waiting signature.
        let part = &frames[1]["candidates"][0]["content"]["parts"][0];
        assert_eq!(part["functionCall"]["args"], json!({}));
        assert_eq!(part["functionCall"]["name"], json!(""));
        assert_eq!(part["thoughtSignature"], json!("UzE="));
        assert!(frames[1]["candidates"][0].get("finishReason").is_none());
        // A signature with nothing after it is written on its own.
        let mut enc = Encoder::default();
        let mut only = Vec::new();
        enc.event(&delta(0, Delta::Signature("UzE=".to_owned())), &mut only);
        enc.event(
            &Event::Finish {
                stop: StopReason::EndTurn,
            },
            &mut only,
        );
        enc.end(&mut only);
        assert_eq!(
            frames_json(&only)[0]["candidates"][0],
            json!({"content": {"role": "model", "parts": [
                {"text": "", "thought": true, "thoughtSignature": "UzE="}
            ]}, "finishReason": "STOP", "index": 0})
        );
        let id = frames[0]["responseId"].as_str().unwrap();
        assert!(frames.iter().all(|f| f["responseId"] == json!(id)));
    }

    fn sse_datas(bytes: &[u8]) -> Vec<Value> {
        let mut sse = aether_protocol::sse::SseDecoder::new(1 << 20);
        sse.feed(bytes).unwrap();
        let mut out = Vec::new();
        while let Some(ev) = sse.next_event() {
            assert_eq!(ev.event, None);
            out.push(serde_json::from_str(&ev.data).unwrap());
        }
        assert!(sse.finish().is_none());
        out
    }

    #[test]
    fn transcodes_gemini_to_gemini() {
        let expected = |chunks: &[Value]| {
            assert_eq!(chunks.len(), 6, "{chunks:#?}");
            let parts: Vec<&Value> = chunks[..5]
                .iter()
                .map(|c| &c["candidates"][0]["content"]["parts"][0])
                .collect();
            assert_eq!(
                parts[0],
                &json!({"text": "**Planning**\n\nTwo cities.", "thought": true})
            );
            assert_eq!(parts[1], &json!({"text": "I'll look up"}));
            assert_eq!(parts[2], &json!({"text": " both cities — ☀️."}));
            assert_eq!(parts[3]["functionCall"]["args"], json!({"city": "Paris"}));
            assert_eq!(parts[3]["thoughtSignature"], json!("CiQB0e2Kb3dSm4dwm5o="));
            assert_eq!(parts[4]["functionCall"]["args"], json!({"city": "London"}));
            assert!(parts[4].get("thoughtSignature").is_none());
            assert_eq!(
                chunks[5],
                json!({
                    "candidates": [{"finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 75, "candidatesTokenCount": 40, "totalTokenCount": 180,
                        "cachedContentTokenCount": 32, "thoughtsTokenCount": 65},
                    "modelVersion": "gemini-2.5-flash",
                    "responseId": "mGxRaN3eLqSu1MkPgZ2A4Qk"
                })
            );
            for c in chunks {
                assert_eq!(c["responseId"], json!("mGxRaN3eLqSu1MkPgZ2A4Qk"));
            }
            // The client-side view parses back into the same response.
            let mut dec = Decoder::default();
            let mut events = Vec::new();
            for c in chunks {
                dec.event(None, &json_string(c), &mut events);
            }
            dec.end(&mut events);
            // Usage is reported once, on the last chunk.
            let mut want = expected_events(&tool_ids(&events));
            let last_usage = want.iter().rposition(|e| matches!(e, Event::Usage(_)));
            let mut i = 0;
            want.retain(|e| {
                i += 1;
                !matches!(e, Event::Usage(_)) || Some(i - 1) == last_usage
            });
            assert_eq!(events, want);
        };
        for size in [1, 17, 4096] {
            let mut t = Transcoder::new(Dialect::Gemini, Dialect::Gemini, Framing::Sse, 1 << 20);
            let mut bytes = Vec::new();
            for piece in RECORDED.as_bytes().chunks(size) {
                bytes.extend_from_slice(&t.feed(piece));
            }
            bytes.extend_from_slice(&t.finish());
            assert!(t.is_done());
            assert_eq!(t.stop(), Some(&StopReason::ToolUse));
            expected(&sse_datas(&bytes));

            let mut t = Transcoder::new(
                Dialect::Gemini,
                Dialect::Gemini,
                Framing::JsonArray,
                1 << 20,
            );
            let mut bytes = Vec::new();
            for piece in RECORDED.as_bytes().chunks(size) {
                bytes.extend_from_slice(&t.feed(piece));
            }
            bytes.extend_from_slice(&t.finish());
            let array: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
            expected(&array);
        }
    }

    #[test]
    fn decoder_keeps_its_guarantees_on_shuffled_parts() {
        // Deterministic pseudo-random sequences of realistic and odd parts.
        let parts = [
            json!({"text": "t"}),
            json!({"text": ""}),
            json!({"text": "s", "thoughtSignature": "UzE="}),
            json!({"text": "", "thoughtSignature": "UzI="}),
            json!({"text": "th", "thought": true}),
            json!({"text": "", "thought": true}),
            json!({"text": "ts", "thought": true, "thoughtSignature": "UzM="}),
            json!({"functionCall": {"name": "f", "args": {"a": 1}}}),
            json!({"functionCall": {"name": "g"}, "thoughtSignature": "UzQ="}),
            json!({"functionCall": "nonsense"}),
            json!({"inlineData": {"mimeType": "image/png", "data": "QQ=="}, "thoughtSignature": "UzU="}),
            json!(7),
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % u64::try_from(n).unwrap()).unwrap()
        };
        for _ in 0..500 {
            let mut dec = Decoder::default();
            let mut out = Vec::new();
            for _ in 0..next(6) {
                let chosen: Vec<Value> = (0..next(4))
                    .map(|_| parts[next(parts.len())].clone())
                    .collect();
                let mut chunk = json!({"candidates": [{"content": {"parts": chosen}}]});
                if next(5) == 0 {
                    chunk["candidates"][0]["finishReason"] = json!("STOP");
                }
                dec.event(None, &json_string(&chunk), &mut out);
            }
            dec.end(&mut out);
            assert_well_formed(&out);
            // And whatever comes out, the encoder writes parseable chunks.
            let mut enc = Encoder::default();
            let mut frames = Vec::new();
            for e in &out {
                enc.event(e, &mut frames);
            }
            enc.end(&mut frames);
            frames_json(&frames);
        }
    }
}
