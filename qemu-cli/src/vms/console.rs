//! `qemu-machine console NAME`: the terminal on a started VM's serial console, through its
//! supervisor, until detached (Ctrl-] d, `--for`, a signal) or the VM stops. The VM keeps
//! running after a detach.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::json;

use super::control::{self, Request};
use super::state::{self, Entry};
use super::ConsoleArgs;
use crate::escape::{Action, EscapeParser, CONSOLE_HELP};
use crate::exit::{self, CliResult, Failure};
use crate::sys::{self, PollFd, Signals};
use crate::term::{self, RawMode};

const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;
/// Keyboard input kept while the supervisor does not take it.
const TO_VM_LIMIT: usize = 64 * 1024;

/// How the attachment ended.
enum End {
    /// Asked to detach (Ctrl-] d, `--for`).
    Detached,
    /// A signal.
    Signal(i32),
    /// The supervisor closed the connection: the VM stopped, or another client took over.
    Closed,
}

/// Runs `console`.
pub fn main(args: &ConsoleArgs, quiet: bool) -> CliResult {
    let (entry, _) = state::find(&args.name)?;
    let signals = Signals::install()
        .map_err(|e| Failure::failed(format!("installing signal handlers: {e}")))?;
    let (stream, _) = control::request(
        &entry,
        &Request::Console { force: args.force },
        Duration::from_secs(10),
    )?;
    stream
        .set_nonblocking(true)
        .map_err(|e| Failure::failed(format!("the console connection: {e}")))?;
    let interactive = term::is_tty(STDIN);
    if !quiet {
        let how = if interactive {
            "Ctrl-] d detaches (the VM keeps running), Ctrl-] ? lists the keys, Ctrl-C goes to \
             the guest"
        } else {
            "standard input goes to the guest; SIGINT or SIGTERM detaches"
        };
        term::message(&format!(
            "qemu-machine: attached to the console of VM {}; {how}",
            entry.name
        ));
    }
    let raw = RawMode::enter(STDIN)
        .map_err(|e| Failure::failed(format!("cannot set the terminal to raw mode: {e}")))?;
    let mut attached = Attached {
        entry: &entry,
        stream,
        signals: &signals,
        parser: interactive.then(EscapeParser::new),
        to_vm: Vec::new(),
        quiet,
        mid_line: false,
    };
    let end = attached.run(args.run_for);
    drop(raw);
    if term::is_tty(STDOUT) {
        let _ = sys::write_all(STDOUT, b"\x1b[?7h");
    }
    match end {
        Ok(End::Detached) => {
            attached.say(&format!(
                "detached from VM {} (it keeps running)",
                entry.name
            ));
            Ok(exit::SUCCESS)
        }
        Ok(End::Signal(s)) => {
            attached.say(&format!(
                "detached from VM {} ({}; it keeps running)",
                entry.name,
                sys::signal_name(s)
            ));
            Ok(exit::for_signal(s))
        }
        Ok(End::Closed) => {
            let still = matches!(entry.probe(), Some(state::Probe::Live(_)));
            if still {
                attached.say(&format!(
                    "the console of VM {} was taken over by another client",
                    entry.name
                ));
            } else {
                attached.say(&format!("VM {} has stopped", entry.name));
            }
            Ok(exit::SUCCESS)
        }
        Err(f) => Err(f),
    }
}

struct Attached<'a> {
    entry: &'a Entry,
    stream: UnixStream,
    signals: &'a Signals,
    parser: Option<EscapeParser>,
    to_vm: Vec<u8>,
    quiet: bool,
    /// The console's output so far ends in the middle of a line.
    mid_line: bool,
}

