//! `qemu-machine image ...` against the real qemu-img: every verb, checked through the files
//! it leaves and `image info --json`, plain progress lines when stdout is not a terminal, and
//! failures with their exit codes.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use qemu_machine_tests::support::{run_deadline, scratch, show, stop};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn ok(args: &[&str]) -> String {
    let out = run_deadline(cmd(args), T);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn info(path: &Path) -> Value {
    let text = ok(&["image", "info", "--json", path.to_str().unwrap()]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn create_info_resize_convert_dump_check_snapshot() {
    require_qemu_img();
    let s = scratch("img");
    let disk = s.path().join("disk.qcow2");
    assert_eq!(
        ok(&["image", "create", p(&disk), "64M"]),
        format!("created {} (qcow2)\n", p(&disk))
    );
    let i = info(&disk);
    assert_eq!(i["format"], "qcow2");
    assert_eq!(i["virtual-size"], 64 << 20);

    let text = ok(&["image", "info", p(&disk)]);
    assert!(
        text.contains("format: qcow2\nvirtual size: 64 MiB (67108864 bytes)"),
        "{text}"
    );

    ok(&["image", "resize", p(&disk), "+16M"]);
    assert_eq!(info(&disk)["virtual-size"], 80 << 20);
    ok(&["image", "resize", p(&disk), "112M"]);
    assert_eq!(info(&disk)["virtual-size"], 112 << 20);
    // A relative shrink, as qemu-img writes it: refused without --shrink.
    let out = run_deadline(cmd(["image", "resize", p(&disk), "-16M"]), T);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shrink"));
    assert_eq!(info(&disk)["virtual-size"], 112 << 20);
    ok(&["image", "resize", p(&disk), "-16M", "--shrink"]);
    assert_eq!(info(&disk)["virtual-size"], 96 << 20);

    let raw = s.path().join("disk.raw");
    let out = ok(&["image", "convert", p(&disk), p(&raw)]);
    assert!(
        out.contains(&format!("convert {}: 100%\n", p(&disk))),
        "{out}"
    );
    assert_eq!(info(&raw)["format"], "raw");
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 96 << 20);

    let vmdk = s.path().join("copy.bin");
    ok(&["image", "dump", p(&disk), p(&vmdk), "--format", "vmdk"]);
    assert_eq!(info(&vmdk)["format"], "vmdk");

    let out = ok(&["image", "check", p(&disk)]);
    assert!(out.starts_with(&format!("{}: clean", p(&disk))), "{out}");

    ok(&["image", "snapshot", p(&disk), "create", "base"]);
    let list = ok(&["image", "snapshot", p(&disk), "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    for column in ["ID", "TAG", "VM SIZE", "DATE", "VM CLOCK"] {
        assert!(lines[0].contains(column), "{list}");
    }
    // A disk-only snapshot: no VM state, the guest clock at zero, today's date.
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..4], ["1", "base", "0", "B"], "{list}");
    assert!(row[4].len() == 10 && row[4].starts_with("20"), "{list}");
    assert_eq!(row[6], "00:00:00.000", "{list}");
    ok(&["image", "snapshot", p(&disk), "apply", "base"]);
    ok(&["image", "snapshot", p(&disk), "delete", "base"]);
    assert_eq!(ok(&["image", "snapshot", p(&disk), "list"]), "");

    let overlay = s.path().join("overlay.qcow2");
    ok(&[
        "image",
        "create",
        p(&overlay),
        "-b",
        p(&disk),
        "-F",
        "qcow2",
    ]);
    let i = info(&overlay);
    assert_eq!(i["virtual-size"], 96 << 20);
    assert_eq!(i["backing-filename-format"], "qcow2");
    assert_eq!(i["backing-chain"][0]["format"], "qcow2");
}

