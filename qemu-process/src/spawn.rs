//! Spawning the QEMU child: binary lookup, private temp dir, log file, inherited descriptors,
//! parent-death signal, pidfd, and reaping.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

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

/// A private directory (mode 0700) removed with its contents on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `base/qemu-machine.XXXXXX`.
    pub(crate) fn new(base: &Path) -> io::Result<TempDir> {
        Ok(TempDir {
            path: sys::mkdtemp(base, "qemu-machine.")?,
        })
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

/// What to run: the full argv (program first), the environment changes, the log file, and the
/// descriptors the child inherits (by their current numbers).
pub(crate) struct SpawnRequest<'a> {
    pub(crate) argv: &'a [OsString],
    pub(crate) env: &'a [(OsString, Option<OsString>)],
    pub(crate) log: &'a File,
    pub(crate) inherit: &'a [RawFd],
}

/// How the parent learns, in its poll, that the child has exited.
#[derive(Debug)]
enum ExitWatch {
    /// A pidfd: readable once the child has exited; signals go through it, so they can never
    /// reach a recycled pid.
    Pidfd(OwnedFd),
    /// Where pidfds are unavailable (kernels before 5.3, valgrind, some seccomp sandboxes): the
    /// read end of a pipe whose write end only the child holds. It reads end-of-file once the
    /// child (and anything it handed the descriptor to) has exited.
    Pipe(OwnedFd),
}

impl ExitWatch {
    fn fd(&self) -> &OwnedFd {
        match self {
            ExitWatch::Pidfd(fd) | ExitWatch::Pipe(fd) => fd,
        }
    }
}

/// Whether this process can use pidfds, probed once with `pidfd_open(getpid())`.
fn pidfds_available() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 yes, 2 no
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ok = u32::try_from(sys::getpid())
                .ok()
                .is_some_and(|pid| sys::pidfd_open(pid).is_ok());
            if !ok {
                log::info!("pidfd_open is unavailable here: watching QEMU's exit through a pipe");
            }
            STATE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

/// A spawned child with its exit watch. Reaped at most once; the status is kept.
#[derive(Debug)]
pub(crate) struct ChildProc {
    child: Child,
    watch: ExitWatch,
    status: Option<ExitStatus>,
}

impl ChildProc {
    /// Spawns without a shell: stdin from /dev/null, stdout and stderr to the log file, the given
    /// descriptors inherited and nothing else, and SIGKILL when the spawning thread dies.
    pub(crate) fn spawn(req: &SpawnRequest<'_>) -> io::Result<ChildProc> {
        Self::spawn_watched(req, pidfds_available())
    }

    /// [`ChildProc::spawn`] with the exit watch chosen by the caller (tests use the pipe).
    fn spawn_watched(req: &SpawnRequest<'_>, use_pidfd: bool) -> io::Result<ChildProc> {
        let (program, args) = req
            .argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(req.log.try_clone()?))
            .stderr(Stdio::from(req.log.try_clone()?));
        for (key, value) in req.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let mut keep: Vec<RawFd> = req.inherit.to_vec();
        // Without pidfds: a pipe whose write end only the child keeps (both ends close-on-exec
        // here; child_setup clears the flag on the write end in the child alone).
        let exit_pipe = if use_pidfd {
            None
        } else {
            let (read, write) = sys::pipe_cloexec()?;
            keep.push(write.as_raw_fd());
            Some((read, write))
        };
        let parent = sys::getpid();
        // SAFETY: the closure only calls `sys::child_setup`, which makes async-signal-safe system
        // calls (prctl, getppid, close_range/fcntl, getrlimit) and does not allocate; `keep` was
        // allocated before the fork and is only read.
        unsafe {
            cmd.pre_exec(move || sys::child_setup(&keep, parent));
        }
        let child = cmd.spawn()?;
        let watch = match exit_pipe {
            Some((read, write)) => {
                // Only the child may hold the write end, or end-of-file would never come.
                drop(write);
                ExitWatch::Pipe(read)
            }
            None => match sys::pidfd_open(child.id()) {
                Ok(fd) => ExitWatch::Pidfd(fd),
                Err(e) => {
                    // Cannot watch it: do not leave it running. The pid is ours until reaped.
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            },
        };
        Ok(ChildProc {
            child,
            watch,
            status: None,
        })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit watch descriptor (readable once the child has exited).
    #[cfg(test)]
    pub(crate) fn exit_fd(&self) -> &OwnedFd {
        self.watch.fd()
    }

    /// The exit status, once reaped.
    pub(crate) fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Reaps the child if it has exited, without blocking.
    pub(crate) fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        if self.status.is_none() {
            if let ExitWatch::Pipe(fd) = &self.watch {
                // The pipe reads end-of-file when the exiting child closes its descriptors,
                // which the kernel does a moment before it turns the child into a zombie. Once
                // it has, the child is past the point of no return: wait for it.
                if sys::wait_readable(fd.as_fd(), Duration::ZERO)? {
                    self.status = Some(self.child.wait()?);
                }
            }
        }
        Ok(self.status)
    }

    /// Sends a signal unless the child is already reaped. Returns whether it was delivered.
    pub(crate) fn signal(&self, signal: libc::c_int) -> io::Result<bool> {
        if self.status.is_some() {
            return Ok(false);
        }
        match &self.watch {
            ExitWatch::Pidfd(fd) => sys::pidfd_send_signal(fd.as_fd(), signal),
            // Not reaped yet, so the pid still names our child (a zombie at worst).
            ExitWatch::Pipe(_) => sys::kill(self.child.id(), signal),
        }
    }

