//! The sans-IO session state machine.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::commands::{arguments_of, Command};
use crate::decoder::{Decoder, DEFAULT_MAX_MESSAGE_SIZE};
use crate::encoder::Encoder;
use crate::error::{Error, ReplyError, Result};
use crate::wire::{Greeting, Request};
use events::EventQueue;
pub use events::DEFAULT_MAX_EVENTS;
use names::{check_arguments, check_command_name};

/// The QMP specification's advice: at most eight in-band commands in flight, so that
/// out-of-band commands still get read.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// How a [`Session`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Enable out-of-band execution when the server offers it (default `false`).
    pub oob: bool,
    /// The bound on one received message's size (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`], 10 MiB). A larger message is skipped without being
    /// buffered; see "Messages over the size bound" on [`Session`].
    pub max_message_size: usize,
    /// How many in-band commands may be in flight at once (default 8; at least 1). Further
    /// commands wait in the session and are sent as replies come in.
    pub max_in_flight: usize,
    /// Send an `id` with every in-band command, `qmp_capabilities` included (default `true`).
    ///
    /// With `false`, in-band commands go on the wire without `id`, which QMP allows: the
    /// server executes in-band commands one after the other and answers them in order, so a
    /// reply without id is the reply to the oldest in-band command in flight that was sent
    /// without id. Out-of-band commands ([`Session::execute_oob`]) always carry an id, since
    /// their replies may overtake others, and so does
    /// [`guest_sync`](Session::guest_sync). Replies with an id are matched by id in both
    /// modes. A command keeps its place in that order until its reply arrives, even when
    /// the caller stopped waiting for it, so a late reply is never taken for the next
    /// command's. What is lost is only the check that the server answered the command the
    /// client thinks it did, and a server error about a request it could not read (which
    /// carries no id) is taken as the reply to the oldest command; the session only sends
    /// well-formed requests.
    ///
    /// A reply whose `id` is `null` is taken as a reply without id while a command sent
    /// without id waits for one (some servers echo a missing id that way; QEMU leaves it out).
    ///
    /// [`RequestId`]s are numbered the same way in both modes.
    pub in_band_ids: bool,
    /// How many events are queued at most (default [`DEFAULT_MAX_EVENTS`], 65,536; at least
    /// 1). Events that arrive while the queue is full are dropped and counted
    /// ([`Session::events_dropped`], [`Session::take_overflow`]), except the one an
    /// [event filter](Session::set_event_filter) is waiting for.
    pub max_events: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            oob: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            in_band_ids: true,
            max_events: DEFAULT_MAX_EVENTS,
        }
    }
}

/// Identifies a command issued on a [`Session`]; it is the `id` sent with the command (when
/// one is sent, see [`SessionOptions::in_band_ids`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Where a [`Session`] stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Connected to a QMP monitor, waiting for its greeting.
    AwaitingGreeting,
    /// The greeting arrived; `qmp_capabilities` is sent or waiting to be sent, and its reply
    /// has not arrived.
    Negotiating,
    /// Commands may be issued.
    Ready,
    /// The session has ended: end of stream, a fatal error, or [`Session::close`].
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Monitor,
    GuestAgent,
}

#[derive(Debug, Clone)]
struct Pending {
    command: String,
    oob: bool,
    /// Whether the request carried its id on the wire; if not, its reply comes without id,
    /// in order (see `Session::unnumbered`).
    numbered: bool,
    /// The caller stopped waiting ([`Session::abandon`]): the reply is discarded on arrival.
    abandoned: bool,
}

/// An in-band command waiting for a free slot.
#[derive(Debug, Clone)]
struct Waiting {
    id: u64,
    request: Request,
    /// The caller stopped waiting: it is still sent (in its turn), its reply discarded.
    abandoned: bool,
}

