//! What becomes of a command's reply: discarded when the caller abandoned the command, and
//! settled when the session ends (`Ok({})` for a `quit` the peer answered by closing,
//! `ReplyError::Closed` for the others).

use super::*;

/// Nothing is kept for commands whose reply arrived or was discarded.
fn assert_no_bookkeeping(session: &Session) {
    assert!(session.sent.is_empty(), "{:?}", session.sent);
    assert!(session.waiting.is_empty());
    assert!(session.unnumbered.is_empty());
    assert!(session.replies.is_empty(), "{:?}", session.replies);
}

#[test]
fn an_abandoned_reply_is_discarded_when_it_arrives() {
    let mut session = ready(SessionOptions::default(), &[]);
    let slow = session.execute("slow", None).unwrap();
    let fast = session.execute("fast", None).unwrap();
    take_sent(&mut session);
    session.abandon(slow);
    // Still in flight: it keeps its slot until its reply comes.
    assert!(session.is_pending(slow));
    assert_eq!(session.in_flight(), 2);
    let mut input = line(json!({"return": "slow", "id": slow.0}));
    input.extend(line(json!({"return": "fast", "id": fast.0})));
    session.receive(&input).unwrap();
    assert!(!session.is_pending(slow));
    assert!(!session.has_reply(slow));
    assert_eq!(session.take_reply(slow), None);
    assert_eq!(session.take_reply(fast), Some(Ok(json!("fast"))));
    assert_eq!(session.in_flight(), 0);
    assert_no_bookkeeping(&session);
}

#[test]
fn without_ids_an_abandoned_command_keeps_its_place_in_the_order() {
    let mut session = ready_without_ids(&[]);
    let slow = session.execute("slow", None).unwrap();
    let fast = session.execute("fast", None).unwrap();
    take_sent(&mut session);
    session.abandon(slow);
    // The first reply without id is the abandoned command's, not the next one's.
    session.receive(&line(json!({"return": "slow"}))).unwrap();
    assert!(session.is_pending(fast));
    assert!(!session.has_reply(fast));
    assert!(!session.has_reply(slow));
    session
        .receive(&error_reply("GenericError", "fast failed"))
        .unwrap();
    assert_eq!(qmp_error(session.take_reply(fast)).desc, "fast failed");
    assert_eq!(session.take_reply(slow), None);
    assert_no_bookkeeping(&session);
}

#[test]
fn abandoning_after_the_reply_arrived_discards_it() {
    let mut session = ready(SessionOptions::default(), &[]);
    let id = session.execute("query-status", None).unwrap();
    take_sent(&mut session);
    session
        .receive(&line(json!({"return": {"status": "running"}, "id": id.0})))
        .unwrap();
    assert!(session.has_reply(id));
    session.abandon(id);
    assert!(!session.has_reply(id));
    assert_eq!(session.take_reply(id), None);
    assert_no_bookkeeping(&session);
    // Ids that are not pending, taken or never issued: nothing happens.
    session.abandon(id);
    session.abandon(RequestId(999));
    let next = session.execute("query-name", None).unwrap();
    take_sent(&mut session);
    session
        .receive(&line(json!({"return": {}, "id": next.0})))
        .unwrap();
    assert_eq!(session.take_reply(next), Some(Ok(json!({}))));
}

#[test]
fn an_abandoned_command_waiting_for_a_slot_is_still_sent_in_its_turn() {
    for in_band_ids in [true, false] {
        let options = SessionOptions {
            max_in_flight: 1,
            in_band_ids,
            ..SessionOptions::default()
        };
        let mut session = ready_either(options, &[]);
        let first = session.execute("first", None).unwrap();
        let second = session.execute("second", None).unwrap();
        let third = session.execute("third", None).unwrap();
        assert_eq!(take_sent(&mut session).len(), 1);
        session.abandon(second);
        assert_eq!(session.queued(), 2);
        let reply = |text: &str, id: RequestId| {
            let id = if in_band_ids {
                json!(id.0)
            } else {
                Value::Null
            };
            with_optional_id(json!({ "return": text }), id)
        };
        session.receive(&reply("first", first)).unwrap();
        let sent = take_sent(&mut session);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].command, "second");
        session.receive(&reply("second", second)).unwrap();
        assert_eq!(take_sent(&mut session)[0].command, "third");
        session.receive(&reply("third", third)).unwrap();
        assert_eq!(session.take_reply(first), Some(Ok(json!("first"))));
        assert_eq!(session.take_reply(second), None);
        assert_eq!(session.take_reply(third), Some(Ok(json!("third"))));
        assert_no_bookkeeping(&session);
    }
}

