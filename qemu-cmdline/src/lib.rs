//! Typed construction of QEMU and qemu-img command lines with correct escaping.
//!
//! Joining strings into a QEMU command line breaks on the first path with a comma in it:
//! QEMU reads `-blockdev driver=file,filename=/vm/a,b.img` as a file `/vm/a` and an unknown
//! option `b.img`. This crate never joins strings by hand. Every piece of a VM is a typed value
//! ([`Disk`], [`Nic`], [`Chardev`], [`Device`], ...), and [`CommandLine::build`] renders them all
//! into an [`Argv`] (a `Vec<OsString>`, so paths need not be UTF-8), where
//!
//! - every value has its commas doubled (`a,,b`), the QemuOpts/keyval escape;
//! - every key is checked to be a QAPI name, since keys cannot be escaped;
//! - a NUL byte, an invalid id, an id defined twice, a reference to an id nothing defines, a
//!   backend used by two devices, an invalid or clashing port, or a setting QEMU would reject
//!   is a typed [`Error`] naming the option and the field, never a silently wrong argv;
//! - optionally ([`CommandLine::json_syntax`]), `-blockdev`, `-object`, `-netdev` and `-device`
//!   are written as JSON (QEMU 6.2+), which needs no escaping at all.
//!
//! The crate does no I/O: it touches neither the file system nor processes.
//!
//! Also here: architecture profiles as data ([`Arch`], [`ArchProfile`]), `qemu-img` argv
//! ([`ImgInfo`], [`ImgCreate`], [`ImgResize`], [`ImgConvert`], [`ImgCheck`], [`ImgSnapshot`]),
//! and a serde/JSON VM description ([`VmSpec`]) for callers in other languages.
//!
//! ```
//! use qemu_cmdline::{Accel, Arch, Chardev, Disk, Format, Monitor, Nic, PortForward, Size};
//! let mut cmd = Arch::X86_64.profile().command_line(&[Accel::Kvm, Accel::Tcg]);
//! cmd.memory(Size::gib(1))
//!     .nodefaults()
//!     .disk(Disk::new("root", "/srv/vm 1/root,v2.qcow2").format(Format::Qcow2).bootindex(1))
//!     .nic(Nic::user("net0").forward(PortForward::tcp(2222, 22).name("ssh")))
//!     .chardev(Chardev::socket_fd("qmp", 3))
//!     .monitor(Monitor::qmp("qmp"));
//! let argv = cmd.build()?;
//! assert_eq!(argv.program, "qemu-system-x86_64");
//! assert!(argv.args.contains(&"driver=file,node-name=root-file,filename=/srv/vm 1/root,,v2.qcow2".into()));
//! # Ok::<(), qemu_cmdline::Error>(())
//! ```

// The README's examples run as doc tests (`cargo test --doc`); the README is what
// crates.io shows, the crate docs above are what docs.rs shows.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod block;
mod chardev;
mod cmdline;
mod device;
mod display;
mod error;
mod escape;
mod harness;
mod img;
mod machine;
mod net;
mod profile;
mod props;
mod render;
mod size;
mod spec;

pub use block::{Aio, Blockdev, CacheMode, Discard, Disk, DiskInterface, Format, Protocol};
pub use chardev::{Chardev, ChardevBackend, Monitor, MonitorMode, UNIX_PATH_MAX};
pub use cmdline::{Argv, CommandLine};
pub use device::{AddFd, Device, FwCfg, Object, Smbios, FW_CFG_NAME_MAX};
pub use display::{Display, Firmware, Vga, Vnc};
pub use error::{Error, IdKind};
pub use escape::{escape_value, id_problem, is_qapi_name, shell_quote, shell_quote_arg};
pub use harness::{
    qmp_listen_chardev, ConsoleDevice, Harness, MonitorAddress, CONSOLE_CHARDEV,
    CONSOLE_VIRTIO_SERIAL, GUEST_AGENT_CHARDEV, QMP_CHARDEV, QTEST_CHARDEV,
};
pub use img::{
    img_path, ImgCheck, ImgCommand, ImgConvert, ImgCreate, ImgInfo, ImgResize, ImgSnapshot, Repair,
    SnapshotAction,
};
pub use machine::{Accel, Cpu, Elevate, Machine, Sandbox, Smp};
pub use net::{
    MacAddr, NetBackend, Netdev, Nic, NicModel, PortForward, Proto, SocketNet, TapNet, UserNet,
};
pub use profile::{Arch, ArchProfile, UefiPaths, VirtioTransport, AARCH64, RISCV64, X86_64};
pub use props::{PropValue, Props};
pub use size::Size;
pub use spec::{
    DiskSpec, FwCfgSpec, NicSpec, UefiSpec, UefiVariant, VmSpec, GUEST_AGENT_PORT_ID,
    GUEST_AGENT_PORT_NAME, GUEST_AGENT_SERIAL_ID,
};
