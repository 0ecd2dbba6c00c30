//! The guest-agent client against a real qemu-ga run on the host (`qemu-ga -m unix-listen`,
//! with the commands that would change the host blocked): every typed call, the raw one, exec,
//! files; resynchronization after garbage either way and after an agent restarted in the
//! middle of a reply (through a relay that stands in for QEMU's virtio-serial port: one
//! persistent stream, an agent behind it that can die); reconnection by path; no agent at
//! all; and, with a fake agent for what qemu-ga never does, replies over the size bound, a
//! wrong token and broken base64.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use qemu_machine_tests::qga::HostAgent;
use qemu_machine_tests::support::{scratch, TempDir};
use qemu_process::guest::{IpAddressType, ShutdownMode};
use qemu_process::{Error, ExecCommand, GuestAgent};
use qmp_proto::guest::GuestGetHostName;
use serde_json::{json, Value};

const CALL: Duration = Duration::from_secs(30);
const CONNECT: Duration = Duration::from_secs(10);

/// A path in `dir` as a string (the agent's protocol carries text).
fn path_str(dir: &TempDir, name: &str) -> String {
    dir.path().join(name).to_str().unwrap().to_owned()
}

fn connect(agent: &HostAgent) -> GuestAgent {
    let mut client = GuestAgent::connect(&agent.socket, CONNECT).unwrap();
    client.set_timeout(CALL);
    client
}

fn agent_error(e: Error) -> qmp_proto::QmpError {
    match e {
        Error::GuestAgent { error, .. } => error,
        other => panic!("expected an error answer from the agent, got {other:?}"),
    }
}

