//! The guardian process itself.
//!
//! It is forked (without `exec`) from the owner, which may have many threads, so everything here
//! runs under the rules of a child of a multi-threaded fork: only plain system calls. Nothing
//! allocates through the global allocator (tables live in `mmap`ed memory), nothing takes a lock,
//! nothing formats, nothing may panic (indexing goes through `get`, arithmetic is checked or
//! saturating). It never returns: it `_exit`s once its owner is gone and everything it guarded
//! is cleaned up.
//!
//! What it does:
//! - spawns children on request (`wire::SPAWN`), so that they are children of a process that
//!   lives exactly as long as the owner process — not of whichever owner thread launched them,
//!   which is what `PR_SET_PDEATHSIG` would tie them to — and so that the owner's own handling
//!   of `SIGCHLD` (ignored, or `waitpid(-1)` elsewhere in the program) cannot take their exit
//!   status away; each child leads its own process group and gets `PR_SET_PDEATHSIG(SIGKILL)`
//!   against the guardian, so it dies if the guardian is killed;
//! - reports each child's exit on the child's channel, after killing what is left of its process
//!   group (a wrapper that forked QEMU instead of exec'ing it), and reaps orphans it adopts as
//!   a child subreaper;
//! - signals a child's process group on request;
//! - when a channel closes without a goodbye (the owner died, or lost the handle), kills the
//!   child; watched directories are removed once the owner is gone and every child is reaped.

use std::os::fd::RawFd;

use super::wire::{self, Msg, Received, MSG_LEN};

mod remove;
mod spawn;

use remove::remove_dir;
use spawn::spawn;

/// One thing the guardian looks after: a child process, or a watched directory.
#[derive(Clone, Copy)]
struct Entry {
    /// The channel to the owner; -1 once it closed.
    chan: RawFd,
    /// The child's pid while it runs or is unreaped; 0 otherwise.
    pid: libc::pid_t,
    /// For a watch: the directory's parent (`O_PATH`); -1 otherwise.
    parent: RawFd,
    /// For a watch: the directory's name, NUL-terminated.
    name: [u8; wire::MAX_NAME + 1],
    /// The owner said goodbye: nothing to clean up for it.
    goodbye: bool,
    /// The channel closed without a goodbye.
    orphaned: bool,
    /// Done: to be removed from the table.
    dead: bool,
}

impl Entry {
    const fn new(chan: RawFd) -> Entry {
        Entry {
            chan,
            pid: 0,
            parent: -1,
            name: [0; wire::MAX_NAME + 1],
            goodbye: false,
            orphaned: false,
            dead: false,
        }
    }
}

/// A growable array of plain values in anonymous `mmap`ed memory (no allocator involved).
struct MapVec<T: Copy> {
    ptr: *mut T,
    len: usize,
    cap: usize,
}

impl<T: Copy> MapVec<T> {
    const fn new() -> MapVec<T> {
        MapVec {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    fn bytes(cap: usize) -> Option<usize> {
        let page = 4096usize;
        let raw = cap.checked_mul(std::mem::size_of::<T>())?;
        raw.checked_add(page - 1).map(|n| n / page * page)
    }

    /// Appends `value`; `false` if memory could not be had.
    fn push(&mut self, value: T) -> bool {
        if self.len == self.cap && !self.grow() {
            return false;
        }
        // SAFETY: len < cap after grow, and the mapping holds `cap` values of T.
        unsafe { self.ptr.add(self.len).write(value) };
        self.len += 1;
        true
    }

    fn grow(&mut self) -> bool {
        let new_cap = if self.cap == 0 { 16 } else { self.cap * 2 };
        let Some(new_bytes) = Self::bytes(new_cap) else {
            return false;
        };
        let ptr = if self.ptr.is_null() {
            // SAFETY: an anonymous private mapping; no existing memory is affected.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    new_bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            }
        } else {
            let Some(old_bytes) = Self::bytes(self.cap) else {
                return false;
            };
            // SAFETY: `ptr` is our own mapping of `old_bytes`; MREMAP_MAYMOVE may move it, and
            // nothing holds pointers into it across this call.
            unsafe { libc::mremap(self.ptr.cast(), old_bytes, new_bytes, libc::MREMAP_MAYMOVE) }
        };
        if ptr == libc::MAP_FAILED {
            return false;
        }
        self.ptr = ptr.cast();
        self.cap = new_bytes / std::mem::size_of::<T>().max(1);
        true
    }

    fn as_slice(&self) -> &[T] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the first `len` values were written by `push`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        if self.ptr.is_null() {
            return &mut [];
        }
        // SAFETY: the first `len` values were written by `push`; `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps the values for which `keep` is true (order is not kept).
    fn retain(&mut self, keep: impl Fn(&T) -> bool) {
        let mut i = 0;
        while i < self.len {
            // SAFETY: i < len.
            let value = unsafe { self.ptr.add(i).read() };
            if keep(&value) {
                i += 1;
            } else {
                self.len -= 1;
                // SAFETY: len (after the decrement) is a valid index of a written value.
                unsafe { self.ptr.add(i).write(self.ptr.add(self.len).read()) };
            }
        }
    }
}

/// The guardian's state.
struct Guardian {
    /// The request socket (fd 3); -1 once the owner is gone.
    request: RawFd,
    /// A signalfd for SIGCHLD.
    sigchld: RawFd,
    /// This process's pid.
    pid: libc::pid_t,
    /// The owner's soft limit of open files, given back to children.
    nofile: libc::rlimit,
    entries: MapVec<Entry>,
    pollfds: MapVec<libc::pollfd>,
}

/// Runs the guardian. `request` is its end of the request socket, `devnull` an open
/// `/dev/null`. Never returns.
pub(crate) fn run(request: RawFd, devnull: RawFd) -> ! {
    let mut g = init(request, devnull);
    g.serve();
    // SAFETY: _exit ends the process without running any of the owner's exit handlers.
    unsafe { libc::_exit(0) }
}

/// Resets every signal to its default action (SIGKILL and SIGSTOP cannot be changed; numbers
/// the C library reserves fail harmlessly).
fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask, no flags).
        let action: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: sigaction with a valid struct pointer and a null old-action pointer.
        unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) };
    }
}

