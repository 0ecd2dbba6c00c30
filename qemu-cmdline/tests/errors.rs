//! Every class of mistake is a typed error naming the option and field, found at build time.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use qemu_cmdline::*;

fn cmd() -> CommandLine {
    let mut c = CommandLine::new("qemu-system-x86_64");
    c.machine(Machine::new("q35"));
    c
}

fn err(c: &CommandLine) -> Error {
    match c.build() {
        Ok(argv) => panic!("expected an error, got {argv}"),
        Err(e) => e,
    }
}

#[test]
fn duplicate_ids_name_both_definitions() {
    let mut c = cmd();
    c.disk(Disk::new("root", "/a"))
        .device(Device::new("virtio-rng-pci").id("root"));
    assert_eq!(
        err(&c),
        Error::DuplicateId {
            kind: IdKind::Device,
            id: "root".into(),
            first: "disk \"root\"".into(),
            second: "-device virtio-rng-pci (id=root)".into(),
        }
    );
    assert_eq!(
        err(&c).to_string(),
        "device id \"root\" is defined twice: by disk \"root\" and by -device virtio-rng-pci (id=root)"
    );

    // Same id in different namespaces is fine.
    let mut c = cmd();
    c.disk(Disk::new("x", "/a"))
        .netdev(Netdev::new("x", NetBackend::default()))
        .chardev(Chardev::null("x"))
        .object(Object::new("iothread", "x"));
    c.build().unwrap();

    // Block nodes: a hand-written node clashing with a disk's protocol node.
    let mut c = cmd();
    c.disk(Disk::new("d", "/a"))
        .blockdev(Blockdev::new("null-co", "d-file"));
    let e = err(&c);
    assert!(
        matches!(&e, Error::DuplicateId { kind: IdKind::Node, id, .. } if id == "d-file"),
        "{e}"
    );

    let mut c = cmd();
    c.chardev(Chardev::null("c")).chardev(Chardev::pty("c"));
    assert!(matches!(
        err(&c),
        Error::DuplicateId {
            kind: IdKind::Chardev,
            ..
        }
    ));
    let mut c = cmd();
    c.nic(Nic::user("n"))
        .netdev(Netdev::new("n", NetBackend::default()));
    assert!(matches!(
        err(&c),
        Error::DuplicateId {
            kind: IdKind::Netdev,
            ..
        }
    ));
    let mut c = cmd();
    c.object(Object::new("iothread", "o"))
        .object(Object::new("iothread", "o"));
    assert!(matches!(
        err(&c),
        Error::DuplicateId {
            kind: IdKind::Object,
            ..
        }
    ));
    let mut c = cmd();
    c.add_fd(AddFd::new(4, 1)).add_fd(AddFd::new(4, 1));
    assert!(matches!(
        err(&c),
        Error::DuplicateId {
            kind: IdKind::FdSet,
            ..
        }
    ));
}

