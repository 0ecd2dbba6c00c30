//! [`GuestAgent`]: a guest agent reached over a socket of one's own, without a
//! [`Machine`](crate::Machine).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use qmp_proto::SessionOptions;

use super::channel::GuestChannel;
use super::{Guest, GuestHost};
use crate::config::AttachTarget;
use crate::error::Error;
use crate::machine::{connect_with_retry, Deadline};
use crate::sys;

const CHANNEL: Token = Token(0);
const READ_CHUNK: usize = 64 * 1024;

/// A QEMU guest agent on a socket of the caller's: a unix socket a VM's
/// `-chardev socket,path=...,server=on` serves (or `qemu-ga -m unix-listen` itself), or an
/// already connected stream socket. [`guest`](GuestAgent::guest) gives the same [`Guest`] calls
/// as [`Machine::guest`](crate::Machine::guest), driven by this type's own poll.
///
/// Connected by path, it reconnects (retrying until the call's deadline) when the connection
/// ended: the next call opens a new one and synchronizes. On a socket it was given, the end of
/// the connection is final ([`Error::GuestAgentGone`]).
///
/// ```no_run
/// use qemu_process::GuestAgent;
/// use std::time::Duration;
///
/// let mut agent = GuestAgent::connect("/run/vm/qga.sock", Duration::from_secs(5))?;
/// let info = agent.guest().info()?;
/// println!("qemu-ga {}", info.version);
/// # Ok::<(), qemu_process::Error>(())
/// ```
pub struct GuestAgent {
    poll: Poll,
    events: Events,
    channel: GuestChannel,
    path: Option<PathBuf>,
    read_buf: Vec<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent")
            .field("path", &self.path)
            .field("connected", &self.channel.fd.is_some())
            .finish_non_exhaustive()
    }
}

impl GuestAgent {
    /// Connects to the unix socket at `path` (any length), retrying while it is refused or
    /// does not exist yet, until `timeout`. Nothing is sent until the first call.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<GuestAgent, Error> {
        let path = path.as_ref().to_path_buf();
        let fd = connect_unix(&path, Deadline::after(timeout))?;
        let mut agent = GuestAgent::with_fd(fd)?;
        agent.path = Some(path);
        Ok(agent)
    }

    /// Uses an already connected stream socket (a socketpair end, a connection made
    /// elsewhere). It is made non-blocking.
    pub fn from_socket(socket: OwnedFd) -> Result<GuestAgent, Error> {
        sys::socket_domain(socket.as_fd()).map_err(Error::io_with(
            "the guest agent's descriptor is not a socket",
        ))?;
        sys::set_nonblocking(socket.as_raw_fd(), true).map_err(Error::io_with(
            "making the guest agent's socket non-blocking",
        ))?;
        GuestAgent::with_fd(socket)
    }

    fn with_fd(fd: OwnedFd) -> Result<GuestAgent, Error> {
        let poll = Poll::new().map_err(Error::io_with("creating an epoll instance"))?;
        poll.registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), CHANNEL, Interest::READABLE)
            .map_err(Error::io_with("registering the guest agent's socket"))?;
        Ok(GuestAgent {
            poll,
            events: Events::with_capacity(4),
            channel: GuestChannel::new(fd, SessionOptions::default(), None),
            path: None,
            read_buf: Vec::with_capacity(READ_CHUNK),
            timeout: super::DEFAULT_GUEST_TIMEOUT,
        })
    }

    /// The agent's calls, each under this agent's timeout
    /// ([`set_timeout`](GuestAgent::set_timeout)).
    pub fn guest(&mut self) -> Guest<'_> {
        let timeout = self.timeout;
        Guest::new(self).with_timeout(timeout)
    }

    /// The deadline [`guest`](GuestAgent::guest) gives each call
    /// ([`DEFAULT_GUEST_TIMEOUT`](super::DEFAULT_GUEST_TIMEOUT) at first).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether the connection is open (it may still have no agent behind it).
    pub fn is_connected(&self) -> bool {
        self.channel.fd.is_some()
    }

    /// One round of I/O: write what waits, wait up to `timeout` for the socket, read.
    fn turn(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.channel.flush(self.poll.registry(), CHANNEL);
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(Error::io("waiting for the guest agent (epoll_wait)", e));
        }
        let (mut read, mut write, mut closed) = (false, false, false);
        for event in self.events.iter() {
            let c = event.is_read_closed() || event.is_error();
            closed |= c;
            read |= event.is_readable() || c;
            write |= event.is_writable() || event.is_write_closed();
        }
        if read {
            self.channel
                .read(&mut self.read_buf, closed, self.poll.registry());
        }
        if write || !self.channel.session.transmit().is_empty() {
            self.channel.flush(self.poll.registry(), CHANNEL);
        }
        Ok(())
    }
}

impl GuestHost for GuestAgent {
    fn guest_channel(&mut self) -> Result<&mut GuestChannel, Error> {
        Ok(&mut self.channel)
    }

    fn guest_turns(
        &mut self,
        deadline: Deadline,
        done: &mut dyn FnMut(&GuestChannel) -> bool,
    ) -> Result<(), Error> {
        let mut looked = false;
        loop {
            if done(&self.channel) {
                return Ok(());
            }
            let timeout = deadline.remaining();
            if timeout == Some(Duration::ZERO) && looked {
                return Ok(());
            }
            looked = timeout == Some(Duration::ZERO);
            self.turn(timeout)?;
        }
    }

    fn guest_gone(&mut self) -> Error {
        Error::GuestAgentGone {
            what: match &self.path {
                Some(path) => format!(
                    "the connection to the guest agent at {} ended",
                    path.display()
                ),
                None => "the connection to the guest agent ended".into(),
            },
        }
    }

    fn guest_reconnect(&mut self, deadline: Deadline) -> Result<bool, Error> {
        let Some(path) = self.path.clone() else {
            return Ok(false);
        };
        let fd = connect_unix(&path, deadline)?;
        self.poll
            .registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), CHANNEL, Interest::READABLE)
            .map_err(Error::io_with("registering the guest agent's socket"))?;
        log::debug!("guest agent: reconnected to {}", path.display());
        self.channel.reopen(fd);
        Ok(true)
    }
}

fn connect_unix(path: &Path, deadline: Deadline) -> Result<OwnedFd, Error> {
    let (fd, _) = connect_with_retry(&AttachTarget::Unix(path.to_path_buf()), deadline).map_err(
        |e| match e {
            Error::Timeout { what, after } => Error::Timeout {
                what: what.replace("the QMP server", "the guest agent"),
                after,
            },
            other => other,
        },
    )?;
    Ok(fd)
}
