//! Typed commands: a name tied to its argument and return types.
//!
//! Each type in this module is the arguments of one QMP command (field names follow QEMU's,
//! with `-` written `_`), and its [`Command::Returns`] the type of the reply. Return types keep
//! members they do not know in an `extra` map, so a newer QEMU does not break them. Any
//! command not listed here can be run by name with
//! [`Session::execute`](crate::Session::execute).
//!
//! ```
//! use qmp_proto::commands::{QueryStatus, RunState, StatusInfo};
//! use qmp_proto::parse_reply;
//! use serde_json::json;
//!
//! let reply = json!({"status": "prelaunch", "singlestep": false, "running": false});
//! let info: StatusInfo = parse_reply::<QueryStatus>(reply).unwrap();
//! assert_eq!(info.status, RunState::Prelaunch);
//! assert!(!info.running);
//! ```

use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub use crate::wire::Version;

/// A QMP command with typed arguments (the implementing type itself, serialized to a JSON
/// object, or to nothing for a unit struct) and a typed reply.
pub trait Command: Serialize {
    /// The command's QMP name, e.g. `"query-status"`.
    const NAME: &'static str;
    /// What a successful reply's `return` member deserializes to.
    type Returns: DeserializeOwned;
}

/// Deserializes the `return` value of a reply to `C`'s return type.
///
/// Fails with [`Error::Reply`] naming the command and what did not fit.
pub fn parse_reply<C: Command>(value: Value) -> Result<C::Returns> {
    serde_json::from_value(value).map_err(|e| Error::Reply {
        command: C::NAME.to_owned(),
        message: e.to_string(),
    })
}

/// The arguments of `command` as QMP wants them: `None` for a command without arguments
/// (a unit struct, or an empty object), or a JSON object.
pub(crate) fn arguments_of<C: Command>(command: &C) -> Result<Option<Value>> {
    let value = serde_json::to_value(command).map_err(|e| Error::Arguments {
        command: C::NAME.to_owned(),
        message: e.to_string(),
    })?;
    match value {
        Value::Null => Ok(None),
        Value::Object(map) if map.is_empty() => Ok(None),
        Value::Object(map) => Ok(Some(Value::Object(map))),
        other => Err(Error::Arguments {
            command: C::NAME.to_owned(),
            message: format!(
                "they serialize to {}, and QMP needs an object",
                crate::wire::kind(&other)
            ),
        }),
    }
}

/// The return value of commands that return nothing (`{}`); any value is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Empty;

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Empty)
    }
}

macro_rules! command {
    ($(#[$doc:meta])* $name:ident, $wire:literal, $returns:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct $name;

        impl Command for $name {
            const NAME: &'static str = $wire;
            type Returns = $returns;
        }
    };
}

macro_rules! command_with_args {
    ($name:ident, $wire:literal, $returns:ty) => {
        impl Command for $name {
            const NAME: &'static str = $wire;
            type Returns = $returns;
        }
    };
}

// The guest agent's typed commands (`crate::guest`) are declared with the same two macros.
pub(crate) use {command, command_with_args};

/// `qmp_capabilities`: leaves capability negotiation mode, enabling the listed capabilities.
/// [`Session`](crate::Session) sends it by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QmpCapabilities {
    /// Capabilities to enable, e.g. `["oob"]`; only those offered in the greeting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable: Option<Vec<String>>,
}
command_with_args!(QmpCapabilities, "qmp_capabilities", Empty);

