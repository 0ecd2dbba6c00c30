//! The intermediate form every piece renders into, its validation and its text.
//!
//! A piece (disk, NIC, chardev, ...) turns into one or more [`Opt`]s: a flag and an optional
//! value, plus the ids it defines and the ids it refers to. The command line then validates all
//! of them together (keys, NUL bytes, UTF-8 for JSON, id syntax, duplicates, dangling
//! references, backends used twice) and only then writes the argv.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::escape::{escape_value, id_problem, is_qapi_name};
use crate::{Error, IdKind, PropValue, Props, VirtioTransport};

/// How lists are written in an option's non-JSON form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grammar {
    /// QemuOpts with the options visitor (`-netdev`): a list repeats its key.
    QemuOpts,
    /// keyval (`-blockdev`, `-object`, `-machine`): a list is `key.0=..,key.1=..`.
    Keyval,
}

/// What the pieces need to know about the command line they are rendered into.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env {
    /// JSON syntax for the options that accept it.
    pub json: bool,
    /// How virtio devices are attached.
    pub transport: VirtioTransport,
}

/// A value written as one argv element.
#[derive(Debug, Clone)]
pub(crate) enum OptValue {
    /// Passed as it is (the option does no parsing, for example `-kernel PATH`).
    Literal { field: String, value: OsString },
    /// A property list.
    Opts(Opts),
}

