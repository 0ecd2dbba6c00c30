//! `qm_machine_*` what a `vm` description adds to be reached from the host: forwarded ports,
//! the VNC socket, screenshots.

use std::ffi::c_char;
use std::path::Path;

use qemu_process::ScreenshotFormat;

use super::{path_out, with_machine, QmMachine};
use crate::args::{opt_out_arg, opt_str_arg, out_arg, path_arg, set_string, str_arg};
use crate::error::FfiError;
use crate::status::QmStatus;

/// For a machine launched from a `vm` description: stores where QEMU listens for the port
/// forward named `name` (UTF-8), as `"IP:PORT"` in `*out_address` (free with `qm_string_free()`):
/// `127.0.0.1:PORT` unless the forward's `host_addr` says otherwise, `0.0.0.0:PORT` when it
/// asked for every address (reachable from the network; connect to `127.0.0.1:PORT` locally).
/// With a host port of 0 in the description this is the port QEMU picked.
/// `QM_STATUS_INVALID_ARGUMENT` if there is no forward of that name; `QM_STATUS_UNSUPPORTED` for
/// a machine not launched from a `vm` description.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `name` NULL or NUL-terminated;
/// `out_address` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_forwarded_port(
    machine: *mut QmMachine,
    name: *const c_char,
    out_address: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_address, "out_address")?;
            let name = str_arg(name, "name")?;
            if m.machine().vm_launch().is_none() {
                return Err(FfiError::new(
                    QmStatus::Unsupported,
                    "this machine was not launched from a `vm` description",
                ));
            }
            let addr = m.machine().forwarded_port(name).ok_or_else(|| {
                FfiError::invalid(format!("this machine has no port forward named {name:?}"))
            })?;
            set_string(out, addr.to_string().as_bytes())
        })
    }
}

/// For a machine launched from a `vm` description with VNC: stores the path of its VNC unix
/// socket in `*out_path` (free with `qm_string_free()`). `QM_STATUS_UNSUPPORTED` without VNC or
/// a `vm` description.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_path` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_vnc_socket(
    machine: *mut QmMachine,
    out_path: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        path_out(
            machine,
            out_path,
            |m| m.vnc_socket().map(Path::to_path_buf),
            "this machine has no VNC display",
        )
    }
}

/// Saves a screenshot of the machine's display to `path` (UTF-8, since QMP carries it as text;
/// QMP `screendump`) as PNG when `format` is `"png"`, PPM when `"ppm"`, and PNG if this QEMU
/// supports it else PPM when `format` is NULL; a machine without a display (no VGA and no VNC)
/// is QEMU's error (`QM_STATUS_QMP_ERROR`), and no file is left behind; the path written (its extension may
/// differ: a `.png` path becomes `.ppm` then) is stored in `*out_path` if that is not NULL (free
/// with `qm_string_free()`). Another `format`, or a `path` that is not UTF-8, is
/// `QM_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `path` and `format` NULL or
/// NUL-terminated; `out_path` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_screendump(
    machine: *mut QmMachine,
    path: *const c_char,
    format: *const c_char,
    out_path: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = opt_out_arg(out_path);
            let path = path_arg(path, "path")?;
            let format = match opt_str_arg(format, "format")? {
                None => None,
                Some("png") => Some(ScreenshotFormat::Png),
                Some("ppm") => Some(ScreenshotFormat::Ppm),
                Some(other) => {
                    return Err(FfiError::invalid(format!(
                        "argument `format` is {other:?}, expected \"png\", \"ppm\" or NULL"
                    )))
                }
            };
            let written = m.machine().screendump(&path, format)?;
            if let Some(out) = out {
                set_string(out, written.as_os_str().as_encoded_bytes())?;
            }
            Ok(())
        })
    }
}
