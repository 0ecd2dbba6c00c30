//! Machine lifecycle against a real QEMU: launch (`-machine none`, q35), QMP commands, events,
//! graceful shutdown, exit status and log afterwards, attach, MachineSet.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use qemu_machine_tests::support::{self, entries, none_config, scratch};
use qemu_process::{AccelChoice, Error, Machine, MachineConfig, RunState};
use serde_json::json;

#[test]
fn machine_none_launches_answers_and_shuts_down_gracefully() {
    let scratch = scratch("lifecycle-none");
    let mut config = none_config();
    config.temp_base_dir(scratch.path());
    let mut vm = Machine::launch(&config).unwrap();

    let pid = vm.pid().expect("a launched machine has a pid");
    assert!(support::process_exists(pid));
    assert_eq!(vm.exit_status(), None);
    assert!(vm.is_connected());
    let greeting = vm.greeting().unwrap();
    assert_eq!(greeting.version.major, 7, "{greeting:?}");
    assert!(
        vm.oob_enabled(),
        "QEMU 7.2 offers oob and the default asks for it"
    );

    // The private temp dir: under the base, mode 0700, holding the log.
    let temp = vm.temp_dir().unwrap().to_owned();
    assert!(temp.starts_with(scratch.path()));
    let mode = std::fs::metadata(&temp).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(vm.log_path().unwrap().starts_with(&temp));

    // The argv: our QMP chardev on an inherited fd, no socket path.
    let argv: Vec<String> = vm
        .argv()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(
        argv.iter().any(|a| a.starts_with("socket,id=qm-qmp,fd=")),
        "{argv:?}"
    );
    assert!(argv.windows(2).any(|w| w == ["-accel", "tcg"]), "{argv:?}");

    assert_eq!(vm.status().unwrap(), RunState::Running);
    let raw = vm.execute("query-status", None).unwrap();
    assert_eq!(raw["running"], json!(true));
    let typed = vm.command(&qmp_proto::commands::QueryStatus).unwrap();
    assert!(typed.running);
    let name = vm.execute("query-name", None).unwrap();
    assert!(name.is_object());

    let status = vm.shutdown(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    // After shutdown: the status and the log stay readable, the SHUTDOWN event is kept.
    assert_eq!(vm.exit_status(), Some(status));
    assert!(!vm.is_connected());
    let log = vm.log().unwrap();
    assert!(!log.contains("error"), "{log}");
    let shutdown = vm
        .event_wait(
            "SHUTDOWN",
            Some(&json!({"data": {"guest": false}})),
            Duration::ZERO,
        )
        .unwrap();
    assert_eq!(shutdown.data["reason"], json!("host-qmp-quit"));
    // Commands after the exit fail at once, as Exited.
    match vm.execute("query-status", None) {
        Err(Error::Exited(s)) => assert_eq!(s, status),
        other => panic!("expected Exited, got {other:?}"),
    }
    // A second shutdown is harmless.
    assert_eq!(vm.shutdown(Duration::from_secs(1)).unwrap(), status);
    drop(vm);
    assert!(!temp.exists(), "temp dir left behind");
    assert!(!support::process_exists(pid));
    assert!(
        entries(scratch.path()).is_empty(),
        "{:?}",
        entries(scratch.path())
    );
}

#[test]
fn q35_stop_cont_events_carry_timestamps_and_match_patterns() {
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "q35", "-nodefaults", "-m", "64M"])
        .accel(AccelChoice::Tcg);
    let mut vm = Machine::launch(&config).unwrap();
    assert_eq!(vm.status().unwrap(), RunState::Running);

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    vm.pause().unwrap();
    assert_eq!(vm.status().unwrap(), RunState::Paused);
    let stop = vm.event_wait("STOP", None, Duration::from_secs(5)).unwrap();
    assert!(stop.timestamp.seconds >= before - 1, "{:?}", stop.timestamp);
    assert!((0..1_000_000).contains(&stop.timestamp.microseconds));

    vm.resume().unwrap();
    // A pattern that does not match: a timeout (its own error), and the event stays kept.
    let err = vm
        .event_wait(
            "RESUME",
            Some(&json!({"data": {"no": "such"}})),
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let resume = vm.event_wait("RESUME", None, Duration::ZERO).unwrap();
    assert!(
        (resume.timestamp.seconds, resume.timestamp.microseconds)
            >= (stop.timestamp.seconds, stop.timestamp.microseconds)
    );

    // events_wait: the first of several; others are kept in order.
    vm.pause().unwrap();
    vm.resume().unwrap();
    let first = vm
        .events_wait(&[("RESUME", None), ("STOP", None)], Duration::from_secs(5))
        .unwrap();
    assert_eq!(first.name, "STOP");
    let rest = vm.events();
    assert_eq!(
        rest.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["RESUME"]
    );

    // A pattern on data: reset reports why.
    vm.reset().unwrap();
    let reset = vm
        .event_wait(
            "RESET",
            Some(&json!({"data": {"guest": false, "reason": "host-qmp-system-reset"}})),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(reset.name, "RESET");

    let status = vm.shutdown(Duration::from_secs(10)).unwrap();
    assert!(status.success());
}

#[test]
fn event_wait_any_takes_the_next_event_whatever_its_name() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    vm.pause().unwrap();
    vm.resume().unwrap();
    // No name, no pattern: the events in arrival order, kept ones first.
    let first = vm.event_wait_any(None, Duration::from_secs(5)).unwrap();
    assert_eq!(first.name, "STOP");
    let second = vm.event_wait_any(None, Duration::from_secs(5)).unwrap();
    assert_eq!(second.name, "RESUME");
    // Nothing left: a zero timeout looks once and times out, naming what it waited for.
    let err = vm.event_wait_any(None, Duration::ZERO).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("of any name"), "{err}");

    // A pattern without a name: a kept event that does not match stays kept.
    vm.pause().unwrap();
    let err = vm
        .event_wait_any(
            Some(&json!({"event": "RESUME"})),
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    vm.reset().unwrap();
    let reset = vm
        .event_wait_any(
            Some(&json!({"data": {"reason": "host-qmp-system-reset"}})),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(reset.name, "RESET");
    let rest = vm.events();
    assert_eq!(
        rest.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["STOP"]
    );
    assert!(vm.shutdown(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn qmp_errors_are_typed_and_do_not_break_the_session() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    match vm.execute("no-such-command", None) {
        Err(Error::Qmp(e)) => {
            assert_eq!(e.class, qmp_proto::ErrorClass::CommandNotFound);
            assert!(e.desc.contains("no-such-command"), "{e}");
        }
        other => panic!("expected a QMP error, got {other:?}"),
    }
    match vm.execute("device_del", Some(json!({"id": "nothing-here"}))) {
        Err(Error::Qmp(e)) => assert!(e.desc.contains("nothing-here"), "{e}"),
        other => panic!("expected a QMP error, got {other:?}"),
    }
    // Out of band: a command that allows it works, one that does not is refused by QEMU.
    assert_eq!(
        vm.execute_oob(
            "yank",
            Some(json!({"instances": []})),
            Duration::from_secs(5)
        )
        .unwrap(),
        json!({})
    );
    match vm.execute_oob("query-status", None, Duration::from_secs(5)) {
        Err(Error::Qmp(e)) => assert!(e.desc.contains("OOB"), "{e}"),
        other => panic!("expected a QMP error, got {other:?}"),
    }
    // Still usable.
    assert_eq!(vm.status().unwrap(), RunState::Running);
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn oob_can_be_declined() {
    let mut config = none_config();
    config.oob(false);
    let mut vm = Machine::launch(&config).unwrap();
    assert!(!vm.oob_enabled());
    match vm.execute_oob(
        "yank",
        Some(json!({"instances": []})),
        Duration::from_secs(5),
    ) {
        Err(Error::Protocol(qmp_proto::Error::OobNotEnabled)) => {}
        other => panic!("expected OobNotEnabled, got {other:?}"),
    }
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn quit_by_hand_is_not_an_error_and_wait_returns_the_status() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    // QEMU may close the socket before or after its reply: either way quit succeeds.
    vm.execute("quit", None).unwrap();
    let status = vm.wait(Duration::from_secs(10)).unwrap();
    assert!(status.success());
    assert_eq!(vm.exit_status(), Some(status));
}

#[test]
fn auto_accel_resolves_to_a_concrete_choice() {
    let mut config = none_config();
    config.accel(AccelChoice::Auto);
    let mut vm = Machine::launch(&config).unwrap();
    let argv: Vec<String> = vm
        .argv()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let accel = argv
        .windows(2)
        .find(|w| w[0] == "-accel")
        .map(|w| w[1].clone())
        .expect("auto adds -accel");
    assert!(accel == "kvm" || accel == "tcg", "{accel}");
    let expected =
        qemu_process::resolve_accel(AccelChoice::Auto, &qemu_machine_tests::qemu_system_x86_64());
    assert_eq!(format!("{expected:?}").to_lowercase(), accel);
    // QEMU runs what was chosen (KVM only when /dev/kvm is usable: Auto checks).
    let kvm = vm.execute("query-kvm", None).unwrap();
    assert_eq!(kvm["enabled"], json!(expected == AccelChoice::Kvm), "{kvm}");
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

/// How many times an argv chooses an accelerator.
fn accel_choices(argv: &[std::ffi::OsString]) -> usize {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .filter(|a| *a == "-accel" || *a == "--accel" || a.contains("accel="))
        .count()
}

#[test]
fn an_accel_the_args_choose_wins_over_auto() {
    // On this machine Auto would pick KVM (/dev/kvm is usable and the guest is native), so a
    // TCG machine shows that the caller's choice was kept; elsewhere Auto would pick TCG and
    // the argv still shows that the library added no -accel of its own.
    let auto =
        qemu_process::resolve_accel(AccelChoice::Auto, &qemu_machine_tests::qemu_system_x86_64());
    eprintln!("Auto resolves to {auto:?} here");
    for args in [
        &["-machine", "none", "-nodefaults", "-accel", "tcg"][..],
        &["-machine", "none", "-nodefaults", "--accel", "tcg"][..],
        // QEMU refuses -accel together with -machine accel=: adding one would fail the launch.
        &["-machine", "none,accel=tcg", "-nodefaults"][..],
        &["-nodefaults", "-M", "type=none,accel=tcg"][..],
    ] {
        let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
        config
            .args(args)
            .accel(AccelChoice::Auto)
            .launch_timeout(Duration::from_secs(20))
            .qmp_timeout(Duration::from_secs(20));
        let mut vm = Machine::launch(&config).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(accel_choices(vm.argv()), 1, "{:?}", vm.argv());
        let kvm = vm.execute("query-kvm", None).unwrap();
        assert_eq!(kvm["enabled"], json!(false), "{args:?}: {kvm}");
        vm.shutdown(Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn thousand_stop_cont_pairs_give_two_thousand_events_in_order() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    let start = Instant::now();
    for _ in 0..1000 {
        vm.pause().unwrap();
        vm.resume().unwrap();
    }
    let events = vm.events();
    assert_eq!(events.len(), 2000, "dropped: {}", vm.events_dropped());
    for (i, event) in events.iter().enumerate() {
        let expected = if i % 2 == 0 { "STOP" } else { "RESUME" };
        assert_eq!(event.name, expected, "event #{i}");
    }
    for pair in events.windows(2) {
        let (a, b) = (&pair[0].timestamp, &pair[1].timestamp);
        assert!((a.seconds, a.microseconds) <= (b.seconds, b.microseconds));
    }
    assert_eq!(vm.events_dropped(), 0);
    eprintln!("2000 commands and events in {:?}", start.elapsed());
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_full_event_queue_is_reported_not_silent() {
    let mut config = none_config();
    config.max_events(4);
    let mut vm = Machine::launch(&config).unwrap();
    for _ in 0..5 {
        vm.pause().unwrap();
        vm.resume().unwrap();
    }
    assert_eq!(vm.events_pending(), 4);
    assert_eq!(vm.events_dropped(), 6);
    // The awaited event may have been dropped: say so instead of waiting.
    match vm.event_wait("SHUTDOWN", None, Duration::from_secs(1)) {
        Err(Error::EventQueueFull { limit, dropped }) => {
            assert_eq!((limit, dropped), (4, 6));
        }
        other => panic!("expected EventQueueFull, got {other:?}"),
    }
    // Reported once; the kept events are the oldest ones.
    let kept: Vec<String> = vm.events().into_iter().map(|e| e.name).collect();
    assert_eq!(kept, ["STOP", "RESUME", "STOP", "RESUME"]);
    // Fill it again: a RESET arriving while it is full is dropped, and the next wait says so
    // (once); after that the wait is a plain timeout.
    for _ in 0..3 {
        vm.pause().unwrap();
        vm.resume().unwrap();
    }
    vm.reset().unwrap();
    match vm.event_wait("RESET", None, Duration::from_secs(1)) {
        Err(Error::EventQueueFull { dropped, .. }) => assert_eq!(dropped, 6 + 2 + 1),
        other => panic!("expected EventQueueFull, got {other:?}"),
    }
    let err = vm
        .event_wait("RESET", None, Duration::from_millis(200))
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_qemu_cmdline_argv_launches() {
    let mut cmd = qemu_cmdline::Arch::X86_64
        .profile()
        .command_line(&[qemu_cmdline::Accel::Tcg]);
    cmd.nodefaults();
    let argv = cmd.build().unwrap();
    let mut config = MachineConfig::from_argv(&argv);
    config
        .binary(qemu_machine_tests::qemu_system_x86_64())
        .display_none(true);
    let mut vm = Machine::launch(&config).unwrap();
    // The argv's own accelerator is used, and the library adds none of its own.
    let accels = vm.argv().iter().filter(|a| *a == "-accel").count()
        + vm.argv()
            .iter()
            .filter(|a| a.to_string_lossy().contains("accel="))
            .count();
    assert_eq!(accels, 1, "{:?}", vm.argv());
    let kvm = vm.execute("query-kvm", None).unwrap();
    assert_eq!(kvm["enabled"], json!(false));
    assert_eq!(vm.status().unwrap(), RunState::Running);
    vm.shutdown(Duration::from_secs(10)).unwrap();
}
