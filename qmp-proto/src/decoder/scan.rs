//! The structural scanner: delimits frames split across reads, one byte class at a time.

use super::skip::{Skip, SkipStep};
use super::{Decoder, State, EXCERPT_LEN, SENTINEL};
use crate::error::{excerpt, Error, Result};

impl Decoder {
    /// Scans the buffered bytes for the next complete frame and consumes it, returning its
    /// range in `buf`.
    pub(super) fn scan(&mut self) -> Result<Option<(usize, usize)>> {
        loop {
            let step = match self.state {
                State::Between => self.scan_between(),
                State::Sentinel => self.scan_sentinel(),
                State::Container => self.scan_container()?,
                State::Str => self.scan_string()?,
                State::Scalar => self.scan_scalar()?,
                State::Skip => self.scan_skip()?,
            };
            match step {
                Step::Frame(begin, end) => return Ok(Some((begin, end))),
                Step::NeedMore => return Ok(None),
                Step::Continue => {}
            }
        }
    }

    fn scan_between(&mut self) -> Step {
        let buf = &self.buf[..];
        let mut pos = self.pos;
        while pos < buf.len() && matches!(buf[pos], b' ' | b'\t' | b'\r' | b'\n' | SENTINEL) {
            pos += 1;
        }
        self.start = pos;
        self.pos = pos;
        let Some(&first) = buf.get(pos) else {
            return Step::NeedMore;
        };
        self.pos = pos + 1;
        match first {
            b'{' | b'[' => {
                self.depth = 1;
                self.state = State::Container;
            }
            b'"' => {
                self.depth = 0;
                self.escape = false;
                self.state = State::Str;
            }
            b'}' | b']' | b',' | b':' => {
                // A stray punctuation mark: a one-byte (invalid) frame.
                self.start = pos + 1;
                return Step::Frame(pos, pos + 1);
            }
            _ => self.state = State::Scalar,
        }
        Step::Continue
    }

    fn scan_sentinel(&mut self) -> Step {
        let len = self.buf.len();
        match self.buf[self.pos..].iter().position(|&b| b == SENTINEL) {
            Some(at) => {
                self.pos += at + 1;
                self.start = self.pos;
                self.state = State::Between;
                Step::Continue
            }
            None => {
                self.pos = len;
                self.start = len;
                Step::NeedMore
            }
        }
    }

