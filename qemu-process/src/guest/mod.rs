//! The QEMU guest agent (qemu-ga): [`Guest`], its typed calls, and [`GuestAgent`] for an agent
//! reached over a socket of one's own.
//!
//! A VM whose description sets `guest_agent` (`"guest_agent": true` in JSON,
//! [`VmSpec::guest_agent`](qemu_cmdline::VmSpec::guest_agent)) gets a virtio-serial port named
//! `org.qemu.guest_agent.0`, on a socketpair the launcher owns (QEMU inherits its end, like the
//! QMP socket: no path, no race). [`Machine::guest`](crate::Machine::guest) then gives a
//! [`Guest`]: every call on it runs the machine's poll loop (QMP events kept, console drained)
//! until the agent answers or the call's deadline passes.
//!
//! # Synchronization
//!
//! The agent in the guest may have been started, restarted or left in the middle of a message
//! at any time, and bytes written while it was not running wait in the channel for the next
//! one. So the first call, and the first call after anything that may have desynchronized the
//! stream, sends `guest-sync-delimited` with a fresh random token after a `0xFF` byte (which
//! resets the agent's parser) and skips everything the agent sends up to the `0xFF` before its
//! answer. That happens on the first call, after a call timed out (the late reply is skipped
//! without being buffered), after the agent's port closed or reopened in the guest (QEMU's
//! `VSERPORT_CHANGE` event: an agent restart, a guest reboot), after the agent sent something
//! unreadable, and after a reconnection.
//!
//! A guest with no agent running answers nothing: the call fails with [`Error::Timeout`]
//! naming `guest-sync-delimited`, never hangs. A call whose agent goes away before answering
//! (its port closes) fails at once with [`Error::GuestAgentGone`]. An error the agent answers
//! is [`Error::GuestAgent`] (class and description).
//!
//! # Memory
//!
//! One message from the agent is bounded like a QMP message
//! ([`MachineConfig::max_message_size`](crate::MachineConfig::max_message_size), 10 MiB by
//! default): a larger reply is skipped without being buffered and fails its call with
//! [`Error::ReplyTooLarge`]. File copies stream in chunks of [`COPY_CHUNK`] bytes (smaller when
//! the message bound is), so a copy holds a few chunks in memory whatever the file's size.
//! The captured output of [`Guest::exec`] comes in one reply: output larger than about three
//! quarters of the bound fails with [`Error::ReplyTooLarge`] (write it to a file in the guest
//! and [`copy_out`](Guest::copy_out) it instead).
//!
//! ```no_run
//! use qemu_process::{ExecCommand, Machine, MachineConfig, VmLaunch};
//! use std::time::Duration;
//!
//! let vm = VmLaunch::from_json(r#"{"memory": "1G", "guest_agent": true,
//!     "disks": [{"path": "debian-12.qcow2", "format": "qcow2"}]}"#)?;
//! let mut vm = Machine::launch(&MachineConfig::for_vm(vm))?;
//! let mut guest = vm.guest()?.with_timeout(Duration::from_secs(90));
//! guest.ping()?; // waits for the agent to come up, up to 90 s
//! let out = guest.exec(&ExecCommand::new("uname").arg("-r"), Duration::from_secs(30))?;
//! println!("{} (exit {:?})", String::from_utf8_lossy(&out.stdout), out.exit_code);
//! guest.copy_in_file("local.tar".as_ref(), "/tmp/remote.tar")?;
//! # Ok::<(), qemu_process::Error>(())
//! ```

mod agent;
pub(crate) mod channel;
mod exec;
mod files;

use std::time::Duration;

use qmp_proto::guest::{
    decode_base64_into, encode_base64, ExecStatus, GuestExec, GuestExecStatus, GuestFileClose,
    GuestFileFlush, GuestFileOpen, GuestFileRead, GuestFileWrite, GuestGetHostName, GuestGetOsinfo,
    GuestInfo, GuestNetworkGetInterfaces, GuestPing,
};
use qmp_proto::{Command, ReplyError, RequestId};
use serde_json::Value;

pub use agent::GuestAgent;
use channel::{GuestChannel, SyncState};
pub use exec::{ExecCommand, ExecOutput};
pub use qmp_proto::guest::{
    AgentCommandInfo, AgentInfo, InterfaceStatistics, IpAddress, IpAddressType, NetworkInterface,
    OsInfo, ShutdownMode,
};

use crate::error::Error;
use crate::machine::Deadline;

