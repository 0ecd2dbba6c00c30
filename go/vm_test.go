package qemumachine

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// testImage is a raw image of size bytes that is not all one byte (so that a copy is checked
// byte for byte), with marker at offset 4096.
func testImage(size int, seed int64, marker string) []byte {
	data := make([]byte, size)
	random := 64 << 10
	if random > size {
		random = size
	}
	rand.New(rand.NewSource(seed)).Read(data[:random])
	copy(data[4096:], marker)
	return data
}

// gzipped is data compressed with gzip.
func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	must(t, zw.Close())
	return buf.Bytes()
}

// sameImage fails the test unless the file at path holds want followed by zeros up to size
// (an image grown to a drive's size).
func sameImage(t *testing.T, what, path string, want []byte, size int) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if len(got) != size {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), size)
	}
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("%s: the first %d bytes differ from the image flashed", what, len(want))
	}
	if bytes.IndexFunc(got[len(want):], func(r rune) bool { return r != 0 }) >= 0 {
		t.Fatalf("%s: bytes after the image are not zero", what)
	}
}

// feed returns the read end of a pipe that a goroutine fills with data and then closes; the
// test waits for the goroutine and closes the read end when it ends.
func feed(t *testing.T, data []byte) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		w.Close()
		done <- err
	}()
	t.Cleanup(func() {
		r.Close()
		if err := <-done; err != nil {
			t.Errorf("writing the pipe: %v", err)
		}
	})
	return r
}

// rawDescriptor is a bare descriptor number as a Descriptor (not an *os.File, whose Fd would
// make it blocking).
type rawDescriptor int

func (d rawDescriptor) Fd() uintptr { return uintptr(d) }

// closedFile is an *os.File already closed.
func closedFile(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.Close()
	return r
}

// imageFormat is the format qemu-img finds in the image at path.
func imageFormat(t *testing.T, path string) string {
	t.Helper()
	info, err := ImageInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(info, &v); err != nil {
		t.Fatal(err)
	}
	return v.Format
}

// checkFractions fails the test unless the fractions never decrease and end at 1.
func checkFractions(t *testing.T, what string, fractions []float64) {
	t.Helper()
	if len(fractions) == 0 || fractions[len(fractions)-1] != 1.0 {
		t.Fatalf("%s: progress %v does not end at 1", what, fractions)
	}
	for i := 1; i < len(fractions); i++ {
		if fractions[i] < fractions[i-1] {
			t.Fatalf("%s: progress went back: %v", what, fractions)
		}
	}
}

// streamProgress records a stream flash's progress and checks that neither count decreases.
type streamProgress struct {
	t         *testing.T
	calls     int
	read      uint64
	converted float64
}

func (p *streamProgress) report(read uint64, converted float64) {
	if read < p.read || converted < p.converted {
		p.t.Errorf("stream progress went back: (%d, %v) after (%d, %v)", read, converted, p.read, p.converted)
	}
	p.calls++
	p.read, p.converted = read, converted
}