fn set_signal_mask(block_sigchld: bool) {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if block_sigchld {
            libc::sigaddset(&mut set, libc::SIGCHLD);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Marks (or closes) every descriptor from `from` up.
fn close_from(from: RawFd, cloexec: bool) {
    let flags = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC
    } else {
        0
    };
    // SAFETY: close_range only changes this process's descriptor table.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            from as libc::c_uint,
            libc::c_uint::MAX,
            flags as libc::c_uint,
        )
    };
    if ret == 0 {
        return;
    }
    // Kernels before 5.11: walk the table up to the soft limit (bounded).
    // SAFETY: all-zero is a valid rlimit; getrlimit writes into it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is writable.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as RawFd
    } else {
        65536
    };
    for fd in from..max {
        // SAFETY: fcntl/close on any number are memory-safe; unused numbers fail with EBADF.
        unsafe {
            if cloexec {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            } else {
                libc::close(fd);
            }
        }
    }
}

fn init(request: RawFd, devnull: RawFd) -> Guardian {
    reset_signals();
    // SAFETY: setting SIGPIPE to SIG_IGN with a zeroed sigaction whose handler is SIG_IGN.
    unsafe {
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGPIPE, &ignore, std::ptr::null_mut());
    }
    // SAFETY: the following calls only change this process's own attributes and descriptors.
    unsafe {
        // Out of the owner's process group: a Ctrl-C at the owner's terminal is the owner's to
        // handle (it may want to shut its machines down gracefully); the guardian must not die
        // of it and take them down hard.
        libc::setpgid(0, 0);
        // The request socket to fd 3, /dev/null on 0-2, nothing else open: the guardian must
        // not keep the owner's files, pipes or sockets alive after the owner is gone.
        let moved = libc::fcntl(request, libc::F_DUPFD_CLOEXEC, 64);
        for target in 0..3 {
            if devnull != target {
                libc::dup2(devnull, target);
            }
        }
        if moved >= 0 {
            libc::dup3(moved, 3, libc::O_CLOEXEC);
        }
        close_from(4, false);
        libc::prctl(
            libc::PR_SET_NAME,
            c"qm-guardian".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        // Orphans of children (what a forking wrapper leaves behind) come to us to be reaped.
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
    }
    // SAFETY: all-zero is a valid rlimit; getrlimit/setrlimit read and write it.
    let mut nofile: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) == 0 {
            // One descriptor per machine and per watched directory: allow as many as allowed.
            let raised = libc::rlimit {
                rlim_cur: nofile.rlim_max,
                rlim_max: nofile.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
    set_signal_mask(true);
    // SAFETY: sigset_t is plain data, initialised by sigemptyset/sigaddset; signalfd creates a
    // new descriptor.
    let sigchld = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    Guardian {
        request: 3,
        sigchld,
        // SAFETY: getpid has no preconditions.
        pid: unsafe { libc::getpid() },
        nofile,
        entries: MapVec::new(),
        pollfds: MapVec::new(),
    }
}

fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: closing a descriptor this process owns.
        unsafe { libc::close(fd) };
    }
}

fn send(chan: RawFd, msg: Msg) {
    if chan >= 0 {
        let _ = wire::send(chan, msg, &[], &[], true);
    }
}

