//! The crate's one error type.

use std::fmt;

use serde_json::Value;

use crate::wire::QmpError;

/// Everything that can go wrong in this crate.
///
/// The variants are meant to be matched on: a driver tells a broken stream (`Json`, `Utf8`,
/// `Truncated`, `Protocol`) from a message that was only too large (`MessageTooLarge`), from a
/// misuse of the session (`NotReady`, `OobNotEnabled`, `Closed`, `Arguments`,
/// `InvalidCommandName`) and from a reply that did not have the expected shape (`Reply`).
/// Errors reported by QEMU for a command are not an `Error` of this crate: they are
/// [`ReplyError`] values handed out by [`Session::take_reply`](crate::Session::take_reply).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The stream holds bytes that are not valid JSON.
    Json {
        /// Byte offset of the error, counted from the first byte ever fed to the decoder.
        offset: u64,
        /// Up to about 40 bytes of input around the error, non-printable bytes escaped.
        excerpt: String,
        /// What the JSON parser found wrong.
        message: String,
    },
    /// A message holds bytes that are not valid UTF-8.
    Utf8 {
        /// Byte offset of the first invalid byte, counted from the first byte ever fed.
        offset: u64,
        /// Up to about 40 bytes of input around the error, non-printable bytes escaped.
        excerpt: String,
    },
    /// One message was larger than the configured bound. It was skipped as it arrived, without
    /// being buffered, and is reported once its end has been skipped too, with its full size
    /// and what could be told about it on the way.
    MessageTooLarge {
        /// The bound in bytes.
        limit: usize,
        /// The message's size in bytes, from its first byte to its last (whitespace around it
        /// not counted).
        size: u64,
        /// What kind of message it was, and its `id`, as far as they could be told.
        skipped: Skipped,
    },
    /// The stream ended in the middle of a message.
    Truncated {
        /// How many bytes of the unfinished message were buffered.
        buffered: usize,
    },
    /// The peer broke the protocol: a message of unknown shape, a greeting at the wrong time,
    /// an error reply without an id, a reply before the greeting.
    Protocol(String),
    /// A command was issued before capability negotiation finished.
    NotReady,
    /// An out-of-band command was issued but out-of-band execution was not negotiated.
    OobNotEnabled,
    /// The session has ended (end of stream seen, a fatal error, or closed by the caller).
    Closed,
    /// A reply did not deserialize to the return type of the typed command.
    Reply {
        /// The QMP name of the command.
        command: String,
        /// What did not fit.
        message: String,
    },
    /// The arguments of a command could not be sent: they did not serialize, or they are not
    /// a JSON object (QMP requires `arguments` to be an object).
    Arguments {
        /// The QMP name of the command.
        command: String,
        /// What was wrong with them.
        message: String,
    },
    /// QEMU refused the `qmp_capabilities` negotiation.
    Negotiation(QmpError),
    /// A command name that QEMU cannot have: it was refused before anything was sent. QMP
    /// command names follow the QAPI naming rules: an ASCII letter, then ASCII letters,
    /// digits, `-` and `_`, optionally after a downstream prefix `__RFQDN_` (as in
    /// `__com.redhat_drive-mirror`), at most [`MAX_COMMAND_NAME_LEN`] bytes in all.
    InvalidCommandName {
        /// The name, or its first 40 bytes followed by `...` when it is longer; bytes that are
        /// not printable ASCII escaped.
        name: String,
        /// The name's length in bytes.
        len: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The longest command name sent: 1024 bytes (QEMU's longest are under 40).
pub const MAX_COMMAND_NAME_LEN: usize = 1024;

/// What the decoder could tell about a message it skipped for being larger than the bound,
/// from the members it saw at the top level of the message while skipping it (the skipper keeps
/// at most a few hundred bytes of them: the names of the members, and the values of `id` and
/// `event` when they are short).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Skipped {
    /// What kind of message it was.
    pub kind: SkippedKind,
    /// Its `id` member.
    pub id: SkippedId,
}

/// The kind of a message skipped for its size, classified as
/// [`Message::from_value`](crate::Message::from_value) would have: by its `return`, `event`,
/// `error` or `QMP` member, in that order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SkippedKind {
    /// A successful reply (a `return` member).
    Return,
    /// An event, with its name when it was a string of at most 256 bytes.
    Event(Option<String>),
    /// An error reply (an `error` member).
    Error,
    /// A greeting (a `QMP` member).
    Greeting,
    /// Not a JSON object with any of those members (an array, a string, a bare token, or an
    /// object of unknown shape).
    #[default]
    Unknown,
}

/// The `id` member of a message skipped for its size.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SkippedId {
    /// The message had no `id` member (or was not an object).
    #[default]
    Absent,
    /// The `id` member's value.
    Value(Value),
    /// The message had an `id` member, but its value was not kept: an object or array, more
    /// than 256 bytes of text, or not valid JSON.
    Unreadable,
}

impl fmt::Display for SkippedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkippedKind::Return => f.write_str("a reply"),
            SkippedKind::Event(Some(name)) => write!(f, "event {name}"),
            SkippedKind::Event(None) => f.write_str("an event"),
            SkippedKind::Error => f.write_str("an error reply"),
            SkippedKind::Greeting => f.write_str("a greeting"),
            SkippedKind::Unknown => f.write_str("a message of unknown kind"),
        }
    }
}

