//! The cloud image fixture: a Debian 12 (bookworm) x86_64 disk image that boots by UEFI and is
//! set up by cloud-init from a NoCloud seed, like the cloud images users run, for tests that
//! need a whole distribution: login on the serial console, ssh, the QEMU guest agent,
//! systemd's ACPI power-off.
//!
//! # Getting it
//!
//! [`CloudFixture::get`] returns the fixture, building it on first use under
//! `<target>/guest-fixture-cloud/` (see [`crate::workspace_target_dir`]);
//! `cargo run -p qemu-machine-tests --bin build-cloud-fixture` builds it up front (so does
//! `scripts/test.sh`). It is made from Debian packages only, with no loop device and no mount:
//!
//! 1. `debootstrap --variant=minbase bookworm` with [`PACKAGES`] into a directory (the
//!    downloaded packages are kept in `<target>/guest-fixture-cloud/debs/` for the next build);
//! 2. `tests/src/cloud_fixture/configure.sh`, run in it with `chroot`, configures it (see
//!    below) and removes documentation, manual pages, translations and apt's lists;
//! 3. `mkfs.ext4 -d` turns the directory into the root file system (label [`ROOT_LABEL`]);
//! 4. `grub-mkstandalone --format=x86_64-efi` makes GRUB as one EFI program with its
//!    configuration inside; mtools put it on a FAT EFI system partition as
//!    `EFI/BOOT/BOOTX64.EFI`;
//! 5. `sfdisk` writes a GPT into a sparse file of [`DISK_SIZE`] and `dd` copies both
//!    partitions in; `qemu-img convert -c` makes [`CloudFixture::qcow2`] and `zstd`
//!    [`CloudFixture::compressed`].
//!
//! debootstrap and `chroot` need root: building as another user fails with an error that says
//! so (the development machines and CI run as root). Every other missing tool is named with
//! the package that has it; `scripts/install-deps.sh` installs them all. A build takes about
//! two minutes on two cores, most of it debootstrap's. The result lives in a directory named
//! after a hash of everything that defines it (this module's source, `configure.sh`, the
//! package list, and the busybox fixture's source, whose helpers it uses), so a change to any
//! of them builds a new one, and an unchanged one is reused without running apt or debootstrap
//! at all. Several test processes may call `get` at once: a lock file serialises building, and
//! each build happens in a temporary directory renamed into place when complete. To pick up
//! newer packages, delete `<target>/guest-fixture-cloud/`.
//!
//! # The image
//!
//! * A GPT disk of [`DISK_SIZE`] (2 GiB): an EFI system partition (FAT, label [`ESP_LABEL`],
//!   32 MiB) with GRUB, then the root file system (ext4, label [`ROOT_LABEL`]) to the end, so
//!   that it can grow: given a bigger disk, cloud-init's `growpart` and `resizefs` grow the
//!   partition and the file system at first boot.
//! * GRUB boots at once (no menu) `/vmlinuz` and `/initrd.img` from the root file system (the
//!   links Debian keeps to the installed kernel) with [`KERNEL_ARGS`]: the kernel log and a
//!   login prompt on the first serial port (`ttyS0`), which is also `/dev/console`.
//! * Booted without a seed, cloud-init stays off, nobody can log in (root has no password)
//!   and the host name is `localhost`.
//! * cloud-init 22.4 reads only a NoCloud seed: a disk with a file system labelled `cidata`
//!   or `CIDATA` (what the launcher writes for a description's `cloud_init`). It sets the host
//!   name (and `/etc/hosts`), creates the users with their passwords, sudo rights and ssh
//!   keys, makes new ssh host keys, and without a `network-config` in the seed configures the
//!   first NIC by DHCP (ifupdown, `isc-dhcp-client`), which suits QEMU's user networking.
//!   With QEMU's `q35` board and one `virtio-net-pci` NIC the interface is `enp0s2` or
//!   similar: the name does not matter, cloud-init finds it by its MAC address.
//! * The machine id is empty (systemd makes one at first boot), there are no ssh host keys
//!   (cloud-init makes them; without cloud-init, `ssh-keygen -A` does before sshd starts) and
//!   `/etc/fstab` mounts the root by label.
//! * `sshd` starts at boot (password login as cloud-init configures it), and so does
//!   `qemu-guest-agent` when the VM has a virtio-serial port named [`GUEST_AGENT_PORT`]
//!   (`-device virtio-serial-pci -device virtserialport,name=org.qemu.guest_agent.0,...`).
//! * The ACPI power button (QMP `system_powerdown`) shuts the guest down cleanly.
//! * Locales `C.UTF-8` (the default) and `en_US.UTF-8`.
//!
//! # Booting it
//!
//! Give QEMU a copy (a snapshot overlay, or the compressed image flashed into a new disk:
//! never the fixture's own file, which the guest would change), UEFI firmware, and a seed.
//! With `qemu_process::Machine` and a VM description:
//!
//! ```no_run
//! use qemu_machine_tests::cloud_fixture::{login_prompt, CloudFixture};
//! use qemu_process::{AccelChoice, Machine, MachineConfig, VmLaunch};
//! use std::time::Duration;
//!
//! let fixture = CloudFixture::get().unwrap();
//! let vm = VmLaunch::from_json(&serde_json::json!({
//!     "memory": "1G",
//!     "uefi": {},
//!     "disks": [{"id": "root", "flash_from": fixture.compressed, "format": "qcow2"}],
//!     "cloud_init": {"hostname": "vm-1", "username": "dev", "password": "secret"},
//!     "forwards": [{"name": "ssh", "host_port": 0, "guest_port": 22}],
//! }).to_string()).unwrap();
//! let mut config = MachineConfig::for_vm(vm);
//! config.accel(AccelChoice::Tcg);
//! let mut vm = Machine::launch(&config).unwrap();
//! vm.console_wait_for(login_prompt("vm-1").as_bytes(), Duration::from_secs(300)).unwrap();
//! ```
//!
//! Under TCG on the two-core development machines the login prompt comes about a minute after
//! QEMU starts (firmware and GRUB take about 10 s, cloud-init's first boot most of the rest);
//! cloud-init's last stage finishes a few seconds later, printing a line that starts with
//! [`CLOUD_INIT_FINISHED`]. Use TCG: nested KVM on those machines crashes Linux guests. Give
//! it at least 512 MiB of memory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use crate::fixture::disk::{self, Partition};
use crate::fixture::{cached_build, content_err, fnv1a, io_err, remove_tree, run, FixtureError};

