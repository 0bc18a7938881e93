"""prunus.save / prunus.load: round trips (hypothesis, every dtype), bit-identical training resume,
checksums and format errors, atomic writes under SIGKILL, map_location, RNG state."""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prunus
from prunus import nn, optim
from prunus.backend import cuda_is_available
from prunus.errors import ArgumentError, ChecksumError, DeviceError, DTypeError, ModelFormatError
from prunus.serialization import checkpoint, restore

HAS_CUDA = cuda_is_available()
REPO = Path(__file__).resolve().parents[1]
NP_DTYPES = [
    np.bool_,
    np.uint8,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.float16,
    ml_dtypes.bfloat16,
    np.float32,
    np.float64,
]


def same(a, b) -> bool:
    """Structural, bitwise equality; a saved NumPy array comes back as a prunus Tensor."""
    if isinstance(a, (prunus.Tensor, np.ndarray)):
        if not isinstance(b, prunus.Tensor):
            return False
        x = np.asarray(a.detach() if isinstance(a, prunus.Tensor) else a)
        y = np.asarray(b)
        return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and list(a.keys()) == list(b.keys())
            and all(type(k1) is type(k2) for k1, k2 in zip(a, b))
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float):
        return type(b) is float and (
            struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
        )
    return type(a) is type(b) and a == b


def roundtrip(obj, path, **kw):
    prunus.save(obj, path)
    return prunus.load(path, **kw)


# -- round trips -------------------------------------------------------------------------------


def test_roundtrip_every_dtype_and_container(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {np.dtype(d).name: (rng.standard_normal((3, 2)) * 50).astype(d) for d in NP_DTYPES}
    obj = {
        "tensors": {k: prunus.tensor(v) for k, v in arrays.items()},
        "numpy": arrays,
        "scalar": prunus.tensor(2.5),
        "empty": prunus.zeros(0, 3),
        "rows": [
            1,
            -(2**70),
            2.5,
            -0.0,
            float("nan"),
            float("inf"),
            -float("inf"),
            True,
            None,
            "s",
            "",
        ],
        "tup": (1, (2.0, [prunus.ones(2)])),
        7: {
            None: 1,
            1.5: "x",
            True: [],
            "tensor": {"tensor": "fake"},
        },  # a user dict that looks like a reference
        "od": OrderedDict([("b", 1), ("a", 2)]),
        "a.b": prunus.ones(1),
        "a": {"b": prunus.zeros(1)},  # flattens to the same name as "a.b": must stay distinct
    }
    back = roundtrip(obj, tmp_path / "c.safetensors")
    assert same(obj, back)
    assert (
        back["tensors"]["bfloat16"].dtype is prunus.bfloat16
        and back["tensors"]["bool"].dtype is prunus.bool_
    )
    assert back["scalar"].shape == () and back["empty"].shape == (0, 3)
    assert type(back["od"]) is dict and list(back["od"]) == ["b", "a"]


def test_top_level_leaves(tmp_path):
    for obj in (prunus.arange(5), 3, None, "x", [], {}):
        assert same(obj, roundtrip(obj, tmp_path / "x.st"))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True),
    st.text(max_size=8),
)