#[test]
fn flash_a_compressed_image_and_dump_it_back() {
    require_qemu_img();
    let s = scratch("flash");
    // A raw image with a recognisable pattern, gzip-compressed.
    let raw = s.path().join("src.raw");
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate().step_by(4096) {
        *b = (i / 4096) as u8 | 1;
    }
    std::fs::write(&raw, &data).unwrap();
    let gz = s.path().join("src.raw.gz");
    let status = Command::new("gzip")
        .arg("-kc")
        .arg(&raw)
        .stdout(Stdio::from(std::fs::File::create(&gz).unwrap()))
        .status()
        .expect("gzip is installed (apt-get install -y gzip)");
    assert!(status.success());

    let target = s.path().join("target.qcow2");
    let out = ok(&["image", "flash", p(&gz), p(&target), "--size", "8M"]);
    assert!(out.contains(&format!("flash {}: 100%", p(&gz))), "{out}");
    assert!(out.contains("(raw, gzip compressed)"), "{out}");
    let i = info(&target);
    assert_eq!(i["format"], "qcow2");
    assert_eq!(i["virtual-size"], 8 << 20, "grown to --size");

    let back = s.path().join("back.raw");
    ok(&["image", "dump", p(&target), p(&back)]);
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), 8 << 20);
    assert!(got[..data.len()] == data[..], "the flashed data comes back");
    assert!(got[data.len()..].iter().all(|&b| b == 0));

    // Flashing into an existing image keeps its format.
    ok(&["image", "flash", p(&raw), p(&target)]);
    assert_eq!(info(&target)["format"], "qcow2");
}

/// `image flash -` reads the image from standard input (here a pipe, xz-compressed, larger
/// than the pipe holds), decompresses it on the fly, and shows the bytes read, then the
/// conversion into the qcow2 target.
#[test]
fn flash_from_standard_input_decompresses_on_the_fly_with_progress() {
    require_qemu_img();
    let s = scratch("flash-stdin");
    let mut data = vec![0u8; 6 << 20];
    for (i, b) in data.iter_mut().enumerate().step_by(512) {
        *b = (i / 512) as u8 | 1;
    }
    let xz = Command::new("xz")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("xz is installed (apt-get install -y xz-utils)");
    let compressed = {
        let mut xz = xz;
        let mut stdin = xz.stdin.take().unwrap();
        let input = data.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = xz.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out.stdout
    };
    let target = s.path().join("from-stdin.qcow2");
    let mut flash = cmd(["image", "flash", "-", p(&target)]);
    flash
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = flash.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&compressed));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("flash -: 8 B read\n"), "{text}");
    assert!(text.contains("flash -: 100%\n"), "{text}");
    assert!(text.contains("(raw, xz compressed)"), "{text}");
    assert_eq!(info(&target)["format"], "qcow2");
    let back = s.path().join("back.raw");
    ok(&["image", "dump", p(&target), p(&back)]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the flashed data comes back"
    );

    // A stream that is not an image qemu-img reads into another format, or is cut short, is
    // an error and leaves no target.
    let bad = s.path().join("bad.qcow2");
    let mut flash = cmd(["image", "flash", "-", p(&bad)]);
    flash.stdin(Stdio::from(std::fs::File::open("/dev/null").unwrap()));
    let out = run_deadline(flash, T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(info(&bad)["virtual-size"], 0);
    let mut flash = cmd(["image", "flash", "-", p(&bad)]);
    flash
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = flash.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\xfd7zXZ\0\0garbage")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("xz"),
        "{}",
        show(&out)
    );
}

