//! A serde (JSON) description of a VM, for callers that hand over a document instead of
//! calling builders (the C ABI, Go, configuration files).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::machine::SmpOrCount;
use crate::{
    Accel, Aio, Arch, Argv, CacheMode, Chardev, ChardevBackend, CommandLine, Cpu, Device, Discard,
    Disk, DiskInterface, Display, Error, Firmware, Format, FwCfg, MacAddr, Machine, Monitor,
    NetBackend, Nic, NicModel, Object, PortForward, Props, Protocol, Sandbox, Size, Smp, Vga,
    VirtioTransport,
};
use crate::{Harness, GUEST_AGENT_CHARDEV};

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_display_none(d: &Display) -> bool {
    *d == Display::None
}

fn de_smp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Smp>, D::Error> {
    Option::<SmpOrCount>::deserialize(d).map(|o| o.map(|s| s.0))
}

fn ser_smp<S: Serializer>(smp: &Option<Smp>, s: S) -> Result<S::Ok, S::Error> {
    smp.map(SmpOrCount).serialize(s)
}

/// A whole VM as a JSON document: its hardware, and nothing about how to launch it. Every field
/// is optional; unknown fields are rejected with their name. [`VmSpec::to_command_line`] turns
/// it into a [`CommandLine`] through the architecture's [`ArchProfile`](crate::ArchProfile),
/// touching nothing on disk.
///
/// ```
/// use qemu_cmdline::VmSpec;
/// let spec = VmSpec::from_json(r#"{
///     "arch": "x86_64",
///     "memory": "1G",
///     "accel": ["kvm", "tcg"],
///     "disks": [{"path": "/vm/root.qcow2", "format": "qcow2", "bootindex": 1}],
///     "nics": [{"forwards": [{"host_port": 2222, "guest_port": 22, "name": "ssh"}]}]
/// }"#).unwrap();
/// let argv = spec.to_argv().unwrap();
/// assert!(argv.to_string().contains("hostfwd=tcp:127.0.0.1:2222-:22"));
/// assert!(VmSpec::from_json(r#"{"memroy": "1G"}"#).unwrap_err().to_string().contains("memroy"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmSpec {
    /// The guest architecture: `x86_64` (default), `aarch64` or `riscv64`. Picks the binary,
    /// machine, default CPU and virtio transport.
    pub arch: Arch,
    /// The QEMU binary; default `qemu-system-<arch>` from `PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// The machine: a type (`"q35"`) or `{"type": ..., "props": {...}}`; default the profile's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    /// The CPU: a model (`"max"`) or `{"model": ..., "props": {"vmx": true}}`; default the
    /// profile's for the accelerators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// The CPUs: a count (`4`) or `{"cpus": 4, "sockets": 1, "cores": 2, "threads": 2}`.
    #[serde(
        deserialize_with = "de_smp",
        serialize_with = "ser_smp",
        skip_serializing_if = "Option::is_none"
    )]
    pub smp: Option<Smp>,
    /// The RAM: `"512M"`, `"2G"`, or a number of bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    /// Accelerators tried in order (`["kvm", "tcg"]`); empty leaves QEMU's default (TCG).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accel: Vec<Accel>,
    /// The VM's name (`-name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The system UUID (`-uuid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// A kernel for direct kernel boot (`-kernel`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// An initrd for direct kernel boot (`-initrd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (`-append`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
    /// A device tree blob (`-dtb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtb: Option<PathBuf>,
    /// A BIOS image (`-bios`); exclusive with `uefi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<PathBuf>,
    /// UEFI firmware: `{"code": ..., "vars": ...}`; `vars` must be this VM's own writable copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi: Option<UefiSpec>,
    /// Disks, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpec>,
    /// Network cards, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicSpec>,
    /// Serial ports, in order: each a chardev backend (`{"type": "pty"}`,
    /// `{"type": "unix", "path": ..., "server": true}`, `{"type": "fd", "fd": 3}`, ...), given
    /// ids `serial0`, `serial1`, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub serial: Vec<ChardevBackend>,
    /// Further character devices, for devices and monitors to refer to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chardevs: Vec<Chardev>,
    /// Monitors (`{"chardev": ..., "mode": "control"}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub monitors: Vec<Monitor>,
    /// The display: `"none"` (default: VMs described here are headless) or
    /// `{"vnc": {"unix": PATH}}` / `{"vnc": {"tcp": {"host": ..., "display": N}}}`.
    #[serde(skip_serializing_if = "is_display_none")]
    pub display: Display,
    /// The VGA card (`"none"`, `"std"`, `"virtio"`, ...); default none with `nodefaults`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vga: Option<Vga>,
    /// Generic devices: `{"driver": ..., "id": ..., "props": {...}}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// QOM objects: `{"qom_type": ..., "id": ..., "props": {...}}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<Object>,
    /// fw_cfg entries: `{"name": "opt/...", "file": ...}` or `{"name": ..., "string": ...}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fw_cfg: Vec<FwCfgSpec>,
    /// The seccomp sandbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// Raw arguments appended after everything else, for what is not typed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Writes `-blockdev`, `-object`, `-netdev` and `-device` in JSON syntax (QEMU 6.2+).
    #[serde(skip_serializing_if = "is_false")]
    pub json_syntax: bool,
    /// `-nodefaults` (default true).
    #[serde(skip_serializing_if = "is_true")]
    pub nodefaults: bool,
    /// `-no-reboot`: a guest reboot exits QEMU.
    #[serde(skip_serializing_if = "is_false")]
    pub no_reboot: bool,
    /// `-S`: start with the CPUs paused.
    #[serde(skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Overrides the profile's virtio transport (`"pci"`, `"mmio"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtio_transport: Option<VirtioTransport>,
    /// A channel for the QEMU guest agent: a virtio-serial controller
    /// ([`GUEST_AGENT_SERIAL_ID`]) with the port `org.qemu.guest_agent.0`
    /// ([`GUEST_AGENT_PORT_ID`]) that qemu-ga opens in the guest. The port's backend is the
    /// chardev [`GUEST_AGENT_CHARDEV`](crate::GUEST_AGENT_CHARDEV): a launcher's
    /// ([`Harness::guest_agent_fd`]), or one in `chardevs` with that id; the command line is
    /// refused without either.
    #[serde(skip_serializing_if = "is_false")]
    pub guest_agent: bool,
}

