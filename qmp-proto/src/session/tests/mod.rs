//! Unit tests of the session, on scripted bytes.

use super::*;
use crate::commands::{QueryStatus, RunState};
use crate::error::{Skipped, SkippedKind, MAX_COMMAND_NAME_LEN};
use crate::wire::{ErrorClass, QmpError};
use serde_json::json;

fn greeting(capabilities: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::encode_value(
        &json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
            "package": "Debian 1:7.2+dfsg-7+deb12u18"}, "capabilities": capabilities}}),
        &mut out,
    );
    out
}

fn line(value: Value) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::encode_value(&value, &mut out);
    out
}

fn event(name: &str, data: Option<Value>) -> Vec<u8> {
    let mut value = json!({"event": name, "timestamp": {"seconds": 1, "microseconds": 2}});
    if let Some(data) = data {
        value["data"] = data;
    }
    line(value)
}

/// Takes everything the session wants to send, as requests.
fn take_sent(session: &mut Session) -> Vec<Request> {
    let mut decoder = Decoder::new();
    decoder.feed(session.transmit());
    let n = session.transmit().len();
    session.advance_transmit(n);
    let mut requests = Vec::new();
    while let Some(value) = decoder.next_value().unwrap() {
        requests.push(Request::from_value(value).unwrap());
    }
    assert!(!decoder.is_mid_message());
    requests
}

fn ready(options: SessionOptions, capabilities: &[&str]) -> Session {
    let mut session = Session::new(options);
    session.receive(&greeting(capabilities)).unwrap();
    let sent = take_sent(&mut session);
    assert_eq!(sent.len(), 1);
    let id = sent[0].id.clone().unwrap();
    session
        .receive(&line(json!({"return": {}, "id": id})))
        .unwrap();
    assert!(session.is_ready());
    session
}

/// The error QEMU reported, from a reply that must be one.
fn qmp_error(reply: Option<std::result::Result<Value, ReplyError>>) -> QmpError {
    match reply {
        Some(Err(ReplyError::Qmp(error))) => error,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn id_of(request: &Request) -> u64 {
    request.id.as_ref().and_then(Value::as_u64).unwrap()
}

// ---- in_band_ids: false ----------------------------------------------------------------

fn no_ids() -> SessionOptions {
    SessionOptions {
        oob: true,
        in_band_ids: false,
        ..SessionOptions::default()
    }
}

/// A ready session without in-band ids, `oob` negotiated when `capabilities` offer it.
fn ready_without_ids(capabilities: &[&str]) -> Session {
    let mut session = Session::new(no_ids());
    session.receive(&greeting(capabilities)).unwrap();
    let oob = capabilities.contains(&"oob");
    let expected: &[u8] = if oob {
        b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}\r\n"
    } else {
        b"{\"execute\":\"qmp_capabilities\"}\r\n"
    };
    assert_eq!(session.transmit(), expected);
    session.advance_transmit(expected.len());
    session.receive(&line(json!({"return": {}}))).unwrap();
    assert!(session.is_ready());
    assert_eq!(session.oob_enabled(), oob);
    session
}

fn error_reply(class: &str, desc: &str) -> Vec<u8> {
    line(json!({"error": {"class": class, "desc": desc}}))
}

/// `value` as a line, with `id` as its id unless it is null.
fn with_optional_id(mut value: Value, id: Value) -> Vec<u8> {
    if !id.is_null() {
        value["id"] = id;
    }
    line(value)
}

/// A ready session with ids on the wire or not, as `options` say.
fn ready_either(options: SessionOptions, capabilities: &[&str]) -> Session {
    let mut session = Session::new(options);
    session.receive(&greeting(capabilities)).unwrap();
    let id = take_sent(&mut session)[0].id.clone().unwrap_or(Value::Null);
    session
        .receive(&with_optional_id(json!({"return": {}}), id))
        .unwrap();
    assert!(session.is_ready());
    session
}

#[test]
fn negotiation_without_oob() {
    let mut session = Session::new(SessionOptions::default());
    assert_eq!(session.state(), SessionState::AwaitingGreeting);
    assert_eq!(session.execute("stop", None), Err(Error::NotReady));
    assert!(session.transmit().is_empty());
    session.receive(&greeting(&["oob"])).unwrap();
    assert_eq!(session.state(), SessionState::Negotiating);
    assert_eq!(session.greeting().unwrap().version.minor, 2);
    assert_eq!(session.execute("stop", None), Err(Error::NotReady));
    let sent = take_sent(&mut session);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].command, "qmp_capabilities");
    assert_eq!(sent[0].arguments, None);
    assert!(!sent[0].oob);
    session
        .receive(&line(json!({"return": {}, "id": sent[0].id})))
        .unwrap();
    assert_eq!(session.state(), SessionState::Ready);
    assert!(!session.oob_enabled());
    assert_eq!(
        session.execute_oob("migrate-pause", None),
        Err(Error::OobNotEnabled)
    );
    assert_eq!(session.in_flight(), 0);
}

