//! QMP commands with and without ids against a real QEMU: replies to in-band commands sent
//! without id are matched by order, out-of-band ones by id, also when many are in flight.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use qemu_machine_tests::support::{none_config, scratch, TempDir};
use qemu_process::{Error, Machine};
use qmp_proto::{ErrorClass, Request, RequestId, Session, SessionOptions};
use serde_json::{json, Value};

/// What one command of a burst should get back.
#[derive(Debug)]
enum Expect {
    Status,
    Text(&'static str),
    Error(ErrorClass),
}

/// A burst of in-band commands: query-status, HMP `print` with distinct outputs, and failing
/// commands in the middle.
fn burst() -> Vec<(&'static str, Option<Value>, Expect)> {
    let print = |expr: &str| Some(json!({"command-line": format!("print {expr}")}));
    vec![
        ("query-status", None, Expect::Status),
        ("human-monitor-command", print("1"), Expect::Text("0x1\r\n")),
        ("human-monitor-command", print("2"), Expect::Text("0x2\r\n")),
        (
            "no-such-command",
            None,
            Expect::Error(ErrorClass::CommandNotFound),
        ),
        ("human-monitor-command", print("3"), Expect::Text("0x3\r\n")),
        ("query-status", None, Expect::Status),
        (
            "device_del",
            Some(json!({"id": "nic9"})),
            Expect::Error(ErrorClass::DeviceNotFound),
        ),
        (
            "human-monitor-command",
            print("0x10+4"),
            Expect::Text("0x14\r\n"),
        ),
        ("human-monitor-command", print("5"), Expect::Text("0x5\r\n")),
        ("query-status", None, Expect::Status),
        ("human-monitor-command", print("6"), Expect::Text("0x6\r\n")),
        ("human-monitor-command", print("7"), Expect::Text("0x7\r\n")),
    ]
}

fn check(reply: Result<Value, qmp_proto::ReplyError>, expect: &Expect, what: &str) {
    match (expect, reply) {
        (Expect::Status, Ok(value)) => assert_eq!(value["status"], "running", "{what}: {value}"),
        (Expect::Text(text), Ok(value)) => assert_eq!(value, json!(text), "{what}"),
        (Expect::Error(class), Err(qmp_proto::ReplyError::Qmp(error))) => {
            assert_eq!(&error.class, class, "{what}: {error}")
        }
        (expect, reply) => panic!("{what}: expected {expect:?}, got {reply:?}"),
    }
}

/// A QEMU with a second QMP monitor on a unix socket, which the test drives with a
/// `qmp_proto::Session` of its own so that it can put many commands in flight at once.
struct SecondMonitor {
    _vm: Machine,
    _dir: TempDir,
    stream: UnixStream,
    /// Everything QEMU was sent on the second monitor.
    wire: Vec<u8>,
}

impl SecondMonitor {
    fn launch(tag: &str) -> SecondMonitor {
        let dir = scratch(tag);
        let path = dir.path().join("qmp.sock");
        let mut config = none_config();
        config
            .arg("-chardev")
            .arg(format!(
                "socket,id=qmp2,path={},server=on,wait=off",
                path.display()
            ))
            .args(["-mon", "chardev=qmp2,mode=control"]);
        let vm = Machine::launch(&config).unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        SecondMonitor {
            _vm: vm,
            _dir: dir,
            stream,
            wire: Vec::new(),
        }
    }

    /// Writes what the session holds, then reads and feeds replies until `done`.
    fn run(&mut self, session: &mut Session, mut done: impl FnMut(&Session) -> bool) {
        let mut buf = [0u8; 4096];
        loop {
            let out = session.transmit().to_vec();
            if !out.is_empty() {
                self.stream.write_all(&out).unwrap();
                self.wire.extend_from_slice(&out);
                session.advance_transmit(out.len());
            }
            if done(session) {
                return;
            }
            let n = self
                .stream
                .read(&mut buf)
                .expect("QEMU answers within 20 s");
            assert!(n > 0, "QEMU closed the second monitor");
            session.receive(&buf[..n]).unwrap();
        }
    }

