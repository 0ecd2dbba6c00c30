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

/// A command for the guest's shell that prints [`SLEEPING`] and then sleeps until interrupted.
const SLEEPER: &[u8] = b"sh -c 'echo zz-$((3+4)); exec sleep 600'\r";
/// What [`SLEEPER`] prints once it runs.
const SLEEPING: &str = "zz-7";

/// The last line of the command's own messages (`qemu-machine: ...`) in a pty's output.
fn last_message(text: &str) -> &str {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .rfind(|l| l.starts_with("qemu-machine: "))
        .unwrap_or("")
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
    // Standard input is not a terminal: no escape keys to speak of.
    assert!(
        stderr.contains(
            "console attached; standard input goes to the guest; SIGINT or SIGTERM stops the VM"
        ),
        "{}",
        show(&out)
    );
    assert!(!stderr.contains("Ctrl-]"), "{}", show(&out));
    assert!(
        stderr.contains("event SHUTDOWN") && stderr.contains("host-qmp-quit"),
        "{}",
        show(&out)
    );
    // No disk: nothing to lose, QEMU is told to quit at once, and the last line says so.
    assert!(
        stderr.trim_end().ends_with(
            "stopped after 4s: QEMU was told to quit (the VM has no disk to protect; \
             --powerdown asks the guest first)"
        ),
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
    let at = pty.expect_from(
        0,
        "Ctrl-] q stops the VM, Ctrl-] ? lists the keys, Ctrl-C goes to the guest",
        BOOT,
    );
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
    assert!(text[at..].contains("quit: QEMU was told to quit"), "{text}");
    assert_ne!(
        pty.lflags() & libc::ICANON,
        0,
        "the terminal is restored after the run"
    );
    let pid = banner_pid(&text).unwrap();
    assert!(!process_exists(pid));
}

#[test]
fn ctrl_c_goes_to_the_guest_and_sigint_stops_the_vm_with_130() {
    require_qemu();
    let fx = fixture();
    let scratch = scratch("run-ctrlc");
    let mut pty = spawn_fixture(&fx, &scratch);
    let at = pty.expect_from(0, READY_LINE, BOOT);
    let at = pty.expect_from(at, PROMPT, BOOT);
    // A plain Ctrl-C goes to the guest: its shell abandons the running command and prompts.
    // (The command says when it runs, so that Ctrl-C does not come before it.)
    pty.write(SLEEPER);
    let at = pty.expect_from(at, SLEEPING, BOOT);
    pty.write(b"\x03");
    let at = pty.expect_from(at, PROMPT, BOOT);
    pty.write(b"echo alive-$((1+1))\r");
    let at = pty.expect_from(at, "alive-2", BOOT);
    // So does Ctrl-] c.
    pty.write(SLEEPER);
    let at = pty.expect_from(at, SLEEPING, BOOT);
    pty.write(b"\x1dc");
    let at = pty.expect_from(at, PROMPT, BOOT);
    pty.write(b"echo still-$((2+1))\r");
    let at = pty.expect_from(at, "still-3", BOOT);
    // SIGINT (from outside: the terminal's Ctrl-C is the guest's) stops the VM.
    let pid = pty.child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory effects.
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = pty.finish(EXIT);
    assert_eq!(status.code(), Some(130), "{}", pty.text());
    assert!(
        pty.text()[at..].contains("interrupted (SIGINT): QEMU was told to quit"),
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
fn quit_with_powerdown_lets_the_guest_power_off_first() {
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
    pty.write(b"\x1dq");
    let at = pty.expect_from(
        at,
        "quit: pressed the power button; waiting up to 1m for the guest to power off",
        BOOT,
    );
    // The guest's acpid sees the button and powers off by itself.
    let at = pty.expect_from(at, POWER_BUTTON_LINE, BOOT);
    let status = pty.finish(EXIT);
    let text = pty.text();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text[at..].contains("\"reason\":\"guest-shutdown\""),
        "{text}"
    );
    assert_eq!(
        last_message(&text),
        "qemu-machine: quit: the guest powered off",
        "{text}"
    );
    assert!(
        !text[at..].contains("host-qmp-quit"),
        "QEMU was not quit: the guest powered off: {text}"
    );
}

#[test]
fn a_vm_with_a_disk_asks_its_guest_before_quitting() {
    require_qemu();
    let fx = fixture();
    let scratch = scratch("run-disk");
    let log = scratch.path().join("console.log");
    let disk = scratch.path().join("data.qcow2");
    let mut args = fixture_args(&fx);
    args.extend(["--disk".into(), format!("{},size=16M", disk.display())]);
    args.extend(["--console-log".into(), log.display().to_string()]);
    let mut pty = pty(args);
    pty.diagnostics = Some(log);
    // The disk is created at launch, and that is said.
    let at = pty.expect_from(0, "qemu-machine: creating disk disk0: ", BOOT);
    let at = pty.expect_from(at, READY_LINE, BOOT);
    let at = pty.expect_from(at, PROMPT, BOOT);
    // No --powerdown: a VM with a disk gets 30 s.
    pty.write(b"\x1dq");
    let at = pty.expect_from(
        at,
        "quit: pressed the power button; waiting up to 30s for the guest to power off",
        BOOT,
    );
    let at = pty.expect_from(at, POWER_BUTTON_LINE, BOOT);
    let status = pty.finish(EXIT);
    let text = pty.text();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text[at..].contains("event SHUTDOWN"), "{text}");
    assert_eq!(
        last_message(&text),
        "qemu-machine: quit: the guest powered off",
        "{text}"
    );
}

#[test]
fn a_guest_that_ignores_the_power_button_is_quit_after_the_powerdown_time() {
    require_qemu();
    // The firmware-only VM has no OS to hear the power button.
    let scratch = scratch("run-deaf");
    let disk = scratch.path().join("data.qcow2");
    let out = run_deadline(
        cmd([
            "run",
            "--accel",
            "tcg",
            "--for",
            "1s",
            "--powerdown",
            "2s",
            "--disk",
            &format!("{},size=1M", disk.display()),
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "stopped after 1s: pressed the power button; waiting up to 2s for the guest to power off"
        ),
        "{}",
        show(&out)
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("stopped after 1s: QEMU was told to quit after 2 s"),
        "{}",
        show(&out)
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
fn sighup_stops_the_vm_with_129() {
    require_qemu();
    let mut pty = pty(["run", "--accel", "tcg"]);
    let at = pty.expect_from(0, "status: running", BOOT);
    let pid = pty.child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory effects.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0);
    let status = pty.finish(EXIT);
    let text = pty.text();
    assert_eq!(status.code(), Some(129), "{text}");
    assert!(
        text[at..].contains("interrupted (SIGHUP): QEMU was told to quit"),
        "{text}"
    );
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
fn a_missing_qemu_path_is_named_without_an_install_hint() {
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
    assert_eq!(
        stderr,
        "qemu-machine: error: QEMU /nonexistent/qemu-system-x86_64: No such file or directory \
         (os error 2)\n"
    );
}

#[test]
fn qemu_not_installed_names_the_package_for_the_architecture() {
    // A PATH without QEMU.
    let scratch = scratch("run-nopath");
    for (arch, program, package) in [
        ("x86_64", "qemu-system-x86_64", "qemu-system-x86"),
        ("aarch64", "qemu-system-aarch64", "qemu-system-arm"),
        ("riscv64", "qemu-system-riscv64", "qemu-system-misc"),
    ] {
        let mut c = cmd(["run", "--arch", arch, "--for", "1s"]);
        c.env("PATH", scratch.path());
        let out = run_deadline(c, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(3), "{arch}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr,
            format!(
                "qemu-machine: error: {program} is not installed (not found in PATH); on Debian \
                 or Ubuntu: apt-get install -y {package}\n"
            ),
            "{arch}"
        );
    }
}

#[test]
fn machine_none_runs_with_the_default_vm() {
    require_qemu();
    let out = run_deadline(
        cmd(["run", "--machine", "none", "--accel", "tcg", "--for", "1s"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("status: running"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_missing_flash_source_is_an_input_error() {
    let scratch = scratch("run-noflash");
    let disk = scratch.path().join("root.qcow2");
    let out = run_deadline(
        cmd([
            "run",
            "--accel",
            "tcg",
            "--disk",
            &format!("{},size=8M,flash=/no/such/image.raw.xz", disk.display()),
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "qemu-machine: error: flash source: /no/such/image.raw.xz does not exist\n"
    );
    assert!(!disk.exists(), "nothing is left behind");
    // A kernel that is not there is the same kind of error, found before QEMU starts.
    let out = run_deadline(
        cmd(["run", "--kernel", "/no/such/vmlinuz", "--for", "1s"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kernel /no/such/vmlinuz: No such file"),
        "{}",
        show(&out)
    );
}

#[test]
fn flashing_shows_its_progress_at_the_default_verbosity() {
    require_qemu();
    let scratch = scratch("run-flashing");
    let raw = scratch.path().join("image.raw");
    std::fs::write(&raw, vec![0x5au8; 4 << 20]).unwrap();
    let disk = scratch.path().join("root.qcow2");
    let out = run_deadline(
        cmd([
            "run",
            "--accel",
            "tcg",
            "--for",
            "1s",
            "--powerdown",
            "0s",
            "--disk",
            &format!("{},id=root,size=8M,flash={}", disk.display(), raw.display()),
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let label = format!("qemu-machine: flashing {} into disk root", raw.display());
    // A line per 10% reached (a small image jumps), ending at 100%.
    assert!(stderr.contains(&format!("{label}: 100%\n")), "{stderr}");
    assert!(
        stderr.contains("qemu-machine: growing disk root to 8M"),
        "{stderr}"
    );
    // Before QEMU starts.
    assert!(
        stderr.find("100%").unwrap() < stderr.find("started (pid").unwrap(),
        "{stderr}"
    );
    // -q: nothing of it.
    let out = run_deadline(
        cmd([
            "-q",
            "run",
            "--accel",
            "tcg",
            "--for",
            "1s",
            "--disk",
            &format!("{},id=root,flash={}", disk.display(), raw.display()),
            "--powerdown",
            "0s",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
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
