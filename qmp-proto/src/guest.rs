//! The QEMU guest agent (`qemu-ga`): its commands, typed, and the base64 its data travels in.
//!
//! A guest agent speaks the same JSON as a QMP monitor, over a virtio-serial port, with no
//! greeting and no negotiation: drive it with [`Session::guest_agent`](crate::Session::guest_agent),
//! resynchronize with [`Session::guest_sync`](crate::Session::guest_sync) on every (re)connect and
//! after every timeout, and run the commands below through
//! [`Session::execute_typed`](crate::Session::execute_typed) and [`parse_reply`](crate::parse_reply).
//! Names, arguments and replies follow qemu-ga's QAPI schema (`qga/qapi-schema.json`); reply
//! types keep the members they do not know in an `extra` map.
//!
//! File contents, a process's input and its captured output travel base64-encoded; the
//! [`encode_base64`] and [`decode_base64`] functions here (the crate's [`base64`](crate::base64)
//! module, under names that say what they do) are the standard alphabet with padding, as
//! qemu-ga writes and reads it.
//!
//! ```
//! use qmp_proto::guest::{GuestExecStatus, decode_base64};
//! use qmp_proto::parse_reply;
//! use serde_json::json;
//!
//! let status = parse_reply::<GuestExecStatus>(json!({
//!     "exited": true, "exitcode": 0, "out-data": "aGVsbG8K", "err-data": ""
//! })).unwrap();
//! assert_eq!(status.exitcode, Some(0));
//! assert_eq!(decode_base64(status.out_data.as_deref().unwrap()).unwrap(), b"hello\n");
//! ```

use std::fmt;

pub use crate::base64::{
    decode as decode_base64, decode_into as decode_base64_into, encode as encode_base64,
    encode_into as encode_base64_into, Base64Error,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::commands::{command as unit_command, command_with_args, Command, Empty};

/// The name of the virtio-serial port qemu-ga opens in the guest (as
/// `/dev/virtio-ports/org.qemu.guest_agent.0`).
pub const AGENT_PORT_NAME: &str = "org.qemu.guest_agent.0";

/// The most bytes qemu-ga reads in one `guest-file-read` (48 MiB); larger counts are refused.
pub const MAX_FILE_READ_COUNT: u64 = 48 * 1024 * 1024;

/// `guest-sync-delimited`: echoes `id` after a `0xFF` byte. Use
/// [`Session::guest_sync`](crate::Session::guest_sync), which sends it the way it must be sent
/// (after a `0xFF` byte of its own) and skips stale output up to the agent's `0xFF`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuestSyncDelimited {
    /// A fresh random number (QAPI `int`: at most `i64::MAX`).
    pub id: u64,
}
command_with_args!(GuestSyncDelimited, "guest-sync-delimited", u64);

unit_command!(
    /// `guest-ping`: succeeds when the agent answers.
    GuestPing,
    "guest-ping",
    Empty
);
unit_command!(
    /// `guest-info`: the agent's version and the commands it has.
    GuestInfo,
    "guest-info",
    AgentInfo
);
unit_command!(
    /// `guest-get-osinfo`: the guest's operating system (`os-release` and `uname` on POSIX).
    GuestGetOsinfo,
    "guest-get-osinfo",
    OsInfo
);
unit_command!(
    /// `guest-network-get-interfaces`: the guest's network interfaces and their addresses.
    GuestNetworkGetInterfaces,
    "guest-network-get-interfaces",
    Vec<NetworkInterface>
);
unit_command!(
    /// `guest-get-host-name`: the guest's host name.
    GuestGetHostName,
    "guest-get-host-name",
    HostName
);

