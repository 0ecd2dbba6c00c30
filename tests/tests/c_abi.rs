//! The C program `tests/c/qm_test.c` compiled with `-Wall -Wextra -Werror -std=c11` against
//! `include/qemumachine.h` and run against a real QEMU: linked to the shared library, then with
//! AddressSanitizer and UndefinedBehaviorSanitizer, then under valgrind, and linked statically
//! against `libqemumachine.a`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use qemu_machine_tests::qga;
use qemu_machine_tests::support::{fixture, process_gone, scratch};
use qemu_machine_tests::{find_program, qemu_system_x86_64, workspace_root, workspace_target_dir};

/// Builds libqemumachine (debug) once per test process and returns the directory holding
/// `libqemumachine.so` (with its soname link) and `libqemumachine.a`.
fn library_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "qemu-ffi", "--locked"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build -p qemu-ffi");
        assert!(status.success(), "cargo build -p qemu-ffi failed");
        let dir = workspace_target_dir().join("debug");
        assert!(
            dir.join("libqemumachine.so").exists(),
            "no libqemumachine.so in {}",
            dir.display()
        );
        // The programs record the library's soname (libqemumachine.so.0.1): give it a link
        // there, as an install does, for the loader to follow through the rpath.
        qemu_machine_tests::clib::link_soname(&dir);
        dir
    })
}

fn cc() -> PathBuf {
    find_program("cc").expect("no C compiler: apt-get install -y gcc libc6-dev")
}

