//! `exec`: a command run in the guest through its guest agent, without holding up the
//! supervisor's loop while it runs.
//!
//! The command is started with one `guest-exec` (a short call, bounded by
//! [`AGENT_CALL_TIMEOUT`]); then the supervisor polls `guest-exec-status` from its own loop,
//! 10 ms apart at first and up to 250 ms apart, so that console clients, QMP clients and `stop`
//! are served meanwhile. The answer is an `ok` line with an [`ExecOutput`] header, followed by
//! the output's bytes as they are (binary-safe, not bound by the line limit).

use std::time::{Duration, Instant};

use qemu_process::{Error, ExecCommand};

use super::client::Kind;
use super::Supervisor;
use crate::vms::control::{self, ExecOutput};

/// How long one guest agent call (start, one status poll) may hold up the supervisor's loop.
const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause between status polls.
const POLL_FIRST: Duration = Duration::from_millis(10);
/// The longest pause between status polls.
const POLL_MAX: Duration = Duration::from_millis(250);

/// A command running in the guest for a client.
pub(super) struct RunningExec {
    /// The client that waits for it.
    client: u64,
    /// Its pid in the guest.
    pid: i64,
    /// The program, for messages.
    program: String,
    /// When the client stops waiting.
    deadline: Instant,
    /// The timeout the client gave, for messages.
    timeout: Duration,
    next_poll: Instant,
    pause: Duration,
}

impl Supervisor<'_> {
    /// Starts `argv` in the guest for client `id`; the client is answered when it ends, when
    /// `timeout` passes, or at once if it cannot start.
    pub(super) fn exec_request(&mut self, id: u64, argv: &[String], timeout: Duration) {
        match self.exec_start(id, argv, timeout) {
            Ok(running) => {
                if let Some(i) = self.index(id) {
                    self.clients[i].kind = Kind::Exec;
                    self.execs.push(running);
                }
            }
            Err(message) => self.answer(id, control::error_line(&message)),
        }
    }

    fn exec_start(
        &mut self,
        client: u64,
        argv: &[String],
        timeout: Duration,
    ) -> Result<RunningExec, String> {
        let name = self.name.clone();
        let Some((program, args)) = argv.split_first() else {
            return Err(format!("VM {name}: exec needs a command to run"));
        };
        if !self.machine.has_guest_agent() {
            return Err(format!(
                "VM {name}: cannot run {program:?}: the VM has no guest agent channel (it was \
                 started with --no-guest-agent, or from raw QEMU arguments)"
            ));
        }
        if self.machine.guest_agent_port_open() != Some(true) {
            return Err(format!(
                "VM {name}: cannot run {program:?}: no guest agent runs in the guest (it has \
                 not opened its port): install qemu-guest-agent in the guest and start it, or \
                 wait for the guest to finish booting"
            ));
        }
        let command = ExecCommand::new(program.as_str()).args(args);
        let pid = self
            .machine
            .guest()
            .and_then(|g| g.with_timeout(AGENT_CALL_TIMEOUT).exec_spawn(&command))
            .map_err(|e| agent_failure(&name, program, &e))?;
        log::info!("exec: {program:?} runs in the guest as pid {pid}");
        let now = Instant::now();
        Ok(RunningExec {
            client,
            pid,
            program: program.clone(),
            deadline: now + timeout,
            timeout,
            next_poll: now + POLL_FIRST,
            pause: POLL_FIRST,
        })
    }

    /// When the loop must wake up next for a running command.
    pub(super) fn exec_wakeup(&self) -> Option<Instant> {
        self.execs.iter().map(|e| e.next_poll.min(e.deadline)).min()
    }

    /// Polls the commands whose turn it is, and answers the clients of those that ended.
    /// Commands whose client went away are forgotten (they run on in the guest).
    pub(super) fn exec_poll(&mut self) {
        let live: Vec<u64> = self
            .clients
            .iter()
            .filter(|c| !c.dead && matches!(c.kind, Kind::Exec))
            .map(|c| c.id)
            .collect();
        self.execs.retain(|e| live.contains(&e.client));
        let now = Instant::now();
        let mut i = 0;
        while i < self.execs.len() {
            let e = &self.execs[i];
            if e.next_poll.min(e.deadline) > now {
                i += 1;
                continue;
            }
            let (client, pid) = (e.client, e.pid);
            let status = self
                .machine
                .guest()
                .and_then(|g| g.with_timeout(AGENT_CALL_TIMEOUT).exec_status(pid));
            let e = &mut self.execs[i];
            let answer = match status {
                Ok(Some(out)) => Some(finished(&out)),
                Ok(None) if Instant::now() >= e.deadline => Some(control::error_line(&format!(
                    "VM {}: {:?} did not end within {}: it still runs in the guest as pid {}",
                    self.name,
                    e.program,
                    crate::duration::show(e.timeout),
                    e.pid
                ))),
                Ok(None) => {
                    e.next_poll = Instant::now() + e.pause;
                    e.pause = (e.pause * 2).min(POLL_MAX);
                    None
                }
                Err(err) => Some(control::error_line(&agent_failure(
                    &self.name, &e.program, &err,
                ))),
            };
            match answer {
                Some(bytes) => {
                    self.execs.remove(i);
                    self.answer(client, bytes);
                }
                None => i += 1,
            }
        }
    }
}

/// The answer to a command that ended: the header line, then stdout and stderr.
fn finished(out: &qemu_process::ExecOutput) -> Vec<u8> {
    let header = ExecOutput {
        exit_code: out.exit_code.map(|c| i32::try_from(c).unwrap_or(i32::MAX)),
        signal: out.signal.map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
        stdout_len: out.stdout.len() as u64,
        stderr_len: out.stderr.len() as u64,
        stdout_truncated: out.stdout_truncated,
        stderr_truncated: out.stderr_truncated,
    };
    let mut bytes = control::ok_line(serde_json::json!(header));
    bytes.extend_from_slice(&out.stdout);
    bytes.extend_from_slice(&out.stderr);
    bytes
}

/// What a failed guest agent call means for `exec`.
fn agent_failure(name: &str, program: &str, e: &Error) -> String {
    match e {
        _ if e.is_timeout() => format!(
            "VM {name}: cannot run {program:?}: the guest agent did not answer ({e}); is \
             qemu-guest-agent running in the guest?"
        ),
        Error::GuestAgentGone { .. } => format!(
            "VM {name}: {program:?}: the guest agent went away ({e}); the guest may be \
             rebooting"
        ),
        _ => format!("VM {name}: {program:?}: {e}"),
    }
}
