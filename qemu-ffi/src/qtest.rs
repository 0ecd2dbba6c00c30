//! The qtest machine in C: `qm_machine_qtest*()`, for a machine launched with
//! `qm_config_set_qtest()` (or `"qtest": true`).

use std::ffi::c_char;
use std::time::{Duration, Instant};

use qemu_process::Qtest;
use serde_json::{json, Value};

use crate::args::{opt_out_arg, opt_str_arg, out_arg, set_string, str_arg, timeout_arg};
use crate::error::FfiError;
use crate::machine::{json_text, with_machine, QmMachine};
use crate::status::QmStatus;

/// How many bytes one `b64read` asks for (its reply stays well within the line bound).
const READ_CHUNK: usize = 512 * 1024;

/// Runs `f` with the machine's qtest client, its calls limited by `timeout_ms`
/// (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout).
///
/// # Safety
/// As for `with_machine`.
unsafe fn with_qtest(
    machine: *mut QmMachine,
    timeout_ms: i64,
    f: impl FnOnce(&mut Qtest<'_>, Duration) -> Result<(), FfiError>,
) -> QmStatus {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        with_machine(machine, |m| {
            let timeout = timeout_arg(timeout_ms, m.machine().qmp_timeout())?;
            let mut qtest = m.machine().qtest()?;
            qtest.timeout(timeout);
            f(&mut qtest, timeout)
        })
    }
}

fn width_error(width: u32, allowed: &str) -> FfiError {
    FfiError::invalid(format!(
        "argument `width` is {width}: a width in bytes, {allowed}"
    ))
}

fn value_error(value: u64, width: u32) -> FfiError {
    FfiError::invalid(format!(
        "argument `value` ({value:#x}) does not fit {width} byte{}",
        if width == 1 { "" } else { "s" }
    ))
}

/// Sends the qtest command `line` (UTF-8, without newline; QEMUQtestMachine's `qtest()`) and
/// waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout) for QEMU's
/// answer. On `OK`, `*out_reply` (if `out_reply` is not NULL) receives the answer's values, the
/// text after `OK ` (`"0x29c08086"` for `inl 0xcfc`; empty for a bare `OK`); free it with
/// `qm_string_free()`. An answer `FAIL ...` or `ERR ...` is `QM_STATUS_QTEST_ERROR`, the message
/// naming the line and QEMU's answer. A line QEMU would misread or abort on (not words of
/// printable ASCII separated by single spaces, a known command without its arguments, a port
/// above 0xffff, ...) is refused before it is sent: `QM_STATUS_INVALID_ARGUMENT`.
/// `QM_STATUS_UNSUPPORTED` for a machine without a qtest channel; `QM_STATUS_PROCESS_EXITED`
/// once QEMU has exited. A call that times out leaves the channel usable (the late answer is
/// dropped). IRQ notifications that arrive meanwhile are kept for `qm_machine_qtest_irqs()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `line` NULL or NUL-terminated;
/// `out_reply` NULL or valid for a pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest(
    machine: *mut QmMachine,
    line: *const c_char,
    timeout_ms: i64,
    out_reply: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let out = opt_out_arg(out_reply);
            let line = str_arg(line, "line")?;
            let reply = q.raw(line)?;
            if let Some(out) = out {
                set_string(out, reply.as_bytes())?;
            }
            Ok(())
        })
    }
}

/// Reads an I/O port: `inb`, `inw` or `inl` for a `width` of 1, 2 or 4 bytes (anything else
/// is `QM_STATUS_INVALID_ARGUMENT`), the value in `*out_value`. Timeouts and errors as for
/// `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_in(
    machine: *mut QmMachine,
    width: u32,
    port: u16,
    timeout_ms: i64,
    out_value: *mut u32,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let out = out_arg(out_value, "out_value")?;
            *out = match width {
                1 => u32::from(q.inb(port)?),
                2 => u32::from(q.inw(port)?),
                4 => q.inl(port)?,
                n => return Err(width_error(n, "1, 2 or 4")),
            };
            Ok(())
        })
    }
}

