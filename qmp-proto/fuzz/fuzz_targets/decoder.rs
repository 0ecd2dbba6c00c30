//! The decoder on arbitrary bytes: it never panics, gives the same values and errors (an
//! oversize message's size and what was noted of it included) whatever the chunking, keeps its
//! memory bounded, and what it decodes round-trips through the encoder (numbers to the same
//! bits, members in the same order).
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
                    // The encoder writes what serde_json's own serializer writes, and what it
                    // writes decodes to the same value (numbers to the same bits) and encodes
                    // to the same text again (member order kept).
                    let mut out = Vec::new();
                    Encoder::encode_value(&value, &mut out);
                    assert!(out.ends_with(b"\r\n"));
                    let mut again = Decoder::new();
                    again.feed(&out);
                    let back = again.next_value().expect("encoded text decodes");
                    assert_eq!(back.as_ref(), Some(&value));
                    let mut out2 = Vec::new();
                    Encoder::encode_value(back.as_ref().unwrap(), &mut out2);
                    assert_eq!(out2, out);
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
                    // A message over the bound is reported with its full size, once it ended.
                    if let Error::MessageTooLarge { limit: l, size, .. } = &e {
                        assert_eq!(*l, limit);
                        assert!(*size > limit as u64, "{size} <= {limit}");
                        assert!(*size <= data.len() as u64);
                    }
                    if let Error::Json { excerpt, .. } | Error::Utf8 { excerpt, .. } = &e {
                        assert!(excerpt.len() <= 4 * 40, "{excerpt}");
                    }
                }
            }
        }
    }
});
