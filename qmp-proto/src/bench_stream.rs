//! The decoder benchmark's input and loops, shared by `benches/decode.rs` and the workspace
//! benchmark harness (`bench/`). Not part of the API: hidden from the docs, may change at any
//! time.

use std::hint::black_box;

use serde_json::{json, Value};

use crate::{Decoder, Encoder, Message};

/// How a socket hands data to the driver: reads of up to 64 KiB.
pub const READ_SIZE: usize = 64 * 1024;

/// A stream of mixed replies and events, and where each message lies in it.
#[derive(Debug)]
pub struct Stream {
    /// The bytes, messages separated by CRLF.
    pub bytes: Vec<u8>,
    /// `(start, end)` of each message in `bytes`, CRLF excluded.
    pub messages: Vec<(usize, usize)>,
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

/// At least `target` bytes of messages captured from QEMU 7.2 (the monitor transcript,
/// greeting left out), plus events and replies of the kinds a busy management client sees, in
/// proportions that make events and small replies most of the messages and large replies most
/// of the bytes.
pub fn build(target: usize) -> Stream {
    let fixture = include_bytes!("../fixtures/qemu-7.2-monitor.recv");
    let mut decoder = Decoder::new();
    decoder.feed(fixture);
    let mut captured = Vec::new();
    while let Ok(Some(value)) = decoder.next_value() {
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

/// The baseline: `serde_json::from_slice::<Value>` on every message, already split. Returns
/// how many messages were parsed (`None` if one failed).
pub fn serde_json_presplit(stream: &Stream) -> Option<usize> {
    let mut n = 0;
    for &(start, end) in &stream.messages {
        let value: Value = serde_json::from_slice(&stream.bytes[start..end]).ok()?;
        black_box(&value);
        n += 1;
    }
    Some(n)
}

/// Small reads split most messages, so nearly every one goes through the structural scanner
/// before it is parsed (with [`READ_SIZE`] reads, nearly every one is parsed in place).
pub const SMALL_READ_SIZE: usize = 256;

/// [`Decoder::next_value`] on the stream fed in [`READ_SIZE`] pieces. Returns how many values
/// came out (`None` on a decode error).
pub fn decoder_values(stream: &Stream) -> Option<usize> {
    decoder_values_in(stream, READ_SIZE)
}

/// [`Decoder::next_value`] on the stream fed in [`SMALL_READ_SIZE`] pieces.
pub fn decoder_values_small_reads(stream: &Stream) -> Option<usize> {
    decoder_values_in(stream, SMALL_READ_SIZE)
}

fn decoder_values_in(stream: &Stream, read_size: usize) -> Option<usize> {
    let mut decoder = Decoder::new();
    let mut n = 0;
    for piece in stream.bytes.chunks(read_size) {
        decoder.feed(piece);
        while let Some(value) = decoder.next_value().ok()? {
            black_box(&value);
            n += 1;
        }
    }
    Some(n)
}

/// [`Decoder::next_message`] (values classified as replies and events) on the stream fed in
/// [`READ_SIZE`] pieces. Returns how many messages came out (`None` on a decode error).
pub fn decoder_messages(stream: &Stream) -> Option<usize> {
    let mut decoder = Decoder::new();
    let mut n = 0;
    for piece in stream.bytes.chunks(READ_SIZE) {
        decoder.feed(piece);
        while let Some(message) = decoder.next_message().ok()? {
            black_box(matches!(message, Message::Event(_)));
            n += 1;
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loop_sees_every_message() {
        // Under miri, a smaller stream (one round of the captured messages and 20 of the rest).
        let target = if cfg!(miri) { 1 } else { 1_000_000 };
        let stream = build(target);
        assert!(stream.bytes.len() >= target);
        let count = stream.messages.len();
        assert!(count > 120, "{count}");
        assert_eq!(serde_json_presplit(&stream), Some(count));
        assert_eq!(decoder_values(&stream), Some(count));
        assert_eq!(decoder_values_small_reads(&stream), Some(count));
        assert_eq!(decoder_messages(&stream), Some(count));
    }
}
