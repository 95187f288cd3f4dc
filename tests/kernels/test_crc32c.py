"""Tests of zkernels._crc32c: CRC-32C in hardware and software.

Oracles: known answers, a bit-at-a-time numpy twin written from the definition, the `crc32c`
PyPI package, and zarr's own Crc32cCodec (which stores the CRC little-endian after the data).
"""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkernels._crc32c import (
    crc32c,
    crc32c_hardware,
    crc32c_implementation,
    crc32c_software,
    hardware_crc32c_available,
)

crc32c_pkg = pytest.importorskip("crc32c")

HW = hardware_crc32c_available()
needs_hw = pytest.mark.skipif(
    not HW,
    reason="this CPU (or build) has no CRC-32C instructions (SSE4.2 / ARMv8 CRC): "
    "the hardware path cannot run here",
)

# Every implementation, under the name the test ids show.
IMPLS = [
    pytest.param(crc32c, id="auto"),
    pytest.param(crc32c_software, id="software"),
    pytest.param(crc32c_hardware, id="hardware", marks=needs_hw),
]
ALL_FUNCS = [crc32c, crc32c_software] + ([crc32c_hardware] if HW else [])

POLY = np.uint32(0x82F63B78)  # CRC-32C, reflected
CHECK = 0xE3069283  # crc32c(b"123456789"), the catalogue check value
LONG_BLOCK = 3 * 8192  # the hardware path's 3-way block sizes (ZK_CRC32C_LONG / _SHORT)
SHORT_BLOCK = 3 * 256


def crc32c_twin(messages, init=0):
    """Bit-at-a-time CRC-32C of each row of a 2-D uint8 array, vectorised over the rows.

    Straight from the definition (reflected polynomial 0x82F63B78, register inverted before and
    after), sharing nothing with the kernels' tables.
    """
    msgs = np.atleast_2d(np.asarray(messages, dtype=np.uint8))
    crc = ~np.broadcast_to(np.asarray(init, dtype=np.uint32), msgs.shape[:1]).copy()
    for j in range(msgs.shape[1]):
        crc ^= msgs[:, j]
        for _ in range(8):
            crc = (crc >> np.uint32(1)) ^ np.where(crc & np.uint32(1), POLY, np.uint32(0))
    return ~crc


def _random_bytes(rng: np.random.Generator, n: int) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def big() -> bytes:
    """64 MiB + 64 bytes of seeded random data, shared by the large-buffer and GIL tests."""
    return _random_bytes(np.random.default_rng(64), (64 << 20) + 64)


# ---- known answers ------------------------------------------------------------------------


def test_twin_known_answer():
    assert crc32c_twin(np.frombuffer(b"123456789", np.uint8))[0] == CHECK
    assert crc32c_twin(np.zeros((1, 0), np.uint8))[0] == 0


@pytest.mark.parametrize("func", IMPLS)
@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", 0),
        (b"123456789", CHECK),
        (b"a", 0xC1D04330),
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4: 32 bytes of zeros
        (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4: 32 bytes of ones
        (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4: incrementing
        (bytes(range(31, -1, -1)), 0x113FDB5C),  # RFC 3720 B.4: decrementing
    ],
)
def test_known_answers(func, data, expected):
    assert func(data) == expected
    assert func(data, 0) == expected


@pytest.mark.parametrize("func", IMPLS)
def test_empty_keeps_value(func):
    for value in (0, 1, CHECK, 2**32 - 1):
        assert func(b"", value) == value


@pytest.mark.parametrize("func", IMPLS)
def test_chaining(func):
    rng = np.random.default_rng(1)
    data = _random_bytes(rng, 100_000)
    whole = func(data)
    for cut in [0, 1, 7, 8, 9, 767, 768, 769, 24575, 24576, 24577, 50_000, 99_999, 100_000]:
        assert func(data[cut:], func(data[:cut])) == whole, cut
    # Many pieces, and mixing implementations mid-stream.
    cuts = np.sort(rng.integers(0, len(data), 40))
    crc = 0
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(data)], strict=True)):
        crc = ALL_FUNCS[i % len(ALL_FUNCS)](data[a:b], crc)
    assert crc == whole


