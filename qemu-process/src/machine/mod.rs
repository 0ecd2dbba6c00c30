//! [`Machine`]: one QEMU process (or an attached QMP server) driven from one thread.
//!
//! The type and its accessors are here; its calls are grouped by concern in the submodules:
//! `launch` (spawn, attach), `io_loop` (the poll loop), `qmp` (commands, descriptors), `events`,
//! `console`, `lifecycle` (power, shutdown), `vm` (a VM's forwards, drives, screendumps), `guest`
//! (the guest agent's channel).
//!
//! Every blocking call runs the same loop ([`Machine::run_until`]): flush pending output, wait
//! in `mio::Poll` for the QMP socket, the console socket, the guest agent's socket or the child's
//! exit watch, feed what arrived into the `qmp_proto` sessions (QMP's keeps the events, matches
//! replies, discards those of abandoned commands), drain the console, reap the child; then check
//! the call's own condition, until it holds or the call's deadline passes.

use std::ffi::OsString;
use std::fs::File;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use qmp_proto::{Event, Greeting, Session};

use crate::config::MachineConfig;
use crate::console::ConsoleBuffer;
use crate::error::Error;
use crate::spawn::{ChildProc, TempDir};
use crate::vm::resolve::Created;

const QMP: Token = Token(0);
const CONSOLE: Token = Token(1);
const CHILD: Token = Token(2);
const QTEST: Token = Token(3);
const GUEST: Token = Token(4);

/// Bytes read from a socket per recv call.
const READ_CHUNK: usize = 64 * 1024;
/// How long to wait for the kernel to finish a process after SIGKILL before giving up on reaping.
const KILL_REAP_LIMIT: Duration = Duration::from_secs(10);

/// A point in time after which a wait gives up, and the duration it was computed from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Option<Instant>,
    total: Duration,
}

impl Deadline {
    /// `timeout` from now (a timeout too large to represent never expires).
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now().checked_add(timeout),
            total: timeout,
        }
    }

    /// Time left: `None` for never, `Some(ZERO)` once passed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The timeout this deadline was made from.
    pub(crate) fn total(&self) -> Duration {
        self.total
    }
}

/// The raw descriptors a caller can wait on to drive machines from its own event loop.
///
/// Waiting on [`poll`](PollSources::poll) alone is enough: it is an epoll descriptor that becomes
/// readable whenever any of the others has something for the machine. After it does, call
/// [`Machine::process_io`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollSources {
    /// The machine's epoll descriptor (covers all the others).
    pub poll: RawFd,
    /// The QMP socket, while connected.
    pub qmp: Option<RawFd>,
    /// The console socket, while open.
    pub console: Option<RawFd>,
    /// The descriptor that becomes readable when QEMU exits (its channel to the process
    /// guardian), until the exit has been seen.
    pub child: Option<RawFd>,
    /// The qtest socket, while open.
    pub qtest: Option<RawFd>,
}

/// A descriptor added to an fdset at run time (the reply of QMP `add-fd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdsetEntry {
    /// The fdset the descriptor was added to.
    pub fdset_id: u64,
    /// The descriptor's number inside QEMU.
    pub fd: i64,
}

struct QmpConn {
    fd: Option<OwnedFd>,
    session: Session,
    /// Whether the socket is registered for writability.
    interest_write: bool,
    /// Keep writability interest even with nothing queued (while a descriptor waits to be sent).
    force_writable: bool,
    /// A write failed (peer gone); stop writing, the read side will see EOF.
    write_failed: bool,
    /// A fatal protocol error ended the session.
    fatal: Option<qmp_proto::Error>,
    /// Unix socket (descriptors can be passed) rather than TCP.
    unix: bool,
}

struct Console {
    fd: Option<OwnedFd>,
    buffer: ConsoleBuffer,
    /// Buffered: flushed whenever a call returns to the caller, so the file is complete then.
    log: Option<std::io::BufWriter<File>>,
    log_path: Option<PathBuf>,
    /// Bytes accepted by `console_write`, waiting to be written to the guest.
    out: Vec<u8>,
    /// The bound of `out` (at least 1).
    out_limit: usize,
    interest_write: bool,
    /// A write failed (QEMU closed its end): later writes fail, the read side sees EOF.
    write_failed: bool,
    received: u64,
}

/// One QEMU, launched and owned ([`Machine::launch`]) or attached to ([`Machine::attach`]).
///
/// Nothing here spawns a thread or sleeps: every call that waits does so in one `mio::Poll` under
/// its own deadline, and keeps draining events and console output while it waits.
///
/// Dropping a `Machine` whose QEMU still runs kills it: `SIGKILL` to its whole process group,
/// never a graceful shutdown (which would make a forgotten machine's drop take as long as its
/// guest does to power off); call [`shutdown`](Machine::shutdown) first for that. The drop
/// then waits for the kernel to finish QEMU, at most 10 seconds (a process stuck in
/// uninterruptible sleep is left a zombie, reaped by the guardian later, and logged), and
/// removes the temp dir (log files kept in a [`log_dir`](crate::MachineConfig::log_dir)
/// stay). Dropping an attached machine only closes the connection. A `Machine` may move
/// between threads, and the thread that launched it may exit: QEMU belongs to the process
/// (see [`start_guardian`](crate::start_guardian)), which takes it down and removes its temp
/// dir if the process dies without dropping it.
pub struct Machine {
    poll: Poll,
    mio_events: Events,
    qmp: QmpConn,
    console: Option<Console>,
    child: Option<ChildProc>,
    child_registered: bool,
    exit_handled: bool,
    qmp_timeout: Duration,
    argv: Vec<OsString>,
    log_path: Option<PathBuf>,
    read_buf: Box<[u8]>,
    /// The launch description, for relaunching; `None` for an attached machine.
    config: Option<MachineConfig>,
    /// What a VM launch resolved (description, drives, forwards, VNC socket).
    vm: Option<vm::VmParts>,
    /// The guest agent's channel, for a VM whose description asks for one.
    guest: Option<crate::guest::channel::GuestChannel>,
    /// Files the launch made outside the temp dir, removed unless QMP comes up.
    created: Created,
    /// The qtest channel, for a machine launched with `MachineConfig::qtest`.
    qtest: Option<qtest::QtestConn>,
    /// Whether the machine was launched (or attached) with the library's QMP connection.
    qmp_enabled: bool,
    /// QEMUMachine's extras: name, QMP servers, ptys.
    extras: qemumachine::Extras,
    /// Dropped last (fields drop in order), after the child was killed in `Drop::drop`.
    temp_dir: Option<TempDir>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("pid", &self.pid())
            .field("exit_status", &self.exit_status())
            .field("qmp_connected", &self.qmp.fd.is_some())
            .field("events_kept", &self.qmp.session.events_queued())
            .field("temp_dir", &self.temp_dir())
            .finish_non_exhaustive()
    }
}

