//! The guest fixture: a Debian kernel and a busybox initramfs that the integration tests
//! boot under QEMU (TCG) to have a real Linux guest on the other end of a serial console,
//! a virtio disk or a NIC, on x86_64 and on aarch64. (For a whole distribution, see
//! [`crate::cloud_fixture`].)
//!
//! # Getting it
//!
//! [`GuestFixture::get`] returns the x86_64 fixture and [`GuestFixture::get_for`] the one of an
//! architecture ([`Arch::X86_64`] or [`Arch::Aarch64`]), building it on first use under
//! `<target>/guest-fixture/` (x86_64) or `<target>/guest-fixture-aarch64/` (see
//! [`crate::workspace_target_dir`] and [`ArchSpec::cache_dir`]); `scripts/test.sh` builds
//! both up front with `cargo run -p qemu-machine-tests --bin build-fixture`. Building downloads
//! Debian packages of the fixture's architecture with `apt-get download` (the real package
//! behind the kernel metapackage, [`ArchSpec::kernel_metapackage`], `busybox-static`, and
//! for aarch64 GRUB's `grub-efi-arm64-bin`, kept in `<cache>/debs/`), unpacks them with
//! `dpkg -x`, resolves module dependencies from the modules' own `.modinfo` sections, and
//! writes an uncompressed newc initramfs. Packages of another architecture than the build
//! machine's need that architecture enabled (`dpkg --add-architecture arm64 && apt-get
//! update`; `scripts/install-deps.sh` does it). It takes a few seconds. The result lives in a
//! directory named after a hash of everything that defines it (this module's source, the
//! `/init` script, the module list, the architecture's definition), so a change to any of them
//! builds a new one; an unchanged one is reused without running apt at all. Several test
//! processes may call `get` at once: a lock file serialises building, and each build happens
//! in a temporary directory renamed into place when complete. To pick up a newer kernel
//! package, delete the cache directory.
//!
//! # Booting it
//!
//! ```no_run
//! use qemu_machine_tests::fixture::GuestFixture;
//!
//! let fixture = GuestFixture::get().unwrap();
//! let cmdline = fixture.kernel_cmdline(&["virtio_blk", "vfat"], "qm.net=1");
//! let mut qemu = std::process::Command::new(qemu_machine_tests::qemu_system_x86_64());
//! qemu.args(["-machine", "q35", "-accel", "tcg", "-m", "256M", "-nodefaults"])
//!     .args(["-display", "none", "-no-reboot", "-serial", "stdio"])
//!     .args(fixture.boot_args(&cmdline));
//! ```
//!
//! Use TCG (`-accel tcg`): nested KVM on the development machines crashes Linux guests. The
//! x86_64 guest reaches [`READY_LINE`] in about two seconds. The console is the first serial
//! port (`ttyS0`), so the machine needs one (`-serial ...`, or `-chardev` + `-serial
//! chardev:ID`). The kernel has no SATA/AHCI and no e1000 driver: give the guest virtio
//! devices (`virtio-blk-pci`, `virtio-net-pci`, `virtio-scsi-pci` + `scsi-hd`/`scsi-cd`, ...).
//!
//! ## aarch64
//!
//! The aarch64 fixture runs on QEMU's `virt` board (`qemu-system-aarch64 -machine virt -cpu
//! cortex-a57`, or `max`), with its console on the board's PL011 UART, `ttyAMA0` (again the
//! first serial port), and virtio devices on PCI (`virtio-blk-pci`, ...). Its kernel is Debian's
//! generic arm64 one, not the cloud flavour, which lacks the `gpio_keys` driver the power button
//! needs under a device tree (see [`AARCH64`]). It boots two ways:
//!
//! * direct kernel boot, as above (`-kernel`, `-initrd`, `-append`): QEMU gives the kernel a
//!   device tree; the ready line comes after about 3 s;
//! * by UEFI firmware (`qemu-efi-aarch64`'s AAVMF, as pflash) from [`GuestFixture::uefi_disk`]:
//!   a GPT disk whose EFI system partition holds GRUB as `EFI/BOOT/BOOTAA64.EFI` (a
//!   `grub-mkstandalone` image with its configuration inside), the kernel and the initramfs.
//!   GRUB boots at once with [`kernel_cmdline(&[], "")`](GuestFixture::kernel_cmdline); the
//!   firmware gives the kernel ACPI tables. The ready line comes after about 11 s. The command
//!   line is fixed: `qm.run` and the other parameters need direct kernel boot.
//!
//! GRUB rather than the kernel's own EFI stub as the boot file: the stub would need its
//! command line (with the initramfs) from the firmware's boot variables or an EFI shell
//! script, while GRUB carries it in the image.
//!
//! # What the guest does
//!
//! `/init` (a busybox `sh` script, `tests/src/fixture/init.sh`) mounts proc, sysfs, devtmpfs,
//! devpts and tmpfs on `/run` and `/tmp`, then reads these kernel parameters:
//!
//! | parameter | effect |
//! |---|---|
//! | `qm.modules=a,b,...` | load these modules (`modprobe`, with their dependencies) in order; `virtio_pci` first when any name contains `virtio`. [`GuestFixture::kernel_cmdline`] writes it. |
//! | `qm.net=1` | load `virtio_net` and configure `eth0` for QEMU user networking: `10.0.2.15/24`, gateway `10.0.2.2`, DNS `10.0.2.3` |
//! | `qm.net=ADDR/PREFIX[,GW]` | same, with a static address and optional default gateway (for socket/tap networks) |
//! | `qm.run=BASE64` | after the ready line, run this `sh` script (see [`run_param`]) with the console as stdio, print `QM-RUN-EXIT=<status>` ([`RUN_EXIT_PREFIX`]), then power off |
//! | `qm.after=shell` | after a `qm.run` script, start the shell instead of powering off (`qm.after=poweroff` is the default) |
//!
//! The script is base64 because the kernel splits its command line on spaces and gives
//! parameters no quoting a shell could rely on; the whole command line is limited to 2047 bytes
//! on x86, so a script can be about 1.4 KiB. Module names may be written with `-` or `_`.
//!
//! It then brings `lo` up, starts `acpid` (see below), and prints the line [`READY_LINE`]
//! (`QM-GUEST-READY`) on the console. A fatal setup problem (unknown module, bad parameter, no
//! `eth0`) prints a line starting with [`ERROR_PREFIX`] instead and powers off, so a test sees
//! QEMU exit rather than waiting for a ready line that never comes.
//!
//! Without `qm.run` (or with `qm.after=shell`), `/init` then `exec`s busybox `init`, which runs
//! an interactive `sh` on the console with the prompt [`PROMPT`] (`qm# `) and terminal echo
//! off: a test writes a command and a newline, and reads the command's output followed by the
//! next prompt (lines end in `\r\n`). The first prompt follows the ready line and busybox's
//! two-line banner; wait for the ready line, then for the prompt. For example, writing
//! `echo $((6*7))\n` then yields `42\r\nqm# `. Ctrl-C (`\x03`) interrupts the running
//! command. When the shell exits, init starts a new one (banner and prompt again).
//!
//! # Power
//!
//! * `poweroff -f` powers the VM off at once (through ACPI on x86_64, PSCI on aarch64): QEMU reports `SHUTDOWN` and exits
//!   with status 0. `reboot -f` resets the VM (QEMU exits instead when started with
//!   `-no-reboot`). Plain `poweroff`/`reboot`/`halt` in the shell ask busybox init for a clean
//!   shutdown (TERM then KILL to all processes, about 2 s longer). Inside a `qm.run` script use
//!   the `-f` forms.
//! * The power button (QMP `system_powerdown`) works: `/init` loads the architecture's
//!   [`ArchSpec::power_button_modules`] and starts busybox `acpid`, which runs
//!   `/etc/acpi/PWRF/00000080` on the power key: it prints [`POWER_BUTTON_LINE`], syncs and
//!   powers off. The key comes from the ACPI button on x86_64 (`button`) and on aarch64 booted
//!   by UEFI (ACPI, the driver built in); on aarch64 booted with a device tree QEMU's `virt`
//!   board raises a GPIO line instead, which `gpio_keys` reports as the same key.
//! * `panic=-1`: a kernel panic reboots at once (and so ends QEMU under `-no-reboot`).
//!
//! # Modules
//!
//! The initramfs holds the modules in [`MODULES`], the power-button modules and everything they
//! depend on ([`GuestFixture::modules`] lists them all; what the kernel has built in is not
//! there, e.g. `virtio_ring` on aarch64), with a `modules.dep` and `modules.alias`, so
//! `modprobe` works in the shell and the kernel loads filesystem and codepage modules on demand
//! (mounting vfat pulls in `nls_cp437` and `nls_ascii`). ext4 is built into the kernel.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use crate::modinfo;
use crate::newc::NewcWriter;

