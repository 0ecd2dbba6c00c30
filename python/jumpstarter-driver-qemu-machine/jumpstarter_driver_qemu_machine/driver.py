"""The Jumpstarter QEMU driver on libqemumachine.

``Qemu`` takes the configuration of jumpstarter-driver-qemu 0.9.0's ``Qemu`` (``arch``,
``cpu``, ``smp``, ``mem``, ``disk_size``, ``hostname``, ``username``, ``password``,
``default_partitions``, ``hostfwd``, ``flash_timeout`` and the ``fls_*`` fields) and has the same
children (``power``, ``flasher``, ``console``, ``vnc``, one TCP network per forward), exported
methods and client; see the package README for what it does differently.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import threading
from collections.abc import AsyncGenerator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Literal, Optional

import anyio
from anyio import to_thread
from anyio.streams.file import FileReadStream
from jumpstarter_driver_network.driver import TcpNetwork, UnixNetwork
from jumpstarter_driver_power.driver import PowerInterface, PowerReading
from jumpstarter_driver_pyserial.driver import PySerial
from pydantic import BaseModel, ByteSize, Field, TypeAdapter, ValidationError, validate_call

import qemu_machine
from qemu_machine import image as qm_image
from jumpstarter.common.fls import get_fls_binary
from jumpstarter.driver import Driver, FlasherInterface, export, exportstream
from jumpstarter.streams.encoding import create_decompressor, detect_compression_from_signature

#: The partitions a flasher writes, by the names upstream's driver uses.
PARTITIONS = ("root", "bios", "OVMF_CODE.fd", "OVMF_VARS.fd")
#: Root disk formats QEMU is given (the format is recorded when flashed, never re-probed).
ROOT_FORMATS = ("raw", "qcow2", "qcow", "vmdk")


def _parse_size(size: str) -> int:
    """``"20G"`` (binary units, as upstream), ``"512M"``, ``"2T"``, or bytes."""
    try:
        text = size + "iB" if size and size[-1] in "kmgtKMGT" else size
        return int(TypeAdapter(ByteSize).validate_python(text))
    except (ValidationError, IndexError, TypeError):
        raise ValueError(f"Invalid size: '{size}'. Use e.g. '20G', '512M', '2T'") from None


def _human(n: int) -> str:
    return ByteSize(n).human_readable()


class Hostfwd(BaseModel):
    """A port forward: ``hostaddr:hostport`` on the exporter to ``guestport`` in the guest.
    ``hostport`` 0 lets the kernel pick a free port when QEMU starts (see the forward's
    ``address()``)."""

    protocol: Literal["tcp"] = "tcp"
    hostaddr: str = "127.0.0.1"
    hostport: int = Field(ge=0, le=65535)
    guestport: int = Field(ge=1, le=65535)


@dataclass(kw_only=True)
class QemuForward(TcpNetwork):
    """The TCP network child of one forward: it connects to where QEMU really listens (the port
    QEMU picked for a host port of 0, known once the VM is on)."""

    parent: "Qemu"
    forward: str

    def _endpoint(self) -> tuple[str, int]:
        resolved = self.parent._forwards.get(self.forward)
        if resolved is not None:
            host, port = resolved
            return ("127.0.0.1" if host == "0.0.0.0" else host), port
        if self.port == 0:
            raise ConnectionRefusedError(
                f"forward {self.forward!r}: the VM is off (its host port is picked at power on)"
            )
        return self.host, self.port

    @exportstream
    @asynccontextmanager
    async def connect(self):
        host, port = self._endpoint()
        async with await anyio.connect_tcp(remote_host=host, remote_port=port) as stream:
            yield stream

    @export
    async def address(self):
        host, port = self._endpoint()
        if not self.enable_address:
            raise ValueError("enable_address mode is not true in the exporter configuration")
        return f"tcp://{host}:{port}"


@dataclass(kw_only=True)
class QemuVnc(UnixNetwork):
    """The VNC child: the VM's VNC unix socket while it is on."""

    parent: "Qemu"

    @exportstream
    @asynccontextmanager
    async def connect(self):
        path = self.parent._vnc_path
        if path is None:
            raise ConnectionRefusedError("vnc: the VM is off")
        async with await anyio.connect_unix(path) as stream:
            yield stream