/// A QMP (or guest agent) client session, without any I/O.
///
/// The driver moves bytes: it passes what it reads from the socket to
/// [`receive`](Session::receive) (and [`receive_eof`](Session::receive_eof) at the end of
/// the stream), and writes what [`transmit`](Session::transmit) holds, reporting the amount
/// written with [`advance_transmit`](Session::advance_transmit). The session does the
/// protocol: it waits for the greeting, negotiates capabilities (`oob` when offered and
/// wanted), gives each command an id (on the wire too, unless
/// [`in_band_ids`](SessionOptions::in_band_ids) is off), keeps at most
/// [`max_in_flight`](SessionOptions::max_in_flight) in-band commands in flight, matches
/// replies to commands by id (or by order, for replies without id to commands sent without
/// id), discards the replies of commands the caller [abandoned](Session::abandon), and queues
/// the events that arrive at any time, under a bound
/// ([`max_events`](SessionOptions::max_events)), holding aside the one an
/// [event filter](Session::set_event_filter) waits for.
///
/// ```
/// use qmp_proto::{Session, SessionOptions, SessionState};
/// use serde_json::json;
///
/// let mut session = Session::new(SessionOptions::default());
/// session.receive(br#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
///     "package": ""}, "capabilities": ["oob"]}}"#).unwrap();
/// assert_eq!(session.transmit(), b"{\"execute\":\"qmp_capabilities\",\"id\":1}\r\n");
/// let n = session.transmit().len();
/// session.advance_transmit(n);
/// session.receive(b"{\"return\": {}, \"id\": 1}\r\n").unwrap();
/// assert_eq!(session.state(), SessionState::Ready);
///
/// let id = session.execute("query-status", None).unwrap();
/// assert_eq!(session.transmit(), b"{\"execute\":\"query-status\",\"id\":2}\r\n");
/// session.receive(b"{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\r\n\
///     {\"return\": {\"status\": \"running\", \"running\": true}, \"id\": 2}\r\n").unwrap();
/// assert_eq!(session.take_reply(id), Some(Ok(json!({"status": "running", "running": true}))));
/// assert_eq!(session.poll_event().unwrap().name, "RESUME");
/// ```
///
/// # Errors
///
/// [`receive`](Session::receive) fails, and the session becomes
/// [`Closed`](SessionState::Closed), on invalid JSON or UTF-8, and on protocol violations: a
/// message of unknown shape, a greeting where none is due, a reply before the greeting, an
/// error reply without id when no command sent without id waits for one (QEMU could not read a
/// request), a refused negotiation. A reply with an id the session does not wait for is
/// dropped with a `log::warn!`. When the session closes, every command still waiting for a
/// reply gets [`ReplyError::Closed`] as its reply, except a QMP `quit` that was sent before
/// the peer closed the stream cleanly, which gets `Ok({})` (see
/// [`receive_eof`](Session::receive_eof)); replies and events already received can still be
/// taken.
///
/// Commands are checked before anything is sent: [`execute`](Session::execute) refuses a
/// command name that QEMU cannot have ([`Error::InvalidCommandName`]: QAPI's naming rules, at
/// most [`MAX_COMMAND_NAME_LEN`](crate::MAX_COMMAND_NAME_LEN) bytes), so that a name is never
/// quoted back in an error reply larger than the bound, and arguments that are not an object
/// ([`Error::Arguments`]).
///
/// # Messages over the size bound
///
/// A message larger than [`max_message_size`](SessionOptions::max_message_size) is not fatal.
/// The decoder skips it as it arrives, without buffering it, and notes its top-level members
/// on the way (see [`Skipped`](crate::Skipped)); once its end has been skipped, the session
/// handles it like the message it was, minus its content:
///
/// - a reply (value or error) answers its command as a small one would, by id, or by order for
///   a reply without id to a command sent without id (the oldest such command in flight).
///   That command's reply is [`ReplyError::TooLarge`] with the size of the message, and the
///   session stays [`Ready`](SessionState::Ready): the next command works. A reply whose id
///   could not be read (not a short scalar), or that no command waits for, is dropped with a
///   `log::warn!`, like a small one; an error reply without id that no command waits for is
///   fatal, like a small one;
/// - an event is counted ([`events_too_large`](Session::events_too_large)) and dropped with a
///   `log::warn!`; no command fails;
/// - a greeting, a reply during negotiation or before the greeting, and a message of unknown
///   kind (not an object with `return`, `error` or `event`) are fatal, with
///   [`Error::MessageTooLarge`]: a small one would be fatal too, or the session cannot go on
///   without its content.
///
/// Nothing is reported before the message's end has arrived; a peer that stops in the middle
/// of one looks like a slow one (the driver's deadline applies), and the end of the stream
/// there is [`Error::Truncated`].
#[derive(Debug)]
pub struct Session {
    options: SessionOptions,
    mode: Mode,
    decoder: Decoder,
    state: SessionState,
    greeting: Option<Greeting>,
    oob_enabled: bool,
    next_id: u64,
    /// The id of the `qmp_capabilities` command while negotiating.
    negotiation: Option<u64>,
    /// Whether `qmp_capabilities` went without id, so that its reply comes without id.
    negotiation_unnumbered: bool,
    tx: Vec<u8>,
    tx_pos: usize,
    /// In-band commands waiting for a free slot.
    waiting: VecDeque<Waiting>,
    /// Commands sent whose reply has not arrived.
    sent: HashMap<u64, Pending>,
    /// The in-band commands sent without id whose reply has not arrived, oldest first: a
    /// reply without id belongs to the first.
    unnumbered: VecDeque<u64>,
    in_band_sent: usize,
    replies: HashMap<u64, std::result::Result<Value, ReplyError>>,
    events: EventQueue,
    /// Raw requests ([`Session::execute_raw`]) in flight or answered: the `id` their caller
    /// gave, put back into the reply.
    raw: HashMap<u64, Option<Value>>,
}

