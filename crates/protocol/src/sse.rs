//! The project's one Server-Sent-Events decoder (and a matching encoder).
//!
//! Upstreams stream in arbitrary TCP-sized chunks, so the decoder is incremental: bytes are
//! pushed with [`SseDecoder::feed`] and complete events are pulled with
//! [`SseDecoder::next_event`] (or [`SseDecoder::drain`]). It follows the WHATWG
//! "event stream interpretation" rules that matter on the wire:
//!
//! - lines end with LF, CRLF or a lone CR — including a CR at the end of one chunk and its LF
//!   at the start of the next, which must not produce an extra (dispatching) blank line;
//! - a UTF-8 byte-order mark at the very start of the stream is dropped;
//! - `:`-prefixed lines are comments (keep-alives) and are skipped;
//! - `field:value` strips exactly one space after the colon; a line without a colon is a field
//!   with an empty value;
//! - several `data` lines are joined with `\n`;
//! - `retry` is honoured only when it is all ASCII digits; an `id` containing NUL is ignored.
//!
//! Deliberate differences from the browser algorithm, both chosen so a proxy neither loses
//! nor invents events:
//!
//! - a block is dispatched when *any* field was set (the OpenAI/Anthropic SDK decoders do the
//!   same); browsers drop blocks without `data`. A block holding only comments is skipped.
//! - `id` is the value seen *in this block*, not the sticky "last event id" of a browser
//!   `EventSource`.
//! - [`SseDecoder::finish`] dispatches a final block that lacks its terminating blank line,
//!   because upstreams that are cut off (or sloppy) still sent a usable event.
//!
//! Memory is bounded: the bytes buffered for one event (the partial line plus the `data`,
//! `event` and `id` fields accumulated so far) may not exceed `max_event_bytes`; going over is
//! a sticky [`SseError::EventTooLarge`]. (Fields are stored decoded, and each invalid UTF-8 byte
//! becomes a 3-byte U+FFFD, so hostile input can hold at most three times the bound.) Each
//! line is charged in full before it is interpreted, so whether the bound trips does not depend
//! on how the stream was chunked. Events parsed from one `feed` call wait in a queue, so
//! callers drain it after every `feed` — the queue then never holds more than one chunk's
//! worth of events.

use std::collections::VecDeque;

