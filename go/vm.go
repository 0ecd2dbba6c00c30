package qemumachine

/*
#include <stdint.h>
#include "qemumachine.h"

// Implemented in Go (progress.go).
extern void qmgoProgress(double fraction, uintptr_t handle);
extern void qmgoStreamProgress(uint64_t bytes_read, double converted, uintptr_t handle);

// The progress callbacks handed to the library: user_data is a cgo.Handle, not a Go pointer.
static void qmgo_vm_progress(double fraction, void *user_data) {
	qmgoProgress(fraction, (uintptr_t)user_data);
}

static void qmgo_vm_stream_progress(uint64_t bytes_read, double converted, void *user_data) {
	qmgoStreamProgress(bytes_read, converted, (uintptr_t)user_data);
}

// qm_machine_flash(), qm_machine_flash_fd() and qm_machine_dump() with the trampolines when
// handle is not 0, no callback otherwise.
static enum qm_status qmgo_machine_flash(qm_machine *m, const char *partition,
                                         const char *source, uintptr_t handle) {
	return qm_machine_flash(m, partition, source, handle ? qmgo_vm_progress : NULL,
	                        (void *)handle);
}

static enum qm_status qmgo_machine_flash_fd(qm_machine *m, const char *partition, int fd,
                                            uintptr_t handle) {
	return qm_machine_flash_fd(m, partition, fd, handle ? qmgo_vm_stream_progress : NULL,
	                           (void *)handle);
}

static enum qm_status qmgo_machine_dump(qm_machine *m, const char *partition, const char *dest,
                                        const char *fmt, uintptr_t handle) {
	return qm_machine_dump(m, partition, dest, fmt, handle ? qmgo_vm_progress : NULL,
	                       (void *)handle);
}
*/
import "C"

import (
	"context"
	"runtime"
	"strconv"
)

// The calls of this file serve a machine launched from a `vm` description (the "vm" member of
// a JSON configuration): its power state, its drives, flashing and dumping them while QEMU is
// stopped, and launching it again.

// PowerState is a machine's power state (qm_power), as PowerState and PowerWaitChange report
// it.
type PowerState int32

const (
	// PowerOff: QEMU is not running (it exited; or, attached, its connection closed), or the
	// guest powered off and QEMU stays (-no-shutdown).
	PowerOff PowerState = C.QM_POWER_OFF
	// PowerRunning: the guest runs.
	PowerRunning PowerState = C.QM_POWER_RUNNING
	// PowerPaused: QEMU runs with the guest stopped (paused, started paused, an error stop,
	// ...).
	PowerPaused PowerState = C.QM_POWER_PAUSED
)

// String returns "off", "running" or "paused" ("PowerState(N)" for a value this package does
// not name).
func (p PowerState) String() string {
	switch p {
	case PowerOff:
		return "off"
	case PowerRunning:
		return "running"
	case PowerPaused:
		return "paused"
	}
	return "PowerState(" + strconv.Itoa(int(p)) + ")"
}

// PowerState returns the machine's power state: PowerOff once QEMU has exited, else what
// query-status says (PowerRunning, or PowerPaused for any stopped state)
// (qm_machine_power_state). The kept STOP, RESUME and SHUTDOWN events are taken (the state
// returned supersedes them), so that PowerWaitChange reports only what changes afterwards.
// Bounded by the machine's QMP timeout.
func (m *Machine) PowerState() (PowerState, error) {
	var state C.int32_t
	err := m.do("qm_machine_power_state", func(h *C.qm_machine) C.enum_qm_status {
		return C.qm_machine_power_state(h, &state)
	})
	return PowerState(state), err
}

