//! [`Harness`]: what a launcher adds to a command line to drive QEMU.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    Accel, AddFd, Chardev, CommandLine, Device, Display, Error, Monitor, Object, VirtioTransport,
};

/// The chardev id of the launcher's QMP monitor.
pub const QMP_CHARDEV: &str = "qm-qmp";
/// The chardev id of the launcher's console.
pub const CONSOLE_CHARDEV: &str = "qm-console";
/// The chardev id of the guest agent's channel: the launcher's descriptor
/// ([`Harness::guest_agent_fd`]), which the port of a [`VmSpec`](crate::VmSpec) with
/// `guest_agent` connects to.
pub const GUEST_AGENT_CHARDEV: &str = "qm-qga";
/// The chardev id (and `qtest` object id) of the launcher's qtest channel.
pub const QTEST_CHARDEV: &str = "qm-qtest";
/// The id of the virtio-serial controller that carries a [`ConsoleDevice::VirtConsole`]
/// console (its bus is `qm-console-vser.0`).
pub const CONSOLE_VIRTIO_SERIAL: &str = "qm-console-vser";

/// The chardev id of the `index`th (from 0) QMP server of [`Harness::qmp_listen`]:
/// `qm-qmp-listen0`, `qm-qmp-listen1`, ...
pub fn qmp_listen_chardev(index: usize) -> String {
    format!("qm-qmp-listen{index}")
}

/// Which guest device carries the launcher's console.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConsoleDevice {
    /// A serial port of the machine's own kind (`-serial chardev:ID`): the first one
    /// (`ttyS0`, `ttyAMA0`) unless [`Harness::console_index`] puts null ports before it.
    #[default]
    Serial,
    /// A `virtconsole` (the guest's `hvc0`) on a virtio-serial controller of its own
    /// ([`CONSOLE_VIRTIO_SERIAL`]) on this transport.
    VirtConsole(VirtioTransport),
    /// `-device TYPE,chardev=ID` with a device type that takes a chardev (`isa-serial`,
    /// `pci-serial`, `usb-serial`, ...), as QEMUMachine's `set_console(device_type)` does.
    Device(String),
}

/// Where a QMP server listens for clients (`-chardev socket,server=on,wait=off`): a unix
/// socket path, or a TCP host and port (port 0: one the kernel picks, to be read back with
/// `query-chardev`).
///
/// Its text form, used in JSON and on command lines, is `unix:PATH` or `tcp:[HOST:]PORT`; the
/// host defaults to `127.0.0.1`, so a server is reachable from this machine only unless an
/// address such as `0.0.0.0` is named. An IPv6 host is written in brackets
/// (`tcp:[::1]:4444`).
///
/// ```
/// use qemu_cmdline::MonitorAddress;
/// let a: MonitorAddress = "tcp:4444".parse()?;
/// assert_eq!(a, MonitorAddress::Tcp { host: "127.0.0.1".into(), port: 4444 });
/// assert_eq!(a.to_string(), "tcp:127.0.0.1:4444");
/// assert_eq!("tcp:[::1]:0".parse::<MonitorAddress>()?.to_string(), "tcp:[::1]:0");
/// assert!("udp:1".parse::<MonitorAddress>().is_err());
/// # Ok::<(), qemu_cmdline::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MonitorAddress {
    /// A unix socket at this path (at most 107 bytes); QEMU creates it and removes it when it
    /// exits normally.
    Unix(PathBuf),
    /// A TCP address.
    Tcp {
        /// The address to listen on (a name or an IP address, without brackets).
        host: String,
        /// The port; 0 lets the kernel pick one.
        port: u16,
    },
}

impl MonitorAddress {
    /// The chardev QEMU listens with.
    pub fn chardev(&self, id: impl Into<String>) -> Chardev {
        match self {
            MonitorAddress::Unix(path) => Chardev::unix_server(id, path, false),
            MonitorAddress::Tcp { host, port } => Chardev::tcp_server(id, host, *port, false),
        }
    }
}

impl fmt::Display for MonitorAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            MonitorAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            MonitorAddress::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

impl FromStr for MonitorAddress {
    type Err = Error;

