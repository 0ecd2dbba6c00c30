//! Character devices (`-chardev`), and what plugs into them: serial ports and monitors.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::render::{Grammar, Opt, Opts};
use crate::{Error, IdKind, Props};

/// The longest unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
pub const UNIX_PATH_MAX: usize = 107;

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Where a character device's bytes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChardevBackend {
    /// A connected stream socket QEMU inherits as file descriptor `fd` (one end of a
    /// socketpair): `socket,fd=N`.
    Fd {
        /// The descriptor number in QEMU's process.
        fd: i32,
    },
    /// A unix socket at `path`.
    Unix {
        /// The socket path; at most 107 bytes.
        path: PathBuf,
        /// QEMU listens (`server=on`) instead of connecting.
        #[serde(default, skip_serializing_if = "is_false")]
        server: bool,
        /// For a server: QEMU waits for a client before starting the guest.
        #[serde(default, skip_serializing_if = "is_false")]
        wait: bool,
        /// For a client: seconds between reconnection attempts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reconnect: Option<u32>,
    },
    /// A TCP socket.
    Tcp {
        /// The host name or address.
        host: String,
        /// The port.
        port: u16,
        /// QEMU listens instead of connecting.
        #[serde(default, skip_serializing_if = "is_false")]
        server: bool,
        /// For a server: QEMU waits for a client before starting the guest.
        #[serde(default, skip_serializing_if = "is_false")]
        wait: bool,
        /// For a client: seconds between reconnection attempts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reconnect: Option<u32>,
    },
    /// A new pseudo-terminal; QEMU reports its path (`query-chardev`).
    Pty {},
    /// Output appended or written to a file; input is discarded.
    File {
        /// The file.
        path: PathBuf,
        /// Append instead of truncating.
        #[serde(default, skip_serializing_if = "is_false")]
        append: bool,
    },
    /// Discards output, never produces input.
    Null {},
    /// QEMU's own stdin and stdout.
    Stdio {
        /// Whether Ctrl-C on stdin stops QEMU (default true).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        signal: bool,
    },
}

impl ChardevBackend {
    fn name(&self) -> &'static str {
        match self {
            ChardevBackend::Fd { .. }
            | ChardevBackend::Unix { .. }
            | ChardevBackend::Tcp { .. } => "socket",
            ChardevBackend::Pty {} => "pty",
            ChardevBackend::File { .. } => "file",
            ChardevBackend::Null {} => "null",
            ChardevBackend::Stdio { .. } => "stdio",
        }
    }
}

/// A character device: `-chardev BACKEND,id=ID,...`.
///
/// ```
/// use qemu_cmdline::{Chardev, CommandLine, Monitor};
/// let mut cmd = CommandLine::new("qemu-system-x86_64");
/// cmd.chardev(Chardev::socket_fd("qmp", 3))
///     .monitor(Monitor::qmp("qmp"))
///     .chardev(Chardev::socket_fd("console", 4))
///     .serial("console");
/// assert_eq!(
///     cmd.build().unwrap().to_string(),
///     "qemu-system-x86_64 -chardev socket,id=qmp,fd=3 -mon chardev=qmp,mode=control \
///      -chardev socket,id=console,fd=4 -serial chardev:console"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chardev {
    /// The id.
    pub id: String,
    /// Where the bytes go.
    pub backend: ChardevBackend,
    /// Lets several frontends share the device (`mux=on`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mux: bool,
    /// Also writes everything the guest sends to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logfile: Option<PathBuf>,
}