/// The packages installed besides debootstrap's `minbase` variant (their dependencies
/// come along, recommended packages do not).
pub const PACKAGES: &[&str] = &[
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    // cloud-init's growpart module
    "cloud-guest-utils",
    // cloud-init's dependencies need it configured, and debootstrap does not resolve the
    // virtual package they ask for
    "python3-cffi-backend",
    "openssh-server",
    "qemu-guest-agent",
    "sudo",
    // networking as cloud-init renders it on Debian 12: /etc/network/interfaces.d, DHCP
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "netbase",
    "locales",
    "e2fsprogs",
];

/// The Debian release.
pub const SUITE: &str = "bookworm";
/// The mirror debootstrap uses unless the environment variable [`MIRROR_ENV`] names another.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The environment variable that overrides [`DEFAULT_MIRROR`].
pub const MIRROR_ENV: &str = "QM_DEBIAN_MIRROR";
/// The root file system's label (ext4), which GRUB, the kernel and `/etc/fstab` find it by.
pub const ROOT_LABEL: &str = "qm-root";
/// The EFI system partition's label (FAT).
pub const ESP_LABEL: &str = "QM-ESP";
/// The disk's virtual size in bytes.
pub const DISK_SIZE: u64 = 2 << 30;
/// The kernel's arguments (after `root=LABEL=... ro`).
pub const KERNEL_ARGS: &str = "console=tty0 console=ttyS0,115200";
/// The name of the virtio-serial port the guest agent uses.
pub const GUEST_AGENT_PORT: &str = "org.qemu.guest_agent.0";
/// cloud-init's last console line at first boot starts with this (`Cloud-init v. 22.4.2
/// finished at ...`).
pub const CLOUD_INIT_FINISHED: &str = "finished at ";

/// The login prompt of the serial console once cloud-init has set the host name to `hostname`.
pub fn login_prompt(hostname: &str) -> String {
    format!("{hostname} login: ")
}

