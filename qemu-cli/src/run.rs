//! `qemu-machine run`: a VM with the terminal on its serial console.
//!
//! One thread, one `poll`: the keyboard (stdin), the machine's poll descriptor (QMP, console,
//! QEMU's exit watch) and the signal pipe, with the `--for` or power-down deadline as the timeout.
//! The run ends when QEMU exits (the guest powered off), on a signal, on the escape menu's quit,
//! or when `--for` elapses; the last three stop the VM: a VM with a writable disk is asked
//! first (the ACPI power button, then `--powerdown` to power off) before QEMU is told to quit,
//! and the last line says which happened. In raw mode Ctrl-C goes to the guest. The terminal
//! is restored on every path: the raw-mode guard's `Drop`, the panic hook, and `main` before it
//! exits.
//!
//! Keyboard input goes to the console without ever waiting for the guest: what the console does
//! not take at once (a paused guest, one that does not read its serial port) waits here, and
//! stdin is not read while that reaches [`TO_GUEST_LIMIT`], so the memory held for a guest that
//! does not read is bounded (this limit, the machine's console input bound and the socket's
//! buffer) and a pipe into stdin simply blocks its writer. The machine's poll descriptor wakes
//! the loop when the console takes input again.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use qemu_process::{Error, Event, Machine};

use crate::duration;
use crate::escape::{self, Action, EscapeParser};
use crate::exit::{self, CliResult, Failure};
use crate::launch;
use crate::sys::{self, PollFd, Signals};
use crate::term::{self, RawMode};
use crate::vmargs::VmArgs;

const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;
/// Keyboard input kept for a console that does not take it, above which stdin is not read.
/// Large enough that the escape keys keep working while a person types into a paused guest.
const TO_GUEST_LIMIT: usize = 64 * 1024;
/// How long a guest with a writable disk is given to power off when the VM is stopped, unless
/// `--powerdown` says otherwise.
pub const DISK_POWERDOWN: Duration = Duration::from_secs(30);

/// The events `--events lifecycle` prints.
pub const LIFECYCLE: &[&str] = &[
    "SHUTDOWN",
    "POWERDOWN",
    "RESET",
    "STOP",
    "RESUME",
    "SUSPEND",
    "SUSPEND_DISK",
    "WAKEUP",
    "GUEST_PANICKED",
    "GUEST_CRASHLOADED",
    "WATCHDOG",
];

/// Which events to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Events {
    /// Power, run-state and crash events.
    Lifecycle,
    /// All.
    All,
    /// None.
    None,
}

/// What `run` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// The VM.
    pub vm: VmArgs,
    /// Stop after this long.
    pub run_for: Option<Duration>,
    /// When stopping, press the power button first and wait this long (`None`: 30 s for a VM
    /// with a writable disk, none for one without).
    pub powerdown: Option<Duration>,
    /// How long QEMU may take to exit after `quit`.
    pub shutdown_timeout: Duration,
    /// Which events to print.
    pub events: Events,
    /// A console log file.
    pub console_log: Option<PathBuf>,
    /// The launch deadline.
    pub launch_timeout: Duration,
    /// No banner, status or event lines.
    pub quiet: bool,
}

/// Why we are stopping the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// `--for` elapsed.
    Timer,
    /// The escape menu's quit.
    Quit,
    /// A signal.
    Signal(i32),
}

/// Waiting for the guest to power off after the power button was pressed.
#[derive(Clone, Copy, Debug)]
struct Stopping {
    reason: Reason,
    pressed: Instant,
    deadline: Instant,
}

/// How the loop ended.
enum End {
    /// QEMU exited (the guest powered off, or QEMU failed); with what we were doing then.
    Exited(ExitStatus, Option<Stopping>),
    /// We tell QEMU to quit now; how long the guest had to power off, if it was asked.
    Stop(Reason, Option<Duration>),
    /// Writing the console out failed.
    Output(std::io::Error),
}

/// Whether the VM has a disk the guest writes to (and could lose data on if QEMU quits under
/// it): a disk that is neither read-only nor a snapshot.
pub fn has_writable_disk(vm: &Machine) -> bool {
    vm.resolved_spec()
        .is_some_and(|s| s.disks.iter().any(|d| !d.read_only && !d.snapshot))
}