impl Chardev {
    /// A character device with id `id` on `backend`.
    pub fn new(id: impl Into<String>, backend: ChardevBackend) -> Chardev {
        Chardev {
            id: id.into(),
            backend,
            mux: false,
            logfile: None,
        }
    }
    /// A socket QEMU inherits as descriptor `fd`: `-chardev socket,id=ID,fd=N`.
    pub fn socket_fd(id: impl Into<String>, fd: i32) -> Chardev {
        Chardev::new(id, ChardevBackend::Fd { fd })
    }
    /// QEMU listens on a unix socket; with `wait` it waits for a client before starting.
    pub fn unix_server(id: impl Into<String>, path: impl Into<PathBuf>, wait: bool) -> Chardev {
        Chardev::new(
            id,
            ChardevBackend::Unix {
                path: path.into(),
                server: true,
                wait,
                reconnect: None,
            },
        )
    }
    /// QEMU connects to a unix socket.
    pub fn unix_client(id: impl Into<String>, path: impl Into<PathBuf>) -> Chardev {
        Chardev::new(
            id,
            ChardevBackend::Unix {
                path: path.into(),
                server: false,
                wait: false,
                reconnect: None,
            },
        )
    }
    /// QEMU listens on TCP; with `wait` it waits for a client before starting.
    pub fn tcp_server(
        id: impl Into<String>,
        host: impl Into<String>,
        port: u16,
        wait: bool,
    ) -> Chardev {
        Chardev::new(
            id,
            ChardevBackend::Tcp {
                host: host.into(),
                port,
                server: true,
                wait,
                reconnect: None,
            },
        )
    }
    /// QEMU connects over TCP.
    pub fn tcp_client(id: impl Into<String>, host: impl Into<String>, port: u16) -> Chardev {
        Chardev::new(
            id,
            ChardevBackend::Tcp {
                host: host.into(),
                port,
                server: false,
                wait: false,
                reconnect: None,
            },
        )
    }
    /// A new pseudo-terminal.
    pub fn pty(id: impl Into<String>) -> Chardev {
        Chardev::new(id, ChardevBackend::Pty {})
    }
    /// Output written to a file (truncated first).
    pub fn file(id: impl Into<String>, path: impl Into<PathBuf>) -> Chardev {
        Chardev::new(
            id,
            ChardevBackend::File {
                path: path.into(),
                append: false,
            },
        )
    }
    /// Nothing in, nothing out.
    pub fn null(id: impl Into<String>) -> Chardev {
        Chardev::new(id, ChardevBackend::Null {})
    }
    /// QEMU's stdin and stdout.
    pub fn stdio(id: impl Into<String>) -> Chardev {
        Chardev::new(id, ChardevBackend::Stdio { signal: true })
    }
    /// Lets several frontends share the device.
    pub fn mux(mut self, mux: bool) -> Chardev {
        self.mux = mux;
        self
    }
    /// Also logs the guest's output to `path`.
    pub fn logfile(mut self, path: impl Into<PathBuf>) -> Chardev {
        self.logfile = Some(path.into());
        self
    }

    pub(crate) fn render(&self) -> Result<Opt, Error> {
        let what = format!("-chardev {} (id={})", self.backend.name(), self.id);
        let mut props = Props::new().with("id", self.id.as_str());
        let mut errors = Vec::new();
        match &self.backend {
            ChardevBackend::Fd { fd } => {
                props.set("fd", fd.to_string());
            }
            ChardevBackend::Unix {
                path,
                server,
                wait,
                reconnect,
            } => {
                let len = path.as_os_str().as_bytes().len();
                if len > UNIX_PATH_MAX {
                    errors.push(Error::invalid(
                        format!("{what} path"),
                        format!(
                            "a unix socket path is at most {UNIX_PATH_MAX} bytes, this one is {len}; \
                             use a shorter directory or an inherited fd"
                        ),
                    ));
                }
                props.set("path", path.as_os_str());
                socket_mode(&what, &mut props, &mut errors, *server, *wait, *reconnect);
            }
            ChardevBackend::Tcp {
                host,
                port,
                server,
                wait,
                reconnect,
            } => {
                if *port == 0 && !*server {
                    errors.push(Error::InvalidPort {
                        field: format!("{what} port"),
                        value: 0,
                    });
                }
                props.set("host", host.as_str());
                props.set("port", port.to_string());
                socket_mode(&what, &mut props, &mut errors, *server, *wait, *reconnect);
            }
            ChardevBackend::Pty {} | ChardevBackend::Null {} => {}
            ChardevBackend::File { path, append } => {
                props.set("path", path.as_os_str());
                if *append {
                    props.set("append", true);
                }
            }
            ChardevBackend::Stdio { signal } => {
                if !*signal {
                    props.set("signal", false);
                }
            }
        }
        if self.mux {
            props.set("mux", true);
        }
        if let Some(log) = &self.logfile {
            props.set("logfile", log.as_os_str());
        }
        Error::collect(errors)?;
        let opt = Opt::opts(
            "-chardev",
            what,
            Opts::new(Grammar::QemuOpts, false)
                .implied("backend", self.backend.name())
                .props(props),
        );
        Ok(if self.mux {
            opt.shareable_define(IdKind::Chardev, self.id.as_str())
        } else {
            opt.define(IdKind::Chardev, self.id.as_str(), "id")
        })
    }
}

fn socket_mode(
    what: &str,
    props: &mut Props,
    errors: &mut Vec<Error>,
    server: bool,
    wait: bool,
    reconnect: Option<u32>,
) {
    props.set("server", server);
    if server {
        props.set("wait", wait);
        if reconnect.is_some() {
            errors.push(Error::invalid(
                format!("{what} reconnect"),
                "reconnect is for clients; this socket is a server",
            ));
        }
    } else {
        if wait {
            errors.push(Error::invalid(
                format!("{what} wait"),
                "wait is for servers; this socket is a client",
            ));
        }
        if let Some(r) = reconnect {
            props.set("reconnect", r);
        }
    }
}

