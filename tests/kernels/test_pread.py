"""zkernels._pread.pread_ranges (many byte ranges of one file, read with the GIL released once)
against slices of the file's bytes, its errors, and LocalFile.read_ranges on top of it."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkernels._localio import LocalFile
from zkernels._pread import pread_ranges

SIZE = 5000


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pread") / "f"
    data = np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data, str(path)
    os.close(fd)


def _table(ranges):
    return np.array(ranges, dtype=np.uint64).reshape(-1, 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, SIZE), st.integers(0, 700)), max_size=12))
def test_ranges_back_to_back(data_file, spans):
    """Any ranges inside the file (unsorted, overlapping, empty) land back to back, each equal to
    the file's slice."""
    fd, data, _ = data_file
    ranges = [(a, min(a + n, SIZE)) for a, n in spans]
    total = sum(b - a for a, b in ranges)
    out = np.full(total + 3, 0xAB, dtype=np.uint8)  # room to spare: untouched
    assert pread_ranges(fd, _table(ranges), out) == -1
    assert out.tobytes() == b"".join(data[a:b] for a, b in ranges) + b"\xab" * 3


@pytest.mark.parametrize(
    "ranges,short",
    [
        ([(0, 10), (SIZE - 5, SIZE + 5), (20, 30)], 1),  # the file ends inside range 1
        ([(0, 10), (SIZE, SIZE + 1)], 1),  # range 1 starts at the end
        ([(SIZE + 100, SIZE + 200)], 0),  # wholly past the end
        ([(10, 20), (2**40, 2**40 + 8)], 1),  # far past the end
    ],
)
def test_short_range_is_reported(data_file, ranges, short):
    fd, data, _ = data_file
    out = np.zeros(sum(b - a for a, b in ranges), dtype=np.uint8)
    assert pread_ranges(fd, _table(ranges), out) == short
    pos = 0
    for a, b in ranges[:short]:  # the ranges before it were read whole
        assert out[pos : pos + b - a].tobytes() == data[a:b]
        pos += b - a


def test_no_ranges(data_file):
    fd, _, _ = data_file
    assert pread_ranges(fd, _table([]), np.zeros(0, np.uint8)) == -1


@pytest.mark.parametrize(
    "ranges,out_size,match",
    [
        ([(10, 5)], 10, "inverted"),
        ([(0, 2**63)], 10, "past 2\\*\\*63"),
        ([(2**63, 2**63 + 1)], 10, "past 2\\*\\*63"),
        ([(0, 10), (0, 10)], 19, "out holds 19 bytes"),
        ([(0, 2**62), (0, 2**62), (0, 2**62)], 10, "out holds 10 bytes"),  # no wrap-around
    ],
)
def test_bad_ranges_refused(data_file, ranges, out_size, match):
    fd, _, _ = data_file
    with pytest.raises(ValueError, match=match):
        pread_ranges(fd, _table(ranges), np.zeros(out_size, np.uint8))


@pytest.mark.parametrize(
    "ranges",
    [np.zeros((2, 2), np.int64), np.zeros((2, 3), np.uint64), np.zeros(4, np.uint64), [(0, 1)]],
    ids=["int64", "3-columns", "1-d", "list"],
)
def test_bad_table_refused(data_file, ranges):
    fd, _, _ = data_file
    with pytest.raises(ValueError, match="uint64 array of shape"):
        pread_ranges(fd, ranges, np.zeros(8, np.uint8))


def test_system_errors_raise_oserror(tmp_path):
    with pytest.raises(OSError) as err:
        pread_ranges(-1, _table([(0, 4)]), np.zeros(4, np.uint8))
    assert err.value.errno == errno.EBADF
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory opens, but does not read
    try:
        with pytest.raises(OSError) as err:
            pread_ranges(fd, _table([(0, 4)]), np.zeros(4, np.uint8))
        assert err.value.errno == errno.EISDIR
    finally:
        os.close(fd)


def test_non_contiguous_table(data_file):
    fd, data, _ = data_file
    table = _table([(0, 4), (9, 9), (10, 20), (0, 0)])[::2]  # rows 0 and 2: a strided view
    out = np.zeros(14, np.uint8)
    assert pread_ranges(fd, table, out) == -1
    assert out.tobytes() == data[0:4] + data[10:20]


# -- LocalFile.read_ranges -------------------------------------------------------------------


def test_local_file_read_ranges(data_file):
    _, data, path = data_file
    f = LocalFile.open(path)
    try:
        got = f.read_ranges(_table([(100, 300), (0, 0), (4000, SIZE)]))
        assert [g.tobytes() for g in got] == [data[100:300], b"", data[4000:SIZE]]
        assert f.read_ranges(_table([])) == []
        # past the end, near (read, then found short) and far (refused before allocating)
        assert f.read_ranges(_table([(0, 10), (SIZE - 1, SIZE + 1)])) is None
        assert f.read_ranges(_table([(0, 10), (2**62, 2**62 + 1)])) is None
        assert f.read_ranges(_table([(0, 2**40)])) is None
    finally:
        f.close()


def test_local_file_read_ranges_refusals(data_file, tmp_path):
    _, _, path = data_file
    f = LocalFile.open(path)
    try:
        with pytest.raises(ValueError, match="inverted"):
            f.read_ranges(_table([(0, 10), (30, 20)]))
    finally:
        f.close()
    d = LocalFile.open(str(tmp_path))  # a directory opens; LocalStore reads it as no key
    try:
        assert d.read_ranges(_table([(0, 4), (8, 12)])) is None
        assert d.read_range(0, 4) is None
    finally:
        d.close()


def test_local_file_read_into_far_offset(data_file):
    _, data, path = data_file
    f = LocalFile.open(path)
    try:
        buf = np.zeros(16, np.uint8)
        assert f.read_into(2**63, buf).size == 0  # past preadv's signed offset: nothing read
        assert f.read_into(SIZE - 4, buf).tobytes() == data[-4:]
    finally:
        f.close()
