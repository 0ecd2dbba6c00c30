//! `qm_machine_guest_*`: the QEMU guest agent of a machine whose VM description sets
//! `"guest_agent": true`.

use std::ffi::c_char;
use std::path::PathBuf;
use std::time::Duration;

use qemu_process::guest::{ShutdownMode, DEFAULT_GUEST_TIMEOUT};
use qemu_process::{ExecCommand, Guest};
use serde_json::Value;

use crate::args::{
    opt_json_arg, opt_out_arg, opt_str_arg, path_arg, set_string, slice_arg, str_arg, timeout_arg,
};
use crate::error::FfiError;
use crate::machine::{json_text, with_machine, QmMachine};
use crate::status::QmStatus;

/// The machine's guest agent, each call under `timeout_ms` (default 30 s).
fn guest(m: &mut QmMachine, timeout_ms: i64) -> Result<Guest<'_>, FfiError> {
    let timeout = timeout_arg(timeout_ms, DEFAULT_GUEST_TIMEOUT)?;
    Ok(m.machine().guest()?.with_timeout(timeout))
}

/// Stores a reply, already turned into JSON (`serde_json::to_value`), as text.
fn set_json(out: &mut *mut c_char, value: serde_json::Result<Value>) -> Result<(), FfiError> {
    let value =
        value.map_err(|e| FfiError::new(QmStatus::Protocol, format!("encoding the reply: {e}")))?;
    set_string(out, &json_text(&value))
}

/// Asks the guest agent of `machine` whether it runs (`guest-ping`), waiting up to
/// `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s) for its answer.
///
/// This and every `qm_machine_guest_*()` function: the machine must have been launched from a
/// VM description with `"guest_agent": true` (a virtio-serial port named
/// `org.qemu.guest_agent.0` on a socketpair the library owns), else `QM_STATUS_UNSUPPORTED`.
/// Before the first call, and after anything that may have desynchronized the stream (a
/// timeout, the agent restarting, the guest rebooting), the library synchronizes with the agent
/// (`guest-sync-delimited`), within the same timeout. A guest with no agent running is
/// `QM_STATUS_TIMEOUT`, never a hang; an error the agent answers is `QM_STATUS_QMP_ERROR`
/// with its class and description in `qm_last_error_qmp_class()` / `qm_last_error_qmp_desc()`;
/// an agent that goes away during the call (its port closed) is `QM_STATUS_DISCONNECTED`, and
/// `QM_STATUS_PROCESS_EXITED` once QEMU has exited. One answer is bounded like a QMP message
/// (`max_message_size`, 10 MiB by default): a larger one is `QM_STATUS_PROTOCOL`, and the next
/// call works. QMP events and console output that arrive meanwhile are kept. To wait for an
/// agent to come up, ping with a long enough timeout.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_guest_ping(
    machine: *mut QmMachine,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_machine(machine, |m| Ok(guest(m, timeout_ms)?.ping()?)) }
}

/// Stores the guest agent's `guest-info` (`{"version": "7.2.22", "supported_commands":
/// [{"name", "enabled", "success-response"}, ...]}`) as JSON in `*out_json` (free with
/// `qm_string_free()`). Timeout and errors as for `qm_machine_guest_ping()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_guest_info(
    machine: *mut QmMachine,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = crate::args::out_arg(out_json, "out_json")?;
            let info = guest(m, timeout_ms)?.info()?;
            set_json(out, serde_json::to_value(&info))
        })
    }
}

/// Stores the guest's operating system as its agent reports it (`guest-get-osinfo`: members
/// such as `kernel-release`, `machine`, `id`, `version-id`, `pretty-name`, each present only
/// when known) as a JSON object in `*out_json` (free with `qm_string_free()`). Timeout and
/// errors as for `qm_machine_guest_ping()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_guest_osinfo(
    machine: *mut QmMachine,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = crate::args::out_arg(out_json, "out_json")?;
            let os = guest(m, timeout_ms)?.osinfo()?;
            set_json(out, serde_json::to_value(&os))
        })
    }
}

