//! Decoder throughput on a realistic 100 MB QMP stream, beside a same-run baseline:
//! `serde_json::from_slice::<Value>` on the same messages, already split.
//!
//! Run with `cargo bench -p qmp-proto` (add `-- --mb 200` for another stream size).

use std::hint::black_box;
use std::time::{Duration, Instant};

use qmp_proto::{Decoder, Encoder, Message};
use serde_json::{json, Value};

/// How a socket hands data to the driver: reads of up to 64 KiB.
const READ_SIZE: usize = 64 * 1024;
const ROUNDS: usize = 5;

/// A stream of mixed replies and events, and where each message lies in it.
struct Stream {
    bytes: Vec<u8>,
    messages: Vec<(usize, usize)>,
}

fn push(stream: &mut Stream, text: &[u8]) {
    let start = stream.bytes.len();
    stream.bytes.extend_from_slice(text);
    stream.messages.push((start, stream.bytes.len()));
    stream.bytes.extend_from_slice(b"\r\n");
}

fn compact(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::encode_value(value, &mut out);
    out.truncate(out.len() - 2);
    out
}

/// Messages captured from QEMU 7.2 (the monitor transcript, greeting left out), plus events
/// and replies of the kinds a busy management client sees, in proportions that make events
/// and small replies most of the messages and large replies most of the bytes.
fn build(target: usize) -> Stream {
    let fixture = include_bytes!("../fixtures/qemu-7.2-monitor.recv");
    let mut decoder = Decoder::new();
    decoder.feed(fixture);
    let mut captured = Vec::new();
    while let Some(value) = decoder.next_value().expect("fixture decodes") {
        if value.get("QMP").is_none() {
            captured.push(compact(&value));
        }
    }
    let block = json!({"device": "", "qdev": "/machine/peripheral/virtio-disk0/virtio-backend",
        "locked": false, "removable": false, "io-status": "ok",
        "inserted": {"iops_rd": 0, "detect_zeroes": "off", "image": {"virtual-size": 10737418240u64,
        "filename": "/var/lib/images/disk0.qcow2", "cluster-size": 65536, "format": "qcow2",
        "actual-size": 1638400, "format-specific": {"type": "qcow2", "data": {"compat": "1.1",
        "compression-type": "zlib", "lazy-refcounts": false, "refcount-bits": 16,
        "corrupt": false, "extended-l2": false}}, "dirty-flag": false}, "iops_wr": 0, "ro": false,
        "node-name": "disk0", "backing_file_depth": 0, "drv": "qcow2", "iops": 0, "bps_wr": 0,
        "write_threshold": 0, "encrypted": false, "bps": 0, "bps_rd": 0,
        "cache": {"no-flush": false, "direct": false, "writeback": true},
        "file": "/var/lib/images/disk0.qcow2"}});
    let mut stream = Stream {
        bytes: Vec::with_capacity(target + 1024 * 1024),
        messages: Vec::new(),
    };
    let mut id = 0u64;
    let mut micro = 0u64;
    while stream.bytes.len() < target {
        for text in &captured {
            push(&mut stream, text);
        }
        for _ in 0..20 {
            id += 1;
            micro = (micro + 7919) % 1_000_000;
            push(&mut stream, &compact(&json!({"return": {}, "id": id})));
            push(
                &mut stream,
                &compact(&json!({"timestamp": {"seconds": 1700000000 + id,
                "microseconds": micro}, "event": "BLOCK_JOB_COMPLETED", "data": {"device": "job0",
                "len": 10737418240u64, "offset": 10737418240u64, "speed": 0, "type": "mirror"}})),
            );
            push(
                &mut stream,
                &compact(&json!({"return": {"status": "running",
                "singlestep": false, "running": true}, "id": id})),
            );
            push(
                &mut stream,
                &compact(&json!({"timestamp": {"seconds": 1700000000 + id,
                "microseconds": micro}, "event": "NIC_RX_FILTER_CHANGED",
                "data": {"name": "net0", "path": "/machine/peripheral/net0/virtio-backend"}})),
            );
            push(
                &mut stream,
                &compact(&json!({"return": [block, block], "id": id})),
            );
            push(
                &mut stream,
                &compact(&json!({"return": "VM status: running\r\n", "id": id})),
            );
        }
    }
    stream
}

fn best_of(rounds: usize, mut run: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut count = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        count = run();
        best = best.min(start.elapsed());
    }
    (best, count)
}

fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

fn main() {
    let mut megabytes = 100;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--mb" {
            megabytes = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--mb takes a number");
        }
    }
    let stream = build(megabytes * 1_000_000);
    let total = stream.bytes.len();
    let count = stream.messages.len();
    println!(
        "stream: {:.1} MB, {} messages (mean {} bytes), read in {} KiB pieces, best of {ROUNDS}",
        total as f64 / 1e6,
        count,
        total / count,
        READ_SIZE / 1024
    );

    let (baseline, n) = best_of(ROUNDS, || {
        let mut n = 0;
        for &(start, end) in &stream.messages {
            let value: Value = serde_json::from_slice(&stream.bytes[start..end]).expect("valid");
            black_box(&value);
            n += 1;
        }
        n
    });
    assert_eq!(n, count);

    let (values, n) = best_of(ROUNDS, || {
        let mut decoder = Decoder::new();
        let mut n = 0;
        for piece in stream.bytes.chunks(READ_SIZE) {
            decoder.feed(piece);
            while let Some(value) = decoder.next_value().expect("valid") {
                black_box(&value);
                n += 1;
            }
        }
        n
    });
    assert_eq!(n, count);

    let (messages, n) = best_of(ROUNDS, || {
        let mut decoder = Decoder::new();
        let mut n = 0;
        for piece in stream.bytes.chunks(READ_SIZE) {
            decoder.feed(piece);
            while let Some(message) = decoder.next_message().expect("valid") {
                black_box(matches!(message, Message::Event(_)));
                n += 1;
            }
        }
        n
    });
    assert_eq!(n, count);

    let base = mb_per_s(total, baseline);
    println!("baseline  serde_json::from_slice::<Value>, pre-split: {base:8.1} MB/s");
    for (name, time) in [
        ("Decoder::next_value, streamed       ", values),
        ("Decoder::next_message, streamed     ", messages),
    ] {
        let speed = mb_per_s(total, time);
        println!(
            "{name}: {speed:8.1} MB/s  ({:.2} of baseline)",
            speed / base
        );
    }
}
