//! Every file and socket the library makes is owner-only: a VM with a cloud-init seed, UEFI
//! variables, a disk in its temp dir and one created at the caller's path, a console log and
//! VNC; a screendump; images created, converted, flashed and dumped. The test runs with the
//! usual umask (022), so that a file nobody made private shows it.
//!
//! Files QEMU itself creates (the VNC socket) get their mode from QEMU's umask, which the
//! launcher must set to 077 in QEMU's child: that assertion is a test of its own.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_cmdline::{Format, Size, VmSpec};
use qemu_machine_tests::support::{launch, options, scratch, TempDir};
use qemu_process::{image, ScreenshotFormat, VmLaunch};

/// Sets the process umask to the common default, so that an unrestricted file is visible.
fn usual_umask() {
    // SAFETY: umask(2) only changes this process's file mode creation mask.
    unsafe {
        libc::umask(0o022);
    }
}

/// Every path under `dir` (itself included), depth first.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn mode(path: &Path) -> u32 {
    path.symlink_metadata()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The paths among `paths` that group or others may use, with their modes.
fn open_to_others(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| mode(p) & 0o077 != 0)
        .map(|p| format!("{} {:04o}", p.display(), mode(p)))
        .collect()
}

/// A VM that makes every kind of file the launcher makes.
fn spec(scratch: &TempDir) -> VmLaunch {
    VmLaunch::from_json(&format!(
        r#"{{
            "memory": "128M",
            "paused": true,
            "vnc": true,
            "uefi": {{}},
            "disks": [
                {{"id": "root", "size": "16M"}},
                {{"id": "data", "path": {:?}, "size": "16M"}}
            ],
            "cloud_init": {{"hostname": "safe", "username": "dev", "password": "secret"}}
        }}"#,
        scratch.path().join("data.qcow2")
    ))
    .unwrap()
}

#[test]
fn every_file_the_library_makes_is_owner_only() {
    usual_umask();
    let scratch = scratch("files-lib");
    let console_log = scratch.path().join("console.log");
    let mut o = options(scratch.path());
    o.console_log(&console_log);
    let mut vm = launch(spec(&scratch), &o).unwrap();
    let temp = vm.temp_dir().unwrap().to_owned();
    let vnc = vm.vnc_socket().unwrap().to_owned();

    let mut paths = Vec::new();
    walk(&temp, &mut paths);
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.strip_prefix(&temp).unwrap().display().to_string())
        .collect();
    // What the launcher and the machine made: the seed, the variables, the disk, the log.
    for made in ["cidata.img", "uefi-vars.fd", "root.qcow2"] {
        assert!(names.iter().any(|n| n == made), "{made} in {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with("qemu.log")), "{names:?}");
    // The VNC socket is QEMU's: see the next test.
    paths.retain(|p| *p != vnc);
    paths.extend([scratch.path().join("data.qcow2"), console_log.clone()]);

    // A screendump into a new file (the library creates it before QEMU writes it).
    let shot = vm
        .screendump(
            &scratch.path().join("screen.ppm"),
            Some(ScreenshotFormat::Ppm),
        )
        .unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 0);
    paths.push(shot);
    // Into a directory that does not exist: QEMU's error, and nothing made.
    let missing = vm.screendump(
        &scratch.path().join("no/such/dir.png"),
        Some(ScreenshotFormat::Png),
    );
    assert!(missing.is_err());
    assert!(!scratch.path().join("no").exists());
    let open = open_to_others(&paths);
    assert!(open.is_empty(), "open to group or others: {open:?}");
    vm.shutdown(Duration::from_secs(20)).unwrap();

    // Images: created, converted, flashed from a compressed file, dumped.
    let created = scratch.path().join("made.qcow2");
    image::create(&created, &Format::Qcow2, Size::mib(1)).unwrap();
    let converted = scratch.path().join("converted.raw");
    image::convert(&created, &converted, &Format::Raw, |_| {}).unwrap();
    let raw = scratch.path().join("source.raw");
    std::fs::write(&raw, vec![7u8; 1 << 20]).unwrap();
    let gz = std::process::Command::new("gzip")
        .arg("-k")
        .arg(&raw)
        .status()
        .expect("gzip: apt-get install -y gzip");
    assert!(gz.success());
    let report = vm
        .flash("data", &scratch.path().join("source.raw.gz"), |_| {})
        .unwrap();
    assert!(report.compression.is_some());
    let dumped = scratch.path().join("dumped.raw");
    vm.dump("uefi_vars", &dumped, None, |_| {}).unwrap();
    // data.qcow2 was replaced by the flash: checked again as it is now.
    paths.extend([created, converted, dumped]);

    let open = open_to_others(&paths);
    assert!(open.is_empty(), "open to group or others: {open:?}");
    drop(vm);
    assert!(!temp.exists());

    // A screendump QEMU refuses (no display device) leaves no file behind.
    let spec = VmSpec::from_json(r#"{"paused": true}"#).unwrap();
    let mut vm = launch(spec, &options(scratch.path())).unwrap();
    let blank = scratch.path().join("blank.ppm");
    let e = vm
        .screendump(&blank, Some(ScreenshotFormat::Ppm))
        .unwrap_err();
    assert!(matches!(e, qemu_process::Error::Qmp(_)), "{e:?}");
    assert!(!blank.exists(), "{e}");
}

#[test]
fn the_files_qemu_creates_are_owner_only() {
    // QEMU creates the VNC socket with its own umask. This holds once the launcher gives
    // QEMU's child umask 077 (as it does for qemu-img); with QEMU's inherited 022 the socket
    // is 0755.
    usual_umask();
    let scratch = scratch("files-qemu");
    let spec = VmLaunch::from_json(r#"{"paused": true, "vnc": true}"#).unwrap();
    let vm = launch(spec, &options(scratch.path())).unwrap();
    let vnc = vm.vnc_socket().unwrap().to_owned();
    assert!(vnc.symlink_metadata().unwrap().file_type().is_socket());
    let mut paths = Vec::new();
    walk(vm.temp_dir().unwrap(), &mut paths);
    let open = open_to_others(&paths);
    assert!(
        open.is_empty(),
        "open to group or others (QEMU's umask): {open:?}"
    );
}
