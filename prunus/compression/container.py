"""The compressed model file `.pnz`: Deep Compression's output as bytes on disk. `save`/`dumps`
write a pruned and quantized model, `load`/`loads` rebuild it (still quantized, ready for more
fine-tuning), `read_info` reports what each section of a file takes. Strict reading: every
malformed, truncated or corrupted file raises ModelFormatError or ChecksumError, and everything is
checked before anything is allocated or built. The sizes the report prints come from here.

Files hold data, never code: the architecture is a name from prunus.models.MODELS and JSON
keyword arguments; loading builds it with get_model and never imports a name read from the file.

Layout (format version 1; all integers little-endian):

    prefix   20 bytes: magic b"\\x89PNZ\\r\\n\\x1a\\n" (PNG-style: a text-mode copy or a 7-bit
             channel breaks it visibly), u16 format version, u16 flags (0), u32 header length H,
             u32 CRC32 of the header
    header   H bytes of UTF-8 JSON, an object with exactly
               "prunus_version"  the prunus that wrote the file (informative)
               "arch"            {"model": name in MODELS, "kwargs": {str: null|bool|int|float|str}}
               "meta"            any JSON object (accuracies, recipe, dataset, ...)
               "tensors"         one record per state-dict entry of the model get_model builds
    sections the tensors' sections, back to back in record order, no gaps and no padding

A tensor record is {"name", "kind", "shape", "dtype", "sections", ...}; "sections" maps each
section of its kind to [offset from the end of the header, length, CRC32]. The kinds:

    "shared"  a weight-shared (quantized, possibly pruned) tensor, SharedWeights:
              "k" centroids, "index_bits" b, "entries" (kept positions + fillers), "nonzero"
              (kept positions), "index_nbits" and "value_nbits" (bit lengths of the two streams).
              sections: codebook (k values of the tensor's dtype), index_table, index (the
              canonical-Huffman-coded gap codes of sparse_index: gap - 1 in 0..2^b - 1),
              value_table, value (Huffman-coded codebook index + 1 per entry, 0 at fillers)
    "pruned"  a pruned-only tensor, PruningMask: "index_bits", "entries", "nonzero",
              "index_nbits". sections: index_table, index (as above), flags (one bit per entry
              whose gap code is the maximum 2^b - 1, 1 = filler: only those entries can be
              fillers, and a float value cannot mark them since a kept weight may be 0.0),
              values (the kept values, raw, in the tensor's dtype)
    "dense"   anything else (biases, BatchNorm parameters and buffers, unpruned weights):
              sections: data (the raw array)

Huffman tables are huffman.table_bytes; bit streams are most significant bit first, zero padded.
Positions are the kept positions of the mask (not the non-zero values), so the mask comes back
exactly; pruned positions of a shared tensor get index 0, as quantize() gives them.

What comes back bit-identical: every used weight (codebook[indices] * mask, raw * mask), every
dense tensor, the codebooks, masks and kept indices. What is not stored: the raw values behind
pruned positions and the pre-quantization weights (the `original` of a parametrization), which
the model never uses; a loaded parametrization's original holds the used weight.

CRC32 catches accidental damage (see prunus/serialization.py for why not a cryptographic hash).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import numpy as np

import prunus
from prunus import dtypes
from prunus._fileio import atomic_write
from prunus.autograd import no_grad
from prunus.compression import huffman, sparse_index
from prunus.compression.container_read import (
    _MAX_HEADER,
    _PREFIX,
    FORMAT_VERSION,
    MAGIC,
    _crc,
    _kwarg_problem,
    _parse,
    _Reader,
    _show,
)
from prunus.compression.pruning import PruningMask, _host
from prunus.compression.weight_sharing import SharedWeights
from prunus.errors import ArgumentError
from prunus.nn.module import Module, Parameter, _parametrization
from prunus.nn.utils.parametrize import register_parametrization
from prunus.tensor import Tensor

__all__ = [
    "DEFAULT_INDEX_BITS",
    "FORMAT_VERSION",
    "MAGIC",
    "CompressedInfo",
    "TensorInfo",
    "dumps",
    "load",
    "loads",
    "read_info",
    "read_info_bytes",
    "save",
]

DEFAULT_INDEX_BITS = 5  # the paper's LeNet tables (Deep Compression, Tables 2 and 3)



# -- what a file holds, per tensor ---------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """What one tensor takes in a .pnz file. Byte counts are the lengths of the sections as
    written; the `*_raw_bytes` are what the same streams take at fixed width (no Huffman coding):
    ceil(entries * index_bits / 8) for the index stream, ceil(entries * bits(k + 1) / 8) for a
    shared value stream (symbols 0..k: k centroids plus the filler symbol 0)."""

    name: str
    kind: str  # "shared", "pruned" or "dense"
    shape: tuple
    dtype: str
    weights: int  # elements of the tensor
    nonzero: int  # positions the mask keeps (stored values); all of them for a dense tensor
    entries: int  # sparse entries, fillers included (0 for dense)
    k: int | None  # centroids (shared)
    weight_bits: int  # log2 k rounded up (shared), the dtype's bits otherwise
    index_bits: int | None  # bits per relative index b (shared, pruned)
    index_nbits: int  # bits of the Huffman-coded index stream
    value_nbits: int  # bits of the Huffman-coded value stream (shared); 8 * value_bytes (pruned)
    codebook_bytes: int
    index_bytes: int
    index_raw_bytes: int
    value_bytes: int  # shared: Huffman-coded values; pruned: raw values + filler flags
    value_raw_bytes: int
    table_bytes: int  # both Huffman tables
    dense_bytes: int

    @property
    def stored_bytes(self) -> int:
        """Bytes of this tensor's sections in the file."""
        return (self.codebook_bytes + self.index_bytes + self.value_bytes + self.table_bytes
                + self.dense_bytes)

    @property
    def raw_bytes(self) -> int:
        """Bytes without Huffman coding: codebook + fixed-width streams (no tables)."""
        return self.codebook_bytes + self.index_raw_bytes + self.value_raw_bytes + self.dense_bytes

    @property
    def dense32_bytes(self) -> int:
        """The 32-bit dense size the paper compares against: 4 bytes per element."""
        return 4 * self.weights

    @property
    def fillers(self) -> int:
        return self.entries - self.nonzero if self.kind != "dense" else 0


