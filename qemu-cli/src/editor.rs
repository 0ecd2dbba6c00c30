//! A small line editor for the QMP shell: fed raw terminal bytes, it keeps the line, the
//! cursor and the history, and writes the escape sequences that redraw the line. It never
//! reads or blocks itself, so the shell can poll the terminal and QEMU together and print
//! events above the prompt as they arrive.
//!
//! Keys: printable text inserts; Left/Right, Home/End, Ctrl-A/E/B/F move; Backspace, Delete,
//! Ctrl-D (on a non-empty line), Ctrl-H delete; Ctrl-U/Ctrl-K kill to the start/end; Ctrl-W
//! deletes a word; Up/Down and Ctrl-P/N walk the history; Tab completes command names;
//! Ctrl-L clears the screen; Ctrl-C abandons the line; Ctrl-D on an empty line ends input;
//! Enter submits.

use std::collections::VecDeque;

/// What a key press produced, besides redrawing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// A submitted line.
    Line(String),
    /// Ctrl-C: the line was abandoned.
    Interrupted,
    /// Ctrl-D on an empty line.
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// After ESC.
    Start,
    /// After `ESC [`, with the digits so far.
    Csi(u16),
    /// After `ESC O`.
    Ss3,
}

/// The editor's state.
#[derive(Debug)]
pub struct Editor {
    prompt: String,
    line: Vec<char>,
    cursor: usize,
    history: VecDeque<String>,
    max_history: usize,
    /// Position while walking the history (`None`: editing the new line).
    browsing: Option<usize>,
    /// The new line, kept while browsing the history.
    draft: Vec<char>,
    esc: Esc,
    utf8: Vec<u8>,
    width: usize,
    words: Vec<String>,
}

impl Editor {
    /// An editor showing `prompt`, on a terminal `width` columns wide.
    pub fn new(prompt: &str, width: usize) -> Editor {
        Editor {
            prompt: prompt.to_owned(),
            line: Vec::new(),
            cursor: 0,
            history: VecDeque::new(),
            max_history: 1000,
            browsing: None,
            draft: Vec::new(),
            esc: Esc::None,
            utf8: Vec::new(),
            width: width.max(10),
            words: Vec::new(),
        }
    }

    /// Changes the terminal width (after a resize); the next [`render`](Editor::render) fits
    /// the line into it.
    pub fn set_width(&mut self, width: usize) {
        self.width = width.max(10);
    }

    /// Changes the prompt (shown from the next [`render`](Editor::render)).
    pub fn set_prompt(&mut self, prompt: &str) {
        prompt.clone_into(&mut self.prompt);
    }

    /// Sets the words Tab completes (command names).
    pub fn set_completions(&mut self, mut words: Vec<String>) {
        words.sort();
        words.dedup();
        self.words = words;
    }

    /// Adds lines to the history (oldest first), keeping at most `max` lines.
    pub fn load_history<I: IntoIterator<Item = String>>(&mut self, lines: I, max: usize) {
        self.max_history = max.max(1);
        for line in lines {
            self.push_history(line);
        }
    }

