//! Generic devices and objects, fd sets, fw_cfg entries and SMBIOS tables.

use std::ffi::{OsStr, OsString};

use serde::{Deserialize, Serialize};

use crate::block::device_refs;
use crate::render::{Grammar, Opt, Opts};
use crate::{Error, IdKind, PropValue, Props};

/// Any device: `-device DRIVER,id=ID,key=value,...`.
///
/// The properties `drive`, `netdev` and `chardev` must name a backend defined on the command
/// line (and not used by another device), `bus` a bus the machine or a device with that id
/// provides, and `memdev`, `iothread` and `rng` an object.
///
/// ```
/// use qemu_cmdline::{CommandLine, Device, Object};
/// let mut cmd = CommandLine::new("qemu-system-x86_64");
/// cmd.object(Object::new("rng-random", "rng0").prop("filename", "/dev/urandom"))
///     .device(Device::new("virtio-rng-pci").id("rng").prop("rng", "rng0"));
/// assert_eq!(
///     cmd.build().unwrap().to_string(),
///     "qemu-system-x86_64 -object rng-random,id=rng0,filename=/dev/urandom \
///      -device virtio-rng-pci,id=rng,rng=rng0"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The driver (`virtio-rng-pci`, `pcie-root-port`, ...).
    pub driver: String,
    /// The id, when the device is referred to (buses, QMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The properties.
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub props: Props,
}

impl Device {
    /// A device of driver `driver`.
    pub fn new(driver: impl Into<String>) -> Device {
        Device {
            driver: driver.into(),
            id: None,
            props: Props::new(),
        }
    }
    /// Sets the id.
    pub fn id(mut self, id: impl Into<String>) -> Device {
        self.id = Some(id.into());
        self
    }
    /// Sets a property.
    pub fn prop(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Device {
        self.props.set(key, value);
        self
    }

    pub(crate) fn render(&self) -> Opt {
        let mut props = Props::new();
        if let Some(id) = &self.id {
            props.set("id", id.as_str());
        }
        for (k, v) in self.props.iter() {
            if k != "id" || self.id.is_none() {
                props.set(k, v.clone());
            }
        }
        let what = match self.effective_id() {
            Some(id) => format!("-device {} (id={id})", self.driver),
            None => format!("-device {}", self.driver),
        };
        let opt = Opt::opts(
            "-device",
            what,
            Opts::new(Grammar::QemuOpts, true)
                .implied("driver", self.driver.as_str())
                .props(props.clone()),
        );
        device_refs(opt, &props)
    }

    /// The id, from [`Device::id`] or an `id` property.
    pub(crate) fn effective_id(&self) -> Option<String> {
        self.id.clone().or_else(|| {
            self.props
                .get("id")
                .and_then(PropValue::as_os_str)
                .map(|s| s.to_string_lossy().into_owned())
        })
    }
}

/// A QOM object: `-object TYPE,id=ID,key=value,...` (memory backends, RNG sources, secrets,
/// iothreads, TLS credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    /// The QOM type (`memory-backend-ram`, `rng-random`, `iothread`, ...).
    pub qom_type: String,
    /// The id (required by QEMU).
    pub id: String,
    /// The properties.
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub props: Props,
}

impl Object {
    /// An object of type `qom_type` with id `id`.
    pub fn new(qom_type: impl Into<String>, id: impl Into<String>) -> Object {
        Object {
            qom_type: qom_type.into(),
            id: id.into(),
            props: Props::new(),
        }
    }
    /// Sets a property.
    pub fn prop(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Object {
        self.props.set(key, value);
        self
    }

    pub(crate) fn render(&self) -> Opt {
        let mut props = Props::new().with("id", self.id.as_str());
        for (k, v) in self.props.iter() {
            if k != "id" {
                props.set(k, v.clone());
            }
        }
        Opt::opts(
            "-object",
            format!("-object {} (id={})", self.qom_type, self.id),
            Opts::new(Grammar::Keyval, true)
                .implied("qom-type", self.qom_type.as_str())
                .props(props),
        )
        .define(IdKind::Object, self.id.as_str(), "id")
    }
}

/// A file descriptor QEMU inherits, added to an fd set: `-add-fd fd=N,set=S,opaque=...`.
/// QEMU then opens `/dev/fdset/S` instead of a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddFd {
    /// The descriptor number in QEMU's process (3 or above).
    pub fd: i32,
    /// The fd set.
    pub set: u32,
    /// A free-form note shown by `query-fdsets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}

impl AddFd {
    /// Descriptor `fd` in fd set `set`.
    pub fn new(fd: i32, set: u32) -> AddFd {
        AddFd {
            fd,
            set,
            opaque: None,
        }
    }
    /// Sets the note.
    pub fn opaque(mut self, opaque: impl Into<String>) -> AddFd {
        self.opaque = Some(opaque.into());
        self
    }