#[test]
fn every_typed_call_against_qemu_ga() {
    let scratch = scratch("calls");
    let host = HostAgent::start(scratch.path());
    let mut client = connect(&host);
    assert!(client.is_connected());
    let mut guest = client.guest();

    guest.ping().unwrap();
    let info = guest.info().unwrap();
    assert!(info.version.starts_with("7."), "{info:?}");
    assert!(info.is_enabled("guest-exec"));
    assert!(!info.is_enabled("guest-shutdown"), "blocked on the host");

    let os = guest.osinfo().unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(os.kernel_release.as_deref(), Some(release.trim()));
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    let id = os_release
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .map(|v| v.trim_matches('"'));
    assert_eq!(os.id.as_deref(), id);

    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(guest.host_name().unwrap(), hostname.trim());
    assert_eq!(
        guest.command(&GuestGetHostName).unwrap().host_name,
        hostname.trim()
    );
    let interfaces = guest.network_interfaces().unwrap();
    let lo = interfaces.iter().find(|i| i.name == "lo").unwrap();
    assert!(lo.ip_addresses.iter().any(|a| a.ip_address == "127.0.0.1"
        && a.prefix == 8
        && a.ip_address_type == IpAddressType::Ipv4));

    // exec: stdin, stdout, stderr, exit code; the environment; a signal; a missing program.
    let out = guest
        .exec(
            &ExecCommand::new("/bin/sh")
                .args(["-c", "tr a-z A-Z; echo oops >&2; exit 7"])
                .input(b"shout\n".to_vec()),
            CALL,
        )
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b"SHOUT\n"[..], &b"oops\n"[..])
    );
    assert_eq!((out.exit_code, out.signal), (Some(7), None));
    assert!(!out.stdout_truncated && !out.stderr_truncated);
    let env = guest
        .exec(
            &ExecCommand::new("/usr/bin/env").env("QM_TEST", "a b"),
            CALL,
        )
        .unwrap();
    assert_eq!(env.stdout, b"QM_TEST=a b\n");
    assert!(env.success());
    let killed = guest
        .exec(
            &ExecCommand::new("/bin/sh").args(["-c", "kill -9 $$"]),
            CALL,
        )
        .unwrap();
    assert_eq!((killed.exit_code, killed.signal), (None, Some(9)));
    let quiet = guest
        .exec(
            &ExecCommand::new("echo")
                .arg("dropped")
                .capture_output(false),
            CALL,
        )
        .unwrap();
    assert!(quiet.stdout.is_empty() && quiet.success());
    let missing = agent_error(
        guest
            .exec(&ExecCommand::new("/no/such/program"), CALL)
            .unwrap_err(),
    );
    assert!(missing.desc.contains("/no/such/program"), "{missing:?}");

    // Output whose base64 is over the message bound: the status reply is skipped unread and
    // the call fails with its size (the agent reported the end, so the status is gone).
    match guest
        .exec(
            &ExecCommand::new("head").args(["-c", "9000000", "/dev/zero"]),
            CALL,
        )
        .unwrap_err()
    {
        Error::ReplyTooLarge { command, size, .. } => {
            assert_eq!(command, "guest-exec-status");
            assert!(size > 12_000_000, "{size}");
        }
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }
    guest.ping().unwrap();

    // A process that outlives its wait: a typed timeout, and it can still be collected.
    let pid = guest
        .exec_spawn(&ExecCommand::new("sleep").arg("600"))
        .unwrap();
    assert_eq!(guest.exec_status(pid).unwrap(), None);
    let err = guest
        .exec_wait(pid, Duration::from_millis(300))
        .unwrap_err();
    match &err {
        Error::Timeout { what, .. } => assert!(what.contains(&pid.to_string()), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    guest
        .exec(&ExecCommand::new("kill").arg(pid.to_string()), CALL)
        .unwrap();
    let ended = guest.exec_wait(pid, CALL).unwrap();
    assert_eq!(ended.signal, Some(15));
    // Reported once: the agent forgets the process.
    agent_error(guest.exec_status(pid).unwrap_err());

    // Files: open, write, flush, read in pieces, close; errors are the agent's.
    let path = path_str(&scratch, "file");
    let h = guest.file_open(&path, "w").unwrap();
    assert_eq!(guest.file_write(h, b"hello, agent").unwrap(), 12);
    guest.file_flush(h).unwrap();
    guest.file_close(h).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"hello, agent");
    let h = guest.file_open(&path, "r").unwrap();
    assert_eq!(guest.file_read(h, 5).unwrap(), (b"hello".to_vec(), false));
    assert_eq!(
        guest.file_read(h, 4096).unwrap(),
        (b", agent".to_vec(), true)
    );
    guest.file_close(h).unwrap();
    let stale = agent_error(guest.file_close(h).unwrap_err());
    assert!(stale.desc.contains("not been found"), "{stale:?}");
    let absent = agent_error(
        guest
            .file_open(&path_str(&scratch, "absent/x"), "r")
            .unwrap_err(),
    );
    assert!(absent.desc.contains("No such file"), "{absent:?}");

    // Copies, small (the 64 MiB one is guest_agent_copy.rs).
    let bytes: Vec<u8> = (0..=255u8).cycle().take(700_001).collect();
    assert_eq!(
        guest
            .copy_in(&mut &bytes[..], &path_str(&scratch, "in"))
            .unwrap(),
        700_001
    );
    assert!(std::fs::read(scratch.path().join("in")).unwrap() == bytes);
    let mut back = Vec::new();
    assert_eq!(
        guest
            .copy_out(&path_str(&scratch, "in"), &mut back)
            .unwrap(),
        700_001
    );
    assert!(back == bytes);
    assert_eq!(
        guest
            .copy_in(&mut &b""[..], &path_str(&scratch, "empty"))
            .unwrap(),
        0
    );
    assert_eq!(
        std::fs::metadata(scratch.path().join("empty"))
            .unwrap()
            .len(),
        0
    );
    let err = guest
        .copy_out(&path_str(&scratch, "absent"), &mut Vec::new())
        .unwrap_err();
    agent_error(err);

    // The raw call, and what it refuses before sending anything.
    let time = guest.execute("guest-get-time", None).unwrap();
    assert!(time.as_i64().unwrap() > 1_600_000_000_000_000_000, "{time}");
    let unknown = agent_error(guest.execute("guest-no-such", None).unwrap_err());
    assert_eq!(unknown.class.as_str(), "CommandNotFound");
    for bad in [
        guest.execute("bad name", None).unwrap_err(),
        guest.execute("guest-ping", Some(json!([1]))).unwrap_err(),
        guest.execute("guest-shutdown", None).unwrap_err(),
        guest.execute("guest-sync-delimited", None).unwrap_err(),
    ] {
        assert!(matches!(bad, Error::InvalidArgument(_)), "{bad:?}");
    }

    // guest-shutdown's error path (it is blocked here): the error answer, not the ping behind
    // it, decides; the next call is not confused by that ping's answer.
    let refused = agent_error(guest.shutdown(ShutdownMode::Powerdown).unwrap_err());
    assert!(refused.desc.contains("disabled"), "{refused:?}");
    guest.ping().unwrap();
    assert_eq!(guest.execute("guest-ping", None).unwrap(), json!({}));
}

