//! Handles never alias: a freed handle stays invalid for good, whatever is created after it, so
//! calls (and frees) on stale handles never reach a live config or machine; `*_free` leaves the
//! calling thread's last error alone; a handle in use by one thread's call is refused to another.
//! Through the C ABI, against real QEMU.

use std::collections::VecDeque;
use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

use qemu_machine_tests::support::{process_exists, scratch};
use qemumachine::config::{
    qm_config_add_arg, qm_config_free, qm_config_from_json, qm_config_new, qm_config_set_binary,
    qm_config_set_launch_timeout_ms, qm_config_set_qmp_timeout_ms, QmConfig,
};
use qemumachine::error::{
    qm_last_error_message_dup, qm_last_error_qmp_class, qm_last_error_status, qm_string_free,
};
use qemumachine::machine::{
    qm_machine_attach_unix, qm_machine_event_wait, qm_machine_execute, qm_machine_free,
    qm_machine_kill, qm_machine_launch, qm_machine_pid, qm_machine_status, QmMachine,
};
use qemumachine::QmStatus;

/// Freed handles the stale calls of each cycle go through (plus the very first freed one).
const WINDOW: usize = 64;

const NONE_MACHINE: &str =
    r#"{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg", "launch_timeout_ms": 60000}"#;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// The calling thread's last error: status, message, QMP class.
