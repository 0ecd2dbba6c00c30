package qemumachine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The guest fixture's shell through the console: the io.Writer and io.Reader, ConsoleWaitFor,
// ConsoleRead with a small buffer, the external-loop primitives, a console log, the power
// button, and the reader's io.EOF once QEMU has exited.
func TestConsoleWithTheGuest(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "console.log")
	m := bootFixture(t, func(c *Config) { must(t, c.SetConsoleLog(logPath)) })
	ctx := deadline(t, 2*time.Minute)
	con := m.Console()

	// io.Writer, then io.Reader through bufio.
	if n, err := io.WriteString(con, "echo answer=$((6*7))\n"); err != nil || n != 21 {
		t.Fatalf("write: %d, %v", n, err)
	}
	r := bufio.NewReader(con)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if strings.Contains(line, "answer=42") {
			break
		}
	}
	// Whatever bufio read beyond the line is in r; the prompt follows.
	if rest, err := readUntil(ctx, r, "qm# "); err != nil {
		t.Fatalf("the prompt after the answer: %q, %v", rest, err)
	}

	// ConsoleWrite and ConsoleWaitFor; output after the match stays readable.
	if n, err := m.ConsoleWrite(ctx, []byte("echo one; echo two\n")); err != nil || n != 19 {
		t.Fatalf("ConsoleWrite: %d, %v", n, err)
	}
	before, err := m.ConsoleWaitFor(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(before, []byte("two")) {
		t.Fatalf("before the match: %q", before)
	}
	if _, err := m.ConsoleWaitFor(ctx, "two\r\nqm# "); err != nil {
		t.Fatal(err)
	}

	// Bytes that are not UTF-8 come through as they are.
	must(t, second(m.ConsoleWrite(ctx, []byte("printf 'bin:\\377\\001:end\\n'\n"))))
	before, err = m.ConsoleWaitFor(ctx, ":end")
	if err != nil || !bytes.HasSuffix(before, []byte("bin:\xff\x01")) {
		t.Fatalf("binary output: %q, %v", before, err)
	}
	if _, err := m.ConsoleWaitFor(ctx, "qm# "); err != nil {
		t.Fatal(err)
	}

	// ConsoleRead, 3 bytes at a time, loses nothing.
	must(t, second(m.ConsoleWrite(ctx, []byte("echo abcdefghijklmnopqrstuvwxyz\n"))))
	var text []byte
	buf := make([]byte, 3)
	for !bytes.Contains(text, []byte("xyz\r\nqm# ")) {
		if ctx.Err() != nil {
			t.Fatalf("read so far: %q", text)
		}
		n, err := m.ConsoleRead(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		text = append(text, buf[:n]...)
	}
	contains(t, "3 bytes at a time", string(text), "abcdefghijklmnopqrstuvwxyz\r\n")

	// An event loop of one's own: poll the descriptor, ProcessIO, then the I/O-free takers.
	fd, err := m.PollFD()
	if err != nil || fd < 0 {
		t.Fatalf("PollFD %d, %v", fd, err)
	}
	must(t, second(m.ConsoleWrite(ctx, []byte("echo polled-$((1+1))\n"))))
	text = nil
	for !bytes.Contains(text, []byte("polled-2\r\nqm# ")) {
		if ctx.Err() != nil {
			t.Fatalf("polled so far: %q", text)
		}
		var set syscall.FdSet
		set.Bits[fd/64] |= 1 << (uint(fd) % 64)
		tv := syscall.Timeval{Usec: 100000}
		if _, err := syscall.Select(fd+1, &set, nil, nil, &tv); err != nil && err != syscall.EINTR {
			t.Fatal(err)
		}
		must(t, m.ProcessIO())
		n, err := m.ConsoleTake(buf)
		if err != nil {
			t.Fatal(err)
		}
		text = append(text, buf[:n]...)
		if _, err := m.TakeEvents(); err != nil {
			t.Fatal(err)
		}
	}
	// What a partial read left is taken before waiting for text again (the library's rule).
	for {
		n, err := m.ConsoleTake(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if n, err := m.ConsoleBytesDropped(); err != nil || n != 0 {
		t.Fatalf("dropped %d, %v", n, err)
	}

	// The power button: the guest prints its line and powers off; the reader then ends with
	// io.EOF after the last bytes.
	must(t, m.Powerdown(ctx))
	rest, err := io.ReadAll(con)
	if err != nil {
		t.Fatalf("reading to the end: %v", err)
	}
	contains(t, "the last output", string(rest), "QM-GUEST-POWER-BUTTON")
	must(t, m.Wait(ctx))
	if code, _, err := m.ExitStatus(); err != nil || code != 0 {
		t.Fatalf("exit status %d, %v", code, err)
	}
	if n, err := con.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read after the end: %d, %v", n, err)
	}
	if _, err := m.ConsoleWrite(ctx, []byte("x")); !errors.Is(err, StatusProcessExited) && !errors.Is(err, StatusDisconnected) {
		t.Fatalf("write after exit: %v", err)
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	contains(t, "the console log", string(log), "QM-GUEST-READY", "answer=42", "polled-2", "QM-GUEST-POWER-BUTTON")
}

// readUntil reads from r until the text read holds want.
func readUntil(ctx context.Context, r *bufio.Reader, want string) (string, error) {
	var got []byte
	for !bytes.Contains(got, []byte(want)) {
		if ctx.Err() != nil {
			return string(got), ctx.Err()
		}
		b, err := r.ReadByte()
		if err != nil {
			return string(got), err
		}
		got = append(got, b)
	}
	return string(got), nil
}

// A guest that does not read its console (a paused machine) makes writes wait; at the deadline
// they say how much was accepted.
func TestConsoleWriteDeadline(t *testing.T) {
	m := launch(t, `{"args": ["-machine", "q35", "-nodefaults", "-S"], "accel": "tcg", "console": true}`)
	data := bytes.Repeat([]byte("x"), 4<<20)
	n, err := m.ConsoleWrite(deadline(t, 300*time.Millisecond), data)
	wantStatus(t, "writing 4 MiB to a paused guest", err, StatusTimeout)
	if n <= 0 || n >= len(data) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("accepted %d of %d, %v", n, len(data), err)
	}
	n2, err := m.Console().WriteContext(deadline(t, 100*time.Millisecond), data[n:])
	if n2 >= len(data)-n || !errors.Is(err, StatusTimeout) {
		t.Fatalf("with the bound full: accepted %d, %v", n2, err)
	}
	// A cancelled write returns its context's error, with what it accepted.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := m.Console().WriteContext(ctx, data)
		done <- err
	}()
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("cancelled write: %v", err)
	}
	if n, err := m.ConsoleWrite(deadline(t, time.Second), nil); n != 0 || err != nil {
		t.Fatalf("an empty write: %d, %v", n, err)
	}
	// A blocked Write without a deadline ends when the machine is closed.
	go func() {
		_, err := m.Console().Write(data)
		done <- err
	}()
	m.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("write blocked at Close: %v", err)
	}
}

// A reader blocked on a console that shows nothing ends with its context, or at Close.
func TestConsoleReaderEnds(t *testing.T) {
	m := launch(t, `{"args": ["-machine", "q35", "-nodefaults", "-S"], "accel": "tcg", "console": true}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := m.Console().ReadContext(ctx, make([]byte, 16))
		done <- err
	}()
	// Other calls go on while the reader waits.
	if state, err := m.RunState(); err != nil || state != "prelaunch" {
		t.Fatalf("run state while a reader waits: %q, %v", state, err)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("cancelled read: %v", err)
	}
	go func() {
		_, err := m.Console().Read(make([]byte, 16))
		done <- err
	}()
	m.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("read blocked at Close: %v", err)
	}
	// Without a console.
	plain := launch(t, noneConfig)
	_, err := plain.Console().Read(make([]byte, 1))
	wantStatus(t, "reading a machine without a console", err, StatusUnsupported)
	_, err = plain.ConsoleWaitFor(deadline(t, time.Second), "x")
	wantStatus(t, "waiting on a machine without a console", err, StatusUnsupported)
	_, err = plain.ConsoleWaitFor(deadline(t, time.Second), "")
	wantStatus(t, "an empty pattern", err, StatusInvalidArgument)
}
