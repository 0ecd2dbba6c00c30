//! [`Machine`]: one QEMU process (or an attached QMP server) driven from one thread.
//!
//! Every blocking call runs the same loop ([`Machine::run_until`]): flush pending output, wait
//! in `mio::Poll` for the QMP socket, the console socket or the child's exit watch, feed what arrived into the
//! `qmp_proto` session, keep events, drain the console, reap the child; then check the call's own
//! condition, until it holds or the call's deadline passes.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use qmp_proto::{Event, Greeting, RequestId, RunState, Session, SessionOptions};
use serde_json::{json, Value};

use crate::config::{args_choose_accel, resolve_accel, Accel, AttachTarget, MachineConfig};
use crate::console::ConsoleBuffer;
use crate::error::Error;
use crate::spawn::{
    create_private_file, display_argv, find_executable, inherited_fd, ChildProc, SpawnRequest,
    TempDir,
};
use crate::sys;

const QMP: Token = Token(0);
const CONSOLE: Token = Token(1);
const CHILD: Token = Token(2);

/// Bytes read from a socket per recv call.
const READ_CHUNK: usize = 64 * 1024;
/// How long to wait for the kernel to finish a process after SIGKILL before giving up on reaping.
const KILL_REAP_LIMIT: Duration = Duration::from_secs(10);
/// The chardev ids the library uses (QEMU ids must not clash with the caller's).
const QMP_CHARDEV: &str = "qm-qmp";
const CONSOLE_CHARDEV: &str = "qm-console";

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

/// Wanted events: each a name (`None`: any name) and an optional pattern (QEMUMachine's
/// `event_match` semantics).
type Wanted = Vec<(Option<String>, Option<Value>)>;

/// Whether `event` is one of `wanted`'s: its name (unless the name is `None`, which takes any)
/// and its pattern both match.
fn wanted_matches(event: &Event, name: Option<&str>, pattern: Option<&Value>) -> bool {
    event.matches(name.unwrap_or(&event.name), pattern)
}

/// One QEMU, launched and owned ([`Machine::launch`]) or attached to ([`Machine::attach`]).
///
/// Nothing here spawns a thread or sleeps: every call that waits does so in one `mio::Poll` under
/// its own deadline, and keeps draining events and console output while it waits.
///
/// Dropping a `Machine` kills QEMU (its whole process group) if it still runs, reaps it, and
/// removes the temp dir. A `Machine` may move between threads, and the thread that launched it
/// may exit: QEMU belongs to the process (see [`start_guardian`](crate::start_guardian)), which
/// takes it down and removes its temp dir if the process dies without dropping it.
pub struct Machine {
    poll: Poll,
    mio_events: Events,
    qmp: QmpConn,
    console: Option<Console>,
    child: Option<ChildProc>,
    child_registered: bool,
    exit_handled: bool,
    kept: VecDeque<Event>,
    max_events: usize,
    events_dropped: u64,
    overflow_unreported: bool,
    /// Events were dropped since the queue was last emptied (the overflow was logged).
    events_overflowing: bool,
    event_waiter: Option<Wanted>,
    event_matched: Option<Event>,
    /// Requests whose caller gave up (timeout): their replies are discarded on arrival.
    abandoned: Vec<RequestId>,
    qmp_timeout: Duration,
    argv: Vec<OsString>,
    log_path: Option<PathBuf>,
    read_buf: Box<[u8]>,
    /// Dropped last (fields drop in order), after the child was killed in `Drop::drop`.
    temp_dir: Option<TempDir>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("pid", &self.pid())
            .field("exit_status", &self.exit_status())
            .field("qmp_connected", &self.qmp.fd.is_some())
            .field("events_kept", &self.kept.len())
            .field("temp_dir", &self.temp_dir())
            .finish_non_exhaustive()
    }
}

impl Machine {
    // ------------------------------------------------------------------------------------------
    // Launch and attach
    // ------------------------------------------------------------------------------------------

    /// Launches QEMU and waits, under the config's launch deadline, until QMP is negotiated.
    ///
    /// If QEMU exits first, this returns [`Error::Launch`] at once, with the exit status, the
    /// argv and QEMU's output. A missing binary is [`Error::BinaryNotFound`]; a deadline that
    /// passes is [`Error::Timeout`] (QEMU is killed).
    pub fn launch(config: &MachineConfig) -> Result<Machine, Error> {
        let deadline = Deadline::after(config.launch_timeout);
        let mut machine = Machine::spawn(config)?;
        machine.finish_launch(deadline)?;
        Ok(machine)
    }