    pub(crate) fn render(&self) -> Result<Opt, Error> {
        let what = format!("-add-fd fd={},set={}", self.fd, self.set);
        if self.fd < 3 {
            return Err(Error::invalid(
                format!("{what} fd"),
                "must be 3 or above: QEMU will not take stdin, stdout or stderr",
            ));
        }
        let mut props = Props::new().with("fd", self.fd).with("set", self.set);
        if let Some(o) = &self.opaque {
            props.set("opaque", o.as_str());
        }
        Ok(Opt::opts(
            "-add-fd",
            what,
            Opts::new(Grammar::QemuOpts, false).props(props),
        )
        .define(IdKind::FdSet, format!("{}/{}", self.set, self.fd), "fd"))
    }
}

/// The longest fw_cfg file name (`FW_CFG_MAX_FILE_PATH` less the NUL).
pub const FW_CFG_NAME_MAX: usize = 55;

/// A fw_cfg entry the firmware or guest can read: `-fw_cfg name=opt/...,file=...` or
/// `string=...`. Names should start with `opt/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwCfg {
    name: String,
    source: FwCfgSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FwCfgSource {
    File(OsString),
    Str(String),
}

impl FwCfg {
    /// The contents of the file at `path`.
    pub fn file(name: impl Into<String>, path: impl AsRef<OsStr>) -> FwCfg {
        FwCfg {
            name: name.into(),
            source: FwCfgSource::File(path.as_ref().to_os_string()),
        }
    }
    /// A string.
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> FwCfg {
        FwCfg {
            name: name.into(),
            source: FwCfgSource::Str(value.into()),
        }
    }

    pub(crate) fn render(&self) -> Result<Opt, Error> {
        let what = format!("-fw_cfg name={}", self.name);
        if self.name.is_empty() || self.name.len() > FW_CFG_NAME_MAX {
            return Err(Error::invalid(
                format!("{what} name"),
                format!(
                    "a fw_cfg name is 1 to {FW_CFG_NAME_MAX} bytes, this one is {}",
                    self.name.len()
                ),
            ));
        }
        let mut props = Props::new().with("name", self.name.as_str());
        match &self.source {
            FwCfgSource::File(p) => props.set("file", p.as_os_str()),
            FwCfgSource::Str(s) => props.set("string", s.as_str()),
        };
        Ok(Opt::opts(
            "-fw_cfg",
            what,
            Opts::new(Grammar::QemuOpts, false).props(props),
        ))
    }
}

/// An SMBIOS table: `-smbios type=N,key=value,...` or `-smbios file=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smbios {
    props: Props,
}

impl Smbios {
    /// A table of type `table` (0 BIOS, 1 system, 2 baseboard, 3 chassis, 4 processor,
    /// 11 OEM strings, 17 memory device).
    pub fn new(table: u8) -> Smbios {
        Smbios {
            props: Props::new().with("type", table),
        }
    }
    /// Binary tables from a file.
    pub fn file(path: impl AsRef<OsStr>) -> Smbios {
        Smbios {
            props: Props::new().with("file", path.as_ref()),
        }
    }
    /// Sets a field (`manufacturer`, `serial`, `uuid`, `value` for type 11, ...).
    pub fn field(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Smbios {
        self.props.set(key, value);
        self
    }

    pub(crate) fn render(&self) -> Opt {
        let what = match self.props.get("type") {
            Some(PropValue::UInt(t)) => format!("-smbios type={t}"),
            _ => "-smbios".to_string(),
        };
        Opt::opts(
            "-smbios",
            what,
            Opts::new(Grammar::QemuOpts, false).props(self.props.clone()),
        )
    }
}
