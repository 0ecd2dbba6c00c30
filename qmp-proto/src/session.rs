//! The sans-IO session state machine.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::commands::{arguments_of, Command};
use crate::decoder::{Decoder, DEFAULT_MAX_MESSAGE_SIZE};
use crate::encoder::Encoder;
use crate::error::{
    excerpt, Error, ReplyError, Result, Skipped, SkippedId, SkippedKind, MAX_COMMAND_NAME_LEN,
};
use crate::wire::{kind, Event, Greeting, Message, Request};

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
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            oob: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            in_band_ids: true,
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
/// id), and queues the events that arrive at any time.
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
/// dropped with a `log::warn!`. When the session closes, commands still waiting for a reply
/// are forgotten; replies and events already received can still be taken.
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
/// on the way (see [`Skipped`]); once its end has been skipped, the session handles it like
/// the message it was, minus its content:
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
    waiting: VecDeque<(u64, Request)>,
    /// Commands sent whose reply has not arrived.
    sent: HashMap<u64, Pending>,
    /// The in-band commands sent without id whose reply has not arrived, oldest first: a
    /// reply without id belongs to the first.
    unnumbered: VecDeque<u64>,
    in_band_sent: usize,
    replies: HashMap<u64, std::result::Result<Value, ReplyError>>,
    events: VecDeque<Event>,
    /// Events skipped for being over the size bound.
    events_too_large: u64,
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
            events: VecDeque::new(),
            events_too_large: 0,
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
                self.shut();
                return Err(error);
            }
        }
    }

    /// The peer closed the stream. The session is [`Closed`](SessionState::Closed) after
    /// this; the result is `Ok` when the stream ended between messages, and
    /// [`Error::Truncated`] when it ended in the middle of one. Calling it again, or after a
    /// fatal error, returns `Ok`.
    pub fn receive_eof(&mut self) -> Result<()> {
        if self.state == SessionState::Closed {
            return Ok(());
        }
        self.shut();
        if self.decoder.is_mid_message() {
            return Err(Error::Truncated {
                buffered: self.decoder.buffered(),
            });
        }
        Ok(())
    }

    /// Ends the session from the caller's side (e.g. after a socket error): pending commands
    /// are forgotten and nothing more is sent or received.
    pub fn close(&mut self) {
        self.shut();
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
        self.waiting.push_back((id, request));
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
        self.send(id, &request);
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
        self.sent.clear();
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
        self.send(id, &request);
        Ok(RequestId(id))
    }

    /// Takes the reply to command `id`: `Ok` with the returned value, or `Err` with the error
    /// QEMU reported ([`ReplyError::Qmp`]) or, when the reply was larger than the bound, its
    /// size ([`ReplyError::TooLarge`]). `None` while the reply has not arrived (or was
    /// already taken).
    pub fn take_reply(&mut self, id: RequestId) -> Option<std::result::Result<Value, ReplyError>> {
        self.replies.remove(&id.0)
    }

    /// Whether the reply to command `id` arrived and was not taken yet.
    pub fn has_reply(&self, id: RequestId) -> bool {
        self.replies.contains_key(&id.0)
    }

    /// Whether command `id` was sent, or waits to be sent, and its reply has not arrived.
    /// `false` once the session is closed.
    pub fn is_pending(&self, id: RequestId) -> bool {
        self.sent.contains_key(&id.0) || self.waiting.iter().any(|(w, _)| *w == id.0)
    }

    /// The oldest queued event, if any. Events are kept in arrival order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Removes and returns the oldest queued event called `name` that matches `pattern`
    /// (see [`Event::matches`]), leaving the others queued in order.
    pub fn take_event(&mut self, name: &str, pattern: Option<&Value>) -> Option<Event> {
        let index = self.events.iter().position(|e| e.matches(name, pattern))?;
        self.events.remove(index)
    }

    /// The queued events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// How many events are queued.
    pub fn events_queued(&self) -> usize {
        self.events.len()
    }

    /// How many events were dropped for being larger than
    /// [`max_message_size`](SessionOptions::max_message_size) (each with a `log::warn!`).
    pub fn events_too_large(&self) -> u64 {
        self.events_too_large
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

    fn shut(&mut self) {
        self.state = SessionState::Closed;
        self.negotiation = None;
        self.sent.clear();
        self.unnumbered.clear();
        self.waiting.clear();
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

    /// Encodes `request` into the transmit buffer and records it as sent.
    fn send(&mut self, id: u64, request: &Request) {
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
            },
        );
    }

    /// Sends waiting in-band commands while slots are free.
    fn pump(&mut self) {
        let limit = self.options.max_in_flight.max(1);
        while self.in_band_sent < limit {
            let Some((id, request)) = self.waiting.pop_front() else {
                break;
            };
            self.send(id, &request);
        }
    }

    fn handle(&mut self, message: Message) -> Result<()> {
        match message {
            Message::Event(event) => {
                self.events.push_back(event);
                Ok(())
            }
            Message::Greeting(greeting) => self.handle_greeting(greeting),
            Message::Return { id, value } => self.handle_reply(id, Ok(value), false),
            Message::Error { id, error } => {
                self.handle_reply(id, Err(ReplyError::Qmp(error)), true)
            }
        }
    }

    /// A message over the size bound was skipped (see "Messages over the size bound" on the
    /// type).
    fn handle_too_large(&mut self, limit: usize, size: u64, skipped: Skipped) -> Result<()> {
        let is_error = match &skipped.kind {
            SkippedKind::Event(name) => {
                self.events_too_large += 1;
                log::warn!(
                    "dropping QMP event {} of {size} bytes: larger than the limit of {limit} bytes",
                    name.as_deref().unwrap_or("(name unknown)")
                );
                return Ok(());
            }
            SkippedKind::Return => false,
            SkippedKind::Error => true,
            SkippedKind::Greeting | SkippedKind::Unknown => {
                return Err(Error::MessageTooLarge {
                    limit,
                    size,
                    skipped,
                })
            }
        };
        if self.state != SessionState::Ready {
            // Before the greeting, or the reply to qmp_capabilities: the session cannot go on.
            return Err(Error::MessageTooLarge {
                limit,
                size,
                skipped,
            });
        }
        let id = match skipped.id {
            SkippedId::Absent => None,
            SkippedId::Value(id) => Some(id),
            SkippedId::Unreadable => {
                // Every id the session sends is a short number.
                log::warn!(
                    "dropping a QMP {} of {size} bytes (over the limit of {limit} bytes) whose id \
                     could not be read",
                    if is_error { "error reply" } else { "reply" }
                );
                return Ok(());
            }
        };
        self.handle_reply(id, Err(ReplyError::TooLarge { size, limit }), is_error)
    }

    fn handle_greeting(&mut self, greeting: Greeting) -> Result<()> {
        if self.mode == Mode::GuestAgent {
            return Err(Error::Protocol(
                "a QMP greeting arrived on a guest agent session".into(),
            ));
        }
        if self.state != SessionState::AwaitingGreeting {
            return Err(Error::Protocol(
                "a second QMP greeting arrived in the middle of the session".into(),
            ));
        }
        let oob = self.options.oob && greeting.has_capability("oob");
        self.greeting = Some(greeting);
        let id = self.allocate_id();
        let request = Request {
            command: "qmp_capabilities".into(),
            arguments: oob.then(|| serde_json::json!({"enable": ["oob"]})),
            id: self.options.in_band_ids.then(|| Value::from(id)),
            oob: false,
        };
        // Not counted as a command in flight: nothing else is sent before its reply.
        self.compact_tx();
        Encoder::encode(&request, &mut self.tx);
        self.negotiation = Some(id);
        self.negotiation_unnumbered = !self.options.in_band_ids;
        self.oob_enabled = oob;
        self.state = SessionState::Negotiating;
        Ok(())
    }

    /// Stores a reply for its command. `is_error`: the message was an error reply (`reply` is
    /// an error either way for a reply over the size bound).
    fn handle_reply(
        &mut self,
        id: Option<Value>,
        reply: std::result::Result<Value, ReplyError>,
        is_error: bool,
    ) -> Result<()> {
        if self.state == SessionState::AwaitingGreeting {
            return Err(Error::Protocol(
                "a reply arrived before the QMP greeting".into(),
            ));
        }
        // Some servers echo a missing id as `null`; the session never sends a null id, so
        // such a reply is taken as one without id when a command sent without id waits.
        let awaits_unnumbered = (self.negotiation.is_some() && self.negotiation_unnumbered)
            || !self.unnumbered.is_empty();
        let id = id.filter(|id| !(id.is_null() && awaits_unnumbered));
        let Some(id) = id else {
            if self.negotiation.is_some() && self.negotiation_unnumbered {
                return self.negotiated(reply);
            }
            if let Some(n) = self.unnumbered.pop_front() {
                self.answer(n, reply);
                return Ok(());
            }
            return match reply {
                Err(error) if is_error => Err(Error::Protocol(format!(
                    "an error reply without id (the server could not read a request): {error}"
                ))),
                _ => {
                    log::warn!("dropping a QMP reply without id");
                    Ok(())
                }
            };
        };
        let number = id.as_u64();
        if number.is_some() && number == self.negotiation && !self.negotiation_unnumbered {
            return self.negotiated(reply);
        }
        // Only commands sent with their id can be answered by id.
        let known = number.filter(|n| self.sent.get(n).is_some_and(|p| p.numbered));
        match known {
            Some(n) => self.answer(n, reply),
            None => {
                log::warn!(
                    "dropping a QMP reply with unknown id {} ({})",
                    excerpt_value(&id),
                    match &reply {
                        Ok(_) => "return".to_owned(),
                        Err(e) => e.to_string(),
                    }
                );
            }
        }
        Ok(())
    }

    /// The reply to `qmp_capabilities` arrived. (One over the size bound never gets here.)
    fn negotiated(&mut self, reply: std::result::Result<Value, ReplyError>) -> Result<()> {
        self.negotiation = None;
        match reply {
            Ok(_) => {
                self.state = SessionState::Ready;
                self.pump();
                Ok(())
            }
            Err(ReplyError::Qmp(error)) => Err(Error::Negotiation(error)),
            Err(ReplyError::TooLarge { size, limit }) => Err(Error::MessageTooLarge {
                limit,
                size,
                skipped: Skipped::default(),
            }),
        }
    }

    /// Stores the reply to command `n`, which is in `sent`, and sends what waits for a slot.
    fn answer(&mut self, n: u64, reply: std::result::Result<Value, ReplyError>) {
        let Some(pending) = self.sent.remove(&n) else {
            return;
        };
        if !pending.oob {
            self.in_band_sent -= 1;
        }
        log::trace!("reply to {} (command {n})", pending.command);
        self.replies.insert(n, reply);
        self.pump();
    }
}

