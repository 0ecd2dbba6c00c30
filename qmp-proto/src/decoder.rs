//! The streaming decoder: bytes in, JSON values and QMP messages out.

use serde_json::Value;

use crate::error::{excerpt, Error, Result, Skipped, SkippedId, SkippedKind};
use crate::wire::Message;

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

/// Marks the bytes that matter inside a container outside strings.
static STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table[SENTINEL as usize] = true;
    table
};

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

    /// Scans the buffered bytes for the next complete frame and consumes it, returning its
    /// range in `buf`.
    fn scan(&mut self) -> Result<Option<(usize, usize)>> {
        loop {
            let step = match self.state {
                State::Between => self.scan_between(),
                State::Sentinel => self.scan_sentinel(),
                State::Container => self.scan_container()?,
                State::Str => self.scan_string()?,
                State::Scalar => self.scan_scalar()?,
                State::Skip => self.scan_skip()?,
            };
            match step {
                Step::Frame(begin, end) => return Ok(Some((begin, end))),
                Step::NeedMore => return Ok(None),
                Step::Continue => {}
            }
        }
    }

    fn scan_between(&mut self) -> Step {
        let buf = &self.buf[..];
        let mut pos = self.pos;
        while pos < buf.len() && matches!(buf[pos], b' ' | b'\t' | b'\r' | b'\n' | SENTINEL) {
            pos += 1;
        }
        self.start = pos;
        self.pos = pos;
        let Some(&first) = buf.get(pos) else {
            return Step::NeedMore;
        };
        self.pos = pos + 1;
        match first {
            b'{' | b'[' => {
                self.depth = 1;
                self.state = State::Container;
            }
            b'"' => {
                self.depth = 0;
                self.escape = false;
                self.state = State::Str;
            }
            b'}' | b']' | b',' | b':' => {
                // A stray punctuation mark: a one-byte (invalid) frame.
                self.start = pos + 1;
                return Step::Frame(pos, pos + 1);
            }
            _ => self.state = State::Scalar,
        }
        Step::Continue
    }

    fn scan_sentinel(&mut self) -> Step {
        let len = self.buf.len();
        match self.buf[self.pos..].iter().position(|&b| b == SENTINEL) {
            Some(at) => {
                self.pos += at + 1;
                self.start = self.pos;
                self.state = State::Between;
                Step::Continue
            }
            None => {
                self.pos = len;
                self.start = len;
                Step::NeedMore
            }
        }
    }

    fn scan_container(&mut self) -> Result<Step> {
        let end = self.scan_end(0);
        let buf = &self.buf[..];
        let mut pos = self.pos;
        let mut depth = self.depth;
        while pos < end {
            let b = buf[pos];
            pos += 1;
            if !STRUCTURAL[b as usize] {
                continue;
            }
            match b {
                b'"' => {
                    self.pos = pos;
                    self.depth = depth;
                    self.escape = false;
                    self.state = State::Str;
                    return Ok(Step::Continue);
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos = pos;
                        self.depth = 0;
                        return Ok(self.finish_frame());
                    }
                }
                _ => {
                    self.pos = pos;
                    return self.cut_frame();
                }
            }
        }
        self.pos = pos;
        self.depth = depth;
        self.incomplete(0)
    }

    fn scan_string(&mut self) -> Result<Step> {
        let end = self.scan_end(0);
        let buf = &self.buf[..];
        let mut pos = self.pos;
        while pos < end {
            if self.escape {
                self.escape = false;
                pos += 1;
                if buf[pos - 1] == SENTINEL {
                    self.pos = pos;
                    return self.cut_frame();
                }
                continue;
            }
            pos += find_string_special(&buf[pos..end]);
            if pos == end {
                break;
            }
            let b = buf[pos];
            pos += 1;
            match b {
                b'"' => {
                    self.pos = pos;
                    if self.depth == 0 {
                        return Ok(self.finish_frame());
                    }
                    self.state = State::Container;
                    return Ok(Step::Continue);
                }
                b'\\' => self.escape = true,
                _ => {
                    self.pos = pos;
                    return self.cut_frame();
                }
            }
        }
        self.pos = pos;
        self.incomplete(0)
    }

    fn scan_scalar(&mut self) -> Result<Step> {
        let end = self.scan_end(1);
        let buf = &self.buf[..];
        let mut pos = self.pos;
        while pos < end && !is_token_delimiter(buf[pos]) {
            pos += 1;
        }
        self.pos = pos;
        if pos < end {
            // The delimiter ends the token and is not part of it.
            return Ok(self.finish_frame());
        }
        self.incomplete(1)
    }

    /// Where scanning of the current frame must stop: at the end of the buffer, or where the
    /// frame would pass the size bound (`slack` more bytes for bare tokens, whose delimiter is
    /// not part of them).
    fn scan_end(&self, slack: usize) -> usize {
        let len = self.buf.len();
        len.min(self.start.saturating_add(self.limit).saturating_add(slack))
    }

    /// The current frame ends at `pos` (exclusive).
    fn finish_frame(&mut self) -> Step {
        let begin = self.start;
        self.state = State::Between;
        self.start = self.pos;
        Step::Frame(begin, self.pos)
    }

    /// A sentinel (at `pos - 1`) interrupted the current frame: drop the partial frame and
    /// resume after the sentinel.
    fn cut_frame(&mut self) -> Result<Step> {
        let begin = self.start;
        let sentinel = self.pos - 1;
        self.state = State::Between;
        self.start = self.pos;
        Err(Error::Utf8 {
            offset: self.base + sentinel as u64,
            excerpt: excerpt(&self.buf[begin..self.pos], sentinel - begin, EXCERPT_LEN),
        })
    }

    /// Scanning stopped before the current frame ended: wait for more bytes, or, once it has
    /// more than `limit` bytes (`limit + slack` scanned without an end), skip it: the skipper
    /// goes over it again from its first byte (still buffered), noting what it is, and then
    /// over the rest as it arrives.
    fn incomplete(&mut self, slack: usize) -> Result<Step> {
        if self.pos - self.start >= self.limit.saturating_add(slack) {
            self.skip = Skip {
                begin: self.base + self.start as u64,
                ..Skip::default()
            };
            self.pos = self.start;
            self.state = State::Skip;
            return Ok(Step::Continue);
        }
        Ok(Step::NeedMore)
    }

    /// Skips the frame that outgrew the bound: everything buffered is consumed (and dropped);
    /// at the frame's end, reports it.
    fn scan_skip(&mut self) -> Result<Step> {
        let len = self.buf.len();
        let begin = self.pos;
        let outcome = self.skip.advance(&self.buf[begin..len]);
        match outcome {
            SkipStep::NeedMore => {
                self.pos = len;
                self.start = len;
                Ok(Step::NeedMore)
            }
            SkipStep::End(n) => {
                self.pos = begin + n;
                self.start = self.pos;
                self.state = State::Between;
                let skip = std::mem::take(&mut self.skip);
                let size = self.base + self.pos as u64 - skip.begin;
                Err(Error::MessageTooLarge {
                    limit: self.limit,
                    size,
                    skipped: skip.finish(),
                })
            }
            SkipStep::Cut(n) => {
                // The sentinel is at `begin + n - 1`.
                self.pos = begin + n;
                self.start = self.pos;
                self.state = State::Between;
                let skip = std::mem::take(&mut self.skip);
                let sentinel = self.base + (self.pos - 1) as u64;
                Err(Error::Utf8 {
                    offset: sentinel,
                    excerpt: skip.tail_excerpt(),
                })
            }
        }
    }
}

