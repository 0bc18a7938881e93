"""Canonical Huffman coding: code construction (canonical order, Kraft, optimal cost vs a heapq
reference, within a bit of the entropy, length limits), bit-exact layout, encode/decode and table
round trips under hypothesis, and truncated or corrupt streams and tables → ModelFormatError."""

from __future__ import annotations

import heapq
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_settings import reproducible

from prunus.compression import huffman as hf
from prunus.errors import ArgumentError, ModelFormatError


def optimal_cost(freqs):
    """Total bits of an optimal prefix code: the sum of all merge weights of Huffman's algorithm."""
    heap = [f for f in freqs if f > 0]
    if len(heap) == 1:
        return heap[0]  # one symbol: a 1-bit code
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def bit_string(code, s):
    return format(int(code.codes[s]), f"0{int(code.lengths[s])}b")


def check_prefix_free(code):
    words = sorted(bit_string(code, s) for s in np.flatnonzero(code.lengths))
    for a, b in itertools.pairwise(words):
        assert not b.startswith(a), (a, b)


def skewed_stream(seed, alphabet, n):
    """Symbols with a random skew: anything from near-uniform to one dominant symbol."""
    rng = np.random.default_rng(seed)
    weights = rng.random(alphabet) ** rng.uniform(0.5, 12.0)
    weights[rng.integers(alphabet)] += rng.uniform(0, 5) * weights.sum()
    return rng.choice(alphabet, size=n, p=weights / weights.sum())


# -- code construction -----------------------------------------------------------------------


def test_small_code_is_canonical():
    code = hf.build_code([5, 1, 1, 2, 0, 3])
    assert code.lengths.tolist() == [1, 4, 4, 3, 0, 2]
    # by (length, symbol): 0 → 0, 5 → 10, 3 → 110, 1 → 1110, 2 → 1111
    assert {s: bit_string(code, s) for s in [0, 5, 3, 1, 2]} == {
        0: "0",
        5: "10",
        3: "110",
        1: "1110",
        2: "1111",
    }
    assert code.alphabet_size == 6 and code.num_symbols == 5
    assert (code.min_length, code.max_length) == (1, 4)
    assert code.kraft_sum() == 1.0
    data, nbits = hf.encode(np.array([0, 5, 3, 1, 2, 0]), code)
    assert nbits == 1 + 2 + 3 + 4 + 4 + 1
    assert data == int("0" "10" "110" "1110" "1111" "0" "0", 2).to_bytes(2, "big")


def test_code_from_lengths_matches_build():
    code = hf.build_code([5, 1, 1, 2, 0, 3])
    assert hf.code_from_lengths([1, 4, 4, 3, 0, 2]) == code
    assert hf.code_from_lengths(code.lengths).codes.tolist() == code.codes.tolist()
    assert code != hf.code_from_lengths([1, 4, 4, 3, 2, 0])


@reproducible(300)
@given(
    freqs=st.lists(st.integers(0, 10**6), min_size=0, max_size=300),
)
def test_build_code_optimal_and_kraft(freqs):
    code = hf.build_code(freqs)
    f = np.array(freqs, np.int64)
    present = f > 0
    assert code.alphabet_size == len(freqs)
    assert ((code.lengths > 0) == present).all()
    if present.sum() == 0:
        assert code.num_symbols == 0
        return
    assert code.kraft_sum() <= 1.0
    if present.sum() >= 2 and code.max_length < hf.MAX_CODE_LENGTH:
        assert code.kraft_sum() == 1.0  # Huffman codes are complete
    check_prefix_free(code)
    if code.max_length < hf.MAX_CODE_LENGTH:  # the limit never bit: Huffman's optimal cost
        assert code.encoded_bits(f) == optimal_cost(freqs)
    # within one bit of the entropy per symbol (and never below it)
    p = f[present] / f.sum()
    entropy = float(-(p * np.log2(p)).sum())
    avg = code.encoded_bits(f) / f.sum()
    assert entropy - 1e-9 <= avg < entropy + 1 + 1e-9


