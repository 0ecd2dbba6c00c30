//! [`MachineConfig`]: what to launch and how, in the builder style of `std::process::Command`.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The environment variable that overrides [`Accel::Auto`] (values: `auto`, `kvm`, `tcg`, `none`).
///
/// An explicit choice in the config ([`Accel::Kvm`], [`Accel::Tcg`], [`Accel::None`]) is never
/// overridden, and neither is an accelerator the arguments choose ([`args_choose_accel`]); the
/// variable exists so that a test suite can force TCG (or KVM) on every machine that leaves the
/// choice to the library.
pub const ACCEL_ENV: &str = "QEMU_MACHINE_ACCEL";

/// Which accelerator to ask QEMU for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Accel {
    /// KVM when `/dev/kvm` is usable and the guest architecture matches the host's, else TCG.
    /// Overridden by the [`ACCEL_ENV`] environment variable when it is set. Adds nothing when
    /// the arguments choose an accelerator themselves (`-accel`, `-machine accel=`,
    /// `-enable-kvm`; see [`args_choose_accel`]): the caller's choice wins.
    #[default]
    Auto,
    /// `-accel kvm`.
    Kvm,
    /// `-accel tcg`.
    Tcg,
    /// Add no `-accel` argument: the caller's arguments decide.
    None,
}

impl Accel {
    /// Parses `auto`, `kvm`, `tcg` or `none` (case-insensitive).
    pub fn parse(s: &str) -> Option<Accel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Accel::Auto),
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            "none" => Some(Accel::None),
            _ => None,
        }
    }
}

/// A descriptor QEMU inherits at launch and finds in an fdset (`-add-fd fd=N,set=S,opaque=O`).
#[derive(Clone, Debug)]
pub struct AddFd {
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

/// Everything [`Machine::launch`](crate::Machine::launch) needs to start a QEMU.
///
/// ```
/// use qemu_process::{Accel, MachineConfig};
/// use std::time::Duration;
///
/// let mut config = MachineConfig::new("qemu-system-x86_64");
/// config
///     .args(["-machine", "none", "-nodefaults"])
///     .accel(Accel::Tcg)
///     .launch_timeout(Duration::from_secs(10))
///     .console(true);
/// assert_eq!(config.get_args().len(), 3);
/// ```
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) accel: Accel,
    pub(crate) temp_base: Option<PathBuf>,
    pub(crate) launch_timeout: Duration,
    pub(crate) qmp_timeout: Duration,
    pub(crate) console: bool,
    pub(crate) console_log: Option<PathBuf>,
    pub(crate) console_buffer: usize,
    pub(crate) console_input_buffer: usize,
    pub(crate) max_events: usize,
    pub(crate) wrapper: Vec<OsString>,
    pub(crate) add_fds: Vec<AddFd>,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) oob: bool,
    pub(crate) display_none: bool,
    pub(crate) max_message_size: usize,
    pub(crate) qmp_ids: bool,
}

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
pub const DEFAULT_MAX_EVENTS: usize = 65_536;

impl MachineConfig {
    /// A config that runs `binary` (a path, or a name looked up in `PATH`) with no arguments.
    pub fn new(binary: impl Into<PathBuf>) -> MachineConfig {
        MachineConfig {
            binary: binary.into(),
            args: Vec::new(),
            accel: Accel::Auto,
            temp_base: None,
            launch_timeout: DEFAULT_LAUNCH_TIMEOUT,
            qmp_timeout: DEFAULT_QMP_TIMEOUT,
            console: false,
            console_log: None,
            console_buffer: DEFAULT_CONSOLE_BUFFER,
            console_input_buffer: DEFAULT_CONSOLE_INPUT_BUFFER,
            max_events: DEFAULT_MAX_EVENTS,
            wrapper: Vec::new(),
            add_fds: Vec::new(),
            env: Vec::new(),
            oob: true,
            display_none: true,
            max_message_size: qmp_proto::DEFAULT_MAX_MESSAGE_SIZE,
            qmp_ids: false,
        }
    }

    /// A config that runs a command line built with `qemu_cmdline`: its program and arguments.
    /// The argv decides the accelerator and the display, so this sets [`Accel::None`] and
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
    /// assert_eq!(config.get_accel(), qemu_process::Accel::None);
    /// # Ok::<(), qemu_cmdline::Error>(())
    /// ```
    pub fn from_argv(argv: &qemu_cmdline::Argv) -> MachineConfig {
        let mut config = MachineConfig::new(&argv.program);
        config
            .args(&argv.args)
            .accel(Accel::None)
            .display_none(false);
        config
    }

