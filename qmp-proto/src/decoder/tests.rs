//! Unit tests of the decoder.

use super::scan::find_string_special;
use super::*;
use crate::error::{Skipped, SkippedId, SkippedKind};
use serde_json::json;

/// Decodes `input` fed in chunks of `chunk` bytes, collecting values and errors.
fn decode_chunked(decoder: &mut Decoder, input: &[u8], chunk: usize) -> Vec<Result<Value>> {
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        decoder.feed(piece);
        loop {
            match decoder.next_value() {
                Ok(Some(v)) => out.push(Ok(v)),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
    }
    out
}

fn decode_all(input: &[u8]) -> Vec<Result<Value>> {
    decode_chunked(&mut Decoder::new(), input, input.len())
}

/// Decoding gives the same results whatever the chunking.
fn assert_chunking_invariant(input: &[u8]) -> Vec<Result<Value>> {
    let whole = decode_all(input);
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(decode_chunked(&mut Decoder::new(), input, chunk), whole);
    }
    for split in 0..=input.len() {
        let mut decoder = Decoder::new();
        let mut out = decode_chunked(&mut decoder, &input[..split], split.max(1));
        out.extend(decode_chunked(&mut decoder, &input[split..], input.len()));
        assert_eq!(out, whole, "split at {split}");
    }
    whole
}

fn values(results: Vec<Result<Value>>) -> Vec<Value> {
    results.into_iter().map(|r| r.unwrap()).collect()
}

#[test]
fn messages_in_any_chunking() {
    let input = b"{\"return\": {}, \"id\": 1}\r\n{\"event\": \"STOP\", \"timestamp\": \
        {\"seconds\": 1, \"microseconds\": 2}}\r\n{\"return\": [1, [2, {\"a\": []}]]}\r\n";
    let got = values(assert_chunking_invariant(input));
    assert_eq!(
        got,
        vec![
            json!({"return": {}, "id": 1}),
            json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}),
            json!({"return": [1, [2, {"a": []}]]}),
        ]
    );
}

#[test]
fn framing_follows_json_structure_not_lines() {
    // pretty=on output, no CRLF at all, strings holding brackets, quotes and escapes.
    let input = b"{\n    \"return\": {\n        \"a\": \"}]\\\"{[\\\\\"\n    }\n}\n\
        {\"b\":\"\\u0041\\n\"}{\"c\":[\"]\"]}[]  {}";
    let got = values(assert_chunking_invariant(input));
    assert_eq!(
        got,
        vec![
            json!({"return": {"a": "}]\"{[\\"}}),
            json!({"b": "A\n"}),
            json!({"c": ["]"]}),
            json!([]),
            json!({}),
        ]
    );
}

#[test]
fn top_level_scalars_and_strings() {
    let input = b"123 \"a\\\"}b\" true\nnull -1.5e3 {}";
    let got = values(assert_chunking_invariant(input));
    assert_eq!(
        got,
        vec![
            json!(123),
            json!("a\"}b"),
            json!(true),
            json!(null),
            json!(-1500.0),
            json!({})
        ]
    );
    // A bare token at the very end is incomplete until a delimiter follows.
    let mut decoder = Decoder::new();
    decoder.feed(b"42");
    assert_eq!(decoder.next_value().unwrap(), None);
    assert!(decoder.is_mid_message());
    decoder.feed(b"\n");
    assert_eq!(decoder.next_value().unwrap(), Some(json!(42)));
}

#[test]
fn sentinels_between_messages_are_skipped() {
    let input = b"\xff\xff{\"return\": 1}\xff\r\n\xff{\"return\": 2}";
    let got = values(assert_chunking_invariant(input));
    assert_eq!(got, vec![json!({"return": 1}), json!({"return": 2})]);
}

