//! Unit tests of `Machine` against scripted QMP peers.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use qmp_proto::{Session, SessionOptions};
use serde_json::{json, Value};

use super::launch::attach_session;
use super::{Deadline, Machine};
use crate::error::Error;
use crate::sys;

fn assert_send<T: Send>() {}

#[test]
fn machines_can_move_between_threads() {
    assert_send::<Machine>();
    assert_send::<crate::MachineSet>();
}

#[test]
fn deadlines() {
    assert_eq!(
        Deadline::after(Duration::ZERO).remaining(),
        Some(Duration::ZERO)
    );
    assert_eq!(Deadline::after(Duration::MAX).remaining(), None);
    let d = Deadline::after(Duration::from_secs(60));
    assert!(d.remaining().unwrap() > Duration::from_secs(59));
    assert_eq!(d.total(), Duration::from_secs(60));
}

/// A scripted QMP server on a socketpair: greets, negotiates, then answers each request
/// with `answer(name, id)` (None: close the connection without answering).
/// `reply` with the request's `id`, when it had one: like QEMU, no id in the reply to a
/// request without id.
fn with_id(mut reply: Value, id: &Value) -> Value {
    if !id.is_null() {
        reply["id"] = id.clone();
    }
    reply
}

fn peer(
    answer: impl Fn(&str, &Value) -> Option<String> + Send + 'static,
) -> (Machine, std::thread::JoinHandle<()>) {
    peer_with(attach_session(), answer)
}