@dataclass(frozen=True)
class CompressedInfo:
    """The figures of a .pnz file: one TensorInfo per tensor (in file order), the fixed prefix
    and JSON header sizes, and the file size; prefix + header + all tensors' stored bytes ==
    file_bytes exactly (there is no padding)."""

    tensors: tuple
    file_bytes: int
    prefix_bytes: int
    header_bytes: int
    arch: dict
    meta: dict
    format_version: int
    prunus_version: str

    def __getitem__(self, name) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def names(self) -> list:
        return [t.name for t in self.tensors]


# -- writing ---------------------------------------------------------------------------------------


def _le_bytes(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    if a.dtype.itemsize > 1 and sys.byteorder == "big":
        a = a.byteswap()
    return a.tobytes()


def _value_width(k: int) -> int:
    """Bits of a fixed-width value symbol 0..k (0 = filler)."""
    return max(1, int(k).bit_length())


def _check_arch(arch, fn) -> dict:
    from prunus.models import MODELS

    if isinstance(arch, str):
        arch = {"model": arch, "kwargs": {}}
    if not isinstance(arch, dict) or not {"model"} <= set(arch) <= {"model", "kwargs"}:
        raise ArgumentError(
            f"{fn}: arch must be {{'model': <name in prunus.models.MODELS>, 'kwargs': {{...}}}} "
            f"(or a model name), got {arch!r:.200}"
        )
    name, kwargs = arch["model"], arch.get("kwargs", {})
    if not isinstance(name, str) or name not in MODELS:
        raise ArgumentError(f"{fn}: arch model {name!r} is not one of {', '.join(sorted(MODELS))}")
    if not isinstance(kwargs, dict):
        raise ArgumentError(f"{fn}: arch kwargs must be a dict, got {type(kwargs).__name__}")
    for key, v in kwargs.items():
        problem = _kwarg_problem(key, v)
        if problem:
            raise ArgumentError(f"{fn}: arch kwargs[{key!r}]: {problem}")
    return {"model": name, "kwargs": dict(kwargs)}


def _logical_tensors(model) -> dict:
    """{state-dict name of the model without parametrizations: (module, attr, kind, p)} where p
    is the SharedWeights / PruningMask (None for dense): the tensors a fresh get_model() has."""
    skip = set()
    for _, m in model.named_modules():
        pz = m.__dict__["_modules"].get("parametrizations")
        if pz is not None and any(_parametrization(m.__dict__, k) is not None for k in pz):
            skip.update(id(x) for x in pz.modules())
    out = {}
    for path, m in model.named_modules():
        if id(m) in skip:
            continue
        d = m.__dict__
        prefix = f"{path}." if path else ""
        for name, p in d["_parameters"].items():
            if p is not None:
                out[prefix + name] = (m, name, "dense", None)
        for name, b in d["_buffers"].items():
            if b is not None and name not in d["_non_persistent"]:
                out[prefix + name] = (m, name, "dense", None)
        pz = d["_modules"].get("parametrizations")
        if pz is None or id(pz) not in skip:
            continue
        for name in pz:
            plist = _parametrization(d, name)
            if plist is None:
                continue
            chain = list(plist)
            label = prefix + name
            if len(chain) == 1 and isinstance(chain[0], SharedWeights):
                out[label] = (m, name, "shared", chain[0])
            elif len(chain) == 1 and isinstance(chain[0], PruningMask):
                out[label] = (m, name, "pruned", chain[0])
            else:
                raise ArgumentError(
                    f"compression.save: {label!r} has the parametrizations "
                    f"{[type(c).__name__ for c in chain]}; a .pnz stores one PruningMask or one "
                    "SharedWeights per tensor"
                )
    return out


def _index_bits_plan(index_bits, sparse_names, fn) -> dict:
    if index_bits is None:
        return dict.fromkeys(sparse_names, DEFAULT_INDEX_BITS)
    if isinstance(index_bits, dict):
        unknown = [k for k in index_bits if k not in sparse_names]
        if unknown:
            raise ArgumentError(
                f"{fn}: index_bits names {', '.join(map(repr, unknown))}, which are not pruned or "
                f"quantized tensors of the model (those are: {', '.join(sparse_names) or 'none'})"
            )
        plan = {n: index_bits.get(n, DEFAULT_INDEX_BITS) for n in sparse_names}
    else:
        plan = dict.fromkeys(sparse_names, index_bits)
    for n, b in plan.items():
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) \
                or not 1 <= b <= sparse_index.MAX_INDEX_BITS:
            raise ArgumentError(
                f"{fn}: index_bits for {n!r} must be an int in 1..{sparse_index.MAX_INDEX_BITS}, "
                f"got {b!r}"
            )
        plan[n] = int(b)
    return plan


