//! Disks: `-blockdev` node graphs and the `-device` that attaches them.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::render::{Env, Grammar, Opt, Opts};
use crate::{Error, IdKind, PropValue, Props, VirtioTransport};

/// An image format: the driver of the format node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Raw bytes (the default: formats are never probed).
    #[default]
    Raw,
    /// QEMU copy-on-write v2.
    Qcow2,
    /// VMware.
    Vmdk,
    /// VirtualBox.
    Vdi,
    /// Hyper-V.
    Vhdx,
    /// VirtualPC (`.vhd`).
    Vpc,
    /// QEMU enhanced disk.
    Qed,
    /// Any other format driver QEMU knows.
    Other(String),
}

impl Format {
    /// The driver name.
    pub fn name(&self) -> &str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhdx => "vhdx",
            Format::Vpc => "vpc",
            Format::Qed => "qed",
            Format::Other(s) => s,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format, Error> {
        Ok(match s {
            "raw" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vdi" => Format::Vdi,
            "vhdx" => Format::Vhdx,
            "vpc" => Format::Vpc,
            "qed" => Format::Qed,
            other if crate::escape::is_qapi_name(other) => Format::Other(other.to_string()),
            other => {
                return Err(Error::invalid(
                    "format",
                    format!("{other:?} is not a format name"),
                ))
            }
        })
    }
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The protocol node that reads the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// A regular file (`driver=file`).
    #[default]
    File,
    /// A block device such as `/dev/sdb` (`driver=host_device`).
    HostDevice,
}

impl Protocol {
    fn driver(self) -> &'static str {
        match self {
            Protocol::File => "file",
            Protocol::HostDevice => "host_device",
        }
    }
}

/// How the guest sees the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskInterface {
    /// virtio-blk on the command line's virtio transport (PCI or MMIO).
    #[default]
    Virtio,
    /// `scsi-hd` on a virtio-scsi controller (created when the command line has none).
    Scsi,
    /// An NVMe controller with one namespace.
    Nvme,
    /// `ide-hd` on the board's IDE/AHCI bus (q35, pc).
    Ide,
}

/// The host cache mode, as in `-drive cache=`; expanded into `cache.direct`, `cache.no-flush`
/// and the device's `write-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Host page cache, guest flushes honoured (QEMU's default).
    Writeback,
    /// `O_DIRECT`, guest flushes honoured.
    None,
    /// Host page cache, every write flushed (guest sees no write cache).
    Writethrough,
    /// `O_DIRECT`, every write flushed.
    Directsync,
    /// Host page cache, flushes ignored: fast, loses data if the host crashes.
    Unsafe,
}

impl CacheMode {
    /// (direct, no_flush, guest write cache)
    fn expand(self) -> (bool, bool, bool) {
        match self {
            CacheMode::Writeback => (false, false, true),
            CacheMode::None => (true, false, true),
            CacheMode::Writethrough => (false, false, false),
            CacheMode::Directsync => (true, false, false),
            CacheMode::Unsafe => (false, true, true),
        }
    }
}

/// What to do with guest discard (TRIM/UNMAP) requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discard {
    /// Drop them (QEMU's default).
    Ignore,
    /// Pass them down: punch holes in the image.
    Unmap,
}

/// The asynchronous I/O engine of the protocol node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aio {
    /// A thread pool (QEMU's default).
    Threads,
    /// Linux native AIO; needs `cache.direct=on` ([`CacheMode::None`] or
    /// [`CacheMode::Directsync`]).
    Native,
    /// Linux io_uring.
    IoUring,
}

impl Aio {
    fn name(self) -> &'static str {
        match self {
            Aio::Threads => "threads",
            Aio::Native => "native",
            Aio::IoUring => "io_uring",
        }
    }
}

