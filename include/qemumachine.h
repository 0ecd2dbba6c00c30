/*
 * qemumachine.h: launch and control QEMU virtual machines over QMP (libqemumachine).
 *
 * RULES (each function's comment adds its own details)
 *
 * Status and errors. Every function that can fail returns a qm_status; QM_STATUS_OK is 0. A
 * failure leaves a message in the calling thread's last error (qm_last_error_message()), and
 * QEMU's error class and description for QM_STATUS_QMP_ERROR. Each such call clears the last
 * error when it starts; qm_config_free(), qm_machine_free() and the qm_last_error_*() functions
 * leave it alone. A NULL where a pointer is required is QM_STATUS_NULL_ARGUMENT, a stale or
 * foreign handle QM_STATUS_INVALID_HANDLE: never a crash. No panic unwinds into C.
 *
 * Threads. The library starts no threads. A handle (qm_config *, qm_machine *) is not
 * thread-safe: use it from one thread at a time. It may move between threads, and a machine
 * keeps running when the thread that launched it exits. A call on a handle that another
 * thread's call is using fails with QM_STATUS_INVALID_HANDLE ("in use") instead of running
 * concurrently; freeing a handle meanwhile invalidates it at once and frees it when that call
 * returns. Different handles may be used from different threads at the same time. The last
 * error is per thread. Progress callbacks (qm_image_convert(), the flashes and dumps) run on
 * the calling thread, during the call.
 *
 * Processes. QEMU (and qemu-img) is not a child of the program: it is spawned by the process
 * guardian, a small single-threaded child of the program ("qm-guardian" in ps) forked on the
 * first launch or by qm_guardian_start(), which lives as long as the program. A program that
 * waits for all of its children, or counts them, sees the guardian: do not wait for it to
 * exit. A child the program forks without exec inherits the descriptors that tie the guardian
 * to the program, so the clean-up below also waits for that child to exit. The guardian and
 * each QEMU lead process groups of their own: a signal to the program's process group (Ctrl-C
 * at its terminal) reaches neither; what to do about it is the program's choice.
 *
 * What is killed, and when. qm_machine_free() of a running machine kills QEMU's process group
 * with SIGKILL (never a graceful shutdown), reaps QEMU (waiting at most 10 s for the kernel to
 * finish it) and removes its temp dir; logs in a log dir (qm_config_set_log_dir()) stay.
 * qm_machine_shutdown() sends `quit` (SIGTERM to a machine launched without QMP), waits, then
 * does the same if QEMU is still there; qm_machine_wait_or_kill() waits, then does the same.
 * If the program dies in any way, SIGKILL included,
 * the guardian kills every QEMU's process group and removes every temp dir within moments.
 * What a `wrapper` forks is in QEMU's process group, and goes with it. An attached machine
 * (qm_machine_attach_*()) is not the library's to kill: freeing it only disconnects.
 *
 * Signals. The library installs no signal handler and changes no signal disposition or mask
 * of the program. QEMU's exit reaches the library through the guardian, not through SIGCHLD:
 * a program that ignores SIGCHLD, or reaps with waitpid(-1), does not take it away. The
 * library never raises SIGPIPE: it writes to no pipe and sends on sockets with MSG_NOSIGNAL (a
 * peer that has gone is QM_STATUS_PROCESS_EXITED or QM_STATUS_DISCONNECTED).
 *
 * Timeouts. A function that waits takes `int64_t timeout_ms`: QM_TIMEOUT_DEFAULT (-1) means
 * its default, named in its comment; any other negative value is QM_STATUS_INVALID_ARGUMENT;
 * 0 means do not wait: the call takes what is already there (kept events, output QEMU has
 * sent) and fails with QM_STATUS_TIMEOUT if that is not enough; a positive value limits the
 * whole call, in milliseconds. A call that times out leaves the machine usable: a reply that
 * comes later is discarded.
 *
 * Strings. Arguments are NUL-terminated. Paths (but a screenshot's, which QMP carries as
 * text), QEMU arguments (qm_config_add_arg()) and console patterns may hold any bytes. Command
 * names, event names, formats, addresses, fd names and other names must be UTF-8, else
 * QM_STATUS_INVALID_ARGUMENT naming the argument; JSON text must be UTF-8 JSON, else
 * QM_STATUS_INVALID_JSON. The library returns JSON text and messages in UTF-8, paths as their
 * bytes, and QEMU's log and console output as they were written (any bytes, not necessarily
 * UTF-8, possibly holding NUL bytes): with their length, and NUL-terminated when the library
 * allocates them (qm_machine_log(), qm_machine_console_wait_for()).
 *
 * Memory. A string or buffer the library returns through a `char **` is allocated by the
 * library, NUL-terminated, and freed by the caller with qm_string_free(). `const char *`
 * results (qm_status_name(), qm_version_string()) are static: never free them. Read
 * out-parameters only after QM_STATUS_OK, unless a function's comment says otherwise. The
 * library keeps no pointer into the caller's memory after a call returns: it copies strings
 * and duplicates descriptors it is given. Handles are freed with qm_config_free() and
 * qm_machine_free(), which ignore NULL and handles already freed.
 */

#ifndef QEMUMACHINE_H
#define QEMUMACHINE_H

/* Generated by cbindgen from the qemu-ffi crate. Do not edit: see qemu-ffi/tests/header.rs. */

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* The version of the header; compare QM_VERSION_NUMBER with qm_version() at run time. */
#define QM_VERSION_MAJOR 0
#define QM_VERSION_MINOR 1
#define QM_VERSION_PATCH 0
#define QM_VERSION_NUMBER ((QM_VERSION_MAJOR * 10000) + (QM_VERSION_MINOR * 100) + QM_VERSION_PATCH)


// The `timeout_ms` that means "this function's default", which each function's documentation
// names (the machine's QMP timeout for commands, 30 s for the other waits). Any other negative
// timeout is `QM_STATUS_INVALID_ARGUMENT`; 0 means "do not wait"; a positive value is a limit in
// milliseconds (see "Timeouts" at the top of this header).
#define QM_TIMEOUT_DEFAULT -1

// The result of a `qm_*` call. `QM_STATUS_OK` (0) is success; every other value is a failure
// whose message can be read with `qm_last_error_message()` on the same thread.
//
// The numbers are part of the ABI: they are never reused or renumbered, new codes are only added.
typedef enum qm_status {
  // The call succeeded.
  QM_STATUS_OK = 0,
  // A required pointer argument was NULL.
  QM_STATUS_NULL_ARGUMENT = 1,
  // An argument had a value outside its allowed range or form (an unknown enum value, a
  // string that must be UTF-8 and is not, a negative timeout other than
  // `QM_TIMEOUT_DEFAULT`, a file that does not exist, ...); the message names the argument.
  QM_STATUS_INVALID_ARGUMENT = 2,
  // A JSON document passed in could not be parsed or did not have the expected shape.
  QM_STATUS_INVALID_JSON = 3,
  // The operation did not complete before its deadline.
  QM_STATUS_TIMEOUT = 4,
  // QEMU answered a QMP command (or the guest agent a `qm_machine_guest_*()` call) with an
  // error; its class and description are available via `qm_last_error_qmp_class()` and
  // `qm_last_error_qmp_desc()`.
  QM_STATUS_QMP_ERROR = 5,
  // The QMP connection was closed (by QEMU, which may be exiting), or the guest agent went
  // away during a `qm_machine_guest_*()` call (its port closed in the guest).
  QM_STATUS_DISCONNECTED = 6,
  // The QEMU process has exited (its status: `qm_machine_exit_status()`).
  QM_STATUS_PROCESS_EXITED = 7,
  // QEMU could not be started, or exited before QMP was ready.
  QM_STATUS_LAUNCH_FAILED = 8,
  // An operating-system call failed.
  QM_STATUS_IO = 9,
  // A panic inside the library was caught at the C boundary. This is a bug in the library.
  QM_STATUS_PANIC = 10,
  // A handle that is not a live handle of the expected type was passed: already freed (a
  // freed handle stays invalid for good), never created by this library, or a `qm_config`
  // where a `qm_machine` is expected; or a handle in use by another thread's call.
  QM_STATUS_INVALID_HANDLE = 11,
  // QEMU sent something that violates the QMP protocol, or a reply larger than the bound on
  // one QMP message (10 MiB by default; the message names the reply's size and the bound, and
  // the machine stays usable: the next command works).
  QM_STATUS_PROTOCOL = 12,
  // A shutdown had to fall back to killing QEMU.
  QM_STATUS_NOT_GRACEFUL = 13,
  // The QEMU (or qemu-img) binary could not be found or executed.
  QM_STATUS_BINARY_NOT_FOUND = 14,
  // Events were dropped because the bound on kept events was reached (reported once by
  // `qm_machine_event_wait()`); take events with `qm_machine_events()` to make room.
  QM_STATUS_EVENT_QUEUE_FULL = 15,
  // A disk image operation (`qemu-img`) failed.
  QM_STATUS_IMAGE = 16,
  // The operation is not valid in the handle's current state: the exit status of a QEMU
  // still running, a setter on a configuration with a `vm` description, out-of-band
  // execution without oob negotiated, ...
  QM_STATUS_INVALID_STATE = 17,
  // The operation does not apply to this machine (the console of a machine without one,
  // killing an attached machine, a VNC socket without VNC, ...).
  QM_STATUS_UNSUPPORTED = 18,
  // A qtest command failed: QEMU answered `FAIL` or `ERR`; the message names the line sent
  // and QEMU's answer (a line the library refuses to send, because QEMU would abort on it,
  // is `QM_STATUS_INVALID_ARGUMENT`).
  QM_STATUS_QTEST_ERROR = 19,
} qm_status;

