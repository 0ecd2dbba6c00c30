//! `qemu-machine qmp`: a QMP shell on a VM it launches or on a running QEMU's socket.
//!
//! On a terminal it edits lines itself ([`crate::editor`]) in raw mode, so it can wait on the
//! keyboard and on QEMU in one `poll` and print events above the prompt as they arrive. From
//! a pipe it reads lines as they come, executes each, and prints every reply and event as
//! JSON on stdout; the exit code says whether every command succeeded.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_process::{AttachTarget, Event, Machine};
use serde_json::{json, Value};

use crate::editor::{Edit, Editor};
use crate::exit::{self, CliResult, Failure};
use crate::qmp_line::{self, Line};
use crate::sys::{self, PollFd, Signals};
use crate::term::{self, RawMode};
use crate::vmargs::VmArgs;

const PROMPT: &str = "(QEMU) ";
const HISTORY_MAX: usize = 1000;
const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;

/// What `qmp` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// The VM to launch when no socket is given.
    pub vm: VmArgs,
    /// A QMP unix socket to attach to.
    pub socket: Option<PathBuf>,
    /// A QMP TCP address to attach to.
    pub tcp: Option<std::net::SocketAddr>,
    /// One line per JSON value.
    pub compact: bool,
    /// Print events.
    pub events: bool,
    /// The history file (`none`: no history).
    pub history: Option<PathBuf>,
    /// The deadline of one command.
    pub timeout: Duration,
    /// No banner.
    pub quiet: bool,
}

/// What the banner says of the QEMU the shell talks to: a running QEMU it connected to (left
/// running when the shell ends), or one it launched (shut down when the shell ends).
fn describe(machine: &Machine) -> String {
    let version = machine
        .greeting()
        .map(|g| {
            format!(
                "QEMU {}.{}.{}",
                g.version.major, g.version.minor, g.version.micro
            )
        })
        .unwrap_or_else(|| "QEMU".into());
    match machine.pid() {
        None => format!("connected to {version}"),
        Some(pid) => format!("launched {version} (pid {pid})"),
    }
}

/// Runs the shell.
pub fn main(opts: Options) -> CliResult {
    let attach_timeout = Duration::from_secs(10);
    let mut target = if let Some(path) = &opts.socket {
        if opts.vm != VmArgs::default() {
            return Err(Failure::usage(
                "--socket connects to a running QEMU: VM flags and a spec do not apply",
            ));
        }
        Machine::attach(AttachTarget::Unix(path.clone()), attach_timeout)
            .map_err(|e| Failure::failed(format!("cannot connect to {}: {e}", path.display())))?
    } else if let Some(addr) = opts.tcp {
        if opts.vm != VmArgs::default() {
            return Err(Failure::usage(
                "--tcp connects to a running QEMU: VM flags and a spec do not apply",
            ));
        }
        Machine::attach(AttachTarget::Tcp(addr), attach_timeout)
            .map_err(|e| Failure::failed(format!("cannot connect to {addr}: {e}")))?
    } else {
        let mut config = opts.vm.to_config()?;
        config.console(false);
        crate::launch::launch(&config)?
    };
    target.set_qmp_timeout(opts.timeout);
    let signals = Signals::install().map_err(|e| Failure::failed(format!("signals: {e}")))?;
    let interactive = term::is_tty(STDIN) && term::is_tty(STDOUT);
    let mut shell = Shell {
        opts: &opts,
        signals: &signals,
        failed: 0,
        interrupted: None,
    };
    let result = if interactive {
        shell.interactive(&mut target)
    } else {
        shell.script(&mut target)
    };
    let end = finish(&mut target, opts.quiet);
    let code = result?;
    end?;
    if let Some(signal) = shell.interrupted {
        return Ok(exit::for_signal(signal));
    }
    Ok(code)
}

/// Shuts a launched VM down (a VM that has already exited is fine).
fn finish(machine: &mut Machine, quiet: bool) -> Result<(), Failure> {
    if machine.pid().is_none() || machine.exit_status().is_some() {
        return Ok(());
    }
    match machine.shutdown(Duration::from_secs(10)) {
        Ok(status) => {
            if !quiet {
                term::message(&format!("qemu-machine: QEMU exited ({status})"));
            }
            Ok(())
        }
        Err(e) => Err(Failure::new(
            exit::ABNORMAL,
            format!("shutting the VM down: {e}"),
        )),
    }
}

