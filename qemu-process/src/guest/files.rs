//! Files in the guest: `guest-file-*`, and whole-file copies in both directions.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::*;

impl Guest<'_> {
    /// Opens a file in the guest with an `fopen()` mode (`"r"`, `"w"`, `"a"`, `"r+"`, ...) and
    /// returns the agent's handle for it. Close it with [`file_close`](Guest::file_close).
    pub fn file_open(&mut self, path: &str, mode: &str) -> Result<i64, Error> {
        self.command(&GuestFileOpen {
            path: path.to_owned(),
            mode: Some(mode.to_owned()),
        })
    }

    /// Reads up to `count` bytes (at most 48 MiB, the agent's bound, and within the message
    /// bound once encoded) from an open file; the second value says whether the end of the
    /// file was reached.
    pub fn file_read(&mut self, handle: i64, count: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut out = Vec::new();
        let eof = self.file_read_into(handle, count, &mut out)?;
        Ok((out, eof))
    }

    fn file_read_into(
        &mut self,
        handle: i64,
        count: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let read = self.command(&GuestFileRead {
            handle,
            count: Some(count as u64),
        })?;
        let before = out.len();
        decode_base64_into(&read.buf_b64, out)
            .map_err(|e| reply_shape_error(GuestFileRead::NAME, format!("buf-b64: {e}")))?;
        let got = (out.len() - before) as u64;
        if got != read.count || got > count as u64 {
            return Err(reply_shape_error(
                GuestFileRead::NAME,
                format!(
                    "the agent said it read {} bytes, sent {got}, and was asked for at most \
                     {count}",
                    read.count
                ),
            ));
        }
        Ok(read.eof)
    }

    /// Writes `data` to an open file (all of it: a short write is continued) and returns how
    /// many bytes were written.
    pub fn file_write(&mut self, handle: i64, data: &[u8]) -> Result<u64, Error> {
        let mut written = 0usize;
        while written < data.len() {
            let rest = &data[written..];
            let wrote = self.command(&GuestFileWrite {
                handle,
                buf_b64: encode_base64(rest),
                count: None,
            })?;
            if wrote.count == 0 || wrote.count > rest.len() as u64 {
                return Err(reply_shape_error(
                    GuestFileWrite::NAME,
                    format!(
                        "the agent wrote {} of {} bytes (a full file system?)",
                        wrote.count,
                        rest.len()
                    ),
                ));
            }
            written += wrote.count as usize;
        }
        Ok(written as u64)
    }

    /// Flushes an open file's buffered writes.
    pub fn file_flush(&mut self, handle: i64) -> Result<(), Error> {
        self.command(&GuestFileFlush { handle }).map(|_| ())
    }

    /// Closes an open file.
    pub fn file_close(&mut self, handle: i64) -> Result<(), Error> {
        self.command(&GuestFileClose { handle }).map(|_| ())
    }

    /// The bytes one chunk of a copy carries: [`COPY_CHUNK`], or less when base64 of a chunk
    /// (plus the reply's framing) would not fit in the message bound.
    fn chunk(&mut self) -> Result<usize, Error> {
        let bound = self.host.guest_channel()?.max_message_size();
        Ok(COPY_CHUNK.min(bound.saturating_sub(1024) / 4 * 3).max(1))
    }

    /// After a failed copy, closes its handle if the stream is still in step (after a timeout
    /// or a lost agent the handle stays open in the agent until it restarts).
    fn close_after_error(&mut self, handle: i64) {
        let in_step = self
            .host
            .guest_channel()
            .map(|c| c.sync == SyncState::Synced && c.usable())
            .unwrap_or(false);
        if in_step {
            if let Err(e) = self.file_close(handle) {
                log::debug!("guest agent: closing handle {handle} after a failed copy: {e}");
            }
        }
    }

    /// Copies everything `from` yields into the file `guest_path` in the guest (created, or
    /// truncated), in chunks of [`COPY_CHUNK`] bytes (each one call, under the guest timeout),
    /// and returns the number of bytes copied. Memory stays at a few chunks whatever the size.
    /// The file's permissions are the agent's choice (qemu-ga: 0666 less its umask, or 0600
    /// in newer versions).
    pub fn copy_in(&mut self, from: &mut dyn Read, guest_path: &str) -> Result<u64, Error> {
        let chunk = self.chunk()?;
        let handle = self.file_open(guest_path, "w")?;
        let mut buf = vec![0u8; chunk];
        let mut total = 0u64;
        let result = loop {
            let n = match read_full(from, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    break Err(Error::io(
                        format!("reading what to copy to {guest_path} in the guest"),
                        e,
                    ))
                }
            };
            if n == 0 {
                break Ok(());
            }
            if let Err(e) = self.file_write(handle, &buf[..n]) {
                break Err(e);
            }
            total += n as u64;
        };
        match result {
            Ok(()) => {
                self.file_close(handle)?;
                Ok(total)
            }
            Err(e) => {
                self.close_after_error(handle);
                Err(e)
            }
        }
    }

    /// [`copy_in`](Guest::copy_in) from the host file `host_path`.
    pub fn copy_in_file(&mut self, host_path: &Path, guest_path: &str) -> Result<u64, Error> {
        let mut file = File::open(host_path)
            .map_err(Error::io_with(format!("opening {}", host_path.display())))?;
        self.copy_in(&mut file, guest_path)
    }

    /// Copies the file `guest_path` in the guest into `to`, in chunks of [`COPY_CHUNK`] bytes
    /// (each one call, under the guest timeout), and returns the number of bytes copied.
    /// Memory stays at a few chunks whatever the size.
    pub fn copy_out(&mut self, guest_path: &str, to: &mut dyn Write) -> Result<u64, Error> {
        let chunk = self.chunk()?;
        let handle = self.file_open(guest_path, "r")?;
        let mut buf = Vec::with_capacity(chunk);
        let mut total = 0u64;
        let result = loop {
            buf.clear();
            let eof = match self.file_read_into(handle, chunk, &mut buf) {
                Ok(eof) => eof,
                Err(e) => break Err(e),
            };
            if let Err(e) = to.write_all(&buf) {
                break Err(Error::io(
                    format!("writing what was copied from {guest_path} in the guest"),
                    e,
                ));
            }
            total += buf.len() as u64;
            if eof || buf.is_empty() {
                break Ok(());
            }
        };
        match result {
            Ok(()) => {
                self.file_close(handle)?;
                Ok(total)
            }
            Err(e) => {
                self.close_after_error(handle);
                Err(e)
            }
        }
    }

    /// [`copy_out`](Guest::copy_out) into the host file `host_path`, created (mode 0600) or
    /// truncated. The file is flushed to the kernel (not synced to disk) before this returns.
    pub fn copy_out_file(&mut self, guest_path: &str, host_path: &Path) -> Result<u64, Error> {
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(host_path)
            .map_err(Error::io_with(format!("creating {}", host_path.display())))?;
        let mut out = std::io::BufWriter::with_capacity(COPY_CHUNK, file);
        let n = self.copy_out(guest_path, &mut out)?;
        out.flush()
            .map_err(Error::io_with(format!("writing {}", host_path.display())))?;
        Ok(n)
    }
}

/// Reads until `buf` is full or the end of `from`; returns how many bytes were read.
fn read_full(from: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match from.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
