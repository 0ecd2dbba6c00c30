//! The poll loop every blocking call runs: output flushed, readiness awaited, QMP messages fed
//! to the session, the console drained, the child's exit taken in.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};

use std::process::ExitStatus;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::Interest;
use qmp_proto::SessionState;

use super::{Deadline, Machine, CHILD, CONSOLE, GUEST, QMP, QTEST};
use crate::error::Error;
use crate::sys;

impl Machine {
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
    pub(super) fn flush_console_log(&mut self) {
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
    pub(super) fn turn(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.flush_qmp();
        self.flush_console();
        self.flush_qtest();
        self.flush_guest();
        if let Err(e) = self.poll.poll(&mut self.mio_events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(Error::io("waiting for QEMU (epoll_wait)", e));
        }
        let (mut qmp_read, mut qmp_write, mut con_read, mut con_write, mut child) =
            (false, false, false, false, false);
        let (mut qmp_closed, mut con_closed) = (false, false);
        let (mut qtest_read, mut qtest_closed, mut qtest_write) = (false, false, false);
        let (mut guest_read, mut guest_write, mut guest_closed) = (false, false, false);
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
                QTEST => {
                    qtest_read |= read;
                    qtest_closed |= closed;
                    qtest_write |= write;
                }
                GUEST => {
                    guest_read |= read;
                    guest_closed |= closed;
                    guest_write |= write;
                }
                _ => {}
            }
        }
        if qmp_read {
            self.read_qmp(qmp_closed);
            // Before the agent's bytes: its port closing or the guest going down counts first.
            self.guest_observe_events();
        }
        if con_read {
            self.read_console(con_closed);
        }
        if qtest_read {
            self.read_qtest(qtest_closed);
        }
        if qtest_write {
            self.flush_qtest();
        }
        if qmp_write {
            self.flush_qmp();
        }
        if con_write {
            self.flush_console();
        }
        if guest_read {
            self.read_guest(guest_closed);
        }
        if guest_write {
            self.flush_guest();
        }
        if child {
            self.reap_now();
        }
        // What reaping read of QMP too.
        self.guest_observe_events();
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
    pub(super) fn read_qmp(&mut self, drain: bool) {
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
                    if let Err(e) = self.qmp.session.receive(&self.read_buf[..n]) {
                        // Only what ends the session ends the connection: a message over the
                        // size bound, for one, fails only the command it answers (the session
                        // handles it and stays ready).
                        if self.qmp.session.state() == SessionState::Closed {
                            self.qmp_fatal(e);
                            return;
                        }
                        log::warn!("QMP: {e}");
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

    /// The peer closed the connection (or reset it): the session settles what waits for a
    /// reply (`quit` answered, the rest closed).
    pub(super) fn qmp_eof(&mut self) {
        if let Err(e) = self.qmp.session.receive_eof() {
            log::warn!("QMP connection ended mid-message: {e}");
            if self.qmp.fatal.is_none() {
                self.qmp.fatal = Some(e);
            }
        }
        log::debug!("QMP connection closed by QEMU");
        self.close_qmp();
    }

    pub(super) fn qmp_fatal(&mut self, e: qmp_proto::Error) {
        log::warn!("QMP protocol error, closing the connection: {e}");
        if self.qmp.fatal.is_none() {
            self.qmp.fatal = Some(e);
        }
        self.close_qmp();
    }

    pub(super) fn close_qmp(&mut self) {
        if let Some(fd) = self.qmp.fd.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        self.qmp.interest_write = false;
    }

    pub(super) fn flush_qmp(&mut self) {
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
    pub(super) fn read_console(&mut self, drain: bool) {
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

    pub(super) fn flush_console(&mut self) {
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
    pub(super) fn reap_now(&mut self) {
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
            self.read_qtest(true);
            self.flush_console_log();
        }
        Some(status)
    }

    /// Why the connection cannot be used: a protocol error, QEMU's exit, or plain disconnection;
    /// for a machine launched without QMP, that.
    pub(super) fn connection_error(&mut self) -> Error {
        if !self.qmp_enabled {
            return Error::Unsupported(
                "this machine was launched without the library's QMP connection \
                 (MachineConfig::qmp(false))"
                    .into(),
            );
        }
        if let Some(e) = &self.qmp.fatal {
            return Error::Protocol(e.clone());
        }
        self.reap_now();
        match self.exit_status_now() {
            Some(status) => Error::Exited(status),
            None => Error::Disconnected,
        }
    }

    pub(super) fn qmp_usable(&self) -> bool {
        self.qmp.fd.is_some()
            && self.qmp.fatal.is_none()
            && !self.qmp.write_failed
            && self.qmp.session.is_ready()
    }

    pub(super) fn ensure_qmp(&mut self) -> Result<(), Error> {
        if self.qmp_usable() {
            Ok(())
        } else {
            Err(self.connection_error())
        }
    }

    pub(super) fn session_error(&mut self, e: qmp_proto::Error) -> Error {
        match e {
            qmp_proto::Error::Closed => self.connection_error(),
            // Refused before anything was sent: the caller's mistake, not QEMU's.
            e @ qmp_proto::Error::InvalidCommandName { .. } => {
                Error::InvalidArgument(e.to_string())
            }
            other => Error::Protocol(other),
        }
    }
}