def _mask_positions(mask: np.ndarray, name: str, fn) -> np.ndarray:
    """Flat kept positions; a mask must be 0s and 1s for `used = value * mask` to be storable."""
    flat = mask.reshape(-1)
    if not np.all((flat == 0) | (flat == 1)):
        raise ArgumentError(f"{fn}: the mask of {name!r} holds values other than 0 and 1")
    return np.flatnonzero(flat)


def _huffman(symbols: np.ndarray):
    code = huffman.code_for(symbols)
    data, nbits = huffman.encode(symbols, code)
    return huffman.table_bytes(code), data, nbits


def _encode_tensor(name, module, attr, kind, p, b, fn):
    """(record without sections, [(section name, bytes)])."""
    with no_grad():
        used = _host(getattr(module, attr))
    rec = {"name": name, "kind": kind, "shape": list(used.shape), "dtype": dtypes.from_numpy_dtype(used.dtype).name}
    if kind == "dense":
        return rec, [("data", _le_bytes(used))]
    if not dtypes.from_numpy_dtype(used.dtype).is_floating_point:
        raise ArgumentError(f"{fn}: {name!r} is {used.dtype}; only floating-point tensors are pruned or quantized")
    n = used.size
    pos = _mask_positions(_host(p.mask), name, fn)
    m = 1 << b
    if kind == "shared":
        codebook = _host(p.codebook)
        indices = _host(p.indices).reshape(-1)
        symbols = indices[pos].astype(np.int64) + 1  # 0 marks a filler
        sp = sparse_index.encode(pos, symbols, n, b)
        itab, idata, inbits = _huffman(sp.codes)
        vtab, vdata, vnbits = _huffman(sp.values)
        rec.update(k=int(codebook.size), index_bits=b, entries=int(sp.codes.size), nonzero=int(pos.size),
                   index_nbits=inbits, value_nbits=vnbits)
        return rec, [("codebook", _le_bytes(codebook)), ("index_table", itab), ("index", idata),
                     ("value_table", vtab), ("value", vdata)]
    sp = sparse_index.encode(pos, np.ones(pos.size, np.uint8), n, b)
    itab, idata, inbits = _huffman(sp.codes)
    ambiguous = sp.codes == m - 1  # the only entries that can be fillers
    flags = np.packbits(sp.values[ambiguous] == 0).tobytes()
    values = used.reshape(-1)[pos]  # raw * 1 == raw exactly
    rec.update(index_bits=b, entries=int(sp.codes.size), nonzero=int(pos.size), index_nbits=inbits)
    return rec, [("index_table", itab), ("index", idata), ("flags", flags), ("values", _le_bytes(values))]


