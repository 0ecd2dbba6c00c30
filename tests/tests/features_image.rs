//! `qemu_process::image` against the real qemu-img: create, info, resize, convert with
//! progress, check, snapshots, flashing compressed and uncompressed images, and bad input.

use std::path::Path;
use std::process::Command;

use qemu_cmdline::{Format, Size};
use qemu_machine_tests::support::{entries, scratch};
use qemu_process::image::{self, Compression, QemuImg};
use qemu_process::Error;

const MIB: u64 = 1 << 20;

fn qemu_img() -> QemuImg {
    let mut img = QemuImg::new();
    img.program(qemu_machine_tests::qemu_img());
    img
}

/// Writes `pattern` over `len` bytes at `offset` of a qcow2 image with qemu-io (qemu-utils).
fn qemu_io_write(path: &Path, pattern: u8, offset: u64, len: u64) {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c"])
        .arg(format!("write -P {pattern:#x} {offset} {len}"))
        .arg(path)
        .output()
        .expect("qemu-io missing: apt-get install -y qemu-utils");
    assert!(out.status.success(), "{out:?}");
}

/// A raw image of `size` bytes, zero except `marker` at `offset` and 0x5a in the first MiB.
fn raw_image(path: &Path, size: u64, offset: u64, marker: &[u8]) -> Vec<u8> {
    let mut data = vec![0u8; size as usize];
    data[..MIB as usize].fill(0x5a);
    data[offset as usize..offset as usize + marker.len()].copy_from_slice(marker);
    std::fs::write(path, &data).unwrap();
    data
}

fn compress(program: &str, path: &Path) -> std::path::PathBuf {
    let ext = if program == "gzip" { "gz" } else { program };
    let out_path = std::path::PathBuf::from(format!("{}.{ext}", path.display()));
    let out = Command::new(program)
        .arg("-c")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install -y gzip xz-utils)"));
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&out_path, out.stdout).unwrap();
    out_path
}