def test_single_symbol_and_empty():
    code = hf.build_code([0, 0, 7])
    assert code.lengths.tolist() == [0, 0, 1] and code.kraft_sum() == 0.5
    data, nbits = hf.encode(np.full(13, 2), code)
    assert (data, nbits) == (b"\x00\x00", 13)
    np.testing.assert_array_equal(hf.decode(data, nbits, 13, code), np.full(13, 2))
    # the unused half of the code space: a 1 bit matches no code
    with pytest.raises(ModelFormatError, match="match no code"):
        hf.decode(b"\x10", 8, 8, code)

    empty = hf.code_for(np.zeros(0, np.int64))
    assert empty.alphabet_size == 0 and empty.num_symbols == 0
    assert hf.encode(np.zeros(0, np.int64), empty) == (b"", 0)
    assert hf.decode(b"", 0, 0, empty).size == 0
    assert hf.table_from_bytes(hf.table_bytes(empty)) == empty
    with pytest.raises(ModelFormatError, match="no symbols"):
        hf.decode(b"\x00", 8, 1, empty)
    with pytest.raises(ArgumentError, match="outside the code's alphabet"):
        hf.encode([0], empty)


def fibonacci(k):
    fib = [1, 1]
    while len(fib) < k:
        fib.append(fib[-1] + fib[-2])
    return np.array(fib[::-1], np.int64)


@pytest.mark.parametrize("max_length", [6, 8, 12, 24])
def test_length_limit(max_length):
    # Fibonacci counts make the deepest Huffman tree: 40 symbols would need 39-bit codes
    f = fibonacci(40)
    code = hf.build_code(f, max_length=max_length)
    assert code.max_length == max_length and code.kraft_sum() <= 1.0
    check_prefix_free(code)
    assert code.encoded_bits(f) >= optimal_cost(f.tolist())
    # the most frequent symbol still gets the shortest code
    assert code.lengths[0] == code.min_length
    rng = np.random.default_rng(max_length)
    x = rng.choice(40, size=5000, p=f / f.sum())
    x[:40] = np.arange(40)  # every code, including the longest, at least once
    data, nbits = hf.encode(x, code)
    np.testing.assert_array_equal(hf.decode(data, nbits, x.size, code), x)


def test_length_limit_unlimited_fits():
    f = fibonacci(20)
    assert hf.build_code(f).max_length == 19
    assert hf.build_code(f, max_length=19) == hf.build_code(f)
    with pytest.raises(ArgumentError, match="at most 4 bits"):
        hf.build_code(np.ones(17), max_length=4)


def test_code_for_alphabet_size():
    code = hf.code_for(np.array([1, 1, 3]), alphabet_size=8)
    assert code.alphabet_size == 8 and code.lengths.tolist() == [0, 1, 0, 1, 0, 0, 0, 0]
    assert hf.code_for(np.array([1, 1, 3])).alphabet_size == 4
    with pytest.raises(ArgumentError, match="outside the alphabet"):
        hf.code_for(np.array([9]), alphabet_size=8)


@pytest.mark.parametrize(
    "freqs, kwargs, match",
    [
        ([1, -1], {}, ">= 0"),
        ([1.0, float("nan")], {}, "finite"),
        ([[1, 2]], {}, "1-D"),
        (["a", "b"], {}, "numbers"),
        ([1, 2], {"max_length": 0}, "max_length"),
        ([1, 2], {"max_length": 25}, "max_length"),
        ([1, 2], {"max_length": True}, "max_length"),
    ],
)
def test_build_code_bad_arguments(freqs, kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        hf.build_code(freqs, **kwargs)


@pytest.mark.parametrize(
    "lengths, match",
    [
        ([1, 1, 1], "Kraft"),
        ([25, 1], r"0\.\.24"),
        ([-1, 1], r"0\.\.24"),
        ([1.0, 1.0], "integer"),
    ],
)
def test_code_from_lengths_bad(lengths, match):
    with pytest.raises(ArgumentError, match=match):
        hf.code_from_lengths(lengths)


# -- encode / decode -------------------------------------------------------------------------


@reproducible(300)
@given(
    alphabet=st.integers(1, 256),
    n=st.one_of(st.integers(0, 64), st.integers(0, 10_000)),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_hypothesis(alphabet, n, seed):
    x = skewed_stream(seed, alphabet, n)
    code = hf.code_for(x, alphabet_size=alphabet)
    data, nbits = hf.encode(x, code)
    assert nbits == code.encoded_bits(np.bincount(x, minlength=alphabet)) if n else nbits == 0
    assert len(data) == (nbits + 7) // 8
    out = hf.decode(data, nbits, n, code)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, x)
    # the same through the stored table
    code2 = hf.table_from_bytes(hf.table_bytes(code))
    assert code2 == code
    np.testing.assert_array_equal(hf.decode(data, nbits, n, code2), x)


@reproducible(50)
@given(seed=st.integers(0, 2**32 - 1), alphabet=st.sampled_from([257, 4096, 65536]))
def test_roundtrip_large_alphabet(seed, alphabet):
    # index streams with up to 16-bit gaps: alphabets past uint8
    rng = np.random.default_rng(seed)
    x = np.minimum(rng.zipf(1.05, 5000) - 1, alphabet - 1)
    code = hf.code_for(x, alphabet_size=alphabet)
    data, nbits = hf.encode(x, code)
    out = hf.decode(data, nbits, x.size, code)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, x)


