//! Transcripts captured from a real QEMU 7.2 and qemu-ga 7.2 (by `fixtures/capture.py`),
//! decoded and replayed through a `Session`.
//!
//! Each transcript is two files: `<name>.recv`, the bytes received from the server exactly as
//! read from the socket, and `<name>.sent`, the bytes the capture script sent.

use std::collections::HashMap;

use qmp_proto::commands::{
    ChardevInfo, CpuInfoFast, HumanMonitorCommand, KvmInfo, QueryBlock, QueryChardev,
    QueryCommands, QueryCpusFast, QueryKvm, QueryName, QueryStatus, QueryVersion,
};
use qmp_proto::{
    parse_reply, Decoder, Error, ErrorClass, Message, QmpError, ReplyError, Request, RunState,
    Session, SessionOptions, SessionState,
};
use serde_json::{json, Value};

const MONITOR: &str = "qemu-7.2-monitor";
const PRETTY: &str = "qemu-7.2-pretty";
const OOB: &str = "qemu-7.2-oob";
const NEGOTIATION_ERRORS: &str = "qemu-7.2-negotiation-errors";
const BAD_JSON: &str = "qemu-7.2-bad-json";
const GUEST_AGENT: &str = "qemu-ga-7.2";
const ALL: [&str; 6] = [
    MONITOR,
    PRETTY,
    OOB,
    NEGOTIATION_ERRORS,
    BAD_JSON,
    GUEST_AGENT,
];

/// A transcript file. Embedded at compile time, so the tests also run under miri (which
/// isolates them from the file system).
fn load(name: &str, extension: &str) -> Vec<u8> {
    macro_rules! fixtures {
        ($($name:literal),*) => {
            match (name, extension) {
                $(
                    ($name, "recv") => include_bytes!(concat!("../fixtures/", $name, ".recv")).to_vec(),
                    ($name, "sent") => include_bytes!(concat!("../fixtures/", $name, ".sent")).to_vec(),
                )*
                _ => panic!("no fixture {name}.{extension}"),
            }
        };
    }
    fixtures!(
        "qemu-7.2-monitor",
        "qemu-7.2-pretty",
        "qemu-7.2-oob",
        "qemu-7.2-negotiation-errors",
        "qemu-7.2-bad-json",
        "qemu-ga-7.2"
    )
}

/// Every value in `input`, fed in the given pieces.
fn decode_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<Value> {
    let mut decoder = Decoder::new();
    let mut values = Vec::new();
    for piece in pieces {
        decoder.feed(piece);
        while let Some(value) = decoder.next_value().unwrap() {
            values.push(value);
        }
    }
    assert!(!decoder.is_mid_message());
    values
}

fn decode(input: &[u8]) -> Vec<Value> {
    decode_pieces([input])
}

fn messages(name: &str) -> Vec<Message> {
    decode(&load(name, "recv"))
        .into_iter()
        .map(|v| Message::from_value(v).unwrap())
        .collect()
}

/// The requests the capture script sent. (In the bad JSON transcript, one was deliberately
/// invalid; the decoder reports it and goes on.)
fn requests(name: &str) -> Vec<Request> {
    let mut decoder = Decoder::new();
    decoder.feed(&load(name, "sent"));
    let mut requests = Vec::new();
    loop {
        match decoder.next_value() {
            Ok(Some(value)) => requests.push(Request::from_value(value).unwrap()),
            Ok(None) => break,
            Err(e) => {
                assert_eq!(name, BAD_JSON, "{e}");
                assert!(matches!(e, Error::Json { .. }), "{e}");
            }
        }
    }
    requests
}

/// The reply to every request of a transcript, by id.
fn replies_by_id(name: &str) -> HashMap<u64, Result<Value, QmpError>> {
    let mut replies = HashMap::new();
    for message in messages(name) {
        match message {
            Message::Return {
                id: Some(id),
                value,
            } => {
                replies.insert(id.as_u64().unwrap(), Ok(value));
            }
            Message::Error {
                id: Some(id),
                error,
            } => {
                replies.insert(id.as_u64().unwrap(), Err(error));
            }
            _ => {}
        }
    }
    replies
}

fn id_of(request: &Request) -> u64 {
    request.id.as_ref().and_then(Value::as_u64).unwrap()
}