// Flashing images from files and streams (ImageFlash, ImageFlashFrom), back byte for byte.
func TestImageFlash(t *testing.T) {
	dir := t.TempDir()
	source := filepath.Join(dir, "source.raw")
	target := filepath.Join(dir, "target.qcow2")
	back := filepath.Join(dir, "back.raw")
	image := testImage(1<<20, 1, "QM-SOURCE")
	must(t, os.WriteFile(source, image, 0o600))

	var fractions []float64
	must(t, ImageFlash(source, target, "qcow2", func(f float64) { fractions = append(fractions, f) }))
	checkFractions(t, "ImageFlash into qcow2", fractions)
	if f := imageFormat(t, target); f != "qcow2" {
		t.Fatalf("the target is %s", f)
	}
	must(t, ImageFlash(target, back, "", nil))
	sameImage(t, "the qcow2 flashed back into raw", back, image, len(image))

	// Compressed, recognised by its content (the name says nothing).
	packed := filepath.Join(dir, "packed.img")
	must(t, os.WriteFile(packed, gzipped(t, image), 0o600))
	must(t, os.Remove(back))
	must(t, ImageFlash(packed, back, "raw", nil))
	sameImage(t, "a gzip source flashed into raw", back, image, len(image))

	// Bad inputs, and a failed flash that leaves the target as it was.
	e := wantStatus(t, "a missing source", ImageFlash(filepath.Join(dir, "missing.img"), back, "", nil), StatusInvalidArgument)
	contains(t, "the message", e.Message, "missing.img")
	wantStatus(t, "a NUL in target", ImageFlash(source, "a\x00b", "", nil), StatusInvalidArgument)
	wantStatus(t, "a NUL in format", ImageFlash(source, back, "r\x00aw", nil), StatusInvalidArgument)
	must(t, os.WriteFile(packed, []byte("QFI\xfb\x00\x00\x00\x63"), 0o600))
	e = wantStatus(t, "a source qemu-img cannot read", ImageFlash(packed, back, "raw", nil), StatusImage)
	contains(t, "the message", e.Message, "qemu-img")
	sameImage(t, "the target after a failed flash", back, image, len(image))

	// A panic in the callback does not cross the library: it comes back afterwards.
	func() {
		defer func() {
			if r := recover(); r != "stop here" {
				t.Fatalf("recovered %v", r)
			}
		}()
		ImageFlash(source, filepath.Join(dir, "again.raw"), "raw", func(float64) { panic("stop here") })
		t.Fatal("no panic")
	}()

	// From a stream: a pipe (non-blocking in Go until Fd) fed by another goroutine with more than a pipe's buffer holds,
	// gzip-compressed, into the existing qcow2 (format "": the target's own).
	streamed := testImage(2<<20, 2, "QM-FROM-PIPE")
	r := feed(t, gzipped(t, streamed))
	p := &streamProgress{t: t, converted: -1}
	must(t, ImageFlashFrom(r, target, "", p.report))
	if p.calls == 0 || p.read == 0 || p.converted != 1.0 {
		t.Fatalf("stream progress: %d calls, %d bytes read, converted %v", p.calls, p.read, p.converted)
	}
	if _, err := r.Stat(); err != nil {
		t.Fatalf("the caller's pipe was closed: %v", err)
	}
	if f := imageFormat(t, target); f != "qcow2" {
		t.Fatalf("the target after a stream flash is %s", f)
	}
	must(t, ImageFlash(target, back, "raw", nil))
	sameImage(t, "the streamed image", back, streamed, len(streamed))

	// A plain raw stream into a raw target is written as it comes.
	raw := filepath.Join(dir, "streamed.raw")
	must(t, ImageFlashFrom(feed(t, image), raw, "raw", nil))
	sameImage(t, "a raw stream", raw, image, len(image))

	// A Descriptor that is not an *os.File, left non-blocking, whose data comes 200 ms later:
	// the library waits for it as for a blocking one.
	var fds [2]int
	must(t, syscall.Pipe2(fds[:], syscall.O_CLOEXEC))
	must(t, syscall.SetNonblock(fds[0], true))
	late := testImage(48<<10, 3, "QM-LATE")
	w := os.NewFile(uintptr(fds[1]), "late-writer")
	wrote := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		_, err := w.Write(late)
		w.Close()
		wrote <- err
	}()
	lateRaw := filepath.Join(dir, "late.raw")
	err := ImageFlashFrom(rawDescriptor(fds[0]), lateRaw, "raw", nil)
	syscall.Close(fds[0])
	must(t, <-wrote)
	must(t, err)
	sameImage(t, "a late stream on a non-blocking descriptor", lateRaw, late, len(late))

	closed := closedFile(t)
	wantStatus(t, "a closed file", ImageFlashFrom(closed, target, "", nil), StatusInvalidArgument)
	wantStatus(t, "a nil *os.File", ImageFlashFrom((*os.File)(nil), target, "", nil), StatusInvalidArgument)
	wantStatus(t, "no descriptor", ImageFlashFrom(nil, target, "", nil), StatusNullArgument)
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	wantStatus(t, "a directory, which cannot be read", ImageFlashFrom(d, back, "raw", nil), StatusIO)
	sameImage(t, "the target after a failed stream flash", back, streamed, len(streamed))
}

