//! Helpers added for the issue 16 tests (terminal size, processes, the state directory),
//! kept apart from the shared ones.

use std::path::Path;

use qemu_machine_tests::support::PtyChild;
use std::time::{Duration, Instant};

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

/// The session id of a process (field 6 of /proc/PID/stat), if it exists.
pub fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// `qemu-machine ARGS` on a new pty with extra environment variables; with `session`, in a
/// session of its own whose controlling terminal the pty is, as a shell in a terminal window
/// runs it (closing the terminal then hangs that session up).
pub fn pty_with<I, S>(args: I, env: &[(&str, &std::ffi::OsStr)], session: bool) -> PtyChild
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    PtyChild::spawn_program(super::bin(), args, env, session)
}
