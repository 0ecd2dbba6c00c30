//! `qm_machine`: a running (or attached) QEMU.

use std::ffi::c_char;
use std::os::fd::{AsFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use qemu_process::{AttachTarget, Machine};
use serde_json::Value;

use crate::args::{opt_json_arg, opt_out_arg, out_arg, path_arg, set_string, str_arg, timeout_arg};
use crate::config::{dup_fd, QmConfig};
use crate::error::{guard, guard_value, FfiError};
use crate::handle::{borrow, into_handle, release, Handle};
use crate::status::QmStatus;

mod console;
mod display;
mod events;

pub use console::*;
pub use display::*;
pub use events::*;

/// The default deadline of operations other than QMP commands (shutdown, waits).
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// A QEMU process launched by this library, or one it attached to over QMP. Free it with
/// `qm_machine_free()`, which kills and reaps a launched QEMU if it still runs and removes its
/// temp dir. Not thread-safe: use a machine from one thread at a time (it may move between
/// threads).
pub struct QmMachine {
    machine: Box<Machine>,
    /// Console bytes taken from the machine but not yet read by the caller (when its buffer
    /// was smaller than what had arrived).
    console_pending: Vec<u8>,
}

impl QmMachine {
    pub(crate) fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }
}

impl Handle for QmMachine {
    const NAME: &'static str = "qm_machine";
}

fn new_machine(machine: Machine) -> Result<*mut QmMachine, FfiError> {
    into_handle(QmMachine {
        machine: Box::new(machine),
        console_pending: Vec::new(),
    })
}

/// Runs `f` on the machine behind `machine`.
///
/// # Safety
/// None on `machine`: it is looked up in the registry of handles, never dereferenced. (The
/// function stays `unsafe` so that its callers' `unsafe` blocks, which also cover the C
/// arguments their closures read, are unchanged.)
pub(crate) unsafe fn with_machine(
    machine: *mut QmMachine,
    f: impl FnOnce(&mut QmMachine) -> Result<(), FfiError>,
) -> QmStatus {
    guard(|| {
        let mut m = borrow(machine, "machine")?;
        f(&mut m)
    })
}

/// Stores the path `get` finds on the machine in `*out_path` (free with `qm_string_free()`);
/// `QM_STATUS_UNSUPPORTED` with `missing` as the message when it has none.
///
/// # Safety
/// As for [`with_machine`]; `out_path` NULL or valid for writing.
pub(crate) unsafe fn path_out(
    machine: *mut QmMachine,
    out_path: *mut *mut c_char,
    get: impl FnOnce(&Machine) -> Option<PathBuf>,
    missing: &str,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_path, "out_path")?;
            let path =
                get(m.machine()).ok_or_else(|| FfiError::new(QmStatus::Unsupported, missing))?;
            set_string(out, path.as_os_str().as_encoded_bytes())
        })
    }
}

pub(crate) fn json_text(v: &Value) -> Vec<u8> {
    // Serializing a serde_json::Value cannot fail (all keys are strings).
    serde_json::to_vec(v).unwrap_or_default()
}

/// Launches QEMU as `config` describes and waits (under the config's launch timeout) until QMP
/// is negotiated. QEMU is spawned by the process guardian (started now if it does not run yet),
/// leads a process group of its own, and has a private temp dir. On failure nothing is left
/// behind (no process, no temp dir): `QM_STATUS_LAUNCH_FAILED` when QEMU exits first (the message
/// holds its exit status, command line and output), `QM_STATUS_BINARY_NOT_FOUND` when the binary
/// cannot be found or executed, `QM_STATUS_TIMEOUT` when the launch timeout runs out. The config
/// is left as it was, and may launch more machines.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `out` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_launch(
    config: *const QmConfig,
    out: *mut *mut QmMachine,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_arg(out, "out") }?;
        let c = borrow(config, "config")?;
        *out = new_machine(Machine::launch(&c.config)?)?;
        Ok(())
    })
}

fn attach(target: AttachTarget, timeout_ms: i64, out: &mut *mut QmMachine) -> Result<(), FfiError> {
    let m = Machine::attach(target, timeout_arg(timeout_ms, DEFAULT_WAIT)?)?;
    *out = new_machine(m)?;
    Ok(())
}

