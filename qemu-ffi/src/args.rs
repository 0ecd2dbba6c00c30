//! Reading arguments that come from C, and writing results back through out-pointers. Every
//! check here turns a bad pointer or value into a typed error naming the argument.

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::error::FfiError;
use crate::status::QmStatus;

/// The `timeout_ms` that means "this function's default", which each function's documentation
/// names (the machine's QMP timeout for commands, 30 s for the other waits). Any other negative
/// timeout is `QM_STATUS_INVALID_ARGUMENT`; 0 means "do not wait"; a positive value is a limit in
/// milliseconds (see "Timeouts" at the top of this header).
pub const QM_TIMEOUT_DEFAULT: i64 = -1;

/// Borrows a NUL-terminated C string's bytes.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that outlives the returned slice.
pub(crate) unsafe fn bytes_arg<'a>(p: *const c_char, name: &str) -> Result<&'a [u8], FfiError> {
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    // SAFETY: non-NULL and NUL-terminated by this function's contract.
    Ok(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Borrows a C string that must be UTF-8.
///
/// # Safety
/// As for [`bytes_arg`].
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, FfiError> {
    // SAFETY: forwarded.
    let bytes = unsafe { bytes_arg(p, name) }?;
    std::str::from_utf8(bytes)
        .map_err(|e| FfiError::invalid(format!("argument `{name}` is not valid UTF-8: {e}")))
}

/// Like [`str_arg`], but NULL gives `None`.
///
/// # Safety
/// As for [`bytes_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(
    p: *const c_char,
    name: &str,
) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { str_arg(p, name) }.map(Some)
    }
}

/// A file system path (any bytes but NUL; not required to be UTF-8).
///
/// # Safety
/// As for [`bytes_arg`].
pub(crate) unsafe fn path_arg(p: *const c_char, name: &str) -> Result<PathBuf, FfiError> {
    // SAFETY: forwarded.
    let bytes = unsafe { bytes_arg(p, name) }?;
    if bytes.is_empty() {
        return Err(FfiError::invalid(format!(
            "argument `{name}` is an empty path"
        )));
    }
    Ok(PathBuf::from(OsStr::from_bytes(bytes)))
}

/// Parses a JSON argument; NULL gives `None`.
///
/// # Safety
/// As for [`bytes_arg`].
pub(crate) unsafe fn opt_json_arg(p: *const c_char, name: &str) -> Result<Option<Value>, FfiError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded.
    let bytes = unsafe { bytes_arg(p, name) }?;
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        FfiError::new(
            QmStatus::InvalidJson,
            format!("argument `{name}` is not valid JSON: {e}"),
        )
    })
}

/// Borrows a caller's buffer of `len` bytes; NULL is allowed only when `len` is 0.
///
/// # Safety
/// `p` must be valid for reads of `len` bytes when non-NULL.
pub(crate) unsafe fn slice_arg<'a>(
    p: *const u8,
    len: usize,
    name: &str,
) -> Result<&'a [u8], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    // SAFETY: non-NULL and valid for `len` bytes by this function's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A `timeout_ms` argument: [`QM_TIMEOUT_DEFAULT`] gives `default`, 0 and positive values are
/// milliseconds (0: do not wait), any other negative value is an invalid argument.
pub(crate) fn timeout_arg(ms: i64, default: Duration) -> Result<Duration, FfiError> {
    match u64::try_from(ms) {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) if ms == QM_TIMEOUT_DEFAULT => Ok(default),
        Err(_) => Err(FfiError::invalid(format!(
            "argument `timeout_ms` is {ms}: a timeout is QM_TIMEOUT_DEFAULT (-1) for the \
             default, 0 for no wait, or a positive number of milliseconds"
        ))),
    }
}

/// An out-pointer that must not be NULL. It is set to a zero value first, so that it holds
/// something defined even when the call fails.
///
/// # Safety
/// `p` must be NULL or valid for writes of a `T`.
pub(crate) unsafe fn out_arg<'a, T: OutZero>(p: *mut T, name: &str) -> Result<&'a mut T, FfiError> {
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    // SAFETY: non-NULL and writable by this function's contract; `T: OutZero` values are plain
    // data with no destructor, so overwriting without dropping is fine.
    unsafe {
        p.write(T::ZERO);
        Ok(&mut *p)
    }
}

/// An optional out-pointer: NULL means the caller does not want the value.
///
/// # Safety
/// As for [`out_arg`].
pub(crate) unsafe fn opt_out_arg<'a, T: OutZero>(p: *mut T) -> Option<&'a mut T> {
    if p.is_null() {
        None
    } else {
        // SAFETY: forwarded.
        unsafe { out_arg(p, "") }.ok()
    }
}

/// Plain values that out-pointers carry, with the value written before anything can fail.
pub(crate) trait OutZero: Copy {
    const ZERO: Self;
}
impl OutZero for *mut c_char {
    const ZERO: Self = std::ptr::null_mut();
}
impl<T> OutZero for *mut T
where
    T: crate::handle::Handle,
{
    const ZERO: Self = std::ptr::null_mut();
}
impl OutZero for i32 {
    const ZERO: Self = 0;
}
impl OutZero for usize {
    const ZERO: Self = 0;
}
impl OutZero for u64 {
    const ZERO: Self = 0;
}
impl OutZero for u32 {
    const ZERO: Self = 0;
}
impl OutZero for i64 {
    const ZERO: Self = 0;
}
impl OutZero for bool {
    const ZERO: Self = false;
}

/// Stores a new C string (free it with `qm_string_free()`) in an out-pointer.
pub(crate) fn set_string(out: &mut *mut c_char, bytes: &[u8]) -> Result<(), FfiError> {
    let p = crate::alloc::c_string(bytes);
    if p.is_null() {
        return Err(FfiError::new(QmStatus::Io, "out of memory"));
    }
    *out = p;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_one_rule() {
        let default = Duration::from_secs(30);
        assert_eq!(timeout_arg(QM_TIMEOUT_DEFAULT, default).unwrap(), default);
        assert_eq!(timeout_arg(0, default).unwrap(), Duration::ZERO);
        assert_eq!(
            timeout_arg(250, default).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            timeout_arg(i64::MAX, default).unwrap(),
            Duration::from_millis(i64::MAX as u64)
        );
        for bad in [-2, -1000, i64::MIN] {
            let e = timeout_arg(bad, default).unwrap_err();
            assert_eq!(e.status, QmStatus::InvalidArgument);
            assert!(e.message.contains("`timeout_ms`"), "{}", e.message);
            assert!(e.message.contains(&bad.to_string()), "{}", e.message);
        }
    }
}
