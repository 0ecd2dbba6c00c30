//! Sessions with `in_band_ids: false`: replies without id matched by order.

use super::*;

#[test]
fn without_ids_the_wire_has_ids_only_for_oob() {
    let mut session = ready_without_ids(&["oob"]);
    let status = session.execute("query-status", None).unwrap();
    let hmp = session
        .execute(
            "human-monitor-command",
            Some(json!({"command-line": "info version"})),
        )
        .unwrap();
    let pause = session.execute_oob("migrate-pause", None).unwrap();
    // Request ids are numbered as with ids on the wire.
    assert_eq!(
        (status, hmp, pause),
        (RequestId(2), RequestId(3), RequestId(4))
    );
    assert_eq!(
        session.transmit(),
        &b"{\"execute\":\"query-status\"}\r\n\
           {\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info version\"}}\r\n\
           {\"exec-oob\":\"migrate-pause\",\"id\":4}\r\n"[..]
    );
    assert_eq!(session.in_flight(), 2);
    assert_eq!(session.pending(), 3);

    // The default keeps ids on every command, qmp_capabilities included.
    let mut numbered = Session::new(SessionOptions::default());
    numbered.receive(&greeting(&[])).unwrap();
    assert_eq!(
        numbered.transmit(),
        b"{\"execute\":\"qmp_capabilities\",\"id\":1}\r\n"
    );
}

#[test]
fn without_ids_replies_match_in_order() {
    let mut session = ready_without_ids(&[]);
    let ids: Vec<RequestId> = (0..12)
        .map(|i| {
            session
                .execute(
                    "human-monitor-command",
                    Some(json!({"command-line": format!("echo {i}")})),
                )
                .unwrap()
        })
        .collect();
    let mut sent = take_sent(&mut session);
    assert_eq!(sent.len(), 8);
    assert_eq!(session.queued(), 4);
    assert!(sent.iter().all(|r| r.id.is_none()));
    let mut answered = 0;
    // Answer in order, as QEMU does, two replies per read, taking what gets sent.
    while !sent.is_empty() {
        let mut input = Vec::new();
        for request in sent.drain(..sent.len().min(2)) {
            let text = request.arguments.unwrap()["command-line"].clone();
            input.extend(line(json!({"return": text})));
        }
        session.receive(&input).unwrap();
        answered += input.iter().filter(|&&b| b == b'\n').count();
        assert!(session.in_flight() <= 8);
        sent.extend(take_sent(&mut session));
    }
    assert_eq!(answered, 12);
    assert_eq!((session.in_flight(), session.queued()), (0, 0));
    // Taken in any order, each reply is its own command's.
    for (i, id) in ids.iter().enumerate().rev() {
        assert!(!session.is_pending(*id));
        assert!(session.has_reply(*id));
        assert_eq!(
            session.take_reply(*id),
            Some(Ok(json!(format!("echo {i}"))))
        );
        assert!(!session.has_reply(*id));
    }
}

#[test]
fn without_ids_oob_replies_interleave_with_in_band_ones() {
    let mut session = ready_without_ids(&["oob"]);
    let a = session.execute("query-status", None).unwrap();
    let p1 = session.execute_oob("migrate-pause", None).unwrap();
    let b = session.execute("bad-command", None).unwrap();
    let p2 = session.execute_oob("migrate-pause", None).unwrap();
    let c = session.execute("query-name", None).unwrap();
    let sent = take_sent(&mut session);
    assert_eq!(
        sent.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [None, Some(json!(p1.0)), None, Some(json!(p2.0)), None]
    );
    // The second oob reply first, then in-band and oob ones mixed; an event in between.
    let mut input = line(json!({"error": {"class": "GenericError",
        "desc": "migrate-pause is currently only supported during postcopy-active state"},
        "id": p2.0}));
    input.extend(line(
        json!({"return": {"status": "running", "running": true}}),
    ));
    input.extend(event("RESUME", None));
    input.extend(line(json!({"return": {}, "id": p1.0})));
    input.extend(error_reply(
        "CommandNotFound",
        "The command bad-command has not been found",
    ));
    session.receive(&input).unwrap();
    assert!(session.is_pending(c));
    assert!(!session.is_pending(b));
    session
        .receive(&line(json!({"return": {"name": "vm0"}})))
        .unwrap();
    assert_eq!(
        session.take_reply(a),
        Some(Ok(json!({"status": "running", "running": true})))
    );
    assert_eq!(session.take_reply(p1), Some(Ok(json!({}))));
    let error = qmp_error(session.take_reply(b));
    assert_eq!(error.class, ErrorClass::CommandNotFound);
    assert!(qmp_error(session.take_reply(p2)).desc.contains("postcopy"));
    assert_eq!(session.take_reply(c), Some(Ok(json!({"name": "vm0"}))));
    assert_eq!(session.poll_event().unwrap().name, "RESUME");
    assert_eq!(session.pending(), 0);
    assert_eq!(session.in_flight(), 0);
}