// The accelerator values `qm_config_set_accel()` takes.
typedef enum qm_accel {
  // KVM when `/dev/kvm` is usable and the guest matches the host, else TCG; the environment
  // variable `QEMU_MACHINE_ACCEL` overrides it. Adds nothing when the arguments choose an
  // accelerator themselves (`-accel`, `-machine accel=`, `-enable-kvm`).
  QM_ACCEL_AUTO = 0,
  // `-accel kvm`.
  QM_ACCEL_KVM = 1,
  // `-accel tcg`.
  QM_ACCEL_TCG = 2,
  // No `-accel` argument: the arguments decide.
  QM_ACCEL_NONE = 3,
} qm_accel;

// The power states `qm_machine_power_state()` and `qm_machine_power_wait_change()` report.
typedef enum qm_power {
  // QEMU is not running (it exited; or, attached, its connection closed), or the guest
  // powered off and QEMU stays (`-no-shutdown`).
  QM_POWER_OFF = 0,
  // The guest runs.
  QM_POWER_RUNNING = 1,
  // QEMU runs with the guest stopped (paused, started paused, an error stop, ...).
  QM_POWER_PAUSED = 2,
} qm_power;

// A launch configuration. Create it with `qm_config_new()` or `qm_config_from_json()`, free it
// with `qm_config_free()`. Not thread-safe: use a config from one thread at a time (it may move
// between threads).
typedef struct qm_config qm_config;

// A QEMU process launched by this library, or one it attached to over QMP. Free it with
// `qm_machine_free()`, which kills and reaps a launched QEMU if it still runs and removes its
// temp dir. Not thread-safe: use a machine from one thread at a time (it may move between
// threads).
typedef struct qm_machine qm_machine;

// A progress callback: `fraction` goes from 0.0 to 1.0 (reached when the operation succeeds)
// and never decreases; `user_data` is the pointer given with the callback. It is called on the
// thread that called the library, during that call, never after it returned.
typedef void (*qm_progress_fn)(double fraction, void *user_data);

// A stream flash's progress callback: `bytes_read` is how much has been read from the stream
// (it grows; the stream's length is not known), `converted` how much of the conversion into
// the target's format is done once the stream has been read: 0.0 before, 1.0 when the flash
// succeeded (also when nothing needed converting). Neither decreases. `user_data` is the
// pointer given with the callback. It is called on the thread that called the library, during
// that call, never after it returned.
typedef void (*qm_stream_progress_fn)(uint64_t bytes_read, double converted, void *user_data);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// Creates a configuration that runs `qemu-system-x86_64` (looked up in `PATH`) with no
// arguments, the accelerator chosen automatically (`QM_ACCEL_AUTO`), a launch timeout and a QMP
// command timeout of 30 s each, no console, and at most 65536 kept events.
//
// # Safety
// `out` must be NULL or valid for writing a pointer.
enum qm_status qm_config_new(struct qm_config **out);

// Creates a configuration from a JSON object (UTF-8; the JSON form of qemu-process's
// `MachineConfig`). Every field is optional:
// `binary` (path or name), `args` (array of strings), `accel` (`"auto"`, `"kvm"`, `"tcg"`,
// `"none"`), `temp_dir`, `launch_timeout_ms`, `qmp_timeout_ms`, `console` (bool),
// `console_log` (path), `console_buffer_bytes`, `console_input_buffer_bytes`, `max_events`,
// `wrapper` (array of strings: a command QEMU's command line is appended to), `env` (object of
// strings, added to QEMU's environment; `null` removes a variable), `oob` (bool: negotiate
// out-of-band execution, default true), `qmp_ids` (bool: an id with every command, default
// false), `display_none` (bool: add `-display none`, default true), `max_message_size` (bytes),
// `qmp` (bool: the library's own QMP connection, default true), `qmp_listen` (array of
// `"unix:PATH"` / `"tcp:[HOST:]PORT"`: QMP servers for other clients), `monitor_null` (bool),
// `console_device` (a device type, or `"virtconsole"`), `console_index`, `console_pty` (bool),
// `qtest` (bool), `name`, `log_dir`, `launch_settle_ms` (see the matching setters below),
// and `vm`: a VM description (`arch`, `memory`, `smp`, `kernel`, `disks`, `nics`, `forwards`,
// `cloud_init`, `vnc`, `uefi`, `guest_agent` (a port for the guest agent, for the
// `qm_machine_guest_*()` functions), ...) that the library turns into a command line, preparing
// disks, the cloud-init seed and firmware copies itself; with `vm`, `args` and `display_none`
// are not allowed. Unknown fields, and JSON that is not valid, are `QM_STATUS_INVALID_JSON`
// with a message naming what is wrong.
//
// The setters below (`qm_config_set_*`, `qm_config_add_*`) change the same fields;
// `qm_config_add_arg()` is refused on a configuration with `vm` (`QM_STATUS_INVALID_STATE`).
//
// # Safety
// `json` must be NULL or a NUL-terminated string; `out` NULL or valid for writing a pointer.
enum qm_status qm_config_from_json(const char *json, struct qm_config **out);

// Sets the QEMU binary: a path (any bytes), or a name looked up in `PATH`. A binary that cannot
// be found or executed makes `qm_machine_launch()` fail with `QM_STATUS_BINARY_NOT_FOUND`.
//
// # Safety
// `config` must be a handle from this library or NULL; `path` NULL or NUL-terminated.
enum qm_status qm_config_set_binary(struct qm_config *config, const char *path);

// Appends one argument (any bytes) to QEMU's command line, passed as is: no shell, no
// splitting, no quoting needed.
//
// # Safety
// `config` must be a handle from this library or NULL; `arg` NULL or NUL-terminated.
enum qm_status qm_config_add_arg(struct qm_config *config, const char *arg);

// Chooses the accelerator: one of the `qm_accel` values, given as an integer; anything else is
// `QM_STATUS_INVALID_ARGUMENT`.
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_accel(struct qm_config *config, int32_t accel);

// Sets the launch deadline, in milliseconds: how long `qm_machine_launch()` waits for QMP to be
// negotiated (or QEMU to exit) before it fails with `QM_STATUS_TIMEOUT`, leaving nothing behind.
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_launch_timeout_ms(struct qm_config *config, uint64_t ms);

// Sets the machine's QMP timeout, in milliseconds: what `qm_machine_execute()` with
// `QM_TIMEOUT_DEFAULT` waits for a reply, and the limit of the commands other functions run
// (`qm_machine_status()`, `qm_machine_pause()`, ...).
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_qmp_timeout_ms(struct qm_config *config, uint64_t ms);

// Connects (or not) the guest's first serial port to a console the library drains, readable
// with `qm_machine_console_read()`.
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_console(struct qm_config *config, bool enabled);

// Also writes every console byte to the file at `path` (any bytes; created owner-only, mode
// 0600, or an existing one truncated, keeping its mode), even bytes dropped from the console
// buffer; enables the console.
//
// # Safety
// `config` must be a handle from this library or NULL; `path` NULL or NUL-terminated.
enum qm_status qm_config_set_console_log(struct qm_config *config, const char *path);

// Sets the directory (any bytes) under which each machine's private temp dir is made (default
// `$TMPDIR`, else `/tmp`). The temp dir holds QEMU's log and sockets; it is removed when the
// machine is freed, or by the guardian if the program dies.
//
// # Safety
// `config` must be a handle from this library or NULL; `dir` NULL or NUL-terminated.
enum qm_status qm_config_set_temp_dir(struct qm_config *config, const char *dir);

// Passes a duplicate of `fd` to QEMU at launch, in fdset `fdset` (`-add-fd`), with optional
// `opaque` text (UTF-8, NULL for none). The duplicate is made now: the caller keeps its own
// `fd` and may close it at once. A negative or closed `fd` is `QM_STATUS_INVALID_ARGUMENT`.
//
// # Safety
// `config` must be a handle from this library or NULL; `opaque` NULL or NUL-terminated.
enum qm_status qm_config_add_fd(struct qm_config *config,
                                int fd,
                                uint32_t fdset,
                                const char *opaque);

// Frees a configuration. Machines launched from it are not affected. NULL, a handle already
// freed (it stays invalid for good, even after new handles are made), one not created by this
// library and a `qm_machine` are ignored.
//
// Never changes the calling thread's last error, so it can run between a failing call and the
// reading of that call's error.
//
// # Safety
// Any value is accepted: `config` is looked up among the live handles, never dereferenced.
void qm_config_free(struct qm_config *config);

// The status of the calling thread's last failing `qm_*` call, or `QM_STATUS_OK` if the last
// call on this thread succeeded (every fallible call clears the previous error when it starts;
// the `*_free` functions and the error accessors leave it alone).
enum qm_status qm_last_error_status(void);

