//! The qtest machine (QEMUQtestMachine): QEMU's device-test protocol on a socketpair the
//! library owns, driven by the machine's poll loop, with typed calls.
//!
//! The protocol itself is `qmp_proto::qtest` (sans-IO); this module moves its bytes, waits
//! for replies under deadlines, and decides how QEMU is launched for it: with the qtest
//! accelerator when the binary has it, else on TCG (or the chosen accelerator) with `-S`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use mio::unix::SourceFd;
use mio::Interest;
use qmp_proto::qtest::{Call, Endianness, Irq, QtestOptions, QtestSession};
use qmp_proto::QtestError;

use super::{Deadline, Machine, QTEST};
use crate::config::AccelChoice;
use crate::error::Error;
use crate::spawn::{find_executable, ChildProc, SpawnRequest};
use crate::sys;

/// How long `QEMU -accel help` may take before the binary is taken to have no qtest
/// accelerator.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// The qtest accelerator's name.
const QTEST_ACCEL: &str = "qtest";

/// Answers of `-accel help` so far, by binary path: its modification time, whether it lists
/// `qtest`.
type Probed = HashMap<PathBuf, (Option<SystemTime>, bool)>;
static PROBED: Mutex<Option<Probed>> = Mutex::new(None);

/// Whether `binary` (a name looked up in `PATH`, or a path) has the qtest accelerator: whether
/// `binary -accel help` lists it. The answer is kept per binary (and its modification time).
/// A binary that cannot be run, or does not answer in time, has none.
pub(crate) fn qtest_accel_available(binary: &Path) -> bool {
    let Some(path) = find_executable(binary) else {
        return false;
    };
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    if let Some((seen, answer)) = PROBED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&path)
    {
        if *seen == mtime {
            return *answer;
        }
    }
    let answer = match probe(&path) {
        Ok(answer) => answer,
        Err(e) => {
            log::warn!(
                "asking {} for its accelerators failed, taking it to have no qtest \
                 accelerator: {e}",
                path.display()
            );
            false
        }
    };
    log::debug!(
        "{} {} the qtest accelerator",
        path.display(),
        if answer { "has" } else { "does not have" }
    );
    PROBED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(path, (mtime, answer));
    answer
}

/// Runs `binary -accel help` (through the guardian) and looks for a `qtest` line.
fn probe(binary: &Path) -> Result<bool, Error> {
    use std::io::{Read, Seek};
    let mut out = crate::image::child::anonymous_file()?;
    let argv = [
        binary.as_os_str().to_owned(),
        "-accel".into(),
        "help".into(),
    ];
    let mut child = ChildProc::spawn(&SpawnRequest {
        argv: &argv,
        env: &[],
        log: &out,
        inherit: &[],
    })
    .map_err(Error::io_with(format!(
        "running {} -accel help",
        binary.display()
    )))?;
    let status = child
        .wait_timeout(PROBE_LIMIT)
        .map_err(Error::io_with("waiting for -accel help"))?;
    if status.is_none() {
        let _ = child.kill_and_reap(PROBE_LIMIT);
        return Err(Error::Timeout {
            what: format!("{} -accel help", binary.display()),
            after: PROBE_LIMIT,
        });
    }
    let mut text = String::new();
    out.rewind()
        .and_then(|_| out.read_to_string(&mut text))
        .map_err(Error::io_with("reading the output of -accel help"))?;
    Ok(text.lines().any(|l| l.trim() == QTEST_ACCEL))
}

/// How a qtest machine runs: the accelerator the harness adds, whether `-S` is added, and
/// whether the virtual clock commands work (`None`: the caller's arguments decide, unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QtestPlan {
    pub(crate) accel: Option<qemu_cmdline::Accel>,
    pub(crate) paused: bool,
    pub(crate) clock: Option<bool>,
}

