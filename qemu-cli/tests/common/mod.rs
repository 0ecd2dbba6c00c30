//! What only the tests of the `qemu-machine` binary need: its path, a command for it, a pty
//! running it, and its banner. Everything else (deadlines, ptys, scratch dirs, /proc) comes
//! from `qemu_machine_tests::support`.

#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use qemu_machine_tests::support::PtyChild;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_qemu-machine")
}

/// Makes sure QEMU is installed (the test fails with the install command otherwise).
pub fn require_qemu() {
    let _ = qemu_machine_tests::qemu_system_x86_64();
}

/// Makes sure qemu-img is installed.
pub fn require_qemu_img() {
    let _ = qemu_machine_tests::qemu_img();
}

/// A `qemu-machine` command with these arguments, stdin from /dev/null.
pub fn cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(bin());
    c.args(args).stdin(Stdio::null()).env_remove("RUST_LOG");
    c
}

/// `qemu-machine ARGS` on a new pseudo-terminal.
pub fn pty<I, S>(args: I) -> PtyChild
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    PtyChild::spawn(bin(), args)
}

/// The QEMU pid from the banner line `QEMU x.y.z started (pid N)`.
pub fn banner_pid(text: &str) -> Option<u32> {
    let start = text.find("started (pid ")? + "started (pid ".len();
    let rest = &text[start..];
    rest[..rest.find(')')?].parse().ok()
}

mod extra;
#[allow(unused_imports)] // each test binary uses a different subset
pub use extra::*;