/// The id of the virtio-serial controller a [`VmSpec`] with `guest_agent` adds.
pub const GUEST_AGENT_SERIAL_ID: &str = "qm-qga-vser";
/// The id of the guest agent's port (QEMU's `VSERPORT_CHANGE` events name it).
pub const GUEST_AGENT_PORT_ID: &str = "qm-qga-port";
/// The name the guest sees for the guest agent's port (`/dev/virtio-ports/...`).
pub const GUEST_AGENT_PORT_NAME: &str = "org.qemu.guest_agent.0";

impl Default for VmSpec {
    fn default() -> VmSpec {
        VmSpec {
            arch: Arch::X86_64,
            binary: None,
            machine: None,
            cpu: None,
            smp: None,
            memory: None,
            accel: Vec::new(),
            name: None,
            uuid: None,
            kernel: None,
            initrd: None,
            append: None,
            dtb: None,
            bios: None,
            uefi: None,
            disks: Vec::new(),
            nics: Vec::new(),
            serial: Vec::new(),
            chardevs: Vec::new(),
            monitors: Vec::new(),
            display: Display::None,
            vga: None,
            devices: Vec::new(),
            objects: Vec::new(),
            fw_cfg: Vec::new(),
            sandbox: None,
            extra_args: Vec::new(),
            json_syntax: false,
            nodefaults: true,
            no_reboot: false,
            paused: false,
            virtio_transport: None,
            guest_agent: false,
        }
    }
}

/// UEFI firmware files. [`VmSpec::to_command_line`] needs both paths; the architecture
/// profile's [`UefiPaths`](crate::UefiPaths) list where distributions install them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UefiSpec {
    /// The read-only code image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<PathBuf>,
    /// The variable store, which QEMU opens read-write: give each VM its own copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<PathBuf>,
    /// Which firmware build: `plain` (default), `secure_boot` or `secure_boot_setup`.
    #[serde(default, skip_serializing_if = "UefiVariant::is_plain")]
    pub variant: UefiVariant,
}

