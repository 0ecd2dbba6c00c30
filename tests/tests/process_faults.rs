//! Faults: bad options, missing binaries, QEMU killed or stopped mid-session, a malicious QMP
//! peer, and the owning process dying. Each must end in a typed error within its bound, never
//! in a hang or a panic, and never leave QEMU behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use qemu_machine_tests::support::{
    entries, none_config, process_exists, process_state, scratch, signal,
};
use qemu_process::{Error, Machine, MachineConfig};

#[test]
fn bad_option_is_a_launch_error_with_status_argv_and_message_within_a_second() {
    let mut config = none_config();
    config.arg("-no-such-option-qm");
    let start = Instant::now();
    let err = Machine::launch(&config).unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        Error::Launch { status, argv, log } => {
            assert_eq!(status.code(), Some(1), "{status}");
            assert!(argv.iter().any(|a| a == "-no-such-option-qm"), "{argv:?}");
            assert!(argv[0].to_string_lossy().ends_with("qemu-system-x86_64"));
            assert!(log.contains("-no-such-option-qm"), "{log}");
            assert!(log.contains("invalid option"), "{log}");
        }
        other => panic!("expected a launch error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("invalid option"), "{message}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
}

#[test]
fn missing_binary_is_named() {
    let config = MachineConfig::new("/nonexistent/qemu-system-x86_64");
    match Machine::launch(&config) {
        Err(Error::BinaryNotFound(path)) => {
            assert_eq!(
                path,
                std::path::Path::new("/nonexistent/qemu-system-x86_64")
            )
        }
        other => panic!("expected BinaryNotFound, got {other:?}"),
    }
    let config = MachineConfig::new("qemu-system-nosucharch");
    let err = Machine::launch(&config).unwrap_err();
    assert!(matches!(err, Error::BinaryNotFound(_)), "{err:?}");
    assert!(err.to_string().contains("qemu-system-nosucharch"), "{err}");
    // A missing wrapper is named too.
    let mut config = none_config();
    config.wrapper(["no-such-wrapper-qm", "--flag"]);
    match Machine::launch(&config) {
        Err(Error::BinaryNotFound(path)) => {
            assert_eq!(path, std::path::Path::new("no-such-wrapper-qm"))
        }
        other => panic!("expected BinaryNotFound, got {other:?}"),
    }
}

#[test]
fn a_wrapper_runs_qemu() {
    // `env` as the simplest wrapper: it sets a variable and execs QEMU.
    let mut config = none_config();
    config.wrapper(["env", "QM_WRAPPED=1"]);
    let mut vm = Machine::launch(&config).unwrap();
    assert!(vm.argv()[0].to_string_lossy().ends_with("/env"));
    assert_eq!(vm.argv()[1], "QM_WRAPPED=1");
    let pid = vm.pid().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(environ.split(|&b| b == 0).any(|var| var == b"QM_WRAPPED=1"));
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_program_that_never_greets_times_out_and_is_killed() {
    let scratch = scratch("never-greets");
    let fake = scratch.path().join("fake-qemu");
    std::fs::write(&fake, "#!/bin/sh\necho started >&2\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = MachineConfig::new(&fake);
    config
        .launch_timeout(Duration::from_millis(500))
        .temp_base_dir(scratch.path());
    let start = Instant::now();
    let err = Machine::launch(&config).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The fake QEMU was killed and reaped, and its temp dir removed.
    let leftovers: Vec<String> = entries(scratch.path())
        .into_iter()
        .filter(|e| e != "fake-qemu")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_program_killed_by_a_signal_during_launch_reports_the_signal() {
    let scratch = scratch("signal-launch");
    let fake = scratch.path().join("fake-qemu");
    std::fs::write(&fake, "#!/bin/sh\necho about to die\nkill -SEGV $$\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    match Machine::launch(&MachineConfig::new(&fake)) {
        Err(Error::Launch { status, log, .. }) => {
            assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}");
            assert_eq!(log, "about to die\n");
        }
        other => panic!("expected a launch error, got {other:?}"),
    }
}

#[test]
fn sigkilled_qemu_fails_the_next_execute_within_a_second() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    let pid = vm.pid().unwrap();
    vm.status().unwrap();
    signal(pid, libc::SIGKILL);
    let start = Instant::now();
    let err = vm.execute("query-status", None).unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        Error::Exited(status) => assert_eq!(status.signal(), Some(libc::SIGKILL)),
        Error::Disconnected => {}
        other => panic!("expected Exited or Disconnected, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let status = vm.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // Every later call fails the same way, at once.
    let err = vm.execute("query-status", None).unwrap_err();
    assert!(matches!(err, Error::Exited(_)), "{err:?}");
    assert_eq!(vm.shutdown(Duration::from_secs(1)).unwrap(), status);
}

#[test]
fn sigstopped_qemu_times_out_and_shutdown_kills_it_in_time() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    let pid = vm.pid().unwrap();
    signal(pid, libc::SIGSTOP);
    let start = Instant::now();
    let err = vm
        .execute_with_timeout("query-status", None, Duration::from_millis(500))
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert!(err.to_string().contains("query-status"), "{err}");

    let start = Instant::now();
    let err = vm.shutdown(Duration::from_secs(1)).unwrap_err();
    let elapsed = start.elapsed();
    match err {
        Error::NotGraceful { status } => assert_eq!(status.signal(), Some(libc::SIGKILL)),
        other => panic!("expected NotGraceful, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(vm.exit_status().is_some());
    assert!(!process_exists(pid) || process_state(pid) == Some('Z'));
}

#[test]
fn kill_is_immediate_and_drop_reaps() {
    let vm = Machine::launch(&none_config()).unwrap();
    let pid = vm.pid().unwrap();
    let temp = vm.temp_dir().unwrap().to_owned();
    drop(vm);
    assert!(
        !process_exists(pid),
        "QEMU {pid} left behind (state {:?})",
        process_state(pid)
    );
    assert!(!temp.exists());

    let mut vm = Machine::launch(&none_config()).unwrap();
    let status = vm.kill().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(vm.kill().unwrap(), status);
    assert!(vm.log().is_ok());
}

// ---- a fake QMP peer ----------------------------------------------------------------------

const GREETING: &str = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \
                        \"major\": 7}, \"package\": \"fake\"}, \"capabilities\": []}}\r\n";

/// Runs `script` as the QMP server on one end of a socketpair (in a thread) and attaches a
/// Machine to the other end. The script gets the stream after the greeting was sent.
fn fake_peer(
    script: impl FnOnce(&mut BufReader<UnixStream>) + Send + 'static,
) -> (Result<Machine, Error>, std::thread::JoinHandle<()>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        let mut reader = BufReader::new(theirs);
        let _ = reader.get_mut().write_all(GREETING.as_bytes());
        script(&mut reader);
    });
    let machine = Machine::attach_socket(OwnedFd::from(ours), Duration::from_secs(5));
    (machine, peer)
}

/// Reads one request line and returns its id.
fn read_request(reader: &mut BufReader<UnixStream>) -> Option<(String, serde_json::Value)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    Some((
        value["execute"].as_str().unwrap_or_default().to_owned(),
        value["id"].clone(),
    ))
}

/// Answers capability negotiation.
fn negotiate(reader: &mut BufReader<UnixStream>) {
    let (name, id) = read_request(reader).expect("qmp_capabilities");
    assert_eq!(name, "qmp_capabilities");
    let reply = serde_json::json!({"return": {}, "id": id});
    reader
        .get_mut()
        .write_all(format!("{reply}\r\n").as_bytes())
        .unwrap();
}

/// Negotiates, waits for one command, then sends `bytes` and optionally closes.
fn misbehave_after_one_command(bytes: Vec<u8>, close: bool) -> Error {
    let (machine, peer) = fake_peer(move |reader| {
        negotiate(reader);
        let _ = read_request(reader);
        let _ = reader.get_mut().write_all(&bytes);
        if close {
            let _ = reader.get_mut().shutdown(std::net::Shutdown::Both);
        } else {
            // Keep the connection open until the machine closes it.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        }
    });
    let mut vm = machine.unwrap();
    let start = Instant::now();
    let err = vm
        .execute_with_timeout("query-status", None, Duration::from_secs(5))
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(4), "{err:?}");
    // The connection is unusable from now on, and says why, at once.
    let again = vm.execute("query-status", None).unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    drop(vm);
    peer.join().unwrap();
    err
}

#[test]
fn garbage_from_the_peer_is_a_protocol_error() {
    let err = misbehave_after_one_command(b"this is not JSON\r\n".to_vec(), false);
    match err {
        Error::Protocol(qmp_proto::Error::Json { .. }) => {}
        other => panic!("expected a JSON protocol error, got {other:?}"),
    }
}

#[test]
fn an_oversize_reply_fails_only_its_command() {
    // A reply over the default 10 MiB bound (as QEMU's CommandNotFound quoting a huge name
    // would be) fails the command it answers, naming its size, and the next command works.
    const FILL: usize = 11 << 20;
    let (machine, peer) = fake_peer(|reader| {
        negotiate(reader);
        let _ = read_request(reader);
        let mut big = b"{\"return\": \"".to_vec();
        big.extend(std::iter::repeat_n(b'a', FILL));
        big.extend_from_slice(b"\"}\r\n");
        let _ = reader.get_mut().write_all(&big);
        let (name, _) = read_request(reader).unwrap();
        assert_eq!(name, "query-name");
        let _ = reader
            .get_mut()
            .write_all(b"{\"return\": {\"name\": \"vm0\"}}\r\n");
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let mut vm = machine.unwrap();
    match vm.execute("query-status", None) {
        Err(Error::ReplyTooLarge {
            command,
            size,
            limit,
        }) => {
            assert_eq!(command, "query-status");
            assert_eq!(size, FILL as u64 + 14);
            assert_eq!(limit, qmp_proto::DEFAULT_MAX_MESSAGE_SIZE);
        }
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }
    assert_eq!(
        vm.execute("query-name", None).unwrap(),
        serde_json::json!({"name": "vm0"})
    );
    assert!(vm.is_connected());
    drop(vm);
    peer.join().unwrap();
}

#[test]
fn a_truncated_message_is_a_protocol_error() {
    let err = misbehave_after_one_command(b"{\"return\": {\"stat".to_vec(), true);
    match err {
        Error::Protocol(qmp_proto::Error::Truncated { buffered }) => assert!(buffered > 0),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn an_error_without_id_answers_the_command_sent_without_id() {
    // In-band commands go without id (the default), and QEMU answers them in order: an error
    // without id is the reply to the oldest one in flight.
    let (machine, peer) = fake_peer(|reader| {
        negotiate(reader);
        let (_, id) = read_request(reader).unwrap();
        assert!(id.is_null(), "an in-band command sent with id {id}");
        let _ = reader
            .get_mut()
            .write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"who asked?\"}}\r\n");
        let _ = read_request(reader).unwrap();
        let _ = reader
            .get_mut()
            .write_all(b"{\"return\": {\"name\": \"vm0\"}}\r\n");
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let mut vm = machine.unwrap();
    match vm.execute("query-status", None) {
        Err(Error::Qmp(e)) => assert_eq!(e.desc, "who asked?"),
        other => panic!("expected the error reply, got {other:?}"),
    }
    assert_eq!(
        vm.execute("query-name", None).unwrap(),
        serde_json::json!({"name": "vm0"})
    );
    drop(vm);
    peer.join().unwrap();
}

#[test]
fn an_error_without_id_is_a_protocol_error() {
    // An error without id when no command waits for one (here right after the only command's
    // reply, in the same read): QEMU could not read a request.
    let (machine, peer) = fake_peer(|reader| {
        negotiate(reader);
        let _ = read_request(reader);
        let _ = reader.get_mut().write_all(
            b"{\"return\": {}}\r\n\
              {\"error\": {\"class\": \"GenericError\", \"desc\": \"who asked?\"}}\r\n",
        );
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let mut vm = machine.unwrap();
    assert_eq!(
        vm.execute("query-status", None).unwrap(),
        serde_json::json!({})
    );
    match vm.execute("query-status", None).unwrap_err() {
        Error::Protocol(qmp_proto::Error::Protocol(message)) => {
            assert!(
                message.contains("without id") && message.contains("who asked?"),
                "{message}"
            )
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    drop(vm);
    peer.join().unwrap();
}

#[test]
fn a_garbage_greeting_fails_the_attach() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        let mut theirs = theirs;
        let _ = theirs.write_all(b"\x00\x01 hello\r\n");
        let mut sink = Vec::new();
        let _ = theirs.read_to_end(&mut sink);
    });
    let err = Machine::attach_socket(OwnedFd::from(ours), Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    peer.join().unwrap();
}

#[test]
fn a_peer_that_closes_mid_command_is_disconnected_not_a_hang() {
    let (machine, peer) = fake_peer(|reader| {
        negotiate(reader);
        let _ = read_request(reader);
        // Close without answering.
    });
    let mut vm = machine.unwrap();
    let err = vm
        .execute_with_timeout("query-status", None, Duration::from_secs(5))
        .unwrap_err();
    assert!(matches!(err, Error::Disconnected), "{err:?}");
    peer.join().unwrap();
}

#[test]
fn replies_with_unknown_ids_and_events_in_between_are_handled() {
    let (machine, peer) = fake_peer(|reader| {
        negotiate(reader);
        let (_, id) = read_request(reader).unwrap();
        let out = format!(
            "{{\"return\": 1, \"id\": 999}}\r\n\
             {{\"event\": \"X-ODD\", \"data\": {{\"n\": 1}}, \
               \"timestamp\": {{\"seconds\": 1, \"microseconds\": 2}}}}\r\n\
             {{\"return\": {{\"status\": \"running\", \"running\": true}}, \"id\": {id}}}\r\n"
        );
        reader.get_mut().write_all(out.as_bytes()).unwrap();
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let mut vm = machine.unwrap();
    let reply = vm.execute("query-status", None).unwrap();
    assert_eq!(reply["status"], "running");
    let events = vm.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "X-ODD");
    assert_eq!(events[0].data["n"], 1);
    // Attached machines have no process: the process calls say so.
    assert!(matches!(vm.kill(), Err(Error::Unsupported(_))));
    assert!(matches!(
        vm.shutdown(Duration::from_secs(1)),
        Err(Error::Unsupported(_))
    ));
    assert_eq!(vm.pid(), None);
    drop(vm);
    peer.join().unwrap();
}
