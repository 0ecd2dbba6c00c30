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

/// Starts a child: `fds` is `[channel, payload, cwd, stdin, stdout, stderr, inherit...]`.
/// Returns its pid, or the errno and stage of the failure.
fn spawn(
    guardian: libc::pid_t,
    nofile: &libc::rlimit,
    umask: libc::mode_t,
    fds: &[RawFd],
) -> Result<libc::pid_t, (i32, i32)> {
    let invalid = (libc::EINVAL, wire::STAGE_REQUEST);
    let (Some(&payload), Some(&cwd), Some(stdio)) = (fds.get(1), fds.get(2), fds.get(3..6)) else {
        return Err(invalid);
    };
    let stdio = [stdio[0], stdio[1], stdio[2]];
    let inherit = fds.get(wire::SPAWN_FIXED_FDS..).unwrap_or(&[]);
    let args = Args::map(payload)?;
    let mut pipe = [-1 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err((wire::errno(), wire::STAGE_FORK));
    }
    // A plain clone: like fork(2), but without running the owner's pthread_atfork handlers,
    // which are not ours to run.
    // SAFETY: clone with only an exit signal and no new stack behaves as fork; the child only
    // makes system calls (see `child`) and then execs or _exits.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid == 0 {
        child(guardian, nofile, umask, cwd, stdio, inherit, &args, pipe[1]);
    }
    close(pipe[1]);
    if pid < 0 {
        let errno = wire::errno();
        close(pipe[0]);
        return Err((errno, wire::STAGE_FORK));
    }
    let pid = pid as libc::pid_t;
    // SAFETY: setpgid on our child (the child does it too; whichever runs first wins).
    unsafe { libc::setpgid(pid, pid) };
    let mut report = [0u8; 8];
    let n = loop {
        // SAFETY: reading into a local buffer of the given length.
        let n = unsafe { libc::read(pipe[0], report.as_mut_ptr().cast(), report.len()) };
        if n >= 0 || wire::errno() != libc::EINTR {
            break n;
        }
    };
    close(pipe[0]);
    drop(args);
    if n == 0 {
        return Ok(pid); // the pipe closed on exec
    }
    // SAFETY: reaping our child, which exits right after reporting.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    if n == 8 {
        let stage = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        Err((errno, stage))
    } else {
        Err((libc::EIO, wire::STAGE_EXEC))
    }
}

/// The argv and environment of a spawn, as NULL-terminated pointer arrays into the mapped
/// payload.
struct Args {
    map: *mut libc::c_void,
    map_len: usize,
    ptrs: *mut *const libc::c_char,
    ptrs_len: usize,
    argc: usize,
}

impl Args {
    fn map(payload: RawFd) -> Result<Args, (i32, i32)> {
        let invalid = (libc::EINVAL, wire::STAGE_REQUEST);
        // SAFETY: all-zero is a valid stat; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is writable.
        if unsafe { libc::fstat(payload, &mut st) } != 0 {
            return Err((wire::errno(), wire::STAGE_REQUEST));
        }
        let len = usize::try_from(st.st_size).map_err(|_| invalid)?;
        if !(8..=(256 << 20)).contains(&len) {
            return Err(invalid);
        }
        // SAFETY: mapping a file read-only and private; the memory is ours until munmap.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                payload,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err((wire::errno(), wire::STAGE_REQUEST));
        }
        // SAFETY: the mapping is `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) };
        let mut args = Args {
            map,
            map_len: len,
            ptrs: std::ptr::null_mut(),
            ptrs_len: 0,
            argc: 0,
        };
        let word = |i: usize| -> Option<usize> {
            let b = bytes.get(i..i + 4)?;
            Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (Some(argc), Some(envc)) = (word(0), word(4)) else {
            return Err(invalid);
        };
        if argc == 0 || argc > (1 << 20) || envc > (1 << 20) {
            return Err(invalid);
        }
        // argv, NULL, envp, NULL
        let count = argc + envc + 2;
        let ptrs_len = count * std::mem::size_of::<*const libc::c_char>();
        // SAFETY: an anonymous private mapping.
        let ptrs = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ptrs_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptrs == libc::MAP_FAILED {
            return Err((wire::errno(), wire::STAGE_REQUEST));
        }
        args.ptrs = ptrs.cast();
        args.ptrs_len = ptrs_len;
        args.argc = argc;
        // SAFETY: the pointer mapping holds `count` pointers.
        let slots = unsafe { std::slice::from_raw_parts_mut(args.ptrs, count) };
        let mut at = 8usize;
        let mut slot = 0usize;
        for k in 0..argc + envc {
            let rest = bytes.get(at..).ok_or(invalid)?;
            let end = rest.iter().position(|&b| b == 0).ok_or(invalid)?;
            if k == argc {
                slot += 1; // leave argv's NULL
            }
            let p = slots.get_mut(slot).ok_or(invalid)?;
            *p = rest.as_ptr().cast();
            slot += 1;
            at += end + 1;
        }
        // The two NULL terminators are zero already (fresh anonymous memory).
        Ok(args)
    }

