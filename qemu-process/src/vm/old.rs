//! [`Vm`]: a whole VM from a [`VmSpec`], end to end — the disks resolved, created, flashed and
//! grown, the cloud-init seed written, UEFI variables copied, the argv built, QEMU launched,
//! and the port forwards and VNC socket reported.
//!
//! The spec is never changed: the `Vm` writes everything it resolves (paths in its temp dir,
//! probed formats, the seed disk, the VNC display, the accelerator) into a copy,
//! [`Vm::resolved_spec`], and builds the argv from that copy with
//! [`VmSpec::to_command_line`]. The [`Machine`] then adds its own QMP monitor and console
//! (the console is the guest's *first* serial port; the spec's `serial` entries follow it).

use std::ffi::OsString;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_cmdline::{
    Arch, CloudInitSpec, DiskInterface, DiskSpec, Display, Format, NetBackend, NicSpec, Proto,
    Size, UefiSpec, UefiVariant, Vga, VmSpec, Vnc,
};
use serde_json::json;

use crate::config::DEFAULT_QMP_TIMEOUT;
use crate::config::{
    args_choose_accel, resolve_accel, Accel, MachineConfig, DEFAULT_LAUNCH_TIMEOUT,
};
use crate::error::Error;
use crate::image::{FlashReport, QemuImg};
use crate::machine::Machine;
use crate::spawn::TempDir;

/// The size of a `root` disk that `default_partitions` creates when `disk_size` is not set.
pub const DEFAULT_ROOT_SIZE: Size = Size::gib(8);
/// The id of the cloud-init seed disk.
pub const SEED_DISK_ID: &str = "cidata";

/// How to launch a [`Vm`]: what is not part of the VM's description. Builder style, like
/// [`MachineConfig`]; [`VmOptions::default`] is ready to use.
///
/// ```
/// use qemu_process::{Accel, VmOptions};
/// use std::time::Duration;
/// let mut options = VmOptions::new();
/// options.accel(Accel::Tcg).launch_timeout(Duration::from_secs(20));
/// assert_eq!(options.get_accel(), Some(Accel::Tcg));
/// ```
#[derive(Clone, Debug)]
pub struct VmOptions {
    temp_base: Option<PathBuf>,
    launch_timeout: Duration,
    qmp_timeout: Duration,
    console: bool,
    console_log: Option<PathBuf>,
    accel: Option<Accel>,
    binary: Option<PathBuf>,
    wrapper: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    qemu_img: QemuImg,
}

impl Default for VmOptions {
    fn default() -> VmOptions {
        VmOptions {
            temp_base: None,
            launch_timeout: DEFAULT_LAUNCH_TIMEOUT,
            qmp_timeout: DEFAULT_QMP_TIMEOUT,
            console: true,
            console_log: None,
            accel: None,
            binary: None,
            wrapper: Vec::new(),
            env: Vec::new(),
            qemu_img: QemuImg::default(),
        }
    }
}

