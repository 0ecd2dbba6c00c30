//! The process guardian: what ties every QEMU to the *process* that launched it.
//!
//! Linux offers `PR_SET_PDEATHSIG`, but it fires when the *thread* that forked the child exits,
//! so a QEMU launched on a worker thread that then ends (a thread pool, a Go goroutine locked to
//! its OS thread) would be killed at once, while one whose owner dies in a way that keeps that
//! thread alive would not. And children of the owner are at the mercy of the owner's `SIGCHLD`
//! handling: a program that ignores `SIGCHLD` or reaps with `waitpid(-1)` takes their exit
//! status away.
//!
//! So each process that launches machines has one guardian: a small child, forked from the
//! owner on first use (or at [`start_guardian`](crate::start_guardian)), single-threaded, that
//! spawns QEMU on the owner's behalf and watches it:
//!
//! - QEMU is the guardian's child, with `PR_SET_PDEATHSIG(SIGKILL)` against the guardian (one
//!   thread, so the signal means what it says). Any owner thread may exit; the owner's `SIGCHLD`
//!   disposition does not matter; exit statuses are always available.
//! - The owner holds the request socket and one channel per child or watched directory, all
//!   close-on-exec. When the owner process dies (SIGKILL included) the kernel closes them; the
//!   guardian sees end-of-file, kills every child's process group, reaps it, removes the
//!   watched temp dirs, and exits. No polling, no timer: within milliseconds.
//! - Every child leads its own process group and signals go to the group, so a wrapper that
//!   forks QEMU instead of exec'ing it does not leave QEMU behind; the guardian is a child
//!   subreaper and kills what is left of a group when its leader exits.
//!
//! Costs: one process per owner (a copy-on-write fork of the owner at the moment it starts:
//! call [`start_guardian`](crate::start_guardian) early in a large program to fork it while
//! small), one descriptor per machine and per temp dir in the owner. A child the owner forks
//! without exec keeps copies of those descriptors, so the guardian waits for it too.

pub(crate) mod server;
pub(crate) mod wire;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;

use wire::{Msg, Received};

/// The umask QEMU runs with: everything it creates (sockets, screendumps, logs) is the owner's
/// alone.
pub(crate) const CHILD_UMASK: u32 = 0o077;

/// How long to wait for the guardian to confirm a spawn or a watch.
const REPLY_LIMIT: Duration = Duration::from_secs(30);

struct Guardian {
    request: OwnedFd,
    pid: libc::pid_t,
}

static GUARDIAN: Mutex<Option<Guardian>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Guardian>> {
    GUARDIAN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forks a new guardian.
fn fork_guardian() -> io::Result<Guardian> {
    let (ours, theirs) = wire::seqpacket_pair()?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(ours), OwnedFd::from_raw_fd(theirs)) };
    let devnull = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")?;
    let (theirs_raw, devnull_raw) = (theirs.as_raw_fd(), devnull.as_raw_fd());
    // Signals stay blocked across the fork, so that none of the owner's handlers runs in the
    // child before it resets them.
    // SAFETY: sigset_t is plain data initialised by sigfillset; pthread_sigmask only changes
    // this thread's mask, which is restored below.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // A plain clone, as fork(2) without the pthread_atfork handlers: the child runs only
    // `server::run`, which makes system calls and nothing else (no allocation, no locks), as a
    // child of a multi-threaded process must.
    // SAFETY: see above; clone with only an exit signal and no new stack behaves as fork.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid == 0 {
        server::run(theirs_raw, devnull_raw);
    }
    let err = io::Error::last_os_error();
    if pid > 0 {
        // The guardian moves to a process group of its own first thing; doing it from here too
        // (the usual way to avoid the race) means it is out of this process's group, away
        // from a Ctrl-C at its terminal, by the time the caller hears of it.
        // SAFETY: setpgid on our own child, which has not exec'd (it never does).
        unsafe { libc::setpgid(pid as libc::pid_t, pid as libc::pid_t) };
    }
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(err);
    }
    log::debug!("started the process guardian, pid {pid}");
    Ok(Guardian {
        request: ours,
        pid: pid as libc::pid_t,
    })
}

