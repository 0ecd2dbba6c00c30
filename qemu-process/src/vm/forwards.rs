//! Port forwards as QEMU really listens for them: read back from HMP `info usernet`, the only
//! place QEMU reports the port the kernel picked for host port 0 (QMP has no query for it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use qemu_cmdline::{Proto, VmSpec};
use serde_json::json;

use crate::error::Error;
use crate::machine::Machine;

/// A port forward as QEMU listens for it on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The forward's name, if it has one.
    pub name: Option<String>,
    /// The NIC (netdev) it belongs to.
    pub nic: String,
    /// TCP or UDP.
    pub proto: Proto,
    /// The guest port.
    pub guest_port: u16,
    /// Where QEMU listens, as HMP `info usernet` reports it: `127.0.0.1:PORT` unless the
    /// spec's `host_addr` said otherwise, `0.0.0.0:PORT` when it asked for every address (then
    /// the port is reachable from the network); the port is the one the kernel picked for
    /// host port 0.
    pub listen: SocketAddr,
}

impl Forward {
    /// Where a client on this host connects: the listening address, or `127.0.0.1` with the
    /// same port when the forward listens on every address (`0.0.0.0`).
    pub fn connect_addr(&self) -> SocketAddr {
        if self.listen.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.listen.port())
        } else {
            self.listen
        }
    }
    /// Whether the forward listens on every host address (`0.0.0.0`), which makes it
    /// reachable from the network.
    pub fn listens_on_all_addresses(&self) -> bool {
        self.listen.ip().is_unspecified()
    }
}

/// The forwards of the resolved spec with their listening addresses and ports, as QEMU reports
/// them in HMP `info usernet` (so that the address is what QEMU really listens on, and a host
/// port 0 becomes the port the kernel picked).
pub(crate) fn read_forwards(machine: &mut Machine, spec: &VmSpec) -> Result<Vec<Forward>, Error> {
    let mut out: Vec<(u16, Forward)> = spec
        .forwards()
        .into_iter()
        .map(|(nic, f)| {
            (
                f.host_port,
                Forward {
                    name: f.name.clone(),
                    nic,
                    proto: f.proto,
                    guest_port: f.guest_port,
                    listen: SocketAddr::new(IpAddr::V4(f.listen_addr()), f.host_port),
                },
            )
        })
        .collect();
    if out.is_empty() {
        return Ok(Vec::new());
    }
    let text = machine.execute(
        "human-monitor-command",
        Some(json!({"command-line": "info usernet"})),
    )?;
    let text = text.as_str().unwrap_or_default();
    let rows = parse_usernet(text);
    let mut used = vec![false; rows.len()];
    // Ports given explicitly are taken first, so that a picked one never matches them.
    for pass in [false, true] {
        for (port, f) in &mut out {
            if (*port == 0) != pass {
                continue;
            }
            let found = rows.iter().enumerate().position(|(k, row)| {
                !used[k]
                    && row.nic == f.nic
                    && row.proto == f.proto
                    && row.guest_port == f.guest_port
                    && (*port == 0 || row.host_port == *port)
                    && row.listen_addr() == f.listen.ip()
            });
            let Some(k) = found else {
                return Err(Error::InvalidArgument(format!(
                    "QEMU does not report forward {} (guest port {}) listening on {}: \
                     `info usernet` said: {}",
                    f.name.as_deref().unwrap_or("(unnamed)"),
                    f.guest_port,
                    f.listen,
                    text.trim_end()
                )));
            };
            used[k] = true;
            f.listen = SocketAddr::new(rows[k].listen_addr(), rows[k].host_port);
        }
    }
    Ok(out.into_iter().map(|(_, f)| f).collect())
}

/// A `HOST_FORWARD` row of HMP `info usernet`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UsernetRow {
    nic: String,
    proto: Proto,
    /// The listening address; `None` for `*` (every address).
    host_addr: Option<Ipv4Addr>,
    host_port: u16,
    guest_port: u16,
}

impl UsernetRow {
    fn listen_addr(&self) -> IpAddr {
        IpAddr::V4(self.host_addr.unwrap_or(Ipv4Addr::UNSPECIFIED))
    }
}

/// Parses `info usernet`:
///
/// ```text
/// Hub -1 (net0):
///   Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
///   TCP[HOST_FORWARD]   8       127.0.0.1 39463       10.0.2.15    80     0     0
/// ```
fn parse_usernet(text: &str) -> Vec<UsernetRow> {
    let mut rows = Vec::new();
    let mut nic = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Hub") || line.starts_with("VLAN") {
            if let (Some(a), Some(b)) = (line.find('('), line.rfind(')')) {
                if a < b {
                    nic = line[a + 1..b].to_owned();
                }
            }
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || !cols[0].contains("HOST_FORWARD") {
            continue;
        }
        let proto = if cols[0].starts_with("UDP") {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        let (Ok(host_port), Ok(guest_port)) = (cols[3].parse(), cols[5].parse()) else {
            continue;
        };
        rows.push(UsernetRow {
            nic: nic.clone(),
            proto,
            host_addr: cols[2].parse().ok(),
            host_port,
            guest_port,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernet_rows_are_parsed_per_netdev() {
        let text = "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[HOST_FORWARD]   8       127.0.0.1 39463       10.0.2.15    80     0     0\r\n  UDP[HOST_FORWARD]   3               * 44530       10.0.2.15    53     0     0\r\n  TCP[ESTABLISHED]   9       10.0.2.15 1234       1.2.3.4    80     0     0\r\nHub -1 (wan):\r\n  TCP[HOST_FORWARD]  10               * 2222       10.0.2.15    22     0     0\r\n";
        let rows = parse_usernet(text);
        assert_eq!(
            rows,
            vec![
                UsernetRow {
                    nic: "n0".into(),
                    proto: Proto::Tcp,
                    host_addr: Some(Ipv4Addr::LOCALHOST),
                    host_port: 39463,
                    guest_port: 80
                },
                UsernetRow {
                    nic: "n0".into(),
                    proto: Proto::Udp,
                    host_addr: None,
                    host_port: 44530,
                    guest_port: 53
                },
                UsernetRow {
                    nic: "wan".into(),
                    proto: Proto::Tcp,
                    host_addr: None,
                    host_port: 2222,
                    guest_port: 22
                },
            ]
        );
        assert!(parse_usernet("").is_empty());
    }
}
