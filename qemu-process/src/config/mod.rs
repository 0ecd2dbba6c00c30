//! [`MachineConfig`]: what to launch and how, in the builder style of `std::process::Command`.

mod accel;
mod forms;

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use accel::{args_choose_accel, resolve_accel, AccelChoice, ACCEL_ENV};

use crate::error::Error;
use crate::image::QemuImg;
use crate::vm::VmLaunch;
use qemu_cmdline::MonitorAddress;

/// A descriptor QEMU inherits at launch and finds in an fdset (rendered as `-add-fd
/// fd=N,set=S,opaque=O`, see [`qemu_cmdline::AddFd`]).
#[derive(Clone, Debug)]
pub struct PassFd {
    /// The descriptor (shared so that the config stays cloneable; it is duplicated at launch).
    pub fd: Arc<OwnedFd>,
    /// The fdset id.
    pub fdset: u32,
    /// Free-form text QEMU shows in `query-fdsets`.
    pub opaque: Option<String>,
}

/// Where [`Machine::attach`](crate::Machine::attach) finds a running QEMU's QMP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachTarget {
    /// A unix socket path (any length: long paths are reached through `/proc/self/fd`).
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// Everything [`Machine::launch`](crate::Machine::launch) needs to start a QEMU: either a raw
/// command line (a binary and arguments) or a VM description ([`VmLaunch`]), and how to launch
/// it (timeouts, console, buffers, wrapper, environment, descriptors).
///
/// This is the one launch description of the crate: the builder methods below, the JSON form
/// (the C library's `qm_config_from_json()` takes it, [`MachineConfig::from_json`]) and the
/// `qemu-machine` command's flags all set the same fields. In JSON, every field is optional and
/// unknown ones are refused with their name:
///
/// | field | meaning | default |
/// |---|---|---|
/// | `binary` | the QEMU binary (a path, or a name looked up in `PATH`) | `qemu-system-x86_64`, or the VM's architecture's |
/// | `args` | raw QEMU arguments (not with `vm`) | none |
/// | `vm` | a VM description ([`VmLaunch`]'s JSON form) | none |
/// | `accel` | `auto`, `kvm`, `tcg` or `none` ([`AccelChoice`]) | `auto` (with `vm`: the VM's own `accel` list, else `auto`) |
/// | `temp_dir` | where the machine's private temp dir is made | `$TMPDIR` or `/tmp` |
/// | `launch_timeout_ms`, `qmp_timeout_ms` | the launch deadline, the default QMP command deadline | 30000 |
/// | `console` | a console on the guest's first serial port | false (with `vm`: true) |
/// | `console_log` | a file that also gets every console byte | none |
/// | `console_buffer_bytes`, `console_input_buffer_bytes` | bounds of console output kept, of console input queued | 1 MiB, 64 KiB |
/// | `max_events` | bound of events kept until taken | 65536 |
/// | `wrapper` | a command QEMU runs under (`["strace", "-f"]`) | none |
/// | `env` | environment changes (`{"VAR": "value"}`, `null` removes) | none |
/// | `oob`, `qmp_ids` | ask for out-of-band execution; send an id with every command | true, false |
/// | `display_none` | add `-display none` (not with `vm`, whose `display` decides) | true |
/// | `max_message_size` | bound of one QMP message | 10 MiB |
/// | `qmp` | the library's own QMP connection (QEMUMachine's `set_qmp_monitor`) | true |
/// | `qmp_listen` | more QMP servers for other clients: `"unix:PATH"`, `"tcp:[HOST:]PORT"` (host `127.0.0.1` unless named, port 0 picked by the kernel) | none |
/// | `monitor_null` | add `-monitor null` (QEMUMachine's `add_monitor_null`) | false |
/// | `console_device` | the device carrying the console: a device type taking a chardev (`"isa-serial"`, ...), or `"virtconsole"` | the machine's serial port |
/// | `console_index` | serial ports connected to nothing before the console | 0 |
/// | `console_pty` | the console on a pseudo-terminal QEMU makes ([`Machine::console_pty`](crate::Machine::console_pty)) | false |
/// | `qtest` | a qtest channel ([`Machine::qtest`](crate::Machine::qtest)) | false |
/// | `name` | the machine's name: its log files' names in `log_dir` | the temp dir's name |
/// | `log_dir` | keep QEMU's log (`NAME.log`) and the console log (`NAME-console.log`) there, after the machine is gone | none: the log is in the temp dir |
/// | `launch_settle_ms` | without `qmp` (and without `qtest`): how long QEMU must run for the launch to count as done | 500 |
///
/// ```
/// use qemu_process::{AccelChoice, MachineConfig};
/// use std::time::Duration;
///
/// let mut config = MachineConfig::new("qemu-system-x86_64");
/// config
///     .args(["-machine", "none", "-nodefaults"])
///     .accel(AccelChoice::Tcg)
///     .launch_timeout(Duration::from_secs(10))
///     .console(true);
/// assert_eq!(config.get_args().len(), 3);
/// let same = MachineConfig::from_json(
///     r#"{"binary": "qemu-system-x86_64", "args": ["-machine", "none", "-nodefaults"],
///         "accel": "tcg", "launch_timeout_ms": 10000, "console": true}"#,
/// )?;
/// assert_eq!(same.to_json()?, config.to_json()?);
/// # Ok::<(), qemu_process::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) binary: Option<PathBuf>,
    #[serde(with = "forms::os_strings", skip_serializing_if = "Vec::is_empty")]
    pub(crate) args: Vec<OsString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) vm: Option<VmLaunch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) accel: Option<AccelChoice>,
    #[serde(rename = "temp_dir", skip_serializing_if = "Option::is_none")]
    pub(crate) temp_base: Option<PathBuf>,
    #[serde(rename = "launch_timeout_ms", with = "forms::millis")]
    pub(crate) launch_timeout: Duration,
    #[serde(rename = "qmp_timeout_ms", with = "forms::millis")]
    pub(crate) qmp_timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) console: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) console_log: Option<PathBuf>,
    #[serde(rename = "console_buffer_bytes")]
    pub(crate) console_buffer: usize,
    #[serde(rename = "console_input_buffer_bytes")]
    pub(crate) console_input_buffer: usize,
    pub(crate) max_events: usize,
    #[serde(with = "forms::os_strings", skip_serializing_if = "Vec::is_empty")]
    pub(crate) wrapper: Vec<OsString>,
    #[serde(skip)]
    pub(crate) add_fds: Vec<PassFd>,
    #[serde(with = "forms::env", skip_serializing_if = "Vec::is_empty")]
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) oob: bool,
    pub(crate) qmp_ids: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) display_none: Option<bool>,
    pub(crate) max_message_size: usize,
    #[serde(skip)]
    pub(crate) qemu_img: QemuImg,
    pub(crate) qmp: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) qmp_listen: Vec<MonitorAddress>,
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) monitor_null: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) console_device: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) console_index: u32,
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) console_pty: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) qtest: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log_dir: Option<PathBuf>,
    #[serde(rename = "launch_settle_ms", with = "forms::millis")]
    pub(crate) launch_settle: Duration,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The binary a raw launch runs unless told otherwise.