#[test]
fn negotiation_with_oob() {
    let options = SessionOptions {
        oob: true,
        ..SessionOptions::default()
    };
    let mut session = Session::new(options.clone());
    session.receive(&greeting(&["oob"])).unwrap();
    let sent = take_sent(&mut session);
    assert_eq!(sent[0].arguments, Some(json!({"enable": ["oob"]})));
    session
        .receive(&line(json!({"return": {}, "id": sent[0].id})))
        .unwrap();
    assert!(session.oob_enabled());

    // Out-of-band commands do not wait for an in-band slot, and may be answered first.
    let in_band: Vec<RequestId> = (0..8)
        .map(|_| session.execute("query-status", None).unwrap())
        .collect();
    let blocked = session.execute("query-name", None).unwrap();
    let oob = session
        .execute_oob("migrate-pause", Some(json!({})))
        .unwrap();
    let sent = take_sent(&mut session);
    assert_eq!(sent.len(), 9);
    assert!(sent[8].oob);
    assert_eq!(id_of(&sent[8]), oob.0);
    assert_eq!(session.in_flight(), 8);
    assert_eq!(session.queued(), 1);
    assert_eq!(session.pending(), 10);
    session
        .receive(&line(json!({"error": {"class": "GenericError",
            "desc": "migrate-pause is currently only supported during postcopy-active state"},
            "id": oob.0})))
        .unwrap();
    assert_eq!(
        qmp_error(session.take_reply(oob)).class,
        ErrorClass::GenericError
    );
    assert!(session.transmit().is_empty());
    session
        .receive(&line(json!({"return": {}, "id": in_band[0].0})))
        .unwrap();
    let sent = take_sent(&mut session);
    assert_eq!(sent.len(), 1);
    assert_eq!(id_of(&sent[0]), blocked.0);
}

#[test]
fn oob_wanted_but_not_offered() {
    let options = SessionOptions {
        oob: true,
        ..SessionOptions::default()
    };
    let mut session = Session::new(options);
    session.receive(&greeting(&[])).unwrap();
    let sent = take_sent(&mut session);
    assert_eq!(sent[0].arguments, None);
    session
        .receive(&line(json!({"return": {}, "id": sent[0].id})))
        .unwrap();
    assert!(!session.oob_enabled());
    assert_eq!(session.execute_oob("x", None), Err(Error::OobNotEnabled));
}

#[test]
fn negotiation_refused() {
    let mut session = Session::new(SessionOptions::default());
    session.receive(&greeting(&[])).unwrap();
    let sent = take_sent(&mut session);
    let err = session
        .receive(&line(json!({"error": {"class": "GenericError",
            "desc": "Capability negotiation is already complete, command ignored"},
            "id": sent[0].id})))
        .unwrap_err();
    assert!(matches!(&err, Error::Negotiation(e) if e.class == ErrorClass::GenericError));
    assert!(err.to_string().contains("already complete"));
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(session.execute("stop", None), Err(Error::Closed));
}

