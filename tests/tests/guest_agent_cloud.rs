//! The guest agent end to end through a real distribution: the cloud image (UEFI, systemd,
//! Debian's own qemu-guest-agent started by udev when its virtio-serial port appears), booted
//! under TCG from a VM description with `"guest_agent": true` and a cloud-init seed. Typed
//! calls, exec, 16 MiB copied both ways (checked with `sha256sum` in the guest), the agent
//! restarted by systemd mid-session, a reboot (RESET, the agent back with the guest) and a
//! power-down (SHUTDOWN, exit 0), through the Rust API.

use std::process::Command;
use std::time::Duration;

use qemu_machine_tests::cloud_fixture::{login_prompt, CloudFixture};
use qemu_machine_tests::support::{options, scratch, TempDir};
use qemu_process::guest::ShutdownMode;
use qemu_process::{Error, ExecCommand, Machine, VmLaunch};
use serde_json::json;

/// QEMU start to a running agent: 40-70 s on an idle two-core machine under TCG; a loaded CI
/// machine can be several times slower.
const BOOT: Duration = Duration::from_secs(600);
const CALL: Duration = Duration::from_secs(180);
const HOSTNAME: &str = "qm-qga-cloud";

fn launch(scratch: &TempDir) -> Machine {
    let fixture = CloudFixture::get().unwrap_or_else(|e| panic!("{e}"));
    let vm = VmLaunch::from_json(
        &json!({
            "memory": "1G",
            "uefi": {},
            "disks": [{"id": "root", "flash_from": fixture.qcow2, "format": "qcow2",
                       "bootindex": 1}],
            "cloud_init": {"hostname": HOSTNAME, "username": "dev", "password": "secret"},
            "guest_agent": true,
        })
        .to_string(),
    )
    .unwrap();
    let mut config = options(scratch.path());
    config.vm(vm).qmp_timeout(CALL);
    let mut vm = Machine::launch(&config).unwrap_or_else(|e| panic!("launching: {e}"));
    // The agent starts with systemd, before the login prompt; waiting for it is the ping.
    vm.guest()
        .unwrap()
        .with_timeout(BOOT)
        .ping()
        .unwrap_or_else(|e| panic!("the agent did not answer: {e}"));
    vm
}

fn host_sha256(scratch: &TempDir, data: &[u8]) -> String {
    let path = scratch.path().join("sum-input");
    std::fs::write(&path, data).unwrap();
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn the_guest_agent_of_a_debian_cloud_image() {
    let scratch = scratch("qga-cloud");
    let mut vm = launch(&scratch);
    let mut guest = vm.guest().unwrap().with_timeout(CALL);

    let info = guest.info().unwrap();
    assert!(info.version.starts_with("7.2"), "{info:?}");
    let os = guest.osinfo().unwrap();
    assert_eq!(os.id.as_deref(), Some("debian"));
    assert_eq!(os.version_id.as_deref(), Some("12"));
    let fixture = CloudFixture::get().unwrap();
    assert_eq!(
        os.kernel_release.as_deref(),
        Some(fixture.kernel_version.as_str())
    );
    let interfaces = guest.network_interfaces().unwrap();
    assert!(interfaces.iter().any(|i| i.name == "lo"), "{interfaces:?}");

    // The seed was applied by the time the agent answers the host name (cloud-init runs early).
    vm.console_wait_for(login_prompt(HOSTNAME).as_bytes(), BOOT)
        .unwrap();
    let mut guest = vm.guest().unwrap().with_timeout(CALL);
    assert_eq!(guest.host_name().unwrap(), HOSTNAME);
    let out = guest
        .exec(
            &ExecCommand::new("systemctl").args(["is-active", "qemu-guest-agent"]),
            CALL,
        )
        .unwrap();
    assert_eq!(out.stdout, b"active\n");
    let id = guest.exec(&ExecCommand::new("id").arg("-u"), CALL).unwrap();
    assert_eq!(id.stdout, b"0\n", "the agent runs as root");

    // 16 MiB both ways, byte-exact.
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    assert_eq!(
        guest.copy_in(&mut &data[..], "/root/blob").unwrap(),
        data.len() as u64
    );
    let sum = guest
        .exec(&ExecCommand::new("sha256sum").arg("/root/blob"), CALL)
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sum.stdout).starts_with(&host_sha256(&scratch, &data)),
        "{:?}",
        String::from_utf8_lossy(&sum.stdout)
    );
    let back = scratch.path().join("back");
    assert_eq!(
        guest.copy_out_file("/root/blob", &back).unwrap(),
        data.len() as u64
    );
    assert!(std::fs::read(&back).unwrap() == data);

    // systemd restarts the agent (the restart kills the agent that runs it): the port closes
    // and reopens, and the next call resynchronizes.
    let _ = guest.exec_spawn(&ExecCommand::new("systemctl").args(["restart", "qemu-guest-agent"]));
    vm.event_wait(
        "VSERPORT_CHANGE",
        Some(&json!({"data": {"id": "qm-qga-port", "open": false}})),
        CALL,
    )
    .unwrap();
    vm.guest().unwrap().with_timeout(CALL).ping().unwrap();

    // Reboot: RESET from the guest, the agent comes back with it. The new agent's port opening
    // is waited for before the next call: a request written while the guest resets did not
    // reach the new agent once in a full-suite run (the ping after the reboot timed out after
    // 600 s), and the library asks again only after a timeout. Older events are dropped
    // first, so that the port's opening after the earlier restart is not taken for this one.
    vm.take_events();
    vm.guest()
        .unwrap()
        .with_timeout(CALL)
        .shutdown(ShutdownMode::Reboot)
        .unwrap();
    vm.event_wait("RESET", Some(&json!({"data": {"guest": true}})), BOOT)
        .unwrap();
    if let Err(e) = vm.event_wait(
        "VSERPORT_CHANGE",
        Some(&json!({"data": {"id": "qm-qga-port", "open": true}})),
        BOOT,
    ) {
        let console = vm.console_read();
        let tail = &console[console.len().saturating_sub(4000)..];
        panic!(
            "the agent's port did not open after the reboot: {e}\nconsole: {}",
            String::from_utf8_lossy(tail)
        );
    }
    let mut guest = vm.guest().unwrap().with_timeout(BOOT);
    guest.ping().unwrap();
    let uptime = guest
        .exec(&ExecCommand::new("cat").arg("/proc/uptime"), CALL)
        .unwrap();
    let secs: f64 = String::from_utf8_lossy(&uptime.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs < 600.0, "the guest did not reboot: up {secs} s");

    // Power-down: SHUTDOWN from the guest, QEMU exits 0, the channel goes with it.
    guest
        .with_timeout(CALL)
        .shutdown(ShutdownMode::Powerdown)
        .unwrap();
    let event = vm
        .event_wait("SHUTDOWN", Some(&json!({"data": {"guest": true}})), BOOT)
        .unwrap();
    assert_eq!(event.data["reason"], "guest-shutdown");
    assert!(vm.wait(BOOT).unwrap().success());
    let err = vm.guest().unwrap().ping().unwrap_err();
    assert!(matches!(err, Error::Exited(_)), "{err:?}");
}