#[test]
fn transcripts_decode_to_messages() {
    let expected_counts = [
        (MONITOR, 31),
        (PRETTY, 31),
        (OOB, 7),
        (NEGOTIATION_ERRORS, 6),
        (BAD_JSON, 5),
        (GUEST_AGENT, 6),
    ];
    for (name, count) in expected_counts {
        let messages = messages(name);
        assert_eq!(messages.len(), count, "{name}");
        if name != GUEST_AGENT {
            let Message::Greeting(greeting) = &messages[0] else {
                panic!("{name}: {:?}", messages[0])
            };
            assert_eq!((greeting.version.major, greeting.version.minor), (7, 2));
            assert!(greeting.version.package.contains("7.2"), "{greeting:?}");
            assert_eq!(greeting.capabilities, ["oob"]);
            assert!(messages[1..]
                .iter()
                .all(|m| !matches!(m, Message::Greeting(_))));
        }
        // Every request got exactly one reply.
        let replies = replies_by_id(name);
        for request in requests(name) {
            if let Some(id) = &request.id {
                assert!(replies.contains_key(&id.as_u64().unwrap()), "{name}: {id}");
            }
        }
    }
}

/// Every transcript decodes to the same values however it is split: at every byte
/// boundary into two pieces, and one byte at a time.
#[test]
#[cfg_attr(miri, ignore)] // quadratic: ~10^9 steps under miri
fn transcripts_decode_the_same_at_every_split() {
    for name in ALL {
        let input = load(name, "recv");
        let whole = decode(&input);
        // `prefix` has been fed `input[..split]` one byte at a time; a copy of it is fed the
        // rest in one piece, and must produce the values the prefix did not.
        let mut prefix = Decoder::new();
        let mut done = 0;
        for split in 0..=input.len() {
            let mut rest = prefix.clone();
            rest.feed(&input[split..]);
            let mut values = Vec::new();
            while let Some(value) = rest.next_value().unwrap() {
                values.push(value);
            }
            assert!(!rest.is_mid_message());
            assert_eq!(values, whole[done..], "{name} split at {split}");
            if split < input.len() {
                prefix.feed(&input[split..split + 1]);
                while let Some(value) = prefix.next_value().unwrap() {
                    assert_eq!(value, whole[done], "{name} byte by byte");
                    done += 1;
                }
            }
        }
        assert_eq!(done, whole.len());
    }
}

#[test]
fn pretty_and_compact_monitors_send_the_same_messages() {
    /// Drops what differs between two runs: times, thread ids, temporary paths.
    fn normalize(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for key in ["timestamp", "thread-id", "filename"] {
                    map.remove(key);
                }
                map.values_mut().for_each(normalize);
            }
            Value::Array(items) => items.iter_mut().for_each(normalize),
            _ => {}
        }
    }
    let compact = decode(&load(MONITOR, "recv"));
    let pretty_bytes = load(PRETTY, "recv");
    let pretty = decode(&pretty_bytes);
    // The pretty monitor really is multi-line.
    assert!(pretty_bytes.starts_with(b"{\r\n    \"QMP\": {\r\n"));
    let lines = pretty_bytes.iter().filter(|&&b| b == b'\n').count();
    assert!(lines > 5 * pretty.len(), "{lines} lines");
    assert_eq!(compact.len(), pretty.len());
    for (mut a, mut b) in compact.into_iter().zip(pretty) {
        normalize(&mut a);
        normalize(&mut b);
        assert_eq!(a, b);
    }
    assert_eq!(requests(MONITOR), requests(PRETTY));
}

