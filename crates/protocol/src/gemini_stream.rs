//! Incremental framing of Gemini's non-SSE streaming response.
//!
//! Without `?alt=sse`, `streamGenerateContent` answers with one JSON array whose elements
//! (each a `GenerateContentResponse`, or `{"error": ...}`) are flushed as they are produced,
//! typically pretty-printed and separated by `\r\n,\r\n`. [`JsonArrayDecoder`] cuts that byte
//! stream into its top-level elements without waiting for the closing `]`, so usage and errors
//! can be observed while the response is still streaming.
//!
//! Framing is string- and escape-aware bracket tracking; elements are not otherwise validated
//! (the consumer parses each one). Accepted elements are objects and arrays — scalars never
//! occur in this stream and are reported as malformed framing. Memory is bounded by
//! `max_element_bytes` per element, and nesting is capped at [`MAX_DEPTH`].

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Deepest bracket nesting accepted inside one element. `serde_json` refuses documents deeper
/// than 128 anyway, so nothing useful is lost.
pub const MAX_DEPTH: usize = 256;

/// Why the array stream cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonArrayError {
    /// One element grew beyond the configured bound.
    #[error("JSON array element larger than {limit} bytes")]
    ElementTooLarge {
        /// The configured `max_element_bytes`.
        limit: usize,
    },
    /// The bytes do not form a JSON array of objects/arrays.
    #[error("malformed JSON array stream at byte {offset}: {reason}")]
    Malformed {
        /// Offset from the start of the stream.
        offset: u64,
        /// What was expected.
        reason: &'static str,
    },
    /// The stream ended before the closing `]`.
    #[error("JSON array stream ended before its closing bracket")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// After `[`: an element or `]`.
    First,
    /// After `,`: an element.
    Next,
    /// Inside an element.
    Element,
    /// After an element: `,` or `]`.
    After,
    /// After the closing `]`: only whitespace.
    Done,
}

/// Incremental splitter of a streamed JSON array into its top-level elements.
#[derive(Debug)]
pub struct JsonArrayDecoder {
    max_element_bytes: usize,
    state: State,
    /// Bytes of the current element carried over from previous chunks.
    buf: BytesMut,
    /// Open brackets of the current element, innermost last.
    stack: Vec<u8>,
    in_string: bool,
    /// The previous chunk ended right after a backslash inside a string.
    escape: bool,
    /// Bytes consumed so far (for error offsets).
    offset: u64,
    queue: VecDeque<Bytes>,
    failed: Option<JsonArrayError>,
}

impl JsonArrayDecoder {
    /// A decoder that refuses elements larger than `max_element_bytes`.
    #[must_use]
    pub fn new(max_element_bytes: usize) -> Self {
        Self {
            max_element_bytes,
            state: State::Start,
            buf: BytesMut::new(),
            stack: Vec::new(),
            in_string: false,
            escape: false,
            offset: 0,
            queue: VecDeque::new(),
            failed: None,
        }
    }

