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
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod arch;
mod build;
mod cache;
pub(crate) mod disk;
mod modinfo;
mod modules;
pub(crate) mod newc;
mod packages;

pub use arch::{Arch, ArchSpec, UefiBoot, AARCH64, X86_64};
pub(crate) use cache::{cached_build, remove_tree};
pub(crate) use packages::run;

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
/// Everything that defines the fixture's content; hashed into its directory name.
const DEFINITION: &[&str] = &[
    INIT_SCRIPT,
    POWER_BUTTON_ACTION,
    INITTAB,
    SHELL_SCRIPT,
    include_str!("fixture.rs"),
    include_str!("fixture/arch.rs"),
    include_str!("fixture/build.rs"),
    include_str!("fixture/disk.rs"),
    include_str!("fixture/modinfo.rs"),
    include_str!("fixture/modules.rs"),
    include_str!("fixture/newc.rs"),
    include_str!("fixture/packages.rs"),
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
            build::build(spec, cache_dir, staging)
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
        assert!(build::GRUB_CFG.contains(&format!("--label {} ", build::ESP_LABEL)));
        assert!(X86_64.is_native() != AARCH64.is_native() || arch::HOST_DEBIAN_ARCH == "unknown");
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

    #[test]
    fn a_corrupt_cached_fixture_is_a_clear_error() {
        let dir = crate::support::scratch("fixture-test");
        let fx = dir
            .path()
            .join(format!("fx-{:016x}", definition_hash(&X86_64)));
        fs::create_dir(&fx).unwrap();
        fs::write(fx.join(MANIFEST), "{not json").unwrap();
        let err = GuestFixture::get_in(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        fs::write(
            fx.join(MANIFEST),
            r#"{"kernel_version":"6.1","modules":["vfat"]}"#,
        )
        .unwrap();
        let err = GuestFixture::get_in(dir.path()).unwrap_err();
        assert!(err.to_string().contains("vmlinuz: missing"), "{err}");
        fs::write(fx.join(KERNEL_FILE), "k").unwrap();
        fs::write(fx.join(INITRD_FILE), "i").unwrap();
        let f = GuestFixture::get_in(dir.path()).unwrap();
        assert_eq!(f.kernel_version, "6.1");
        assert_eq!(f.modules, ["vfat"]);
        assert_eq!(f.kernel, fx.join(KERNEL_FILE));
        // The aarch64 fixture needs its UEFI disk too.
        let arm = dir
            .path()
            .join(format!("fx-{:016x}", definition_hash(&AARCH64)));
        fs::create_dir(&arm).unwrap();
        for file in [MANIFEST, KERNEL_FILE, INITRD_FILE] {
            fs::copy(fx.join(file), arm.join(file)).unwrap();
        }
        let err = GuestFixture::get_for_in(Arch::Aarch64, dir.path()).unwrap_err();
        assert!(err.to_string().contains("uefi-disk.img: missing"), "{err}");
    }
}
