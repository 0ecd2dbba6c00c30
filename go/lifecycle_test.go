package qemumachine

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestVersionMatchesHeader(t *testing.T) {
	if lib := VersionNumber(); lib != HeaderVersion {
		t.Fatalf("library version %d, header %d", lib, HeaderVersion)
	}
	if err := CheckVersion(); err != nil {
		t.Fatal(err)
	}
	v := Version()
	want := []int{int(HeaderVersion / 10000), int(HeaderVersion / 100 % 100), int(HeaderVersion % 100)}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		t.Fatalf("version string %q", v)
	}
	for i, p := range parts {
		if p != strings.TrimSpace(p) || p != itoa(want[i]) {
			t.Fatalf("version string %q, header %d", v, HeaderVersion)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// The test binary links the library as the build asked: libqemumachine.so is mapped in a
// default build, and not with -tags qemumachine_static.
func TestLinkage(t *testing.T) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	mapped := strings.Contains(string(maps), "libqemumachine.so")
	if mapped == linkedStatically {
		t.Fatalf("linked statically: %v, libqemumachine.so mapped: %v", linkedStatically, mapped)
	}
}

func TestGuardian(t *testing.T) {
	pid, err := GuardianStart()
	if err != nil {
		t.Fatal(err)
	}
	if pid <= 0 || GuardianPid() != pid {
		t.Fatalf("GuardianStart %d, GuardianPid %d", pid, GuardianPid())
	}
	again, err := GuardianStart()
	if err != nil || again != pid {
		t.Fatalf("GuardianStart again: %d, %v", again, err)
	}
	stat, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if fields[1] != itoa(os.Getpid()) {
		t.Fatalf("the guardian's parent is %s, not this process (%d)", fields[1], os.Getpid())
	}
}

func TestLaunchQMPEventsShutdown(t *testing.T) {
	ctx := deadline(t, time.Minute)
	m := launch(t, noneConfig)
	pid, err := m.Pid()
	if err != nil || pid <= 0 {
		t.Fatalf("pid %d, %v", pid, err)
	}
	reply, err := m.Execute(ctx, "query-status", nil)
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	var status struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := json.Unmarshal(reply, &status); err != nil || status.Status != "running" || !status.Running {
		t.Fatalf("query-status reply %s (%v)", reply, err)
	}
	if _, err := m.Execute(ctx, "stop", nil); err != nil {
		t.Fatalf("stop: %v", err)
	}
	ev, err := m.EventWait(ctx, "STOP", nil)
	if err != nil {
		t.Fatalf("waiting for STOP: %v", err)
	}
	if ev.Name != "STOP" || ev.Time.IsZero() || !strings.Contains(string(ev.JSON), `"timestamp"`) {
		t.Fatalf("STOP event %+v", ev)
	}
	// No name: the next event, whatever its name.
	if _, err := m.Execute(ctx, "cont", nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	if err := m.Pause(); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if ev, err := m.EventWait(ctx, "", nil); err != nil || ev.Name != "RESUME" {
		t.Fatalf("any event: %+v, %v", ev, err)
	}
	if ev, err := m.EventWait(ctx, "", `{"event": "STOP"}`); err != nil || ev.Name != "STOP" {
		t.Fatalf("any event named by the pattern: %+v, %v", ev, err)
	}
	if state, err := m.RunState(); err != nil || state != "paused" {
		t.Fatalf("run state %q, %v", state, err)
	}
	must(t, m.Resume())
	must(t, m.Reset())
	if ev, err := m.EventWait(ctx, "RESET", map[string]any{"data": map[string]any{"guest": false}}); err != nil {
		t.Fatalf("RESET event with a pattern given as a map: %+v, %v", ev, err)
	}
	if running, err := m.IsRunning(); err != nil || !running {
		t.Fatalf("IsRunning %v, %v", running, err)
	}
	if _, _, err := m.ExitStatus(); err == nil {
		t.Fatal("exit status of a running QEMU")
	} else {
		wantStatus(t, "exit status of a running QEMU", err, StatusInvalidState)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	code, sig, err := m.ExitStatus()
	if err != nil || code != 0 || sig != 0 {
		t.Fatalf("exit status %d, signal %v, %v", code, sig, err)
	}
	if running, err := m.IsRunning(); err != nil || running {
		t.Fatalf("IsRunning after shutdown %v, %v", running, err)
	}
	if !processGone(pid) {
		t.Fatalf("QEMU (pid %d) still exists after shutdown", pid)
	}
	if _, err := m.Execute(ctx, "query-status", nil); err == nil {
		t.Fatal("execute after shutdown")
	} else {
		wantStatus(t, "execute after shutdown", err, StatusProcessExited)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("a second shutdown is nil at once: %v", err)
	}
	if _, err := m.Log(); err != nil {
		t.Fatalf("log after exit: %v", err)
	}
	must(t, m.Close())
	must(t, m.Close()) // idempotent
	if _, err := m.Pid(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pid after Close: %v", err)
	}
}

func TestKillWaitAndPowerdownTimeout(t *testing.T) {
	m := launch(t, noneConfig)
	pid, _ := m.Pid()
	// -machine none has no ACPI: nothing answers the power button.
	err := m.Powerdown(deadline(t, 300*time.Millisecond))
	wantStatus(t, "powerdown of a machine that ignores the button", err, StatusTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a timeout is also context.DeadlineExceeded: %v", err)
	}
	err = m.Wait(deadline(t, 100*time.Millisecond))
	wantStatus(t, "wait for a QEMU that runs on", err, StatusTimeout)
	must(t, m.Kill())
	must(t, m.Wait(deadline(t, 30*time.Second)))
	code, sig, err := m.ExitStatus()
	if err != nil || code != -1 || sig != syscall.SIGKILL {
		t.Fatalf("after Kill: code %d, signal %v, %v", code, sig, err)
	}
	if !processGone(pid) {
		t.Fatalf("QEMU (pid %d) still exists after Kill", pid)
	}
	must(t, m.Kill()) // nil once it has exited
}

// A machine's temp dir is made under Config.SetTempDir's directory, and removed by Close; a
// binary that does not exist is StatusBinaryNotFound.
func TestConfigSetters(t *testing.T) {
	cfg, err := NewConfig()
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	must(t, cfg.SetBinary("qemu-system-x86_64"))
	must(t, cfg.AddArg("-machine", "none", "-nodefaults"))
	must(t, cfg.SetAccel(AccelTCG))
	must(t, cfg.SetLaunchTimeout(time.Minute))
	must(t, cfg.SetQMPTimeout(20*time.Second))
	tmp := t.TempDir()
	must(t, cfg.SetTempDir(tmp))
	wantStatus(t, "an unknown accelerator", cfg.SetAccel(Accel(99)), StatusInvalidArgument)
	wantStatus(t, "a negative launch timeout", cfg.SetLaunchTimeout(-time.Second), StatusInvalidArgument)
	m, err := Launch(deadline(t, time.Minute), cfg)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(tmp)
	if len(entries) != 1 {
		t.Fatalf("temp dir %s holds %d entries while the machine runs", tmp, len(entries))
	}
	logPath, err := m.LogPath()
	if err != nil || !strings.HasPrefix(logPath, tmp+string(filepath.Separator)) {
		t.Fatalf("log path %q, %v", logPath, err)
	}
	m.Close()
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("temp dir %s still holds %v after Close", tmp, entries)
	}

	must(t, cfg.SetBinary(filepath.Join(tmp, "no-such-qemu")))
	_, err = Launch(deadline(t, time.Minute), cfg)
	wantStatus(t, "a binary that does not exist", err, StatusBinaryNotFound)

	vm, err := ConfigFromJSON(`{"vm": {"memory": "64M"}}`)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	wantStatus(t, "AddArg on a vm description", vm.AddArg("-S"), StatusInvalidState)

	must(t, cfg.Close())
	must(t, cfg.Close()) // idempotent
	if err := cfg.AddArg("-S"); !errors.Is(err, ErrClosed) {
		t.Fatalf("a closed config: %v", err)
	}
	if _, err := Launch(context.Background(), cfg); !errors.Is(err, ErrClosed) {
		t.Fatalf("launch from a closed config: %v", err)
	}
}

// A context's deadline shortens the config's launch timeout for that launch only.
func TestLaunchHonoursTheContextDeadline(t *testing.T) {
	tmp := t.TempDir()
	// A wrapper that makes QEMU start 2 s late.
	cfg, err := ConfigFromJSON(`{"wrapper": ["sh", "-c", "sleep 2; exec \"$@\"", "sh"],` +
		` "args": ["-machine", "none", "-nodefaults"], "accel": "tcg", "launch_timeout_ms": 60000}`)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	must(t, cfg.SetTempDir(tmp))
	_, err = Launch(deadline(t, 200*time.Millisecond), cfg)
	wantStatus(t, "a launch past the context's deadline", err, StatusTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("not context.DeadlineExceeded: %v", err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("a timed-out launch left %v behind", entries)
	}
	// The config's own launch timeout (60 s) is back: the next launch waits for QEMU.
	m, err := Launch(context.Background(), cfg)
	if err != nil {
		t.Fatalf("launch without a deadline: %v", err)
	}
	m.Close()
	// A context already done is its error, before anything is started.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Launch(ctx, cfg); err != context.Canceled {
		t.Fatalf("launch with a cancelled context: %v", err)
	}
}
