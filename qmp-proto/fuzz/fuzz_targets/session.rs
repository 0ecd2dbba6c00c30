//! The session fed arbitrary server bytes, with commands issued (some with names taken from
//! the input), some abandoned, replies taken, events polled, filtered and taken, and writes
//! acknowledged in between: it never panics and keeps its invariants. A message over the size
//! bound is fatal only when it is of unknown kind, a greeting, or comes before the session is
//! ready; otherwise it fails at most the one command it answers. The event queue never holds
//! more than its bound, a drop is reported once, a filter's match matches it, an abandoned
//! command's reply never surfaces, and every other command gets exactly one outcome (`quit`
//! answered by a clean close with `Ok({})`, the rest closed with `ReplyError::Closed`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_proto::commands::QueryStatus;
use std::collections::HashSet;

use qmp_proto::{
    Decoder, Error, EventFilter, ReplyError, Request, RequestId, Session, SessionOptions,
    SessionState, SkippedKind,
};
use serde_json::json;

mod common;

/// `monitor`: a QMP session (not a guest agent's).
fn drive(data: &[u8], mut session: Session, salt: u64, monitor: bool) {
    let mut rng = common::Rng::new(data, salt);
    let max_in_flight = session.options().max_in_flight.max(1);
    let mut issued: Vec<(RequestId, String)> = Vec::new();
    // Commands whose outcome was taken, and commands abandoned.
    let mut resolved: HashSet<RequestId> = HashSet::new();
    let mut abandoned: HashSet<RequestId> = HashSet::new();
    let mut written = Vec::new();
    let limit = session.options().max_message_size;
    let max_events = session.options().max_events.max(1);
    let mut too_large_events = 0;
    let mut dropped_reported = 0;
    let mut filter: Option<EventFilter> = None;
    for piece in common::chunks(data, &mut rng, 64) {
        let state_before = session.state();
        let closed_before = state_before == SessionState::Closed;
        match session.receive(piece) {
            Ok(()) => assert!(!closed_before),
            Err(Error::Closed) => assert!(closed_before),
            Err(Error::MessageTooLarge { size, skipped, .. }) => {
                assert_eq!(session.state(), SessionState::Closed);
                assert!(size > limit as u64);
                // Fatal only when the session could not go on without it (or a small one of
                // the kind would be fatal too).
                assert!(
                    matches!(skipped.kind, SkippedKind::Greeting | SkippedKind::Unknown)
                        || state_before != SessionState::Ready,
                    "{skipped:?}"
                );
            }
            Err(_) => assert_eq!(session.state(), SessionState::Closed),
        }
        assert!(session.in_flight() <= max_in_flight);
        assert!(session.events_too_large() >= too_large_events);
        too_large_events = session.events_too_large();
        assert!(session.events_queued() <= max_events);
        for id in &abandoned {
            assert!(!session.has_reply(*id), "abandoned {id:?} has a reply");
        }
        match rng.next() % 10 {
            0 => {
                if let Ok(id) = session.execute("query-status", None) {
                    issued.push((id, "query-status".into()));
                }
            }
            1 => {
                if let Ok(id) = session.execute_typed(&QueryStatus) {
                    issued.push((id, "query-status".into()));
                }
            }
            2 => {
                let args = json!({"command-line": "info status"});
                if let Ok(id) = session.execute_oob("human-monitor-command", Some(args)) {
                    issued.push((id, "human-monitor-command".into()));
                }
            }
            3 => {
                for (id, _) in &issued {
                    match session.take_reply(*id) {
                        Some(reply) => {
                            assert!(!abandoned.contains(id), "abandoned {id:?}: {reply:?}");
                            assert!(resolved.insert(*id), "a second outcome for {id:?}");
                            assert!(!session.is_pending(*id));
                            if let Err(ReplyError::TooLarge { size, limit: l }) = reply {
                                assert_eq!(l, limit);
                                assert!(size > limit as u64);
                            }
                        }
                        None => {}
                    }
                }
            }
            7 => {
                // Give up on a command (a driver's deadline), or ask QEMU to quit.
                if rng.next() % 2 == 0 {
                    if let Ok(id) = session.execute("quit", None) {
                        issued.push((id, "quit".into()));
                    }
                } else if !issued.is_empty() {
                    let (id, _) = &issued[rng.size(issued.len()) - 1];
                    if !resolved.contains(id) {
                        let pending = session.pending();
                        session.abandon(*id);
                        abandoned.insert(*id);
                        assert!(!session.has_reply(*id));
                        assert_eq!(session.take_reply(*id), None);
                        // The command is not withdrawn.
                        assert_eq!(session.pending(), pending);
                    }
                }
            }
            8 => {
                // Wait for an event: a name from a few common ones, or from the input.
                if let Some(event) = session.take_matched() {
                    let f = filter.as_ref().expect("a match needs a filter");
                    assert!(f.matches(&event), "{event:?} does not match {f:?}");
                }
                let name = match rng.next() % 4 {
                    0 => "STOP".to_owned(),
                    1 => "SHUTDOWN".to_owned(),
                    2 => {
                        let at = rng.size(piece.len()) - 1;
                        String::from_utf8_lossy(&piece[at..]).into_owned()
                    }
                    _ => {
                        filter = None;
                        session.clear_event_filter();
                        continue;
                    }
                };
                let wanted = EventFilter::new().or(name, None);
                session.set_event_filter(wanted.clone());
                assert_eq!(session.event_filter(), Some(&wanted));
                assert_eq!(session.take_matched(), None);
                filter = Some(wanted);
            }
            9 => {
                // A drop is reported once, and only a drop.
                let dropped = session.events_dropped();
                assert!(dropped >= dropped_reported);
                assert_eq!(session.take_overflow(), dropped > dropped_reported);
                assert!(!session.take_overflow());
                dropped_reported = dropped;
                if rng.next() % 2 == 0 {
                    let n = session.events_queued();
                    assert_eq!(session.take_events().len(), n);
                    assert_eq!(session.events_queued(), 0);
                }
            }
            6 => {
                // A command name from the input: refused without a trace, or sent.
                let at = rng.size(piece.len()) - 1;
                let name = String::from_utf8_lossy(&piece[at..]).into_owned();
                let (queued, pending) = (session.transmit().len(), session.pending());
                match session.execute(&name, None) {
                    Ok(id) => {
                        assert!(qapi_name(&name), "{name:?} was accepted");
                        issued.push((id, name));
                    }
                    Err(Error::InvalidCommandName { len, .. }) => {
                        assert!(!qapi_name(&name), "{name:?} was refused");
                        assert_eq!(len, name.len());
                        assert_eq!(session.transmit().len(), queued);
                        assert_eq!(session.pending(), pending);
                    }
                    Err(_) => {}
                }
            }
            4 => while session.poll_event().is_some() {},
            _ => {
                let n = rng.size(64);
                let pending = session.transmit();
                written.extend_from_slice(&pending[..n.min(pending.len())]);
                session.advance_transmit(n);
            }
        }
    }
    if let Some(event) = session.take_matched() {
        assert!(filter.as_ref().is_some_and(|f| f.matches(&event)));
    }
    let closed_before = session.state() == SessionState::Closed;
    let waiting: Vec<RequestId> = issued
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| session.is_pending(*id))
        .collect();
    let eof = session.receive_eof();
    assert_eq!(session.state(), SessionState::Closed);
    if closed_before {
        assert!(eof.is_ok());
    }
    assert_eq!(session.in_flight(), 0);
    assert_eq!(session.pending(), 0);
    assert!(issued.iter().all(|(id, _)| !session.is_pending(*id)));
    // Every command has had, or now has, exactly one outcome, except the abandoned ones.
    let clean = !closed_before && eof.is_ok();
    for (id, name) in &issued {
        let reply = session.take_reply(*id);
        assert_eq!(session.take_reply(*id), None);
        if abandoned.contains(id) {
            assert_eq!(reply, None, "abandoned {id:?}");
        } else if resolved.contains(id) {
            assert_eq!(reply, None, "a second outcome for {id:?}");
        } else if waiting.contains(id) {
            // Settled by the end of the session.
            let reply = reply.expect("an outcome at the end");
            if !(clean && monitor && name == "quit") {
                assert_eq!(reply, Err(ReplyError::Closed), "{name} {id:?}");
            } else {
                // Ok({}) when it was sent; closed when it still waited for a slot.
                assert!(
                    reply == Ok(json!({})) || reply == Err(ReplyError::Closed),
                    "{reply:?}"
                );
            }
        } else {
            assert!(reply.is_some(), "{name} {id:?} lost its outcome");
        }
    }

    // Whatever was written is a sequence of well-formed requests (after an optional 0xFF);
    // out-of-band ones always carry an id, in-band ones only when the options say so.
    let in_band_ids = session.options().in_band_ids;
    let mut decoder = Decoder::new();
    decoder.feed(&written);
    while let Ok(Some(value)) = decoder.next_value() {
        let request = Request::from_value(value).unwrap();
        if request.oob || request.command == "guest-sync-delimited" {
            assert!(request.id.is_some());
        } else {
            assert_eq!(request.id.is_some(), in_band_ids, "{request:?}");
        }
    }
}