/// How many bytes of a member name the skipper keeps (with its quotes and escapes): enough for
/// every name it looks for, even spelled with `\u` escapes.
const SKIP_KEY_MAX: usize = 64;
/// How many bytes of an `id` or `event` value the skipper keeps (as JSON text).
const SKIP_VALUE_MAX: usize = 256;
/// How many bytes before a sentinel an excerpt shows (the same as for a buffered frame).
const SKIP_TAIL: usize = EXCERPT_LEN / 2;

/// Where the skipper is inside the top-level object of a skipped frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Slot {
    /// Not in a top-level object, or past a value: nothing to note.
    #[default]
    Other,
    /// Expecting a member name (after `{` or `,`).
    Key,
    /// After a member name, expecting `:`.
    Colon,
    /// After `:`, expecting the value.
    Value,
    /// Inside a bare token (a number or literal) that is a member's value.
    Token,
}

/// Which top-level member of a skipped object the skipper is at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Member {
    #[default]
    Other,
    Return,
    Error,
    Event,
    Greeting,
    Id,
}

/// The frame's first byte decides what it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Top {
    /// Nothing seen yet.
    #[default]
    Start,
    Object,
    Array,
    String,
    Scalar,
}

/// Bytes kept while skipping, up to a bound; `full` once something did not fit.
#[derive(Debug, Clone, Default)]
struct Capture {
    bytes: Vec<u8>,
    full: bool,
}

impl Capture {
    fn clear(&mut self) {
        self.bytes.clear();
        self.full = false;
    }

    fn push(&mut self, bytes: &[u8], max: usize) {
        if self.full || self.bytes.len() + bytes.len() > max {
            self.full = true;
        } else {
            self.bytes.extend_from_slice(bytes);
        }
    }
}

/// What a step of the skipper found.
enum SkipStep {
    /// Everything given was skipped; the frame goes on.
    NeedMore,
    /// The frame ended after the first `n` bytes given.
    End(usize),
    /// A sentinel, the `n`th byte given, cut the frame.
    Cut(usize),
}

