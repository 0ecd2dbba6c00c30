//! QEMUMachine's monitors, logs, events and lifecycle through qemu-process, against a real
//! QEMU 7.2: launching without QMP, QMP servers for a second client, `-monitor null`, the
//! machine's name and log directory, raw requests, the next event, `wait` that kills, and
//! what a forgotten (dropped) machine gets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use qemu_machine_tests::support::{self, none_config, process_exists, process_state, signal};
use qemu_process::{AccelChoice, AttachTarget, Error, Machine, MachineConfig, MonitorAddress};
use serde_json::json;

/// A bound so that a broken test fails instead of hanging; nothing here asserts timing.
const WAIT: Duration = Duration::from_secs(60);

fn launch(config: &MachineConfig) -> Machine {
    Machine::launch(config).unwrap_or_else(|e| panic!("launch: {e}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn without_qmp_a_machine_launches_and_stops_by_sigterm() {
    let mut config = none_config();
    config.qmp(false);
    let argv = config.argv().unwrap();
    assert!(
        !argv.iter().any(|a| a.to_string_lossy().contains("qm-qmp")),
        "{argv:?}"
    );
    let mut vm = launch(&config);
    assert!(vm.is_running());
    assert!(!vm.is_connected());
    for e in [
        vm.execute("query-status", None).unwrap_err(),
        vm.event_wait("STOP", None, Duration::ZERO).unwrap_err(),
        vm.execute_raw(&json!({"execute": "stop"}), WAIT)
            .unwrap_err(),
    ] {
        assert!(
            matches!(&e, Error::Unsupported(m) if m.contains("MachineConfig::qmp(false)")),
            "{e:?}"
        );
    }
    let status = vm.shutdown(WAIT).unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let log = vm.log().unwrap();
    assert!(log.contains("terminating on signal 15"), "{log}");
    assert!(!vm.is_running());
}

#[test]
fn without_qmp_a_failing_launch_reports_qemus_output() {
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "no-such-machine"])
        .accel(AccelChoice::Tcg)
        .qmp(false)
        // Generous, so that even a slow QEMU fails within it; a success would take this long.
        .launch_settle(WAIT)
        .launch_timeout(WAIT);
    match Machine::launch(&config) {
        Err(Error::Launch { status, log, argv }) => {
            assert_eq!(status.code(), Some(1), "{status:?}");
            assert!(log.contains("unsupported machine type"), "{log}");
            assert!(argv.iter().any(|a| a == "no-such-machine"));
        }
        other => panic!("expected a launch failure, got {other:?}"),
    }
}

#[test]
fn without_qmp_a_qemu_that_does_not_obey_sigterm_is_killed_after_the_timeout() {
    let mut config = none_config();
    config.qmp(false);
    let mut vm = launch(&config);
    let pid = vm.pid().unwrap();
    // A stopped process keeps SIGTERM pending: the graceful step cannot work.
    signal(pid, libc::SIGSTOP);
    match vm.shutdown(Duration::from_millis(500)) {
        Err(Error::NotGraceful { status }) => assert_eq!(status.signal(), Some(libc::SIGKILL)),
        other => panic!("expected NotGraceful, got {other:?}"),
    }
    assert!(!process_exists(pid) || process_state(pid) == Some('Z'));
}

