//! Golden argv tests: each piece and profile, in keyval and JSON syntax.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStringExt;

use qemu_cmdline::*;

/// The arguments (without the program), one per element, for exact comparison.
fn args(cmd: &CommandLine) -> Vec<String> {
    cmd.build()
        .unwrap_or_else(|e| panic!("build failed: {e}"))
        .args
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect()
}

fn cmd() -> CommandLine {
    CommandLine::new("qemu-system-x86_64")
}

#[test]
fn singletons_in_fixed_order() {
    let mut c = cmd();
    // Set in scrambled order: the argv order is fixed.
    c.sandbox(Sandbox::strict())
        .msg_timestamp()
        .paused()
        .no_shutdown()
        .no_reboot()
        .nodefaults()
        .uuid("12345678-9abc-def0-1234-56789ABCDEF0")
        .name("web,1")
        .memory(Size::gib(2))
        .smp(Smp::new(4).sockets(1).cores(2).threads(2))
        .cpu(Cpu::new("max").disable("la57"))
        .accel_fallback([Accel::Kvm, Accel::Hvf, Accel::Tcg])
        .machine(Machine::new("q35").prop("smm", false).prop("hpet", false));
    assert_eq!(
        args(&c),
        [
            "-machine",
            "q35,smm=off,hpet=off",
            "-accel",
            "kvm",
            "-accel",
            "hvf",
            "-accel",
            "tcg",
            "-cpu",
            "max,la57=off",
            "-smp",
            "4,sockets=1,cores=2,threads=2",
            "-m",
            "2G",
            "-name",
            "guest=web,,1",
            "-uuid",
            "12345678-9abc-def0-1234-56789ABCDEF0",
            "-nodefaults",
            "-no-reboot",
            "-no-shutdown",
            "-S",
            "-msg",
            "timestamp=on",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]
    );
    // A second setting replaces the first.
    c.accel(Accel::Tcg).memory(Size::parse("1536M").unwrap());
    let a = args(&c);
    assert_eq!(a[2..6], ["-accel", "tcg", "-cpu", "max,la57=off"]);
    assert!(a.windows(2).any(|w| w == ["-m", "1536M"]));
}

#[test]
fn machine_type_that_needs_the_explicit_key() {
    let mut c = cmd();
    c.machine(Machine::new("odd=type,x"));
    assert_eq!(args(&c), ["-machine", "type=odd=type,,x"]);
}

#[test]
fn memory_formats() {
    let mut c = cmd();
    c.memory(Size::parse("1.5G").unwrap());
    assert_eq!(args(&c), ["-m", "1536M"]);
    c.memory(Size::bytes_exact((1 << 20) + 4096));
    assert_eq!(args(&c), ["-m", "1028K"]);
    c.memory(Size::bytes_exact((1 << 20) + 1));
    assert_eq!(args(&c), ["-m", "1048577B"]);
}

#[test]
fn virtio_disk_keyval() {
    let mut c = cmd();
    c.disk(
        Disk::new("root", "/vm/a,b c=d é.qcow2")
            .format(Format::Qcow2)
            .bootindex(1)
            .serial("SN,1"),
    );
    assert_eq!(
        args(&c),
        [
            "-blockdev",
            "driver=file,node-name=root-file,filename=/vm/a,,b c=d é.qcow2",
            "-blockdev",
            "driver=qcow2,node-name=root,file=root-file",
            "-device",
            "virtio-blk-pci,id=root,drive=root,bootindex=1,serial=SN,,1",
        ]
    );
}

#[test]
fn virtio_disk_json() {
    let mut c = cmd();
    c.json_syntax(true).disk(
        Disk::new("root", "/vm/a,b \"q\".qcow2")
            .format(Format::Qcow2)
            .bootindex(1)
            .cache(CacheMode::Directsync)
            .discard(Discard::Unmap)
            .aio(Aio::Native),
    );
    assert_eq!(
        args(&c),
        [
            "-blockdev",
            r#"{"driver":"file","node-name":"root-file","filename":"/vm/a,b \"q\".qcow2","cache":{"direct":true,"no-flush":false},"discard":"unmap","aio":"native"}"#,
            "-blockdev",
            r#"{"driver":"qcow2","node-name":"root","file":"root-file","cache":{"direct":true,"no-flush":false},"discard":"unmap"}"#,
            "-device",
            r#"{"driver":"virtio-blk-pci","id":"root","drive":"root","bootindex":1,"write-cache":"off"}"#,
        ]
    );
}