/// A UEFI firmware variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UefiVariant {
    /// Firmware without secure boot (`OVMF_CODE_4M.fd` with `OVMF_VARS_4M.fd`).
    #[default]
    Plain,
    /// Secure boot enforced, with the Microsoft keys enrolled (`OVMF_CODE_4M.secboot.fd` with
    /// `OVMF_VARS_4M.ms.fd`). Needs SMM: the command line gets `smm=on` and a secure pflash.
    SecureBoot,
    /// The secure-boot firmware with an empty variable store (setup mode: not enforcing until
    /// keys are enrolled), for enrolling one's own keys.
    SecureBootSetup,
}

impl UefiVariant {
    /// Whether this is [`UefiVariant::Plain`].
    pub fn is_plain(&self) -> bool {
        *self == UefiVariant::Plain
    }
    /// Whether the firmware is the secure-boot build (which needs SMM and a secure pflash).
    pub fn is_secure_boot(&self) -> bool {
        !self.is_plain()
    }
}

/// A disk of a [`VmSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// The id (also accepted as `name`); default `disk0`, `disk1`, ... by position.
    #[serde(default, alias = "name", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The image file; a command line needs it (a disk without one is an error naming it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The format, passed to QEMU explicitly (QEMU never probes): `raw` when absent. Give the
    /// format of a writable raw image the guest controls: a guest can write any header into
    /// it, and a later probe would believe that header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// `file` (default) or `host_device`.
    #[serde(default, skip_serializing_if = "is_file")]
    pub protocol: Protocol,
    /// `virtio` (default), `scsi`, `nvme` or `ide`.
    #[serde(default, skip_serializing_if = "is_virtio")]
    pub interface: DiskInterface,
    /// For `scsi`: the controller id (default `scsi0`, created when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scsi_controller: Option<String>,
    /// Opens the image read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Sends writes to a qcow2 overlay (`overlay`) and leaves the image untouched.
    #[serde(default, skip_serializing_if = "is_false")]
    pub snapshot: bool,
    /// The overlay for `snapshot`; it must exist when QEMU starts (see
    /// [`Disk::overlay_create`] for the qemu-img command that makes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<PathBuf>,
    /// The host cache mode (`writeback`, `none`, `writethrough`, `directsync`, `unsafe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheMode>,
    /// Guest discard requests: `ignore` or `unmap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<Discard>,
    /// The I/O engine: `threads`, `native` or `io_uring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aio: Option<Aio>,
    /// The boot order (lower first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootindex: Option<u32>,
    /// The serial number the guest sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

fn is_file(p: &Protocol) -> bool {
    *p == Protocol::File
}
fn is_virtio(i: &DiskInterface) -> bool {
    *i == DiskInterface::Virtio
}

impl DiskSpec {
    /// A raw virtio disk at `path`.
    pub fn new(path: impl Into<PathBuf>) -> DiskSpec {
        DiskSpec {
            id: None,
            path: Some(path.into()),
            format: None,
            protocol: Protocol::File,
            interface: DiskInterface::Virtio,
            scsi_controller: None,
            read_only: false,
            snapshot: false,
            overlay: None,
            cache: None,
            discard: None,
            aio: None,
            bootindex: None,
            serial: None,
        }
    }

    /// The builder form, for disk number `index`.
    pub fn to_disk(&self, index: usize) -> Result<Disk, Error> {
        let id = self.id.clone().unwrap_or_else(|| format!("disk{index}"));
        let field = format!("disks[{index}] ({id:?})");
        let Some(path) = &self.path else {
            return Err(Error::invalid(
                format!("{field} path"),
                "the disk has no path",
            ));
        };
        let mut d = Disk::new(id, path)
            .format(self.format.clone().unwrap_or_default())
            .protocol(self.protocol)
            .interface(self.interface)
            .read_only(self.read_only);
        if let Some(c) = &self.scsi_controller {
            d = d.scsi_controller(c);
        }
        match (self.snapshot, &self.overlay) {
            (true, Some(o)) => d = d.snapshot(o),
            (true, None) => {
                return Err(Error::invalid(
                    format!("{field} overlay"),
                    "snapshot needs an overlay file (`overlay`)",
                ))
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    format!("{field} overlay"),
                    "an overlay is set but snapshot is false",
                ))
            }
            (false, None) => {}
        }
        if let Some(c) = self.cache {
            d = d.cache(c);
        }
        if let Some(x) = self.discard {
            d = d.discard(x);
        }
        if let Some(a) = self.aio {
            d = d.aio(a);
        }
        if let Some(b) = self.bootindex {
            d = d.bootindex(b);
        }
        if let Some(s) = &self.serial {
            d = d.serial(s);
        }
        Ok(d)
    }
}