    /// Pushes the next chunk; complete elements become available through
    /// [`next_element`](Self::next_element).
    ///
    /// # Errors
    /// Oversized elements and malformed framing. Errors are sticky: every later call returns
    /// the same error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), JsonArrayError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(chunk);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
            self.stack = Vec::new();
        }
        result
    }

    /// Pops the oldest complete element (its exact bytes, from `{` to `}` inclusive).
    pub fn next_element(&mut self) -> Option<Bytes> {
        self.queue.pop_front()
    }

    /// Declares the end of the stream.
    ///
    /// # Errors
    /// [`JsonArrayError::Truncated`] when the closing `]` never arrived (a cut connection), or
    /// the sticky error of an earlier `feed`. Elements completed before the cut remain
    /// available through [`next_element`](Self::next_element).
    pub fn finish(&mut self) -> Result<(), JsonArrayError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.state == State::Done {
            Ok(())
        } else {
            Err(JsonArrayError::Truncated)
        }
    }

    fn malformed(&self, at: usize, reason: &'static str) -> JsonArrayError {
        JsonArrayError::Malformed {
            offset: self.offset + at as u64,
            reason,
        }
    }

    fn feed_inner(&mut self, chunk: &[u8]) -> Result<(), JsonArrayError> {
        let mut i = 0;
        // Where the current element starts inside this chunk (0 when it began earlier).
        let mut elem_start = 0;
        while i < chunk.len() {
            if self.state == State::Element {
                // Only scan as far as the element may grow: the size error then fires at the
                // first byte past the bound, wherever the chunks were cut, and an earlier
                // malformed byte is always reported first.
                let consumed = self.buf.len() + (i - elem_start);
                let Some(allowance) = self.max_element_bytes.checked_sub(consumed) else {
                    return Err(self.too_large());
                };
                let window = chunk.len().min(i.saturating_add(allowance));
                match self.scan_element(chunk, i, window)? {
                    Some(end) => {
                        self.complete_element(chunk, elem_start, end);
                        self.state = State::After;
                        i = end;
                    }
                    None if window < chunk.len() => return Err(self.too_large()),
                    None => i = chunk.len(),
                }
                continue;
            }
            let Some(&c) = chunk.get(i) else { break };
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                i += 1;
                continue;
            }
            match (self.state, c) {
                (State::Start, b'[') => self.state = State::First,
                (State::Start, _) => return Err(self.malformed(i, "expected `[`")),
                (State::First, b']') | (State::After, b']') => self.state = State::Done,
                (State::First | State::Next, b'{' | b'[') => {
                    self.stack.push(c);
                    self.state = State::Element;
                    elem_start = i;
                }
                (State::First | State::Next, _) => {
                    return Err(self.malformed(i, "expected an object or array element"));
                }
                (State::After, b',') => self.state = State::Next,
                (State::After, _) => return Err(self.malformed(i, "expected `,` or `]`")),
                (State::Done, _) => return Err(self.malformed(i, "data after the closing `]`")),
                (State::Element, _) => {}
            }
            i += 1;
        }
        if self.state == State::Element {
            // Carry the unfinished element over to the next chunk (the scan window kept it
            // within the bound).
            self.buf
                .extend_from_slice(chunk.get(elem_start..).unwrap_or_default());
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// Scans element bytes in `i..window`; returns the index just past the element's closing
    /// bracket if it ends there. The opening bracket has already been consumed and pushed on
    /// the stack, so the scan starts after it (or where the previous chunk left off).
    fn scan_element(
        &mut self,
        chunk: &[u8],
        mut i: usize,
        window: usize,
    ) -> Result<Option<usize>, JsonArrayError> {
        let chunk = chunk.get(..window).unwrap_or(chunk);
        while i < chunk.len() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    i += 1;
                    continue;
                }
                let rest = chunk.get(i..).unwrap_or_default();
                match memchr::memchr2(b'"', b'\\', rest) {
                    None => return Ok(None),
                    Some(off) => {
                        let at = i + off;
                        if chunk.get(at) == Some(&b'\\') {
                            self.escape = true;
                        } else {
                            self.in_string = false;
                        }
                        i = at + 1;
                    }
                }
                continue;
            }
            let Some(&c) = chunk.get(i) else { break };
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(self.malformed(i, "nesting too deep"));
                    }
                    self.stack.push(c);
                }
                b'}' | b']' => {
                    let want = if c == b'}' { b'{' } else { b'[' };
                    if self.stack.pop() != Some(want) {
                        return Err(self.malformed(i, "mismatched bracket"));
                    }
                    if self.stack.is_empty() {
                        return Ok(Some(i + 1));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Ok(None)
    }

    fn too_large(&self) -> JsonArrayError {
        JsonArrayError::ElementTooLarge {
            limit: self.max_element_bytes,
        }
    }

    /// Queues the element that ends at `end` (its start is `start` in this chunk, or earlier
    /// chunks' bytes in `buf`).
    fn complete_element(&mut self, chunk: &[u8], start: usize, end: usize) {
        let part = chunk.get(start..end).unwrap_or_default();
        let element = if self.buf.is_empty() {
            Bytes::copy_from_slice(part)
        } else {
            self.buf.extend_from_slice(part);
            self.buf.split().freeze()
        };
        self.queue.push_back(element);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[u8]) -> (Vec<String>, Result<(), JsonArrayError>) {
        let mut d = JsonArrayDecoder::new(1 << 20);
        let fed = d.feed(input);
        let mut out = Vec::new();
        while let Some(e) = d.next_element() {
            out.push(String::from_utf8(e.to_vec()).unwrap());
        }
        (out, fed.and_then(|()| d.finish()))
    }

    #[test]
    fn splits_pretty_printed_google_framing() {
        let body = "[{\r\n  \"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a}]\\\"\"}]}}]\r\n}\r\n,\r\n{\r\n  \"usageMetadata\": {\"promptTokenCount\": 5}\r\n}\r\n]";
        let (els, end) = split_all(body.as_bytes());
        assert_eq!(end, Ok(()));
        assert_eq!(els.len(), 2);
        assert!(els[0].starts_with('{') && els[0].ends_with('}'));
        assert!(els[0].contains("a}]\\\""));
        let v: serde_json::Value = serde_json::from_str(&els[1]).unwrap();
        assert_eq!(v["usageMetadata"]["promptTokenCount"], 5);
    }

    #[test]
    fn framing_cases() {
        let ok: &[(&str, usize)] = &[
            ("[]", 0),
            (" \n[ ] \r\n", 0),
            ("[{}]", 1),
            ("[{},{}, [1,2] ,{\"a\":[{}]}]", 4),
            ("[{\"s\":\"\\\\\"}]", 1),
            ("[{\"error\":{\"code\":400}}]", 1),
        ];
        for (input, n) in ok {
            let (els, end) = split_all(input.as_bytes());
            assert_eq!((els.len(), end), (*n, Ok(())), "{input:?}");
        }
        let malformed = [
            "{}", "[1]", "[{},]", "[{}{}]", "[{]", "[{}] x", "[,{}]", "[\"s\"]",
        ];
        for input in malformed {
            let (_, end) = split_all(input.as_bytes());
            assert!(
                matches!(end, Err(JsonArrayError::Malformed { .. })),
                "{input:?} gave {end:?}"
            );
        }
        for input in ["", "[", "[{}", "[{\"a\":\"}", "[{},"] {
            let (_, end) = split_all(input.as_bytes());
            assert_eq!(end, Err(JsonArrayError::Truncated), "{input:?}");
        }
    }

    #[test]
    fn elements_are_emitted_before_the_array_closes() {
        let mut d = JsonArrayDecoder::new(1024);
        d.feed(b"[{\"a\":").unwrap();
        assert_eq!(d.next_element(), None);
        d.feed(b"1}\r\n,").unwrap();
        assert_eq!(d.next_element().as_deref(), Some(&b"{\"a\":1}"[..]));
        d.feed(b"{\"b\":\"\\").unwrap();
        d.feed(b"\"}\"}").unwrap();
        assert_eq!(d.next_element().as_deref(), Some(&b"{\"b\":\"\\\"}\"}"[..]));
        assert_eq!(d.finish(), Err(JsonArrayError::Truncated));
        d.feed(b"]").unwrap();
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn element_size_is_bounded_and_errors_are_sticky() {
        let mut d = JsonArrayDecoder::new(8);
        d.feed(b"[{\"a\":1},").unwrap();
        assert!(d.next_element().is_some());
        let err = d.feed(b"{\"a\":12345}").unwrap_err();
        assert_eq!(err, JsonArrayError::ElementTooLarge { limit: 8 });
        assert_eq!(d.feed(b"]"), Err(err.clone()));
        assert_eq!(d.finish(), Err(err));

        let mut d = JsonArrayDecoder::new(8);
        d.feed(b"[{\"a\":").unwrap();
        assert!(d.feed(b"\"123456\"").is_err());
    }

    #[test]
    fn nesting_is_capped() {
        let deep = format!(
            "[{}{}]",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let (_, end) = split_all(deep.as_bytes());
        assert!(matches!(
            end,
            Err(JsonArrayError::Malformed {
                reason: "nesting too deep",
                ..
            })
        ));
    }
}
