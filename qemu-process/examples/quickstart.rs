//! Launches a VM from a JSON description, talks QMP to it, and shuts it down.
//!
//! `cargo run -p qemu-process --example quickstart`

use std::time::Duration;

use qemu_process::{Machine, MachineConfig, VmLaunch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vm = VmLaunch::from_json(
        r#"{"memory": "256M",
            "forwards": [{"name": "web", "host_port": 0, "guest_port": 80}]}"#,
    )?;
    let mut vm = Machine::launch(&MachineConfig::for_vm(vm))?;
    println!("QEMU pid {:?}, status {:?}", vm.pid(), vm.status()?);
    println!(
        "guest port 80 is reachable at {:?}",
        vm.forwarded_port("web")
    );
    let version = vm.execute("query-version", None)?;
    println!("QEMU {}", version["qemu"]);
    vm.pause()?;
    let stop = vm.event_wait("STOP", None, Duration::from_secs(5))?;
    println!(
        "paused at {}.{:06}",
        stop.timestamp.seconds, stop.timestamp.microseconds
    );
    let status = vm.shutdown(Duration::from_secs(10))?;
    println!("QEMU exited: {status}");
    Ok(())
}
