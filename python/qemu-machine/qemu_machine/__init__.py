"""qemu_machine: launch and control QEMU from Python through libqemumachine (ctypes).

* :class:`QEMUMachine`: QEMU's python/qemu/machine ``QEMUMachine``, same parameters, methods
  and exceptions, on the library;
* :class:`Machine` and :class:`Config`: the library's own objects, one method per C function
  (VM descriptions with disks, cloud-init seeds, port forwards, VNC, the library's console);
* :mod:`qemu_machine.image`: qemu-img through the library.

The library is loaded on first use: ``QEMU_MACHINE_LIB`` names it, else the dynamic loader
finds ``libqemumachine.so.0.1``, else pkg-config's ``qemumachine``.
"""

from .errors import (
    AbnormalShutdown,
    ExecInterruptedError,
    ExecuteError,
    LibraryError,
    LibraryNotFound,
    LibraryTimeout,
    QEMUMachineAddDeviceError,
    QEMUMachineError,
    QMPError,
    StateError,
    VMLaunchFailure,
)
from .machine import Config, Machine, PowerState, guardian_pid, version
from .qemumachine import QEMUMachine

__version__ = "0.1.0"

__all__ = [
    "QEMUMachine",
    "Machine",
    "Config",
    "PowerState",
    "guardian_pid",
    "version",
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
