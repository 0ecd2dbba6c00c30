"""The exceptions of qemu_machine.

The class names follow QEMU's Python packages, so that code written against
``qemu.machine`` and ``qemu.qmp`` catches the same names:

* ``QEMUMachineError`` and its subclasses ``VMLaunchFailure``,
  ``AbnormalShutdown`` and ``QEMUMachineAddDeviceError`` (``qemu.machine``);
* ``QMPError`` and its subclasses ``ExecuteError`` (QEMU answered a command
  with an error), ``ExecInterruptedError`` (the connection closed while a
  command was waiting) and ``StateError`` (no QMP connection) (``qemu.qmp``).

Every failure reported by libqemumachine also carries the library's status:
``status`` (the ``qm_status`` number), ``status_name`` (``"QM_STATUS_..."``)
and ``message`` (the library's text). Failures that no QEMUMachine class
describes are ``LibraryError`` (a ``QEMUMachineError``); a deadline that
passed is ``LibraryTimeout``, which is also the built-in ``TimeoutError``
(what ``asyncio.TimeoutError`` is on Python 3.11), as QEMUMachine's
``event_wait`` raises.
"""

from __future__ import annotations

from typing import Optional


class QEMUMachineError(Exception):
    """An error of a QEMUMachine (QEMU's ``qemu.machine.QEMUMachineError``)."""


class QEMUMachineAddDeviceError(QEMUMachineError):
    """A request to add a device (or fd) that cannot be fulfilled as given."""


class VMLaunchFailure(QEMUMachineError):
    """QEMU could not be launched, or exited before QMP was ready.

    ``exitcode`` is QEMU's exit code (negative: the signal that ended it; None
    when it did not start), ``command`` the command line, ``output`` what QEMU
    printed (or the library's account of the failure).
    """

    def __init__(self, exitcode: Optional[int], command: str, output: Optional[str]):
        super().__init__(exitcode, command, output)
        self.exitcode = exitcode
        self.command = command
        self.output = output

    def __str__(self) -> str:
        lines = []
        if self.__cause__ is not None:
            cause = str(self.__cause__)
            lines.append(type(self.__cause__).__name__ + (f": {cause}" if cause else ""))
        if self.exitcode is not None:
            lines.append(f"\tExit code: {self.exitcode}")
        lines.append(f"\tCommand: {self.command}")
        lines.append(f"\tOutput: {self.output}")
        return "\n".join(lines) + "\n"


class AbnormalShutdown(QEMUMachineError):
    """A graceful shutdown was asked for and did not happen: QEMU was killed,
    or it had already gone away by itself."""


class QMPError(Exception):
    """The base of QMP errors (``qemu.qmp.QMPError``)."""


class ExecuteError(QMPError):
    """QEMU answered a command with an error (``qemu.qmp.ExecuteError``).

    ``error_class`` is QEMU's error class (``"GenericError"``,
    ``"CommandNotFound"``, ...), ``desc`` its description, ``cmd`` the command.
    """

    def __init__(self, cmd: str, error_class: str, desc: str):
        super().__init__(cmd, error_class, desc)
        self.cmd = cmd
        self.error_class = error_class
        self.desc = desc

    def __str__(self) -> str:
        return f"{self.cmd}: {self.error_class}: {self.desc}"


class ExecInterruptedError(QMPError):
    """The QMP connection closed before the reply came (QEMU exited)."""


class StateError(QMPError):
    """A QMP operation without a QMP connection (not launched, or shut down)."""


class LibraryError(QEMUMachineError):
    """A failure libqemumachine reported that no class above describes."""


class LibraryTimeout(LibraryError, TimeoutError):
    """A deadline passed (``QM_STATUS_TIMEOUT``); also a ``TimeoutError``."""


class LibraryNotFound(QEMUMachineError, ImportError):
    """libqemumachine could not be loaded; the message says how to install it."""


def _with_status(exc: Exception, status: int, status_name: str, message: str) -> Exception:
    exc.status = status  # type: ignore[attr-defined]
    exc.status_name = status_name  # type: ignore[attr-defined]
    exc.message = message  # type: ignore[attr-defined]
    return exc


__all__ = [
    "QEMUMachineError",
    "QEMUMachineAddDeviceError",
    "VMLaunchFailure",
    "AbnormalShutdown",
    "QMPError",
    "ExecuteError",
    "ExecInterruptedError",
    "StateError",
    "LibraryError",
    "LibraryTimeout",
    "LibraryNotFound",
]