// Copies the message of the calling thread's last error into `buf` (`len` bytes, always
// NUL-terminated when `len > 0`, truncated if needed) and returns the message's full length
// without the NUL, like `snprintf`: call with `buf = NULL, len = 0` to learn the size.
// Returns 0 (and writes an empty string) when there is no error.
//
// # Safety
// `buf` must be NULL or valid for writes of `len` bytes.
size_t qm_last_error_message(char *buf, size_t len);

// Returns a newly allocated copy of the calling thread's last error message, or NULL when there
// is none. Free it with `qm_string_free()`.
char *qm_last_error_message_dup(void);

// Copies the QMP error class (e.g. `"GenericError"`, `"CommandNotFound"`) of the calling
// thread's last error into `buf`, with the semantics of `qm_last_error_message()`. Returns 0
// when the last error was not a QMP error.
//
// # Safety
// `buf` must be NULL or valid for writes of `len` bytes.
size_t qm_last_error_qmp_class(char *buf, size_t len);

// Copies the QMP error description (`desc`) of the calling thread's last error into `buf`,
// with the semantics of `qm_last_error_message()`. Returns 0 when the last error was not a
// QMP error.
//
// # Safety
// `buf` must be NULL or valid for writes of `len` bytes.
size_t qm_last_error_qmp_desc(char *buf, size_t len);

// The name of a status code as a static NUL-terminated string (e.g. `"QM_STATUS_TIMEOUT"`),
// or `"QM_STATUS_UNKNOWN"` for a number this library does not define. Never NULL; do not free.
const char *qm_status_name(int32_t status);

// Frees a string (or byte buffer) returned by this library. NULL is accepted and ignored.
//
// # Safety
// `s` must be NULL or a pointer returned by a `qm_*` function documented as "free it with
// `qm_string_free()`", not freed before.
void qm_string_free(char *s);

// Starts this process's guardian now, if it does not run yet, and stores its pid in
// `*out_pid` if `out_pid` is not NULL. Calling it again gives the same pid.
//
// The guardian is the small child process that spawns every QEMU and qemu-img the library
// runs, and kills them and removes their temp dirs when the program dies (see "Processes" at
// the top of this header). The first launch starts it otherwise. It is forked from the program
// as the program is at that moment, which costs more the more memory the program has mapped:
// a large program may call this early, while it is small.
//
// # Safety
// `out_pid` must be NULL or valid for writing an `int32_t`.
enum qm_status qm_guardian_start(int32_t *out_pid);

// The pid of this process's guardian, or 0 if none was started yet. Leaves the last error
// alone.
int32_t qm_guardian_pid(void);

// Asks the guest agent of `machine` whether it runs (`guest-ping`), waiting up to
// `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s) for its answer.
//
// This and every `qm_machine_guest_*()` function: the machine must have been launched from a
// VM description with `"guest_agent": true` (a virtio-serial port named
// `org.qemu.guest_agent.0` on a socketpair the library owns), else `QM_STATUS_UNSUPPORTED`.
// Before the first call, and after anything that may have desynchronized the stream (a
// timeout, the agent restarting, the guest rebooting), the library synchronizes with the agent
// (`guest-sync-delimited`), within the same timeout. A guest with no agent running is
// `QM_STATUS_TIMEOUT`, never a hang; an error the agent answers is `QM_STATUS_QMP_ERROR`
// with its class and description in `qm_last_error_qmp_class()` / `qm_last_error_qmp_desc()`;
// an agent that goes away during the call (its port closed) is `QM_STATUS_DISCONNECTED`, and
// `QM_STATUS_PROCESS_EXITED` once QEMU has exited. One answer is bounded like a QMP message
// (`max_message_size`, 10 MiB by default): a larger one is `QM_STATUS_PROTOCOL`, and the next
// call works. QMP events and console output that arrive meanwhile are kept. To wait for an
// agent to come up, ping with a long enough timeout.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_guest_ping(struct qm_machine *machine, int64_t timeout_ms);

// Stores the guest agent's `guest-info` (`{"version": "7.2.22", "supported_commands":
// [{"name", "enabled", "success-response"}, ...]}`) as JSON in `*out_json` (free with
// `qm_string_free()`). Timeout and errors as for `qm_machine_guest_ping()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_guest_info(struct qm_machine *machine,
                                     int64_t timeout_ms,
                                     char **out_json);

// Stores the guest's operating system as its agent reports it (`guest-get-osinfo`: members
// such as `kernel-release`, `machine`, `id`, `version-id`, `pretty-name`, each present only
// when known) as a JSON object in `*out_json` (free with `qm_string_free()`). Timeout and
// errors as for `qm_machine_guest_ping()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_guest_osinfo(struct qm_machine *machine,
                                       int64_t timeout_ms,
                                       char **out_json);

// Stores the guest's network interfaces (`guest-network-get-interfaces`: an array of
// `{"name", "hardware-address", "ip-addresses": [{"ip-address", "ip-address-type", "prefix"}],
// "statistics"}`) as JSON in `*out_json` (free with `qm_string_free()`). Timeout and errors
// as for `qm_machine_guest_ping()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_guest_interfaces(struct qm_machine *machine,
                                           int64_t timeout_ms,
                                           char **out_json);

// Runs any guest agent command `command` (UTF-8) with `arguments_json` (a JSON object, or NULL
// for none; anything else is `QM_STATUS_INVALID_JSON`) and stores its `return` value as JSON
// in `*out_json` if `out_json` is not NULL (free with `qm_string_free()`). A name that cannot
// be a command is `QM_STATUS_INVALID_ARGUMENT` before anything is sent, and so are
// `guest-shutdown` (use `qm_machine_guest_shutdown()`: it answers nothing on success) and the
// synchronization commands, which are the library's. Timeout and errors as for
// `qm_machine_guest_ping()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `command` and `arguments_json` NULL or
// NUL-terminated; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_guest_execute(struct qm_machine *machine,
                                        const char *command,
                                        const char *arguments_json,
                                        int64_t timeout_ms,
                                        char **out_json);

// Runs a program in the guest through its agent (`guest-exec`) and waits for it to end.
//
// `argv_json` is a JSON array of strings (UTF-8): the program (a path in the guest, or a name
// the agent looks up in its `PATH`) and its arguments, e.g. `["/bin/sh", "-c", "uname -r"]`;
// anything else is `QM_STATUS_INVALID_JSON`. The program reads `input_len` bytes from `input`
// on its standard input (`input` may be NULL when `input_len` is 0: an empty input).
// `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s) limits the whole call; on `QM_STATUS_TIMEOUT` the
// program may still run in the guest.
//
// On success: `*out_exit_code` receives its exit code (-1 when a signal ended it),
// `*out_signal` that signal (0 when none), and `*out_stdout` / `*out_stderr` what it wrote,
// as written (any bytes, NUL-terminated by the library; free with `qm_string_free()`), with
// their lengths in `*out_stdout_len` / `*out_stderr_len`. Every out-pointer may be NULL when
// the value is not wanted. Output is captured by the agent (qemu-ga keeps at most 16 MiB of
// each stream) and comes back in one answer, bounded like a QMP message: output larger than
// about 7 MiB in all is `QM_STATUS_PROTOCOL` (write it to a file and use
// `qm_machine_guest_copy_out()`). Errors otherwise as for `qm_machine_guest_ping()`; a
// program the agent cannot start is `QM_STATUS_QMP_ERROR`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `argv_json` NULL or NUL-terminated;
// `input` valid for `input_len` bytes (or NULL with 0); each out-pointer NULL or valid for
// writing.
enum qm_status qm_machine_guest_exec(struct qm_machine *machine,
                                     const char *argv_json,
                                     const uint8_t *input,
                                     size_t input_len,
                                     int64_t timeout_ms,
                                     int64_t *out_exit_code,
                                     int32_t *out_signal,
                                     char **out_stdout,
                                     size_t *out_stdout_len,
                                     char **out_stderr,
                                     size_t *out_stderr_len);

// Copies the host file `host_path` (any bytes) into the file `guest_path` in the guest
// (UTF-8: the agent's protocol carries text; created or truncated) through the guest agent,
// in chunks of 256 KiB, never holding the whole file in memory; `*out_bytes` (if not NULL)
// receives how many bytes were copied. `timeout_ms` limits the whole copy;
// `QM_TIMEOUT_DEFAULT` sets no limit on the whole, and 30 s on each chunk (each call to the
// agent). A host file that cannot be opened is `QM_STATUS_IO`; errors otherwise as for
// `qm_machine_guest_ping()` (the guest file may then be partly written).
//
// # Safety
// `machine` must be a handle from this library or NULL; `host_path` and `guest_path` NULL or
// NUL-terminated; `out_bytes` NULL or valid for writing.
enum qm_status qm_machine_guest_copy_in(struct qm_machine *machine,
                                        const char *host_path,
                                        const char *guest_path,
                                        int64_t timeout_ms,
                                        uint64_t *out_bytes);

// Copies the file `guest_path` in the guest (UTF-8) into the host file `host_path` (any bytes;
// created with mode 0600, or truncated) through the guest agent, in chunks of 256 KiB, never
// holding the whole file in memory; `*out_bytes` (if not NULL) receives how many bytes were
// copied. Timeout and errors as for `qm_machine_guest_copy_in()` (the host file may then be
// partly written).
//
// # Safety
// `machine` must be a handle from this library or NULL; `guest_path` and `host_path` NULL or
// NUL-terminated; `out_bytes` NULL or valid for writing.
enum qm_status qm_machine_guest_copy_out(struct qm_machine *machine,
                                         const char *guest_path,
                                         const char *host_path,
                                         int64_t timeout_ms,
                                         uint64_t *out_bytes);

