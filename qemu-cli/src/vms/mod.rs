//! VMs that outlive one command: `start`, `list`, `console`, `qmp NAME`, `exec`, `stop`, `kill`.
//!
//! `start` claims the VM's entry in the per-user state directory ([`state`]) and runs a
//! supervisor ([`supervisor`]): this same program in a hidden mode, in a session of its own, that
//! launches the VM, holds its `Machine` and serves a control socket ([`control`]) until QEMU
//! exits. The other commands find the VM by name and talk to its supervisor.

pub mod console;
pub mod control;
pub mod state;
pub mod supervisor;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{json, Value};

use crate::duration;
use crate::exit::{self, CliResult, Failure};
use crate::launch::{Report, Shown};
use crate::term;
use crate::vmargs::VmArgs;
use control::{ExecOutput, Request, Stopped};
use state::Entry;

/// `start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub vm: VmArgs,
    /// Also write the console output to this file (created with mode 0600).
    #[arg(long, value_name = "PATH")]
    pub console_log: Option<std::path::PathBuf>,
    /// How long QEMU may take to start.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "30s")]
    pub launch_timeout: Duration,
    /// Leave out the guest agent's channel (a virtio-serial port `org.qemu.guest_agent.0`,
    /// which `exec` talks to).
    #[arg(long)]
    pub no_guest_agent: bool,
}

/// `list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON (an array of objects) instead of a table; each also says whether the
    /// guest agent runs (`guest_agent`: "running", "not running", or "none" without a channel).
    #[arg(long)]
    pub json: bool,
}

/// `console`.
#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// The VM's name.
    pub name: String,
    /// Take the console over from another client that has it.
    #[arg(long)]
    pub force: bool,
    /// Detach after this long (for scripts; default: when asked).
    #[arg(long = "for", value_name = "DURATION", value_parser = duration::parse)]
    pub run_for: Option<Duration>,
}

/// `exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The VM's name.
    pub name: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// How long the command may run.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "60s")]
    pub timeout: Duration,
}

/// `stop`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// The VM's name.
    pub name: String,
    /// How long the guest has to power off after the ACPI power button before QEMU is told to
    /// quit (0: quit at once).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "30s")]
    pub timeout: Duration,
}

/// `kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// The VM's name.
    pub name: String,
}

/// The hidden `__supervise` mode.
#[derive(Args, Debug)]
pub struct SuperviseArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub dir: std::path::PathBuf,
    #[arg(long)]
    pub lock_fd: i32,
}

/// How long an answer to a quick request may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long QEMU may take to exit once told to quit (the supervisor's bound), plus slack.
const QUIT_SLACK: Duration = Duration::from_secs(30);

/// Runs `start`.
pub fn start(args: StartArgs, quiet: bool) -> CliResult {
    let mut config = args.vm.to_config()?;
    config.console(true).launch_timeout(args.launch_timeout);
    if !args.no_guest_agent {
        if let Some(vm) = config.get_vm() {
            let mut vm = vm.clone();
            vm.spec.guest_agent = true;
            config.vm(vm);
        }
    }
    if let Some(log) = &args.console_log {
        config.console_log(log);
    }
    let name = args
        .vm
        .name
        .clone()
        .or_else(|| config.get_vm().and_then(|vm| vm.spec.name.clone()))
        .ok_or_else(|| Failure::usage("start: give the VM a name with --name NAME"))?;
    state::check_name(&name)?;
    let json = config
        .to_json()
        .map_err(|e| Failure::failed(format!("cannot describe the VM: {e}")))?;
    let (entry, lock) = state::claim(&name)?;
    let result = spawn_supervisor(&entry, &lock, &json, quiet);
    if result.is_err() {
        // The supervisor is gone or never ran: its entry goes too.
        drop(lock);
        let _ = entry.probe();
    }
    result
}

