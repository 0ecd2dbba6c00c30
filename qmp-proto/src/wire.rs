//! Wire types: what QMP sends and receives.
//!
//! Every type here is lenient about what it does not know: unknown event names are plain
//! strings, event data and reply values are kept as [`Value`], unknown error classes become
//! [`ErrorClass::Other`], and keys a type does not know are ignored rather than rejected, so
//! that a newer QEMU never breaks a read. The lossless form of any message is the [`Value`]
//! returned by [`Decoder::next_value`](crate::Decoder::next_value).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A QEMU version: the `{"qemu": {"major", "minor", "micro"}, "package"}` object found in
/// the greeting and returned by `query-version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major version, e.g. `7` for QEMU 7.2.0.
    pub major: u64,
    /// Minor version, e.g. `2` for QEMU 7.2.0.
    pub minor: u64,
    /// Micro version, e.g. `0` for QEMU 7.2.0.
    pub micro: u64,
    /// The distribution's package string, e.g. `"Debian 1:7.2+dfsg-7+deb12u18"` (may be empty).
    pub package: String,
}

/// In QEMU's member order (serialized in declaration order).
#[derive(Serialize, Deserialize)]
struct VersionTriple {
    micro: u64,
    minor: u64,
    major: u64,
}

#[derive(Serialize, Deserialize)]
struct VersionWire {
    qemu: VersionTriple,
    #[serde(default)]
    package: String,
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        VersionWire {
            qemu: VersionTriple {
                major: self.major,
                minor: self.minor,
                micro: self.micro,
            },
            package: self.package.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let wire = VersionWire::deserialize(deserializer)?;
        Ok(Version {
            major: wire.qemu.major,
            minor: wire.qemu.minor,
            micro: wire.qemu.micro,
            package: wire.package,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        if !self.package.is_empty() {
            write!(f, " ({})", self.package)?;
        }
        Ok(())
    }
}

/// The greeting a QMP monitor sends when a client connects:
/// `{"QMP": {"version": ..., "capabilities": [...]}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Greeting {
    /// The QEMU version.
    pub version: Version,
    /// The capabilities the server offers, as raw strings (e.g. `"oob"`).
    pub capabilities: Vec<String>,
}

impl Greeting {
    /// Whether the server offers the capability `name` (e.g. `"oob"`).
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }

    /// The greeting as the JSON object QEMU sends.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "QMP": {
                "version": version_to_value(&self.version),
                "capabilities": self.capabilities,
            }
        })
    }

    fn from_inner(inner: Value) -> Result<Greeting> {
        let Value::Object(mut inner) = inner else {
            return Err(Error::Protocol(format!(
                "the greeting's \"QMP\" member is {}, not an object",
                kind(&inner)
            )));
        };
        let version = match inner.remove("version") {
            Some(v) => serde_json::from_value::<Version>(v).map_err(|e| {
                Error::Protocol(format!("the greeting's version is malformed: {e}"))
            })?,
            None => return Err(Error::Protocol("the greeting has no version".into())),
        };
        let capabilities = match inner.remove("capabilities") {
            Some(Value::Array(items)) => items
                .into_iter()
                .filter_map(|item| match item {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Greeting {
            version,
            capabilities,
        })
    }
}

/// In QEMU's member order (`json!` keeps it: serde_json's `preserve_order` is on).
fn version_to_value(version: &Version) -> Value {
    serde_json::json!({
        "qemu": {"micro": version.micro, "minor": version.minor, "major": version.major},
        "package": version.package,
    })
}

/// When an event happened, as QEMU reports it: seconds and microseconds since the Unix epoch.
/// Both are `-1` when QEMU could not read the host clock (and when a message had no usable
/// timestamp).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Whole seconds since the epoch.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

impl Timestamp {
    /// The value QEMU uses when it could not read the clock: both members `-1`.
    pub const UNKNOWN: Timestamp = Timestamp {
        seconds: -1,
        microseconds: -1,
    };

    fn from_value(value: Option<Value>) -> Timestamp {
        let Some(Value::Object(map)) = value else {
            return Timestamp::UNKNOWN;
        };
        let seconds = map.get("seconds").and_then(Value::as_i64);
        let microseconds = map.get("microseconds").and_then(Value::as_i64);
        match (seconds, microseconds) {
            (Some(seconds), Some(microseconds)) => Timestamp {
                seconds,
                microseconds,
            },
            _ => Timestamp::UNKNOWN,
        }
    }

    fn to_value(self) -> Value {
        serde_json::json!({"seconds": self.seconds, "microseconds": self.microseconds})
    }
}

/// An asynchronous event: `{"event": NAME, "data": {...}, "timestamp": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's name, e.g. `"STOP"`; any name is accepted.
    pub name: String,
    /// The event's data as sent, or `Value::Null` when the event has none.
    pub data: Value,
    /// When the event happened.
    pub timestamp: Timestamp,
}

