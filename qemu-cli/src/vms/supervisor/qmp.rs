//! The QMP server the supervisor gives a client after `qmp`: negotiation as QEMU does it,
//! and every command run on the supervisor's own connection to QEMU.

use qemu_process::Error;
use serde_json::{json, Value};

use super::client::Kind;
use super::{Supervisor, COMMAND_TIMEOUT};

impl Supervisor<'_> {
    /// One QMP request of client `id`.
    pub(super) fn qmp_request(&mut self, id: u64, value: Value) {
        let Some(i) = self.index(id) else { return };
        let negotiated = matches!(
            self.clients[i].kind,
            Kind::Qmp {
                negotiated: true,
                ..
            }
        );
        let request_id = value.get("id").cloned();
        let error = |class: &str, desc: String| json!({"error": {"class": class, "desc": desc}});
        let name = value
            .get("execute")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let arguments = value.get("arguments").cloned();
        let mut reply = match (&name, &arguments) {
            _ if value.get("exec-oob").is_some() => error(
                "GenericError",
                "out-of-band execution was not negotiated on this connection".into(),
            ),
            (None, _) => error("GenericError", "QMP input lacks member 'execute'".into()),
            (Some(_), Some(a)) if !a.is_object() => error(
                "GenericError",
                "QMP input member 'arguments' must be an object".into(),
            ),
            (Some(n), _) if n == "qmp_capabilities" => {
                if negotiated {
                    error(
                        "CommandNotFound",
                        "Capabilities negotiation is already complete, command ignored".into(),
                    )
                } else {
                    if let Kind::Qmp { negotiated, .. } = &mut self.clients[i].kind {
                        *negotiated = true;
                    }
                    json!({"return": {}})
                }
            }
            (Some(_), _) if !negotiated => error(
                "CommandNotFound",
                "Expecting capabilities negotiation with 'qmp_capabilities'".into(),
            ),
            (Some(n), _) => {
                match self
                    .machine
                    .execute_with_timeout(n, arguments.clone(), COMMAND_TIMEOUT)
                {
                    Ok(v) => json!({"return": v}),
                    Err(Error::Qmp(e)) => json!({"error": e.to_value()}),
                    Err(e) => error("GenericError", format!("qemu-machine: {e}")),
                }
            }
        };
        if let (Some(rid), Value::Object(map)) = (request_id, &mut reply) {
            map.insert("id".into(), rid);
        }
        // Events that came with the reply go first, as QEMU would have sent them.
        self.pump();
        if let Some(i) = self.index(id) {
            let c = &mut self.clients[i];
            c.send(format!("{reply}\r\n").as_bytes());
        }
    }
}
