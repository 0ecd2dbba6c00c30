//! Events: kept in arrival order (bounded, by the session), taken, or awaited by name and
//! pattern.

use std::time::Duration;

use qmp_proto::{Event, EventFilter};
use serde_json::Value;

use super::{Deadline, Machine};
use crate::error::Error;

impl Machine {
    // ------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------

    /// Takes every kept event, oldest first, without reading anything: for a caller driving the
    /// machine from its own loop, which calls [`process_io`](Machine::process_io) once after each
    /// wake-up and then takes with this and [`take_console`](Machine::take_console). (Taking with
    /// [`events`](Machine::events) or [`console_read`](Machine::console_read) there could read,
    /// and keep, bytes for the other one after it was already taken, with no wake-up left to
    /// announce them.)
    pub fn take_events(&mut self) -> Vec<Event> {
        self.qmp.session.take_events()
    }

    /// Takes every kept event, oldest first (after reading whatever is ready without waiting).
    pub fn events(&mut self) -> Vec<Event> {
        let _ = self.process_io();
        self.take_events()
    }

    /// How many events are kept, waiting to be taken.
    pub fn events_pending(&self) -> usize {
        self.qmp.session.events_queued()
    }

    /// How many events were dropped because the queue was full (since launch). Each overflow is
    /// also logged (a warning when the first event is dropped, again only after the queue was
    /// emptied by taking its events).
    pub fn events_dropped(&self) -> u64 {
        self.qmp.session.events_dropped()
    }

    /// How many events QEMU sent that were larger than
    /// [`MachineConfig::max_message_size`](crate::MachineConfig::max_message_size): each was
    /// skipped (with a `log::warn!`) and never kept; no command failed for it.
    pub fn events_too_large(&self) -> u64 {
        self.qmp.session.events_too_large()
    }

    /// Waits for an event named `name` whose JSON form matches `pattern` (QEMUMachine's
    /// `event_match`: every key in the pattern must be present with an equal or recursively
    /// matching value). Kept events are searched first; a match is removed from the kept ones,
    /// non-matching events that arrive meanwhile are kept.
    ///
    /// A zero `timeout` waits for nothing: it looks at the kept events and at what QEMU has
    /// already sent.
    ///
    /// [`Error::Timeout`] when nothing matched in time; [`Error::Exited`]/[`Error::Disconnected`]
    /// when the connection closed first; [`Error::EventQueueFull`] (once) when events were
    /// dropped since the last report and none of the kept ones matches.
    pub fn event_wait(
        &mut self,
        name: &str,
        pattern: Option<&Value>,
        timeout: Duration,
    ) -> Result<Event, Error> {
        self.events_wait(&[(name, pattern)], timeout)
    }

    /// Waits for the first event of any name whose JSON form matches `pattern` (`None`: the
    /// first event, whatever it is), like [`event_wait`](Machine::event_wait) otherwise: the
    /// oldest kept event that matches is taken first.
    ///
    /// ```no_run
    /// # use qemu_process::{Machine, MachineConfig};
    /// # use std::time::Duration;
    /// # let mut vm = Machine::launch(&MachineConfig::new("qemu-system-x86_64"))?;
    /// vm.pause()?;
    /// let next = vm.event_wait_any(None, Duration::from_secs(5))?;
    /// assert_eq!(next.name, "STOP");
    /// # Ok::<(), qemu_process::Error>(())
    /// ```
    pub fn event_wait_any(
        &mut self,
        pattern: Option<&Value>,
        timeout: Duration,
    ) -> Result<Event, Error> {
        self.wait_for_filter(EventFilter::new().or_any(pattern.cloned()), timeout)
    }

    /// Waits for the first event matching any of `wanted` (see [`event_wait`](Machine::event_wait)).
    pub fn events_wait(
        &mut self,
        wanted: &[(&str, Option<&Value>)],
        timeout: Duration,
    ) -> Result<Event, Error> {
        self.wait_for_filter(wanted.iter().copied().collect(), timeout)
    }

    fn wait_for_filter(&mut self, filter: EventFilter, timeout: Duration) -> Result<Event, Error> {
        let deadline = Deadline::after(timeout);
        let session = &mut self.qmp.session;
        if let Some(event) = session.take_event_matching(&filter) {
            return Ok(event);
        }
        if session.take_overflow() {
            return Err(Error::EventQueueFull {
                limit: session.options().max_events.max(1),
                dropped: session.events_dropped(),
            });
        }
        session.set_event_filter(filter);
        self.finish_event_wait(deadline)
    }

    /// Waits until the session's event filter (set by the caller) holds a match, and clears
    /// the filter.
    pub(super) fn finish_event_wait(&mut self, deadline: Deadline) -> Result<Event, Error> {
        let names = self
            .qmp
            .session
            .event_filter()
            .map(|f| f.names().collect::<Vec<_>>().join(" or "))
            .unwrap_or_default();
        let result = self.run_until(
            deadline,
            || format!("event {names}"),
            |m| {
                if let Some(event) = m.qmp.session.take_matched() {
                    return Some(Ok(event));
                }
                if m.qmp.fd.is_none() {
                    return Some(Err(m.connection_error()));
                }
                None
            },
        );
        match (result, self.qmp.session.clear_event_filter()) {
            (Err(_), Some(event)) => Ok(event),
            (result, _) => result,
        }
    }
}
