//! [`Harness`]: what a launcher adds to a command line to drive QEMU.

use crate::{Accel, AddFd, Chardev, CommandLine, Display, Monitor};

/// The chardev id of the launcher's QMP monitor.
pub const QMP_CHARDEV: &str = "qm-qmp";
/// The chardev id of the launcher's console.
pub const CONSOLE_CHARDEV: &str = "qm-console";
/// The chardev id of the guest agent's channel: the launcher's descriptor
/// ([`Harness::guest_agent_fd`]), which the port of a [`VmSpec`](crate::VmSpec) with
/// `guest_agent` connects to.
pub const GUEST_AGENT_CHARDEV: &str = "qm-qga";

/// The pieces a launcher adds to a command line so that it can drive QEMU: a QMP monitor and a
/// console on socket descriptors QEMU inherits, `-display none`, an accelerator, and
/// descriptors in fd sets. [`CommandLine::harness`] writes them; do it before the VM's own
/// serial ports, so that the console is the guest's first.
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Harness {
    /// A QMP monitor (chardev [`QMP_CHARDEV`]) on this inherited socket descriptor.
    pub qmp_fd: Option<i32>,
    /// A console (chardev [`CONSOLE_CHARDEV`]) on this inherited socket descriptor, as a
    /// serial port.
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
}

impl CommandLine {
    /// Adds a launcher's [`Harness`].
    pub fn harness(&mut self, h: &Harness) -> &mut Self {
        if let Some(fd) = h.qmp_fd {
            self.chardev(Chardev::socket_fd(QMP_CHARDEV, fd))
                .monitor(Monitor::qmp(QMP_CHARDEV));
        }
        if let Some(fd) = h.console_fd {
            self.chardev(Chardev::socket_fd(CONSOLE_CHARDEV, fd))
                .serial(CONSOLE_CHARDEV);
        }
        if let Some(fd) = h.guest_agent_fd {
            self.chardev(Chardev::socket_fd(GUEST_AGENT_CHARDEV, fd));
        }
        if h.display_none {
            self.display(Display::None);
        }
        if let Some(a) = &h.accel {
            self.accel(a.clone());
        }
        for add in &h.add_fds {
            self.add_fd(add.clone());
        }
        self
    }
}
