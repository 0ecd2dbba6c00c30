//! The guest agent's channel: a socket, the guest-agent `Session` on it, and where the stream
//! stands with the agent (synchronized or not). Both drivers (a [`Machine`](crate::Machine),
//! which registers the socket in its poll loop, and a standalone
//! [`GuestAgent`](crate::GuestAgent)) move its bytes with the functions here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use qmp_proto::{RequestId, Session, SessionOptions};

use crate::sys;

/// Where the byte stream stands with the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncState {
    /// Nothing known: the next call sends `guest-sync-delimited` first.
    Unsynced,
    /// `guest-sync-delimited` with this token was sent; its reply has not arrived.
    Syncing { id: RequestId, token: u64 },
    /// The agent answered the last synchronization; replies follow requests in order.
    Synced,
}

/// A guest agent's channel and its protocol state.
pub(crate) struct GuestChannel {
    /// The socket (a socketpair end QEMU's virtio-serial port is on, or a connection to an
    /// agent); `None` once it closed.
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) session: Session,
    options: SessionOptions,
    pub(crate) sync: SyncState,
    /// Bumped whenever the session is replaced (after the agent sent something invalid):
    /// request ids of an older epoch mean nothing any more.
    pub(crate) epoch: u64,
    /// Bumped whenever the agent's side closed: its virtio-serial port (QEMU's
    /// `VSERPORT_CHANGE` with `open: false`), or the connection.
    pub(crate) closed_count: u64,
    /// Bumped on QEMU events that say the guest is going down or restarting (`SHUTDOWN`,
    /// `RESET`).
    pub(crate) down_count: u64,
    /// QEMU's id of the agent's port, whose `VSERPORT_CHANGE` events concern this channel.
    pub(crate) port_id: Option<String>,
    /// Whether the agent's port is open in the guest, as far as events told (`None`: no event
    /// seen yet).
    pub(crate) port_open: Option<bool>,
    interest_write: bool,
    write_failed: bool,
    /// The last fault that reset the session, for error messages.
    pub(crate) last_fault: Option<String>,
    next_token: u64,
}

impl GuestChannel {
    pub(crate) fn new(fd: OwnedFd, options: SessionOptions, port_id: Option<String>) -> Self {
        GuestChannel {
            fd: Some(fd),
            session: Session::guest_agent(options.clone()),
            options,
            sync: SyncState::Unsynced,
            epoch: 0,
            closed_count: 0,
            down_count: 0,
            port_id,
            port_open: None,
            interest_write: false,
            write_failed: false,
            last_fault: None,
            next_token: random_seed(),
        }
    }

    /// The bound on one message from the agent.
    pub(crate) fn max_message_size(&self) -> usize {
        self.options.max_message_size
    }

    /// Whether requests can be written (the socket is open and writable so far).
    pub(crate) fn usable(&self) -> bool {
        self.fd.is_some() && !self.write_failed
    }

    /// A fresh token for `guest-sync-delimited`: random-seeded, different every time, at most
    /// `i64::MAX` (QAPI's `int`).
    pub(crate) fn fresh_token(&mut self) -> u64 {
        // A 64-bit odd-constant step is a permutation: no token repeats for 2^64 calls.
        self.next_token = self.next_token.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.next_token;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (x ^ (x >> 31)) & (i64::MAX as u64)
    }

    /// Sends `guest-sync-delimited` now (see [`Session::guest_sync`]): everything the agent
    /// sends before its reply is skipped without being buffered, and commands in flight are
    /// forgotten.
    pub(crate) fn resync_now(&mut self) {
        if self.fd.is_none() {
            self.sync = SyncState::Unsynced;
            return;
        }
        let token = self.fresh_token();
        match self.session.guest_sync(token) {
            Ok(id) => {
                log::debug!("guest agent: resynchronizing (token {token})");
                self.sync = SyncState::Syncing { id, token };
            }
            Err(e) => {
                log::debug!("guest agent: cannot resynchronize now: {e}");
                self.sync = SyncState::Unsynced;
            }
        }
    }

    /// Forgets the reply of `id`, arrived or to come.
    pub(crate) fn abandon(&mut self, id: RequestId) {
        self.session.abandon(id);
    }

    /// The agent's side closed (its port, or the connection): what was in flight is lost and
    /// the stream must be synchronized again.
    pub(crate) fn agent_closed(&mut self) {
        self.closed_count += 1;
        self.sync = SyncState::Unsynced;
    }

