"""One Jumpstarter workload with one QEMU driver, in this process, as the README's side-by-side
figures measure it: through ``jumpstarter.common.utils.serve`` (exporter and client in one
process, as the drivers' own tests run), flash the Debian cloud image fixture (zstd), power on
under TCG, log in on the console with the seeded user, power off while reading the console to
its end. Prints one JSON line: the process's RSS after the imports, its peak RSS (``VmHWM`` of
/proc/self/status; QEMU and other children excluded) during the flash and, apart, during power
on, login and power off, ``ru_maxrss`` (Linux resets it with VmHWM: the second peak again), the
times, and how the guest stopped (whether the console shows the kernel's ``reboot: Power down``,
and QEMU's last words on the console).

    python jumpstarter_side_by_side.py ours|upstream IMAGE.zst

scripts/bench-python-rss.sh makes the two virtualenvs and runs both.

``upstream`` is jumpstarter-driver-qemu 0.9.0 (install it in a separate virtualenv: it is not a
dependency of this repository). It forces KVM whenever /dev/kvm is accessible, and nested KVM
crashes Linux guests on the development machines, so for it this script makes /dev/kvm look
inaccessible (its own os.access check); everything else runs as shipped.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

import pexpect

from jumpstarter.common.utils import serve

OVMF = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    which, image = sys.argv[1], sys.argv[2]
    common = dict(
        arch="x86_64", mem="1G", smp=2, hostname="side", username="tester", password="secret",
        default_partitions={"OVMF_CODE.fd": OVMF[0], "OVMF_VARS.fd": OVMF[1]},
    )
    if which == "ours":
        from jumpstarter_driver_qemu_machine.driver import Qemu

        driver = Qemu(accel="tcg", hostfwd={"ssh": {"hostport": 0, "guestport": 22}}, **common)
    else:
        import jumpstarter_driver_qemu.driver as upstream

        real_access = os.access
        upstream.os.access = lambda p, m: False if p == "/dev/kvm" else real_access(p, m)
        driver = upstream.Qemu(hostfwd={"ssh": {"hostport": free_port(), "guestport": 22}}, **common)

    rss_after_imports = status_mib("VmRSS")
    t0 = time.monotonic()
    with serve(driver) as qemu:
        qemu.flasher.flash(image)
        t_flash = time.monotonic()
        # The flash and the rest peak apart: VmHWM up to here, then reset (clear_refs 5) so
        # that the final VmHWM is the peak of power on, console login and power off alone.
        flash_peak = status_mib("VmHWM")
        Path("/proc/self/clear_refs").write_text("5")
        qemu.power.on()
        with qemu.console.pexpect() as p:
            p.expect_exact("side login: ", timeout=900)
            t_login_prompt = time.monotonic()
            p.sendline("tester")
            p.expect_exact("Password: ", timeout=60)
            p.sendline("secret")
            # bash's prompt, or sh's when the seed set no login shell
            shell = ["bash", "sh"][p.expect_exact(["tester@side:~$ ", "$ "], timeout=120)]
            t_off = time.monotonic()
            qemu.power.off()
            t_off_done = time.monotonic()
            try:
                p.expect(pexpect.EOF, timeout=30)
            except pexpect.TIMEOUT:
                pass
            tail = (p.before or b"").decode("utf-8", "replace") if isinstance(p.before, bytes) else str(p.before)
    print(json.dumps({
        "driver": which,
        "rss_after_imports_mib": rss_after_imports,
        "vmhwm_flash_mib": flash_peak,
        "vmhwm_on_login_off_mib": status_mib("VmHWM"),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "flash_s": round(t_flash - t0, 1),
        "login_prompt_s": round(t_login_prompt - t_flash, 1),
        "off_s": round(t_off_done - t_off, 1),
        "login_shell": shell,
        "guest_powered_down": "reboot: Power down" in tail,
        "console_tail": tail[-300:],
    }))


if __name__ == "__main__":
    main()
