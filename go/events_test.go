package qemumachine

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// NextEvent takes events one by one in the order QEMU sent them, whichever call took them in.
func TestNextEventIteratesInOrder(t *testing.T) {
	ctx := deadline(t, time.Minute)
	m := launch(t, noneConfig)
	must(t, m.Pause())
	must(t, m.Resume())
	must(t, m.Pause())
	var names []string
	for len(names) < 3 {
		ev, err := m.NextEvent(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", names, err)
		}
		names = append(names, ev.Name)
	}
	if names[0] != "STOP" || names[1] != "RESUME" || names[2] != "STOP" {
		t.Fatalf("events %v", names)
	}
	_, err := m.NextEvent(deadline(t, 100*time.Millisecond))
	wantStatus(t, "no event left", err, StatusTimeout)

	// Events and TakeEvents take everything kept.
	must(t, m.Resume())
	if _, err := m.EventWait(ctx, "RESUME", nil); err != nil {
		t.Fatal(err)
	}
	must(t, m.Pause())
	must(t, m.Resume()) // the reply comes after the STOP event: both are in now
	evs, err := m.TakeEvents()
	if err != nil || len(evs) != 2 || evs[0].Name != "STOP" || evs[1].Name != "RESUME" {
		t.Fatalf("TakeEvents %+v, %v", evs, err)
	}
	if evs, err := m.Events(); err != nil || len(evs) != 0 || evs == nil {
		t.Fatalf("Events with none kept: %#v, %v", evs, err)
	}
	must(t, m.Pause())
	if evs, err := m.Events(); err != nil || len(evs) != 1 || evs[0].Name != "STOP" {
		t.Fatalf("Events %+v, %v", evs, err)
	}

	// EventsWait takes the first of several.
	must(t, m.Resume())
	ev, err := m.EventsWait(ctx, EventMatch{Name: "STOP"}, EventMatch{Name: "RESUME", Pattern: json.RawMessage(`{"event": "RESUME"}`)})
	if err != nil || ev.Name != "RESUME" {
		t.Fatalf("EventsWait: %+v, %v", ev, err)
	}
	_, err = m.EventsWait(ctx, EventMatch{Name: "STOP", Pattern: "{"})
	wantStatus(t, "a pattern that is not JSON", err, StatusInvalidJSON)
	_, err = m.EventsWait(ctx, EventMatch{})
	wantStatus(t, "a match without a name", err, StatusInvalidArgument)
	_, err = m.EventsWait(ctx)
	wantStatus(t, "no match at all", err, StatusInvalidJSON)
}

// With the bounded queue full, events are dropped by the library; NextEvent delivers the kept
// ones, then reports the overflow once, then goes on.
func TestEventQueueOverflowIsReported(t *testing.T) {
	ctx := deadline(t, time.Minute)
	m := launch(t, `{"args": ["-machine", "none", "-nodefaults", "-S"], "accel": "tcg", "max_events": 1}`)
	if n, err := m.EventsDropped(); err != nil || n != 0 {
		t.Fatalf("dropped before anything: %d, %v", n, err)
	}
	must(t, m.Resume()) // RESUME is kept
	must(t, m.Pause())  // STOP is dropped
	if n, err := m.EventsDropped(); err != nil || n != 1 {
		t.Fatalf("dropped: %d, %v", n, err)
	}
	ev, err := m.NextEvent(ctx)
	if err != nil || ev.Name != "RESUME" {
		t.Fatalf("the kept event first: %+v, %v", ev, err)
	}
	_, err = m.NextEvent(ctx)
	wantStatus(t, "the overflow", err, StatusEventQueueFull)
	must(t, m.Resume())
	ev, err = m.NextEvent(ctx)
	if err != nil || ev.Name != "RESUME" {
		t.Fatalf("after the overflow report, the next event: %+v, %v", ev, err)
	}
	_, err = m.NextEvent(deadline(t, 100*time.Millisecond))
	wantStatus(t, "reported once", err, StatusTimeout)
}

// A NextEvent without a deadline ends when its context is cancelled, when the machine is
// closed, or when QEMU exits.
func TestNextEventEnds(t *testing.T) {
	m := launch(t, noneConfig)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error)
	go func() {
		_, err := m.NextEvent(ctx)
		got <- err
	}()
	cancel()
	if err := <-got; err != context.Canceled {
		t.Fatalf("cancelled: %v", err)
	}

	// After quit, the events QEMU sent (SHUTDOWN) come first, then the end of the connection.
	go func() {
		for {
			ev, err := m.NextEvent(context.Background())
			if err != nil {
				got <- err
				return
			}
			if ev.Name != "SHUTDOWN" {
				got <- errors.New("unexpected event " + ev.Name)
				return
			}
		}
	}()
	if _, err := m.Execute(deadline(t, time.Minute), "quit", nil); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, StatusProcessExited) && !errors.Is(err, StatusDisconnected) {
		t.Fatalf("after quit: %v", err)
	}

	m2 := launch(t, noneConfig)
	go func() {
		_, err := m2.NextEvent(context.Background())
		got <- err
	}()
	m2.Close()
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}
