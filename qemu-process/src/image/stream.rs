//! Flashing from a stream (a pipe, standard input, a socket): the image is read once, front to
//! back, decompressed on the fly when compressed, and written (sparse) beside the target.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use qemu_cmdline::{Argv, Format};

use crate::error::Error;
use crate::spawn::find_executable;
use crate::sys;

use super::child::RunningChild;
use super::flash::{read_up_to, sniff_format, Compression, FlashReport, SparseWriter};
use super::temp::TempPath;
use super::QemuImg;

/// How far a [`QemuImg::flash_stream`] is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamProgress {
    /// This many bytes were read from the stream (its length is not known beforehand).
    Read(u64),
    /// The stream has been read; the image it held is being converted to the target's
    /// format: the fraction done, from 0.0 to 1.0 (never decreasing). Not reported when the
    /// stream was written as it is (raw into raw).
    Converting(f64),
}

/// Bytes read from the stream at a time.
const CHUNK: usize = 256 * 1024;

impl QemuImg {
    /// Writes the image read from `source` into `target` as `target_format`, replacing it when
    /// done, like [`flash`](QemuImg::flash) but from a stream read once, front to back: a
    /// pipe, standard input, a socket. A gzip, xz, bzip2 or zstd stream (recognised by its
    /// first bytes) is decompressed on the fly, through the decompressor, which this call
    /// feeds while it reads its output; a raw image into a raw target is written directly
    /// (sparse); any other format, or another target format, is converted by `qemu-img convert`
    /// once the stream has been read (from a temporary file beside the target). Progress is
    /// reported as the bytes read, then the conversion's fraction. On error the target is left
    /// as it was.
    pub fn flash_stream(
        &self,
        mut source: impl Read,
        target: &Path,
        target_format: &Format,
        mut progress: impl FnMut(StreamProgress),
    ) -> Result<FlashReport, Error> {
        if let Ok(m) = target.metadata() {
            if !m.is_file() {
                return Err(Error::Unsupported(format!(
                    "flashing {}: only regular files are written",
                    target.display()
                )));
            }
        }
        let mut head = [0u8; 8];
        let n = read_up_to(&mut source, &mut head)
            .map_err(Error::io_with("reading the flash stream"))?;
        let head = &head[..n];
        let compression = Compression::detect(head);
        let out = TempPath::beside(target)?;
        let mut writer = SparseWriter::new(out.file()?);
        let mut inner = None;
        let mut write_err = None;
        let mut sink = |chunk: &[u8]| {
            if write_err.is_some() || chunk.is_empty() {
                return;
            }
            if inner.is_none() {
                inner = Some(sniff_format(chunk));
            }
            if let Err(e) = writer.write(chunk) {
                write_err = Some(e);
            }
        };
        let mut read = n as u64;
        progress(StreamProgress::Read(read));
        match compression {
            None => {
                sink(head);
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let k = match source.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::io("reading the flash stream", e)),
                    };
                    sink(&buf[..k]);
                    read += k as u64;
                    progress(StreamProgress::Read(read));
                }
            }
            Some(c) => {
                self.decompress(c, head, &mut source, &mut sink, &mut |r| {
                    read = r;
                    progress(StreamProgress::Read(r));
                })?;
            }
        }
        let written = writer.finish();
        let written = match (write_err, written) {
            (Some(e), _) | (None, Err(e)) => {
                return Err(Error::io(format!("writing {}", out.path().display()), e))
            }
            (None, Ok(n)) => n,
        };
        let inner = inner.unwrap_or(Format::Raw);
        if inner == Format::Raw && *target_format == Format::Raw {
            out.persist(target)?;
            return Ok(FlashReport {
                compression,
                source_format: Format::Raw,
                virtual_size: written,
            });
        }
        // qemu-img's own probe of what was written (the sniffed guess only chose the path).
        let info = self.info(out.path())?;
        let mut last = 0.0;
        progress(StreamProgress::Converting(0.0));
        self.convert_known(out.path(), &info.format, target, target_format, |p| {
            if p > last {
                last = p;
                progress(StreamProgress::Converting(p));
            }
        })?;
        Ok(FlashReport {
            compression,
            source_format: info.format,
            virtual_size: info.virtual_size,
        })
    }

    /// Runs the decompressor of `compression` on `head` and the rest of `source`, handing its
    /// output to `sink`: one thread, feeding its input (a socket, so that a decompressor that
    /// gives up is an error, never SIGPIPE) while draining its output, with poll(2).
    fn decompress(
        &self,
        compression: Compression,
        head: &[u8],
        source: &mut impl Read,
        sink: &mut impl FnMut(&[u8]),
        read_so_far: &mut impl FnMut(u64),
    ) -> Result<(), Error> {
        let program = &self.decompressors[compression.index()];
        let missing = || Error::ProgramMissing {
            program: program.clone(),
            package: compression.package().into(),
            purpose: "to decompress the flash stream".into(),
        };
        let Some(program_path) = find_executable(program) else {
            return Err(missing());
        };
        let (ours, theirs) =
            sys::socketpair().map_err(Error::io_with("creating the decompressor's input"))?;
        let argv = Argv {
            program: program_path.into_os_string(),
            args: vec!["-dc".into()],
        };
        let mut child = RunningChild::spawn(&argv, Some(File::from(theirs)), missing)?;
        let output = child.take_stdout().expect("a new child's stdout is there");
        sys::set_nonblocking(output.as_raw_fd(), true)
            .map_err(Error::io_with("reading the decompressor's output"))?;

        let mut input = Some(ours);
        let mut pending: Vec<u8> = head.to_vec();
        let mut sent = 0;
        let mut read = head.len() as u64;
        let mut source_done = false;
        let mut buf = vec![0u8; CHUNK];
        loop {
            if sent == pending.len() && !source_done && input.is_some() {
                pending.clear();
                sent = 0;
                match source.read(&mut buf) {
                    Ok(0) => source_done = true,
                    Ok(k) => {
                        pending.extend_from_slice(&buf[..k]);
                        read += k as u64;
                        read_so_far(read);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("reading the flash stream", e)),
                }
            }
            if sent == pending.len() && source_done {
                // End of input: the decompressor sees end-of-file.
                input = None;
            }
            let want_write = input.is_some() && sent < pending.len();
            let (readable, writable) = poll2(output.as_fd(), input.as_ref().map(|i| i.as_fd()))
                .map_err(Error::io_with("waiting for the decompressor"))?;
            if readable {
                loop {
                    match (&output).read(&mut buf) {
                        Ok(0) => {
                            drop(input);
                            return child.finish();
                        }
                        Ok(k) => sink(&buf[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io("reading the decompressor's output", e)),
                    }
                }
            }
            if writable && want_write {
                if let Some(fd) = &input {
                    match sys::send(fd.as_fd(), &pending[sent..]) {
                        Ok(k) => sent += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            // The decompressor stopped reading (bad data): its exit status and
                            // message say why once its output ends.
                            input = None;
                            source_done = true;
                            sent = pending.len();
                        }
                    }
                }
            }
        }
    }
}

