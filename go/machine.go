package qemumachine

/*
#include <stdlib.h>
#include "qemumachine.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Machine is a QEMU launched by the library, or one it attached to over QMP (qm_machine).
//
// A Machine is safe for use by several goroutines. The C handle is not, so the Machine
// serializes its calls with a mutex: a call that waits holds the machine for the whole call
// (Execute, Shutdown, Qtest, ...; at most its deadline), except the waits that are done in
// slices (NextEvent, EventWait, EventsWait, ConsoleWaitFor, ConsoleWrite, the Console reader,
// Wait, PowerWaitChange, QtestIRQs), which let other calls in between slices and notice a cancelled context or
// Close within one slice (waitSlice).
//
// Close it when done: a launched QEMU still running is killed (SIGKILL) and its temp dir
// removed. If the program exits without closing it, the library's process guardian kills it.
type Machine struct {
	mu sync.Mutex
	h  *C.qm_machine
	// closing is set by Close before it waits for the mutex, so that sliced waits give up at
	// their next slice instead of keeping Close waiting until their deadline.
	closing atomic.Bool
	// consoleWriteMu keeps one console write's slices together, so that concurrent writes
	// do not interleave.
	consoleWriteMu sync.Mutex
	// pollFD is the library's descriptor to poll (qm_machine_poll_fd), fetched once; -1 until
	// then.
	pollFD int32
}

// waitSlice is the longest a sliced wait holds the machine in one C call.
const waitSlice = 20 * time.Millisecond

func newMachine(h *C.qm_machine) *Machine {
	return &Machine{h: h, pollFD: -1}
}

// Launch launches QEMU as cfg describes and returns once QMP is negotiated (qm_machine_launch).
// QEMU is spawned by the library's process guardian, leads a process group of its own and has
// a private temp dir. On failure nothing is left behind: StatusLaunchFailed when QEMU exits
// first (the message holds its exit status, command line and output), StatusBinaryNotFound,
// StatusTimeout when the launch timeout (Config.SetLaunchTimeout, or ctx's deadline if
// sooner) runs out. A ctx already done is its error; cancelling ctx during the launch is
// honoured only through its deadline.
func Launch(ctx context.Context, cfg *Config) (*Machine, error) {
	if cfg == nil {
		return nil, &Error{Op: "qm_machine_launch", Status: StatusNullArgument, Message: "argument `config` is nil"}
	}
	h, err := cfg.launch(ctx)
	if err != nil {
		return nil, err
	}
	return newMachine(h), nil
}

// LaunchJSON launches QEMU from a JSON configuration (see ConfigFromJSON): a shorthand for
// ConfigFromJSON, Launch and Config.Close.
func LaunchJSON(ctx context.Context, configJSON string) (*Machine, error) {
	cfg, err := ConfigFromJSON(configJSON)
	if err != nil {
		return nil, err
	}
	defer cfg.Close()
	return Launch(ctx, cfg)
}

// AttachUnix connects to the QMP server of a QEMU already running, at the unix socket path,
// retrying while it refuses or does not exist yet, until ctx's deadline (30 s without one)
// (qm_machine_attach_unix). The machine is not owned: Close only disconnects; Shutdown, Kill
// and Wait are StatusUnsupported (execute "quit" instead); Pid gives 0.
func AttachUnix(ctx context.Context, path string) (*Machine, error) {
	const op = "qm_machine_attach_unix"
	cpath, err := newCString(op, "path", path)
	if err != nil {
		return nil, err
	}
	defer cpath.free()
	timeout, err := ctxTimeout(ctx)
	if err != nil {
		return nil, err
	}
	var h *C.qm_machine
	if err := call(op, func() C.enum_qm_status { return C.qm_machine_attach_unix(cpath.p, timeout, &h) }); err != nil {
		return nil, err
	}
	return newMachine(h), nil
}

// AttachTCP is AttachUnix for a QMP server on TCP at address, "IP:PORT" ("127.0.0.1:4444",
// "[::1]:4444") (qm_machine_attach_tcp).
func AttachTCP(ctx context.Context, address string) (*Machine, error) {
	const op = "qm_machine_attach_tcp"
	caddr, err := newCString(op, "address", address)
	if err != nil {
		return nil, err
	}
	defer caddr.free()
	timeout, err := ctxTimeout(ctx)
	if err != nil {
		return nil, err
	}
	var h *C.qm_machine
	if err := call(op, func() C.enum_qm_status { return C.qm_machine_attach_tcp(caddr.p, timeout, &h) }); err != nil {
		return nil, err
	}
	return newMachine(h), nil
}

// Close frees the machine (qm_machine_free): a launched QEMU still running has its process
// group killed (SIGKILL, never a graceful shutdown: call Shutdown first for that) and is
// reaped, and its temp dir is removed (logs in a log dir stay); an attached machine is only
// disconnected. Close is idempotent and safe to call while other goroutines use the machine:
// it waits for the call in progress (a sliced wait gives up within one slice), and later
// calls return ErrClosed.
func (m *Machine) Close() error {
	m.closing.Store(true)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h != nil {
		C.qm_machine_free(m.h)
		m.h = nil
	}
	return nil
}

// do runs one call on the machine's handle, serialized with the machine's other calls.
func (m *Machine) do(op string, f func(h *C.qm_machine) C.enum_qm_status) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h == nil {
		return closedError(op)
	}
	return call(op, func() C.enum_qm_status { return f(m.h) })
}

// doCtx is do for a C function that takes a timeout: ctx's deadline becomes its timeout
// (QM_TIMEOUT_DEFAULT without one), and a ctx already done is its error.
func (m *Machine) doCtx(ctx context.Context, op string, f func(h *C.qm_machine, timeout C.int64_t) C.enum_qm_status) error {
	if _, err := ctxTimeout(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h == nil {
		return closedError(op)
	}
	// The time left is measured once the machine is ours: waiting for the mutex used some.
	timeout, err := ctxTimeout(ctx)
	if err != nil {
		return err
	}
	return call(op, func() C.enum_qm_status { return f(m.h, timeout) })
}

// sliced runs a C wait in slices of at most waitSlice, unlocking the machine between them,
// until attempt succeeds, fails with anything but a timeout, ctx is done (its error), Close
// is called (ErrClosed), or the deadline passes: ctx's, else now+def, else (def 0) none. The
// C function must be safe to repeat: a timed-out attempt loses nothing (kept events and
// console output stay kept). The final timeout is an *Error with StatusTimeout.
func (m *Machine) sliced(ctx context.Context, op string, def time.Duration, attempt func(h *C.qm_machine, timeout C.int64_t) C.enum_qm_status) error {
	start := time.Now()
	deadline, hasDeadline := ctx.Deadline()
	if !hasDeadline && def > 0 {
		deadline, hasDeadline = start.Add(def), true
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.closing.Load() {
			return closedError(op)
		}
		slice := waitSlice
		if hasDeadline {
			left := time.Until(deadline)
			if left <= 0 {
				return &Error{Op: op, Status: StatusTimeout, Message: fmt.Sprintf("nothing came within %v", deadline.Sub(start).Round(time.Millisecond))}
			}
			if left < slice {
				slice = left
			}
		}
		err := m.do(op, func(h *C.qm_machine) C.enum_qm_status { return attempt(h, durationMs(slice)) })
		if err == nil || !errors.Is(err, StatusTimeout) {
			return err
		}
		if hasDeadline && !time.Now().Before(deadline) {
			var e *Error
			if errors.As(err, &e) {
				e.Message = fmt.Sprintf("%s (%v in all, waited in slices)", e.Message, time.Since(start).Round(time.Millisecond))
			}
			return err
		}
	}
}

// Pid returns QEMU's process id, 0 for an attached machine (qm_machine_pid). QEMU is a child
// of the process guardian, not of this program.
func (m *Machine) Pid() (int, error) {
	var pid C.int32_t
	err := m.do("qm_machine_pid", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_pid(h, &pid) })
	return int(pid), err
}

// RunState asks QEMU for its run state (query-status): "running", "paused", "shutdown",
// "prelaunch", ... (qm_machine_status). Bounded by the machine's QMP timeout.
func (m *Machine) RunState() (string, error) {
	var out *C.char
	err := m.do("qm_machine_status", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_status(h, &out) })
	return takeString(out), err
}

// Pause pauses the guest's CPUs (stop) (qm_machine_pause).
func (m *Machine) Pause() error {
	return m.do("qm_machine_pause", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_pause(h) })
}

// Resume resumes the guest's CPUs (cont) (qm_machine_resume).
func (m *Machine) Resume() error {
	return m.do("qm_machine_resume", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_resume(h) })
}

// Reset resets the guest (system_reset) (qm_machine_reset).
func (m *Machine) Reset() error {
	return m.do("qm_machine_reset", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_reset(h) })
}

// Powerdown presses the ACPI power button and waits until ctx's deadline (30 s without one)
// for the guest to shut down (qm_machine_powerdown). StatusTimeout if it does not: the guest
// may ignore the button; the machine keeps running.
func (m *Machine) Powerdown(ctx context.Context) error {
	return m.doCtx(ctx, "qm_machine_powerdown", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_powerdown(h, t)
	})
}

// Shutdown shuts QEMU down: quit (SIGTERM without QMP), then waits until ctx's deadline (30 s
// without one) for it to exit, and kills its process group if it does not
// (StatusNotGraceful: it is gone either way) (qm_machine_shutdown). nil at once if QEMU had
// already exited; StatusUnsupported for an attached machine. The exit status and log stay
// readable until Close.
func (m *Machine) Shutdown(ctx context.Context) error {
	return m.doCtx(ctx, "qm_machine_shutdown", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_shutdown(h, t)
	})
}

// Kill kills QEMU's process group at once (SIGKILL) and reaps QEMU (qm_machine_kill). nil if it
// had already exited; StatusUnsupported for an attached machine.
func (m *Machine) Kill() error {
	return m.do("qm_machine_kill", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_kill(h) })
}

// Wait waits until ctx's deadline (30 s without one) for QEMU to exit by itself, and reaps it
// (qm_machine_wait, in slices). StatusTimeout if it still runs; StatusUnsupported for an
// attached machine.
func (m *Machine) Wait(ctx context.Context) error {
	return m.sliced(ctx, "qm_machine_wait", defaultWait, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_wait(h, t)
	})
}

// WaitOrKill waits until ctx's deadline (30 s without one) for QEMU to exit by itself and, if
// it does not, kills its process group and reaps it: StatusNotGraceful then; QEMU is gone
// either way (qm_machine_wait_or_kill). Sends nothing to QEMU first.
func (m *Machine) WaitOrKill(ctx context.Context) error {
	return m.doCtx(ctx, "qm_machine_wait_or_kill", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_wait_or_kill(h, t)
	})
}

// ExitStatus returns, after QEMU has exited, its exit code (-1 if a signal ended it) and the
// signal (0 if none) (qm_machine_exit_status). StatusInvalidState while it runs (or has not
// been found exited yet: Wait finds out) and for an attached machine.
func (m *Machine) ExitStatus() (code int, signal syscall.Signal, err error) {
	var ccode, csig C.int32_t
	err = m.do("qm_machine_exit_status", func(h *C.qm_machine) C.enum_qm_status {
		return C.qm_machine_exit_status(h, &ccode, &csig)
	})
	return int(ccode), syscall.Signal(csig), err
}

// IsRunning reports whether QEMU still runs (an exit the guardian reported is taken in first,
// without waiting); false for an attached machine (qm_machine_is_running).
func (m *Machine) IsRunning() (bool, error) {
	var running C.bool
	err := m.do("qm_machine_is_running", func(h *C.qm_machine) C.enum_qm_status {
		return C.qm_machine_is_running(h, &running)
	})
	return bool(running), err
}

// Log returns everything QEMU (and its wrapper) wrote to stdout and stderr so far, as written
// (any bytes) (qm_machine_log). Readable after QEMU has exited too, until Close.
// StatusUnsupported for an attached machine.
func (m *Machine) Log() ([]byte, error) {
	var out *C.char
	var n C.size_t
	err := m.do("qm_machine_log", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_log(h, &out, &n) })
	return takeBytes(out, n), err
}

// stringOut runs a call whose one out-parameter is a library-allocated string.
func (m *Machine) stringOut(op string, f func(h *C.qm_machine, out **C.char) C.enum_qm_status) (string, error) {
	var out *C.char
	err := m.do(op, func(h *C.qm_machine) C.enum_qm_status { return f(h, &out) })
	return takeString(out), err
}

// Name returns the machine's name (Config.SetName, else its temp dir's) (qm_machine_name).
func (m *Machine) Name() (string, error) {
	return m.stringOut("qm_machine_name", func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_name(h, out)
	})
}

// LogPath returns the path of the file holding QEMU's output: in the log dir when one was set,
// else in the temp dir, which Close removes (qm_machine_log_path).
func (m *Machine) LogPath() (string, error) {
	return m.stringOut("qm_machine_log_path", func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_log_path(h, out)
	})
}

// QMPListenAddresses returns the QMP servers for other clients (Config.AddQMPListen) as QEMU
// listens on them: "tcp:127.0.0.1:40123" for a port 0, "unix:/path"
// (qm_machine_qmp_listen_addresses).
func (m *Machine) QMPListenAddresses() ([]string, error) {
	text, err := m.stringOut("qm_machine_qmp_listen_addresses", func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_qmp_listen_addresses(h, out)
	})
	if err != nil {
		return nil, err
	}
	var addrs []string
	if err := decodeJSON("qm_machine_qmp_listen_addresses", text, &addrs); err != nil {
		return nil, err
	}
	return addrs, nil
}

// ForwardedPort returns where QEMU listens for the port forward named name, "IP:PORT", for a
// machine launched from a `vm` description (qm_machine_forwarded_port).
func (m *Machine) ForwardedPort(name string) (string, error) {
	const op = "qm_machine_forwarded_port"
	cname, err := newCString(op, "name", name)
	if err != nil {
		return "", err
	}
	defer cname.free()
	return m.stringOut(op, func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_forwarded_port(h, cname.p, out)
	})
}

// VNCSocket returns the path of the VNC unix socket of a machine launched from a `vm`
// description with VNC (qm_machine_vnc_socket).
func (m *Machine) VNCSocket() (string, error) {
	return m.stringOut("qm_machine_vnc_socket", func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_vnc_socket(h, out)
	})
}

// Screendump saves a screenshot of the display to path (screendump): PNG for format "png", PPM
// for "ppm", and for "" PNG if this QEMU supports it, else PPM (a ".png" path then becomes
// ".ppm"). It returns the path written (qm_machine_screendump). A machine without a display
// is QEMU's error (StatusQMPError).
func (m *Machine) Screendump(path, format string) (string, error) {
	const op = "qm_machine_screendump"
	cpath, err := newCString(op, "path", path)
	if err != nil {
		return "", err
	}
	defer cpath.free()
	cformat, err := newOptCString(op, "format", format)
	if err != nil {
		return "", err
	}
	defer cformat.free()
	return m.stringOut(op, func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_screendump(h, cpath.p, cformat.p, out)
	})
}

// SendFD passes a duplicate of conn's descriptor to QEMU over the QMP socket and names it name
// (QMP getfd), for later commands (a chardev or netdev with fd=name, closefd)
// (qm_machine_send_fd). The caller may close conn at once. conn as for Config.AddFD.
func (m *Machine) SendFD(conn syscall.Conn, name string) error {
	const op = "qm_machine_send_fd"
	cname, err := newCString(op, "name", name)
	if err != nil {
		return err
	}
	defer cname.free()
	return withFD(op, conn, func(fd C.int) error {
		return m.do(op, func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_send_fd(h, fd, cname.p) })
	})
}

// PollFD returns the descriptor to poll for readability when driving the machine from an
// event loop of one's own; once it is readable, call ProcessIO, then TakeEvents and
// ConsoleTake (qm_machine_poll_fd). It belongs to the machine: do not close it.
func (m *Machine) PollFD() (int, error) {
	var fd C.int32_t
	err := m.do("qm_machine_poll_fd", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_poll_fd(h, &fd) })
	return int(fd), err
}

// ProcessIO reads and handles whatever QMP messages, console bytes and process exit are ready,
// without blocking (qm_machine_process_io).
func (m *Machine) ProcessIO() error {
	return m.do("qm_machine_process_io", func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_process_io(h) })
}