/// The default deadline of one guest-agent call (each chunk of a copy is one call).
pub const DEFAULT_GUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The bytes one `guest-file-read` or `guest-file-write` of a copy carries: 256 KiB (about
/// 350 KB of base64 on the wire). Smaller when the message bound leaves less room.
pub const COPY_CHUNK: usize = 256 * 1024;

/// The first and the longest pause between two `guest-exec-status` polls of
/// [`Guest::exec_wait`].
const EXEC_POLL_FIRST: Duration = Duration::from_millis(5);
const EXEC_POLL_MAX: Duration = Duration::from_millis(250);

/// What drives a guest channel: a [`Machine`](crate::Machine) (its poll loop) or a standalone
/// [`GuestAgent`].
pub(crate) trait GuestHost {
    /// The channel; [`Error::Unsupported`] when there is none.
    fn guest_channel(&mut self) -> Result<&mut GuestChannel, Error>;
    /// Moves bytes (and whatever else the host drives) until `done` holds or the deadline
    /// passes; `Ok` either way. Looks at least once, even with a deadline already passed.
    fn guest_turns(
        &mut self,
        deadline: Deadline,
        done: &mut dyn FnMut(&GuestChannel) -> bool,
    ) -> Result<(), Error>;
    /// Why the channel's socket is closed (QEMU exited, the agent's connection ended).
    fn guest_gone(&mut self) -> Error;
    /// Opens the channel again after it closed, if the host can (a standalone agent reached
    /// by path); `Ok(false)` when it cannot.
    fn guest_reconnect(&mut self, deadline: Deadline) -> Result<bool, Error>;
}

/// The guest agent of a machine ([`Machine::guest`](crate::Machine::guest)) or of a
/// [`GuestAgent`]: typed calls, a raw one, exec and file copies.
///
/// Each call waits at most the guest timeout ([`DEFAULT_GUEST_TIMEOUT`], or
/// [`with_timeout`](Guest::with_timeout)), synchronization included (see the
/// [module documentation](crate::guest) on synchronization, errors and memory).
pub struct Guest<'a> {
    host: &'a mut dyn GuestHost,
    timeout: Duration,
    /// A limit on everything done through this value ([`Guest::with_deadline`]).
    overall: Option<Deadline>,
}

impl std::fmt::Debug for Guest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("timeout", &self.timeout)
            .field("overall", &self.overall.map(|d| d.remaining()))
            .finish_non_exhaustive()
    }
}

fn reply_shape_error(command: &str, message: String) -> Error {
    Error::Protocol(qmp_proto::Error::Reply {
        command: command.to_owned(),
        message,
    })
}

fn reply_error(command: &str, e: ReplyError) -> Error {
    match e {
        ReplyError::Qmp(error) => Error::GuestAgent {
            command: command.to_owned(),
            error,
        },
        ReplyError::TooLarge { size, limit } => Error::ReplyTooLarge {
            command: command.to_owned(),
            size,
            limit,
        },
        ReplyError::Closed => Error::GuestAgentGone {
            what: format!("the guest agent's channel closed before it answered {command}"),
        },
    }
}

/// The earlier of `deadline` and `timeout` from now.
fn within(deadline: Deadline, timeout: Duration) -> Deadline {
    match deadline.remaining() {
        Some(left) if left < timeout => Deadline::after(left),
        _ => Deadline::after(timeout),
    }
}

impl<'a> Guest<'a> {
    pub(crate) fn new(host: &'a mut dyn GuestHost) -> Guest<'a> {
        Guest {
            host,
            timeout: DEFAULT_GUEST_TIMEOUT,
            overall: None,
        }
    }

    /// The same guest with another deadline for each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Guest<'a> {
        self.timeout = timeout;
        self
    }