/// One agent restarted behind a persistent stream (what a virtio-serial port is), and
/// garbage written either way: the client resynchronizes.
#[test]
fn garbage_and_a_restart_mid_reply_are_resynchronized() {
    let scratch = scratch("resync");
    let relay = Relay::start(HostAgent::start(scratch.path()));
    let mut client = GuestAgent::from_socket(relay.client_end()).unwrap();
    client.set_timeout(Duration::from_secs(3));
    let mut guest = client.guest();
    guest.ping().unwrap();

    // Garbage to the client between calls (half a reply, bytes that are not JSON): taken in
    // before the next request, which resynchronizes first.
    relay.to_client(b"{\"return\": {\"half\": \"way \x00\xc3 }]] nonsense");
    guest.ping().unwrap();
    assert!(!guest.host_name().unwrap().is_empty());

    // Garbage to the agent: it answers the mangled request with an error without id, which
    // loses that call's reply (a typed protocol error); the next call resynchronizes.
    relay.to_agent(b"{\"execute\": \"guest-pi");
    match guest.ping() {
        Err(Error::Protocol(e)) => assert!(e.to_string().contains("guest-ping"), "{e}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    guest.ping().unwrap();

    // The agent dies 100 kB into a 350 kB reply and a new one takes its place behind the same
    // stream: the call times out, the rest of the old reply never comes, and the next call
    // skips the partial message and synchronizes with the new agent.
    let big = scratch.path().join("big");
    std::fs::write(&big, vec![0x5a; 4 << 20]).unwrap();
    relay.cut_after(100_000);
    let err = guest
        .copy_out(big.to_str().unwrap(), &mut Vec::new())
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let restarted = relay.restarts();
    assert_eq!(restarted, 1);
    let mut again = client.guest().with_timeout(CALL);
    again.ping().unwrap();
    let mut back = Vec::new();
    assert_eq!(
        again.copy_out(big.to_str().unwrap(), &mut back).unwrap(),
        4 << 20
    );
    assert!(back.iter().all(|&b| b == 0x5a));
    drop(client);
    relay.stop();
}

/// Connected by path: an agent restarted between calls is reconnected to by the next call; one
/// killed during a call fails it with GuestAgentGone, and the next call reconnects.
#[test]
fn reconnects_by_path_after_the_agent_restarts() {
    let scratch = scratch("reconnect");
    let mut host = HostAgent::start(scratch.path());
    let mut client = connect(&host);
    client.guest().ping().unwrap();
    host.restart();
    client.guest().ping().unwrap();
    assert!(client.is_connected());

    let pid = host.pid().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    });
    let err = client
        .guest()
        .exec(&ExecCommand::new("sleep").arg("30"), CALL)
        .unwrap_err();
    killer.join().unwrap();
    assert!(matches!(err, Error::GuestAgentGone { .. }), "{err:?}");
    host.restart();
    let out = client
        .guest()
        .exec(&ExecCommand::new("echo").arg("back"), CALL)
        .unwrap();
    assert_eq!(out.stdout, b"back\n");
}