    fn argv(&self) -> *const *const libc::c_char {
        self.ptrs
    }

    fn envp(&self) -> *const *const libc::c_char {
        // SAFETY: argc + 1 <= the number of slots.
        unsafe { self.ptrs.add(self.argc + 1) }
    }
}

impl Drop for Args {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mappings (munmap of a null/empty range fails harmlessly).
        unsafe {
            if !self.ptrs.is_null() {
                libc::munmap(self.ptrs.cast(), self.ptrs_len);
            }
            libc::munmap(self.map, self.map_len);
        }
    }
}

/// Reports `[stage, errno]` on the pipe and exits 127 (in the new child, before exec).
fn fail(report: RawFd, stage: i32) -> ! {
    let errno = wire::errno();
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&stage.to_ne_bytes());
    out[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writing a local buffer to the report pipe, then leaving without running any exit
    // handler.
    unsafe {
        libc::write(report, out.as_ptr().cast(), out.len());
        libc::_exit(127)
    }
}

/// In the new child: set everything up and exec; on failure report `[stage, errno]` on the
/// pipe and exit 127.
#[allow(clippy::too_many_arguments)]
fn child(
    guardian: libc::pid_t,
    nofile: &libc::rlimit,
    umask: libc::mode_t,
    cwd: RawFd,
    stdio: [RawFd; 3],
    inherit: &[RawFd],
    args: &Args,
    report: RawFd,
) -> ! {
    reset_signals();
    set_signal_mask(false);
    // SAFETY: the calls below change only this new process's own attributes and descriptors.
    unsafe {
        libc::setpgid(0, 0);
        // Tied to the guardian, which has one thread and lives as long as the owner process.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        if libc::getppid() != guardian {
            libc::_exit(127); // the guardian is already gone
        }
        libc::umask(umask);
        if libc::fchdir(cwd) != 0 {
            fail(report, wire::STAGE_SETUP);
        }
        // Descriptors: first every source above the targets, then onto the targets:
        // 0, 1 and 2 the standard streams given, 3.. the inherited ones in order.
        let n = inherit.len() as RawFd;
        let floor = 3 + n + 1;
        let high = |fd: RawFd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor);
        let mut std_h = [-1 as RawFd; 3];
        for (slot, &fd) in std_h.iter_mut().zip(&stdio) {
            *slot = high(fd);
            if *slot < 0 {
                fail(report, wire::STAGE_SETUP);
            }
        }
        let mut moved = [-1 as RawFd; wire::MAX_FDS];
        for (slot, &fd) in moved.iter_mut().zip(inherit) {
            *slot = high(fd);
            if *slot < 0 {
                fail(report, wire::STAGE_SETUP);
            }
        }
        // The report pipe too: its number may be one of the targets.
        let report = high(report);
        if report < 0 {
            libc::_exit(127);
        }
        for (target, &fd) in std_h.iter().enumerate() {
            if libc::dup2(fd, target as RawFd) < 0 {
                fail(report, wire::STAGE_SETUP);
            }
        }
        for (i, &fd) in moved.iter().take(inherit.len()).enumerate() {
            if libc::dup2(fd, 3 + i as RawFd) < 0 {
                fail(report, wire::STAGE_SETUP);
            }
        }
        // Everything else closes at exec (the report pipe must stay open until then).
        close_from(3 + n, true);
        libc::setrlimit(libc::RLIMIT_NOFILE, nofile);
        libc::execve(*args.argv(), args.argv(), args.envp());
        fail(report, wire::STAGE_EXEC)
    }
}

