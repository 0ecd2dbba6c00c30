package qemumachine

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Attaching to a QEMU over its QMP servers (unix and TCP), the QMP servers a config adds, and
// what an attached machine cannot do.
func TestAttach(t *testing.T) {
	ctx := deadline(t, time.Minute)
	dir := t.TempDir()
	sock := filepath.Join(dir, "m.qmp")
	cfg, err := ConfigFromJSON(noneConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	must(t, cfg.AddQMPListen("tcp:0"))
	must(t, cfg.AddQMPListen("unix:"+sock))
	wantStatus(t, "an address that is neither unix: nor tcp:", cfg.AddQMPListen("udp:1"), StatusInvalidArgument)
	owner, err := Launch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	addrs, err := owner.QMPListenAddresses()
	if err != nil || len(addrs) != 2 || !strings.HasPrefix(addrs[0], "tcp:127.0.0.1:") || addrs[1] != "unix:"+sock {
		t.Fatalf("QMP listen addresses %q, %v", addrs, err)
	}

	byUnix, err := AttachUnix(ctx, sock)
	if err != nil {
		t.Fatalf("AttachUnix: %v", err)
	}
	defer byUnix.Close()
	if state, err := byUnix.RunState(); err != nil || state != "running" {
		t.Fatalf("attached run state %q, %v", state, err)
	}
	if pid, err := byUnix.Pid(); err != nil || pid != 0 {
		t.Fatalf("attached pid %d, %v", pid, err)
	}
	wantStatus(t, "shutdown of an attached machine", byUnix.Shutdown(ctx), StatusUnsupported)
	wantStatus(t, "kill of an attached machine", byUnix.Kill(), StatusUnsupported)
	wantStatus(t, "wait of an attached machine", byUnix.Wait(ctx), StatusUnsupported)
	_, _, err = byUnix.ExitStatus()
	wantStatus(t, "exit status of an attached machine", err, StatusInvalidState)
	_, err = byUnix.Log()
	wantStatus(t, "log of an attached machine", err, StatusUnsupported)
	byUnix.Close() // only disconnects
	if running, err := owner.IsRunning(); err != nil || !running {
		t.Fatalf("the owner after the attached machine was closed: %v, %v", running, err)
	}

	_, err = AttachTCP(ctx, "not an address")
	wantStatus(t, "AttachTCP to something that is not IP:PORT", err, StatusInvalidArgument)
	_, err = AttachUnix(deadline(t, 200*time.Millisecond), filepath.Join(dir, "missing.qmp"))
	wantStatus(t, "AttachUnix to a missing socket", err, StatusTimeout)
	byTCP, err := AttachTCP(ctx, strings.TrimPrefix(addrs[0], "tcp:"))
	if err != nil {
		t.Fatalf("AttachTCP: %v", err)
	}
	defer byTCP.Close()
	// Another client stops the VM: the owner sees the event.
	if _, err := byTCP.Execute(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.EventWait(ctx, "STOP", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := byTCP.Execute(ctx, "quit", nil); err != nil {
		t.Fatal(err)
	}
	_, err = byTCP.EventWait(ctx, "NEVER_SENT", nil)
	if !errors.Is(err, StatusDisconnected) && !errors.Is(err, StatusProcessExited) {
		t.Fatalf("an event wait on a connection QEMU closed: %v", err)
	}
	must(t, owner.Wait(ctx))
	if code, _, err := owner.ExitStatus(); err != nil || code != 0 {
		t.Fatalf("exit status %d, %v", code, err)
	}
}

// The QEMUMachine features: no QMP, a launch settle time, -monitor null, a pty console, a
// name and a log dir, raw requests, wait-or-kill.
func TestQEMUMachineFeatures(t *testing.T) {
	ctx := deadline(t, time.Minute)
	cfg, err := ConfigFromJSON(noneConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	must(t, cfg.SetQMP(false))
	must(t, cfg.SetLaunchSettle(200*time.Millisecond))
	m, err := Launch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if running, err := m.IsRunning(); err != nil || !running {
		t.Fatalf("without QMP: running %v, %v", running, err)
	}
	_, err = m.Execute(ctx, "query-status", nil)
	wantStatus(t, "QMP without QMP", err, StatusUnsupported)
	must(t, m.Shutdown(ctx)) // SIGTERM
	if code, _, err := m.ExitStatus(); err != nil || code != 0 {
		t.Fatalf("exit status after SIGTERM: %d, %v", code, err)
	}

	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	cfg2, err := ConfigFromJSON(`{"args": ["-machine", "none"], "accel": "tcg"}`)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg2.Close()
	must(t, cfg2.SetMonitorNull(true))
	must(t, cfg2.SetConsolePTY(true))
	must(t, cfg2.SetName("go-vm"))
	must(t, cfg2.SetLogDir(logs))
	m2, err := Launch(ctx, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	chardevs, err := m2.Execute(ctx, "query-chardev", nil)
	if err != nil {
		t.Fatal(err)
	}
	contains(t, "query-chardev", string(chardevs), `"filename":"null","label":"compat_monitor0"`)
	if pty, err := m2.ConsolePTY(); err != nil || !strings.HasPrefix(pty, "/dev/pts/") {
		t.Fatalf("console pty %q, %v", pty, err)
	}
	_, err = m2.ConsoleRead(make([]byte, 1))
	wantStatus(t, "the library's console on a pty console", err, StatusUnsupported)
	if name, err := m2.Name(); err != nil || name != "go-vm" {
		t.Fatalf("name %q, %v", name, err)
	}
	if p, err := m2.LogPath(); err != nil || p != filepath.Join(logs, "go-vm.log") {
		t.Fatalf("log path %q, %v", p, err)
	}
	reply, err := m2.ExecuteRaw(ctx, `{"execute": "query-status", "id": "mine"}`)
	if err != nil || !bytes.HasPrefix(reply, []byte(`{"return":{`)) || !bytes.Contains(reply, []byte(`"id":"mine"`)) {
		t.Fatalf("raw reply %s, %v", reply, err)
	}
	reply, err = m2.ExecuteRaw(ctx, map[string]any{"execute": "cont", "bogus": 1})
	if err != nil || !bytes.HasPrefix(reply, []byte(`{"error":{"class":"GenericError"`)) {
		t.Fatalf("raw error reply %s, %v", reply, err)
	}
	_, err = m2.ExecuteRaw(ctx, "[1]")
	wantStatus(t, "a raw request that is not an object", err, StatusInvalidJSON)
	_, err = m2.ExecuteRaw(ctx, nil)
	wantStatus(t, "no raw request", err, StatusNullArgument)
	err = m2.WaitOrKill(deadline(t, 300*time.Millisecond))
	wantStatus(t, "wait-or-kill of a QEMU that does not exit", err, StatusNotGraceful)
	if running, _ := m2.IsRunning(); running {
		t.Fatal("still running after wait-or-kill")
	}
	m2.Close()
	log, err := os.ReadFile(filepath.Join(logs, "go-vm.log"))
	if err != nil {
		t.Fatal(err)
	}
	contains(t, "QEMU's log, kept after Close", string(log), "char device redirected to /dev/pts/")

	m3 := launch(t, noneConfig)
	if _, err := m3.Execute(ctx, "quit", nil); err != nil {
		t.Fatal(err)
	}
	must(t, m3.WaitOrKill(ctx))
}

// Out-of-band commands, and a machine that did not negotiate them.
func TestExecuteOOB(t *testing.T) {
	ctx := deadline(t, time.Minute)
	m := launch(t, noneConfig)
	_, err := m.ExecuteOOB(ctx, "query-status", nil)
	e := wantStatus(t, "a command QEMU does not allow out-of-band", err, StatusQMPError)
	contains(t, "QEMU's answer", e.QMPDesc, "OOB")
	_, err = m.ExecuteOOB(ctx, "migrate-pause", nil)
	wantStatus(t, "migrate-pause without a migration", err, StatusQMPError)

	noOOB := launch(t, `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg", "oob": false}`)
	_, err = noOOB.ExecuteOOB(ctx, "migrate-pause", nil)
	wantStatus(t, "out-of-band without oob", err, StatusInvalidState)
}

// A VM description: port forwards, the VNC socket, screenshots.
func TestVMDescription(t *testing.T) {
	m := launch(t, `{"accel": "tcg", "vm": {"memory": "128M", "vnc": true,`+
		` "forwards": [{"name": "web", "host_port": 0, "guest_port": 80}]}}`)
	addr, err := m.ForwardedPort("web")
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("forward address %q, %v", addr, err)
	}
	_, err = m.ForwardedPort("ssh")
	wantStatus(t, "an unknown forward", err, StatusInvalidArgument)
	vnc, err := m.VNCSocket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vnc); err != nil {
		t.Fatalf("the VNC socket: %v", err)
	}
	dir := t.TempDir()
	shot, err := m.Screendump(filepath.Join(dir, "screen.ppm"), "ppm")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(b, []byte("P6")) {
		t.Fatalf("the screenshot %s: %v", shot, err)
	}
	_, err = m.Screendump(filepath.Join(dir, "screen.gif"), "gif")
	wantStatus(t, "an unknown screenshot format", err, StatusInvalidArgument)
	best, err := m.Screendump(filepath.Join(dir, "best.png"), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(best)
	if err != nil || !(bytes.HasPrefix(b, []byte("\x89PNG")) && best == filepath.Join(dir, "best.png") ||
		bytes.HasPrefix(b, []byte("P6")) && strings.HasSuffix(best, ".ppm")) {
		t.Fatalf("the best screenshot %s: %.8q, %v", best, b, err)
	}
	must(t, m.Shutdown(deadline(t, time.Minute)))

	plain := launch(t, `{"accel": "tcg", "vm": {"memory": "64M"}}`)
	_, err = plain.VNCSocket()
	wantStatus(t, "the VNC socket without VNC", err, StatusUnsupported)
}

// Disk images through qemu-img.
func TestImages(t *testing.T) {
	dir := t.TempDir()
	qcow := filepath.Join(dir, "disk, one.qcow2")
	raw := filepath.Join(dir, "disk.raw")
	must(t, ImageCreate(qcow, "qcow2", 64<<20))
	info := func(path string) (format string, size int64) {
		t.Helper()
		text, err := ImageInfo(path)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Format      string `json:"format"`
			VirtualSize int64  `json:"virtual-size"`
		}
		if err := json.Unmarshal(text, &v); err != nil {
			t.Fatal(err)
		}
		return v.Format, v.VirtualSize
	}
	if f, s := info(qcow); f != "qcow2" || s != 64<<20 {
		t.Fatalf("info: %s, %d", f, s)
	}
	must(t, ImageResize(qcow, 128<<20, false))
	err := ImageResize(qcow, 32<<20, false)
	e := wantStatus(t, "shrinking without allowShrink", err, StatusInvalidArgument)
	contains(t, "the message", e.Message, "shrink")
	must(t, ImageResize(qcow, 96<<20, true))
	if _, s := info(qcow); s != 96<<20 {
		t.Fatalf("after shrinking: %d", s)
	}
	var fractions []float64
	must(t, ImageConvert(qcow, raw, "raw", func(f float64) { fractions = append(fractions, f) }))
	if len(fractions) == 0 || fractions[len(fractions)-1] != 1.0 {
		t.Fatalf("progress %v", fractions)
	}
	for i := 1; i < len(fractions); i++ {
		if fractions[i] < fractions[i-1] {
			t.Fatalf("progress went back: %v", fractions)
		}
	}
	if f, s := info(raw); f != "raw" || s != 96<<20 {
		t.Fatalf("the raw copy: %s, %d", f, s)
	}
	must(t, ImageConvert(qcow, raw, "raw", nil))

	// A panic in the progress callback does not cross the library: it comes back afterwards.
	func() {
		defer func() {
			if r := recover(); r != "stop here" {
				t.Fatalf("recovered %v", r)
			}
		}()
		ImageConvert(qcow, filepath.Join(dir, "again.raw"), "raw", func(float64) { panic("stop here") })
		t.Fatal("no panic")
	}()

	missing := filepath.Join(dir, "missing.qcow2")
	_, err = ImageInfo(missing)
	e = wantStatus(t, "info of a missing file", err, StatusInvalidArgument)
	contains(t, "the message", e.Message, "missing.qcow2")
	wantStatus(t, "an invalid format name", ImageCreate(missing, "no format!", 1<<20), StatusInvalidArgument)
	odd := filepath.Join(dir, "\xff\xfe.qcow2")
	must(t, ImageCreate(odd, "qcow2", 1<<20))
	if f, _ := info(odd); f != "qcow2" {
		t.Fatalf("a path that is not UTF-8: %s", f)
	}
	broken := filepath.Join(dir, "broken.qcow2")
	must(t, os.WriteFile(broken, []byte("QFI\xfb\x00\x00\x00\x07garbage"), 0o600))
	_, err = ImageInfo(broken)
	e = wantStatus(t, "info of a broken image", err, StatusImage)
	contains(t, "the message", e.Message, "qemu-img", "broken.qcow2")
	must(t, os.WriteFile(raw, []byte("keep me"), 0o600))
	if err := ImageConvert(broken, raw, "raw", nil); err == nil {
		t.Fatal("converting a broken image")
	}
	if b, _ := os.ReadFile(raw); string(b) != "keep me" {
		t.Fatalf("a failed conversion replaced dst: %q", b)
	}
}

// The qtest protocol (QEMUQtestMachine), as the C test drives it.
func TestQtest(t *testing.T) {
	ctx := deadline(t, 2*time.Minute)
	cfg, err := ConfigFromJSON(`{"args": ["-machine", "q35", "-nodefaults"]}`)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	must(t, cfg.SetQtest(true))
	must(t, cfg.SetConsoleDevice("isa-serial", 1))
	m, err := Launch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	must(t, m.QtestOut(ctx, 4, 0xcf8, 0x80000000))
	if v, err := m.QtestIn(ctx, 4, 0xcfc); err != nil || v != 0x29c08086 {
		t.Fatalf("the q35 host bridge's ids: %#x, %v", v, err)
	}
	if reply, err := m.Qtest(ctx, "inw 0xcfe"); err != nil || reply != "0x29c0" {
		t.Fatalf("qtest inw: %q, %v", reply, err)
	}
	_, err = m.QtestIn(ctx, 3, 0xcfc)
	wantStatus(t, "a port width of 3", err, StatusInvalidArgument)
	wantStatus(t, "a value wider than the port", m.QtestOut(ctx, 1, 0x80, 0x100), StatusInvalidArgument)

	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	back := make([]byte, len(data))
	must(t, m.QtestWrite(ctx, 0x100000, data))
	must(t, m.QtestRead(ctx, 0x100000, back))
	if !bytes.Equal(data, back) {
		t.Fatal("guest RAM read back differs")
	}
	must(t, m.QtestWriteN(ctx, 8, 0x200000, 0x1122334455667788))
	if v, err := m.QtestReadN(ctx, 8, 0x200000); err != nil || v != 0x1122334455667788 {
		t.Fatalf("readq %#x, %v", v, err)
	}
	if v, err := m.QtestReadN(ctx, 1, 0x200000); err != nil || v != 0x88 {
		t.Fatalf("readb %#x, %v", v, err)
	}
	wantStatus(t, "a value wider than 2 bytes", m.QtestWriteN(ctx, 2, 0x200000, 0x10000), StatusInvalidArgument)
	must(t, m.QtestMemset(ctx, 0x100000, 4, '*'))
	must(t, m.QtestRead(ctx, 0x100000, back[:5]))
	if string(back[:4]) != "****" || back[4] != data[4] {
		t.Fatalf("after memset: %q", back[:5])
	}
	must(t, m.QtestRead(ctx, 0x100000, nil))
	must(t, m.QtestWrite(ctx, 0x100000, nil))

	// The virtual clock needs the qtest accelerator, which Debian's QEMU 7.2 does not have.
	if clock, err := m.QtestClockStep(ctx, 1000); err == nil {
		if clock < 1000 {
			t.Fatalf("clock after a step of 1000: %d", clock)
		}
		if clock2, err := m.QtestClockSet(ctx, clock+5); err != nil || clock2 != clock+5 {
			t.Fatalf("clock set: %d, %v", clock2, err)
		}
	} else {
		e := wantStatus(t, "clock step without the qtest accelerator", err, StatusUnsupported)
		contains(t, "the message", e.Message, "needs the qtest accelerator")
		_, err = m.QtestClockSet(ctx, 5)
		wantStatus(t, "clock set without the qtest accelerator", err, StatusUnsupported)
	}
	_, err = m.QtestClockStep(ctx, -2)
	wantStatus(t, "a negative clock step other than -1", err, StatusInvalidArgument)

	_, err = m.Qtest(ctx, "foo bar")
	e := wantStatus(t, "a failing line", err, StatusQtestError)
	contains(t, "the message", e.Message, `"foo bar"`, "FAIL Unknown command 'foo'")
	_, err = m.Qtest(ctx, "inb")
	wantStatus(t, "a line QEMU would abort on", err, StatusInvalidArgument)

	must(t, m.QtestIRQIntercept(ctx, "ioapic", false))
	err = m.QtestIRQIntercept(ctx, "/machine/nowhere", true)
	wantStatus(t, "intercepting a second device", err, StatusQtestError)
	must(t, m.QtestSetIRQIn(ctx, "ioapic", "", 5, 1))
	irqs, err := m.QtestIRQs(ctx)
	if err != nil || len(irqs) != 1 || irqs[0] != (IRQ{Num: 5, Raised: true}) {
		t.Fatalf("IRQs %+v, %v", irqs, err)
	}
	_, err = m.QtestIRQs(deadline(t, 100*time.Millisecond))
	wantStatus(t, "no IRQ left", err, StatusTimeout)

	// The console is the second ISA serial port: bytes written to COM2 come out of it.
	for _, c := range []byte("hello from COM2\n") {
		must(t, m.QtestOut(ctx, 1, 0x2f8, uint32(c)))
	}
	if before, err := m.ConsoleWaitFor(ctx, "\n"); err != nil || string(before) != "hello from COM2" {
		t.Fatalf("COM2: %q, %v", before, err)
	}
	must(t, m.Shutdown(ctx))
	_, err = m.Qtest(ctx, "inb 0x80")
	wantStatus(t, "qtest after exit", err, StatusProcessExited)

	plain := launch(t, noneConfig)
	_, err = plain.Qtest(ctx, "inb 0x80")
	wantStatus(t, "qtest without the channel", err, StatusUnsupported)
}
