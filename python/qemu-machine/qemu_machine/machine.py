"""The library's own objects: a launch configuration (:class:`Config`) and a running QEMU
(:class:`Machine`), one method per C function, thread-safe.

Times are in seconds (``float``); ``None`` is the C function's default (``QM_TIMEOUT_DEFAULT``),
``0`` does not wait. Every call on a machine holds that machine's lock, so calls from several
threads run one after another (the C handle must not be used concurrently). Waits for events,
console output and power changes are made of C calls of at most :data:`WAIT_SLICE` seconds, the
lock released between them, so that another thread's command (the one that makes the awaited
event happen) goes through meanwhile; an event still ends the wait as soon as it comes. The other calls
(``shutdown``, ``powerdown``, ``wait``, commands) hold the machine for their whole length.
"""

from __future__ import annotations

import ctypes
import enum
import json
import math
import os
import threading
import time
import weakref
from typing import Any, Optional, Sequence, Union

from . import _lib, errors
from ._lib import TIMEOUT_DEFAULT, take_json, take_string

Timeout = Optional[float]

ACCEL = {"auto": 0, "kvm": 1, "tcg": 2, "none": 3}

#: The longest C call a wait for events or console output makes while holding the machine.
WAIT_SLICE = 0.1

#: The C functions' default wait (``QM_TIMEOUT_DEFAULT``) for events and console output.
DEFAULT_WAIT = 30.0


def _ms(timeout: Timeout) -> int:
    if timeout is None:
        return TIMEOUT_DEFAULT
    if timeout < 0:
        raise ValueError(f"timeout {timeout}: must be None, 0 or positive (seconds)")
    return math.ceil(timeout * 1000)


def _bytes(value: Union[str, bytes, "os.PathLike[str]"]) -> bytes:
    if isinstance(value, bytes):
        return value
    return os.fsencode(value)


def _json_arg(value: Any) -> Optional[bytes]:
    if value is None:
        return None
    return json.dumps(value).encode()


class PowerState(enum.IntEnum):
    """A machine's power state, as a power switch sees it (``qm_power``)."""

    #: QEMU is not running (it exited; or, attached, its connection closed), or the guest
    #: powered off and QEMU stays (``-no-shutdown``).
    OFF = 0
    #: The guest runs.
    RUNNING = 1
    #: QEMU runs with the guest stopped (paused, started paused, an error stop, ...).
    PAUSED = 2


def _power_state(value: int) -> PowerState:
    try:
        return PowerState(value)
    except ValueError:
        raise errors.LibraryError(f"the library reported an unknown power state {value}") from None