/// Stores the guest's network interfaces (`guest-network-get-interfaces`: an array of
/// `{"name", "hardware-address", "ip-addresses": [{"ip-address", "ip-address-type", "prefix"}],
/// "statistics"}`) as JSON in `*out_json` (free with `qm_string_free()`). Timeout and errors
/// as for `qm_machine_guest_ping()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_guest_interfaces(
    machine: *mut QmMachine,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = crate::args::out_arg(out_json, "out_json")?;
            let interfaces = guest(m, timeout_ms)?.network_interfaces()?;
            set_json(out, serde_json::to_value(&interfaces))
        })
    }
}

/// Runs any guest agent command `command` (UTF-8) with `arguments_json` (a JSON object, or NULL
/// for none; anything else is `QM_STATUS_INVALID_JSON`) and stores its `return` value as JSON
/// in `*out_json` if `out_json` is not NULL (free with `qm_string_free()`). A name that cannot
/// be a command is `QM_STATUS_INVALID_ARGUMENT` before anything is sent, and so are
/// `guest-shutdown` (use `qm_machine_guest_shutdown()`: it answers nothing on success) and the
/// synchronization commands, which are the library's. Timeout and errors as for
/// `qm_machine_guest_ping()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `command` and `arguments_json` NULL or
/// NUL-terminated; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_guest_execute(
    machine: *mut QmMachine,
    command: *const c_char,
    arguments_json: *const c_char,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = opt_out_arg(out_json);
            let name = str_arg(command, "command")?;
            let args = opt_json_arg(arguments_json, "arguments_json")?;
            if args.as_ref().is_some_and(|a| !a.is_object()) {
                return Err(FfiError::new(
                    QmStatus::InvalidJson,
                    "argument `arguments_json` must be a JSON object",
                ));
            }
            let mut guest = guest(m, timeout_ms)?;
            let reply = guest.execute(name, args)?;
            if let Some(out) = out {
                set_string(out, &json_text(&reply))?;
            }
            Ok(())
        })
    }
}

/// Runs a program in the guest through its agent (`guest-exec`) and waits for it to end.
///
/// `argv_json` is a JSON array of strings (UTF-8): the program (a path in the guest, or a name
/// the agent looks up in its `PATH`) and its arguments, e.g. `["/bin/sh", "-c", "uname -r"]`;
/// anything else is `QM_STATUS_INVALID_JSON`. The program reads `input_len` bytes from `input`
/// on its standard input (`input` may be NULL when `input_len` is 0: an empty input).
/// `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s) limits the whole call; on `QM_STATUS_TIMEOUT` the
/// program may still run in the guest.
///
/// On success: `*out_exit_code` receives its exit code (-1 when a signal ended it),
/// `*out_signal` that signal (0 when none), and `*out_stdout` / `*out_stderr` what it wrote,
/// as written (any bytes, NUL-terminated by the library; free with `qm_string_free()`), with
/// their lengths in `*out_stdout_len` / `*out_stderr_len`. Every out-pointer may be NULL when
/// the value is not wanted. Output is captured by the agent (qemu-ga keeps at most 16 MiB of
/// each stream) and comes back in one answer, bounded like a QMP message: output larger than
/// about 7 MiB in all is `QM_STATUS_PROTOCOL` (write it to a file and use
/// `qm_machine_guest_copy_out()`). Errors otherwise as for `qm_machine_guest_ping()`; a
/// program the agent cannot start is `QM_STATUS_QMP_ERROR`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `argv_json` NULL or NUL-terminated;
/// `input` valid for `input_len` bytes (or NULL with 0); each out-pointer NULL or valid for
/// writing.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qm_machine_guest_exec(
    machine: *mut QmMachine,
    argv_json: *const c_char,
    input: *const u8,
    input_len: usize,
    timeout_ms: i64,
    out_exit_code: *mut i64,
    out_signal: *mut i32,
    out_stdout: *mut *mut c_char,
    out_stdout_len: *mut usize,
    out_stderr: *mut *mut c_char,
    out_stderr_len: *mut usize,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let exit_code = opt_out_arg(out_exit_code);
            let signal = opt_out_arg(out_signal);
            let stdout = opt_out_arg(out_stdout);
            let stdout_len = opt_out_arg(out_stdout_len);
            let stderr = opt_out_arg(out_stderr);
            let stderr_len = opt_out_arg(out_stderr_len);
            let timeout = timeout_arg(timeout_ms, DEFAULT_GUEST_TIMEOUT)?;
            let argv = argv_arg(argv_json)?;
            let input = slice_arg(input, input_len, "input")?;
            let mut command = ExecCommand::new(argv[0].clone()).args(argv[1..].iter().cloned());
            if !input.is_empty() {
                command = command.input(input.to_vec());
            }
            let output = m
                .machine()
                .guest()?
                .with_timeout(timeout)
                .exec(&command, timeout)?;
            if let Some(out) = stdout {
                set_string(out, &output.stdout)?;
            }
            if let Some(out) = stderr {
                set_string(out, &output.stderr)?;
            }
            if let Some(n) = stdout_len {
                *n = output.stdout.len();
            }
            if let Some(n) = stderr_len {
                *n = output.stderr.len();
            }
            if let Some(c) = exit_code {
                *c = output.exit_code.unwrap_or(-1);
            }
            if let Some(s) = signal {
                *s = output
                    .signal
                    .and_then(|s| i32::try_from(s).ok())
                    .unwrap_or(0);
            }
            Ok(())
        })
    }
}

