"""jumpstarter-driver-qemu 0.9.0's 26 offline tests (driver_test.py), adapted to this driver.

Kept as they were (only the import changed): the four set_*_size tests, the three OCI argument
checks (non-oci URL, partial credentials, invalid partition), and the routing of flash("oci://")
to flash_oci.

Rewritten, because they patch upstream's internals rather than drive the driver:

* the three resize tests mocked ``run_process`` (upstream's qemu-img call), ``shutil.disk_usage``
  and ``Popen``; here they use real sparse disk images, the real free space, and a real QEMU;
* the OCI tests mocked ``asyncio.create_subprocess_exec`` with MagicMock processes whose
  ``readline`` calls encode how upstream reads fls's pipes (one of them calls the private
  ``_stream_subprocess``, another patches ``asyncio.wait_for`` to hit its 30 s poll branch);
  here fls is a real program (tests/conftest.py's FakeFls) that records its argv, environment
  and pid, so each test checks behaviour: arguments, credentials only in the environment,
  streamed output, failure, timeout (the process killed), early abandonment (the process
  killed), a missing program. ``get_fls_binary`` (which downloads from GitHub) is still
  replaced, in this driver's namespace, by one returning the fake's path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from unittest.mock import MagicMock, patch

import pytest

from js_procs import pid_alive
from jumpstarter.common.oci import OciCredentials
from jumpstarter.common.utils import serve
from jumpstarter_driver_qemu_machine.driver import Qemu, QemuFlasher

FLS = "jumpstarter_driver_qemu_machine.driver.get_fls_binary"


# -- resize (rewritten: real images, real free space, real QEMU) -----------------------------


@pytest.fixture
def resize_test():
    """A driver whose root disk is a sparse raw file of the given size (as upstream's)."""
    drivers = []

    def make(disk_size: str, current_gib: int) -> tuple[Qemu, Path]:
        driver = Qemu(disk_size=disk_size, accel="tcg", powerdown_timeout=0.5, mem="64M")
        drivers.append(driver)
        root = Path(driver._tmp_dir.name) / "root"
        root.write_bytes(b"")
        os.truncate(root, current_gib << 30)
        return driver, root

    yield make
    for driver in drivers:
        driver.close()


@pytest.mark.anyio
async def test_resize_shrink_blocked(resize_test):
    driver, root = resize_test("10G", 20)
    with pytest.raises(RuntimeError, match="Shrinking disk is not supported") as e:
        await driver.children["power"].on()
    assert "20.0GiB" in str(e.value) and "10G" in str(e.value)
    assert root.stat().st_size == 20 << 30


@pytest.mark.anyio
async def test_resize_insufficient_space_blocked(resize_test):
    driver, root = resize_test("10G", 1)
    free = shutil.disk_usage(root.parent).free
    driver.set_disk_size(f"{(free >> 30) + 1024}G")  # a TiB more than there is
    with pytest.raises(RuntimeError, match="Not enough disk space"):
        await driver.children["power"].on()
    assert root.stat().st_size == 1 << 30


@pytest.mark.anyio
async def test_resize_succeeds(resize_test):
    driver, root = resize_test("20G", 10)
    power = driver.children["power"]
    await power.on()
    try:
        assert root.stat().st_size == 20 << 30
        blocks = driver._machine.execute("query-block")
        disk = next(b for b in blocks if b.get("inserted", {}).get("file") == str(root))
        assert disk["inserted"]["image"]["virtual-size"] == 20 << 30
    finally:
        await power.off()


# -- exported setters (kept) ------------------------------------------------------------------


def test_set_disk_size_valid():
    driver = Qemu()
    driver.set_disk_size("20G")
    assert driver.disk_size == "20G"


def test_set_disk_size_invalid():
    driver = Qemu()
    with pytest.raises(ValueError, match="Invalid size"):
        driver.set_disk_size("invalid")


def test_set_memory_size_valid():
    driver = Qemu()
    driver.set_memory_size("2G")
    assert driver.mem == "2G"


def test_set_memory_size_invalid():
    driver = Qemu()
    with pytest.raises(ValueError, match="Invalid size"):
        driver.set_memory_size("invalid")


# -- OCI flashing through fls (rewritten: a real fls program) --------------------------------


async def _collect(flasher, *args, **kwargs):
    return [chunk async for chunk in flasher.flash_oci(*args, **kwargs)]


@pytest.mark.anyio
async def test_flash_oci_success(fake_fls):
    fls = fake_fls(stdout=["Flashing complete"])
    driver = Qemu()
    with patch(FLS, return_value=str(fls.path)):
        results = await _collect(driver.children["flasher"], "oci://quay.io/org/image:tag")
    assert results[-1] == ("", "", 0)
    assert ("Flashing complete\n", "", None) in results
    argv = fls.calls()["argv"]
    assert argv[1:] == ["from-url", "oci://quay.io/org/image:tag", str(Path(driver._tmp_dir.name) / "root")]
    assert driver._formats["root"] == "raw"  # recorded from what fls wrote


@pytest.mark.anyio
async def test_flash_oci_with_partition(fake_fls):
    fls = fake_fls()
    driver = Qemu()
    with patch(FLS, return_value=str(fls.path)):
        await _collect(driver.children["flasher"], "oci://quay.io/org/bios:v1", partition="bios")
    assert fls.calls()["argv"][3] == str(Path(driver._tmp_dir.name) / "bios")


@pytest.mark.anyio
async def test_flash_oci_with_credentials(fake_fls):
    fls = fake_fls()
    driver = Qemu()
    with patch(FLS, return_value=str(fls.path)):
        await _collect(driver.children["flasher"], "oci://quay.io/private/image:tag",
                       oci_username="myuser", oci_password="mypass")
    call = fls.calls()
    assert "myuser" not in call["argv"] and "mypass" not in call["argv"]
    assert call["env"] == {"FLS_REGISTRY_USERNAME": "myuser", "FLS_REGISTRY_PASSWORD": "mypass"}


@pytest.mark.anyio
async def test_flash_oci_no_credentials(fake_fls):
    fls = fake_fls()
    driver = Qemu()
    env_clean = {k: v for k, v in os.environ.items() if k not in ("OCI_USERNAME", "OCI_PASSWORD")}
    with patch.dict(os.environ, env_clean, clear=True):
        with patch("jumpstarter.common.oci.read_auth_file_credentials", return_value=OciCredentials()):
            with patch(FLS, return_value=str(fls.path)):
                await _collect(driver.children["flasher"], "oci://quay.io/public/image:tag")
    assert fls.calls()["env"] == {}


@pytest.mark.anyio
async def test_flash_oci_credentials_from_env(fake_fls):
    fls = fake_fls()
    driver = Qemu()
    with patch.dict(os.environ, {"OCI_USERNAME": "envuser", "OCI_PASSWORD": "envpass"}):
        with patch(FLS, return_value=str(fls.path)):
            await _collect(driver.children["flasher"], "oci://quay.io/private/image:tag")
    assert fls.calls()["env"] == {"FLS_REGISTRY_USERNAME": "envuser", "FLS_REGISTRY_PASSWORD": "envpass"}


@pytest.mark.anyio
async def test_flash_oci_explicit_credentials_override_env(fake_fls):
    fls = fake_fls()
    driver = Qemu()
    with patch.dict(os.environ, {"OCI_USERNAME": "envuser", "OCI_PASSWORD": "envpass"}):
        with patch(FLS, return_value=str(fls.path)):
            await _collect(driver.children["flasher"], "oci://quay.io/private/image:tag",
                           oci_username="explicit_user", oci_password="explicit_pass")
    assert fls.calls()["env"] == {
        "FLS_REGISTRY_USERNAME": "explicit_user",
        "FLS_REGISTRY_PASSWORD": "explicit_pass",
    }


@pytest.mark.anyio
async def test_flash_oci_streams_output(fake_fls):
    fls = fake_fls(stdout=["downloading layer 1", "downloading layer 2"],
                   stderr=["progress: 50%", "progress: 100%"])
    driver = Qemu()
    with patch(FLS, return_value=str(fls.path)):
        results = await _collect(driver.children["flasher"], "oci://quay.io/org/image:tag")
    assert [r[0] for r in results if r[0]] == ["downloading layer 1\n", "downloading layer 2\n"]
    assert [r[1] for r in results if r[1]] == ["progress: 50%\n", "progress: 100%\n"]
    assert results[-1] == ("", "", 0)


@pytest.mark.anyio
async def test_flash_oci_rejects_non_oci_url():
    driver = Qemu()
    flasher = driver.children["flasher"]
    assert isinstance(flasher, QemuFlasher)
    with pytest.raises(ValueError, match="OCI URL must start with oci://"):
        async for _ in flasher.flash_oci("docker://image:tag"):
            pass
    with pytest.raises(ValueError, match="OCI URL must start with oci://"):
        async for _ in flasher.flash_oci("quay.io/org/image:tag"):
            pass


@pytest.mark.anyio
async def test_flash_oci_partial_credentials_rejected():
    driver = Qemu()
    flasher = driver.children["flasher"]
    with pytest.raises(ValueError, match="OCI authentication requires both"):
        async for _ in flasher.flash_oci("oci://image:tag", oci_username="user", oci_password=None):
            pass
    with pytest.raises(ValueError, match="OCI authentication requires both"):
        async for _ in flasher.flash_oci("oci://image:tag", oci_username=None, oci_password="pass"):
            pass


@pytest.mark.anyio
async def test_flash_oci_fls_failure(fake_fls):
    fls = fake_fls(code=1)
    driver = Qemu()
    with patch(FLS, return_value=str(fls.path)):
        with pytest.raises(RuntimeError, match="fls flash failed"):
            await _collect(driver.children["flasher"], "oci://quay.io/org/image:tag")
    assert "root" not in driver._formats  # nothing recorded for a failed flash


@pytest.mark.anyio
async def test_flash_oci_fls_timeout(fake_fls):
    fls = fake_fls(sleep=60)
    driver = Qemu(flash_timeout=0)
    with patch(FLS, return_value=str(fls.path)):
        with pytest.raises(RuntimeError, match="fls flash timed out"):
            await _collect(driver.children["flasher"], "oci://quay.io/org/image:tag")
    if fls.ran():  # it may be killed before it got to write its record
        assert not pid_alive(fls.calls()["pid"])


@pytest.mark.anyio
async def test_flash_oci_quiet_fls_is_not_a_failure(fake_fls):
    # upstream's test_flash_oci_inner_wait_timeout: an fls that says nothing for a while
    fls = fake_fls(sleep=1.0, stdout=[])
    driver = Qemu(flash_timeout=600)
    with patch(FLS, return_value=str(fls.path)):
        results = await _collect(driver.children["flasher"], "oci://quay.io/org/image:tag")
    assert results == [("", "", 0)]


@pytest.mark.anyio
async def test_flash_oci_process_cleanup_on_early_exit(fake_fls):
    fls = fake_fls(stdout=["line1", "line2"], sleep=60)
    driver = Qemu()
    with patch(FLS, return_value=str(fls.path)):
        gen = driver.children["flasher"].flash_oci("oci://img:tag")
        async for _ in gen:
            break
        await gen.aclose()
    assert not pid_alive(fls.calls()["pid"])


@pytest.mark.anyio
async def test_flash_oci_fls_not_found(tmp_path):
    driver = Qemu()
    with patch(FLS, return_value=str(tmp_path / "no-fls-here")):
        with pytest.raises(RuntimeError, match="fls command not found"):
            await _collect(driver.children["flasher"], "oci://quay.io/org/image:tag")


@pytest.mark.anyio
async def test_flash_oci_uses_fls_config(fake_fls, tmp_path):
    fls = fake_fls()
    downloaded = tmp_path / "fls-downloaded"
    shutil.copy(fls.path, downloaded)
    driver = Qemu(fls_version="0.2.0")
    with patch(FLS, return_value=str(downloaded)) as get:
        await _collect(driver.children["flasher"], "oci://quay.io/org/image:tag")
    get.assert_called_once_with(fls_version="0.2.0", fls_binary_url=None, allow_custom_binaries=False)
    assert not downloaded.exists()  # a downloaded fls is removed after use


@pytest.mark.anyio
async def test_flash_oci_invalid_partition():
    driver = Qemu()
    flasher = driver.children["flasher"]
    with pytest.raises(ValueError, match="invalid partition name"):
        async for _ in flasher.flash_oci("oci://image:tag", partition="nonexistent"):
            pass


def test_flash_oci_via_flasher_client(fake_fls):
    fls = fake_fls(stdout=["done"])
    with serve(Qemu()) as qemu:
        with patch(FLS, return_value=str(fls.path)):
            assert qemu.flasher.flash("oci://quay.io/org/image:tag") == 0
    argv = fls.calls()["argv"]
    assert argv[1:3] == ["from-url", "oci://quay.io/org/image:tag"]


def test_flash_oci_convenience_method(fake_fls):
    fls = fake_fls()
    with serve(Qemu()) as qemu:
        with patch(FLS, return_value=str(fls.path)):
            qemu.flash_oci("oci://quay.io/org/image:tag", partition="bios")
    argv = fls.calls()["argv"]
    assert argv[1:3] == ["from-url", "oci://quay.io/org/image:tag"]
    assert Path(argv[3]).name == "bios"


@pytest.mark.anyio
async def test_flash_routes_oci_to_flash_oci():
    driver = Qemu()
    flasher = driver.children["flasher"]

    async def fake_generator(*args, **kwargs):
        yield "", "", 0

    mock = MagicMock(side_effect=fake_generator)
    with patch.object(flasher, "flash_oci", mock):
        await flasher.flash("oci://quay.io/org/image:tag", partition="root")
    mock.assert_called_once_with("oci://quay.io/org/image:tag", "root")
