//! Event matching with the semantics of QEMU's `QEMUMachine.event_match`.

use serde_json::{Number, Value};

use crate::wire::Event;

/// Whether `event` matches `pattern`, with the semantics of QEMU's
/// `QEMUMachine.event_match` (python/qemu/machine/machine.py).
///
/// The pattern is a JSON sub-tree of the event:
///
/// - `null` in the pattern matches anything (so a key can be required without constraining
///   its value; as in QEMU, a `null` in the event cannot be asked for explicitly);
/// - an object matches when every key of the pattern is present in the event and its value
///   matches recursively; extra keys in the event are ignored. As in QEMU, an empty object
///   pattern matches any value, and a non-empty one matches only an object;
/// - any other value (string, number, boolean, array) matches by equality. Numbers compare by
///   value, as Python does (`1` equals `1.0`).
///
/// ```
/// use qmp_proto::event_match;
/// use serde_json::json;
///
/// let event = json!({"event": "BLOCK_JOB_COMPLETED", "data": {"device": "job0", "len": 4096}});
/// assert!(event_match(&event, &json!({"data": {"device": "job0"}})));
/// assert!(event_match(&event, &json!({"data": {"len": null}})));
/// assert!(!event_match(&event, &json!({"data": {"device": "job1"}})));
/// ```
pub fn event_match(event: &Value, pattern: &Value) -> bool {
    match pattern {
        Value::Null => true,
        Value::Object(wanted) => {
            if wanted.is_empty() {
                return true;
            }
            let Value::Object(have) = event else {
                return false;
            };
            wanted.iter().all(|(key, sub)| match have.get(key) {
                Some(value) => event_match(value, sub),
                None => false,
            })
        }
        _ => json_equal(event, pattern),
    }
}

/// The events a caller waits for: any of several names, each with an optional pattern
/// (see [`Event::matches`]). An empty filter matches nothing.
///
/// ```
/// use qmp_proto::{Event, EventFilter, Timestamp};
/// use serde_json::json;
///
/// let filter = EventFilter::new()
///     .or("SHUTDOWN", None)
///     .or("DEVICE_DELETED", Some(json!({"data": {"device": "nic0"}})));
/// let event = Event {
///     name: "DEVICE_DELETED".into(),
///     data: json!({"device": "nic0", "path": "/machine/peripheral/nic0"}),
///     timestamp: Timestamp::UNKNOWN,
/// };
/// assert!(filter.matches(&event));
/// assert_eq!(filter.names().collect::<Vec<_>>(), ["SHUTDOWN", "DEVICE_DELETED"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Each a name (`None`: any name) and an optional pattern.
    wanted: Vec<(Option<String>, Option<Value>)>,
}

impl EventFilter {
    /// A filter that matches nothing yet.
    pub fn new() -> Self {
        EventFilter::default()
    }

    /// This filter, also matching events called `name` that match `pattern` (any event of
    /// that name when `None`).
    pub fn or(mut self, name: impl Into<String>, pattern: Option<Value>) -> Self {
        self.wanted.push((Some(name.into()), pattern));
        self
    }

    /// This filter, also matching events of any name that match `pattern` (any event at all
    /// when `None`).
    pub fn or_any(mut self, pattern: Option<Value>) -> Self {
        self.wanted.push((None, pattern));
        self
    }

    /// Whether `event` matches any of the wanted names and patterns.
    pub fn matches(&self, event: &Event) -> bool {
        self.wanted.iter().any(|(name, pattern)| {
            event.matches(name.as_deref().unwrap_or(&event.name), pattern.as_ref())
        })
    }

    /// The wanted names, in the order they were added (for messages; `of any name` for an
    /// entry that takes any).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.wanted
            .iter()
            .map(|(name, _)| name.as_deref().unwrap_or("of any name"))
    }
}

impl<'a> FromIterator<(&'a str, Option<&'a Value>)> for EventFilter {
    fn from_iter<I: IntoIterator<Item = (&'a str, Option<&'a Value>)>>(iter: I) -> Self {
        EventFilter {
            wanted: iter
                .into_iter()
                .map(|(name, pattern)| (Some(name.to_owned()), pattern.cloned()))
                .collect(),
        }
    }
}

/// [`event_match`] against `event.to_value()`, without building that value.
pub(crate) fn event_match_parts(event: &Event, pattern: &Value) -> bool {
    let wanted = match pattern {
        Value::Object(wanted) => wanted,
        // Neither null nor an object: compared by equality with the whole event object.
        _ => return event_match(&event.to_value(), pattern),
    };
    wanted.iter().all(|(key, sub)| match key.as_str() {
        "event" => match sub {
            Value::Null => true,
            Value::String(name) => *name == event.name,
            Value::Object(map) => map.is_empty(),
            _ => false,
        },
        "data" => !event.data.is_null() && event_match(&event.data, sub),
        "timestamp" => event_match(
            &serde_json::json!({
                "seconds": event.timestamp.seconds,
                "microseconds": event.timestamp.microseconds,
            }),
            sub,
        ),
        _ => false,
    })
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_equal(x, y),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(key, x)| ys.get(key).is_some_and(|y| json_equal(x, y)))
        }
        _ => a == b,
    }
}

