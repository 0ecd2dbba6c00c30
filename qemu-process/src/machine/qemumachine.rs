//! The rest of QEMUMachine's surface: a launch without QMP (settled, or confirmed by qtest),
//! QMP servers for other clients, pty consoles, the machine's name and log directory, raw QMP
//! requests (`cmd_obj`), the next event (`get_qmp_event`), and `wait` that kills
//! when QEMU does not exit in time.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use qemu_cmdline::{qmp_listen_chardev, MonitorAddress, CONSOLE_CHARDEV};
use qmp_proto::{Event, QtestError, ReplyError};
use serde_json::Value;

use super::{Deadline, Machine};
use crate::config::MachineConfig;
use crate::error::Error;

/// What a launch keeps of QEMUMachine's settings.
#[derive(Debug, Default)]
pub(super) struct Extras {
    /// The machine's name (its log files' base name).
    pub(super) name: String,
    log_dir: Option<PathBuf>,
    /// The QMP servers, as QEMU listens on them once read back.
    qmp_listen: Vec<MonitorAddress>,
    /// Unix sockets of QMP servers, removed on drop if QEMU left them (it was killed).
    listen_sockets: Vec<PathBuf>,
    /// The console is a pty.
    pub(super) console_pty: bool,
    /// Pty chardevs (label, path) read over QMP at launch; `None` when not read.
    ptys: Option<Vec<(String, PathBuf)>>,
    /// Whether the chardevs are read at launch (a pty, or a QMP server on port 0).
    read_chardevs: bool,
    /// Without QMP or qtest: when QEMU will have run long enough for the launch to count as
    /// done (the settle time from the spawn, at most the launch timeout).
    pub(super) settle_at: Option<Instant>,
}

impl Extras {
    pub(super) fn for_launch(config: &MachineConfig, name: &str) -> Extras {
        let vm_pty = config.vm.as_ref().is_some_and(|vm| {
            vm.spec
                .serial
                .iter()
                .any(|b| matches!(b, qemu_cmdline::ChardevBackend::Pty {}))
                || vm
                    .spec
                    .chardevs
                    .iter()
                    .any(|c| matches!(c.backend, qemu_cmdline::ChardevBackend::Pty {}))
        });
        let raw_pty = config
            .args
            .iter()
            .any(|a| a.as_encoded_bytes().starts_with(b"pty"));
        let port_zero = config
            .qmp_listen
            .iter()
            .any(|a| matches!(a, MonitorAddress::Tcp { port: 0, .. }));
        Extras {
            name: name.to_owned(),
            log_dir: config.log_dir.clone(),
            qmp_listen: config.qmp_listen.clone(),
            listen_sockets: config
                .qmp_listen
                .iter()
                .filter_map(|a| match a {
                    MonitorAddress::Unix(path) => Some(path.clone()),
                    MonitorAddress::Tcp { .. } => None,
                })
                .collect(),
            console_pty: config.get_console() && config.console_pty,
            ptys: None,
            read_chardevs: config.qmp && (config.console_pty || vm_pty || raw_pty || port_zero),
            settle_at: (!config.qmp && !config.qtest)
                .then(|| Instant::now() + config.launch_settle.min(config.launch_timeout)),
        }
    }
}

impl MachineConfig {
    /// Where a machine named `name` with temp dir `temp` logs: QEMU's output, and the console's
    /// (an explicit `console_log`, or the one in `log_dir`). Makes `log_dir` (owner-only).
    pub(crate) fn log_paths(
        &self,
        temp: &Path,
        name: &str,
    ) -> Result<(PathBuf, Option<PathBuf>), Error> {
        if let Some(dir) = &self.log_dir {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(Error::io_with(format!(
                    "creating the log dir {}",
                    dir.display()
                )))?;
        }
        Ok(self.log_paths_unmade(temp, name))
    }

    /// [`log_paths`](Self::log_paths) without making anything.
    pub(crate) fn log_paths_unmade(&self, temp: &Path, name: &str) -> (PathBuf, Option<PathBuf>) {
        let qemu = match &self.log_dir {
            Some(dir) => dir.join(format!("{name}.log")),
            None => temp.join("qemu.log"),
        };
        let console = self.console_log.clone().or_else(|| {
            let dir = self.log_dir.as_ref()?;
            self.get_console()
                .then(|| dir.join(format!("{name}-console.log")))
        });
        (qemu, console)
    }
}

