//! Scripted byte streams through a `QtestSession`. The reply formats are QEMU 7.2's
//! (`softmmu/qtest.c`), as checked against the real thing by the tests crate's
//! `qtest_proto` test.

use super::*;

fn session() -> QtestSession {
    QtestSession::new(QtestOptions::default())
}

/// Takes everything transmitted, as text.
fn sent(qtest: &mut QtestSession) -> String {
    let out = String::from_utf8(qtest.transmit().to_vec()).unwrap();
    qtest.advance_transmit(out.len());
    out
}

/// The error a call ended with.
fn error_of<T: std::fmt::Debug>(reply: Option<Result<T, QtestError>>) -> QtestError {
    reply.expect("a reply").expect_err("an error")
}

fn closed(command: &str) -> QtestError {
    QtestError::Closed {
        command: Some(command.into()),
    }
}

#[test]
fn typed_calls_send_well_formed_lines() {
    let mut q = session();
    q.clock_step(None).unwrap();
    q.clock_step(Some(1_000_000_000)).unwrap();
    q.clock_set(42).unwrap();
    q.inb(0x71).unwrap();
    q.inw(0xcfe).unwrap();
    q.inl(0xcfc).unwrap();
    q.outb(0x70, 0x0c).unwrap();
    q.outw(0x1f0, 0xbeef).unwrap();
    q.outl(0xcf8, 0x8000_0000).unwrap();
    q.readb(0x1000).unwrap();
    q.readw(0x1000).unwrap();
    q.readl(0x1000).unwrap();
    q.readq(0xffff_ffff_ffff_fff8).unwrap();
    q.writeb(0x1000, 0).unwrap();
    q.writew(0x1000, 0xffff).unwrap();
    q.writel(0x1000, 1).unwrap();
    q.writeq(0x1000, u64::MAX).unwrap();
    q.read(0x2000, 16).unwrap();
    q.b64read(0x2000, 3).unwrap();
    q.write(0x2000, &[0x00, 0xab, 0x0f]).unwrap();
    q.b64write(0x2000, b"foob").unwrap();
    q.memset(0x2000, 0x100, 0xa5).unwrap();
    q.memset(0x2000, 0, 1).unwrap();
    q.irq_intercept_in("ioapic").unwrap();
    q.irq_intercept_out("/machine/unattached/device[0]")
        .unwrap();
    q.set_irq_in("/machine/q35/ioapic", None, 8, 1).unwrap();
    q.set_irq_in("dev", Some("named"), 0, -1).unwrap();
    q.endianness().unwrap();
    q.module_load("hw-", "display-qxl").unwrap();
    q.send_raw("foo bar").unwrap();
    assert_eq!(
        sent(&mut q),
        "clock_step\n\
         clock_step 1000000000\n\
         clock_set 42\n\
         inb 0x71\n\
         inw 0xcfe\n\
         inl 0xcfc\n\
         outb 0x70 0xc\n\
         outw 0x1f0 0xbeef\n\
         outl 0xcf8 0x80000000\n\
         readb 0x1000\n\
         readw 0x1000\n\
         readl 0x1000\n\
         readq 0xfffffffffffffff8\n\
         writeb 0x1000 0x0\n\
         writew 0x1000 0xffff\n\
         writel 0x1000 0x1\n\
         writeq 0x1000 0xffffffffffffffff\n\
         read 0x2000 0x10\n\
         b64read 0x2000 0x3\n\
         write 0x2000 0x3 0x00ab0f\n\
         b64write 0x2000 0x4 Zm9vYg==\n\
         memset 0x2000 0x100 0xa5\n\
         memset 0x2000 0x0 0x1\n\
         irq_intercept_in ioapic\n\
         irq_intercept_out /machine/unattached/device[0]\n\
         set_irq_in /machine/q35/ioapic unnamed-gpio-in 8 1\n\
         set_irq_in dev named 0 -1\n\
         endianness\n\
         module_load hw- display-qxl\n\
         foo bar\n"
    );
    assert_eq!(q.pending(), 30);
}