pub(crate) mod disk;

/// The line `/init` prints on the console when the guest is set up and ready.
pub const READY_LINE: &str = "QM-GUEST-READY";
/// The prompt of the serial shell (no newline follows it).
pub const PROMPT: &str = "qm# ";
/// A `qm.run` script's exit status is printed on a line starting with this, e.g. `QM-RUN-EXIT=0`.
pub const RUN_EXIT_PREFIX: &str = "QM-RUN-EXIT=";
/// A fatal setup error is printed on a line starting with this, then the guest powers off.
pub const ERROR_PREFIX: &str = "QM-GUEST-ERROR: ";
/// Printed by the guest when it powers off because of the ACPI power button.
pub const POWER_BUTTON_LINE: &str = "QM-GUEST-POWER-BUTTON";

/// The modules the initramfs carries on every architecture (their dependencies are added),
/// besides the power-button modules of [`ArchSpec::power_button_modules`]. Names as the
/// kernel spells them (underscores).
pub const MODULES: &[&str] = &[
    // virtio transport and devices
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
    "virtio_balloon",
    "virtio_rng",
    "virtio_input",
    "vmw_vsock_virtio_transport",
    // SCSI disks and CD-ROMs (behind virtio-scsi), ISO 9660 (cloud-init seed images)
    "sd_mod",
    "sr_mod",
    "isofs",
    // FAT and the codepages it asks for by default
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_iso8859_1",
    "nls_utf8",
];

pub use qemu_cmdline::Arch;

/// What the fixture is made of on one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchSpec {
    /// The guest architecture.
    pub arch: Arch,
    /// Debian's name for it (`amd64`, `arm64`): the packages' architecture.
    pub debian_arch: &'static str,
    /// The metapackage that names the current kernel package of the flavour used.
    pub kernel_metapackage: &'static str,
    /// The kernel's console device (`console=`), the board's first serial port.
    pub console: &'static str,
    /// The cache directory's name under the target dir.
    pub cache_dir: &'static str,
    /// The modules `/init` loads for the power button, in order (with [`MODULES`] in the
    /// initramfs): the driver that reports `KEY_POWER`, then `evdev` for busybox `acpid`.
    pub power_button_modules: &'static [&'static str],
    /// How the fixture boots by UEFI, when it does: see [`GuestFixture::uefi_disk`].
    pub uefi: Option<UefiBoot>,
}

/// How a fixture boots by UEFI: a GRUB standalone image on an EFI system partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UefiBoot {
    /// The Debian package with GRUB's modules for the platform (of the fixture's
    /// architecture; it is unpacked, not installed).
    pub grub_package: &'static str,
    /// GRUB's platform (`grub-mkstandalone --format`), e.g. `arm64-efi`.
    pub grub_format: &'static str,
    /// The removable-media boot file the firmware looks for in `EFI/BOOT/`.
    pub boot_file: &'static str,
}

/// The x86_64 fixture: Debian's cloud kernel on a q35 board; the ACPI power button.
pub const X86_64: ArchSpec = ArchSpec {
    arch: Arch::X86_64,
    debian_arch: "amd64",
    kernel_metapackage: "linux-image-cloud-amd64",
    console: "ttyS0",
    cache_dir: "guest-fixture",
    power_button_modules: &["button", "evdev"],
    uefi: None,
};

/// The aarch64 fixture, for QEMU's `virt` board: Debian's generic arm64 kernel, because the
/// cloud flavour (`linux-image-cloud-arm64`) has no `gpio_keys` driver, and on `virt` booted
/// with a device tree (direct kernel boot) the power button is a GPIO key. Booted by UEFI the
/// firmware gives the kernel ACPI tables instead, and the power button is an ACPI event that
/// the (built-in) ACPI button driver reports; either way `acpid` sees `KEY_POWER`.
pub const AARCH64: ArchSpec = ArchSpec {
    arch: Arch::Aarch64,
    debian_arch: "arm64",
    kernel_metapackage: "linux-image-arm64",
    console: "ttyAMA0",
    cache_dir: "guest-fixture-aarch64",
    power_button_modules: &["gpio_keys", "evdev"],
    uefi: Some(UefiBoot {
        grub_package: "grub-efi-arm64-bin",
        grub_format: "arm64-efi",
        boot_file: "BOOTAA64.EFI",
    }),
};

impl ArchSpec {
    /// The fixture's definition for `arch`; riscv64 has none.
    pub fn of(arch: Arch) -> Result<&'static ArchSpec, FixtureError> {
        match arch {
            Arch::X86_64 => Ok(&X86_64),
            Arch::Aarch64 => Ok(&AARCH64),
            other => Err(FixtureError::Unsupported(format!(
                "there is no guest fixture for {other} (only x86_64 and aarch64)"
            ))),
        }
    }

    /// Whether this machine can run the fixture's programs (its busybox) while building.
    fn is_native(&self) -> bool {
        self.debian_arch == HOST_DEBIAN_ARCH
    }
}

/// Debian's name for the architecture the tests are built for.
const HOST_DEBIAN_ARCH: &str = if cfg!(target_arch = "x86_64") {
    "amd64"
} else if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "unknown"
};

/// The `/init` script.
const INIT_SCRIPT: &str = include_str!("fixture/init.sh");
/// What busybox `acpid` runs on the power button (its built-in action for `PWRF`).
const POWER_BUTTON_ACTION: &str =
    "#!/bin/sh\necho QM-GUEST-POWER-BUTTON >/dev/console\nsync\npoweroff -f\n";