const ESP_SIZE: u64 = 32 << 20;
const MIB: u64 = 1 << 20;
const QCOW2_FILE: &str = "disk.qcow2";
const COMPRESSED_FILE: &str = "disk.img.zst";
const MANIFEST: &str = "manifest.json";
/// The chroot script.
const CONFIGURE_SCRIPT: &str = include_str!("cloud_fixture/configure.sh");
/// GRUB's configuration, embedded in its EFI program.
const GRUB_CFG: &str = "set timeout=0\n\
search --no-floppy --label qm-root --set=root\n\
linux /vmlinuz root=LABEL=qm-root ro console=tty0 console=ttyS0,115200\n\
initrd /initrd.img\n\
boot\n";
/// Everything that defines the image; hashed into its directory name.
const DEFINITION: &[&str] = &[
    include_str!("cloud_fixture.rs"),
    CONFIGURE_SCRIPT,
    include_str!("fixture.rs"),
    include_str!("fixture/cache.rs"),
    include_str!("fixture/disk.rs"),
    include_str!("fixture/packages.rs"),
    SUITE,
];

/// A built cloud image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudFixture {
    /// The disk as qcow2 (compressed clusters). Never boot it directly: use a snapshot
    /// overlay or a copy.
    pub qcow2: PathBuf,
    /// The same disk, raw and zstd-compressed (`.img.zst`): what a flasher writes.
    pub compressed: PathBuf,
    /// The directory holding both and `manifest.json`.
    pub dir: PathBuf,
    /// The kernel release (`uname -r` in the guest), e.g. `6.1.0-37-cloud-amd64`.
    pub kernel_version: String,
    /// Every installed package and its version, by name.
    pub packages: BTreeMap<String, String>,
}

/// The fixture once this process has it.
static CACHED: Mutex<Option<CloudFixture>> = Mutex::new(None);

impl CloudFixture {
    /// Returns the image for this workspace, building it under `<target>/guest-fixture-cloud/`
    /// if it is not there yet (about two minutes, as root).
    pub fn get() -> Result<CloudFixture, FixtureError> {
        let mut cached = CACHED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(fixture) = cached.as_ref() {
            return Ok(fixture.clone());
        }
        let fixture = Self::get_in(&crate::workspace_target_dir().join("guest-fixture-cloud"))?;
        *cached = Some(fixture.clone());
        Ok(fixture)
    }

    /// Like [`get`](Self::get), with the cache in `cache_dir` instead of the target dir.
    pub fn get_in(cache_dir: &Path) -> Result<CloudFixture, FixtureError> {
        let name = format!("cloud-{:016x}", definition_hash());
        let dir = cached_build(cache_dir, &name, "cloud-", |staging| {
            build(cache_dir, staging)
        })?;
        Self::load(&dir)
    }

    fn load(dir: &Path) -> Result<CloudFixture, FixtureError> {
        let manifest_path = dir.join(MANIFEST);
        let text = fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
        let manifest: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| content_err(&manifest_path, format!("not valid JSON: {e}")))?;
        let kernel_version = manifest["kernel_version"]
            .as_str()
            .ok_or_else(|| content_err(&manifest_path, "no kernel_version"))?
            .to_owned();
        let packages = manifest["packages"]
            .as_object()
            .and_then(|map| {
                map.iter()
                    .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .ok_or_else(|| content_err(&manifest_path, "no packages map"))?;
        let fixture = CloudFixture {
            qcow2: dir.join(QCOW2_FILE),
            compressed: dir.join(COMPRESSED_FILE),
            dir: dir.to_owned(),
            kernel_version,
            packages,
        };
        for file in [&fixture.qcow2, &fixture.compressed] {
            if !file.is_file() {
                return Err(content_err(
                    file,
                    "missing; delete the directory to rebuild it",
                ));
            }
        }
        Ok(fixture)
    }

    /// The installed version of `package`, if it is installed.
    pub fn package_version(&self, package: &str) -> Option<&str> {
        self.packages.get(package).map(String::as_str)
    }
}

fn definition_hash() -> u64 {
    fnv1a(DEFINITION.iter().chain(PACKAGES).map(|s| s.as_bytes()))
}

/// The programs a build runs, with the package that has each.
const TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("chroot", "coreutils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("grub-mkstandalone", "grub-efi-amd64-bin"),
    ("mformat", "mtools"),
    ("mcopy", "mtools"),
    ("sfdisk", "fdisk"),
    ("qemu-img", "qemu-utils"),
    ("zstd", "zstd"),
];
/// GRUB's modules for x86_64 UEFI.
const GRUB_MODULES: &str = "/usr/lib/grub/x86_64-efi";

/// Fails early, before the long part of a build, when something it needs is missing.
fn check_prerequisites() -> Result<(), FixtureError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(FixtureError::Command {
            command: "debootstrap".into(),
            detail: format!("building the cloud image needs root, and this process runs as uid {uid}"),
            fix: "build it once as root: `sudo cargo run -p qemu-machine-tests --bin build-cloud-fixture` \
                  (then every user can use it)"
                .into(),
        });
    }
    missing_tools(TOOLS)?;
    if !Path::new(GRUB_MODULES).join("linux.mod").is_file() {
        return Err(FixtureError::Command {
            command: "grub-mkstandalone --format=x86_64-efi".into(),
            detail: format!("no GRUB modules in {GRUB_MODULES}"),
            fix: "apt-get install -y grub-efi-amd64-bin".into(),
        });
    }
    Ok(())
}

