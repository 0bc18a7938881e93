"""Relative sparse indices (Deep Compression, Figure 2): the issue's worked example, lossless round
trips against a per-element reference encoder (random masks, edge positions, hypothesis), stream
sizes, fixed-width packing, and bad arguments vs corrupt streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_settings import reproducible

from prunus.compression import sparse_index as si
from prunus.errors import ArgumentError, ModelFormatError


def reference_encode(dense, index_bits):
    """The paper's scheme one element at a time: the obvious (slow) reading of the convention."""
    gaps, values = [], []
    prev = -1
    for p, v in enumerate(dense):
        if v == 0:
            continue
        while p - prev > 2**index_bits:
            gaps.append(2**index_bits)
            values.append(0)
            prev += 2**index_bits
        gaps.append(p - prev)
        values.append(v)
        prev = p
    return gaps, values


def check_roundtrip(dense, index_bits):
    s = si.encode_dense(dense, index_bits)
    gaps, values = reference_encode(dense.tolist(), index_bits)
    assert s.gaps.tolist() == gaps
    assert s.values.tolist() == values
    assert s.n == dense.size and s.index_bits == index_bits
    assert s.codes.dtype == (np.uint8 if index_bits <= 8 else np.uint16)
    assert s.values.dtype == dense.dtype
    back = si.decode(*s)
    assert back.dtype == dense.dtype
    np.testing.assert_array_equal(back, dense)
    pos, vals = si.decode_positions(*s)
    np.testing.assert_array_equal(pos, np.flatnonzero(dense))
    np.testing.assert_array_equal(vals, dense[dense != 0])
    assert si.num_entries(np.flatnonzero(dense), index_bits) == s.codes.size
    return s


# -- the worked example --------------------------------------------------------------


def test_worked_example():
    # b = 3, non-zeros at 1, 4, 15: gaps 2, 3, 8 (a filler at 12: 15 - 4 = 11 > 2**3), 3
    s = si.encode([1, 4, 15], np.array([0.5, -1.0, 2.0], np.float32), 16, 3)
    assert s.gaps.tolist() == [2, 3, 8, 3]
    assert s.codes.tolist() == [1, 2, 7, 2]  # gap - 1, each in 3 bits
    assert s.values.tolist() == [0.5, -1.0, 0.0, 2.0]  # the filler is a zero value
    assert s.num_fillers == 1
    assert (s.n, s.index_bits) == (16, 3)
    dense = np.zeros(16, np.float32)
    dense[[1, 4, 15]] = [0.5, -1.0, 2.0]
    np.testing.assert_array_equal(si.decode(*s), dense)
    pos, vals = si.decode_positions(*s)
    assert pos.tolist() == [1, 4, 15] and vals.tolist() == [0.5, -1.0, 2.0]
    # the same from the dense array
    s2 = si.encode_dense(dense, 3)
    assert s2.codes.tolist() == s.codes.tolist() and s2.values.tolist() == s.values.tolist()
    sizes = si.stream_sizes(s, value_bits=5)
    assert sizes == (4, 1, 12, 20)
    assert sizes.total_bits == 32 and sizes.total_bytes == 2 + 3


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("index_bits", [3, 4, 5, 8])
@pytest.mark.parametrize("density", [0.01, 0.05, 0.2, 0.5])
def test_roundtrip_random_masks(density, index_bits):
    rng = np.random.default_rng(int(density * 1000) * 100 + index_bits)
    n = 20_000
    dense = np.where(rng.random(n) < density, rng.standard_normal(n), 0.0).astype(np.float32)
    s = check_roundtrip(dense, index_bits)
    # fillers only where a distance exceeds 2**b, all at the maximum gap, never at the end
    assert (s.gaps >= 1).all() and (s.gaps <= 2**index_bits).all()
    assert (s.gaps[s.values == 0] == 2**index_bits).all()
    assert s.values[-1] != 0