#[test]
fn image_failures_are_one_line_with_exit_codes() {
    require_qemu_img();
    let s = scratch("img-bad");
    let disk = s.path().join("d.qcow2");
    ok(&["image", "create", p(&disk), "16M"]);
    for (args, code, needle) in [
        (vec!["image", "info", "/no/such.qcow2"], 1, "does not exist"),
        (
            vec!["image", "create", p(&disk), "16M"],
            2,
            "already exists",
        ),
        (vec!["image", "resize", p(&disk), "8M"], 1, "--shrink"),
        (vec!["image", "create", "x.img", "lots"], 2, "size \"lots\""),
        // qemu-img refuses these sizes; so does this.
        (vec!["image", "create", "x.img", "64MB"], 2, "size \"64MB\""),
        (
            vec!["image", "resize", p(&disk), "+1MiB"],
            2,
            "size \"1MiB\"",
        ),
        (
            vec!["image", "resize", p(&disk), "-1G", "--shrink"],
            2,
            "out of range",
        ),
        (vec!["image", "create", "x.img"], 2, "give a SIZE"),
        (
            vec!["image", "snapshot", p(&disk), "apply"],
            2,
            "give the snapshot's NAME",
        ),
        (
            vec!["image", "flash", "/no/src.img", p(&disk)],
            1,
            "does not exist",
        ),
    ] {
        let out = run_deadline(cmd(&args), T);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("qemu-machine: error: "),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
    assert_eq!(
        info(&disk)["virtual-size"],
        16 << 20,
        "untouched by the refused shrink"
    );
    // A corrupt qcow2 (a garbage header) is reported by qemu-img, not as a crash.
    let bad = s.path().join("bad.qcow2");
    let mut f = std::fs::File::create(&bad).unwrap();
    f.write_all(b"QFI\xfb\x00\x00\x00\x09garbage").unwrap();
    drop(f);
    let out = run_deadline(cmd(["image", "check", p(&bad)]), T);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("qemu-img"),
        "{}",
        show(&out)
    );
}

/// Sets the refcount of cluster `index` in a qcow2 image made by `qemu-img create` (64 KiB
/// clusters, 16-bit refcounts, one refcount block), making the file that long if needed.
fn set_refcount(path: &Path, index: u64, value: u16) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut header = [0u8; 104];
    f.read_exact(&mut header).unwrap();
    assert_eq!(u32::from_be_bytes(header[20..24].try_into().unwrap()), 16);
    let table = u64::from_be_bytes(header[48..56].try_into().unwrap());
    f.seek(SeekFrom::Start(table)).unwrap();
    let mut block = [0u8; 8];
    f.read_exact(&mut block).unwrap();
    let block = u64::from_be_bytes(block);
    let cluster_end = (index + 1) << 16;
    if f.metadata().unwrap().len() < cluster_end {
        f.set_len(cluster_end).unwrap();
    }
    f.seek(SeekFrom::Start(block + 2 * index)).unwrap();
    f.write_all(&value.to_be_bytes()).unwrap();
}