#[test]
fn sentinel_inside_a_message_cuts_it() {
    // A stale partial message, then the agent's sentinel and its reply.
    let input = b"{\"return\": {\"a\": \"xy\xff{\"return\": 7}";
    let got = assert_chunking_invariant(input);
    assert_eq!(got.len(), 2);
    let Err(Error::Utf8 { offset, excerpt }) = &got[0] else {
        panic!("{:?}", got[0])
    };
    assert_eq!(*offset, 20);
    assert!(excerpt.ends_with("xy\\xff"), "{excerpt}");
    assert_eq!(got[1], Ok(json!({"return": 7})));
    // Also right after a backslash, and outside strings.
    for input in [&b"{\"a\": \"\\\xff{}"[..], b"{\"a\": \xff{}"] {
        let got = assert_chunking_invariant(input);
        assert!(matches!(got[0], Err(Error::Utf8 { .. })), "{got:?}");
        assert_eq!(got[1], Ok(json!({})));
    }
}

#[test]
fn invalid_json_names_offset_and_excerpt_then_resyncs() {
    let input = b"{\"return\": {}}\r\n{\"return\": tru}\r\n{\"return\": 2}\r\n";
    let got = assert_chunking_invariant(input);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], Ok(json!({"return": {}})));
    let Err(Error::Json {
        offset,
        excerpt,
        message,
    }) = &got[1]
    else {
        panic!("{:?}", got[1])
    };
    // The error is found at the `}` after `tru` (serde_json reports where it stopped).
    assert_eq!(input[*offset as usize], b'}', "offset {offset}");
    assert_eq!(excerpt, "{\\\"return\\\": tru}");
    assert!(message.contains("expected"), "{message}");
    assert!(!message.contains("line"), "{message}");
    assert_eq!(got[2], Ok(json!({"return": 2})));

    // On a later line of a multi-line message.
    let input = b"{\"a\": 1}\n{\n  \"b\": 1,\n  \"c\": ]\n}\n";
    let got = assert_chunking_invariant(input);
    let Err(Error::Json { offset, .. }) = &got[1] else {
        panic!("{:?}", got[1])
    };
    assert_eq!(input[*offset as usize], b']', "offset {offset}");
}

#[test]
fn stray_punctuation_and_garbage() {
    let input = b"} ] , : hello {\"ok\": 1}";
    let got = assert_chunking_invariant(input);
    assert_eq!(got.len(), 6);
    for (i, at) in [0u64, 2, 4, 6, 8].into_iter().enumerate() {
        let Err(Error::Json { offset, .. }) = &got[i] else {
            panic!("{:?}", got[i])
        };
        assert_eq!(*offset, at, "{:?}", got[i]);
    }
    assert_eq!(got[5], Ok(json!({"ok": 1})));
}

#[test]
fn invalid_utf8_names_offset() {
    let input = b"{\"return\": \"ab\xc3\x28\"}\n{\"return\": 1}";
    let got = assert_chunking_invariant(input);
    let Err(Error::Utf8 { offset, excerpt }) = &got[0] else {
        panic!("{:?}", got[0])
    };
    assert_eq!(*offset, 14);
    assert!(excerpt.contains("\\xc3("), "{excerpt}");
    assert_eq!(got[1], Ok(json!({"return": 1})));
    // Valid multi-byte UTF-8 is fine.
    let got = values(assert_chunking_invariant("{\"é\": \"ü€𝄞\"}".as_bytes()));
    assert_eq!(got, vec![json!({"é": "ü€𝄞"})]);
}

