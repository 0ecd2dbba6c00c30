//! Processes in the guest: `guest-exec` and `guest-exec-status`.

use std::time::Duration;

use super::*;

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

impl Guest<'_> {
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
}