// Asks the guest to power down, reboot or halt through its agent (`guest-shutdown`): `mode`
// is `"powerdown"` (also when NULL), `"reboot"` or `"halt"`; anything else is
// `QM_STATUS_INVALID_ARGUMENT`. The agent answers nothing when it succeeds, so the library
// sends a `guest-ping` behind it and returns `QM_STATUS_OK` when that is answered with no
// error before it, or when the guest shows it is going down (its agent's port closes, QEMU
// reports `SHUTDOWN` or `RESET`, or exits); an error answer is `QM_STATUS_QMP_ERROR`;
// neither within `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s) is `QM_STATUS_TIMEOUT`. Then
// wait for what follows with `qm_machine_event_wait()`: `SHUTDOWN` (and QEMU's exit,
// `qm_machine_wait()`) after a power-down, `RESET` after a reboot; a halted guest makes QEMU
// report nothing.
//
// # Safety
// `machine` must be a handle from this library or NULL; `mode` NULL or NUL-terminated.
enum qm_status qm_machine_guest_shutdown(struct qm_machine *machine,
                                         const char *mode,
                                         int64_t timeout_ms);

// Describes the image at `path` (any bytes; `qemu-img info`) as a JSON object with `filename`,
// `format`, `virtual-size`, `actual-size`, `dirty-flag`, `backing-filename`, `snapshots`,
// `backing-chain`, ... in `*out_json` (free with `qm_string_free()`). A missing file is
// `QM_STATUS_INVALID_ARGUMENT` naming it; `QM_STATUS_IMAGE` when qemu-img fails (the message
// holds its command line and output).
//
// # Safety
// `path` must be NULL or NUL-terminated; `out_json` NULL or valid for writing.
enum qm_status qm_image_info(const char *path, char **out_json);

// Creates an image of `format` (`"qcow2"`, `"raw"`, ...; UTF-8, an unknown name is
// `QM_STATUS_INVALID_ARGUMENT`) and `size_bytes` at `path` (any bytes).
//
// # Safety
// `path` and `format` must be NULL or NUL-terminated.
enum qm_status qm_image_create(const char *path, const char *format, uint64_t size_bytes);

// Resizes the image at `path` (any bytes) to `size_bytes`. Shrinking (which loses data) happens
// only when `allow_shrink` is true (else `QM_STATUS_INVALID_ARGUMENT`); growing past the free
// space of its file system is refused (`QM_STATUS_IMAGE`).
//
// # Safety
// `path` must be NULL or NUL-terminated.
enum qm_status qm_image_resize(const char *path, uint64_t size_bytes, bool allow_shrink);

// Converts the image at `src` into a new image at `dst` (paths: any bytes) of `dst_format`,
// calling `progress(fraction, user_data)` as it goes (`progress` may be NULL), on the calling
// thread, before the call returns. `dst` is replaced only when the conversion succeeded: a
// failed one leaves an existing `dst` as it was.
//
// # Safety
// `src`, `dst` and `dst_format` must be NULL or NUL-terminated; `progress`, if not NULL, must be
// safe to call with `user_data`.
enum qm_status qm_image_convert(const char *src,
                                const char *dst,
                                const char *dst_format,
                                qm_progress_fn progress,
                                void *user_data);

// Writes the image at `source` (any bytes; any format qemu-img reads, optionally gzip, xz,
// bzip2 or zstd compressed, recognised by its content, not its name) into `target` (any bytes)
// as `format` (UTF-8; NULL: an existing target's own format, else raw), replacing `target`
// only when the flash succeeded, calling `progress(fraction, user_data)` as it goes (may be
// NULL). The target's virtual size becomes the image's: grow it with `qm_image_resize()` if
// needed. `QM_STATUS_INVALID_ARGUMENT` for a missing source; `QM_STATUS_IMAGE` when qemu-img
// or the decompressor fails; a missing decompressor is `QM_STATUS_BINARY_NOT_FOUND` naming the
// package to install.
//
// # Safety
// `source`, `target` and `format` must be NULL or NUL-terminated (`format` may be NULL);
// `progress`, if not NULL, must be safe to call with `user_data`.
enum qm_status qm_image_flash(const char *source,
                              const char *target,
                              const char *format,
                              qm_progress_fn progress,
                              void *user_data);

// Like `qm_image_flash()`, from the stream open on `fd` (a pipe, a socket, standard input),
// read once, front to back, until its end: a compressed stream is decompressed on the fly, a
// raw image into a raw target written as it comes, anything else converted once read. The
// descriptor is duplicated for the call and stays the caller's (not closed; reading moves its
// offset). `progress(bytes_read, converted, user_data)` reports the bytes read, then the
// conversion (see `qm_stream_progress_fn`; may be NULL). A non-blocking descriptor is waited
// on until data or its end comes, like a blocking one. A descriptor that is not open is
// `QM_STATUS_INVALID_ARGUMENT`; a read error `QM_STATUS_IO`.
//
// # Safety
// `target` and `format` must be NULL or NUL-terminated (`format` may be NULL); `progress`, if
// not NULL, must be safe to call with `user_data`.
enum qm_status qm_image_flash_fd(int fd,
                                 const char *target,
                                 const char *format,
                                 qm_stream_progress_fn progress,
                                 void *user_data);

// Launches QEMU as `config` describes and waits (under the config's launch timeout) until QMP
// is negotiated. QEMU is spawned by the process guardian (started now if it does not run yet),
// leads a process group of its own, and has a private temp dir. On failure nothing is left
// behind (no process, no temp dir): `QM_STATUS_LAUNCH_FAILED` when QEMU exits first (the message
// holds its exit status, command line and output), `QM_STATUS_BINARY_NOT_FOUND` when the binary
// cannot be found or executed, `QM_STATUS_TIMEOUT` when the launch timeout runs out. The config
// is left as it was, and may launch more machines.
//
// # Safety
// `config` must be a handle from this library or NULL; `out` NULL or valid for a pointer.
enum qm_status qm_machine_launch(const struct qm_config *config, struct qm_machine **out);

// Connects to the QMP server of a QEMU that is already running, at the unix socket `path` (any
// bytes), retrying while the connection is refused or the socket does not exist yet, and
// negotiates QMP, all within `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: one attempt, which
// normally ends in `QM_STATUS_TIMEOUT` since negotiating takes a round trip). The machine is not
// owned: `qm_machine_free()` only disconnects; `qm_machine_shutdown()`, `qm_machine_kill()` and
// `qm_machine_wait()` are `QM_STATUS_UNSUPPORTED` (execute `quit` instead); `qm_machine_pid()`
// gives 0. Its QMP timeout is 30 s.
//
// # Safety
// `path` must be NULL or NUL-terminated; `out` NULL or valid for a pointer.
enum qm_status qm_machine_attach_unix(const char *path,
                                      int64_t timeout_ms,
                                      struct qm_machine **out);

// Like `qm_machine_attach_unix()`, for a QMP server on TCP at `address`, an `"IP:PORT"` string
// (`"127.0.0.1:4444"`, `"[::1]:4444"`; anything else is `QM_STATUS_INVALID_ARGUMENT`).
//
// # Safety
// `address` must be NULL or NUL-terminated; `out` NULL or valid for a pointer.
enum qm_status qm_machine_attach_tcp(const char *address,
                                     int64_t timeout_ms,
                                     struct qm_machine **out);

// Runs the QMP command `command` (UTF-8) with `arguments_json` (a JSON object, or NULL for
// none; anything else is `QM_STATUS_INVALID_JSON`) and waits up to `timeout_ms` for its reply
// (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout, see `qm_config_set_qmp_timeout_ms()`; 0: the
// command is sent, but the call fails with `QM_STATUS_TIMEOUT` unless its reply is already
// there). On success, `*out_json` (if `out_json` is not NULL) receives the `return` value as
// JSON; free it with `qm_string_free()`. When QEMU answers with an error the status is
// `QM_STATUS_QMP_ERROR` and `qm_last_error_qmp_class()` / `qm_last_error_qmp_desc()` give its
// class and description. The returned JSON keeps the members in QEMU's order, and numbers as
// QEMU wrote them (a double reads back to the same bits). A reply larger than the bound on one
// QMP message fails with `QM_STATUS_PROTOCOL`, its size and the bound in the message, and the
// next command works. A `command` that cannot be a QMP command name (QAPI names: an ASCII
// letter, then letters, digits, `-` and `_`, optionally after a `__RFQDN_` prefix; at most
// 1024 bytes) fails with `QM_STATUS_INVALID_ARGUMENT` before anything is sent. Events that
// arrive meanwhile are kept for `qm_machine_events()` / `qm_machine_event_wait()`. A
// connection that closes first is `QM_STATUS_PROCESS_EXITED` or `QM_STATUS_DISCONNECTED`
// (always the former once QEMU's exit is known, as after `qm_machine_shutdown()`).
//
// # Safety
// `machine` must be a handle from this library or NULL; `command` and `arguments_json` NULL or
// NUL-terminated; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_execute(struct qm_machine *machine,
                                  const char *command,
                                  const char *arguments_json,
                                  int64_t timeout_ms,
                                  char **out_json);