/// Skips one frame that outgrew the bound, from its first byte, in any chunking, with bounded
/// memory, following JSON structure like the scanner does (strings, escapes, nesting; bare
/// tokens end at a delimiter). On the way it notes the names of the members of a top-level
/// object and the values of `id` and `event` when they are short, so that the frame can be
/// classified and matched to its command without being kept.
#[derive(Debug, Clone, Default)]
struct Skip {
    /// Stream offset of the frame's first byte.
    begin: u64,
    top: Top,
    /// Nesting depth (1 inside the top-level container).
    depth: usize,
    in_string: bool,
    escape: bool,
    /// Inside the top-level object: where in a member.
    slot: Slot,
    /// The current string is a member name of the top-level object.
    string_is_key: bool,
    /// The member whose value is being skipped.
    member: Member,
    key: Capture,
    value: Capture,
    has_return: bool,
    has_error: bool,
    has_event: bool,
    has_greeting: bool,
    event: Option<String>,
    id: SkippedId,
    /// The last bytes skipped, for the excerpt of a cut.
    tail: Vec<u8>,
}

impl Skip {
    /// Skips through `bytes`, the frame's next bytes.
    fn advance(&mut self, bytes: &[u8]) -> SkipStep {
        let outcome = self.advance_inner(bytes);
        let used = match outcome {
            SkipStep::NeedMore => bytes.len(),
            SkipStep::End(n) | SkipStep::Cut(n) => n,
        };
        // Only the bytes before a cut go into the tail (the cut excerpt adds the sentinel).
        let kept = match outcome {
            SkipStep::Cut(n) => &bytes[..n - 1],
            _ => &bytes[..used],
        };
        let keep = kept.len().min(SKIP_TAIL);
        let drop = (self.tail.len() + keep).saturating_sub(SKIP_TAIL);
        self.tail.drain(..drop.min(self.tail.len()));
        self.tail.extend_from_slice(&kept[kept.len() - keep..]);
        outcome
    }

