"""zkernels options, read from ``zarr.config`` under ``codec_pipeline.zkernels``.

Set them like any zarr option::

    zarr.config.set({"codec_pipeline.zkernels.threads": 4})

or with environment variables (donfig), e.g. ``ZARR_CODEC_PIPELINE__ZKERNELS__THREADS=4``.
See ``docs/config.md`` for the meaning of each key.
"""

from __future__ import annotations

import numbers
import os
import re
from dataclasses import dataclass

import numpy as np
import zarr

PREFIX = "codec_pipeline.zkernels"

DEFAULTS: dict[str, object] = {
    # worker threads for decode/encode and sync store IO; None = os.cpu_count()
    "threads": None,
    # byte-range coalescing for partial shard reads
    "coalesce_max_gap_bytes": 1 << 16,
    "coalesce_max_bytes": 1 << 24,
    # verify crc32c checksums (shard index and crc32c codec) on read
    "validate_checksums": True,
    # raise UnsupportedError instead of delegating to zarr's default pipeline
    "strict": False,
    # use the dense-shard bulk reconstruction kernel where it applies
    "dense_path": True,
    # below this many decoded bytes a read or write runs inline, without a thread hop
    "inline_bytes": 1 << 18,
    # local files: a whole shard larger than this is read and decoded in pieces of about this
    # many bytes, so that each thread holds one piece, not one shard; 0: whole shards
    "piece_bytes": 1 << 21,
    # local files: replace an existing file by swapping a new one in (renameat2), not by
    # renaming over it (which makes ext4 write it to disk at once); False: LocalStore.set_sync
    "swap_writes": True,
}


@dataclass(frozen=True)
class Options:
    threads: int
    coalesce_max_gap_bytes: int
    coalesce_max_bytes: int
    validate_checksums: bool
    strict: bool
    dense_path: bool
    inline_bytes: int
    piece_bytes: int
    swap_writes: bool


_CPUS = os.cpu_count() or 1


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _as_bool(name: str, value: object) -> bool:
    """A switch: a bool, 0 or 1, or one of the words in _TRUE / _FALSE (any case; environment
    variables arrive as strings). Anything else is refused: a mistyped value must not quietly
    turn a check such as ``validate_checksums`` off."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(
        f"{PREFIX}.{name} must be true or false (or one of {_TRUE + _FALSE}), got {value!r}"
    )


def _as_int(name: str, value: object, minimum: int, what: str = "") -> int:
    """A whole number of at least ``minimum``: an int (numpy's too) or its decimal digits
    (environment variables); not a bool, a float or a size such as "64k"."""
    n = None
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    if integral or (isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value)):
        n = int(value)
    if n is None or n < minimum:
        raise ValueError(
            f"{PREFIX}.{name} must be an integer >= {minimum}{what}, got {value!r}"
        )
    return n


_memo: tuple[dict, Options] | None = None


def options() -> Options:
    """The options in force now (one zarr.config lookup; parsed again only when they change)."""
    global _memo
    user = zarr.config.get(PREFIX, None) or {}
    memo = _memo
    # a read of one small chunk calls this once: compare with the settings last parsed (a
    # copy: zarr.config.set changes its dicts in place) rather than build a key from them
    if memo is not None and type(user) is dict and memo[0] == user:
        return memo[1]
    opts = _parse(user)
    _memo = (dict(user), opts)
    return opts


def _parse(user: object) -> Options:
    merged = {**DEFAULTS, **{k: v for k, v in dict(user).items() if k in DEFAULTS}}
    unknown = set(dict(user)) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown zkernels option(s) {sorted(unknown)} under {PREFIX!r}; "
            f"known: {sorted(DEFAULTS)}"
        )
    threads = merged["threads"]
    threads = _CPUS if threads in (None, "", "None") else _as_int("threads", threads, 1)
    gap = _as_int("coalesce_max_gap_bytes", merged["coalesce_max_gap_bytes"], 0)
    max_bytes = _as_int("coalesce_max_bytes", merged["coalesce_max_bytes"], 1)
    piece = _as_int("piece_bytes", merged["piece_bytes"], 0, " (0: whole shards)")
    return Options(
        threads=threads,
        coalesce_max_gap_bytes=gap,
        coalesce_max_bytes=max_bytes,
        validate_checksums=_as_bool("validate_checksums", merged["validate_checksums"]),
        strict=_as_bool("strict", merged["strict"]),
        dense_path=_as_bool("dense_path", merged["dense_path"]),
        inline_bytes=_as_int("inline_bytes", merged["inline_bytes"], 0),
        piece_bytes=piece,
        swap_writes=_as_bool("swap_writes", merged["swap_writes"]),
    )
