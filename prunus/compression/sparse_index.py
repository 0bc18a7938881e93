"""Sparse storage with relative indices (Deep Compression, Section 3 and Figure 2): each non-zero
entry stores the gap to the previous one in `index_bits` bits, with filler zero entries where a gap
is too long. Pure array code; the bit-level Huffman coding of the streams is in huffman.py.

Convention (the one place it is written down; decode depends on every word of it):

* Entries are read in order; entry k sits at position ``p[k] = p[k-1] + gap[k]`` with
  ``p[-1] = -1``, so the first gap counts from just before position 0 and a non-zero at
  position 0 has gap 1. Every gap is in ``1 .. 2**index_bits``.
* The stream holds ``code = gap - 1`` in ``0 .. 2**index_bits - 1``: exactly `index_bits` bits.
* When the distance to the next non-zero is more than ``2**index_bits``, the encoder inserts
  filler entries of gap ``2**index_bits`` (the maximum code) and value 0, as many as needed, then
  the real entry. A filler is recognised by its value 0, so real entries must have non-zero
  values (callers storing codebook indices shift them by one: 0 is "pruned or filler").
* No trailing fillers: the stream ends at the last non-zero. ``n`` (the dense length) travels
  beside the streams.

Example (the issue's): index_bits=3, non-zeros at 1, 4, 15 of 16 → gaps 2, 3, 8 (filler at 12),
3 → codes 1, 2, 7, 2 and values v1, v4, 0, v15.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from prunus.errors import ArgumentError, ModelFormatError

MAX_INDEX_BITS = 16


class SparseIndex(NamedTuple):
    """The two parallel streams of a relative-index sparse array, plus what decoding needs.

    `codes` are ``gap - 1`` (uint8 for index_bits <= 8, else uint16); `values` have the caller's
    dtype, 0 at fillers. ``decode(*s)`` inverts ``s = encode(...)``."""

    codes: np.ndarray
    values: np.ndarray
    n: int
    index_bits: int

    @property
    def gaps(self) -> np.ndarray:
        """The gaps themselves (codes + 1), as int64."""
        return self.codes.astype(np.int64) + 1

    @property
    def num_fillers(self) -> int:
        return int(np.count_nonzero(self.values == 0))


class StreamSizes(NamedTuple):
    """Sizes of the two streams when stored at fixed width (before any Huffman coding)."""

    entries: int  # real entries + fillers
    fillers: int
    index_bits: int  # total bits of the index stream: entries * index_bits
    value_bits: int  # total bits of the value stream: entries * bits per value

    @property
    def total_bits(self) -> int:
        return self.index_bits + self.value_bits

    @property
    def total_bytes(self) -> int:
        # each stream is packed on its own, so each rounds up to whole bytes
        return (self.index_bits + 7) // 8 + (self.value_bits + 7) // 8


def _check_index_bits(index_bits, error=ArgumentError) -> int:
    if isinstance(index_bits, bool) or not isinstance(index_bits, (int, np.integer)):
        raise error(f"sparse_index: index_bits must be an int, got {index_bits!r}")
    if not 1 <= index_bits <= MAX_INDEX_BITS:
        raise error(
            f"sparse_index: index_bits must be in 1..{MAX_INDEX_BITS}, got {int(index_bits)}"
        )
    return int(index_bits)


def _check_n(n, error) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise error(f"sparse_index: n (the dense length) must be an int >= 0, got {n!r}")
    return int(n)


def _code_dtype(index_bits: int):
    return np.uint8 if index_bits <= 8 else np.uint16


def _check_positions(positions, n: int) -> np.ndarray:
    p = np.asarray(positions)
    if p.ndim != 1:
        raise ArgumentError(f"sparse_index: positions must be 1-D, got shape {p.shape}")
    if p.size == 0:
        return np.zeros(0, np.int64)
    if not np.issubdtype(p.dtype, np.integer):
        raise ArgumentError(f"sparse_index: positions must be integers, got dtype {p.dtype}")
    p = p.astype(np.int64)
    if p[0] < 0 or p[-1] >= n:
        raise ArgumentError(
            f"sparse_index: positions must lie in [0, {n}), got {int(p.min())}..{int(p.max())}"
        )
    bad = np.flatnonzero(np.diff(p) <= 0)
    if bad.size:
        k = int(bad[0])
        raise ArgumentError(
            "sparse_index: positions must be strictly increasing, got "
            f"{int(p[k])} then {int(p[k + 1])} at entries {k} and {k + 1}"
        )
    return p


def _gap_split(p: np.ndarray, index_bits: int):
    """Distances between consecutive non-zeros (from -1) and the fillers each one needs."""
    d = np.diff(p, prepend=-1)
    # a distance d needs ceil(d / M) entries: (d - 1) // M fillers of gap M, then the rest
    fillers = (d - 1) >> index_bits
    return d, fillers


def num_entries(positions, index_bits: int) -> int:
    """How many entries (real + fillers) ``encode`` would emit for these sorted positions, without
    building the streams: for choosing index_bits."""
    index_bits = _check_index_bits(index_bits)
    p = np.asarray(positions, dtype=np.int64).reshape(-1)
    if p.size == 0:
        return 0
    _, fillers = _gap_split(p, index_bits)
    return int(p.size + fillers.sum())


def encode(positions, values, n: int, index_bits: int) -> SparseIndex:
    """Relative-index streams for a sparse flat array of length `n` whose non-zeros are `values`
    at the strictly increasing `positions`. Values must be non-zero (0 marks a filler)."""
    index_bits = _check_index_bits(index_bits)
    n = _check_n(n, ArgumentError)
    p = _check_positions(positions, n)
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] != p.shape[0]:
        raise ArgumentError(
            f"sparse_index: values must be 1-D with one value per position ({p.shape[0]}), "
            f"got shape {v.shape}"
        )
    zero = np.flatnonzero(v == 0)
    if zero.size:
        raise ArgumentError(
            f"sparse_index: {zero.size} value(s) are 0 (first at position {int(p[zero[0]])}); "
            "0 marks a filler entry, so stored values must be non-zero (drop those positions, "
            "or shift codebook indices by one)"
        )
    m = 1 << index_bits
    d, fillers = _gap_split(p, index_bits)
    # entry slots: real entry k comes after all fillers up to and including its own
    slot = np.arange(p.size, dtype=np.int64) + np.cumsum(fillers)
    total = int(p.size + (fillers.sum() if p.size else 0))
    codes = np.full(total, m - 1, dtype=_code_dtype(index_bits))
    codes[slot] = d - fillers * m - 1
    out_values = np.zeros(total, dtype=v.dtype)
    out_values[slot] = v
    return SparseIndex(codes, out_values, n, index_bits)


def encode_dense(array, index_bits: int) -> SparseIndex:
    """Relative-index streams for the non-zeros of `array`, flattened in C order."""
    a = np.asarray(array).reshape(-1)
    p = np.flatnonzero(a)
    return encode(p, a[p], a.size, index_bits)


def _positions(codes, values, n, index_bits):
    """Validated positions of every entry (fillers included). Everything here was read back from
    storage, so anything wrong is a ModelFormatError."""
    index_bits = _check_index_bits(index_bits, ModelFormatError)
    n = _check_n(n, ModelFormatError)
    c = np.asarray(codes)
    v = np.asarray(values)
    if c.ndim != 1 or v.ndim != 1:
        raise ModelFormatError(
            f"sparse_index: index and value streams must be 1-D, got shapes {c.shape}, {v.shape}"
        )
    if c.shape[0] != v.shape[0]:
        raise ModelFormatError(
            f"sparse_index: index stream has {c.shape[0]} entries but value stream has "
            f"{v.shape[0]}"
        )
    if c.size == 0:
        return np.zeros(0, np.int64), v
    if not np.issubdtype(c.dtype, np.integer):
        raise ModelFormatError(f"sparse_index: index codes must be integers, got dtype {c.dtype}")
    m = 1 << index_bits
    c = c.astype(np.int64)
    bad = np.flatnonzero((c < 0) | (c >= m))
    if bad.size:
        k = int(bad[0])
        raise ModelFormatError(
            f"sparse_index: index code {int(c[k])} at entry {k} does not fit in {index_bits} "
            f"bits (0..{m - 1})"
        )
    filler = v == 0
    bad = np.flatnonzero(filler & (c != m - 1))
    if bad.size:
        k = int(bad[0])
        raise ModelFormatError(
            f"sparse_index: entry {k} has value 0 (a filler) but gap {int(c[k]) + 1}; fillers "
            f"always have the maximum gap {m}"
        )
    if filler[-1]:
        raise ModelFormatError(
            "sparse_index: the stream ends with a filler entry; a filler is always followed by "
            "a real entry (truncated value stream?)"
        )
    pos = np.cumsum(c + 1) - 1
    if pos[-1] >= n:
        raise ModelFormatError(
            f"sparse_index: the entries reach position {int(pos[-1])}, past the dense length {n}"
        )
    return pos, v


def decode(codes, values, n: int, index_bits: int) -> np.ndarray:
    """The dense flat array (length `n`, dtype of `values`) that ``encode`` streams describe.
    Corrupt streams raise ModelFormatError."""
    pos, v = _positions(codes, values, n, index_bits)
    dense = np.zeros(int(n), dtype=v.dtype)
    # fillers write a 0 where the array is 0 anyway
    dense[pos] = v
    return dense


def decode_positions(codes, values, n: int, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The real entries only: (positions int64, values), fillers removed. The inverse of
    ``encode(positions, values, n, index_bits)``."""
    pos, v = _positions(codes, values, n, index_bits)
    keep = v != 0
    return pos[keep], v[keep]