/// The port in a socket chardev's `query-chardev` filename
/// (`disconnected:tcp:127.0.0.1:46475,server=on`, or with `<-> CLIENT` once connected).
fn listen_port(filename: &str) -> Option<u16> {
    let rest = filename.strip_prefix("disconnected:").unwrap_or(filename);
    let rest = rest.strip_prefix("tcp:")?;
    let address = rest.split([',', ' ']).next()?;
    address.rsplit_once(':')?.1.parse().ok()
}

/// The pty chardevs QEMU announced on stderr: `char device redirected to PATH (label L)`.
fn ptys_in_log(log: &str) -> Vec<(String, PathBuf)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("char device redirected to ").nth(1)?;
            let (path, label) = rest.split_once(" (label ")?;
            Some((label.strip_suffix(')')?.to_owned(), PathBuf::from(path)))
        })
        .collect()
}

impl Machine {
    // ------------------------------------------------------------------------------------------
    // Launch without QMP
    // ------------------------------------------------------------------------------------------

    /// Without QMP and qtest: the launch is done once QEMU has run for the settle time without
    /// exiting (see [`settled`](Self::settled)); waits until then, or QEMU's exit.
    pub(super) fn settle(&mut self) -> Result<(), Error> {
        let until = self.extras.settle_at.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        });
        self.run_until(
            Deadline::after(until),
            || "QEMU to settle".to_owned(),
            |m| m.launch_check(),
        )
    }

    /// Without QMP and qtest: whether the settle time has passed (`launch_check` then counts
    /// the launch as done, QEMU not having exited).
    pub(super) fn settled(&mut self) -> bool {
        let Some(at) = self.extras.settle_at else {
            return false;
        };
        if Instant::now() < at {
            return false;
        }
        log::info!(
            "QEMU (pid {:?}) runs without QMP after the settle time: launched",
            self.pid()
        );
        self.extras.settle_at = None;
        self.created.keep();
        true
    }

    /// When a launch without QMP and qtest will have settled, for a caller driving launches
    /// from its own poll ([`MachineSet`](crate::MachineSet)).
    pub(crate) fn launch_wake(&self) -> Option<Instant> {
        self.extras.settle_at
    }

    /// The error of a qtest channel that ended.
    pub(super) fn qtest_closed_error(&mut self) -> Error {
        self.qtest_error(QtestError::Closed { command: None })
    }

    /// Once QMP is up: the QMP servers' ports and the ptys, when the launch needs them.
    pub(super) fn read_chardevs(&mut self) -> Result<(), Error> {
        if !self.extras.read_chardevs {
            return Ok(());
        }
        let reply = self.execute("query-chardev", None)?;
        let chardevs: Vec<(String, String)> = reply
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|c| {
                        Some((
                            c.get("label")?.as_str()?.to_owned(),
                            c.get("filename")?.as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.extras.ptys = Some(
            chardevs
                .iter()
                .filter_map(|(label, filename)| {
                    let path = filename.strip_prefix("pty:")?;
                    Some((label.clone(), PathBuf::from(path)))
                })
                .collect(),
        );
        for (i, address) in self.extras.qmp_listen.iter_mut().enumerate() {
            if let MonitorAddress::Tcp { port, .. } = address {
                if *port != 0 {
                    continue;
                }
                let label = qmp_listen_chardev(i);
                let found = chardevs
                    .iter()
                    .find(|(l, _)| *l == label)
                    .and_then(|(_, filename)| listen_port(filename));
                match found {
                    Some(p) => *port = p,
                    None => {
                        return Err(Error::Protocol(qmp_proto::Error::Reply {
                            command: "query-chardev".into(),
                            message: format!("no listening port for chardev {label}"),
                        }))
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes unix sockets of QMP servers that a killed QEMU left behind.
    pub(super) fn remove_listen_sockets(&mut self) {
        for path in &self.extras.listen_sockets {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                if let Err(e) = std::fs::remove_file(path) {
                    log::warn!("could not remove {}: {e}", path.display());
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // Accessors
    // ------------------------------------------------------------------------------------------

    /// The machine's name ([`MachineConfig::name`], by default its temp dir's name; empty for
    /// an attached machine).
    pub fn name(&self) -> &str {
        &self.extras.name
    }

    /// The directory the logs are kept in ([`MachineConfig::log_dir`]), if any.
    pub fn log_dir(&self) -> Option<&Path> {
        self.extras.log_dir.as_deref()
    }

    /// The QMP servers for other clients ([`MachineConfig::qmp_listen`]) as QEMU listens on
    /// them: the port QEMU picked for a TCP port 0.
    pub fn qmp_listen_addresses(&self) -> &[MonitorAddress] {
        &self.extras.qmp_listen
    }

    /// The pseudo-terminals QEMU made for chardevs (`-chardev pty`, `-serial pty`, a VM's
    /// `{"type": "pty"}` serial ports, the console with
    /// [`MachineConfig::console_pty`]): (chardev label, path), as `query-chardev` reported
    /// them at launch, or, without QMP, as QEMU announced them in its log.
    pub fn pty_paths(&self) -> Vec<(String, PathBuf)> {
        match &self.extras.ptys {
            Some(ptys) => ptys.clone(),
            None => ptys_in_log(&self.log().unwrap_or_default()),
        }
    }

    /// The console's pseudo-terminal, for a machine launched with
    /// [`MachineConfig::console_pty`]: open it to talk to the guest (`None` otherwise).
    pub fn console_pty(&self) -> Option<PathBuf> {
        if !self.extras.console_pty {
            return None;
        }
        self.pty_paths()
            .into_iter()
            .find(|(label, _)| label == CONSOLE_CHARDEV)
            .map(|(_, path)| path)
    }

    // ------------------------------------------------------------------------------------------
    // Events, raw requests, waiting
    // ------------------------------------------------------------------------------------------

    /// Takes the next event (QEMUMachine's `get_qmp_event`): the oldest kept one, else the next
    /// to arrive within `timeout` (zero: only what QEMU has already sent). `Ok(None)` when
    /// none came in time; an error when the connection closed with no event kept
    /// ([`Error::Exited`], [`Error::Disconnected`]) or events were dropped
    /// ([`Error::EventQueueFull`], once).
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        match self.event_wait_any(None, timeout) {
            Ok(event) => Ok(Some(event)),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a QMP request written by the caller and returns QEMU's whole reply
    /// (QEMUMachine's `qmp`, qemu.qmp's `cmd_obj`): `request` is any JSON object, sent as it is
    /// (an unknown member, arguments of the wrong type: what a typed call never sends), and
    /// the reply is `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`, not an
    /// [`Error::Qmp`].
    ///
    /// The library keeps owning ids and order: the request goes with the library's own `id`
    /// (an `id` in `request` is taken out and put back into the reply, whatever its type), so
    /// its reply is matched by id, never by order, and cannot be mistaken for another
    /// command's; see `qmp_proto::Session::execute_raw`. A request with `exec-oob` is
    /// out-of-band. A `quit` whose connection closes before the reply is `{"return": {}}`.
    ///
    /// A `request` that is not an object is [`Error::InvalidArgument`]; no reply in `timeout`
    /// is [`Error::Timeout`] (a late reply is discarded); a reply over the size bound
    /// [`Error::ReplyTooLarge`].
    ///
    /// ```no_run
    /// # use qemu_process::{Machine, MachineConfig};
    /// # use serde_json::json;
    /// # use std::time::Duration;
    /// # let mut vm = Machine::launch(&MachineConfig::new("qemu-system-x86_64"))?;
    /// let reply = vm.execute_raw(&json!({"execute": "stop", "id": "x"}), Duration::from_secs(5))?;
    /// assert_eq!(reply, json!({"return": {}, "id": "x"}));
    /// # Ok::<(), qemu_process::Error>(())
    /// ```
    pub fn execute_raw(&mut self, request: &Value, timeout: Duration) -> Result<Value, Error> {
        let Some(map) = request.as_object() else {
            return Err(Error::InvalidArgument(format!(
                "a raw QMP request is a JSON object, not {request}"
            )));
        };
        self.ensure_qmp()?;
        let name = ["execute", "exec-oob"]
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str))
            .unwrap_or("(raw request)")
            .to_owned();
        log::debug!("QMP -> (raw) {request}");
        let id = match self.qmp.session.execute_raw(map.clone()) {
            Ok(id) => id,
            Err(e) => return Err(self.session_error(e)),
        };
        self.flush_qmp();
        let result = self.run_until(
            Deadline::after(timeout),
            || format!("the reply to {name}"),
            |m| {
                if let Some(reply) = m.qmp.session.take_raw_reply(id) {
                    return Some(reply.map_err(|e| match e {
                        ReplyError::TooLarge { size, limit } => Error::ReplyTooLarge {
                            command: name.clone(),
                            size,
                            limit,
                        },
                        ReplyError::Qmp(e) => Error::Qmp(e),
                        ReplyError::Closed => m.connection_error(),
                    }));
                }
                // The session answers a raw `quit` itself when QEMU closes the connection.
                if m.qmp.fd.is_none() {
                    return Some(Err(m.connection_error()));
                }
                None
            },
        );
        if result.as_ref().is_err_and(Error::is_timeout) {
            // Its reply, if it ever comes, is discarded by the session.
            self.qmp.session.abandon(id);
        }
        result
    }

    /// Waits up to `timeout` for QEMU to exit by itself, and kills it if it does not
    /// (QEMUMachine's `wait(timeout)`, which shuts down hard after its timeout): the exit
    /// status, or [`Error::NotGraceful`] with the status after `SIGKILL`. Sends nothing to
    /// QEMU first (see [`shutdown`](Machine::shutdown) for `quit`, and [`wait`](Machine::wait)
    /// for a wait that leaves QEMU running). [`Error::Unsupported`] for an attached machine.
    pub fn wait_or_kill(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.child_or_unsupported("wait")?;
        match self.wait_exit(Deadline::after(timeout), "QEMU to exit") {
            Err(e) if e.is_timeout() => {
                log::warn!("QEMU did not exit in time ({e}); killing it");
                let status = self.kill()?;
                Err(Error::NotGraceful { status })
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_ports_and_ptys_are_read_from_qemus_text() {
        assert_eq!(
            listen_port("disconnected:tcp:127.0.0.1:46475,server=on"),
            Some(46475)
        );
        assert_eq!(
            listen_port("tcp:127.0.0.1:46475,server=on <-> 127.0.0.1:50000"),
            Some(46475)
        );
        assert_eq!(
            listen_port("disconnected:tcp:[::1]:4444,server=on"),
            Some(4444)
        );
        assert_eq!(listen_port("disconnected:unix:/tmp/x,server=on"), None);
        assert_eq!(listen_port("pty:/dev/pts/3"), None);
        let log = "qemu-system-x86_64: -serial x: warning\n\
                   char device redirected to /dev/pts/7 (label qm-console)\n\
                   char device redirected to /dev/pts/8 (label serial0)\n";
        assert_eq!(
            ptys_in_log(log),
            [
                ("qm-console".to_owned(), PathBuf::from("/dev/pts/7")),
                ("serial0".to_owned(), PathBuf::from("/dev/pts/8")),
            ]
        );
    }

    #[test]
    fn log_paths_follow_log_dir_and_name() {
        let mut config = MachineConfig::new("qemu-system-x86_64");
        let temp = Path::new("/tmp/qemu-machine.abc");
        assert_eq!(
            config.log_paths_unmade(temp, "vm1"),
            (temp.join("qemu.log"), None)
        );
        config.log_dir("/var/log/vms").console(true);
        assert_eq!(
            config.log_paths_unmade(temp, "vm1"),
            (
                PathBuf::from("/var/log/vms/vm1.log"),
                Some(PathBuf::from("/var/log/vms/vm1-console.log"))
            )
        );
        config.console_log("/elsewhere/c.log");
        assert_eq!(
            config.log_paths_unmade(temp, "vm1").1,
            Some(PathBuf::from("/elsewhere/c.log"))
        );
    }
}
