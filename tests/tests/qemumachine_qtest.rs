//! The qtest machine (QEMUQtestMachine) through qemu-process: `MachineConfig::qtest` and
//! `Machine::qtest`, against a real QEMU 7.2, driving a q35 machine's devices with no guest
//! code at all.
//!
//! Debian's QEMU 7.2 has no qtest accelerator, so the machine runs on TCG with `-S` and
//! `clock_step`/`clock_set` are refused with `Error::NoQtestClock`; the RTC is seen moving
//! with the host clock instead (its update interrupt, intercepted). Where a QEMU has the
//! accelerator, the same tests check that it is used and that `clock_step` moves the clock.

use std::io::Read;
use std::time::Duration;

use qemu_machine_tests::support;
use qemu_process::{
    AccelChoice, Endianness, Error, Irq, Machine, MachineConfig, QtestError, VmLaunch,
};

/// A bound so that a broken test fails instead of hanging; nothing here asserts timing.
const WAIT: Duration = Duration::from_secs(60);

/// QEMU's RTC (MC146818) registers, through index port 0x70 and data port 0x71.
const RTC_SECONDS: u8 = 0x00;
const RTC_MINUTES: u8 = 0x02;
const RTC_HOURS: u8 = 0x04;
const RTC_REG_A: u8 = 0x0a;
const RTC_REG_B: u8 = 0x0b;
const RTC_REG_C: u8 = 0x0c;
/// Register B: periodic and update-ended interrupt enables, 24-hour mode.
const REG_B_PIE: u8 = 0x40;
const REG_B_UIE: u8 = 0x10;
const REG_B_24H: u8 = 0x02;
/// The RTC's ISA interrupt, as the intercepted I/O APIC reports it.
const RTC_IRQ: u32 = 8;

/// Whether this QEMU lists the qtest accelerator (Debian's 7.2 does not).
fn binary_has_qtest_accel() -> bool {
    let out = std::process::Command::new(qemu_machine_tests::qemu_system_x86_64())
        .args(["-accel", "help"])
        .output()
        .expect("running qemu-system-x86_64 -accel help");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "qtest")
}

/// A q35 machine with no default devices and a qtest channel, the accelerator left to the
/// library (`auto`).
fn q35_qtest() -> MachineConfig {
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "q35", "-nodefaults"])
        .qtest(true)
        .launch_timeout(WAIT)
        .qmp_timeout(WAIT);
    config
}

