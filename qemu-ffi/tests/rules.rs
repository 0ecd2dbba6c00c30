//! The rules at the top of `include/qemumachine.h`, through the C ABI against real QEMU:
//! timeouts (`QM_TIMEOUT_DEFAULT` is each function's documented default, other negative values
//! are refused, 0 does not wait, positive values are milliseconds), UTF-8 and byte strings,
//! out-of-band execution without oob, event waits for any name, and the guardian.
//! (`tests/c/qm_test.c` checks the same from C.)

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use qemumachine::args::QM_TIMEOUT_DEFAULT;
use qemumachine::config::{
    qm_config_add_arg, qm_config_free, qm_config_from_json, qm_config_new, qm_config_set_accel,
    qm_config_set_binary, qm_config_set_temp_dir, QmAccel, QmConfig,
};
use qemumachine::error::{qm_last_error_message_dup, qm_last_error_status, qm_string_free};
use qemumachine::guardian::{qm_guardian_pid, qm_guardian_start};
use qemumachine::guest::{
    qm_machine_guest_copy_in, qm_machine_guest_copy_out, qm_machine_guest_exec,
    qm_machine_guest_execute, qm_machine_guest_info, qm_machine_guest_interfaces,
    qm_machine_guest_osinfo, qm_machine_guest_ping, qm_machine_guest_shutdown,
};
use qemumachine::machine::{
    qm_machine_attach_tcp, qm_machine_attach_unix, qm_machine_console_wait_for,
    qm_machine_console_write, qm_machine_event_wait, qm_machine_execute, qm_machine_execute_oob,
    qm_machine_free, qm_machine_launch, qm_machine_pid, qm_machine_powerdown, qm_machine_reset,
    qm_machine_shutdown, qm_machine_wait, QmMachine,
};
use qemumachine::QmStatus;

const NONE: &str = r#"{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg"}"#;
/// A q35 that never runs (`-S`), with a console, and a QMP timeout of 400 ms.
/// A VM with the guest agent's port that never runs (`-S`): no agent ever answers.
const GUEST_PAUSED: &str = r#"{"vm": {"guest_agent": true, "paused": true}, "accel": "tcg"}"#;
const PAUSED_CONSOLE: &str = r#"{"args": ["-machine", "q35", "-nodefaults", "-S"],
    "accel": "tcg", "console": true, "qmp_timeout_ms": 400}"#;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// A C string from raw bytes (not necessarily UTF-8).
fn c_bytes(b: &[u8]) -> CString {
    CString::new(b.to_vec()).unwrap()
}

/// The calling thread's last error: status and message.
fn last_error() -> (QmStatus, String) {
    let status = qm_last_error_status();
    let p = qm_last_error_message_dup();
    if p.is_null() {
        return (status, String::new());
    }
    // SAFETY: a NUL-terminated string from this library, freed once right after.
    let m = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
    // SAFETY: `p` came from qm_last_error_message_dup.
    unsafe { qm_string_free(p) };
    (status, m)
}

/// Takes a string the library returned, and frees it.
fn take(p: *mut c_char) -> Vec<u8> {
    assert!(!p.is_null());
    // SAFETY: a NUL-terminated string from this library, freed once right after.
    let v = unsafe { CStr::from_ptr(p) }.to_bytes().to_vec();
    // SAFETY: `p` came from the library.
    unsafe { qm_string_free(p) };
    v
}

fn config(json: &str) -> *mut QmConfig {
    let mut config = null_mut();
    let json = c(json);
    // SAFETY: a NUL-terminated string and a valid out-pointer.
    let s = unsafe { qm_config_from_json(json.as_ptr(), &mut config) };
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    config
}

fn launch_config(config: *mut QmConfig) -> *mut QmMachine {
    qemu_machine_tests::qemu_system_x86_64();
    let mut machine = null_mut();
    // SAFETY: a live config and a valid out-pointer.
    let s = unsafe { qm_machine_launch(config, &mut machine) };
    assert_eq!(s, QmStatus::Ok, "launch: {:?}", last_error());
    // SAFETY: a live config, freed once.
    unsafe { qm_config_free(config) };
    machine
}

fn launch(json: &str) -> *mut QmMachine {
    launch_config(config(json))
}

