//! VMs that outlive one command, against a real QEMU: `start`, `list`, `console`, `qmp NAME`,
//! `exec`, `stop`, `kill`; the supervisor surviving its terminal, taking QEMU with it when
//! killed, and stale entries cleaned. Each test has its own runtime directory
//! (`XDG_RUNTIME_DIR`), and kills what it started when it ends, even on failure.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use qemu_machine_tests::fixture::{GuestFixture, POWER_BUTTON_LINE, PROMPT, READY_LINE};
use qemu_machine_tests::qga::{agent_cmdline, guest_initrd_with_agent};
use qemu_machine_tests::support::{
    find, process_exists, run_deadline, scratch, show, signal, PtyChild, TempDir,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const BOOT: Duration = Duration::from_secs(90);

/// A runtime directory for one test's VMs; every VM in it is killed when it drops.
struct Vms {
    scratch: TempDir,
}

impl Vms {
    fn new(tag: &str) -> Vms {
        let scratch = scratch(&format!("vms-{tag}"));
        std::fs::create_dir_all(scratch.path().join("run")).unwrap();
        Vms { scratch }
    }

    fn runtime(&self) -> PathBuf {
        self.scratch.path().join("run")
    }

    /// The state directory the command uses.
    fn state(&self) -> PathBuf {
        self.runtime().join("qemu-machine")
    }

    fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = cmd(args);
        c.env("XDG_RUNTIME_DIR", self.runtime());
        c
    }

    fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_deadline(self.cmd(args), T)
    }

    /// Runs and expects exit code 0.
    fn ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", show(&out));
        out
    }

    fn pty<I, S>(&self, args: I) -> PtyChild
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let rt = self.runtime();
        pty_with(args, &[("XDG_RUNTIME_DIR", rt.as_os_str())], false)
    }

    /// `list --json`.
    fn list(&self) -> Vec<Value> {
        let out = self.ok(["list", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The entry of `name` in `list --json`.
    fn entry(&self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no VM {name} in the list"))
    }
}

impl Drop for Vms {
    fn drop(&mut self) {
        let Ok(out) = self.cmd(["list", "--json"]).output() else {
            return;
        };
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for vm in list {
            let name = vm["name"].as_str().unwrap_or_default().to_owned();
            let _ = run_deadline(self.cmd(["kill", &name]), T);
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture() -> GuestFixture {
    GuestFixture::get().unwrap_or_else(|e| panic!("{e}"))
}

/// `start` arguments booting the fixture to its shell under TCG.
fn fixture_start(name: &str, fx: &GuestFixture) -> Vec<String> {
    vec![
        "start".into(),
        "--name".into(),
        name.into(),
        "--accel".into(),
        "tcg".into(),
        "-m".into(),
        "256M".into(),
        "--kernel".into(),
        fx.kernel.display().to_string(),
        "--initrd".into(),
        fx.initrd.display().to_string(),
        "--append".into(),
        fx.kernel_cmdline(&[], ""),
    ]
}

#[test]
fn start_list_qmp_exec_stop() {
    require_qemu();
    let vms = Vms::new("life");
    let out = vms.ok([
        "start",
        "--name",
        "web",
        "--accel",
        "tcg",
        "--forward",
        "http=0:80",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("qemu-machine: started VM web (supervisor pid "),
        "{stderr}"
    );
    assert!(stderr.contains("started (pid "), "{stderr}");
    assert!(stderr.contains("port http: 127.0.0.1:"), "{stderr}");

    // Everything it keeps is the owner's alone.
    let dir = vms.state().join("web");
    assert_eq!(mode(&vms.state()), 0o700);
    assert_eq!(mode(&dir), 0o700);
    for f in ["ctl.sock", "info.json", "lock", "supervisor.log"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    // list: the table and JSON.
    let table = text(&vms.ok(["list"]).stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    for column in ["NAME", "PID", "STATE", "UPTIME", "FORWARDS"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(lines[1].starts_with("web "), "{table}");
    assert!(lines[1].contains(" running "), "{table}");
    assert!(lines[1].contains("http: 127.0.0.1:"), "{table}");
    let vm = vms.entry("web");
    assert_eq!(vm["state"], "running");
    let qemu = vm["pid"].as_u64().unwrap() as u32;
    let supervisor = vm["supervisor_pid"].as_u64().unwrap() as u32;
    assert!(process_exists(qemu) && process_exists(supervisor));
    assert_eq!(vm["forwards"].as_array().unwrap().len(), 1);

    // A second VM of the same name is refused.
    let out = vms.run(["start", "--name", "web", "--accel", "tcg"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains(&format!(
            "a VM named web is already running (QEMU pid {qemu})"
        )),
        "{}",
        show(&out)
    );

    // qmp NAME: the shell on it, with its events.
    let mut c = vms.cmd(["qmp", "web", "--compact"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"query-status\nstop\nquery-status\ncont\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    let vals: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let replies: Vec<&Value> = vals.iter().filter(|v| v.get("event").is_none()).collect();
    assert_eq!(replies[0]["return"]["status"], "running", "{stdout}");
    assert_eq!(replies[2]["return"]["status"], "paused", "{stdout}");
    let events: Vec<&str> = vals.iter().filter_map(|v| v["event"].as_str()).collect();
    assert!(
        events.contains(&"STOP") && events.contains(&"RESUME"),
        "{stdout}"
    );
    // The shell leaves a started VM running.
    assert!(process_exists(qemu));
    assert_eq!(vms.entry("web")["state"], "running");

    // exec: the VM has the agent's channel, but nothing in the guest (firmware only) opened
    // it: said plainly, at once.
    assert_eq!(vms.entry("web")["guest_agent"], "not running");
    let out = vms.run(["exec", "web", "--", "uname", "-a"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "qemu-machine: error: VM web: cannot run \"uname\": no guest agent runs in the guest \
         (it has not opened its port): install qemu-guest-agent in the guest and start it, or \
         wait for the guest to finish booting\n"
    );

    // stop: the firmware ignores the power button, so QEMU is told to quit after the timeout.
    let out = vms.ok(["stop", "web", "--timeout", "1s"]);
    assert_eq!(
        text(&out.stderr),
        "qemu-machine: VM web: QEMU was told to quit after 1 s\n"
    );
    assert!(!process_exists(qemu), "QEMU {qemu} is gone");
    wait_until(T, "the supervisor to exit", || !process_exists(supervisor));
    assert!(vms.list().is_empty());
    assert!(!dir.exists(), "the entry is removed");
    let out = vms.run(["stop", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("no VM named web is running"));
    let out = vms.run(["qmp", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "qemu-machine: error: web: no VM of that name is running (`qemu-machine list` lists \
         them), and there is no spec file of that name\n"
    );
}

/// `exec` against the busybox guest with a real qemu-ga in it: output and exit codes passed
/// through as they are, a signal's exit code, the timeout, the supervisor serving others while
/// a command runs, and `--no-guest-agent`.
#[test]
fn exec_runs_commands_in_the_guest_through_its_agent() {
    require_qemu();
    let fx = fixture();
    let vms = Vms::new("exec");
    let initrd = guest_initrd_with_agent(&fx, vms.scratch.path()).unwrap();
    let mut args = fixture_start("ga", &fx);
    let at = args.iter().position(|a| a == "--initrd").unwrap();
    args[at + 1] = initrd.display().to_string();
    let at = args.iter().position(|a| a == "--append").unwrap();
    args[at + 1] = agent_cmdline(&fx, &[], "");
    vms.ok(&args);

    // The agent starts when the guest has booted: until then exec says it does not run.
    wait_until(BOOT, "the guest agent to run", || {
        vms.entry("ga")["guest_agent"] == "running"
    });

    // Output and exit code, as they are: stdout, stderr, binary bytes, a code of 3.
    let out = vms.run([
        "exec",
        "ga",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; printf '\\000\\377'; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(out.stdout, b"out\n\x00\xff");
    assert_eq!(out.stderr, b"err\n");

    // A command ended by a signal: 128 + the signal, as a shell reports it.
    let out = vms.run(["exec", "ga", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", show(&out));

    // A program that does not exist: the agent's error, named.
    let out = vms.run(["exec", "ga", "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).starts_with("qemu-machine: error: VM ga: \"/no/such/program\": "),
        "{}",
        show(&out)
    );

    // While a command runs, the supervisor serves its other clients: `list` asks it for the
    // VM's state and gets it while `exec` still waits.
    let mut long = vms.cmd(["exec", "ga", "--timeout", "5m", "--", "sleep", "600"]);
    long.stdout(Stdio::null()).stderr(Stdio::null());
    let mut long = long.spawn().unwrap();
    let mut served = false;
    wait_until(T, "the long command to start", || {
        // Once its pid is in the guest's process list, the command runs.
        let ps = vms.run(["exec", "ga", "--", "sh", "-c", "ps | grep -c '[s]leep 600'"]);
        served = ps.status.code() == Some(0);
        served
    });
    assert!(served);
    assert_eq!(vms.entry("ga")["state"], "running");
    assert!(
        long.try_wait().unwrap().is_none(),
        "exec of sleep 600 ended"
    );
    long.kill().unwrap();
    long.wait().unwrap();

    // A command over its timeout: said, and left running in the guest.
    let out = vms.run(["exec", "ga", "--timeout", "1s", "--", "sleep", "600"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "qemu-machine: error: VM ga: \"sleep\" did not end within 1s: it still runs in the \
             guest as pid "
        ),
        "{stderr}"
    );

    // Without the channel: refused, naming why.
    vms.ok([
        "start",
        "--name",
        "bare",
        "--accel",
        "tcg",
        "--no-guest-agent",
    ]);
    assert_eq!(vms.entry("bare")["guest_agent"], "none");
    let out = vms.run(["exec", "bare", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "qemu-machine: error: VM bare: cannot run \"true\": the VM has no guest agent channel \
         (it was started with --no-guest-agent, or from raw QEMU arguments)\n"
    );
    vms.ok(["kill", "bare"]);
    vms.ok(["stop", "ga", "--timeout", "0s"]);
}

#[test]
fn killing_the_supervisor_takes_qemu_and_the_stale_entry_is_cleaned() {
    require_qemu();
    let vms = Vms::new("stale");
    vms.ok(["start", "--name", "a", "--accel", "tcg"]);
    vms.ok(["start", "--name", "b", "--accel", "tcg"]);
    let a = vms.entry("a");
    let (qemu, supervisor) = (
        a["pid"].as_u64().unwrap() as u32,
        a["supervisor_pid"].as_u64().unwrap() as u32,
    );
    // SAFETY: kill(2) has no memory effects.
    let rc = unsafe { libc::kill(supervisor as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0);
    // The library's guardian sees its owner die and kills QEMU.
    wait_until(T, "QEMU to die with its supervisor", || {
        !process_exists(qemu)
    });
    let out = vms.ok(["list"]);
    assert_eq!(
        text(&out.stderr),
        "qemu-machine: removed the stale entry of VM a (its supervisor had gone)\n"
    );
    let table = text(&out.stdout);
    assert!(!table.contains("\na "), "{table}");
    assert!(table.contains("\nb "), "{table}");
    assert!(!vms.state().join("a").exists());
    // The other commands find a stale entry too.
    let b = vms.entry("b");
    let b_supervisor = b["supervisor_pid"].as_u64().unwrap() as u32;
    let b_qemu = b["pid"].as_u64().unwrap() as u32;
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(b_supervisor as libc::pid_t, libc::SIGKILL) };
    wait_until(T, "QEMU b to die", || !process_exists(b_qemu));
    let out = vms.run(["console", "b"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("no VM named b is running (its entry was stale"),
        "{}",
        show(&out)
    );
    assert!(vms.list().is_empty());
}

#[test]
fn the_supervisor_survives_its_terminal_closing() {
    require_qemu();
    let vms = Vms::new("hangup");
    let rt = vms.runtime();
    // `start` as a shell in a terminal window runs it: in a session whose controlling
    // terminal is the pty.
    let mut pty = pty_with(
        ["start", "--name", "bg", "--accel", "tcg"],
        &[("XDG_RUNTIME_DIR", rt.as_os_str())],
        true,
    );
    let status = pty.finish(T);
    assert_eq!(status.code(), Some(0), "{}", pty.text());
    let start_pid = pty.child.id();
    // The terminal goes away (its session was hung up when `start`, its leader, exited).
    pty.close_terminal();
    let vm = vms.entry("bg");
    let supervisor = vm["supervisor_pid"].as_u64().unwrap() as u32;
    assert_eq!(
        session_of(supervisor),
        Some(supervisor),
        "the supervisor leads a session of its own"
    );
    assert_ne!(Some(start_pid), session_of(supervisor));
    // Still there a while later, and working.
    std::thread::sleep(Duration::from_secs(1));
    let vm = vms.entry("bg");
    assert_eq!(vm["state"], "running");
    let out = vms.ok(["kill", "bg"]);
    assert!(
        text(&out.stderr).starts_with("qemu-machine: VM bg: QEMU was killed"),
        "{}",
        show(&out)
    );
    let qemu = vm["pid"].as_u64().unwrap() as u32;
    assert!(!process_exists(qemu));
    assert!(vms.list().is_empty());
}

#[test]
fn console_attach_detach_takeover_and_stop_through_acpi() {
    require_qemu();
    let fx = fixture();
    let vms = Vms::new("console");
    let log = vms.scratch.path().join("console.log");
    let mut args = fixture_start("guest", &fx);
    args.extend(["--console-log".into(), log.display().to_string()]);
    vms.ok(&args);
    let mut pty = vms.pty(["console", "guest"]);
    pty.diagnostics = Some(log.clone());
    let at = pty.expect_from(
        0,
        "attached to the console of VM guest; Ctrl-] d detaches (the VM keeps running)",
        BOOT,
    );
    // Output is not replayed: ask for a prompt.
    let at = wait_for_prompt(&mut pty, at);
    pty.write(b"echo $((6*7))\r");
    let at = pty.expect_from(at, "42", BOOT);
    let at = pty.expect_from(at, PROMPT, BOOT);
    // Ctrl-C goes to the guest (once the command runs).
    pty.write(b"sh -c 'echo zz-$((3+4)); exec sleep 600'\r");
    let at = pty.expect_from(at, "zz-7", BOOT);
    pty.write(b"\x03");
    let at = pty.expect_from(at, PROMPT, BOOT);
    pty.write(b"\x1ds");
    let at = pty.expect_from(at, "status: running", BOOT);
    pty.write(b"\x1dd");
    let status = pty.finish(T);
    assert_eq!(status.code(), Some(0), "{}", pty.text());
    assert!(
        pty.text()[at..].contains("detached from VM guest (it keeps running)"),
        "{}",
        pty.text()
    );
    assert_ne!(pty.lflags() & libc::ICANON, 0, "terminal restored");
    assert_eq!(vms.entry("guest")["state"], "running");

    // Attached again; a second client is refused, unless it forces its way in.
    let mut first = vms.pty(["console", "guest"]);
    first.expect_from(0, "attached to the console", BOOT);
    let out = vms.run(["console", "guest"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("the console of VM guest is attached elsewhere"),
        "{}",
        show(&out)
    );
    // Scripted: --for detaches, standard input goes to the guest.
    let mut c = vms.cmd(["console", "guest", "--force", "--for", "5s"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"\recho scripted-$((2+3))\r")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("scripted-5"), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("standard input goes to the guest"),
        "{}",
        show(&out)
    );
    let status = first.finish(T);
    assert_eq!(status.code(), Some(0), "{}", first.text());
    assert!(
        first
            .text()
            .contains("the console of VM guest was taken over by another client"),
        "{}",
        first.text()
    );

    // stop: the guest hears the power button and powers off; an attached console sees it.
    let mut watching = vms.pty(["console", "guest"]);
    watching.expect_from(0, "attached to the console", BOOT);
    let out = vms.ok(["stop", "guest"]);
    assert_eq!(
        text(&out.stderr),
        "qemu-machine: VM guest: the guest powered off\n"
    );
    let at = watching.expect_from(0, POWER_BUTTON_LINE, BOOT);
    let status = watching.finish(T);
    assert_eq!(status.code(), Some(0), "{}", watching.text());
    assert!(
        watching.text()[at..].contains("VM guest has stopped"),
        "{}",
        watching.text()
    );
    assert!(vms.list().is_empty());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(READY_LINE), "{logged}");
}

/// Presses Enter until the guest's prompt shows (the guest may still be booting); returns
/// where it ends.
fn wait_for_prompt(pty: &mut PtyChild, from: usize) -> usize {
    let end = std::time::Instant::now() + BOOT;
    loop {
        pty.write(b"\r");
        pty.drain(Duration::from_millis(500));
        let hay = &pty.output[from.min(pty.output.len())..];
        if let Some(p) = find(hay, PROMPT.as_bytes()) {
            return from + p + PROMPT.len();
        }
        assert!(std::time::Instant::now() < end, "no prompt: {}", pty.text());
    }
}

#[test]
fn start_failures_leave_nothing_behind() {
    require_qemu();
    let vms = Vms::new("bad");
    let out = vms.run([
        "start",
        "--name",
        "x",
        "--accel",
        "tcg",
        "--qemu-arg=-no-such-option",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("QEMU exited during launch"), "{stderr}");
    assert!(
        stderr.contains("-no-such-option: invalid option"),
        "{stderr}"
    );
    let out = vms.run([
        "start",
        "--name",
        "y",
        "--disk",
        "/tmp/qm-never.qcow2,size=8M,flash=/no/such/src.img",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("flash source: /no/such/src.img does not exist"),
        "{}",
        show(&out)
    );
    for name in ["../x", "-x", ".hidden"] {
        let out = vms.run(["start", "--accel", "tcg", &format!("--name={name}")]);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(
            text(&out.stderr).contains(&format!("{name:?} is not a VM name")),
            "{}",
            show(&out)
        );
    }
    assert!(vms.list().is_empty());
    let entries: Vec<_> = std::fs::read_dir(vms.state()).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
}

#[test]
fn an_unsafe_state_directory_is_refused() {
    let vms = Vms::new("unsafe");
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(vms.state()).unwrap();
    std::fs::set_permissions(vms.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = vms.run(["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("mode 0755 lets others in (it must be 0700)"),
        "{}",
        show(&out)
    );
    std::fs::remove_dir(vms.state()).unwrap();
    std::os::unix::fs::symlink("/tmp", vms.state()).unwrap();
    let out = vms.run(["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("a symlink is refused"),
        "{}",
        show(&out)
    );
    std::fs::remove_file(vms.state()).unwrap();
    // Without XDG_RUNTIME_DIR: /run/user/UID when it exists, else the temp dir.
    // SAFETY: getuid has no failure mode.
    let uid = unsafe { libc::getuid() };
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    let tmp = vms.scratch.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut c = cmd(["list"]);
    c.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &tmp);
    let out = run_deadline(c, T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let expected = if run_user.is_dir() {
        run_user.join("qemu-machine")
    } else {
        tmp.join(format!("qemu-machine-{uid}"))
    };
    assert_eq!(mode(&expected), 0o700, "{}", expected.display());
}

#[test]
fn stop_kills_a_qemu_that_does_not_quit_and_kill_gets_past_a_hung_supervisor() {
    require_qemu();
    let vms = Vms::new("hung");
    vms.ok(["start", "--name", "frozen", "--accel", "tcg"]);
    vms.ok(["start", "--name", "stuck", "--accel", "tcg"]);
    // A QEMU that cannot answer (stopped): the power button is not even pressed (the command
    // times out), quit is not heard, and after the quit timeout it is killed: exit code 4.
    let frozen = vms.entry("frozen");
    let qemu = frozen["pid"].as_u64().unwrap() as u32;
    signal(qemu, libc::SIGSTOP);
    let out = vms.run(["stop", "frozen", "--timeout", "0"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "VM frozen: QEMU was told to quit but did not exit within 10s: it was killed"
        ),
        "{stderr}"
    );
    assert!(!process_exists(qemu));
    // A supervisor that does not answer (stopped): `kill` kills it, and QEMU goes with it.
    let stuck = vms.entry("stuck");
    let (qemu, supervisor) = (
        stuck["pid"].as_u64().unwrap() as u32,
        stuck["supervisor_pid"].as_u64().unwrap() as u32,
    );
    signal(supervisor, libc::SIGSTOP);
    let out = vms.ok(["kill", "stuck"]);
    assert!(
        text(&out.stderr)
            .contains("VM stuck: its supervisor did not answer and was killed, and QEMU with it"),
        "{}",
        show(&out)
    );
    wait_until(T, "QEMU to die with its supervisor", || {
        !process_exists(qemu)
    });
    assert!(vms.list().is_empty());
}
