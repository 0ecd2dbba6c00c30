//! The QMP decoder throughput rows.

use crate::candidates::{interleave, DecodePass};
use crate::report::{Met, Row};

use super::{progress, summary, Ctx, Unit};

pub(super) fn decoder(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    use qmp_proto::bench_stream::{self, READ_SIZE, SMALL_READ_SIZE};
    let c = ctx.counts;
    let stream = bench_stream::build(c.decode_mb * 1_000_000);
    let mut serde = DecodePass {
        stream: &stream,
        pass: bench_stream::serde_json_presplit,
        name: "serde_json",
    };
    let mut values = DecodePass {
        stream: &stream,
        pass: bench_stream::decoder_values,
        name: "Decoder::next_value",
    };
    let mut messages = DecodePass {
        stream: &stream,
        pass: bench_stream::decoder_messages,
        name: "Decoder::next_message",
    };
    let mut small = DecodePass {
        stream: &stream,
        pass: bench_stream::decoder_values_small_reads,
        name: "Decoder::next_value, small reads",
    };
    let samples = interleave(
        &mut [&mut serde, &mut values, &mut messages, &mut small],
        1,
        c.decode_rounds,
        progress("decoder", c.decode_rounds),
    )?;
    ctx.detail(format!(
        "- decoder stream: {:.1} MB, {} messages (mean {} bytes), fed in {} KiB reads \
         (or {SMALL_READ_SIZE}-byte reads)",
        stream.bytes.len() as f64 / 1e6,
        stream.messages.len(),
        stream.bytes.len() / stream.messages.len(),
        READ_SIZE / 1024
    ));
    ctx.detail_samples(
        "decoder",
        &[
            "serde_json::from_slice::<Value> on pre-split messages",
            "Decoder::next_value",
            "Decoder::next_message",
            "Decoder::next_value, 256-byte reads",
        ],
        &samples,
        Unit::MBps,
    );
    let base = summary(&samples[0], "serde_json")?;
    let mut rows = Vec::new();
    for (i, what) in [
        (1, "Decoder::next_value (streamed, 64 KiB reads)"),
        (2, "Decoder::next_message (streamed, classified)"),
        (3, "Decoder::next_value (256-byte reads: messages split)"),
    ] {
        let s = summary(&samples[i], what)?;
        rows.push(Row {
            measurement: format!(
                "qmp-proto {what} vs serde_json::from_slice on the same messages, pre-split"
            ),
            ours: format!("{:.0} MB/s", s.median),
            baseline: format!("{:.0} MB/s", base.median),
            ratio: format!("{:.2}×", s.median / base.median),
            goal: "—".into(),
            met: Met::NoGoal,
        });
    }
    Ok(rows)
}