impl QtestPlan {
    /// The plan for a launch whose accelerator choice is `choice`, resolved (an explicit
    /// accelerator) or `Auto` left to the library, `None` when the arguments or the
    /// description decide.
    pub(crate) fn new(choice: Option<AccelChoice>, binary: &Path) -> QtestPlan {
        match choice {
            Some(AccelChoice::Auto) if qtest_accel_available(binary) => QtestPlan {
                accel: Some(qemu_cmdline::Accel::Other(QTEST_ACCEL.into())),
                paused: false,
                clock: Some(true),
            },
            Some(AccelChoice::Auto) | Some(AccelChoice::Tcg) => QtestPlan {
                accel: Some(qemu_cmdline::Accel::Tcg),
                paused: true,
                clock: Some(false),
            },
            Some(AccelChoice::Kvm) => QtestPlan {
                accel: Some(qemu_cmdline::Accel::Kvm),
                paused: true,
                clock: Some(false),
            },
            Some(AccelChoice::None) | None => QtestPlan {
                accel: None,
                paused: true,
                clock: None,
            },
        }
    }

    /// The name of the accelerator that runs instead of the qtest one, for messages.
    pub(crate) fn accel_name(&self) -> String {
        self.accel
            .as_ref()
            .map_or_else(|| "the chosen accelerator".into(), |a| a.name().to_owned())
    }
}

/// A call whose caller gave up waiting: takes (and drops) its reply once it is there.
type Abandoned = Box<dyn FnMut(&mut QtestSession) -> bool + Send>;

/// The machine's qtest connection.
pub(super) struct QtestConn {
    pub(super) fd: Option<OwnedFd>,
    pub(super) session: QtestSession,
    interest_write: bool,
    write_failed: bool,
    /// Why the stream ended, when it broke (a line too long, a protocol error).
    fatal: Option<QtestError>,
    abandoned: Vec<Abandoned>,
    /// Whether `clock_step`/`clock_set` can work (`None`: unknown, QEMU answers).
    clock: Option<bool>,
    /// The accelerator QEMU runs instead of the qtest one, for messages.
    accel: String,
    /// Without QMP: the call whose reply tells that QEMU finished initialising.
    pub(super) probe: Option<Call<Endianness>>,
}

impl QtestConn {
    pub(super) fn new(fd: OwnedFd, plan: &QtestPlan) -> QtestConn {
        QtestConn {
            fd: Some(fd),
            session: QtestSession::new(QtestOptions::default()),
            interest_write: false,
            write_failed: false,
            fatal: None,
            abandoned: Vec::new(),
            clock: plan.clock,
            accel: plan.accel_name(),
            probe: None,
        }
    }

    /// Registers the socket in the machine's poll.
    pub(super) fn register(&self, registry: &mio::Registry) -> Result<(), Error> {
        if let Some(fd) = &self.fd {
            registry
                .register(&mut SourceFd(&fd.as_raw_fd()), QTEST, Interest::READABLE)
                .map_err(Error::io_with("registering the qtest socket"))?;
        }
        Ok(())
    }
}

impl Machine {
    // ------------------------------------------------------------------------------------------
    // qtest I/O, run by the poll loop
    // ------------------------------------------------------------------------------------------

