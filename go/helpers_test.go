package qemumachine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The tests run against a real QEMU (qemu-system-x86_64 and qemu-img on PATH) and, for the
// guest console, the project's busybox guest fixture, named by QM_TEST_KERNEL, QM_TEST_INITRD
// and QM_TEST_APPEND (scripts/go-test.sh sets them).

// noneConfig is the lightest machine: no board, no devices, TCG.
const noneConfig = `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg"}`

func TestMain(m *testing.M) {
	for prog, pkg := range map[string]string{"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils"} {
		if _, err := exec.LookPath(prog); err != nil {
			fmt.Fprintf(os.Stderr, "%s not found: install it with `apt-get install -y %s`\n", prog, pkg)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// deadline is a context that ends after d (a bound against hangs, never a timing assertion).
func deadline(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// launch launches a machine from JSON, closed when the test ends.
func launch(t *testing.T, configJSON string) *Machine {
	t.Helper()
	m, err := LaunchJSON(deadline(t, time.Minute), configJSON)
	if err != nil {
		t.Fatalf("launch %s: %v", configJSON, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// wantStatus fails the test unless err is an *Error with status want.
func wantStatus(t *testing.T, what string, err error, want Status) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Status != want || !errors.Is(err, want) {
		t.Fatalf("%s: want %v, got %v", what, want, err)
	}
	return e
}

// guestFixture returns the kernel, initrd and kernel command line of the guest fixture.
func guestFixture(t *testing.T) (kernel, initrd, append string) {
	t.Helper()
	kernel, initrd, append = os.Getenv("QM_TEST_KERNEL"), os.Getenv("QM_TEST_INITRD"), os.Getenv("QM_TEST_APPEND")
	if kernel == "" || initrd == "" || append == "" {
		t.Fatal("the guest fixture is not set: run scripts/go-test.sh, or set QM_TEST_KERNEL, QM_TEST_INITRD " +
			"and QM_TEST_APPEND to the kernel:, initrd: and cmdline: lines printed by " +
			"`cargo run -p qemu-machine-tests --bin build-fixture`")
	}
	return kernel, initrd, append
}

// bootFixture boots the guest fixture with a console and waits for its shell prompt.
func bootFixture(t *testing.T, extra func(c *Config)) *Machine {
	t.Helper()
	kernel, initrd, append := guestFixture(t)
	cfg, err := NewConfig()
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	must(t, cfg.AddArg("-machine", "q35", "-m", "256M", "-nodefaults", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", append))
	must(t, cfg.SetAccel(AccelTCG))
	must(t, cfg.SetConsole(true))
	if extra != nil {
		extra(cfg)
	}
	m, err := Launch(deadline(t, time.Minute), cfg)
	if err != nil {
		t.Fatalf("launch the guest fixture: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if _, err := m.ConsoleWaitFor(deadline(t, 2*time.Minute), "QM-GUEST-READY"); err != nil {
		t.Fatalf("waiting for the guest's ready line: %v", err)
	}
	if _, err := m.ConsoleWaitFor(deadline(t, time.Minute), "qm# "); err != nil {
		t.Fatalf("waiting for the guest's prompt: %v", err)
	}
	return m
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// processGone reports whether no process pid exists any more (reaped, not a zombie).
func processGone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, os.ErrNotExist)
}

// contains fails the test unless s contains every part.
func contains(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Fatalf("%s: %q does not contain %q", what, s, p)
		}
	}
}
