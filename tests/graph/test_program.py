"""prunus.save_program / prunus.load_program: a compiled graph saved as one file that runs without
the model's Python code. Round trips (LeNet-300-100 and LeNet-5 inference bit for bit, training
steps that update their own weights, every op of the op table, control flow, return structures),
a fresh interpreter that imports only prunus and numpy, errors at save and at call, malformed files
one by one, and a seeded fuzz of mutated files that must raise only ModelFormatError/ChecksumError.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from file_fuzz import fuzz, json_paths, mutate_bytes, mutate_json
from op_db import OP_DB
from op_samples import outputs
from train_steps import cross_entropy_step

import prunus
import prunus.nn.functional as F
from prunus import models, nn, optim
from prunus.autograd import Op
from prunus.backend import cuda_is_available
from prunus.errors import (
    ArgumentError,
    ChecksumError,
    DTypeError,
    ModelFormatError,
    ShapeError,
)
from prunus.graph import Executor, Graph, Program, capture, load_program_bytes, save_program_bytes
from prunus.graph.program_format import FORMAT, FORMAT_VERSION, op_registry

REPO = Path(__file__).resolve().parents[2]


def _batches(n, batch=4, shape=(1, 28, 28), seed=0):
    rng = np.random.default_rng(seed)
    xs = [prunus.tensor(rng.standard_normal((batch, *shape)).astype(np.float32)) for _ in range(n)]
    ys = [prunus.tensor(rng.integers(0, 10, batch)) for _ in range(n)]
    return xs, ys


def _split(data: bytes):
    """A safetensors file as (header dict, data buffer)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, buf: bytes) -> bytes:
    # sorted keys: safetensors writes its metadata in a per-process hash order, the fuzz must not
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + buf


def _program_of(data: bytes) -> dict:
    return json.loads(_split(data)[0]["__metadata__"]["program"])


def _with_program(data: bytes, program, resign: bool = True) -> bytes:
    """`data` with its program JSON replaced (and its checksum recomputed, so the mutation reaches
    the structure checks instead of stopping at the checksum)."""
    header, buf = _split(data)
    text = program if isinstance(program, str) else json.dumps(program, separators=(",", ":"))
    header["__metadata__"]["program"] = text
    if resign:
        header["__metadata__"]["program_crc32"] = f"{zlib.crc32(text.encode('utf-8', 'surrogatepass')):08x}"
    return _join(header, buf)


