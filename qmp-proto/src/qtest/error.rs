//! The qtest session's error type.

use std::fmt;

/// Everything that can go wrong on a [`QtestSession`](super::QtestSession).
///
/// Errors about one command name the command line that was sent (`command`, without its
/// newline) and, where there is one, QEMU's answer (`reply`, the whole line as received,
/// non-UTF-8 bytes escaped). The variants tell a command QEMU refused (`Failed`) from an
/// answer the session could not understand (`Reply`), a command the session refused to send
/// (`InvalidCommand`), the end of the session (`Closed`), and a broken stream (`LineTooLong`,
/// `Truncated`, `Protocol`), which closes the session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QtestError {
    /// QEMU answered `FAIL ...` (e.g. an unknown command or device) or `ERR ...` (e.g. a
    /// `write` without data).
    Failed {
        /// The command line sent.
        command: String,
        /// QEMU's answer, e.g. `FAIL Unknown command 'foo'`.
        reply: String,
    },
    /// QEMU's answer is not `OK`, `FAIL` or `ERR`, or it is `OK` with values that do not have
    /// the expected form (a number too large for the type, a blob of the wrong size, ...).
    Reply {
        /// The command line sent.
        command: String,
        /// QEMU's answer.
        reply: String,
        /// What did not fit.
        message: String,
    },
    /// The session refused to send a command that QEMU would misread or that would crash it
    /// (QEMU aborts on a missing or malformed argument), or whose reply could not fit the
    /// line bound. Nothing was sent.
    InvalidCommand {
        /// The command, as far as it could be rendered.
        command: String,
        /// What is wrong with it.
        message: String,
    },
    /// The session ended (end of stream, a broken stream, or
    /// [`close`](super::QtestSession::close)) before the reply to `command` arrived, or a
    /// command was issued (or bytes received) after it ended (`command` is then the command
    /// refused, or `None` for bytes received).
    Closed {
        /// The command concerned, if any.
        command: Option<String>,
    },
    /// A line from QEMU grew beyond [`QtestOptions::max_line`](super::QtestOptions) bytes.
    LineTooLong {
        /// The bound in bytes.
        limit: usize,
    },
    /// The stream ended in the middle of a line.
    Truncated {
        /// How many bytes of the unfinished line were buffered.
        buffered: usize,
    },
    /// The peer broke the protocol: a reply when no command waits for one, or a malformed
    /// `IRQ` notification.
    Protocol {
        /// The offending line.
        line: String,
        /// What was wrong with it.
        message: String,
    },
}

impl fmt::Display for QtestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QtestError::Failed { command, reply } => {
                write!(f, "qtest command \"{command}\" failed: {reply}")
            }
            QtestError::Reply {
                command,
                reply,
                message,
            } => write!(
                f,
                "unexpected reply \"{reply}\" to qtest command \"{command}\": {message}"
            ),
            QtestError::InvalidCommand { command, message } => {
                write!(f, "invalid qtest command \"{command}\": {message}")
            }
            QtestError::Closed {
                command: Some(command),
            } => write!(f, "the qtest session is closed (no reply to \"{command}\")"),
            QtestError::Closed { command: None } => write!(f, "the qtest session is closed"),
            QtestError::LineTooLong { limit } => {
                write!(f, "a qtest line exceeded the size limit of {limit} bytes")
            }
            QtestError::Truncated { buffered } => write!(
                f,
                "the qtest stream ended in the middle of a line ({buffered} bytes buffered)"
            ),
            QtestError::Protocol { line, message } => {
                write!(f, "qtest protocol error: {message} (line \"{line}\")")
            }
        }
    }
}

impl std::error::Error for QtestError {}
