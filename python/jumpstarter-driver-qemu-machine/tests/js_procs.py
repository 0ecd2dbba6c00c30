"""Helpers the driver's tests import (a module of its own, not conftest: pytest runs these tests
beside the qemu_machine ones, whose conftest would shadow a ``from conftest import``)."""

from __future__ import annotations

from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
