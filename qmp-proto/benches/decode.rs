//! Decoder throughput on a realistic 100 MB QMP stream, beside a same-run baseline:
//! `serde_json::from_slice::<Value>` on the same messages, already split.
//!
//! Run with `cargo bench -p qmp-proto` (add `-- --mb 200` for another stream size). The stream
//! and the loops live in `qmp_proto::bench_stream`, which the workspace harness (`bench/`,
//! `cargo run --release -p qemu-machine-bench`) also runs.

use std::time::{Duration, Instant};

use qmp_proto::bench_stream::{self, READ_SIZE};

const ROUNDS: usize = 5;

fn best_of(rounds: usize, mut run: impl FnMut() -> Option<usize>) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut count = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        count = run().expect("the stream decodes");
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

    let (baseline, n) = best_of(ROUNDS, || bench_stream::serde_json_presplit(&stream));
    assert_eq!(n, count);
    let (values, n) = best_of(ROUNDS, || bench_stream::decoder_values(&stream));
    assert_eq!(n, count);
    let (messages, n) = best_of(ROUNDS, || bench_stream::decoder_messages(&stream));
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