    /// Reads the qtest socket into the session (see `read_qmp` on `drain`), then drops the
    /// replies of abandoned calls.
    pub(super) fn read_qtest(&mut self, drain: bool) {
        loop {
            let Some(conn) = self.qtest.as_mut() else {
                return;
            };
            let Some(fd) = conn.fd.as_ref() else { return };
            match sys::recv_into(fd.as_fd(), &mut self.read_buf) {
                Ok(0) => {
                    if let Err(e) = conn.session.receive_eof() {
                        log::warn!("qtest: {e}");
                        conn.fatal.get_or_insert(e);
                    }
                    log::debug!("qtest connection closed by QEMU");
                    self.close_qtest();
                    return;
                }
                Ok(n) => {
                    if let Err(e) = conn.session.receive(&self.read_buf) {
                        log::warn!("qtest stream broken, closing it: {e}");
                        conn.fatal.get_or_insert(e);
                        self.close_qtest();
                        return;
                    }
                    if n < self.read_buf.capacity() && !drain {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("reading the qtest socket failed: {e}");
                    conn.session.close();
                    self.close_qtest();
                    return;
                }
            }
        }
        if let Some(conn) = self.qtest.as_mut() {
            let session = &mut conn.session;
            conn.abandoned.retain_mut(|take| !take(session));
        }
    }

    fn close_qtest(&mut self) {
        let Some(conn) = self.qtest.as_mut() else {
            return;
        };
        conn.session.close();
        if let Some(fd) = conn.fd.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        conn.interest_write = false;
        let session = &mut conn.session;
        conn.abandoned.retain_mut(|take| !take(session));
    }

    /// Writes what the qtest session has to send, registering for writability when the socket
    /// is full.
    pub(super) fn flush_qtest(&mut self) {
        let Some(conn) = self.qtest.as_mut() else {
            return;
        };
        let Some(fd) = conn.fd.as_ref() else { return };
        let mut blocked = false;
        while !conn.write_failed && !conn.session.transmit().is_empty() {
            match sys::send(fd.as_fd(), conn.session.transmit()) {
                Ok(n) => conn.session.advance_transmit(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => {
                    log::debug!("writing to the qtest socket failed: {e}");
                    conn.write_failed = true;
                }
            }
        }
        if blocked != conn.interest_write {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match self
                .poll
                .registry()
                .reregister(&mut SourceFd(&fd.as_raw_fd()), QTEST, interest)
            {
                Ok(()) => conn.interest_write = blocked,
                Err(e) => log::warn!("re-registering the qtest socket failed: {e}"),
            }
        }
    }

    /// A qtest error as the crate's: the end of the session is QEMU's exit when that is known.
    pub(super) fn qtest_error(&mut self, e: QtestError) -> Error {
        if let QtestError::Closed { .. } = e {
            if let Some(fatal) = self.qtest.as_ref().and_then(|c| c.fatal.clone()) {
                return Error::Qtest(fatal);
            }
            self.reap_now();
            if let Some(status) = self.exit_status_now() {
                return Error::Exited(status);
            }
        }
        Error::Qtest(e)
    }

    /// Issues a qtest command and waits up to `timeout` for its reply. A reply that comes
    /// after the deadline is dropped when it arrives.
    fn qtest_call<T: 'static>(
        &mut self,
        timeout: Duration,
        issue: impl FnOnce(&mut QtestSession) -> Result<Call<T>, QtestError>,
    ) -> Result<T, Error> {
        let deadline = Deadline::after(timeout);
        let conn = self.qtest_conn()?;
        if conn.write_failed {
            conn.session.close();
        }
        let call = match issue(&mut conn.session) {
            Ok(call) => call,
            Err(e) => return Err(self.qtest_error(e)),
        };
        self.flush_qtest();
        let result = self.run_until(
            deadline,
            || "a qtest reply".to_owned(),
            |m| {
                let conn = m.qtest.as_mut().expect("checked above");
                let reply = conn.session.take(call)?;
                Some(reply.map_err(|e| m.qtest_error(e)))
            },
        );
        if let Err(e) = &result {
            if e.is_timeout() {
                if let Some(conn) = self.qtest.as_mut() {
                    conn.abandoned
                        .push(Box::new(move |s: &mut QtestSession| s.take(call).is_some()));
                }
            }
        }
        result
    }

    fn qtest_conn(&mut self) -> Result<&mut QtestConn, Error> {
        self.qtest.as_mut().ok_or_else(|| {
            Error::Unsupported(
                "this machine has no qtest channel (MachineConfig::qtest, or an attached \
                 machine)"
                    .into(),
            )
        })
    }

    /// The machine's qtest client (QEMUQtestMachine's `qtest`), for a machine launched with
    /// [`MachineConfig::qtest`](crate::MachineConfig::qtest); [`Error::Unsupported`] otherwise.
    /// Its calls wait up to the machine's QMP timeout unless [`Qtest::timeout`] says otherwise.
    ///
    /// ```no_run
    /// use qemu_process::{Machine, MachineConfig};
    ///
    /// let mut config = MachineConfig::new("qemu-system-x86_64");
    /// config.args(["-machine", "q35", "-nodefaults"]).qtest(true);
    /// let mut vm = Machine::launch(&config)?;
    /// let mut qtest = vm.qtest()?;
    /// qtest.outl(0xcf8, 0x8000_0000)?; // PCI configuration of 00:00.0
    /// assert_eq!(qtest.inl(0xcfc)?, 0x29c0_8086); // the Q35 host bridge
    /// qtest.write(0x10_0000, b"hello")?;
    /// assert_eq!(qtest.read(0x10_0000, 5)?, b"hello");
    /// # Ok::<(), qemu_process::Error>(())
    /// ```
    pub fn qtest(&mut self) -> Result<Qtest<'_>, Error> {
        self.qtest_conn()?;
        let timeout = self.qmp_timeout;
        Ok(Qtest {
            machine: self,
            timeout,
        })
    }