impl Session {
    /// A session with a QMP monitor: it waits for the greeting, then sends `qmp_capabilities`
    /// by itself, and is [`Ready`](SessionState::Ready) when QEMU accepts it.
    pub fn new(options: SessionOptions) -> Self {
        Session::with_mode(options, Mode::Monitor, SessionState::AwaitingGreeting)
    }

    /// A session with a QEMU guest agent: no greeting and no negotiation, ready at once.
    pub fn guest_agent(options: SessionOptions) -> Self {
        Session::with_mode(options, Mode::GuestAgent, SessionState::Ready)
    }

    fn with_mode(options: SessionOptions, mode: Mode, state: SessionState) -> Self {
        let options_max_events = options.max_events;
        Session {
            decoder: Decoder::with_max_message_size(options.max_message_size),
            options,
            mode,
            state,
            greeting: None,
            oob_enabled: false,
            next_id: 1,
            negotiation: None,
            negotiation_unnumbered: false,
            tx: Vec::new(),
            tx_pos: 0,
            waiting: VecDeque::new(),
            sent: HashMap::new(),
            unnumbered: VecDeque::new(),
            in_band_sent: 0,
            replies: HashMap::new(),
            events: EventQueue::new(options_max_events),
            raw: HashMap::new(),
        }
    }

    /// Processes bytes read from the peer: every complete message in them is handled
    /// (replies stored, events queued, negotiation advanced, messages over the size bound
    /// attributed).
    ///
    /// Errors are fatal: the session is closed (see the type's documentation). After the
    /// session closed, returns [`Error::Closed`].
    pub fn receive(&mut self, bytes: &[u8]) -> Result<()> {
        if self.state == SessionState::Closed {
            return Err(Error::Closed);
        }
        self.decoder.feed(bytes);
        loop {
            let outcome = match self.decoder.next_message() {
                Ok(Some(message)) => self.handle(message),
                Ok(None) => return Ok(()),
                Err(Error::MessageTooLarge {
                    limit,
                    size,
                    skipped,
                }) => self.handle_too_large(limit, size, skipped),
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                self.shut(false);
                return Err(error);
            }
        }
    }

