//! The machine, accelerator, CPU model, CPU topology and sandbox.

use std::fmt;
use std::str::FromStr;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::render::{Grammar, Opt, Opts};
use crate::{Error, PropValue, Props};

/// The board: `-machine TYPE,key=value,...`.
///
/// ```
/// use qemu_cmdline::Machine;
/// let m = Machine::new("q35").prop("smm", false);
/// assert_eq!(m.machine_type(), "q35");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    machine_type: String,
    props: Props,
}

impl Machine {
    /// A machine of type `machine_type` (`q35`, `virt`, `pc-q35-7.2`, ...).
    pub fn new(machine_type: impl Into<String>) -> Machine {
        Machine {
            machine_type: machine_type.into(),
            props: Props::new(),
        }
    }
    /// Sets a machine property (`smm`, `gic-version`, `accel`, `pflash0`, ...).
    pub fn prop(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Machine {
        self.props.set(key, value);
        self
    }
    /// The machine type.
    pub fn machine_type(&self) -> &str {
        &self.machine_type
    }
    /// The properties.
    pub fn props(&self) -> &Props {
        &self.props
    }
    /// Renders with extra properties (the UEFI pflash nodes).
    pub(crate) fn render(&self, extra: &Props) -> Opt {
        let mut props = self.props.clone();
        props.extend(extra);
        Opt::opts(
            "-machine",
            format!("-machine {}", self.machine_type),
            Opts::new(Grammar::Keyval, false)
                .implied("type", &self.machine_type)
                .props(props),
        )
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MachineRepr {
    #[serde(rename = "type")]
    machine_type: String,
    #[serde(default)]
    props: Props,
}

impl Serialize for Machine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.props.is_empty() {
            s.serialize_str(&self.machine_type)
        } else {
            MachineRepr {
                machine_type: self.machine_type.clone(),
                props: self.props.clone(),
            }
            .serialize(s)
        }
    }
}

/// Implements `Deserialize` for a type that is written either as a plain string (or number)
/// or as an object with a private representation.
macro_rules! string_or_struct {
    ($ty:ty, $repr:ty, $expecting:expr, |$s:ident| $from_str:expr, |$r:ident| $from_repr:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, $s: &str) -> Result<$ty, E> {
                        $from_str
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        let $r = <$repr>::deserialize(MapAccessDeserializer::new(map))?;
                        $from_repr
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

string_or_struct!(
    Machine,
    MachineRepr,
    "a machine type, or an object {\"type\": ..., \"props\": {...}}",
    |s| Ok(Machine::new(s)),
    |r| Ok(Machine {
        machine_type: r.machine_type,
        props: r.props
    })
);

/// An accelerator. Several can be given as a fallback list: QEMU tries them in order and uses
/// the first that initialises (`-accel kvm -accel tcg`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Linux KVM.
    Kvm,
    /// The TCG emulator; works everywhere.
    Tcg,
    /// macOS Hypervisor.framework.
    Hvf,
    /// Windows Hypervisor Platform.
    Whpx,
    /// Xen.
    Xen,
    /// NetBSD NVMM.
    Nvmm,
    /// Any other accelerator name QEMU knows.
    Other(String),
}

impl Accel {
    /// The name QEMU uses.
    pub fn name(&self) -> &str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Hvf => "hvf",
            Accel::Whpx => "whpx",
            Accel::Xen => "xen",
            Accel::Nvmm => "nvmm",
            Accel::Other(s) => s,
        }
    }
    /// Whether the accelerator runs guest code on the host CPU (so `-cpu host`/`max` pass the
    /// host's features through).
    pub fn is_hardware(&self) -> bool {
        !matches!(self, Accel::Tcg | Accel::Other(_))
    }
    pub(crate) fn render(&self) -> Opt {
        Opt::opts(
            "-accel",
            format!("-accel {}", self.name()),
            Opts::new(Grammar::QemuOpts, false).implied("accel", self.name()),
        )
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Accel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Accel, Error> {
        Ok(match s {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            "hvf" => Accel::Hvf,
            "whpx" => Accel::Whpx,
            "xen" => Accel::Xen,
            "nvmm" => Accel::Nvmm,
            other if crate::escape::is_qapi_name(other) => Accel::Other(other.to_string()),
            other => {
                return Err(Error::invalid(
                    "accel",
                    format!("{other:?} is not an accelerator name"),
                ))
            }
        })
    }
}

impl Serialize for Accel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Accel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Accel, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// The CPU model and its features: `-cpu MODEL,feature=on,...`.
///
/// QEMU splits `-cpu` at every comma with no escaping, so a model, feature or value that
/// contains a comma is rejected when the argv is built.
///
/// ```
/// use qemu_cmdline::Cpu;
/// let cpu = Cpu::new("max").enable("vmx").disable("svm").prop("l3-cache", "on");
/// assert_eq!(cpu.model(), "max");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    model: String,
    props: Props,
}

