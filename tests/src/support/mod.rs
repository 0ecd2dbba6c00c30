//! Helpers the integration tests share (this crate's own, qemu-cli's and qemu-ffi's): scratch
//! directories, processes seen through `/proc`, the QEMU configurations the tests launch, the
//! guest fixture's serial shell, and children run under a deadline or on a pseudo-terminal.
//!
//! Everything here fails the calling test with a clear message rather than returning errors:
//! it is test support, not library code.

use std::path::Path;

pub use tempfile::TempDir;

mod child;
mod guest;
mod machine;
mod pty;

pub use child::{find, run_deadline, show, stop, wait_deadline};
pub use guest::Guest;
pub use machine::{
    fixture, guest_spec, launch, launch_json, none_config, options, shell, wait_ready, BOOT,
};
pub use pty::{lflags, PtyChild};

/// A fresh private (mode 0700) directory under the system's temp dir, named
/// `qm-<tag>-<random>`, removed with its contents when dropped (also when the test panics).
pub fn scratch(tag: &str) -> TempDir {
    scratch_in(&std::env::temp_dir(), tag)
}

/// Like [`scratch`], under `parent`.
pub fn scratch_in(parent: &Path, tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(&format!("qm-{tag}-"))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("creating a scratch dir in {}: {e}", parent.display()))
}

/// The names in a directory, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether a process with this pid exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The state letter of a process from /proc/PID/stat (`R`, `S`, `T`, `Z`, ...).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.chars().next()
}

/// Whether `pid` is gone, or a zombie about to be reaped.
pub fn process_gone(pid: u32) -> bool {
    matches!(process_state(pid), None | Some('Z'))
}

/// Sends a signal to a pid; fails the test if `kill(2)` fails.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    let ret = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        ret,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_dir_is_private_empty_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("support-test");
        let path = dir.path().to_owned();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("qm-support-test-"), "{name}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(entries(&path).is_empty());
        std::fs::write(path.join("b"), "").unwrap();
        std::fs::create_dir(path.join("a")).unwrap();
        assert_eq!(entries(&path), ["a", "b"]);
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn this_process_exists_and_runs() {
        let me = std::process::id();
        assert!(process_exists(me));
        assert!(process_state(me).is_some());
        assert!(!process_gone(me));
    }

    #[test]
    fn a_reaped_child_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(process_gone(pid));
        assert_eq!(process_state(pid), None);
    }
}
