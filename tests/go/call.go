package qemumachine

// #include "qemumachine.h"
import "C"

import "runtime"

// call runs one library call and reads its error on the same OS thread: the library keeps the
// last error per thread, and the Go scheduler may otherwise move the goroutine in between.
func call(f func() C.enum_qm_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return lastError(f())
}