#[test]
fn missing_backends_and_buses() {
    let mut c = cmd();
    c.device(Device::new("virtio-blk-pci").id("vd").prop("drive", "nope"));
    assert_eq!(
        err(&c),
        Error::MissingId {
            kind: IdKind::Node,
            id: "nope".into(),
            what: "-device virtio-blk-pci (id=vd)".into(),
            field: "drive".into(),
        }
    );
    assert_eq!(
        err(&c).to_string(),
        "-device virtio-blk-pci (id=vd): drive refers to block node name \"nope\", which nothing on the command line defines"
    );

    for (field, kind) in [
        ("netdev", IdKind::Netdev),
        ("chardev", IdKind::Chardev),
        ("memdev", IdKind::Object),
        ("bus", IdKind::Bus),
    ] {
        let mut c = cmd();
        c.device(Device::new("x").prop(field, "missing"));
        let e = err(&c);
        assert!(
            matches!(&e, Error::MissingId { kind: k, field: f, .. } if *k == kind && f == field),
            "{e}"
        );
    }

    let mut c = cmd();
    c.serial("console");
    assert!(err(&c)
        .to_string()
        .contains("-serial chardev:console: chardev refers to chardev id \"console\""));
    let mut c = cmd();
    c.monitor(Monitor::qmp("qmp"));
    assert!(matches!(
        err(&c),
        Error::MissingId {
            kind: IdKind::Chardev,
            ..
        }
    ));
    let mut c = cmd();
    c.blockdev(Blockdev::new("qcow2", "top").prop("file", "gone"));
    assert!(matches!(
        err(&c),
        Error::MissingId {
            kind: IdKind::Node,
            ..
        }
    ));

    // A SCSI disk on a named controller that is a device without a SCSI bus of that name.
    let mut c = cmd();
    c.disk(
        Disk::new("s", "/a")
            .interface(DiskInterface::Scsi)
            .scsi_controller("hba"),
    );
    // The controller is created since no device defines it.
    assert!(c
        .build()
        .unwrap()
        .to_string()
        .contains("virtio-scsi-pci,id=hba"));

    // Machine buses depend on the machine type.
    let mut c = cmd();
    c.device(Device::new("virtio-rng-pci").prop("bus", "pci.0"));
    assert!(matches!(
        err(&c),
        Error::MissingId {
            kind: IdKind::Bus,
            ..
        }
    ));
    c.machine(Machine::new("pc"));
    c.build().unwrap();
    // Buses named after devices: a root port's own bus, or a controller's ID.N.
    let mut c = cmd();
    c.device(Device::new("pcie-root-port").id("rp").prop("chassis", 1u8))
        .device(
            Device::new("virtio-serial-pci")
                .id("vser")
                .prop("bus", "rp"),
        )
        .chardev(Chardev::null("c"))
        .device(
            Device::new("virtconsole")
                .prop("bus", "vser.0")
                .prop("chardev", "c"),
        );
    c.build().unwrap();
    c.device(Device::new("virtconsole").prop("bus", "vser.x"));
    assert!(matches!(
        err(&c),
        Error::MissingId {
            kind: IdKind::Bus,
            ..
        }
    ));
    // Ids declared as external satisfy references.
    let mut c = cmd();
    c.arg("-drive")
        .arg("if=none,id=legacy,file=/x")
        .external_id(IdKind::Node, "legacy")
        .device(Device::new("virtio-blk-pci").prop("drive", "legacy"));
    c.build().unwrap();
}

#[test]
fn backends_used_twice() {
    let mut c = cmd();
    c.chardev(Chardev::socket_fd("con", 4))
        .serial("con")
        .monitor(Monitor::hmp("con"));
    assert_eq!(
        err(&c),
        Error::AlreadyInUse {
            kind: IdKind::Chardev,
            id: "con".into(),
            first: "-serial chardev:con".into(),
            second: "-mon chardev=con".into(),
        }
    );
    // mux=on allows sharing.
    let mut c = cmd();
    c.chardev(Chardev::socket_fd("con", 4).mux(true))
        .serial("con")
        .monitor(Monitor::hmp("con"));
    c.build().unwrap();

    let mut c = cmd();
    c.disk(Disk::new("d", "/a"))
        .device(Device::new("virtio-blk-pci").prop("drive", "d"));
    assert!(matches!(
        err(&c),
        Error::AlreadyInUse {
            kind: IdKind::Node,
            ..
        }
    ));
    let mut c = cmd();
    c.nic(Nic::user("n"))
        .device(Device::new("e1000").prop("netdev", "n"));
    assert!(matches!(
        err(&c),
        Error::AlreadyInUse {
            kind: IdKind::Netdev,
            ..
        }
    ));
    // UEFI nodes are attached by the machine.
    let mut c = cmd();
    c.uefi("/c", "/v")
        .device(Device::new("virtio-blk-pci").prop("drive", "uefi-vars"));
    let e = err(&c);
    assert!(
        e.to_string()
            .contains("used by both -machine q35 and -device virtio-blk-pci"),
        "{e}"
    );
}

