// Package qemumachine is a small Go binding over libqemumachine's C API, used by the test
// suite to show that cgo programs can link the library through pkg-config.
package qemumachine

/*
#cgo pkg-config: qemumachine
#include <stdlib.h>
#include "qemumachine.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Error is a failed call: the status code, its name, the library's message, and the QMP
// error class and description when QEMU rejected a command.
type Error struct {
	Status   int
	Name     string
	Message  string
	QMPClass string
	QMPDesc  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Name, e.Message)
}

func lastError(status C.enum_qm_status) error {
	if status == C.QM_STATUS_OK {
		return nil
	}
	e := &Error{Status: int(status), Name: C.GoString(C.qm_status_name(C.int32_t(status)))}
	if msg := C.qm_last_error_message_dup(); msg != nil {
		e.Message = C.GoString(msg)
		C.qm_string_free(msg)
	}
	buf := make([]byte, 512)
	p := (*C.char)(unsafe.Pointer(&buf[0]))
	if n := C.qm_last_error_qmp_class(p, C.size_t(len(buf))); n > 0 {
		e.QMPClass = C.GoString(p)
	}
	if n := C.qm_last_error_qmp_desc(p, C.size_t(len(buf))); n > 0 {
		e.QMPDesc = C.GoString(p)
	}
	return e
}

// takeString copies a library-allocated string into Go memory and frees it.
func takeString(s *C.char) string {
	if s == nil {
		return ""
	}
	defer C.qm_string_free(s)
	return C.GoString(s)
}

// Version returns the library's version number (major*10000 + minor*100 + patch) and the
// header's, which must agree.
func Version() (library uint32, header uint32) {
	return uint32(C.qm_version()), uint32(C.QM_VERSION_NUMBER)
}

// Machine is a QEMU launched by the library. Not safe for concurrent use; LockOSThread is not
// needed because every call reads its error on the thread that made it, inside one cgo call
// sequence (see lastError uses below).
type Machine struct {
	m *C.qm_machine
}

// Launch starts QEMU from a JSON configuration (see qm_config_from_json in the header).
func Launch(configJSON string) (*Machine, error) {
	cjson := C.CString(configJSON)
	defer C.free(unsafe.Pointer(cjson))
	var cfg *C.qm_config
	if err := call(func() C.enum_qm_status { return C.qm_config_from_json(cjson, &cfg) }); err != nil {
		return nil, err
	}
	defer C.qm_config_free(cfg)
	var m *C.qm_machine
	if err := call(func() C.enum_qm_status { return C.qm_machine_launch(cfg, &m) }); err != nil {
		return nil, err
	}
	return &Machine{m: m}, nil
}

// Execute runs a QMP command with JSON arguments ("" for none) and returns the JSON reply.
func (m *Machine) Execute(command, argsJSON string, timeoutMs int64) (string, error) {
	ccmd := C.CString(command)
	defer C.free(unsafe.Pointer(ccmd))
	var cargs *C.char
	if argsJSON != "" {
		cargs = C.CString(argsJSON)
		defer C.free(unsafe.Pointer(cargs))
	}
	var out *C.char
	err := call(func() C.enum_qm_status {
		return C.qm_machine_execute(m.m, ccmd, cargs, C.int64_t(timeoutMs), &out)
	})
	return takeString(out), err
}

// EventWait waits for an event by name ("" for any name) and optional JSON pattern ("" for any).
func (m *Machine) EventWait(name, patternJSON string, timeoutMs int64) (string, error) {
	var cname *C.char
	if name != "" {
		cname = C.CString(name)
		defer C.free(unsafe.Pointer(cname))
	}
	var cpat *C.char
	if patternJSON != "" {
		cpat = C.CString(patternJSON)
		defer C.free(unsafe.Pointer(cpat))
	}
	var out *C.char
	err := call(func() C.enum_qm_status {
		return C.qm_machine_event_wait(m.m, cname, cpat, C.int64_t(timeoutMs), &out)
	})
	return takeString(out), err
}

// Status returns the run state ("running", "paused", ...).
func (m *Machine) Status() (string, error) {
	var out *C.char
	err := call(func() C.enum_qm_status { return C.qm_machine_status(m.m, &out) })
	return takeString(out), err
}

// Pid returns QEMU's process id.
func (m *Machine) Pid() (int, error) {
	var pid C.int32_t
	err := call(func() C.enum_qm_status { return C.qm_machine_pid(m.m, &pid) })
	return int(pid), err
}

// Shutdown quits QEMU gracefully, killing it after timeoutMs.
func (m *Machine) Shutdown(timeoutMs int64) error {
	return call(func() C.enum_qm_status { return C.qm_machine_shutdown(m.m, C.int64_t(timeoutMs)) })
}

// ExitCode returns QEMU's exit code after it has exited.
func (m *Machine) ExitCode() (int, error) {
	var code C.int32_t
	err := call(func() C.enum_qm_status { return C.qm_machine_exit_status(m.m, &code, nil) })
	return int(code), err
}

// Close frees the machine, killing QEMU if it still runs.
func (m *Machine) Close() {
	C.qm_machine_free(m.m)
	m.m = nil
}
