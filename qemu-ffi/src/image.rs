//! Disk image operations (`qemu-img`), for C.

use std::ffi::{c_char, c_void};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

use qemu_cmdline::{Format, Size};
use qemu_process::image::{self, StreamProgress};

use crate::args::{opt_str_arg, out_arg, path_arg, set_string, str_arg};
use crate::config::dup_fd;
use crate::error::{guard, FfiError};
use crate::status::QmStatus;

/// A progress callback: `fraction` goes from 0.0 to 1.0 (reached when the operation succeeds)
/// and never decreases; `user_data` is the pointer given with the callback. It is called on the
/// thread that called the library, during that call, never after it returned.
pub type QmProgressFn = Option<unsafe extern "C" fn(fraction: f64, user_data: *mut c_void)>;

/// A stream flash's progress callback: `bytes_read` is how much has been read from the stream
/// (it grows; the stream's length is not known), `converted` how much of the conversion into
/// the target's format is done once the stream has been read: 0.0 before, 1.0 when the flash
/// succeeded (also when nothing needed converting). Neither decreases. `user_data` is the
/// pointer given with the callback. It is called on the thread that called the library, during
/// that call, never after it returned.
pub type QmStreamProgressFn =
    Option<unsafe extern "C" fn(bytes_read: u64, converted: f64, user_data: *mut c_void)>;

/// Turns [`StreamProgress`] reports into calls of a [`QmStreamProgressFn`].
pub(crate) struct StreamCallback {
    progress: QmStreamProgressFn,
    user_data: *mut c_void,
    read: u64,
    converted: f64,
}

impl StreamCallback {
    pub(crate) fn new(progress: QmStreamProgressFn, user_data: *mut c_void) -> StreamCallback {
        StreamCallback {
            progress,
            user_data,
            read: 0,
            converted: 0.0,
        }
    }

    fn call(&self) {
        if let Some(f) = self.progress {
            // SAFETY: the caller guarantees the callback may be called with `user_data`.
            unsafe { f(self.read, self.converted, self.user_data) }
        }
    }

    pub(crate) fn report(&mut self, p: StreamProgress) {
        match p {
            StreamProgress::Read(n) => self.read = n,
            StreamProgress::Converting(f) => self.converted = f.max(self.converted),
        }
        self.call();
    }

    /// The flash succeeded: `converted` reaches 1.0.
    pub(crate) fn done(&mut self) {
        if self.converted < 1.0 {
            self.converted = 1.0;
            self.call();
        }
    }
}

fn target_format(target: &std::path::Path, format: Option<&str>) -> Result<Format, FfiError> {
    match format {
        Some(f) => format_arg(f),
        None if target.exists() => Ok(image::info(target)?.format),
        None => Ok(Format::Raw),
    }
}

pub(crate) fn format_arg(text: &str) -> Result<Format, FfiError> {
    text.parse()
        .map_err(|e| FfiError::invalid(format!("argument `format`: {e}")))
}

/// Describes the image at `path` (any bytes; `qemu-img info`) as a JSON object with `filename`,
/// `format`, `virtual-size`, `actual-size`, `dirty-flag`, `backing-filename`, `snapshots`,
/// `backing-chain`, ... in `*out_json` (free with `qm_string_free()`). A missing file is
/// `QM_STATUS_INVALID_ARGUMENT` naming it; `QM_STATUS_IMAGE` when qemu-img fails (the message
/// holds its command line and output).
///
/// # Safety
/// `path` must be NULL or NUL-terminated; `out_json` NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn qm_image_info(
    path: *const c_char,
    out_json: *mut *mut c_char,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_arg(out_json, "out_json") }?;
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { path_arg(path, "path") }?;
        let info = image::info(&path)?;
        let text = serde_json::to_vec(&info)
            .map_err(|e| FfiError::new(QmStatus::Io, format!("encoding image info: {e}")))?;
        set_string(out, &text)
    })
}

/// Creates an image of `format` (`"qcow2"`, `"raw"`, ...; UTF-8, an unknown name is
/// `QM_STATUS_INVALID_ARGUMENT`) and `size_bytes` at `path` (any bytes).
///
/// # Safety
/// `path` and `format` must be NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_image_create(
    path: *const c_char,
    format: *const c_char,
    size_bytes: u64,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { path_arg(path, "path") }?;
        // SAFETY: forwarded from this function's contract.
        let format = format_arg(unsafe { str_arg(format, "format") }?)?;
        Ok(image::create(
            &path,
            &format,
            Size::bytes_exact(size_bytes),
        )?)
    })
}

/// Resizes the image at `path` (any bytes) to `size_bytes`. Shrinking (which loses data) happens
/// only when `allow_shrink` is true (else `QM_STATUS_INVALID_ARGUMENT`); growing past the free
/// space of its file system is refused (`QM_STATUS_IMAGE`).
///
/// # Safety
/// `path` must be NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qm_image_resize(
    path: *const c_char,
    size_bytes: u64,
    allow_shrink: bool,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { path_arg(path, "path") }?;
        image::resize(&path, Size::bytes_exact(size_bytes), allow_shrink)?;
        Ok(())
    })
}

