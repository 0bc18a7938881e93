"""Reading a .pnz file (the format is described in container.py): the prefix, the JSON header and
every tensor record checked, and every section's checksum verified, before anything is decoded or
built; then the streams decoded and checked against their records. Every failure is a
ModelFormatError or ChecksumError naming its place (tensors[2] ('fc2.weight').sections.index)."""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from prunus import dtypes
from prunus.compression import huffman, sparse_index
from prunus.errors import ArgumentError, ChecksumError, ModelFormatError

MAGIC = b"\x89PNZ\r\n\x1a\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHHII")  # magic, format version, flags, header length, header CRC32
_MAX_HEADER = 64 << 20  # a header is a few KB; the cap bounds what a corrupt length can demand
_MAX_NDIM = 32
_MAX_TENSORS = 1 << 16
# ints in the architecture's kwargs are sizes (num_classes, ...): the cap bounds the model a corrupt
# file can make the reader build before the tensor shapes are compared
_MAX_KWARG_INT = 1 << 16
_MAX_K = 1 << 16  # centroids: weight_sharing's 16 bits at most

KINDS = ("shared", "pruned", "dense")
_SECTIONS = {
    "shared": ("codebook", "index_table", "index", "value_table", "value"),
    "pruned": ("index_table", "index", "flags", "values"),
    "dense": ("data",),
}
_COMMON = {"name", "kind", "shape", "dtype", "sections"}
_FIELDS = {
    "shared": _COMMON | {"k", "index_bits", "entries", "nonzero", "index_nbits", "value_nbits"},
    "pruned": _COMMON | {"index_bits", "entries", "nonzero", "index_nbits"},
    "dense": _COMMON,
}
_TOP = {"prunus_version", "arch", "meta", "tensors"}
_DTYPES = {d.name: d for d in dtypes.ALL}


def _kwarg_problem(key, v) -> str | None:
    if not isinstance(key, str):
        return "keys must be strings"
    if v is None or isinstance(v, (bool, str)):
        return None
    if type(v) is int:
        return None if abs(v) <= _MAX_KWARG_INT else f"integers must be within +-{_MAX_KWARG_INT}"
    if type(v) is float:
        return None if math.isfinite(v) else "floats must be finite"
    return f"values must be null, true/false, an integer, a float or a string, got {v!r:.60}"


def _is_int(x) -> bool:
    return type(x) is int  # JSON true/false load as bool, a subclass of int


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _show(x) -> str:
    try:
        r = repr(x) if isinstance(x, str) else json.dumps(x, default=str)
    except (ValueError, RecursionError):
        r = type(x).__name__
    return r if len(r) <= 60 else r[:57] + "..."


@dataclass
class _Spec:
    """A checked tensor record: its fields and its sections' bytes (CRCs verified)."""

    rec: dict
    shape: tuple
    dtype: object  # prunus DType
    numel: int
    sections: dict  # name -> memoryview


