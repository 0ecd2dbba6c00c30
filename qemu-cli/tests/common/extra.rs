//! Helpers added for the issue 16 tests (terminal size, processes, the state directory),
//! kept apart from the shared ones.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::PtyChild;

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

/// Waits until `cond` holds, checking every 50 ms; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The mode bits of a path (without following a last symlink).
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

impl PtyChild {
    /// Starts `qemu-machine ARGS` on a new pty with extra environment variables; with
    /// `session`, in a session of its own whose controlling terminal the pty is, as a shell in
    /// a terminal window runs it (closing the terminal then hangs that session up).
    pub fn spawn_with<I, S>(args: I, env: &[(&str, &std::ffi::OsStr)], session: bool) -> PtyChild
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        PtyChild::spawn_program(super::bin(), args, env, session)
    }

    /// [`spawn_with`](PtyChild::spawn_with) for another program (a script).
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
        let (master, slave) = super::openpty();
        let probe = super::dup(&slave);
        let mut command = Command::new(program);
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(super::dup(&slave)))
            .stdout(Stdio::from(super::dup(&slave)))
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
        let child = command.spawn().expect("spawning a program on a pty");
        drop(command);
        PtyChild {
            child,
            master: std::fs::File::from(master),
            slave_probe: probe,
            output: Vec::new(),
            diagnostics: None,
        }
    }
}

/// The session id of a process (field 6 of /proc/PID/stat), if it exists.
pub fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

impl PtyChild {
    /// Reads whatever output comes within `quiet` of the last (without failing).
    pub fn drain(&mut self, quiet: Duration) {
        while self.read_some(quiet) == Some(true) {}
    }
}
