//! The qtest session fed arbitrary QEMU bytes: the same replies, notifications and errors
//! whatever the chunking, no panic, bounds kept; and arbitrary raw command lines: whatever is
//! accepted goes out as one well-formed line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_proto::qtest::{QtestError, QtestOptions, QtestSession};

mod common;

const OPTIONS: QtestOptions = QtestOptions {
    max_line: 48,
    max_irqs: 4,
};

/// What a session made of a stream: every reply (debug-printed), the notifications, the
/// drop count, the outcome of each `receive` that failed and of the end of the stream.
fn run(pieces: &[&[u8]]) -> (Vec<String>, Vec<(u32, bool)>, u64, Option<QtestError>, String) {
    let mut q = QtestSession::new(OPTIONS.clone());
    let step = q.clock_step(None).unwrap();
    let inb = q.inb(0x71).unwrap();
    let inl = q.inl(0xcfc).unwrap();
    let readq = q.readq(0).unwrap();
    let read = q.read(0, 4).unwrap();
    let b64read = q.b64read(0, 5).unwrap();
    let outb = q.outb(0x80, 1).unwrap();
    let endianness = q.endianness().unwrap();
    let raw = q.send_raw("foo").unwrap();
    let mut error = None;
    for piece in pieces {
        let closed_before = q.is_closed();
        match q.receive(piece) {
            Ok(()) => assert!(!closed_before),
            Err(QtestError::Closed { command: None }) => assert!(closed_before),
            Err(e) => {
                assert!(q.is_closed() && !closed_before);
                error = Some(e);
            }
        }
        assert!(q.irqs_queued() <= OPTIONS.max_irqs);
    }
    let eof = format!("{:?}", q.receive_eof());
    assert!(q.is_closed());
    assert_eq!(q.pending(), 0);
    let replies = vec![
        format!("{:?}", q.take(step)),
        format!("{:?}", q.take(inb)),
        format!("{:?}", q.take(inl)),
        format!("{:?}", q.take(readq)),
        format!("{:?}", q.take(read)),
        format!("{:?}", q.take(b64read)),
        format!("{:?}", q.take(outb)),
        format!("{:?}", q.take(endianness)),
        format!("{:?}", q.take(raw)),
    ];
    // Every command has its outcome once the session is closed.
    assert!(replies.iter().all(|r| r.starts_with("Some(")));
    let irqs = q.irqs().map(|i| (i.num, i.raised)).collect();
    (replies, irqs, q.irqs_dropped(), error, eof)
}

fuzz_target!(|data: &[u8]| {
    let whole = run(&[data]);
    let mut rng = common::Rng::new(data, 0x51);
    assert_eq!(whole, run(&common::chunks(data, &mut rng, 16)));
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(whole, run(&bytes));

    // The input as raw command lines.
    let mut q = QtestSession::default();
    for line in data.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        if q.send_raw(&line).is_ok() {
            let sent = q.transmit().to_vec();
            q.advance_transmit(sent.len());
            assert_eq!(sent, format!("{line}\n").as_bytes());
            assert!(line.split(' ').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_graphic())));
        }
    }
});
