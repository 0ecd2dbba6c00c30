//! What a machine launched from a VM description has beyond QEMU: the resolved description, the
//! port forwards QEMU reports, the named drives (flashed and dumped while QEMU is stopped), the
//! VNC socket; and screendumps, for any machine with a display.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use qemu_cmdline::{Format, VmSpec};
use serde_json::json;

use super::Machine;
use crate::config::MachineConfig;
use crate::error::Error;
use crate::image::{FlashReport, QemuImg};
use crate::vm::resolve::{create_private, Created, Resolver};
use crate::vm::{read_forwards, Drive, DriveKind, Forward, ProgressFn, ScreenshotFormat, VmLaunch};

/// What a VM launch resolved, kept for the machine's life (and its relaunches).
#[derive(Debug)]
pub(crate) struct VmParts {
    /// The description as given.
    pub(crate) launch: VmLaunch,
    /// The description QEMU runs: paths, formats, firmware, seed disk, display and
    /// accelerators filled in.
    pub(crate) resolved: VmSpec,
    pub(crate) drives: Vec<Drive>,
    pub(crate) vnc: Option<PathBuf>,
    /// Read back from QEMU once QMP is up.
    pub(crate) forwards: Vec<Forward>,
}

impl VmParts {
    /// Resolves `launch` with its files in `temp` (made unless `dry_run`), reporting the work
    /// on disks to `progress`.
    pub(crate) fn resolve(
        config: &MachineConfig,
        launch: &VmLaunch,
        temp: &Path,
        created: &mut Created,
        dry_run: bool,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<VmParts, Error> {
        let resolved = Resolver {
            temp,
            img: &config.qemu_img,
            created,
            binary: config.binary.as_deref(),
            accel: config.accel,
            dry_run,
            progress,
            qtest: config.qtest,
        }
        .resolve(launch)?;
        Ok(VmParts {
            launch: launch.clone(),
            resolved: resolved.spec,
            drives: resolved.drives,
            vnc: resolved.vnc,
            forwards: Vec::new(),
        })
    }
}

impl MachineConfig {
    /// The command line this config launches QEMU with (wrapper first), without launching: a
    /// VM description is resolved without making anything (existing images are probed), with
    /// the files a launch would make in its temp dir shown under
    /// `$TMPDIR/qemu-machine.XXXXXX`, and the harness descriptors numbered as QEMU will see
    /// them. Programs are shown as configured (not looked up in `PATH`).
    pub fn argv(&self) -> Result<Vec<std::ffi::OsString>, Error> {
        self.check()?;
        let base = self.temp_base.clone().unwrap_or_else(std::env::temp_dir);
        let temp = base.join("qemu-machine.XXXXXX");
        let resolved = match &self.vm {
            Some(launch) => {
                let mut created = Created::default();
                Some(VmParts::resolve(self, launch, &temp, &mut created, true, None)?.resolved)
            }
            None => None,
        };
        let name = self.name.as_deref().unwrap_or("qemu-machine.XXXXXX");
        let console_log = self.log_paths_unmade(&temp, name).1;
        super::launch::render_argv(self, resolved.as_ref(), false, &console_log)
    }
}

impl Machine {
    pub(super) fn vm_ref(&self) -> Option<&VmParts> {
        self.vm.as_ref()
    }

    pub(super) fn vm_mut(&mut self) -> Result<&mut VmParts, Error> {
        self.vm.as_mut().ok_or_else(|| {
            Error::Unsupported("this machine was not launched from a VM description".into())
        })
    }

    pub(super) fn img(&self) -> QemuImg {
        self.config
            .as_ref()
            .map(|c| c.qemu_img.clone())
            .unwrap_or_default()
    }

    /// Once QMP is up: the VM's forwards as QEMU reports them. Launch files made outside the temp
    /// dir are kept from now on.
    pub(crate) fn read_vm_forwards(&mut self) -> Result<(), Error> {
        self.created.keep();
        let Some(spec) = self.vm.as_ref().map(|v| v.resolved.clone()) else {
            return Ok(());
        };
        let forwards = read_forwards(self, &spec)?;
        if let Some(vm) = self.vm.as_mut() {
            vm.forwards = forwards;
        }
        Ok(())
    }