#[test]
fn read_only_host_device_with_unsafe_cache() {
    let mut c = cmd();
    c.disk(
        Disk::new("d", "/dev/sdb")
            .protocol(Protocol::HostDevice)
            .read_only(true)
            .cache(CacheMode::Unsafe)
            .aio(Aio::IoUring)
            .format_prop("detect-zeroes", "on")
            .device_prop("addr", "0x5"),
    );
    assert_eq!(
        args(&c),
        [
            "-blockdev",
            "driver=host_device,node-name=d-file,filename=/dev/sdb,read-only=on,cache.direct=off,cache.no-flush=on,aio=io_uring",
            "-blockdev",
            "driver=raw,node-name=d,file=d-file,read-only=on,cache.direct=off,cache.no-flush=on,detect-zeroes=on",
            "-device",
            "virtio-blk-pci,id=d,drive=d,addr=0x5",
        ]
    );
}

#[test]
fn snapshot_overlay_graph() {
    let disk = Disk::new("root", "/img/base.raw")
        .snapshot("/run/vm/root.ovl")
        .bootindex(0);
    let mut c = cmd();
    c.disk(disk.clone());
    assert_eq!(
        args(&c),
        [
            "-blockdev",
            "driver=file,node-name=root-file,filename=/img/base.raw,read-only=on",
            "-blockdev",
            "driver=raw,node-name=root-base,file=root-file,read-only=on",
            "-blockdev",
            "driver=file,node-name=root-ovl,filename=/run/vm/root.ovl",
            "-blockdev",
            "driver=qcow2,node-name=root,file=root-ovl,backing=root-base",
            "-device",
            "virtio-blk-pci,id=root,drive=root,bootindex=0",
        ]
    );
    let create = disk.overlay_create().unwrap().build().unwrap();
    assert_eq!(
        create.to_string(),
        "qemu-img create -f qcow2 -b /img/base.raw -F raw /run/vm/root.ovl"
    );
    assert!(Disk::new("x", "/y").overlay_create().is_none());
}

#[test]
fn scsi_nvme_ide_interfaces() {
    let mut c = cmd();
    c.machine(Machine::new("q35"))
        .disk(Disk::new("s0", "/a").interface(DiskInterface::Scsi))
        .disk(
            Disk::new("s1", "/b")
                .interface(DiskInterface::Scsi)
                .bootindex(2),
        )
        .disk(Disk::new("n0", "/c").interface(DiskInterface::Nvme))
        .disk(Disk::new("i0", "/d").interface(DiskInterface::Ide));
    let a = args(&c);
    let devices: Vec<&String> = a
        .iter()
        .zip(a.iter().skip(1))
        .filter(|(f, _)| *f == "-device")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        devices,
        [
            "virtio-scsi-pci,id=scsi0",
            "scsi-hd,id=s0,bus=scsi0.0,drive=s0",
            "scsi-hd,id=s1,bus=scsi0.0,drive=s1,bootindex=2",
            "nvme,id=n0,drive=n0,serial=n0",
            "ide-hd,id=i0,drive=i0",
        ]
    );
    // The controller comes before the first disk that uses it.
    let ctl = a
        .iter()
        .position(|x| x == "virtio-scsi-pci,id=scsi0")
        .unwrap();
    let first = a.iter().position(|x| x.starts_with("scsi-hd")).unwrap();
    assert!(ctl < first);
}

#[test]
fn scsi_on_a_user_controller_is_not_duplicated() {
    let mut c = cmd();
    c.device(
        Device::new("virtio-scsi-pci")
            .id("hba")
            .prop("num_queues", 4u32),
    )
    .disk(
        Disk::new("s0", "/a")
            .interface(DiskInterface::Scsi)
            .scsi_controller("hba"),
    );
    assert_eq!(
        args(&c)[..2],
        ["-device", "virtio-scsi-pci,id=hba,num_queues=4"]
    );
    assert_eq!(
        args(&c)
            .iter()
            .filter(|a| a.contains("virtio-scsi"))
            .count(),
        1
    );
}

