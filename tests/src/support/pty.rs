//! A child on a pseudo-terminal, for the interactive paths of a command-line program.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::child::{find, stop};

/// A process running on a pseudo-terminal: its stdin, stdout and stderr are the slave side,
/// the test reads and writes the master side. Dropping it stops the process if still running.
pub struct PtyChild {
    /// The process.
    pub child: Child,
    /// The program's name, for failure messages.
    program: String,
    master: std::fs::File,
    slave_probe: OwnedFd,
    /// Everything the process wrote to the terminal so far.
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
    /// Starts `program ARGS` on a new pty, without `RUST_LOG` in its environment.
    pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I) -> PtyChild
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let (master, slave) = openpty();
        // A copy of the slave kept open (not given to the child) to look at its settings.
        let probe = dup(&slave);
        let mut command = Command::new(program);
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(dup(&slave)))
            .stdout(Stdio::from(dup(&slave)))
            .stderr(Stdio::from(slave));
        let name = std::path::Path::new(program)
            .file_name()
            .unwrap_or(program)
            .to_string_lossy()
            .into_owned();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} on a pty: {e}"));
        drop(command);
        PtyChild {
            child,
            program: name,
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
                    "{} did not exit within {timeout:?}; output:\n{text}{}",
                    self.program,
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

impl PtyChild {
    /// Sets the terminal's size and tells the child, as a terminal emulator's resize does
    /// (the pty is not the child's controlling terminal, so the kernel would not).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the valid winsize passed.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGWINCH) };
    }

    /// Closes the terminal (both sides this test holds), as closing a terminal window does;
    /// reading output afterwards finds nothing.
    pub fn close_terminal(&mut self) {
        let null = || std::fs::File::open("/dev/null").unwrap();
        drop(std::mem::replace(&mut self.master, null()));
        drop(std::mem::replace(&mut self.slave_probe, null().into()));
    }
}

impl PtyChild {
    /// Starts `program ARGS` on a new pty with extra environment variables; with `session`, in
    /// a session of its own whose controlling terminal the pty is, as a shell in a terminal
    /// window runs it (closing the terminal then hangs that session up).
    pub fn spawn_program<P, I, S>(
        program: P,
        args: I,
        env: &[(&str, &std::ffi::OsStr)],
        session: bool,
    ) -> PtyChild
    where
        P: AsRef<std::ffi::OsStr>,
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let (master, slave) = openpty();
        let probe = dup(&slave);
        let mut command = Command::new(program.as_ref());
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(dup(&slave)))
            .stdout(Stdio::from(dup(&slave)))
            .stderr(Stdio::from(slave));
        for (k, v) in env {
            command.env(k, v);
        }
        if session {
            // SAFETY: setsid and ioctl are async-signal-safe; they run in the child between
            // fork and exec and touch only its own session and its stdin (the pty).
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let name = std::path::Path::new(program.as_ref())
            .file_name()
            .unwrap_or(program.as_ref())
            .to_string_lossy()
            .into_owned();
        let child = command.spawn().expect("spawning a program on a pty");
        drop(command);
        PtyChild {
            child,
            program: name,
            master: std::fs::File::from(master),
            slave_probe: probe,
            output: Vec::new(),
            diagnostics: None,
        }
    }
}

impl PtyChild {
    /// Reads whatever output comes within `quiet` of the last (without failing).
    pub fn drain(&mut self, quiet: Duration) {
        while self.read_some(quiet) == Some(true) {}
    }
}
