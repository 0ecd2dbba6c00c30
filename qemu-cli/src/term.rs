//! The terminal: raw mode with guaranteed restoration, and line endings that suit it.
//!
//! [`RawMode::enter`] saves the terminal's settings and switches it to raw mode; dropping the
//! guard restores them. So that a panic (whose message is printed before unwinding drops the
//! guard) or an early `exit` cannot leave the user's terminal raw, the saved settings are also
//! kept in a process-wide slot that a panic hook ([`install_panic_hook`]) and [`restore`]
//! use.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The settings to restore, and the descriptor they belong to.
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);
/// Whether a terminal is in raw mode now (output then needs `\r\n`).
static RAW: AtomicBool = AtomicBool::new(false);

/// Whether `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Whether some terminal is in raw mode (set by [`RawMode`]).
pub fn raw_active() -> bool {
    RAW.load(Ordering::Relaxed)
}

/// The line ending to use for our own messages: `\r\n` while a terminal is raw.
pub fn eol() -> &'static str {
    if raw_active() {
        "\r\n"
    } else {
        "\n"
    }
}

/// Writes one message line to stderr (with the right line ending), ignoring failures: a
/// message that cannot be shown must not end the program.
pub fn message(text: &str) {
    let mut err = io::stderr().lock();
    let text = if raw_active() {
        text.replace('\n', "\r\n")
    } else {
        text.to_owned()
    };
    let _ = write!(err, "{text}{}", eol());
    let _ = err.flush();
}

/// Restores the saved terminal settings, if any (idempotent).
pub fn restore() {
    let saved = SAVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if let Some((fd, termios)) = saved {
        // SAFETY: `termios` is a valid settings struct obtained from tcgetattr on `fd`.
        unsafe {
            libc::tcsetattr(fd, libc::TCSANOW, &termios);
        }
        RAW.store(false, Ordering::Relaxed);
    }
}

/// Makes panics restore the terminal before the panic message is printed.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        default(info);
    }));
}

/// A terminal in raw mode; restored when dropped.
#[derive(Debug)]
pub struct RawMode {
    _private: (),
}

impl RawMode {
    /// Switches `fd` to raw mode if it is a terminal (`Ok(None)` if it is not). Input is
    /// delivered byte by byte without echo and without signals (Ctrl-C arrives as byte 3), and
    /// output is passed through unchanged (no `\n` to `\r\n` translation).
    pub fn enter(fd: RawFd) -> io::Result<Option<RawMode>> {
        if !is_tty(fd) {
            return Ok(None);
        }
        // SAFETY: termios is a plain C struct; all-zero is a valid value to be overwritten.
        let mut original: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `original` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = original;
        // SAFETY: cfmakeraw only modifies the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        {
            let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
            if saved.is_none() {
                *saved = Some((fd, original));
            }
        }
        // SAFETY: `raw` is a valid termios derived from the current settings.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            let e = io::Error::last_os_error();
            SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(e);
        }
        RAW.store(true, Ordering::Relaxed);
        Ok(Some(RawMode { _private: () }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// The terminal's width in columns, if `fd` is a terminal that knows it.
pub fn width(fd: RawFd) -> Option<usize> {
    // SAFETY: winsize is a plain C struct; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct passed.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_terminal_is_left_alone() {
        let (r, w) = crate::sys::pipe().unwrap();
        use std::os::fd::AsRawFd;
        assert!(!is_tty(r.as_raw_fd()));
        assert!(RawMode::enter(w.as_raw_fd()).unwrap().is_none());
        assert!(width(r.as_raw_fd()).is_none());
    }

    #[test]
    fn raw_mode_on_a_pty_is_restored_on_drop() {
        let (master, slave) = crate::sys::openpty().unwrap();
        use std::os::fd::AsRawFd;
        let fd = slave.as_raw_fd();
        let get = || {
            // SAFETY: zeroed termios is valid to be overwritten.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: valid fd and struct.
            assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
            t
        };
        let before = get();
        assert_ne!(before.c_lflag & libc::ICANON, 0);
        {
            let _guard = RawMode::enter(fd).unwrap().expect("a pty is a terminal");
            assert!(raw_active());
            assert_eq!(eol(), "\r\n");
            let raw = get();
            assert_eq!(raw.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
        }
        assert!(!raw_active());
        let after = get();
        assert_eq!(after.c_lflag, before.c_lflag);
        assert_eq!(after.c_oflag, before.c_oflag);
        drop(master);
    }
}
