//! `qemu-machine qmp`: a QMP shell on a VM it launches, on a running QEMU's socket, or on a
//! VM started with `qemu-machine start`.
//!
//! On a terminal it edits lines itself ([`crate::editor`]) in raw mode, so it can wait on the
//! keyboard and on QEMU in one `poll`, print events above the prompt as they arrive, and redraw
//! when the terminal is resized (SIGWINCH). From a pipe it reads lines as they come, executes
//! each, and prints every reply and event as JSON on stdout; the exit code says whether every
//! command succeeded. Both read qmp-shell's transaction syntax ([`crate::qmp_line::Reader`]).

use std::io::{self, Read, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qemu_process::{Event, Machine};
use serde_json::{json, Value};

use crate::editor::{Edit, Editor};
use crate::exit::{self, CliResult, Failure};
use crate::qmp_line::{Input, Reader};
use crate::sys::{self, PollFd, Signals};
use crate::term::{self, RawMode};
use crate::vmargs::VmArgs;

const PROMPT: &str = "(QEMU) ";
const TRANSACTION_PROMPT: &str = "TRANS> ";
const HISTORY_MAX: usize = 1000;
const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;
/// How long the QMP greeting and negotiation may take once connected.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the shell talks to.
#[derive(Debug)]
pub enum Target {
    /// A VM it launches (and shuts down at the end).
    Launch(Box<VmArgs>),
    /// A running QEMU's QMP unix socket.
    Socket(PathBuf),
    /// A running QEMU's QMP TCP server, `HOST:PORT` (a name or an address).
    Tcp(String),
    /// An open connection that speaks QMP (a started VM's control socket), and what it is.
    Stream(OwnedFd, String),
}

/// What `qmp` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// What to talk to.
    pub target: Target,
    /// Retry connecting to a socket for this long (a socket that does not exist yet, or
    /// refuses); without it, the first failure is the answer.
    pub wait: Option<Duration>,
    /// One line per JSON value.
    pub compact: bool,
    /// Print events.
    pub events: bool,
    /// Print each request before its reply (qmp-shell's `-v`).
    pub echo: bool,
    /// Append every request, reply and event to this file (qmp-shell's `-l`).
    pub log: Option<PathBuf>,
    /// The history file (`none`: no history).
    pub history: Option<PathBuf>,
    /// The deadline of one command.
    pub timeout: Duration,
    /// No banner.
    pub quiet: bool,
}

/// What the banner says of the QEMU the shell talks to: a running QEMU it connected to (left
/// running when the shell ends), or one it launched (shut down when the shell ends).
fn describe(machine: &Machine, target: &str) -> String {
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
        None => format!("connected to {version} at {target}"),
        Some(pid) => format!("launched {version} (pid {pid})"),
    }
}

