package qemumachine

import (
	"context"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Descriptors go to QEMU at launch (an fdset) and later (getfd over the QMP socket); the
// library keeps duplicates, so the caller closes its own at once.
func TestFDPassing(t *testing.T) {
	ctx := deadline(t, time.Minute)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cfg, err := ConfigFromJSON(noneConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	must(t, cfg.AddFD(r, 3, "qm-opaque"))
	r.Close() // the library has its own duplicate
	wantStatus(t, "a closed *os.File", cfg.AddFD(r, 4, ""), StatusInvalidArgument)
	wantStatus(t, "a nil conn", cfg.AddFD(nil, 4, ""), StatusNullArgument)
	wantStatus(t, "opaque text with a NUL", cfg.AddFD(w, 4, "a\x00b"), StatusInvalidArgument)
	wantStatus(t, "opaque text that is not UTF-8", cfg.AddFD(w, 4, "\xff"), StatusInvalidArgument)
	m, err := Launch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	fdsets, err := m.Execute(ctx, "query-fdsets", nil)
	if err != nil {
		t.Fatal(err)
	}
	contains(t, "query-fdsets", string(fdsets), `"fdset-id":3`, "qm-opaque")

	// A socket, through syscall.Conn: one end of a socketpair as a *net.UnixConn.
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours := os.NewFile(uintptr(pair[0]), "ours")
	defer ours.Close()
	theirsFile := os.NewFile(uintptr(pair[1]), "theirs")
	theirs, err := net.FileConn(theirsFile)
	theirsFile.Close()
	if err != nil {
		t.Fatal(err)
	}
	must(t, m.SendFD(theirs.(*net.UnixConn), "qmsock"))
	theirs.Close()
	// QEMU uses it: a chardev on the descriptor, whose output we read on our end.
	_, err = m.Execute(ctx, "chardev-add", map[string]any{
		"id": "viafd",
		"backend": map[string]any{"type": "socket", "data": map[string]any{
			"addr":   map[string]any{"type": "fd", "data": map[string]any{"str": "qmsock"}},
			"server": false,
		}},
	})
	if err != nil {
		t.Fatalf("chardev-add on the passed socket: %v", err)
	}
	_, err = m.Execute(ctx, "human-monitor-command", map[string]any{"command-line": "chardev-send-break viafd"})
	if err != nil {
		t.Fatal(err)
	}
	must(t, second(m.Execute(ctx, "chardev-remove", map[string]any{"id": "viafd"})))
	// Our end sees QEMU close its end.
	ours.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := ours.Read(make([]byte, 16)); n != 0 || err == nil {
		t.Fatalf("after chardev-remove our end reads %d, %v", n, err)
	}

	// A pipe's write end: QEMU has it under its name (closefd), once.
	must(t, m.SendFD(w, "qmfd"))
	w.Close()
	if _, err := m.Execute(ctx, "closefd", map[string]any{"fdname": "qmfd"}); err != nil {
		t.Fatalf("closefd: %v", err)
	}
	_, err = m.Execute(ctx, "closefd", map[string]any{"fdname": "qmfd"})
	wantStatus(t, "closefd again", err, StatusQMPError)
	wantStatus(t, "SendFD of a closed file", m.SendFD(w, "again"), StatusInvalidArgument)
	stdin := os.NewFile(0, "stdin")
	wantStatus(t, "a name that is not UTF-8", m.SendFD(stdin, "\xff"), StatusInvalidArgument)
	if _, err := m.Execute(context.Background(), "query-status", nil); err != nil {
		t.Fatal(err)
	}
}

// Launching and closing machines leaves no descriptor behind in this process, and no process.
func TestNoLeaks(t *testing.T) {
	countFDs := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	warm := launch(t, `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg", "console": true}`)
	warm.Close()
	before := countFDs()
	var pids []int
	for i := 0; i < 4; i++ {
		m, err := LaunchJSON(deadline(t, time.Minute), `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg", "console": true}`)
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := m.Pid()
		pids = append(pids, pid)
		if _, err := m.Console().ReadContext(deadline(t, 50*time.Millisecond), make([]byte, 8)); err != context.DeadlineExceeded {
			t.Fatalf("a console that shows nothing: %v", err)
		}
		if i%2 == 0 {
			must(t, m.Shutdown(deadline(t, 30*time.Second)))
		}
		m.Close()
	}
	if after := countFDs(); after != before {
		t.Fatalf("%d descriptors before, %d after", before, after)
	}
	for _, pid := range pids {
		if !processGone(pid) {
			t.Fatalf("QEMU %d is still there (%s)", pid, strings.TrimSpace(procStat(pid)))
		}
	}
}

func procStat(pid int) string {
	b, _ := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	return string(b)
}