    /// The history, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &str> {
        self.history.iter().map(String::as_str)
    }

    fn push_history(&mut self, line: String) {
        if line.trim().is_empty() || self.history.back() == Some(&line) {
            return;
        }
        self.history.push_back(line);
        while self.history.len() > self.max_history {
            self.history.pop_front();
        }
    }

    /// The current line.
    pub fn line(&self) -> String {
        self.line.iter().collect()
    }

    /// Handles input bytes up to the first submitted line (or Ctrl-C, or end of input), and
    /// appends what redraws the terminal to `out`. Returns how many bytes were used and what
    /// was submitted; after an [`Edit`] the caller prints what it has to, then calls
    /// [`render`](Editor::render) and feeds the rest.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<Edit>) {
        for (i, &b) in input.iter().enumerate() {
            if let Some(edit) = self.byte(b, out) {
                return (i + 1, Some(edit));
            }
        }
        self.render(out);
        (input.len(), None)
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) -> Option<Edit> {
        match self.esc {
            Esc::Start => {
                self.esc = match b {
                    b'[' => Esc::Csi(0),
                    b'O' => Esc::Ss3,
                    _ => Esc::None,
                };
                return None;
            }
            Esc::Csi(n) => {
                if b.is_ascii_digit() {
                    self.esc = Esc::Csi(n.saturating_mul(10).saturating_add(u16::from(b - b'0')));
                    return None;
                }
                if b == b';' {
                    return None;
                }
                self.esc = Esc::None;
                match (b, n) {
                    (b'~', 1 | 7) => self.cursor = 0,
                    (b'~', 4 | 8) => self.cursor = self.line.len(),
                    (b'~', 3) => self.delete_at_cursor(),
                    (b'~', _) => {}
                    (key, _) => self.arrow(key),
                }
                return None;
            }
            Esc::Ss3 => {
                self.esc = Esc::None;
                self.arrow(b);
                return None;
            }
            Esc::None => {}
        }
        if !self.utf8.is_empty() || b >= 0x80 {
            self.utf8.push(b);
            match std::str::from_utf8(&self.utf8) {
                Ok(s) => {
                    let chars: Vec<char> = s.chars().collect();
                    self.utf8.clear();
                    for c in chars {
                        self.insert(c);
                    }
                }
                Err(e) if e.error_len().is_some() || self.utf8.len() >= 4 => self.utf8.clear(),
                Err(_) => {}
            }
            return None;
        }
        match b {
            b'\r' | b'\n' => {
                let line = self.line();
                self.push_history(line.clone());
                self.finish_line(out);
                return Some(Edit::Line(line));
            }
            0x03 => {
                out.extend_from_slice(b"^C");
                self.finish_line(out);
                return Some(Edit::Interrupted);
            }
            0x04 => {
                if self.line.is_empty() {
                    out.extend_from_slice(b"\r\n");
                    return Some(Edit::Eof);
                }
                self.delete_at_cursor();
            }
            0x1b => self.esc = Esc::Start,
            0x01 => self.cursor = 0,
            0x05 => self.cursor = self.line.len(),
            0x02 => self.arrow(b'D'),
            0x06 => self.arrow(b'C'),
            0x10 => self.arrow(b'A'),
            0x0e => self.arrow(b'B'),
            0x7f | 0x08 if self.cursor > 0 => {
                self.cursor -= 1;
                self.line.remove(self.cursor);
            }
            0x0b => self.line.truncate(self.cursor),
            0x15 => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
            }
            0x17 => {
                let mut start = self.cursor;
                while start > 0 && self.line[start - 1].is_whitespace() {
                    start -= 1;
                }
                while start > 0 && !self.line[start - 1].is_whitespace() {
                    start -= 1;
                }
                self.line.drain(start..self.cursor);
                self.cursor = start;
            }
            0x0c => out.extend_from_slice(b"\x1b[H\x1b[2J"),
            b'\t' => self.complete(out),
            0x20..=0x7e => self.insert(char::from(b)),
            _ => {}
        }
        None
    }

    fn insert(&mut self, c: char) {
        self.line.insert(self.cursor, c);
        self.cursor += 1;
    }

    fn delete_at_cursor(&mut self) {
        if self.cursor < self.line.len() {
            self.line.remove(self.cursor);
        }
    }

    fn arrow(&mut self, key: u8) {
        match key {
            b'C' => self.cursor = (self.cursor + 1).min(self.line.len()),
            b'D' => self.cursor = self.cursor.saturating_sub(1),
            b'H' => self.cursor = 0,
            b'F' => self.cursor = self.line.len(),
            b'A' => {
                let next = match self.browsing {
                    None if self.history.is_empty() => return,
                    None => {
                        self.draft = std::mem::take(&mut self.line);
                        self.history.len() - 1
                    }
                    Some(0) => return,
                    Some(i) => i - 1,
                };
                self.browsing = Some(next);
                self.line = self.history[next].chars().collect();
                self.cursor = self.line.len();
            }
            b'B' => match self.browsing {
                None => {}
                Some(i) if i + 1 < self.history.len() => {
                    self.browsing = Some(i + 1);
                    self.line = self.history[i + 1].chars().collect();
                    self.cursor = self.line.len();
                }
                Some(_) => {
                    self.browsing = None;
                    self.line = std::mem::take(&mut self.draft);
                    self.cursor = self.line.len();
                }
            },
            _ => {}
        }
    }

    /// Completes the word before the cursor when it is the command name: the common prefix
    /// of the candidates, and a list of them when there are several.
    fn complete(&mut self, out: &mut Vec<u8>) {
        let before: String = self.line[..self.cursor].iter().collect();
        if before.contains(char::is_whitespace) {
            return;
        }
        let matches: Vec<String> = self
            .words
            .iter()
            .filter(|w| w.starts_with(&before))
            .cloned()
            .collect();
        let Some(first) = matches.first() else { return };
        let mut common = first.clone();
        for m in &matches[1..] {
            let len = common
                .char_indices()
                .zip(m.chars())
                .find(|((_, a), b)| a != b)
                .map_or(common.len().min(m.len()), |((i, _), _)| i);
            common.truncate(len);
        }
        for c in common[before.len()..].chars().collect::<Vec<_>>() {
            self.insert(c);
        }
        if matches.len() == 1 {
            self.insert(' ');
        } else if common.len() == before.len() {
            out.extend_from_slice(b"\r\n");
            let list: Vec<&str> = matches.iter().map(|s| s.as_str()).collect();
            out.extend_from_slice(list.join("  ").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    fn finish_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.line.clear();
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        self.esc = Esc::None;
    }

    /// Clears the prompt line and what is below it (a line a narrowed terminal wrapped), so
    /// that something can be printed in its place (then call [`render`](Editor::render)).
    pub fn clear(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\x1b[J");
    }

    /// Draws the prompt and the visible part of the line, and places the cursor.
    pub fn render(&self, out: &mut Vec<u8>) {
        let room = self
            .width
            .saturating_sub(self.prompt.chars().count() + 1)
            .max(1);
        let start = self.cursor.saturating_sub(room);
        let end = (start + room).min(self.line.len());
        out.extend_from_slice(b"\r");
        out.extend_from_slice(self.prompt.as_bytes());
        let visible: String = self.line[start..end].iter().collect();
        out.extend_from_slice(visible.as_bytes());
        out.extend_from_slice(b"\x1b[K");
        let back = end - self.cursor;
        if back > 0 {
            out.extend_from_slice(format!("\x1b[{back}D").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_in(ed: &mut Editor, mut input: &[u8]) -> Vec<Edit> {
        let mut out = Vec::new();
        let mut edits = Vec::new();
        while !input.is_empty() {
            let (used, edit) = ed.feed(input, &mut out);
            input = &input[used..];
            edits.extend(edit);
        }
        edits
    }

    #[test]
    fn typing_and_submitting() {
        let mut ed = Editor::new("(qmp) ", 80);
        assert!(type_in(&mut ed, b"query-").is_empty());
        assert_eq!(ed.line(), "query-");
        assert_eq!(
            type_in(&mut ed, b"status\r"),
            vec![Edit::Line("query-status".into())]
        );
        assert_eq!(ed.line(), "");
        assert_eq!(
            type_in(&mut ed, b"a\rb\n"),
            vec![Edit::Line("a".into()), Edit::Line("b".into())]
        );
        assert_eq!(ed.history().collect::<Vec<_>>(), ["query-status", "a", "b"]);
    }

    #[test]
    fn cursor_movement_and_deletion() {
        let mut ed = Editor::new("> ", 80);
        type_in(&mut ed, b"hello world");
        type_in(&mut ed, b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D"); // before "world"
        type_in(&mut ed, b"big ");
        assert_eq!(ed.line(), "hello big world");
        type_in(&mut ed, b"\x01X\x05Y"); // Ctrl-A, Ctrl-E
        assert_eq!(ed.line(), "Xhello big worldY");
        type_in(&mut ed, b"\x7f\x17"); // Backspace, Ctrl-W
        assert_eq!(ed.line(), "Xhello big ");
        type_in(&mut ed, b"\x1b[H\x1b[3~"); // Home, Delete
        assert_eq!(ed.line(), "hello big ");
        type_in(&mut ed, b"\x06\x06\x0b"); // right twice, kill to end
        assert_eq!(ed.line(), "he");
        type_in(&mut ed, b"\x15"); // kill to start
        assert_eq!(ed.line(), "");
        type_in(&mut ed, b"\x7f\x08\x01"); // nothing to delete: nothing inserted either
        assert_eq!(ed.line(), "");
        type_in(&mut ed, "é€".as_bytes());
        assert_eq!(ed.line(), "é€");
        type_in(&mut ed, &"😀".as_bytes()[..2]);
        type_in(&mut ed, &"😀".as_bytes()[2..]);
        assert_eq!(ed.line(), "é€😀");
        type_in(&mut ed, b"\x1bOH\x04"); // SS3 Home, Ctrl-D deletes on a non-empty line
        assert_eq!(ed.line(), "€😀");
    }

    #[test]
    fn history_walk_keeps_the_draft() {
        let mut ed = Editor::new("> ", 80);
        ed.load_history(
            ["one".to_string(), "two".to_string(), "two".to_string()],
            10,
        );
        assert_eq!(ed.history().count(), 2);
        type_in(&mut ed, b"dra");
        type_in(&mut ed, b"\x1b[A");
        assert_eq!(ed.line(), "two");
        type_in(&mut ed, b"\x1b[A\x1b[A");
        assert_eq!(ed.line(), "one");
        type_in(&mut ed, b"\x0e");
        assert_eq!(ed.line(), "two");
        type_in(&mut ed, b"\x1b[B");
        assert_eq!(ed.line(), "dra");
        ed.load_history((0..20).map(|i| i.to_string()), 5);
        assert_eq!(
            ed.history().collect::<Vec<_>>(),
            ["15", "16", "17", "18", "19"]
        );
    }

    #[test]
    fn ctrl_c_and_ctrl_d() {
        let mut ed = Editor::new("> ", 80);
        assert_eq!(type_in(&mut ed, b"abc\x03"), vec![Edit::Interrupted]);
        assert_eq!(ed.line(), "");
        assert_eq!(type_in(&mut ed, b"\x04"), vec![Edit::Eof]);
    }

    #[test]
    fn tab_completes_command_names() {
        let mut ed = Editor::new("> ", 80);
        ed.set_completions(vec![
            "query-status".into(),
            "query-stats".into(),
            "quit".into(),
            "stop".into(),
        ]);
        type_in(&mut ed, b"st\t");
        assert_eq!(ed.line(), "stop ");
        type_in(&mut ed, b"\x15query-st\t");
        assert_eq!(ed.line(), "query-stat");
        let mut out = Vec::new();
        assert_eq!(ed.feed(b"\t", &mut out), (1, None));
        let shown = String::from_utf8_lossy(&out);
        assert!(shown.contains("query-stats  query-status"), "{shown}");
        type_in(&mut ed, b"\x15zzz\t");
        assert_eq!(ed.line(), "zzz");
        type_in(&mut ed, b" q\t");
        assert_eq!(ed.line(), "zzz q", "only the command name is completed");
    }

    #[test]
    fn a_narrower_terminal_and_another_prompt_are_drawn_next_time() {
        let mut ed = Editor::new("> ", 40);
        let mut out = Vec::new();
        ed.feed(b"abcdefghijklmnopqrstuvwxyz", &mut out);
        ed.set_width(12);
        ed.set_prompt("T> ");
        out.clear();
        ed.render(&mut out);
        // 12 columns: prompt (3) + 8 characters + the cursor column.
        assert_eq!(String::from_utf8_lossy(&out), "\rT> stuvwxyz\x1b[K");
    }

    #[test]
    fn long_lines_scroll_to_keep_the_cursor_visible() {
        let mut ed = Editor::new("> ", 12);
        let mut out = Vec::new();
        ed.feed(b"abcdefghijklmnop", &mut out);
        let last = String::from_utf8_lossy(&out);
        let last = last.rsplit('\r').next().unwrap();
        // 12 columns: prompt (2) + 9 characters + the cursor column.
        assert_eq!(last, "> hijklmnop\x1b[K");
        out.clear();
        ed.feed(b"\x01", &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "\r> abcdefghi\x1b[K\x1b[9D");
    }
}