#[test]
fn at_most_max_in_flight_and_replies_matched_by_id() {
    let mut session = ready(SessionOptions::default(), &[]);
    let ids: Vec<RequestId> = (0..20)
        .map(|i| {
            session
                .execute(
                    "human-monitor-command",
                    Some(json!({"command-line": format!("echo {i}")})),
                )
                .unwrap()
        })
        .collect();
    let mut sent = take_sent(&mut session);
    assert_eq!(sent.len(), 8);
    assert_eq!(session.in_flight(), 8);
    assert_eq!(session.queued(), 12);
    assert!(ids.iter().all(|id| session.is_pending(*id)));
    // Every id sent is distinct and the arguments went with their command.
    for (request, id) in sent.iter().zip(&ids) {
        assert_eq!(id_of(request), id.0);
    }
    // Replies in reverse order, each freeing one slot.
    let mut answered = Vec::new();
    while let Some(request) = sent.pop() {
        let id = id_of(&request);
        let text = request.arguments.as_ref().unwrap()["command-line"].clone();
        session
            .receive(&line(json!({"return": text, "id": id})))
            .unwrap();
        answered.push((RequestId(id), text));
        assert!(session.in_flight() <= 8);
        let mut more = take_sent(&mut session);
        sent.append(&mut more);
    }
    assert_eq!(answered.len(), 20);
    assert_eq!(session.in_flight(), 0);
    assert_eq!(session.queued(), 0);
    for (i, id) in ids.iter().enumerate() {
        assert!(!session.is_pending(*id));
        assert!(session.has_reply(*id));
        assert_eq!(
            session.take_reply(*id),
            Some(Ok(json!(format!("echo {i}"))))
        );
        assert!(!session.has_reply(*id));
        assert_eq!(session.take_reply(*id), None);
    }
}

#[test]
fn max_in_flight_of_zero_still_sends() {
    let options = SessionOptions {
        max_in_flight: 0,
        ..SessionOptions::default()
    };
    let mut session = ready(options, &[]);
    let a = session.execute("stop", None).unwrap();
    session.execute("cont", None).unwrap();
    assert_eq!(take_sent(&mut session).len(), 1);
    session
        .receive(&line(json!({"return": {}, "id": a.0})))
        .unwrap();
    assert_eq!(take_sent(&mut session)[0].command, "cont");
}

#[test]
fn events_at_any_time_are_queued_in_order() {
    let mut session = Session::new(SessionOptions::default());
    session.receive(&event("EARLY", None)).unwrap();
    session.receive(&greeting(&[])).unwrap();
    let sent = take_sent(&mut session);
    let mut input = event("NEGOTIATING", None);
    input.extend(line(json!({"return": {}, "id": sent[0].id})));
    session.receive(&input).unwrap();
    let id = session.execute_typed(&QueryStatus).unwrap();
    let mut input = event("STOP", None);
    input.extend(line(
        json!({"return": {"status": "paused", "singlestep": false, "running": false},
            "id": id.0}),
    ));
    input.extend(event(
        "DEVICE_DELETED",
        Some(json!({"device": "nic0", "path": "/p"})),
    ));
    input.extend(event(
        "DEVICE_DELETED",
        Some(json!({"device": "nic1", "path": "/q"})),
    ));
    session.receive(&input).unwrap();
    let reply = session.take_reply(id).unwrap().unwrap();
    let status = crate::parse_reply::<QueryStatus>(reply).unwrap();
    assert_eq!(status.status, RunState::Paused);
    assert_eq!(session.events_queued(), 5);
    let names: Vec<&str> = session.events().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "EARLY",
            "NEGOTIATING",
            "STOP",
            "DEVICE_DELETED",
            "DEVICE_DELETED"
        ]
    );
    let nic1 = session
        .take_event("DEVICE_DELETED", Some(&json!({"data": {"device": "nic1"}})))
        .unwrap();
    assert_eq!(nic1.data["path"], "/q");
    assert_eq!(session.take_event("RESET", None), None);
    assert_eq!(session.poll_event().unwrap().name, "EARLY");
    assert_eq!(session.poll_event().unwrap().name, "NEGOTIATING");
    assert_eq!(session.poll_event().unwrap().name, "STOP");
    assert_eq!(session.poll_event().unwrap().data["device"], "nic0");
    assert_eq!(session.poll_event(), None);
    assert_eq!(session.events_queued(), 0);
}

