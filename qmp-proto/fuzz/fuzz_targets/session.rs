//! The session fed arbitrary server bytes, with commands issued (some with names taken from
//! the input), replies taken, events polled and writes acknowledged in between: it never
//! panics and keeps its invariants. A message over the size bound is fatal only when it is of
//! unknown kind, a greeting, or comes before the session is ready; otherwise it fails at most
//! the one command it answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_proto::commands::QueryStatus;
use qmp_proto::{
    Decoder, Error, ReplyError, Request, RequestId, Session, SessionOptions, SessionState,
    SkippedKind,
};
use serde_json::json;

mod common;

fn drive(data: &[u8], mut session: Session, salt: u64) {
    let mut rng = common::Rng::new(data, salt);
    let max_in_flight = session.options().max_in_flight.max(1);
    let mut issued: Vec<RequestId> = Vec::new();
    let mut written = Vec::new();
    let limit = session.options().max_message_size;
    let mut too_large_events = 0;
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
        match rng.next() % 7 {
            0 => {
                if let Ok(id) = session.execute("query-status", None) {
                    issued.push(id);
                }
            }
            1 => {
                if let Ok(id) = session.execute_typed(&QueryStatus) {
                    issued.push(id);
                }
            }
            2 => {
                let args = json!({"command-line": "info status"});
                if let Ok(id) = session.execute_oob("human-monitor-command", Some(args)) {
                    issued.push(id);
                }
            }
            3 => {
                for id in &issued {
                    match session.take_reply(*id) {
                        Some(Err(ReplyError::TooLarge { size, limit: l })) => {
                            assert_eq!(l, limit);
                            assert!(size > limit as u64);
                            assert!(!session.is_pending(*id));
                        }
                        Some(_) => assert!(!session.is_pending(*id)),
                        None => {}
                    }
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
                        issued.push(id);
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
    let closed_before = session.state() == SessionState::Closed;
    let eof = session.receive_eof();
    assert_eq!(session.state(), SessionState::Closed);
    if closed_before {
        assert!(eof.is_ok());
    }
    assert_eq!(session.in_flight(), 0);
    assert!(issued.iter().all(|id| !session.is_pending(*id)));

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
    drive(data, Session::new(SessionOptions::default()), 1);
    let options = SessionOptions {
        oob: true,
        max_in_flight: 2,
        max_message_size: 256,
        in_band_ids: true,
    };
    drive(data, Session::new(options), 2);
    // In-band commands without id: replies without id are matched by order.
    let options = SessionOptions {
        oob: true,
        max_in_flight: 3,
        in_band_ids: false,
        ..SessionOptions::default()
    };
    drive(data, Session::new(options), 4);
    // Without id and with a small bound: an oversize reply answers the oldest command.
    let options = SessionOptions {
        oob: true,
        max_in_flight: 3,
        max_message_size: 256,
        in_band_ids: false,
    };
    drive(data, Session::new(options), 5);
    let mut agent = Session::guest_agent(SessionOptions::default());
    if data.first().is_some_and(|b| b & 1 == 1) {
        let _ = agent.guest_sync(1234567);
    }
    drive(data, agent, 3);
});