class Config:
    """A launch configuration (``qm_config``): the JSON form of qemu-process's
    ``MachineConfig`` (``binary``, ``args``, ``accel``, ``vm``, timeouts, console, ...; see
    ``qm_config_from_json`` in qemumachine.h), plus the setters only C has (fds).

    ``Config`` objects are cheap; the descriptors given to :meth:`add_fd` are duplicated at
    once. Free with :meth:`close` (or let it be collected)."""

    def __init__(self, description: Union[dict, str, None] = None):
        self._lib = _lib.library()
        self._lock = threading.RLock()
        text = description if isinstance(description, str) else json.dumps(description or {})
        handle = ctypes.c_void_p()
        self._lib.check(
            self._lib.qm_config_from_json(text.encode(), ctypes.byref(handle)), "config"
        )
        self._handle: Optional[int] = handle.value
        self._finalizer = weakref.finalize(self, self._lib.qm_config_free, handle.value)

    def _call(self, name: str, *args: Any, what: Optional[str] = None) -> None:
        fn = getattr(self._lib, name) if what is None else self._lib.need(name, what)
        with self._lock:
            if self._handle is None:
                raise errors.QEMUMachineError("the configuration was closed")
            self._lib.check(fn(self._handle, *args), name)

    @property
    def handle(self) -> int:
        """The C handle (for this package's own use)."""
        if self._handle is None:
            raise errors.QEMUMachineError("the configuration was closed")
        return self._handle

    def add_arg(self, arg: Union[str, bytes]) -> None:
        """Appends one QEMU argument (``qm_config_add_arg``)."""
        self._call("qm_config_add_arg", _bytes(arg))

    def add_fd(self, fd: int, fdset: int, opaque: Optional[str] = None) -> None:
        """Passes a duplicate of ``fd`` to QEMU at launch in fdset ``fdset`` (``-add-fd``)."""
        self._call("qm_config_add_fd", fd, fdset, opaque.encode() if opaque else None)

    def set_qmp(self, enabled: bool) -> None:
        """Launches with or without the library's QMP connection (issue 12's C function)."""
        self._call("qm_config_set_qmp", enabled, what="set_qmp_monitor(False)")

    def add_qmp_listen(self, address: str) -> None:
        """A QMP server for another client, ``unix:PATH`` or ``tcp:[HOST:]PORT``."""
        self._call("qm_config_add_qmp_listen", address.encode(), what="monitor_address")

    def set_monitor_null(self, enabled: bool) -> None:
        """``-monitor null``."""
        self._call("qm_config_set_monitor_null", enabled, what="add_monitor_null")

    def set_console_device(self, device_type: Optional[str], index: int) -> None:
        """The device carrying the console, and how many serial ports come before it."""
        self._call(
            "qm_config_set_console_device",
            device_type.encode() if device_type else None,
            index,
            what="set_console(device_type, console_index)",
        )

    def set_console_pty(self, enabled: bool) -> None:
        """Puts the console on a pseudo-terminal (its path: :meth:`Machine.console_pty`)."""
        self._call("qm_config_set_console_pty", enabled, what="a console on a pty")

    def set_name(self, name: str) -> None:
        """The machine's name (its log file names)."""
        self._call("qm_config_set_name", name.encode(), what="name")

    def set_log_dir(self, path: str) -> None:
        """Keeps QEMU's log in ``path``, where it stays after the machine is freed."""
        self._call("qm_config_set_log_dir", _bytes(path), what="log_dir")

    def close(self) -> None:
        """Frees the configuration; machines launched from it are not affected."""
        with self._lock:
            if self._handle is not None:
                self._handle = None
                self._finalizer()


