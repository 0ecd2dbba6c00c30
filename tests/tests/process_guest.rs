//! qemu-process with a real Linux guest (the busybox fixture, under TCG): the console (ready
//! line, expect-style commands, 50 MB of output while QMP runs), guest poweroff, ACPI
//! powerdown, reset.

use std::time::{Duration, Instant};

use qemu_machine_tests::fixture::{GuestFixture, POWER_BUTTON_LINE, PROMPT, READY_LINE};
use qemu_machine_tests::support::{self};
use qemu_process::{AccelChoice, Error, Machine, MachineConfig, RunState};
use serde_json::json;

/// Booting takes about 2 s under TCG; leave room for a loaded CI machine.
const BOOT: Duration = Duration::from_secs(120);
const COMMAND: Duration = Duration::from_secs(60);

fn guest_config(extra_args: &[&str]) -> MachineConfig {
    let fixture = GuestFixture::get().unwrap_or_else(|e| panic!("{e}"));
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "q35", "-m", "256M", "-nodefaults"])
        .args(extra_args)
        .args(fixture.boot_args(&fixture.kernel_cmdline(&[], "")))
        // Nested KVM crashes Linux guests on the development machines.
        .accel(AccelChoice::Tcg)
        .console(true)
        .qmp_timeout(COMMAND);
    config
}

/// Launches the guest and waits for its shell prompt.
fn boot(config: &MachineConfig) -> Machine {
    let mut vm = Machine::launch(config).unwrap();
    let before = vm
        .console_wait_for(READY_LINE.as_bytes(), BOOT)
        .unwrap_or_else(|e| panic!("no ready line: {e}; log: {:?}", vm.log()));
    let before = String::from_utf8_lossy(&before);
    assert!(!before.contains("QM-GUEST-ERROR"), "{before}");
    vm.console_wait_for(PROMPT.as_bytes(), BOOT).unwrap();
    vm
}

/// Runs a shell command in the guest and returns its output (up to the next prompt).
fn run(vm: &mut Machine, command: &str) -> String {
    vm.console_write(format!("{command}\n").as_bytes(), COMMAND)
        .unwrap();
    let out = vm.console_wait_for(PROMPT.as_bytes(), COMMAND).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn console_runs_commands_and_logs_everything() {
    let scratch = support::scratch("guest-console");
    let log = scratch.path().join("console.log");
    let mut config = guest_config(&[]);
    config.console_log(&log);
    let mut vm = boot(&config);
    assert_eq!(run(&mut vm, "echo $((6*7))"), "42\r\n");
    assert_eq!(run(&mut vm, "uname -s"), "Linux\r\n");
    // Output that arrives in pieces, with QMP in between.
    vm.console_write(
        b"for i in 1 2 3; do echo line$i; sleep 0.2; done\n",
        COMMAND,
    )
    .unwrap();
    assert_eq!(vm.status().unwrap(), RunState::Running);
    assert_eq!(
        vm.console_wait_for(b"line3\r\n", COMMAND).unwrap(),
        b"line1\r\nline2\r\n"
    );
    vm.console_wait_for(PROMPT.as_bytes(), COMMAND).unwrap();
    // A pattern that never comes: a timeout, distinct from a closed console.
    let err = vm
        .console_wait_for(b"never-printed", Duration::from_millis(300))
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    vm.shutdown(Duration::from_secs(10)).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(READY_LINE), "{text}");
    assert!(text.contains("line2\r\n"), "{text}");
    assert_eq!(text.len() as u64, vm.console_bytes_received());
    assert_eq!(vm.console_log_path(), Some(log.as_path()));
}