/// A property list with an optional implied first key.
#[derive(Debug, Clone)]
pub(crate) struct Opts {
    /// The implied key and its value (`-device virtio-blk-pci` is `driver=virtio-blk-pci`).
    pub implied: Option<(&'static str, OsString)>,
    /// The properties.
    pub props: Props,
    /// How lists are written in non-JSON form.
    pub grammar: Grammar,
    /// Whether the option accepts JSON syntax.
    pub json: bool,
}

impl Opts {
    pub fn new(grammar: Grammar, json: bool) -> Opts {
        Opts {
            implied: None,
            props: Props::new(),
            grammar,
            json,
        }
    }
    pub fn implied(mut self, key: &'static str, value: impl Into<OsString>) -> Opts {
        self.implied = Some((key, value.into()));
        self
    }
    pub fn props(mut self, props: Props) -> Opts {
        self.props = props;
        self
    }
}

/// An id an option defines.
#[derive(Debug, Clone)]
pub(crate) struct Define {
    pub kind: IdKind,
    pub id: String,
    /// The field holding it, for messages (`id`, `node-name`).
    pub field: &'static str,
    /// Whether several frontends may use it (a chardev with `mux=on`).
    pub shareable: bool,
}

/// A reference from an option to an id.
#[derive(Debug, Clone)]
pub(crate) struct Ref {
    pub kind: IdKind,
    pub id: String,
    /// The field holding it, for messages (`drive`, `bus`, `chardev`).
    pub field: String,
    /// Whether the reference makes the option the (only) frontend of a backend.
    pub exclusive: bool,
}

/// One option: a flag, its value, and the ids it defines and uses.
#[derive(Debug, Clone)]
pub(crate) struct Opt {
    pub flag: &'static str,
    pub value: Option<OptValue>,
    /// How the option is named in messages.
    pub what: String,
    pub defines: Vec<Define>,
    pub refs: Vec<Ref>,
}

impl Opt {
    pub fn flag(flag: &'static str, what: impl Into<String>) -> Opt {
        Opt {
            flag,
            value: None,
            what: what.into(),
            defines: Vec::new(),
            refs: Vec::new(),
        }
    }
    pub fn literal(
        flag: &'static str,
        what: impl Into<String>,
        field: impl Into<String>,
        value: impl Into<OsString>,
    ) -> Opt {
        let mut o = Opt::flag(flag, what);
        o.value = Some(OptValue::Literal {
            field: field.into(),
            value: value.into(),
        });
        o
    }
    pub fn opts(flag: &'static str, what: impl Into<String>, opts: Opts) -> Opt {
        let mut o = Opt::flag(flag, what);
        o.value = Some(OptValue::Opts(opts));
        o
    }
    pub fn define(mut self, kind: IdKind, id: impl Into<String>, field: &'static str) -> Opt {
        self.defines.push(Define {
            kind,
            id: id.into(),
            field,
            shareable: false,
        });
        self
    }
    pub fn shareable_define(mut self, kind: IdKind, id: impl Into<String>) -> Opt {
        self.defines.push(Define {
            kind,
            id: id.into(),
            field: "id",
            shareable: true,
        });
        self
    }
    pub fn uses(mut self, kind: IdKind, id: impl Into<String>, field: impl Into<String>) -> Opt {
        self.refs.push(Ref {
            kind,
            id: id.into(),
            field: field.into(),
            exclusive: true,
        });
        self
    }
    pub fn refers(mut self, kind: IdKind, id: impl Into<String>, field: impl Into<String>) -> Opt {
        self.refs.push(Ref {
            kind,
            id: id.into(),
            field: field.into(),
            exclusive: false,
        });
        self
    }
}

/// Checks the values of one option: NUL bytes, keys, UTF-8 for JSON.
pub(crate) fn check_values(opt: &Opt, json: bool, errors: &mut Vec<Error>) {
    match &opt.value {
        Some(OptValue::Literal { field, value }) if value.as_bytes().contains(&0) => {
            errors.push(Error::NulByte {
                what: opt.what.clone(),
                field: field.clone(),
            });
        }
        None | Some(OptValue::Literal { .. }) => {}
        Some(OptValue::Opts(opts)) => {
            let json = json && opts.json;
            if let Some((key, value)) = &opts.implied {
                check_str(&opt.what, key, value, json, errors);
            }
            check_props(&opt.what, "", &opts.props, json, errors);
        }
    }
}

fn check_str(what: &str, field: &str, value: &OsStr, json: bool, errors: &mut Vec<Error>) {
    if value.as_bytes().contains(&0) {
        errors.push(Error::NulByte {
            what: what.to_string(),
            field: field.to_string(),
        });
    } else if json && value.to_str().is_none() {
        errors.push(Error::NotUtf8 {
            what: what.to_string(),
            field: field.to_string(),
        });
    }
}

fn check_props(what: &str, prefix: &str, props: &Props, json: bool, errors: &mut Vec<Error>) {
    for (key, value) in props.iter() {
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        if !is_qapi_name(key) {
            errors.push(Error::InvalidKey {
                what: what.to_string(),
                key: path.clone(),
            });
            continue;
        }
        check_value(what, &path, value, json, errors);
    }
}

fn check_value(what: &str, path: &str, value: &PropValue, json: bool, errors: &mut Vec<Error>) {
    match value {
        PropValue::Str(s) => check_str(what, path, s, json, errors),
        PropValue::Map(m) => check_props(what, path, m, json, errors),
        PropValue::List(l) => {
            for (i, v) in l.iter().enumerate() {
                check_value(what, &format!("{path}.{i}"), v, json, errors);
            }
        }
        PropValue::Int(_) | PropValue::UInt(_) | PropValue::Bool(_) => {}
    }
}

/// Whether an implied value can be written bare: QEMU takes the first item as the implied key's
/// value only when no `=` comes before the first `,`, and `help`/`?` would ask for help.
fn bare_implied_ok(value: &OsStr) -> bool {
    let b = value.as_bytes();
    !b.is_empty() && !b.contains(&b'=') && !b.contains(&b',') && b != b"help" && b != b"?"
}

fn push_kv(out: &mut Vec<u8>, key: &str, value: &PropValue, grammar: Grammar) {
    match value {
        PropValue::Map(m) => {
            for (k, v) in m.iter() {
                push_kv(out, &format!("{key}.{k}"), v, grammar);
            }
        }
        PropValue::List(l) => {
            for (i, v) in l.iter().enumerate() {
                match grammar {
                    Grammar::QemuOpts => push_kv(out, key, v, grammar),
                    Grammar::Keyval => push_kv(out, &format!("{key}.{i}"), v, grammar),
                }
            }
        }
        scalar => {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            match scalar {
                PropValue::Str(s) => out.extend_from_slice(escape_value(s).as_bytes()),
                PropValue::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
                PropValue::UInt(n) => out.extend_from_slice(n.to_string().as_bytes()),
                PropValue::Bool(b) => out.extend_from_slice(if *b { b"on" } else { b"off" }),
                PropValue::Map(_) | PropValue::List(_) => unreachable!("handled above"),
            }
        }
    }
}

/// The keyval/QemuOpts text of a property list.
pub(crate) fn keyval_text(opts: &Opts) -> OsString {
    let mut out = Vec::new();
    if let Some((key, value)) = &opts.implied {
        if bare_implied_ok(value) {
            out.extend_from_slice(value.as_bytes());
        } else {
            push_kv(&mut out, key, &PropValue::Str(value.clone()), opts.grammar);
        }
    }
    for (k, v) in opts.props.iter() {
        push_kv(&mut out, k, v, opts.grammar);
    }
    OsString::from_vec(out)
}

fn json_value(value: &PropValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        // check_values has verified UTF-8 before rendering.
        PropValue::Str(s) => Value::String(s.to_string_lossy().into_owned()),
        PropValue::Int(n) => Value::from(*n),
        PropValue::UInt(n) => Value::from(*n),
        PropValue::Bool(b) => Value::Bool(*b),
        PropValue::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), json_value(v)))
                .collect(),
        ),
        PropValue::List(l) => Value::Array(l.iter().map(json_value).collect()),
    }
}