class Machine:
    """A QEMU launched by libqemumachine (``qm_machine``).

    Launch with :meth:`launch`; :meth:`close` (or collection) frees it, killing QEMU if it
    still runs. All methods are safe to call from several threads (they run one at a time).
    """

    def __init__(self, lib: _lib.Library, handle: int):
        self._lib = lib
        self._handle: Optional[int] = handle
        self._lock = threading.RLock()
        self._finalizer = weakref.finalize(self, lib.qm_machine_free, handle)

    @classmethod
    def launch(cls, config: Union[Config, dict, str]) -> "Machine":
        """Launches QEMU as ``config`` describes (a :class:`Config`, or its JSON form) and
        returns once QMP is negotiated. Failures: ``LibraryError`` with ``status_name``
        ``QM_STATUS_LAUNCH_FAILED`` (QEMU exited: its command line and output in the
        message), ``QM_STATUS_BINARY_NOT_FOUND``, or ``LibraryTimeout``."""
        own = not isinstance(config, Config)
        cfg = Config(config) if own else config
        try:
            lib = cfg._lib
            handle = ctypes.c_void_p()
            with cfg._lock:
                lib.check(lib.qm_machine_launch(cfg.handle, ctypes.byref(handle)), "launch")
            return cls(lib, handle.value)
        finally:
            if own:
                cfg.close()

    @classmethod
    def attach_unix(cls, path: str, timeout: Timeout = None) -> "Machine":
        """Connects to the QMP server of a running QEMU at the unix socket ``path``."""
        lib = _lib.library()
        handle = ctypes.c_void_p()
        lib.check(
            lib.qm_machine_attach_unix(_bytes(path), _ms(timeout), ctypes.byref(handle)),
            "attach",
        )
        return cls(lib, handle.value)

    # -- plumbing ----------------------------------------------------------------------------

    def _h(self) -> int:
        if self._handle is None:
            raise errors.StateError("the machine was closed")
        return self._handle

    def _call(self, name: str, *args: Any, context: Optional[str] = None) -> None:
        with self._lock:
            self._lib.check(getattr(self._lib, name)(self._h(), *args), context or name)

    def _call_out(self, name: str, *args: Any, context: Optional[str] = None) -> bytes:
        out = ctypes.c_void_p()
        with self._lock:
            self._lib.check(
                getattr(self._lib, name)(self._h(), *args, ctypes.byref(out)), context or name
            )
        return take_string(self._lib, out.value)

    def _sliced(self, name: str, args_before: tuple, args_after: tuple, timeout: Timeout,
                context: str) -> tuple[int, ...]:
        """Runs a waiting C function ``name(handle, *args_before, timeout_ms, *args_after)`` in
        slices of at most WAIT_SLICE seconds, releasing the lock between them. Returns the
        out-parameter values (``args_after`` are ctypes objects passed by reference)."""
        total = DEFAULT_WAIT if timeout is None else timeout
        if total < 0:
            raise ValueError(f"timeout {timeout}: must be None, 0 or positive (seconds)")
        deadline = time.monotonic() + total
        fn = getattr(self._lib, name)
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            slice_ = min(remaining, WAIT_SLICE)
            with self._lock:
                status = fn(self._h(), *args_before, _ms(slice_),
                            *(ctypes.byref(a) for a in args_after))
                if status == _lib.TIMEOUT and slice_ < remaining:
                    continue
                self._lib.check(status, context)
            return tuple(a.value for a in args_after)

    def has(self, c_function: str) -> bool:
        """Whether the loaded library has ``c_function`` (for features of newer libraries)."""
        return self._lib.has(c_function)

    # -- QMP ---------------------------------------------------------------------------------

    def execute(self, command: str, arguments: Optional[dict] = None, timeout: Timeout = None) -> Any:
        """Runs a QMP command and returns its ``return`` value; QEMU's error reply raises
        ``ExecuteError``."""
        out = self._call_out(
            "qm_machine_execute", command.encode(), _json_arg(arguments), _ms(timeout),
            context=command,
        )
        return json.loads(out)

    def execute_oob(self, command: str, arguments: Optional[dict] = None, timeout: Timeout = None) -> Any:
        """Like :meth:`execute`, out-of-band (``exec-oob``)."""
        out = self._call_out(
            "qm_machine_execute_oob", command.encode(), _json_arg(arguments), _ms(timeout),
            context=command,
        )
        return json.loads(out)

    def execute_raw(self, request: dict, timeout: Timeout = None) -> dict:
        """Sends ``request`` as it is and returns QEMU's whole reply (issue 12's C function)."""
        self._lib.need("qm_machine_execute_raw", "a raw QMP request")
        out = self._call_out(
            "qm_machine_execute_raw", json.dumps(request).encode(), _ms(timeout),
            context=str(request.get("execute") or request.get("exec-oob")),
        )
        return json.loads(out)

    def events(self) -> list:
        """Takes every event kept so far, oldest first (reads what QEMU sent, no waiting)."""
        return json.loads(self._call_out("qm_machine_events"))

    def events_dropped(self) -> int:
        """How many events were dropped because the event queue was full."""
        n = ctypes.c_uint64()
        self._call("qm_machine_events_dropped", ctypes.byref(n))
        return n.value

    def event_wait(self, name: Optional[str] = None, pattern: Optional[dict] = None,
                   timeout: Timeout = None) -> dict:
        """Waits for an event named ``name`` (None: any) matching ``pattern`` (a JSON sub-tree
        of the event; ``None`` values match anything), kept events first, and removes it from
        the kept events. A timeout raises ``LibraryTimeout``."""
        (out,) = self._sliced(
            "qm_machine_event_wait", (name.encode() if name else None, _json_arg(pattern)),
            (ctypes.c_void_p(),), timeout, f"waiting for event {name or '(any)'}",
        )
        return json.loads(take_string(self._lib, out))

    def next_event(self, timeout: Timeout = None) -> dict:
        """Takes the oldest kept event, else the next one to arrive within ``timeout``."""
        if self._lib.has("qm_machine_next_event"):
            (out,) = self._sliced("qm_machine_next_event", (), (ctypes.c_void_p(),), timeout,
                                  "waiting for an event")
            return json.loads(take_string(self._lib, out))
        # The same thing with the 0.1.0 API: any name, any pattern, oldest kept first.
        return self.event_wait(None, None, timeout)

    def events_wait(self, wanted: Sequence[tuple[str, Optional[dict]]], timeout: Timeout = None) -> dict:
        """Waits for the first event matching any (name, pattern) pair (issue 12's C function)."""
        self._lib.need("qm_machine_events_wait", "events_wait in C")
        doc = [{"name": n, "pattern": p} if p is not None else {"name": n} for n, p in wanted]
        (out,) = self._sliced("qm_machine_events_wait", (json.dumps(doc).encode(),),
                              (ctypes.c_void_p(),), timeout, "waiting for events")
        return json.loads(take_string(self._lib, out))

    def send_fd(self, fd: int, name: str) -> None:
        """Passes a duplicate of ``fd`` to QEMU and names it (QMP ``getfd``)."""
        self._call("qm_machine_send_fd", fd, name.encode(), context="getfd")

    # -- the console (the library's, when the config enabled it) ----------------------------

    def console_read(self, size: int = 65536) -> bytes:
        """Console bytes received so far, up to ``size`` (no waiting)."""
        buf = (ctypes.c_uint8 * size)()
        n = ctypes.c_size_t()
        self._call("qm_machine_console_read", buf, size, ctypes.byref(n))
        return bytes(buf[: n.value])

    def console_write(self, data: bytes, timeout: Timeout = None) -> None:
        """Sends ``data`` to the guest's console, all of it or ``LibraryTimeout``."""
        if not data:
            return
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        n = ctypes.c_size_t()
        self._call("qm_machine_console_write", buf, len(data), _ms(timeout), ctypes.byref(n))

    def console_wait_for(self, pattern: Union[str, bytes], timeout: Timeout = None) -> bytes:
        """Waits until the console shows ``pattern``; returns the output before it."""
        out, n = self._sliced("qm_machine_console_wait_for", (_bytes(pattern),),
                              (ctypes.c_void_p(), ctypes.c_size_t()), timeout,
                              "waiting for the console")
        return take_string(self._lib, out, n)

    def console_pty(self) -> str:
        """The path of the console's pseudo-terminal (issue 12's C function)."""
        self._lib.need("qm_machine_console_pty", "a console on a pty")
        return self._call_out("qm_machine_console_pty").decode()

    # -- process and power -------------------------------------------------------------------

    def pid(self) -> int:
        """QEMU's process id (0 for an attached machine)."""
        pid = ctypes.c_int32()
        self._call("qm_machine_pid", ctypes.byref(pid))
        return pid.value

    def status(self) -> str:
        """QEMU's run state (``query-status``): ``"running"``, ``"paused"``, ..."""
        return self._call_out("qm_machine_status").decode()

    def pause(self) -> None:
        self._call("qm_machine_pause")

    def resume(self) -> None:
        self._call("qm_machine_resume")

    def reset(self) -> None:
        self._call("qm_machine_reset")

    def power_state(self) -> PowerState:
        """The power state now: ``OFF`` once QEMU has exited, else what ``query-status`` says
        (``RUNNING``, or ``PAUSED`` for any stopped state). It takes the kept ``STOP``,
        ``RESUME`` and ``SHUTDOWN`` events (the state returned supersedes them; a caller waiting
        for those events with :meth:`event_wait` no longer finds them), so that
        :meth:`power_wait_change` reports only what changes afterwards."""
        self._lib.need("qm_machine_power_state", "power_state()")
        state = ctypes.c_int32()
        self._call("qm_machine_power_state", ctypes.byref(state), context="power state")
        return _power_state(state.value)

    def power_wait_change(self, timeout: Timeout = None) -> PowerState:
        """Waits up to ``timeout`` seconds (``None``: 30 s; ``0``: only what has already
        arrived) for the power state to change from the last one reported (by this method or
        :meth:`power_state`) and returns the new one. Changes come from QEMU's ``RESUME``,
        ``STOP`` and ``SHUTDOWN`` events, in order (one that repeats the state is skipped), and
        QEMU's exit; call it in a loop to follow each change. Nothing changed in time:
        ``LibraryTimeout``. Once ``OFF`` was reported and QEMU has exited nothing can change:
        ``ExecInterruptedError`` at once. Like the event waits, it releases the machine between
        C calls of at most :data:`WAIT_SLICE` seconds, so another thread's call (the one that
        pauses the machine, say) goes through meanwhile."""
        self._lib.need("qm_machine_power_wait_change", "power_wait_change()")
        (state,) = self._sliced("qm_machine_power_wait_change", (), (ctypes.c_int32(),), timeout,
                                "waiting for a change of the power state")
        return _power_state(state)

    def powerdown(self, timeout: Timeout = None) -> None:
        """Presses the ACPI power button and waits for the guest to shut down (the SHUTDOWN
        event); ``LibraryTimeout`` if it does not within ``timeout``."""
        self._call("qm_machine_powerdown", _ms(timeout), context="powerdown")

    def shutdown(self, timeout: Timeout = None) -> bool:
        """``quit``, wait, then kill: True when QEMU quit by itself, False when it had to be
        killed. QEMU is gone either way."""
        with self._lock:
            status = self._lib.qm_machine_shutdown(self._h(), _ms(timeout))
            if status == _lib.NOT_GRACEFUL:
                return False
            self._lib.check(status, "shutdown")
        return True

    def kill(self) -> None:
        """Kills QEMU's process group (SIGKILL) and reaps QEMU."""
        self._call("qm_machine_kill", context="kill")

    def wait(self, timeout: Timeout = None) -> None:
        """Waits for QEMU to exit by itself; ``LibraryTimeout`` if it still runs."""
        self._call("qm_machine_wait", _ms(timeout), context="wait")

    def wait_or_kill(self, timeout: Timeout = None) -> bool:
        """Waits for QEMU to exit, killing it after ``timeout``: True if it exited by itself."""
        if self._lib.has("qm_machine_wait_or_kill"):
            with self._lock:
                status = self._lib.qm_machine_wait_or_kill(self._h(), _ms(timeout))
                if status == _lib.NOT_GRACEFUL:
                    return False
                self._lib.check(status, "wait")
            return True
        with self._lock:
            try:
                self.wait(timeout)
                return True
            except errors.LibraryTimeout:
                self.kill()
                return False

    def is_running(self) -> bool:
        """Whether QEMU still runs (an exit is noticed without waiting)."""
        if self._lib.has("qm_machine_is_running"):
            running = ctypes.c_bool()
            self._call("qm_machine_is_running", ctypes.byref(running))
            return running.value
        with self._lock:
            status = self._lib.qm_machine_wait(self._h(), 0)
            if status == _lib.TIMEOUT:
                return True
            if status == _lib.UNSUPPORTED:  # attached: not ours to watch
                return False
            self._lib.check(status, "is_running")
            return False

    def exit_status(self) -> Optional[tuple[int, int]]:
        """``(exit code, signal)`` once QEMU has exited (code -1 when a signal ended it), else
        None."""
        code, sig = ctypes.c_int32(), ctypes.c_int32()
        with self._lock:
            status = self._lib.qm_machine_exit_status(self._h(), ctypes.byref(code), ctypes.byref(sig))
            if status == _lib.INVALID_STATE:
                return None
            self._lib.check(status, "exit status")
        return code.value, sig.value

    def log(self) -> bytes:
        """Everything QEMU wrote to stdout and stderr so far, as written."""
        out = ctypes.c_void_p()
        n = ctypes.c_size_t()
        with self._lock:
            self._lib.check(
                self._lib.qm_machine_log(self._h(), ctypes.byref(out), ctypes.byref(n)), "log"
            )
        return take_string(self._lib, out.value, n.value)

    # -- a VM's extras -----------------------------------------------------------------------

    def forwarded_port(self, name: str) -> tuple[str, int]:
        """Where QEMU listens for the port forward ``name``: ``(host, port)``, the port QEMU
        picked for a host port of 0."""
        text = self._call_out("qm_machine_forwarded_port", name.encode()).decode()
        host, _, port = text.rpartition(":")
        return host.strip("[]"), int(port)

    def vnc_socket(self) -> str:
        """The path of the VNC unix socket of a VM launched with ``vnc``."""
        return self._call_out("qm_machine_vnc_socket").decode()

    def screendump(self, path: str, fmt: Optional[str] = None) -> str:
        """Saves the screen to ``path`` (PNG, else PPM); returns the path written."""
        return self._call_out(
            "qm_machine_screendump", path.encode(), fmt.encode() if fmt else None,
            context="screendump",
        ).decode()

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Frees the machine: a QEMU still running is killed (SIGKILL) and reaped, its temp dir
        removed. Does nothing the second time."""
        with self._lock:
            if self._handle is not None:
                self._handle = None
                self._finalizer()

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def guardian_pid() -> int:
    """The pid of this process's guardian (the child that spawns QEMU), 0 before the first
    launch."""
    return _lib.library().qm_guardian_pid()


def version() -> str:
    """The loaded libqemumachine's version, e.g. ``"0.1.0"``."""
    return _lib.library().version()
