//! Numbers survive the round trip and objects keep their member order: every finite double,
//! written as QEMU writes it (`%.17g`) or as Rust writes it (shortest form), decodes to the same
//! bits through the decoder (whole or split across reads) and the session, and the encoder's
//! text for it parses back to the same bits; members come out in the order they came in.

use std::ffi::CStr;

use proptest::prelude::*;
use qmp_proto::{Decoder, Encoder, Session, SessionOptions};
use serde_json::Value;

/// `d` as C's `printf("%.17g", d)` writes it, which is how QEMU writes a double in JSON.
/// (Miri cannot call C; there the other spellings are checked.)
#[cfg(not(miri))]
fn printf_17g(d: f64) -> String {
    let mut buf = [0u8; 64];
    // SAFETY: the format takes exactly one double; the buffer is 64 bytes and its length is
    // passed, so snprintf writes at most 63 bytes and a NUL (a %.17g double needs at most 24).
    let n = unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.17g".as_ptr(), d) };
    assert!(n > 0 && (n as usize) < buf.len());
    CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// The texts a double may arrive as.
fn spellings(d: f64) -> Vec<String> {
    let mut texts = vec![format!("{d}"), format!("{d:e}"), format!("{d:?}")];
    #[cfg(not(miri))]
    texts.insert(0, printf_17g(d));
    texts
}

/// Decodes `input` whole (the in-place fast path) and split in the middle of every message
/// (the scanner's path), checking both give the same values.
fn decode(input: &[u8]) -> Vec<Value> {
    let mut whole = Decoder::new();
    whole.feed(input);
    let mut values = Vec::new();
    while let Some(value) = whole.next_value().unwrap() {
        values.push(value);
    }
    let mut split = Decoder::new();
    let mut again = Vec::new();
    for piece in input.chunks(7) {
        split.feed(piece);
        while let Some(value) = split.next_value().unwrap() {
            again.push(value);
        }
    }
    assert_eq!(values, again);
    values
}

fn bits(value: &Value) -> u64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is a number"))
        .to_bits()
}

/// A session ready to take replies to commands sent without ids.
fn ready_session() -> Session {
    let mut session = Session::new(SessionOptions {
        in_band_ids: false,
        ..SessionOptions::default()
    });
    session
        .receive(
            b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \
              \"package\": \"\"}, \"capabilities\": []}}\r\n",
        )
        .unwrap();
    let n = session.transmit().len();
    session.advance_transmit(n);
    session.receive(b"{\"return\": {}}\r\n").unwrap();
    assert!(session.is_ready());
    session
}

