"""Fixtures for the qemu_machine tests: a real QEMU, the busybox guest fixture, and checks that
nothing is left behind. A missing prerequisite fails with the command that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        pytest.fail("qemu-system-x86_64 is not installed: apt-get install -y qemu-system-x86")
    return path


@pytest.fixture(scope="session")
def guest_fixture() -> dict:
    """The busybox guest (kernel + initramfs) of tests/src/fixture.rs, built by its binary."""
    cmd = ["cargo", "run", "-q", "-p", "qemu-machine-tests", "--bin", "build-fixture", "--locked"]
    if shutil.which("cargo") is None:
        pytest.fail("cargo is not installed (https://rustup.rs); the guest fixture needs it: " + " ".join(cmd))
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"building the guest fixture failed ({' '.join(cmd)}):\n{out.stderr}")
    found = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(":")
        if key in ("kernel", "initrd") and key not in found:
            found[key] = value.strip()
    if set(found) != {"kernel", "initrd"}:
        pytest.fail(f"{' '.join(cmd)} printed no kernel/initrd lines:\n{out.stdout}")
    return found


def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids


def _descendants() -> set[int]:
    """Every process below this one but the library's guardian (which lives as long as we do)."""
    import qemu_machine

    guardian = qemu_machine.guardian_pid()
    todo, seen = [os.getpid()], set()
    while todo:
        for kid in _children(todo.pop()):
            if kid not in seen:
                seen.add(kid)
                todo.append(kid)
    return {p for p in seen if p != guardian}


@pytest.fixture
def no_leaks(tmp_path):
    """Yields a base temp dir; afterwards no QEMU may be left running, and the dir is empty."""
    base = tmp_path / "base"
    base.mkdir()
    yield str(base)
    import time

    deadline = time.monotonic() + 10
    left = {}
    while time.monotonic() < deadline:
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")
                for p in _descendants() if Path(f"/proc/{p}").exists()}
        qemus = {p: c for p, c in left.items() if b"qemu-system" in c}
        if not qemus:
            break
        time.sleep(0.05)
    assert not {p: c for p, c in left.items() if b"qemu-system" in c}, f"QEMU left running: {left}"
    assert list(base.iterdir()) == [], f"left in the temp dir: {list(base.iterdir())}"