/// Waits up to `limit` for `file` to be readable.
fn readable(file: &std::fs::File, limit: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(limit.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, nfds 1.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

fn launch(config: &MachineConfig) -> Machine {
    Machine::launch(config).unwrap_or_else(|e| panic!("launch: {e}"))
}

fn cmos_read(vm: &mut Machine, register: u8) -> u8 {
    let mut q = vm.qtest().unwrap();
    q.outb(0x70, register).unwrap();
    q.inb(0x71).unwrap()
}

fn cmos_write(vm: &mut Machine, register: u8, value: u8) {
    let mut q = vm.qtest().unwrap();
    q.outb(0x70, register).unwrap();
    q.outb(0x71, value).unwrap();
}

#[test]
fn q35_host_bridge_ids_through_the_pci_config_ports_beside_qmp() {
    let mut vm = launch(&q35_qtest());
    let has_accel = binary_has_qtest_accel();
    let argv: Vec<String> = vm
        .argv()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let joined = argv.join(" ");
    assert!(
        joined.contains("-object qtest,id=qm-qtest,chardev=qm-qtest,log=none"),
        "{joined}"
    );
    if has_accel {
        assert!(
            joined.contains("-accel qtest") && !argv.contains(&"-S".into()),
            "{joined}"
        );
    } else {
        assert!(
            joined.contains("-accel tcg") && argv.contains(&"-S".into()),
            "{joined}"
        );
    }
    assert!(vm.has_qtest());
    let mut q = vm.qtest().unwrap();
    assert_eq!(q.has_clock(), Some(has_accel));
    q.outl(0xcf8, 0x8000_0000).unwrap();
    // Intel 82G33 (Q35) DRAM controller: vendor 0x8086, device 0x29c0.
    assert_eq!(q.inl(0xcfc).unwrap(), 0x29c0_8086);
    assert_eq!(q.inw(0xcfc).unwrap(), 0x8086);
    assert_eq!(q.inw(0xcfe).unwrap(), 0x29c0);
    assert_eq!(q.inb(0xcfc).unwrap(), 0x86);
    assert_eq!(q.raw("inl 0xcfc").unwrap(), "0x29c08086");
    assert_eq!(q.endianness().unwrap(), Endianness::Little);
    // QMP works beside it; the vCPU never ran.
    let status = vm.execute("query-status", None).unwrap();
    let expected = if has_accel { "running" } else { "prelaunch" };
    assert_eq!(status["status"], expected, "{status}");
    vm.shutdown(WAIT).unwrap();
}

#[test]
fn cmos_rtc_through_ports_0x70_and_0x71_and_the_clock_commands() {
    let mut vm = launch(&q35_qtest());
    // Stop the update cycle (divider reset), set 23:59:59 in 24-hour BCD.
    cmos_write(&mut vm, RTC_REG_B, REG_B_24H);
    cmos_write(&mut vm, RTC_REG_A, 0x76);
    cmos_write(&mut vm, RTC_HOURS, 0x23);
    cmos_write(&mut vm, RTC_MINUTES, 0x59);
    cmos_write(&mut vm, RTC_SECONDS, 0x59);
    assert_eq!(cmos_read(&mut vm, RTC_SECONDS), 0x59);
    assert_eq!(cmos_read(&mut vm, RTC_HOURS), 0x23);

    if binary_has_qtest_accel() {
        // The virtual clock: a second later the RTC has passed midnight.
        cmos_write(&mut vm, RTC_REG_A, 0x26);
        let mut q = vm.qtest().unwrap();
        let before = q.clock_step(Some(0)).unwrap();
        let after = q.clock_step(Some(2_000_000_000)).unwrap();
        assert_eq!(after, before + 2_000_000_000);
        assert!(q.clock_set(after + 1).unwrap() > after);
        assert_eq!(cmos_read(&mut vm, RTC_HOURS), 0x00);
        return;
    }

    // No qtest accelerator: the clock commands are refused without asking QEMU.
    let mut q = vm.qtest().unwrap();
    let e = q.clock_step(Some(1_000_000_000)).unwrap_err();
    assert!(
        matches!(&e, Error::NoQtestClock { command, accel } if command == "clock_step" && accel == "tcg"),
        "{e:?}"
    );
    assert!(e.to_string().contains("needs the qtest accelerator"), "{e}");
    let e = q.clock_set(5).unwrap_err();
    assert!(
        matches!(&e, Error::NoQtestClock { command, .. } if command == "clock_set"),
        "{e:?}"
    );
    // Sent raw, QEMU itself says it does not know them.
    let e = q.raw("clock_step").unwrap_err();
    assert!(
        matches!(&e, Error::Qtest(QtestError::Failed { command, reply })
            if command == "clock_step" && reply == "FAIL Unknown command 'clock_step'"),
        "{e:?}"
    );

    // The RTC follows the host clock: its update-ended interrupt (once a second) comes, and
    // the time has then gone through midnight.
    q.irq_intercept_in("ioapic").unwrap();
    cmos_read(&mut vm, RTC_REG_C);
    cmos_write(&mut vm, RTC_REG_B, REG_B_24H | REG_B_UIE);
    cmos_write(&mut vm, RTC_REG_A, 0x26);
    let irq = vm.qtest().unwrap().irq_wait(WAIT).unwrap();
    assert_eq!(
        irq,
        Irq {
            num: RTC_IRQ,
            raised: true
        }
    );
    assert_eq!(cmos_read(&mut vm, RTC_HOURS), 0x00);
    assert_eq!(cmos_read(&mut vm, RTC_MINUTES), 0x00);
}

#[test]
fn guest_ram_written_and_read_back_in_every_form() {
    let mut vm = launch(&q35_qtest());
    let mut q = vm.qtest().unwrap();
    let base = 0x10_0000u64;
    q.writeq(base, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(q.readq(base).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(q.readb(base).unwrap(), 0x88);
    assert_eq!(q.readw(base + 2).unwrap(), 0x5566);
    assert_eq!(q.readl(base + 4).unwrap(), 0x1122_3344);
    q.writeb(base, 0xab).unwrap();
    q.writew(base + 2, 0xcdef).unwrap();
    q.writel(base + 4, 0x0102_0304).unwrap();
    assert_eq!(q.readq(base).unwrap(), 0x0102_0304_cdef_77ab);

    let data: Vec<u8> = (0..=255u8).rev().collect();
    q.write(base + 0x100, &data).unwrap();
    assert_eq!(q.read(base + 0x100, data.len()).unwrap(), data);
    assert_eq!(q.b64read(base + 0x100, data.len()).unwrap(), data);
    q.b64write(base + 0x1000, b"qemu-machine").unwrap();
    assert_eq!(q.read(base + 0x1000, 12).unwrap(), b"qemu-machine");
    q.memset(base + 0x1000, 4, 0x2a).unwrap();
    assert_eq!(q.read(base + 0x1000, 6).unwrap(), b"****-m");
    // Nothing to read or write: answered without QEMU.
    assert_eq!(q.read(base, 0).unwrap(), b"");
    q.write(base, b"").unwrap();
}

#[test]
fn an_intercepted_irq_is_seen_raised_and_lowered_in_order() {
    let mut vm = launch(&q35_qtest());
    let mut q = vm.qtest().unwrap();
    q.irq_intercept_in("ioapic").unwrap();
    q.set_irq_in("ioapic", None, 5, 1).unwrap();
    q.set_irq_in("ioapic", None, 5, 0).unwrap();
    q.set_irq_in("ioapic", None, 6, 1).unwrap();
    assert_eq!(
        q.take_irqs(),
        [
            Irq {
                num: 5,
                raised: true
            },
            Irq {
                num: 5,
                raised: false
            },
            Irq {
                num: 6,
                raised: true
            },
        ]
    );
    assert!(q.irq_level(6) && !q.irq_level(5));
    // The RTC's periodic interrupt arrives with no command pending, while the machine waits
    // for anything: here an event that never comes.
    cmos_read(&mut vm, RTC_REG_C);
    cmos_write(&mut vm, RTC_REG_B, REG_B_24H | REG_B_PIE);
    let e = vm
        .event_wait("NO_SUCH_EVENT", None, Duration::from_millis(300))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let mut q = vm.qtest().unwrap();
    let irq = q.irq_wait(WAIT).unwrap();
    assert_eq!(
        irq,
        Irq {
            num: RTC_IRQ,
            raised: true
        }
    );
    assert_eq!(q.irqs_dropped(), 0);
}

#[test]
fn failing_and_malformed_lines_are_typed_errors_naming_the_line_and_the_answer() {
    let mut vm = launch(&q35_qtest());
    let mut q = vm.qtest().unwrap();
    let e = q.raw("foo bar").unwrap_err();
    assert!(
        matches!(&e, Error::Qtest(QtestError::Failed { command, reply })
            if command == "foo bar" && reply == "FAIL Unknown command 'foo'"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "qtest command \"foo bar\" failed: FAIL Unknown command 'foo'"
    );
    let e = q.irq_intercept_in("/machine/no-such-device").unwrap_err();
    assert!(e.to_string().contains("FAIL Unknown device"), "{e}");
    // What would make QEMU abort is refused before sending, and QEMU goes on.
    for line in ["inb", "outb 0x10000 1", "read 0x0 0x0", "inb  0x71", ""] {
        let e = q.raw(line).unwrap_err();
        assert!(
            matches!(&e, Error::Qtest(QtestError::InvalidCommand { .. })),
            "{line:?}: {e:?}"
        );
    }
    assert_eq!(q.raw("inb 0x80").unwrap().len(), 6);
    assert!(vm.is_running());
    vm.shutdown(WAIT).unwrap();
    // After QEMU's exit, calls say so.
    let e = vm.qtest().unwrap().inb(0x80).unwrap_err();
    assert!(matches!(e, Error::Exited(_)), "{e:?}");
    // A machine without the channel.
    let mut plain = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    plain.args(["-machine", "none"]).accel(AccelChoice::Tcg);
    let mut plain = launch(&plain);
    assert!(!plain.has_qtest());
    assert!(matches!(plain.qtest(), Err(Error::Unsupported(_))));
}

#[test]
fn a_timed_out_call_leaves_the_channel_in_order() {
    let mut vm = launch(&q35_qtest());
    // A stopped QEMU cannot answer in time; once it runs again, the late answer is dropped and
    // the next call gets its own.
    let pid = vm.pid().unwrap();
    support::signal(pid, libc::SIGSTOP);
    let e = vm
        .qtest()
        .unwrap()
        .timeout(Duration::from_millis(200))
        .inl(0xcfc)
        .unwrap_err();
    support::signal(pid, libc::SIGCONT);
    assert!(e.is_timeout(), "{e}");
    let mut q = vm.qtest().unwrap();
    q.outl(0xcf8, 0x8000_0000).unwrap();
    assert_eq!(q.inw(0xcfe).unwrap(), 0x29c0);
    assert_eq!(q.inl(0xcfc).unwrap(), 0x29c0_8086);
}

#[test]
fn without_qmp_the_qtest_answer_ends_the_launch_and_sigterm_stops_it() {
    let mut config = q35_qtest();
    config.qmp(false);
    let mut vm = launch(&config);
    assert!(!vm.is_connected());
    assert!(!vm
        .argv()
        .iter()
        .any(|a| a == "mode=control" || a.to_string_lossy().contains("qm-qmp")));
    let e = vm.execute("query-status", None).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("without the library's QMP")),
        "{e:?}"
    );
    let mut q = vm.qtest().unwrap();
    q.outl(0xcf8, 0x8000_0000).unwrap();
    assert_eq!(q.inl(0xcfc).unwrap(), 0x29c0_8086);
    // Graceful without QMP is SIGTERM, which QEMU obeys (silently under qtest).
    let status = vm.shutdown(WAIT).unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn a_vm_description_with_qtest_and_its_console_on_the_second_isa_serial_port() {
    let launch_json = r#"{"machine": "q35", "memory": "128M"}"#;
    let mut config = MachineConfig::for_vm(VmLaunch::from_json(launch_json).unwrap());
    config
        .qtest(true)
        .console_device(Some("isa-serial"), 1)
        .launch_timeout(WAIT)
        .qmp_timeout(WAIT);
    let mut vm = launch(&config);
    let joined = qemu_cmdline::shell_quote(vm.argv());
    assert!(
        joined.contains("-serial null -device isa-serial,chardev=qm-console"),
        "{joined}"
    );
    // COM2's transmit register: what is written there reaches the console; COM1 is null.
    let mut q = vm.qtest().unwrap();
    for byte in b"to COM1\n" {
        q.outb(0x3f8, *byte).unwrap();
    }
    for byte in b"hello from COM2\n" {
        q.outb(0x2f8, *byte).unwrap();
    }
    let before = vm.console_wait_for(b"\n", WAIT).unwrap();
    assert_eq!(before, b"hello from COM2");
    assert_eq!(vm.status().unwrap(), qemu_process::RunState::Prelaunch);
    vm.shutdown(WAIT).unwrap();
}

#[test]
fn a_pty_console_is_reported_and_carries_the_guest_serial_port() {
    let mut config = q35_qtest();
    config.console_pty(true);
    let mut vm = launch(&config);
    let pty = vm.console_pty().expect("the console's pty");
    assert!(pty.starts_with("/dev/pts/"), "{}", pty.display());
    assert!(vm
        .pty_paths()
        .iter()
        .any(|(label, path)| label == "qm-console" && *path == pty));
    assert!(!vm.has_console());
    let e = vm.console_wait_for(b"x", Duration::ZERO).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("console_pty")),
        "{e:?}"
    );
    // Open the terminal first: QEMU drops output while nobody has it open.
    let mut terminal = std::fs::File::open(&pty).unwrap();
    let mut q = vm.qtest().unwrap();
    for byte in b"through the pty\n" {
        q.outb(0x3f8, *byte).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\n") {
        assert!(readable(&terminal, WAIT), "nothing came through the pty");
        let n = terminal.read(&mut buf).unwrap();
        assert!(n > 0, "the pty closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"through the pty\n");
}