/// Replays a QMP transcript through a `Session` fed in pieces of `chunk` bytes: the session
/// must send what the capture script sent, and hand out the replies and events QEMU sent.
fn replay(name: &str, chunk: usize) -> Session {
    let recv = load(name, "recv");
    let sent = requests(name);
    assert_eq!(sent[0].command, "qmp_capabilities");
    let options = SessionOptions {
        oob: sent[0].arguments == Some(json!({"enable": ["oob"]})),
        ..SessionOptions::default()
    };
    // The bytes up to the end of the negotiation reply, then the rest: commands are issued
    // when the session is ready, as a driver would, before their replies are fed.
    let mut decoder = Decoder::new();
    decoder.feed(&recv);
    let mut handshake = 0;
    while let Some(value) = decoder.next_value().unwrap() {
        if value.get("id") == Some(&json!(1)) {
            handshake = decoder.position() as usize;
            break;
        }
    }
    assert!(handshake > 0);

    let mut session = Session::new(options);
    let mut transmitted = Vec::new();
    for piece in recv[..handshake].chunks(chunk) {
        session.receive(piece).unwrap();
        transmitted.extend_from_slice(session.transmit());
        let n = session.transmit().len();
        session.advance_transmit(n);
    }
    assert!(session.is_ready(), "{name}");
    assert_eq!(session.oob_enabled(), options_oob(&sent));
    let mut ids = Vec::new();
    for request in &sent[1..] {
        let id = if request.oob {
            session.execute_oob(&request.command, request.arguments.clone())
        } else {
            session.execute(&request.command, request.arguments.clone())
        }
        .unwrap();
        assert_eq!(id.0, id_of(request), "{name}: ids follow the capture's");
        ids.push(id);
    }
    assert!(session.in_flight() <= 8);
    for piece in recv[handshake..].chunks(chunk) {
        transmitted.extend_from_slice(session.transmit());
        let n = session.transmit().len();
        session.advance_transmit(n);
        session.receive(piece).unwrap();
        assert!(session.in_flight() <= 8);
    }
    transmitted.extend_from_slice(session.transmit());
    session.receive_eof().unwrap();
    assert_eq!(session.state(), SessionState::Closed);

    // What the session sent is what the capture sent (compared as JSON: key order may differ),
    // as compact lines ending in CRLF.
    let sent_by_session: Vec<Request> = decode(&transmitted)
        .into_iter()
        .map(|v| Request::from_value(v).unwrap())
        .collect();
    assert_eq!(sent_by_session, sent, "{name}");
    for line in transmitted.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"}\r\n"), "{name}: {line:?}");
        assert!(!line[..line.len() - 2].contains(&b'\n'));
    }

    // Every reply is handed out once, to its command.
    let expected = replies_by_id(name);
    for id in &ids {
        assert!(!session.is_pending(*id));
        let reply = session.take_reply(*id).unwrap();
        let expected = expected
            .get(&id.0)
            .map(|r| r.clone().map_err(ReplyError::Qmp));
        assert_eq!(Some(reply), expected, "{name} id {}", id.0);
    }
    session
}

fn options_oob(sent: &[Request]) -> bool {
    sent[0].arguments.is_some()
}

fn event_names(session: &Session) -> Vec<&str> {
    session.events().map(|e| e.name.as_str()).collect()
}

#[test]
fn monitor_transcripts_replay_through_a_session() {
    for name in [MONITOR, PRETTY] {
        for chunk in [1, 2, 3, 5, 8, 13, 64, 1000, usize::MAX] {
            if cfg!(miri) && chunk < 64 {
                continue;
            }
            let mut session = replay(name, chunk);
            assert_eq!(
                event_names(&session),
                ["RESUME", "STOP", "RESET", "POWERDOWN", "SHUTDOWN"],
                "{name} in chunks of {chunk}"
            );
            let shutdown = session
                .take_event(
                    "SHUTDOWN",
                    Some(&json!({"data": {"guest": false, "reason": "host-qmp-quit"}})),
                )
                .unwrap();
            assert!(shutdown.timestamp.seconds > 1_600_000_000);
            assert!(session
                .take_event("RESET", Some(&json!({"data": {"reason": "guest-reset"}})))
                .is_none());
            assert!(session
                .take_event("RESET", Some(&json!({"data": {"guest": false}})))
                .is_some());
        }
    }
}