fn number_equal(x: &Number, y: &Number) -> bool {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        return x == y;
    }
    if x.is_f64() || y.is_f64() {
        return x.as_f64() == y.as_f64();
    }
    // One is a negative i64, the other a u64 above i64::MAX.
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Timestamp;
    use serde_json::json;

    /// The examples of `QEMUMachine.event_match`'s docstring, pattern on the left.
    #[test]
    fn qemu_docstring_examples() {
        // - None matches any object.
        assert!(event_match(&json!({"foo": {"bar": 1}}), &Value::Null));
        assert!(event_match(&json!({}), &Value::Null));
        // - {"foo": None} matches {"foo": {"bar": 1}}
        assert!(event_match(
            &json!({"foo": {"bar": 1}}),
            &json!({"foo": null})
        ));
        // - {"foo": None} matches {"foo": 5}
        assert!(event_match(&json!({"foo": 5}), &json!({"foo": null})));
        // - {"foo": {"abc": None}} does not match {"foo": {"bar": 1}}
        assert!(!event_match(
            &json!({"foo": {"bar": 1}}),
            &json!({"foo": {"abc": null}})
        ));
        // - {"foo": {"rab": 2}} matches {"foo": {"bar": 1, "rab": 2}}
        assert!(event_match(
            &json!({"foo": {"bar": 1, "rab": 2}}),
            &json!({"foo": {"rab": 2}})
        ));
    }

    #[test]
    fn missing_keys_and_mismatches() {
        let event =
            json!({"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}});
        assert!(event_match(&event, &json!({"event": "SHUTDOWN"})));
        assert!(event_match(
            &event,
            &json!({"data": {"reason": "host-qmp-quit", "guest": false}})
        ));
        assert!(!event_match(&event, &json!({"data": {"guest": true}})));
        assert!(!event_match(&event, &json!({"data": {"signal": null}})));
        assert!(!event_match(&event, &json!({"other": null})));
        // A non-empty object pattern needs an object.
        assert!(!event_match(&json!({"foo": 5}), &json!({"foo": {"a": 1}})));
        assert!(!event_match(
            &json!({"foo": "abc"}),
            &json!({"foo": {"a": null}})
        ));
        // An empty object pattern matches anything, as in QEMU.
        assert!(event_match(&json!({"foo": 5}), &json!({"foo": {}})));
        // Other values match by equality.
        assert!(event_match(&json!({"a": [1, 2]}), &json!({"a": [1, 2]})));
        assert!(!event_match(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(!event_match(&json!({"a": [1, 2]}), &json!({"a": [2, 1]})));
        assert!(!event_match(&json!({"a": "1"}), &json!({"a": 1})));
        assert!(!event_match(&json!({"a": true}), &json!({"a": 1})));
        assert!(event_match(&json!({"a": 5}), &json!({"a": 5})));
        assert!(event_match(&json!("x"), &json!("x")));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(event_match(&json!({"n": 1}), &json!({"n": 1.0})));
        assert!(event_match(&json!({"n": -1}), &json!({"n": -1.0})));
        assert!(!event_match(&json!({"n": 1}), &json!({"n": 1.5})));
        assert!(event_match(
            &json!({"n": u64::MAX}),
            &json!({"n": u64::MAX})
        ));
        assert!(!event_match(&json!({"n": u64::MAX}), &json!({"n": -1})));
        assert!(event_match(
            &json!({"n": [1, {"m": 2}]}),
            &json!({"n": [1.0, {"m": 2.0}]})
        ));
    }

    #[test]
    fn a_filter_matches_any_of_its_names_and_patterns() {
        let event = |name: &str, data: Value| Event {
            name: name.into(),
            data,
            timestamp: Timestamp::UNKNOWN,
        };
        assert!(!EventFilter::new().matches(&event("STOP", Value::Null)));
        let pattern = json!({"data": {"device": "nic0"}});
        let filter: EventFilter = [("STOP", None), ("DEVICE_DELETED", Some(&pattern))]
            .into_iter()
            .collect();
        assert!(filter.matches(&event("STOP", json!({"anything": 1}))));
        assert!(filter.matches(&event("DEVICE_DELETED", json!({"device": "nic0"}))));
        assert!(!filter.matches(&event("DEVICE_DELETED", json!({"device": "nic1"}))));
        assert!(!filter.matches(&event("RESUME", Value::Null)));
        assert_eq!(
            filter,
            EventFilter::new()
                .or("STOP", None)
                .or("DEVICE_DELETED", Some(pattern.clone()))
        );
        assert_eq!(
            filter.names().collect::<Vec<_>>(),
            ["STOP", "DEVICE_DELETED"]
        );
    }

    #[test]
    fn event_matches_agrees_with_to_value() {
        let events = [
            Event {
                name: "STOP".into(),
                data: Value::Null,
                timestamp: Timestamp {
                    seconds: 10,
                    microseconds: 20,
                },
            },
            Event {
                name: "DEVICE_DELETED".into(),
                data: json!({"device": "nic0", "path": "/machine/peripheral/nic0"}),
                timestamp: Timestamp::UNKNOWN,
            },
        ];
        let patterns = [
            json!(null),
            json!({}),
            json!({"event": "STOP"}),
            json!({"event": "DEVICE_DELETED"}),
            json!({"event": null}),
            json!({"event": {}}),
            json!({"event": {"x": 1}}),
            json!({"data": null}),
            json!({"data": {}}),
            json!({"data": {"device": "nic0"}}),
            json!({"data": {"device": "nic1"}}),
            json!({"data": {"device": null, "path": "/machine/peripheral/nic0"}}),
            json!({"timestamp": {"seconds": 10}}),
            json!({"timestamp": {"seconds": -1, "microseconds": -1}}),
            json!({"timestamp": null}),
            json!({"other": null}),
            json!("STOP"),
            json!([1]),
        ];
        for event in &events {
            for pattern in &patterns {
                let expected = event_match(&event.to_value(), pattern);
                assert_eq!(
                    event.matches(&event.name, Some(pattern)),
                    expected,
                    "{} vs {pattern}",
                    event.name
                );
                assert!(!event.matches("NOPE", Some(pattern)));
            }
            assert!(event.matches(&event.name, None));
        }
    }
}
