//! [`VmLaunch`]: a [`VmSpec`] plus what only a launcher can do for it (files to make), in the
//! JSON shape of a VM description.

use std::path::PathBuf;

use qemu_cmdline::{PortForward, Size, VmSpec};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::partitions::PartitionFiles;
use crate::cloudinit::CloudInitSpec;

/// A VM to launch: its description ([`VmSpec`], the hardware) and the work a launcher does
/// before QEMU starts: disks created, flashed or grown, a cloud-init seed written, a VNC socket
/// and UEFI variables placed in the VM's temp dir, Jumpstarter's default partitions added.
///
/// Its JSON form is the VM description with these launcher fields beside the spec's own: at
/// the top level `forwards` (onto the first user-mode NIC, added when there is none),
/// `disk_size`, `vsock`, `default_partitions` (`true`, or a map of partition files: see
/// [`PartitionFiles`]), `cloud_init` and `vnc`; in each disk `size` and `flash_from`, and a
/// disk may leave out `path`. Unknown fields are refused with their name.
///
/// ```
/// use qemu_process::VmLaunch;
/// let vm = VmLaunch::from_json(r#"{
///     "memory": "512M",
///     "disks": [{"name": "root", "size": "8G"}],
///     "cloud_init": {"hostname": "board-1", "username": "dev", "password": "secret"},
///     "forwards": [{"name": "ssh", "host_port": 0, "guest_port": 22}],
///     "vnc": true
/// }"#)?;
/// assert_eq!(vm.spec.nics[0].forwards()[0].guest_port, 22);
/// assert_eq!(vm.disks[0].size, Some(qemu_cmdline::Size::gib(8)));
/// # Ok::<(), qemu_process::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmLaunch {
    /// The VM's description. Its disks may lack a path (the launcher makes one in the VM's temp
    /// dir) and a format (the launcher probes an existing image once).
    pub spec: VmSpec,
    /// The size the disk `root` is grown to at launch (`"8G"`): Jumpstarter's `disk_size`.
    /// Used too as the size of a `root` disk the launcher creates. A disk is never shrunk: a
    /// `root` image larger than this is an error naming both sizes
    /// ([`Error::DiskTooSmall`](crate::Error::DiskTooSmall)), and growing needs the growth
    /// free on the image's file system ([`Error::NoSpace`](crate::Error::NoSpace)).
    pub disk_size: Option<Size>,
    /// Jumpstarter's default partitions, the named drives a flasher writes to. When true the
    /// launcher adds what is missing of: a disk `root` (qcow2 in the VM's temp dir, `disk_size`
    /// or 8G, virtio, booted first) and, unless `bios` or `uefi` is set, UEFI firmware from the
    /// architecture profile (drives `uefi_code` and `uefi_vars`). `partition_files` names the
    /// files some of them start from.
    pub default_partitions: bool,
    /// The files default partitions start from (the map form of `default_partitions` in JSON,
    /// which sets `default_partitions` too). A partition without a file is made as
    /// `default_partitions` says; a file for a partition the description has itself (a disk
    /// `root`, a `bios`, `uefi`) is an error.
    pub partition_files: PartitionFiles,
    /// A cloud-init NoCloud seed (a FAT disk labelled `CIDATA`, attached read-only) written
    /// into the VM's temp dir.
    pub cloud_init: Option<CloudInitSpec>,
    /// A VNC server on a unix socket in the VM's temp dir (with a `std` VGA card unless `vga`
    /// is set). Exclusive with a VNC `display`.
    pub vnc: bool,
    /// vsock: a `vhost-vsock-pci` device (`vhost-vsock-device` on MMIO) with a random context
    /// id a guest may have (not 0-2, not 0xFFFFFFFF), another one tried when the kernel
    /// refuses it as in use by another VM; [`Machine::vsock_cid`](crate::Machine::vsock_cid)
    /// reports it. Needs [`VHOST_VSOCK`](crate::VHOST_VSOCK) usable by this user, else the
    /// launch fails with [`Error::DeviceUnavailable`](crate::Error::DeviceUnavailable) naming it.
    pub vsock: bool,
    /// What to do for each disk of the spec, by position (missing entries: nothing).
    pub disks: Vec<DiskLaunch>,
}

