//! Memory handed to C: every string or byte buffer the library returns is allocated with
//! `malloc`, NUL-terminated, and freed by `qm_string_free()` (which calls `free`). Using the C
//! allocator means the length never has to be recomputed on free, so buffers may hold NUL bytes.

use std::ffi::c_char;

/// Copies `bytes` into a new `malloc` block with a trailing NUL. Returns NULL only if `malloc`
/// fails.
pub(crate) fn c_string(bytes: &[u8]) -> *mut c_char {
    // SAFETY: malloc with a non-zero size; the result is checked for NULL before use.
    let p = unsafe { libc::malloc(bytes.len() + 1) }.cast::<u8>();
    if p.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `p` is a fresh block of len + 1 bytes that cannot overlap `bytes`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *p.add(bytes.len()) = 0;
    }
    p.cast()
}

/// Frees a block from [`c_string`]; NULL is ignored.
///
/// # Safety
/// `p` must be NULL or a block from [`c_string`] not freed before.
pub(crate) unsafe fn free(p: *mut c_char) {
    // SAFETY: forwarded from this function's contract; free(NULL) is a no-op.
    unsafe { libc::free(p.cast()) }
}
