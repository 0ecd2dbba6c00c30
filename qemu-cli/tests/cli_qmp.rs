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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
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
    // The socket appears shortly after QEMU starts; `qmp --socket` retries until it is there.
    let out = run_script(
        &["qmp", "--socket", &sock_arg, "--compact"],
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
