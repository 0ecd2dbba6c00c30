//! Starting a child for the guardian: the spawn request's payload mapped into argv and
//! environment, `fork`, and the new child's setup up to `execve` (plain system calls only, as
//! everywhere in the guardian).

use std::os::fd::RawFd;

use super::{close, close_from, reset_signals, set_signal_mask};
use crate::guardian::wire;

/// Starts a child: `fds` is `[channel, payload, cwd, stdin, stdout, stderr, inherit...]`.
/// Returns its pid, or the errno and stage of the failure.
pub(super) fn spawn(
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