def test_roundtrip_codes_longer_than_16_bits():
    f = fibonacci(24)  # 23-bit codes
    code = hf.build_code(f)
    assert code.max_length == 23
    x = np.concatenate([np.arange(24), np.arange(24)[::-1], np.zeros(10, np.int64)])
    data, nbits = hf.encode(x.reshape(2, -1), code)  # any shape, read flat
    np.testing.assert_array_equal(hf.decode(data, nbits, x.size, code), x)


def test_roundtrip_million_symbols():
    # the size of LeNet-5's weight streams; timings live in the issue report, not in asserts
    rng = np.random.default_rng(0)
    x = np.minimum(rng.geometric(0.2, 10**6) - 1, 31)
    code = hf.code_for(x, alphabet_size=32)
    data, nbits = hf.encode(x, code)
    np.testing.assert_array_equal(hf.decode(data, nbits, x.size, code), x)


@pytest.mark.parametrize(
    "symbols, match",
    [
        ([0, 4], "has no code"),
        ([0, 9], "outside the code's alphabet"),
        ([0, -1], ">= 0"),
        ([0.0, 1.0], "integers"),
    ],
)
def test_encode_bad_symbols(symbols, match):
    code = hf.build_code([5, 1, 1, 2, 0, 3])
    with pytest.raises(ArgumentError, match=match):
        hf.encode(np.array(symbols), code)


# -- corrupt streams -------------------------------------------------------------------------


@pytest.fixture
def stream():
    x = skewed_stream(3, 20, 500)
    code = hf.code_for(x, alphabet_size=20)
    data, nbits = hf.encode(x, code)
    return x, code, data, nbits


