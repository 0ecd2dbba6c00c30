//! Boots the guest fixture under a real QEMU (TCG) with nothing but `std::process::Command`
//! and checks what `tests/src/fixture.rs` promises: the ready line, the serial shell, `qm.run`
//! scripts, module loading, user networking, `poweroff -f` and the ACPI power button.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use qemu_machine_tests::fixture::{
    self, GuestFixture, ERROR_PREFIX, POWER_BUTTON_LINE, PROMPT, READY_LINE, RUN_EXIT_PREFIX,
};
use qemu_machine_tests::support::{fixture, scratch_in, TempDir};

/// Generous bounds: TCG on a loaded 2-core machine can be many times slower than the usual
/// two seconds to the ready line.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A scratch directory under the target dir, removed when dropped.
fn scratch(tag: &str) -> TempDir {
    let target = qemu_machine_tests::workspace_target_dir();
    std::fs::create_dir_all(&target).unwrap();
    scratch_in(&target, &format!("fixture-boot-{tag}"))
}

/// A QEMU running the fixture with its serial console on stdin/stdout. Dropping it kills and
/// reaps QEMU, so a failing test leaves no QEMU behind.
struct Guest {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Receiver<Vec<u8>>,
    /// Everything the console printed so far.
    transcript: String,
    /// How much of `transcript` the test has consumed.
    consumed: usize,
    stderr: Arc<Mutex<Vec<u8>>>,
    started: Instant,
}

impl Guest {
    fn boot(fixture: &GuestFixture, cmdline: &str, extra_args: &[&str]) -> Guest {
        let mut command = Command::new(qemu_machine_tests::qemu_system_x86_64());
        command
            .args([
                "-machine",
                "q35",
                "-accel",
                "tcg",
                "-m",
                "256M",
                "-nodefaults",
            ])
            .args(["-display", "none", "-no-reboot", "-serial", "stdio"])
            .args(fixture.boot_args(cmdline))
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let mut stdout = child.stdout.take().unwrap();
        let (tx, console) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Guest {
            stdin: child.stdin.take(),
            child,
            console,
            transcript: String::new(),
            consumed: 0,
            stderr,
            started,
        }
    }

    /// Panics with everything known about the guest.
    fn fail(&mut self, what: &str) -> ! {
        // Collect what is already there, without waiting.
        while let Ok(chunk) = self.console.try_recv() {
            self.transcript.push_str(&String::from_utf8_lossy(&chunk));
        }
        let stderr = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        panic!(
            "{what} (after {:.1} s)\n--- console ---\n{}\n--- qemu stderr ---\n{stderr}",
            self.started.elapsed().as_secs_f64(),
            self.transcript
        );
    }

    /// Waits until `needle` appears in the console output not consumed yet; returns the text
    /// before it and consumes through it.
    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.transcript[self.consumed..].find(needle) {
                let before = self.transcript[self.consumed..self.consumed + at].to_owned();
                self.consumed += at + needle.len();
                return before;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.console.recv_timeout(left) {
                Ok(chunk) => self.transcript.push_str(&String::from_utf8_lossy(&chunk)),
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {needle:?} within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("console closed (QEMU exited?) before {needle:?}"))
                }
            }
        }
    }

    /// Waits for the ready line and the first prompt; returns the time to the ready line.
    fn wait_ready(&mut self) -> Duration {
        self.expect(&format!("{READY_LINE}\r\n"), BOOT_TIMEOUT);
        let boot = self.started.elapsed();
        self.expect(PROMPT, COMMAND_TIMEOUT);
        boot
    }

    /// Types `command` into the serial shell and returns its output lines (without `\r`).
    fn run(&mut self, command: &str) -> Vec<String> {
        self.send(command);
        let output = self.expect(PROMPT, COMMAND_TIMEOUT);
        output
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect()
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        if let Err(e) = stdin
            .write_all(format!("{command}\n").as_bytes())
            .and_then(|()| stdin.flush())
        {
            self.fail(&format!("writing {command:?} to the console: {e}"));
        }
    }

    /// Waits for QEMU to exit on its own.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => self.fail(&format!("QEMU still running after {EXIT_TIMEOUT:?}")),
                Err(e) => self.fail(&format!("waiting for QEMU: {e}")),
            }
        }
    }

    /// Drains the console to EOF (QEMU has exited) and returns the unconsumed rest.
    fn rest_of_console(&mut self) -> String {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.console.recv_timeout(left) {
                Ok(chunk) => self.transcript.push_str(&String::from_utf8_lossy(&chunk)),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.fail("console still open"),
            }
        }
        self.transcript[self.consumed..].to_owned()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn boots_to_the_shell_answers_and_powers_off() {
    let fixture = fixture();
    let mut guest = Guest::boot(&fixture, &fixture.kernel_cmdline(&[], ""), &[]);
    let boot = guest.wait_ready();
    println!(
        "fixture boot (QEMU start to {READY_LINE}, TCG): {:.2} s",
        boot.as_secs_f64()
    );

    assert_eq!(guest.run("echo $((6*7))"), ["42"]);
    assert_eq!(
        guest.run("uname -r"),
        std::slice::from_ref(&fixture.kernel_version)
    );
    // Several lines, and a failing command's status.
    assert_eq!(
        guest.run("printf 'a\\nb\\n'; false; echo status=$?"),
        ["a", "b", "status=1"]
    );

    guest.send("poweroff -f");
    let status = guest.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "QEMU exit after poweroff -f: {status}"
    );
    let rest = guest.rest_of_console();
    assert!(rest.contains("reboot: Power down"), "{rest:?}");
}