/// Compiles the test program into `out` with extra compiler flags and link arguments.
fn compile(out: &Path, cflags: &[&str], link: &[OsString]) {
    let root = workspace_root();
    let mut cmd = Command::new(cc());
    cmd.args(["-Wall", "-Wextra", "-Werror", "-std=c11", "-g"])
        .args(cflags)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/qm_test.c"))
        .arg("-o")
        .arg(out)
        .args(link);
    let result = cmd.output().expect("run cc");
    assert!(
        result.status.success(),
        "compiling qm_test.c failed ({cmd:?}):\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

fn dynamic_link() -> Vec<OsString> {
    let lib = library_dir();
    let mut rpath = OsString::from("-Wl,-rpath,");
    rpath.push(lib);
    vec!["-L".into(), lib.into(), "-lqemumachine".into(), rpath]
}

/// Runs the program (optionally under a wrapper) with the guest fixture in its environment.
fn run(program: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Output {
    qemu_system_x86_64();
    let fixture = fixture();
    let append = fixture.kernel_cmdline(&[], "");
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    // The fixture with qemu-ga running in it, written beside the program.
    let agent_initrd = qga::guest_initrd_with_agent(&fixture, program.parent().unwrap())
        .unwrap_or_else(|e| panic!("the guest agent's initramfs: {e}"));
    cmd.env("QM_TEST_KERNEL", &fixture.kernel)
        .env("QM_TEST_INITRD", &fixture.initrd)
        .env("QM_TEST_APPEND", append)
        .env("QM_TEST_AGENT_INITRD", &agent_initrd)
        .env(
            "QM_TEST_AGENT_APPEND",
            qga::agent_cmdline(&fixture, &[], ""),
        )
        .env_remove("QEMU_MACHINE_ACCEL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn assert_passed(what: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(", 0 failed"),
        "{what}: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // The guest and QMP checks must really have run, not been skipped.
    assert!(
        stdout.contains("ok   the guest answers") || what.contains("static"),
        "{stdout}"
    );
    assert!(stdout.contains("ok   a STOP event arrives"), "{stdout}");
    // So must the handle checks: stale handles never reach newer ones, frees keep the error.
    for line in [
        "ok   a stale qm_machine_free leaves the newer machine running",
        "ok   qm_machine_free and qm_config_free leave the last error as it was",
        "ok   calls on stale handles are refused (",
        "ok   the kept machine still runs",
    ] {
        assert!(stdout.contains(line), "no `{line}` in\n{stdout}");
    }
    assert!(
        stdout.contains("ok   writing 4 MiB to a paused guest times out"),
        "{stdout}"
    );
    // And the ownership checks: threads, SIGCHLD, forking wrappers.
    for line in [
        "ok   it answers from the main thread for 5 s after its thread exited",
        "ok   kill reaches QEMU too: nothing is left behind",
        "ok   and its exit status (0) is still known",
    ] {
        assert!(stdout.contains(line), "no `{line}` in\n{stdout}");
    }
    // And the rules at the top of the header: the guardian and the process tree, signals,
    // timeouts, strings, threads.
    for line in [
        "ok   the guardian is a child of the program",
        "ok   QEMU is a child of the guardian, not of the program",
        "ok   QEMU did not get it: it answers for 2 s after",
        "ok   execute with -2 is QM_STATUS_INVALID_ARGUMENT",
        "ok   execute with QM_TIMEOUT_DEFAULT of a stopped QEMU times out",
        "ok   event_wait with 0 takes a kept event",
        "ok   a command name that is not UTF-8 is refused",
        "ok   a temp_dir that is not UTF-8 is accepted",
        "ok   execute_oob without oob is QM_STATUS_INVALID_STATE",
        "ok   event_wait with name NULL takes the next event whatever its name (STOP)",
        "ok   a console write to it fails, without SIGPIPE",
        "ok   a call on a handle in use by another thread is QM_STATUS_INVALID_HANDLE (in use)",
        "ok   the progress callback ran on the calling thread",
        "ok   the library installed no signal handler, changed no disposition",
        "ok   no thread of the library is left (it starts none)",
    ] {
        assert!(stdout.contains(line), "no `{line}` in\n{stdout}");
    }
    // QEMUMachine's surface: the qtest machine, monitors, console, logs, events, raw requests.
    for line in [
        "ok   qtest reads the q35 host bridge's vendor and device ids through 0xcf8/0xcfc",
        "ok   qtest drives the CMOS RTC through 0x70/0x71",
        "ok   guest RAM written and read back",
        "ok   a failing qtest line is QM_STATUS_QTEST_ERROR naming the line and QEMU's answer",
        "ok   a line QEMU would abort on is refused before sending",
        "ok   an intercepted IRQ is seen raised, as JSON",
        "ok   the RTC's periodic interrupt arrives while waiting",
        "ok   the console carries the second ISA serial port",
        "ok   shutdown without QMP: SIGTERM, exit status 0",
        "ok   a failing launch without QMP is QM_STATUS_LAUNCH_FAILED with QEMU's output",
        "ok   the QMP servers as QEMU listens: loopback, the port it picked, the unix path",
        "ok   a second client attaches and stops the VM",
        "ok   qm_machine_events_wait takes the first of several events: STOP",
        "ok   qm_machine_next_event takes the next event: RESUME",
        "ok   -monitor null replaces the default monitor",
        "ok   qm_machine_console_pty gives the console's terminal",
        "ok   qm_machine_execute_raw returns the whole reply, with the caller's id",
        "ok   wait_or_kill of a QEMU that does not exit kills it: QM_STATUS_NOT_GRACEFUL",
        "ok   qm_machine_free removes it",
        "ok   the log dir and logs are owner-only",
        "ok   QEMU's log stays after the machine is gone",
    ] {
        assert!(stdout.contains(line), "no `{line}` in\n{stdout}");
    }
    // And the guest agent, unless the guest checks were left out.
    if what.contains("static") {
        return;
    }
    for line in [
        "ok   guest calls on a machine without guest_agent are QM_STATUS_UNSUPPORTED",
        "ok   the guest agent answers a ping",
        "ok   guest_osinfo has the guest's kernel and machine",
        "ok   guest_interfaces lists lo with 127.0.0.1",
        "ok   guest_execute returns the agent's return value as JSON",
        "ok   with the agent's error class",
        "ok   guest_exec gives its stdout as written (a NUL too) with its length",
        "ok   guest_exec gives -1 and the signal",
        "ok   the file came back byte-exact",
        "ok   guest_ping with 0 does not wait for the answer",
        "ok   the next call resynchronizes with the agent",
        "ok   guest_shutdown powerdown (the agent answers nothing on success)",
        "ok   QEMU reports SHUTDOWN from the guest",
        "ok   a guest call after QEMU exited is QM_STATUS_PROCESS_EXITED",
    ] {
        assert!(stdout.contains(line), "no `{line}` in\n{stdout}");
    }
}

#[test]
fn c_program_against_the_shared_library() {
    let dir = scratch("c-abi-shared");
    let exe = dir.path().join("qm_test");
    compile(&exe, &[], &dynamic_link());
    let out = run(&exe, &[], &[]);
    assert_passed("qm_test", &out);
}

#[test]
fn c_program_with_address_and_undefined_behaviour_sanitizers() {
    let dir = scratch("c-abi-asan");
    let exe = dir.path().join("qm_test_asan");
    compile(
        &exe,
        &[
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ],
        &dynamic_link(),
    );
    let out = run(
        &exe,
        &[],
        &[
            (
                "ASAN_OPTIONS",
                "detect_leaks=1:abort_on_error=0:exitcode=86",
            ),
            ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
        ],
    );
    assert_passed("qm_test under ASan+UBSan", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ERROR: AddressSanitizer"), "{stderr}");
    assert!(!stderr.contains("runtime error:"), "{stderr}");
}

#[test]
fn c_program_under_valgrind() {
    let valgrind = find_program("valgrind").expect("valgrind missing: apt-get install -y valgrind");
    let dir = scratch("c-abi-valgrind");
    let exe = dir.path().join("qm_test_vg");
    compile(&exe, &[], &dynamic_link());
    let valgrind = valgrind.to_string_lossy().into_owned();
    let out = run(
        &exe,
        &[
            &valgrind,
            "--error-exitcode=97",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--trace-children=no",
        ],
        // The stale-handle loop does 20000 new/free cycles by default; 2000 under valgrind.
        &[("QM_TEST_HANDLE_CYCLES", "2000")],
    );
    assert_passed("qm_test under valgrind", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    assert!(
        !stderr.contains("definitely lost: ") || stderr.contains("definitely lost: 0 bytes"),
        "{stderr}"
    );
}

#[test]
fn c_program_linked_statically() {
    let dir = scratch("c-abi-static");
    let exe = dir.path().join("qm_test_static");
    let archive = library_dir().join("libqemumachine.a");
    compile(
        &exe,
        &["-static"],
        &[
            archive.into(),
            "-lpthread".into(),
            "-ldl".into(),
            "-lm".into(),
        ],
    );
    let ldd = Command::new("ldd").arg(&exe).output().expect("run ldd");
    let ldd_out = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        ldd_out.contains("not a dynamic executable"),
        "ldd says: {ldd_out}"
    );
    let out = run(&exe, &[], &[("QM_TEST_SKIP_GUEST", "1")]);
    assert_passed("static qm_test", &out);
}

#[test]
fn c_owner_sigkilled_leaves_no_qemu_no_temp_dir_no_forward() {
    use std::io::{BufRead, BufReader};
    let dir = scratch("c-abi-owner");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let exe = dir.path().join("qm_test");
    compile(&exe, &[], &dynamic_link());
    qemu_system_x86_64();
    let mut owner = Command::new(&exe)
        .env("QM_TEST_MODE", "owner")
        .env("QM_TEST_SCRATCH", &scratch)
        .env_remove("QEMU_MACHINE_ACCEL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(owner.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("OWNER "))
        .expect("the owner printed its machines");
    let words: Vec<u32> = line[6..]
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let (pids, port, guardian) = (&words[..2], words[2] as u16, words[3]);
    assert!(pids.iter().all(|&p| !process_gone(p)), "{line}");
    assert!(port > 0, "{line}");
    assert!(guardian > 0 && !process_gone(guardian), "{line}");
    let entries = || std::fs::read_dir(&scratch).unwrap().count();
    assert_eq!(entries(), 2, "one temp dir per machine");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the forward listens");
    owner.kill().unwrap(); // SIGKILL
    owner.wait().unwrap();
    let start = std::time::Instant::now();
    while !(pids.iter().all(|&p| process_gone(p)) && entries() == 0 && process_gone(guardian))
        && start.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let took = start.elapsed();
    assert!(
        pids.iter().all(|&p| process_gone(p)),
        "QEMU still runs after its C owner was SIGKILLed"
    );
    assert_eq!(entries(), 0, "temp dirs left after the owner was SIGKILLed");
    assert!(process_gone(guardian), "the guardian outlived its owner");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    eprintln!("C owner SIGKILLed: QEMUs and temp dirs gone after {took:?}");
}

#[test]
fn a_child_forked_without_exec_holds_the_machines_until_it_exits() {
    use std::io::{BufRead, BufReader};
    let dir = scratch("c-abi-forker");
    let exe = dir.path().join("qm_test");
    compile(&exe, &[], &dynamic_link());
    qemu_system_x86_64();
    let mut owner = Command::new(&exe)
        .env("QM_TEST_MODE", "forker")
        .env_remove("QEMU_MACHINE_ACCEL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = owner.stdin.take().unwrap();
    let line = BufReader::new(owner.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("FORKER "))
        .expect("the owner printed its machine and its child");
    let pids: Vec<u32> = line[7..]
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let (qemu, child) = (pids[0], pids[1]);
    assert!(!process_gone(qemu) && !process_gone(child), "{line}");
    owner.kill().unwrap(); // SIGKILL
    owner.wait().unwrap();
    // The child holds copies of the owner's descriptors to the guardian: to the guardian the
    // owner is not gone yet. (It would have killed QEMU within milliseconds otherwise.)
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        !process_gone(qemu),
        "QEMU was killed although a child forked without exec still runs"
    );
    // The child sees end-of-file on stdin and exits: now the guardian cleans up.
    drop(stdin);
    let start = std::time::Instant::now();
    while !(process_gone(qemu) && process_gone(child))
        && start.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(process_gone(child), "the forked child did not exit");
    assert!(
        process_gone(qemu),
        "QEMU still runs after the forked child exited too"
    );
}

#[test]
fn c_program_reaping_with_waitpid_elsewhere_still_gets_qemus_exit_status() {
    let dir = scratch("c-abi-reaper");
    let exe = dir.path().join("qm_test");
    compile(&exe, &[], &dynamic_link());
    let out = run(&exe, &[], &[("QM_TEST_MODE", "reaper")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains(", 0 failed")
            && stdout.contains("ok   QEMU's exit status (0) is not taken")
            && stdout.contains("ok   the first launch started the guardian, QEMU's parent"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
