package qemumachine

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

const noneConfig = `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg"}`

func TestVersionMatchesHeader(t *testing.T) {
	lib, header := Version()
	if lib != header {
		t.Fatalf("library version %d, header %d", lib, header)
	}
}

func TestLaunchQMPEventsShutdown(t *testing.T) {
	m, err := Launch(noneConfig)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	defer m.Close()
	pid, err := m.Pid()
	if err != nil || pid <= 0 {
		t.Fatalf("pid %d, %v", pid, err)
	}
	reply, err := m.Execute("query-status", "", -1)
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	if !strings.Contains(reply, `"status":"running"`) {
		t.Fatalf("query-status reply %s", reply)
	}
	if _, err := m.Execute("stop", "", -1); err != nil {
		t.Fatalf("stop: %v", err)
	}
	ev, err := m.EventWait("STOP", "", 10000)
	if err != nil {
		t.Fatalf("waiting for STOP: %v", err)
	}
	if !strings.Contains(ev, `"event":"STOP"`) || !strings.Contains(ev, `"timestamp"`) {
		t.Fatalf("STOP event %s", ev)
	}
	// No name: the next event, whatever its name.
	if _, err := m.Execute("cont", "", -1); err != nil {
		t.Fatalf("cont: %v", err)
	}
	if _, err := m.Execute("stop", "", -1); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if ev, err := m.EventWait("", "", 10000); err != nil || !strings.Contains(ev, `"event":"RESUME"`) {
		t.Fatalf("any event: %s, %v", ev, err)
	}
	if ev, err := m.EventWait("", `{"event": "STOP"}`, 10000); err != nil || !strings.Contains(ev, `"event":"STOP"`) {
		t.Fatalf("any event named by the pattern: %s, %v", ev, err)
	}
	status, err := m.Status()
	if err != nil || status != "paused" {
		t.Fatalf("status %q, %v", status, err)
	}
	if err := m.Shutdown(10000); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	code, err := m.ExitCode()
	if err != nil || code != 0 {
		t.Fatalf("exit code %d, %v", code, err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("QEMU (pid %d) still exists after shutdown", pid)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	if _, err := Launch(`{"args": [`); err == nil {
		t.Fatal("bad JSON accepted")
	} else {
		var e *Error
		if !errors.As(err, &e) || e.Name != "QM_STATUS_INVALID_JSON" {
			t.Fatalf("bad JSON gave %v", err)
		}
	}
	if _, err := Launch(`{"args": ["-bogus-option"], "accel": "tcg"}`); err == nil {
		t.Fatal("bad option accepted")
	} else {
		var e *Error
		if !errors.As(err, &e) || e.Name != "QM_STATUS_LAUNCH_FAILED" || !strings.Contains(e.Message, "-bogus-option") {
			t.Fatalf("bad option gave %v", err)
		}
	}
	m, err := Launch(noneConfig)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	defer m.Close()
	_, err = m.Execute("no-such-command", "", -1)
	var e *Error
	if !errors.As(err, &e) || e.Name != "QM_STATUS_QMP_ERROR" || e.QMPClass != "CommandNotFound" || e.QMPDesc == "" {
		t.Fatalf("unknown command gave %#v", err)
	}
	if _, err := m.EventWait("NEVER_SENT", "", 200); err == nil {
		t.Fatal("event wait did not time out")
	} else if !errors.As(err, &e) || e.Name != "QM_STATUS_TIMEOUT" {
		t.Fatalf("event wait gave %v", err)
	}
}

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
			m, err := Launch(noneConfig)
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
	// Wait until the launching thread is really gone.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", got.tid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d did not exit", got.tid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		status, err := m.Status()
		if err != nil || status != "running" {
			t.Fatalf("after its launching thread exited: status %q, %v", status, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := m.Shutdown(10000); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}