// vmJSON is a configuration launching a `vm` description under TCG.
func vmJSON(t *testing.T, vm map[string]any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"accel": "tcg", "vm": vm})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// drive returns the machine's drive named name.
func drive(t *testing.T, m *Machine, name string) Drive {
	t.Helper()
	drives, err := m.Drives()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range drives {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no drive %q in %+v", name, drives)
	return Drive{}
}

// What Jumpstarter's QEMU driver does with a machine: its power state and its changes, its
// drives flashed and dumped by name, a relaunch with a changed description; and what a
// machine launched without a description refuses.
func TestPowerDrivesFlashDumpRelaunch(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	baseImage := testImage(1<<20, 3, "QM-BASE")
	must(t, os.WriteFile(base, baseImage, 0o600))
	source := filepath.Join(dir, "source.qcow2")
	sourceImage := testImage(1<<20, 4, "QM-SOURCE")
	must(t, os.WriteFile(filepath.Join(dir, "source.raw"), sourceImage, 0o600))
	must(t, ImageFlash(filepath.Join(dir, "source.raw"), source, "qcow2", nil))
	dumped := filepath.Join(dir, "dumped.raw")

	// A raw launch (no `vm` description) has no drives.
	rawM := launch(t, `{"args": ["-machine", "none", "-nodefaults", "-S"], "accel": "tcg"}`)
	if s, err := rawM.PowerState(); err != nil || s != PowerPaused {
		t.Fatalf("a raw machine started with -S: %v, %v", s, err)
	}
	if drives, err := rawM.Drives(); err != nil || drives == nil || len(drives) != 0 {
		t.Fatalf("the drives of a raw launch: %+v, %v", drives, err)
	}
	wantStatus(t, "flashing a raw launch", rawM.Flash("root", source, nil), StatusUnsupported)
	must(t, rawM.Shutdown(deadline(t, time.Minute)))
	wantStatus(t, "dumping a raw launch", rawM.Dump("root", dumped, "", nil), StatusUnsupported)
	wantStatus(t, "a new description for a raw launch", rawM.Relaunch("{}"), StatusUnsupported)

	ctx := deadline(t, 3*time.Minute)
	m := launch(t, vmJSON(t, map[string]any{
		"paused": true, "default_partitions": map[string]string{"root": base}, "disk_size": "4M",
	}))

	// Power: paused, running, paused, running, from two goroutines.
	if s, err := m.PowerState(); err != nil || s != PowerPaused {
		t.Fatalf("a machine started paused: %v, %v", s, err)
	}
	_, err := m.PowerWaitChange(deadline(t, 200*time.Millisecond))
	wantStatus(t, "no change yet", err, StatusTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a timeout is context.DeadlineExceeded too: %v", err)
	}
	must(t, m.Resume())
	if s, err := m.PowerWaitChange(ctx); err != nil || s != PowerRunning {
		t.Fatalf("after resume: %v, %v", s, err)
	}
	changes := make(chan PowerState, 1)
	waitErr := make(chan error, 1)
	go func() {
		s, err := m.PowerWaitChange(ctx)
		changes <- s
		waitErr <- err
	}()
	// The wait runs in slices, so the pause gets through while it waits.
	must(t, m.Pause())
	if s, err := <-changes, <-waitErr; err != nil || s != PowerPaused {
		t.Fatalf("the pause seen by another goroutine: %v, %v", s, err)
	}
	must(t, m.Resume())
	if s, err := m.PowerWaitChange(ctx); err != nil || s != PowerRunning {
		t.Fatalf("resumed again: %v, %v", s, err)
	}
	if s, err := m.PowerState(); err != nil || s != PowerRunning {
		t.Fatalf("PowerState while running: %v, %v", s, err)
	}
	// A cancelled context ends the wait (within a slice), and loses nothing.
	cctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := m.PowerWaitChange(cctx)
		waitErr <- err
	}()
	cancel()
	if err := <-waitErr; err != context.Canceled {
		t.Fatalf("PowerWaitChange with a cancelled context: %v", err)
	}

	// The drives: root kept at 4 MiB, its own file (the default partition is never written),
	// and the UEFI firmware.
	root := drive(t, m, "root")
	if root.Kind != "disk" || root.Size == nil || *root.Size != 4<<20 || !root.Owned || root.Path == base || root.Format == "" {
		t.Fatalf("the root drive: %+v", root)
	}
	if _, err := os.Stat(root.Path); err != nil {
		t.Fatalf("the root drive's file: %v", err)
	}
	if d := drive(t, m, "uefi_code"); d.Kind != "uefi_code" {
		t.Fatalf("uefi_code: %+v", d)
	}
	vars := drive(t, m, "uefi_vars")
	if vars.Kind != "uefi_vars" {
		t.Fatalf("uefi_vars: %+v", vars)
	}

	wantStatus(t, "flashing while QEMU runs", m.Flash("root", source, nil), StatusInvalidState)
	wantStatus(t, "dumping while QEMU runs", m.Dump("root", dumped, "", nil), StatusInvalidState)
	wantStatus(t, "relaunching while QEMU runs", m.Relaunch(nil), StatusInvalidState)

	must(t, m.Shutdown(deadline(t, time.Minute)))
	if s, err := m.PowerWaitChange(ctx); err != nil || s != PowerOff {
		t.Fatalf("QEMU's exit: %v, %v", s, err)
	}
	_, err = m.PowerWaitChange(ctx)
	wantStatus(t, "after PowerOff and the exit", err, StatusProcessExited)
	if s, err := m.PowerState(); err != nil || s != PowerOff {
		t.Fatalf("PowerState of an exited QEMU: %v, %v", s, err)
	}

	// Dump, flash, dump: byte for byte, grown back to the drive's size.
	var fractions []float64
	must(t, m.Dump("root", dumped, "raw", func(f float64) { fractions = append(fractions, f) }))
	checkFractions(t, "Dump", fractions)
	sameImage(t, "root as the default partition made it", dumped, baseImage, 4<<20)
	fractions = nil
	must(t, m.Flash("root", source, func(f float64) { fractions = append(fractions, f) }))
	checkFractions(t, "Flash", fractions)
	own := filepath.Join(dir, "own-format.img")
	must(t, m.Dump("root", own, "", nil))
	if f := imageFormat(t, own); f != root.Format {
		t.Fatalf("a dump in the drive's own format (%s) is %s", root.Format, f)
	}
	must(t, os.Remove(dumped))
	must(t, m.Dump("root", dumped, "raw", nil))
	sameImage(t, "root after the flash", dumped, sourceImage, 4<<20)
	if b, err := os.ReadFile(base); err != nil || !bytes.Equal(b, baseImage) {
		t.Fatalf("the default partition file was written: %v", err)
	}

	// The UEFI variables from a stream, by Jumpstarter's name.
	varsImage := testImage(48<<10, 5, "QM-FLASHED-FD")
	r := feed(t, varsImage)
	p := &streamProgress{t: t, converted: -1}
	must(t, m.FlashFrom("OVMF_VARS.fd", r, p.report))
	if p.calls == 0 || p.read != uint64(len(varsImage)) || p.converted != 1.0 {
		t.Fatalf("stream progress: %d calls, %d bytes read, converted %v", p.calls, p.read, p.converted)
	}
	if _, err := r.Stat(); err != nil {
		t.Fatalf("the caller's pipe was closed: %v", err)
	}
	varsDump := filepath.Join(dir, "vars.raw")
	must(t, m.Dump("uefi_vars", varsDump, "raw", nil))
	varsSize := len(varsImage)
	if vars.Size != nil {
		varsSize = int(*vars.Size)
	} else if st, err := os.Stat(varsDump); err == nil && st.Size() >= int64(len(varsImage)) {
		varsSize = int(st.Size())
	}
	sameImage(t, "the UEFI variables", varsDump, varsImage, varsSize)

	// Bad inputs: typed errors, naming what was wrong.
	e := wantStatus(t, "an unknown partition", m.Flash("boot", source, nil), StatusInvalidArgument)
	contains(t, "the message lists the drives", e.Message, "root", "uefi_vars")
	wantStatus(t, "a missing source", m.Flash("root", filepath.Join(dir, "missing.img"), nil), StatusInvalidArgument)
	wantStatus(t, "a NUL in the partition", m.Flash("ro\x00ot", source, nil), StatusInvalidArgument)
	closed := closedFile(t)
	wantStatus(t, "a stream from a closed file", m.FlashFrom("root", closed, nil), StatusInvalidArgument)
	wantStatus(t, "a stream from no file", m.FlashFrom("root", nil, nil), StatusNullArgument)
	wantStatus(t, "an unknown dump format", m.Dump("root", filepath.Join(dir, "x.img"), "no format!", nil), StatusInvalidArgument)
	wantStatus(t, "dumping an unknown partition", m.Dump("boot", filepath.Join(dir, "x.img"), "", nil), StatusInvalidArgument)

	// Relaunch: the same description (paused again), then a changed one that keeps the disks.
	must(t, m.Relaunch(nil))
	if s, err := m.PowerState(); err != nil || s != PowerPaused {
		t.Fatalf("relaunched: %v, %v", s, err)
	}
	wantStatus(t, "relaunching while QEMU runs", m.Relaunch(nil), StatusInvalidState)
	must(t, m.Shutdown(deadline(t, time.Minute)))
	must(t, m.Relaunch(map[string]any{
		"paused": true, "memory": "192M", "default_partitions": map[string]string{"root": base}, "disk_size": "8M",
	}))
	reply, err := m.Execute(ctx, "query-memory-size-summary", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mem struct {
		Base uint64 `json:"base-memory"`
	}
	if err := json.Unmarshal(reply, &mem); err != nil || mem.Base != 192<<20 {
		t.Fatalf("memory after the relaunch: %s, %v", reply, err)
	}
	if d := drive(t, m, "root"); d.Size == nil || *d.Size != 8<<20 {
		t.Fatalf("root after the relaunch: %+v", d)
	}
	must(t, m.Shutdown(deadline(t, time.Minute)))
	must(t, os.Remove(dumped))
	must(t, m.Dump("root", dumped, "raw", nil))
	sameImage(t, "root after the relaunch keeps the flashed data", dumped, sourceImage, 8<<20)

	e = wantStatus(t, "a disk_size below the disk's image", m.Relaunch(map[string]any{
		"default_partitions": map[string]string{"root": base}, "disk_size": "2M",
	}), StatusInvalidArgument)
	contains(t, "the message names both sizes", e.Message, "2097152 bytes", "8388608 bytes")
	if d := drive(t, m, "root"); d.Size == nil || *d.Size != 8<<20 {
		t.Fatalf("a refused relaunch changed the description: %+v", d)
	}
	wantStatus(t, "a description that does not parse", m.Relaunch(`{"memroy": 1}`), StatusInvalidJSON)
	wantStatus(t, "JSON that is not JSON", m.Relaunch(`{"memory":`), StatusInvalidJSON)
	if s, err := m.PowerState(); err != nil || s != PowerOff {
		t.Fatalf("the refused relaunches launched something: %v, %v", s, err)
	}
	_, err = m.VsockCID()
	wantStatus(t, "the vsock CID without vsock", err, StatusUnsupported)

	m.Close()
	if _, err := m.PowerState(); !errors.Is(err, ErrClosed) {
		t.Fatalf("PowerState after Close: %v", err)
	}
	if _, err := m.PowerWaitChange(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("PowerWaitChange after Close: %v", err)
	}
	if err := m.Flash("root", source, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flash after Close: %v", err)
	}
}

// PowerState's names.
func TestPowerStateString(t *testing.T) {
	for s, want := range map[PowerState]string{PowerOff: "off", PowerRunning: "running", PowerPaused: "paused", 7: "PowerState(7)"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", int32(s), got, want)
		}
	}
}

