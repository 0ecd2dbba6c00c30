//! What Jumpstarter's QEMU driver needs from a VM launch, against a real QEMU: default partitions
//! given as files (flashed and dumped by name), `disk_size` smaller than the image or larger than
//! the free space, a snapshot disk's overlay made by the launcher, and vsock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_cmdline::{Format, Size};
use qemu_machine_tests::support::{entries, launch, launch_json, options, scratch};
use qemu_process::image::QemuImg;
use qemu_process::{DriveKind, Error, VmLaunch, VHOST_VSOCK};
use serde_json::json;

const MIB: usize = 1 << 20;

/// The installed OVMF code and variable template.
fn ovmf() -> (PathBuf, PathBuf) {
    qemu_cmdline::X86_64
        .uefi
        .iter()
        .find(|p| Path::new(p.code).is_file() && Path::new(p.vars).is_file())
        .map(|p| (PathBuf::from(p.code), PathBuf::from(p.vars)))
        .expect("OVMF missing: apt-get install -y ovmf")
}

/// SeaBIOS, as qemu-system-x86 installs it.
fn seabios() -> PathBuf {
    let path = PathBuf::from("/usr/share/seabios/bios-256k.bin");
    assert!(
        path.is_file(),
        "{} missing: apt-get install -y seabios",
        path.display()
    );
    path
}

/// A raw image of `size` bytes: `fill` everywhere, `marker` at 1 MiB (in the middle of a
/// smaller one).
fn image(path: &Path, size: usize, fill: u8, marker: &str) -> Vec<u8> {
    let mut data = vec![fill; size];
    let at = MIB.min(size / 2);
    data[at..at + marker.len()].copy_from_slice(marker.as_bytes());
    std::fs::write(path, &data).unwrap();
    data
}

/// Dumps drive `name` of a stopped machine as raw and returns its bytes.
fn dump(vm: &mut qemu_process::Machine, name: &str, dir: &Path) -> Vec<u8> {
    let dest = dir.join(format!("dump-{}.raw", name.replace('.', "-")));
    let _ = std::fs::remove_file(&dest);
    vm.dump(name, &dest, Some(&Format::Raw), |_| {})
        .unwrap_or_else(|e| panic!("dumping {name}: {e}"));
    std::fs::read(&dest).unwrap()
}

