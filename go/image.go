package qemumachine

/*
#include <stdint.h>
#include "qemumachine.h"

// Implemented in Go (progress.go).
extern void qmgoProgress(double fraction, uintptr_t handle);

// The progress callback handed to qm_image_convert(): user_data is a cgo.Handle, not a Go
// pointer, so no Go pointer ever reaches the library.
static void qmgo_progress_trampoline(double fraction, void *user_data) {
	qmgoProgress(fraction, (uintptr_t)user_data);
}

// qm_image_convert() with the trampoline as callback when handle is not 0, none otherwise.
static enum qm_status qmgo_image_convert(const char *src, const char *dst, const char *fmt,
                                    uintptr_t handle) {
	return qm_image_convert(src, dst, fmt, handle ? qmgo_progress_trampoline : NULL,
	                        (void *)handle);
}
*/
import "C"

import (
	"encoding/json"
	"runtime/cgo"
)

// The image functions run qemu-img (spawned by the process guardian, like QEMU). They take no
// context: the library gives them no timeout.

// ImageInfo describes the image at path (qemu-img info) as JSON: filename, format,
// virtual-size, actual-size, dirty-flag, backing-filename, snapshots, ... (qm_image_info). A
// missing file is StatusInvalidArgument naming it; StatusImage when qemu-img fails (the message
// holds its command line and output).
func ImageInfo(path string) (json.RawMessage, error) {
	const op = "qm_image_info"
	cpath, err := newCString(op, "path", path)
	if err != nil {
		return nil, err
	}
	defer cpath.free()
	var out *C.char
	err = call(op, func() C.enum_qm_status { return C.qm_image_info(cpath.p, &out) })
	text := takeString(out)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(text), nil
}

// ImageCreate creates an image of format ("qcow2", "raw", ...) and sizeBytes at path
// (qm_image_create).
func ImageCreate(path, format string, sizeBytes uint64) error {
	const op = "qm_image_create"
	args, free, err := cStrings(op, [2]string{"path", path}, [2]string{"format", format})
	if err != nil {
		return err
	}
	defer free()
	return call(op, func() C.enum_qm_status { return C.qm_image_create(args[0].p, args[1].p, C.uint64_t(sizeBytes)) })
}

// ImageResize resizes the image at path to sizeBytes; shrinking (which loses data) only with
// allowShrink, else StatusInvalidArgument (qm_image_resize).
func ImageResize(path string, sizeBytes uint64, allowShrink bool) error {
	const op = "qm_image_resize"
	cpath, err := newCString(op, "path", path)
	if err != nil {
		return err
	}
	defer cpath.free()
	return call(op, func() C.enum_qm_status { return C.qm_image_resize(cpath.p, C.uint64_t(sizeBytes), C.bool(allowShrink)) })
}

// ImageConvert converts the image at src into a new image at dst of format dstFormat, calling
// progress (if not nil) with a fraction from 0 to 1 that never decreases, on the calling
// goroutine, before ImageConvert returns (qm_image_convert). dst is replaced only when the
// conversion succeeded. A panic in progress stops nothing in qemu-img: it is re-raised once
// the conversion has returned.
func ImageConvert(src, dst, dstFormat string, progress func(fraction float64)) error {
	const op = "qm_image_convert"
	args, free, err := cStrings(op, [2]string{"src", src}, [2]string{"dst", dst}, [2]string{"dst_format", dstFormat})
	if err != nil {
		return err
	}
	defer free()
	var handle cgo.Handle
	var state *progressState
	if progress != nil {
		state = &progressState{fn: progress}
		handle = cgo.NewHandle(state)
		defer handle.Delete()
	}
	err = call(op, func() C.enum_qm_status {
		return C.qmgo_image_convert(args[0].p, args[1].p, args[2].p, C.uintptr_t(handle))
	})
	if state != nil && state.panicked {
		panic(state.panicValue)
	}
	return err
}
