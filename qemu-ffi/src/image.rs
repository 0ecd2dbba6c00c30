//! Disk image operations (`qemu-img`), for C.

use std::ffi::{c_char, c_void};

use qemu_cmdline::{Format, Size};
use qemu_process::image;

use crate::args::{out_arg, path_arg, set_string, str_arg};
use crate::error::{guard, FfiError};
use crate::status::QmStatus;

/// A progress callback: `fraction` goes from 0.0 to 1.0 (reached when the operation succeeds)
/// and never decreases; `user_data` is the pointer given with the callback. It is called on the
/// thread that called the library, during that call, never after it returned.
pub type QmProgressFn = Option<unsafe extern "C" fn(fraction: f64, user_data: *mut c_void)>;

fn format_arg(text: &str) -> Result<Format, FfiError> {
    text.parse()
        .map_err(|e| FfiError::invalid(format!("argument `format`: {e}")))
}

/// Describes the image at `path` (any bytes; `qemu-img info`) as a JSON object with `filename`,
/// `format`, `virtual-size`, `actual-size`, `dirty-flag`, `backing-filename`, `snapshots`,
/// `backing-chain`, ... in `*out_json` (free with `qm_string_free()`). A missing file is
/// `QM_STATUS_INVALID_ARGUMENT` naming it; `QM_STATUS_IMAGE` when qemu-img fails (the message
/// holds its command line and output).
///
/// # Safety
/// `path` must be NULL or NUL-terminated; `out_json` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_image_info(
    path: *const c_char,
    out_json: *mut *mut c_char,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_arg(out_json, "out_json") }?;
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { path_arg(path, "path") }?;
        let info = image::info(&path)?;
        let text = serde_json::to_vec(&info)
            .map_err(|e| FfiError::new(QmStatus::Io, format!("encoding image info: {e}")))?;
        set_string(out, &text)
    })
}

/// Creates an image of `format` (`"qcow2"`, `"raw"`, ...; UTF-8, an unknown name is
/// `QM_STATUS_INVALID_ARGUMENT`) and `size_bytes` at `path` (any bytes).
///
/// # Safety
/// `path` and `format` must be NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_image_create(
    path: *const c_char,
    format: *const c_char,
    size_bytes: u64,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { path_arg(path, "path") }?;
        // SAFETY: forwarded from this function's contract.
        let format = format_arg(unsafe { str_arg(format, "format") }?)?;
        Ok(image::create(
            &path,
            &format,
            Size::bytes_exact(size_bytes),
        )?)
    })
}

/// Resizes the image at `path` (any bytes) to `size_bytes`. Shrinking (which loses data) happens
/// only when `allow_shrink` is true (else `QM_STATUS_INVALID_ARGUMENT`); growing past the free
/// space of its file system is refused (`QM_STATUS_IMAGE`).
///
/// # Safety
/// `path` must be NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_image_resize(
    path: *const c_char,
    size_bytes: u64,
    allow_shrink: bool,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { path_arg(path, "path") }?;
        image::resize(&path, Size::bytes_exact(size_bytes), allow_shrink)?;
        Ok(())
    })
}

/// Converts the image at `src` into a new image at `dst` (paths: any bytes) of `dst_format`,
/// calling `progress(fraction, user_data)` as it goes (`progress` may be NULL), on the calling
/// thread, before the call returns. `dst` is replaced only when the conversion succeeded: a
/// failed one leaves an existing `dst` as it was.
///
/// # Safety
/// `src`, `dst` and `dst_format` must be NULL or NUL-terminated; `progress`, if not NULL, must be
/// safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn qm_image_convert(
    src: *const c_char,
    dst: *const c_char,
    dst_format: *const c_char,
    progress: QmProgressFn,
    user_data: *mut c_void,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let src = unsafe { path_arg(src, "src") }?;
        // SAFETY: forwarded from this function's contract.
        let dst = unsafe { path_arg(dst, "dst") }?;
        // SAFETY: forwarded from this function's contract.
        let format = format_arg(unsafe { str_arg(dst_format, "dst_format") }?)?;
        image::convert(&src, &dst, &format, |fraction| {
            if let Some(f) = progress {
                // SAFETY: the caller guarantees the callback may be called with `user_data`.
                unsafe { f(fraction, user_data) }
            }
        })?;
        Ok(())
    })
}
