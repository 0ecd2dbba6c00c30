//! Networking: `-netdev` backends (user-mode with port forwards, tap, socket) and NICs.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::device_refs;
use crate::render::{Env, Grammar, Opt, Opts};
use crate::{Error, IdKind, PropValue, Props};

/// The transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

fn port_de<'de, D: Deserializer<'de>>(
    d: D,
    field: &'static str,
    min: u16,
) -> Result<u16, D::Error> {
    struct V(&'static str, u16);
    impl Visitor<'_> for V {
        type Value = u16;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}: a port number {}..=65535", self.0, self.1)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
            match u16::try_from(v) {
                Ok(p) if p >= self.1 => Ok(p),
                _ => Err(E::custom(format!(
                    "{}: port {v} is out of range ({}..=65535)",
                    self.0, self.1
                ))),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
            Err(E::custom(format!(
                "{}: port {v} is out of range ({}..=65535)",
                self.0, self.1
            )))
        }
    }
    d.deserialize_u64(V(field, min))
}

fn host_port_de<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    port_de(d, "host_port", 0)
}

fn guest_port_de<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    port_de(d, "guest_port", 1)
}

/// A user-mode port forward: connections to the host's `host_addr:host_port` go to the
/// guest's `guest_addr:guest_port` (`hostfwd=tcp:HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT`).
///
/// The forward listens on `127.0.0.1` (this host only) unless `host_addr` says otherwise:
/// `0.0.0.0` listens on every host address, which makes the guest port reachable from the
/// network; a specific address listens on that one. (QEMU's own default, for an empty host
/// address, is every address: the argv always names one.)
///
/// Host port 0 lets the kernel pick a free port when QEMU listens; QEMU reports it in HMP
/// `info usernet`. Guest port 0 is rejected
/// when the argv is built, and so are two forwards that listen on the same host protocol,
/// address and (non-zero) port.
///
/// ```
/// use qemu_cmdline::PortForward;
/// use std::net::Ipv4Addr;
/// let ssh = PortForward::tcp(2222, 22).name("ssh");
/// assert_eq!(ssh.hostfwd(), "tcp:127.0.0.1:2222-:22");
/// let public = PortForward::tcp(8080, 80).host_addr(Ipv4Addr::UNSPECIFIED);
/// assert_eq!(public.hostfwd(), "tcp:0.0.0.0:8080-:80");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub proto: Proto,
    /// The host address to listen on: `127.0.0.1` (this host only) when absent; `0.0.0.0`
    /// for every address (reachable from the network), or one specific address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_addr: Option<Ipv4Addr>,
    /// The host port (0..=65535; 0: a free port picked when QEMU starts).
    #[serde(deserialize_with = "host_port_de")]
    pub host_port: u16,
    /// The guest address; QEMU's first DHCP address (`10.0.2.15`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_addr: Option<Ipv4Addr>,
    /// The guest port (1..=65535).
    #[serde(deserialize_with = "guest_port_de")]
    pub guest_port: u16,
    /// A label for the forward (`ssh`), used in error messages and by callers to look it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl PortForward {
    /// A TCP forward from host port `host_port` to guest port `guest_port`.
    pub fn tcp(host_port: u16, guest_port: u16) -> PortForward {
        PortForward {
            proto: Proto::Tcp,
            host_addr: None,
            host_port,
            guest_addr: None,
            guest_port,
            name: None,
        }
    }
    /// A UDP forward from host port `host_port` to guest port `guest_port`.
    pub fn udp(host_port: u16, guest_port: u16) -> PortForward {
        PortForward {
            proto: Proto::Udp,
            ..PortForward::tcp(host_port, guest_port)
        }
    }
    /// Listens on `addr` instead of `127.0.0.1`: [`Ipv4Addr::UNSPECIFIED`] (`0.0.0.0`) for
    /// every host address, which makes the port reachable from the network.
    pub fn host_addr(mut self, addr: Ipv4Addr) -> PortForward {
        self.host_addr = Some(addr);
        self
    }
    /// Forwards to `addr` in the guest network.
    pub fn guest_addr(mut self, addr: Ipv4Addr) -> PortForward {
        self.guest_addr = Some(addr);
        self
    }
    /// Names the forward.
    pub fn name(mut self, name: impl Into<String>) -> PortForward {
        self.name = Some(name.into());
        self
    }
    /// The address the forward listens on: `host_addr`, or `127.0.0.1` when absent.
    pub fn listen_addr(&self) -> Ipv4Addr {
        self.host_addr.unwrap_or(Ipv4Addr::LOCALHOST)
    }
    /// The `hostfwd` value QEMU reads; the host address is always written (QEMU would listen
    /// on every address for an empty one).
    pub fn hostfwd(&self) -> String {
        let guest = self.guest_addr.map(|a| a.to_string()).unwrap_or_default();
        format!(
            "{}:{}:{}-{}:{}",
            self.proto.name(),
            self.listen_addr(),
            self.host_port,
            guest,
            self.guest_port
        )
    }
    /// Whether two forwards would listen on the same host socket.
    pub fn clashes_with(&self, other: &PortForward) -> bool {
        let (a, b) = (self.listen_addr(), other.listen_addr());
        self.proto == other.proto
            && self.host_port == other.host_port
            && (a.is_unspecified() || b.is_unspecified() || a == b)
    }
}

