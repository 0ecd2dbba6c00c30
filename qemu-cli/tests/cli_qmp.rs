//! `qemu-machine qmp` against a real QEMU: scripts from a pipe (a launched VM, and a running
//! QEMU's socket), error replies and the exit code, and the interactive shell on a pty.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use qemu_machine_tests::support::{run_deadline, scratch, show, wait_deadline};
use serde_json::Value;

/// Every JSON value in `text`, in order.
fn values(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not a stream of JSON values ({e}):\n{text}"))
}

fn run_script(args: &[&str], script: &str) -> std::process::Output {
    let mut c = cmd(args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // A command that fails before reading its input (it cannot connect) closes the pipe
    // first: that is its answer, which the assertions look at, not a failure to write.
    match child.stdin.take().unwrap().write_all(script.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing the script: {e}"),
        _ => {}
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).unwrap();
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).unwrap();
        v
    });
    let status = wait_deadline(&mut child, Duration::from_secs(60), "qmp script");
    std::process::Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

#[test]
fn script_on_a_launched_vm() {
    require_qemu();
    let script = "\
# a comment, then commands in both forms
query-status
stop
{\"execute\": \"query-status\"}
cont
human-monitor-command command-line='info version'
";
    let out = run_script(&["qmp", "--accel", "tcg", "--compact"], script);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().count(),
        values(&stdout).len(),
        "--compact: one value per line\n{stdout}"
    );
    let vals = values(&stdout);
    let replies: Vec<&Value> = vals.iter().filter(|v| v.get("event").is_none()).collect();
    assert_eq!(replies.len(), 5, "{stdout}");
    assert_eq!(replies[0]["return"]["status"], "running", "{stdout}");
    assert_eq!(replies[1]["return"], serde_json::json!({}), "{stdout}");
    assert_eq!(replies[2]["return"]["status"], "paused", "{stdout}");
    assert!(
        replies[4]["return"].as_str().unwrap().starts_with("7."),
        "{stdout}"
    );
    let events: Vec<&str> = vals
        .iter()
        .filter_map(|v| v.get("event").and_then(Value::as_str))
        .collect();
    assert!(
        events.contains(&"STOP") && events.contains(&"RESUME"),
        "{stdout}"
    );
    // The launched VM was shut down at the end of the script.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("QEMU exited"), "{}", show(&out));
}

#[test]
fn error_replies_and_bad_lines_give_exit_code_1() {
    require_qemu();
    let script = "no-such-command\nquery-status junk\nquery-name\n";
    let out = run_script(&["qmp", "--accel", "tcg", "--no-events"], script);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let vals = values(&stdout);
    assert_eq!(vals.len(), 2, "{stdout}");
    assert_eq!(vals[0]["error"]["class"], "CommandNotFound", "{stdout}");
    assert!(vals[1].get("return").is_some(), "{stdout}");
    assert!(
        stdout.contains("\n  "),
        "pretty-printed by default: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2: \"junk\" is not key=value"),
        "{}",
        show(&out)
    );
}