#[test]
fn ports_out_of_range_and_clashes() {
    // Host port 0: the kernel picks one when QEMU listens (two of them never clash).
    let mut c = cmd();
    c.nic(
        Nic::user("a")
            .forward(PortForward::tcp(0, 22).name("ssh"))
            .forward(PortForward::tcp(0, 80).name("http")),
    );
    let argv = c.build().unwrap().to_string();
    assert!(
        argv.contains("hostfwd=tcp:127.0.0.1:0-:22,hostfwd=tcp:127.0.0.1:0-:80"),
        "{argv}"
    );
    let mut c = cmd();
    c.nic(Nic::user("a").forward(PortForward::tcp(80, 0)));
    assert_eq!(
        err(&c).to_string(),
        "netdev \"a\" forward #0 (tcp:127.0.0.1:80-:0) guest_port: port 0 is out of range (1..=65535)"
    );

    let mut c = cmd();
    c.nic(Nic::user("a").forward(PortForward::tcp(2222, 22).name("ssh")))
        .nic(
            Nic::user("b").forward(
                PortForward::tcp(2222, 23)
                    .host_addr(std::net::Ipv4Addr::LOCALHOST)
                    .name("telnet"),
            ),
        );
    assert_eq!(
        err(&c),
        Error::PortClash {
            first: "netdev \"a\" forward \"ssh\"".into(),
            second: "netdev \"b\" forward \"telnet\"".into(),
        }
    );
    // Different protocols do not clash.
    let mut c = cmd();
    c.nic(
        Nic::user("a")
            .forward(PortForward::tcp(53, 53))
            .forward(PortForward::udp(53, 53)),
    );
    c.build().unwrap();

    // Port forwards need a user-mode backend.
    let mut c = cmd();
    c.nic(Nic::new("t", NetBackend::Tap(TapNet::default())).forward(PortForward::tcp(1, 2)));
    assert!(err(&c)
        .to_string()
        .contains("nic \"t\" forwards: port forwards need a user-mode backend, this one is tap"));

    let mut c = cmd();
    c.chardev(Chardev::tcp_client("c", "h", 0));
    assert!(matches!(err(&c), Error::InvalidPort { .. }));
}

#[test]
fn nul_bytes_invalid_keys_and_utf8() {
    let mut c = cmd();
    c.disk(Disk::new("d", "/a\0b"));
    assert_eq!(
        err(&c),
        Error::NulByte {
            what: "disk \"d\"".into(),
            field: "filename".into()
        }
    );
    assert_eq!(
        err(&c).to_string(),
        "disk \"d\": filename contains a NUL byte"
    );

    let mut c = cmd();
    c.device(Device::new("x").prop("bad,key", 1u8));
    assert_eq!(
        err(&c),
        Error::InvalidKey {
            what: "-device x".into(),
            key: "bad,key".into()
        }
    );
    let mut c = cmd();
    c.object(Object::new("t", "o").prop("nested", Props::new().with("in valid", 1u8)));
    assert_eq!(
        err(&c),
        Error::InvalidKey {
            what: "-object t (id=o)".into(),
            key: "nested.in valid".into()
        }
    );
    for key in ["", "1x", "a=b", "a b", "é"] {
        let mut c = cmd();
        c.device(Device::new("x").prop(key, 1u8));
        assert!(matches!(err(&c), Error::InvalidKey { .. }), "{key:?}");
    }

    for raw in [&b"-append"[..], b"x\0y"] {
        let mut c = cmd();
        c.arg(OsString::from_vec(raw.to_vec())).arg("a\0");
        let e = err(&c);
        assert_eq!(e.iter().count(), 1 + raw.contains(&0) as usize, "{e}");
        assert!(e.iter().all(|e| matches!(e, Error::NulByte { .. })), "{e}");
    }
    let mut c = cmd();
    c.kernel("/k").append("console=ttyS0\0");
    assert!(matches!(err(&c), Error::NulByte { .. }));

    let bad = OsString::from_vec(b"/vm/\xff.img".to_vec());
    let mut c = cmd();
    c.disk(Disk::new("d", &bad));
    c.build().unwrap();
    c.json_syntax(true);
    assert_eq!(
        err(&c),
        Error::NotUtf8 {
            what: "disk \"d\"".into(),
            field: "filename".into()
        }
    );
    assert!(err(&c).to_string().contains("use keyval syntax"));
    // Options with no JSON form take the bytes as they are.
    let mut c = cmd();
    c.json_syntax(true)
        .chardev(Chardev::file("c", std::path::PathBuf::from(bad)));
    c.build().unwrap();
}