fn last_error() -> (QmStatus, String, String) {
    let status = qm_last_error_status();
    let p = qm_last_error_message_dup();
    let message = if p.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string from this library, freed once right after.
        let m = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        // SAFETY: `p` came from qm_last_error_message_dup.
        unsafe { qm_string_free(p) };
        m
    };
    let mut buf = [0 as c_char; 128];
    // SAFETY: `buf` is valid for its length.
    unsafe { qm_last_error_qmp_class(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by qm_last_error_qmp_class.
    let class = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    (status, message, class)
}

fn config_from_json(json: &str) -> *mut QmConfig {
    let mut config = null_mut();
    let json = c(json);
    // SAFETY: a NUL-terminated string and a valid out-pointer.
    let s = unsafe { qm_config_from_json(json.as_ptr(), &mut config) };
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    config
}

fn launch(config: *const QmConfig) -> *mut QmMachine {
    qemu_machine_tests::qemu_system_x86_64();
    let mut machine = null_mut();
    // SAFETY: any handle value is accepted; the out-pointer is valid.
    let s = unsafe { qm_machine_launch(config, &mut machine) };
    assert_eq!(s, QmStatus::Ok, "launch: {:?}", last_error());
    assert!(!machine.is_null());
    machine
}

fn launch_none() -> *mut QmMachine {
    let config = config_from_json(NONE_MACHINE);
    let machine = launch(config);
    // SAFETY: a live config, freed once.
    unsafe { qm_config_free(config) };
    machine
}

fn pid(machine: *mut QmMachine) -> Result<i32, QmStatus> {
    let mut pid = 0;
    // SAFETY: any handle value is accepted; the out-pointer is valid.
    match unsafe { qm_machine_pid(machine, &mut pid) } {
        QmStatus::Ok => Ok(pid),
        s => Err(s),
    }
}

fn execute(machine: *mut QmMachine, command: &str) -> QmStatus {
    let command = c(command);
    // SAFETY: any handle value is accepted; a NUL-terminated command; no arguments or reply.
    unsafe { qm_machine_execute(machine, command.as_ptr(), null(), 10_000, null_mut()) }
}

/// `qm_machine_status`, or the failing status.
fn run_state(machine: *mut QmMachine) -> Result<String, QmStatus> {
    let mut out = null_mut();
    // SAFETY: any handle value is accepted; the out-pointer is valid.
    match unsafe { qm_machine_status(machine, &mut out) } {
        QmStatus::Ok => {
            // SAFETY: a NUL-terminated string from this library, freed once right after.
            let s = unsafe { CStr::from_ptr(out) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: `out` came from qm_machine_status.
            unsafe { qm_string_free(out) };
            Ok(s)
        }
        s => Err(s),
    }
}

/// Kills, reaps and frees a machine.
fn kill_and_free(machine: *mut QmMachine) {
    // SAFETY: a live machine, freed once.
    unsafe {
        qm_machine_kill(machine);
        qm_machine_free(machine);
    }
}

/// One call on a stale config handle, chosen by `op`; each must be refused as an invalid handle.
/// The frees return nothing: that they reached nothing is checked by the live handles.
fn stale_call(stale: *mut QmConfig, op: usize) {
    let machine = stale.cast::<QmMachine>();
    let bogus = c("-bogus-option");
    let missing = c("/nonexistent/qemu-system-x86_64");
    // SAFETY: any handle value is accepted; the strings are NUL-terminated, the out-pointer
    // valid.
    let status = unsafe {
        match op % 8 {
            0 => qm_config_set_qmp_timeout_ms(stale, 1),
            1 => qm_config_add_arg(stale, bogus.as_ptr()),
            2 => qm_config_set_binary(stale, missing.as_ptr()),
            3 => {
                let mut out = null_mut();
                let s = qm_machine_launch(stale, &mut out);
                assert!(out.is_null());
                s
            }
            4 => qm_machine_kill(machine),
            5 => execute(machine, "quit"),
            6 => {
                qm_config_free(stale);
                return;
            }
            _ => {
                qm_machine_free(machine);
                return;
            }
        }
    };
    assert_eq!(
        status,
        QmStatus::InvalidHandle,
        "op {op}: {:?}",
        last_error()
    );
}

#[test]
fn stale_handles_never_reach_live_ones_over_100k_cycles() {
    // A live machine and a live config that stale calls must never reach.
    let machine = launch_none();
    let machine_pid = pid(machine).unwrap();
    let live_config = config_from_json(NONE_MACHINE);

    // The type check: a config passed as a machine, and a machine as a config.
    assert_eq!(execute(live_config.cast(), "quit"), QmStatus::InvalidHandle);
    let (_, message, _) = last_error();
    assert!(
        message.contains("is a live qm_config handle, not a qm_machine"),
        "{message}"
    );
    // SAFETY: any handle value is accepted.
    let s = unsafe { qm_config_set_qmp_timeout_ms(machine.cast(), 1) };
    assert_eq!(s, QmStatus::InvalidHandle);
    assert!(last_error()
        .1
        .contains("is a live qm_machine handle, not a qm_config"));

    let mut window: VecDeque<*mut QmConfig> = VecDeque::with_capacity(WINDOW + 1);
    let mut first_freed: Option<*mut QmConfig> = None;
    for cycle in 0..100_000usize {
        let mut config = null_mut();
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { qm_config_new(&mut config) }, QmStatus::Ok);
        assert!(!config.is_null());
        // While the new config is live, every stale handle is refused (the old address-based
        // handles failed here: the allocator gave the new config the address just freed).
        for (j, &stale) in window.iter().chain(first_freed.iter()).enumerate() {
            stale_call(stale, cycle + j);
            assert_ne!(
                stale, config,
                "cycle {cycle}: a new handle equals a freed one"
            );
        }
        if cycle % 10_000 == 0 {
            if let Some(&stale) = window.back() {
                // SAFETY: any handle value is accepted.
                unsafe { qm_config_set_qmp_timeout_ms(stale, 1) };
                let (status, message, _) = last_error();
                assert_eq!(status, QmStatus::InvalidHandle);
                assert!(message.contains("already freed"), "{message}");
            }
        }
        // The new config survived the stale frees.
        // SAFETY: a live config.
        let s = unsafe { qm_config_set_launch_timeout_ms(config, 1000) };
        assert_eq!(s, QmStatus::Ok, "cycle {cycle}: {:?}", last_error());
        // SAFETY: a live config, freed once.
        unsafe { qm_config_free(config) };
        first_freed.get_or_insert(config);
        window.push_back(config);
        if window.len() > WINDOW {
            window.pop_front();
        }
    }

    // The live machine still runs and answers.
    assert_eq!(pid(machine), Ok(machine_pid));
    assert!(process_exists(machine_pid as u32));
    assert_eq!(run_state(machine).as_deref(), Ok("running"));
    // The live config is unchanged: no bogus argument, no missing binary, its own timeouts (a
    // stale set to 1 ms would make this launch fail).
    let from_live = launch(live_config);
    assert_eq!(run_state(from_live).as_deref(), Ok("running"));
    kill_and_free(from_live);
    // SAFETY: a live config, freed once.
    unsafe { qm_config_free(live_config) };
    kill_and_free(machine);
    assert!(!process_exists(machine_pid as u32));
}

#[test]
fn a_stale_free_never_kills_a_newer_machine() {
    // Address-based handles made v1 valid again in about one round in four.
    for round in 0..6 {
        let v1 = launch_none();
        let v1_pid = pid(v1).unwrap();
        // SAFETY: a live machine, freed once.
        unsafe { qm_machine_free(v1) };
        assert!(!process_exists(v1_pid as u32));
        let v2 = launch_none();
        let v2_pid = pid(v2).unwrap();
        // SAFETY: any handle value is accepted; v1 is stale.
        unsafe { qm_machine_free(v1) };
        assert!(
            process_exists(v2_pid as u32),
            "round {round}: the stale free killed v2"
        );
        assert_eq!(execute(v2, "query-status"), QmStatus::Ok, "round {round}");
        assert_eq!(pid(v2), Ok(v2_pid));
        assert_eq!(pid(v1), Err(QmStatus::InvalidHandle));
        // SAFETY: a live machine, freed once.
        unsafe { qm_machine_free(v2) };
        assert!(!process_exists(v2_pid as u32));
    }
}

#[test]
fn frees_leave_the_last_error_alone() {
    let stale_machine = launch_none();
    // SAFETY: a live machine, freed once.
    unsafe { qm_machine_free(stale_machine) };
    let machine = launch_none();
    let machine_pid = pid(machine).unwrap();
    let config = config_from_json("{}");

    // A failing call, then frees, then its error is read: still the failing call's.
    assert_eq!(execute(machine, "no-such-command"), QmStatus::QmpError);
    let before = last_error();
    assert_eq!(before.0, QmStatus::QmpError);
    assert_eq!(before.2, "CommandNotFound");
    assert!(before.1.contains("no-such-command"), "{}", before.1);
    // SAFETY: any handle value is accepted; the stale machine was freed above.
    unsafe { qm_machine_free(stale_machine) };
    assert_eq!(last_error(), before, "after freeing a stale machine");
    // SAFETY: NULL is accepted.
    unsafe { qm_machine_free(null_mut()) };
    assert_eq!(last_error(), before, "after freeing NULL");
    // SAFETY: any handle value is accepted; a machine passed as a config is ignored.
    unsafe { qm_config_free(machine.cast()) };
    assert_eq!(last_error(), before, "after freeing a machine as a config");
    // SAFETY: a live config, freed once.
    unsafe { qm_config_free(config) };
    assert_eq!(last_error(), before, "after freeing a live config");
    // SAFETY: a live machine, freed once.
    unsafe { qm_machine_free(machine) };
    assert_eq!(last_error(), before, "after freeing a live machine");
    assert!(!process_exists(machine_pid as u32));
}

#[test]
fn a_handle_in_use_by_another_thread_is_refused_and_a_free_waits_for_the_call() {
    let dir = scratch("ffi-handles");
    let socket = dir.path().join("second.qmp");
    // A second QMP monitor, to send `stop` while the machine's handle is busy.
    let json = serde_json::json!({
        "args": ["-machine", "none", "-nodefaults",
                 "-qmp", format!("unix:{},server=on,wait=off", socket.display())],
        "accel": "tcg",
        "launch_timeout_ms": 60000,
    });
    let config = config_from_json(&json.to_string());
    let machine = launch(config);
    // SAFETY: a live config, freed once.
    unsafe { qm_config_free(config) };
    let qemu_pid = pid(machine).unwrap();

    // Another thread waits for a STOP that only this thread will cause.
    let id = machine.addr();
    let waiter = std::thread::spawn(move || {
        let stop = c("STOP");
        let machine = std::ptr::without_provenance_mut::<QmMachine>(id);
        // SAFETY: any handle value is accepted; a NUL-terminated name; no pattern or output.
        unsafe { qm_machine_event_wait(machine, stop.as_ptr(), null(), 60_000, null_mut()) }
    });
    // Once the waiter's call has the handle, this thread's calls are refused.
    loop {
        match pid(machine) {
            Ok(_) if waiter.is_finished() => {
                panic!("the waiter returned early: {:?}", waiter.join());
            }
            Ok(_) => std::thread::yield_now(),
            Err(status) => {
                assert_eq!(status, QmStatus::InvalidHandle);
                let (_, message, _) = last_error();
                assert!(message.contains("in use by another call"), "{message}");
                break;
            }
        }
    }
    // Freeing it now kills the handle at once; the machine lives until the waiter returns.
    // SAFETY: any handle value is accepted.
    unsafe { qm_machine_free(machine) };
    assert_eq!(pid(machine), Err(QmStatus::InvalidHandle));
    assert!(last_error().1.contains("already freed"));
    assert!(process_exists(qemu_pid as u32));

    let path = c(socket.to_str().unwrap());
    let mut second = null_mut();
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let s = unsafe { qm_machine_attach_unix(path.as_ptr(), 10_000, &mut second) };
    assert_eq!(s, QmStatus::Ok, "{:?}", last_error());
    // QEMU sends the STOP event before the reply to `stop`, and the waiter's return kills QEMU:
    // the reply may not make it.
    let stop = execute(second, "stop");
    assert!(
        matches!(stop, QmStatus::Ok | QmStatus::Disconnected),
        "{stop:?}: {:?}",
        last_error()
    );
    assert_eq!(waiter.join().unwrap(), QmStatus::Ok);
    // The waiter's call returned, and with it went the freed machine: killed and reaped.
    assert!(!process_exists(qemu_pid as u32));
    // SAFETY: a live machine, freed once.
    unsafe { qm_machine_free(second) };
}