class _Reader:
    """Parses and checks a whole file; every failure is a ModelFormatError (ChecksumError for a
    CRC mismatch) that names the place: tensors[3] ('fc1.weight').sections.index."""

    def __init__(self, data, label: str):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArgumentError(f"{label}: expected bytes, got {type(data).__name__}")
        self.data = memoryview(data).cast("B")
        self.label = label

    def bad(self, where, what) -> ModelFormatError:
        return ModelFormatError(f"{self.label}: " + (f"at {where}: " if where else "") + what)

    def int(self, x, where, lo=0, hi=None) -> int:
        if not _is_int(x) or x < lo or (hi is not None and x > hi):
            rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise self.bad(where, f"expected an integer {rng}, got {_show(x)}")
        return x

    def keys(self, x, keys, where) -> dict:
        if not isinstance(x, dict):
            raise self.bad(where, f"expected a JSON object, got {_show(x)}")
        if x.keys() != keys:
            missing, extra = sorted(keys - x.keys()), sorted(x.keys() - keys)
            raise self.bad(where, (f"missing {missing} " if missing else "")
                           + (f"unexpected {[str(k)[:40] for k in extra][:5]}" if extra else ""))
        return x

    # -- the prefix and header -------------------------------------------------------------

    def header(self) -> dict:
        d = self.data
        if len(d) < _PREFIX.size:
            raise self.bad(None, f"{len(d)} bytes is too short for a .pnz file (the prefix alone "
                                 f"is {_PREFIX.size})")
        magic, version, flags, hlen, hcrc = _PREFIX.unpack_from(d)
        if magic != MAGIC:
            raise self.bad(None, f"not a .pnz file (magic {bytes(magic)!r}, expected {MAGIC!r})")
        if version != FORMAT_VERSION:
            raise self.bad(None, f"format version {version}; this prunus reads version "
                                 f"{FORMAT_VERSION}" + ("; upgrade prunus" if version > FORMAT_VERSION else ""))
        if flags != 0:
            raise self.bad(None, f"unknown flags {flags:#06x} in the prefix")
        if hlen > _MAX_HEADER or _PREFIX.size + hlen > len(d):
            raise self.bad(None, f"the header claims {hlen} bytes; the file has "
                                 f"{len(d) - _PREFIX.size} after the prefix (truncated?)")
        text = d[_PREFIX.size : _PREFIX.size + hlen]
        got = _crc(text)
        if got != hcrc:
            raise ChecksumError(f"{self.label}: the header does not match its checksum (recorded "
                                f"crc32 {hcrc:08x}, computed {got:08x}): the file is corrupted")
        try:
            h = json.loads(bytes(text).decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise self.bad(None, f"the header is not valid JSON: {e}") from None
        self.keys(h, _TOP, "the header")
        if not isinstance(h["prunus_version"], str):
            raise self.bad("prunus_version", f"expected a string, got {_show(h['prunus_version'])}")
        if not isinstance(h["meta"], dict):
            raise self.bad("meta", f"expected a JSON object, got {_show(h['meta'])}")
        self.arch(h["arch"])
        self.body = d[_PREFIX.size + hlen :]
        self.header_bytes = hlen
        return h

    def arch(self, a) -> None:
        from prunus.models import MODELS

        self.keys(a, {"model", "kwargs"}, "arch")
        if not isinstance(a["model"], str) or a["model"] not in MODELS:
            raise self.bad("arch.model", f"{_show(a['model'])} is not one of prunus's models "
                                         f"({', '.join(sorted(MODELS))})")
        if not isinstance(a["kwargs"], dict):
            raise self.bad("arch.kwargs", f"expected a JSON object, got {_show(a['kwargs'])}")
        for key, v in a["kwargs"].items():
            problem = _kwarg_problem(key, v)
            if problem:
                raise self.bad(f"arch.kwargs[{key[:40]!r}]", problem)

    # -- the tensor records ------------------------------------------------------------------

    def tensors(self, records) -> list:
        if not isinstance(records, list) or len(records) > _MAX_TENSORS:
            raise self.bad("tensors", f"expected a list of at most {_MAX_TENSORS} records, got {_show(records)}")
        specs, names, offset = [], set(), 0
        for i, rec in enumerate(records):
            spec, offset = self.record(rec, f"tensors[{i}]", offset)
            if spec.rec["name"] in names:
                raise self.bad(f"tensors[{i}]", f"{spec.rec['name'][:60]!r} is listed twice")
            names.add(spec.rec["name"])
            specs.append(spec)
        if offset != len(self.body):
            raise self.bad(None, f"the sections take {offset} bytes, but {len(self.body)} follow the "
                                 "header (truncated or extended file)")
        return specs

    def record(self, rec, where, offset):
        kind = rec.get("kind") if isinstance(rec, dict) else None
        if not isinstance(kind, str) or kind not in KINDS:
            raise self.bad(f"{where}.kind", f"expected one of {list(KINDS)}, got {_show(kind)}")
        self.keys(rec, _FIELDS[kind], where)
        name = rec["name"]
        if not isinstance(name, str) or not name:
            raise self.bad(f"{where}.name", f"expected a non-empty string, got {_show(name)}")
        where = f"{where} ({name[:60]!r})"
        shape = rec["shape"]
        if not isinstance(shape, list) or len(shape) > _MAX_NDIM:
            raise self.bad(f"{where}.shape", f"expected a list of at most {_MAX_NDIM} sizes, got {_show(shape)}")
        shape = tuple(self.int(s, f"{where}.shape[{j}]") for j, s in enumerate(shape))
        numel = math.prod(shape)
        dt = _DTYPES.get(rec["dtype"]) if isinstance(rec["dtype"], str) else None
        if dt is None:
            raise self.bad(f"{where}.dtype", f"unknown dtype {_show(rec['dtype'])}")
        if kind != "dense" and not dt.is_floating_point:
            raise self.bad(f"{where}.dtype", f"a {kind} tensor must be floating point, got {dt.name}")
        secs = self.keys(rec["sections"], set(_SECTIONS[kind]), f"{where}.sections")
        views = {}
        for s in _SECTIONS[kind]:  # in file order: each starts where the last one ended
            at = f"{where}.sections.{s}"
            entry = secs[s]
            if not (isinstance(entry, list) and len(entry) == 3):
                raise self.bad(at, f"expected [offset, length, crc32], got {_show(entry)}")
            off = self.int(entry[0], f"{at}[0]")
            length = self.int(entry[1], f"{at}[1]")
            crc = self.int(entry[2], f"{at}[2]", 0, 0xFFFFFFFF)
            if off != offset:
                raise self.bad(at, f"starts at byte {off} of the data, expected {offset} (sections "
                                   "follow each other without gaps)")
            if off + length > len(self.body):
                raise self.bad(at, f"bytes {off}..{off + length} run past the {len(self.body)} bytes "
                                   "after the header (truncated file?)")
            view = self.body[off : off + length]
            got = _crc(view)
            if got != crc:
                raise ChecksumError(f"{self.label}: {at} does not match its checksum (recorded "
                                    f"crc32 {crc:08x}, computed {got:08x}): the file is corrupted")
            views[s] = view
            offset += length
        spec = _Spec(rec, shape, dt, numel, views)
        self.sizes(spec, where)
        return spec, offset

    def sizes(self, spec, where) -> None:
        """Counts against the shape and the section lengths, all before any decoding."""
        rec, kind, v, item = spec.rec, spec.rec["kind"], spec.sections, spec.dtype.itemsize
        if kind == "dense":
            if len(v["data"]) != spec.numel * item:
                raise self.bad(f"{where}.sections.data", f"{len(v['data'])} bytes do not hold a "
                                                         f"{spec.dtype.name}{list(spec.shape)} array")
            return
        b = self.int(rec["index_bits"], f"{where}.index_bits", 1, sparse_index.MAX_INDEX_BITS)
        entries = self.int(rec["entries"], f"{where}.entries", 0, spec.numel)
        nonzero = self.int(rec["nonzero"], f"{where}.nonzero", 0, entries)
        if (entries > 0) != (nonzero > 0):
            raise self.bad(f"{where}.entries", f"{entries} entries with {nonzero} kept positions")
        # a filler advances the position by 2^b and is followed by a kept position, so fillers
        # and kept positions together span at most numel
        if entries - nonzero > (spec.numel - nonzero) >> b:
            raise self.bad(f"{where}.entries", f"{entries - nonzero} fillers cannot occur in "
                                               f"{spec.numel} positions at {b} index bits")
        self.stream(v["index"], rec["index_nbits"], entries, f"{where}.index_nbits")
        if kind == "shared":
            k = self.int(rec["k"], f"{where}.k", 1, _MAX_K)
            if len(v["codebook"]) != k * item:
                raise self.bad(f"{where}.sections.codebook", f"{len(v['codebook'])} bytes do not "
                                                             f"hold {k} {spec.dtype.name} centroids")
            self.stream(v["value"], rec["value_nbits"], entries, f"{where}.value_nbits")
        elif len(v["values"]) != nonzero * item:
            raise self.bad(f"{where}.sections.values", f"{len(v['values'])} bytes do not hold "
                                                       f"{nonzero} {spec.dtype.name} values")

    def stream(self, view, nbits, entries, where) -> None:
        nbits = self.int(nbits, where)
        if len(view) != (nbits + 7) // 8:
            raise self.bad(where, f"{nbits} bits need {(nbits + 7) // 8} bytes, the section has "
                                  f"{len(view)}")
        lo, hi = entries, entries * huffman.MAX_CODE_LENGTH
        if not lo <= nbits <= hi:
            raise self.bad(where, f"{entries} Huffman codes of 1..{huffman.MAX_CODE_LENGTH} bits "
                                  f"cannot take {nbits} bits")

    def table(self, view, alphabet, where) -> huffman.HuffmanCode:
        try:
            code = huffman.table_from_bytes(bytes(view))
        except ModelFormatError as e:
            raise self.bad(where, str(e)) from None
        if code.alphabet_size > alphabet:
            raise self.bad(where, f"a Huffman table over {code.alphabet_size} symbols; the stream "
                                  f"has {alphabet}")
        return code

    # -- decoding ------------------------------------------------------------------------------

    def decode(self, spec, where):
        """(dense used array, extras) where extras is None, (mask,) or (codebook, indices, mask),
        all flat; every stream checked against the record."""
        rec, dt, n = spec.rec, spec.dtype, spec.numel
        kind, v = rec["kind"], spec.sections
        if kind == "dense":
            arr = _from_le(v["data"], dt.np, n)
            if dt.name == "bool" and np.any(arr.view(np.uint8) > 1):
                raise self.bad(f"{where}.sections.data", "a bool array with bytes other than 0 and 1")
            return arr, None
        b, entries = rec["index_bits"], rec["entries"]
        m = 1 << b
        itab = self.table(v["index_table"], m, f"{where}.sections.index_table")
        try:
            codes = huffman.decode(bytes(v["index"]), rec["index_nbits"], entries, itab)
        except ModelFormatError as e:
            raise self.bad(f"{where}.sections.index", str(e)) from None
        if kind == "shared":
            k = rec["k"]
            vtab = self.table(v["value_table"], k + 1, f"{where}.sections.value_table")
            try:
                symbols = huffman.decode(bytes(v["value"]), rec["value_nbits"], entries, vtab)
            except ModelFormatError as e:
                raise self.bad(f"{where}.sections.value", str(e)) from None
        else:
            ambiguous = codes == m - 1
            na = int(np.count_nonzero(ambiguous))
            flags = v["flags"]
            if len(flags) != (na + 7) // 8:
                raise self.bad(f"{where}.sections.flags", f"{na} entries with the maximum gap need "
                                                          f"{(na + 7) // 8} flag bytes, got {len(flags)}")
            bits = np.unpackbits(np.frombuffer(flags, np.uint8))
            if bits[na:].any():
                raise self.bad(f"{where}.sections.flags", "the padding bits are not zero")
            symbols = np.ones(entries, np.uint8)
            symbols[ambiguous] = 1 - bits[:na]
        try:
            pos, vals = sparse_index.decode_positions(codes, symbols, n, b)
        except ModelFormatError as e:
            raise self.bad(where, str(e)) from None
        if pos.size != rec["nonzero"]:
            raise self.bad(f"{where}.nonzero", f"{rec['nonzero']} kept positions recorded, the "
                                               f"streams hold {pos.size}")
        mask = np.zeros(n, dt.np)
        mask[pos] = 1
        if kind == "pruned":
            raw = np.zeros(n, dt.np)
            raw[pos] = _from_le(v["values"], dt.np, pos.size)
            return raw, (mask,)
        codebook = _from_le(v["codebook"], dt.np, rec["k"])
        indices = np.zeros(n, np.int64)
        indices[pos] = vals.astype(np.int64) - 1  # the table's alphabet keeps them in 0..k-1
        used = codebook[indices] * mask
        return used, (codebook, indices, mask)


def _from_le(view, np_dtype, count) -> np.ndarray:
    a = np.frombuffer(view, dtype=np_dtype, count=count).copy()
    if a.dtype.itemsize > 1 and sys.byteorder == "big":
        a = a.byteswap()
    return a


def _crc(b) -> int:
    return zlib.crc32(b) & 0xFFFFFFFF


def _parse(data, label):
    r = _Reader(data, label)
    h = r.header()
    specs = r.tensors(h["tensors"])
    return r, h, specs

