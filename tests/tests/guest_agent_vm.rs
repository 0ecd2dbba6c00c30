//! The guest agent end to end through a real guest: the busybox fixture booted under TCG with
//! the host's qemu-ga packed into its initramfs (`qemu_machine_tests::qga`), on the virtio-serial
//! port a VM description with `"guest_agent": true` gets. Typed calls, exec, file copies both
//! ways, an agent restarted in the guest (the port closing and reopening), no agent at all,
//! and guest-shutdown's power-down, reboot and halt with the events that follow.

use std::process::Command;
use std::time::Duration;

use qemu_machine_tests::fixture::READY_LINE;
use qemu_machine_tests::qga::{agent_cmdline, guest_initrd_with_agent, AGENT_STARTED_LINE};
use qemu_machine_tests::support::{fixture, options, scratch, TempDir, BOOT};
use qemu_process::guest::ShutdownMode;
use qemu_process::{Error, ExecCommand, Machine, MachineConfig, RunState, VmLaunch};
use serde_json::json;

/// Each call's deadline once the agent is up (TCG on a loaded machine is slow).
const CALL: Duration = Duration::from_secs(60);

/// Launches the fixture with the agent overlay: `guest_agent` set, the agent started by the
/// guest (unless `start_agent` is false), `no_reboot` as given.
fn launch(scratch: &TempDir, start_agent: bool, no_reboot: bool) -> Machine {
    launch_with(scratch, start_agent, no_reboot, true)
}

/// [`launch`], with the library's QMP connection or without it.
fn launch_with(scratch: &TempDir, start_agent: bool, no_reboot: bool, qmp: bool) -> Machine {
    let f = fixture();
    let initrd = guest_initrd_with_agent(&f, scratch.path()).unwrap();
    let append = if start_agent {
        agent_cmdline(&f, &[], "")
    } else {
        f.kernel_cmdline(&["virtio_console"], "")
    };
    let vm = VmLaunch::from_json(
        &json!({
            "memory": "512M",
            "kernel": f.kernel,
            "initrd": initrd,
            "append": append,
            "no_reboot": no_reboot,
            "guest_agent": true,
        })
        .to_string(),
    )
    .unwrap();
    let mut config: MachineConfig = options(scratch.path());
    config.vm(vm).qmp(qmp);
    let mut vm = Machine::launch(&config).unwrap();
    let ready = if start_agent {
        AGENT_STARTED_LINE
    } else {
        READY_LINE
    };
    if let Err(e) = vm.console_wait_for(ready.as_bytes(), BOOT) {
        panic!(
            "no {ready}: {e}\nconsole: {}\nlog: {}",
            String::from_utf8_lossy(&vm.console_read()),
            vm.log().unwrap_or_default()
        );
    }
    vm
}

/// Waits for the agent to answer (it starts right after the line the launch waited for).
fn wait_agent(vm: &mut Machine) {
    vm.guest()
        .unwrap()
        .with_timeout(BOOT)
        .ping()
        .unwrap_or_else(|e| panic!("the agent did not answer: {e}"));
}

