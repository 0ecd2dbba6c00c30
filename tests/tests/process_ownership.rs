//! A QEMU belongs to the process that launched it, not to a thread: it survives the exit of the
//! launching thread; it goes (with its temp dirs) when the owning process dies, SIGKILL
//! included; a wrapper that forks QEMU does not leave it behind; and the program's own handling
//! of SIGCHLD (ignored, or `waitpid(-1)` elsewhere) does not hide QEMU's exit.
//!
//! Tests that change process-wide state (signal dispositions) or that must be killed run in a
//! child process: this test binary re-executed with [`HELPER_ENV`] naming the part to play.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qemu_machine_tests::support::{entries, none_config, process_gone, scratch};
use qemu_process::{AccelChoice, Machine, MachineConfig, VmLaunch};

const HELPER_ENV: &str = "QM_TEST_OWNERSHIP_HELPER";
const SCRATCH_ENV: &str = "QM_TEST_OWNERSHIP_SCRATCH";

/// Runs the test named `test` of this binary in a child process with [`HELPER_ENV`] set to
/// `part`, and its stdout piped.
fn helper(test: &str, part: &str, scratch: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, part)
        .env(SCRATCH_ENV, scratch)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// In a helper: writes a line straight to fd 1 (the test harness captures `println!`).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The words after `tag` on the first line of `out` that contains it (the harness may print
/// "test <name> ... " first on the same line).
fn read_tagged(lines: &mut impl Iterator<Item = String>, tag: &str) -> Vec<String> {
    for line in lines {
        if let Some((_, rest)) = line.split_once(tag) {
            return rest.split_whitespace().map(str::to_owned).collect();
        }
    }
    panic!("the helper never printed {tag}");
}

/// Pids of the processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .filter(|&pid| !process_gone(pid))
        .collect()
}

/// Waits (polling, up to `limit`) until `done` holds; returns how long it took.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_machine_outlives_the_thread_that_launched_it() {
    let config = none_config();
    let mut vm = std::thread::spawn(move || Machine::launch(&config).unwrap())
        .join()
        .unwrap();
    // The launching thread is gone. (PR_SET_PDEATHSIG would have killed QEMU by now.)
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(vm.status().unwrap(), qemu_process::RunState::Running);
        rounds += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rounds > 10);
    // And it moves on to yet another thread, which shuts it down.
    let status = std::thread::spawn(move || vm.shutdown(Duration::from_secs(10)).unwrap())
        .join()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// A small VM with a port forward, its temp dir under `base`.
fn forwarding_vm(base: &Path) -> Machine {
    let vm = VmLaunch::from_json(
        r#"{"machine": {"type": "q35"}, "memory": "64M",
            "forwards": [{"name": "ssh", "host_port": 0, "guest_port": 22}]}"#,
    )
    .unwrap();
    let mut options = MachineConfig::for_vm(vm);
    options
        .accel(AccelChoice::Tcg)
        .temp_base_dir(base)
        .binary(qemu_machine_tests::qemu_system_x86_64());
    Machine::launch(&options).unwrap()
}

