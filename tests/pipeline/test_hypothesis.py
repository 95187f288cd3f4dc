"""Property-based differential tests: random layouts, codecs, writes and selections."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec
from zarr.codecs import TransposeCodec, ZstdCodec

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False
)


@st.composite
def layouts(draw):
    ndim = draw(st.integers(1, 3))
    inner = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    per_shard = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    shard = tuple(i * p for i, p in zip(inner, per_shard, strict=True))
    shape = tuple(draw(st.integers(0, 2 * s + 1)) for s in shard)
    dtype = draw(st.sampled_from(["u1", "i2", "<u4", "f4", "f8", "c8", "i8", "bool"]))
    endian = draw(st.sampled_from(["little", "big"]))
    comp = draw(st.sampled_from(["none", "zstd", "crc32c", "gzip", "blosc"]))
    transpose = draw(st.booleans()) and ndim > 1
    index_location = draw(st.sampled_from(["start", "end"]))
    index_crc = draw(st.booleans())
    wec = draw(st.booleans())
    sharded = draw(st.integers(0, 3)) > 0  # one layout in four: every chunk its own key
    return dict(shape=shape, inner=inner, shard=shard, dtype=dtype, endian=endian, comp=comp,
                transpose=transpose, index_location=index_location, index_crc=index_crc, wec=wec,
                sharded=sharded)


def _selection(draw, shape):
    sel = []
    for n in shape:
        if n and draw(st.booleans()) and draw(st.booleans()):
            sel.append(draw(st.integers(0, n - 1)))
        elif draw(st.integers(0, 3)):
            a = draw(st.integers(0, n))
            b = draw(st.integers(a, n))
            sel.append(slice(a, b, draw(st.integers(1, 3))))
        else:  # any bounds: negative, None, past the end, stop before start (selects nothing)
            bound = st.one_of(st.none(), st.integers(-n - 2, n + 2))
            sel.append(slice(draw(bound), draw(bound), draw(st.sampled_from([None, 1, 2]))))
    return tuple(sel)


def _fancy(draw, shape):
    """(how, selection): integer arrays per axis (oindex), points or a mask (vindex)."""
    how = draw(st.sampled_from(["oindex", "points", "mask"]))
    if how == "mask":
        seed = draw(st.integers(0, 2**32 - 1))
        return "vindex", np.random.default_rng(seed).random(shape) < 0.3
    if 0 in shape:
        return "basic", Ellipsis
    if how == "oindex":
        return "oindex", tuple(
            np.array(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4, unique=True)))
            for n in shape
        )
    k = draw(st.integers(1, 6))
    return "vindex", tuple(np.array(draw(st.lists(st.integers(0, n - 1), min_size=k,
                                                  max_size=k))) for n in shape)


@given(data=st.data(), layout=layouts())
@SETTINGS
def test_random_layouts_writes_and_reads(twin, h, data, layout):
    L = layout
    codecs = ([TransposeCodec(order=tuple(reversed(range(len(L["shape"])))))] if L["transpose"] else [])
    codecs.append(BytesCodec(endian=L["endian"]))
    codecs += {"none": [], "zstd": [ZstdCodec(level=1)], "crc32c": [Crc32cCodec()],
               "gzip": [GzipCodec(level=1)],
               "blosc": [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")]}[L["comp"]]
    if L["sharded"]:
        serializer = ShardingCodec(
            chunk_shape=L["inner"], codecs=codecs,
            index_codecs=[BytesCodec()] + ([Crc32cCodec()] if L["index_crc"] else []),
            index_location=L["index_location"],
        )
        kw = {"chunks": L["shard"], "serializer": serializer, "compressors": None}
    else:  # the same chain, unsharded: transpose a filter, then the bytes codec, compressors
        n_filters = 1 if L["transpose"] else 0
        kw = {"chunks": L["inner"], "filters": codecs[:n_filters],
              "serializer": codecs[n_filters], "compressors": codecs[n_filters + 1:]}
    t = twin("memory", shape=L["shape"], dtype=L["dtype"], fill_value=0,
             config={"write_empty_chunks": L["wec"]}, **kw)
    full = h.sample_data(L["shape"], L["dtype"], seed=data.draw(st.integers(0, 99)), fill=0,
                         chunks=L["inner"])
    if data.draw(st.integers(0, 3)):  # else the writes below meet missing chunks and shards
        t.write(Ellipsis, full)
        t.check_stored()
    for _ in range(data.draw(st.integers(0, 3))):
        sel = _selection(data.draw, L["shape"])
        shape = np.empty(L["shape"], dtype="u1")[sel].shape
        value = h.sample_data(shape, L["dtype"], seed=data.draw(st.integers(0, 99)))
        t.write(sel, value)
        t.check_stored()
    t.check_read(Ellipsis)
    for _ in range(2):
        t.check_read(_selection(data.draw, L["shape"]))
    if L["shape"]:
        how, sel = _fancy(data.draw, L["shape"])
        t.check_read(sel, how)
