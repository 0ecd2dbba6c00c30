//! `qm_config`: what to launch, built from JSON or with setters.

use std::ffi::c_char;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use qemu_process::{AccelChoice, MachineConfig, DEFAULT_BINARY};

use crate::args::{bytes_arg, opt_str_arg, out_arg, path_arg};
use crate::error::{guard, guard_value, FfiError};
use crate::handle::{borrow, into_handle, release, Handle};
use crate::status::QmStatus;

/// The accelerator values `qm_config_set_accel()` takes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QmAccel {
    /// KVM when `/dev/kvm` is usable and the guest matches the host, else TCG; the environment
    /// variable `QEMU_MACHINE_ACCEL` overrides it. Adds nothing when the arguments choose an
    /// accelerator themselves (`-accel`, `-machine accel=`, `-enable-kvm`).
    Auto = 0,
    /// `-accel kvm`.
    Kvm = 1,
    /// `-accel tcg`.
    Tcg = 2,
    /// No `-accel` argument: the arguments decide.
    None = 3,
}

/// A launch configuration. Create it with `qm_config_new()` or `qm_config_from_json()`, free it
/// with `qm_config_free()`. Not thread-safe: use a config from one thread at a time (it may move
/// between threads).
pub struct QmConfig {
    /// The launch description: a raw command line, or a `vm` description.
    pub(crate) config: MachineConfig,
}

impl Handle for QmConfig {
    const NAME: &'static str = "qm_config";
}

fn config_from_json(text: &[u8]) -> Result<QmConfig, FfiError> {
    let text = std::str::from_utf8(text).map_err(|e| {
        FfiError::new(
            QmStatus::InvalidJson,
            format!("invalid configuration JSON: not UTF-8: {e}"),
        )
    })?;
    let config = MachineConfig::from_json(text)
        .map_err(|e| FfiError::new(QmStatus::InvalidJson, e.to_string()))?;
    Ok(QmConfig { config })
}

/// Creates a configuration that runs `qemu-system-x86_64` (looked up in `PATH`) with no
/// arguments, the accelerator chosen automatically (`QM_ACCEL_AUTO`), a launch timeout and a QMP
/// command timeout of 30 s each, no console, and at most 65536 kept events.
///
/// # Safety
/// `out` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_config_new(out: *mut *mut QmConfig) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_arg(out, "out") }?;
        *out = into_handle(QmConfig {
            config: MachineConfig::new(DEFAULT_BINARY),
        })?;
        Ok(())
    })
}

/// Creates a configuration from a JSON object (UTF-8; the JSON form of qemu-process's
/// `MachineConfig`). Every field is optional:
/// `binary` (path or name), `args` (array of strings), `accel` (`"auto"`, `"kvm"`, `"tcg"`,
/// `"none"`), `temp_dir`, `launch_timeout_ms`, `qmp_timeout_ms`, `console` (bool),
/// `console_log` (path), `console_buffer_bytes`, `console_input_buffer_bytes`, `max_events`,
/// `wrapper` (array of strings: a command QEMU's command line is appended to), `env` (object of
/// strings, added to QEMU's environment; `null` removes a variable), `oob` (bool: negotiate
/// out-of-band execution, default true), `qmp_ids` (bool: an id with every command, default
/// false), `display_none` (bool: add `-display none`, default true), `max_message_size` (bytes),
/// `qmp` (bool: the library's own QMP connection, default true), `qmp_listen` (array of
/// `"unix:PATH"` / `"tcp:[HOST:]PORT"`: QMP servers for other clients), `monitor_null` (bool),
/// `console_device` (a device type, or `"virtconsole"`), `console_index`, `console_pty` (bool),
/// `qtest` (bool), `name`, `log_dir`, `launch_settle_ms` (see the matching setters below),
/// and `vm`: a VM description (`arch`, `memory`, `smp`, `kernel`, `disks`, `nics`, `forwards`,
/// `cloud_init`, `vnc`, `uefi`, `guest_agent` (a port for the guest agent, for the
/// `qm_machine_guest_*()` functions), ...) that the library turns into a command line, preparing
/// disks, the cloud-init seed and firmware copies itself; with `vm`, `args` and `display_none`
/// are not allowed. Unknown fields, and JSON that is not valid, are `QM_STATUS_INVALID_JSON`
/// with a message naming what is wrong.
///
/// The setters below (`qm_config_set_*`, `qm_config_add_*`) change the same fields;
/// `qm_config_add_arg()` is refused on a configuration with `vm` (`QM_STATUS_INVALID_STATE`).
///
/// # Safety
/// `json` must be NULL or a NUL-terminated string; `out` NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_config_from_json(
    json: *const c_char,
    out: *mut *mut QmConfig,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_arg(out, "out") }?;
        // SAFETY: forwarded from this function's contract.
        let text = unsafe { bytes_arg(json, "json") }?;
        *out = into_handle(config_from_json(text)?)?;
        Ok(())
    })
}

/// Runs `f` on the config behind `config`.
///
/// # Safety
/// None on `config`: it is looked up in the registry of handles, never dereferenced. (The
/// function stays `unsafe` so that its callers' `unsafe` blocks, which also cover the C
/// arguments their closures read, are unchanged.)
pub(crate) unsafe fn with_config(
    config: *mut QmConfig,
    f: impl FnOnce(&mut MachineConfig) -> Result<(), FfiError>,
) -> QmStatus {
    guard(|| {
        let mut c = borrow(config, "config")?;
        f(&mut c.config)
    })
}