    /// The requests sent so far, decoded.
    fn sent(&self) -> Vec<Request> {
        let mut decoder = qmp_proto::Decoder::new();
        decoder.feed(&self.wire);
        std::iter::from_fn(|| decoder.next_value().unwrap())
            .map(|v| Request::from_value(v).unwrap())
            .collect()
    }
}

#[test]
fn a_pipelined_burst_gets_each_command_its_own_reply_with_and_without_ids() {
    for in_band_ids in [false, true] {
        let mut monitor = SecondMonitor::launch(&format!("ids-burst-{in_band_ids}"));
        let mut session = Session::new(SessionOptions {
            oob: true,
            in_band_ids,
            ..SessionOptions::default()
        });
        monitor.run(&mut session, Session::is_ready);
        assert!(
            session.oob_enabled(),
            "QEMU 7.2 offers oob on a socket monitor"
        );

        // Twelve in-band commands at once (eight go out, four wait for slots), with two
        // out-of-band commands among them whose replies overtake the in-band ones.
        let commands = burst();
        let mut issued: Vec<(RequestId, &Expect, String)> = Vec::new();
        let mut oob = Vec::new();
        for (i, (name, arguments, expect)) in commands.iter().enumerate() {
            let id = session.execute(name, arguments.clone()).unwrap();
            issued.push((id, expect, format!("#{i} {name} {arguments:?}")));
            if i == 2 || i == 6 {
                oob.push(session.execute_oob("migrate-pause", None).unwrap());
            }
        }
        assert_eq!(session.in_flight(), 8);
        assert_eq!(session.queued(), 4);
        monitor.run(&mut session, |s| s.pending() == 0);

        for (id, expect, what) in &issued {
            check(session.take_reply(*id).unwrap(), expect, what);
        }
        for id in oob {
            let error = session.take_reply(id).unwrap().unwrap_err();
            let error = error.qmp().expect("an error reply from QEMU");
            assert_eq!(error.class, ErrorClass::GenericError);
            assert!(error.desc.contains("postcopy"), "{error}");
        }

        // On the wire: ids on every command, or only on the exec-oob ones.
        let sent = monitor.sent();
        assert_eq!(sent.len(), 1 + commands.len() + 2);
        for request in &sent {
            let expected = request.oob || in_band_ids;
            assert_eq!(request.id.is_some(), expected, "{request:?}");
        }
    }
}

#[test]
fn commands_given_up_on_do_not_take_the_next_ones_replies() {
    for qmp_ids in [false, true] {
        let mut config = none_config();
        config.qmp_ids(qmp_ids);
        let mut vm = Machine::launch(&config).unwrap();
        assert!(vm.oob_enabled());
        // A zero timeout sends the command and gives up unless the reply is there at once:
        // the machine keeps the rest of the burst in flight and discards late replies.
        let mut answered = 0;
        for n in 0..10 {
            let arguments = json!({"command-line": format!("print {n}")});
            match vm.execute_with_timeout("human-monitor-command", Some(arguments), Duration::ZERO)
            {
                Ok(value) => {
                    answered += 1;
                    // HMP prints with C's `%#x`: 0 is "0", not "0x0".
                    let printed = if n == 0 {
                        "0".to_owned()
                    } else {
                        format!("{n:#x}")
                    };
                    assert_eq!(value, json!(format!("{printed}\r\n")));
                }
                Err(e) => assert!(e.is_timeout(), "{e:?}"),
            }
        }
        // An out-of-band command while in-band replies may still be coming: matched by id.
        match vm.execute_oob("migrate-pause", None, Duration::from_secs(20)) {
            Err(Error::Qmp(e)) => assert_eq!(e.class, ErrorClass::GenericError, "{e}"),
            other => panic!("migrate-pause: {other:?}"),
        }
        // Whatever was still in flight, each later command gets its own reply.
        for n in [100, 101, 102] {
            let arguments = json!({"command-line": format!("print {n}")});
            assert_eq!(
                vm.execute("human-monitor-command", Some(arguments))
                    .unwrap(),
                json!(format!("{n:#x}\r\n")),
                "qmp_ids {qmp_ids}, {answered} of the burst answered in time"
            );
        }
        match vm.execute("device_del", Some(json!({"id": "nic9"}))) {
            Err(Error::Qmp(e)) => assert_eq!(e.class, ErrorClass::DeviceNotFound, "{e}"),
            other => panic!("device_del: {other:?}"),
        }
        assert_eq!(vm.status().unwrap(), qemu_process::RunState::Running);
        vm.shutdown(Duration::from_secs(20)).unwrap();
    }
}