/// What a launcher does for one disk before QEMU starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskLaunch {
    /// The virtual size: a missing image is created with this size (qcow2 unless the disk's
    /// `format` says otherwise) and a smaller one is grown to it. A larger one is an error
    /// naming both sizes (disks are never shrunk), and growing needs the growth free on the
    /// image's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// An image written into the disk before QEMU starts (any format qemu-img reads, optionally
    /// gzip, xz, bzip2 or zstd compressed), converted to the disk's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_from: Option<PathBuf>,
}

/// The launcher's keys at the top level of the JSON form.
const TOP_KEYS: [&str; 6] = [
    "forwards",
    "disk_size",
    "default_partitions",
    "cloud_init",
    "vnc",
    "vsock",
];

fn take<T: serde::de::DeserializeOwned>(
    map: &mut Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<T>, String> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| format!("{at}{key}: {e}")),
    }
}

impl VmLaunch {
    /// A launch of `spec` with no launcher work.
    pub fn new(spec: VmSpec) -> VmLaunch {
        VmLaunch {
            spec,
            ..VmLaunch::default()
        }
    }

    /// Reads the JSON form. Unknown fields, wrong types and invalid values are errors that name
    /// the field.
    pub fn from_json(text: &str) -> Result<VmLaunch, crate::Error> {
        serde_json::from_str(text).map_err(|e| {
            crate::Error::Spec(qemu_cmdline::Error::Spec {
                message: e.to_string(),
            })
        })
    }

    /// Writes the JSON form (fields at their defaults left out).
    pub fn to_json(&self) -> Result<String, crate::Error> {
        serde_json::to_string_pretty(self).map_err(|e| {
            crate::Error::Spec(qemu_cmdline::Error::Spec {
                message: e.to_string(),
            })
        })
    }

    /// The launcher work for disk `index` (nothing when not given).
    pub fn disk(&self, index: usize) -> DiskLaunch {
        self.disks.get(index).cloned().unwrap_or_default()
    }

    /// Whether anything but the spec is set (a launcher is needed to run it).
    pub fn needs_files(&self) -> bool {
        self.disk_size.is_some()
            || self.default_partitions
            || !self.partition_files.is_empty()
            || self.cloud_init.is_some()
            || self.vnc
            || self.vsock
            || self.disks.iter().any(|d| *d != DiskLaunch::default())
            || self.spec.disks.iter().any(|d| d.path.is_none())
    }

    fn from_map(mut map: Map<String, Value>) -> Result<VmLaunch, String> {
        let forwards: Vec<PortForward> = take(&mut map, "forwards", "")?.unwrap_or_default();
        let disk_size = take(&mut map, "disk_size", "")?;
        let (default_partitions, partition_files) = match map.remove("default_partitions") {
            None | Some(Value::Null) => (false, PartitionFiles::default()),
            Some(Value::Bool(on)) => (on, PartitionFiles::default()),
            Some(v @ Value::Object(_)) => (
                true,
                serde_json::from_value(v).map_err(|e| format!("default_partitions: {e}"))?,
            ),
            Some(_) => {
                return Err("default_partitions: true, false, or a map of partition names to                             files ({\"root\": PATH, \"OVMF_CODE.fd\": PATH, ...})"
                    .into())
            }
        };
        let cloud_init = take(&mut map, "cloud_init", "")?;
        let vnc = take(&mut map, "vnc", "")?.unwrap_or(false);
        let vsock = take(&mut map, "vsock", "")?.unwrap_or(false);
        let mut disks = Vec::new();
        if let Some(Value::Array(list)) = map.get_mut("disks") {
            for (i, disk) in list.iter_mut().enumerate() {
                let mut launch = DiskLaunch::default();
                if let Value::Object(d) = disk {
                    let at = format!("disks[{i}] ");
                    // The launcher's keys in each disk.
                    launch.size = take(d, "size", &at)?;
                    launch.flash_from = take(d, "flash_from", &at)?;
                }
                disks.push(launch);
            }
        }
        while disks.last() == Some(&DiskLaunch::default()) {
            disks.pop();
        }
        let mut spec: VmSpec = serde_json::from_value(Value::Object(map)).map_err(|e| {
            let text = e.to_string();
            // The spec lists its own fields; the launcher's are valid here too.
            if text.contains("unknown field") {
                format!("{text} (or a launcher field: {})", TOP_KEYS.join(", "))
            } else {
                text
            }
        })?;
        for f in forwards {
            spec.forward(f).map_err(|e| e.to_string())?;
        }
        Ok(VmLaunch {
            spec,
            disk_size,
            default_partitions,
            partition_files,
            cloud_init,
            vnc,
            vsock,
            disks,
        })
    }

