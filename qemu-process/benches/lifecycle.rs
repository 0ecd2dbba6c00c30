//! Benchmark: qemu-process against a minimal client with no library, measured in the same run.
//!
//! The baseline does only what is strictly needed: a socketpair, fork/exec of QEMU with the
//! socket inherited, JSON written by hand, replies read up to CRLF with blocking reads. Both
//! run the same QEMU command line (`-machine none -nodefaults -display none -accel tcg` plus the
//! QMP chardev). Rounds alternate between the two so that background load hits both alike, and
//! the median of the rounds is reported.
//!
//! 1. lifecycle: launch → negotiated → query-status → quit → reaped (goal ≤ 1.05× baseline);
//! 2. query-status round trip on one running VM (goal ≤ 1.03×), with the client's own CPU time
//!    per command;
//! 3. peak RSS (VmHWM) of a client process that manages one VM (goal ≤ 4 MiB), measured in a
//!    child process started for the purpose.
//!
//! Run with `cargo bench -p qemu-process --bench lifecycle` (QEMU from `PATH`, or `$QEMU`).

use std::ffi::{CString, OsString};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use qemu_process::{AccelChoice, Machine, MachineConfig};

/// The caller's arguments; both clients also pass `-display none -accel tcg` (the library adds
/// those itself) and the QMP chardev.
const ARGS: [&str; 3] = ["-machine", "none", "-nodefaults"];

fn qemu_binary() -> PathBuf {
    if let Some(q) = std::env::var_os("QEMU") {
        return PathBuf::from(q);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            eprintln!(
                "qemu-system-x86_64 not found: install it with `apt-get install -y qemu-system-x86`"
            );
            std::process::exit(2)
        })
}

// ---------------------------------------------------------------------------------------------
// The baseline: no library.
// ---------------------------------------------------------------------------------------------