@pytest.fixture(scope="module")
def small_program() -> bytes:
    prunus.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    c = prunus.compile(m)
    with prunus.no_grad():
        c(prunus.randn(2, 1, 6, 6))
    return save_program_bytes(c)


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["lenet_300_100", "lenet5"])
def test_inference_round_trip_is_bit_identical_to_eager(tmp_path, model):
    prunus.manual_seed(0)
    m = getattr(models, model)().eval()
    c = prunus.compile(m)
    xs, _ = _batches(3)
    with prunus.no_grad():
        c(xs[0])
        expected = [m(x).numpy() for x in xs]
    path = tmp_path / f"{model}.prunus"
    prunus.save_program(c, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # one file, no temp left behind
    prog = prunus.load_program(path)
    assert isinstance(prog, Program)
    for x, e in zip(xs, expected):
        np.testing.assert_array_equal(prog(x).numpy(), e)
    # the state tensors carry the model's names and values
    for name, p in m.named_parameters():
        np.testing.assert_array_equal(prog.state[name].numpy(), p.detach().numpy())
    # a plain safetensors reader sees the weights and the format
    tensors = safetensors.numpy.load_file(str(path))
    np.testing.assert_array_equal(tensors["fc1.weight"], m.fc1.weight.detach().numpy())
    meta = _split(path.read_bytes())[0]["__metadata__"]
    assert meta["format"] == FORMAT and meta["format_version"] == str(FORMAT_VERSION)
    assert meta["prunus_version"] == prunus.__version__


def test_example_inputs_pick_the_graph_and_grad_mode_is_found():
    prunus.manual_seed(0)
    m = models.lenet_300_100().eval()
    c = prunus.compile(m)
    a, b = prunus.randn(2, 784), prunus.randn(5, 784)
    with prunus.no_grad():
        c(a), c(b)
    # two cached graphs: without example inputs the choice is ambiguous
    with pytest.raises(ArgumentError, match="2 cached graphs"):
        save_program_bytes(c)
    # with them (outside no_grad, where the graphs were not traced) the no_grad graph is found
    prog = load_program_bytes(save_program_bytes(c, b))
    with prunus.no_grad():
        np.testing.assert_array_equal(prog(b).numpy(), m(b).numpy())
    with pytest.raises(ShapeError, match=r"captured for \(5, 784\)"):
        prog(a)


def _sgd_step(model_fn, seed=0, adam=False):
    prunus.manual_seed(seed)
    m = model_fn()
    if adam:
        opt = optim.Adam(m.parameters(), lr=1e-3, weight_decay=5e-4)
    else:
        opt = optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    step = cross_entropy_step(m, opt)

    return m, step


@pytest.mark.parametrize(("model", "adam"), [("lenet_300_100", False), ("lenet5", False),
                                           ("lenet_300_100", True)])
def test_training_step_program_updates_its_own_weights_like_eager(tmp_path, model, adam):
    m, step = _sgd_step(getattr(models, model), adam=adam)
    c = prunus.compile(step)
    xs, ys = _batches(5)
    c(xs[0], ys[0])
    c(xs[1], ys[1])  # the first step made the optimizer's buffers; this graph is the cached one
    path = tmp_path / "step.prunus"
    prunus.save_program(c, path, xs[1], ys[1], module=m)
    prog = prunus.load_program(path)
    # three more steps: eagerly on the model, and by the program on its own copy of the state
    eager = [step(xs[i], ys[i]).item() for i in (2, 3, 4)]
    loaded = [prog(xs[i], ys[i]).item() for i in (2, 3, 4)]
    assert loaded == eager
    for name, p in m.named_parameters():
        np.testing.assert_array_equal(prog.state[name].numpy(), p.detach().numpy(), err_msg=name)
    if adam:  # the program counts its own steps on (the bias corrections depend on them)
        counts = {k: v.item() for k, v in prog.state.items() if k.startswith("step of ")}
        assert counts and set(counts.values()) == {5.0}
    # the program dropped the .grad outputs: its parameters are its own state, not the model's
    assert prog.graph.grad_outputs == [] and prog.graph.cleared_grads == []


_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import prunus
    prog = prunus.load_program(sys.argv[1])
    x = prunus.tensor(np.load(sys.argv[2]))
    out = prog(x)
    np.testing.assert_array_equal(out["logits"].numpy(), np.load(sys.argv[3]))
    assert out["name"] == "tiny" and out["probs"][1] is None
    leaked = sorted(m for m in sys.modules if m.startswith(("tests", "test_", "op_db", "prunus.models")))
    assert not leaked, leaked
    print("OK", prog)
    """
)


class _TinyNet(nn.Module):
    """A model class only this test file defines: the fresh interpreter can't import it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        h = F.max_pool2d(self.conv(x).relu(), 2)
        logits = self.fc(h.flatten(1))
        return {"logits": logits, "probs": (logits.softmax(-1), None), "name": "tiny"}


def test_program_runs_in_a_fresh_interpreter_without_the_model_code(tmp_path):
    prunus.manual_seed(1)
    m = _TinyNet().eval()
    c = prunus.compile(m)
    x = prunus.randn(2, 1, 8, 8)
    with prunus.no_grad():
        c(x)
        expected = m(x)["logits"].numpy()
    prunus.save_program(c, tmp_path / "tiny.prunus")
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", expected)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "tiny.prunus"), str(tmp_path / "x.npy"),
         str(tmp_path / "y.npy")],
        check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK Program(float32[2, 1, 8, 8]")


def _flat_arrays(x, out):
    if isinstance(x, prunus.Tensor):
        out.append(x.numpy())
    elif isinstance(x, (list, tuple)):
        for i in x:
            _flat_arrays(i, out)
    return out


def test_every_op_of_the_op_table_round_trips_forward_and_backward():
    """Each sample of each op, with its gradients in the same graph: the loaded program gives
    what the captured graph gives, so every attr the ops use survives the file."""
    checked = 0
    seen_ops: set = set()
    for info in OP_DB:
        for k, s in enumerate(info.samples()):
            leaves, fn = s.bind(info.op, "prunus", "float64")

            def f(*ls, fn=fn, diff=info.differentiable):
                outs = [o for o in outputs(fn(*ls)) if o is not None]
                floats = [o for o in outs if o.requires_grad]
                if diff and floats:
                    total = sum((o * 1.5).sum() for o in floats)
                    return [o.detach() for o in outs], list(prunus.autograd.grad(total, ls, allow_unused=True))
                return outs

            try:
                g, _, _ = capture(f, *leaves)
            except prunus.errors.CaptureError:  # e.g. getitem with a tensor slice bound (.item())
                continue
            prog = load_program_bytes(save_program_bytes(g))
            want = _flat_arrays(Executor(g).run(leaves, {}), [])
            got = _flat_arrays(prog(*[t.detach() for t in leaves]), [])
            assert len(got) == len(want), f"{info.name} sample {k}"
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b, err_msg=f"{info.name} sample {k}")
            seen_ops.update(n.name for n in g.nodes)
            checked += 1
    assert checked > 500
    assert {"Index", "IndexBackward", "Cast", "Conv2d", "AvgPool2d", "MaxPool2dScatter"} <= seen_ops