pub const DEFAULT_BINARY: &str = "qemu-system-x86_64";
/// Default launch deadline (greeting and negotiation, or the child's exit).
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline of one QMP command.
pub const DEFAULT_QMP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound of console bytes kept in memory.
pub const DEFAULT_CONSOLE_BUFFER: usize = 1 << 20;
/// Default bound of console input accepted by
/// [`Machine::console_write`](crate::Machine::console_write) but not yet taken by QEMU.
///
/// 64 KiB: the console socket's kernel buffer holds a few hundred KiB more, so this is room
/// enough for any typed or pasted input, while a guest that does not read costs at most this
/// much memory per machine. A larger bound would not make writes faster: the queue is flushed
/// into the socket on every turn of the poll loop, at the pace QEMU reads it.
pub const DEFAULT_CONSOLE_INPUT_BUFFER: usize = 64 << 10;
/// Default bound of events kept until taken.
pub const DEFAULT_MAX_EVENTS: usize = qmp_proto::DEFAULT_MAX_EVENTS;
/// Default settle time of a launch without QMP (see [`MachineConfig::launch_settle`]).
pub const DEFAULT_LAUNCH_SETTLE: Duration = Duration::from_millis(500);

impl Default for MachineConfig {
    fn default() -> MachineConfig {
        MachineConfig {
            binary: None,
            args: Vec::new(),
            vm: None,
            accel: None,
            temp_base: None,
            launch_timeout: DEFAULT_LAUNCH_TIMEOUT,
            qmp_timeout: DEFAULT_QMP_TIMEOUT,
            console: None,
            console_log: None,
            console_buffer: DEFAULT_CONSOLE_BUFFER,
            console_input_buffer: DEFAULT_CONSOLE_INPUT_BUFFER,
            max_events: DEFAULT_MAX_EVENTS,
            wrapper: Vec::new(),
            add_fds: Vec::new(),
            env: Vec::new(),
            oob: true,
            qmp_ids: false,
            display_none: None,
            max_message_size: qmp_proto::DEFAULT_MAX_MESSAGE_SIZE,
            qemu_img: QemuImg::default(),
            qmp: true,
            qmp_listen: Vec::new(),
            monitor_null: false,
            console_device: None,
            console_index: 0,
            console_pty: false,
            qtest: false,
            name: None,
            log_dir: None,
            launch_settle: DEFAULT_LAUNCH_SETTLE,
        }
    }
}