/// The map form of `default_partitions`, with Jumpstarter's names: the root disk is an overlay
/// on the given image (which is never written), the UEFI code is used and the variables
/// copied; every partition is flashed and dumped by name, after the VM stopped.
#[test]
fn partition_files_become_the_vms_drives_and_each_is_flashed_and_dumped() {
    let s = scratch("parts-uefi");
    let (code, vars) = ovmf();
    let root = s.path().join("root.raw");
    let root_data = image(&root, 4 * MIB, 0, "QM-DEFAULT-ROOT");
    let root_mtime = std::fs::metadata(&root).unwrap().modified().unwrap();
    let vars_before = std::fs::read(&vars).unwrap();
    let description = json!({
        "paused": true,
        "default_partitions": {"root": root, "OVMF_CODE.fd": code, "OVMF_VARS.fd": vars},
        "disk_size": "8M",
    });
    let mut vm = launch_json(&description.to_string(), &options(s.path())).unwrap();
    let temp = vm.temp_dir().unwrap().to_owned();
    let drives: Vec<(String, DriveKind, bool)> = vm
        .drives()
        .iter()
        .map(|d| (d.name.clone(), d.kind, d.owned))
        .collect();
    assert_eq!(
        drives,
        [
            ("root".into(), DriveKind::Disk, true),
            ("uefi_code".into(), DriveKind::UefiCode, false),
            ("uefi_vars".into(), DriveKind::UefiVars, true),
        ]
    );
    assert_eq!(vm.drives()[1].path, code);
    // The root disk is the VM's own overlay on the file, grown to disk_size.
    let overlay = vm.drives()[0].path.clone();
    assert!(overlay.starts_with(&temp), "{}", overlay.display());
    let info = QemuImg::new().info_with(&overlay, None, true).unwrap();
    assert_eq!(info.format, Format::Qcow2);
    assert_eq!(info.virtual_size, 8 << 20);
    assert_eq!(
        info.backing_filename.as_deref().map(Path::new),
        Some(root.as_path())
    );
    // Described back with the drive names.
    let back = vm.vm_launch().unwrap().to_json().unwrap();
    assert!(back.contains("\"uefi_code\""), "{back}");

    // Flashing is refused while QEMU runs; afterwards every partition takes an image.
    assert!(matches!(
        vm.flash("root", &root, |_| {}),
        Err(Error::VmRunning { .. })
    ));
    vm.shutdown(Duration::from_secs(20)).unwrap();
    let dumped = dump(&mut vm, "root", s.path());
    assert_eq!(dumped.len(), 8 * MIB);
    assert_eq!(&dumped[..root_data.len()], &root_data[..]);
    assert_eq!(
        dump(&mut vm, "OVMF_CODE.fd", s.path()),
        std::fs::read(&code).unwrap()
    );
    assert_eq!(dump(&mut vm, "OVMF_VARS.fd", s.path()), vars_before);

    for (name, size) in [
        ("root", 2 * MIB),
        (
            "OVMF_CODE.fd",
            std::fs::metadata(&code).unwrap().len() as usize,
        ),
        ("OVMF_VARS.fd", vars_before.len()),
    ] {
        let marker = format!("QM-FLASHED-{name}");
        let source = s.path().join(format!("new-{name}"));
        let data = image(&source, size, 0x11, &marker);
        vm.flash(name, &source, |_| {})
            .unwrap_or_else(|e| panic!("flashing {name}: {e}"));
        let back = dump(&mut vm, name, s.path());
        // root is grown back to disk_size; firmware keeps the image's size.
        assert_eq!(&back[..size], &data[..], "{name}");
    }
    // The system firmware and the default root image are never written: the flashes went to
    // the VM's copies in its temp dir.
    assert_eq!(std::fs::read(&vars).unwrap(), vars_before);
    assert_eq!(std::fs::read(&root).unwrap(), root_data);
    assert_eq!(
        std::fs::metadata(&root).unwrap().modified().unwrap(),
        root_mtime
    );
    let code_drive = vm.drives()[1].clone();
    assert!(code_drive.owned && code_drive.path.starts_with(&temp));
    // The relaunched VM runs on the flashed firmware.
    vm.relaunch().unwrap();
    let argv = vm.argv().join(std::ffi::OsStr::new(" "));
    assert!(
        argv.to_string_lossy()
            .contains(&code_drive.path.display().to_string()),
        "{argv:?}"
    );
    vm.shutdown(Duration::from_secs(20)).unwrap();
    drop(vm);
    assert!(!temp.exists());
    assert!(
        entries(s.path())
            .iter()
            .all(|e| !e.starts_with("qemu-machine")),
        "{:?}",
        entries(s.path())
    );
}

/// `bios` as a partition file: SeaBIOS boots from it, and it is flashed and dumped like the
/// others (into the VM's own copy).
#[test]
fn a_bios_partition_file_is_used_flashed_and_dumped() {
    let s = scratch("parts-bios");
    let bios = seabios();
    let original = std::fs::read(&bios).unwrap();
    // SeaBIOS writes to the serial port when the board has no graphics.
    let description = json!({
        "machine": {"type": "q35", "props": {"graphics": false}},
        "default_partitions": {"bios": bios},
        "disk_size": "4M",
    });
    let mut vm = launch_json(&description.to_string(), &options(s.path())).unwrap();
    // SeaBIOS runs: it finds nothing bootable on the empty root disk.
    vm.console_wait_for(b"No bootable device", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&vm.console_read())));
    let names: Vec<&str> = vm.drives().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["root", "bios"]);
    vm.shutdown(Duration::from_secs(20)).unwrap();
    assert_eq!(dump(&mut vm, "bios", s.path()), original);
    let flashed = s.path().join("bios.bin");
    let mut data = original.clone();
    data[..8].copy_from_slice(b"QM-BIOS!");
    std::fs::write(&flashed, &data).unwrap();
    vm.flash("bios", &flashed, |_| {}).unwrap();
    assert_eq!(dump(&mut vm, "bios", s.path()), data);
    assert_eq!(std::fs::read(&bios).unwrap(), original);
    assert!(vm.drives()[1].owned);
}