#[test]
fn invalid_ids() {
    let mut c = cmd();
    c.device(Device::new("x").id("0bad"));
    assert_eq!(
        err(&c),
        Error::InvalidId {
            what: "-device x (id=0bad)".into(),
            field: "id".into(),
            id: "0bad".into(),
            reason: "it must start with an ASCII letter".into(),
        }
    );
    let mut c = cmd();
    c.chardev(Chardev::null("a,b"));
    assert!(matches!(err(&c), Error::InvalidId { .. }));
    let mut c = cmd();
    c.disk(Disk::new("a-very-long-disk-identifier", "/x"));
    let e = err(&c);
    assert!(
        e.to_string().contains("at most 31 bytes, this one is 32"),
        "{e}"
    );
    let mut c = cmd();
    c.disk(Disk::new("exactly-26-bytes-long-id-x", "/x"));
    c.build().unwrap();
}

#[test]
fn settings_qemu_would_reject() {
    let cases: Vec<(CommandLine, &str)> = vec![
        (
            {
                let mut c = cmd();
                c.disk(Disk::new("d", "/a").aio(Aio::Native));
                c
            },
            "disk \"d\" aio: aio=native needs cache.direct=on",
        ),
        (
            {
                let mut c = cmd();
                c.disk(
                    Disk::new("d", "/a")
                        .interface(DiskInterface::Ide)
                        .read_only(true),
                );
                c
            },
            "ide-hd cannot use a read-only image",
        ),
        (
            {
                let mut c = CommandLine::new("q");
                c.uefi("/c", "/v");
                c
            },
            "UEFI pflash needs a machine type",
        ),
        (
            {
                let mut c = cmd();
                c.uuid("not-a-uuid");
                c
            },
            "-uuid: \"not-a-uuid\" is not a UUID",
        ),
        (
            {
                let mut c = cmd();
                c.smp(Smp::new(8).sockets(2).cores(2).threads(1));
                c
            },
            "sockets*dies*cores*threads = 4 does not match cpus=8",
        ),
        (
            {
                let mut c = cmd();
                c.memory(Size::bytes_exact(512));
                c
            },
            "write \"512M\" for MiB",
        ),
        (
            {
                let mut c = cmd();
                c.initrd("/i");
                c
            },
            "-initrd: only allowed with direct kernel boot",
        ),
        (
            {
                let mut c = cmd();
                c.add_fd(AddFd::new(1, 0));
                c
            },
            "must be 3 or above",
        ),
        (
            {
                let mut c = cmd();
                c.fw_cfg(FwCfg::string("opt/".to_string() + &"x".repeat(52), "v"));
                c
            },
            "1 to 55 bytes, this one is 56",
        ),
        (
            {
                let mut c = cmd();
                c.chardev(Chardev::unix_server(
                    "c",
                    format!("/{}", "d".repeat(120)),
                    false,
                ));
                c
            },
            "at most 107 bytes",
        ),
        (
            {
                let mut c = cmd();
                c.display(Display::Vnc(Vnc::Tcp {
                    host: Some("::1".into()),
                    display: 0,
                }));
                c
            },
            "in brackets",
        ),
        (
            {
                let mut c = cmd();
                c.cpu(Cpu::new("max").prop("x", "a,b"));
                c
            },
            "-cpu max: x: a -cpu value cannot hold a comma",
        ),
        (
            {
                let mut c = cmd();
                c.machine(Machine::new("q35").prop("accel", "kvm"))
                    .accel(Accel::Tcg);
                c
            },
            "-machine accel: QEMU rejects -machine accel= together with -accel",
        ),
    ];
    for (c, needle) in cases {
        let e = err(&c).to_string();
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
}

#[test]
fn all_errors_are_reported_together() {
    let mut c = cmd();
    c.device(Device::new("x").prop("drive", "a"))
        .device(Device::new("y").prop("bad key", 1u8))
        .serial("nothing");
    let e = err(&c);
    let all: Vec<&Error> = e.iter().collect();
    assert_eq!(all.len(), 3, "{e}");
    assert!(e.to_string().starts_with("3 errors: "), "{e}");
}
