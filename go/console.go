package qemumachine

/*
#include <poll.h>
#include "qemumachine.h"

// Waits up to ms milliseconds for fd to be readable, without reading it: > 0 when it is, 0 on
// timeout, < 0 on error (a descriptor closed meanwhile).
static int qmgo_poll_readable(int fd, int ms) {
	struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
	return poll(&p, 1, ms);
}
*/
import "C"

import (
	"context"
	"io"
	"time"
	"unsafe"
)

// consoleBuf is the argument pair for a Go buffer: its first byte (NULL when empty) and length.
func consoleBuf(p []byte) (*C.uint8_t, C.size_t) {
	if len(p) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&p[0])), C.size_t(len(p))
}

// ConsoleRead copies console bytes received so far (as the guest wrote them) into p and returns
// how many, 0 when nothing is waiting; it does not block (qm_machine_console_read). Bytes that
// do not fit stay for the next call. StatusUnsupported for a machine without a console. For a
// blocking io.Reader, see Console.
func (m *Machine) ConsoleRead(p []byte) (int, error) {
	return m.consoleTake("qm_machine_console_read", p, func(h *C.qm_machine, b *C.uint8_t, n C.size_t, out *C.size_t) C.enum_qm_status {
		return C.qm_machine_console_read(h, b, n, out)
	})
}

// ConsoleTake is ConsoleRead without reading anything from the console socket first, for an
// event loop of one's own (see PollFD) (qm_machine_take_console).
func (m *Machine) ConsoleTake(p []byte) (int, error) {
	return m.consoleTake("qm_machine_take_console", p, func(h *C.qm_machine, b *C.uint8_t, n C.size_t, out *C.size_t) C.enum_qm_status {
		return C.qm_machine_take_console(h, b, n, out)
	})
}

func (m *Machine) consoleTake(op string, p []byte, f func(h *C.qm_machine, b *C.uint8_t, n C.size_t, out *C.size_t) C.enum_qm_status) (int, error) {
	buf, n := consoleBuf(p)
	var got C.size_t
	err := m.do(op, func(h *C.qm_machine) C.enum_qm_status { return f(h, buf, n, &got) })
	return int(got), err
}

// ConsoleWrite sends p to the guest's console, waiting until ctx's deadline (30 s without one)
// until all of it is accepted (written to the console socket or queued within the machine's
// bound of console input, 64 KiB) (qm_machine_console_write, in slices). Accepted bytes reach
// the guest in order. It returns how many bytes were accepted: len(p) with a nil error, else
// fewer, with StatusTimeout (a guest that does not read its console: write the rest later),
// StatusUnsupported (no console), StatusProcessExited or StatusDisconnected. Concurrent
// writes do not interleave.
func (m *Machine) ConsoleWrite(ctx context.Context, p []byte) (int, error) {
	return m.consoleWrite(ctx, p, defaultWait)
}

func (m *Machine) consoleWrite(ctx context.Context, p []byte, def time.Duration) (int, error) {
	const op = "qm_machine_console_write"
	m.consoleWriteMu.Lock()
	defer m.consoleWriteMu.Unlock()
	total := 0
	err := m.sliced(ctx, op, def, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		buf, n := consoleBuf(p[total:])
		var written C.size_t
		status := C.qm_machine_console_write(h, buf, n, t, &written)
		if status == C.QM_STATUS_OK || status == C.QM_STATUS_TIMEOUT {
			total += int(written)
		}
		return status
	})
	return total, err
}

// ConsoleBytesDropped returns how many console bytes were dropped from memory since launch
// because the console buffer was full (console_buffer_bytes, 1 MiB by default; a console log
// file still gets every byte); 0 without a console (qm_machine_console_bytes_dropped).
func (m *Machine) ConsoleBytesDropped() (uint64, error) {
	var n C.uint64_t
	err := m.do("qm_machine_console_bytes_dropped", func(h *C.qm_machine) C.enum_qm_status {
		return C.qm_machine_console_bytes_dropped(h, &n)
	})
	return uint64(n), err
}

// ConsoleWaitFor waits until ctx's deadline (30 s without one) until the console shows pattern
// (a plain string of any bytes but NUL, not empty) and returns the output before it, as the
// guest wrote it; the match is consumed, the output after it stays readable
// (qm_machine_console_wait_for, in slices). StatusInvalidState while bytes of a partial
// ConsoleRead are unread.
func (m *Machine) ConsoleWaitFor(ctx context.Context, pattern string) ([]byte, error) {
	const op = "qm_machine_console_wait_for"
	cpat, err := newCString(op, "pattern", pattern)
	if err != nil {
		return nil, err
	}
	defer cpat.free()
	var out *C.char
	var n C.size_t
	err = m.sliced(ctx, op, defaultWait, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_console_wait_for(h, cpat.p, t, &out, &n)
	})
	before := takeBytes(out, n)
	if err != nil {
		return nil, err
	}
	if before == nil {
		before = []byte{}
	}
	return before, nil
}