    fn advance_inner(&mut self, bytes: &[u8]) -> SkipStep {
        let mut pos = 0;
        if self.top == Top::Start {
            let Some(&first) = bytes.first() else {
                return SkipStep::NeedMore;
            };
            pos = 1;
            match first {
                b'{' => {
                    self.top = Top::Object;
                    self.depth = 1;
                    self.slot = Slot::Key;
                }
                b'[' => {
                    self.top = Top::Array;
                    self.depth = 1;
                }
                b'"' => {
                    self.top = Top::String;
                    self.in_string = true;
                }
                _ => self.top = Top::Scalar,
            }
        }
        if self.top == Top::Scalar {
            // The delimiter ends the token and is not part of it.
            return match bytes[pos..].iter().position(|&b| is_token_delimiter(b)) {
                Some(at) => SkipStep::End(pos + at),
                None => SkipStep::NeedMore,
            };
        }
        while pos < bytes.len() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    let b = bytes[pos];
                    pos += 1;
                    if b == SENTINEL {
                        return SkipStep::Cut(pos);
                    }
                    self.capture(&[b]);
                    continue;
                }
                let run = find_string_special(&bytes[pos..]);
                self.capture(&bytes[pos..pos + run]);
                pos += run;
                let Some(&b) = bytes.get(pos) else {
                    break;
                };
                pos += 1;
                match b {
                    b'"' => {
                        self.capture(b"\"");
                        self.in_string = false;
                        if self.depth == 0 {
                            return SkipStep::End(pos);
                        }
                        self.string_ended();
                    }
                    b'\\' => {
                        self.capture(b"\\");
                        self.escape = true;
                    }
                    _ => return SkipStep::Cut(pos),
                }
                continue;
            }
            let b = bytes[pos];
            pos += 1;
            if self.depth > 1 {
                // Below the top level only the structure matters.
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth -= 1,
                    SENTINEL => return SkipStep::Cut(pos),
                    _ => {}
                }
                continue;
            }
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.end_token(),
                b'"' => {
                    self.in_string = true;
                    self.string_started();
                }
                b'{' | b'[' => {
                    if self.slot == Slot::Value {
                        self.value_done(false);
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    self.end_token();
                    self.depth -= 1;
                    return SkipStep::End(pos);
                }
                b':' => {
                    if self.slot == Slot::Colon {
                        self.slot = Slot::Value;
                        self.value.clear();
                    }
                }
                b',' => {
                    self.end_token();
                    if self.top == Top::Object {
                        self.slot = Slot::Key;
                    }
                }
                SENTINEL => return SkipStep::Cut(pos),
                _ => {
                    if matches!(self.slot, Slot::Value | Slot::Token) {
                        self.slot = Slot::Token;
                        self.capture(&[b]);
                    }
                }
            }
        }
        SkipStep::NeedMore
    }

    /// Keeps `bytes` of a member name, or of the value of `id` or `event`.
    fn capture(&mut self, bytes: &[u8]) {
        if self.depth != 1 {
            return;
        }
        if self.string_is_key {
            self.key.push(bytes, SKIP_KEY_MAX);
        } else if matches!(self.slot, Slot::Value | Slot::Token)
            && matches!(self.member, Member::Id | Member::Event)
        {
            self.value.push(bytes, SKIP_VALUE_MAX);
        }
    }

    /// A string starts at the top level of the frame (the opening quote is consumed).
    fn string_started(&mut self) {
        if self.slot == Slot::Key {
            self.string_is_key = true;
            self.key.clear();
            self.key.push(b"\"", SKIP_KEY_MAX);
        } else if self.slot == Slot::Value {
            self.value.clear();
            self.capture(b"\"");
        }
    }

    /// A string at the top level of the frame ended (its closing quote was captured).
    fn string_ended(&mut self) {
        if self.string_is_key {
            self.string_is_key = false;
            self.member = self.key_member();
            match self.member {
                Member::Return => self.has_return = true,
                Member::Error => self.has_error = true,
                Member::Event => self.has_event = true,
                Member::Greeting => self.has_greeting = true,
                Member::Id | Member::Other => {}
            }
            self.slot = Slot::Colon;
        } else if self.slot == Slot::Value {
            self.value_done(true);
        }
    }

    /// A bare token that is a member's value ends at whitespace, `,` or the closing bracket.
    fn end_token(&mut self) {
        if self.slot == Slot::Token {
            self.value_done(true);
        }
    }

    /// The value of the current member is complete (`scalar`), or is a container.
    fn value_done(&mut self, scalar: bool) {
        self.slot = Slot::Other;
        let parsed = (scalar && !self.value.full)
            .then(|| serde_json::from_slice::<Value>(&self.value.bytes).ok())
            .flatten();
        match self.member {
            Member::Id => {
                self.id = match parsed {
                    Some(id) => SkippedId::Value(id),
                    None => SkippedId::Unreadable,
                }
            }
            Member::Event => {
                self.event = match parsed {
                    Some(Value::String(name)) => Some(name),
                    _ => None,
                }
            }
            _ => {}
        }
        self.member = Member::Other;
        self.value.clear();
    }

    fn key_member(&self) -> Member {
        if self.key.full {
            return Member::Other;
        }
        let Ok(name) = serde_json::from_slice::<String>(&self.key.bytes) else {
            return Member::Other;
        };
        match name.as_str() {
            "return" => Member::Return,
            "error" => Member::Error,
            "event" => Member::Event,
            "QMP" => Member::Greeting,
            "id" => Member::Id,
            _ => Member::Other,
        }
    }

    /// What the skipped frame was, classified in the order of `Message::from_value`.
    fn finish(self) -> Skipped {
        if self.top != Top::Object {
            return Skipped::default();
        }
        let kind = if self.has_return {
            SkippedKind::Return
        } else if self.has_event {
            SkippedKind::Event(self.event)
        } else if self.has_error {
            SkippedKind::Error
        } else if self.has_greeting {
            SkippedKind::Greeting
        } else {
            SkippedKind::Unknown
        };
        Skipped { kind, id: self.id }
    }

    /// The excerpt of a frame cut by a sentinel: the bytes before it and the sentinel, as a
    /// buffered frame's excerpt shows them.
    fn tail_excerpt(&self) -> String {
        let mut bytes = self.tail.clone();
        bytes.push(SENTINEL);
        excerpt(&bytes, bytes.len() - 1, EXCERPT_LEN)
    }
}

/// What one scanning step found.
enum Step {
    /// A complete frame, `buf[begin..end]`.
    Frame(usize, usize),
    /// All buffered bytes are scanned.
    NeedMore,
    /// The state changed; scan on.
    Continue,
}

fn is_token_delimiter(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\r' | b'\n' | b'{' | b'}' | b'[' | b']' | b'"' | b',' | b':' | SENTINEL
    )
}

