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