/// `guest-exec`: starts a process in the guest; returns its pid at once. Ask for its end with
/// [`GuestExecStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GuestExec {
    /// The program: a path, or a name the agent looks up in its `PATH`.
    pub path: String,
    /// The arguments (without the program name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arg: Vec<String>,
    /// The environment, as `NAME=value` strings. qemu-ga gives the process exactly these;
    /// with none, the agent's own environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// What the process reads on its standard input, base64-encoded ([`encode_base64`]);
    /// without it, standard input is `/dev/null`.
    #[serde(rename = "input-data", skip_serializing_if = "Option::is_none")]
    pub input_data: Option<String>,
    /// Capture standard output and error (qemu-ga keeps at most 16 MiB of each); without it
    /// they go to `/dev/null`.
    #[serde(rename = "capture-output", skip_serializing_if = "is_false")]
    pub capture_output: bool,
}
command_with_args!(GuestExec, "guest-exec", ExecStarted);

fn is_false(b: &bool) -> bool {
    !*b
}

/// `guest-exec-status`: whether a process started by [`GuestExec`] has ended, its exit code or
/// signal and its captured output. Once it reports the end, the agent forgets the process: the
/// next `guest-exec-status` for that pid is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuestExecStatus {
    /// The pid [`GuestExec`] returned.
    pub pid: i64,
}
command_with_args!(GuestExecStatus, "guest-exec-status", ExecStatus);

/// `guest-file-open`: opens a file in the guest; returns a handle for the other `guest-file-*`
/// commands. Close it with [`GuestFileClose`]: the agent keeps it open until then.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GuestFileOpen {
    /// The file's path in the guest.
    pub path: String,
    /// An `fopen()` mode: `"r"` (the agent's default), `"w"`, `"a"`, `"r+"`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}
command_with_args!(GuestFileOpen, "guest-file-open", i64);

/// `guest-file-read`: reads up to `count` bytes (the agent's default 4 KiB, at most
/// [`MAX_FILE_READ_COUNT`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuestFileRead {
    /// The handle from [`GuestFileOpen`].
    pub handle: i64,
    /// How many bytes to read at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}
command_with_args!(GuestFileRead, "guest-file-read", FileRead);

/// `guest-file-write`: writes bytes, given base64-encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GuestFileWrite {
    /// The handle from [`GuestFileOpen`].
    pub handle: i64,
    /// The bytes, base64-encoded ([`encode_base64`]).
    #[serde(rename = "buf-b64")]
    pub buf_b64: String,
    /// How many of the decoded bytes to write (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}
command_with_args!(GuestFileWrite, "guest-file-write", FileWrite);

/// `guest-file-flush`: flushes a file's buffered writes to the guest's file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuestFileFlush {
    /// The handle from [`GuestFileOpen`].
    pub handle: i64,
}
command_with_args!(GuestFileFlush, "guest-file-flush", Empty);

/// `guest-file-close`: closes a file opened with [`GuestFileOpen`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuestFileClose {
    /// The handle from [`GuestFileOpen`].
    pub handle: i64,
}
command_with_args!(GuestFileClose, "guest-file-close", Empty);

/// `guest-shutdown`: asks the guest to power down, reboot or halt.
///
/// qemu-ga sends **no reply when it succeeds** (its schema marks the command
/// `success-response: false`): it runs the guest's `shutdown` program and answers only when
/// that fails. A client sends another command after it (`guest-ping`): its reply, with none
/// for the shutdown before it, means the shutdown was accepted, since the agent answers in
/// order. Its [`Command::Returns`] is for the error case's shape only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuestShutdown {
    /// What to do (the agent's default: power down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ShutdownMode>,
}
command_with_args!(GuestShutdown, "guest-shutdown", Empty);

/// The `mode` of [`GuestShutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    /// Power off (ACPI): QEMU reports `SHUTDOWN` and exits unless started with `-no-shutdown`.
    Powerdown,
    /// Reboot: QEMU reports `RESET` (or exits under `-no-reboot`).
    Reboot,
    /// Halt the CPUs without powering off: QEMU keeps running, and reports nothing.
    Halt,
}

impl ShutdownMode {
    /// The mode's name on the wire: `"powerdown"`, `"reboot"` or `"halt"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Powerdown => "powerdown",
            ShutdownMode::Reboot => "reboot",
            ShutdownMode::Halt => "halt",
        }
    }
}