@pytest.mark.parametrize("index_bits", [1, 2, 3, 8, 16])
@pytest.mark.parametrize(
    "case",
    ["empty", "all_zero", "all_dense", "first_only", "last_only", "first_and_last", "one"],
)
def test_roundtrip_edges(case, index_bits):
    n = 300
    dense = np.zeros(n, np.int32)
    if case == "empty":
        dense = np.zeros(0, np.int32)
    elif case == "all_dense":
        dense = np.arange(1, n + 1, dtype=np.int32)
    elif case == "first_only":
        dense[0] = 7
    elif case == "last_only":
        dense[-1] = -3
    elif case == "first_and_last":
        dense[[0, -1]] = [1, 2]
    elif case == "one":
        dense = np.array([5], np.int32)
    s = check_roundtrip(dense, index_bits)
    if case in ("empty", "all_zero"):
        assert s.codes.size == 0 and s.values.size == 0
    if case == "all_dense":
        assert (s.gaps == 1).all() and s.num_fillers == 0
    if case == "first_only":
        assert s.gaps.tolist() == [1]


@pytest.mark.parametrize("index_bits", [1, 3, 4])
def test_gap_boundaries(index_bits):
    # distances 2**b (no filler), 2**b + 1 (one filler, then gap 1), 2 * 2**b (one filler, then
    # gap 2**b) and 2 * 2**b + 1 (two fillers, then gap 1)
    m = 2**index_bits
    for d, want in [(m, [m]), (m + 1, [m, 1]), (2 * m, [m, m]), (2 * m + 1, [m, m, 1])]:
        s = si.encode([d - 1], [9], d, index_bits)  # position d - 1 is at distance d from -1
        assert s.gaps.tolist() == want, d
        assert s.values.tolist() == [0] * (len(want) - 1) + [9]
        assert si.decode(*s).tolist() == [0] * (d - 1) + [9]


def test_codebook_index_stream():
    # weight sharing stores cluster index + 1 (0 is "pruned or filler"); an integer value stream
    # round-trips and keeps its dtype
    rng = np.random.default_rng(0)
    mask = rng.random(5000) < 0.1
    idx = rng.integers(0, 32, mask.sum()).astype(np.uint8)
    pos = np.flatnonzero(mask)
    s = si.encode(pos, idx + 1, mask.size, 5)
    assert s.values.dtype == np.uint8 and s.values.max() <= 32
    p2, v2 = si.decode_positions(*s)
    np.testing.assert_array_equal(p2, pos)
    np.testing.assert_array_equal(v2 - 1, idx)


@reproducible(300)
@given(
    n=st.integers(0, 2000),
    index_bits=st.integers(1, 16),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_hypothesis(n, index_bits, density, seed):
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random(n) < density, rng.integers(1, 100, n), 0).astype(np.int16)
    check_roundtrip(dense, index_bits)


def test_large_vectorized():
    # LeNet-300-100's fc1 at ~8% density, with 4-bit gaps: no per-element Python work
    rng = np.random.default_rng(1)
    n = 784 * 300
    dense = np.where(rng.random(n) < 0.08, rng.standard_normal(n), 0).astype(np.float32)
    s = si.encode_dense(dense, 4)
    np.testing.assert_array_equal(si.decode(*s), dense)
    assert s.codes.size == si.num_entries(np.flatnonzero(dense), 4)


# -- stream sizes and fixed-width packing ----------------------------------------------------


def test_stream_sizes_and_num_entries():
    s = si.encode_dense(np.zeros(50), 3)
    assert si.stream_sizes(s, 8) == (0, 0, 0, 0)
    s = si.encode([0, 100], [1, 2], 101, 4)  # distance 100 from 0: 6 fillers of 16, then 4
    assert s.gaps.tolist() == [1, 16, 16, 16, 16, 16, 16, 4]
    assert si.num_entries([0, 100], 4) == 8 == s.codes.size
    assert si.stream_sizes(s, 5) == (8, 6, 32, 40)
    with pytest.raises(ArgumentError, match="value_bits"):
        si.stream_sizes(s, -1)