/// Removes the directory `name` inside `parent` with everything in it. Bounded in depth (the
/// library's directories hold files and at most a few levels of directories).
fn remove_dir(parent: RawFd, name: &[u8]) {
    if name.first().is_none_or(|&b| b == 0) {
        return;
    }
    remove_tree(parent, name.as_ptr().cast(), 0);
    // SAFETY: `name` is NUL-terminated (the entry's buffer is one longer than any name).
    unsafe { libc::unlinkat(parent, name.as_ptr().cast(), libc::AT_REMOVEDIR) };
}

/// Removes everything inside the directory `name` (NUL-terminated) of `parent`.
fn remove_tree(parent: RawFd, name: *const libc::c_char, depth: u32) {
    if depth > 16 {
        return;
    }
    // SAFETY: `name` is a NUL-terminated name; openat with O_NOFOLLOW never follows a link
    // planted in place of the directory.
    let dir = unsafe {
        libc::openat(
            parent,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes of dirent64 records.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir,
                buf.as_mut_ptr(),
                buf.len() as libc::c_uint,
            )
        };
        if n <= 0 {
            break;
        }
        let n = n as usize;
        let mut at = 0usize;
        let mut progress = false;
        // dirent64: u64 ino, i64 off, u16 reclen, u8 type, then the NUL-terminated name.
        while at + 19 < n {
            let reclen = match buf.get(at + 16..at + 18) {
                Some(b) => u16::from_ne_bytes([b[0], b[1]]) as usize,
                None => break,
            };
            if reclen == 0 || at + reclen > n {
                break;
            }
            let kind = buf.get(at + 18).copied().unwrap_or(0);
            let name_at = at + 19;
            let name_bytes = buf.get(name_at..at + reclen).unwrap_or(&[]);
            let dot = name_bytes.first() == Some(&b'.')
                && (name_bytes.get(1) == Some(&0)
                    || (name_bytes.get(1) == Some(&b'.') && name_bytes.get(2) == Some(&0)));
            if !dot && name_bytes.contains(&0) {
                // SAFETY: the name is NUL-terminated inside `buf`.
                let ptr = unsafe { buf.as_ptr().add(name_at) }.cast::<libc::c_char>();
                // SAFETY: `ptr` is a NUL-terminated name in `buf`, `dir` our descriptor.
                let gone = unsafe {
                    if kind != libc::DT_DIR && libc::unlinkat(dir, ptr, 0) == 0 {
                        true
                    } else {
                        remove_tree(dir, ptr, depth + 1);
                        libc::unlinkat(dir, ptr, libc::AT_REMOVEDIR) == 0
                    }
                };
                progress |= gone;
            }
            at += reclen;
        }
        if progress {
            // Entries were removed while reading: start over from the beginning. (Without
            // progress, what is left cannot be removed: stop rather than loop.)
            // SAFETY: lseek on our own directory descriptor.
            unsafe { libc::lseek(dir, 0, libc::SEEK_SET) };
        }
    }
    close(dir);
}