/// Runs the command.
pub fn main(opts: Options) -> CliResult {
    let mut config = opts.vm.to_config()?;
    let signals = Signals::install()
        .map_err(|e| Failure::failed(format!("installing signal handlers: {e}")))?;
    config.console(true).launch_timeout(opts.launch_timeout);
    if let Some(log) = &opts.console_log {
        config.console_log(log);
    }
    let mut vm = launch::launch(&config, opts.quiet)?;
    let interactive = term::is_tty(STDIN);
    let disk = has_writable_disk(&vm);
    let powerdown = opts
        .powerdown
        .unwrap_or(if disk { DISK_POWERDOWN } else { Duration::ZERO });
    if !opts.quiet {
        let status = vm
            .status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        for line in launch::describe(&vm) {
            term::message(&format!("qemu-machine: {line}"));
        }
        term::message(&format!("qemu-machine: status: {status}"));
        if interactive {
            term::message(
                "qemu-machine: console attached; Ctrl-] q stops the VM, Ctrl-] ? lists the keys, \
                 Ctrl-C goes to the guest",
            );
        } else {
            term::message(
                "qemu-machine: console attached; standard input goes to the guest; SIGINT or \
                 SIGTERM stops the VM",
            );
        }
        if let Some(d) = opts.run_for {
            term::message(&format!(
                "qemu-machine: stopping after {}",
                duration::show(d)
            ));
        }
    }
    let raw = RawMode::enter(STDIN)
        .map_err(|e| Failure::failed(format!("cannot set the terminal to raw mode: {e}")))?;
    let mut console = Console {
        opts: &opts,
        signals: &signals,
        parser: interactive.then(EscapeParser::new),
        powerdown,
        disk,
        panicked: false,
        shutdown_reason: None,
        wrote_console: false,
        mid_line: false,
        to_guest: Vec::new(),
    };
    let end = console.run(&mut vm);
    let result = console.finish(&mut vm, end);
    drop(raw);
    if console.wrote_console && term::is_tty(STDOUT) {
        // Firmware likes to switch line wrapping off (ESC [?7l); give the shell it back.
        let _ = sys::write_all(STDOUT, b"\x1b[?7h");
    }
    result
}

struct Console<'a> {
    opts: &'a Options,
    signals: &'a Signals,
    /// The escape keys, on a terminal; from a pipe every byte goes to the guest.
    parser: Option<EscapeParser>,
    /// How long the guest is given to power off when the VM is stopped (zero: not asked).
    powerdown: Duration,
    /// The VM has a writable disk.
    disk: bool,
    /// A GUEST_PANICKED event was seen.
    panicked: bool,
    /// The `reason` of the last SHUTDOWN event.
    shutdown_reason: Option<String>,
    wrote_console: bool,
    /// The console's output so far ends in the middle of a line.
    mid_line: bool,
    /// Keyboard input the console has not taken yet.
    to_guest: Vec<u8>,
}

