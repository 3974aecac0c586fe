//! The canonical model every dialect converts to and from.
//!
//! It holds exactly what at least two dialects can express. Conventions every codec keeps:
//!
//! * **Messages** alternate freely between `User` and `Assistant`; the system prompt is not a
//!   message. Tool results are `Block::ToolResult` inside a `User` message (Anthropic's shape);
//!   dialects with a separate tool role (OpenAI Chat `tool` messages, Responses
//!   `function_call_output` items, Gemini `functionResponse` parts) split or merge on the way.
//! * **Tool-call ids** are always present. A dialect without ids (Gemini) synthesises them on
//!   parse (`call_<n>` in order of appearance) and matches results to calls by name in order; a
//!   `ToolResult` always carries the called function's `name` too (parsers fill it in from the
//!   matching `ToolUse` when their dialect omits it), because Gemini needs it.
//! * **Numbers** the client chose (temperature, top_p) stay `serde_json::Number`, so they cross
//!   unchanged instead of through a float round trip.
//! * **Usage**: `input` counts *all* prompt tokens including cache reads and writes (OpenAI and
//!   Gemini count that way; Anthropic's `input_tokens` excludes them, so its codec adds and
//!   subtracts); `output` includes reasoning tokens (`reasoning` is the part of it that was
//!   thinking).

use aether_protocol::errors::ErrorKind;
use serde_json::{Number, Value};

/// A chat request in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// The model as the client named it (the gateway replaces it with the upstream name).
    pub model: String,
    /// System prompt parts, in order. Dialects with one system string join them with "\n\n".
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `Some(false)` forbids parallel tool calls where the dialect can say so.
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<Number>,
    pub top_p: Option<Number>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub output: Option<OutputFormat>,
    pub reasoning: Option<Reasoning>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

/// One piece of content.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    /// A call the assistant made. `input` is a JSON object.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// The result of a call, sent back by the user side. `content` holds `Text` and `Image`
    /// blocks only.
    ToolResult {
        id: String,
        name: String,
        content: Vec<Block>,
        is_error: bool,
    },
    /// Model reasoning. `signature` is Anthropic's opaque integrity token (or an encrypted
    /// reasoning payload); it only survives a round trip to the dialect that made it.
    Thinking {
        text: String,
        signature: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

/// A function tool. `parameters` is a JSON Schema object.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must call some tool (Anthropic `any`, OpenAI `required`, Gemini `ANY`).
    Required,
    /// No tool calls.
    None,
    /// This tool must be called.
    Tool(String),
}

/// Structured output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON conforming to `schema`.
    JsonSchema {
        name: String,
        schema: Value,
        strict: bool,
    },
}

/// Extended thinking / reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasoning {
    /// A token budget (Anthropic `thinking.budget_tokens`, Gemini `thinkingBudget`).
    pub budget_tokens: Option<u64>,
    /// An effort level (OpenAI `reasoning_effort` / `reasoning.effort`).
    pub effort: Option<Effort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "minimal" | "none" => Some(Self::Minimal),
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" | "xhigh" => Some(Self::High),
            _ => None,
        }
    }

    /// The budget a dialect that wants tokens gets for this effort.
    #[must_use]
    pub const fn budget_tokens(self) -> u64 {
        match self {
            Self::Minimal => 1_024,
            Self::Low => 2_048,
            Self::Medium => 8_192,
            Self::High => 24_576,
        }
    }

    /// The effort a dialect that wants a level gets for this budget.
    #[must_use]
    pub const fn from_budget(tokens: u64) -> Self {
        match tokens {
            0..=1_024 => Self::Minimal,
            1_025..=4_096 => Self::Low,
            4_097..=16_384 => Self::Medium,
            _ => Self::High,
        }
    }
}

impl Reasoning {
    /// The budget, or one derived from the effort.
    #[must_use]
    pub fn budget(&self) -> Option<u64> {
        self.budget_tokens
            .or(self.effort.map(Effort::budget_tokens))
    }

    /// The effort, or one derived from the budget.
    #[must_use]
    pub fn level(&self) -> Option<Effort> {
        self.effort.or(self.budget_tokens.map(Effort::from_budget))
    }
}

/// A complete (non-streamed) answer in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: String,
    pub model: String,
    /// `Text`, `Thinking` and `ToolUse` blocks, in order.
    pub content: Vec<Block>,
    pub stop: StopReason,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StopReason {
    #[default]
    EndTurn,
    MaxTokens,
    /// A stop sequence matched (which one, when the dialect says).
    StopSequence(Option<String>),
    ToolUse,
    /// Blocked by a safety / content filter or refused.
    ContentFilter,
}

/// Token usage, normalised (see the module docs for what each count includes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Usage {
    /// Prompt tokens that were neither read from nor written to a cache.
    #[must_use]
    pub const fn uncached_input(&self) -> u64 {
        self.input
            .saturating_sub(self.cache_read)
            .saturating_sub(self.cache_write)
    }

    /// Field-wise maximum: streams report usage cumulatively, sometimes in pieces.
    #[must_use]
    pub fn merge(self, o: Self) -> Self {
        Self {
            input: self.input.max(o.input),
            output: self.output.max(o.output),
            cache_read: self.cache_read.max(o.cache_read),
            cache_write: self.cache_write.max(o.cache_write),
            reasoning: self.reasoning.max(o.reasoning),
        }
    }
}

/// What kind of block a stream opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockKind {
    Text,
    Thinking,
    ToolUse { id: String, name: String },
}

/// A piece of a streamed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Text(String),
    Thinking(String),
    /// Anthropic's thinking signature (arrives once, before the block stops).
    Signature(String),
    /// A fragment of the tool call's JSON arguments; the concatenation is a JSON object.
    ToolArgs(String),
}

/// One event of a stream in canonical form.
///
/// Decoders guarantee this order: one `Start` first; then blocks, each `BlockStart` → `Delta`s
/// → `BlockStop`, **one block open at a time**, indices 0, 1, 2, … in order; `Usage` any time
/// (cumulative; take the field-wise max); at most one `Finish`, after the last block; `Error`
/// ends the stream (any open block is left open — encoders close what they must). Encoders
/// write their closing frames in `StreamEncoder::end`, which the transcoder calls once at the
/// end of the upstream stream, whether or not a `Finish` came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start { id: String, model: String },
    BlockStart { index: usize, kind: BlockKind },
    Delta { index: usize, delta: Delta },
    BlockStop { index: usize },
    Usage(Usage),
    Finish { stop: StopReason },
    Error { kind: ErrorKind, message: String },
}