impl Machine {
    // ------------------------------------------------------------------------------------------
    // Accessors
    // ------------------------------------------------------------------------------------------

    /// QEMU's process id (`None` for an attached machine).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildProc::pid)
    }

    /// The exit status, once QEMU has exited and been reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child.as_ref().and_then(ChildProc::status)
    }

    /// Whether the QMP connection is open and negotiated.
    pub fn is_connected(&self) -> bool {
        self.qmp_usable()
    }

    /// QEMU's greeting (version, capabilities offered).
    pub fn greeting(&self) -> Option<&Greeting> {
        self.qmp.session.greeting()
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.qmp.session.oob_enabled()
    }

    /// Everything QEMU wrote to stdout and stderr so far (lossy UTF-8), readable after exit too.
    pub fn log(&self) -> Result<String, Error> {
        let bytes = self.log_bytes()?;
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// QEMU's stdout and stderr as bytes.
    pub fn log_bytes(&self) -> Result<Vec<u8>, Error> {
        let path = self
            .log_path
            .as_ref()
            .ok_or_else(|| Error::Unsupported("an attached machine has no log".into()))?;
        std::fs::read(path).map_err(Error::io_with(format!("reading {}", path.display())))
    }

    /// The file holding QEMU's stdout and stderr (inside the temp dir).
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    /// The machine's private temp dir (mode 0700), removed on drop.
    pub fn temp_dir(&self) -> Option<&Path> {
        self.temp_dir.as_ref().map(TempDir::path)
    }

    /// The full command line QEMU was started with (wrapper first, if any).
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// The default deadline of QMP commands.
    pub fn qmp_timeout(&self) -> Duration {
        self.qmp_timeout
    }

    /// Changes the default deadline of QMP commands.
    pub fn set_qmp_timeout(&mut self, timeout: Duration) {
        self.qmp_timeout = timeout;
    }

    /// Changes the bound of kept events (at least 1).
    pub fn set_max_events(&mut self, limit: usize) {
        self.qmp.session.set_max_events(limit);
    }

    /// The descriptors to wait on when driving this machine from an external loop: wait for
    /// [`PollSources::poll`] to be readable, call [`process_io`](Machine::process_io) once, then
    /// take what arrived with [`take_events`](Machine::take_events) and
    /// [`take_console`](Machine::take_console), which do no I/O of their own.
    pub fn poll_sources(&self) -> PollSources {
        PollSources {
            poll: self.poll.as_raw_fd(),
            qmp: self.qmp.fd.as_ref().map(AsRawFd::as_raw_fd),
            console: self
                .console
                .as_ref()
                .and_then(|c| c.fd.as_ref())
                .map(AsRawFd::as_raw_fd),
            child: self
                .child
                .as_ref()
                .filter(|c| c.status().is_none())
                .map(ChildProc::exit_fd_raw),
            qtest: self
                .qtest
                .as_ref()
                .and_then(|q| q.fd.as_ref())
                .map(AsRawFd::as_raw_fd),
        }
    }

    /// Takes the next kept event, if any (no I/O).
    pub(crate) fn pop_event(&mut self) -> Option<Event> {
        self.qmp.session.poll_event()
    }

    /// Whether this machine can still produce events (connection open).
    pub(crate) fn qmp_open(&self) -> bool {
        self.qmp.fd.is_some()
    }
}

/// The machine's epoll descriptor: readable whenever [`Machine::process_io`] has work.
impl AsRawFd for Machine {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.status().is_none() {
                let _ = child.try_reap();
            }
            if child.status().is_none() {
                log::warn!("dropping a running QEMU (pid {}): killing it", child.pid());
                match child.kill_and_reap(KILL_REAP_LIMIT) {
                    Ok(Some(_)) => {}
                    Ok(None) => log::warn!(
                        "QEMU (pid {}) did not die within {KILL_REAP_LIMIT:?} of SIGKILL; \
                         it stays a zombie until this process exits",
                        child.pid()
                    ),
                    Err(e) => log::warn!("killing QEMU (pid {}) failed: {e}", child.pid()),
                }
            }
        }
        self.remove_listen_sockets();
        // The temp dir (and log) go when the fields drop, after the process is gone.
    }
}

mod console;
mod events;
mod guest;
mod io_loop;
mod launch;
mod lifecycle;
mod qemumachine;
mod qmp;
mod qtest;
#[cfg(test)]
mod tests;
mod vm;

pub(crate) use launch::connect_with_retry;
pub use qtest::Qtest;
pub(crate) use qtest::QtestPlan;