def stream_sizes(sparse: SparseIndex, value_bits: int) -> StreamSizes:
    """Bits of both streams at fixed width: `index_bits` per index, `value_bits` per value."""
    if isinstance(value_bits, bool) or not isinstance(value_bits, (int, np.integer)):
        raise ArgumentError(f"sparse_index: value_bits must be an int, got {value_bits!r}")
    if value_bits < 0:
        raise ArgumentError(f"sparse_index: value_bits must be >= 0, got {value_bits}")
    entries = int(sparse.codes.size)
    return StreamSizes(
        entries=entries,
        fillers=sparse.num_fillers,
        index_bits=entries * int(sparse.index_bits),
        value_bits=entries * int(value_bits),
    )


def pack_bits(codes, bits: int) -> bytes:
    """Fixed-width packing: each code in `bits` bits (1..32), most significant bit first, the last
    byte padded with zero bits. For streams stored without Huffman coding."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 32:
        raise ArgumentError(f"sparse_index.pack_bits: bits must be an int in 1..32, got {bits!r}")
    c = np.asarray(codes)
    if c.ndim != 1 or (c.size and not np.issubdtype(c.dtype, np.integer)):
        raise ArgumentError(
            f"sparse_index.pack_bits: codes must be a 1-D integer array, got {c.dtype} {c.shape}"
        )
    if c.size == 0:
        return b""
    if int(c.min()) < 0 or int(c.max()) >= (1 << bits):
        raise ArgumentError(
            f"sparse_index.pack_bits: codes must lie in 0..{(1 << bits) - 1}, got "
            f"{int(c.min())}..{int(c.max())}"
        )
    # big-endian 32-bit words → a (count, 32) bit matrix → keep the low `bits` columns
    words = c.astype(">u4").view(np.uint8).reshape(-1, 4)
    matrix = np.unpackbits(words, axis=1)[:, 32 - bits :]
    return np.packbits(matrix.reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits``: `count` codes of `bits` bits each, as uint32 (wrong sizes raise
    ModelFormatError)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 32:
        raise ArgumentError(
            f"sparse_index.unpack_bits: bits must be an int in 1..32, got {bits!r}"
        )
    count = _check_n(count, ArgumentError)
    need = math.ceil(count * bits / 8)
    if len(data) != need:
        raise ModelFormatError(
            f"sparse_index.unpack_bits: {count} codes of {bits} bits need {need} bytes, got "
            f"{len(data)}"
        )
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits]
    matrix = np.zeros((count, 32), dtype=np.uint8)
    matrix[:, 32 - bits :] = flat.reshape(count, bits)
    return np.packbits(matrix, axis=1).view(">u4").reshape(-1).astype(np.uint32)
