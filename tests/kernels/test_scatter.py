"""zkernels._scatter against its twin, numpy's own indexing assignment (and zarr's
NDBuffer.all_equal for is_fill)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.core.buffer import default_buffer_prototype

from zkernels._scatter import copy_region, fill, gather, is_fill, scatter

DTYPES = [
    "?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8",
    "f2", "f4", "f8", "c8", "c16",
    "M8[s]", "m8[ms]",
    np.dtype([("a", "u1"), ("b", "<i4")]),  # packed: itemsize 5
    "V16", "V3", "S3",
    ">u2", ">i8", ">f4", ">f8", ">c8", ">M8[us]",
]
DTYPE_IDS = [str(np.dtype(d)) for d in DTYPES]
LAYOUTS = ["C", "F", "strided", "negative", "transposed"]

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def all_equal(arr, fill_value):
    """zarr's own answer (numpy >= 2.5 warns on its NaN comparisons of complex values)."""
    with np.errstate(invalid="ignore"):
        return default_buffer_prototype().nd_buffer.from_ndarray_like(arr).all_equal(fill_value)


def random_array(rng, shape, dtype, layout="C"):
    """An array of random bytes (0/1 for bool) with the given memory layout."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    ndim = len(shape)
    if layout == "strided" and ndim:
        big = tuple(2 * n + 1 for n in shape)
        base = random_array(rng, big, dtype)
        return base[tuple(slice(1, 1 + 2 * n, 2) for n in shape)]
    if layout == "negative" and ndim:
        return random_array(rng, shape, dtype)[(slice(None, None, -1),) * ndim]
    if layout == "transposed" and ndim > 1:
        perm = rng.permutation(ndim)
        inv = np.argsort(perm)
        base = random_array(rng, tuple(shape[p] for p in perm), dtype)
        return base.transpose(inv)
    n = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "b":
        flat = rng.integers(0, 2, n).astype(dtype)
    else:
        flat = np.frombuffer(
            rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).tobytes(), dtype=dtype
        ).copy()
    arr = flat.reshape(shape)
    if layout == "F":
        arr = np.array(arr, order="F")
    return arr


def same(a, b):
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from(DTYPES)
layouts = st.sampled_from(LAYOUTS)
seeds = st.integers(0, 2**32 - 1)


@st.composite
def basic_selection(draw, shape, allow_int=True):
    """A basic selection of shape: ints and slices with step >= 1 (maybe None parts), maybe
    shorter than ndim."""
    items = []
    for n in shape:
        if allow_int and n > 0 and draw(st.integers(0, 3)) == 0:
            i = draw(st.integers(-n, n - 1))
            items.append(i if draw(st.booleans()) else np.intp(i))
        else:
            start = draw(st.none() | st.integers(-n - 1, n + 1))
            stop = draw(st.none() | st.integers(-n - 1, n + 1))
            step = draw(st.none() | st.integers(1, 3))
            items.append(slice(start, stop, step))
    k = draw(st.integers(0, len(items)))
    if draw(st.booleans()):
        k = len(items)
    return tuple(items[:k])


@st.composite
def region(draw, target_shape):
    """(outer shape, selection) whose selection has exactly ``target_shape``, possibly with
    steps and with extra int-indexed axes."""
    outer, sel = [], []
    dims = list(target_shape)
    while dims or (len(outer) < 4 and draw(st.integers(0, 4)) == 0):
        if dims and draw(st.integers(0, 4)) != 0:
            n = dims.pop(0)
            step = draw(st.integers(1, 3))
            start = draw(st.integers(0, 2))
            size = start + (n - 1) * step + 1 if n else start
            size += draw(st.integers(0, 2))
            outer.append(size)
            sel.append(slice(start, start + n * step, step) if n else slice(start, start))
        else:
            size = draw(st.integers(1, 3))
            outer.append(size)
            sel.append(draw(st.integers(0, size - 1)))
    return tuple(outer), tuple(sel)


# --------------------------------------------------------------------------------------------
# copy_region
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(shapes, dtypes, layouts, layouts, seeds)
def test_copy_region_vs_numpy(shape, dtype, src_layout, dst_layout, seed):
    rng = np.random.default_rng(seed)
    src = random_array(rng, shape, dtype, src_layout)
    dst = random_array(rng, shape, dtype, dst_layout)
    expected = dst.copy()
    np.copyto(expected, src)
    copy_region(src, dst)
    same(dst, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_copy_region_dtypes_layouts(dtype, layout):
    rng = np.random.default_rng(0)
    src = random_array(rng, (7, 5, 3), dtype, layout)
    for dst_layout in LAYOUTS:
        dst = random_array(rng, (7, 5, 3), dtype, dst_layout)
        copy_region(src, dst)
        same(dst, src)


@pytest.mark.parametrize("dtype", ["u1", "u2", "f4", "c8", "c16", "V3", DTYPES[16]],
                         ids=["u1", "u2", "f4", "c8", "c16", "V3", "struct5"])
@pytest.mark.parametrize("shape", [(16, 16), (70, 33), (33, 70), (5, 100, 17), (17, 3, 65)])
def test_copy_region_transposing_tiles(dtype, shape):
    # C <-> F and permuted layouts take the tiled path (both tiled axes >= 16 long)
    rng = np.random.default_rng(6)
    for src_layout, dst_layout in [("C", "F"), ("F", "C"), ("transposed", "C"),
                                   ("C", "transposed"), ("strided", "F"), ("negative", "F")]:
        src = random_array(rng, shape, dtype, src_layout)
        dst = random_array(rng, shape, dtype, dst_layout)
        copy_region(src, dst)
        same(dst, src)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 40), min_size=2, max_size=3).map(tuple),
       st.sampled_from(["u1", "u2", "u8", "c16", "V3"]), layouts, layouts, seeds)
def test_copy_region_larger_shapes_vs_numpy(shape, dtype, src_layout, dst_layout, seed):
    rng = np.random.default_rng(seed)
    src = random_array(rng, shape, dtype, src_layout)
    dst = random_array(rng, shape, dtype, dst_layout)
    expected = dst.copy()
    np.copyto(expected, src)
    copy_region(src, dst)
    same(dst, expected)


def test_copy_region_broadcast_source_and_ndim():
    rng = np.random.default_rng(1)
    row = random_array(rng, (1, 6), "u2")
    src = np.broadcast_to(row, (4, 6))
    dst = np.zeros((4, 6), "u2")
    copy_region(src, dst)
    same(dst, np.repeat(row, 4, axis=0))
    # 0-d
    a, b = np.array(3.5), np.array(0.0)
    copy_region(a, b)
    assert b[()] == 3.5
    # 32 dimensions, most of size 1
    shape = (2,) * 5 + (1,) * 27
    src = random_array(rng, shape, "i4", "F")
    dst = np.zeros(shape, "i4")
    copy_region(src, dst)
    same(dst, src)
    # empty
    copy_region(np.zeros((0, 3)), np.zeros((0, 3)))


def test_copy_region_overlapping_memory():
    base = np.arange(20, dtype="i8")
    expected = base.copy()
    expected[2:12] = expected[0:10].copy()
    copy_region(base[0:10], base[2:12])
    same(base, expected)
    base = np.arange(20, dtype="i8")
    expected = base.copy()
    expected[0:10] = expected[::-1][0:10].copy()
    copy_region(base[::-1][0:10], base[0:10])
    same(base, expected)


def test_copy_region_contiguous_is_one_block():
    # a large C -> C copy and F -> F copy agree with numpy (single-memcpy path)
    rng = np.random.default_rng(2)
    for order in "CF":
        src = np.asarray(random_array(rng, (300, 200), "f8"), order=order)
        dst = np.zeros((300, 200), "f8", order=order)
        copy_region(src, dst)
        same(dst, src)


@pytest.mark.parametrize(
    "src, dst, exc",
    [
        (np.zeros(3), np.zeros(4), ValueError),
        (np.zeros((3, 1)), np.zeros(3), ValueError),
        (np.zeros(3, "f8"), np.zeros(3, "i8"), TypeError),
        (np.zeros(3, "<u2"), np.zeros(3, ">u2"), TypeError),
        (np.zeros(3, object), np.zeros(3, object), TypeError),
        ([1, 2, 3], np.zeros(3), TypeError),
        (np.zeros(3), [0, 0, 0], TypeError),
    ],
)
def test_copy_region_bad_input(src, dst, exc):
    with pytest.raises(exc):
        copy_region(src, dst)


def test_copy_region_read_only_dst():
    dst = np.zeros(4)
    dst.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        copy_region(np.ones(4), dst)
    assert not dst.any()
    with pytest.raises(ValueError, match="read-only"):
        copy_region(np.ones(4), np.broadcast_to(np.zeros(1), (4,)))


def test_copy_region_string_dtype_rejected():
    dt = np.dtypes.StringDType()
    with pytest.raises(TypeError):
        copy_region(np.array(["a", "b"], dtype=dt), np.array(["", ""], dtype=dt))


# --------------------------------------------------------------------------------------------
# scatter / gather
# --------------------------------------------------------------------------------------------


def size_one_axes(draw, shape):
    axes = [i for i, n in enumerate(shape) if n == 1]
    return tuple(sorted(draw(st.sets(st.sampled_from(axes)) if axes else st.just(set()))))


@SETTINGS
@given(st.data(), shapes, dtypes, layouts, layouts, seeds)
def test_scatter_vs_numpy(data, chunk_shape, dtype, chunk_layout, out_layout, seed):
    rng = np.random.default_rng(seed)
    chunk = random_array(rng, chunk_shape, dtype, chunk_layout)
    chunk_sel = data.draw(basic_selection(chunk_shape))
    tmp = chunk[chunk_sel]
    drop_axes = size_one_axes(data.draw, tmp.shape)
    if drop_axes:
        tmp = tmp.squeeze(axis=drop_axes)
    out_shape, out_sel = data.draw(region(tmp.shape))
    out = random_array(rng, out_shape, dtype, out_layout)
    expected = out.copy()
    expected[out_sel] = tmp
    scatter(chunk, chunk_sel, out, out_sel, drop_axes)
    same(out, expected)


@SETTINGS
@given(st.data(), shapes, dtypes, layouts, layouts, seeds)
def test_gather_vs_numpy(data, chunk_shape, dtype, src_layout, chunk_layout, seed):
    rng = np.random.default_rng(seed)
    chunk = random_array(rng, chunk_shape, dtype, chunk_layout)
    chunk_sel = data.draw(basic_selection(chunk_shape, allow_int=data.draw(st.booleans())))
    target = chunk[chunk_sel].shape
    drop_axes = size_one_axes(data.draw, target)
    value_shape = tuple(n for i, n in enumerate(target) if i not in drop_axes)
    src_shape, src_sel = data.draw(region(value_shape))
    src = random_array(rng, src_shape, dtype, src_layout)
    # zarr's _merge_chunk_array: value[out_selection], then None at each dropped axis
    value = src[src_sel + (...,)]  # keep a 0-d result an array
    if drop_axes:
        item = tuple(None if i in drop_axes else slice(None) for i in range(len(target)))
        value = value[item]
    expected = chunk.copy()
    expected[chunk_sel] = value
    gather(src, src_sel, chunk, chunk_sel, drop_axes)
    same(chunk, expected)


@SETTINGS
@given(st.data(), shapes, st.sampled_from(["u1", "f8", "c16", "V3"]), seeds)
def test_scatter_broadcasting_matches_numpy(data, out_shape, dtype, seed):
    # arbitrary source shapes: where numpy assignment broadcasts, scatter does too; where
    # numpy refuses, scatter raises ValueError naming both shapes
    rng = np.random.default_rng(seed)
    out = random_array(rng, out_shape, dtype)
    src_shape = data.draw(st.lists(st.integers(0, 3), min_size=0, max_size=5).map(tuple))
    chunk = random_array(rng, src_shape, dtype)
    expected = out.copy()
    try:
        expected[...] = chunk
    except ValueError:
        with pytest.raises(ValueError, match="shape"):
            scatter(chunk, (), out, ())
        with pytest.raises(ValueError, match="shape"):
            gather(chunk, (), out, ())
        return
    scatter(chunk, (), out, ())
    same(out, expected)
    out2 = random_array(rng, out_shape, dtype)
    gather(chunk, (), out2, ())
    same(out2, expected)


def test_scatter_zarr_like_read():
    # 64x64 chunks of a 2048x2048 uint16 array, C- and F-ordered outputs
    rng = np.random.default_rng(3)
    full = random_array(rng, (256, 192), "u2")
    for order in "CF":
        out = np.zeros((256, 192), "u2", order=order)
        for i in range(0, 256, 64):
            for j in range(0, 192, 64):
                chunk = np.ascontiguousarray(full[i:i + 64, j:j + 64])
                scatter(chunk, (slice(0, 64), slice(0, 64)), out,
                        (slice(i, i + 64), slice(j, j + 64)))
        same(out, full)


def test_scatter_scalar_read_and_drop_axes():
    chunk = np.arange(24, dtype="i4").reshape(2, 3, 4)
    out = np.zeros((), "i4")
    scatter(chunk, (1, 2, 3), out, ())
    assert out[()] == 23
    # orthogonal-style int converted to a length-1 slice, squeezed by drop_axes
    out = np.zeros((5, 4), "i4")
    scatter(chunk, (slice(1, 2), slice(0, 3), slice(None)), out, (slice(1, 4), slice(None)),
            drop_axes=(0,))
    expected = np.zeros((5, 4), "i4")
    expected[1:4] = chunk[1:2, 0:3].squeeze(axis=0)
    same(out, expected)
    # negative drop axis, as numpy's squeeze takes it
    out = np.zeros((3,), "i4")
    scatter(chunk, (slice(0, 1), 1, slice(0, 3)), out, (), drop_axes=(-2,))
    same(out, chunk[0, 1, 0:3])
    # gather: the value lacks the dropped axis
    dst = np.zeros((2, 3, 4), "i4")
    gather(np.arange(4, dtype="i4"), (), dst, (slice(1, 2), slice(2, 3), slice(None)),
           drop_axes=(0, 1))
    assert dst[1, 2].tolist() == [0, 1, 2, 3] and dst.sum() == 6


def test_scatter_overlapping_memory_falls_back():
    base = np.arange(30, dtype="u1").reshape(5, 6)
    expected = base.copy()
    expected[1:5, :] = expected[0:4, :].copy()
    scatter(base, (slice(0, 4),), base, (slice(1, 5),))
    same(base, expected)
    base = np.arange(30, dtype="u1").reshape(5, 6)
    expected = base.copy()
    expected[0:4, :] = expected[1:5, :].copy()
    gather(base, (slice(1, 5),), base, (slice(0, 4),))
    same(base, expected)


UNSUPPORTED = [
    (np.array([0, 1]),),
    ([0, 1],),
    (Ellipsis,),
    (None,),
    (slice(None, None, -1),),
    (True,),
    (np.bool_(False),),
    (slice(None), np.array([True, False, True])),
    "0",
    1.5,
    (1.0,),
]


@pytest.mark.parametrize("sel", UNSUPPORTED, ids=[repr(s)[:30] for s in UNSUPPORTED])
def test_unsupported_selections_raise_type_error(sel):
    chunk = np.zeros((3, 3), "u1")
    out = np.zeros((3, 3), "u1")
    with pytest.raises(TypeError, match="use numpy"):
        scatter(chunk, sel, out, ())
    with pytest.raises(TypeError, match="use numpy"):
        scatter(chunk, (), out, sel)
    with pytest.raises(TypeError, match="use numpy"):
        gather(chunk, sel, out, ())
    with pytest.raises(TypeError, match="use numpy"):
        fill(out, sel, 0)
    assert not out.any()


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda c, o: scatter(c, (5,), o, ()), IndexError, "out of bounds"),
        (lambda c, o: scatter(c, (-4,), o, ()), IndexError, "out of bounds"),
        (lambda c, o: scatter(c, (0, 0, 0), o, ()), IndexError, "too many indices"),
        (lambda c, o: scatter(c, (slice(None, None, 0),), o, ()), ValueError, "zero"),
        (lambda c, o: scatter(c, (slice(0, 2),), o, ()), ValueError, r"\(2, 3\).*\(3, 3\)"),
        (lambda c, o: scatter(c, (), o, (slice(0, 2),)), ValueError, r"\(3, 3\).*\(2, 3\)"),
        (lambda c, o: scatter(c, (), o, (), drop_axes=(0,)), ValueError, "size"),
        (lambda c, o: scatter(c, (slice(0, 1),), o, (0,), drop_axes=(0, 0)), ValueError,
         "repeated"),
        (lambda c, o: scatter(c, (), o, (), drop_axes=(5,)), np.exceptions.AxisError,
         "out of bounds"),
        (lambda c, o: gather(c, (0,), o, (), drop_axes=(7,)), np.exceptions.AxisError,
         "out of bounds"),
        (lambda c, o: gather(c, (0,), o, (), drop_axes=(0, 0)), ValueError, "repeated"),
        (lambda c, o: scatter(c.astype("u2"), (), o, ()), TypeError, "dtypes differ"),
        (lambda c, o: scatter(c.tolist(), (), o, ()), TypeError, "ndarray"),
        (lambda c, o: gather(c, (), o.tolist(), ()), TypeError, "ndarray"),
        (lambda c, o: scatter(c, (slice("a", None),), o, ()), TypeError, "slice"),
    ],
)
def test_scatter_gather_bad_input(call, exc, match):
    chunk = np.ones((3, 3), "u1")
    out = np.zeros((3, 3), "u1")
    with pytest.raises(exc, match=match):
        call(chunk, out)
    assert not out.any()


def test_scatter_read_only_out():
    out = np.zeros((3, 3), "u1")
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        scatter(np.ones((3, 3), "u1"), (), out, ())
    with pytest.raises(ValueError, match="read-only"):
        gather(np.ones((3, 3), "u1"), (), out, ())
    with pytest.raises(ValueError, match="read-only"):
        fill(out, (), 1)
    assert not out.any()


# --------------------------------------------------------------------------------------------
# fill
# --------------------------------------------------------------------------------------------


@st.composite
def fill_values(draw, dtype, rng):
    dtype = np.dtype(dtype)
    kind = draw(st.sampled_from(["scalar", "python", "bytes"]))
    raw = random_array(rng, (1,), dtype)
    if kind == "bytes":
        return raw.tobytes()
    if kind == "python" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        return draw(st.integers(int(info.min), int(info.max)))
    if kind == "python" and dtype.kind in "fc":
        # representable in the dtype: numpy warns on an overflowing cast
        return draw(st.floats(allow_nan=True, width=16 if dtype.itemsize == 2 else 32))
    if kind == "python" and dtype.kind == "b":
        return draw(st.booleans())
    return raw[0]


@SETTINGS
@given(st.data(), shapes, dtypes, layouts, seeds)
def test_fill_vs_numpy(data, shape, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    out = random_array(rng, shape, dtype, layout)
    sel = data.draw(basic_selection(shape))
    fv = data.draw(fill_values(dtype, rng))
    expected = out.copy()
    if type(fv) is bytes:  # raw bytes; a numpy bytes_ scalar (trailing NULs dropped) is a value
        expected[sel] = np.frombuffer(fv, dtype=out.dtype)[0]
    else:
        expected[sel] = fv
    fill(out, sel, fv)
    same(out, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fill_large_layouts(dtype):
    rng = np.random.default_rng(4)
    for layout in LAYOUTS:
        out = random_array(rng, (40, 33, 3), dtype, layout)
        fv = random_array(rng, (1,), dtype)[0]
        expected = out.copy()
        expected[2:39:2, :, 1] = fv
        fill(out, (slice(2, 39, 2), slice(None), 1), fv)
        same(out, expected)
        fill(out, (), fv)
        same(out, np.full_like(out, fv))


def test_fill_conversions_like_numpy():
    out = np.zeros(4, "f4")
    fill(out, (), 1.5)
    assert out.tolist() == [1.5] * 4
    out = np.zeros(4, ">i4")
    fill(out, (slice(1, 3),), np.int64(7))
    assert out.tolist() == [0, 7, 7, 0]
    with pytest.raises(OverflowError):
        fill(np.zeros(3, "u1"), (), 300)
    out = np.zeros(3, [("a", "u1"), ("b", "<i4")])
    fill(out, (), (1, -2))
    assert out.tolist() == [(1, -2)] * 3


def test_fill_bad_bytes():
    out = np.zeros(3, "u4")
    with pytest.raises(ValueError, match="itemsize"):
        fill(out, (), b"\x00\x01")
    with pytest.raises(ValueError, match="itemsize"):
        fill(out, (), b"\x00" * 5)
    assert not out.any()
    with pytest.raises(TypeError):
        fill(np.zeros(3, object), (), 0)
    with pytest.raises(TypeError):
        fill([0, 0], (), 0)


# --------------------------------------------------------------------------------------------
# is_fill
# --------------------------------------------------------------------------------------------


def nan_with_payload(dtype, rng, n):
    """n NaNs of a float dtype with random payloads and signs."""
    dtype = np.dtype(dtype)
    bits = {2: (np.uint16, 10, 5), 4: (np.uint32, 23, 8), 8: (np.uint64, 52, 11)}
    ut, mbits, ebits = bits[dtype.itemsize]
    mant = rng.integers(1, 2**mbits, n, dtype=np.uint64).astype(ut)
    exp = ut((2**ebits - 1) << mbits)
    sign = (rng.integers(0, 2, n, dtype=np.uint64) << (8 * dtype.itemsize - 1)).astype(ut)
    native = (mant | exp | sign).view(dtype.newbyteorder("="))
    return native.astype(dtype)


FLOATS = ["f2", "f4", "f8", ">f4", ">f8"]
COMPLEX = ["c8", "c16", ">c8"]


@pytest.mark.parametrize("dtype", FLOATS + COMPLEX)
def test_is_fill_nan_payloads(dtype):
    rng = np.random.default_rng(5)
    dt = np.dtype(dtype)
    part = dt if dt.kind == "f" else np.dtype(f"{dt.byteorder}f{dt.itemsize // 2}")
    for layout in LAYOUTS:
        if dt.kind == "f":
            arr = nan_with_payload(dt, rng, 600)
        else:
            re = nan_with_payload(part, rng, 600).astype(part.newbyteorder("="))
            im = rng.standard_normal(600).astype(part.newbyteorder("="))
            # NaN in either part
            swap = rng.integers(0, 2, 600).astype(bool)
            re2, im2 = np.where(swap, im, re), np.where(swap, re, im)
            arr = np.empty(600, dt.newbyteorder("="))
            arr.real, arr.imag = re2, im2
            arr = arr.astype(dt)
        arr = np.asarray(arr.reshape(20, 30), order="F" if layout == "F" else "C")
        if layout == "strided":
            arr = np.repeat(arr, 2, axis=1)[:, ::2]
        fv = np.array([np.nan], dtype=dt)[0]
        assert is_fill(arr, fv) is True
        assert all_equal(arr, fv) is True
        arr = arr.copy()
        arr[13, 17] = 1.0
        assert is_fill(arr, fv) is False
        assert all_equal(arr, fv) is False


SIGNED_ZERO_CASES = [
    ("f8", [-0.0, 0.0], np.float64(0.0)),
    ("f8", [-0.0, 0.0], 0.0),
    ("f8", [-0.0, 0.0], 0),
    ("f8", [-0.0, 0.0], np.int64(0)),
    ("f8", [-0.0, -0.0], np.float64(-0.0)),
    ("f8", [-0.0, 0.0], np.float64(-0.0)),
    ("f8", [0.0, 0.0], -0.0),
    ("f4", [-0.0, 0.0], np.float32(0.0)),
    ("f2", [-0.0, 0.0], np.float16(0.0)),
    ("f2", [-0.0, -0.0], np.float16(-0.0)),
    (">f8", [-0.0, 0.0], np.float64(0.0)),
    (">f8", [-0.0, 0.0], 0),
    ("c8", [complex(-0.0, 0.0), 0j], np.complex64(0)),
    ("c8", [complex(-0.0, -0.0), 0j], 0.0),
    ("c8", [complex(-0.0, -0.0), 0j], 0),
    ("c16", [complex(-0.0, 1.0), complex(0.0, 1.0)], np.complex128(1j)),
    (">c8", [complex(-0.0, 0.0), 0j], np.complex64(0)),
    ("c16", [complex(np.nan, 0.0), complex(0.0, np.nan)], np.complex128(complex(np.nan, 5))),
    ("f8", [1.5, 1.5], np.float32(1.5)),
    ("f4", [0.1, 0.1], 0.1),
    ("f4", [0.1, 0.1], np.float32(0.1)),
    ("f2", [np.inf, np.inf], 1e10),
    ("u1", [255, 255], 255),
    ("u1", [255, 255], -1),
    ("u1", [255, 255], 1000),
    ("u1", [255, 255], 255.0),
    ("?", [True, True], 1),
    ("?", [True, True], 2),
    (">u2", [3, 3], np.uint16(3)),
    ("M8[s]", ["NaT", "NaT"], np.datetime64("NaT", "s")),  # generic NaT: deprecated, numpy 2.5
    ("M8[s]", [1, 1], np.datetime64(1000, "ms")),
    ("M8[s]", [1, 1], np.datetime64(1500, "ms")),
    ("m8[ms]", [5, 5], np.timedelta64(5, "ms")),
]


@pytest.mark.parametrize("dtype, values, fv", SIGNED_ZERO_CASES)
def test_is_fill_special_values_match_zarr(dtype, values, fv):
    arr = np.array(values, dtype=dtype)
    assert is_fill(arr, fv) is all_equal(arr, fv)
    assert is_fill(np.repeat(arr, 3000), fv) is all_equal(arr, fv)


def test_is_fill_known_answers():
    assert is_fill(np.array([-0.0, 0.0]), 0.0) is False  # zarr compares bits for a 0.0 fill
    assert is_fill(np.array([-0.0, 0.0]), 0) is True  # ... and values for an int 0 fill
    assert is_fill(np.zeros(3, "c8") * -1, np.complex64(0)) is True
    assert is_fill(np.zeros((0, 5)), 1.0) is True
    assert is_fill(np.zeros(3), None) is False
    assert is_fill(np.zeros(3, "V16"), b"\x00" * 16) is True
    assert is_fill(np.array([-0.0]), b"\x00" * 8) is False  # bytes: bitwise
    assert is_fill(np.array(7, "i2"), np.int16(7)) is True  # 0-d
    assert is_fill(np.array([7], "i2"), np.array(7, "i2")) is True  # 0-d array fill
    with pytest.raises(ValueError, match="itemsize"):
        is_fill(np.zeros(3, "V16"), b"\x00" * 3)
    with pytest.raises(TypeError):
        is_fill([0, 0], 0)


def test_is_fill_structured_with_float_fields_matches_zarr():
    # float fields compare by value (-0.0 == 0.0, NaN != NaN), padding is ignored: zarr's
    # numpy expression decides
    dt = np.dtype([("a", "f4"), ("b", "<i4")])
    arr = np.zeros(4, dt)
    arr["a"][1] = -0.0
    f = np.zeros((), dt)[()]
    assert is_fill(arr, f) is all_equal(arr, f) is True
    arr["a"][:] = np.nan
    f = np.array([(np.nan, 0)], dt)[0]
    assert is_fill(arr, f) is all_equal(arr, f) is False
    padded = np.dtype({"names": ["a", "b"], "formats": ["u1", "<i4"], "offsets": [0, 4],
                       "itemsize": 8})
    arr = np.zeros(3, padded)
    arr.view("u1")[1] = 9  # a padding byte
    f = np.zeros((), padded)[()]
    assert is_fill(arr, f) is all_equal(arr, f) is True


def test_is_fill_strings_match_zarr():
    for dtype, fv in [("S3", b"ab"), ("U2", "x"), ("S3", np.bytes_(b"ab"))]:
        arr = np.full(5, fv, dtype=dtype)
        assert is_fill(arr, fv) is all_equal(arr, fv) is True
        arr[2] = "z" if dtype.startswith("U") else b"z"
        assert is_fill(arr, fv) is all_equal(arr, fv) is False


@st.composite
def fill_case(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES[:-6] + [">u2", ">f4", ">c8"])))
    shape = draw(shapes)
    layout = draw(layouts)
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    source = draw(st.sampled_from(["element", "random", "nan", "zero", "negzero", "python"]))
    if source == "nan" and dtype.kind in "fc":
        fv = np.array([np.nan], dtype)[0]
    elif source in ("zero", "negzero") and dtype.kind not in "V":
        fv = np.array([-0.0 if source == "negzero" else 0], dtype)[0] if dtype.kind in "fc" \
            else np.zeros(1, dtype)[0]
    elif source == "python" and dtype.kind in "iufcb":
        fv = random_array(rng, (1,), dtype)[0].item()
        if dtype.kind == "c":
            fv = complex(fv)
    else:
        fv = random_array(rng, (1,), dtype)[0]
    content = draw(st.sampled_from(["all", "all", "one-off", "random", "signed-zero"]))
    arr = random_array(rng, shape, dtype, layout)
    if content != "random":
        arr[...] = fv
    if content == "one-off" and arr.size:
        idx = tuple(int(rng.integers(0, n)) for n in shape)
        arr[idx] = random_array(rng, (1,), dtype)[0]
    if content == "signed-zero" and arr.size and dtype.kind in "fc":
        idx = tuple(int(rng.integers(0, n)) for n in shape)
        arr[idx] = -0.0 if dtype.kind == "f" else complex(-0.0, -0.0)
    return arr, fv


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fill_case())
def test_is_fill_vs_zarr(case):
    arr, fv = case
    try:
        expected = all_equal(arr, fv)
    except Exception as exc:  # noqa: BLE001 - zarr refused: we must refuse the same way
        with pytest.raises(type(exc)):
            is_fill(arr, fv)
        return
    assert is_fill(arr, fv) is expected


def test_is_fill_large_and_early_exit():
    arr = np.zeros(1 << 20, "u8")
    assert is_fill(arr, np.uint64(0)) is True
    arr[-1] = 1
    assert is_fill(arr, np.uint64(0)) is False
    arr[-1] = 0
    arr[0] = 1
    assert is_fill(arr, np.uint64(0)) is False
    assert is_fill(arr[1:], np.uint64(0)) is True
    assert is_fill(arr[1::3], np.uint64(0)) is True
    big = np.zeros((512, 512), "V7")
    assert is_fill(big, np.zeros((), "V7")[()]) is True
    big.view("u1")[300, 5] = 1
    assert is_fill(big, np.zeros((), "V7")[()]) is False


# --------------------------------------------------------------------------------------------
# the GIL is released: count main-thread loop iterations while a worker is inside the kernel
# --------------------------------------------------------------------------------------------


# The main thread counts the loop iterations in which it sees the destination partly written:
# with the GIL held for the whole call that count is exactly 0, whatever the machine's load
# (no timing involved); released, the main thread polls all through the call.

BIG = 128 << 20  # bytes per array


@pytest.fixture(scope="module")
def big_pair():
    src = np.ones(BIG // 8, "u8").reshape(-1, 1024)
    dst = np.zeros(BIG // 8, "u8").reshape(-1, 1024)
    return src, dst


def _in_progress_count(call, first, last):
    """Run ``call`` in a worker; count main-thread iterations that see ``first()`` already
    written and ``last()`` not yet written (the kernels write in increasing address order)."""
    done = threading.Event()
    errors = []

    def worker():
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        done.set()

    t = threading.Thread(target=worker)
    seen = 0
    t.start()
    while not done.is_set():
        if first() and not last():
            seen += 1
    t.join()
    assert not errors, errors
    return seen


@pytest.mark.parametrize("kernel", ["copy_region", "scatter", "gather", "fill"])
def test_gil_released_during_copy(big_pair, kernel):
    src, dst = big_pair
    every_other = (slice(None), slice(None, None, 2))
    half = (slice(None), slice(512))
    calls = {
        "copy_region": (lambda: copy_region(src[:, ::-1], dst), (-1, -1)),
        "scatter": (lambda: scatter(src, every_other, dst, half), (-1, 511)),
        "gather": (lambda: gather(src, half, dst, every_other), (-1, 1022)),
        "fill": (lambda: fill(dst, (slice(None), slice(None, None, 3)), np.uint64(1)),
                 (-1, 1023)),
    }
    call, last_idx = calls[kernel]
    counts = []
    for _ in range(3):  # a loaded machine may starve the main thread once; not three times
        dst[...] = 0
        counts.append(_in_progress_count(call, lambda: dst[0, 0], lambda: dst[last_idx]))
        assert dst[0, 0] == 1 and dst[last_idx] == 1
        if counts[-1] > 100:
            break
    # typically 10**4 to 10**6 iterations; 0 if the GIL were held
    assert max(counts) > 100, counts


def test_gil_released_during_is_fill(big_pair):
    # is_fill writes nothing to watch: instead the main thread spoils the last element once
    # the worker is about to call; only with the GIL released can that land inside the call
    # (is_fill reads the last element last, so it then answers False)
    src, _ = big_pair
    outcomes = []
    for _ in range(3):
        src[-1, -1] = 1
        entering = threading.Event()
        result: list[bool] = []

        def worker(entering=entering, result=result):
            entering.set()
            result.append(is_fill(src, np.uint64(1)))

        t = threading.Thread(target=worker)
        t.start()
        entering.wait()
        src[-1, -1] = 2
        t.join()
        outcomes.append(result[0])
        if result[0] is False:
            break
    src[-1, -1] = 1
    assert False in outcomes, outcomes


def test_is_fill_zero_itemsize_and_complex_nan_fill():
    """A 'V0' buffer (no bytes per element) is zarr's expression's business, never a division
    by zero in the kernel (it killed the process); a float NaN fill over complex data answers as
    zarr's all_equal does (it raised TypeError)."""
    from zarr.core.buffer.cpu import NDBuffer

    import zkernels

    def zarr_says(buf, fill):
        try:
            return NDBuffer.from_numpy_array(buf).all_equal(fill)
        except Exception as exc:  # noqa: BLE001 - compared below
            return type(exc)

    def ours(buf, fill):
        try:
            return zkernels.is_fill(buf, fill)
        except Exception as exc:  # noqa: BLE001 - compared below
            return type(exc)

    for buf, fill in [(np.zeros(3, "V0"), b""), (np.zeros(0, "V0"), b"")]:
        assert ours(buf, fill) == zarr_says(buf, fill)
    for parts in [(np.nan, 0), (0, np.nan), (np.nan, np.nan), (1, 0)]:
        for dt in ("c8", "c16"):
            buf = np.full(5, complex(*parts), dt)
            for fill in (float("nan"), np.float64("nan"), complex(np.nan, 0)):
                assert ours(buf, fill) == zarr_says(buf, fill), (parts, dt, fill)