// Like `qm_machine_execute()`, sent out-of-band (`exec-oob`), for the commands QEMU allows
// out-of-band (e.g. `migrate-pause`; for others QEMU answers with an error,
// `QM_STATUS_QMP_ERROR`). `QM_STATUS_INVALID_STATE` when out-of-band execution was not
// negotiated (a config with `"oob": false`).
//
// # Safety
// As for `qm_machine_execute()`.
enum qm_status qm_machine_execute_oob(struct qm_machine *machine,
                                      const char *command,
                                      const char *arguments_json,
                                      int64_t timeout_ms,
                                      char **out_json);

// Passes a duplicate of `fd` to QEMU over the QMP socket (SCM_RIGHTS) and names it `name`
// (UTF-8; QMP `getfd`), for use by later commands (e.g. a chardev or netdev with `fd=name`, or
// `closefd`). The caller keeps its own `fd` and may close it at once.
//
// # Safety
// `machine` must be a handle from this library or NULL; `name` NULL or NUL-terminated.
enum qm_status qm_machine_send_fd(struct qm_machine *machine, int fd, const char *name);

// Stores QEMU's process id in `*out_pid` (0 for an attached machine, whose process this library
// does not own). QEMU is a child of the guardian (see `qm_guardian_pid()`), not of the program.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_pid` NULL or valid for writing.
enum qm_status qm_machine_pid(struct qm_machine *machine, int32_t *out_pid);

// Asks QEMU for its run state (`query-status`) and stores it as a string such as `"running"`,
// `"paused"`, `"shutdown"` or `"prelaunch"` in `*out_status` (free with `qm_string_free()`).
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_status` NULL or valid for writing.
enum qm_status qm_machine_status(struct qm_machine *machine, char **out_status);

// Pauses the guest's CPUs (`stop`).
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_pause(struct qm_machine *machine);

// Resumes the guest's CPUs (`cont`).
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_resume(struct qm_machine *machine);

// Resets the guest (`system_reset`), like pressing the reset button.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_reset(struct qm_machine *machine);

// Presses the ACPI power button (`system_powerdown`) and waits up to `timeout_ms`
// (`QM_TIMEOUT_DEFAULT`: 30 s) for the guest to shut down (the SHUTDOWN event).
// `QM_STATUS_TIMEOUT` if it does not: the guest may ignore the button; the machine keeps
// running.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_powerdown(struct qm_machine *machine, int64_t timeout_ms);

// Shuts QEMU down: `quit`, then waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: no
// waiting) for it to exit, and kills its process group (SIGKILL) and reaps it if it does not
// (`QM_STATUS_NOT_GRACEFUL`: it is gone either way). The exit status and log stay readable
// until `qm_machine_free()`. `QM_STATUS_OK` at once if QEMU had already exited;
// `QM_STATUS_UNSUPPORTED` for an attached machine.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_shutdown(struct qm_machine *machine, int64_t timeout_ms);

// Kills QEMU's process group at once (SIGKILL) and reaps QEMU. `QM_STATUS_OK` if it had already
// exited; `QM_STATUS_UNSUPPORTED` for an attached machine.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_kill(struct qm_machine *machine);

// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only checks) for QEMU to exit by
// itself (a guest that powers off), and reaps it. `QM_STATUS_TIMEOUT` if it is still running;
// `QM_STATUS_UNSUPPORTED` for an attached machine.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_wait(struct qm_machine *machine, int64_t timeout_ms);

// After QEMU has exited: stores its exit code in `*out_code` (-1 if a signal ended it) and the
// signal in `*out_signal` (0 if none); either pointer may be NULL. `QM_STATUS_INVALID_STATE`
// while it is still running (or has not been found exited yet: `qm_machine_wait()` finds out),
// and for an attached machine.
//
// # Safety
// `machine` must be a handle from this library or NULL; the out-pointers NULL or writable.
enum qm_status qm_machine_exit_status(struct qm_machine *machine,
                                      int32_t *out_code,
                                      int32_t *out_signal);

// Stores everything QEMU (and its wrapper) wrote to stdout and stderr so far, as written (any
// bytes, possibly NUL bytes), in `*out_log`, NUL-terminated (free with `qm_string_free()`), and
// its length in `*out_len` if `out_len` is not NULL. Readable after QEMU has exited too, until
// `qm_machine_free()`. `QM_STATUS_UNSUPPORTED` for an attached machine.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_log` NULL or valid for writing;
// `out_len` NULL or valid for writing.
enum qm_status qm_machine_log(struct qm_machine *machine, char **out_log, size_t *out_len);

// Stores the descriptor to wait on (poll/epoll/select for readability) to drive this machine
// from the caller's own event loop; after it becomes readable call `qm_machine_process_io()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_fd` NULL or writable.
enum qm_status qm_machine_poll_fd(struct qm_machine *machine, int32_t *out_fd);

// Reads and handles whatever QMP messages, console bytes and process exit are ready, without
// blocking: events become available to `qm_machine_events()`.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_process_io(struct qm_machine *machine);

// Frees a machine: a launched QEMU still running has its process group killed (SIGKILL; never
// a graceful shutdown, so that freeing a forgotten machine never waits for its guest) and is
// reaped (waiting at most 10 s for the kernel to finish it), and its temp dir is removed (logs
// in a log dir stay); an attached one is only disconnected. Call `qm_machine_shutdown()` first
// for a graceful stop. NULL, a handle already freed (it stays
// invalid for good: freeing it again never reaches a machine created after it), one not created
// by this library and a `qm_config` are ignored.
//
// Never changes the calling thread's last error, so it can run between a failing call and the
// reading of that call's error.
//
// # Safety
// Any value is accepted: `machine` is looked up among the live handles, never dereferenced.
void qm_machine_free(struct qm_machine *machine);

// Copies up to `len` console bytes received so far (as the guest wrote them: any bytes) into
// `buf` and stores how many in `*out_len` (0 when nothing is waiting; the call does not block).
// Bytes that do not fit stay for the next call. `QM_STATUS_UNSUPPORTED` for a machine launched
// without the console.
//
// # Safety
// `machine` must be a handle from this library or NULL; `buf` valid for `len` bytes;
// `out_len` NULL or valid for a `size_t`.
enum qm_status qm_machine_console_read(struct qm_machine *machine,
                                       uint8_t *buf,
                                       size_t len,
                                       size_t *out_len);

// Like `qm_machine_console_read()`, but reads nothing from the console socket: see
// `qm_machine_take_events()` for the loop this is for.
//
// # Safety
// As for `qm_machine_console_read()`.
enum qm_status qm_machine_take_console(struct qm_machine *machine,
                                       uint8_t *buf,
                                       size_t len,
                                       size_t *out_len);

// Sends `len` bytes to the guest's first serial port, waiting up to `timeout_ms`
// (`QM_TIMEOUT_DEFAULT`: 30 s; 0: take what fits without waiting) until all of them are
// accepted: written to the console socket or queued within the machine's bound of console input
// (64 KiB). Accepted bytes reach the guest in order as it reads them.
//
// A guest that does not read its console (a paused VM) makes the call wait; if the deadline
// passes first it returns `QM_STATUS_TIMEOUT`, and `*out_written` (if not NULL) holds how many
// bytes, from the start of `data`, were accepted: write the rest later to resume. On
// `QM_STATUS_OK` `*out_written` is `len`; on other failures 0 (without a console:
// `QM_STATUS_UNSUPPORTED`; once QEMU has closed it: `QM_STATUS_PROCESS_EXITED` or
// `QM_STATUS_DISCONNECTED`).
//
// # Safety
// `machine` must be a handle from this library or NULL; `data` valid for `len` bytes;
// `out_written` NULL or valid for a `size_t`.
enum qm_status qm_machine_console_write(struct qm_machine *machine,
                                        const uint8_t *data,
                                        size_t len,
                                        int64_t timeout_ms,
                                        size_t *out_written);

// Stores in `*out_count` how many console bytes were dropped from memory since launch because
// the machine's console buffer was full (`console_buffer_bytes`, 1 MiB by default; a console
// log file still gets every byte). 0 for a machine without a console.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_count` NULL or valid for writing.
enum qm_status qm_machine_console_bytes_dropped(struct qm_machine *machine, uint64_t *out_count);

// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: looks only at output already
// received) until the console shows `pattern` (any bytes but NUL, not empty; a plain string, not
// a regular expression). If `out_before` is not NULL it receives, NUL-terminated, the console
// output before the match, as the guest wrote it (free with `qm_string_free()`), and `*out_len`
// (if not NULL) its length, which may include NUL bytes. Output after the match stays readable.
//
// # Safety
// `machine` must be a handle from this library or NULL; `pattern` NULL or NUL-terminated;
// `out_before` and `out_len` NULL or valid for writing.
enum qm_status qm_machine_console_wait_for(struct qm_machine *machine,
                                           const char *pattern,
                                           int64_t timeout_ms,
                                           char **out_before,
                                           size_t *out_len);