/// The program and arguments of `qm_machine_guest_exec()`.
///
/// # Safety
/// `p` must be NULL or NUL-terminated.
unsafe fn argv_arg(p: *const c_char) -> Result<Vec<String>, FfiError> {
    // SAFETY: forwarded.
    let value = unsafe { opt_json_arg(p, "argv_json") }?.ok_or(FfiError::null("argv_json"))?;
    let invalid = || {
        FfiError::new(
            QmStatus::InvalidJson,
            "argument `argv_json` must be a JSON array of strings, the program first",
        )
    };
    let Value::Array(items) = value else {
        return Err(invalid());
    };
    let argv: Vec<String> = items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            _ => Err(invalid()),
        })
        .collect::<Result<_, _>>()?;
    if argv.is_empty() || argv[0].is_empty() {
        return Err(invalid());
    }
    Ok(argv)
}

/// Copies the host file `host_path` (any bytes) into the file `guest_path` in the guest
/// (UTF-8: the agent's protocol carries text; created or truncated) through the guest agent,
/// in chunks of 256 KiB, never holding the whole file in memory; `*out_bytes` (if not NULL)
/// receives how many bytes were copied. `timeout_ms` limits the whole copy;
/// `QM_TIMEOUT_DEFAULT` sets no limit on the whole, and 30 s on each chunk (each call to the
/// agent). A host file that cannot be opened is `QM_STATUS_IO`; errors otherwise as for
/// `qm_machine_guest_ping()` (the guest file may then be partly written).
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `host_path` and `guest_path` NULL or
/// NUL-terminated; `out_bytes` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_guest_copy_in(
    machine: *mut QmMachine,
    host_path: *const c_char,
    guest_path: *const c_char,
    timeout_ms: i64,
    out_bytes: *mut u64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = opt_out_arg(out_bytes);
            let host: PathBuf = path_arg(host_path, "host_path")?;
            let inside = str_arg(guest_path, "guest_path")?;
            let n = copy_guest(m, timeout_ms)?.copy_in_file(&host, inside)?;
            if let Some(out) = out {
                *out = n;
            }
            Ok(())
        })
    }
}

