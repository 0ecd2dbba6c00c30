//! Shared helpers for the integration tests: finding QEMU and building the guest fixture.
//!
//! Tests that need QEMU call [`qemu_system_x86_64`] / [`qemu_img`]: when the program is
//! missing they panic with the `apt-get install` command to run, so a test fails loudly and
//! never passes by skipping. Tests that boot Linux use [`fixture::GuestFixture`] (busybox,
//! x86_64 and aarch64) or [`cloud_fixture::CloudFixture`] (a Debian cloud image). What the
//! test binaries share (scratch directories, `/proc`, launch configurations, the guest's shell,
//! children under a deadline or on a pty) is in [`support`].

use std::env;
use std::path::{Path, PathBuf};

pub mod clib;
pub mod cloud_fixture;
pub mod fixture;
pub mod qga;
pub mod support;

/// Finds `name` in the directories of `PATH`, like a shell would.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn required_program(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("{name} not found: install it with `apt-get install -y {package}`")
    })
}

/// The `qemu-system-x86_64` binary on `PATH`.
///
/// # Panics
///
/// If there is none, with the message
/// "qemu-system-x86_64 not found: install it with `apt-get install -y qemu-system-x86`".
pub fn qemu_system_x86_64() -> PathBuf {
    required_program("qemu-system-x86_64", "qemu-system-x86")
}

/// The `qemu-system-aarch64` binary on `PATH`.
///
/// # Panics
///
/// If there is none, with the message
/// "qemu-system-aarch64 not found: install it with `apt-get install -y qemu-system-arm`".
pub fn qemu_system_aarch64() -> PathBuf {
    required_program("qemu-system-aarch64", "qemu-system-arm")
}

/// The `qemu-img` binary on `PATH`.
///
/// # Panics
///
/// If there is none, with the message
/// "qemu-img not found: install it with `apt-get install -y qemu-utils`".
pub fn qemu_img() -> PathBuf {
    required_program("qemu-img", "qemu-utils")
}

/// The workspace's root directory (where the root `Cargo.toml` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_owned()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the workspace root when
/// relative), else `<workspace>/target`.
pub fn workspace_target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path_and_not_nonsense() {
        let sh = find_program("sh").expect("every Debian machine has sh");
        assert!(sh.is_absolute(), "{}", sh.display());
        assert_eq!(sh.file_name().unwrap(), "sh");
        assert_eq!(find_program("no-such-program-qm-0x5eed"), None);
    }

    #[test]
    fn missing_program_panics_with_install_command() {
        let panic =
            std::panic::catch_unwind(|| required_program("no-such-program-qm", "no-such-pkg"))
                .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert_eq!(
            message,
            "no-such-program-qm not found: install it with `apt-get install -y no-such-pkg`"
        );
    }

    #[test]
    fn target_dir_is_absolute_and_in_or_beside_the_workspace() {
        let dir = workspace_target_dir();
        assert!(dir.is_absolute(), "{}", dir.display());
        assert!(workspace_root().join("Cargo.toml").is_file());
    }
}