impl Attached<'_> {
    fn say(&mut self, text: &str) {
        if !self.quiet {
            let newline = if self.mid_line { term::eol() } else { "" };
            self.mid_line = false;
            term::message(&format!("{newline}qemu-machine: {text}"));
        }
    }

    fn run(&mut self, run_for: Option<Duration>) -> Result<End, Failure> {
        let stop_at = run_for.map(|d| Instant::now() + d);
        let mut stdin_open = true;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            self.flush_to_vm()?;
            let now = Instant::now();
            if stop_at.is_some_and(|at| at <= now) {
                return Ok(End::Detached);
            }
            let mut fds = [
                if stdin_open && self.to_vm.len() < TO_VM_LIMIT {
                    PollFd::new(STDIN, libc::POLLIN)
                } else {
                    PollFd::unused()
                },
                PollFd::new(
                    self.stream.as_raw_fd(),
                    if self.to_vm.is_empty() {
                        libc::POLLIN
                    } else {
                        libc::POLLIN | libc::POLLOUT
                    },
                ),
                PollFd::new(self.signals.fd(), libc::POLLIN),
            ];
            let timeout = stop_at.map(|at| at.saturating_duration_since(now));
            sys::poll(&mut fds, timeout).map_err(|e| Failure::failed(format!("poll: {e}")))?;
            if fds[2].readable() {
                if let Some(&s) = self.signals.take().first() {
                    return Ok(End::Signal(s));
                }
            }
            if fds[1].readable() {
                match self.stream.read(&mut buf) {
                    Ok(0) => return Ok(End::Closed),
                    Ok(n) => {
                        self.mid_line = buf[n - 1] != b'\n';
                        sys::write_all(STDOUT, &buf[..n]).map_err(|e| {
                            Failure::failed(format!("writing the console to stdout: {e}"))
                        })?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return Ok(End::Closed),
                }
            }
            if fds[0].readable() {
                match sys::read(STDIN, &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        let actions = match self.parser.as_mut() {
                            Some(p) => p.feed(&buf[..n]),
                            None => vec![Action::Send(buf[..n].to_vec())],
                        };
                        for action in actions {
                            if let Some(end) = self.action(action) {
                                return Ok(end);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes the keyboard input the connection takes now.
    fn flush_to_vm(&mut self) -> Result<(), Failure> {
        while !self.to_vm.is_empty() {
            match self.stream.write(&self.to_vm) {
                Ok(n) => {
                    self.to_vm.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A closed connection shows up as the end of its output.
                Err(_) => {
                    self.to_vm.clear();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// One QMP command through a second connection (the escape menu's power, reset, status).
    fn execute(&mut self, command: &str) -> Result<serde_json::Value, String> {
        let request = Request::Execute {
            command: command.to_owned(),
            arguments: None,
        };
        match control::request(self.entry, &request, Duration::from_secs(10)) {
            Ok((_, reply)) => match reply.get("error") {
                Some(e) => Err(e["desc"].as_str().unwrap_or("an error").to_owned()),
                None => Ok(reply.get("return").cloned().unwrap_or(json!({}))),
            },
            Err(e) => Err(e.message),
        }
    }

    fn action(&mut self, action: Action) -> Option<End> {
        match action {
            Action::Send(bytes) => self.to_vm.extend_from_slice(&bytes),
            Action::Quit => return Some(End::Detached),
            Action::PowerButton => match self.execute("system_powerdown") {
                Ok(_) => self.say("pressed the power button"),
                Err(e) => self.say(&format!("the power button failed: {e}")),
            },
            Action::Reset => match self.execute("system_reset") {
                Ok(_) => self.say("reset"),
                Err(e) => self.say(&format!("reset failed: {e}")),
            },
            Action::Status => match self.execute("query-status") {
                Ok(v) => {
                    let status = v["status"].as_str().unwrap_or("unknown").to_owned();
                    self.say(&format!("status: {status}"));
                }
                Err(e) => self.say(&format!("status: {e}")),
            },
            Action::Help => self.say(CONSOLE_HELP.trim_end()),
            Action::Unknown(key) => self.say(&format!(
                "unknown escape key {}; Ctrl-] ? lists the keys",
                crate::run::key_name(key)
            )),
        }
        None
    }
}
