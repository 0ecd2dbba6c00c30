//! Helpers shared by the `features_*` integration tests (qemu-process's VM launches and `image`
//! against a real QEMU, qemu-img and the guest fixture).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_cmdline::VmSpec;
use qemu_machine_tests::fixture::{self, GuestFixture};
use qemu_process::{AccelChoice, Error, Machine, MachineConfig, VmLaunch};

/// A machine launched from a VM description.
pub type Vm = Machine;

/// How long a guest may take to boot to its ready line under TCG on a loaded machine.
pub const BOOT: Duration = Duration::from_secs(90);

/// A fresh directory for one test, removed at the end (also on panic).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("qm-feat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// The names in the directory, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Launch options for tests: TCG (nested KVM crashes Linux guests here), the QEMU on PATH
/// (failing with the install command when missing), temp dirs under `base`.
pub fn options(base: &Path) -> MachineConfig {
    let mut o = MachineConfig::default();
    o.accel(AccelChoice::Tcg)
        .binary(qemu_machine_tests::qemu_system_x86_64())
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

/// The guest fixture.
pub fn fixture() -> GuestFixture {
    GuestFixture::get().unwrap_or_else(|e| panic!("guest fixture: {e}"))
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
pub fn wait_ready(vm: &mut Vm) {
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
pub fn shell(vm: &mut Vm, command: &str) -> String {
    let _ = vm.console_read();
    vm.console_write(format!("{command}\n").as_bytes(), BOOT)
        .unwrap();
    let out = vm
        .console_wait_for(fixture::PROMPT.as_bytes(), BOOT)
        .unwrap_or_else(|e| panic!("no prompt after {command:?}: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}