// For a machine launched from a `vm` description: stores where QEMU listens for the port
// forward named `name` (UTF-8), as `"IP:PORT"` in `*out_address` (free with `qm_string_free()`):
// `127.0.0.1:PORT` unless the forward's `host_addr` says otherwise, `0.0.0.0:PORT` when it
// asked for every address (reachable from the network; connect to `127.0.0.1:PORT` locally).
// With a host port of 0 in the description this is the port QEMU picked.
// `QM_STATUS_INVALID_ARGUMENT` if there is no forward of that name; `QM_STATUS_UNSUPPORTED` for
// a machine not launched from a `vm` description.
//
// # Safety
// `machine` must be a handle from this library or NULL; `name` NULL or NUL-terminated;
// `out_address` NULL or valid for writing.
enum qm_status qm_machine_forwarded_port(struct qm_machine *machine,
                                         const char *name,
                                         char **out_address);

// For a machine launched from a `vm` description with VNC: stores the path of its VNC unix
// socket in `*out_path` (free with `qm_string_free()`). `QM_STATUS_UNSUPPORTED` without VNC or
// a `vm` description.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_path` NULL or valid for writing.
enum qm_status qm_machine_vnc_socket(struct qm_machine *machine, char **out_path);

// Saves a screenshot of the machine's display to `path` (UTF-8, since QMP carries it as text;
// QMP `screendump`) as PNG when `format` is `"png"`, PPM when `"ppm"`, and PNG if this QEMU
// supports it else PPM when `format` is NULL; a machine without a display (no VGA and no VNC)
// is QEMU's error (`QM_STATUS_QMP_ERROR`), and no file is left behind; the path written (its extension may
// differ: a `.png` path becomes `.ppm` then) is stored in `*out_path` if that is not NULL (free
// with `qm_string_free()`). Another `format`, or a `path` that is not UTF-8, is
// `QM_STATUS_INVALID_ARGUMENT`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `path` and `format` NULL or
// NUL-terminated; `out_path` NULL or valid for writing.
enum qm_status qm_machine_screendump(struct qm_machine *machine,
                                     const char *path,
                                     const char *format,
                                     char **out_path);

// Takes every event kept so far, oldest first, as a JSON array of
// `{"event", "data", "timestamp": {"seconds", "microseconds"}}` objects (`[]` when there is
// none); free it with `qm_string_free()`. Reads what QEMU has already sent first, without
// waiting.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_events(struct qm_machine *machine, char **out_json);

// Like `qm_machine_events()`, but reads nothing: for a caller driving machines from its own
// loop, which after `qm_machine_poll_fd()` becomes readable calls `qm_machine_process_io()`
// once and then takes with this and `qm_machine_take_console()`. (Taking with functions that
// read could read, and keep, bytes for the other taker after it ran, with no wake-up left to
// announce them.)
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_take_events(struct qm_machine *machine, char **out_json);

// Stores in `*out_count` how many events were dropped since launch because the machine's event
// queue was full (its bound is `max_events`, 65536 by default; take events to make room). The
// next `qm_machine_event_wait()` that finds no match among the kept events reports the overflow,
// once, as `QM_STATUS_EVENT_QUEUE_FULL`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_count` NULL or valid for writing.
enum qm_status qm_machine_events_dropped(struct qm_machine *machine, uint64_t *out_count);

// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: no waiting, only events kept or
// already sent) for an event named `name` (UTF-8; NULL: any name) whose JSON form matches
// `pattern_json` (NULL: any). The pattern is a JSON sub-tree of the event
// (`{"data": {"guest": true}}`, `{"event": "STOP"}`); `null` in it matches anything. Kept events
// are searched first, oldest first. The matching event is removed from the kept events (the
// others stay kept) and, if `out_json` is not NULL, stored in `*out_json` (free with
// `qm_string_free()`). A timeout is `QM_STATUS_TIMEOUT`, distinct from the connection closing
// meanwhile (`QM_STATUS_PROCESS_EXITED` or `QM_STATUS_DISCONNECTED`).
//
// # Safety
// `machine` must be a handle from this library or NULL; `name` and `pattern_json` NULL or
// NUL-terminated; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_event_wait(struct qm_machine *machine,
                                     const char *name,
                                     const char *pattern_json,
                                     int64_t timeout_ms,
                                     char **out_json);

// Adds (or not) a qtest channel (QEMUQtestMachine): QEMU's device-test protocol on a
// socketpair the library owns, driven with `qm_machine_qtest*()`. With the accelerator left to
// the library (`QM_ACCEL_AUTO`), QEMU runs the qtest accelerator when the binary has it
// (`-accel help` lists it), else TCG with `-S` (no guest code runs), where
// `qm_machine_qtest_clock_step()` and `qm_machine_qtest_clock_set()` are
// `QM_STATUS_UNSUPPORTED` (Debian's QEMU 7.2 has no qtest accelerator). An explicit
// accelerator is kept, with `-S`.
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_qtest(struct qm_config *config, bool enabled);

// Launches with (the default) or without the library's own QMP connection (QEMUMachine's
// `set_qmp_monitor`). Without it, `qm_machine_launch()` returns once QEMU has run for the
// settle time without exiting (`qm_config_set_launch_settle_ms()`, 500 ms by default), or as
// soon as QEMU answers a qtest command with `qm_config_set_qtest()`; a QEMU that exits before
// is `QM_STATUS_LAUNCH_FAILED` with its output. QMP calls are then `QM_STATUS_UNSUPPORTED`;
// `qm_machine_shutdown()` sends SIGTERM (QEMU's graceful exit), then SIGKILL after its
// timeout (`QM_STATUS_NOT_GRACEFUL`).
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_qmp(struct qm_config *config, bool enabled);

// Adds a QMP server for another client (a QMP shell, a second program) at `address`:
// `"unix:PATH"` (the path any bytes, at most 107) or `"tcp:[HOST:]PORT"` (UTF-8; the host is
// `127.0.0.1` unless named, so only this machine can connect; an IPv6 host in brackets; port
// 0: QEMU picks one, see `qm_machine_qmp_listen_addresses()`). QEMU listens there without
// waiting, one client at a time; the library's own connection is unaffected. Anything else is
// `QM_STATUS_INVALID_ARGUMENT`.
//
// # Safety
// `config` must be a handle from this library or NULL; `address` NULL or NUL-terminated.
enum qm_status qm_config_add_qmp_listen(struct qm_config *config, const char *address);

// Adds (or not) `-monitor null` (QEMUMachine's `add_monitor_null`): a human monitor
// connected to nothing, in place of QEMU's default one without `-nodefaults`.
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_monitor_null(struct qm_config *config, bool enabled);

// Chooses the device that carries the console, and turns the console on (QEMUMachine's
// `set_console(device_type, console_index)`): `device_type` NULL is the machine's own
// serial port kind (`-serial`), `"virtconsole"` a virtio console (the guest's `hvc0`) on a
// virtio-serial controller of its own, any other name (UTF-8) a device type that takes a
// chardev (`"isa-serial"`, `"pci-serial"`, ...). `console_index` serial ports connected to
// nothing come first, so a serial console is the guest's `ttyS<console_index>`.
//
// # Safety
// `config` must be a handle from this library or NULL; `device_type` NULL or NUL-terminated.
enum qm_status qm_config_set_console_device(struct qm_config *config,
                                            const char *device_type,
                                            uint32_t console_index);

// Puts the console on a pseudo-terminal QEMU makes (or back on a socket the library drains),
// and turns the console on: another program opens the terminal, whose path
// `qm_machine_console_pty()` gives; the library's console functions are then
// `QM_STATUS_UNSUPPORTED`. A console log (`qm_config_set_console_log()`, or the one in the
// log dir) is written by QEMU.
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_console_pty(struct qm_config *config, bool enabled);

// Names the machine (`name`: UTF-8, a plain file name; QEMUMachine's `name`): its log files
// in the log dir are `NAME.log` and `NAME-console.log`. Not passed to QEMU. Default: its temp
// dir's name, unique. A name with `/`, or empty, is refused by `qm_machine_launch()` with
// `QM_STATUS_INVALID_ARGUMENT`.
//
// # Safety
// `config` must be a handle from this library or NULL; `name` NULL or NUL-terminated.
enum qm_status qm_config_set_name(struct qm_config *config, const char *name);

// Keeps the logs in the directory `dir` (any bytes; made owner-only if missing; QEMUMachine's
// `log_dir`), where they stay after `qm_machine_free()`: QEMU's output in `NAME.log` and,
// with a console and no console log of its own, the console's output in `NAME-console.log`,
// both owner-only (0600), started over at each launch.
//
// # Safety
// `config` must be a handle from this library or NULL; `dir` NULL or NUL-terminated.
enum qm_status qm_config_set_log_dir(struct qm_config *config, const char *dir);

// Without QMP and qtest: how long QEMU must run without exiting, in milliseconds, for
// `qm_machine_launch()` to return (default 500; never longer than the launch timeout).
//
// # Safety
// `config` must be a handle from this library or NULL.
enum qm_status qm_config_set_launch_settle_ms(struct qm_config *config, uint64_t ms);

// Stores in `*out_running` whether QEMU still runs (QEMUMachine's `is_running`): an exit the
// guardian reported is taken in first, without waiting. For an attached machine: false.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_running` NULL or writable.
enum qm_status qm_machine_is_running(struct qm_machine *machine, bool *out_running);

