//! What arrives from the peer: events, the greeting, replies (small or over the size bound).

use serde_json::Value;

use super::names::excerpt_value;
use super::{describe_reply, Mode, Session, SessionState};
use crate::encoder::Encoder;
use crate::error::{Error, ReplyError, Result, Skipped, SkippedId, SkippedKind};
use crate::wire::{Greeting, Message, Request};

impl Session {
    pub(super) fn handle(&mut self, message: Message) -> Result<()> {
        match message {
            Message::Event(event) => {
                self.events.push(event);
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
    pub(super) fn handle_too_large(
        &mut self,
        limit: usize,
        size: u64,
        skipped: Skipped,
    ) -> Result<()> {
        let is_error = match &skipped.kind {
            SkippedKind::Event(name) => {
                self.events.count_too_large();
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
            // Only stored when the session ends, never received.
            Err(ReplyError::Closed) => Err(Error::Closed),
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
        if pending.abandoned {
            log::debug!(
                "QMP: discarding the late reply to {} (command {n}, abandoned): {}",
                pending.command,
                describe_reply(&reply)
            );
        } else {
            log::trace!("reply to {} (command {n})", pending.command);
            self.replies.insert(n, reply);
        }
        self.pump();
    }
}