/// Index of the first `"`, `\` or `0xFF` in `bytes`, or `bytes.len()`. Looks at eight bytes
/// at a time: string contents are most of a QMP stream.
#[inline]
fn find_string_special(bytes: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    #[inline]
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(LO) & !v & HI
    }
    let mut i = 0;
    while let Some(chunk) = bytes[i..].first_chunk::<8>() {
        let v = u64::from_le_bytes(*chunk);
        let hits = zero_bytes(v ^ (LO * u64::from(b'"')))
            | zero_bytes(v ^ (LO * u64::from(b'\\')))
            | zero_bytes(!v);
        if hits != 0 {
            // The lowest flagged byte is always a true match (false positives of this
            // trick only occur above a true match).
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !matches!(bytes[i], b'"' | b'\\' | SENTINEL) {
        i += 1;
    }
    i
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Decodes `input` fed in chunks of `chunk` bytes, collecting values and errors.
    fn decode_chunked(decoder: &mut Decoder, input: &[u8], chunk: usize) -> Vec<Result<Value>> {
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            decoder.feed(piece);
            loop {
                match decoder.next_value() {
                    Ok(Some(v)) => out.push(Ok(v)),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        out
    }

    fn decode_all(input: &[u8]) -> Vec<Result<Value>> {
        decode_chunked(&mut Decoder::new(), input, input.len())
    }

    /// Decoding gives the same results whatever the chunking.
    fn assert_chunking_invariant(input: &[u8]) -> Vec<Result<Value>> {
        let whole = decode_all(input);
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(decode_chunked(&mut Decoder::new(), input, chunk), whole);
        }
        for split in 0..=input.len() {
            let mut decoder = Decoder::new();
            let mut out = decode_chunked(&mut decoder, &input[..split], split.max(1));
            out.extend(decode_chunked(&mut decoder, &input[split..], input.len()));
            assert_eq!(out, whole, "split at {split}");
        }
        whole
    }

    fn values(results: Vec<Result<Value>>) -> Vec<Value> {
        results.into_iter().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn messages_in_any_chunking() {
        let input = b"{\"return\": {}, \"id\": 1}\r\n{\"event\": \"STOP\", \"timestamp\": \
            {\"seconds\": 1, \"microseconds\": 2}}\r\n{\"return\": [1, [2, {\"a\": []}]]}\r\n";
        let got = values(assert_chunking_invariant(input));
        assert_eq!(
            got,
            vec![
                json!({"return": {}, "id": 1}),
                json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}),
                json!({"return": [1, [2, {"a": []}]]}),
            ]
        );
    }

    #[test]
    fn framing_follows_json_structure_not_lines() {
        // pretty=on output, no CRLF at all, strings holding brackets, quotes and escapes.
        let input = b"{\n    \"return\": {\n        \"a\": \"}]\\\"{[\\\\\"\n    }\n}\n\
            {\"b\":\"\\u0041\\n\"}{\"c\":[\"]\"]}[]  {}";
        let got = values(assert_chunking_invariant(input));
        assert_eq!(
            got,
            vec![
                json!({"return": {"a": "}]\"{[\\"}}),
                json!({"b": "A\n"}),
                json!({"c": ["]"]}),
                json!([]),
                json!({}),
            ]
        );
    }

    #[test]
    fn top_level_scalars_and_strings() {
        let input = b"123 \"a\\\"}b\" true\nnull -1.5e3 {}";
        let got = values(assert_chunking_invariant(input));
        assert_eq!(
            got,
            vec![
                json!(123),
                json!("a\"}b"),
                json!(true),
                json!(null),
                json!(-1500.0),
                json!({})
            ]
        );
        // A bare token at the very end is incomplete until a delimiter follows.
        let mut decoder = Decoder::new();
        decoder.feed(b"42");
        assert_eq!(decoder.next_value().unwrap(), None);
        assert!(decoder.is_mid_message());
        decoder.feed(b"\n");
        assert_eq!(decoder.next_value().unwrap(), Some(json!(42)));
    }

    #[test]
    fn sentinels_between_messages_are_skipped() {
        let input = b"\xff\xff{\"return\": 1}\xff\r\n\xff{\"return\": 2}";
        let got = values(assert_chunking_invariant(input));
        assert_eq!(got, vec![json!({"return": 1}), json!({"return": 2})]);
    }

    #[test]
    fn sentinel_inside_a_message_cuts_it() {
        // A stale partial message, then the agent's sentinel and its reply.
        let input = b"{\"return\": {\"a\": \"xy\xff{\"return\": 7}";
        let got = assert_chunking_invariant(input);
        assert_eq!(got.len(), 2);
        let Err(Error::Utf8 { offset, excerpt }) = &got[0] else {
            panic!("{:?}", got[0])
        };
        assert_eq!(*offset, 20);
        assert!(excerpt.ends_with("xy\\xff"), "{excerpt}");
        assert_eq!(got[1], Ok(json!({"return": 7})));
        // Also right after a backslash, and outside strings.
        for input in [&b"{\"a\": \"\\\xff{}"[..], b"{\"a\": \xff{}"] {
            let got = assert_chunking_invariant(input);
            assert!(matches!(got[0], Err(Error::Utf8 { .. })), "{got:?}");
            assert_eq!(got[1], Ok(json!({})));
        }
    }

    #[test]
    fn invalid_json_names_offset_and_excerpt_then_resyncs() {
        let input = b"{\"return\": {}}\r\n{\"return\": tru}\r\n{\"return\": 2}\r\n";
        let got = assert_chunking_invariant(input);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok(json!({"return": {}})));
        let Err(Error::Json {
            offset,
            excerpt,
            message,
        }) = &got[1]
        else {
            panic!("{:?}", got[1])
        };
        // The error is found at the `}` after `tru` (serde_json reports where it stopped).
        assert_eq!(input[*offset as usize], b'}', "offset {offset}");
        assert_eq!(excerpt, "{\\\"return\\\": tru}");
        assert!(message.contains("expected"), "{message}");
        assert!(!message.contains("line"), "{message}");
        assert_eq!(got[2], Ok(json!({"return": 2})));

        // On a later line of a multi-line message.
        let input = b"{\"a\": 1}\n{\n  \"b\": 1,\n  \"c\": ]\n}\n";
        let got = assert_chunking_invariant(input);
        let Err(Error::Json { offset, .. }) = &got[1] else {
            panic!("{:?}", got[1])
        };
        assert_eq!(input[*offset as usize], b']', "offset {offset}");
    }

    #[test]
    fn stray_punctuation_and_garbage() {
        let input = b"} ] , : hello {\"ok\": 1}";
        let got = assert_chunking_invariant(input);
        assert_eq!(got.len(), 6);
        for (i, at) in [0u64, 2, 4, 6, 8].into_iter().enumerate() {
            let Err(Error::Json { offset, .. }) = &got[i] else {
                panic!("{:?}", got[i])
            };
            assert_eq!(*offset, at, "{:?}", got[i]);
        }
        assert_eq!(got[5], Ok(json!({"ok": 1})));
    }

    #[test]
    fn invalid_utf8_names_offset() {
        let input = b"{\"return\": \"ab\xc3\x28\"}\n{\"return\": 1}";
        let got = assert_chunking_invariant(input);
        let Err(Error::Utf8 { offset, excerpt }) = &got[0] else {
            panic!("{:?}", got[0])
        };
        assert_eq!(*offset, 14);
        assert!(excerpt.contains("\\xc3("), "{excerpt}");
        assert_eq!(got[1], Ok(json!({"return": 1})));
        // Valid multi-byte UTF-8 is fine.
        let got = values(assert_chunking_invariant("{\"é\": \"ü€𝄞\"}".as_bytes()));
        assert_eq!(got, vec![json!({"é": "ü€𝄞"})]);
    }

    #[test]
    fn offsets_count_from_the_start_of_the_stream() {
        let mut decoder = Decoder::new();
        let filler = b"{\"return\": {}}\r\n".repeat(1000);
        decoder.feed(&filler);
        while decoder.next_value().unwrap().is_some() {}
        decoder.feed(b"{\"x\": @}");
        let err = decoder.next_value().unwrap_err();
        let Error::Json { offset, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(offset, filler.len() as u64 + 6);
        assert_eq!(decoder.position(), filler.len() as u64 + 8);
    }

    fn too_large(limit: usize, size: u64, kind: SkippedKind, id: SkippedId) -> Error {
        Error::MessageTooLarge {
            limit,
            size,
            skipped: Skipped { kind, id },
        }
    }

    /// Like `assert_chunking_invariant`, with a size bound.
    fn assert_chunking_invariant_with(limit: usize, input: &[u8]) -> Vec<Result<Value>> {
        let whole = decode_chunked(
            &mut Decoder::with_max_message_size(limit),
            input,
            input.len(),
        );
        for chunk in [1, 2, 3, 7, 64] {
            let mut decoder = Decoder::with_max_message_size(limit);
            assert_eq!(
                decode_chunked(&mut decoder, input, chunk),
                whole,
                "chunk {chunk}"
            );
        }
        for split in 0..=input.len() {
            let mut decoder = Decoder::with_max_message_size(limit);
            let mut out = decode_chunked(&mut decoder, &input[..split], split.max(1));
            out.extend(decode_chunked(&mut decoder, &input[split..], input.len()));
            assert_eq!(out, whole, "split at {split}");
        }
        whole
    }

    #[test]
    fn size_bound() {
        let message = br#"{"return": "0123456789"}"#; // 24 bytes
        assert_eq!(message.len(), 24);
        let mut input = Vec::new();
        input.extend_from_slice(message);
        input.extend_from_slice(b"\r\n{\"return\": \"0123456789a\"}\r\n");
        input.extend_from_slice(message);

        let got = assert_chunking_invariant_with(24, &input);
        assert_eq!(
            got,
            vec![
                Ok(json!({"return": "0123456789"})),
                Err(too_large(24, 25, SkippedKind::Return, SkippedId::Absent)),
                Ok(json!({"return": "0123456789"})),
            ]
        );

        // A huge message is skipped without being buffered, and reported once, at its end,
        // with its full size.
        let mut decoder = Decoder::with_max_message_size(1000);
        let head = b"{\"return\": [";
        let piece = b"\"}]{[\", 1, {\"a\": [2]}, ";
        let tail = b"3], \"id\": 77}";
        decoder.feed(head);
        let rounds = if cfg!(miri) { 500 } else { 10_000 };
        for _ in 0..rounds {
            decoder.feed(piece);
            assert_eq!(decoder.next_value(), Ok(None));
            assert!(decoder.buffered() < 2000, "{}", decoder.buffered());
        }
        assert!(decoder.is_mid_message());
        decoder.feed(tail);
        decoder.feed(b"\n{\"return\": 4}");
        let size = (head.len() + rounds * piece.len() + tail.len()) as u64;
        assert_eq!(
            decoder.next_value(),
            Err(too_large(
                1000,
                size,
                SkippedKind::Return,
                SkippedId::Value(json!(77))
            ))
        );
        assert_eq!(decoder.next_value().unwrap(), Some(json!({"return": 4})));
        assert_eq!(decoder.next_value().unwrap(), None);
        assert!(!decoder.is_mid_message());

        // Bare tokens and top-level strings are bounded too.
        for (input, size) in [(&b"123456789 1 "[..], 9), (b"\"123456789\" 1 ", 11)] {
            let got = assert_chunking_invariant_with(4, input);
            assert_eq!(
                got,
                vec![
                    Err(too_large(4, size, SkippedKind::Unknown, SkippedId::Absent)),
                    Ok(json!(1))
                ],
                "{input:?}"
            );
        }
        let mut decoder = Decoder::with_max_message_size(4);
        assert_eq!(
            decode_chunked(&mut decoder, b"1234 \"12\" [12]", 1),
            vec![Ok(json!(1234)), Ok(json!("12")), Ok(json!([12]))]
        );
    }

    #[test]
    fn a_skipped_message_is_classified_by_its_top_level_members() {
        let big = "x".repeat(100);
        let cases: Vec<(String, SkippedKind, SkippedId)> = vec![
            (
                format!(r#"{{"return": "{big}", "id": 12}}"#),
                SkippedKind::Return,
                SkippedId::Value(json!(12)),
            ),
            // Any member order; any id that is a short scalar; whitespace anywhere.
            (
                format!("{{ \"id\" :\n\"abc\\\"d\" , \"return\" : [\"{big}\", {{\"id\": 3}}] }}"),
                SkippedKind::Return,
                SkippedId::Value(json!("abc\"d")),
            ),
            (
                format!(
                    r#"{{"id": -1.5e3, "error": {{"class": "CommandNotFound", "desc": "{big}"}}}}"#
                ),
                SkippedKind::Error,
                SkippedId::Value(json!(-1500.0)),
            ),
            (
                format!(r#"{{"id":null,"error":{{"desc":"{big}"}}}}"#),
                SkippedKind::Error,
                SkippedId::Value(Value::Null),
            ),
            (
                format!(r#"{{"event": "BIG_ONE", "data": {{"s": "{big}"}}, "timestamp": {{}}}}"#),
                SkippedKind::Event(Some("BIG_ONE".into())),
                SkippedId::Absent,
            ),
            // Names spelled with escapes are still names.
            (
                format!(r#"{{"\u0065vent": "A\u0042", "data": "{big}"}}"#),
                SkippedKind::Event(Some("AB".into())),
                SkippedId::Absent,
            ),
            (
                format!(r#"{{"event": 7, "data": "{big}"}}"#),
                SkippedKind::Event(None),
                SkippedId::Absent,
            ),
            (
                format!(r#"{{"QMP": {{"version": "{big}"}}}}"#),
                SkippedKind::Greeting,
                SkippedId::Absent,
            ),
            // As Message::from_value: return before event before error.
            (
                format!(r#"{{"error": {{}}, "event": "E", "return": "{big}"}}"#),
                SkippedKind::Return,
                SkippedId::Absent,
            ),
            // Only the top level counts.
            (
                format!(r#"{{"data": {{"return": 1, "id": 2, "event": "X"}}, "x": "{big}"}}"#),
                SkippedKind::Unknown,
                SkippedId::Absent,
            ),
            (
                format!(r#"["return", "{big}"]"#),
                SkippedKind::Unknown,
                SkippedId::Absent,
            ),
            // An id that is not kept: a container, too long.
            (
                format!(r#"{{"return": 1, "id": {{"a": "{big}"}}}}"#),
                SkippedKind::Return,
                SkippedId::Unreadable,
            ),
            (
                format!(r#"{{"return": 1, "id": "{}"}}"#, "y".repeat(300)),
                SkippedKind::Return,
                SkippedId::Unreadable,
            ),
            (
                format!(r#"{{"return": "{big}", "id": 1, "id": 2}}"#),
                SkippedKind::Return,
                SkippedId::Value(json!(2)),
            ),
        ];
        for (message, kind, id) in cases {
            let mut input = message.clone().into_bytes();
            input.extend_from_slice(b"\r\n{\"return\": 1}\r\n");
            let got = assert_chunking_invariant_with(64, &input);
            assert_eq!(
                got,
                vec![
                    Err(too_large(64, message.len() as u64, kind, id)),
                    Ok(json!({"return": 1}))
                ],
                "{message}"
            );
        }
    }

    #[test]
    fn a_sentinel_cuts_a_skipped_message() {
        let mut input = b"{\"return\": \"".to_vec();
        input.extend(b"0123456789".repeat(5));
        input.extend_from_slice(b"\xff{\"return\": 7}");
        let sentinel = input.iter().position(|&b| b == 0xFF).unwrap() as u64;
        let got = assert_chunking_invariant_with(16, &input);
        assert_eq!(
            got,
            vec![
                Err(Error::Utf8 {
                    offset: sentinel,
                    excerpt: "01234567890123456789\\xff".into()
                }),
                Ok(json!({"return": 7}))
            ]
        );
        // Also after a backslash, and outside strings, and with only a few bytes before it.
        for input in [
            &b"{\"a\": \"0123456789\\\xff{}"[..],
            b"{\"a\": [1, 2, 3, 4, 5, 6] \xff{}",
            b"\"0123456789\xff{}",
        ] {
            let got = assert_chunking_invariant_with(8, input);
            assert!(matches!(got[0], Err(Error::Utf8 { .. })), "{got:?}");
            assert_eq!(got[1], Ok(json!({})));
        }
        // A sentinel ends a bare token, as it does under the bound.
        let got = assert_chunking_invariant_with(4, b"123456\xff{}");
        assert_eq!(
            got,
            vec![
                Err(too_large(4, 6, SkippedKind::Unknown, SkippedId::Absent)),
                Ok(json!({}))
            ]
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut input = vec![b'['; 100_000];
        input.extend(vec![b']'; 100_000]);
        input.extend_from_slice(b"{\"ok\": 1}");
        let got = decode_all(&input);
        assert!(
            matches!(&got[0], Err(Error::Json { message, .. }) if message.contains("recursion")),
            "{:?}",
            got[0]
        );
        assert_eq!(got[1], Ok(json!({"ok": 1})));
    }

    #[test]
    fn mid_message_and_buffered() {
        let mut decoder = Decoder::new();
        assert!(!decoder.is_mid_message());
        decoder.feed(b" \r\n\xff");
        assert!(!decoder.is_mid_message());
        assert_eq!(decoder.next_value().unwrap(), None);
        assert_eq!(decoder.buffered(), 0);
        decoder.feed(b"{\"return\"");
        assert!(decoder.is_mid_message());
        assert_eq!(decoder.next_value().unwrap(), None);
        assert!(decoder.is_mid_message());
        assert_eq!(decoder.buffered(), 9);
        decoder.feed(b": 1}\r\n");
        assert_eq!(decoder.next_value().unwrap(), Some(json!({"return": 1})));
        assert!(!decoder.is_mid_message());
        assert_eq!(decoder.buffered(), 2);
    }

    #[test]
    fn discard_until_sentinel() {
        let mut decoder = Decoder::new();
        decoder.feed(b"{\"return\": \"stale\"}\r\n{\"retu");
        decoder.discard_until_sentinel();
        decoder.feed(b"rn\": 5, \"id\": 3}\r\n{\"return\": 6}");
        assert_eq!(decoder.next_value().unwrap(), None);
        assert!(!decoder.is_mid_message());
        decoder.feed(b"\xff{\"return\": 1234, \"id\": 9}\r\n");
        assert_eq!(
            decoder.next_value().unwrap(),
            Some(json!({"return": 1234, "id": 9}))
        );
    }

    #[test]
    fn next_message_classifies_without_poisoning_the_stream() {
        let mut decoder = Decoder::new();
        decoder.feed(b"{\"hello\": 1}\r\n[1]\r\n{\"return\": {}, \"id\": 1}\r\n");
        assert!(matches!(
            decoder.next_message(),
            Err(Error::Protocol(m)) if m.contains("unknown shape")
        ));
        assert!(matches!(decoder.next_message(), Err(Error::Protocol(_))));
        assert_eq!(
            decoder.next_message().unwrap(),
            Some(Message::Return {
                id: Some(json!(1)),
                value: json!({})
            })
        );
        assert_eq!(decoder.next_message().unwrap(), None);
    }

    #[test]
    fn string_scanner_finds_specials_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0xFF] {
                    let mut bytes = vec![b'a'; len];
                    // Bytes close to the specials must not be mistaken for them.
                    for (i, b) in bytes.iter_mut().enumerate() {
                        *b = [b'!', b'#', b'[', b']', 0xFE, 0x80, b'a'][i % 7];
                    }
                    bytes[at] = special;
                    assert_eq!(find_string_special(&bytes), at, "len {len} at {at}");
                }
            }
            let mut bytes = vec![0x7f; len];
            bytes.iter_mut().step_by(3).for_each(|b| *b = 0xFE);
            assert_eq!(find_string_special(&bytes), len);
        }
    }
}