impl Event {
    /// The event as the JSON object QEMU sends, in QEMU's member order:
    /// `{"timestamp": {..}, "event": .., "data": ..}`, `data` left out when it is `Null` (as
    /// QEMU does for events without data).
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("timestamp".into(), self.timestamp.to_value());
        map.insert("event".into(), Value::String(self.name.clone()));
        if !self.data.is_null() {
            map.insert("data".into(), self.data.clone());
        }
        Value::Object(map)
    }

    /// Whether this event is called `name` and, when a pattern is given, matches it with the
    /// semantics of [`event_match`](crate::event_match) applied to [`Event::to_value`].
    pub fn matches(&self, name: &str, pattern: Option<&Value>) -> bool {
        self.name == name && pattern.is_none_or(|p| crate::matching::event_match_parts(self, p))
    }
}

/// The class of an error QEMU reports for a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Most errors: the description says what went wrong.
    GenericError,
    /// The command does not exist (or is not allowed before negotiation).
    CommandNotFound,
    /// A device exists but is not active.
    DeviceNotActive,
    /// The named device does not exist.
    DeviceNotFound,
    /// KVM lacks a capability the command needs.
    KVMMissingCap,
    /// A class this crate does not know (kept verbatim).
    Other(String),
}

impl ErrorClass {
    /// The class name as QEMU spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KVMMissingCap => "KVMMissingCap",
            ErrorClass::Other(name) => name,
        }
    }

    /// The class named `name`; names this crate does not know become [`ErrorClass::Other`].
    pub fn from_name(name: &str) -> ErrorClass {
        match name {
            "GenericError" => ErrorClass::GenericError,
            "CommandNotFound" => ErrorClass::CommandNotFound,
            "DeviceNotActive" => ErrorClass::DeviceNotActive,
            "DeviceNotFound" => ErrorClass::DeviceNotFound,
            "KVMMissingCap" => ErrorClass::KVMMissingCap,
            other => ErrorClass::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorClass {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorClass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(ErrorClass::from_name(&name))
    }
}

/// An error QEMU reported for a command: `{"error": {"class": .., "desc": ..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QmpError {
    /// The error class.
    pub class: ErrorClass,
    /// QEMU's human-readable description (not meant to be parsed).
    pub desc: String,
}

impl QmpError {
    /// The error object as QEMU sends it: `{"class": .., "desc": ..}`.
    pub fn to_value(&self) -> Value {
        serde_json::json!({"class": self.class.as_str(), "desc": self.desc})
    }

    fn from_value(value: Value) -> Result<QmpError> {
        let Value::Object(mut map) = value else {
            return Err(Error::Protocol(format!(
                "an error reply's \"error\" member is {}, not an object",
                kind(&value)
            )));
        };
        let class = match map.remove("class") {
            Some(Value::String(class)) => ErrorClass::from_name(&class),
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "an error reply's class is {}, not a string",
                    kind(&other)
                )))
            }
            None => return Err(Error::Protocol("an error reply has no class".into())),
        };
        let desc = match map.remove("desc") {
            Some(Value::String(desc)) => desc,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Ok(QmpError { class, desc })
    }
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.desc)
    }
}

impl std::error::Error for QmpError {}

