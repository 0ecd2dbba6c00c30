//! QEMU's qtest protocol as a sans-IO client session.
//!
//! qtest is QEMU's device-test protocol: the client sends text lines (`inb 0x71`,
//! `writeq 0x1000 0x2a`, `clock_step 1000000`), QEMU answers each with one line, in order,
//! without ids: `OK` with the values, if any (`OK 0x0044`), `FAIL <message>` or
//! `ERR <message>`. Between a command and its reply, and when no command waits, QEMU may send
//! `IRQ raise N` / `IRQ lower N` for the interrupt lines the client intercepted.
//!
//! A [`QtestSession`] does that protocol without any I/O or clock, like [`Session`] does
//! QMP: the driver feeds the bytes it reads to [`receive`](QtestSession::receive) (and
//! [`receive_eof`](QtestSession::receive_eof) at the end of the stream), writes
//! [`transmit`](QtestSession::transmit) and reports the amount written with
//! [`advance_transmit`](QtestSession::advance_transmit). Each command issued returns a
//! [`Call<T>`]: once [`has_reply`](QtestSession::has_reply) says so,
//! [`take`](QtestSession::take) turns the reply into the typed value `T` (an `u8` for
//! [`inb`](QtestSession::inb), the new clock for
//! [`clock_step`](QtestSession::clock_step), the bytes for
//! [`read`](QtestSession::read), ...). IRQ notifications are queued separately, in arrival
//! order ([`poll_irq`](QtestSession::poll_irq)), and the current level of every line is kept
//! ([`irq_level`](QtestSession::irq_level)).
//!
//! ```
//! use qmp_proto::qtest::{Irq, QtestOptions, QtestSession};
//!
//! let mut qtest = QtestSession::new(QtestOptions::default());
//! let select = qtest.outb(0x70, 0x0c).unwrap();
//! let status = qtest.inb(0x71).unwrap();
//! assert_eq!(qtest.transmit(), b"outb 0x70 0xc\ninb 0x71\n");
//! let n = qtest.transmit().len();
//! qtest.advance_transmit(n);
//!
//! // What the driver read from the socket: an interrupt arrived before the second reply.
//! qtest.receive(b"OK\nIRQ lower 8\nOK 0x00c0\n").unwrap();
//! assert_eq!(qtest.take(select), Some(Ok(())));
//! assert_eq!(qtest.take(status), Some(Ok(0xc0)));
//! assert_eq!(qtest.poll_irq(), Some(Irq { num: 8, raised: false }));
//! assert!(!qtest.irq_level(8));
//! ```
//!
//! QEMU does not validate command lines: a missing or malformed argument (`inb` without a
//! port, a `read` of 0 bytes, a number that does not parse) fails an assertion and aborts
//! QEMU. The typed calls only send well-formed lines (and complete zero-length reads and
//! writes without sending anything), and [`send_raw`](QtestSession::send_raw) refuses the
//! lines that would abort QEMU 7.2. Received lines and queued notifications are bounded (see
//! [`QtestOptions`]). QEMU 7.2 implements `clock_step` and `clock_set` only with
//! the qtest accelerator (`-accel qtest`); with TCG they fail with `FAIL Unknown command`.
//!
//! [`Session`]: crate::Session

mod calls;
mod error;
mod grammar;

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;

use crate::base64;
use crate::session::RequestId;

pub use calls::Endianness;
pub use error::QtestError;

/// The default bound on one received line: 1 MiB, enough for a `read` of up to 512 KiB or a
/// `b64read` of up to 768 KiB.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// The default bound on queued IRQ notifications.
pub const DEFAULT_MAX_IRQS: usize = 4096;

/// The number of interrupt lines QEMU's qtest server reports (`IRQ raise N` has `N` below it).
pub const MAX_IRQ: u32 = 256;