// Stores the machine's name in `*out_name` (free with `qm_string_free()`).
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_name` NULL or writable.
enum qm_status qm_machine_name(struct qm_machine *machine, char **out_name);

// Stores the path of the file holding QEMU's output in `*out_path` (free with
// `qm_string_free()`): in the log dir when one was set, else in the temp dir (removed by
// `qm_machine_free()`). `QM_STATUS_UNSUPPORTED` for an attached machine.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_path` NULL or writable.
enum qm_status qm_machine_log_path(struct qm_machine *machine, char **out_path);

// Stores the path of the console's pseudo-terminal (`qm_config_set_console_pty()`) in
// `*out_path` (free with `qm_string_free()`). `QM_STATUS_UNSUPPORTED` when the console is not
// on a pty.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_path` NULL or writable.
enum qm_status qm_machine_console_pty(struct qm_machine *machine, char **out_path);

// Stores the QMP servers for other clients (`qm_config_add_qmp_listen()`) as QEMU listens on
// them in `*out_json`, a JSON array of addresses in the same form (`"tcp:127.0.0.1:40123"`
// for a port 0, `"unix:/path"`); free it with `qm_string_free()`. `[]` without any.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or writable.
enum qm_status qm_machine_qmp_listen_addresses(struct qm_machine *machine, char **out_json);

// Takes the next event (QEMUMachine's `get_qmp_event`): the oldest kept one, else the next to
// arrive within `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only what QEMU has already
// sent), as JSON in `*out_json` (free with `qm_string_free()`). `QM_STATUS_TIMEOUT` when none
// comes; the connection closing first is `QM_STATUS_PROCESS_EXITED` or
// `QM_STATUS_DISCONNECTED`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or writable.
enum qm_status qm_machine_next_event(struct qm_machine *machine,
                                     int64_t timeout_ms,
                                     char **out_json);

// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only events kept or already sent)
// for the first event that matches any of `wanted_json` (QEMUMachine's `events_wait`): a
// JSON array of `{"name": "EVENT", "pattern": {...}}` objects (`pattern` optional; see
// `qm_machine_event_wait()` for patterns). Kept events are searched first, oldest first; the
// match is removed from the kept events and stored in `*out_json` if that is not NULL (free
// with `qm_string_free()`). A `wanted_json` of another shape is `QM_STATUS_INVALID_JSON`;
// timeouts and errors as for `qm_machine_event_wait()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `wanted_json` NULL or
// NUL-terminated; `out_json` NULL or valid for a pointer.
enum qm_status qm_machine_events_wait(struct qm_machine *machine,
                                      const char *wanted_json,
                                      int64_t timeout_ms,
                                      char **out_json);

// Sends `request_json`, any JSON object, as a QMP request as it is (QEMUMachine's `qmp`,
// qemu.qmp's `cmd_obj`), and stores QEMU's whole reply in `*out_reply_json` (free with
// `qm_string_free()`): `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}` (an error
// reply is not a failure of this call). The library keeps owning ids: the request goes with
// its own `id`, so the reply is matched by id; an `id` in `request_json` is taken out and put
// back into the reply. A request with `exec-oob` is out-of-band. Not an object:
// `QM_STATUS_INVALID_JSON`. Timeouts (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout) and
// other errors as for `qm_machine_execute()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `request_json` NULL or
// NUL-terminated; `out_reply_json` NULL or valid for a pointer.
enum qm_status qm_machine_execute_raw(struct qm_machine *machine,
                                      const char *request_json,
                                      int64_t timeout_ms,
                                      char **out_reply_json);

// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only checks) for QEMU to exit by
// itself and, if it does not, kills its process group (SIGKILL) and reaps it
// (QEMUMachine's `wait(timeout)`): `QM_STATUS_NOT_GRACEFUL` then; QEMU is gone either way.
// Sends nothing to QEMU first (`qm_machine_shutdown()` sends `quit`; `qm_machine_wait()`
// leaves QEMU running on timeout). `QM_STATUS_UNSUPPORTED` for an attached machine.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_wait_or_kill(struct qm_machine *machine, int64_t timeout_ms);

// Sends the qtest command `line` (UTF-8, without newline; QEMUQtestMachine's `qtest()`) and
// waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout) for QEMU's
// answer. On `OK`, `*out_reply` (if `out_reply` is not NULL) receives the answer's values, the
// text after `OK ` (`"0x29c08086"` for `inl 0xcfc`; empty for a bare `OK`); free it with
// `qm_string_free()`. An answer `FAIL ...` or `ERR ...` is `QM_STATUS_QTEST_ERROR`, the message
// naming the line and QEMU's answer. A line QEMU would misread or abort on (not words of
// printable ASCII separated by single spaces, a known command without its arguments, a port
// above 0xffff, ...) is refused before it is sent: `QM_STATUS_INVALID_ARGUMENT`.
// `QM_STATUS_UNSUPPORTED` for a machine without a qtest channel; `QM_STATUS_PROCESS_EXITED`
// once QEMU has exited. A call that times out leaves the channel usable (the late answer is
// dropped). IRQ notifications that arrive meanwhile are kept for `qm_machine_qtest_irqs()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `line` NULL or NUL-terminated;
// `out_reply` NULL or valid for a pointer.
enum qm_status qm_machine_qtest(struct qm_machine *machine,
                                const char *line,
                                int64_t timeout_ms,
                                char **out_reply);

// Reads an I/O port: `inb`, `inw` or `inl` for a `width` of 1, 2 or 4 bytes (anything else
// is `QM_STATUS_INVALID_ARGUMENT`), the value in `*out_value`. Timeouts and errors as for
// `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_value` NULL or writable.
enum qm_status qm_machine_qtest_in(struct qm_machine *machine,
                                   uint32_t width,
                                   uint16_t port,
                                   int64_t timeout_ms,
                                   uint32_t *out_value);

// Writes an I/O port: `outb`, `outw` or `outl` for a `width` of 1, 2 or 4 bytes; a `value`
// that does not fit is `QM_STATUS_INVALID_ARGUMENT`. Timeouts and errors as for
// `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_qtest_out(struct qm_machine *machine,
                                    uint32_t width,
                                    uint16_t port,
                                    uint32_t value,
                                    int64_t timeout_ms);

// Reads a value of guest memory at `addr` (the first CPU's address space, the target's byte
// order): `readb`, `readw`, `readl` or `readq` for a `width` of 1, 2, 4 or 8 bytes, the
// value in `*out_value`. Timeouts and errors as for `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_value` NULL or writable.
enum qm_status qm_machine_qtest_readn(struct qm_machine *machine,
                                      uint32_t width,
                                      uint64_t addr,
                                      int64_t timeout_ms,
                                      uint64_t *out_value);

// Writes a value of guest memory at `addr`: `writeb`, `writew`, `writel` or `writeq` for a
// `width` of 1, 2, 4 or 8 bytes; a `value` that does not fit is `QM_STATUS_INVALID_ARGUMENT`.
// Timeouts and errors as for `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_qtest_writen(struct qm_machine *machine,
                                       uint32_t width,
                                       uint64_t addr,
                                       uint64_t value,
                                       int64_t timeout_ms);

// Reads `len` bytes of guest memory at `addr` into `buf` (carried in base64, in pieces of
// 512 KiB), all within `timeout_ms` (`QM_TIMEOUT_DEFAULT`: the machine's QMP timeout). `len`
// 0 asks QEMU nothing. Errors as for `qm_machine_qtest()`; on failure `buf` may hold part of
// the data.
//
// # Safety
// `machine` must be a handle from this library or NULL; `buf` valid for writing `len` bytes
// (NULL only when `len` is 0).
enum qm_status qm_machine_qtest_read(struct qm_machine *machine,
                                     uint64_t addr,
                                     uint8_t *buf,
                                     size_t len,
                                     int64_t timeout_ms);

// Writes the `len` bytes at `data` to guest memory at `addr` (carried in base64). Timeouts
// and errors as for `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `data` valid for reading `len` bytes
// (NULL only when `len` is 0).
enum qm_status qm_machine_qtest_write(struct qm_machine *machine,
                                      uint64_t addr,
                                      const uint8_t *data,
                                      size_t len,
                                      int64_t timeout_ms);

// Fills `size` bytes of guest memory at `addr` with `value` (`memset`). Timeouts and errors as
// for `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL.
enum qm_status qm_machine_qtest_memset(struct qm_machine *machine,
                                       uint64_t addr,
                                       uint64_t size,
                                       uint8_t value,
                                       int64_t timeout_ms);

// Advances the virtual clock by `ns` nanoseconds (`clock_step`; -1: to the next timer
// deadline; any other negative value is `QM_STATUS_INVALID_ARGUMENT`) and stores the new clock
// in `*out_clock` if that is not NULL. Needs the qtest accelerator: without it (Debian's QEMU
// 7.2 has none; the machine then runs on TCG with `-S`) the call is `QM_STATUS_UNSUPPORTED`
// and sends nothing. Timeouts and errors otherwise as for `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_clock` NULL or writable.
enum qm_status qm_machine_qtest_clock_step(struct qm_machine *machine,
                                           int64_t ns,
                                           int64_t timeout_ms,
                                           int64_t *out_clock);

// Advances the virtual clock to `ns` nanoseconds (`clock_set`; negative values are
// `QM_STATUS_INVALID_ARGUMENT`) and stores the new clock in `*out_clock` if that is not
// NULL. Needs the qtest accelerator, as `qm_machine_qtest_clock_step()` does.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_clock` NULL or writable.
enum qm_status qm_machine_qtest_clock_set(struct qm_machine *machine,
                                          int64_t ns,
                                          int64_t timeout_ms,
                                          int64_t *out_clock);

