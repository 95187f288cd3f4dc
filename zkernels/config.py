"""zkernels options, read from ``zarr.config`` under ``codec_pipeline.zkernels``.

Set them like any zarr option::

    zarr.config.set({"codec_pipeline.zkernels.threads": 4})

or with environment variables (donfig), e.g. ``ZARR_CODEC_PIPELINE__ZKERNELS__THREADS=4``.
See ``docs/config.md`` for the meaning of each key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


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
    threads = int(threads) if threads not in (None, "", "None") else _CPUS
    if threads < 1:
        raise ValueError(f"{PREFIX}.threads must be >= 1, got {threads}")
    gap = int(merged["coalesce_max_gap_bytes"])
    max_bytes = int(merged["coalesce_max_bytes"])
    if gap < 0 or max_bytes < 1:
        raise ValueError(
            f"{PREFIX}.coalesce_max_gap_bytes must be >= 0 and coalesce_max_bytes >= 1, "
            f"got {gap} and {max_bytes}"
        )
    piece = int(merged["piece_bytes"])
    if piece < 0:
        raise ValueError(f"{PREFIX}.piece_bytes must be >= 0 (0: whole shards), got {piece}")
    return Options(
        threads=threads,
        coalesce_max_gap_bytes=gap,
        coalesce_max_bytes=max_bytes,
        validate_checksums=_as_bool(merged["validate_checksums"]),
        strict=_as_bool(merged["strict"]),
        dense_path=_as_bool(merged["dense_path"]),
        inline_bytes=int(merged["inline_bytes"]),
        piece_bytes=piece,
        swap_writes=_as_bool(merged["swap_writes"]),
    )