#[test]
fn typed_calls_exec_and_copies_through_a_real_guest() {
    let scratch = scratch("qga-vm-calls");
    let mut vm = launch(&scratch, true, true);
    assert!(vm.has_guest_agent());
    assert!(vm
        .argv()
        .iter()
        .any(|a| a.to_string_lossy().contains("name=org.qemu.guest_agent.0")));
    wait_agent(&mut vm);
    assert_eq!(vm.guest_agent_port_open(), Some(true));
    let mut guest = vm.guest().unwrap().with_timeout(CALL);

    let info = guest.info().unwrap();
    assert!(info.version.starts_with("7."), "{info:?}");
    assert!(info.is_enabled("guest-exec"));
    let os = guest.osinfo().unwrap();
    assert_eq!(
        os.kernel_release.as_deref(),
        Some(fixture().kernel_version.as_str())
    );
    assert_eq!(os.machine.as_deref(), Some("x86_64"));
    assert_eq!(guest.host_name().unwrap(), "qm-guest");
    let interfaces = guest.network_interfaces().unwrap();
    let lo = interfaces.iter().find(|i| i.name == "lo").unwrap();
    assert!(lo
        .ip_addresses
        .iter()
        .any(|a| a.ip_address == "127.0.0.1" && a.prefix == 8));

    let out = guest
        .exec(
            &ExecCommand::new("/bin/sh")
                .args(["-c", "cat; echo err >&2; exit 3"])
                .input(b"from the host\n".to_vec()),
            CALL,
        )
        .unwrap();
    assert_eq!(out.stdout, b"from the host\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, Some(3));
    assert!(!out.success());

    // 3 MiB + 5 bytes both ways, byte-exact (the 64 MiB copy is the host-agent test's).
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 5u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let n = guest.copy_in(&mut &data[..], "/tmp/blob").unwrap();
    assert_eq!(n, data.len() as u64);
    let sum = guest
        .exec(&ExecCommand::new("sha256sum").arg("/tmp/blob"), CALL)
        .unwrap();
    let host_sum = host_sha256(&scratch, &data);
    assert!(
        String::from_utf8_lossy(&sum.stdout).starts_with(&host_sum),
        "{:?} vs {host_sum}",
        String::from_utf8_lossy(&sum.stdout)
    );
    let back = scratch.path().join("back");
    assert_eq!(guest.copy_out_file("/tmp/blob", &back).unwrap(), n);
    assert!(std::fs::read(&back).unwrap() == data);
    vm.shutdown(Duration::from_secs(20)).unwrap();
}

/// Without the library's QMP connection the guest agent works the same, and an answer larger
/// than one read comes through whole.
#[test]
fn without_qmp_the_guest_agent_answers() {
    let scratch = scratch("qga-vm-no-qmp");
    let mut vm = launch_with(&scratch, true, true, false);
    assert!(!vm.is_connected());
    wait_agent(&mut vm);
    let mut guest = vm.guest().unwrap().with_timeout(CALL);
    assert_eq!(guest.host_name().unwrap(), "qm-guest");
    let out = guest
        .exec(
            &ExecCommand::new("/bin/sh").args(["-c", "head -c 100000 /dev/zero | tr '\\0' x"]),
            CALL,
        )
        .unwrap();
    assert_eq!(out.stdout, vec![b'x'; 100_000]);
    vm.kill().unwrap();
}

/// The agent killed in the guest mid-call: the call fails at once with `GuestAgentGone` (the
/// port's `VSERPORT_CHANGE` closed event), the next call synchronizes with the restarted agent.
#[test]
fn an_agent_restarted_in_the_guest_is_resynchronized() {
    let scratch = scratch("qga-vm-restart");
    let mut vm = launch(&scratch, true, true);
    wait_agent(&mut vm);
    // The port's opening at boot is not what this test waits for below.
    vm.event_wait(
        "VSERPORT_CHANGE",
        Some(&json!({"data": {"id": "qm-qga-port", "open": true}})),
        BOOT,
    )
    .unwrap();
    let mut guest = vm.guest().unwrap().with_timeout(CALL);
    guest
        .exec_spawn(&ExecCommand::new("/bin/sh").args(["-c", "sleep 1; killall -9 qemu-ga"]))
        .unwrap();
    // A long poll of a process that outlives the agent: the agent dies under it.
    let pid = guest
        .exec_spawn(&ExecCommand::new("sleep").arg("30"))
        .unwrap();
    let err = guest.exec_wait(pid, CALL).unwrap_err();
    assert!(matches!(err, Error::GuestAgentGone { .. }), "{err:?}");
    // The loop in the guest starts a new agent; the next call resynchronizes with it.
    guest.with_timeout(BOOT).ping().unwrap();
    // QEMU reported the port closing and reopening (it rate-limits VSERPORT_CHANGE to one a
    // second per port, so the second may come a moment later).
    for open in [false, true] {
        let event = vm
            .event_wait(
                "VSERPORT_CHANGE",
                Some(&json!({"data": {"id": "qm-qga-port", "open": open}})),
                BOOT,
            )
            .unwrap();
        assert_eq!(event.data["open"], open);
    }
    assert_eq!(vm.guest_agent_port_open(), Some(true));
    let out = vm
        .guest()
        .unwrap()
        .exec(&ExecCommand::new("echo").arg("again"), CALL)
        .unwrap();
    assert_eq!(out.stdout, b"again\n");
    vm.shutdown(Duration::from_secs(20)).unwrap();
}

/// A guest whose agent never starts: a typed timeout naming the synchronization, not a hang;
/// the machine stays usable, and a machine without a channel says so.
#[test]
fn no_agent_in_the_guest_is_a_typed_timeout() {
    let scratch = scratch("qga-vm-none");
    let mut vm = launch(&scratch, false, true);
    let err = vm
        .guest()
        .unwrap()
        .with_timeout(Duration::from_secs(2))
        .ping()
        .unwrap_err();
    match &err {
        Error::Timeout { what, .. } => assert!(what.contains("guest-sync-delimited"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(vm.status().unwrap(), RunState::Running);
    assert_eq!(vm.guest_agent_port_open(), None);
    vm.shutdown(Duration::from_secs(20)).unwrap();

    let mut plain = Machine::launch(&{
        let mut c = options(scratch.path());
        c.args(["-machine", "none"]);
        c
    })
    .unwrap();
    assert!(!plain.has_guest_agent());
    let err = plain.guest().unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("guest_agent"), "{err}");
    plain.shutdown(Duration::from_secs(20)).unwrap();
}

/// guest-shutdown answers nothing on success: power-down is `Ok`, then QEMU reports
/// `SHUTDOWN` from the guest and exits 0.
#[test]
fn guest_shutdown_powers_down() {
    let scratch = scratch("qga-vm-powerdown");
    let mut vm = launch(&scratch, true, true);
    wait_agent(&mut vm);
    vm.guest()
        .unwrap()
        .with_timeout(CALL)
        .shutdown(ShutdownMode::Powerdown)
        .unwrap();
    let event = vm
        .event_wait("SHUTDOWN", Some(&json!({"data": {"guest": true}})), BOOT)
        .unwrap();
    assert_eq!(event.data["reason"], "guest-shutdown");
    assert!(vm.wait(BOOT).unwrap().success());
    // The channel went with QEMU: a call says QEMU exited.
    let err = vm.guest().unwrap().ping().unwrap_err();
    assert!(matches!(err, Error::Exited(_)), "{err:?}");
}

/// Reboot: `RESET` from the guest, the agent comes back with it, and the next call
/// resynchronizes. Halt: `Ok`, QEMU keeps running and the agent no longer answers.
#[test]
fn guest_shutdown_reboots_and_halts() {
    let scratch = scratch("qga-vm-reboot");
    let mut vm = launch(&scratch, true, false);
    wait_agent(&mut vm);
    vm.guest()
        .unwrap()
        .with_timeout(CALL)
        .shutdown(ShutdownMode::Reboot)
        .unwrap();
    let reset = vm
        .event_wait("RESET", Some(&json!({"data": {"guest": true}})), BOOT)
        .unwrap();
    assert_eq!(reset.data["reason"], "guest-reset");
    vm.console_wait_for(AGENT_STARTED_LINE.as_bytes(), BOOT)
        .unwrap();
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
    assert!(secs < 600.0, "{secs}");

    guest.shutdown(ShutdownMode::Halt).unwrap();
    // The guest halts 1 s later (its shutdown returns at once, like systemd's): the kernel
    // says so, QEMU keeps running and reports nothing, and the agent no longer answers.
    vm.console_wait_for(b"System halted", BOOT).unwrap();
    assert_eq!(vm.status().unwrap(), RunState::Running);
    let err = vm
        .guest()
        .unwrap()
        .with_timeout(Duration::from_secs(2))
        .ping()
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(vm.events().iter().all(|e| e.name != "SHUTDOWN"));
    vm.shutdown(Duration::from_secs(20)).unwrap();
}

/// The SHA-256 of `data` as the host's `sha256sum` prints it.
fn host_sha256(scratch: &TempDir, data: &[u8]) -> String {
    let path = scratch.path().join("sum-input");
    std::fs::write(&path, data).unwrap();
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}