#[test]
fn the_shell_survives_exit_and_ctrl_c() {
    let fixture = fixture();
    let mut guest = Guest::boot(&fixture, &fixture.kernel_cmdline(&[], ""), &[]);
    guest.wait_ready();
    // `exit` ends the shell; init starts a new one with the same prompt.
    guest.send("exit");
    guest.expect(PROMPT, COMMAND_TIMEOUT);
    assert_eq!(guest.run("echo again"), ["again"]);
    // Ctrl-C interrupts a foreground command long before it would end.
    guest.send("sleep 1000; echo slept");
    thread::sleep(Duration::from_millis(500));
    guest.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    guest.stdin.as_mut().unwrap().flush().unwrap();
    let output = guest.expect(PROMPT, COMMAND_TIMEOUT);
    assert!(!output.contains("slept"), "{output:?}");
    assert_eq!(guest.run("echo alive"), ["alive"]);
    // Plain `poweroff` goes through busybox init's clean shutdown.
    guest.send("poweroff");
    assert_eq!(guest.wait_exit().code(), Some(0));
}

/// Reads QMP messages (one JSON object per line) until `pred` matches one.
fn qmp_until(
    reader: &mut impl BufRead,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .expect("QMP read (bounded by a socket timeout)");
        assert!(n > 0, "QMP closed before the expected message");
        let message: serde_json::Value = serde_json::from_str(&line).expect("QMP sends JSON");
        if pred(&message) {
            return message;
        }
    }
}

#[test]
fn the_acpi_power_button_powers_the_guest_off() {
    let fixture = fixture();
    let scratch = scratch("acpi");
    let socket = scratch.path().join("qmp.sock");
    let qmp_arg = format!("unix:{},server=on,wait=off", socket.display());
    let mut guest = Guest::boot(
        &fixture,
        &fixture.kernel_cmdline(&[], ""),
        &["-qmp", &qmp_arg],
    );
    guest.wait_ready();

    let stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    qmp_until(&mut reader, |m| m.get("QMP").is_some());
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .unwrap();
    qmp_until(&mut reader, |m| m.get("return").is_some());
    writer
        .write_all(b"{\"execute\":\"system_powerdown\"}\n")
        .unwrap();
    let shutdown = qmp_until(&mut reader, |m| m["event"] == "SHUTDOWN");
    assert_eq!(shutdown["data"]["guest"], true, "{shutdown}");
    assert_eq!(shutdown["data"]["reason"], "guest-shutdown", "{shutdown}");

    guest.expect(POWER_BUTTON_LINE, COMMAND_TIMEOUT);
    assert_eq!(guest.wait_exit().code(), Some(0));
}

