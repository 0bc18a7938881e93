"""Canonical Huffman coding of streams of small non-negative ints (Deep Compression's last stage):
code construction (optionally length-limited), a bit-level NumPy encoder and a table-driven
decoder, and a compact byte form of the code table. Frequencies and symbols in, bytes out.

Canonical means the code is fully determined by each symbol's code length: symbols sorted by
(length, symbol) get consecutive codes, so the table stores lengths only. Bits are written most
significant first; the last byte is padded with zero bits.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from prunus.errors import ArgumentError, ModelFormatError

# The decoder reads a code from a 32-bit big-endian word at the code's byte offset: a code plus up
# to 7 bits of misalignment must fit in 32 bits, so codes are at most 25 bits; 24 is the round cap.
MAX_CODE_LENGTH = 24
# Far more symbols than any codebook or index alphabet has (those are <= 2**16); the cap bounds
# what a corrupt table can make the reader allocate.
MAX_ALPHABET = 1 << 20
# the decoder's first-level lookup covers this many leading bits; _UNRESOLVED marks prefixes
# that need the exact search
_PREFIX_BITS = 16
_UNRESOLVED = 255
_TABLE_VERSION = 1
_TABLE_HEADER = struct.Struct("<BBI")  # version, bits per length, alphabet size


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _symbol_dtype(alphabet_size: int):
    if alphabet_size <= 1 << 8:
        return np.uint8
    if alphabet_size <= 1 << 16:
        return np.uint16
    return np.uint32


class HuffmanCode:
    """A canonical prefix code over the symbols 0 .. alphabet_size-1; absent symbols have length 0.

    Build one with ``build_code``/``code_for`` (from data), or from code lengths directly
    (``HuffmanCode(lengths)`` or ``code_from_lengths``; checked: 0..24 and Kraft's inequality).
    Holds the per-symbol codes for encoding and the canonical tables for decoding."""

    __slots__ = (
        "_group_first",
        "_group_len",
        "_group_offset",
        "_limits",
        "_prefix_table",
        "_sorted_symbols",
        "codes",
        "lengths",
        "max_length",
        "min_length",
    )

    def __init__(self, lengths: np.ndarray):
        lengths = _check_lengths(lengths)
        lengths.setflags(write=False)
        self.lengths = lengths
        present = lengths > 0
        self.max_length = int(lengths.max()) if present.any() else 0
        self.min_length = int(lengths[present].min()) if present.any() else 0
        big_l = self.max_length
        # canonical order: by length, then symbol
        symbols = np.flatnonzero(present)
        order = symbols[np.argsort(lengths[symbols], kind="stable")]
        sorted_len = lengths[order].astype(np.int64)
        # left-justified (to max_length bits) codes are the running Kraft sum in units of
        # 2**-max_length; shifting back gives the canonical code of each symbol
        units = np.int64(1) << (big_l - sorted_len)
        left = np.cumsum(units) - units
        codes = np.zeros(lengths.size, dtype=np.uint32)
        codes[order] = (left >> (big_l - sorted_len)).astype(np.uint32)
        codes.setflags(write=False)
        self.codes = codes
        self._sorted_symbols = order.astype(_symbol_dtype(lengths.size))
        # one group per distinct length: windows in [first, limit) start a code of that length
        glen, gstart, gcount = np.unique(sorted_len, return_index=True, return_counts=True)
        self._group_len = np.append(glen, 0).astype(np.uint8)  # extra group: matches no code
        self._group_first = np.append(left[gstart], 0).astype(np.int64)
        self._limits = self._group_first[:-1] + gcount * (np.int64(1) << (big_l - glen))
        self._group_offset = np.append(gstart, 0).astype(np.int64)
        self._prefix_table = None  # built on first decode

    @property
    def alphabet_size(self) -> int:
        return int(self.lengths.size)

    @property
    def num_symbols(self) -> int:
        """How many symbols have a code."""
        return int(np.count_nonzero(self.lengths))

    def kraft_sum(self) -> float:
        """sum 2**-length over the coded symbols: 1 for a complete code, <= 1 for any prefix code."""
        ls = self.lengths[self.lengths > 0].astype(np.int64)
        return float(np.sum(np.ldexp(1.0, -ls)))

    def encoded_bits(self, frequencies) -> int:
        """Bits that symbols with these counts take under this code (the stream size without
        encoding it)."""
        f = np.asarray(frequencies)
        if f.ndim != 1 or f.size > self.alphabet_size:
            raise ArgumentError(
                f"HuffmanCode.encoded_bits: expected 1-D counts for at most {self.alphabet_size} "
                f"symbols, got shape {f.shape}"
            )
        missing = np.flatnonzero((f > 0) & (self.lengths[: f.size] == 0))
        if missing.size:
            raise ArgumentError(
                f"HuffmanCode.encoded_bits: symbol {int(missing[0])} occurs but has no code"
            )
        return int(np.dot(f.astype(np.int64), self.lengths[: f.size].astype(np.int64)))

    def __eq__(self, other) -> bool:
        if not isinstance(other, HuffmanCode):
            return NotImplemented
        return np.array_equal(self.lengths, other.lengths)

    __hash__ = None  # mutable-looking numpy contents: equal by value, not hashable

    def __repr__(self) -> str:
        return (
            f"HuffmanCode(alphabet_size={self.alphabet_size}, symbols={self.num_symbols}, "
            f"lengths {self.min_length}..{self.max_length})"
        )

    def _window_lengths(self, windows: np.ndarray) -> np.ndarray:
        """Code length starting at each max_length-bit window (0: no code starts there)."""
        # a lookup on the first <= 16 bits answers for every code of <= 16 bits (a 64 KiB table,
        # ten times faster than searchsorted); the rare windows that start a longer code, or
        # whose prefix is shared by several lengths, fall back to searchsorted
        shift = max(self.max_length - _PREFIX_BITS, 0)
        if self._prefix_table is None:
            starts = np.arange(1 << (self.max_length - shift), dtype=np.int64) << shift
            lo = self._group_len[np.searchsorted(self._limits, starts, side="right")]
            hi = self._group_len[np.searchsorted(self._limits, starts + (1 << shift) - 1, "right")]
            self._prefix_table = np.where(lo == hi, lo, _UNRESOLVED).astype(np.uint8)
        lengths = self._prefix_table[windows >> np.uint32(shift)]
        if shift:
            slow = np.flatnonzero(lengths == _UNRESOLVED)
            if slow.size:
                found = np.searchsorted(self._limits, windows[slow], side="right")
                lengths[slow] = self._group_len[found]
        return lengths

    def _window_symbols(self, windows: np.ndarray) -> np.ndarray:
        g = np.searchsorted(self._limits, windows, side="right")
        shift = self.max_length - self._group_len[g].astype(np.int64)
        rank = self._group_offset[g] + ((windows.astype(np.int64) - self._group_first[g]) >> shift)
        return self._sorted_symbols[rank]


def code_from_lengths(lengths) -> HuffmanCode:
    """The canonical code with these per-symbol code lengths (0 = symbol absent). Lengths must be
    in 0..24 and satisfy Kraft's inequality (sum 2**-length <= 1)."""
    return HuffmanCode(lengths)


def _check_lengths(lengths) -> np.ndarray:
    ls = np.asarray(lengths)
    if ls.ndim != 1 or (ls.size and not np.issubdtype(ls.dtype, np.integer)):
        raise ArgumentError(
            f"huffman: code lengths must be a 1-D integer array, got {ls.dtype} {ls.shape}"
        )
    if ls.size > MAX_ALPHABET:
        raise ArgumentError(f"huffman: at most {MAX_ALPHABET} symbols, got {ls.size}")
    if ls.size and (int(ls.min()) < 0 or int(ls.max()) > MAX_CODE_LENGTH):
        raise ArgumentError(
            f"huffman: code lengths must lie in 0..{MAX_CODE_LENGTH}, got "
            f"{int(ls.min())}..{int(ls.max())}"
        )
    ls = ls.astype(np.int64)
    kraft = int(np.sum(np.int64(1) << (MAX_CODE_LENGTH - ls[ls > 0])))
    if kraft > 1 << MAX_CODE_LENGTH:
        raise ArgumentError(
            f"huffman: code lengths violate Kraft's inequality (sum 2**-length = "
            f"{kraft / (1 << MAX_CODE_LENGTH):.6g} > 1): no prefix code has them"
        )
    return ls.astype(np.uint8)


def _huffman_depths(weights: list) -> list:
    """Leaf depths of a Huffman tree over `weights` (sorted ascending, at least 2), by the
    two-queue method: merged nodes are created in non-decreasing weight order, so the two
    smallest are always at the heads of the leaf queue and the internal-node queue."""
    m = len(weights)
    weight = list(weights) + [0] * (m - 1)
    parent = [0] * (2 * m - 1)
    leaf, inner = 0, m
    for node in range(m, 2 * m - 1):
        for _ in range(2):
            if leaf < m and (inner >= node or weight[leaf] <= weight[inner]):
                child, leaf = leaf, leaf + 1
            else:
                child, inner = inner, inner + 1
            parent[child] = node
            weight[node] += weight[child]
    depth = [0] * (2 * m - 1)
    for node in range(2 * m - 3, -1, -1):
        depth[node] = depth[parent[node]] + 1
    return depth[:m]


def _limit_lengths(lengths: list, max_length: int) -> list:
    """Lengths (sorted non-decreasing, most frequent symbol first) made to fit in max_length bits.

    Clamp, then lengthen the longest codes still below the cap (the least frequent ones, where a
    bit costs least) until Kraft's inequality holds, then shorten the most frequent codes while it
    still holds. Not the optimal package-merge, but only streams with Fibonacci-like counts
    (~10^5 : 1) ever get here."""
    ls = [min(x, max_length) for x in lengths]
    full = 1 << max_length
    kraft = sum(1 << (max_length - x) for x in ls)
    last = len(ls) - 1
    while kraft > full:
        while ls[last] >= max_length:
            last -= 1
        # the last code shorter than the cap: lengthening it keeps the list sorted
        kraft -= 1 << (max_length - ls[last] - 1)
        ls[last] += 1
    for i, x in enumerate(ls):
        while x > 1 and kraft + (1 << (max_length - x)) <= full:
            kraft += 1 << (max_length - x)
            x -= 1
        ls[i] = x
    return sorted(ls)


def build_code(frequencies, *, max_length: int = MAX_CODE_LENGTH) -> HuffmanCode:
    """The canonical Huffman code for symbol counts ``frequencies[s]`` (symbols with count 0 get
    no code). One distinct symbol gets a 1-bit code; no symbols give an empty code. Code lengths
    are capped at `max_length` (1..24)."""
    if not _is_int(max_length) or not 1 <= max_length <= MAX_CODE_LENGTH:
        raise ArgumentError(
            f"huffman.build_code: max_length must be an int in 1..{MAX_CODE_LENGTH}, "
            f"got {max_length!r}"
        )
    f = np.asarray(frequencies)
    if f.ndim != 1:
        raise ArgumentError(f"huffman.build_code: frequencies must be 1-D, got shape {f.shape}")
    if f.size and not (np.issubdtype(f.dtype, np.integer) or np.issubdtype(f.dtype, np.floating)):
        raise ArgumentError(f"huffman.build_code: frequencies must be numbers, got {f.dtype}")
    if f.size > MAX_ALPHABET:
        raise ArgumentError(f"huffman.build_code: at most {MAX_ALPHABET} symbols, got {f.size}")
    if f.size and (not np.all(np.isfinite(f)) or f.min() < 0):
        raise ArgumentError("huffman.build_code: frequencies must be finite and >= 0")
    present = np.flatnonzero(f > 0)
    lengths = np.zeros(f.size, dtype=np.int64)
    if present.size > 1 << max_length:
        raise ArgumentError(
            f"huffman.build_code: {present.size} symbols cannot all have codes of at most "
            f"{max_length} bits (at most {1 << max_length})"
        )
    if present.size == 1:
        lengths[present] = 1  # a 0-bit code could not be counted in a bitstream
    elif present.size > 1:
        # most frequent first (ties: smaller symbol first), so shorter codes go to them
        order = present[np.lexsort((present, -f[present]))]
        depths = sorted(_huffman_depths(f[order[::-1]].tolist()))
        if depths[-1] > max_length:
            depths = _limit_lengths(depths, max_length)
        lengths[order] = depths
    return HuffmanCode(lengths)


def code_for(symbols, alphabet_size: int | None = None, *, max_length: int = MAX_CODE_LENGTH):
    """The canonical Huffman code fitted to this stream of symbols (ints >= 0). The alphabet is
    0 .. alphabet_size-1 (default: up to the largest symbol)."""
    s = _check_symbols(symbols, "huffman.code_for")
    if alphabet_size is not None:
        if not _is_int(alphabet_size) or not 0 <= alphabet_size <= MAX_ALPHABET:
            raise ArgumentError(
                f"huffman.code_for: alphabet_size must be an int in 0..{MAX_ALPHABET}, "
                f"got {alphabet_size!r}"
            )
        if s.size and int(s.max()) >= alphabet_size:
            raise ArgumentError(
                f"huffman.code_for: symbol {int(s.max())} is outside the alphabet "
                f"0..{alphabet_size - 1}"
            )
    elif s.size and int(s.max()) >= MAX_ALPHABET:
        raise ArgumentError(f"huffman.code_for: symbols must be < {MAX_ALPHABET}")
    counts = np.bincount(s, minlength=alphabet_size or 0)
    return build_code(counts, max_length=max_length)


def _check_symbols(symbols, where: str) -> np.ndarray:
    s = np.asarray(symbols).reshape(-1)
    if s.size == 0:
        return np.zeros(0, np.int64)
    if not np.issubdtype(s.dtype, np.integer):
        raise ArgumentError(f"{where}: symbols must be integers, got dtype {s.dtype}")
    if int(s.min()) < 0:
        raise ArgumentError(f"{where}: symbols must be >= 0, got {int(s.min())}")
    return s.astype(np.int64) if s.dtype != np.int64 else s


def encode(symbols, code: HuffmanCode) -> tuple[bytes, int]:
    """Huffman-code a stream of symbols (any shape, read flat in C order): (bytes, nbits).
    The bytes hold nbits bits, most significant first, zero-padded to a whole byte."""
    if not isinstance(code, HuffmanCode):
        raise ArgumentError(f"huffman.encode: code must be a HuffmanCode, got {type(code)}")
    s = _check_symbols(symbols, "huffman.encode")
    if s.size == 0:
        return b"", 0
    if int(s.max()) >= code.alphabet_size:
        raise ArgumentError(
            f"huffman.encode: symbol {int(s.max())} is outside the code's alphabet "
            f"0..{code.alphabet_size - 1}"
        )
    ls = code.lengths[s]
    if not ls.all():
        k = int(np.argmin(ls))
        raise ArgumentError(
            f"huffman.encode: symbol {int(s[k])} (at index {k}) has no code (it had count 0 "
            "when the code was built)"
        )
    big_l = code.max_length
    # each code left-justified in a 32-bit word, exploded into a (n, max_length) bit matrix;
    # keeping row k's first ls[k] bits, row-major, is the concatenated bitstream
    left = code.codes[s] << (32 - ls).astype(np.uint32)
    bits = np.unpackbits(left.astype(">u4").view(np.uint8).reshape(-1, 4), axis=1)[:, :big_l]
    keep = np.arange(big_l, dtype=np.uint8) < ls[:, None]
    stream = bits[keep]
    return np.packbits(stream).tobytes(), int(stream.size)


def _follow(step: bytes, n: int) -> tuple[list, int]:
    """Start bit of each of n codes, given the code length starting at every bit (step[p]); the
    only Python loop of the decoder: one iteration per symbol. A 0 step (no code, or past the
    end) stalls in place and is reported by the caller."""
    starts = [0] * n
    p = 0
    for k in range(n):
        starts[k] = p
        p += step[p]
    return starts, p


def decode(data, nbits: int, n_symbols: int, code: HuffmanCode) -> np.ndarray:
    """Decode exactly `n_symbols` symbols from `nbits` bits of `data` (as written by ``encode``).
    Returns the smallest unsigned dtype that holds the alphabet. Truncated or corrupt streams, and
    streams with bits left over, raise ModelFormatError."""
    if not isinstance(code, HuffmanCode):
        raise ArgumentError(f"huffman.decode: code must be a HuffmanCode, got {type(code)}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArgumentError(f"huffman.decode: data must be bytes, got {type(data).__name__}")
    for name, v in (("nbits", nbits), ("n_symbols", n_symbols)):
        if not _is_int(v) or v < 0:
            raise ModelFormatError(f"huffman.decode: {name} must be an int >= 0, got {v!r}")
    nbits, n = int(nbits), int(n_symbols)
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size != (nbits + 7) // 8:
        raise ModelFormatError(
            f"huffman.decode: {nbits} bits need {(nbits + 7) // 8} bytes, got {buf.size}"
        )
    out_dtype = _symbol_dtype(code.alphabet_size)
    if n == 0:
        if nbits:
            raise ModelFormatError(f"huffman.decode: {nbits} bits but no symbols to decode")
        return np.zeros(0, out_dtype)
    if code.num_symbols == 0:
        raise ModelFormatError(
            f"huffman.decode: {n_symbols} symbols to decode with a code that has no symbols"
        )
    # every code is min_length..max_length bits: a cheap check that also bounds the work below
    if not n * code.min_length <= nbits <= n * code.max_length:
        raise ModelFormatError(
            f"huffman.decode: {n} symbols with codes of {code.min_length}..{code.max_length} "
            f"bits cannot take {nbits} bits (truncated or mismatched stream)"
        )
    if nbits % 8 and buf[-1] & ((1 << (8 - nbits % 8)) - 1):
        raise ModelFormatError("huffman.decode: the padding bits after the stream are not zero")
    big_l = code.max_length
    # a big-endian 32-bit word at every byte, then the max_length-bit window at every bit
    padded = np.concatenate([buf, np.zeros(4, np.uint8)]).astype(np.uint32)
    words = (padded[:-4] << 24) | (padded[1:-3] << 16) | (padded[2:-2] << 8) | padded[3:-1]
    shifted = words[:, None] << np.arange(8, dtype=np.uint32)  # uint32: high bits fall off
    windows = (shifted >> np.uint32(32 - big_l)).reshape(-1)[:nbits]
    # code length at every bit; zeros past the end stall _follow there
    step = np.zeros(nbits + MAX_CODE_LENGTH + 1, dtype=np.uint8)
    step[:nbits] = code._window_lengths(windows)
    starts, end = _follow(step.tobytes(), n)
    starts = np.asarray(starts, dtype=np.int64)
    stalled = np.flatnonzero(step[starts] == 0)
    if stalled.size:
        k = int(stalled[0])
        p = int(starts[k])
        if p >= nbits:
            raise ModelFormatError(
                f"huffman.decode: the bitstream ends after {k} of {n} symbols (truncated)"
            )
        raise ModelFormatError(
            f"huffman.decode: the bits at offset {p} (symbol {k}) match no code (corrupt data)"
        )
    if end > nbits:
        raise ModelFormatError(
            f"huffman.decode: the last code runs {end - nbits} bits past the end of the "
            f"{nbits}-bit stream (truncated)"
        )
    if end < nbits:
        raise ModelFormatError(
            f"huffman.decode: {nbits - end} bits left over after {n} symbols (corrupt or "
            "mismatched stream)"
        )
    return code._window_symbols(windows[starts]).astype(out_dtype, copy=False)


def table_bytes(code: HuffmanCode) -> bytes:
    """The code table as bytes: version (u8), bits per length w (u8), alphabet size (u32 LE),
    then each symbol's code length in w bits, most significant first (w = 0: no symbols)."""
    if not isinstance(code, HuffmanCode):
        raise ArgumentError(f"huffman.table_bytes: expected a HuffmanCode, got {type(code)}")
    width = code.max_length.bit_length()
    header = _TABLE_HEADER.pack(_TABLE_VERSION, width, code.alphabet_size)
    if width == 0:
        return header
    words = code.lengths.astype(np.uint8)[:, None]
    bits = np.unpackbits(words, axis=1)[:, 8 - width :]
    return header + np.packbits(bits.reshape(-1)).tobytes()


def table_from_bytes(data) -> HuffmanCode:
    """Inverse of ``table_bytes``; anything malformed raises ModelFormatError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArgumentError(f"huffman.table_from_bytes: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _TABLE_HEADER.size:
        raise ModelFormatError(
            f"huffman table: {len(data)} bytes is shorter than its {_TABLE_HEADER.size}-byte header"
        )
    version, width, size = _TABLE_HEADER.unpack_from(data)
    if version != _TABLE_VERSION:
        raise ModelFormatError(f"huffman table: unknown version {version} (expected 1)")
    if width > MAX_CODE_LENGTH.bit_length():
        raise ModelFormatError(
            f"huffman table: {width} bits per code length; lengths <= {MAX_CODE_LENGTH} need at "
            f"most {MAX_CODE_LENGTH.bit_length()}"
        )
    if size > MAX_ALPHABET:
        raise ModelFormatError(
            f"huffman table: alphabet of {size} symbols (at most {MAX_ALPHABET})"
        )
    body = data[_TABLE_HEADER.size :]
    need = math.ceil(size * width / 8)
    if len(body) != need:
        raise ModelFormatError(
            f"huffman table: {size} lengths of {width} bits need {need} bytes, got {len(body)}"
        )
    if width == 0:
        return code_from_lengths(np.zeros(size, np.uint8))
    bits = np.unpackbits(np.frombuffer(body, np.uint8))
    if bits[size * width :].any():
        raise ModelFormatError("huffman table: the padding bits are not zero")
    matrix = np.zeros((size, 8), np.uint8)
    matrix[:, 8 - width :] = bits[: size * width].reshape(size, width)
    lengths = np.packbits(matrix, axis=1).reshape(-1)
    if size and int(lengths.max()).bit_length() != width:
        # the writer always uses the fewest bits: a wider field means a corrupt header or body
        raise ModelFormatError(
            f"huffman table: the longest code is {int(lengths.max())} bits, which does not "
            f"match the header's {width} bits per length"
        )
    try:
        return code_from_lengths(lengths)
    except ArgumentError as e:
        raise ModelFormatError(f"huffman table: {e}") from None
