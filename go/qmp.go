package qemumachine

/*
#include "qemumachine.h"
*/
import "C"

import (
	"context"
	"encoding/json"
)

// jsonArg converts an optional JSON argument to C: nil is NULL (none); a string, []byte or
// json.RawMessage is JSON text, passed as it is (the library checks it: StatusInvalidJSON);
// anything else (a map, a struct, ...) is encoded with encoding/json.
func jsonArg(op, arg string, v any) (cString, error) {
	text, ok, err := jsonText(op, arg, v)
	if err != nil || !ok {
		return cString{}, err
	}
	return newCString(op, arg, text)
}

// jsonText is jsonArg's text, and false for none.
func jsonText(op, arg string, v any) (string, bool, error) {
	switch x := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return x, true, nil
	case json.RawMessage:
		return string(x), x != nil, nil
	case []byte:
		return string(x), x != nil, nil
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return "", false, argError(op, "argument `"+arg+"` cannot be encoded as JSON: "+err.Error())
		}
		return string(b), true, nil
	}
}

// decodeJSON decodes JSON text the library returned; failing is a bug of the library (or of
// this package), reported as StatusProtocol rather than dropped.
func decodeJSON(op, text string, v any) error {
	if err := json.Unmarshal([]byte(text), v); err != nil {
		return &Error{Op: op, Status: StatusProtocol, Message: "the library returned JSON this package cannot decode: " + err.Error()}
	}
	return nil
}

// Execute runs the QMP command command with arguments args (nil for none; JSON text as a
// string, []byte or json.RawMessage, or a map or struct to encode: a JSON object) and returns its `return` value as JSON, members in
// QEMU's order (qm_machine_execute). It waits until ctx's deadline, or the machine's QMP
// timeout without one (Config.SetQMPTimeout); the machine is held meanwhile, so cancelling
// ctx is honoured at its deadline only. A reply that comes after the deadline is discarded and
// the machine stays usable.
//
// QEMU's error reply is an *Error with StatusQMPError, QMPClass and QMPDesc. Events that
// arrive meanwhile are kept for NextEvent and the other event calls. A connection that closes
// first is StatusProcessExited or StatusDisconnected.
func (m *Machine) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	return m.execute(ctx, "qm_machine_execute", command, args, func(h *C.qm_machine, c, a *C.char, t C.int64_t, out **C.char) C.enum_qm_status {
		return C.qm_machine_execute(h, c, a, t, out)
	})
}

// ExecuteOOB is Execute sent out-of-band (exec-oob), for the commands QEMU allows out-of-band
// (qm_machine_execute_oob). StatusInvalidState when out-of-band execution was not negotiated
// (a config with "oob": false).
func (m *Machine) ExecuteOOB(ctx context.Context, command string, args any) (json.RawMessage, error) {
	return m.execute(ctx, "qm_machine_execute_oob", command, args, func(h *C.qm_machine, c, a *C.char, t C.int64_t, out **C.char) C.enum_qm_status {
		return C.qm_machine_execute_oob(h, c, a, t, out)
	})
}

func (m *Machine) execute(ctx context.Context, op, command string, args any, f func(h *C.qm_machine, c, a *C.char, t C.int64_t, out **C.char) C.enum_qm_status) (json.RawMessage, error) {
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
		return f(h, ccmd.p, cargs.p, t, &out)
	})
	text := takeString(out)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(text), nil
}

// ExecuteRaw sends request, any JSON object, as a QMP request as it is, and returns QEMU's
// whole reply: {"return": ...} or {"error": {"class": ..., "desc": ...}} (an error reply is not
// an error of this call) (qm_machine_execute_raw). The library still owns ids: an "id" in
// request is taken out, and put back into the reply. Deadlines as for Execute.
func (m *Machine) ExecuteRaw(ctx context.Context, request any) (json.RawMessage, error) {
	const op = "qm_machine_execute_raw"
	creq, err := jsonArg(op, "request_json", request)
	if err != nil {
		return nil, err
	}
	defer creq.free()
	if creq.p == nil {
		return nil, &Error{Op: op, Status: StatusNullArgument, Message: "argument `request_json` is nil"}
	}
	var out *C.char
	err = m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_execute_raw(h, creq.p, t, &out)
	})
	text := takeString(out)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(text), nil
}