def dumps(model, *, arch, index_bits=None, meta=None) -> bytes:
    """The .pnz bytes of `model` (see `save`)."""
    fn = "compression.dumps"
    if not isinstance(model, Module):
        raise ArgumentError(f"{fn}: expected a Module, got {type(model).__name__}")
    arch = _check_arch(arch, fn)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ArgumentError(f"{fn}: meta must be a dict (JSON object), got {type(meta).__name__}")
    from prunus.models import get_model

    fresh = get_model(arch["model"], **arch["kwargs"]).state_dict()
    logical = _logical_tensors(model)
    _check_same_structure(logical, fresh, arch, fn)
    sparse_names = [n for n in fresh if logical[n][2] != "dense"]
    plan = _index_bits_plan(index_bits, sparse_names, fn)
    records, chunks, offset = [], [], 0
    for name in fresh:  # the fresh model's state-dict order
        module, attr, kind, p = logical[name]
        rec, sections = _encode_tensor(name, module, attr, kind, p, plan.get(name), fn)
        rec["sections"] = {}
        for sec, data in sections:
            rec["sections"][sec] = [offset, len(data), _crc(data)]
            chunks.append(data)
            offset += len(data)
        records.append(rec)
    header = {"prunus_version": prunus.__version__, "arch": arch, "meta": meta, "tensors": records}
    try:
        text = json.dumps(header, separators=(",", ":"), allow_nan=False,
                          default=_json_scalar).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ArgumentError(f"{fn}: meta must be plain JSON (finite numbers, strings, lists, "
                            f"dicts with string keys): {e}") from None
    if len(text) > _MAX_HEADER:
        raise ArgumentError(f"{fn}: the JSON header would take {len(text)} bytes (at most {_MAX_HEADER})")
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(text), _crc(text))
    return b"".join([prefix, text, *chunks])


def _json_scalar(x):
    # NumPy scalars in meta (an accuracy computed with NumPy) are written as the Python numbers
    if isinstance(x, np.generic) and x.shape == ():
        return x.item()
    raise TypeError(f"{type(x).__name__} {x!r:.60} is not JSON")