/// QAPI's naming rules, written independently of the session's check:
/// `(__[A-Za-z0-9.-]+_)?[A-Za-z][A-Za-z0-9_-]*`, at most 1024 bytes.
fn qapi_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.len() > 1024 {
        return false;
    }
    let mut i = 0;
    if b.starts_with(b"__") {
        i = 2;
        let domain_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b'.') {
            i += 1;
        }
        if i == domain_start || i >= b.len() || b[i] != b'_' {
            return false;
        }
        i += 1;
    }
    if i >= b.len() || !b[i].is_ascii_alphabetic() {
        return false;
    }
    b[i..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

fuzz_target!(|data: &[u8]| {
    drive(data, Session::new(SessionOptions::default()), 1, true);
    let options = SessionOptions {
        oob: true,
        max_in_flight: 2,
        max_message_size: 256,
        in_band_ids: true,
        max_events: 3,
    };
    drive(data, Session::new(options), 2, true);
    // In-band commands without id: replies without id are matched by order.
    let options = SessionOptions {
        oob: true,
        max_in_flight: 3,
        in_band_ids: false,
        ..SessionOptions::default()
    };
    drive(data, Session::new(options), 4, true);
    // Without id and with a small bound: an oversize reply answers the oldest command.
    let options = SessionOptions {
        oob: true,
        max_in_flight: 3,
        max_message_size: 256,
        in_band_ids: false,
        max_events: 1,
    };
    drive(data, Session::new(options), 5, true);
    let mut agent = Session::guest_agent(SessionOptions::default());
    if data.first().is_some_and(|b| b & 1 == 1) {
        let _ = agent.guest_sync(1234567);
    }
    drive(data, agent, 3, false);
});
