"""Exceptions raised by zkernels.

Every error subclasses :class:`ZKernelsError`, itself a :class:`ValueError`, so code that already
catches ``ValueError`` around zarr reads keeps working. Errors raised while reading or writing a
store carry the store key in ``.key`` and name it in the message.
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "CorruptChunkError",
    "ShardIndexError",
    "UnsupportedError",
    "ZKernelsError",
]


class ZKernelsError(ValueError):
    """Base class of every zkernels error."""

    key: str | None = None

    def with_key(self, key: str) -> ZKernelsError:
        """Return a copy of this error whose message starts with the store key.

        Used by the pipeline, which knows the key, around kernel calls, which do not.
        """
        if self.key is not None:
            return self
        err = type(self)(f"{key}: {self}")
        err.key = key
        return err


class ShardIndexError(ZKernelsError):
    """A shard index is malformed: wrong length, an entry out of bounds, overlapping the index,
    or half empty."""


class ChecksumError(ZKernelsError):
    """A crc32c checksum does not match the data it guards (shard index or chunk)."""


class CorruptChunkError(ZKernelsError):
    """A chunk's bytes do not decode to what its metadata says (wrong size, truncated data)."""


class UnsupportedError(ZKernelsError):
    """Raised in strict mode for a read or write that zkernels would otherwise hand to zarr's
    default pipeline; the message names the reason."""