/// Connects to the QMP server of a QEMU that is already running, at the unix socket `path` (any
/// bytes), retrying while the connection is refused or the socket does not exist yet, and
/// negotiates QMP, all within `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: one attempt, which
/// normally ends in `QM_STATUS_TIMEOUT` since negotiating takes a round trip). The machine is not
/// owned: `qm_machine_free()` only disconnects; `qm_machine_shutdown()`, `qm_machine_kill()` and
/// `qm_machine_wait()` are `QM_STATUS_UNSUPPORTED` (execute `quit` instead); `qm_machine_pid()`
/// gives 0. Its QMP timeout is 30 s.
///
/// # Safety
/// `path` must be NULL or NUL-terminated; `out` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_attach_unix(
    path: *const c_char,
    timeout_ms: i64,
    out: *mut *mut QmMachine,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_arg(out, "out") }?;
        // SAFETY: forwarded from this function's contract.
        let path: PathBuf = unsafe { path_arg(path, "path") }?;
        attach(AttachTarget::Unix(path), timeout_ms, out)
    })
}

/// Like `qm_machine_attach_unix()`, for a QMP server on TCP at `address`, an `"IP:PORT"` string
/// (`"127.0.0.1:4444"`, `"[::1]:4444"`; anything else is `QM_STATUS_INVALID_ARGUMENT`).
///
/// # Safety
/// `address` must be NULL or NUL-terminated; `out` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_attach_tcp(
    address: *const c_char,
    timeout_ms: i64,
    out: *mut *mut QmMachine,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_arg(out, "out") }?;
        // SAFETY: forwarded from this function's contract.
        let text = unsafe { str_arg(address, "address") }?;
        let addr = text.parse().map_err(|e| {
            FfiError::invalid(format!("argument `address` ({text:?}) is not IP:PORT: {e}"))
        })?;
        attach(AttachTarget::Tcp(addr), timeout_ms, out)
    })
}

/// Shared body of the execute functions.
///
/// # Safety
/// As for `qm_machine_execute`.
unsafe fn execute(
    machine: *mut QmMachine,
    command: *const c_char,
    arguments_json: *const c_char,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
    oob: bool,
) -> QmStatus {
    // SAFETY: forwarded from the caller's contract.
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
            let timeout = timeout_arg(timeout_ms, m.machine().qmp_timeout())?;
            let reply = if oob {
                m.machine().execute_oob(name, args, timeout)?
            } else {
                m.machine().execute_with_timeout(name, args, timeout)?
            };
            if let Some(out) = out {
                set_string(out, &json_text(&reply))?;
            }
            Ok(())
        })
    }
}

/// Runs the QMP command `command` (UTF-8) with `arguments_json` (a JSON object, or NULL for
/// none; anything else is `QM_STATUS_INVALID_JSON`) and waits up to `timeout_ms` for its reply
/// (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout, see `qm_config_set_qmp_timeout_ms()`; 0: the
/// command is sent, but the call fails with `QM_STATUS_TIMEOUT` unless its reply is already
/// there). On success, `*out_json` (if `out_json` is not NULL) receives the `return` value as
/// JSON; free it with `qm_string_free()`. When QEMU answers with an error the status is
/// `QM_STATUS_QMP_ERROR` and `qm_last_error_qmp_class()` / `qm_last_error_qmp_desc()` give its
/// class and description. The returned JSON keeps the members in QEMU's order, and numbers as
/// QEMU wrote them (a double reads back to the same bits). A reply larger than the bound on one
/// QMP message fails with `QM_STATUS_PROTOCOL`, its size and the bound in the message, and the
/// next command works. A `command` that cannot be a QMP command name (QAPI names: an ASCII
/// letter, then letters, digits, `-` and `_`, optionally after a `__RFQDN_` prefix; at most
/// 1024 bytes) fails with `QM_STATUS_INVALID_ARGUMENT` before anything is sent. Events that
/// arrive meanwhile are kept for `qm_machine_events()` / `qm_machine_event_wait()`. A
/// connection that closes first is `QM_STATUS_PROCESS_EXITED` or `QM_STATUS_DISCONNECTED`
/// (always the former once QEMU's exit is known, as after `qm_machine_shutdown()`).
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `command` and `arguments_json` NULL or
/// NUL-terminated; `out_json` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_execute(
    machine: *mut QmMachine,
    command: *const c_char,
    arguments_json: *const c_char,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        execute(
            machine,
            command,
            arguments_json,
            timeout_ms,
            out_json,
            false,
        )
    }
}

