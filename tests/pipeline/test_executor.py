"""The compute pool's batches: results in order, errors only once every call has stopped, and one
wake-up of the event loop per batch."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ShardingCodec, ZstdCodec

import zkernels
import zkernels.pipeline as zp
from zkernels import _executor


def test_batch_returns_results_in_submission_order():
    async def main():
        batch = _executor.Batch(2)
        for i in range(20):
            # later items finish first: the order must come from the slots, not completion
            batch.submit(lambda k: (time.sleep(0.001 * (20 - k) / 20), k * k)[1], i)
        return await batch.results()

    assert asyncio.run(main()) == [i * i for i in range(20)]


def test_batch_of_nothing():
    async def main():
        return await _executor.Batch(2).results()

    assert asyncio.run(main()) == []


def test_batch_raises_the_first_error_after_every_call_stopped():
    finished = []

    def work(k):
        if k == 0:
            raise KeyError("first")
        if k == 1:
            raise ValueError("second")
        time.sleep(0.05)
        finished.append(k)
        return k

    async def main():
        batch = _executor.Batch(2)
        for k in range(4):
            batch.submit(work, k)
        return await batch.results()

    with pytest.raises(KeyError, match="first"):
        asyncio.run(main())
    assert sorted(finished) == [2, 3]  # the slow calls ran to the end before the raise


def test_batch_wakes_the_loop_once():
    async def main():
        loop = asyncio.get_running_loop()
        wakes = []
        real = loop.call_soon_threadsafe

        def counting(*args, **kwargs):
            wakes.append(threading.current_thread().name)
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:
            batch = _executor.Batch(2)
            for k in range(16):
                batch.submit(lambda x: x, k)
            out = await batch.results()
        finally:
            del loop.call_soon_threadsafe
        return out, wakes

    out, wakes = asyncio.run(main())
    assert out == list(range(16))
    assert len(wakes) == 1  # run_in_executor would wake it 16 times


def _zstd_shards(tmp_path):
    data = np.arange(64 * 64, dtype="uint16").reshape(64, 64)
    with zkernels.enabled():
        arr = zarr.create_array(
            zarr.storage.LocalStore(tmp_path / "a.zarr"), shape=(64, 64), chunks=(16, 64),
            dtype="uint16", compressors=None, fill_value=0,
            serializer=ShardingCodec(chunk_shape=(8, 8), codecs=[BytesCodec(), ZstdCodec()]),
        )
        arr[:] = data
    return tmp_path / "a.zarr", data


def test_read_error_while_setting_up_shards_waits_for_the_submitted_ones(tmp_path, monkeypatch):
    """Shards go to the pool while the next are set up; if setting one up fails, the error
    surfaces only after the shards already submitted have stopped writing into the output."""
    path, _data = _zstd_shards(tmp_path)
    made, finished = [], []
    real_init, real_prepare = zp._ShardRead.__init__, zp._ShardRead.prepare_sync

    def init(self, *args, **kwargs):
        made.append(1)
        if len(made) == 3:
            raise RuntimeError("third shard")
        real_init(self, *args, **kwargs)

    def prepare(self, *args, **kwargs):
        time.sleep(0.05)
        real_prepare(self, *args, **kwargs)
        finished.append(1)

    monkeypatch.setattr(zp._ShardRead, "__init__", init)
    monkeypatch.setattr(zp._ShardRead, "prepare_sync", prepare)
    with zkernels.enabled(inline_bytes=0, threads=2):
        arr = zarr.open_array(path, mode="r")
        with pytest.raises(RuntimeError, match="third shard"):
            arr[:]
    assert len(finished) == 2


def test_reads_of_many_shards_start_before_all_are_set_up(tmp_path, monkeypatch):
    """The first shard's IO runs on the pool while this thread still sets up the others."""
    path, data = _zstd_shards(tmp_path)
    events = []
    real_init, real_prepare = zp._ShardRead.__init__, zp._ShardRead.prepare_sync

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if len(events) < 8:
            time.sleep(0.02)  # a slow set-up: the pool gets ahead of it
        events.append("init")

    def prepare(self, *args, **kwargs):
        events.append("io")
        real_prepare(self, *args, **kwargs)

    monkeypatch.setattr(zp._ShardRead, "__init__", init)
    monkeypatch.setattr(zp._ShardRead, "prepare_sync", prepare)
    with zkernels.enabled(inline_bytes=0, threads=2):
        np.testing.assert_array_equal(zarr.open_array(path, mode="r")[:], data)
    assert events.count("init") == 4 and events.count("io") == 4
    assert events.index("io") < len(events) - 1 - events[::-1].index("init")


def test_a_batch_keeps_its_pool_when_the_pool_size_changes():
    """Changing the `threads` option makes a new pool; a batch started on the old one (a read on
    another event loop) must still be able to submit to it (it was shut down under it:
    RuntimeError "cannot schedule new futures after shutdown")."""
    async def main():
        batch = _executor.Batch(2)
        batch.submit(lambda k: k, 1)
        _executor.get_pool(3)  # another thread's read, with the option changed
        batch.submit(lambda k: k, 2)
        return await batch.results()

    assert asyncio.run(main()) == [1, 2]


def test_reads_on_other_loops_survive_option_changes():
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        a = zarr.create_array(store, shape=(256, 256), chunks=(16, 16), shards=(64, 64),
                              dtype="u2", compressors=[ZstdCodec(level=1)])
        data = np.arange(256 * 256, dtype="u2").reshape(256, 256)
        a[:] = data
    errors, stop = [], threading.Event()

    def reader():
        async def go():
            while not stop.is_set():
                try:
                    assert np.array_equal(await a._async_array.getitem(slice(None)), data)
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
        asyncio.run(go())

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for k in range(150):
            zarr.config.set({"codec_pipeline.zkernels.threads": 2 + k % 3})
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        zarr.config.set({"codec_pipeline.zkernels.threads": None})
    assert not errors, errors[:3]
