//! `qemu-machine image ...` against the real qemu-img: every verb, checked through the files
//! it leaves and `image info --json`, plain progress lines when stdout is not a terminal, and
//! failures with their exit codes.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use qemu_machine_tests::support::{run_deadline, scratch, show};
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
    ok(&["image", "resize", p(&disk), "96M"]);
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
    assert_eq!(ok(&["image", "snapshot", p(&disk), "list"]), "1\tbase\n");
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
