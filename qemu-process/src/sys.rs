//! Thin, safe wrappers over the Linux system calls this crate needs.
//!
//! Everything that touches `libc` directly lives here (and in the child-side setup in
//! [`child_setup`]), so that the rest of the crate works with `OwnedFd`, `io::Result` and slices.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Converts a `-1` return value into the current `errno` as an `io::Error`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts a `-1` return value of a `ssize_t` call into the current `errno`.
fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A connected pair of `AF_UNIX` stream sockets, both close-on-exec.
///
/// The first socket (ours) is non-blocking; the second (the one handed to QEMU) stays blocking,
/// as QEMU sets the mode it wants on its own end.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as socketpair(2) requires.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded, so both descriptors are open and owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(ours.as_raw_fd(), true)?;
    Ok((ours, theirs))
}

/// The address family of a socket (`AF_UNIX`, `AF_INET`, ...), from `SO_DOMAIN`.
pub(crate) fn socket_domain(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `domain` and `len` are valid for writes and `len` holds the size of `domain`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(domain)
}

/// Sets or clears `O_NONBLOCK` on a descriptor.
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL on any descriptor number is memory-safe; errors are reported via errno.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL with an int argument is memory-safe.
        check(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// Sends bytes on a socket without ever raising SIGPIPE (the caller may be a C program that did
/// not ignore it). Non-blocking sockets report `WouldBlock`.
pub(crate) fn send(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe the `bytes` slice, valid for reads.
        let ret = unsafe {
            libc::send(
                fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        match check_size(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Receives bytes from a socket into `buf`'s spare capacity, replacing what it held: on success
/// `buf` holds exactly the bytes received (none: the peer closed its end). Memory the kernel
/// does not write is never touched, so a large, rarely filled buffer costs only the pages that
/// were used (a zeroed buffer would be resident in full).
pub(crate) fn recv_into(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let spare = buf.spare_capacity_mut();
    loop {
        // SAFETY: the pointer and length describe `buf`'s spare capacity, valid for writes.
        let ret = unsafe { libc::recv(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), 0) };
        match check_size(ret) {
            Ok(n) => {
                // SAFETY: recv wrote `n` bytes (at most the spare capacity) from the start of
                // the spare capacity, so the first `n` elements are initialised.
                unsafe { buf.set_len(n) };
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives bytes from a socket. `Ok(0)` means the peer closed its end.
///
/// The machine's loops read with [`recv_into`]; this form, for a buffer that is already
/// initialised, is kept for the other readers (the tests use it).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe the `buf` slice, valid for writes.
        let ret = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        match check_size(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sends `bytes` on a unix socket with `fd_to_pass` attached as `SCM_RIGHTS` ancillary data.
///
/// At least one byte must be sent for the descriptor to travel. Returns the number of bytes sent
/// (the descriptor went with them when the count is non-zero).
pub(crate) fn send_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd_to_pass: BorrowedFd<'_>,
) -> io::Result<usize> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a descriptor must travel with at least one byte",
        ));
    }
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // A u64 buffer keeps the control message suitably aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` writable, aligned bytes, so CMSG_FIRSTHDR returns a
    // pointer inside that buffer with room for one cmsghdr carrying one descriptor.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            fd_to_pass.as_raw_fd(),
        );
    }
    loop {
        // SAFETY: `msg` points to the iovec and control buffer above, alive for the call.
        let ret = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match check_size(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Creates a fresh directory `base/<prefix>XXXXXX` with mode 0700 (mkdtemp(3)).
pub(crate) fn mkdtemp(base: &Path, prefix: &str) -> io::Result<PathBuf> {
    let mut template = base.as_os_str().as_bytes().to_vec();
    if !template.ends_with(b"/") {
        template.push(b'/');
    }
    template.extend_from_slice(prefix.as_bytes());
    template.extend_from_slice(b"XXXXXX");
    let template = CString::new(template).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "temporary directory base contains a NUL byte",
        )
    })?;
    let mut raw = template.into_bytes_with_nul();
    // SAFETY: `raw` is a writable NUL-terminated buffer ending in "XXXXXX\0", as mkdtemp needs.
    let ret = unsafe { libc::mkdtemp(raw.as_mut_ptr().cast()) };
    if ret.is_null() {
        return Err(io::Error::last_os_error());
    }
    raw.pop(); // the NUL
    Ok(PathBuf::from(OsStr::from_bytes(&raw)))
}

/// Whether `/dev/kvm` can be opened for reading and writing by this process.
pub(crate) fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A pipe (read end, write end), both close-on-exec.
pub(crate) fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just returned these two new descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits up to `timeout` for `fd` to become readable, with poll(2). Used for waits that must not
/// disturb the edge-triggered registrations of the main loop (a child's exit watch after SIGKILL).
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left
            .as_millis()
            .saturating_add(u128::from(left.subsec_nanos() % 1_000_000 != 0));
        let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd, and nfds is 1.
        let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
        match check(ret) {
            Ok(0) => {
                if std::time::Instant::now() >= deadline {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn socketpair_ends_are_cloexec_and_only_ours_nonblocking() {
        let (ours, theirs) = socketpair().unwrap();
        for fd in [&ours, &theirs] {
            // SAFETY: F_GETFD on an open descriptor.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
        // SAFETY: F_GETFL on open descriptors.
        let (a, b) = unsafe {
            (
                libc::fcntl(ours.as_raw_fd(), libc::F_GETFL),
                libc::fcntl(theirs.as_raw_fd(), libc::F_GETFL),
            )
        };
        assert_ne!(a & libc::O_NONBLOCK, 0);
        assert_eq!(b & libc::O_NONBLOCK, 0);
        let mut buf = [0u8; 8];
        let err = recv(ours.as_fd(), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(send(theirs.as_fd(), b"hi").unwrap(), 2);
        assert_eq!(recv(ours.as_fd(), &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"hi");
    }

    #[test]
    fn recv_into_holds_exactly_what_arrived() {
        let (ours, theirs) = socketpair().unwrap();
        let mut buf = Vec::with_capacity(16);
        let err = recv_into(ours.as_fd(), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(send(theirs.as_fd(), b"hello").unwrap(), 5);
        assert_eq!(recv_into(ours.as_fd(), &mut buf).unwrap(), 5);
        assert_eq!(buf, b"hello");
        // The next read replaces what the buffer held, and never reads past its capacity.
        assert_eq!(send(theirs.as_fd(), &[7u8; 20]).unwrap(), 20);
        assert_eq!(recv_into(ours.as_fd(), &mut buf).unwrap(), 16);
        assert_eq!(buf, [7u8; 16]);
        assert_eq!(recv_into(ours.as_fd(), &mut buf).unwrap(), 4);
        assert_eq!(buf, [7u8; 4]);
        drop(theirs);
        assert_eq!(recv_into(ours.as_fd(), &mut buf).unwrap(), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn send_after_peer_closed_is_an_error_not_sigpipe() {
        let (ours, theirs) = socketpair().unwrap();
        drop(theirs);
        let err = send(ours.as_fd(), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        assert_eq!(recv(ours.as_fd(), &mut [0u8; 4]).unwrap(), 0);
    }

    #[test]
    fn descriptor_travels_with_scm_rights() {
        let (a, b) = socketpair().unwrap();
        let (x, y) = socketpair().unwrap();
        assert_eq!(send_with_fd(a.as_fd(), b" ", x.as_fd()).unwrap(), 1);
        // Receive it with recvmsg and check it is the other end of (x, y).
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 8];
        // SAFETY: zeroed msghdr is valid; pointers below reference live locals.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg references valid buffers.
        let n = unsafe { libc::recvmsg(b.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        assert_eq!(n, 1);
        // SAFETY: recvmsg filled the control buffer; CMSG_FIRSTHDR reads within it.
        let received = unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            assert!(!cmsg.is_null());
            assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
            OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            ))
        };
        assert_eq!(send(received.as_fd(), b"via").unwrap(), 3);
        let mut buf = [0u8; 3];
        set_nonblocking(y.as_raw_fd(), false).unwrap();
        assert_eq!(recv(y.as_fd(), &mut buf).unwrap(), 3);
        assert_eq!(&buf, b"via");
        assert!(send_with_fd(a.as_fd(), b"", x.as_fd()).is_err());
    }

    #[test]
    fn mkdtemp_makes_private_directories() {
        let base = std::env::temp_dir();
        let dir = mkdtemp(&base, "qp-unit.").unwrap();
        assert!(dir.starts_with(&base));
        let meta = std::fs::metadata(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let other = mkdtemp(&base, "qp-unit.").unwrap();
        assert_ne!(dir, other);
        std::fs::remove_dir(&dir).unwrap();
        std::fs::remove_dir(&other).unwrap();
        assert!(mkdtemp(Path::new("/nonexistent/dir"), "x").is_err());
    }
}
