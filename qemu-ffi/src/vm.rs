//! What a machine launched from a `vm` description offers a Jumpstarter-style driver, for C:
//! its drives (the default partitions) flashed, from a file or a stream, and dumped; the power
//! state now and as it changes; a relaunch with a changed description; its vsock CID.

use std::ffi::{c_char, c_void};
use std::os::fd::RawFd;

use qemu_process::image::StreamProgress;
use qemu_process::{DriveKind, PowerState, VmLaunch};
use serde_json::json;

use crate::args::{opt_str_arg, out_arg, path_arg, set_string, str_arg, timeout_arg};
use crate::error::FfiError;
use crate::image::{format_arg, stream_fd, QmProgressFn, QmStreamProgressFn, StreamCallback};
use crate::machine::{with_machine, QmMachine, DEFAULT_WAIT};
use crate::status::QmStatus;

/// The power states `qm_machine_power_state()` and `qm_machine_power_wait_change()` report.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QmPower {
    /// QEMU is not running (it exited; or, attached, its connection closed), or the guest
    /// powered off and QEMU stays (`-no-shutdown`).
    Off = 0,
    /// The guest runs.
    Running = 1,
    /// QEMU runs with the guest stopped (paused, started paused, an error stop, ...).
    Paused = 2,
}

fn power_code(state: PowerState) -> i32 {
    (match state {
        PowerState::Off => QmPower::Off,
        PowerState::Running => QmPower::Running,
        PowerState::Paused => QmPower::Paused,
    }) as i32
}

fn progress_fn(progress: QmProgressFn, user_data: *mut c_void) -> impl FnMut(f64) {
    move |fraction| {
        if let Some(f) = progress {
            // SAFETY: the caller guarantees the callback may be called with `user_data`.
            unsafe { f(fraction, user_data) }
        }
    }
}

fn vm_only(m: &mut QmMachine) -> Result<(), FfiError> {
    if m.machine().vm_launch().is_none() {
        return Err(FfiError::new(
            QmStatus::Unsupported,
            "this machine was not launched from a `vm` description",
        ));
    }
    Ok(())
}

/// Stores the machine's power state in `*out_state`, a `QM_POWER_*` value: `QM_POWER_OFF` once
/// QEMU has exited, else what `query-status` says (`QM_POWER_RUNNING`, or `QM_POWER_PAUSED` for
/// any stopped state). The kept `STOP`, `RESUME` and `SHUTDOWN` events are taken (the state
/// stored supersedes them), so that `qm_machine_power_wait_change()` reports only what changes
/// afterwards.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_state` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_power_state(
    machine: *mut QmMachine,
    out_state: *mut i32,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_state, "out_state")?;
            *out = power_code(m.machine().power_state()?);
            Ok(())
        })
    }
}

/// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only what has already arrived) for
/// the power state to change from the last one reported (by this function or
/// `qm_machine_power_state()`), and stores the new one in `*out_state` (`QM_POWER_*`). Changes
/// come from QEMU's events (`RESUME`, `STOP`, `SHUTDOWN`, taken from the kept events in order;
/// one that repeats the state is skipped) and QEMU's exit. Call it in a loop to follow each
/// change. `QM_STATUS_TIMEOUT` when nothing changed in time; once `QM_POWER_OFF` was reported
/// and QEMU has exited nothing can change: `QM_STATUS_PROCESS_EXITED` (attached:
/// `QM_STATUS_DISCONNECTED`) at once.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_state` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_power_wait_change(
    machine: *mut QmMachine,
    timeout_ms: i64,
    out_state: *mut i32,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_state, "out_state")?;
            let timeout = timeout_arg(timeout_ms, DEFAULT_WAIT)?;
            *out = power_code(m.machine().power_wait_change(timeout)?);
            Ok(())
        })
    }
}

/// Launches QEMU again after it exited (a guest power-off, `qm_machine_shutdown()`), in the same
/// temp dir, under the config's launch timeout. With `vm_json` NULL, the same description; else
/// `vm_json` (UTF-8) is the machine's new `vm` description, e.g. with more `memory` or a bigger
/// `disk_size`: what the temp dir and the disks hold is kept (disks are not flashed again, only
/// grown; UEFI variables and flashed firmware stay), the cloud-init seed is written anew.
/// `QM_STATUS_INVALID_STATE` while QEMU runs; `QM_STATUS_INVALID_JSON` for a description that
/// does not parse; `QM_STATUS_INVALID_ARGUMENT` for a size below a disk's image (the message
/// names both); `QM_STATUS_UNSUPPORTED` for an attached machine, or a new description for a
/// machine not launched from one. When the launch fails, the machine keeps its previous
/// description.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `vm_json` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_relaunch(
    machine: *mut QmMachine,
    vm_json: *const c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let Some(text) = opt_str_arg(vm_json, "vm_json")? else {
                return Ok(m.machine().relaunch()?);
            };
            let launch = VmLaunch::from_json(text)
                .map_err(|e| FfiError::new(QmStatus::InvalidJson, e.to_string()))?;
            Ok(m.machine().relaunch_with(launch)?)
        })
    }
}