fn spawn_supervisor(
    entry: &Entry,
    lock: &std::fs::File,
    config_json: &str,
    quiet: bool,
) -> CliResult {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find this program to run it again: {e}")))?;
    let log = std::fs::File::options()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(entry.log_path())
        .map_err(|e| Failure::failed(format!("creating {}: {e}", entry.log_path().display())))?;
    let lock_fd = lock.as_raw_fd();
    // The lock is handed to the supervisor as an inherited descriptor (the one moment it is
    // not close-on-exec; this program runs no other thread that could fork meanwhile).
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(lock_fd, libc::F_SETFD, 0) };
    let spawned = Command::new(&exe)
        .arg("__supervise")
        .arg("--name")
        .arg(&entry.name)
        .arg("--dir")
        .arg(&entry.dir)
        .arg("--lock-fd")
        .arg(lock_fd.to_string())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn();
    // SAFETY: as above.
    unsafe { libc::fcntl(lock_fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut child =
        spawned.map_err(|e| Failure::failed(format!("cannot run {}: {e}", exe.display())))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        // A supervisor that died at once shows up below as an end without a word.
        let _ = stdin.write_all(config_json.as_bytes());
    }
    let stdout = child.stdout.take().expect("piped");
    let mut shown = Shown::new(quiet);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(text) = value.get("line").and_then(Value::as_str) {
            shown.show(Report::Line(text.to_owned()));
        } else if let Some(f) = value.get("flash") {
            let label = f["label"].as_str().unwrap_or("flashing").to_owned();
            shown.show(Report::Flash(label, f["fraction"].as_f64().unwrap_or(0.0)));
        } else if let Some(started) = value.get("started") {
            drop(shown);
            if !quiet {
                term::message(&format!(
                    "qemu-machine: started VM {} (supervisor pid {})",
                    entry.name,
                    child.id()
                ));
                for l in started["lines"].as_array().into_iter().flatten() {
                    term::message(&format!("qemu-machine: {}", l.as_str().unwrap_or("")));
                }
            }
            // The supervisor goes on; it is not waited for.
            return Ok(exit::SUCCESS);
        } else if let Some(failed) = value.get("failed") {
            drop(shown);
            let _ = child.wait();
            let code = failed["code"].as_u64().map_or(exit::LAUNCH, |c| c as u8);
            let message = failed["message"].as_str().unwrap_or("").to_owned();
            let mut failure = Failure::new(code, message);
            if let Some(detail) = failed["detail"].as_str() {
                failure = failure.with_detail(detail);
            }
            return Err(failure);
        }
    }
    let status = child.wait();
    let log = std::fs::read_to_string(entry.log_path()).unwrap_or_default();
    Err(Failure::new(
        exit::LAUNCH,
        format!(
            "the supervisor of VM {} ended before the VM was up ({}); its log:",
            entry.name,
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        ),
    )
    .with_detail(log))
}

use std::os::unix::fs::OpenOptionsExt;