/// An error naming every program of `tools` (program, package) that is not installed, with the
/// `apt-get install` command for their packages.
fn missing_tools(tools: &[(&str, &str)]) -> Result<(), FixtureError> {
    let missing: Vec<&(&str, &str)> = tools
        .iter()
        .filter(|(program, _)| {
            crate::find_program(program).is_none()
                && !["/usr/sbin", "/sbin"]
                    .iter()
                    .any(|dir| Path::new(dir).join(program).is_file())
        })
        .collect();
    let Some((program, _)) = missing.first() else {
        return Ok(());
    };
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    Err(FixtureError::Command {
        command: (*program).to_owned(),
        detail: format!(
            "not installed: {}",
            missing
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        fix: format!(
            "apt-get install -y {} (scripts/install-deps.sh installs everything the tests need)",
            packages.join(" ")
        ),
    })
}

/// A directory tree removed when dropped, through [`remove_tree`]: a root file system that
/// debootstrap may have left with `/proc` mounted is never deleted through the mount. (Not a
/// `tempfile::TempDir`, whose removal would follow such a mount; these paths are inside the
/// build's staging directory, which is one.)
struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        remove_tree(&self.0);
    }
}

/// Runs a program found in `PATH` or the sbin directories (root's `PATH` has them; another
/// user's may not).
fn command(program: &str) -> Command {
    let path = crate::find_program(program)
        .or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|dir| Path::new(dir).join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(program));
    let mut command = Command::new(path);
    command.env("LC_ALL", "C");
    command
}

/// Builds the image into `out`, keeping downloaded packages in `<cache_dir>/debs`.
fn build(cache_dir: &Path, out: &Path) -> Result<(), FixtureError> {
    let mirror = std::env::var(MIRROR_ENV).unwrap_or_else(|_| DEFAULT_MIRROR.to_owned());
    build_from(cache_dir, out, &mirror)
}