#[test]
fn qmp_servers_take_a_second_client_beside_the_librarys_connection() {
    let scratch = support::scratch("qmp-listen");
    let unix = scratch.path().join("vm.qmp");
    let mut config = none_config();
    config
        .qmp_listen("tcp:0".parse().unwrap())
        .qmp_listen(MonitorAddress::Unix(unix.clone()));
    let mut vm = launch(&config);
    // Loopback unless asked otherwise, and the port QEMU picked.
    let [MonitorAddress::Tcp { host, port }, MonitorAddress::Unix(path)] =
        vm.qmp_listen_addresses()
    else {
        panic!("{:?}", vm.qmp_listen_addresses());
    };
    assert_eq!(host, "127.0.0.1");
    assert_ne!(*port, 0);
    assert_eq!(*path, unix);
    let tcp = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port);

    let mut second = Machine::attach(AttachTarget::Tcp(tcp), WAIT).unwrap();
    let mut third = Machine::attach(AttachTarget::Unix(unix.clone()), WAIT).unwrap();
    second.pause().unwrap();
    // Every monitor gets the events; the library's connection is unaffected.
    vm.event_wait("STOP", None, WAIT).unwrap();
    assert_eq!(
        vm.execute("query-status", None).unwrap()["status"],
        "paused"
    );
    third.resume().unwrap();
    vm.event_wait("RESUME", None, WAIT).unwrap();
    // Dropping an attached machine only disconnects.
    drop((second, third));
    assert!(vm.is_running());
    assert_eq!(
        vm.execute("query-status", None).unwrap()["status"],
        "running"
    );

    // A killed QEMU leaves its socket behind; dropping the machine removes it.
    vm.kill().unwrap();
    assert!(std::fs::symlink_metadata(&unix)
        .unwrap()
        .file_type()
        .is_socket());
    drop(vm);
    assert!(!unix.exists());
}

