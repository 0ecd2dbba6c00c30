//! The aarch64 guest fixture under a real `qemu-system-aarch64` (TCG, `virt` board), launched
//! through `qemu_process::Machine` from a VM description (`"arch": "aarch64"`): by direct kernel boot (the kernel gets a device tree, and the
//! power button is a GPIO key) and by UEFI firmware from the fixture's disk (GRUB, ACPI, and
//! the power button is an ACPI event). Each boots to the ready line, answers shell commands
//! and powers off on QMP `system_powerdown`.

use std::time::{Duration, Instant};

use qemu_machine_tests::fixture::{
    Arch, GuestFixture, ERROR_PREFIX, POWER_BUTTON_LINE, PROMPT, READY_LINE,
};
use qemu_machine_tests::support::Guest;
use qemu_process::{AccelChoice, Machine, MachineConfig, VmLaunch};
use serde_json::json;

/// Generous bounds: the guest needs about 3 s (direct) or 11 s (UEFI) under TCG on an idle
/// machine; a loaded 2-core CI machine can be many times slower.
const BOOT: Duration = Duration::from_secs(180);
const COMMAND: Duration = Duration::from_secs(60);

fn fixture() -> GuestFixture {
    GuestFixture::get_for(Arch::Aarch64).unwrap_or_else(|e| panic!("{e}"))
}

fn launch(description: serde_json::Value) -> Guest {
    let vm = VmLaunch::from_json(&description.to_string()).unwrap();
    let mut config = MachineConfig::for_vm(vm);
    config
        .accel(AccelChoice::Tcg)
        .binary(qemu_machine_tests::qemu_system_aarch64())
        .qmp_timeout(COMMAND);
    let started = Instant::now();
    let vm = Machine::launch(&config).unwrap_or_else(|e| panic!("launching {description}: {e}"));
    Guest::new(vm, started)
}

/// Runs a shell command and returns its output (up to the next prompt).
fn run(guest: &mut Guest, command: &str) -> String {
    guest.send(&format!("{command}\n"), COMMAND);
    guest.expect(PROMPT, COMMAND)
}

/// Boots to the prompt, checks the shell, the kernel and which power-button driver is active
/// (`button_device`, as `/proc/bus/input/devices` names it), then presses the power button.
fn boot_answer_and_power_off(mut guest: Guest, fixture: &GuestFixture, how: &str, uefi: bool) {
    let before = guest.expect(&format!("{READY_LINE}\r\n"), BOOT);
    assert!(!before.contains(ERROR_PREFIX), "{before}");
    println!(
        "aarch64 fixture, {how}: QEMU start to {READY_LINE} in {:.1} s (TCG)",
        guest.started.elapsed().as_secs_f64()
    );
    guest.expect(PROMPT, COMMAND);

    assert_eq!(run(&mut guest, "echo $((6*7))"), "42\r\n");
    assert_eq!(run(&mut guest, "uname -m"), "aarch64\r\n");
    assert_eq!(
        run(&mut guest, "uname -r"),
        format!("{}\r\n", fixture.kernel_version)
    );
    // Booted the way the test meant: UEFI firmware hands over ACPI tables and its own
    // interfaces; direct kernel boot a device tree only.
    let efi = run(
        &mut guest,
        "test -d /sys/firmware/efi && echo efi || echo no-efi",
    );
    assert_eq!(efi, if uefi { "efi\r\n" } else { "no-efi\r\n" });
    // The power button's driver: gpio-keys with a device tree, the ACPI button with ACPI.
    let button_device = if uefi { "Power Button" } else { "gpio-keys" };
    let devices = run(&mut guest, "grep '^N: Name=' /proc/bus/input/devices");
    assert!(
        devices.contains(&format!("N: Name=\"{button_device}\"")),
        "{devices}"
    );
    // A module the guest loads on demand.
    assert_eq!(
        run(
            &mut guest,
            "modprobe vfat && grep -c '^vfat ' /proc/modules"
        ),
        "1\r\n"
    );

    let shutdown = guest
        .vm
        .powerdown(COMMAND)
        .unwrap_or_else(|e| panic!("system_powerdown: {e}"));
    assert_eq!(shutdown.data["reason"], "guest-shutdown", "{shutdown:?}");
    guest.expect(POWER_BUTTON_LINE, COMMAND);
    let status = guest
        .vm
        .wait(COMMAND)
        .unwrap_or_else(|e| panic!("QEMU did not exit: {e}"));
    assert!(status.success(), "{status}");
}

#[test]
fn direct_kernel_boot_reaches_the_shell_and_the_gpio_power_button_works() {
    let fixture = fixture();
    assert_eq!(fixture.arch, Arch::Aarch64);
    assert!(fixture.has_module("gpio_keys"), "{:?}", fixture.modules);
    let cmdline = fixture.kernel_cmdline(&[], "");
    assert!(cmdline.starts_with("console=ttyAMA0 "), "{cmdline}");
    let guest = launch(json!({
        "arch": "aarch64",
        "memory": "256M",
        "kernel": fixture.kernel,
        "initrd": fixture.initrd,
        "append": cmdline,
        "no_reboot": true,
    }));
    boot_answer_and_power_off(guest, &fixture, "direct kernel boot", false);
}

#[test]
fn uefi_boot_from_the_fixture_disk_reaches_the_shell_and_the_acpi_power_button_works() {
    let fixture = fixture();
    let disk = fixture
        .uefi_disk
        .clone()
        .expect("the aarch64 fixture has a UEFI disk");
    let guest = launch(json!({
        "arch": "aarch64",
        "memory": "256M",
        "uefi": {},
        "disks": [{"path": disk, "format": "raw", "read_only": true}],
        "no_reboot": true,
    }));
    boot_answer_and_power_off(guest, &fixture, "UEFI (AAVMF, GRUB)", true);
}