// Intercepts the GPIO lines of the device at QOM path `path` (UTF-8): its inputs
// (`irq_intercept_in`) or, with `out`, its outputs (`irq_intercept_out`); their changes are
// then reported as IRQ notifications (`qm_machine_qtest_irqs()`). On a PC, `"ioapic"`'s inputs
// are the ISA interrupts. QEMU intercepts one device per run: another one is
// `QM_STATUS_QTEST_ERROR`, as is a path that names no device. Timeouts and errors as for
// `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `path` NULL or NUL-terminated.
enum qm_status qm_machine_qtest_irq_intercept(struct qm_machine *machine,
                                              const char *path,
                                              bool out,
                                              int64_t timeout_ms);

// Drives input `num` of the GPIO list `name` (UTF-8; NULL: the unnamed list) of the device at
// QOM path `path` to `level` (`set_irq_in`). Timeouts and errors as for `qm_machine_qtest()`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `path` and `name` NULL or
// NUL-terminated.
enum qm_status qm_machine_qtest_set_irq_in(struct qm_machine *machine,
                                           const char *path,
                                           const char *name,
                                           uint32_t num,
                                           int32_t level,
                                           int64_t timeout_ms);

// Takes the IRQ notifications of intercepted lines, oldest first, as a JSON array of
// `{"num": N, "raised": true|false}` in `*out_json` (free with `qm_string_free()`): those
// received so far, or, when there is none, the first to arrive within `timeout_ms`
// (`QM_TIMEOUT_DEFAULT`: 30 s; 0: no waiting), which is `QM_STATUS_TIMEOUT` when none comes.
// Notifications arrive whenever the machine waits for anything (a QMP reply, an event, a
// qtest answer), and are kept in order (at most 4096; more are counted and dropped).
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for a
// pointer.
enum qm_status qm_machine_qtest_irqs(struct qm_machine *machine,
                                     int64_t timeout_ms,
                                     char **out_json);

// The version as one number, `major * 10000 + minor * 100 + patch`, the same formula as the
// header's `QM_VERSION_NUMBER` macro: compare `qm_version()` with `QM_VERSION_NUMBER` to check
// that the library loaded at run time matches the header compiled against.
uint32_t qm_version(void);

// The version as a static NUL-terminated string such as `"0.1.0"`. Do not free.
const char *qm_version_string(void);

// Stores the machine's power state in `*out_state`, a `QM_POWER_*` value: `QM_POWER_OFF` once
// QEMU has exited, else what `query-status` says (`QM_POWER_RUNNING`, or `QM_POWER_PAUSED` for
// any stopped state). The kept `STOP`, `RESUME` and `SHUTDOWN` events are taken (the state
// stored supersedes them), so that `qm_machine_power_wait_change()` reports only what changes
// afterwards.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_state` NULL or valid for writing.
enum qm_status qm_machine_power_state(struct qm_machine *machine, int32_t *out_state);

// Waits up to `timeout_ms` (`QM_TIMEOUT_DEFAULT`: 30 s; 0: only what has already arrived) for
// the power state to change from the last one reported (by this function or
// `qm_machine_power_state()`), and stores the new one in `*out_state` (`QM_POWER_*`). Changes
// come from QEMU's events (`RESUME`, `STOP`, `SHUTDOWN`, taken from the kept events in order;
// one that repeats the state is skipped) and QEMU's exit. Call it in a loop to follow each
// change. `QM_STATUS_TIMEOUT` when nothing changed in time; once `QM_POWER_OFF` was reported
// and QEMU has exited nothing can change: `QM_STATUS_PROCESS_EXITED` (attached:
// `QM_STATUS_DISCONNECTED`) at once.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_state` NULL or valid for writing.
enum qm_status qm_machine_power_wait_change(struct qm_machine *machine,
                                            int64_t timeout_ms,
                                            int32_t *out_state);

// Launches QEMU again after it exited (a guest power-off, `qm_machine_shutdown()`), in the same
// temp dir, under the config's launch timeout. With `vm_json` NULL, the same description; else
// `vm_json` (UTF-8) is the machine's new `vm` description, e.g. with more `memory` or a bigger
// `disk_size`: what the temp dir and the disks hold is kept (disks are not flashed again, only
// grown; UEFI variables and flashed firmware stay), the cloud-init seed is written anew.
// `QM_STATUS_INVALID_STATE` while QEMU runs; `QM_STATUS_INVALID_JSON` for a description that
// does not parse; `QM_STATUS_INVALID_ARGUMENT` for a size below a disk's image (the message
// names both); `QM_STATUS_UNSUPPORTED` for an attached machine, or a new description for a
// machine not launched from one. When the launch fails, the machine keeps its previous
// description.
//
// # Safety
// `machine` must be a handle from this library or NULL; `vm_json` NULL or NUL-terminated.
enum qm_status qm_machine_relaunch(struct qm_machine *machine, const char *vm_json);

// Stores the drives of a machine launched from a `vm` description, the partitions
// `qm_machine_flash()` and `qm_machine_dump()` know, as a JSON array in `*out_json` (free with
// `qm_string_free()`): one object per drive with `name` (`root` or another disk id, `bios`,
// `uefi_code`, `uefi_vars`), `kind` (`disk`, `bios`, `uefi_code`, `uefi_vars`), `path`,
// `format`, `size` (the virtual size the drive is kept at, or null) and `owned` (the file is
// the machine's own, in its temp dir). Empty for a raw launch.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_json` NULL or valid for writing.
enum qm_status qm_machine_drives(struct qm_machine *machine, char **out_json);

// Writes the image at `source` (any bytes; any format qemu-img reads, optionally gzip, xz,
// bzip2 or zstd compressed, recognised by its content) into the drive `partition` (UTF-8:
// `root` or another disk id, `bios`, `uefi_code`, `uefi_vars`; Jumpstarter's `OVMF_CODE.fd`
// and `OVMF_VARS.fd` name the UEFI drives too), converted to the drive's format and grown back
// to its size; firmware the machine does not own is never written (the flash goes to a copy in
// its temp dir, used from the next launch). `progress(fraction, user_data)` is called as it
// goes (`progress` may be NULL). Takes effect at `qm_machine_relaunch()`.
// `QM_STATUS_INVALID_STATE` while QEMU runs; `QM_STATUS_INVALID_ARGUMENT` for an unknown
// partition (the message lists the machine's) or a missing source; `QM_STATUS_IMAGE` when
// qemu-img or the decompressor fails; `QM_STATUS_UNSUPPORTED` for a machine not launched from
// a `vm` description.
//
// # Safety
// `machine` must be a handle from this library or NULL; `partition` and `source` NULL or
// NUL-terminated; `progress`, if not NULL, must be safe to call with `user_data`.
enum qm_status qm_machine_flash(struct qm_machine *machine,
                                const char *partition,
                                const char *source,
                                qm_progress_fn progress,
                                void *user_data);

// Like `qm_machine_flash()`, from the stream open on `fd` (a pipe, a socket, standard input:
// read once, front to back, until its end; a compressed stream is decompressed on the fly).
// The descriptor is duplicated for the call and stays the caller's (the library does not close
// it; reading moves its offset). `progress(bytes_read, converted, user_data)` is called as it
// goes (see `qm_stream_progress_fn`; may be NULL). A non-blocking descriptor is waited on
// until data or its end comes, like a blocking one. A descriptor that is not open is
// `QM_STATUS_INVALID_ARGUMENT`; a read error `QM_STATUS_IO`.
//
// # Safety
// `machine` must be a handle from this library or NULL; `partition` NULL or NUL-terminated;
// `progress`, if not NULL, must be safe to call with `user_data`.
enum qm_status qm_machine_flash_fd(struct qm_machine *machine,
                                   const char *partition,
                                   int fd,
                                   qm_stream_progress_fn progress,
                                   void *user_data);

// Reads the drive `partition` (named as for `qm_machine_flash()`) into a new file `dest` (any
// bytes) of `format` (UTF-8, e.g. `"raw"`, `"qcow2"`; NULL: the drive's own), e.g. the UEFI
// variables the guest wrote; `progress` as for `qm_machine_flash()`. `QM_STATUS_INVALID_STATE`
// while QEMU runs; `QM_STATUS_INVALID_ARGUMENT` for an unknown partition or format.
//
// # Safety
// `machine` must be a handle from this library or NULL; `partition`, `dest` and `format` NULL
// or NUL-terminated (`format` may be NULL); `progress`, if not NULL, must be safe to call with
// `user_data`.
enum qm_status qm_machine_dump(struct qm_machine *machine,
                               const char *partition,
                               const char *dest,
                               const char *format,
                               qm_progress_fn progress,
                               void *user_data);

// Stores the vsock context id of a machine launched with `"vsock": true` in `*out_cid`: the
// guest's address for `AF_VSOCK` connections from the host (never 0-2 or 0xFFFFFFFF).
// `QM_STATUS_UNSUPPORTED` for a machine without vsock.
//
// # Safety
// `machine` must be a handle from this library or NULL; `out_cid` NULL or valid for writing.
enum qm_status qm_machine_vsock_cid(struct qm_machine *machine, uint32_t *out_cid);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* QEMUMACHINE_H */
