//! qemu-process keeps every buffer bounded, against a real QEMU: console input for a paused
//! guest (the write times out with the count it accepted, memory stays flat, and what was
//! accepted reaches the guest once it runs), console output and events beyond their bounds
//! (counted, and logged once per overflow).
//!
//! The tests of this binary run one at a time: they count the log lines of the whole process.

use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use qemu_machine_tests::fixture::{run_param, GuestFixture, READY_LINE, RUN_EXIT_PREFIX};
use qemu_machine_tests::support::{self};
use qemu_process::{AccelChoice, Error, Machine, MachineConfig, DEFAULT_CONSOLE_INPUT_BUFFER};

/// Booting takes about 2 s under TCG; leave room for a loaded machine.
const BOOT: Duration = Duration::from_secs(120);
/// Generous: the guest reads the accepted input through an emulated UART under TCG.
const DELIVER: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// A logger that keeps warnings, and a lock that runs the tests one at a time
// ---------------------------------------------------------------------------------------------

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());

struct Keep;

impl log::Log for Keep {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}: {}", record.level(), record.target(), record.args());
            eprintln!("{line}");
            WARNINGS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (once) and takes the lock that serialises the tests.
fn setup() -> MutexGuard<'static, ()> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Keep).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Warn);
    });
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many warnings so far contain `needle`.
fn warnings_with(needle: &str) -> usize {
    WARNINGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|w| w.contains(needle))
        .count()
}

/// The fixture guest under TCG with a console, running `script` with the console as stdio
/// (then powering off).
fn script_config(script: &str) -> MachineConfig {
    let fixture = GuestFixture::get().unwrap_or_else(|e| panic!("{e}"));
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "q35", "-m", "256M", "-nodefaults", "-no-reboot"])
        .args(fixture.boot_args(&fixture.kernel_cmdline(&[], &run_param(script))))
        // Nested KVM crashes Linux guests on the development machines.
        .accel(AccelChoice::Tcg)
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
    let mut vm = Machine::launch(&support::none_config()).unwrap();
    match vm.console_write(b"x", Duration::from_secs(1)) {
        Err(Error::Unsupported(what)) => assert!(what.contains("console"), "{what}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    vm.shutdown(Duration::from_secs(10)).unwrap();

    // A console whose QEMU has gone: Exited, whatever the timeout.
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "q35", "-nodefaults", "-S"])
        .accel(AccelChoice::Tcg)
        .console(true);
    let mut vm = Machine::launch(&config).unwrap();
    let status = vm.shutdown(Duration::from_secs(10)).unwrap();
    match vm.console_write(b"x", Duration::from_secs(1)) {
        Err(Error::Exited(s)) => assert_eq!(s, status),
        other => panic!("expected Exited, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Console output and events
// ---------------------------------------------------------------------------------------------

#[test]
fn console_output_beyond_the_buffer_is_counted_and_logged_once_per_overflow() {
    const WARNING: &str = "console buffer full (4096 bytes)";
    let _serial = setup();
    let script = "stty -echo\n\
                  head -c 100000 /dev/zero | tr '\\0' x\necho\necho FLOOD-ONE\n\
                  read line\n\
                  head -c 100000 /dev/zero | tr '\\0' y\necho\necho FLOOD-TWO\n";
    let mut config = script_config(script);
    config.console_buffer_bytes(4096);
    let warned = warnings_with(WARNING);
    let mut vm = launch_and_wait_for(&config, READY_LINE);
    vm.console_wait_for(b"FLOOD-ONE", BOOT).unwrap();
    let first = vm.console_bytes_dropped();
    assert!(first >= 90_000, "{first} bytes dropped");
    assert_eq!(
        warnings_with(WARNING),
        warned + 1,
        "one warning per overflow"
    );

    // Reading empties the buffer: the next overflow is a new one, and is logged again.
    let _ = vm.console_read();
    vm.console_write(b"go\n", BOOT).unwrap();
    vm.console_wait_for(b"FLOOD-TWO", BOOT).unwrap();
    let second = vm.console_bytes_dropped();
    assert!(second >= first + 90_000, "{second} bytes dropped");
    assert_eq!(warnings_with(WARNING), warned + 2, "{:?}", WARNINGS.lock());
    vm.console_wait_for(RUN_EXIT_PREFIX.as_bytes(), BOOT)
        .unwrap();
    assert!(vm.wait(BOOT).unwrap().success());
}

#[test]
fn events_beyond_the_queue_are_counted_and_logged_once_per_overflow() {
    const WARNING: &str = "event queue full (2 events)";
    let _serial = setup();
    let warned = warnings_with(WARNING);
    let mut config = support::none_config();
    config.max_events(2);
    let mut vm = Machine::launch(&config).unwrap();
    for _ in 0..3 {
        vm.pause().unwrap();
        vm.resume().unwrap();
    }
    assert_eq!(vm.events_dropped(), 4);
    assert_eq!(
        warnings_with(WARNING),
        warned + 1,
        "one warning per overflow"
    );
    // Still full: more drops, no more warnings.
    vm.pause().unwrap();
    assert_eq!(vm.events_dropped(), 5);
    assert_eq!(warnings_with(WARNING), warned + 1);
    // Taking the events ends the overflow; the next one is logged again.
    assert_eq!(vm.take_events().len(), 2);
    vm.resume().unwrap();
    vm.pause().unwrap();
    vm.resume().unwrap();
    assert_eq!(vm.events_dropped(), 6);
    assert_eq!(warnings_with(WARNING), warned + 2, "{:?}", WARNINGS.lock());
    vm.shutdown(Duration::from_secs(10)).unwrap();
}
