//! The cloud image fixture's smoke test: the Debian image, flashed from its compressed form
//! into a bigger disk, boots under a real QEMU (TCG) with OVMF through `qemu_process::Machine`,
//! is set up by cloud-init from the seed the launcher writes (host name, user, password), takes a login
//! on the serial console, and has what `tests/src/cloud_fixture.rs` promises: sudo, DHCP on
//! the first NIC, sshd behind a port forward, the guest agent on its virtio-serial port, a root
//! file system grown to the disk, a machine id of its own, and a clean ACPI power-off.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use qemu_machine_tests::cloud_fixture::{
    login_prompt, CloudFixture, DISK_SIZE, GUEST_AGENT_PORT, PACKAGES,
};
use qemu_machine_tests::support::{scratch, Guest};
use qemu_process::{AccelChoice, Machine, MachineConfig, VmLaunch};
use serde_json::json;

/// The login prompt comes about a minute after QEMU starts on an idle two-core machine; a
/// loaded CI machine can be several times slower.
const BOOT: Duration = Duration::from_secs(600);
const COMMAND: Duration = Duration::from_secs(180);

const HOSTNAME: &str = "qm-cloud";
const USER: &str = "dev";
const PASSWORD: &str = "correct horse: \"battery\"";

#[test]
fn the_cloud_image_boots_takes_a_console_login_and_has_what_it_promises() {
    let fixture = CloudFixture::get().unwrap_or_else(|e| panic!("{e}"));
    for package in PACKAGES {
        assert!(
            fixture.package_version(package).is_some(),
            "{package} is not installed: {:?}",
            fixture.packages.keys()
        );
    }
    let scratch = scratch("cloud-boot");
    let qga_socket = scratch.path().join("qga.sock");
    let disk_size = DISK_SIZE + (1 << 30);
    let vm = VmLaunch::from_json(
        &json!({
            "memory": "1G",
            "uefi": {},
            "disks": [{
                "id": "root",
                "flash_from": fixture.compressed,
                "format": "qcow2",
                "size": disk_size,
                "bootindex": 1,
            }],
            "cloud_init": {"hostname": HOSTNAME, "username": USER, "password": PASSWORD},
            "forwards": [{"name": "ssh", "host_port": 0, "guest_port": 22}],
            "chardevs": [{
                "id": "qga0",
                "backend": {"type": "unix", "path": qga_socket, "server": true},
            }],
            "devices": [
                {"driver": "virtio-serial-pci"},
                {"driver": "virtserialport", "props": {"chardev": "qga0", "name": GUEST_AGENT_PORT}},
            ],
            "no_reboot": true,
        })
        .to_string(),
    )
    .unwrap();
    let mut config = MachineConfig::for_vm(vm);
    config
        .accel(AccelChoice::Tcg)
        .binary(qemu_machine_tests::qemu_system_x86_64())
        .temp_base_dir(scratch.path())
        .qmp_timeout(COMMAND);
    let flashing = Instant::now();
    let vm = Machine::launch(&config).unwrap_or_else(|e| panic!("launching: {e}"));
    println!(
        "cloud image: flashed from {} and launched in {:.1} s",
        fixture.compressed.display(),
        flashing.elapsed().as_secs_f64()
    );
    let mut guest = Guest::new(vm, Instant::now());

    // The prompt shows the host name from the seed: cloud-init ran before the getty.
    guest.expect(&login_prompt(HOSTNAME), BOOT);
    println!(
        "cloud image: QEMU start to the login prompt in {:.1} s (TCG, OVMF)",
        guest.started.elapsed().as_secs_f64()
    );
    guest.send(&format!("{USER}\n"), COMMAND);
    guest.expect("Password: ", COMMAND);
    guest.send(&format!("{PASSWORD}\n"), COMMAND);
    let shell = format!("{USER}@{HOSTNAME}:~$ ");
    guest.expect(&shell, COMMAND);

    // One command line; each answer on a line `QM-key=value`. The end marker is split in the
    // command so that the terminal's echo of the command line does not match it.
    let command = [
        ("ci", "cloud-init status --wait | tail -n 1"),
        ("host", "hostname"),
        ("user", "id -un"),
        ("sum", "echo $((6*7))"),
        ("sudo", "sudo -n id -un"),
        ("kernel", "uname -r"),
        ("ssh", "systemctl is-active ssh"),
        ("qga", "systemctl is-active qemu-guest-agent"),
        (
            "addr",
            "ip -4 -o addr show scope global | grep -o 'inet [0-9.]*'",
        ),
        ("root", "findmnt -n -o SOURCE,FSTYPE /"),
        ("rootsize", "df -B1 --output=size / | tail -n 1 | tr -d ' '"),
        ("machineid", "cat /etc/machine-id"),
        ("failed", "systemctl --failed --plain --no-legend | wc -l"),
        ("rootpw", "sudo -n passwd -S root | cut -d ' ' -f 2"),
    ]
    .iter()
    .map(|(key, expr)| format!("echo \"QM-{key}=$({expr})\""))
    .collect::<Vec<_>>()
    .join("; ");
    guest.send(&format!("{command}; echo QM-E\"\"ND\n"), COMMAND);
    let output = guest.expect("QM-END\r\n", COMMAND);
    let answers: BTreeMap<&str, &str> = output
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("QM-"))
        .filter_map(|l| l.split_once('='))
        .collect();
    let answer = |key: &str| {
        *answers
            .get(key)
            .unwrap_or_else(|| panic!("no answer for {key}: {output}"))
    };
    assert_eq!(answer("ci"), "status: done", "{output}");
    assert_eq!(answer("host"), HOSTNAME);
    assert_eq!(answer("user"), USER);
    assert_eq!(answer("sum"), "42");
    assert_eq!(answer("sudo"), "root");
    assert_eq!(answer("kernel"), fixture.kernel_version);
    assert_eq!(answer("ssh"), "active");
    assert_eq!(answer("qga"), "active");
    // QEMU user networking's DHCP server hands out 10.0.2.15 first.
    assert_eq!(answer("addr"), "inet 10.0.2.15");
    assert!(answer("root").ends_with(" ext4"), "{output}");
    // Grown from 2 GiB to the 3 GiB disk by cloud-init (growpart, resize2fs).
    let root_size: u64 = answer("rootsize").parse().unwrap();
    assert!(
        root_size > DISK_SIZE,
        "root file system not grown: {root_size} bytes"
    );
    let machine_id = answer("machineid");
    assert!(
        machine_id.len() == 32 && machine_id.chars().all(|c| c.is_ascii_hexdigit()),
        "machine id {machine_id:?}"
    );
    assert_eq!(answer("failed"), "0", "failed units: {output}");
    // root has no password: locked (L), so nobody logs in as root with one.
    assert_eq!(answer("rootpw"), "L");

    // sshd answers through the port forward.
    let ssh = guest.vm.forwards()[0].connect_addr();
    let stream = TcpStream::connect(ssh).unwrap();
    stream.set_read_timeout(Some(COMMAND)).unwrap();
    let mut banner = String::new();
    BufReader::new(stream).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("SSH-2.0-OpenSSH_"), "{banner:?}");

    // The guest agent answers on its port.
    let mut qga = UnixStream::connect(&qga_socket).unwrap();
    qga.set_read_timeout(Some(COMMAND)).unwrap();
    qga.write_all(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":4242}}\n")
        .unwrap();
    let mut reply = String::new();
    BufReader::new(qga).read_line(&mut reply).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply, json!({"return": 4242}));

    // The ACPI power button: systemd shuts down and the VM powers off.
    let shutdown = guest
        .vm
        .powerdown(COMMAND)
        .unwrap_or_else(|e| panic!("system_powerdown: {e}"));
    assert_eq!(shutdown.data["reason"], "guest-shutdown", "{shutdown:?}");
    let status = guest.vm.wait(COMMAND).unwrap();
    assert!(status.success(), "{status}");
}

/// The two forms of the image hold the same disk: the compressed one, flashed by the library
/// (zstd, then `qemu-img convert`), compares equal to the qcow2.
#[test]
fn the_compressed_image_and_the_qcow2_hold_the_same_disk() {
    let fixture = CloudFixture::get().unwrap_or_else(|e| panic!("{e}"));
    let scratch = scratch("cloud-flash");
    let flashed = scratch.path().join("flashed.raw");
    let report = qemu_process::image::flash(
        &fixture.compressed,
        &flashed,
        &qemu_cmdline::Format::Raw,
        |_| {},
    )
    .unwrap();
    assert_eq!(report.virtual_size, DISK_SIZE);
    let compare = std::process::Command::new(qemu_machine_tests::qemu_img())
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&flashed)
        .arg(&fixture.qcow2)
        .output()
        .unwrap();
    assert!(
        compare.status.success(),
        "{}{}",
        String::from_utf8_lossy(&compare.stdout),
        String::from_utf8_lossy(&compare.stderr)
    );
    let info = qemu_process::image::QemuImg::default()
        .info(&fixture.qcow2)
        .unwrap();
    assert_eq!(info.virtual_size, DISK_SIZE);
    assert_eq!(info.format, qemu_cmdline::Format::Qcow2);
}