    /// The peer closed the stream (a driver also calls this when the connection was reset).
    /// The session is [`Closed`](SessionState::Closed) after this; the result is `Ok` when
    /// the stream ended between messages, and [`Error::Truncated`] when it ended in the middle
    /// of one. Calling it again, or after a fatal error, returns `Ok`.
    ///
    /// Commands still waiting for their reply get one: a QMP `quit` that was sent gets
    /// `Ok({})` when the stream ended between messages (QEMU closing the connection is what
    /// `quit` does, and it may do so before its reply is read), every other command
    /// [`ReplyError::Closed`]. Abandoned commands get nothing.
    pub fn receive_eof(&mut self) -> Result<()> {
        if self.state == SessionState::Closed {
            return Ok(());
        }
        let truncated = self.decoder.is_mid_message();
        self.shut(!truncated);
        if truncated {
            return Err(Error::Truncated {
                buffered: self.decoder.buffered(),
            });
        }
        Ok(())
    }

    /// Ends the session from the caller's side (e.g. after a socket error): commands still
    /// waiting for a reply get [`ReplyError::Closed`] (`quit` too), and nothing more is sent
    /// or received.
    pub fn close(&mut self) {
        self.shut(false);
    }

    /// Bytes waiting to be written to the peer (may be empty).
    pub fn transmit(&self) -> &[u8] {
        &self.tx[self.tx_pos..]
    }

    /// Marks the first `n` bytes of [`transmit`](Session::transmit) as written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.tx_pos = self.tx_pos.saturating_add(n).min(self.tx.len());
        if self.tx_pos == self.tx.len() {
            self.tx.clear();
            self.tx_pos = 0;
        }
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Whether commands may be issued.
    pub fn is_ready(&self) -> bool {
        self.state == SessionState::Ready
    }

