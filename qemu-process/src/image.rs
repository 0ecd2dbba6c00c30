//! Disk images: `qemu-img` info, create, resize, convert, check and internal snapshots, and
//! flashing an image (compressed or not, any format) into a disk and dumping one back.
//!
//! Every command line comes from `qemu-cmdline` (paths that look like options or protocol
//! prefixes are neutralised there), runs without a shell, and a failure is [`Error::Image`]
//! carrying the argv, the exit status and what qemu-img wrote to stderr. Files are written
//! next to their destination under a temporary name and renamed into place when complete, so a
//! failed conversion or flash leaves the destination as it was and nothing behind.
//!
//! Every file this module makes is owner-only (mode 0600): a created image, and the result of
//! a conversion, flash or dump, which replaces its destination (an existing destination's mode
//! is not kept). qemu-img and the decompressors run with umask 077.
//!
//! Progress of long operations (`qemu-img convert -p` prints `    (12.34/100%)\r` on stdout)
//! is read in the calling thread and reported to a callback as a fraction from 0.0 to 1.0,
//! never decreasing, ending with exactly 1.0 on success.
//!
//! ```no_run
//! use qemu_process::image;
//! use qemu_cmdline::{Format, Size};
//! use std::path::Path;
//!
//! image::create(Path::new("/tmp/disk.qcow2"), &Format::Qcow2, Size::gib(1))?;
//! let info = image::info(Path::new("/tmp/disk.qcow2"))?;
//! assert_eq!(info.virtual_size, 1 << 30);
//! image::flash(Path::new("debian.raw.xz"), Path::new("/tmp/disk.qcow2"), &Format::Qcow2,
//!              |f| println!("{:.0}%", f * 100.0))?;
//! # Ok::<(), qemu_process::Error>(())
//! ```

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use qemu_cmdline::{
    Argv, Format, ImgCheck, ImgCommand, ImgConvert, ImgCreate, ImgInfo, ImgResize, ImgSnapshot,
    Repair, Size, SnapshotAction,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::spawn::{find_executable, ChildProc};
use crate::sys;

/// What `qemu-img info --output=json` says about an image. Fields qemu-img adds in later
/// versions are ignored; fields older versions leave out are `None`/empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    /// The file name as qemu-img opened it.
    pub filename: String,
    /// The format.
    pub format: Format,
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
    /// The bytes the file takes on disk (absent for some protocols).
    #[serde(default)]
    pub actual_size: Option<u64>,
    /// The cluster size (qcow2, qed, vdi, vhdx, vmdk).
    #[serde(default)]
    pub cluster_size: Option<u64>,
    /// Whether the image was not closed cleanly (qcow2 lazy refcounts, qed).
    #[serde(default, rename = "dirty-flag")]
    pub dirty: bool,
    /// Whether the image is encrypted.
    #[serde(default)]
    pub encrypted: bool,
    /// The backing file as recorded in the image.
    #[serde(default)]
    pub backing_filename: Option<String>,
    /// The backing file's path, resolved relative to the image.
    #[serde(default)]
    pub full_backing_filename: Option<String>,
    /// The backing file's format as recorded in the image.
    #[serde(default)]
    pub backing_filename_format: Option<String>,
    /// Internal snapshots (qcow2).
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
    /// Format-specific details (`{"type": "qcow2", "data": {"compat": "1.1", ...}}`).
    #[serde(default)]
    pub format_specific: Option<serde_json::Value>,
    /// The images below this one, nearest first (filled by [`QemuImg::info`]; serialized, never
    /// read from qemu-img's output).
    #[serde(skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub backing_chain: Vec<ImageInfo>,
}

/// An internal snapshot of a qcow2 image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotInfo {
    /// The numeric id, as text.
    pub id: String,
    /// The name.
    pub name: String,
    /// The size of the saved VM state (0 for a disk-only snapshot).
    #[serde(default)]
    pub vm_state_size: u64,
    /// When it was taken: seconds since the epoch.
    #[serde(default)]
    pub date_sec: u64,
    /// When it was taken: nanoseconds.
    #[serde(default)]
    pub date_nsec: u64,
    /// The guest clock when it was taken: seconds.
    #[serde(default)]
    pub vm_clock_sec: u64,
    /// The guest clock when it was taken: nanoseconds.
    #[serde(default)]
    pub vm_clock_nsec: u64,
}