impl MachineConfig {
    /// A config that runs `binary` (a path, or a name looked up in `PATH`) with no arguments.
    pub fn new(binary: impl Into<PathBuf>) -> MachineConfig {
        MachineConfig {
            binary: Some(binary.into()),
            ..MachineConfig::default()
        }
    }

    /// A config that launches a VM from its description (a [`VmLaunch`], or a plain
    /// [`VmSpec`](qemu_cmdline::VmSpec)), with a console on its first serial port.
    ///
    /// ```
    /// use qemu_process::{MachineConfig, VmLaunch};
    /// let config = MachineConfig::for_vm(VmLaunch::from_json(r#"{"memory": "256M"}"#)?);
    /// assert!(config.get_console());
    /// # Ok::<(), qemu_process::Error>(())
    /// ```
    pub fn for_vm(vm: impl Into<VmLaunch>) -> MachineConfig {
        MachineConfig {
            vm: Some(vm.into()),
            ..MachineConfig::default()
        }
    }

    /// A config that runs a command line built with `qemu_cmdline`: its program and arguments.
    /// The argv decides the accelerator and the display, so this sets [`AccelChoice::None`] and
    /// `display_none(false)`; the QMP monitor and console are still added by the library.
    ///
    /// ```
    /// use qemu_cmdline::{Accel, Arch};
    /// use qemu_process::MachineConfig;
    ///
    /// let mut cmd = Arch::X86_64.profile().command_line(&[Accel::Tcg]);
    /// cmd.nodefaults();
    /// let config = MachineConfig::from_argv(&cmd.build()?);
    /// assert_eq!(config.get_binary(), std::path::Path::new("qemu-system-x86_64"));
    /// assert_eq!(config.get_accel(), qemu_process::AccelChoice::None);
    /// # Ok::<(), qemu_cmdline::Error>(())
    /// ```
    pub fn from_argv(argv: &qemu_cmdline::Argv) -> MachineConfig {
        let mut config = MachineConfig::new(&argv.program);
        config
            .args(&argv.args)
            .accel(AccelChoice::None)
            .display_none(false);
        config
    }

