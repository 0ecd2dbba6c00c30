//! The streaming decoder: bytes in, JSON values and QMP messages out.

use serde_json::Value;

use crate::error::{excerpt, Error, Result};
use crate::wire::Message;
use skip::Skip;

/// The default bound on one message's size: 10 MiB, as libvirt and qemu.qmp use.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// How many bytes of input an error excerpt shows at most.
const EXCERPT_LEN: usize = 40;

/// When the buffer is empty and its capacity exceeds this, it is shrunk back (a huge message
/// does not pin its memory for the rest of the session).
const SHRINK_ABOVE: usize = 1024 * 1024;
const SHRINK_TO: usize = 64 * 1024;

/// The byte that `guest-sync-delimited` puts before its reply and that clients send to reset
/// QEMU's parser. It never occurs in UTF-8 text.
const SENTINEL: u8 = 0xFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between top-level values: whitespace and sentinels are skipped.
    Between,
    /// Inside an object or array, outside any string.
    Container,
    /// Inside a string (at top level when `depth == 0`).
    Str,
    /// Inside a bare top-level token (a number, a literal, or garbage).
    Scalar,
    /// Dropping everything up to and including the next sentinel byte.
    Sentinel,
    /// Skipping a frame that outgrew the bound (see [`Skip`]).
    Skip,
}