/// A command to send: `{"execute" | "exec-oob": NAME, "arguments": {...}, "id": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The command's name, e.g. `"query-status"`.
    pub command: String,
    /// The arguments; QMP requires a JSON object when present.
    pub arguments: Option<Value>,
    /// The id QEMU copies into the reply; any JSON value.
    pub id: Option<Value>,
    /// `true` sends the command as `exec-oob` (out-of-band), `false` as `execute`.
    pub oob: bool,
}

impl Request {
    /// An in-band request without id.
    pub fn new(command: impl Into<String>, arguments: Option<Value>) -> Request {
        Request {
            command: command.into(),
            arguments,
            id: None,
            oob: false,
        }
    }

    /// The request as a JSON object, exactly as [`Encoder`](crate::Encoder) writes it.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        let key = if self.oob { "exec-oob" } else { "execute" };
        map.insert(key.into(), Value::String(self.command.clone()));
        if let Some(arguments) = &self.arguments {
            map.insert("arguments".into(), arguments.clone());
        }
        if let Some(id) = &self.id {
            map.insert("id".into(), id.clone());
        }
        Value::Object(map)
    }

    /// Reads a request from its JSON form (what a QMP server receives). Useful for peers
    /// written for tests. Unknown keys are ignored.
    pub fn from_value(value: Value) -> Result<Request> {
        let Value::Object(mut map) = value else {
            return Err(Error::Protocol(format!(
                "a request must be a JSON object, not {}",
                kind(&value)
            )));
        };
        let (command, oob) = match (map.remove("execute"), map.remove("exec-oob")) {
            (Some(Value::String(c)), None) => (c, false),
            (None, Some(Value::String(c))) => (c, true),
            (Some(_), Some(_)) => {
                return Err(Error::Protocol(
                    "a request has both \"execute\" and \"exec-oob\"".into(),
                ))
            }
            (None, None) => {
                return Err(Error::Protocol(
                    "a request has neither \"execute\" nor \"exec-oob\"".into(),
                ))
            }
            _ => {
                return Err(Error::Protocol(
                    "a request's command is not a string".into(),
                ))
            }
        };
        Ok(Request {
            command,
            arguments: map.remove("arguments"),
            id: map.remove("id"),
            oob,
        })
    }
}

/// One message received from a QMP server.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The greeting, sent once when a client connects to a QMP monitor.
    Greeting(Greeting),
    /// A successful reply: `{"return": VALUE, "id": ID}`.
    Return {
        /// The request's id, when the request had one.
        id: Option<Value>,
        /// The returned value, any JSON.
        value: Value,
    },
    /// An error reply: `{"error": {"class", "desc"}, "id": ID}`.
    Error {
        /// The request's id; absent when QEMU could not read the request.
        id: Option<Value>,
        /// What QEMU reported.
        error: QmpError,
    },
    /// An asynchronous event.
    Event(Event),
}

impl Message {
    /// Classifies a JSON value received from a QMP server, consuming it (no second parse).
    ///
    /// An object with a `return` member is a reply, one with `error` an error reply, one with
    /// `event` an event, one with `QMP` the greeting; anything else is an
    /// [`Error::Protocol`]. Members a message does not define are ignored.
    pub fn from_value(value: Value) -> Result<Message> {
        let Value::Object(mut map) = value else {
            return Err(Error::Protocol(format!(
                "a QMP message must be a JSON object, not {}",
                kind(&value)
            )));
        };
        if let Some(value) = map.remove("return") {
            return Ok(Message::Return {
                id: map.remove("id"),
                value,
            });
        }
        if let Some(name) = map.remove("event") {
            let Value::String(name) = name else {
                return Err(Error::Protocol(format!(
                    "an event's name is {}, not a string",
                    kind(&name)
                )));
            };
            return Ok(Message::Event(Event {
                name,
                data: map.remove("data").unwrap_or(Value::Null),
                timestamp: Timestamp::from_value(map.remove("timestamp")),
            }));
        }
        if let Some(error) = map.remove("error") {
            return Ok(Message::Error {
                error: QmpError::from_value(error)?,
                id: map.remove("id"),
            });
        }
        if let Some(inner) = map.remove("QMP") {
            return Ok(Message::Greeting(Greeting::from_inner(inner)?));
        }
        let keys: Vec<&str> = map.keys().map(String::as_str).take(8).collect();
        Err(Error::Protocol(format!(
            "a message of unknown shape (keys: {keys:?}): not a greeting, reply or event"
        )))
    }