/// What `qemu-img check --output=json` found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckReport {
    /// The file name.
    #[serde(default)]
    pub filename: String,
    /// The format.
    #[serde(default)]
    pub format: String,
    /// Errors that stopped parts of the check.
    #[serde(default)]
    pub check_errors: u64,
    /// Corruptions found (and not repaired).
    #[serde(default)]
    pub corruptions: u64,
    /// Leaked clusters found (and not repaired): wasted space, no data lost.
    #[serde(default)]
    pub leaks: u64,
    /// Corruptions repaired.
    #[serde(default)]
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    #[serde(default)]
    pub leaks_fixed: u64,
    /// Clusters of the virtual disk.
    #[serde(default)]
    pub total_clusters: Option<u64>,
    /// Clusters allocated.
    #[serde(default)]
    pub allocated_clusters: Option<u64>,
    /// Where the image's data ends in the file.
    #[serde(default)]
    pub image_end_offset: Option<u64>,
}

impl CheckReport {
    /// No corruption, no leak, no check error.
    pub fn is_clean(&self) -> bool {
        self.check_errors == 0 && self.corruptions == 0 && self.leaks == 0
    }
}

/// A compression a flash source may use, recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// bzip2 (`BZh`).
    Bzip2,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// All of them.
    pub const ALL: [Compression; 4] = [
        Compression::Gzip,
        Compression::Xz,
        Compression::Bzip2,
        Compression::Zstd,
    ];

    /// Recognises a compressed stream by its first bytes (6 are enough).
    pub fn detect(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            Some(Compression::Bzip2)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// The program that decompresses it (`gzip -dc` reads stdin, writes stdout).
    pub fn program(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }

    /// The Debian/Ubuntu package with the program.
    pub fn package(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz-utils",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What [`QemuImg::flash`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashReport {
    /// The compression of the source, if any.
    pub compression: Option<Compression>,
    /// The format of the (decompressed) source.
    pub source_format: Format,
    /// The virtual size of the written image.
    pub virtual_size: u64,
}

/// Runs `qemu-img` and the decompressors: the programs to use, and every image operation.
/// [`QemuImg::default`] runs `qemu-img`, `gzip`, `xz`, `bzip2` and `zstd` from `PATH`; the
/// free functions of this module use it.
#[derive(Debug, Clone)]
pub struct QemuImg {
    program: PathBuf,
    decompressors: [PathBuf; 4],
}

impl Default for QemuImg {
    fn default() -> QemuImg {
        QemuImg {
            program: PathBuf::from("qemu-img"),
            decompressors: Compression::ALL.map(|c| PathBuf::from(c.program())),
        }
    }
}

/// Bytes read from a child's stdout per call.
const CHUNK: usize = 256 * 1024;
/// Sparse copies skip runs of zeros of this granularity.
const BLOCK: usize = 4096;

impl QemuImg {
    /// `qemu-img` and the decompressors from `PATH`.
    pub fn new() -> QemuImg {
        QemuImg::default()
    }

    /// The qemu-img to run (a path, or a name looked up in `PATH`).
    pub fn program(&mut self, program: impl Into<PathBuf>) -> &mut Self {
        self.program = program.into();
        self
    }

    /// The program that decompresses `compression` (it is run as `PROGRAM -dc`).
    pub fn decompressor(
        &mut self,
        compression: Compression,
        program: impl Into<PathBuf>,
    ) -> &mut Self {
        self.decompressors[compression.index()] = program.into();
        self
    }

    /// The qemu-img that is run.
    pub fn get_program(&self) -> &Path {
        &self.program
    }

    fn argv(&self, cmd: &impl ImgCommand) -> Result<Argv, Error> {
        Ok(cmd.build_with(&self.program)?)
    }

    fn missing_qemu_img(&self) -> Error {
        Error::ProgramMissing {
            program: self.program.clone(),
            package: "qemu-utils".into(),
            purpose: "to work with disk images".into(),
        }
    }

    /// Runs a qemu-img command to completion and returns its stdout.
    pub fn run(&self, cmd: &impl ImgCommand) -> Result<Vec<u8>, Error> {
        let argv = self.argv(cmd)?;
        let mut out = Vec::new();
        self.run_argv(&argv, |chunk| out.extend_from_slice(chunk))?;
        Ok(out)
    }

    fn run_argv(&self, argv: &Argv, on_stdout: impl FnMut(&[u8])) -> Result<(), Error> {
        let mut child = RunningChild::spawn(argv, None, || self.missing_qemu_img())?;
        child.read_stdout(on_stdout)?;
        child.finish()
    }

    /// `qemu-img info` of the image at `path`, probing its format, with its backing chain.
    pub fn info(&self, path: &Path) -> Result<ImageInfo, Error> {
        self.info_with(path, None, false)
    }

    /// `qemu-img info` with the format given (no probing) and, with `force_share`, on an image
    /// a running QEMU holds open (`-U`; the answer may be stale).
    pub fn info_with(
        &self,
        path: &Path,
        format: Option<&Format>,
        force_share: bool,
    ) -> Result<ImageInfo, Error> {
        exists(path, "image")?;
        let mut cmd = ImgInfo::new(path)
            .backing_chain(true)
            .force_share(force_share);
        if let Some(f) = format {
            cmd = cmd.format(f.clone());
        }
        let out = self.run(&cmd)?;
        parse_info(&out).map_err(|e| {
            Error::InvalidArgument(format!(
                "qemu-img info on {} printed JSON this library cannot read: {e}",
                path.display()
            ))
        })
    }

    /// Creates a new image of `format` and `size` at `path`. An existing file is an error (use
    /// [`QemuImg::resize`] or [`QemuImg::flash`] on it).
    pub fn create(&self, path: &Path, format: &Format, size: Size) -> Result<(), Error> {
        self.create_with(path, &ImgCreate::new(path, format.clone()).size(size))
    }

    /// Runs a prepared `qemu-img create` for `path` (backing files, options); an existing file
    /// at `path` is an error.
    pub fn create_with(&self, path: &Path, cmd: &ImgCreate) -> Result<(), Error> {
        if path.symlink_metadata().is_ok() {
            return Err(Error::InvalidArgument(format!(
                "{} already exists; an image is only created where there is no file",
                path.display()
            )));
        }
        let result = self.run(cmd).map(drop);
        if result.is_err() {
            // qemu-img may leave a partial file behind (an unknown option after the open).
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Sets the virtual size of the image at `path`. Growing is refused when it may need more
    /// than the free space of the file system ([`Error::NoSpace`]); shrinking is refused unless
    /// `allow_shrink` ([`Error::ShrinkRefused`]). The format is probed once and passed
    /// explicitly. Returns the image's info after the resize.
    pub fn resize(&self, path: &Path, size: Size, allow_shrink: bool) -> Result<ImageInfo, Error> {
        let info = self.info(path)?;
        let current = info.virtual_size;
        let requested = size.bytes();
        if requested == current {
            return Ok(info);
        }
        if requested < current && !allow_shrink {
            return Err(Error::ShrinkRefused {
                path: path.to_owned(),
                current,
                requested,
            });
        }
        if requested > current {
            let needed = requested - current;
            let available = free_space(path)?;
            if needed > available {
                return Err(Error::NoSpace {
                    path: path.to_owned(),
                    needed,
                    available,
                });
            }
        }
        let cmd = ImgResize::new(path, size)
            .format(info.format.clone())
            .shrink(requested < current);
        self.run(&cmd)?;
        self.info_with(path, Some(&info.format), false)
    }

    /// Converts `src` (format probed once) into a new image `dst` of `dst_format`, reporting
    /// progress. `dst` is replaced only when the conversion succeeded.
    pub fn convert(
        &self,
        src: &Path,
        dst: &Path,
        dst_format: &Format,
        progress: impl FnMut(f64),
    ) -> Result<(), Error> {
        let info = self.info(src)?;
        self.convert_known(src, &info.format, dst, dst_format, progress)
    }

    /// [`QemuImg::convert`] with the source format given (no probing).
    pub fn convert_known(
        &self,
        src: &Path,
        src_format: &Format,
        dst: &Path,
        dst_format: &Format,
        mut progress: impl FnMut(f64),
    ) -> Result<(), Error> {
        exists(src, "conversion source")?;
        let temp = TempPath::beside(dst)?;
        let cmd = ImgConvert::new(src, temp.path(), dst_format.clone())
            .src_format(src_format.clone())
            .progress(true);
        let argv = self.argv(&cmd)?;
        let mut parser = ProgressParser::default();
        let mut last = 0.0;
        self.run_argv(&argv, |chunk| {
            for p in parser.feed(chunk) {
                if p > last {
                    last = p;
                    progress(p);
                }
            }
        })?;
        temp.persist(dst)?;
        progress(1.0);
        Ok(())
    }

    /// Checks an image's consistency (qcow2, qed, vdi, vhdx, vmdk), repairing when asked. Formats
    /// without metadata (raw) are [`Error::Unsupported`].
    pub fn check(&self, path: &Path, repair: Option<Repair>) -> Result<CheckReport, Error> {
        let info = self.info(path)?;
        let mut cmd = ImgCheck::new(path).format(info.format.clone());
        if let Some(r) = repair {
            cmd = cmd.repair(r);
        }
        let argv = self.argv(&cmd)?;
        let mut child = RunningChild::spawn(&argv, None, || self.missing_qemu_img())?;
        let mut out = Vec::new();
        child.read_stdout(|c| out.extend_from_slice(c))?;
        let (status, stderr) = child.wait()?;
        // 0: clean, 2: corruptions, 3: leaks (the report says which); 63: not supported.
        match status.code() {
            Some(0 | 2 | 3) => serde_json::from_slice(&out).map_err(|e| {
                Error::InvalidArgument(format!(
                    "qemu-img check printed JSON this library cannot read: {e}"
                ))
            }),
            Some(63) => Err(Error::Unsupported(format!(
                "checking {} ({} images have no metadata to check)",
                path.display(),
                info.format
            ))),
            _ => Err(Error::Image {
                argv: argv.to_vec(),
                status,
                stderr,
            }),
        }
    }

    /// Creates internal snapshot `name` of a qcow2 image (not while a VM uses it).
    pub fn snapshot_create(&self, path: &Path, name: &str) -> Result<(), Error> {
        self.snapshot(path, SnapshotAction::Create(name.into()))
    }

    /// The internal snapshots of an image.
    pub fn snapshot_list(&self, path: &Path) -> Result<Vec<SnapshotInfo>, Error> {
        Ok(self.info(path)?.snapshots)
    }

    /// Reverts the image to internal snapshot `name`.
    pub fn snapshot_apply(&self, path: &Path, name: &str) -> Result<(), Error> {
        self.snapshot(path, SnapshotAction::Apply(name.into()))
    }

    /// Deletes internal snapshot `name`.
    pub fn snapshot_delete(&self, path: &Path, name: &str) -> Result<(), Error> {
        self.snapshot(path, SnapshotAction::Delete(name.into()))
    }

    fn snapshot(&self, path: &Path, action: SnapshotAction) -> Result<(), Error> {
        // qemu-img before 10.0 has no `snapshot -f`; probe here, and only hand it a qcow2.
        let info = self.info(path)?;
        if info.format != Format::Qcow2 {
            return Err(Error::Unsupported(format!(
                "internal snapshots of {} ({} image; they need qcow2)",
                path.display(),
                info.format
            )));
        }
        self.run(&ImgSnapshot::new(path, action)).map(drop)
    }

    /// Writes the image `source` into `target` as `target_format`, replacing it when done.
    ///
    /// A source compressed with gzip, xz, bzip2 or zstd (recognised by its magic bytes, not its
    /// name) is streamed through the decompressor (`PROGRAM -dc`); a missing decompressor is
    /// [`Error::ProgramMissing`] naming the package to install. A raw stream going into a raw
    /// target is written directly (sparse); anything else is converted by `qemu-img convert`
    /// (the source format is probed once, never guessed by QEMU). Progress goes from 0.0 to 1.0.
    /// The target's size becomes the image's virtual size: grow it afterwards if needed.
    pub fn flash(
        &self,
        source: &Path,
        target: &Path,
        target_format: &Format,
        mut progress: impl FnMut(f64),
    ) -> Result<FlashReport, Error> {
        let mut file = File::open(source).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                what: "flash source".into(),
                path: source.to_owned(),
            },
            _ => Error::io(format!("opening {}", source.display()), e),
        })?;
        if let Ok(m) = target.metadata() {
            if !m.is_file() {
                return Err(Error::Unsupported(format!(
                    "flashing {}: only regular files are written",
                    target.display()
                )));
            }
        }
        let mut head = [0u8; 8];
        let n = read_up_to(&mut file, &mut head)
            .map_err(Error::io_with(format!("reading {}", source.display())))?;
        let Some(compression) = Compression::detect(&head[..n]) else {
            drop(file);
            let info = self.info(source)?;
            self.convert_known(source, &info.format, target, target_format, progress)?;
            return Ok(FlashReport {
                compression: None,
                source_format: info.format,
                virtual_size: info.virtual_size,
            });
        };
        file.seek(SeekFrom::Start(0))
            .map_err(Error::io_with(format!("reading {}", source.display())))?;
        let total = file.metadata().map(|m| m.len()).unwrap_or(0).max(1);
        let program = &self.decompressors[compression.index()];
        let Some(program_path) = find_executable(program) else {
            return Err(Error::ProgramMissing {
                program: program.clone(),
                package: compression.package().into(),
                purpose: format!("to decompress {}", source.display()),
            });
        };
        // The child reads the same open file description: our offset is its progress.
        let stdin = file
            .try_clone()
            .map_err(Error::io_with("duplicating the source descriptor"))?;
        let argv = Argv {
            program: program_path.into_os_string(),
            args: vec!["-dc".into()],
        };
        let mut child = RunningChild::spawn(&argv, Some(stdin), || Error::ProgramMissing {
            program: program.clone(),
            package: compression.package().into(),
            purpose: format!("to decompress {}", source.display()),
        })?;
        // Decompress into a raw temp file: the target itself when the stream is raw and so is
        // the target, else an intermediate that qemu-img converts.
        let direct = *target_format == Format::Raw;
        let out = TempPath::beside(target)?;
        let mut writer = SparseWriter::new(out.file()?);
        let mut inner = None;
        let mut share = if direct { 1.0 } else { 0.5 };
        let mut last = 0.0;
        let mut write_err = None;
        child.read_stdout(|chunk| {
            if write_err.is_some() {
                return;
            }
            if inner.is_none() {
                inner = Some(sniff_format(chunk));
                if inner != Some(Format::Raw) {
                    share = 0.5;
                }
            }
            if let Err(e) = writer.write(chunk) {
                write_err = Some(e);
                return;
            }
            let pos = file.stream_position().unwrap_or(0) as f64 / total as f64;
            let p = (pos * share).min(share * 0.99);
            if p > last {
                last = p;
                progress(p);
            }
        })?;
        let written = writer.finish();
        child.finish()?;
        let written = match (write_err, written) {
            (Some(e), _) | (None, Err(e)) => {
                return Err(Error::io(format!("writing {}", out.path().display()), e))
            }
            (None, Ok(n)) => n,
        };
        let inner = inner.unwrap_or(Format::Raw);
        if inner == Format::Raw && direct {
            out.persist(target)?;
            progress(1.0);
            return Ok(FlashReport {
                compression: Some(compression),
                source_format: Format::Raw,
                virtual_size: written,
            });
        }
        // Convert the decompressed image; its format was recognised by qemu-img's own probe.
        let info = self.info(out.path())?;
        self.convert_known(out.path(), &info.format, target, target_format, |p| {
            let p = share + p * (1.0 - share);
            if p > last {
                last = p;
                progress(p);
            }
        })?;
        Ok(FlashReport {
            compression: Some(compression),
            source_format: info.format,
            virtual_size: info.virtual_size,
        })
    }

    /// Reads the image at `source` (of `source_format`, or probed when `None`) into a new file
    /// `dest` of `dest_format`, reporting progress.
    pub fn dump(
        &self,
        source: &Path,
        source_format: Option<&Format>,
        dest: &Path,
        dest_format: &Format,
        progress: impl FnMut(f64),
    ) -> Result<(), Error> {
        match source_format {
            Some(f) => self.convert_known(source, f, dest, dest_format, progress),
            None => self.convert(source, dest, dest_format, progress),
        }
    }
}