    /// Spawns QEMU with its sockets and registers everything in the poll; does not wait.
    pub(crate) fn spawn(config: &MachineConfig) -> Result<Machine, Error> {
        let binary = find_executable(&config.binary)
            .ok_or_else(|| Error::BinaryNotFound(config.binary.clone()))?;
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(first) = config.wrapper.first() {
            let wrapper = find_executable(Path::new(first))
                .ok_or_else(|| Error::BinaryNotFound(PathBuf::from(first)))?;
            argv.push(wrapper.into_os_string());
            argv.extend(config.wrapper[1..].iter().cloned());
        }
        argv.push(binary.clone().into_os_string());

        let base = config.temp_base.clone().unwrap_or_else(std::env::temp_dir);
        let temp_dir = TempDir::new(&base).map_err(Error::io_with(format!(
            "creating a temporary directory under {}",
            base.display()
        )))?;
        let log_path = temp_dir.path().join("qemu.log");
        let log = create_private_file(&log_path)
            .map_err(Error::io_with(format!("creating {}", log_path.display())))?;
        let (qmp_ours, qmp_theirs) =
            sys::socketpair().map_err(Error::io_with("creating the QMP socketpair"))?;
        // Descriptors QEMU inherits, as 3, 4, ... in this order (see `inherited_fd`).
        let mut inherit: Vec<BorrowedFd<'_>> = vec![qmp_theirs.as_fd()];
        argv.extend([
            "-chardev".into(),
            format!("socket,id={QMP_CHARDEV},fd={}", inherited_fd(0)).into(),
            "-mon".into(),
            format!("chardev={QMP_CHARDEV},mode=control").into(),
        ]);

        let mut console = None;
        let mut console_theirs = None;
        if config.console {
            let (ours, theirs) =
                sys::socketpair().map_err(Error::io_with("creating the console socketpair"))?;
            let log = match &config.console_log {
                Some(path) => Some(
                    File::options()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(path)
                        .map_err(Error::io_with(format!("creating {}", path.display())))?,
                ),
                None => None,
            };
            console = Some(Console {
                fd: Some(ours),
                buffer: ConsoleBuffer::new(config.console_buffer),
                log: log.map(|file| std::io::BufWriter::with_capacity(READ_CHUNK, file)),
                log_path: config.console_log.clone(),
                out: Vec::new(),
                out_limit: config.console_input_buffer.max(1),
                interest_write: false,
                write_failed: false,
                received: 0,
            });
            console_theirs = Some(theirs);
        }
        if let Some(theirs) = &console_theirs {
            argv.extend([
                "-chardev".into(),
                format!(
                    "socket,id={CONSOLE_CHARDEV},fd={}",
                    inherited_fd(inherit.len())
                )
                .into(),
                "-serial".into(),
                format!("chardev:{CONSOLE_CHARDEV}").into(),
            ]);
            inherit.push(theirs.as_fd());
        }
        if config.display_none {
            argv.extend(["-display".into(), "none".into()]);
        }
        match resolve_accel(config.accel, &binary) {
            _ if config.accel == Accel::Auto && args_choose_accel(&config.args) => {}
            Accel::Kvm => argv.extend(["-accel".into(), "kvm".into()]),
            Accel::Tcg => argv.extend(["-accel".into(), "tcg".into()]),
            Accel::None | Accel::Auto => {}
        }
        for add in &config.add_fds {
            let mut spec = format!("fd={},set={}", inherited_fd(inherit.len()), add.fdset);
            if let Some(opaque) = &add.opaque {
                spec.push_str(",opaque=");
                spec.push_str(&opaque.replace(',', ",,"));
            }
            argv.extend(["-add-fd".into(), spec.into()]);
            inherit.push(add.fd.as_fd());
        }
        argv.extend(config.args.iter().cloned());

        log::info!("launching QEMU: {}", display_argv(&argv));
        let child = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &config.env,
            log: &log,
            inherit: &inherit,
        })
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BinaryNotFound(PathBuf::from(&argv[0]))
            } else {
                Error::io(format!("spawning {}", PathBuf::from(&argv[0]).display()), e)
            }
        })?;
        // QEMU has its copies now; ours would only keep the sockets open after QEMU dies.
        drop(inherit);
        drop((qmp_theirs, console_theirs, log));
        log::debug!("QEMU started, pid {}", child.pid());

        let options = SessionOptions {
            oob: config.oob,
            max_message_size: config.max_message_size,
            in_band_ids: config.qmp_ids,
            ..SessionOptions::default()
        };
        let mut machine = Machine::from_parts(
            qmp_ours,
            true,
            Session::new(options),
            console,
            Some(child),
            config.max_events,
            config.qmp_timeout,
            argv,
        )?;
        machine.log_path = Some(log_path);
        machine.temp_dir = Some(temp_dir);
        Ok(machine)
    }

    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        qmp_fd: OwnedFd,
        unix: bool,
        session: Session,
        console: Option<Console>,
        child: Option<ChildProc>,
        max_events: usize,
        qmp_timeout: Duration,
        argv: Vec<OsString>,
    ) -> Result<Machine, Error> {
        let poll = Poll::new().map_err(Error::io_with("creating an epoll instance"))?;
        let registry = poll.registry();
        registry
            .register(&mut SourceFd(&qmp_fd.as_raw_fd()), QMP, Interest::READABLE)
            .map_err(Error::io_with("registering the QMP socket"))?;
        if let Some(fd) = console.as_ref().and_then(|c| c.fd.as_ref()) {
            registry
                .register(&mut SourceFd(&fd.as_raw_fd()), CONSOLE, Interest::READABLE)
                .map_err(Error::io_with("registering the console socket"))?;
        }
        let mut child_registered = false;
        if let Some(child) = &child {
            registry
                .register(
                    &mut SourceFd(&child.exit_fd_raw()),
                    CHILD,
                    Interest::READABLE,
                )
                .map_err(Error::io_with("registering the exit watch"))?;
            child_registered = true;
        }
        Ok(Machine {
            poll,
            mio_events: Events::with_capacity(8),
            qmp: QmpConn {
                fd: Some(qmp_fd),
                session,
                interest_write: false,
                force_writable: false,
                write_failed: false,
                fatal: None,
                unix,
            },
            console,
            child,
            child_registered,
            exit_handled: false,
            kept: VecDeque::new(),
            max_events: max_events.max(1),
            events_dropped: 0,
            overflow_unreported: false,
            events_overflowing: false,
            event_waiter: None,
            event_matched: None,
            abandoned: Vec::new(),
            qmp_timeout,
            argv,
            log_path: None,
            read_buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            temp_dir: None,
        })
    }

    /// Waits for QMP negotiation, or QEMU's exit (a launch error), until `deadline`.
    pub(crate) fn finish_launch(&mut self, deadline: Deadline) -> Result<(), Error> {
        let result = self.run_until(
            deadline,
            || "the QMP greeting and capability negotiation".to_owned(),
            |m| m.launch_check(),
        );
        if let Err(e) = &result {
            if !matches!(e, Error::Launch { .. }) {
                log::warn!("launch failed: {e}");
            }
        }
        result
    }

    /// One look at the launch: `Some(Ok)` when negotiated, `Some(Err)` when it failed.
    pub(crate) fn launch_check(&mut self) -> Option<Result<(), Error>> {
        if self.qmp.session.is_ready() {
            if let Some(g) = self.qmp.session.greeting() {
                log::info!(
                    "QMP ready (pid {:?}): QEMU {}.{}.{} {}, oob {}",
                    self.pid(),
                    g.version.major,
                    g.version.minor,
                    g.version.micro,
                    g.version.package,
                    self.qmp.session.oob_enabled()
                );
            }
            return Some(Ok(()));
        }
        if let Some(status) = self.exit_status_now() {
            let log = self.log().unwrap_or_default();
            log::warn!("QEMU exited during launch ({status}): {}", log.trim_end());
            return Some(Err(Error::Launch {
                status,
                argv: self.argv.clone(),
                log,
            }));
        }
        if let Some(e) = &self.qmp.fatal {
            return Some(Err(Error::Protocol(e.clone())));
        }
        if self.qmp.fd.is_none() && self.child.is_none() {
            return Some(Err(Error::Disconnected));
        }
        // A closed QMP socket with a live child means QEMU is on its way out: the exit watch will say.
        None
    }

    /// Connects to a running QEMU's QMP server, retrying refused connections (and a socket file
    /// that does not exist yet) until `timeout`, then negotiates capabilities.
    ///
    /// An attached machine has no process of ours: [`shutdown`](Machine::shutdown),
    /// [`kill`](Machine::kill) and [`wait`](Machine::wait) are [`Error::Unsupported`]; execute
    /// `quit` to stop QEMU. Dropping it only closes the connection.
    pub fn attach(target: AttachTarget, timeout: Duration) -> Result<Machine, Error> {
        let deadline = Deadline::after(timeout);
        let (fd, unix) = connect_with_retry(&target, deadline)?;
        log::info!("attached to QMP server {target:?}");
        let mut machine = Machine::from_parts(
            fd,
            unix,
            attach_session(),
            None,
            None,
            crate::config::DEFAULT_MAX_EVENTS,
            crate::config::DEFAULT_QMP_TIMEOUT,
            Vec::new(),
        )?;
        machine.finish_launch(deadline)?;
        Ok(machine)
    }

    /// Uses an already connected stream socket to a QMP server (a socketpair end, a socket
    /// received from elsewhere) as an attached machine, and negotiates capabilities until
    /// `timeout`. Like [`attach`](Machine::attach), the machine has no process of ours.
    pub fn attach_socket(socket: OwnedFd, timeout: Duration) -> Result<Machine, Error> {
        let deadline = Deadline::after(timeout);
        let domain = sys::socket_domain(socket.as_fd())
            .map_err(Error::io_with("the QMP descriptor is not a socket"))?;
        sys::set_nonblocking(socket.as_raw_fd(), true)
            .map_err(Error::io_with("making the QMP socket non-blocking"))?;
        let mut machine = Machine::from_parts(
            socket,
            domain == libc::AF_UNIX,
            attach_session(),
            None,
            None,
            crate::config::DEFAULT_MAX_EVENTS,
            crate::config::DEFAULT_QMP_TIMEOUT,
            Vec::new(),
        )?;
        machine.finish_launch(deadline)?;
        Ok(machine)
    }

    // ------------------------------------------------------------------------------------------
    // The poll loop
    // ------------------------------------------------------------------------------------------

    /// Runs the loop until `check` gives a result or the deadline passes ([`Error::Timeout`]).
    pub(crate) fn run_until<T>(
        &mut self,
        deadline: Deadline,
        what: impl FnOnce() -> String,
        mut check: impl FnMut(&mut Machine) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut looked = false;
        let result = loop {
            if let Some(result) = check(self) {
                break result;
            }
            let timeout = deadline.remaining();
            if timeout == Some(Duration::ZERO) && looked {
                break Err(Error::Timeout {
                    what: what(),
                    after: deadline.total(),
                });
            }
            // Even a zero timeout takes in what is ready (one non-blocking round) before the
            // condition is checked for the last time.
            looked = timeout == Some(Duration::ZERO);
            if let Err(e) = self.turn(timeout) {
                break Err(e);
            }
        };
        self.flush_console_log();
        result
    }

    /// Writes buffered console log bytes to the file (done before every return to the caller).
    fn flush_console_log(&mut self) {
        if let Some(console) = self.console.as_mut() {
            if let Some(log) = &mut console.log {
                if let Err(e) = log.flush() {
                    log::warn!("writing the console log failed, no longer logging: {e}");
                    console.log = None;
                }
            }
        }
    }

    /// One round: flush output, wait up to `timeout` for readiness, handle what is ready.
    fn turn(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.flush_qmp();
        self.flush_console();
        if let Err(e) = self.poll.poll(&mut self.mio_events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(Error::io("waiting for QEMU (epoll_wait)", e));
        }
        let (mut qmp_read, mut qmp_write, mut con_read, mut con_write, mut child) =
            (false, false, false, false, false);
        let (mut qmp_closed, mut con_closed) = (false, false);
        for event in self.mio_events.iter() {
            let closed = event.is_read_closed() || event.is_error();
            let read = event.is_readable() || closed;
            let write = event.is_writable() || event.is_write_closed();
            match event.token() {
                QMP => {
                    qmp_read |= read;
                    qmp_closed |= closed;
                    qmp_write |= write;
                }
                CONSOLE => {
                    con_read |= read;
                    con_closed |= closed;
                    con_write |= write;
                }
                CHILD => child = true,
                _ => {}
            }
        }
        if qmp_read {
            self.read_qmp(qmp_closed);
        }
        if con_read {
            self.read_console(con_closed);
        }
        if qmp_write {
            self.flush_qmp();
        }
        if con_write {
            self.flush_console();
        }
        if child {
            self.reap_now();
        }
        Ok(())
    }

    /// Handles whatever is ready now, without waiting: reads QMP messages and console output,
    /// flushes queued output, reaps an exited child. For callers driving the machine from their
    /// own loop (see [`poll_sources`](Machine::poll_sources)).
    pub fn process_io(&mut self) -> Result<(), Error> {
        let result = self.turn(Some(Duration::ZERO));
        self.flush_console_log();
        result
    }

    /// Reads the QMP socket until it would block, or (unless `drain`) until a short read.
    ///
    /// A short read from a stream socket means its queue was empty at that moment, and with
    /// edge-triggered epoll any later arrival brings a new event, so the extra `recv` that would
    /// only say EAGAIN is skipped. `drain` is set when the peer's close was reported with the
    /// readiness: then EOF is already queued and no further event would announce it.
    fn read_qmp(&mut self, drain: bool) {
        loop {
            let Some(fd) = self.qmp.fd.as_ref() else {
                return;
            };
            match sys::recv(fd.as_fd(), &mut self.read_buf) {
                Ok(0) => {
                    self.qmp_eof();
                    return;
                }
                Ok(n) => {
                    log::trace!("QMP: read {n} bytes");
                    let result = self.qmp.session.receive(&self.read_buf[..n]);
                    self.after_qmp_input();
                    if let Err(e) = result {
                        self.qmp_fatal(e);
                        return;
                    }
                    if n < self.read_buf.len() && !drain {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // QEMU closing its end with our bytes unread (as after `quit`) shows up as a
                // reset rather than end-of-file: the same ending, not worth a warning.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    log::debug!("QMP socket reset by QEMU: {e}");
                    self.qmp_eof();
                    return;
                }
                Err(e) => {
                    log::warn!("reading the QMP socket failed: {e}");
                    self.qmp_eof();
                    return;
                }
            }
        }
        if !self.qmp.session.transmit().is_empty() {
            self.flush_qmp();
        }
    }

    /// Moves new events out of the session, and drops replies nobody waits for any more.
    fn after_qmp_input(&mut self) {
        while let Some(event) = self.qmp.session.poll_event() {
            self.keep_event(event);
        }
        if !self.abandoned.is_empty() {
            let session = &mut self.qmp.session;
            self.abandoned.retain(|&id| {
                if let Some(reply) = session.take_reply(id) {
                    log::debug!("QMP: discarding late reply {id:?}: {reply:?}");
                    false
                } else {
                    session.is_pending(id)
                }
            });
        }
    }

    fn keep_event(&mut self, event: Event) {
        log::debug!("QMP event {} {}", event.name, event.data);
        if self.event_matched.is_none() {
            if let Some(wanted) = &self.event_waiter {
                if wanted.iter().any(|(name, pattern)| {
                    wanted_matches(&event, name.as_deref(), pattern.as_ref())
                }) {
                    self.event_matched = Some(event);
                    return;
                }
            }
        }
        if self.kept.len() >= self.max_events {
            self.events_dropped += 1;
            if !self.events_overflowing {
                self.events_overflowing = true;
                log::warn!(
                    "event queue full ({} events): dropping {} and later events until they are \
                     taken (dropped since launch: {})",
                    self.max_events,
                    event.name,
                    self.events_dropped
                );
            }
            self.overflow_unreported = true;
            return;
        }
        self.kept.push_back(event);
    }

    fn qmp_eof(&mut self) {
        if let Err(e) = self.qmp.session.receive_eof() {
            self.after_qmp_input();
            log::warn!("QMP connection ended mid-message: {e}");
            if self.qmp.fatal.is_none() {
                self.qmp.fatal = Some(e);
            }
        } else {
            self.after_qmp_input();
        }
        log::debug!("QMP connection closed by QEMU");
        self.close_qmp();
    }

    fn qmp_fatal(&mut self, e: qmp_proto::Error) {
        log::warn!("QMP protocol error, closing the connection: {e}");
        if self.qmp.fatal.is_none() {
            self.qmp.fatal = Some(e);
        }
        self.close_qmp();
    }

    fn close_qmp(&mut self) {
        if let Some(fd) = self.qmp.fd.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        self.qmp.interest_write = false;
    }

    fn flush_qmp(&mut self) {
        let Some(fd) = self.qmp.fd.as_ref() else {
            return;
        };
        let mut blocked = false;
        while !self.qmp.write_failed {
            let out = self.qmp.session.transmit();
            if out.is_empty() {
                break;
            }
            match sys::send(fd.as_fd(), out) {
                Ok(n) => {
                    log::trace!("QMP: wrote {n} bytes");
                    self.qmp.session.advance_transmit(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => {
                    log::debug!("writing to the QMP socket failed: {e}");
                    self.qmp.write_failed = true;
                }
            }
        }
        let want = (blocked || self.qmp.force_writable) && !self.qmp.write_failed;
        if want != self.qmp.interest_write {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match self
                .poll
                .registry()
                .reregister(&mut SourceFd(&fd.as_raw_fd()), QMP, interest)
            {
                Ok(()) => self.qmp.interest_write = want,
                Err(e) => log::warn!("re-registering the QMP socket failed: {e}"),
            }
        }
    }

    /// Drains the console socket into the log and the buffer (see [`read_qmp`] on `drain`).
    ///
    /// [`read_qmp`]: Machine::read_qmp
    fn read_console(&mut self, drain: bool) {
        let Some(console) = self.console.as_mut() else {
            return;
        };
        loop {
            let Some(fd) = console.fd.as_ref() else {
                return;
            };
            match sys::recv(fd.as_fd(), &mut self.read_buf) {
                Ok(0) => {
                    log::debug!("console closed by QEMU");
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&fd.as_raw_fd()));
                    console.fd = None;
                    return;
                }
                Ok(n) => {
                    let bytes = &self.read_buf[..n];
                    console.received += n as u64;
                    if let Some(log) = &mut console.log {
                        if let Err(e) = log.write_all(bytes) {
                            log::warn!("writing the console log failed, no longer logging: {e}");
                            console.log = None;
                        }
                    }
                    console.buffer.push(bytes);
                    if n < self.read_buf.len() && !drain {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("reading the console socket failed: {e}");
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&fd.as_raw_fd()));
                    console.fd = None;
                    return;
                }
            }
        }
    }

    fn flush_console(&mut self) {
        let Some(console) = self.console.as_mut() else {
            return;
        };
        let Some(fd) = console.fd.as_ref() else {
            return;
        };
        let mut blocked = false;
        while !console.out.is_empty() && !console.write_failed {
            match sys::send(fd.as_fd(), &console.out) {
                Ok(n) => {
                    console.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => {
                    log::debug!("writing to the console failed, discarding its input: {e}");
                    console.write_failed = true;
                    console.out = Vec::new();
                }
            }
        }
        if blocked != console.interest_write {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match self
                .poll
                .registry()
                .reregister(&mut SourceFd(&fd.as_raw_fd()), CONSOLE, interest)
            {
                Ok(()) => console.interest_write = blocked,
                Err(e) => log::warn!("re-registering the console socket failed: {e}"),
            }
        }
    }

    /// Takes in the child's exit status if the guardian reported it.
    fn reap_now(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Err(e) = child.try_reap() {
            log::warn!("could not reap QEMU (pid {}): {e}", child.pid());
        }
        self.exit_status_now();
    }

    /// The exit status if the child was reaped; the first time, finishes the bookkeeping:
    /// deregister the exit watch and take in everything QEMU wrote before it died.
    pub(crate) fn exit_status_now(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_ref()?;
        let status = child.status()?;
        if !self.exit_handled {
            self.exit_handled = true;
            if self.child_registered {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&child.exit_fd_raw()));
                self.child_registered = false;
            }
            if status.success() {
                log::info!("QEMU (pid {}) exited: {status}", child.pid());
            } else {
                log::warn!("QEMU (pid {}) exited abnormally: {status}", child.pid());
            }
            // QEMU is gone, so all it sent is in the socket buffers and EOF follows it.
            self.read_qmp(true);
            self.read_console(true);
            self.flush_console_log();
        }
        Some(status)
    }

    /// Why the connection cannot be used: a protocol error, QEMU's exit, or plain disconnection.
    fn connection_error(&mut self) -> Error {
        if let Some(e) = &self.qmp.fatal {
            return Error::Protocol(e.clone());
        }
        self.reap_now();
        match self.exit_status_now() {
            Some(status) => Error::Exited(status),
            None => Error::Disconnected,
        }
    }

    fn qmp_usable(&self) -> bool {
        self.qmp.fd.is_some()
            && self.qmp.fatal.is_none()
            && !self.qmp.write_failed
            && self.qmp.session.is_ready()
    }

    fn ensure_qmp(&mut self) -> Result<(), Error> {
        if self.qmp_usable() {
            Ok(())
        } else {
            Err(self.connection_error())
        }
    }

    fn session_error(&mut self, e: qmp_proto::Error) -> Error {
        match e {
            qmp_proto::Error::Closed => self.connection_error(),
            other => Error::Protocol(other),
        }
    }

    // ------------------------------------------------------------------------------------------
    // QMP commands
    // ------------------------------------------------------------------------------------------

    /// Executes a QMP command under the default deadline and returns its `return` value.
    ///
    /// An error reply is [`Error::Qmp`] (class and description); no reply in time is
    /// [`Error::Timeout`]; a connection that closes first is [`Error::Exited`] or
    /// [`Error::Disconnected`] — except for `quit`, where QEMU closing the connection is the
    /// expected answer and returns `Ok({})`.
    pub fn execute(&mut self, name: &str, arguments: Option<Value>) -> Result<Value, Error> {
        self.execute_with_timeout(name, arguments, self.qmp_timeout)
    }

    /// [`execute`](Machine::execute) with its own deadline.
    pub fn execute_with_timeout(
        &mut self,
        name: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        self.send_and_await(name, arguments, timeout, false)
    }

    /// Executes a command out of band (`exec-oob`), which QEMU runs even while an in-band
    /// command is stuck. Needs the `oob` capability ([`Error::Protocol`] with
    /// `qmp_proto::Error::OobNotEnabled` otherwise).
    pub fn execute_oob(
        &mut self,
        name: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        self.send_and_await(name, arguments, timeout, true)
    }

    /// Sends a command in band or out of band and waits for its reply under `timeout`.
    fn send_and_await(
        &mut self,
        name: &str,
        arguments: Option<Value>,
        timeout: Duration,
        oob: bool,
    ) -> Result<Value, Error> {
        self.ensure_qmp()?;
        log::debug!(
            "QMP -> {}{name} {}",
            if oob { "(oob) " } else { "" },
            arguments.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let sent = if oob {
            self.qmp.session.execute_oob(name, arguments)
        } else {
            self.qmp.session.execute(name, arguments)
        };
        let id = match sent {
            Ok(id) => id,
            Err(e) => return Err(self.session_error(e)),
        };
        self.await_reply(id, name, Deadline::after(timeout))
    }

    /// Executes a typed command (see `qmp_proto::commands`) and decodes its reply.
    pub fn command<C: qmp_proto::Command>(&mut self, command: &C) -> Result<C::Returns, Error> {
        self.ensure_qmp()?;
        log::debug!(
            "QMP -> {} {}",
            C::NAME,
            serde_json::to_string(command).unwrap_or_default()
        );
        let id = match self.qmp.session.execute_typed(command) {
            Ok(id) => id,
            Err(e) => return Err(self.session_error(e)),
        };
        let value = self.await_reply(id, C::NAME, Deadline::after(self.qmp_timeout))?;
        qmp_proto::parse_reply::<C>(value).map_err(Error::Protocol)
    }

    fn await_reply(
        &mut self,
        id: RequestId,
        name: &str,
        deadline: Deadline,
    ) -> Result<Value, Error> {
        self.flush_qmp();
        let result = self.run_until(
            deadline,
            || format!("the reply to {name}"),
            |m| {
                if let Some(reply) = m.qmp.session.take_reply(id) {
                    return Some(reply.map_err(Error::Qmp));
                }
                if m.qmp.fd.is_none() {
                    if name == "quit" && m.qmp.fatal.is_none() {
                        // QEMU closed the socket before (or instead of) answering: that is
                        // what quit does.
                        return Some(Ok(Value::Object(Default::default())));
                    }
                    return Some(Err(m.connection_error()));
                }
                None
            },
        );
        match &result {
            Ok(value) => log::debug!("QMP <- {name}: {value}"),
            Err(Error::Qmp(e)) => log::debug!("QMP <- {name}: error {e}"),
            Err(e) => {
                if e.is_timeout() {
                    self.abandoned.push(id);
                }
                log::debug!("QMP {name}: {e}");
            }
        }
        result
    }

    // ------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------

    /// Takes every kept event, oldest first, without reading anything: for a caller driving the
    /// machine from its own loop, which calls [`process_io`](Machine::process_io) once after each
    /// wake-up and then takes with this and [`take_console`](Machine::take_console). (Taking with
    /// [`events`](Machine::events) or [`console_read`](Machine::console_read) there could read,
    /// and keep, bytes for the other one after it was already taken, with no wake-up left to
    /// announce them.)
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events_overflowing = false;
        self.kept.drain(..).collect()
    }

    /// Takes every kept event, oldest first (after reading whatever is ready without waiting).
    pub fn events(&mut self) -> Vec<Event> {
        let _ = self.process_io();
        self.take_events()
    }

    /// How many events are kept, waiting to be taken.
    pub fn events_pending(&self) -> usize {
        self.kept.len()
    }

    /// How many events were dropped because the queue was full (since launch). Each overflow is
    /// also logged (a warning when the first event is dropped, again only after the queue was
    /// emptied by taking its events).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Waits for an event named `name` whose JSON form matches `pattern` (QEMUMachine's
    /// `event_match`: every key in the pattern must be present with an equal or recursively
    /// matching value). Kept events are searched first; a match is removed from the kept ones,
    /// non-matching events that arrive meanwhile are kept.
    ///
    /// A zero `timeout` waits for nothing: it looks at the kept events and at what QEMU has
    /// already sent.
    ///
    /// [`Error::Timeout`] when nothing matched in time; [`Error::Exited`]/[`Error::Disconnected`]
    /// when the connection closed first; [`Error::EventQueueFull`] (once) when events were
    /// dropped since the last report and none of the kept ones matches.
    pub fn event_wait(
        &mut self,
        name: &str,
        pattern: Option<&Value>,
        timeout: Duration,
    ) -> Result<Event, Error> {
        self.wait_for_wanted(vec![(Some(name.to_owned()), pattern.cloned())], timeout)
    }

    /// Waits for the first event of any name whose JSON form matches `pattern` (`None`: the
    /// first event, whatever it is), like [`event_wait`](Machine::event_wait) otherwise: the
    /// oldest kept event that matches is taken first.
    ///
    /// ```no_run
    /// # use qemu_process::{Machine, MachineConfig};
    /// # use std::time::Duration;
    /// # let mut vm = Machine::launch(&MachineConfig::new("qemu-system-x86_64"))?;
    /// vm.pause()?;
    /// let next = vm.event_wait_any(None, Duration::from_secs(5))?;
    /// assert_eq!(next.name, "STOP");
    /// # Ok::<(), qemu_process::Error>(())
    /// ```
    pub fn event_wait_any(
        &mut self,
        pattern: Option<&Value>,
        timeout: Duration,
    ) -> Result<Event, Error> {
        self.wait_for_wanted(vec![(None, pattern.cloned())], timeout)
    }

    /// Waits for the first event matching any of `wanted` (see [`event_wait`](Machine::event_wait)).
    pub fn events_wait(
        &mut self,
        wanted: &[(&str, Option<&Value>)],
        timeout: Duration,
    ) -> Result<Event, Error> {
        let wanted: Wanted = wanted
            .iter()
            .map(|(n, p)| (Some((*n).to_owned()), p.cloned()))
            .collect();
        self.wait_for_wanted(wanted, timeout)
    }

    fn wait_for_wanted(&mut self, wanted: Wanted, timeout: Duration) -> Result<Event, Error> {
        let deadline = Deadline::after(timeout);
        if let Some(pos) = self.kept.iter().position(|e| {
            wanted
                .iter()
                .any(|(name, pattern)| wanted_matches(e, name.as_deref(), pattern.as_ref()))
        }) {
            let event = self.kept.remove(pos).expect("position is in range");
            if self.kept.is_empty() {
                self.events_overflowing = false;
            }
            return Ok(event);
        }
        if self.overflow_unreported {
            self.overflow_unreported = false;
            return Err(Error::EventQueueFull {
                limit: self.max_events,
                dropped: self.events_dropped,
            });
        }
        self.set_event_waiter(wanted);
        self.finish_event_wait(deadline)
    }

    fn set_event_waiter(&mut self, wanted: Wanted) {
        self.event_matched = None;
        self.event_waiter = Some(wanted);
    }

    fn finish_event_wait(&mut self, deadline: Deadline) -> Result<Event, Error> {
        let names = self
            .event_waiter
            .as_ref()
            .map(|w| {
                w.iter()
                    .map(|(n, _)| n.as_deref().unwrap_or("of any name"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            })
            .unwrap_or_default();
        let result = self.run_until(
            deadline,
            || format!("event {names}"),
            |m| {
                if let Some(event) = m.event_matched.take() {
                    return Some(Ok(event));
                }
                if m.qmp.fd.is_none() {
                    return Some(Err(m.connection_error()));
                }
                None
            },
        );
        self.event_waiter = None;
        match (result, self.event_matched.take()) {
            (Err(_), Some(event)) => Ok(event),
            (result, _) => result,
        }
    }

    // ------------------------------------------------------------------------------------------
    // Console
    // ------------------------------------------------------------------------------------------

    fn console_mut(&mut self) -> Result<&mut Console, Error> {
        self.console.as_mut().ok_or_else(|| {
            Error::Unsupported("this machine has no console (MachineConfig::console)".into())
        })
    }

    /// Takes the console bytes kept in memory without reading anything (see
    /// [`take_events`](Machine::take_events) for when that matters). Empty without a console.
    pub fn take_console(&mut self) -> Vec<u8> {
        self.console
            .as_mut()
            .map(|c| c.buffer.take())
            .unwrap_or_default()
    }

    /// Takes the console bytes kept in memory (after reading whatever is ready without waiting).
    /// Empty without a console.
    pub fn console_read(&mut self) -> Vec<u8> {
        let _ = self.process_io();
        self.console
            .as_mut()
            .map(|c| c.buffer.take())
            .unwrap_or_default()
    }

    /// Sends bytes to the guest's first serial port, waiting up to `timeout` until all of them
    /// are accepted: written to the console socket, or queued in memory within the bound set by
    /// [`MachineConfig::console_input_buffer_bytes`]. Accepted bytes reach the guest in order, as
    /// fast as it reads them; events and console output keep being taken in while the call
    /// waits. A zero timeout takes what fits at once.
    ///
    /// A guest that does not read its console (a paused VM, a busy or stuck guest) makes the call
    /// wait. If the deadline passes first, the error is [`Error::ConsoleWriteTimeout`] with the
    /// number of bytes accepted: the rest, `bytes[accepted..]`, was not, and can be written by a
    /// later call. Without a console: [`Error::Unsupported`]; once QEMU has closed it:
    /// [`Error::Exited`] or [`Error::Disconnected`].
    ///
    /// ```no_run
    /// # use qemu_process::{Error, Machine};
    /// # use std::time::Duration;
    /// # fn demo(vm: &mut Machine, input: &[u8]) -> Result<(), Error> {
    /// let mut sent = 0;
    /// while sent < input.len() {
    ///     match vm.console_write(&input[sent..], Duration::from_secs(1)) {
    ///         Ok(()) => sent = input.len(),
    ///         Err(Error::ConsoleWriteTimeout { accepted, .. }) => {
    ///             sent += accepted;
    ///             eprintln!("the guest is slow to read its console; {sent} bytes sent so far");
    ///         }
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`MachineConfig::console_input_buffer_bytes`]: crate::MachineConfig::console_input_buffer_bytes
    pub fn console_write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Error> {
        let deadline = Deadline::after(timeout);
        self.console_mut()?;
        let mut accepted = 0;
        let result = self.run_until(
            deadline,
            || "the console to accept input".to_owned(),
            |m| {
                let console = m.console.as_ref().expect("checked above");
                if console.fd.is_none() || console.write_failed {
                    return Some(Err(m.connection_error()));
                }
                accepted += m.console_accept(&bytes[accepted..]);
                (accepted == bytes.len()).then_some(Ok(()))
            },
        );
        match result {
            Err(Error::Timeout { after, .. }) => Err(Error::ConsoleWriteTimeout {
                accepted,
                total: bytes.len(),
                after,
            }),
            other => other,
        }
    }

    /// Takes what fits of `bytes` now and returns how many: written straight to the socket while
    /// nothing is queued before them, then queued up to the bound, until all are taken or the
    /// queue is full and the socket would block. The socket then stays registered for
    /// writability, so the poll loop (the caller's too) wakes when QEMU reads again.
    fn console_accept(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            // Sends what is queued and sets the socket's write interest to match what is left.
            self.flush_console();
            let Some(console) = self.console.as_mut() else {
                return taken;
            };
            let Some(fd) = console.fd.as_ref() else {
                return taken;
            };
            if console.write_failed || taken == bytes.len() {
                return taken;
            }
            let before = taken;
            if console.out.is_empty() {
                while taken < bytes.len() {
                    match sys::send(fd.as_fd(), &bytes[taken..]) {
                        Ok(n) => taken += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            log::debug!("writing to the console failed: {e}");
                            console.write_failed = true;
                            return taken;
                        }
                    }
                }
            }
            let room = console.out_limit.saturating_sub(console.out.len());
            let queued = room.min(bytes.len() - taken);
            console.out.extend_from_slice(&bytes[taken..taken + queued]);
            taken += queued;
            if taken == before {
                // The queue is full and the flush above found the socket full.
                return taken;
            }
        }
    }

    /// Console input accepted by [`console_write`](Machine::console_write) and still held in
    /// memory because QEMU has not taken it yet (at most the configured bound).
    pub fn console_input_pending(&self) -> usize {
        self.console.as_ref().map_or(0, |c| c.out.len())
    }

    /// Waits until `pattern` appears in the console output and returns what came before it (the
    /// match is consumed, later bytes stay kept). Kept bytes are searched first. What is returned
    /// is bounded by the console buffer size.
    pub fn console_wait_for(
        &mut self,
        pattern: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let deadline = Deadline::after(timeout);
        self.console_mut()?.buffer.set_waiter(pattern);
        let shown = String::from_utf8_lossy(pattern).into_owned();
        let result = self.run_until(
            deadline,
            || format!("console output {shown:?}"),
            |m| {
                let console = m.console.as_mut().expect("checked above");
                if let Some(before) = console.buffer.take_match() {
                    return Some(Ok(before));
                }
                if console.fd.is_none() {
                    return Some(Err(m.connection_error()));
                }
                None
            },
        );
        if let Some(console) = self.console.as_mut() {
            console.buffer.clear_waiter();
        }
        result
    }

    /// Whether the machine was launched with a console (its bytes stay readable after exit).
    pub fn has_console(&self) -> bool {
        self.console.is_some()
    }

    /// Total console bytes received since launch (all of them reached the console log, if any).
    pub fn console_bytes_received(&self) -> u64 {
        self.console.as_ref().map_or(0, |c| c.received)
    }

    /// Console bytes dropped from memory because the buffer was full (not from the log file).
    /// Each overflow is also logged (a warning when bytes start being dropped, again only after
    /// the buffer was emptied by reading it).
    pub fn console_bytes_dropped(&self) -> u64 {
        self.console.as_ref().map_or(0, |c| c.buffer.dropped())
    }

    /// The console log file, if configured.
    pub fn console_log_path(&self) -> Option<&Path> {
        self.console.as_ref().and_then(|c| c.log_path.as_deref())
    }

    // ------------------------------------------------------------------------------------------
    // File descriptors
    // ------------------------------------------------------------------------------------------

    /// Passes `fd` to QEMU over the QMP socket (SCM_RIGHTS) and names it with `getfd`, so that
    /// later commands can refer to it by `name` (`fd=name` in chardev/netdev options).
    pub fn send_fd(&mut self, fd: BorrowedFd<'_>, name: &str) -> Result<(), Error> {
        self.execute_with_fd(fd, "getfd", Some(json!({ "fdname": name })))
            .map(|_| ())
    }

    /// Passes `fd` to QEMU and adds it to an fdset (`add-fd`): `fdset` picks the set (a new one
    /// when `None`), `opaque` is free-form text shown by `query-fdsets`.
    pub fn add_fd_at_runtime(
        &mut self,
        fd: BorrowedFd<'_>,
        fdset: Option<u64>,
        opaque: Option<&str>,
    ) -> Result<FdsetEntry, Error> {
        let mut args = serde_json::Map::new();
        if let Some(set) = fdset {
            args.insert("fdset-id".into(), json!(set));
        }
        if let Some(opaque) = opaque {
            args.insert("opaque".into(), json!(opaque));
        }
        let reply = self.execute_with_fd(fd, "add-fd", Some(Value::Object(args)))?;
        let fdset_id = reply.get("fdset-id").and_then(Value::as_u64);
        let fd = reply.get("fd").and_then(Value::as_i64);
        match (fdset_id, fd) {
            (Some(fdset_id), Some(fd)) => Ok(FdsetEntry { fdset_id, fd }),
            _ => Err(Error::Protocol(qmp_proto::Error::Reply {
                command: "add-fd".into(),
                message: format!("expected {{\"fdset-id\": N, \"fd\": M}}, got {reply}"),
            })),
        }
    }

    /// Sends one space (harmless between JSON messages) carrying `fd`, after everything queued,
    /// then the command that takes the descriptor.
    fn execute_with_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        name: &str,
        arguments: Option<Value>,
    ) -> Result<Value, Error> {
        self.ensure_qmp()?;
        if !self.qmp.unix {
            return Err(Error::Unsupported(
                "passing descriptors needs a unix socket, not TCP".into(),
            ));
        }
        let deadline = Deadline::after(self.qmp_timeout);
        self.qmp.force_writable = true;
        let sent = self.run_until(
            deadline,
            || "the QMP socket to accept a descriptor".to_owned(),
            |m| {
                if !m.qmp_usable() {
                    return Some(Err(m.connection_error()));
                }
                if !m.qmp.session.transmit().is_empty() {
                    return None; // earlier bytes go first
                }
                let sock = m.qmp.fd.as_ref().expect("usable").as_fd();
                match sys::send_with_fd(sock, b" ", fd) {
                    Ok(_) => Some(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) => Some(Err(Error::io("passing a descriptor to QEMU", e))),
                }
            },
        );
        self.qmp.force_writable = false;
        sent?;
        log::debug!("QMP: passed descriptor {} for {name}", fd.as_raw_fd());
        let timeout = deadline.remaining().unwrap_or(self.qmp_timeout);
        self.execute_with_timeout(name, arguments, timeout)
    }

    // ------------------------------------------------------------------------------------------
    // Power and run state
    // ------------------------------------------------------------------------------------------

    /// The VM's run state (`query-status`).
    pub fn status(&mut self) -> Result<RunState, Error> {
        let reply = self.execute("query-status", None)?;
        let status = reply.get("status").cloned().unwrap_or(Value::Null);
        serde_json::from_value(status).map_err(|e| {
            Error::Protocol(qmp_proto::Error::Reply {
                command: "query-status".into(),
                message: e.to_string(),
            })
        })
    }

    /// Pauses the VM (`stop`).
    pub fn pause(&mut self) -> Result<(), Error> {
        self.execute("stop", None).map(|_| ())
    }

    /// Resumes the VM (`cont`).
    pub fn resume(&mut self) -> Result<(), Error> {
        self.execute("cont", None).map(|_| ())
    }

    /// Resets the VM (`system_reset`); a RESET event follows.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.execute("system_reset", None).map(|_| ())
    }

    /// Presses the ACPI power button (`system_powerdown`) and waits for the guest to shut down
    /// (the SHUTDOWN event, which is returned). A guest that ignores the request is reported as
    /// [`Error::Timeout`]. Only SHUTDOWN events that arrive after the request count.
    pub fn powerdown(&mut self, timeout: Duration) -> Result<Event, Error> {
        let deadline = Deadline::after(timeout);
        self.set_event_waiter(vec![(Some("SHUTDOWN".to_owned()), None)]);
        if let Err(e) = self.execute_with_timeout("system_powerdown", None, timeout) {
            self.event_waiter = None;
            self.event_matched = None;
            return Err(e);
        }
        self.finish_event_wait(deadline)
    }

    // ------------------------------------------------------------------------------------------
    // Shutdown
    // ------------------------------------------------------------------------------------------

    fn child_or_unsupported(&self, what: &str) -> Result<&ChildProc, Error> {
        self.child.as_ref().ok_or_else(|| {
            Error::Unsupported(format!(
                "{what} of an attached machine (it is not our process; execute quit instead)"
            ))
        })
    }

    /// Asks QEMU to exit: `quit` over QMP, or SIGTERM when QMP is unusable. Does not wait.
    pub(crate) fn begin_shutdown(&mut self) {
        let Some(child) = &self.child else { return };
        if child.status().is_some() {
            return;
        }
        log::info!("shutting down QEMU (pid {})", child.pid());
        if self.qmp_usable() {
            log::debug!("QMP -> quit");
            match self.qmp.session.execute("quit", None) {
                Ok(id) => {
                    self.abandoned.push(id);
                    self.flush_qmp();
                    if !self.qmp.write_failed {
                        return;
                    }
                }
                Err(e) => log::debug!("could not queue quit: {e}"),
            }
        }
        if let Some(child) = &self.child {
            log::info!(
                "QMP unusable: sending SIGTERM to QEMU (pid {})",
                child.pid()
            );
            if let Err(e) = child.signal(libc::SIGTERM) {
                log::warn!("SIGTERM to QEMU failed: {e}");
            }
        }
    }

    /// Shuts QEMU down gracefully: `quit` (or SIGTERM without QMP), then waits for the exit
    /// until `timeout`. If QEMU is still there, it is killed and reaped and
    /// [`Error::NotGraceful`] is returned. QEMU's exit status and log stay readable afterwards.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.child_or_unsupported("shutdown")?;
        if let Some(status) = self.exit_status_now() {
            return Ok(status);
        }
        let deadline = Deadline::after(timeout);
        self.begin_shutdown();
        match self.wait_exit(deadline, "QEMU to exit after quit") {
            Ok(status) => Ok(status),
            Err(e) => {
                log::warn!("QEMU did not shut down gracefully ({e}); killing it");
                let status = self.kill()?;
                Err(Error::NotGraceful { status })
            }
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it. Returns the exit status (already exited: its status).
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        self.child_or_unsupported("kill")?;
        if let Some(status) = self.exit_status_now() {
            return Ok(status);
        }
        let child = self.child.as_mut().expect("checked");
        log::warn!("killing QEMU (pid {})", child.pid());
        match child.kill_and_reap(KILL_REAP_LIMIT) {
            Ok(Some(_)) => Ok(self.exit_status_now().expect("reaped")),
            Ok(None) => Err(Error::Timeout {
                what: "QEMU to die after SIGKILL".into(),
                after: KILL_REAP_LIMIT,
            }),
            Err(e) => Err(Error::io("killing QEMU", e)),
        }
    }

    /// Waits for QEMU to exit on its own (a guest that powers off) until `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.child_or_unsupported("wait")?;
        self.wait_exit(Deadline::after(timeout), "QEMU to exit")
    }

    fn wait_exit(&mut self, deadline: Deadline, what: &str) -> Result<ExitStatus, Error> {
        self.run_until(
            deadline,
            || what.to_owned(),
            |m| m.exit_status_now().map(Ok),
        )
    }

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

    /// Changes the bound of kept events.
    pub fn set_max_events(&mut self, limit: usize) {
        self.max_events = limit.max(1);
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
        }
    }

    /// Takes the next kept event, if any (no I/O).
    pub(crate) fn pop_event(&mut self) -> Option<Event> {
        let event = self.kept.pop_front();
        if self.kept.is_empty() {
            self.events_overflowing = false;
        }
        event
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
        // The temp dir (and log) go when the fields drop, after the process is gone.
    }
}