@dataclass(kw_only=True)
class QemuFlasher(FlasherInterface, Driver):
    """Writes (and reads back) the VM's partitions: ``root`` (the disk, any format qemu-img
    reads, optionally gzip/xz/bzip2/zstd compressed), ``bios``, ``OVMF_CODE.fd``,
    ``OVMF_VARS.fd``; and OCI images through fls."""

    parent: "Qemu"

    @classmethod
    def client(cls) -> str:
        return "jumpstarter_driver_qemu_machine.client.QemuFlasherClient"

    @export
    async def flash(self, source, partition: str | None = None):
        """Flashes ``source`` (a client stream or an ``oci://`` reference) into ``partition``
        (default ``root``), decompressing it on the fly; the image's format is recorded now,
        once, from the flashed data, and given to QEMU at every boot."""
        if isinstance(source, str) and source.startswith("oci://"):
            async for _ in self.flash_oci(source, partition):
                pass
            return
        name = self.parent._partition_name(partition)
        target = self.parent.validate_partition(partition)
        self.parent._refuse_while_on(f"flashing {name}")
        incoming = target.with_name(target.name + ".incoming")
        try:
            fd = os.open(incoming, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                async with self.resource(source) as res:
                    async for chunk in _decompressed(res):
                        await to_thread.run_sync(_write_sparse, out, chunk)
                await to_thread.run_sync(_finish_sparse, out)
            await to_thread.run_sync(self.parent._record_flashed, name, incoming, target)
        finally:
            incoming.unlink(missing_ok=True)

    @export
    async def flash_oci(
        self,
        oci_url: str,
        partition: str | None = None,
        oci_username: str | None = None,
        oci_password: str | None = None,
    ) -> AsyncGenerator[tuple[str, str, int | None], None]:
        """Flashes an OCI image with fls (``fls from-url URL TARGET``), yielding its output as
        ``(stdout, stderr, None)`` as it comes and ``("", "", 0)`` at the end; registry
        credentials go to fls in its environment, never on its command line."""
        if not oci_url.startswith("oci://"):
            raise ValueError(f"OCI URL must start with oci://, got: {oci_url}")
        from jumpstarter.common.oci import resolve_oci_credentials

        creds = resolve_oci_credentials(oci_url, username=oci_username, password=oci_password)
        name = self.parent._partition_name(partition)
        target = self.parent.validate_partition(partition)
        self.parent._refuse_while_on(f"flashing {name}")
        downloaded = bool(self.parent.fls_version or self.parent.fls_custom_binary_url)
        fls = get_fls_binary(
            fls_version=self.parent.fls_version,
            fls_binary_url=self.parent.fls_custom_binary_url,
            allow_custom_binaries=self.parent.fls_allow_custom_binaries,
        )
        env = None
        if creds.is_authenticated:
            env = dict(os.environ, FLS_REGISTRY_USERNAME=creds.username,
                       FLS_REGISTRY_PASSWORD=creds.plain_password)
        self.logger.info("flashing %s into %s with %s", oci_url, name, fls)
        try:
            # aclosing: a client that stops reading ends fls now, not when collected
            async with aclosing(_run_streaming([fls, "from-url", oci_url, str(target)], env,
                                               self.parent.flash_timeout)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            if downloaded:
                Path(fls).unlink(missing_ok=True)
        await to_thread.run_sync(self.parent._record_flashed, name, target, target)
        yield "", "", 0

    @export
    async def dump(self, target, partition: str | None = None):
        """Streams ``partition`` (a flashed one, else its default) to the client, as stored."""
        path = self.parent.validate_partition(partition, use_default_partitions=True)
        self.parent._refuse_while_on(f"dumping {self.parent._partition_name(partition)}")
        async with await FileReadStream.from_path(path) as stream:
            async with self.resource(target) as res:
                async for chunk in stream:
                    await res.send(chunk)


#: The most a decompressor hands over at a time: an image of zeros compresses a thousandfold,
#: and one network chunk must not become gigabytes in memory.
PIECE = 1 << 20


def _drain(decompressor, data: bytes):
    """Decompresses ``data`` in pieces of at most PIECE bytes."""
    if hasattr(decompressor, "unconsumed_tail"):  # zlib (gzip)
        out = decompressor.decompress(data, PIECE)
        while True:
            if out:
                yield out
            if not decompressor.unconsumed_tail:
                return
            out = decompressor.decompress(decompressor.unconsumed_tail, PIECE)
    out = decompressor.decompress(data, max_length=PIECE)  # lzma, bz2, zstd
    while True:
        if out:
            yield out
        if decompressor.eof or decompressor.needs_input:
            return
        out = decompressor.decompress(b"", max_length=PIECE)


async def _decompressed(source):
    """The bytes of ``source``, decompressed when they start with a gzip, xz, bzip2 or zstd
    signature (several concatenated streams too), in pieces of at most PIECE bytes."""
    chunks = source.__aiter__()
    head = b""
    while len(head) < 8:
        try:
            head += await chunks.__anext__()
        except StopAsyncIteration:
            break
    compression = detect_compression_from_signature(head)
    if compression is None:
        if head:
            yield head
        async for chunk in chunks:
            yield chunk
        return
    decompressor = create_decompressor(compression)
    pending = head
    while True:
        while pending:
            for piece in _drain(decompressor, pending):
                yield piece
            pending = b""
            if decompressor.eof and decompressor.unused_data:
                # another stream follows this one
                pending = decompressor.unused_data
                decompressor = create_decompressor(compression)
        try:
            pending = await chunks.__anext__()
        except StopAsyncIteration:
            break
        if decompressor.eof and pending:
            decompressor = create_decompressor(compression)
    if hasattr(decompressor, "flush"):
        rest = decompressor.flush()
        if rest:
            yield rest
    if not decompressor.eof:
        raise RuntimeError(f"the {compression} image ends before its end of stream (truncated?)")


def _write_sparse(out, chunk: bytes) -> None:
    """Writes ``chunk`` at the file's position, leaving holes for runs of zeros (a 2 GiB disk
    image that is mostly empty stays small on the exporter)."""
    block = 65536
    for start in range(0, len(chunk), block):
        piece = chunk[start:start + block]
        if piece.count(0) == len(piece):
            out.seek(len(piece), os.SEEK_CUR)
        else:
            out.write(piece)


def _finish_sparse(out) -> None:
    """Gives the file its full length when it ends in a hole, and flushes it."""
    out.truncate(out.tell())
    out.flush()


async def _run_streaming(cmd: list[str], env: Optional[dict], timeout: float):
    """Runs ``cmd``, yielding ``(stdout, stderr, None)`` per line as it comes; kills it when
    ``timeout`` passes or when the consumer stops early; a non-zero exit raises."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
    except FileNotFoundError:
        raise RuntimeError(
            f"fls command not found ({cmd[0]}). Install fls or configure fls_version in the driver."
        ) from None
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(stream: asyncio.StreamReader, which: int) -> None:
        while line := await stream.readline():
            await queue.put((which, line.decode("utf-8", "replace")))
        await queue.put((which, None))

    pumps = [asyncio.ensure_future(pump(proc.stdout, 0)), asyncio.ensure_future(pump(proc.stderr, 1))]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        open_streams = 2
        while open_streams:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RuntimeError(f"fls flash timed out after {timeout}s")
            try:
                which, text = await asyncio.wait_for(queue.get(), remaining)
            except asyncio.TimeoutError:
                raise RuntimeError(f"fls flash timed out after {timeout}s") from None
            if text is None:
                open_streams -= 1
            else:
                yield (text, "", None) if which == 0 else ("", text, None)
        code = await proc.wait()
        if code != 0:
            raise RuntimeError(f"fls flash failed (return code {code})")
    finally:
        for p in pumps:
            p.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@dataclass(kw_only=True)
class QemuPower(PowerInterface, Driver):
    """Power: ``on()`` launches QEMU (and reports QEMU's own error when it cannot), ``off()``
    asks the guest to power off (ACPI power button), then tells QEMU to quit, then kills it,
    each step bounded; ``read()`` yields the library's power state."""

    parent: "Qemu"

    @export
    async def on(self) -> None:
        await to_thread.run_sync(self.parent._power_on)

    @export
    async def off(self) -> None:
        await to_thread.run_sync(self.parent._power_off)

    @export
    async def read(self) -> AsyncGenerator[PowerReading, None]:
        """One reading, now, of the library's power state (a VM has no meter): 1 V × 1 A while
        the guest runs or is paused, 0 × 0 when off (never powered on, powered off, or QEMU
        exited)."""
        state = await to_thread.run_sync(self.parent._power_state)
        if state == qemu_machine.PowerState.OFF:
            yield PowerReading(voltage=0.0, current=0.0)
        else:
            yield PowerReading(voltage=1.0, current=1.0)

    def close(self):
        self.parent._power_off()


@dataclass(kw_only=True)
class Qemu(Driver):
    """A QEMU virtual machine (drop-in for jumpstarter-driver-qemu's ``Qemu``)."""

    arch: str = field(default_factory=platform.machine)
    cpu: str | None = None

    smp: int = 2
    mem: str = "512M"
    disk_size: str | None = None

    hostname: str = "demo"
    username: str = "jumpstarter"
    password: str = "password"

    default_partitions: dict[str, Path] = field(default_factory=dict)

    hostfwd: dict[str, Hostfwd] = field(default_factory=dict)

    fls_version: str | None = field(default=None)
    fls_allow_custom_binaries: bool = field(default=False)
    fls_custom_binary_url: str | None = field(default=None)
    flash_timeout: int = field(default=30 * 60)

    #: The accelerator: ``auto`` (KVM when usable for this architecture, else TCG; the
    #: environment variable QEMU_MACHINE_ACCEL overrides it), ``kvm`` or ``tcg``.
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    #: How long ``off()`` waits for the guest to power off after the ACPI power button.
    powerdown_timeout: float = 60.0
    #: How long ``off()`` then waits for QEMU to quit before killing it.
    quit_timeout: float = 10.0

    _tmp_dir: TemporaryDirectory = field(init=False, default_factory=TemporaryDirectory)

    @classmethod
    def client(cls) -> str:
        return "jumpstarter_driver_qemu_machine.client.QemuClient"

    def __post_init__(self):
        if hasattr(super(), "__post_init__"):
            super().__post_init__()
        self.hostfwd = {k: Hostfwd.model_validate(v) for k, v in self.hostfwd.items()}
        self.default_partitions = {k: Path(v) for k, v in self.default_partitions.items()}
        for name in self.default_partitions:
            if name not in PARTITIONS:
                raise ValueError(f"default_partitions: invalid partition name: {name}")
        self._machine: Optional[qemu_machine.Machine] = None
        self._formats: dict[str, str] = {}
        self._forwards: dict[str, tuple[str, int]] = {}
        self._vnc_path: Optional[str] = None
        self.last_stop: Optional[str] = None
        self._lock = threading.RLock()

        self.children["power"] = QemuPower(parent=self)
        self.children["flasher"] = QemuFlasher(parent=self)
        self.children["console"] = PySerial(url=self._pty, check_present=False)
        self.children["vnc"] = QemuVnc(parent=self, path=self._vnc)
        for name, fwd in self.hostfwd.items():
            self.children[name] = QemuForward(parent=self, forward=name, host=fwd.hostaddr, port=fwd.hostport)

    # -- paths -------------------------------------------------------------------------------

    @property
    def _pty(self) -> str:
        return str(Path(self._tmp_dir.name) / "pty")

    @property
    def _vnc(self) -> str:
        return str(Path(self._tmp_dir.name) / "vnc")

    @staticmethod
    def _partition_name(partition: str | None) -> str:
        return "root" if partition is None else partition

    def validate_partition(self, partition: str | None = None, use_default_partitions: bool = False) -> Path:
        """The file of ``partition`` (``root`` when None): the flashed one in the driver's temp
        dir, or with ``use_default_partitions`` the configured default when none was flashed."""
        name = self._partition_name(partition)
        if name not in PARTITIONS:
            raise ValueError(f"invalid partition name: {partition}")
        path = Path(self._tmp_dir.name) / name
        if not path.exists() and use_default_partitions and name in self.default_partitions:
            return self.default_partitions[name]
        return path

    def _refuse_while_on(self, what: str) -> None:
        if self._is_on():
            raise RuntimeError(f"{what}: the VM is on; power it off first")

    def _record_flashed(self, name: str, written: Path, target: Path) -> None:
        """Records the format of a partition just flashed (probed once, from the data the
        client sent, before any guest has run on it) and moves it into place."""
        if name == "root":
            fmt = qm_image.info(written)["format"]
            if fmt not in ROOT_FORMATS:
                raise ValueError(f"unsupported image format: {fmt} (supported: {', '.join(ROOT_FORMATS)})")
        else:
            fmt = "raw"
        if written != target:
            os.replace(written, target)
        self._formats[name] = fmt
        self.logger.info("flashed %s (%s)", name, fmt)

    def _format_of(self, name: str, path: Path) -> str:
        fmt = self._formats.get(name)
        if fmt is None:
            # A default partition from the exporter's configuration: its format is probed at
            # its first use, before any guest has written to it, and kept.
            fmt = qm_image.info(path)["format"] if name == "root" else "raw"
            if fmt not in ROOT_FORMATS:
                raise ValueError(f"unsupported image format: {fmt} ({path})")
            self._formats[name] = fmt
        return fmt

    # -- power -------------------------------------------------------------------------------

    def _is_on(self) -> bool:
        with self._lock:
            return self._machine is not None and self._machine.is_running()

    def _power_state(self) -> qemu_machine.PowerState:
        """The library's power state of the VM; ``OFF`` when there is no QEMU."""
        with self._lock:
            if self._machine is None:
                return qemu_machine.PowerState.OFF
            return self._machine.power_state()

    def _virtual_size(self, path: Path, fmt: str) -> int:
        if fmt == "raw":
            return path.stat().st_size
        # qcow2/vmdk headers are the image's, not the guest's: safe to read.
        return int(qm_image.info(path)["virtual-size"])

    def _grow(self, root: Path, fmt: str, requested: int) -> None:
        """Grows the root disk to ``requested`` bytes before boot: never shrinks, and never past
        the free space of its file system. A raw disk is grown here (a longer file), without
        looking at its contents, which the guest controls; a qcow2 one by qemu-img with its
        recorded format."""
        current = self._virtual_size(root, fmt)
        if requested < current:
            raise RuntimeError(
                f"Shrinking disk is not supported: the root disk is {_human(current)} "
                f"({current} bytes), disk_size is {self.disk_size} ({requested} bytes)"
            )
        if requested == current:
            return
        available = shutil.disk_usage(root.parent).free
        if requested - current > available:
            raise RuntimeError(
                f"Not enough disk space: growing the root disk from {_human(current)} to "
                f"{_human(requested)} needs {_human(requested - current)}, only "
                f"{_human(available)} available"
            )
        self.logger.info("growing the root disk to %s", _human(requested))
        if fmt == "raw":
            os.truncate(root, requested)
        else:
            qm_image.resize(root, requested)

    def _description(self) -> dict:
        root = self.validate_partition("root", use_default_partitions=True)
        bios = self.validate_partition("bios", use_default_partitions=True)
        code = self.validate_partition("OVMF_CODE.fd", use_default_partitions=True)
        vars_ = self.validate_partition("OVMF_VARS.fd", use_default_partitions=True)
        vm: dict = {
            "arch": self.arch,
            "smp": self.smp,
            "memory": str(_parse_size(self.mem)),
            "serial": [{"type": "pty"}],
            "cloud_init": {"hostname": self.hostname, "username": self.username, "password": self.password},
            "vnc": True,
            "forwards": [
                {"name": name, "host_addr": fwd.hostaddr, "host_port": fwd.hostport, "guest_port": fwd.guestport}
                for name, fwd in self.hostfwd.items()
            ],
        }
        if self.cpu:
            vm["cpu"] = self.cpu
        if bios.exists():
            vm["bios"] = str(bios)
        elif code.exists() and vars_.exists():
            vm["uefi"] = {"code": str(code), "vars": str(vars_)}
        if root.exists():
            fmt = self._format_of("root", root)
            disk = {"id": "root", "path": str(root), "format": fmt, "bootindex": 1}
            if self.disk_size:
                self._grow(root, fmt, _parse_size(self.disk_size))
            vm["disks"] = [disk]
        return {"vm": vm, "accel": self.accel, "console": False}

    def _power_on(self) -> None:
        with self._lock:
            if self._machine is not None:
                if self._machine.is_running():
                    self.logger.warning("already powered on, ignoring request")
                    return
                # QEMU exited by itself (the guest powered off): start afresh.
                self._release()
            description = self._description()
            try:
                machine = qemu_machine.Machine.launch(description)
            except qemu_machine.LibraryError as e:
                raise RuntimeError(f"power on failed: {e.message or e}") from None
            try:
                if not machine.is_running():
                    log = machine.log().decode("utf-8", "replace")
                    raise RuntimeError(f"QEMU exited right after starting: {log.strip()}")
                forwards = {name: machine.forwarded_port(name) for name in self.hostfwd}
                vnc = machine.vnc_socket()
                chardevs = machine.execute("query-chardev")
                pty = next(c["filename"] for c in chardevs if c["label"] == "serial0")
                pty = pty.removeprefix("pty:")
                link = Path(self._pty)
                link.unlink(missing_ok=True)
                link.symlink_to(pty)
            except BaseException:
                machine.close()
                raise
            self._machine = machine
            self._forwards = forwards
            self._vnc_path = vnc
            self.last_stop = None
            self.logger.info(
                "powered on: QEMU pid %d, forwards %s", machine.pid(),
                {k: f"{h}:{p}" for k, (h, p) in forwards.items()},
            )

    def _power_off(self) -> None:
        with self._lock:
            machine = self._machine
            if machine is None:
                self.logger.warning("already powered off, ignoring request")
                return
            try:
                if not machine.is_running():
                    self.last_stop = "QEMU had exited"
                    return
                try:
                    machine.powerdown(self.powerdown_timeout)
                    graceful = machine.shutdown(self.quit_timeout)
                    self.last_stop = "the guest powered off" if graceful else "QEMU was killed"
                except qemu_machine.LibraryTimeout:
                    self.logger.warning(
                        "the guest did not power off within %s s of the ACPI power button; quitting QEMU",
                        self.powerdown_timeout,
                    )
                    graceful = machine.shutdown(self.quit_timeout)
                    self.last_stop = "QEMU quit" if graceful else "QEMU was killed"
                except (qemu_machine.ExecInterruptedError, qemu_machine.ExecuteError):
                    # QEMU went away (or refused the button): make sure it is gone.
                    graceful = machine.shutdown(self.quit_timeout)
                    self.last_stop = "QEMU quit" if graceful else "QEMU was killed"
                self.logger.info("powered off: %s", self.last_stop)
            finally:
                self._release()

    def _release(self) -> None:
        machine, self._machine = self._machine, None
        if machine is not None:
            machine.close()
        self._forwards = {}
        self._vnc_path = None
        Path(self._pty).unlink(missing_ok=True)

    def close(self):
        try:
            super().close()
        finally:
            self._tmp_dir.cleanup()

    # -- exported ----------------------------------------------------------------------------

    @export
    @validate_call(validate_return=True)
    def get_hostname(self) -> str:
        return self.hostname

    @export
    @validate_call(validate_return=True)
    def get_username(self) -> str:
        return self.username

    @export
    @validate_call(validate_return=True)
    def get_password(self) -> str:
        return self.password

    def _parse_size(self, size: str) -> int:
        return _parse_size(size)

    @export
    @validate_call(validate_return=True)
    def set_disk_size(self, size: str) -> None:
        """Sets the size the root disk is grown to at the next power on (never shrunk)."""
        _parse_size(size)
        self.disk_size = size

    @export
    @validate_call(validate_return=True)
    def set_memory_size(self, size: str) -> None:
        """Sets the memory size for the next power on."""
        _parse_size(size)
        self.mem = size
