package qemumachine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// A machine launched in one goroutine and used from many: commands, waits and a NextEvent
// iterator at once. Under -race this also checks the binding's own synchronisation.
func TestOneMachineManyGoroutines(t *testing.T) {
	ctx := deadline(t, 2*time.Minute)
	launched := make(chan *Machine)
	go func() {
		m, err := LaunchJSON(ctx, noneConfig)
		if err != nil {
			t.Errorf("launch: %v", err)
		}
		launched <- m
	}()
	m := <-launched
	if m == nil {
		t.FailNow()
	}
	defer m.Close()

	// An iterator that waits without a deadline: if it held the machine while waiting, the
	// commands below could never run, and the test would hang instead of passing.
	events := make(chan string, 64)
	iterErr := make(chan error, 1)
	iterCtx, stopIter := context.WithCancel(ctx)
	go func() {
		for {
			ev, err := m.NextEvent(iterCtx)
			if err != nil {
				iterErr <- err
				return
			}
			events <- ev.Name
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 8; g++ {
		g := g
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				var err error
				switch (g + i) % 4 {
				case 0:
					_, err = m.Execute(ctx, "query-status", nil)
				case 1:
					_, err = m.RunState()
				case 2:
					_, err = m.Pid()
				case 3:
					_, err = m.Execute(ctx, "query-version", nil)
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d, call %d: %w", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Ten pauses and resumes from another goroutine: the iterator sees all twenty events, in
	// order.
	go func() {
		for i := 0; i < 10; i++ {
			if err := m.Pause(); err != nil {
				t.Error(err)
				return
			}
			if err := m.Resume(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		want := []string{"STOP", "RESUME"}[i%2]
		select {
		case name := <-events:
			if name != want {
				t.Fatalf("event %d: %s, want %s", i, name, want)
			}
		case err := <-iterErr:
			t.Fatalf("iterator: %v", err)
		}
	}
	stopIter()
	if err := <-iterErr; err != context.Canceled {
		t.Fatalf("iterator end: %v", err)
	}
}

// Close while other goroutines use the machine: every call either completes or returns
// ErrClosed; nothing crashes, and Close may be called from several goroutines.
func TestCloseWhileInUse(t *testing.T) {
	ctx := deadline(t, time.Minute)
	m := launch(t, noneConfig)
	pid, _ := m.Pid()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	start := make(chan struct{})
	for g := 0; g < 8; g++ {
		g := g
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				var err error
				if g%2 == 0 {
					_, err = m.Execute(ctx, "query-status", nil)
				} else {
					_, err = m.EventWait(ctx, "NEVER_SENT", nil)
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d: %w", g, err)
					return
				}
			}
		}()
	}
	close(start)
	if _, err := m.Execute(ctx, "query-status", nil); err != nil {
		t.Fatal(err)
	}
	var closers sync.WaitGroup
	for i := 0; i < 3; i++ {
		closers.Add(1)
		go func() {
			defer closers.Done()
			m.Close()
		}()
	}
	closers.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !processGone(pid) {
		t.Fatalf("QEMU %d outlived Close", pid)
	}
}

// Sixteen machines, each launched and driven by a goroutine of its own.
func TestSixteenMachinesFromSixteenGoroutines(t *testing.T) {
	ctx := deadline(t, 3*time.Minute)
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		i := i
		go func() {
			errs <- func() error {
				cfg, err := ConfigFromJSON(noneConfig)
				if err != nil {
					return err
				}
				defer cfg.Close()
				if err := cfg.SetName(fmt.Sprintf("go-%d", i)); err != nil {
					return err
				}
				m, err := Launch(ctx, cfg)
				if err != nil {
					return err
				}
				defer m.Close()
				if name, err := m.Name(); err != nil || name != fmt.Sprintf("go-%d", i) {
					return fmt.Errorf("name %q, %v", name, err)
				}
				if err := m.Pause(); err != nil {
					return err
				}
				if _, err := m.EventWait(ctx, "STOP", nil); err != nil {
					return err
				}
				if state, err := m.RunState(); err != nil || state != "paused" {
					return fmt.Errorf("run state %q, %v", state, err)
				}
				if err := m.Shutdown(ctx); err != nil {
					return err
				}
				if code, _, err := m.ExitStatus(); err != nil || code != 0 {
					return fmt.Errorf("exit status %d, %v", code, err)
				}
				return nil
			}()
		}()
	}
	for i := 0; i < 16; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// One Config, shared by goroutines that launch from it and change it.
func TestConfigSharedByGoroutines(t *testing.T) {
	ctx := deadline(t, 2*time.Minute)
	cfg, err := ConfigFromJSON(noneConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			errs <- func() error {
				if err := cfg.SetQMPTimeout(10 * time.Second); err != nil {
					return err
				}
				m, err := Launch(ctx, cfg)
				if err != nil {
					return err
				}
				defer m.Close()
				_, err = m.Execute(ctx, "query-status", nil)
				return err
			}()
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
