//! The initramfs archive: the SVR4 "newc" cpio format, which the Linux kernel unpacks.
//!
//! The `cpio` crate encodes each entry (the 110-byte ASCII header, the name, the data, the
//! padding to 4 bytes) and the `TRAILER!!!` entry that ends the archive. This writer adds what
//! an initramfs needs on top: the kernel does not create missing parent directories, so every
//! parent directory is written before its first child; inode numbers are unique (the kernel
//! treats equal ones with `nlink > 1` as hard links); owner, group and mtime are 0, so that the
//! archive is reproducible; bad and duplicate paths are refused.
//!
//! Entries are written uncompressed: the kernel accepts that directly, and an uncompressed
//! archive costs nothing to build.

use std::collections::BTreeSet;
use std::io::{self, Write};

use cpio::newc::{self, ModeFileType};

/// Writes a newc archive entry by entry to `W`.
#[derive(Debug)]
pub(crate) struct NewcWriter<W: Write> {
    out: W,
    next_ino: u32,
    /// Directories already in the archive (paths without a leading `/`).
    dirs: BTreeSet<String>,
    /// All paths already in the archive, to refuse duplicates.
    names: BTreeSet<String>,
}

impl<W: Write> NewcWriter<W> {
    /// Starts an archive on `out`.
    pub(crate) fn new(out: W) -> Self {
        NewcWriter {
            out,
            next_ino: 1,
            dirs: BTreeSet::new(),
            names: BTreeSet::new(),
        }
    }

    /// Adds a directory (and any missing parents) with permission bits `perm`.
    pub(crate) fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        let path = normalize(path)?;
        if self.dirs.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        self.entry(&path, ModeFileType::Directory, perm, 2, (0, 0), &[])?;
        self.dirs.insert(path);
        Ok(())
    }

    /// Adds a regular file with permission bits `perm` and contents `data`.
    pub(crate) fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, ModeFileType::Regular, perm, 1, (0, 0), data)
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = normalize(path)?;
        if target.is_empty() {
            return Err(invalid(format!("symlink {path:?} has an empty target")));
        }
        self.parents(&path)?;
        let data = target.as_bytes();
        self.entry(&path, ModeFileType::Symlink, 0o777, 1, (0, 0), data)
    }

    /// Adds a character device node `major:minor` with permission bits `perm`.
    pub(crate) fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, ModeFileType::Char, perm, 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer (not flushed).
    pub(crate) fn finish(mut self) -> io::Result<W> {
        newc::trailer(&mut self.out)?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            let parent = &path[..end + pos];
            if !self.dirs.contains(parent) {
                let parent = parent.to_owned();
                self.entry(&parent, ModeFileType::Directory, 0o755, 2, (0, 0), &[])?;
                self.dirs.insert(parent);
            }
            end += pos + 1;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        path: &str,
        kind: ModeFileType,
        perm: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            invalid(format!(
                "{path:?} is larger than 4 GiB, which newc cannot hold"
            ))
        })?;
        if !self.names.insert(path.to_owned()) {
            return Err(invalid(format!("{path:?} is already in the archive")));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        // uid, gid and mtime stay 0 (the builder's defaults): a reproducible archive.
        let mut entry = newc::Builder::new(path)
            .ino(ino)
            .mode(perm & 0o7777)
            .set_mode_file_type(kind)
            .nlink(nlink)
            .rdev_major(rdev_major)
            .rdev_minor(rdev_minor)
            .write(&mut self.out, size);
        entry.write_all(data)?;
        entry.finish()?;
        Ok(())
    }
}