command!(
    /// `query-version`: the QEMU version.
    QueryVersion,
    "query-version",
    Version
);
command!(
    /// `query-status`: whether the VM runs, and its run state.
    QueryStatus,
    "query-status",
    StatusInfo
);
command!(
    /// `query-commands`: the commands this QEMU offers.
    QueryCommands,
    "query-commands",
    Vec<CommandInfo>
);
command!(
    /// `query-name`: the VM's name (`-name`).
    QueryName,
    "query-name",
    NameInfo
);
command!(
    /// `query-kvm`: whether KVM is present and enabled.
    QueryKvm,
    "query-kvm",
    KvmInfo
);
command!(
    /// `query-chardev`: the character devices.
    QueryChardev,
    "query-chardev",
    Vec<ChardevInfo>
);
command!(
    /// `query-block`: the block devices.
    QueryBlock,
    "query-block",
    Vec<BlockInfo>
);
command!(
    /// `query-cpus-fast`: the virtual CPUs, without interrupting them.
    QueryCpusFast,
    "query-cpus-fast",
    Vec<CpuInfoFast>
);
command!(
    /// `stop`: pauses the VM (QEMU emits `STOP`).
    Stop,
    "stop",
    Empty
);
command!(
    /// `cont`: resumes the VM (QEMU emits `RESUME`).
    Cont,
    "cont",
    Empty
);
command!(
    /// `system_reset`: resets the machine (QEMU emits `RESET`).
    SystemReset,
    "system_reset",
    Empty
);
command!(
    /// `system_powerdown`: presses the ACPI power button (QEMU emits `POWERDOWN`).
    SystemPowerdown,
    "system_powerdown",
    Empty
);
command!(
    /// `quit`: QEMU exits after replying (and emits `SHUTDOWN`).
    Quit,
    "quit",
    Empty
);

/// `device_add`: adds a device, with the properties `-device` would take.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceAdd {
    /// The device type, e.g. `"virtio-net-pci"`.
    pub driver: String,
    /// The device's id, used by `device_del`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The bus to plug it into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// Any other property, by its QEMU name.
    #[serde(flatten)]
    pub properties: Map<String, Value>,
}
command_with_args!(DeviceAdd, "device_add", Empty);

/// `device_del`: asks for a device's removal (QEMU emits `DEVICE_DELETED` when it is gone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceDel {
    /// The device's id or QOM path.
    pub id: String,
}
command_with_args!(DeviceDel, "device_del", Empty);

/// `blockdev-add`: adds a block node, with the options `-blockdev` would take.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BlockdevAdd {
    /// The block driver, e.g. `"file"`, `"qcow2"`, `"null-co"`.
    pub driver: String,
    /// The node's name, used by `blockdev-del` and devices.
    #[serde(rename = "node-name", skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The driver's other options, by their QEMU names.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}
command_with_args!(BlockdevAdd, "blockdev-add", Empty);

/// `blockdev-del`: removes a block node added by `blockdev-add`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlockdevDel {
    /// The node's name.
    #[serde(rename = "node-name")]
    pub node_name: String,
}
command_with_args!(BlockdevDel, "blockdev-del", Empty);

/// `netdev_add`: adds a network backend, with the options `-netdev` would take.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetdevAdd {
    /// The backend type, e.g. `"user"`, `"tap"`, `"socket"`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The backend's id.
    pub id: String,
    /// The backend's other options, by their QEMU names.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}
command_with_args!(NetdevAdd, "netdev_add", Empty);

/// `netdev_del`: removes a network backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetdevDel {
    /// The backend's id.
    pub id: String,
}
command_with_args!(NetdevDel, "netdev_del", Empty);

/// `human-monitor-command`: runs a human monitor (HMP) command; returns its output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HumanMonitorCommand {
    /// The command line, e.g. `"info status"`.
    #[serde(rename = "command-line")]
    pub command_line: String,
    /// The CPU to use for commands that need one.
    #[serde(rename = "cpu-index", skip_serializing_if = "Option::is_none")]
    pub cpu_index: Option<i64>,
}
command_with_args!(HumanMonitorCommand, "human-monitor-command", String);

/// `screendump`: writes the display's content to a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Screendump {
    /// The file to write (on QEMU's side).
    pub filename: String,
    /// The display device to dump (default: the primary one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The display head to dump.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<i64>,
    /// The image format, `"ppm"` (default) or `"png"` (QEMU ≥ 7.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}
command_with_args!(Screendump, "screendump", Empty);

/// `getfd`: takes the file descriptor passed with this command (SCM_RIGHTS) and names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Getfd {
    /// The name to give the descriptor.
    pub fdname: String,
}
command_with_args!(Getfd, "getfd", Empty);