def test_control_flow_round_trips_with_gradients_and_updates():
    rng = np.random.default_rng(0)
    W = prunus.tensor(rng.standard_normal((3, 3)), requires_grad=True)
    V = prunus.tensor(rng.standard_normal((3, 3)), requires_grad=True)

    def step(x):
        h = x @ V
        y = prunus.cond(x.sum() > 0, lambda a: (a @ W + h).tanh(), lambda a: (a * 3.0) @ W.T - h, x)
        _, v = prunus.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 1.5 + 1.0), (prunus.tensor(0), y))
        loss = (v * v).sum()
        loss.backward()
        with prunus.no_grad():
            W.sub_(0.01 * W.grad)
            V.sub_(0.01 * V.grad)
        return loss

    c = prunus.compile(step)
    c(prunus.tensor(rng.random((2, 3))))
    W.grad = V.grad = None
    prog = load_program_bytes(save_program_bytes(c))
    nodes = {n.name for n in prog.graph.nodes}
    assert {"Cond", "WhileLoop", "WhileLoopGrad"} <= nodes
    xs = [prunus.tensor(s * rng.random((2, 3))) for s in (1, -1, 1, -1)]  # both branches
    loaded = [prog(x).item() for x in xs]
    eager = []
    for x in xs:
        W.grad = V.grad = None
        eager.append(step(x).item())
    assert loaded == eager


def test_return_structures_keywords_and_special_values_round_trip():
    w = prunus.tensor(np.arange(6.0).reshape(2, 3))

    def f(x, *, scale):
        y = (x * w * scale).clamp(min=-math.inf, max=4.0)
        return {"y": y, "rest": (y.sum(), [None, math.nan, -math.inf, "s", True, 3]), 7: y.to(prunus.int32)}

    c = prunus.compile(f)
    x, s = prunus.ones(2, 3), prunus.tensor(2.0)
    with prunus.no_grad():
        c(x, scale=s)
    prog = load_program_bytes(save_program_bytes(c))
    got, want = prog(x, scale=s), f(x, scale=s)
    assert list(got) == ["y", "rest", 7]
    np.testing.assert_array_equal(got["y"].numpy(), want["y"].numpy())
    np.testing.assert_array_equal(got[7].numpy(), want[7].numpy())
    assert got[7].dtype is prunus.int32
    lits = got["rest"][1]
    assert isinstance(lits, list) and lits[0] is None and math.isnan(lits[1])
    assert lits[2:] == [-math.inf, "s", True, 3]
    # a loaded program saves again, names and all
    again = load_program_bytes(save_program_bytes(prog))
    np.testing.assert_array_equal(again(x, scale=s)["y"].numpy(), want["y"].numpy())
    assert again.state.keys() == prog.state.keys()