/// The JSON text of a property list (`{"driver":"virtio-blk-pci",...}`), keys in order.
pub(crate) fn json_text(opts: &Opts) -> OsString {
    // serde_json's Map is sorted unless its `preserve_order` feature is on, so the object is
    // written by hand to keep the implied key first and the rest in insertion order.
    let mut out = String::from("{");
    let mut first = true;
    let mut entry = |k: &str, v: serde_json::Value| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::Value::String(k.to_string()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    };
    if let Some((key, value)) = &opts.implied {
        entry(key, json_value(&PropValue::Str(value.clone())));
    }
    for (k, v) in opts.props.iter() {
        entry(k, json_value(v));
    }
    out.push('}');
    out.into()
}

/// Appends the argv elements of one option.
pub(crate) fn push_args(opt: &Opt, json: bool, args: &mut Vec<OsString>) {
    args.push(opt.flag.into());
    match &opt.value {
        None => {}
        Some(OptValue::Literal { value, .. }) => args.push(value.clone()),
        Some(OptValue::Opts(opts)) => {
            if json && opts.json {
                args.push(json_text(opts));
            } else {
                args.push(keyval_text(opts));
            }
        }
    }
}

/// Whether a bus name is provided by the board `machine` itself (without any `-device`).
pub(crate) fn machine_provides_bus(machine: Option<&str>, bus: &str) -> bool {
    // QEMU's default machine on x86 is "pc" (i440fx).
    let machine = machine.unwrap_or("pc");
    let indexed = |prefix: &str, max: u32| {
        bus.strip_prefix(prefix)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < max)
    };
    if machine == "q35" || machine.starts_with("pc-q35") {
        bus == "pcie.0" || indexed("ide.", 6)
    } else if machine == "pc" || machine.starts_with("pc-i440fx") || machine.starts_with("pc-1.") {
        bus == "pci.0" || indexed("ide.", 2)
    } else if machine == "virt" || machine.starts_with("virt-") {
        bus == "pcie.0" || indexed("virtio-mmio-bus.", 32)
    } else if machine == "microvm" {
        indexed("virtio-mmio-bus.", 32)
    } else {
        false
    }
}

/// Validates ids and references across all options.
pub(crate) fn check_graph(
    opts: &[Opt],
    machine: Option<&str>,
    external: &[(IdKind, String)],
    errors: &mut Vec<Error>,
) {
    // (kind, id) -> (what, shareable)
    let mut defined: HashMap<(IdKind, &str), (&str, bool)> = HashMap::new();
    for opt in opts {
        for d in &opt.defines {
            if matches!(d.kind, IdKind::Bus | IdKind::FdSet) {
                // Buses are named by devices; fd set entries are checked below.
            } else if let Some(reason) = id_problem(&d.id) {
                errors.push(Error::InvalidId {
                    what: opt.what.clone(),
                    field: d.field.to_string(),
                    id: d.id.clone(),
                    reason: reason.to_string(),
                });
                continue;
            } else if d.kind == IdKind::Node && d.id.len() > 31 {
                errors.push(Error::InvalidId {
                    what: opt.what.clone(),
                    field: d.field.to_string(),
                    id: d.id.clone(),
                    reason: format!(
                        "block node names are at most 31 bytes, this one is {}",
                        d.id.len()
                    ),
                });
                continue;
            }
            match defined.get(&(d.kind, d.id.as_str())) {
                Some((first, _)) => errors.push(Error::DuplicateId {
                    kind: d.kind,
                    id: d.id.clone(),
                    first: first.to_string(),
                    second: opt.what.clone(),
                }),
                None => {
                    defined.insert((d.kind, d.id.as_str()), (opt.what.as_str(), d.shareable));
                }
            }
        }
    }
    let external: HashSet<(IdKind, &str)> =
        external.iter().map(|(k, s)| (*k, s.as_str())).collect();
    let mut users: HashMap<(IdKind, &str), &str> = HashMap::new();
    for opt in opts {
        for r in &opt.refs {
            let key = (r.kind, r.id.as_str());
            let known = external.contains(&key)
                || defined.contains_key(&key)
                || (r.kind == IdKind::Bus && bus_is_known(&r.id, machine, &defined));
            if !known {
                errors.push(Error::MissingId {
                    kind: r.kind,
                    id: r.id.clone(),
                    what: opt.what.clone(),
                    field: r.field.clone(),
                });
                continue;
            }
            let shareable = defined.get(&key).is_some_and(|(_, s)| *s);
            if r.exclusive && !shareable {
                match users.get(&key) {
                    Some(first) => errors.push(Error::AlreadyInUse {
                        kind: r.kind,
                        id: r.id.clone(),
                        first: first.to_string(),
                        second: opt.what.clone(),
                    }),
                    None => {
                        users.insert(key, opt.what.as_str());
                    }
                }
            }
        }
    }
}

