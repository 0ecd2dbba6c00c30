//! Launch, control and shut down QEMU processes over QMP, in one thread.
//!
//! [`Machine::launch`] does what QEMU's Python `QEMUMachine` does — private temp dir, QMP over an
//! inherited socketpair (no socket path, no connect race), QEMU's output in a log file — and
//! waits under one deadline for either QMP negotiation or QEMU's exit, both watched in the same
//! `mio` poll. QEMU belongs to the *process* that launched it, not to a thread: it is spawned
//! by this process's guardian (see [`start_guardian`]), so it survives the exit of the thread
//! that launched it, its exit status is never taken by the program's own `SIGCHLD` handling,
//! and it is killed, with its temp dir removed, within moments of this process dying, by
//! `SIGKILL` too. Every blocking call
//! (commands, event waits, console expect, shutdown) runs that poll under its own deadline while
//! it keeps events in arrival order and drains the console, so QEMU never blocks on a full
//! console buffer. No call spawns a thread or sleeps in a loop; [`MachineSet`] drives many
//! machines from one thread, and [`Machine::poll_sources`] lets a caller do it in its own loop.
//!
//! # Processes, threads and signals
//!
//! - The guardian is a child process of the program, forked on the first launch (or at
//!   [`start_guardian`]) and living as long as the program; it leads a process group of its
//!   own, as does each QEMU, so a Ctrl-C at the program's terminal reaches neither. A program
//!   that waits for all of its children sees it (do not wait for it to exit); a child the
//!   program forks without `exec` inherits the descriptors that tie the guardian to the
//!   program, so the clean-up after the program's death waits for that child to exit too.
//! - Dropping a [`Machine`] kills QEMU's process group (`SIGKILL`), reaps QEMU and removes its
//!   temp dir; [`Machine::shutdown`] asks with `quit` first. What a wrapper forks is in QEMU's
//!   process group and goes with it.
//! - Nothing here starts a thread, installs a signal handler or changes a signal disposition;
//!   QEMU's exit comes from the guardian, not from `SIGCHLD`; sockets are written with
//!   `MSG_NOSIGNAL`, so a peer that has gone is an error, never `SIGPIPE`.
//! - A `Machine` is `Send`: it may move to another thread, and the thread that launched it may
//!   exit (QEMU belongs to the process).
//!
//! A [`MachineConfig`] launches either a raw command line or a whole VM description,
//! [`VmLaunch`] (a [`VmSpec`](qemu_cmdline::VmSpec) plus the launcher's work: disks created,
//! probed, flashed and grown; a cloud-init seed; UEFI variables per VM; VNC in the temp dir);
//! the running [`Machine`] then reports port forwards with automatic host ports, flashes and
//! dumps named drives, takes screendumps, and talks to the QEMU guest agent when the
//! description asks for its port ([`Machine::guest`], see [`guest`]). [`image`] wraps `qemu-img` (info, create,
//! resize, convert with progress, check, snapshots) and flashing compressed images.
//! [`qemumachine_map`] maps QEMU's Python `QEMUMachine` and `QEMUQtestMachine` onto all this
//! (the qtest machine is [`MachineConfig::qtest`] and [`Machine::qtest`]).
//!
//! ```no_run
//! use qemu_process::{Machine, MachineConfig};
//! use std::time::Duration;
//!
//! let mut config = MachineConfig::new("qemu-system-x86_64");
//! config.args(["-machine", "none", "-nodefaults"]);
//! let mut vm = Machine::launch(&config)?;
//! println!("{:?}", vm.status()?);
//! vm.pause()?;
//! let stop = vm.event_wait("STOP", None, Duration::from_secs(5))?;
//! println!("stopped at {:?}", stop.timestamp);
//! let status = vm.shutdown(Duration::from_secs(10))?;
//! assert!(status.success());
//! # Ok::<(), qemu_process::Error>(())
//! ```

// The README's examples run as doc tests (`cargo test --doc`); the README is what
// crates.io shows, the crate docs above are what docs.rs shows.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The map from QEMU's Python `QEMUMachine`, `QEMUQtestMachine` and qemu.qmp's legacy client to
/// this crate, the C library and the command line (the file `qemu-process/QEMUMACHINE.md`).
#[doc = include_str!("../QEMUMACHINE.md")]
pub mod qemumachine_map {}

pub mod cloudinit;
mod config;
mod console;
mod error;
mod fat;
mod guardian;
pub mod guest;
pub mod image;
mod machine;
mod set;
mod spawn;
mod sys;
mod vm;

pub use config::{
    args_choose_accel, resolve_accel, AccelChoice, AttachTarget, MachineConfig, PassFd, ACCEL_ENV,
    DEFAULT_BINARY, DEFAULT_CONSOLE_BUFFER, DEFAULT_CONSOLE_INPUT_BUFFER, DEFAULT_LAUNCH_SETTLE,
    DEFAULT_LAUNCH_TIMEOUT, DEFAULT_MAX_EVENTS, DEFAULT_QMP_TIMEOUT,
};
pub use error::Error;
pub use guest::{ExecCommand, ExecOutput, Guest, GuestAgent};
pub use machine::{FdsetEntry, Machine, PollSources, Qtest};
pub use qemu_cmdline::MonitorAddress;
pub use qmp_proto::qtest::{Endianness, Irq};
pub use qmp_proto::QtestError;
pub use qmp_proto::{Event, Greeting, QmpError, RunState, Timestamp};
pub use set::MachineSet;

/// Starts this process's guardian now (if it is not running yet) and returns its pid.
///
/// Every QEMU this crate launches is a child of the guardian, a small single-threaded process
/// forked from this one, which kills QEMU and removes its temp dir when this process dies (by
/// any means, `SIGKILL` included), whatever thread launched it. The first launch starts it;
/// since it is a copy-on-write fork of this process, a program that grows large before its
/// first launch can call this early to fork it while small. When this returns, the guardian
/// leads a process group of its own (it names itself `qm-guardian` right after). It is a child
/// of this process: see "Processes, threads and signals" in the crate documentation.
pub fn start_guardian() -> Result<u32, Error> {
    guardian::start().map_err(Error::io_with("starting the process guardian"))
}

/// The pid of this process's guardian, if it has been started (see [`start_guardian`]).
pub fn guardian_pid() -> Option<u32> {
    guardian::pid()
}
pub use vm::{
    DiskLaunch, Drive, DriveKind, Forward, Preparing, ProgressFn, ScreenshotFormat, VmLaunch,
    DEFAULT_ROOT_SIZE, SEED_DISK_ID,
};