/// A disk: an image file opened through a `-blockdev` graph (protocol node, format node and,
/// for snapshots, a qcow2 overlay) and attached with a `-device`.
///
/// With id `root`, the nodes are `root-file` (protocol) and `root` (format), and the device id
/// is `root`. With a snapshot overlay, the image is opened read-only as `root-file`/`root-base`,
/// the overlay file as `root-ovl`, and the qcow2 overlay node on top is `root`. Block node
/// names are at most 31 bytes, so a disk id is at most 26 (21 with an overlay).
///
/// ```
/// use qemu_cmdline::{CommandLine, Disk, DiskInterface, Format};
/// let mut cmd = CommandLine::new("qemu-system-x86_64");
/// cmd.disk(Disk::new("root", "/images/a,b.qcow2").format(Format::Qcow2).bootindex(1));
/// let argv = cmd.build().unwrap();
/// assert!(argv.to_string().contains("filename=/images/a,,b.qcow2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    id: String,
    path: OsString,
    format: Format,
    protocol: Protocol,
    interface: DiskInterface,
    scsi_controller: Option<String>,
    read_only: bool,
    overlay: Option<OsString>,
    cache: Option<CacheMode>,
    discard: Option<Discard>,
    aio: Option<Aio>,
    bootindex: Option<u32>,
    serial: Option<String>,
    device_props: Props,
    format_props: Props,
}

