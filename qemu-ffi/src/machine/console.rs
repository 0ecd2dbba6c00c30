//! `qm_machine_*` console: read, take, write, count what was dropped, wait for text.

use std::ffi::c_char;

use super::{with_machine, QmMachine, DEFAULT_WAIT};
use crate::args::{bytes_arg, opt_out_arg, out_arg, set_string, slice_arg, timeout_arg};
use crate::error::FfiError;
use crate::status::QmStatus;

/// Copies up to `len` console bytes received so far (as the guest wrote them: any bytes) into
/// `buf` and stores how many in `*out_len` (0 when nothing is waiting; the call does not block).
/// Bytes that do not fit stay for the next call. `QM_STATUS_UNSUPPORTED` for a machine launched
/// without the console.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `buf` valid for `len` bytes;
/// `out_len` NULL or valid for a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_console_read(
    machine: *mut QmMachine,
    buf: *mut u8,
    len: usize,
    out_len: *mut usize,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { take_console(machine, buf, len, out_len, true) }
}

/// Like `qm_machine_console_read()`, but reads nothing from the console socket: see
/// `qm_machine_take_events()` for the loop this is for.
///
/// # Safety
/// As for `qm_machine_console_read()`.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_take_console(
    machine: *mut QmMachine,
    buf: *mut u8,
    len: usize,
    out_len: *mut usize,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { take_console(machine, buf, len, out_len, false) }
}

/// Shared body of the console takers; `read` first reads whatever is ready.
///
/// # Safety
/// As for `qm_machine_console_read()`.
unsafe fn take_console(
    machine: *mut QmMachine,
    buf: *mut u8,
    len: usize,
    out_len: *mut usize,
    read: bool,
) -> QmStatus {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        with_machine(machine, |m| {
            let out_len = out_arg(out_len, "out_len")?;
            if buf.is_null() && len > 0 {
                return Err(FfiError::null("buf"));
            }
            if !m.machine().has_console() {
                return Err(FfiError::new(
                    QmStatus::Unsupported,
                    "this machine has no console (enable it with qm_config_set_console())",
                ));
            }
            if m.console_pending.len() < len {
                let fresh = if read {
                    m.machine().console_read()
                } else {
                    m.machine().take_console()
                };
                m.console_pending.extend_from_slice(&fresh);
            }
            let n = m.console_pending.len().min(len);
            if n > 0 {
                // SAFETY: `buf` is valid for `len >= n` bytes by contract and does not overlap
                // the library's own buffer.
                std::ptr::copy_nonoverlapping(m.console_pending.as_ptr(), buf, n);
                m.console_pending.drain(..n);
            }
            *out_len = n;
            Ok(())
        })
    }
}

/// Sends `len` bytes to the guest's first serial port, waiting up to `timeout_ms`
/// (`QM_TIMEOUT_DEFAULT`: 30 s; 0: take what fits without waiting) until all of them are
/// accepted: written to the console socket or queued within the machine's bound of console input
/// (64 KiB). Accepted bytes reach the guest in order as it reads them.
///
/// A guest that does not read its console (a paused VM) makes the call wait; if the deadline
/// passes first it returns `QM_STATUS_TIMEOUT`, and `*out_written` (if not NULL) holds how many
/// bytes, from the start of `data`, were accepted: write the rest later to resume. On
/// `QM_STATUS_OK` `*out_written` is `len`; on other failures 0 (without a console:
/// `QM_STATUS_UNSUPPORTED`; once QEMU has closed it: `QM_STATUS_PROCESS_EXITED` or
/// `QM_STATUS_DISCONNECTED`).
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `data` valid for `len` bytes;
/// `out_written` NULL or valid for a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_console_write(
    machine: *mut QmMachine,
    data: *const u8,
    len: usize,
    timeout_ms: i64,
    out_written: *mut usize,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let written = opt_out_arg(out_written);
            let bytes = slice_arg(data, len, "data")?;
            let result = m
                .machine()
                .console_write(bytes, timeout_arg(timeout_ms, DEFAULT_WAIT)?);
            if let Some(w) = written {
                *w = match &result {
                    Ok(()) => len,
                    Err(qemu_process::Error::ConsoleWriteTimeout { accepted, .. }) => *accepted,
                    Err(_) => 0,
                };
            }
            Ok(result?)
        })
    }
}

/// Stores in `*out_count` how many console bytes were dropped from memory since launch because
/// the machine's console buffer was full (`console_buffer_bytes`, 1 MiB by default; a console
/// log file still gets every byte). 0 for a machine without a console.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_count` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_console_bytes_dropped(
    machine: *mut QmMachine,
    out_count: *mut u64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_count, "out_count")?;
            *out = m.machine().console_bytes_dropped();
            Ok(())
        })
    }
}

/// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: looks only at output already
/// received) until the console shows `pattern` (any bytes but NUL, not empty; a plain string, not
/// a regular expression). If `out_before` is not NULL it receives, NUL-terminated, the console
/// output before the match, as the guest wrote it (free with `qm_string_free()`), and `*out_len`
/// (if not NULL) its length, which may include NUL bytes. Output after the match stays readable.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `pattern` NULL or NUL-terminated;
/// `out_before` and `out_len` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_console_wait_for(
    machine: *mut QmMachine,
    pattern: *const c_char,
    timeout_ms: i64,
    out_before: *mut *mut c_char,
    out_len: *mut usize,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out_before = opt_out_arg(out_before);
            let out_len = opt_out_arg(out_len);
            let pattern = bytes_arg(pattern, "pattern")?;
            if pattern.is_empty() {
                return Err(FfiError::invalid("argument `pattern` is empty"));
            }
            if !m.console_pending.is_empty() {
                // Give bytes held back by a short console_read back to the search.
                return Err(FfiError::new(
                    QmStatus::InvalidState,
                    "console bytes from a partial qm_machine_console_read() are still unread; \
                     read them first",
                ));
            }
            let before = m
                .machine()
                .console_wait_for(pattern, timeout_arg(timeout_ms, DEFAULT_WAIT)?)?;
            if let Some(out) = out_before {
                set_string(out, &before)?;
            }
            if let Some(n) = out_len {
                *n = before.len();
            }
            Ok(())
        })
    }
}