/// Sends one request to the guardian, starting it first if needed (or again, if it died).
fn request(msg: Msg, tail: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut guard = lock();
    for attempt in 0..2 {
        if guard.is_none() {
            *guard = Some(fork_guardian()?);
        }
        let g = guard.as_ref().expect("just set");
        match wire::send(g.request.as_raw_fd(), msg, tail, fds, false) {
            Ok(()) => return Ok(()),
            Err(errno)
                if attempt == 0
                    && matches!(errno, libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) =>
            {
                log::warn!(
                    "the process guardian (pid {}) is gone; starting a new one",
                    g.pid
                );
                // SAFETY: reaping our own child if it is a zombie; WNOHANG never blocks.
                unsafe { libc::waitpid(g.pid, std::ptr::null_mut(), libc::WNOHANG) };
                *guard = None;
            }
            Err(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
    Err(io::Error::other(
        "the process guardian could not be reached",
    ))
}

/// Starts this process's guardian now, if it does not run yet, and returns its pid.
pub(crate) fn start() -> io::Result<u32> {
    let mut guard = lock();
    if guard.is_none() {
        *guard = Some(fork_guardian()?);
    }
    Ok(guard.as_ref().map_or(0, |g| g.pid as u32))
}

/// The guardian's pid, if it runs.
pub(crate) fn pid() -> Option<u32> {
    lock().as_ref().map(|g| g.pid as u32)
}

/// Waits up to `limit` for one message on `chan` and returns it. End-of-file is an error.
fn reply(chan: BorrowedFd<'_>, limit: Duration) -> io::Result<Msg> {
    if !crate::sys::wait_readable(chan, limit)? {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the process guardian did not answer within {limit:?}"),
        ));
    }
    let mut buf = [0u8; wire::MSG_LEN];
    let mut fds = [-1 as RawFd; 4];
    match wire::recv(chan.as_raw_fd(), &mut buf, &mut fds).map_err(io::Error::from_raw_os_error)? {
        Received::Message { len, nfds } => {
            for &fd in &fds[..nfds] {
                // SAFETY: closing descriptors we received and nobody else owns.
                unsafe { libc::close(fd) };
            }
            Msg::parse(&buf[..len])
                .ok_or_else(|| io::Error::other("a malformed message from the process guardian"))
        }
        Received::Closed | Received::Empty => Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the process guardian closed the connection",
        )),
    }
}

/// A child the guardian spawned for us.
#[derive(Debug)]
pub(crate) struct Child {
    chan: OwnedFd,
    pid: u32,
}

/// What to spawn: argv (program path first), the complete environment, the standard streams,
/// and the descriptors the child gets as 3, 4, ... in order.
pub(crate) struct Spawn<'a> {
    pub(crate) argv: &'a [OsString],
    pub(crate) env: &'a [OsString],
    pub(crate) stdin: BorrowedFd<'a>,
    pub(crate) stdout: BorrowedFd<'a>,
    pub(crate) stderr: BorrowedFd<'a>,
    pub(crate) inherit: &'a [BorrowedFd<'a>],
}

/// The payload memfd of a spawn request: `argc`, `envc`, then the strings.
fn payload(argv: &[OsString], env: &[OsString]) -> io::Result<OwnedFd> {
    let mut bytes = Vec::new();
    let count = |n: usize| {
        u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many"))
    };
    bytes.extend_from_slice(&count(argv.len())?.to_ne_bytes());
    bytes.extend_from_slice(&count(env.len())?.to_ne_bytes());
    for s in argv.iter().chain(env) {
        let s = s.as_bytes();
        if s.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an argument or environment entry contains a NUL byte",
            ));
        }
        bytes.extend_from_slice(s);
        bytes.push(0);
    }
    // SAFETY: memfd_create with a static name and flags returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"qemu-machine-spawn".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(&bytes)?;
    Ok(OwnedFd::from(file))
}

