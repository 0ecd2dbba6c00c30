"""What this driver adds to upstream's, or does differently, against a real QEMU (no guest OS:
the firmware runs with nothing to boot, which is enough for power, disks, forwards and VNC; the
real guest is tests/test_scenario.py)."""

from __future__ import annotations

import gzip
import lzma
import os
import subprocess
from pathlib import Path

import pytest
import qemu_machine

from jumpstarter.common.utils import serve
from jumpstarter_driver_power.common import PowerReading
from jumpstarter_driver_qemu_machine.driver import Qemu


def small(**kwargs) -> Qemu:
    """A driver for tests without a guest: TCG, little memory, a short ACPI wait."""
    kwargs.setdefault("accel", "tcg")
    kwargs.setdefault("mem", "64M")
    kwargs.setdefault("smp", 1)
    kwargs.setdefault("powerdown_timeout", 0.5)
    return Qemu(**kwargs)


def listening(port: int) -> list[str]:
    """The local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        addr, hexport = fields[1].split(":")
        if int(hexport, 16) == port and fields[3] == "0A":
            found.append(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_power_read_reports_the_state():
    with serve(small()) as qemu:
        assert list(qemu.power.read()) == [PowerReading(voltage=0.0, current=0.0)]
        qemu.power.on()
        assert list(qemu.power.read()) == [PowerReading(voltage=1.0, current=1.0)]
        qemu.power.on()  # already on: nothing happens
        qemu.power.off()
        assert list(qemu.power.read()) == [PowerReading(voltage=0.0, current=0.0)]
        qemu.power.off()  # already off: nothing happens


def test_power_read_follows_the_librarys_power_state():
    # read() is the library's power state: paused reads as on, QEMU gone (quit behind the
    # driver's back, as when a guest powers off) reads as off before any power.off().
    driver = small()
    with serve(driver) as qemu:
        qemu.power.on()
        machine = driver._machine
        machine.pause()
        assert machine.power_state() is qemu_machine.PowerState.PAUSED
        assert list(qemu.power.read()) == [PowerReading(voltage=1.0, current=1.0)]
        machine.resume()
        assert list(qemu.power.read()) == [PowerReading(voltage=1.0, current=1.0)]
        machine.execute("quit")
        machine.wait(30)
        assert list(qemu.power.read()) == [PowerReading(voltage=0.0, current=0.0)]
        qemu.power.off()  # QEMU had exited: off() only cleans up
        assert driver.last_stop == "QEMU had exited"
        assert list(qemu.power.read()) == [PowerReading(voltage=0.0, current=0.0)]
        qemu.power.on()  # and the VM powers on again
        assert list(qemu.power.read()) == [PowerReading(voltage=1.0, current=1.0)]
        qemu.power.off()


def test_off_without_a_guest_os_quits_qemu_after_the_acpi_wait():
    driver = small()
    with serve(driver) as qemu:
        qemu.power.on()
        pid = driver._machine.pid()
        qemu.power.off()
        # nothing in the guest answers the power button: QEMU is told to quit
        assert driver.last_stop == "QEMU quit"
        assert not Path(f"/proc/{pid}").exists()


def test_on_reports_qemus_own_error_every_time():
    with serve(small(cpu="no-such-cpu")) as qemu:
        for _ in range(2):  # a failed on() leaves nothing behind: the next one tries again
            with pytest.raises(Exception, match="unable to find CPU model 'no-such-cpu'"):
                qemu.power.on()
        assert list(qemu.power.read()) == [PowerReading(voltage=0.0, current=0.0)]


def test_forwards_resolve_port_0_on_loopback():
    driver = small(hostfwd={"ssh": {"hostport": 0, "guestport": 22},
                            "web": {"hostport": 0, "guestport": 80}})
    with serve(driver) as qemu:
        with pytest.raises(Exception, match="the VM is off"):
            qemu.ssh.address()
        qemu.power.on()
        ssh = qemu.ssh.address()
        web = qemu.web.address()
        assert ssh.startswith("tcp://127.0.0.1:") and web.startswith("tcp://127.0.0.1:")
        ssh_port, web_port = int(ssh.rsplit(":", 1)[1]), int(web.rsplit(":", 1)[1])
        assert 0 not in (ssh_port, web_port) and ssh_port != web_port
        assert listening(ssh_port) == ["127.0.0.1"]  # loopback only, by default
        with qemu.ssh.stream():
            pass  # QEMU accepts the connection (no guest behind it)
        qemu.power.off()


def test_vnc_is_the_vms_display():
    with serve(small()) as qemu:
        qemu.power.on()
        with qemu.vnc.stream() as vnc:
            assert vnc.receive().startswith(b"RFB 003.008")
        qemu.power.off()


def test_console_is_a_pty_while_on():
    driver = small()
    with serve(driver) as qemu:
        qemu.power.on()
        link = Path(driver._pty)
        assert os.readlink(link).startswith("/dev/pts/") and link.exists()
        qemu.power.off()
        assert not link.is_symlink()


def test_accel_tcg_is_used():
    driver = small(accel="tcg")
    with serve(driver) as qemu:
        qemu.power.on()
        assert driver._machine.execute("query-kvm")["enabled"] is False
        qemu.power.off()


def _image(path: Path, fmt: str, size: str = "64M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    return path


def test_flash_records_the_format_once(tmp_path):
    # A raw disk whose first bytes later look like a qcow2 header (as a guest could write) is
    # still given to QEMU as raw: the format was recorded when flashed, not probed at boot.
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * (1 << 20))
    driver = small()
    with serve(driver) as qemu:
        qemu.flasher.flash(str(raw))
        assert driver._formats["root"] == "raw"
        root = Path(driver._tmp_dir.name) / "root"
        header = _image(tmp_path / "q.qcow2", "qcow2").read_bytes()[:512]
        with open(root, "r+b") as f:
            f.write(header)  # what a guest could do to its raw disk
        qemu.power.on()
        blocks = driver._machine.execute("query-block")
        disk = next(b for b in blocks if b.get("inserted", {}).get("file") == str(root))
        assert disk["inserted"]["drv"] == "raw"
        qemu.power.off()


def _zstd(data: bytes) -> bytes:
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    half = len(data) // 2  # two frames, as concatenated files are
    return zstd.compress(data[:half]) + zstd.compress(data[half:])


@pytest.mark.parametrize("compress", ["gzip", "xz", "zstd"])
def test_flash_compressed_and_dump(tmp_path, compress):
    qcow2 = _image(tmp_path / "disk.qcow2", "qcow2")
    data = qcow2.read_bytes()
    packed = tmp_path / f"disk.qcow2.{compress}"
    packed.write_bytes({"gzip": gzip.compress, "xz": lzma.compress, "zstd": _zstd}[compress](data))
    driver = small()
    with serve(driver) as qemu:
        qemu.flasher.flash(str(packed))
        assert driver._formats["root"] == "qcow2"
        assert (Path(driver._tmp_dir.name) / "root").read_bytes() == data
        out = tmp_path / "dumped"
        qemu.flasher.dump(str(out))
        assert out.read_bytes() == data
        qemu.power.on()
        # the client's upload runs in a task group: the driver's error comes inside it
        with pytest.raises(BaseExceptionGroup) as e:
            qemu.flasher.flash(str(packed))
        assert e.group_contains(Exception, match="the VM is on; power it off first")
        qemu.power.off()


def test_flash_truncated_compressed_image_fails(tmp_path):
    packed = tmp_path / "disk.raw.xz"
    packed.write_bytes(lzma.compress(os.urandom(1 << 20))[:-1000])
    driver = small()
    with serve(driver) as qemu:
        with pytest.raises(BaseExceptionGroup) as e:
            qemu.flasher.flash(str(packed))
        assert e.group_contains(Exception, match="ends before its end of stream")
        assert not (Path(driver._tmp_dir.name) / "root").exists()


def test_flash_refuses_a_format_qemu_is_not_given(tmp_path):
    vdi = _image(tmp_path / "disk.vdi", "vdi")
    driver = small()
    with serve(driver) as qemu:
        with pytest.raises(BaseExceptionGroup) as e:
            qemu.flasher.flash(str(vdi))
        assert e.group_contains(Exception, match="unsupported image format: vdi")
        assert not (Path(driver._tmp_dir.name) / "root").exists()


def test_default_partitions_and_memory_between_boots(tmp_path):
    root = _image(tmp_path / "root.qcow2", "qcow2")
    driver = small(default_partitions={"root": root})
    with serve(driver) as qemu:
        qemu.set_memory_size("96M")
        qemu.set_disk_size("128M")
        qemu.power.on()
        assert driver._machine.execute("query-memory-size-summary")["base-memory"] == 96 << 20
        qemu.power.off()
    assert "virtual size: 128 MiB" in subprocess.run(
        ["qemu-img", "info", str(root)], capture_output=True, text=True, check=True).stdout


def test_exporter_config_type_loads():
    from jumpstarter.common.importlib import import_class

    cls = import_class("jumpstarter_driver_qemu_machine.driver.Qemu", [], True)
    assert cls is Qemu
    assert Qemu.client() == "jumpstarter_driver_qemu_machine.client.QemuClient"


def test_readme_exporter_config(monkeypatch):
    """The exporter configuration in the repository README instantiates this driver and runs."""
    import re

    import yaml
    from jumpstarter.config.exporter import ExporterConfigV1Alpha1, ExporterConfigV1Alpha1DriverInstance

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "qemu_machine.driver.Qemu" in b]
    assert len(blocks) == 1, blocks
    doc = yaml.safe_load(blocks[0])
    ExporterConfigV1Alpha1.model_validate(doc)  # a valid ExporterConfig as a whole
    root = ExporterConfigV1Alpha1DriverInstance.model_validate({"children": doc["export"]}).instantiate()
    driver = root.children["qemu"]
    assert isinstance(driver, Qemu)
    assert (driver.accel, driver.mem, driver.disk_size, driver.hostname) == ("auto", "2G", "20G", "board-1")
    monkeypatch.setenv("QEMU_MACHINE_ACCEL", "tcg")  # auto, but TCG in the test suite
    driver.powerdown_timeout = 0.5  # no guest OS here to answer the power button
    driver.mem = "64M"
    with serve(root) as client:
        qemu = client.qemu
        assert (qemu.hostname, qemu.username, qemu.password) == ("board-1", "dev", "secret")
        qemu.power.on()
        assert qemu.ssh.address().startswith("tcp://127.0.0.1:")
        qemu.power.off()


def test_forward_on_a_chosen_host_address():
    driver = small(hostfwd={"ssh": {"hostport": 0, "guestport": 22, "hostaddr": "127.0.0.2"}})
    with serve(driver) as qemu:
        qemu.power.on()
        address = qemu.ssh.address()
        assert address.startswith("tcp://127.0.0.2:"), address
        assert listening(int(address.rsplit(":", 1)[1])) == ["127.0.0.2"]
        qemu.power.off()


def test_flash_leaves_holes_and_dump_is_refused_while_on(tmp_path):
    data = os.urandom(4096) + bytes(16 << 20) + os.urandom(4096)
    packed = tmp_path / "disk.raw.gz"
    packed.write_bytes(gzip.compress(data))
    driver = small()
    with serve(driver) as qemu:
        qemu.flasher.flash(str(packed))
        root = Path(driver._tmp_dir.name) / "root"
        assert root.read_bytes() == data
        # the 16 MiB of zeros are a hole: far less is allocated than the file's size
        assert root.stat().st_blocks * 512 < (4 << 20), root.stat()
        qemu.power.on()
        with pytest.raises(BaseException) as e:
            qemu.flasher.dump(str(tmp_path / "dumped"))
        if isinstance(e.value, BaseExceptionGroup):
            assert e.group_contains(Exception, match="the VM is on; power it off first")
        else:
            assert "the VM is on; power it off first" in str(e.value)
        qemu.power.off()
