//! QMP commands: in band, out of band, typed, and with a descriptor attached.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use std::time::Duration;

use qmp_proto::commands::{AddFd, Getfd};
use qmp_proto::{Command, ReplyError, RequestId};
use serde_json::Value;

use super::{Deadline, FdsetEntry, Machine};
use crate::error::Error;
use crate::sys;

impl Machine {
    // ------------------------------------------------------------------------------------------
    // QMP commands
    // ------------------------------------------------------------------------------------------

    /// Executes a QMP command under the default deadline and returns its `return` value, its
    /// members in the order QEMU sent them, its numbers as QEMU wrote them (every double
    /// decodes to the same bits).
    ///
    /// An error reply is [`Error::Qmp`] (class and description); a reply larger than
    /// [`MachineConfig::max_message_size`](crate::MachineConfig::max_message_size) is
    /// [`Error::ReplyTooLarge`] (the connection stays usable); no reply in time is
    /// [`Error::Timeout`]; a connection that closes first is [`Error::Exited`] or
    /// [`Error::Disconnected`] — except for `quit`, where QEMU closing the connection is the
    /// expected answer and returns `Ok({})`. A name that cannot be a QMP command (QAPI's naming
    /// rules; at most 1024 bytes) is refused before anything is sent, with
    /// [`Error::InvalidArgument`].
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
    pub(super) fn send_and_await(
        &mut self,
        name: &str,
        arguments: Option<Value>,
        timeout: Duration,
        oob: bool,
    ) -> Result<Value, Error> {
        let id = self.send_command(name, arguments, oob)?;
        self.await_reply(id, name, Deadline::after(timeout))
    }

    /// Queues a command in band or out of band and writes what the socket takes now, without
    /// waiting for the reply (see [`reply_to`](Machine::reply_to)).
    pub(crate) fn send_command(
        &mut self,
        name: &str,
        arguments: Option<Value>,
        oob: bool,
    ) -> Result<RequestId, Error> {
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
        match sent {
            Ok(id) => {
                self.flush_qmp();
                Ok(id)
            }
            Err(e) => Err(self.session_error(e)),
        }
    }

    /// The reply to command `id` (named `name`) if it has arrived, or the connection's end if
    /// it never will; `None` while it may still come. Does no I/O.
    pub(crate) fn reply_to(&mut self, id: RequestId, name: &str) -> Option<Result<Value, Error>> {
        if let Some(reply) = self.qmp.session.take_reply(id) {
            return Some(reply.map_err(|e| match e {
                ReplyError::Qmp(e) => Error::Qmp(e),
                ReplyError::TooLarge { size, limit } => Error::ReplyTooLarge {
                    command: name.to_owned(),
                    size,
                    limit,
                },
                ReplyError::Closed => self.connection_error(),
            }));
        }
        // The session answers `quit` itself when QEMU closes the connection, and closes every
        // other command, so this only guards against a wait on a command the session no
        // longer knows.
        if self.qmp.fd.is_none() {
            return Some(Err(self.connection_error()));
        }
        None
    }

    /// Gives up on command `id`: its reply, if it ever comes, is discarded by the session.
    pub(crate) fn abandon(&mut self, id: RequestId) {
        self.qmp.session.abandon(id);
    }

    /// Executes a typed command (see `qmp_proto::commands`) and decodes its reply.
    pub fn command<C: Command>(&mut self, command: &C) -> Result<C::Returns, Error> {
        self.command_until(command, Deadline::after(self.qmp_timeout))
    }

    /// [`command`](Machine::command) under `deadline`.
    pub(super) fn command_until<C: Command>(
        &mut self,
        command: &C,
        deadline: Deadline,
    ) -> Result<C::Returns, Error> {
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
        let value = self.await_reply(id, C::NAME, deadline)?;
        qmp_proto::parse_reply::<C>(value).map_err(Error::Protocol)
    }

    pub(super) fn await_reply(
        &mut self,
        id: RequestId,
        name: &str,
        deadline: Deadline,
    ) -> Result<Value, Error> {
        self.flush_qmp();
        let result = self.run_until(
            deadline,
            || format!("the reply to {name}"),
            |m| m.reply_to(id, name),
        );
        match &result {
            Ok(value) => log::debug!("QMP <- {name}: {value}"),
            Err(Error::Qmp(e)) => log::debug!("QMP <- {name}: error {e}"),
            Err(e) => {
                if e.is_timeout() {
                    self.abandon(id);
                }
                log::debug!("QMP {name}: {e}");
            }
        }
        result
    }

    // ------------------------------------------------------------------------------------------
    // File descriptors
    // ------------------------------------------------------------------------------------------

    /// Passes `fd` to QEMU over the QMP socket (SCM_RIGHTS) and names it with `getfd`, so that
    /// later commands can refer to it by `name` (`fd=name` in chardev/netdev options).
    pub fn send_fd(&mut self, fd: BorrowedFd<'_>, name: &str) -> Result<(), Error> {
        let getfd = Getfd {
            fdname: name.to_owned(),
        };
        self.command_with_fd(fd, &getfd).map(|_| ())
    }

    /// Passes `fd` to QEMU and adds it to an fdset (`add-fd`): `fdset` picks the set (a new one
    /// when `None`), `opaque` is free-form text shown by `query-fdsets`.
    ///
    /// QEMU's fdset ids are 64-bit signed: a larger `fdset` is refused before anything is sent,
    /// with [`Error::InvalidArgument`].
    pub fn add_fd_at_runtime(
        &mut self,
        fd: BorrowedFd<'_>,
        fdset: Option<u64>,
        opaque: Option<&str>,
    ) -> Result<FdsetEntry, Error> {
        let fdset_id = fdset
            .map(|set| {
                i64::try_from(set).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "fdset id {set} is larger than QEMU's largest, {}",
                        i64::MAX
                    ))
                })
            })
            .transpose()?;
        let add_fd = AddFd {
            fdset_id,
            opaque: opaque.map(str::to_owned),
        };
        let info = self.command_with_fd(fd, &add_fd)?;
        let fdset_id = u64::try_from(info.fdset_id).map_err(|_| {
            Error::Protocol(qmp_proto::Error::Reply {
                command: AddFd::NAME.into(),
                message: format!("a negative fdset-id, {}", info.fdset_id),
            })
        })?;
        Ok(FdsetEntry {
            fdset_id,
            fd: info.fd,
        })
    }

    /// Sends one space (harmless between JSON messages) carrying `fd`, after everything queued,
    /// then the typed command that takes the descriptor, all under the default deadline.
    pub(super) fn command_with_fd<C: Command>(
        &mut self,
        fd: BorrowedFd<'_>,
        command: &C,
    ) -> Result<C::Returns, Error> {
        let name = C::NAME;
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
        self.command_until(command, Deadline::after(timeout))
    }
}