#[test]
fn qmp_can_be_only_at_the_callers_address() {
    let scratch = support::scratch("qmp-instead");
    let unix = scratch.path().join("only.qmp");
    let mut config = none_config();
    config
        .qmp(false)
        .qmp_listen(MonitorAddress::Unix(unix.clone()));
    let mut vm = launch(&config);
    assert!(!vm.is_connected());
    let mut client = Machine::attach(AttachTarget::Unix(unix.clone()), WAIT).unwrap();
    assert_eq!(
        client.execute("query-status", None).unwrap()["status"],
        "running"
    );
    // QEMU stops on quit from that client.
    client.execute("quit", None).unwrap();
    let status = vm.wait(WAIT).unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn settings_that_need_qmp_or_exclude_each_other_are_refused() {
    let mut config = none_config();
    config.qmp(false).qmp_listen("tcp:0".parse().unwrap());
    let e = Machine::launch(&config).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("tcp:127.0.0.1:0") && m.contains("name a port")),
        "{e}"
    );
    let e = MachineConfig::from_json(r#"{"console": false, "console_device": "isa-serial"}"#)
        .unwrap_err();
    assert!(e.to_string().contains("`console` is false"), "{e}");
    let e = MachineConfig::from_json(r#"{"name": "a/b"}"#).unwrap_err();
    assert!(e.to_string().contains("plain file name"), "{e}");
    let e = MachineConfig::from_json(r#"{"qmp_listen": ["udp:1"]}"#).unwrap_err();
    assert!(
        e.to_string().contains("unix:PATH or tcp:[HOST:]PORT"),
        "{e}"
    );
    let e = MachineConfig::from_json(
        r#"{"qmp": false, "vm": {"forwards": [{"host_port": 0, "guest_port": 22}]}}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("port forwards"), "{e}");
    // The JSON form of everything this file sets.
    let text = r#"{"qmp": false, "qmp_listen": ["unix:/tmp/a.qmp", "tcp:[::1]:4444"],
        "monitor_null": true, "console_device": "virtconsole", "console_index": 2,
        "console_pty": true, "qtest": true, "name": "vm1", "log_dir": "/tmp/logs",
        "launch_settle_ms": 250}"#;
    let config = MachineConfig::from_json(text).unwrap();
    assert!(!config.get_qmp() && config.get_qtest() && config.get_console());
    let again = MachineConfig::from_json(&config.to_json().unwrap()).unwrap();
    assert_eq!(again.to_json().unwrap(), config.to_json().unwrap());
    assert!(config.to_json().unwrap().contains("\"tcp:[::1]:4444\""));
}

#[test]
fn monitor_null_replaces_the_default_monitor() {
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    // Without -nodefaults QEMU would add a human monitor of its own.
    config
        .args(["-machine", "none"])
        .accel(AccelChoice::Tcg)
        .monitor_null(true);
    let mut vm = launch(&config);
    let chardevs = vm.execute("query-chardev", None).unwrap();
    let monitor = chardevs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "compat_monitor0")
        .unwrap_or_else(|| panic!("{chardevs}"));
    assert_eq!(monitor["filename"], "null", "{chardevs}");
}

#[test]
fn name_and_log_dir_keep_owner_only_logs_after_the_machine_is_gone() {
    let scratch = support::scratch("log-dir");
    let logs = scratch.path().join("logs");
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        // A pty chardev makes QEMU print a line to its log.
        .args(["-machine", "q35", "-nodefaults", "-chardev", "pty,id=extra"])
        .qtest(true)
        .console(true)
        .name("vm-a")
        .log_dir(&logs)
        .launch_timeout(WAIT)
        .qmp_timeout(WAIT);
    let mut vm = launch(&config);
    assert_eq!(vm.name(), "vm-a");
    assert_eq!(vm.log_dir(), Some(logs.as_path()));
    assert_eq!(vm.log_path(), Some(logs.join("vm-a.log").as_path()));
    assert_eq!(
        vm.console_log_path(),
        Some(logs.join("vm-a-console.log").as_path())
    );
    assert!(vm.pty_paths().iter().any(|(label, _)| label == "extra"));
    let mut q = vm.qtest().unwrap();
    for byte in b"console says hi\n" {
        q.outb(0x3f8, *byte).unwrap();
    }
    vm.console_wait_for(b"hi\n", WAIT).unwrap();
    let temp = vm.temp_dir().unwrap().to_owned();
    vm.shutdown(WAIT).unwrap();
    drop(vm);
    assert!(!temp.exists());
    assert_eq!(mode(&logs), 0o700);
    for (file, text) in [
        ("vm-a.log", "(label extra)"),
        ("vm-a-console.log", "console says hi\n"),
    ] {
        let path = logs.join(file);
        assert_eq!(mode(&path), 0o600, "{file}");
        let kept = std::fs::read_to_string(&path).unwrap();
        assert!(kept.contains(text), "{file}: {kept:?}");
    }

    // A pty console's log is written by QEMU, owner-only too; a failed launch's log stays.
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "q35", "-nodefaults"])
        .qtest(true)
        .console_pty(true)
        .name("vm-b")
        .log_dir(&logs)
        .launch_timeout(WAIT)
        .qmp_timeout(WAIT);
    let mut vm = launch(&config);
    let mut q = vm.qtest().unwrap();
    for byte in b"to nobody\n" {
        q.outb(0x3f8, *byte).unwrap();
    }
    vm.shutdown(WAIT).unwrap();
    let path = logs.join("vm-b-console.log");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "to nobody\n");

    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "no-such-machine"])
        .accel(AccelChoice::Tcg)
        .name("vm-c")
        .log_dir(&logs);
    assert!(matches!(
        Machine::launch(&config),
        Err(Error::Launch { .. })
    ));
    let kept = std::fs::read_to_string(logs.join("vm-c.log")).unwrap();
    assert!(kept.contains("unsupported machine type"), "{kept}");

    // Without a name, the temp dir's; without a log dir, the log goes with the temp dir.
    let vm = launch(&none_config());
    let temp = vm.temp_dir().unwrap().to_owned();
    assert_eq!(vm.name(), temp.file_name().unwrap().to_str().unwrap());
    assert!(vm.name().starts_with("qemu-machine."));
    assert_eq!(vm.log_path(), Some(temp.join("qemu.log").as_path()));
    assert_eq!(vm.log_dir(), None);
}

