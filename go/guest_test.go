package qemumachine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// agentFixture returns the kernel, the initramfs with qemu-ga packed after the fixture's, and
// the kernel command line that starts the agent (scripts/go-test.sh sets them from
// `build-fixture --agent-initrd DIR`).
func agentFixture(t testing.TB) (kernel, initrd, append string) {
	t.Helper()
	kernel, initrd, append = os.Getenv("QM_TEST_KERNEL"), os.Getenv("QM_TEST_AGENT_INITRD"), os.Getenv("QM_TEST_AGENT_APPEND")
	if kernel == "" || initrd == "" || append == "" {
		t.Fatal("the guest-agent fixture is not set: run scripts/go-test.sh, or set QM_TEST_KERNEL, " +
			"QM_TEST_AGENT_INITRD and QM_TEST_AGENT_APPEND to the kernel:, agent-initrd: and " +
			"agent-cmdline: lines printed by " +
			"`cargo run -p qemu-machine-tests --bin build-fixture -- --agent-initrd DIR`")
	}
	return kernel, initrd, append
}

// agentVMJSON is the configuration of the fixture with its agent: a VM description with
// "guest_agent": true, under TCG, that exits when the guest powers off or reboots.
func agentVMJSON(t testing.TB) string {
	kernel, initrd, append := agentFixture(t)
	b, err := json.Marshal(map[string]any{
		"accel": "tcg",
		"vm": map[string]any{
			"memory": "512M", "kernel": kernel, "initrd": initrd, "append": append,
			"no_reboot": true, "guest_agent": true,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sha256Hex is the hex SHA-256 of data, as sha256sum prints it.
func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// A machine without the agent's channel: every guest call says so, naming its C function.
func TestGuestAgentWithoutChannel(t *testing.T) {
	ctx := deadline(t, time.Minute)
	m := launch(t, noneConfig)
	host := filepath.Join(t.TempDir(), "f")
	must(t, os.WriteFile(host, []byte("x"), 0o600))
	calls := map[string]func() error{
		"qm_machine_guest_ping": func() error { return m.GuestPing(ctx) },
		"qm_machine_guest_info": func() error { _, err := m.GuestInfo(ctx); return err },
		"qm_machine_guest_osinfo": func() error {
			_, err := m.GuestOSInfo(ctx)
			return err
		},
		"qm_machine_guest_interfaces": func() error {
			_, err := m.GuestInterfaces(ctx)
			return err
		},
		"qm_machine_guest_execute": func() error {
			_, err := m.GuestExecute(ctx, "guest-get-host-name", nil)
			return err
		},
		"qm_machine_guest_exec": func() error {
			_, err := m.GuestExec(ctx, []string{"true"}, nil)
			return err
		},
		"qm_machine_guest_copy_in": func() error {
			_, err := m.GuestCopyIn(ctx, host, "/tmp/f")
			return err
		},
		"qm_machine_guest_copy_out": func() error {
			_, err := m.GuestCopyOut(ctx, "/tmp/f", host)
			return err
		},
		"qm_machine_guest_shutdown": func() error { return m.GuestShutdown(ctx, GuestPowerdown) },
	}
	for op, call := range calls {
		e := wantStatus(t, op+" without a guest agent channel", call(), StatusUnsupported)
		if e.Op != op {
			t.Errorf("%s: the error names %q", op, e.Op)
		}
		contains(t, op+"'s message", e.Message, "guest_agent")
	}
	// QEMU itself is untouched.
	if state, err := m.RunState(); err != nil || state != "running" {
		t.Fatalf("run state after the guest calls: %q, %v", state, err)
	}
	m.Close()
	wantClosed := func(err error) {
		t.Helper()
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("a guest call after Close: %v", err)
		}
	}
	wantClosed(m.GuestPing(ctx))
	_, err := m.GuestExec(ctx, []string{"true"}, nil)
	wantClosed(err)
}

// The guest agent end to end: the busybox fixture with the host's qemu-ga in its initramfs,
// booted once under TCG, then typed calls, raw commands, exec, copies both ways, a deadline,
// an agent that goes away, calls from several goroutines, and a power-down through the agent.
func TestGuestAgent(t *testing.T) {
	boot := deadline(t, 3*time.Minute)
	m := launch(t, agentVMJSON(t))
	if _, err := m.ConsoleWaitFor(boot, "QM-QGA-STARTED"); err != nil {
		out, _ := m.ConsoleRead(make([]byte, 64<<10))
		t.Fatalf("the guest did not start its agent: %v (console: %q)", err, out)
	}
	// The agent starts right after that line: a ping with a long deadline waits for it.
	if err := m.GuestPing(boot); err != nil {
		t.Fatalf("the agent does not answer: %v", err)
	}
	// Each call's bound (TCG on a loaded machine is slow); never a timing assertion.
	call := func(t *testing.T) context.Context { return deadline(t, time.Minute) }

	t.Run("ping and info", func(t *testing.T) {
		ctx := call(t)
		must(t, m.GuestPing(ctx))
		info, err := m.GuestInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(info.Version, "7.") || !info.Enabled("guest-exec") || info.Enabled("guest-no-such") {
			t.Fatalf("guest-info: %+v", info)
		}
		var shutdown *GuestCommandInfo
		for i := range info.SupportedCommands {
			if info.SupportedCommands[i].Name == "guest-shutdown" {
				shutdown = &info.SupportedCommands[i]
			}
		}
		if shutdown == nil || !shutdown.Enabled || shutdown.SuccessResponse {
			t.Fatalf("guest-shutdown in guest-info: %+v", shutdown)
		}
	})

	t.Run("osinfo and interfaces", func(t *testing.T) {
		ctx := call(t)
		osi, err := m.GuestOSInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		uname, err := m.GuestExec(ctx, []string{"uname", "-r"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if osi.Machine != "x86_64" || osi.KernelRelease == "" || osi.KernelRelease != strings.TrimSpace(string(uname.Stdout)) {
			t.Fatalf("guest-get-osinfo %+v; uname -r %q", osi, uname.Stdout)
		}
		ifaces, err := m.GuestInterfaces(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, i := range ifaces {
			for _, a := range i.IPAddresses {
				if i.Name == "lo" && a.Address == "127.0.0.1" && a.Type == "ipv4" && a.Prefix == 8 {
					found = true
				}
			}
		}
		if !found {
			t.Fatalf("no lo with 127.0.0.1/8 in %+v", ifaces)
		}
	})

	t.Run("execute raw", func(t *testing.T) {
		ctx := call(t)
		name, err := m.GuestExecute(ctx, "guest-get-host-name", nil)
		if err != nil || string(name) != `{"host-name":"qm-guest"}` {
			t.Fatalf("guest-get-host-name: %s, %v", name, err)
		}
		// Arguments from a map: open, write through the handle, close, read back.
		raw, err := m.GuestExecute(ctx, "guest-file-open", map[string]any{"path": "/tmp/raw", "mode": "w"})
		if err != nil {
			t.Fatal(err)
		}
		var handle int64
		if err := json.Unmarshal(raw, &handle); err != nil {
			t.Fatalf("guest-file-open's handle %s: %v", raw, err)
		}
		if _, err := m.GuestExecute(ctx, "guest-file-write", fmt.Sprintf(`{"handle": %d, "buf-b64": "cmF3Cg=="}`, handle)); err != nil {
			t.Fatal(err)
		}
		if _, err := m.GuestExecute(ctx, "guest-file-close", json.RawMessage(fmt.Sprintf(`{"handle": %d}`, handle))); err != nil {
			t.Fatal(err)
		}
		if res, err := m.GuestExec(ctx, []string{"cat", "/tmp/raw"}, nil); err != nil || string(res.Stdout) != "raw\n" {
			t.Fatalf("the file written through raw commands: %+v, %v", res, err)
		}

		_, err = m.GuestExecute(ctx, "guest-no-such", nil)
		e := wantStatus(t, "an unknown agent command", err, StatusQMPError)
		if e.QMPClass != "CommandNotFound" || e.QMPDesc == "" || e.Op != "qm_machine_guest_execute" {
			t.Fatalf("the agent's error: %+v", e)
		}
		_, err = m.GuestExecute(ctx, "guest-file-close", map[string]any{"handle": -42})
		e = wantStatus(t, "a command the agent refuses", err, StatusQMPError)
		if e.QMPClass == "" || e.QMPDesc == "" {
			t.Fatalf("the agent's error: %+v", e)
		}
		_, err = m.GuestExecute(ctx, "guest-ping", "[1]")
		wantStatus(t, "arguments that are not an object", err, StatusInvalidJSON)
		_, err = m.GuestExecute(ctx, "guest-shutdown", nil)
		wantStatus(t, "guest-shutdown through GuestExecute", err, StatusInvalidArgument)
		_, err = m.GuestExecute(ctx, "guest-sync-delimited", map[string]any{"id": 1})
		wantStatus(t, "the library's synchronization command", err, StatusInvalidArgument)
		_, err = m.GuestExecute(ctx, "guest\x00ping", nil)
		wantStatus(t, "a command holding a NUL byte", err, StatusInvalidArgument)
		must(t, m.GuestPing(ctx)) // the channel is still in step
	})

	t.Run("exec", func(t *testing.T) {
		ctx := call(t)
		res, err := m.GuestExec(ctx, []string{"/bin/sh", "-c", `cat; echo err >&2; printf 'a\000b\377'; exit 3`}, []byte("from the host\n"))
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Stdout) != "from the host\na\x00b\xff" || string(res.Stderr) != "err\n" ||
			res.ExitCode != 3 || res.Signal != 0 || res.Success() {
			t.Fatalf("exec: %+v (stdout %q, stderr %q)", res, res.Stdout, res.Stderr)
		}
		res, err = m.GuestExec(ctx, []string{"true"}, nil)
		if err != nil || !res.Success() || len(res.Stdout) != 0 || len(res.Stderr) != 0 {
			t.Fatalf("true: %+v, %v", res, err)
		}
		res, err = m.GuestExec(ctx, []string{"/bin/sh", "-c", "kill -9 $$"}, nil)
		if err != nil || res.ExitCode != -1 || res.Signal != syscall.SIGKILL || res.Success() {
			t.Fatalf("a program killed by SIGKILL: %+v, %v", res, err)
		}
		// Arguments reach the program as they are: spaces, quotes, UTF-8.
		args := []string{"printf", "%s|", "two words", `"quoted"`, "é ✓", ""}
		res, err = m.GuestExec(ctx, args, nil)
		if err != nil || string(res.Stdout) != `two words|"quoted"|é ✓||` {
			t.Fatalf("arguments: %q, %v", res.Stdout, err)
		}

		_, err = m.GuestExec(ctx, []string{"/no/such/program"}, nil)
		e := wantStatus(t, "a missing program", err, StatusQMPError)
		t.Logf("a missing program: %v (class %s)", e, e.QMPClass)
		if e.QMPClass == "" || e.QMPDesc == "" || e.Op != "qm_machine_guest_exec" {
			t.Fatalf("the agent's error for a missing program: %+v", e)
		}
		for what, argv := range map[string][]string{
			"no argv":             nil,
			"an empty program":    {"", "x"},
			"a NUL byte":          {"echo", "a\x00b"},
			"a string not UTF-8":  {"echo", "\xff"},
			"a program not UTF-8": {"/bin/\xfe"},
		} {
			_, err = m.GuestExec(ctx, argv, nil)
			wantStatus(t, what, err, StatusInvalidArgument)
		}
		must(t, m.GuestPing(ctx))
	})

	t.Run("copy round trip", func(t *testing.T) {
		ctx := call(t)
		dir := t.TempDir()
		// 3 MiB + 5 bytes of every byte value, not a multiple of the 256 KiB chunks.
		data := make([]byte, 3<<20+5)
		for i := range data {
			data[i] = byte((uint32(i) * 2654435761) >> 13)
		}
		src := filepath.Join(dir, "src")
		must(t, os.WriteFile(src, data, 0o600))
		n, err := m.GuestCopyIn(ctx, src, "/tmp/blob")
		if err != nil || n != int64(len(data)) {
			t.Fatalf("copy in: %d, %v", n, err)
		}
		sum, err := m.GuestExec(ctx, []string{"sha256sum", "/tmp/blob"}, nil)
		if err != nil || !strings.HasPrefix(string(sum.Stdout), sha256Hex(data)+" ") {
			t.Fatalf("the guest's sha256sum %q, %v; the host's %s", sum.Stdout, err, sha256Hex(data))
		}
		back := filepath.Join(dir, "back")
		n, err = m.GuestCopyOut(ctx, "/tmp/blob", back)
		if err != nil || n != int64(len(data)) {
			t.Fatalf("copy out: %d, %v", n, err)
		}
		got, err := os.ReadFile(back)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the file came back different: %d bytes, %v", len(got), err)
		}
		if st, err := os.Stat(back); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("the host file's mode: %v, %v", st.Mode(), err)
		}
		// An empty file both ways.
		empty := filepath.Join(dir, "empty")
		must(t, os.WriteFile(empty, nil, 0o600))
		if n, err := m.GuestCopyIn(ctx, empty, "/tmp/empty"); err != nil || n != 0 {
			t.Fatalf("copy in of an empty file: %d, %v", n, err)
		}
		if n, err := m.GuestCopyOut(ctx, "/tmp/empty", back); err != nil || n != 0 {
			t.Fatalf("copy out of an empty file: %d, %v", n, err)
		}
		if st, err := os.Stat(back); err != nil || st.Size() != 0 {
			t.Fatalf("copy out truncates the host file: %v, %v", st, err)
		}

		_, err = m.GuestCopyOut(ctx, "/tmp/no-such-file", back)
		e := wantStatus(t, "copy out of a missing guest file", err, StatusQMPError)
		if e.QMPDesc == "" || e.Op != "qm_machine_guest_copy_out" {
			t.Fatalf("the agent's error: %+v", e)
		}
		_, err = m.GuestCopyIn(ctx, filepath.Join(dir, "missing"), "/tmp/x")
		e = wantStatus(t, "copy in of a missing host file", err, StatusIO)
		contains(t, "its message", e.Message, filepath.Join(dir, "missing"))
		_, err = m.GuestCopyIn(ctx, src, "/tmp/a\x00b")
		wantStatus(t, "a guest path holding a NUL byte", err, StatusInvalidArgument)
		_, err = m.GuestCopyOut(ctx, "/tmp/blob", back+"\x00")
		wantStatus(t, "a host path holding a NUL byte", err, StatusInvalidArgument)
	})

	t.Run("deadline", func(t *testing.T) {
		// A context already done: its error, nothing sent.
		done, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := m.GuestExec(done, []string{"true"}, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("exec with a cancelled context: %v", err)
		}
		// The deadline ends the wait for a program that runs on; it runs on in the guest.
		short, cancelShort := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancelShort()
		_, err := m.GuestExec(short, []string{"sleep", "600"}, nil)
		wantStatus(t, "exec of sleep 600 past its deadline", err, StatusTimeout)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the timeout does not match context.DeadlineExceeded: %v", err)
		}
		// The next call synchronizes with the agent again and works.
		ctx := call(t)
		must(t, m.GuestPing(ctx))
		res, err := m.GuestExec(ctx, []string{"pidof", "sleep"}, nil)
		if err != nil || !res.Success() {
			t.Fatalf("the sleep still runs in the guest: %+v, %v", res, err)
		}
		if _, err := m.GuestExec(ctx, []string{"killall", "sleep"}, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("agent gone", func(t *testing.T) {
		// The program kills the agent that waits for it: the call fails as soon as the agent's
		// port closes; the guest's loop starts a new agent, and the next call resynchronizes.
		ctx := call(t)
		_, err := m.GuestExec(ctx, []string{"/bin/sh", "-c", "sleep 1; killall -9 qemu-ga; sleep 20"}, nil)
		e := wantStatus(t, "exec whose agent is killed", err, StatusDisconnected)
		t.Logf("the agent killed under a call: %v", e)
		must(t, m.GuestPing(call(t)))
		res, err := m.GuestExec(call(t), []string{"echo", "again"}, nil)
		if err != nil || string(res.Stdout) != "again\n" {
			t.Fatalf("exec after the agent restarted: %+v, %v", res, err)
		}
	})

	t.Run("goroutines", func(t *testing.T) {
		// Agent calls and QMP commands from several goroutines: the machine serializes them.
		ctx := call(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 4; i++ {
			wg.Add(2)
			go func(i int) {
				defer wg.Done()
				res, err := m.GuestExec(ctx, []string{"echo", fmt.Sprint(i)}, nil)
				if err == nil && string(res.Stdout) != fmt.Sprintf("%d\n", i) {
					err = fmt.Errorf("goroutine %d got %q", i, res.Stdout)
				}
				errs <- err
			}(i)
			go func() {
				defer wg.Done()
				_, err := m.Execute(ctx, "query-status", nil)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			must(t, err)
		}
	})

	t.Run("shutdown", func(t *testing.T) {
		ctx := call(t)
		wantStatus(t, "an unknown shutdown mode", m.GuestShutdown(ctx, "sideways"), StatusInvalidArgument)
		must(t, m.GuestShutdown(ctx, GuestPowerdown))
		if _, err := m.EventWait(ctx, "SHUTDOWN", map[string]any{"data": map[string]any{"guest": true}}); err != nil {
			t.Fatalf("no SHUTDOWN from the guest: %v", err)
		}
		must(t, m.Wait(ctx))
		if code, sig, err := m.ExitStatus(); err != nil || code != 0 || sig != 0 {
			t.Fatalf("QEMU's exit after the power-down: %d, %v, %v", code, sig, err)
		}
		wantStatus(t, "a guest call after QEMU exited", m.GuestPing(ctx), StatusProcessExited)
	})
}

// The typed answers keep the members this package does not name.
func TestGuestAnswersKeepUnknownMembers(t *testing.T) {
	var info GuestAgentInfo
	must(t, json.Unmarshal([]byte(`{"version": "9.0", "supported_commands": [{"name": "guest-x", "enabled": true,`+
		` "success-response": true, "since": "9.0"}], "build": {"id": 7}}`), &info))
	if info.Version != "9.0" || !info.Enabled("guest-x") || string(info.Extra["build"]) != `{"id": 7}` ||
		len(info.Extra) != 1 || string(info.SupportedCommands[0].Extra["since"]) != `"9.0"` {
		t.Fatalf("%+v", info)
	}
	var ifaces []GuestInterface
	must(t, json.Unmarshal([]byte(`[{"name": "eth0", "ip-addresses": [{"ip-address": "10.0.2.15",`+
		` "ip-address-type": "ipv4", "prefix": 24, "scope": "global"}], "statistics": {"rx-bytes": 5, "rx-new": 1},`+
		` "mtu": 1500}]`), &ifaces))
	i := ifaces[0]
	if i.Name != "eth0" || i.IPAddresses[0].Prefix != 24 || string(i.IPAddresses[0].Extra["scope"]) != `"global"` ||
		i.Statistics.RxBytes != 5 || string(i.Statistics.Extra["rx-new"]) != "1" || string(i.Extra["mtu"]) != "1500" ||
		i.HardwareAddress != "" || len(i.Extra) != 1 {
		t.Fatalf("%+v", i)
	}
	var osi GuestOSInfo
	must(t, json.Unmarshal([]byte(`{"id": "debian", "version-id": "12", "tz": "UTC"}`), &osi))
	if osi.ID != "debian" || osi.VersionID != "12" || string(osi.Extra["tz"]) != `"UTC"` || len(osi.Extra) != 1 {
		t.Fatalf("%+v", osi)
	}
	// Nothing unknown: no map.
	var plain GuestOSInfo
	must(t, json.Unmarshal([]byte(`{"machine": "x86_64"}`), &plain))
	if plain.Extra != nil {
		t.Fatalf("%+v", plain)
	}
	if err := json.Unmarshal([]byte(`{"version": 7}`), &info); err == nil {
		t.Fatal("a version that is a number was accepted")
	}
}
