//! The helper processes (qemu-img, the decompressors): spawned through the guardian, stdout
//! read in the calling thread, stderr kept for the error.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitStatus;

use qemu_cmdline::Argv;

use crate::error::Error;
use crate::spawn::{find_executable, ChildProc};
use crate::sys;

use super::temp::TempPath;

/// Bytes read from a child's stdout per call.
const CHUNK: usize = 256 * 1024;

/// A helper (qemu-img, a decompressor) spawned through the process guardian (so that the
/// program's own `SIGCHLD` handling cannot take its exit status, and it dies with this process),
/// with stdout piped to us and stderr into an anonymous temp file; stdin as given (`None`:
/// `/dev/null`). Umask 077: what it creates is owner-only.
pub(super) struct RunningChild {
    child: ChildProc,
    stdout: Option<File>,
    argv: Vec<OsString>,
    stderr: File,
}

impl RunningChild {
    pub(super) fn spawn(
        argv: &Argv,
        stdin: Option<File>,
        missing: impl FnOnce() -> Error,
    ) -> Result<RunningChild, Error> {
        let Some(program) = find_executable(Path::new(&argv.program)) else {
            return Err(missing());
        };
        let stderr = anonymous_file()?;
        let (read, write) = sys::pipe_cloexec().map_err(Error::io_with("creating a pipe"))?;
        let stdin = match stdin {
            Some(f) => f,
            None => File::open("/dev/null").map_err(Error::io_with("opening /dev/null"))?,
        };
        let mut full = vec![program.into_os_string()];
        full.extend(argv.args.iter().cloned());
        log::debug!("running {argv}");
        let child =
            ChildProc::spawn_with_stdio(&full, stdin.as_fd(), write.as_fd(), stderr.as_fd())
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => missing(),
                    _ => Error::io(format!("running {}", Path::new(&argv.program).display()), e),
                })?;
        Ok(RunningChild {
            child,
            stdout: Some(File::from(read)),
            argv: argv.to_vec(),
            stderr,
        })
    }

    /// Reads stdout to its end, in this thread, handing each chunk to `f`.
    pub(super) fn read_stdout(&mut self, mut f: impl FnMut(&[u8])) -> Result<(), Error> {
        let Some(mut out) = self.stdout.take() else {
            return Ok(());
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            match out.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => f(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("reading the output of {}", self.program()),
                        e,
                    ))
                }
            }
        }
    }

    pub(super) fn program(&self) -> String {
        Path::new(&self.argv[0]).display().to_string()
    }

    /// Waits for the exit; returns the status and stderr.
    pub(super) fn wait(&mut self) -> Result<(ExitStatus, String), Error> {
        drop(self.stdout.take());
        let status = self
            .child
            .wait()
            .map_err(Error::io_with(format!("waiting for {}", self.program())))?;
        let mut text = Vec::new();
        let _ = self.stderr.seek(SeekFrom::Start(0));
        let _ = (&self.stderr).take(64 * 1024).read_to_end(&mut text);
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    }

    /// Waits; a non-zero exit is [`Error::Image`].
    pub(super) fn finish(mut self) -> Result<(), Error> {
        let (status, stderr) = self.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Image {
                argv: std::mem::take(&mut self.argv),
                status,
                stderr,
            })
        }
    }
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        if self.child.status().is_none() {
            // An error path left it running: never leave an orphan writer behind.
            let _ = self.child.kill_and_reap(std::time::Duration::from_secs(10));
        }
    }
}

/// A file with no name (O_TMPFILE), or a named one unlinked at once where O_TMPFILE is missing.
pub(crate) fn anonymous_file() -> Result<File, Error> {
    let dir = std::env::temp_dir();
    match File::options()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir)
    {
        Ok(f) => Ok(f),
        Err(_) => {
            let temp = TempPath::in_dir(&dir, OsStr::new("qemu-machine-stderr"))?;
            let f = temp.file()?;
            drop(temp);
            Ok(f)
        }
    }
}
