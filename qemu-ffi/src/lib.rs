//! The C ABI of `libqemumachine`, over `qemu-process`.
//!
//! Every exported function starts with `qm_`. Fallible functions return a [`QmStatus`]; on
//! failure the calling thread's last error holds a message (`qm_last_error_message()`), and the
//! QMP error class and description when QEMU rejected a command. Every entry point catches
//! panics (returning `QM_STATUS_PANIC`) and checks pointer arguments for NULL. Strings the
//! library returns are allocated with `malloc` and freed with `qm_string_free()`. The header
//! `include/qemumachine.h` is generated from this crate by cbindgen (see `tests/header.rs`).
//!
//! Handles (`qm_config *`, `qm_machine *`) are opaque ids, never addresses and never
//! dereferenced: every call looks its handle up in a registry of live handles. Ids are never
//! reused, so a freed handle stays invalid for good, even after new handles are made: a call
//! with it, with a foreign pointer or with a handle of the other type is
//! `QM_STATUS_INVALID_HANDLE` (a free ignores it), never a call on another handle.
//! `qm_config_free()` and `qm_machine_free()` leave the thread's last error alone.
//!
//! Handles are not thread-safe: use each from one thread at a time. They may move between
//! threads. A call has its handle to itself while it runs: another thread's call on the same
//! handle meanwhile is `QM_STATUS_INVALID_HANDLE` ("in use"), and a free meanwhile makes the
//! handle invalid at once and frees its value when the running call returns. The last error is
//! per thread.
//!
//! The rules a C program relies on (threads, the process guardian and what is killed when,
//! signals, timeouts, strings, memory) open the header; their text is the `header` of
//! `cbindgen.toml`. Timeouts follow one rule, in [`args::QM_TIMEOUT_DEFAULT`]: -1 is the
//! function's default, other negative values are invalid, 0 does not wait, a positive value is
//! milliseconds.

pub(crate) mod alloc;
pub mod args;
pub mod config;
mod convert;
pub mod error;
pub mod guardian;
pub mod guest;
pub(crate) mod handle;
pub mod image;
pub mod machine;
pub mod qemumachine;
pub mod qtest;
pub mod status;
pub mod version;

pub use status::QmStatus;