/// How a [`QtestSession`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QtestOptions {
    /// The bound on one received line, in bytes, newline excluded (default
    /// [`DEFAULT_MAX_LINE`]). A longer line is a fatal [`QtestError::LineTooLong`]; a `read`
    /// or `b64read` whose reply could not fit is refused before it is sent.
    pub max_line: usize,
    /// How many IRQ notifications are kept until the caller takes them (default
    /// [`DEFAULT_MAX_IRQS`]). Notifications that arrive while the queue is full are counted
    /// in [`irqs_dropped`](QtestSession::irqs_dropped) and not queued; the levels reported by
    /// [`irq_level`](QtestSession::irq_level) still follow them.
    pub max_irqs: usize,
}

impl Default for QtestOptions {
    fn default() -> Self {
        QtestOptions {
            max_line: DEFAULT_MAX_LINE,
            max_irqs: DEFAULT_MAX_IRQS,
        }
    }
}

/// One `IRQ raise N` or `IRQ lower N` notification.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Irq {
    /// The interrupt line: the index of the intercepted device's GPIO pin (for the PC's
    /// `ioapic`, the ISA IRQ number; IRQ 0 is reported as 0 though it is wired to GSI 2).
    pub num: u32,
    /// `true` for `raise`, `false` for `lower`.
    pub raised: bool,
}

/// A command issued on a [`QtestSession`], whose reply [`take`](QtestSession::take) turns
/// into a `T`.
pub struct Call<T> {
    id: RequestId,
    /// The expected size of a blob reply.
    size: usize,
    parse: fn(&str, usize) -> Result<T, String>,
    _reply: PhantomData<fn() -> T>,
}

impl<T> Call<T> {
    /// The command's id in its session (commands are numbered from 1 in issue order).
    pub fn id(&self) -> RequestId {
        self.id
    }
}

impl<T> Clone for Call<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Call<T> {}

impl<T> std::fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("id", &self.id)
            .field("reply", &std::any::type_name::<T>())
            .finish()
    }
}

/// A reply (or the reason there will be none) waiting to be taken.
#[derive(Debug)]
struct Reply {
    command: String,
    /// `Ok` with the whole `OK ...` line, or the error.
    outcome: Result<String, QtestError>,
}

/// A qtest client session, without any I/O (see the [module documentation](self)).
///
/// Commands are written to the transmit buffer as they are issued (several may be in flight:
/// QEMU answers them in order). Each reply line is matched to the oldest command still
/// waiting; IRQ notifications are queued apart, wherever they arrive.
///
/// # Errors and bounds
///
/// A reply that is `FAIL` or `ERR`, or that does not parse, is an error for its command only
/// (see [`QtestError`]); the session goes on. Fatal for the session are a line longer than
/// [`max_line`](QtestOptions::max_line), a reply when no command waits, a malformed `IRQ`
/// line, and the end of the stream: [`receive`](QtestSession::receive) or
/// [`receive_eof`](QtestSession::receive_eof) report them, the session is closed, and every
/// command still waiting gets [`QtestError::Closed`] as its reply. Replies and
/// notifications received before remain available. Memory is bounded: one partial line of
/// at most `max_line` bytes, at most [`max_irqs`](QtestOptions::max_irqs) notifications,
/// and one reply per command issued.
#[derive(Debug)]
pub struct QtestSession {
    options: QtestOptions,
    closed: bool,
    rx: Vec<u8>,
    /// How much of `rx` is known to hold no newline.
    scanned: usize,
    tx: Vec<u8>,
    tx_pos: usize,
    next_id: u64,
    /// Commands sent whose reply has not arrived, oldest first: (id, command line).
    waiting: VecDeque<(u64, String)>,
    replies: HashMap<u64, Reply>,
    irqs: VecDeque<Irq>,
    irqs_dropped: u64,
    levels: [u64; (MAX_IRQ / 64) as usize],
}

impl Default for QtestSession {
    fn default() -> Self {
        QtestSession::new(QtestOptions::default())
    }
}