/// busybox init's table: only the serial shell, restarted whenever it exits.
const INITTAB: &str = "::respawn:/bin/cttyhack /etc/qm-shell\n";
/// The serial shell: echo off, fixed prompt.
const SHELL_SCRIPT: &str =
    "#!/bin/sh\nstty -echo\nexport HOME=/root PS1='qm# '\ncd /root\nexec sh -i\n";
/// The busybox package (statically linked, so it needs no libraries in the initramfs).
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The FAT label of the UEFI disk's EFI system partition, which GRUB finds the kernel by.
const ESP_LABEL: &str = "QM-FIXTURE";
/// GRUB's configuration on the UEFI disk; `@CMDLINE@` is replaced by the kernel command line.
const GRUB_CFG: &str = "set timeout=0\n\
search --no-floppy --label QM-FIXTURE --set=root\n\
linux /vmlinuz @CMDLINE@\n\
initrd /initrd.cpio\n\
boot\n";
/// Everything that defines the fixture's content; hashed into its directory name.
const DEFINITION: &[&str] = &[
    INIT_SCRIPT,
    POWER_BUTTON_ACTION,
    INITTAB,
    SHELL_SCRIPT,
    include_str!("fixture.rs"),
    include_str!("newc.rs"),
    include_str!("modinfo.rs"),
    include_str!("fixture/disk.rs"),
];

/// A built guest fixture: a kernel and an initramfs to boot it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFixture {
    /// The kernel image (`-kernel`).
    pub kernel: PathBuf,
    /// The initramfs, an uncompressed newc archive (`-initrd`).
    pub initrd: PathBuf,
    /// The directory holding both and `manifest.json`.
    pub dir: PathBuf,
    /// The kernel release (`uname -r` in the guest), e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_version: String,
    /// The names of all modules in the initramfs (those of [`MODULES`], the power-button
    /// modules and their dependencies), sorted.
    pub modules: Vec<String>,
    /// The guest architecture.
    pub arch: Arch,
    /// A raw disk image (GPT, one EFI system partition) that boots the same kernel and
    /// initramfs by UEFI firmware, through GRUB, with [`kernel_cmdline(&[], "")`]
    /// (Self::kernel_cmdline) as its command line; for architectures whose
    /// [`ArchSpec::uefi`] says how (aarch64), else `None`. Attach it read-only.
    pub uefi_disk: Option<PathBuf>,
}

/// Why the fixture could not be built or loaded.
#[derive(Debug)]
pub enum FixtureError {
    /// A command that building needs failed or could not run.
    Command {
        /// The command line that failed.
        command: String,
        /// What went wrong (exit status and output, or the spawn error).
        detail: String,
        /// What to run or do to make the next attempt succeed.
        fix: String,
    },
    /// Reading or writing a file failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A package or a cached fixture does not contain what it should.
    Content {
        /// The file or directory that is wrong.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The fixture cannot be built for what was asked (an architecture without one).
    Unsupported(String),
}

impl fmt::Display for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FixtureError::Command {
                command,
                detail,
                fix,
            } => {
                write!(
                    f,
                    "guest fixture: `{command}` failed: {detail}; to fix: {fix}"
                )
            }
            FixtureError::Io { path, source } => {
                write!(f, "guest fixture: {}: {source}", path.display())
            }
            FixtureError::Content { path, detail } => {
                write!(f, "guest fixture: {}: {detail}", path.display())
            }
            FixtureError::Unsupported(what) => write!(f, "guest fixture: {what}"),
        }
    }
}

impl std::error::Error for FixtureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FixtureError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FixtureError + '_ {
    move |source| FixtureError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn content_err(path: &Path, detail: impl Into<String>) -> FixtureError {
    FixtureError::Content {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// The fixtures this process has, by architecture.
static CACHED: Mutex<Vec<GuestFixture>> = Mutex::new(Vec::new());

impl GuestFixture {
    /// Returns the x86_64 fixture for this workspace, building it under
    /// `<target>/guest-fixture/` if it is not there yet.
    ///
    /// If a package cannot be obtained, the error says which command to run.
    pub fn get() -> Result<GuestFixture, FixtureError> {
        Self::get_for(Arch::X86_64)
    }

    /// Returns the fixture for `arch` (x86_64 or aarch64), building it under
    /// `<target>/<ArchSpec::cache_dir>/` if it is not there yet.
    pub fn get_for(arch: Arch) -> Result<GuestFixture, FixtureError> {
        let spec = ArchSpec::of(arch)?;
        let mut cached = CACHED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(fixture) = cached.iter().find(|f| f.arch == arch) {
            return Ok(fixture.clone());
        }
        let fixture = Self::get_for_in(arch, &crate::workspace_target_dir().join(spec.cache_dir))?;
        cached.push(fixture.clone());
        Ok(fixture)
    }

    /// Like [`get`](Self::get), with the cache in `cache_dir` instead of the target dir.
    pub fn get_in(cache_dir: &Path) -> Result<GuestFixture, FixtureError> {
        Self::get_for_in(Arch::X86_64, cache_dir)
    }

    /// Like [`get_for`](Self::get_for), with the cache in `cache_dir`.
    pub fn get_for_in(arch: Arch, cache_dir: &Path) -> Result<GuestFixture, FixtureError> {
        let spec = ArchSpec::of(arch)?;
        let name = format!("fx-{:016x}", definition_hash(spec));
        let dir = cached_build(cache_dir, &name, "fx-", |staging| {
            build(spec, cache_dir, staging)
        })?;
        Self::load(spec, &dir)
    }

    /// Reads a built fixture directory.
    fn load(spec: &ArchSpec, dir: &Path) -> Result<GuestFixture, FixtureError> {
        let manifest_path = dir.join(MANIFEST);
        let text = fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
        let manifest: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| content_err(&manifest_path, format!("not valid JSON: {e}")))?;
        let kernel_version = manifest["kernel_version"]
            .as_str()
            .ok_or_else(|| content_err(&manifest_path, "no kernel_version"))?
            .to_owned();
        let modules = manifest["modules"]
            .as_array()
            .and_then(|list| list.iter().map(|m| m.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| content_err(&manifest_path, "no modules list"))?;
        let fixture = GuestFixture {
            kernel: dir.join(KERNEL_FILE),
            initrd: dir.join(INITRD_FILE),
            dir: dir.to_owned(),
            kernel_version,
            modules,
            arch: spec.arch,
            uefi_disk: spec.uefi.map(|_| dir.join(UEFI_DISK_FILE)),
        };
        for file in [&fixture.kernel, &fixture.initrd]
            .into_iter()
            .chain(fixture.uefi_disk.as_ref())
        {
            if !file.is_file() {
                return Err(content_err(
                    file,
                    "missing; delete the directory to rebuild it",
                ));
            }
        }
        Ok(fixture)
    }

    /// The architecture's definition.
    pub fn spec(&self) -> &'static ArchSpec {
        ArchSpec::of(self.arch).expect("a fixture exists only for a supported architecture")
    }

    /// The kernel command line: the serial console, `panic=-1`, `quiet`, `qm.modules=` with
    /// `modules` (omitted when empty), then `extra` (further `qm.*` or kernel parameters, e.g.
    /// `"qm.net=1"` or [`run_param`]'s result).
    ///
    /// A module that is not in the initramfs is reported by the guest: it prints an
    /// [`ERROR_PREFIX`] line and powers off ([`has_module`](Self::has_module) checks first).
    pub fn kernel_cmdline(&self, modules: &[&str], extra: &str) -> String {
        let mut cmdline = format!("console={} panic=-1 quiet", self.spec().console);
        if !modules.is_empty() {
            cmdline.push_str(" qm.modules=");
            cmdline.push_str(&modules.join(","));
        }
        let extra = extra.trim();
        if !extra.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(extra);
        }
        cmdline
    }

    /// The QEMU arguments that boot the fixture with `cmdline`:
    /// `-kernel KERNEL -initrd INITRD -append CMDLINE`.
    pub fn boot_args(&self, cmdline: &str) -> Vec<OsString> {
        vec![
            "-kernel".into(),
            self.kernel.clone().into(),
            "-initrd".into(),
            self.initrd.clone().into(),
            "-append".into(),
            cmdline.into(),
        ]
    }

    /// The names of all modules in the initramfs, sorted.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// Whether the initramfs holds module `name` (`-` and `_` are the same).
    pub fn has_module(&self, name: &str) -> bool {
        let name = module_name(name);
        self.modules.contains(&name)
    }
}

