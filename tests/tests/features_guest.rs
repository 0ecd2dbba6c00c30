//! VM features seen from inside the guest fixture: a flashed disk, the cloud-init seed, and
//! port forwards to a guest server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use qemu_cmdline::{DiskSpec, Format, PortForward, Size};
use qemu_machine_tests::support::{
    entries, guest_spec, launch, options, scratch, shell, wait_ready, TempDir,
};
use qemu_process::cloudinit::CloudInitSpec;
use qemu_process::{DiskLaunch, DriveKind, Error, Machine as Vm, VmLaunch};

const MIB: usize = 1 << 20;

/// A raw image of `size` bytes with `marker` at 3 MiB (sector 6144), compressed by `program`.
fn compressed_image(
    dir: &TempDir,
    name: &str,
    size: usize,
    marker: &str,
    program: &str,
) -> std::path::PathBuf {
    let raw = dir.path().join(format!("{name}.raw"));
    let mut data = vec![0u8; size];
    data[3 * MIB..3 * MIB + marker.len()].copy_from_slice(marker.as_bytes());
    std::fs::write(&raw, &data).unwrap();
    let out = Command::new(program)
        .arg("-c")
        .arg(&raw)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install -y gzip xz-utils)"));
    assert!(out.status.success(), "{out:?}");
    let path = dir.path().join(format!("{name}.raw.{program}"));
    std::fs::write(&path, out.stdout).unwrap();
    std::fs::remove_file(&raw).unwrap();
    path
}

fn read_marker(vm: &mut Vm) -> String {
    shell(
        vm,
        "dd if=/dev/vda bs=512 skip=6144 count=1 2>/dev/null | head -c 40; echo",
    )
}

