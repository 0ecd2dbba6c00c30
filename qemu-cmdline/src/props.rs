//! Typed property values, as found in `-device`, `-object`, `-blockdev` and friends.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Size;

/// One property value. The type matters for JSON syntax, where QEMU checks it (`"bootindex": 1`
/// and not `"1"`); in keyval syntax every value is written as text (booleans as `on`/`off`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropValue {
    /// A string; may hold a path that is not UTF-8 (keyval syntax only).
    Str(OsString),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (sizes, counts).
    UInt(u64),
    /// A boolean: `on`/`off` in keyval syntax, `true`/`false` in JSON.
    Bool(bool),
    /// A nested object: `key.sub=value` in keyval syntax.
    Map(Props),
    /// A list: repeated `key=value` (QemuOpts) or `key.0=value` (keyval).
    List(Vec<PropValue>),
}

impl From<&str> for PropValue {
    fn from(v: &str) -> Self {
        PropValue::Str(v.into())
    }
}
impl From<String> for PropValue {
    fn from(v: String) -> Self {
        PropValue::Str(v.into())
    }
}
impl From<&String> for PropValue {
    fn from(v: &String) -> Self {
        PropValue::Str(v.into())
    }
}
impl From<&OsStr> for PropValue {
    fn from(v: &OsStr) -> Self {
        PropValue::Str(v.into())
    }
}
impl From<OsString> for PropValue {
    fn from(v: OsString) -> Self {
        PropValue::Str(v)
    }
}
impl From<&Path> for PropValue {
    fn from(v: &Path) -> Self {
        PropValue::Str(v.as_os_str().into())
    }
}
impl From<PathBuf> for PropValue {
    fn from(v: PathBuf) -> Self {
        PropValue::Str(v.into_os_string())
    }
}
impl From<bool> for PropValue {
    fn from(v: bool) -> Self {
        PropValue::Bool(v)
    }
}
impl From<Size> for PropValue {
    fn from(v: Size) -> Self {
        PropValue::UInt(v.bytes())
    }
}
impl From<Props> for PropValue {
    fn from(v: Props) -> Self {
        PropValue::Map(v)
    }
}
impl From<Vec<PropValue>> for PropValue {
    fn from(v: Vec<PropValue>) -> Self {
        PropValue::List(v)
    }
}
macro_rules! from_unsigned {
    ($($t:ty),*) => {$(
        impl From<$t> for PropValue {
            fn from(v: $t) -> Self {
                PropValue::UInt(v as u64)
            }
        }
    )*};
}
macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for PropValue {
            fn from(v: $t) -> Self {
                PropValue::Int(v as i64)
            }
        }
    )*};
}
from_unsigned!(u8, u16, u32, u64, usize);
from_signed!(i8, i16, i32, i64);

impl PropValue {
    /// The string, when this is a [`PropValue::Str`].
    pub fn as_os_str(&self) -> Option<&OsStr> {
        match self {
            PropValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// An ordered set of properties. Setting a key that is already present replaces its value in
/// place, so the argv stays deterministic and the last setting wins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Props(Vec<(String, PropValue)>);

impl Props {
    /// No properties.
    pub fn new() -> Props {
        Props(Vec::new())
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<PropValue>) -> &mut Props {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
        self
    }

    /// Builder form of [`Props::set`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Props {
        self.set(key, value);
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&PropValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<PropValue> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    /// The properties in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PropValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Appends all of `other`, each replacing an earlier value of the same key.
    pub fn extend(&mut self, other: &Props) {
        for (k, v) in other.iter() {
            self.set(k, v.clone());
        }
    }
}

impl<K: Into<String>, V: Into<PropValue>> FromIterator<(K, V)> for Props {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut p = Props::new();
        for (k, v) in iter {
            p.set(k, v);
        }
        p
    }
}

impl Serialize for PropValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PropValue::Str(v) => match v.to_str() {
                Some(v) => s.serialize_str(v),
                None => Err(serde::ser::Error::custom(
                    "a property value is not valid UTF-8 and cannot be written as JSON",
                )),
            },
            PropValue::Int(v) => s.serialize_i64(*v),
            PropValue::UInt(v) => s.serialize_u64(*v),
            PropValue::Bool(v) => s.serialize_bool(*v),
            PropValue::Map(m) => m.serialize(s),
            PropValue::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
        }
    }
}

impl Serialize for Props {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct PropValueVisitor;

impl<'de> Visitor<'de> for PropValueVisitor {
    type Value = PropValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an integer, a boolean, an object or a list")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<PropValue, E> {
        Ok(PropValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PropValue, E> {
        Ok(if v >= 0 {
            PropValue::UInt(v as u64)
        } else {
            PropValue::Int(v)
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PropValue, E> {
        Ok(PropValue::UInt(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<PropValue, E> {
        Err(E::custom(format!(
            "property value {v} is a fraction; QEMU properties take integers"
        )))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<PropValue, E> {
        Ok(PropValue::Str(v.into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PropValue, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(PropValue::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PropValue, A::Error> {
        PropsVisitor.visit_map(map).map(PropValue::Map)
    }
}

impl<'de> Deserialize<'de> for PropValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PropValue, D::Error> {
        d.deserialize_any(PropValueVisitor)
    }
}

struct PropsVisitor;

impl<'de> Visitor<'de> for PropsVisitor {
    type Value = Props;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of properties")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props, A::Error> {
        let mut out = Props::new();
        while let Some((k, v)) = map.next_entry::<String, PropValue>()? {
            if out.get(&k).is_some() {
                return Err(de::Error::custom(format!("duplicate property {k:?}")));
            }
            out.0.push((k, v));
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for Props {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Props, D::Error> {
        d.deserialize_map(PropsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_in_place() {
        let mut p = Props::new();
        p.set("a", 1u32).set("b", "x").set("a", true);
        let keys: Vec<_> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(p.get("a"), Some(&PropValue::Bool(true)));
        assert_eq!(p.remove("b"), Some(PropValue::from("x")));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn json_round_trip_keeps_order_and_types() {
        let p = Props::new()
            .with("z", "s")
            .with("a", -3i32)
            .with("m", Props::new().with("x", false))
            .with("l", vec![PropValue::from(1u8), PropValue::from("t")]);
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(text, r#"{"z":"s","a":-3,"m":{"x":false},"l":[1,"t"]}"#);
        let back: Props = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn json_rejects_fractions_and_duplicates() {
        let e = serde_json::from_str::<Props>(r#"{"a":1.5}"#).unwrap_err();
        assert!(e.to_string().contains("fraction"), "{e}");
        let e = serde_json::from_str::<Props>(r#"{"a":1,"a":2}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate property \"a\""), "{e}");
    }
}