#[test]
fn raw_requests_get_whole_replies_under_the_librarys_ids() {
    for ids in [false, true] {
        let mut config = none_config();
        config.qmp_ids(ids);
        let mut vm = launch(&config);
        let status = vm
            .execute_raw(&json!({"execute": "query-status"}), WAIT)
            .unwrap();
        assert_eq!(status["return"]["status"], "running", "{status}");
        assert!(status.get("id").is_none(), "{status}");
        // The caller's id comes back, whatever its type.
        let mine = json!({"the": ["caller's", 1]});
        let stop = vm
            .execute_raw(&json!({"execute": "stop", "id": mine}), WAIT)
            .unwrap();
        assert_eq!(stop, json!({"return": {}, "id": mine}));
        // What a typed call never sends: QEMU's error is the reply, not an Err.
        let bad = vm
            .execute_raw(&json!({"execute": "cont", "bogus": 1}), WAIT)
            .unwrap();
        assert_eq!(bad["error"]["class"], "GenericError", "{bad}");
        assert!(
            bad["error"]["desc"].as_str().unwrap().contains("bogus"),
            "{bad}"
        );
        let unknown = vm
            .execute_raw(&json!({"execute": "no-such-command"}), WAIT)
            .unwrap();
        assert_eq!(unknown["error"]["class"], "CommandNotFound", "{unknown}");
        // A reply the caller stopped waiting for does not answer the next command (a stopped
        // QEMU cannot answer in time).
        let pid = vm.pid().unwrap();
        signal(pid, libc::SIGSTOP);
        let e = vm
            .execute_raw(
                &json!({"execute": "query-name"}),
                Duration::from_millis(200),
            )
            .unwrap_err();
        signal(pid, libc::SIGCONT);
        assert!(e.is_timeout(), "{e}");
        assert_eq!(vm.status().unwrap(), qemu_process::RunState::Paused);
        let e = vm
            .execute_raw(&json!(["execute", "stop"]), WAIT)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        let quit = vm.execute_raw(&json!({"execute": "quit"}), WAIT).unwrap();
        assert_eq!(quit, json!({"return": {}}));
        assert!(vm.wait(WAIT).unwrap().success());
    }
}

#[test]
fn next_event_takes_the_oldest_kept_one_or_the_next_to_come() {
    let mut vm = launch(&none_config());
    assert!(vm.next_event(Duration::ZERO).unwrap().is_none());
    vm.pause().unwrap();
    vm.resume().unwrap();
    assert_eq!(vm.next_event(WAIT).unwrap().unwrap().name, "STOP");
    assert_eq!(vm.next_event(WAIT).unwrap().unwrap().name, "RESUME");
    assert!(vm.next_event(Duration::from_millis(100)).unwrap().is_none());
    vm.execute("quit", None).unwrap();
    let shutdown = vm.next_event(WAIT).unwrap().unwrap();
    assert_eq!(shutdown.name, "SHUTDOWN");
    let e = vm.next_event(WAIT).unwrap_err();
    assert!(matches!(e, Error::Exited(_) | Error::Disconnected), "{e:?}");
}

#[test]
fn wait_or_kill_returns_the_exit_or_kills_after_the_timeout() {
    let mut vm = launch(&none_config());
    vm.execute("quit", None).unwrap();
    assert!(vm.wait_or_kill(WAIT).unwrap().success());

    let mut vm = launch(&none_config());
    let pid = vm.pid().unwrap();
    // Nothing makes this QEMU exit by itself.
    match vm.wait_or_kill(Duration::from_millis(300)) {
        Err(Error::NotGraceful { status }) => assert_eq!(status.signal(), Some(libc::SIGKILL)),
        other => panic!("expected NotGraceful, got {other:?}"),
    }
    assert!(!vm.is_running());
    assert!(!process_exists(pid) || process_state(pid) == Some('Z'));
    // The plain wait leaves QEMU running on timeout.
    let mut vm = launch(&none_config());
    assert!(vm
        .wait(Duration::from_millis(100))
        .unwrap_err()
        .is_timeout());
    assert!(vm.is_running());
}