struct Baseline {
    fd: RawFd,
    pid: libc::pid_t,
    buf: Vec<u8>,
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn check(ret: libc::c_int, what: &str) -> libc::c_int {
    if ret < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    ret
}

impl Baseline {
    fn launch(qemu: &str) -> Baseline {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        check(
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) },
            "socketpair",
        );
        // SAFETY: fcntl on descriptors we just created.
        check(
            unsafe { libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC) },
            "fcntl",
        );
        let chardev = format!("socket,id=mon,fd={}", fds[1]);
        let mut args: Vec<CString> = vec![cstr(qemu)];
        args.extend(ARGS.iter().map(|a| cstr(a)));
        args.extend([cstr("-display"), cstr("none"), cstr("-accel"), cstr("tcg")]);
        args.extend([
            cstr("-chardev"),
            cstr(&chardev),
            cstr("-mon"),
            cstr("chardev=mon,mode=control"),
        ]);
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let devnull = cstr("/dev/null");
        // SAFETY: open with a valid C string.
        let null = check(
            unsafe { libc::open(devnull.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) },
            "open /dev/null",
        );
        // SAFETY: the child only calls async-signal-safe functions (dup2, execv, _exit) on
        // memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
                libc::execv(argv[0], argv.as_ptr());
                libc::_exit(127);
            }
        }
        check(pid, "fork");
        // SAFETY: closing descriptors we own.
        unsafe {
            libc::close(fds[1]);
            libc::close(null);
        }
        let mut b = Baseline {
            fd: fds[0],
            pid,
            buf: Vec::with_capacity(4096),
        };
        let greeting = b.read_line();
        assert!(greeting.starts_with(b"{\"QMP\""));
        b.command(b"{\"execute\":\"qmp_capabilities\"}\r\n");
        b
    }

    fn read_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..pos].to_vec();
                self.buf.drain(..pos + 2);
                return line;
            }
            let mut chunk = [0u8; 4096];
            // SAFETY: reading into a stack buffer of the given size.
            let n = unsafe { libc::read(self.fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            assert!(n > 0, "QEMU closed the connection");
            self.buf.extend_from_slice(&chunk[..n as usize]);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(self.fd, bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n, bytes.len() as isize);
    }

    /// Sends a command and reads lines until its reply (skipping events).
    fn command(&mut self, json: &[u8]) -> Vec<u8> {
        self.write(json);
        loop {
            let line = self.read_line();
            if line.starts_with(b"{\"return\"") || line.starts_with(b"{\"error\"") {
                return line;
            }
        }
    }

    fn quit(mut self) {
        self.write(b"{\"execute\":\"quit\"}\r\n");
        let mut chunk = [0u8; 4096];
        // Read until EOF, then reap.
        // SAFETY: reading into a stack buffer; waitpid on our child.
        unsafe {
            while libc::read(self.fd, chunk.as_mut_ptr().cast(), chunk.len()) > 0 {}
            libc::close(self.fd);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
        self.fd = -1;
    }
}

// ---------------------------------------------------------------------------------------------
// The library.
// ---------------------------------------------------------------------------------------------

fn config(qemu: &str) -> MachineConfig {
    let mut config = MachineConfig::new(qemu);
    config.args(ARGS).accel(AccelChoice::Tcg);
    config
}

fn library_lifecycle(config: &MachineConfig) {
    let mut vm = Machine::launch(config).unwrap();
    vm.execute("query-status", None).unwrap();
    let status = vm.shutdown(Duration::from_secs(10)).unwrap();
    assert!(status.success());
}

fn baseline_lifecycle(qemu: &str) {
    let mut b = Baseline::launch(qemu);
    b.command(b"{\"execute\":\"query-status\"}\r\n");
    b.quit();
}

// ---------------------------------------------------------------------------------------------
// Measuring.
// ---------------------------------------------------------------------------------------------

fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// In a child process: manage one VM (launch, 1000 commands, events, shutdown) and print the
/// peak RSS.
fn rss_child(mode: &str, qemu: &str) {
    match mode {
        "library" => {
            let mut vm = Machine::launch(&config(qemu)).unwrap();
            for _ in 0..500 {
                vm.execute("stop", None).unwrap();
                vm.execute("cont", None).unwrap();
            }
            assert_eq!(vm.events().len(), 1000);
            vm.shutdown(Duration::from_secs(10)).unwrap();
        }
        _ => {
            let mut b = Baseline::launch(qemu);
            for _ in 0..500 {
                b.command(b"{\"execute\":\"stop\"}\r\n");
                b.command(b"{\"execute\":\"cont\"}\r\n");
            }
            b.quit();
        }
    }
    println!("VmHWM {}", vm_hwm_kib());
}

fn measure_rss(mode: &str) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--rss-child", mode])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let qemu = qemu_binary();
    let qemu = qemu.to_str().unwrap().to_owned();
    if args.len() == 3 && args[1] == "--rss-child" {
        rss_child(args[2].to_str().unwrap(), &qemu);
        return;
    }
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let config = config(&qemu);
    println!("qemu-process benchmark against a no-library baseline ({qemu})");

    // Warm up caches (QEMU binary pages, the library's code) on both sides.
    for _ in 0..3 {
        library_lifecycle(&config);
        baseline_lifecycle(&qemu);
    }

    // 1. Lifecycle.
    let rounds = 15;
    let per_round = 4;
    let (mut lib, mut base) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            library_lifecycle(&config);
        }
        lib.push(t.elapsed().as_secs_f64() / per_round as f64);
        let t = Instant::now();
        for _ in 0..per_round {
            baseline_lifecycle(&qemu);
        }
        base.push(t.elapsed().as_secs_f64() / per_round as f64);
    }
    let (l, b) = (median(lib), median(base));
    println!(
        "lifecycle (launch, negotiate, query-status, quit, reap): library {:.2} ms, baseline {:.2} ms, ratio {:.3} (goal <= 1.05)",
        l * 1e3,
        b * 1e3,
        l / b
    );

    // 2. query-status round trip on one running VM each. QEMU's monitor reads a request one
    //    byte per main-loop iteration, so every request byte costs QEMU a few microseconds.
    //    By default the library sends in-band commands without id, as the minimal baseline
    //    does (replies are matched by order); a second baseline sends `,"id":N` as well, the
    //    bytes the library sends with `MachineConfig::qmp_ids(true)`.
    let mut vm = Machine::launch(&config).unwrap();
    let mut bl = Baseline::launch(&qemu);
    let mut bl_id = Baseline::launch(&qemu);
    let mut next_id = 1000u64; // the library's ids have reached 4 digits by the measurement
    let commands = 2000;
    let rounds = 11;
    let (mut lib, mut base, mut base_id) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lib_cpu, mut base_cpu) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        vm.execute("query-status", None).unwrap();
        bl.command(b"{\"execute\":\"query-status\"}\r\n");
    }
    let mut request = Vec::with_capacity(64);
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), cpu_time());
        for _ in 0..commands {
            vm.execute("query-status", None).unwrap();
        }
        lib.push(t.elapsed().as_secs_f64() / commands as f64);
        lib_cpu.push((cpu_time() - c).as_secs_f64() / commands as f64);
        let (t, c) = (Instant::now(), cpu_time());
        for _ in 0..commands {
            bl.command(b"{\"execute\":\"query-status\"}\r\n");
        }
        base.push(t.elapsed().as_secs_f64() / commands as f64);
        base_cpu.push((cpu_time() - c).as_secs_f64() / commands as f64);
        let t = Instant::now();
        for _ in 0..commands {
            request.clear();
            request.extend_from_slice(b"{\"execute\":\"query-status\",\"id\":");
            request.extend_from_slice(next_id.to_string().as_bytes());
            request.extend_from_slice(b"}\r\n");
            next_id += 1;
            bl_id.command(&request);
        }
        base_id.push(t.elapsed().as_secs_f64() / commands as f64);
    }
    let (l, b, bi) = (median(lib), median(base), median(base_id));
    println!(
        "query-status round trip: library {:.1} us, baseline {:.1} us, ratio {:.3} (goal <= 1.03)",
        l * 1e6,
        b * 1e6,
        l / b
    );
    println!(
        "query-status round trip, baseline sending an id (the library's bytes with qmp_ids(true)): \
         {:.1} us, ratio {:.3}",
        bi * 1e6,
        l / bi
    );
    println!(
        "client CPU time per command: library {:.2} us, baseline {:.2} us",
        median(lib_cpu) * 1e6,
        median(base_cpu) * 1e6
    );
    vm.shutdown(Duration::from_secs(10)).unwrap();
    bl.quit();
    bl_id.quit();

    // 3. Peak RSS of a process managing one VM.
    let (l, b) = (measure_rss("library"), measure_rss("baseline"));
    println!(
        "peak RSS (VmHWM) of a client managing one VM: library {} KiB, baseline {} KiB (goal <= 4096 KiB)",
        l, b
    );
}