// vsock: a CID a guest may have with /dev/vhost-vsock; without it (as on hosts without the
// vhost_vsock module) the launch is refused naming the device.
func TestVsock(t *testing.T) {
	config := vmJSON(t, map[string]any{"vsock": true, "paused": true})
	f, openErr := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0)
	if openErr == nil {
		f.Close()
		m := launch(t, config)
		cid, err := m.VsockCID()
		if err != nil || cid <= 2 || cid == 0xFFFFFFFF {
			t.Fatalf("the vsock CID: %d, %v", cid, err)
		}
		return
	}
	m, err := LaunchJSON(deadline(t, time.Minute), config)
	if err == nil {
		m.Close()
		t.Fatalf("a vsock machine launched without a usable /dev/vhost-vsock (%v)", openErr)
	}
	e := wantStatus(t, "vsock without /dev/vhost-vsock", err, StatusUnsupported)
	contains(t, "the message", e.Message, "/dev/vhost-vsock")
}

// An attached machine: its power state follows the QEMU it is connected to; it cannot be
// relaunched or flashed; once QEMU quits the change is PowerOff, then StatusDisconnected.
func TestPowerOfAnAttachedMachine(t *testing.T) {
	ctx := deadline(t, time.Minute)
	sock := filepath.Join(t.TempDir(), "m.qmp")
	cfg, err := ConfigFromJSON(noneConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	must(t, cfg.AddQMPListen("unix:"+sock))
	owner, err := Launch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	m, err := AttachUnix(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if s, err := m.PowerState(); err != nil || s != PowerRunning {
		t.Fatalf("attached: %v, %v", s, err)
	}
	wantStatus(t, "relaunching an attached machine", m.Relaunch(`{"memory": "64M"}`), StatusUnsupported)
	wantStatus(t, "flashing an attached machine", m.Flash("root", "/nonexistent", nil), StatusUnsupported)
	_, err = m.VsockCID()
	wantStatus(t, "the vsock CID of an attached machine", err, StatusUnsupported)
	if _, err := m.Execute(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}
	if s, err := m.PowerWaitChange(ctx); err != nil || s != PowerPaused {
		t.Fatalf("stopped: %v, %v", s, err)
	}
	if _, err := m.Execute(ctx, "quit", nil); err != nil {
		t.Fatal(err)
	}
	if s, err := m.PowerWaitChange(ctx); err != nil || s != PowerOff {
		t.Fatalf("QEMU quit: %v, %v", s, err)
	}
	_, err = m.PowerWaitChange(ctx)
	wantStatus(t, "after PowerOff and the connection closed", err, StatusDisconnected)
	must(t, owner.Wait(ctx))
}