    /// Whether the machine has a qtest channel (open or not).
    pub fn has_qtest(&self) -> bool {
        self.qtest.is_some()
    }
}

/// A machine's qtest client, from [`Machine::qtest`]: QEMU's device-test protocol with typed
/// calls (see `qmp_proto::qtest` for the protocol and what each command does).
///
/// Every call waits for its reply under the client's timeout, running the machine's poll loop
/// meanwhile (QMP events, console output and IRQ notifications keep being taken in). A
/// command QEMU refuses (`FAIL`, `ERR`) is [`Error::Qtest`] naming the line and QEMU's answer;
/// a line that would make QEMU abort (a missing or malformed argument) is refused before it
/// is sent, as [`Error::Qtest`] with `QtestError::InvalidCommand`; once QEMU has exited, calls
/// are [`Error::Exited`]. QEMU keeps running when the qtest connection closes.
pub struct Qtest<'a> {
    machine: &'a mut Machine,
    timeout: Duration,
}

impl std::fmt::Debug for Qtest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qtest")
            .field("pid", &self.machine.pid())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Qtest<'_> {
    /// Sets the deadline of each following call of this client (default: the machine's QMP
    /// timeout).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    fn call<T: 'static>(
        &mut self,
        issue: impl FnOnce(&mut QtestSession) -> Result<Call<T>, QtestError>,
    ) -> Result<T, Error> {
        self.machine.qtest_call(self.timeout, issue)
    }

    /// Sends a command line as it is (QEMUQtestMachine's `qtest(cmd)`, without the newline)
    /// and returns the values of QEMU's `OK` answer (`"0x0044"` for `OK 0x0044`, empty for a
    /// bare `OK`). The line must be words of printable ASCII separated by single spaces, and a
    /// command QEMU knows must have its arguments (see `QtestSession::send_raw`).
    pub fn raw(&mut self, line: &str) -> Result<String, Error> {
        self.call(|s| s.send_raw(line))
    }

    /// Whether `clock_step` and `clock_set` can work: the machine runs the qtest accelerator
    /// (`Some(true)`), or does not (`Some(false)`: they fail with [`Error::NoQtestClock`]
    /// without asking QEMU); `None` when the caller's arguments chose the accelerator.
    pub fn has_clock(&self) -> Option<bool> {
        self.machine.qtest.as_ref().and_then(|c| c.clock)
    }

    fn check_clock(&self, command: &str) -> Result<(), Error> {
        match self.machine.qtest.as_ref() {
            Some(conn) if conn.clock == Some(false) => Err(Error::NoQtestClock {
                command: command.to_owned(),
                accel: conn.accel.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// `clock_step [NS]`: advances the virtual clock by `ns` nanoseconds (`None`: to the next
    /// timer deadline), running the timers due; returns the new clock. Needs the qtest
    /// accelerator ([`Error::NoQtestClock`] without it).
    pub fn clock_step(&mut self, ns: Option<u64>) -> Result<u64, Error> {
        self.check_clock("clock_step")?;
        self.call(|s| s.clock_step(ns))
    }

    /// `clock_set NS`: advances the virtual clock to `ns`; returns the new clock. Needs the
    /// qtest accelerator ([`Error::NoQtestClock`] without it).
    pub fn clock_set(&mut self, ns: u64) -> Result<u64, Error> {
        self.check_clock("clock_set")?;
        self.call(|s| s.clock_set(ns))
    }

    /// `inb PORT`.
    pub fn inb(&mut self, port: u16) -> Result<u8, Error> {
        self.call(|s| s.inb(port))
    }

    /// `inw PORT`.
    pub fn inw(&mut self, port: u16) -> Result<u16, Error> {
        self.call(|s| s.inw(port))
    }

    /// `inl PORT`.
    pub fn inl(&mut self, port: u16) -> Result<u32, Error> {
        self.call(|s| s.inl(port))
    }

    /// `outb PORT VALUE`.
    pub fn outb(&mut self, port: u16, value: u8) -> Result<(), Error> {
        self.call(|s| s.outb(port, value))
    }

    /// `outw PORT VALUE`.
    pub fn outw(&mut self, port: u16, value: u16) -> Result<(), Error> {
        self.call(|s| s.outw(port, value))
    }

    /// `outl PORT VALUE`.
    pub fn outl(&mut self, port: u16, value: u32) -> Result<(), Error> {
        self.call(|s| s.outl(port, value))
    }

    /// `readb ADDR`: a byte of guest memory.
    pub fn readb(&mut self, addr: u64) -> Result<u8, Error> {
        self.call(|s| s.readb(addr))
    }

    /// `readw ADDR`, in the target's byte order.
    pub fn readw(&mut self, addr: u64) -> Result<u16, Error> {
        self.call(|s| s.readw(addr))
    }

    /// `readl ADDR`, in the target's byte order.
    pub fn readl(&mut self, addr: u64) -> Result<u32, Error> {
        self.call(|s| s.readl(addr))
    }

    /// `readq ADDR`, in the target's byte order.
    pub fn readq(&mut self, addr: u64) -> Result<u64, Error> {
        self.call(|s| s.readq(addr))
    }

    /// `writeb ADDR VALUE`.
    pub fn writeb(&mut self, addr: u64, value: u8) -> Result<(), Error> {
        self.call(|s| s.writeb(addr, value))
    }

    /// `writew ADDR VALUE`, in the target's byte order.
    pub fn writew(&mut self, addr: u64, value: u16) -> Result<(), Error> {
        self.call(|s| s.writew(addr, value))
    }

    /// `writel ADDR VALUE`, in the target's byte order.
    pub fn writel(&mut self, addr: u64, value: u32) -> Result<(), Error> {
        self.call(|s| s.writel(addr, value))
    }

    /// `writeq ADDR VALUE`, in the target's byte order.
    pub fn writeq(&mut self, addr: u64, value: u64) -> Result<(), Error> {
        self.call(|s| s.writeq(addr, value))
    }

    /// `read ADDR SIZE`: `size` bytes of guest memory, carried in hex. At most 512 KiB per call
    /// (the reply's line bound); a read of 0 bytes asks QEMU nothing.
    pub fn read(&mut self, addr: u64, size: usize) -> Result<Vec<u8>, Error> {
        self.call(|s| s.read(addr, size))
    }

    /// `b64read ADDR SIZE`: like [`read`](Qtest::read), carried in base64 (a third shorter;
    /// up to 768 KiB per call).
    pub fn b64read(&mut self, addr: u64, size: usize) -> Result<Vec<u8>, Error> {
        self.call(|s| s.b64read(addr, size))
    }

    /// `write ADDR SIZE DATA`: writes `data` to guest memory, carried in hex.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Error> {
        self.call(|s| s.write(addr, data))
    }

    /// `b64write ADDR SIZE DATA`: writes `data` to guest memory, carried in base64.
    pub fn b64write(&mut self, addr: u64, data: &[u8]) -> Result<(), Error> {
        self.call(|s| s.b64write(addr, data))
    }

    /// `memset ADDR SIZE VALUE`: fills `size` bytes of guest memory with `value`.
    pub fn memset(&mut self, addr: u64, size: u64, value: u8) -> Result<(), Error> {
        self.call(|s| s.memset(addr, size, value))
    }

    /// `irq_intercept_in QOM-PATH`: the device's GPIO inputs are reported as [`Irq`]
    /// notifications (on a PC, `ioapic`: the ISA interrupts). One device per QEMU run.
    pub fn irq_intercept_in(&mut self, path: &str) -> Result<(), Error> {
        self.call(|s| s.irq_intercept_in(path))
    }

    /// `irq_intercept_out QOM-PATH`: the device's GPIO outputs are reported.
    pub fn irq_intercept_out(&mut self, path: &str) -> Result<(), Error> {
        self.call(|s| s.irq_intercept_out(path))
    }

    /// `set_irq_in QOM-PATH NAME NUM LEVEL`: drives input `num` of the device's GPIO list
    /// `name` (`None`: the unnamed one) to `level`.
    pub fn set_irq_in(
        &mut self,
        path: &str,
        name: Option<&str>,
        num: u32,
        level: i32,
    ) -> Result<(), Error> {
        self.call(|s| s.set_irq_in(path, name, num, level))
    }

    /// `endianness`: the target's byte order.
    pub fn endianness(&mut self) -> Result<Endianness, Error> {
        self.call(|s| s.endianness())
    }

    /// Takes the IRQ notifications received so far, oldest first, without reading anything
    /// (they are read whenever the machine waits for anything).
    pub fn take_irqs(&mut self) -> Vec<Irq> {
        let Some(conn) = self.machine.qtest.as_mut() else {
            return Vec::new();
        };
        std::iter::from_fn(|| conn.session.poll_irq()).collect()
    }

    /// Waits up to `timeout` for the next IRQ notification and takes it (queued ones first,
    /// in arrival order). [`Error::Timeout`] when none comes; [`Error::Exited`] or
    /// [`Error::Qtest`] when the connection ends first.
    pub fn irq_wait(&mut self, timeout: Duration) -> Result<Irq, Error> {
        let deadline = Deadline::after(timeout);
        self.machine.qtest_conn()?;
        self.machine.run_until(
            deadline,
            || "a qtest IRQ notification".to_owned(),
            |m| {
                let conn = m.qtest.as_mut().expect("checked above");
                if let Some(irq) = conn.session.poll_irq() {
                    return Some(Ok(irq));
                }
                if conn.fd.is_none() {
                    return Some(Err(m.qtest_error(QtestError::Closed { command: None })));
                }
                None
            },
        )
    }

    /// The level of interrupt line `num` by the notifications received so far.
    pub fn irq_level(&self, num: u32) -> bool {
        self.machine
            .qtest
            .as_ref()
            .is_some_and(|c| c.session.irq_level(num))
    }

    /// How many IRQ notifications were dropped because the queue (4096) was full.
    pub fn irqs_dropped(&self) -> u64 {
        self.machine
            .qtest
            .as_ref()
            .map_or(0, |c| c.session.irqs_dropped())
    }
}