/// A streaming JSON decoder for QMP and the guest agent.
///
/// Feed it bytes in any chunking (one byte at a time, many messages per chunk, a message split
/// anywhere) with [`feed`](Decoder::feed), and take complete values out with
/// [`next_value`](Decoder::next_value) or classified messages with
/// [`next_message`](Decoder::next_message) until they return `Ok(None)`.
///
/// Messages are framed by JSON structure (strings, escapes, nesting), not by lines, so the
/// multi-line output of a `pretty=on` monitor and messages without CRLF decode the same.
/// Between messages, whitespace and `0xFF` sentinel bytes (guest agent resync) are skipped.
/// A message that is complete in the buffer is parsed where it lies, in one pass; one split
/// across reads is followed by a single-pass structural scanner as its bytes arrive, and
/// parsed once complete.
///
/// # Errors and recovery
///
/// An error concerns one frame, and the decoder goes on with the next one:
///
/// - invalid JSON ([`Error::Json`]) or invalid UTF-8 ([`Error::Utf8`]) in a complete frame:
///   the frame is dropped and decoding resumes right after it, at the next top-level value.
///   Frames are delimited structurally, so an unbalanced bracket can swallow what follows
///   until the brackets balance or the size bound is hit;
/// - a `0xFF` byte inside a frame (it never occurs in UTF-8) cuts the frame there: the partial
///   frame is dropped with [`Error::Utf8`] at the offset of the `0xFF`, and decoding resumes
///   after it, which is how a guest agent's `guest-sync-delimited` resync works;
/// - a frame that grows beyond the bound is skipped as it arrives, following its structure
///   without buffering it, and gives [`Error::MessageTooLarge`] once its end has been skipped
///   too, with its full size and what could be told of it on the way: its kind and its `id`
///   (see [`Skipped`](crate::Skipped)). Decoding resumes after its end. (Until that end
///   arrives nothing is reported: a peer that stops in the middle of a huge message looks like
///   one that is slow to send it, and the end of the stream there is [`Error::Truncated`] for a
///   [`Session`](crate::Session).) A `0xFF` inside such a frame cuts it as in any other frame;
/// - a complete JSON value that is not a QMP message gives [`Error::Protocol`] from
///   [`next_message`](Decoder::next_message) and is dropped.
///
/// Offsets in errors count bytes from the first byte ever fed.
///
/// ```
/// use qmp_proto::{Decoder, Message};
///
/// let mut decoder = Decoder::new();
/// decoder.feed(b"{\"return\": {}, \"id\"");
/// assert_eq!(decoder.next_message().unwrap(), None);
/// decoder.feed(b": 1}\r\n{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n");
/// assert!(matches!(decoder.next_message().unwrap(), Some(Message::Return { .. })));
/// assert!(matches!(decoder.next_message().unwrap(), Some(Message::Event(e)) if e.name == "STOP"));
/// assert_eq!(decoder.next_message().unwrap(), None);
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    /// First byte not consumed; the start of the current frame when inside one.
    start: usize,
    /// Next byte to scan.
    pos: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    state: State,
    /// Nesting depth of the current frame.
    depth: usize,
    /// Inside a string, the previous byte was a backslash.
    escape: bool,
    /// The frame being skipped, in [`State::Skip`].
    skip: Skip,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder with the default message size bound, [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn new() -> Self {
        Decoder::with_max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// A decoder that refuses messages larger than `limit` bytes (at least 1).
    pub fn with_max_message_size(limit: usize) -> Self {
        let limit = limit.max(1);
        Decoder {
            buf: Vec::new(),
            start: 0,
            pos: 0,
            base: 0,
            state: State::Between,
            depth: 0,
            escape: false,
            skip: Skip::default(),
            limit,
        }
    }

    /// The bound on one message's size, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.limit
    }

    /// Appends bytes received from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.compact();
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes are buffered and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The stream offset of the next byte not yet consumed (bytes fed so far minus
    /// [`buffered`](Decoder::buffered)).
    pub fn position(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Whether bytes of a message that has not been returned yet are buffered: a partial
    /// message, or (when `next_value` was not called until it returned `None`) a complete
    /// one. Whitespace and sentinels between messages do not count. At the end of the
    /// stream, `true` means the stream was cut in the middle of a message.
    pub fn is_mid_message(&self) -> bool {
        match self.state {
            State::Container | State::Str | State::Scalar | State::Skip => true,
            State::Sentinel => false,
            State::Between => self.buf[self.pos..]
                .iter()
                .any(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | SENTINEL)),
        }
    }

    /// Drops everything buffered and everything that arrives up to and including the next
    /// `0xFF` byte. A guest agent client calls this when it sends `guest-sync-delimited`:
    /// the agent answers with `0xFF` followed by the reply, and whatever a previous client
    /// left unread before it is skipped.
    pub fn discard_until_sentinel(&mut self) {
        self.start = self.buf.len();
        self.pos = self.buf.len();
        self.state = State::Sentinel;
        self.depth = 0;
        self.escape = false;
        self.skip = Skip::default();
    }

    /// The next complete JSON value, or `Ok(None)` when more bytes are needed.
    ///
    /// After an error, call again: decoding goes on with the next frame (see the type's
    /// documentation).
    pub fn next_value(&mut self) -> Result<Option<Value>> {
        if let Some(value) = self.parse_in_place() {
            return Ok(Some(value));
        }
        let Some((begin, end)) = self.scan()? else {
            return Ok(None);
        };
        let frame = &self.buf[begin..end];
        match serde_json::from_slice::<Value>(frame) {
            Ok(value) => Ok(Some(value)),
            Err(error) => Err(self.frame_error(begin, end, &error)),
        }
    }

    /// The next complete message, classified, or `Ok(None)` when more bytes are needed.
    ///
    /// A JSON value that is not a QMP message gives [`Error::Protocol`]; it is dropped and
    /// the next call goes on with the next message.
    pub fn next_message(&mut self) -> Result<Option<Message>> {
        match self.next_value()? {
            Some(value) => Message::from_value(value).map(Some),
            None => Ok(None),
        }
    }

    /// The fast path: at a message boundary, an object or array that is complete in the
    /// buffer (and within the bound) is parsed where it lies, without scanning it first.
    ///
    /// Anything else (an incomplete message, an invalid one, one over the bound, a bare
    /// token) returns `None` and is left to the scanner, which delimits the frame: a value
    /// serde_json parses is valid JSON, which the scanner would delimit identically, so the
    /// results do not depend on which path a message took. The scanner then owns the frame
    /// until it ends, so a message split across reads costs one failed attempt at most.
    fn parse_in_place(&mut self) -> Option<Value> {
        if self.state != State::Between {
            return None;
        }
        let buf = &self.buf[..];
        let mut pos = self.pos;
        while pos < buf.len() && matches!(buf[pos], b' ' | b'\t' | b'\r' | b'\n' | SENTINEL) {
            pos += 1;
        }
        self.start = pos;
        self.pos = pos;
        if !matches!(buf.get(pos), Some(b'{' | b'[')) {
            return None;
        }
        let end = buf.len().min(pos.saturating_add(self.limit));
        let mut values = serde_json::Deserializer::from_slice(&buf[pos..end]).into_iter::<Value>();
        let value = values.next()?.ok()?;
        self.start = pos + values.byte_offset();
        self.pos = self.start;
        Some(value)
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf.shrink_to(SHRINK_TO);
            }
        } else {
            self.buf.drain(..self.start);
        }
        self.base += self.start as u64;
        self.pos -= self.start;
        self.start = 0;
    }

    fn frame_error(&self, begin: usize, end: usize, error: &serde_json::Error) -> Error {
        let frame = &self.buf[begin..end];
        let offset = self.base + begin as u64;
        let at = line_column_to_index(frame, error.line(), error.column());
        if let Err(utf8) = std::str::from_utf8(frame) {
            let bad = utf8.valid_up_to();
            if bad <= at {
                return Error::Utf8 {
                    offset: offset + bad as u64,
                    excerpt: excerpt(frame, bad, EXCERPT_LEN),
                };
            }
        }
        let full = error.to_string();
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        Error::Json {
            offset: offset + at as u64,
            excerpt: excerpt(frame, at, EXCERPT_LEN),
            message,
        }
    }
}

/// Converts serde_json's 1-based line and column into an index into `frame`.
fn line_column_to_index(frame: &[u8], line: usize, column: usize) -> usize {
    let mut line_start = 0;
    let mut current = 1;
    while current < line {
        match frame[line_start..].iter().position(|&b| b == b'\n') {
            Some(newline) => {
                line_start += newline + 1;
                current += 1;
            }
            None => break,
        }
    }
    (line_start + column.saturating_sub(1)).min(frame.len())
}

mod scan;
mod skip;
#[cfg(test)]
mod tests;
