//! A tiny span scanner over raw JSON bytes (crate-private).
//!
//! The request rewriters must forward bodies byte-for-byte except for the one value they touch,
//! so they cannot parse into a tree and re-serialise. Instead they validate the document once
//! with `serde_json` (which also bounds nesting depth to 128) and then use this scanner to find
//! the byte ranges of object members ([`members`]) or to walk whole values token by token in
//! one linear pass ([`tokens`]).
//!
//! The scanner never panics: every byte access goes through `get`, and on anything unexpected
//! it simply stops (returns `None` / ends the iteration). The only allocation is the
//! tokenizer's stack of open containers. Callers are expected to have validated the document
//! first, so "unexpected" only happens on inputs that would have been rejected anyway.

use std::borrow::Cow;
use std::ops::Range;

/// Returns the index of the first non-whitespace byte at or after `i` (JSON whitespace only:
/// space, tab, LF, CR).
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// Given `start` pointing at an opening `"`, returns the index just past the closing quote.
///
/// Escapes are honoured by skipping the byte after every backslash; the `\uXXXX` hex digits
/// are ordinary bytes and need no special handling for span purposes.
pub(crate) fn string_end(b: &[u8], start: usize) -> Option<usize> {
    if b.get(start) != Some(&b'"') {
        return None;
    }
    let mut i = start + 1;
    loop {
        let rest = b.get(i..)?;
        let off = memchr::memchr2(b'"', b'\\', rest)?;
        let at = i + off;
        if b.get(at) == Some(&b'\\') {
            i = at + 2;
        } else {
            return Some(at + 1);
        }
    }
}

/// Returns the end (exclusive) of the JSON value that starts at `start` (which must point at
/// the value's first byte, not at whitespace).
///
/// Containers are skipped iteratively with a depth counter (bracket kinds are not matched:
/// the document was validated beforehand), so deep nesting cannot overflow the stack.
pub(crate) fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match *b.get(start)? {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            // Number or literal: runs until a structural character or whitespace.
            let mut i = start;
            while let Some(&c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// One `"key": value` pair of an object, as byte ranges into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The key including its quotes.
    pub key: Range<usize>,
    /// The value, without surrounding whitespace.
    pub value: Range<usize>,
}

/// Iterator over the members of the object whose `{` is at the given index.
pub(crate) struct Members<'a> {
    b: &'a [u8],
    pos: usize,
    done: bool,
}

/// Iterates the members of the object starting at `open` (which must be a `{`).
pub(crate) fn members(b: &[u8], open: usize) -> Members<'_> {
    let ok = b.get(open) == Some(&b'{');
    Members {
        b,
        pos: open + 1,
        done: !ok,
    }
}

impl Iterator for Members<'_> {
    type Item = Member;

    fn next(&mut self) -> Option<Member> {
        if self.done {
            return None;
        }
        let item = self.step();
        if item.is_none() {
            self.done = true;
        }
        item
    }
}

impl Members<'_> {
    fn step(&mut self) -> Option<Member> {
        let b = self.b;
        let i = skip_ws(b, self.pos);
        if *b.get(i)? == b'}' {
            return None;
        }
        let key_end = string_end(b, i)?;
        let colon = skip_ws(b, key_end);
        if *b.get(colon)? != b':' {
            return None;
        }
        let value_start = skip_ws(b, colon + 1);
        let value_stop = value_end(b, value_start)?;
        let after = skip_ws(b, value_stop);
        match *b.get(after)? {
            b',' => self.pos = after + 1,
            // Leave `pos` on the `}` so the next call ends the iteration.
            b'}' => self.pos = after,
            _ => return None,
        }
        Some(Member {
            key: i..key_end,
            value: value_start..value_stop,
        })
    }
}

/// One lexical event of a single-pass walk over a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// `{` (true) or `[` (false) at the given index.
    Open { object: bool },
    /// The matching `}` or `]`.
    Close,
    /// An object key (quotes included).
    Key(Range<usize>),
    /// A string (quotes included), number or literal value.
    Scalar(Range<usize>),
}

/// Single-pass, linear-time token stream over the JSON value starting at a given index.
///
/// Recursive descent with [`members`] re-scans nested values once per level,
/// which is quadratic in the nesting depth; walks over whole documents (cache-TTL detection,
/// token estimation) use this instead. The iteration ends when the starting value is
/// complete, or at the first byte that does not fit.
pub(crate) struct Tokens<'a> {
    b: &'a [u8],
    pos: usize,
    /// Open containers, innermost last: `true` for objects.
    stack: Vec<bool>,
    /// The next string in the current object is a key.
    want_key: bool,
    done: bool,
}

/// Tokenizes the value that starts at `start` (after any whitespace).
pub(crate) fn tokens(b: &[u8], start: usize) -> Tokens<'_> {
    Tokens {
        b,
        pos: start,
        stack: Vec::new(),
        want_key: false,
        done: false,
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        if self.done {
            return None;
        }
        let token = self.step();
        // Stop after the starting value is complete (or at the first unexpected byte).
        if token.is_none() || self.stack.is_empty() {
            self.done = true;
        }
        token
    }
}

