//! Skipping a frame that outgrew the bound, noting what it was on the way.

use serde_json::Value;

use super::scan::{find_string_special, is_token_delimiter};
use super::{EXCERPT_LEN, SENTINEL};
use crate::error::{excerpt, Skipped, SkippedId, SkippedKind};

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
pub(super) enum SkipStep {
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
pub(super) struct Skip {
    /// Stream offset of the frame's first byte.
    pub(super) begin: u64,
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
    /// A skipper for the frame that starts at stream offset `begin`.
    pub(super) fn new(begin: u64) -> Skip {
        Skip {
            begin,
            ..Skip::default()
        }
    }

    /// Skips through `bytes`, the frame's next bytes.
    pub(super) fn advance(&mut self, bytes: &[u8]) -> SkipStep {
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
    pub(super) fn finish(self) -> Skipped {
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
    pub(super) fn tail_excerpt(&self) -> String {
        let mut bytes = self.tail.clone();
        bytes.push(SENTINEL);
        excerpt(&bytes, bytes.len() - 1, EXCERPT_LEN)
    }
}
