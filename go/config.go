package qemumachine

/*
#include "qemumachine.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"sync"
	"syscall"
	"time"
)

// Accel chooses QEMU's accelerator (qm_accel).
type Accel int32

const (
	// AccelAuto is KVM when /dev/kvm is usable and the guest matches the host, else TCG; the
	// environment variable QEMU_MACHINE_ACCEL overrides it.
	AccelAuto Accel = C.QM_ACCEL_AUTO
	// AccelKVM is `-accel kvm`.
	AccelKVM Accel = C.QM_ACCEL_KVM
	// AccelTCG is `-accel tcg`.
	AccelTCG Accel = C.QM_ACCEL_TCG
	// AccelNone adds no -accel argument: the arguments decide.
	AccelNone Accel = C.QM_ACCEL_NONE
)

// Config is a launch configuration (qm_config): which QEMU to run, with what arguments,
// console, timeouts, ... It can launch any number of machines, which do not depend on it
// afterwards. A Config is safe for use by several goroutines (its calls are serialized).
// Close it when done; its methods then return ErrClosed.
type Config struct {
	mu sync.Mutex
	h  *C.qm_config
	// launchTimeout is the launch timeout the C config holds, as far as this package knows it
	// (its default, the JSON's launch_timeout_ms, or SetLaunchTimeout), so that Launch can
	// shorten it to a context's deadline for one launch and put it back.
	launchTimeout time.Duration
}

// defaultLaunchTimeout is qm_config_new's launch timeout.
const defaultLaunchTimeout = 30 * time.Second

// NewConfig returns a configuration that runs qemu-system-x86_64 (looked up in PATH) with no
// arguments, the accelerator chosen automatically, launch and QMP timeouts of 30 s each, no
// console, and at most 65536 kept events (qm_config_new).
func NewConfig() (*Config, error) {
	var h *C.qm_config
	if err := call("qm_config_new", func() C.enum_qm_status { return C.qm_config_new(&h) }); err != nil {
		return nil, err
	}
	return &Config{h: h, launchTimeout: defaultLaunchTimeout}, nil
}

// ConfigFromJSON returns a configuration described by a JSON object (qm_config_from_json): the
// fields `binary`, `args`, `accel`, `temp_dir`, `launch_timeout_ms`, `qmp_timeout_ms`,
// `console`, `console_log`, `console_buffer_bytes`, `max_events`, `wrapper`, `env`, `oob`,
// `qmp`, `qmp_listen`, `qtest`, `name`, `log_dir`, `vm` (a VM description the library turns
// into a command line), ... as the header documents them. Unknown fields and invalid JSON are
// StatusInvalidJSON, the message naming what is wrong.
func ConfigFromJSON(text string) (*Config, error) {
	const op = "qm_config_from_json"
	cjson, err := newCString(op, "json", text)
	if err != nil {
		return nil, err
	}
	defer cjson.free()
	var h *C.qm_config
	if err := call(op, func() C.enum_qm_status { return C.qm_config_from_json(cjson.p, &h) }); err != nil {
		return nil, err
	}
	cfg := &Config{h: h, launchTimeout: defaultLaunchTimeout}
	// The library accepted the JSON: read back the one field Launch needs to know.
	var fields struct {
		LaunchTimeoutMs *uint64 `json:"launch_timeout_ms"`
	}
	if json.Unmarshal([]byte(text), &fields) == nil && fields.LaunchTimeoutMs != nil {
		cfg.launchTimeout = time.Duration(*fields.LaunchTimeoutMs) * time.Millisecond
	}
	return cfg, nil
}

// Close frees the configuration (qm_config_free). Machines launched from it are not
// affected. Close is idempotent and safe to call concurrently with other methods.
func (c *Config) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h != nil {
		C.qm_config_free(c.h)
		c.h = nil
	}
	return nil
}

// do runs one call on the config's handle, serialized with the config's other calls.
func (c *Config) do(op string, f func(h *C.qm_config) C.enum_qm_status) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return closedError(op)
	}
	return call(op, func() C.enum_qm_status { return f(c.h) })
}

// setString runs a setter taking one string argument.
func (c *Config) setString(op, arg, value string, set func(h *C.qm_config, s *C.char) C.enum_qm_status) error {
	cs, err := newCString(op, arg, value)
	if err != nil {
		return err
	}
	defer cs.free()
	return c.do(op, func(h *C.qm_config) C.enum_qm_status { return set(h, cs.p) })
}

// SetBinary sets the QEMU binary: a path, or a name looked up in PATH (qm_config_set_binary).
// A binary that cannot be run makes Launch fail with StatusBinaryNotFound.
func (c *Config) SetBinary(path string) error {
	return c.setString("qm_config_set_binary", "path", path, func(h *C.qm_config, s *C.char) C.enum_qm_status {
		return C.qm_config_set_binary(h, s)
	})
}

// AddArg appends arguments to QEMU's command line as they are: no shell, no splitting, no
// quoting (qm_config_add_arg, once per argument). A configuration with a `vm` description
// refuses them (StatusInvalidState).
func (c *Config) AddArg(args ...string) error {
	for _, arg := range args {
		err := c.setString("qm_config_add_arg", "arg", arg, func(h *C.qm_config, s *C.char) C.enum_qm_status {
			return C.qm_config_add_arg(h, s)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// SetAccel chooses the accelerator (qm_config_set_accel).
func (c *Config) SetAccel(accel Accel) error {
	return c.do("qm_config_set_accel", func(h *C.qm_config) C.enum_qm_status {
		return C.qm_config_set_accel(h, C.int32_t(accel))
	})
}

// SetLaunchTimeout sets how long Launch waits for QMP to be ready (or QEMU to exit) before it
// fails with StatusTimeout, leaving nothing behind (qm_config_set_launch_timeout_ms; rounded
// up to milliseconds). Launch shortens it to its context's deadline when that comes sooner.
func (c *Config) SetLaunchTimeout(d time.Duration) error {
	const op = "qm_config_set_launch_timeout_ms"
	ms, err := msArg(op, "ms", d)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return closedError(op)
	}
	if err := call(op, func() C.enum_qm_status { return C.qm_config_set_launch_timeout_ms(c.h, ms) }); err != nil {
		return err
	}
	c.launchTimeout = time.Duration(ms) * time.Millisecond
	return nil
}

// SetQMPTimeout sets the machine's QMP timeout: how long a command waits for its reply when
// the context has no deadline, and the limit of the calls that take no context (RunState,
// Pause, Resume, Reset, ...) (qm_config_set_qmp_timeout_ms).
func (c *Config) SetQMPTimeout(d time.Duration) error {
	const op = "qm_config_set_qmp_timeout_ms"
	ms, err := msArg(op, "ms", d)
	if err != nil {
		return err
	}
	return c.do(op, func(h *C.qm_config) C.enum_qm_status { return C.qm_config_set_qmp_timeout_ms(h, ms) })
}

// SetConsole connects (or not) the guest's first serial port to a console the library drains,
// read with Machine.Console, Machine.ConsoleRead and Machine.ConsoleWaitFor
// (qm_config_set_console).
func (c *Config) SetConsole(enabled bool) error {
	return c.do("qm_config_set_console", func(h *C.qm_config) C.enum_qm_status {
		return C.qm_config_set_console(h, C.bool(enabled))
	})
}

// SetConsoleLog also writes every console byte to the file at path (created 0600, or an
// existing one truncated), even bytes dropped from the console buffer; it enables the console
// (qm_config_set_console_log).
func (c *Config) SetConsoleLog(path string) error {
	return c.setString("qm_config_set_console_log", "path", path, func(h *C.qm_config, s *C.char) C.enum_qm_status {
		return C.qm_config_set_console_log(h, s)
	})
}

// SetTempDir sets the directory under which each machine's private temp dir is made (default
// $TMPDIR, else /tmp) (qm_config_set_temp_dir).
func (c *Config) SetTempDir(dir string) error {
	return c.setString("qm_config_set_temp_dir", "dir", dir, func(h *C.qm_config, s *C.char) C.enum_qm_status {
		return C.qm_config_set_temp_dir(h, s)
	})
}

// AddFD passes a duplicate of conn's descriptor to QEMU at launch, in fdset fdset (`-add-fd`),
// with optional opaque text ("" for none) (qm_config_add_fd). The duplicate is made now: the
// caller may close conn at once. conn is an *os.File, a *net.UnixConn, a *net.TCPConn, ... (a
// raw descriptor: os.NewFile); a closed one is StatusInvalidArgument, nil StatusNullArgument.
func (c *Config) AddFD(conn syscall.Conn, fdset uint32, opaque string) error {
	const op = "qm_config_add_fd"
	copaque, err := newOptCString(op, "opaque", opaque)
	if err != nil {
		return err
	}
	defer copaque.free()
	return withFD(op, conn, func(fd C.int) error {
		return c.do(op, func(h *C.qm_config) C.enum_qm_status {
			return C.qm_config_add_fd(h, fd, C.uint32_t(fdset), copaque.p)
		})
	})
}

// withFD runs f with conn's descriptor, which stays open meanwhile (syscall.RawConn.Control).
func withFD(op string, conn syscall.Conn, f func(fd C.int) error) error {
	if conn == nil {
		return &Error{Op: op, Status: StatusNullArgument, Message: "argument `fd`: no descriptor (nil conn)"}
	}
	// A conn that has no usable descriptor (closed) is refused as the library refuses a
	// closed fd: StatusInvalidArgument.
	raw, err := conn.SyscallConn()
	if err != nil {
		return argError(op, "argument `fd`: "+err.Error())
	}
	var callErr error
	if err := raw.Control(func(fd uintptr) { callErr = f(C.int(fd)) }); err != nil {
		return argError(op, "argument `fd`: "+err.Error())
	}
	return callErr
}

// SetQtest adds (or not) a qtest channel, QEMU's device-test protocol, driven with the
// Machine's Qtest methods (qm_config_set_qtest).
func (c *Config) SetQtest(enabled bool) error {
	return c.do("qm_config_set_qtest", func(h *C.qm_config) C.enum_qm_status {
		return C.qm_config_set_qtest(h, C.bool(enabled))
	})
}

// SetQMP launches with (the default) or without the library's own QMP connection
// (qm_config_set_qmp). Without it, QMP calls are StatusUnsupported and Shutdown sends SIGTERM.
func (c *Config) SetQMP(enabled bool) error {
	return c.do("qm_config_set_qmp", func(h *C.qm_config) C.enum_qm_status {
		return C.qm_config_set_qmp(h, C.bool(enabled))
	})
}

// AddQMPListen adds a QMP server for another client at address, "unix:PATH" or
// "tcp:[HOST:]PORT" (HOST defaults to 127.0.0.1; port 0: QEMU picks one, see
// Machine.QMPListenAddresses) (qm_config_add_qmp_listen).
func (c *Config) AddQMPListen(address string) error {
	return c.setString("qm_config_add_qmp_listen", "address", address, func(h *C.qm_config, s *C.char) C.enum_qm_status {
		return C.qm_config_add_qmp_listen(h, s)
	})
}

// SetMonitorNull adds (or not) `-monitor null` (qm_config_set_monitor_null).
func (c *Config) SetMonitorNull(enabled bool) error {
	return c.do("qm_config_set_monitor_null", func(h *C.qm_config) C.enum_qm_status {
		return C.qm_config_set_monitor_null(h, C.bool(enabled))
	})
}

// SetConsoleDevice chooses the device that carries the console and enables the console
// (qm_config_set_console_device): deviceType "" is the machine's own serial port kind,
// "virtconsole" a virtio console, any other name a device type that takes a chardev
// ("isa-serial", "pci-serial", ...); index serial ports connected to nothing come first.
func (c *Config) SetConsoleDevice(deviceType string, index uint32) error {
	const op = "qm_config_set_console_device"
	cdev, err := newOptCString(op, "device_type", deviceType)
	if err != nil {
		return err
	}
	defer cdev.free()
	return c.do(op, func(h *C.qm_config) C.enum_qm_status {
		return C.qm_config_set_console_device(h, cdev.p, C.uint32_t(index))
	})
}

// SetConsolePTY puts the console on a pseudo-terminal QEMU makes, for another program to open
// (Machine.ConsolePTY gives its path); the console methods are then StatusUnsupported
// (qm_config_set_console_pty).
func (c *Config) SetConsolePTY(enabled bool) error {
	return c.do("qm_config_set_console_pty", func(h *C.qm_config) C.enum_qm_status {
		return C.qm_config_set_console_pty(h, C.bool(enabled))
	})
}

// SetName names the machine; its logs in the log dir are NAME.log and NAME-console.log
// (qm_config_set_name).
func (c *Config) SetName(name string) error {
	return c.setString("qm_config_set_name", "name", name, func(h *C.qm_config, s *C.char) C.enum_qm_status {
		return C.qm_config_set_name(h, s)
	})
}

// SetLogDir keeps the machine's logs in dir, where they stay after Close
// (qm_config_set_log_dir).
func (c *Config) SetLogDir(dir string) error {
	return c.setString("qm_config_set_log_dir", "dir", dir, func(h *C.qm_config, s *C.char) C.enum_qm_status {
		return C.qm_config_set_log_dir(h, s)
	})
}

// SetLaunchSettle sets, for a machine without QMP and qtest, how long QEMU must run without
// exiting for Launch to return (default 500 ms) (qm_config_set_launch_settle_ms).
func (c *Config) SetLaunchSettle(d time.Duration) error {
	const op = "qm_config_set_launch_settle_ms"
	ms, err := msArg(op, "ms", d)
	if err != nil {
		return err
	}
	return c.do(op, func(h *C.qm_config) C.enum_qm_status { return C.qm_config_set_launch_settle_ms(h, ms) })
}

// launch launches a machine from the config, its launch timeout shortened for this launch to
// ctx's deadline when that comes sooner.
func (c *Config) launch(ctx context.Context) (*C.qm_machine, error) {
	const op = "qm_machine_launch"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return nil, closedError(op)
	}
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, context.DeadlineExceeded
		}
		if left < c.launchTimeout {
			ms := C.uint64_t(durationMs(left))
			if err := call("qm_config_set_launch_timeout_ms", func() C.enum_qm_status {
				return C.qm_config_set_launch_timeout_ms(c.h, ms)
			}); err != nil {
				return nil, err
			}
			restore := C.uint64_t(c.launchTimeout / time.Millisecond)
			defer C.qm_config_set_launch_timeout_ms(c.h, restore)
		}
	}
	var m *C.qm_machine
	err := call(op, func() C.enum_qm_status { return C.qm_machine_launch(c.h, &m) })
	return m, err
}
