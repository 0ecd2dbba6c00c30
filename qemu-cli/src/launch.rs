//! Launching a VM from its description through `qemu_process::Machine`, and describing it.

use qemu_cmdline::Proto;
use qemu_process::{Machine, MachineConfig};

use crate::exit::Failure;

/// Launches the VM; launch failures become exit code 3 (2 for an invalid spec) with QEMU's
/// own message.
pub fn launch(config: &MachineConfig) -> Result<Machine, Failure> {
    Machine::launch(config).map_err(Failure::from_launch)
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
