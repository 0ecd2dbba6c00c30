//! `qm_machine_*` events: take the kept ones, count the dropped, wait for one.

use std::ffi::c_char;

use qemu_process::Event;
use serde_json::Value;

use super::{json_text, with_machine, QmMachine, DEFAULT_WAIT};
use crate::args::{opt_json_arg, opt_out_arg, opt_str_arg, out_arg, set_string, timeout_arg};
use crate::status::QmStatus;

/// Takes every event kept so far, oldest first, as a JSON array of
/// `{"event", "data", "timestamp": {"seconds", "microseconds"}}` objects (`[]` when there is
/// none); free it with `qm_string_free()`. Reads what QEMU has already sent first, without
/// waiting.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_events(
    machine: *mut QmMachine,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { take_events(machine, out_json, true) }
}

/// Like `qm_machine_events()`, but reads nothing: for a caller driving machines from its own
/// loop, which after `qm_machine_poll_fd()` becomes readable calls `qm_machine_process_io()`
/// once and then takes with this and `qm_machine_take_console()`. (Taking with functions that
/// read could read, and keep, bytes for the other taker after it ran, with no wake-up left to
/// announce them.)
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_take_events(
    machine: *mut QmMachine,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { take_events(machine, out_json, false) }
}

/// Shared body of the event takers; `read` first reads whatever is ready.
///
/// # Safety
/// As for `qm_machine_events()`.
unsafe fn take_events(machine: *mut QmMachine, out_json: *mut *mut c_char, read: bool) -> QmStatus {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_json, "out_json")?;
            let taken = if read {
                m.machine().events()
            } else {
                m.machine().take_events()
            };
            let events: Vec<Value> = taken.iter().map(Event::to_value).collect();
            set_string(out, &json_text(&Value::Array(events)))
        })
    }
}

/// Stores in `*out_count` how many events were dropped since launch because the machine's event
/// queue was full (its bound is `max_events`, 65536 by default; take events to make room). The
/// next `qm_machine_event_wait()` that finds no match among the kept events reports the overflow,
/// once, as `QM_STATUS_EVENT_QUEUE_FULL`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_count` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_events_dropped(
    machine: *mut QmMachine,
    out_count: *mut u64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_count, "out_count")?;
            *out = m.machine().events_dropped();
            Ok(())
        })
    }
}

/// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: no waiting, only events kept or
/// already sent) for an event named `name` (UTF-8; NULL: any name) whose JSON form matches
/// `pattern_json` (NULL: any). The pattern is a JSON sub-tree of the event
/// (`{"data": {"guest": true}}`, `{"event": "STOP"}`); `null` in it matches anything. Kept events
/// are searched first, oldest first. The matching event is removed from the kept events (the
/// others stay kept) and, if `out_json` is not NULL, stored in `*out_json` (free with
/// `qm_string_free()`). A timeout is `QM_STATUS_TIMEOUT`, distinct from the connection closing
/// meanwhile (`QM_STATUS_PROCESS_EXITED` or `QM_STATUS_DISCONNECTED`).
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `name` and `pattern_json` NULL or
/// NUL-terminated; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_event_wait(
    machine: *mut QmMachine,
    name: *const c_char,
    pattern_json: *const c_char,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = opt_out_arg(out_json);
            let name = opt_str_arg(name, "name")?;
            let pattern = opt_json_arg(pattern_json, "pattern_json")?;
            let timeout = timeout_arg(timeout_ms, DEFAULT_WAIT)?;
            let ev = match name {
                Some(name) => m.machine().event_wait(name, pattern.as_ref(), timeout)?,
                None => m.machine().event_wait_any(pattern.as_ref(), timeout)?,
            };
            if let Some(out) = out {
                set_string(out, &json_text(&ev.to_value()))?;
            }
            Ok(())
        })
    }
}