/// A network card of a [`VmSpec`]. Its port forwards live in its user-mode backend (the one
/// place QEMU has them); the JSON form also takes them as `forwards` on the card itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "NicDoc")]
pub struct NicSpec {
    /// The id of the netdev and the device (also accepted as `name`); default `net0`, ...
    #[serde(default, alias = "name", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `virtio` (default), `e1000`, `e1000e`, `rtl8139` or another NIC device name.
    #[serde(default, skip_serializing_if = "is_virtio_nic")]
    pub model: NicModel,
    /// The MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// The backend: `{"type": "user", ...}` (default), `{"type": "tap", ...}` or
    /// `{"type": "socket", "socket": {...}}`. Port forwards are the user backend's
    /// (`{"type": "user", "forwards": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<NetBackend>,
    /// The boot order (network boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootindex: Option<u32>,
    /// Extra `-device` properties (`romfile`, `mq`, ...).
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub props: Props,
}

fn is_virtio_nic(m: &NicModel) -> bool {
    *m == NicModel::Virtio
}

/// The JSON form of a [`NicSpec`]: the same fields, plus `forwards` on the card, which go into
/// its user-mode backend.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NicDoc {
    #[serde(default, alias = "name")]
    id: Option<String>,
    #[serde(default)]
    model: NicModel,
    #[serde(default)]
    mac: Option<MacAddr>,
    #[serde(default)]
    backend: Option<NetBackend>,
    /// `[{"proto": "tcp", "host_addr": ..., "host_port": 2222, "guest_addr": ...,
    /// "guest_port": 22, "name": "ssh"}]`: each listens on `127.0.0.1` unless `host_addr` says
    /// otherwise (`"0.0.0.0"`: every address).
    #[serde(default)]
    forwards: Vec<PortForward>,
    #[serde(default)]
    bootindex: Option<u32>,
    #[serde(default)]
    props: Props,
}

impl TryFrom<NicDoc> for NicSpec {
    type Error = String;
    fn try_from(d: NicDoc) -> Result<NicSpec, String> {
        let mut nic = NicSpec {
            id: d.id,
            model: d.model,
            mac: d.mac,
            backend: d.backend,
            bootindex: d.bootindex,
            props: d.props,
        };
        for f in d.forwards {
            nic.forward(f).map_err(|e| e.to_string())?;
        }
        Ok(nic)
    }
}

impl NicSpec {
    /// Adds a port forward to the card's backend, which must be user-mode (the default).
    pub fn forward(&mut self, forward: PortForward) -> Result<&mut Self, Error> {
        match self.backend.get_or_insert_with(NetBackend::default) {
            NetBackend::User(u) => {
                u.forwards.push(forward);
                Ok(self)
            }
            other => Err(Error::invalid(
                format!(
                    "nic {:?} forwards",
                    self.id.as_deref().unwrap_or("(unnamed)")
                ),
                format!(
                    "port forwards need a user-mode backend, this one is {}",
                    other.type_name()
                ),
            )),
        }
    }

    /// The port forwards of this card (those of its user-mode backend).
    pub fn forwards(&self) -> &[PortForward] {
        match &self.backend {
            Some(NetBackend::User(u)) => &u.forwards,
            _ => &[],
        }
    }

    /// Whether the card uses user-mode networking (the default backend).
    pub fn is_user(&self) -> bool {
        matches!(self.backend, None | Some(NetBackend::User(_)))
    }

    /// The builder form, for NIC number `index`.
    pub fn to_nic(&self, index: usize) -> Nic {
        let id = self.id.clone().unwrap_or_else(|| format!("net{index}"));
        let mut nic =
            Nic::new(id, self.backend.clone().unwrap_or_default()).model(self.model.clone());
        if let Some(m) = self.mac {
            nic = nic.mac(m);
        }
        if let Some(b) = self.bootindex {
            nic = nic.bootindex(b);
        }
        for (k, v) in self.props.iter() {
            nic = nic.device_prop(k, v.clone());
        }
        nic
    }
}