use bytes::Bytes;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event` field; `None` when absent or empty (the SSE default type "message").
    pub event: Option<String>,
    /// All `data` lines of the block joined by `\n` (empty if there was no `data` line).
    pub data: String,
    /// The `id` field set in this block, if any.
    pub id: Option<String>,
    /// The `retry` field (milliseconds), if present and valid.
    pub retry: Option<u64>,
}

/// Why the decoder gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event (or one line) grew beyond the configured bound.
    #[error("server-sent event larger than {limit} bytes")]
    EventTooLarge {
        /// The configured `max_event_bytes`.
        limit: usize,
    },
}

/// Incremental SSE decoder; see the module docs for the exact rules.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    /// Bytes of a line whose terminator has not arrived yet.
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF at the start of the next chunk belongs to it.
    skip_lf: bool,
    /// No line has been completed yet, so a BOM may still need stripping.
    at_start: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
    /// Some field was set since the last dispatch.
    dirty: bool,
    queue: VecDeque<SseEvent>,
    failed: Option<SseError>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseDecoder {
    /// A decoder that refuses events (or single lines) larger than `max_event_bytes`.
    #[must_use]
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            skip_lf: false,
            at_start: true,
            event: None,
            data: String::new(),
            has_data: false,
            id: None,
            retry: None,
            dirty: false,
            queue: VecDeque::new(),
            failed: None,
        }
    }

    /// Pushes the next chunk of the stream. Complete events become available through
    /// [`next_event`](Self::next_event).
    ///
    /// # Errors
    /// [`SseError::EventTooLarge`] when the event being assembled exceeds the bound. The error
    /// is sticky: the stream is unusable afterwards and every later call returns it again.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), SseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(chunk);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            // Free what we were holding: nothing more will be decoded.
            self.line = Vec::new();
            self.data = String::new();
        }
        result
    }

    fn feed_inner(&mut self, chunk: &[u8]) -> Result<(), SseError> {
        let mut rest = chunk;
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            let Some(pos) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.check_size(self.line.len().saturating_add(rest.len()))?;
                self.line.extend_from_slice(rest);
                break;
            };
            let (head, tail) = rest.split_at(pos);
            let (terminator, mut after) = match tail.split_first() {
                Some((&t, after)) => (t, after),
                None => break,
            };
            // The whole line is charged against the bound before it is interpreted, exactly
            // as its prefix was while it accumulated: whether the bound trips never depends on
            // where the chunks were cut.
            self.check_size(self.line.len().saturating_add(head.len()))?;
            if self.line.is_empty() {
                self.process_line(head);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.process_line(&line);
                // Keep the allocation for the next partial line.
                line.clear();
                self.line = line;
            }
            if terminator == b'\r' {
                if after.is_empty() {
                    self.skip_lf = true;
                } else if let Some(t) = after.strip_prefix(b"\n") {
                    after = t;
                }
            }
            rest = after;
        }
        Ok(())
    }

    /// Pops the oldest complete event.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.queue.pop_front()
    }

    /// Drains every complete event, oldest first.
    pub fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, SseEvent> {
        self.queue.drain(..)
    }

    /// Ends the stream: a last line without terminator is processed and a pending block
    /// without its closing blank line is dispatched.
    ///
    /// Returns the oldest queued event; if events from earlier `feed`s were left undrained,
    /// keep calling [`next_event`](Self::next_event) afterwards (order is always preserved).
    /// After a size error nothing is flushed and the decoder stays failed; otherwise a later
    /// `feed` starts a new stream (a leading BOM is stripped again).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.failed.is_none() {
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                // The line was already size-checked while it accumulated.
                self.process_line(&line);
            }
            self.dispatch();
        }
        self.skip_lf = false;
        self.at_start = true;
        self.queue.pop_front()
    }

    /// Fails if the pending event plus `extra` more bytes would exceed the bound.
    fn check_size(&self, extra: usize) -> Result<(), SseError> {
        let pending = self.data.len()
            + self.event.as_ref().map_or(0, String::len)
            + self.id.as_ref().map_or(0, String::len);
        if pending.saturating_add(extra) > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// Interprets one complete line (terminator removed). The caller has already checked that
    /// the line fits the bound; since a field value is never longer than its line, appending
    /// it keeps the pending event within the bound too.
    fn process_line(&mut self, mut line: &[u8]) {
        if self.at_start {
            self.at_start = false;
            if let Some(rest) = line.strip_prefix(BOM) {
                line = rest;
            }
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let (name, rest) = line.split_at(colon);
                let value = rest.get(1..).unwrap_or_default();
                (name, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
                self.dirty = true;
            }
            b"event" => {
                self.event =
                    (!value.is_empty()).then(|| String::from_utf8_lossy(value).into_owned());
                self.dirty = true;
            }
            b"id" if memchr::memchr(0, value).is_none() => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
                self.dirty = true;
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Overlong values are ignored like any other invalid retry.
                if let Some(ms) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                    self.retry = Some(ms);
                    self.dirty = true;
                }
            }
            // Unknown fields, an `id` containing NUL and a non-numeric `retry` are ignored.
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        if !self.dirty {
            return;
        }
        self.queue.push_back(SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
            id: self.id.take(),
            retry: self.retry.take(),
        });
        self.has_data = false;
        self.dirty = false;
    }
}

/// Encodes one event for writing: an optional `event:` line, one `data:` line per line of
/// `data` (split on LF, CRLF or CR, since any of them would end the field), and the blank
/// line that dispatches it.
///
/// Line breaks inside `event` would corrupt the framing, so they are removed.
#[must_use]
pub fn encode_event(event: Option<&str>, data: &str) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + event.map_or(0, str::len) + 16);
    if let Some(name) = event {
        push_field(&mut out, "event", name);
    }
    push_data(&mut out, data);
    out.push(b'\n');
    Bytes::from(out)
}

impl SseEvent {
    /// Re-encodes the event with all its fields (`event`, `id`, `retry`, `data`), for relaying
    /// a decoded event faithfully. An event that had no `data` line comes out with one empty
    /// `data` line — the decoded form cannot tell the two apart, and every SSE client treats
    /// them alike except browsers, which then dispatch it.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.data.len() + 64);
        if let Some(name) = &self.event {
            push_field(&mut out, "event", name);
        }
        if let Some(id) = &self.id {
            push_field(&mut out, "id", id);
        }
        if let Some(retry) = self.retry {
            push_field(&mut out, "retry", &retry.to_string());
        }
        push_data(&mut out, &self.data);
        out.push(b'\n');
        Bytes::from(out)
    }
}

/// Writes `name: value` with any line breaks in `value` removed.
fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend(value.bytes().filter(|&c| c != b'\r' && c != b'\n'));
    out.push(b'\n');
}

/// Writes one `data:` line per line of `data`.
fn push_data(out: &mut Vec<u8>, data: &str) {
    let mut rest = data.as_bytes();
    loop {
        let (line, next) = match memchr::memchr2(b'\n', b'\r', rest) {
            Some(pos) => {
                let (line, tail) = rest.split_at(pos);
                let skip = if tail.starts_with(b"\r\n") { 2 } else { 1 };
                (line, tail.get(skip..))
            }
            None => (rest, None),
        };
        if line.is_empty() {
            out.extend_from_slice(b"data:\n");
        } else {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new(1 << 20);
        d.feed(input).unwrap();
        let mut out: Vec<_> = d.drain().collect();
        out.extend(d.finish());
        out.extend(d.drain());
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
            ..SseEvent::default()
        }
    }

    #[test]
    fn line_endings_are_equivalent() {
        for sep in ["\n", "\r\n", "\r"] {
            let text = format!("event: a{sep}data: 1{sep}data: 2{sep}{sep}data:3{sep}{sep}");
            assert_eq!(
                decode_all(text.as_bytes()),
                vec![ev(Some("a"), "1\n2"), ev(None, "3")],
                "separator {sep:?}"
            );
        }
    }

    #[test]
    fn field_rules() {
        let cases: &[(&str, SseEvent)] = &[
            ("data\n\n", ev(None, "")),
            ("data:  two spaces\n\n", ev(None, " two spaces")),
            ("data:x:y\n\n", ev(None, "x:y")),
            (": comment\ndata: a\n: another\n\n", ev(None, "a")),
            ("unknown: 1\ndata: a\n\n", ev(None, "a")),
            ("event:\ndata: a\n\n", ev(None, "a")),
            (
                "id: 7\nretry: 1500\ndata: a\n\n",
                SseEvent {
                    id: Some("7".into()),
                    retry: Some(1500),
                    ..ev(None, "a")
                },
            ),
            ("retry: 15x\nid: a\0b\ndata: a\n\n", ev(None, "a")),
            ("\u{feff}data: bom\n\n", ev(None, "bom")),
            ("event: ping\n\n", ev(Some("ping"), "")),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input.as_bytes()),
                vec![want.clone()],
                "{input:?}"
            );
        }
    }

    #[test]
    fn comment_only_blocks_and_blank_lines_dispatch_nothing() {
        assert!(decode_all(b": keep-alive\n\n\n\n:x\n\n").is_empty());
    }

    #[test]
    fn bom_only_stripped_at_stream_start() {
        let got = decode_all("data: a\n\n\u{feff}data: b\n\n".as_bytes());
        assert_eq!(got.len(), 1, "a mid-stream BOM makes an unknown field name");
        let mut d = SseDecoder::new(1024);
        for b in "\u{feff}data: x\n\n".as_bytes() {
            d.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(d.next_event(), Some(ev(None, "x")));
    }

    #[test]
    fn cr_at_chunk_end_then_lf() {
        let mut d = SseDecoder::new(1024);
        d.feed(b"data: a\r").unwrap();
        d.feed(b"").unwrap();
        d.feed(b"\n\r").unwrap();
        d.feed(b"\ndata: b\r\n\r\n").unwrap();
        let got: Vec<_> = d.drain().collect();
        assert_eq!(got, vec![ev(None, "a"), ev(None, "b")]);
    }

    #[test]
    fn finish_flushes_unterminated_event() {
        let mut d = SseDecoder::new(1024);
        d.feed(b"event: message_stop\ndata: {}").unwrap();
        assert_eq!(d.next_event(), None);
        assert_eq!(d.finish(), Some(ev(Some("message_stop"), "{}")));
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn oversized_event_is_a_sticky_error() {
        let mut d = SseDecoder::new(16);
        d.feed(b"data: 0123456789\n").unwrap();
        let err = d.feed(b"data: 0123456789\n").unwrap_err();
        assert_eq!(err, SseError::EventTooLarge { limit: 16 });
        assert_eq!(d.feed(b"\n"), Err(err));
        assert_eq!(d.finish(), None);

        // An endless line without terminator is bounded too.
        let mut d = SseDecoder::new(16);
        d.feed(b"data: 01234").unwrap();
        assert!(d.feed(b"56789abcdef").is_err());

        // ...but long events spread over many small events are fine.
        let mut d = SseDecoder::new(16);
        for _ in 0..100 {
            d.feed(b"data: 0123456789\n\n").unwrap();
        }
        assert_eq!(d.drain().count(), 100);
    }

    #[test]
    fn encode_round_trips_and_splits_lines() {
        assert_eq!(
            &encode_event(Some("message_start"), "{\"a\":1}")[..],
            b"event: message_start\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            &encode_event(None, "a\r\nb\rc\n")[..],
            b"data: a\ndata: b\ndata: c\ndata:\n\n"
        );
        assert_eq!(&encode_event(Some("x\ny"), "")[..], b"event: xy\ndata:\n\n");
        let got = decode_all(&encode_event(Some("e"), "l1\nl2"));
        assert_eq!(got, vec![ev(Some("e"), "l1\nl2")]);
    }

    #[test]
    fn full_event_re_encodes_faithfully() {
        let event = SseEvent {
            event: Some("response.completed".into()),
            data: "{}\n{}".into(),
            id: Some("42".into()),
            retry: Some(3000),
        };
        assert_eq!(
            &event.encode()[..],
            b"event: response.completed\nid: 42\nretry: 3000\ndata: {}\ndata: {}\n\n"
        );
        assert_eq!(decode_all(&event.encode()), vec![event]);
    }
}
