"""Helpers the qemu_machine tests import (a module of its own, not conftest: pytest runs these
tests beside the driver's, whose conftest would shadow a ``from conftest import``)."""

from __future__ import annotations


def guest_args(fixture: dict, extra_append: str = "") -> list[str]:
    """QEMU arguments that boot the busybox guest under TCG with its console on ttyS0 (the
    caller adds the serial port)."""
    append = "console=ttyS0 panic=-1 quiet " + extra_append
    return [
        "-machine", "q35", "-accel", "tcg", "-m", "256M", "-nodefaults", "-no-reboot",
        "-kernel", fixture["kernel"], "-initrd", fixture["initrd"], "-append", append.strip(),
    ]
