//! Integration tests of `aether-protocol`, in one binary to keep link time down.
//!
//! - `fixtures`: the real client captures (Claude Code, Codex, Gemini CLI) through the
//!   request inspectors/rewriters and the token estimate.
//! - `streams`: realistic upstream streams of all four dialects through the decoders, usage
//!   accumulation and the commit-point classifier.
//! - `usage`, `errors`, `classify`, `models`: data-driven behaviour tables.
//! - `fuzz`: property tests (no input panics; chunking invariance; rewrite round trips).

mod classify;
mod errors;
mod fixtures;
mod fuzz;
mod models;
mod streams;
mod usage;

use aether_protocol::sse::{SseDecoder, SseEvent};

/// Raw request body of a capture file: the text of its last member, `"body"`, exactly as it
/// appears in the (pretty-printed) file.
pub fn capture_body(file_text: &str) -> &[u8] {
    let start = file_text.find("\"body\": ").expect("capture has a body") + "\"body\": ".len();
    let end = file_text.rfind('}').expect("capture is an object");
    file_text[start..end].trim().as_bytes()
}

pub const CLAUDE_CODE: &str =
    include_str!("../../../../fixtures/clients/claude-code-2.1.328.messages.json");
pub const CODEX: &str =
    include_str!("../../../../fixtures/clients/codex-cli-0.169.0.responses.json");
pub const GEMINI_CLI: &str =
    include_str!("../../../../fixtures/clients/gemini-cli-0.61.0.streamGenerateContent.json");

/// Decodes `input` fed in pieces cut at `cuts` (sorted or not, out-of-range ignored),
/// draining after every feed and flushing with `finish`.
pub fn sse_events(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut points: Vec<usize> = cuts.iter().copied().filter(|&c| c <= input.len()).collect();
    points.sort_unstable();
    points.push(input.len());
    let mut d = SseDecoder::new(1 << 20);
    let mut out = Vec::new();
    let mut prev = 0;
    for p in points {
        d.feed(&input[prev..p]).expect("within bounds");
        out.extend(d.drain());
        prev = p;
    }
    out.extend(d.finish());
    out.extend(d.drain());
    out
}