#[test]
fn without_ids_an_error_goes_to_its_command() {
    let mut session = ready_without_ids(&[]);
    let first = session.execute("stop", None).unwrap();
    let second = session
        .execute("device_del", Some(json!({"id": "nic9"})))
        .unwrap();
    let third = session.execute("query-name", None).unwrap();
    take_sent(&mut session);
    let mut input = line(json!({"return": {}}));
    input.extend(line(json!({"error": {"class": "DeviceNotFound",
        "desc": "Device 'nic9' not found"}})));
    input.extend(line(json!({"return": {"name": "vm0"}})));
    session.receive(&input).unwrap();
    assert_eq!(session.take_reply(first), Some(Ok(json!({}))));
    let error = qmp_error(session.take_reply(second));
    assert_eq!(error.class, ErrorClass::DeviceNotFound);
    assert_eq!(error.desc, "Device 'nic9' not found");
    assert_eq!(session.take_reply(third), Some(Ok(json!({"name": "vm0"}))));
    assert!(session.is_ready());
}

#[test]
fn without_ids_a_late_reply_is_not_the_next_commands() {
    let mut session = ready_without_ids(&[]);
    // The caller gives up on `slow` (a timeout in the driver) but does not forget it: the
    // command keeps its place until its reply comes.
    let slow = session.execute("slow", None).unwrap();
    let fast = session.execute("fast", None).unwrap();
    take_sent(&mut session);
    assert!(session.is_pending(slow));
    session.receive(&line(json!({"return": "slow"}))).unwrap();
    assert!(session.is_pending(fast));
    assert!(!session.has_reply(fast));
    assert_eq!(session.take_reply(slow), Some(Ok(json!("slow"))));
    session.receive(&line(json!({"return": "fast"}))).unwrap();
    assert_eq!(session.take_reply(fast), Some(Ok(json!("fast"))));
    // A reply carrying the number of a command sent without id is not its reply.
    let later = session.execute("later", None).unwrap();
    take_sent(&mut session);
    session
        .receive(&line(json!({"return": "forged", "id": later.0})))
        .unwrap();
    assert!(session.is_pending(later));
    session.receive(&line(json!({"return": "later"}))).unwrap();
    assert_eq!(session.take_reply(later), Some(Ok(json!("later"))));
}

#[test]
fn without_ids_a_null_id_is_no_id() {
    let mut session = Session::new(no_ids());
    session.receive(&greeting(&[])).unwrap();
    take_sent(&mut session);
    session
        .receive(&line(json!({"return": {}, "id": null})))
        .unwrap();
    assert!(session.is_ready());
    let a = session.execute("query-name", None).unwrap();
    let b = session.execute("stop", None).unwrap();
    take_sent(&mut session);
    let mut input = line(json!({"return": {"name": "a"}, "id": null}));
    input.extend(line(
        json!({"error": {"class": "GenericError", "desc": "b"},
        "id": null}),
    ));
    session.receive(&input).unwrap();
    assert_eq!(session.take_reply(a), Some(Ok(json!({"name": "a"}))));
    assert_eq!(qmp_error(session.take_reply(b)).desc, "b");
    // With nothing waiting, a null id is an unknown id, as with ids on the wire.
    session
        .receive(&line(
            json!({"error": {"class": "GenericError", "desc": "c"},
            "id": null}),
        ))
        .unwrap();
    assert!(session.is_ready());
}

#[test]
fn without_ids_a_reply_with_nothing_in_flight() {
    // A return is dropped, as with ids.
    let mut session = ready_without_ids(&["oob"]);
    session.receive(&line(json!({"return": {}}))).unwrap();
    assert!(session.is_ready());
    // An oob command in flight is no taker for a reply without id either.
    let pause = session.execute_oob("migrate-pause", None).unwrap();
    let err = session
        .receive(&error_reply(
            "GenericError",
            "JSON parse error, expecting value",
        ))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("without id") && m.contains("expecting value")),
        "{err}"
    );
    assert_eq!(session.state(), SessionState::Closed);
    assert!(!session.is_pending(pause));
}

#[test]
fn without_ids_negotiation_errors_and_commands_queued_before_the_reply() {
    let mut session = Session::new(no_ids());
    session.receive(&greeting(&[])).unwrap();
    take_sent(&mut session);
    let err = session
        .receive(&error_reply("CommandNotFound", "nope"))
        .unwrap_err();
    assert!(matches!(err, Error::Negotiation(e) if e.desc == "nope"));
    assert_eq!(session.state(), SessionState::Closed);

    // A numbered reply is not the negotiation's when it went without id.
    let mut session = Session::new(no_ids());
    session.receive(&greeting(&["oob"])).unwrap();
    take_sent(&mut session);
    session
        .receive(&line(json!({"return": {}, "id": 1})))
        .unwrap();
    assert_eq!(session.state(), SessionState::Negotiating);
    session.receive(&line(json!({"return": {}}))).unwrap();
    assert!(session.is_ready());

    // Guest agents: in-band commands without id, guest-sync-delimited with one.
    let mut agent = Session::guest_agent(no_ids());
    let info = agent.execute("guest-info", None).unwrap();
    assert_eq!(agent.transmit(), b"{\"execute\":\"guest-info\"}\r\n");
    let sync = agent.guest_sync(7).unwrap();
    assert!(!agent.is_pending(info));
    assert!(agent.transmit().ends_with(b",\"id\":2}\r\n"));
    agent.advance_transmit(usize::MAX);
    agent
        .receive(b"{\"return\": 1}\n\xff{\"return\": 7, \"id\": 2}\n")
        .unwrap();
    assert_eq!(agent.take_reply(sync), Some(Ok(json!(7))));
    assert_eq!(agent.take_reply(info), None);
}
