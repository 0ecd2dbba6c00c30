//! Messages over the size bound: skipped, and attributed to their command.

use super::*;

/// A reply of about `size` bytes: `{"return": "xxx...", "id": ID}` (no id when `id` is
/// null).
fn big_reply(size: usize, id: Value) -> Vec<u8> {
    with_optional_id(json!({"return": "x".repeat(size)}), id)
}

/// An error reply quoting a long command name, as QEMU's CommandNotFound does.
fn big_error(size: usize, id: Value) -> Vec<u8> {
    let desc = format!("The command {} has not been found", "n".repeat(size));
    with_optional_id(
        json!({"error": {"class": "CommandNotFound", "desc": desc}}),
        id,
    )
}

fn too_large_reply(message: &[u8], limit: usize) -> Option<std::result::Result<Value, ReplyError>> {
    // The message's size, CRLF excluded.
    Some(Err(ReplyError::TooLarge {
        size: message.len() as u64 - 2,
        limit,
    }))
}

fn bounded(limit: usize, in_band_ids: bool) -> SessionOptions {
    SessionOptions {
        oob: true,
        max_message_size: limit,
        in_band_ids,
        ..SessionOptions::default()
    }
}

#[test]
fn an_oversize_reply_fails_its_command_and_the_session_goes_on() {
    for in_band_ids in [true, false] {
        let mut session = ready_either(bounded(1024, in_band_ids), &["oob"]);
        let first = session.execute("query-qmp-schema", None).unwrap();
        let second = session.execute("bad-name", None).unwrap();
        let third = session.execute("query-status", None).unwrap();
        let sent = take_sent(&mut session);
        let ids: Vec<Value> = sent
            .iter()
            .map(|r| r.id.clone().unwrap_or(Value::Null))
            .collect();
        let first_reply = big_reply(5000, ids[0].clone());
        let second_reply = big_error(3000, ids[1].clone());
        let mut input = first_reply.clone();
        input.extend(&second_reply);
        input.extend(with_optional_id(
            json!({"return": {"status": "running"}}),
            ids[2].clone(),
        ));
        session.receive(&input).unwrap();
        assert!(session.is_ready());
        assert_eq!(
            session.take_reply(first),
            too_large_reply(&first_reply, 1024)
        );
        assert_eq!(
            session.take_reply(second),
            too_large_reply(&second_reply, 1024)
        );
        assert_eq!(
            session.take_reply(third),
            Some(Ok(json!({"status": "running"})))
        );
        assert_eq!(session.in_flight(), 0);
        // The next command works.
        let next = session.execute("query-name", None).unwrap();
        let id = take_sent(&mut session)[0].id.clone().unwrap_or(Value::Null);
        session
            .receive(&with_optional_id(json!({"return": {}}), id))
            .unwrap();
        assert_eq!(session.take_reply(next), Some(Ok(json!({}))));
        assert_eq!(session.events_too_large(), 0);
    }
}

#[test]
fn an_oversize_oob_reply_goes_to_its_command_by_id() {
    for in_band_ids in [true, false] {
        let mut session = ready_either(bounded(512, in_band_ids), &["oob"]);
        let in_band = session.execute("query-status", None).unwrap();
        let oob = session.execute_oob("x-big-oob", None).unwrap();
        let sent = take_sent(&mut session);
        let oob_reply = big_reply(1000, sent[1].id.clone().unwrap());
        // The out-of-band reply overtakes the in-band one.
        let mut input = oob_reply.clone();
        input.extend(with_optional_id(
            json!({"return": "in band"}),
            sent[0].id.clone().unwrap_or(Value::Null),
        ));
        session.receive(&input).unwrap();
        assert_eq!(session.take_reply(oob), too_large_reply(&oob_reply, 512));
        assert_eq!(session.take_reply(in_band), Some(Ok(json!("in band"))));
    }
}

