"""Where the compression kernels find libzstd and c-blosc: addresses of their C functions.

zkernels links neither library. numcodecs ships both, compiled into its extension modules with
their symbols exported; ``ctypes`` finds the functions there and the kernels call them through
pointers (see ``src/zk_codecs.h``). Decoding may also use a system libzstd (any release decodes
any frame). Encoding only uses numcodecs' own copy: the bytes zarr stores come from that release,
and a different release may compress differently.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator

__all__ = ["find"]


def _candidates(module_name: str, system_name: str | None) -> Iterator[tuple[str, str]]:
    try:
        module = __import__(module_name, fromlist=["_"])
    except Exception:  # noqa: BLE001 - an absent or broken numcodecs build: try the next
        module = None
    if module is not None and getattr(module, "__file__", None):
        yield f"{module_name} ({module.__file__})", module.__file__
    if system_name is not None:
        path = ctypes.util.find_library(system_name)
        if path:
            yield f"system lib{system_name} ({path})", path


def find(
    module_name: str,
    system_name: str | None,
    symbols: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> tuple[str, dict[str, int]] | None:
    """The first library exporting every one of ``symbols``: (label, {symbol: address}), with
    those of ``optional`` it also exports."""
    for label, path in _candidates(module_name, system_name):
        try:
            lib = ctypes.CDLL(path)
            addrs = {s: ctypes.cast(getattr(lib, s), ctypes.c_void_p).value for s in symbols}
        except (OSError, AttributeError):
            continue
        if all(addrs.values()):
            for s in optional:
                addr = ctypes.cast(getattr(lib, s, None) or 0, ctypes.c_void_p).value
                if addr:
                    addrs[s] = addr
            return label, addrs  # type: ignore[return-value]
    return None