#[test]
fn guest_poweroff_ends_in_wait_with_a_guest_shutdown_event() {
    let mut vm = boot(&guest_config(&[]));
    vm.console_write(b"poweroff -f\n", COMMAND).unwrap();
    let status = vm.wait(COMMAND).unwrap();
    assert!(status.success(), "{status}");
    let event = vm
        .event_wait(
            "SHUTDOWN",
            Some(&json!({"data": {"guest": true}})),
            Duration::ZERO,
        )
        .unwrap();
    assert_eq!(event.data["guest"], json!(true));
    // The console is closed with QEMU: waiting on it fails at once, as Exited.
    match vm.console_wait_for(b"anything", Duration::from_secs(5)) {
        Err(Error::Exited(s)) => assert_eq!(s, status),
        other => panic!("expected Exited, got {other:?}"),
    }
}

#[test]
fn acpi_powerdown_stops_the_guest_even_with_a_full_event_queue() {
    let mut config = guest_config(&[]);
    config.max_events(1);
    let mut vm = boot(&config);
    // Fill the event queue: the SHUTDOWN that powerdown waits for must still be seen.
    vm.pause().unwrap();
    vm.resume().unwrap();
    assert_eq!(vm.events_dropped(), 1);
    let event = vm.powerdown(COMMAND).unwrap();
    assert_eq!(event.name, "SHUTDOWN");
    assert_eq!(event.data["guest"], json!(true), "{:?}", event.data);
    let status = vm.wait(COMMAND).unwrap();
    assert!(status.success(), "{status}");
    let console = String::from_utf8_lossy(&vm.console_read()).into_owned();
    assert!(console.contains(POWER_BUTTON_LINE), "{console}");
}

#[test]
fn reset_gives_a_reset_event_and_the_ready_line_again() {
    let mut vm = boot(&guest_config(&[]));
    vm.reset().unwrap();
    let event = vm.event_wait("RESET", None, COMMAND).unwrap();
    assert_eq!(event.data["guest"], json!(false));
    vm.console_wait_for(READY_LINE.as_bytes(), BOOT).unwrap();
    vm.console_wait_for(PROMPT.as_bytes(), BOOT).unwrap();
    assert_eq!(run(&mut vm, "echo again"), "again\r\n");
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn fifty_megabytes_of_console_output_while_qmp_runs_lose_nothing() {
    const BYTES: usize = 50 << 20;
    let scratch = support::scratch("guest-flood");
    let log = scratch.path().join("console.log");
    let mut config = guest_config(&[]);
    config.console_log(&log).console_buffer_bytes(64 << 10);
    let mut vm = boot(&config);
    let start = Instant::now();
    vm.console_write(
        format!("head -c {BYTES} /dev/zero; echo; echo FLOOD-DONE\n").as_bytes(),
        COMMAND,
    )
    .unwrap();
    // Keep QMP busy while the guest floods the console: every command gets its answer.
    let mut commands = 0u32;
    loop {
        assert_eq!(vm.status().unwrap(), RunState::Running);
        commands += 1;
        match vm.console_wait_for(b"FLOOD-DONE\r\n", Duration::from_millis(100)) {
            Ok(_) => break,
            Err(e) if e.is_timeout() => {}
            Err(e) => panic!("console: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(600), "flood stalled");
    }
    vm.console_wait_for(PROMPT.as_bytes(), COMMAND).unwrap();
    let elapsed = start.elapsed();
    vm.shutdown(Duration::from_secs(10)).unwrap();
    let logged = std::fs::read(&log).unwrap();
    let zeros = logged.iter().filter(|&&b| b == 0).count();
    assert_eq!(zeros, BYTES, "NUL bytes in the console log");
    assert_eq!(logged.len() as u64, vm.console_bytes_received());
    // Memory stayed bounded: all but about one buffer's worth was dropped from it (and only
    // from it: the log has every byte).
    assert!(vm.console_bytes_dropped() >= (BYTES - (128 << 10)) as u64);
    eprintln!(
        "{BYTES} console bytes in {elapsed:?} ({:.1} MB/s) with {commands} QMP commands",
        BYTES as f64 / elapsed.as_secs_f64() / 1e6
    );
}
