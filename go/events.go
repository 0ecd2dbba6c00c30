package qemumachine

/*
#include "qemumachine.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"time"
)

// Event is a QMP event QEMU sent.
type Event struct {
	// Name is the event's name, e.g. "STOP" or "SHUTDOWN".
	Name string
	// Data is the event's `data` member (nil when it has none).
	Data json.RawMessage
	// Time is QEMU's timestamp of the event.
	Time time.Time
	// JSON is the whole event as the library gave it:
	// {"event": ..., "data": ..., "timestamp": {"seconds": ..., "microseconds": ...}}.
	JSON json.RawMessage
}

// UnmarshalJSON decodes an event from its JSON form.
func (e *Event) UnmarshalJSON(b []byte) error {
	var wire struct {
		Event     string          `json:"event"`
		Data      json.RawMessage `json:"data"`
		Timestamp struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		} `json:"timestamp"`
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		return err
	}
	*e = Event{
		Name: wire.Event,
		Data: wire.Data,
		Time: time.Unix(wire.Timestamp.Seconds, wire.Timestamp.Microseconds*1000),
		JSON: append(json.RawMessage(nil), b...),
	}
	return nil
}

// EventMatch is one alternative of EventsWait: an event named Name whose JSON form matches
// Pattern (nil for any; JSON text or a value to encode, see EventWait).
type EventMatch struct {
	Name    string
	Pattern any
}

// eventsOut runs a call returning a JSON array of events.
func (m *Machine) eventsOut(op string, f func(h *C.qm_machine, out **C.char) C.enum_qm_status) ([]Event, error) {
	text, err := m.stringOut(op, f)
	if err != nil {
		return nil, err
	}
	var events []Event
	if err := decodeJSON(op, text, &events); err != nil {
		return nil, err
	}
	return events, nil
}

// eventOut decodes one event a call returned.
func eventOut(op, text string) (Event, error) {
	var ev Event
	err := decodeJSON(op, text, &ev)
	return ev, err
}

// Events takes every event kept so far, oldest first, after reading what QEMU has already sent
// (without waiting) (qm_machine_events). None is an empty slice.
func (m *Machine) Events() ([]Event, error) {
	return m.eventsOut("qm_machine_events", func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_events(h, out)
	})
}

// TakeEvents is Events without reading anything first, for an event loop of one's own (see
// PollFD) (qm_machine_take_events).
func (m *Machine) TakeEvents() ([]Event, error) {
	return m.eventsOut("qm_machine_take_events", func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_take_events(h, out)
	})
}

// EventsDropped returns how many events were dropped since launch because the machine's
// bounded event queue was full (max_events, 65536 by default) (qm_machine_events_dropped).
func (m *Machine) EventsDropped() (uint64, error) {
	var n C.uint64_t
	err := m.do("qm_machine_events_dropped", func(h *C.qm_machine) C.enum_qm_status {
		return C.qm_machine_events_dropped(h, &n)
	})
	return uint64(n), err
}

// NextEvent takes the next event: the oldest kept one, else the next to arrive
// (qm_machine_next_event, in slices). It is the event iterator; it never loses an event:
//
//	for {
//		ev, err := m.NextEvent(ctx)
//		if errors.Is(err, qemumachine.StatusEventQueueFull) {
//			continue // some events were dropped before they were taken (see below)
//		}
//		if err != nil {
//			return err // ctx done, QEMU gone (StatusProcessExited), ErrClosed, ...
//		}
//		handle(ev)
//	}
//
// Unlike the other waits, NextEvent without a deadline waits until an event comes, ctx is
// cancelled, the connection closes (StatusProcessExited or StatusDisconnected once no event
// is left) or the machine is closed (ErrClosed).
//
// Events are kept by the library between calls, whichever call took them in (Execute, another
// wait), in a queue bounded by max_events. When it was full, newer events were dropped: after
// the events kept before the overflow have been taken, NextEvent returns an *Error with
// StatusEventQueueFull, once, then goes on with the events that came after; EventsDropped
// counts them. Each event goes to one taker: NextEvent, EventWait, EventsWait, Events and
// TakeEvents share the queue.
func (m *Machine) NextEvent(ctx context.Context) (Event, error) {
	const op = "qm_machine_next_event"
	var out *C.char
	err := m.sliced(ctx, op, 0, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_next_event(h, t, &out)
	})
	text := takeString(out)
	if err != nil {
		return Event{}, err
	}
	return eventOut(op, text)
}

// EventWait waits until ctx's deadline (30 s without one) for an event named name ("" for
// any) whose JSON form matches pattern (nil for any) (qm_machine_event_wait, in slices). The
// pattern is a JSON sub-tree of the event, as JSON text or a value to encode:
// `{"data": {"guest": true}}`; null in it matches anything. Kept events are searched first,
// oldest first; the match is taken, the others stay kept. StatusTimeout when nothing matched,
// StatusProcessExited or StatusDisconnected when the connection closed first, and
// StatusEventQueueFull (once) when events were dropped and none of the kept ones matches.
func (m *Machine) EventWait(ctx context.Context, name string, pattern any) (Event, error) {
	const op = "qm_machine_event_wait"
	cname, err := newOptCString(op, "name", name)
	if err != nil {
		return Event{}, err
	}
	defer cname.free()
	cpat, err := jsonArg(op, "pattern_json", pattern)
	if err != nil {
		return Event{}, err
	}
	defer cpat.free()
	var out *C.char
	err = m.sliced(ctx, op, defaultWait, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_event_wait(h, cname.p, cpat.p, t, &out)
	})
	text := takeString(out)
	if err != nil {
		return Event{}, err
	}
	return eventOut(op, text)
}

// EventsWait is EventWait for the first event that matches any of wanted
// (qm_machine_events_wait, in slices).
func (m *Machine) EventsWait(ctx context.Context, wanted ...EventMatch) (Event, error) {
	const op = "qm_machine_events_wait"
	type match struct {
		Name    string          `json:"name"`
		Pattern json.RawMessage `json:"pattern,omitempty"`
	}
	list := make([]match, 0, len(wanted))
	for _, w := range wanted {
		if w.Name == "" {
			return Event{}, argError(op, "an EventMatch has no Name (EventWait with \"\" waits for any name)")
		}
		mm := match{Name: w.Name}
		text, ok, err := jsonText(op, "wanted_json", w.Pattern)
		if err != nil {
			return Event{}, err
		}
		if ok {
			if !json.Valid([]byte(text)) {
				return Event{}, &Error{Op: op, Status: StatusInvalidJSON, Message: "the pattern of " + w.Name + " is not valid JSON"}
			}
			mm.Pattern = json.RawMessage(text)
		}
		list = append(list, mm)
	}
	cwanted, err := jsonArg(op, "wanted_json", list)
	if err != nil {
		return Event{}, err
	}
	defer cwanted.free()
	var out *C.char
	err = m.sliced(ctx, op, defaultWait, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_events_wait(h, cwanted.p, t, &out)
	})
	text := takeString(out)
	if err != nil {
		return Event{}, err
	}
	return eventOut(op, text)
}