/// User-mode (slirp) networking: `-netdev user`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserNet {
    /// Port forwards from the host into the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<PortForward>,
    /// The guest network, `ADDR/PREFIX` (default `10.0.2.0/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    /// The host name the DHCP server hands out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Isolates the guest: no connections out, only the forwards in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restrict: bool,
    /// Any other `-netdev user` property (`dns`, `dhcpstart`, `ipv6`, ...).
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub props: Props,
}

/// A tap interface: `-netdev tap`. The scripts default to `no` (QEMU's default runs
/// `/etc/qemu-ifup` as the calling user).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapNet {
    /// The host interface name (`tap0`); created when it does not exist and QEMU may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// An already open tap file descriptor inherited by QEMU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// The script run when the interface comes up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The script run when the interface goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downscript: Option<String>,
    /// vhost-net acceleration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<bool>,
}

/// A socket backend: `-netdev socket`, which tunnels Ethernet frames between QEMUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SocketNet {
    /// Listens on `HOST:PORT` for another QEMU.
    Listen(String),
    /// Connects to another QEMU at `HOST:PORT`.
    Connect(String),
    /// Joins multicast group `ADDR:PORT`.
    Mcast(String),
    /// Datagrams between `local` and `remote` (`HOST:PORT` each).
    Udp {
        /// The local address.
        local: String,
        /// The peer address.
        remote: String,
    },
    /// An already open socket inherited by QEMU.
    Fd(i32),
}

/// A network backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetBackend {
    /// User-mode networking with port forwards.
    User(UserNet),
    /// A host tap interface.
    Tap(TapNet),
    /// A socket to another QEMU.
    Socket {
        /// The socket.
        socket: SocketNet,
    },
}

impl Default for NetBackend {
    fn default() -> NetBackend {
        NetBackend::User(UserNet::default())
    }
}

impl NetBackend {
    /// The backend's QEMU type: `user`, `tap` or `socket`.
    pub fn type_name(&self) -> &'static str {
        match self {
            NetBackend::User(_) => "user",
            NetBackend::Tap(_) => "tap",
            NetBackend::Socket { .. } => "socket",
        }
    }
}

/// A network backend on its own: `-netdev TYPE,id=ID,...`, for a NIC written as a generic
/// [`Device`](crate::Device). Most callers want [`Nic`], which adds the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netdev {
    id: String,
    backend: NetBackend,
}

impl Netdev {
    /// A backend with id `id`.
    pub fn new(id: impl Into<String>, backend: NetBackend) -> Netdev {
        Netdev {
            id: id.into(),
            backend,
        }
    }
    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The backend.
    pub fn backend(&self) -> &NetBackend {
        &self.backend
    }