impl Cpu {
    /// A CPU of model `model` (`host`, `max`, `qemu64`, `cortex-a57`, `rv64`, ...).
    pub fn new(model: impl Into<String>) -> Cpu {
        Cpu {
            model: model.into(),
            props: Props::new(),
        }
    }
    /// Turns a feature on (`vmx=on`).
    pub fn enable(self, feature: impl Into<String>) -> Cpu {
        self.prop(feature, true)
    }
    /// Turns a feature off (`svm=off`).
    pub fn disable(self, feature: impl Into<String>) -> Cpu {
        self.prop(feature, false)
    }
    /// Sets a CPU property (`sve=off`, `pmu=on`, `phys-bits=40`).
    pub fn prop(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Cpu {
        self.props.set(key, value);
        self
    }
    /// The model.
    pub fn model(&self) -> &str {
        &self.model
    }
    /// The features and properties.
    pub fn props(&self) -> &Props {
        &self.props
    }

    pub(crate) fn render(&self) -> Result<Opt, Error> {
        let what = format!("-cpu {}", self.model);
        let mut errors = Vec::new();
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !plain(&self.model) {
            errors.push(Error::invalid(
                format!("{what}: model"),
                "a CPU model name has only ASCII letters, digits, '.', '_' and '-'",
            ));
        }
        let mut text = self.model.clone();
        for (key, value) in self.props.iter() {
            let key_ok = plain(key) && key.as_bytes()[0].is_ascii_alphanumeric();
            if !key_ok {
                errors.push(Error::InvalidKey {
                    what: what.clone(),
                    key: key.to_string(),
                });
                continue;
            }
            let value = match value {
                PropValue::Bool(true) => "on".to_string(),
                PropValue::Bool(false) => "off".to_string(),
                PropValue::Int(n) => n.to_string(),
                PropValue::UInt(n) => n.to_string(),
                PropValue::Str(s) => match s.to_str() {
                    Some(s) if !s.contains(',') && !s.contains('\0') => s.to_string(),
                    _ => {
                        errors.push(Error::invalid(
                            format!("{what}: {key}"),
                            "a -cpu value cannot hold a comma, a NUL byte or non-UTF-8 bytes \
                             (QEMU does not unescape -cpu)",
                        ));
                        continue;
                    }
                },
                PropValue::Map(_) | PropValue::List(_) => {
                    errors.push(Error::invalid(
                        format!("{what}: {key}"),
                        "a -cpu property takes a single value",
                    ));
                    continue;
                }
            };
            text.push(',');
            text.push_str(key);
            text.push('=');
            text.push_str(&value);
        }
        Error::collect(errors)?;
        Ok(Opt::literal("-cpu", what, "model", text))
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CpuRepr {
    model: String,
    #[serde(default)]
    props: Props,
}

impl Serialize for Cpu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.props.is_empty() {
            s.serialize_str(&self.model)
        } else {
            CpuRepr {
                model: self.model.clone(),
                props: self.props.clone(),
            }
            .serialize(s)
        }
    }
}

string_or_struct!(
    Cpu,
    CpuRepr,
    "a CPU model, or an object {\"model\": ..., \"props\": {...}}",
    |s| Ok(Cpu::new(s)),
    |r| Ok(Cpu {
        model: r.model,
        props: r.props
    })
);

/// The CPU topology: `-smp cpus=N,sockets=..,cores=..,threads=..,maxcpus=..`. Fields left out
/// are computed by QEMU. Written in JSON as a number (`4`) or an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smp {
    /// The number of CPUs present at start.
    pub cpus: u32,
    /// Sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Dies per socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dies: Option<u32>,
    /// Cores per die.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Threads per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// The maximum number of CPUs, including hot-pluggable ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxcpus: Option<u32>,
}

