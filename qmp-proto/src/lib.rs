//! The QEMU Machine Protocol (QMP) as a sans-IO codec and session state machine.
//!
//! This crate never opens a socket, reads a clock, spawns a thread or blocks: a driver (such
//! as `qemu-process`) moves bytes between a socket and a [`Session`], and time is the driver's
//! business. The pieces can also be used on their own:
//!
//! - wire types for everything QMP sends and receives ([`Greeting`], [`Request`],
//!   [`Message`], [`Event`], [`QmpError`]), lenient about what they do not know: unknown event
//!   names, payloads and error classes are kept, never rejected;
//! - a streaming [`Decoder`] that frames messages by JSON structure (not by lines), bounds a
//!   message's size, reports errors with their stream offset, and skips the guest agent's
//!   `0xFF` resync bytes; and an [`Encoder`] for requests;
//! - the [`Session`] state machine: greeting, capability negotiation, ids, at most eight
//!   in-band commands in flight, replies matched by id (those of abandoned commands
//!   discarded), an outcome for every command when the session ends, events queued in order
//!   under a bound with a filter for the awaited one, a guest agent mode;
//! - [`guest`]: the QEMU guest agent's commands, typed, and the base64 its data travels in;
//! - [`event_match`], with the semantics of QEMU's `QEMUMachine.event_match`, and
//!   [`EventFilter`];
//! - typed [`commands`] through the [`Command`] trait, with raw execution by name still
//!   available for every other command;
//! - [`qtest`]: QEMU's qtest device-test protocol as a sans-IO [`QtestSession`] with typed
//!   calls (port and memory access, the virtual clock, IRQ interception).
//!
//! ```
//! use qmp_proto::commands::QueryStatus;
//! use qmp_proto::{parse_reply, RunState, Session, SessionOptions};
//!
//! let mut session = Session::new(SessionOptions::default());
//! // What the driver read from the socket:
//! session.receive(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \
//!     \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n").unwrap();
//! // What the driver writes to the socket:
//! let out = session.transmit().to_vec();
//! session.advance_transmit(out.len());
//! session.receive(b"{\"return\": {}, \"id\": 1}\r\n").unwrap();
//!
//! let id = session.execute_typed(&QueryStatus).unwrap();
//! session.receive(b"{\"return\": {\"status\": \"prelaunch\", \"singlestep\": false, \
//!     \"running\": false}, \"id\": 2}\r\n").unwrap();
//! let status = parse_reply::<QueryStatus>(session.take_reply(id).unwrap().unwrap()).unwrap();
//! assert_eq!(status.status, RunState::Prelaunch);
//! ```

// The README's examples run as doc tests (`cargo test --doc`); the README is what
// crates.io shows, the crate docs above are what docs.rs shows.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
pub mod base64;
pub mod bench_stream;
pub mod commands;
mod decoder;
mod encoder;
mod error;
pub mod guest;
mod matching;
pub mod qtest;
mod session;
mod wire;

pub use commands::{parse_reply, Command, RunState};
pub use decoder::{Decoder, DEFAULT_MAX_MESSAGE_SIZE};
pub use encoder::Encoder;
pub use error::{Error, ReplyError, Result, Skipped, SkippedId, SkippedKind, MAX_COMMAND_NAME_LEN};
pub use matching::{event_match, EventFilter};
pub use qtest::{QtestError, QtestOptions, QtestSession};
pub use session::{
    RequestId, Session, SessionOptions, SessionState, DEFAULT_MAX_EVENTS, DEFAULT_MAX_IN_FLIGHT,
};
pub use wire::{ErrorClass, Event, Greeting, Message, QmpError, Request, Timestamp, Version};
