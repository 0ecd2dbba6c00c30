//! The calling thread's last error, and the panic boundary every `extern "C"` entry goes through.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{self, AssertUnwindSafe};

use crate::status::QmStatus;

/// A failure on its way to C: a status and a message, plus the QMP error class and description
/// when QEMU rejected a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub(crate) status: QmStatus,
    pub(crate) message: String,
    pub(crate) qmp: Option<(String, String)>,
}

impl FfiError {
    pub(crate) fn new(status: QmStatus, message: impl Into<String>) -> Self {
        FfiError {
            status,
            message: message.into(),
            qmp: None,
        }
    }

    pub(crate) fn null(argument: &str) -> Self {
        FfiError::new(
            QmStatus::NullArgument,
            format!("argument `{argument}` must not be NULL"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        FfiError::new(QmStatus::InvalidArgument, message)
    }
}

/// What is kept per thread after a failing call. The strings are stored NUL-free (interior NULs
/// are replaced) so that they can be copied out as C strings.
struct LastError {
    status: QmStatus,
    message: CString,
    qmp_class: Option<CString>,
    qmp_desc: Option<CString>,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

fn c_string_lossy(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

fn set_last_error(e: &FfiError) {
    let last = LastError {
        status: e.status,
        message: c_string_lossy(&e.message),
        qmp_class: e.qmp.as_ref().map(|(c, _)| c_string_lossy(c)),
        qmp_desc: e.qmp.as_ref().map(|(_, d)| c_string_lossy(d)),
    };
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(last));
}

fn clear_last_error() {
    LAST_ERROR.with(|l| *l.borrow_mut() = None);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs the body of a fallible `extern "C"` function: clears the thread's last error, catches any
/// panic, and turns the outcome into a status (recording the message on failure).
pub(crate) fn guard<F>(body: F) -> QmStatus
where
    F: FnOnce() -> Result<(), FfiError>,
{
    clear_last_error();
    let outcome = panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(FfiError::new(
            QmStatus::Panic,
            format!(
                "internal error (a panic was caught at the C boundary): {}",
                panic_message(payload.as_ref())
            ),
        ))
    });
    match outcome {
        Ok(()) => QmStatus::Ok,
        Err(e) => {
            set_last_error(&e);
            e.status
        }
    }
}

/// Runs the body of an infallible `extern "C"` function, returning `fallback` if it panics.
/// It leaves the thread's last error alone, so error accessors can be called in any order.
pub(crate) fn guard_value<T, F: FnOnce() -> T>(fallback: T, body: F) -> T {
    panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Copies `src` (plus a NUL) into `buf` of `len` bytes, truncating if needed, and returns the
/// full length of `src` without its NUL, like `snprintf`.
///
/// # Safety
/// `buf` must be NULL or valid for writes of `len` bytes.
pub(crate) unsafe fn copy_out(src: &CStr, buf: *mut c_char, len: usize) -> usize {
    let bytes = src.to_bytes();
    if !buf.is_null() && len > 0 {
        let n = bytes.len().min(len - 1);
        // SAFETY: the caller guarantees `buf` is valid for `len` bytes, and n + 1 <= len; the
        // source is a live slice that cannot overlap a caller-owned buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, n);
            *buf.add(n) = 0;
        }
    }
    bytes.len()
}

fn with_last<T>(f: impl FnOnce(Option<&LastError>) -> T) -> T {
    LAST_ERROR.with(|l| f(l.borrow().as_ref()))
}

/// The status of the calling thread's last failing `qm_*` call, or `QM_STATUS_OK` if the last
/// call on this thread succeeded (every fallible call clears the previous error when it starts;
/// the `*_free` functions and the error accessors leave it alone).
#[no_mangle]
pub extern "C" fn qm_last_error_status() -> QmStatus {
    guard_value(QmStatus::Panic, || {
        with_last(|l| l.map_or(QmStatus::Ok, |l| l.status))
    })
}

/// Copies the message of the calling thread's last error into `buf` (`len` bytes, always
/// NUL-terminated when `len > 0`, truncated if needed) and returns the message's full length
/// without the NUL, like `snprintf`: call with `buf = NULL, len = 0` to learn the size.
/// Returns 0 (and writes an empty string) when there is no error.
///
/// # Safety
/// `buf` must be NULL or valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn qm_last_error_message(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        with_last(|l| {
            let msg = l.map_or(c"", |l| l.message.as_c_str());
            // SAFETY: forwarded from this function's contract.
            unsafe { copy_out(msg, buf, len) }
        })
    })
}

/// Returns a newly allocated copy of the calling thread's last error message, or NULL when there
/// is none. Free it with `qm_string_free()`.
#[no_mangle]
pub extern "C" fn qm_last_error_message_dup() -> *mut c_char {
    guard_value(std::ptr::null_mut(), || {
        with_last(|l| {
            l.map_or(std::ptr::null_mut(), |l| {
                crate::alloc::c_string(l.message.to_bytes())
            })
        })
    })
}

