package qemumachine

// This file holds the Go functions C calls back (cgo allows only declarations in the preamble
// of a file with //export).

/*
#include <stdint.h>
*/
import "C"

import "runtime/cgo"

// progressState is what a cgo.Handle given as a progress callback's user_data names: the Go
// callback (fn for a qm_progress_fn, streamFn for a qm_stream_progress_fn) and a panic it
// raised.
type progressState struct {
	fn         func(float64)
	streamFn   func(bytesRead uint64, converted float64)
	panicked   bool
	panicValue any
}

// report calls f unless an earlier call panicked; a panic must not unwind through the
// library's frames: it is kept, re-raised by the wrapper after the call (rethrow), and later
// calls are skipped.
func (s *progressState) report(f func()) {
	if s.panicked {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.panicked = true
			s.panicValue = r
		}
	}()
	f()
}

// newProgress makes the handle for a progress callback (0, none, when fn and streamFn are
// nil) and returns the function to defer: it deletes the handle and re-raises a panic of the
// callback.
func newProgress(fn func(float64), streamFn func(uint64, float64)) (cgo.Handle, func()) {
	if fn == nil && streamFn == nil {
		return 0, func() {}
	}
	state := &progressState{fn: fn, streamFn: streamFn}
	handle := cgo.NewHandle(state)
	return handle, func() {
		handle.Delete()
		if state.panicked {
			panic(state.panicValue)
		}
	}
}

// qmgoProgress is the qm_progress_fn of ImageConvert, ImageFlash, Machine.Flash and
// Machine.Dump, called by the library on the calling goroutine during the call.
//
//export qmgoProgress
func qmgoProgress(fraction C.double, handle C.uintptr_t) {
	state := cgo.Handle(handle).Value().(*progressState)
	state.report(func() { state.fn(float64(fraction)) })
}

// qmgoStreamProgress is the qm_stream_progress_fn of ImageFlashFrom and Machine.FlashFrom,
// called by the library on the calling goroutine during the call.
//
//export qmgoStreamProgress
func qmgoStreamProgress(bytesRead C.uint64_t, converted C.double, handle C.uintptr_t) {
	state := cgo.Handle(handle).Value().(*progressState)
	state.report(func() { state.streamFn(uint64(bytesRead), float64(converted)) })
}
