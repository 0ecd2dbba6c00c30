//! Launch, control and shut down QEMU processes over QMP, in one thread.

mod config;
// The OS layer lands before the Machine that uses it.
#[allow(dead_code)]
mod console;
#[allow(dead_code)]
mod spawn;
#[allow(dead_code)]
mod sys;

pub use config::{resolve_accel, Accel, AddFd, AttachTarget, MachineConfig, ACCEL_ENV};