@st.composite
def _tensors(draw):
    dt = np.dtype(draw(st.sampled_from(NP_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    raw = draw(
        st.binary(
            min_size=int(np.prod(shape)) * dt.itemsize, max_size=int(np.prod(shape)) * dt.itemsize
        )
    )
    arr = np.frombuffer(raw, dtype=np.uint8).copy()
    if dt == np.bool_:
        arr &= 1  # bools are 0/1 bytes; any bit pattern is fine for the others (NaN payloads too)
    arr = arr.view(dt).reshape(shape)
    return arr if draw(st.booleans()) else prunus.tensor(arr)


_keys = st.one_of(st.text(max_size=6), st.integers(-5, 5))
_trees = st.recursive(
    st.one_of(_scalars, _tensors()),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.lists(kids, max_size=4).map(tuple),
        st.dictionaries(_keys, kids, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trees)
def test_roundtrip_hypothesis(obj):
    with tempfile.TemporaryDirectory() as d:
        assert same(obj, roundtrip(obj, Path(d) / "h.safetensors"))


def test_unsupported_values_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "c.st"
    prunus.save({"ok": 1}, path)
    for bad, match in [
        ({"f": lambda: 0}, r"function at obj\['f'\]"),
        ({"s": {1, 2}}, "set"),
        ({(1, 2): 0}, "dict key"),
        ({"c": np.zeros(2, np.complex64)}, "complex64"),
    ]:
        with pytest.raises((ArgumentError, DTypeError), match=match):
            prunus.save(bad, path)
    assert prunus.load(path) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.st"]


def test_safetensors_bytes_is_the_one_writer(tmp_path):
    """serialization.safetensors_bytes (behind save and save_program): the safetensors layout (an
    8-byte little-endian header length, a JSON header with data offsets, the data) for every dtype,
    0-d and empty arrays; a file from prunus.save is exactly its header and data."""
    from prunus.serialization import _ST_DTYPE, safetensors_bytes

    arrays = {f"a{i}": np.arange(6).reshape(2, 3).astype(d) for i, d in enumerate(NP_DTYPES)}
    arrays |= {"scalar": np.asarray(np.float32(2.5)), "empty": np.zeros((0, 3), np.float64)}
    raw = safetensors_bytes(arrays, {"k": "v"})
    n, header = _header(raw)
    assert header.pop("__metadata__") == {"k": "v"} and (8 + n) % 8 == 0
    assert len(raw) == 8 + n + sum(a.nbytes for a in arrays.values())
    for k, a in arrays.items():
        start, end = header[k]["data_offsets"]
        assert header[k]["dtype"] == _ST_DTYPE[a.dtype.name] and header[k]["shape"] == list(a.shape)
        assert raw[8 + n + start : 8 + n + end] == a.tobytes()

    prunus.save(arrays, tmp_path / "c.safetensors")
    saved = (tmp_path / "c.safetensors").read_bytes()
    n, header = _header(saved)
    again = safetensors_bytes(arrays, header["__metadata__"])
    assert _header(again) == (n, header) and again[8 + n :] == saved[8 + n :]


# -- training resume ---------------------------------------------------------------------------


def _setup(seed):
    prunus.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
    )
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    sched = optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    return model, opt, sched


def _train(model, opt, sched, steps):
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        # data and dropout masks come from the default generator: the resume must restore it
        x = prunus.randn(8, 6)
        y = prunus.randint(0, 3, (8,))
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        sched.step()


def _state_bytes(model, opt):
    out = {k: np.asarray(v).tobytes() for k, v in model.state_dict().items()}
    for i, s in opt.state_dict()["state"].items():
        out.update(
            {
                f"opt.{i}.{k}": np.asarray(v).tobytes()
                for k, v in s.items()
                if isinstance(v, prunus.Tensor)
            }
        )
    return out


def test_resume_is_bit_identical(tmp_path):
    total, stop = 20, 7
    model, opt, sched = _setup(0)
    _train(model, opt, sched, total)
    straight = _state_bytes(model, opt)
    lr_straight = sched.get_last_lr()

    model, opt, sched = _setup(0)
    _train(model, opt, sched, stop)
    prunus.save(checkpoint(model, opt, sched, step=stop, epoch=0), tmp_path / "ckpt.safetensors")
    _train(model, opt, sched, 3)  # the run goes on (and its RNG moves) before it dies

    model, opt, sched = _setup(123)  # fresh objects, different init
    extra = restore(prunus.load(tmp_path / "ckpt.safetensors"), model, opt, sched)
    assert extra == {"step": stop, "epoch": 0}
    _train(model, opt, sched, total - extra["step"])
    assert _state_bytes(model, opt) == straight
    assert sched.get_last_lr() == lr_straight


def test_checkpoint_is_a_snapshot(tmp_path):
    model, opt, sched = _setup(0)
    _train(model, opt, sched, 2)
    ck = checkpoint(model, opt, sched)
    before = np.asarray(ck["optimizer"]["state"][0]["momentum_buffer"]).copy()
    _train(model, opt, sched, 1)  # updates the live momentum buffers in place
    assert np.array_equal(np.asarray(ck["optimizer"]["state"][0]["momentum_buffer"]), before)
    with pytest.raises(ArgumentError, match="reserved"):
        checkpoint(model, rng=1)
    with pytest.raises(ArgumentError, match="'optimizer'"):
        restore({"model": model.state_dict()}, model, opt)


def test_adam_state_with_tuples_roundtrips(tmp_path):
    prunus.manual_seed(1)
    p = nn.Parameter(prunus.randn(3, 2))
    opt = optim.Adam([p], lr=0.01, betas=(0.8, 0.95), amsgrad=True)
    for _ in range(3):
        opt.zero_grad()
        (p * p).sum().backward()
        opt.step()
    sd = roundtrip(opt.state_dict(), tmp_path / "a.st")
    assert same(opt.state_dict(), sd) and sd["param_groups"][0]["betas"] == (0.8, 0.95)
    q = nn.Parameter(prunus.zeros(3, 2))
    opt2 = optim.Adam([q], lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.01


def test_rng_state():
    prunus.manual_seed(5)
    state = prunus.get_rng_state()
    assert state.dtype is prunus.uint8 and state.shape == (40,)
    a = prunus.randn(4)
    prunus.set_rng_state(state)
    assert np.array_equal(np.asarray(prunus.randn(4)), np.asarray(a))
    prunus.set_rng_state(np.asarray(state).tobytes())
    assert np.array_equal(np.asarray(prunus.randn(4)), np.asarray(a))
    with pytest.raises(ArgumentError, match="40-byte"):
        prunus.set_rng_state(np.zeros(39, np.uint8))


# -- corruption and format errors --------------------------------------------------------------


def _header(raw: bytes):
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n])


def test_flipped_byte_names_the_tensor(tmp_path):
    path = tmp_path / "c.st"
    obj = {
        "w": prunus.randn(4, 4),
        "b": prunus.ones(4, dtype=prunus.bfloat16),
        "m": {"k": prunus.tensor([True, False])},
    }
    prunus.save(obj, path)
    raw = path.read_bytes()
    n, header = _header(raw)
    for name in ("w", "b", "m.k"):
        start, end = header[name]["data_offsets"]
        for pos in (start, end - 1):
            bad = bytearray(raw)
            bad[8 + n + pos] ^= 0x01
            path.write_bytes(bad)
            with pytest.raises(
                ChecksumError, match=rf"c\.st.*tensor '{name}' does not match its checksum"
            ):
                prunus.load(path)


def _write_raw(path, tensors: dict, metadata: dict):
    import safetensors.numpy

    safetensors.numpy.save_file(tensors, str(path), metadata=metadata)


def _meta(tree, **over):
    m = {
        "format": "prunus.checkpoint",
        "format_version": "1",
        "prunus_version": "0.1.0",
        "structure": json.dumps(tree),
    }
    m.update(over)
    return {k: v for k, v in m.items() if v is not None}


def _ref(name, arr, device="cpu"):
    return {"tensor": name, "crc32": f"{zlib.crc32(arr.tobytes()):08x}", "device": device}


@pytest.mark.parametrize(
    "case, match",
    [
        ("truncated", "not a valid safetensors file"),
        ("garbage", "not a valid safetensors file"),
        ("empty", "not a valid safetensors file"),
        ("bad_header_json", "not a valid safetensors file"),
        ("plain_safetensors", "not a prunus checkpoint"),
        ("newer_version", "format version '2', this prunus reads version 1.*upgrade prunus"),
        ("missing_tensor", "refers to tensor 'nope'.*does not contain"),
        ("unreferenced_tensor", "never refers to: x"),
        ("structure_not_json", "not valid JSON"),
        ("unknown_node", "unknown node '__class__'"),
        ("bare_list", "bare JSON list"),
        ("bad_reference", "tensor reference needs"),
        ("twice", "referenced twice"),
        ("nan_literal", "not valid JSON"),
    ],
)
def test_format_errors_name_the_file(tmp_path, case, match):
    path = tmp_path / "bad.safetensors"
    x = np.arange(6, dtype=np.float32)
    prunus.save({"x": x}, path)
    raw = path.read_bytes()
    if case == "truncated":
        path.write_bytes(raw[:-5])
    elif case == "garbage":
        path.write_text("this is not a checkpoint, just some text")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "bad_header_json":
        n, _ = _header(raw)
        path.write_bytes(raw[:8] + b"{" * n + raw[8 + n :])
    elif case == "plain_safetensors":
        _write_raw(path, {"x": x}, {})
    elif case == "newer_version":
        _write_raw(path, {"x": x}, _meta({"tensor": "x"}, format_version="2"))
    elif case == "missing_tensor":
        _write_raw(path, {"x": x}, _meta({"list": [_ref("x", x), _ref("nope", x)]}))
    elif case == "unreferenced_tensor":
        _write_raw(path, {"x": x}, _meta(None))
    elif case == "structure_not_json":
        _write_raw(path, {"x": x}, _meta(None, structure="{'x': 1"))
    elif case == "unknown_node":
        _write_raw(path, {"x": x}, _meta({"list": [_ref("x", x), {"__class__": "os.system"}]}))
    elif case == "bare_list":
        _write_raw(path, {"x": x}, _meta([_ref("x", x)]))
    elif case == "bad_reference":
        _write_raw(path, {"x": x}, _meta({"tensor": "x"}))
    elif case == "twice":
        _write_raw(path, {"x": x}, _meta({"list": [_ref("x", x), _ref("x", x)]}))
    elif case == "nan_literal":
        _write_raw(path, {"x": x}, _meta(None, structure='{"list": [NaN]}'))
    with pytest.raises(ModelFormatError, match=rf"(?s)bad\.safetensors.*{match}"):
        prunus.load(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such file"):
        prunus.load("/nonexistent/dir/x.safetensors")


# -- map_location ----------------------------------------------------------------------------------


def test_map_location_cpu(tmp_path):
    path = tmp_path / "c.st"
    prunus.save({"w": prunus.ones(2)}, path)
    for loc in (None, "cpu", prunus.device("cpu")):
        assert prunus.load(path, map_location=loc)["w"].device == prunus.device("cpu")
    with pytest.raises(ArgumentError, match="map_location"):
        prunus.load(path, map_location={"cuda:0": "cpu"})


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_saved_on_gpu_loads_on_cpu_with_map_location(tmp_path):
    path = tmp_path / "g.st"
    x = np.ones(3, np.float32)
    _write_raw(path, {"x": x}, _meta(_ref("x", x, device="cuda:0")))
    with pytest.raises(DeviceError, match="saved on 'cuda:0'.*map_location='cpu'"):
        prunus.load(path)
    assert prunus.load(path, map_location="cpu").device == prunus.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CuPy and a GPU")
def test_cuda_roundtrip(tmp_path):
    path = tmp_path / "g.st"
    obj = {
        "w": prunus.randn(3, 3, device="cuda"),
        "h": prunus.ones(2, dtype=prunus.bfloat16, device="cuda"),
        "c": prunus.arange(3),
    }
    prunus.save(obj, path)
    back = prunus.load(path)
    assert back["w"].device == prunus.device("cuda:0") and back["c"].device == prunus.device("cpu")
    assert same(obj, back)
    assert all(
        t.device == prunus.device("cpu") for t in prunus.load(path, map_location="cpu").values()
    )
    assert all(
        t.device == prunus.device("cuda:0") for t in prunus.load(path, map_location="cuda").values()
    )


# -- atomic writes -------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import prunus
    import prunus._fileio as F

    path, where = sys.argv[1], sys.argv[2]

    def stall():
        print("STALLED", flush=True)
        time.sleep(120)  # the parent kills us here

    if where == "mid_write":
        F._CHUNK = 1 << 16
        real_fdopen = os.fdopen

        class SlowFile:
            def __init__(self, f):
                self.f, self.n = f, 0
            def write(self, b):
                self.n += 1
                if self.n == 3:  # two chunks are on disk, the rest never comes
                    self.f.flush()
                    os.fsync(self.f.fileno())
                    stall()
                return self.f.write(b)
            def __getattr__(self, k):
                return getattr(self.f, k)
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

        os.fdopen = lambda fd, mode: SlowFile(real_fdopen(fd, mode))
    else:  # written and fsynced, killed before the rename
        os.replace = lambda *a: stall()
    prunus.save({"w": prunus.zeros(1 << 18), "version": "new"}, path)
    """
)


@pytest.mark.parametrize("where", ["mid_write", "before_rename"])
def test_killed_writer_leaves_previous_checkpoint(tmp_path, where):
    path = tmp_path / "ckpt.safetensors"
    old = {"w": prunus.arange(10), "version": "old"}
    prunus.save(old, path)
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "STALLED", child.stderr.read()
        temps = [p for p in tmp_path.iterdir() if p.name != path.name]
        assert len(temps) == 1 and temps[0].name.startswith(".ckpt.safetensors.")
        if where == "mid_write":
            assert 0 < temps[0].stat().st_size < (1 << 20)  # a partial file exists ...
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # ... but the checkpoint is the old one, complete, and loads
    assert path.read_bytes() == before
    assert same(old, prunus.load(path))
    # the next save replaces it and sweeps away the dead writer's temp file
    prunus.save({"version": "newer"}, path)
    assert prunus.load(path) == {"version": "newer"}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_failed_write_cleans_up(tmp_path, monkeypatch):
    import prunus._fileio as F

    path = tmp_path / "c.st"
    prunus.save({"v": 1}, path)
    monkeypatch.setattr(F.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        prunus.save({"v": 2}, path)
    monkeypatch.undo()
    assert prunus.load(path) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["c.st"]


def test_new_file_gets_normal_permissions(tmp_path):
    path = tmp_path / "c.st"
    prunus.save({"v": 1}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o600)
    prunus.save({"v": 2}, path)  # replacing keeps the mode the user chose
    assert path.stat().st_mode & 0o777 == 0o600