fn pid(machine: *mut QmMachine) -> i32 {
    let mut pid = 0;
    // SAFETY: a live machine and a valid out-pointer.
    assert_eq!(unsafe { qm_machine_pid(machine, &mut pid) }, QmStatus::Ok);
    pid
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: signalling a QEMU this test launched.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// `qm_machine_execute` without arguments; the reply if `want_reply`.
fn execute(machine: *mut QmMachine, command: &[u8], timeout_ms: i64) -> (QmStatus, Vec<u8>) {
    let command = c_bytes(command);
    let mut out = null_mut();
    // SAFETY: a live machine, a NUL-terminated command, a valid out-pointer.
    let s = unsafe { qm_machine_execute(machine, command.as_ptr(), null(), timeout_ms, &mut out) };
    let reply = if out.is_null() { Vec::new() } else { take(out) };
    (s, reply)
}

/// `qm_machine_event_wait`; the event's JSON on success.
fn event_wait(
    machine: *mut QmMachine,
    name: Option<&[u8]>,
    pattern: Option<&str>,
    timeout_ms: i64,
) -> (QmStatus, String) {
    let name = name.map(c_bytes);
    let pattern = pattern.map(c);
    let mut out = null_mut();
    // SAFETY: a live machine, NULL or NUL-terminated strings, a valid out-pointer.
    let s = unsafe {
        qm_machine_event_wait(
            machine,
            name.as_ref().map_or(null(), |n| n.as_ptr()),
            pattern.as_ref().map_or(null(), |p| p.as_ptr()),
            timeout_ms,
            &mut out,
        )
    };
    let event = if out.is_null() {
        String::new()
    } else {
        String::from_utf8(take(out)).unwrap()
    };
    (s, event)
}

fn console_wait_for(machine: *mut QmMachine, pattern: &[u8], timeout_ms: i64) -> QmStatus {
    let pattern = c_bytes(pattern);
    // SAFETY: a live machine, a NUL-terminated pattern, no outputs.
    unsafe {
        qm_machine_console_wait_for(
            machine,
            pattern.as_ptr(),
            timeout_ms,
            null_mut(),
            null_mut(),
        )
    }
}

fn console_write(machine: *mut QmMachine, data: &[u8], timeout_ms: i64) -> (QmStatus, usize) {
    let mut written = usize::MAX;
    // SAFETY: a live machine; `data` is valid for its length; a valid out-pointer.
    let s = unsafe {
        qm_machine_console_write(machine, data.as_ptr(), data.len(), timeout_ms, &mut written)
    };
    (s, written)
}

fn attach_unix(path: &[u8], timeout_ms: i64) -> (QmStatus, *mut QmMachine) {
    let path = c_bytes(path);
    let mut out = null_mut();
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let s = unsafe { qm_machine_attach_unix(path.as_ptr(), timeout_ms, &mut out) };
    (s, out)
}

fn free(machine: *mut QmMachine) {
    // SAFETY: any handle value is accepted.
    unsafe { qm_machine_free(machine) };
}

/// A scratch directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("qm-ffi-rules-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_invalid_timeout(s: QmStatus, what: &str) {
    let (status, message) = last_error();
    assert_eq!(s, QmStatus::InvalidArgument, "{what}: {message}");
    assert_eq!(status, QmStatus::InvalidArgument, "{what}");
    assert!(message.contains("`timeout_ms`"), "{what}: {message}");
}

