//go:build qemumachine_static

package qemumachine

// With `-tags qemumachine_static`: libqemumachine.a is linked into the program, which then
// needs no libqemumachine.so at run time (libc and the other system libraries stay shared).
//
// `-l:libqemumachine.a` names the archive itself, where `-lqemumachine` would find the shared
// library first; `pkg-config --static` adds the -L directory (GNU ld applies -L to every -l,
// wherever it stands), the include directory, and the system libraries the archive needs
// (Libs.private). Its own `-lqemumachine` then resolves nothing, and `--as-needed` keeps the
// shared library out of the program's DT_NEEDED list.

// #cgo LDFLAGS: -Wl,--as-needed -l:libqemumachine.a
// #cgo pkg-config: --static qemumachine
import "C"

// linkedStatically says which of link_shared.go and link_static.go was built.
const linkedStatically = true
