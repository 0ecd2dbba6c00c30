//! Progress of long operations: a bar redrawn in place on a terminal, plain lines (every 10 %)
//! otherwise; for a stream of unknown length, the bytes read (redrawn in place, or a line every
//! 64 MiB).

use std::io::Write;

/// Where and how progress is shown.
#[derive(Debug)]
pub struct Progress<W: Write> {
    out: W,
    label: String,
    /// Terminal width for a bar; `None` writes plain lines.
    bar_width: Option<usize>,
    /// The last value drawn, in tenths of a percent (bar) or tens of percent (lines).
    last: Option<u32>,
    /// The last byte count drawn, in MiB (bar) or 64 MiB (lines).
    bytes_shown: Option<u32>,
    /// A byte count is on the terminal's current line.
    bytes_line_open: bool,
    done: bool,
}

impl<W: Write> Progress<W> {
    /// Progress for `label` written to `out`: a bar when `terminal_width` is given.
    pub fn new(out: W, label: &str, terminal_width: Option<usize>) -> Progress<W> {
        Progress {
            out,
            label: label.to_owned(),
            bar_width: terminal_width,
            last: None,
            bytes_shown: None,
            bytes_line_open: false,
            done: false,
        }
    }

    /// Shows `fraction` (0.0 to 1.0); redraws only when what is shown changes.
    pub fn update(&mut self, fraction: f64) {
        if !fraction.is_finite() {
            return;
        }
        let fraction = fraction.clamp(0.0, 1.0);
        if std::mem::take(&mut self.bytes_line_open) {
            let _ = writeln!(self.out);
        }
        match self.bar_width {
            Some(width) => {
                let tenths = (fraction * 1000.0).floor() as u32;
                if self.last == Some(tenths) {
                    return;
                }
                self.last = Some(tenths);
                let text = format!("{:5.1}%", f64::from(tenths) / 10.0);
                // "LABEL [#####.....] 42.0%"; the bar takes what the label and number leave.
                let room = width
                    .saturating_sub(self.label.chars().count() + text.len() + 5)
                    .clamp(10, 60);
                let filled = ((fraction * room as f64).floor() as usize).min(room);
                let bar: String = "#".repeat(filled) + &".".repeat(room - filled);
                let _ = write!(self.out, "\r{} [{bar}] {text}", self.label);
                let _ = self.out.flush();
            }
            None => {
                let tens = (fraction * 10.0).floor() as u32;
                if self.last.is_some_and(|l| l >= tens) {
                    return;
                }
                self.last = Some(tens);
                let _ = writeln!(self.out, "{}: {}%", self.label, tens * 10);
                let _ = self.out.flush();
            }
        }
    }

    /// Shows `bytes` read from a stream whose length is not known: redrawn in place on a
    /// terminal (at most once per MiB), a line per 64 MiB otherwise. A later
    /// [`update`](Progress::update) starts a new line.
    pub fn update_bytes(&mut self, bytes: u64) {
        let step = if self.bar_width.is_some() { 20 } else { 26 };
        let mark = u32::try_from(bytes >> step).unwrap_or(u32::MAX);
        if self.bytes_shown == Some(mark) {
            return;
        }
        self.bytes_shown = Some(mark);
        let text = format!("{} read", human_bytes(bytes));
        if self.bar_width.is_some() {
            let _ = write!(self.out, "\r{}: {text}\x1b[K", self.label);
            self.bytes_line_open = true;
        } else {
            let _ = writeln!(self.out, "{}: {text}", self.label);
        }
        let _ = self.out.flush();
    }

    /// Ends the display (the bar gets its newline).
    pub fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if self.bar_width.is_some() && (self.last.is_some() || self.bytes_line_open) {
            let _ = writeln!(self.out);
            let _ = self.out.flush();
        }
    }
}

/// `1.5 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

impl<W: Write> Drop for Progress<W> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_every_ten_percent() {
        let mut out = Vec::new();
        {
            let mut p = Progress::new(&mut out, "convert", None);
            for i in 0..=100 {
                p.update(f64::from(i) / 100.0);
            }
            p.update(0.5); // never goes back
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        assert_eq!(lines[0], "convert: 0%");
        assert_eq!(lines[10], "convert: 100%");
    }

    #[test]
    fn bar_redraws_in_place_and_ends_the_line() {
        let mut out = Vec::new();
        {
            let mut p = Progress::new(&mut out, "flash", Some(40));
            p.update(0.0);
            p.update(0.0001); // same tenth of a percent: no redraw
            p.update(0.5);
            p.update(1.0);
            p.update(f64::NAN);
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\r').count(), 3, "{text:?}");
        assert!(text.contains("]  50.0%"), "{text:?}");
        assert!(text.contains("] 100.0%"), "{text:?}");
        assert!(text.ends_with('\n'));
        let last = text.trim_end().rsplit('\r').next().unwrap();
        assert!(last.starts_with("flash [##"), "{last:?}");
        assert!(last.chars().count() <= 40, "{last:?}");
    }

    #[test]
    fn bytes_of_a_stream_then_a_conversion() {
        let mut out = Vec::new();
        {
            let mut p = Progress::new(&mut out, "flash -", None);
            for mib in 0..=130u64 {
                p.update_bytes(mib << 20);
            }
            p.update(1.0);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "flash -: 0 B read",
                "flash -: 64.0 MiB read",
                "flash -: 128.0 MiB read",
                "flash -: 100%"
            ]
        );

        let mut out = Vec::new();
        {
            let mut p = Progress::new(&mut out, "flash -", Some(60));
            p.update_bytes(3 << 20);
            p.update_bytes((3 << 20) + 5); // same MiB: no redraw
            p.update_bytes(5 << 20);
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\r').count(), 2, "{text:?}");
        assert!(text.contains("flash -: 5.0 MiB read"), "{text:?}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn nothing_shown_means_no_newline() {
        let mut out = Vec::new();
        drop(Progress::new(&mut out, "x", Some(80)));
        assert!(out.is_empty());
    }
}