/// Like `qm_machine_execute()`, sent out-of-band (`exec-oob`), for the commands QEMU allows
/// out-of-band (e.g. `migrate-pause`; for others QEMU answers with an error,
/// `QM_STATUS_QMP_ERROR`). `QM_STATUS_INVALID_STATE` when out-of-band execution was not
/// negotiated (a config with `"oob": false`).
///
/// # Safety
/// As for `qm_machine_execute()`.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_execute_oob(
    machine: *mut QmMachine,
    command: *const c_char,
    arguments_json: *const c_char,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { execute(machine, command, arguments_json, timeout_ms, out_json, true) }
}

/// Passes a duplicate of `fd` to QEMU over the QMP socket (SCM_RIGHTS) and names it `name`
/// (UTF-8; QMP `getfd`), for use by later commands (e.g. a chardev or netdev with `fd=name`, or
/// `closefd`). The caller keeps its own `fd` and may close it at once.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_send_fd(
    machine: *mut QmMachine,
    fd: RawFd,
    name: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let name = str_arg(name, "name")?;
            let owned = dup_fd(fd)?;
            Ok(m.machine().send_fd(owned.as_fd(), name)?)
        })
    }
}

/// Stores QEMU's process id in `*out_pid` (0 for an attached machine, whose process this library
/// does not own). QEMU is a child of the guardian (see `qm_guardian_pid()`), not of the program.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_pid` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_pid(machine: *mut QmMachine, out_pid: *mut i32) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_pid, "out_pid")?;
            *out = m
                .machine()
                .pid()
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0);
            Ok(())
        })
    }
}

