//! The QEMU configurations the tests launch, and the guest fixture's serial shell.

use std::path::Path;
use std::time::Duration;

use qemu_cmdline::VmSpec;
use qemu_process::{AccelChoice, Error, Machine, MachineConfig, VmLaunch};

use crate::fixture::{self, GuestFixture};

/// How long a guest may take to boot to its ready line under TCG on a loaded machine.
pub const BOOT: Duration = Duration::from_secs(90);

/// `-machine none -nodefaults` under TCG: the smallest QEMU that speaks QMP.
pub fn none_config() -> MachineConfig {
    let mut config = MachineConfig::new(crate::qemu_system_x86_64());
    config
        .args(["-machine", "none", "-nodefaults"])
        .accel(AccelChoice::Tcg)
        .launch_timeout(Duration::from_secs(20))
        .qmp_timeout(Duration::from_secs(20));
    config
}

/// Launch options for VM descriptions: TCG (nested KVM crashes Linux guests here), the QEMU on
/// PATH (failing with the install command when missing), temp dirs under `base`.
pub fn options(base: &Path) -> MachineConfig {
    let mut o = MachineConfig::default();
    o.accel(AccelChoice::Tcg)
        .binary(crate::qemu_system_x86_64())
        .temp_base_dir(base)
        .launch_timeout(Duration::from_secs(30))
        .qmp_timeout(Duration::from_secs(30));
    o
}

/// Launches `vm` (a [`VmSpec`], or a [`VmLaunch`] with launcher work) with `options`.
pub fn launch(vm: impl Into<VmLaunch>, options: &MachineConfig) -> Result<Machine, Error> {
    let mut config = options.clone();
    config.vm(vm);
    Machine::launch(&config)
}

/// Launches the VM described by `json` (a [`VmLaunch`]'s JSON form) with `options`; a
/// description that does not parse is the error.
pub fn launch_json(json: &str, options: &MachineConfig) -> Result<Machine, Error> {
    launch(VmLaunch::from_json(json)?, options)
}

/// The guest fixture; fails the test with the reason (and what to run) when it cannot be had.
pub fn fixture() -> GuestFixture {
    GuestFixture::get().unwrap_or_else(|e| panic!("{e}"))
}

/// A spec that boots the guest fixture with these modules and extra kernel parameters.
pub fn guest_spec(modules: &[&str], extra: &str) -> VmSpec {
    let f = fixture();
    VmSpec {
        memory: Some(qemu_cmdline::Size::mib(256)),
        kernel: Some(f.kernel.clone()),
        initrd: Some(f.initrd.clone()),
        append: Some(f.kernel_cmdline(modules, extra)),
        no_reboot: true,
        ..VmSpec::default()
    }
}

/// Waits for the guest's ready line and then the shell's first prompt.
pub fn wait_ready(vm: &mut Machine) {
    for (what, pattern) in [
        ("ready line", fixture::READY_LINE),
        ("prompt", fixture::PROMPT),
    ] {
        if let Err(e) = vm.console_wait_for(pattern.as_bytes(), BOOT) {
            panic!(
                "no {what}: {e}\nconsole: {}\nlog: {}",
                String::from_utf8_lossy(&vm.console_read()),
                vm.log().unwrap_or_default()
            );
        }
    }
}

/// Runs a shell command in the guest (after [`wait_ready`] or another `shell`) and returns its
/// output, up to the next prompt.
pub fn shell(vm: &mut Machine, command: &str) -> String {
    let _ = vm.console_read();
    vm.console_write(format!("{command}\n").as_bytes(), BOOT)
        .unwrap();
    let out = vm
        .console_wait_for(fixture::PROMPT.as_bytes(), BOOT)
        .unwrap_or_else(|e| panic!("no prompt after {command:?}: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}
