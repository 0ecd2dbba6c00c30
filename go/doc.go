// Package qemumachine launches and controls QEMU virtual machines over QMP. It wraps the C
// library libqemumachine (include/qemumachine.h of the qemu-machine project) with cgo. Each
// function of the header has a Go counterpart whose documentation names it, but for the
// last-error accessors and qm_string_free, which every call uses to build its *Error and to
// free what the library returns.
//
// # Getting it
//
// The package links libqemumachine through pkg-config (`#cgo pkg-config: qemumachine`), so
// the library must be installed first, for example into a private prefix:
//
//	scripts/install-lib.sh "$HOME/.local/qemumachine"   # from a checkout of qemu-machine
//	export PKG_CONFIG_PATH="$HOME/.local/qemumachine/lib/pkgconfig"
//	export LD_LIBRARY_PATH="$HOME/.local/qemumachine/lib" # at run time, unless the prefix is a system one
//
// The module path is qemu-machine.invalid/qemumachine. The project has no public hosting URL
// yet, and a Go module path names where the go command downloads it from; rather than invent a
// URL that could later belong to someone else, the path is under .invalid, a top-level domain
// reserved never to exist (RFC 2606, RFC 6761): the go command can never fetch other code
// under that name, and a build that has not been told where the module is fails at once. Tell
// it with a replace directive in the using module's go.mod (the directory is go/ in a checkout
// of qemu-machine):
//
//	require qemu-machine.invalid/qemumachine v0.1.0
//	replace qemu-machine.invalid/qemumachine => /path/to/qemu-machine/go
//
// `go mod vendor` then copies the package into the using module's vendor directory, and
// builds no longer need the checkout (they still need the installed library). Setting
// GOPRIVATE=qemu-machine.invalid keeps the go command from asking the module proxy about the
// name. When the project gets a public home, the module path will become that home's, a
// one-line change in go.mod and in the import lines.
//
// Linking: by default the program links libqemumachine.so (found at run time through the
// dynamic loader: a system prefix, LD_LIBRARY_PATH, or an rpath such as
// CGO_LDFLAGS=-Wl,-rpath,PREFIX/lib). Build with -tags qemumachine_static to link
// libqemumachine.a into the program instead; it then needs no libqemumachine.so at run time.
//
// # Use
//
//	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
//	defer cancel()
//	m, err := qemumachine.LaunchJSON(ctx, `{"args": ["-machine", "none"], "accel": "tcg"}`)
//	if err != nil {
//		return err
//	}
//	defer m.Close()
//	reply, err := m.Execute(ctx, "query-status", nil)   // json.RawMessage: {"status":"running",...}
//	_ = m.Pause()
//	ev, err := m.EventWait(ctx, "STOP", nil)            // an Event: Name, Data, Time
//	err = m.Shutdown(ctx)                               // quit; killed if it does not exit in time
//
// A Config (NewConfig, ConfigFromJSON) describes a launch; Launch, LaunchJSON, AttachUnix and
// AttachTCP give a Machine. Package functions cover the process guardian (GuardianStart), disk
// images (ImageInfo, ImageCreate, ImageResize, ImageConvert, ImageFlash, ImageFlashFrom) and
// versions (Version, CheckVersion).
//
// # Errors
//
// A failed call returns an *Error: the C function (Op), the status code (Status), the library's
// message, and QEMU's error class and description for a QMP error. Every Status is a sentinel
// for errors.Is:
//
//	_, err := m.Execute(ctx, "no-such-command", nil)
//	var qe *qemumachine.Error
//	if errors.As(err, &qe) && qe.Status == qemumachine.StatusQMPError {
//		fmt.Println(qe.QMPClass) // CommandNotFound
//	}
//	errors.Is(err, qemumachine.StatusQMPError) // true
//
// A timeout (StatusTimeout) also matches context.DeadlineExceeded. A Machine or Config used
// after Close returns ErrClosed. A string argument holding a NUL byte (which a C string cannot
// carry) is StatusInvalidArgument, refused before the library is called.
//
// # Deadlines
//
// Calls that wait take a context.Context. Its deadline becomes the C function's timeout
// argument; without a deadline the C function's default applies (30 s for waits, the
// machine's QMP timeout for commands; NextEvent and the Console reader wait until something
// comes, the machine exits or is closed, or ctx is cancelled). A context already done makes
// the call return ctx.Err() without calling the library.
//
// Cancelling a context during a call is honoured as follows. The waits that can be resumed
// without losing anything run in slices of at most 20 ms and return ctx.Err() within one slice
// of the cancellation: NextEvent, EventWait, EventsWait, ConsoleWaitFor, ConsoleWrite, the
// Console reader and writer, Wait, PowerWaitChange and QtestIRQs. The other calls (Execute, ExecuteOOB,
// ExecuteRaw, Shutdown, Powerdown, WaitOrKill, the qtest commands, the guest agent calls,
// AttachUnix, AttachTCP, Launch) are one C call each that cannot be abandoned safely half-way (a QMP reply that came
// later would be lost, a shutdown half done): they honour the context's deadline, not an
// earlier cancellation. Calls that take no context (RunState, Pause, Screendump, ...) are
// bounded by the machine's QMP timeout; Relaunch by the launch timeout of the machine's
// config; the image calls (ImageConvert, ImageFlash, Flash, Dump, ...) run qemu-img, which the
// library gives no timeout (the stream flashes end with their stream).
//
// # Goroutines
//
// A Machine (and a Config) may be used by several goroutines at once: the C handle is not
// thread-safe, so the Machine serializes its calls with a mutex. A sliced wait lets other calls
// in between its slices; the other calls hold the machine until they return. Different
// machines run in parallel. Close is idempotent, may be called while other goroutines use the
// machine, and makes their calls return ErrClosed.
//
// The library keeps its last error per OS thread; every call of this package runs its C call
// and reads the error with the goroutine locked to its thread (runtime.LockOSThread). QEMU is
// spawned by the library's process guardian, not by the calling thread: a machine launched by
// a goroutine that locked its thread and then ended (ending the thread) keeps running.
//
// # Events
//
// QEMU's events are kept by the library, in a bounded queue (max_events, 65536 by default),
// whichever call took them in. NextEvent is the iterator: it takes them one by one, oldest
// first, and loses none. When the queue was full, newer events were dropped by the library:
// NextEvent then returns, once the events kept before the overflow were taken, an *Error with
// StatusEventQueueFull, and EventsDropped counts the dropped ones. EventWait and EventsWait take
// the first event that matches a name and pattern, leaving the others kept.
//
// # Console
//
// With a console (Config.SetConsole), Machine.Console is an io.Reader and io.Writer on the
// guest's first serial port; ConsoleWaitFor waits for text in the output; ConsoleRead and
// ConsoleWrite are the non-blocking and deadline-bound primitives.
//
// # Guest agent
//
// A machine launched from a VM description with "guest_agent": true (a virtio-serial port for
// the QEMU guest agent, qemu-ga, on a channel the library owns) runs commands in its guest
// through the agent: GuestPing (also to wait for the agent after boot), GuestInfo,
// GuestOSInfo, GuestInterfaces (typed structs; members this package does not name are kept in
// their Extra maps), GuestExec (a program with its arguments and standard input; its exit
// code, signal and output), GuestCopyIn and GuestCopyOut (files, in chunks), GuestShutdown,
// and GuestExecute for any other agent command. An error the agent answers is
// StatusQMPError with the agent's class and description in QMPClass and QMPDesc; an agent that
// goes away during a call is StatusDisconnected; no agent answering by the deadline is
// StatusTimeout, after which the next call synchronizes with the agent again; a machine
// without the channel is StatusUnsupported.
//
// # Drives and power
//
// A machine launched from a `vm` description lists its drives (Drives: the root disk and
// other disks, BIOS, UEFI code and variables, by name). While QEMU is stopped (after Shutdown
// or a guest power-off), Flash writes an image file into a drive (any format qemu-img reads,
// optionally gzip, xz, bzip2 or zstd compressed), FlashFrom a stream, Dump reads a drive into
// a file, and Relaunch starts QEMU again, with the same description or a new one, keeping
// what the disks hold. PowerState reports PowerRunning, PowerPaused or PowerOff;
// PowerWaitChange (a sliced wait) reports each change after it. ImageFlash and ImageFlashFrom
// flash any image file. The stream variants take a Descriptor, such as an *os.File, which stays
// the caller's: the library reads a duplicate of its descriptor, waiting for data as it comes.
// Progress callbacks run on the calling goroutine, during the call; a panic in one is
// re-raised once the call has returned.
//
// # Memory
//
// Every string and buffer the library returns is copied into Go memory and freed with
// qm_string_free at once. No Go pointer is kept by the library: arguments are copied (C strings
// are freed after the call), buffers are passed only for the duration of a call, and the
// progress callbacks get a runtime/cgo.Handle, not a pointer.
package qemumachine
