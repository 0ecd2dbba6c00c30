//! The floor: a minimal QMP client with no library. A socketpair, fork/exec with the socket
//! inherited, blocking writes of JSON text and blocking reads up to CRLF, `quit`, waitpid.
//! Whatever a client library adds on top of this is its overhead.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

/// A QEMU launched and driven by the floor client.
pub struct FloorVm {
    /// `None` once reaped.
    child: Option<Child>,
    sock: UnixStream,
    /// Bytes read and not consumed yet: `buf[start..end]`.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Lines read and not wanted (events).
    skipped: u64,
}

/// A `query-status` request as the floor sends it.
pub const QUERY_STATUS: &[u8] = b"{\"execute\":\"query-status\"}\r\n";

/// Capability negotiation as the floor does it (no `oob`).
pub const CAPABILITIES: &[u8] = b"{\"execute\":\"qmp_capabilities\"}\r\n";

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl FloorVm {
    /// Spawns `qemu -machine none -nodefaults -display none -accel ACCEL` with a QMP monitor on
    /// an inherited socketpair end, reads the greeting and negotiates capabilities.
    pub fn launch(qemu: &Path, accel: &str) -> io::Result<FloorVm> {
        FloorVm::launch_with(qemu, accel, CAPABILITIES)
    }

    /// [`FloorVm::launch`], negotiating with `capabilities` (the whole request).
    pub fn launch_with(qemu: &Path, accel: &str, capabilities: &[u8]) -> io::Result<FloorVm> {
        let (ours, theirs) = UnixStream::pair()?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(qemu);
        cmd.args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-accel",
            accel,
        ])
        .arg("-chardev")
        .arg(format!("socket,id=qmp,fd={fd}"))
        .args(["-mon", "chardev=qmp,mode=control"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: the closure only calls fcntl(2), which is async-signal-safe, on a descriptor
        // that stays open in the child until exec; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // The socketpair is close-on-exec: let QEMU inherit its end.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        let mut vm = FloorVm {
            child: Some(child),
            sock: ours,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            skipped: 0,
        };
        vm.read_until(|line| line.starts_with(b"{\"QMP\""))?;
        vm.execute(capabilities)?;
        Ok(vm)
    }

    /// Reads lines up to CRLF until one satisfies `wanted` (others, events, are skipped).
    /// Returns that line's length; an end of stream first is `UnexpectedEof`.
    pub fn read_until(&mut self, wanted: impl FnMut(&[u8]) -> bool) -> io::Result<usize> {
        self.read_until_seeing(wanted, |_| {})
    }

    /// [`read_until`](FloorVm::read_until), showing every skipped line to `skipped`.
    pub fn read_until_seeing(
        &mut self,
        mut wanted: impl FnMut(&[u8]) -> bool,
        mut skipped: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        let mut scanned = self.start;
        loop {
            if let Some(pos) = self.buf[scanned..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let line_end = scanned + pos;
                let line = &self.buf[self.start..line_end];
                self.start = line_end + 2;
                scanned = self.start;
                if wanted(line) {
                    return Ok(line.len());
                }
                skipped(line);
                self.skipped += 1;
                continue;
            }
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
                if self.end == self.buf.len() {
                    return Err(protocol("a QMP line longer than 64 KiB".into()));
                }
            }
            scanned = self.end.saturating_sub(1).max(self.start);
            let n = self.sock.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }

    /// Sends `request` (JSON text with CRLF) and reads until its reply; an error reply is an
    /// error. Returns the reply's length.
    pub fn execute(&mut self, request: &[u8]) -> io::Result<usize> {
        self.execute_seeing(request, |_| {})
    }

    /// [`execute`](FloorVm::execute), showing the lines read before the reply (events) to
    /// `event`.
    pub fn execute_seeing(
        &mut self,
        request: &[u8],
        event: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        self.sock.write_all(request)?;
        let mut failed = false;
        let len = self.read_until_seeing(
            |line| {
                failed = line.starts_with(b"{\"error\"");
                failed || line.starts_with(b"{\"return\"")
            },
            event,
        )?;
        if failed {
            return Err(protocol(format!(
                "QEMU refused {}",
                String::from_utf8_lossy(request).trim_end()
            )));
        }
        Ok(len)
    }

    /// The QMP socket, to wait on.
    pub fn socket_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }

    /// QEMU's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many lines (events) were skipped on the way to wanted ones so far.
    pub fn lines_skipped(&self) -> u64 {
        self.skipped
    }

    /// `quit`, then waitpid.
    pub fn quit(mut self) -> io::Result<ExitStatus> {
        self.sock.write_all(b"{\"execute\":\"quit\"}\r\n")?;
        // QEMU may close the socket before its reply reaches us: that is an answer too.
        match self.read_until(|line| line.starts_with(b"{\"return\"")) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => return Err(e),
        }
        let status = match self.child.as_mut() {
            Some(child) => child.wait()?,
            None => return Err(io::Error::other("QEMU was reaped already")),
        };
        self.child = None;
        Ok(status)
    }
}