def test_single_bit_errors_detected():
    data = bytearray(_random_bytes(np.random.default_rng(2), 64))
    good = crc32c(data)
    for bit in range(len(data) * 8):
        data[bit // 8] ^= 1 << (bit % 8)
        assert crc32c(data) != good, bit
        data[bit // 8] ^= 1 << (bit % 8)
    assert crc32c(data) == good


# ---- against the numpy twin ---------------------------------------------------------------


@pytest.mark.parametrize("func", IMPLS)
def test_vs_twin_small(func):
    rng = np.random.default_rng(3)
    for n in [*range(65), 100, 255, 256, 257, 767, 768, 769, 1000]:
        msgs = rng.integers(0, 256, (8, n), dtype=np.uint8)
        inits = rng.integers(0, 2**32, 8, dtype=np.uint32)
        expected = crc32c_twin(msgs, inits)
        got = [func(msgs[i], int(inits[i])) for i in range(len(msgs))]
        assert got == expected.tolist(), n


# ---- against the crc32c package, every small length, every alignment ----------------------


def test_every_length_and_offset_agrees():
    """Every length 0..4096 at a random misaligned start, with a random initial value."""
    rng = np.random.default_rng(4)
    buf = memoryview(_random_bytes(rng, 4096 + 64))
    offsets = rng.integers(0, 64, 4097)
    values = rng.integers(0, 2**32, 4097).tolist()
    for n in range(4097):
        data = buf[offsets[n] : offsets[n] + n]
        value = values[n]
        expected = crc32c_pkg.crc32c(data, value)
        got = [f(data, value) for f in ALL_FUNCS]
        assert got == [expected] * len(ALL_FUNCS), (n, int(offsets[n]))


def test_block_boundaries_agree():
    """Lengths around the hardware path's 3-way block sizes, at every 8-byte alignment."""
    rng = np.random.default_rng(5)
    buf = memoryview(_random_bytes(rng, 4 * LONG_BLOCK + 64))
    lengths = sorted(
        {
            k * block + d
            for block in (SHORT_BLOCK, LONG_BLOCK)
            for k in (1, 2, 3)
            for d in range(-9, 10)
        }
        | {LONG_BLOCK + SHORT_BLOCK + 8 + 3, 2 * LONG_BLOCK + 5 * SHORT_BLOCK + 7}
    )
    for n in lengths:
        for off in range(8):
            data = buf[off : off + n]
            expected = crc32c_pkg.crc32c(data)
            assert [f(data) for f in ALL_FUNCS] == [expected] * len(ALL_FUNCS), (n, off)


@pytest.mark.parametrize("size", [1 << 20, (8 << 20) + 13, (64 << 20) + 7])
@pytest.mark.parametrize("offset", [0, 3])
def test_large_buffers_agree(big, size, offset):
    data = memoryview(big)[offset : offset + size]
    assert len(data) == size
    expected = crc32c_pkg.crc32c(data)
    assert [f(data) for f in ALL_FUNCS] == [expected] * len(ALL_FUNCS)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), value=st.integers(0, 2**32 - 1))
def test_hypothesis_agrees(data, value):
    expected = crc32c_pkg.crc32c(data, value)
    assert [f(data, value) for f in ALL_FUNCS] == [expected] * len(ALL_FUNCS)


@settings(max_examples=100, deadline=None)
@given(a=st.binary(max_size=2000), b=st.binary(max_size=2000), value=st.integers(0, 2**32 - 1))
def test_hypothesis_chaining(a, b, value):
    for f in ALL_FUNCS:
        assert f(b, f(a, value)) == f(a + b, value)


# ---- against zarr -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 9, 1000, 70_001])
def test_matches_zarr_crc32c_codec(n):
    zarr = pytest.importorskip("zarr")
    from zarr.codecs import Crc32cCodec
    from zarr.storage import MemoryStore

    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    data[0] = 1  # not all fill_value, so the chunk is written
    stored = {}
    arr = zarr.create_array(
        MemoryStore(stored), shape=(n,), chunks=(n,), dtype="uint8",
        compressors=[Crc32cCodec()], fill_value=0,
    )
    arr[:] = data
    raw = stored["c/0"].to_bytes()
    payload, trailer = raw[:-4], raw[-4:]
    assert payload == data.tobytes()
    assert crc32c(payload) == int.from_bytes(trailer, "little")
    assert crc32c(payload).to_bytes(4, "little") == trailer


