//! The messages between an owner process and its guardian, and the two raw calls that move them
//! (with descriptors attached).
//!
//! Both sides use `SOCK_SEQPACKET` sockets, so every message arrives whole or not at all, and
//! concurrent senders on the shared request socket never interleave. A message is a fixed
//! [`Msg`] header, optionally followed by bytes (the name of a watched directory), with
//! descriptors attached as `SCM_RIGHTS`.
//!
//! These functions run in the guardian, a process forked from a possibly multi-threaded owner
//! without `exec`, so they make plain system calls only: no allocation, no locks, no panics.

use std::os::fd::RawFd;

/// Identifies the protocol (and its version) in every message: "QMG1".
pub(crate) const MAGIC: u32 = 0x514d_4731;

/// Owner → guardian, on the request socket: spawn a child.
///
/// Descriptors: `[channel, payload, cwd, stdin, stdout, stderr, inherit...]`; `a` is the number
/// of inherited descriptors, `b` the child's umask. The payload is a memfd holding `argc: u32`, `envc: u32`
/// (native endian) and then `argc + envc` NUL-terminated strings: argv (argv\[0\] is the path
/// executed) and the complete environment.
pub(crate) const SPAWN: u32 = 1;
/// Owner → guardian, on the request socket: remove a directory if the owner goes away without
/// saying goodbye. Descriptors: `[channel, parent]` (the parent directory, `O_PATH`); the bytes
/// after the header are the directory's name inside the parent.
pub(crate) const WATCH: u32 = 2;
/// Owner → guardian, on a channel: send signal `a` to the child's process group.
pub(crate) const SIGNAL: u32 = 3;
/// Owner → guardian, on a channel: the owner is done with this entry and cleaned up after it;
/// forget it (a child still running is killed).
pub(crate) const GOODBYE: u32 = 4;
/// Guardian → owner, on a channel: the child runs, with pid `a`.
pub(crate) const SPAWNED: u32 = 5;
/// Guardian → owner, on a channel: the child could not be started: `errno` `a` at stage `b`.
pub(crate) const SPAWN_FAILED: u32 = 6;
/// Guardian → owner, on a channel: the child exited; `a` is its raw wait status.
pub(crate) const EXITED: u32 = 7;
/// Guardian → owner, on a channel: the watched directory is registered.
pub(crate) const WATCHING: u32 = 8;

/// Stages of a failed spawn, for messages.
pub(crate) const STAGE_REQUEST: i32 = 1;
pub(crate) const STAGE_FORK: i32 = 2;
pub(crate) const STAGE_SETUP: i32 = 3;
pub(crate) const STAGE_EXEC: i32 = 4;

/// The most descriptors one message carries (the kernel's `SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;
/// Descriptors of a spawn request before the inherited ones.
pub(crate) const SPAWN_FIXED_FDS: usize = 6;
/// The longest directory name a watch carries (`NAME_MAX`).
pub(crate) const MAX_NAME: usize = 255;

/// The header of every message.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Msg {
    pub(crate) magic: u32,
    pub(crate) kind: u32,
    pub(crate) a: i32,
    pub(crate) b: i32,
}

/// The size of [`Msg`] on the wire.
pub(crate) const MSG_LEN: usize = std::mem::size_of::<Msg>();

impl Msg {
    /// A message of `kind` with arguments `a` and `b`.
    pub(crate) const fn new(kind: u32, a: i32, b: i32) -> Msg {
        Msg {
            magic: MAGIC,
            kind,
            a,
            b,
        }
    }

    fn to_bytes(self) -> [u8; MSG_LEN] {
        let mut out = [0u8; MSG_LEN];
        out[0..4].copy_from_slice(&self.magic.to_ne_bytes());
        out[4..8].copy_from_slice(&self.kind.to_ne_bytes());
        out[8..12].copy_from_slice(&self.a.to_ne_bytes());
        out[12..16].copy_from_slice(&self.b.to_ne_bytes());
        out
    }

    /// Reads a header from the front of `bytes`, if it is long enough and carries the magic.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Msg> {
        let word = |i: usize| -> Option<[u8; 4]> { bytes.get(i..i + 4)?.try_into().ok() };
        let msg = Msg {
            magic: u32::from_ne_bytes(word(0)?),
            kind: u32::from_ne_bytes(word(4)?),
            a: i32::from_ne_bytes(word(8)?),
            b: i32::from_ne_bytes(word(12)?),
        };
        (msg.magic == MAGIC).then_some(msg)
    }
}

/// A buffer for one control message carrying up to [`MAX_FDS`] descriptors, aligned for
/// `cmsghdr`.
#[repr(C, align(8))]
pub(crate) struct Control([u8; 1280]);

impl Control {
    pub(crate) const fn new() -> Control {
        Control([0; 1280])
    }
}