/// The kernel parameter that makes `/init` run `script` (with `sh`) after the ready line:
/// `qm.run=` and the script in base64.
pub fn run_param(script: &str) -> String {
    format!("qm.run={}", base64(script.as_bytes()))
}

const MANIFEST: &str = "manifest.json";
const KERNEL_FILE: &str = "vmlinuz";
const INITRD_FILE: &str = "initrd.cpio";

const UEFI_DISK_FILE: &str = "uefi-disk.img";

/// The hash of the fixture's definition on one architecture.
fn definition_hash(spec: &ArchSpec) -> u64 {
    let spec = format!("{spec:?}");
    fnv1a(
        DEFINITION
            .iter()
            .chain(MODULES)
            .chain([&spec.as_str()])
            .map(|s| s.as_bytes()),
    )
}

/// FNV-1a over `parts` (each followed by a 0xff byte, so that part boundaries count): stable
/// across Rust versions, unlike `DefaultHasher`.
pub(crate) fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Module names use `_`; file names and user input may use `-`.
fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Standard base64 (RFC 4648) with padding, as busybox `base64 -d` reads it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An exclusive `flock` on a file, released when dropped (or when the process dies).
pub(crate) struct Lock {
    _file: fs::File,
}

impl Lock {
    pub(crate) fn acquire(path: &Path) -> Result<Lock, FixtureError> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        loop {
            // SAFETY: flock on a file descriptor this function owns through `file`, which
            // stays open for the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(FixtureError::Io {
                    path: path.to_owned(),
                    source: err,
                });
            }
        }
    }
}

/// A directory removed (with its contents) when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn create(parent: &Path, tag: &str) -> Result<TempDir, FixtureError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(".{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(io_err(&path))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // After a successful rename the path no longer exists; nothing to do then.
        if self.0.exists() {
            remove_tree(&self.0);
        }
    }
}

/// Builds into `<cache_dir>/<name>` unless that is there already (its manifest written):
/// `build` fills a temporary directory in `cache_dir`, which is renamed to `name` when it
/// succeeds. Several processes may call this at once: a lock file in `cache_dir` lets one
/// build and the others wait and reuse its result. Afterwards, older builds (other
/// directories starting with `prefix`) and what killed builds left are removed.
pub(crate) fn cached_build(
    cache_dir: &Path,
    name: &str,
    prefix: &str,
    build: impl FnOnce(&Path) -> Result<(), FixtureError>,
) -> Result<PathBuf, FixtureError> {
    let dir = cache_dir.join(name);
    if dir.join(MANIFEST).exists() {
        return Ok(dir);
    }
    fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let _lock = Lock::acquire(&cache_dir.join(".lock"))?;
    // Another process may have built it while this one waited for the lock.
    if dir.join(MANIFEST).exists() {
        return Ok(dir);
    }
    let staging = TempDir::create(cache_dir, "build")?;
    build(&staging.0)?;
    if !staging.0.join(MANIFEST).is_file() {
        return Err(content_err(&staging.0, "the build wrote no manifest"));
    }
    fs::rename(&staging.0, &dir).map_err(io_err(&dir))?;
    remove_stale(cache_dir, &dir, prefix);
    Ok(dir)
}

/// Removes what earlier builds left in `cache_dir`: builds of other definitions (names
/// starting with `prefix`), and the temporary directories of builds that were killed. Called
/// with the lock held, so no build is using them. Best effort: a directory that cannot be
/// removed is left for the next time.
fn remove_stale(cache_dir: &Path, keep: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale =
            name.starts_with(prefix) || name.starts_with(".build-") || name.starts_with(".unpack-");
        if stale && entry.path() != keep {
            remove_tree(&entry.path());
        }
    }
}

