//! VNC on a unix socket and screendumps, and UEFI boot with per-VM variables (plain and secure
//! boot), against a real QEMU with OVMF.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_cmdline::{Format, UefiSpec, UefiVariant, VmSpec};
use qemu_machine_tests::support::{launch, launch_json, options, scratch, BOOT};
use qemu_process::{DriveKind, Machine as Vm, ScreenshotFormat};

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Width and height from a binary PPM (P6), checking the pixel data's length.
fn ppm_size(bytes: &[u8]) -> (u32, u32) {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(32)]).into_owned();
    let mut fields = text.split_ascii_whitespace();
    assert_eq!(fields.next(), Some("P6"), "not a PPM: {text:?}");
    let w: u32 = fields.next().unwrap().parse().unwrap();
    let h: u32 = fields.next().unwrap().parse().unwrap();
    assert_eq!(fields.next(), Some("255"));
    let header = format!("P6\n{w} {h}\n255\n").len();
    assert_eq!(bytes.len(), header + (w * h * 3) as usize);
    (w, h)
}

#[test]
fn vnc_socket_speaks_rfb_and_screendumps_have_the_screen_size() {
    let s = scratch("vnc");
    // Paused: the display keeps QEMU's initial 640x480 surface, whatever the firmware would do.
    let mut vm = launch_json(r#"{"vnc": true, "paused": true}"#, &options(s.path())).unwrap();
    let sock = vm.vnc_socket().unwrap().to_owned();
    assert!(
        sock.starts_with(vm.temp_dir().unwrap()),
        "{}",
        sock.display()
    );
    let mut stream = UnixStream::connect(&sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut banner = [0u8; 12];
    stream.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"RFB 003.008\n");
    drop(stream);

    let png = vm.screendump(&s.path().join("screen.png"), None).unwrap();
    assert_eq!(png, s.path().join("screen.png"), "QEMU 7.2 writes PNG");
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), (640, 480));
    let ppm = vm
        .screendump(&s.path().join("screen.ppm"), Some(ScreenshotFormat::Ppm))
        .unwrap();
    assert_eq!(ppm_size(&std::fs::read(&ppm).unwrap()), (640, 480));
    // A directory that does not exist: QEMU's error, as a QMP error.
    let e = vm
        .screendump(
            &s.path().join("no/such/dir.png"),
            Some(ScreenshotFormat::Png),
        )
        .unwrap_err();
    assert!(matches!(e, qemu_process::Error::Qmp(_)), "{e:?}");
    vm.shutdown(Duration::from_secs(20)).unwrap();
    let temp = vm.temp_dir().unwrap().to_owned();
    drop(vm);
    assert!(!temp.exists() && !sock.exists());
}

/// The plain OVMF variable template the profile would pick.
fn plain_vars_template() -> PathBuf {
    qemu_cmdline::X86_64
        .uefi
        .iter()
        .find(|p| Path::new(p.code).is_file() && Path::new(p.vars).is_file())
        .map(|p| PathBuf::from(p.vars))
        .expect("OVMF missing: apt-get install -y ovmf")
}

fn wait_console(vm: &mut Vm, text: &str) {
    if let Err(e) = vm.console_wait_for(text.as_bytes(), BOOT) {
        panic!(
            "no {text:?}: {e}\nconsole: {}",
            String::from_utf8_lossy(&vm.console_read())
        );
    }
}

#[test]
fn uefi_default_partitions_keep_variables_per_vm() {
    let s = scratch("uefi");
    let template = plain_vars_template();
    let before = std::fs::read(&template).unwrap();
    let mut vm = launch_json(
        r#"{"default_partitions": true, "disk_size": "64M"}"#,
        &options(s.path()),
    )
    .unwrap();
    let names: Vec<(&str, DriveKind)> = vm
        .drives()
        .iter()
        .map(|d| (d.name.as_str(), d.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("root", DriveKind::Disk),
            ("uefi_code", DriveKind::UefiCode),
            ("uefi_vars", DriveKind::UefiVars)
        ]
    );
    let root = vm.drives()[0].clone();
    assert!(root.owned && root.path.starts_with(vm.temp_dir().unwrap()));
    // QEMU holds the image open: plain info is refused by the lock, force_share reads it.
    let img = qemu_process::image::QemuImg::new();
    assert!(img.info(&root.path).is_err());
    let info = img.info_with(&root.path, None, true).unwrap();
    assert_eq!((info.format, info.virtual_size), (Format::Qcow2, 64 << 20));
    let vars = vm.drives()[2].path.clone();
    assert!(vars.starts_with(vm.temp_dir().unwrap()));

    // OVMF boots (the empty root disk fails, the built-in shell starts) and writes variables.
    wait_console(&mut vm, "UEFI Interactive Shell");
    vm.shutdown(Duration::from_secs(20)).unwrap();
    let dumped = s.path().join("vars.fd");
    vm.dump("uefi_vars", &dumped, None, |_| {}).unwrap();
    let after = std::fs::read(&dumped).unwrap();
    assert_eq!(after.len(), before.len());
    assert_ne!(after, before, "OVMF wrote no variables");
    assert_eq!(after, std::fs::read(&vars).unwrap());
    // The system template is untouched; the variables persist across a relaunch.
    assert_eq!(std::fs::read(&template).unwrap(), before);
    vm.relaunch().unwrap();
    assert_eq!(vm.drives()[2].path, vars);
    vm.shutdown(Duration::from_secs(20)).unwrap();
}

#[test]
fn uefi_secure_boot_refuses_the_unsigned_shell() {
    let s = scratch("uefi-sb");
    let spec = VmSpec {
        uefi: Some(UefiSpec {
            variant: UefiVariant::SecureBoot,
            ..UefiSpec::default()
        }),
        ..VmSpec::default()
    };
    let mut vm = launch(spec, &options(s.path())).unwrap();
    let code = vm
        .resolved_spec()
        .unwrap()
        .uefi
        .as_ref()
        .unwrap()
        .code
        .clone()
        .unwrap();
    assert!(
        code.to_string_lossy().contains("secboot"),
        "{}",
        code.display()
    );
    let argv: Vec<String> = vm
        .argv()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(argv.iter().any(|a| a.contains("smm=on")), "{argv:?}");
    wait_console(&mut vm, "Security Violation");
    vm.shutdown(Duration::from_secs(20)).unwrap();
}