/// [`build`] with packages from `mirror`.
fn build_from(cache_dir: &Path, out: &Path, mirror: &str) -> Result<(), FixtureError> {
    let started = Instant::now();
    check_prerequisites()?;
    let debs = cache_dir.join("debs");
    fs::create_dir_all(&debs).map_err(io_err(&debs))?;

    let rootfs = Tree(out.join("rootfs"));
    let mut timings = serde_json::Map::new();
    let mut step = |name: &str, since: &mut Instant| {
        timings.insert(name.to_owned(), since.elapsed().as_secs_f64().into());
        *since = Instant::now();
    };
    let mut since = Instant::now();
    let bootstrapped = run(
        command("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(format!("--cache-dir={}", debs.display()))
            .arg(SUITE)
            .arg(&rootfs.0)
            .arg(mirror),
        &format!(
            "check that {mirror} is reachable (set {MIRROR_ENV} to use another Debian mirror)"
        ),
    );
    if let Err(FixtureError::Command {
        command,
        detail,
        fix,
    }) = bootstrapped
    {
        // debootstrap reports its progress on stderr: keep its end, and the end of its log,
        // which goes with the tree.
        let log =
            fs::read_to_string(rootfs.0.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let mut detail = last_lines(&detail, 20);
        if !log.is_empty() {
            detail.push_str("\n--- end of debootstrap.log ---\n");
            detail.push_str(&last_lines(&log, 30));
        }
        return Err(FixtureError::Command {
            command,
            detail,
            fix,
        });
    }
    bootstrapped?;
    step("debootstrap", &mut since);

    let packages = run(
        command("chroot").arg(&rootfs.0).args([
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\\t${Version}\\n",
        ]),
        "the debootstrapped tree must have a working dpkg",
    )?;
    let packages: BTreeMap<&str, &str> = packages
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .collect();
    let kernel_version = kernel_version(&rootfs.0)?;

    let script = rootfs.0.join("qm-configure.sh");
    fs::write(&script, CONFIGURE_SCRIPT).map_err(io_err(&script))?;
    run(
        command("chroot")
            .arg(&rootfs.0)
            .args(["/bin/sh", "/qm-configure.sh", ROOT_LABEL]),
        "see what tests/src/cloud_fixture/configure.sh printed (quoted here), and fix it",
    )?;
    fs::remove_file(&script).map_err(io_err(&script))?;
    step("configure", &mut since);

    let root_image = Tree(out.join("root.ext4"));
    let root_size = DISK_SIZE - ESP_SIZE - 2 * MIB;
    run(
        command("mkfs.ext4")
            .args(["-q", "-F", "-L", ROOT_LABEL])
            // Features GRUB 2.06 reads, whatever the build machine's mke2fs.conf enables.
            .args(["-O", "^orphan_file,^metadata_csum_seed"])
            .args(["-E", "root_owner=0:0"])
            .arg("-d")
            .arg(&rootfs.0)
            .arg(&root_image.0)
            .arg(format!("{}k", root_size / 1024)),
        "apt-get install -y e2fsprogs (1.43 or newer, for mkfs.ext4 -d)",
    )?;
    drop(rootfs);
    step("mkfs.ext4", &mut since);

    let esp_dir = Tree(out.join("esp"));
    fs::create_dir_all(&esp_dir.0).map_err(io_err(&esp_dir.0))?;
    let grub = esp_dir.0.join("BOOTX64.EFI");
    disk::grub_standalone(
        "x86_64-efi",
        Path::new(GRUB_MODULES),
        GRUB_CFG,
        &["part_gpt", "ext2"],
        &[
            "normal",
            "linux",
            "part_gpt",
            "ext2",
            "search",
            "search_label",
            "echo",
            "test",
            "all_video",
            "gzio",
        ],
        &grub,
        &esp_dir.0,
    )?;
    let esp = esp_dir.0.join("esp.img");
    disk::fat_image(
        &esp,
        ESP_LABEL,
        ESP_SIZE,
        &["EFI", "EFI/BOOT"],
        &[(grub.as_path(), "EFI/BOOT/BOOTX64.EFI")],
    )?;

    let raw = Tree(out.join("disk.raw"));
    disk::gpt_disk(
        &raw.0,
        &[
            Partition {
                name: "EFI system partition",
                type_guid: disk::ESP_TYPE,
                image: &esp,
            },
            Partition {
                name: "root",
                type_guid: disk::LINUX_TYPE,
                image: &root_image.0,
            },
        ],
    )?;
    drop(root_image);
    drop(esp_dir);
    let size = fs::metadata(&raw.0).map_err(io_err(&raw.0))?.len();
    if size != DISK_SIZE {
        return Err(content_err(
            &raw.0,
            format!("the disk is {size} bytes, not {DISK_SIZE}"),
        ));
    }
    step("disk", &mut since);

    let qcow2 = out.join(QCOW2_FILE);
    run(
        command("qemu-img")
            .args(["convert", "-c", "-f", "raw", "-O", "qcow2"])
            .arg(&raw.0)
            .arg(&qcow2),
        "apt-get install -y qemu-utils",
    )?;
    step("qcow2", &mut since);
    // zstd rather than gzip or xz: on two cores it compresses the 2 GiB in a third of gzip's
    // time, to a smaller file, and decompresses four times as fast.
    let compressed = out.join(COMPRESSED_FILE);
    run(
        command("zstd")
            .args(["-q", "-T0", "-3", "-o"])
            .arg(&compressed)
            .arg(&raw.0),
        "apt-get install -y zstd",
    )?;
    drop(raw);
    step("zstd", &mut since);

    let manifest = serde_json::json!({
        "suite": SUITE,
        "mirror": mirror,
        "kernel_version": kernel_version,
        "packages": packages,
        "disk_size": DISK_SIZE,
        "build_seconds": started.elapsed().as_secs_f64(),
        "step_seconds": timings,
    });
    let manifest_path = out.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).expect("a JSON value serialises");
    fs::write(&manifest_path, text + "\n").map_err(io_err(&manifest_path))?;
    Ok(())
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The release of the one kernel in `rootfs/boot`.
fn kernel_version(rootfs: &Path) -> Result<String, FixtureError> {
    let boot = rootfs.join("boot");
    let mut versions: Vec<String> = fs::read_dir(&boot)
        .map_err(io_err(&boot))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .collect();
    match versions.len() {
        1 => Ok(versions.remove(0)),
        n => Err(content_err(
            &boot,
            format!("expected one kernel, found {n}: {versions:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_layout_is_what_the_build_uses() {
        // GRUB, the kernel and fstab (configure.sh gets the label as its argument) agree.
        assert!(GRUB_CFG.contains(&format!("--label {ROOT_LABEL} ")));
        assert!(GRUB_CFG.contains(&format!("root=LABEL={ROOT_LABEL} ro {KERNEL_ARGS}\n")));
        assert!(CONFIGURE_SCRIPT.contains("LABEL=%s\\t/\\text4"));
        assert!(CONFIGURE_SCRIPT.contains("datasource_list: [ NoCloud, None ]"));
        assert_eq!(ESP_SIZE % MIB, 0);
        assert!(ROOT_LABEL.len() <= 16 && ESP_LABEL.len() <= 11);
        assert_eq!(login_prompt("vm-1"), "vm-1 login: ");
        assert_ne!(definition_hash(), fnv1a([]));
    }

    #[test]
    fn a_corrupt_cached_image_is_a_clear_error() {
        let dir = crate::support::scratch("cloud-test");
        let dir = dir.path();
        let image = dir.join(format!("cloud-{:016x}", definition_hash()));
        fs::create_dir(&image).unwrap();
        fs::write(image.join(MANIFEST), "[]").unwrap();
        let err = CloudFixture::get_in(dir).unwrap_err();
        assert!(err.to_string().contains("no kernel_version"), "{err}");
        fs::write(
            image.join(MANIFEST),
            r#"{"kernel_version":"6.1","packages":{"sudo":"1.9"}}"#,
        )
        .unwrap();
        let err = CloudFixture::get_in(dir).unwrap_err();
        assert!(err.to_string().contains("disk.qcow2: missing"), "{err}");
        fs::write(image.join(QCOW2_FILE), "q").unwrap();
        fs::write(image.join(COMPRESSED_FILE), "c").unwrap();
        let f = CloudFixture::get_in(dir).unwrap();
        assert_eq!(f.package_version("sudo"), Some("1.9"));
        assert_eq!(f.package_version("emacs"), None);
        assert_eq!(f.kernel_version, "6.1");
    }

    #[test]
    fn missing_tools_are_named_with_their_packages() {
        missing_tools(&[("sh", "dash")]).unwrap();
        let err = missing_tools(&[
            ("sh", "dash"),
            ("qm-no-such-tool", "qm-tools"),
            ("qm-no-such-tool-2", "qm-tools"),
            ("qm-other", "qm-other-package"),
        ])
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(
                "`qm-no-such-tool` failed: not installed: qm-no-such-tool, qm-no-such-tool-2, qm-other"
            ),
            "{message}"
        );
        assert!(
            message.contains("to fix: apt-get install -y qm-tools qm-other-package "),
            "{message}"
        );
        // The tools of a real build are all installed on a machine set up by install-deps.sh.
        missing_tools(TOOLS).unwrap();
    }

    /// A mirror that cannot be reached (nothing listens on loopback port 9): debootstrap fails
    /// at once, the error quotes it and says how to pick another mirror, and the partial tree
    /// is gone. Needs root, like every build.
    #[test]
    fn an_unreachable_mirror_is_a_clear_error_and_leaves_nothing() {
        let dir = crate::support::scratch("cloud-test");
        let dir = dir.path();
        let out = dir.join("out");
        fs::create_dir(&out).unwrap();
        let err = build_from(dir, &out, "http://127.0.0.1:9/debian").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("debootstrap --variant=minbase"),
            "{message}"
        );
        assert!(message.contains("127.0.0.1:9"), "{message}");
        assert!(
            message.contains(
                "check that http://127.0.0.1:9/debian is reachable (set QM_DEBIAN_MIRROR"
            ),
            "{message}"
        );
        assert!(message.lines().count() < 60, "{message}");
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            0,
            "left in {}",
            out.display()
        );
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn the_kernel_version_comes_from_boot() {
        let dir = crate::support::scratch("cloud-test");
        let dir = dir.path();
        fs::create_dir(dir.join("boot")).unwrap();
        assert!(kernel_version(dir)
            .unwrap_err()
            .to_string()
            .contains("expected one kernel, found 0"));
        fs::write(dir.join("boot/vmlinuz-6.1.0-9-cloud-amd64"), "").unwrap();
        fs::write(dir.join("boot/config-6.1.0-9-cloud-amd64"), "").unwrap();
        assert_eq!(kernel_version(dir).unwrap(), "6.1.0-9-cloud-amd64");
    }
}