#[test]
fn typed_replies_from_qemu() {
    let sent = requests(MONITOR);
    let replies = replies_by_id(MONITOR);
    let reply = |command: &str, nth: usize| -> Result<Value, QmpError> {
        let request = sent
            .iter()
            .filter(|r| r.command == command)
            .nth(nth)
            .unwrap_or_else(|| panic!("no request {command} #{nth}"));
        replies[&id_of(request)].clone()
    };

    let version = parse_reply::<QueryVersion>(reply("query-version", 0).unwrap()).unwrap();
    assert_eq!((version.major, version.minor), (7, 2));
    let status = parse_reply::<QueryStatus>(reply("query-status", 0).unwrap()).unwrap();
    assert_eq!(status.status, RunState::Prelaunch);
    assert!(!status.running);
    let status = parse_reply::<QueryStatus>(reply("query-status", 2).unwrap()).unwrap();
    assert_eq!(status.status, RunState::Paused);
    let name = parse_reply::<QueryName>(reply("query-name", 0).unwrap()).unwrap();
    assert_eq!(name.name.as_deref(), Some("fixture"));
    let kvm: KvmInfo = parse_reply::<QueryKvm>(reply("query-kvm", 0).unwrap()).unwrap();
    assert!(!kvm.enabled);
    let chardevs: Vec<ChardevInfo> =
        parse_reply::<QueryChardev>(reply("query-chardev", 0).unwrap()).unwrap();
    let labels: Vec<&str> = chardevs.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["m", "null0"]);
    assert!(chardevs[0].frontend_open);
    assert!(chardevs[0].filename.starts_with("unix:"));
    let blocks = parse_reply::<QueryBlock>(reply("query-block", 0).unwrap()).unwrap();
    assert!(blocks.is_empty());
    let cpus: Vec<CpuInfoFast> =
        parse_reply::<QueryCpusFast>(reply("query-cpus-fast", 0).unwrap()).unwrap();
    assert_eq!(cpus.len(), 1);
    assert_eq!(cpus[0].target, "x86_64");
    assert_eq!(cpus[0].cpu_index, 0);
    assert!(cpus[0].thread_id > 0);
    let commands = parse_reply::<QueryCommands>(reply("query-commands", 0).unwrap()).unwrap();
    assert!(commands.len() > 100);
    for typed in [
        "qmp_capabilities",
        "query-version",
        "query-status",
        "query-commands",
        "query-name",
        "query-kvm",
        "query-chardev",
        "query-block",
        "query-cpus-fast",
        "stop",
        "cont",
        "system_reset",
        "system_powerdown",
        "quit",
        "device_add",
        "device_del",
        "blockdev-add",
        "blockdev-del",
        "netdev_add",
        "netdev_del",
        "human-monitor-command",
        "screendump",
        "getfd",
        "closefd",
        "add-fd",
        "remove-fd",
    ] {
        assert!(
            commands.iter().any(|c| c.name == typed),
            "QEMU 7.2 has no command {typed}"
        );
    }
    let text =
        parse_reply::<HumanMonitorCommand>(reply("human-monitor-command", 0).unwrap()).unwrap();
    assert_eq!(text, "VM status: paused (prelaunch)\r\n");

    // A typed reply of the wrong shape is an error naming the command.
    let err = parse_reply::<QueryStatus>(reply("query-version", 0).unwrap()).unwrap_err();
    assert!(matches!(&err, Error::Reply { command, .. } if command == "query-status"));

    let error = |command: &str| reply(command, 0).unwrap_err();
    assert_eq!(error("no-such-command").class, ErrorClass::CommandNotFound);
    assert_eq!(
        error("no-such-command").to_string(),
        "CommandNotFound: The command no-such-command has not been found"
    );
    let bad_args = reply("query-status", 1).unwrap_err();
    assert_eq!(bad_args.class, ErrorClass::GenericError);
    assert_eq!(bad_args.desc, "Parameter 'x' is unexpected");
    assert_eq!(error("device_del").class, ErrorClass::DeviceNotFound);
    assert_eq!(
        error("getfd").desc,
        "No file descriptor supplied via SCM_RIGHTS"
    );
}

#[test]
fn oob_transcript_replays() {
    for chunk in [1, 7, usize::MAX] {
        let session = replay(OOB, chunk);
        assert!(session.oob_enabled());
        assert_eq!(event_names(&session), ["SHUTDOWN"]);
    }
    let replies = replies_by_id(OOB);
    let sent = requests(OOB);
    assert!(sent[1].oob && sent[1].command == "migrate-pause");
    let error = replies[&id_of(&sent[1])].clone().unwrap_err();
    assert!(error.desc.contains("postcopy-active"), "{error}");
    assert!(sent[2].oob && sent[2].command == "query-status");
    let error = replies[&id_of(&sent[2])].clone().unwrap_err();
    assert_eq!(error.desc, "The command query-status does not support OOB");
}

