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

// Implemented in Go (progress.go).
extern void qmgoStreamProgress(uint64_t bytes_read, double converted, uintptr_t handle);

static void qmgo_stream_progress_trampoline(uint64_t bytes_read, double converted,
                                            void *user_data) {
	qmgoStreamProgress(bytes_read, converted, (uintptr_t)user_data);
}

// qm_image_flash() and qm_image_flash_fd() with the trampolines, as qmgo_image_convert.
static enum qm_status qmgo_image_flash(const char *source, const char *target, const char *fmt,
                                       uintptr_t handle) {
	return qm_image_flash(source, target, fmt, handle ? qmgo_progress_trampoline : NULL,
	                      (void *)handle);
}

static enum qm_status qmgo_image_flash_fd(int fd, const char *target, const char *fmt,
                                          uintptr_t handle) {
	return qm_image_flash_fd(fd, target, fmt, handle ? qmgo_stream_progress_trampoline : NULL,
	                         (void *)handle);
}
*/
import "C"

import (
	"encoding/json"
	"math"
	"runtime"
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
	handle, done := newProgress(progress, nil)
	defer done()
	return call(op, func() C.enum_qm_status {
		return C.qmgo_image_convert(args[0].p, args[1].p, args[2].p, C.uintptr_t(handle))
	})
}

// ImageFlash writes the image at source (any format qemu-img reads, optionally gzip, xz, bzip2
// or zstd compressed, recognised by its content, not its name) into target as format ("" for
// an existing target's own format, else raw), replacing target only when the flash succeeded
// (qm_image_flash). The target's virtual size becomes the image's (grow it with ImageResize if
// needed). progress, if not nil, is called as in ImageConvert (a panic in it is re-raised after
// the flash). A missing source is StatusInvalidArgument; StatusImage when qemu-img or the
// decompressor fails; a missing decompressor is StatusBinaryNotFound naming the package to
// install.
func ImageFlash(source, target, format string, progress func(fraction float64)) error {
	const op = "qm_image_flash"
	args, free, err := cStrings(op, [2]string{"source", source}, [2]string{"target", target})
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
	return call(op, func() C.enum_qm_status {
		return C.qmgo_image_flash(args[0].p, args[1].p, cformat.p, C.uintptr_t(handle))
	})
}

// Descriptor is an open file whose descriptor ImageFlashFrom and Machine.FlashFrom read: an
// *os.File (a pipe's read end, a socket's file, os.Stdin, a regular file).
type Descriptor interface {
	Fd() uintptr
}

// ImageFlashFrom is ImageFlash from the stream open on src, read once, front to back, until
// its end (qm_image_flash_fd): a compressed stream is decompressed on the fly, a raw image
// into a raw target written as it comes, anything else converted once read. src stays the
// caller's: the library reads a duplicate of its descriptor and closes nothing (reading moves
// the file's offset); src is kept alive until the call returns. The library waits for data on
// a non-blocking descriptor as on a blocking one (*os.File's Fd puts the file into blocking
// mode anyway, which it then keeps: its read deadlines no longer apply).
//
// progress, if not nil, is called with the bytes read so far (it grows; the stream's length
// is not known) and how much of the conversion into the target's format is done once the
// stream has been read (0 before, 1 when the flash succeeded); neither decreases. It runs on
// the calling goroutine before ImageFlashFrom returns; a panic in it is re-raised after the
// flash. A closed file (or a nil *os.File) is StatusInvalidArgument, a nil src
// StatusNullArgument, a read error StatusIO.
func ImageFlashFrom(src Descriptor, target, format string, progress func(bytesRead uint64, converted float64)) error {
	const op = "qm_image_flash_fd"
	if src == nil {
		return &Error{Op: op, Status: StatusNullArgument, Message: "argument `fd`: no descriptor (nil src)"}
	}
	ctarget, err := newCString(op, "target", target)
	if err != nil {
		return err
	}
	defer ctarget.free()
	cformat, err := newOptCString(op, "format", format)
	if err != nil {
		return err
	}
	defer cformat.free()
	handle, done := newProgress(nil, progress)
	defer done()
	fd := fdArg(src)
	err = call(op, func() C.enum_qm_status {
		return C.qmgo_image_flash_fd(fd, ctarget.p, cformat.p, C.uintptr_t(handle))
	})
	// The descriptor must not be closed (by a finalizer of src) while the library reads it.
	runtime.KeepAlive(src)
	return err
}

// fdArg is src's descriptor as a C int; one that does not fit (a closed *os.File's
// ^uintptr(0)) is -1, which the library refuses (StatusInvalidArgument).
func fdArg(src Descriptor) C.int {
	fd := src.Fd()
	if fd > math.MaxInt32 {
		return -1
	}
	return C.int(fd)
}