#[test]
fn an_oversize_event_is_counted_and_nothing_fails() {
    for in_band_ids in [true, false] {
        let mut session = ready_either(bounded(256, in_band_ids), &[]);
        let id = session.execute("query-status", None).unwrap();
        let sent = take_sent(&mut session);
        let mut input = line(json!({"event": "HUGE", "data": {"blob": "b".repeat(1000)},
            "timestamp": {"seconds": 1, "microseconds": 2}}));
        input.extend(event("SMALL", None));
        input.extend(with_optional_id(
            json!({"return": "ok"}),
            sent[0].id.clone().unwrap_or(Value::Null),
        ));
        session.receive(&input).unwrap();
        assert!(session.is_ready());
        assert_eq!(session.events_too_large(), 1);
        assert_eq!(session.take_reply(id), Some(Ok(json!("ok"))));
        assert_eq!(session.poll_event().unwrap().name, "SMALL");
        assert!(session.poll_event().is_none());
    }
}

#[test]
fn oversize_replies_nobody_waits_for() {
    // With ids: an unknown id, or one that could not be read, is dropped like a small
    // reply with an unknown id; the command in flight keeps waiting.
    let mut session = ready_either(bounded(256, true), &[]);
    let id = session.execute("query-status", None).unwrap();
    take_sent(&mut session);
    let mut input = big_reply(1000, json!(999));
    input.extend(big_reply(1000, json!({"not": "ours"})));
    input.extend(big_reply(1000, json!("i".repeat(400))));
    session.receive(&input).unwrap();
    assert!(session.is_ready());
    assert!(session.is_pending(id));
    session
        .receive(&line(json!({"return": 1, "id": id.0})))
        .unwrap();
    assert_eq!(session.take_reply(id), Some(Ok(json!(1))));

    // Without ids, and nothing in flight: a return is dropped, an error is fatal (QEMU
    // could not read a request), as for small ones.
    let mut session = ready_without_ids(&[]);
    session.receive(&big_reply(11 << 20, Value::Null)).unwrap();
    assert!(session.is_ready());
    let err = session
        .receive(&big_error(11 << 20, Value::Null))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("without id") && m.contains("bytes")),
        "{err}"
    );
    assert_eq!(session.state(), SessionState::Closed);
}

#[test]
fn oversize_messages_that_are_fatal() {
    // A greeting over the bound: the session cannot start.
    let mut session = Session::new(bounded(256, true));
    let mut big_greeting = greeting(&[]);
    big_greeting.splice(
        8..8,
        b"\"pad\": \""
            .iter()
            .chain(&[b'p'; 300])
            .chain(b"\", ")
            .copied(),
    );
    let err = session.receive(&big_greeting).unwrap_err();
    assert!(
        matches!(&err, Error::MessageTooLarge { skipped, .. } if skipped.kind == SkippedKind::Greeting),
        "{err}"
    );
    assert_eq!(session.state(), SessionState::Closed);

    // The reply to qmp_capabilities over the bound.
    for in_band_ids in [true, false] {
        let mut session = Session::new(bounded(256, in_band_ids));
        session.receive(&greeting(&[])).unwrap();
        let id = take_sent(&mut session)[0].id.clone().unwrap_or(Value::Null);
        let err = session.receive(&big_reply(300, id)).unwrap_err();
        assert!(
            matches!(err, Error::MessageTooLarge { limit: 256, .. }),
            "{err}"
        );
        assert_eq!(session.state(), SessionState::Closed);
    }

    // A message of unknown kind.
    let mut session = ready_either(bounded(256, true), &[]);
    let err = session
        .receive(&line(json!({"what": "w".repeat(300)})))
        .unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
    assert_eq!(session.state(), SessionState::Closed);
}

