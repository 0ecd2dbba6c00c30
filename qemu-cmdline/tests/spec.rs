//! The JSON VM description: round trips, unknown fields, and the argv it turns into.

use qemu_cmdline::*;

const FULL: &str = r#"{
  "arch": "aarch64",
  "binary": "/opt/qemu/bin/qemu-system-aarch64",
  "machine": {"type": "virt", "props": {"gic-version": "3", "virtualization": true}},
  "cpu": {"model": "cortex-a72", "props": {"pmu": false}},
  "smp": {"cpus": 2, "sockets": 1, "cores": 2, "threads": 1},
  "memory": "1536M",
  "accel": ["kvm", "tcg"],
  "name": "board,1",
  "uuid": "12345678-9abc-def0-1234-56789abcdef0",
  "kernel": "/boot/Image",
  "initrd": "/boot/initrd",
  "append": "console=ttyAMA0 root=/dev/vda",
  "dtb": "/boot/board.dtb",
  "uefi": {"code": "/usr/share/AAVMF/AAVMF_CODE.fd", "vars": "/run/vm/VARS.fd"},
  "disks": [
    {"id": "root", "path": "/vm/root,1.qcow2", "format": "qcow2", "bootindex": 1,
     "snapshot": true, "overlay": "/run/vm/root.ovl", "cache": "none", "aio": "native",
     "discard": "unmap", "serial": "R1"},
    {"name": "data", "path": "/dev/sdb", "protocol": "host_device", "interface": "scsi",
     "read_only": true}
  ],
  "nics": [
    {"id": "wan", "mac": "52:54:00:00:00:01",
     "forwards": [{"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 2222,
                   "guest_addr": "10.0.2.15", "guest_port": 22, "name": "ssh"},
                  {"proto": "udp", "host_port": 6969, "guest_port": 69}]},
    {"model": "e1000", "backend": {"type": "socket", "socket": {"connect": "127.0.0.1:9000"}}}
  ],
  "serial": [{"type": "fd", "fd": 4}, {"type": "pty"}],
  "chardevs": [{"id": "qmp", "backend": {"type": "unix", "path": "/run/vm/qmp.sock", "server": true}}],
  "monitors": [{"chardev": "qmp"}],
  "display": {"vnc": {"unix": "/run/vm/vnc.sock"}},
  "vga": "none",
  "devices": [{"driver": "virtio-rng-pci", "id": "rng", "props": {"rng": "rng0"}}],
  "objects": [{"qom_type": "rng-random", "id": "rng0", "props": {"filename": "/dev/urandom"}}],
  "fw_cfg": [{"name": "opt/x", "string": "y"}],
  "sandbox": {"enable": true, "deny_spawn": true},
  "extra_args": ["-rtc", "base=utc"],
  "json_syntax": true,
  "nodefaults": false,
  "no_reboot": true,
  "paused": true,
  "virtio_transport": "pci"
}"#;

#[test]
fn full_spec_round_trips() {
    let spec = VmSpec::from_json(FULL).unwrap();
    let text = spec.to_json().unwrap();
    let again = VmSpec::from_json(&text).unwrap();
    assert_eq!(again, spec);
    // And the JSON itself is stable after one normalisation.
    assert_eq!(again.to_json().unwrap(), text);
    assert_eq!(
        spec.disks[1].id.as_deref(),
        Some("data"),
        "name is an alias of id"
    );
}

#[test]
fn empty_spec_is_a_headless_default_vm() {
    let spec = VmSpec::from_json("{}").unwrap();
    assert_eq!(spec, VmSpec::default());
    // Only the architecture is always written out.
    assert_eq!(spec.to_json().unwrap(), "{\n  \"arch\": \"x86_64\"\n}");
    assert_eq!(
        spec.to_argv().unwrap().to_string(),
        "qemu-system-x86_64 -machine q35 -cpu max -nodefaults -display none"
    );
}