def test_program_checks_its_arguments():
    c = prunus.compile(lambda a, b: a @ b)
    a, b = prunus.ones(2, 3), prunus.ones(3, 4)
    c(a, b)
    prog = load_program_bytes(save_program_bytes(c))
    np.testing.assert_array_equal(prog(a.numpy(), b).numpy(), np.full((2, 4), 3.0, np.float32))
    with pytest.raises(ArgumentError, match="2 positional"):
        prog(a)
    with pytest.raises(ShapeError, match=r"argument 1 has shape \(4, 3\)"):
        prog(a, prunus.ones(4, 3))
    with pytest.raises(DTypeError, match="float64"):
        prog(a, prunus.ones(3, 4, dtype=prunus.float64))
    with pytest.raises(ArgumentError, match="must be a Tensor"):
        prog(a, [[1.0] * 4] * 3)


def test_non_tensor_arguments_are_fixed_and_tensor_arguments_renumbered():
    c = prunus.compile(lambda k, x, m, y: x * k + y * m)
    x, y = prunus.ones(3), prunus.full((3,), 2.0)
    c(2.0, x, 10, y)
    prog = load_program_bytes(save_program_bytes(c))
    np.testing.assert_array_equal(prog(x, y).numpy(), [22.0, 22.0, 22.0])


def test_map_location(small_program):
    prog = load_program_bytes(small_program, map_location="cpu")
    assert prog.device is prunus.device("cpu")
    with pytest.raises(ArgumentError, match="map_location"):
        load_program_bytes(small_program, map_location=3)
    with pytest.raises(ArgumentError, match="expected bytes"):
        load_program_bytes("a path, not bytes")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_is_available(), reason="needs CuPy and a GPU")
def test_programs_move_between_cpu_and_cuda():
    prunus.manual_seed(0)
    m = models.lenet5().eval()
    c = prunus.compile(m)
    x = prunus.randn(4, 1, 28, 28)
    with prunus.no_grad():
        c(x)
        want = m(x).numpy()
    prog = load_program_bytes(save_program_bytes(c), map_location="cuda")
    assert prog.device is prunus.device("cuda:0")
    np.testing.assert_allclose(prog(x.to("cuda")).cpu().numpy(), want, rtol=1e-4, atol=1e-5)
    # a program captured on the GPU loads back there, or on the CPU
    mc = models.lenet5().eval().to("cuda")
    cc = prunus.compile(mc)
    with prunus.no_grad():
        cc(x.to("cuda"))
        want = mc(x.to("cuda")).cpu().numpy()
    data = save_program_bytes(cc)
    assert load_program_bytes(data).device is prunus.device("cuda:0")
    np.testing.assert_allclose(load_program_bytes(data, map_location="cpu")(x).numpy(), want, rtol=1e-4, atol=1e-5)


# -- what a program refuses to hold ---------------------------------------------------------------


def test_graphs_that_read_live_gradients_are_refused():
    w = prunus.ones(3, requires_grad=True)
    w.grad = prunus.full((3,), 2.0)
    c = prunus.compile(lambda x: w * x + w.grad)  # reads the .grad that exists before the call
    with prunus.no_grad():
        c(prunus.ones(3))
    assert "grad" in c.last_graph.summary()["values"]
    with pytest.raises(ArgumentError, match=r"gradient the graph reads live from a parameter's \.grad"):
        save_program_bytes(c)


class _Cube(Op):
    def forward(self, x):
        return x * x * x


def test_ops_outside_prunus_and_code_in_attributes_are_refused(tmp_path):
    c = prunus.compile(lambda x: _Cube.apply(x))
    c(prunus.ones(2))
    with pytest.raises(ArgumentError, match=r"test_program\._Cube, which is not one of prunus's ops"):
        save_program_bytes(c)

    gen = prunus.Generator().manual_seed(3)
    d = prunus.compile(lambda x: F.dropout(x, 0.5, training=True, generator=gen))
    d(prunus.ones(4))
    path = tmp_path / "old.prunus"
    path.write_bytes(b"the previous file")
    with pytest.raises(ArgumentError, match=r"node 0 \(Dropout\) attribute 'generator'.*Generator"):
        prunus.save_program(d, path)
    assert path.read_bytes() == b"the previous file"  # nothing written, nothing half-written
    assert [p.name for p in tmp_path.iterdir()] == ["old.prunus"]
    # dropout drawing from the default generator is fine, and draws a fresh mask on each call
    e = prunus.compile(lambda x: F.dropout(x, 0.5, training=True))
    e(prunus.ones(1000))
    prunus.save_program(e, path)  # replaces the old file whole
    assert [p.name for p in tmp_path.iterdir()] == ["old.prunus"]
    prog = prunus.load_program(path)
    a, b = prog(prunus.ones(1000)).numpy(), prog(prunus.ones(1000)).numpy()
    assert set(np.unique(a)) <= {0.0, 2.0} and not np.array_equal(a, b)