/// Converts the image at `src` into a new image at `dst` (paths: any bytes) of `dst_format`,
/// calling `progress(fraction, user_data)` as it goes (`progress` may be NULL), on the calling
/// thread, before the call returns. `dst` is replaced only when the conversion succeeded: a
/// failed one leaves an existing `dst` as it was.
///
/// # Safety
/// `src`, `dst` and `dst_format` must be NULL or NUL-terminated; `progress`, if not NULL, must be
/// safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn qm_image_convert(
    src: *const c_char,
    dst: *const c_char,
    dst_format: *const c_char,
    progress: QmProgressFn,
    user_data: *mut c_void,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let src = unsafe { path_arg(src, "src") }?;
        // SAFETY: forwarded from this function's contract.
        let dst = unsafe { path_arg(dst, "dst") }?;
        // SAFETY: forwarded from this function's contract.
        let format = format_arg(unsafe { str_arg(dst_format, "dst_format") }?)?;
        image::convert(&src, &dst, &format, |fraction| {
            if let Some(f) = progress {
                // SAFETY: the caller guarantees the callback may be called with `user_data`.
                unsafe { f(fraction, user_data) }
            }
        })?;
        Ok(())
    })
}

/// Writes the image at `source` (any bytes; any format qemu-img reads, optionally gzip, xz,
/// bzip2 or zstd compressed, recognised by its content, not its name) into `target` (any bytes)
/// as `format` (UTF-8; NULL: an existing target's own format, else raw), replacing `target`
/// only when the flash succeeded, calling `progress(fraction, user_data)` as it goes (may be
/// NULL). The target's virtual size becomes the image's: grow it with `qm_image_resize()` if
/// needed. `QM_STATUS_INVALID_ARGUMENT` for a missing source; `QM_STATUS_IMAGE` when qemu-img
/// or the decompressor fails; a missing decompressor is `QM_STATUS_BINARY_NOT_FOUND` naming the
/// package to install.
///
/// # Safety
/// `source`, `target` and `format` must be NULL or NUL-terminated (`format` may be NULL);
/// `progress`, if not NULL, must be safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn qm_image_flash(
    source: *const c_char,
    target: *const c_char,
    format: *const c_char,
    progress: QmProgressFn,
    user_data: *mut c_void,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let source = unsafe { path_arg(source, "source") }?;
        // SAFETY: forwarded from this function's contract.
        let target = unsafe { path_arg(target, "target") }?;
        // SAFETY: forwarded from this function's contract.
        let format = target_format(&target, unsafe { opt_str_arg(format, "format") }?)?;
        image::flash(&source, &target, &format, |fraction| {
            if let Some(f) = progress {
                // SAFETY: the caller guarantees the callback may be called with `user_data`.
                unsafe { f(fraction, user_data) }
            }
        })?;
        Ok(())
    })
}

/// The caller's descriptor `fd`, duplicated, read as a stream.
pub(crate) fn stream_fd(fd: RawFd) -> Result<StreamFd, FfiError> {
    Ok(StreamFd(File::from(dup_fd(fd)?)))
}

/// A descriptor read front to back. One the caller made non-blocking (`O_NONBLOCK` belongs to
/// the open file, which the duplicate shares) is waited on with `poll(2)` when it has nothing
/// yet, as a blocking read would wait, instead of failing with `EAGAIN`.
pub(crate) struct StreamFd(File);

impl Read for StreamFd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd: self.0.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: `pfd` is one valid pollfd that lives through the call.
                    if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() != io::ErrorKind::Interrupted {
                            return Err(e);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// Like `qm_image_flash()`, from the stream open on `fd` (a pipe, a socket, standard input),
/// read once, front to back, until its end: a compressed stream is decompressed on the fly, a
/// raw image into a raw target written as it comes, anything else converted once read. The
/// descriptor is duplicated for the call and stays the caller's (not closed; reading moves its
/// offset). `progress(bytes_read, converted, user_data)` reports the bytes read, then the
/// conversion (see `qm_stream_progress_fn`; may be NULL). A non-blocking descriptor is waited
/// on until data or its end comes, like a blocking one. A descriptor that is not open is
/// `QM_STATUS_INVALID_ARGUMENT`; a read error `QM_STATUS_IO`.
///
/// # Safety
/// `target` and `format` must be NULL or NUL-terminated (`format` may be NULL); `progress`, if
/// not NULL, must be safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn qm_image_flash_fd(
    fd: RawFd,
    target: *const c_char,
    format: *const c_char,
    progress: QmStreamProgressFn,
    user_data: *mut c_void,
) -> QmStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let target = unsafe { path_arg(target, "target") }?;
        // SAFETY: forwarded from this function's contract.
        let format = target_format(&target, unsafe { opt_str_arg(format, "format") }?)?;
        let source = stream_fd(fd)?;
        let mut cb = StreamCallback::new(progress, user_data);
        image::flash_stream(source, &target, &format, |p| cb.report(p))?;
        cb.done();
        Ok(())
    })
}