#[test]
fn mmio_transport() {
    let mut c = CommandLine::new("qemu-system-aarch64");
    c.machine(Machine::new("virt"))
        .virtio_transport(VirtioTransport::Mmio)
        .disk(Disk::new("d", "/a").bootindex(1))
        .disk(Disk::new("s", "/b").interface(DiskInterface::Scsi))
        .nic(Nic::user("n"))
        .device(Device::new("virtio-rng-device").prop("bus", "virtio-mmio-bus.3"));
    let a = args(&c);
    assert!(a.contains(&"virtio-blk-device,id=d,drive=d,bootindex=1".to_string()));
    assert!(a.contains(&"virtio-scsi-device,id=scsi0".to_string()));
    assert!(a.contains(&"virtio-net-device,id=n,netdev=n".to_string()));
}

#[test]
fn user_network_with_forwards_keyval_and_json() {
    let nic = Nic::user("net0")
        .forward(PortForward::tcp(2222, 22).name("ssh"))
        .forward(
            PortForward::udp(5353, 53)
                .host_addr(Ipv4Addr::LOCALHOST)
                .guest_addr(Ipv4Addr::new(10, 0, 2, 15)),
        )
        .mac("52:54:00:12:34:56".parse().unwrap())
        .bootindex(3);
    let mut c = cmd();
    c.nic(nic.clone());
    assert_eq!(
        args(&c),
        [
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:5353-10.0.2.15:53",
            "-device",
            "virtio-net-pci,id=net0,netdev=net0,mac=52:54:00:12:34:56,bootindex=3",
        ]
    );
    c.json_syntax(true);
    assert_eq!(
        args(&c),
        [
            "-netdev",
            r#"{"type":"user","id":"net0","hostfwd":[{"str":"tcp:127.0.0.1:2222-:22"},{"str":"udp:127.0.0.1:5353-10.0.2.15:53"}]}"#,
            "-device",
            r#"{"driver":"virtio-net-pci","id":"net0","netdev":"net0","mac":"52:54:00:12:34:56","bootindex":3}"#,
        ]
    );
}

#[test]
fn user_network_options() {
    let mut c = cmd();
    c.nic(
        Nic::new(
            "n",
            NetBackend::User(UserNet {
                net: Some("192.168.76.0/24".into()),
                hostname: Some("guest,1".into()),
                restrict: true,
                props: Props::new().with("dns", "192.168.76.3"),
                ..UserNet::default()
            }),
        )
        .model(NicModel::E1000),
    );
    assert_eq!(
        args(&c),
        [
            "-netdev",
            "user,id=n,net=192.168.76.0/24,hostname=guest,,1,restrict=on,dns=192.168.76.3",
            "-device",
            "e1000,id=n,netdev=n",
        ]
    );
}

