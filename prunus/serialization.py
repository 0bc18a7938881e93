"""Checkpoints: `save`/`load` nested dicts/lists/tuples of tensors and Python scalars as one
safetensors file, plus `checkpoint`/`restore` and the RNG state a bit-identical resume needs.

Files hold data, never code: tensors are safetensors entries; everything else is JSON in the
safetensors metadata, in the closed vocabulary below. Loading never unpickles, never evals and
never imports a name read from the file. Graph programs and compressed models have their own
formats elsewhere (prunus/graph, prunus/compression).

File layout (format "prunus.checkpoint", version 1). safetensors metadata (all strings):
    format          "prunus.checkpoint"
    format_version  "1"
    prunus_version  the prunus that wrote the file (informative only)
    structure       JSON of the saved object, where a node is one of
        null, true/false, an integer, a finite float, a string      - itself
        {"float": "nan" | "inf" | "-inf"}                           - a non-finite float
        {"list": [node, ...]}   {"tuple": [node, ...]}
        {"dict": [[key, node], ...]}      keys: str, int, bool, null or a finite float, in order
        {"tensor": name, "crc32": "8 hex digits", "device": "cpu" | "cuda:N"}
    Every JSON object is one of these tagged nodes, so a user's dict {"tensor": "x"} can never be
    mistaken for a reference; every stored tensor is referenced exactly once.

Checksums are CRC32 of each tensor's raw little-endian bytes. The checksum lives in the same file
as the data, so anyone who can alter a tensor can alter its checksum too: no hash stored here can
defend against tampering, only against accidental corruption (bad disks, truncated copies, bit
flips in transit). For that CRC32 is the right tool: it catches every single-bit error and every
burst up to 32 bits, misses random damage with probability 2^-32 per tensor, and runs about twice
as fast as SHA-256 here (1.9 vs 0.9 GB/s), which matters when a training loop saves every N steps.

Not preserved (by design): tensor sharing (two references to one tensor load as two tensors),
requires_grad and Parameter-ness (state dicts are plain data; load_state_dict copies into the
model's own Parameters), dict subclasses (an OrderedDict loads as a dict, same order).
"""

from __future__ import annotations

import json
import math
import os
import zlib

import numpy as np

from prunus import dtypes
from prunus._fileio import atomic_write
from prunus.backend import Device, get_device
from prunus.errors import ArgumentError, ChecksumError, DTypeError, ModelFormatError, PrunusError
from prunus.random import default_generator
from prunus.tensor import Tensor

FORMAT = "prunus.checkpoint"
FORMAT_VERSION = 1

__all__ = ["checkpoint", "get_rng_state", "load", "restore", "save", "set_rng_state"]


# -- save --------------------------------------------------------------------------------------


def save(obj, path) -> None:
    """Write `obj` (nested dict/list/tuple of tensors, NumPy arrays, bool/int/float/str/None) to
    `path` as one safetensors file, atomically: an interrupted save leaves the old file intact."""
    arrays: dict[str, np.ndarray] = {}
    structure = _encode(obj, [], arrays, path)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "prunus_version": _prunus_version(),
        "structure": json.dumps(structure, allow_nan=False, separators=(",", ":")),
    }
    atomic_write(os.fspath(path), safetensors_bytes(arrays, metadata))


def safetensors_bytes(arrays: dict, metadata: dict | None = None) -> bytes:
    """The safetensors file holding `arrays` (name -> little-endian, C-ordered NumPy array of a
    dtype in _ST_DTYPE) and `metadata` (str -> str): the one writer behind every prunus file
    (`save` here, `save_program` in prunus/graph/program_write.py).

    Not in __all__: a building block for prunus's file formats, not a user-facing API. The
    safetensors library lays out the bytes (header, offsets, padding); it keeps the metadata in
    an unordered map, so the order of metadata keys in the header can differ from call to call.
    """
    import safetensors

    if hasattr(safetensors, "TensorSpec"):  # newer safetensors (0.8 here): pointers, no copy
        specs = {
            k: safetensors.TensorSpec(
                dtype=a.dtype.name, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes
            )
            for k, a in arrays.items()
        }
    else:  # older safetensors took the bytes themselves (this branch is untested here)
        specs = {
            k: {"dtype": _ST_DTYPE[a.dtype.name], "shape": list(a.shape), "data": a.tobytes()}
            for k, a in arrays.items()
        }
    # `arrays` stays referenced until serialize returns, which keeps the data pointers valid
    return bytes(safetensors.serialize(specs, metadata=metadata))