impl Smp {
    /// `cpus` CPUs, topology left to QEMU.
    pub fn new(cpus: u32) -> Smp {
        Smp {
            cpus,
            sockets: None,
            dies: None,
            cores: None,
            threads: None,
            maxcpus: None,
        }
    }
    /// Sets the number of sockets.
    pub fn sockets(mut self, n: u32) -> Smp {
        self.sockets = Some(n);
        self
    }
    /// Sets the number of dies per socket.
    pub fn dies(mut self, n: u32) -> Smp {
        self.dies = Some(n);
        self
    }
    /// Sets the number of cores per die.
    pub fn cores(mut self, n: u32) -> Smp {
        self.cores = Some(n);
        self
    }
    /// Sets the number of threads per core.
    pub fn threads(mut self, n: u32) -> Smp {
        self.threads = Some(n);
        self
    }
    /// Sets the maximum number of CPUs.
    pub fn maxcpus(mut self, n: u32) -> Smp {
        self.maxcpus = Some(n);
        self
    }

    pub(crate) fn render(&self) -> Result<Opt, Error> {
        let fields = [
            ("sockets", self.sockets),
            ("dies", self.dies),
            ("cores", self.cores),
            ("threads", self.threads),
            ("maxcpus", self.maxcpus),
        ];
        let mut errors = Vec::new();
        if self.cpus == 0 {
            errors.push(Error::invalid("-smp cpus", "must be at least 1"));
        }
        for (name, v) in fields {
            if v == Some(0) {
                errors.push(Error::invalid(format!("-smp {name}"), "must be at least 1"));
            }
        }
        let max = self.maxcpus.unwrap_or(self.cpus);
        if max < self.cpus {
            errors.push(Error::invalid(
                "-smp maxcpus",
                format!("{max} is less than cpus={}", self.cpus),
            ));
        }
        if let (Some(s), Some(c), Some(t)) = (self.sockets, self.cores, self.threads) {
            let product =
                u64::from(s) * u64::from(self.dies.unwrap_or(1)) * u64::from(c) * u64::from(t);
            let ok = match self.maxcpus {
                Some(m) => product == u64::from(m),
                None => product >= u64::from(self.cpus),
            };
            if !ok && errors.is_empty() {
                errors.push(Error::invalid(
                    "-smp",
                    format!(
                        "sockets*dies*cores*threads = {product} does not match {}",
                        match self.maxcpus {
                            Some(m) => format!("maxcpus={m}"),
                            None => format!("cpus={}", self.cpus),
                        }
                    ),
                ));
            }
        }
        Error::collect(errors)?;
        let mut props = Props::new();
        for (name, v) in fields {
            if let Some(v) = v {
                props.set(name, v);
            }
        }
        Ok(Opt::opts(
            "-smp",
            "-smp",
            Opts::new(Grammar::QemuOpts, false)
                .implied("cpus", self.cpus.to_string())
                .props(props),
        ))
    }
}

impl<'de> Deserialize<'de> for SmpOrCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SmpOrCount, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SmpOrCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of CPUs, or an object {\"cpus\": ..., \"sockets\": ...}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SmpOrCount, E> {
                u32::try_from(v)
                    .map(|n| SmpOrCount(Smp::new(n)))
                    .map_err(|_| E::custom(format!("{v} CPUs is too many")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SmpOrCount, A::Error> {
                Smp::deserialize(MapAccessDeserializer::new(map)).map(SmpOrCount)
            }
        }
        d.deserialize_any(V)
    }
}

/// Serde helper: an [`Smp`] written as a plain count when it has no topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SmpOrCount(pub Smp);

impl Serialize for SmpOrCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == Smp::new(self.0.cpus) {
            s.serialize_u32(self.0.cpus)
        } else {
            self.0.serialize(s)
        }
    }
}

/// What the seccomp sandbox does about privilege changes (`elevateprivileges=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Elevate {
    /// Allowed (QEMU's default).
    #[default]
    Allow,
    /// setuid and friends are denied.
    Deny,
    /// Only child processes may change privileges.
    Children,
}

/// The seccomp sandbox: `-sandbox on,obsolete=deny,...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sandbox {
    /// Whether the sandbox is on at all.
    pub enable: bool,
    /// Deny obsolete system calls.
    pub deny_obsolete: bool,
    /// Privilege changes.
    pub elevate_privileges: Elevate,
    /// Deny fork and exec.
    pub deny_spawn: bool,
    /// Deny process affinity and scheduler priority changes.
    pub deny_resource_control: bool,
}