impl VmOptions {
    /// The defaults: temp dir under the system's, 30 s launch and QMP timeouts, a console on
    /// the first serial port, the spec's accelerators (else [`Accel::Auto`]).
    pub fn new() -> VmOptions {
        VmOptions::default()
    }
    /// The directory under which the VM's private temp dir is made (default `$TMPDIR` or
    /// `/tmp`). Keep it short: the VNC socket path in it must fit in 107 bytes.
    pub fn temp_base_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.temp_base = Some(dir.into());
        self
    }
    /// The launch deadline (default 30 s).
    pub fn launch_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.launch_timeout = timeout;
        self
    }
    /// The default deadline of each QMP command (default 30 s).
    pub fn qmp_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.qmp_timeout = timeout;
        self
    }
    /// Connects the guest's first serial port to the machine's console (default on).
    pub fn console(&mut self, on: bool) -> &mut Self {
        self.console = on;
        self
    }
    /// Also writes every console byte to this file (created owner-only, mode 0600, or an
    /// existing one truncated, keeping its mode). Implies `console(true)`.
    pub fn console_log(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.console_log = Some(path.into());
        self.console = true;
        self
    }
    /// Overrides the accelerator: [`Accel::Kvm`] or [`Accel::Tcg`] replace the spec's list,
    /// [`Accel::Auto`] picks KVM when usable (see [`resolve_accel`]), [`Accel::None`] keeps
    /// the spec's list. Without an override the spec's list is used, and an empty one is
    /// [`Accel::Auto`]. Auto adds nothing when the spec chooses an accelerator elsewhere: an
    /// `accel` machine property, or `extra_args` that do (see
    /// [`args_choose_accel`](crate::args_choose_accel)).
    pub fn accel(&mut self, accel: Accel) -> &mut Self {
        self.accel = Some(accel);
        self
    }
    /// Overrides the spec's QEMU binary.
    pub fn binary(&mut self, binary: impl Into<PathBuf>) -> &mut Self {
        self.binary = Some(binary.into());
        self
    }
    /// Runs QEMU under a wrapper (`["strace", "-f"]`); see [`MachineConfig::wrapper`].
    pub fn wrapper<I, S>(&mut self, argv: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.wrapper = argv.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }
    /// Sets an environment variable for QEMU.
    pub fn env(
        &mut self,
        key: impl AsRef<std::ffi::OsStr>,
        value: impl AsRef<std::ffi::OsStr>,
    ) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }
    /// Removes an environment variable for QEMU.
    pub fn env_remove(&mut self, key: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }
    /// The qemu-img and decompressors used for the disks.
    pub fn qemu_img(&mut self, img: QemuImg) -> &mut Self {
        self.qemu_img = img;
        self
    }
    /// The accelerator override, if any.
    pub fn get_accel(&self) -> Option<Accel> {
        self.accel
    }
    /// Whether the console is attached.
    pub fn get_console(&self) -> bool {
        self.console
    }
}

/// A port forward as QEMU listens for it on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The forward's name, if it has one.
    pub name: Option<String>,
    /// The NIC (netdev) it belongs to.
    pub nic: String,
    /// TCP or UDP.
    pub proto: Proto,
    /// The guest port.
    pub guest_port: u16,
    /// Where QEMU listens, as HMP `info usernet` reports it: `127.0.0.1:PORT` unless the
    /// spec's `host_addr` said otherwise, `0.0.0.0:PORT` when it asked for every address (then
    /// the port is reachable from the network); the port is the one the kernel picked for
    /// host port 0.
    pub listen: SocketAddr,
}

impl Forward {
    /// Where a client on this host connects: the listening address, or `127.0.0.1` with the
    /// same port when the forward listens on every address (`0.0.0.0`).
    pub fn connect_addr(&self) -> SocketAddr {
        if self.listen.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.listen.port())
        } else {
            self.listen
        }
    }
    /// Whether the forward listens on every host address (`0.0.0.0`), which makes it
    /// reachable from the network.
    pub fn listens_on_all_addresses(&self) -> bool {
        self.listen.ip().is_unspecified()
    }
}

/// The format of a [`Vm::screendump`].
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

/// What a named drive of a [`Vm`] is (see [`Vm::drives`]).
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

/// A drive that [`Vm::flash`] writes and [`Vm::dump`] reads, by name.
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

