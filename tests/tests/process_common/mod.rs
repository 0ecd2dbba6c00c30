//! Helpers shared by the `process_*` integration tests (qemu-process against a real QEMU).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::time::Duration;

use qemu_process::{AccelChoice, MachineConfig};

/// The QEMU binary; panics with the install command when missing.
pub fn qemu() -> PathBuf {
    qemu_machine_tests::qemu_system_x86_64()
}

/// `-machine none -nodefaults` under TCG: the smallest QEMU that speaks QMP.
pub fn none_config() -> MachineConfig {
    let mut config = MachineConfig::new(qemu());
    config
        .args(["-machine", "none", "-nodefaults"])
        .accel(AccelChoice::Tcg)
        .launch_timeout(Duration::from_secs(20))
        .qmp_timeout(Duration::from_secs(20));
    config
}

/// Whether a process with this pid exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The state letter of a process from /proc/PID/stat (`R`, `S`, `T`, `Z`, ...).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.chars().next()
}

/// Sends a signal to a pid.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    let ret = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        ret,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// A fresh directory for one test's temp dirs, removed at the end.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("qm-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }

    pub fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
