package qemumachine

/*
#include "qemumachine.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
	"unsafe"
)

// The guest agent methods (Guest...) talk to the QEMU guest agent (qemu-ga) running in the
// guest of a machine launched from a VM description with "guest_agent": true, which gives the
// VM a virtio-serial port named org.qemu.guest_agent.0 on a channel the library owns:
//
//	m, err := qemumachine.LaunchJSON(ctx, `{"vm": {"memory": "1G", "disks": [...], "guest_agent": true}}`)
//	err = m.GuestPing(ctx)                                      // waits for the agent to come up
//	res, err := m.GuestExec(ctx, []string{"uname", "-r"}, nil) // res.Stdout: "6.1.0-...\n"
//
// Each is one C call that waits until ctx's deadline (30 s without one; for the copies, no
// limit on the whole copy and 30 s on each chunk) and holds the machine meanwhile: cancelling
// ctx is honoured at its deadline only. Before the first call, and after anything that may
// have put the agent's stream out of step (a timeout, the agent restarting, the guest
// rebooting), the library synchronizes with the agent (guest-sync-delimited) within the same
// deadline, so a call after a timed-out one works.
//
// Errors, as *Error: StatusUnsupported for a machine without the agent's channel; StatusTimeout
// (which matches context.DeadlineExceeded) when the agent does not answer in time, also when
// no agent runs in the guest (never a hang); StatusQMPError for an error the agent answers,
// with its class and description in QMPClass and QMPDesc; StatusDisconnected when the agent
// goes away during the call (its port closed in the guest: killed, restarting, the guest
// shutting down); StatusProcessExited once QEMU has exited; StatusProtocol for an answer
// larger than the machine's message bound (10 MiB by default; the next call works). QMP
// events and console output that arrive meanwhile are kept.

// GuestPing asks the guest agent whether it runs (guest-ping) (qm_machine_guest_ping). To wait
// for an agent to come up after boot, ping with a long enough deadline: until the agent
// answers it is StatusTimeout at that deadline.
func (m *Machine) GuestPing(ctx context.Context) error {
	return m.doCtx(ctx, "qm_machine_guest_ping", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_guest_ping(h, t)
	})
}

// GuestAgentInfo is what the guest agent says about itself (guest-info).
type GuestAgentInfo struct {
	// Version is the agent's version, e.g. "7.2.22".
	Version string `json:"version"`
	// SupportedCommands lists every command the agent knows.
	SupportedCommands []GuestCommandInfo `json:"supported_commands"`
	// Extra holds the members this package does not name, as the agent sent them.
	Extra map[string]json.RawMessage `json:"-"`
}

// Enabled reports whether the agent has the command name and runs it (it is not blocked by
// the guest's administrator, qemu-ga --block-rpcs).
func (i *GuestAgentInfo) Enabled(name string) bool {
	for _, c := range i.SupportedCommands {
		if c.Name == name {
			return c.Enabled
		}
	}
	return false
}

// UnmarshalJSON decodes guest-info's answer, keeping unknown members in Extra.
func (i *GuestAgentInfo) UnmarshalJSON(data []byte) error {
	type plain GuestAgentInfo
	extra, err := unmarshalKnown(data, (*plain)(i))
	i.Extra = extra
	return err
}

// GuestCommandInfo is one command of GuestAgentInfo.
type GuestCommandInfo struct {
	// Name is the command's name, e.g. "guest-exec".
	Name string `json:"name"`
	// Enabled is false for a command the guest's administrator blocked.
	Enabled bool `json:"enabled"`
	// SuccessResponse is false for the commands that answer nothing when they succeed
	// (guest-shutdown, the suspend commands).
	SuccessResponse bool `json:"success-response"`
	// Extra holds the members this package does not name.
	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes one command, keeping unknown members in Extra.
func (c *GuestCommandInfo) UnmarshalJSON(data []byte) error {
	type plain GuestCommandInfo
	extra, err := unmarshalKnown(data, (*plain)(c))
	c.Extra = extra
	return err
}

// GuestInfo returns the guest agent's version and commands (guest-info) (qm_machine_guest_info).
func (m *Machine) GuestInfo(ctx context.Context) (*GuestAgentInfo, error) {
	var info GuestAgentInfo
	err := m.guestJSON(ctx, "qm_machine_guest_info", &info, func(h *C.qm_machine, t C.int64_t, out **C.char) C.enum_qm_status {
		return C.qm_machine_guest_info(h, t, out)
	})
	if err != nil {
		return nil, err
	}
	return &info, nil
}

// GuestOSInfo is the guest's operating system as its agent reports it (guest-get-osinfo). A
// member the agent does not know is "".
type GuestOSInfo struct {
	// KernelRelease is `uname -r`, e.g. "6.1.0-28-cloud-amd64".
	KernelRelease string `json:"kernel-release,omitempty"`
	// KernelVersion is `uname -v`.
	KernelVersion string `json:"kernel-version,omitempty"`
	// Machine is `uname -m`, e.g. "x86_64".
	Machine string `json:"machine,omitempty"`
	// ID, Name, PrettyName, Version, VersionID, Variant and VariantID are os-release's ID
	// ("debian"), NAME, PRETTY_NAME, VERSION, VERSION_ID ("12"), VARIANT and VARIANT_ID.
	ID         string `json:"id,omitempty"`
	Name       string `json:"name,omitempty"`
	PrettyName string `json:"pretty-name,omitempty"`
	Version    string `json:"version,omitempty"`
	VersionID  string `json:"version-id,omitempty"`
	Variant    string `json:"variant,omitempty"`
	VariantID  string `json:"variant-id,omitempty"`
	// Extra holds the members this package does not name.
	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes guest-get-osinfo's answer, keeping unknown members in Extra.
func (o *GuestOSInfo) UnmarshalJSON(data []byte) error {
	type plain GuestOSInfo
	extra, err := unmarshalKnown(data, (*plain)(o))
	o.Extra = extra
	return err
}

// GuestOSInfo returns the guest's operating system as its agent reports it (guest-get-osinfo)
// (qm_machine_guest_osinfo).
func (m *Machine) GuestOSInfo(ctx context.Context) (*GuestOSInfo, error) {
	var info GuestOSInfo
	err := m.guestJSON(ctx, "qm_machine_guest_osinfo", &info, func(h *C.qm_machine, t C.int64_t, out **C.char) C.enum_qm_status {
		return C.qm_machine_guest_osinfo(h, t, out)
	})
	if err != nil {
		return nil, err
	}
	return &info, nil
}

// GuestInterface is a network interface of the guest (guest-network-get-interfaces).
type GuestInterface struct {
	// Name is the interface's name, e.g. "eth0".
	Name string `json:"name"`
	// HardwareAddress is its MAC address, "52:54:00:12:34:56", or "" when it has none.
	HardwareAddress string `json:"hardware-address,omitempty"`
	// IPAddresses are its addresses (none when it has none).
	IPAddresses []GuestIPAddress `json:"ip-addresses,omitempty"`
	// Statistics are its traffic counters, nil when the agent does not report them.
	Statistics *GuestInterfaceStats `json:"statistics,omitempty"`
	// Extra holds the members this package does not name.
	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes one interface, keeping unknown members in Extra.
func (i *GuestInterface) UnmarshalJSON(data []byte) error {
	type plain GuestInterface
	extra, err := unmarshalKnown(data, (*plain)(i))
	i.Extra = extra
	return err
}

// GuestIPAddress is an address of a GuestInterface.
type GuestIPAddress struct {
	// Address is the address, e.g. "10.0.2.15" or "fe80::5054:ff:fe12:3456".
	Address string `json:"ip-address"`
	// Type is its family: "ipv4" or "ipv6".
	Type string `json:"ip-address-type"`
	// Prefix is the prefix length, e.g. 24.
	Prefix int `json:"prefix"`
	// Extra holds the members this package does not name.
	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes one address, keeping unknown members in Extra.
func (a *GuestIPAddress) UnmarshalJSON(data []byte) error {
	type plain GuestIPAddress
	extra, err := unmarshalKnown(data, (*plain)(a))
	a.Extra = extra
	return err
}

// GuestInterfaceStats are the traffic counters of a GuestInterface.
type GuestInterfaceStats struct {
	RxBytes   uint64 `json:"rx-bytes"`
	RxPackets uint64 `json:"rx-packets"`
	RxErrs    uint64 `json:"rx-errs"`
	RxDropped uint64 `json:"rx-dropped"`
	TxBytes   uint64 `json:"tx-bytes"`
	TxPackets uint64 `json:"tx-packets"`
	TxErrs    uint64 `json:"tx-errs"`
	TxDropped uint64 `json:"tx-dropped"`
	// Extra holds the members this package does not name.
	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the counters, keeping unknown members in Extra.
func (s *GuestInterfaceStats) UnmarshalJSON(data []byte) error {
	type plain GuestInterfaceStats
	extra, err := unmarshalKnown(data, (*plain)(s))
	s.Extra = extra
	return err
}

// GuestInterfaces returns the guest's network interfaces (guest-network-get-interfaces)
// (qm_machine_guest_interfaces).
func (m *Machine) GuestInterfaces(ctx context.Context) ([]GuestInterface, error) {
	var ifaces []GuestInterface
	err := m.guestJSON(ctx, "qm_machine_guest_interfaces", &ifaces, func(h *C.qm_machine, t C.int64_t, out **C.char) C.enum_qm_status {
		return C.qm_machine_guest_interfaces(h, t, out)
	})
	if err != nil {
		return nil, err
	}
	return ifaces, nil
}

// GuestExecute runs any guest agent command with arguments args (nil for none; JSON text as
// a string, []byte or json.RawMessage, or a map or struct to encode: a JSON object) and returns
// its `return` value as JSON (qm_machine_guest_execute). A name that cannot be a command,
// guest-shutdown (use GuestShutdown: it answers nothing when it succeeds) and the
// synchronization commands (the library's) are StatusInvalidArgument, arguments that are not
// a JSON object StatusInvalidJSON, before anything is sent; an unknown command is the agent's
// error (StatusQMPError, QMPClass "CommandNotFound").
func (m *Machine) GuestExecute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	const op = "qm_machine_guest_execute"
	ccmd, err := newCString(op, "command", command)
	if err != nil {
		return nil, err
	}
	defer ccmd.free()
	cargs, err := jsonArg(op, "arguments_json", args)
	if err != nil {
		return nil, err
	}
	defer cargs.free()
	var out *C.char
	err = m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_guest_execute(h, ccmd.p, cargs.p, t, &out)
	})
	text := takeString(out)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(text), nil
}

// ExecResult is how a program run by GuestExec ended, and what it wrote.
type ExecResult struct {
	// ExitCode is the program's exit code, or -1 when a signal ended it.
	ExitCode int
	// Signal is the signal that ended it, 0 when none did.
	Signal syscall.Signal
	// Stdout and Stderr are what it wrote to its standard output and error, as written (any
	// bytes).
	Stdout []byte
	Stderr []byte
}

// Success reports whether the program exited with code 0.
func (r *ExecResult) Success() bool {
	return r.ExitCode == 0 && r.Signal == 0
}

// GuestExec runs a program in the guest through its agent (guest-exec) and waits for it to
// end (qm_machine_guest_exec). argv is the program (a path in the guest, or a name the agent
// looks up in its PATH) and its arguments, as text (UTF-8, no NUL byte: StatusInvalidArgument
// otherwise, before anything is sent); the program reads stdin (nil for an empty input) on
// its standard input. The exit code is the result, not an error: check ExecResult.Success.
//
// ctx's deadline (30 s without one) limits the whole call; on StatusTimeout the program may
// still run in the guest. A program the agent cannot start is the agent's error
// (StatusQMPError). Output is captured by the agent (qemu-ga keeps at most 16 MiB of each
// stream) and comes back in one answer: more than about 7 MiB in all is StatusProtocol (write
// it to a file in the guest and use GuestCopyOut).
func (m *Machine) GuestExec(ctx context.Context, argv []string, stdin []byte) (*ExecResult, error) {
	const op = "qm_machine_guest_exec"
	if len(argv) == 0 || argv[0] == "" {
		return nil, argError(op, "argument `argv` has no program: it must name the program first")
	}
	for i, a := range argv {
		if !utf8.ValidString(a) || strings.IndexByte(a, 0) >= 0 {
			return nil, argError(op, "argument `argv["+strconv.Itoa(i)+"]` "+strconv.Quote(a)+
				" is not UTF-8 text without NUL bytes, which the agent's protocol cannot carry")
		}
	}
	text, err := json.Marshal(argv)
	if err != nil {
		return nil, argError(op, "argument `argv` cannot be encoded as JSON: "+err.Error())
	}
	cargv, err := newCString(op, "argv_json", string(text))
	if err != nil {
		return nil, err
	}
	defer cargv.free()
	// The input is passed for the duration of the call only; the library copies it.
	var in *C.uint8_t
	if len(stdin) > 0 {
		in = (*C.uint8_t)(unsafe.Pointer(&stdin[0]))
	}
	var (
		code             C.int64_t
		sig              C.int32_t
		sout, serr       *C.char
		soutLen, serrLen C.size_t
	)
	err = m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_guest_exec(h, cargv.p, in, C.size_t(len(stdin)), t, &code, &sig, &sout, &soutLen, &serr, &serrLen)
	})
	res := &ExecResult{
		ExitCode: int(code),
		Signal:   syscall.Signal(sig),
		Stdout:   takeBytes(sout, soutLen),
		Stderr:   takeBytes(serr, serrLen),
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// GuestCopyIn copies the host file hostPath (any bytes) into the file guestPath in the guest
// (UTF-8; created or truncated) through the guest agent, in chunks of 256 KiB, never holding
// the whole file in memory, and returns how many bytes it copied (qm_machine_guest_copy_in).
// ctx's deadline limits the whole copy; without one, each chunk gets 30 s and the whole no
// limit. A host file that cannot be opened is StatusIO; on an error the guest file may be
// partly written.
func (m *Machine) GuestCopyIn(ctx context.Context, hostPath, guestPath string) (int64, error) {
	return m.guestCopy(ctx, "qm_machine_guest_copy_in", [2]string{"host_path", hostPath}, [2]string{"guest_path", guestPath},
		func(h *C.qm_machine, from, to *C.char, t C.int64_t, n *C.uint64_t) C.enum_qm_status {
			return C.qm_machine_guest_copy_in(h, from, to, t, n)
		})
}

// GuestCopyOut copies the file guestPath in the guest (UTF-8) into the host file hostPath (any
// bytes; created with mode 0600, or truncated) through the guest agent, in chunks of 256 KiB,
// and returns how many bytes it copied (qm_machine_guest_copy_out). Deadlines as for
// GuestCopyIn; a guest file that cannot be opened is the agent's error (StatusQMPError); on an
// error the host file may be partly written.
func (m *Machine) GuestCopyOut(ctx context.Context, guestPath, hostPath string) (int64, error) {
	return m.guestCopy(ctx, "qm_machine_guest_copy_out", [2]string{"guest_path", guestPath}, [2]string{"host_path", hostPath},
		func(h *C.qm_machine, from, to *C.char, t C.int64_t, n *C.uint64_t) C.enum_qm_status {
			return C.qm_machine_guest_copy_out(h, from, to, t, n)
		})
}

func (m *Machine) guestCopy(ctx context.Context, op string, from, to [2]string, f func(h *C.qm_machine, from, to *C.char, t C.int64_t, n *C.uint64_t) C.enum_qm_status) (int64, error) {
	paths, free, err := cStrings(op, from, to)
	if err != nil {
		return 0, err
	}
	defer free()
	var n C.uint64_t
	err = m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return f(h, paths[0].p, paths[1].p, t, &n)
	})
	return int64(n), err
}

// GuestShutdownMode is what GuestShutdown asks the guest to do.
type GuestShutdownMode string

// The modes of guest-shutdown.
const (
	GuestPowerdown GuestShutdownMode = "powerdown" // power off
	GuestReboot    GuestShutdownMode = "reboot"    // reboot
	GuestHalt      GuestShutdownMode = "halt"      // halt, without powering off
)

// GuestShutdown asks the guest to power down, reboot or halt through its agent
// (guest-shutdown); mode "" is GuestPowerdown, a mode that is none of the three is
// StatusInvalidArgument (qm_machine_guest_shutdown). The agent answers nothing when it
// succeeds: the call returns nil once a guest-ping sent behind it is answered with no error
// before it, or the guest shows it is going down (the agent's port closes, QEMU reports
// SHUTDOWN or RESET, or exits); an error answer is StatusQMPError; neither by ctx's deadline
// (30 s without one) is StatusTimeout. Then wait for what follows: after a power-down,
// EventWait for "SHUTDOWN" and Wait for QEMU's exit (see qm_machine_guest_shutdown in the
// header for the other modes).
func (m *Machine) GuestShutdown(ctx context.Context, mode GuestShutdownMode) error {
	const op = "qm_machine_guest_shutdown"
	cmode, err := newOptCString(op, "mode", string(mode))
	if err != nil {
		return err
	}
	defer cmode.free()
	return m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_guest_shutdown(h, cmode.p, t)
	})
}

// guestJSON runs a guest call whose out-parameter is JSON text and decodes it into v.
func (m *Machine) guestJSON(ctx context.Context, op string, v any, f func(h *C.qm_machine, t C.int64_t, out **C.char) C.enum_qm_status) error {
	var out *C.char
	err := m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status { return f(h, t, &out) })
	text := takeString(out)
	if err != nil {
		return err
	}
	return decodeJSON(op, text, v)
}

// unmarshalKnown decodes the JSON object data into v, a pointer to a struct (of a type without
// an UnmarshalJSON method, so that it is not called again), and returns the members whose
// names no field of v's json tags names (nil when there are none).
func unmarshalKnown(data []byte, v any) (map[string]json.RawMessage, error) {
	if err := json.Unmarshal(data, v); err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, err
	}
	t := reflect.TypeOf(v).Elem()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			delete(all, name)
		}
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}
