//! The console's bounded in-memory buffer with an expect-style matcher.
//!
//! Bytes are pushed in as they are drained from the console socket. A waiter (set by
//! `console_wait_for`) is checked on every push, before the buffer is trimmed to its bound, so a
//! match is never missed however much output arrives between two looks.

/// Bytes kept in memory, at most `limit` of them (oldest dropped first, and counted).
#[derive(Debug)]
pub(crate) struct ConsoleBuffer {
    data: Vec<u8>,
    /// Index in `data` of the first kept byte (bytes before it are dropped, pending compaction).
    start: usize,
    limit: usize,
    dropped: u64,
    /// Bytes were dropped since the buffer was last emptied (the overflow was logged).
    overflowing: bool,
    waiter: Option<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    pattern: Vec<u8>,
    /// Index in `data` from which to search next (earlier positions were already searched).
    scan_from: usize,
    /// Set once the pattern was found: the bytes before the match.
    found: Option<Vec<u8>>,
}

impl ConsoleBuffer {
    /// An empty buffer keeping at most `limit` bytes (at least 1).
    pub(crate) fn new(limit: usize) -> ConsoleBuffer {
        ConsoleBuffer {
            data: Vec::new(),
            start: 0,
            limit: limit.max(1),
            dropped: 0,
            overflowing: false,
            waiter: None,
        }
    }

    /// Bytes currently kept.
    pub(crate) fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// How many bytes were dropped from memory because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends output, checks the waiter, then trims to the limit. The first drop after the
    /// buffer was emptied is logged (once per overflow, not per dropped chunk).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.scan();
        let mut new_start = self.start + self.len().saturating_sub(self.limit);
        if let Some(w) = &self.waiter {
            if w.found.is_none() {
                // Keep a possible partial match (at most pattern.len()-1 bytes beyond the limit).
                new_start = new_start.min(w.scan_from);
            }
        }
        if new_start > self.start {
            self.dropped += (new_start - self.start) as u64;
            self.start = new_start;
            if !self.overflowing {
                self.overflowing = true;
                log::warn!(
                    "console buffer full ({} bytes): dropping the oldest output until it is read \
                     (a console log file keeps every byte; dropped since launch: {} bytes)",
                    self.limit,
                    self.dropped
                );
            }
        }
        self.compact();
    }

    /// Removes and returns every kept byte.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        let out = self.data.split_off(self.start);
        self.data.clear();
        self.start = 0;
        self.overflowing = false;
        if let Some(w) = &mut self.waiter {
            w.scan_from = 0;
        }
        out
    }

    /// Whether bytes were dropped since the buffer was last emptied.
    #[cfg(test)]
    pub(crate) fn overflowing(&self) -> bool {
        self.overflowing
    }

    /// Starts looking for `pattern` in kept and future bytes. An empty pattern matches at once.
    pub(crate) fn set_waiter(&mut self, pattern: &[u8]) {
        self.waiter = Some(Waiter {
            pattern: pattern.to_vec(),
            scan_from: self.start,
            found: None,
        });
        self.scan();
        self.compact();
    }

    /// If the waiter's pattern was found: clears the waiter and returns the bytes before the match
    /// (the match itself is consumed; bytes after it stay kept).
    pub(crate) fn take_match(&mut self) -> Option<Vec<u8>> {
        if self.waiter.as_ref()?.found.is_some() {
            if self.len() == 0 {
                self.overflowing = false;
            }
            self.waiter.take()?.found
        } else {
            None
        }
    }

    /// Stops waiting (on timeout or error); kept bytes stay.
    pub(crate) fn clear_waiter(&mut self) {
        self.waiter = None;
    }

    fn scan(&mut self) {
        let Some(w) = &mut self.waiter else { return };
        if w.found.is_some() {
            return;
        }
        let from = w.scan_from.max(self.start);
        let hay = &self.data[from..];
        match find(hay, &w.pattern) {
            Some(pos) => {
                let match_start = from + pos;
                let before = self.data[self.start..match_start].to_vec();
                self.start = match_start + w.pattern.len();
                w.found = Some(before);
            }
            None => {
                // The last pattern.len()-1 bytes may begin a match completed by later output.
                let keep = w.pattern.len().saturating_sub(1);
                w.scan_from = self.data.len().saturating_sub(keep).max(from);
            }
        }
    }

    fn compact(&mut self) {
        if self.start > 0 && (self.start >= self.data.len() / 2 || self.start >= 1 << 20) {
            self.data.drain(..self.start);
            if let Some(w) = &mut self.waiter {
                w.scan_from = w.scan_from.saturating_sub(self.start);
            }
            self.start = 0;
        }
    }
}

