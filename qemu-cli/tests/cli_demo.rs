//! `scripts/demo.sh`, the README's first command, with the built command and guest fixture
//! (the build itself is what the script does first; it is skipped here through its DEMO_*
//! variables): a real Linux guest boots to a shell prompt on the terminal, runs a command,
//! takes what is typed, and powers off through the ACPI power button; unattended too.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use qemu_machine_tests::fixture::{GuestFixture, POWER_BUTTON_LINE, PROMPT};
use qemu_machine_tests::support::{run_deadline, show, PtyChild};

const T: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    qemu_machine_tests::workspace_root().join("scripts/demo.sh")
}

fn env(fx: &GuestFixture) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("DEMO_BIN", OsStr::new(bin()).to_owned()),
        ("DEMO_KERNEL", fx.kernel.clone().into_os_string()),
        ("DEMO_INITRD", fx.initrd.clone().into_os_string()),
        ("DEMO_CMDLINE", fx.kernel_cmdline(&[], "").into()),
    ]
}

#[test]
fn the_demo_boots_linux_runs_a_command_and_powers_off_through_acpi() {
    require_qemu();
    let fx = GuestFixture::get().unwrap_or_else(|e| panic!("{e}"));
    let env = env(&fx);
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    // On a terminal: the guest's shell is the user's.
    let mut pty = PtyChild::spawn_program(
        "bash",
        [script().as_os_str(), OsStr::new("5m")],
        &env,
        false,
    );
    let at = pty.expect_from(0, "demo: booting Linux under TCG; it runs 'uname -a'", T);
    let at = pty.expect_from(at, "Ctrl-] q stops the VM", T);
    let at = pty.expect_from(at, "qm# uname -a", T);
    let at = pty.expect_from(at, "Linux qm-guest ", T);
    let at = pty.expect_from(at, "QM-RUN-EXIT=0", T);
    let at = pty.expect_from(at, PROMPT, T);
    pty.write(b"echo typed-$((1+2))\r");
    let at = pty.expect_from(at, "typed-3", T);
    pty.write(b"\x1dq");
    let at = pty.expect_from(at, "quit: pressed the power button", T);
    let at = pty.expect_from(at, POWER_BUTTON_LINE, T);
    let status = pty.finish(T);
    assert_eq!(status.code(), Some(0), "{}", pty.text());
    assert!(
        pty.text()[at..].contains("qemu-machine: quit: the guest powered off"),
        "{}",
        pty.text()
    );

    // Unattended: standard input from /dev/null, stopped by the duration.
    let mut c = std::process::Command::new("bash");
    c.arg(script())
        .arg("45s")
        .stdin(std::process::Stdio::null())
        .env_remove("RUST_LOG");
    for (k, v) in &env {
        c.env(k, v);
    }
    let out = run_deadline(c, T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Linux qm-guest "), "{}", show(&out));
    assert!(stdout.contains(POWER_BUTTON_LINE), "{}", show(&out));
    assert!(
        stderr
            .trim_end()
            .ends_with("qemu-machine: stopped after 45s: the guest powered off"),
        "{}",
        show(&out)
    );
}
