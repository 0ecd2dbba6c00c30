//! qemu-cmdline against a real QEMU 7.2: disks, a serial log and a NIC at paths full of commas,
//! spaces, `=` and non-ASCII characters, in keyval and in JSON syntax, reported back by QMP with
//! the exact file names; the x86_64 (q35, also with UEFI) and aarch64 (virt) profiles start
//! paused and answer QMP; qemu-img runs the argv the crate builds.
//!
//! The QMP exchange here is deliberately tiny and local to this file (a blocking unix socket
//! with a read timeout); the project's real client lives in qemu-process.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qemu_cmdline::{
    Accel, Arch, Argv, CacheMode, Chardev, Disk, DiskInterface, Format, ImgCommand, ImgCreate,
    ImgInfo, Monitor, Nic, PortForward, Size,
};
use qemu_machine_tests::support::scratch;
use qemu_machine_tests::{find_program, qemu_img, qemu_system_x86_64};
use serde_json::{json, Value};

/// Generous: the machine is shared and slow at times; nothing here is a timing assertion.
const DEADLINE: Duration = Duration::from_secs(60);

/// A directory name and file names with everything that breaks naive command lines.
const WEIRD_DIR: &str = "dir, with = and ü";
const WEIRD_DISK: &str = "disk,1 = é ☃.qcow2";

