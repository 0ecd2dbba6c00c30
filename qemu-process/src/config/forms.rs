//! Serde forms of [`MachineConfig`](super::MachineConfig)'s fields that JSON has no type for:
//! durations as milliseconds, OS strings as (UTF-8) strings, the environment as a map.

/// A `Duration` as a number of milliseconds.
pub(super) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A list of `OsString`s as strings (the JSON form needs them to be UTF-8).
pub(super) mod os_strings {
    use serde::ser::{Error as _, SerializeSeq};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::ffi::OsString;

    pub(crate) fn serialize<S: Serializer>(v: &[OsString], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            let text = item
                .to_str()
                .ok_or_else(|| S::Error::custom(format!("{item:?} is not UTF-8")))?;
            seq.serialize_element(text)?;
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OsString>, D::Error> {
        Vec::<String>::deserialize(d).map(|v| v.into_iter().map(OsString::from).collect())
    }
}

/// Environment changes as a map: `{"VAR": "value"}` sets, `{"VAR": null}` removes.
pub(super) mod env {
    use serde::ser::{Error as _, SerializeMap};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::ffi::OsString;

    type Changes = Vec<(OsString, Option<OsString>)>;

    pub(crate) fn serialize<S: Serializer>(v: &Changes, s: S) -> Result<S::Ok, S::Error> {
        let text = |o: &OsString| {
            o.to_str()
                .map(str::to_owned)
                .ok_or_else(|| S::Error::custom(format!("{o:?} is not UTF-8")))
        };
        let mut map = s.serialize_map(Some(v.len()))?;
        for (k, val) in v {
            map.serialize_entry(&text(k)?, &val.as_ref().map(text).transpose()?)?;
        }
        map.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Changes, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        map.into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::Null => Ok((OsString::from(k), None)),
                serde_json::Value::String(s) => Ok((OsString::from(k), Some(OsString::from(s)))),
                other => Err(serde::de::Error::custom(format!(
                    "env {k:?}: expected a string or null, got {other}"
                ))),
            })
            .collect()
    }
}