    /// The greeting, once received (never for a guest agent).
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.oob_enabled
    }

    /// Issues a command by name, with arguments (a JSON object) or none.
    ///
    /// When [`max_in_flight`](SessionOptions::max_in_flight) in-band commands are already in
    /// flight, the command waits in the session and is sent when a reply frees a slot.
    /// Fails with [`Error::NotReady`] before negotiation finished, [`Error::Closed`] after
    /// the session ended, [`Error::InvalidCommandName`] when `command` is not a name QEMU can
    /// have (see [`Error::InvalidCommandName`]), and [`Error::Arguments`] when `arguments` is
    /// not an object. Nothing is sent then.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<RequestId> {
        self.check_ready()?;
        check_command_name(command)?;
        check_arguments(command, arguments.as_ref())?;
        let id = self.allocate_id();
        let request = Request {
            command: command.to_owned(),
            arguments,
            id: self.options.in_band_ids.then(|| Value::from(id)),
            oob: false,
        };
        self.waiting.push_back(Waiting {
            id,
            request,
            abandoned: false,
        });
        self.pump();
        Ok(RequestId(id))
    }

    /// Issues a command for out-of-band execution (`exec-oob`): it is sent at once, whatever
    /// the number of in-band commands in flight, and its reply may overtake theirs.
    ///
    /// Fails with [`Error::OobNotEnabled`] unless out-of-band execution was negotiated, and
    /// otherwise like [`execute`](Session::execute).
    pub fn execute_oob(&mut self, command: &str, arguments: Option<Value>) -> Result<RequestId> {
        self.check_ready()?;
        if !self.oob_enabled {
            return Err(Error::OobNotEnabled);
        }
        check_command_name(command)?;
        check_arguments(command, arguments.as_ref())?;
        let id = self.allocate_id();
        let request = Request {
            command: command.to_owned(),
            arguments,
            id: Some(Value::from(id)),
            oob: true,
        };
        self.send(id, &request, false);
        Ok(RequestId(id))
    }

    /// Issues a typed command; parse its reply with [`parse_reply`](crate::parse_reply).
    pub fn execute_typed<C: Command>(&mut self, command: &C) -> Result<RequestId> {
        self.check_ready()?;
        let arguments = arguments_of(command)?;
        self.execute(C::NAME, arguments)
    }

    /// For a guest agent: resynchronizes with `guest-sync-delimited`.
    ///
    /// Queues a `0xFF` byte (which resets the agent's parser) followed by
    /// `guest-sync-delimited` with `token`, forgets every command in flight, and drops all
    /// received bytes up to the `0xFF` the agent sends before its reply, so that output a
    /// previous client left unread is skipped. The reply's value is `token`: compare it, and
    /// use a fresh random token each time (QAPI's `int`: at most `i64::MAX`).
    ///
    /// What was not written yet of earlier requests is dropped too: those commands are
    /// forgotten, so the agent must not run them. A request cut short that way leaves a partial
    /// JSON text at the agent, which the `0xFF` makes it discard (it answers with a parse error
    /// before the sentinel, which is skipped).
    pub fn guest_sync(&mut self, token: u64) -> Result<RequestId> {
        if self.state == SessionState::Closed {
            return Err(Error::Closed);
        }
        if self.mode != Mode::GuestAgent {
            return Err(Error::Protocol(
                "guest-sync-delimited resynchronization is for guest agent sessions".into(),
            ));
        }
        // Forgotten, not answered: the agent drops what it had not answered yet.
        self.sent.clear();
        let replies = &self.replies;
        self.raw.retain(|id, _| replies.contains_key(id));
        self.unnumbered.clear();
        self.waiting.clear();
        self.in_band_sent = 0;
        self.decoder.discard_until_sentinel();
        self.tx.clear();
        self.tx_pos = 0;
        self.tx.push(0xFF);
        let id = self.allocate_id();
        let request = Request {
            command: "guest-sync-delimited".into(),
            arguments: Some(serde_json::json!({ "id": token })),
            id: Some(Value::from(id)),
            oob: false,
        };
        self.send(id, &request, false);
        Ok(RequestId(id))
    }

    /// Takes the reply to command `id`: `Ok` with the returned value, or `Err` with the error
    /// QEMU reported ([`ReplyError::Qmp`]), the size of a reply larger than the bound
    /// ([`ReplyError::TooLarge`]), or [`ReplyError::Closed`] when the session ended first
    /// (see [`receive_eof`](Session::receive_eof) for `quit`). `None` while the reply has not
    /// arrived, once it was taken, and for an [abandoned](Session::abandon) command.
    pub fn take_reply(&mut self, id: RequestId) -> Option<std::result::Result<Value, ReplyError>> {
        let reply = self.replies.remove(&id.0);
        if reply.is_some() {
            self.raw.remove(&id.0);
        }
        reply
    }

    /// Whether the reply to command `id` arrived and was not taken yet.
    pub fn has_reply(&self, id: RequestId) -> bool {
        self.replies.contains_key(&id.0)
    }

    /// Whether command `id` was sent, or waits to be sent, and its reply has not arrived
    /// (an abandoned command too: it keeps its slot until then). `false` once the session is
    /// closed.
    pub fn is_pending(&self, id: RequestId) -> bool {
        self.sent.contains_key(&id.0) || self.waiting.iter().any(|w| w.id == id.0)
    }

    /// The caller stops waiting for command `id` (a driver's deadline passed): its reply is
    /// discarded, with a `log::debug!`, whether it already arrived or comes later. The command
    /// is not withdrawn: a command waiting for a slot is still sent in its turn, and one in
    /// flight keeps its slot and its place in the order of replies without id until its reply
    /// arrives, so that a late reply is never taken for another command's. When the session
    /// closes first, it gets no [`ReplyError::Closed`] either. Nothing is kept for it beyond
    /// its reply's arrival; an id that is not pending and has no reply is ignored.
    pub fn abandon(&mut self, id: RequestId) {
        self.raw.remove(&id.0);
        if let Some(reply) = self.replies.remove(&id.0) {
            log::debug!(
                "QMP: discarding the reply to abandoned command {}: {}",
                id.0,
                describe_reply(&reply)
            );
        } else if let Some(pending) = self.sent.get_mut(&id.0) {
            pending.abandoned = true;
        } else if let Some(waiting) = self.waiting.iter_mut().find(|w| w.id == id.0) {
            waiting.abandoned = true;
        }
    }

    /// How many in-band commands were sent and wait for their reply (at most
    /// [`max_in_flight`](SessionOptions::max_in_flight)).
    pub fn in_flight(&self) -> usize {
        self.in_band_sent
    }

    /// How many in-band commands wait for a free slot before being sent.
    pub fn queued(&self) -> usize {
        self.waiting.len()
    }

    /// How many commands of any kind (in-band, out-of-band, not yet sent) wait for a reply.
    pub fn pending(&self) -> usize {
        self.sent.len() + self.waiting.len()
    }

    /// Whether bytes of a message that has not been completed yet are buffered (see
    /// [`Decoder::is_mid_message`]). For a guest agent with no command in flight, that is
    /// stale output (a previous agent cut off in the middle of a reply, garbage): resynchronize
    /// with [`guest_sync`](Session::guest_sync), whose `0xFF` ends it.
    pub fn is_mid_message(&self) -> bool {
        self.decoder.is_mid_message()
    }

    /// The options the session was created with.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    fn check_ready(&self) -> Result<()> {
        match self.state {
            SessionState::Ready => Ok(()),
            SessionState::Closed => Err(Error::Closed),
            SessionState::AwaitingGreeting | SessionState::Negotiating => Err(Error::NotReady),
        }
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Ends the session. Every command still waiting for its reply, unless abandoned, gets
    /// one: `Ok({})` for a QMP `quit` that was sent when the peer closed the stream cleanly
    /// (`clean`), [`ReplyError::Closed`] otherwise.
    fn shut(&mut self, clean: bool) {
        self.state = SessionState::Closed;
        self.negotiation = None;
        let monitor = self.mode == Mode::Monitor;
        for (id, pending) in self.sent.drain() {
            if pending.abandoned {
                continue;
            }
            let reply = if clean && monitor && pending.command == "quit" {
                log::debug!("QMP: the peer closed the stream: that is quit's answer");
                Ok(Value::Object(Default::default()))
            } else {
                Err(ReplyError::Closed)
            };
            self.replies.insert(id, reply);
        }
        for waiting in self.waiting.drain(..) {
            if !waiting.abandoned {
                self.replies.insert(waiting.id, Err(ReplyError::Closed));
            }
        }
        let replies = &self.replies;
        self.raw.retain(|id, _| replies.contains_key(id));
        self.unnumbered.clear();
        self.in_band_sent = 0;
        self.tx.clear();
        self.tx_pos = 0;
    }

    fn compact_tx(&mut self) {
        if self.tx_pos > 0 && self.tx_pos * 2 >= self.tx.len() {
            self.tx.drain(..self.tx_pos);
            self.tx_pos = 0;
        }
    }

    /// Encodes `request` into the transmit buffer and records it as sent (`abandoned`: the
    /// caller no longer waits for it).
    fn send(&mut self, id: u64, request: &Request, abandoned: bool) {
        self.compact_tx();
        Encoder::encode(request, &mut self.tx);
        if !request.oob {
            self.in_band_sent += 1;
        }
        let numbered = request.id.is_some();
        if !numbered {
            debug_assert!(!request.oob, "out-of-band commands always carry an id");
            self.unnumbered.push_back(id);
        }
        self.sent.insert(
            id,
            Pending {
                command: request.command.clone(),
                oob: request.oob,
                numbered,
                abandoned,
            },
        );
    }

    /// Sends waiting in-band commands while slots are free.
    fn pump(&mut self) {
        let limit = self.options.max_in_flight.max(1);
        while self.in_band_sent < limit {
            let Some(waiting) = self.waiting.pop_front() else {
                break;
            };
            self.send(waiting.id, &waiting.request, waiting.abandoned);
        }
    }
}

/// A reply in a few words, for log lines (a value may be megabytes).
fn describe_reply(reply: &std::result::Result<Value, ReplyError>) -> String {
    match reply {
        Ok(_) => "a value".to_owned(),
        Err(error) => error.to_string(),
    }
}

mod events;
mod incoming;
mod names;
mod raw;
#[cfg(test)]
mod tests;
