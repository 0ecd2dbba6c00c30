//! Where started VMs are recorded: a per-user runtime directory with one directory per VM.
//!
//! The root is `$XDG_RUNTIME_DIR/qemu-machine`, else `/run/user/UID/qemu-machine` when that
//! runtime directory exists, else `qemu-machine-UID` in the temp dir. It is made mode 0700 and
//! refused unless it is a real directory owned by this user and closed to others. Each VM's
//! directory (`NAME/`, 0700) holds:
//!
//! - `lock`: locked (`flock`, exclusive) by the VM's supervisor for its whole life. An entry whose
//!   lock is free is stale (the supervisor is gone) and is removed by whoever finds it. The
//!   directory is prepared under a temporary name with the lock already held and renamed into
//!   place, so a VM's entry is never seen unlocked while it lives.
//! - `ctl.sock`: the supervisor's control socket (mode 0600).
//! - `info.json`: what the VM is (pids, start time, forwards), written once QMP is up.
//! - `supervisor.log`: the supervisor's own messages.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exit::Failure;

/// The longest path a unix socket may have (`sun_path` less its terminating NUL).
const SOCKET_PATH_MAX: usize = 107;
/// The longest VM name.
const NAME_MAX: usize = 64;

/// What a started VM's `info.json` says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Info {
    /// The VM's name.
    pub name: String,
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// QEMU's pid.
    pub qemu_pid: u32,
    /// When QMP came up, in seconds since the epoch.
    pub started: u64,
    /// QEMU's version, `7.2.22`.
    pub qemu_version: String,
    /// Port forwards: `NAME: ADDR -> guest tcp/PORT`, as `run` prints them.
    pub forwards: Vec<String>,
    /// The console log file, if one is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_log: Option<PathBuf>,
}

/// Checks a VM name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "{name:?} is not a VM name: use 1 to {NAME_MAX} letters, digits, '.', '_' or '-', \
             not starting with '.' or '-'"
        )))
    }
}

/// The current user's id.
pub fn uid() -> u32 {
    // SAFETY: getuid has no failure mode and touches no memory.
    unsafe { libc::getuid() }
}

/// The root directory, made (0700) if missing and checked to be this user's alone.
pub fn root() -> Result<PathBuf, Failure> {
    let uid = uid();
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir).join("qemu-machine"),
        _ => {
            let run = PathBuf::from(format!("/run/user/{uid}"));
            match std::fs::metadata(&run) {
                Ok(m) if m.is_dir() && m.uid() == uid => run.join("qemu-machine"),
                _ => std::env::temp_dir().join(format!("qemu-machine-{uid}")),
            }
        }
    };
    let bad =
        |why: String| Failure::failed(format!("the state directory {}: {why}", base.display()));
    match std::fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(&base).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory (a symlink is refused)".into()));
    }
    if meta.uid() != uid {
        return Err(bad(format!(
            "owned by uid {}, not by this user ({uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:04o} lets others in (it must be 0700)",
            meta.mode() & 0o7777
        )));
    }
    Ok(base)
}

/// Takes an exclusive or shared `flock` on `file` without waiting: `Ok(false)` when someone
/// else holds it.
fn try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// A started VM's directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The VM's name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
}

/// What an entry turned out to be.
#[derive(Debug)]
pub enum Probe {
    /// The supervisor lives; `None` while it is still launching QEMU.
    Live(Option<Info>),
    /// The supervisor is gone; the entry was removed.
    Stale,
}

impl Entry {
    /// The entry of `name` under `root` (which may not exist).
    pub fn new(root: &Path, name: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            dir: root.join(name),
        }
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    /// The info file.
    pub fn info_path(&self) -> PathBuf {
        self.dir.join("info.json")
    }

    /// The supervisor's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    /// The info file's contents, if written.
    pub fn info(&self) -> Option<Info> {
        let text = std::fs::read_to_string(self.info_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Whether the entry's supervisor lives; a stale entry is removed. `None` when there is no
    /// entry at all.
    pub fn probe(&self) -> Option<Probe> {
        let lock = match File::options()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.dir.join("lock"))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.dir.exists() {
                    return None;
                }
                // A directory without a lock file is never made by a supervisor: leftover.
                self.remove();
                return Some(Probe::Stale);
            }
            Err(_) => return Some(Probe::Live(self.info())),
        };
        match try_lock(&lock, true) {
            Ok(false) => Some(Probe::Live(self.info())),
            Ok(true) => {
                // Nobody holds it: the supervisor is gone. Removed while we hold the lock.
                self.remove();
                Some(Probe::Stale)
            }
            Err(_) => Some(Probe::Live(self.info())),
        }
    }

    /// Removes the entry's directory and what is in it.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The live entries (with their info once written) and the names of the stale ones found.
