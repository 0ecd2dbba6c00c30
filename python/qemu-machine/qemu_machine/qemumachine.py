"""``QEMUMachine``: QEMU's python/qemu/machine class, on libqemumachine.

The constructor parameters and the methods have the semantics of QEMU's ``QEMUMachine``
(documented on each method here); what differs comes from the library, which is better at it:

* QEMU is spawned by the library's guardian, not ``subprocess``: if this process dies, even
  by SIGKILL, QEMU dies with it, and its temp dir goes.
* QMP is the library's socketpair connection, negotiated before ``launch()`` returns.
* ``add_fd`` passes a duplicate of the descriptor (made at ``launch()``), so it need not be
  inheritable.
* ``send_fd_scm(fd)`` keeps the descriptor until the next ``getfd`` command (``qmp``,
  ``cmd``), which sends it with that command (QMP's pairing of SCM_RIGHTS with ``getfd``);
  ``send_fd_scm(fd, name=...)`` does both at once.

Needs a newer libqemumachine (issue 12's functions) and says so at ``launch()`` otherwise:
``monitor_address``, ``set_qmp_monitor(False)``. ``log_dir`` and ``name`` work with either:
with libqemumachine 0.1.0 the log file is written from the captured log when QEMU has exited.
"""

from __future__ import annotations

import locale
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from types import TracebackType
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import _lib, errors
from .console_socket import ConsoleSocket
from .errors import (
    AbnormalShutdown,
    ExecuteError,
    QEMUMachineAddDeviceError,
    QEMUMachineError,
    VMLaunchFailure,
)
from .machine import Config, Machine

LOG = logging.getLogger(__name__)

QMPMessage = Dict[str, Any]
QMPReturnValue = Any
SocketAddrT = Union[str, Tuple[str, int]]

_T = TypeVar("_T", bound="QEMUMachine")

#: What "no timeout" becomes for the library (which takes milliseconds): ten years.
_FOREVER = 10 * 365 * 24 * 3600.0


def _seconds(timeout: Optional[float]) -> float:
    return _FOREVER if timeout is None else float(timeout)