def _check_same_structure(logical, fresh, arch, fn) -> None:
    """The model must have exactly the tensors get_model(arch) builds, with their shapes, so that
    the file can be loaded."""
    missing = [k for k in fresh if k not in logical]
    extra = [k for k in logical if k not in fresh]
    shapes = [f"{k} {tuple(getattr(logical[k][0], logical[k][1]).shape)} vs {tuple(t.shape)}"
              for k, t in fresh.items() if k in logical
              and tuple(getattr(logical[k][0], logical[k][1]).shape) != tuple(t.shape)]
    if missing or extra or shapes:
        raise ArgumentError(
            f"{fn}: the model does not match arch {arch} (what load() will build): "
            + "; ".join(x for x in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {extra[:5]}" if extra else "",
                f"shapes differ: {shapes[:5]}" if shapes else "") if x)
        )


def save(model, path, *, arch, index_bits=None, meta=None) -> CompressedInfo:
    """Write `model` as a .pnz file, atomically; returns the file's CompressedInfo (read back from
    the bytes written, so `read_info(path)` gives the same figures).

    arch        {"model": a name in prunus.models.MODELS, "kwargs": {...}} (or just the name):
                what load() builds with get_model; the model must have its tensors and shapes
    index_bits  bits b per relative index of the pruned/quantized tensors: None (5 for all), an
                int for all, or {state-dict name ("fc1.weight"): b} (others get 5)
    meta        a JSON object stored as-is (accuracies, recipe, dataset, ...)

    Quantized tensors (SharedWeights) store their codebook, and their kept positions and
    codebook indices as two Huffman-coded streams; pruned-only ones (PruningMask) store a
    Huffman-coded index stream and their kept values raw; everything else is stored raw."""
    data = dumps(model, arch=arch, index_bits=index_bits, meta=meta)
    atomic_write(os.fspath(path), data)
    return read_info_bytes(data)


# -- reading -------------------------------------------------------------------------------------


