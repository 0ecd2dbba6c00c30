//! `qemu-machine run` against a real QEMU: the default VM with `--for`, the guest fixture on a
//! pseudo-terminal (typing into its shell, Ctrl-C, the escape menu, the guest powering off),
//! signals, launch failures and an abnormal end, with the exit code of each.

mod common;

use std::time::Duration;

use common::*;
use qemu_machine_tests::fixture::{GuestFixture, POWER_BUTTON_LINE, PROMPT, READY_LINE};
use qemu_machine_tests::support::{
    find, fixture, process_exists, run_deadline, scratch, show, wait_deadline, PtyChild, TempDir,
};

const BOOT: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);

/// Starts `run` booting the fixture to its shell under TCG, on a pty, with a console log
/// (shown if the test fails).
fn spawn_fixture(fixture: &GuestFixture, scratch: &TempDir) -> PtyChild {
    let log = scratch.path().join("console.log");
    let mut args = fixture_args(fixture);
    args.push("--console-log".into());
    args.push(log.display().to_string());
    let mut pty = pty(args);
    pty.diagnostics = Some(log);
    pty
}

/// `run` arguments that boot the fixture to its shell under TCG.
fn fixture_args(fixture: &GuestFixture) -> Vec<String> {
    vec![
        "run".into(),
        "--accel".into(),
        "tcg".into(),
        "-m".into(),
        "256M".into(),
        "--kernel".into(),
        fixture.kernel.display().to_string(),
        "--initrd".into(),
        fixture.initrd.display().to_string(),
        "--append".into(),
        fixture.kernel_cmdline(&[], ""),
    ]
}

