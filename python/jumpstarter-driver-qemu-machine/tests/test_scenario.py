"""The real-guest scenario, as a Jumpstarter user drives it through
``jumpstarter.common.utils.serve``: the Debian 12 cloud image fixture (UEFI, cloud-init) flashed
from its zstd-compressed form, powered on under TCG, a console login with the user the seed
created, ssh through the forward, and a power off that the guest performs itself (ACPI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jumpstarter.common.utils import serve
from jumpstarter_driver_qemu_machine.driver import Qemu

OVMF = [
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
]


def ovmf() -> tuple[str, str]:
    for code, vars_ in OVMF:
        if Path(code).exists() and Path(vars_).exists():
            return code, vars_
    pytest.fail("OVMF is not installed: apt-get install -y ovmf")


def test_cloud_image_flash_login_ssh_poweroff(cloud_image, tmp_path):
    code, vars_ = ovmf()
    driver = Qemu(
        arch="x86_64",
        accel="tcg",  # nested KVM crashes Linux guests on the development machines
        mem="1G",
        smp=2,
        hostname="js-guest",
        username="tester",
        password="s3cret: 'quoted'",
        default_partitions={"OVMF_CODE.fd": code, "OVMF_VARS.fd": vars_},
        hostfwd={"ssh": {"hostport": 0, "guestport": 22}},
        powerdown_timeout=120,
    )
    with serve(driver) as qemu:
        qemu.flasher.flash(str(cloud_image))
        assert driver._formats["root"] == "raw"
        qemu.power.on()
        prompt = f"{qemu.username}@{qemu.hostname}:~$ "
        with qemu.console.pexpect() as p:
            p.logfile_read = sys.stdout.buffer
            p.expect_exact(f"{qemu.hostname} login: ", timeout=900)
            p.sendline(qemu.username)
            p.expect_exact("Password: ", timeout=60)
            p.sendline(qemu.password)
            p.expect_exact(prompt, timeout=120)
            # the seed's login shell is bash; cloud-init finishes (sshd's password login)
            p.sendline("echo shell=$0; cloud-init status --wait >/dev/null; echo ready-$((6*7))")
            p.expect_exact("shell=-bash", timeout=60)
            p.expect_exact("ready-42", timeout=600)
            p.expect_exact(prompt, timeout=60)

        address = qemu.ssh.address()
        assert address.startswith("tcp://127.0.0.1:") and not address.endswith(":0")
        with qemu.shell() as ssh:
            result = ssh.run("hostname; id -un", hide=True, in_stream=False)  # no stdin under pytest
            assert result.stdout.split() == [qemu.hostname, qemu.username]

        qemu.power.off()
        assert driver.last_stop == "the guest powered off"
        assert list(qemu.power.read())[0].voltage == 0.0
