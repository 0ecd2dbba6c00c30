//! Launching a VM from its description through `qemu_process::Machine`, showing the work on
//! its disks as it happens, and describing it.

use std::io::Write;
use std::path::Path;

use qemu_cmdline::{Arch, Proto};
use qemu_process::{Machine, MachineConfig, Preparing};

use crate::exit::{self, Failure};
use crate::progress::Progress;
use crate::term;

/// What a launch reports about the work on its disks.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A line to show (a disk created or grown).
    Line(String),
    /// A flash's progress: its label and the fraction done.
    Flash(String, f64),
}

/// Launches the VM, showing on stderr (unless `quiet`) the disks it creates and grows, and a
/// flash's progress (a bar on a terminal, a line per 10% otherwise). Launch failures become
/// exit code 3 with QEMU's own message; an invalid spec or a file it names that does not
/// exist (a flash source, a disk, a kernel) is 2.
pub fn launch(config: &MachineConfig, quiet: bool) -> Result<Machine, Failure> {
    let mut shown = Shown::new(quiet);
    let result = launch_reporting(config, &mut |r| shown.show(r));
    drop(shown);
    result
}

/// Reports shown on stderr.
pub struct Shown {
    quiet: bool,
    flashing: Option<(String, Progress<Box<dyn Write>>)>,
}

impl Shown {
    /// Nothing shown yet; nothing at all when `quiet`.
    pub fn new(quiet: bool) -> Shown {
        Shown {
            quiet,
            flashing: None,
        }
    }

    /// Shows one report.
    pub fn show(&mut self, report: Report) {
        match report {
            Report::Line(line) => {
                if let Some((_, p)) = self.flashing.as_mut() {
                    p.finish();
                }
                if !self.quiet {
                    term::message(&format!("qemu-machine: {line}"));
                }
            }
            Report::Flash(label, fraction) => {
                if self.flashing.as_ref().is_none_or(|(l, _)| *l != label) {
                    let label = format!("qemu-machine: {label}");
                    self.flashing = Some((label.clone(), stderr_progress(&label, self.quiet)));
                }
                if let Some((_, p)) = self.flashing.as_mut() {
                    p.update(fraction);
                    if fraction >= 1.0 {
                        p.finish();
                    }
                }
            }
        }
    }
}

/// [`launch`], with what it does to disks given to `report` as it happens.
pub fn launch_reporting(
    config: &MachineConfig,
    report: &mut dyn FnMut(Report),
) -> Result<Machine, Failure> {
    check_inputs(config)?;
    let result = Machine::launch_with_progress(config, &mut |step| match *step {
        Preparing::Create {
            disk,
            path,
            format,
            size,
        } => report(Report::Line(format!(
            "creating disk {disk}: {} ({format}, {size})",
            path.display()
        ))),
        Preparing::Grow { disk, size, .. } => {
            report(Report::Line(format!("growing disk {disk} to {size}")))
        }
        Preparing::Flash {
            disk,
            source,
            fraction,
            ..
        } => report(Report::Flash(
            format!("flashing {} into disk {disk}", source.display()),
            fraction,
        )),
        _ => {}
    });
    result.map_err(|e| failure(config, e))
}

/// Progress on stderr: a bar when it is a terminal, lines otherwise, nothing when `quiet`.
fn stderr_progress(label: &str, quiet: bool) -> Progress<Box<dyn Write>> {
    if quiet {
        return Progress::new(Box::new(std::io::sink()), label, None);
    }
    let width = term::is_tty(2).then(|| term::width(2).unwrap_or(80));
    Progress::new(Box::new(std::io::stderr()), label, width)
}

/// Files the description names that QEMU would otherwise be the first to miss.
fn check_inputs(config: &MachineConfig) -> Result<(), Failure> {
    let Some(vm) = config.get_vm() else {
        return Ok(());
    };
    for (what, path) in [("kernel", &vm.spec.kernel), ("initrd", &vm.spec.initrd)] {
        if let Some(path) = path {
            if let Err(e) = std::fs::metadata(path) {
                return Err(Failure::usage(format!("{what} {}: {e}", path.display())));
            }
        }
    }
    Ok(())
}

/// The Debian package with QEMU for `arch`.
fn qemu_package(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-system-x86",
        Arch::Aarch64 => "qemu-system-arm",
        Arch::Riscv64 => "qemu-system-misc",
    }
}

/// A launch error as the command reports it: QEMU not installed names the package for the
/// VM's architecture; a QEMU path that does not exist says so, without an install hint.
fn failure(config: &MachineConfig, e: qemu_process::Error) -> Failure {
    match e {
        qemu_process::Error::BinaryNotFound(path) => {
            if path.components().count() > 1 {
                let why = match std::fs::metadata(&path) {
                    Err(e) => e.to_string(),
                    Ok(m) if m.is_dir() => "a directory".to_owned(),
                    Ok(_) => "not executable".to_owned(),
                };
                return Failure::new(exit::LAUNCH, format!("QEMU {}: {why}", path.display()));
            }
            let arch = config
                .get_vm()
                .map_or_else(|| arch_of(&path), |vm| vm.spec.arch);
            Failure::new(
                exit::LAUNCH,
                format!(
                    "{} is not installed (not found in PATH); on Debian or Ubuntu: \
                     apt-get install -y {}",
                    path.display(),
                    qemu_package(arch)
                ),
            )
        }
        e => Failure::from_launch(e),
    }
}

/// The architecture a QEMU program name is for (x86_64 when it does not say).
fn arch_of(program: &Path) -> Arch {
    let name = program.to_string_lossy();
    if name.ends_with("aarch64") || name.ends_with("-arm") {
        Arch::Aarch64
    } else if name.ends_with("riscv64") {
        Arch::Riscv64
    } else {
        Arch::X86_64
    }
}

/// Lines describing a launched VM: QEMU's version and pid, forwarded ports (the address QEMU
/// listens on), the VNC socket.
pub fn describe(vm: &Machine) -> Vec<String> {
    let mut lines = Vec::new();
    let version = vm
        .greeting()
        .map(|g| {
            format!(
                "QEMU {}.{}.{}",
                g.version.major, g.version.minor, g.version.micro
            )
        })
        .unwrap_or_else(|| "QEMU".to_owned());
    lines.push(format!(
        "{version} started (pid {})",
        vm.pid().map_or_else(|| "?".to_owned(), |p| p.to_string())
    ));
    for f in vm.forwards() {
        let name = f
            .name
            .as_deref()
            .map_or_else(String::new, |n| format!(" {n}"));
        // What listens where: the listening address itself, and a plain warning when that is
        // every address (the guest port is then reachable from the network).
        let scope = if f.listens_on_all_addresses() {
            " (every host address: reachable from the network)"
        } else {
            ""
        };
        lines.push(format!(
            "port{name}: {}{scope} -> guest {}/{}",
            f.listen,
            proto_name(f.proto),
            f.guest_port
        ));
    }
    if let Some(vnc) = vm.vnc_socket() {
        lines.push(format!("VNC: {}", vnc.display()));
    }
    lines
}

/// The name of a forward's protocol.
fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}
