//! Resolving a [`VmLaunch`] into the [`VmSpec`] QEMU runs: disks created, probed, flashed and
//! grown, the seed written, firmware found and its variables copied, the VNC socket placed, the
//! accelerator chosen. A dry run resolves the same way but makes nothing (it still probes
//! existing images, read-only), so that the command line can be shown before launching.

use std::io::Write;
use std::path::{Path, PathBuf};

use qemu_cmdline::{
    Arch, DiskInterface, DiskSpec, Display, Format, Size, UefiSpec, UefiVariant, Vga, VmSpec, Vnc,
};

use super::partitions::{Partition, PartitionFiles};
use super::{
    DiskLaunch, Drive, DriveKind, Preparing, ProgressFn, VmLaunch, DEFAULT_ROOT_SIZE, SEED_DISK_ID,
};
use crate::cloudinit::CloudInitSpec;
use crate::config::{args_choose_accel, resolve_accel, AccelChoice as Accel};
use crate::error::Error;
use crate::image::{Compression, QemuImg};
use crate::machine::QtestPlan;

/// Files the launch created outside the temp dir, removed unless the launch succeeds.
#[derive(Default)]
pub(crate) struct Created {
    paths: Vec<PathBuf>,
}

impl Created {
    pub(crate) fn push(&mut self, path: PathBuf) {
        self.paths.push(path);
    }
    pub(crate) fn keep(&mut self) {
        self.paths.clear();
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for p in &self.paths {
            log::debug!("launch failed: removing {}", p.display());
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What resolution gives: the spec QEMU runs, the drives a flasher knows, the VNC socket.
pub(crate) struct Resolved {
    pub(crate) spec: VmSpec,
    pub(crate) drives: Vec<Drive>,
    pub(crate) vnc: Option<PathBuf>,
}

/// Resolves `launch` with files in `temp`. `binary` and `accel` override the spec's (see
/// [`MachineConfig::accel`](crate::MachineConfig::accel)); files made outside `temp` are
/// recorded in `created`. With `dry_run`, nothing is made, flashed or grown. With `reuse` (a
/// relaunch with a changed description), what the temp dir and the disks already hold is kept:
/// existing disks are not flashed again (only grown), overlays and the UEFI variables stay, and
/// firmware flashed into the temp dir is used again; the seed is written anew. The work on
/// disks is reported to `progress`.
pub(crate) struct Resolver<'a, 'p> {
    pub(crate) temp: &'a Path,
    pub(crate) img: &'a QemuImg,
    pub(crate) created: &'a mut Created,
    pub(crate) binary: Option<&'a Path>,
    pub(crate) accel: Option<Accel>,
    pub(crate) dry_run: bool,
    pub(crate) reuse: bool,
    pub(crate) progress: Option<ProgressFn<'p>>,
    /// The machine gets a qtest channel: `auto` means the qtest accelerator when the binary
    /// has it, else TCG, and `-S` unless it runs the qtest accelerator.
    pub(crate) qtest: bool,
}

impl Resolver<'_, '_> {
    fn report(&mut self, step: &Preparing<'_>) {
        if let Some(progress) = self.progress.as_mut() {
            progress(step);
        }
    }

    pub(crate) fn resolve(&mut self, launch: &VmLaunch) -> Result<Resolved, Error> {
        let mut r = launch.spec.clone();
        let mut disks: Vec<DiskLaunch> = (0..r.disks.len()).map(|i| launch.disk(i)).collect();
        let mut drives = Vec::new();
        if let Some(b) = self.binary {
            r.binary = Some(b.to_path_buf());
        }
        self.accel(&mut r);

        if launch.default_partitions || !launch.partition_files.is_empty() {
            self.default_partitions(launch, &mut r, &mut disks)?;
        }

        // Disks: ids fixed before positions change (the seed disk goes last).
        for (i, launch_disk) in disks.iter().enumerate() {
            let id = disk_id(&r.disks[i], i);
            r.disks[i].id = Some(id.clone());
            let (size, field) = match launch_disk.size {
                Some(size) => (Some(size), "size"),
                None if id == "root" => (launch.disk_size, "disk_size"),
                None => (None, "size"),
            };
            let (path, format, owned) = self.disk(&r.disks[i], launch_disk, &id, size, field)?;
            if r.disks[i].snapshot && r.disks[i].overlay.is_none() {
                let overlay = self.overlay(&id, &path, &format)?;
                r.disks[i].overlay = Some(overlay);
            }
            let d = &mut r.disks[i];
            d.path = Some(path.clone());
            d.format = Some(format.clone());
            drives.push(Drive {
                name: id,
                kind: DriveKind::Disk,
                path,
                format,
                size,
                owned,
            });
        }

        if let Some(flashed) = self.flashed_copy("bios").filter(|_| r.bios.is_some()) {
            r.bios = Some(flashed);
        }
        if let Some(b) = &r.bios {
            if !b.exists() {
                return Err(Error::NotFound {
                    what: "bios".into(),
                    path: b.clone(),
                });
            }
            drives.push(Drive {
                name: "bios".into(),
                kind: DriveKind::Bios,
                path: b.clone(),
                format: Format::Raw,
                size: None,
                owned: b.starts_with(self.temp),
            });
        }
        if let Some(u) = r.uefi.take() {
            let mut u = self.uefi(u, r.arch)?;
            if let Some(flashed) = self.flashed_copy("uefi_code") {
                u.code = Some(flashed);
            }
            let code = u.code.clone().expect("resolved");
            drives.push(Drive {
                name: "uefi_code".into(),
                kind: DriveKind::UefiCode,
                owned: code.starts_with(self.temp),
                path: code,
                format: Format::Raw,
                size: None,
            });
            drives.push(Drive {
                name: "uefi_vars".into(),
                kind: DriveKind::UefiVars,
                path: u.vars.clone().expect("resolved"),
                format: Format::Raw,
                size: None,
                owned: true,
            });
            r.uefi = Some(u);
        }

        if let Some(ci) = &launch.cloud_init {
            let path = self.seed(ci)?;
            let mut seed = DiskSpec::new(path);
            seed.id = Some(SEED_DISK_ID.into());
            seed.format = Some(Format::Raw);
            seed.read_only = true;
            seed.interface = DiskInterface::Virtio;
            r.disks.push(seed);
        }

        if launch.vsock {
            if !self.dry_run {
                super::vsock::check_device(Path::new(super::vsock::VHOST_VSOCK))?;
            }
            super::vsock::add_device(&mut r, super::vsock::random_cid());
        }

        // Every NIC gets its id, so that each forward's netdev is known.
        for (i, n) in r.nics.iter_mut().enumerate() {
            n.id.get_or_insert_with(|| format!("net{i}"));
        }

        let mut vnc = match &r.display {
            Display::Vnc(Vnc::Unix(p)) => Some(p.clone()),
            _ => None,
        };
        if launch.vnc {
            if matches!(r.display, Display::Vnc(_)) {
                return Err(Error::Spec(qemu_cmdline::Error::invalid(
                    "vnc",
                    "vnc and a VNC display are both set; choose one",
                )));
            }
            let sock = self.temp.join("vnc.sock");
            r.display = Display::Vnc(Vnc::Unix(sock.clone()));
            r.vga.get_or_insert(Vga::Std);
            vnc = Some(sock);
        }
        Ok(Resolved {
            spec: r,
            drives,
            vnc,
        })
    }

    fn accel(&self, r: &mut VmSpec) {
        let binary = r
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(r.arch.profile().binary));
        // A qtest machine does not run guest code: -S, unless it gets the qtest accelerator.
        r.paused |= self.qtest;
        let choice = match self.accel {
            Some(Accel::None) => return,
            Some(a) => a,
            None if !r.accel.is_empty() => return,
            None => Accel::Auto,
        };
        // Auto applies only when the description chooses nothing: an `accel` machine property
        // or `-accel`/`-machine accel=`/`-enable-kvm` in the extra arguments win.
        if choice == Accel::Auto
            && (r
                .machine
                .as_ref()
                .is_some_and(|m| m.props().get("accel").is_some())
                || args_choose_accel(&r.extra_args))
        {
            return;
        }
        if self.qtest && choice == Accel::Auto {
            let plan = QtestPlan::new(Some(Accel::Auto), &binary);
            r.paused = plan.paused;
            r.accel = plan.accel.into_iter().collect();
            return;
        }
        r.accel = match resolve_accel(choice, &binary) {
            Accel::Kvm => vec![qemu_cmdline::Accel::Kvm],
            Accel::Tcg => vec![qemu_cmdline::Accel::Tcg],
            Accel::None | Accel::Auto => r.accel.clone(),
        };
    }

    /// Resolves one disk: its path (made in the temp dir when absent), flashed, created or
    /// grown, and its format (probed when not given).
    fn disk(
        &mut self,
        d: &DiskSpec,
        launch: &DiskLaunch,
        id: &str,
        size: Option<Size>,
        field: &'static str,
    ) -> Result<(PathBuf, Format, bool), Error> {
        let what = format!("disk {id:?}");
        let owned = d.path.is_none();
        let path = match &d.path {
            Some(p) => p.clone(),
            None => {
                let ext = d.format.as_ref().map_or("qcow2", |f| f.name());
                self.temp.join(format!("{id}.{ext}"))
            }
        };
        let exists = path.symlink_metadata().is_ok();
        let too_small = |image: u64, size: Size| Error::DiskTooSmall {
            disk: id.to_owned(),
            field,
            path: path.clone(),
            image,
            requested: size.bytes(),
        };
        // A relaunch keeps what a disk holds: it is flashed only when it does not exist yet.
        let flash_from = launch
            .flash_from
            .as_ref()
            .filter(|_| !(self.reuse && exists));
        if let Some(src) = flash_from {
            let format = match &d.format {
                Some(f) => f.clone(),
                None if exists => self.img.info(&path)?.format,
                None if owned => Format::Qcow2,
                None => Format::Raw,
            };
            if d.read_only {
                return Err(Error::InvalidArgument(format!(
                    "{what}: flash_from onto a read-only disk"
                )));
            }
            if self.dry_run {
                return Ok((path, format, owned));
            }
            log::info!(
                "flashing {} into {what} ({})",
                src.display(),
                path.display()
            );
            let img = self.img;
            let mut progress = self.progress.take();
            let result = img.flash(src, &path, &format, |fraction| {
                log::debug!("flashing {what}: {:.1}%", fraction * 100.0);
                if let Some(p) = progress.as_mut() {
                    p(&Preparing::Flash {
                        disk: id,
                        source: src,
                        path: &path,
                        fraction,
                    });
                }
            });
            self.progress = progress;
            let report = result?;
            if !exists && !owned {
                self.created.push(path.clone());
            }
            if let Some(size) = size {
                if report.virtual_size > size.bytes() {
                    return Err(too_small(report.virtual_size, size));
                }
                if report.virtual_size < size.bytes() {
                    self.report(&Preparing::Grow {
                        disk: id,
                        path: &path,
                        size,
                    });
                    self.img.resize(&path, size, false)?;
                }
            }
            return Ok((path, format, owned));
        }
        if !exists {
            let Some(size) = size else {
                if self.dry_run {
                    // Shown as given; the launch itself reports the missing image.
                    return Ok((path, d.format.clone().unwrap_or(Format::Raw), owned));
                }
                return Err(Error::NotFound { what, path });
            };
            let format = d.format.clone().unwrap_or(Format::Qcow2);
            if self.dry_run {
                return Ok((path, format, owned));
            }
            self.report(&Preparing::Create {
                disk: id,
                path: &path,
                format: &format,
                size,
            });
            self.img.create(&path, &format, size)?;
            if !owned {
                self.created.push(path.clone());
            }
            return Ok((path, format, owned));
        }
        // An existing image: probed once, unless the format is given; grown to `size`.
        let info = match &d.format {
            Some(f) if size.is_none() => {
                return Ok((path, f.clone(), owned));
            }
            Some(f) => self.img.info_with(&path, Some(f), false)?,
            None => self.img.info(&path)?,
        };
        if let Some(size) = size {
            if info.virtual_size > size.bytes() {
                return Err(too_small(info.virtual_size, size));
            }
        }
        if let Some(size) = size.filter(|_| !self.dry_run) {
            if info.virtual_size < size.bytes() {
                log::info!("growing {what} to {size}");
                self.report(&Preparing::Grow {
                    disk: id,
                    path: &path,
                    size,
                });
                self.img.resize(&path, size, false)?;
            }
        }
        Ok((path, info.format, owned))
    }

    /// Adds what Jumpstarter's default partitions need and the description lacks: the `root`
    /// disk (from its partition file, or empty), and firmware (a `bios` file, UEFI code and
    /// variables files, or the profile's UEFI firmware).
    fn default_partitions(
        &mut self,
        launch: &VmLaunch,
        r: &mut VmSpec,
        disks: &mut Vec<DiskLaunch>,
    ) -> Result<(), Error> {
        let files: &PartitionFiles = &launch.partition_files;
        for (partition, path) in &files.0 {
            if !path.exists() {
                return Err(Error::NotFound {
                    what: format!("default partition {:?}", partition.jumpstarter_name()),
                    path: path.clone(),
                });
            }
        }
        let has_root = r
            .disks
            .iter()
            .enumerate()
            .any(|(i, d)| disk_id(d, i) == "root");
        if has_root && files.get(Partition::Root).is_some() {
            return Err(conflict("root", "a disk \"root\""));
        }
        if !has_root {
            let mut root = DiskSpec::new(PathBuf::new());
            root.id = Some("root".into());
            root.path = None;
            root.bootindex = Some(1);
            root.format = Some(Format::Qcow2);
            let path = self.temp.join("root.qcow2");
            // `disk_size` (checked and grown as the disk's own) or, for a new empty disk, the
            // default size.
            let new_empty = files.get(Partition::Root).is_none() && !path.exists();
            let mut root_launch = DiskLaunch {
                size: (launch.disk_size.is_none() && new_empty).then_some(DEFAULT_ROOT_SIZE),
                flash_from: None,
            };
            if let Some(file) = files.get(Partition::Root) {
                if is_compressed(file)? {
                    root_launch.flash_from = Some(file.clone());
                } else {
                    self.overlay_file(&path, file, None)?;
                }
            }
            r.disks.insert(0, root);
            disks.insert(0, root_launch);
        }
        let bios = files.get(Partition::Bios);
        let code = files.get(Partition::UefiCode);
        let vars = files.get(Partition::UefiVars);
        let uefi_files = code.is_some() || vars.is_some();
        if bios.is_some() && uefi_files {
            return Err(Error::InvalidArgument(
                "default_partitions: bios and the UEFI partitions (OVMF_CODE.fd, OVMF_VARS.fd) \
                 exclude each other: a VM boots one firmware"
                    .into(),
            ));
        }
        if (bios.is_some() || uefi_files) && (r.bios.is_some() || r.uefi.is_some()) {
            let which = if bios.is_some() {
                "bios"
            } else {
                "the UEFI partitions"
            };
            return Err(conflict(which, "its own firmware (bios or uefi)"));
        }
        if let Some(b) = bios {
            r.bios = Some(b.clone());
        } else if uefi_files {
            r.uefi = Some(UefiSpec {
                code: code.cloned(),
                vars: vars.cloned(),
                ..UefiSpec::default()
            });
        } else if r.bios.is_none() && r.uefi.is_none() {
            r.uefi = Some(UefiSpec::default());
        }
        Ok(())
    }

    /// A qcow2 overlay for the snapshot disk `id` on `base` (of `format`), made in the temp
    /// dir unless it is there (a relaunch).
    fn overlay(&mut self, id: &str, base: &Path, format: &Format) -> Result<PathBuf, Error> {
        let overlay = self.temp.join(format!("{id}.overlay.qcow2"));
        self.overlay_file(&overlay, base, Some(format))?;
        Ok(overlay)
    }

    /// Creates `overlay`, a qcow2 image whose backing file is `base` (absolute; its format
    /// given or probed once), unless it exists (a relaunch) or this is a dry run.
    fn overlay_file(
        &mut self,
        overlay: &Path,
        base: &Path,
        format: Option<&Format>,
    ) -> Result<(), Error> {
        if self.dry_run || overlay.exists() {
            return Ok(());
        }
        let base = std::path::absolute(base)
            .map_err(Error::io_with(format!("resolving {}", base.display())))?;
        let format = match format {
            Some(f) => f.clone(),
            None => self.img.info(&base)?.format,
        };
        let cmd = qemu_cmdline::ImgCreate::new(overlay, Format::Qcow2).backing(&base, format);
        self.img.create_with(overlay, &cmd)
    }

    /// On a relaunch, the copy of firmware drive `name` that [`Machine::flash`] wrote into the
    /// temp dir, if any.
    ///
    /// [`Machine::flash`]: crate::Machine::flash
    fn flashed_copy(&self, name: &str) -> Option<PathBuf> {
        let path = self.temp.join(format!("{name}.fd"));
        (self.reuse && path.is_file()).then_some(path)
    }

    /// Finds the firmware of the variant and copies the variable store into the temp dir.
    fn uefi(&mut self, mut u: UefiSpec, arch: Arch) -> Result<UefiSpec, Error> {
        let package = match arch {
            Arch::X86_64 => "ovmf",
            Arch::Aarch64 => "qemu-efi-aarch64",
            Arch::Riscv64 => "qemu-efi-riscv64",
        };
        let candidates: Vec<(PathBuf, PathBuf)> = match (u.variant, arch) {
            (UefiVariant::Plain, _) => arch
                .profile()
                .uefi
                .iter()
                .map(|p| (p.code.into(), p.vars.into()))
                .collect(),
            (v, Arch::X86_64) => SECURE_BOOT_X86_64
                .iter()
                .map(|(code, ms, blank)| {
                    let vars = if v == UefiVariant::SecureBoot {
                        ms
                    } else {
                        blank
                    };
                    (PathBuf::from(code), PathBuf::from(vars))
                })
                .collect(),
            (_, other) => {
                return Err(Error::Unsupported(format!(
                    "secure boot on {other} (x86_64 only)"
                )))
            }
        };
        let found = candidates
            .iter()
            .find(|(c, v)| c.is_file() && v.is_file())
            .cloned();
        let (code, template) = match (u.code.take(), u.vars.take(), found) {
            (Some(c), Some(v), _) => (c, v),
            (None, None, Some((c, v))) => (c, v),
            (Some(c), None, Some((_, v))) => (c, v),
            (None, Some(v), Some((c, _))) => (c, v),
            (c, v, None) => {
                let program = c
                    .or(v)
                    .or_else(|| candidates.first().map(|(c, _)| c.clone()))
                    .unwrap_or_default();
                return Err(Error::ProgramMissing {
                    program,
                    package: package.into(),
                    purpose: format!("for UEFI boot ({:?} firmware)", u.variant),
                });
            }
        };
        for (what, p) in [("uefi code", &code), ("uefi vars", &template)] {
            if !p.is_file() {
                return Err(Error::NotFound {
                    what: what.into(),
                    path: p.clone(),
                });
            }
        }
        let vars = self.temp.join("uefi-vars.fd");
        // Made owner-only and writable from the start, whatever the template's mode (a system
        // file is root-owned 0644): fs::copy would copy that mode. A relaunch keeps the
        // variables the guest wrote.
        let keep = self.reuse && vars.exists();
        if !self.dry_run && !keep {
            copy_private(&template, &vars)?;
        }
        u.code = Some(code);
        u.vars = Some(vars);
        Ok(u)
    }

    fn seed(&mut self, ci: &CloudInitSpec) -> Result<PathBuf, Error> {
        let image = crate::cloudinit::seed_image(ci)?;
        let path = self.temp.join("cidata.img");
        if self.dry_run {
            return Ok(path);
        }
        if self.reuse {
            // A relaunch writes the seed of the new description.
            let _ = std::fs::remove_file(&path);
        }
        // Owner-only: the seed may hold a password and keys.
        create_private(&path)
            .and_then(|mut f| f.write_all(&image))
            .map_err(Error::io_with(format!("writing {}", path.display())))?;
        Ok(path)
    }
}

/// Secure-boot OVMF builds: code, variables with the Microsoft keys, variables without keys.
const SECURE_BOOT_X86_64: &[(&str, &str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS.ms.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
];

/// Creates a new file, mode 0600 (an existing one is an error).
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Copies `from` into a new owner-only file `to`.
fn copy_private(from: &Path, to: &Path) -> Result<(), Error> {
    let context = || format!("copying {} to {}", from.display(), to.display());
    let mut src = std::fs::File::open(from).map_err(Error::io_with(context()))?;
    let mut dst = create_private(to).map_err(Error::io_with(context()))?;
    std::io::copy(&mut src, &mut dst).map_err(Error::io_with(context()))?;
    Ok(())
}

/// A default partition file for a partition the description has itself.
fn conflict(partition: &str, own: &str) -> Error {
    Error::InvalidArgument(format!(
        "default_partitions gives a file for {partition}, and the description has {own}: \
         keep one"
    ))
}

/// Whether `path` starts with a compression's magic bytes.
fn is_compressed(path: &Path) -> Result<bool, Error> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut n = 0;
    let mut f =
        std::fs::File::open(path).map_err(Error::io_with(format!("opening {}", path.display())))?;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
    Ok(Compression::detect(&head[..n]).is_some())
}

fn disk_id(d: &DiskSpec, index: usize) -> String {
    d.id.clone().unwrap_or_else(|| format!("disk{index}"))
}