_ST_DTYPE = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
}


def _prunus_version() -> str:
    import prunus

    return getattr(prunus, "__version__", "unknown")


def _where(path_parts) -> str:
    return "obj" + "".join(f"[{p!r}]" for p in path_parts)


def _encode(obj, parts, arrays, file):
    """`obj` as a JSON node; tensors go into `arrays` under a flattened, unique name."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        # NumPy float scalars become Python floats: exact for every float dtype prunus has
        obj = float(obj)
        if math.isfinite(obj):
            return obj
        return {"float": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, (Tensor, np.ndarray)):
        return _encode_tensor(obj, parts, arrays)
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (str, bool, int, float, np.integer, np.floating))):
                raise ArgumentError(
                    f"prunus.save({os.fspath(file)!r}): dict key {k!r} at {_where(parts)} is a "
                    f"{type(k).__name__}; keys must be str, int, float, bool or None"
                )
            key = _encode(k, parts, arrays, file)
            if isinstance(key, dict):
                raise ArgumentError(
                    f"prunus.save: non-finite float dict key {k!r} at {_where(parts)}"
                )
            items.append([key, _encode(v, [*parts, k], arrays, file)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        tag = "list" if isinstance(obj, list) else "tuple"
        return {tag: [_encode(v, [*parts, i], arrays, file) for i, v in enumerate(obj)]}
    raise ArgumentError(
        f"prunus.save({os.fspath(file)!r}): cannot save a {type(obj).__name__} at {_where(parts)}; "
        "checkpoints hold tensors, NumPy arrays, dict/list/tuple, bool, int, float, str and None "
        "(files hold data, never code)"
    )


def _encode_tensor(t, parts, arrays):
    if isinstance(t, Tensor):
        device = str(t.device)
        arr = t.device.kernels.to_numpy(t.data)
    else:
        device, arr = "cpu", t
    try:
        dtypes.from_numpy_dtype(arr.dtype)
    except (DTypeError, KeyError, TypeError):
        raise DTypeError(
            f"prunus.save: the array at {_where(parts)} has dtype {arr.dtype}, which prunus does not "
            f"have; expected one of {', '.join(d.name for d in dtypes.ALL)}"
        ) from None
    # safetensors stores little-endian, C-ordered bytes; the checksum is over exactly those
    arr = np.asarray(arr, order="C")  # not ascontiguousarray: that turns 0-d into 1-d
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    name = ".".join(str(p) for p in parts) or "_"
    if name in arrays:  # e.g. {"a.b": x, "a": {"b": y}}: names only need to be unique
        n = 2
        while f"{name}#{n}" in arrays:
            n += 1
        name = f"{name}#{n}"
    arrays[name] = arr
    return {"tensor": name, "crc32": _crc32(arr), "device": device}


def _crc32(arr: np.ndarray) -> str:
    return f"{zlib.crc32(arr.reshape(-1).view(np.uint8)):08x}"


# -- load --------------------------------------------------------------------------------------


def load(path, map_location=None):
    """Read a file written by `save` and rebuild the same structure with prunus Tensors.

    map_location: None puts each tensor back on the device it was saved from; 'cpu', 'cuda',
    'cuda:N' or a Device puts every tensor there. Every tensor's checksum is verified
    (ChecksumError naming the tensor); any other damage raises ModelFormatError naming the file.
    """
    from safetensors import SafetensorError, safe_open

    file = os.fspath(path)
    target = None if map_location is None else _as_device(map_location)
    if not os.path.exists(file):
        raise FileNotFoundError(f"prunus.load: no such file: {file!r}")
    try:
        with safe_open(file, framework="numpy") as f:
            meta = f.metadata() or {}
            structure = _read_structure(meta, file)
            names = set(f.keys())
            reader = _Reader(f, names, file, target)
            obj = reader.decode(structure, [])
    except SafetensorError as e:
        raise ModelFormatError(
            f"prunus.load({file!r}): not a valid safetensors file: {e}"
        ) from None
    unused = names - reader.seen
    if unused:
        raise ModelFormatError(
            f"prunus.load({file!r}): the file stores tensors its structure never refers to: "
            f"{', '.join(sorted(unused))}"
        )
    return obj


def _as_device(spec) -> Device:
    if not isinstance(spec, (str, Device)):
        raise ArgumentError(
            f"prunus.load: map_location must be None, a device name ('cpu', 'cuda:0') or a Device, "
            f"got {type(spec).__name__}"
        )
    return get_device(spec)


def _read_structure(meta: dict, file: str):
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise ModelFormatError(
            f"prunus.load({file!r}): not a prunus checkpoint (format is {fmt!r}, expected {FORMAT!r}); "
            "a plain safetensors file can be read with safetensors.numpy.load_file"
        )
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        newer = version is not None and version.isdigit() and int(version) > FORMAT_VERSION
        raise ModelFormatError(
            f"prunus.load({file!r}): format version {version!r}, this prunus reads version "
            f"{FORMAT_VERSION}"
            + (
                f"; the file was written by prunus {meta.get('prunus_version')}, upgrade prunus"
                if newer
                else ""
            )
        )
    if "structure" not in meta:
        raise ModelFormatError(f"prunus.load({file!r}): the metadata has no 'structure'")
    try:
        # parse_constant: reject NaN/Infinity literals, which our writer never emits
        return json.loads(meta["structure"], parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ModelFormatError(
            f"prunus.load({file!r}): the structure metadata is not valid JSON: {e}"
        ) from None


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class _Reader:
    """Turns structure nodes back into objects, reading and verifying each referenced tensor."""

    def __init__(self, f, names, file, target):
        self.f, self.names, self.file, self.target = f, names, file, target
        self.seen: set = set()

    def bad(self, parts, what):
        return ModelFormatError(
            f"prunus.load({self.file!r}): bad structure at {_where(parts)}: {what}"
        )

    def decode(self, node, parts):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            raise self.bad(parts, "a bare JSON list (lists are written as {'list': [...]})")
        if not isinstance(node, dict) or len(node) == 0:
            raise self.bad(parts, f"unexpected {type(node).__name__}")
        if "tensor" in node:
            return self.tensor(node, parts)
        if len(node) != 1:
            raise self.bad(parts, f"unexpected fields {sorted(node)}")
        tag = next(iter(node))
        body = node[tag]
        if tag == "float" and body in _FLOATS:
            return _FLOATS[body]
        if tag in ("list", "tuple") and isinstance(body, list):
            out = [self.decode(v, [*parts, i]) for i, v in enumerate(body)]
            return out if tag == "list" else tuple(out)
        if tag == "dict" and isinstance(body, list):
            out = {}
            for item in body:
                if not (isinstance(item, list) and len(item) == 2):
                    raise self.bad(parts, "a dict item that is not a [key, value] pair")
                k, v = item
                if not (k is None or isinstance(k, (str, bool, int, float))):
                    raise self.bad(parts, f"a dict key of JSON type {type(k).__name__}")
                out[k] = self.decode(v, [*parts, k])
            return out
        raise self.bad(parts, f"unknown node {tag!r}")

    def tensor(self, node, parts):
        name, crc, device = node.get("tensor"), node.get("crc32"), node.get("device")
        if set(node) != {"tensor", "crc32", "device"} or not all(
            isinstance(x, str) for x in (name, crc, device)
        ):
            raise self.bad(
                parts, f"a tensor reference needs string fields tensor, crc32, device; got {node}"
            )
        if name not in self.names:
            raise ModelFormatError(
                f"prunus.load({self.file!r}): the structure refers to tensor {name!r} at "
                f"{_where(parts)}, which the file does not contain"
            )
        if name in self.seen:
            raise self.bad(parts, f"tensor {name!r} is referenced twice")
        self.seen.add(name)
        arr = self.f.get_tensor(name)
        got = _crc32(np.asarray(arr, order="C"))
        if got != crc:
            raise ChecksumError(
                f"prunus.load({self.file!r}): tensor {name!r} does not match its checksum (recorded "
                f"crc32 {crc}, computed {got}): the file is corrupted"
            )
        try:
            dtypes.from_numpy_dtype(arr.dtype)
        except (DTypeError, KeyError, TypeError):
            raise ModelFormatError(
                f"prunus.load({self.file!r}): tensor {name!r} has dtype {arr.dtype}, which prunus "
                "does not have"
            ) from None
        if self.target is not None:
            dev = self.target
        else:
            try:
                dev = get_device(device)
            except PrunusError as e:  # DeviceError / DeviceUnavailableError: say how to get out
                raise type(e)(
                    f"prunus.load({self.file!r}): tensor {name!r} was saved on {device!r}: {e}; "
                    "pass map_location='cpu' to load it onto the CPU"
                ) from None
        return Tensor(arr, device=dev)


# -- RNG state ---------------------------------------------------------------------------------


def get_rng_state() -> Tensor:
    """Everything prunus needs to reproduce its randomness: the default generator's state, 40 bytes
    (uint8). Random factories, initializers, dropout and DataLoader shuffling without generator=
    all draw from it, on the host, also for GPU tensors, so there is no separate CUDA state.
    prunus never uses NumPy's global RNG or Python's `random` module, so neither is included;
    a Generator you made yourself has its own get_state()/set_state() to store next to this."""
    return Tensor(default_generator.get_state())


def set_rng_state(state) -> None:
    """Restore a state from `get_rng_state()` (a Tensor, NumPy array or 40 bytes)."""
    if isinstance(state, Tensor):
        state = state.device.kernels.to_numpy(state.data)
    elif isinstance(state, (bytes, bytearray)):
        state = np.frombuffer(state, dtype=np.uint8)
    state = np.asarray(state)
    if state.dtype != np.uint8 or state.shape != (40,):
        raise ArgumentError(
            f"set_rng_state: expected the 40-byte uint8 state from get_rng_state(), got dtype "
            f"{state.dtype} and shape {tuple(state.shape)}"
        )
    default_generator.set_state(state)


# -- training checkpoints -------------------------------------------------------------------------

_RESERVED = ("model", "optimizer", "scheduler", "rng")


def checkpoint(model, optimizer=None, scheduler=None, **extra) -> dict:
    """A snapshot dict for `save`: {"model", "optimizer"?, "scheduler"?, "rng", **extra}.

    Tensors are copied, so later training steps do not change the snapshot (an optimizer's
    state_dict holds its live buffers). Put the step/epoch and any Generator states you use
    (e.g. a DataLoader's: g.get_state()) in `extra`.
    """
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise ArgumentError(f"checkpoint: {', '.join(map(repr, clash))} are reserved keys")
    ckpt = {"model": model.state_dict()}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    ckpt["rng"] = get_rng_state()
    ckpt.update(extra)
    return _snapshot(ckpt)


def _snapshot(obj):
    """A deep copy of containers and tensors; scalars are immutable and shared."""
    if isinstance(obj, Tensor):
        return Tensor(obj.device.kernels.to_numpy(obj.data), device=obj.device)
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_snapshot(v) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    return obj


def restore(ckpt: dict, model, optimizer=None, scheduler=None, strict: bool = True) -> dict:
    """Load a `checkpoint()` dict (e.g. from `load`) into fresh objects and reset the default
    generator, so training continues bit-identically. Returns the extra entries (step, epoch, ...)."""
    wanted = [
        k
        for k, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler))
        if obj is not None
    ]
    missing = [k for k in wanted if k not in ckpt]
    if missing:
        raise ArgumentError(
            f"restore: the checkpoint has no {' or '.join(map(repr, missing))} entry"
        )
    model.load_state_dict(ckpt["model"], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    return {k: v for k, v in ckpt.items() if k not in _RESERVED}
