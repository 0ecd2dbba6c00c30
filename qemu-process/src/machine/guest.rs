//! A machine's guest agent: its channel registered in the machine's poll loop, and
//! [`Machine::guest`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::Interest;
use qmp_proto::SessionOptions;

use super::{Deadline, Machine, GUEST};
use crate::error::Error;
use crate::guest::channel::GuestChannel;
use crate::guest::{Guest, GuestHost};

impl Machine {
    /// The guest agent of this VM: typed calls, exec, file copies, shutdown (see
    /// [`Guest`] and the [`guest`](crate::guest) module).
    ///
    /// [`Error::Unsupported`] unless the VM was launched from a description with
    /// `guest_agent` set (which gives it the agent's virtio-serial port on a socketpair of
    /// the machine's).
    pub fn guest(&mut self) -> Result<Guest<'_>, Error> {
        if self.guest.is_none() {
            return Err(no_channel());
        }
        Ok(Guest::new(self))
    }

    /// Whether the machine has a guest-agent channel (its VM description set `guest_agent`).
    /// Says nothing about an agent running in the guest: [`Guest::ping`] does.
    pub fn has_guest_agent(&self) -> bool {
        self.guest.is_some()
    }

    /// Whether the guest has the agent's port open, as QEMU's last `VSERPORT_CHANGE` event
    /// for it said: `Some(true)` once an agent opened it, `Some(false)` after it closed it,
    /// `None` before any event (or without a channel). Only events read so far count.
    pub fn guest_agent_port_open(&self) -> Option<bool> {
        self.guest.as_ref().and_then(|c| c.port_open)
    }

    /// Sets up the channel on `ours` (the launcher's end of the socketpair QEMU's port uses).
    pub(super) fn attach_guest_channel(
        &mut self,
        ours: OwnedFd,
        options: SessionOptions,
    ) -> Result<(), Error> {
        self.poll
            .registry()
            .register(&mut SourceFd(&ours.as_raw_fd()), GUEST, Interest::READABLE)
            .map_err(Error::io_with("registering the guest agent's socket"))?;
        self.qmp
            .session
            .observe_events(GuestChannel::OBSERVED_EVENTS);
        self.guest = Some(GuestChannel::new(
            ours,
            options,
            Some(qemu_cmdline::GUEST_AGENT_PORT_ID.to_owned()),
        ));
        Ok(())
    }

    /// Reads what the agent sent (called by the poll loop).
    pub(super) fn read_guest(&mut self, drain: bool) {
        if let Some(channel) = self.guest.as_mut() {
            channel.read(&mut self.read_buf, drain, self.poll.registry());
            if !channel.session.transmit().is_empty() {
                channel.flush(self.poll.registry(), GUEST);
            }
        }
    }

    /// Writes what waits for the agent (called by the poll loop).
    pub(super) fn flush_guest(&mut self) {
        if let Some(channel) = self.guest.as_mut() {
            channel.flush(self.poll.registry(), GUEST);
        }
    }

    /// Tells the channel about the events that concern it (the agent's port opening or
    /// closing, the guest going down), from the copies the QMP session keeps of them; the
    /// events themselves stay for the caller.
    pub(super) fn guest_observe_events(&mut self) {
        if let Some(channel) = self.guest.as_mut() {
            while let Some(event) = self.qmp.session.take_observed() {
                channel.observe_event(&event);
            }
        }
    }
}

fn no_channel() -> Error {
    Error::Unsupported(
        "this machine has no guest-agent channel: launch a VM whose description sets \
         \"guest_agent\": true"
            .into(),
    )
}

impl GuestHost for Machine {
    fn guest_channel(&mut self) -> Result<&mut GuestChannel, Error> {
        self.guest.as_mut().ok_or_else(no_channel)
    }

    fn guest_turns(
        &mut self,
        deadline: Deadline,
        done: &mut dyn FnMut(&GuestChannel) -> bool,
    ) -> Result<(), Error> {
        self.flush_guest();
        let mut looked = false;
        let result = loop {
            match self.guest.as_ref() {
                Some(c) if !done(c) => {}
                _ => break Ok(()),
            }
            let timeout = deadline.remaining();
            if timeout == Some(Duration::ZERO) && looked {
                break Ok(());
            }
            looked = timeout == Some(Duration::ZERO);
            if let Err(e) = self.turn(timeout) {
                break Err(e);
            }
        };
        self.flush_console_log();
        result
    }

    fn guest_gone(&mut self) -> Error {
        self.reap_now();
        match self.exit_status_now() {
            Some(status) => Error::Exited(status),
            None => Error::GuestAgentGone {
                what: "QEMU closed the guest agent's channel".into(),
            },
        }
    }

    fn guest_reconnect(&mut self, _deadline: Deadline) -> Result<bool, Error> {
        // The channel is a socketpair QEMU inherited: it does not come back.
        Ok(false)
    }
}