#[test]
fn check_exits_like_qemu_img_check() {
    require_qemu_img();
    let s = scratch("img-check");
    let clean = s.path().join("clean.qcow2");
    ok(&["image", "create", p(&clean), "64M"]);
    // A cluster counted but used by nothing: a leak (code 3); the L1 table's cluster counted as
    // unused: a corruption (code 2).
    let leaky = s.path().join("leaky.qcow2");
    std::fs::copy(&clean, &leaky).unwrap();
    set_refcount(&leaky, 4, 1);
    let corrupt = s.path().join("corrupt.qcow2");
    std::fs::copy(&clean, &corrupt).unwrap();
    set_refcount(&corrupt, 3, 0);
    let raw = s.path().join("plain.raw");
    ok(&["image", "create", p(&raw), "1M"]);
    for (image, code, needle) in [
        (&clean, 0, "clean"),
        (&leaky, 3, "1 leaked clusters"),
        (&corrupt, 2, "1 corruptions"),
    ] {
        let qemu_img = Command::new(qemu_machine_tests::qemu_img())
            .args(["check", "-q"])
            .arg(image)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(qemu_img.code(), Some(code), "qemu-img check {}", p(image));
        let out = run_deadline(cmd(["image", "check", p(image)]), T);
        assert_eq!(out.status.code(), Some(code), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(needle),
            "{}",
            show(&out)
        );
    }
    let out = run_deadline(cmd(["image", "check", p(&raw)]), T);
    assert_eq!(out.status.code(), Some(63), "{}", show(&out));
    // Repairing the leak makes the image clean.
    let out = run_deadline(cmd(["image", "check", p(&leaky), "--repair", "leaks"]), T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 leaks repaired"));
    // The help says so.
    let help = ok(&["image", "check", "--help"]);
    for needle in [
        "2    the image is corrupted",
        "3    the image only has leaked",
    ] {
        assert!(help.contains(needle), "{help}");
    }
}

#[test]
fn convert_and_dump_never_overwrite_without_force_nor_onto_the_source() {
    require_qemu_img();
    let s = scratch("img-force");
    let disk = s.path().join("disk.qcow2");
    ok(&["image", "create", p(&disk), "8M"]);
    let taken = s.path().join("taken.raw");
    std::fs::write(&taken, b"precious").unwrap();
    for verb in ["convert", "dump"] {
        let out = run_deadline(cmd(["image", verb, p(&disk), p(&taken)]), T);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already exists (--force replaces it)"),
            "{}",
            show(&out)
        );
        assert_eq!(std::fs::read(&taken).unwrap(), b"precious");
        // Onto itself: refused even with --force (and through another name).
        let link = s.path().join(format!("{verb}-link.qcow2"));
        std::fs::hard_link(&disk, &link).unwrap();
        for dest in [&disk, &link] {
            let out = run_deadline(
                cmd(["image", verb, p(&disk), p(dest), "--force", "-O", "raw"]),
                T,
            );
            assert_eq!(out.status.code(), Some(2), "{}", show(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("are the same file"),
                "{}",
                show(&out)
            );
        }
        assert_eq!(info(&disk)["format"], "qcow2");
    }
    ok(&["image", "convert", p(&disk), p(&taken), "--force"]);
    assert_eq!(std::fs::metadata(&taken).unwrap().len(), 8 << 20);
    ok(&[
        "image",
        "dump",
        p(&disk),
        p(&taken),
        "--force",
        "-O",
        "qcow2",
    ]);
    assert_eq!(info(&taken)["format"], "qcow2");
}

#[test]
fn force_share_reads_a_running_vms_disk() {
    require_qemu();
    let s = scratch("img-share");
    let disk = s.path().join("disk.qcow2");
    ok(&["image", "create", p(&disk), "8M"]);
    let log = s.path().join("console.log");
    // A VM holding the disk open (QEMU locks it); stopped with SIGTERM at the end.
    let mut vm = cmd([
        "run",
        "--accel",
        "tcg",
        "--disk",
        &format!("{},format=qcow2", p(&disk)),
        "--console-log",
        p(&log),
        // No guest to ask: SIGTERM quits QEMU at once.
        "--powerdown",
        "0s",
    ]);
    vm.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = vm.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Wait for the banner's status line: QEMU then has the disk open and locked.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("status: running") {
        use std::io::Read;
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "the VM ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let locked = run_deadline(cmd(["image", "info", p(&disk)]), T);
    assert_eq!(locked.status.code(), Some(1), "{}", show(&locked));
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("lock"),
        "{}",
        show(&locked)
    );
    let text = ok(&["image", "info", "-U", p(&disk)]);
    assert!(text.contains("format: qcow2"), "{text}");
    let out = run_deadline(cmd(["image", "check", "--force-share", p(&disk)]), T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let copy = s.path().join("copy.raw");
    ok(&["image", "convert", "-U", p(&disk), p(&copy)]);
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), 8 << 20);
    let dumped = s.path().join("dump.qcow2");
    ok(&["image", "dump", "-U", p(&disk), p(&dumped)]);
    assert_eq!(info(&dumped)["format"], "qcow2");
    let out = run_deadline(
        cmd(["image", "check", "-U", "--repair", "leaks", p(&disk)]),
        T,
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    stop(&mut child);
}

#[test]
fn progress_bar_on_a_terminal() {
    require_qemu_img();
    let s = scratch("img-tty");
    let disk = s.path().join("d.qcow2");
    ok(&["image", "create", p(&disk), "32M"]);
    let raw = s.path().join("d.raw");
    let mut pty = pty(["image", "convert", p(&disk), p(&raw)]);
    let status = pty.finish(T);
    assert_eq!(status.code(), Some(0), "{}", pty.text());
    let text = pty.text();
    assert!(
        text.contains(&format!("\rconvert {} [", p(&disk))),
        "{text:?}"
    );
    assert!(text.contains("] 100.0%"), "{text:?}");
}
