//! The process guardian, for C: start it early, and learn its pid.

use crate::args::opt_out_arg;
use crate::error::{guard, guard_value, FfiError};
use crate::status::QmStatus;

/// A pid as C's `int32_t` (pids fit: Linux caps them at 2^22).
fn pid_i32(pid: u32) -> Result<i32, FfiError> {
    i32::try_from(pid)
        .map_err(|_| FfiError::new(QmStatus::Io, format!("pid {pid} does not fit an int32_t")))
}

/// Starts this process's guardian now, if it does not run yet, and stores its pid in
/// `*out_pid` if `out_pid` is not NULL. Calling it again gives the same pid.
///
/// The guardian is the small child process that spawns every QEMU and qemu-img the library
/// runs, and kills them and removes their temp dirs when the program dies (see "Processes" at
/// the top of this header). The first launch starts it otherwise. It is forked from the program
/// as the program is at that moment, which costs more the more memory the program has mapped:
/// a large program may call this early, while it is small.
///
/// # Safety
/// `out_pid` must be NULL or valid for writing an `int32_t`.
#[no_mangle]
pub unsafe extern "C" fn qm_guardian_start(out_pid: *mut i32) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { opt_out_arg(out_pid) };
        let pid = pid_i32(qemu_process::start_guardian()?)?;
        if let Some(out) = out {
            *out = pid;
        }
        Ok(())
    })
}

/// The pid of this process's guardian, or 0 if none was started yet. Leaves the last error
/// alone.
#[no_mangle]
pub extern "C" fn qm_guardian_pid() -> i32 {
    guard_value(0, || {
        qemu_process::guardian_pid()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0)
    })
}
