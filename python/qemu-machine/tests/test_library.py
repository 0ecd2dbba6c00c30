"""Where the binding finds libqemumachine, what it says when it cannot, the library's guardian
when the Python process dies, and QEMUMachine's monitor choices (no QMP, a QMP server for
another client, ``-monitor null``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qemu_machine import QEMUMachine, QEMUMachineError

PREFIX = os.environ.get("QM_TEST_PREFIX")
SONAME = "libqemumachine.so.0.1"


def run_python(code: str, **env_changes: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


LOAD = """
import qemu_machine
from qemu_machine import _lib
try:
    print("loaded", _lib.library().path)
except qemu_machine.LibraryNotFound as e:
    assert isinstance(e, ImportError)
    print("not found", e)
"""

SYSTEM_HAS_IT = """
import ctypes
try:
    ctypes.CDLL("libqemumachine.so.0.1")
    print("yes")
except OSError:
    print("no")
"""


def prefix() -> Path:
    if not PREFIX:
        pytest.fail("QM_TEST_PREFIX is not set: run these tests with scripts/test-python.sh")
    return Path(PREFIX)


def system_has_library() -> bool:
    """Whether the dynamic loader finds the library without LD_LIBRARY_PATH (installed)."""
    out = run_python(SYSTEM_HAS_IT, LD_LIBRARY_PATH=None)
    return out.stdout.strip() == "yes"


def test_qemu_machine_lib_names_the_file():
    path = prefix() / "lib" / SONAME
    out = run_python(LOAD, QEMU_MACHINE_LIB=str(path), LD_LIBRARY_PATH=None, PKG_CONFIG_PATH="/nonexistent")
    assert out.stdout.strip() == f"loaded {path}", out.stderr


def test_qemu_machine_lib_missing_file_names_the_install_commands(tmp_path):
    out = run_python(LOAD, QEMU_MACHINE_LIB=str(tmp_path / "nothing.so"))
    assert out.stdout.startswith(f"not found QEMU_MACHINE_LIB={tmp_path / 'nothing.so'}: no such file"), out
    assert "scripts/install-lib.sh /usr/local" in out.stdout
    assert "apt-get install $(scripts/build-deb.sh)" in out.stdout


def test_another_library_is_refused():
    libc = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                if "/libc.so" in line or "/libc-" in line)
    out = run_python(LOAD, QEMU_MACHINE_LIB=libc)
    assert out.stdout.startswith(f"not found {libc} has no qm_config_new: not a libqemumachine 0.1"), out


def test_soname_then_pkg_config():
    pc = prefix() / "lib" / "pkgconfig"
    # Through the dynamic loader (LD_LIBRARY_PATH, as scripts/test-python.sh runs everything).
    out = run_python(LOAD, PKG_CONFIG_PATH="/nonexistent")
    assert out.stdout.strip() == f"loaded {SONAME}", out
    # Without LD_LIBRARY_PATH: an installed library by its soname, else pkg-config's libdir.
    out = run_python(LOAD, LD_LIBRARY_PATH=None, PKG_CONFIG_PATH=str(pc))
    expected = SONAME if system_has_library() else str(prefix() / "lib" / SONAME)
    assert out.stdout.strip() == f"loaded {expected}", out
    # Neither: LibraryNotFound (an ImportError) naming what was tried and the install commands.
    out = run_python(LOAD, LD_LIBRARY_PATH=None, PKG_CONFIG_PATH="/nonexistent")
    if system_has_library():
        assert out.stdout.strip() == f"loaded {SONAME}", out
    else:
        assert out.stdout.startswith(f"not found libqemumachine not found (tried {SONAME} ("), out
        assert "scripts/install-lib.sh /usr/local" in out.stdout


def _gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_qemu_dies_with_a_python_process_killed_by_sigkill(qemu_binary, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    code = f"""
import os, signal, sys
from qemu_machine import QEMUMachine
vm = QEMUMachine({qemu_binary!r}, args=["-machine", "none"], base_temp_dir={str(base)!r})
vm.launch()
print(vm.get_pid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(child.stdout.readline())
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert _gone(pid), f"QEMU {pid} outlived the Python process that launched it"
    deadline = time.monotonic() + 30
    while list(base.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(base.iterdir()) == [], "the temp dir outlived the Python process"


def test_without_qmp(qemu_binary, no_leaks):
    vm = QEMUMachine(qemu_binary, base_temp_dir=no_leaks)
    vm.set_machine("none")
    vm.add_monitor_null()
    vm.add_args("-name", "plain")
    vm.set_qmp_monitor(False)
    vm.launch()
    pid = vm.get_pid()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert not [a for a in argv if b"qmp" in a], argv
    for pair in ([b"-machine", b"none"], [b"-monitor", b"null"], [b"-name", b"plain"]):
        assert any(argv[i:i + 2] == pair for i in range(len(argv))), (pair, argv)
    assert vm.is_running()
    with pytest.raises(QEMUMachineError, match="no connection"):
        vm.qmp("query-status")
    vm.shutdown()
    assert not vm.is_running() and not Path(f"/proc/{pid}").exists()


def test_monitor_address_serves_another_client(qemu_binary, no_leaks, tmp_path):
    path = tmp_path / "qmp.sock"
    with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks,
                     monitor_address=str(path)) as vm:
        vm.launch()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            f = s.makefile("rwb")
            assert "QMP" in json.loads(f.readline())
            f.write(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status"}\n')
            f.flush()
            assert json.loads(f.readline()) == {"return": {}}
            assert json.loads(f.readline())["return"]["status"] == "running"
        assert vm.qmp("query-status")["return"]["running"]  # the machine's own QMP still works
