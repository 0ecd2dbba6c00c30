//! The encoder: requests out as compact JSON lines.

use serde_json::Value;

use crate::wire::Request;

/// Writes requests as compact JSON followed by CRLF, the way QMP clients send them.
///
/// ```
/// use qmp_proto::{Encoder, Request};
/// use serde_json::json;
///
/// let mut out = Vec::new();
/// let mut request = Request::new("device_del", Some(json!({"id": "nic0"})));
/// request.id = Some(json!(7));
/// Encoder::encode(&request, &mut out);
/// assert_eq!(out, b"{\"execute\":\"device_del\",\"arguments\":{\"id\":\"nic0\"},\"id\":7}\r\n");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoder;

impl Encoder {
    /// Appends `request` to `out`: `{"execute"|"exec-oob":..,"arguments":..,"id":..}` and CRLF.
    /// `arguments` and `id` are written only when present.
    pub fn encode(request: &Request, out: &mut Vec<u8>) {
        out.extend_from_slice(if request.oob {
            b"{\"exec-oob\":"
        } else {
            b"{\"execute\":"
        });
        write_string(out, &request.command);
        if let Some(arguments) = &request.arguments {
            out.extend_from_slice(b",\"arguments\":");
            write_value(out, arguments);
        }
        if let Some(id) = &request.id {
            out.extend_from_slice(b",\"id\":");
            write_value(out, id);
        }
        out.extend_from_slice(b"}\r\n");
    }

    /// Appends any JSON value to `out` as compact JSON followed by CRLF (for instance a reply,
    /// when playing the server's side in a test).
    pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
        write_value(out, value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes `value` as compact JSON.
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Writes `s` as a JSON string: quotes, backslashes and control characters escaped, the rest
/// as UTF-8.
fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(escape);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encoded(request: &Request) -> String {
        let mut out = Vec::new();
        Encoder::encode(request, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn compact_with_crlf() {
        assert_eq!(
            encoded(&Request::new("stop", None)),
            "{\"execute\":\"stop\"}\r\n"
        );
        let request = Request {
            command: "migrate-pause".into(),
            arguments: Some(json!({})),
            id: Some(json!("a b")),
            oob: true,
        };
        assert_eq!(
            encoded(&request),
            "{\"exec-oob\":\"migrate-pause\",\"arguments\":{},\"id\":\"a b\"}\r\n"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let request = Request::new(
            "human-monitor-command",
            Some(json!({"command-line": "a\"b\\c\nd\u{1}\u{7f}é\u{2028}\t\u{8}\u{c}\r"})),
        );
        let text = encoded(&request);
        assert_eq!(
            text,
            "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\
             \"a\\\"b\\\\c\\nd\\u0001\u{7f}é\u{2028}\\t\\b\\f\\r\"}}\r\n"
        );
        let back: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(back, request.to_value());
    }

    #[test]
    fn every_json_type_round_trips() {
        let value = json!({
            "null": null, "t": true, "f": false, "int": -5, "big": u64::MAX, "float": 1.5,
            "tiny": 1e-300, "array": [1, [2, []], {}], "nested": {"a": {"b": "c"}}, "": ""
        });
        let request = Request {
            command: "x".into(),
            arguments: Some(value.clone()),
            id: Some(value.clone()),
            oob: false,
        };
        let text = encoded(&request);
        assert!(text.ends_with("}\r\n"));
        assert!(!text.trim_end().contains(['\n', '\r', ' ']));
        let back: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(back, request.to_value());

        let mut out = Vec::new();
        Encoder::encode_value(&value, &mut out);
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), value);
        assert!(out.ends_with(b"\r\n"));
    }
}
