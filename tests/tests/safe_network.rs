//! Nothing listens on the network unless asked: port forwards and a TCP VNC display listen on
//! 127.0.0.1 by default, every address only when the spec says `0.0.0.0`, and what the library
//! reports is what the kernel shows listening (/proc/net/tcp and /proc/net/udp).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use qemu_cmdline::{Display, PortForward, Proto, VmSpec, Vnc};
use qemu_machine_tests::support::{launch, options, scratch};

/// The IPv4 addresses on which a socket of `proto` is bound to `port` (TCP: listening ones),
/// from the kernel's own tables.
fn bound(proto: Proto, port: u16) -> Vec<Ipv4Addr> {
    let (table, listen_state) = match proto {
        Proto::Tcp => ("/proc/net/tcp", Some("0A")),
        Proto::Udp => ("/proc/net/udp", None),
    };
    let text = std::fs::read_to_string(table).unwrap();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some((ip, p)) = cols.get(1).and_then(|l| l.split_once(':')) else {
            continue;
        };
        if u16::from_str_radix(p, 16).ok() != Some(port) {
            continue;
        }
        if listen_state.is_some_and(|s| cols.get(3) != Some(&s)) {
            continue;
        }
        // The kernel prints the address as a native-endian number of the network-order bytes.
        let ip = u32::from_str_radix(ip, 16).unwrap();
        out.push(Ipv4Addr::from(ip.to_ne_bytes()));
    }
    out
}

/// How many IPv6 TCP sockets listen on `port` (QEMU binds `[::]` too for an empty VNC host).
fn listening6(port: u16) -> usize {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp6") else {
        return 0; // no IPv6 in this kernel: nothing can listen there
    };
    text.lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port_hex = cols.get(1).and_then(|l| l.rsplit_once(':')).map(|(_, p)| p);
            port_hex.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
                && cols.get(3) == Some(&"0A")
        })
        .count()
}

/// A TCP port nobody listens on right now, at or above `from`.
fn free_port(from: u16) -> u16 {
    (from..from + 1000)
        .find(|p| {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, *p)).is_ok()
                && bound(Proto::Tcp, *p).is_empty()
                && listening6(*p) == 0
        })
        .expect("a free TCP port")
}

#[test]
fn forwards_listen_on_loopback_unless_every_address_is_asked_for() {
    let scratch = scratch("net-forwards");
    let fixed = free_port(20000 + (std::process::id() % 20000) as u16);
    let mut spec = VmSpec::default();
    for f in [
        PortForward::tcp(0, 22).name("ssh"),
        PortForward::tcp(fixed, 80).name("web"),
        PortForward::udp(0, 53).name("dns"),
        PortForward::tcp(0, 8080)
            .host_addr(Ipv4Addr::UNSPECIFIED)
            .name("public"),
    ] {
        spec.forward(f).unwrap();
    }
    let mut vm = launch(spec, &options(scratch.path())).unwrap();

    // Without an address: 127.0.0.1, as reported and as the kernel shows it.
    let ssh = vm.forwarded_port("ssh").unwrap();
    assert_eq!(ssh.ip(), Ipv4Addr::LOCALHOST, "{ssh}");
    assert_ne!(ssh.port(), 0);
    assert_eq!(bound(Proto::Tcp, ssh.port()), [Ipv4Addr::LOCALHOST]);
    assert_eq!(listening6(ssh.port()), 0);
    TcpStream::connect(ssh).expect("the loopback forward accepts");

    let web = vm.forwarded_port("web").unwrap();
    assert_eq!(web, SocketAddr::from((Ipv4Addr::LOCALHOST, fixed)));
    assert_eq!(bound(Proto::Tcp, fixed), [Ipv4Addr::LOCALHOST]);

    let dns = vm.forwarded_port("dns").unwrap();
    assert_eq!(dns.ip(), Ipv4Addr::LOCALHOST, "{dns}");
    assert_eq!(bound(Proto::Udp, dns.port()), [Ipv4Addr::LOCALHOST]);

    // Asked for every address: reported as 0.0.0.0, honestly, and so bound.
    let public = vm.forwarded_port("public").unwrap();
    assert_eq!(public.ip(), Ipv4Addr::UNSPECIFIED, "{public}");
    assert_eq!(bound(Proto::Tcp, public.port()), [Ipv4Addr::UNSPECIFIED]);
    let f = vm
        .forwards()
        .iter()
        .find(|f| f.name.as_deref() == Some("public"))
        .unwrap();
    assert!(f.listens_on_all_addresses());
    assert_eq!(
        f.connect_addr(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, public.port()))
    );
    TcpStream::connect(f.connect_addr()).expect("the forward accepts on loopback too");
    let defaults: Vec<bool> = vm
        .forwards()
        .iter()
        .map(|f| f.listens_on_all_addresses())
        .collect();
    assert_eq!(defaults, [false, false, false, true]);

    // The argv names the address of every forward: QEMU never picks its own default.
    let argv: Vec<String> = vm
        .argv()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let netdev = argv
        .iter()
        .find(|a| a.contains("hostfwd"))
        .unwrap_or_else(|| panic!("{argv:?}"));
    assert!(
        netdev.contains("hostfwd=tcp:127.0.0.1:0-:22")
            && netdev.contains("hostfwd=udp:127.0.0.1:0-:53")
            && netdev.contains("hostfwd=tcp:0.0.0.0:0-:8080"),
        "{netdev}"
    );

    // After a relaunch the addresses are read again (the picked ports change).
    vm.shutdown(Duration::from_secs(20)).unwrap();
    vm.relaunch().unwrap();
    let ssh = vm.forwarded_port("ssh").unwrap();
    assert_eq!(ssh.ip(), Ipv4Addr::LOCALHOST, "{ssh}");
    assert_eq!(bound(Proto::Tcp, ssh.port()), [Ipv4Addr::LOCALHOST]);
    vm.shutdown(Duration::from_secs(20)).unwrap();
}

#[test]
fn a_tcp_vnc_display_listens_on_loopback_unless_a_host_is_given() {
    let scratch = scratch("net-vnc");
    let port = free_port(5900 + 200 + (std::process::id() % 1000) as u16);
    let spec = VmSpec {
        display: Display::Vnc(Vnc::Tcp {
            host: None,
            display: port - 5900,
        }),
        ..VmSpec::default()
    };
    let mut vm = launch(spec, &options(scratch.path())).unwrap();
    let vnc = vm.execute("query-vnc", None).unwrap();
    assert_eq!(vnc["enabled"], serde_json::json!(true), "{vnc}");
    assert_eq!(vnc["host"], serde_json::json!("127.0.0.1"), "{vnc}");
    assert_eq!(vnc["service"], serde_json::json!(port.to_string()), "{vnc}");
    assert_eq!(bound(Proto::Tcp, port), [Ipv4Addr::LOCALHOST]);
    assert_eq!(listening6(port), 0, "VNC listens on IPv6 too");
    vm.shutdown(Duration::from_secs(20)).unwrap();
}