/// [`peer`] with `session` as the machine's session (attached machines use
/// `attach_session()`).
fn peer_with(
    session: Session,
    answer: impl Fn(&str, &Value) -> Option<String> + Send + 'static,
) -> (Machine, std::thread::JoinHandle<()>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let thread = std::thread::spawn(move || {
        let mut reader = BufReader::new(theirs);
        reader
            .get_mut()
            .write_all(
                b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \
                  \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n",
            )
            .unwrap();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let request: Value = serde_json::from_str(line.trim()).unwrap();
            let name = request["execute"]
                .as_str()
                .or(request["exec-oob"].as_str())
                .unwrap()
                .to_owned();
            let reply = if name == "qmp_capabilities" {
                Some(with_id(json!({"return": {}}), &request["id"]).to_string() + "\r\n")
            } else {
                answer(&name, &request["id"])
            };
            match reply {
                Some(text) => {
                    // A NUL in the answer: pause there, so what follows arrives later.
                    for (i, part) in text.split('\0').enumerate() {
                        if i > 0 {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        if reader.get_mut().write_all(part.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
                None => return,
            }
            line.clear();
        }
    });
    let ours = OwnedFd::from(ours);
    sys::set_nonblocking(ours.as_raw_fd(), true).unwrap();
    let mut machine = Machine::from_parts(
        Some(ours),
        true,
        session,
        None,
        None,
        Duration::from_secs(10),
        Vec::new(),
    )
    .unwrap();
    machine
        .finish_launch(Deadline::after(Duration::from_secs(10)))
        .unwrap();
    (machine, thread)
}

#[test]
fn quit_closed_before_the_reply_is_success() {
    let (mut vm, thread) = peer(|_, _| None);
    assert!(vm.oob_enabled());
    assert_eq!(vm.execute("quit", None).unwrap(), json!({}));
    thread.join().unwrap();
    // Any other command on the closed connection is an error.
    assert!(matches!(
        vm.execute("query-status", None),
        Err(Error::Disconnected)
    ));
}

#[test]
fn quit_answered_then_closed_is_success() {
    let (mut vm, thread) = peer(|name, id| {
        assert_eq!(name, "quit");
        Some(
            "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, \"event\": \"SHUTDOWN\", \
             \"data\": {\"guest\": false}}\r\n"
                .to_owned()
                + &with_id(json!({"return": {}}), id).to_string()
                + "\r\n",
        )
    });
    assert_eq!(vm.execute("quit", None).unwrap(), json!({}));
    let event = vm
        .event_wait(
            "SHUTDOWN",
            Some(&json!({"data": {"guest": false}})),
            Duration::ZERO,
        )
        .unwrap();
    assert_eq!(event.timestamp.seconds, 1);
    drop(vm);
    thread.join().unwrap();
}

#[test]
fn an_error_reply_is_typed_and_oob_goes_out_as_exec_oob() {
    let (mut vm, thread) = peer(|name, id| {
        Some(if name == "migrate-pause" {
            with_id(json!({"return": {"oob": true}}), id).to_string() + "\r\n"
        } else {
            with_id(
                json!({"error": {"class": "DeviceNotFound", "desc": "no such thing"}}),
                id,
            )
            .to_string()
                + "\r\n"
        })
    });
    match vm.execute("device_del", Some(json!({"id": "x"}))) {
        Err(Error::Qmp(e)) => {
            assert_eq!(e.class, qmp_proto::ErrorClass::DeviceNotFound);
            assert_eq!(e.desc, "no such thing");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        vm.execute_oob("migrate-pause", None, Duration::from_secs(5))
            .unwrap(),
        json!({"oob": true})
    );
    drop(vm);
    thread.join().unwrap();
}

#[test]
fn a_zero_timeout_still_takes_in_what_is_ready() {
    let (mut vm, thread) = peer(|_, id| {
        Some(
            with_id(json!({"return": {}}), id).to_string()
                + "\r\n\0{\"event\": \"LATE\", \"timestamp\": \
                   {\"seconds\": 2, \"microseconds\": 3}}\r\n",
        )
    });
    vm.execute("anything", None).unwrap();
    // The event comes 50 ms after the reply; once it is in the socket, a zero-timeout
    // wait finds it.
    assert_eq!(vm.events_pending(), 0);
    std::thread::sleep(Duration::from_millis(200));
    let event = vm.event_wait("LATE", None, Duration::ZERO).unwrap();
    assert_eq!(event.timestamp.microseconds, 3);
    let err = vm.event_wait("LATE", None, Duration::ZERO).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    drop(vm);
    thread.join().unwrap();
}

#[test]
fn a_late_reply_after_a_timeout_is_discarded() {
    let (mut vm, thread) = peer(|name, id| {
        // An attached machine sends in-band commands without id: the replies come in
        // order, and the late one must still go to the command that timed out.
        assert!(id.is_null(), "{name} was sent with id {id}");
        if name == "slow" {
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(with_id(json!({"return": name}), id).to_string() + "\r\n")
    });
    let err = vm
        .execute_with_timeout("slow", None, Duration::from_millis(50))
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The next command gets its own reply, not the late one.
    assert_eq!(vm.execute("fast", None).unwrap(), json!("fast"));
    // Nothing is left of the abandoned command once its late reply came.
    assert_eq!(vm.qmp.session.pending(), 0);
    drop(vm);
    thread.join().unwrap();
}

/// A session like an attached machine's, with ids on the wire or not and a small bound.
fn bounded_session(in_band_ids: bool, limit: usize) -> Session {
    Session::new(SessionOptions {
        oob: true,
        in_band_ids,
        max_message_size: limit,
        ..SessionOptions::default()
    })
}

/// A reply's text with NULs (pauses: what follows arrives in a later read) at awkward
/// places: after the first byte, after the first backslash, inside the `"id"` member name,
/// between the digits of a number, and between CR and LF.
fn with_pauses(text: &str) -> String {
    let mut out = String::new();
    let mut backslash = false;
    for (i, c) in text.char_indices() {
        out.push(c);
        let next = &text[i + c.len_utf8()..];
        let first_backslash = c == '\\' && !std::mem::replace(&mut backslash, true);
        let digits = c.is_ascii_digit() && next.starts_with(|d: char| d.is_ascii_digit());
        if i == 0
            || first_backslash
            || digits
            || (c == '"' && next.starts_with("id\""))
            || c == '\r'
        {
            out.push('\0');
        }
    }
    out
}

#[test]
fn an_oversize_reply_fails_its_call_with_the_size_and_the_next_call_works() {
    for in_band_ids in [false, true] {
        let (mut vm, thread) = peer_with(bounded_session(in_band_ids, 4096), |name, id| {
            let reply = match name {
                // A value, an error quoting a long name; an escape in each, and an id of
                // several digits when ids are on.
                "query-qmp-schema" => json!({"return": [{"name": "a\"b".repeat(3000)}]}),
                "x-bad" => json!({"error": {"class": "CommandNotFound",
                    "desc": format!("The command {} has not been found", "n".repeat(9000))}}),
                other => json!({"return": other}),
            };
            let text = with_id(reply, id).to_string();
            Some(with_pauses(&format!("{text}\r\n")))
        });
        // Filler commands so that ids have two digits when they are sent.
        for _ in 0..10 {
            assert_eq!(vm.execute("fill", None).unwrap(), json!("fill"));
        }
        let schema_size = |id: &Value| {
            let reply = json!({"return": [{"name": "a\"b".repeat(3000)}]});
            with_id(reply, id).to_string().len() as u64
        };
        for round in 0..2 {
            let err = vm.execute("query-qmp-schema", None).unwrap_err();
            let Error::ReplyTooLarge {
                command,
                size,
                limit,
            } = &err
            else {
                panic!("in_band_ids {in_band_ids}: {err:?}");
            };
            assert_eq!(command, "query-qmp-schema");
            assert_eq!(*limit, 4096);
            // The id is the request number when ids are on: 12 + 2 * round.
            let id = if in_band_ids {
                json!(12 + 2 * round)
            } else {
                Value::Null
            };
            assert_eq!(*size, schema_size(&id), "in_band_ids {in_band_ids}");
            assert!(err.to_string().contains(&size.to_string()), "{err}");
            assert_eq!(
                vm.execute("query-status", None).unwrap(),
                json!("query-status")
            );
        }
        match vm.execute("x-bad", None).unwrap_err() {
            Error::ReplyTooLarge { command, size, .. } => {
                assert_eq!(command, "x-bad");
                assert!(size > 9000, "{size}");
            }
            other => panic!("{other:?}"),
        }
        assert!(vm.is_connected());
        assert_eq!(vm.execute("query-name", None).unwrap(), json!("query-name"));
        assert_eq!(vm.events_too_large(), 0);
        drop(vm);
        thread.join().unwrap();
    }
}

#[test]
fn an_oversize_event_is_counted_and_fails_nothing() {
    for in_band_ids in [false, true] {
        let (mut vm, thread) = peer_with(bounded_session(in_band_ids, 1024), |name, id| {
            let big = json!({"event": "BIG", "data": {"blob": "b".repeat(5000)},
                "timestamp": {"seconds": 1, "microseconds": 2}});
            let small = json!({"event": "SMALL",
                "timestamp": {"seconds": 3, "microseconds": 4}});
            Some(with_pauses(&format!(
                "{big}\r\n{small}\r\n{}\r\n",
                with_id(json!({"return": name}), id)
            )))
        });
        assert_eq!(
            vm.execute("query-status", None).unwrap(),
            json!("query-status")
        );
        assert_eq!(vm.events_too_large(), 1);
        let events = vm.take_events();
        assert_eq!(
            events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["SMALL"]
        );
        assert_eq!(vm.execute("query-name", None).unwrap(), json!("query-name"));
        assert_eq!(vm.events_too_large(), 2);
        assert!(vm.is_connected());
        drop(vm);
        thread.join().unwrap();
    }
}

#[test]
fn a_bad_command_name_is_refused_before_sending() {
    let (mut vm, thread) = peer(|name, id| {
        assert!(!name.contains(' '), "{name} was sent");
        Some(with_id(json!({"return": name}), id).to_string() + "\r\n")
    });
    let huge = "q".repeat(10 << 20);
    for bad in ["query status", "", huge.as_str()] {
        let err = vm.execute(bad, None).unwrap_err();
        let Error::InvalidArgument(message) = &err else {
            panic!("{err:?}");
        };
        assert!(message.contains("invalid QMP command name"), "{message}");
        assert!(message.len() < 300, "{message}");
        let err = vm
            .execute_oob(bad, None, Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    assert_eq!(vm.execute("query-name", None).unwrap(), json!("query-name"));
    drop(vm);
    thread.join().unwrap();
}
