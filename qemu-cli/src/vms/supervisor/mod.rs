//! The supervisor of a started VM: the hidden mode `qemu-machine __supervise` that `start`
//! runs, detached from the terminal (`setsid`), which launches the VM, holds its
//! `qemu_process::Machine` and serves its control socket until QEMU exits.
//!
//! One thread, one `poll`: the control socket's listener, its clients, the machine's poll
//! descriptor and the signal pipe. Console output goes to the attached console client (and
//! nowhere when none is attached: the guest never waits for a reader); QMP clients get a QMP
//! server whose commands run on the supervisor's own connection to QEMU and which sees every
//! event. QEMU belongs to this process through the library's guardian: if the supervisor dies,
//! QEMU is killed with it. When QEMU exits, the supervisor answers whoever waits for it,
//! removes the VM's entry and exits.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qemu_process::{Error, Machine, MachineConfig};
use qmp_proto::Decoder;
use serde_json::{json, Value};

use super::control::{self, Request, Stopped};
use super::state::{self, Entry, Info};
use crate::exit::{self, Failure};
use crate::launch::{self, Report};
use crate::sys::{self, PollFd, Signals};
use client::{Client, Kind};

mod client;
mod exec;
mod qmp;

/// How long the guest has to power off when the supervisor is told to stop by a signal.
const SIGNAL_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long QEMU may take to exit after `quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one QMP command of a client may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Output kept for a console client that does not read (more is dropped: the guest never
/// waits for a reader).
const CONSOLE_OUT_MAX: usize = 1 << 20;
/// Keyboard input kept for a console that does not take it (more is not read).
const CONSOLE_IN_MAX: usize = 64 * 1024;
/// Output kept for a QMP client that does not read; beyond it, the client is dropped.
const QMP_OUT_MAX: usize = 8 << 20;
/// The most clients at once.
const CLIENTS_MAX: usize = 64;

/// What `start` passes to the supervisor.
#[derive(Debug, Clone)]
pub struct Args {
    /// The VM's name.
    pub name: String,
    /// Its entry's directory.
    pub dir: PathBuf,
    /// The entry's lock, inherited already locked.
    pub lock_fd: RawFd,
}

/// A line on the report pipe to `start`.
fn report_line(value: &Value) -> Vec<u8> {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Writes a report line to `start` (stdout); `false` when `start` is gone.
fn report(value: &Value) -> bool {
    sys::write_all(1, &report_line(value)).is_ok()
}

/// Points `fd` at /dev/null.
fn to_dev_null(fd: RawFd) {
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto a standard descriptor of this process.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// Runs the supervisor; returns the process exit code (its log says what happened).
pub fn main(args: Args) -> u8 {
    // A session of its own: no controlling terminal, so closing the terminal that ran `start`
    // (SIGHUP) or its Ctrl-C does not reach it.
    // SAFETY: setsid has no memory effects; it fails harmlessly if already a group leader.
    unsafe { libc::setsid() };
    // SAFETY: the descriptor was inherited for this process alone; nothing else owns it.
    let lock = unsafe { OwnedFd::from_raw_fd(args.lock_fd) };
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(lock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let entry = Entry {
        name: args.name.clone(),
        dir: args.dir.clone(),
    };
    let code = match run(&entry) {
        Ok(code) => code,
        Err(f) => {
            log::error!("{}", f.message);
            report(&json!({"failed": {"code": f.code, "message": f.message, "detail": f.detail}}));
            f.code
        }
    };
    entry.remove();
    drop(lock);
    code
}

fn run(entry: &Entry) -> Result<u8, Failure> {
    let mut text = String::new();
    io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::failed(format!("reading the VM's description: {e}")))?;
    to_dev_null(0);
    let config = MachineConfig::from_json(&text)
        .map_err(|e| Failure::usage(format!("the VM's description: {e}")))?;
    let signals = Signals::install()
        .map_err(|e| Failure::failed(format!("installing signal handlers: {e}")))?;
    // The guardian, forked while this process is small.
    qemu_process::start_guardian()
        .map_err(|e| Failure::new(exit::LAUNCH, format!("cannot launch the VM: {e}")))?;
    let mut gone = false;
    let mut machine = launch::launch_reporting(&config, &mut |r| {
        let line = match r {
            Report::Line(line) => json!({"line": line}),
            Report::Flash(label, fraction) => {
                json!({"flash": {"label": label, "fraction": fraction}})
            }
        };
        if !gone && !report(&line) {
            gone = true;
        }
    })?;
    if gone {
        log::warn!("`start` went away during the launch: stopping the VM");
        let _ = machine.shutdown(QUIT_TIMEOUT);
        return Ok(exit::FAILURE);
    }
    let listener = listen(entry)?;
    let lines = launch::describe(&machine);
    let version = machine.greeting().map_or_else(String::new, |g| {
        format!(
            "{}.{}.{}",
            g.version.major, g.version.minor, g.version.micro
        )
    });
    let info = Info {
        name: entry.name.clone(),
        supervisor_pid: std::process::id(),
        qemu_pid: machine.pid().unwrap_or(0),
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        qemu_version: version,
        forwards: lines[1..]
            .iter()
            .filter(|l| l.starts_with("port"))
            .cloned()
            .collect(),
        console_log: machine.console_log_path().map(Into::into),
    };
    state::write_info(entry, &info)
        .map_err(|e| Failure::failed(format!("writing {}: {e}", entry.info_path().display())))?;
    log::info!("VM {} started: {}", entry.name, lines.join("; "));
    if !report(&json!({"started": {"info": info, "lines": lines}})) {
        log::warn!("`start` went away before it heard the VM was up: stopping the VM");
        let _ = machine.shutdown(QUIT_TIMEOUT);
        return Ok(exit::FAILURE);
    }
    to_dev_null(1);
    let mut s = Supervisor {
        entry: entry.clone(),
        name: entry.name.clone(),
        machine,
        listener,
        signals: &signals,
        clients: Vec::new(),
        next_id: 0,
        console: None,
        to_guest: Vec::new(),
        console_dropped: 0,
        stopping: None,
        shutdown_reason: None,
        finished: None,
        execs: Vec::new(),
    };
    Ok(s.serve())
}

/// Binds the control socket, owner-only.
fn listen(entry: &Entry) -> Result<UnixListener, Failure> {
    let path = entry.socket();
    let fail = |e: io::Error| Failure::failed(format!("listening on {}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o077) };
    let listener = UnixListener::bind(&path);
    // SAFETY: as above, restoring it.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(fail)?;
    state::make_private(&path).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    Ok(listener)
}

/// A stop in progress: the power button was pressed at `pressed`.
struct Stopping {
    pressed: Instant,
    deadline: Instant,
}

struct Supervisor<'a> {
    entry: Entry,
    name: String,
    machine: Machine,
    listener: UnixListener,
    signals: &'a Signals,
    clients: Vec<Client>,
    next_id: u64,
    /// The console client's id.
    console: Option<u64>,
    /// Console input not yet taken by QEMU.
    to_guest: Vec<u8>,
    /// Console output dropped because the console client did not read.
    console_dropped: u64,
    stopping: Option<Stopping>,
    /// The reason of the last SHUTDOWN event.
    shutdown_reason: Option<String>,
    /// How the VM ended, once it has, for whoever waits.
    finished: Option<Stopped>,
    /// Commands running in the guest for `exec` clients.
    execs: Vec<exec::RunningExec>,
}

impl Supervisor<'_> {
    /// Serves until QEMU exits; returns the exit code.
    fn serve(&mut self) -> u8 {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.pump();
            if let Some(status) = self.machine.exit_status() {
                let stopped = self.finished.take().unwrap_or_else(|| self.ended(status));
                return self.exit(stopped);
            }
            if let Some(stopped) = self.finished.take() {
                return self.exit(stopped);
            }
            let now = Instant::now();
            if let Some(s) = &self.stopping {
                if s.deadline <= now {
                    let waited = s.pressed.elapsed();
                    let stopped = self.quit(Some(waited));
                    return self.exit(stopped);
                }
            }
            let mut fds = vec![
                PollFd::new(self.listener.as_raw_fd(), libc::POLLIN),
                PollFd::new(self.signals.fd(), libc::POLLIN),
                PollFd::new(self.machine.poll_sources().poll, libc::POLLIN),
            ];
            for c in &self.clients {
                let mut events = 0;
                let console_full =
                    matches!(c.kind, Kind::Console) && self.to_guest.len() >= CONSOLE_IN_MAX;
                if !matches!(c.kind, Kind::Closing) && !console_full {
                    events |= libc::POLLIN;
                }
                if !c.output.is_empty() {
                    events |= libc::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_raw_fd(), events));
            }
            let wakeup = [
                self.stopping.as_ref().map(|s| s.deadline),
                self.exec_wakeup(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = wakeup.map(|at| at.saturating_duration_since(now));
            if let Err(e) = sys::poll(&mut fds, timeout) {
                log::error!("poll: {e}");
                let stopped = self.quit(None);
                return self.exit(stopped);
            }
            if fds[1].readable() {
                for signal in self.signals.take() {
                    log::info!("{}: stopping the VM", sys::signal_name(signal));
                    self.begin_stop(SIGNAL_STOP_TIMEOUT, true);
                }
            }
            if fds[2].readable() {
                if let Err(e) = self.machine.process_io() {
                    log::debug!("QEMU's I/O: {e}");
                }
            }
            if fds[0].readable() {
                self.accept();
            }
            let ready: Vec<(u64, bool)> = self
                .clients
                .iter()
                .zip(&fds[3..])
                .map(|(c, f)| (c.id, f.readable()))
                .collect();
            for (id, readable) in ready {
                if readable {
                    self.read_client(id, &mut buf);
                }
            }
            self.exec_poll();
            for c in &mut self.clients {
                c.flush();
            }
            self.reap_clients();
        }
    }

    /// Moves console output and events to the clients, and console input to QEMU.
    fn pump(&mut self) {
        if !self.to_guest.is_empty() {
            match self.machine.console_write(&self.to_guest, Duration::ZERO) {
                Ok(()) => self.to_guest.clear(),
                Err(Error::ConsoleWriteTimeout { accepted, .. }) => {
                    self.to_guest.drain(..accepted);
                }
                Err(e) => {
                    log::warn!("writing to the console: {e}");
                    self.to_guest.clear();
                }
            }
        }
        let _ = self.machine.process_io();
        let bytes = self.machine.take_console();
        if !bytes.is_empty() {
            if let Some(c) = self.console_client() {
                let room = CONSOLE_OUT_MAX.saturating_sub(c.output.len());
                let take = bytes.len().min(room);
                c.send(&bytes[..take]);
                let dropped = (bytes.len() - take) as u64;
                self.console_dropped += dropped;
            }
        }
        let events = self.machine.take_events();
        for event in &events {
            if event.name == "SHUTDOWN" {
                self.shutdown_reason = event
                    .data
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            if crate::run::LIFECYCLE.contains(&event.name.as_str()) {
                log::info!("event {} {}", event.name, event.data);
            }
        }
        if !events.is_empty() {
            let mut text = Vec::new();
            for event in &events {
                text.extend_from_slice(event.to_value().to_string().as_bytes());
                text.extend_from_slice(b"\r\n");
            }
            for c in &mut self.clients {
                if let Kind::Qmp {
                    negotiated: true, ..
                } = c.kind
                {
                    c.send(&text);
                    if c.output.len() > QMP_OUT_MAX {
                        log::warn!("a QMP client does not read its events: dropping it");
                        c.dead = true;
                    }
                }
            }
        }
        for c in &mut self.clients {
            c.flush();
        }
    }

    fn request(&mut self, id: u64, line: &[u8]) {
        let request = match serde_json::from_slice::<Request>(line) {
            Ok(r) => r,
            Err(e) => {
                self.answer(id, control::error_line(&format!("a bad request: {e}")));
                return;
            }
        };
        log::debug!("request {request:?}");
        match request {
            Request::Info => {
                let status = match self.machine.status() {
                    Ok(s) => s.as_str().to_owned(),
                    Err(e) => format!("unknown ({e})"),
                };
                let state = if self.stopping.is_some() {
                    "stopping".to_owned()
                } else {
                    status
                };
                let attached = self.console.is_some();
                self.answer(
                    id,
                    control::ok_line(json!({
                        "state": state,
                        "console_attached": attached,
                        "guest_agent": self.machine.has_guest_agent(),
                        "guest_agent_running": self.machine.guest_agent_port_open() == Some(true),
                    })),
                );
            }
            Request::Console { force } => {
                if let Some(old) = self.console {
                    if !force {
                        let msg = format!(
                            "the console of VM {} is attached elsewhere (`console {} --force` \
                             takes it over)",
                            self.name, self.name
                        );
                        self.answer(id, control::error_line(&msg));
                        return;
                    }
                    if let Some(i) = self.index(old) {
                        let c = &mut self.clients[i];
                        c.send(b"\r\nqemu-machine: another client took the console over\r\n");
                        c.kind = Kind::Closing;
                    }
                }
                self.console = Some(id);
                if let Some(i) = self.index(id) {
                    let c = &mut self.clients[i];
                    c.send(&control::ok_line(json!({})));
                    c.kind = Kind::Console;
                }
            }
            Request::Qmp => {
                let greeting = match self.machine.greeting() {
                    Some(g) => qmp_proto::Greeting {
                        version: g.version.clone(),
                        capabilities: Vec::new(),
                    }
                    .to_value(),
                    None => json!({"QMP": {"version": {}, "capabilities": []}}),
                };
                if let Some(i) = self.index(id) {
                    let c = &mut self.clients[i];
                    c.send(&control::ok_line(json!({})));
                    c.send(format!("{greeting}\r\n").as_bytes());
                    c.kind = Kind::Qmp {
                        decoder: Box::new(Decoder::new()),
                        negotiated: false,
                    };
                }
            }
            Request::Execute { command, arguments } => {
                let reply =
                    match self
                        .machine
                        .execute_with_timeout(&command, arguments, COMMAND_TIMEOUT)
                    {
                        Ok(v) => control::ok_line(json!({"return": v})),
                        Err(Error::Qmp(e)) => control::ok_line(json!({"error": e.to_value()})),
                        Err(e) => control::error_line(&format!("{command}: {e}")),
                    };
                self.answer(id, reply);
            }
            Request::Stop { timeout_ms } => {
                if let Some(i) = self.index(id) {
                    self.clients[i].kind = Kind::Waiting;
                }
                self.begin_stop(Duration::from_millis(timeout_ms), false);
            }
            Request::Kill => {
                if let Some(i) = self.index(id) {
                    self.clients[i].kind = Kind::Waiting;
                }
                let message = match self.machine.kill() {
                    Ok(status) => format!("QEMU was killed ({status})"),
                    Err(e) => format!("killing QEMU: {e}"),
                };
                self.finished = Some(Stopped {
                    outcome: "killed".into(),
                    message,
                });
            }
            Request::Exec { argv, timeout_ms } => {
                self.exec_request(id, &argv, Duration::from_millis(timeout_ms));
            }
        }
    }

    /// Starts stopping the VM: the power button, then `timeout` for the guest (zero: quit at
    /// once); the waiting clients are answered when it is over. A stop already under way is
    /// shared, except that a second signal quits QEMU at once.
    fn begin_stop(&mut self, timeout: Duration, signal: bool) {
        if self.stopping.is_some() {
            if signal {
                // A second signal: do not wait for the guest any longer.
                let waited = self.stopping.as_ref().map(|s| s.pressed.elapsed());
                self.finished = Some(self.quit(waited));
            }
            return;
        }
        if timeout.is_zero() {
            self.finished = Some(self.quit(None));
            return;
        }
        match self.machine.execute("system_powerdown", None) {
            Ok(_) => {
                log::info!(
                    "pressed the power button; waiting up to {} for the guest",
                    crate::duration::show(timeout)
                );
                let now = Instant::now();
                self.stopping = Some(Stopping {
                    pressed: now,
                    deadline: now + timeout,
                });
            }
            Err(e) => {
                log::warn!("the power button failed ({e}): quitting QEMU");
                self.finished = Some(self.quit(None));
            }
        }
    }

    /// Tells QEMU to quit (killing it if it does not exit in time).
    fn quit(&mut self, waited: Option<Duration>) -> Stopped {
        let after = waited.map_or_else(String::new, |d| {
            format!(" after {} s", d.as_secs_f64().round() as u64)
        });
        match self.machine.shutdown(QUIT_TIMEOUT) {
            Ok(_) => Stopped {
                outcome: "quit".into(),
                message: format!("QEMU was told to quit{after}"),
            },
            Err(Error::NotGraceful { status }) => Stopped {
                outcome: "killed".into(),
                message: format!(
                    "QEMU was told to quit{after} but did not exit within {}: it was killed \
                     ({status})",
                    crate::duration::show(QUIT_TIMEOUT)
                ),
            },
            Err(e) => Stopped {
                outcome: "killed".into(),
                message: format!("stopping QEMU: {e}"),
            },
        }
    }

    /// How the VM ended when QEMU exited while it was not being quit.
    fn ended(&self, status: std::process::ExitStatus) -> Stopped {
        match self.shutdown_reason.as_deref() {
            Some("guest-shutdown") if status.success() => Stopped {
                outcome: "powered-off".into(),
                message: "the guest powered off".into(),
            },
            Some(reason) => Stopped {
                outcome: "exited".into(),
                message: format!("QEMU exited ({reason}; {status})"),
            },
            None => Stopped {
                outcome: "exited".into(),
                message: format!("QEMU exited ({status})"),
            },
        }
    }

    /// Removes the VM's entry (the lock stays held until this process exits), answers the
    /// waiting clients, closes every connection, and returns the exit code. Whoever sees a
    /// connection end finds the entry gone.
    fn exit(&mut self, stopped: Stopped) -> u8 {
        log::info!("VM {}: {}", self.name, stopped.message);
        self.pump();
        self.entry.remove();
        let line = control::ok_line(json!(stopped));
        let gone = control::error_line(&format!(
            "VM {}: it stopped while the command ran ({})",
            self.name, stopped.message
        ));
        for c in &mut self.clients {
            match c.kind {
                Kind::Waiting => c.send(&line),
                Kind::Exec => c.send(&gone),
                _ => {}
            }
            c.flush_before_exit();
        }
        if self.console_dropped > 0 {
            log::warn!(
                "{} bytes of console output were dropped for a console client that did not \
                 read",
                self.console_dropped
            );
        }
        self.clients.clear();
        match stopped.outcome.as_str() {
            "killed" => exit::ABNORMAL,
            _ => exit::SUCCESS,
        }
    }
}