/// Sends `msg`, then `tail`, as one message on `sock` with `fds` attached. Never raises SIGPIPE
/// and never blocks when `nonblocking`. Returns the errno on failure.
pub(crate) fn send(
    sock: RawFd,
    msg: Msg,
    tail: &[u8],
    fds: &[RawFd],
    nonblocking: bool,
) -> Result<(), i32> {
    if fds.len() > MAX_FDS {
        return Err(libc::EINVAL);
    }
    let head = msg.to_bytes();
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: tail.as_ptr() as *mut libc::c_void,
            iov_len: tail.len(),
        },
    ];
    let mut control = Control::new();
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = iov.as_mut_ptr();
    hdr.msg_iovlen = if tail.is_empty() { 1 } else { 2 };
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE and CMSG_LEN are pure size computations.
        let (space, len) = unsafe { (libc::CMSG_SPACE(bytes), libc::CMSG_LEN(bytes)) };
        if space as usize > control.0.len() {
            return Err(libc::EINVAL);
        }
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` writable bytes aligned for cmsghdr, so
        // CMSG_FIRSTHDR gives a header inside the buffer with room for `fds.len()` descriptors
        // after it (CMSG_SPACE accounted for them).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    let flags = libc::MSG_NOSIGNAL | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: `hdr` points to the iovecs and control buffer above, alive for the call.
        let ret = unsafe { libc::sendmsg(sock, &hdr, flags) };
        if ret >= 0 {
            return Ok(());
        }
        let errno = errno();
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

/// What [`recv`] got.
pub(crate) enum Received {
    /// A message of `len` bytes in the buffer, with `nfds` descriptors in `fds` (owned by the
    /// caller now, close-on-exec).
    Message { len: usize, nfds: usize },
    /// The peer closed its end (or reset the connection).
    Closed,
    /// Nothing to read now (non-blocking socket).
    Empty,
}

/// Receives one message into `buf`, and up to `fds.len()` descriptors into `fds`, without
/// blocking ([`Received::Empty`] when nothing is queued). A message
/// whose descriptors or bytes did not fit is discarded (its descriptors closed) and reported as
/// a message of length 0, which no valid message has.
pub(crate) fn recv(sock: RawFd, buf: &mut [u8], fds: &mut [RawFd]) -> Result<Received, i32> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = Control::new();
    // SAFETY: all-zero is a valid msghdr.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.0.as_mut_ptr().cast();
    hdr.msg_controllen = control.0.len() as _;
    let n = loop {
        // SAFETY: `hdr` points to `buf` and the control buffer, both alive and writable.
        let ret =
            unsafe { libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
        if ret >= 0 {
            break ret as usize;
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Ok(Received::Empty),
            libc::ECONNRESET => return Ok(Received::Closed),
            other => return Err(other),
        }
    };
    // Collect the descriptors first: they must be closed if the message is refused.
    let mut nfds = 0usize;
    let mut overflow = false;
    // SAFETY: the kernel filled `hdr.msg_control`/`msg_controllen`; CMSG_FIRSTHDR/NXTHDR walk
    // the control messages inside that buffer and return NULL at its end; CMSG_DATA points to
    // `cmsg_len - CMSG_LEN(0)` bytes of descriptors inside it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let bytes = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let count = bytes / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    match fds.get_mut(nfds) {
                        Some(slot) => {
                            *slot = fd;
                            nfds += 1;
                        }
                        None => {
                            overflow = true;
                            libc::close(fd);
                        }
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
    }
    if n == 0 && nfds == 0 && hdr.msg_flags & libc::MSG_TRUNC == 0 {
        // A zero-length read on a seqpacket socket is the peer's close.
        return Ok(Received::Closed);
    }
    if overflow || hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        for fd in fds.iter().take(nfds) {
            // SAFETY: closing descriptors this call just received and nobody else owns.
            unsafe { libc::close(*fd) };
        }
        return Ok(Received::Message { len: 0, nfds: 0 });
    }
    Ok(Received::Message { len: n, nfds })
}

/// The calling thread's errno.
pub(crate) fn errno() -> i32 {
    // SAFETY: __errno_location returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// A `SOCK_SEQPACKET` socketpair, both ends close-on-exec.
pub(crate) fn seqpacket_pair() -> std::io::Result<(RawFd, RawFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a writable array of two ints, as socketpair(2) requires.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if ret == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_need_the_magic() {
        let m = Msg::new(SIGNAL, 9, -3);
        assert_eq!(Msg::parse(&m.to_bytes()), Some(m));
        let mut bytes = m.to_bytes();
        bytes[0] ^= 1;
        assert_eq!(Msg::parse(&bytes), None);
        assert_eq!(Msg::parse(&bytes[..8]), None);
    }

    #[test]
    fn messages_carry_bytes_and_descriptors() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, y) = seqpacket_pair().unwrap();
        send(a, Msg::new(WATCH, 1, 2), b"name", &[x, y], false).unwrap();
        let mut buf = [0u8; 64];
        let mut fds = [-1; 4];
        match recv(b, &mut buf, &mut fds).unwrap() {
            Received::Message { len, nfds } => {
                assert_eq!(len, MSG_LEN + 4);
                assert_eq!(nfds, 2);
                assert_eq!(Msg::parse(&buf), Some(Msg::new(WATCH, 1, 2)));
                assert_eq!(&buf[MSG_LEN..len], b"name");
            }
            _ => panic!("expected a message"),
        }
        // Too many descriptors for the receiver: refused, and they are closed.
        send(a, Msg::new(WATCH, 0, 0), b"", &[x, y], false).unwrap();
        let mut one = [-1; 1];
        assert!(matches!(
            recv(b, &mut buf, &mut one).unwrap(),
            Received::Message { len: 0, nfds: 0 }
        ));
        // SAFETY: closing descriptors this test owns.
        unsafe {
            for fd in [x, y, fds[0], fds[1], a] {
                libc::close(fd);
            }
        }
        assert!(matches!(
            recv(b, &mut buf, &mut fds).unwrap(),
            Received::Closed
        ));
        // SAFETY: as above.
        unsafe { libc::close(b) };
    }
}