#[test]
fn a_forgotten_machine_is_killed_not_shut_down() {
    let scratch = support::scratch("forgotten");
    // A wrapper that reports QEMU's exit in the log, unless it is killed with QEMU.
    let config = |name: &str| {
        let mut config = none_config();
        config
            .wrapper(["sh", "-c", "\"$@\"; echo wrapper-saw-exit=$?", "sh"])
            .name(name)
            .log_dir(scratch.path());
        config
    };
    let vm = launch(&config("dropped"));
    let pid = vm.pid().unwrap();
    drop(vm);
    assert!(!process_exists(pid), "state {:?}", process_state(pid));
    let log = std::fs::read_to_string(scratch.path().join("dropped.log")).unwrap();
    assert!(!log.contains("wrapper-saw-exit"), "{log}");

    let mut vm = launch(&config("shut-down"));
    vm.shutdown(WAIT).unwrap();
    drop(vm);
    let log = std::fs::read_to_string(scratch.path().join("shut-down.log")).unwrap();
    assert!(log.contains("wrapper-saw-exit=0"), "{log}");
}

#[test]
fn a_virtconsole_carries_the_console_as_the_guests_hvc0() {
    use qemu_machine_tests::fixture::{run_param, GuestFixture, ERROR_PREFIX};
    let fixture = GuestFixture::get().unwrap_or_else(|e| panic!("guest fixture: {e}"));
    let scratch = support::scratch("virtconsole");
    // ttyS0 (the fixture's kernel console) goes to a file; the library's console is hvc0.
    let serial = scratch.path().join("ttyS0.log");
    let cmdline = fixture.kernel_cmdline(
        &["virtio_console"],
        &run_param("echo QM-ON-HVC0 > /dev/hvc0; poweroff -f"),
    );
    let spec = json!({
        "memory": "256M",
        "kernel": fixture.kernel,
        "initrd": fixture.initrd,
        "append": cmdline,
        "serial": [{"type": "file", "path": serial}],
    });
    let mut config =
        MachineConfig::for_vm(qemu_process::VmLaunch::from_json(&spec.to_string()).unwrap());
    config
        .accel(AccelChoice::Tcg)
        .console_device(Some("virtconsole"), 0)
        .launch_timeout(WAIT)
        .qmp_timeout(WAIT);
    let mut vm = launch(&config);
    let joined = qemu_cmdline::shell_quote(vm.argv());
    assert!(
        joined.contains(
            "-device virtio-serial-pci,id=qm-console-vser \
             -device virtconsole,chardev=qm-console,bus=qm-console-vser.0"
        ),
        "{joined}"
    );
    let boot = Duration::from_secs(120);
    match vm.console_wait_for(b"QM-ON-HVC0", boot) {
        Ok(_) => {}
        Err(e) => panic!(
            "{e}; ttyS0: {}",
            std::fs::read_to_string(&serial).unwrap_or_default()
        ),
    }
    let status = vm.wait(boot).unwrap();
    assert!(status.success(), "{status:?}");
    let ttys0 = std::fs::read_to_string(&serial).unwrap();
    assert!(!ttys0.contains(ERROR_PREFIX), "{ttys0}");
    assert!(!ttys0.contains("QM-ON-HVC0"), "{ttys0}");
}

#[test]
fn a_machine_set_launches_machines_without_qmp_beside_others() {
    let mut without = none_config();
    without.qmp(false);
    let configs = [without, none_config()];
    let mut set = qemu_process::MachineSet::launch(&configs, WAIT).unwrap();
    assert!(!set.get(0).unwrap().is_connected());
    assert!(set.get_mut(0).unwrap().is_running());
    assert!(set.get(1).unwrap().is_connected());
    for result in set.shutdown_all(WAIT) {
        assert!(result.unwrap().success());
    }
}