// ConsolePTY returns the path of the console's pseudo-terminal (Config.SetConsolePTY);
// StatusUnsupported when the console is not on a pty (qm_machine_console_pty).
func (m *Machine) ConsolePTY() (string, error) {
	return m.stringOut("qm_machine_console_pty", func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_console_pty(h, out)
	})
}

// Console is the machine's console as an io.Reader and io.Writer: what the guest writes to its
// console, and what it reads from it. Get it with Machine.Console.
type Console struct {
	m *Machine
}

// Console returns the machine's console as an io.ReadWriter (see Console). The machine must
// have a console (Config.SetConsole, SetConsoleLog or SetConsoleDevice), else Read and Write
// fail with StatusUnsupported.
func (m *Machine) Console() *Console {
	return &Console{m: m}
}

// Read reads what the guest wrote to its console, blocking until at least one byte is there.
// It returns io.EOF once QEMU has exited and every byte was read, and ErrClosed after the
// machine's Close.
func (c *Console) Read(p []byte) (int, error) {
	return c.ReadContext(context.Background(), p)
}

// ReadContext is Read that also returns when ctx is done (its error). It waits on the machine's
// poll descriptor in slices of at most waitSlice, without holding the machine.
func (c *Console) ReadContext(ctx context.Context, p []byte) (int, error) {
	m := c.m
	if len(p) == 0 {
		return m.ConsoleRead(p)
	}
	emptyWakeups := 0
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if m.closing.Load() {
			return 0, closedError("qm_machine_console_read")
		}
		n, err := m.ConsoleRead(p)
		if n > 0 || err != nil {
			return n, err
		}
		running, err := m.IsRunning()
		if err != nil {
			return 0, err
		}
		if !running {
			// What QEMU wrote before it exited was read by the ConsoleRead above, or is now.
			if n, err := m.ConsoleRead(p); n > 0 || err != nil {
				return n, err
			}
			return 0, io.EOF
		}
		ready, err := m.pollReadable(waitSlice)
		if err != nil {
			return 0, err
		}
		if ready {
			emptyWakeups++
		} else {
			emptyWakeups = 0
		}
		if emptyWakeups > 2 {
			// The descriptor keeps saying readable and nothing comes for the console (what
			// woke it is another taker's): do not spin.
			time.Sleep(waitSlice)
			emptyWakeups = 0
		}
	}
}

// pollReadable waits up to d for the machine's poll descriptor to become readable, without
// holding the machine (the descriptor is only looked at, never read).
func (m *Machine) pollReadable(d time.Duration) (bool, error) {
	m.mu.Lock()
	if m.h == nil {
		m.mu.Unlock()
		return false, closedError("qm_machine_poll_fd")
	}
	if m.pollFD < 0 {
		var fd C.int32_t
		err := call("qm_machine_poll_fd", func() C.enum_qm_status { return C.qm_machine_poll_fd(m.h, &fd) })
		if err != nil {
			m.mu.Unlock()
			return false, err
		}
		m.pollFD = int32(fd)
	}
	fd := m.pollFD
	m.mu.Unlock()
	// Close may free the machine while this polls: the descriptor is then closed (poll returns
	// at once) or, at worst, reused by another file (a spurious wake-up); the caller's next
	// step sees ErrClosed either way.
	return C.qmgo_poll_readable(C.int(fd), C.int(durationMs(d))) > 0, nil
}

// Write sends p to the guest's console, blocking until all of it is accepted (see
// Machine.ConsoleWrite; without a deadline it waits as long as it takes: a paused guest
// blocks it until it resumes, the machine exits or is closed).
func (c *Console) Write(p []byte) (int, error) {
	return c.m.consoleWrite(context.Background(), p, 0)
}

// WriteContext is Write that also returns when ctx is done, with how many bytes were accepted;
// at ctx's deadline that is an *Error with StatusTimeout, which also matches
// context.DeadlineExceeded.
func (c *Console) WriteContext(ctx context.Context, p []byte) (int, error) {
	return c.m.consoleWrite(ctx, p, 0)
}
