//! The few system calls the command makes itself: pipes, `poll`, plain reads and writes on
//! raw descriptors, and signal delivery through a self-pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// A close-on-exec, non-blocking pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A new pseudo-terminal: (master, slave), both close-on-exec.
#[cfg(test)]
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; the name, termios and winsize pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded; the descriptors are ours.
    let fds = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&fds.0, &fds.1] {
        // SAFETY: F_SETFD on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(fds)
}

/// Reads into `buf`; `Ok(0)` is end of file. EINTR is retried.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes all of `bytes` to `fd`, waiting with `poll` when it is non-blocking and full.
pub fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of `bytes.len()` bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let mut pfd = [PollFd::new(fd, libc::POLLOUT)];
                poll(&mut pfd, None)?;
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// One entry of a `poll` set.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct PollFd(libc::pollfd);

impl PollFd {
    /// Watches `fd` for `events` (`POLLIN`, `POLLOUT`).
    pub fn new(fd: RawFd, events: libc::c_short) -> PollFd {
        PollFd(libc::pollfd {
            fd,
            events,
            revents: 0,
        })
    }

    /// An entry that is never ready (a negative descriptor is ignored by `poll`).
    pub fn unused() -> PollFd {
        PollFd::new(-1, 0)
    }

    /// Whether the descriptor is readable, or closed, or in error (a read will not block).
    pub fn readable(&self) -> bool {
        self.0.fd >= 0 && self.0.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
    }
}

/// `poll(2)` with an optional timeout (rounded up to whole milliseconds); returns the number of
/// ready entries. An interrupted wait (a signal) returns `Ok(0)`: the self-pipe says which.
pub fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    };
    for fd in fds.iter_mut() {
        fd.0.revents = 0;
    }
    // SAFETY: `PollFd` is a transparent wrapper of `pollfd` laid out in an array of
    // `fds.len()` entries, which poll reads and writes.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr().cast::<libc::pollfd>(),
            fds.len() as libc::nfds_t,
            ms,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// The write end of the signal pipe, for the handler (−1 when none is installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write is async-signal-safe; `byte` is a valid one-byte buffer. A full pipe
        // (EAGAIN) loses only a repeat of a signal already pending. errno is saved and restored
        // so the interrupted code does not see it change.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Signals (SIGINT, SIGTERM, SIGHUP, and others asked for) turned into bytes on a pipe, so that
/// the main loop sees them in the same `poll` as everything else. Dropping it restores the
/// default handlers.
#[derive(Debug)]
pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
    caught: Vec<libc::c_int>,
}

/// The signals that end a command, which [`Signals::install`] always catches.
pub const CAUGHT: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

impl Signals {
    /// Installs the handlers for [`CAUGHT`]. Only one `Signals` should exist at a time.
    pub fn install() -> io::Result<Signals> {
        Signals::install_with(&[])
    }

    /// Installs the handlers for [`CAUGHT`] and `extra` (SIGWINCH, say).
    pub fn install_with(extra: &[libc::c_int]) -> io::Result<Signals> {
        let (read, write) = pipe()?;
        SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        let caught: Vec<libc::c_int> = CAUGHT.iter().chain(extra).copied().collect();
        for &signal in &caught {
            // SAFETY: sigaction is a plain C struct; all-zero is a valid starting value.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: sa_mask is a valid sigset_t inside `action`.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: installs a handler that only calls async-signal-safe functions.
            if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Signals {
            read,
            _write: write,
            caught,
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Takes the signals received since the last call (oldest first).
    pub fn take(&self) -> Vec<libc::c_int> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        while let Ok(n) = read(self.read.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            out.extend(buf[..n].iter().map(|&b| libc::c_int::from(b)));
        }
        out
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for &signal in &self.caught {
            // SAFETY: restoring the default disposition is always valid.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        SIGNAL_PIPE.store(-1, Ordering::Relaxed);
    }
}

/// The name of a caught signal, for messages.
pub fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_poll_read_write() {
        let (r, w) = pipe().unwrap();
        let mut fds = [PollFd::new(r.as_raw_fd(), libc::POLLIN), PollFd::unused()];
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
        assert!(!fds[0].readable());
        write_all(w.as_raw_fd(), b"hello").unwrap();
        assert_eq!(poll(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        assert!(fds[0].readable());
        assert!(!fds[1].readable());
        let mut buf = [0u8; 16];
        assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(
            read(r.as_raw_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(w);
        assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), 0);
    }

    #[test]
    fn a_raised_signal_arrives_on_the_pipe() {
        let signals = Signals::install().unwrap();
        // SAFETY: raise delivers SIGHUP to this thread; the handler only writes to the pipe.
        unsafe { libc::raise(libc::SIGHUP) };
        let mut fds = [PollFd::new(signals.fd(), libc::POLLIN)];
        poll(&mut fds, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(signals.take(), vec![libc::SIGHUP]);
        assert!(signals.take().is_empty());
        assert_eq!(signal_name(libc::SIGHUP), "SIGHUP");
    }
}
