//! The session fed arbitrary server bytes, with commands issued, replies taken, events
//! polled and writes acknowledged in between: it never panics and keeps its invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_proto::commands::QueryStatus;
use qmp_proto::{Decoder, Error, Request, RequestId, Session, SessionOptions, SessionState};
use serde_json::json;

mod common;

fn drive(data: &[u8], mut session: Session, salt: u64) {
    let mut rng = common::Rng::new(data, salt);
    let max_in_flight = session.options().max_in_flight.max(1);
    let mut issued: Vec<RequestId> = Vec::new();
    let mut written = Vec::new();
    for piece in common::chunks(data, &mut rng, 64) {
        let closed_before = session.state() == SessionState::Closed;
        match session.receive(piece) {
            Ok(()) => assert!(!closed_before),
            Err(Error::Closed) => assert!(closed_before),
            Err(_) => assert_eq!(session.state(), SessionState::Closed),
        }
        assert!(session.in_flight() <= max_in_flight);
        match rng.next() % 6 {
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
                    if session.take_reply(*id).is_some() {
                        assert!(!session.is_pending(*id));
                    }
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
    let mut agent = Session::guest_agent(SessionOptions::default());
    if data.first().is_some_and(|b| b & 1 == 1) {
        let _ = agent.guest_sync(1234567);
    }
    drive(data, agent, 3);
});
