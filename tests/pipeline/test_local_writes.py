"""Local files written by swapping (``swap_writes``): the same stored bytes as zarr's
``LocalStore``, a reader of the old file never sees a mix, nothing left behind on errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from zkernels import _localio
from zkernels._localio import replace_file, set_sync

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
ZK = "zkernels.KernelCodecPipeline"
PROTO = default_buffer_prototype()
needs_exchange = pytest.mark.skipif(
    _localio._renameat2 is None, reason="no renameat2 here: replace_file is os.replace"
)


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _files(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def test_new_and_replaced_files(tmp_path):
    path = str(tmp_path / "a" / "b" / "c")
    replace_file(path, np.arange(10, dtype=np.uint8))
    assert _read(path) == bytes(range(10))
    replace_file(path, np.arange(3, dtype=np.uint16))  # any contiguous array: its bytes
    assert _read(path) == np.arange(3, dtype=np.uint16).tobytes()
    replace_file(path, np.arange(12, dtype=np.uint8).reshape(3, 4)[:, ::2])  # not contiguous
    assert _read(path) == bytes([0, 2, 4, 6, 8, 10])
    replace_file(path, b"raw bytes")
    assert _read(path) == b"raw bytes"
    replace_file(path, np.zeros(0, dtype=np.uint8))
    assert _read(path) == b""
    assert _files(tmp_path) == ["a/b/c"]


def test_temporary_name_in_use_is_left_alone(tmp_path, monkeypatch):
    """A temporary name already taken (another writer's, or a leftover) is not written over:
    the next name is used."""
    import itertools

    monkeypatch.setattr(_localio, "_COUNTER", itertools.count(7))
    path = str(tmp_path / "d" / "k")
    taken = f"{path}.{os.getpid():x}{_localio._TOKEN}7.partial"
    os.makedirs(os.path.dirname(path))
    with open(taken, "wb") as f:
        f.write(b"someone else's")
    replace_file(path, np.full(3, 5, dtype=np.uint8))
    assert _read(path) == b"\x05" * 3
    assert _read(taken) == b"someone else's"
    assert _files(tmp_path) == ["d/k", f"d/{os.path.basename(taken)}"]


@pytest.mark.parametrize("key", ["a/c", "a/b/c"])
def test_file_in_the_way_of_a_directory(tmp_path, key):
    """Where a key's directory is a file, the error is the one LocalStore raises and nothing
    is written."""
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(OSError) as ours:
        replace_file(str(tmp_path / key), np.ones(2, dtype=np.uint8))
    store = zarr.storage.LocalStore(tmp_path)
    with pytest.raises(OSError) as theirs:
        store.set_sync(key, PROTO.buffer.from_bytes(b"zz"))
    assert type(ours.value) is type(theirs.value)
    assert _files(tmp_path) == ["a"]


@needs_exchange
def test_old_file_stays_whole_for_its_reader(tmp_path, monkeypatch):
    """A reader holding the old file reads the old bytes after the write (a new file was
    swapped in: not written over in place), and the swap was what put it there."""
    path = str(tmp_path / "k")
    replace_file(path, np.full(1 << 16, 1, dtype=np.uint8))
    fd = os.open(path, os.O_RDONLY)
    try:

        def no_replace(*a, **k):
            raise AssertionError("an existing file must be swapped, not renamed over")

        monkeypatch.setattr(_localio.os, "replace", no_replace)
        replace_file(path, np.full(100, 2, dtype=np.uint8))
        assert os.pread(fd, 1 << 17, 0) == b"\x01" * (1 << 16)
    finally:
        os.close(fd)
    assert _read(path) == b"\x02" * 100
    assert _files(tmp_path) == ["k"]


def test_without_exchange_falls_back_to_replace(tmp_path, monkeypatch):
    monkeypatch.setattr(_localio, "_renameat2", None)
    path = str(tmp_path / "k")
    replace_file(path, np.full(5, 1, dtype=np.uint8))
    replace_file(path, np.full(7, 2, dtype=np.uint8))
    assert _read(path) == b"\x02" * 7
    assert _files(tmp_path) == ["k"]


def test_directory_in_the_way_is_refused_and_kept(tmp_path):
    path = tmp_path / "k"
    (path / "inner").mkdir(parents=True)
    (path / "inner" / "f").write_bytes(b"x")
    with pytest.raises(IsADirectoryError):
        replace_file(str(path), np.ones(4, dtype=np.uint8))
    assert _files(tmp_path) == ["k/inner/f"]


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = str(tmp_path / "k")
    replace_file(path, np.full(4, 1, dtype=np.uint8))

    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_localio.os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        replace_file(path, np.full(8, 2, dtype=np.uint8))
    assert _read(path) == b"\x01" * 4  # the old file, untouched
    assert _files(tmp_path) == ["k"]


def test_set_sync_routes(tmp_path, monkeypatch):
    """Swapped only for an open, writable LocalStore with the option on; zarr's set_sync
    otherwise (which opens the store, or raises its own read-only error)."""
    calls = []
    monkeypatch.setattr(_localio, "replace_file", lambda p, d: calls.append(p))
    store = zarr.storage.LocalStore(tmp_path / "s")
    data = np.ones(3, dtype=np.uint8)
    set_sync(store, "x", data, PROTO, True)  # not open yet: zarr's own path opens it
    assert calls == [] and (tmp_path / "s" / "x").read_bytes() == b"\x01" * 3
    set_sync(store, "y", data, PROTO, True)
    assert calls == [os.path.join(store.root, "y")]
    set_sync(store, "z", data, PROTO, False)
    assert len(calls) == 1 and (tmp_path / "s" / "z").read_bytes() == b"\x01" * 3
    set_sync(store, "z", None, PROTO, True)
    assert not (tmp_path / "s" / "z").exists()
    ro = zarr.storage.LocalStore(tmp_path / "s", read_only=True)
    sync(ro._open())  # open: the read-only check is zarr's, not a side effect of opening
    with pytest.raises(ValueError, match="read-only"):
        set_sync(ro, "w", data, PROTO, True)
    assert len(calls) == 1
    mem = zarr.storage.MemoryStore()
    set_sync(mem, "m", data, PROTO, True)
    assert len(calls) == 1


def test_write_chunk_reads_swap_writes_at_each_write(tmp_path, monkeypatch):
    """The functional write_chunk caches a plan per array; the option is still read at each
    write (it decides what survives a power failure), not when the plan was made."""
    import zkernels
    from zkernels.reader import write_chunk

    calls = []
    real = _localio.replace_file
    monkeypatch.setattr(_localio, "replace_file", lambda p, d: (calls.append(p), real(p, d)))
    store = zarr.storage.LocalStore(tmp_path / "s")
    zarr.create_array(store, shape=(6,), chunks=(2,), dtype="i4", fill_value=0)
    write_chunk(store, "", 0, np.array([1, 2], "i4"))  # the plan is made here, swapping on
    for swap, key in [(False, "c/1"), (True, "c/2"), (False, "c/0")]:
        before = len(calls)
        with zkernels.enabled(swap_writes=swap):
            write_chunk(store, "", int(key[-1]), np.array([3, 4], "i4"))
        assert (len(calls) > before) == swap, (swap, key, calls)
    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        got = zarr.open_array(store, mode="r")[:]
    np.testing.assert_array_equal(got, [3, 4, 3, 4, 3, 4])


@pytest.mark.parametrize("swap", [True, False])
@pytest.mark.parametrize("compressors", [None, "auto"])
def test_rewrites_match_zarrs_store(tmp_path, swap, compressors):
    """Writes, rewrites and partial writes of a sharded array: the same files and bytes as
    zarr's default pipeline writes with LocalStore, no stray files."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 1000, (96, 80), dtype=np.uint16)
    roots = {}
    for name, path, opts in (
        ("default", DEFAULT, {}),
        ("zk", ZK, {"swap_writes": swap}),
    ):
        root = tmp_path / name
        with zarr.config.set({"codec_pipeline.path": path, "codec_pipeline.zkernels": opts}):
            arr = zarr.create_array(
                zarr.storage.LocalStore(root), shape=data.shape, chunks=(32, 40),
                shards=(64, 80), dtype=data.dtype, compressors=compressors, fill_value=0,
            )
            arr[:] = data
            arr[:] = data + 1
            arr[5:40, 7:9] = 9
            arr[64:, :] = 0  # a shard of fill values only: deleted
            arr[0:1, 0:1] = 4
        roots[name] = root
    assert _files(roots["zk"]) == _files(roots["default"])
    for rel in _files(roots["default"]):
        assert (roots["zk"] / rel).read_bytes() == (roots["default"] / rel).read_bytes(), rel
