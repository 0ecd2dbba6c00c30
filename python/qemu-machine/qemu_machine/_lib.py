"""Loading libqemumachine with ctypes, its prototypes, and turning its status codes into
exceptions.

Where the library comes from (first that applies):

1. ``QEMU_MACHINE_LIB``: the path of the shared library to load (nothing else is tried);
2. the dynamic loader, by soname (``libqemumachine.so.0.1``): what ``ldconfig`` knows
   (``scripts/install-lib.sh /usr/local``, the ``libqemumachine0.1`` Debian package), or
   ``LD_LIBRARY_PATH``;
3. ``pkg-config --variable=libdir qemumachine`` (a private prefix on ``PKG_CONFIG_PATH``).

The wheel carries no copy of the library: see the package README for why.

Thread rules of the C library that this module keeps: the last error is per thread, so
:func:`check` reads it on the calling thread right after the call that failed (a ctypes call
runs on the calling thread; no other library call comes between). Handles are not
thread-safe: the classes above this module hold a lock per handle around every call.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, Callable, Optional

from . import errors

#: The ABI this binding is written for: libqemumachine 0.1.x (soname libqemumachine.so.0.1).
ABI = (0, 1)
SONAME = "libqemumachine.so.%d.%d" % ABI
ENV_LIB = "QEMU_MACHINE_LIB"

#: ``QM_TIMEOUT_DEFAULT``: each function's own default.
TIMEOUT_DEFAULT = -1

# qm_status numbers (the header's; never renumbered).
OK = 0
NULL_ARGUMENT = 1
INVALID_ARGUMENT = 2
INVALID_JSON = 3
TIMEOUT = 4
QMP_ERROR = 5
DISCONNECTED = 6
PROCESS_EXITED = 7
LAUNCH_FAILED = 8
IO = 9
PANIC = 10
INVALID_HANDLE = 11
PROTOCOL = 12
NOT_GRACEFUL = 13
BINARY_NOT_FOUND = 14
EVENT_QUEUE_FULL = 15
IMAGE = 16
INVALID_STATE = 17
UNSUPPORTED = 18

PROGRESS_FN = CFUNCTYPE(None, c_double, c_void_p)

_P = c_void_p  # an opaque handle (qm_config *, qm_machine *): an id, never dereferenced
_OUT_STR = POINTER(c_void_p)  # char ** out-parameters: freed with qm_string_free()

# name: (restype, argtypes). Functions marked optional are those a newer library adds
# (issue 12 of qemu-machine); the binding works without them and says so when one is needed.
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "qm_config_new": (c_int, [POINTER(_P)]),
    "qm_config_from_json": (c_int, [c_char_p, POINTER(_P)]),
    "qm_config_set_binary": (c_int, [_P, c_char_p]),
    "qm_config_add_arg": (c_int, [_P, c_char_p]),
    "qm_config_set_accel": (c_int, [_P, c_int32]),
    "qm_config_set_launch_timeout_ms": (c_int, [_P, c_uint64]),
    "qm_config_set_qmp_timeout_ms": (c_int, [_P, c_uint64]),
    "qm_config_set_console": (c_int, [_P, c_bool]),
    "qm_config_set_console_log": (c_int, [_P, c_char_p]),
    "qm_config_set_temp_dir": (c_int, [_P, c_char_p]),
    "qm_config_add_fd": (c_int, [_P, c_int, c_uint32, c_char_p]),
    "qm_config_free": (None, [_P]),
    "qm_last_error_status": (c_int, []),
    "qm_last_error_message": (c_size_t, [c_char_p, c_size_t]),
    "qm_last_error_message_dup": (c_void_p, []),
    "qm_last_error_qmp_class": (c_size_t, [c_char_p, c_size_t]),
    "qm_last_error_qmp_desc": (c_size_t, [c_char_p, c_size_t]),
    "qm_status_name": (c_char_p, [c_int32]),
    "qm_string_free": (None, [c_void_p]),
    "qm_guardian_start": (c_int, [POINTER(c_int32)]),
    "qm_guardian_pid": (c_int32, []),
    "qm_image_info": (c_int, [c_char_p, _OUT_STR]),
    "qm_image_create": (c_int, [c_char_p, c_char_p, c_uint64]),
    "qm_image_resize": (c_int, [c_char_p, c_uint64, c_bool]),
    "qm_image_convert": (c_int, [c_char_p, c_char_p, c_char_p, PROGRESS_FN, c_void_p]),
    "qm_machine_launch": (c_int, [_P, POINTER(_P)]),
    "qm_machine_attach_unix": (c_int, [c_char_p, c_int64, POINTER(_P)]),
    "qm_machine_attach_tcp": (c_int, [c_char_p, c_int64, POINTER(_P)]),
    "qm_machine_execute": (c_int, [_P, c_char_p, c_char_p, c_int64, _OUT_STR]),
    "qm_machine_execute_oob": (c_int, [_P, c_char_p, c_char_p, c_int64, _OUT_STR]),
    "qm_machine_events": (c_int, [_P, _OUT_STR]),
    "qm_machine_events_dropped": (c_int, [_P, POINTER(c_uint64)]),
    "qm_machine_event_wait": (c_int, [_P, c_char_p, c_char_p, c_int64, _OUT_STR]),
    "qm_machine_console_read": (c_int, [_P, POINTER(c_uint8), c_size_t, POINTER(c_size_t)]),
    "qm_machine_console_write": (
        c_int,
        [_P, POINTER(c_uint8), c_size_t, c_int64, POINTER(c_size_t)],
    ),
    "qm_machine_console_wait_for": (
        c_int,
        [_P, c_char_p, c_int64, _OUT_STR, POINTER(c_size_t)],
    ),
    "qm_machine_send_fd": (c_int, [_P, c_int, c_char_p]),
    "qm_machine_pid": (c_int, [_P, POINTER(c_int32)]),
    "qm_machine_status": (c_int, [_P, _OUT_STR]),
    "qm_machine_pause": (c_int, [_P]),
    "qm_machine_resume": (c_int, [_P]),
    "qm_machine_reset": (c_int, [_P]),
    "qm_machine_powerdown": (c_int, [_P, c_int64]),
    "qm_machine_shutdown": (c_int, [_P, c_int64]),
    "qm_machine_kill": (c_int, [_P]),
    "qm_machine_wait": (c_int, [_P, c_int64]),
    "qm_machine_exit_status": (c_int, [_P, POINTER(c_int32), POINTER(c_int32)]),
    "qm_machine_log": (c_int, [_P, _OUT_STR, POINTER(c_size_t)]),
    "qm_machine_forwarded_port": (c_int, [_P, c_char_p, _OUT_STR]),
    "qm_machine_vnc_socket": (c_int, [_P, _OUT_STR]),
    "qm_machine_screendump": (c_int, [_P, c_char_p, c_char_p, _OUT_STR]),
    "qm_machine_free": (None, [_P]),
    "qm_version": (c_uint32, []),
    "qm_version_string": (c_char_p, []),
}

#: Functions of a newer library (qemu-machine issue 12 and later), bound when present.
_OPTIONAL: dict[str, tuple[Any, list[Any]]] = {
    "qm_config_set_qmp": (c_int, [_P, c_bool]),
    "qm_config_add_qmp_listen": (c_int, [_P, c_char_p]),
    "qm_config_set_monitor_null": (c_int, [_P, c_bool]),
    "qm_config_set_console_device": (c_int, [_P, c_char_p, c_uint32]),
    "qm_config_set_console_pty": (c_int, [_P, c_bool]),
    "qm_config_set_name": (c_int, [_P, c_char_p]),
    "qm_config_set_log_dir": (c_int, [_P, c_char_p]),
    "qm_machine_is_running": (c_int, [_P, POINTER(c_bool)]),
    "qm_machine_log_path": (c_int, [_P, _OUT_STR]),
    "qm_machine_console_pty": (c_int, [_P, _OUT_STR]),
    "qm_machine_qmp_listen_addresses": (c_int, [_P, _OUT_STR]),
    "qm_machine_next_event": (c_int, [_P, c_int64, _OUT_STR]),
    "qm_machine_events_wait": (c_int, [_P, c_char_p, c_int64, _OUT_STR]),
    "qm_machine_execute_raw": (c_int, [_P, c_char_p, c_int64, _OUT_STR]),
    "qm_machine_wait_or_kill": (c_int, [_P, c_int64]),
    # The power state (added later still; bound when present, like the rest of this table).
    "qm_machine_power_state": (c_int, [_P, POINTER(c_int32)]),
    "qm_machine_power_wait_change": (c_int, [_P, c_int64, POINTER(c_int32)]),
}


class Library:
    """A loaded libqemumachine: ``lib.fn(...)`` calls a C function with its prototype."""

    def __init__(self, path: str):
        try:
            self.cdll = ctypes.CDLL(path)
        except OSError as e:
            raise errors.LibraryNotFound(f"loading {path}: {e}. {install_hint()}") from None
        self.path = path
        for name, (restype, argtypes) in _PROTOTYPES.items():
            try:
                fn = getattr(self.cdll, name)
            except AttributeError:
                raise errors.LibraryNotFound(
                    f"{path} has no {name}: not a libqemumachine {ABI[0]}.{ABI[1]}. "
                    + install_hint()
                ) from None
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)
        self.optional: set[str] = set()
        for name, (restype, argtypes) in _OPTIONAL.items():
            fn = getattr(self.cdll, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = restype, argtypes
                setattr(self, name, fn)
                self.optional.add(name)
        version = self.qm_version()
        found = (version // 10000, version // 100 % 100)
        if found != ABI:
            raise errors.LibraryNotFound(
                f"{path} is libqemumachine {self.qm_version_string().decode()}, "
                f"this binding needs {ABI[0]}.{ABI[1]}.x. {install_hint()}"
            )

    def has(self, name: str) -> bool:
        """Whether the loaded library has the C function ``name``."""
        return name in _PROTOTYPES or name in self.optional

    def need(self, name: str, what: str) -> Callable[..., int]:
        """The optional function ``name``, or a ``LibraryError`` saying that ``what`` needs a
        newer libqemumachine."""
        if name not in self.optional:
            raise errors.LibraryError(
                f"{what} needs {name}(), which {self.path} "
                f"(libqemumachine {self.version()}) does not have: install a newer libqemumachine"
            )
        return getattr(self, name)

    def version(self) -> str:
        """The library's version string, e.g. ``"0.1.0"``."""
        return self.qm_version_string().decode()

    # -- errors -----------------------------------------------------------------------------

    def _error_text(self, fn: Callable[[Optional[bytes], int], int]) -> str:
        n = fn(None, 0)
        if n == 0:
            return ""
        buf = ctypes.create_string_buffer(n + 1)
        fn(buf, n + 1)
        return buf.value.decode("utf-8", "replace")

    def last_error(self, status: int, context: str = "") -> Exception:
        """The exception for ``status``, with the calling thread's last error. Call it on the
        thread of the failing call, before any other library call."""
        ptr = self.qm_last_error_message_dup()
        message = take_string(self, ptr).decode("utf-8", "replace") if ptr else ""
        qmp_class = self._error_text(self.qm_last_error_qmp_class)
        qmp_desc = self._error_text(self.qm_last_error_qmp_desc)
        name = self.qm_status_name(status).decode()
        exc: Exception
        if status == QMP_ERROR:
            exc = errors.ExecuteError(context, qmp_class, qmp_desc)
        elif status in (DISCONNECTED, PROCESS_EXITED):
            exc = errors.ExecInterruptedError(f"{context}: {message}" if context else message)
        elif status == TIMEOUT:
            exc = errors.LibraryTimeout(f"{context}: {message}" if context else message)
        else:
            exc = errors.LibraryError(
                f"{context}: {name}: {message}" if context else f"{name}: {message}"
            )
        return errors._with_status(exc, status, name, message)

    def check(self, status: int, context: str = "") -> None:
        """Raises the exception of a failed call (``status`` not 0)."""
        if status != OK:
            raise self.last_error(status, context)