def test_truncated_streams(stream):
    x, code, data, nbits = stream
    with pytest.raises(ModelFormatError, match="need"):
        hf.decode(data[:-1], nbits, x.size, code)  # bytes and nbits disagree
    for cut in [1, 7, 8, 100, nbits // 2]:
        short = nbits - cut
        buf = np.unpackbits(np.frombuffer(data, np.uint8))[:short]
        with pytest.raises(ModelFormatError, match="truncated|left over|match no code"):
            hf.decode(np.packbits(buf).tobytes(), short, x.size, code)
    with pytest.raises(ModelFormatError, match="truncated|past the end"):
        hf.decode(data, nbits, x.size + 1, code)
    with pytest.raises(ModelFormatError, match="left over"):
        hf.decode(data, nbits, x.size - 1, code)
    with pytest.raises(ModelFormatError, match="cannot take"):
        hf.decode(data, nbits, 10**12, code)  # no huge allocation: rejected up front
    with pytest.raises(ModelFormatError, match="no symbols to decode"):
        hf.decode(data, nbits, 0, code)


def test_bits_matching_no_code():
    code = hf.code_from_lengths([1, 2, 0])  # 0 → "0", 1 → "10"; "11" is unused
    assert hf.decode(bytes([0b01000000]), 3, 2, code).tolist() == [0, 1]
    with pytest.raises(ModelFormatError, match="offset 1 .symbol 1. match no code"):
        hf.decode(bytes([0b01100000]), 3, 2, code)


def test_nonzero_padding(stream):
    x, code, data, nbits = stream
    assert nbits % 8
    bad = data[:-1] + bytes([data[-1] | 1])
    with pytest.raises(ModelFormatError, match="padding"):
        hf.decode(bad, nbits, x.size, code)


@pytest.mark.parametrize("nbits, n", [(-1, 1), (8, -1), (8.0, 1), (8, None)])
def test_decode_bad_counts(stream, nbits, n):
    _, code, _, _ = stream
    with pytest.raises(ModelFormatError):
        hf.decode(b"\x00", nbits, n, code)


@reproducible(300)
@given(data=st.binary(max_size=64), n=st.integers(0, 600), seed=st.integers(0, 4))
def test_decode_garbage_never_crashes(data, n, seed):
    # random bytes under a real code: symbols or ModelFormatError, nothing else, and it ends;
    # the last code is incomplete with codes past the 16-bit first-level lookup
    lengths = [[1, 2, 3, 3], [1, 2, 0, 0], [4] * 16, [1, 3, 3, 3, 5, 5, 5, 5], [1, 20, 18, 20]]
    lengths = lengths[seed]
    code = hf.code_from_lengths(lengths)
    try:
        out = hf.decode(data, len(data) * 8, n, code)
    except ModelFormatError:
        return
    assert out.shape == (n,) and (code.lengths[out] > 0).all()


# -- code tables -----------------------------------------------------------------------------


def test_table_bytes_layout():
    code = hf.build_code([5, 1, 1, 2, 0, 3])
    t = hf.table_bytes(code)
    # version 1, 3 bits per length (max 4), 6 symbols, then 001 100 100 011 000 010 (+ 000000)
    assert t == bytes([1, 3, 6, 0, 0, 0]) + int("001100100011000010" "000000", 2).to_bytes(3, "big")
    assert hf.table_from_bytes(t) == code
    assert hf.table_from_bytes(bytearray(t)) == code


@reproducible(200)
@given(freqs=st.lists(st.integers(0, 1000), max_size=300))
def test_table_roundtrip(freqs):
    code = hf.build_code(freqs)
    t = hf.table_bytes(code)
    assert len(t) == 6 + math.ceil(len(freqs) * code.max_length.bit_length() / 8)
    back = hf.table_from_bytes(t)
    assert back == code and back.codes.tolist() == code.codes.tolist()


@pytest.mark.parametrize(
    "table, match",
    [
        (b"\x01\x03", "shorter than"),
        (bytes([2, 3, 1, 0, 0, 0, 0x20]), "version"),
        (bytes([1, 6, 1, 0, 0, 0, 0x20]), "bits per code length"),
        (bytes([1, 3, 6, 0, 0, 0]) + b"\x32\x30", "need 3 bytes"),
        (bytes([1, 3, 6, 0, 0, 0]) + b"\x32\x30\x80\x00", "need 3 bytes"),
        (bytes([1, 3, 6, 0, 0, 0]) + b"\x32\x30\x81", "padding"),
        (bytes([1, 1, 3, 0, 0, 0, 0b11100000]), "Kraft"),  # three 1-bit codes
        (bytes([1, 3, 2, 0, 0, 0, 0b00100100]), "does not match"),  # lengths 1, 1 in 3 bits
        (bytes([1, 5, 1, 0, 0, 0, 0b11001000]), r"0\.\.24"),  # a 25-bit code
        (bytes([1, 0, 0, 0, 0, 0x10]), "alphabet"),  # 2**28 symbols
    ],
)
def test_table_corrupt(table, match):
    with pytest.raises(ModelFormatError, match=match):
        hf.table_from_bytes(table)


@reproducible(300)
@given(data=st.binary(max_size=40))
def test_table_garbage_never_crashes(data):
    try:
        code = hf.table_from_bytes(data)
    except ModelFormatError:
        return
    assert code.kraft_sum() <= 1.0


def test_bad_code_argument():
    with pytest.raises(ArgumentError, match="HuffmanCode"):
        hf.encode([0], [1, 1])
    with pytest.raises(ArgumentError, match="HuffmanCode"):
        hf.decode(b"", 0, 0, None)
    with pytest.raises(ArgumentError, match="bytes"):
        hf.decode("00", 0, 0, hf.build_code([1]))
    with pytest.raises(ArgumentError, match="bytes"):
        hf.table_from_bytes("table")
