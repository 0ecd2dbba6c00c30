//! The event queue: bounded, drops counted and reported once, the overflow episode ended by
//! emptying the queue; the event filter that holds a wanted event before the bound applies.

use super::*;
use crate::matching::EventFilter;

fn with_max_events(limit: usize) -> Session {
    ready(
        SessionOptions {
            max_events: limit,
            ..SessionOptions::default()
        },
        &[],
    )
}

fn events(names: &[&str]) -> Vec<u8> {
    names.iter().flat_map(|name| event(name, None)).collect()
}

fn names(session: &Session) -> Vec<String> {
    session.events().map(|e| e.name.clone()).collect()
}

#[test]
fn the_default_bound() {
    assert_eq!(SessionOptions::default().max_events, 65_536);
    assert_eq!(DEFAULT_MAX_EVENTS, 65_536);
    let mut session = ready(SessionOptions::default(), &[]);
    let many: Vec<u8> = (0..DEFAULT_MAX_EVENTS + 3)
        .flat_map(|_| event("STOP", None))
        .collect();
    session.receive(&many).unwrap();
    assert_eq!(session.events_queued(), DEFAULT_MAX_EVENTS);
    assert_eq!(session.events_dropped(), 3);
}

#[test]
fn events_beyond_the_bound_are_dropped_counted_and_reported_once() {
    let mut session = with_max_events(2);
    assert!(!session.take_overflow());
    session.receive(&events(&["A", "B", "C", "D"])).unwrap();
    // The oldest ones are kept.
    assert_eq!(names(&session), ["A", "B"]);
    assert_eq!(session.events_dropped(), 2);
    assert!(session.take_overflow());
    assert!(!session.take_overflow());
    // Another drop: reported again.
    session.receive(&events(&["E"])).unwrap();
    assert_eq!(session.events_dropped(), 3);
    assert!(session.take_overflow());
    // Room again: nothing dropped, nothing to report.
    assert_eq!(session.poll_event().unwrap().name, "A");
    session.receive(&events(&["F"])).unwrap();
    assert_eq!(names(&session), ["B", "F"]);
    assert_eq!(session.events_dropped(), 3);
    assert!(!session.take_overflow());
    // Commands and replies are not affected by a full queue.
    let id = session.execute("query-status", None).unwrap();
    let mut input = events(&["G"]);
    input.extend(line(json!({"return": {}, "id": id.0})));
    session.receive(&input).unwrap();
    assert_eq!(session.take_reply(id), Some(Ok(json!({}))));
    assert_eq!(session.events_dropped(), 4);
}

#[test]
fn an_overflow_episode_ends_when_the_queue_is_emptied() {
    let mut session = with_max_events(2);
    let fill = |session: &mut Session| {
        session.receive(&events(&["A", "B", "C"])).unwrap();
        assert!(session.events.overflowing);
    };
    // Emptied by polling.
    fill(&mut session);
    session.poll_event();
    assert!(session.events.overflowing, "not empty yet");
    session.poll_event();
    assert!(!session.events.overflowing);
    // By taking them all.
    fill(&mut session);
    assert_eq!(session.take_events().len(), 2);
    assert!(!session.events.overflowing);
    assert_eq!(session.events_queued(), 0);
    // By taking the last ones by name or filter.
    fill(&mut session);
    assert!(session.take_event("A", None).is_some());
    assert!(session.events.overflowing);
    assert!(session
        .take_event_matching(&EventFilter::new().or("B", None))
        .is_some());
    assert!(!session.events.overflowing);
    // Looking does not end it.
    fill(&mut session);
    assert!(session.take_event("C", None).is_none());
    assert!(session.poll_event().is_some());
    assert!(session.events.overflowing);
    assert_eq!(session.events_dropped(), 4);
}

#[test]
fn a_bound_of_zero_is_one_and_it_can_change() {
    let mut session = with_max_events(0);
    session.receive(&events(&["A", "B"])).unwrap();
    assert_eq!(names(&session), ["A"]);
    session.set_max_events(3);
    assert_eq!(session.options().max_events, 3);
    session.receive(&events(&["C", "D", "E"])).unwrap();
    assert_eq!(names(&session), ["A", "C", "D"]);
    // A lower bound keeps what is queued and drops new events.
    session.set_max_events(1);
    session.receive(&events(&["F"])).unwrap();
    assert_eq!(names(&session), ["A", "C", "D"]);
    assert_eq!(session.events_dropped(), 3);
}

#[test]
fn take_event_matching_takes_the_oldest_match_of_any_name() {
    let mut session = ready(SessionOptions::default(), &[]);
    let mut input = events(&["STOP"]);
    input.extend(event("DEVICE_DELETED", Some(json!({"device": "nic1"}))));
    input.extend(event("DEVICE_DELETED", Some(json!({"device": "nic0"}))));
    input.extend(events(&["RESUME"]));
    session.receive(&input).unwrap();
    let pattern = json!({"data": {"device": "nic0"}});
    let filter: EventFilter = [("RESUME", None), ("DEVICE_DELETED", Some(&pattern))]
        .into_iter()
        .collect();
    let first = session.take_event_matching(&filter).unwrap();
    assert_eq!(first.data["device"], "nic0");
    assert_eq!(session.take_event_matching(&filter).unwrap().name, "RESUME");
    assert!(session.take_event_matching(&filter).is_none());
    assert_eq!(names(&session), ["STOP", "DEVICE_DELETED"]);
}

