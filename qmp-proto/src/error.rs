//! The crate's one error type.

use std::fmt;

use crate::wire::QmpError;

/// Everything that can go wrong in this crate.
///
/// The variants are meant to be matched on: a driver tells a broken stream (`Json`, `Utf8`,
/// `MessageTooLarge`, `Truncated`, `Protocol`) from a misuse of the session (`NotReady`,
/// `OobNotEnabled`, `Closed`, `Arguments`) and from a reply that did not have the expected
/// shape (`Reply`). Errors reported by QEMU for a command are not an `Error` of this crate:
/// they are [`QmpError`] values handed out by [`Session::take_reply`](crate::Session::take_reply).
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
    /// One message grew beyond the configured bound before it was complete.
    MessageTooLarge {
        /// The bound in bytes.
        limit: usize,
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
            Error::MessageTooLarge { limit } => {
                write!(f, "a QMP message exceeded the size limit of {limit} bytes")
            }
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
            Error::MessageTooLarge { limit: 10 }.to_string(),
            "a QMP message exceeded the size limit of 10 bytes"
        );
        assert!(Error::Truncated { buffered: 3 }
            .to_string()
            .contains("3 bytes buffered"));
    }
}