#[test]
fn a_run_script_loads_modules_uses_a_vfat_disk_and_the_network() {
    let fixture = fixture();
    for module in [
        "virtio_blk",
        "vfat",
        "fat",
        "nls_cp437",
        "virtio_net",
        "net_failover",
    ] {
        assert!(
            fixture.has_module(module),
            "{module} missing from {:?}",
            fixture.modules
        );
    }
    let scratch = scratch("run");
    let disk = scratch.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();

    // A host service the guest reaches through QEMU user networking (10.0.2.2 = host).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "request cut short");
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nhost-says-hi\n")
            .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });

    let script = format!(
        "set -e\n\
         mkdosfs /dev/vda >/dev/null\n\
         mount -t vfat /dev/vda /mnt\n\
         echo 'written on vfat' >/mnt/file.txt\n\
         umount /mnt\n\
         mount -t vfat -o ro /dev/vda /mnt\n\
         echo \"read back: $(cat /mnt/file.txt)\"\n\
         ip -4 addr show eth0 | grep -o 'inet [0-9./]*'\n\
         wget -q -O - http://10.0.2.2:{port}/hello\n\
         exit 7\n"
    );
    let cmdline = fixture.kernel_cmdline(
        &["virtio_blk", "vfat"],
        &format!("qm.net=1 {}", fixture::run_param(&script)),
    );
    let drive = format!("file={},format=raw,if=none,id=disk0", disk.display());
    let mut guest = Guest::boot(
        &fixture,
        &cmdline,
        &[
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=disk0",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
        ],
    );
    guest.expect(&format!("{READY_LINE}\r\n"), BOOT_TIMEOUT);
    let output = guest.expect(&format!("{RUN_EXIT_PREFIX}7\r\n"), COMMAND_TIMEOUT);
    let lines: Vec<&str> = output.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(
        lines,
        [
            "read back: written on vfat",
            "inet 10.0.2.15/24",
            "host-says-hi"
        ]
    );
    assert!(server.join().unwrap().starts_with("GET /hello HTTP/1."));
    // After the script the guest powers off by itself.
    assert_eq!(guest.wait_exit().code(), Some(0));
    // The guest really wrote a FAT file system on the host file.
    let image = std::fs::read(&disk).unwrap();
    assert_eq!(&image[510..512], [0x55, 0xAA], "no boot sector signature");
    assert!(image.windows(15).any(|w| w == b"written on vfat"));
}

#[test]
fn an_unknown_module_is_reported_and_the_guest_powers_off() {
    let fixture = fixture();
    assert!(!fixture.has_module("e1000"));
    let mut guest = Guest::boot(&fixture, &fixture.kernel_cmdline(&["e1000"], ""), &[]);
    let before = guest.expect(
        &format!("{ERROR_PREFIX}cannot load module e1000"),
        BOOT_TIMEOUT,
    );
    assert!(!before.contains(READY_LINE), "{before:?}");
    assert_eq!(guest.wait_exit().code(), Some(0));
    assert!(!guest.rest_of_console().contains(READY_LINE));
}

#[test]
fn concurrent_builds_in_a_fresh_cache_make_one_fixture() {
    let built = fixture(); // provides the packages, so this needs no download
    let scratch = scratch("cache");
    let debs = scratch.path().join("debs");
    std::fs::create_dir(&debs).unwrap();
    let source = built.dir.parent().unwrap().join("debs");
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        let target = debs.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    // What an older fixture definition and a killed build leave behind.
    std::fs::create_dir(scratch.path().join("fx-0123456789abcdef")).unwrap();
    std::fs::create_dir_all(scratch.path().join(".build-1-2/half")).unwrap();
    std::fs::create_dir_all(scratch.path().join(".unpack-1-2/boot")).unwrap();
    let cache: &Path = scratch.path();
    let results: Vec<GuestFixture> = thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| GuestFixture::get_in(cache)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("{e}")))
            .collect()
    });
    assert!(results.iter().all(|f| *f == results[0]), "{results:?}");
    let fresh = &results[0];
    assert_eq!(fresh.kernel_version, built.kernel_version);
    assert_eq!(fresh.modules, built.modules);
    assert_eq!(
        fresh.dir.file_name(),
        built.dir.file_name(),
        "same definition, same name"
    );
    // The same inputs give the same bytes.
    assert_eq!(
        std::fs::read(&fresh.initrd).unwrap(),
        std::fs::read(&built.initrd).unwrap()
    );
    assert_eq!(
        std::fs::read(&fresh.kernel).unwrap(),
        std::fs::read(&built.kernel).unwrap()
    );
    // Nothing but the fixture, the packages and the lock file is left: no temporary
    // directories, and no stale fixtures.
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let fx = fresh
        .dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(names, [".lock".to_owned(), "debs".to_owned(), fx]);
}