#[test]
fn qcow2_create_resize_convert_check_and_snapshots() {
    let s = scratch("img-life");
    let img = qemu_img();
    let q = s.path().join("a.qcow2");
    img.create(&q, &Format::Qcow2, Size::mib(64)).unwrap();
    let info = img.info(&q).unwrap();
    assert_eq!(info.format, Format::Qcow2);
    assert_eq!(info.virtual_size, 64 * MIB);
    assert!(info.actual_size.unwrap() > 0);
    assert_eq!(info.cluster_size, Some(65536));
    assert!(!info.dirty && info.snapshots.is_empty() && info.backing_chain.is_empty());
    // An existing file is never overwritten by create.
    let e = img.create(&q, &Format::Qcow2, Size::mib(1)).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");

    qemu_io_write(&q, 0x5a, 0, 24 * MIB);
    let grown = img.resize(&q, Size::mib(128), false).unwrap();
    assert_eq!(grown.virtual_size, 128 * MIB);
    assert_eq!(img.info(&q).unwrap().virtual_size, 128 * MIB);

    let report = img.check(&q, None).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.format, "qcow2");
    assert!(report.allocated_clusters.unwrap() >= 24 * MIB / 65536);

    // Snapshots: create, list, change the disk, apply, delete.
    img.snapshot_create(&q, "before upgrade").unwrap();
    let list = img.snapshot_list(&q).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "before upgrade");
    assert_eq!(list[0].vm_state_size, 0);
    qemu_io_write(&q, 0xab, 0, 65536);
    img.snapshot_apply(&q, "before upgrade").unwrap();

    // Convert to raw with progress.
    let raw = s.path().join("a.raw");
    let mut seen = Vec::new();
    img.convert(&q, &raw, &Format::Raw, |p| seen.push(p))
        .unwrap();
    assert!(seen.len() >= 3, "progress {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen[0] < 1.0, "{seen:?}");
    assert_eq!(*seen.last().unwrap(), 1.0);
    let rinfo = img.info(&raw).unwrap();
    assert_eq!(rinfo.format, Format::Raw);
    assert_eq!(rinfo.virtual_size, 128 * MIB);
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(bytes.len() as u64, 128 * MIB);
    // The snapshot's content came back (0x5a, not the later 0xab), the rest is zero.
    assert!(bytes[..(24 * MIB) as usize].iter().all(|&b| b == 0x5a));
    assert!(bytes[(24 * MIB) as usize..].iter().all(|&b| b == 0));

    img.snapshot_delete(&q, "before upgrade").unwrap();
    assert!(img.snapshot_list(&q).unwrap().is_empty());
    let e = img.snapshot_apply(&q, "before upgrade").unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e:?}");
    // The free functions use qemu-img from PATH, with the same results.
    assert_eq!(image::info(&raw).unwrap().virtual_size, 128 * MIB);
    // No temporary files were left anywhere.
    assert_eq!(entries(s.path()), ["a.qcow2", "a.raw"]);
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let s = scratch("img-bad");
    let img = qemu_img();
    // A missing image.
    let e = img.info(&s.path().join("missing.qcow2")).unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { path, .. } if path.ends_with("missing.qcow2")),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("missing.qcow2 does not exist"),
        "{e}"
    );
    // An unknown format: qemu-img's own message, with the argv and status.
    let e = img
        .create(
            &s.path().join("x.img"),
            &Format::Other("nosuchfmt".into()),
            Size::mib(1),
        )
        .unwrap_err();
    match &e {
        Error::Image {
            argv,
            status,
            stderr,
        } => {
            assert!(argv.iter().any(|a| a == "nosuchfmt"), "{argv:?}");
            assert!(!status.success());
            assert!(stderr.contains("nosuchfmt"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("qemu-img create -f nosuchfmt"),
        "{e}"
    );

    // A shrink without permission, and a growth past the free space: numbers in the errors,
    // the image unchanged.
    let q = s.path().join("d.qcow2");
    img.create(&q, &Format::Qcow2, Size::mib(64)).unwrap();
    let e = img.resize(&q, Size::mib(16), false).unwrap_err();
    match &e {
        Error::ShrinkRefused {
            current, requested, ..
        } => assert_eq!((*current, *requested), (64 * MIB, 16 * MIB)),
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("from 67108864 to 16777216 bytes"),
        "{e}"
    );
    let huge = Size::bytes_exact(1 << 60);
    let e = img.resize(&q, huge, false).unwrap_err();
    match &e {
        Error::NoSpace {
            needed, available, ..
        } => {
            assert_eq!(*needed, (1 << 60) - 64 * MIB);
            assert!(available < needed);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .contains(&((1u64 << 60) - 64 * MIB).to_string()),
        "{e}"
    );
    assert_eq!(img.info(&q).unwrap().virtual_size, 64 * MIB);
    // Shrinking when allowed works.
    assert_eq!(
        img.resize(&q, Size::mib(16), true).unwrap().virtual_size,
        16 * MIB
    );

    // A raw image has nothing to check or snapshot.
    let r = s.path().join("r.raw");
    img.create(&r, &Format::Raw, Size::mib(1)).unwrap();
    assert!(matches!(img.check(&r, None), Err(Error::Unsupported(_))));
    let e = img.snapshot_create(&r, "s").unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("they need qcow2"), "{e}");
    // A qemu-img that is not installed: the package to install.
    let mut missing = QemuImg::new();
    missing.program("/nonexistent/qemu-img");
    let e = missing.info(&r).unwrap_err();
    assert!(
        matches!(&e, Error::ProgramMissing { package, .. } if package == "qemu-utils"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("apt-get install -y qemu-utils"),
        "{e}"
    );
    assert_eq!(entries(s.path()), ["d.qcow2", "r.raw"]);
}

#[test]
fn flash_streams_compressed_images_and_converts_formats() {
    let s = scratch("img-flash");
    let img = qemu_img();
    let src = s.path().join("src.raw");
    let data = raw_image(&src, 8 * MIB, 5 * MIB + 3, b"QM-FLASH-MARKER");

    // gzip'd raw into a raw target: streamed, sparse, identical.
    let gz = compress("gzip", &src);
    let target = s.path().join("disk.raw");
    std::fs::write(&target, b"old contents").unwrap();
    let mut seen = Vec::new();
    let report = img
        .flash(&gz, &target, &Format::Raw, |p| seen.push(p))
        .unwrap();
    assert_eq!(report.compression, Some(Compression::Gzip));
    assert_eq!(report.source_format, Format::Raw);
    assert_eq!(report.virtual_size, 8 * MIB);
    assert_eq!(*seen.last().unwrap(), 1.0);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(std::fs::read(&target).unwrap() == data);
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&target).unwrap().blocks() * 512;
    assert!(
        allocated < 4 * MIB,
        "not sparse: {allocated} bytes allocated"
    );

    // xz'd qcow2 into a qcow2 target: decompressed, recognised, converted.
    let q = s.path().join("src.qcow2");
    img.convert(&src, &q, &Format::Qcow2, |_| {}).unwrap();
    let xz = compress("xz", &q);
    let qt = s.path().join("disk.qcow2");
    let mut seen = Vec::new();
    let report = img
        .flash(&xz, &qt, &Format::Qcow2, |p| seen.push(p))
        .unwrap();
    assert_eq!(report.compression, Some(Compression::Xz));
    assert_eq!(report.source_format, Format::Qcow2);
    assert_eq!(img.info(&qt).unwrap().format, Format::Qcow2);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(*seen.last().unwrap(), 1.0);
    let back = s.path().join("back.raw");
    img.dump(&qt, None, &back, &Format::Raw, |_| {}).unwrap();
    assert!(std::fs::read(&back).unwrap() == data);

    // An uncompressed qcow2 into a raw target.
    let report = img.flash(&q, &target, &Format::Raw, |_| {}).unwrap();
    assert_eq!(report.compression, None);
    assert_eq!(report.source_format, Format::Qcow2);
    assert!(std::fs::read(&target).unwrap() == data);

    let mut entries = entries(s.path());
    entries.sort();
    assert_eq!(
        entries,
        [
            "back.raw",
            "disk.qcow2",
            "disk.raw",
            "src.qcow2",
            "src.qcow2.xz",
            "src.raw",
            "src.raw.gz"
        ]
    );
}

#[test]
fn flash_errors_name_the_problem_and_keep_the_target() {
    let s = scratch("img-flash-bad");
    let src = s.path().join("src.raw");
    raw_image(&src, MIB, 100, b"x");
    let gz = compress("gzip", &src);
    let target = s.path().join("disk.raw");
    std::fs::write(&target, b"keep me").unwrap();

    // The decompressor is not installed: the program and the package to install.
    let mut img = qemu_img();
    img.decompressor(Compression::Gzip, "/nonexistent/bin/gzip");
    let e = img.flash(&gz, &target, &Format::Raw, |_| {}).unwrap_err();
    match &e {
        Error::ProgramMissing {
            program, package, ..
        } => {
            assert_eq!(program, Path::new("/nonexistent/bin/gzip"));
            assert_eq!(package, "gzip");
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("/nonexistent/bin/gzip") && msg.contains("apt-get install -y gzip"));

    // A corrupt stream: the decompressor's failure, with its message.
    let bad = s.path().join("bad.gz");
    let mut bytes = vec![0x1f, 0x8b, 8, 0];
    bytes.extend_from_slice(&[0xee; 4096]);
    std::fs::write(&bad, bytes).unwrap();
    let e = qemu_img()
        .flash(&bad, &target, &Format::Raw, |_| {})
        .unwrap_err();
    match &e {
        Error::Image { argv, stderr, .. } => {
            assert!(argv[0].to_string_lossy().ends_with("gzip"), "{argv:?}");
            assert!(!stderr.is_empty());
        }
        other => panic!("{other:?}"),
    }

    // A missing source.
    let e = qemu_img()
        .flash(&s.path().join("nope.img.xz"), &target, &Format::Raw, |_| {})
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("flash source"), "{e}");

    // An unknown target format: qemu-img names it.
    let e = qemu_img()
        .flash(&src, &target, &Format::Other("nosuchfmt".into()), |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("nosuchfmt"), "{e}");

    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert_eq!(
        entries(s.path()),
        ["bad.gz", "disk.raw", "src.raw", "src.raw.gz"]
    );
}
