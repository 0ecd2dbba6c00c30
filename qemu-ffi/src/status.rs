//! The numbered status codes every `qm_*` function that can fail returns.

/// The result of a `qm_*` call. `QM_STATUS_OK` (0) is success; every other value is a failure
/// whose message can be read with `qm_last_error_message()` on the same thread.
///
/// The numbers are part of the ABI: they are never reused or renumbered, new codes are only added.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QmStatus {
    /// The call succeeded.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// An argument had a value outside its allowed range or form (an unknown enum value, a
    /// string that must be UTF-8 and is not, a negative timeout other than
    /// `QM_TIMEOUT_DEFAULT`, a file that does not exist, ...); the message names the argument.
    InvalidArgument = 2,
    /// A JSON document passed in could not be parsed or did not have the expected shape.
    InvalidJson = 3,
    /// The operation did not complete before its deadline.
    Timeout = 4,
    /// QEMU answered a QMP command (or the guest agent a `qm_machine_guest_*()` call) with an
    /// error; its class and description are available via `qm_last_error_qmp_class()` and
    /// `qm_last_error_qmp_desc()`.
    QmpError = 5,
    /// The QMP connection was closed (by QEMU, which may be exiting), or the guest agent went
    /// away during a `qm_machine_guest_*()` call (its port closed in the guest).
    Disconnected = 6,
    /// The QEMU process has exited (its status: `qm_machine_exit_status()`).
    ProcessExited = 7,
    /// QEMU could not be started, or exited before QMP was ready.
    LaunchFailed = 8,
    /// An operating-system call failed.
    Io = 9,
    /// A panic inside the library was caught at the C boundary. This is a bug in the library.
    Panic = 10,
    /// A handle that is not a live handle of the expected type was passed: already freed (a
    /// freed handle stays invalid for good), never created by this library, or a `qm_config`
    /// where a `qm_machine` is expected; or a handle in use by another thread's call.
    InvalidHandle = 11,
    /// QEMU sent something that violates the QMP protocol, or a reply larger than the bound on
    /// one QMP message (10 MiB by default; the message names the reply's size and the bound, and
    /// the machine stays usable: the next command works).
    Protocol = 12,
    /// A shutdown had to fall back to killing QEMU.
    NotGraceful = 13,
    /// The QEMU (or qemu-img) binary could not be found or executed.
    BinaryNotFound = 14,
    /// Events were dropped because the bound on kept events was reached (reported once by
    /// `qm_machine_event_wait()`); take events with `qm_machine_events()` to make room.
    EventQueueFull = 15,
    /// A disk image operation (`qemu-img`) failed.
    Image = 16,
    /// The operation is not valid in the handle's current state: the exit status of a QEMU
    /// still running, a setter on a configuration with a `vm` description, out-of-band
    /// execution without oob negotiated, ...
    InvalidState = 17,
    /// The operation does not apply to this machine (the console of a machine without one,
    /// killing an attached machine, a VNC socket without VNC, ...).
    Unsupported = 18,
    /// A qtest command failed: QEMU answered `FAIL` or `ERR`; the message names the line sent
    /// and QEMU's answer (a line the library refuses to send, because QEMU would abort on it,
    /// is `QM_STATUS_INVALID_ARGUMENT`).
    QtestError = 19,
}

/// The largest status number defined by this version of the library.
#[cfg(test)]
pub(crate) const MAX_STATUS: i32 = QmStatus::QtestError as i32;

impl QmStatus {
    /// The status with the number `n`, if there is one.
    pub fn from_i32(n: i32) -> Option<QmStatus> {
        use QmStatus::*;
        const ALL: [QmStatus; 20] = [
            Ok,
            NullArgument,
            InvalidArgument,
            InvalidJson,
            Timeout,
            QmpError,
            Disconnected,
            ProcessExited,
            LaunchFailed,
            Io,
            Panic,
            InvalidHandle,
            Protocol,
            NotGraceful,
            BinaryNotFound,
            EventQueueFull,
            Image,
            InvalidState,
            Unsupported,
            QtestError,
        ];
        usize::try_from(n).ok().and_then(|i| ALL.get(i)).copied()
    }

    /// The constant's name as it appears in the C header, NUL-terminated.
    pub fn name(self) -> &'static std::ffi::CStr {
        use QmStatus::*;
        match self {
            Ok => c"QM_STATUS_OK",
            NullArgument => c"QM_STATUS_NULL_ARGUMENT",
            InvalidArgument => c"QM_STATUS_INVALID_ARGUMENT",
            InvalidJson => c"QM_STATUS_INVALID_JSON",
            Timeout => c"QM_STATUS_TIMEOUT",
            QmpError => c"QM_STATUS_QMP_ERROR",
            Disconnected => c"QM_STATUS_DISCONNECTED",
            ProcessExited => c"QM_STATUS_PROCESS_EXITED",
            LaunchFailed => c"QM_STATUS_LAUNCH_FAILED",
            Io => c"QM_STATUS_IO",
            Panic => c"QM_STATUS_PANIC",
            InvalidHandle => c"QM_STATUS_INVALID_HANDLE",
            Protocol => c"QM_STATUS_PROTOCOL",
            NotGraceful => c"QM_STATUS_NOT_GRACEFUL",
            BinaryNotFound => c"QM_STATUS_BINARY_NOT_FOUND",
            EventQueueFull => c"QM_STATUS_EVENT_QUEUE_FULL",
            Image => c"QM_STATUS_IMAGE",
            InvalidState => c"QM_STATUS_INVALID_STATE",
            Unsupported => c"QM_STATUS_UNSUPPORTED",
            QtestError => c"QM_STATUS_QTEST_ERROR",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_names_match() {
        for n in 0..=MAX_STATUS {
            let s = QmStatus::from_i32(n).expect("every number up to MAX is defined");
            assert_eq!(s as i32, n);
            assert!(s.name().to_str().unwrap().starts_with("QM_STATUS_"));
        }
        assert_eq!(QmStatus::from_i32(MAX_STATUS + 1), None);
        assert_eq!(QmStatus::from_i32(-1), None);
    }
}
