//! Resolving a [`VmLaunch`] into the [`VmSpec`] QEMU runs: disks created, probed, flashed and
//! grown, the seed written, firmware found and its variables copied, the VNC socket placed, the
//! accelerator chosen. A dry run resolves the same way but makes nothing (it still probes
//! existing images, read-only), so that the command line can be shown before launching.

use std::io::Write;
use std::path::{Path, PathBuf};

use qemu_cmdline::{
    Arch, DiskInterface, DiskSpec, Display, Format, Size, UefiSpec, UefiVariant, Vga, VmSpec, Vnc,
};

use super::{
    DiskLaunch, Drive, DriveKind, Preparing, ProgressFn, VmLaunch, DEFAULT_ROOT_SIZE, SEED_DISK_ID,
};
use crate::cloudinit::CloudInitSpec;
use crate::config::{args_choose_accel, resolve_accel, AccelChoice as Accel};
use crate::error::Error;
use crate::image::QemuImg;
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
/// recorded in `created`. With `dry_run`, nothing is made, flashed or grown. The work on disks
/// is reported to `progress`.
pub(crate) struct Resolver<'a, 'p> {
    pub(crate) temp: &'a Path,
    pub(crate) img: &'a QemuImg,
    pub(crate) created: &'a mut Created,
    pub(crate) binary: Option<&'a Path>,
    pub(crate) accel: Option<Accel>,
    pub(crate) dry_run: bool,
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

        if launch.default_partitions {
            if !r
                .disks
                .iter()
                .enumerate()
                .any(|(i, d)| disk_id(d, i) == "root")
            {
                let mut root = DiskSpec::new(PathBuf::new());
                root.id = Some("root".into());
                root.path = None;
                root.bootindex = Some(1);
                r.disks.insert(0, root);
                disks.insert(
                    0,
                    DiskLaunch {
                        size: Some(launch.disk_size.unwrap_or(DEFAULT_ROOT_SIZE)),
                        flash_from: None,
                    },
                );
            }
            if r.bios.is_none() && r.uefi.is_none() {
                r.uefi = Some(UefiSpec::default());
            }
        }

        // Disks: ids fixed before positions change (the seed disk goes last).
        for (i, launch_disk) in disks.iter().enumerate() {
            let id = disk_id(&r.disks[i], i);
            r.disks[i].id = Some(id.clone());
            let size = launch_disk
                .size
                .or(if id == "root" { launch.disk_size } else { None });
            let (path, format, owned) = self.disk(&r.disks[i], launch_disk, &id, size)?;
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
                owned: false,
            });
        }
        if let Some(u) = r.uefi.take() {
            let u = self.uefi(u, r.arch)?;
            drives.push(Drive {
                name: "uefi_code".into(),
                kind: DriveKind::UefiCode,
                path: u.code.clone().expect("resolved"),
                format: Format::Raw,
                size: None,
                owned: false,
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
        if let Some(src) = &launch.flash_from {
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
        // file is root-owned 0644): fs::copy would copy that mode.
        if !self.dry_run {
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

fn disk_id(d: &DiskSpec, index: usize) -> String {
    d.id.clone().unwrap_or_else(|| format!("disk{index}"))
}