/// A running QEMU with a QMP connection; killed and reaped on drop, also when a test fails.
struct Qemu {
    child: Child,
    log: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qemu {
    /// Starts `argv` (which must put a QMP server on `qmp_sock`) and negotiates capabilities.
    fn launch(argv: &Argv, qmp_sock: &Path, log: PathBuf) -> Qemu {
        let out = File::create(&log).unwrap();
        let child = Command::new(&argv.program)
            .args(&argv.args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {argv}: {e}"));
        let mut child = Some(child);
        let start = Instant::now();
        let stream = loop {
            let c = child.as_mut().unwrap();
            if let Some(status) = c.try_wait().unwrap() {
                panic!(
                    "QEMU exited with {status} before QMP was up\nargv: {argv}\nlog:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(s) = UnixStream::connect(qmp_sock) {
                break s;
            }
            if start.elapsed() > DEADLINE {
                let _ = c.kill();
                let _ = c.wait();
                panic!("no QMP socket after {DEADLINE:?}\nargv: {argv}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut qemu = Qemu {
            child: child.take().unwrap(),
            log,
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = qemu.read_message();
        assert!(
            greeting["QMP"]["version"]["qemu"]["major"].is_u64(),
            "not a QMP greeting: {greeting}"
        );
        qemu.execute("qmp_capabilities", json!({}));
        qemu
    }

    fn read_message(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap_or_else(|e| {
            panic!(
                "reading QMP: {e}\nlog:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            )
        });
        assert!(
            n > 0,
            "QMP closed; log:\n{}",
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad QMP line {line:?}: {e}"))
    }

    /// Runs a command and returns its `return` value; events in between are skipped.
    fn execute(&mut self, command: &str, arguments: Value) -> Value {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}").unwrap();
        loop {
            let reply = self.read_message();
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(r) = reply.get("return") {
                return r.clone();
            }
            panic!("{command} failed: {reply}");
        }
    }

    /// QMP `quit`, then waits for a clean exit.
    fn quit(mut self) {
        if let Err(e) = writeln!(self.writer, "{}", json!({"execute": "quit"})) {
            panic!(
                "sending quit: {e}; QEMU status {:?}\nlog:\n{}",
                self.child.try_wait(),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "QEMU exited with {status} after quit");
                return;
            }
            assert!(start.elapsed() < DEADLINE, "QEMU did not exit after quit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn qemu_system_aarch64() -> PathBuf {
    find_program("qemu-system-aarch64").unwrap_or_else(|| {
        panic!(
            "qemu-system-aarch64 not found: install it with `apt-get install -y qemu-system-arm`"
        )
    })
}

/// Runs a qemu-img argv built by the crate and returns its stdout.
fn run_img(argv: &Argv) -> String {
    let out = Command::new(&argv.program)
        .args(&argv.args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv}: {e}"));
    assert!(
        out.status.success(),
        "{argv} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A free TCP port on loopback address `addr`, right now. Each test uses its own address in
/// 127.0.0.0/8, so tests running in parallel never pick the same socket.
fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node<'a>(nodes: &'a Value, name: &str) -> &'a Value {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == json!(name))
        .unwrap_or_else(|| panic!("no block node {name} in {nodes:#}"))
}

fn weird_disks_start_and_report_their_exact_file_names(json_syntax: bool) {
    let img = qemu_img();
    qemu_system_x86_64();
    let dir = scratch(if json_syntax {
        "cmdline-json"
    } else {
        "cmdline-keyval"
    });
    let weird = dir.path().join(WEIRD_DIR);
    fs::create_dir(&weird).unwrap();
    let disk0 = weird.join(WEIRD_DISK);
    let disk1 = weird.join("raw, read-only=on ñ.img");
    let base = weird.join("base,backing=x ø.raw");
    let overlay = weird.join("overlay, ☃.qcow2");
    let serial_log = weird.join("serial, path=ß.log");

    // The images, made by the qemu-img argv the crate builds.
    run_img(
        &ImgCreate::new(&disk0, Format::Qcow2)
            .size(Size::mib(8))
            .build_with(&img)
            .unwrap(),
    );
    run_img(
        &ImgCreate::new(&disk1, Format::Raw)
            .size(Size::mib(1))
            .build_with(&img)
            .unwrap(),
    );
    run_img(
        &ImgCreate::new(&base, Format::Raw)
            .size(Size::mib(2))
            .build_with(&img)
            .unwrap(),
    );
    let snap = Disk::new("disk2", &base)
        .snapshot(&overlay)
        .interface(DiskInterface::Nvme);
    run_img(&snap.overlay_create().unwrap().build_with(&img).unwrap());
    let info: Value = serde_json::from_str(&run_img(
        &ImgInfo::new(&overlay)
            .format(Format::Qcow2)
            .build_with(&img)
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(info["virtual-size"], json!(2 << 20), "{info:#}");
    assert_eq!(
        info["backing-filename"],
        json!(base.to_str().unwrap()),
        "{info:#}"
    );

    let qmp_sock = dir.path().join("qmp.sock");
    let host = Ipv4Addr::new(127, 0, 0, if json_syntax { 3 } else { 2 });
    let port = free_port(host);
    let mut cmd = Arch::X86_64.profile().command_line(&[Accel::Tcg]);
    cmd.json_syntax(json_syntax)
        .memory(Size::mib(64))
        .name("vm,1 ü")
        .nodefaults()
        .paused()
        .display(qemu_cmdline::Display::None)
        .chardev(Chardev::unix_server("qmp", &qmp_sock, false))
        .monitor(Monitor::qmp("qmp"))
        .chardev(Chardev::file("con", &serial_log))
        .serial("con")
        .disk(
            Disk::new("disk0", &disk0)
                .format(Format::Qcow2)
                .bootindex(1)
                .cache(CacheMode::Writeback),
        )
        .disk(
            Disk::new("disk1", &disk1)
                .interface(DiskInterface::Scsi)
                .read_only(true),
        )
        .disk(snap)
        .nic(Nic::user("net0").forward(PortForward::tcp(port, 22).host_addr(host).name("ssh")));
    let argv = cmd.build().unwrap();
    let s = argv.to_string();
    if json_syntax {
        assert!(s.contains(r#""filename":"#), "{s}");
    } else {
        assert!(s.contains("filename=") && s.contains(",,"), "{s}");
    }
    let mut qemu = Qemu::launch(&argv, &qmp_sock, dir.path().join("qemu.log"));

    let path = |p: &Path| json!(p.to_str().unwrap());
    let nodes = qemu.execute("query-named-block-nodes", json!({}));
    assert_eq!(node(&nodes, "disk0-file")["file"], path(&disk0));
    assert_eq!(node(&nodes, "disk0")["drv"], json!("qcow2"));
    assert_eq!(node(&nodes, "disk0")["file"], path(&disk0));
    assert_eq!(node(&nodes, "disk1")["file"], path(&disk1));
    assert_eq!(node(&nodes, "disk1")["ro"], json!(true));
    assert_eq!(node(&nodes, "disk2-base")["file"], path(&base));
    assert_eq!(node(&nodes, "disk2-base")["ro"], json!(true));
    assert_eq!(node(&nodes, "disk2")["file"], path(&overlay));
    assert_eq!(node(&nodes, "disk2")["ro"], json!(false));
    assert_eq!(node(&nodes, "disk2")["backing_file_depth"], json!(1));

    // query-block: each device has its disk attached under the top node.
    let blocks = qemu.execute("query-block", json!({}));
    let attached: Vec<(String, Value)> = blocks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| {
            let inserted = b.get("inserted")?;
            Some((b["qdev"].as_str()?.to_string(), inserted["file"].clone()))
        })
        .collect();
    for (id, file) in [("disk0", &disk0), ("disk1", &disk1), ("disk2", &overlay)] {
        assert!(
            attached
                .iter()
                .any(|(qdev, f)| qdev.contains(id) && *f == path(file)),
            "{id} not attached with {file:?}: {attached:?}"
        );
    }

    // The name, the serial log (QemuOpts escaping) and the port forward (JSON hostfwd list).
    assert_eq!(
        qemu.execute("query-name", json!({}))["name"],
        json!("vm,1 ü")
    );
    assert!(serial_log.exists(), "QEMU did not create {serial_log:?}");
    let usernet = qemu.execute(
        "human-monitor-command",
        json!({"command-line": "info usernet"}),
    );
    let usernet = usernet.as_str().unwrap();
    assert!(
        usernet.contains("HOST_FORWARD") && usernet.contains(&format!("{host} {port}")),
        "{usernet}"
    );
    TcpStream::connect((host, port)).expect("the forward listens");
    qemu.quit();
}

#[test]
fn weird_paths_in_keyval_syntax() {
    weird_disks_start_and_report_their_exact_file_names(false);
}

#[test]
fn weird_paths_in_json_syntax() {
    weird_disks_start_and_report_their_exact_file_names(true);
}

#[test]
fn naive_string_joining_fails_where_the_builder_works() {
    // The bug class this crate removes, shown against the real QEMU: the same path joined by
    // hand makes QEMU exit with an error instead of opening the file.
    let img = qemu_img();
    let qemu = qemu_system_x86_64();
    let dir = scratch("cmdline-naive");
    let disk = dir.path().join("a,b.raw");
    run_img(
        &ImgCreate::new(&disk, Format::Raw)
            .size(Size::mib(1))
            .build_with(&img)
            .unwrap(),
    );
    let naive = format!("driver=file,node-name=f,filename={}", disk.display());
    let out = Command::new(&qemu)
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-blockdev",
        ])
        .arg(&naive)
        .args(["-qmp", "stdio"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("b.raw"), "{stderr}");
}

#[test]
fn x86_64_q35_profile_starts_paused_and_answers_qmp() {
    qemu_system_x86_64();
    let dir = scratch("cmdline-x86");
    let qmp_sock = dir.path().join("qmp.sock");
    let mut cmd = Arch::X86_64.profile().command_line(&[Accel::Tcg]);
    cmd.memory(Size::mib(64))
        .nodefaults()
        .paused()
        .display(qemu_cmdline::Display::None)
        .chardev(Chardev::unix_server("qmp", &qmp_sock, false))
        .monitor(Monitor::qmp("qmp"));
    let argv = cmd.build().unwrap();
    assert_eq!(argv.program, "qemu-system-x86_64");
    let mut qemu = Qemu::launch(&argv, &qmp_sock, dir.path().join("qemu.log"));
    let status = qemu.execute("query-status", json!({}));
    assert_eq!(status["running"], json!(false), "{status}");
    assert_eq!(status["status"], json!("prelaunch"), "{status}");
    assert_eq!(
        qemu.execute("query-target", json!({}))["arch"],
        json!("x86_64")
    );
    let machine = qemu.execute("qom-get", json!({"path": "/machine", "property": "type"}));
    assert!(machine.as_str().unwrap().contains("q35"), "{machine}");
    qemu.quit();
}

#[test]
fn x86_64_q35_profile_with_uefi_pflash() {
    qemu_system_x86_64();
    let profile = Arch::X86_64.profile();
    let fw = profile
        .uefi
        .iter()
        .find(|p| Path::new(p.code).exists() && Path::new(p.vars).exists())
        .unwrap_or_else(|| panic!("no OVMF firmware: install it with `apt-get install -y ovmf`"));
    let dir = scratch("cmdline-uefi");
    let vars = dir.path().join("VARS, of vm=1.fd");
    fs::copy(fw.vars, &vars).unwrap();
    let qmp_sock = dir.path().join("qmp.sock");
    let mut cmd = profile.command_line(&[Accel::Tcg]);
    cmd.memory(Size::mib(128))
        .nodefaults()
        .paused()
        .display(qemu_cmdline::Display::None)
        .uefi(fw.code, &vars)
        .chardev(Chardev::unix_server("qmp", &qmp_sock, false))
        .monitor(Monitor::qmp("qmp"));
    let mut qemu = Qemu::launch(
        &cmd.build().unwrap(),
        &qmp_sock,
        dir.path().join("qemu.log"),
    );
    let blocks = qemu.execute("query-block", json!({}));
    let flash = |n: &str| {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["qdev"].as_str().is_some_and(|q| q.ends_with(n)))
            .unwrap_or_else(|| panic!("no {n} in {blocks:#}"))["inserted"]
            .clone()
    };
    let code = flash("system.flash0");
    assert_eq!(code["node-name"], json!("uefi-code"));
    assert_eq!(code["ro"], json!(true));
    assert_eq!(code["file"], json!(fw.code));
    let vars_node = flash("system.flash1");
    assert_eq!(vars_node["node-name"], json!("uefi-vars"));
    assert_eq!(vars_node["ro"], json!(false));
    assert_eq!(vars_node["file"], json!(vars.to_str().unwrap()));
    qemu.quit();
}

#[test]
fn aarch64_virt_profile_starts_paused_and_answers_qmp() {
    qemu_system_aarch64();
    let dir = scratch("cmdline-aarch64");
    let qmp_sock = dir.path().join("qmp.sock");
    let disk = dir.path().join("root, arm=ü.raw");
    run_img(
        &ImgCreate::new(&disk, Format::Raw)
            .size(Size::mib(1))
            .build_with(qemu_img())
            .unwrap(),
    );
    let profile = Arch::Aarch64.profile();
    let mut cmd = profile.command_line(&[Accel::Tcg]);
    cmd.memory(Size::mib(128))
        .nodefaults()
        .paused()
        .display(qemu_cmdline::Display::None)
        .disk(Disk::new("root", &disk))
        .chardev(Chardev::unix_server("qmp", &qmp_sock, false))
        .monitor(Monitor::qmp("qmp"));
    let argv = cmd.build().unwrap();
    assert_eq!(argv.program, "qemu-system-aarch64");
    let mut qemu = Qemu::launch(&argv, &qmp_sock, dir.path().join("qemu.log"));
    let status = qemu.execute("query-status", json!({}));
    assert_eq!(status["status"], json!("prelaunch"), "{status}");
    assert_eq!(
        qemu.execute("query-target", json!({}))["arch"],
        json!("aarch64")
    );
    let machine = qemu.execute("qom-get", json!({"path": "/machine", "property": "type"}));
    assert!(machine.as_str().unwrap().starts_with("virt"), "{machine}");
    let cpus = qemu.execute("query-cpus-fast", json!({}));
    let cpu_path = cpus[0]["qom-path"].as_str().unwrap().to_string();
    let cpu_type = qemu.execute("qom-get", json!({"path": cpu_path, "property": "type"}));
    assert_eq!(
        cpu_type,
        json!(format!("{}-arm-cpu", profile.tcg_cpu.unwrap()))
    );
    let nodes = qemu.execute("query-named-block-nodes", json!({}));
    assert_eq!(node(&nodes, "root")["file"], json!(disk.to_str().unwrap()));
    qemu.quit();
}

#[test]
fn qemu_img_info_reads_a_weird_path() {
    let img = qemu_img();
    let dir = scratch("cmdline-img");
    let weird = dir.path().join(WEIRD_DIR);
    fs::create_dir(&weird).unwrap();
    let path = weird.join(WEIRD_DISK);
    let create = ImgCreate::new(&path, Format::Qcow2)
        .size(Size::parse("1.5M").unwrap())
        .option("cluster_size", 65536u32)
        .build_with(&img)
        .unwrap();
    run_img(&create);
    let info: Value = serde_json::from_str(&run_img(
        &ImgInfo::new(&path)
            .format(Format::Qcow2)
            .build_with(&img)
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(info["filename"], json!(path.to_str().unwrap()));
    assert_eq!(info["format"], json!("qcow2"));
    assert_eq!(info["virtual-size"], json!(1536 * 1024));
    assert_eq!(info["cluster-size"], json!(65536));
    // A relative path that looks like a protocol is protected with ./ and still found.
    let odd: OsString = "nbd:x,1.raw".into();
    run_img(
        &ImgCreate::new(dir.path().join(&odd), Format::Raw)
            .size(Size::kib(64))
            .build_with(&img)
            .unwrap(),
    );
    let out = Command::new(&img)
        .current_dir(dir.path())
        .args(ImgInfo::new(&odd).format(Format::Raw).args().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["virtual-size"], json!(65536));
}