/// Copies the file `guest_path` in the guest (UTF-8) into the host file `host_path` (any bytes;
/// created with mode 0600, or truncated) through the guest agent, in chunks of 256 KiB, never
/// holding the whole file in memory; `*out_bytes` (if not NULL) receives how many bytes were
/// copied. Timeout and errors as for `qm_machine_guest_copy_in()` (the host file may then be
/// partly written).
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `guest_path` and `host_path` NULL or
/// NUL-terminated; `out_bytes` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_guest_copy_out(
    machine: *mut QmMachine,
    guest_path: *const c_char,
    host_path: *const c_char,
    timeout_ms: i64,
    out_bytes: *mut u64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = opt_out_arg(out_bytes);
            let inside = str_arg(guest_path, "guest_path")?;
            let host: PathBuf = path_arg(host_path, "host_path")?;
            let n = copy_guest(m, timeout_ms)?.copy_out_file(inside, &host)?;
            if let Some(out) = out {
                *out = n;
            }
            Ok(())
        })
    }
}

/// The guest for a copy: `timeout_ms` on the whole, or the default per chunk.
fn copy_guest(m: &mut QmMachine, timeout_ms: i64) -> Result<Guest<'_>, FfiError> {
    let whole: Duration = timeout_arg(timeout_ms, DEFAULT_GUEST_TIMEOUT)?;
    let guest = m.machine().guest()?;
    Ok(if timeout_ms == crate::args::QM_TIMEOUT_DEFAULT {
        guest.with_timeout(DEFAULT_GUEST_TIMEOUT)
    } else {
        guest.with_timeout(whole).with_deadline(whole)
    })
}

/// Asks the guest to power down, reboot or halt through its agent (`guest-shutdown`): `mode`
/// is `"powerdown"` (also when NULL), `"reboot"` or `"halt"`; anything else is
/// `QM_STATUS_INVALID_ARGUMENT`. The agent answers nothing when it succeeds, so the library
/// sends a `guest-ping` behind it and returns `QM_STATUS_OK` when that is answered with no
/// error before it, or when the guest shows it is going down (its agent's port closes, QEMU
/// reports `SHUTDOWN` or `RESET`, or exits); an error answer is `QM_STATUS_QMP_ERROR`;
/// neither within `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s) is `QM_STATUS_TIMEOUT`. Then
/// wait for what follows with `qm_machine_event_wait()`: `SHUTDOWN` (and QEMU's exit,
/// `qm_machine_wait()`) after a power-down, `RESET` after a reboot; a halted guest makes QEMU
/// report nothing.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `mode` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_guest_shutdown(
    machine: *mut QmMachine,
    mode: *const c_char,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let timeout = timeout_arg(timeout_ms, DEFAULT_GUEST_TIMEOUT)?;
            let mode = match opt_str_arg(mode, "mode")? {
                None => ShutdownMode::Powerdown,
                Some(name) => name
                    .parse::<ShutdownMode>()
                    .map_err(|e| FfiError::invalid(format!("argument `mode`: {e}")))?,
            };
            Ok(m.machine().guest()?.with_timeout(timeout).shutdown(mode)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use qemu_process::{Error, QmpError};

    use crate::error::FfiError;
    use crate::status::QmStatus;

    #[test]
    fn the_agents_errors_become_statuses() {
        let answered = FfiError::from(Error::GuestAgent {
            command: "guest-file-open".into(),
            error: QmpError {
                class: qmp_proto::ErrorClass::GenericError,
                desc: "failed to open file".into(),
            },
        });
        assert_eq!(answered.status, QmStatus::QmpError);
        assert_eq!(
            answered.qmp,
            Some(("GenericError".into(), "failed to open file".into()))
        );
        assert!(
            answered.message.contains("guest-file-open"),
            "{}",
            answered.message
        );
        let gone = FfiError::from(Error::GuestAgentGone {
            what: "the guest agent's port closed".into(),
        });
        assert_eq!(gone.status, QmStatus::Disconnected);
        assert!(gone.message.contains("port closed"), "{}", gone.message);
    }
}
