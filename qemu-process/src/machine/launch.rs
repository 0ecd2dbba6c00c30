//! Launching QEMU (and attaching to a running one): spawn through the guardian, wait for QMP.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use qmp_proto::{Session, SessionOptions};

use super::{Console, Deadline, Machine, QmpConn, CHILD, CONSOLE, QMP, READ_CHUNK};
use crate::config::{args_choose_accel, resolve_accel, AccelChoice, AttachTarget, MachineConfig};
use crate::console::ConsoleBuffer;
use crate::error::Error;
use crate::spawn::{
    create_private_file, find_executable, inherited_fd, ChildProc, SpawnRequest, TempDir,
};
use crate::sys;
use crate::vm::resolve::Created;
use qemu_cmdline::{ConsoleDevice, Harness};

use super::qemumachine::Extras;
use super::qtest::{QtestConn, QtestPlan};
use super::vm::VmParts;

impl Machine {
    // ------------------------------------------------------------------------------------------
    // Launch and attach
    // ------------------------------------------------------------------------------------------

    /// Launches QEMU and waits, under the config's launch deadline, until QMP is negotiated (and,
    /// for a VM, its port forwards are read back).
    ///
    /// A VM description ([`MachineConfig::vm`]) is resolved first, in the machine's temp dir:
    /// disks created, probed, flashed and grown, the cloud-init seed written, UEFI variables
    /// copied, the VNC socket placed. On any error QEMU is stopped and everything made is
    /// removed (the temp dir, and disks created at paths the description gave).
    ///
    /// If QEMU exits first, this returns [`Error::Launch`] at once, with the exit status, the
    /// argv and QEMU's output. A missing binary is [`Error::BinaryNotFound`]; a deadline that
    /// passes is [`Error::Timeout`] (QEMU is killed). The deadline starts when QEMU is spawned:
    /// the work on disks before (a long flash) does not count against it.
    pub fn launch(config: &MachineConfig) -> Result<Machine, Error> {
        Machine::launch_inner(config, None)
    }

    /// [`launch`](Machine::launch), reporting the work a VM launch does on its disks before
    /// QEMU starts (creating, flashing with its progress, growing) to `progress`, in the
    /// calling thread, so that a program can show it.
    pub fn launch_with_progress(
        config: &MachineConfig,
        progress: crate::vm::ProgressFn<'_>,
    ) -> Result<Machine, Error> {
        Machine::launch_inner(config, Some(progress))
    }

    fn launch_inner(
        config: &MachineConfig,
        progress: Option<crate::vm::ProgressFn<'_>>,
    ) -> Result<Machine, Error> {
        let mut machine = Machine::spawn_with(config, progress)?;
        let deadline = Deadline::after(config.launch_timeout);
        machine.finish_launch(deadline)?;
        Ok(machine)
    }

    /// Makes the temp dir, resolves a VM into it, spawns QEMU with its sockets and registers
    /// everything in the poll; does not wait.
    pub(crate) fn spawn(config: &MachineConfig) -> Result<Machine, Error> {
        Machine::spawn_with(config, None)
    }