#[test]
fn the_owner_sigkilled_takes_its_machines_forwards_and_temp_dirs_along() {
    if std::env::var(HELPER_ENV).as_deref() == Ok("owner") {
        let base = std::env::var_os(SCRATCH_ENV).unwrap();
        let mut config = none_config();
        config.temp_base_dir(&base);
        let plain = Machine::launch(&config).unwrap();
        let vm = forwarding_vm(Path::new(&base));
        let port = vm.forwarded_port("ssh").unwrap().port();
        say(&format!(
            "OWNER {} {} {port}",
            plain.pid().unwrap(),
            vm.pid().unwrap()
        ));
        // Block until killed (the test never closes our stdin).
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        return;
    }
    if std::env::var_os(HELPER_ENV).is_some() {
        return; // another helper part: not this test's
    }
    let scratch = scratch("owner-killed");
    let mut owner = helper(
        "the_owner_sigkilled_takes_its_machines_forwards_and_temp_dirs_along",
        "owner",
        scratch.path(),
    );
    let mut lines = BufReader::new(owner.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let words = read_tagged(&mut lines, "OWNER ");
    let pids: Vec<u32> = words[..2].iter().map(|w| w.parse().unwrap()).collect();
    let port: u16 = words[2].parse().unwrap();
    assert!(pids.iter().all(|&p| !process_gone(p)));
    assert_eq!(
        entries(scratch.path()).len(),
        2,
        "{:?}",
        entries(scratch.path())
    );
    TcpStream::connect(("127.0.0.1", port)).expect("the forward listens while the VM runs");
    owner.kill().unwrap(); // SIGKILL: no destructor runs in the owner
    owner.wait().unwrap();
    let took = wait_until(Duration::from_secs(10), || {
        pids.iter().all(|&p| process_gone(p)) && entries(scratch.path()).is_empty()
    });
    assert!(
        took.is_some(),
        "after the owner was SIGKILLed: QEMUs {pids:?} alive: {:?}, temp dirs left: {:?}",
        pids.iter().map(|&p| !process_gone(p)).collect::<Vec<_>>(),
        entries(scratch.path())
    );
    eprintln!(
        "QEMUs and temp dirs gone {:?} after the owner's SIGKILL",
        took.unwrap()
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the forward still listens"
    );
}

/// A config whose QEMU runs under a shell that forks it (and waits), instead of exec'ing it,
/// tagged with a marker in its command line.
fn forking_wrapper_config(marker: &str) -> MachineConfig {
    let mut config = none_config();
    config
        .wrapper(["sh", "-c", "\"$@\"; echo wrapper done; exit $?", "sh"])
        .args(["-name", marker]);
    config
}

#[test]
fn a_wrapper_that_forks_qemu_leaves_nothing_behind() {
    for how in ["kill", "shutdown", "drop"] {
        let marker = format!("qm-forking-wrapper-{how}-{}", std::process::id());
        let mut vm = Machine::launch(&forking_wrapper_config(&marker)).unwrap();
        let sh = vm.pid().unwrap();
        // The wrapper and QEMU, its child, both carry the marker.
        let both = processes_with(&marker);
        assert_eq!(both.len(), 2, "{how}: {both:?}");
        assert!(both.contains(&sh));
        assert_eq!(vm.status().unwrap(), qemu_process::RunState::Running);
        match how {
            "kill" => {
                vm.kill().unwrap();
            }
            "shutdown" => {
                // quit reaches QEMU itself over QMP; the wrapper then exits by itself.
                let status = vm.shutdown(Duration::from_secs(10)).unwrap();
                assert!(status.success(), "{status}");
            }
            _ => drop(vm),
        }
        let left = wait_until(Duration::from_secs(10), || {
            processes_with(&marker).is_empty()
        });
        assert!(
            left.is_some(),
            "{how}: left behind: {:?}",
            processes_with(&marker)
        );
    }
}

#[test]
fn ignoring_sigchld_or_reaping_elsewhere_does_not_hide_qemus_exit() {
    match std::env::var(HELPER_ENV).as_deref() {
        Ok("sigchld-ignored") => {
            // SAFETY: setting a signal disposition; this helper process runs one test.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
            exit_is_seen();
            // qemu-img too: its exit status decides whether an image was made.
            let base = std::env::var_os(SCRATCH_ENV).unwrap();
            let image = Path::new(&base).join("sigchld.qcow2");
            let img = qemu_process::image::QemuImg::default();
            img.create(
                &image,
                &qemu_cmdline::Format::Qcow2,
                qemu_cmdline::Size::mib(1),
            )
            .unwrap();
            assert_eq!(img.info(&image).unwrap().virtual_size, 1 << 20);
            let broken = Path::new(&base).join("broken.qcow2");
            std::fs::write(&broken, b"not an image").unwrap();
            let err = img
                .info_with(&broken, Some(&qemu_cmdline::Format::Qcow2), false)
                .unwrap_err();
            assert!(matches!(err, qemu_process::Error::Image { .. }), "{err:?}");
            say("SIGCHLD-IGNORED ok");
            return;
        }
        Ok("reaper") => {
            // A program that reaps every child it has, from another thread.
            std::thread::spawn(|| loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid status pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
                if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            exit_is_seen();
            say("REAPER ok");
            return;
        }
        Ok(_) => return,
        Err(_) => {}
    }
    let scratch = scratch("sigchld");
    for (part, tag) in [
        ("sigchld-ignored", "SIGCHLD-IGNORED "),
        ("reaper", "REAPER "),
    ] {
        let mut child = helper(
            "ignoring_sigchld_or_reaping_elsewhere_does_not_hide_qemus_exit",
            part,
            scratch.path(),
        );
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success() && out.contains(tag),
            "{part}: {status}\n{out}"
        );
    }
}

/// In a helper: QEMU's exit is seen promptly with its real status, after quit, after a guest
/// (here: QMP) asks it to exit, and after kill.
fn exit_is_seen() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    let status = vm.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(0));
    let mut vm = Machine::launch(&none_config()).unwrap();
    vm.execute("quit", None).unwrap();
    let status = vm.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(0));
    let mut vm = Machine::launch(&none_config()).unwrap();
    let status = vm.kill().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}