    pub(crate) fn render(&self, env: &Env) -> Opt {
        let mut props = Props::new().with("id", self.id.as_str());
        match &self.backend {
            NetBackend::User(u) => {
                if let Some(net) = &u.net {
                    props.set("net", net.as_str());
                }
                if let Some(h) = &u.hostname {
                    props.set("hostname", h.as_str());
                }
                if u.restrict {
                    props.set("restrict", true);
                }
                props.extend(&u.props);
                if !u.forwards.is_empty() {
                    // QAPI types hostfwd as a list of {"str": ...}; QemuOpts repeats the key.
                    let list = u
                        .forwards
                        .iter()
                        .map(|f| {
                            if env.json {
                                PropValue::Map(Props::new().with("str", f.hostfwd()))
                            } else {
                                PropValue::from(f.hostfwd())
                            }
                        })
                        .collect::<Vec<_>>();
                    props.set("hostfwd", list);
                }
            }
            NetBackend::Tap(t) => {
                if let Some(i) = &t.ifname {
                    props.set("ifname", i.as_str());
                }
                if let Some(fd) = t.fd {
                    props.set("fd", fd.to_string());
                }
                props.set("script", t.script.as_deref().unwrap_or("no"));
                props.set("downscript", t.downscript.as_deref().unwrap_or("no"));
                if let Some(v) = t.vhost {
                    props.set("vhost", v);
                }
            }
            NetBackend::Socket { socket } => match socket {
                SocketNet::Listen(a) => {
                    props.set("listen", a.as_str());
                }
                SocketNet::Connect(a) => {
                    props.set("connect", a.as_str());
                }
                SocketNet::Mcast(a) => {
                    props.set("mcast", a.as_str());
                }
                SocketNet::Udp { local, remote } => {
                    props.set("localaddr", local.as_str());
                    props.set("udp", remote.as_str());
                }
                SocketNet::Fd(fd) => {
                    props.set("fd", fd.to_string());
                }
            },
        }
        Opt::opts(
            "-netdev",
            format!("-netdev {} (id={})", self.backend.type_name(), self.id),
            Opts::new(Grammar::QemuOpts, true)
                .implied("type", self.backend.type_name())
                .props(props),
        )
        .define(IdKind::Netdev, self.id.as_str(), "id")
    }

    /// Checks the forwards' ports; labels name them in errors.
    pub(crate) fn forwards(&self) -> Vec<(String, &PortForward)> {
        match &self.backend {
            NetBackend::User(u) => u
                .forwards
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let label = match &f.name {
                        Some(n) => format!("netdev {:?} forward {n:?}", self.id),
                        None => format!("netdev {:?} forward #{i} ({})", self.id, f.hostfwd()),
                    };
                    (label, f)
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A MAC address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<MacAddr, Error> {
        let bad = || {
            Error::invalid(
                "mac",
                format!("{s:?} is not a MAC address like 52:54:00:12:34:56"),
            )
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if out[0] & 1 == 1 {
            return Err(Error::invalid(
                "mac",
                format!("{s} is a multicast address; a NIC needs a unicast one"),
            ));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// The NIC model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NicModel {
    /// virtio-net on the command line's virtio transport.
    #[default]
    Virtio,
    /// Intel e1000.
    E1000,
    /// Intel 82574 (e1000e).
    E1000e,
    /// Realtek RTL8139.
    Rtl8139,
    /// Any other NIC device.
    Other(String),
}

impl NicModel {
    fn driver(&self, env: &Env) -> String {
        match self {
            NicModel::Virtio => env.transport.device("virtio-net"),
            NicModel::E1000 => "e1000".into(),
            NicModel::E1000e => "e1000e".into(),
            NicModel::Rtl8139 => "rtl8139".into(),
            NicModel::Other(s) => s.clone(),
        }
    }
    fn name(&self) -> &str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::Other(s) => s,
        }
    }
}

impl Serialize for NicModel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for NicModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NicModel, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "virtio" => NicModel::Virtio,
            "e1000" => NicModel::E1000,
            "e1000e" => NicModel::E1000e,
            "rtl8139" => NicModel::Rtl8139,
            other => NicModel::Other(other.to_string()),
        })
    }
}

