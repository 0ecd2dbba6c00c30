//! Helpers for the tests that drive the `qemu-machine` binary: running it with a deadline,
//! a pseudo-terminal for the interactive paths, scratch directories.

#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Stops a child that overran its deadline: SIGTERM first (so that it shuts its VM down and
/// removes its temp dir), SIGKILL if it is still there after ten seconds.
pub fn stop(child: &mut Child) {
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a child under a deadline; stops it (and fails the test) when the deadline passes.
pub fn wait_deadline(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let end = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= end {
            stop(child);
            panic!("{what}: still running after {timeout:?}; stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion under a deadline, capturing stdout and stderr (read by
/// threads so that a full pipe never stalls the child).
pub fn run_deadline(mut command: Command, timeout: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawning qemu-machine");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_deadline(&mut child, timeout, &format!("{command:?}"));
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Text of an output for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("qm-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process running on a pseudo-terminal: its stdin, stdout and stderr are the slave side,
/// the test reads and writes the master side.
pub struct PtyChild {
    pub child: Child,
    master: std::fs::File,
    slave_probe: OwnedFd,
    pub output: Vec<u8>,
    /// A file whose contents help explain a failure (a console log), shown when one happens.
    pub diagnostics: Option<PathBuf>,
}

fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; the other pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded; both descriptors are ours.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup")
}

/// The terminal's local flags (ICANON, ECHO, ...).
pub fn lflags(fd: RawFd) -> libc::tcflag_t {
    // SAFETY: zeroed termios is a valid value to be overwritten.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor number and struct.
    assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
    t.c_lflag
}

impl PtyChild {
    /// Starts `qemu-machine ARGS` on a new pty.
    pub fn spawn<I, S>(args: I) -> PtyChild
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (master, slave) = openpty();
        // A copy of the slave kept open (not given to the child) to look at its settings.
        let probe = dup(&slave);
        let mut command = Command::new(bin());
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(dup(&slave)))
            .stdout(Stdio::from(dup(&slave)))
            .stderr(Stdio::from(slave));
        let child = command.spawn().expect("spawning qemu-machine on a pty");
        drop(command);
        PtyChild {
            child,
            master: std::fs::File::from(master),
            slave_probe: probe,
            output: Vec::new(),
            diagnostics: None,
        }
    }

    /// The terminal's local flags now.
    pub fn lflags(&self) -> libc::tcflag_t {
        lflags(self.slave_probe.as_raw_fd())
    }

    /// Types bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// Reads what is there within `timeout`: `Some(true)` data, `Some(false)` end of output,
    /// `None` nothing in time.
    fn read_some(&mut self, timeout: Duration) -> Option<bool> {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            return None;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) | Err(_) => Some(false),
            Ok(n) => {
                self.output.extend_from_slice(&buf[..n]);
                Some(true)
            }
        }
    }

    /// Waits until `needle` appears in the output after byte `from`; returns its end offset.
    pub fn expect_from(&mut self, from: usize, needle: &str, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        loop {
            let hay = &self.output[from.min(self.output.len())..];
            if let Some(pos) = find(hay, needle.as_bytes()) {
                return from + pos + needle.len();
            }
            let now = Instant::now();
            if now >= end || self.read_some(end - now) == Some(false) {
                let text = String::from_utf8_lossy(&self.output).into_owned();
                stop(&mut self.child);
                panic!(
                    "waiting for {needle:?} (timeout {timeout:?}); output so far:\n{text}{}",
                    self.diagnose()
                );
            }
        }
    }

    /// Reads until the child closes the terminal, then waits for it (under `timeout`).
    pub fn finish(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The rest of the output: until end of file, or a quiet moment.
                while self.read_some(Duration::from_millis(200)) == Some(true) {
                    if Instant::now() >= end {
                        break;
                    }
                }
                return status;
            }
            let now = Instant::now();
            if now >= end {
                let text = String::from_utf8_lossy(&self.output).into_owned();
                stop(&mut self.child);
                panic!(
                    "qemu-machine did not exit within {timeout:?}; output:\n{text}{}",
                    self.diagnose()
                );
            }
            self.read_some(Duration::from_millis(50).min(end - now));
        }
    }

    fn diagnose(&self) -> String {
        match &self.diagnostics {
            Some(path) => format!(
                "\n--- {}:\n{}",
                path.display(),
                String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default())
            ),
            None => String::new(),
        }
    }

    /// All output as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            stop(&mut self.child);
        }
    }
}

/// The first position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether a process exists.
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
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