/// `closefd`: closes a descriptor received by `getfd`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Closefd {
    /// The descriptor's name.
    pub fdname: String,
}
command_with_args!(Closefd, "closefd", Empty);

/// `add-fd`: adds the file descriptor passed with this command (SCM_RIGHTS) to an fd set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddFd {
    /// The fd set to add it to (a new one when absent).
    #[serde(rename = "fdset-id", skip_serializing_if = "Option::is_none")]
    pub fdset_id: Option<i64>,
    /// A free-form string stored with the descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}
command_with_args!(AddFd, "add-fd", AddfdInfo);

/// `remove-fd`: removes a descriptor, or a whole set, from an fd set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoveFd {
    /// The fd set.
    #[serde(rename = "fdset-id")]
    pub fdset_id: i64,
    /// The descriptor to remove (all of the set's when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
}
command_with_args!(RemoveFd, "remove-fd", Empty);

/// The VM's run state, as `query-status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunState {
    /// `running`: the guest runs.
    Running,
    /// `paused`: stopped by `stop` or the monitor.
    Paused,
    /// `prelaunch`: started with `-S`, not yet run.
    Prelaunch,
    /// `shutdown`: the guest shut down (and `-no-shutdown` kept QEMU alive).
    Shutdown,
    /// `inmigrate`: waiting for an incoming migration.
    InMigrate,
    /// `postmigrate`: stopped after an outgoing migration.
    Postmigrate,
    /// `finish-migrate`: finishing an outgoing migration.
    Finishmigrate,
    /// `debug`: stopped by the debugger.
    Debug,
    /// `internal-error`: stopped by an internal error.
    InternalError,
    /// `io-error`: stopped by a disk I/O error.
    IoError,
    /// `watchdog`: stopped by the watchdog.
    Watchdog,
    /// `guest-panicked`: stopped after a guest panic.
    GuestPanicked,
    /// `restore-vm`: restoring a snapshot.
    RestoreVm,
    /// `save-vm`: saving a snapshot.
    SaveVm,
    /// `suspended`: the guest is suspended (ACPI S3).
    Suspended,
    /// `colo`: COLO fault tolerance.
    Colo,
    /// A state this crate does not know (kept verbatim).
    Other(String),
}

