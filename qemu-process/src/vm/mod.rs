//! Launching a VM from its description: [`VmLaunch`] (a [`VmSpec`](qemu_cmdline::VmSpec) plus
//! the launcher's work), its resolution into the spec QEMU runs, and what a launched VM reports:
//! port [`Forward`]s, named [`Drive`]s. [`Machine`](crate::Machine) launches it
//! ([`MachineConfig::vm`](crate::MachineConfig::vm)) and offers flashing, dumping and
//! screendumps on it.

mod forwards;
mod launch;
mod partitions;
pub(crate) mod resolve;
pub(crate) mod vsock;

use std::path::{Path, PathBuf};

use qemu_cmdline::{Format, Size};

pub(crate) use forwards::read_forwards;
pub use forwards::Forward;
pub use launch::{DiskLaunch, VmLaunch};
pub use partitions::{Partition, PartitionFiles};
pub use vsock::VHOST_VSOCK;

/// The size of a `root` disk that `default_partitions` creates when `disk_size` is not set.
pub const DEFAULT_ROOT_SIZE: Size = Size::gib(8);
/// The id of the cloud-init seed disk.
pub const SEED_DISK_ID: &str = "cidata";

/// A step of the work a VM launch does on its disks before QEMU starts, as reported to the
/// callback of [`Machine::launch_with_progress`](crate::Machine::launch_with_progress).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Preparing<'a> {
    /// A disk image is being created.
    Create {
        /// The disk's id.
        disk: &'a str,
        /// The image.
        path: &'a Path,
        /// Its format.
        format: &'a Format,
        /// Its virtual size.
        size: Size,
    },
    /// An image is being written into a disk (`flash_from`): called as the work advances, with
    /// the fraction done from 0.0 to 1.0, never decreasing, the last call 1.0.
    Flash {
        /// The disk's id.
        disk: &'a str,
        /// The image written.
        source: &'a Path,
        /// The disk image.
        path: &'a Path,
        /// How much is done.
        fraction: f64,
    },
    /// A disk image is being grown to `size`.
    Grow {
        /// The disk's id.
        disk: &'a str,
        /// The image.
        path: &'a Path,
        /// Its new virtual size.
        size: Size,
    },
}

/// The callback of [`Machine::launch_with_progress`](crate::Machine::launch_with_progress).
pub type ProgressFn<'a> = &'a mut dyn FnMut(&Preparing<'_>);

/// The format of a [`Machine::screendump`](crate::Machine::screendump).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScreenshotFormat {
    /// PNG (QEMU 7.1 and later, when built with libpng).
    Png,
    /// PPM (P6), which every QEMU writes.
    Ppm,
}

impl ScreenshotFormat {
    /// The file extension (`png`, `ppm`).
    pub fn extension(self) -> &'static str {
        match self {
            ScreenshotFormat::Png => "png",
            ScreenshotFormat::Ppm => "ppm",
        }
    }
}

/// What a named drive of a VM is (see [`Machine::drives`](crate::Machine::drives)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DriveKind {
    /// A disk of the spec (`root` among them).
    Disk,
    /// The BIOS image (`bios`).
    Bios,
    /// The UEFI code (`uefi_code`).
    UefiCode,
    /// This VM's UEFI variable store (`uefi_vars`).
    UefiVars,
}

/// A drive that [`Machine::flash`](crate::Machine::flash) writes and
/// [`Machine::dump`](crate::Machine::dump) reads, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drive {
    /// The name: the disk id, or `bios`, `uefi_code`, `uefi_vars`.
    pub name: String,
    /// What it is.
    pub kind: DriveKind,
    /// The file QEMU uses.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// The virtual size it is kept at least at (disks with a `size`).
    pub size: Option<Size>,
    /// The file is the VM's own (in its temp dir), not the caller's or the system's.
    pub owned: bool,
}
