package qemumachine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStatusNames(t *testing.T) {
	if s := StatusTimeout.String(); s != "QM_STATUS_TIMEOUT" {
		t.Fatalf("StatusTimeout.String() = %q", s)
	}
	if s := Status(999).String(); s != "QM_STATUS_UNKNOWN" {
		t.Fatalf("Status(999).String() = %q", s)
	}
	if !errors.Is(StatusTimeout, StatusTimeout) || errors.Is(StatusTimeout, StatusIO) {
		t.Fatal("a Status is an error matching itself only")
	}
}

func TestErrorsAreTyped(t *testing.T) {
	ctx := deadline(t, time.Minute)
	_, err := LaunchJSON(ctx, `{"args": [`)
	e := wantStatus(t, "bad JSON", err, StatusInvalidJSON)
	if e.Op != "qm_config_from_json" || e.Message == "" {
		t.Fatalf("bad JSON gave %#v", e)
	}

	_, err = LaunchJSON(ctx, `{"args": ["-bogus-option"], "accel": "tcg"}`)
	e = wantStatus(t, "bad option", err, StatusLaunchFailed)
	contains(t, "the launch failure's message", e.Message, "-bogus-option")
	contains(t, "Error()", err.Error(), "qm_machine_launch: QM_STATUS_LAUNCH_FAILED: ")

	m := launch(t, noneConfig)
	_, err = m.Execute(ctx, "no-such-command", nil)
	e = wantStatus(t, "unknown command", err, StatusQMPError)
	if e.QMPClass != "CommandNotFound" || e.QMPDesc == "" || e.Op != "qm_machine_execute" {
		t.Fatalf("unknown command gave %#v", e)
	}
	_, err = m.Execute(ctx, "query-status", map[string]any{"bogus": 1})
	e = wantStatus(t, "bad arguments", err, StatusQMPError)
	if e.QMPClass != "GenericError" {
		t.Fatalf("bad arguments gave %#v", e)
	}
	_, err = m.Execute(ctx, "query-status", `[1]`)
	wantStatus(t, "arguments that are not an object", err, StatusInvalidJSON)
	_, err = m.Execute(ctx, "query-status", func() {})
	wantStatus(t, "arguments Go cannot encode", err, StatusInvalidArgument)

	// A timeout is StatusTimeout and context.DeadlineExceeded.
	_, err = m.EventWait(deadline(t, 200*time.Millisecond), "NEVER_SENT", nil)
	wantStatus(t, "event wait", err, StatusTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a timeout is not context.DeadlineExceeded: %v", err)
	}

	// A string with a NUL byte never reaches C, where it would be cut short.
	_, err = m.Execute(ctx, "query-status\x00quit", nil)
	e = wantStatus(t, "a NUL byte in a command", err, StatusInvalidArgument)
	contains(t, "the NUL message", e.Message, "`command`", "NUL")
	if running, _ := m.IsRunning(); !running {
		t.Fatal("QEMU quit: the command was cut at the NUL byte")
	}
	_, err = ImageInfo("/tmp/x\x00y")
	wantStatus(t, "a NUL byte in a path", err, StatusInvalidArgument)

	// The library's own argument checks.
	_, err = m.Execute(ctx, "not a command!", nil)
	wantStatus(t, "a command name that cannot be QMP's", err, StatusInvalidArgument)
	_, err = m.ConsoleRead(make([]byte, 8))
	wantStatus(t, "console read without a console", err, StatusUnsupported)
	_, err = m.ForwardedPort("ssh")
	wantStatus(t, "forwarded port without a vm description", err, StatusUnsupported)
	_, err = m.Screendump(t.TempDir()+"/shot.ppm", "")
	wantStatus(t, "screendump without a display", err, StatusQMPError)

	// A context already done: its error, and nothing is called.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Execute(done, "quit", nil); err != context.Canceled {
		t.Fatalf("execute with a cancelled context: %v", err)
	}
	if _, err := m.NextEvent(done); err != context.Canceled {
		t.Fatalf("next event with a cancelled context: %v", err)
	}
	if running, _ := m.IsRunning(); !running {
		t.Fatal("quit was sent with a cancelled context")
	}

	// After Close: ErrClosed, from every kind of call.
	m.Close()
	for name, err := range map[string]error{
		"Execute":   second(m.Execute(ctx, "query-status", nil)),
		"NextEvent": second(m.NextEvent(ctx)),
		"Wait":      m.Wait(ctx),
		"Console":   second(m.Console().Read(make([]byte, 1))),
		"Pid":       second(m.Pid()),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("%s after Close: %v", name, err)
		}
		var e *Error
		if errors.As(err, &e) {
			t.Fatalf("%s after Close is an *Error: %v", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// A goroutine that locks its OS thread and returns without unlocking ends that thread. A
// machine it launched must not die with the thread.
func TestMachineOutlivesTheLockedThreadThatLaunchedIt(t *testing.T) {
	type launched struct {
		m   *Machine
		tid int
		err error
	}
	var got launched
	// The runtime never ends the process's main thread: a goroutine that happens to run there
	// proves nothing, so launch again (closing that machine) until it ran on another thread.
	for attempt := 0; ; attempt++ {
		done := make(chan launched)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			m, err := LaunchJSON(context.Background(), noneConfig)
			done <- launched{m, syscall.Gettid(), err}
		}()
		got = <-done
		if got.err != nil {
			t.Fatalf("launch: %v", got.err)
		}
		if got.tid != os.Getpid() {
			break
		}
		got.m.Close()
		if attempt > 20 {
			t.Fatal("every launch ran on the main thread")
		}
	}
	m := got.m
	defer m.Close()
	// Wait until the launching thread is really gone (a bound, not a timing assertion).
	gone := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", got.tid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(gone) {
			t.Fatalf("thread %d did not exit", got.tid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		state, err := m.RunState()
		if err != nil || state != "running" {
			t.Fatalf("after its launching thread exited: run state %q, %v", state, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := m.Shutdown(deadline(t, 30*time.Second)); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// The last error is read on the thread that made the call, even when goroutines are moved
// between threads all the time: many goroutines fail in different ways at once, each gets its
// own error.
func TestErrorsStayWithTheirCall(t *testing.T) {
	m := launch(t, noneConfig)
	ctx := deadline(t, time.Minute)
	errs := make(chan error, 64)
	for i := 0; i < 32; i++ {
		i := i
		go func() {
			if i%2 == 0 {
				_, err := m.Execute(ctx, fmt.Sprintf("no-such-command-%d", i), nil)
				var e *Error
				if !errors.As(err, &e) || e.Status != StatusQMPError || !strings.Contains(e.QMPDesc, fmt.Sprintf("no-such-command-%d", i)) {
					errs <- fmt.Errorf("goroutine %d: %v", i, err)
					return
				}
			} else {
				_, err := ConfigFromJSON(fmt.Sprintf(`{"bogus_%d": 1}`, i))
				var e *Error
				if !errors.As(err, &e) || e.Status != StatusInvalidJSON || !strings.Contains(e.Message, fmt.Sprintf("bogus_%d", i)) {
					errs <- fmt.Errorf("goroutine %d: %v", i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < 32; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