    fn to_map(&self) -> Result<Map<String, Value>, String> {
        let mut map = match serde_json::to_value(&self.spec).map_err(|e| e.to_string())? {
            Value::Object(m) => m,
            _ => return Err("a VM spec serialises to an object".into()),
        };
        let mut put = |key: &str, v: Value| {
            map.insert(key.to_owned(), v);
        };
        let json = |v: &dyn erased::Ser| v.value();
        if let Some(s) = &self.disk_size {
            put("disk_size", json(s)?);
        }
        if !self.partition_files.is_empty() {
            put("default_partitions", json(&self.partition_files)?);
        } else if self.default_partitions {
            put("default_partitions", Value::Bool(true));
        }
        if let Some(c) = &self.cloud_init {
            put("cloud_init", json(c)?);
        }
        if self.vnc {
            put("vnc", Value::Bool(true));
        }
        if self.vsock {
            put("vsock", Value::Bool(true));
        }
        if let Some(Value::Array(list)) = map.get_mut("disks") {
            for (disk, launch) in list.iter_mut().zip(&self.disks) {
                if let (Value::Object(d), Value::Object(extra)) = (disk, json(launch)?) {
                    d.extend(extra);
                }
            }
        }
        Ok(map)
    }
}

/// A tiny object-safe view of `Serialize`, to turn several field types into JSON values.
mod erased {
    pub(super) trait Ser {
        fn value(&self) -> Result<serde_json::Value, String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> Result<serde_json::Value, String> {
            serde_json::to_value(self).map_err(|e| e.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for VmLaunch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<VmLaunch, D::Error> {
        let map = Map::<String, Value>::deserialize(d)?;
        VmLaunch::from_map(map).map_err(D::Error::custom)
    }
}

impl Serialize for VmLaunch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_map().map_err(S::Error::custom)?.serialize(s)
    }
}

impl From<VmSpec> for VmLaunch {
    fn from(spec: VmSpec) -> VmLaunch {
        VmLaunch::new(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_keys_are_taken_out_and_the_rest_is_the_spec() {
        let text = r#"{"disk_size": "8G", "default_partitions": true, "vnc": true,
            "cloud_init": {"hostname": "h", "username": "u", "password": "p: \"q\"",
                           "ssh_authorized_keys": ["ssh-ed25519 AAAA k"], "instance_id": "i",
                           "network_config": "version: 2"},
            "uefi": {"variant": "secure_boot_setup"},
            "forwards": [{"name": "web", "host_port": 0, "guest_port": 80}],
            "disks": [{"name": "data", "size": "1G", "format": "qcow2", "flash_from": "/x.xz"},
                      {"path": "/plain"}]}"#;
        let vm = VmLaunch::from_json(text).unwrap();
        assert_eq!(VmLaunch::from_json(&vm.to_json().unwrap()).unwrap(), vm);
        assert_eq!(vm.disk_size, Some(Size::gib(8)));
        assert_eq!(vm.disks.len(), 1, "trailing disks without launcher work");
        assert_eq!(vm.disk(0).flash_from, Some(PathBuf::from("/x.xz")));
        assert_eq!(vm.disk(1), DiskLaunch::default());
        assert_eq!(vm.spec.disks[0].path, None);
        assert_eq!(vm.spec.nics.len(), 1);
        assert_eq!(vm.spec.forwards()[0].0, "net0");
        assert!(vm.needs_files());
        assert!(!VmLaunch::from_json(r#"{"memory": "1G"}"#)
            .unwrap()
            .needs_files());
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        for (doc, needle) in [
            (r#"{"memroy": "1G"}"#, "unknown field `memroy`"),
            (r#"{"vnc": 3}"#, "vnc: invalid type"),
            (
                r#"{"disks": [{"path": "/a", "size": "2 GB"}]}"#,
                "disks[0] size",
            ),
            (
                r#"{"forwards": [{"host_port": 0, "guest_port": 70000}]}"#,
                "guest_port: port 70000 is out of range (1..=65535)",
            ),
            (
                r#"{"nics": [{"backend": {"type": "tap"}}],
                    "forwards": [{"host_port": 8080, "guest_port": 80}]}"#,
                "need a user-mode NIC",
            ),
            (
                r#"{"cloud_init": {"hostnam": "x"}}"#,
                "unknown field `hostnam`",
            ),
        ] {
            let msg = VmLaunch::from_json(doc).unwrap_err().to_string();
            assert!(msg.contains(needle), "{doc}: {msg}");
        }
    }
}