/// Writes an I/O port: `outb`, `outw` or `outl` for a `width` of 1, 2 or 4 bytes; a `value`
/// that does not fit is `QM_STATUS_INVALID_ARGUMENT`. Timeouts and errors as for
/// `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_out(
    machine: *mut QmMachine,
    width: u32,
    port: u16,
    value: u32,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let too_big = || value_error(u64::from(value), width);
            match width {
                1 => q.outb(port, u8::try_from(value).map_err(|_| too_big())?)?,
                2 => q.outw(port, u16::try_from(value).map_err(|_| too_big())?)?,
                4 => q.outl(port, value)?,
                n => return Err(width_error(n, "1, 2 or 4")),
            }
            Ok(())
        })
    }
}

/// Reads a value of guest memory at `addr` (the first CPU's address space, the target's byte
/// order): `readb`, `readw`, `readl` or `readq` for a `width` of 1, 2, 4 or 8 bytes, the
/// value in `*out_value`. Timeouts and errors as for `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_readn(
    machine: *mut QmMachine,
    width: u32,
    addr: u64,
    timeout_ms: i64,
    out_value: *mut u64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let out = out_arg(out_value, "out_value")?;
            *out = match width {
                1 => u64::from(q.readb(addr)?),
                2 => u64::from(q.readw(addr)?),
                4 => u64::from(q.readl(addr)?),
                8 => q.readq(addr)?,
                n => return Err(width_error(n, "1, 2, 4 or 8")),
            };
            Ok(())
        })
    }
}

/// Writes a value of guest memory at `addr`: `writeb`, `writew`, `writel` or `writeq` for a
/// `width` of 1, 2, 4 or 8 bytes; a `value` that does not fit is `QM_STATUS_INVALID_ARGUMENT`.
/// Timeouts and errors as for `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_writen(
    machine: *mut QmMachine,
    width: u32,
    addr: u64,
    value: u64,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let too_big = || value_error(value, width);
            match width {
                1 => q.writeb(addr, u8::try_from(value).map_err(|_| too_big())?)?,
                2 => q.writew(addr, u16::try_from(value).map_err(|_| too_big())?)?,
                4 => q.writel(addr, u32::try_from(value).map_err(|_| too_big())?)?,
                8 => q.writeq(addr, value)?,
                n => return Err(width_error(n, "1, 2, 4 or 8")),
            }
            Ok(())
        })
    }
}

/// Reads `len` bytes of guest memory at `addr` into `buf` (carried in base64, in pieces of
/// 512 KiB), all within `timeout_ms` (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout). `len`
/// 0 asks QEMU nothing. Errors as for `qm_machine_qtest()`; on failure `buf` may hold part of
/// the data.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `buf` valid for writing `len` bytes
/// (NULL only when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_read(
    machine: *mut QmMachine,
    addr: u64,
    buf: *mut u8,
    len: usize,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, timeout| {
            if len == 0 {
                return Ok(());
            }
            if buf.is_null() {
                return Err(FfiError::null("buf"));
            }
            // SAFETY: non-NULL and valid for `len` bytes by this function's contract.
            let out = std::slice::from_raw_parts_mut(buf, len);
            let start = Instant::now();
            for (i, chunk) in out.chunks_mut(READ_CHUNK).enumerate() {
                q.timeout(timeout.saturating_sub(start.elapsed()));
                let at = addr.wrapping_add((i * READ_CHUNK) as u64);
                chunk.copy_from_slice(&q.b64read(at, chunk.len())?);
            }
            Ok(())
        })
    }
}

/// Writes the `len` bytes at `data` to guest memory at `addr` (carried in base64). Timeouts
/// and errors as for `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `data` valid for reading `len` bytes
/// (NULL only when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_write(
    machine: *mut QmMachine,
    addr: u64,
    data: *const u8,
    len: usize,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let data = crate::args::slice_arg(data, len, "data")?;
            Ok(q.b64write(addr, data)?)
        })
    }
}

/// Fills `size` bytes of guest memory at `addr` with `value` (`memset`). Timeouts and errors as
/// for `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_memset(
    machine: *mut QmMachine,
    addr: u64,
    size: u64,
    value: u8,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe { with_qtest(machine, timeout_ms, |q, _| Ok(q.memset(addr, size, value)?)) }
}

fn clock_ns(ns: i64) -> Result<u64, FfiError> {
    u64::try_from(ns).map_err(|_| {
        FfiError::invalid(format!(
            "argument `ns` is {ns}: a number of nanoseconds, 0 or more"
        ))
    })
}