#[test]
fn bad_partition_files_are_named() {
    let s = scratch("parts-bad");
    let (code, _) = ovmf();
    let missing = s.path().join("missing.qcow2");
    for (description, needle) in [
        (
            json!({"default_partitions": {"boot": "/x"}}),
            "unknown partition \"boot\" (partitions: root, bios, uefi_code (OVMF_CODE.fd)",
        ),
        (
            json!({"default_partitions": {"root": missing}}),
            "default partition \"root\": ",
        ),
        (
            json!({"default_partitions": {"bios": seabios(), "OVMF_CODE.fd": code}}),
            "exclude each other",
        ),
        (
            json!({"default_partitions": {"OVMF_CODE.fd": code}, "bios": seabios()}),
            "the description has its own firmware",
        ),
        (
            json!({"default_partitions": {"root": code}, "disks": [{"id": "root", "path": code}]}),
            "a file for root, and the description has a disk \"root\"",
        ),
        (
            json!({"default_partitions": 3}),
            "default_partitions: true, false, or a map",
        ),
    ] {
        let err = launch_json(&description.to_string(), &options(s.path())).unwrap_err();
        assert!(err.to_string().contains(needle), "{description}: {err}");
    }
    assert!(entries(s.path()).is_empty(), "{:?}", entries(s.path()));
}

