"""The console socket of a QEMUMachine: a unix socket connected to the character device that
carries the guest's console, optionally drained into memory (and a log file) by a thread so
that a guest writing to an unread console never blocks."""

from __future__ import annotations

import socket
import threading
import time
from typing import BinaryIO, Optional


class ConsoleSocket(socket.socket):
    """A socket connected to the console at ``address``.

    With ``drain``, a thread reads the console all the time into a buffer that :meth:`recv`
    takes from (honouring the socket's timeout); with ``file``, everything read is appended to
    that file too (``file`` implies ``drain``). Without them it is a plain socket.
    """

    def __init__(self, address: str, file: Optional[str] = None, drain: bool = False):
        super().__init__(socket.AF_UNIX, socket.SOCK_STREAM)
        self.connect(address)
        self._log: Optional[BinaryIO] = open(file, "ab") if file else None  # noqa: SIM115
        self._drain = drain or file is not None
        self._buffer = bytearray()
        self._eof = False
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        if self._drain:
            self._thread = threading.Thread(target=self._drain_loop, name="qemu-console", daemon=True)
            self._thread.start()

    def _drain_loop(self) -> None:
        while True:
            try:
                data = super().recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buffer.extend(data)
                if self._log is not None:
                    self._log.write(data)
                    self._log.flush()
                self._cond.notify_all()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        """Console bytes: from the drained buffer (waiting up to the socket's timeout; ``b""``
        at the end of the console), else from the socket."""
        if not self._drain:
            data = super().recv(bufsize, flags)
            return data
        timeout = self.gettimeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buffer and not self._eof:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise socket.timeout("timed out")
                self._cond.wait(remaining)
            data = bytes(self._buffer[:bufsize])
            del self._buffer[:bufsize]
            return data

    def get_buffered(self) -> bytes:
        """Takes everything drained so far (``b""`` without ``drain``)."""
        with self._cond:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data

    def close(self) -> None:
        """Closes the socket and stops the drain thread, waiting for it."""
        if self._thread is not None:
            try:
                self.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._thread.join()
            self._thread = None
        super().close()
        if self._log is not None:
            self._log.close()
            self._log = None
