"""Fixtures for the driver's tests: a real QEMU, a fake fls (a real program, no mocked
subprocess), and the Debian cloud-image fixture of tests/src/cloud_fixture.rs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def qemu_installed():
    for program, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils")):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not installed: apt-get install -y {package}")


class FakeFls:
    """An ``fls`` program: records its argv, pid and the registry variables of its environment
    in ``record`` (JSON), prints ``stdout``/``stderr`` lines, sleeps ``sleep`` seconds, writes a
    1 MiB raw image to its target (argv[3]) and exits with ``code``."""

    def __init__(self, directory: Path, stdout=(), stderr=(), code=0, sleep=0.0, name="fls"):
        self.path = directory / name
        self.record = directory / f"{name}.json"
        script = f"""\
            #!/usr/bin/env python3
            import json, os, sys, time
            rec = {{"argv": sys.argv, "pid": os.getpid(),
                    "env": {{k: v for k, v in os.environ.items() if k.startswith("FLS_")}}}}
            with open({str(self.record)!r}, "w") as f:
                json.dump(rec, f)
            for line in {list(stdout)!r}:
                print(line, flush=True)
            for line in {list(stderr)!r}:
                print(line, file=sys.stderr, flush=True)
            time.sleep({sleep!r})
            if len(sys.argv) > 3:
                with open(sys.argv[3], "wb") as f:
                    f.truncate(1 << 20)
            sys.exit({code!r})
        """
        self.path.write_text(textwrap.dedent(script))
        self.path.chmod(0o755)

    def calls(self) -> dict:
        return json.loads(self.record.read_text())

    def ran(self) -> bool:
        return self.record.exists()


@pytest.fixture
def fake_fls(tmp_path):
    def make(**kwargs) -> FakeFls:
        return FakeFls(tmp_path, **kwargs)

    return make


CLOUD_FIXTURE_CMD = ["cargo", "run", "-q", "-p", "qemu-machine-tests", "--bin", "build-cloud-fixture", "--locked"]


@pytest.fixture(scope="session")
def cloud_image() -> Path:
    """The Debian 12 cloud image fixture, compressed (``disk.img.zst``), built (or found built)
    by the tests crate's build-cloud-fixture program. ``QM_CLOUD_IMAGE`` names an image to use
    instead (a copy of that fixture made elsewhere). Never skipped: without it the test fails
    with the command that builds it."""
    given = os.environ.get("QM_CLOUD_IMAGE")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"QM_CLOUD_IMAGE={given}: no such file")
        return Path(given)
    if shutil.which("cargo") is None:
        pytest.fail("cargo is not installed (https://rustup.rs); the cloud image fixture is built with: "
                    + " ".join(CLOUD_FIXTURE_CMD))
    out = subprocess.run(CLOUD_FIXTURE_CMD, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(
            "the Debian cloud image fixture could not be built or found; build it with\n"
            f"    (cd {REPO} && {' '.join(CLOUD_FIXTURE_CMD)})\n"
            f"(as root; it needs debootstrap and the tools scripts/install-deps.sh installs). It said:\n"
            f"{out.stderr.strip()}"
        )
    for line in out.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "compressed":
            return Path(value.strip())
    pytest.fail(f"{' '.join(CLOUD_FIXTURE_CMD)} printed no 'compressed:' line:\n{out.stdout}")