/// [`QemuImg::info`] with the default programs.
pub fn info(path: &Path) -> Result<ImageInfo, Error> {
    QemuImg::default().info(path)
}

/// [`QemuImg::create`] with the default programs.
pub fn create(path: &Path, format: &Format, size: Size) -> Result<(), Error> {
    QemuImg::default().create(path, format, size)
}

/// [`QemuImg::resize`] with the default programs.
pub fn resize(path: &Path, size: Size, allow_shrink: bool) -> Result<ImageInfo, Error> {
    QemuImg::default().resize(path, size, allow_shrink)
}

/// [`QemuImg::convert`] with the default programs.
pub fn convert(
    src: &Path,
    dst: &Path,
    dst_format: &Format,
    progress: impl FnMut(f64),
) -> Result<(), Error> {
    QemuImg::default().convert(src, dst, dst_format, progress)
}

/// [`QemuImg::check`] with the default programs.
pub fn check(path: &Path, repair: Option<Repair>) -> Result<CheckReport, Error> {
    QemuImg::default().check(path, repair)
}

/// [`QemuImg::snapshot_create`] with the default programs.
pub fn snapshot_create(path: &Path, name: &str) -> Result<(), Error> {
    QemuImg::default().snapshot_create(path, name)
}

/// [`QemuImg::snapshot_list`] with the default programs.
pub fn snapshot_list(path: &Path) -> Result<Vec<SnapshotInfo>, Error> {
    QemuImg::default().snapshot_list(path)
}