    /// The same guest with a limit on everything done through it from now: each call (each
    /// chunk of a copy, each poll of [`exec_wait`](Guest::exec_wait)) ends by `timeout` from
    /// now at the latest, whatever its own deadline. For a whole copy under one deadline.
    pub fn with_deadline(mut self, timeout: Duration) -> Guest<'a> {
        self.overall = Some(Deadline::after(timeout));
        self
    }

    /// The deadline of one call: the call timeout, within the overall limit if any.
    fn call_deadline(&self) -> Deadline {
        self.limit(Deadline::after(self.timeout))
    }

    /// `deadline`, or the overall limit if that comes first.
    fn limit(&self, deadline: Deadline) -> Deadline {
        match (self.overall, deadline.remaining()) {
            (Some(overall), Some(left)) => within(overall, left),
            (Some(overall), None) => overall,
            (None, _) => deadline,
        }
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    // ------------------------------------------------------------------------------------------
    // Synchronization and one request
    // ------------------------------------------------------------------------------------------

    /// Makes sure the stream is synchronized with the agent (see the module documentation),
    /// reconnecting first when the host can.
    fn ready(&mut self, deadline: Deadline) -> Result<(), Error> {
        if self.host.guest_channel()?.fd.is_none() && !self.host.guest_reconnect(deadline)? {
            return Err(self.host.guest_gone());
        }
        loop {
            let c = self.host.guest_channel()?;
            let (id, token) = match c.sync {
                SyncState::Synced => return Ok(()),
                SyncState::Unsynced => {
                    c.resync_now();
                    match c.sync {
                        SyncState::Syncing { id, token } => (id, token),
                        _ => return Err(self.host.guest_gone()),
                    }
                }
                SyncState::Syncing { id, token } => (id, token),
            };
            let (epoch, closed) = (c.epoch, c.closed_count);
            self.host.guest_turns(deadline, &mut |c| {
                c.epoch != epoch
                    || c.closed_count != closed
                    || c.fd.is_none()
                    || c.session.has_reply(id)
                    || !c.session.is_pending(id)
            })?;
            let c = self.host.guest_channel()?;
            if c.fd.is_none() {
                return Err(self.host.guest_gone());
            }
            let reply = if c.epoch == epoch {
                c.session.take_reply(id)
            } else {
                None
            };
            match reply {
                Some(Ok(value)) if value.as_u64() == Some(token) => {
                    log::debug!("guest agent: synchronized (token {token})");
                    c.sync = SyncState::Synced;
                    return Ok(());
                }
                Some(Ok(value)) => {
                    c.sync = SyncState::Unsynced;
                    return Err(reply_shape_error(
                        "guest-sync-delimited",
                        format!("the agent echoed {value} instead of the token {token}"),
                    ));
                }
                Some(Err(e)) => {
                    c.sync = SyncState::Unsynced;
                    return Err(reply_error("guest-sync-delimited", e));
                }
                None => {}
            }
            let disturbed = c.epoch != epoch || c.closed_count != closed;
            if deadline.remaining() == Some(Duration::ZERO) {
                c.sync = SyncState::Unsynced;
                return Err(Error::Timeout {
                    what: "the guest agent to answer guest-sync-delimited (is qemu-ga running \
                           in the guest?)"
                        .into(),
                    after: deadline.total(),
                });
            }
            if disturbed || !c.session.is_pending(id) {
                // The agent's port closed or reopened, or it sent garbage: synchronize anew
                // (the request waits in the channel for the next agent if need be).
                c.sync = SyncState::Unsynced;
            }
        }
    }

    /// Sends a request (the stream synchronized) and returns its id and the channel's epoch.
    fn send(
        &mut self,
        name: &str,
        arguments: Option<Value>,
        deadline: Deadline,
    ) -> Result<(RequestId, u64, u64), Error> {
        // Take in what the agent sent since the last call first (without waiting): stale
        // garbage resets the session and a closed connection is seen, before this request
        // goes out rather than during its wait.
        self.host
            .guest_turns(Deadline::after(Duration::ZERO), &mut |_| false)?;
        let c = self.host.guest_channel()?;
        if c.sync == SyncState::Synced && c.session.pending() == 0 && c.session.is_mid_message() {
            // Part of a message nobody asked for: a previous agent cut off mid-reply, or
            // garbage. A reply would be swallowed by it; the resynchronization cuts it.
            log::debug!("guest agent: stale partial output; resynchronizing");
            c.sync = SyncState::Unsynced;
        }
        self.ready(deadline)?;
        let c = self.host.guest_channel()?;
        log::debug!(
            "guest agent -> {name} {}",
            arguments
                .as_ref()
                .map(|a| excerpt(&a.to_string()))
                .unwrap_or_default()
        );
        match c.session.execute(name, arguments) {
            Ok(id) => Ok((id, c.epoch, c.closed_count)),
            Err(e @ qmp_proto::Error::InvalidCommandName { .. }) => {
                Err(Error::InvalidArgument(e.to_string()))
            }
            Err(e @ qmp_proto::Error::Arguments { .. }) => {
                Err(Error::InvalidArgument(e.to_string()))
            }
            Err(qmp_proto::Error::Closed) => Err(self.host.guest_gone()),
            Err(e) => Err(Error::Protocol(e)),
        }
    }

    /// Waits for the reply to `id` until `deadline`.
    fn await_reply(
        &mut self,
        name: &str,
        (id, epoch, closed): (RequestId, u64, u64),
        deadline: Deadline,
    ) -> Result<Value, Error> {
        self.host.guest_turns(deadline, &mut |c| {
            c.epoch != epoch
                || c.closed_count != closed
                || c.fd.is_none()
                || c.session.has_reply(id)
                || !c.session.is_pending(id)
        })?;
        let c = self.host.guest_channel()?;
        if c.epoch == epoch {
            if let Some(reply) = c.session.take_reply(id) {
                let result = reply.map_err(|e| reply_error(name, e));
                if let Err(e) = &result {
                    log::debug!("guest agent <- {name}: {e}");
                }
                return result;
            }
        }
        if c.fd.is_none() {
            return Err(self.host.guest_gone());
        }
        if c.epoch != epoch {
            let fault = c.last_fault.clone().unwrap_or_default();
            return Err(Error::Protocol(qmp_proto::Error::Protocol(format!(
                "the guest agent's reply to {name} was lost: {fault}"
            ))));
        }
        if c.closed_count != closed {
            return Err(Error::GuestAgentGone {
                what: format!(
                    "the guest agent's port closed before it answered {name} (the agent \
                     stopped, or the guest is rebooting or shutting down); whether {name} took \
                     effect is unknown"
                ),
            });
        }
        if !c.session.is_pending(id) {
            return Err(Error::GuestAgentGone {
                what: format!("the request {name} was dropped by a resynchronization"),
            });
        }
        // Whatever the agent says later about this request is skipped, unread.
        c.resync_now();
        Err(Error::Timeout {
            what: format!("the guest agent's reply to {name}"),
            after: deadline.total(),
        })
    }

    fn call(
        &mut self,
        name: &str,
        arguments: Option<Value>,
        deadline: Deadline,
    ) -> Result<Value, Error> {
        let sent = self.send(name, arguments, deadline)?;
        self.await_reply(name, sent, deadline)
    }

    fn typed_within<C: Command>(
        &mut self,
        command: &C,
        deadline: Deadline,
    ) -> Result<C::Returns, Error> {
        let arguments = serde_json::to_value(command)
            .map_err(|e| Error::InvalidArgument(format!("the arguments of {}: {e}", C::NAME)))?;
        let arguments = match arguments {
            Value::Object(map) if !map.is_empty() => Some(Value::Object(map)),
            _ => None,
        };
        let value = self.call(C::NAME, arguments, deadline)?;
        qmp_proto::parse_reply::<C>(value).map_err(Error::Protocol)
    }

    // ------------------------------------------------------------------------------------------
    // Calls
    // ------------------------------------------------------------------------------------------

    /// Runs any agent command by name, with arguments (a JSON object) or none, and returns its
    /// `return` value. A name that cannot be a command, or arguments that are not an object,
    /// are [`Error::InvalidArgument`] before anything is sent.
    ///
    /// `guest-shutdown` (which answers nothing on success) goes through
    /// [`shutdown`](Guest::shutdown); `guest-sync-delimited` and `guest-sync` are the
    /// library's own.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        if matches!(
            command,
            "guest-shutdown" | "guest-sync-delimited" | "guest-sync"
        ) {
            return Err(Error::InvalidArgument(format!(
                "{command} is not run through execute: use Guest::shutdown for guest-shutdown; \
                 synchronization is done by the library"
            )));
        }
        self.call(command, arguments, self.call_deadline())
    }

    /// Runs a typed command (see [`qmp_proto::guest`]) and decodes its reply.
    pub fn command<C: Command>(&mut self, command: &C) -> Result<C::Returns, Error> {
        self.typed_within(command, self.call_deadline())
    }

    /// Synchronizes with the agent now (`guest-sync-delimited`), even if the stream looks
    /// synchronized.
    pub fn sync(&mut self) -> Result<(), Error> {
        let deadline = self.call_deadline();
        let c = self.host.guest_channel()?;
        if c.fd.is_some() {
            c.sync = SyncState::Unsynced;
        }
        self.ready(deadline)
    }

    /// `guest-ping`: succeeds when the agent answers. The way to wait for an agent to come up
    /// is a ping with a long enough timeout.
    pub fn ping(&mut self) -> Result<(), Error> {
        self.command(&GuestPing).map(|_| ())
    }

    /// `guest-info`: the agent's version and commands.
    pub fn info(&mut self) -> Result<AgentInfo, Error> {
        self.command(&GuestInfo)
    }

    /// `guest-get-osinfo`: the guest's operating system.
    pub fn osinfo(&mut self) -> Result<OsInfo, Error> {
        self.command(&GuestGetOsinfo)
    }

    /// `guest-get-host-name`: the guest's host name.
    pub fn host_name(&mut self) -> Result<String, Error> {
        self.command(&GuestGetHostName).map(|h| h.host_name)
    }

    /// `guest-network-get-interfaces`: the guest's interfaces, addresses and counters.
    pub fn network_interfaces(&mut self) -> Result<Vec<NetworkInterface>, Error> {
        self.command(&GuestNetworkGetInterfaces)
    }

    // ------------------------------------------------------------------------------------------
    // Power
    // ------------------------------------------------------------------------------------------

    /// Asks the guest to power down, reboot or halt (`guest-shutdown`).
    ///
    /// qemu-ga answers `guest-shutdown` only when it fails, so this sends a `guest-ping` right
    /// behind it and returns `Ok` when the ping's answer arrives with none before it (the agent
    /// answers in order: the shutdown program succeeded), or when the guest shows it is going
    /// down first: the agent's port closes, QEMU reports `SHUTDOWN` or `RESET`, or QEMU exits
    /// (or, for a [`GuestAgent`], the connection ends). An error answer is
    /// [`Error::GuestAgent`]; no sign of either within the guest timeout is
    /// [`Error::Timeout`].
    ///
    /// What follows is the guest's: on a [`Machine`](crate::Machine), wait for the `SHUTDOWN`
    /// event (`{"data": {"guest": true}}`) and QEMU's exit after
    /// [`ShutdownMode::Powerdown`], for `RESET` after [`ShutdownMode::Reboot`] (the agent
    /// comes back with the guest; the next call resynchronizes). After
    /// [`ShutdownMode::Halt`] QEMU reports nothing and keeps running.
    pub fn shutdown(&mut self, mode: ShutdownMode) -> Result<(), Error> {
        let deadline = self.call_deadline();
        let (shutdown, epoch, closed) = self.send(
            "guest-shutdown",
            Some(serde_json::json!({"mode": mode.as_str()})),
            deadline,
        )?;
        let c = self.host.guest_channel()?;
        let ping = match c.session.execute(GuestPing::NAME, None) {
            Ok(id) => id,
            Err(e) => return Err(Error::Protocol(e)),
        };
        let down = c.down_count;
        self.host.guest_turns(deadline, &mut |c| {
            c.epoch != epoch
                || c.closed_count != closed
                || c.down_count != down
                || c.fd.is_none()
                || c.session.has_reply(shutdown)
                || c.session.has_reply(ping)
        })?;
        let c = self.host.guest_channel()?;
        if c.epoch == epoch {
            if let Some(reply) = c.session.take_reply(shutdown) {
                c.abandon(ping);
                return match reply {
                    Ok(_) => Ok(()),
                    Err(e) => Err(reply_error("guest-shutdown", e)),
                };
            }
            if c.session.take_reply(ping).is_some() {
                log::debug!("guest agent: {} accepted ({mode})", "guest-shutdown");
                c.abandon(shutdown);
                // The shutdown request stays pending at the session forever: start afresh.
                c.sync = SyncState::Unsynced;
                return Ok(());
            }
        }
        let gone = c.fd.is_none() || c.closed_count != closed || c.down_count != down;
        if gone {
            log::debug!("guest agent: the guest is going down after guest-shutdown ({mode})");
            if c.fd.is_some() {
                c.sync = SyncState::Unsynced;
            }
            return Ok(());
        }
        if c.epoch != epoch {
            let fault = c.last_fault.clone().unwrap_or_default();
            return Err(Error::Protocol(qmp_proto::Error::Protocol(format!(
                "the guest agent's answer to guest-shutdown was lost: {fault}"
            ))));
        }
        c.resync_now();
        Err(Error::Timeout {
            what: "the guest agent to take guest-shutdown (its answer to the guest-ping sent \
                   after it)"
                .into(),
            after: deadline.total(),
        })
    }
}

/// At most 200 characters of a request's arguments, for log lines (file chunks are long).
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}