    /// The VM description as given (`None` for a raw launch or an attached machine).
    pub fn vm_launch(&self) -> Option<&VmLaunch> {
        self.vm_ref().map(|v| &v.launch)
    }

    /// The VM description as launched: paths, formats, firmware, seed disk, display and
    /// accelerators filled in (`None` for a raw launch or an attached machine).
    pub fn resolved_spec(&self) -> Option<&VmSpec> {
        self.vm_ref().map(|v| &v.resolved)
    }

    /// Where the forward named `name` listens on the host (the port QEMU picked for host port
    /// 0); `None` when there is no such forward.
    pub fn forwarded_port(&self, name: &str) -> Option<SocketAddr> {
        self.forwards()
            .iter()
            .find(|f| f.name.as_deref() == Some(name))
            .map(|f| f.listen)
    }

    /// All port forwards of a VM, in NIC order (empty for a raw launch).
    pub fn forwards(&self) -> &[Forward] {
        self.vm_ref().map_or(&[], |v| &v.forwards)
    }

    /// The VNC server's unix socket, when the VM asked for `vnc` (or a unix VNC display).
    pub fn vnc_socket(&self) -> Option<&Path> {
        self.vm_ref().and_then(|v| v.vnc.as_deref())
    }

    /// The drives [`Machine::flash`] and [`Machine::dump`] know, by name (empty for a raw
    /// launch).
    pub fn drives(&self) -> &[Drive] {
        self.vm_ref().map_or(&[], |v| &v.drives)
    }

    /// Whether QEMU is still running (QEMUMachine's `is_running`; handles pending I/O first, so
    /// a just-exited QEMU is seen as exited). Always `false` for an attached machine.
    pub fn is_running(&mut self) -> bool {
        let _ = self.process_io();
        self.child.is_some() && self.exit_status_now().is_none()
    }

    pub(crate) fn ensure_stopped(&mut self, operation: &str) -> Result<(), Error> {
        if self.is_running() {
            Err(Error::VmRunning {
                operation: operation.to_owned(),
            })
        } else {
            Ok(())
        }
    }

