//! Spawning the QEMU child through the process guardian: binary lookup, private temp dir, log
//! file, inherited descriptors, signals and the exit status.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::guardian;
use crate::sys;

/// Finds an executable: a name containing `/` is taken as a path, anything else is looked up in
/// `PATH` like execvp(3) does. Returns `None` when nothing executable is found.
pub(crate) fn find_executable(program: &Path) -> Option<PathBuf> {
    fn is_executable(path: &Path) -> bool {
        std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    if program.as_os_str().is_empty() {
        return None;
    }
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return is_executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// A private directory (mode 0700) removed with its contents on drop, and by the process
/// guardian if this process dies first.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
    /// Dropped after the directory is removed (field order does not matter: `Drop::drop` runs
    /// before the fields drop).
    _watch: guardian::Watch,
}

impl TempDir {
    /// Creates `base/qemu-machine.XXXXXX` (an absolute path) and registers it with the guardian.
    pub(crate) fn new(base: &Path) -> io::Result<TempDir> {
        let base = std::path::absolute(base)?;
        let path = sys::mkdtemp(&base, "qemu-machine.")?;
        match guardian::Watch::new(&path) {
            Ok(watch) => Ok(TempDir {
                path,
                _watch: watch,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                Err(e)
            }
        }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!(
                    "could not remove temporary directory {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// Creates (or truncates) a file only the owner can read, close-on-exec.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// What to run: the full argv (program first, a path), the environment changes, the log file
/// (stdout and stderr), and the descriptors the child gets as 3, 4, ... in order (refer to them
/// by those numbers in the argv: see [`inherited_fd`]). Stdin is `/dev/null`.
pub(crate) struct SpawnRequest<'a> {
    pub(crate) argv: &'a [OsString],
    pub(crate) env: &'a [(OsString, Option<OsString>)],
    pub(crate) log: &'a File,
    pub(crate) inherit: &'a [BorrowedFd<'a>],
}

/// The number the child sees the `index`th inherited descriptor as.
pub(crate) fn inherited_fd(index: usize) -> RawFd {
    3 + index as RawFd
}

/// This process's environment with `changes` applied, as `KEY=VALUE` entries.
pub(crate) fn environment(changes: &[(OsString, Option<OsString>)]) -> Vec<OsString> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (key, value) in changes {
        vars.retain(|(k, _)| k != key);
        if let Some(value) = value {
            vars.push((key.clone(), value.clone()));
        }
    }
    vars.into_iter()
        .map(|(mut k, v)| {
            k.push("=");
            k.push(v);
            k
        })
        .collect()
}

/// A child spawned through the process guardian (see [`crate::guardian`]), with its exit status
/// once it is known.
#[derive(Debug)]
pub(crate) struct ChildProc {
    child: guardian::Child,
    status: Option<ExitStatus>,
}

impl ChildProc {
    /// Spawns without a shell, as a child of this process's guardian: its own process group,
    /// stdin from /dev/null, stdout and stderr to the log, the listed descriptors and nothing
    /// else, umask 077, killed when this process dies (whichever thread spawned it).
    pub(crate) fn spawn(req: &SpawnRequest<'_>) -> io::Result<ChildProc> {
        let env = environment(req.env);
        let devnull = File::open("/dev/null")?;
        let child = guardian::Child::spawn(&guardian::Spawn {
            argv: req.argv,
            env: &env,
            stdin: devnull.as_fd(),
            stdout: req.log.as_fd(),
            stderr: req.log.as_fd(),
            inherit: req.inherit,
        })?;
        Ok(ChildProc {
            child,
            status: None,
        })
    }

    /// Spawns a helper program (`argv[0]` a path) with the given standard streams, this
    /// process's environment, and nothing else inherited; see [`ChildProc::spawn`].
    pub(crate) fn spawn_with_stdio(
        argv: &[OsString],
        stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> io::Result<ChildProc> {
        let child = guardian::Child::spawn(&guardian::Spawn {
            argv,
            env: &environment(&[]),
            stdin,
            stdout,
            stderr,
            inherit: &[],
        })?;
        Ok(ChildProc {
            child,
            status: None,
        })
    }

    /// Waits, without bound, for the child to exit (for helpers that finish by themselves).
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
            sys::wait_readable(self.child.exit_fd(), Duration::from_secs(3600))?;
        }
    }

    /// Waits up to `limit` for the child to exit (for short helpers); `None` if it still runs.
    pub(crate) fn wait_timeout(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.try_reap()? {
                return Ok(Some(status));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !sys::wait_readable(self.child.exit_fd(), left)? {
                return Ok(None);
            }
        }
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The exit status, once reaped.
    pub(crate) fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Takes in the exit status if the guardian reported it, without blocking.
    pub(crate) fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_status()?;
        }
        Ok(self.status)
    }

    /// Sends a signal to the child's process group unless it has exited. Returns whether it
    /// was sent.
    pub(crate) fn signal(&self, signal: libc::c_int) -> io::Result<bool> {
        if self.status.is_some() {
            return Ok(false);
        }
        Ok(self.child.signal(signal))
    }

    /// SIGKILL to the process group, then waits up to `limit` for the exit status (a process
    /// in uninterruptible sleep can take a while to die; we never wait without bound).
    pub(crate) fn kill_and_reap(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        self.signal(libc::SIGKILL)?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !sys::wait_readable(self.child.exit_fd(), left)? {
                return Ok(None);
            }
            if let Some(status) = self.try_reap()? {
                return Ok(Some(status));
            }
        }
    }

    /// The raw number of the descriptor that becomes readable when the child exits, for the
    /// poll.
    pub(crate) fn exit_fd_raw(&self) -> RawFd {
        self.child.exit_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;

    fn args(list: &[&str]) -> Vec<OsString> {
        let mut argv: Vec<OsString> = list.iter().map(OsString::from).collect();
        argv[0] = find_executable(Path::new(list[0]))
            .expect("program in PATH")
            .into_os_string();
        argv
    }

    fn wait_exit(child: &mut ChildProc) -> ExitStatus {
        for _ in 0..1000 {
            if sys::wait_readable(child.child.exit_fd(), Duration::from_secs(10)).unwrap() {
                if let Some(status) = child.try_reap().unwrap() {
                    return status;
                }
            }
        }
        panic!("the child did not exit");
    }

    #[test]
    fn finds_programs_in_path_and_by_path() {
        let sh = find_executable(Path::new("sh")).expect("sh in PATH");
        assert!(sh.is_absolute());
        assert_eq!(find_executable(&sh), Some(sh.clone()));
        assert_eq!(find_executable(Path::new("/nonexistent/qemu")), None);
        assert_eq!(find_executable(Path::new("no-such-program-qm")), None);
        assert_eq!(find_executable(Path::new("")), None);
        // A directory is not an executable.
        assert_eq!(find_executable(Path::new("/usr/bin")), None);
    }

    #[test]
    fn temp_dir_is_removed_with_contents() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("f"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn child_inherits_only_the_listed_descriptors_as_numbered() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log_path = dir.path().join("log");
        let log = create_private_file(&log_path).unwrap();
        let (keep, keep_peer) = sys::socketpair().unwrap();
        let (_c, other) = sys::socketpair().unwrap();
        // A descriptor without CLOEXEC, as a careless library might leave behind.
        // SAFETY: plain dup of an open descriptor.
        let leaked = unsafe { libc::dup(other.as_raw_fd()) };
        assert!(leaked >= 0);
        // The child writes to its fd 3, which must be `keep`'s peer... that is, `keep_peer`.
        let argv = args(&[
            "sh",
            "-c",
            "ls /proc/self/fd; echo err >&2; echo via3 >&3; exit 3",
        ]);
        let mut child = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &[],
            log: &log,
            inherit: &[keep_peer.as_fd()],
        })
        .unwrap();
        assert_eq!(wait_exit(&mut child).code(), Some(3));
        // SAFETY: closing the descriptor this test dup'ed.
        unsafe { libc::close(leaked) };
        let mut out = String::new();
        File::open(&log_path)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut fds: Vec<i32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        fds.sort();
        // 0, 1, 2, the inherited socket as 3, and the directory `ls` itself opened.
        assert_eq!(&fds[..4], &[0, 1, 2, 3], "{out}");
        assert!(fds.len() <= 5, "{out}");
        assert!(out.contains("err"), "{out}");
        drop(keep_peer);
        let mut got = [0u8; 16];
        sys::set_nonblocking(keep.as_raw_fd(), false).unwrap();
        let n = sys::recv(keep.as_fd(), &mut got).unwrap();
        assert_eq!(&got[..n], b"via3\n");
    }

    #[test]
    fn child_sees_environment_changes_cwd_umask_and_null_stdin() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log_path = dir.path().join("log");
        let log = create_private_file(&log_path).unwrap();
        let argv = args(&[
            "sh",
            "-c",
            "echo \"$QM_A/${HOME:-nohome}\"; umask; pwd; cat; echo end",
        ]);
        let env = [
            (OsString::from("QM_A"), Some(OsString::from("set"))),
            (OsString::from("HOME"), None),
        ];
        let mut child = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &env,
            log: &log,
            inherit: &[],
        })
        .unwrap();
        assert!(wait_exit(&mut child).success());
        let out = std::fs::read_to_string(&log_path).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(out, format!("set/nohome\n0077\n{}\nend\n", cwd.display()));
    }

    #[test]
    fn kill_and_reap_ends_a_stopped_child_and_its_group() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log_path = dir.path().join("log");
        let log = create_private_file(&log_path).unwrap();
        // A wrapper that forks its payload instead of exec'ing it.
        let argv = args(&["sh", "-c", "sleep 60 & echo $!; wait"]);
        let mut child = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &[],
            log: &log,
            inherit: &[],
        })
        .unwrap();
        assert!(child.pid() > 0);
        // SAFETY: getpgid only reads the process table; the child is not reaped yet.
        let pgid = unsafe { libc::getpgid(child.pid() as libc::pid_t) };
        assert_eq!(pgid, child.pid() as libc::pid_t, "its own process group");
        let grandchild: u32 = loop {
            let text = std::fs::read_to_string(&log_path).unwrap();
            if let Some(line) = text.lines().next() {
                break line.trim().parse().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(child.signal(libc::SIGSTOP).unwrap());
        assert_eq!(child.try_reap().unwrap(), None);
        let status = child
            .kill_and_reap(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!child.signal(libc::SIGKILL).unwrap());
        assert_eq!(child.status(), Some(status));
        // The forked payload went with its group (it is gone or a zombie being reaped).
        for _ in 0..1000 {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            match stat {
                Err(_) => return,
                Ok(s) if s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')) => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        panic!("the forked grandchild {grandchild} survived its group's SIGKILL");
    }

    #[test]
    fn a_child_survives_the_thread_that_spawned_it() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log = create_private_file(&dir.path().join("log")).unwrap();
        let argv = args(&["sleep", "60"]);
        let mut child = std::thread::scope(|s| {
            s.spawn(|| {
                ChildProc::spawn(&SpawnRequest {
                    argv: &argv,
                    env: &[],
                    log: &log,
                    inherit: &[],
                })
                .unwrap()
            })
            .join()
            .unwrap()
        });
        // The spawning thread is gone; the child is not.
        assert!(!sys::wait_readable(child.child.exit_fd(), Duration::from_millis(200)).unwrap());
        assert_eq!(child.try_reap().unwrap(), None);
        let status = child
            .kill_and_reap(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn missing_program_fails_to_spawn() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log = create_private_file(&dir.path().join("log")).unwrap();
        let argv = vec![OsString::from("/nonexistent/qemu-system-x86_64")];
        let err = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &[],
            log: &log,
            inherit: &[],
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // A file that is not executable.
        let argv = vec![dir.path().join("log").into_os_string()];
        let err = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &[],
            log: &log,
            inherit: &[],
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    }
}