#[test]
fn replies_become_typed_values() {
    let mut q = session();
    let step = q.clock_step(Some(10)).unwrap();
    let set = q.clock_set(5).unwrap();
    let inb = q.inb(0x71).unwrap();
    let inw = q.inw(0x71).unwrap();
    let inl = q.inl(0xcfc).unwrap();
    let readb = q.readb(0).unwrap();
    let readw = q.readw(0).unwrap();
    let readl = q.readl(0).unwrap();
    let readq = q.readq(0).unwrap();
    let read = q.read(0, 8).unwrap();
    let b64read = q.b64read(0, 8).unwrap();
    let outb = q.outb(0x70, 0).unwrap();
    let endianness = q.endianness().unwrap();
    let raw = q.send_raw("inb 0x71").unwrap();
    let raw_ok = q.send_raw("outb 0x80 0x1").unwrap();
    q.receive(
        b"OK 10\nOK 10\nOK 0x0044\nOK 0xff09\nOK 0x29c08086\nOK 0x0000000000000088\n\
          OK 0x0000000000007788\nOK 0x0000000055667788\nOK 0x1122334455667788\n\
          OK 0x8877665544332211\nOK iHdmVUQzIhE=\nOK\nOK little\nOK 0x0044\nOK\n",
    )
    .unwrap();
    assert_eq!(q.pending(), 0);
    assert_eq!(q.take(step), Some(Ok(10)));
    assert_eq!(q.take(set), Some(Ok(10)));
    assert_eq!(q.take(inb), Some(Ok(0x44)));
    assert_eq!(q.take(inw), Some(Ok(0xff09)));
    assert_eq!(q.take(inl), Some(Ok(0x29c0_8086)));
    assert_eq!(q.take(readb), Some(Ok(0x88)));
    assert_eq!(q.take(readw), Some(Ok(0x7788)));
    assert_eq!(q.take(readl), Some(Ok(0x5566_7788)));
    assert_eq!(q.take(readq), Some(Ok(0x1122_3344_5566_7788)));
    let bytes = 0x1122_3344_5566_7788u64.to_le_bytes().to_vec();
    assert_eq!(q.take(read), Some(Ok(bytes.clone())));
    assert_eq!(q.take(b64read), Some(Ok(bytes)));
    assert_eq!(q.take(outb), Some(Ok(())));
    assert_eq!(q.take(endianness), Some(Ok(Endianness::Little)));
    assert_eq!(q.take(raw), Some(Ok("0x0044".to_owned())));
    assert_eq!(q.take(raw_ok), Some(Ok(String::new())));
    // Taken once only.
    assert_eq!(q.take(inb), None);
    assert!(!q.has_reply(inb.id()));
}

#[test]
fn ids_and_pending_state() {
    let mut q = session();
    let a = q.inb(0x71).unwrap();
    let b = q.outb(0x80, 1).unwrap();
    assert_eq!((a.id(), b.id()), (RequestId(1), RequestId(2)));
    assert!(q.is_pending(a.id()) && q.is_pending(b.id()));
    assert!(!q.has_reply(a.id()));
    assert_eq!(q.take(a), None);
    q.receive(b"OK 0x0001\n").unwrap();
    assert!(!q.is_pending(a.id()) && q.has_reply(a.id()) && q.is_pending(b.id()));
    assert_eq!(q.pending(), 1);
    assert_eq!(format!("{a:?}"), "Call { id: RequestId(1), reply: \"u8\" }");
}

/// Checks the reply to one command of the script.
type Check = Box<dyn Fn(&mut QtestSession)>;

/// Pipelined commands with their replies, the IRQ lines they are interleaved with, and what
/// is expected of each.
fn script() -> (QtestSession, Vec<Check>, Vec<&'static str>) {
    let mut q = session();
    let inb = q.inb(0x71).unwrap();
    let outb = q.outb(0x70, 0x0c).unwrap();
    let fail = q.send_raw("foo").unwrap();
    let read = q.read(0x1000, 3).unwrap();
    let step = q.clock_step(None).unwrap();
    let replies = vec![
        "OK 0x00c0",
        "OK",
        "FAIL Unknown command 'foo'",
        "OK 0x01ff80",
        "OK 100000",
    ];
    let checks: Vec<Check> = vec![
        Box::new(move |q| assert_eq!(q.take(inb), Some(Ok(0xc0)))),
        Box::new(move |q| assert_eq!(q.take(outb), Some(Ok(())))),
        Box::new(move |q| {
            assert_eq!(
                q.take(fail),
                Some(Err(QtestError::Failed {
                    command: "foo".into(),
                    reply: "FAIL Unknown command 'foo'".into()
                }))
            )
        }),
        Box::new(move |q| assert_eq!(q.take(read), Some(Ok(vec![1, 0xff, 0x80])))),
        Box::new(move |q| assert_eq!(q.take(step), Some(Ok(100_000)))),
    ];
    (q, checks, replies)
}