impl Drop for FloorVm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A QEMU started by the floor from a given argv whose descriptors 3 and 4 are the QMP and
/// console sockets (the harness our library renders, numbered the same), with a bare console
/// reader: blocking reads into one buffer and a scan for a marker. The QMP socket is held open
/// and never read (the greeting waits in it).
pub struct FloorGuest {
    /// `None` once reaped.
    child: Option<Child>,
    _qmp: UnixStream,
    console: UnixStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl FloorGuest {
    /// Spawns `argv` (program first) with the QMP and console socketpair ends as fds 3 and 4,
    /// stdin, stdout and stderr on /dev/null.
    pub fn spawn(argv: &[std::ffi::OsString]) -> io::Result<FloorGuest> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
        let (qmp, qmp_theirs) = UnixStream::pair()?;
        let (console, console_theirs) = UnixStream::pair()?;
        let fds = [qmp_theirs.as_raw_fd(), console_theirs.as_raw_fd()];
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure only calls fcntl(2) and dup2(2), which are async-signal-safe, on
        // descriptors open in the child; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way of 3 and 4 first (either end may already be numbered so),
                // then into place; dup2 leaves the copies open across exec.
                let mut high = [0; 2];
                for (h, fd) in high.iter_mut().zip(fds) {
                    *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if *h == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (target, fd) in [3, 4].into_iter().zip(high) {
                    if libc::dup2(fd, target) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop((qmp_theirs, console_theirs));
        Ok(FloorGuest {
            child: Some(child),
            _qmp: qmp,
            console,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    /// Reads the console until `marker` (not empty) has been seen and returns how many bytes
    /// came before it (since the previous marker); bytes after it stay for the next call. An
    /// end of stream first is `UnexpectedEof`.
    pub fn read_until(&mut self, marker: &[u8]) -> io::Result<u64> {
        let keep = marker.len().saturating_sub(1);
        let mut count = 0u64;
        loop {
            let kept = &self.buf[self.start..self.end];
            if let Some(pos) = kept.windows(marker.len()).position(|w| w == marker) {
                count += pos as u64;
                self.start += pos + marker.len();
                return Ok(count);
            }
            // The last bytes may begin the marker: keep them, count the rest.
            let passed = kept.len().saturating_sub(keep);
            count += passed as u64;
            self.start += passed;
            if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            let n = self.console.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }
}

impl Drop for FloorGuest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_reader_counts_bytes_between_markers_split_across_reads() {
        // `sh` stands in for QEMU: it writes to its fd 4 in pieces.
        let argv: Vec<std::ffi::OsString> = [
            "/bin/sh",
            "-c",
            "printf 'boot..RE' >&4; sleep 0.1; printf 'ADY\\r\\nSTARTxxxxx' >&4; \
             sleep 0.1; printf 'xxEN' >&4; printf 'D tail' >&4",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let mut guest = FloorGuest::spawn(&argv).unwrap();
        assert_eq!(guest.read_until(b"READY").unwrap(), 6);
        assert_eq!(guest.read_until(b"START").unwrap(), 2);
        assert_eq!(guest.read_until(b"END").unwrap(), 7);
        let err = guest.read_until(b"NEVER").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