#[test]
fn replies_with_unknown_ids_are_dropped() {
    let mut session = ready(SessionOptions::default(), &[]);
    let id = session.execute("stop", None).unwrap();
    take_sent(&mut session);
    let mut input = Vec::new();
    input.extend(line(json!({"return": {}, "id": 999})));
    input.extend(line(json!({"return": {}, "id": "abc"})));
    input.extend(line(json!({"return": {}, "id": id.0 as f64 + 0.5})));
    input.extend(line(
        json!({"error": {"class": "GenericError", "desc": "x"}, "id": [1]}),
    ));
    input.extend(line(json!({"return": {}})));
    session.receive(&input).unwrap();
    assert!(session.is_pending(id));
    assert!(!session.has_reply(id));
    assert!(session.is_ready());
    session
        .receive(&line(json!({"error": {"class": "CommandNotFound",
            "desc": "The command stop has not been found"}, "id": id.0})))
        .unwrap();
    let error = qmp_error(session.take_reply(id));
    assert_eq!(error.class, ErrorClass::CommandNotFound);
    assert_eq!(
        error.to_string(),
        "CommandNotFound: The command stop has not been found"
    );
    // A duplicate reply to an answered command is unknown too.
    session
        .receive(&line(json!({"return": 1, "id": id.0})))
        .unwrap();
    assert_eq!(session.take_reply(id), None);
}

#[test]
fn error_without_id_is_a_protocol_error() {
    let mut session = ready(SessionOptions::default(), &[]);
    let id = session.execute("stop", None).unwrap();
    let err = session
        .receive(&line(json!({"error": {"class": "GenericError",
            "desc": "JSON parse error, expecting value"}})))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("without id") && m.contains("expecting value")),
        "{err}"
    );
    assert_eq!(session.state(), SessionState::Closed);
    assert!(!session.is_pending(id));
    assert!(session.transmit().is_empty());
    assert_eq!(session.receive(b"{}"), Err(Error::Closed));
    assert_eq!(session.execute("cont", None), Err(Error::Closed));
    assert_eq!(session.receive_eof(), Ok(()));
}

#[test]
fn replies_and_greetings_out_of_place() {
    let mut session = Session::new(SessionOptions::default());
    let err = session
        .receive(&line(json!({"return": {}, "id": 1})))
        .unwrap_err();
    assert!(matches!(&err, Error::Protocol(m) if m.contains("before the QMP greeting")));

    let mut session = ready(SessionOptions::default(), &[]);
    let err = session.receive(&greeting(&[])).unwrap_err();
    assert!(matches!(&err, Error::Protocol(m) if m.contains("second QMP greeting")));
    assert_eq!(session.state(), SessionState::Closed);

    let mut session = Session::guest_agent(SessionOptions::default());
    let err = session.receive(&greeting(&[])).unwrap_err();
    assert!(matches!(&err, Error::Protocol(m) if m.contains("guest agent")));
}

#[test]
fn broken_streams_close_the_session() {
    type Check = fn(&Error) -> bool;
    // Over the bound and of unknown kind: fatal, as a small message of unknown shape is.
    let big_array = format!("[{}1]\r\n", "1,".repeat(150)).into_bytes();
    let big_object = format!("{{\"what\": \"{}\"}}\r\n", "w".repeat(300)).into_bytes();
    let cases: [(&[u8], Check); 5] = [
        (b"{\"return\": nope}\r\n", |e| {
            matches!(e, Error::Json { .. })
        }),
        (b"{\"return\": \"\xfe\"}\r\n", |e| {
            matches!(e, Error::Utf8 { .. })
        }),
        (b"{\"what\": 1}\r\n", |e| matches!(e, Error::Protocol(_))),
        (&big_array, |e| {
            *e == Error::MessageTooLarge {
                limit: 200,
                size: 303,
                skipped: Skipped::default(),
            }
        }),
        (&big_object, |e| {
            *e == Error::MessageTooLarge {
                limit: 200,
                size: 312,
                skipped: Skipped::default(),
            }
        }),
    ];
    for (input, expected) in cases {
        let options = SessionOptions {
            max_message_size: 200,
            ..SessionOptions::default()
        };
        let mut session = ready(options, &[]);
        let id = session.execute("stop", None).unwrap();
        let mut bytes = line(json!({"return": {}, "id": id.0}));
        bytes.extend_from_slice(input);
        let err = session.receive(&bytes).unwrap_err();
        assert!(expected(&err), "{err}");
        assert_eq!(session.state(), SessionState::Closed);
        // The reply that came before the error is still there.
        assert_eq!(session.take_reply(id), Some(Ok(json!({}))));
    }
}