/// Removes a directory tree (or a file), after detaching whatever is mounted inside it (a killed
/// `debootstrap` can leave `/proc` and `/sys` mounted in its target): never deletes through a
/// mount point. Best effort: a tree with a mount that cannot be detached is left alone.
pub(crate) fn remove_tree(path: &Path) {
    let mounts = mounts_under(path);
    for mount in mounts.iter().rev() {
        if let Ok(c) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 with a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    if !mounts_under(path).is_empty() {
        return;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// The mount points at or below `path`, parents before children (from
/// `/proc/self/mountinfo`).
fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let Ok(path) = path.canonicalize() else {
        return Vec::new();
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|mount| mount.starts_with(&path))
        .collect();
    found.sort_by_key(|m| m.components().count());
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && bytes.len() >= i + 4
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Runs `command`, returning its stdout; on failure an error quoting what it printed, with `fix`
/// as the advice.
pub(crate) fn run(command: &mut Command, fix: &str) -> Result<String, FixtureError> {
    let shown = format!("{command:?}").replace('"', "");
    let output = command.output().map_err(|e| FixtureError::Command {
        command: shown.clone(),
        detail: format!("cannot run it: {e}"),
        fix: fix.to_owned(),
    })?;
    if !output.status.success() {
        // What it said about the failure: its error output, or its output when that is empty
        // (debootstrap and some others report errors there).
        let mut said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if said.is_empty() {
            said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        return Err(FixtureError::Command {
            command: shown,
            detail: format!("{}: {said}", output.status),
            fix: fix.to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The `.deb` in `debs` for `package` of Debian architecture `arch` (or `all`), newest if
/// several, if any.
pub(crate) fn find_deb(
    debs: &Path,
    package: &str,
    arch: &str,
) -> Result<Option<PathBuf>, FixtureError> {
    let prefix = format!("{package}_");
    let suffixes = [format!("_{arch}.deb"), "_all.deb".to_owned()];
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in fs::read_dir(debs).map_err(io_err(debs))? {
        let entry = entry.map_err(io_err(debs))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && suffixes.iter().any(|s| name.ends_with(s.as_str())) {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(io_err(&entry.path()))?;
            if best.as_ref().is_none_or(|(time, _)| modified > *time) {
                best = Some((modified, entry.path()));
            }
        }
    }
    Ok(best.map(|(_, path)| path))
}

/// What to do when apt knows no package of Debian architecture `arch`: update its lists, and
/// for another architecture than this machine's, enable that architecture first.
fn apt_fix(arch: &str) -> String {
    if arch == HOST_DEBIAN_ARCH {
        "run `apt-get update` as root and retry".to_owned()
    } else {
        format!(
            "run `dpkg --add-architecture {arch} && apt-get update` as root \
             (scripts/install-deps.sh does) and retry"
        )
    }
}

/// The real kernel package behind `metapackage` of Debian architecture `arch`
/// (`linux-image-cloud-amd64` gives e.g. `linux-image-6.1.0-56-cloud-amd64`). Without apt's
/// package lists, falls back to a kernel package of the same flavour already in `debs`.
fn kernel_package(debs: &Path, metapackage: &str, arch: &str) -> Result<String, FixtureError> {
    let fix = format!(
        "{}, or put the packages in {} by hand: \
         `cd {} && apt-get download $(apt-cache depends {metapackage}:{arch} | sed -n 's/.*Depends: //p') {BUSYBOX_PACKAGE}:{arch}`",
        apt_fix(arch),
        debs.display(),
        debs.display()
    );
    let flavour = metapackage
        .strip_prefix("linux-image")
        .unwrap_or(metapackage);
    let qualified = format!("{metapackage}:{arch}");
    let resolved = run(
        Command::new("apt-cache").args(["depends", &qualified]),
        &fix,
    )
    .and_then(|out| {
        out.lines()
            .filter_map(|line| line.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|dep| dep.starts_with("linux-image-") && !dep.starts_with('<'))
            // apt names packages of another architecture than its own `name:arch`.
            .map(|dep| dep.split(':').next().unwrap_or(dep).to_owned())
            .ok_or_else(|| FixtureError::Command {
                command: format!("apt-cache depends {qualified}"),
                detail: format!("no linux-image dependency in its output: {}", out.trim()),
                fix: fix.clone(),
            })
    });
    match resolved {
        Ok(package) => Ok(package),
        Err(err) => {
            // Offline, or no package lists: a kernel package already downloaded will do.
            let suffix = format!("_{arch}.deb");
            for entry in fs::read_dir(debs).map_err(io_err(debs))? {
                let name = entry.map_err(io_err(debs))?.file_name();
                let name = name.to_string_lossy();
                if let Some((package, _)) = name.split_once('_') {
                    if package.starts_with("linux-image-")
                        && package.ends_with(flavour)
                        && package != metapackage
                        && name.ends_with(&suffix)
                    {
                        return Ok(package.to_owned());
                    }
                }
            }
            Err(err)
        }
    }
}

/// The `.deb` of `package` of Debian architecture `arch` in `debs`, downloaded with
/// `apt-get download` if not there.
pub(crate) fn obtain_deb(debs: &Path, package: &str, arch: &str) -> Result<PathBuf, FixtureError> {
    if let Some(path) = find_deb(debs, package, arch)? {
        return Ok(path);
    }
    let qualified = format!("{package}:{arch}");
    let fix = format!(
        "{}, or download it by hand: `cd {} && apt-get download {qualified}`",
        apt_fix(arch),
        debs.display()
    );
    run(
        Command::new("apt-get")
            .args(["download", "-q", &qualified])
            .current_dir(debs),
        &fix,
    )?;
    find_deb(debs, package, arch)?.ok_or_else(|| FixtureError::Command {
        command: format!("apt-get download {qualified}"),
        detail: format!(
            "it succeeded but left no {package}_*_{arch}.deb in {}",
            debs.display()
        ),
        fix,
    })
}

/// Unpacks a `.deb` into `dest` with `dpkg -x`.
pub(crate) fn unpack(deb: &Path, dest: &Path) -> Result<(), FixtureError> {
    run(
        Command::new("dpkg").arg("-x").arg(deb).arg(dest),
        &format!(
            "check that {} is a valid package, or delete it to download it again",
            deb.display()
        ),
    )?;
    Ok(())
}

/// A module found in the kernel package.
#[derive(Debug)]
struct Module {
    /// Path relative to `lib/modules/<version>/`, always ending in `.ko` in the initramfs.
    rel_path: String,
    /// The uncompressed module.
    data: Vec<u8>,
    info: modinfo::ModInfo,
}

/// Walks `dir` for module files, mapping module names to their files.
fn index_modules(
    dir: &Path,
    index: &mut std::collections::BTreeMap<String, PathBuf>,
) -> Result<(), FixtureError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_err(&path))?;
        if file_type.is_dir() {
            index_modules(&path, index)?;
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name
            .strip_suffix(".ko")
            .or_else(|| name.strip_suffix(".ko.xz"))
        {
            index.insert(module_name(stem), path);
        }
    }
    Ok(())
}

/// Reads a module file, decompressing `.ko.xz` with `xz`.
fn read_module(path: &Path) -> Result<Vec<u8>, FixtureError> {
    if path.extension().is_some_and(|ext| ext == "xz") {
        let output = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|e| FixtureError::Command {
                command: format!("xz -dc {}", path.display()),
                detail: format!("cannot run it: {e}"),
                fix: "apt-get install -y xz-utils".to_owned(),
            })?;
        if !output.status.success() {
            return Err(content_err(
                path,
                format!("xz -dc failed: {}", output.status),
            ));
        }
        return Ok(output.stdout);
    }
    fs::read(path).map_err(io_err(path))
}

/// Loads `wanted` and, transitively, their dependencies. Returns them in load order
/// (every module after all of its dependencies).
fn resolve_modules(
    modules_dir: &Path,
    wanted: &[&str],
) -> Result<Vec<(String, Module)>, FixtureError> {
    let mut index = std::collections::BTreeMap::new();
    index_modules(&modules_dir.join("kernel"), &mut index)?;
    let mut loaded: std::collections::BTreeMap<String, Module> = std::collections::BTreeMap::new();
    let mut pending: Vec<String> = wanted.iter().map(|m| module_name(m)).collect();
    while let Some(name) = pending.pop() {
        if loaded.contains_key(&name) {
            continue;
        }
        let path = index.get(&name).ok_or_else(|| {
            content_err(
                modules_dir,
                format!("the kernel package has no module {name}"),
            )
        })?;
        let data = read_module(path)?;
        let mut info = modinfo::parse(&data).map_err(|e| content_err(path, e.to_string()))?;
        // `depends=` may spell a name as its file does (`t10-pi` for `t10_pi`).
        for dep in &mut info.depends {
            *dep = module_name(dep);
        }
        pending.extend(info.depends.iter().cloned());
        let rel = path
            .strip_prefix(modules_dir)
            .expect("indexed under modules_dir")
            .to_string_lossy()
            .into_owned();
        let rel_path = rel.strip_suffix(".xz").unwrap_or(&rel).to_owned();
        loaded.insert(
            name,
            Module {
                rel_path,
                data,
                info,
            },
        );
    }
    // Depth-first topological order over the (acyclic: the kernel refuses cycles) graph.
    fn visit(
        name: &str,
        loaded: &std::collections::BTreeMap<String, Module>,
        done: &mut std::collections::BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !done.insert(name.to_owned()) {
            return;
        }
        for dep in &loaded[name].info.depends {
            visit(dep, loaded, done, order);
        }
        order.push(name.to_owned());
    }
    let mut order = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for name in loaded.keys() {
        visit(name, &loaded, &mut done, &mut order);
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let module = loaded.remove(&name).expect("visited modules are loaded");
            (name, module)
        })
        .collect())
}

/// The transitive dependencies of `name`, in `modules.dep` order: a module is listed before
/// the modules it needs, so loading from the end of the list backwards works (busybox and kmod
/// `modprobe` both read it that way).
fn dependency_line(name: &str, modules: &[(String, Module)]) -> Vec<String> {
    let position = |n: &str| modules.iter().position(|(m, _)| m == n).expect("resolved");
    let mut needed = std::collections::BTreeSet::new();
    let mut stack = vec![name.to_owned()];
    while let Some(n) = stack.pop() {
        for dep in &modules[position(&n)].1.info.depends {
            if needed.insert(dep.clone()) {
                stack.push(dep.clone());
            }
        }
    }
    let mut deps: Vec<usize> = needed.iter().map(|d| position(d)).collect();
    // `modules` is in load order; modules.dep wants the reverse.
    deps.sort_unstable_by(|a, b| b.cmp(a));
    deps.into_iter()
        .map(|i| modules[i].1.rel_path.clone())
        .collect()
}

/// Builds the fixture into `out` (kernel, initramfs, manifest), downloading packages into
/// `<cache_dir>/debs`.
fn build(spec: &ArchSpec, cache_dir: &Path, out: &Path) -> Result<(), FixtureError> {
    let started = Instant::now();
    let arch = spec.debian_arch;
    let debs = cache_dir.join("debs");
    fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    let kernel_package = kernel_package(&debs, spec.kernel_metapackage, arch)?;
    let kernel_deb = obtain_deb(&debs, &kernel_package, arch)?;
    let busybox_deb = obtain_deb(&debs, BUSYBOX_PACKAGE, arch)?;
    let grub_deb = match &spec.uefi {
        Some(uefi) => Some(obtain_deb(&debs, uefi.grub_package, arch)?),
        None => None,
    };

    let work = TempDir::create(cache_dir, "unpack")?;
    let kernel_root = work.0.join("kernel");
    let busybox_root = work.0.join("busybox");
    unpack(&kernel_deb, &kernel_root)?;
    unpack(&busybox_deb, &busybox_root)?;

    let modules_root = kernel_root.join("lib/modules");
    let mut versions: Vec<String> = fs::read_dir(&modules_root)
        .map_err(io_err(&modules_root))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io_err(&modules_root))?;
    let kernel_version = match versions.len() {
        1 => versions.remove(0),
        n => {
            return Err(content_err(
                &modules_root,
                format!("expected one kernel version, found {n}: {versions:?}"),
            ))
        }
    };
    let modules_dir = modules_root.join(&kernel_version);
    let vmlinuz = kernel_root.join(format!("boot/vmlinuz-{kernel_version}"));
    fs::copy(&vmlinuz, out.join(KERNEL_FILE)).map_err(io_err(&vmlinuz))?;

    let wanted: Vec<&str> = MODULES
        .iter()
        .chain(spec.power_button_modules)
        .copied()
        .collect();
    let modules = resolve_modules(&modules_dir, &wanted)?;

    let busybox_path = busybox_root.join("bin/busybox");
    let busybox = fs::read(&busybox_path).map_err(io_err(&busybox_path))?;
    // The applet links, from busybox itself when it runs here; a busybox of another
    // architecture gets only `/bin/sh`, and `/init` makes the rest at boot.
    let applets = if spec.is_native() {
        run(
            Command::new(&busybox_path).arg("--list-full"),
            &format!("the {BUSYBOX_PACKAGE} package must run on this ({arch}) machine"),
        )?
    } else {
        "bin/sh\n".to_owned()
    };

    let initrd_path = out.join(INITRD_FILE);
    let file = fs::File::create(&initrd_path).map_err(io_err(&initrd_path))?;
    let mut cpio = NewcWriter::new(BufWriter::new(file));
    let write_err = io_err(&initrd_path);
    (|| -> io::Result<()> {
        for dir in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp", "mnt",
            "root", "var/log",
        ] {
            cpio.dir(dir, 0o755)?;
        }
        // The kernel opens /dev/console for /init before devtmpfs is mounted.
        cpio.char_dev("dev/console", 0o600, 5, 1)?;
        cpio.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
        cpio.file("bin/busybox", 0o755, &busybox)?;
        for applet in applets.lines().map(str::trim) {
            if applet.is_empty() || applet == "bin/busybox" || !applet.contains('/') {
                continue; // `linuxrc` would only shadow nothing useful
            }
            cpio.symlink(applet, "/bin/busybox")?;
        }
        cpio.file(
            "etc/acpi/PWRF/00000080",
            0o755,
            POWER_BUTTON_ACTION.as_bytes(),
        )?;
        cpio.file("etc/inittab", 0o644, INITTAB.as_bytes())?;
        cpio.file("etc/qm-shell", 0o755, SHELL_SCRIPT.as_bytes())?;
        cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
        cpio.file("etc/group", 0o644, b"root:x:0:\n")?;
        cpio.file(
            "etc/qm-power-modules",
            0o644,
            format!("{}\n", spec.power_button_modules.join(" ")).as_bytes(),
        )?;
        let names: Vec<&str> = modules.iter().map(|(name, _)| name.as_str()).collect();
        cpio.file(
            "etc/qm-modules",
            0o644,
            format!("{}\n", names.join(" ")).as_bytes(),
        )?;
        let base = format!("lib/modules/{kernel_version}");
        let mut dep = String::new();
        let mut alias = String::new();
        for (name, module) in &modules {
            cpio.file(&format!("{base}/{}", module.rel_path), 0o644, &module.data)?;
            dep.push_str(&module.rel_path);
            dep.push(':');
            for path in dependency_line(name, &modules) {
                dep.push(' ');
                dep.push_str(&path);
            }
            dep.push('\n');
            for pattern in &module.info.aliases {
                alias.push_str(&format!("alias {pattern} {name}\n"));
            }
        }
        cpio.file(&format!("{base}/modules.dep"), 0o644, dep.as_bytes())?;
        cpio.file(&format!("{base}/modules.alias"), 0o644, alias.as_bytes())?;
        cpio.finish()?.flush()
    })()
    .map_err(write_err)?;

    if let (Some(uefi), Some(grub_deb)) = (&spec.uefi, &grub_deb) {
        let grub_root = work.0.join("grub");
        unpack(grub_deb, &grub_root)?;
        let cmdline = format!("console={} panic=-1 quiet", spec.console);
        build_uefi_disk(uefi, &grub_root, out, &work.0.join("uefi"), &cmdline)?;
    }

    let mut names: Vec<&str> = modules.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    let manifest = serde_json::json!({
        "arch": spec.arch.name(),
        "kernel_version": kernel_version,
        "kernel_package": kernel_deb.file_name().map(|n| n.to_string_lossy().into_owned()),
        "busybox_package": busybox_deb.file_name().map(|n| n.to_string_lossy().into_owned()),
        "grub_package": grub_deb.and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())),
        "modules": names,
        "build_seconds": started.elapsed().as_secs_f64(),
    });
    let manifest_path = out.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).expect("a JSON value serialises");
    fs::write(&manifest_path, text + "\n").map_err(io_err(&manifest_path))?;
    Ok(())
}