#[test]
fn flashed_disk_is_read_by_the_guest_and_reflash_needs_the_vm_stopped() {
    let s = scratch("guest-flash");
    let first = format!("QM-MARKER-ONE-{}", std::process::id());
    let second = format!("QM-MARKER-TWO-{}", std::process::id());
    let gz = compressed_image(&s, "one", 8 * MIB, &first, "gzip");
    let xz = compressed_image(&s, "two", 8 * MIB, &second, "xz");

    // A comma and a space in the path: escaped on the way to QEMU.
    let disk_path = s.path().join("data, 1.raw");
    let mut spec = VmLaunch::new(guest_spec(&["virtio_blk"], ""));
    let mut disk = DiskSpec::new(&disk_path);
    disk.id = Some("data".into());
    disk.format = Some(Format::Raw);
    spec.spec.disks.push(disk);
    spec.disks.push(DiskLaunch {
        size: Some(Size::mib(32)),
        flash_from: Some(gz.clone()),
    });

    let mut vm = launch(spec, &options(s.path())).unwrap();
    wait_ready(&mut vm);
    let out = read_marker(&mut vm);
    assert!(out.contains(&first), "{out}");
    // Flashed, then grown to the disk's size.
    let out = shell(&mut vm, "cat /sys/block/vda/size");
    assert!(out.contains(&(32 * MIB / 512).to_string()), "{out}");

    // A flash onto the running VM is refused and changes nothing.
    let e = vm.flash("data", &xz, |_| {}).unwrap_err();
    assert!(matches!(e, Error::VmRunning { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("flashing \"data\" is refused while the VM is running"),
        "{e}"
    );
    let e = vm
        .dump("data", &s.path().join("x.raw"), None, |_| {})
        .unwrap_err();
    assert!(matches!(e, Error::VmRunning { .. }), "{e:?}");

    vm.powerdown(Duration::from_secs(60)).unwrap();
    vm.wait(Duration::from_secs(30)).unwrap();
    // Unknown drives are named with the ones that exist.
    let e = vm.flash("rooot", &xz, |_| {}).unwrap_err();
    assert!(
        e.to_string()
            .contains("no drive named \"rooot\"; its drives are: data"),
        "{e}"
    );

    let mut seen = Vec::new();
    let report = vm.flash("data", &xz, |p| seen.push(p)).unwrap();
    assert_eq!(report.virtual_size, 8 * MIB as u64);
    assert_eq!(*seen.last().unwrap(), 1.0);
    let drive = &vm.drives()[0];
    assert_eq!((drive.name.as_str(), drive.kind), ("data", DriveKind::Disk));
    assert_eq!(
        qemu_process::image::info(&disk_path).unwrap().virtual_size,
        32 * MIB as u64
    );
    vm.relaunch().unwrap();
    wait_ready(&mut vm);
    let out = read_marker(&mut vm);
    assert!(out.contains(&second), "{out}");
    vm.powerdown(Duration::from_secs(60)).unwrap();
    vm.wait(Duration::from_secs(30)).unwrap();

    // Dump reads it back.
    let dumped = s.path().join("dumped.raw");
    vm.dump("data", &dumped, None, |_| {}).unwrap();
    let bytes = std::fs::read(&dumped).unwrap();
    assert_eq!(bytes.len(), 32 * MIB);
    assert_eq!(&bytes[3 * MIB..3 * MIB + second.len()], second.as_bytes());
}

#[test]
fn cloud_init_seed_is_a_cidata_vfat_disk_with_the_configured_identity() {
    let s = scratch("guest-seed");
    let password = "p4ss: \"quoted\" 'single' # not a comment\nsecond line: yes\n  - indented";
    let mut spec = VmLaunch::new(guest_spec(&["virtio_blk", "vfat"], ""));
    spec.cloud_init = Some(CloudInitSpec {
        hostname: Some("qm-host-1".into()),
        username: Some("tester".into()),
        password: Some(password.into()),
        ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIQM test@host".into()],
        ..CloudInitSpec::default()
    });
    let mut vm = launch(spec, &options(s.path())).unwrap();
    // The seed is this VM's own, in its temp dir, attached read-only.
    let seed = vm.temp_dir().unwrap().join("cidata.img");
    assert!(seed.is_file());
    let disk = vm.resolved_spec().unwrap().disks.last().unwrap();
    assert_eq!(disk.id.as_deref(), Some(qemu_process::SEED_DISK_ID));
    assert!(disk.read_only);

    wait_ready(&mut vm);
    let out = shell(&mut vm, "cat /sys/block/vda/ro; findfs LABEL=CIDATA");
    assert!(out.contains("1\r\n/dev/vda"), "{out}");
    let out = shell(
        &mut vm,
        "mkdir -p /mnt && mount -t vfat -o ro /dev/vda /mnt && ls -1 /mnt && echo '<<META' && cat /mnt/meta-data && echo 'META>>' && echo '<<USER' && cat /mnt/user-data && echo 'USER>>'",
    );
    let text = out.replace("\r\n", "\n");
    assert!(text.contains("meta-data\nuser-data\n"), "{text}");
    let between = |start: &str, end: &str| -> String {
        let a = text
            .find(start)
            .unwrap_or_else(|| panic!("{start}: {text}"))
            + start.len()
            + 1;
        let b = text[a..].find(end).unwrap() + a;
        text[a..b].to_owned()
    };
    let meta: serde_json::Value = serde_json::from_str(&between("<<META", "META>>")).unwrap();
    assert_eq!(meta["local-hostname"], "qm-host-1");
    assert!(meta["instance-id"].as_str().unwrap().starts_with("iid-"));
    let user = between("<<USER", "USER>>");
    let body = user
        .strip_prefix("#cloud-config\n")
        .unwrap_or_else(|| panic!("{user}"));
    let user: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(user["hostname"], "qm-host-1");
    assert_eq!(user["users"][0]["name"], "tester");
    // Quotes, colons, a comment sign, newlines and indentation survived the round trip.
    assert_eq!(user["users"][0]["plain_text_passwd"], password);
    assert_eq!(
        user["users"][0]["ssh_authorized_keys"][0],
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIQM test@host"
    );
    vm.powerdown(Duration::from_secs(60)).unwrap();
    let temp = vm.temp_dir().unwrap().to_owned();
    drop(vm);
    assert!(!temp.exists());
}

fn http_get(addr: std::net::SocketAddr) -> String {
    let mut last = String::new();
    // httpd was started before; the first connection may still race slirp's first packet.
    for _ in 0..3 {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
            .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        if body.contains("200") {
            return body;
        }
        last = body;
    }
    panic!("no HTTP answer from {addr}: {last:?}");
}

#[test]
fn forwards_with_automatic_host_ports_reach_two_guests_at_once() {
    let s = scratch("guest-fwd");
    let mut vms = Vec::new();
    for name in ["alpha", "beta"] {
        let mut spec = guest_spec(&[], "qm.net=1");
        spec.name = Some(name.into());
        spec.forward(
            PortForward::tcp(0, 8080)
                .host_addr(std::net::Ipv4Addr::LOCALHOST)
                .name("web"),
        )
        .unwrap();
        vms.push((name, launch(spec, &options(s.path())).unwrap()));
    }
    let mut ports = Vec::new();
    for (name, vm) in &mut vms {
        let addr = vm.forwarded_port("web").unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_ne!(addr.port(), 0);
        assert_eq!(vm.forwarded_port("ssh"), None);
        let f = &vm.forwards()[0];
        assert_eq!((f.guest_port, f.nic.as_str()), (8080, "net0"));
        ports.push(addr.port());
        wait_ready(vm);
        let out = shell(
            vm,
            &format!("mkdir -p /www && echo served-by-{name} > /www/index.html && httpd -p 8080 -h /www && echo started"),
        );
        assert!(out.contains("started"), "{out}");
    }
    assert_ne!(ports[0], ports[1]);
    for (name, vm) in &mut vms {
        let body = http_get(vm.forwarded_port("web").unwrap());
        assert!(body.contains(&format!("served-by-{name}")), "{body}");
    }
    for (_, vm) in &mut vms {
        vm.shutdown(Duration::from_secs(20)).unwrap();
    }
}

#[test]
fn bad_forwards_are_named() {
    let s = scratch("guest-fwd-bad");
    for (doc, needle) in [
        (
            r#"{"forwards": [{"host_port": 0, "guest_port": 0}]}"#,
            "guest_port: port 0 is out of range (1..=65535)",
        ),
        (
            r#"{"forwards": [{"host_port": 70000, "guest_port": 22}]}"#,
            "host_port: port 70000 is out of range (0..=65535)",
        ),
    ] {
        let e = VmLaunch::from_json(doc).unwrap_err().to_string();
        assert!(e.contains(needle), "{doc}: {e}");
    }
    // Built in code, a guest port 0 is refused before QEMU starts.
    let mut spec = qemu_cmdline::VmSpec::default();
    spec.forward(PortForward::tcp(2222, 0).name("ssh")).unwrap();
    let e = launch(spec, &options(s.path())).unwrap_err();
    assert!(matches!(e, Error::Spec(_)), "{e:?}");
    assert!(
        e.to_string().contains("forward \"ssh\" guest_port: port 0"),
        "{e}"
    );
    assert!(entries(s.path()).is_empty(), "{:?}", entries(s.path()));
}