impl QtestSession {
    /// A session, ready for commands at once (qtest has no greeting).
    pub fn new(options: QtestOptions) -> Self {
        QtestSession {
            options,
            closed: false,
            rx: Vec::new(),
            scanned: 0,
            tx: Vec::new(),
            tx_pos: 0,
            next_id: 1,
            waiting: VecDeque::new(),
            replies: HashMap::new(),
            irqs: VecDeque::new(),
            irqs_dropped: 0,
            levels: [0; (MAX_IRQ / 64) as usize],
        }
    }

    /// The options the session was created with.
    pub fn options(&self) -> &QtestOptions {
        &self.options
    }

    /// Processes bytes read from QEMU, in any chunking: every complete line is handled
    /// (replies matched, notifications queued).
    ///
    /// Errors are fatal (see the type's documentation); after the session closed, returns
    /// [`QtestError::Closed`].
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), QtestError> {
        if self.closed {
            return Err(QtestError::Closed { command: None });
        }
        self.rx.extend_from_slice(bytes);
        let mut start = 0;
        let mut outcome = Ok(());
        while let Some(newline) = self.rx[start + self.scanned..]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = start + self.scanned + newline;
            self.scanned = 0;
            let line = std::mem::take(&mut self.rx);
            let result = self.line(&line[start..end]);
            self.rx = line;
            start = end + 1;
            if let Err(error) = result {
                outcome = Err(error);
                break;
            }
        }
        self.rx.drain(..start);
        if outcome.is_ok() {
            self.scanned = self.rx.len();
            if self.rx.len() > self.options.max_line {
                outcome = Err(QtestError::LineTooLong {
                    limit: self.options.max_line,
                });
            }
        }
        if outcome.is_err() {
            self.shut();
        }
        outcome
    }

    /// The peer closed the stream. The session is closed after this and every command still
    /// waiting gets [`QtestError::Closed`]. The result is `Ok` when the stream ended between
    /// lines and [`QtestError::Truncated`] when it ended in the middle of one. Calling it
    /// again, or after the session closed, returns `Ok`.
    pub fn receive_eof(&mut self) -> Result<(), QtestError> {
        if self.closed {
            return Ok(());
        }
        let buffered = self.rx.len();
        self.shut();
        if buffered > 0 {
            return Err(QtestError::Truncated { buffered });
        }
        Ok(())
    }

    /// Ends the session from the caller's side (e.g. after a socket error): nothing more is
    /// sent or received, and every command still waiting gets [`QtestError::Closed`].
    pub fn close(&mut self) {
        self.shut();
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes waiting to be written to QEMU (may be empty).
    pub fn transmit(&self) -> &[u8] {
        &self.tx[self.tx_pos..]
    }

    /// Marks the first `n` bytes of [`transmit`](QtestSession::transmit) as written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.tx_pos = self.tx_pos.saturating_add(n).min(self.tx.len());
        if self.tx_pos == self.tx.len() {
            self.tx.clear();
            self.tx_pos = 0;
        }
    }

    /// Sends a command line as it is (without its newline), for commands without a typed
    /// call; the reply's value is the text after `OK ` (empty for a bare `OK`).
    ///
    /// The line must be words of printable ASCII separated by single spaces: anything else
    /// (an empty line, a newline or other control character, a leading, trailing or double
    /// space, which QEMU reads as an empty argument) is refused with
    /// [`QtestError::InvalidCommand`]. So are the lines that would make QEMU abort: a
    /// command QEMU 7.2 knows with an argument missing or not a number where QEMU wants one
    /// (decimal, `0x` hex or `0`-prefixed octal, as QEMU reads them), a port above 0xffff,
    /// a `read` of 0 bytes; and a `read` or `b64read` whose reply could not fit
    /// [`max_line`](QtestOptions::max_line). Other commands are passed on (QEMU answers
    /// `FAIL Unknown command` to those it does not know). Fails with [`QtestError::Closed`]
    /// after the session ended.
    pub fn send_raw(&mut self, line: &str) -> Result<Call<String>, QtestError> {
        let words: Vec<&str> = line.split(' ').collect();
        if line.is_empty() {
            return Err(invalid(line, "the line is empty"));
        }
        for word in &words {
            check_word(line, word)?;
        }
        match grammar::check_line(&words) {
            Err(message) => return Err(invalid(line, message)),
            Ok(Some(size)) => {
                let size = usize::try_from(size).ok();
                let reply_len = if words[0] == "read" {
                    size.and_then(|n| n.checked_mul(2)?.checked_add(5))
                } else {
                    size.and_then(base64::encoded_len)
                        .and_then(|n| n.checked_add(3))
                };
                self.check_reply_fits(line, reply_len)?;
            }
            Ok(None) => {}
        }
        self.issue(line.to_owned(), 0, parse_raw)
    }

    /// Takes the reply to `call`: `Ok` with its value, or the error (QEMU's `FAIL`/`ERR`, a
    /// reply that did not parse, [`QtestError::Closed`]). `None` while the reply has not
    /// arrived, or when it was already taken.
    pub fn take<T>(&mut self, call: Call<T>) -> Option<Result<T, QtestError>> {
        let Reply { command, outcome } = self.replies.remove(&call.id.0)?;
        Some(outcome.and_then(|line| {
            let values = line.strip_prefix("OK").unwrap_or_default();
            let values = values.strip_prefix(' ').unwrap_or(values);
            (call.parse)(values, call.size).map_err(|message| QtestError::Reply {
                command,
                reply: line,
                message,
            })
        }))
    }

    /// Whether the reply to command `id` (or the error that ended it) is there to be taken.
    pub fn has_reply(&self, id: RequestId) -> bool {
        self.replies.contains_key(&id.0)
    }

    /// Whether command `id` was sent and its reply has not arrived.
    pub fn is_pending(&self, id: RequestId) -> bool {
        self.waiting.iter().any(|(w, _)| *w == id.0)
    }

    /// How many commands wait for their reply.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// The oldest queued IRQ notification, if any.
    pub fn poll_irq(&mut self) -> Option<Irq> {
        self.irqs.pop_front()
    }

    /// The queued IRQ notifications, oldest first.
    pub fn irqs(&self) -> impl Iterator<Item = &Irq> {
        self.irqs.iter()
    }

    /// How many IRQ notifications are queued.
    pub fn irqs_queued(&self) -> usize {
        self.irqs.len()
    }

    /// How many IRQ notifications arrived while the queue was full and were not queued.
    pub fn irqs_dropped(&self) -> u64 {
        self.irqs_dropped
    }

    /// The level of interrupt line `num` according to the notifications received so far
    /// (queued, taken or dropped): `true` after `IRQ raise num` until `IRQ lower num`. All
    /// lines start low, as they do in QEMU when the qtest connection opens.
    pub fn irq_level(&self, num: u32) -> bool {
        num < MAX_IRQ && self.levels[(num / 64) as usize] & (1 << (num % 64)) != 0
    }

    /// Writes `line` and a newline, and records it as waiting for its reply.
    fn issue<T>(
        &mut self,
        line: String,
        size: usize,
        parse: fn(&str, usize) -> Result<T, String>,
    ) -> Result<Call<T>, QtestError> {
        if self.closed {
            return Err(QtestError::Closed {
                command: Some(line),
            });
        }
        let id = self.allocate_id();
        if self.tx_pos > 0 && self.tx_pos * 2 >= self.tx.len() {
            self.tx.drain(..self.tx_pos);
            self.tx_pos = 0;
        }
        self.tx.extend_from_slice(line.as_bytes());
        self.tx.push(b'\n');
        self.waiting.push_back((id.0, line));
        Ok(Call {
            id,
            size,
            parse,
            _reply: PhantomData,
        })
    }

    /// A command answered without asking QEMU (a zero-length read or write): its reply is
    /// ready at once.
    fn complete_locally<T>(
        &mut self,
        line: String,
        parse: fn(&str, usize) -> Result<T, String>,
    ) -> Result<Call<T>, QtestError> {
        if self.closed {
            return Err(QtestError::Closed {
                command: Some(line),
            });
        }
        let id = self.allocate_id();
        self.replies.insert(
            id.0,
            Reply {
                command: line,
                outcome: Ok("OK".into()),
            },
        );
        Ok(Call {
            id,
            size: 0,
            parse,
            _reply: PhantomData,
        })
    }

    fn allocate_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Handles one received line (without its newline).
    fn line(&mut self, raw: &[u8]) -> Result<(), QtestError> {
        if raw.len() > self.options.max_line {
            return Err(QtestError::LineTooLong {
                limit: self.options.max_line,
            });
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text.to_owned(),
            Err(_) => raw.escape_ascii().to_string(),
        };
        if raw == b"IRQ" || raw.starts_with(b"IRQ ") {
            return self.irq(text);
        }
        let Some((id, command)) = self.waiting.pop_front() else {
            return Err(QtestError::Protocol {
                line: text,
                message: "a reply when no command waits for one".into(),
            });
        };
        let verb = raw.split(|&b| b == b' ').next().unwrap_or_default();
        let outcome = match verb {
            b"OK" => Ok(text),
            b"FAIL" | b"ERR" => Err(QtestError::Failed {
                command: command.clone(),
                reply: text,
            }),
            _ => Err(QtestError::Reply {
                command: command.clone(),
                reply: text,
                message: "not OK, FAIL or ERR".into(),
            }),
        };
        self.replies.insert(id, Reply { command, outcome });
        Ok(())
    }

    /// Handles an `IRQ ...` line.
    fn irq(&mut self, line: String) -> Result<(), QtestError> {
        let mut words = line.split(' ').skip(1);
        let raised = match words.next() {
            Some("raise") => true,
            Some("lower") => false,
            _ => {
                return Err(QtestError::Protocol {
                    line,
                    message: "an IRQ notification is `IRQ raise N` or `IRQ lower N`".into(),
                })
            }
        };
        let num = words
            .next()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| n < MAX_IRQ);
        let (Some(num), None) = (num, words.next()) else {
            return Err(QtestError::Protocol {
                line,
                message: format!("an IRQ number is a decimal number below {MAX_IRQ}"),
            });
        };
        let bit = 1u64 << (num % 64);
        if raised {
            self.levels[(num / 64) as usize] |= bit;
        } else {
            self.levels[(num / 64) as usize] &= !bit;
        }
        if self.irqs.len() < self.options.max_irqs {
            self.irqs.push_back(Irq { num, raised });
        } else {
            if self.irqs_dropped == 0 {
                log::warn!(
                    "qtest: {} IRQ notifications queued, dropping further ones",
                    self.irqs.len()
                );
            }
            self.irqs_dropped += 1;
        }
        Ok(())
    }

    fn shut(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.tx.clear();
        self.tx_pos = 0;
        self.rx = Vec::new();
        self.scanned = 0;
        for (id, command) in std::mem::take(&mut self.waiting) {
            self.replies.insert(
                id,
                Reply {
                    outcome: Err(QtestError::Closed {
                        command: Some(command.clone()),
                    }),
                    command,
                },
            );
        }
    }
}

fn invalid(command: &str, message: impl Into<String>) -> QtestError {
    QtestError::InvalidCommand {
        command: command.escape_default().to_string(),
        message: message.into(),
    }
}

/// Checks one word of a command line: non-empty printable ASCII without spaces.
fn check_word(line: &str, word: &str) -> Result<(), QtestError> {
    if word.is_empty() {
        return Err(invalid(
            line,
            "empty word: words are separated by single spaces, with none at either end",
        ));
    }
    if let Some(c) = word.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(invalid(line, format!("{c:?} is not printable ASCII")));
    }
    Ok(())
}

fn parse_raw(values: &str, _size: usize) -> Result<String, String> {
    Ok(values.to_owned())
}

#[cfg(test)]
mod tests;
