//go:build !qemumachine_static

package qemumachine

// The default: link the shared library, found (with the header) through pkg-config. Build with
// `-tags qemumachine_static` to link libqemumachine.a into the program instead (link_static.go).

// #cgo pkg-config: qemumachine
import "C"

// linkedStatically says which of link_shared.go and link_static.go was built.
const linkedStatically = false
