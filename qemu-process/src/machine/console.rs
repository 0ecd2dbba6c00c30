//! The console: output kept (bounded) and logged, input queued (bounded), expect-style waits.

use std::io;
use std::os::fd::AsFd;

use std::path::Path;
use std::time::Duration;

use super::{Console, Deadline, Machine};
use crate::error::Error;
use crate::sys;

impl Machine {
    // ------------------------------------------------------------------------------------------
    // Console
    // ------------------------------------------------------------------------------------------

    pub(super) fn console_mut(&mut self) -> Result<&mut Console, Error> {
        let pty = self.extras.console_pty;
        self.console.as_mut().ok_or_else(|| {
            Error::Unsupported(if pty {
                "this machine's console is on a pty: open Machine::console_pty()".into()
            } else {
                "this machine has no console (MachineConfig::console)".into()
            })
        })
    }

    /// Takes the console bytes kept in memory without reading anything (see
    /// [`take_events`](Machine::take_events) for when that matters). Empty without a console.
    pub fn take_console(&mut self) -> Vec<u8> {
        self.console
            .as_mut()
            .map(|c| c.buffer.take())
            .unwrap_or_default()
    }

    /// Takes the console bytes kept in memory (after reading whatever is ready without waiting).
    /// Empty without a console.
    pub fn console_read(&mut self) -> Vec<u8> {
        let _ = self.process_io();
        self.console
            .as_mut()
            .map(|c| c.buffer.take())
            .unwrap_or_default()
    }

    /// Sends bytes to the guest's first serial port, waiting up to `timeout` until all of them
    /// are accepted: written to the console socket, or queued in memory within the bound set by
    /// [`MachineConfig::console_input_buffer_bytes`]. Accepted bytes reach the guest in order, as
    /// fast as it reads them; events and console output keep being taken in while the call
    /// waits. A zero timeout takes what fits at once.
    ///
    /// A guest that does not read its console (a paused VM, a busy or stuck guest) makes the call
    /// wait. If the deadline passes first, the error is [`Error::ConsoleWriteTimeout`] with the
    /// number of bytes accepted: the rest, `bytes[accepted..]`, was not, and can be written by a
    /// later call. Without a console: [`Error::Unsupported`]; once QEMU has closed it:
    /// [`Error::Exited`] or [`Error::Disconnected`].
    ///
    /// ```no_run
    /// # use qemu_process::{Error, Machine};
    /// # use std::time::Duration;
    /// # fn demo(vm: &mut Machine, input: &[u8]) -> Result<(), Error> {
    /// let mut sent = 0;
    /// while sent < input.len() {
    ///     match vm.console_write(&input[sent..], Duration::from_secs(1)) {
    ///         Ok(()) => sent = input.len(),
    ///         Err(Error::ConsoleWriteTimeout { accepted, .. }) => {
    ///             sent += accepted;
    ///             eprintln!("the guest is slow to read its console; {sent} bytes sent so far");
    ///         }
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`MachineConfig::console_input_buffer_bytes`]: crate::MachineConfig::console_input_buffer_bytes
    pub fn console_write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Error> {
        let deadline = Deadline::after(timeout);
        self.console_mut()?;
        let mut accepted = 0;
        let result = self.run_until(
            deadline,
            || "the console to accept input".to_owned(),
            |m| {
                let console = m.console.as_ref().expect("checked above");
                if console.fd.is_none() || console.write_failed {
                    return Some(Err(m.connection_error()));
                }
                accepted += m.console_accept(&bytes[accepted..]);
                (accepted == bytes.len()).then_some(Ok(()))
            },
        );
        match result {
            Err(Error::Timeout { after, .. }) => Err(Error::ConsoleWriteTimeout {
                accepted,
                total: bytes.len(),
                after,
            }),
            other => other,
        }
    }

    /// Takes what fits of `bytes` now and returns how many: written straight to the socket while
    /// nothing is queued before them, then queued up to the bound, until all are taken or the
    /// queue is full and the socket would block. The socket then stays registered for
    /// writability, so the poll loop (the caller's too) wakes when QEMU reads again.
    pub(super) fn console_accept(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            // Sends what is queued and sets the socket's write interest to match what is left.
            self.flush_console();
            let Some(console) = self.console.as_mut() else {
                return taken;
            };
            let Some(fd) = console.fd.as_ref() else {
                return taken;
            };
            if console.write_failed || taken == bytes.len() {
                return taken;
            }
            let before = taken;
            if console.out.is_empty() {
                while taken < bytes.len() {
                    match sys::send(fd.as_fd(), &bytes[taken..]) {
                        Ok(n) => taken += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            log::debug!("writing to the console failed: {e}");
                            console.write_failed = true;
                            return taken;
                        }
                    }
                }
            }
            let room = console.out_limit.saturating_sub(console.out.len());
            let queued = room.min(bytes.len() - taken);
            console.out.extend_from_slice(&bytes[taken..taken + queued]);
            taken += queued;
            if taken == before {
                // The queue is full and the flush above found the socket full.
                return taken;
            }
        }
    }

    /// Console input accepted by [`console_write`](Machine::console_write) and still held in
    /// memory because QEMU has not taken it yet (at most the configured bound).
    pub fn console_input_pending(&self) -> usize {
        self.console.as_ref().map_or(0, |c| c.out.len())
    }

    /// Waits until `pattern` appears in the console output and returns what came before it (the
    /// match is consumed, later bytes stay kept). Kept bytes are searched first. What is returned
    /// is bounded by the console buffer size.
    pub fn console_wait_for(
        &mut self,
        pattern: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let deadline = Deadline::after(timeout);
        self.console_mut()?.buffer.set_waiter(pattern);
        let shown = String::from_utf8_lossy(pattern).into_owned();
        let result = self.run_until(
            deadline,
            || format!("console output {shown:?}"),
            |m| {
                let console = m.console.as_mut().expect("checked above");
                if let Some(before) = console.buffer.take_match() {
                    return Some(Ok(before));
                }
                if console.fd.is_none() {
                    return Some(Err(m.connection_error()));
                }
                None
            },
        );
        if let Some(console) = self.console.as_mut() {
            console.buffer.clear_waiter();
        }
        result
    }

    /// Whether the machine was launched with a console (its bytes stay readable after exit).
    pub fn has_console(&self) -> bool {
        self.console.is_some()
    }

    /// Total console bytes received since launch (all of them reached the console log, if any).
    pub fn console_bytes_received(&self) -> u64 {
        self.console.as_ref().map_or(0, |c| c.received)
    }

    /// Console bytes dropped from memory because the buffer was full (not from the log file).
    /// Each overflow is also logged (a warning when bytes start being dropped, again only after
    /// the buffer was emptied by reading it).
    pub fn console_bytes_dropped(&self) -> u64 {
        self.console.as_ref().map_or(0, |c| c.buffer.dropped())
    }

    /// The console log file, if configured.
    pub fn console_log_path(&self) -> Option<&Path> {
        self.console.as_ref().and_then(|c| c.log_path.as_deref())
    }
}
