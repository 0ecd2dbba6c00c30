"""Disk images through libqemumachine (qemu-img run by the library's guardian)."""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Optional, Union

from . import _lib
from ._lib import take_json

PathLike = Union[str, bytes, "os.PathLike[str]"]


def info(path: PathLike) -> dict[str, Any]:
    """``qemu-img info`` of ``path`` as a dict (``format``, ``virtual-size``, ...). It probes
    the format: use it on images whose contents you trust (not a raw disk a guest has
    written)."""
    lib = _lib.library()
    out = ctypes.c_void_p()
    lib.check(lib.qm_image_info(os.fsencode(path), ctypes.byref(out)), "image info")
    return take_json(lib, out.value)


def create(path: PathLike, fmt: str, size: int) -> None:
    """Creates an image of format ``fmt`` and ``size`` bytes."""
    lib = _lib.library()
    lib.check(lib.qm_image_create(os.fsencode(path), fmt.encode(), size), "image create")


def resize(path: PathLike, size: int, allow_shrink: bool = False) -> None:
    """Resizes the image to ``size`` bytes; shrinking only with ``allow_shrink``; growing past
    the free space of its file system is refused."""
    lib = _lib.library()
    lib.check(lib.qm_image_resize(os.fsencode(path), size, allow_shrink), "image resize")


def convert(src: PathLike, dst: PathLike, dst_format: str,
            progress: Optional[Callable[[float], None]] = None) -> None:
    """Converts ``src`` into a new image ``dst`` of ``dst_format``; ``progress(fraction)`` is
    called on this thread as it goes. ``dst`` is replaced only when the conversion succeeds."""
    lib = _lib.library()
    failure: list[BaseException] = []

    def trampoline(fraction: float, _user: Any) -> None:
        if progress is None or failure:
            return
        try:
            progress(fraction)
        except BaseException as e:  # an exception must not unwind through C
            failure.append(e)

    cb = _lib.PROGRESS_FN(trampoline)
    status = lib.qm_image_convert(os.fsencode(src), os.fsencode(dst), dst_format.encode(), cb, None)
    lib.check(status, "image convert")
    if failure:
        raise failure[0]