fn check_double(d: f64) {
    for text in spellings(d) {
        // In a reply, and as a member of an object and an element of an array in an event.
        let input = format!(
            "{{\"return\": {text}}}\r\n{{\"event\": \"E\", \"data\": {{\"x\": {text}, \
             \"list\": [{text}, {text}]}}, \"timestamp\": {{\"seconds\": 1, \"microseconds\": 2}}}}\r\n"
        );
        let values = decode(input.as_bytes());
        let found = [
            &values[0]["return"],
            &values[1]["data"]["x"],
            &values[1]["data"]["list"][1],
        ];
        for value in found {
            assert_eq!(bits(value), d.to_bits(), "{text} decoded to {value}");
        }

        // Through the session.
        let mut session = ready_session();
        let id = session.execute("query-number", None).unwrap();
        session
            .receive(format!("{{\"return\": {text}}}\r\n").as_bytes())
            .unwrap();
        let reply = session.take_reply(id).unwrap().unwrap();
        assert_eq!(bits(&reply), d.to_bits(), "{text} through the session");

        // What the encoder writes parses back to the same bits, with the decoder and with
        // serde_json alone.
        let mut out = Vec::new();
        Encoder::encode_value(&values[1], &mut out);
        let back = decode(&out);
        assert_eq!(
            bits(&back[0]["data"]["x"]),
            d.to_bits(),
            "{text} re-encoded"
        );
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(bits(&parsed["data"]["list"][0]), d.to_bits());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    // Not under miri (too slow there, and the regression file cannot be read); the edge
    // cases below run there.
    #[cfg_attr(miri, ignore)]
    #[test]
    fn every_finite_double_decodes_to_the_same_bits(pattern in any::<u64>()) {
        let d = f64::from_bits(pattern);
        prop_assume!(d.is_finite());
        check_double(d);
    }

    /// Doubles of ordinary magnitudes, where QEMU's values live (sizes, ratios, times).
    #[cfg_attr(miri, ignore)]
    #[test]
    fn ordinary_doubles_decode_to_the_same_bits(d in -1e12f64..1e12f64) {
        check_double(d);
    }
}

#[test]
fn edge_doubles_decode_to_the_same_bits() {
    for d in [
        0.0,
        -0.0,
        1.0,
        0.1,
        1.0 / 3.0,
        f64::MIN_POSITIVE,
        f64::MIN_POSITIVE / 2.0, // subnormal
        f64::from_bits(1),       // the smallest subnormal
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        9007199254740993.0, // 2^53 + 1 (rounds to 2^53)
        // Two that decoded one ULP off before serde_json's `float_roundtrip` was enabled.
        964487488530.7767,
        f64::from_bits(13137301641691067026),
        1e23,
        123456789012345680.0,
    ] {
        check_double(d);
    }
}

/// Strips JSON whitespace (and the guest agent's `0xFF` sentinels) outside strings.
fn compact(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut in_string, mut escape) = (false, false);
    for &b in text {
        if in_string {
            if escape {
                escape = false;
            } else if b == b'\\' {
                escape = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0xFF) {
            continue;
        }
        out.push(b);
    }
    out
}

#[test]
fn members_keep_their_order() {
    let input = b"{\"return\": {\"z\": 1, \"a\": {\"y\": [{\"q\": 1, \"b\": 2}], \"c\": 3}, \
                  \"m\": 2.5}}\r\n";
    let values = decode(input);
    let keys: Vec<&String> = values[0]["return"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a", "m"]);
    let inner: Vec<&String> = values[0]["return"]["a"]["y"][0]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(inner, ["q", "b"]);
    let mut out = Vec::new();
    Encoder::encode_value(&values[0], &mut out);
    assert_eq!(compact(&out), compact(input));
}

/// Every message QEMU 7.2 sent in the captured transcripts, decoded and encoded again, is the
/// same text with its whitespace removed: members in QEMU's order, numbers as QEMU wrote them.
#[test]
fn captured_messages_re_encode_to_qemus_text() {
    let fixtures = [
        &include_bytes!("../fixtures/qemu-7.2-monitor.recv")[..],
        include_bytes!("../fixtures/qemu-7.2-oob.recv"),
        include_bytes!("../fixtures/qemu-7.2-pretty.recv"),
        include_bytes!("../fixtures/qemu-ga-7.2.recv"),
    ];
    let mut checked = 0;
    for fixture in fixtures {
        let mut decoder = Decoder::new();
        decoder.feed(fixture);
        loop {
            let begin = decoder.position() as usize;
            let value = match decoder.next_value() {
                Ok(Some(value)) => value,
                Ok(None) => break,
                Err(_) => continue,
            };
            let end = decoder.position() as usize;
            let original = &fixture[begin..end];
            if original.windows(2).any(|w| w == b"\\u") {
                // QEMU escapes non-ASCII characters, the encoder writes them as UTF-8.
                continue;
            }
            let mut out = Vec::new();
            Encoder::encode_value(&value, &mut out);
            assert_eq!(
                String::from_utf8_lossy(&compact(&out)),
                String::from_utf8_lossy(&compact(original)),
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
}

/// The wire types turn back into QEMU's text too: every captured message, classified and
/// turned back into a value, encodes to what QEMU sent (members in QEMU's order).
#[test]
fn classified_messages_turn_back_into_qemus_text() {
    let fixture = include_bytes!("../fixtures/qemu-7.2-monitor.recv");
    let mut decoder = Decoder::new();
    decoder.feed(fixture);
    let mut kinds = std::collections::HashSet::new();
    loop {
        let begin = decoder.position() as usize;
        let message = match decoder.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(_) => continue,
        };
        let original = &fixture[begin..decoder.position() as usize];
        if original.windows(2).any(|w| w == b"\\u") {
            continue;
        }
        kinds.insert(std::mem::discriminant(&message));
        let mut out = Vec::new();
        Encoder::encode_value(&message.to_value(), &mut out);
        assert_eq!(
            String::from_utf8_lossy(&compact(&out)),
            String::from_utf8_lossy(&compact(original)),
        );
    }
    // Greeting, return, error and event were all there.
    assert_eq!(kinds.len(), 4);
}