/// Writes the UEFI disk ([`GuestFixture::uefi_disk`]) into `out`: a GPT disk with one EFI
/// system partition holding GRUB (a standalone image made from the unpacked GRUB package in
/// `grub_root`, with its configuration inside) as the removable-media boot file, the kernel
/// and the initramfs already in `out`. `work` is a scratch directory.
fn build_uefi_disk(
    uefi: &UefiBoot,
    grub_root: &Path,
    out: &Path,
    work: &Path,
    cmdline: &str,
) -> Result<(), FixtureError> {
    fs::create_dir_all(work).map_err(io_err(work))?;
    let grub_modules = grub_root.join("usr/lib/grub").join(uefi.grub_format);
    let grub_image = work.join(uefi.boot_file);
    disk::grub_standalone(
        uefi.grub_format,
        &grub_modules,
        &GRUB_CFG.replace("@CMDLINE@", cmdline),
        &["part_gpt", "fat"],
        &[
            "normal",
            "linux",
            "part_gpt",
            "fat",
            "search",
            "search_label",
            "echo",
            "test",
        ],
        &grub_image,
        work,
    )?;
    let esp = work.join("esp.img");
    let boot_file = format!("EFI/BOOT/{}", uefi.boot_file);
    disk::fat_image(
        &esp,
        ESP_LABEL,
        0,
        &["EFI", "EFI/BOOT"],
        &[
            (grub_image.as_path(), boot_file.as_str()),
            (&out.join(KERNEL_FILE), KERNEL_FILE),
            (&out.join(INITRD_FILE), INITRD_FILE),
        ],
    )?;
    disk::gpt_disk(
        &out.join(UEFI_DISK_FILE),
        &[disk::Partition {
            name: "EFI system partition",
            type_guid: disk::ESP_TYPE,
            image: &esp,
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(run_param("echo hi"), "qm.run=ZWNobyBoaQ==");
    }

    fn fixture() -> GuestFixture {
        GuestFixture {
            kernel: "/k".into(),
            initrd: "/i".into(),
            dir: "/".into(),
            kernel_version: "6.1.0-0-cloud-amd64".into(),
            modules: vec!["fat".into(), "nls_iso8859_1".into(), "vfat".into()],
            arch: Arch::X86_64,
            uefi_disk: None,
        }
    }

    #[test]
    fn kernel_cmdline_lists_modules_and_extra() {
        let f = fixture();
        assert_eq!(f.kernel_cmdline(&[], ""), "console=ttyS0 panic=-1 quiet");
        assert_eq!(
            f.kernel_cmdline(&["virtio_blk", "vfat"], "  qm.net=1 "),
            "console=ttyS0 panic=-1 quiet qm.modules=virtio_blk,vfat qm.net=1"
        );
        assert_eq!(
            f.kernel_cmdline(&[], "qm.after=shell"),
            "console=ttyS0 panic=-1 quiet qm.after=shell"
        );
        let args = f.boot_args("x y");
        assert_eq!(args, ["-kernel", "/k", "-initrd", "/i", "-append", "x y"]);
        let arm = GuestFixture {
            arch: Arch::Aarch64,
            ..f
        };
        assert_eq!(
            arm.kernel_cmdline(&["vfat"], ""),
            "console=ttyAMA0 panic=-1 quiet qm.modules=vfat"
        );
    }

    #[test]
    fn architectures_have_their_own_definitions() {
        assert_eq!(ArchSpec::of(Arch::X86_64).unwrap(), &X86_64);
        assert_eq!(ArchSpec::of(Arch::Aarch64).unwrap(), &AARCH64);
        let err = ArchSpec::of(Arch::Riscv64).unwrap_err();
        assert!(
            err.to_string().contains("no guest fixture for riscv64"),
            "{err}"
        );
        assert_ne!(definition_hash(&X86_64), definition_hash(&AARCH64));
        assert_ne!(X86_64.cache_dir, AARCH64.cache_dir);
        for spec in [&X86_64, &AARCH64] {
            assert_eq!(spec.arch.profile().console, spec.console);
            assert_eq!(spec.power_button_modules.last(), Some(&"evdev"));
        }
        assert!(GRUB_CFG.contains(&format!("--label {ESP_LABEL} ")));
        assert!(X86_64.is_native() != AARCH64.is_native() || HOST_DEBIAN_ARCH == "unknown");
    }

    #[test]
    fn guest_scripts_use_the_documented_markers() {
        assert!(SHELL_SCRIPT.contains(&format!("PS1='{PROMPT}'")));
        assert!(INIT_SCRIPT.contains(&format!("echo {READY_LINE}\n")));
        assert!(INIT_SCRIPT.contains(&format!("echo \"{RUN_EXIT_PREFIX}$?\"")));
        assert!(INIT_SCRIPT.contains(&format!("echo \"{ERROR_PREFIX}$*\"")));
        assert!(POWER_BUTTON_ACTION.contains(POWER_BUTTON_LINE));
        assert!(INIT_SCRIPT.starts_with("#!/bin/sh\n"));
    }

    #[test]
    fn has_module_accepts_dashes() {
        let f = fixture();
        assert!(f.has_module("nls_iso8859-1"));
        assert!(f.has_module("vfat"));
        assert!(!f.has_module("e1000"));
    }

    #[test]
    fn definition_hash_is_stable_within_a_build() {
        assert_eq!(definition_hash(&X86_64), definition_hash(&X86_64));
        assert_ne!(definition_hash(&X86_64), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a([]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a([&b"ab"[..], b""]), fnv1a([&b"a"[..], b"b"]));
    }

    fn module(rel_path: &str, depends: &[&str]) -> Module {
        Module {
            rel_path: rel_path.to_owned(),
            data: Vec::new(),
            info: modinfo::ModInfo {
                name: None,
                depends: depends.iter().map(|d| d.to_string()).collect(),
                aliases: Vec::new(),
            },
        }
    }

    #[test]
    fn resolves_dependencies_from_modinfo_in_load_order() {
        let dir = TempDir::create(&std::env::temp_dir(), "qm-modinfo-test").unwrap();
        let modules_dir = dir.0.join("6.1.0");
        let write = |rel: &str, modinfo: &[u8]| {
            let path = modules_dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, modinfo::tests::elf_with_modinfo(modinfo)).unwrap();
        };
        write(
            "kernel/fs/fat/vfat.ko",
            b"depends=fat\0name=vfat\0alias=fs-vfat\0",
        );
        write("kernel/fs/fat/fat.ko", b"depends=\0name=fat\0");
        write(
            "kernel/fs/nls/nls_iso8859-1.ko",
            b"depends=\0name=nls_iso8859_1\0",
        );
        write(
            "kernel/drivers/virtio/virtio.ko",
            b"depends=\0name=virtio\0",
        );
        write(
            "kernel/drivers/virtio/virtio_ring.ko",
            b"depends=virtio\0name=virtio_ring\0",
        );
        write(
            "kernel/drivers/block/virtio_blk.ko",
            b"depends=virtio,virtio_ring\0name=virtio_blk\0",
        );
        write("kernel/unused.ko", b"name=unused\0");

        let modules =
            resolve_modules(&modules_dir, &["virtio_blk", "vfat", "nls_iso8859-1"]).unwrap();
        let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
        let pos = |n: &str| names.iter().position(|m| *m == n).unwrap();
        assert_eq!(names.len(), 6, "{names:?}");
        assert!(pos("fat") < pos("vfat"));
        assert!(pos("virtio") < pos("virtio_ring"));
        assert!(pos("virtio_ring") < pos("virtio_blk"));
        assert!(!names.contains(&"unused"));
        let vfat = &modules[pos("vfat")].1;
        assert_eq!(vfat.rel_path, "kernel/fs/fat/vfat.ko");
        assert_eq!(vfat.info.aliases, ["fs-vfat"]);
        assert_eq!(
            dependency_line("virtio_blk", &modules),
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko"
            ]
        );
        assert!(dependency_line("fat", &modules).is_empty());

        let err = resolve_modules(&modules_dir, &["e1000"]).unwrap_err();
        assert!(err.to_string().contains("no module e1000"), "{err}");
    }

    #[test]
    fn dependency_line_lists_transitive_dependencies_dependents_first() {
        // a -> b -> c, a -> c; load order c, b, a.
        let modules = vec![
            ("c".to_owned(), module("c.ko", &[])),
            ("b".to_owned(), module("b.ko", &["c"])),
            ("a".to_owned(), module("a.ko", &["b"])),
        ];
        assert_eq!(dependency_line("a", &modules), ["b.ko", "c.ko"]);
        assert_eq!(dependency_line("b", &modules), ["c.ko"]);
    }

    #[test]
    fn an_unknown_kernel_package_names_the_command_to_run() {
        let dir = TempDir::create(&std::env::temp_dir(), "qm-apt-test").unwrap();
        let err = kernel_package(&dir.0, "linux-image-qm-no-such-flavour", "amd64").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("`apt-cache depends linux-image-qm-no-such-flavour:amd64` failed"),
            "{message}"
        );
        assert!(
            message.contains("run `apt-get update` as root and retry"),
            "{message}"
        );
        assert!(
            message.contains(&format!("cd {} && apt-get download", dir.0.display())),
            "{message}"
        );
        assert!(matches!(err, FixtureError::Command { .. }));
        // For another architecture, the fix enables it too.
        let err = kernel_package(&dir.0, "linux-image-qm-no-such-flavour", "mips64el").unwrap_err();
        assert!(
            err.to_string()
                .contains("`dpkg --add-architecture mips64el && apt-get update` as root"),
            "{err}"
        );

        // Offline, a kernel package of that flavour and architecture already downloaded is
        // used.
        fs::write(dir.0.join("linux-image-qm-no-such-flavour_1_all.deb"), "").unwrap();
        fs::write(
            dir.0
                .join("linux-image-6.1.0-9-qm-no-such-flavour_6.1.1-1_amd64.deb"),
            "",
        )
        .unwrap();
        assert_eq!(
            kernel_package(&dir.0, "linux-image-qm-no-such-flavour", "amd64").unwrap(),
            "linux-image-6.1.0-9-qm-no-such-flavour"
        );
        assert!(kernel_package(&dir.0, "linux-image-qm-no-such-flavour", "arm64").is_err());
    }

    #[test]
    fn an_unknown_package_download_names_the_command_to_run() {
        let dir = TempDir::create(&std::env::temp_dir(), "qm-apt-test").unwrap();
        let err = obtain_deb(&dir.0, "qm-no-such-package", "amd64").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("apt-get download -q qm-no-such-package:amd64` failed"),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "`cd {} && apt-get download qm-no-such-package:amd64`",
                dir.0.display()
            )),
            "{message}"
        );
        // A package already there is used without apt; only of the architecture asked for
        // (or `all`).
        fs::write(dir.0.join("qm-no-such-package_1.0_amd64.deb"), "").unwrap();
        assert_eq!(
            obtain_deb(&dir.0, "qm-no-such-package", "amd64").unwrap(),
            dir.0.join("qm-no-such-package_1.0_amd64.deb")
        );
        assert_eq!(
            find_deb(&dir.0, "qm-no-such-package", "arm64").unwrap(),
            None
        );
        fs::write(dir.0.join("qm-no-such-package_1.0_all.deb"), "").unwrap();
        assert_eq!(
            find_deb(&dir.0, "qm-no-such-package", "arm64").unwrap(),
            Some(dir.0.join("qm-no-such-package_1.0_all.deb"))
        );
    }

    #[test]
    fn mount_points_are_found_and_unescaped() {
        assert_eq!(
            unescape_mountinfo("/a\\040b\\134c"),
            PathBuf::from("/a b\\c")
        );
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
        // /proc is a mount point under /, and nothing is mounted in a fresh directory.
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/proc")));
        let dir = TempDir::create(&std::env::temp_dir(), "qm-mount-test").unwrap();
        assert!(mounts_under(&dir.0).is_empty());
    }

    #[test]
    fn a_corrupt_cached_fixture_is_a_clear_error() {
        let dir = TempDir::create(&std::env::temp_dir(), "qm-fixture-test").unwrap();
        let fx = dir.0.join(format!("fx-{:016x}", definition_hash(&X86_64)));
        fs::create_dir(&fx).unwrap();
        fs::write(fx.join(MANIFEST), "{not json").unwrap();
        let err = GuestFixture::get_in(&dir.0).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        fs::write(
            fx.join(MANIFEST),
            r#"{"kernel_version":"6.1","modules":["vfat"]}"#,
        )
        .unwrap();
        let err = GuestFixture::get_in(&dir.0).unwrap_err();
        assert!(err.to_string().contains("vmlinuz: missing"), "{err}");
        fs::write(fx.join(KERNEL_FILE), "k").unwrap();
        fs::write(fx.join(INITRD_FILE), "i").unwrap();
        let f = GuestFixture::get_in(&dir.0).unwrap();
        assert_eq!(f.kernel_version, "6.1");
        assert_eq!(f.modules, ["vfat"]);
        assert_eq!(f.kernel, fx.join(KERNEL_FILE));
    }
}