impl Disk {
    /// A raw, writable virtio disk with id `id` backed by `path`.
    pub fn new(id: impl Into<String>, path: impl AsRef<OsStr>) -> Disk {
        Disk {
            id: id.into(),
            path: path.as_ref().to_os_string(),
            format: Format::Raw,
            protocol: Protocol::File,
            interface: DiskInterface::Virtio,
            scsi_controller: None,
            read_only: false,
            overlay: None,
            cache: None,
            discard: None,
            aio: None,
            bootindex: None,
            serial: None,
            device_props: Props::new(),
            format_props: Props::new(),
        }
    }
    /// Sets the image format (default raw; formats are never probed).
    pub fn format(mut self, format: Format) -> Disk {
        self.format = format;
        self
    }
    /// Sets the protocol driver (default `file`; `host_device` for block devices).
    pub fn protocol(mut self, protocol: Protocol) -> Disk {
        self.protocol = protocol;
        self
    }
    /// Sets how the guest sees the disk (default virtio).
    pub fn interface(mut self, interface: DiskInterface) -> Disk {
        self.interface = interface;
        self
    }
    /// For [`DiskInterface::Scsi`]: the id of the virtio-scsi controller (default `scsi0`).
    /// A controller that no `-device` defines is added to the command line.
    pub fn scsi_controller(mut self, id: impl Into<String>) -> Disk {
        self.scsi_controller = Some(id.into());
        self
    }
    /// Opens the image read-only.
    pub fn read_only(mut self, read_only: bool) -> Disk {
        self.read_only = read_only;
        self
    }
    /// Writes go to a qcow2 overlay at `overlay` and the image is opened read-only. The overlay
    /// must exist before QEMU starts; [`Disk::overlay_create`] gives the qemu-img argv for it.
    pub fn snapshot(mut self, overlay: impl AsRef<OsStr>) -> Disk {
        self.overlay = Some(overlay.as_ref().to_os_string());
        self
    }
    /// Sets the host cache mode.
    pub fn cache(mut self, cache: CacheMode) -> Disk {
        self.cache = Some(cache);
        self
    }
    /// Sets what happens to guest discard requests.
    pub fn discard(mut self, discard: Discard) -> Disk {
        self.discard = Some(discard);
        self
    }
    /// Sets the I/O engine.
    pub fn aio(mut self, aio: Aio) -> Disk {
        self.aio = Some(aio);
        self
    }
    /// Sets the boot order of the device (lower boots first).
    pub fn bootindex(mut self, index: u32) -> Disk {
        self.bootindex = Some(index);
        self
    }
    /// Sets the serial number the guest sees (NVMe disks default to the id).
    pub fn serial(mut self, serial: impl Into<String>) -> Disk {
        self.serial = Some(serial.into());
        self
    }
    /// Sets an extra property of the `-device` (`discard_granularity`, `addr`, ...).
    pub fn device_prop(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Disk {
        self.device_props.set(key, value);
        self
    }
    /// Sets an extra property of the image's format node (`detect-zeroes`, ...).
    pub fn format_prop(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Disk {
        self.format_props.set(key, value);
        self
    }

    /// The id (top node name and device id).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The image path.
    pub fn path(&self) -> &OsStr {
        &self.path
    }
    /// The image format.
    pub fn image_format(&self) -> &Format {
        &self.format
    }
    /// The overlay path, when the disk is a snapshot.
    pub fn overlay(&self) -> Option<&OsStr> {
        self.overlay.as_deref()
    }
    /// The disk interface.
    pub fn disk_interface(&self) -> DiskInterface {
        self.interface
    }
    /// The SCSI controller id for [`DiskInterface::Scsi`].
    pub fn scsi_controller_id(&self) -> &str {
        self.scsi_controller.as_deref().unwrap_or("scsi0")
    }

    /// For a snapshot disk, the qemu-img argv that creates its overlay:
    /// `qemu-img create -f qcow2 -b IMAGE -F FORMAT OVERLAY`. qemu-img opens the image to
    /// learn its size, relative to the overlay's directory: give absolute paths.
    pub fn overlay_create(&self) -> Option<crate::ImgCreate> {
        let overlay = self.overlay.as_ref()?;
        Some(crate::ImgCreate::new(overlay, Format::Qcow2).backing(&self.path, self.format.clone()))
    }

    pub(crate) fn render(&self, env: &Env, out: &mut Vec<Opt>) -> Result<(), Error> {
        let id = &self.id;
        let what = format!("disk {id:?}");
        let mut errors = Vec::new();
        let (direct, no_flush, write_cache) = self
            .cache
            .map(CacheMode::expand)
            .unwrap_or((false, false, true));
        if self.aio == Some(Aio::Native) && !direct {
            errors.push(Error::invalid(
                format!("{what} aio"),
                "aio=native needs cache.direct=on: use cache none or directsync",
            ));
        }
        if self.interface == DiskInterface::Ide && self.read_only && self.overlay.is_none() {
            errors.push(Error::invalid(
                format!("{what} interface"),
                "ide-hd cannot use a read-only image: use virtio, scsi or a snapshot overlay",
            ));
        }
        Error::collect(errors)?;

        let cache = || {
            Props::new()
                .with("direct", direct)
                .with("no-flush", no_flush)
        };
        let common = |props: &mut Props, read_only: bool| {
            if read_only {
                props.set("read-only", true);
            }
            if self.cache.is_some() {
                props.set("cache", cache());
            }
            if let Some(d) = self.discard {
                props.set(
                    "discard",
                    match d {
                        Discard::Ignore => "ignore",
                        Discard::Unmap => "unmap",
                    },
                );
            }
        };
        let protocol_node = |node: &str, path: &OsStr, read_only: bool| {
            let mut props = Props::new()
                .with("driver", self.protocol.driver())
                .with("node-name", node)
                .with("filename", path);
            common(&mut props, read_only);
            if let Some(aio) = self.aio {
                props.set("aio", aio.name());
            }
            Opt::opts(
                "-blockdev",
                what.clone(),
                Opts::new(Grammar::Keyval, true).props(props),
            )
            .define(IdKind::Node, node, "node-name")
        };

        let base_ro = self.read_only || self.overlay.is_some();
        let file_node = format!("{id}-file");
        let format_node = if self.overlay.is_some() {
            format!("{id}-base")
        } else {
            id.clone()
        };
        out.push(protocol_node(&file_node, &self.path, base_ro));
        let mut fmt_props = Props::new()
            .with("driver", self.format.name())
            .with("node-name", format_node.as_str())
            .with("file", file_node.as_str());
        common(&mut fmt_props, base_ro);
        fmt_props.extend(&self.format_props);
        out.push(
            Opt::opts(
                "-blockdev",
                what.clone(),
                Opts::new(Grammar::Keyval, true).props(fmt_props),
            )
            .define(IdKind::Node, format_node.as_str(), "node-name"),
        );
        if let Some(overlay) = &self.overlay {
            let ovl_file = format!("{id}-ovl");
            out.push(protocol_node(&ovl_file, overlay, self.read_only));
            let mut props = Props::new()
                .with("driver", "qcow2")
                .with("node-name", id.as_str())
                .with("file", ovl_file.as_str())
                .with("backing", format_node.as_str());
            common(&mut props, self.read_only);
            out.push(
                Opt::opts(
                    "-blockdev",
                    what.clone(),
                    Opts::new(Grammar::Keyval, true).props(props),
                )
                .define(IdKind::Node, id.as_str(), "node-name"),
            );
        }

        let driver = match self.interface {
            DiskInterface::Virtio => env.transport.device("virtio-blk"),
            DiskInterface::Scsi => "scsi-hd".to_string(),
            DiskInterface::Nvme => "nvme".to_string(),
            DiskInterface::Ide => "ide-hd".to_string(),
        };
        let mut props = Props::new().with("id", id.as_str());
        if self.interface == DiskInterface::Scsi {
            props.set("bus", format!("{}.0", self.scsi_controller_id()));
        }
        props.set("drive", id.as_str());
        if let Some(i) = self.bootindex {
            props.set("bootindex", i);
        }
        match (&self.serial, self.interface) {
            (Some(s), _) => {
                props.set("serial", s.as_str());
            }
            (None, DiskInterface::Nvme) => {
                props.set("serial", id.as_str());
            }
            (None, _) => {}
        }
        if !write_cache {
            props.set("write-cache", "off");
        }
        props.extend(&self.device_props);
        let mut dev = Opt::opts(
            "-device",
            what.clone(),
            Opts::new(Grammar::QemuOpts, true)
                .implied("driver", driver)
                .props(props.clone()),
        );
        dev = device_refs(dev, &props);
        out.push(dev);
        Ok(())
    }
}

/// Adds the ids a `-device`'s properties define and refer to.
pub(crate) fn device_refs(mut opt: Opt, props: &Props) -> Opt {
    // Every scalar is an id as QEMU reads it (`id=1` is the id "1", which is invalid).
    let s = |k: &str| match props.get(k)? {
        PropValue::Str(s) => Some(s.to_string_lossy().into_owned()),
        PropValue::Int(n) => Some(n.to_string()),
        PropValue::UInt(n) => Some(n.to_string()),
        PropValue::Bool(b) => Some(if *b { "on" } else { "off" }.to_string()),
        PropValue::Map(_) | PropValue::List(_) => None,
    };
    if let Some(id) = s("id") {
        opt = opt.define(IdKind::Device, id, "id");
    }
    for (field, kind) in [
        ("drive", IdKind::Node),
        ("netdev", IdKind::Netdev),
        ("chardev", IdKind::Chardev),
    ] {
        if let Some(id) = s(field) {
            opt = opt.uses(kind, id, field);
        }
    }
    for (field, kind) in [
        ("bus", IdKind::Bus),
        ("memdev", IdKind::Object),
        ("iothread", IdKind::Object),
        ("rng", IdKind::Object),
    ] {
        if let Some(id) = s(field) {
            opt = opt.refers(kind, id, field);
        }
    }
    opt
}

/// A block node written by hand: `-blockdev driver=...,node-name=...,...`. For graphs the typed
/// [`Disk`] does not cover (NBD, throttling, copy-on-read, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blockdev {
    driver: String,
    node_name: String,
    #[serde(default)]
    props: Props,
}

impl Blockdev {
    /// A node with driver `driver` and node name `node_name`.
    pub fn new(driver: impl Into<String>, node_name: impl Into<String>) -> Blockdev {
        Blockdev {
            driver: driver.into(),
            node_name: node_name.into(),
            props: Props::new(),
        }
    }
    /// Sets a property; `file` and `backing` given as strings are node names that must exist.
    pub fn prop(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Blockdev {
        self.props.set(key, value);
        self
    }
    /// The node name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub(crate) fn render(&self) -> Opt {
        let mut props = Props::new()
            .with("driver", self.driver.as_str())
            .with("node-name", self.node_name.as_str());
        props.extend(&self.props);
        let mut opt = Opt::opts(
            "-blockdev",
            format!("-blockdev {} (node-name={})", self.driver, self.node_name),
            Opts::new(Grammar::Keyval, true).props(props),
        )
        .define(IdKind::Node, self.node_name.as_str(), "node-name");
        for field in ["file", "backing"] {
            if let Some(id) = self.props.get(field).and_then(PropValue::as_os_str) {
                opt = opt.refers(IdKind::Node, id.to_string_lossy(), field);
            }
        }
        opt
    }
}

impl VirtioTransport {
    /// The device name of virtio device `base` (`virtio-blk`) on this transport.
    pub fn device(self, base: &str) -> String {
        match self {
            VirtioTransport::Pci => format!("{base}-pci"),
            VirtioTransport::Mmio => format!("{base}-device"),
        }
    }
}