impl fmt::Display for ShutdownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ShutdownMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "powerdown" => Ok(ShutdownMode::Powerdown),
            "reboot" => Ok(ShutdownMode::Reboot),
            "halt" => Ok(ShutdownMode::Halt),
            other => Err(format!(
                "unknown shutdown mode {other:?}: use \"powerdown\", \"reboot\" or \"halt\""
            )),
        }
    }
}

/// What `guest-info` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AgentInfo {
    /// The agent's version, e.g. `"7.2.22"`.
    pub version: String,
    /// Every command the agent knows, and whether it is enabled.
    pub supported_commands: Vec<AgentCommandInfo>,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AgentInfo {
    /// Whether the agent has `command` and it is enabled (not blocked with `--block-rpcs`).
    pub fn is_enabled(&self, command: &str) -> bool {
        self.supported_commands
            .iter()
            .any(|c| c.name == command && c.enabled)
    }
}

/// One command in [`AgentInfo`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AgentCommandInfo {
    /// The command's name.
    pub name: String,
    /// Whether the agent runs it (`false`: blocked by the guest's administrator).
    pub enabled: bool,
    /// Whether it answers on success (`false` for `guest-shutdown` and the suspend commands).
    #[serde(rename = "success-response")]
    pub success_response: bool,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `guest-get-osinfo` returns; every member is optional (absent when the guest does not
/// say). On POSIX guests the kernel members come from `uname`, the others from `os-release`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct OsInfo {
    /// `uname -r`, e.g. `"6.1.0-56-cloud-amd64"`.
    #[serde(
        rename = "kernel-release",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kernel_release: Option<String>,
    /// `uname -v`.
    #[serde(
        rename = "kernel-version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kernel_version: Option<String>,
    /// `uname -m`, e.g. `"x86_64"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// `ID`, e.g. `"debian"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `NAME`, e.g. `"Debian GNU/Linux"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `PRETTY_NAME`.
    #[serde(
        rename = "pretty-name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pretty_name: Option<String>,
    /// `VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `VERSION_ID`, e.g. `"12"`.
    #[serde(
        rename = "version-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub version_id: Option<String>,
    /// `VARIANT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `VARIANT_ID`.
    #[serde(
        rename = "variant-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub variant_id: Option<String>,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `guest-get-host-name` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct HostName {
    /// The guest's host name.
    #[serde(rename = "host-name")]
    pub host_name: String,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `guest-network-get-interfaces`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NetworkInterface {
    /// The interface's name, e.g. `"eth0"`.
    pub name: String,
    /// Its MAC address (`"52:54:00:12:34:56"`), when it has one.
    #[serde(
        rename = "hardware-address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hardware_address: Option<String>,
    /// Its addresses (empty when it has none).
    #[serde(
        rename = "ip-addresses",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_addresses: Vec<IpAddress>,
    /// Its traffic counters, when the agent reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<InterfaceStatistics>,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An address of a [`NetworkInterface`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct IpAddress {
    /// The address, e.g. `"10.0.2.15"` or `"fe80::5054:ff:fe12:3456"`.
    #[serde(rename = "ip-address")]
    pub ip_address: String,
    /// Its family.
    #[serde(rename = "ip-address-type")]
    pub ip_address_type: IpAddressType,
    /// The prefix length, e.g. `24`.
    pub prefix: i64,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The family of an [`IpAddress`]: `"ipv4"`, `"ipv6"`, or a name this crate does not know.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IpAddressType {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// A family a newer agent reports.
    Other(String),
}

impl IpAddressType {
    /// The name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            IpAddressType::Ipv4 => "ipv4",
            IpAddressType::Ipv6 => "ipv6",
            IpAddressType::Other(s) => s,
        }
    }
}

impl Serialize for IpAddressType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IpAddressType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "ipv4" => IpAddressType::Ipv4,
            "ipv6" => IpAddressType::Ipv6,
            _ => IpAddressType::Other(s),
        })
    }
}

