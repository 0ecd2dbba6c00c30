//! Launching a VM from a spec through `qemu_process::Vm`, and describing it.

use std::path::PathBuf;
use std::time::Duration;

use qemu_cmdline::{Proto, VmSpec};
use qemu_process::{Vm, VmOptions};

use crate::exit::Failure;

/// How to launch.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Attach a console to the first serial port.
    pub console: bool,
    /// Also write the console to this file.
    pub console_log: Option<PathBuf>,
    /// The launch deadline.
    pub launch_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            console: false,
            console_log: None,
            launch_timeout: Duration::from_secs(30),
        }
    }
}

/// Launches the VM; launch failures become exit code 3 (2 for an invalid spec) with QEMU's
/// own message.
pub fn launch(spec: &VmSpec, settings: &Settings) -> Result<Vm, Failure> {
    let mut options = VmOptions::new();
    options
        .console(settings.console)
        .launch_timeout(settings.launch_timeout);
    if let Some(log) = &settings.console_log {
        options.console_log(log);
    }
    Vm::launch(spec, &options).map_err(Failure::from_launch)
}

/// Lines describing a launched VM: QEMU's version and pid, forwarded ports (the address QEMU
/// listens on), the VNC socket.
pub fn describe(vm: &Vm) -> Vec<String> {
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