const IRQS: [(&str, Irq); 2] = [
    (
        "IRQ raise 8",
        Irq {
            num: 8,
            raised: true,
        },
    ),
    (
        "IRQ lower 255",
        Irq {
            num: 255,
            raised: false,
        },
    ),
];

/// The script's replies with IRQ lines inserted before reply `at` (after the last for
/// `at == replies.len()`).
fn stream(replies: &[&str], at: usize) -> Vec<u8> {
    let mut lines: Vec<&str> = replies.to_vec();
    for (i, (line, _)) in IRQS.iter().enumerate() {
        lines.insert(at + i, line);
    }
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

fn check(mut q: QtestSession, checks: &[Check]) {
    assert_eq!(q.pending(), 0);
    for check in checks {
        check(&mut q);
    }
    let irqs: Vec<Irq> = q.irqs().copied().collect();
    assert_eq!(irqs, IRQS.map(|(_, irq)| irq));
    assert!(q.irq_level(8) && !q.irq_level(255));
    assert_eq!(q.irqs_dropped(), 0);
}

#[test]
fn irqs_anywhere_in_a_stream_fed_byte_by_byte() {
    let (_, _, replies) = script();
    for at in 0..=replies.len() {
        let (mut q, checks, _) = script();
        for byte in stream(&replies, at) {
            q.receive(&[byte]).unwrap();
        }
        check(q, &checks);
    }
}

#[test]
fn irqs_anywhere_in_a_stream_split_anywhere() {
    let (_, _, replies) = script();
    for at in 0..=replies.len() {
        let bytes = stream(&replies, at);
        // Under miri, a few split points only: every one takes seconds there.
        let step = if cfg!(miri) { 17 } else { 1 };
        for split in (0..=bytes.len()).step_by(step) {
            for second in (split..=bytes.len()).step_by(step * 7) {
                let (mut q, checks, _) = script();
                q.receive(&bytes[..split]).unwrap();
                q.receive(&bytes[split..second]).unwrap();
                q.receive(&bytes[second..]).unwrap();
                check(q, &checks);
            }
        }
    }
}

#[test]
fn irqs_without_any_command_and_levels() {
    let mut q = session();
    assert!(!q.irq_level(0));
    q.receive(b"IRQ raise 0\nIRQ raise 4\nIRQ lower 0\n")
        .unwrap();
    assert!(!q.irq_level(0) && q.irq_level(4) && !q.irq_level(MAX_IRQ));
    assert_eq!(q.irqs_queued(), 3);
    assert_eq!(
        q.poll_irq(),
        Some(Irq {
            num: 0,
            raised: true
        })
    );
    assert_eq!(
        q.poll_irq(),
        Some(Irq {
            num: 4,
            raised: true
        })
    );
    assert_eq!(
        q.poll_irq(),
        Some(Irq {
            num: 0,
            raised: false
        })
    );
    assert_eq!(q.poll_irq(), None);
    // Taking the notifications does not change the levels.
    assert!(q.irq_level(4));
}

#[test]
fn irq_queue_is_bounded_and_counts_what_it_drops() {
    let mut q = QtestSession::new(QtestOptions {
        max_irqs: 3,
        ..QtestOptions::default()
    });
    let inb = q.inb(0x71).unwrap();
    let mut bytes = Vec::new();
    for i in 0..10u32 {
        bytes.extend_from_slice(
            format!("IRQ {} {}\n", ["raise", "lower"][i as usize % 2], i).as_bytes(),
        );
    }
    bytes.extend_from_slice(b"IRQ raise 200\nOK 0x0001\n");
    q.receive(&bytes).unwrap();
    assert_eq!(q.take(inb), Some(Ok(1)));
    assert_eq!(q.irqs_queued(), 3);
    assert_eq!(q.irqs_dropped(), 8);
    let kept: Vec<u32> = q.irqs().map(|irq| irq.num).collect();
    assert_eq!(kept, [0, 1, 2]);
    // The levels follow the dropped notifications too.
    assert!(q.irq_level(8) && !q.irq_level(9) && q.irq_level(200));
    // Room again once the caller takes some.
    q.poll_irq();
    q.receive(b"IRQ lower 200\n").unwrap();
    assert_eq!(
        q.irqs().last(),
        Some(&Irq {
            num: 200,
            raised: false
        })
    );
    assert_eq!(q.irqs_dropped(), 8);
}

#[test]
fn failures_and_bad_replies_name_the_command_and_the_answer() {
    let mut q = session();
    let write = q.send_raw("write 0x1000 0x0 0x").unwrap();
    let module = q.module_load("x", "y").unwrap();
    let garbage = q.inb(0x71).unwrap();
    let too_big = q.inb(0x71).unwrap();
    let not_hex = q.readq(0).unwrap();
    let extra = q.outb(0x80, 1).unwrap();
    let short = q.read(0, 4).unwrap();
    let bad_b64 = q.b64read(0, 2).unwrap();
    let wrong_len = q.b64read(0, 2).unwrap();
    let negative = q.clock_step(None).unwrap();
    let endianness = q.endianness().unwrap();
    let after = q.inb(0x71).unwrap();
    q.receive(
        b"ERR invalid argument size\nFAIL\nhello\nOK 0x100\nOK 12\nOK 0x0001\nOK 0x0102\n\
          OK AB*=\nOK AAAA\nOK -1\nOK middle\nOK 0x0003\n",
    )
    .unwrap();
    let failed = |command: &str, reply: &str| QtestError::Failed {
        command: command.into(),
        reply: reply.into(),
    };
    let reply = |command: &str, reply: &str, message: &str| QtestError::Reply {
        command: command.into(),
        reply: reply.into(),
        message: message.into(),
    };
    assert_eq!(
        error_of(q.take(write)),
        failed("write 0x1000 0x0 0x", "ERR invalid argument size")
    );
    assert_eq!(error_of(q.take(module)), failed("module_load x y", "FAIL"));
    assert_eq!(
        error_of(q.take(garbage)),
        reply("inb 0x71", "hello", "not OK, FAIL or ERR")
    );
    assert_eq!(
        error_of(q.take(too_big)),
        reply("inb 0x71", "OK 0x100", "0x100 does not fit 8 bits")
    );
    assert_eq!(
        error_of(q.take(not_hex)),
        reply("readq 0x0", "OK 12", "expected a 0x-prefixed hex number")
    );
    assert_eq!(
        error_of(q.take(extra)),
        reply("outb 0x80 0x1", "OK 0x0001", "expected a bare OK")
    );
    assert_eq!(
        error_of(q.take(short)),
        reply(
            "read 0x0 0x4",
            "OK 0x0102",
            "expected 4 bytes, got 4 hex digits"
        )
    );
    assert_eq!(
        error_of(q.take(bad_b64)),
        reply(
            "b64read 0x0 0x2",
            "OK AB*=",
            "invalid base64 at offset 2: a byte outside the base64 alphabet"
        )
    );
    assert_eq!(
        error_of(q.take(wrong_len)),
        reply("b64read 0x0 0x2", "OK AAAA", "expected 2 bytes, got 3")
    );
    assert_eq!(
        error_of(q.take(negative)),
        reply(
            "clock_step",
            "OK -1",
            "expected the clock in decimal nanoseconds"
        )
    );
    assert_eq!(
        error_of(q.take(endianness)),
        reply("endianness", "OK middle", "expected little or big")
    );
    // The session goes on.
    assert_eq!(q.take(after), Some(Ok(3)));
    assert!(!q.is_closed());
    let error = QtestError::Failed {
        command: "foo".into(),
        reply: "FAIL Unknown command 'foo'".into(),
    };
    assert_eq!(
        error.to_string(),
        "qtest command \"foo\" failed: FAIL Unknown command 'foo'"
    );
}

#[test]
fn number_edges() {
    let mut q = session();
    let max = q.readq(0).unwrap();
    let over = q.readq(0).unwrap();
    let upper = q.inl(0).unwrap();
    let empty = q.inl(0).unwrap();
    let clock = q.clock_set(0).unwrap();
    let clock_over = q.clock_set(0).unwrap();
    q.receive(
        b"OK 0xFFFFFFFFFFFFFFFF\nOK 0x10000000000000000\nOK 0xABCDEF01\nOK 0x\n\
          OK 9223372036854775807\nOK 9223372036854775808\n",
    )
    .unwrap();
    assert_eq!(q.take(max), Some(Ok(u64::MAX)));
    assert!(
        matches!(q.take(over), Some(Err(QtestError::Reply { message, .. })) if message == "the number does not fit 64 bits")
    );
    assert_eq!(q.take(upper), Some(Ok(0xabcd_ef01)));
    assert!(matches!(q.take(empty), Some(Err(QtestError::Reply { .. }))));
    assert_eq!(q.take(clock), Some(Ok(i64::MAX as u64)));
    assert!(matches!(
        q.take(clock_over),
        Some(Err(QtestError::Reply { .. }))
    ));
}

#[test]
fn arguments_qemu_would_abort_on_are_refused() {
    let mut q = session();
    let refused = |result: Result<Call<()>, QtestError>| match result {
        Err(QtestError::InvalidCommand { command, message }) => (command, message),
        other => panic!("not refused: {other:?}"),
    };
    for line in [
        "",
        "inb  0x71",
        " inb 0x71",
        "inb 0x71 ",
        "inb\n0x71",
        "inb 0x71\r",
        "inb\t0x71",
        "outb 0x80 é",
        "inb \0",
    ] {
        let error = q.send_raw(line).unwrap_err();
        assert!(
            matches!(error, QtestError::InvalidCommand { .. }),
            "{line:?}: {error:?}"
        );
    }
    assert_eq!(
        refused(q.irq_intercept_in("")),
        (
            "irq_intercept_in ".into(),
            "empty word: words are separated by single spaces, with none at either end".into()
        )
    );
    assert_eq!(
        refused(q.irq_intercept_out("a b")).1,
        "' ' is not printable ASCII"
    );
    refused(q.set_irq_in("dev", Some("x\ny"), 0, 0));
    refused(q.set_irq_in("dev", None, 1 << 31, 0));
    refused(q.module_load("", "x"));
    let clock = q.clock_step(Some(1 << 63)).unwrap_err();
    assert!(
        matches!(clock, QtestError::InvalidCommand { ref command, .. } if command == "clock_step 9223372036854775808")
    );
    assert!(q.clock_set(u64::MAX).is_err());
    assert!(q.clock_set(i64::MAX as u64).is_ok());
    assert_eq!(
        q.send_raw("inb\n0x71").unwrap_err().to_string(),
        "invalid qtest command \"inb\\n0x71\": '\\n' is not printable ASCII"
    );
    // Lines QEMU would abort on, and reads whose reply would not fit, also as raw lines.
    for (line, message) in [
        ("inb", "inb needs 1 argument, QEMU aborts without them"),
        (
            "read 0x0 0x0",
            "read: \"0x0\" is not a size above 0, QEMU aborts on it",
        ),
        (
            "read 0x0 0x80000",
            "the reply would exceed the line bound of 1048576 bytes",
        ),
        (
            "b64read 0x0 0xc0000",
            "the reply would exceed the line bound of 1048576 bytes",
        ),
        (
            "b64read 0x0 0xffffffffffffffff",
            "the reply would exceed the line bound of 1048576 bytes",
        ),
    ] {
        assert_eq!(
            q.send_raw(line).unwrap_err(),
            QtestError::InvalidCommand {
                command: line.into(),
                message: message.into()
            }
        );
    }
    assert_eq!(sent(&mut q), "clock_set 9223372036854775807\n");
    // The largest reads whose reply fits, with a small bound: "OK 0x" and 2 × 29 digits
    // make 63 bytes, "OK " and 4 × 15 base64 characters 63 too.
    let mut q = QtestSession::new(QtestOptions {
        max_line: 63,
        ..QtestOptions::default()
    });
    let read = q.send_raw("read 0x0 0x1d").unwrap();
    let b64read = q.send_raw("b64read 0x0 0x2d").unwrap();
    assert!(q.send_raw("read 0x0 0x1e").is_err());
    assert!(q.send_raw("b64read 0x0 0x2e").is_err());
    q.receive(format!("OK 0x{}\n", "00".repeat(0x1d)).as_bytes())
        .unwrap();
    q.receive(format!("OK {}\n", "A".repeat(60)).as_bytes())
        .unwrap();
    assert_eq!(q.take(read).unwrap().unwrap().len(), 2 + 2 * 0x1d);
    assert_eq!(q.take(b64read).unwrap().unwrap().len(), 60);
}

#[test]
fn zero_length_reads_and_writes_complete_without_qemu() {
    let mut q = session();
    let read = q.read(0x1000, 0).unwrap();
    let b64read = q.b64read(0x1000, 0).unwrap();
    let write = q.write(0x1000, &[]).unwrap();
    let b64write = q.b64write(0x1000, &[]).unwrap();
    assert_eq!(q.transmit(), b"");
    assert_eq!(q.pending(), 0);
    assert!(q.has_reply(read.id()));
    assert_eq!(q.take(read), Some(Ok(Vec::new())));
    assert_eq!(q.take(b64read), Some(Ok(Vec::new())));
    assert_eq!(q.take(write), Some(Ok(())));
    assert_eq!(q.take(b64write), Some(Ok(())));
    // A reply for them would be unsolicited.
    assert!(matches!(
        q.receive(b"OK\n"),
        Err(QtestError::Protocol { .. })
    ));
}

#[test]
fn reads_whose_reply_would_not_fit_the_line_bound_are_refused() {
    let mut q = QtestSession::new(QtestOptions {
        max_line: 25,
        ..QtestOptions::default()
    });
    // "OK 0x" + 20 digits = 25 bytes; base64 of 15 bytes is 20 characters.
    let read = q.read(0, 10).unwrap();
    let b64read = q.b64read(0, 15).unwrap();
    for result in [
        q.read(0, 11),
        q.b64read(0, 16),
        q.read(0, usize::MAX),
        q.b64read(0, usize::MAX),
    ] {
        match result {
            Err(QtestError::InvalidCommand { message, .. }) => {
                assert_eq!(message, "the reply would exceed the line bound of 25 bytes")
            }
            other => panic!("{other:?}"),
        }
    }
    q.receive(b"OK 0x00112233445566778899\nOK AAECAwQFBgcICQoLDA0O\n")
        .unwrap();
    assert_eq!(q.take(read).unwrap().unwrap().len(), 10);
    assert_eq!(q.take(b64read), Some(Ok((0..15).collect())));
}

#[test]
fn a_line_over_the_bound_is_fatal_whole_or_in_pieces() {
    for pieces in [1, 2, 40] {
        let mut q = QtestSession::new(QtestOptions {
            max_line: 16,
            ..QtestOptions::default()
        });
        let ok = q.readq(0).unwrap();
        let long = q.readq(0).unwrap();
        // 16 bytes is allowed, 17 is not.
        let mut bytes = b"OK 0x000000000aa\n".to_vec();
        bytes.extend_from_slice(b"OK 0x0000000000bbbbbbbbbbbbbbbbbbb");
        let chunk = bytes.len().div_ceil(pieces);
        let mut outcome = Ok(());
        for piece in bytes.chunks(chunk) {
            outcome = q.receive(piece);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(
            outcome,
            Err(QtestError::LineTooLong { limit: 16 }),
            "{pieces}"
        );
        assert_eq!(q.take(ok), Some(Ok(0xaa)));
        assert_eq!(q.take(long), Some(Err(closed("readq 0x0"))));
        assert!(q.is_closed());
        assert_eq!(
            q.receive(b"OK\n"),
            Err(QtestError::Closed { command: None })
        );
    }
}

#[test]
fn protocol_violations_close_the_session() {
    for (bytes, message) in [
        (&b"OK\n"[..], "a reply when no command waits for one"),
        (
            b"IRQ raise\n",
            "an IRQ number is a decimal number below 256",
        ),
        (
            b"IRQ raise 256\n",
            "an IRQ number is a decimal number below 256",
        ),
        (
            b"IRQ raise -1\n",
            "an IRQ number is a decimal number below 256",
        ),
        (
            b"IRQ raise 1 2\n",
            "an IRQ number is a decimal number below 256",
        ),
        (
            b"IRQ up 1\n",
            "an IRQ notification is `IRQ raise N` or `IRQ lower N`",
        ),
        (
            b"IRQ\n",
            "an IRQ notification is `IRQ raise N` or `IRQ lower N`",
        ),
    ] {
        let mut q = session();
        // The violation comes after a first complete reply, with a second one behind it.
        let first = q.inb(0x71).unwrap();
        let mut stream = b"OK 0x0001\n".to_vec();
        stream.extend_from_slice(bytes);
        stream.extend_from_slice(b"OK 0x0002\n");
        if bytes == b"OK\n" {
            // Only a reply without a command is a violation here: drop the second reply.
            stream.truncate(stream.len() - 10);
        } else {
            q.inb(0x71).unwrap();
        }
        let error = q.receive(&stream).unwrap_err();
        let QtestError::Protocol { line, message: got } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(got, message);
        assert_eq!(format!("{line}\n").as_bytes(), bytes);
        assert!(q.is_closed());
        assert_eq!(q.take(first), Some(Ok(1)));
        assert!(q.inb(0).is_err());
    }
}

#[test]
fn end_of_stream_fails_pending_commands() {
    let mut q = session();
    let answered = q.inb(0x71).unwrap();
    let pending = q.outb(0x80, 1).unwrap();
    q.receive(b"IRQ raise 1\nOK 0x0001\n").unwrap();
    assert_eq!(q.receive_eof(), Ok(()));
    assert!(q.is_closed());
    assert_eq!(q.pending(), 0);
    assert!(q.has_reply(pending.id()));
    assert_eq!(q.take(pending), Some(Err(closed("outb 0x80 0x1"))));
    // What arrived before stays available.
    assert_eq!(q.take(answered), Some(Ok(1)));
    assert_eq!(
        q.poll_irq(),
        Some(Irq {
            num: 1,
            raised: true
        })
    );
    assert_eq!(q.receive_eof(), Ok(()));
    assert_eq!(q.inb(0x71).unwrap_err(), closed("inb 0x71"));
    assert_eq!(q.transmit(), b"");
    assert_eq!(
        closed("inb 0x71").to_string(),
        "the qtest session is closed (no reply to \"inb 0x71\")"
    );
}

#[test]
fn end_of_stream_in_a_line_is_truncation() {
    let mut q = session();
    let call = q.readq(0).unwrap();
    q.receive(b"OK 0x00").unwrap();
    assert_eq!(q.receive_eof(), Err(QtestError::Truncated { buffered: 7 }));
    assert_eq!(q.take(call), Some(Err(closed("readq 0x0"))));
}

#[test]
fn close_drops_unsent_bytes_and_fails_pending_commands() {
    let mut q = session();
    let call = q.inb(0x71).unwrap();
    q.close();
    assert_eq!(q.transmit(), b"");
    assert_eq!(q.take(call), Some(Err(closed("inb 0x71"))));
    assert_eq!(q.read(0, 0).unwrap_err(), closed("read 0x0 0x0"));
}

#[test]
fn transmit_in_pieces() {
    let mut q = session();
    q.inb(0x71).unwrap();
    assert_eq!(q.transmit(), b"inb 0x71\n");
    q.advance_transmit(4);
    assert_eq!(q.transmit(), b"0x71\n");
    q.outb(0x70, 1).unwrap();
    assert_eq!(q.transmit(), b"0x71\noutb 0x70 0x1\n");
    q.advance_transmit(100);
    assert_eq!(q.transmit(), b"");
}

#[test]
fn carriage_returns_and_non_utf8_replies() {
    let mut q = session();
    let crlf = q.inb(0x71).unwrap();
    let binary = q.inb(0x71).unwrap();
    let after = q.inb(0x71).unwrap();
    q.receive(b"OK 0x0005\r\nOK \xff\xfe\nIRQ raise 3\r\nOK 0x0006\n")
        .unwrap();
    assert_eq!(q.take(crlf), Some(Ok(5)));
    assert!(
        matches!(q.take(binary), Some(Err(QtestError::Reply { reply, .. })) if reply == "OK \\xff\\xfe")
    );
    assert_eq!(q.take(after), Some(Ok(6)));
    assert_eq!(
        q.poll_irq(),
        Some(Irq {
            num: 3,
            raised: true
        })
    );
}

#[test]
fn many_pipelined_commands_in_one_chunk() {
    let mut q = session();
    let calls: Vec<_> = (0..1000u16).map(|i| q.inw(i).unwrap()).collect();
    let replies: String = (0..1000u16)
        .map(|i| {
            format!(
                "OK {:#06x}\n{}",
                i ^ 0xffff,
                if i % 3 == 0 { "IRQ raise 7\n" } else { "" }
            )
        })
        .collect();
    q.receive(replies.as_bytes()).unwrap();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(q.take(call), Some(Ok(i as u16 ^ 0xffff)));
    }
    assert_eq!(q.irqs_queued(), 334);
}