def _info(r: _Reader, h: dict, specs: list) -> CompressedInfo:
    rows = []
    for s in specs:
        rec, v, kind = s.rec, s.sections, s.rec["kind"]
        bits = s.dtype.bits
        z = {"k": None, "index_bits": None, "entries": 0, "index_nbits": 0, "value_nbits": 0,
             "codebook_bytes": 0, "index_bytes": 0, "index_raw_bytes": 0, "value_bytes": 0,
             "value_raw_bytes": 0, "table_bytes": 0, "dense_bytes": 0, "nonzero": s.numel,
             "weight_bits": bits}
        if kind == "dense":
            z.update(dense_bytes=len(v["data"]))
        else:
            e, b = rec["entries"], rec["index_bits"]
            z.update(index_bits=b, entries=e, nonzero=rec["nonzero"], index_nbits=rec["index_nbits"],
                     index_bytes=len(v["index"]), index_raw_bytes=(e * b + 7) // 8)
            if kind == "shared":
                k = rec["k"]
                z.update(k=k, weight_bits=max(1, (k - 1).bit_length()), value_nbits=rec["value_nbits"],
                         codebook_bytes=len(v["codebook"]), value_bytes=len(v["value"]),
                         value_raw_bytes=(e * _value_width(k) + 7) // 8,
                         table_bytes=len(v["index_table"]) + len(v["value_table"]))
            else:
                stored = len(v["values"]) + len(v["flags"])
                z.update(value_bytes=stored, value_raw_bytes=stored, table_bytes=len(v["index_table"]),
                         value_nbits=8 * stored)
        rows.append(TensorInfo(name=rec["name"], kind=kind, shape=s.shape, dtype=s.dtype.name,
                               weights=s.numel, **z))
    return CompressedInfo(tensors=tuple(rows), file_bytes=len(r.data), prefix_bytes=_PREFIX.size,
                          header_bytes=r.header_bytes, arch=h["arch"], meta=h["meta"],
                          format_version=FORMAT_VERSION, prunus_version=h["prunus_version"])


def read_info_bytes(data) -> CompressedInfo:
    """The CompressedInfo of .pnz bytes: header, records and checksums are checked; the streams
    are not decoded (load does that)."""
    r, h, specs = _parse(data, "compression.read_info_bytes")
    return _info(r, h, specs)


def read_info(path) -> CompressedInfo:
    """The CompressedInfo of a .pnz file (the same figures save() returned)."""
    label = f"compression.read_info({os.fspath(path)!r})"
    with open(path, "rb") as f:
        data = f.read()
    r, h, specs = _parse(data, label)
    return _info(r, h, specs)


def _build(r: _Reader, arch: dict):
    from prunus.models import get_model

    try:
        return get_model(arch["model"], **arch["kwargs"])
    except Exception as e:  # noqa: BLE001 - any failure to build from file data is a format error
        raise r.bad("arch", f"get_model({arch['model']!r}, **{_show(arch['kwargs'])}) failed: "
                            f"{type(e).__name__}: {e}") from None


def _loads(data, label, map_location):
    from prunus.backend import get_device

    device = get_device(map_location) if map_location is not None else None
    r, h, specs = _parse(data, label)
    model = _build(r, h["arch"])
    fresh = model.state_dict(keep_vars=True)
    names = [s.rec["name"] for s in specs]
    if set(names) != set(fresh):
        missing = [k for k in fresh if k not in names]
        extra = [k for k in names if k not in fresh]
        raise r.bad("tensors", f"they do not match {h['arch']['model']}'s state dict: "
                               f"missing {missing[:5]}, unexpected {[e[:40] for e in extra[:5]]}")
    modules = dict(model.named_modules())
    for i, s in enumerate(specs):
        where = f"tensors[{i}] ({s.rec['name']!r})"
        t = fresh[s.rec["name"]]
        if tuple(t.shape) != s.shape:
            raise r.bad(f"{where}.shape", f"{list(s.shape)}, but the model's tensor is {list(t.shape)}")
        if t.dtype.category != s.dtype.category:
            raise r.bad(f"{where}.dtype", f"{s.dtype.name}, but the model's tensor is {t.dtype.name}")
    decoded = [r.decode(s, f"tensors[{i}] ({s.rec['name']!r})") for i, s in enumerate(specs)]
    with no_grad():
        for s, (arr, extra) in zip(specs, decoded):
            path, _, attr = s.rec["name"].rpartition(".")
            module = modules[path]
            _assign(module, attr, arr.reshape(s.shape), s.dtype)
            if extra is None:
                continue
            if len(extra) == 1:
                p = PruningMask(Tensor(extra[0].reshape(s.shape)))
            else:
                codebook, indices, mask = extra
                p = SharedWeights(Parameter(Tensor(codebook)), Tensor(indices.reshape(s.shape)),
                                  Tensor(mask.reshape(s.shape)))
            register_parametrization(module, attr, p)
    if device is not None:
        model.to(device)
    return model, h["meta"]


def _assign(module, attr, arr, dt) -> None:
    """Write `arr` into the module's tensor (kept object, so tied parameters stay tied), or replace
    it when the file's dtype differs from the fresh model's (a model saved after .double())."""
    d = module.__dict__
    is_param = d["_parameters"].get(attr) is not None
    t = d["_parameters"][attr] if is_param else d["_buffers"][attr]
    if t.dtype is dt:
        t.copy_(Tensor(arr))
    elif is_param:
        module.register_parameter(attr, Parameter(Tensor(arr), requires_grad=t.requires_grad))
    else:
        module.register_buffer(attr, Tensor(arr))


def loads(data, map_location=None):
    """Rebuild the model of .pnz bytes: (model, meta). See `load`."""
    return _loads(data, f"compression.loads(<{_len(data)} bytes>)", map_location)


def _len(data) -> str:
    try:
        return str(len(data))
    except TypeError:
        return "?"


def load(path, map_location=None):
    """Rebuild the model of a .pnz file: (model, meta).

    The model is get_model(arch) with every tensor restored; quantized tensors come back as
    SharedWeights (codebook Parameter, indices, mask) and pruned ones as PruningMask, so the model
    computes exactly what the saved one did and can be fine-tuned further. It is on the CPU, or
    on `map_location` ('cpu', 'cuda:N' or a Device), in the mode get_model gives (train).
    Malformed files raise ModelFormatError, corrupted ones ChecksumError."""
    label = f"compression.load({os.fspath(path)!r})"
    with open(path, "rb") as f:
        data = f.read()
    return _loads(data, label, map_location)

