"""CRC-32C (Castagnoli) checksums, as the zarr v3 ``crc32c`` codec stores them.

The C kernels live in ``src/zk_crc32c.h`` (declared in ``_crc32c.pxd`` for other kernel modules
to ``cimport``): a slice-by-16 table path, and a hardware path (SSE4.2 on x86-64, the ARMv8 CRC
extension on aarch64) running three interleaved streams, picked once at run time.

Every function takes the previous CRC as ``value`` (0 to start) and returns a finished CRC, so
calls chain: ``crc32c(b, crc32c(a)) == crc32c(a + b)``. The GIL is released while checksumming
anything but small inputs (below 16 KiB with hardware support, 4 KiB without).
"""

from cpython.buffer cimport (
    PyBUF_STRIDES,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.number cimport PyNumber_Index
from libc.stdint cimport uint8_t, uint32_t

# zk_crc32c* come from the extern block of the matching _crc32c.pxd.

__all__ = [
    "crc32c",
    "crc32c_hardware",
    "crc32c_implementation",
    "crc32c_software",
    "hardware_crc32c_available",
]

# Release the GIL only for inputs that take about a microsecond or more (16 KiB in hardware,
# 4 KiB in software at ~25 and ~3 GB/s). Below that, releasing and re-taking it costs ~10% of the
# call, and, worse, lets a Python-bound thread in that may keep the GIL for a whole switch interval
# (5 ms) before this one gets it back. hashlib makes the same trade-off at 2 KiB.
cdef size_t _NOGIL_MIN_HW = 16384
cdef size_t _NOGIL_MIN_SW = 4096


cdef enum _Impl:
    _AUTO = 0
    _SOFTWARE = 1
    _HARDWARE = 2


cdef inline uint32_t _crc32c_c(
    int impl,            # IN  which path (_Impl)
    uint32_t crc,        # IN  previous CRC, 0 to start
    const uint8_t *p,    # IN  data
    size_t n,            # IN  its length in bytes
) noexcept nogil:
    if impl == _SOFTWARE:
        return zk_crc32c_sw(crc, p, n)
    if impl == _HARDWARE:
        return zk_crc32c_hw(crc, p, n)
    return zk_crc32c(crc, p, n)


cdef uint32_t _as_crc_value(object value) except? 0xFFFFFFFF:
    cdef unsigned long long v
    if type(value) is not int:
        try:
            value = PyNumber_Index(value)  # numpy integers yes; float, str no
        except TypeError:
            raise TypeError(
                f"value must be an integer CRC-32C, not {type(value).__name__!r}"
            ) from None
    try:
        v = value
    except OverflowError:
        v = 0x100000000ULL  # negative or huge: reported below
    if v > 0xFFFFFFFFULL:
        raise ValueError(f"value must be a CRC-32C in [0, 2**32 - 1], got {value!r}")
    return <uint32_t>v


cdef object _checksum(object data, object value, int impl, str name):
    cdef uint32_t crc = _as_crc_value(value)
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef size_t n, nogil_min
    if not PyObject_CheckBuffer(data):
        raise TypeError(
            f"{name}() needs a bytes-like object (bytes, bytearray, memoryview, numpy array, "
            f"...), not {type(data).__name__!r}"
        )
    # PyBUF_STRIDES, not PyBUF_C_CONTIGUOUS: the exporter then hands over any layout and the
    # contiguity error below is ours, the same for every exporter. No PyBUF_FORMAT: any dtype.
    PyObject_GetBuffer(data, &view, PyBUF_STRIDES)
    try:
        if not PyBuffer_IsContiguous(&view, c'C'):
            raise ValueError(
                f"{name}() needs C-contiguous data; got a non-contiguous {type(data).__name__} "
                "(copy it first, e.g. with numpy.ascontiguousarray)"
            )
        p = <const uint8_t *>view.buf
        n = <size_t>view.len
        if impl != _SOFTWARE and zk_crc32c_hw_available():
            nogil_min = _NOGIL_MIN_HW
        else:
            nogil_min = _NOGIL_MIN_SW
        if n >= nogil_min:
            with nogil:
                crc = _crc32c_c(impl, crc, p, n)
        else:
            crc = _crc32c_c(impl, crc, p, n)
    finally:
        PyBuffer_Release(&view)
    return crc


def crc32c(data, value=0):
    """Return the CRC-32C of `data`, continuing from `value`.

    Uses the CPU's CRC-32C instructions when it has them (see :func:`crc32c_implementation`),
    else the table implementation; both give identical results.

    Parameters
    ----------
    data : bytes-like
        Any object exposing a C-contiguous buffer: ``bytes``, ``bytearray``, ``memoryview``, a
        numpy array of any dtype and shape (its memory is checksummed, as ``arr.tobytes()``).
    value : int, optional
        The CRC of the data that precedes `data`, in ``[0, 2**32 - 1]``; 0 (the default) starts
        a new checksum.

    Returns
    -------
    int
        The CRC-32C, in ``[0, 2**32 - 1]``. The zarr ``crc32c`` codec stores it as 4 bytes,
        little-endian, after the data.

    Raises
    ------
    TypeError
        If `data` does not support the buffer protocol, or `value` is not an integer.
    ValueError
        If `data` is not C-contiguous, or `value` is out of range.

    Notes
    -----
    The GIL is released while checksumming inputs of 16 KiB or more (4 KiB or more without
    hardware support), so threads checksumming different buffers run in parallel.

    Examples
    --------
    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    >>> crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")
    True
    """
    return _checksum(data, value, _AUTO, "crc32c")


def crc32c_software(data, value=0):
    """Return the CRC-32C of `data` computed by the portable table (slice-by-16) path.

    Same arguments, result and errors as :func:`crc32c`; for testing and benchmarking.

    Parameters
    ----------
    data : bytes-like
        C-contiguous data to checksum.
    value : int, optional
        The CRC of the preceding data, 0 to start.

    Returns
    -------
    int
        The CRC-32C.
    """
    return _checksum(data, value, _SOFTWARE, "crc32c_software")


def crc32c_hardware(data, value=0):
    """Return the CRC-32C of `data` computed with the CPU's CRC-32C instructions.

    Same arguments, result and errors as :func:`crc32c`; for testing and benchmarking.

    Parameters
    ----------
    data : bytes-like
        C-contiguous data to checksum.
    value : int, optional
        The CRC of the preceding data, 0 to start.

    Returns
    -------
    int
        The CRC-32C.

    Raises
    ------
    RuntimeError
        If this CPU (or this build) has no hardware CRC-32C; see
        :func:`hardware_crc32c_available`.
    """
    if not zk_crc32c_hw_available():
        raise RuntimeError(
            "crc32c_hardware(): no hardware CRC-32C on this machine (needs SSE4.2 on x86-64 or "
            "the CRC extension on aarch64, and a GCC or Clang build); use crc32c()"
        )
    return _checksum(data, value, _HARDWARE, "crc32c_hardware")


def hardware_crc32c_available():
    """Return whether :func:`crc32c` uses the CPU's CRC-32C instructions.

    Returns
    -------
    bool
        True on x86-64 with SSE4.2 and on aarch64 with the CRC extension (when built with GCC
        or Clang).
    """
    return bool(zk_crc32c_hw_available())


def crc32c_implementation():
    """Return a short description of the implementation :func:`crc32c` uses.

    Returns
    -------
    str
        For example ``"sse4.2 (3-way interleaved)"``, ``"armv8-crc (3-way interleaved)"`` or
        ``"table (slice-by-16)"``.
    """
    return zk_crc32c_impl_name().decode("ascii")