struct Shell<'a> {
    opts: &'a Options,
    signals: &'a Signals,
    /// Commands that failed.
    failed: usize,
    /// The signal that ended the shell.
    interrupted: Option<i32>,
}

/// An event as QEMU sends it, members in its order.
#[derive(serde::Serialize)]
struct EventOut<'a> {
    event: &'a str,
    #[serde(skip_serializing_if = "Value::is_null")]
    data: &'a Value,
    timestamp: TimestampOut,
}

#[derive(serde::Serialize)]
struct TimestampOut {
    seconds: i64,
    microseconds: i64,
}

/// How one command went.
enum Outcome {
    /// A reply (`{"return": ..}` or `{"error": ..}`), rendered.
    Reply(String),
    /// The command failed here (a timeout, say); the connection is still usable.
    Failed(String),
    /// The connection is gone; the shell should end.
    Gone(String),
}

impl Shell<'_> {
    fn to_json(&self, value: &Value) -> String {
        if self.opts.compact {
            value.to_string()
        } else {
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        }
    }

    /// Executes one command and renders the reply.
    fn execute(&mut self, machine: &mut Machine, name: &str, arguments: Option<Value>) -> Outcome {
        match machine.execute_with_timeout(name, arguments, self.opts.timeout) {
            Ok(value) => Outcome::Reply(self.to_json(&json!({ "return": value }))),
            Err(qemu_process::Error::Qmp(e)) => {
                self.failed += 1;
                Outcome::Reply(self.to_json(&json!({ "error": e.to_value() })))
            }
            Err(e) => {
                self.failed += 1;
                if machine.is_connected() {
                    Outcome::Failed(format!("{name}: {e}"))
                } else {
                    Outcome::Gone(format!("{name}: {e}"))
                }
            }
        }
    }

    fn render_events(&self, events: Vec<Event>) -> String {
        if !self.opts.events {
            return String::new();
        }
        let mut out = String::new();
        for event in &events {
            // Members in QEMU's order (a `Value` would sort them).
            let shown = EventOut {
                event: &event.name,
                data: &event.data,
                timestamp: TimestampOut {
                    seconds: event.timestamp.seconds,
                    microseconds: event.timestamp.microseconds,
                },
            };
            let text = if self.opts.compact {
                serde_json::to_string(&shown)
            } else {
                serde_json::to_string_pretty(&shown)
            };
            out.push_str(&text.unwrap_or_else(|_| event.to_value().to_string()));
            out.push('\n');
        }
        out
    }

    /// The connection's end, as a message, once QEMU is gone.
    fn gone(machine: &mut Machine) -> Option<String> {
        if machine.is_connected() {
            return None;
        }
        Some(match machine.exit_status() {
            Some(status) => format!("QEMU exited ({status})"),
            None => "QEMU closed the connection".to_owned(),
        })
    }

    /// Waits for input, events or a signal; returns what is ready: (stdin, machine).
    fn wait(&mut self, machine: &mut Machine, stdin_open: bool) -> Result<(bool, bool), Failure> {
        let mut fds = [
            if stdin_open {
                PollFd::new(STDIN, libc::POLLIN)
            } else {
                PollFd::unused()
            },
            PollFd::new(machine.poll_sources().poll, libc::POLLIN),
            PollFd::new(self.signals.fd(), libc::POLLIN),
        ];
        sys::poll(&mut fds, None).map_err(|e| Failure::failed(format!("poll: {e}")))?;
        if fds[2].readable() {
            if let Some(&signal) = self.signals.take().first() {
                self.interrupted = Some(signal);
            }
        }
        Ok((fds[0].readable(), fds[1].readable()))
    }

    /// Reading a script from a pipe: every line a command, every reply and event on stdout.
    /// Commands after QEMU has gone (after `quit`, say) fail one by one, so that the exit
    /// code does not depend on when the exit was noticed.
    fn script(&mut self, target: &mut Machine) -> CliResult {
        let mut pending: Vec<u8> = Vec::new();
        let mut stdin_open = true;
        let mut line_no = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let machine = &mut *target;
            let events = self.render_events(machine.events());
            write_out(&events)?;
            if !stdin_open {
                return Ok(self.code());
            }
            let (input, _) = self.wait(machine, stdin_open)?;
            if self.interrupted.is_some() {
                return Ok(self.code());
            }
            if !input {
                machine
                    .process_io()
                    .map_err(|e| Failure::failed(format!("QMP: {e}")))?;
                continue;
            }
            let n = sys::read(STDIN, &mut buf)
                .map_err(|e| Failure::failed(format!("reading stdin: {e}")))?;
            if n == 0 {
                stdin_open = false;
                if !pending.is_empty() {
                    pending.push(b'\n');
                }
            } else {
                pending.extend_from_slice(&buf[..n]);
            }
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                line_no += 1;
                let text = String::from_utf8_lossy(&line);
                match qmp_line::parse(&text) {
                    Ok(Line::Empty) => {}
                    Ok(Line::Command { name, arguments }) => {
                        let machine = &mut *target;
                        let outcome = self.execute(machine, &name, arguments);
                        let events = self.render_events(machine.events());
                        write_out(&events)?;
                        match outcome {
                            Outcome::Reply(reply) => write_out(&format!("{reply}\n"))?,
                            Outcome::Failed(why) | Outcome::Gone(why) => {
                                term::message(&format!("qemu-machine: line {line_no}: {why}"))
                            }
                        }
                    }
                    Err(e) => {
                        self.failed += 1;
                        term::message(&format!("qemu-machine: line {line_no}: {e}"));
                    }
                }
            }
        }
    }

    fn code(&self) -> u8 {
        if self.failed > 0 {
            exit::FAILURE
        } else {
            exit::SUCCESS
        }
    }

    /// The interactive shell on a terminal.
    fn interactive(&mut self, target: &mut Machine) -> CliResult {
        let names = command_names(target);
        let history_path = history_path(self.opts.history.as_ref());
        let width = term::width(STDOUT).unwrap_or(80);
        let mut editor = Editor::new(PROMPT, width);
        editor.set_completions(names);
        if let Some(path) = &history_path {
            if let Some(text) = load_history(path, self.opts.quiet) {
                editor.load_history(text.lines().map(str::to_owned), HISTORY_MAX);
            }
        }
        if !self.opts.quiet {
            let banner = format!(
                "qemu-machine: {}; Tab completes, Up/Down for history, Ctrl-D leaves",
                describe(target)
            );
            write_out(&format!("{banner}\n"))?;
        }
        let raw = RawMode::enter(STDIN)
            .map_err(|e| Failure::failed(format!("cannot set the terminal to raw mode: {e}")))?;
        let result = self.edit_loop(target, &mut editor);
        let mut out = Vec::new();
        editor.clear(&mut out);
        let _ = sys::write_all(STDOUT, &out);
        drop(raw);
        if let Some(path) = &history_path {
            save_history(path, editor.history(), self.opts.quiet);
        }
        result
    }

    fn edit_loop(&mut self, target: &mut Machine, editor: &mut Editor) -> CliResult {
        let mut out = Vec::new();
        editor.render(&mut out);
        flush_raw(&mut out)?;
        let mut buf = vec![0u8; 4096];
        loop {
            let machine = &mut *target;
            let events = self.render_events(machine.events());
            if !events.is_empty() {
                editor.clear(&mut out);
                out.extend_from_slice(events.replace('\n', "\r\n").as_bytes());
                editor.render(&mut out);
                flush_raw(&mut out)?;
            }
            if let Some(why) = Self::gone(machine) {
                editor.clear(&mut out);
                flush_raw(&mut out)?;
                term::message(&format!("qemu-machine: {why}"));
                return Ok(self.code());
            }
            let (input, _) = self.wait(machine, true)?;
            if self.interrupted.is_some() {
                return Ok(self.code());
            }
            if !input {
                machine
                    .process_io()
                    .map_err(|e| Failure::failed(format!("QMP: {e}")))?;
                continue;
            }
            let n = sys::read(STDIN, &mut buf)
                .map_err(|e| Failure::failed(format!("reading the terminal: {e}")))?;
            if n == 0 {
                return Ok(self.code());
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (used, edit) = editor.feed(rest, &mut out);
                rest = &rest[used..];
                flush_raw(&mut out)?;
                let submitted = edit.is_some();
                match edit {
                    None | Some(Edit::Interrupted) => {}
                    Some(Edit::Eof) => return Ok(self.code()),
                    Some(Edit::Line(line)) => {
                        let text = match qmp_line::parse(&line) {
                            Ok(Line::Empty) => String::new(),
                            Ok(Line::Command { name, arguments }) => {
                                let machine = &mut *target;
                                let outcome = self.execute(machine, &name, arguments);
                                let mut text = self.render_events(machine.events());
                                match outcome {
                                    Outcome::Reply(reply) => text.push_str(&reply),
                                    Outcome::Failed(why) | Outcome::Gone(why) => {
                                        text.push_str(&format!("error: {why}"))
                                    }
                                }
                                text.push('\n');
                                text
                            }
                            Err(e) => format!("error: {e}\n"),
                        };
                        out.extend_from_slice(text.replace('\n', "\r\n").as_bytes());
                    }
                }
                if submitted {
                    if Self::gone(target).is_some() {
                        flush_raw(&mut out)?;
                        break;
                    }
                    editor.render(&mut out);
                    flush_raw(&mut out)?;
                }
            }
        }
    }
}