#[test]
fn script_on_a_running_qemus_socket_then_quit() {
    require_qemu();
    let scratch = scratch("qmp-sock");
    let sock = scratch.path().join("qmp.sock");
    let mut qemu = Command::new(qemu_machine_tests::qemu_system_x86_64())
        .args(["-machine", "none", "-nodefaults", "-display", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock_arg = sock.display().to_string();
    // The socket appears shortly after QEMU starts; with --wait, `qmp --socket` retries until
    // it is there.
    let out = run_script(
        &["qmp", "--socket", &sock_arg, "--compact", "--wait", "30s"],
        "query-version\nquit\n",
    );
    let status = wait_deadline(&mut qemu, Duration::from_secs(30), "QEMU after quit");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(status.success(), "QEMU exited by quit: {status:?}");
    let vals = values(&String::from_utf8(out.stdout).unwrap());
    let replies: Vec<&Value> = vals.iter().filter(|v| v.get("event").is_none()).collect();
    assert_eq!(replies[0]["return"]["qemu"]["major"], 7);
    assert_eq!(replies[1]["return"], serde_json::json!({}));

    // After QEMU is gone, connecting fails with one clear line and exit code 1.
    let out = run_script(&["qmp", "--socket", &sock_arg], "query-status\n");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("qemu-machine: error: cannot connect to"),
        "{stderr}"
    );
}

#[test]
fn socket_and_vm_flags_do_not_mix() {
    let out = run_deadline(
        cmd(["qmp", "--socket", "/tmp/x.sock", "-m", "1G"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--socket connects to a running QEMU"));
}

#[test]
fn interactive_shell_on_a_pty() {
    require_qemu();
    let scratch = scratch("qmp-tty");
    let history = scratch.path().join("history");
    let history_arg = history.display().to_string();
    let mut pty = pty(["qmp", "--accel", "tcg", "--history", &history_arg]);
    let at = pty.expect_from(0, "(QEMU) ", Duration::from_secs(60));
    // Tab completes a unique command name.
    pty.write(b"query-stat\tus\r");
    let at = pty.expect_from(at, "\"status\": \"running\"", Duration::from_secs(30));
    let at = pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    pty.write(b"stop\r");
    // The STOP event is shown, then the reply, then a new prompt.
    let at = pty.expect_from(at, "\"event\": \"STOP\"", Duration::from_secs(30));
    let at = pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    pty.write(b"bogus\r");
    let at = pty.expect_from(at, "CommandNotFound", Duration::from_secs(30));
    pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    pty.write(b"\x04");
    let status = pty.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "a command failed: {}", pty.text());
    assert_ne!(pty.lflags() & libc::ICANON, 0, "terminal restored");
    let saved = std::fs::read_to_string(&history).unwrap();
    assert_eq!(saved, "query-status\nstop\nbogus\n");
    // Created owner-only: QMP commands may carry secrets.
    let mode = std::fs::metadata(&history).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "history created with mode {mode:o}");
}

#[test]
fn a_history_file_open_to_others_is_made_private_and_said_so() {
    require_qemu();
    let scratch = scratch("qmp-history-mode");
    let history = scratch.path().join("history");
    std::fs::write(&history, "set_password protocol=vnc password=secret\n").unwrap();
    std::fs::set_permissions(&history, std::fs::Permissions::from_mode(0o644)).unwrap();
    let history_arg = history.display().to_string();
    let mut pty = pty(["qmp", "--accel", "tcg", "--history", &history_arg]);
    let at = pty.expect_from(0, "(QEMU) ", Duration::from_secs(60));
    // Restricted when loaded, before anything else happens.
    let mode = std::fs::metadata(&history).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o} while the shell runs");
    pty.write(b"query-status\r");
    let at = pty.expect_from(at, "\"status\": \"running\"", Duration::from_secs(30));
    pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    pty.write(b"\x04");
    let status = pty.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", pty.text());
    let text = pty.text();
    assert!(
        text.contains("was open to others (mode 0644); its mode is now 0600"),
        "{text}"
    );
    let mode = std::fs::metadata(&history).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o} after saving");
    assert_eq!(
        std::fs::read_to_string(&history).unwrap(),
        "set_password protocol=vnc password=secret\nquery-status\n"
    );
}