/// Advances the virtual clock by `ns` nanoseconds (`clock_step`; -1: to the next timer
/// deadline; any other negative value is `QM_STATUS_INVALID_ARGUMENT`) and stores the new clock
/// in `*out_clock` if that is not NULL. Needs the qtest accelerator: without it (Debian's QEMU
/// 7.2 has none; the machine then runs on TCG with `-S`) the call is `QM_STATUS_UNSUPPORTED`
/// and sends nothing. Timeouts and errors otherwise as for `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_clock` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_clock_step(
    machine: *mut QmMachine,
    ns: i64,
    timeout_ms: i64,
    out_clock: *mut i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let out = opt_out_arg(out_clock);
            let step = if ns == -1 { None } else { Some(clock_ns(ns)?) };
            let clock = q.clock_step(step)?;
            if let Some(out) = out {
                *out = i64::try_from(clock).unwrap_or(i64::MAX);
            }
            Ok(())
        })
    }
}

/// Advances the virtual clock to `ns` nanoseconds (`clock_set`; negative values are
/// `QM_STATUS_INVALID_ARGUMENT`) and stores the new clock in `*out_clock` if that is not
/// NULL. Needs the qtest accelerator, as `qm_machine_qtest_clock_step()` does.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_clock` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_clock_set(
    machine: *mut QmMachine,
    ns: i64,
    timeout_ms: i64,
    out_clock: *mut i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let out = opt_out_arg(out_clock);
            let clock = q.clock_set(clock_ns(ns)?)?;
            if let Some(out) = out {
                *out = i64::try_from(clock).unwrap_or(i64::MAX);
            }
            Ok(())
        })
    }
}

/// Intercepts the GPIO lines of the device at QOM path `path` (UTF-8): its inputs
/// (`irq_intercept_in`) or, with `out`, its outputs (`irq_intercept_out`); their changes are
/// then reported as IRQ notifications (`qm_machine_qtest_irqs()`). On a PC, `"ioapic"`'s inputs
/// are the ISA interrupts. QEMU intercepts one device per run: another one is
/// `QM_STATUS_QTEST_ERROR`, as is a path that names no device. Timeouts and errors as for
/// `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `path` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_irq_intercept(
    machine: *mut QmMachine,
    path: *const c_char,
    out: bool,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let path = str_arg(path, "path")?;
            if out {
                q.irq_intercept_out(path)?;
            } else {
                q.irq_intercept_in(path)?;
            }
            Ok(())
        })
    }
}

/// Drives input `num` of the GPIO list `name` (UTF-8; NULL: the unnamed list) of the device at
/// QOM path `path` to `level` (`set_irq_in`). Timeouts and errors as for `qm_machine_qtest()`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `path` and `name` NULL or
/// NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_set_irq_in(
    machine: *mut QmMachine,
    path: *const c_char,
    name: *const c_char,
    num: u32,
    level: i32,
    timeout_ms: i64,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_qtest(machine, timeout_ms, |q, _| {
            let path = str_arg(path, "path")?;
            let name = opt_str_arg(name, "name")?;
            Ok(q.set_irq_in(path, name, num, level)?)
        })
    }
}

/// Takes the IRQ notifications of intercepted lines, oldest first, as a JSON array of
/// `{"num": N, "raised": true|false}` in `*out_json` (free with `qm_string_free()`): those
/// received so far, or, when there is none, the first to arrive within `timeout_ms`
/// (`QM_TIMEOUT_DEFAULT`: 30 s; 0: no waiting), which is `QM_STATUS_TIMEOUT` when none comes.
/// Notifications arrive whenever the machine waits for anything (a QMP reply, an event, a
/// qtest answer), and are kept in order (at most 4096; more are counted and dropped).
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_qtest_irqs(
    machine: *mut QmMachine,
    timeout_ms: i64,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_json, "out_json")?;
            let timeout = timeout_arg(timeout_ms, crate::machine::DEFAULT_WAIT)?;
            let mut q = m.machine().qtest()?;
            let mut irqs = q.take_irqs();
            if irqs.is_empty() {
                irqs.push(q.irq_wait(timeout)?);
                irqs.extend(q.take_irqs());
            }
            let list: Vec<Value> = irqs
                .iter()
                .map(|i| json!({"num": i.num, "raised": i.raised}))
                .collect();
            set_string(out, &json_text(&Value::Array(list)))
        })
    }
}