class QEMUMachine:
    """A QEMU VM (QEMU's ``qemu.machine.QEMUMachine``).

    Use it as a context manager to make sure QEMU is gone afterwards::

        with QEMUMachine("qemu-system-x86_64", args=["-machine", "none"]) as vm:
            vm.launch()
            print(vm.cmd("query-status"))
        # shut down here

    ``binary``: the QEMU program; ``args``: its arguments; ``wrapper``: a command QEMU's
    command line is appended to; ``name``: names the log and console socket files (default
    from ``id(self)``); ``base_temp_dir``: where the temp dir is made; ``monitor_address``: a
    QMP server (unix path or ``(host, port)``) for another client; ``sock_dir``: where the
    console socket goes (default the temp dir); ``drain_console``: read the console into memory
    all the time; ``console_log``: a file that gets the console output (implies draining);
    ``log_dir``: where QEMU's log ``NAME.log`` is kept (default the temp dir, removed at
    shutdown); ``qmp_timer``: the QMP timeout in seconds (None: none). Keyword-only extras:
    ``accel`` (``"none"``, the default, adds no accelerator, as QEMUMachine; ``"auto"``,
    ``"kvm"``, ``"tcg"``), ``launch_timeout`` (seconds, default ``qmp_timer``).
    """

    def __init__(
        self,
        binary: str,
        args: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        name: Optional[str] = None,
        base_temp_dir: str = "/var/tmp",
        monitor_address: Optional[SocketAddrT] = None,
        sock_dir: Optional[str] = None,
        drain_console: bool = False,
        console_log: Optional[str] = None,
        log_dir: Optional[str] = None,
        qmp_timer: Optional[float] = 30,
        *,
        accel: str = "none",
        launch_timeout: Optional[float] = None,
    ):
        self._binary = binary
        self._args = list(args)
        self._wrapper = list(wrapper)
        self._name = name or f"{id(self):x}"
        self._base_temp_dir = base_temp_dir
        self._monitor_address = monitor_address
        self._sock_dir = sock_dir
        self._console_log_path = console_log
        self._drain_console = drain_console or console_log is not None
        self._log_dir = log_dir
        self._qmp_timer = qmp_timer
        self._accel = accel
        self._launch_timeout = launch_timeout if launch_timeout is not None else qmp_timer

        self._temp_dir: Optional[str] = None
        self._machine: Optional[Machine] = None
        self._launched = False
        self._events: List[QMPMessage] = []
        self._iolog: Optional[str] = None
        self._exitcode: Optional[int] = None
        self._qmp_set = True
        self._machine_type: Optional[str] = None
        self._console_set = False
        self._console_device_type: Optional[str] = None
        self._console_index = 0
        self._console_socket: Optional[ConsoleSocket] = None
        self._fds: List[Tuple[int, int, str]] = []
        self._scm_fd: Optional[int] = None
        self._quit_issued = False
        self._user_killed = False
        self._qemu_full_args: Tuple[str, ...] = ()

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_val: Optional[BaseException],
        exc_tb: Optional[TracebackType],
    ) -> None:
        self.shutdown()

    # -- configuration before launch ---------------------------------------------------------

    @property
    def args(self) -> List[str]:
        """The extra arguments given to QEMU (a list the caller may change before launch)."""
        return self._args

    def add_args(self, *args: str) -> None:
        """Appends arguments for QEMU."""
        self._args.extend(args)

    def set_machine(self, machine_type: str) -> None:
        """Adds ``-machine machine_type`` to the base arguments."""
        self._machine_type = machine_type

    def add_monitor_null(self) -> None:
        """Adds an unused human monitor (``-monitor null``)."""
        self._args.extend(["-monitor", "null"])

    def set_qmp_monitor(self, enabled: bool = True) -> None:
        """Launches with (default) or without a QMP monitor. Call before ``launch()``."""
        self._qmp_set = enabled

    def set_console(self, device_type: Optional[str] = None, console_index: int = 0) -> None:
        """Puts the guest's console on a socket (:attr:`console_socket`): on the machine's
        serial port (``-serial``) when ``device_type`` is None, else on a device of that type
        (``"isa-serial"``, ``"virtconsole"`` with a virtio-serial bus, ...) with
        ``console_index`` serial ports connected to nothing before it."""
        self._console_set = True
        self._console_device_type = device_type
        self._console_index = console_index

    def add_fd(self: _T, fd: int, fdset: int, opaque: str, opts: str = "") -> _T:
        """Passes ``fd`` to QEMU at launch in fdset ``fdset`` with ``opaque`` (``-add-fd``).
        The descriptor must stay open until ``launch()``, which duplicates it."""
        if opts:
            raise QEMUMachineAddDeviceError(
                f"add_fd: opts {opts!r}: -add-fd takes only fd, set and opaque"
            )
        os.fstat(fd)  # a closed descriptor fails here, naming itself
        self._fds.append((fd, fdset, opaque))
        return self

    @property
    def temp_dir(self) -> str:
        """A private temp dir for this machine, made on first use in ``base_temp_dir`` and
        removed at shutdown."""
        if self._temp_dir is None:
            self._temp_dir = tempfile.mkdtemp(prefix="qemu-machine-", dir=self._base_temp_dir)
        return self._temp_dir

    @property
    def sock_dir(self) -> str:
        """Where the console socket goes."""
        return self._sock_dir or self.temp_dir

    @property
    def log_dir(self) -> str:
        """Where QEMU's log is written."""
        return self._log_dir if self._log_dir is not None else self.temp_dir

    @property
    def _console_address(self) -> str:
        return os.path.join(self.sock_dir, f"{self._name}.con")

    @property
    def _base_args(self) -> List[str]:
        args = ["-vga", "none"]
        if self._machine_type is not None:
            args += ["-machine", self._machine_type]
        if self._console_set:
            args += ["-serial", "null"] * self._console_index
            args += [
                "-chardev",
                f"socket,id=console,path={self._console_address},server=on,wait=off",
            ]
            if self._console_device_type is None:
                args += ["-serial", "chardev:console"]
            else:
                args += ["-device", f"{self._console_device_type},chardev=console"]
        return args

    # -- launch ------------------------------------------------------------------------------

    def launch(self) -> None:
        """Launches QEMU and connects QMP. On failure everything is cleaned up and
        ``VMLaunchFailure`` carries QEMU's exit code, command line and output (also in
        :meth:`get_log`)."""
        if self._launched:
            raise QEMUMachineError("VM already launched")
        try:
            self._launch()
        except Exception as exc:
            exitcode, command, output = self._launch_details(exc)
            self._iolog = output
            self._exitcode = exitcode
            self._cleanup_files()
            raise VMLaunchFailure(exitcode=exitcode, command=command, output=output) from exc

    def _config(self) -> Config:
        base = self._base_args
        self._qemu_full_args = tuple(self._wrapper + [self._binary] + base + self._args)
        description = {
            "binary": self._binary,
            "args": base + self._args,
            "accel": self._accel,
            "wrapper": self._wrapper,
            "temp_dir": self._base_temp_dir,
            "qmp_timeout_ms": int(_seconds(self._qmp_timer) * 1000),
            "launch_timeout_ms": int(_seconds(self._launch_timeout) * 1000),
        }
        config = Config(description)
        try:
            for fd, fdset, opaque in self._fds:
                config.add_fd(fd, fdset, opaque)
            if not self._qmp_set:
                config.set_qmp(False)
            if self._monitor_address is not None:
                if isinstance(self._monitor_address, tuple):
                    host, port = self._monitor_address
                    config.add_qmp_listen(f"tcp:{host}:{port}")
                else:
                    config.add_qmp_listen(f"unix:{self._monitor_address}")
            lib = config._lib
            if lib.has("qm_config_set_name"):
                config.set_name(self._name)
            if self._log_dir is not None and lib.has("qm_config_set_log_dir"):
                config.set_log_dir(self._log_dir)
        except BaseException:
            config.close()
            raise
        return config

    def _launch(self) -> None:
        if self._console_set:
            # QEMU makes the socket; an old one of the same name would be in its way.
            _remove_if_exists(self._console_address)
        config = self._config()
        try:
            LOG.debug("VM launch command: %r", " ".join(self._qemu_full_args))
            self._machine = Machine.launch(config)
        finally:
            config.close()
        self._launched = True
        self._events = []
        self._iolog = None
        self._exitcode = None

    def _launch_details(self, exc: Exception) -> Tuple[Optional[int], str, Optional[str]]:
        command = " ".join(self._qemu_full_args)
        message = getattr(exc, "message", None) or str(exc)
        if getattr(exc, "status", None) != _lib.LAUNCH_FAILED:
            return None, command, message
        exitcode = None
        m = re.search(r"\(exit status: (-?\d+)\)", message)
        if m:
            exitcode = int(m.group(1))
        else:
            m = re.search(r"\(signal: (\d+)", message)
            if m:
                exitcode = -int(m.group(1))
        m = re.search(r"; command: (.*?); (?:its output:\n|it printed nothing)", message, re.S)
        if m:
            command = m.group(1)
        output = message.split("; its output:\n", 1)[1] if "; its output:\n" in message else ""
        return exitcode, command, output

    # -- state -------------------------------------------------------------------------------

    @property
    def machine(self) -> Machine:
        """The library's machine (console, forwards, power button, ...) while launched."""
        if self._machine is None:
            raise QEMUMachineError("the VM is not launched")
        return self._machine

    def is_running(self) -> bool:
        """Whether QEMU runs."""
        return self._machine is not None and self._machine.is_running()

    def exitcode(self) -> Optional[int]:
        """QEMU's exit code once it has exited (negative: the signal that ended it), else None."""
        if self._machine is None:
            return self._exitcode
        if self._machine.is_running():
            return None
        status = self._machine.exit_status()
        if status is None:
            return None
        code, sig = status
        return -sig if sig else code

    def get_pid(self) -> Optional[int]:
        """QEMU's pid while it runs, else None."""
        if not self.is_running():
            return None
        return self.machine.pid()

    def get_log(self) -> Optional[str]:
        """What QEMU printed, after shutdown (or a failed launch); None before."""
        return self._iolog

    # -- QMP ---------------------------------------------------------------------------------

    @property
    def _qmp(self) -> Machine:
        if self._machine is None or not self._qmp_set:
            raise QEMUMachineError("Attempt to access QMP with no connection")
        return self._machine

    @staticmethod
    def _qmp_args(conv_keys: bool, args: Dict[str, Any]) -> Dict[str, Any]:
        if conv_keys:
            return {k.replace("_", "-"): v for k, v in args.items()}
        return args

    def qmp(
        self,
        cmd: str,
        args_dict: Optional[Dict[str, object]] = None,
        conv_keys: Optional[bool] = None,
        **args: Any,
    ) -> QMPMessage:
        """Runs a QMP command and returns QEMU's reply as a dict: ``{"return": ...}`` or
        ``{"error": {"class": ..., "desc": ...}}`` (an error reply does not raise). Keyword
        arguments have ``_`` turned into ``-`` unless ``conv_keys`` is False; ``args_dict`` is
        passed as it is."""
        if args_dict is not None:
            if args or conv_keys is not None:
                raise ValueError("qmp: give args_dict or keyword arguments, not both")
            qmp_args = dict(args_dict)
        else:
            qmp_args = self._qmp_args(True if conv_keys is None else conv_keys, args)
        machine = self._qmp
        try:
            if cmd == "getfd" and self._scm_fd is not None:
                self._send_pending_fd(str(qmp_args.get("fdname", "")))
                ret: QMPMessage = {"return": {}}
            elif machine.has("qm_machine_execute_raw"):
                request: Dict[str, Any] = {"execute": cmd}
                if qmp_args:
                    request["arguments"] = qmp_args
                ret = machine.execute_raw(request)
            else:
                ret = {"return": machine.execute(cmd, qmp_args or None)}
        except ExecuteError as e:
            ret = {"error": {"class": e.error_class, "desc": e.desc}}
        if cmd == "quit" and "return" in ret:
            self._quit_issued = True
        return ret

    def cmd(self, cmd: str, args_dict: Optional[Dict[str, object]] = None,
            conv_keys: bool = True, **args: Any) -> QMPReturnValue:
        """Runs a QMP command and returns its ``return`` value; an error reply raises
        ``ExecuteError``."""
        reply = self.qmp(cmd, args_dict, None if args_dict is not None else conv_keys, **args)
        if "error" in reply:
            raise ExecuteError(cmd, reply["error"].get("class", ""), reply["error"].get("desc", ""))
        return reply["return"]

    def command(self, cmd: str, conv_keys: bool = True, **args: Any) -> QMPReturnValue:
        """``cmd`` under its older name."""
        return self.cmd(cmd, conv_keys=conv_keys, **args)

    def send_fd_scm(self, fd: Optional[int] = None, file_path: Optional[str] = None,
                    name: Optional[str] = None) -> int:
        """Sends a descriptor (``fd``, or ``file_path`` opened read-only; exactly one) to
        QEMU by SCM_RIGHTS, paired with the next ``getfd`` command (or at once, as ``getfd``
        with ``name``). Returns 0."""
        if (fd is None) == (file_path is None):
            raise ValueError("send_fd_scm: give exactly one of fd and file_path")
        machine = self._qmp
        if file_path is not None:
            new = os.open(file_path, os.O_RDONLY | os.O_CLOEXEC)
        else:
            assert fd is not None
            new = os.dup(fd)
        if self._scm_fd is not None:
            os.close(self._scm_fd)
        self._scm_fd = new
        if name is not None:
            self._send_pending_fd(name)
        del machine
        return 0

    def _send_pending_fd(self, name: str) -> None:
        fd, self._scm_fd = self._scm_fd, None
        assert fd is not None
        try:
            self._qmp.send_fd(fd, name)
        finally:
            os.close(fd)

    # -- events ------------------------------------------------------------------------------

    def get_qmp_event(self, wait: Union[bool, float] = False) -> Optional[QMPMessage]:
        """Takes one event: the oldest kept, else one QEMU has sent; with ``wait`` (True: for
        ever; a number: that many seconds, then ``TimeoutError``) waits for the next."""
        if self._events:
            return self._events.pop(0)
        machine = self._qmp
        if wait is False or wait == 0:
            fresh = machine.events()
            if not fresh:
                return None
            self._events.extend(fresh[1:])
            return fresh[0]
        if wait is True:
            while True:
                try:
                    return machine.next_event(3600.0)
                except errors.LibraryTimeout:
                    continue
        return machine.next_event(float(wait))

    def get_qmp_events(self, wait: Union[bool, float] = False) -> List[QMPMessage]:
        """Takes every event kept and sent so far, oldest first; with ``wait`` and none there,
        waits for one as :meth:`get_qmp_event` does."""
        events = self._events + self._qmp.events()
        self._events = []
        if not events and wait is not False and wait != 0:
            event = self.get_qmp_event(wait)
            if event is not None:
                events.append(event)
        return events

    def clear_events(self) -> None:
        """Forgets every event kept or sent so far."""
        self._events = []
        if self._machine is not None:
            self._machine.events()

    @staticmethod
    def event_match(event: Any, match: Optional[Any]) -> bool:
        """Whether ``event`` matches ``match``: None matches anything; a dict matches a dict
        that has each of its keys with a matching value (recursively); anything else must be
        equal. (So a None value in ``match`` matches any value.)"""
        if match is None:
            return True
        if isinstance(match, dict):
            if not isinstance(event, dict):
                return False
            return all(k in event and QEMUMachine.event_match(event[k], v) for k, v in match.items())
        return bool(match == event)

    def event_wait(self, name: str, timeout: Optional[float] = 60.0,
                   match: Optional[QMPMessage] = None) -> Optional[QMPMessage]:
        """Waits up to ``timeout`` seconds for an event named ``name`` that matches ``match``
        (see :meth:`event_match`) and returns it; events that do not match are kept. A timeout
        raises ``TimeoutError``; with ``timeout`` 0 or None only events already there are
        looked at, and None is returned when none matches."""
        return self.events_wait([(name, match)], timeout)

    def events_wait(self, events: Sequence[Tuple[str, Any]],
                    timeout: Optional[float] = 60.0) -> Optional[QMPMessage]:
        """Like :meth:`event_wait` for the first event matching any of ``(name, match)``."""

        def wanted(event: QMPMessage) -> bool:
            return any(event.get("event") == n and self.event_match(event, m) for n, m in events)

        for event in self._events:
            if wanted(event):
                self._events.remove(event)
                return event
        machine = self._qmp
        if not timeout:
            found = None
            for event in machine.events():
                if found is None and wanted(event):
                    found = event
                else:
                    self._events.append(event)
            return found
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.LibraryTimeout(f"no event {[n for n, _ in events]} in {timeout} s")
            event = machine.next_event(remaining)
            if wanted(event):
                return event
            self._events.append(event)

    # -- console -----------------------------------------------------------------------------

    @property
    def console_socket(self) -> ConsoleSocket:
        """A socket connected to the console (after ``set_console()`` and ``launch()``)."""
        if self._console_socket is None:
            if not self._console_set:
                raise QEMUMachineError("no console: call set_console() before launch()")
            self._console_socket = ConsoleSocket(
                self._console_address, file=self._console_log_path, drain=self._drain_console
            )
        return self._console_socket

    # -- shutdown ----------------------------------------------------------------------------

    def _early_cleanup(self) -> None:
        # A console nobody reads could keep QEMU from exiting: close it first.
        if self._console_socket is not None:
            self._console_socket.close()
            self._console_socket = None

    def _do_shutdown(self, timeout: Optional[float]) -> None:
        machine = self.machine
        self._early_cleanup()
        if self._quit_issued:
            if not machine.wait_or_kill(_seconds(timeout)):
                raise AbnormalShutdown("Could not perform graceful shutdown") from TimeoutError(
                    f"QEMU did not exit within {timeout} s"
                )
            return
        if not self._qmp_set:
            if not machine.shutdown(_seconds(timeout)):
                raise AbnormalShutdown("Could not perform graceful shutdown")
            return
        if not machine.is_running():
            raise AbnormalShutdown("Could not perform graceful shutdown") from errors.ExecInterruptedError(
                "QEMU had exited before shutdown (use wait() for a guest that powers off)"
            )
        if not machine.shutdown(_seconds(timeout)):
            raise AbnormalShutdown("Could not perform graceful shutdown") from TimeoutError(
                f"QEMU did not exit within {timeout} s of quit"
            )

    def shutdown(self, hard: bool = False, timeout: Optional[float] = 30) -> None:
        """Stops QEMU and cleans up: ``quit`` and up to ``timeout`` seconds (None: no limit)
        for QEMU to exit, then SIGKILL (``AbnormalShutdown``, also when QEMU had exited by
        itself without ``wait()``); with ``hard``, SIGKILL at once. Does nothing if not
        launched."""
        if not self._launched:
            return
        try:
            if hard:
                self._user_killed = True
                self._early_cleanup()
                self.machine.kill()
            else:
                self._do_shutdown(timeout)
        finally:
            self._post_shutdown()

    def kill(self) -> None:
        """Kills QEMU (SIGKILL), waits for it and cleans up."""
        self.shutdown(hard=True)

    def wait(self, timeout: Optional[float] = 30) -> None:
        """Waits up to ``timeout`` seconds (None: no limit) for QEMU to exit by itself (a guest
        that powers off), then cleans up; kills it and raises ``AbnormalShutdown`` if it does
        not."""
        self._quit_issued = True
        self.shutdown(timeout=timeout)

    def _post_shutdown(self) -> None:
        machine = self._machine
        if machine is not None:
            try:
                self._exitcode = self.exitcode()
                _, encoding = locale.getlocale()
                self._iolog = machine.log().decode(encoding or "utf-8", "replace")
            finally:
                self._machine = None
                machine.close()
            if self._log_dir is not None and not machine.has("qm_config_set_log_dir"):
                os.makedirs(self._log_dir, exist_ok=True)
                path = os.path.join(self._log_dir, f"{self._name}.log")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
                    f.write(self._iolog or "")
        self._cleanup_files()
        code = self._exitcode
        if code is not None and code < 0 and not (self._user_killed and code == -signal.SIGKILL):
            LOG.warning('qemu received signal %i; command: "%s"', -code, " ".join(self._qemu_full_args))
        self._quit_issued = False
        self._user_killed = False
        self._launched = False

    def _cleanup_files(self) -> None:
        self._early_cleanup()
        if self._scm_fd is not None:
            os.close(self._scm_fd)
            self._scm_fd = None
        if self._console_set and self._sock_dir:
            _remove_if_exists(self._console_address)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __del__(self) -> None:
        # A forgotten machine: the library kills QEMU when its handle is collected; the temp
        # dir is ours to remove.
        try:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
        except Exception:  # noqa: BLE001 - nothing may escape __del__
            pass


def _remove_if_exists(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