#[test]
fn tap_and_socket_backends() {
    let mut c = cmd();
    c.nic(Nic::new(
        "t",
        NetBackend::Tap(TapNet {
            ifname: Some("tap0".into()),
            vhost: Some(true),
            ..TapNet::default()
        }),
    ))
    .nic(
        Nic::new(
            "f",
            NetBackend::Tap(TapNet {
                fd: Some(5),
                script: Some("/etc/up,1".into()),
                ..TapNet::default()
            }),
        )
        .model(NicModel::Other("vmxnet3".into())),
    )
    .nic(Nic::new(
        "l",
        NetBackend::Socket {
            socket: SocketNet::Listen(":1234".into()),
        },
    ))
    .nic(Nic::new(
        "c",
        NetBackend::Socket {
            socket: SocketNet::Connect("127.0.0.1:1234".into()),
        },
    ))
    .nic(Nic::new(
        "m",
        NetBackend::Socket {
            socket: SocketNet::Mcast("230.0.0.1:1234".into()),
        },
    ))
    .nic(Nic::new(
        "u",
        NetBackend::Socket {
            socket: SocketNet::Udp {
                local: "127.0.0.1:1".into(),
                remote: "127.0.0.1:2".into(),
            },
        },
    ))
    .nic(Nic::new(
        "s",
        NetBackend::Socket {
            socket: SocketNet::Fd(6),
        },
    ));
    let netdevs: Vec<String> = args(&c)
        .chunks(2)
        .filter(|p| p[0] == "-netdev")
        .map(|p| p[1].clone())
        .collect();
    assert_eq!(
        netdevs,
        [
            "tap,id=t,ifname=tap0,script=no,downscript=no,vhost=on",
            "tap,id=f,fd=5,script=/etc/up,,1,downscript=no",
            "socket,id=l,listen=:1234",
            "socket,id=c,connect=127.0.0.1:1234",
            "socket,id=m,mcast=230.0.0.1:1234",
            "socket,id=u,localaddr=127.0.0.1:1,udp=127.0.0.1:2",
            "socket,id=s,fd=6",
        ]
    );
    c.json_syntax(true);
    let a = args(&c);
    assert_eq!(
        a[1],
        r#"{"type":"tap","id":"t","ifname":"tap0","script":"no","downscript":"no","vhost":true}"#
    );
    assert_eq!(
        a[5],
        r#"{"type":"tap","id":"f","fd":"5","script":"/etc/up,1","downscript":"no"}"#
    );
    assert_eq!(a[7], r#"{"driver":"vmxnet3","id":"f","netdev":"f"}"#);
}

#[test]
fn standalone_netdev_used_by_a_generic_device() {
    let mut c = cmd();
    c.netdev(Netdev::new("n", NetBackend::default()))
        .device(Device::new("e1000e").id("nic").prop("netdev", "n"));
    assert_eq!(
        args(&c),
        ["-netdev", "user,id=n", "-device", "e1000e,id=nic,netdev=n"]
    );
}

#[test]
fn chardevs_serial_and_monitors() {
    let mut c = cmd();
    c.chardev(Chardev::socket_fd("qmp", 3))
        .monitor(Monitor::qmp("qmp"))
        .chardev(Chardev::unix_server("hmp", "/run/vm,1/hmp.sock", true))
        .monitor(Monitor::hmp("hmp").pretty(false))
        .chardev(Chardev::tcp_client("con", "localhost", 4555).logfile("/log/con,1.log"))
        .serial("con")
        .chardev(Chardev::pty("s1"))
        .serial("s1")
        .chardev(Chardev::file("s2", "/log/s2").mux(true))
        .serial("s2")
        .monitor(Monitor::hmp("s2"))
        .chardev(Chardev::null("n"))
        .chardev(Chardev::stdio("io"));
    assert_eq!(
        args(&c),
        [
            "-chardev",
            "socket,id=qmp,fd=3",
            "-mon",
            "chardev=qmp,mode=control",
            "-chardev",
            "socket,id=hmp,path=/run/vm,,1/hmp.sock,server=on,wait=on",
            "-mon",
            "chardev=hmp,mode=readline",
            "-chardev",
            "socket,id=con,host=localhost,port=4555,server=off,logfile=/log/con,,1.log",
            "-serial",
            "chardev:con",
            "-chardev",
            "pty,id=s1",
            "-serial",
            "chardev:s1",
            "-chardev",
            "file,id=s2,path=/log/s2,mux=on",
            "-serial",
            "chardev:s2",
            "-mon",
            "chardev=s2,mode=readline",
            "-chardev",
            "null,id=n",
            "-chardev",
            "stdio,id=io",
        ]
    );
}

#[test]
fn display_vga_and_vnc() {
    let mut c = cmd();
    c.display(Display::None).vga(Vga::None);
    assert_eq!(args(&c), ["-display", "none", "-vga", "none"]);
    c.display(Display::Vnc(Vnc::Unix("/run/vm,1/vnc.sock".into())));
    // A comma or '=' in the value makes the implied key explicit.
    assert_eq!(args(&c)[..2], ["-vnc", "vnc=unix:/run/vm,,1/vnc.sock"]);
    c.display(Display::Vnc(Vnc::Unix("/run/vm/vnc.sock".into())));
    assert_eq!(args(&c)[..2], ["-vnc", "unix:/run/vm/vnc.sock"]);
    c.display(Display::Vnc(Vnc::Unix("/run/a=b".into())));
    assert_eq!(args(&c)[..2], ["-vnc", "vnc=unix:/run/a=b"]);
    c.display(Display::Vnc(Vnc::Tcp {
        host: Some("127.0.0.1".into()),
        display: 3,
    }));
    assert_eq!(args(&c)[..2], ["-vnc", "127.0.0.1:3"]);
    c.display(Display::Vnc(Vnc::Tcp {
        host: None,
        display: 0,
    }));
    // Loopback unless a host is given: QEMU alone would listen on every address.
    assert_eq!(args(&c)[..2], ["-vnc", "127.0.0.1:0"]);
    c.display(Display::Vnc(Vnc::Tcp {
        host: Some("0.0.0.0".into()),
        display: 1,
    }));
    assert_eq!(args(&c)[..2], ["-vnc", "0.0.0.0:1"]);
}

#[test]
fn direct_kernel_boot_is_literal() {
    let mut c = cmd();
    c.kernel("/boot/vmlinuz,1")
        .initrd("/boot/initrd,1")
        .append("console=ttyS0,115200 root=/dev/vda rw")
        .dtb("/boot/x,y.dtb");
    assert_eq!(
        args(&c),
        [
            "-kernel",
            "/boot/vmlinuz,1",
            "-initrd",
            "/boot/initrd,1",
            "-append",
            "console=ttyS0,115200 root=/dev/vda rw",
            "-dtb",
            "/boot/x,y.dtb",
        ]
    );
}

#[test]
fn firmware_bios_and_uefi() {
    let mut c = cmd();
    c.bios("/fw/bios,1.bin");
    assert_eq!(args(&c), ["-bios", "/fw/bios,1.bin"]);
    c.machine(Machine::new("q35").prop("smm", true))
        .uefi("/usr/share/OVMF/OVMF_CODE_4M.fd", "/run/vm,1/VARS.fd");
    assert_eq!(
        args(&c),
        [
            "-machine", "q35,smm=on,pflash0=uefi-code,pflash1=uefi-vars",
            "-blockdev", "driver=file,node-name=uefi-code-file,filename=/usr/share/OVMF/OVMF_CODE_4M.fd,read-only=on",
            "-blockdev", "driver=raw,node-name=uefi-code,file=uefi-code-file,read-only=on",
            "-blockdev", "driver=file,node-name=uefi-vars-file,filename=/run/vm,,1/VARS.fd",
            "-blockdev", "driver=raw,node-name=uefi-vars,file=uefi-vars-file",
        ]
    );
}

#[test]
fn devices_objects_fds_fw_cfg_smbios_raw() {
    let mut c = cmd();
    c.object(
        Object::new("memory-backend-memfd", "mem")
            .prop("size", Size::gib(1))
            .prop("share", true),
    )
    .object(Object::new("secret", "sec0").prop("data", "pa,ss=word"))
    .device(
        Device::new("pcie-root-port")
            .id("rp1")
            .prop("chassis", 1u8)
            .prop("bus", "pcie.0"),
    )
    .device(Device::new("virtio-rng-pci").prop("bus", "rp1"))
    .add_fd(AddFd::new(5, 1).opaque("rdonly:/x,y"))
    .fw_cfg(FwCfg::file("opt/com.example/cfg,1", "/etc/x,y"))
    .fw_cfg(FwCfg::string("opt/s", "a,b"))
    .smbios(
        Smbios::new(1)
            .field("manufacturer", "ACME, Inc.")
            .field("serial", "42"),
    )
    .smbios(Smbios::file("/t,1.bin"))
    .arg("-global")
    .arg("ICH9-LPC.disable_s3=1")
    .machine(Machine::new("q35"));
    assert_eq!(
        args(&c),
        [
            "-machine",
            "q35",
            "-object",
            "memory-backend-memfd,id=mem,size=1073741824,share=on",
            "-object",
            "secret,id=sec0,data=pa,,ss=word",
            "-device",
            "pcie-root-port,id=rp1,chassis=1,bus=pcie.0",
            "-device",
            "virtio-rng-pci,bus=rp1",
            "-add-fd",
            "fd=5,set=1,opaque=rdonly:/x,,y",
            "-fw_cfg",
            "name=opt/com.example/cfg,,1,file=/etc/x,,y",
            "-fw_cfg",
            "name=opt/s,string=a,,b",
            "-smbios",
            "type=1,manufacturer=ACME,, Inc.,serial=42",
            "-smbios",
            "file=/t,,1.bin",
            "-global",
            "ICH9-LPC.disable_s3=1",
        ]
    );
    c.json_syntax(true);
    let a = args(&c);
    assert_eq!(
        a[3],
        r#"{"qom-type":"memory-backend-memfd","id":"mem","size":1073741824,"share":true}"#
    );
    assert_eq!(
        a[7],
        r#"{"driver":"pcie-root-port","id":"rp1","chassis":1,"bus":"pcie.0"}"#
    );
    // Options without a JSON form stay in keyval syntax.
    assert_eq!(a[11], "fd=5,set=1,opaque=rdonly:/x,,y");
}

#[test]
fn raw_args_keep_their_position() {
    let mut c = cmd();
    c.arg("-first")
        .nic(Nic::user("n"))
        .args(["-mid", "x"])
        .chardev(Chardev::null("c"))
        .arg("-last");
    assert_eq!(
        args(&c),
        [
            "-first",
            "-netdev",
            "user,id=n",
            "-device",
            "virtio-net-pci,id=n,netdev=n",
            "-mid",
            "x",
            "-chardev",
            "null,id=c",
            "-last",
        ]
    );
}

#[test]
fn generic_blockdev_graph() {
    let mut c = cmd();
    c.blockdev(
        Blockdev::new("file", "f")
            .prop("filename", "/x,y")
            .prop("locking", "off"),
    )
    .blockdev(
        Blockdev::new("throttle", "t")
            .prop("file", "f")
            .prop("throttle-group", "tg"),
    )
    .object(Object::new("throttle-group", "tg").prop("x-iops-total", 100u32))
    .device(Device::new("virtio-blk-pci").prop("drive", "t"));
    assert_eq!(
        args(&c),
        [
            "-blockdev",
            "driver=file,node-name=f,filename=/x,,y,locking=off",
            "-blockdev",
            "driver=throttle,node-name=t,file=f,throttle-group=tg",
            "-object",
            "throttle-group,id=tg,x-iops-total=100",
            "-device",
            "virtio-blk-pci,drive=t",
        ]
    );
}

#[test]
fn non_utf8_paths_in_keyval() {
    let path = OsString::from_vec(b"/vm/\xff,\xfe.img".to_vec());
    let mut c = cmd();
    c.disk(Disk::new("d", &path));
    let argv = c.build().unwrap();
    assert_eq!(
        argv.args[1],
        OsString::from_vec(b"driver=file,node-name=d-file,filename=/vm/\xff,,\xfe.img".to_vec())
    );
    assert!(argv
        .to_string()
        .contains("$'driver=file,node-name=d-file,filename=/vm/\\xff,,\\xfe.img'"));
}

#[test]
fn profiles() {
    let x = Arch::X86_64.profile();
    assert_eq!(x.binary, "qemu-system-x86_64");
    assert_eq!((x.console, x.uart), ("ttyS0", "isa-serial"));
    assert_eq!(x.uefi[0].code, "/usr/share/OVMF/OVMF_CODE_4M.fd");
    assert_eq!(
        x.command_line(&[Accel::Tcg]).build().unwrap().to_string(),
        "qemu-system-x86_64 -machine q35 -accel tcg -cpu max"
    );
    assert_eq!(
        x.command_line(&[Accel::Kvm, Accel::Tcg])
            .build()
            .unwrap()
            .to_string(),
        "qemu-system-x86_64 -machine q35 -accel kvm -accel tcg -cpu max"
    );

    let a = Arch::Aarch64.profile();
    assert_eq!((a.console, a.uart), ("ttyAMA0", "pl011"));
    assert_eq!(a.uefi[0].code, "/usr/share/AAVMF/AAVMF_CODE.fd");
    assert_eq!(
        a.command_line(&[]).build().unwrap().to_string(),
        "qemu-system-aarch64 -machine virt,gic-version=max -cpu cortex-a57"
    );
    assert_eq!(
        a.command_line(&[Accel::Hvf]).build().unwrap().to_string(),
        "qemu-system-aarch64 -machine virt,gic-version=max -accel hvf -cpu max"
    );
    let mut mmio = a.command_line(&[Accel::Tcg]);
    mmio.virtio_transport(VirtioTransport::Mmio)
        .disk(Disk::new("d", "/x"));
    assert!(mmio
        .build()
        .unwrap()
        .to_string()
        .ends_with("-device virtio-blk-device,id=d,drive=d"));

    let r = Arch::Riscv64.profile();
    assert_eq!((r.console, r.uart), ("ttyS0", "ns16550a"));
    assert_eq!(
        r.command_line(&[Accel::Tcg]).build().unwrap().to_string(),
        "qemu-system-riscv64 -machine virt -accel tcg"
    );
}

#[test]
fn display_quotes_for_the_shell() {
    let mut c = CommandLine::new("/opt/qemu dir/qemu-system-x86_64");
    c.name("it's").kernel("/k").append("a b");
    assert_eq!(
        c.to_string(),
        "'/opt/qemu dir/qemu-system-x86_64' -name 'it'\\''s' -kernel /k -append 'a b'"
    );
    let argv = c.build().unwrap();
    assert_eq!(argv.to_vec()[0], "/opt/qemu dir/qemu-system-x86_64");
    assert_eq!(shell_quote(&argv.to_vec()), argv.to_string());
    c.memory(Size::bytes_exact(10));
    assert!(c
        .to_string()
        .starts_with("<invalid command line: -m: 10 bytes"));
}