impl RunState {
    /// The state's name as QEMU spells it.
    pub fn as_str(&self) -> &str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Prelaunch => "prelaunch",
            RunState::Shutdown => "shutdown",
            RunState::InMigrate => "inmigrate",
            RunState::Postmigrate => "postmigrate",
            RunState::Finishmigrate => "finish-migrate",
            RunState::Debug => "debug",
            RunState::InternalError => "internal-error",
            RunState::IoError => "io-error",
            RunState::Watchdog => "watchdog",
            RunState::GuestPanicked => "guest-panicked",
            RunState::RestoreVm => "restore-vm",
            RunState::SaveVm => "save-vm",
            RunState::Suspended => "suspended",
            RunState::Colo => "colo",
            RunState::Other(name) => name,
        }
    }

    /// The state named `name`; names this crate does not know become [`RunState::Other`].
    pub fn from_name(name: &str) -> RunState {
        match name {
            "running" => RunState::Running,
            "paused" => RunState::Paused,
            "prelaunch" => RunState::Prelaunch,
            "shutdown" => RunState::Shutdown,
            "inmigrate" => RunState::InMigrate,
            "postmigrate" => RunState::Postmigrate,
            "finish-migrate" => RunState::Finishmigrate,
            "debug" => RunState::Debug,
            "internal-error" => RunState::InternalError,
            "io-error" => RunState::IoError,
            "watchdog" => RunState::Watchdog,
            "guest-panicked" => RunState::GuestPanicked,
            "restore-vm" => RunState::RestoreVm,
            "save-vm" => RunState::SaveVm,
            "suspended" => RunState::Suspended,
            "colo" => RunState::Colo,
            other => RunState::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RunState {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(RunState::from_name(&name))
    }
}

/// What `query-status` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct StatusInfo {
    /// Whether the guest's CPUs run.
    pub running: bool,
    /// The run state.
    pub status: RunState,
    /// Single-step mode (QEMU < 8.1 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singlestep: Option<bool>,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `query-commands`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CommandInfo {
    /// The command's name.
    pub name: String,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `query-name` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NameInfo {
    /// The VM's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `query-kvm` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct KvmInfo {
    /// Whether KVM is in use.
    pub enabled: bool,
    /// Whether this QEMU supports KVM.
    pub present: bool,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `query-chardev`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChardevInfo {
    /// The character device's id.
    pub label: String,
    /// Its backend, e.g. `"unix:/tmp/x.sock,server=on"` or `"pty:/dev/pts/3"`.
    pub filename: String,
    /// Whether a frontend has it open.
    #[serde(rename = "frontend-open")]
    pub frontend_open: bool,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `query-block`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BlockInfo {
    /// The device's name (may be empty for devices created with `-device` only).
    pub device: String,
    /// The device's QOM path or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdev: Option<String>,
    /// Whether the medium is removable.
    pub removable: bool,
    /// Whether the guest locked the tray.
    pub locked: bool,
    /// The medium, when one is inserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted: Option<BlockDeviceInfo>,
    /// Whether the tray is open (removable devices only).
    #[serde(rename = "tray_open", default, skip_serializing_if = "Option::is_none")]
    pub tray_open: Option<bool>,
    /// The I/O status (`"ok"`, `"failed"`, `"nospace"`), when tracked.
    #[serde(rename = "io-status", default, skip_serializing_if = "Option::is_none")]
    pub io_status: Option<String>,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The medium of a block device, in `query-block`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BlockDeviceInfo {
    /// The file name (or a JSON description).
    pub file: String,
    /// The node's name.
    #[serde(rename = "node-name", default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Whether it is read-only.
    pub ro: bool,
    /// The format driver, e.g. `"qcow2"`.
    pub drv: String,
    /// Members this crate does not know (image info, throttling, cache modes, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `query-cpus-fast`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CpuInfoFast {
    /// The CPU's index.
    #[serde(rename = "cpu-index")]
    pub cpu_index: i64,
    /// The CPU's QOM path.
    #[serde(rename = "qom-path")]
    pub qom_path: String,
    /// The host thread id of the vCPU thread.
    #[serde(rename = "thread-id")]
    pub thread_id: i64,
    /// The target architecture, e.g. `"x86_64"`.
    pub target: String,
    /// Socket, core and thread ids, when the machine has a CPU topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<Value>,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `add-fd` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AddfdInfo {
    /// The fd set the descriptor was added to.
    #[serde(rename = "fdset-id")]
    pub fdset_id: i64,
    /// The descriptor's number in QEMU.
    pub fd: i64,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args<C: Command>(command: &C) -> Option<Value> {
        arguments_of(command).unwrap()
    }

    #[test]
    fn names_and_arguments() {
        assert_eq!(QueryStatus::NAME, "query-status");
        assert_eq!(args(&QueryStatus), None);
        assert_eq!(args(&Stop), None);
        assert_eq!(args(&QmpCapabilities::default()), None);
        assert_eq!(
            args(&QmpCapabilities {
                enable: Some(vec!["oob".into()])
            }),
            Some(json!({"enable": ["oob"]}))
        );
        let mut properties = Map::new();
        properties.insert("netdev".into(), json!("n0"));
        properties.insert("mac".into(), json!("52:54:00:12:34:56"));
        assert_eq!(
            args(&DeviceAdd {
                driver: "virtio-net-pci".into(),
                id: Some("nic0".into()),
                bus: None,
                properties,
            }),
            Some(
                json!({"driver": "virtio-net-pci", "id": "nic0", "netdev": "n0",
                "mac": "52:54:00:12:34:56"})
            )
        );
        assert_eq!(
            args(&BlockdevAdd {
                driver: "null-co".into(),
                node_name: Some("disk0".into()),
                options: Map::new(),
            }),
            Some(json!({"driver": "null-co", "node-name": "disk0"}))
        );
        assert_eq!(
            args(&BlockdevDel {
                node_name: "disk0".into()
            }),
            Some(json!({"node-name": "disk0"}))
        );
        assert_eq!(
            args(&NetdevAdd {
                type_: "user".into(),
                id: "n0".into(),
                options: Map::new(),
            }),
            Some(json!({"type": "user", "id": "n0"}))
        );
        assert_eq!(
            args(&HumanMonitorCommand {
                command_line: "info status".into(),
                cpu_index: None
            }),
            Some(json!({"command-line": "info status"}))
        );
        assert_eq!(
            args(&RemoveFd {
                fdset_id: 1,
                fd: None
            }),
            Some(json!({"fdset-id": 1}))
        );
        assert_eq!(args(&AddFd::default()), None);
    }

    #[test]
    fn arguments_must_be_objects() {
        #[derive(Serialize)]
        struct Bad(u32);
        impl Command for Bad {
            const NAME: &'static str = "bad";
            type Returns = Empty;
        }
        let err = arguments_of(&Bad(3)).unwrap_err();
        assert_eq!(
            err,
            Error::Arguments {
                command: "bad".into(),
                message: "they serialize to a number, and QMP needs an object".into()
            }
        );
    }

    #[test]
    fn run_states() {
        let all = [
            "running",
            "paused",
            "prelaunch",
            "shutdown",
            "inmigrate",
            "postmigrate",
            "finish-migrate",
            "debug",
            "internal-error",
            "io-error",
            "watchdog",
            "guest-panicked",
            "restore-vm",
            "save-vm",
            "suspended",
            "colo",
        ];
        for name in all {
            let state = RunState::from_name(name);
            assert!(!matches!(state, RunState::Other(_)), "{name}");
            assert_eq!(state.as_str(), name);
            assert_eq!(serde_json::to_value(&state).unwrap(), json!(name));
        }
        let state: RunState = serde_json::from_value(json!("x-new-state")).unwrap();
        assert_eq!(state, RunState::Other("x-new-state".into()));
        assert_eq!(state.to_string(), "x-new-state");
    }

    #[test]
    fn replies_parse_and_keep_unknown_members() {
        let info = parse_reply::<QueryStatus>(
            json!({"status": "running", "singlestep": false, "running": true, "x-new": 1}),
        )
        .unwrap();
        assert_eq!(info.status, RunState::Running);
        assert_eq!(info.singlestep, Some(false));
        assert_eq!(info.extra.get("x-new"), Some(&json!(1)));

        let info =
            parse_reply::<QueryStatus>(json!({"status": "paused", "running": false})).unwrap();
        assert_eq!(info.singlestep, None);

        let version = parse_reply::<QueryVersion>(
            json!({"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian"}),
        )
        .unwrap();
        assert_eq!((version.major, version.minor, version.micro), (7, 2, 0));

        let text = parse_reply::<HumanMonitorCommand>(json!("VM status: paused\r\n")).unwrap();
        assert_eq!(text, "VM status: paused\r\n");

        assert_eq!(parse_reply::<Stop>(json!({})).unwrap(), Empty);
        let fd = parse_reply::<AddFd>(json!({"fdset-id": 1, "fd": 33})).unwrap();
        assert_eq!((fd.fdset_id, fd.fd), (1, 33));
    }

    #[test]
    fn bad_replies_name_the_command() {
        let err = parse_reply::<QueryStatus>(json!({"status": "running"})).unwrap_err();
        let Error::Reply { command, message } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(command, "query-status");
        assert!(message.contains("running"), "{message}");
        assert!(err
            .to_string()
            .starts_with("unexpected reply to query-status: "));

        let err = parse_reply::<QueryKvm>(json!([1])).unwrap_err();
        assert!(matches!(err, Error::Reply { .. }));
        let err = parse_reply::<HumanMonitorCommand>(json!({})).unwrap_err();
        assert!(matches!(err, Error::Reply { .. }));
    }
}
