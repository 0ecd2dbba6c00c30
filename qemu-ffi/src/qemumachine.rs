//! QEMUMachine's settings and calls beyond the core, in C: the qtest channel, monitors (no QMP,
//! QMP servers, `-monitor null`), the console's device and pty, the name and log directory;
//! the next event, waiting for one of several events, raw QMP requests, `is_running`, a wait
//! that kills.

use std::ffi::{c_char, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_process::{Error, MonitorAddress};
use serde_json::Value;

use crate::args::{
    bytes_arg, opt_out_arg, opt_str_arg, out_arg, path_arg, set_string, str_arg, timeout_arg,
};
use crate::config::{with_config, QmConfig};
use crate::error::FfiError;
use crate::machine::{json_text, path_out, with_machine, QmMachine, DEFAULT_WAIT};
use crate::status::QmStatus;

// ----------------------------------------------------------------------------------------------
// Configuration
// ----------------------------------------------------------------------------------------------

/// Adds (or not) a qtest channel (QEMUQtestMachine): QEMU's device-test protocol on a
/// socketpair the library owns, driven with `qm_machine_qtest*()`. With the accelerator left to
/// the library (`QM_ACCEL_AUTO`), QEMU runs the qtest accelerator when the binary has it
/// (`-accel help` lists it), else TCG with `-S` (no guest code runs), where
/// `qm_machine_qtest_clock_step()` and `qm_machine_qtest_clock_set()` are
/// `QM_STATUS_UNSUPPORTED` (Debian's QEMU 7.2 has no qtest accelerator). An explicit
/// accelerator is kept, with `-S`.
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_qtest(config: *mut QmConfig, enabled: bool) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.qtest(enabled);
            Ok(())
        })
    }
}

/// Launches with (the default) or without the library's own QMP connection (QEMUMachine's
/// `set_qmp_monitor`). Without it, `qm_machine_launch()` returns once QEMU has run for the
/// settle time without exiting (`qm_config_set_launch_settle_ms()`, 500 ms by default), or as
/// soon as QEMU answers a qtest command with `qm_config_set_qtest()`; a QEMU that exits before
/// is `QM_STATUS_LAUNCH_FAILED` with its output. QMP calls are then `QM_STATUS_UNSUPPORTED`;
/// `qm_machine_shutdown()` sends SIGTERM (QEMU's graceful exit), then SIGKILL after its
/// timeout (`QM_STATUS_NOT_GRACEFUL`).
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_qmp(config: *mut QmConfig, enabled: bool) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.qmp(enabled);
            Ok(())
        })
    }
}

/// Adds a QMP server for another client (a QMP shell, a second program) at `address`:
/// `"unix:PATH"` (the path any bytes, at most 107) or `"tcp:[HOST:]PORT"` (UTF-8; the host is
/// `127.0.0.1` unless named, so only this machine can connect; an IPv6 host in brackets; port
/// 0: QEMU picks one, see `qm_machine_qmp_listen_addresses()`). QEMU listens there without
/// waiting, one client at a time; the library's own connection is unaffected. Anything else is
/// `QM_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `address` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_add_qmp_listen(
    config: *mut QmConfig,
    address: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            let bytes = bytes_arg(address, "address")?;
            let parsed = match bytes.strip_prefix(b"unix:") {
                Some(path) if !path.is_empty() => {
                    MonitorAddress::Unix(PathBuf::from(OsStr::from_bytes(path)))
                }
                _ => std::str::from_utf8(bytes)
                    .map_err(|_| FfiError::invalid("argument `address` is not valid UTF-8"))?
                    .parse()
                    .map_err(|e: qemu_cmdline::Error| {
                        FfiError::invalid(format!("argument `address`: {e}"))
                    })?,
            };
            c.qmp_listen(parsed);
            Ok(())
        })
    }
}

/// Adds (or not) `-monitor null` (QEMUMachine's `add_monitor_null`): a human monitor
/// connected to nothing, in place of QEMU's default one without `-nodefaults`.
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_monitor_null(
    config: *mut QmConfig,
    enabled: bool,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.monitor_null(enabled);
            Ok(())
        })
    }
}

/// Chooses the device that carries the console, and turns the console on (QEMUMachine's
/// `set_console(device_type, console_index)`): `device_type` NULL is the machine's own
/// serial port kind (`-serial`), `"virtconsole"` a virtio console (the guest's `hvc0`) on a
/// virtio-serial controller of its own, any other name (UTF-8) a device type that takes a
/// chardev (`"isa-serial"`, `"pci-serial"`, ...). `console_index` serial ports connected to
/// nothing come first, so a serial console is the guest's `ttyS<console_index>`.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `device_type` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_console_device(
    config: *mut QmConfig,
    device_type: *const c_char,
    console_index: u32,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            let device = opt_str_arg(device_type, "device_type")?;
            c.console_device(device, console_index);
            Ok(())
        })
    }
}