def take_string(lib: Library, ptr: Optional[int], length: Optional[int] = None) -> bytes:
    """Copies a string the library allocated (``char **`` out-parameter) and frees it."""
    if not ptr:
        return b""
    try:
        return ctypes.string_at(ptr, length) if length is not None else ctypes.string_at(ptr)
    finally:
        lib.qm_string_free(ptr)


def take_json(lib: Library, ptr: Optional[int]) -> Any:
    """Parses and frees a JSON string the library allocated."""
    return json.loads(take_string(lib, ptr))


def install_hint() -> str:
    return (
        f"Install libqemumachine (soname {SONAME}): from a qemu-machine checkout, "
        "`scripts/install-lib.sh /usr/local` (as root), or the Debian packages: "
        "`apt-get install $(scripts/build-deb.sh)`; or set "
        f"{ENV_LIB}=/path/to/{SONAME}."
    )


def _candidates() -> list[str]:
    found = [SONAME]
    pkg_config = shutil.which("pkg-config")
    if pkg_config:
        try:
            out = subprocess.run(
                [pkg_config, "--variable=libdir", "qemumachine"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            libdir = out.stdout.strip()
            if out.returncode == 0 and libdir:
                found.append(os.path.join(libdir, SONAME))
        except (OSError, subprocess.SubprocessError):
            pass
    return found


_loaded: Optional[Library] = None
_load_lock = threading.Lock()


def library() -> Library:
    """The process's libqemumachine, loaded on first use (see the module's doc for where from).
    Raises ``LibraryNotFound`` with the install command when it cannot be found."""
    global _loaded
    with _load_lock:
        if _loaded is not None:
            return _loaded
        path = os.environ.get(ENV_LIB)
        if path:
            if not os.path.exists(path):
                raise errors.LibraryNotFound(f"{ENV_LIB}={path}: no such file. {install_hint()}")
            _loaded = Library(path)
            return _loaded
        tried = []
        for candidate in _candidates():
            try:
                ctypes.CDLL(candidate)
            except OSError as e:
                tried.append(f"{candidate} ({e})")
                continue
            _loaded = Library(candidate)
            return _loaded
        raise errors.LibraryNotFound(
            "libqemumachine not found (tried " + "; ".join(tried) + "). " + install_hint()
        )