impl Sandbox {
    /// The sandbox on, with QEMU's defaults.
    pub fn on() -> Sandbox {
        Sandbox {
            enable: true,
            ..Sandbox::default()
        }
    }
    /// The sandbox on, denying everything it can deny.
    pub fn strict() -> Sandbox {
        Sandbox {
            enable: true,
            deny_obsolete: true,
            elevate_privileges: Elevate::Deny,
            deny_spawn: true,
            deny_resource_control: true,
        }
    }
    pub(crate) fn render(&self) -> Opt {
        let mut props = Props::new();
        if self.enable {
            if self.deny_obsolete {
                props.set("obsolete", "deny");
            }
            match self.elevate_privileges {
                Elevate::Allow => {}
                Elevate::Deny => {
                    props.set("elevateprivileges", "deny");
                }
                Elevate::Children => {
                    props.set("elevateprivileges", "children");
                }
            }
            if self.deny_spawn {
                props.set("spawn", "deny");
            }
            if self.deny_resource_control {
                props.set("resourcecontrol", "deny");
            }
        }
        Opt::opts(
            "-sandbox",
            "-sandbox",
            Opts::new(Grammar::QemuOpts, false)
                .implied("enable", if self.enable { "on" } else { "off" })
                .props(props),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::keyval_text;
    use crate::render::OptValue;

    fn text(opt: &Opt) -> String {
        match opt.value.as_ref().unwrap() {
            OptValue::Literal { value, .. } => value.to_str().unwrap().to_string(),
            OptValue::Opts(o) => keyval_text(o).into_string().unwrap(),
        }
    }

    #[test]
    fn cpu_renders_and_rejects_commas() {
        let cpu = Cpu::new("max")
            .enable("vmx")
            .disable("sse4.1")
            .prop("phys-bits", 40u8);
        assert_eq!(
            text(&cpu.render().unwrap()),
            "max,vmx=on,sse4.1=off,phys-bits=40"
        );
        let e = Cpu::new("max,vmx=on").render().unwrap_err();
        assert!(e.to_string().contains("-cpu max,vmx=on: model"), "{e}");
        let e = Cpu::new("max").prop("x", "a,b").render().unwrap_err();
        assert!(e.to_string().contains("comma"), "{e}");
        let e = Cpu::new("max").prop("a=b", true).render().unwrap_err();
        assert!(matches!(e, Error::InvalidKey { .. }), "{e}");
    }

    #[test]
    fn smp_topology_is_checked() {
        assert_eq!(text(&Smp::new(4).render().unwrap()), "4");
        let full = Smp::new(4).sockets(1).cores(2).threads(2).maxcpus(4);
        assert_eq!(
            text(&full.render().unwrap()),
            "4,sockets=1,cores=2,threads=2,maxcpus=4"
        );
        let e = Smp::new(4)
            .sockets(1)
            .cores(2)
            .threads(1)
            .render()
            .unwrap_err();
        assert!(e.to_string().contains("= 2 does not match cpus=4"), "{e}");
        let e = Smp::new(4).maxcpus(2).render().unwrap_err();
        assert!(e.to_string().contains("less than cpus=4"), "{e}");
        assert!(Smp::new(0).render().is_err());
        assert!(Smp::new(1).threads(0).render().is_err());
    }

    #[test]
    fn sandbox_and_accel() {
        assert_eq!(
            text(&Sandbox::strict().render()),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        );
        assert_eq!(text(&Sandbox::default().render()), "off");
        assert_eq!(text(&Accel::Kvm.render()), "kvm");
        assert_eq!("hvf".parse::<Accel>().unwrap(), Accel::Hvf);
        assert_eq!(
            "mshv".parse::<Accel>().unwrap(),
            Accel::Other("mshv".into())
        );
        assert!("k,vm".parse::<Accel>().is_err());
    }

    #[test]
    fn machine_and_cpu_serde_accept_string_or_object() {
        let m: Machine = serde_json::from_str("\"q35\"").unwrap();
        assert_eq!(m, Machine::new("q35"));
        let m: Machine =
            serde_json::from_str(r#"{"type":"virt","props":{"gic-version":"max"}}"#).unwrap();
        assert_eq!(m, Machine::new("virt").prop("gic-version", "max"));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"virt","props":{"gic-version":"max"}}"#
        );
        let e = serde_json::from_str::<Machine>(r#"{"typ":"virt"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `typ`"), "{e}");
        let c: Cpu = serde_json::from_str(r#"{"model":"max","props":{"vmx":true}}"#).unwrap();
        assert_eq!(c, Cpu::new("max").enable("vmx"));
        let s: SmpOrCount = serde_json::from_str("2").unwrap();
        assert_eq!(s.0, Smp::new(2));
        let s: SmpOrCount = serde_json::from_str(r#"{"cpus":2,"threads":2}"#).unwrap();
        assert_eq!(s.0, Smp::new(2).threads(2));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"cpus":2,"threads":2}"#
        );
        assert!(serde_json::from_str::<SmpOrCount>(r#"{"cpu":2}"#).is_err());
    }
}