#[test]
fn the_filter_holds_the_wanted_event_even_when_the_queue_is_full() {
    let mut session = with_max_events(1);
    session.receive(&events(&["SHUTDOWN", "STOP"])).unwrap();
    assert_eq!(session.events_dropped(), 1);
    // Only events that arrive after the filter is set count.
    session.set_event_filter(EventFilter::new().or("SHUTDOWN", None));
    assert_eq!(
        session.event_filter().unwrap().names().collect::<Vec<_>>(),
        ["SHUTDOWN"]
    );
    assert_eq!(session.take_matched(), None);
    session
        .receive(&events(&["RESUME", "SHUTDOWN", "SHUTDOWN"]))
        .unwrap();
    let matched = session.take_matched().unwrap();
    assert_eq!(matched.name, "SHUTDOWN");
    assert_eq!(session.take_matched(), None);
    // RESUME and the second SHUTDOWN (one match is held at a time) met the full queue.
    assert_eq!(session.events_dropped(), 3);
    assert_eq!(names(&session), ["SHUTDOWN"]);
    // Once the match was taken, the filter holds the next one.
    session.receive(&events(&["SHUTDOWN"])).unwrap();
    assert_eq!(session.events_dropped(), 3);
    // Clearing returns a match not taken, and stops holding.
    assert_eq!(session.clear_event_filter().unwrap().name, "SHUTDOWN");
    assert!(session.event_filter().is_none());
    session.receive(&events(&["SHUTDOWN"])).unwrap();
    assert_eq!(session.take_matched(), None);
    assert_eq!(session.events_dropped(), 4);
}

#[test]
fn setting_a_filter_forgets_a_match_not_taken() {
    let mut session = ready(SessionOptions::default(), &[]);
    session.set_event_filter(EventFilter::new().or("RESET", None));
    session.receive(&events(&["RESET"])).unwrap();
    session.set_event_filter(EventFilter::new().or("RESET", None));
    assert_eq!(session.take_matched(), None);
    assert_eq!(session.events_queued(), 0);
    session.receive(&events(&["STOP", "RESET"])).unwrap();
    assert_eq!(session.take_matched().unwrap().name, "RESET");
    assert_eq!(names(&session), ["STOP"]);
    assert_eq!(session.clear_event_filter(), None);
}

#[test]
fn the_filter_sees_events_in_any_split() {
    let mut server = events(&["STOP", "RESUME"]);
    server.extend(event("SHUTDOWN", Some(json!({"guest": true}))));
    server.extend(events(&["RESET"]));
    for split in 0..=server.len() {
        let mut session = with_max_events(1);
        session.set_event_filter(
            EventFilter::new().or("SHUTDOWN", Some(json!({"data": {"guest": true}}))),
        );
        session.receive(&server[..split]).unwrap();
        session.receive(&server[split..]).unwrap();
        assert_eq!(session.take_matched().unwrap().data["guest"], true);
        assert_eq!(names(&session), ["STOP"]);
        assert_eq!(session.events_dropped(), 2, "split {split}");
    }
}

/// Observed events are copied whatever happens to them: queued, held for the filter, dropped
/// from a full queue; the copies are bounded, the oldest dropped first.
#[test]
fn observed_events_are_copied_whatever_happens_to_them() {
    let mut session = with_max_events(1);
    session.observe_events(["RESET", "SHUTDOWN"]);
    session.set_event_filter(EventFilter::new().or("SHUTDOWN", None));
    session
        .receive(&events(&["STOP", "RESET", "SHUTDOWN", "RESUME"]))
        .unwrap();
    // STOP queued, RESET dropped (queue full), SHUTDOWN held for the filter, RESUME dropped.
    assert_eq!(names(&session), ["STOP"]);
    assert_eq!(session.events_dropped(), 2);
    assert_eq!(session.take_observed().unwrap().name, "RESET");
    assert_eq!(session.take_observed().unwrap().name, "SHUTDOWN");
    assert_eq!(session.take_observed(), None);
    assert_eq!(session.take_matched().unwrap().name, "SHUTDOWN");

    // At most 256 copies wait; the oldest go first.
    let many: Vec<String> = (0..300).map(|i| format!("R{i}")).collect();
    session.observe_events(many.iter().cloned());
    let names_ref: Vec<&str> = many.iter().map(String::as_str).collect();
    session.receive(&events(&names_ref)).unwrap();
    let mut copies = Vec::new();
    while let Some(e) = session.take_observed() {
        copies.push(e.name);
    }
    assert_eq!(copies.len(), 256);
    assert_eq!(copies[0], "R44");
    assert_eq!(copies[255], "R299");
}
