//! The C ABI of `libqemumachine`, over `qemu-process`.
//!
//! Every exported function starts with `qm_`. Fallible functions return a [`QmStatus`]; on
//! failure the calling thread's last error holds a message (`qm_last_error_message()`), and the
//! QMP error class and description when QEMU rejected a command. Every entry point catches
//! panics (returning `QM_STATUS_PANIC`), checks pointer arguments for NULL, and checks handles
//! against a registry of live handles, so a freed or foreign handle is an error, not undefined
//! behaviour. Strings the library returns are allocated with `malloc` and freed with
//! `qm_string_free()`. The header `include/qemumachine.h` is generated from this crate by
//! cbindgen (see `tests/header.rs`).
//!
//! Handles (`qm_config`, `qm_machine`) are not thread-safe: use each from one thread at a
//! time. They may move between threads. The last error is per thread.

pub(crate) mod alloc;
pub mod args;
pub mod config;
mod convert;
pub mod error;
pub(crate) mod handle;
pub mod image;
pub mod machine;
pub mod status;
pub mod version;

pub use status::QmStatus;