    /// Sets the QEMU binary.
    pub fn binary(&mut self, binary: impl Into<PathBuf>) -> &mut Self {
        self.binary = binary.into();
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

    /// Chooses the accelerator (default [`Accel::Auto`]).
    pub fn accel(&mut self, accel: Accel) -> &mut Self {
        self.accel = accel;
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

    /// Connects the first serial port to a console socket (default off).
    pub fn console(&mut self, on: bool) -> &mut Self {
        self.console = on;
        self
    }

    /// Also writes every console byte to this file (created owner-only, mode 0600, or an
    /// existing one truncated, keeping its mode). Implies `console(true)`.
    pub fn console_log(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.console_log = Some(path.into());
        self.console = true;
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
        self.add_fds.push(AddFd {
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

    /// Adds `-display none` (default on; QEMU would otherwise try to open a window).
    pub fn display_none(&mut self, on: bool) -> &mut Self {
        self.display_none = on;
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

    /// The QEMU binary.
    pub fn get_binary(&self) -> &Path {
        &self.binary
    }

    /// The caller's QEMU arguments (without those the library adds).
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The accelerator choice as configured (before [`Accel::Auto`] is resolved).
    pub fn get_accel(&self) -> Accel {
        self.accel
    }

    /// The launch deadline.
    pub fn get_launch_timeout(&self) -> Duration {
        self.launch_timeout
    }

    /// The default QMP command deadline.
    pub fn get_qmp_timeout(&self) -> Duration {
        self.qmp_timeout
    }

    /// Whether a console is attached to the first serial port.
    pub fn get_console(&self) -> bool {
        self.console
    }
}

/// Resolves [`Accel::Auto`] into a concrete choice: the [`ACCEL_ENV`] override first, then KVM
/// when `/dev/kvm` is usable and `binary` emulates the host architecture, else TCG.
pub fn resolve_accel(accel: Accel, binary: &Path) -> Accel {
    if accel != Accel::Auto {
        return accel;
    }
    if let Some(v) = std::env::var_os(ACCEL_ENV) {
        match v.to_str().and_then(Accel::parse) {
            Some(Accel::Auto) | None => {
                if !v.is_empty() {
                    log::warn!("ignoring {ACCEL_ENV}={v:?} (expected auto, kvm, tcg or none)");
                }
            }
            Some(forced) => return forced,
        }
    }
    if guest_matches_host(binary) && crate::sys::kvm_usable() {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// Whether `args` (QEMU arguments, without the program) choose an accelerator themselves, in
/// which case [`Accel::Auto`] adds none: the caller's choice wins.
///
/// Recognised, as QEMU reads its argv (one or two leading dashes; an option's argument is the
/// next element, whatever it looks like):
/// - `-accel NAME[,PROP=VALUE...]` (any argument, `help` included);
/// - `-enable-kvm` (QEMU's shorthand for `-machine accel=kvm`);
/// - `-machine`/`-M` with an `accel` key: `-machine accel=tcg`, `-M pc,accel=kvm:tcg`,
///   `-machine type=q35,accel=tcg`, values with `,,` (an escaped comma) skipped correctly,
///   and a JSON object (`-machine {"type": "none", "accel": "tcg"}`, for QEMUs that take one).
///
/// Not seen: a choice inside a `-readconfig` file. QEMU 7.2 has no `-no-kvm` (it was removed)
/// and no `-accel=NAME` form (an invalid option).
///
/// ```
/// use qemu_process::args_choose_accel;
/// assert!(args_choose_accel(&["-machine", "none,accel=tcg"]));
/// assert!(!args_choose_accel(&["-machine", "none", "-name", "-accel"]));
/// ```
pub fn args_choose_accel<S: AsRef<OsStr>>(args: &[S]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref().as_bytes();
        i += 1;
        let Some(name) = option_name(arg) else {
            // A positional argument (QEMU takes it as a disk image).
            continue;
        };
        match name {
            b"accel" | b"enable-kvm" => return true,
            b"machine" | b"M" => {
                if let Some(value) = args.get(i) {
                    if machine_opts_choose_accel(value.as_ref().as_bytes()) {
                        return true;
                    }
                }
                i += 1;
            }
            other
                if OPTIONS_WITH_ARGUMENT
                    .split_ascii_whitespace()
                    .any(|o| o.as_bytes() == other) =>
            {
                i += 1
            }
            _ => {}
        }
    }
    false
}

/// The name of an option argument (`-accel` and `--accel` are both `accel`), or `None` for a
/// positional one.
fn option_name(arg: &[u8]) -> Option<&[u8]> {
    let rest = arg.strip_prefix(b"-")?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.strip_prefix(b"-").unwrap_or(rest))
}

/// Whether a `-machine` argument has an `accel` key. QEMU 7.2 parses it as a key-value list
/// whose first element may be the bare type: the type runs to the first `=` or `,`, and a
/// value after `KEY=` runs to the first single comma (`,,` is a literal comma).
fn machine_opts_choose_accel(value: &[u8]) -> bool {
    if value.first() == Some(&b'{') {
        return serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.as_object().map(|o| o.contains_key("accel")))
            .unwrap_or(false);
    }
    let mut s = value;
    let mut first = true;
    while !s.is_empty() {
        let key_len = s
            .iter()
            .position(|&b| b == b'=' || b == b',')
            .unwrap_or(s.len());
        if s.get(key_len) != Some(&b'=') {
            // A bare element: the implied type (first only) or `help`; anything else is an
            // error QEMU reports.
            if !first && key_len != 0 && !matches!(&s[..key_len], b"help" | b"?") {
                return false;
            }
            s = s.get(key_len + 1..).unwrap_or_default();
            first = false;
            continue;
        }
        if &s[..key_len] == b"accel" {
            return true;
        }
        // Skip the value: up to a single comma.
        let mut j = key_len + 1;
        loop {
            match s.get(j) {
                None => break,
                Some(b',') if s.get(j + 1) == Some(&b',') => j += 2,
                Some(b',') => break,
                Some(_) => j += 1,
            }
        }
        s = s.get(j + 1..).unwrap_or_default();
        first = false;
    }
    false
}

/// QEMU options that take an argument (QEMU 7.2's table, checked against the binary, plus those
/// of older and newer releases), so that an argument is never mistaken for an option.
const OPTIONS_WITH_ARGUMENT: &str = "\
    D L M accel acpitable action add-fd append audio audiodev balloon bios blockdev boot bt \
    cdrom chardev chroot clock compat cpu d debugcon device dfilter display drive dtb \
    dump-vmstate echr fda fdb fsdev fw_cfg g gdb global hda hdb hdc hdd icount incoming \
    initrd iscsi k kernel loadvm m machine mem-path mon monitor msg mtdblock name net \
    netdev nic numa object option-rom overcommit parallel pflash pidfile plugin prom-env \
    qmp qmp-pretty qtest qtest-log readconfig realtime rotate rtc run-with runas sandbox sd \
    seed semihosting-config serial set smbios smp soundhw spice tb-size tpmdev trace \
    usbdevice uuid vga virtfs vnc watchdog watchdog-action writeconfig xen-domid";

/// Whether the binary's name says it emulates this host's architecture (`qemu-system-<arch>`,
/// or `qemu-kvm`).
pub(crate) fn guest_matches_host(binary: &Path) -> bool {
    let Some(name) = binary.file_name().and_then(OsStr::to_str) else {
        return false;
    };
    if name == "qemu-kvm" {
        return true;
    }
    let Some(arch) = name.strip_prefix("qemu-system-") else {
        return false;
    };
    let host = std::env::consts::ARCH;
    match host {
        "x86_64" => arch == "x86_64" || arch == "i386",
        "aarch64" => arch == "aarch64" || arch == "arm",
        "powerpc64" => arch == "ppc64",
        "riscv64" => arch == "riscv64",
        "s390x" => arch == "s390x",
        other => arch == other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accel_names() {
        assert_eq!(Accel::parse("KVM"), Some(Accel::Kvm));
        assert_eq!(Accel::parse(" tcg "), Some(Accel::Tcg));
        assert_eq!(Accel::parse("none"), Some(Accel::None));
        assert_eq!(Accel::parse("auto"), Some(Accel::Auto));
        assert_eq!(Accel::parse("hvf"), None);
    }

    #[test]
    fn explicit_choice_is_never_overridden() {
        let bin = Path::new("/usr/bin/qemu-system-x86_64");
        assert_eq!(resolve_accel(Accel::Tcg, bin), Accel::Tcg);
        assert_eq!(resolve_accel(Accel::Kvm, bin), Accel::Kvm);
        assert_eq!(resolve_accel(Accel::None, bin), Accel::None);
    }

    #[test]
    fn auto_never_picks_kvm_for_a_foreign_guest() {
        // Unless the environment forces a choice, a foreign architecture gets TCG.
        if std::env::var_os(ACCEL_ENV).is_none() {
            let foreign = if std::env::consts::ARCH == "aarch64" {
                "qemu-system-x86_64"
            } else {
                "qemu-system-aarch64"
            };
            assert_eq!(resolve_accel(Accel::Auto, Path::new(foreign)), Accel::Tcg);
        }
    }

    #[test]
    fn accel_options_are_recognised_in_every_spelling() {
        let chooses: &[&[&str]] = &[
            &["-accel", "tcg"],
            &["--accel", "tcg"],
            &["-accel", "kvm,kernel-irqchip=split"],
            &["-accel", "help"],
            &["-S", "-accel", "tcg"],
            &["-enable-kvm"],
            &["--enable-kvm"],
            &["-machine", "accel=tcg"],
            &["-machine", "none,accel=tcg"],
            &["--machine", "none,accel=tcg"],
            &["-M", "pc,accel=kvm:tcg"],
            &["--M", "pc,accel=kvm:tcg"],
            &["-machine", "type=q35,accel=tcg"],
            &["-machine", "accel=tcg,type=none"],
            &["-machine", "q35,smm=on,accel=tcg"],
            &["-machine", "q35,memory-backend=a,,b,accel=tcg"],
            &["-machine", "none,help,accel=tcg"],
            &["-machine", "q35", "-machine", "accel=tcg"],
            &["-machine", r#"{"type": "none", "accel": "tcg"}"#],
            // Positional arguments (disk images) take nothing with them.
            &["disk.img", "-accel", "tcg"],
        ];
        for args in chooses {
            assert!(args_choose_accel(args), "{args:?}");
        }
        let os: Vec<OsString> = ["-M", "none,accel=tcg"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(args_choose_accel(&os));
    }

    #[test]
    fn arguments_that_only_look_like_accel_choices_are_not() {
        let leaves: &[&[&str]] = &[
            &[],
            &["-machine", "none", "-nodefaults"],
            &["-machine", "q35,smm=on"],
            // `,,` escapes the comma: the value is `a,accel=tcg`, no accel key.
            &["-machine", "q35,memory-backend=a,,accel=tcg"],
            &["-machine", "type=none,,accel=tcg"],
            // A key that only ends in accel, and a value that says accel.
            &["-machine", "q35,xaccel=tcg"],
            &["-machine", "q35,dumpdir=accel=tcg"],
            &["-machine", r#"{"type": "none"}"#],
            // Arguments of other options, whatever they look like.
            &["-name", "-accel"],
            &["-append", "-enable-kvm"],
            &["-device", "virtio-rng-pci,id=accel"],
            &["-append", "accel=kvm"],
            &["-object", "accel=tcg"],
            // Not options in QEMU 7.2.
            &["-accel=tcg"],
            &["-no-kvm"],
            &["---accel", "tcg"],
            &["accel", "tcg"],
            // -machine without its argument.
            &["-machine"],
        ];
        for args in leaves {
            assert!(!args_choose_accel(args), "{args:?}");
        }
    }

    #[test]
    fn host_architecture_matching() {
        let native = format!("qemu-system-{}", std::env::consts::ARCH);
        assert!(guest_matches_host(Path::new(&native)));
        assert!(guest_matches_host(Path::new("/usr/libexec/qemu-kvm")));
        assert!(!guest_matches_host(Path::new("qemu-system-s390x-not")));
        assert!(!guest_matches_host(Path::new("/usr/bin/qemu-img")));
    }

    #[test]
    fn builder_collects_settings() {
        let (a, _b) = crate::sys::socketpair().unwrap();
        let mut c = MachineConfig::new("qemu-system-x86_64");
        c.arg("-S")
            .args(["-machine", "none"])
            .accel(Accel::Tcg)
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
}
