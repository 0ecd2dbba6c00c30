//! The decoder on arbitrary bytes: it never panics, gives the same values and errors
//! whatever the chunking, keeps its memory bounded, and what it classifies round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_proto::{Decoder, Encoder, Error, Message};
use serde_json::Value;

mod common;

fn decode(limit: usize, pieces: &[&[u8]]) -> Vec<Result<Value, Error>> {
    let mut decoder = Decoder::with_max_message_size(limit);
    let mut out = Vec::new();
    let mut fed = 0;
    for piece in pieces {
        decoder.feed(piece);
        fed += piece.len();
        loop {
            match decoder.next_value() {
                Ok(Some(value)) => out.push(Ok(value)),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
        // Only an unfinished message stays buffered, and never more than the bound.
        assert!(
            decoder.buffered() <= limit,
            "{} > {limit}",
            decoder.buffered()
        );
        assert!(decoder.position() <= fed as u64);
    }
    // is_mid_message() must agree with the bytes left over.
    if !decoder.is_mid_message() {
        decoder.feed(b" ");
        assert!(matches!(decoder.next_value(), Ok(None)));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    for limit in [48, qmp_proto::DEFAULT_MAX_MESSAGE_SIZE] {
        let whole = decode(limit, &[data]);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(decode(limit, &bytes), whole, "byte by byte, limit {limit}");
        let mut rng = common::Rng::new(data, limit as u64);
        let random = common::chunks(data, &mut rng, 16);
        assert_eq!(
            decode(limit, &random),
            whole,
            "random chunks, limit {limit}"
        );

        for result in whole {
            match result {
                Ok(value) => {
                    // The encoder writes what serde_json's own serializer writes. (Parsing
                    // it back is not compared: without its `float_roundtrip` feature,
                    // serde_json may parse a decimal float one ULP off.)
                    let mut out = Vec::new();
                    Encoder::encode_value(&value, &mut out);
                    assert!(out.ends_with(b"\r\n"));
                    out.truncate(out.len() - 2);
                    assert_eq!(out, serde_json::to_vec(&value).expect("a Value serializes"));
                    // A classified message turns back into a value that classifies the same.
                    if let Ok(message) = Message::from_value(value) {
                        assert_eq!(Message::from_value(message.to_value()).ok(), Some(message));
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    assert!(!text.is_empty());
                    if let Error::Json { excerpt, .. } | Error::Utf8 { excerpt, .. } = &e {
                        assert!(excerpt.len() <= 4 * 40, "{excerpt}");
                    }
                }
            }
        }
    }
});