/// [`QemuImg::snapshot_apply`] with the default programs.
pub fn snapshot_apply(path: &Path, name: &str) -> Result<(), Error> {
    QemuImg::default().snapshot_apply(path, name)
}

/// [`QemuImg::snapshot_delete`] with the default programs.
pub fn snapshot_delete(path: &Path, name: &str) -> Result<(), Error> {
    QemuImg::default().snapshot_delete(path, name)
}

/// [`QemuImg::flash`] with the default programs.
pub fn flash(
    source: &Path,
    target: &Path,
    target_format: &Format,
    progress: impl FnMut(f64),
) -> Result<FlashReport, Error> {
    QemuImg::default().flash(source, target, target_format, progress)
}

/// [`QemuImg::dump`] with the default programs.
pub fn dump(
    source: &Path,
    source_format: Option<&Format>,
    dest: &Path,
    dest_format: &Format,
    progress: impl FnMut(f64),
) -> Result<(), Error> {
    QemuImg::default().dump(source, source_format, dest, dest_format, progress)
}

/// Parses `qemu-img info --output=json --backing-chain` (a list, image first) or plain
/// `--output=json` (one object).
fn parse_info(out: &[u8]) -> Result<ImageInfo, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(out)?;
    match value {
        serde_json::Value::Array(items) => {
            let mut chain = items
                .into_iter()
                .map(serde_json::from_value::<ImageInfo>)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter();
            let Some(mut top) = chain.next() else {
                return Err(serde::de::Error::custom("an empty list"));
            };
            top.backing_chain = chain.collect();
            Ok(top)
        }
        other => serde_json::from_value(other),
    }
}

