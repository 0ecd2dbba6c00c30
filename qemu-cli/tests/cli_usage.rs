//! Usage errors, help and `argv`: no QEMU is started by these.

mod common;

use std::time::Duration;

use common::*;
use qemu_machine_tests::support::{run_deadline, scratch, show};

const T: Duration = Duration::from_secs(30);

#[test]
fn bad_arguments_are_usage_errors_with_code_2() {
    for (args, needle) in [
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["run", "--for", "5x"], "unknown unit"),
        (vec!["run", "--no-such-flag"], "unexpected argument"),
        (vec!["run", "--events", "some"], "invalid value"),
        (
            vec!["run", "--forward", "22"],
            "--forward 22: wrong number of parts",
        ),
        (
            vec!["run", "--disk", "a.img,colour=red"],
            "unknown key \"colour\"",
        ),
        (vec!["run", "--accel", "w@rp"], "--accel w@rp"),
        (vec!["run", "--smp", "0"], "at least one CPU"),
        (vec!["run", "-m", "lots"], "--memory lots"),
        (vec!["argv", "--arch", "sparc"], "unknown architecture"),
        (vec!["image", "resize"], "required"),
        (
            vec!["qmp", "--socket", "a", "--tcp", "127.0.0.1:4444"],
            "cannot be used with",
        ),
        (vec![], "Usage:"),
    ] {
        let out = run_deadline(cmd(&args), T);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_spec_file_names_the_field() {
    let s = scratch("usage-spec");
    let spec = s.path().join("vm.json");
    std::fs::write(&spec, r#"{"memory": "1G", "memroy": "2G"}"#).unwrap();
    let out = run_deadline(cmd(["run", spec.to_str().unwrap()]), T);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("memroy"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = run_deadline(cmd(["argv", "/no/such/vm.json"]), T);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/vm.json"));

    // Valid JSON that is not an object is refused with a message saying what it should be.
    std::fs::write(&spec, r#"[{"memory": "1G"}]"#).unwrap();
    let out = run_deadline(cmd(["run", spec.to_str().unwrap()]), T);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "qemu-machine: error: {}: a VM description is a JSON object ({{\"memory\": \"1G\", \
             ...}}), not an array\n",
            spec.display()
        )
    );
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = run_deadline(cmd(["--help"]), T);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Examples:",
        "qemu-machine run --for 5s",
        "Exit codes:",
        "130",
        "image",
        "qmp",
        "start",
        "console",
        "image check exits as qemu-img check",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    // The supervisor's mode is not a command for people.
    assert!(!text.contains("__supervise"), "{text}");
    for sub in [
        "run", "qmp", "image", "argv", "start", "list", "console", "exec", "stop", "kill",
    ] {
        let out = run_deadline(cmd([sub, "--help"]), T);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Examples:"),
            "{sub} --help has examples"
        );
    }
    let out = run_deadline(cmd(["--version"]), T);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("qemu-machine "));
}

#[test]
fn argv_prints_the_shell_quoted_command_line() {
    let out = run_deadline(cmd(["argv", "--accel", "tcg"]), T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // Exactly what `run` starts: the VM, then the launcher's QMP monitor and console on the
    // descriptors QEMU inherits (3 and 4).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "qemu-system-x86_64 -machine q35,graphics=off -accel tcg -cpu qemu64 -m 128M \
         -name qemu-machine-default -nodefaults -display none \
         -chardev socket,id=qm-qmp,fd=3 -mon chardev=qm-qmp,mode=control \
         -chardev socket,id=qm-console,fd=4 -serial chardev:qm-console\n"
    );

    // A VM whose launch makes files is shown too: they appear in a placeholder temp dir.
    let out = run_deadline(cmd(["argv", "--accel", "tcg", "--user", "me", "--vnc"]), T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "-vnc unix:",
        "qemu-machine.XXXXXX/vnc.sock",
        "filename=",
        "qemu-machine.XXXXXX/cidata.img,read-only=on",
    ] {
        assert!(line.contains(needle), "{needle}: {line}");
    }

    let s = scratch("argv");
    let spec = s.path().join("vm.json");
    std::fs::write(
        &spec,
        r#"{"memory": "1G", "accel": ["kvm", "tcg"], "disks": [{"path": "/vm/my disk,1.qcow2", "format": "qcow2"}]}"#,
    )
    .unwrap();
    let out = run_deadline(cmd(["argv", spec.to_str().unwrap(), "--smp", "2"]), T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("-accel kvm -accel tcg"), "{line}");
    assert!(line.contains("-smp 2"), "{line}");
    assert!(
        line.contains("'driver=file,node-name=disk0-file,filename=/vm/my disk,,1.qcow2'"),
        "commas doubled, spaces quoted: {line}"
    );

    // An accelerator chosen by the raw arguments wins: auto adds none of its own.
    for args in [
        &["--qemu-arg=-accel", "--qemu-arg=tcg"][..],
        &["--qemu-arg=-machine", "--qemu-arg=accel=tcg"][..],
    ] {
        let out = run_deadline(cmd(["argv"].iter().chain(args)), T);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(!line.contains("-accel kvm"), "{line}");
        assert_eq!(line.matches("tcg").count(), 1, "{line}");
    }

    // --json prints the merged spec, which reads back as the same VM.
    let out = run_deadline(
        cmd(["argv", "--json", spec.to_str().unwrap(), "--smp", "2"]),
        T,
    );
    let merged = s.path().join("merged.json");
    std::fs::write(&merged, &out.stdout).unwrap();
    let again = run_deadline(cmd(["argv", merged.to_str().unwrap()]), T);
    assert_eq!(again.stdout, line.as_bytes(), "{}", show(&again));
}