/// Nobody answers: a typed timeout that names the synchronization, never a hang; the same on
/// the next call; and a path nobody listens on is a typed timeout too.
#[test]
fn no_agent_is_a_typed_timeout() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut client = GuestAgent::from_socket(OwnedFd::from(ours)).unwrap();
    client.set_timeout(Duration::from_millis(500));
    for _ in 0..2 {
        match client.guest().ping().unwrap_err() {
            Error::Timeout { what, after } => {
                assert!(what.contains("guest-sync-delimited"), "{what}");
                assert_eq!(after, Duration::from_millis(500));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    // What reached the silent peer: two synchronizations, each after a 0xFF, nothing else.
    theirs.set_nonblocking(true).unwrap();
    let mut sent = Vec::new();
    let _ = (&theirs).read_to_end(&mut sent);
    assert_eq!(sent.iter().filter(|&&b| b == 0xFF).count(), 2);
    assert_eq!(
        String::from_utf8_lossy(&sent)
            .matches("guest-sync-delimited")
            .count(),
        2
    );
    assert!(!String::from_utf8_lossy(&sent).contains("guest-ping"));
    // An overall deadline wins over a longer call timeout.
    match client
        .guest()
        .with_timeout(Duration::from_secs(600))
        .with_deadline(Duration::from_millis(200))
        .copy_out("/anything", &mut Vec::new())
        .unwrap_err()
    {
        Error::Timeout { after, .. } => assert!(after <= Duration::from_millis(200), "{after:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }

    // A socket that accepts connections (the kernel's backlog) but whose owner never reads.
    let scratch = scratch("silent");
    let listener = UnixListener::bind(scratch.path().join("silent.sock")).unwrap();
    let mut silent = GuestAgent::connect(scratch.path().join("silent.sock"), CONNECT).unwrap();
    silent.set_timeout(Duration::from_millis(300));
    assert!(silent.guest().ping().unwrap_err().is_timeout());
    drop(listener);

    let err = GuestAgent::connect(
        scratch.path().join("nobody.sock"),
        Duration::from_millis(200),
    )
    .unwrap_err();
    match &err {
        Error::Timeout { what, .. } => assert!(what.contains("guest agent"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// What qemu-ga never does, from a fake agent: a reply over the message bound fails only its
/// call; a wrong token and broken base64 are protocol errors; the channel goes on.
#[test]
fn a_hostile_agent_is_bounded_and_refused() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fake = std::thread::spawn(move || fake_agent(theirs));
    let mut client = GuestAgent::from_socket(OwnedFd::from(ours)).unwrap();
    client.set_timeout(CALL);
    let mut guest = client.guest();

    // guest-file-read answered with 11 MiB: skipped unread, the call fails with its size.
    let err = guest.copy_out("/huge", &mut Vec::new()).unwrap_err();
    match err {
        Error::ReplyTooLarge {
            command,
            size,
            limit,
        } => {
            assert_eq!(command, "guest-file-read");
            assert!(size > 11 << 20, "{size}");
            assert_eq!(limit, 10 << 20);
        }
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }
    guest.ping().unwrap();

    let err = guest.copy_out("/bad-base64", &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(e) if e.to_string().contains("buf-b64")),
        "{err:?}"
    );
    let err = guest.copy_out("/short", &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(e) if e.to_string().contains("said it read 10")),
        "{err:?}"
    );
    guest.ping().unwrap();

    // A synchronization answered with another number.
    guest.execute("qm-fake-wrong-token-next", None).unwrap();
    let err = guest.sync().unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(e) if e.to_string().contains("instead of the token")),
        "{err:?}"
    );
    guest.ping().unwrap();
    drop(client);
    fake.join().unwrap();
}

// ---- a fake agent -------------------------------------------------------------------------

fn fake_agent(sock: UnixStream) {
    let mut out = sock.try_clone().unwrap();
    let mut reader = BufReader::new(sock);
    let mut line = Vec::new();
    let mut wrong_token = false;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let text: Vec<u8> = line.iter().copied().filter(|&b| b != 0xFF).collect();
        let request: Value = serde_json::from_slice(&text).unwrap();
        let id = request["id"].clone();
        let name = request["execute"].as_str().unwrap().to_owned();
        let args = &request["arguments"];
        let reply = |value: Value| {
            let mut v = serde_json::to_vec(&json!({"return": value, "id": id})).unwrap();
            v.push(b'\n');
            v
        };
        let bytes = match name.as_str() {
            "guest-sync-delimited" => {
                let mut token = args["id"].as_u64().unwrap();
                if std::mem::take(&mut wrong_token) {
                    token ^= 1;
                }
                let mut v = vec![0xFF];
                v.extend(reply(json!(token)));
                v
            }
            "qm-fake-wrong-token-next" => {
                wrong_token = true;
                reply(json!({}))
            }
            "guest-file-open" => {
                let handle = match args["path"].as_str().unwrap() {
                    "/huge" => 1,
                    "/bad-base64" => 2,
                    _ => 3,
                };
                reply(json!(handle))
            }
            "guest-file-read" => match args["handle"].as_i64().unwrap() {
                1 => {
                    reply(json!({"count": 8 << 20, "buf-b64": "A".repeat(11 << 20), "eof": false}))
                }
                2 => reply(json!({"count": 3, "buf-b64": "AA!A", "eof": true})),
                _ => reply(json!({"count": 10, "buf-b64": "AAAA", "eof": true})),
            },
            _ => reply(json!({})),
        };
        if out.write_all(&bytes).is_err() {
            return;
        }
    }
}

// ---- a relay standing in for QEMU's virtio-serial port -------------------------------------

enum Ctl {
    /// Written to the client, then acknowledged.
    ToClient(Vec<u8>, mpsc::Sender<()>),
    /// Written to the agent, then acknowledged.
    ToAgent(Vec<u8>, mpsc::Sender<()>),
    CutAfter(usize),
    Stop,
}

/// One persistent stream to the client (a socketpair, as QEMU's port gives the library),
/// relayed to a qemu-ga whose connection can be cut, the agent restarted and reconnected.
struct Relay {
    ctl: mpsc::Sender<Ctl>,
    done: mpsc::Receiver<u32>,
    client: std::sync::Mutex<Option<UnixStream>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(agent: HostAgent) -> Relay {
        let (client, relay_end) = UnixStream::pair().unwrap();
        let (ctl, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || relay(agent, relay_end, rx, done_tx));
        Relay {
            ctl,
            done,
            client: std::sync::Mutex::new(Some(client)),
            thread: Some(thread),
        }
    }

    fn client_end(&self) -> OwnedFd {
        OwnedFd::from(self.client.lock().unwrap().take().unwrap())
    }

    /// Writes `bytes` to the client and returns once they are in its socket.
    fn to_client(&self, bytes: &[u8]) {
        let (ack, acked) = mpsc::channel();
        self.ctl.send(Ctl::ToClient(bytes.to_vec(), ack)).unwrap();
        acked.recv_timeout(CALL).unwrap();
    }

    /// Writes `bytes` to the agent and returns once they are in its socket.
    fn to_agent(&self, bytes: &[u8]) {
        let (ack, acked) = mpsc::channel();
        self.ctl.send(Ctl::ToAgent(bytes.to_vec(), ack)).unwrap();
        acked.recv_timeout(CALL).unwrap();
    }

    /// After `n` more bytes from the agent, kill it, start a new one and reconnect.
    fn cut_after(&self, n: usize) {
        self.ctl.send(Ctl::CutAfter(n)).unwrap();
    }

    /// How many restarts happened since the last call (waits for the one under way).
    fn restarts(&self) -> u32 {
        self.done.recv_timeout(CALL).unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = self.ctl.send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn connect_retry(path: &Path) -> UnixStream {
    for _ in 0..500 {
        if let Ok(s) = UnixStream::connect(path) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("qemu-ga did not listen on {}", path.display());
}

fn relay(
    mut agent: HostAgent,
    client: UnixStream,
    ctl: mpsc::Receiver<Ctl>,
    done: mpsc::Sender<u32>,
) {
    let mut up = connect_retry(&agent.socket);
    let mut cut: Option<usize> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut client_w = client.try_clone().unwrap();
    let mut client_r = client;
    loop {
        while let Ok(c) = ctl.try_recv() {
            match c {
                Ctl::ToClient(b, ack) => {
                    client_w.write_all(&b).unwrap();
                    let _ = ack.send(());
                }
                Ctl::ToAgent(b, ack) => {
                    up.write_all(&b).unwrap();
                    let _ = ack.send(());
                }
                Ctl::CutAfter(n) => cut = Some(n),
                Ctl::Stop => return,
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: client_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: up.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structures for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 20) };
        if n <= 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let n = client_r.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return; // the client is gone
            }
            up.write_all(&buf[..n]).unwrap();
        }
        if fds[1].revents != 0 {
            let n = up.read(&mut buf).unwrap_or(0);
            let pass = cut.map_or(n, |left| left.min(n));
            client_w.write_all(&buf[..pass]).unwrap();
            match cut {
                Some(left) if pass == left => {
                    agent.restart();
                    up = connect_retry(&agent.socket);
                    cut = None;
                    let _ = done.send(1);
                }
                Some(left) => cut = Some(left - pass),
                None if n == 0 => {
                    up = connect_retry(&agent.socket);
                }
                None => {}
            }
        }
    }
}