@reproducible(200)
@given(bits=st.integers(1, 32), count=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_bits_roundtrip(bits, count, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**bits, count, dtype=np.uint64)
    data = si.pack_bits(codes, bits)
    assert len(data) == (count * bits + 7) // 8
    back = si.unpack_bits(data, bits, count)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, codes)


def test_pack_bits_layout_and_errors():
    # 3-bit codes 1, 2, 7, 2 (the worked example) → 001 010 111 010 → 0010 1011 1010 (0000)
    assert si.pack_bits(np.array([1, 2, 7, 2]), 3) == bytes([0b00101011, 0b10100000])
    with pytest.raises(ArgumentError, match="0..7"):
        si.pack_bits(np.array([8]), 3)
    with pytest.raises(ArgumentError, match="bits"):
        si.pack_bits(np.array([1]), 0)
    with pytest.raises(ArgumentError, match="integer"):
        si.pack_bits(np.array([1.0]), 3)
    with pytest.raises(ModelFormatError, match="need 2 bytes"):
        si.unpack_bits(b"\x00", 3, 4)


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("index_bits", [0, 17, -1, 3.0, True, "3"])
def test_bad_index_bits(index_bits):
    with pytest.raises(ArgumentError, match="index_bits"):
        si.encode([1], [1], 4, index_bits)
    with pytest.raises(ArgumentError, match="index_bits"):
        si.num_entries([1], index_bits)
    with pytest.raises(ModelFormatError, match="index_bits"):
        si.decode(np.array([0], np.uint8), np.array([1]), 4, index_bits)


@pytest.mark.parametrize(
    "positions, values, n, match",
    [
        ([1, 1], [1, 2], 4, "strictly increasing"),
        ([2, 1], [1, 2], 4, "strictly increasing"),
        ([-1], [1], 4, r"\[0, 4\)"),
        ([4], [1], 4, r"\[0, 4\)"),
        ([1.0], [1], 4, "integers"),
        ([[1]], [1], 4, "1-D"),
        ([1, 2], [1], 4, "one value per position"),
        ([1, 2], [1, 0], 4, "0 marks a filler"),
        ([1], [1], -1, "dense length"),
    ],
)
def test_encode_bad_arguments(positions, values, n, match):
    with pytest.raises(ArgumentError, match=match):
        si.encode(positions, values, n, 3)


@pytest.mark.parametrize(
    "codes, values, n, match",
    [
        ([1, 2], [1], 10, "2 entries but value stream has 1"),
        ([1, 8], [1, 1], 100, "does not fit in 3 bits"),
        ([1, -1], [1, 1], 100, "does not fit in 3 bits"),
        ([1, 2, 7, 2], [1, 2, 0, 3], 15, "past the dense length 15"),
        ([1, 2, 6, 2], [1, 2, 0, 3], 100, "fillers always have the maximum gap"),
        ([1, 7], [1, 0], 100, "ends with a filler"),
        ([1.0], [1], 10, "integers"),
        ([[1]], [1], 10, "1-D"),
        ([1], [1], -5, "dense length"),
    ],
)
def test_decode_corrupt(codes, values, n, match):
    with pytest.raises(ModelFormatError, match=match):
        si.decode(np.array(codes), np.array(values), n, 3)
    with pytest.raises(ModelFormatError, match=match):
        si.decode_positions(np.array(codes), np.array(values), n, 3)


@reproducible(200)
@given(
    codes=st.lists(st.integers(0, 40), max_size=20),
    values=st.lists(st.integers(-2, 2), max_size=20),
    n=st.integers(0, 200),
)
def test_decode_garbage_never_crashes(codes, values, n):
    # arbitrary streams either decode to an array of length n or raise ModelFormatError
    try:
        out = si.decode(np.array(codes, np.int64), np.array(values, np.int64), n, 4)
    except ModelFormatError:
        return
    assert out.shape == (n,)
