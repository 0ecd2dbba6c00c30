"""The client side: the same API as jumpstarter-driver-qemu's ``QemuClient`` and
``QemuFlasherClient``."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click
from jumpstarter_driver_composite.client import CompositeClient
from jumpstarter_driver_network.adapters import FabricAdapter, NovncAdapter

from jumpstarter.client import FlasherClient
from jumpstarter.client.flasher import PathBuf
from jumpstarter.streams.encoding import Compression


class QemuFlasherClient(FlasherClient):
    """``flash(path)`` streams a file (compressed or not) to the VM's partition;
    ``flash("oci://...")`` flashes an OCI image with fls on the exporter, printing its output."""

    def flash(
        self,
        path: PathBuf | dict[str, PathBuf],
        *,
        target: str | None = None,
        compression: Compression | None = None,
    ):
        if isinstance(path, str) and path.startswith("oci://"):
            code = 0
            for out, err, rc in self.streamingcall("flash_oci", path, target):
                if out:
                    print(out, end="", flush=True)
                if err:
                    print(err, end="", file=sys.stderr, flush=True)
                if rc is not None:
                    code = rc
            return code
        return super().flash(path, target=target, compression=compression)


class QemuClient(CompositeClient):
    """The VM: ``power``, ``flasher``, ``console``, ``vnc`` and one network per forward, plus
    the guest's identity from the seed."""

    @property
    def hostname(self) -> str:
        return self.call("get_hostname")

    @property
    def username(self) -> str:
        return self.call("get_username")

    @property
    def password(self) -> str:
        return self.call("get_password")

    def set_disk_size(self, size: str) -> None:
        """Sets the size the root disk is grown to at the next power on."""
        self.call("set_disk_size", size)

    def set_memory_size(self, size: str) -> None:
        """Sets the memory size for the next power on."""
        self.call("set_memory_size", size)

    def flash_oci(self, oci_url: str, partition: str | None = None):
        """Flashes an OCI image into ``partition`` (default root) with fls."""
        return self.flasher.flash(oci_url, target=partition)

    @contextmanager
    def novnc(self):
        """A noVNC URL for the VM's display while the block runs."""
        with NovncAdapter(client=self.vnc) as url:
            yield url

    @contextmanager
    def shell(self):
        """A fabric connection to the guest's ssh, through the forward named ``ssh``, logged in
        with the seeded user and password."""
        with FabricAdapter(
            client=self.ssh,
            user=self.username,
            connect_kwargs={"password": self.password},
        ) as conn:
            yield conn

    def cli(self):
        base = super().cli()

        @base.group()
        def resize():
            """Resize QEMU resources"""

        @resize.command(name="disk")
        @click.argument("size")
        def resize_disk(size):
            """Grow the root disk (e.g. 20G) at the next power on."""
            self.set_disk_size(size)
            click.echo(f"Disk will be resized to {size} on next power on")

        @resize.command(name="memory")
        @click.argument("size")
        def resize_memory(size):
            """Set the memory size (e.g. 2G) for the next power on."""
            self.set_memory_size(size)
            click.echo(f"Memory will be set to {size} on next power on")

        return base
