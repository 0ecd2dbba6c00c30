//! `qemu_process::Machine` against a real QEMU: a VM launched from a `VmSpec`, its argv, accelerator,
//! console, temp dir, relaunch, and the errors of bad descriptions.

use std::time::Duration;

use qemu_cmdline::VmSpec;
use qemu_machine_tests::support::{
    self, entries, launch, launch_json, options, scratch, wait_ready,
};
use qemu_process::{AccelChoice, Error, MachineConfig, RunState};

#[test]
fn default_spec_launches_firmware_only_and_cleans_up() {
    let scratch = scratch("vm-default");
    let spec = VmSpec::default();
    let mut vm = launch(spec.clone(), &options(scratch.path())).unwrap();
    assert_eq!(vm.status().unwrap(), RunState::Running);
    let temp = vm.temp_dir().unwrap().to_owned();
    assert!(temp.starts_with(scratch.path()));
    // The Machine's own temp dir (log, sockets) lives inside the VM's.
    assert!(vm.log_path().unwrap().starts_with(&temp));

    let argv: Vec<String> = vm
        .argv()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The console is the first serial port; the spec adds no other and renders the display.
    let serials: Vec<&String> = argv
        .windows(2)
        .filter(|w| w[0] == "-serial")
        .map(|w| &w[1])
        .collect();
    assert_eq!(serials, ["chardev:qm-console"], "{argv:?}");
    assert_eq!(
        argv.iter().filter(|a| *a == "-display").count(),
        1,
        "{argv:?}"
    );
    assert!(argv.windows(2).any(|w| w == ["-accel", "tcg"]), "{argv:?}");
    assert!(
        argv.windows(2).any(|w| w == ["-machine", "q35"]),
        "{argv:?}"
    );
    assert_eq!(
        vm.resolved_spec().unwrap().accel,
        vec![qemu_cmdline::Accel::Tcg]
    );
    assert_eq!(&vm.vm_launch().unwrap().spec, &spec);
    assert!(vm.forwards().is_empty() && vm.vnc_socket().is_none());
    assert!(vm.drives().is_empty());

    // Relaunch is refused while running, works after an exit.
    assert!(matches!(vm.relaunch(), Err(Error::VmRunning { .. })));
    vm.shutdown(Duration::from_secs(20)).unwrap();
    assert!(!vm.is_running());
    vm.relaunch().unwrap();
    assert_eq!(vm.status().unwrap(), RunState::Running);
    drop(vm);
    assert!(!temp.exists(), "temp dir left behind");
    assert!(
        entries(scratch.path()).is_empty(),
        "{:?}",
        entries(scratch.path())
    );
}

#[test]
fn an_accel_the_description_chooses_wins_over_auto() {
    let scratch = scratch("vm-accel");
    let specs = [
        VmSpec::from_json(r#"{"extra_args": ["-accel", "tcg"]}"#).unwrap(),
        VmSpec::from_json(r#"{"machine": {"type": "q35", "props": {"accel": "tcg"}}}"#).unwrap(),
    ];
    for spec in &specs {
        // Auto given explicitly, and left to the default (an empty accel list).
        for explicit in [true, false] {
            let mut o = options(scratch.path());
            if explicit {
                o.accel(AccelChoice::Auto);
            } else {
                o = MachineConfig::default();
                o.binary(qemu_machine_tests::qemu_system_x86_64())
                    .temp_base_dir(scratch.path());
            }
            let mut vm = launch(spec.clone(), &o).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            assert!(vm.resolved_spec().unwrap().accel.is_empty(), "{spec:?}");
            let choices = vm
                .argv()
                .iter()
                .map(|a| a.to_string_lossy())
                .filter(|a| *a == "-accel" || a.contains("accel="))
                .count();
            assert_eq!(choices, 1, "{:?}", vm.argv());
            let kvm = vm.execute("query-kvm", None).unwrap();
            assert_eq!(kvm["enabled"], serde_json::json!(false), "{spec:?}: {kvm}");
            vm.shutdown(Duration::from_secs(20)).unwrap();
        }
    }
}

#[test]
fn guest_console_is_the_first_serial_port_and_spec_serials_follow() {
    let scratch = scratch("vm-serial");
    let mut spec = support::guest_spec(&[], "");
    // A second serial port from the spec: the guest sees it as ttyS1.
    spec.serial = vec![qemu_cmdline::ChardevBackend::Null {}];
    let mut vm = launch(spec.clone(), &options(scratch.path())).unwrap();
    wait_ready(&mut vm);
    let out = support::shell(&mut vm, "cat /proc/tty/driver/serial | grep -c uart:16550A");
    assert!(out.contains('2'), "{out}");
    let out = support::shell(&mut vm, "tty; echo $((6*7))");
    assert!(out.contains("42"), "{out}");
    vm.powerdown(Duration::from_secs(30)).unwrap();
    vm.wait(Duration::from_secs(30)).unwrap();
}

#[test]
fn bad_descriptions_are_errors_and_leave_nothing() {
    let scratch = scratch("vm-bad");
    let base = scratch.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let missing = scratch.path().join("no-such.qcow2");
    let spec = VmSpec::from_json(&format!(
        r#"{{"disks": [{{"name": "data", "path": {missing:?}}}]}}"#
    ))
    .unwrap();
    let e = launch(spec, &options(&base)).unwrap_err();
    match &e {
        Error::NotFound { what, path } => {
            assert_eq!(what, "disk \"data\"");
            assert_eq!(path, &missing);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("no-such.qcow2 does not exist"),
        "{e}"
    );

    // A spec QEMU rejects: the launch error carries QEMU's message.
    let spec = VmSpec::from_json(r#"{"extra_args": ["-no-such-option"]}"#).unwrap();
    let e = launch(spec, &options(&base)).unwrap_err();
    assert!(matches!(e, Error::Launch { .. }), "{e:?}");
    assert!(e.to_string().contains("-no-such-option"), "{e}");

    // A disk the launch created at the spec's path is removed when the launch fails.
    let made = scratch.path().join("made, by launch.qcow2");
    let e = launch_json(
        &format!(
            r#"{{"disks": [{{"name": "new", "path": {made:?}, "size": "1M"}}],
            "extra_args": ["-no-such-option"]}}"#
        ),
        &options(&base),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Launch { .. }), "{e:?}");
    assert!(!made.exists(), "the created disk was left behind");

    // An invalid spec: the cmdline error, named.
    let e = launch_json(
        r#"{"forwards": [{"host_port": 1, "guest_port": 2}],
        "nics": [{"backend": {"type": "tap"}}]}"#,
        &options(&base),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Spec(_)), "{e:?}");
    // Nothing left in the temp base.
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
}