/// The conversation of the first oversize test, fed in every two-piece split and byte by
/// byte, in both id modes.
#[test]
fn oversize_replies_in_any_split() {
    for in_band_ids in [true, false] {
        let id = |n: u64| if in_band_ids { json!(n) } else { Value::Null };
        let big = big_reply(300, id(2));
        let mut server = big.clone();
        server.extend(event("STOP", None));
        server.extend(line(json!({"event": "BIG", "data": "d".repeat(300),
            "timestamp": {"seconds": 1, "microseconds": 2}})));
        let big_err = big_error(200, id(3));
        server.extend(&big_err);
        server.extend(with_optional_id(json!({"return": "small"}), id(4)));
        let step = if cfg!(miri) { 37 } else { 1 };
        for split in (0..=server.len()).step_by(step).chain([server.len() + 1]) {
            let mut session = ready_either(bounded(128, in_band_ids), &[]);
            let ids = [
                session.execute("query-qmp-schema", None).unwrap(),
                session.execute("bad", None).unwrap(),
                session.execute("query-name", None).unwrap(),
            ];
            if split <= server.len() {
                session.receive(&server[..split]).unwrap();
                session.receive(&server[split..]).unwrap();
            } else {
                server.chunks(1).for_each(|b| session.receive(b).unwrap());
            }
            assert!(session.is_ready(), "split {split}");
            assert_eq!(session.take_reply(ids[0]), too_large_reply(&big, 128));
            assert_eq!(session.take_reply(ids[1]), too_large_reply(&big_err, 128));
            assert_eq!(session.take_reply(ids[2]), Some(Ok(json!("small"))));
            assert_eq!(session.events_too_large(), 1);
            assert_eq!(session.poll_event().unwrap().name, "STOP");
            assert!(session.poll_event().is_none());
            session.receive_eof().unwrap();
        }
    }
}

#[test]
fn command_names_follow_the_qapi_rules() {
    let mut session = ready_either(bounded(DEFAULT_MAX_MESSAGE_SIZE, true), &["oob"]);
    for good in [
        "query-status",
        "qmp_capabilities",
        "x-query-virtio",
        "device_add",
        "Q",
        "__com.redhat_drive-mirror",
        "__org.example-1_a_b-c",
        "__x_y",
    ] {
        session.execute(good, None).unwrap();
    }
    take_sent(&mut session);
    let huge = "a".repeat(10 << 20);
    let cases: [(&str, &str); 12] = [
        ("", "empty"),
        ("1query", "start with an ASCII letter"),
        ("-query", "start with an ASCII letter"),
        ("_query", "start with an ASCII letter"),
        ("query status", "not ' '"),
        ("query\"status", "not '\"'"),
        ("quéry", "not '\\xc3'"),
        ("query\n", "not '\\n'"),
        ("__com.redhat", "missing"),
        ("__com.redhat_", "empty"),
        ("___drive-mirror", "empty domain"),
        ("__com/redhat_drive-mirror", "not '/'"),
    ];
    let next = session.execute("query-name", None).unwrap();
    take_sent(&mut session);
    for (bad, reason) in cases {
        let err = session.execute(bad, None).unwrap_err();
        let Error::InvalidCommandName { len, .. } = &err else {
            panic!("{bad:?}: {err:?}");
        };
        assert_eq!(*len, bad.len());
        assert!(err.to_string().contains(reason), "{bad:?}: {err}");
        assert!(session.execute_oob(bad, None).is_err());
    }
    // A huge name is excerpted in the error, and nothing is sent, in band or out.
    let err = session.execute(&huge, None).unwrap_err();
    let Error::InvalidCommandName { name, len, reason } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*len, 10 << 20);
    assert_eq!(name, &format!("{}...", "a".repeat(40)));
    assert!(reason.contains("1024"), "{reason}");
    assert!(err.to_string().len() < 200, "{err}");
    let err = session.execute_oob(&huge, None).unwrap_err();
    assert!(matches!(err, Error::InvalidCommandName { .. }), "{err}");
    assert!(session.transmit().is_empty());
    assert!(session.is_ready());
    // No id was used up by the refusals.
    assert_eq!(session.execute("query-name", None).unwrap().0, next.0 + 1);
    let long_ok = "a".repeat(MAX_COMMAND_NAME_LEN);
    session.execute(&long_ok, None).unwrap();
}