impl Tokens<'_> {
    fn step(&mut self) -> Option<Token> {
        loop {
            let i = skip_ws(self.b, self.pos);
            let c = *self.b.get(i)?;
            self.pos = i + 1;
            match c {
                b'{' | b'[' => {
                    let object = c == b'{';
                    self.stack.push(object);
                    self.want_key = object;
                    return Some(Token::Open { object });
                }
                b'}' | b']' => {
                    self.stack.pop()?;
                    self.want_key = false;
                    return Some(Token::Close);
                }
                b',' => self.want_key = self.stack.last() == Some(&true),
                b':' => self.want_key = false,
                b'"' => {
                    let end = string_end(self.b, i)?;
                    self.pos = end;
                    if self.want_key {
                        self.want_key = false;
                        return Some(Token::Key(i..end));
                    }
                    return Some(Token::Scalar(i..end));
                }
                _ => {
                    let end = value_end(self.b, i)?;
                    self.pos = end;
                    return Some(Token::Scalar(i..end));
                }
            }
        }
    }
}

/// Decodes the JSON string literal at `span` (quotes included).
///
/// Borrows when the literal has no escapes (the common case for keys and model names);
/// otherwise lets `serde_json` do the unescaping. Returns `None` for non-strings and for
/// invalid UTF-8 / escapes.
pub(crate) fn decode_str(b: &[u8], span: Range<usize>) -> Option<Cow<'_, str>> {
    let raw = b.get(span)?;
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if memchr::memchr(b'\\', inner).is_none() {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
}

/// True if the key literal at `span` decodes to exactly `name`.
pub(crate) fn key_is(b: &[u8], span: Range<usize>, name: &str) -> bool {
    // Fast path: an unescaped key compares byte-for-byte without decoding.
    if let Some(inner) = b.get(span.start + 1..span.end.saturating_sub(1))
        && inner == name.as_bytes()
    {
        return true;
    }
    decode_str(b, span).is_some_and(|k| k == name)
}

/// Returns the span of the last member named `name` (JSON parsers disagree on duplicate keys,
/// but the major ones — serde_json's map, Python's `json`, JavaScript's `JSON.parse` — keep the
/// last one, so that is the effective value).
pub(crate) fn last_member(b: &[u8], open: usize, name: &str) -> Option<Member> {
    members(b, open)
        .filter(|m| key_is(b, m.key.clone(), name))
        .last()
}

/// Appends `s` as a JSON string literal (quotes included) to `out`.
///
/// Hand-written rather than via `serde_json::to_writer` so callers get an infallible,
/// allocation-free escaper: quotes, backslashes and control characters are escaped,
/// everything else (including non-ASCII) is copied verbatim as UTF-8.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                out.extend_from_slice(b"\\u00");
                out.push(hex_digit(c >> 4));
                out.push(hex_digit(c & 0xf));
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Lower-case hex digit for a nibble (`n < 16`).
const fn hex_digit(n: u8) -> u8 {
    let n = n & 0xf;
    if n < 10 { b'0' + n } else { b'a' + (n - 10) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_report_exact_spans() {
        let doc = br#" { "a" : [1, {"x":"}"}, "q\"]"] , "b":null,"c":-1.5e3 } "#;
        let open = skip_ws(doc, 0);
        let ms: Vec<_> = members(doc, open).collect();
        assert_eq!(ms.len(), 3);
        let text = |r: Range<usize>| std::str::from_utf8(&doc[r]).unwrap().to_string();
        assert_eq!(text(ms[0].key.clone()), "\"a\"");
        assert_eq!(text(ms[0].value.clone()), r#"[1, {"x":"}"}, "q\"]"]"#);
        assert_eq!(text(ms[1].value.clone()), "null");
        assert_eq!(text(ms[2].value.clone()), "-1.5e3");
    }

    #[test]
    fn tokens_walk_one_value() {
        let doc = br#"{"a":[1,"x",{"k":null}],"b":"v"} trailing"#;
        let got: Vec<_> = tokens(doc, 0)
            .map(|t| match t {
                Token::Open { object } => {
                    if object {
                        "{".to_string()
                    } else {
                        "[".to_string()
                    }
                }
                Token::Close => "end".to_string(),
                Token::Key(r) => format!("key {}", std::str::from_utf8(&doc[r]).unwrap()),
                Token::Scalar(r) => format!("val {}", std::str::from_utf8(&doc[r]).unwrap()),
            })
            .collect();
        assert_eq!(
            got,
            [
                "{",
                "key \"a\"",
                "[",
                "val 1",
                "val \"x\"",
                "{",
                "key \"k\"",
                "val null",
                "end",
                "end",
                "key \"b\"",
                "val \"v\"",
                "end"
            ]
        );
        assert_eq!(tokens(b" 42 ", 1).count(), 1);
        assert!(tokens(b"{\"a\":", 0).count() <= 2);
    }

    #[test]
    fn escaped_keys_compare_by_decoded_value() {
        let doc = br#"{"mo\u0064el":1}"#;
        let m = members(doc, 0).next().unwrap();
        assert!(key_is(doc, m.key.clone(), "model"));
        assert!(!key_is(doc, m.key, "mode"));
    }

    #[test]
    fn truncated_input_stops_quietly() {
        for doc in [&b"{\"a\":"[..], b"{\"a", b"[1,", b"{\"a\":[1,2", b"\"abc\\"] {
            assert!(members(doc, 0).count() <= 1);
            assert!(tokens(doc, 0).count() <= 5);
            let _ = value_end(doc, 0);
        }
    }

    #[test]
    fn json_string_escaping_round_trips() {
        for s in [
            "",
            "plain",
            "quote\" back\\slash",
            "ctl\u{1}\u{1f}\n\r\t\u{8}\u{c}",
            "ünï 😀",
        ] {
            let mut out = Vec::new();
            push_json_str(&mut out, s);
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }
    }
}