// PowerWaitChange waits until ctx's deadline (30 s without one) for the power state to change
// from the last one reported (by PowerWaitChange or PowerState), and returns the new one
// (qm_machine_power_wait_change, in slices). Changes come from QEMU's events (RESUME, STOP,
// SHUTDOWN, taken from the kept events in order; one that repeats the state is skipped) and
// QEMU's exit; call it in a loop to follow each change. StatusTimeout when nothing changed in
// time. Once PowerOff was reported and QEMU has exited nothing can change:
// StatusProcessExited at once (StatusDisconnected for an attached machine).
func (m *Machine) PowerWaitChange(ctx context.Context) (PowerState, error) {
	var state C.int32_t
	err := m.sliced(ctx, "qm_machine_power_wait_change", defaultWait, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_power_wait_change(h, t, &state)
	})
	return PowerState(state), err
}

// Relaunch launches QEMU again after it exited (a guest power-off, Shutdown), in the same temp
// dir, under the config's launch timeout (qm_machine_relaunch). With vm nil, from the same
// description; else vm is the machine's new `vm` description (JSON text as a string, []byte or
// json.RawMessage, or a map or struct to encode), e.g. with more "memory" or a bigger
// "disk_size": what the temp dir and the disks hold is kept (disks are not flashed again,
// only grown; UEFI variables and flashed firmware stay), the cloud-init seed is written anew.
// The machine holds itself for the whole launch.
//
// StatusInvalidState while QEMU runs; StatusInvalidJSON for a description that does not parse;
// StatusInvalidArgument for a "disk_size" below a disk's image (the message names both);
// StatusUnsupported for an attached machine, or a new description for a machine not launched
// from one. When the launch fails, the machine keeps its previous description.
func (m *Machine) Relaunch(vm any) error {
	const op = "qm_machine_relaunch"
	cvm, err := jsonArg(op, "vm_json", vm)
	if err != nil {
		return err
	}
	defer cvm.free()
	return m.do(op, func(h *C.qm_machine) C.enum_qm_status { return C.qm_machine_relaunch(h, cvm.p) })
}

// Drive is one drive of a machine launched from a `vm` description, a partition Flash and
// Dump know (Machine.Drives).
type Drive struct {
	// Name is the partition's name: "root" or another disk's id, "bios", "uefi_code",
	// "uefi_vars".
	Name string `json:"name"`
	// Kind is "disk", "bios", "uefi_code" or "uefi_vars".
	Kind string `json:"kind"`
	// Path is the drive's file.
	Path string `json:"path"`
	// Format is the file's image format ("qcow2", "raw", ...).
	Format string `json:"format"`
	// Size is the virtual size in bytes the drive is kept at, nil if none is set.
	Size *uint64 `json:"size"`
	// Owned is whether the file is the machine's own, in its temp dir (else it is never
	// written: a flash goes to a copy).
	Owned bool `json:"owned"`
}

// Drives returns the drives of a machine launched from a `vm` description, the partitions
// Flash and Dump know; none for a machine launched without one (qm_machine_drives).
func (m *Machine) Drives() ([]Drive, error) {
	const op = "qm_machine_drives"
	text, err := m.stringOut(op, func(h *C.qm_machine, out **C.char) C.enum_qm_status {
		return C.qm_machine_drives(h, out)
	})
	if err != nil {
		return nil, err
	}
	var drives []Drive
	if err := decodeJSON(op, text, &drives); err != nil {
		return nil, err
	}
	return drives, nil
}

