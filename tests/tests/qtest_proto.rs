//! qmp-proto's `QtestSession` against a real QEMU 7.2: the qtest protocol over a socketpair
//! that QEMU inherits, driving a q35 machine's devices with no guest code at all (the vCPU
//! never runs: `-S`).
//!
//! Debian's QEMU 7.2 does not ship the qtest accelerator (`accel-qtest-x86_64.so`), so the
//! machine runs on TCG, where QEMU's qtest server answers everything but `clock_step` and
//! `clock_set` (those need `-accel qtest` and fail with `FAIL Unknown command`, which is
//! checked here; their replies are covered by qmp-proto's scripted tests). Also, in 7.2,
//! `-qtest chardev:ID` aborts QEMU ("Cannot find character device 'qtest'"), so the server is
//! created with `-object qtest,chardev=ID`.
//!
//! The driver loop is deliberately small and local (a blocking socket with a read timeout);
//! wiring qtest into qemu-process is separate work.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qemu_machine_tests::qemu_system_x86_64;
use qmp_proto::qtest::{Call, Endianness, Irq, QtestError, QtestOptions, QtestSession};

/// Generous: the machine is shared and slow at times; nothing here is a timing assertion,
/// only a bound so that a broken test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

/// QEMU's RTC (MC146818) registers, through index port 0x70 and data port 0x71.
const RTC_SECONDS: u8 = 0x00;
const RTC_MINUTES: u8 = 0x02;
const RTC_HOURS: u8 = 0x04;
const RTC_REG_A: u8 = 0x0a;
const RTC_REG_B: u8 = 0x0b;
const RTC_REG_C: u8 = 0x0c;
/// Register B: periodic interrupt enable, 24-hour mode.
const REG_B_PIE: u8 = 0x40;
const REG_B_24H: u8 = 0x02;
/// Register C: interrupt request, periodic interrupt flag.
const REG_C_IRQF: u8 = 0x80;
const REG_C_PF: u8 = 0x40;
/// The RTC's ISA interrupt, as the intercepted I/O APIC reports it.
const RTC_IRQ: u32 = 8;

/// A q35 QEMU with a qtest server on a socketpair; killed and reaped on drop.
struct Qemu {
    child: Child,
    stream: UnixStream,
    qtest: QtestSession,
}

impl Qemu {
    /// QEMU with the qtest server this crate's tests use: `-object qtest`, not logging.
    fn launch() -> Qemu {
        Qemu::launch_with(&[
            "-accel",
            "tcg",
            "-object",
            "qtest,id=qtest,chardev=qt,log=none",
        ])
    }