/// Why a command got no value: QEMU reported an error, its reply could not be read whole, or
/// the session ended before it came. What [`Session::take_reply`](crate::Session::take_reply)
/// hands out in place of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// QEMU answered with an error.
    Qmp(QmpError),
    /// QEMU's reply (a value or an error) was larger than the session's
    /// [`max_message_size`](crate::SessionOptions::max_message_size): it was skipped without
    /// being buffered, and the session went on with the next message.
    TooLarge {
        /// The reply's size in bytes.
        size: u64,
        /// The bound in bytes.
        limit: usize,
    },
    /// The session ended (end of stream, a fatal error, or
    /// [`Session::close`](crate::Session::close)) while the command waited for its reply. A
    /// QMP `quit` sent before the peer closed the stream is the exception: the close is its
    /// answer (see [`Session::receive_eof`](crate::Session::receive_eof)).
    Closed,
}

impl ReplyError {
    /// The error QEMU reported, if that is what this is.
    pub fn qmp(&self) -> Option<&QmpError> {
        match self {
            ReplyError::Qmp(e) => Some(e),
            ReplyError::TooLarge { .. } | ReplyError::Closed => None,
        }
    }
}

impl From<QmpError> for ReplyError {
    fn from(e: QmpError) -> ReplyError {
        ReplyError::Qmp(e)
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Qmp(e) => e.fmt(f),
            ReplyError::TooLarge { size, limit } => write!(
                f,
                "the reply of {size} bytes exceeded the QMP message size limit of {limit} bytes"
            ),
            ReplyError::Closed => f.write_str("the QMP session ended before the reply arrived"),
        }
    }
}

impl std::error::Error for ReplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplyError::Qmp(e) => Some(e),
            ReplyError::TooLarge { .. } | ReplyError::Closed => None,
        }
    }
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Json {
                offset,
                excerpt,
                message,
            } => write!(
                f,
                "invalid JSON at stream offset {offset}: {message} (near \"{excerpt}\")"
            ),
            Error::Utf8 { offset, excerpt } => write!(
                f,
                "invalid UTF-8 at stream offset {offset} (near \"{excerpt}\")"
            ),
            Error::MessageTooLarge {
                limit,
                size,
                skipped,
            } => write!(
                f,
                "a QMP message ({}) of {size} bytes exceeded the size limit of {limit} bytes",
                skipped.kind
            ),
            Error::Truncated { buffered } => write!(
                f,
                "the stream ended in the middle of a message ({buffered} bytes buffered)"
            ),
            Error::Protocol(what) => write!(f, "QMP protocol error: {what}"),
            Error::NotReady => write!(
                f,
                "QMP session not ready: capability negotiation has not finished"
            ),
            Error::OobNotEnabled => write!(
                f,
                "out-of-band execution was not negotiated on this QMP session"
            ),
            Error::Closed => write!(f, "the QMP session is closed"),
            Error::Reply { command, message } => {
                write!(f, "unexpected reply to {command}: {message}")
            }
            Error::Arguments { command, message } => {
                write!(f, "invalid arguments for {command}: {message}")
            }
            Error::Negotiation(error) => {
                write!(f, "QMP capability negotiation failed: {error}")
            }
            Error::InvalidCommandName { name, len, reason } => {
                write!(
                    f,
                    "invalid QMP command name \"{name}\" ({len} bytes): {reason}"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Negotiation(error) => Some(error),
            _ => None,
        }
    }
}

/// Renders at most `max` bytes of `bytes` around `at` as printable text: printable ASCII as
/// is, everything else escaped (`\n`, `\xff`, ...).
pub(crate) fn excerpt(bytes: &[u8], at: usize, max: usize) -> String {
    let at = at.min(bytes.len());
    let before = max / 2;
    let begin = at.saturating_sub(before);
    let end = (begin + max).min(bytes.len());
    bytes[begin..end].escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_escapes_and_bounds() {
        let bytes = b"{\"a\":\n\xff\"b\"}";
        assert_eq!(excerpt(bytes, 6, 40), "{\\\"a\\\":\\n\\xff\\\"b\\\"}");
        let long = vec![b'x'; 1000];
        assert_eq!(excerpt(&long, 500, 40).len(), 40);
        assert_eq!(excerpt(&long, 5000, 40).len(), 20);
        assert_eq!(excerpt(b"", 0, 40), "");
    }

    #[test]
    fn display_says_what_was_wrong() {
        let e = Error::Json {
            offset: 17,
            excerpt: "{\\\"a\\\":}".into(),
            message: "expected value".into(),
        };
        assert_eq!(
            e.to_string(),
            "invalid JSON at stream offset 17: expected value (near \"{\\\"a\\\":}\")"
        );
        assert_eq!(
            Error::MessageTooLarge {
                limit: 10,
                size: 12,
                skipped: Skipped::default()
            }
            .to_string(),
            "a QMP message (a message of unknown kind) of 12 bytes exceeded the size limit of 10 \
             bytes"
        );
        assert_eq!(
            ReplyError::TooLarge {
                size: 5000,
                limit: 4096
            }
            .to_string(),
            "the reply of 5000 bytes exceeded the QMP message size limit of 4096 bytes"
        );
        assert!(Error::Truncated { buffered: 3 }
            .to_string()
            .contains("3 bytes buffered"));
    }
}
