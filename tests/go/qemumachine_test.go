package qemumachine

import (
	"errors"
	"strings"
	"syscall"
	"testing"
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
