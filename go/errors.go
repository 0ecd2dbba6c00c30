package qemumachine

// #include "qemumachine.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
)

// Status is the library's status code (qm_status): why a call failed. Every Status is also an
// error value, so the constants below are the sentinels to test with [errors.Is]:
//
//	if errors.Is(err, qemumachine.StatusTimeout) { ... }
//
// The numbers are the C library's and never change meaning; a code this package does not name
// (from a newer library) still prints its name, read from the library.
type Status int32

// The status codes of include/qemumachine.h (see its comments for each code's details).
const (
	StatusOK              Status = C.QM_STATUS_OK               // the call succeeded; never in an *Error
	StatusNullArgument    Status = C.QM_STATUS_NULL_ARGUMENT    // a required argument was missing
	StatusInvalidArgument Status = C.QM_STATUS_INVALID_ARGUMENT // an argument was out of range or form; the message names it
	StatusInvalidJSON     Status = C.QM_STATUS_INVALID_JSON     // JSON text could not be parsed, or had the wrong shape
	StatusTimeout         Status = C.QM_STATUS_TIMEOUT          // the deadline passed; also matches context.DeadlineExceeded
	StatusQMPError        Status = C.QM_STATUS_QMP_ERROR        // QEMU answered with an error: see Error.QMPClass and Error.QMPDesc
	StatusDisconnected    Status = C.QM_STATUS_DISCONNECTED     // the QMP connection closed
	StatusProcessExited   Status = C.QM_STATUS_PROCESS_EXITED   // QEMU has exited (Machine.ExitStatus)
	StatusLaunchFailed    Status = C.QM_STATUS_LAUNCH_FAILED    // QEMU could not be started; the message holds its output
	StatusIO              Status = C.QM_STATUS_IO               // an operating-system call failed
	StatusPanic           Status = C.QM_STATUS_PANIC            // a bug in the library, caught at its boundary
	StatusInvalidHandle   Status = C.QM_STATUS_INVALID_HANDLE   // a freed or foreign handle (this package returns ErrClosed instead)
	StatusProtocol        Status = C.QM_STATUS_PROTOCOL         // QEMU broke the QMP protocol, or a reply exceeded the size bound
	StatusNotGraceful     Status = C.QM_STATUS_NOT_GRACEFUL     // a shutdown had to kill QEMU; it is gone all the same
	StatusBinaryNotFound  Status = C.QM_STATUS_BINARY_NOT_FOUND // the QEMU (or qemu-img) binary could not be found or run
	StatusEventQueueFull  Status = C.QM_STATUS_EVENT_QUEUE_FULL // events were dropped: the bound on kept events was reached
	StatusImage           Status = C.QM_STATUS_IMAGE            // qemu-img failed; the message holds its command line and output
	StatusInvalidState    Status = C.QM_STATUS_INVALID_STATE    // not valid in the current state (the exit status of a running QEMU, ...)
	StatusUnsupported     Status = C.QM_STATUS_UNSUPPORTED      // does not apply to this machine (no console, attached, no QMP, ...)
	StatusQtestError      Status = C.QM_STATUS_QTEST_ERROR      // QEMU answered a qtest command with FAIL or ERR
)

// String returns the code's C name, such as "QM_STATUS_TIMEOUT" (qm_status_name).
func (s Status) String() string {
	return C.GoString(C.qm_status_name(C.int32_t(s)))
}

// Error makes a Status usable as a sentinel error; it is the code's name, as String.
func (s Status) Error() string {
	return s.String()
}

// ErrClosed is returned by every method of a Machine or Config after its Close.
var ErrClosed = errors.New("qemumachine: use of a closed handle")

// Error is a failed library call. Test it with [errors.Is] against a Status constant (or
// [context.DeadlineExceeded] for a timeout), or take it with [errors.As] for its details:
//
//	var qe *qemumachine.Error
//	if errors.As(err, &qe) && qe.Status == qemumachine.StatusQMPError {
//		log.Printf("QEMU refused: %s: %s", qe.QMPClass, qe.QMPDesc)
//	}
type Error struct {
	// Op is the C function that failed, e.g. "qm_machine_execute".
	Op string
	// Status is the failure's code.
	Status Status
	// Message is the library's message (qm_last_error_message_dup): what failed and why,
	// naming the argument, the command, QEMU's output, ...
	Message string
	// QMPClass and QMPDesc are QEMU's error class ("GenericError", "CommandNotFound", ...) and
	// description when Status is StatusQMPError, else empty.
	QMPClass string
	QMPDesc  string
}

// Error returns "qm_machine_execute: QM_STATUS_QMP_ERROR: <message>".
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Op + ": " + e.Status.String()
	}
	return e.Op + ": " + e.Status.String() + ": " + e.Message
}

// Is reports whether the error has the Status target, or, for a timeout, whether target is
// [context.DeadlineExceeded]: every deadline of this package comes from a context or from a
// library default, and either way it was exceeded.
func (e *Error) Is(target error) bool {
	if s, ok := target.(Status); ok {
		return e.Status == s
	}
	return target == context.DeadlineExceeded && e.Status == StatusTimeout
}

// argError is the error for an argument refused before it reached the library.
func argError(op, message string) error {
	return &Error{Op: op, Status: StatusInvalidArgument, Message: message}
}

// closedError is ErrClosed, naming the call that found the handle closed.
func closedError(op string) error {
	return fmt.Errorf("%s: %w", op, ErrClosed)
}
