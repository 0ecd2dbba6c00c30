//! Events: queued in arrival order under a bound, counted when dropped, and matched against
//! the caller's filter as they arrive (before the bound applies).

use std::collections::VecDeque;

use serde_json::Value;

use super::Session;
use crate::matching::EventFilter;
use crate::wire::Event;

/// The default bound of queued events: 65,536.
pub const DEFAULT_MAX_EVENTS: usize = 65_536;

/// The events a session received and the caller has not taken.
#[derive(Debug)]
pub(super) struct EventQueue {
    queue: VecDeque<Event>,
    /// The bound of `queue` (at least 1).
    limit: usize,
    /// Events dropped because the queue was full.
    dropped: u64,
    /// Events were dropped since the caller last asked ([`Session::take_overflow`]).
    overflow_unreported: bool,
    /// Events were dropped since the queue was last emptied (the overflow was logged).
    pub(super) overflowing: bool,
    /// Events skipped for being over the message size bound.
    too_large: u64,
    /// What the caller waits for: the first event that matches is held in `matched` instead
    /// of being queued.
    filter: Option<EventFilter>,
    matched: Option<Event>,
    /// Names of events whose arrivals are also copied to `seen` ([`Session::observe_events`]).
    observed: Vec<String>,
    /// Copies of observed events not taken yet, at most [`MAX_OBSERVED`].
    seen: VecDeque<Event>,
}

/// The most copies of observed events kept until taken; older ones are dropped first.
const MAX_OBSERVED: usize = 256;

impl EventQueue {
    pub(super) fn new(limit: usize) -> Self {
        EventQueue {
            queue: VecDeque::new(),
            limit: limit.max(1),
            dropped: 0,
            overflow_unreported: false,
            overflowing: false,
            too_large: 0,
            filter: None,
            matched: None,
            observed: Vec::new(),
            seen: VecDeque::new(),
        }
    }

    /// An event arrived: the filter's match, queued, or dropped when the queue is full.
    pub(super) fn push(&mut self, event: Event) {
        log::debug!("QMP event {} {}", event.name, event.data);
        if self.observed.contains(&event.name) {
            if self.seen.len() >= MAX_OBSERVED {
                self.seen.pop_front();
            }
            self.seen.push_back(event.clone());
        }
        if self.matched.is_none() && self.filter.as_ref().is_some_and(|f| f.matches(&event)) {
            self.matched = Some(event);
            return;
        }
        if self.queue.len() >= self.limit {
            self.dropped += 1;
            self.overflow_unreported = true;
            if !self.overflowing {
                self.overflowing = true;
                log::warn!(
                    "event queue full ({} events): dropping {} and later events until they are \
                     taken (dropped since launch: {})",
                    self.limit,
                    event.name,
                    self.dropped
                );
            }
            return;
        }
        self.queue.push_back(event);
    }

    /// An event over the size bound was skipped.
    pub(super) fn count_too_large(&mut self) {
        self.too_large += 1;
    }

    /// After events were taken: an empty queue ends the overflow episode (the next drop is
    /// logged again).
    fn taken(&mut self) {
        if self.queue.is_empty() {
            self.overflowing = false;
        }
    }
}

impl Session {
    /// The oldest queued event, if any. Events are kept in arrival order.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.queue.pop_front();
        self.events.taken();
        event
    }

    /// Removes and returns the oldest queued event called `name` that matches `pattern`
    /// (see [`Event::matches`]), leaving the others queued in order.
    pub fn take_event(&mut self, name: &str, pattern: Option<&Value>) -> Option<Event> {
        self.take_event_where(|e| e.matches(name, pattern))
    }

    /// Removes and returns the oldest queued event that `filter` matches, leaving the others
    /// queued in order.
    pub fn take_event_matching(&mut self, filter: &EventFilter) -> Option<Event> {
        self.take_event_where(|e| filter.matches(e))
    }

    fn take_event_where(&mut self, wanted: impl Fn(&Event) -> bool) -> Option<Event> {
        let index = self.events.queue.iter().position(wanted)?;
        let event = self.events.queue.remove(index);
        self.events.taken();
        event
    }

    /// Removes and returns every queued event, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        let events = self.events.queue.drain(..).collect();
        self.events.taken();
        events
    }

    /// The queued events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.queue.iter()
    }

    /// How many events are queued (at most [`max_events`](crate::SessionOptions::max_events)).
    ///
    /// [`SessionOptions::max_events`]: super::SessionOptions::max_events
    pub fn events_queued(&self) -> usize {
        self.events.queue.len()
    }

    /// How many events were dropped because [`max_events`](super::SessionOptions::max_events)
    /// were queued when they arrived. The first event dropped is logged with a `log::warn!`,
    /// and the next one again only after the queue was emptied.
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped
    }

    /// Whether events were dropped (see [`events_dropped`](Session::events_dropped)) since the
    /// last call; the answer is `true` once per call that follows drops. A caller about to wait
    /// for an event it did not find in the queue asks this first: the event may have been one
    /// of those dropped.
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.events.overflow_unreported)
    }

    /// Changes the bound of queued events (at least 1). Events already queued stay, even
    /// beyond a lower bound; new ones are dropped while the queue is at or over it.
    pub fn set_max_events(&mut self, limit: usize) {
        self.options.max_events = limit;
        self.events.limit = limit.max(1);
    }

    /// How many events were dropped for being larger than
    /// [`max_message_size`](super::SessionOptions::max_message_size) (each with a
    /// `log::warn!`).
    pub fn events_too_large(&self) -> u64 {
        self.events.too_large
    }

    /// Starts watching for events that `filter` matches: the first one that arrives from now
    /// on is held for [`take_matched`](Session::take_matched) instead of being queued, so
    /// that a full queue cannot drop it. Events already queued are not looked at (take them
    /// with [`take_event_matching`](Session::take_event_matching) first). Replaces the
    /// previous filter, and forgets an event it matched that was not taken.
    pub fn set_event_filter(&mut self, filter: EventFilter) {
        self.events.matched = None;
        self.events.filter = Some(filter);
    }

    /// The event the filter matched, if one arrived and was not taken yet. One is held at a
    /// time: while it waits to be taken, later matches are queued as usual; once it was taken,
    /// the filter (while set) holds the next match.
    pub fn take_matched(&mut self) -> Option<Event> {
        self.events.matched.take()
    }

    /// The filter set by [`set_event_filter`](Session::set_event_filter), if any.
    pub fn event_filter(&self) -> Option<&EventFilter> {
        self.events.filter.as_ref()
    }

    /// Stops watching: events are only queued from now on. Returns the event the filter
    /// matched if it was not taken.
    pub fn clear_event_filter(&mut self) -> Option<Event> {
        self.events.filter = None;
        self.events.matched.take()
    }

    /// Also copies every event called one of `names` that arrives from now on, for
    /// [`take_observed`](Session::take_observed), whatever happens to the event itself (queued,
    /// held for the filter, or dropped from a full queue). For a driver that must react to some
    /// events (a guest agent's port closing) without taking them from the caller. Replaces the
    /// previous names; at most 256 copies are kept until taken, the oldest dropped first.
    pub fn observe_events<I, S>(&mut self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.events.observed = names.into_iter().map(Into::into).collect();
    }

    /// The oldest copy of an observed event not taken yet (see
    /// [`observe_events`](Session::observe_events)).
    pub fn take_observed(&mut self) -> Option<Event> {
        self.events.seen.pop_front()
    }
}