/// `1d02h`, `3h05m`, `4m07s`, `12s`.
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Runs `list`.
pub fn list(args: &ListArgs, quiet: bool) -> CliResult {
    let root = state::root()?;
    let (live, stale) = state::entries(&root)?;
    if !quiet {
        for name in &stale {
            term::message(&format!(
                "qemu-machine: removed the stale entry of VM {name} (its supervisor had gone)"
            ));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = Vec::new();
    for (entry, info) in live {
        let (state, agent) = match &info {
            None => ("starting".to_owned(), Value::Null),
            Some(_) => match control::request(&entry, &Request::Info, Duration::from_secs(3)) {
                Ok((_, v)) => (
                    v["state"].as_str().unwrap_or("unknown").to_owned(),
                    json!(match (
                        v["guest_agent"].as_bool(),
                        v["guest_agent_running"].as_bool()
                    ) {
                        (Some(false), _) => "none",
                        (_, Some(true)) => "running",
                        _ => "not running",
                    }),
                ),
                Err(_) => ("unresponsive".to_owned(), Value::Null),
            },
        };
        rows.push((entry, info, state, agent));
    }
    if args.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(entry, info, state, agent)| {
                json!({
                    "name": entry.name,
                    "state": state,
                    "pid": info.as_ref().map(|i| i.qemu_pid),
                    "supervisor_pid": info.as_ref().map(|i| i.supervisor_pid),
                    "started": info.as_ref().map(|i| i.started),
                    "uptime_s": info.as_ref().map(|i| now.saturating_sub(i.started)),
                    "qemu_version": info.as_ref().map(|i| i.qemu_version.clone()),
                    "forwards": info.as_ref().map(|i| i.forwards.clone()).unwrap_or_default(),
                    "guest_agent": agent,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).unwrap_or_default();
        crate::print_stdout(&format!("{text}\n"))?;
        return Ok(exit::SUCCESS);
    }
    if rows.is_empty() {
        return Ok(exit::SUCCESS);
    }
    let width = rows
        .iter()
        .map(|(e, ..)| e.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut text = format!(
        "{:<width$}  {:>7}  {:<12}  {:>7}  FORWARDS\n",
        "NAME", "PID", "STATE", "UPTIME"
    );
    for (entry, info, state, _) in &rows {
        let pid = info
            .as_ref()
            .map_or_else(|| "-".to_owned(), |i| i.qemu_pid.to_string());
        let up = info
            .as_ref()
            .map_or_else(|| "-".to_owned(), |i| uptime(now.saturating_sub(i.started)));
        let forwards = info
            .as_ref()
            .map(|i| {
                i.forwards
                    .iter()
                    .map(|f| f.strip_prefix("port ").unwrap_or(f).to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        text.push_str(&format!(
            "{:<width$}  {pid:>7}  {state:<12}  {up:>7}  {forwards}\n",
            entry.name
        ));
    }
    crate::print_stdout(&text)?;
    Ok(exit::SUCCESS)
}

/// A QMP connection to a started VM, for `qmp NAME`: `None` when no VM of that name runs.
pub fn qmp_connection(name: &str) -> Result<Option<std::os::fd::OwnedFd>, Failure> {
    if state::check_name(name).is_err() {
        return Ok(None);
    }
    let root = state::root()?;
    let entry = Entry::new(&root, name);
    match entry.probe() {
        Some(state::Probe::Live(_)) => {
            let (stream, _) = control::request(&entry, &Request::Qmp, ANSWER_TIMEOUT)?;
            Ok(Some(stream.into()))
        }
        _ => Ok(None),
    }
}

/// Runs `stop`.
pub fn stop(args: &StopArgs, quiet: bool) -> CliResult {
    let (entry, _) = state::find(&args.name)?;
    let (_, value) = control::request(
        &entry,
        &Request::Stop {
            timeout_ms: args.timeout.as_millis().try_into().unwrap_or(u64::MAX),
        },
        args.timeout + QUIT_SLACK,
    )?;
    finish_stop(&entry, value, quiet)
}

fn finish_stop(entry: &Entry, value: Value, quiet: bool) -> CliResult {
    let stopped: Stopped = serde_json::from_value(value)
        .map_err(|e| Failure::failed(format!("VM {}: a bad answer: {e}", entry.name)))?;
    wait_gone(entry);
    if stopped.outcome == "killed" {
        return Err(Failure::new(
            exit::ABNORMAL,
            format!("VM {}: {}", entry.name, stopped.message),
        ));
    }
    if !quiet {
        term::message(&format!(
            "qemu-machine: VM {}: {}",
            entry.name, stopped.message
        ));
    }
    Ok(exit::SUCCESS)
}

/// Waits (a little) for the supervisor to release the entry after it answered.
fn wait_gone(entry: &Entry) {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < end {
        if !matches!(entry.probe(), Some(state::Probe::Live(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `kill`: through the supervisor; when it does not answer, by killing the supervisor
/// (which takes QEMU with it).
pub fn kill(args: &KillArgs, quiet: bool) -> CliResult {
    let (entry, info) = state::find(&args.name)?;
    match control::request(&entry, &Request::Kill, ANSWER_TIMEOUT) {
        Ok((_, value)) => {
            let stopped: Stopped = serde_json::from_value(value)
                .map_err(|e| Failure::failed(format!("VM {}: a bad answer: {e}", entry.name)))?;
            wait_gone(&entry);
            if !quiet {
                term::message(&format!(
                    "qemu-machine: VM {}: {}",
                    entry.name, stopped.message
                ));
            }
            Ok(exit::SUCCESS)
        }
        Err(e) => {
            let Some(info) = info else {
                return Err(e);
            };
            log::warn!("{}; killing its supervisor", e.message);
            // Still locked by it (checked just before): the pid is the supervisor's.
            if let Some(state::Probe::Live(_)) = entry.probe() {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(info.supervisor_pid as libc::pid_t, libc::SIGKILL) };
            }
            wait_gone(&entry);
            if !quiet {
                term::message(&format!(
                    "qemu-machine: VM {}: its supervisor did not answer and was killed, and \
                     QEMU with it",
                    entry.name
                ));
            }
            Ok(exit::SUCCESS)
        }
    }
}

/// The most output `exec` takes from its supervisor per stream (qemu-ga keeps at most 16 MiB).
const EXEC_OUTPUT_MAX: u64 = 64 << 20;

/// Runs `exec`.
pub fn exec(args: &ExecArgs) -> CliResult {
    let (entry, _) = state::find(&args.name)?;
    let (mut stream, value) = control::request(
        &entry,
        &Request::Exec {
            argv: args.command.clone(),
            timeout_ms: args.timeout.as_millis().try_into().unwrap_or(u64::MAX),
        },
        args.timeout + ANSWER_TIMEOUT,
    )?;
    let bad = |what: String| Failure::failed(format!("VM {}: a bad answer: {what}", entry.name));
    let out: ExecOutput = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if out.stdout_len > EXEC_OUTPUT_MAX || out.stderr_len > EXEC_OUTPUT_MAX {
        return Err(bad(format!(
            "{} + {} bytes of output",
            out.stdout_len, out.stderr_len
        )));
    }
    let mut read = |len: u64| -> Result<Vec<u8>, Failure> {
        let mut bytes = Vec::new();
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .and_then(|()| (&mut stream).take(len).read_to_end(&mut bytes))
            .map_err(|e| bad(format!("reading the command's output: {e}")))?;
        if bytes.len() as u64 != len {
            return Err(bad(format!(
                "the output ended after {} of {len} bytes",
                bytes.len()
            )));
        }
        Ok(bytes)
    };
    let stdout = read(out.stdout_len)?;
    let stderr = read(out.stderr_len)?;
    exec_output(&out, &stdout, &stderr)
}

/// Shows what a command run in the guest printed, and exits with its exit code: 128 + the
/// signal for one a signal ended, 255 for one out of range.
fn exec_output(out: &ExecOutput, stdout: &[u8], stderr: &[u8]) -> CliResult {
    {
        let mut o = std::io::stdout().lock();
        o.write_all(stdout)
            .and_then(|()| o.flush())
            .map_err(|e| Failure::failed(format!("writing to stdout: {e}")))?;
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(stderr);
    for (truncated, name) in [
        (out.stdout_truncated, "standard output"),
        (out.stderr_truncated, "standard error"),
    ] {
        if truncated {
            let _ = writeln!(
                err,
                "qemu-machine: the guest agent cut the command's {name} short (it keeps at \
                 most 16 MiB)"
            );
        }
    }
    Ok(match (out.exit_code, out.signal) {
        (Some(code), _) => u8::try_from(code).unwrap_or(255),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 255,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes() {
        assert_eq!(uptime(12), "12s");
        assert_eq!(uptime(247), "4m07s");
        assert_eq!(uptime(3 * 3600 + 5 * 60), "3h05m");
        assert_eq!(uptime(86400 + 2 * 3600 + 59), "1d02h");
    }

    #[test]
    fn an_exec_exits_with_the_commands_code() {
        let out = ExecOutput {
            exit_code: Some(3),
            signal: None,
            stdout_len: 0,
            stderr_len: 0,
            stdout_truncated: false,
            stderr_truncated: false,
        };
        assert_eq!(exec_output(&out, b"", b"").unwrap(), 3);
        let out = ExecOutput {
            exit_code: Some(-1),
            ..out
        };
        assert_eq!(exec_output(&out, b"", b"").unwrap(), 255);
        let out = ExecOutput {
            exit_code: None,
            signal: Some(9),
            ..out
        };
        assert_eq!(exec_output(&out, b"", b"").unwrap(), 137);
    }
}