/// A VM launched from a [`VmSpec`]: the [`Machine`] (reachable through `Deref`) plus what the
/// spec's launcher fields produced.
///
/// Dropping it kills QEMU (if still running) and removes the temp dir with everything the
/// `Vm` made in it (seed, UEFI variables, disks without a path, VNC socket).
///
/// ```no_run
/// use qemu_cmdline::VmSpec;
/// use qemu_process::{Accel, Vm, VmOptions};
/// use std::time::Duration;
///
/// let spec = VmSpec::from_json(r#"{
///     "memory": "512M",
///     "disks": [{"name": "root", "path": "/var/lib/vm/root.qcow2", "size": "8G"}],
///     "cloud_init": {"hostname": "board-1", "username": "dev", "password": "secret"},
///     "forwards": [{"name": "ssh", "host_port": 0, "guest_port": 22}],
///     "vnc": true
/// }"#)?;
/// let mut vm = Vm::launch(&spec, VmOptions::new().accel(Accel::Tcg))?;
/// println!("ssh on {:?}, VNC at {:?}", vm.forwarded_port("ssh"), vm.vnc_socket());
/// vm.console_wait_for(b"login:", Duration::from_secs(120))?;
/// vm.powerdown(Duration::from_secs(60))?;
/// # Ok::<(), qemu_process::Error>(())
/// ```
pub struct Vm {
    /// Declared first: dropped (QEMU killed and reaped) before the temp dir goes.
    machine: Machine,
    spec: VmSpec,
    resolved: VmSpec,
    config: MachineConfig,
    forwards: Vec<Forward>,
    vnc: Option<PathBuf>,
    drives: Vec<Drive>,
    img: QemuImg,
    temp: TempDir,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("machine", &self.machine)
            .field("temp_dir", &self.temp.path())
            .field("forwards", &self.forwards)
            .field("vnc", &self.vnc)
            .finish_non_exhaustive()
    }
}

impl Deref for Vm {
    type Target = Machine;
    fn deref(&self) -> &Machine {
        &self.machine
    }
}

impl DerefMut for Vm {
    fn deref_mut(&mut self) -> &mut Machine {
        &mut self.machine
    }
}

impl Vm {
    /// Resolves the spec (disks, seed, firmware, display, accelerator), launches QEMU and waits
    /// for QMP, then reads back the port forwards. On any error, QEMU is stopped and everything
    /// made so far is removed (temp dir, disks created at paths the spec gave).
    pub fn launch(spec: &VmSpec, options: &VmOptions) -> Result<Vm, Error> {
        let base = options.temp_base.clone().unwrap_or_else(std::env::temp_dir);
        let temp = TempDir::new(&base).map_err(Error::io_with(format!(
            "creating a temporary directory under {}",
            base.display()
        )))?;
        let mut created = Created::default();
        let mut resolver = Resolver {
            temp: temp.path(),
            img: &options.qemu_img,
            created: &mut created,
        };
        let (resolved, drives, vnc) = resolver.resolve(spec, options)?;
        let argv = resolved.to_argv()?;
        let mut config = MachineConfig::new(PathBuf::from(&argv.program));
        config
            .args(&argv.args)
            .accel(Accel::None)
            .display_none(false)
            .temp_base_dir(temp.path())
            .launch_timeout(options.launch_timeout)
            .qmp_timeout(options.qmp_timeout)
            .console(options.console)
            .wrapper(&options.wrapper);
        if let Some(log) = &options.console_log {
            config.console_log(log);
        }
        for (k, v) in &options.env {
            match v {
                Some(v) => config.env(k, v),
                None => config.env_remove(k),
            };
        }
        let mut machine = Machine::launch(&config)?;
        let forwards = match read_forwards(&mut machine, &resolved) {
            Ok(f) => f,
            Err(e) => {
                let _ = machine.kill();
                return Err(e);
            }
        };
        created.keep();
        Ok(Vm {
            machine,
            spec: spec.clone(),
            resolved,
            config,
            forwards,
            vnc,
            drives,
            img: options.qemu_img.clone(),
            temp,
        })
    }