/// Refuses a command name QEMU cannot have, following QAPI's naming rules: an ASCII letter,
/// then ASCII letters, digits, `-` and `_`; a downstream extension puts `__RFQDN_` before that,
/// RFQDN being a reversed domain name of ASCII letters, digits, `-` and `.` (e.g.
/// `__com.redhat_drive-mirror`). Names are also bounded in length, so that a mistake never
/// sends (and has QEMU quote back) megabytes.
fn check_command_name(name: &str) -> Result<()> {
    let invalid = |reason: String| {
        let bytes = name.as_bytes();
        let shown = if bytes.len() > 64 {
            format!("{}...", excerpt(bytes, 0, 40))
        } else {
            excerpt(bytes, 0, 64)
        };
        Err(Error::InvalidCommandName {
            name: shown,
            len: bytes.len(),
            reason,
        })
    };
    if name.len() > MAX_COMMAND_NAME_LEN {
        return invalid(format!(
            "longer than the limit of {MAX_COMMAND_NAME_LEN} bytes"
        ));
    }
    let mut rest = name;
    if let Some(extension) = name.strip_prefix("__") {
        let Some((domain, base)) = extension.split_once('_') else {
            return invalid(
                "a name starting with __ is a downstream extension, __RFQDN_NAME, and the `_` \
                 after the domain is missing"
                    .into(),
            );
        };
        if domain.is_empty() {
            return invalid("the downstream prefix __RFQDN_ has an empty domain".into());
        }
        if let Some(bad) = domain
            .bytes()
            .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')))
        {
            return invalid(format!(
                "the domain of the downstream prefix __RFQDN_ may only hold ASCII letters, \
                 digits, `-` and `.`, not {}",
                describe_byte(bad)
            ));
        }
        rest = base;
    }
    match rest.bytes().next() {
        None => return invalid("the name is empty".into()),
        Some(first) if !first.is_ascii_alphabetic() => {
            return invalid(format!(
                "a name must start with an ASCII letter (or a downstream prefix __RFQDN_), not \
                 {}",
                describe_byte(first)
            ))
        }
        Some(_) => {}
    }
    if let Some(bad) = rest
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')))
    {
        return invalid(format!(
            "a name may only hold ASCII letters, digits, `-` and `_`, not {}",
            describe_byte(bad)
        ));
    }
    Ok(())
}

/// A byte for an error message: `'x'` when printable ASCII, else its escape.
fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("'{}'", b.escape_ascii())
    }
}

fn check_arguments(command: &str, arguments: Option<&Value>) -> Result<()> {
    match arguments {
        None | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(Error::Arguments {
            command: command.to_owned(),
            message: format!("they are {}, and QMP needs an object", kind(other)),
        }),
    }
}