/// Stores the drives of a machine launched from a `vm` description, the partitions
/// `qm_machine_flash()` and `qm_machine_dump()` know, as a JSON array in `*out_json` (free with
/// `qm_string_free()`): one object per drive with `name` (`root` or another disk id, `bios`,
/// `uefi_code`, `uefi_vars`), `kind` (`disk`, `bios`, `uefi_code`, `uefi_vars`), `path`,
/// `format`, `size` (the virtual size the drive is kept at, or null) and `owned` (the file is
/// the machine's own, in its temp dir). Empty for a raw launch.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_drives(
    machine: *mut QmMachine,
    out_json: *mut *mut c_char,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_json, "out_json")?;
            let drives: Vec<_> = m
                .machine()
                .drives()
                .iter()
                .map(|d| {
                    json!({
                        "name": d.name,
                        "kind": match d.kind {
                            DriveKind::Disk => "disk",
                            DriveKind::Bios => "bios",
                            DriveKind::UefiCode => "uefi_code",
                            DriveKind::UefiVars => "uefi_vars",
                        },
                        "path": d.path.to_string_lossy(),
                        "format": d.format.name(),
                        "size": d.size.map(|s| s.bytes()),
                        "owned": d.owned,
                    })
                })
                .collect();
            let text = serde_json::to_vec(&drives).unwrap_or_default();
            set_string(out, &text)
        })
    }
}

/// Writes the image at `source` (any bytes; any format qemu-img reads, optionally gzip, xz,
/// bzip2 or zstd compressed, recognised by its content) into the drive `partition` (UTF-8:
/// `root` or another disk id, `bios`, `uefi_code`, `uefi_vars`; Jumpstarter's `OVMF_CODE.fd`
/// and `OVMF_VARS.fd` name the UEFI drives too), converted to the drive's format and grown back
/// to its size; firmware the machine does not own is never written (the flash goes to a copy in
/// its temp dir, used from the next launch). `progress(fraction, user_data)` is called as it
/// goes (`progress` may be NULL). Takes effect at `qm_machine_relaunch()`.
/// `QM_STATUS_INVALID_STATE` while QEMU runs; `QM_STATUS_INVALID_ARGUMENT` for an unknown
/// partition (the message lists the machine's) or a missing source; `QM_STATUS_IMAGE` when
/// qemu-img or the decompressor fails; `QM_STATUS_UNSUPPORTED` for a machine not launched from
/// a `vm` description.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `partition` and `source` NULL or
/// NUL-terminated; `progress`, if not NULL, must be safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_flash(
    machine: *mut QmMachine,
    partition: *const c_char,
    source: *const c_char,
    progress: QmProgressFn,
    user_data: *mut c_void,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let partition = str_arg(partition, "partition")?;
            let source = path_arg(source, "source")?;
            vm_only(m)?;
            m.machine()
                .flash(partition, &source, progress_fn(progress, user_data))?;
            Ok(())
        })
    }
}

/// Like `qm_machine_flash()`, from the stream open on `fd` (a pipe, a socket, standard input:
/// read once, front to back, until its end; a compressed stream is decompressed on the fly).
/// The descriptor is duplicated for the call and stays the caller's (the library does not close
/// it; reading moves its offset). `progress(bytes_read, converted, user_data)` is called as it
/// goes (see `qm_stream_progress_fn`; may be NULL). A non-blocking descriptor is waited on
/// until data or its end comes, like a blocking one. A descriptor that is not open is
/// `QM_STATUS_INVALID_ARGUMENT`; a read error `QM_STATUS_IO`.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `partition` NULL or NUL-terminated;
/// `progress`, if not NULL, must be safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_flash_fd(
    machine: *mut QmMachine,
    partition: *const c_char,
    fd: RawFd,
    progress: QmStreamProgressFn,
    user_data: *mut c_void,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let partition = str_arg(partition, "partition")?;
            let source = stream_fd(fd)?;
            vm_only(m)?;
            let mut cb = StreamCallback::new(progress, user_data);
            m.machine()
                .flash_stream(partition, source, |p: StreamProgress| cb.report(p))?;
            cb.done();
            Ok(())
        })
    }
}

/// Reads the drive `partition` (named as for `qm_machine_flash()`) into a new file `dest` (any
/// bytes) of `format` (UTF-8, e.g. `"raw"`, `"qcow2"`; NULL: the drive's own), e.g. the UEFI
/// variables the guest wrote; `progress` as for `qm_machine_flash()`. `QM_STATUS_INVALID_STATE`
/// while QEMU runs; `QM_STATUS_INVALID_ARGUMENT` for an unknown partition or format.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `partition`, `dest` and `format` NULL
/// or NUL-terminated (`format` may be NULL); `progress`, if not NULL, must be safe to call with
/// `user_data`.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_dump(
    machine: *mut QmMachine,
    partition: *const c_char,
    dest: *const c_char,
    format: *const c_char,
    progress: QmProgressFn,
    user_data: *mut c_void,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let partition = str_arg(partition, "partition")?;
            let dest = path_arg(dest, "dest")?;
            let format = opt_str_arg(format, "format")?.map(format_arg).transpose()?;
            vm_only(m)?;
            m.machine().dump(
                partition,
                &dest,
                format.as_ref(),
                progress_fn(progress, user_data),
            )?;
            Ok(())
        })
    }
}

/// Stores the vsock context id of a machine launched with `"vsock": true` in `*out_cid`: the
/// guest's address for `AF_VSOCK` connections from the host (never 0-2 or 0xFFFFFFFF).
/// `QM_STATUS_UNSUPPORTED` for a machine without vsock.
///
/// # Safety
/// `machine` must be a handle from this library or NULL; `out_cid` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_machine_vsock_cid(
    machine: *mut QmMachine,
    out_cid: *mut u32,
) -> QmStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_machine(machine, |m| {
            let out = out_arg(out_cid, "out_cid")?;
            *out = m.machine().vsock_cid().ok_or_else(|| {
                FfiError::new(QmStatus::Unsupported, "this machine has no vsock device")
            })?;
            Ok(())
        })
    }
}