/// Strips leading `/`, refuses empty paths, `.`/`..` components, doubled slashes and NULs.
fn normalize(path: &str) -> io::Result<String> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty()
        || trimmed.contains('\0')
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid(format!("bad archive path {path:?}")));
    }
    Ok(trimmed.to_owned())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the checks below expect of the format, written down independently of the crate.
    /// File type bits of `st_mode`.
    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFLNK: u32 = 0o120_000;
    const S_IFCHR: u32 = 0o020_000;
    /// The magic at the start of every newc header (no checksum variant).
    const MAGIC: &[u8; 6] = b"070701";
    /// The name of the entry that ends an archive.
    const TRAILER: &str = "TRAILER!!!";
    /// Size of a newc header in bytes.
    const HEADER_LEN: usize = 110;

    /// One entry as read back from an archive.
    #[derive(Debug, PartialEq)]
    struct Entry {
        name: String,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
        /// Offset of the header in the archive.
        offset: usize,
    }

    /// An independent reader: parses an archive the way the kernel's `init/initramfs.c` does,
    /// checking magic, alignment of every header and data block, and the trailer.
    fn parse(archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut pos = 0;
        loop {
            assert_eq!(pos % 4, 0, "header at {pos} is not 4-byte aligned");
            let header = &archive[pos..pos + HEADER_LEN];
            assert_eq!(&header[..6], MAGIC, "bad magic at {pos}");
            let field = |i: usize| {
                let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(text, 16).unwrap()
            };
            let namesize = field(11) as usize;
            let filesize = field(6) as usize;
            let name_start = pos + HEADER_LEN;
            let name_bytes = &archive[name_start..name_start + namesize];
            assert_eq!(name_bytes.last(), Some(&0), "name not NUL-terminated");
            let name = std::str::from_utf8(&name_bytes[..namesize - 1])
                .unwrap()
                .to_owned();
            let data_start = (name_start + namesize).next_multiple_of(4);
            assert!(
                archive[name_start + namesize..data_start]
                    .iter()
                    .all(|&b| b == 0),
                "name padding is not zero"
            );
            let data = archive[data_start..data_start + filesize].to_vec();
            let next = (data_start + filesize).next_multiple_of(4);
            assert!(archive[data_start + filesize..next].iter().all(|&b| b == 0));
            entries.push(Entry {
                name: name.clone(),
                ino: field(0),
                mode: field(1),
                nlink: field(4),
                rdev: (field(9), field(10)),
                data,
                offset: pos,
            });
            pos = next;
            if name == TRAILER {
                assert_eq!(pos, archive.len(), "bytes after the trailer");
                return entries;
            }
        }
    }

    fn build(f: impl FnOnce(&mut NewcWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        f(&mut w);
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_every_entry_type() {
        let archive = build(|w| {
            w.dir("/etc", 0o755).unwrap();
            w.file("init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
            w.file("etc/a", 0o644, b"").unwrap();
            w.file("etc/bb", 0o600, b"1").unwrap();
            w.file("etc/ccc", 0o644, b"12").unwrap();
            w.file("etc/dddd", 0o644, b"123").unwrap();
            w.symlink("bin/sh", "busybox").unwrap();
            w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        });
        assert_eq!(archive.len() % 4, 0);
        let entries = parse(&archive);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc",
                "init",
                "etc/a",
                "etc/bb",
                "etc/ccc",
                "etc/dddd",
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                TRAILER
            ]
        );
        let by_name = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(by_name("etc").mode, S_IFDIR | 0o755);
        assert_eq!(by_name("etc").nlink, 2);
        assert_eq!(by_name("init").mode, S_IFREG | 0o755);
        assert_eq!(by_name("init").data, b"#!/bin/sh\necho hi\n");
        assert_eq!(by_name("etc/bb").mode, S_IFREG | 0o600);
        assert_eq!(by_name("etc/dddd").data, b"123");
        assert_eq!(by_name("bin/sh").mode, S_IFLNK | 0o777);
        assert_eq!(by_name("bin/sh").data, b"busybox");
        assert_eq!(by_name("dev/console").mode, S_IFCHR | 0o600);
        assert_eq!(by_name("dev/console").rdev, (5, 1));
        // Inode numbers are unique (the kernel treats equal ones with nlink > 1 as hard links).
        let mut inos: Vec<u32> = entries
            .iter()
            .filter(|e| e.name != TRAILER)
            .map(|e| e.ino)
            .collect();
        inos.sort_unstable();
        inos.dedup();
        assert_eq!(inos.len(), entries.len() - 1);
    }

    #[test]
    fn trailer_is_last_and_alone_in_an_empty_archive() {
        let archive = build(|_| {});
        let entries = parse(&archive);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, TRAILER);
        assert_eq!(entries[0].mode, 0);
        assert_eq!(entries[0].nlink, 1);
        // 110-byte header + 11-byte name = 121, padded to 124.
        assert_eq!(archive.len(), 124);
        assert!(archive.starts_with(b"070701"));
    }

    #[test]
    fn headers_and_data_are_aligned_for_every_name_and_size() {
        // Name lengths 1..=8 and data lengths 0..=8 cover every padding remainder.
        let archive = build(|w| {
            for n in 1..=8usize {
                for len in 0..=8usize {
                    let name = format!("d{n}/{}{len}", "x".repeat(n));
                    w.file(&name, 0o644, &vec![b'a' + len as u8; len]).unwrap();
                }
            }
        });
        let entries = parse(&archive);
        for e in &entries {
            assert_eq!(e.offset % 4, 0, "{}", e.name);
            if let Some(len) = e
                .name
                .rsplit('x')
                .next()
                .and_then(|s| s.parse::<usize>().ok())
            {
                assert_eq!(e.data.len(), len, "{}", e.name);
            }
        }
        assert_eq!(entries.last().unwrap().name, TRAILER);
    }

    #[test]
    fn parent_directories_come_before_children_once() {
        let archive = build(|w| {
            w.file("lib/modules/6.1/kernel/a.ko", 0o644, b"a").unwrap();
            w.file("lib/modules/6.1/kernel/b.ko", 0o644, b"b").unwrap();
            w.dir("lib/modules", 0o755).unwrap();
        });
        let names: Vec<String> = parse(&archive).into_iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/a.ko",
                "lib/modules/6.1/kernel/b.ko",
                TRAILER
            ]
        );
    }

    #[test]
    fn bad_paths_and_duplicates_are_refused() {
        let mut w = NewcWriter::new(Vec::new());
        for bad in ["", "/", "a/../b", "./a", "a//b", "a\0b"] {
            let err = w.file(bad, 0o644, b"").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("bad archive path"), "{err}");
        }
        w.file("a", 0o644, b"").unwrap();
        let err = w.file("/a", 0o644, b"").unwrap_err();
        assert!(err.to_string().contains("already in the archive"), "{err}");
        let err = w.symlink("b", "").unwrap_err();
        assert!(err.to_string().contains("empty target"), "{err}");
    }

    #[test]
    fn write_errors_are_returned() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = NewcWriter::new(Full);
        assert_eq!(
            w.file("a", 0o644, b"x").unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
    }
}
