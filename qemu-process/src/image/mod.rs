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

use std::io;
use std::path::{Path, PathBuf};

use qemu_cmdline::{Argv, Format, ImgCommand, Repair, Size};

use crate::error::Error;

pub(crate) mod child;
mod convert;
mod flash;
mod info;
mod temp;

pub use flash::{Compression, FlashReport};
pub use info::{CheckReport, ImageInfo, SnapshotInfo};

use child::RunningChild;

/// Runs `qemu-img` and the decompressors: the programs to use, and every image operation.
/// [`QemuImg::default`] runs `qemu-img`, `gzip`, `xz`, `bzip2` and `zstd` from `PATH`; the
/// free functions of this module use it.
#[derive(Debug, Clone)]
pub struct QemuImg {
    program: PathBuf,
    decompressors: [PathBuf; 4],
    force_share: bool,
}

impl Default for QemuImg {
    fn default() -> QemuImg {
        QemuImg {
            program: PathBuf::from("qemu-img"),
            decompressors: Compression::ALL.map(|c| PathBuf::from(c.program())),
            force_share: false,
        }
    }
}

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

    /// Reads images even while a running QEMU holds them (qemu-img's `-U`, "force share"):
    /// [`info`](QemuImg::info), [`check`](QemuImg::check) without repair, and the source of
    /// [`convert`](QemuImg::convert) and [`dump`](QemuImg::dump). What is read may be stale or
    /// inconsistent while the guest writes. Writes never share: a repair is refused with it.
    pub fn force_share(&mut self, on: bool) -> &mut Self {
        self.force_share = on;
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

#[cfg(test)]
mod tests {
    use std::process::ExitStatus;

    use super::*;

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
}