#[test]
fn default_vm_runs_for_a_while_and_stops_cleanly() {
    require_qemu();
    // TCG: SeaBIOS reaches the console at once; under nested KVM it can take seconds.
    let out = run_deadline(
        cmd(["run", "--for", "4s", "--accel", "tcg"]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout.contains("SeaBIOS"),
        "firmware output: {}",
        show(&out)
    );
    assert!(stderr.contains("status: running"), "{}", show(&out));
    assert!(stderr.contains("Ctrl-] q quits"), "{}", show(&out));
    assert!(
        stderr.contains("event SHUTDOWN") && stderr.contains("host-qmp-quit"),
        "{}",
        show(&out)
    );
    assert!(
        stderr.contains("stopped after 4s; QEMU exited cleanly"),
        "{}",
        show(&out)
    );
    let pid = banner_pid(&stderr).expect("the banner names QEMU's pid");
    assert!(!process_exists(pid), "QEMU {pid} is still there");
}

#[test]
fn default_vm_with_the_default_accelerator_shows_the_firmware() {
    require_qemu();
    let mut pty = pty(["run"]);
    let at = pty.expect_from(0, "status: running", BOOT);
    let at = pty.expect_from(at, "SeaBIOS", BOOT);
    pty.expect_from(at, "No bootable device", BOOT);
    pty.write(b"\x1dq");
    let status = pty.finish(EXIT);
    assert_eq!(status.code(), Some(0), "{}", pty.text());
}

#[test]
fn quiet_run_prints_only_the_console() {
    require_qemu();
    let out = run_deadline(
        cmd(["-q", "run", "--for", "3s", "--accel", "tcg"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SeaBIOS"),
        "{}",
        show(&out)
    );
}

#[test]
fn typing_a_command_on_the_console_through_a_pty() {
    require_qemu();
    let fx = fixture();
    let scratch = scratch("run-typing");
    let mut pty = spawn_fixture(&fx, &scratch);
    let at = pty.expect_from(0, "Ctrl-C shuts the VM down", BOOT);
    let at = pty.expect_from(at, READY_LINE, BOOT);
    // Console output is copied only once the terminal is raw.
    assert_eq!(
        pty.lflags() & (libc::ICANON | libc::ECHO | libc::ISIG),
        0,
        "the terminal is raw while the console is attached"
    );
    let at = pty.expect_from(at, PROMPT, BOOT);
    pty.write(b"echo $((6*7))\r");
    let at = pty.expect_from(at, "42", BOOT);
    pty.expect_from(at, PROMPT, BOOT);
    // The escape menu: help, status, then quit.
    pty.write(b"\x1d?");
    let at = pty.expect_from(at, "press the ACPI power button", BOOT);
    pty.write(b"\x1ds");
    let at = pty.expect_from(at, "status: running", BOOT);
    pty.write(b"\x1dq");
    let status = pty.finish(EXIT);
    assert_eq!(status.code(), Some(0), "{}", pty.text());
    let text = pty.text();
    assert!(text[at..].contains("quit; QEMU exited cleanly"), "{text}");
    assert_ne!(
        pty.lflags() & libc::ICANON,
        0,
        "the terminal is restored after the run"
    );
    let pid = banner_pid(&text).unwrap();
    assert!(!process_exists(pid));
}

#[test]
fn ctrl_c_shuts_the_vm_down_with_130_and_the_guest_can_get_ctrl_c() {
    require_qemu();
    let fx = fixture();
    let scratch = scratch("run-ctrlc");
    let mut pty = spawn_fixture(&fx, &scratch);
    let at = pty.expect_from(0, READY_LINE, BOOT);
    let at = pty.expect_from(at, PROMPT, BOOT);
    // Ctrl-] c sends Ctrl-C to the guest: its shell abandons the running command and prompts.
    pty.write(b"sleep 600\r");
    pty.write(b"\x1dc");
    let at = pty.expect_from(at, PROMPT, BOOT);
    pty.write(b"echo alive-$((1+1))\r");
    let at = pty.expect_from(at, "alive-2", BOOT);
    // A plain Ctrl-C stops the VM.
    pty.write(b"\x03");
    let status = pty.finish(EXIT);
    assert_eq!(status.code(), Some(130), "{}", pty.text());
    assert!(
        pty.text()[at..].contains("interrupted (SIGINT); the VM was shut down cleanly"),
        "{}",
        pty.text()
    );
    assert_ne!(pty.lflags() & libc::ICANON, 0, "terminal restored");
}

#[test]
fn guest_power_off_ends_the_run_with_0() {
    require_qemu();
    let fx = fixture();
    let scratch = scratch("run-poweroff");
    let mut pty = spawn_fixture(&fx, &scratch);
    let at = pty.expect_from(0, READY_LINE, BOOT);
    let at = pty.expect_from(at, PROMPT, BOOT);
    pty.write(b"poweroff -f\r");
    let status = pty.finish(EXIT);
    let text = pty.text();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text[at..].contains("event SHUTDOWN"), "{text}");
    assert!(
        text[at..].contains("the guest powered off; QEMU exited cleanly"),
        "{text}"
    );
}

#[test]
fn ctrl_c_with_powerdown_lets_the_guest_power_off_first() {
    require_qemu();
    let fx = fixture();
    let scratch = scratch("run-powerdown");
    let log = scratch.path().join("console.log");
    let mut args = fixture_args(&fx);
    args.extend(["--powerdown".into(), "60s".into()]);
    args.extend(["--console-log".into(), log.display().to_string()]);
    let mut pty = pty(args);
    pty.diagnostics = Some(log);
    let at = pty.expect_from(0, READY_LINE, BOOT);
    let at = pty.expect_from(at, PROMPT, BOOT);
    pty.write(b"\x03");
    let at = pty.expect_from(at, "pressed the power button", BOOT);
    // The guest's acpid sees the button and powers off by itself.
    let at = pty.expect_from(at, POWER_BUTTON_LINE, BOOT);
    let status = pty.finish(EXIT);
    let text = pty.text();
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(
        text[at..].contains("\"reason\":\"guest-shutdown\""),
        "{text}"
    );
    assert!(
        !text[at..].contains("host-qmp-quit"),
        "QEMU was not quit: the guest powered off: {text}"
    );
}

#[test]
fn sigterm_shuts_down_gracefully_with_143() {
    require_qemu();
    let mut pty = pty(["run", "--accel", "tcg"]);
    let at = pty.expect_from(0, "status: running", BOOT);
    let pid = pty.child.id();
    // SAFETY: kill(2) has no memory effects.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let status = pty.finish(EXIT);
    assert_eq!(status.code(), Some(143), "{}", pty.text());
    assert!(
        pty.text()[at..].contains("interrupted (SIGTERM)"),
        "{}",
        pty.text()
    );
    assert_ne!(pty.lflags() & libc::ICANON, 0, "terminal restored");
}

#[test]
fn qemu_killed_from_outside_is_an_abnormal_end() {
    require_qemu();
    let mut pty = pty(["run", "--accel", "tcg"]);
    pty.expect_from(0, "status: running", BOOT);
    let qemu = banner_pid(&pty.text()).expect("banner pid");
    // SAFETY: kill(2) has no memory effects.
    assert_eq!(unsafe { libc::kill(qemu as libc::pid_t, libc::SIGKILL) }, 0);
    let status = pty.finish(EXIT);
    let text = pty.text();
    assert_eq!(status.code(), Some(4), "{text}");
    assert!(text.contains("QEMU ended abnormally"), "{text}");
    assert!(text.contains("SIGKILL"), "{text}");
    assert_ne!(pty.lflags() & libc::ICANON, 0, "terminal restored");
}

#[test]
fn launch_failure_prints_qemus_message_and_exits_3() {
    require_qemu();
    let out = run_deadline(
        cmd(["run", "--accel", "tcg", "--qemu-arg=-no-such-option"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("qemu-machine: error: QEMU exited during launch"),
        "{}",
        show(&out)
    );
    assert!(
        stderr.contains("-no-such-option: invalid option"),
        "QEMU's own message: {}",
        show(&out)
    );
}

#[test]
fn missing_qemu_binary_exits_3_with_a_hint() {
    let out = run_deadline(
        cmd([
            "run",
            "--qemu",
            "/nonexistent/qemu-system-x86_64",
            "--for",
            "1s",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/qemu-system-x86_64"),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn console_log_and_forwarded_port_are_reported() {
    require_qemu();
    let scratch = scratch("run-log");
    let log = scratch.path().join("console.log");
    let mut c = cmd([
        "run",
        "--accel",
        "tcg",
        "--for",
        "3s",
        "--forward",
        "web=127.0.0.1:0:80",
        "--forward",
        "plain=0:81",
        "--forward",
        "public=0.0.0.0:0:82",
    ]);
    c.arg("--console-log").arg(&log);
    let out = run_deadline(c, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("port web: 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no forward line: {}", show(&out)));
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert_ne!(port, 0, "{line}");
    assert!(line.ends_with("-> guest tcp/80"), "{line}");
    // Without an address a forward listens on loopback; every address is said plainly.
    let line = |name: &str| {
        stderr
            .lines()
            .find(|l| l.contains(&format!("port {name}: ")))
            .unwrap_or_else(|| panic!("no {name} line: {}", show(&out)))
    };
    let plain = line("plain");
    assert!(plain.contains("port plain: 127.0.0.1:"), "{plain}");
    assert!(plain.ends_with("-> guest tcp/81"), "{plain}");
    assert!(!plain.contains("network"), "{plain}");
    let public = line("public");
    assert!(public.contains("port public: 0.0.0.0:"), "{public}");
    assert!(
        public.ends_with(" (every host address: reachable from the network) -> guest tcp/82"),
        "{public}"
    );
    let logged = std::fs::read(&log).unwrap();
    assert!(
        find(&logged, b"SeaBIOS").is_some(),
        "the console log has the firmware's output"
    );
}

#[test]
fn stdin_is_read_only_as_fast_as_the_guest_takes_its_console() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    require_qemu();
    // A VM that never runs (-S): its serial port takes no input. Feeding stdin without end must
    // hold up the writer here instead of filling the run's memory.
    let mut c = cmd(["run", "--for", "4s", "--accel", "tcg", "--qemu-arg=-S"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawning qemu-machine");
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        let mut total = 0usize;
        // Ends when the run exits and the pipe breaks.
        while let Ok(n) = stdin.write(&chunk) {
            total += n;
        }
        total
    });
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_deadline(&mut child, Duration::from_secs(60), "run with -S");
    let taken = writer.join().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped after 4s"), "{stderr}");
    // Its own 64 KiB, the machine's 64 KiB and the socket's buffer, and the pipe's: far below
    // what an unbounded reader takes in 4 s.
    eprintln!("the run took {taken} bytes of stdin for a paused guest");
    assert!(taken < 16 << 20, "the run took {taken} bytes of stdin");
}