/// Waits for `output` to be readable (or closed) or `input` writable; returns which.
fn poll2(output: BorrowedFd<'_>, input: Option<BorrowedFd<'_>>) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: output.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: input.map_or(-1, |i| i.as_raw_fd()),
            events: libc::POLLOUT,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd structures for the duration of the
        // call; a negative fd is ignored by poll(2).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let readable = fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
    let writable = fds[1].revents & (libc::POLLOUT | libc::POLLHUP | libc::POLLERR) != 0;
    Ok((readable, writable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img() -> QemuImg {
        QemuImg::new()
    }

    fn compressed(program: &str, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(program)
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn data(len: usize) -> Vec<u8> {
        // Compressible, but not all zeros: every 4 KiB block differs.
        (0..len).map(|i| ((i / 4096) % 251) as u8).collect()
    }

    #[test]
    fn a_compressed_stream_larger_than_the_pipes_is_decompressed_on_the_fly() {
        let dir = crate::spawn::TempDir::new(&std::env::temp_dir()).unwrap();
        let target = dir.path().join("disk.raw");
        let raw = data(6 << 20);
        let gz = compressed("gzip", &raw);
        let mut seen = Vec::new();
        let report = img()
            .flash_stream(&gz[..], &target, &Format::Raw, |p| seen.push(p))
            .unwrap();
        assert_eq!(report.compression, Some(Compression::Gzip));
        assert_eq!(report.virtual_size, raw.len() as u64);
        assert!(std::fs::read(&target).unwrap() == raw);
        // Bytes read, growing to the whole stream; no conversion for raw into raw.
        assert_eq!(seen.last(), Some(&StreamProgress::Read(gz.len() as u64)));
        assert!(seen.windows(2).all(|w| match (w[0], w[1]) {
            (StreamProgress::Read(a), StreamProgress::Read(b)) => a <= b,
            _ => false,
        }));
    }

    #[test]
    fn a_raw_stream_into_qcow2_is_converted() {
        let dir = crate::spawn::TempDir::new(&std::env::temp_dir()).unwrap();
        let target = dir.path().join("disk.qcow2");
        let raw = data(1 << 20);
        let mut seen = Vec::new();
        let report = img()
            .flash_stream(&raw[..], &target, &Format::Qcow2, |p| seen.push(p))
            .unwrap();
        assert_eq!(report.compression, None);
        assert_eq!(report.source_format, Format::Raw);
        assert_eq!(img().info(&target).unwrap().format, Format::Qcow2);
        assert_eq!(seen.last(), Some(&StreamProgress::Converting(1.0)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_stream_is_the_decompressors_error_and_leaves_the_target() {
        let dir = crate::spawn::TempDir::new(&std::env::temp_dir()).unwrap();
        let target = dir.path().join("disk.raw");
        std::fs::write(&target, b"before").unwrap();
        let mut bad = compressed("xz", &data(4 << 20));
        let mid = bad.len() / 2;
        bad.truncate(mid);
        bad.extend(std::iter::repeat_n(0x55, 3 << 20));
        let err = img()
            .flash_stream(&bad[..], &target, &Format::Raw, |_| {})
            .unwrap_err();
        assert!(matches!(err, Error::Image { .. }), "{err:?}");
        assert!(err.to_string().contains("xz"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"before");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