/// A fw_cfg entry of a [`VmSpec`]: exactly one of `file` and `string`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FwCfgSpec {
    /// The name (`opt/com.example/config`).
    pub name: String,
    /// A file whose contents are the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A string that is the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
}

impl VmSpec {
    /// Reads a spec from JSON. Unknown fields, wrong types and invalid values are errors that
    /// name the field and the position.
    pub fn from_json(text: &str) -> Result<VmSpec, Error> {
        serde_json::from_str(text).map_err(|e| Error::Spec {
            message: e.to_string(),
        })
    }

    /// Writes the spec as JSON (fields at their defaults left out).
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Spec {
            message: e.to_string(),
        })
    }

    /// The command line the spec describes, built on the architecture's profile. The caller may
    /// add to it before [`CommandLine::build`].
    pub fn to_command_line(&self) -> Result<CommandLine, Error> {
        self.to_command_line_with(&Harness::default())
    }

    /// The program: `binary`, or the architecture's `qemu-system-<arch>`.
    pub fn program(&self) -> PathBuf {
        self.binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(self.arch.profile().binary))
    }

    /// [`VmSpec::to_command_line`] with a launcher's [`Harness`] written first (so that its
    /// console is the guest's first serial port, before the spec's `serial` entries).
    pub fn to_command_line_with(&self, harness: &Harness) -> Result<CommandLine, Error> {
        let profile = self.arch.profile();
        let mut cmd = CommandLine::new(self.program());
        cmd.harness(harness);
        let mut errors = Vec::new();
        let mut machine = self.machine.clone().unwrap_or_else(|| profile.machine());
        let secure_boot = self
            .uefi
            .as_ref()
            .is_some_and(|u| u.variant.is_secure_boot());
        if secure_boot {
            if self.arch == Arch::X86_64 {
                // The secure-boot build keeps its variables in SMM-protected flash.
                machine = machine.prop("smm", "on");
                cmd.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
            } else {
                errors.push(Error::invalid(
                    "uefi variant",
                    format!("secure boot is supported on x86_64 only, not {}", self.arch),
                ));
            }
        }
        let machine_type = machine.machine_type().to_owned();
        cmd.json_syntax(self.json_syntax)
            .virtio_transport(self.virtio_transport.unwrap_or(profile.virtio_transport))
            .machine(machine)
            .accel_fallback(self.accel.iter().cloned());
        // The profile's CPU is for a board with CPUs: `-machine none` has none, and QEMU
        // refuses a `-cpu` there (x86: "apic-id property was not initialized properly").
        let default_cpu = || match machine_type.as_str() {
            "none" => None,
            _ => profile.cpu_for(&self.accel),
        };
        if let Some(cpu) = self.cpu.clone().or_else(default_cpu) {
            cmd.cpu(cpu);
        }
        if let Some(smp) = self.smp {
            cmd.smp(smp);
        }
        if let Some(m) = self.memory {
            cmd.memory(m);
        }
        if let Some(n) = &self.name {
            cmd.name(n);
        }
        if let Some(u) = &self.uuid {
            cmd.uuid(u);
        }
        if self.nodefaults {
            cmd.nodefaults();
        }
        if self.no_reboot {
            cmd.no_reboot();
        }
        if self.paused {
            cmd.paused();
        }
        if let Some(s) = self.sandbox {
            cmd.sandbox(s);
        }
        match (&self.bios, &self.uefi) {
            (Some(_), Some(_)) => errors.push(Error::invalid(
                "bios",
                "bios and uefi are both set; choose one firmware",
            )),
            (Some(b), None) => {
                cmd.firmware(Firmware::Bios(b.clone()));
            }
            (None, Some(u)) => match (&u.code, &u.vars) {
                (Some(code), Some(vars)) => {
                    cmd.firmware(Firmware::Uefi {
                        code: code.clone(),
                        vars: vars.clone(),
                    });
                }
                _ => errors.push(Error::invalid("uefi", "set both code and vars")),
            },
            (None, None) => {}
        }
        if let Some(k) = &self.kernel {
            cmd.kernel(k);
        }
        if let Some(i) = &self.initrd {
            cmd.initrd(i);
        }
        if let Some(a) = &self.append {
            cmd.append(a);
        }
        if let Some(d) = &self.dtb {
            cmd.dtb(d);
        }
        cmd.display(self.display.clone());
        if let Some(v) = self.vga {
            cmd.vga(v);
        }
        for o in &self.objects {
            cmd.object(o.clone());
        }
        for c in &self.chardevs {
            cmd.chardev(c.clone());
        }
        for (i, d) in self.disks.iter().enumerate() {
            match d.to_disk(i) {
                Ok(d) => {
                    cmd.disk(d);
                }
                Err(e) => errors.push(e),
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            cmd.nic(n.to_nic(i));
        }
        for (i, backend) in self.serial.iter().enumerate() {
            let id = format!("serial{i}");
            cmd.chardev(Chardev::new(id.as_str(), backend.clone()))
                .serial(id);
        }
        for m in &self.monitors {
            cmd.monitor(m.clone());
        }
        if self.guest_agent {
            let has_backend = harness.guest_agent_fd.is_some()
                || self.chardevs.iter().any(|c| c.id == GUEST_AGENT_CHARDEV);
            if has_backend {
                let transport = self.virtio_transport.unwrap_or(profile.virtio_transport);
                cmd.device(
                    Device::new(transport.device("virtio-serial")).id(GUEST_AGENT_SERIAL_ID),
                )
                .device(
                    Device::new("virtserialport")
                        .id(GUEST_AGENT_PORT_ID)
                        .prop("bus", format!("{GUEST_AGENT_SERIAL_ID}.0"))
                        .prop("chardev", GUEST_AGENT_CHARDEV)
                        .prop("name", GUEST_AGENT_PORT_NAME),
                );
            } else {
                errors.push(Error::invalid(
                    "guest_agent",
                    format!(
                        "the guest agent's port needs a backend: a launcher's channel \
                         (Harness::guest_agent_fd, as qemu-process gives it), or a chardev with \
                         id {GUEST_AGENT_CHARDEV:?} in `chardevs`"
                    ),
                ));
            }
        }
        for d in &self.devices {
            cmd.device(d.clone());
        }
        for (i, f) in self.fw_cfg.iter().enumerate() {
            match (&f.file, &f.string) {
                (Some(p), None) => {
                    cmd.fw_cfg(FwCfg::file(f.name.as_str(), p));
                }
                (None, Some(s)) => {
                    cmd.fw_cfg(FwCfg::string(f.name.as_str(), s.as_str()));
                }
                _ => errors.push(Error::invalid(
                    format!("fw_cfg[{i}] ({:?})", f.name),
                    "give exactly one of file and string",
                )),
            }
        }
        cmd.args(&self.extra_args);
        Error::collect(errors)?;
        Ok(cmd)
    }

    /// Adds a port forward to the first user-mode NIC, adding a NIC `net0` with the default
    /// (user-mode) backend when the VM has none.
    pub fn forward(&mut self, forward: PortForward) -> Result<&mut Self, Error> {
        if self.nics.is_empty() {
            self.nics.push(NicSpec::default());
        }
        match self.nics.iter_mut().find(|n| n.is_user()) {
            Some(nic) => {
                nic.forward(forward)?;
                Ok(self)
            }
            None => Err(Error::invalid(
                "forwards",
                "port forwards need a user-mode NIC, and every NIC has another backend",
            )),
        }
    }

    /// Every port forward, with the id of the NIC it belongs to (`net0`, ... by position when
    /// the NIC has no id), in NIC order.
    pub fn forwards(&self) -> Vec<(String, &PortForward)> {
        self.nics
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                let id = n.id.clone().unwrap_or_else(|| format!("net{i}"));
                n.forwards().iter().map(move |f| (id.clone(), f))
            })
            .collect()
    }

    /// [`VmSpec::to_command_line`] and [`CommandLine::build`] in one step.
    pub fn to_argv(&self) -> Result<Argv, Error> {
        self.to_command_line()?.build()
    }
}