    fn from_str(text: &str) -> Result<MonitorAddress, Error> {
        let bad = |reason: &str| {
            Error::invalid(
                "monitor address",
                format!("{text:?}: {reason} (expected unix:PATH or tcp:[HOST:]PORT)"),
            )
        };
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("the path is empty"));
            }
            return Ok(MonitorAddress::Unix(PathBuf::from(path)));
        }
        let Some(rest) = text.strip_prefix("tcp:") else {
            return Err(bad("unknown kind of address"));
        };
        let (host, port) = match rest.rsplit_once(':') {
            None => ("127.0.0.1", rest),
            Some((host, port)) => {
                let host = match host.strip_prefix('[') {
                    Some(inner) => inner
                        .strip_suffix(']')
                        .ok_or_else(|| bad("an IPv6 host needs its closing bracket"))?,
                    None if host.contains(':') => {
                        return Err(bad("an IPv6 host is written in brackets"))
                    }
                    None => host,
                };
                (host, port)
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        Ok(MonitorAddress::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl Serialize for MonitorAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let MonitorAddress::Unix(path) = self {
            if path.to_str().is_none() {
                return Err(serde::ser::Error::custom(format!(
                    "{} is not UTF-8",
                    path.display()
                )));
            }
        }
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MonitorAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MonitorAddress, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The pieces a launcher adds to a command line so that it can drive QEMU: a QMP monitor, a
/// console and a qtest channel on socket descriptors QEMU inherits, more QMP servers for
/// other clients, `-display none`, an accelerator, and descriptors in fd sets.
/// [`CommandLine::harness`] writes them; do it before the VM's own serial ports, so that the
/// console is the guest's first.
///
/// ```
/// use qemu_cmdline::{CommandLine, Harness};
/// let mut cmd = CommandLine::new("qemu-system-x86_64");
/// cmd.harness(&Harness {
///     qmp_fd: Some(3),
///     console_fd: Some(4),
///     display_none: true,
///     ..Harness::default()
/// })
/// .args(["-machine", "none"]);
/// assert_eq!(
///     cmd.build()?.to_string(),
///     "qemu-system-x86_64 -display none -chardev socket,id=qm-qmp,fd=3 \
///      -mon chardev=qm-qmp,mode=control -chardev socket,id=qm-console,fd=4 \
///      -serial chardev:qm-console -machine none"
/// );
/// # Ok::<(), qemu_cmdline::Error>(())
/// ```
///
/// A qtest machine whose console is the second ISA serial port, with a QMP server on a TCP
/// port of the loopback interface for another client:
///
/// ```
/// use qemu_cmdline::{Accel, CommandLine, ConsoleDevice, Harness};
/// let mut cmd = CommandLine::new("qemu-system-x86_64");
/// cmd.harness(&Harness {
///     qmp_fd: Some(3),
///     qmp_listen: vec!["tcp:0".parse()?],
///     console_fd: Some(4),
///     console_device: ConsoleDevice::Device("isa-serial".into()),
///     console_index: 1,
///     qtest_fd: Some(5),
///     accel: Some(Accel::Tcg),
///     paused: true,
///     ..Harness::default()
/// });
/// assert_eq!(
///     cmd.build()?.to_string(),
///     "qemu-system-x86_64 -accel tcg -S -chardev socket,id=qm-qmp,fd=3 \
///      -mon chardev=qm-qmp,mode=control \
///      -chardev socket,id=qm-qmp-listen0,host=127.0.0.1,port=0,server=on,wait=off \
///      -mon chardev=qm-qmp-listen0,mode=control -chardev socket,id=qm-console,fd=4 \
///      -serial null -device isa-serial,chardev=qm-console \
///      -chardev socket,id=qm-qtest,fd=5 -object qtest,id=qm-qtest,chardev=qm-qtest,log=none"
/// );
/// # Ok::<(), qemu_cmdline::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Harness {
    /// A QMP monitor (chardev [`QMP_CHARDEV`]) on this inherited socket descriptor.
    pub qmp_fd: Option<i32>,
    /// A console (chardev [`CONSOLE_CHARDEV`]) on this inherited socket descriptor, carried
    /// by [`console_device`](Harness::console_device).
    pub console_fd: Option<i32>,
    /// `-display none`.
    pub display_none: bool,
    /// An accelerator (`-accel`).
    pub accel: Option<Accel>,
    /// Descriptors QEMU inherits in fd sets (`-add-fd`).
    pub add_fds: Vec<AddFd>,
    /// The guest agent's channel (chardev [`GUEST_AGENT_CHARDEV`]) on this inherited socket
    /// descriptor. The device the guest sees is the VM description's
    /// ([`VmSpec::guest_agent`](crate::VmSpec::guest_agent)): this is only its backend.
    pub guest_agent_fd: Option<i32>,
    /// QMP servers for other clients (chardevs [`qmp_listen_chardev`]`(i)`), QEMU listening
    /// without waiting for a client.
    pub qmp_listen: Vec<MonitorAddress>,
    /// `-monitor null`: a human monitor nobody reads, which replaces QEMU's default one
    /// (QEMUMachine's `add_monitor_null`).
    pub monitor_null: bool,
    /// Without [`console_fd`](Harness::console_fd): the console on a new pseudo-terminal
    /// (`-chardev pty`), whose path QEMU reports in `query-chardev`.
    pub console_pty: bool,
    /// For a pty console: the file QEMU also writes the guest's output to (`logfile=`).
    pub console_logfile: Option<PathBuf>,
    /// The device that carries the console.
    pub console_device: ConsoleDevice,
    /// How many serial ports connected to nothing (`-serial null`) come before the console,
    /// so that with a serial console it is the guest's `ttyS<index>` (QEMUMachine's
    /// `console_index`).
    pub console_index: u32,
    /// A qtest server (QEMU's device-test protocol; chardev and object [`QTEST_CHARDEV`]) on
    /// this inherited socket descriptor, not logging (`log=none`).
    pub qtest_fd: Option<i32>,
    /// `-S`: the CPUs do not start (until QMP `cont`).
    pub paused: bool,
}

impl CommandLine {
    /// Adds a launcher's [`Harness`].
    pub fn harness(&mut self, h: &Harness) -> &mut Self {
        if h.display_none {
            self.display(Display::None);
        }
        if let Some(a) = &h.accel {
            self.accel(a.clone());
        }
        if h.paused {
            self.paused();
        }
        if let Some(fd) = h.qmp_fd {
            self.chardev(Chardev::socket_fd(QMP_CHARDEV, fd))
                .monitor(Monitor::qmp(QMP_CHARDEV));
        }
        for (i, address) in h.qmp_listen.iter().enumerate() {
            let id = qmp_listen_chardev(i);
            self.chardev(address.chardev(&id)).monitor(Monitor::qmp(id));
        }
        if h.monitor_null {
            self.args(["-monitor", "null"]);
        }
        let console = match (h.console_fd, h.console_pty) {
            (Some(fd), _) => Some(Chardev::socket_fd(CONSOLE_CHARDEV, fd)),
            (None, true) => Some(match &h.console_logfile {
                Some(log) => Chardev::pty(CONSOLE_CHARDEV).logfile(log),
                None => Chardev::pty(CONSOLE_CHARDEV),
            }),
            (None, false) => None,
        };
        if let Some(chardev) = console {
            self.chardev(chardev);
            for _ in 0..h.console_index {
                self.args(["-serial", "null"]);
            }
            match &h.console_device {
                ConsoleDevice::Serial => {
                    self.serial(CONSOLE_CHARDEV);
                }
                ConsoleDevice::VirtConsole(transport) => {
                    self.device(
                        Device::new(transport.device("virtio-serial")).id(CONSOLE_VIRTIO_SERIAL),
                    )
                    .device(
                        Device::new("virtconsole")
                            .prop("chardev", CONSOLE_CHARDEV)
                            .prop("bus", format!("{CONSOLE_VIRTIO_SERIAL}.0")),
                    );
                }
                ConsoleDevice::Device(driver) => {
                    self.device(Device::new(driver.as_str()).prop("chardev", CONSOLE_CHARDEV));
                }
            }
        }
        if let Some(fd) = h.qtest_fd {
            self.chardev(Chardev::socket_fd(QTEST_CHARDEV, fd)).object(
                Object::new("qtest", QTEST_CHARDEV)
                    .prop("chardev", QTEST_CHARDEV)
                    .prop("log", "none"),
            );
        }
        if let Some(fd) = h.guest_agent_fd {
            self.chardev(Chardev::socket_fd(GUEST_AGENT_CHARDEV, fd));
        }
        for add in &h.add_fds {
            self.add_fd(add.clone());
        }
        self
    }
}