/// Asks QEMU for its run state (`query-status`) and stores it as a string such as `"running"`,
/// `"paused"`, `"shutdown"` or `"prelaunch"` in `*out_status` (free with `qm_string_free()`).
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_status` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_status(
    machine: *mut QmMachine,
    out_status: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_status, "out_status")?;
            let state = m.machine().status()?;
            set_string(out, state.as_str().as_bytes())
        })
    }
}

/// Pauses the guest's CPUs (`stop`).
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_pause(machine: *mut QmMachine) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_machine(machine, |m| Ok(m.machine().pause()?)) }
}

/// Resumes the guest's CPUs (`cont`).
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_resume(machine: *mut QmMachine) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_machine(machine, |m| Ok(m.machine().resume()?)) }
}

/// Resets the guest (`system_reset`), like pressing the reset button.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_reset(machine: *mut QmMachine) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_machine(machine, |m| Ok(m.machine().reset()?)) }
}

/// Presses the ACPI power button (`system_powerdown`) and waits up to `timeout_ms`
/// (`QM_TIMEOUT_DEFAULT`: 30 s) for the guest to shut down (the SHUTDOWN event).
/// `QM_STATUS_TIMEOUT` if it does not: the guest may ignore the button; the machine keeps
/// running.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_powerdown(
    machine: *mut QmMachine,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            m.machine()
                .powerdown(timeout_arg(timeout_ms, DEFAULT_WAIT)?)?;
            Ok(())
        })
    }
}

/// Shuts QEMU down: `quit`, then waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: no
/// waiting) for it to exit, and kills its process group (SIGKILL) and reaps it if it does not
/// (`QM_STATUS_NOT_GRACEFUL`: it is gone either way). The exit status and log stay readable
/// until `qm_machine_free()`. `QM_STATUS_OK` at once if QEMU had already exited;
/// `QM_STATUS_UNSUPPORTED` for an attached machine.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_shutdown(machine: *mut QmMachine, timeout_ms: i64) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            m.machine()
                .shutdown(timeout_arg(timeout_ms, DEFAULT_WAIT)?)?;
            Ok(())
        })
    }
}

/// Kills QEMU's process group at once (SIGKILL) and reaps QEMU. `QM_STATUS_OK` if it had already
/// exited; `QM_STATUS_UNSUPPORTED` for an attached machine.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_kill(machine: *mut QmMachine) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            m.machine().kill()?;
            Ok(())
        })
    }
}

/// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only checks) for QEMU to exit by
/// itself (a guest that powers off), and reaps it. `QM_STATUS_TIMEOUT` if it is still running;
/// `QM_STATUS_UNSUPPORTED` for an attached machine.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_wait(machine: *mut QmMachine, timeout_ms: i64) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            m.machine().wait(timeout_arg(timeout_ms, DEFAULT_WAIT)?)?;
            Ok(())
        })
    }
}

/// After QEMU has exited: stores its exit code in `*out_code` (-1 if a signal ended it) and the
/// signal in `*out_signal` (0 if none); either pointer may be NULL. `QM_STATUS_INVALID_STATE`
/// while it is still running (or has not been found exited yet: `qm_machine_wait()` finds out),
/// and for an attached machine.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; the out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_exit_status(
    machine: *mut QmMachine,
    out_code: *mut i32,
    out_signal: *mut i32,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let code = opt_out_arg(out_code);
            let signal = opt_out_arg(out_signal);
            let status = m.machine().exit_status().ok_or_else(|| {
                FfiError::new(
                    QmStatus::InvalidState,
                    "QEMU has not exited (or is not owned)",
                )
            })?;
            if let Some(c) = code {
                *c = status.code().unwrap_or(-1);
            }
            if let Some(s) = signal {
                *s = status.signal().unwrap_or(0);
            }
            Ok(())
        })
    }
}

/// Stores everything QEMU (and its wrapper) wrote to stdout and stderr so far, as written (any
/// bytes, possibly NUL bytes), in `*out_log`, NUL-terminated (free with `qm_string_free()`), and
/// its length in `*out_len` if `out_len` is not NULL. Readable after QEMU has exited too, until
/// `qm_machine_free()`. `QM_STATUS_UNSUPPORTED` for an attached machine.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_log` NULL or valid for writing;
/// `out_len` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_log(
    machine: *mut QmMachine,
    out_log: *mut *mut c_char,
    out_len: *mut usize,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_log, "out_log")?;
            let out_len = opt_out_arg(out_len);
            let log = m.machine().log_bytes()?;
            set_string(out, &log)?;
            if let Some(n) = out_len {
                *n = log.len();
            }
            Ok(())
        })
    }
}

/// Stores the descriptor to wait on (poll/epoll/select for readability) to drive this machine
/// from the caller's own event loop; after it becomes readable call `qm_machine_process_io()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_fd` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_poll_fd(machine: *mut QmMachine, out_fd: *mut i32) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_fd, "out_fd")?;
            *out = m.machine().poll_sources().poll;
            Ok(())
        })
    }
}

/// Reads and handles whatever QMP messages, console bytes and process exit are ready, without
/// blocking: events become available to `qm_machine_events()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_process_io(machine: *mut QmMachine) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_machine(machine, |m| Ok(m.machine().process_io()?)) }
}

/// Frees a machine: a launched QEMU still running has its process group killed (SIGKILL; never
/// a graceful shutdown, so that freeing a forgotten machine never waits for its guest) and is
/// reaped (waiting at most 10 s for the kernel to finish it), and its temp dir is removed (logs
/// in a log dir stay); an attached one is only disconnected. Call `qm_machine_shutdown()` first
/// for a graceful stop. NULL, a handle already freed (it stays
/// invalid for good: freeing it again never reaches a machine created after it), one not created
/// by this library and a `qm_config` are ignored.
///
/// Never changes the calling thread's last error, so it can run between a failing call and the
/// reading of that call's error.
///
/// # Safety
/// Any value is accepted: `machine` is looked up among the live handles, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_free(machine: *mut QmMachine) {
    // Not `guard`: a free reports nothing and leaves the last error alone. The machine is
    // dropped (QEMU killed and reaped) after the registry's lock is released.
    guard_value((), || drop(release(machine, "machine")));
}