    /// Launches QEMU again with the same resolved spec after it exited (a guest power-off, a
    /// shutdown): disks, seed and UEFI variables carry over, flashes made meanwhile included.
    /// Refused while QEMU runs.
    pub fn relaunch(&mut self) -> Result<(), Error> {
        self.ensure_stopped("relaunching")?;
        let argv = self.resolved.to_argv()?;
        let mut config = self.config.clone();
        config.binary(PathBuf::from(&argv.program));
        config.args = argv.args;
        let mut machine = Machine::launch(&config)?;
        self.forwards = match read_forwards(&mut machine, &self.resolved) {
            Ok(f) => f,
            Err(e) => {
                let _ = machine.kill();
                return Err(e);
            }
        };
        self.machine = machine;
        Ok(())
    }

    /// The machine.
    pub fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }

    /// The spec as given.
    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    /// The spec as launched: paths, formats, firmware, seed disk, display and accelerators
    /// filled in, launcher fields cleared.
    pub fn resolved_spec(&self) -> &VmSpec {
        &self.resolved
    }

    /// QEMU's full argv (wrapper first, if any).
    pub fn argv(&self) -> &[OsString] {
        self.machine.argv()
    }

    /// The VM's private temp dir (mode 0700).
    pub fn temp_dir(&self) -> &Path {
        self.temp.path()
    }

    /// Where QEMU listens for the forward named `name` ([`Forward::listen`]): `127.0.0.1:PORT`
    /// by default, `0.0.0.0:PORT` when the spec asked for every address (see
    /// [`Forward::connect_addr`] for a loopback address to connect to).
    pub fn forwarded_port(&self, name: &str) -> Option<SocketAddr> {
        self.forwards
            .iter()
            .find(|f| f.name.as_deref() == Some(name))
            .map(|f| f.listen)
    }

    /// All port forwards, in spec order.
    pub fn forwards(&self) -> &[Forward] {
        &self.forwards
    }

    /// The VNC server's unix socket, when the spec asked for `vnc` (or a unix VNC display).
    pub fn vnc_socket(&self) -> Option<&Path> {
        self.vnc.as_deref()
    }

    /// The drives [`Vm::flash`] and [`Vm::dump`] know, by name.
    pub fn drives(&self) -> &[Drive] {
        &self.drives
    }

    /// Whether QEMU is still running (handles pending I/O first, so a just-exited QEMU is
    /// seen as exited).
    pub fn is_running(&mut self) -> bool {
        let _ = self.machine.process_io();
        self.machine.exit_status_now().is_none()
    }

    fn ensure_stopped(&mut self, operation: &str) -> Result<(), Error> {
        if self.is_running() {
            Err(Error::VmRunning {
                operation: operation.to_owned(),
            })
        } else {
            Ok(())
        }
    }

    fn drive_index(&self, name: &str) -> Result<usize, Error> {
        self.drives
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.drives.iter().map(|d| d.name.as_str()).collect();
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
    /// effect at [`Vm::relaunch`]. Firmware the VM does not own (a system OVMF file) is never
    /// written: the flash goes to a copy in the temp dir, which the VM then uses.
    pub fn flash(
        &mut self,
        target: &str,
        source: &Path,
        progress: impl FnMut(f64),
    ) -> Result<FlashReport, Error> {
        self.ensure_stopped(&format!("flashing {target:?}"))?;
        let i = self.drive_index(target)?;
        let drive = self.drives[i].clone();
        let dest = if drive.owned || drive.kind == DriveKind::Disk {
            drive.path.clone()
        } else {
            self.temp.path().join(format!("{}.fd", drive.name))
        };
        let report = self.img.flash(source, &dest, &drive.format, progress)?;
        if let Some(size) = drive.size {
            if report.virtual_size < size.bytes() {
                self.img.resize(&dest, size, false)?;
            }
        }
        if dest != drive.path {
            self.drives[i].path = dest.clone();
            self.drives[i].owned = true;
            match drive.kind {
                DriveKind::Bios => self.resolved.bios = Some(dest),
                DriveKind::UefiCode => {
                    if let Some(u) = self.resolved.uefi.as_mut() {
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
        let drive = &self.drives[self.drive_index(target)?];
        let format = format.unwrap_or(&drive.format);
        self.img
            .dump(&drive.path, Some(&drive.format), dest, format, progress)
    }

    /// Saves the screen (QMP `screendump`) to `path` and returns the path of the image. With
    /// `format` `None`, PNG when this QEMU can write it, else PPM; when PPM is written instead
    /// of a requested `.png` name, the extension of the returned path says so. The VM needs a
    /// display device (`vga`, or `vnc`, which adds one). A new file is created owner-only
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
    fn screendump_to(&mut self, path: &Path, format: ScreenshotFormat) -> Result<(), Error> {
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
        match self.machine.execute("screendump", Some(args)) {
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

/// Files the launch created outside the temp dir, removed unless the launch succeeds.
#[derive(Default)]
struct Created {
    paths: Vec<PathBuf>,
}

impl Created {
    fn push(&mut self, path: PathBuf) {
        self.paths.push(path);
    }
    fn keep(&mut self) {
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

struct Resolver<'a> {
    temp: &'a Path,
    img: &'a QemuImg,
    created: &'a mut Created,
}

impl Resolver<'_> {
    fn resolve(
        &mut self,
        spec: &VmSpec,
        options: &VmOptions,
    ) -> Result<(VmSpec, Vec<Drive>, Option<PathBuf>), Error> {
        let mut r = spec.clone();
        let mut drives = Vec::new();
        if let Some(b) = &options.binary {
            r.binary = Some(b.clone());
        }
        self.accel(&mut r, options);

        if r.default_partitions {
            if !r
                .disks
                .iter()
                .enumerate()
                .any(|(i, d)| disk_id(d, i) == "root")
            {
                let mut root = DiskSpec::new(PathBuf::new());
                root.id = Some("root".into());
                root.path = None;
                root.size = Some(r.disk_size.unwrap_or(DEFAULT_ROOT_SIZE));
                root.bootindex = Some(1);
                r.disks.insert(0, root);
            }
            if r.bios.is_none() && r.uefi.is_none() {
                r.uefi = Some(UefiSpec::default());
            }
            r.default_partitions = false;
        }

        // Disks: ids fixed before positions change (the seed disk goes last).
        for i in 0..r.disks.len() {
            let id = disk_id(&r.disks[i], i);
            r.disks[i].id = Some(id.clone());
            let size = r.disks[i]
                .size
                .or(if id == "root" { r.disk_size } else { None });
            let (path, format, owned) = self.disk(&r.disks[i], &id, size)?;
            let d = &mut r.disks[i];
            d.path = Some(path.clone());
            d.format = Some(format.clone());
            d.flash_from = None;
            d.size = size;
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

        if let Some(ci) = r.cloud_init.take() {
            let path = self.seed(&ci)?;
            let mut seed = DiskSpec::new(path);
            seed.id = Some(SEED_DISK_ID.into());
            seed.format = Some(Format::Raw);
            seed.read_only = true;
            seed.interface = DiskInterface::Virtio;
            r.disks.push(seed);
        }

        // Top-level forwards onto a user NIC, so that each forward's netdev is known.
        if !r.forwards.is_empty() {
            if r.nics.is_empty() {
                r.nics.push(NicSpec::default());
            }
            if let Some(nic) = r
                .nics
                .iter_mut()
                .find(|n| matches!(n.backend, None | Some(NetBackend::User(_))))
            {
                nic.forwards.append(&mut r.forwards);
            }
        }
        for (i, n) in r.nics.iter_mut().enumerate() {
            n.id.get_or_insert_with(|| format!("net{i}"));
        }

        let mut vnc = match &r.display {
            Display::Vnc(Vnc::Unix(p)) => Some(p.clone()),
            _ => None,
        };
        if r.vnc && !matches!(r.display, Display::Vnc(_)) {
            let sock = self.temp.join("vnc.sock");
            r.display = Display::Vnc(Vnc::Unix(sock.clone()));
            r.vga.get_or_insert(Vga::Std);
            r.vnc = false;
            vnc = Some(sock);
        }
        Ok((r, drives, vnc))
    }

    fn accel(&self, r: &mut VmSpec, options: &VmOptions) {
        let binary = r
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(r.arch.profile().binary));
        let choice = match options.accel {
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
        if let Some(src) = &d.flash_from {
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
            log::info!(
                "flashing {} into {what} ({})",
                src.display(),
                path.display()
            );
            let report = self.img.flash(src, &path, &format, |p| {
                log::debug!("flashing {what}: {:.1}%", p * 100.0)
            })?;
            if !exists && !owned {
                self.created.push(path.clone());
            }
            if let Some(size) = size {
                if report.virtual_size < size.bytes() {
                    self.img.resize(&path, size, false)?;
                }
            }
            return Ok((path, format, owned));
        }
        if !exists {
            let Some(size) = size else {
                return Err(Error::NotFound { what, path });
            };
            let format = d.format.clone().unwrap_or(Format::Qcow2);
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
            if info.virtual_size < size.bytes() {
                log::info!("growing {what} to {size}");
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
        copy_private(&template, &vars)?;
        u.code = Some(code);
        u.vars = Some(vars);
        Ok(u)
    }

    fn seed(&mut self, ci: &CloudInitSpec) -> Result<PathBuf, Error> {
        let image = crate::cloudinit::seed_image(ci)?;
        let path = self.temp.join("cidata.img");
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
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
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

/// The forwards of the resolved spec with their listening addresses and ports, as QEMU reports
/// them in HMP `info usernet` (so that the address is what QEMU really listens on, and a host
/// port 0 becomes the port the kernel picked).
fn read_forwards(machine: &mut Machine, spec: &VmSpec) -> Result<Vec<Forward>, Error> {
    let mut out = Vec::new();
    for nic in &spec.nics {
        if !matches!(nic.backend, None | Some(NetBackend::User(_))) {
            continue;
        }
        let id = nic.id.clone().unwrap_or_default();
        let mut all = nic.forwards.clone();
        if let Some(NetBackend::User(u)) = &nic.backend {
            all.extend(u.forwards.iter().cloned());
        }
        for f in all {
            out.push((
                f.host_port,
                Forward {
                    name: f.name.clone(),
                    nic: id.clone(),
                    proto: f.proto,
                    guest_port: f.guest_port,
                    listen: SocketAddr::new(IpAddr::V4(f.listen_addr()), f.host_port),
                },
            ));
        }
    }
    if out.is_empty() {
        return Ok(Vec::new());
    }
    let text = machine.execute(
        "human-monitor-command",
        Some(json!({"command-line": "info usernet"})),
    )?;
    let text = text.as_str().unwrap_or_default();
    let rows = parse_usernet(text);
    let mut used = vec![false; rows.len()];
    // Ports given explicitly are taken first, so that a picked one never matches them.
    for pass in [false, true] {
        for (port, f) in &mut out {
            if (*port == 0) != pass {
                continue;
            }
            let found = rows.iter().enumerate().position(|(k, row)| {
                !used[k]
                    && row.nic == f.nic
                    && row.proto == f.proto
                    && row.guest_port == f.guest_port
                    && (*port == 0 || row.host_port == *port)
                    && row.listen_addr() == f.listen.ip()
            });
            let Some(k) = found else {
                return Err(Error::InvalidArgument(format!(
                    "QEMU does not report forward {} (guest port {}) listening on {}: \
                     `info usernet` said: {}",
                    f.name.as_deref().unwrap_or("(unnamed)"),
                    f.guest_port,
                    f.listen,
                    text.trim_end()
                )));
            };
            used[k] = true;
            f.listen = SocketAddr::new(rows[k].listen_addr(), rows[k].host_port);
        }
    }
    Ok(out.into_iter().map(|(_, f)| f).collect())
}

/// A `HOST_FORWARD` row of HMP `info usernet`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UsernetRow {
    nic: String,
    proto: Proto,
    /// The listening address; `None` for `*` (every address).
    host_addr: Option<Ipv4Addr>,
    host_port: u16,
    guest_port: u16,
}

impl UsernetRow {
    fn listen_addr(&self) -> IpAddr {
        IpAddr::V4(self.host_addr.unwrap_or(Ipv4Addr::UNSPECIFIED))
    }
}

/// Parses `info usernet`:
///
/// ```text
/// Hub -1 (net0):
///   Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
///   TCP[HOST_FORWARD]   8       127.0.0.1 39463       10.0.2.15    80     0     0
/// ```
fn parse_usernet(text: &str) -> Vec<UsernetRow> {
    let mut rows = Vec::new();
    let mut nic = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Hub") || line.starts_with("VLAN") {
            if let (Some(a), Some(b)) = (line.find('('), line.rfind(')')) {
                if a < b {
                    nic = line[a + 1..b].to_owned();
                }
            }
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || !cols[0].contains("HOST_FORWARD") {
            continue;
        }
        let proto = if cols[0].starts_with("UDP") {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        let (Ok(host_port), Ok(guest_port)) = (cols[3].parse(), cols[5].parse()) else {
            continue;
        };
        rows.push(UsernetRow {
            nic: nic.clone(),
            proto,
            host_addr: cols[2].parse().ok(),
            host_port,
            guest_port,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernet_rows_are_parsed_per_netdev() {
        let text = "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[HOST_FORWARD]   8       127.0.0.1 39463       10.0.2.15    80     0     0\r\n  UDP[HOST_FORWARD]   3               * 44530       10.0.2.15    53     0     0\r\n  TCP[ESTABLISHED]   9       10.0.2.15 1234       1.2.3.4    80     0     0\r\nHub -1 (wan):\r\n  TCP[HOST_FORWARD]  10               * 2222       10.0.2.15    22     0     0\r\n";
        let rows = parse_usernet(text);
        assert_eq!(
            rows,
            vec![
                UsernetRow {
                    nic: "n0".into(),
                    proto: Proto::Tcp,
                    host_addr: Some(Ipv4Addr::LOCALHOST),
                    host_port: 39463,
                    guest_port: 80
                },
                UsernetRow {
                    nic: "n0".into(),
                    proto: Proto::Udp,
                    host_addr: None,
                    host_port: 44530,
                    guest_port: 53
                },
                UsernetRow {
                    nic: "wan".into(),
                    proto: Proto::Tcp,
                    host_addr: None,
                    host_port: 2222,
                    guest_port: 22
                },
            ]
        );
        assert!(parse_usernet("").is_empty());
    }

    #[test]
    fn options_builder() {
        let mut o = VmOptions::new();
        assert!(o.get_console());
        assert_eq!(o.get_accel(), None);
        o.accel(Accel::Tcg)
            .console_log("/tmp/x")
            .env("A", "1")
            .env_remove("B")
            .wrapper(["strace"])
            .binary("/usr/bin/qemu-system-x86_64");
        assert_eq!(o.get_accel(), Some(Accel::Tcg));
        assert_eq!(o.env.len(), 2);
        assert_eq!(o.wrapper.len(), 1);
    }

    #[test]
    fn png_errors_are_recognised() {
        let e = |desc: &str| qmp_proto::QmpError {
            class: qmp_proto::ErrorClass::GenericError,
            desc: desc.into(),
        };
        assert!(png_unsupported(&e("Parameter 'format' is unexpected")));
        assert!(png_unsupported(&e(
            "Enable PNG support with libpng for screendump"
        )));
        assert!(!png_unsupported(&e("no surface")));
    }
}
