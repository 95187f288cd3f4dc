"""Small reads of one shard in a local file (``_read_small_local``, the path of a single-chunk
``arr[...]``): the values zarr's default pipeline reads, and the errors of the general path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zkernels.pipeline as zp
from zkernels.errors import ZKernelsError

from .conftest import (
    DEFAULT,
    LOCAL_LAYOUTS,
    create_local_sharded,
    read_local,
)


@pytest.fixture
def spy(monkeypatch):
    """Counts what the small-read path did: read, found missing, declined (None), raised."""
    calls = {"read": 0, "missing": 0, "declined": 0, "raised": 0}
    real = zp._read_small_local

    def small(*args):
        try:
            got = real(*args)
        except Exception:
            calls["raised"] += 1
            raise
        calls["declined" if got is None else "missing" if got else "read"] += 1
        return got

    monkeypatch.setattr(zp, "_read_small_local", small)
    return calls


def _data(shape, dtype, seed, fill=3):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 50, size=shape).astype(dtype)
    data[: max(1, shape[0] // 3)] = fill  # whole empty chunks: they read as the fill value
    return data


def _default(path, selection):
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        return zarr.open_array(zarr.storage.LocalStore(path), mode="r")[selection]


def _box_in_one_shard(data, shape, shard):
    """A selection of slices inside one shard (clipped to the array), or with an int axis."""
    sel = []
    for n, s in zip(shape, shard):
        k = data.draw(st.integers(0, (n - 1) // s))
        lo, hi = k * s, min(n, (k + 1) * s)
        a = data.draw(st.integers(lo, hi - 1))
        if data.draw(st.integers(0, 5)) == 0:
            sel.append(a)  # an int: the output has no such axis
        else:
            sel.append(slice(a, data.draw(st.integers(a + 1, hi))))
    return tuple(sel)


@given(
    data=st.data(),
    **LOCAL_LAYOUTS,
    ndim=st.integers(1, 3),
)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_hypothesis_small_reads_vs_default(tmp_path_factory, spy, data, comp, dtype, endian,
                                           index_location, wec, ndim):
    inner = tuple(data.draw(st.integers(1, 4)) for _ in range(ndim))
    per = tuple(data.draw(st.integers(1, 3)) for _ in range(ndim))
    shard = tuple(i * p for i, p in zip(inner, per))
    shape = tuple(data.draw(st.integers(1, 2 * s + 1)) for s in shard)
    path = tmp_path_factory.mktemp("s") / "a.zarr"
    arr = create_local_sharded(path, shape, shard, inner, dtype, comp, endian=endian,
                  index_location=index_location, wec=wec)
    arr[:] = _data(shape, dtype, data.draw(st.integers(0, 99)))
    if data.draw(st.booleans()):  # shards whose chunks are no longer in order, or gone
        arr[tuple(slice(0, s) for s in shape[:1])] = 3
    for _ in range(4):
        sel = _box_in_one_shard(data, shape, shard)
        before = dict(spy)
        np.testing.assert_array_equal(read_local(path, sel), _default(path, sel))
        # a box of one shard that is not all of it takes the small path
        box = [s if isinstance(s, slice) else slice(s, s + 1) for s in sel]
        n_touched = np.prod([-(-s.stop // i) - s.start // i for s, i in zip(box, inner)])
        if n_touched < np.prod(per):
            assert spy["read"] + spy["missing"] == before["read"] + before["missing"] + 1


def test_small_path_taken_and_declined(tmp_path, spy):
    path = tmp_path / "a.zarr"
    arr = create_local_sharded(path, (40, 36), (20, 18), (4, 6), "<u2", "zstd")
    data = _data((40, 36), "<u2", 1)
    arr[:] = data
    np.testing.assert_array_equal(read_local(path, (slice(4, 8), slice(6, 12))), data[4:8, 6:12])
    assert spy == {"read": 1, "missing": 0, "declined": 0, "raised": 0}
    # a whole shard (dense or pieces), or more than inline_bytes of chunks: the general path
    np.testing.assert_array_equal(read_local(path, (slice(0, 20), slice(0, 18))), data[:20, :18])
    np.testing.assert_array_equal(read_local(path, (slice(4, 8), slice(6, 12)), inline_bytes=0),
                                  data[4:8, 6:12])
    assert spy["read"] == 1 and spy["declined"] == 2
    # an int (its axis dropped from the output): still a box
    np.testing.assert_array_equal(read_local(path, (5, slice(6, 12))), data[5, 6:12])
    assert spy["read"] == 2
    # several shards: not one item; a strided slice: not a box
    np.testing.assert_array_equal(read_local(path, (slice(18, 22), slice(0, 4))), data[18:22, :4])
    np.testing.assert_array_equal(read_local(path, (slice(4, 8), slice(6, 12, 2))), data[4:8, 6:12:2])
    assert spy["read"] == 2 and spy["declined"] == 3


@pytest.mark.parametrize("kind", ["no file", "directory"])
def test_missing_shard_reads_fill(tmp_path, spy, kind):
    path = tmp_path / "a.zarr"
    arr = create_local_sharded(path, (40, 36), (20, 18), (4, 6), "<u2", "zstd")
    arr[:20, :18] = 9  # only shard (0, 0) written
    if kind == "directory":
        (path / "c" / "1" / "1").mkdir(parents=True)
    sel = (slice(22, 26), slice(20, 30))
    np.testing.assert_array_equal(read_local(path, sel), _default(path, sel))
    np.testing.assert_array_equal(read_local(path, sel), np.full((4, 10), 3, "<u2"))
    assert spy["missing"] == 2 and spy["raised"] == 0


def _damaged(tmp_path, how):
    """An array whose shard c/0/0 is damaged ``how``; the selection that reads chunk (1, 1)."""
    path = tmp_path / how / "a.zarr"
    comp = "crc32c+zstd" if how == "chunk checksum" else "zstd"
    loc = "start" if how == "truncated, index at start" else "end"
    arr = create_local_sharded(path, (20, 18), (20, 18), (4, 6), "<u2", comp, index_location=loc)
    arr[:] = np.arange(20 * 18, dtype="<u2").reshape(20, 18)
    f = path / "c" / "0" / "0"
    raw = bytearray(f.read_bytes())
    if how.startswith("truncated"):
        raw = raw[:-40] if loc == "start" else raw[:100]
    elif how == "index checksum":
        raw[-1] ^= 0xFF
    else:  # chunk (1, 1): a flipped byte (crc32c) or its zstd frame header wiped
        index = np.frombuffer(bytes(raw[-(15 * 16 + 4) : -4]), "<u8").reshape(5, 3, 2)
        off, nb = (int(v) for v in index[1, 1])
        if how == "chunk checksum":
            raw[off + nb // 2] ^= 0x55
        else:
            raw[off : off + 4] = bytes(4)
    f.write_bytes(bytes(raw))
    return path, (slice(4, 8), slice(6, 12)) if "truncated" not in how else (
        slice(16, 20), slice(12, 18))


@pytest.mark.parametrize(
    "how", ["truncated, index at end", "truncated, index at start", "index checksum",
            "chunk checksum", "chunk data"],
)
def test_bad_shard_same_error_as_general_path(tmp_path, spy, how):
    path, sel = _damaged(tmp_path, how)
    with pytest.raises(ZKernelsError, match=r"c/0/0") as small:
        read_local(path, sel)
    assert spy["raised"] == 1
    with pytest.raises(ZKernelsError, match=r"c/0/0") as general:
        read_local(path, sel, inline_bytes=0)  # too large for the small path
    assert spy["declined"] == 1
    assert type(small.value) is type(general.value)
    assert str(small.value) == str(general.value)


def test_copy_of_array_reads_the_same(tmp_path, spy):
    # the path is joined from the store's root: a store opened elsewhere reads its own files
    path = tmp_path / "a.zarr"
    arr = create_local_sharded(path, (40, 36), (20, 18), (4, 6), ">f8", "blosc", endian="big")
    data = _data((40, 36), ">f8", 2)
    arr[:] = data
    shutil.copytree(path, tmp_path / "b.zarr")
    arr[:] = 0
    sel = (slice(21, 27), slice(19, 30))
    np.testing.assert_array_equal(read_local(tmp_path / "b.zarr", sel), data[sel])
    np.testing.assert_array_equal(read_local(path, sel), np.zeros((6, 11)))
    assert spy["read"] == 2
