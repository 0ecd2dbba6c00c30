package qemumachine

/*
#include "qemumachine.h"
*/
import "C"

import "fmt"

// GuardianStart starts this process's process guardian now, if it does not run yet, and
// returns its pid (the same one on every call) (qm_guardian_start).
//
// The guardian is the small child process ("qm-guardian" in ps) that spawns every QEMU and
// qemu-img the library runs, and kills them and removes their temp dirs when the program dies,
// however it dies. The first launch starts it otherwise. It is forked from the program as the
// program is at that moment, which costs more the more memory the program has mapped: a large
// program may call this early in main, while it is small. A program that waits for all of its
// children sees it: do not wait for it to exit.
func GuardianStart() (int, error) {
	var pid C.int32_t
	err := call("qm_guardian_start", func() C.enum_qm_status { return C.qm_guardian_start(&pid) })
	return int(pid), err
}

// GuardianPid returns the pid of this process's guardian, 0 if none was started yet
// (qm_guardian_pid).
func GuardianPid() int {
	return int(C.qm_guardian_pid())
}

// HeaderVersion is the version of the header this package was compiled against,
// major*10000 + minor*100 + patch (QM_VERSION_NUMBER).
const HeaderVersion uint32 = C.QM_VERSION_NUMBER

// VersionNumber returns the version of the library loaded at run time, major*10000 +
// minor*100 + patch (qm_version).
func VersionNumber() uint32 {
	return uint32(C.qm_version())
}

// Version returns the library's version as text, such as "0.1.0" (qm_version_string).
func Version() string {
	return C.GoString(C.qm_version_string())
}

// CheckVersion returns an error when the library loaded at run time cannot serve the header
// this package was compiled against: another major version or, before 1.0, another minor
// version (the library's soname changes with them), or an older library.
func CheckVersion() error {
	lib := VersionNumber()
	compatible := lib/10000 == HeaderVersion/10000 && lib >= HeaderVersion
	if HeaderVersion/10000 == 0 {
		compatible = compatible && lib/100 == HeaderVersion/100
	}
	if !compatible {
		return fmt.Errorf("qemumachine: the library loaded is version %d (%s), the header compiled against is %d", lib, Version(), HeaderVersion)
	}
	return nil
}