    /// A q35 machine that never runs its vCPU, with chardev `qt` on a socketpair, and
    /// `extra` arguments: the accelerator and those that make a qtest server of `qt`.
    fn launch_with(extra: &[&str]) -> Qemu {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let mut command = Command::new(qemu_system_x86_64());
        command
            .args(["-machine", "q35", "-S", "-nodefaults"])
            .args(["-display", "none", "-chardev"])
            .arg(format!("socket,id=qt,fd={fd}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only fcntl runs, which is async-signal-safe; it
        // clears FD_CLOEXEC on QEMU's end of the socketpair so that QEMU inherits it.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("cannot run qemu-system-x86_64");
        drop(theirs);
        ours.set_read_timeout(Some(DEADLINE)).unwrap();
        ours.set_write_timeout(Some(DEADLINE)).unwrap();
        Qemu {
            child,
            stream: ours,
            qtest: QtestSession::new(QtestOptions::default()),
        }
    }

    /// QEMU's exit status, once it exits by itself.
    fn exit_status(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "QEMU did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes what the session has to send.
    fn flush(&mut self) {
        while !self.qtest.transmit().is_empty() {
            let n = self.stream.write(self.qtest.transmit()).unwrap();
            self.qtest.advance_transmit(n);
        }
    }

    /// Reads once from QEMU into the session; `false` at the end of the stream.
    fn read_some(&mut self) -> bool {
        let mut buffer = [0u8; 4096];
        let n = match self.stream.read(&mut buffer) {
            Ok(n) => n,
            Err(error) => panic!("no answer from QEMU within {DEADLINE:?}: {error}"),
        };
        if n == 0 {
            self.qtest.receive_eof().unwrap();
            return false;
        }
        self.qtest.receive(&buffer[..n]).unwrap();
        true
    }

    /// Sends what is queued and waits for the reply to `call`.
    fn wait<T>(&mut self, call: Call<T>) -> Result<T, QtestError> {
        self.flush();
        while !self.qtest.has_reply(call.id()) {
            self.read_some();
        }
        self.qtest.take(call).unwrap()
    }

    /// Issues a typed call and waits for its value, which must be a success.
    fn ok<T>(&mut self, issue: impl FnOnce(&mut QtestSession) -> Result<Call<T>, QtestError>) -> T {
        let call = issue(&mut self.qtest).unwrap();
        self.wait(call).unwrap_or_else(|error| panic!("{error}"))
    }

    fn cmos_read(&mut self, register: u8) -> u8 {
        self.ok(|q| q.outb(0x70, register));
        self.ok(|q| q.inb(0x71))
    }

    fn cmos_write(&mut self, register: u8, value: u8) {
        self.ok(|q| q.outb(0x70, register));
        self.ok(|q| q.outb(0x71, value));
    }

    /// Waits, with no command pending, until an IRQ notification is queued.
    fn wait_irq(&mut self) -> Irq {
        loop {
            if let Some(irq) = self.qtest.poll_irq() {
                return irq;
            }
            assert!(self.read_some(), "QEMU closed the stream");
        }
    }

    /// QEMU's standard error so far, once it has exited.
    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn q35_host_bridge_ids_through_pci_config_ports_pipelined() {
    let mut qemu = Qemu::launch();
    let q = &mut qemu.qtest;
    // All at once: QEMU answers in order.
    let select = q.outl(0xcf8, 0x8000_0000).unwrap();
    let ids = q.inl(0xcfc).unwrap();
    let vendor = q.inw(0xcfc).unwrap();
    let device = q.inw(0xcfe).unwrap();
    let low = q.inb(0xcfc).unwrap();
    let endianness = q.endianness().unwrap();
    let raw = q.send_raw("inl 0xcfc").unwrap();
    assert_eq!(qemu.wait(endianness), Ok(Endianness::Little));
    // The replies before it are there too (the one after may or may not be yet).
    assert_eq!(qemu.qtest.take(select), Some(Ok(())));
    // Intel 82G33 (Q35) DRAM controller: vendor 0x8086, device 0x29c0.
    assert_eq!(qemu.qtest.take(ids), Some(Ok(0x29c0_8086)));
    assert_eq!(qemu.qtest.take(vendor), Some(Ok(0x8086)));
    assert_eq!(qemu.qtest.take(device), Some(Ok(0x29c0)));
    assert_eq!(qemu.qtest.take(low), Some(Ok(0x86)));
    assert_eq!(qemu.wait(raw), Ok("0x29c08086".to_owned()));
}

#[test]
fn guest_ram_written_and_read_back_every_way() {
    let mut qemu = Qemu::launch();
    let base = 0x10_0000u64;
    qemu.ok(|q| q.writeq(base, 0x1122_3344_5566_7788));
    assert_eq!(qemu.ok(|q| q.readq(base)), 0x1122_3344_5566_7788);
    // Little-endian target: the low byte first.
    assert_eq!(qemu.ok(|q| q.readb(base)), 0x88);
    assert_eq!(qemu.ok(|q| q.readw(base + 2)), 0x5566);
    assert_eq!(qemu.ok(|q| q.readl(base + 4)), 0x1122_3344);
    let le = 0x1122_3344_5566_7788u64.to_le_bytes().to_vec();
    assert_eq!(qemu.ok(|q| q.read(base, 8)), le);
    assert_eq!(qemu.ok(|q| q.b64read(base, 8)), le);

    qemu.ok(|q| q.writeb(base, 0xab));
    qemu.ok(|q| q.writew(base + 2, 0xcdef));
    qemu.ok(|q| q.writel(base + 4, 0x0102_0304));
    assert_eq!(qemu.ok(|q| q.readq(base)), 0x0102_0304_cdef_77ab);

    // Blobs of every length up to 70 bytes, through both encodings each way, each at an
    // offset of its own.
    let data: Vec<u8> = (0..70u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    for len in 0..data.len() {
        let at = base + 0x1000 + len as u64 * 0x100;
        let blob = &data[..len];
        if len % 2 == 0 {
            qemu.ok(|q| q.write(at, blob));
        } else {
            qemu.ok(|q| q.b64write(at, blob));
        }
        assert_eq!(qemu.ok(|q| q.read(at, len)), blob, "read of {len}");
        assert_eq!(qemu.ok(|q| q.b64read(at, len)), blob, "b64read of {len}");
    }

    // A large blob: 256 KiB, i.e. a 512 KiB hex reply line.
    let big: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let at = base + 0x10_0000;
    qemu.ok(|q| q.b64write(at, &big));
    assert_eq!(qemu.ok(|q| q.read(at, big.len())), big);
    qemu.ok(|q| q.write(at, &big[..1000]));
    assert_eq!(qemu.ok(|q| q.b64read(at, 1000)), &big[..1000]);

    qemu.ok(|q| q.memset(base, 5, 0xee));
    qemu.ok(|q| q.memset(base, 0, 0x11));
    assert_eq!(
        qemu.ok(|q| q.read(base, 8)),
        [0xee, 0xee, 0xee, 0xee, 0xee, 0x03, 0x02, 0x01][..]
    );
}

#[test]
fn rtc_time_moves_and_clock_commands_need_the_qtest_accelerator() {
    let mut qemu = Qemu::launch();
    // Stop the update cycle (divider reset), set 23:59:58 in 24-hour BCD, restart it.
    qemu.cmos_write(RTC_REG_B, REG_B_24H);
    qemu.cmos_write(RTC_REG_A, 0x76);
    qemu.cmos_write(RTC_HOURS, 0x23);
    qemu.cmos_write(RTC_MINUTES, 0x59);
    qemu.cmos_write(RTC_SECONDS, 0x58);
    assert_eq!(qemu.cmos_read(RTC_SECONDS), 0x58);
    qemu.cmos_write(RTC_REG_A, 0x26);

    // The virtual clock is the qtest accelerator's: on TCG, QEMU does not know the commands.
    for (call, line) in [
        (qemu.qtest.clock_step(None).unwrap(), "clock_step"),
        (
            qemu.qtest.clock_step(Some(1_000_000_000)).unwrap(),
            "clock_step 1000000000",
        ),
        (qemu.qtest.clock_set(5).unwrap(), "clock_set 5"),
    ] {
        let command = line.split(' ').next().unwrap();
        assert_eq!(
            qemu.wait(call),
            Err(QtestError::Failed {
                command: line.to_owned(),
                reply: format!("FAIL Unknown command '{command}'"),
            })
        );
    }

    // Without the qtest accelerator, the RTC follows the host clock: it moves while the
    // vCPU never runs, through midnight to 00:00.
    let start = Instant::now();
    while qemu.cmos_read(RTC_HOURS) != 0x00 {
        assert!(start.elapsed() < DEADLINE, "the RTC never reached midnight");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(qemu.cmos_read(RTC_MINUTES), 0x00);
    assert!(qemu.cmos_read(RTC_SECONDS) < 0x58);
    assert_eq!(qemu.cmos_read(RTC_REG_A), 0x26);
}

#[test]
fn interrupts_arrive_alone_and_between_a_command_and_its_reply() {
    let mut qemu = Qemu::launch();
    qemu.ok(|q| q.irq_intercept_in("ioapic"));
    // Intercepting the same device again is fine, another one is not; an unknown path fails.
    qemu.ok(|q| q.irq_intercept_in("ioapic"));
    let other = qemu.qtest.irq_intercept_out("/machine/q35").unwrap();
    assert_eq!(
        qemu.wait(other),
        Err(QtestError::Failed {
            command: "irq_intercept_out /machine/q35".into(),
            reply: "FAIL IRQ intercept already enabled".into(),
        })
    );
    let unknown = qemu
        .qtest
        .irq_intercept_in("/machine/no-such-device")
        .unwrap();
    assert_eq!(
        qemu.wait(unknown),
        Err(QtestError::Failed {
            command: "irq_intercept_in /machine/no-such-device".into(),
            reply: "FAIL Unknown device".into(),
        })
    );
    assert_eq!(qemu.qtest.irqs_queued(), 0);

    // set_irq_in drives an intercepted input: the notification comes before the OK.
    let raise = qemu.qtest.set_irq_in("ioapic", None, 5, 1).unwrap();
    qemu.wait(raise).unwrap();
    assert_eq!(
        qemu.qtest.poll_irq(),
        Some(Irq {
            num: 5,
            raised: true
        })
    );
    assert!(qemu.qtest.irq_level(5));
    let lower = qemu.qtest.set_irq_in("ioapic", None, 5, 0).unwrap();
    qemu.wait(lower).unwrap();
    assert_eq!(
        qemu.qtest.poll_irq(),
        Some(Irq {
            num: 5,
            raised: false
        })
    );
    assert!(!qemu.qtest.irq_level(5));

    // The RTC's periodic interrupt (1024 Hz with register A's default divider): it comes
    // with no command pending.
    assert_eq!(qemu.cmos_read(RTC_REG_A), 0x26);
    qemu.cmos_read(RTC_REG_C);
    qemu.cmos_write(RTC_REG_B, REG_B_24H | REG_B_PIE);
    let irq = qemu.wait_irq();
    assert_eq!(
        irq,
        Irq {
            num: RTC_IRQ,
            raised: true
        }
    );
    assert!(qemu.qtest.irq_level(RTC_IRQ));

    // Disabling the interrupt lowers the line while QEMU handles the write: the
    // notification arrives between the command and its reply.
    qemu.ok(|q| q.outb(0x70, RTC_REG_B));
    let disable = qemu.qtest.outb(0x71, REG_B_24H).unwrap();
    assert_eq!(qemu.wait(disable), Ok(()));
    assert_eq!(
        qemu.qtest.poll_irq(),
        Some(Irq {
            num: RTC_IRQ,
            raised: false
        })
    );
    assert!(!qemu.qtest.irq_level(RTC_IRQ));
    let flags = qemu.cmos_read(RTC_REG_C);
    assert_eq!(flags & (REG_C_PF | REG_C_IRQF), REG_C_PF, "{flags:#x}");
    assert_eq!(qemu.qtest.irqs_dropped(), 0);
}

#[test]
fn failing_and_refused_lines_are_typed_errors_and_the_session_goes_on() {
    let mut qemu = Qemu::launch();
    let unknown = qemu.qtest.send_raw("foo bar").unwrap();
    let empty_write = qemu.qtest.send_raw("write 0x100000 0x0 0x").unwrap();
    let no_module = qemu.qtest.module_load("x", "y").unwrap();
    let module = qemu.qtest.module_load("hw-", "display-qxl").unwrap();
    let after = qemu.qtest.inb(0x71).unwrap();
    assert_eq!(
        qemu.wait(unknown),
        Err(QtestError::Failed {
            command: "foo bar".into(),
            reply: "FAIL Unknown command 'foo'".into(),
        })
    );
    let error = qemu.wait(empty_write).unwrap_err();
    assert_eq!(
        error.to_string(),
        "qtest command \"write 0x100000 0x0 0x\" failed: ERR invalid argument size"
    );
    assert_eq!(
        qemu.wait(no_module),
        Err(QtestError::Failed {
            command: "module_load x y".into(),
            reply: "FAIL".into(),
        })
    );
    assert_eq!(qemu.wait(module), Ok(()));
    qemu.wait(after).unwrap();

    // Lines QEMU would abort on are refused before they are sent.
    for line in ["inb", "read 0x0 0x0", "outb 0x10000 0x1", "inb  0x71"] {
        assert!(
            matches!(
                qemu.qtest.send_raw(line),
                Err(QtestError::InvalidCommand { .. })
            ),
            "{line}"
        );
    }
    assert_eq!(qemu.qtest.transmit(), b"");
    // Zero-length reads and writes complete without QEMU.
    let nothing = qemu.qtest.read(0, 0).unwrap();
    assert_eq!(qemu.qtest.take(nothing), Some(Ok(Vec::new())));
    assert_eq!(qemu.ok(|q| q.send_raw("inb 0x71")).len(), 6);
}

/// Why the session refuses malformed lines: QEMU asserts on them and aborts. Also the end of
/// the stream with a command pending.
#[test]
fn qemu_aborts_on_a_command_without_its_argument_and_pending_commands_fail_closed() {
    let mut qemu = Qemu::launch();
    qemu.ok(|q| q.outb(0x80, 1));
    let pending = qemu.qtest.inb(0x71).unwrap();
    // Behind the session's back, before its line: the line it refuses to send.
    let mut bytes = b"inb\n".to_vec();
    bytes.extend_from_slice(qemu.qtest.transmit());
    qemu.stream.write_all(&bytes).unwrap();
    let n = qemu.qtest.transmit().len();
    qemu.qtest.advance_transmit(n);
    while qemu.read_some() {}
    assert!(qemu.qtest.is_closed());
    assert_eq!(
        qemu.qtest.take(pending),
        Some(Err(QtestError::Closed {
            command: Some("inb 0x71".into())
        }))
    );
    let status = qemu.exit_status();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let stderr = qemu.stderr();
    assert!(stderr.contains("words[1]"), "{stderr}");
}

/// The facts about QEMU 7.2's qtest server that shape how it is launched, as
/// qmp-proto's README states them.
#[test]
fn qemu_7_2_qtest_server_options() {
    // `-qtest chardev:ID` aborts QEMU 7.2.
    let mut qemu = Qemu::launch_with(&["-accel", "tcg", "-qtest", "chardev:qt"]);
    let status = qemu.exit_status();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let stderr = qemu.stderr();
    assert!(
        stderr.contains("Cannot find character device 'qtest'"),
        "{stderr}"
    );

    // Debian's QEMU has no qtest accelerator. (Were it there, the bad socket path would
    // make QEMU fail at once, with another message.)
    let mut qemu = Qemu::launch_with(&["-accel", "qtest", "-qtest", "unix:/nonexistent/qt"]);
    let status = qemu.exit_status();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let stderr = qemu.stderr();
    assert!(stderr.contains("invalid accelerator qtest"), "{stderr}");

    // Without `log=none`, the server logs every line to stderr.
    let mut qemu = Qemu::launch_with(&["-accel", "tcg", "-object", "qtest,id=qtest,chardev=qt"]);
    assert_eq!(qemu.ok(|q| q.inl(0xcfc)), 0xffff_ffff);
    // QEMU logs a reply's line in two writes around sending it: a second command's reply
    // means the first line is whole (the server is single-threaded).
    assert_eq!(qemu.ok(|q| q.inl(0xcf8)), 0);
    qemu.child.kill().unwrap();
    qemu.child.wait().unwrap();
    let stderr = qemu.stderr();
    assert!(stderr.contains("] inl 0xcfc\n"), "{stderr}");
    assert!(stderr.contains("] OK 0xffffffff\n"), "{stderr}");
}