def test_matches_zarr_shard_index_checksum():
    zarr = pytest.importorskip("zarr")
    from zarr.storage import MemoryStore

    stored = {}
    arr = zarr.create_array(
        MemoryStore(stored), shape=(64, 64), chunks=(8, 8), shards=(32, 32), dtype="int16",
        fill_value=0,
    )
    arr[:] = np.arange(64 * 64, dtype="int16").reshape(64, 64)
    for key in ("c/0/0", "c/1/1"):
        raw = stored[key].to_bytes()
        index = raw[-(16 * 16 + 4) :]  # 4x4 inner chunks, (offset, nbytes) uint64 each, + crc
        assert crc32c(index[:-4]) == int.from_bytes(index[-4:], "little")


# ---- input handling -----------------------------------------------------------------------


@pytest.mark.parametrize("func", IMPLS)
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda b: b, id="bytes"),
        pytest.param(bytearray, id="bytearray"),
        pytest.param(memoryview, id="memoryview"),
        pytest.param(lambda b: memoryview(b).cast("I", (len(b) // 4,)), id="memoryview-uint32"),
        pytest.param(lambda b: np.frombuffer(b, np.uint8), id="np-uint8"),
        pytest.param(lambda b: np.frombuffer(b, "<f8").reshape(4, -1), id="np-float64-2d"),
        pytest.param(lambda b: np.frombuffer(b, ">i2").reshape(2, 4, -1), id="np-int16be-3d"),
        pytest.param(lambda b: np.frombuffer(b, "c16").copy(), id="np-complex-writable"),
        pytest.param(lambda b: np.frombuffer(b, "V8"), id="np-void"),
        pytest.param(lambda b: np.frombuffer(b, [("a", "u1"), ("b", "<i4"), ("c", "u1", 3)]),
                     id="np-structured"),
        pytest.param(lambda b: np.frombuffer(b, np.uint8).reshape(1, -1).T, id="np-column"),
    ],
)
def test_accepts_any_contiguous_buffer(func, make):
    raw = _random_bytes(np.random.default_rng(6), 8 * 64 * 2)  # 1 KiB: every make() fits
    obj = make(raw)
    assert func(obj) == crc32c_pkg.crc32c(raw)
    assert func(obj, 12345) == crc32c_pkg.crc32c(raw, 12345)


@pytest.mark.parametrize("func", IMPLS)
def test_zero_d_and_empty_arrays(func):
    x = np.array(3.5)
    assert func(x) == crc32c_pkg.crc32c(x.tobytes())
    assert func(np.empty((0, 5), np.float32)) == 0
    assert func(np.empty((5, 0), np.float32)[:, ::2]) == 0  # empty: contiguous whatever strides


@pytest.mark.parametrize("func", IMPLS)
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: np.arange(100, dtype=np.uint8)[::2], id="np-strided"),
        pytest.param(lambda: np.zeros((4, 5), order="F"), id="np-fortran"),
        pytest.param(lambda: np.zeros((4, 5))[:, :3], id="np-sliced"),
        pytest.param(lambda: memoryview(bytes(100))[::3], id="memoryview-strided"),
    ],
)
def test_rejects_non_contiguous(func, make):
    with pytest.raises(ValueError, match="C-contiguous"):
        func(make())


@pytest.mark.parametrize("func", IMPLS)
@pytest.mark.parametrize("data", [None, 12, 1.5, "text", [1, 2, 3], object()])
def test_rejects_non_buffer(func, data):
    with pytest.raises(TypeError, match="bytes-like"):
        func(data)


@pytest.mark.parametrize("func", IMPLS)
def test_rejects_released_memoryview(func):
    mv = memoryview(b"abc")
    mv.release()
    with pytest.raises(ValueError, match="released"):
        func(mv)


@pytest.mark.parametrize("func", IMPLS)
@pytest.mark.parametrize("value", [-1, 2**32, 2**64, -(2**70), np.int64(-3)])
def test_rejects_value_out_of_range(func, value):
    with pytest.raises(ValueError, match=r"\[0, 2\*\*32 - 1\]"):
        func(b"abc", value)