#[test]
fn many_abandoned_commands_leave_nothing_behind() {
    let mut session = ready_without_ids(&[]);
    for round in 0..100 {
        let ids: Vec<RequestId> = (0..10)
            .map(|_| session.execute("query-status", None).unwrap())
            .collect();
        for id in &ids {
            session.abandon(*id);
        }
        // Eight in flight, two waiting: all answered in order, all discarded.
        let mut answered = 0;
        while answered < ids.len() {
            let sent = take_sent(&mut session);
            assert!(!sent.is_empty(), "round {round}");
            for _ in &sent {
                session.receive(&line(json!({"return": {}}))).unwrap();
                answered += 1;
            }
        }
        assert_no_bookkeeping(&session);
    }
}

#[test]
fn a_clean_end_of_stream_answers_a_sent_quit_and_closes_the_others() {
    let options = SessionOptions {
        max_in_flight: 2,
        ..SessionOptions::default()
    };
    let mut session = ready(options, &["oob"]);
    let status = session.execute("query-status", None).unwrap();
    let quit = session.execute("quit", None).unwrap();
    // Waiting for a slot when the stream ends: never sent, so not answered by the close.
    let queued_quit = session.execute("quit", None).unwrap();
    let queued = session.execute("query-name", None).unwrap();
    assert_eq!(session.queued(), 2);
    take_sent(&mut session);
    assert_eq!(session.receive_eof(), Ok(()));
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(session.take_reply(quit), Some(Ok(json!({}))));
    for id in [status, queued_quit, queued] {
        assert!(!session.is_pending(id));
        assert!(session.has_reply(id));
        assert_eq!(
            session.take_reply(id),
            Some(Err(ReplyError::Closed)),
            "{id:?}"
        );
        assert_eq!(session.take_reply(id), None);
    }
    assert_no_bookkeeping(&session);
    assert_eq!(
        ReplyError::Closed.to_string(),
        "the QMP session ended before the reply arrived"
    );
}

#[test]
fn quit_answered_before_the_close_keeps_its_answer() {
    let mut session = ready(SessionOptions::default(), &[]);
    let quit = session.execute("quit", None).unwrap();
    take_sent(&mut session);
    session
        .receive(&line(
            json!({"error": {"class": "GenericError", "desc": "no"}, "id": quit.0}),
        ))
        .unwrap();
    session.receive_eof().unwrap();
    assert_eq!(qmp_error(session.take_reply(quit)).desc, "no");
}

#[test]
fn an_unclean_end_closes_quit_too() {
    // The stream cut in the middle of a message.
    let mut session = ready(SessionOptions::default(), &[]);
    let quit = session.execute("quit", None).unwrap();
    session.receive(b"{\"return\": ").unwrap();
    assert!(matches!(
        session.receive_eof(),
        Err(Error::Truncated { .. })
    ));
    assert_eq!(session.take_reply(quit), Some(Err(ReplyError::Closed)));

    // A fatal error.
    let mut session = ready(SessionOptions::default(), &[]);
    let quit = session.execute("quit", None).unwrap();
    let other = session.execute("query-status", None).unwrap();
    assert!(session.receive(b"{\"return\": nope}\r\n").is_err());
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(session.take_reply(quit), Some(Err(ReplyError::Closed)));
    assert_eq!(session.take_reply(other), Some(Err(ReplyError::Closed)));
    // The end of the stream after that changes nothing.
    assert_eq!(session.receive_eof(), Ok(()));
    assert_eq!(session.take_reply(quit), None);

    // Closed by the caller.
    let mut session = ready(SessionOptions::default(), &[]);
    let quit = session.execute("quit", None).unwrap();
    session.close();
    assert_eq!(session.take_reply(quit), Some(Err(ReplyError::Closed)));

    // A guest agent has no QMP quit: a command of that name is closed like any other.
    let mut agent = Session::guest_agent(SessionOptions::default());
    let quit = agent.execute("quit", None).unwrap();
    agent.receive_eof().unwrap();
    assert_eq!(agent.take_reply(quit), Some(Err(ReplyError::Closed)));
}

#[test]
fn an_abandoned_command_gets_nothing_when_the_session_ends() {
    for clean in [true, false] {
        let mut session = ready_without_ids(&[]);
        let quit = session.execute("quit", None).unwrap();
        let other = session.execute("query-status", None).unwrap();
        session.abandon(quit);
        session.abandon(other);
        if clean {
            session.receive_eof().unwrap();
        } else {
            session.close();
        }
        assert_eq!(session.take_reply(quit), None);
        assert_eq!(session.take_reply(other), None);
        assert_no_bookkeeping(&session);
    }
}
