//! Display, VGA and firmware.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::chardev::UNIX_PATH_MAX;
use crate::render::{Grammar, Opt, Opts};
use crate::{Error, IdKind, Props};

/// A VNC server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Vnc {
    /// On a unix socket (at most 107 bytes): `-vnc unix:PATH`.
    Unix(PathBuf),
    /// On TCP port `5900 + display`: `-vnc HOST:DISPLAY`, on `127.0.0.1` unless `host` says
    /// otherwise (QEMU's own default, for an empty host, is every address).
    Tcp {
        /// The address to listen on: `127.0.0.1` (this host only) when absent; `0.0.0.0` for
        /// every IPv4 address (reachable from the network), `[::]` for every address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// The display number.
        display: u16,
    },
}

/// What the VM shows its screen on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Display {
    /// No display: `-display none` (the framebuffer still exists if there is a VGA device).
    None,
    /// A VNC server: `-vnc ...` (QEMU then opens no local window).
    Vnc(Vnc),
}

impl Display {
    pub(crate) fn render(&self) -> Result<Opt, Error> {
        match self {
            Display::None => Ok(Opt::literal("-display", "-display none", "type", "none")),
            Display::Vnc(vnc) => {
                let value: OsString = match vnc {
                    Vnc::Unix(path) => {
                        let len = path.as_os_str().as_bytes().len();
                        if len > UNIX_PATH_MAX {
                            return Err(Error::invalid(
                                "-vnc unix path",
                                format!(
                                    "a unix socket path is at most {UNIX_PATH_MAX} bytes, this \
                                     one is {len}"
                                ),
                            ));
                        }
                        let mut v = OsString::from("unix:");
                        v.push(path.as_os_str());
                        v
                    }
                    Vnc::Tcp { host, display } => {
                        let host = host.as_deref().unwrap_or("127.0.0.1");
                        if host.contains(':') && !host.starts_with('[') {
                            return Err(Error::invalid(
                                "-vnc host",
                                "write an IPv6 address in brackets: [::1]",
                            ));
                        }
                        format!("{host}:{display}").into()
                    }
                };
                Ok(Opt::opts(
                    "-vnc",
                    "-vnc",
                    Opts::new(Grammar::QemuOpts, false).implied("vnc", value),
                ))
            }
        }
    }
}

/// The VGA card: `-vga TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vga {
    /// No VGA card.
    None,
    /// Standard VGA (Bochs VBE).
    Std,
    /// virtio-vga.
    Virtio,
    /// QXL.
    Qxl,
    /// Cirrus Logic.
    Cirrus,
}

impl Vga {
    pub(crate) fn render(self) -> Opt {
        let name = match self {
            Vga::None => "none",
            Vga::Std => "std",
            Vga::Virtio => "virtio",
            Vga::Qxl => "qxl",
            Vga::Cirrus => "cirrus",
        };
        Opt::literal("-vga", format!("-vga {name}"), "type", name)
    }
}

/// The firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Firmware {
    /// A BIOS image: `-bios PATH` (SeaBIOS, OpenSBI, a bare-metal program).
    Bios(PathBuf),
    /// UEFI as two pflash devices: the read-only code and a writable copy of the variable
    /// store (one per VM). Rendered as `-blockdev` nodes `uefi-code` and `uefi-vars` and
    /// `-machine pflash0=uefi-code,pflash1=uefi-vars`.
    Uefi {
        /// The firmware code (`OVMF_CODE_4M.fd`, `AAVMF_CODE.fd`).
        code: PathBuf,
        /// This VM's variable store (a copy of `OVMF_VARS_4M.fd`, `AAVMF_VARS.fd`).
        vars: PathBuf,
    },
}

impl Firmware {
    /// Renders the options and returns the machine properties they need.
    pub(crate) fn render(&self, out: &mut Vec<Opt>) -> Props {
        match self {
            Firmware::Bios(path) => {
                out.push(Opt::literal("-bios", "-bios", "path", path.as_os_str()));
                Props::new()
            }
            Firmware::Uefi { code, vars } => {
                for (node, path, read_only) in
                    [("uefi-code", code, true), ("uefi-vars", vars, false)]
                {
                    let what = format!("UEFI {}", &node[5..]);
                    let file = format!("{node}-file");
                    let mut p = Props::new()
                        .with("driver", "file")
                        .with("node-name", file.as_str())
                        .with("filename", path.as_os_str());
                    if read_only {
                        p.set("read-only", true);
                    }
                    out.push(
                        Opt::opts(
                            "-blockdev",
                            what.clone(),
                            Opts::new(Grammar::Keyval, true).props(p),
                        )
                        .define(IdKind::Node, file.as_str(), "node-name"),
                    );
                    let mut p = Props::new()
                        .with("driver", "raw")
                        .with("node-name", node)
                        .with("file", file.as_str());
                    if read_only {
                        p.set("read-only", true);
                    }
                    out.push(
                        Opt::opts("-blockdev", what, Opts::new(Grammar::Keyval, true).props(p))
                            .define(IdKind::Node, node, "node-name"),
                    );
                }
                Props::new()
                    .with("pflash0", "uefi-code")
                    .with("pflash1", "uefi-vars")
            }
        }
    }
}