#[test]
fn negative_timeouts_other_than_the_default_are_refused_by_every_function() {
    let machine = launch(PAUSED_CONSOLE);
    let stop = c("STOP");
    let status = c("query-status");
    for ms in [-2, -1000, i64::MIN] {
        let (s, _) = execute(machine, b"query-status", ms);
        assert_invalid_timeout(s, "execute");
        // SAFETY: a live machine, NUL-terminated strings, no output.
        let s = unsafe { qm_machine_execute_oob(machine, status.as_ptr(), null(), ms, null_mut()) };
        assert_invalid_timeout(s, "execute_oob");
        // SAFETY: as above.
        let s = unsafe { qm_machine_event_wait(machine, stop.as_ptr(), null(), ms, null_mut()) };
        assert_invalid_timeout(s, "event_wait");
        let (s, written) = console_write(machine, b"x", ms);
        assert_invalid_timeout(s, "console_write");
        assert_eq!(written, 0);
        assert_invalid_timeout(console_wait_for(machine, b"x", ms), "console_wait_for");
        // SAFETY: a live machine.
        assert_invalid_timeout(unsafe { qm_machine_powerdown(machine, ms) }, "powerdown");
        // SAFETY: a live machine.
        assert_invalid_timeout(unsafe { qm_machine_shutdown(machine, ms) }, "shutdown");
        // SAFETY: a live machine.
        assert_invalid_timeout(unsafe { qm_machine_wait(machine, ms) }, "wait");
        let (s, out) = attach_unix(b"/nonexistent/qmp.sock", ms);
        assert_invalid_timeout(s, "attach_unix");
        assert!(out.is_null());
        let address = c("127.0.0.1:1");
        let mut out = null_mut();
        // SAFETY: a NUL-terminated address and a valid out-pointer.
        let s = unsafe { qm_machine_attach_tcp(address.as_ptr(), ms, &mut out) };
        assert_invalid_timeout(s, "attach_tcp");
        // The guest agent's calls check the timeout first (this machine has no agent).
        let (mut json, argv, path) = (null_mut(), c(r#"["true"]"#), c("/tmp/x"));
        let guest_calls: [(&str, QmStatus); 9] =
            // SAFETY: a live machine, NUL-terminated strings, valid out-pointers or NULL.
            unsafe {
            [
                ("guest_ping", qm_machine_guest_ping(machine, ms)),
                ("guest_info", qm_machine_guest_info(machine, ms, &mut json)),
                (
                    "guest_osinfo",
                    qm_machine_guest_osinfo(machine, ms, &mut json),
                ),
                (
                    "guest_interfaces",
                    qm_machine_guest_interfaces(machine, ms, &mut json),
                ),
                (
                    "guest_execute",
                    qm_machine_guest_execute(machine, status.as_ptr(), null(), ms, &mut json),
                ),
                (
                    "guest_exec",
                    qm_machine_guest_exec(
                        machine,
                        argv.as_ptr(),
                        null(),
                        0,
                        ms,
                        null_mut(),
                        null_mut(),
                        null_mut(),
                        null_mut(),
                        null_mut(),
                        null_mut(),
                    ),
                ),
                (
                    "guest_copy_in",
                    qm_machine_guest_copy_in(machine, path.as_ptr(), path.as_ptr(), ms, null_mut()),
                ),
                (
                    "guest_copy_out",
                    qm_machine_guest_copy_out(
                        machine,
                        path.as_ptr(),
                        path.as_ptr(),
                        ms,
                        null_mut(),
                    ),
                ),
                (
                    "guest_shutdown",
                    qm_machine_guest_shutdown(machine, null(), ms),
                ),
            ]
        };
        for (what, s) in guest_calls {
            assert_invalid_timeout(s, what);
        }
        assert!(json.is_null());
    }
    // None of them did anything: the machine is still waiting to start.
    let (s, reply) = execute(machine, b"query-status", QM_TIMEOUT_DEFAULT);
    assert_eq!(s, QmStatus::Ok);
    assert!(String::from_utf8(reply).unwrap().contains("prelaunch"));
    free(machine);
}

#[test]
fn zero_takes_what_is_there_and_positive_values_are_milliseconds() {
    let machine = launch(PAUSED_CONSOLE);
    // 0: nothing kept, nothing sent: a timeout at once, for every kind of wait.
    assert_eq!(
        event_wait(machine, Some(b"NEVER"), None, 0).0,
        QmStatus::Timeout
    );
    // SAFETY: a live machine.
    assert_eq!(unsafe { qm_machine_wait(machine, 0) }, QmStatus::Timeout);
    assert_eq!(console_wait_for(machine, b"never", 0), QmStatus::Timeout);
    assert_eq!(
        attach_unix(b"/nonexistent/qmp.sock", 0).0,
        QmStatus::Timeout
    );
    // 0 with a kept event: taken.
    assert_eq!(
        execute(machine, b"cont", QM_TIMEOUT_DEFAULT).0,
        QmStatus::Ok
    );
    assert_eq!(
        execute(machine, b"stop", QM_TIMEOUT_DEFAULT).0,
        QmStatus::Ok
    );
    let (s, event) = event_wait(machine, Some(b"RESUME"), None, 0);
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    assert!(event.contains(r#""event":"RESUME""#), "{event}");
    // 0 for a command: sent, but only a reply already there would do; the next command gets
    // its own reply.
    let (s, _) = execute(machine, b"query-name", 0);
    assert!(matches!(s, QmStatus::Ok | QmStatus::Timeout), "{s:?}");
    let (s, reply) = execute(machine, b"query-status", QM_TIMEOUT_DEFAULT);
    assert_eq!(s, QmStatus::Ok);
    assert!(String::from_utf8(reply).unwrap().contains(r#""status""#));

    // Positive: milliseconds, as the message says.
    assert_eq!(
        event_wait(machine, Some(b"NEVER"), None, 250).0,
        QmStatus::Timeout
    );
    assert!(last_error().1.contains("250ms"), "{:?}", last_error());
    assert_eq!(console_wait_for(machine, b"never", 250), QmStatus::Timeout);
    assert!(last_error().1.contains("250ms"), "{:?}", last_error());
    // SAFETY: a live machine.
    assert_eq!(unsafe { qm_machine_wait(machine, 250) }, QmStatus::Timeout);
    assert!(last_error().1.contains("250ms"), "{:?}", last_error());
    let (s, written) = console_write(machine, &vec![b'x'; 4 << 20], 250);
    assert_eq!(s, QmStatus::Timeout);
    assert!(written > 0 && written < 4 << 20, "{written}");
    assert!(last_error().1.contains("250ms"), "{:?}", last_error());

    // QM_TIMEOUT_DEFAULT for a command is the config's qmp_timeout_ms (400 ms here); after it,
    // the machine is usable and the late reply is discarded.
    let qemu = pid(machine);
    signal(qemu, libc::SIGSTOP);
    assert_eq!(
        execute(machine, b"query-status", QM_TIMEOUT_DEFAULT).0,
        QmStatus::Timeout
    );
    assert!(last_error().1.contains("400ms"), "{:?}", last_error());
    signal(qemu, libc::SIGCONT);
    let (s, reply) = execute(machine, b"query-name", 10_000);
    assert_eq!(s, QmStatus::Ok);
    assert!(!String::from_utf8(reply).unwrap().contains("status"));

    // 0 for a shutdown: quit, no waiting, the kill.
    // SAFETY: a live machine.
    let s = unsafe { qm_machine_shutdown(machine, 0) };
    assert!(matches!(s, QmStatus::NotGraceful | QmStatus::Ok), "{s:?}");
    free(machine);
}

/// Each documented 30 s default, at once on separate handles from separate threads (which is
/// allowed: only one handle's calls must not overlap).
#[test]
fn the_default_timeouts_are_the_documented_ones() {
    let scratch = TempDir::new("defaults");
    let socket = scratch.0.join("second.qmp");
    let monitor = format!("unix:{},server=on,wait=off", socket.display());

    // A machine from qm_config_new (QMP timeout 30 s) and one attached to (30 s too), both of
    // a QEMU that is stopped.
    let mut fresh = null_mut();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { qm_config_new(&mut fresh) }, QmStatus::Ok);
    for arg in ["-machine", "none", "-nodefaults", "-qmp", monitor.as_str()] {
        let arg = c(arg);
        // SAFETY: a live config, a NUL-terminated argument.
        let s = unsafe { qm_config_add_arg(fresh, arg.as_ptr()) };
        assert_eq!(s, QmStatus::Ok);
    }
    // SAFETY: a live config.
    let s = unsafe { qm_config_set_accel(fresh, QmAccel::Tcg as i32) };
    assert_eq!(s, QmStatus::Ok);
    let stopped = launch_config(fresh);
    let (s, attached) = attach_unix(socket.to_str().unwrap().as_bytes(), QM_TIMEOUT_DEFAULT);
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    let stopped_pid = pid(stopped);
    signal(stopped_pid, libc::SIGSTOP);

    let unquitting = launch(NONE);
    signal(pid(unquitting), libc::SIGSTOP);
    let never = launch(NONE);
    let running = launch(NONE);
    let powered = launch(NONE);
    let console = launch(PAUSED_CONSOLE);
    let written = launch(PAUSED_CONSOLE);
    // VMs with the guest agent's channel and no agent (they never run).
    let pinged = launch(GUEST_PAUSED);
    let copied = launch(GUEST_PAUSED);
    let ids = |m: *mut QmMachine| m.addr();
    let m = |id: usize| std::ptr::without_provenance_mut::<QmMachine>(id);
    // What to run, on which machine, and the status it must end with.
    type Job = (
        &'static str,
        usize,
        fn(*mut QmMachine) -> QmStatus,
        QmStatus,
    );
    let timeout = QmStatus::Timeout;
    let jobs: Vec<Job> = vec![
        (
            "execute (launched)",
            ids(stopped),
            |m| execute(m, b"query-status", QM_TIMEOUT_DEFAULT).0,
            timeout,
        ),
        (
            "execute (attached)",
            ids(attached),
            |m| execute(m, b"query-status", QM_TIMEOUT_DEFAULT).0,
            timeout,
        ),
        (
            "event_wait",
            ids(never),
            |m| event_wait(m, Some(b"NEVER"), None, QM_TIMEOUT_DEFAULT).0,
            timeout,
        ),
        (
            "wait",
            ids(running),
            |m| {
                // SAFETY: a live machine.
                unsafe { qm_machine_wait(m, QM_TIMEOUT_DEFAULT) }
            },
            timeout,
        ),
        (
            "powerdown",
            ids(powered),
            |m| {
                // SAFETY: a live machine; `-machine none` ignores the power button.
                unsafe { qm_machine_powerdown(m, QM_TIMEOUT_DEFAULT) }
            },
            timeout,
        ),
        (
            "console_wait_for",
            ids(console),
            |m| console_wait_for(m, b"never", QM_TIMEOUT_DEFAULT),
            timeout,
        ),
        (
            "console_write",
            ids(written),
            |m| console_write(m, &vec![b'x'; 4 << 20], QM_TIMEOUT_DEFAULT).0,
            timeout,
        ),
        (
            "attach_unix",
            0,
            |_| {
                let (s, out) = attach_unix(b"/nonexistent/qmp.sock", QM_TIMEOUT_DEFAULT);
                assert!(out.is_null());
                s
            },
            timeout,
        ),
        (
            "guest_ping",
            ids(pinged),
            |m| {
                // SAFETY: a live machine.
                unsafe { qm_machine_guest_ping(m, QM_TIMEOUT_DEFAULT) }
            },
            timeout,
        ),
        (
            "guest_copy_in (30 s for each call to the agent)",
            ids(copied),
            |m| {
                let path = c("/etc/hostname");
                // SAFETY: a live machine, NUL-terminated paths.
                unsafe {
                    qm_machine_guest_copy_in(
                        m,
                        path.as_ptr(),
                        c("/tmp/x").as_ptr(),
                        QM_TIMEOUT_DEFAULT,
                        null_mut(),
                    )
                }
            },
            timeout,
        ),
        (
            "shutdown",
            ids(unquitting),
            |m| {
                // SAFETY: a live machine; QEMU is stopped and cannot act on quit.
                unsafe { qm_machine_shutdown(m, QM_TIMEOUT_DEFAULT) }
            },
            QmStatus::NotGraceful,
        ),
    ];
    let threads: Vec<_> = jobs
        .into_iter()
        .map(|(what, id, job, expected)| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let s = job(m(id));
                (what, s, expected, last_error().1, start.elapsed())
            })
        })
        .collect();
    for t in threads {
        let (what, s, expected, message, took) = t.join().unwrap();
        assert_eq!(s, expected, "{what}: {message}");
        if expected == QmStatus::Timeout {
            assert!(message.contains("after 30s"), "{what}: {message}");
        }
        // Waiting 30 s is the point here; this bounds nothing from above.
        assert!(took >= Duration::from_secs(30), "{what}: {took:?}");
    }
    signal(stopped_pid, libc::SIGCONT);
    for machine in [
        attached, stopped, unquitting, never, running, powered, console, written, pinged, copied,
    ] {
        free(machine);
    }
}

#[test]
fn execute_oob_without_oob_is_invalid_state() {
    let machine =
        launch(r#"{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg", "oob": false}"#);
    let command = c("migrate-pause");
    // SAFETY: a live machine, a NUL-terminated command, no output.
    let s = unsafe { qm_machine_execute_oob(machine, command.as_ptr(), null(), -1, null_mut()) };
    let (_, message) = last_error();
    assert_eq!(s, QmStatus::InvalidState, "{message}");
    assert!(message.contains("out-of-band"), "{message}");
    assert_eq!(execute(machine, b"query-status", -1).0, QmStatus::Ok);
    free(machine);

    // With oob (the default) the command reaches QEMU, which answers for itself.
    let machine = launch(NONE);
    // SAFETY: as above.
    let s = unsafe { qm_machine_execute_oob(machine, command.as_ptr(), null(), -1, null_mut()) };
    assert_eq!(s, QmStatus::QmpError, "{:?}", last_error());
    free(machine);
}

#[test]
fn event_wait_with_a_null_name_takes_events_of_any_name() {
    let machine = launch(NONE);
    assert_eq!(execute(machine, b"stop", -1).0, QmStatus::Ok);
    assert_eq!(execute(machine, b"cont", -1).0, QmStatus::Ok);
    let (s, first) = event_wait(machine, None, None, 10_000);
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    assert!(first.contains(r#""event":"STOP""#), "{first}");
    let (s, second) = event_wait(machine, None, None, 10_000);
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    assert!(second.contains(r#""event":"RESUME""#), "{second}");
    assert_eq!(event_wait(machine, None, None, 0).0, QmStatus::Timeout);
    // A pattern alone: a kept event that does not match stays kept.
    assert_eq!(execute(machine, b"stop", -1).0, QmStatus::Ok);
    // SAFETY: a live machine.
    assert_eq!(unsafe { qm_machine_reset(machine) }, QmStatus::Ok);
    let (s, reset) = event_wait(machine, None, Some(r#"{"data": {"reason": null}}"#), 10_000);
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    assert!(reset.contains(r#""event":"RESET""#), "{reset}");
    let (s, stop) = event_wait(machine, Some(b"STOP"), None, 0);
    assert_eq!(s, QmStatus::Ok, "{stop}");
    free(machine);
}

#[test]
fn names_must_be_utf8_and_paths_may_be_any_bytes() {
    let machine = launch(NONE);
    let (s, _) = execute(machine, b"query-\xff", -1);
    let (_, message) = last_error();
    assert_eq!(s, QmStatus::InvalidArgument, "{message}");
    assert!(
        message.contains("`command`") && message.contains("UTF-8"),
        "{message}"
    );
    assert_eq!(
        event_wait(machine, Some(b"STOP\xfe"), None, 0).0,
        QmStatus::InvalidArgument
    );
    assert!(last_error().1.contains("`name`"));
    free(machine);

    // A binary and a temp dir whose paths are not UTF-8.
    let scratch = TempDir::new("bytes");
    let dir = [scratch.0.to_str().unwrap().as_bytes(), b"/\xff\xfe"].concat();
    let dir_path =
        std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&dir));
    std::fs::create_dir(dir_path).unwrap();
    let config = config(NONE);
    let c_dir = c_bytes(&dir);
    // SAFETY: a live config, a NUL-terminated path.
    let s = unsafe { qm_config_set_temp_dir(config, c_dir.as_ptr()) };
    assert_eq!(s, QmStatus::Ok);
    let mut machine = null_mut();
    // SAFETY: a live config and a valid out-pointer.
    let s = unsafe { qm_machine_launch(config, &mut machine) };
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    assert_eq!(std::fs::read_dir(dir_path).unwrap().count(), 1);
    free(machine);
    assert_eq!(std::fs::read_dir(dir_path).unwrap().count(), 0);
    let binary = c_bytes(b"/nonexistent/\xffqemu");
    // SAFETY: a live config, a NUL-terminated path.
    let s = unsafe { qm_config_set_binary(config, binary.as_ptr()) };
    assert_eq!(s, QmStatus::Ok);
    // SAFETY: a live config and a valid out-pointer.
    let s = unsafe { qm_machine_launch(config, &mut machine) };
    let (_, message) = last_error();
    assert_eq!(s, QmStatus::BinaryNotFound, "{message}");
    assert!(message.contains("/nonexistent/"), "{message}");
    // SAFETY: a live config, freed once.
    unsafe { qm_config_free(config) };
}

#[test]
fn qemu_is_a_child_of_the_guardian_which_is_a_child_of_this_process() {
    let mut started = 0;
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { qm_guardian_start(&mut started) }, QmStatus::Ok);
    assert!(started > 0);
    assert_eq!(qm_guardian_pid(), started);
    let mut again = 0;
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { qm_guardian_start(&mut again) }, QmStatus::Ok);
    assert_eq!(again, started);
    let ppid = |pid: i32| -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (_, rest) = stat.rsplit_once(") ").unwrap();
        rest.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(ppid(started), std::process::id() as i32);
    let pgrp = |pid: i32| -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (_, rest) = stat.rsplit_once(") ").unwrap();
        rest.split(' ').nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(
        pgrp(started),
        started,
        "the guardian leads its own process group"
    );
    let machine = launch(NONE);
    assert_eq!(ppid(pid(machine)), started);
    assert_eq!(qm_guardian_pid(), started);
    free(machine);
}