// ----------------------------------------------------------------------------------------------
// Attach: connecting with retries
// ----------------------------------------------------------------------------------------------

/// The session of an attached machine: like a launched one's defaults, asking for `oob`
/// and sending ids only with `exec-oob` commands (see [`MachineConfig::qmp_ids`](crate::MachineConfig::qmp_ids)).
fn attach_session() -> Session {
    Session::new(SessionOptions {
        oob: true,
        in_band_ids: false,
        ..SessionOptions::default()
    })
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ENOENT | libc::EAGAIN | libc::ECONNRESET)
    )
}

/// Waits `d` without busy-looping: poll(2) with no descriptors.
fn pause_for(d: Duration) {
    let ms = libc::c_int::try_from(d.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll with a null array and nfds 0 only waits for the timeout.
    unsafe {
        libc::poll(std::ptr::null_mut(), 0, ms);
    }
}

fn connect_with_retry(target: &AttachTarget, deadline: Deadline) -> Result<(OwnedFd, bool), Error> {
    let mut backoff = Duration::from_millis(5);
    let mut last_error: Option<io::Error>;
    loop {
        let attempt = match target {
            AttachTarget::Unix(path) => connect_unix(path).map(|fd| (fd, true)),
            AttachTarget::Tcp(addr) => connect_tcp(*addr, deadline).map(|fd| (fd, false)),
        };
        match attempt {
            Ok(conn) => return Ok(conn),
            Err(e) if retryable(&e) => {
                log::debug!("connecting to {target:?}: {e}; retrying");
                last_error = Some(e);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last_error = Some(e);
            }
            Err(e) => {
                return Err(Error::io(format!("connecting to {target:?}"), e));
            }
        }
        match deadline.remaining() {
            Some(left) if left.is_zero() => {
                return Err(Error::Timeout {
                    what: format!(
                        "the QMP server at {target:?} to accept a connection (last error: {})",
                        last_error.map(|e| e.to_string()).unwrap_or_default()
                    ),
                    after: deadline.total(),
                });
            }
            Some(left) => pause_for(backoff.min(left)),
            None => pause_for(backoff),
        }
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

fn connect_unix(path: &Path) -> io::Result<OwnedFd> {
    // sun_path holds 107 bytes and a NUL; longer paths go through the directory's descriptor.
    if path.as_os_str().len() < 100 {
        return mio::net::UnixStream::connect(path).map(OwnedFd::from);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a socket path",
        ));
    };
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
    let mut short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    short.push(name);
    mio::net::UnixStream::connect(&short).map(OwnedFd::from)
}

fn connect_tcp(addr: std::net::SocketAddr, deadline: Deadline) -> io::Result<OwnedFd> {
    let mut stream = mio::net::TcpStream::connect(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut stream, Token(0), Interest::WRITABLE)?;
    let mut events = Events::with_capacity(1);
    loop {
        match poll.poll(&mut events, deadline.remaining()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                poll.registry().deregister(&mut stream)?;
                return Ok(OwnedFd::from(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                if deadline.remaining() == Some(Duration::ZERO) {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;

    fn assert_send<T: Send>() {}

    #[test]
    fn machines_can_move_between_threads() {
        assert_send::<Machine>();
        assert_send::<crate::MachineSet>();
    }

    #[test]
    fn deadlines() {
        assert_eq!(
            Deadline::after(Duration::ZERO).remaining(),
            Some(Duration::ZERO)
        );
        assert_eq!(Deadline::after(Duration::MAX).remaining(), None);
        let d = Deadline::after(Duration::from_secs(60));
        assert!(d.remaining().unwrap() > Duration::from_secs(59));
        assert_eq!(d.total(), Duration::from_secs(60));
    }

    /// A scripted QMP server on a socketpair: greets, negotiates, then answers each request
    /// with `answer(name, id)` (None: close the connection without answering).
    /// `reply` with the request's `id`, when it had one: like QEMU, no id in the reply to a
    /// request without id.
    fn with_id(mut reply: Value, id: &Value) -> Value {
        if !id.is_null() {
            reply["id"] = id.clone();
        }
        reply
    }

    fn peer(
        answer: impl Fn(&str, &Value) -> Option<String> + Send + 'static,
    ) -> (Machine, std::thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(theirs);
            reader
                .get_mut()
                .write_all(
                    b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \
                      \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n",
                )
                .unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let request: Value = serde_json::from_str(line.trim()).unwrap();
                let name = request["execute"]
                    .as_str()
                    .or(request["exec-oob"].as_str())
                    .unwrap()
                    .to_owned();
                let reply = if name == "qmp_capabilities" {
                    Some(with_id(json!({"return": {}}), &request["id"]).to_string() + "\r\n")
                } else {
                    answer(&name, &request["id"])
                };
                match reply {
                    Some(text) => {
                        // A NUL in the answer: pause there, so what follows arrives later.
                        for (i, part) in text.split('\0').enumerate() {
                            if i > 0 {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if reader.get_mut().write_all(part.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                    None => return,
                }
                line.clear();
            }
        });
        let machine = Machine::attach_socket(OwnedFd::from(ours), Duration::from_secs(10)).unwrap();
        (machine, thread)
    }

    #[test]
    fn quit_closed_before_the_reply_is_success() {
        let (mut vm, thread) = peer(|_, _| None);
        assert!(vm.oob_enabled());
        assert_eq!(vm.execute("quit", None).unwrap(), json!({}));
        thread.join().unwrap();
        // Any other command on the closed connection is an error.
        assert!(matches!(
            vm.execute("query-status", None),
            Err(Error::Disconnected)
        ));
    }

    #[test]
    fn quit_answered_then_closed_is_success() {
        let (mut vm, thread) = peer(|name, id| {
            assert_eq!(name, "quit");
            Some(
                "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, \"event\": \"SHUTDOWN\", \
                 \"data\": {\"guest\": false}}\r\n"
                    .to_owned()
                    + &with_id(json!({"return": {}}), id).to_string()
                    + "\r\n",
            )
        });
        assert_eq!(vm.execute("quit", None).unwrap(), json!({}));
        let event = vm
            .event_wait(
                "SHUTDOWN",
                Some(&json!({"data": {"guest": false}})),
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(event.timestamp.seconds, 1);
        drop(vm);
        thread.join().unwrap();
    }

    #[test]
    fn an_error_reply_is_typed_and_oob_goes_out_as_exec_oob() {
        let (mut vm, thread) = peer(|name, id| {
            Some(if name == "migrate-pause" {
                with_id(json!({"return": {"oob": true}}), id).to_string() + "\r\n"
            } else {
                with_id(
                    json!({"error": {"class": "DeviceNotFound", "desc": "no such thing"}}),
                    id,
                )
                .to_string()
                    + "\r\n"
            })
        });
        match vm.execute("device_del", Some(json!({"id": "x"}))) {
            Err(Error::Qmp(e)) => {
                assert_eq!(e.class, qmp_proto::ErrorClass::DeviceNotFound);
                assert_eq!(e.desc, "no such thing");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            vm.execute_oob("migrate-pause", None, Duration::from_secs(5))
                .unwrap(),
            json!({"oob": true})
        );
        drop(vm);
        thread.join().unwrap();
    }

    #[test]
    fn a_zero_timeout_still_takes_in_what_is_ready() {
        let (mut vm, thread) = peer(|_, id| {
            Some(
                with_id(json!({"return": {}}), id).to_string()
                    + "\r\n\0{\"event\": \"LATE\", \"timestamp\": \
                       {\"seconds\": 2, \"microseconds\": 3}}\r\n",
            )
        });
        vm.execute("anything", None).unwrap();
        // The event comes 50 ms after the reply; once it is in the socket, a zero-timeout
        // wait finds it.
        assert_eq!(vm.events_pending(), 0);
        std::thread::sleep(Duration::from_millis(200));
        let event = vm.event_wait("LATE", None, Duration::ZERO).unwrap();
        assert_eq!(event.timestamp.microseconds, 3);
        let err = vm.event_wait("LATE", None, Duration::ZERO).unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        drop(vm);
        thread.join().unwrap();
    }

    #[test]
    fn a_late_reply_after_a_timeout_is_discarded() {
        let (mut vm, thread) = peer(|name, id| {
            // An attached machine sends in-band commands without id: the replies come in
            // order, and the late one must still go to the command that timed out.
            assert!(id.is_null(), "{name} was sent with id {id}");
            if name == "slow" {
                std::thread::sleep(Duration::from_millis(300));
            }
            Some(with_id(json!({"return": name}), id).to_string() + "\r\n")
        });
        let err = vm
            .execute_with_timeout("slow", None, Duration::from_millis(50))
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        // The next command gets its own reply, not the late one.
        assert_eq!(vm.execute("fast", None).unwrap(), json!("fast"));
        assert!(vm.abandoned.is_empty());
        drop(vm);
        thread.join().unwrap();
    }
}