/// At most 40 characters of `value`'s JSON text, for log lines.
fn excerpt_value(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{QueryStatus, RunState};
    use crate::wire::{ErrorClass, QmpError};
    use serde_json::json;

    fn greeting(capabilities: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::encode_value(
            &json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                "package": "Debian 1:7.2+dfsg-7+deb12u18"}, "capabilities": capabilities}}),
            &mut out,
        );
        out
    }

    fn line(value: Value) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::encode_value(&value, &mut out);
        out
    }

    fn event(name: &str, data: Option<Value>) -> Vec<u8> {
        let mut value = json!({"event": name, "timestamp": {"seconds": 1, "microseconds": 2}});
        if let Some(data) = data {
            value["data"] = data;
        }
        line(value)
    }

    /// Takes everything the session wants to send, as requests.
    fn take_sent(session: &mut Session) -> Vec<Request> {
        let mut decoder = Decoder::new();
        decoder.feed(session.transmit());
        let n = session.transmit().len();
        session.advance_transmit(n);
        let mut requests = Vec::new();
        while let Some(value) = decoder.next_value().unwrap() {
            requests.push(Request::from_value(value).unwrap());
        }
        assert!(!decoder.is_mid_message());
        requests
    }

    fn ready(options: SessionOptions, capabilities: &[&str]) -> Session {
        let mut session = Session::new(options);
        session.receive(&greeting(capabilities)).unwrap();
        let sent = take_sent(&mut session);
        assert_eq!(sent.len(), 1);
        let id = sent[0].id.clone().unwrap();
        session
            .receive(&line(json!({"return": {}, "id": id})))
            .unwrap();
        assert!(session.is_ready());
        session
    }

    /// The error QEMU reported, from a reply that must be one.
    fn qmp_error(reply: Option<std::result::Result<Value, ReplyError>>) -> QmpError {
        match reply {
            Some(Err(ReplyError::Qmp(error))) => error,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    fn id_of(request: &Request) -> u64 {
        request.id.as_ref().and_then(Value::as_u64).unwrap()
    }

    #[test]
    fn negotiation_without_oob() {
        let mut session = Session::new(SessionOptions::default());
        assert_eq!(session.state(), SessionState::AwaitingGreeting);
        assert_eq!(session.execute("stop", None), Err(Error::NotReady));
        assert!(session.transmit().is_empty());
        session.receive(&greeting(&["oob"])).unwrap();
        assert_eq!(session.state(), SessionState::Negotiating);
        assert_eq!(session.greeting().unwrap().version.minor, 2);
        assert_eq!(session.execute("stop", None), Err(Error::NotReady));
        let sent = take_sent(&mut session);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].command, "qmp_capabilities");
        assert_eq!(sent[0].arguments, None);
        assert!(!sent[0].oob);
        session
            .receive(&line(json!({"return": {}, "id": sent[0].id})))
            .unwrap();
        assert_eq!(session.state(), SessionState::Ready);
        assert!(!session.oob_enabled());
        assert_eq!(
            session.execute_oob("migrate-pause", None),
            Err(Error::OobNotEnabled)
        );
        assert_eq!(session.in_flight(), 0);
    }

    #[test]
    fn negotiation_with_oob() {
        let options = SessionOptions {
            oob: true,
            ..SessionOptions::default()
        };
        let mut session = Session::new(options.clone());
        session.receive(&greeting(&["oob"])).unwrap();
        let sent = take_sent(&mut session);
        assert_eq!(sent[0].arguments, Some(json!({"enable": ["oob"]})));
        session
            .receive(&line(json!({"return": {}, "id": sent[0].id})))
            .unwrap();
        assert!(session.oob_enabled());

        // Out-of-band commands do not wait for an in-band slot, and may be answered first.
        let in_band: Vec<RequestId> = (0..8)
            .map(|_| session.execute("query-status", None).unwrap())
            .collect();
        let blocked = session.execute("query-name", None).unwrap();
        let oob = session
            .execute_oob("migrate-pause", Some(json!({})))
            .unwrap();
        let sent = take_sent(&mut session);
        assert_eq!(sent.len(), 9);
        assert!(sent[8].oob);
        assert_eq!(id_of(&sent[8]), oob.0);
        assert_eq!(session.in_flight(), 8);
        assert_eq!(session.queued(), 1);
        assert_eq!(session.pending(), 10);
        session
            .receive(&line(json!({"error": {"class": "GenericError",
                "desc": "migrate-pause is currently only supported during postcopy-active state"},
                "id": oob.0})))
            .unwrap();
        assert_eq!(
            qmp_error(session.take_reply(oob)).class,
            ErrorClass::GenericError
        );
        assert!(session.transmit().is_empty());
        session
            .receive(&line(json!({"return": {}, "id": in_band[0].0})))
            .unwrap();
        let sent = take_sent(&mut session);
        assert_eq!(sent.len(), 1);
        assert_eq!(id_of(&sent[0]), blocked.0);
    }

    #[test]
    fn oob_wanted_but_not_offered() {
        let options = SessionOptions {
            oob: true,
            ..SessionOptions::default()
        };
        let mut session = Session::new(options);
        session.receive(&greeting(&[])).unwrap();
        let sent = take_sent(&mut session);
        assert_eq!(sent[0].arguments, None);
        session
            .receive(&line(json!({"return": {}, "id": sent[0].id})))
            .unwrap();
        assert!(!session.oob_enabled());
        assert_eq!(session.execute_oob("x", None), Err(Error::OobNotEnabled));
    }

    #[test]
    fn negotiation_refused() {
        let mut session = Session::new(SessionOptions::default());
        session.receive(&greeting(&[])).unwrap();
        let sent = take_sent(&mut session);
        let err = session
            .receive(&line(json!({"error": {"class": "GenericError",
                "desc": "Capability negotiation is already complete, command ignored"},
                "id": sent[0].id})))
            .unwrap_err();
        assert!(matches!(&err, Error::Negotiation(e) if e.class == ErrorClass::GenericError));
        assert!(err.to_string().contains("already complete"));
        assert_eq!(session.state(), SessionState::Closed);
        assert_eq!(session.execute("stop", None), Err(Error::Closed));
    }

    #[test]
    fn at_most_max_in_flight_and_replies_matched_by_id() {
        let mut session = ready(SessionOptions::default(), &[]);
        let ids: Vec<RequestId> = (0..20)
            .map(|i| {
                session
                    .execute(
                        "human-monitor-command",
                        Some(json!({"command-line": format!("echo {i}")})),
                    )
                    .unwrap()
            })
            .collect();
        let mut sent = take_sent(&mut session);
        assert_eq!(sent.len(), 8);
        assert_eq!(session.in_flight(), 8);
        assert_eq!(session.queued(), 12);
        assert!(ids.iter().all(|id| session.is_pending(*id)));
        // Every id sent is distinct and the arguments went with their command.
        for (request, id) in sent.iter().zip(&ids) {
            assert_eq!(id_of(request), id.0);
        }
        // Replies in reverse order, each freeing one slot.
        let mut answered = Vec::new();
        while let Some(request) = sent.pop() {
            let id = id_of(&request);
            let text = request.arguments.as_ref().unwrap()["command-line"].clone();
            session
                .receive(&line(json!({"return": text, "id": id})))
                .unwrap();
            answered.push((RequestId(id), text));
            assert!(session.in_flight() <= 8);
            let mut more = take_sent(&mut session);
            sent.append(&mut more);
        }
        assert_eq!(answered.len(), 20);
        assert_eq!(session.in_flight(), 0);
        assert_eq!(session.queued(), 0);
        for (i, id) in ids.iter().enumerate() {
            assert!(!session.is_pending(*id));
            assert!(session.has_reply(*id));
            assert_eq!(
                session.take_reply(*id),
                Some(Ok(json!(format!("echo {i}"))))
            );
            assert!(!session.has_reply(*id));
            assert_eq!(session.take_reply(*id), None);
        }
    }

    #[test]
    fn max_in_flight_of_zero_still_sends() {
        let options = SessionOptions {
            max_in_flight: 0,
            ..SessionOptions::default()
        };
        let mut session = ready(options, &[]);
        let a = session.execute("stop", None).unwrap();
        session.execute("cont", None).unwrap();
        assert_eq!(take_sent(&mut session).len(), 1);
        session
            .receive(&line(json!({"return": {}, "id": a.0})))
            .unwrap();
        assert_eq!(take_sent(&mut session)[0].command, "cont");
    }

    #[test]
    fn events_at_any_time_are_queued_in_order() {
        let mut session = Session::new(SessionOptions::default());
        session.receive(&event("EARLY", None)).unwrap();
        session.receive(&greeting(&[])).unwrap();
        let sent = take_sent(&mut session);
        let mut input = event("NEGOTIATING", None);
        input.extend(line(json!({"return": {}, "id": sent[0].id})));
        session.receive(&input).unwrap();
        let id = session.execute_typed(&QueryStatus).unwrap();
        let mut input = event("STOP", None);
        input.extend(line(
            json!({"return": {"status": "paused", "singlestep": false, "running": false},
                "id": id.0}),
        ));
        input.extend(event(
            "DEVICE_DELETED",
            Some(json!({"device": "nic0", "path": "/p"})),
        ));
        input.extend(event(
            "DEVICE_DELETED",
            Some(json!({"device": "nic1", "path": "/q"})),
        ));
        session.receive(&input).unwrap();
        let reply = session.take_reply(id).unwrap().unwrap();
        let status = crate::parse_reply::<QueryStatus>(reply).unwrap();
        assert_eq!(status.status, RunState::Paused);
        assert_eq!(session.events_queued(), 5);
        let names: Vec<&str> = session.events().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "EARLY",
                "NEGOTIATING",
                "STOP",
                "DEVICE_DELETED",
                "DEVICE_DELETED"
            ]
        );
        let nic1 = session
            .take_event("DEVICE_DELETED", Some(&json!({"data": {"device": "nic1"}})))
            .unwrap();
        assert_eq!(nic1.data["path"], "/q");
        assert_eq!(session.take_event("RESET", None), None);
        assert_eq!(session.poll_event().unwrap().name, "EARLY");
        assert_eq!(session.poll_event().unwrap().name, "NEGOTIATING");
        assert_eq!(session.poll_event().unwrap().name, "STOP");
        assert_eq!(session.poll_event().unwrap().data["device"], "nic0");
        assert_eq!(session.poll_event(), None);
        assert_eq!(session.events_queued(), 0);
    }

    #[test]
    fn replies_with_unknown_ids_are_dropped() {
        let mut session = ready(SessionOptions::default(), &[]);
        let id = session.execute("stop", None).unwrap();
        take_sent(&mut session);
        let mut input = Vec::new();
        input.extend(line(json!({"return": {}, "id": 999})));
        input.extend(line(json!({"return": {}, "id": "abc"})));
        input.extend(line(json!({"return": {}, "id": id.0 as f64 + 0.5})));
        input.extend(line(
            json!({"error": {"class": "GenericError", "desc": "x"}, "id": [1]}),
        ));
        input.extend(line(json!({"return": {}})));
        session.receive(&input).unwrap();
        assert!(session.is_pending(id));
        assert!(!session.has_reply(id));
        assert!(session.is_ready());
        session
            .receive(&line(json!({"error": {"class": "CommandNotFound",
                "desc": "The command stop has not been found"}, "id": id.0})))
            .unwrap();
        let error = qmp_error(session.take_reply(id));
        assert_eq!(error.class, ErrorClass::CommandNotFound);
        assert_eq!(
            error.to_string(),
            "CommandNotFound: The command stop has not been found"
        );
        // A duplicate reply to an answered command is unknown too.
        session
            .receive(&line(json!({"return": 1, "id": id.0})))
            .unwrap();
        assert_eq!(session.take_reply(id), None);
    }

    #[test]
    fn error_without_id_is_a_protocol_error() {
        let mut session = ready(SessionOptions::default(), &[]);
        let id = session.execute("stop", None).unwrap();
        let err = session
            .receive(&line(json!({"error": {"class": "GenericError",
                "desc": "JSON parse error, expecting value"}})))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(m) if m.contains("without id") && m.contains("expecting value")),
            "{err}"
        );
        assert_eq!(session.state(), SessionState::Closed);
        assert!(!session.is_pending(id));
        assert!(session.transmit().is_empty());
        assert_eq!(session.receive(b"{}"), Err(Error::Closed));
        assert_eq!(session.execute("cont", None), Err(Error::Closed));
        assert_eq!(session.receive_eof(), Ok(()));
    }

    #[test]
    fn replies_and_greetings_out_of_place() {
        let mut session = Session::new(SessionOptions::default());
        let err = session
            .receive(&line(json!({"return": {}, "id": 1})))
            .unwrap_err();
        assert!(matches!(&err, Error::Protocol(m) if m.contains("before the QMP greeting")));

        let mut session = ready(SessionOptions::default(), &[]);
        let err = session.receive(&greeting(&[])).unwrap_err();
        assert!(matches!(&err, Error::Protocol(m) if m.contains("second QMP greeting")));
        assert_eq!(session.state(), SessionState::Closed);

        let mut session = Session::guest_agent(SessionOptions::default());
        let err = session.receive(&greeting(&[])).unwrap_err();
        assert!(matches!(&err, Error::Protocol(m) if m.contains("guest agent")));
    }

    #[test]
    fn broken_streams_close_the_session() {
        type Check = fn(&Error) -> bool;
        // Over the bound and of unknown kind: fatal, as a small message of unknown shape is.
        let big_array = format!("[{}1]\r\n", "1,".repeat(150)).into_bytes();
        let big_object = format!("{{\"what\": \"{}\"}}\r\n", "w".repeat(300)).into_bytes();
        let cases: [(&[u8], Check); 5] = [
            (b"{\"return\": nope}\r\n", |e| {
                matches!(e, Error::Json { .. })
            }),
            (b"{\"return\": \"\xfe\"}\r\n", |e| {
                matches!(e, Error::Utf8 { .. })
            }),
            (b"{\"what\": 1}\r\n", |e| matches!(e, Error::Protocol(_))),
            (&big_array, |e| {
                *e == Error::MessageTooLarge {
                    limit: 200,
                    size: 303,
                    skipped: Skipped::default(),
                }
            }),
            (&big_object, |e| {
                *e == Error::MessageTooLarge {
                    limit: 200,
                    size: 312,
                    skipped: Skipped::default(),
                }
            }),
        ];
        for (input, expected) in cases {
            let options = SessionOptions {
                max_message_size: 200,
                ..SessionOptions::default()
            };
            let mut session = ready(options, &[]);
            let id = session.execute("stop", None).unwrap();
            let mut bytes = line(json!({"return": {}, "id": id.0}));
            bytes.extend_from_slice(input);
            let err = session.receive(&bytes).unwrap_err();
            assert!(expected(&err), "{err}");
            assert_eq!(session.state(), SessionState::Closed);
            // The reply that came before the error is still there.
            assert_eq!(session.take_reply(id), Some(Ok(json!({}))));
        }
    }

    #[test]
    fn end_of_stream() {
        let mut session = ready(SessionOptions::default(), &[]);
        let id = session.execute("quit", None).unwrap();
        let mut input = line(json!({"return": {}, "id": id.0}));
        input.extend(event(
            "SHUTDOWN",
            Some(json!({"guest": false, "reason": "host-qmp-quit"})),
        ));
        session.receive(&input).unwrap();
        assert_eq!(session.receive_eof(), Ok(()));
        assert_eq!(session.state(), SessionState::Closed);
        assert_eq!(session.take_reply(id), Some(Ok(json!({}))));
        assert_eq!(session.poll_event().unwrap().name, "SHUTDOWN");
        assert_eq!(session.receive_eof(), Ok(()));

        let mut session = ready(SessionOptions::default(), &[]);
        let id = session.execute("query-status", None).unwrap();
        session.receive(b"\r\n{\"return\": {\"sta").unwrap();
        assert_eq!(
            session.receive_eof(),
            Err(Error::Truncated { buffered: 16 })
        );
        assert_eq!(session.state(), SessionState::Closed);
        assert!(!session.is_pending(id));

        // QEMU exiting before its greeting is a clean end of stream: the driver tells why.
        let mut session = Session::new(SessionOptions::default());
        assert_eq!(session.receive_eof(), Ok(()));
        assert_eq!(session.state(), SessionState::Closed);
    }

    #[test]
    fn close_by_the_caller() {
        let mut session = ready(SessionOptions::default(), &[]);
        let id = session.execute("stop", None).unwrap();
        session.close();
        assert!(!session.is_pending(id));
        assert_eq!(session.transmit(), b"");
        assert_eq!(session.receive(b"{}"), Err(Error::Closed));
        assert_eq!(session.execute_typed(&QueryStatus), Err(Error::Closed));
    }

    #[test]
    fn arguments_must_be_objects() {
        let mut session = ready(SessionOptions::default(), &[]);
        let err = session
            .execute("device_del", Some(json!("nic0")))
            .unwrap_err();
        assert_eq!(
            err,
            Error::Arguments {
                command: "device_del".into(),
                message: "they are a string, and QMP needs an object".into()
            }
        );
        assert!(session.transmit().is_empty());
        assert!(session.is_ready());
        session
            .execute("device_del", Some(json!({"id": "nic0"})))
            .unwrap();
    }

    #[test]
    fn partial_writes() {
        let mut session = ready(SessionOptions::default(), &[]);
        session.execute("stop", None).unwrap();
        let all = session.transmit().to_vec();
        session.advance_transmit(5);
        assert_eq!(session.transmit(), &all[5..]);
        session.execute("cont", None).unwrap();
        let mut expected = all[5..].to_vec();
        expected.extend_from_slice(b"{\"execute\":\"cont\",\"id\":3}\r\n");
        assert_eq!(session.transmit(), &expected[..]);
        session.advance_transmit(usize::MAX);
        assert!(session.transmit().is_empty());
    }

    #[test]
    fn guest_agent_mode() {
        let mut session = Session::guest_agent(SessionOptions::default());
        assert!(session.is_ready());
        assert_eq!(session.greeting(), None);
        let ping = session.execute("guest-ping", None).unwrap();
        assert_eq!(
            session.transmit(),
            b"{\"execute\":\"guest-ping\",\"id\":1}\r\n"
        );
        session.advance_transmit(usize::MAX);
        session.receive(b"{\"return\": {}, \"id\": 1}\n").unwrap();
        assert_eq!(session.take_reply(ping), Some(Ok(json!({}))));

        // Resynchronization: stale output before the sentinel is skipped.
        let stale = session.execute("guest-info", None).unwrap();
        session.advance_transmit(usize::MAX);
        session
            .receive(b"{\"return\": {\"version\": \"7.2")
            .unwrap();
        let sync = session.guest_sync(123456).unwrap();
        assert!(!session.is_pending(stale));
        let out = session.transmit().to_vec();
        assert_eq!(out[0], 0xFF);
        assert_eq!(
            &out[1..],
            b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":123456},\"id\":3}\r\n"
        );
        session.advance_transmit(out.len());
        session
            .receive(b".0\"}, \"id\": 2}\n{\"return\": 99, \"id\": 3}\n\xff{\"return\": 123456, \"id\": 3}\n")
            .unwrap();
        assert_eq!(session.take_reply(stale), None);
        assert_eq!(session.take_reply(sync), Some(Ok(json!(123456))));
        assert_eq!(session.receive_eof(), Ok(()));

        let mut monitor = ready(SessionOptions::default(), &[]);
        assert!(matches!(monitor.guest_sync(1), Err(Error::Protocol(_))));
    }

    /// A resync drops what was not written yet of forgotten commands: the agent never runs
    /// them, and the part of a request already written is ended by the `0xFF`.
    #[test]
    fn guest_sync_drops_unwritten_requests() {
        let mut session = Session::guest_agent(SessionOptions::default());
        session
            .execute(
                "guest-file-write",
                Some(json!({"handle": 1, "buf-b64": "AAAA"})),
            )
            .unwrap();
        session.execute("guest-ping", None).unwrap();
        session.advance_transmit(10);
        let sync = session.guest_sync(5).unwrap();
        let mut expected = vec![0xFF];
        expected.extend_from_slice(
            b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":5},\"id\":3}\r\n",
        );
        assert_eq!(session.transmit(), &expected[..]);
        assert_eq!(session.pending(), 1);
        assert!(session.is_pending(sync));
        // The agent's parse error for the cut request comes before its sentinel: skipped.
        session
            .receive(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\n\xff{\"return\": 5, \"id\": 3}\n")
            .unwrap();
        assert_eq!(session.take_reply(sync), Some(Ok(json!(5))));
        assert!(session.is_ready());

        // Half a message with nothing in flight: stale, seen, and cut by the next resync.
        assert!(!session.is_mid_message());
        session.receive(b"{\"return\": {\"half").unwrap();
        assert!(session.is_mid_message());
        let sync = session.guest_sync(6).unwrap();
        assert!(!session.is_mid_message());
        session
            .receive(b" way\"}}\n\xff{\"return\": 6, \"id\": 4}\n")
            .unwrap();
        assert_eq!(session.take_reply(sync), Some(Ok(json!(6))));
    }

    /// One whole conversation, fed in every possible two-piece split (and byte by byte), gives
    /// the same results.
    #[test]
    fn any_split_of_a_conversation() {
        let mut handshake = greeting(&["oob"]);
        handshake.extend(line(json!({"return": {}, "id": 1})));
        let mut server = event("STOP", None);
        server.extend(line(
            json!({"return": {"status": "paused", "running": false}, "id": 2}),
        ));
        server.extend(line(
            json!({"error": {"class": "GenericError", "desc": "no"}, "id": 3}),
        ));
        server.extend(event("SHUTDOWN", Some(json!({"guest": false}))));
        // Under miri, a sample of the splits (every one takes minutes there).
        let step = if cfg!(miri) { 23 } else { 1 };
        for split in (0..=server.len()).step_by(step).chain([server.len() + 1]) {
            let mut session = Session::new(SessionOptions::default());
            for byte in handshake.chunks(1) {
                session.receive(byte).unwrap();
            }
            assert!(session.is_ready());
            let ids = [
                session.execute("query-status", None).unwrap(),
                session.execute("bad", None).unwrap(),
            ];
            if split <= server.len() {
                session.receive(&server[..split]).unwrap();
                session.receive(&server[split..]).unwrap();
            } else {
                server.chunks(1).for_each(|b| session.receive(b).unwrap());
            }
            session.receive_eof().unwrap();
            assert_eq!(ids, [RequestId(2), RequestId(3)]);
            assert_eq!(
                session.take_reply(ids[0]),
                Some(Ok(json!({"status": "paused", "running": false})))
            );
            assert!(session.take_reply(ids[1]).unwrap().is_err());
            let names: Vec<String> = std::iter::from_fn(|| session.poll_event())
                .map(|e| e.name)
                .collect();
            assert_eq!(names, ["STOP", "SHUTDOWN"]);
        }
    }

    // ---- in_band_ids: false ----------------------------------------------------------------

    fn no_ids() -> SessionOptions {
        SessionOptions {
            oob: true,
            in_band_ids: false,
            ..SessionOptions::default()
        }
    }

    /// A ready session without in-band ids, `oob` negotiated when `capabilities` offer it.
    fn ready_without_ids(capabilities: &[&str]) -> Session {
        let mut session = Session::new(no_ids());
        session.receive(&greeting(capabilities)).unwrap();
        let oob = capabilities.contains(&"oob");
        let expected: &[u8] = if oob {
            b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}\r\n"
        } else {
            b"{\"execute\":\"qmp_capabilities\"}\r\n"
        };
        assert_eq!(session.transmit(), expected);
        session.advance_transmit(expected.len());
        session.receive(&line(json!({"return": {}}))).unwrap();
        assert!(session.is_ready());
        assert_eq!(session.oob_enabled(), oob);
        session
    }

    fn error_reply(class: &str, desc: &str) -> Vec<u8> {
        line(json!({"error": {"class": class, "desc": desc}}))
    }

    #[test]
    fn without_ids_the_wire_has_ids_only_for_oob() {
        let mut session = ready_without_ids(&["oob"]);
        let status = session.execute("query-status", None).unwrap();
        let hmp = session
            .execute(
                "human-monitor-command",
                Some(json!({"command-line": "info version"})),
            )
            .unwrap();
        let pause = session.execute_oob("migrate-pause", None).unwrap();
        // Request ids are numbered as with ids on the wire.
        assert_eq!(
            (status, hmp, pause),
            (RequestId(2), RequestId(3), RequestId(4))
        );
        assert_eq!(
            session.transmit(),
            &b"{\"execute\":\"query-status\"}\r\n\
               {\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info version\"}}\r\n\
               {\"exec-oob\":\"migrate-pause\",\"id\":4}\r\n"[..]
        );
        assert_eq!(session.in_flight(), 2);
        assert_eq!(session.pending(), 3);

        // The default keeps ids on every command, qmp_capabilities included.
        let mut numbered = Session::new(SessionOptions::default());
        numbered.receive(&greeting(&[])).unwrap();
        assert_eq!(
            numbered.transmit(),
            b"{\"execute\":\"qmp_capabilities\",\"id\":1}\r\n"
        );
    }

    #[test]
    fn without_ids_replies_match_in_order() {
        let mut session = ready_without_ids(&[]);
        let ids: Vec<RequestId> = (0..12)
            .map(|i| {
                session
                    .execute(
                        "human-monitor-command",
                        Some(json!({"command-line": format!("echo {i}")})),
                    )
                    .unwrap()
            })
            .collect();
        let mut sent = take_sent(&mut session);
        assert_eq!(sent.len(), 8);
        assert_eq!(session.queued(), 4);
        assert!(sent.iter().all(|r| r.id.is_none()));
        let mut answered = 0;
        // Answer in order, as QEMU does, two replies per read, taking what gets sent.
        while !sent.is_empty() {
            let mut input = Vec::new();
            for request in sent.drain(..sent.len().min(2)) {
                let text = request.arguments.unwrap()["command-line"].clone();
                input.extend(line(json!({"return": text})));
            }
            session.receive(&input).unwrap();
            answered += input.iter().filter(|&&b| b == b'\n').count();
            assert!(session.in_flight() <= 8);
            sent.extend(take_sent(&mut session));
        }
        assert_eq!(answered, 12);
        assert_eq!((session.in_flight(), session.queued()), (0, 0));
        // Taken in any order, each reply is its own command's.
        for (i, id) in ids.iter().enumerate().rev() {
            assert!(!session.is_pending(*id));
            assert!(session.has_reply(*id));
            assert_eq!(
                session.take_reply(*id),
                Some(Ok(json!(format!("echo {i}"))))
            );
            assert!(!session.has_reply(*id));
        }
    }

    #[test]
    fn without_ids_oob_replies_interleave_with_in_band_ones() {
        let mut session = ready_without_ids(&["oob"]);
        let a = session.execute("query-status", None).unwrap();
        let p1 = session.execute_oob("migrate-pause", None).unwrap();
        let b = session.execute("bad-command", None).unwrap();
        let p2 = session.execute_oob("migrate-pause", None).unwrap();
        let c = session.execute("query-name", None).unwrap();
        let sent = take_sent(&mut session);
        assert_eq!(
            sent.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            [None, Some(json!(p1.0)), None, Some(json!(p2.0)), None]
        );
        // The second oob reply first, then in-band and oob ones mixed; an event in between.
        let mut input = line(json!({"error": {"class": "GenericError",
            "desc": "migrate-pause is currently only supported during postcopy-active state"},
            "id": p2.0}));
        input.extend(line(
            json!({"return": {"status": "running", "running": true}}),
        ));
        input.extend(event("RESUME", None));
        input.extend(line(json!({"return": {}, "id": p1.0})));
        input.extend(error_reply(
            "CommandNotFound",
            "The command bad-command has not been found",
        ));
        session.receive(&input).unwrap();
        assert!(session.is_pending(c));
        assert!(!session.is_pending(b));
        session
            .receive(&line(json!({"return": {"name": "vm0"}})))
            .unwrap();
        assert_eq!(
            session.take_reply(a),
            Some(Ok(json!({"status": "running", "running": true})))
        );
        assert_eq!(session.take_reply(p1), Some(Ok(json!({}))));
        let error = qmp_error(session.take_reply(b));
        assert_eq!(error.class, ErrorClass::CommandNotFound);
        assert!(qmp_error(session.take_reply(p2)).desc.contains("postcopy"));
        assert_eq!(session.take_reply(c), Some(Ok(json!({"name": "vm0"}))));
        assert_eq!(session.poll_event().unwrap().name, "RESUME");
        assert_eq!(session.pending(), 0);
        assert_eq!(session.in_flight(), 0);
    }

    #[test]
    fn without_ids_an_error_goes_to_its_command() {
        let mut session = ready_without_ids(&[]);
        let first = session.execute("stop", None).unwrap();
        let second = session
            .execute("device_del", Some(json!({"id": "nic9"})))
            .unwrap();
        let third = session.execute("query-name", None).unwrap();
        take_sent(&mut session);
        let mut input = line(json!({"return": {}}));
        input.extend(line(json!({"error": {"class": "DeviceNotFound",
            "desc": "Device 'nic9' not found"}})));
        input.extend(line(json!({"return": {"name": "vm0"}})));
        session.receive(&input).unwrap();
        assert_eq!(session.take_reply(first), Some(Ok(json!({}))));
        let error = qmp_error(session.take_reply(second));
        assert_eq!(error.class, ErrorClass::DeviceNotFound);
        assert_eq!(error.desc, "Device 'nic9' not found");
        assert_eq!(session.take_reply(third), Some(Ok(json!({"name": "vm0"}))));
        assert!(session.is_ready());
    }

    #[test]
    fn without_ids_a_late_reply_is_not_the_next_commands() {
        let mut session = ready_without_ids(&[]);
        // The caller gives up on `slow` (a timeout in the driver) but does not forget it: the
        // command keeps its place until its reply comes.
        let slow = session.execute("slow", None).unwrap();
        let fast = session.execute("fast", None).unwrap();
        take_sent(&mut session);
        assert!(session.is_pending(slow));
        session.receive(&line(json!({"return": "slow"}))).unwrap();
        assert!(session.is_pending(fast));
        assert!(!session.has_reply(fast));
        assert_eq!(session.take_reply(slow), Some(Ok(json!("slow"))));
        session.receive(&line(json!({"return": "fast"}))).unwrap();
        assert_eq!(session.take_reply(fast), Some(Ok(json!("fast"))));
        // A reply carrying the number of a command sent without id is not its reply.
        let later = session.execute("later", None).unwrap();
        take_sent(&mut session);
        session
            .receive(&line(json!({"return": "forged", "id": later.0})))
            .unwrap();
        assert!(session.is_pending(later));
        session.receive(&line(json!({"return": "later"}))).unwrap();
        assert_eq!(session.take_reply(later), Some(Ok(json!("later"))));
    }

    #[test]
    fn without_ids_a_null_id_is_no_id() {
        let mut session = Session::new(no_ids());
        session.receive(&greeting(&[])).unwrap();
        take_sent(&mut session);
        session
            .receive(&line(json!({"return": {}, "id": null})))
            .unwrap();
        assert!(session.is_ready());
        let a = session.execute("query-name", None).unwrap();
        let b = session.execute("stop", None).unwrap();
        take_sent(&mut session);
        let mut input = line(json!({"return": {"name": "a"}, "id": null}));
        input.extend(line(
            json!({"error": {"class": "GenericError", "desc": "b"},
            "id": null}),
        ));
        session.receive(&input).unwrap();
        assert_eq!(session.take_reply(a), Some(Ok(json!({"name": "a"}))));
        assert_eq!(qmp_error(session.take_reply(b)).desc, "b");
        // With nothing waiting, a null id is an unknown id, as with ids on the wire.
        session
            .receive(&line(
                json!({"error": {"class": "GenericError", "desc": "c"},
                "id": null}),
            ))
            .unwrap();
        assert!(session.is_ready());
    }

    #[test]
    fn without_ids_a_reply_with_nothing_in_flight() {
        // A return is dropped, as with ids.
        let mut session = ready_without_ids(&["oob"]);
        session.receive(&line(json!({"return": {}}))).unwrap();
        assert!(session.is_ready());
        // An oob command in flight is no taker for a reply without id either.
        let pause = session.execute_oob("migrate-pause", None).unwrap();
        let err = session
            .receive(&error_reply(
                "GenericError",
                "JSON parse error, expecting value",
            ))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(m) if m.contains("without id") && m.contains("expecting value")),
            "{err}"
        );
        assert_eq!(session.state(), SessionState::Closed);
        assert!(!session.is_pending(pause));
    }

    #[test]
    fn without_ids_negotiation_errors_and_commands_queued_before_the_reply() {
        let mut session = Session::new(no_ids());
        session.receive(&greeting(&[])).unwrap();
        take_sent(&mut session);
        let err = session
            .receive(&error_reply("CommandNotFound", "nope"))
            .unwrap_err();
        assert!(matches!(err, Error::Negotiation(e) if e.desc == "nope"));
        assert_eq!(session.state(), SessionState::Closed);

        // A numbered reply is not the negotiation's when it went without id.
        let mut session = Session::new(no_ids());
        session.receive(&greeting(&["oob"])).unwrap();
        take_sent(&mut session);
        session
            .receive(&line(json!({"return": {}, "id": 1})))
            .unwrap();
        assert_eq!(session.state(), SessionState::Negotiating);
        session.receive(&line(json!({"return": {}}))).unwrap();
        assert!(session.is_ready());

        // Guest agents: in-band commands without id, guest-sync-delimited with one.
        let mut agent = Session::guest_agent(no_ids());
        let info = agent.execute("guest-info", None).unwrap();
        assert_eq!(agent.transmit(), b"{\"execute\":\"guest-info\"}\r\n");
        let sync = agent.guest_sync(7).unwrap();
        assert!(!agent.is_pending(info));
        assert!(agent.transmit().ends_with(b",\"id\":2}\r\n"));
        agent.advance_transmit(usize::MAX);
        agent
            .receive(b"{\"return\": 1}\n\xff{\"return\": 7, \"id\": 2}\n")
            .unwrap();
        assert_eq!(agent.take_reply(sync), Some(Ok(json!(7))));
        assert_eq!(agent.take_reply(info), None);
    }

    // ---- messages over the size bound -------------------------------------------------------

    /// A reply of about `size` bytes: `{"return": "xxx...", "id": ID}` (no id when `id` is
    /// null).
    fn big_reply(size: usize, id: Value) -> Vec<u8> {
        with_optional_id(json!({"return": "x".repeat(size)}), id)
    }

    /// An error reply quoting a long command name, as QEMU's CommandNotFound does.
    fn big_error(size: usize, id: Value) -> Vec<u8> {
        let desc = format!("The command {} has not been found", "n".repeat(size));
        with_optional_id(
            json!({"error": {"class": "CommandNotFound", "desc": desc}}),
            id,
        )
    }

    fn with_optional_id(mut value: Value, id: Value) -> Vec<u8> {
        if !id.is_null() {
            value["id"] = id;
        }
        line(value)
    }

    fn too_large_reply(
        message: &[u8],
        limit: usize,
    ) -> Option<std::result::Result<Value, ReplyError>> {
        // The message's size, CRLF excluded.
        Some(Err(ReplyError::TooLarge {
            size: message.len() as u64 - 2,
            limit,
        }))
    }

    /// A ready session with ids on the wire or not, as `options` say.
    fn ready_either(options: SessionOptions, capabilities: &[&str]) -> Session {
        let mut session = Session::new(options);
        session.receive(&greeting(capabilities)).unwrap();
        let id = take_sent(&mut session)[0].id.clone().unwrap_or(Value::Null);
        session
            .receive(&with_optional_id(json!({"return": {}}), id))
            .unwrap();
        assert!(session.is_ready());
        session
    }

    fn bounded(limit: usize, in_band_ids: bool) -> SessionOptions {
        SessionOptions {
            oob: true,
            max_message_size: limit,
            in_band_ids,
            ..SessionOptions::default()
        }
    }

    #[test]
    fn an_oversize_reply_fails_its_command_and_the_session_goes_on() {
        for in_band_ids in [true, false] {
            let mut session = ready_either(bounded(1024, in_band_ids), &["oob"]);
            let first = session.execute("query-qmp-schema", None).unwrap();
            let second = session.execute("bad-name", None).unwrap();
            let third = session.execute("query-status", None).unwrap();
            let sent = take_sent(&mut session);
            let ids: Vec<Value> = sent
                .iter()
                .map(|r| r.id.clone().unwrap_or(Value::Null))
                .collect();
            let first_reply = big_reply(5000, ids[0].clone());
            let second_reply = big_error(3000, ids[1].clone());
            let mut input = first_reply.clone();
            input.extend(&second_reply);
            input.extend(with_optional_id(
                json!({"return": {"status": "running"}}),
                ids[2].clone(),
            ));
            session.receive(&input).unwrap();
            assert!(session.is_ready());
            assert_eq!(
                session.take_reply(first),
                too_large_reply(&first_reply, 1024)
            );
            assert_eq!(
                session.take_reply(second),
                too_large_reply(&second_reply, 1024)
            );
            assert_eq!(
                session.take_reply(third),
                Some(Ok(json!({"status": "running"})))
            );
            assert_eq!(session.in_flight(), 0);
            // The next command works.
            let next = session.execute("query-name", None).unwrap();
            let id = take_sent(&mut session)[0].id.clone().unwrap_or(Value::Null);
            session
                .receive(&with_optional_id(json!({"return": {}}), id))
                .unwrap();
            assert_eq!(session.take_reply(next), Some(Ok(json!({}))));
            assert_eq!(session.events_too_large(), 0);
        }
    }

    #[test]
    fn an_oversize_oob_reply_goes_to_its_command_by_id() {
        for in_band_ids in [true, false] {
            let mut session = ready_either(bounded(512, in_band_ids), &["oob"]);
            let in_band = session.execute("query-status", None).unwrap();
            let oob = session.execute_oob("x-big-oob", None).unwrap();
            let sent = take_sent(&mut session);
            let oob_reply = big_reply(1000, sent[1].id.clone().unwrap());
            // The out-of-band reply overtakes the in-band one.
            let mut input = oob_reply.clone();
            input.extend(with_optional_id(
                json!({"return": "in band"}),
                sent[0].id.clone().unwrap_or(Value::Null),
            ));
            session.receive(&input).unwrap();
            assert_eq!(session.take_reply(oob), too_large_reply(&oob_reply, 512));
            assert_eq!(session.take_reply(in_band), Some(Ok(json!("in band"))));
        }
    }

    #[test]
    fn an_oversize_event_is_counted_and_nothing_fails() {
        for in_band_ids in [true, false] {
            let mut session = ready_either(bounded(256, in_band_ids), &[]);
            let id = session.execute("query-status", None).unwrap();
            let sent = take_sent(&mut session);
            let mut input = line(json!({"event": "HUGE", "data": {"blob": "b".repeat(1000)},
                "timestamp": {"seconds": 1, "microseconds": 2}}));
            input.extend(event("SMALL", None));
            input.extend(with_optional_id(
                json!({"return": "ok"}),
                sent[0].id.clone().unwrap_or(Value::Null),
            ));
            session.receive(&input).unwrap();
            assert!(session.is_ready());
            assert_eq!(session.events_too_large(), 1);
            assert_eq!(session.take_reply(id), Some(Ok(json!("ok"))));
            assert_eq!(session.poll_event().unwrap().name, "SMALL");
            assert!(session.poll_event().is_none());
        }
    }

    #[test]
    fn oversize_replies_nobody_waits_for() {
        // With ids: an unknown id, or one that could not be read, is dropped like a small
        // reply with an unknown id; the command in flight keeps waiting.
        let mut session = ready_either(bounded(256, true), &[]);
        let id = session.execute("query-status", None).unwrap();
        take_sent(&mut session);
        let mut input = big_reply(1000, json!(999));
        input.extend(big_reply(1000, json!({"not": "ours"})));
        input.extend(big_reply(1000, json!("i".repeat(400))));
        session.receive(&input).unwrap();
        assert!(session.is_ready());
        assert!(session.is_pending(id));
        session
            .receive(&line(json!({"return": 1, "id": id.0})))
            .unwrap();
        assert_eq!(session.take_reply(id), Some(Ok(json!(1))));

        // Without ids, and nothing in flight: a return is dropped, an error is fatal (QEMU
        // could not read a request), as for small ones.
        let mut session = ready_without_ids(&[]);
        session.receive(&big_reply(11 << 20, Value::Null)).unwrap();
        assert!(session.is_ready());
        let err = session
            .receive(&big_error(11 << 20, Value::Null))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(m) if m.contains("without id") && m.contains("bytes")),
            "{err}"
        );
        assert_eq!(session.state(), SessionState::Closed);
    }

    #[test]
    fn oversize_messages_that_are_fatal() {
        // A greeting over the bound: the session cannot start.
        let mut session = Session::new(bounded(256, true));
        let mut big_greeting = greeting(&[]);
        big_greeting.splice(
            8..8,
            b"\"pad\": \""
                .iter()
                .chain(&[b'p'; 300])
                .chain(b"\", ")
                .copied(),
        );
        let err = session.receive(&big_greeting).unwrap_err();
        assert!(
            matches!(&err, Error::MessageTooLarge { skipped, .. } if skipped.kind == SkippedKind::Greeting),
            "{err}"
        );
        assert_eq!(session.state(), SessionState::Closed);

        // The reply to qmp_capabilities over the bound.
        for in_band_ids in [true, false] {
            let mut session = Session::new(bounded(256, in_band_ids));
            session.receive(&greeting(&[])).unwrap();
            let id = take_sent(&mut session)[0].id.clone().unwrap_or(Value::Null);
            let err = session.receive(&big_reply(300, id)).unwrap_err();
            assert!(
                matches!(err, Error::MessageTooLarge { limit: 256, .. }),
                "{err}"
            );
            assert_eq!(session.state(), SessionState::Closed);
        }

        // A message of unknown kind.
        let mut session = ready_either(bounded(256, true), &[]);
        let err = session
            .receive(&line(json!({"what": "w".repeat(300)})))
            .unwrap_err();
        assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
        assert_eq!(session.state(), SessionState::Closed);
    }

    /// The conversation of the first oversize test, fed in every two-piece split and byte by
    /// byte, in both id modes.
    #[test]
    fn oversize_replies_in_any_split() {
        for in_band_ids in [true, false] {
            let id = |n: u64| if in_band_ids { json!(n) } else { Value::Null };
            let big = big_reply(300, id(2));
            let mut server = big.clone();
            server.extend(event("STOP", None));
            server.extend(line(json!({"event": "BIG", "data": "d".repeat(300),
                "timestamp": {"seconds": 1, "microseconds": 2}})));
            let big_err = big_error(200, id(3));
            server.extend(&big_err);
            server.extend(with_optional_id(json!({"return": "small"}), id(4)));
            let step = if cfg!(miri) { 37 } else { 1 };
            for split in (0..=server.len()).step_by(step).chain([server.len() + 1]) {
                let mut session = ready_either(bounded(128, in_band_ids), &[]);
                let ids = [
                    session.execute("query-qmp-schema", None).unwrap(),
                    session.execute("bad", None).unwrap(),
                    session.execute("query-name", None).unwrap(),
                ];
                if split <= server.len() {
                    session.receive(&server[..split]).unwrap();
                    session.receive(&server[split..]).unwrap();
                } else {
                    server.chunks(1).for_each(|b| session.receive(b).unwrap());
                }
                assert!(session.is_ready(), "split {split}");
                assert_eq!(session.take_reply(ids[0]), too_large_reply(&big, 128));
                assert_eq!(session.take_reply(ids[1]), too_large_reply(&big_err, 128));
                assert_eq!(session.take_reply(ids[2]), Some(Ok(json!("small"))));
                assert_eq!(session.events_too_large(), 1);
                assert_eq!(session.poll_event().unwrap().name, "STOP");
                assert!(session.poll_event().is_none());
                session.receive_eof().unwrap();
            }
        }
    }

    #[test]
    fn command_names_follow_the_qapi_rules() {
        let mut session = ready_either(bounded(DEFAULT_MAX_MESSAGE_SIZE, true), &["oob"]);
        for good in [
            "query-status",
            "qmp_capabilities",
            "x-query-virtio",
            "device_add",
            "Q",
            "__com.redhat_drive-mirror",
            "__org.example-1_a_b-c",
            "__x_y",
        ] {
            session.execute(good, None).unwrap();
        }
        take_sent(&mut session);
        let huge = "a".repeat(10 << 20);
        let cases: [(&str, &str); 12] = [
            ("", "empty"),
            ("1query", "start with an ASCII letter"),
            ("-query", "start with an ASCII letter"),
            ("_query", "start with an ASCII letter"),
            ("query status", "not ' '"),
            ("query\"status", "not '\"'"),
            ("quéry", "not '\\xc3'"),
            ("query\n", "not '\\n'"),
            ("__com.redhat", "missing"),
            ("__com.redhat_", "empty"),
            ("___drive-mirror", "empty domain"),
            ("__com/redhat_drive-mirror", "not '/'"),
        ];
        let next = session.execute("query-name", None).unwrap();
        take_sent(&mut session);
        for (bad, reason) in cases {
            let err = session.execute(bad, None).unwrap_err();
            let Error::InvalidCommandName { len, .. } = &err else {
                panic!("{bad:?}: {err:?}");
            };
            assert_eq!(*len, bad.len());
            assert!(err.to_string().contains(reason), "{bad:?}: {err}");
            assert!(session.execute_oob(bad, None).is_err());
        }
        // A huge name is excerpted in the error, and nothing is sent, in band or out.
        let err = session.execute(&huge, None).unwrap_err();
        let Error::InvalidCommandName { name, len, reason } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*len, 10 << 20);
        assert_eq!(name, &format!("{}...", "a".repeat(40)));
        assert!(reason.contains("1024"), "{reason}");
        assert!(err.to_string().len() < 200, "{err}");
        let err = session.execute_oob(&huge, None).unwrap_err();
        assert!(matches!(err, Error::InvalidCommandName { .. }), "{err}");
        assert!(session.transmit().is_empty());
        assert!(session.is_ready());
        // No id was used up by the refusals.
        assert_eq!(session.execute("query-name", None).unwrap().0, next.0 + 1);
        let long_ok = "a".repeat(MAX_COMMAND_NAME_LEN);
        session.execute(&long_ok, None).unwrap();
    }
}