/// The traffic counters of a [`NetworkInterface`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct InterfaceStatistics {
    /// Bytes received.
    #[serde(rename = "rx-bytes")]
    pub rx_bytes: u64,
    /// Packets received.
    #[serde(rename = "rx-packets")]
    pub rx_packets: u64,
    /// Bad packets received.
    #[serde(rename = "rx-errs")]
    pub rx_errs: u64,
    /// Received packets dropped.
    #[serde(rename = "rx-dropped")]
    pub rx_dropped: u64,
    /// Bytes sent.
    #[serde(rename = "tx-bytes")]
    pub tx_bytes: u64,
    /// Packets sent.
    #[serde(rename = "tx-packets")]
    pub tx_packets: u64,
    /// Transmit errors.
    #[serde(rename = "tx-errs")]
    pub tx_errs: u64,
    /// Packets dropped on transmit.
    #[serde(rename = "tx-dropped")]
    pub tx_dropped: u64,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `guest-exec` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ExecStarted {
    /// The process's pid in the guest.
    pub pid: i64,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `guest-exec-status` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ExecStatus {
    /// Whether the process has ended.
    pub exited: bool,
    /// Its exit code, when it ended normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exitcode: Option<i64>,
    /// The signal that ended it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i64>,
    /// Its standard output, base64-encoded ([`decode_base64`]), when captured.
    #[serde(rename = "out-data", default, skip_serializing_if = "Option::is_none")]
    pub out_data: Option<String>,
    /// Its standard error, base64-encoded, when captured.
    #[serde(rename = "err-data", default, skip_serializing_if = "Option::is_none")]
    pub err_data: Option<String>,
    /// Whether standard output was cut at the agent's bound (16 MiB).
    #[serde(
        rename = "out-truncated",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub out_truncated: Option<bool>,
    /// Whether standard error was cut at the agent's bound.
    #[serde(
        rename = "err-truncated",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub err_truncated: Option<bool>,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `guest-file-read` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FileRead {
    /// How many bytes were read (before encoding).
    pub count: u64,
    /// The bytes, base64-encoded ([`decode_base64`]).
    #[serde(rename = "buf-b64")]
    pub buf_b64: String,
    /// Whether the end of the file was reached.
    pub eof: bool,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `guest-file-write` returns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FileWrite {
    /// How many bytes were written.
    pub count: u64,
    /// Whether the end of the file was reached.
    pub eof: bool,
    /// Members this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::arguments_of;
    use crate::parse_reply;
    use serde_json::json;

    #[test]
    fn commands_serialize_as_qemu_ga_wants() {
        assert_eq!(GuestPing::NAME, "guest-ping");
        assert_eq!(arguments_of(&GuestPing).unwrap(), None);
        assert_eq!(
            arguments_of(&GuestSyncDelimited { id: 42 }).unwrap(),
            Some(json!({"id": 42}))
        );
        assert_eq!(
            arguments_of(&GuestExec {
                path: "/bin/sh".into(),
                arg: vec!["-c".into(), "echo hi".into()],
                env: vec![],
                input_data: Some(encode_base64(b"in")),
                capture_output: true,
            })
            .unwrap(),
            Some(
                json!({"path": "/bin/sh", "arg": ["-c", "echo hi"], "input-data": "aW4=",
                "capture-output": true})
            )
        );
        assert_eq!(
            arguments_of(&GuestExec {
                path: "true".into(),
                ..GuestExec::default()
            })
            .unwrap(),
            Some(json!({"path": "true"}))
        );
        assert_eq!(
            arguments_of(&GuestFileOpen {
                path: "/tmp/x".into(),
                mode: Some("w".into())
            })
            .unwrap(),
            Some(json!({"path": "/tmp/x", "mode": "w"}))
        );
        assert_eq!(
            arguments_of(&GuestFileRead {
                handle: 3,
                count: Some(4096)
            })
            .unwrap(),
            Some(json!({"handle": 3, "count": 4096}))
        );
        assert_eq!(
            arguments_of(&GuestFileWrite {
                handle: 3,
                buf_b64: "AA==".into(),
                count: None
            })
            .unwrap(),
            Some(json!({"handle": 3, "buf-b64": "AA=="}))
        );
        assert_eq!(
            arguments_of(&GuestShutdown {
                mode: Some(ShutdownMode::Reboot)
            })
            .unwrap(),
            Some(json!({"mode": "reboot"}))
        );
        assert_eq!(arguments_of(&GuestShutdown::default()).unwrap(), None);
        assert_eq!("halt".parse::<ShutdownMode>(), Ok(ShutdownMode::Halt));
        assert!("off"
            .parse::<ShutdownMode>()
            .unwrap_err()
            .contains("\"off\""));
        assert_eq!(ShutdownMode::Powerdown.to_string(), "powerdown");
    }

    #[test]
    fn replies_parse_and_keep_unknown_members() {
        let info = parse_reply::<GuestInfo>(json!({"version": "7.2.22", "supported_commands": [
            {"name": "guest-ping", "enabled": true, "success-response": true},
            {"name": "guest-shutdown", "enabled": false, "success-response": false}],
            "future": 1}))
        .unwrap();
        assert!(info.is_enabled("guest-ping"));
        assert!(!info.is_enabled("guest-shutdown"));
        assert!(!info.is_enabled("guest-nothing"));
        assert_eq!(info.extra["future"], json!(1));

        let os = parse_reply::<GuestGetOsinfo>(json!({"kernel-release": "6.1.0",
            "machine": "x86_64", "id": "debian", "version-id": "12"}))
        .unwrap();
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(os.pretty_name, None);

        let ifs = parse_reply::<GuestNetworkGetInterfaces>(json!([
            {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
                {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
                {"ip-address": "x", "ip-address-type": "ipv9", "prefix": 1}],
             "statistics": {"rx-bytes": 1, "rx-packets": 2, "rx-errs": 0, "rx-dropped": 0,
                "tx-bytes": 1, "tx-packets": 2, "tx-errs": 0, "tx-dropped": 0}},
            {"name": "dummy0"}]))
        .unwrap();
        assert_eq!(ifs[0].ip_addresses[0].ip_address_type, IpAddressType::Ipv4);
        assert_eq!(ifs[0].ip_addresses[1].ip_address_type, IpAddressType::Ipv6);
        assert_eq!(
            ifs[0].ip_addresses[2].ip_address_type,
            IpAddressType::Other("ipv9".into())
        );
        assert_eq!(ifs[0].statistics.as_ref().unwrap().rx_packets, 2);
        assert!(ifs[1].ip_addresses.is_empty());
        assert_eq!(
            serde_json::to_value(&ifs[0].ip_addresses[2]).unwrap()["ip-address-type"],
            json!("ipv9")
        );

        let read =
            parse_reply::<GuestFileRead>(json!({"count": 3, "buf-b64": "AQID", "eof": true}))
                .unwrap();
        assert_eq!(decode_base64(&read.buf_b64).unwrap(), [1, 2, 3]);
        assert!(read.eof);
        assert_eq!(
            parse_reply::<GuestFileWrite>(json!({"count": 3, "eof": false}))
                .unwrap()
                .count,
            3
        );
        assert_eq!(parse_reply::<GuestFileOpen>(json!(1000)).unwrap(), 1000);
        assert_eq!(
            parse_reply::<GuestExec>(json!({"pid": 77})).unwrap().pid,
            77
        );
        let running = parse_reply::<GuestExecStatus>(json!({"exited": false})).unwrap();
        assert!(!running.exited);
        assert_eq!(running.exitcode, None);
        let killed = parse_reply::<GuestExecStatus>(json!({"exited": true, "signal": 9})).unwrap();
        assert_eq!(killed.signal, Some(9));
        let err = parse_reply::<GuestExecStatus>(json!({"pid": 1})).unwrap_err();
        assert!(err.to_string().contains("guest-exec-status"), "{err}");
    }
}