/// Copies the QMP error class (e.g. `"GenericError"`, `"CommandNotFound"`) of the calling
/// thread's last error into `buf`, with the semantics of `qm_last_error_message()`. Returns 0
/// when the last error was not a QMP error.
///
/// # Safety
/// `buf` must be NULL or valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn qm_last_error_qmp_class(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        with_last(|l| {
            let s = l.and_then(|l| l.qmp_class.as_deref()).unwrap_or(c"");
            // SAFETY: forwarded from this function's contract.
            unsafe { copy_out(s, buf, len) }
        })
    })
}

/// Copies the QMP error description (`desc`) of the calling thread's last error into `buf`,
/// with the semantics of `qm_last_error_message()`. Returns 0 when the last error was not a
/// QMP error.
///
/// # Safety
/// `buf` must be NULL or valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn qm_last_error_qmp_desc(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        with_last(|l| {
            let s = l.and_then(|l| l.qmp_desc.as_deref()).unwrap_or(c"");
            // SAFETY: forwarded from this function's contract.
            unsafe { copy_out(s, buf, len) }
        })
    })
}

/// The name of a status code as a static NUL-terminated string (e.g. `"QM_STATUS_TIMEOUT"`),
/// or `"QM_STATUS_UNKNOWN"` for a number this library does not define. Never NULL; do not free.
#[no_mangle]
pub extern "C" fn qm_status_name(status: i32) -> *const c_char {
    guard_value(c"QM_STATUS_UNKNOWN".as_ptr(), || {
        QmStatus::from_i32(status)
            .map_or(c"QM_STATUS_UNKNOWN", QmStatus::name)
            .as_ptr()
    })
}

/// Frees a string (or byte buffer) returned by this library. NULL is accepted and ignored.
///
/// # Safety
/// `s` must be NULL or a pointer returned by a `qm_*` function documented as "free it with
/// `qm_string_free()`", not freed before.
#[no_mangle]
pub unsafe extern "C" fn qm_string_free(s: *mut c_char) {
    guard_value((), || {
        // SAFETY: by this function's contract `s` is NULL or came from `crate::alloc` (malloc)
        // and is freed only once.
        unsafe { crate::alloc::free(s) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_records_errors_and_clears_them() {
        let s = guard(|| Err(FfiError::invalid("bad thing")));
        assert_eq!(s, QmStatus::InvalidArgument);
        assert_eq!(qm_last_error_status(), QmStatus::InvalidArgument);
        let mut buf = [0 as c_char; 4];
        // SAFETY: buf is valid for its length.
        let n = unsafe { qm_last_error_message(buf.as_mut_ptr(), buf.len()) };
        assert_eq!(n, "bad thing".len());
        // SAFETY: copy_out NUL-terminates.
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }, c"bad");
        assert_eq!(guard(|| Ok(())), QmStatus::Ok);
        assert_eq!(qm_last_error_status(), QmStatus::Ok);
        assert!(qm_last_error_message_dup().is_null());
    }

    #[test]
    fn guard_catches_panics() {
        let s = guard(|| panic!("boom"));
        assert_eq!(s, QmStatus::Panic);
        let p = qm_last_error_message_dup();
        // SAFETY: p is a live string from this library.
        let msg = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
        // SAFETY: p came from qm_last_error_message_dup and is freed once.
        unsafe { qm_string_free(p) };
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn qmp_class_and_desc_are_separate() {
        let mut e = FfiError::new(
            QmStatus::QmpError,
            "CommandNotFound: The command x was not found",
        );
        e.qmp = Some((
            "CommandNotFound".into(),
            "The command x was not found".into(),
        ));
        guard(|| Err(e));
        let mut buf = [0 as c_char; 64];
        // SAFETY: buf is valid for its length.
        unsafe { qm_last_error_qmp_class(buf.as_mut_ptr(), buf.len()) };
        // SAFETY: NUL-terminated by copy_out.
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }, c"CommandNotFound");
        // SAFETY: NULL buffer with zero length is allowed.
        let n = unsafe { qm_last_error_qmp_desc(std::ptr::null_mut(), 0) };
        assert_eq!(n, "The command x was not found".len());
    }

    #[test]
    fn status_names() {
        // SAFETY: qm_status_name returns static NUL-terminated strings.
        let name = |n| unsafe { CStr::from_ptr(qm_status_name(n)) };
        assert_eq!(name(4), c"QM_STATUS_TIMEOUT");
        assert_eq!(name(9999), c"QM_STATUS_UNKNOWN");
        assert_eq!(name(-3), c"QM_STATUS_UNKNOWN");
    }
}