/// Puts the console on a pseudo-terminal QEMU makes (or back on a socket the library drains),
/// and turns the console on: another program opens the terminal, whose path
/// `qm_machine_console_pty()` gives; the library's console functions are then
/// `QM_STATUS_UNSUPPORTED`. A console log (`qm_config_set_console_log()`, or the one in the
/// log dir) is written by QEMU.
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_console_pty(
    config: *mut QmConfig,
    enabled: bool,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.console_pty(enabled);
            Ok(())
        })
    }
}

/// Names the machine (`name`: UTF-8, a plain file name; QEMUMachine's `name`): its log files
/// in the log dir are `NAME.log` and `NAME-console.log`. Not passed to QEMU. Default: its temp
/// dir's name, unique. A name with `/`, or empty, is refused by `qm_machine_launch()` with
/// `QM_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_name(
    config: *mut QmConfig,
    name: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.name(str_arg(name, "name")?);
            Ok(())
        })
    }
}

/// Keeps the logs in the directory `dir` (any bytes; made owner-only if missing; QEMUMachine's
/// `log_dir`), where they stay after `qm_machine_free()`: QEMU's output in `NAME.log` and,
/// with a console and no console log of its own, the console's output in `NAME-console.log`,
/// both owner-only (0600), started over at each launch.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `dir` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_log_dir(
    config: *mut QmConfig,
    dir: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.log_dir(path_arg(dir, "dir")?);
            Ok(())
        })
    }
}

/// Without QMP and qtest: how long QEMU must run without exiting, in milliseconds, for
/// `qm_machine_launch()` to return (default 500; never longer than the launch timeout).
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_launch_settle_ms(
    config: *mut QmConfig,
    ms: u64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.launch_settle(Duration::from_millis(ms));
            Ok(())
        })
    }
}

// ----------------------------------------------------------------------------------------------
// Machine
// ----------------------------------------------------------------------------------------------

/// Stores in `*out_running` whether QEMU still runs (QEMUMachine's `is_running`): an exit the
/// guardian reported is taken in first, without waiting. For an attached machine: false.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_running` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_is_running(
    machine: *mut QmMachine,
    out_running: *mut bool,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_running, "out_running")?;
            *out = m.machine().is_running();
            Ok(())
        })
    }
}

/// Stores the machine's name in `*out_name` (free with `qm_string_free()`).
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_name` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_name(
    machine: *mut QmMachine,
    out_name: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_name, "out_name")?;
            set_string(out, m.machine().name().as_bytes())
        })
    }
}

/// Stores the path of the file holding QEMU's output in `*out_path` (free with
/// `qm_string_free()`): in the log dir when one was set, else in the temp dir (removed by
/// `qm_machine_free()`). `QM_STATUS_UNSUPPORTED` for an attached machine.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_path` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_log_path(
    machine: *mut QmMachine,
    out_path: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        path_out(
            machine,
            out_path,
            |m| m.log_path().map(Path::to_path_buf),
            "an attached machine has no log",
        )
    }
}

/// Stores the path of the console's pseudo-terminal (`qm_config_set_console_pty()`) in
/// `*out_path` (free with `qm_string_free()`). `QM_STATUS_UNSUPPORTED` when the console is not
/// on a pty.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_path` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_console_pty(
    machine: *mut QmMachine,
    out_path: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        path_out(
            machine,
            out_path,
            |m| m.console_pty(),
            "this machine's console is not on a pty (qm_config_set_console_pty)",
        )
    }
}

/// Stores the QMP servers for other clients (`qm_config_add_qmp_listen()`) as QEMU listens on
/// them in `*out_json`, a JSON array of addresses in the same form (`"tcp:127.0.0.1:40123"`
/// for a port 0, `"unix:/path"`); free it with `qm_string_free()`. `[]` without any.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qmp_listen_addresses(
    machine: *mut QmMachine,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_json, "out_json")?;
            let list: Vec<Value> = m
                .machine()
                .qmp_listen_addresses()
                .iter()
                .map(|a| Value::String(a.to_string()))
                .collect();
            set_string(out, &json_text(&Value::Array(list)))
        })
    }
}

/// Takes the next event (QEMUMachine's `get_qmp_event`): the oldest kept one, else the next to
/// arrive within `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only what QEMU has already
/// sent), as JSON in `*out_json` (free with `qm_string_free()`). `QM_STATUS_TIMEOUT` when none
/// comes; the connection closing first is `QM_STATUS_PROCESS_EXITED` or
/// `QM_STATUS_DISCONNECTED`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_next_event(
    machine: *mut QmMachine,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_json, "out_json")?;
            let timeout = timeout_arg(timeout_ms, DEFAULT_WAIT)?;
            match m.machine().next_event(timeout)? {
                Some(event) => set_string(out, &json_text(&event.to_value())),
                None => Err(Error::Timeout {
                    what: "an event".into(),
                    after: timeout,
                }
                .into()),
            }
        })
    }
}

/// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only events kept or already sent)
/// for the first event that matches any of `wanted_json` (QEMUMachine's `events_wait`): a
/// JSON array of `{"name": "EVENT", "pattern": {...}}` objects (`pattern` optional; see
/// `qm_machine_event_wait()` for patterns). Kept events are searched first, oldest first; the
/// match is removed from the kept events and stored in `*out_json` if that is not NULL (free
/// with `qm_string_free()`). A `wanted_json` of another shape is `QM_STATUS_INVALID_JSON`;
/// timeouts and errors as for `qm_machine_event_wait()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `wanted_json` NULL or
/// NUL-terminated; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_events_wait(
    machine: *mut QmMachine,
    wanted_json: *const c_char,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = opt_out_arg(out_json);
            let bytes = bytes_arg(wanted_json, "wanted_json")?;
            let wanted = parse_wanted(bytes)?;
            let timeout = timeout_arg(timeout_ms, DEFAULT_WAIT)?;
            let pairs: Vec<(&str, Option<&Value>)> = wanted
                .iter()
                .map(|(name, pattern)| (name.as_str(), pattern.as_ref()))
                .collect();
            let event = m.machine().events_wait(&pairs, timeout)?;
            if let Some(out) = out {
                set_string(out, &json_text(&event.to_value()))?;
            }
            Ok(())
        })
    }
}

/// `[{"name": ..., "pattern": ...}, ...]` as (name, pattern) pairs.
fn parse_wanted(bytes: &[u8]) -> Result<Vec<(String, Option<Value>)>, FfiError> {
    let bad = |what: String| {
        FfiError::new(
            QmStatus::InvalidJson,
            format!(
                "argument `wanted_json` {what}: expected an array of \
                 {{\"name\": \"EVENT\", \"pattern\": {{...}}}} objects"
            ),
        )
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("is not valid JSON ({e})")))?;
    let Value::Array(items) = value else {
        return Err(bad("is not an array".into()));
    };
    if items.is_empty() {
        return Err(bad("is empty".into()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(mut map) = item else {
                return Err(bad(format!("item {i} is not an object")));
            };
            let name = match map.remove("name") {
                Some(Value::String(name)) => name,
                _ => return Err(bad(format!("item {i} has no string `name`"))),
            };
            let pattern = map.remove("pattern").filter(|p| !p.is_null());
            if let Some(key) = map.keys().next() {
                return Err(bad(format!("item {i} has an unknown member `{key}`")));
            }
            Ok((name, pattern))
        })
        .collect()
}

/// Sends `request_json`, any JSON object, as a QMP request as it is (QEMUMachine's `qmp`,
/// qemu.qmp's `cmd_obj`), and stores QEMU's whole reply in `*out_reply_json` (free with
/// `qm_string_free()`): `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}` (an error
/// reply is not a failure of this call). The library keeps owning ids: the request goes with
/// its own `id`, so the reply is matched by id; an `id` in `request_json` is taken out and put
/// back into the reply. A request with `exec-oob` is out-of-band. Not an object:
/// `QM_STATUS_INVALID_JSON`. Timeouts (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout) and
/// other errors as for `qm_machine_execute()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `request_json` NULL or
/// NUL-terminated; `out_reply_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_execute_raw(
    machine: *mut QmMachine,
    request_json: *const c_char,
    timeout_ms: i64,
    out_reply_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_reply_json, "out_reply_json")?;
            let bytes = bytes_arg(request_json, "request_json")?;
            let request: Value = serde_json::from_slice(bytes).map_err(|e| {
                FfiError::new(
                    QmStatus::InvalidJson,
                    format!("argument `request_json` is not valid JSON: {e}"),
                )
            })?;
            if !request.is_object() {
                return Err(FfiError::new(
                    QmStatus::InvalidJson,
                    "argument `request_json` must be a JSON object",
                ));
            }
            let timeout = timeout_arg(timeout_ms, m.machine().qmp_timeout())?;
            let reply = m.machine().execute_raw(&request, timeout)?;
            set_string(out, &json_text(&reply))
        })
    }
}

/// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only checks) for QEMU to exit by
/// itself and, if it does not, kills its process group (SIGKILL) and reaps it
/// (QEMUMachine's `wait(timeout)`): `QM_STATUS_NOT_GRACEFUL` then; QEMU is gone either way.
/// Sends nothing to QEMU first (`qm_machine_shutdown()` sends `quit`; `qm_machine_wait()`
/// leaves QEMU running on timeout). `QM_STATUS_UNSUPPORTED` for an attached machine.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_wait_or_kill(
    machine: *mut QmMachine,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            m.machine()
                .wait_or_kill(timeout_arg(timeout_ms, DEFAULT_WAIT)?)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_events_are_read_or_refused_by_shape() {
        let w = parse_wanted(br#"[{"name": "STOP"}, {"name": "RESUME", "pattern": {"data": {}}}]"#)
            .unwrap();
        assert_eq!(w[0], ("STOP".to_owned(), None));
        assert_eq!(w[1].1, Some(serde_json::json!({"data": {}})));
        for (bad, needle) in [
            (&b"{}"[..], "is not an array"),
            (b"[]", "is empty"),
            (b"[1]", "item 0 is not an object"),
            (br#"[{"pattern": {}}]"#, "no string `name`"),
            (br#"[{"name": "X", "match": {}}]"#, "unknown member `match`"),
            (b"[", "is not valid JSON"),
        ] {
            let e = parse_wanted(bad).unwrap_err();
            assert_eq!(e.status, QmStatus::InvalidJson);
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }
}