/// Retries `attempt` until it succeeds, fails for good (`Err((e, false))`), or `wait` passes
/// (no `wait`: one attempt).
fn with_wait<T>(
    wait: Option<Duration>,
    mut attempt: impl FnMut() -> Result<T, (Failure, bool)>,
) -> Result<T, Failure> {
    let end = wait.map(|w| Instant::now() + w);
    let mut backoff = Duration::from_millis(10);
    loop {
        match attempt() {
            Ok(t) => return Ok(t),
            Err((e, retry)) => {
                let now = Instant::now();
                match end {
                    Some(end) if retry && now < end => {
                        std::thread::sleep(backoff.min(end - now));
                        backoff = (backoff * 2).min(Duration::from_millis(250));
                    }
                    Some(_) if retry => {
                        return Err(Failure::failed(format!(
                            "{} (still, after waiting {})",
                            e.message,
                            crate::duration::show(wait.unwrap_or_default())
                        )))
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Connects to a QMP unix socket: a path that does not exist or is not a socket is an error
/// at once (the former retried with `--wait`), as is a refused connection (retried too).
fn connect_unix(path: &Path, wait: Option<Duration>) -> Result<OwnedFd, Failure> {
    let fail = |why: String, retry: bool| {
        (
            Failure::failed(format!("cannot connect to {}: {why}", path.display())),
            retry,
        )
    };
    with_wait(wait, || {
        let meta = std::fs::metadata(path).map_err(|e| {
            let retry = e.kind() == io::ErrorKind::NotFound;
            fail(e.to_string(), retry)
        })?;
        if !meta.file_type().is_socket() {
            return Err(fail("not a socket".into(), false));
        }
        std::os::unix::net::UnixStream::connect(path)
            .map(OwnedFd::from)
            .map_err(|e| {
                let retry = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                );
                fail(e.to_string(), retry)
            })
    })
}

/// Connects to `HOST:PORT` (a name is resolved; each address is tried in turn).
fn connect_tcp(target: &str, wait: Option<Duration>) -> Result<OwnedFd, Failure> {
    use std::net::ToSocketAddrs;
    let fail = |why: String, retry: bool| {
        (
            Failure::failed(format!("cannot connect to {target}: {why}")),
            retry,
        )
    };
    with_wait(wait, || {
        let addrs: Vec<_> = target
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string(), false))?
            .collect();
        let mut last = None;
        for addr in &addrs {
            match std::net::TcpStream::connect_timeout(addr, NEGOTIATION_TIMEOUT) {
                Ok(stream) => return Ok(OwnedFd::from(stream)),
                Err(e) => last = Some((addr.to_string(), e)),
            }
        }
        match last {
            Some((addr, e)) => {
                let retry = e.kind() == io::ErrorKind::ConnectionRefused;
                Err(fail(format!("{addr}: {e}"), retry))
            }
            None => Err(fail("the name has no address".into(), false)),
        }
    })
}

/// Negotiates QMP on a connected socket.
fn attach(fd: OwnedFd, what: &str) -> Result<Machine, Failure> {
    Machine::attach_socket(fd, NEGOTIATION_TIMEOUT)
        .map_err(|e| Failure::failed(format!("cannot talk QMP to {what}: {e}")))
}

/// Runs the shell.
pub fn main(opts: Options) -> CliResult {
    let (mut target, name) = match &opts.target {
        Target::Socket(path) => (
            attach(connect_unix(path, opts.wait)?, &path.display().to_string())?,
            path.display().to_string(),
        ),
        Target::Tcp(addr) => (attach(connect_tcp(addr, opts.wait)?, addr)?, addr.clone()),
        Target::Stream(fd, what) => {
            let fd = fd
                .try_clone()
                .map_err(|e| Failure::failed(format!("{what}: {e}")))?;
            (attach(fd, what)?, what.clone())
        }
        Target::Launch(vm) => {
            let mut config = vm.to_config()?;
            config.console(false);
            (crate::launch::launch(&config, opts.quiet)?, String::new())
        }
    };
    target.set_qmp_timeout(opts.timeout);
    let log = match &opts.log {
        Some(path) => Some(open_log(path)?),
        None => None,
    };
    let signals = Signals::install_with(&[libc::SIGWINCH])
        .map_err(|e| Failure::failed(format!("signals: {e}")))?;
    let interactive = term::is_tty(STDIN) && term::is_tty(STDOUT);
    let mut shell = Shell {
        opts: &opts,
        signals: &signals,
        failed: 0,
        interrupted: None,
        resized: false,
        reader: Reader::new(),
        log,
    };
    let result = if interactive {
        shell.interactive(&mut target, &name)
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

/// Opens the log file for appending, created owner-only (QMP commands may carry secrets).
fn open_log(path: &Path) -> Result<std::fs::File, Failure> {
    let file = std::fs::File::options()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::failed(format!("cannot open the log {}: {e}", path.display())))?;
    make_private(&file, path, "log", false);
    Ok(file)
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
    /// The terminal was resized (SIGWINCH) since the last redraw.
    resized: bool,
    /// Lines, with the transaction syntax.
    reader: Reader,
    /// The `-l` log.
    log: Option<std::fs::File>,
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

    /// Appends a message to the `-l` log, one line of JSON each.
    fn log(&mut self, value: &Value) {
        if let Some(file) = &mut self.log {
            if let Err(e) = writeln!(file, "{value}") {
                term::message(&format!(
                    "qemu-machine: writing the log failed ({e}); logging stops"
                ));
                self.log = None;
            }
        }
    }

    /// Executes one command and renders the reply; the first string is the request itself
    /// with `-v` (empty otherwise), to print before anything else.
    fn execute(
        &mut self,
        machine: &mut Machine,
        name: &str,
        arguments: Option<Value>,
    ) -> (String, Outcome) {
        let request = match &arguments {
            Some(a) => json!({ "execute": name, "arguments": a }),
            None => json!({ "execute": name }),
        };
        self.log(&request);
        let echo = if self.opts.echo {
            format!("{}\n", self.to_json(&request))
        } else {
            String::new()
        };
        let outcome = match machine.execute_with_timeout(name, arguments, self.opts.timeout) {
            Ok(value) => {
                let reply = json!({ "return": value });
                self.log(&reply);
                Outcome::Reply(self.to_json(&reply))
            }
            Err(qemu_process::Error::Qmp(e)) => {
                self.failed += 1;
                let reply = json!({ "error": e.to_value() });
                self.log(&reply);
                Outcome::Reply(self.to_json(&reply))
            }
            Err(e) => {
                self.failed += 1;
                if machine.is_connected() {
                    Outcome::Failed(format!("{name}: {e}"))
                } else {
                    Outcome::Gone(format!("{name}: {e}"))
                }
            }
        };
        (echo, outcome)
    }

    fn render_events(&mut self, events: Vec<Event>) -> String {
        for event in &events {
            self.log(&event.to_value());
        }
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

    /// Waits for input, events or a signal; returns whether stdin is ready.
    fn wait(&mut self, machine: &mut Machine, stdin_open: bool) -> Result<bool, Failure> {
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
            for signal in self.signals.take() {
                if signal == libc::SIGWINCH {
                    self.resized = true;
                } else if self.interrupted.is_none() {
                    self.interrupted = Some(signal);
                }
            }
        }
        Ok(fds[0].readable())
    }

    /// Reads one line and, when it completes a command, runs it; returns the text for stdout
    /// (the request with `-v`, events, the reply) and an error message (empty if none).
    fn line(&mut self, machine: &mut Machine, line: &str, where_: &str) -> (String, String) {
        match self.reader.feed(line) {
            Ok(Input::Empty | Input::Pending) => (String::new(), String::new()),
            Ok(Input::Command { name, arguments }) => {
                let (echo, outcome) = self.execute(machine, &name, arguments);
                let events = self.render_events(machine.events());
                let (out, err) = match outcome {
                    Outcome::Reply(reply) => (format!("{echo}{events}{reply}\n"), String::new()),
                    Outcome::Failed(why) | Outcome::Gone(why) => {
                        (format!("{echo}{events}"), format!("{where_}{why}"))
                    }
                };
                (out, err)
            }
            Err(e) => {
                self.failed += 1;
                (String::new(), format!("{where_}{e}"))
            }
        }
    }

    /// Reading a script from a pipe: every line a command (a transaction: its lines), every
    /// reply and event on stdout. Commands after QEMU has gone (after `quit`, say) fail one by
    /// one, so that the exit code does not depend on when the exit was noticed.
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
                if self.reader.abandon() {
                    self.failed += 1;
                    term::message(
                        "qemu-machine: the input ended inside a transaction (no ')'): it was not sent",
                    );
                }
                return Ok(self.code());
            }
            let input = self.wait(machine, stdin_open)?;
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
                let text = String::from_utf8_lossy(&line).into_owned();
                let (out, err) = self.line(target, &text, &format!("line {line_no}: "));
                write_out(&out)?;
                if !err.is_empty() {
                    term::message(&format!("qemu-machine: {err}"));
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
    fn interactive(&mut self, target: &mut Machine, name: &str) -> CliResult {
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
                describe(target, name)
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

    /// The prompt for the reader's state.
    fn prompt(&self) -> &'static str {
        if self.reader.in_transaction() {
            TRANSACTION_PROMPT
        } else {
            PROMPT
        }
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
            if std::mem::take(&mut self.resized) {
                if let Some(width) = term::width(STDOUT) {
                    editor.set_width(width);
                }
                editor.clear(&mut out);
                editor.render(&mut out);
                flush_raw(&mut out)?;
            }
            let input = self.wait(machine, true)?;
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
                    None | Some(Edit::Interrupted) if !self.reader.in_transaction() => {}
                    None => {}
                    Some(Edit::Interrupted) => {
                        self.reader.abandon();
                        out.extend_from_slice(b"the transaction was abandoned\r\n");
                    }
                    Some(Edit::Eof) => {
                        if self.reader.abandon() {
                            self.failed += 1;
                            out.extend_from_slice(
                                b"the transaction was not closed with ')': it was not sent\r\n",
                            );
                            flush_raw(&mut out)?;
                        }
                        return Ok(self.code());
                    }
                    Some(Edit::Line(line)) => {
                        let (text, err) = self.line(target, &line, "");
                        let mut text = text;
                        if !err.is_empty() {
                            text.push_str(&format!("error: {err}\n"));
                        }
                        out.extend_from_slice(text.replace('\n', "\r\n").as_bytes());
                    }
                }
                if submitted {
                    if Self::gone(target).is_some() {
                        flush_raw(&mut out)?;
                        break;
                    }
                    editor.set_prompt(self.prompt());
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
    make_private(&file, path, "history", quiet);
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
            make_private(&file, path, "history", quiet);
            file.write_all(text.as_bytes())
        });
    if let Err(e) = written {
        log::warn!("could not save the history to {}: {e}", path.display());
    }
}

/// Clears the group and other permission bits of an open file, saying so on stderr (unless
/// `quiet`); says so too when it cannot (a file owned by someone else).
fn make_private(file: &std::fs::File, path: &Path, what: &str, quiet: bool) {
    let Ok(mode) = file.metadata().map(|m| m.permissions().mode() & 0o7777) else {
        return;
    };
    if mode & 0o077 == 0 {
        return;
    }
    let private = mode & 0o700;
    let notice = match file.set_permissions(std::fs::Permissions::from_mode(private)) {
        Ok(()) => format!(
            "qemu-machine: the {what} file {} was open to others (mode {mode:04o}); its mode \
             is now {private:04o}",
            path.display()
        ),
        Err(e) => format!(
            "qemu-machine: the {what} file {} is open to others (mode {mode:04o}) and could \
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
