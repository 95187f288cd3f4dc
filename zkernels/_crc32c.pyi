"""Type stubs for the compiled module ``zkernels._crc32c`` (CRC-32C checksums)."""

from typing_extensions import Buffer

__all__ = [
    "crc32c",
    "crc32c_hardware",
    "crc32c_implementation",
    "crc32c_software",
    "hardware_crc32c_available",
]

def crc32c(data: Buffer, value: int = 0) -> int:
    """CRC-32C of ``data`` (any C-contiguous buffer), continuing from ``value`` (0 to start)."""

def crc32c_software(data: Buffer, value: int = 0) -> int:
    """CRC-32C of ``data`` by the portable table (slice-by-16) path."""

def crc32c_hardware(data: Buffer, value: int = 0) -> int:
    """CRC-32C of ``data`` by the CPU's instructions; RuntimeError where there are none."""

def hardware_crc32c_available() -> bool:
    """Whether :func:`crc32c` uses the CPU's CRC-32C instructions."""

def crc32c_implementation() -> str:
    """The implementation :func:`crc32c` uses, e.g. ``"sse4.2 (3-way interleaved)"``."""
