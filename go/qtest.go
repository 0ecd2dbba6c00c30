package qemumachine

/*
#include "qemumachine.h"
*/
import "C"

import (
	"context"
	"unsafe"
)

// The qtest methods drive QEMU's device-test protocol on a machine launched with
// Config.SetQtest(true) (QEMUQtestMachine). Each waits for QEMU's answer until ctx's deadline,
// or the machine's QMP timeout without one, holding the machine meanwhile; a call that times
// out leaves the channel usable (the late answer is dropped). QEMU's FAIL or ERR answer is
// StatusQtestError, the message naming the line and the answer; a line QEMU would misread or
// abort on is refused before it is sent (StatusInvalidArgument); StatusUnsupported without a
// qtest channel; StatusProcessExited once QEMU has exited.

// Qtest sends the qtest command line (without newline) and returns the values of QEMU's OK
// answer, the text after "OK " ("0x29c08086" for "inl 0xcfc"; "" for a bare OK)
// (qm_machine_qtest).
func (m *Machine) Qtest(ctx context.Context, line string) (string, error) {
	const op = "qm_machine_qtest"
	cline, err := newCString(op, "line", line)
	if err != nil {
		return "", err
	}
	defer cline.free()
	var out *C.char
	err = m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest(h, cline.p, t, &out)
	})
	return takeString(out), err
}

// QtestIn reads an I/O port: inb, inw or inl for a width of 1, 2 or 4 bytes
// (qm_machine_qtest_in).
func (m *Machine) QtestIn(ctx context.Context, width uint32, port uint16) (uint32, error) {
	var v C.uint32_t
	err := m.doCtx(ctx, "qm_machine_qtest_in", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_in(h, C.uint32_t(width), C.uint16_t(port), t, &v)
	})
	return uint32(v), err
}

// QtestOut writes an I/O port: outb, outw or outl for a width of 1, 2 or 4 bytes; a value
// that does not fit is StatusInvalidArgument (qm_machine_qtest_out).
func (m *Machine) QtestOut(ctx context.Context, width uint32, port uint16, value uint32) error {
	return m.doCtx(ctx, "qm_machine_qtest_out", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_out(h, C.uint32_t(width), C.uint16_t(port), C.uint32_t(value), t)
	})
}

// QtestReadN reads a value of guest memory at addr, in the target's byte order: readb, readw,
// readl or readq for a width of 1, 2, 4 or 8 bytes (qm_machine_qtest_readn).
func (m *Machine) QtestReadN(ctx context.Context, width uint32, addr uint64) (uint64, error) {
	var v C.uint64_t
	err := m.doCtx(ctx, "qm_machine_qtest_readn", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_readn(h, C.uint32_t(width), C.uint64_t(addr), t, &v)
	})
	return uint64(v), err
}

// QtestWriteN writes a value of guest memory at addr: writeb, writew, writel or writeq for a
// width of 1, 2, 4 or 8 bytes (qm_machine_qtest_writen).
func (m *Machine) QtestWriteN(ctx context.Context, width uint32, addr, value uint64) error {
	return m.doCtx(ctx, "qm_machine_qtest_writen", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_writen(h, C.uint32_t(width), C.uint64_t(addr), C.uint64_t(value), t)
	})
}

// QtestRead reads len(buf) bytes of guest memory at addr into buf (qm_machine_qtest_read). On
// failure buf may hold part of the data.
func (m *Machine) QtestRead(ctx context.Context, addr uint64, buf []byte) error {
	var p *C.uint8_t
	if len(buf) > 0 {
		p = (*C.uint8_t)(unsafe.Pointer(&buf[0]))
	}
	return m.doCtx(ctx, "qm_machine_qtest_read", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_read(h, C.uint64_t(addr), p, C.size_t(len(buf)), t)
	})
}

// QtestWrite writes data to guest memory at addr (qm_machine_qtest_write).
func (m *Machine) QtestWrite(ctx context.Context, addr uint64, data []byte) error {
	var p *C.uint8_t
	if len(data) > 0 {
		p = (*C.uint8_t)(unsafe.Pointer(&data[0]))
	}
	return m.doCtx(ctx, "qm_machine_qtest_write", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_write(h, C.uint64_t(addr), p, C.size_t(len(data)), t)
	})
}

