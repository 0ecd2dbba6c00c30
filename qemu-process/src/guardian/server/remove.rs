//! Removing a watched directory with everything in it, with plain system calls (no allocation),
//! bounded in depth.

use std::os::fd::RawFd;

use super::close;

/// Removes the directory `name` inside `parent` with everything in it. Bounded in depth (the
/// library's directories hold files and at most a few levels of directories).
pub(super) fn remove_dir(parent: RawFd, name: &[u8]) {
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
