//! Attach mode (a QEMU we did not launch: unix path, long path, TCP, refused connections
//! retried, deadline), MachineSet, and driving machines from an external poll loop.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qemu_machine_tests::support::{self, none_config, process_exists, scratch};
use qemu_process::{AttachTarget, Error, Machine, MachineSet, RunState};
use serde_json::json;

/// Starts QEMU the plain way, with a QMP server of its own.
/// A QEMU this test spawned itself (the library only attaches to it): killed and reaped when
/// the test ends, also when an assertion fails first, so no QEMU outlives a failed test.
struct OwnQemu(Child);

impl Drop for OwnQemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_qemu_with_qmp(qmp: &str) -> OwnQemu {
    OwnQemu(
        Command::new(qemu_machine_tests::qemu_system_x86_64())
            .args(["-machine", "none", "-nodefaults", "-display", "none"])
            .args(["-qmp", qmp])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn wait_child(child: &mut OwnQemu, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            panic!("QEMU did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn attach_to_a_unix_socket_that_does_not_exist_yet() {
    let scratch = scratch("attach-unix");
    let path = scratch.path().join("qmp.sock");
    // Attach right away: the socket appears a little later, and refusals are retried.
    let mut child = spawn_qemu_with_qmp(&format!("unix:{},server=on,wait=off", path.display()));
    let mut vm = Machine::attach(AttachTarget::Unix(path.clone()), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vm.pid(), None);
    assert_eq!(vm.status().unwrap(), RunState::Running);
    vm.pause().unwrap();
    assert_eq!(
        vm.event_wait("STOP", None, Duration::from_secs(5))
            .unwrap()
            .name,
        "STOP"
    );
    // Descriptors can be passed over a unix socket.
    let file = tempfile_in(scratch.path());
    vm.send_fd(file.as_fd(), "f").unwrap();
    vm.execute("closefd", Some(json!({"fdname": "f"}))).unwrap();
    // No process of ours: stopping it is done with quit.
    assert!(matches!(
        vm.wait(Duration::ZERO),
        Err(Error::Unsupported(_))
    ));
    vm.execute("quit", None).unwrap();
    assert!(wait_child(&mut child, Duration::from_secs(10)).success());
    // The connection closed with QEMU.
    let err = vm.execute("query-status", None).unwrap_err();
    assert!(matches!(err, Error::Disconnected), "{err:?}");
}

fn tempfile_in(dir: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("passed"))
        .unwrap()
}

#[test]
fn attach_over_tcp() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = spawn_qemu_with_qmp(&format!("tcp:127.0.0.1:{port},server=on,wait=off"));
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut vm = Machine::attach(AttachTarget::Tcp(addr), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vm.status().unwrap(), RunState::Running);
    let file = tempfile_in(&std::env::temp_dir());
    match vm.send_fd(file.as_fd(), "f") {
        Err(Error::Unsupported(what)) => assert!(what.contains("TCP"), "{what}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // Still usable after the refused fd passing.
    assert_eq!(vm.status().unwrap(), RunState::Running);
    vm.execute("quit", None).unwrap();
    assert!(wait_child(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn attach_reaches_a_socket_path_longer_than_sun_path() {
    let scratch = scratch("attach-long");
    let mut dir = scratch.path().to_path_buf();
    while dir.as_os_str().len() < 150 {
        dir.push("a-rather-long-directory-name");
    }
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("qmp.sock");
    assert!(path.as_os_str().len() > 108);
    // Bind through the directory's descriptor (a path this long cannot be bound directly),
    // and serve a minimal QMP peer.
    let dir_file = std::fs::File::open(&dir).unwrap();
    let short = format!(
        "/proc/self/fd/{}/qmp.sock",
        std::os::fd::AsRawFd::as_raw_fd(&dir_file)
    );
    let listener = UnixListener::bind(&short).unwrap();
    let peer = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        reader
            .get_mut()
            .write_all(
                b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \
                  \"package\": \"\"}, \"capabilities\": []}}\r\n",
            )
            .unwrap();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let request: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
            let reply = json!({"return": {"echo": request["execute"]}, "id": request["id"]});
            reader
                .get_mut()
                .write_all(format!("{reply}\r\n").as_bytes())
                .unwrap();
            line.clear();
        }
    });
    let mut vm = Machine::attach(AttachTarget::Unix(path), Duration::from_secs(10)).unwrap();
    assert_eq!(
        vm.execute("query-name", None).unwrap(),
        json!({"echo": "query-name"})
    );
    drop(vm);
    peer.join().unwrap();
}

#[test]
fn attach_gives_up_at_its_deadline() {
    let scratch = scratch("attach-none");
    let start = Instant::now();
    let err = Machine::attach(
        AttachTarget::Unix(scratch.path().join("nobody-listens.sock")),
        Duration::from_millis(300),
    )
    .unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
    // A socket file nobody accepts on: refused, retried, then the same timeout.
    let path = scratch.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    let err = Machine::attach(AttachTarget::Unix(path), Duration::from_millis(200)).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[test]
fn a_machine_set_launches_together_and_reports_events_from_any() {
    let configs = vec![none_config(), none_config(), none_config()];
    let mut set = MachineSet::launch(&configs, Duration::from_secs(30)).unwrap();
    assert_eq!(set.len(), 3);
    let pids: Vec<u32> = set.iter().map(|m| m.pid().unwrap()).collect();
    set.get_mut(1).unwrap().pause().unwrap();
    assert_eq!(
        set.next_event(Duration::from_secs(5))
            .map(|(i, e)| (i, e.name))
            .unwrap(),
        (1, "STOP".to_owned())
    );
    // Events of several machines, taken in turn.
    set.get_mut(2).unwrap().pause().unwrap();
    set.get_mut(0).unwrap().pause().unwrap();
    set.get_mut(1).unwrap().resume().unwrap();
    let mut seen: Vec<(usize, String)> = (0..3)
        .map(|_| {
            let (i, e) = set.next_event(Duration::from_secs(5)).unwrap();
            (i, e.name)
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [(0, "STOP".into()), (1, "RESUME".into()), (2, "STOP".into())]
    );
    let err = set.next_event(Duration::from_millis(100)).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    for result in set.shutdown_all(Duration::from_secs(10)) {
        assert!(result.unwrap().success());
    }
    // Events from the quit are there, and then nothing can come any more.
    let mut shutdowns = 0;
    loop {
        match set.next_event(Duration::from_secs(5)) {
            Ok((_, e)) => {
                assert_eq!(e.name, "SHUTDOWN");
                shutdowns += 1;
            }
            Err(Error::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(shutdowns, 3);
    drop(set);
    for pid in pids {
        assert!(!process_exists(pid));
    }
}

#[test]
fn a_machine_set_executes_on_every_machine_at_once() {
    let configs = vec![none_config(), none_config(), none_config()];
    let mut set = MachineSet::launch(&configs, Duration::from_secs(30)).unwrap();
    let statuses = |replies: Vec<Result<serde_json::Value, Error>>| -> Vec<String> {
        replies
            .into_iter()
            .map(|r| match r {
                Ok(v) => v["status"].as_str().unwrap().to_owned(),
                Err(e) if e.is_timeout() => "timeout".to_owned(),
                Err(e) => format!("error: {e}"),
            })
            .collect()
    };
    // Replies in index order, each for its own machine.
    set.get_mut(1).unwrap().pause().unwrap();
    assert_eq!(
        statuses(set.execute_all("query-status", None, Duration::from_secs(10))),
        ["running", "paused", "running"]
    );
    // A machine that does not answer in time fails alone; its late reply is discarded.
    let stuck = set.get(2).unwrap().pid().unwrap();
    support::signal(stuck, libc::SIGSTOP);
    assert_eq!(
        statuses(set.execute_all("query-status", None, Duration::from_millis(500))),
        ["running", "paused", "timeout"]
    );
    support::signal(stuck, libc::SIGCONT);
    set.get_mut(0).unwrap().pause().unwrap();
    assert_eq!(
        statuses(set.execute_all("query-status", None, Duration::from_secs(10))),
        ["paused", "paused", "running"]
    );
    // Arguments go to every machine; an error reply is that machine's alone.
    let replies = set.execute_all(
        "qom-get",
        Some(json!({"path": "/machine", "property": "type"})),
        Duration::from_secs(10),
    );
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    // A machine that is gone fails with its exit; the others answer.
    let gone = set.get(0).unwrap().pid().unwrap();
    support::signal(gone, libc::SIGKILL);
    set.get_mut(0)
        .unwrap()
        .wait(Duration::from_secs(10))
        .unwrap();
    let replies = set.execute_all("query-status", None, Duration::from_secs(10));
    assert!(
        matches!(replies[0], Err(Error::Exited(_))),
        "{:?}",
        replies[0]
    );
    assert!(replies[1].is_ok() && replies[2].is_ok(), "{replies:?}");
    // The events of the commands above were kept, and come out of next_event.
    let mut stops = Vec::new();
    while let Ok((i, e)) = set.next_event(Duration::from_millis(200)) {
        assert_eq!(e.name, "STOP");
        stops.push(i);
    }
    stops.sort();
    assert_eq!(stops, [0, 1]);
    drop(set);
}

#[test]
fn a_machine_set_takes_kept_events_in_turn() {
    let configs = vec![none_config(), none_config()];
    let mut set = MachineSet::launch(&configs, Duration::from_secs(30)).unwrap();
    // Machine 0 keeps six events, machine 1 two: taking one from each in turn.
    for _ in 0..3 {
        set.get_mut(0).unwrap().pause().unwrap();
        set.get_mut(0).unwrap().resume().unwrap();
    }
    for vm in set.iter_mut().skip(1) {
        vm.pause().unwrap();
        vm.resume().unwrap();
    }
    let order: Vec<(usize, String)> = (0..8)
        .map(|_| {
            let (i, e) = set.next_event(Duration::from_secs(5)).unwrap();
            (i, e.name)
        })
        .collect();
    let machines: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(machines, [0, 1, 0, 1, 0, 0, 0, 0], "{order:?}");
    // Each machine's events in the order they came.
    for m in 0..2 {
        let names: Vec<&str> = order
            .iter()
            .filter(|(i, _)| *i == m)
            .map(|(_, n)| n.as_str())
            .collect();
        assert!(
            names.chunks(2).all(|p| p == ["STOP", "RESUME"]),
            "{m}: {names:?}"
        );
    }
    assert!(set
        .next_event(Duration::from_millis(100))
        .unwrap_err()
        .is_timeout());
}

#[test]
fn a_failing_member_fails_the_set_and_nothing_is_left_running() {
    // Tag the good members so that they can be told apart from other tests' QEMUs.
    let mut good = none_config();
    good.args(["-name", "qm-set-failure-test"]);
    let mut bad = good.clone();
    bad.arg("-no-such-option-qm");
    let configs = vec![good.clone(), bad, good];
    let before = std::time::SystemTime::now();
    match MachineSet::launch(&configs, Duration::from_secs(30)) {
        Err(Error::InSet { index, source }) => {
            assert_eq!(index, 1);
            assert!(matches!(*source, Error::Launch { .. }), "{source:?}");
        }
        other => panic!("expected InSet, got {other:?}"),
    }
    assert!(before.elapsed().unwrap() < Duration::from_secs(10));
    // The two good members were killed when the set was dropped: no child of ours with their
    // tag is left running.
    let ours = std::process::id().to_string();
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.to_owned();
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (ppid == ours && cmdline.contains("qm-set-failure-test")).then_some(cmdline)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn machines_can_be_driven_from_an_external_poll() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    let sources = vm.poll_sources();
    assert!(sources.qmp.is_some() && sources.child.is_some());
    assert_eq!(sources.console, None);
    // SIGTERM makes QEMU report SHUTDOWN and exit on its own; wait for that in our own poll().
    support::signal(vm.pid().unwrap(), libc::SIGTERM);
    let start = Instant::now();
    while vm.exit_status().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "no exit seen");
        let mut pfd = libc::pollfd {
            fd: sources.poll,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 1000) };
        assert!(ready >= 0);
        vm.process_io().unwrap();
    }
    assert!(vm.exit_status().unwrap().success());
    // process_io took everything in: the I/O-free taker sees the event.
    let events = vm.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].data["reason"], json!("host-signal"));
    assert_eq!(vm.poll_sources().child, None);
    assert_eq!(vm.poll_sources().qmp, None);
}
