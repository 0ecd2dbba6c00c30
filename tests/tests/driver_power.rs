//! The power side of Jumpstarter's QEMU driver against a real QEMU and the guest fixture: the
//! power state now and as it changes (`read()`), a relaunch with more memory and bigger disks
//! that keeps what the disks hold, and the CPU an x86_64 guest gets under TCG.

use std::time::Duration;

use qemu_cmdline::{DiskSpec, Size};
use qemu_machine_tests::support::{
    entries, guest_spec, launch, none_config, options, scratch, shell, wait_ready,
};
use qemu_process::{DiskLaunch, Error, Machine, PowerState, VmLaunch};

const T: Duration = Duration::from_secs(60);

/// The state now, each change as it comes (pause, resume, the guest's power-off), the end of
/// the stream when QEMU exits, and a timeout when nothing changes.
#[test]
fn power_state_now_and_each_change_until_qemu_exits() {
    let s = scratch("power");
    let mut vm = launch(guest_spec(&[], ""), &options(s.path())).unwrap();
    wait_ready(&mut vm);
    assert_eq!(vm.power_state().unwrap(), PowerState::Running);
    // Nothing changes: a zero timeout looks and gives up.
    let err = vm.power_wait_change(Duration::ZERO).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    vm.pause().unwrap();
    vm.resume().unwrap();
    vm.pause().unwrap();
    // The events came while the commands ran; the changes are reported in order.
    let changes: Vec<PowerState> = vm.power_changes(T).take(3).map(Result::unwrap).collect();
    assert_eq!(
        changes,
        [PowerState::Paused, PowerState::Running, PowerState::Paused]
    );
    assert_eq!(vm.power_state().unwrap(), PowerState::Paused);
    vm.resume().unwrap();
    assert_eq!(vm.power_wait_change(T).unwrap(), PowerState::Running);

    // The guest powers off: SHUTDOWN, then QEMU's exit; the stream ends after Off.
    shell(&mut vm, "poweroff -f &");
    let rest: Vec<PowerState> = vm.power_changes(T).map(Result::unwrap).collect();
    assert_eq!(rest, [PowerState::Off]);
    assert!(!vm.is_running());
    assert_eq!(vm.power_state().unwrap(), PowerState::Off);
    assert!(matches!(vm.power_wait_change(T), Err(Error::Exited(_))));
}

/// A machine started paused (`-S`) is Paused; one killed is Off without any event.
#[test]
fn a_paused_start_and_a_kill_are_seen() {
    let mut config = none_config();
    config.arg("-S");
    let mut vm = Machine::launch(&config).unwrap();
    assert_eq!(vm.power_state().unwrap(), PowerState::Paused);
    vm.resume().unwrap();
    assert_eq!(vm.power_wait_change(T).unwrap(), PowerState::Running);
    vm.kill().unwrap();
    assert_eq!(vm.power_wait_change(T).unwrap(), PowerState::Off);
}

fn meminfo_kib(vm: &mut Machine) -> u64 {
    let out = shell(
        vm,
        "sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo",
    );
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{out:?}: {e}"))
}

fn sectors(vm: &mut Machine) -> u64 {
    let out = shell(vm, "cat /sys/block/vda/size");
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{out:?}: {e}"))
}

/// Memory and disk sizes changed between boots: the relaunched guest has more memory and a
/// bigger disk that still holds what it wrote; a smaller size is refused with both sizes and
/// the machine keeps its description.
#[test]
fn relaunch_with_more_memory_and_a_bigger_disk_keeps_the_disks() {
    let s = scratch("relaunch-with");
    let mut first = VmLaunch::new(guest_spec(&["virtio_blk"], ""));
    first.spec.memory = Some(Size::mib(256));
    let mut data = DiskSpec::new("");
    data.path = None;
    data.id = Some("data".into());
    first.spec.disks.push(data);
    first.disks.push(DiskLaunch {
        size: Some(Size::mib(16)),
        flash_from: None,
    });
    let mut vm = launch(first.clone(), &options(s.path())).unwrap();
    let temp = vm.temp_dir().unwrap().to_owned();
    wait_ready(&mut vm);
    let memory_before = meminfo_kib(&mut vm);
    assert_eq!(sectors(&mut vm), 16 * 2048);
    shell(
        &mut vm,
        "printf QM-KEPT | dd of=/dev/vda bs=512 seek=100 conv=notrunc 2>/dev/null; sync",
    );
    vm.powerdown(T).unwrap();
    vm.wait(T).unwrap();

    let mut bigger = first.clone();
    bigger.spec.memory = Some(Size::mib(384));
    bigger.disks[0].size = Some(Size::mib(32));
    vm.relaunch_with(bigger.clone()).unwrap();
    assert_eq!(vm.temp_dir(), Some(temp.as_path()));
    assert_eq!(vm.vm_launch(), Some(&bigger));
    wait_ready(&mut vm);
    let memory_after = meminfo_kib(&mut vm);
    assert!(
        memory_after >= memory_before + 100 * 1024,
        "{memory_before} kB -> {memory_after} kB"
    );
    assert_eq!(sectors(&mut vm), 32 * 2048);
    let kept = shell(
        &mut vm,
        "dd if=/dev/vda bs=512 skip=100 count=1 2>/dev/null | head -c 7; echo",
    );
    assert!(kept.contains("QM-KEPT"), "{kept}");

    // Refused while running; a size below the disk's is an error and changes nothing.
    assert!(matches!(
        vm.relaunch_with(first.clone()),
        Err(Error::VmRunning { .. })
    ));
    vm.shutdown(T).unwrap();
    let err = vm.relaunch_with(first).unwrap_err();
    assert!(matches!(err, Error::DiskTooSmall { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("size is 16777216 bytes (16 MiB) but its image"),
        "{err}"
    );
    assert_eq!(vm.vm_launch(), Some(&bigger));
    vm.relaunch().unwrap();
    wait_ready(&mut vm);
    assert_eq!(sectors(&mut vm), 32 * 2048);
    vm.shutdown(T).unwrap();
    drop(vm);
    assert!(!temp.exists());
    assert!(entries(s.path()).is_empty(), "{:?}", entries(s.path()));
}

/// An x86_64 guest under TCG gets a CPU with the x86-64-v2 features (QEMU's own default,
/// qemu64, lacks SSSE3, SSE4.1, SSE4.2 and POPCNT).
#[test]
fn an_x86_64_guest_under_tcg_has_the_x86_64_v2_features() {
    let s = scratch("cpu");
    let mut vm = launch(guest_spec(&[], ""), &options(s.path())).unwrap();
    assert!(vm
        .argv()
        .windows(2)
        .any(|w| w[0] == "-cpu" && w[1] == "max"));
    wait_ready(&mut vm);
    let flags = shell(&mut vm, "grep -m1 '^flags' /proc/cpuinfo");
    let flags: Vec<&str> = flags.split_whitespace().collect();
    for wanted in [
        "cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3",
    ] {
        assert!(flags.contains(&wanted), "{wanted} missing: {flags:?}");
    }
    vm.shutdown(T).unwrap();
}