def test_what_save_program_accepts():
    c = prunus.compile(lambda x: x + 1)
    with pytest.raises(ArgumentError, match="holds 0 cached graphs"):
        save_program_bytes(c)
    with pytest.raises(ArgumentError, match="expected a prunus.compile result"):
        save_program_bytes(lambda x: x)
    # example inputs that were never traced: the call traces them
    prog = load_program_bytes(save_program_bytes(c, prunus.ones(2)))
    np.testing.assert_array_equal(prog(prunus.ones(2)).numpy(), [2.0, 2.0])
    # a Graph straight from capture
    g, _, _ = capture(lambda x: x * 3, prunus.ones(2))
    np.testing.assert_array_equal(load_program_bytes(save_program_bytes(g))(prunus.ones(2)).numpy(), [3.0, 3.0])


def test_every_attr_form_round_trips_exactly():
    from prunus.graph.program_read import _Checker
    from prunus.graph.program_write import _Writer
    from prunus.ops.conv import Geom

    geo = Geom(2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 8, 10, 10, True)
    attrs = [None, True, 0, -7, 2**62, 0.1, -0.0, 1e-300, math.inf, -math.inf, "s", "", (1, (2, [3])),
             [], (), slice(None, 5, 2), slice(-1, None, None), Ellipsis, geo, prunus.float16,
             prunus.bfloat16, np.dtype(np.int8), np.float32(0.1), np.float16(-65504), np.int8(-128),
             np.uint8(255), np.bool_(True), np.float64(math.inf), prunus.device("cpu")]
    g = Graph()
    g.device = prunus.device("cpu")
    w = _Writer(g, {})
    encoded = json.loads(json.dumps([w.attr(a, "test", 0) for a in attrs], allow_nan=False))
    c = _Checker("test")
    decoded = [c.attr(e, "test", 0, (0, 0, [])) for e in encoded]
    for a, d in zip(attrs, decoded):
        if isinstance(a, prunus.Device):
            assert d.name == "cpu"  # resolved when the program is built
        else:
            assert type(d) is type(a) and repr(d) == repr(a), (a, d)
    nan = c.attr(w.attr(math.nan, "t", 0), "t", 0, (0, 0, []))
    assert math.isnan(nan)
    for bad in [{1: 2}, object(), lambda: 0, b"bytes", 1j, slice(0.5, 1)]:
        with pytest.raises(ArgumentError, match="test"):
            w.attr(bad, "test", 0)


# -- malformed files, one by one ------------------------------------------------------------------


def _edit(data, fn):
    p = _program_of(data)
    fn(p)
    return _with_program(data, p)


def _node_index(p, op):
    return next(i for i, n in enumerate(p["nodes"]) if n["op"] == op)


def _nested_tuple(depth):
    x = 1
    for _ in range(depth):
        x = {"tuple": [x]}
    return x


def _nested_graph(depth):
    """A chain of Cond ops, each holding the next as its true_graph."""
    x = None
    for _ in range(depth):
        node = {"op": "Cond", "inputs": [], "output": 0, "needs_input_grad": [], "grad_enabled": False,
                "mutates": [], "attrs": {"true_graph": x}}
        value = {"kind": "node", "dtype": "float32", "shape": [], "requires_grad": False, "name": None, "node": 0}
        x = {"graph": {"values": [value], "nodes": [node], "inputs": [], "outputs": [0]}}
    return x


