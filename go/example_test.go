package qemumachine_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"qemu-machine.invalid/qemumachine"
)

// Launch a machine, run QMP commands, wait for an event, shut it down.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := qemumachine.LaunchJSON(ctx, `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg"}`)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	reply, err := m.Execute(ctx, "query-status", nil)
	if err != nil {
		log.Fatal(err)
	}
	var status struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(reply, &status); err != nil {
		log.Fatal(err)
	}
	fmt.Println("status:", status.Status)

	if err := m.Pause(); err != nil {
		log.Fatal(err)
	}
	ev, err := m.EventWait(ctx, "STOP", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("event:", ev.Name)

	if err := m.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	code, _, err := m.ExitStatus()
	fmt.Println("exit code:", code, err)
	// Output:
	// status: running
	// event: STOP
	// exit code: 0 <nil>
}

// A configuration built with setters rather than JSON.
func ExampleNewConfig() {
	cfg, err := qemumachine.NewConfig()
	if err != nil {
		log.Fatal(err)
	}
	defer cfg.Close()
	if err := cfg.AddArg("-machine", "none", "-nodefaults"); err != nil {
		log.Fatal(err)
	}
	if err := cfg.SetAccel(qemumachine.AccelTCG); err != nil {
		log.Fatal(err)
	}
	if err := cfg.SetName("example"); err != nil {
		log.Fatal(err)
	}
	m, err := qemumachine.Launch(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	name, _ := m.Name()
	fmt.Println(name)
	// Output: example
}

// QEMU's error reply is an *Error with the QMP class and description; every Status is a
// sentinel for errors.Is.
func ExampleError() {
	ctx := context.Background()
	m, err := qemumachine.LaunchJSON(ctx, `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg"}`)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	_, err = m.Execute(ctx, "no-such-command", nil)
	var qe *qemumachine.Error
	if errors.As(err, &qe) {
		fmt.Println(qe.Status, qe.QMPClass)
	}
	fmt.Println(errors.Is(err, qemumachine.StatusQMPError))

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = m.EventWait(short, "NEVER_SENT", nil)
	fmt.Println(errors.Is(err, qemumachine.StatusTimeout), errors.Is(err, context.DeadlineExceeded))

	m.Close()
	_, err = m.Execute(ctx, "query-status", nil)
	fmt.Println(errors.Is(err, qemumachine.ErrClosed))
	// Output:
	// QM_STATUS_QMP_ERROR CommandNotFound
	// true
	// true true
	// true
}

// NextEvent iterates over events, oldest first, without losing any; it ends with the context,
// Close, or QEMU's exit.
func ExampleMachine_NextEvent() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := qemumachine.LaunchJSON(ctx, `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg"}`)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	m.Pause()
	m.Resume()
	if _, err := m.Execute(ctx, "quit", nil); err != nil {
		log.Fatal(err)
	}
	for {
		ev, err := m.NextEvent(ctx)
		if errors.Is(err, qemumachine.StatusProcessExited) || errors.Is(err, qemumachine.StatusDisconnected) {
			fmt.Println("QEMU is gone")
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Name)
	}
	// Output:
	// STOP
	// RESUME
	// SHUTDOWN
	// QEMU is gone
}

// The console as an io.Reader: here a qtest machine whose console is its second ISA serial
// port, written through qtest (a real guest writes it itself).
func ExampleMachine_Console() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := qemumachine.ConfigFromJSON(`{"args": ["-machine", "q35", "-nodefaults"], "qtest": true}`)
	if err != nil {
		log.Fatal(err)
	}
	defer cfg.Close()
	if err := cfg.SetConsoleDevice("isa-serial", 1); err != nil {
		log.Fatal(err)
	}
	m, err := qemumachine.Launch(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	for _, c := range []byte("hello from the guest\n") {
		if err := m.QtestOut(ctx, 1, 0x2f8, uint32(c)); err != nil {
			log.Fatal(err)
		}
	}
	line, err := bufio.NewReader(m.Console()).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(line)
	// Output: hello from the guest
}

// Disk images, with conversion progress.
func ExampleImageConvert() {
	dir, err := os.MkdirTemp("", "qm-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	qcow := filepath.Join(dir, "disk.qcow2")
	if err := qemumachine.ImageCreate(qcow, "qcow2", 64<<20); err != nil {
		log.Fatal(err)
	}
	last := 0.0
	if err := qemumachine.ImageConvert(qcow, filepath.Join(dir, "disk.raw"), "raw", func(f float64) { last = f }); err != nil {
		log.Fatal(err)
	}
	info, err := qemumachine.ImageInfo(filepath.Join(dir, "disk.raw"))
	if err != nil {
		log.Fatal(err)
	}
	var v struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	json.Unmarshal(info, &v)
	fmt.Println(v.Format, v.VirtualSize>>20, "MiB, progress", last)
	// Output: raw 64 MiB, progress 1
}

// Attach to a QEMU that serves QMP (here one the library launched with a QMP server for other
// clients; any QEMU started with -qmp unix:PATH,server=on,wait=off will do).
func ExampleAttachUnix() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "qm-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "qmp.sock")
	owner, err := qemumachine.LaunchJSON(ctx, `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg", "qmp_listen": ["unix:`+sock+`"]}`)
	if err != nil {
		log.Fatal(err)
	}
	defer owner.Close()

	m, err := qemumachine.AttachUnix(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close() // disconnects; QEMU is not this Machine's to kill
	state, _ := m.RunState()
	pid, _ := m.Pid()
	fmt.Println(state, pid)
	// Output: running 0
}

// Start the process guardian early, while the program is small (it is forked from it).
func ExampleGuardianStart() {
	pid, err := qemumachine.GuardianStart()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pid == qemumachine.GuardianPid())
	// Output: true
}

// Check at start-up that the library found at run time matches the header compiled against.
func ExampleCheckVersion() {
	if err := qemumachine.CheckVersion(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.Count(qemumachine.Version(), "."))
	// Output: 2
}