impl Child {
    /// Spawns through the guardian and waits for it to confirm the exec (or report why not).
    pub(crate) fn spawn(req: &Spawn<'_>) -> io::Result<Child> {
        if req.argv.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        }
        if req.inherit.len() > wire::MAX_FDS - wire::SPAWN_FIXED_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "at most {} descriptors can be passed to QEMU",
                    wire::MAX_FDS - wire::SPAWN_FIXED_FDS
                ),
            ));
        }
        let payload = payload(req.argv, req.env)?;
        let cwd = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(".")?;
        let (ours, theirs) = wire::seqpacket_pair()?;
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(ours), OwnedFd::from_raw_fd(theirs)) };
        let mut fds = vec![
            theirs.as_raw_fd(),
            payload.as_raw_fd(),
            cwd.as_raw_fd(),
            req.stdin.as_raw_fd(),
            req.stdout.as_raw_fd(),
            req.stderr.as_raw_fd(),
        ];
        fds.extend(req.inherit.iter().map(AsRawFd::as_raw_fd));
        let msg = Msg::new(wire::SPAWN, req.inherit.len() as i32, CHILD_UMASK as i32);
        request(msg, &[], &fds)?;
        drop((theirs, payload, cwd));
        let reply = reply(ours.as_fd(), REPLY_LIMIT)?;
        match reply.kind {
            wire::SPAWNED if reply.a > 0 => Ok(Child {
                chan: ours,
                pid: reply.a as u32,
            }),
            wire::SPAWN_FAILED => {
                let err = io::Error::from_raw_os_error(reply.a);
                let stage = match reply.b {
                    wire::STAGE_REQUEST => "the request",
                    wire::STAGE_FORK => "fork",
                    wire::STAGE_SETUP => "setting up the child",
                    _ => "exec",
                };
                log::debug!(
                    "the guardian could not spawn {:?}: {stage}: {err}",
                    req.argv[0]
                );
                Err(err)
            }
            _ => Err(io::Error::other(
                "an unexpected answer from the process guardian",
            )),
        }
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The descriptor that becomes readable when the child has exited (or the guardian died).
    pub(crate) fn exit_fd(&self) -> BorrowedFd<'_> {
        self.chan.as_fd()
    }

    /// Sends `signal` to the child's process group. `false` when the guardian is gone.
    pub(crate) fn signal(&self, signal: libc::c_int) -> bool {
        wire::send(
            self.chan.as_raw_fd(),
            Msg::new(wire::SIGNAL, signal, 0),
            &[],
            &[],
            true,
        )
        .is_ok()
    }

    /// The exit status if the guardian reported it (without waiting). When the guardian itself
    /// is gone, the child was killed with it (`PR_SET_PDEATHSIG`): that is reported as death by
    /// SIGKILL, with a warning.
    pub(crate) fn try_status(&self) -> io::Result<Option<ExitStatus>> {
        loop {
            let mut buf = [0u8; wire::MSG_LEN];
            let mut fds = [-1 as RawFd; 4];
            match wire::recv(self.chan.as_raw_fd(), &mut buf, &mut fds)
                .map_err(io::Error::from_raw_os_error)?
            {
                Received::Empty => return Ok(None),
                Received::Closed => {
                    log::warn!(
                        "the process guardian is gone; QEMU (pid {}) was killed with it",
                        self.pid
                    );
                    return Ok(Some(ExitStatus::from_raw(libc::SIGKILL)));
                }
                Received::Message { len, nfds } => {
                    for &fd in &fds[..nfds] {
                        // SAFETY: closing descriptors we received and nobody else owns.
                        unsafe { libc::close(fd) };
                    }
                    if let Some(m) = Msg::parse(&buf[..len]) {
                        if m.kind == wire::EXITED {
                            return Ok(Some(ExitStatus::from_raw(m.a)));
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // The owner is done with it (a running child is killed by the guardian).
        let _ = wire::send(
            self.chan.as_raw_fd(),
            Msg::new(wire::GOODBYE, 0, 0),
            &[],
            &[],
            true,
        );
    }
}

/// A directory the guardian removes if this process dies before dropping the `Watch`.
#[derive(Debug)]
pub(crate) struct Watch {
    chan: OwnedFd,
}

impl Watch {
    /// Registers `dir` (an existing directory) with the guardian.
    pub(crate) fn new(dir: &Path) -> io::Result<Watch> {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory path with a parent",
            ));
        };
        let name = name.as_bytes();
        if name.len() > wire::MAX_NAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "directory name too long",
            ));
        }
        let parent = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })?;
        let (ours, theirs) = wire::seqpacket_pair()?;
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(ours), OwnedFd::from_raw_fd(theirs)) };
        request(
            Msg::new(wire::WATCH, 0, 0),
            name,
            &[theirs.as_raw_fd(), parent.as_raw_fd()],
        )?;
        drop((theirs, parent));
        let answer = reply(ours.as_fd(), REPLY_LIMIT)?;
        if answer.kind != wire::WATCHING {
            return Err(io::Error::other(
                "the process guardian refused to watch a directory",
            ));
        }
        Ok(Watch { chan: ours })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = wire::send(
            self.chan.as_raw_fd(),
            Msg::new(wire::GOODBYE, 0, 0),
            &[],
            &[],
            true,
        );
    }
}