/// Sets the QEMU binary: a path (any bytes), or a name looked up in `PATH`. A binary that cannot
/// be found or executed makes `qm_machine_launch()` fail with `QM_STATUS_BINARY_NOT_FOUND`.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `path` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_binary(
    config: *mut QmConfig,
    path: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.binary(path_arg(path, "path")?);
            Ok(())
        })
    }
}

/// Appends one argument (any bytes) to QEMU's command line, passed as is: no shell, no
/// splitting, no quoting needed.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `arg` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_add_arg(config: *mut QmConfig, arg: *const c_char) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            let bytes = bytes_arg(arg, "arg")?;
            if c.get_vm().is_some() {
                return Err(FfiError::new(
                    QmStatus::InvalidState,
                    "this configuration has a `vm` description: put extra QEMU arguments in \
                     `vm.extra_args`",
                ));
            }
            c.arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes));
            Ok(())
        })
    }
}

/// Chooses the accelerator: one of the `qm_accel` values, given as an integer; anything else is
/// `QM_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_accel(config: *mut QmConfig, accel: i32) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            let a = match accel {
                0 => AccelChoice::Auto,
                1 => AccelChoice::Kvm,
                2 => AccelChoice::Tcg,
                3 => AccelChoice::None,
                n => {
                    return Err(FfiError::invalid(format!(
                        "argument `accel` is {n}, not a qm_accel value (0 to 3)"
                    )))
                }
            };
            c.accel(a);
            Ok(())
        })
    }
}

/// Sets the launch deadline, in milliseconds: how long `qm_machine_launch()` waits for QMP to be
/// negotiated (or QEMU to exit) before it fails with `QM_STATUS_TIMEOUT`, leaving nothing behind.
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_launch_timeout_ms(
    config: *mut QmConfig,
    ms: u64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.launch_timeout(Duration::from_millis(ms));
            Ok(())
        })
    }
}

/// Sets the machine's QMP timeout, in milliseconds: what `qm_machine_execute()` with
/// `QM_TIMEOUT_DEFAULT` waits for a reply, and the limit of the commands other functions run
/// (`qm_machine_status()`, `qm_machine_pause()`, ...).
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_qmp_timeout_ms(config: *mut QmConfig, ms: u64) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.qmp_timeout(Duration::from_millis(ms));
            Ok(())
        })
    }
}

/// Connects (or not) the guest's first serial port to a console the library drains, readable
/// with `qm_machine_console_read()`.
///
/// # Safety
/// `config` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_console(config: *mut QmConfig, enabled: bool) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.console(enabled);
            Ok(())
        })
    }
}

/// Also writes every console byte to the file at `path` (any bytes; created owner-only, mode
/// 0600, or an existing one truncated, keeping its mode), even bytes dropped from the console
/// buffer; enables the console.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `path` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_console_log(
    config: *mut QmConfig,
    path: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.console_log(path_arg(path, "path")?);
            Ok(())
        })
    }
}

/// Sets the directory (any bytes) under which each machine's private temp dir is made (default
/// `$TMPDIR`, else `/tmp`). The temp dir holds QEMU's log and sockets; it is removed when the
/// machine is freed, or by the guardian if the program dies.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `dir` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_set_temp_dir(
    config: *mut QmConfig,
    dir: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.temp_base_dir(path_arg(dir, "dir")?);
            Ok(())
        })
    }
}

/// Passes a duplicate of `fd` to QEMU at launch, in fdset `fdset` (`-add-fd`), with optional
/// `opaque` text (UTF-8, NULL for none). The duplicate is made now: the caller keeps its own
/// `fd` and may close it at once. A negative or closed `fd` is `QM_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `config` must be a handle from this library or NULL; `opaque` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_config_add_fd(
    config: *mut QmConfig,
    fd: RawFd,
    fdset: u32,
    opaque: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            let opaque = opt_str_arg(opaque, "opaque")?;
            let owned = dup_fd(fd)?;
            c.add_fd(owned, fdset, opaque);
            Ok(())
        })
    }
}

/// Duplicates a caller's descriptor (close-on-exec), checking that it is open.
pub(crate) fn dup_fd(fd: RawFd) -> Result<std::os::fd::OwnedFd, FfiError> {
    if fd < 0 {
        return Err(FfiError::invalid(format!(
            "argument `fd` is {fd}, not a descriptor"
        )));
    }
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table; a closed fd gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(FfiError::invalid(format!(
            "argument `fd` ({fd}) is not an open descriptor"
        )));
    }
    // SAFETY: the descriptor was just checked to be open; the borrow lasts only for the dup.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map_err(|e| FfiError::new(QmStatus::Io, format!("duplicating fd {fd}: {e}")))
}

/// Frees a configuration. Machines launched from it are not affected. NULL, a handle already
/// freed (it stays invalid for good, even after new handles are made), one not created by this
/// library and a `qm_machine` are ignored.
///
/// Never changes the calling thread's last error, so it can run between a failing call and the
/// reading of that call's error.
///
/// # Safety
/// Any value is accepted: `config` is looked up among the live handles, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn qm_config_free(config: *mut QmConfig) {
    // Not `guard`: a free reports nothing and leaves the last error alone.
    guard_value((), || drop(release(config, "config")));
}
