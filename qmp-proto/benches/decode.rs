//! Decoder throughput on a realistic 100 MB QMP stream, beside a same-run baseline:
//! `serde_json::from_slice::<Value>` on the same messages, already split.
//!
//! Run with `cargo bench -p qmp-proto` (add `-- --mb 200` for another stream size). The stream
//! and the loops live in `qmp_proto::bench_stream`, which the workspace harness (`bench/`,
//! `cargo run --release -p qemu-machine-bench`) also runs.

use std::time::{Duration, Instant};

use qmp_proto::bench_stream::{self, READ_SIZE};

const ROUNDS: usize = 5;

/// Times one pass, checking it saw `expected` messages.
fn timed(
    expected: usize,
    pass: fn(&bench_stream::Stream) -> Option<usize>,
    stream: &bench_stream::Stream,
) -> Duration {
    let start = Instant::now();
    let count = pass(stream).expect("the stream decodes");
    let elapsed = start.elapsed();
    assert_eq!(count, expected);
    elapsed
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
    let stream = bench_stream::build(megabytes * 1_000_000);
    let total = stream.bytes.len();
    let count = stream.messages.len();
    println!(
        "stream: {:.1} MB, {} messages (mean {} bytes), read in {} KiB pieces, best of {ROUNDS}",
        total as f64 / 1e6,
        count,
        total / count,
        READ_SIZE / 1024
    );

    // Rounds interleave the passes, so that a change of load on the machine hits them alike;
    // the best time of each counts.
    let (mut baseline, mut values, mut messages, mut small) =
        (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        baseline = baseline.min(timed(count, bench_stream::serde_json_presplit, &stream));
        values = values.min(timed(count, bench_stream::decoder_values, &stream));
        messages = messages.min(timed(count, bench_stream::decoder_messages, &stream));
        small = small.min(timed(
            count,
            bench_stream::decoder_values_small_reads,
            &stream,
        ));
    }

    let base = mb_per_s(total, baseline);
    println!("baseline  serde_json::from_slice::<Value>, pre-split: {base:8.1} MB/s");
    for (name, time) in [
        ("Decoder::next_value, streamed       ", values),
        ("Decoder::next_message, streamed     ", messages),
        ("Decoder::next_value, 256-byte reads ", small),
    ] {
        let speed = mb_per_s(total, time);
        println!(
            "{name}: {speed:8.1} MB/s  ({:.2} of baseline)",
            speed / base
        );
    }
}