#[test]
fn a_refused_negotiation_from_qemu_closes_the_session() {
    // In this transcript the first command (id 1) was query-status before negotiation; QEMU
    // refused it with CommandNotFound. Replayed, id 1 is the session's qmp_capabilities, so
    // the session sees its negotiation refused.
    let recv = load(NEGOTIATION_ERRORS, "recv");
    let mut session = Session::new(SessionOptions::default());
    let err = session.receive(&recv).unwrap_err();
    let Error::Negotiation(error) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(error.class, ErrorClass::CommandNotFound);
    assert_eq!(
        error.desc,
        "Expecting capabilities negotiation with 'qmp_capabilities'"
    );
    assert_eq!(session.state(), SessionState::Closed);
    let replies = replies_by_id(NEGOTIATION_ERRORS);
    assert_eq!(
        replies[&3].clone().unwrap_err().desc,
        "Capabilities negotiation is already complete, command ignored"
    );
}

#[test]
fn an_error_without_id_from_qemu_is_a_protocol_error() {
    let recv = load(BAD_JSON, "recv");
    for chunk in [1, 10, usize::MAX] {
        let mut session = Session::new(SessionOptions::default());
        let mut result = Ok(());
        for piece in recv.chunks(chunk) {
            result = session.receive(piece);
            if result.is_err() {
                break;
            }
        }
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(m) if m.contains("without id")
                && m.contains("JSON parse error, expecting value")),
            "{err}"
        );
        assert_eq!(session.state(), SessionState::Closed);
    }
}

#[test]
fn guest_agent_transcript_replays_with_resync() {
    let recv = load(GUEST_AGENT, "recv");
    let sent_bytes = load(GUEST_AGENT, "sent");
    let sent = requests(GUEST_AGENT);
    // The capture reset the agent's parser with 0xFF; the agent complained about the stray
    // byte in an error without id, then sent its own 0xFF and the sync reply.
    assert_eq!(sent_bytes[0], 0xFF);
    assert!(recv.starts_with(b"{\"error\""));
    let sentinel = recv.iter().position(|&b| b == 0xFF).unwrap();
    for chunk in [1, 3, 64, usize::MAX] {
        let mut session = Session::guest_agent(SessionOptions::default());
        let token = sent[0].arguments.as_ref().unwrap()["id"].as_u64().unwrap();
        let sync = session.guest_sync(token).unwrap();
        let mut ids = vec![sync];
        for request in &sent[1..] {
            ids.push(
                session
                    .execute(&request.command, request.arguments.clone())
                    .unwrap(),
            );
        }
        let transmitted = session.transmit().to_vec();
        assert_eq!(transmitted[0], 0xFF);
        let sent_by_session: Vec<Request> = decode(&transmitted)
            .into_iter()
            .map(|v| Request::from_value(v).unwrap())
            .collect();
        assert_eq!(sent_by_session, sent);
        session.advance_transmit(transmitted.len());
        for piece in recv.chunks(chunk) {
            session.receive(piece).unwrap();
        }
        session.receive_eof().unwrap();
        assert_eq!(session.take_reply(sync), Some(Ok(json!(token))));
        assert_eq!(session.take_reply(ids[1]), Some(Ok(json!({}))));
        let info = session.take_reply(ids[2]).unwrap().unwrap();
        assert_eq!(info["version"], "7.2.22");
        assert!(info["supported_commands"].as_array().unwrap().len() > 20);
        let error = session.take_reply(ids[3]).unwrap().unwrap_err();
        assert_eq!(error.qmp().unwrap().class, ErrorClass::CommandNotFound);
        assert_eq!(session.take_reply(ids[4]), Some(Ok(json!(42))));
        assert_eq!(session.events_queued(), 0);
    }
    // Without the resync, the agent's error without id (before the sentinel) breaks the
    // session, as it should.
    let mut session = Session::guest_agent(SessionOptions::default());
    let err = session.receive(&recv[..sentinel]).unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("without id")),
        "{err}"
    );
}