#[test]
fn end_of_stream() {
    let mut session = ready(SessionOptions::default(), &[]);
    let id = session.execute("quit", None).unwrap();
    let mut input = line(json!({"return": {}, "id": id.0}));
    input.extend(event(
        "SHUTDOWN",
        Some(json!({"guest": false, "reason": "host-qmp-quit"})),
    ));
    session.receive(&input).unwrap();
    assert_eq!(session.receive_eof(), Ok(()));
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(session.take_reply(id), Some(Ok(json!({}))));
    assert_eq!(session.poll_event().unwrap().name, "SHUTDOWN");
    assert_eq!(session.receive_eof(), Ok(()));

    let mut session = ready(SessionOptions::default(), &[]);
    let id = session.execute("query-status", None).unwrap();
    session.receive(b"\r\n{\"return\": {\"sta").unwrap();
    assert_eq!(
        session.receive_eof(),
        Err(Error::Truncated { buffered: 16 })
    );
    assert_eq!(session.state(), SessionState::Closed);
    assert!(!session.is_pending(id));

    // QEMU exiting before its greeting is a clean end of stream: the driver tells why.
    let mut session = Session::new(SessionOptions::default());
    assert_eq!(session.receive_eof(), Ok(()));
    assert_eq!(session.state(), SessionState::Closed);
}

#[test]
fn close_by_the_caller() {
    let mut session = ready(SessionOptions::default(), &[]);
    let id = session.execute("stop", None).unwrap();
    session.close();
    assert!(!session.is_pending(id));
    assert_eq!(session.transmit(), b"");
    assert_eq!(session.receive(b"{}"), Err(Error::Closed));
    assert_eq!(session.execute_typed(&QueryStatus), Err(Error::Closed));
}

#[test]
fn arguments_must_be_objects() {
    let mut session = ready(SessionOptions::default(), &[]);
    let err = session
        .execute("device_del", Some(json!("nic0")))
        .unwrap_err();
    assert_eq!(
        err,
        Error::Arguments {
            command: "device_del".into(),
            message: "they are a string, and QMP needs an object".into()
        }
    );
    assert!(session.transmit().is_empty());
    assert!(session.is_ready());
    session
        .execute("device_del", Some(json!({"id": "nic0"})))
        .unwrap();
}

#[test]
fn partial_writes() {
    let mut session = ready(SessionOptions::default(), &[]);
    session.execute("stop", None).unwrap();
    let all = session.transmit().to_vec();
    session.advance_transmit(5);
    assert_eq!(session.transmit(), &all[5..]);
    session.execute("cont", None).unwrap();
    let mut expected = all[5..].to_vec();
    expected.extend_from_slice(b"{\"execute\":\"cont\",\"id\":3}\r\n");
    assert_eq!(session.transmit(), &expected[..]);
    session.advance_transmit(usize::MAX);
    assert!(session.transmit().is_empty());
}

#[test]
fn guest_agent_mode() {
    let mut session = Session::guest_agent(SessionOptions::default());
    assert!(session.is_ready());
    assert_eq!(session.greeting(), None);
    let ping = session.execute("guest-ping", None).unwrap();
    assert_eq!(
        session.transmit(),
        b"{\"execute\":\"guest-ping\",\"id\":1}\r\n"
    );
    session.advance_transmit(usize::MAX);
    session.receive(b"{\"return\": {}, \"id\": 1}\n").unwrap();
    assert_eq!(session.take_reply(ping), Some(Ok(json!({}))));

    // Resynchronization: stale output before the sentinel is skipped.
    let stale = session.execute("guest-info", None).unwrap();
    session.advance_transmit(usize::MAX);
    session
        .receive(b"{\"return\": {\"version\": \"7.2")
        .unwrap();
    let sync = session.guest_sync(123456).unwrap();
    assert!(!session.is_pending(stale));
    let out = session.transmit().to_vec();
    assert_eq!(out[0], 0xFF);
    assert_eq!(
        &out[1..],
        b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":123456},\"id\":3}\r\n"
    );
    session.advance_transmit(out.len());
    session
        .receive(b".0\"}, \"id\": 2}\n{\"return\": 99, \"id\": 3}\n\xff{\"return\": 123456, \"id\": 3}\n")
        .unwrap();
    assert_eq!(session.take_reply(stale), None);
    assert_eq!(session.take_reply(sync), Some(Ok(json!(123456))));
    assert_eq!(session.receive_eof(), Ok(()));

    let mut monitor = ready(SessionOptions::default(), &[]);
    assert!(matches!(monitor.guest_sync(1), Err(Error::Protocol(_))));
}