MALFORMED = {
    "unknown op": (lambda d: _edit(d, lambda p: p["nodes"][0].update(op="os.system")), ModelFormatError,
                   r"nodes\[0\]\.op: unknown op 'os.system'"),
    "private base class": (lambda d: _edit(d, lambda p: p["nodes"][0].update(op="_InPlace")), ModelFormatError,
                           "unknown op '_InPlace'"),
    "newer format": (lambda d: _join({**_split(d)[0], "__metadata__": {**_split(d)[0]["__metadata__"],
                                      "format_version": "2"}}, _split(d)[1]),
                     ModelFormatError, "format version '2', this prunus reads version 1.*upgrade prunus"),
    "a checkpoint": (lambda d: _join({"__metadata__": {"format": "prunus.checkpoint"}}, b""), ModelFormatError,
                     "not a prunus program.*prunus.load"),
    "truncated": (lambda d: d[: len(d) - 10], ModelFormatError, r"outside the \d+-byte data buffer \(a truncated file"),
    "extra bytes": (lambda d: d + b"\0" * 8, ModelFormatError, r"the data buffer has \d+ bytes, the tensors use \d+"),
    "truncated header": (lambda d: d[:40], ModelFormatError, "header claims"),
    "empty": (lambda d: b"", ModelFormatError, "too short"),
    "not safetensors": (lambda d: b"PK\x03\x04" + bytes(100), ModelFormatError, "header claims"),
    "flipped weight": (lambda d: d[:-5] + bytes([d[-5] ^ 0x10]) + d[-4:], ChecksumError,
                       "does not match its checksum"),
    "program edited, checksum not": (lambda d: _with_program(d, _program_of(d) | {"device": "cpu "}, resign=False),
                                     ChecksumError, "the program does not match its checksum"),
    "value index out of range": (lambda d: _edit(d, lambda p: p["nodes"][1]["inputs"].__setitem__(0, 10**6)),
                                 ModelFormatError, r"nodes\[1\] \(\w+\)\.inputs\[0\]: expected an integer in \[0, "),
    "negative index": (lambda d: _edit(d, lambda p: p["outputs"].__setitem__(0, -1)), ModelFormatError,
                       r"outputs\[0\]"),
    "input used before it exists": (lambda d: _edit(d, lambda p: p["nodes"][0]["inputs"].__setitem__(0, p["nodes"][1]["output"])),
                                    ModelFormatError, "not before"),
    "node ref to a later node": (lambda d: _edit(d, lambda p: p["nodes"][0]["attrs"].update(fwd={"ref": {"node": 3}})),
                                 ModelFormatError, r"ref\.node: expected an integer in \[0, 0\)"),
    "input position": (lambda d: _edit(d, lambda p: p["values"][p["inputs"][0]].update(position=3)),
                       ModelFormatError, "argument positions"),
    "wrong JSON type": (lambda d: _edit(d, lambda p: p["values"][0].update(shape="2,1,6,6")), ModelFormatError,
                        r"values\[0\]\.shape: expected a JSON list, got a string"),
    "bool for int": (lambda d: _edit(d, lambda p: p["nodes"][0].update(output=True)), ModelFormatError,
                     r"\.output: expected an integer"),
    "missing key": (lambda d: _edit(d, lambda p: p["nodes"][0].pop("mutates")), ModelFormatError,
                    r"nodes\[0\]: missing \['mutates'\]"),
    "extra key": (lambda d: _edit(d, lambda p: p["values"][0].update(code="import os")), ModelFormatError,
                  r"unexpected \['code'\]"),
    "attr that doesn't fit forward": (lambda d: _edit(d, lambda p: p["nodes"][0]["attrs"].update(bogus=1)),
                                      ModelFormatError, "don't fit Conv2d.forward"),
    "unknown attr tag": (lambda d: _edit(d, lambda p: p["nodes"][0]["attrs"].update(geo={"pickle": "x"})),
                         ModelFormatError, "unknown or malformed attribute"),
    "geom field": (lambda d: _edit(d, lambda p: p["nodes"][0]["attrs"]["geo"]["geom"].update(kh=-1)),
                   ModelFormatError, r"geom\.kh: expected an integer >= 0"),
    "tensor shape": (lambda d: _edit(d, lambda p: p["tensors"]["0.weight"].update(shape=[2, 1, 3, 4])),
                     ModelFormatError, "the file stores float32"),
    "unlisted tensor": (lambda d: _edit(d, lambda p: p["tensors"].pop("0.bias")), ModelFormatError,
                        r"the file stores tensors the program does not list: \['0.bias'\]"),
    "dangling tensor name": (lambda d: _edit(d, lambda p: p["values"][1].update(tensor="nope")
                                              if p["values"][1]["kind"] == "state" else None), ModelFormatError,
                             r"values\[1\]\.tensor: 'nope' is not a tensor the file lists"),
    "NaN literal": (lambda d: _with_program(d, json.dumps(_program_of(d)).replace('"device": "cpu"', '"device": NaN')),
                    ModelFormatError, "not valid JSON"),
    "deep JSON": (lambda d: _with_program(d, "[" * 100000 + "]" * 100000), ModelFormatError, "not valid JSON"),
    "deep attr": (lambda d: _edit(d, lambda p: p["nodes"][0]["attrs"].update(geo=_nested_tuple(80))),
                  ModelFormatError, "nested deeper than 64 levels"),
    "deep subgraphs": (lambda d: _edit(d, lambda p: p["nodes"][0]["attrs"].update(geo=_nested_graph(40))),
                       ModelFormatError, "subgraphs nest deeper than 16 levels"),
    "np scalar out of range": (lambda d: _edit(d, lambda p: p["nodes"][0]["attrs"].update(geo={"np_scalar": ["float16", 10**400]})),
                               ModelFormatError, "is not a float16 number"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_raise_format_errors_naming_the_problem(small_program, case):
    make, cls, msg = MALFORMED[case]
    data = make(small_program)
    with pytest.raises(cls, match=msg) as info:
        load_program_bytes(data)
    assert isinstance(info.value, ModelFormatError)


def test_load_program_names_the_file_and_missing_files(tmp_path, small_program):
    path = tmp_path / "bad.prunus"
    path.write_bytes(small_program[:100])
    with pytest.raises(ModelFormatError, match=r"load_program\('.*bad.prunus'\)"):
        prunus.load_program(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        prunus.load_program(tmp_path / "missing.prunus")


def test_loading_runs_no_code_from_the_file(small_program, monkeypatch):
    """No eval/exec, no unpickling, no module imported while loading, whatever the file says."""
    op_registry()  # built from prunus's own modules once, before any file is read

    def refuse(*a, **k):
        raise AssertionError("loading a program ran code")

    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    before = set(sys.modules)
    prog = load_program_bytes(small_program)
    for bad in ("os.system", "builtins.eval", "__import__", "subprocess.Popen"):
        with pytest.raises(ModelFormatError, match="unknown op"):
            load_program_bytes(_edit(small_program, lambda p, bad=bad: p["nodes"][0].update(op=bad)))
    monkeypatch.undo()
    assert set(sys.modules) == before
    assert prog(prunus.randn(2, 1, 6, 6)).shape == (2, 3)


def test_the_op_vocabulary_is_closed_and_complete():
    reg = op_registry()
    assert {"Linear", "Conv2d", "SGDUpdate", "CrossEntropyBackward", "Dropout", "Cond"} <= reg.keys()
    assert all(cls.__module__.startswith(("prunus.ops.", "prunus.graph.control_flow")) for cls in reg.values())
    assert not any(name.startswith("_") for name in reg)


# -- fuzz ------------------------------------------------------------------------------------------


def _rich_program() -> bytes:
    """A training step whose file holds most of the format: conv geometry, refs to ops and their
    saved arrays, in-place updates, an array attr, slices/Ellipsis/None, a dtype, non-finite
    floats, a keyword argument and a nested return value."""
    prunus.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step(x, y, *, scale):
        opt.zero_grad()
        z = net(x)
        loss = F.cross_entropy(z, y)
        loss.backward()
        opt.step()
        zd = z.detach()
        picked = zd[:, [0, 2]][..., None, 1:].to(prunus.float64) * scale
        pooled = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        return {"loss": loss, "more": (picked, pooled.clamp(max=math.inf), 1.5, math.nan, None, "s")}

    c = prunus.compile(step)
    rng = np.random.default_rng(0)
    x = prunus.tensor(rng.standard_normal((2, 1, 6, 6)).astype(np.float32))
    y, s = prunus.tensor([0, 2]), prunus.tensor(0.5, dtype=prunus.float64)
    c(x, y, scale=s)
    c(x, y, scale=s)
    return save_program_bytes(c, module=net)


_POOL = [None, True, False, 0, 1, -1, 2, 7, 2**31, 2**63, 10**30, 0.5, -2.5, 1e308, "", "x", "input",
         "node", "state", "const", "saved", "float32", "int64", "bfloat16", "Linear", "SGDUpdate",
         "NoSuchOp", "__import__", "os.system", [], [0], [0, 1], [[]], {}, {"ref": {"node": 0}},
         {"ref": {"value": 999}}, {"ref": {"node": 0, "attr": "idx"}}, {"float": "nan"}, {"float": "NaN"},
         {"tuple": []}, {"list": [1, {"slice": [None, None, 0]}]}, {"array": "#0"}, {"array": "fc"},
         {"graph": {}}, {"graph": {"values": [], "nodes": [], "inputs": [], "outputs": [0]}},
         {"geom": {}}, {"out": 0}, {"out": 99}, {"lit": 1}, {"dict": [[1]]}, {"np_scalar": ["int8", 300]},
         {"np_scalar": ["float16", 1e300]}, {"np_scalar": ["bool", 1]}, {"dtype": "float128"},
         {"device": "cuda:x"}, {"ellipsis": 1}]


_KEYS = ["extra", "kind", "op", "node", "value", "float", "tuple"]


class _Fuzzer:
    """Mutated copies of one valid program file, by kind: 0 byte flips, 1 truncation, 2 bytes
    inserted or deleted, 3-6 edits of the program JSON (re-signed, so that they reach the checks
    behind its checksum), 7 edits of the safetensors header and metadata. The base's JSON and the
    paths into it are parsed once: the fuzz spends its time loading, not mutating."""

    KINDS = 8

    def __init__(self, data: bytes, seed: int):
        self.data = data
        self.rng = np.random.default_rng(seed)
        self.header, self.buf = _split(data)
        self.header_len = len(data) - len(self.buf)
        self.meta = self.header["__metadata__"]
        self.text = self.meta["program"]
        self.paths = json_paths(json.loads(self.text))
        self.header_text = json.dumps(self.header)
        self.header_paths = json_paths(self.header)
        self.ops = sorted(op_registry())

    def mutate(self, kind: int) -> bytes:
        rng, data = self.rng, self.data
        if kind < 3:  # byte flips (half in the header), a truncation, bytes in or out
            return mutate_bytes(rng, data, kind, self.header_len)
        if kind < 7:
            p = json.loads(self.text)
            for _ in range(1 if kind < 6 else 3):
                p = mutate_json(rng, p, self.paths, _POOL, _KEYS, self.ops)
            text = json.dumps(p, separators=(",", ":"))
            crc = f"{zlib.crc32(text.encode('utf-8', 'surrogatepass')):08x}"
            return _join({**self.header, "__metadata__": {**self.meta, "program": text, "program_crc32": crc}},
                         self.buf)
        header = mutate_json(rng, json.loads(self.header_text), self.header_paths, _POOL, _KEYS, self.ops)
        return _join(header if isinstance(header, dict) else {"__metadata__": header}, self.buf)


def test_fuzzed_files_raise_only_format_errors():
    base = _join(*_split(_rich_program()))  # the same bytes in every process
    prog = load_program_bytes(base)  # the base itself is valid
    assert {"array"} <= {next(iter(a)) for n in _program_of(base)["nodes"] for a in n["attrs"].values()
                         if isinstance(a, dict)}
    del prog
    fuzzer = _Fuzzer(base, seed=20261130)
    n_files = 10_000
    outcomes, summary, unexpected = fuzz(load_program_bytes, fuzzer, n_files, ModelFormatError, 300)
    types = {o for _, o in outcomes}
    print(summary)
    assert types <= {"loaded", "ModelFormatError", "ChecksumError"}, (unexpected, summary)
    # the mutations bite: truncations, insertions and deletions are always caught, most other
    # damage too (a flip in an informative field, like the prunus_version key, may load)
    assert sum(v for (k, o), v in outcomes.items() if k in (1, 2) and o == "loaded") == 0, summary
    assert sum(v for (k, o), v in outcomes.items() if k == 0 and o == "loaded") < 10, summary
    rejected = sum(v for (_, o), v in outcomes.items() if o != "loaded")
    assert rejected > 0.8 * n_files, summary
    # and every flipped bit in the tensor data is a checksum error
    header_len = len(base) - len(_split(base)[1])
    rng = np.random.default_rng(7)
    for _ in range(200):
        b = bytearray(base)
        b[int(rng.integers(header_len, len(b)))] ^= 1 << int(rng.integers(8))
        with pytest.raises(ChecksumError):
            load_program_bytes(bytes(b))