/// The names of the dirty bitmaps of block node `n0` in a `query-named-block-nodes` reply.
fn bitmaps(reply: &Value) -> Vec<String> {
    let mut names: Vec<String> = reply["return"][0]["dirty-bitmaps"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|b| b["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_transaction_is_sent_as_one_atomic_command() {
    require_qemu();
    let scratch = scratch("qmp-trans");
    let log = scratch.path().join("qmp.log");
    let script = "\
blockdev-add driver=null-co node-name=n0
transaction(
block-dirty-bitmap-add node=n0 name=b0
abort
)
query-named-block-nodes flat=true
transaction(
block-dirty-bitmap-add node=n0 name=b1
{\"type\": \"block-dirty-bitmap-add\", \"data\": {\"node\": \"n0\", \"name\": \"b2\"}} )
query-named-block-nodes flat=true
transaction(
block-dirty-bitmap-add node=n0 name=b3
abort junk
)
query-named-block-nodes flat=true
";
    let log_arg = log.display().to_string();
    let out = run_script(
        &[
            "qmp",
            "-v",
            "--accel",
            "tcg",
            "--compact",
            "--no-events",
            "-l",
            &log_arg,
        ],
        script,
    );
    // The invalid transaction makes the exit code 1.
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let vals = values(&stdout);
    // -v: each request is printed before its reply.
    let requests: Vec<&Value> = vals.iter().filter(|v| v.get("execute").is_some()).collect();
    let replies: Vec<&Value> = vals.iter().filter(|v| v.get("execute").is_none()).collect();
    let names: Vec<&str> = requests
        .iter()
        .map(|r| r["execute"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "blockdev-add",
            "transaction",
            "query-named-block-nodes",
            "transaction",
            "query-named-block-nodes",
            "query-named-block-nodes"
        ],
        "no action was run on its own: {stdout}"
    );
    assert_eq!(
        requests[1]["arguments"]["actions"],
        serde_json::json!([
            {"type": "block-dirty-bitmap-add", "data": {"node": "n0", "name": "b0"}},
            {"type": "abort", "data": {}}
        ])
    );
    // Atomic: the aborted transaction added nothing; the good one added both bitmaps; the
    // invalid one was never sent.
    assert_eq!(replies[1]["error"]["class"], "GenericError", "{stdout}");
    assert!(bitmaps(replies[2]).is_empty(), "{stdout}");
    assert_eq!(replies[3]["return"], serde_json::json!({}), "{stdout}");
    assert_eq!(bitmaps(replies[4]), ["b1", "b2"], "{stdout}");
    assert_eq!(bitmaps(replies[5]), ["b1", "b2"], "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 13: \"junk\" is not key=value; the transaction will not be sent"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 14: transaction not sent: an action was invalid"),
        "{stderr}"
    );
    // -l: every request and reply, one JSON value per line, in a file only its owner reads.
    assert_eq!(mode(&log), 0o600);
    let logged = std::fs::read_to_string(&log).unwrap();
    let logged: Vec<Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), 12, "{logged:?}");
    assert_eq!(logged[2], *requests[1]);
    assert_eq!(logged[3], *replies[1]);
}

#[test]
fn a_missing_or_wrong_socket_fails_at_once_with_the_system_error() {
    let scratch = scratch("qmp-nosock");
    let missing = scratch.path().join("missing.sock");
    let file = scratch.path().join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let stale = scratch.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let p = |p: &std::path::Path| p.display().to_string();
    for (args, needle) in [
        (
            vec!["qmp".to_string(), "--socket".into(), p(&missing)],
            "No such file or directory (os error 2)",
        ),
        (
            vec!["qmp".to_string(), "--socket".into(), p(&file)],
            "not a socket",
        ),
        (
            vec!["qmp".to_string(), "--socket".into(), p(&stale)],
            "Connection refused (os error 111)",
        ),
        // Waiting does not make a file a socket.
        (
            vec![
                "qmp".to_string(),
                "--socket".into(),
                p(&file),
                "--wait".into(),
                "1m".into(),
            ],
            "not a socket",
        ),
        // A bounded wait for a socket that never comes.
        (
            vec![
                "qmp".to_string(),
                "--socket".into(),
                p(&missing),
                "--wait".into(),
                "300ms".into(),
            ],
            "No such file or directory (os error 2) (still, after waiting 300ms)",
        ),
        (
            vec![
                "qmp".to_string(),
                "--tcp".into(),
                "no-such-host.invalid:4444".into(),
            ],
            "cannot connect to no-such-host.invalid:4444: ",
        ),
    ] {
        let out = run_deadline(cmd(&args), Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("qemu-machine: error: cannot connect to "),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        // No internal representation leaks into the message.
        for debug in ["Unix(", "Tcp(", "Some(", "Os {", "kind:"] {
            assert!(!stderr.contains(debug), "{args:?}: {stderr}");
        }
    }
    let out = run_deadline(cmd(["qmp", "--wait", "1s"]), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn tcp_takes_a_host_name() {
    require_qemu();
    let port = free_port();
    let mut qemu = Command::new(qemu_machine_tests::qemu_system_x86_64())
        .args(["-machine", "none", "-nodefaults", "-display", "none"])
        .arg("-qmp")
        .arg(format!("tcp:127.0.0.1:{port},server=on,wait=off"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("localhost:{port}");
    let out = run_script(
        &["qmp", "--tcp", &addr, "--wait", "30s", "-p"],
        "query-version\nquit\n",
    );
    let status = wait_deadline(&mut qemu, Duration::from_secs(30), "QEMU after quit");
    assert!(status.success(), "{status:?}");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("\n  "), "-p: pretty-printed: {stdout}");
    let vals = values(&stdout);
    assert_eq!(vals[0]["return"]["qemu"]["major"], 7);
}

#[test]
fn interactive_transaction_prompt_and_redraw_on_resize() {
    require_qemu();
    let mut pty = pty(["qmp", "--accel", "tcg", "--history", "none"]);
    let at = pty.expect_from(0, "(QEMU) ", Duration::from_secs(60));
    pty.write(b"blockdev-add driver=null-co node-name=n0\r");
    let at = pty.expect_from(at, "\"return\": {}", Duration::from_secs(30));
    let at = pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    // Opening a transaction changes the prompt; a line inside sends nothing.
    pty.write(b"transaction(\r");
    let at = pty.expect_from(at, "TRANS> ", Duration::from_secs(30));
    pty.write(b"block-dirty-bitmap-add node=n0 name=b0\r");
    let at = pty.expect_from(at, "TRANS> ", Duration::from_secs(30));
    // Ctrl-C abandons it.
    pty.write(b"\x03");
    let at = pty.expect_from(at, "the transaction was abandoned", Duration::from_secs(30));
    let at = pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    // A pasted transaction: several lines in one write, sent once at the `)`.
    pty.write(b"transaction(\rblock-dirty-bitmap-add node=n0 name=b1\rblock-dirty-bitmap-add node=n0 name=b2\r)\r");
    let at = pty.expect_from(at, "\"return\": {}", Duration::from_secs(30));
    let at = pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    pty.write(b"query-named-block-nodes flat=true\r");
    let at = pty.expect_from(at, "\"name\": \"b", Duration::from_secs(30));
    let at = pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    let text = pty.text();
    assert!(!text[at - 200..].contains("\"b0\""), "abandoned: {text}");
    // A long line on an 80-column terminal, then the terminal narrows to 30 columns: the line
    // is drawn again to fit: prompt (7) + the last 22 characters + the cursor column.
    let long: String = (0..60).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    pty.write(long.as_bytes());
    let at = pty.expect_from(at, &long[long.len() - 20..], Duration::from_secs(30));
    pty.resize(30, 24);
    let redraw = format!("\r\x1b[J\r(QEMU) {}\x1b[K", &long[long.len() - 22..]);
    let at = pty.expect_from(at, &redraw, Duration::from_secs(30));
    // Typing goes on in the new width.
    pty.write(b"\x15query-status\r");
    let at = pty.expect_from(at, "\"status\": \"running\"", Duration::from_secs(30));
    pty.expect_from(at, "(QEMU) ", Duration::from_secs(30));
    pty.write(b"\x04");
    let status = pty.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", pty.text());
}