/// The command names QEMU knows (for Tab completion); empty when it cannot say.
fn command_names(machine: &mut Machine) -> Vec<String> {
    match machine.execute("query-commands", None) {
        Ok(Value::Array(list)) => list
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        Ok(_) | Err(_) => Vec::new(),
    }
}

/// The history file: the option, or `~/.qemu-machine_history`; `none` for no history.
fn history_path(option: Option<&PathBuf>) -> Option<PathBuf> {
    match option {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".qemu-machine_history")),
    }
}

/// Reads the history file, first taking away any access by group and others it has: the file
/// is this command's own, and QMP commands may carry secrets (`set_password`, `object-add`
/// of a `secret`), so a warning alone would leave them readable. `None` when there is none.
fn load_history(path: &Path, quiet: bool) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    make_private(&file, path, quiet);
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Writes the history: a new file is created with mode 0600, an existing one is made so.
fn save_history<'a>(path: &Path, lines: impl Iterator<Item = &'a str>, quiet: bool) {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let written = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| {
            make_private(&file, path, quiet);
            file.write_all(text.as_bytes())
        });
    if let Err(e) = written {
        log::warn!("could not save the history to {}: {e}", path.display());
    }
}

/// Clears the group and other permission bits of an open file, saying so on stderr (unless
/// `quiet`); says so too when it cannot (a file owned by someone else).
fn make_private(file: &std::fs::File, path: &Path, quiet: bool) {
    let Ok(mode) = file.metadata().map(|m| m.permissions().mode() & 0o7777) else {
        return;
    };
    if mode & 0o077 == 0 {
        return;
    }
    let private = mode & 0o700;
    let notice = match file.set_permissions(std::fs::Permissions::from_mode(private)) {
        Ok(()) => format!(
            "qemu-machine: the history file {} was open to others (mode {mode:04o}); its mode \
             is now {private:04o}",
            path.display()
        ),
        Err(e) => format!(
            "qemu-machine: the history file {} is open to others (mode {mode:04o}) and could \
             not be restricted: {e}",
            path.display()
        ),
    };
    log::debug!("{notice}");
    if !quiet {
        term::message(&notice);
    }
}

fn write_out(text: &str) -> Result<(), Failure> {
    if text.is_empty() {
        return Ok(());
    }
    sys::write_all(STDOUT, text.as_bytes()).map_err(stdout_failure)
}

fn flush_raw(out: &mut Vec<u8>) -> Result<(), Failure> {
    let result = sys::write_all(STDOUT, out).map_err(stdout_failure);
    out.clear();
    result
}

fn stdout_failure(e: io::Error) -> Failure {
    Failure::failed(format!("writing to stdout: {e}"))
}