    /// [`spawn`](Machine::spawn), reporting the work on disks to `progress`.
    fn spawn_with(
        config: &MachineConfig,
        progress: Option<crate::vm::ProgressFn<'_>>,
    ) -> Result<Machine, Error> {
        config.check()?;
        let base = config.temp_base.clone().unwrap_or_else(std::env::temp_dir);
        let temp_dir = TempDir::new(&base).map_err(Error::io_with(format!(
            "creating a temporary directory under {}",
            base.display()
        )))?;
        let mut created = Created::default();
        let vm = match &config.vm {
            Some(launch) => Some(VmParts::resolve(
                config,
                launch,
                temp_dir.path(),
                &mut created,
                false,
                progress,
            )?),
            None => None,
        };
        let name = config.name.clone().unwrap_or_else(|| {
            temp_dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "qemu".into())
        });
        let mut machine = Machine::start(config, temp_dir.path(), vm.as_ref(), &name)?;
        machine.temp_dir = Some(temp_dir);
        machine.vm = vm;
        machine.created = created;
        machine.config = Some(config.clone());
        Ok(machine)
    }

    /// Launches QEMU again with the same configuration (and, for a VM, the same resolved
    /// description) after it exited (a guest power-off, a shutdown): the temp dir and what is in
    /// it carry over (disks, seed, UEFI variables, flashes made meanwhile); the log starts over.
    /// Refused while QEMU runs ([`Error::VmRunning`]) and for an attached machine.
    pub fn relaunch(&mut self) -> Result<(), Error> {
        let Some(config) = self.config.clone() else {
            return Err(Error::Unsupported(
                "relaunching an attached machine (it is not our process)".into(),
            ));
        };
        self.ensure_stopped("relaunching")?;
        let deadline = Deadline::after(config.launch_timeout);
        let temp = self.temp_dir().map(Path::to_path_buf).unwrap_or_default();
        let name = self.extras.name.clone();
        let mut fresh = Machine::start(&config, &temp, self.vm.as_ref(), &name)?;
        fresh.finish_launch(deadline)?;
        fresh.temp_dir = self.temp_dir.take();
        fresh.vm = self.vm.take();
        fresh.config = self.config.take();
        // The exited machine goes with what it had left; the new one reads its forwards.
        std::mem::swap(self, &mut fresh);
        drop(fresh);
        self.read_vm_forwards()
    }

    /// Starts one QEMU process for `config` with its log and sockets in `temp` (the logs in
    /// the config's `log_dir` under `name`, if it has one): the argv from [`render`], the
    /// harness descriptors inherited as 3, 4, ...
    pub(super) fn start(
        config: &MachineConfig,
        temp: &Path,
        vm: Option<&VmParts>,
        name: &str,
    ) -> Result<Machine, Error> {
        let (log_path, console_log) = config.log_paths(temp, name)?;
        let rendered = render(config, vm.map(|v| &v.resolved), true, &console_log)?;
        let argv = rendered.argv;
        let log = create_private_file(&log_path)
            .map_err(Error::io_with(format!("creating {}", log_path.display())))?;
        // Descriptors QEMU inherits, as 3, 4, ... in the order `render` numbers them.
        let mut inherit: Vec<BorrowedFd<'_>> = Vec::new();
        let mut qmp_ours = None;
        let mut qmp_theirs = None;
        if config.qmp {
            let (ours, theirs) =
                sys::socketpair().map_err(Error::io_with("creating the QMP socketpair"))?;
            qmp_ours = Some(ours);
            qmp_theirs = Some(theirs);
        }
        if let Some(theirs) = &qmp_theirs {
            inherit.push(theirs.as_fd());
        }
        let mut console = None;
        let mut console_theirs = None;
        if config.get_console() && !config.console_pty {
            let (ours, theirs) =
                sys::socketpair().map_err(Error::io_with("creating the console socketpair"))?;
            let log = match &console_log {
                Some(path) => Some(
                    File::options()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(path)
                        .map_err(Error::io_with(format!("creating {}", path.display())))?,
                ),
                None => None,
            };
            console = Some(Console {
                fd: Some(ours),
                buffer: ConsoleBuffer::new(config.console_buffer),
                log: log.map(|file| std::io::BufWriter::with_capacity(READ_CHUNK, file)),
                log_path: console_log.clone(),
                out: Vec::new(),
                out_limit: config.console_input_buffer.max(1),
                interest_write: false,
                write_failed: false,
                received: 0,
            });
            console_theirs = Some(theirs);
        }
        if let Some(theirs) = &console_theirs {
            inherit.push(theirs.as_fd());
        }
        let mut qtest = None;
        let mut qtest_theirs = None;
        if let Some(plan) = &rendered.qtest {
            let (ours, theirs) =
                sys::socketpair().map_err(Error::io_with("creating the qtest socketpair"))?;
            qtest = Some(QtestConn::new(ours, plan));
            qtest_theirs = Some(theirs);
        }
        if let Some(theirs) = &qtest_theirs {
            inherit.push(theirs.as_fd());
        }
        inherit.extend(config.add_fds.iter().map(|a| a.fd.as_fd()));
        // The guest agent's channel comes last (see `render_argv`).
        let mut guest = None;
        if vm.is_some_and(|v| v.resolved.guest_agent) {
            let (ours, theirs) = sys::socketpair()
                .map_err(Error::io_with("creating the guest agent's socketpair"))?;
            guest = Some((ours, theirs));
        }
        if let Some((_, theirs)) = &guest {
            inherit.push(theirs.as_fd());
        }

        log::info!("launching QEMU: {}", qemu_cmdline::shell_quote(&argv));
        let child = ChildProc::spawn(&SpawnRequest {
            argv: &argv,
            env: &config.env,
            log: &log,
            inherit: &inherit,
        })
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BinaryNotFound(PathBuf::from(&argv[0]))
            } else {
                Error::io(format!("spawning {}", PathBuf::from(&argv[0]).display()), e)
            }
        })?;
        // QEMU has its copies now; ours would only keep the sockets open after QEMU dies.
        drop(inherit);
        drop((qmp_theirs, console_theirs, qtest_theirs, log));
        let guest = guest.map(|(ours, theirs)| {
            drop(theirs);
            ours
        });
        log::debug!("QEMU started, pid {}", child.pid());

        let options = SessionOptions {
            oob: config.oob,
            max_message_size: config.max_message_size,
            in_band_ids: config.qmp_ids,
            max_events: config.max_events,
            ..SessionOptions::default()
        };
        let mut machine = Machine::from_parts(
            qmp_ours,
            true,
            Session::new(options),
            console,
            Some(child),
            config.qmp_timeout,
            argv,
        )?;
        machine.log_path = Some(log_path);
        machine.qmp_enabled = config.qmp;
        if let Some(mut conn) = qtest {
            conn.register(machine.poll.registry())?;
            if !config.qmp {
                // QEMU answers once its initialisation is over: the launch's end.
                conn.probe = conn.session.endianness().ok();
            }
            machine.qtest = Some(conn);
        }
        machine.extras = Extras::for_launch(config, name);
        if let Some(ours) = guest {
            machine.attach_guest_channel(
                ours,
                SessionOptions {
                    max_message_size: config.max_message_size,
                    ..SessionOptions::default()
                },
            )?;
        }
        Ok(machine)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_parts(
        qmp_fd: Option<OwnedFd>,
        unix: bool,
        session: Session,
        console: Option<Console>,
        child: Option<ChildProc>,
        qmp_timeout: Duration,
        argv: Vec<OsString>,
    ) -> Result<Machine, Error> {
        let poll = Poll::new().map_err(Error::io_with("creating an epoll instance"))?;
        let registry = poll.registry();
        if let Some(fd) = &qmp_fd {
            registry
                .register(&mut SourceFd(&fd.as_raw_fd()), QMP, Interest::READABLE)
                .map_err(Error::io_with("registering the QMP socket"))?;
        }
        if let Some(fd) = console.as_ref().and_then(|c| c.fd.as_ref()) {
            registry
                .register(&mut SourceFd(&fd.as_raw_fd()), CONSOLE, Interest::READABLE)
                .map_err(Error::io_with("registering the console socket"))?;
        }
        let mut child_registered = false;
        if let Some(child) = &child {
            registry
                .register(
                    &mut SourceFd(&child.exit_fd_raw()),
                    CHILD,
                    Interest::READABLE,
                )
                .map_err(Error::io_with("registering the exit watch"))?;
            child_registered = true;
        }
        Ok(Machine {
            poll,
            mio_events: Events::with_capacity(8),
            qmp: QmpConn {
                fd: qmp_fd,
                session,
                interest_write: false,
                force_writable: false,
                write_failed: false,
                fatal: None,
                unix,
            },
            console,
            child,
            child_registered,
            exit_handled: false,
            qmp_timeout,
            argv,
            log_path: None,
            read_buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            config: None,
            vm: None,
            guest: None,
            created: Created::default(),
            qtest: None,
            qmp_enabled: true,
            extras: Extras::default(),
            temp_dir: None,
        })
    }

    /// Waits for QMP negotiation, or QEMU's exit (a launch error), until `deadline`. Without
    /// QMP: for the qtest channel's first answer, or for the settle time to pass.
    pub(crate) fn finish_launch(&mut self, deadline: Deadline) -> Result<(), Error> {
        let what = if self.qmp_enabled {
            "the QMP greeting and capability negotiation"
        } else {
            "QEMU's first qtest answer"
        };
        let result = if self.qmp_enabled || self.qtest.is_some() {
            self.run_until(deadline, || what.to_owned(), |m| m.launch_check())
        } else {
            self.settle()
        };
        if let Err(e) = &result {
            if !matches!(e, Error::Launch { .. }) {
                log::warn!("launch failed: {e}");
            }
        }
        result
    }

    /// One look at the launch: `Some(Ok)` when negotiated, `Some(Err)` when it failed.
    pub(crate) fn launch_check(&mut self) -> Option<Result<(), Error>> {
        if self.qmp_enabled && self.qmp.session.is_ready() {
            if let Some(g) = self.qmp.session.greeting() {
                log::info!(
                    "QMP ready (pid {:?}): QEMU {}.{}.{} {}, oob {}",
                    self.pid(),
                    g.version.major,
                    g.version.minor,
                    g.version.micro,
                    g.version.package,
                    self.qmp.session.oob_enabled()
                );
            }
            // A VM's forwards are read back now (so are they on relaunch), and the QMP
            // servers' and ptys' addresses when they are needed.
            return Some(self.read_vm_forwards().and_then(|()| self.read_chardevs()));
        }
        if !self.qmp_enabled {
            if let Some(conn) = self.qtest.as_mut() {
                if let Some(probe) = conn.probe {
                    if let Some(Ok(_)) = conn.session.take(probe) {
                        conn.probe = None;
                        log::info!("qtest ready (pid {:?})", self.pid());
                        self.created.keep();
                        return Some(Ok(()));
                    }
                }
            }
        }
        let exited = self.exit_status_now();
        if exited.is_none() && !self.qmp_enabled && self.qtest.is_none() && self.settled() {
            return Some(Ok(()));
        }
        if let Some(status) = exited {
            let log = self.log().unwrap_or_default();
            log::warn!("QEMU exited during launch ({status}): {}", log.trim_end());
            return Some(Err(Error::Launch {
                status,
                argv: self.argv.clone(),
                log,
            }));
        }
        if let Some(e) = &self.qmp.fatal {
            return Some(Err(Error::Protocol(e.clone())));
        }
        if self.qmp_enabled && self.qmp.fd.is_none() && self.child.is_none() {
            return Some(Err(Error::Disconnected));
        }
        if !self.qmp_enabled && self.qtest.as_ref().is_some_and(|c| c.fd.is_none()) {
            // The qtest stream broke without QEMU exiting (an answer that is not the protocol).
            let e = self.qtest_closed_error();
            return Some(Err(e));
        }
        // A closed QMP socket with a live child means QEMU is on its way out: the exit watch will say.
        None
    }

    /// Connects to a running QEMU's QMP server, retrying refused connections (and a socket file
    /// that does not exist yet) until `timeout`, then negotiates capabilities.
    ///
    /// An attached machine has no process of ours: [`shutdown`](Machine::shutdown),
    /// [`kill`](Machine::kill) and [`wait`](Machine::wait) are [`Error::Unsupported`]; execute
    /// `quit` to stop QEMU. Dropping it only closes the connection.
    pub fn attach(target: AttachTarget, timeout: Duration) -> Result<Machine, Error> {
        let deadline = Deadline::after(timeout);
        let (fd, unix) = connect_with_retry(&target, deadline)?;
        log::info!("attached to QMP server {target:?}");
        let mut machine = Machine::from_parts(
            Some(fd),
            unix,
            attach_session(),
            None,
            None,
            crate::config::DEFAULT_QMP_TIMEOUT,
            Vec::new(),
        )?;
        machine.finish_launch(deadline)?;
        Ok(machine)
    }

    /// Uses an already connected stream socket to a QMP server (a socketpair end, a socket
    /// received from elsewhere) as an attached machine, and negotiates capabilities until
    /// `timeout`. Like [`attach`](Machine::attach), the machine has no process of ours.
    pub fn attach_socket(socket: OwnedFd, timeout: Duration) -> Result<Machine, Error> {
        let deadline = Deadline::after(timeout);
        let domain = sys::socket_domain(socket.as_fd())
            .map_err(Error::io_with("the QMP descriptor is not a socket"))?;
        sys::set_nonblocking(socket.as_raw_fd(), true)
            .map_err(Error::io_with("making the QMP socket non-blocking"))?;
        let mut machine = Machine::from_parts(
            Some(socket),
            domain == libc::AF_UNIX,
            attach_session(),
            None,
            None,
            crate::config::DEFAULT_QMP_TIMEOUT,
            Vec::new(),
        )?;
        machine.finish_launch(deadline)?;
        Ok(machine)
    }
}