@pytest.mark.parametrize("func", IMPLS)
@pytest.mark.parametrize("value", [1.0, "1", None, b"\x00"])
def test_rejects_non_integer_value(func, value):
    with pytest.raises(TypeError, match="integer"):
        func(b"abc", value)


@pytest.mark.parametrize("func", IMPLS)
def test_value_accepts_integer_types(func):
    expected = crc32c_pkg.crc32c(b"abc", 2**32 - 1)
    assert func(b"abc", np.uint32(2**32 - 1)) == expected
    assert func(b"abc", np.uint64(2**32 - 1)) == expected
    assert func(b"abc", value=2**32 - 1) == expected
    assert func(b"abc", True) == crc32c_pkg.crc32c(b"abc", 1)


# ---- implementation selection -------------------------------------------------------------


def test_implementation_name():
    name = crc32c_implementation()
    assert isinstance(name, str)
    assert isinstance(HW, bool)
    if HW:
        assert "3-way" in name and name.split()[0] in ("sse4.2", "armv8-crc")
    else:
        assert name.startswith("table")


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="compares with /proc/cpuinfo flags on Linux x86-64 only",
)
def test_hardware_detection_matches_cpuinfo():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    assert HW == ("sse4_2" in flags)
    if HW:
        assert crc32c_implementation() == "sse4.2 (3-way interleaved)"


@pytest.mark.skipif(HW, reason="this CPU has CRC-32C instructions: nothing to refuse")
def test_hardware_refused_without_cpu_support():
    with pytest.raises(RuntimeError, match="no hardware CRC-32C"):
        crc32c_hardware(b"abc")


def test_package_reexport():
    import zkernels

    assert zkernels.crc32c is crc32c
    assert zkernels.hardware_crc32c_available is hardware_crc32c_available


def test_generated_tables_are_current():
    script = Path(__file__).resolve().parents[2] / "scripts" / "gen_crc32c_tables.py"
    header = Path(__file__).resolve().parents[2] / "zkernels" / "src" / "zk_crc32c.h"
    if not (script.exists() and header.exists()):
        pytest.skip("needs the source tree (scripts/ and zkernels/src/)")
    result = subprocess.run(
        [sys.executable, str(script), "--check", "--header", str(header)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr


# ---- threads ------------------------------------------------------------------------------


@pytest.fixture
def no_forced_gil_switches():
    """Make the interpreter hand the GIL over only when a thread gives it up itself."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("func", IMPLS)
def test_releases_the_gil(func, big, no_forced_gil_switches):
    """While the worker thread is inside the C call, the main thread keeps running Python.

    Counted, not timed. With forced GIL switches off, the main thread (which counts, and gives
    the GIL up itself every 1000 iterations) can run between the worker's two reads of its
    counter, just before and just after each call, only if the call releases the GIL. If it
    does, the counter moves by ~10**5 per 64 MiB call; if it does not, by exactly 0. The worker
    repeats (up to 50 calls) until it has seen 10**4, so a busy machine slows the test down
    instead of failing it.
    """
    data = memoryview(big)[: 64 << 20]
    count = 0
    progress = 0
    calls = 0
    done = False
    go = threading.Event()

    def worker():
        nonlocal progress, calls, done
        try:
            go.wait()
            while progress < 10_000 and calls < 50:
                before = count
                func(data)
                progress += count - before
                calls += 1
        finally:
            done = True

    thread = threading.Thread(target=worker)
    thread.start()
    go.set()
    while not done:
        count += 1
        if count % 1000 == 0:
            time.sleep(0)  # lets the worker in when it is waiting for the GIL
    thread.join()
    assert progress >= 10_000, f"main thread advanced only {progress} in {calls} calls"


def test_threads_get_exact_results():
    rng = np.random.default_rng(7)
    buffers = [_random_bytes(rng, int(n)) for n in rng.integers(0, 300_000, 64)]
    expected = [crc32c_pkg.crc32c(b) for b in buffers]

    def run(i):
        f = ALL_FUNCS[i % len(ALL_FUNCS)]
        return [f(b) for b in buffers[i % 7 :: 3]]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(32)))
    for i, got in enumerate(results):
        assert got == expected[i % 7 :: 3]
