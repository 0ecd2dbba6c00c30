package qemumachine

/*
#include <stdlib.h>
#include "qemumachine.h"
*/
import "C"

import (
	"context"
	"math"
	"runtime"
	"strings"
	"time"
	"unsafe"
)

// call runs one library call, f, and turns its status into an error, reading the library's
// last error on the OS thread that made the call: the library keeps it per thread, and the Go
// scheduler could otherwise move the goroutine to another thread in between. op names the C
// function, for the error.
//
// Every wrapper goes through call: a new C function is wrapped by converting its arguments,
// calling it inside f, and converting its out-parameters (freeing what the library allocated
// with takeString or takeBytes).
func call(op string, f func() C.enum_qm_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status := f()
	if status == C.QM_STATUS_OK {
		return nil
	}
	return lastError(op, Status(status))
}

// lastError builds the *Error of the calling thread's last failure (the caller holds the
// thread).
func lastError(op string, status Status) error {
	e := &Error{Op: op, Status: status}
	if msg := C.qm_last_error_message_dup(); msg != nil {
		e.Message = takeString(msg)
	}
	e.QMPClass = lastErrorText(func(buf *C.char, n C.size_t) C.size_t { return C.qm_last_error_qmp_class(buf, n) })
	e.QMPDesc = lastErrorText(func(buf *C.char, n C.size_t) C.size_t { return C.qm_last_error_qmp_desc(buf, n) })
	return e
}

// lastErrorText reads one of the snprintf-like accessors of the last error (class, desc) in
// full: it asks for the length first, then copies into a C buffer of that size.
func lastErrorText(get func(buf *C.char, n C.size_t) C.size_t) string {
	n := get(nil, 0)
	if n == 0 {
		return ""
	}
	buf := (*C.char)(C.malloc(n + 1))
	defer C.free(unsafe.Pointer(buf))
	got := get(buf, n+1)
	if got > n {
		got = n
	}
	return C.GoStringN(buf, C.int(got))
}

// takeString copies a string the library allocated into Go memory and frees it
// (qm_string_free). NULL is "".
func takeString(s *C.char) string {
	if s == nil {
		return ""
	}
	defer C.qm_string_free(s)
	return C.GoString(s)
}

// takeBytes copies n bytes the library allocated (which may hold NUL bytes) and frees them.
func takeBytes(s *C.char, n C.size_t) []byte {
	if s == nil {
		return nil
	}
	defer C.qm_string_free(s)
	if n > math.MaxInt32 {
		// C.GoBytes takes a C int; the library's buffers (logs, console) are bounded far
		// below this, but a longer one is copied in full rather than cut.
		out := make([]byte, int(n))
		copy(out, unsafe.Slice((*byte)(unsafe.Pointer(s)), int(n)))
		return out
	}
	return C.GoBytes(unsafe.Pointer(s), C.int(n))
}

// cString is a C copy of a Go string argument, freed by free. A string holding a NUL byte
// cannot be passed to C (it would be cut short there, silently naming another path or
// command) and is refused before the call.
type cString struct{ p *C.char }

func newCString(op, arg, s string) (cString, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return cString{}, argError(op, "argument `"+arg+"` holds a NUL byte, which a C string cannot carry")
	}
	return cString{C.CString(s)}, nil
}

// newOptCString is newCString, with "" passed as NULL (the C functions' "none").
func newOptCString(op, arg, s string) (cString, error) {
	if s == "" {
		return cString{}, nil
	}
	return newCString(op, arg, s)
}

func (c cString) free() {
	if c.p != nil {
		C.free(unsafe.Pointer(c.p))
	}
}

// cStrings converts several string arguments at once; on error none stays allocated.
func cStrings(op string, args ...[2]string) ([]cString, func(), error) {
	out := make([]cString, 0, len(args))
	free := func() {
		for _, c := range out {
			c.free()
		}
	}
	for _, a := range args {
		c, err := newCString(op, a[0], a[1])
		if err != nil {
			free()
			return nil, func() {}, err
		}
		out = append(out, c)
	}
	return out, free, nil
}

// timeoutDefault is QM_TIMEOUT_DEFAULT: the C function's own default wait.
const timeoutDefault = C.int64_t(C.QM_TIMEOUT_DEFAULT)

// defaultWait is the C library's default for waits that are not QMP commands (30 s), which
// the sliced waits of this package apply when the context has no deadline.
const defaultWait = 30 * time.Second

// ctxTimeout maps a context to a C timeout argument: QM_TIMEOUT_DEFAULT without a deadline,
// else the time left, rounded up to whole milliseconds (at least 1: 0 means "do not wait" to
// the library). A context already done is its error.
func ctxTimeout(ctx context.Context) (C.int64_t, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		return timeoutDefault, nil
	}
	left := time.Until(deadline)
	if left <= 0 {
		return 0, context.DeadlineExceeded
	}
	return durationMs(left), nil
}

// durationMs rounds a positive duration up to milliseconds, at least 1.
func durationMs(d time.Duration) C.int64_t {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms < 1 {
		ms = 1
	}
	return C.int64_t(ms)
}

// msArg converts a duration argument (a config's timeout) to the library's unsigned
// milliseconds, rounding up; a negative one is refused.
func msArg(op, arg string, d time.Duration) (C.uint64_t, error) {
	if d < 0 {
		return 0, argError(op, "argument `"+arg+"` is negative ("+d.String()+")")
	}
	return C.uint64_t((d + time.Millisecond - 1) / time.Millisecond), nil
}
