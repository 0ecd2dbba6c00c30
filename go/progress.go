package qemumachine

// This file holds the Go function C calls back (cgo allows only declarations in the preamble
// of a file with //export).

/*
#include <stdint.h>
*/
import "C"

import "runtime/cgo"

// progressState is what a cgo.Handle given to qm_image_convert() names.
type progressState struct {
	fn         func(float64)
	panicked   bool
	panicValue any
}

// qmgoProgress is the progress callback of ImageConvert, called by the library on the calling
// goroutine during the call. A panic must not unwind through the library's frames: it is kept
// and re-raised by ImageConvert after the call, and later calls are skipped.
//
//export qmgoProgress
func qmgoProgress(fraction C.double, handle C.uintptr_t) {
	state := cgo.Handle(handle).Value().(*progressState)
	if state.panicked {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			state.panicked = true
			state.panicValue = r
		}
	}()
	state.fn(float64(fraction))
}
