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

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
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

/// A program to run in the guest with [`Guest::exec`].
///
/// ```
/// use qemu_process::ExecCommand;
/// let cmd = ExecCommand::new("/bin/sh")
///     .args(["-c", "cat; echo done >&2"])
///     .input(b"hello\n".to_vec());
/// assert_eq!(cmd.get_args(), ["-c", "cat; echo done >&2"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    path: String,
    args: Vec<String>,
    env: Option<Vec<String>>,
    input: Option<Vec<u8>>,
    capture: bool,
}

impl ExecCommand {
    /// Runs `path`: a path in the guest, or a name the agent looks up in its `PATH`. Output is
    /// captured; standard input is empty (`/dev/null`).
    pub fn new(path: impl Into<String>) -> ExecCommand {
        ExecCommand {
            path: path.into(),
            args: Vec::new(),
            env: None,
            input: None,
            capture: true,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> ExecCommand {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> ExecCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a variable of the process's environment. Once any is set, the process gets
    /// exactly the variables set here (qemu-ga's rule); without any, it gets the agent's.
    pub fn env(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> ExecCommand {
        self.env
            .get_or_insert_with(Vec::new)
            .push(format!("{}={}", name.as_ref(), value.as_ref()));
        self
    }

    /// What the process reads on its standard input (sent base64-encoded in the request:
    /// for large inputs, [`copy_in`](Guest::copy_in) a file and redirect from it).
    pub fn input(mut self, bytes: impl Into<Vec<u8>>) -> ExecCommand {
        self.input = Some(bytes.into());
        self
    }

    /// Whether to capture standard output and error (default true); without, they go to
    /// `/dev/null` in the guest.
    pub fn capture_output(mut self, capture: bool) -> ExecCommand {
        self.capture = capture;
        self
    }

    /// The program.
    pub fn get_path(&self) -> &str {
        &self.path
    }

    /// The arguments.
    pub fn get_args(&self) -> &[String] {
        &self.args
    }

    fn request(&self) -> GuestExec {
        GuestExec {
            path: self.path.clone(),
            arg: self.args.clone(),
            env: self.env.clone().unwrap_or_default(),
            input_data: self.input.as_deref().map(encode_base64),
            capture_output: self.capture,
        }
    }
}

/// How a process run by [`Guest::exec`] ended, and what it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code, when the process exited normally.
    pub exit_code: Option<i64>,
    /// The signal that ended it, when one did.
    pub signal: Option<i64>,
    /// What it wrote on standard output (empty unless captured).
    pub stdout: Vec<u8>,
    /// What it wrote on standard error (empty unless captured).
    pub stderr: Vec<u8>,
    /// Whether the agent cut standard output at its bound (16 MiB for qemu-ga).
    pub stdout_truncated: bool,
    /// Whether the agent cut standard error at its bound.
    pub stderr_truncated: bool,
}

impl ExecOutput {
    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    fn from_status(status: ExecStatus) -> Result<ExecOutput, Error> {
        let decode = |data: Option<String>, what: &str| -> Result<Vec<u8>, Error> {
            let mut out = Vec::new();
            if let Some(text) = data {
                decode_base64_into(&text, &mut out).map_err(|e| {
                    reply_shape_error(GuestExecStatus::NAME, format!("{what}: {e}"))
                })?;
            }
            Ok(out)
        };
        Ok(ExecOutput {
            exit_code: status.exitcode,
            signal: status.signal,
            stdout: decode(status.out_data, "out-data")?,
            stderr: decode(status.err_data, "err-data")?,
            stdout_truncated: status.out_truncated.unwrap_or(false),
            stderr_truncated: status.err_truncated.unwrap_or(false),
        })
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
    // Processes
    // ------------------------------------------------------------------------------------------

    /// Starts `command` in the guest (`guest-exec`) and returns its pid there, without waiting.
    pub fn exec_spawn(&mut self, command: &ExecCommand) -> Result<i64, Error> {
        self.command(&command.request()).map(|started| started.pid)
    }

    /// One `guest-exec-status`: `None` while the process runs; its output once it has ended
    /// (the agent then forgets it: a second call for that pid is an agent error).
    pub fn exec_status(&mut self, pid: i64) -> Result<Option<ExecOutput>, Error> {
        self.exec_status_within(pid, self.call_deadline())
    }

    fn exec_status_within(
        &mut self,
        pid: i64,
        deadline: Deadline,
    ) -> Result<Option<ExecOutput>, Error> {
        let status = self.typed_within(&GuestExecStatus { pid }, deadline)?;
        if !status.exited {
            return Ok(None);
        }
        ExecOutput::from_status(status).map(Some)
    }

    /// Waits up to `timeout` for process `pid` to end, polling `guest-exec-status` (5 ms
    /// apart at first, up to 250 ms apart; the waits between polls run the machine's loop,
    /// keeping events and console output), and returns how it ended and its output. Each poll
    /// is also bounded by the guest timeout. On [`Error::Timeout`] the process still runs in
    /// the guest (kill it there, e.g. `exec` of `kill`), and a later `exec_wait` or
    /// `exec_status` can still collect it.
    pub fn exec_wait(&mut self, pid: i64, timeout: Duration) -> Result<ExecOutput, Error> {
        let deadline = self.limit(Deadline::after(timeout));
        let mut pause = EXEC_POLL_FIRST;
        let closed = self.host.guest_channel()?.closed_count;
        loop {
            let poll = within(deadline, self.timeout);
            match self.exec_status_within(pid, poll) {
                Ok(Some(output)) => return Ok(output),
                Ok(None) => {}
                Err(e) if e.is_timeout() && deadline.remaining() == Some(Duration::ZERO) => {
                    return Err(Error::Timeout {
                        what: format!("guest process {pid} to end"),
                        after: deadline.total(),
                    })
                }
                Err(e) => return Err(e),
            }
            if deadline.remaining() == Some(Duration::ZERO) {
                return Err(Error::Timeout {
                    what: format!("guest process {pid} to end"),
                    after: deadline.total(),
                });
            }
            self.host.guest_turns(within(deadline, pause), &mut |c| {
                c.fd.is_none() || c.closed_count != closed
            })?;
            if self.host.guest_channel()?.closed_count != closed {
                // A new agent does not know the processes of the one before.
                return Err(Error::GuestAgentGone {
                    what: format!(
                        "the guest agent's port closed while waiting for guest process {pid} \
                         (the agent stopped, or the guest is rebooting); its status is lost"
                    ),
                });
            }
            pause = (pause * 2).min(EXEC_POLL_MAX);
        }
    }

    /// Runs `command` in the guest and waits up to `timeout` for it to end
    /// ([`exec_spawn`](Guest::exec_spawn) then [`exec_wait`](Guest::exec_wait)).
    ///
    /// ```no_run
    /// # use qemu_process::{ExecCommand, Machine, MachineConfig};
    /// # use std::time::Duration;
    /// # let mut vm = Machine::launch(&MachineConfig::new("qemu-system-x86_64"))?;
    /// let out = vm.guest()?.exec(
    ///     &ExecCommand::new("/bin/sh").args(["-c", "echo $((6 * 7))"]),
    ///     Duration::from_secs(10),
    /// )?;
    /// assert_eq!(out.stdout, b"42\n");
    /// assert!(out.success());
    /// # Ok::<(), qemu_process::Error>(())
    /// ```
    pub fn exec(&mut self, command: &ExecCommand, timeout: Duration) -> Result<ExecOutput, Error> {
        let deadline = self.limit(Deadline::after(timeout));
        let started = self.typed_within(&command.request(), within(deadline, self.timeout))?;
        let left = deadline.remaining().unwrap_or(timeout);
        self.exec_wait(started.pid, left)
    }

    // ------------------------------------------------------------------------------------------
    // Files
    // ------------------------------------------------------------------------------------------

    /// Opens a file in the guest with an `fopen()` mode (`"r"`, `"w"`, `"a"`, `"r+"`, ...) and
    /// returns the agent's handle for it. Close it with [`file_close`](Guest::file_close).
    pub fn file_open(&mut self, path: &str, mode: &str) -> Result<i64, Error> {
        self.command(&GuestFileOpen {
            path: path.to_owned(),
            mode: Some(mode.to_owned()),
        })
    }

    /// Reads up to `count` bytes (at most 48 MiB, the agent's bound, and within the message
    /// bound once encoded) from an open file; the second value says whether the end of the
    /// file was reached.
    pub fn file_read(&mut self, handle: i64, count: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut out = Vec::new();
        let eof = self.file_read_into(handle, count, &mut out)?;
        Ok((out, eof))
    }

    fn file_read_into(
        &mut self,
        handle: i64,
        count: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let read = self.command(&GuestFileRead {
            handle,
            count: Some(count as u64),
        })?;
        let before = out.len();
        decode_base64_into(&read.buf_b64, out)
            .map_err(|e| reply_shape_error(GuestFileRead::NAME, format!("buf-b64: {e}")))?;
        let got = (out.len() - before) as u64;
        if got != read.count || got > count as u64 {
            return Err(reply_shape_error(
                GuestFileRead::NAME,
                format!(
                    "the agent said it read {} bytes, sent {got}, and was asked for at most \
                     {count}",
                    read.count
                ),
            ));
        }
        Ok(read.eof)
    }

    /// Writes `data` to an open file (all of it: a short write is continued) and returns how
    /// many bytes were written.
    pub fn file_write(&mut self, handle: i64, data: &[u8]) -> Result<u64, Error> {
        let mut written = 0usize;
        while written < data.len() {
            let rest = &data[written..];
            let wrote = self.command(&GuestFileWrite {
                handle,
                buf_b64: encode_base64(rest),
                count: None,
            })?;
            if wrote.count == 0 || wrote.count > rest.len() as u64 {
                return Err(reply_shape_error(
                    GuestFileWrite::NAME,
                    format!(
                        "the agent wrote {} of {} bytes (a full file system?)",
                        wrote.count,
                        rest.len()
                    ),
                ));
            }
            written += wrote.count as usize;
        }
        Ok(written as u64)
    }

    /// Flushes an open file's buffered writes.
    pub fn file_flush(&mut self, handle: i64) -> Result<(), Error> {
        self.command(&GuestFileFlush { handle }).map(|_| ())
    }

    /// Closes an open file.
    pub fn file_close(&mut self, handle: i64) -> Result<(), Error> {
        self.command(&GuestFileClose { handle }).map(|_| ())
    }

    /// The bytes one chunk of a copy carries: [`COPY_CHUNK`], or less when base64 of a chunk
    /// (plus the reply's framing) would not fit in the message bound.
    fn chunk(&mut self) -> Result<usize, Error> {
        let bound = self.host.guest_channel()?.max_message_size();
        Ok(COPY_CHUNK.min(bound.saturating_sub(1024) / 4 * 3).max(1))
    }

    /// After a failed copy, closes its handle if the stream is still in step (after a timeout
    /// or a lost agent the handle stays open in the agent until it restarts).
    fn close_after_error(&mut self, handle: i64) {
        let in_step = self
            .host
            .guest_channel()
            .map(|c| c.sync == SyncState::Synced && c.usable())
            .unwrap_or(false);
        if in_step {
            if let Err(e) = self.file_close(handle) {
                log::debug!("guest agent: closing handle {handle} after a failed copy: {e}");
            }
        }
    }

    /// Copies everything `from` yields into the file `guest_path` in the guest (created, or
    /// truncated), in chunks of [`COPY_CHUNK`] bytes (each one call, under the guest timeout),
    /// and returns the number of bytes copied. Memory stays at a few chunks whatever the size.
    /// The file's permissions are the agent's choice (qemu-ga: 0666 less its umask, or 0600
    /// in newer versions).
    pub fn copy_in(&mut self, from: &mut dyn Read, guest_path: &str) -> Result<u64, Error> {
        let chunk = self.chunk()?;
        let handle = self.file_open(guest_path, "w")?;
        let mut buf = vec![0u8; chunk];
        let mut total = 0u64;
        let result = loop {
            let n = match read_full(from, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    break Err(Error::io(
                        format!("reading what to copy to {guest_path} in the guest"),
                        e,
                    ))
                }
            };
            if n == 0 {
                break Ok(());
            }
            if let Err(e) = self.file_write(handle, &buf[..n]) {
                break Err(e);
            }
            total += n as u64;
        };
        match result {
            Ok(()) => {
                self.file_close(handle)?;
                Ok(total)
            }
            Err(e) => {
                self.close_after_error(handle);
                Err(e)
            }
        }
    }

    /// [`copy_in`](Guest::copy_in) from the host file `host_path`.
    pub fn copy_in_file(&mut self, host_path: &Path, guest_path: &str) -> Result<u64, Error> {
        let mut file = File::open(host_path)
            .map_err(Error::io_with(format!("opening {}", host_path.display())))?;
        self.copy_in(&mut file, guest_path)
    }

    /// Copies the file `guest_path` in the guest into `to`, in chunks of [`COPY_CHUNK`] bytes
    /// (each one call, under the guest timeout), and returns the number of bytes copied.
    /// Memory stays at a few chunks whatever the size.
    pub fn copy_out(&mut self, guest_path: &str, to: &mut dyn Write) -> Result<u64, Error> {
        let chunk = self.chunk()?;
        let handle = self.file_open(guest_path, "r")?;
        let mut buf = Vec::with_capacity(chunk);
        let mut total = 0u64;
        let result = loop {
            buf.clear();
            let eof = match self.file_read_into(handle, chunk, &mut buf) {
                Ok(eof) => eof,
                Err(e) => break Err(e),
            };
            if let Err(e) = to.write_all(&buf) {
                break Err(Error::io(
                    format!("writing what was copied from {guest_path} in the guest"),
                    e,
                ));
            }
            total += buf.len() as u64;
            if eof || buf.is_empty() {
                break Ok(());
            }
        };
        match result {
            Ok(()) => {
                self.file_close(handle)?;
                Ok(total)
            }
            Err(e) => {
                self.close_after_error(handle);
                Err(e)
            }
        }
    }

    /// [`copy_out`](Guest::copy_out) into the host file `host_path`, created (mode 0600) or
    /// truncated. The file is flushed to the kernel (not synced to disk) before this returns.
    pub fn copy_out_file(&mut self, guest_path: &str, host_path: &Path) -> Result<u64, Error> {
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(host_path)
            .map_err(Error::io_with(format!("creating {}", host_path.display())))?;
        let mut out = std::io::BufWriter::with_capacity(COPY_CHUNK, file);
        let n = self.copy_out(guest_path, &mut out)?;
        out.flush()
            .map_err(Error::io_with(format!("writing {}", host_path.display())))?;
        Ok(n)
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

/// Reads until `buf` is full or the end of `from`; returns how many bytes were read.
fn read_full(from: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match from.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// At most 200 characters of a request's arguments, for log lines (file chunks are long).
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}
