//! Errors of the Rust crates, as statuses and messages for C.

use qemu_process::{Error, QtestError};

use crate::error::FfiError;
use crate::status::QmStatus;

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        let message = e.to_string();
        let status = status_of(&e);
        let qmp = match &e {
            Error::Qmp(q) | Error::GuestAgent { error: q, .. } => {
                Some((q.class.as_str().to_string(), q.desc.clone()))
            }
            Error::InSet { source, .. } => match source.as_ref() {
                Error::Qmp(q) => Some((q.class.as_str().to_string(), q.desc.clone())),
                _ => None,
            },
            _ => None,
        };
        FfiError {
            status,
            message,
            qmp,
        }
    }
}

fn status_of(e: &Error) -> QmStatus {
    match e {
        // Out-of-band execution asked of a session that did not negotiate it: the caller's
        // mistake about the machine's state, not something QEMU sent.
        Error::Protocol(qmp_proto::Error::OobNotEnabled) => QmStatus::InvalidState,
        Error::Launch { .. } => QmStatus::LaunchFailed,
        Error::BinaryNotFound(_) => QmStatus::BinaryNotFound,
        Error::Timeout { .. } => QmStatus::Timeout,
        Error::Disconnected => QmStatus::Disconnected,
        Error::Exited(_) => QmStatus::ProcessExited,
        Error::Qmp(_) => QmStatus::QmpError,
        Error::Protocol(_) => QmStatus::Protocol,
        // A reply over the size bound: the message names its size and the limit; the
        // connection stays usable.
        Error::ReplyTooLarge { .. } => QmStatus::Protocol,
        Error::Io { .. } => QmStatus::Io,
        Error::NotGraceful { .. } => QmStatus::NotGraceful,
        Error::EventQueueFull { .. } => QmStatus::EventQueueFull,
        Error::InvalidArgument(_) => QmStatus::InvalidArgument,
        Error::Unsupported(_) => QmStatus::Unsupported,
        Error::InSet { source, .. } => status_of(source),
        Error::Spec(_) => QmStatus::InvalidArgument,
        Error::Image { .. } => QmStatus::Image,
        Error::ProgramMissing { .. } => QmStatus::BinaryNotFound,
        Error::NotFound { .. } => QmStatus::InvalidArgument,
        Error::NoSpace { .. } => QmStatus::Image,
        Error::ShrinkRefused { .. } => QmStatus::InvalidArgument,
        Error::VmRunning { .. } => QmStatus::InvalidState,
        Error::ConsoleWriteTimeout { .. } => QmStatus::Timeout,
        // The guest agent's answer to a qm_machine_guest_*() call: class and description kept.
        Error::GuestAgent { .. } => QmStatus::QmpError,
        // The agent's port closed (or its connection ended) during the call.
        Error::GuestAgentGone { .. } => QmStatus::Disconnected,
        Error::Qtest(e) => match e {
            QtestError::Failed { .. } => QmStatus::QtestError,
            // Refused before sending: the caller's line.
            QtestError::InvalidCommand { .. } => QmStatus::InvalidArgument,
            QtestError::Closed { .. } => QmStatus::Disconnected,
            _ => QmStatus::Protocol,
        },
        Error::NoQtestClock { .. } => QmStatus::Unsupported,
        // The enum is non-exhaustive; a variant added later without a code here still fails
        // with its message rather than being mistaken for success.
        _ => QmStatus::Io,
    }
}