pub type Entries = (Vec<(Entry, Option<Info>)>, Vec<String>);

/// The entries under `root`, sorted by name (stale ones are removed and reported by name).
pub fn entries(root: &Path) -> Result<Entries, Failure> {
    let read = std::fs::read_dir(root)
        .map_err(|e| Failure::failed(format!("reading {}: {e}", root.display())))?;
    let mut live = Vec::new();
    let mut stale = Vec::new();
    for item in read.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with(".new-") {
            // A VM being set up holds its lock; a leftover of a start that died does not. (One
            // without a lock file yet may be in the middle of being made: left alone.)
            if let Ok(lock) = File::open(item.path().join("lock")) {
                if try_lock(&lock, true).unwrap_or(false) {
                    let _ = std::fs::remove_dir_all(item.path());
                }
            }
            continue;
        }
        if check_name(&name).is_err() {
            continue;
        }
        let entry = Entry::new(root, &name);
        match entry.probe() {
            Some(Probe::Live(info)) => live.push((entry, info)),
            Some(Probe::Stale) => stale.push(name),
            None => {}
        }
    }
    live.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    stale.sort();
    Ok((live, stale))
}

/// A live entry by name: an error names the VMs there are when it is not one.
pub fn find(name: &str) -> Result<(Entry, Option<Info>), Failure> {
    check_name(name)?;
    let root = root()?;
    let entry = Entry::new(&root, name);
    match entry.probe() {
        Some(Probe::Live(info)) => Ok((entry, info)),
        Some(Probe::Stale) => Err(Failure::failed(format!(
            "no VM named {name} is running (its entry was stale: its supervisor had gone, and \
             it was removed)"
        ))),
        None => Err(Failure::failed(format!(
            "no VM named {name} is running (`qemu-machine list` lists them)"
        ))),
    }
}

/// A new entry for `name`, its lock held by the returned file: made under a temporary name
/// and renamed into place, so nobody sees it unlocked. A live VM of that name is an error; a
/// stale entry is replaced.
pub fn claim(name: &str) -> Result<(Entry, File), Failure> {
    check_name(name)?;
    let root = root()?;
    let entry = Entry::new(&root, name);
    let socket = entry.socket();
    if socket.as_os_str().len() > SOCKET_PATH_MAX {
        return Err(Failure::failed(format!(
            "the control socket's path {} is longer than a unix socket allows ({SOCKET_PATH_MAX} \
             bytes): use a shorter name, or set XDG_RUNTIME_DIR to a shorter directory",
            socket.display()
        )));
    }
    let fail = |what: &str, e: io::Error| Failure::failed(format!("{what}: {e}"));
    let temp = root.join(format!(".new-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&temp)
        .map_err(|e| fail(&format!("creating {}", temp.display()), e))?;
    let lock = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(temp.join("lock"))
        .map_err(|e| fail("creating the lock file", e))?;
    if !try_lock(&lock, true).map_err(|e| fail("locking the lock file", e))? {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(Failure::failed(
            "the new entry's lock is held by another process",
        ));
    }
    for _ in 0..2 {
        match std::fs::rename(&temp, &entry.dir) {
            Ok(()) => return Ok((entry, lock)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EEXIST | libc::ENOTEMPTY | libc::EISDIR)
                ) =>
            {
                match entry.probe() {
                    Some(Probe::Live(info)) => {
                        let _ = std::fs::remove_dir_all(&temp);
                        let pid = info
                            .map_or_else(String::new, |i| format!(" (QEMU pid {})", i.qemu_pid));
                        return Err(Failure::failed(format!(
                            "a VM named {name} is already running{pid}"
                        )));
                    }
                    // Stale, removed: try again.
                    Some(Probe::Stale) | None => {}
                }
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&temp);
                return Err(fail(&format!("creating {}", entry.dir.display()), e));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&temp);
    Err(Failure::failed(format!(
        "could not create the entry for {name}: another start races for the name"
    )))
}

/// Writes `info.json` into the entry, owner-only, replacing it atomically.
pub fn write_info(entry: &Entry, info: &Info) -> io::Result<()> {
    let text = serde_json::to_string_pretty(info).map_err(io::Error::other)?;
    let temp = entry.dir.join(".info.json.new");
    let _ = std::fs::remove_file(&temp);
    {
        use std::io::Write;
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        f.write_all(text.as_bytes())?;
    }
    std::fs::rename(&temp, entry.info_path())
}

/// Makes a file owner-only (the control socket after `bind`).
pub fn make_private(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "vm-1", "a.b_c", "X9"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            &"x".repeat(65),
            "..",
            "é",
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.code, crate::exit::USAGE, "{bad}");
        }
    }
}