#[test]
fn machine_none_gets_no_default_cpu() {
    // `-machine none` has no CPU; QEMU refuses a `-cpu` there. A CPU the spec names is kept.
    for accel in ["", r#", "accel": ["tcg"]"#, r#", "accel": ["kvm"]"#] {
        let spec = VmSpec::from_json(&format!(r#"{{"machine": "none"{accel}}}"#)).unwrap();
        let argv = spec.to_argv().unwrap().to_string();
        assert!(!argv.contains("-cpu"), "{argv}");
    }
    let spec = VmSpec::from_json(r#"{"machine": "none", "cpu": "qemu64"}"#).unwrap();
    assert!(spec.to_argv().unwrap().to_string().contains("-cpu qemu64"));
}

#[test]
fn unknown_fields_are_named() {
    for (doc, field) in [
        (r#"{"memroy": "1G"}"#, "memroy"),
        (
            r#"{"disks": [{"path": "/a", "readonly": true}]}"#,
            "readonly",
        ),
        (
            r#"{"nics": [{"forwards": [{"host_port": 1, "guest_port": 2, "hostaddr": "x"}]}]}"#,
            "hostaddr",
        ),
        (
            r#"{"nics": [{"backend": {"type": "tap", "ifnam": "x"}}]}"#,
            "ifnam",
        ),
        (r#"{"serial": [{"type": "pty", "path": "/x"}]}"#, "path"),
        (
            r#"{"uefi": {"code": "/c", "vars": "/v", "secure": true}}"#,
            "secure",
        ),
        (r#"{"machine": {"type": "q35", "prop": {}}}"#, "prop"),
        (r#"{"smp": {"cpus": 2, "socket": 1}}"#, "socket"),
        (r#"{"devices": [{"driver": "x", "prop": {}}]}"#, "prop"),
        (r#"{"sandbox": {"enabled": true}}"#, "enabled"),
    ] {
        let e = VmSpec::from_json(doc).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Spec { .. }));
        assert!(
            msg.contains(&format!("unknown field `{field}`")),
            "{doc}: {msg}"
        );
    }
}

#[test]
fn bad_values_are_named() {
    for (doc, needle) in [
        (r#"{"memory": "2 GB"}"#, "invalid size \"2 GB\""),
        (r#"{"arch": "mips"}"#, "unknown variant `mips`"),
        (
            r#"{"nics": [{"forwards": [{"host_port": 65536, "guest_port": 22}]}]}"#,
            "host_port: port 65536 is out of range",
        ),
        (r#"{"nics": [{"mac": "01:00:00:00:00:00"}]}"#, "multicast"),
        (r#"{"accel": ["k v m"]}"#, "not an accelerator name"),
        (
            r#"{"devices": [{"driver": "x", "props": {"a": 0.5}}]}"#,
            "fraction",
        ),
        (
            r#"{"disks": [{"format": "qc ow2"}]}"#,
            "\"qc ow2\" is not a format name",
        ),
        (
            r#"{"nics": [{"forwards": [{"host_port": 0, "guest_port": 70000}]}]}"#,
            "guest_port: port 70000 is out of range (1..=65535)",
        ),
    ] {
        let msg = VmSpec::from_json(doc).unwrap_err().to_string();
        assert!(msg.contains(needle), "{doc}: {msg}");
    }
}

#[test]
fn full_spec_argv() {
    let spec = VmSpec::from_json(FULL).unwrap();
    let argv = spec.to_argv().unwrap();
    assert_eq!(argv.program, "/opt/qemu/bin/qemu-system-aarch64");
    let args: Vec<String> = argv
        .args
        .iter()
        .map(|a| a.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        args,
        [
            "-machine",
            "virt,gic-version=3,virtualization=on,pflash0=uefi-code,pflash1=uefi-vars",
            "-accel",
            "kvm",
            "-accel",
            "tcg",
            "-cpu",
            "cortex-a72,pmu=off",
            "-smp",
            "2,sockets=1,cores=2,threads=1",
            "-m",
            "1536M",
            "-name",
            "guest=board,,1",
            "-uuid",
            "12345678-9abc-def0-1234-56789abcdef0",
            "-no-reboot",
            "-S",
            "-sandbox",
            "on,spawn=deny",
            "-blockdev",
            r#"{"driver":"file","node-name":"uefi-code-file","filename":"/usr/share/AAVMF/AAVMF_CODE.fd","read-only":true}"#,
            "-blockdev",
            r#"{"driver":"raw","node-name":"uefi-code","file":"uefi-code-file","read-only":true}"#,
            "-blockdev",
            r#"{"driver":"file","node-name":"uefi-vars-file","filename":"/run/vm/VARS.fd"}"#,
            "-blockdev",
            r#"{"driver":"raw","node-name":"uefi-vars","file":"uefi-vars-file"}"#,
            "-kernel",
            "/boot/Image",
            "-initrd",
            "/boot/initrd",
            "-append",
            "console=ttyAMA0 root=/dev/vda",
            "-dtb",
            "/boot/board.dtb",
            "-vnc",
            "unix:/run/vm/vnc.sock",
            "-vga",
            "none",
            "-device",
            r#"{"driver":"virtio-scsi-pci","id":"scsi0"}"#,
            "-object",
            r#"{"qom-type":"rng-random","id":"rng0","filename":"/dev/urandom"}"#,
            "-chardev",
            "socket,id=qmp,path=/run/vm/qmp.sock,server=on,wait=off",
            "-blockdev",
            r#"{"driver":"file","node-name":"root-file","filename":"/vm/root,1.qcow2","read-only":true,"cache":{"direct":true,"no-flush":false},"discard":"unmap","aio":"native"}"#,
            "-blockdev",
            r#"{"driver":"qcow2","node-name":"root-base","file":"root-file","read-only":true,"cache":{"direct":true,"no-flush":false},"discard":"unmap"}"#,
            "-blockdev",
            r#"{"driver":"file","node-name":"root-ovl","filename":"/run/vm/root.ovl","cache":{"direct":true,"no-flush":false},"discard":"unmap","aio":"native"}"#,
            "-blockdev",
            r#"{"driver":"qcow2","node-name":"root","file":"root-ovl","backing":"root-base","cache":{"direct":true,"no-flush":false},"discard":"unmap"}"#,
            "-device",
            r#"{"driver":"virtio-blk-pci","id":"root","drive":"root","bootindex":1,"serial":"R1"}"#,
            "-blockdev",
            r#"{"driver":"host_device","node-name":"data-file","filename":"/dev/sdb","read-only":true}"#,
            "-blockdev",
            r#"{"driver":"raw","node-name":"data","file":"data-file","read-only":true}"#,
            "-device",
            r#"{"driver":"scsi-hd","id":"data","bus":"scsi0.0","drive":"data"}"#,
            "-netdev",
            r#"{"type":"user","id":"wan","hostfwd":[{"str":"tcp:127.0.0.1:2222-10.0.2.15:22"},{"str":"udp:127.0.0.1:6969-:69"}]}"#,
            "-device",
            r#"{"driver":"virtio-net-pci","id":"wan","netdev":"wan","mac":"52:54:00:00:00:01"}"#,
            "-netdev",
            r#"{"type":"socket","id":"net1","connect":"127.0.0.1:9000"}"#,
            "-device",
            r#"{"driver":"e1000","id":"net1","netdev":"net1"}"#,
            "-chardev",
            "socket,id=serial0,fd=4",
            "-serial",
            "chardev:serial0",
            "-chardev",
            "pty,id=serial1",
            "-serial",
            "chardev:serial1",
            "-mon",
            "chardev=qmp,mode=control",
            "-device",
            r#"{"driver":"virtio-rng-pci","id":"rng","rng":"rng0"}"#,
            "-fw_cfg",
            "name=opt/x,string=y",
            "-rtc",
            "base=utc",
        ]
    );
}

#[test]
fn profile_defaults_apply_when_fields_are_absent() {
    let spec =
        VmSpec::from_json(r#"{"arch": "aarch64", "accel": ["tcg"], "paused": true}"#).unwrap();
    assert_eq!(
        spec.to_argv().unwrap().to_string(),
        "qemu-system-aarch64 -machine virt,gic-version=max -accel tcg -cpu cortex-a57 -nodefaults -S -display none"
    );
    let spec = VmSpec::from_json(
        r#"{"arch": "aarch64", "virtio_transport": "mmio", "disks": [{"path": "/d"}], "nics": [{}], "smp": 2}"#,
    )
    .unwrap();
    let s = spec.to_argv().unwrap().to_string();
    assert!(s.contains("-smp 2 "), "{s}");
    assert!(
        s.contains("-device virtio-blk-device,id=disk0,drive=disk0"),
        "{s}"
    );
    assert!(
        s.contains("-netdev user,id=net0 -device virtio-net-device,id=net0,netdev=net0"),
        "{s}"
    );
    let spec = VmSpec::from_json(r#"{"arch": "riscv64", "memory": 268435456}"#).unwrap();
    assert_eq!(
        spec.to_argv().unwrap().to_string(),
        "qemu-system-riscv64 -machine virt -m 256M -nodefaults -display none"
    );
}

#[test]
fn spec_level_errors() {
    for (doc, needle) in [
        (
            r#"{"disks": [{"path": "/a", "snapshot": true}]}"#,
            "disks[0] (\"disk0\") overlay: snapshot needs an overlay file",
        ),
        (
            r#"{"disks": [{"path": "/a", "overlay": "/o"}]}"#,
            "an overlay is set but snapshot is false",
        ),
        (
            r#"{"bios": "/b", "uefi": {"code": "/c", "vars": "/v"}}"#,
            "choose one firmware",
        ),
        (
            r#"{"fw_cfg": [{"name": "opt/a"}]}"#,
            "fw_cfg[0] (\"opt/a\"): give exactly one of file and string",
        ),
    ] {
        let e = VmSpec::from_json(doc)
            .unwrap()
            .to_command_line()
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{doc}: {e}");
    }
    // Errors found when building: duplicate ids and clashing forwards across NICs.
    let spec = VmSpec::from_json(
        r#"{"disks": [{"id": "a", "path": "/1"}, {"id": "a", "path": "/2"}],
            "nics": [{"forwards": [{"host_port": 80, "guest_port": 80}]},
                     {"forwards": [{"host_port": 80, "guest_port": 8080}]}]}"#,
    )
    .unwrap();
    let e = spec.to_argv().unwrap_err();
    assert!(
        e.iter().any(|e| matches!(e, Error::DuplicateId { .. })),
        "{e}"
    );
    assert!(
        e.iter().any(|e| matches!(e, Error::PortClash { .. })),
        "{e}"
    );
}

#[test]
fn callers_can_extend_the_command_line() {
    let spec = VmSpec::from_json(r#"{"memory": "256M"}"#).unwrap();
    let mut cmd = spec.to_command_line().unwrap();
    cmd.chardev(Chardev::socket_fd("qmp", 3))
        .monitor(Monitor::qmp("qmp"));
    assert!(cmd
        .build()
        .unwrap()
        .to_string()
        .ends_with("-chardev socket,id=qmp,fd=3 -mon chardev=qmp,mode=control"));
}

#[test]
fn secure_boot_and_forwards_onto_the_first_user_nic() {
    // A disk without a path, and UEFI without files, cannot be a command line.
    let spec = VmSpec::from_json(r#"{"disks": [{"name": "root"}], "uefi": {}}"#).unwrap();
    let msg = spec.to_argv().unwrap_err().to_string();
    for needle in ["disks[0] (\"root\") path", "set both code and vars"] {
        assert!(msg.contains(needle), "{needle}: {msg}");
    }

    // Secure boot: SMM and a secure pflash on x86_64, refused elsewhere.
    let spec =
        VmSpec::from_json(r#"{"uefi": {"code": "/c", "vars": "/v", "variant": "secure_boot"}}"#)
            .unwrap();
    let argv = spec.to_argv().unwrap().to_string();
    assert!(
        argv.contains("-machine q35,smm=on,pflash0=uefi-code,pflash1=uefi-vars"),
        "{argv}"
    );
    assert!(
        argv.contains("-global driver=cfi.pflash01,property=secure,value=on"),
        "{argv}"
    );
    let spec = VmSpec::from_json(
        r#"{"arch": "aarch64", "uefi": {"code": "/c", "vars": "/v", "variant": "secure_boot"}}"#,
    )
    .unwrap();
    assert!(spec
        .to_argv()
        .unwrap_err()
        .to_string()
        .contains("x86_64 only"));

    // Forwards go onto the first user NIC, which is added when there is none.
    let mut spec = VmSpec::default();
    spec.forward(PortForward::tcp(0, 80).name("web")).unwrap();
    let argv = spec.to_argv().unwrap().to_string();
    assert!(
        argv.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:0-:80"),
        "{argv}"
    );
    let mut spec = VmSpec::from_json(r#"{"nics": [{"backend": {"type": "tap"}}]}"#).unwrap();
    assert!(spec
        .forward(PortForward::tcp(8080, 80))
        .unwrap_err()
        .to_string()
        .contains("need a user-mode NIC"));
}

/// `guest_agent` is the device the guest sees; its backend is the launcher's descriptor (the
/// harness) or a chardev of the spec's own with the agreed id; without either it is refused.
#[test]
fn guest_agent_port_on_the_harness_channel_or_a_named_chardev() {
    let mut spec = VmSpec::from_json(r#"{"guest_agent": true, "memory": "256M"}"#).unwrap();
    assert!(spec.guest_agent);
    assert!(spec.to_json().unwrap().contains("\"guest_agent\": true"));
    let harness = Harness {
        qmp_fd: Some(3),
        guest_agent_fd: Some(5),
        ..Harness::default()
    };
    let argv = spec
        .to_command_line_with(&harness)
        .unwrap()
        .build()
        .unwrap();
    let text = argv.to_string();
    assert!(
        text.contains(
            "-chardev socket,id=qm-qga,fd=5 -device virtio-serial-pci,id=qm-qga-vser \
             -device virtserialport,id=qm-qga-port,bus=qm-qga-vser.0,chardev=qm-qga,\
             name=org.qemu.guest_agent.0"
        ),
        "{text}"
    );
    // The transport follows the profile (or the spec's override).
    spec.virtio_transport = Some(VirtioTransport::Mmio);
    let text = spec
        .to_command_line_with(&harness)
        .unwrap()
        .build()
        .unwrap()
        .to_string();
    assert!(
        text.contains("-device virtio-serial-device,id=qm-qga-vser"),
        "{text}"
    );
    spec.virtio_transport = None;
    // JSON syntax renders the same devices.
    spec.json_syntax = true;
    let text = spec
        .to_command_line_with(&harness)
        .unwrap()
        .build()
        .unwrap()
        .to_string();
    assert!(
        text.contains(r#""driver":"virtserialport","id":"qm-qga-port","bus":"qm-qga-vser.0","chardev":"qm-qga","name":"org.qemu.guest_agent.0""#),
        "{text}"
    );
    spec.json_syntax = false;

    // Without a backend: refused, naming the field and both ways to give one.
    let err = spec.to_argv().unwrap_err().to_string();
    assert!(err.contains("guest_agent"), "{err}");
    assert!(err.contains("Harness::guest_agent_fd"), "{err}");
    assert!(err.contains("\"qm-qga\""), "{err}");

    // A chardev of the spec's own with that id is the backend when there is no harness.
    let own = VmSpec::from_json(
        r#"{"guest_agent": true, "chardevs": [{"id": "qm-qga", "backend":
            {"type": "unix", "path": "/run/vm/qga.sock", "server": true, "wait": false}}]}"#,
    )
    .unwrap();
    let text = own.to_argv().unwrap().to_string();
    assert!(
        text.contains("-chardev socket,id=qm-qga,path=/run/vm/qga.sock,server=on,wait=off"),
        "{text}"
    );
    assert!(
        text.contains("chardev=qm-qga,name=org.qemu.guest_agent.0"),
        "{text}"
    );

    // The harness channel alone (no guest_agent in the spec) adds only the chardev.
    let plain = VmSpec::default()
        .to_command_line_with(&harness)
        .unwrap()
        .build()
        .unwrap()
        .to_string();
    assert!(plain.contains("-chardev socket,id=qm-qga,fd=5"), "{plain}");
    assert!(!plain.contains("virtserialport"), "{plain}");
}