/// A bus is known when the machine provides it, or when it is named after a device id: PCI
/// bridges and root ports name their bus after their id, other controllers `ID.N`.
fn bus_is_known(
    bus: &str,
    machine: Option<&str>,
    defined: &HashMap<(IdKind, &str), (&str, bool)>,
) -> bool {
    if machine_provides_bus(machine, bus) || defined.contains_key(&(IdKind::Device, bus)) {
        return true;
    }
    match bus.rsplit_once('.') {
        Some((dev, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            defined.contains_key(&(IdKind::Device, dev))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(opts: &Opts) -> String {
        keyval_text(opts).into_string().unwrap()
    }

    #[test]
    fn implied_values_are_bare_only_when_unambiguous() {
        let o = |v: &str| Opts::new(Grammar::QemuOpts, true).implied("driver", v);
        assert_eq!(text(&o("virtio-blk-pci")), "virtio-blk-pci");
        assert_eq!(text(&o("a=b")), "driver=a=b");
        assert_eq!(text(&o("a,b")), "driver=a,,b");
        assert_eq!(text(&o("help")), "driver=help");
        assert_eq!(text(&o("")), "driver=");
    }

    #[test]
    fn nested_and_list_values() {
        let props = Props::new()
            .with(
                "file",
                Props::new().with("filename", "/x,y").with("locking", false),
            )
            .with("l", vec![PropValue::from("a,b"), PropValue::from(2u8)]);
        let kv = Opts::new(Grammar::Keyval, true).props(props.clone());
        assert_eq!(
            text(&kv),
            "file.filename=/x,,y,file.locking=off,l.0=a,,b,l.1=2"
        );
        let qo = Opts::new(Grammar::QemuOpts, true).props(props);
        assert_eq!(text(&qo), "file.filename=/x,,y,file.locking=off,l=a,,b,l=2");
        assert_eq!(
            json_text(&qo.implied("driver", "d")),
            r#"{"driver":"d","file":{"filename":"/x,y","locking":false},"l":["a,b",2]}"#
        );
    }

    #[test]
    fn value_checks_name_the_field() {
        let opt = Opt::opts(
            "-device",
            "dev",
            Opts::new(Grammar::QemuOpts, true).props(
                Props::new()
                    .with("ok", "a\0b")
                    .with("bad key", 1u8)
                    .with("m", Props::new().with("x", OsString::from_vec(vec![0xff]))),
            ),
        );
        let mut errors = Vec::new();
        check_values(&opt, true, &mut errors);
        assert_eq!(
            errors,
            vec![
                Error::NulByte {
                    what: "dev".into(),
                    field: "ok".into()
                },
                Error::InvalidKey {
                    what: "dev".into(),
                    key: "bad key".into()
                },
                Error::NotUtf8 {
                    what: "dev".into(),
                    field: "m.x".into()
                },
            ]
        );
        // Not UTF-8 is fine in keyval syntax.
        let mut errors = Vec::new();
        check_values(&opt, false, &mut errors);
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn machine_buses() {
        assert!(machine_provides_bus(Some("q35"), "pcie.0"));
        assert!(machine_provides_bus(Some("pc-q35-7.2"), "ide.5"));
        assert!(!machine_provides_bus(Some("q35"), "ide.6"));
        assert!(!machine_provides_bus(Some("q35"), "pci.0"));
        assert!(machine_provides_bus(None, "pci.0"));
        assert!(machine_provides_bus(Some("virt"), "virtio-mmio-bus.31"));
        assert!(!machine_provides_bus(Some("virt"), "virtio-mmio-bus.x"));
        assert!(!machine_provides_bus(Some("unknown"), "pcie.0"));
    }
}