    pub(super) fn drive_index(&self, name: &str) -> Result<usize, Error> {
        let drives = self.drives();
        drives.iter().position(|d| d.name == name).ok_or_else(|| {
            let names: Vec<&str> = drives.iter().map(|d| d.name.as_str()).collect();
            Error::InvalidArgument(format!(
                "the VM has no drive named {name:?}; its drives are: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        })
    }

    /// Writes the image `source` (any format, optionally compressed; see
    /// [`QemuImg::flash`](crate::image::QemuImg::flash)) into the drive `target` (`root`, a
    /// disk id, `bios`, `uefi_code`, `uefi_vars`), converted to the drive's format, and grows
    /// it back to the drive's `size`. Refused while QEMU runs ([`Error::VmRunning`]); takes
    /// effect at [`Machine::relaunch`]. Firmware the VM does not own (a system OVMF file) is never
    /// written: the flash goes to a copy in the temp dir, which the VM then uses.
    pub fn flash(
        &mut self,
        target: &str,
        source: &Path,
        progress: impl FnMut(f64),
    ) -> Result<FlashReport, Error> {
        self.ensure_stopped(&format!("flashing {target:?}"))?;
        let i = self.drive_index(target)?;
        let temp = self.temp_dir().map(Path::to_path_buf).unwrap_or_default();
        let img = self.img();
        let vm = self.vm_mut()?;
        let drive = vm.drives[i].clone();
        let dest = if drive.owned || drive.kind == DriveKind::Disk {
            drive.path.clone()
        } else {
            temp.join(format!("{}.fd", drive.name))
        };
        let report = img.flash(source, &dest, &drive.format, progress)?;
        if let Some(size) = drive.size {
            if report.virtual_size < size.bytes() {
                img.resize(&dest, size, false)?;
            }
        }
        if dest != drive.path {
            vm.drives[i].path = dest.clone();
            vm.drives[i].owned = true;
            match drive.kind {
                DriveKind::Bios => vm.resolved.bios = Some(dest),
                DriveKind::UefiCode => {
                    if let Some(u) = vm.resolved.uefi.as_mut() {
                        u.code = Some(dest);
                    }
                }
                DriveKind::UefiVars | DriveKind::Disk => {}
            }
        }
        Ok(report)
    }

    /// Reads the drive `target` into a new file `dest` of `format` (the drive's own when
    /// `None`), e.g. the UEFI variables after the guest changed them. Refused while QEMU runs.
    pub fn dump(
        &mut self,
        target: &str,
        dest: &Path,
        format: Option<&Format>,
        progress: impl FnMut(f64),
    ) -> Result<(), Error> {
        self.ensure_stopped(&format!("dumping {target:?}"))?;
        let drive = &self.drives()[self.drive_index(target)?];
        let format = format.unwrap_or(&drive.format);
        self.img()
            .dump(&drive.path, Some(&drive.format), dest, format, progress)
    }

    /// Saves the screen (QMP `screendump`) to `path` and returns the path of the image. With
    /// `format` `None`, PNG when this QEMU can write it, else PPM; when PPM is written instead
    /// of a requested `.png` name, the extension of the returned path says so. The machine needs
    /// a display device (a VM's `vga`, or `vnc`, which adds one). A new file is created owner-only
    /// (mode 0600) before QEMU writes it; an existing file is overwritten and keeps its mode.
    pub fn screendump(
        &mut self,
        path: &Path,
        format: Option<ScreenshotFormat>,
    ) -> Result<PathBuf, Error> {
        let path = std::path::absolute(path)
            .map_err(Error::io_with(format!("resolving {}", path.display())))?;
        match format {
            Some(f) => {
                self.screendump_to(&path, f)?;
                Ok(path)
            }
            None => match self.screendump_to(&path, ScreenshotFormat::Png) {
                Ok(()) => Ok(path),
                Err(Error::Qmp(e)) if png_unsupported(&e) => {
                    log::info!("this QEMU writes no PNG ({e}); writing PPM");
                    let ppm = if path.extension().is_some_and(|e| e == "png") {
                        path.with_extension("ppm")
                    } else {
                        path
                    };
                    self.screendump_to(&ppm, ScreenshotFormat::Ppm)?;
                    Ok(ppm)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// One `screendump` into `path` (absolute), created owner-only first when it does not
    /// exist (QEMU would create it with its own umask) and removed again if QEMU fails.
    pub(super) fn screendump_to(
        &mut self,
        path: &Path,
        format: ScreenshotFormat,
    ) -> Result<(), Error> {
        let filename = path.to_str().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "screendump path {} is not UTF-8, which QMP cannot carry",
                path.display()
            ))
        })?;
        let created = match create_private(path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                // QEMU may still be able to (a wrapper running it as another user): its
                // error, if any, is the one reported.
                log::debug!("creating {} before the screendump: {e}", path.display());
                false
            }
        };
        let args = match format {
            ScreenshotFormat::Png => json!({"filename": filename, "format": "png"}),
            ScreenshotFormat::Ppm => json!({"filename": filename}),
        };
        match self.execute("screendump", Some(args)) {
            Ok(_) => Ok(()),
            Err(e) => {
                if created {
                    let _ = std::fs::remove_file(path);
                }
                Err(e)
            }
        }
    }
}

/// Whether a screendump error says the PNG format (or the `format` argument) is unknown.
fn png_unsupported(e: &qmp_proto::QmpError) -> bool {
    let d = e.desc.to_ascii_lowercase();
    d.contains("png") || d.contains("format") || d.contains("parameter")
}