impl Console<'_> {
    fn say(&mut self, text: &str) {
        if !self.opts.quiet {
            let newline = if self.mid_line { term::eol() } else { "" };
            self.mid_line = false;
            term::message(&format!("{newline}qemu-machine: {text}"));
        }
    }

    /// Hands the console as much of the keyboard input as it takes now, without waiting (the
    /// loop must keep copying output and handling signals meanwhile).
    fn send_to_guest(&mut self, vm: &mut Machine) {
        if self.to_guest.is_empty() {
            return;
        }
        match vm.console_write(&self.to_guest, Duration::ZERO) {
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

    /// Copies console output to stdout and prints events: one read of whatever is ready, then
    /// takes that do no I/O of their own, so nothing read here is left waiting for a wake-up
    /// that will not come. `Err` when stdout fails.
    fn drain(&mut self, vm: &mut Machine) -> std::io::Result<()> {
        // A failed read shows up again in the exit and connection checks of the caller's loop.
        let _ = vm.process_io();
        let bytes = vm.take_console();
        if let Some(&last) = bytes.last() {
            self.wrote_console = true;
            self.mid_line = last != b'\n';
            sys::write_all(STDOUT, &bytes)?;
        }
        for event in vm.take_events() {
            self.event(&event);
        }
        Ok(())
    }

    fn event(&mut self, event: &Event) {
        if event.name == "SHUTDOWN" {
            self.shutdown_reason = event
                .data
                .get("reason")
                .and_then(|r| r.as_str())
                .map(str::to_owned);
        }
        if event.name == "GUEST_PANICKED"
            || (event.name == "SHUTDOWN"
                && event.data.get("reason").and_then(|r| r.as_str()) == Some("guest-panic"))
        {
            self.panicked = true;
        }
        let show = match self.opts.events {
            Events::All => true,
            Events::Lifecycle => LIFECYCLE.contains(&event.name.as_str()),
            Events::None => false,
        };
        if show {
            let data = if event.data.is_null() {
                String::new()
            } else {
                format!(" {}", event.data)
            };
            self.say(&format!("event {}{data}", event.name));
        }
    }

    /// The loop: until QEMU exits or we decide to stop it.
    fn run(&mut self, vm: &mut Machine) -> End {
        let started = Instant::now();
        let stop_at = self.opts.run_for.map(|d| started + d);
        let mut stopping: Option<Stopping> = None;
        let mut stdin_open = true;
        let mut buf = vec![0u8; 4096];
        loop {
            // Before the drain: the write takes in whatever QEMU sent meanwhile.
            self.send_to_guest(vm);
            if let Err(e) = self.drain(vm) {
                return End::Output(e);
            }
            if let Some(status) = vm.exit_status() {
                return End::Exited(status, stopping);
            }
            let now = Instant::now();
            let deadline = match stopping {
                Some(s) => Some(s.deadline),
                None => stop_at,
            };
            if deadline.is_some_and(|at| at <= now) {
                if let Some(s) = stopping {
                    return End::Stop(s.reason, Some(now - s.pressed));
                }
                if let Some(end) = self.stop(vm, &mut stopping, Reason::Timer) {
                    return end;
                }
                continue;
            }
            let mut fds = [
                if stdin_open && self.to_guest.len() < TO_GUEST_LIMIT {
                    PollFd::new(STDIN, libc::POLLIN)
                } else {
                    PollFd::unused()
                },
                PollFd::new(vm.poll_sources().poll, libc::POLLIN),
                PollFd::new(self.signals.fd(), libc::POLLIN),
            ];
            let timeout = deadline.map(|at| at.saturating_duration_since(now));
            if let Err(e) = sys::poll(&mut fds, timeout) {
                log::error!("poll failed: {e}");
                return End::Stop(Reason::Quit, None);
            }
            if fds[2].readable() {
                for signal in self.signals.take() {
                    if let Some(end) = self.stop(vm, &mut stopping, Reason::Signal(signal)) {
                        return end;
                    }
                }
            }
            if fds[1].readable() {
                if let Err(e) = vm.process_io() {
                    log::debug!("processing QEMU's I/O: {e}");
                }
            }
            if fds[0].readable() {
                match sys::read(STDIN, &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        let actions = match self.parser.as_mut() {
                            Some(parser) => parser.feed(&buf[..n]),
                            None => vec![Action::Send(buf[..n].to_vec())],
                        };
                        for action in actions {
                            if let Some(end) = self.action(vm, &mut stopping, action) {
                                return end;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Stops the VM for `reason`: a guest with a disk to protect is asked first (the power
    /// button; the loop then waits for it until the deadline); otherwise, or when already
    /// waiting (a second request), QEMU is told to quit now.
    fn stop(
        &mut self,
        vm: &mut Machine,
        stopping: &mut Option<Stopping>,
        reason: Reason,
    ) -> Option<End> {
        if let Some(s) = stopping {
            return Some(End::Stop(reason, Some(s.pressed.elapsed())));
        }
        if self.powerdown.is_zero() {
            return Some(End::Stop(reason, None));
        }
        let why = self.why(reason);
        match vm.execute("system_powerdown", None) {
            Ok(_) => {
                self.say(&format!(
                    "{why}: pressed the power button; waiting up to {} for the guest to power off",
                    duration::show(self.powerdown)
                ));
                let now = Instant::now();
                *stopping = Some(Stopping {
                    reason,
                    pressed: now,
                    deadline: now + self.powerdown,
                });
                None
            }
            Err(e) => {
                self.say(&format!("{why}: the power button failed ({e})"));
                Some(End::Stop(reason, None))
            }
        }
    }

    /// What stopped the VM, for the messages.
    fn why(&self, reason: Reason) -> String {
        match reason {
            Reason::Timer => format!(
                "stopped after {}",
                duration::show(self.opts.run_for.unwrap_or_default())
            ),
            Reason::Quit => "quit".to_owned(),
            Reason::Signal(s) => format!("interrupted ({})", sys::signal_name(s)),
        }
    }

    fn action(
        &mut self,
        vm: &mut Machine,
        stopping: &mut Option<Stopping>,
        action: Action,
    ) -> Option<End> {
        match action {
            // What the console does not take now is sent again at the top of the loop.
            Action::Send(bytes) => {
                self.to_guest.extend_from_slice(&bytes);
                self.send_to_guest(vm);
            }
            Action::Quit => return self.stop(vm, stopping, Reason::Quit),
            Action::PowerButton => match vm.execute("system_powerdown", None) {
                Ok(_) => self.say("pressed the power button"),
                Err(e) => self.say(&format!("the power button failed: {e}")),
            },
            Action::Reset => match vm.reset() {
                Ok(()) => self.say("reset"),
                Err(e) => self.say(&format!("reset failed: {e}")),
            },
            Action::Status => match vm.status() {
                Ok(s) => self.say(&format!("status: {}", s.as_str())),
                Err(e) => self.say(&format!("status: {e}")),
            },
            Action::Help => self.say(escape::HELP.trim_end()),
            Action::Unknown(key) => self.say(&format!(
                "unknown escape key {}; Ctrl-] ? lists the keys",
                key_name(key)
            )),
        }
        None
    }

    /// The exit code for a stop that went as asked.
    fn code(reason: Reason) -> u8 {
        match reason {
            Reason::Signal(s) => exit::for_signal(s),
            Reason::Timer | Reason::Quit => exit::SUCCESS,
        }
    }

    /// Stops the VM if needed, and turns the way it ended into an exit code and a last line.
    fn finish(&mut self, vm: &mut Machine, end: End) -> CliResult {
        let (status, last) = match end {
            End::Output(e) => {
                let _ = vm.shutdown(self.opts.shutdown_timeout);
                return Err(Failure::failed(format!(
                    "writing the console to stdout: {e}"
                )));
            }
            End::Exited(status, Some(s)) => {
                let what = match self.shutdown_reason.as_deref() {
                    Some("guest-shutdown") | None => "the guest powered off".to_owned(),
                    Some(other) => format!("QEMU exited ({other})"),
                };
                (status, Some((s.reason, what)))
            }
            End::Exited(status, None) => {
                // A signal that arrived as QEMU went (a terminal's Ctrl-C reaches both).
                let signal = self.signals.take().first().copied();
                let last = signal.map(|s| (Reason::Signal(s), "QEMU exited".to_owned()));
                (status, last)
            }
            End::Stop(reason, waited) => match vm.shutdown(self.opts.shutdown_timeout) {
                Ok(status) => {
                    let what = match waited {
                        Some(d) => format!(
                            "QEMU was told to quit after {} s",
                            d.as_secs_f64().round() as u64
                        ),
                        None if self.opts.powerdown.is_none() && !self.disk => {
                            "QEMU was told to quit (the VM has no disk to protect; --powerdown \
                             asks the guest first)"
                                .to_owned()
                        }
                        None => "QEMU was told to quit".to_owned(),
                    };
                    (status, Some((reason, what)))
                }
                Err(e) => {
                    let _ = self.drain(vm);
                    return Err(Failure::new(
                        exit::ABNORMAL,
                        format!("{}: stopping the VM: {e}", self.why(reason)),
                    ));
                }
            },
        };
        let _ = self.drain(vm);
        if self.panicked {
            return Err(Failure::new(
                exit::ABNORMAL,
                format!("the guest panicked; QEMU exited ({status})"),
            ));
        }
        if !status.success() {
            let log = vm.log().unwrap_or_default();
            return Err(
                Failure::new(exit::ABNORMAL, format!("QEMU ended abnormally ({status})"))
                    .with_detail(log),
            );
        }
        match last {
            Some((reason, what)) => {
                let why = self.why(reason);
                self.say(&format!("{why}: {what}"));
                Ok(Self::code(reason))
            }
            None => match self.shutdown_reason.as_deref() {
                Some("guest-shutdown") | None => {
                    self.say("the guest powered off; QEMU exited cleanly");
                    Ok(exit::SUCCESS)
                }
                Some("guest-reset") => {
                    self.say("the guest rebooted and QEMU was told not to; QEMU exited cleanly");
                    Ok(exit::SUCCESS)
                }
                Some(other) => Err(Failure::new(
                    exit::ABNORMAL,
                    format!("QEMU was stopped from outside ({other}) and exited ({status})"),
                )),
            },
        }
    }
}

/// A key as the user would name it: `x`, or `Ctrl-X` for a control character.
pub fn key_name(key: u8) -> String {
    match key {
        0..=0x1f => format!("Ctrl-{}", char::from(key + 0x40)),
        0x7f => "Delete".to_owned(),
        0x20..=0x7e => format!("'{}'", char::from(key)),
        _ => format!("byte {key:#04x}"),
    }
}