/// A resync drops what was not written yet of forgotten commands: the agent never runs
/// them, and the part of a request already written is ended by the `0xFF`.
#[test]
fn guest_sync_drops_unwritten_requests() {
    let mut session = Session::guest_agent(SessionOptions::default());
    session
        .execute(
            "guest-file-write",
            Some(json!({"handle": 1, "buf-b64": "AAAA"})),
        )
        .unwrap();
    session.execute("guest-ping", None).unwrap();
    session.advance_transmit(10);
    let sync = session.guest_sync(5).unwrap();
    let mut expected = vec![0xFF];
    expected.extend_from_slice(
        b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":5},\"id\":3}\r\n",
    );
    assert_eq!(session.transmit(), &expected[..]);
    assert_eq!(session.pending(), 1);
    assert!(session.is_pending(sync));
    // The agent's parse error for the cut request comes before its sentinel: skipped.
    session
        .receive(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\n\xff{\"return\": 5, \"id\": 3}\n")
        .unwrap();
    assert_eq!(session.take_reply(sync), Some(Ok(json!(5))));
    assert!(session.is_ready());

    // Half a message with nothing in flight: stale, seen, and cut by the next resync.
    assert!(!session.is_mid_message());
    session.receive(b"{\"return\": {\"half").unwrap();
    assert!(session.is_mid_message());
    let sync = session.guest_sync(6).unwrap();
    assert!(!session.is_mid_message());
    session
        .receive(b" way\"}}\n\xff{\"return\": 6, \"id\": 4}\n")
        .unwrap();
    assert_eq!(session.take_reply(sync), Some(Ok(json!(6))));
}

/// One whole conversation, fed in every possible two-piece split (and byte by byte), gives
/// the same results.
#[test]
fn any_split_of_a_conversation() {
    let mut handshake = greeting(&["oob"]);
    handshake.extend(line(json!({"return": {}, "id": 1})));
    let mut server = event("STOP", None);
    server.extend(line(
        json!({"return": {"status": "paused", "running": false}, "id": 2}),
    ));
    server.extend(line(
        json!({"error": {"class": "GenericError", "desc": "no"}, "id": 3}),
    ));
    server.extend(event("SHUTDOWN", Some(json!({"guest": false}))));
    // Under miri, a sample of the splits (every one takes minutes there).
    let step = if cfg!(miri) { 23 } else { 1 };
    for split in (0..=server.len()).step_by(step).chain([server.len() + 1]) {
        let mut session = Session::new(SessionOptions::default());
        for byte in handshake.chunks(1) {
            session.receive(byte).unwrap();
        }
        assert!(session.is_ready());
        let ids = [
            session.execute("query-status", None).unwrap(),
            session.execute("bad", None).unwrap(),
        ];
        if split <= server.len() {
            session.receive(&server[..split]).unwrap();
            session.receive(&server[split..]).unwrap();
        } else {
            server.chunks(1).for_each(|b| session.receive(b).unwrap());
        }
        session.receive_eof().unwrap();
        assert_eq!(ids, [RequestId(2), RequestId(3)]);
        assert_eq!(
            session.take_reply(ids[0]),
            Some(Ok(json!({"status": "paused", "running": false})))
        );
        assert!(session.take_reply(ids[1]).unwrap().is_err());
        let names: Vec<String> = std::iter::from_fn(|| session.poll_event())
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["STOP", "SHUTDOWN"]);
    }
}

mod events;
mod no_ids;
mod outcomes;
mod oversize;
mod raw;
