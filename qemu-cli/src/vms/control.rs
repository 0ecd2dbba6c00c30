//! The control protocol between the commands and a VM's supervisor, over the VM's unix socket.
//!
//! A client sends one request, a line of JSON (`{"op": "stop", "timeout_ms": 30000}`), and reads
//! one line back: `{"ok": VALUE}` or `{"error": "MESSAGE"}`. After the `ok` of `console` the
//! connection carries the console's bytes both ways; after the `ok` of `qmp` it speaks QMP
//! (greeting, `qmp_capabilities`, commands, events), served by the supervisor on its own QMP
//! connection to QEMU. The `ok` of `exec` ([`ExecOutput`]) is followed by the command's output
//! bytes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::Entry;
use crate::exit::Failure;

/// The longest request or response line.
pub const LINE_MAX: usize = 64 * 1024;

/// What a client asks a supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The VM's run state and whether a console is attached.
    Info,
    /// Attach to the console (`force`: take it over from another client).
    Console {
        /// Take the console over from a client that has it.
        #[serde(default)]
        force: bool,
    },
    /// Speak QMP on this connection.
    Qmp,
    /// Run one QMP command (the console's escape keys use it).
    Execute {
        /// The command.
        command: String,
        /// Its arguments.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments: Option<Value>,
    },
    /// Stop the VM: the power button, `timeout_ms` for the guest, then quit, then kill.
    Stop {
        /// How long the guest has to power off (0: quit at once).
        timeout_ms: u64,
    },
    /// Kill QEMU at once.
    Kill,
    /// Run a command in the guest through its guest agent.
    Exec {
        /// The program and its arguments.
        argv: Vec<String>,
        /// How long it may run.
        timeout_ms: u64,
    },
}

/// What a supervisor answers `stop` (and `kill`) with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    /// How it ended: `powered-off`, `quit`, `killed`, `exited`.
    pub outcome: String,
    /// The sentence to show.
    pub message: String,
}

/// What the guest agent reported of a command run with `exec`: the header of the answer,
/// which the command's standard output (`stdout_len` bytes) and standard error (`stderr_len`
/// bytes) follow on the connection, as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// The command's exit code (absent when a signal ended it).
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    #[serde(default)]
    pub signal: Option<i32>,
    /// How many bytes of standard output follow.
    pub stdout_len: u64,
    /// How many bytes of standard error follow them.
    pub stderr_len: u64,
    /// The guest agent cut the standard output short (qemu-ga keeps at most 16 MiB).
    #[serde(default)]
    pub stdout_truncated: bool,
    /// The guest agent cut the standard error short.
    #[serde(default)]
    pub stderr_truncated: bool,
}

/// Reads one line (up to `\n`) byte by byte, so that nothing after it is consumed.
fn read_line(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => return Ok(line),
            _ if byte[0] == b'\n' => return Ok(line),
            _ => {
                if line.len() >= LINE_MAX {
                    return Err(std::io::Error::other("the answer line is too long"));
                }
                line.push(byte[0]);
            }
        }
    }
}

/// Sends `request` to the VM's supervisor and reads its answer within `timeout`; returns the
/// connection (for `console` and `qmp`, which go on over it) and the `ok` value.
pub fn request(
    entry: &Entry,
    request: &Request,
    timeout: Duration,
) -> Result<(UnixStream, Value), Failure> {
    let name = &entry.name;
    let fail = |what: String| Failure::failed(format!("VM {name}: {what}"));
    let mut stream = UnixStream::connect(entry.socket())
        .map_err(|e| fail(format!("cannot reach its supervisor: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| fail(e.to_string()))?;
    let mut line = serde_json::to_vec(request).map_err(|e| fail(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| fail(format!("cannot talk to its supervisor: {e}")))?;
    let answer = read_line(&mut stream).map_err(|e| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            fail(format!(
                "its supervisor did not answer within {}",
                crate::duration::show(timeout)
            ))
        } else {
            fail(format!("cannot talk to its supervisor: {e}"))
        }
    })?;
    if answer.is_empty() {
        return Err(fail(
            "its supervisor closed the connection without an answer".into(),
        ));
    }
    let value: Value = serde_json::from_slice(&answer)
        .map_err(|e| fail(format!("its supervisor's answer is not JSON: {e}")))?;
    match value {
        Value::Object(mut map) => {
            if let Some(Value::String(e)) = map.remove("error") {
                return Err(Failure::failed(e));
            }
            match map.remove("ok") {
                Some(ok) => {
                    stream
                        .set_read_timeout(None)
                        .and_then(|()| stream.set_write_timeout(None))
                        .map_err(|e| fail(e.to_string()))?;
                    Ok((stream, ok))
                }
                None => Err(fail(
                    "its supervisor's answer has neither ok nor error".into(),
                )),
            }
        }
        _ => Err(fail("its supervisor's answer is not an object".into())),
    }
}

/// An answer line: `{"ok": value}`.
pub fn ok_line(value: Value) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({ "ok": value })).unwrap_or_default();
    v.push(b'\n');
    v
}

/// An answer line: `{"error": message}`.
pub fn error_line(message: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_line_of_json_with_an_op() {
        let r = Request::Stop { timeout_ms: 5000 };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"op":"stop","timeout_ms":5000}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let c: Request = serde_json::from_str(r#"{"op":"console"}"#).unwrap();
        assert_eq!(c, Request::Console { force: false });
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        assert_eq!(ok_line(serde_json::json!({})), b"{\"ok\":{}}\n");
        assert_eq!(error_line("no"), b"{\"error\":\"no\"}\n");
    }
}