/// Signals the process group led by `pid` (and `pid` itself if that fails).
fn signal_group(pid: libc::pid_t, sig: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: kill has no memory effects. `pid` is our unreaped child (a zombie at worst), so
    // neither its pid nor its process group id can have been reused.
    unsafe {
        if libc::kill(-pid, sig) != 0 {
            libc::kill(pid, sig);
        }
    }
}

impl Guardian {
    fn serve(&mut self) {
        loop {
            self.entries.retain(|e| !e.dead);
            if self.request < 0 {
                let children = self.entries.as_slice().iter().any(|e| e.pid > 0);
                if !children {
                    // The owner is gone and every child reaped: remove what it left behind.
                    for e in self.entries.as_mut_slice() {
                        if e.parent >= 0 && e.orphaned {
                            remove_dir(e.parent, &e.name);
                            close(e.parent);
                            close(e.chan);
                            e.dead = true;
                        }
                    }
                    self.entries.retain(|e| !e.dead);
                    if self.entries.len == 0 {
                        return;
                    }
                }
            }
            if !self.wait() {
                // No memory for the poll set: nothing sensible is left to do but clean up.
                self.request = -1;
                for e in self.entries.as_mut_slice() {
                    e.orphaned = true;
                    signal_group(e.pid, libc::SIGKILL);
                }
                self.reap();
            }
        }
    }

