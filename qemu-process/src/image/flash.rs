//! Flashing an image (compressed or not, any format) into a disk: decompressor, format
//! sniffing, sparse writes of raw streams.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use qemu_cmdline::{Argv, Format};

use crate::error::Error;
use crate::spawn::find_executable;

use super::child::RunningChild;
use super::temp::TempPath;
use super::QemuImg;

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

    pub(super) fn index(self) -> usize {
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

/// Sparse copies skip runs of zeros of this granularity.
const BLOCK: usize = 4096;

impl QemuImg {
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
}

pub(super) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
pub(super) fn sniff_format(head: &[u8]) -> Format {
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

/// Writes a stream into a file, leaving holes where whole blocks are zero.
pub(super) struct SparseWriter {
    file: File,
    offset: u64,
}

impl SparseWriter {
    pub(super) fn new(file: File) -> SparseWriter {
        SparseWriter { file, offset: 0 }
    }

    pub(super) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
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
    pub(super) fn finish(self) -> io::Result<u64> {
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
}
