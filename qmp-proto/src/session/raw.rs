//! Raw requests: a JSON object written by the caller, sent as it is (QEMUMachine's `cmd_obj`).

use serde_json::Value;

use super::{Pending, RequestId, Result, Session};
use crate::encoder::Encoder;
use crate::error::ReplyError;

impl Session {
    /// Sends a request written by the caller, a JSON object sent as it is (QEMUMachine's
    /// `cmd_obj`): normally `{"execute": NAME, "arguments": {...}}`, but any members go, so that
    /// a test can send QEMU what a typed call never would (an unknown member, arguments of the
    /// wrong type) and see QEMU's answer. Take the answer with
    /// [`take_raw_reply`](Session::take_raw_reply): the whole reply object.
    ///
    /// The session keeps owning ids and order. The request is sent at once with the
    /// session's own numeric `id` (whatever [`in_band_ids`](crate::SessionOptions::in_band_ids)
    /// says), so its reply is matched by id: even an error about a malformed request carries
    /// the id, since QEMU reads it first, and an id-less reply can never be taken for it or
    /// it for another command's. An `id` member the caller gave is taken out before sending
    /// and put back into the reply, so it can be any JSON value and never collides with the
    /// session's ids. A request with an `exec-oob` member counts as out-of-band (QEMU
    /// answers it with an error unless `oob` was negotiated); any other counts as an in-band
    /// command in flight, but is not held back by
    /// [`max_in_flight`](crate::SessionOptions::max_in_flight).
    ///
    /// Fails with [`Error::NotReady`](crate::Error::NotReady) before negotiation finished and
    /// [`Error::Closed`](crate::Error::Closed) after the session ended; nothing is sent then.
    ///
    /// ```
    /// use qmp_proto::{Session, SessionOptions};
    /// use serde_json::json;
    ///
    /// # let mut session = Session::new(SessionOptions { in_band_ids: false, ..SessionOptions::default() });
    /// # session.receive(br#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
    /// #     "package": ""}, "capabilities": []}}"#).unwrap();
    /// # let n = session.transmit().len();
    /// # session.advance_transmit(n);
    /// # session.receive(b"{\"return\": {}}\r\n").unwrap();
    /// let request = json!({"execute": "stop", "bogus": 1, "id": "mine"});
    /// let id = session.execute_raw(request.as_object().unwrap().clone()).unwrap();
    /// assert_eq!(session.transmit(), b"{\"execute\":\"stop\",\"bogus\":1,\"id\":2}\r\n");
    /// session.receive(br#"{"id": 2, "error": {"class": "GenericError",
    ///     "desc": "QMP input member 'bogus' is unexpected"}}"#).unwrap();
    /// assert_eq!(
    ///     session.take_raw_reply(id),
    ///     Some(Ok(json!({"error": {"class": "GenericError",
    ///         "desc": "QMP input member 'bogus' is unexpected"}, "id": "mine"})))
    /// );
    /// ```
    pub fn execute_raw(
        &mut self,
        mut request: serde_json::Map<String, Value>,
    ) -> Result<RequestId> {
        self.check_ready()?;
        let caller_id = request.remove("id");
        let id = self.allocate_id();
        let oob = request.contains_key("exec-oob");
        let command = ["execute", "exec-oob"]
            .iter()
            .find_map(|k| request.get(*k).and_then(Value::as_str))
            .unwrap_or("(raw request)")
            .to_owned();
        request.insert("id".into(), Value::from(id));
        self.compact_tx();
        Encoder::encode_value(&Value::Object(request), &mut self.tx);
        if !oob {
            self.in_band_sent += 1;
        }
        self.sent.insert(
            id,
            Pending {
                command,
                oob,
                numbered: true,
                abandoned: false,
            },
        );
        self.raw.insert(id, caller_id);
        Ok(RequestId(id))
    }

    /// Takes the reply to a raw request ([`execute_raw`](Session::execute_raw)) as the whole
    /// reply object: `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`, with the
    /// caller's `id`, if the request had one. `Err` only for a reply larger than the bound
    /// ([`ReplyError::TooLarge`]); `None` while it has not arrived (or was already taken).
    pub fn take_raw_reply(
        &mut self,
        id: RequestId,
    ) -> Option<std::result::Result<Value, ReplyError>> {
        let reply = self.replies.remove(&id.0)?;
        let caller_id = self.raw.remove(&id.0).flatten();
        let mut whole = serde_json::Map::new();
        match reply {
            Ok(value) => {
                whole.insert("return".into(), value);
            }
            Err(ReplyError::Qmp(error)) => {
                whole.insert("error".into(), error.to_value());
            }
            Err(other) => return Some(Err(other)),
        }
        if let Some(caller_id) = caller_id {
            whole.insert("id".into(), caller_id);
        }
        Some(Ok(Value::Object(whole)))
    }
}
