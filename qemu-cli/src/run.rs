//! `qemu-machine run`: a VM with the terminal on its serial console.
//!
//! One thread, one `poll`: the keyboard (stdin), the machine's poll descriptor (QMP, console,
//! QEMU's exit watch) and the signal pipe, with the `--for` or power-down deadline as the timeout.
//! The run ends when QEMU exits (the guest powered off), on Ctrl-C or a signal, on the escape
//! menu's quit, or when `--for` elapses; the last three shut the VM down gracefully (optionally
//! through the ACPI power button first). The terminal is restored on every path: the raw-mode
//! guard's `Drop`, the panic hook, and `main` before it exits.
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

/// The events `--events lifecycle` prints.
const LIFECYCLE: &[&str] = &[
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
    /// Press the power button first and wait this long.
    pub powerdown: Option<Duration>,
    /// How long QEMU may take to exit after `quit`.
    pub shutdown_timeout: Duration,
    /// Ctrl-C goes to the guest.
    pub pass_ctrl_c: bool,
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
    /// Ctrl-C or a signal.
    Signal(i32),
}

/// How the loop ended.
enum End {
    /// QEMU exited (the guest powered off, or QEMU failed); `Some` if we had asked for it.
    Exited(ExitStatus, Option<Reason>),
    /// We stop it now with `quit`.
    Stop(Reason),
    /// Writing the console out failed.
    Output(std::io::Error),
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
    let mut vm = launch::launch(&config)?;
    let interactive = term::is_tty(STDIN);
    if !opts.quiet {
        let status = vm
            .status()
            .map(|s| format!("{s:?}").to_lowercase())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        for line in launch::describe(&vm) {
            term::message(&format!("qemu-machine: {line}"));
        }
        term::message(&format!("qemu-machine: status: {status}"));
        let ctrl_c = if opts.pass_ctrl_c || !interactive {
            ""
        } else {
            ", Ctrl-C shuts the VM down"
        };
        term::message(&format!(
            "qemu-machine: console attached; Ctrl-] q quits, Ctrl-] ? lists the keys{ctrl_c}"
        ));
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
        parser: EscapeParser::new(interactive && !opts.pass_ctrl_c),
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
    parser: EscapeParser,
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
        // Set while waiting for the guest to power off after the power button.
        let mut powering_down: Option<(Instant, Reason)> = None;
        let mut stdin_open = true;
        let mut buf = vec![0u8; 4096];
        loop {
            // Before the drain: the write takes in whatever QEMU sent meanwhile.
            self.send_to_guest(vm);
            if let Err(e) = self.drain(vm) {
                return End::Output(e);
            }
            if let Some(status) = vm.exit_status() {
                return End::Exited(status, powering_down.map(|(_, r)| r));
            }
            let now = Instant::now();
            let deadline = match powering_down {
                Some((at, _)) => Some(at),
                None => stop_at,
            };
            if let Some(at) = deadline.filter(|at| *at <= now) {
                let _ = at;
                match powering_down {
                    Some((_, reason)) => {
                        self.say("the guest did not power off in time; quitting QEMU");
                        return End::Stop(reason);
                    }
                    None => match self.begin_stop(vm, Reason::Timer) {
                        Some(at) => powering_down = Some((at, Reason::Timer)),
                        None => return End::Stop(Reason::Timer),
                    },
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
                return End::Stop(Reason::Quit);
            }
            if fds[2].readable() {
                for signal in self.signals.take() {
                    if let Some(end) = self.interrupt(vm, &mut powering_down, signal) {
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
                        for action in self.parser.feed(&buf[..n]) {
                            if let Some(end) = self.action(vm, &mut powering_down, action) {
                                return end;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Starts stopping the VM: with `--powerdown`, presses the power button and returns the
    /// deadline for the guest; otherwise returns `None` (quit at once).
    fn begin_stop(&mut self, vm: &mut Machine, reason: Reason) -> Option<Instant> {
        let why = match reason {
            Reason::Timer => "time is up".to_owned(),
            Reason::Quit => "quit".to_owned(),
            Reason::Signal(s) => format!("interrupted ({})", sys::signal_name(s)),
        };
        let wait = self.opts.powerdown.filter(|d| !d.is_zero())?;
        match vm.execute("system_powerdown", None) {
            Ok(_) => {
                self.say(&format!(
                    "{why}: pressed the power button; waiting up to {} for the guest",
                    duration::show(wait)
                ));
                Some(Instant::now() + wait)
            }
            Err(e) => {
                self.say(&format!(
                    "{why}: the power button failed ({e}); quitting QEMU"
                ));
                None
            }
        }
    }

    fn interrupt(
        &mut self,
        vm: &mut Machine,
        powering_down: &mut Option<(Instant, Reason)>,
        signal: i32,
    ) -> Option<End> {
        let reason = Reason::Signal(signal);
        if powering_down.is_some() {
            // A second interrupt: do not wait for the guest any longer.
            return Some(End::Stop(reason));
        }
        match self.begin_stop(vm, reason) {
            Some(at) => {
                *powering_down = Some((at, reason));
                None
            }
            None => Some(End::Stop(reason)),
        }
    }

    fn action(
        &mut self,
        vm: &mut Machine,
        powering_down: &mut Option<(Instant, Reason)>,
        action: Action,
    ) -> Option<End> {
        match action {
            // What the console does not take now is sent again at the top of the loop.
            Action::Send(bytes) => {
                self.to_guest.extend_from_slice(&bytes);
                self.send_to_guest(vm);
            }
            Action::Interrupt => return self.interrupt(vm, powering_down, libc::SIGINT),
            Action::Quit => {
                if powering_down.is_some() {
                    return Some(End::Stop(Reason::Quit));
                }
                match self.begin_stop(vm, Reason::Quit) {
                    Some(at) => *powering_down = Some((at, Reason::Quit)),
                    None => return Some(End::Stop(Reason::Quit)),
                }
            }
            Action::PowerButton => match vm.execute("system_powerdown", None) {
                Ok(_) => self.say("pressed the power button"),
                Err(e) => self.say(&format!("the power button failed: {e}")),
            },
            Action::Reset => match vm.reset() {
                Ok(()) => self.say("reset"),
                Err(e) => self.say(&format!("reset failed: {e}")),
            },
            Action::Status => match vm.status() {
                Ok(s) => self.say(&format!("status: {}", format!("{s:?}").to_lowercase())),
                Err(e) => self.say(&format!("status: {e}")),
            },
            Action::Help => self.say(escape::HELP.trim_end()),
            Action::Unknown(key) => self.say(&format!(
                "unknown escape key {:?}; Ctrl-] ? lists the keys",
                char::from(key)
            )),
        }
        None
    }

    /// Stops the VM if needed, and turns the way it ended into an exit code.
    fn finish(&mut self, vm: &mut Machine, end: End) -> CliResult {
        let (status, reason) = match end {
            End::Exited(status, None) => {
                // A signal that arrived as QEMU went (a terminal's Ctrl-C reaches both).
                let signal = self.signals.take().first().copied();
                (status, signal.map(Reason::Signal))
            }
            End::Exited(status, reason) => (status, reason),
            End::Output(e) => {
                let _ = vm.shutdown(self.opts.shutdown_timeout);
                return Err(Failure::failed(format!(
                    "writing the console to stdout: {e}"
                )));
            }
            End::Stop(reason) => match vm.shutdown(self.opts.shutdown_timeout) {
                Ok(status) => (status, Some(reason)),
                Err(e) => {
                    let _ = self.drain(vm);
                    return Err(Failure::new(
                        exit::ABNORMAL,
                        format!("shutting the VM down: {e}"),
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
        match reason {
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
            Some(Reason::Timer) => {
                self.say(&format!(
                    "stopped after {}; QEMU exited cleanly",
                    duration::show(self.opts.run_for.unwrap_or_default())
                ));
                Ok(exit::SUCCESS)
            }
            Some(Reason::Quit) => {
                self.say("quit; QEMU exited cleanly");
                Ok(exit::SUCCESS)
            }
            Some(Reason::Signal(s)) => {
                self.say(&format!(
                    "interrupted ({}); the VM was shut down cleanly",
                    sys::signal_name(s)
                ));
                Ok(exit::for_signal(s))
            }
        }
    }
}