// QtestMemset fills size bytes of guest memory at addr with value (qm_machine_qtest_memset).
func (m *Machine) QtestMemset(ctx context.Context, addr, size uint64, value byte) error {
	return m.doCtx(ctx, "qm_machine_qtest_memset", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_memset(h, C.uint64_t(addr), C.uint64_t(size), C.uint8_t(value), t)
	})
}

// QtestClockStep advances the virtual clock by ns nanoseconds (-1: to the next timer
// deadline) and returns the new clock (qm_machine_qtest_clock_step). It needs QEMU's qtest
// accelerator: without it (Debian's QEMU 7.2 has none) it is StatusUnsupported.
func (m *Machine) QtestClockStep(ctx context.Context, ns int64) (int64, error) {
	var clock C.int64_t
	err := m.doCtx(ctx, "qm_machine_qtest_clock_step", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_clock_step(h, C.int64_t(ns), t, &clock)
	})
	return int64(clock), err
}

// QtestClockSet advances the virtual clock to ns nanoseconds and returns the new clock
// (qm_machine_qtest_clock_set); it needs the qtest accelerator, as QtestClockStep does.
func (m *Machine) QtestClockSet(ctx context.Context, ns int64) (int64, error) {
	var clock C.int64_t
	err := m.doCtx(ctx, "qm_machine_qtest_clock_set", func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_clock_set(h, C.int64_t(ns), t, &clock)
	})
	return int64(clock), err
}

// QtestIRQIntercept intercepts the GPIO lines of the device at QOM path path: its inputs or,
// with out, its outputs; their changes then arrive as IRQ notifications (QtestIRQs). QEMU
// intercepts one device per run (qm_machine_qtest_irq_intercept).
func (m *Machine) QtestIRQIntercept(ctx context.Context, path string, out bool) error {
	const op = "qm_machine_qtest_irq_intercept"
	cpath, err := newCString(op, "path", path)
	if err != nil {
		return err
	}
	defer cpath.free()
	return m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_irq_intercept(h, cpath.p, C.bool(out), t)
	})
}

// QtestSetIRQIn drives input num of the GPIO list name ("" for the unnamed list) of the
// device at QOM path path to level (qm_machine_qtest_set_irq_in).
func (m *Machine) QtestSetIRQIn(ctx context.Context, path, name string, num uint32, level int32) error {
	const op = "qm_machine_qtest_set_irq_in"
	cpath, err := newCString(op, "path", path)
	if err != nil {
		return err
	}
	defer cpath.free()
	cname, err := newOptCString(op, "name", name)
	if err != nil {
		return err
	}
	defer cname.free()
	return m.doCtx(ctx, op, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_set_irq_in(h, cpath.p, cname.p, C.uint32_t(num), C.int32_t(level), t)
	})
}

// IRQ is a change of an intercepted interrupt line.
type IRQ struct {
	Num    uint32 `json:"num"`
	Raised bool   `json:"raised"`
}

// QtestIRQs takes the IRQ notifications of intercepted lines, oldest first: those received so
// far or, when there is none, the first to arrive until ctx's deadline (30 s without one;
// StatusTimeout when none comes) (qm_machine_qtest_irqs, in slices). The library keeps at
// most 4096 (more are counted and dropped).
func (m *Machine) QtestIRQs(ctx context.Context) ([]IRQ, error) {
	const op = "qm_machine_qtest_irqs"
	var out *C.char
	err := m.sliced(ctx, op, defaultWait, func(h *C.qm_machine, t C.int64_t) C.enum_qm_status {
		return C.qm_machine_qtest_irqs(h, t, &out)
	})
	text := takeString(out)
	if err != nil {
		return nil, err
	}
	var irqs []IRQ
	if err := decodeJSON(op, text, &irqs); err != nil {
		return nil, err
	}
	return irqs, nil
}
