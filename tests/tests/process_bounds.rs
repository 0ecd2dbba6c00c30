//! qemu-process keeps every buffer bounded, against a real QEMU: console input for a paused
//! guest (the write times out with the count it accepted, memory stays flat, and what was
//! accepted reaches the guest once it runs).

mod process_common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use qemu_machine_tests::fixture::{run_param, GuestFixture, RUN_EXIT_PREFIX};
use qemu_process::{Accel, Error, Machine, MachineConfig, DEFAULT_CONSOLE_INPUT_BUFFER};

/// Booting takes about 2 s under TCG; leave room for a loaded machine.
const BOOT: Duration = Duration::from_secs(120);
/// Generous: the guest reads the accepted input through an emulated UART under TCG.
const DELIVER: Duration = Duration::from_secs(300);

/// Booting and the writes share the machine's two cores with other tests: one at a time here.
static SERIAL: Mutex<()> = Mutex::new(());

fn setup() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fixture guest under TCG with a console, running `script` with the console as stdio
/// (then powering off).
fn script_config(script: &str) -> MachineConfig {
    let fixture = GuestFixture::get().unwrap_or_else(|e| panic!("{e}"));
    let mut config = MachineConfig::new(process_common::qemu());
    config
        .args(["-machine", "q35", "-m", "256M", "-nodefaults", "-no-reboot"])
        .args(fixture.boot_args(&fixture.kernel_cmdline(&[], &run_param(script))))
        // Nested KVM crashes Linux guests on the development machines.
        .accel(Accel::Tcg)
        .console(true)
        .qmp_timeout(Duration::from_secs(60));
    config
}

fn launch_and_wait_for(config: &MachineConfig, line: &str) -> Machine {
    let mut vm = Machine::launch(config).unwrap();
    let before = vm
        .console_wait_for(line.as_bytes(), BOOT)
        .unwrap_or_else(|e| panic!("no {line:?}: {e}; log: {:?}", vm.log()));
    let before = String::from_utf8_lossy(&before);
    assert!(!before.contains("QM-GUEST-ERROR"), "{before}");
    vm
}

/// This process's resident set size, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

// ---------------------------------------------------------------------------------------------
// Console input
// ---------------------------------------------------------------------------------------------

#[test]
fn console_writes_to_a_paused_guest_time_out_with_bounded_memory_and_deliver_what_they_took() {
    const CHUNK: usize = 8 << 20;
    const LINE: usize = 64;
    let _serial = setup();
    // The guest counts what it reads until end of file (Ctrl-D at the start of a line) and
    // prints the count: the bytes the writes accepted, plus the final newline.
    let mut vm = launch_and_wait_for(
        &script_config("stty -echo\necho WC-READY\nwc -c\necho WC-DONE\n"),
        "WC-READY",
    );
    vm.pause().unwrap();

    // 63 x's and a newline, over and over: short lines for the guest's terminal, and any
    // offset into the stream is a slice of this buffer.
    let stream: Vec<u8> = (0..CHUNK + LINE)
        .map(|i| if i % LINE == LINE - 1 { b'\n' } else { b'x' })
        .collect();
    let rss_before = rss_bytes();
    let mut accepted_total = 0usize;
    for round in 0..25 {
        let start = accepted_total % LINE;
        let chunk = &stream[start..start + CHUNK];
        match vm.console_write(chunk, Duration::from_millis(100)) {
            Err(Error::ConsoleWriteTimeout {
                accepted,
                total,
                after,
            }) => {
                assert_eq!(total, CHUNK);
                assert!(accepted < total, "round {round}: {accepted} of {total}");
                assert_eq!(after, Duration::from_millis(100));
                accepted_total += accepted;
            }
            other => panic!("round {round}: expected ConsoleWriteTimeout, got {other:?}"),
        }
        assert!(vm.console_input_pending() <= DEFAULT_CONSOLE_INPUT_BUFFER);
    }
    let growth = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "25 x 8 MiB to a paused guest: {accepted_total} bytes accepted, {} queued in memory, \
         RSS grew by {} KiB",
        vm.console_input_pending(),
        growth >> 10
    );
    // Before the bound, all 200 MB were queued in memory.
    assert!(growth < 32 << 20, "RSS grew by {growth} bytes");
    assert!(
        accepted_total > 0,
        "a paused guest's console still takes some input"
    );
    assert!(accepted_total < CHUNK, "{accepted_total}");
    assert_eq!(
        vm.console_input_pending(),
        DEFAULT_CONSOLE_INPUT_BUFFER,
        "the queue is full"
    );

    // Running again, the guest reads everything that was accepted, in order, and nothing else.
    vm.resume().unwrap();
    vm.console_write(b"\n\x04", DELIVER).unwrap();
    let out = vm.console_wait_for(b"WC-DONE", DELIVER).unwrap();
    let out = String::from_utf8_lossy(&out);
    let counted: usize = out
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count from wc: {out:?}"));
    assert_eq!(counted, accepted_total + 1, "{out:?}");
    vm.console_wait_for(RUN_EXIT_PREFIX.as_bytes(), DELIVER)
        .unwrap();
    assert!(vm.wait(BOOT).unwrap().success());
}

#[test]
fn console_write_without_a_console_or_after_exit_says_why() {
    let _serial = setup();
    let mut vm = Machine::launch(&process_common::none_config()).unwrap();
    match vm.console_write(b"x", Duration::from_secs(1)) {
        Err(Error::Unsupported(what)) => assert!(what.contains("console"), "{what}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    vm.shutdown(Duration::from_secs(10)).unwrap();

    // A console whose QEMU has gone: Exited, whatever the timeout.
    let mut config = MachineConfig::new(process_common::qemu());
    config
        .args(["-machine", "q35", "-nodefaults", "-S"])
        .accel(Accel::Tcg)
        .console(true);
    let mut vm = Machine::launch(&config).unwrap();
    let status = vm.shutdown(Duration::from_secs(10)).unwrap();
    match vm.console_write(b"x", Duration::from_secs(1)) {
        Err(Error::Exited(s)) => assert_eq!(s, status),
        other => panic!("expected Exited, got {other:?}"),
    }
}
