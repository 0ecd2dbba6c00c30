//! Raw requests: the session's id on the wire, the caller's in the reply.

use super::*;

#[test]
fn raw_requests_carry_the_sessions_id_and_get_the_callers_back() {
    for in_band_ids in [false, true] {
        let mut session = if in_band_ids {
            ready_either(
                SessionOptions {
                    oob: true,
                    ..SessionOptions::default()
                },
                &["oob"],
            )
        } else {
            ready_without_ids(&["oob"])
        };
        let first = session.execute("query-status", None).unwrap();
        let raw = session
            .execute_raw(
                json!({"execute": "stop", "arguments": {}, "id": {"mine": [1]}})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .unwrap();
        let bare = session
            .execute_raw(json!({"execute": "cont"}).as_object().unwrap().clone())
            .unwrap();
        let last = session.execute("query-name", None).unwrap();
        let wire = String::from_utf8(session.transmit().to_vec()).unwrap();
        let id = |n: u64| {
            if in_band_ids {
                format!(",\"id\":{n}")
            } else {
                String::new()
            }
        };
        assert_eq!(
            wire,
            format!(
                "{{\"execute\":\"query-status\"{}}}\r\n\
                 {{\"execute\":\"stop\",\"arguments\":{{}},\"id\":{}}}\r\n\
                 {{\"execute\":\"cont\",\"id\":{}}}\r\n\
                 {{\"execute\":\"query-name\"{}}}\r\n",
                id(first.0),
                raw.0,
                bare.0,
                id(last.0)
            )
        );
        let n = session.transmit().len();
        session.advance_transmit(n);
        // In order, as QEMU answers: the id-less replies go to the id-less commands.
        let mut answer = |mut v: Value, id: Option<u64>| {
            if let Some(n) = id {
                v["id"] = json!(n);
            }
            session.receive(&line(v)).unwrap();
        };
        answer(
            json!({"return": {"status": "running"}}),
            in_band_ids.then_some(first.0),
        );
        answer(
            json!({"error": {"class": "GenericError", "desc": "nope"}}),
            Some(raw.0),
        );
        answer(json!({"return": {}}), Some(bare.0));
        answer(
            json!({"return": {"name": "x"}}),
            in_band_ids.then_some(last.0),
        );
        assert_eq!(
            session.take_reply(first),
            Some(Ok(json!({"status": "running"})))
        );
        assert_eq!(
            session.take_raw_reply(raw),
            Some(Ok(
                json!({"error": {"class": "GenericError", "desc": "nope"},
                "id": {"mine": [1]}})
            ))
        );
        assert_eq!(session.take_raw_reply(raw), None);
        assert_eq!(
            session.take_raw_reply(bare),
            Some(Ok(json!({"return": {}})))
        );
        assert_eq!(session.take_reply(last), Some(Ok(json!({"name": "x"}))));
        assert!(session.raw.is_empty());
        assert_eq!(session.in_flight(), 0);
    }
}

#[test]
fn raw_requests_wait_for_readiness_and_oob_ones_count_apart() {
    let mut session = Session::new(no_ids());
    let request = json!({"execute": "stop"}).as_object().unwrap().clone();
    assert!(matches!(
        session.execute_raw(request.clone()),
        Err(Error::NotReady)
    ));
    let mut session = ready_without_ids(&["oob"]);
    let oob = session
        .execute_raw(
            json!({"exec-oob": "migrate-pause"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
    assert_eq!((session.in_flight(), session.pending()), (0, 1));
    // A reply taken the plain way (as a driver discarding an abandoned one does) forgets
    // the caller's id too.
    session
        .receive(&line(json!({"return": {}, "id": oob.0})))
        .unwrap();
    assert_eq!(session.take_reply(oob), Some(Ok(json!({}))));
    assert!(session.raw.is_empty());
    let pending = session.execute_raw(request).unwrap();
    session.close();
    // The session ended first: the raw request gets its Closed answer once, then nothing
    // is kept for it.
    assert_eq!(
        session.take_raw_reply(pending),
        Some(Err(ReplyError::Closed))
    );
    assert!(session.raw.is_empty());
    assert_eq!(session.take_raw_reply(pending), None);
    assert!(matches!(
        session.execute_raw(Default::default()),
        Err(Error::Closed)
    ));
}