#[test]
fn offsets_count_from_the_start_of_the_stream() {
    let mut decoder = Decoder::new();
    let filler = b"{\"return\": {}}\r\n".repeat(1000);
    decoder.feed(&filler);
    while decoder.next_value().unwrap().is_some() {}
    decoder.feed(b"{\"x\": @}");
    let err = decoder.next_value().unwrap_err();
    let Error::Json { offset, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(offset, filler.len() as u64 + 6);
    assert_eq!(decoder.position(), filler.len() as u64 + 8);
}

fn too_large(limit: usize, size: u64, kind: SkippedKind, id: SkippedId) -> Error {
    Error::MessageTooLarge {
        limit,
        size,
        skipped: Skipped { kind, id },
    }
}

/// Like `assert_chunking_invariant`, with a size bound.
fn assert_chunking_invariant_with(limit: usize, input: &[u8]) -> Vec<Result<Value>> {
    let whole = decode_chunked(
        &mut Decoder::with_max_message_size(limit),
        input,
        input.len(),
    );
    for chunk in [1, 2, 3, 7, 64] {
        let mut decoder = Decoder::with_max_message_size(limit);
        assert_eq!(
            decode_chunked(&mut decoder, input, chunk),
            whole,
            "chunk {chunk}"
        );
    }
    for split in 0..=input.len() {
        let mut decoder = Decoder::with_max_message_size(limit);
        let mut out = decode_chunked(&mut decoder, &input[..split], split.max(1));
        out.extend(decode_chunked(&mut decoder, &input[split..], input.len()));
        assert_eq!(out, whole, "split at {split}");
    }
    whole
}

#[test]
fn size_bound() {
    let message = br#"{"return": "0123456789"}"#; // 24 bytes
    assert_eq!(message.len(), 24);
    let mut input = Vec::new();
    input.extend_from_slice(message);
    input.extend_from_slice(b"\r\n{\"return\": \"0123456789a\"}\r\n");
    input.extend_from_slice(message);

    let got = assert_chunking_invariant_with(24, &input);
    assert_eq!(
        got,
        vec![
            Ok(json!({"return": "0123456789"})),
            Err(too_large(24, 25, SkippedKind::Return, SkippedId::Absent)),
            Ok(json!({"return": "0123456789"})),
        ]
    );

    // A huge message is skipped without being buffered, and reported once, at its end,
    // with its full size.
    let mut decoder = Decoder::with_max_message_size(1000);
    let head = b"{\"return\": [";
    let piece = b"\"}]{[\", 1, {\"a\": [2]}, ";
    let tail = b"3], \"id\": 77}";
    decoder.feed(head);
    let rounds = if cfg!(miri) { 500 } else { 10_000 };
    for _ in 0..rounds {
        decoder.feed(piece);
        assert_eq!(decoder.next_value(), Ok(None));
        assert!(decoder.buffered() < 2000, "{}", decoder.buffered());
    }
    assert!(decoder.is_mid_message());
    decoder.feed(tail);
    decoder.feed(b"\n{\"return\": 4}");
    let size = (head.len() + rounds * piece.len() + tail.len()) as u64;
    assert_eq!(
        decoder.next_value(),
        Err(too_large(
            1000,
            size,
            SkippedKind::Return,
            SkippedId::Value(json!(77))
        ))
    );
    assert_eq!(decoder.next_value().unwrap(), Some(json!({"return": 4})));
    assert_eq!(decoder.next_value().unwrap(), None);
    assert!(!decoder.is_mid_message());

    // Bare tokens and top-level strings are bounded too.
    for (input, size) in [(&b"123456789 1 "[..], 9), (b"\"123456789\" 1 ", 11)] {
        let got = assert_chunking_invariant_with(4, input);
        assert_eq!(
            got,
            vec![
                Err(too_large(4, size, SkippedKind::Unknown, SkippedId::Absent)),
                Ok(json!(1))
            ],
            "{input:?}"
        );
    }
    let mut decoder = Decoder::with_max_message_size(4);
    assert_eq!(
        decode_chunked(&mut decoder, b"1234 \"12\" [12]", 1),
        vec![Ok(json!(1234)), Ok(json!("12")), Ok(json!([12]))]
    );
}

#[test]
fn a_skipped_message_is_classified_by_its_top_level_members() {
    let big = "x".repeat(100);
    let cases: Vec<(String, SkippedKind, SkippedId)> = vec![
        (
            format!(r#"{{"return": "{big}", "id": 12}}"#),
            SkippedKind::Return,
            SkippedId::Value(json!(12)),
        ),
        // Any member order; any id that is a short scalar; whitespace anywhere.
        (
            format!("{{ \"id\" :\n\"abc\\\"d\" , \"return\" : [\"{big}\", {{\"id\": 3}}] }}"),
            SkippedKind::Return,
            SkippedId::Value(json!("abc\"d")),
        ),
        (
            format!(
                r#"{{"id": -1.5e3, "error": {{"class": "CommandNotFound", "desc": "{big}"}}}}"#
            ),
            SkippedKind::Error,
            SkippedId::Value(json!(-1500.0)),
        ),
        (
            format!(r#"{{"id":null,"error":{{"desc":"{big}"}}}}"#),
            SkippedKind::Error,
            SkippedId::Value(Value::Null),
        ),
        (
            format!(r#"{{"event": "BIG_ONE", "data": {{"s": "{big}"}}, "timestamp": {{}}}}"#),
            SkippedKind::Event(Some("BIG_ONE".into())),
            SkippedId::Absent,
        ),
        // Names spelled with escapes are still names.
        (
            format!(r#"{{"\u0065vent": "A\u0042", "data": "{big}"}}"#),
            SkippedKind::Event(Some("AB".into())),
            SkippedId::Absent,
        ),
        (
            format!(r#"{{"event": 7, "data": "{big}"}}"#),
            SkippedKind::Event(None),
            SkippedId::Absent,
        ),
        (
            format!(r#"{{"QMP": {{"version": "{big}"}}}}"#),
            SkippedKind::Greeting,
            SkippedId::Absent,
        ),
        // As Message::from_value: return before event before error.
        (
            format!(r#"{{"error": {{}}, "event": "E", "return": "{big}"}}"#),
            SkippedKind::Return,
            SkippedId::Absent,
        ),
        // Only the top level counts.
        (
            format!(r#"{{"data": {{"return": 1, "id": 2, "event": "X"}}, "x": "{big}"}}"#),
            SkippedKind::Unknown,
            SkippedId::Absent,
        ),
        (
            format!(r#"["return", "{big}"]"#),
            SkippedKind::Unknown,
            SkippedId::Absent,
        ),
        // An id that is not kept: a container, too long.
        (
            format!(r#"{{"return": 1, "id": {{"a": "{big}"}}}}"#),
            SkippedKind::Return,
            SkippedId::Unreadable,
        ),
        (
            format!(r#"{{"return": 1, "id": "{}"}}"#, "y".repeat(300)),
            SkippedKind::Return,
            SkippedId::Unreadable,
        ),
        (
            format!(r#"{{"return": "{big}", "id": 1, "id": 2}}"#),
            SkippedKind::Return,
            SkippedId::Value(json!(2)),
        ),
    ];
    for (message, kind, id) in cases {
        let mut input = message.clone().into_bytes();
        input.extend_from_slice(b"\r\n{\"return\": 1}\r\n");
        let got = assert_chunking_invariant_with(64, &input);
        assert_eq!(
            got,
            vec![
                Err(too_large(64, message.len() as u64, kind, id)),
                Ok(json!({"return": 1}))
            ],
            "{message}"
        );
    }
}

#[test]
fn a_sentinel_cuts_a_skipped_message() {
    let mut input = b"{\"return\": \"".to_vec();
    input.extend(b"0123456789".repeat(5));
    input.extend_from_slice(b"\xff{\"return\": 7}");
    let sentinel = input.iter().position(|&b| b == 0xFF).unwrap() as u64;
    let got = assert_chunking_invariant_with(16, &input);
    assert_eq!(
        got,
        vec![
            Err(Error::Utf8 {
                offset: sentinel,
                excerpt: "01234567890123456789\\xff".into()
            }),
            Ok(json!({"return": 7}))
        ]
    );
    // Also after a backslash, and outside strings, and with only a few bytes before it.
    for input in [
        &b"{\"a\": \"0123456789\\\xff{}"[..],
        b"{\"a\": [1, 2, 3, 4, 5, 6] \xff{}",
        b"\"0123456789\xff{}",
    ] {
        let got = assert_chunking_invariant_with(8, input);
        assert!(matches!(got[0], Err(Error::Utf8 { .. })), "{got:?}");
        assert_eq!(got[1], Ok(json!({})));
    }
    // A sentinel ends a bare token, as it does under the bound.
    let got = assert_chunking_invariant_with(4, b"123456\xff{}");
    assert_eq!(
        got,
        vec![
            Err(too_large(4, 6, SkippedKind::Unknown, SkippedId::Absent)),
            Ok(json!({}))
        ]
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let mut input = vec![b'['; 100_000];
    input.extend(vec![b']'; 100_000]);
    input.extend_from_slice(b"{\"ok\": 1}");
    let got = decode_all(&input);
    assert!(
        matches!(&got[0], Err(Error::Json { message, .. }) if message.contains("recursion")),
        "{:?}",
        got[0]
    );
    assert_eq!(got[1], Ok(json!({"ok": 1})));
}

#[test]
fn mid_message_and_buffered() {
    let mut decoder = Decoder::new();
    assert!(!decoder.is_mid_message());
    decoder.feed(b" \r\n\xff");
    assert!(!decoder.is_mid_message());
    assert_eq!(decoder.next_value().unwrap(), None);
    assert_eq!(decoder.buffered(), 0);
    decoder.feed(b"{\"return\"");
    assert!(decoder.is_mid_message());
    assert_eq!(decoder.next_value().unwrap(), None);
    assert!(decoder.is_mid_message());
    assert_eq!(decoder.buffered(), 9);
    decoder.feed(b": 1}\r\n");
    assert_eq!(decoder.next_value().unwrap(), Some(json!({"return": 1})));
    assert!(!decoder.is_mid_message());
    assert_eq!(decoder.buffered(), 2);
}

#[test]
fn discard_until_sentinel() {
    let mut decoder = Decoder::new();
    decoder.feed(b"{\"return\": \"stale\"}\r\n{\"retu");
    decoder.discard_until_sentinel();
    decoder.feed(b"rn\": 5, \"id\": 3}\r\n{\"return\": 6}");
    assert_eq!(decoder.next_value().unwrap(), None);
    assert!(!decoder.is_mid_message());
    decoder.feed(b"\xff{\"return\": 1234, \"id\": 9}\r\n");
    assert_eq!(
        decoder.next_value().unwrap(),
        Some(json!({"return": 1234, "id": 9}))
    );
}

#[test]
fn next_message_classifies_without_poisoning_the_stream() {
    let mut decoder = Decoder::new();
    decoder.feed(b"{\"hello\": 1}\r\n[1]\r\n{\"return\": {}, \"id\": 1}\r\n");
    assert!(matches!(
        decoder.next_message(),
        Err(Error::Protocol(m)) if m.contains("unknown shape")
    ));
    assert!(matches!(decoder.next_message(), Err(Error::Protocol(_))));
    assert_eq!(
        decoder.next_message().unwrap(),
        Some(Message::Return {
            id: Some(json!(1)),
            value: json!({})
        })
    );
    assert_eq!(decoder.next_message().unwrap(), None);
}

#[test]
fn string_scanner_finds_specials_at_every_position() {
    for len in 0..40 {
        for at in 0..len {
            for special in [b'"', b'\\', 0xFF] {
                let mut bytes = vec![b'a'; len];
                // Bytes close to the specials must not be mistaken for them.
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = [b'!', b'#', b'[', b']', 0xFE, 0x80, b'a'][i % 7];
                }
                bytes[at] = special;
                assert_eq!(find_string_special(&bytes), at, "len {len} at {at}");
            }
        }
        let mut bytes = vec![0x7f; len];
        bytes.iter_mut().step_by(3).for_each(|b| *b = 0xFE);
        assert_eq!(find_string_special(&bytes), len);
    }
}