// ----------------------------------------------------------------------------------------------
// Attach: connecting with retries
// ----------------------------------------------------------------------------------------------

/// The session of an attached machine: like a launched one's defaults, asking for `oob`
/// and sending ids only with `exec-oob` commands (see [`MachineConfig::qmp_ids`](crate::MachineConfig::qmp_ids)).
pub(super) fn attach_session() -> Session {
    Session::new(SessionOptions {
        oob: true,
        in_band_ids: false,
        ..SessionOptions::default()
    })
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ENOENT | libc::EAGAIN | libc::ECONNRESET)
    )
}

/// Waits `d` without busy-looping: poll(2) with no descriptors.
fn pause_for(d: Duration) {
    let ms = libc::c_int::try_from(d.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll with a null array and nfds 0 only waits for the timeout.
    unsafe {
        libc::poll(std::ptr::null_mut(), 0, ms);
    }
}

pub(crate) fn connect_with_retry(
    target: &AttachTarget,
    deadline: Deadline,
) -> Result<(OwnedFd, bool), Error> {
    let mut backoff = Duration::from_millis(5);
    let mut last_error: Option<io::Error>;
    loop {
        let attempt = match target {
            AttachTarget::Unix(path) => connect_unix(path).map(|fd| (fd, true)),
            AttachTarget::Tcp(addr) => connect_tcp(*addr, deadline).map(|fd| (fd, false)),
        };
        match attempt {
            Ok(conn) => return Ok(conn),
            Err(e) if retryable(&e) => {
                log::debug!("connecting to {target:?}: {e}; retrying");
                last_error = Some(e);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last_error = Some(e);
            }
            Err(e) => {
                return Err(Error::io(format!("connecting to {target:?}"), e));
            }
        }
        match deadline.remaining() {
            Some(left) if left.is_zero() => {
                return Err(Error::Timeout {
                    what: format!(
                        "the QMP server at {target:?} to accept a connection (last error: {})",
                        last_error.map(|e| e.to_string()).unwrap_or_default()
                    ),
                    after: deadline.total(),
                });
            }
            Some(left) => pause_for(backoff.min(left)),
            None => pause_for(backoff),
        }
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

fn connect_unix(path: &Path) -> io::Result<OwnedFd> {
    // sun_path holds 107 bytes and a NUL; longer paths go through the directory's descriptor.
    if path.as_os_str().len() < 100 {
        return mio::net::UnixStream::connect(path).map(OwnedFd::from);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a socket path",
        ));
    };
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
    let mut short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    short.push(name);
    mio::net::UnixStream::connect(&short).map(OwnedFd::from)
}

fn connect_tcp(addr: std::net::SocketAddr, deadline: Deadline) -> io::Result<OwnedFd> {
    let mut stream = mio::net::TcpStream::connect(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut stream, Token(0), Interest::WRITABLE)?;
    let mut events = Events::with_capacity(1);
    loop {
        match poll.poll(&mut events, deadline.remaining()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                poll.registry().deregister(&mut stream)?;
                return Ok(OwnedFd::from(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                if deadline.remaining() == Some(Duration::ZERO) {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// What [`render`] gives: the argv, and for a qtest machine how it runs.
pub(crate) struct Rendered {
    pub(crate) argv: Vec<OsString>,
    pub(crate) qtest: Option<QtestPlan>,
}

/// The full argv QEMU is started with (wrapper first); see [`render`].
pub(crate) fn render_argv(
    config: &MachineConfig,
    resolved: Option<&qemu_cmdline::VmSpec>,
    find: bool,
    console_log: &Option<PathBuf>,
) -> Result<Vec<OsString>, Error> {
    render(config, resolved, find, console_log).map(|r| r.argv)
}

/// The full argv QEMU is started with (wrapper first): the launcher's harness (QMP, the
/// console and the qtest channel on descriptors 3, 4, ... in that order, each when enabled,
/// then the config's `add_fd`s, then the guest agent's channel when the VM has one, see
/// [`inherited_fd`]; QMP servers, `-monitor null`) rendered by
/// qemu-cmdline with the raw arguments or the resolved VM. With `find` the wrapper and binary
/// are looked up in `PATH` (a missing one is [`Error::BinaryNotFound`]); without, they are
/// shown as configured. `console_log` is the file a pty console logs to.
pub(crate) fn render(
    config: &MachineConfig,
    resolved: Option<&qemu_cmdline::VmSpec>,
    find: bool,
    console_log: &Option<PathBuf>,
) -> Result<Rendered, Error> {
    let locate = |program: &Path| -> Result<PathBuf, Error> {
        if !find {
            return Ok(program.to_path_buf());
        }
        find_executable(program).ok_or_else(|| Error::BinaryNotFound(program.to_path_buf()))
    };
    let binary = locate(config.get_binary())?;
    let mut next = 0;
    let mut take = || {
        next += 1;
        inherited_fd(next - 1)
    };
    let console = config.get_console();
    let mut harness = Harness {
        qmp_fd: config.qmp.then(&mut take),
        console_fd: (console && !config.console_pty).then(&mut take),
        console_pty: console && config.console_pty,
        console_logfile: console_log.clone().filter(|_| config.console_pty),
        console_index: config.console_index,
        qtest_fd: config.qtest.then(&mut take),
        qmp_listen: config.qmp_listen.clone(),
        monitor_null: config.monitor_null,
        ..Harness::default()
    };
    harness.add_fds = config
        .add_fds
        .iter()
        .map(|a| qemu_cmdline::AddFd {
            fd: take(),
            set: a.fdset,
            opaque: a.opaque.clone(),
        })
        .collect();
    // The guest agent's channel comes after the add_fds (see `Machine::start`).
    harness.guest_agent_fd = resolved
        .is_some_and(|spec| spec.guest_agent)
        .then(&mut take);
    let transport = resolved.map_or(qemu_cmdline::VirtioTransport::Pci, |spec| {
        spec.virtio_transport
            .unwrap_or(spec.arch.profile().virtio_transport)
    });
    harness.console_device = match config.console_device.as_deref() {
        None => ConsoleDevice::Serial,
        Some("virtconsole") => ConsoleDevice::VirtConsole(transport),
        Some(other) => ConsoleDevice::Device(other.to_owned()),
    };
    let mut qtest = None;
    let cmd = match resolved {
        Some(spec) => {
            let mut spec = spec.clone();
            spec.binary = Some(binary);
            if config.qtest {
                // The resolution chose the accelerator and -S (see `Resolver::accel`).
                let qtest_accel = qemu_cmdline::Accel::Other("qtest".into());
                qtest = Some(QtestPlan {
                    clock: match spec.accel.as_slice() {
                        [] => None,
                        [only] => Some(*only == qtest_accel),
                        _ => Some(false),
                    },
                    accel: spec.accel.first().cloned(),
                    paused: spec.paused,
                });
            }
            spec.to_command_line_with(&harness)?
        }
        None => {
            harness.display_none = config.display_none.unwrap_or(true);
            let choice = config.get_accel();
            let args_choose = choice == AccelChoice::Auto && args_choose_accel(&config.args);
            if config.qtest {
                let choice = match choice {
                    _ if args_choose => None,
                    AccelChoice::Auto => Some(AccelChoice::Auto),
                    other => Some(resolve_accel(other, &binary)),
                };
                let plan = QtestPlan::new(choice, &binary);
                harness.accel = plan.accel.clone();
                harness.paused = plan.paused;
                qtest = Some(plan);
            } else if !args_choose {
                harness.accel = resolve_accel(choice, &binary).qemu_accel();
            }
            let mut cmd = qemu_cmdline::CommandLine::new(&binary);
            cmd.harness(&harness).args(&config.args);
            cmd
        }
    };
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(first) = config.wrapper.first() {
        argv.push(locate(Path::new(first))?.into_os_string());
        argv.extend(config.wrapper[1..].iter().cloned());
    }
    argv.extend(cmd.build()?.to_vec());
    Ok(Rendered { argv, qtest })
}