// Flash writes the image at source (any format qemu-img reads, optionally gzip, xz, bzip2 or
// zstd compressed, recognised by its content) into the drive partition ("root" or another
// disk's id, "bios", "uefi_code", "uefi_vars"; Jumpstarter's "OVMF_CODE.fd" and
// "OVMF_VARS.fd" name the UEFI drives too), converted to the drive's format and grown back to
// its size (qm_machine_flash). Firmware the machine does not own is never written: the flash
// goes to a copy in its temp dir, used from the next launch. It takes effect at Relaunch.
// progress, if not nil, is called as in ImageConvert (a panic in it is re-raised after the
// flash). The machine holds itself for the whole flash.
//
// StatusInvalidState while QEMU runs (Shutdown it first); StatusInvalidArgument for an unknown
// partition (the message lists the machine's) or a missing source; StatusImage when qemu-img
// or the decompressor fails; StatusUnsupported for a machine not launched from a `vm`
// description.
func (m *Machine) Flash(partition, source string, progress func(fraction float64)) error {
	const op = "qm_machine_flash"
	args, free, err := cStrings(op, [2]string{"partition", partition}, [2]string{"source", source})
	if err != nil {
		return err
	}
	defer free()
	handle, done := newProgress(progress, nil)
	defer done()
	return m.do(op, func(h *C.qm_machine) C.enum_qm_status {
		return C.qmgo_machine_flash(h, args[0].p, args[1].p, C.uintptr_t(handle))
	})
}

// FlashFrom is Flash from the stream open on src (a pipe, a socket, os.Stdin), read once,
// front to back, until its end; a compressed stream is decompressed on the fly
// (qm_machine_flash_fd). src stays the caller's, as for ImageFlashFrom (the library reads a
// duplicate of its descriptor, waiting for data as it comes, and closes nothing; src is kept alive until
// the call returns), and progress is called as for ImageFlashFrom. A closed file (or a nil
// *os.File) is StatusInvalidArgument, a nil src StatusNullArgument, a read error StatusIO;
// the other errors are Flash's.
func (m *Machine) FlashFrom(partition string, src Descriptor, progress func(bytesRead uint64, converted float64)) error {
	const op = "qm_machine_flash_fd"
	if src == nil {
		return &Error{Op: op, Status: StatusNullArgument, Message: "argument `fd`: no descriptor (nil src)"}
	}
	cpartition, err := newCString(op, "partition", partition)
	if err != nil {
		return err
	}
	defer cpartition.free()
	handle, done := newProgress(nil, progress)
	defer done()
	fd := fdArg(src)
	err = m.do(op, func(h *C.qm_machine) C.enum_qm_status {
		return C.qmgo_machine_flash_fd(h, cpartition.p, fd, C.uintptr_t(handle))
	})
	// The descriptor must not be closed (by a finalizer of src) while the library reads it.
	runtime.KeepAlive(src)
	return err
}

// Dump reads the drive partition (named as for Flash) into a new file dest of format ("raw",
// "qcow2", ...; "" for the drive's own), e.g. the UEFI variables the guest wrote
// (qm_machine_dump). progress as for Flash. StatusInvalidState while QEMU runs;
// StatusInvalidArgument for an unknown partition or format; StatusUnsupported for a machine
// not launched from a `vm` description.
func (m *Machine) Dump(partition, dest, format string, progress func(fraction float64)) error {
	const op = "qm_machine_dump"
	args, free, err := cStrings(op, [2]string{"partition", partition}, [2]string{"dest", dest})
	if err != nil {
		return err
	}
	defer free()
	cformat, err := newOptCString(op, "format", format)
	if err != nil {
		return err
	}
	defer cformat.free()
	handle, done := newProgress(progress, nil)
	defer done()
	return m.do(op, func(h *C.qm_machine) C.enum_qm_status {
		return C.qmgo_machine_dump(h, args[0].p, args[1].p, cformat.p, C.uintptr_t(handle))
	})
}

// VsockCID returns the vsock context id of a machine launched with "vsock": true in its `vm`
// description: the guest's address for AF_VSOCK connections from the host (never 0-2 or
// 0xFFFFFFFF) (qm_machine_vsock_cid). StatusUnsupported for a machine without vsock.
func (m *Machine) VsockCID() (uint32, error) {
	var cid C.uint32_t
	err := m.do("qm_machine_vsock_cid", func(h *C.qm_machine) C.enum_qm_status {
		return C.qm_machine_vsock_cid(h, &cid)
	})
	return uint32(cid), err
}