/// A serial port on a chardev: `-serial chardev:ID`. The board decides the UART
/// (isa-serial/ttyS0 on x86, pl011/ttyAMA0 on arm virt, ns16550a/ttyS0 on riscv virt).
pub(crate) fn render_serial(chardev: &str) -> Opt {
    let mut value = std::ffi::OsString::from("chardev:");
    value.push(OsStr::new(chardev));
    Opt::literal(
        "-serial",
        format!("-serial chardev:{chardev}"),
        "chardev",
        value,
    )
    .uses(IdKind::Chardev, chardev, "chardev")
}

/// The protocol a monitor speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorMode {
    /// QMP (JSON).
    #[default]
    Control,
    /// The human monitor (HMP).
    Readline,
}

/// A monitor on a chardev: `-mon chardev=ID,mode=control`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    /// The chardev id.
    pub chardev: String,
    /// QMP or HMP.
    #[serde(default)]
    pub mode: MonitorMode,
    /// Pretty-printed (multi-line) JSON replies.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pretty: bool,
}

impl Monitor {
    /// A QMP monitor on chardev `chardev`.
    pub fn qmp(chardev: impl Into<String>) -> Monitor {
        Monitor {
            chardev: chardev.into(),
            mode: MonitorMode::Control,
            pretty: false,
        }
    }
    /// A human monitor on chardev `chardev`.
    pub fn hmp(chardev: impl Into<String>) -> Monitor {
        Monitor {
            mode: MonitorMode::Readline,
            ..Monitor::qmp(chardev)
        }
    }
    /// Pretty-printed JSON.
    pub fn pretty(mut self, pretty: bool) -> Monitor {
        self.pretty = pretty;
        self
    }

    pub(crate) fn render(&self) -> Opt {
        let mut props = Props::new().with("chardev", self.chardev.as_str()).with(
            "mode",
            match self.mode {
                MonitorMode::Control => "control",
                MonitorMode::Readline => "readline",
            },
        );
        if self.pretty {
            props.set("pretty", true);
        }
        Opt::opts(
            "-mon",
            format!("-mon chardev={}", self.chardev),
            Opts::new(Grammar::QemuOpts, false).props(props),
        )
        .uses(IdKind::Chardev, self.chardev.as_str(), "chardev")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{keyval_text, OptValue};

    fn text(opt: &Opt) -> String {
        match opt.value.as_ref().unwrap() {
            OptValue::Literal { value, .. } => value.to_str().unwrap().to_string(),
            OptValue::Opts(o) => keyval_text(o).into_string().unwrap(),
        }
    }

    #[test]
    fn backends() {
        let t = |c: Chardev| text(&c.render().unwrap());
        assert_eq!(t(Chardev::socket_fd("c", 7)), "socket,id=c,fd=7");
        assert_eq!(
            t(Chardev::unix_server("c", "/run/a,b", false)),
            "socket,id=c,path=/run/a,,b,server=on,wait=off"
        );
        assert_eq!(
            t(Chardev::unix_client("c", "/s")),
            "socket,id=c,path=/s,server=off"
        );
        assert_eq!(
            t(Chardev::tcp_server("c", "127.0.0.1", 4444, true)),
            "socket,id=c,host=127.0.0.1,port=4444,server=on,wait=on"
        );
        assert_eq!(t(Chardev::pty("c")), "pty,id=c");
        assert_eq!(
            t(Chardev::file("c", "/l").mux(true).logfile("/x")),
            "file,id=c,path=/l,mux=on,logfile=/x"
        );
        assert_eq!(t(Chardev::null("c")), "null,id=c");
        assert_eq!(t(Chardev::stdio("c")), "stdio,id=c");
        assert_eq!(
            text(&Monitor::qmp("m").pretty(true).render()),
            "chardev=m,mode=control,pretty=on"
        );
        assert_eq!(text(&render_serial("c")), "chardev:c");
    }

    #[test]
    fn invalid_socket_settings() {
        let long = format!("/{}", "x".repeat(UNIX_PATH_MAX));
        let e = Chardev::unix_server("c", long, false).render().unwrap_err();
        assert!(
            e.to_string().contains("at most 107 bytes, this one is 108"),
            "{e}"
        );
        let mut c = Chardev::unix_client("c", "/s");
        if let ChardevBackend::Unix { wait, .. } = &mut c.backend {
            *wait = true;
        }
        let e = c.render().unwrap_err();
        assert!(e.to_string().contains("wait is for servers"), "{e}");
        assert!(Chardev::tcp_client("c", "h", 0).render().is_err());
    }

    #[test]
    fn serde_form() {
        let c: Chardev = serde_json::from_str(
            r#"{"id":"s","backend":{"type":"unix","path":"/a","server":true}}"#,
        )
        .unwrap();
        assert_eq!(c, Chardev::unix_server("s", "/a", false));
        let back: Chardev = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let e = serde_json::from_str::<Chardev>(r#"{"id":"s","backend":{"type":"pty","x":1}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
    }
}