/// A network card and its backend: `-netdev TYPE,id=ID,... -device MODEL,netdev=ID,id=ID`.
///
/// ```
/// use qemu_cmdline::{CommandLine, Nic, PortForward};
/// let mut cmd = CommandLine::new("qemu-system-x86_64");
/// cmd.nic(Nic::user("net0").forward(PortForward::tcp(2222, 22).name("ssh")));
/// assert!(cmd.build().unwrap().to_string().contains("hostfwd=tcp:127.0.0.1:2222-:22"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    netdev: Netdev,
    model: NicModel,
    mac: Option<MacAddr>,
    bootindex: Option<u32>,
    props: Props,
    stray_forwards: usize,
}

impl Nic {
    /// A NIC with id `id` (used for both the netdev and the device) on `backend`.
    pub fn new(id: impl Into<String>, backend: NetBackend) -> Nic {
        Nic {
            netdev: Netdev::new(id, backend),
            model: NicModel::Virtio,
            mac: None,
            bootindex: None,
            props: Props::new(),
            stray_forwards: 0,
        }
    }
    /// A virtio NIC on user-mode networking.
    pub fn user(id: impl Into<String>) -> Nic {
        Nic::new(id, NetBackend::User(UserNet::default()))
    }
    /// Adds a port forward; the backend must be user-mode (checked when the argv is built).
    pub fn forward(mut self, forward: PortForward) -> Nic {
        match &mut self.netdev.backend {
            NetBackend::User(u) => u.forwards.push(forward),
            _ => self.stray_forwards += 1,
        }
        self
    }
    /// Sets the model (default virtio).
    pub fn model(mut self, model: NicModel) -> Nic {
        self.model = model;
        self
    }
    /// Sets the MAC address (default: QEMU assigns `52:54:00:12:34:NN`).
    pub fn mac(mut self, mac: MacAddr) -> Nic {
        self.mac = Some(mac);
        self
    }
    /// Sets the boot order (network boot).
    pub fn bootindex(mut self, index: u32) -> Nic {
        self.bootindex = Some(index);
        self
    }
    /// Sets an extra property of the `-device` (`romfile`, `addr`, `mq`, ...).
    pub fn device_prop(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> Nic {
        self.props.set(key, value);
        self
    }
    /// The id.
    pub fn id(&self) -> &str {
        &self.netdev.id
    }
    /// The backend.
    pub fn netdev(&self) -> &Netdev {
        &self.netdev
    }

    pub(crate) fn render(&self, env: &Env, out: &mut Vec<Opt>) -> Result<(), Error> {
        let id = self.netdev.id.as_str();
        if self.stray_forwards > 0 {
            return Err(Error::invalid(
                format!("nic {id:?} forwards"),
                format!(
                    "port forwards need a user-mode backend, this one is {}",
                    self.netdev.backend.type_name()
                ),
            ));
        }
        out.push(self.netdev.render(env));
        let driver = self.model.driver(env);
        let mut props = Props::new().with("id", id).with("netdev", id);
        if let Some(mac) = self.mac {
            props.set("mac", mac.to_string());
        }
        if let Some(i) = self.bootindex {
            props.set("bootindex", i);
        }
        props.extend(&self.props);
        let opt = Opt::opts(
            "-device",
            format!("nic {id:?} (-device {driver})"),
            Opts::new(Grammar::QemuOpts, true)
                .implied("driver", driver)
                .props(props.clone()),
        );
        out.push(device_refs(opt, &props));
        Ok(())
    }
}

/// Finds zero ports and clashing host sockets among all forwards.
pub(crate) fn check_forwards(forwards: &[(String, &PortForward)], errors: &mut Vec<Error>) {
    for (label, f) in forwards {
        if f.guest_port == 0 {
            errors.push(Error::InvalidPort {
                field: format!("{label} guest_port"),
                value: 0,
            });
        }
    }
    for (i, (a_label, a)) in forwards.iter().enumerate() {
        for (b_label, b) in &forwards[i + 1..] {
            if a.host_port != 0 && a.clashes_with(b) {
                errors.push(Error::PortClash {
                    first: a_label.clone(),
                    second: b_label.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostfwd_text() {
        let f = PortForward::udp(5353, 53)
            .host_addr(Ipv4Addr::LOCALHOST)
            .guest_addr(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(f.hostfwd(), "udp:127.0.0.1:5353-10.0.2.15:53");
    }

    #[test]
    fn loopback_unless_an_address_is_given() {
        let f = PortForward::tcp(2222, 22);
        assert_eq!(f.host_addr, None);
        assert_eq!(f.listen_addr(), Ipv4Addr::LOCALHOST);
        assert_eq!(f.hostfwd(), "tcp:127.0.0.1:2222-:22");
        let all = f.clone().host_addr(Ipv4Addr::UNSPECIFIED);
        assert_eq!(all.hostfwd(), "tcp:0.0.0.0:2222-:22");
        let one = f.host_addr(Ipv4Addr::new(192, 168, 1, 5));
        assert_eq!(one.hostfwd(), "tcp:192.168.1.5:2222-:22");
    }

    #[test]
    fn clashes() {
        let a = PortForward::tcp(2222, 22);
        assert!(a.clashes_with(&PortForward::tcp(2222, 23)));
        assert!(a.clashes_with(&PortForward::tcp(2222, 22).host_addr(Ipv4Addr::LOCALHOST)));
        assert!(!a.clashes_with(&PortForward::udp(2222, 22)));
        assert!(!a.clashes_with(&PortForward::tcp(2223, 22)));
        // The default (loopback) and another address are different sockets; every address
        // clashes with each.
        assert!(!a.clashes_with(&PortForward::tcp(2222, 22).host_addr(Ipv4Addr::new(10, 1, 1, 1))));
        assert!(a.clashes_with(&PortForward::tcp(2222, 22).host_addr(Ipv4Addr::UNSPECIFIED)));
        let l = PortForward::tcp(80, 80).host_addr(Ipv4Addr::LOCALHOST);
        assert!(!l.clashes_with(&PortForward::tcp(80, 80).host_addr(Ipv4Addr::new(10, 1, 1, 1))));
        assert!(l.clashes_with(&PortForward::tcp(80, 80).host_addr(Ipv4Addr::UNSPECIFIED)));
    }

    #[test]
    fn port_serde_names_the_field() {
        let e = serde_json::from_str::<PortForward>(r#"{"host_port":70000,"guest_port":22}"#)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("host_port: port 70000 is out of range"),
            "{e}"
        );
        let e =
            serde_json::from_str::<PortForward>(r#"{"host_port":1,"guest_port":0}"#).unwrap_err();
        assert!(
            e.to_string().contains("guest_port: port 0 is out of range"),
            "{e}"
        );
        let e =
            serde_json::from_str::<PortForward>(r#"{"host_port":1,"guest_port":-1}"#).unwrap_err();
        assert!(e.to_string().contains("guest_port: port -1"), "{e}");
        let f: PortForward = serde_json::from_str(
            r#"{"proto":"udp","host_addr":"127.0.0.1","host_port":1,"guest_port":2,"name":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            PortForward::udp(1, 2)
                .host_addr(Ipv4Addr::LOCALHOST)
                .name("x")
        );
        let e =
            serde_json::from_str::<PortForward>(r#"{"host_port":1,"guest_port":2,"hostport":3}"#)
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `hostport`"), "{e}");
    }

    #[test]
    fn mac_addresses() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52-54-00-12-34-56",
            "5:54:00:12:34:567",
            "+2:54:00:12:34:56",
            "zz:54:00:12:34:56",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let e = "01:00:5e:00:00:01".parse::<MacAddr>().unwrap_err();
        assert!(e.to_string().contains("multicast"), "{e}");
    }
}