    /// The message as the JSON object QEMU sends, in QEMU's member order (`{"return": ..,
    /// "id": ..}` but `{"id": .., "error": ..}`).
    pub fn to_value(&self) -> Value {
        match self {
            Message::Greeting(greeting) => greeting.to_value(),
            Message::Return { id, value } => {
                let mut map = Map::new();
                map.insert("return".into(), value.clone());
                if let Some(id) = id {
                    map.insert("id".into(), id.clone());
                }
                Value::Object(map)
            }
            Message::Error { id, error } => {
                let mut map = Map::new();
                if let Some(id) = id {
                    map.insert("id".into(), id.clone());
                }
                map.insert("error".into(), error.to_value());
                Value::Object(map)
            }
            Message::Event(event) => event.to_value(),
        }
    }
}

/// A short name for the JSON type of `value`, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn greeting_from_qemu_7_2() {
        let v = json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
            "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}});
        let Message::Greeting(g) = Message::from_value(v.clone()).unwrap() else {
            panic!("not a greeting")
        };
        assert_eq!(
            g.version,
            Version {
                major: 7,
                minor: 2,
                micro: 0,
                package: "Debian 1:7.2+dfsg-7".into()
            }
        );
        assert!(g.has_capability("oob"));
        assert!(!g.has_capability("x-unknown"));
        assert_eq!(g.to_value(), v);
        assert_eq!(g.version.to_string(), "7.2.0 (Debian 1:7.2+dfsg-7)");
    }

    #[test]
    fn greeting_tolerates_unknown_keys_and_capabilities() {
        let v = json!({"QMP": {"version": {"qemu": {"micro": 1, "minor": 0, "major": 99,
            "nano": 5}, "package": "", "build": "x"}, "capabilities": ["oob", "x-new", 7],
            "future": true}});
        let Message::Greeting(g) = Message::from_value(v).unwrap() else {
            panic!("not a greeting")
        };
        assert_eq!(g.version.major, 99);
        assert_eq!(g.capabilities, vec!["oob".to_string(), "x-new".to_string()]);
    }

    #[test]
    fn greeting_without_version_is_a_protocol_error() {
        let err = Message::from_value(json!({"QMP": {"capabilities": []}})).unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ref m) if m.contains("no version")),
            "{err}"
        );
        let err = Message::from_value(json!({"QMP": {"version": {"qemu": 7}}})).unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ref m) if m.contains("malformed")),
            "{err}"
        );
        let err = Message::from_value(json!({"QMP": 1})).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }

    #[test]
    fn replies_keep_any_value_and_id() {
        for value in [
            json!({}),
            json!([1, 2]),
            json!("text"),
            json!(5),
            json!(null),
        ] {
            for id in [
                None,
                Some(json!(1)),
                Some(json!("a")),
                Some(json!({"x": [1]})),
            ] {
                let mut v = json!({"return": value.clone(), "extra": 1});
                if let Some(id) = &id {
                    v["id"] = id.clone();
                }
                let m = Message::from_value(v).unwrap();
                assert_eq!(
                    m,
                    Message::Return {
                        id: id.clone(),
                        value: value.clone()
                    }
                );
            }
        }
    }

    #[test]
    fn error_classes_known_and_unknown() {
        for (name, class) in [
            ("GenericError", ErrorClass::GenericError),
            ("CommandNotFound", ErrorClass::CommandNotFound),
            ("DeviceNotActive", ErrorClass::DeviceNotActive),
            ("DeviceNotFound", ErrorClass::DeviceNotFound),
            ("KVMMissingCap", ErrorClass::KVMMissingCap),
            ("FutureClass", ErrorClass::Other("FutureClass".into())),
        ] {
            let v = json!({"error": {"class": name, "desc": "d", "data": {}}, "id": 3});
            let m = Message::from_value(v).unwrap();
            let Message::Error { id, error } = m else {
                panic!("not an error")
            };
            assert_eq!(id, Some(json!(3)));
            assert_eq!(error.class, class);
            assert_eq!(error.class.as_str(), name);
            assert_eq!(error.to_string(), format!("{name}: d"));
            let round: ErrorClass = serde_json::from_value(json!(name)).unwrap();
            assert_eq!(round, class);
            assert_eq!(serde_json::to_value(&class).unwrap(), json!(name));
        }
    }

    #[test]
    fn malformed_error_replies() {
        let err = Message::from_value(json!({"error": "oops"})).unwrap_err();
        assert!(matches!(err, Error::Protocol(ref m) if m.contains("not an object")));
        let err = Message::from_value(json!({"error": {"desc": "x"}})).unwrap_err();
        assert!(matches!(err, Error::Protocol(ref m) if m.contains("no class")));
        let err = Message::from_value(json!({"error": {"class": 1}})).unwrap_err();
        assert!(matches!(err, Error::Protocol(ref m) if m.contains("not a string")));
        let m = Message::from_value(json!({"error": {"class": "GenericError"}})).unwrap();
        assert!(matches!(m, Message::Error { error, .. } if error.desc.is_empty()));
    }

    #[test]
    fn events_known_unknown_and_lenient() {
        let v = json!({"event": "X_FUTURE_EVENT", "data": {"a": [1, {"b": null}]},
            "timestamp": {"seconds": 1700000000, "microseconds": 123456}, "new-key": 1});
        let Message::Event(e) = Message::from_value(v).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.name, "X_FUTURE_EVENT");
        assert_eq!(e.data, json!({"a": [1, {"b": null}]}));
        assert_eq!(
            e.timestamp,
            Timestamp {
                seconds: 1700000000,
                microseconds: 123456
            }
        );
        assert_eq!(
            e.to_value(),
            json!({"event": "X_FUTURE_EVENT", "data": {"a": [1, {"b": null}]},
            "timestamp": {"seconds": 1700000000, "microseconds": 123456}})
        );

        let Message::Event(e) = Message::from_value(json!({"event": "STOP"})).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.data, Value::Null);
        assert_eq!(e.timestamp, Timestamp::UNKNOWN);
        assert_eq!(
            e.to_value(),
            json!({"event": "STOP", "timestamp": {"seconds": -1, "microseconds": -1}})
        );

        let err = Message::from_value(json!({"event": 5})).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)));
    }

    #[test]
    fn unknown_shapes_are_protocol_errors() {
        for v in [
            json!({"hello": 1}),
            json!([1]),
            json!(3),
            json!("x"),
            json!(null),
        ] {
            let err = Message::from_value(v.clone()).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{v}: {err}");
        }
    }

    #[test]
    fn message_to_value_round_trips() {
        let messages = [
            json!({"return": {"status": "running"}, "id": 1}),
            json!({"return": []}),
            json!({"error": {"class": "GenericError", "desc": "bad"}, "id": "x"}),
            json!({"error": {"class": "NewClass", "desc": "bad"}}),
            json!({"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}),
        ];
        for v in messages {
            assert_eq!(Message::from_value(v.clone()).unwrap().to_value(), v);
        }
    }

    #[test]
    fn requests_round_trip() {
        let r = Request {
            command: "migrate-pause".into(),
            arguments: None,
            id: Some(json!(42)),
            oob: true,
        };
        assert_eq!(r.to_value(), json!({"exec-oob": "migrate-pause", "id": 42}));
        assert_eq!(Request::from_value(r.to_value()).unwrap(), r);
        let r = Request::new("device_del", Some(json!({"id": "n1"})));
        assert_eq!(
            r.to_value(),
            json!({"execute": "device_del", "arguments": {"id": "n1"}})
        );
        assert_eq!(Request::from_value(r.to_value()).unwrap(), r);
        assert!(Request::from_value(json!({"execute": 1})).is_err());
        assert!(Request::from_value(json!({"execute": "a", "exec-oob": "b"})).is_err());
        assert!(Request::from_value(json!({"id": 1})).is_err());
        assert!(Request::from_value(json!([])).is_err());
    }
}
