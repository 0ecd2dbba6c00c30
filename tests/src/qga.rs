//! The QEMU guest agent for the tests: `qemu-ga` run on the host as a peer for protocol-level
//! tests ([`HostAgent`]), and packed into an initramfs overlay that gives the busybox guest
//! fixture a running agent ([`guest_initrd_with_agent`]).
//!
//! Both use the host's own `/usr/sbin/qemu-ga` (Debian's `qemu-guest-agent` package, installed
//! by `scripts/install-deps.sh`); a missing one fails with the install command.
//!
//! # The agent in the guest fixture
//!
//! [`guest_initrd_with_agent`] writes the fixture's initramfs followed by a second newc archive
//! (the kernel unpacks both, the second over the first) holding `qemu-ga`, the shared
//! libraries `ldd` lists for it, [`START_AGENT`] and a `/sbin/shutdown` for the agent's
//! `guest-shutdown`. Boot it with the kernel parameters of [`agent_cmdline`]: the module
//! `virtio_console`, and a `qm.run` script that runs [`START_AGENT`] and goes on to the shell
//! (`qm.after=shell`). That script finds the port named `org.qemu.guest_agent.0` in
//! `/sys/class/virtio-ports`, links it as `/dev/virtio-ports/org.qemu.guest_agent.0`, and
//! keeps an agent running on it in the background: when the agent exits (or is killed) a new
//! one starts 0.2 s later. It prints [`AGENT_STARTED_LINE`], or [`NO_PORT_LINE`] when the VM
//! has no such port.
//!
//! The guest's `/sbin/shutdown` does what `shutdown -h -P|-r|-H +0` does on a systemd guest:
//! it returns 0 at once and the power change follows (1 s later here, by busybox
//! `poweroff -f`, `reboot -f` or `halt -f`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::fixture::newc::NewcWriter;
use crate::fixture::GuestFixture;

/// The commands blocked in every agent run on the host: those that would change the host
/// (power, time, users, CPUs, memory, file systems).
pub const BLOCKED_ON_HOST: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-set-time",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
    "guest-set-user-password",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
];

/// The `qemu-ga` binary.
///
/// # Panics
///
/// If there is none, with the message
/// "qemu-ga not found: install it with `apt-get install -y qemu-guest-agent`".
pub fn qemu_ga() -> PathBuf {
    crate::find_program("qemu-ga")
        .or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/qemu-ga");
            sbin.is_file().then_some(sbin)
        })
        .unwrap_or_else(|| {
            panic!("qemu-ga not found: install it with `apt-get install -y qemu-guest-agent`")
        })
}

/// A `qemu-ga -m unix-listen` on the host, in a directory of its own (socket, state, log).
/// It is killed and reaped when dropped.
#[derive(Debug)]
pub struct HostAgent {
    child: Option<Child>,
    /// The unix socket it listens on.
    pub socket: PathBuf,
    /// Its log file (`-l`).
    pub log: PathBuf,
    dir: PathBuf,
}

impl HostAgent {
    /// Starts an agent listening on `dir/qga.sock` (`dir` must exist), with the commands of
    /// [`BLOCKED_ON_HOST`] disabled. Connect with retries: the socket appears a moment later.
    pub fn start(dir: &Path) -> HostAgent {
        let mut agent = HostAgent {
            child: None,
            socket: dir.join("qga.sock"),
            log: dir.join("qga.log"),
            dir: dir.to_owned(),
        };
        agent.restart();
        agent
    }