/// A `disk_size` smaller than the image is an error that names both sizes; one larger than
/// the free space is refused before anything grows. Neither leaves anything behind.
#[test]
fn disk_size_below_the_image_or_beyond_the_free_space_is_refused() {
    let s = scratch("disk-size");
    let root = s.path().join("root.qcow2");
    QemuImg::new()
        .create(&root, &Format::Qcow2, Size::mib(64))
        .unwrap();
    let description = |size: &str| {
        json!({"disks": [{"id": "root", "path": root, "format": "qcow2"}], "disk_size": size})
            .to_string()
    };
    let err = launch_json(&description("32M"), &options(s.path())).unwrap_err();
    assert!(matches!(err, Error::DiskTooSmall { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("disk \"root\": disk_size is 33554432 bytes (32 MiB)"),
        "{text}"
    );
    assert!(
        text.contains("is 67108864 bytes (64 MiB); a disk is never shrunk"),
        "{text}"
    );

    // Far more than the file system has free (a qcow2 would not allocate it at once, but the
    // guest could fill it).
    let free = {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(s.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let huge = format!("{}G", free / (1 << 30) + 1024);
    let err = launch_json(&description(&huge), &options(s.path())).unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert!(
        err.to_string().contains("its file system has only"),
        "{err}"
    );
    let info = QemuImg::new().info(&root).unwrap();
    assert_eq!(info.virtual_size, 64 << 20, "the image was not touched");
    assert_eq!(entries(s.path()), ["root.qcow2"]);

    // The same size is fine, a larger one grows it.
    let vm = launch_json(&description("96M"), &options(s.path())).unwrap();
    drop(vm);
    assert_eq!(QemuImg::new().info(&root).unwrap().virtual_size, 96 << 20);
}

/// `snapshot: true` without an `overlay`: the launcher makes one in the VM's temp dir; the
/// guest writes to it, the image stays as it was, and the overlay goes with the temp dir.
#[test]
fn a_snapshot_disk_gets_an_overlay_in_the_temp_dir() {
    let s = scratch("snapshot");
    let base = s.path().join("base.raw");
    let data = image(&base, 4 * MIB, 0, "QM-BASE");
    let mut vm_launch = VmLaunch::new(qemu_machine_tests::support::guest_spec(&["virtio_blk"], ""));
    let mut disk = qemu_cmdline::DiskSpec::new(&base);
    disk.format = Some(Format::Raw);
    disk.snapshot = true;
    vm_launch.spec.disks.push(disk);
    let mut vm = launch(vm_launch, &options(s.path())).unwrap();
    let temp = vm.temp_dir().unwrap().to_owned();
    let overlay = vm.resolved_spec().unwrap().disks[0]
        .overlay
        .clone()
        .unwrap();
    assert!(overlay.starts_with(&temp), "{}", overlay.display());
    qemu_machine_tests::support::wait_ready(&mut vm);
    let out = qemu_machine_tests::support::shell(
        &mut vm,
        "printf QM-WRITTEN | dd of=/dev/vda bs=512 seek=2048 conv=notrunc 2>/dev/null; sync; \
         dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 10; echo",
    );
    assert!(out.contains("QM-WRITTEN"), "{out}");
    vm.shutdown(Duration::from_secs(20)).unwrap();
    // The guest's write is in the overlay, not in the image.
    assert_eq!(std::fs::read(&base).unwrap(), data);
    let info = QemuImg::new().info(&overlay).unwrap();
    assert_eq!(
        info.backing_filename.as_deref().map(Path::new),
        Some(base.as_path())
    );
    drop(vm);
    assert!(!temp.exists() && !overlay.exists());
    assert_eq!(entries(s.path()), ["base.raw"]);
}

/// vsock: the argv has a `vhost-vsock-pci` device with a CID a guest may have; launching needs
/// /dev/vhost-vsock. This host has none (no vhost_vsock module), so the launch is refused with
/// an error naming the device; where it is usable, the VM starts with that device and CID.
#[test]
fn vsock_gets_a_usable_cid_or_names_the_missing_device() {
    let s = scratch("vsock");
    let mut config = options(s.path());
    config.vm(VmLaunch::from_json(r#"{"vsock": true}"#).unwrap());
    let mut cids = Vec::new();
    for _ in 0..3 {
        let argv: Vec<String> = config
            .argv()
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let device = argv
            .iter()
            .find(|a| a.starts_with("vhost-vsock-pci,"))
            .unwrap_or_else(|| panic!("no vsock device: {argv:?}"));
        let cid: u32 = device
            .strip_prefix("vhost-vsock-pci,id=vsock0,guest-cid=")
            .unwrap_or_else(|| panic!("{device}"))
            .parse()
            .unwrap();
        assert!(cid > 2 && cid != u32::MAX, "{cid}");
        cids.push(cid);
    }
    // A fresh random CID each time (three equal draws out of four billion: practically never).
    assert!(cids[0] != cids[1] || cids[1] != cids[2], "{cids:?}");

    let usable = std::fs::File::options()
        .read(true)
        .write(true)
        .open(VHOST_VSOCK)
        .is_ok();
    match qemu_process::Machine::launch(&config) {
        Ok(vm) => {
            assert!(usable, "launched without {VHOST_VSOCK}");
            let cid = vm.vsock_cid().unwrap();
            assert!(cid > 2 && cid != u32::MAX);
        }
        Err(err) => {
            assert!(!usable, "{VHOST_VSOCK} is usable, yet: {err}");
            assert!(matches!(err, Error::DeviceUnavailable { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("/dev/vhost-vsock cannot be opened"), "{text}");
            assert!(text.contains("modprobe vhost_vsock"), "{text}");
        }
    }
    assert!(entries(s.path()).is_empty(), "{:?}", entries(s.path()));
    // Without vsock, no device and no CID.
    let vm = launch(VmLaunch::default(), &options(s.path())).unwrap();
    assert_eq!(vm.vsock_cid(), None);
}

/// A partition flashed from a pipe: `zstd -c` writes the compressed image into it, the machine
/// reads it once and decompresses it on the fly, reporting the bytes read.
#[test]
fn a_partition_is_flashed_from_a_pipe() {
    let s = scratch("parts-pipe");
    let mut vm = launch_json(
        r#"{"paused": true, "default_partitions": true, "disk_size": "8M"}"#,
        &options(s.path()),
    )
    .unwrap();
    vm.shutdown(Duration::from_secs(20)).unwrap();
    let raw = s.path().join("image.raw");
    let data = image(&raw, 6 * MIB, 0x22, "QM-FROM-A-PIPE");
    let mut zstd = std::process::Command::new("zstd")
        .args(["-q", "-c"])
        .arg(&raw)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zstd missing: apt-get install -y zstd");
    let pipe = zstd.stdout.take().unwrap();
    let mut reads = Vec::new();
    let report = vm.flash_stream("root", pipe, |p| reads.push(p)).unwrap();
    assert!(zstd.wait().unwrap().success());
    assert_eq!(
        report.compression,
        Some(qemu_process::image::Compression::Zstd)
    );
    assert_eq!(report.virtual_size, 6 << 20);
    assert!(
        matches!(
            reads.first(),
            Some(qemu_process::image::StreamProgress::Read(_))
        ),
        "{reads:?}"
    );
    assert_eq!(
        reads.last(),
        Some(&qemu_process::image::StreamProgress::Converting(1.0))
    );
    let back = dump(&mut vm, "root", s.path());
    // Grown back to disk_size.
    assert_eq!(back.len(), 8 * MIB);
    assert!(back[..data.len()] == data[..]);
}