    /// Reads the JSON form (see the table above). Errors name the field.
    pub fn from_json(text: &str) -> Result<MachineConfig, Error> {
        let config: MachineConfig = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("invalid configuration JSON: {e}")))?;
        config.check()?;
        Ok(config)
    }

    /// Writes the JSON form. Descriptors added with [`add_fd`](MachineConfig::add_fd) and a
    /// custom [`qemu_img`](MachineConfig::qemu_img) are not part of it.
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::InvalidArgument(format!("the configuration as JSON: {e}")))
    }

    /// Checks settings that exclude each other: raw arguments or `display_none` with a VM; a
    /// console choice with the console turned off; what needs the library's QMP connection
    /// without it (a QMP server on TCP port 0, whose port is read back over QMP; a VM's port
    /// forwards, likewise); a `name` that is not a plain file name.
    pub fn check(&self) -> Result<(), Error> {
        let invalid = |message: String| {
            Err(Error::InvalidArgument(format!(
                "invalid configuration: {message}"
            )))
        };
        if self.console == Some(false) && self.console_chosen() {
            return invalid(
                "`console_device`, `console_index` and `console_pty` choose a console, but                  `console` is false"
                    .into(),
            );
        }
        if !self.qmp {
            if let Some(a) = self
                .qmp_listen
                .iter()
                .find(|a| matches!(a, MonitorAddress::Tcp { port, .. } if *port == 0))
            {
                return invalid(format!(
                    "`qmp_listen` {a}: the port QEMU picks for port 0 is read back over QMP, and                      `qmp` is false; name a port"
                ));
            }
            if self
                .vm
                .as_ref()
                .is_some_and(|vm| !vm.spec.forwards().is_empty())
            {
                return invalid(
                    "a VM's port forwards are read back over QMP, and `qmp` is false".into(),
                );
            }
        }
        if let Some(name) = &self.name {
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains('/')
                || name.contains('\0')
            {
                return invalid(format!(
                    "`name` {name:?} must be a plain file name (not empty, no `/`)"
                ));
            }
        }
        if self.vm.is_some() {
            let raw_only = [
                ("args", !self.args.is_empty()),
                ("display_none", self.display_none.is_some()),
            ];
            if let Some((field, _)) = raw_only.iter().find(|(_, set)| *set) {
                return Err(Error::InvalidArgument(format!(
                    "invalid configuration JSON: field `{field}` cannot be combined with `vm` \
                     (put extra QEMU arguments in `vm.extra_args`, the display in `vm.display`)"
                )));
            }
        }
        Ok(())
    }

    /// Launches a VM from its description instead of a raw command line (see
    /// [`MachineConfig::for_vm`]).
    pub fn vm(&mut self, vm: impl Into<VmLaunch>) -> &mut Self {
        self.vm = Some(vm.into());
        self
    }

    /// The qemu-img (and decompressors) used for a VM's disks.
    pub fn qemu_img(&mut self, img: QemuImg) -> &mut Self {
        self.qemu_img = img;
        self
    }

    /// Sets the QEMU binary.
    pub fn binary(&mut self, binary: impl Into<PathBuf>) -> &mut Self {
        self.binary = Some(binary.into());
        self
    }

    /// Appends one argument for QEMU.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments for QEMU.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Chooses the accelerator. Without a choice a raw launch uses [`AccelChoice::Auto`], and a
    /// VM launch the VM's own `accel` list, or `Auto` when that is empty. For a VM,
    /// [`AccelChoice::Kvm`] or [`AccelChoice::Tcg`] replace its list and
    /// [`AccelChoice::None`] keeps it.
    pub fn accel(&mut self, accel: AccelChoice) -> &mut Self {
        self.accel = Some(accel);
        self
    }

    /// The directory under which the machine's private temp dir is made (default: the system
    /// temp dir, `$TMPDIR` or `/tmp`).
    pub fn temp_base_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.temp_base = Some(dir.into());
        self
    }

    /// The launch deadline (default 30 s).
    pub fn launch_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.launch_timeout = timeout;
        self
    }

    /// The default deadline of each QMP command (default 30 s).
    pub fn qmp_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.qmp_timeout = timeout;
        self
    }

    /// Connects the guest's first serial port to the machine's console (default off for a raw
    /// launch, on for a VM).
    pub fn console(&mut self, on: bool) -> &mut Self {
        self.console = Some(on);
        self
    }

    /// Also writes every console byte to this file (created owner-only, mode 0600, or an
    /// existing one truncated, keeping its mode). Implies `console(true)`.
    pub fn console_log(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.console_log = Some(path.into());
        self.console = Some(true);
        self
    }

    /// How many console bytes to keep in memory until read (default 1 MiB; older bytes are
    /// dropped first and counted).
    pub fn console_buffer_bytes(&mut self, bytes: usize) -> &mut Self {
        self.console_buffer = bytes;
        self
    }

    /// How many bytes of console input [`Machine::console_write`](crate::Machine::console_write)
    /// may hold in memory while QEMU does not take them (default 64 KiB, see
    /// [`DEFAULT_CONSOLE_INPUT_BUFFER`]; at least 1). Beyond that bound (plus what the console
    /// socket holds), a write waits for the guest to read, up to its timeout.
    pub fn console_input_buffer_bytes(&mut self, bytes: usize) -> &mut Self {
        self.console_input_buffer = bytes;
        self
    }

    /// How many events to keep until taken (default 65536). Events beyond the bound are dropped,
    /// counted and reported (see [`Error::EventQueueFull`](crate::Error::EventQueueFull)).
    pub fn max_events(&mut self, limit: usize) -> &mut Self {
        self.max_events = limit;
        self
    }

    /// Runs QEMU under a wrapper (`["gdb", "--args"]`, `["strace", "-f", "-o", "trace"]`,
    /// `["valgrind"]`): the wrapper argv comes first, then the QEMU binary and its arguments.
    pub fn wrapper<I, S>(&mut self, argv: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.wrapper = argv.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Passes `fd` to QEMU at launch, in fdset `fdset` (`-add-fd`). Only QEMU inherits it.
    pub fn add_fd(&mut self, fd: OwnedFd, fdset: u32, opaque: Option<&str>) -> &mut Self {
        self.add_fds.push(PassFd {
            fd: Arc::new(fd),
            fdset,
            opaque: opaque.map(str::to_owned),
        });
        self
    }

    /// Sets an environment variable for QEMU.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable for QEMU.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Asks for the `oob` capability when QEMU offers it (default on), enabling
    /// [`Machine::execute_oob`](crate::Machine::execute_oob).
    pub fn oob(&mut self, on: bool) -> &mut Self {
        self.oob = on;
        self
    }

    /// Sends an `id` with every QMP command (default off: ids only where the protocol needs
    /// them, on `exec-oob` commands).
    ///
    /// QEMU executes in-band commands in order and answers them in order, so their replies
    /// are matched by order without ids (see
    /// [`SessionOptions::in_band_ids`](qmp_proto::SessionOptions::in_band_ids)), while
    /// out-of-band replies may overtake others and always carry an id. Leaving the ids out
    /// makes every request shorter, and that matters: QEMU's monitor reads its input one
    /// byte per main-loop iteration, so each byte of a request costs a few microseconds of
    /// round-trip time. Turn it on to have QEMU echo an id in every reply (e.g. when
    /// comparing traces with other clients'); replies are matched the same either way.
    pub fn qmp_ids(&mut self, on: bool) -> &mut Self {
        self.qmp_ids = on;
        self
    }

    /// Adds `-display none` to a raw launch (default on; QEMU would otherwise try to open a
    /// window). A VM's `display` decides for it.
    pub fn display_none(&mut self, on: bool) -> &mut Self {
        self.display_none = Some(on);
        self
    }

    /// The bound of one QMP message (default 10 MiB). A larger reply fails only its command,
    /// with [`Error::ReplyTooLarge`](crate::Error::ReplyTooLarge) (it is skipped without being
    /// buffered, and the connection goes on); a larger event is dropped and counted by
    /// [`Machine::events_too_large`](crate::Machine::events_too_large).
    pub fn max_message_size(&mut self, bytes: usize) -> &mut Self {
        self.max_message_size = bytes;
        self
    }

    /// The QEMU binary: as set, else the VM's (its `binary`, or its architecture's), else
    /// [`DEFAULT_BINARY`].
    pub fn get_binary(&self) -> &Path {
        if let Some(b) = &self.binary {
            return b;
        }
        match &self.vm {
            Some(vm) => match &vm.spec.binary {
                Some(b) => b,
                None => Path::new(vm.spec.arch.profile().binary),
            },
            None => Path::new(DEFAULT_BINARY),
        }
    }

    /// The caller's raw QEMU arguments (without those the library adds).
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The VM this config launches, if it launches one.
    pub fn get_vm(&self) -> Option<&VmLaunch> {
        self.vm.as_ref()
    }

    /// The accelerator choice as configured (before [`AccelChoice::Auto`] is resolved); `Auto`
    /// when none was made.
    pub fn get_accel(&self) -> AccelChoice {
        self.accel.unwrap_or_default()
    }

    /// The launch deadline.
    pub fn get_launch_timeout(&self) -> Duration {
        self.launch_timeout
    }

    /// The default QMP command deadline.
    pub fn get_qmp_timeout(&self) -> Duration {
        self.qmp_timeout
    }

    /// Whether the machine has a console (on the guest's first serial port unless
    /// [`console_device`](MachineConfig::console_device) chooses another): as set with
    /// [`console`](MachineConfig::console), else when a console device, index or pty is
    /// chosen, else for a VM.
    pub fn get_console(&self) -> bool {
        self.console
            .unwrap_or(self.vm.is_some() || self.console_chosen())
    }

    /// Whether a console device, index or pty was chosen.
    fn console_chosen(&self) -> bool {
        self.console_device.is_some() || self.console_index > 0 || self.console_pty
    }

    /// Launches without the library's QMP connection when `false` (QEMUMachine's
    /// `set_qmp_monitor(False)`; default `true`).
    ///
    /// QEMU then gets no QMP monitor from the library (add [`qmp_listen`](Self::qmp_listen)
    /// servers, or your own `-qmp` arguments, for other clients). Without QMP the library
    /// cannot ask QEMU whether it is up, so [`Machine::launch`](crate::Machine::launch)
    /// returns once QEMU has run for [`launch_settle`](Self::launch_settle) without exiting
    /// (or, with [`qtest`](Self::qtest), as soon as QEMU answers a qtest command, which it
    /// does once its initialisation is over); a QEMU that exits before is
    /// [`Error::Launch`](crate::Error::Launch) with its output, one that exits later is seen by
    /// [`Machine::wait`](crate::Machine::wait) and [`Machine::is_running`](crate::Machine::is_running).
    /// [`Machine::shutdown`](crate::Machine::shutdown) sends `SIGTERM` (QEMU's graceful exit)
    /// and, after its timeout, `SIGKILL`. QMP calls are [`Error::Unsupported`].
    pub fn qmp(&mut self, on: bool) -> &mut Self {
        self.qmp = on;
        self
    }

    /// Adds a QMP server at `address` for another client (a QMP shell, a second program),
    /// beside the library's own connection, which stays on its socketpair: QEMU listens there
    /// without waiting for a client, and takes one client at a time (QEMU's rule). A unix
    /// socket left behind by a QEMU that was killed is removed when the machine is dropped.
    /// The address as QEMU listens on it (the port it picked for port 0) is
    /// [`Machine::qmp_listen_addresses`](crate::Machine::qmp_listen_addresses).
    ///
    /// ```
    /// use qemu_process::MachineConfig;
    /// let mut config = MachineConfig::new("qemu-system-x86_64");
    /// config.qmp_listen("tcp:0".parse()?).qmp_listen("unix:/tmp/vm1.qmp".parse()?);
    /// # Ok::<(), qemu_cmdline::Error>(())
    /// ```
    pub fn qmp_listen(&mut self, address: MonitorAddress) -> &mut Self {
        self.qmp_listen.push(address);
        self
    }

    /// Adds `-monitor null` (QEMUMachine's `add_monitor_null`): a human monitor connected to
    /// nothing, in place of the one QEMU adds by default without `-nodefaults`.
    pub fn monitor_null(&mut self, on: bool) -> &mut Self {
        self.monitor_null = on;
        self
    }

    /// Chooses the device that carries the console and turns the console on (QEMUMachine's
    /// `set_console(device_type, console_index)`).
    ///
    /// `device_type` `None` is the machine's own serial port kind (`-serial`); `"virtconsole"`
    /// a virtio console (the guest's `hvc0`) on a virtio-serial controller of its own (PCI,
    /// or MMIO for a VM whose transport is MMIO); any other name a device type that takes a
    /// chardev (`"isa-serial"`, `"pci-serial"`, ...), added as `-device TYPE,chardev=...`.
    /// `console_index` serial ports connected to nothing (`-serial null`) come first, so that
    /// a serial console is the guest's `ttyS<console_index>`.
    pub fn console_device(&mut self, device_type: Option<&str>, console_index: u32) -> &mut Self {
        self.console_device = device_type.map(str::to_owned);
        self.console_index = console_index;
        self.console = Some(true);
        self
    }

    /// Puts the console on a pseudo-terminal QEMU makes instead of a socket the library
    /// drains: another program opens it
    /// ([`Machine::console_pty`](crate::Machine::console_pty) gives its path), and the
    /// console calls of [`Machine`](crate::Machine) are [`Error::Unsupported`]. A
    /// [`console_log`](Self::console_log) (or the one in [`log_dir`](Self::log_dir)) is
    /// written by QEMU. Turns the console on.
    pub fn console_pty(&mut self, on: bool) -> &mut Self {
        self.console_pty = on;
        if on {
            self.console = Some(true);
        }
        self
    }

    /// Adds a qtest channel (QEMUQtestMachine): QEMU's device-test protocol on a socketpair
    /// the library owns, driven through [`Machine::qtest`](crate::Machine::qtest).
    ///
    /// The qtest accelerator (`-accel qtest`, whose virtual clock `clock_step` and
    /// `clock_set` drive) is used when the QEMU binary has it (`-accel help` lists it; the
    /// answer is kept per binary) and the accelerator is left to the library
    /// ([`AccelChoice::Auto`]; [`ACCEL_ENV`] does not apply). Debian's QEMU 7.2 has no qtest
    /// accelerator: QEMU then runs on TCG with `-S`, so no guest code runs, devices answer
    /// port and memory accesses as they would under the qtest accelerator, and `clock_step`
    /// and `clock_set` fail with [`Error::NoQtestClock`](crate::Error::NoQtestClock). An
    /// accelerator chosen explicitly (or by the arguments) is kept, with `-S`.
    pub fn qtest(&mut self, on: bool) -> &mut Self {
        self.qtest = on;
        self
    }

    /// The machine's name (QEMUMachine's `name`): the base of its log files' names in
    /// [`log_dir`](Self::log_dir). A plain file name; it is not passed to QEMU (use a VM's
    /// `name`, or `-name`, for that). Default: the name of the machine's temp dir
    /// (`qemu-machine.XXXXXX`), unique.
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = Some(name.into());
        self
    }

    /// Keeps the logs in `dir` (QEMUMachine's `log_dir`), where they stay after the machine
    /// is gone: QEMU's output in `NAME.log` and, with a console and no
    /// [`console_log`](Self::console_log) of its own, the console's output in
    /// `NAME-console.log` (NAME is [`name`](Self::name)). Both are owner-only (0600),
    /// truncated at each launch (a relaunch starts them over); `dir` is made, owner-only, if
    /// it does not exist.
    pub fn log_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Without [`qmp`](Self::qmp) and [`qtest`](Self::qtest): how long QEMU must run without
    /// exiting for [`Machine::launch`](crate::Machine::launch) to return (default 500 ms,
    /// [`DEFAULT_LAUNCH_SETTLE`]; never longer than the launch timeout). QEMU reports a bad
    /// option or a missing file within milliseconds; a longer settle catches slower failures
    /// at the cost of a slower launch.
    pub fn launch_settle(&mut self, settle: Duration) -> &mut Self {
        self.launch_settle = settle;
        self
    }

    /// Whether the library has its own QMP connection (see [`qmp`](Self::qmp)).
    pub fn get_qmp(&self) -> bool {
        self.qmp
    }

    /// Whether the machine gets a qtest channel.
    pub fn get_qtest(&self) -> bool {
        self.qtest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_collects_settings() {
        let (a, _b) = crate::sys::socketpair().unwrap();
        let mut c = MachineConfig::new("qemu-system-x86_64");
        c.arg("-S")
            .args(["-machine", "none"])
            .accel(AccelChoice::Tcg)
            .console_log("/tmp/x.log")
            .add_fd(a, 3, Some("disk"))
            .env("A", "1")
            .env_remove("B")
            .wrapper(["strace", "-f"]);
        assert_eq!(c.get_args(), ["-S", "-machine", "none"]);
        assert!(c.get_console());
        assert_eq!(c.add_fds.len(), 1);
        assert_eq!(c.add_fds[0].fdset, 3);
        assert_eq!(c.env.len(), 2);
        assert_eq!(c.wrapper.len(), 2);
        let cloned = c.clone();
        assert_eq!(cloned.get_binary(), Path::new("qemu-system-x86_64"));
    }

    #[test]
    fn json_form_round_trips_and_names_bad_fields() {
        let text = r#"{"binary": "/usr/bin/qemu-system-x86_64", "args": ["-machine", "none"],
            "accel": "tcg", "temp_dir": "/tmp", "launch_timeout_ms": 1500, "qmp_timeout_ms": 2500,
            "console": true, "console_log": "/tmp/c.log", "console_buffer_bytes": 4096,
            "console_input_buffer_bytes": 512, "max_events": 9, "wrapper": ["strace"],
            "env": {"A": "1", "B": null}, "oob": false, "qmp_ids": true, "display_none": false,
            "max_message_size": 65536}"#;
        let c = MachineConfig::from_json(text).unwrap();
        assert_eq!(c.launch_timeout, Duration::from_millis(1500));
        assert_eq!(c.env[1], (OsString::from("B"), None));
        let again = MachineConfig::from_json(&c.to_json().unwrap()).unwrap();
        assert_eq!(again.to_json().unwrap(), c.to_json().unwrap());
        for (doc, needle) in [
            (r#"{"argz": []}"#, "unknown field `argz`"),
            (r#"{"accel": "warp"}"#, "expected auto, kvm, tcg or none"),
            (
                r#"{"args": ["x"], "vm": {}}"#,
                "field `args` cannot be combined with `vm`",
            ),
            (
                r#"{"display_none": true, "vm": {}}"#,
                "`display_none` cannot be combined",
            ),
            (r#"{"vm": {"memroy": "1G"}}"#, "unknown field `memroy`"),
        ] {
            let msg = MachineConfig::from_json(doc).unwrap_err().to_string();
            assert!(msg.contains(needle), "{doc}: {msg}");
        }
        let vm = MachineConfig::from_json(r#"{"vm": {"arch": "aarch64"}}"#).unwrap();
        assert_eq!(vm.get_binary(), Path::new("qemu-system-aarch64"));
        assert!(vm.get_console());
        assert!(!MachineConfig::default().get_console());
    }
}
