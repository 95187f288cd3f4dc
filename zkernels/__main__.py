"""Command line: ``python -m zkernels info`` and ``python -m zkernels bench``."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys


def _info(args: argparse.Namespace) -> int:
    import numpy as np

    import zkernels

    print(f"zkernels {zkernels.__version__}")
    print(f"python   {platform.python_version()} ({platform.machine()}, {platform.system()})")
    print(f"numpy    {np.__version__}")
    try:
        import zarr

        print(f"zarr     {zarr.__version__}")
    except ImportError:  # pragma: no cover
        print("zarr     not installed")
    print("compiled kernel modules:")
    ok = True
    for name in zkernels.KERNEL_MODULES:
        try:
            mod = importlib.import_module(f"zkernels.{name}")
            print(f"  {name:<14} {mod.__file__}")
        except ImportError as exc:
            ok = False
            print(f"  {name:<14} MISSING ({exc})")
    try:
        from zkernels._crc32c import crc32c_implementation

        print(f"crc32c   {crc32c_implementation()}")
    except ImportError:
        print("crc32c   unavailable")
    try:
        from zkernels._decode import codec_libraries

        libs = codec_libraries()
        for kind in ("zstd", "blosc"):
            where = libs.get(kind, "not found: chunks decoded in Python through numcodecs")
            print(f"{kind:<8} {where}")
    except ImportError:
        print("codecs   unavailable")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zkernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, compiled kernels, crc32c implementation")
    p_info.set_defaults(func=_info)
    try:
        from zkernels import bench as _bench
    except ImportError:
        _bench = None
    if _bench is not None:
        _bench.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