fn exists(path: &Path, what: &str) -> Result<(), Error> {
    match path.metadata() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound {
            what: what.into(),
            path: path.to_owned(),
        }),
        Err(e) => Err(Error::io(format!("looking at {}", path.display()), e)),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The format of an image stream from its first bytes (what a decompressed source holds).
fn sniff_format(head: &[u8]) -> Format {
    let at = |off: usize, magic: &[u8]| {
        head.len() >= off + magic.len() && &head[off..off + magic.len()] == magic
    };
    if at(0, b"QFI\xfb") {
        Format::Qcow2
    } else if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
        Format::Vmdk
    } else if at(0x40, &[0x7f, 0x10, 0xda, 0xbe]) {
        Format::Vdi
    } else if at(0, b"vhdxfile") {
        Format::Vhdx
    } else if at(0, b"conectix") {
        Format::Vpc
    } else if at(0, b"QED\0") {
        Format::Qed
    } else {
        Format::Raw
    }
}

/// Bytes free for unprivileged users on the file system holding `path` (or its directory).
fn free_space(path: &Path) -> Result<u64, Error> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{} has a NUL byte", path.display())))?;
    // SAFETY: statvfs is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statvfs.
    let ret = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if ret != 0 {
        return Err(Error::io(
            format!("reading the free space of {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Extracts the percentages from `qemu-img -p` output, which may be split across reads.
#[derive(Default)]
struct ProgressParser {
    pending: Vec<u8>,
}

impl ProgressParser {
    /// Feeds bytes; returns each complete `(P/100%)` as a fraction.
    fn feed(&mut self, bytes: &[u8]) -> Vec<f64> {
        self.pending.extend_from_slice(bytes);
        let mut found = Vec::new();
        let mut consumed = 0;
        while let Some(open) = self.pending[consumed..].iter().position(|&b| b == b'(') {
            let start = consumed + open;
            let Some(close) = self.pending[start..].iter().position(|&b| b == b')') else {
                consumed = start;
                break;
            };
            let inner = &self.pending[start + 1..start + close];
            if let Some(p) = std::str::from_utf8(inner)
                .ok()
                .and_then(|s| s.strip_suffix("/100%"))
                .and_then(|s| s.trim().parse::<f64>().ok())
            {
                if p.is_finite() {
                    found.push((p / 100.0).clamp(0.0, 1.0));
                }
            }
            consumed = start + close + 1;
        }
        if !self.pending[consumed..].contains(&b'(') {
            consumed = self.pending.len();
        }
        self.pending.drain(..consumed);
        found
    }
}

/// A helper (qemu-img, a decompressor) spawned through the process guardian (so that the
/// program's own `SIGCHLD` handling cannot take its exit status, and it dies with this process),
/// with stdout piped to us and stderr into an anonymous temp file; stdin as given (`None`:
/// `/dev/null`). Umask 077: what it creates is owner-only.
struct RunningChild {
    child: ChildProc,
    stdout: Option<File>,
    argv: Vec<OsString>,
    stderr: File,
}

impl RunningChild {
    fn spawn(
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
    fn read_stdout(&mut self, mut f: impl FnMut(&[u8])) -> Result<(), Error> {
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

    fn program(&self) -> String {
        Path::new(&self.argv[0]).display().to_string()
    }

    /// Waits for the exit; returns the status and stderr.
    fn wait(&mut self) -> Result<(ExitStatus, String), Error> {
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
    fn finish(mut self) -> Result<(), Error> {
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

/// A new file beside a destination, removed on drop unless persisted (renamed into place).
pub(crate) struct TempPath {
    path: PathBuf,
    file: Option<File>,
}

impl TempPath {
    /// `DIR/.NAME.tmp-XXXXXX` for destination `DIR/NAME`.
    pub(crate) fn beside(dest: &Path) -> Result<TempPath, Error> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{} does not name a file", dest.display()))
        })?;
        let mut prefix = OsString::from(".");
        prefix.push(name);
        TempPath::in_dir(dir, &prefix)
    }

    fn in_dir(dir: &Path, prefix: &OsStr) -> Result<TempPath, Error> {
        let mut attempt = 0u32;
        loop {
            let mut name = prefix.to_os_string();
            name.push(format!(".tmp-{:08x}", random_u32() ^ attempt));
            let path = dir.join(name);
            match File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempPath {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("creating a temporary file in {}", dir.display()),
                        e,
                    ))
                }
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A handle to the file.
    pub(crate) fn file(&self) -> Result<File, Error> {
        match &self.file {
            Some(f) => f
                .try_clone()
                .map_err(Error::io_with(format!("opening {}", self.path.display()))),
            None => File::options()
                .write(true)
                .open(&self.path)
                .map_err(Error::io_with(format!("opening {}", self.path.display()))),
        }
    }

    /// Renames the file to `dest` (same directory, so atomic).
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), Error> {
        self.file.take();
        std::fs::rename(&self.path, dest).map_err(Error::io_with(format!(
            "renaming {} to {}",
            self.path.display(),
            dest.display()
        )))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A value that differs between calls and processes (for temp names, not for secrets).
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// Writes a stream into a file, leaving holes where whole blocks are zero.
struct SparseWriter {
    file: File,
    offset: u64,
}

impl SparseWriter {
    fn new(file: File) -> SparseWriter {
        SparseWriter { file, offset: 0 }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // Align the first block to BLOCK so later blocks line up with the file's.
            let into_block = (self.offset % BLOCK as u64) as usize;
            let n = data.len().min(BLOCK - into_block);
            let (block, rest) = data.split_at(n);
            if block.iter().any(|&b| b != 0) {
                self.file.write_all_at(block, self.offset)?;
            }
            self.offset += n as u64;
            data = rest;
        }
        Ok(())
    }

    /// Sets the length (trailing holes) and flushes; returns the bytes written.
    fn finish(self) -> io::Result<u64> {
        self.file.set_len(self.offset)?;
        (&self.file).flush()?;
        self.file.sync_all()?;
        Ok(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_recognised_by_magic_bytes() {
        assert_eq!(
            Compression::detect(&[0x1f, 0x8b, 8, 0]),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::detect(b"\xfd7zXZ\0\0\x04"),
            Some(Compression::Xz)
        );
        assert_eq!(Compression::detect(b"BZh91AY&"), Some(Compression::Bzip2));
        assert_eq!(Compression::detect(b"BZhx"), None);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::detect(b"QFI\xfb\0\0\0\x03"), None);
        assert_eq!(Compression::detect(b""), None);
        assert_eq!(Compression::detect(&[0x1f]), None);
    }

    #[test]
    fn formats_are_sniffed_from_the_stream() {
        assert_eq!(sniff_format(b"QFI\xfb\0\0\0\x03"), Format::Qcow2);
        assert_eq!(sniff_format(b"KDMV\x01"), Format::Vmdk);
        assert_eq!(sniff_format(b"vhdxfile"), Format::Vhdx);
        let mut vdi = vec![0u8; 0x48];
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(sniff_format(&vdi), Format::Vdi);
        assert_eq!(sniff_format(&[0u8; 512]), Format::Raw);
        assert_eq!(sniff_format(b"QF"), Format::Raw);
    }

    #[test]
    fn progress_is_parsed_across_split_reads() {
        let mut p = ProgressParser::default();
        assert_eq!(p.feed(b"    (0.00/100%)\r    (12.5"), vec![0.0]);
        assert_eq!(p.feed(b"0/100%)\r    (100.00/100%)\r\n"), vec![0.125, 1.0]);
        assert_eq!(p.feed(b"(garbage)(50/100%)"), vec![0.5]);
        assert!(p.feed(b"no parens at all").is_empty());
        assert!(p.pending.is_empty());
    }

    #[test]
    fn info_json_with_unknown_fields_and_a_backing_chain() {
        let json = br#"[
            {"virtual-size": 1073741824, "filename": "top.qcow2", "cluster-size": 65536,
             "format": "qcow2", "actual-size": 200704, "dirty-flag": false,
             "backing-filename": "base.raw", "full-backing-filename": "/i/base.raw",
             "backing-filename-format": "raw", "some-future-field": {"x": 1},
             "snapshots": [{"id": "1", "name": "clean", "vm-state-size": 0, "date-sec": 5,
                            "date-nsec": 6, "vm-clock-sec": 0, "vm-clock-nsec": 0,
                            "icount": 0}],
             "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}},
            {"virtual-size": 1073741824, "filename": "/i/base.raw", "format": "raw",
             "actual-size": 4096, "dirty-flag": false}
        ]"#;
        let info = parse_info(json).unwrap();
        assert_eq!(info.format, Format::Qcow2);
        assert_eq!(info.virtual_size, 1 << 30);
        assert_eq!(info.actual_size, Some(200704));
        assert_eq!(info.cluster_size, Some(65536));
        assert!(!info.dirty);
        assert_eq!(info.backing_filename.as_deref(), Some("base.raw"));
        assert_eq!(info.snapshots.len(), 1);
        assert_eq!(info.snapshots[0].name, "clean");
        assert_eq!(info.backing_chain.len(), 1);
        assert_eq!(info.backing_chain[0].format, Format::Raw);
        // A single object (no --backing-chain) and a minimal one parse too.
        let one = parse_info(br#"{"virtual-size": 1, "filename": "f", "format": "vmdk"}"#).unwrap();
        assert_eq!(one.format, Format::Vmdk);
        assert!(one.backing_chain.is_empty() && one.snapshots.is_empty());
        assert!(parse_info(b"[]").is_err());
        assert!(parse_info(br#"{"filename": "f"}"#).is_err());
    }

    #[test]
    fn sparse_writer_leaves_holes_and_keeps_data() {
        let dir = crate::spawn::TempDir::new(&std::env::temp_dir()).unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let mut w = SparseWriter::new(file);
        let mut data = vec![0u8; 3 * BLOCK + 10];
        data[BLOCK + 5] = 7;
        w.write(&data[..100]).unwrap();
        w.write(&data[100..]).unwrap();
        w.write(&[0u8; 1 << 20]).unwrap();
        assert_eq!(w.finish().unwrap(), (3 * BLOCK + 10 + (1 << 20)) as u64);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 3 * BLOCK + 10 + (1 << 20));
        assert_eq!(&back[..data.len()], &data[..]);
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        assert!(blocks * 512 < 64 * 1024, "{blocks} blocks allocated");
    }

    #[test]
    fn temp_paths_are_removed_unless_persisted() {
        let dir = crate::spawn::TempDir::new(&std::env::temp_dir()).unwrap();
        let dest = dir.path().join("disk.raw");
        let t = TempPath::beside(&dest).unwrap();
        let p = t.path().to_owned();
        assert!(p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".disk.raw.tmp-"));
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
        let t = TempPath::beside(&dest).unwrap();
        t.file().unwrap().write_all(b"x").unwrap();
        t.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn error_messages_carry_the_numbers_and_the_fix() {
        use std::os::unix::process::ExitStatusExt;
        let e = Error::Image {
            argv: vec!["qemu-img".into(), "info".into(), "/x y".into()],
            status: ExitStatus::from_raw(1 << 8),
            stderr: "qemu-img: Could not open '/x y'\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "qemu-img info '/x y' failed (exit status: 1): qemu-img: Could not open '/x y'"
        );
        let e = Error::NoSpace {
            path: "/d.raw".into(),
            needed: 10,
            available: 3,
        };
        assert_eq!(
            e.to_string(),
            "growing /d.raw needs up to 10 bytes but its file system has only 3 bytes free"
        );
        let e = Error::ShrinkRefused {
            path: "/d.raw".into(),
            current: 100,
            requested: 40,
        };
        assert!(e.to_string().contains("from 100 to 40 bytes"));
        assert!(e.to_string().contains("lose its last 60 bytes"));
        let e = Error::ProgramMissing {
            program: "zstd".into(),
            package: "zstd".into(),
            purpose: "to decompress /i.zst".into(),
        };
        assert_eq!(
            e.to_string(),
            "zstd is needed to decompress /i.zst but is not installed: apt-get install -y zstd"
        );
        let e = Error::VmRunning {
            operation: "flashing \"root\"".into(),
        };
        assert!(e.to_string().contains("refused while the VM is running"));
    }

    #[test]
    fn free_space_is_a_number_and_bad_paths_are_errors() {
        assert!(free_space(&std::env::temp_dir()).unwrap() > 0);
        assert!(free_space(Path::new("/nonexistent/qm/x")).is_err());
    }
}