    /// Kills the agent (if it runs) and starts a new one on the same socket path.
    pub fn restart(&mut self) {
        self.kill();
        let _ = fs::remove_file(&self.socket);
        let child = Command::new(qemu_ga())
            .arg("-m")
            .arg("unix-listen")
            .arg("-p")
            .arg(&self.socket)
            .arg("-t")
            .arg(&self.dir)
            .arg("-f")
            .arg(self.dir.join("qga.pid"))
            .arg("-l")
            .arg(&self.log)
            .arg("-b")
            .arg(BLOCKED_ON_HOST.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting qemu-ga: {e}"));
        self.child = Some(child);
    }

    /// The agent's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the agent (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The line [`START_AGENT`] prints once the agent's loop runs.
pub const AGENT_STARTED_LINE: &str = "QM-QGA-STARTED";
/// The line [`START_AGENT`] prints when the VM has no guest-agent port.
pub const NO_PORT_LINE: &str = "QM-QGA-NO-PORT";

/// Where the overlay puts the start script in the guest.
pub const START_AGENT: &str = "/usr/local/sbin/qm-start-agent";

const START_SCRIPT: &str = r#"#!/bin/sh
# Keeps a qemu-ga running on the virtio-serial port org.qemu.guest_agent.0 (restarted 0.2 s
# after it exits), as a guest's init system would.
dev=
for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] && [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ] && dev=/dev/${p##*/}
done
if [ -z "$dev" ]; then
    echo QM-QGA-NO-PORT
    exit 1
fi
mkdir -p /dev/virtio-ports
ln -sf "$dev" /dev/virtio-ports/org.qemu.guest_agent.0
setsid sh -c 'while :; do
    qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run \
        -f /run/qemu-ga.pid -l /run/qemu-ga.log
    sleep 0.2
done' </dev/null >/dev/null 2>&1 &
echo QM-QGA-STARTED
"#;

const SHUTDOWN_SCRIPT: &str = r#"#!/bin/sh
# qemu-ga runs `shutdown -h -P|-r|-H +0 MESSAGE`: like systemd's shutdown, return at once and
# let the power change follow.
action=poweroff
for a in "$@"; do
    case "$a" in
    -r) action=reboot ;;
    -H) action=halt ;;
    -P) action=poweroff ;;
    esac
done
echo "$action" >/run/qm-shutdown
setsid sh -c "sleep 1; sync; $action -f" </dev/null >/dev/null 2>&1 &
exit 0
"#;

/// The kernel command line that boots the fixture with the agent running (see the module
/// documentation): `virtio_console` and `modules`, the start script, then the shell.
pub fn agent_cmdline(fixture: &GuestFixture, modules: &[&str], extra: &str) -> String {
    let mut all = vec!["virtio_console"];
    all.extend_from_slice(modules);
    let run = crate::fixture::run_param(&format!("{START_AGENT}\n"));
    fixture.kernel_cmdline(&all, &format!("{run} qm.after=shell {extra}"))
}

/// Writes `dir/initrd-qga.cpio`: the fixture's initramfs with the agent overlay after it (see
/// the module documentation), and returns its path.
pub fn guest_initrd_with_agent(fixture: &GuestFixture, dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join("initrd-qga.cpio");
    let mut out = io::BufWriter::new(fs::File::create(&path)?);
    out.write_all(&fs::read(&fixture.initrd)?)?;
    out.write_all(&agent_overlay()?)?;
    out.flush()?;
    Ok(path)
}

/// The overlay archive: qemu-ga, its libraries, the start and shutdown scripts.
fn agent_overlay() -> io::Result<Vec<u8>> {
    let binary = qemu_ga();
    let mut w = NewcWriter::new(Vec::new());
    w.file("usr/sbin/qemu-ga", 0o755, &fs::read(&binary)?)?;
    for lib in shared_libraries(&binary)? {
        let inside = lib
            .to_str()
            .ok_or_else(|| io::Error::other(format!("{} is not UTF-8", lib.display())))?;
        w.file(inside, 0o755, &fs::read(&lib)?)?;
    }
    w.file(START_AGENT, 0o755, START_SCRIPT.as_bytes())?;
    w.file("sbin/shutdown", 0o755, SHUTDOWN_SCRIPT.as_bytes())?;
    w.finish()
}

/// The libraries (and the dynamic loader) `ldd` lists for `binary`, as absolute paths.
fn shared_libraries(binary: &Path) -> io::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    if libs.is_empty() {
        return Err(io::Error::other(format!(
            "ldd {} listed no libraries: {text}",
            binary.display()
        )));
    }
    Ok(libs)
}