    fn scan_container(&mut self) -> Result<Step> {
        let end = self.scan_end(0);
        let buf = &self.buf[..];
        let mut pos = self.pos;
        let mut depth = self.depth;
        while pos < end {
            let b = buf[pos];
            pos += 1;
            if !STRUCTURAL[b as usize] {
                continue;
            }
            match b {
                b'"' => {
                    self.pos = pos;
                    self.depth = depth;
                    self.escape = false;
                    self.state = State::Str;
                    return Ok(Step::Continue);
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos = pos;
                        self.depth = 0;
                        return Ok(self.finish_frame());
                    }
                }
                _ => {
                    self.pos = pos;
                    return self.cut_frame();
                }
            }
        }
        self.pos = pos;
        self.depth = depth;
        self.incomplete(0)
    }

    fn scan_string(&mut self) -> Result<Step> {
        let end = self.scan_end(0);
        let buf = &self.buf[..];
        let mut pos = self.pos;
        while pos < end {
            if self.escape {
                self.escape = false;
                pos += 1;
                if buf[pos - 1] == SENTINEL {
                    self.pos = pos;
                    return self.cut_frame();
                }
                continue;
            }
            pos += find_string_special(&buf[pos..end]);
            if pos == end {
                break;
            }
            let b = buf[pos];
            pos += 1;
            match b {
                b'"' => {
                    self.pos = pos;
                    if self.depth == 0 {
                        return Ok(self.finish_frame());
                    }
                    self.state = State::Container;
                    return Ok(Step::Continue);
                }
                b'\\' => self.escape = true,
                _ => {
                    self.pos = pos;
                    return self.cut_frame();
                }
            }
        }
        self.pos = pos;
        self.incomplete(0)
    }

    fn scan_scalar(&mut self) -> Result<Step> {
        let end = self.scan_end(1);
        let buf = &self.buf[..];
        let mut pos = self.pos;
        while pos < end && !is_token_delimiter(buf[pos]) {
            pos += 1;
        }
        self.pos = pos;
        if pos < end {
            // The delimiter ends the token and is not part of it.
            return Ok(self.finish_frame());
        }
        self.incomplete(1)
    }

    /// Where scanning of the current frame must stop: at the end of the buffer, or where the
    /// frame would pass the size bound (`slack` more bytes for bare tokens, whose delimiter is
    /// not part of them).
    fn scan_end(&self, slack: usize) -> usize {
        let len = self.buf.len();
        len.min(self.start.saturating_add(self.limit).saturating_add(slack))
    }

    /// The current frame ends at `pos` (exclusive).
    fn finish_frame(&mut self) -> Step {
        let begin = self.start;
        self.state = State::Between;
        self.start = self.pos;
        Step::Frame(begin, self.pos)
    }

    /// A sentinel (at `pos - 1`) interrupted the current frame: drop the partial frame and
    /// resume after the sentinel.
    fn cut_frame(&mut self) -> Result<Step> {
        let begin = self.start;
        let sentinel = self.pos - 1;
        self.state = State::Between;
        self.start = self.pos;
        Err(Error::Utf8 {
            offset: self.base + sentinel as u64,
            excerpt: excerpt(&self.buf[begin..self.pos], sentinel - begin, EXCERPT_LEN),
        })
    }

    /// Scanning stopped before the current frame ended: wait for more bytes, or, once it has
    /// more than `limit` bytes (`limit + slack` scanned without an end), skip it: the skipper
    /// goes over it again from its first byte (still buffered), noting what it is, and then
    /// over the rest as it arrives.
    fn incomplete(&mut self, slack: usize) -> Result<Step> {
        if self.pos - self.start >= self.limit.saturating_add(slack) {
            self.skip = Skip::new(self.base + self.start as u64);
            self.pos = self.start;
            self.state = State::Skip;
            return Ok(Step::Continue);
        }
        Ok(Step::NeedMore)
    }

    /// Skips the frame that outgrew the bound: everything buffered is consumed (and dropped);
    /// at the frame's end, reports it.
    fn scan_skip(&mut self) -> Result<Step> {
        let len = self.buf.len();
        let begin = self.pos;
        let outcome = self.skip.advance(&self.buf[begin..len]);
        match outcome {
            SkipStep::NeedMore => {
                self.pos = len;
                self.start = len;
                Ok(Step::NeedMore)
            }
            SkipStep::End(n) => {
                self.pos = begin + n;
                self.start = self.pos;
                self.state = State::Between;
                let skip = std::mem::take(&mut self.skip);
                let size = self.base + self.pos as u64 - skip.begin;
                Err(Error::MessageTooLarge {
                    limit: self.limit,
                    size,
                    skipped: skip.finish(),
                })
            }
            SkipStep::Cut(n) => {
                // The sentinel is at `begin + n - 1`.
                self.pos = begin + n;
                self.start = self.pos;
                self.state = State::Between;
                let skip = std::mem::take(&mut self.skip);
                let sentinel = self.base + (self.pos - 1) as u64;
                Err(Error::Utf8 {
                    offset: sentinel,
                    excerpt: skip.tail_excerpt(),
                })
            }
        }
    }
}

/// Marks the bytes that matter inside a container outside strings.
static STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table[SENTINEL as usize] = true;
    table
};

/// What one scanning step found.
enum Step {
    /// A complete frame, `buf[begin..end]`.
    Frame(usize, usize),
    /// All buffered bytes are scanned.
    NeedMore,
    /// The state changed; scan on.
    Continue,
}

pub(super) fn is_token_delimiter(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\r' | b'\n' | b'{' | b'}' | b'[' | b']' | b'"' | b',' | b':' | SENTINEL
    )
}

/// Index of the first `"`, `\` or `0xFF` in `bytes`, or `bytes.len()`. Looks at eight bytes
/// at a time: string contents are most of a QMP stream.
#[inline]
pub(super) fn find_string_special(bytes: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    #[inline]
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(LO) & !v & HI
    }
    let mut i = 0;
    while let Some(chunk) = bytes[i..].first_chunk::<8>() {
        let v = u64::from_le_bytes(*chunk);
        let hits = zero_bytes(v ^ (LO * u64::from(b'"')))
            | zero_bytes(v ^ (LO * u64::from(b'\\')))
            | zero_bytes(!v);
        if hits != 0 {
            // The lowest flagged byte is always a true match (false positives of this
            // trick only occur above a true match).
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !matches!(bytes[i], b'"' | b'\\' | SENTINEL) {
        i += 1;
    }
    i
}
