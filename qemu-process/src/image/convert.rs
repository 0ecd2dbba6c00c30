//! Converting an image into a new one (and dumping one back), with progress from
//! `qemu-img convert -p`.

use std::path::Path;

use qemu_cmdline::{Format, ImgConvert};

use crate::error::Error;

use super::temp::TempPath;
use super::{exists, QemuImg};

impl QemuImg {
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
            .progress(true)
            .force_share(self.force_share);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_parsed_across_split_reads() {
        let mut p = ProgressParser::default();
        assert_eq!(p.feed(b"    (0.00/100%)\r    (12.5"), vec![0.0]);
        assert_eq!(p.feed(b"0/100%)\r    (100.00/100%)\r\n"), vec![0.125, 1.0]);
        assert_eq!(p.feed(b"(garbage)(50/100%)"), vec![0.5]);
        assert!(p.feed(b"no parens at all").is_empty());
        assert!(p.pending.is_empty());
    }
}