    /// SIGKILL, then reap, waiting on the pidfd up to `limit` (a process in uninterruptible sleep
    /// can take a while to die; we never wait without bound).
    pub(crate) fn kill_and_reap(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        self.signal(libc::SIGKILL)?;
        if sys::wait_readable(self.watch.fd().as_fd(), limit)? {
            self.try_reap()
        } else {
            Ok(None)
        }
    }

    /// The raw number of the exit watch descriptor (a pidfd, or a pipe where pidfds are
    /// unavailable), for the poll.
    pub(crate) fn exit_fd_raw(&self) -> RawFd {
        self.watch.fd().as_raw_fd()
    }
}

/// Joins an argv into one line for messages, quoting arguments that need it.
pub(crate) fn display_argv(argv: &[OsString]) -> String {
    fn quote(arg: &OsStr) -> String {
        let s = arg.to_string_lossy();
        let plain = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b",._+-:=/@%".contains(&b));
        if plain {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    }
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;

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
    fn child_inherits_only_the_listed_descriptors() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log_path = dir.path().join("log");
        let log = create_private_file(&log_path).unwrap();
        let (_a, keep) = sys::socketpair().unwrap();
        let (_c, other) = sys::socketpair().unwrap();
        // A descriptor without CLOEXEC, as a careless library might leave behind.
        // SAFETY: plain dup of an open descriptor.
        let leaked = unsafe { libc::dup(other.as_raw_fd()) };
        assert!(leaked >= 0);
        let argv: Vec<OsString> = ["sh", "-c", "ls /proc/self/fd; echo err >&2; exit 3"]
            .iter()
            .map(OsString::from)
            .collect();
        let mut child = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &[],
            log: &log,
            inherit: &[keep.as_raw_fd()],
        })
        .unwrap();
        assert!(sys::wait_readable(child.exit_fd().as_fd(), Duration::from_secs(10)).unwrap());
        let status = child.try_reap().unwrap().unwrap();
        assert_eq!(status.code(), Some(3));
        // SAFETY: closing the descriptor this test dup'ed.
        unsafe { libc::close(leaked) };
        let mut out = String::new();
        File::open(&log_path)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut fds: Vec<i32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        fds.sort();
        // 0, 1, 2, the inherited socket, and the directory `ls` itself opened.
        assert!(fds.contains(&keep.as_raw_fd()), "{out}");
        assert!(!fds.contains(&leaked), "{out}");
        assert!(!fds.contains(&other.as_raw_fd()), "{out}");
        assert!(fds.len() <= 5, "{out}");
        assert!(out.contains("err"), "{out}");
    }

    #[test]
    fn child_sees_environment_changes_and_null_stdin() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log_path = dir.path().join("log");
        let log = create_private_file(&log_path).unwrap();
        let argv: Vec<OsString> = ["sh", "-c", "echo \"$QM_A/${HOME:-nohome}\"; cat; echo end"]
            .iter()
            .map(OsString::from)
            .collect();
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
        assert!(sys::wait_readable(child.exit_fd().as_fd(), Duration::from_secs(10)).unwrap());
        assert!(child.try_reap().unwrap().unwrap().success());
        let out = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(out, "set/nohome\nend\n");
    }

    #[test]
    fn kill_and_reap_ends_a_stopped_child() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log = create_private_file(&dir.path().join("log")).unwrap();
        let argv: Vec<OsString> = ["sleep", "60"].iter().map(OsString::from).collect();
        let mut child = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &[],
            log: &log,
            inherit: &[],
        })
        .unwrap();
        assert!(child.pid() > 0);
        assert!(child.signal(libc::SIGSTOP).unwrap());
        assert_eq!(child.try_reap().unwrap(), None);
        let status = child
            .kill_and_reap(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!child.signal(libc::SIGKILL).unwrap());
        assert_eq!(child.status(), Some(status));
    }

    #[test]
    fn the_pipe_watch_sees_exit_and_carries_signals() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let log = create_private_file(&dir.path().join("log")).unwrap();
        let spawn = |script: &str| {
            let argv: Vec<OsString> = ["sh", "-c", script].iter().map(OsString::from).collect();
            ChildProc::spawn_watched(
                &SpawnRequest {
                    argv: &argv,
                    env: &[],
                    log: &log,
                    inherit: &[],
                },
                false,
            )
            .unwrap()
        };
        let mut quick = spawn("exit 3");
        // SAFETY: getpgid only reads the process table; the child is not reaped yet.
        let pgid = unsafe { libc::getpgid(quick.pid() as libc::pid_t) };
        assert_eq!(
            pgid,
            quick.pid() as libc::pid_t,
            "the child leads its own process group"
        );
        assert!(matches!(quick.watch, ExitWatch::Pipe(_)));
        assert!(sys::wait_readable(quick.exit_fd().as_fd(), Duration::from_secs(10)).unwrap());
        assert_eq!(quick.try_reap().unwrap().unwrap().code(), Some(3));

        let mut slow = spawn("exec sleep 60");
        assert!(!sys::wait_readable(slow.exit_fd().as_fd(), Duration::from_millis(50)).unwrap());
        let status = slow
            .kill_and_reap(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(
            !slow.signal(libc::SIGTERM).unwrap(),
            "no signal after reaping"
        );
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
    }

    #[test]
    fn argv_display_quotes_what_needs_it() {
        let argv: Vec<OsString> = ["qemu", "-name", "a b", "it's", ""]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(display_argv(&argv), r"qemu -name 'a b' 'it'\''s' ''");
    }
}
