//! The library's version, the same numbers as the header's `QM_VERSION_*` macros.

use std::ffi::c_char;

use crate::error::guard_value;

/// Major version of this library (from Cargo.toml).
pub const VERSION_MAJOR: u32 = parse(env!("CARGO_PKG_VERSION_MAJOR"));
/// Minor version of this library (from Cargo.toml).
pub const VERSION_MINOR: u32 = parse(env!("CARGO_PKG_VERSION_MINOR"));
/// Patch version of this library (from Cargo.toml).
pub const VERSION_PATCH: u32 = parse(env!("CARGO_PKG_VERSION_PATCH"));

const fn parse(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u32;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// The version as one number, `major * 10000 + minor * 100 + patch`, the same formula as the
/// header's `QM_VERSION_NUMBER` macro: compare `qm_version()` with `QM_VERSION_NUMBER` to check
/// that the library loaded at run time matches the header compiled against.
#[no_mangle]
pub extern "C" fn qm_version() -> u32 {
    guard_value(0, || {
        VERSION_MAJOR * 10000 + VERSION_MINOR * 100 + VERSION_PATCH
    })
}

/// The version as a static NUL-terminated string such as `"0.1.0"`. Do not free.
#[no_mangle]
pub extern "C" fn qm_version_string() -> *const c_char {
    const V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    guard_value(c"".as_ptr(), || V.as_ptr().cast())
}