    /// One poll over everything, and the handling of what is ready. `false` when the poll set
    /// could not be built.
    fn wait(&mut self) -> bool {
        self.pollfds.clear();
        let fixed = [self.sigchld, self.request];
        for fd in fixed {
            if !self.pollfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }) {
                return false;
            }
        }
        for i in 0..self.entries.len {
            let fd = self.entries.as_slice().get(i).map_or(-1, |e| e.chan);
            if !self.pollfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }) {
                return false;
            }
        }
        let fds = self.pollfds.as_mut_slice();
        // SAFETY: `fds` is a valid array of pollfd of the given length; negative fds are
        // ignored by poll.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ret <= 0 {
            return true; // EINTR, or nothing
        }
        let ready = |fds: &[libc::pollfd], i: usize| fds.get(i).is_some_and(|p| p.revents != 0);
        if ready(self.pollfds.as_slice(), 0) {
            self.reap();
        }
        if ready(self.pollfds.as_slice(), 1) {
            self.accept();
        }
        // Entries added by `accept` come after those polled; they are looked at next round.
        let polled = self.pollfds.len.saturating_sub(2);
        for i in 0..polled {
            if ready(self.pollfds.as_slice(), i + 2) {
                self.channel(i);
            }
        }
        // Children may have exited meanwhile (e.g. a killed one); reap them now rather than
        // after the next wake-up.
        self.reap();
        true
    }

    /// Handles a message on the request socket.
    fn accept(&mut self) {
        let mut buf = [0u8; MSG_LEN + wire::MAX_NAME + 1];
        let mut fds = [-1 as RawFd; wire::MAX_FDS];
        let (len, nfds) = match wire::recv(self.request, &mut buf, &mut fds) {
            Ok(Received::Message { len, nfds }) => (len, nfds),
            Ok(Received::Empty) => return,
            Ok(Received::Closed) | Err(_) => {
                // The owner is gone (its last copy of the socket closed).
                close(self.request);
                self.request = -1;
                return;
            }
        };
        let fds = fds.get(..nfds).unwrap_or(&[]);
        let msg = Msg::parse(buf.get(..len).unwrap_or(&[]));
        let handled = match msg {
            Some(m) if m.kind == wire::SPAWN => self.spawn_request(m, fds),
            Some(m) if m.kind == wire::WATCH => {
                self.watch_request(buf.get(MSG_LEN..len).unwrap_or(&[]), fds)
            }
            _ => false,
        };
        if !handled {
            for &fd in fds {
                close(fd);
            }
        }
    }

    /// Registers a watched directory. Takes the descriptors when it returns `true`.
    fn watch_request(&mut self, name: &[u8], fds: &[RawFd]) -> bool {
        let (Some(&chan), Some(&parent), 2) = (fds.first(), fds.get(1), fds.len()) else {
            return false;
        };
        let valid = !name.is_empty()
            && name.len() <= wire::MAX_NAME
            && name != b"."
            && name != b".."
            && !name.iter().any(|&b| b == 0 || b == b'/');
        if !valid {
            return false;
        }
        let mut e = Entry::new(chan);
        e.parent = parent;
        if let Some(dst) = e.name.get_mut(..name.len()) {
            dst.copy_from_slice(name);
        }
        if !self.entries.push(e) {
            return false;
        }
        send(chan, Msg::new(wire::WATCHING, 0, 0));
        true
    }

    /// Spawns a child as requested. Takes the descriptors when it returns `true`.
    fn spawn_request(&mut self, m: Msg, fds: &[RawFd]) -> bool {
        let Some(&chan) = fds.first() else {
            return false;
        };
        let inherit = usize::try_from(m.a).ok();
        if inherit.and_then(|n| n.checked_add(wire::SPAWN_FIXED_FDS)) != Some(fds.len()) {
            send(
                chan,
                Msg::new(wire::SPAWN_FAILED, libc::EINVAL, wire::STAGE_REQUEST),
            );
            return false;
        }
        let result = spawn(self.pid, &self.nofile, m.b as libc::mode_t, fds);
        // The child has its copies now (or failed); the guardian keeps only the channel.
        for &fd in fds.get(1..).unwrap_or(&[]) {
            close(fd);
        }
        match result {
            Ok(pid) => {
                let mut e = Entry::new(chan);
                e.pid = pid;
                if self.entries.push(e) {
                    send(chan, Msg::new(wire::SPAWNED, pid, 0));
                } else {
                    signal_group(pid, libc::SIGKILL);
                    // SAFETY: reaping our own child; a null status pointer is allowed.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    send(
                        chan,
                        Msg::new(wire::SPAWN_FAILED, libc::ENOMEM, wire::STAGE_REQUEST),
                    );
                    close(chan);
                }
            }
            Err((errno, stage)) => {
                send(chan, Msg::new(wire::SPAWN_FAILED, errno, stage));
                close(chan);
            }
        }
        true
    }

    /// Handles what arrived on entry `i`'s channel.
    fn channel(&mut self, i: usize) {
        loop {
            let Some(e) = self.entries.as_mut_slice().get_mut(i) else {
                return;
            };
            if e.chan < 0 || e.dead {
                return;
            }
            let mut buf = [0u8; MSG_LEN];
            let mut fds = [-1 as RawFd; 4];
            match wire::recv(e.chan, &mut buf, &mut fds) {
                Ok(Received::Empty) => return,
                Ok(Received::Message { len, nfds }) => {
                    for &fd in fds.get(..nfds).unwrap_or(&[]) {
                        close(fd);
                    }
                    match Msg::parse(buf.get(..len).unwrap_or(&[])) {
                        Some(m) if m.kind == wire::SIGNAL => signal_group(e.pid, m.a),
                        Some(m) if m.kind == wire::GOODBYE => {
                            e.goodbye = true;
                            if e.pid > 0 {
                                // Forgotten while running: it goes (and is reaped) now.
                                signal_group(e.pid, libc::SIGKILL);
                            } else {
                                close(e.parent);
                                close(e.chan);
                                e.dead = true;
                            }
                        }
                        _ => {}
                    }
                }
                Ok(Received::Closed) | Err(_) => {
                    close(e.chan);
                    e.chan = -1;
                    if !e.goodbye {
                        // Nobody can stop this child any more: stop it.
                        e.orphaned = true;
                        signal_group(e.pid, libc::SIGKILL);
                    }
                    if e.pid <= 0 && (e.parent < 0 || e.goodbye) {
                        close(e.parent);
                        e.dead = true;
                    }
                    return;
                }
            }
        }
    }

    /// Reaps every child that has exited: what is left of its process group is killed first
    /// (its zombie still holds the group's id, so the id cannot name anyone else), then its
    /// owner is told the status.
    fn reap(&mut self) {
        let mut info = [0u8; 128];
        // SAFETY: reading signalfd_siginfo records into a buffer of the right size; the
        // descriptor is non-blocking.
        while unsafe { libc::read(self.sigchld, info.as_mut_ptr().cast(), info.len()) } > 0 {}
        loop {
            // SAFETY: all-zero is a valid siginfo_t; waitid fills it.
            let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid with a valid siginfo pointer; WNOWAIT leaves the child unreaped.
            let ret = unsafe {
                libc::waitid(
                    libc::P_ALL,
                    0,
                    &mut si,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            // SAFETY: si_pid is valid for SIGCHLD siginfo, and 0 when nothing was found.
            let pid = unsafe { si.si_pid() };
            if ret != 0 || pid <= 0 {
                return;
            }
            let index = self.entries.as_slice().iter().position(|e| e.pid == pid);
            if index.is_some() {
                signal_group(pid, libc::SIGKILL);
            }
            let mut status: libc::c_int = 0;
            // SAFETY: reaping a child that waitid reported as exited.
            let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if reaped != pid {
                return;
            }
            if let Some(e) = index.and_then(|i| self.entries.as_mut_slice().get_mut(i)) {
                e.pid = 0;
                if e.chan >= 0 && !e.goodbye {
                    send(e.chan, Msg::new(wire::EXITED, status, 0));
                } else {
                    close(e.chan);
                    e.chan = -1;
                    e.dead = true;
                }
            }
        }
    }
}