/// Position of the first occurrence of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if needle.len() > hay.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(off) => {
                let at = i + off;
                if &hay[at..at + needle.len()] == needle {
                    return Some(at);
                }
                i = at + 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_works_at_edges() {
        assert_eq!(find(b"hello", b"lo"), Some(3));
        assert_eq!(find(b"hello", b"he"), Some(0));
        assert_eq!(find(b"hello", b"hello!"), None);
        assert_eq!(find(b"aaab", b"aab"), Some(1));
        assert_eq!(find(b"", b""), Some(0));
        assert_eq!(find(b"abc", b"d"), None);
    }

    #[test]
    fn keeps_at_most_the_limit_and_counts_drops() {
        let mut b = ConsoleBuffer::new(4);
        b.push(b"abc");
        b.push(b"def");
        assert_eq!(b.len(), 4);
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.take(), b"cdef");
        assert_eq!(b.len(), 0);
        assert!(b.take().is_empty());
    }

    #[test]
    fn an_overflow_is_flagged_until_the_buffer_is_emptied() {
        let mut b = ConsoleBuffer::new(4);
        b.push(b"abcd");
        assert!(!b.overflowing());
        b.push(b"e");
        assert!(b.overflowing());
        b.push(b"fg");
        assert!(b.overflowing());
        assert_eq!(b.dropped(), 3);
        b.take();
        assert!(!b.overflowing());
        b.push(b"hijkl");
        assert!(b.overflowing());
        assert_eq!(b.dropped(), 4);
        // A match that consumes everything kept empties the buffer too.
        b.set_waiter(b"l");
        assert_eq!(b.take_match().unwrap(), b"ijk");
        assert!(!b.overflowing());
    }

    #[test]
    fn finds_a_match_split_across_pushes() {
        let mut b = ConsoleBuffer::new(1024);
        b.push(b"boot... QM-GU");
        b.set_waiter(b"QM-GUEST-READY");
        assert_eq!(b.take_match(), None);
        b.push(b"EST-RE");
        assert_eq!(b.take_match(), None);
        b.push(b"ADY\n# ");
        assert_eq!(b.take_match().unwrap(), b"boot... ");
        assert_eq!(b.take(), b"\n# ");
    }

    #[test]
    fn finds_a_match_in_already_kept_bytes() {
        let mut b = ConsoleBuffer::new(1024);
        b.push(b"one\ntwo\nthree\n");
        b.set_waiter(b"two\n");
        assert_eq!(b.take_match().unwrap(), b"one\n");
        b.set_waiter(b"\n");
        assert_eq!(b.take_match().unwrap(), b"three");
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn a_match_is_seen_even_when_output_overflows_the_limit() {
        let mut b = ConsoleBuffer::new(8);
        b.set_waiter(b"MARK");
        let mut big = vec![b'x'; 1000];
        big.extend_from_slice(b"MARK");
        big.extend_from_slice(&[b'y'; 1000]);
        b.push(&big);
        let before = b.take_match().unwrap();
        assert_eq!(before.len(), 1000);
        assert_eq!(b.len(), 8);
        assert_eq!(b.dropped(), 992);
    }

    #[test]
    fn match_straddling_a_trim_is_found() {
        let mut b = ConsoleBuffer::new(4);
        b.set_waiter(b"abcdef");
        b.push(b"zzab");
        b.push(b"cd");
        b.push(b"ef!");
        // "before" is limited to what was kept; the match itself was still recognised.
        assert!(b.take_match().is_some());
        assert_eq!(b.take(), b"!");
        // A pattern longer than the limit, split across pushes.
        let mut b = ConsoleBuffer::new(2);
        b.set_waiter(b"abcdef");
        b.push(b"ab");
        b.push(b"cd");
        b.push(b"ef");
        assert!(b.take_match().is_some());
    }

    #[test]
    fn clear_waiter_keeps_bytes() {
        let mut b = ConsoleBuffer::new(100);
        b.set_waiter(b"never");
        b.push(b"some output");
        assert_eq!(b.take_match(), None);
        b.clear_waiter();
        assert_eq!(b.take(), b"some output");
    }

    #[test]
    fn compaction_preserves_scan_position() {
        let mut b = ConsoleBuffer::new(1 << 21);
        b.push(&vec![b'a'; 3 << 20]);
        b.set_waiter(b"ab");
        b.push(b"b");
        assert_eq!(b.take_match().unwrap().len(), (2 << 20) - 1);
    }
}