    /// The session got something it cannot read: a new session, synchronized afresh.
    fn reset_session(&mut self, fault: String) {
        log::warn!("guest agent: {fault}; resynchronizing");
        self.session = Session::guest_agent(self.options.clone());
        self.epoch += 1;
        self.sync = SyncState::Unsynced;
        self.last_fault = Some(fault);
    }

    /// Reads the socket until it would block (or, unless `drain`, until a short read) and
    /// feeds the session. Returns `true` when the socket reached its end (it is closed then).
    pub(crate) fn read(&mut self, buf: &mut Vec<u8>, drain: bool, registry: &Registry) -> bool {
        loop {
            let Some(fd) = self.fd.as_ref() else {
                return true;
            };
            match sys::recv_into(fd.as_fd(), buf) {
                Ok(0) => {
                    log::debug!("guest agent: the channel closed");
                    self.close(registry);
                    return true;
                }
                Ok(n) => {
                    log::trace!("guest agent: read {n} bytes");
                    if let Err(e) = self.session.receive(&buf[..]) {
                        if !self.session.is_ready() {
                            self.reset_session(format!("the agent sent something invalid: {e}"));
                        } else {
                            log::warn!("guest agent: {e}");
                        }
                    }
                    if n < buf.capacity() && !drain {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    if e.kind() != io::ErrorKind::ConnectionReset {
                        log::warn!("guest agent: reading the channel failed: {e}");
                    }
                    self.close(registry);
                    return true;
                }
            }
        }
    }

    /// Writes what the session has queued, until the socket would block; keeps write interest
    /// registered exactly while bytes wait.
    pub(crate) fn flush(&mut self, registry: &Registry, token: Token) {
        let Some(fd) = self.fd.as_ref() else {
            return;
        };
        let mut blocked = false;
        while !self.write_failed {
            let out = self.session.transmit();
            if out.is_empty() {
                break;
            }
            match sys::send(fd.as_fd(), out) {
                Ok(n) => {
                    log::trace!("guest agent: wrote {n} bytes");
                    self.session.advance_transmit(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => {
                    log::debug!("guest agent: writing the channel failed: {e}");
                    self.write_failed = true;
                }
            }
        }
        let want = blocked && !self.write_failed;
        if want != self.interest_write {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match registry.reregister(&mut SourceFd(&fd.as_raw_fd()), token, interest) {
                Ok(()) => self.interest_write = want,
                Err(e) => log::warn!("guest agent: re-registering the channel failed: {e}"),
            }
        }
    }

    /// Closes the socket: deregistered, forgotten; what was in flight is lost.
    pub(crate) fn close(&mut self, registry: &Registry) {
        if let Some(fd) = self.fd.take() {
            let _ = registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        self.session.close();
        self.interest_write = false;
        self.agent_closed();
    }

    /// A new socket to the agent (a reconnection): a new session, synchronized afresh.
    pub(crate) fn reopen(&mut self, fd: OwnedFd) {
        self.fd = Some(fd);
        self.session = Session::guest_agent(self.options.clone());
        self.epoch += 1;
        self.sync = SyncState::Unsynced;
        self.write_failed = false;
        self.interest_write = false;
    }

    /// The QEMU events [`observe_event`](GuestChannel::observe_event) looks at.
    pub(crate) const OBSERVED_EVENTS: [&'static str; 3] = ["VSERPORT_CHANGE", "SHUTDOWN", "RESET"];

    /// Notes a QEMU event that concerns the agent: its port opening or closing in the guest,
    /// or the guest going down.
    pub(crate) fn observe_event(&mut self, event: &qmp_proto::Event) {
        match event.name.as_str() {
            "VSERPORT_CHANGE" => {
                let id = event.data.get("id").and_then(|v| v.as_str());
                if id.is_none() || id != self.port_id.as_deref() {
                    return;
                }
                let open = event.data.get("open").and_then(|v| v.as_bool());
                log::debug!("guest agent: port {id:?} open: {open:?}");
                self.port_open = open;
                match open {
                    // A (re)started agent: whatever was said before is void.
                    Some(true) => self.sync = SyncState::Unsynced,
                    Some(false) => self.agent_closed(),
                    None => {}
                }
            }
            "SHUTDOWN" | "RESET" => self.down_count += 1,
            _ => {}
        }
    }
}

/// Eight random bytes from the kernel, or (if that fails) bits of the time and pid.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the valid, writable buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if n == bytes.len() as isize {
        return u64::from_ne_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}
