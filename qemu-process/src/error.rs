//! The crate's one error type.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use qemu_cmdline::shell_quote as display_argv;

/// Everything that can go wrong launching, talking to, or stopping a QEMU.
///
/// Variants are meant to be matched on: a timeout is distinct from a closed connection, a QMP
/// error reply (QEMU said no) from a protocol error (QEMU said something malformed), and a
/// launch failure carries what is needed to understand it (exit status, argv, QEMU's output).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// QEMU exited before QMP negotiation finished.
    Launch {
        /// How it exited.
        status: ExitStatus,
        /// The full command line (wrapper first, if any).
        argv: Vec<OsString>,
        /// Everything QEMU wrote to stdout and stderr.
        log: String,
    },
    /// The program to run (QEMU, or the wrapper) does not exist or is not executable.
    BinaryNotFound(PathBuf),
    /// A deadline passed.
    Timeout {
        /// What was being waited for.
        what: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The QMP connection is closed (and no exit status is known).
    Disconnected,
    /// QEMU has exited; the connection is gone with it.
    Exited(ExitStatus),
    /// QEMU answered a command with an error.
    Qmp(qmp_proto::QmpError),
    /// QEMU's reply to a command was larger than the machine's bound on one QMP message
    /// ([`MachineConfig::max_message_size`](crate::MachineConfig::max_message_size), 10 MiB by
    /// default). It was skipped without being buffered; the connection is fine and the next
    /// command works.
    ReplyTooLarge {
        /// The command.
        command: String,
        /// The reply's size in bytes.
        size: u64,
        /// The bound in bytes.
        limit: usize,
    },
    /// QEMU sent something that is not valid QMP (the connection is no longer usable), or a
    /// typed reply did not have the expected shape.
    Protocol(qmp_proto::Error),
    /// A system call failed.
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// QEMU did not exit in time after `quit` (or SIGTERM) and was killed.
    NotGraceful {
        /// The status after SIGKILL.
        status: ExitStatus,
    },
    /// Events arrived while the kept-event queue was full and were dropped; the awaited event may
    /// have been among them.
    EventQueueFull {
        /// The configured bound.
        limit: usize,
        /// How many events were dropped in total.
        dropped: u64,
    },
    /// An argument was not acceptable.
    InvalidArgument(String),
    /// The operation does not apply to this machine (no console, attached machine, TCP socket).
    Unsupported(String),
    /// One machine of a [`MachineSet`](crate::MachineSet) failed.
    InSet {
        /// The machine's index in the set.
        index: usize,
        /// What went wrong.
        source: Box<Error>,
    },
    /// A VM description or a command line is invalid (see [`qemu_cmdline::Error`]).
    Spec(qemu_cmdline::Error),
    /// `qemu-img` (or a decompressor) ran and failed.
    Image {
        /// The command line.
        argv: Vec<OsString>,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A program the operation needs is not installed.
    ProgramMissing {
        /// The program looked for (a name searched in `PATH`, or a path).
        program: PathBuf,
        /// The Debian/Ubuntu package that provides it.
        package: String,
        /// What it was needed for.
        purpose: String,
    },
    /// A file the operation reads does not exist.
    NotFound {
        /// What the file is (`disk "root"`, `flash source`, ...).
        what: String,
        /// Its path.
        path: PathBuf,
    },
    /// Growing an image would need more than the free space of its file system.
    NoSpace {
        /// The image.
        path: PathBuf,
        /// Bytes the growth may need.
        needed: u64,
        /// Bytes free for this user on the file system.
        available: u64,
    },
    /// A resize would shrink an image (losing its end) and shrinking was not allowed.
    ShrinkRefused {
        /// The image.
        path: PathBuf,
        /// Its current virtual size.
        current: u64,
        /// The requested virtual size.
        requested: u64,
    },
    /// The operation needs the VM stopped (flashing or dumping a disk QEMU has open).
    VmRunning {
        /// What was refused.
        operation: String,
    },
    /// [`Machine::console_write`](crate::Machine::console_write) could not hand all its bytes
    /// over before its deadline (the guest does not read its console, or QEMU is paused). The
    /// first `accepted` bytes were taken and will reach the guest in order; write the rest,
    /// `bytes[accepted..]`, to resume.
    ConsoleWriteTimeout {
        /// How many bytes, from the start, were accepted.
        accepted: usize,
        /// How many bytes the call was given.
        total: usize,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The guest agent answered a command with an error.
    GuestAgent {
        /// The command.
        command: String,
        /// The agent's error class and description.
        error: qmp_proto::QmpError,
    },
    /// The guest agent went away during a call: its port closed in the guest (the agent
    /// stopped, or the guest is rebooting or shutting down), or its connection ended. Whether
    /// the call took effect is unknown; the next call synchronizes afresh.
    GuestAgentGone {
        /// What happened.
        what: String,
    },
    /// A qtest command failed: QEMU answered `FAIL` or `ERR`
    /// ([`QtestError::Failed`](qmp_proto::QtestError::Failed), naming the line sent and
    /// QEMU's answer), its answer did not parse, the line was refused before sending because
    /// QEMU would misread it or abort on it
    /// ([`QtestError::InvalidCommand`](qmp_proto::QtestError::InvalidCommand)), or the qtest
    /// stream broke or closed.
    Qtest(qmp_proto::QtestError),
    /// `clock_step` or `clock_set` on a qtest machine that does not run the qtest accelerator,
    /// whose virtual clock they drive (Debian's QEMU 7.2 has none; see
    /// [`MachineConfig::qtest`](crate::MachineConfig::qtest)). Nothing was sent.
    NoQtestClock {
        /// The command refused.
        command: String,
        /// The accelerator QEMU runs instead.
        accel: String,
    },
}

impl Error {
    /// An [`Error::Io`] with a context line.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A closure for `map_err` producing [`Error::Io`].
    pub(crate) fn io_with(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// Whether this is a deadline that passed: [`Error::Timeout`] or
    /// [`Error::ConsoleWriteTimeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::ConsoleWriteTimeout { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Launch { status, argv, log } => {
                write!(
                    f,
                    "QEMU exited during launch ({status}); command: {}",
                    display_argv(argv)
                )?;
                let log = log.trim_end();
                if log.is_empty() {
                    write!(f, "; it printed nothing")
                } else {
                    write!(f, "; its output:\n{log}")
                }
            }
            Error::BinaryNotFound(path) => write!(
                f,
                "program not found or not executable: {} (for QEMU on Debian/Ubuntu: \
                 apt-get install -y qemu-system-x86)",
                path.display()
            ),
            Error::Timeout { what, after } => {
                write!(f, "timed out after {after:?} waiting for {what}")
            }
            Error::Disconnected => write!(f, "the QMP connection is closed"),
            Error::Exited(status) => write!(f, "QEMU has exited ({status})"),
            Error::Qmp(e) => write!(f, "QMP error reply: {e}"),
            Error::ReplyTooLarge {
                command,
                size,
                limit,
            } => write!(
                f,
                "the reply to {command} was {size} bytes, more than the QMP message size limit of \
                 {limit} bytes; it was skipped"
            ),
            Error::Protocol(e) => write!(f, "QMP protocol error: {e}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::NotGraceful { status } => write!(
                f,
                "QEMU did not shut down gracefully in time and was killed ({status})"
            ),
            Error::EventQueueFull { limit, dropped } => write!(
                f,
                "the event queue reached its limit of {limit} events; {dropped} events were \
                 dropped"
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Unsupported(what) => write!(f, "not supported: {what}"),
            Error::InSet { index, source } => write!(f, "machine #{index}: {source}"),
            Error::Spec(e) => write!(f, "invalid VM description: {e}"),
            Error::Image {
                argv,
                status,
                stderr,
            } => {
                write!(f, "{} failed ({status})", display_argv(argv))?;
                let stderr = stderr.trim_end();
                if stderr.is_empty() {
                    write!(f, " and printed nothing")
                } else {
                    write!(f, ": {stderr}")
                }
            }
            Error::ProgramMissing {
                program,
                package,
                purpose,
            } => write!(
                f,
                "{} is needed {purpose} but is not installed: apt-get install -y {package}",
                program.display()
            ),
            Error::NotFound { what, path } => {
                write!(f, "{what}: {} does not exist", path.display())
            }
            Error::NoSpace {
                path,
                needed,
                available,
            } => write!(
                f,
                "growing {} needs up to {needed} bytes but its file system has only {available} \
                 bytes free",
                path.display()
            ),
            Error::ShrinkRefused {
                path,
                current,
                requested,
            } => write!(
                f,
                "resizing {} from {current} to {requested} bytes would shrink it and lose its \
                 last {} bytes; allow shrinking to do that",
                path.display(),
                current.saturating_sub(*requested)
            ),
            Error::VmRunning { operation } => write!(
                f,
                "{operation} is refused while the VM is running: shut it down first"
            ),
            Error::ConsoleWriteTimeout {
                accepted,
                total,
                after,
            } => write!(
                f,
                "timed out after {after:?} writing to the console: {accepted} of {total} bytes were \
                 accepted (the guest is not reading its console: is the VM paused?)"
            ),
            Error::GuestAgent { command, error } => {
                write!(f, "the guest agent answered {command} with an error: {error}")
            }
            Error::GuestAgentGone { what } => write!(f, "the guest agent went away: {what}"),
            Error::Qtest(e) => write!(f, "{e}"),
            Error::NoQtestClock { command, accel } => write!(
                f,
                "qtest {command} needs the qtest accelerator, whose virtual clock it drives; this \
                 QEMU does not have it (not in `-accel help`) and runs on {accel} with -S"
            ),
        }
    }
}

impl From<qemu_cmdline::Error> for Error {
    fn from(e: qemu_cmdline::Error) -> Error {
        Error::Spec(e)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Qmp(e) => Some(e),
            Error::GuestAgent { error, .. } => Some(error),
            Error::Protocol(e) => Some(e),
            Error::InSet { source, .. } => Some(source.as_ref()),
            Error::Spec(e) => Some(e),
            Error::Qtest(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn messages_say_what_happened() {
        let e = Error::Launch {
            status: ExitStatus::from_raw(1 << 8),
            argv: vec!["qemu-system-x86_64".into(), "-bogus".into()],
            log: "qemu-system-x86_64: -bogus: invalid option\n".into(),
        };
        let s = e.to_string();
        assert!(s.contains("exit status: 1"), "{s}");
        assert!(s.contains("qemu-system-x86_64 -bogus"), "{s}");
        assert!(s.contains("invalid option"), "{s}");
        let t = Error::Timeout {
            what: "reply to query-status".into(),
            after: Duration::from_secs(2),
        };
        assert!(t.is_timeout());
        assert_eq!(
            t.to_string(),
            "timed out after 2s waiting for reply to query-status"
        );
        let n = Error::BinaryNotFound("/no/qemu".into());
        assert!(n.to_string().contains("/no/qemu"));
        let io = Error::io("creating x", io::Error::from_raw_os_error(libc::ENOENT));
        assert!(std::error::Error::source(&io).is_some());
        let big = Error::ReplyTooLarge {
            command: "query-qmp-schema".into(),
            size: 150_000,
            limit: 4096,
        };
        assert_eq!(
            big.to_string(),
            "the reply to query-qmp-schema was 150000 bytes, more than the QMP message size \
             limit of 4096 bytes; it was skipped"
        );
        let set = Error::InSet {
            index: 2,
            source: Box::new(Error::Disconnected),
        };
        assert_eq!(set.to_string(), "machine #2: the QMP connection is closed");
        let w = Error::ConsoleWriteTimeout {
            accepted: 10,
            total: 30,
            after: Duration::from_millis(500),
        };
        assert!(w.is_timeout());
        assert!(
            w.to_string().contains("10 of 30 bytes were accepted"),
            "{w}"
        );
    }
}
