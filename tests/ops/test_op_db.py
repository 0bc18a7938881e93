"""Runs every record of the op table (tests/op_db.py, inputs from tests/op_samples.py) through:

1. forward values (and dtypes) vs PyTorch, float32 and float64;
2. gradients vs `torch.autograd.grad` with a random cotangent, float32 and float64;
3. a float64 numerical gradient check with `prunus.autograd.gradcheck` (no torch needed);
4. second derivatives, for records that declare them: the gradient of (grad . w) with respect
   to the inputs and the cotangent (create_graph=True), vs torch's double backward, and
   numerically with gradcheck (no torch needed).

Plus negative controls: ops whose backward (or backward's backward) is 1% off must be caught by
the torch helpers and by gradcheck. Tests that need torch skip without it; this module never
imports torch at import time.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from op_db import OP_DB, OpInfo, T
from op_samples import Arr, SampleInput, outputs

import prunus
from prunus.autograd import Op, gradcheck
from prunus.errors import GradcheckError

DTYPES = ("float32", "float64")
DIFF = [r for r in OP_DB if r.differentiable]
GRADGRAD = [r for r in DIFF if r.gradgrad]


def _params(records, dtypes=DTYPES):
    return [
        pytest.param(r, d, id=f"{r.name}-{d}") for r in records for d in dtypes if d in r.dtypes
    ]


def _rng(info, k, salt=""):
    return np.random.default_rng(zlib.crc32(f"{info.name}/{k}/{salt}".encode()))


def _np(t, lib):
    """A tensor's values as a NumPy array (None stays None)."""
    if t is None:
        return None
    if lib == "torch":
        if t._is_zerotensor():  # torch's symbolic zeros (abs's double backward) refuse numpy()
            return np.zeros(t.shape, dtype=str(t.dtype).removeprefix("torch."))
        return t.detach().numpy()
    return np.asarray(t.detach().numpy())


def _dtype_name(t, lib):
    return str(t.dtype).removeprefix("torch.") if lib == "torch" else t.dtype.name


def _close(p, t, tol, what):
    """Assert prunus array p equals torch array t within tol=(rtol, atol)."""
    p, t = np.asarray(p), np.asarray(t)
    assert p.shape == t.shape, f"{what}: shape {p.shape} (prunus) vs {t.shape} (torch)"
    if p.dtype.kind in "biu" or t.dtype.kind in "biu":
        np.testing.assert_array_equal(p, t, err_msg=what)
    else:
        rtol, atol = tol
        np.testing.assert_allclose(p, t, rtol=rtol, atol=atol, err_msg=what)


def _where(info, sample, dtype):
    return f"{info.name} [{sample.desc}] {dtype}"


# -- the helpers (also used by the negative controls) --------------------------------------------


def check_forward(info: OpInfo, sample: SampleInput, dtype: str):
    """Forward values, shapes and dtypes of prunus vs torch on the same inputs."""
    pl, pfn = sample.bind(info.op, "prunus", dtype)
    tl, tfn = sample.bind(info.ref, "torch", dtype)
    pout, tout = outputs(pfn(*pl)), outputs(tfn(*tl))
    where = _where(info, sample, dtype)
    assert len(pout) == len(tout), f"{where}: {len(pout)} outputs (prunus) vs {len(tout)} (torch)"
    for k, (p, t) in enumerate(zip(pout, tout)):
        assert isinstance(p, prunus.Tensor), f"{where}: output {k} is a {type(p).__name__}"
        assert _dtype_name(p, "prunus") == _dtype_name(t, "torch"), (
            f"{where}: output {k} dtype {p.dtype.name} (prunus) vs {t.dtype} (torch)"
        )
        _close(_np(p, "prunus"), _np(t, "torch"), info.fwd_tol[dtype], f"{where}: output {k}")


def _diff_outputs(outs):
    return [o for o in outs if o.requires_grad]


def check_grad_vs_torch(info: OpInfo, sample: SampleInput, dtype: str, rng):
    """Vector-Jacobian products of prunus vs torch.autograd.grad for one random cotangent."""
    import torch

    pl, pfn = sample.bind(info.op, "prunus", dtype)
    tl, tfn = sample.bind(info.ref, "torch", dtype)
    if not pl:
        return
    where = _where(info, sample, dtype)
    pout, tout = outputs(pfn(*pl)), outputs(tfn(*tl))
    assert [o.requires_grad for o in pout] == [o.requires_grad for o in tout], (
        f"{where}: which outputs require grad differs: prunus {[o.requires_grad for o in pout]}, "
        f"torch {[o.requires_grad for o in tout]}"
    )
    pout, tout = _diff_outputs(pout), _diff_outputs(tout)
    if not tout:
        return
    vs = [rng.standard_normal(o.shape).astype(dtype) for o in tout]
    # non-contiguous cotangents on the prunus side: backward rules must not assume a layout
    pg = prunus.autograd.grad(pout, pl, [_strided_tensor(v) for v in vs], allow_unused=True)
    tg = torch.autograd.grad(tout, tl, [torch.tensor(v) for v in vs], allow_unused=True)
    for k, (p, t, leaf) in enumerate(zip(pg, tg, tl)):
        if p is not None:
            assert p.dtype.name == dtype, f"{where}: gradient of input {k} is {p.dtype.name}"
        p = np.zeros(leaf.shape) if p is None else _np(p, "prunus")
        t = np.zeros(leaf.shape) if t is None else _np(t, "torch")
        _close(p, t, info.grad_tol[dtype], f"{where}: gradient of input {k}")
    # the same gradients through Tensor.backward into .grad (accumulated over two calls)
    pl, pfn = sample.bind(info.op, "prunus", dtype)
    for _ in range(2):
        pout = _diff_outputs(outputs(pfn(*pl)))
        prunus.autograd.backward(pout, [prunus.tensor(v) for v in vs])
    for k, (leaf, t) in enumerate(zip(pl, tg)):
        t = np.zeros(leaf.shape) if t is None else _np(t, "torch")
        p = np.zeros(leaf.shape) if leaf.grad is None else _np(leaf.grad, "prunus")
        _close(p, 2 * t, info.grad_tol[dtype], f"{where}: .grad of input {k} after two backward()")


def _strided_tensor(v):
    """A prunus tensor with the values of v whose data is a strided (non-contiguous) view."""
    big = np.zeros(v.shape + (2,), dtype=v.dtype)
    big[..., 0] = v
    return prunus.tensor(big)[..., 0]


def _second_order(lib, outs, leaves, vs, ws, make):
    """d(grad . w)/d(leaves, v) with grad = d(outs . v)/d(leaves), in `lib`."""
    if lib == "torch":
        import torch

        grad = torch.autograd.grad
    else:
        grad = prunus.autograd.grad
    v = [make(x, True) for x in vs]
    g = grad(outs, leaves, v, create_graph=True, allow_unused=True)
    s = None
    for gi, wi in zip(g, ws):
        if gi is not None:
            term = (gi * make(wi, False)).sum()
            s = term if s is None else s + term
    if s is None or not s.requires_grad:
        return None
    return grad(s, list(leaves) + v, allow_unused=True)


def check_gradgrad_vs_torch(info: OpInfo, sample: SampleInput, dtype: str, rng):
    """Second derivatives (double backward) of prunus vs torch: the gradient of grad(out . v) . w
    with respect to the inputs and to v."""
    import torch

    pl, pfn = sample.bind(info.op, "prunus", dtype)
    tl, tfn = sample.bind(info.ref, "torch", dtype)
    if not pl:
        return
    where = _where(info, sample, dtype)
    pout, tout = _diff_outputs(outputs(pfn(*pl))), _diff_outputs(outputs(tfn(*tl)))
    if not tout:
        return
    vs = [rng.standard_normal(o.shape).astype(dtype) for o in tout]
    ws = [rng.standard_normal(t.shape).astype(dtype) for t in tl]

    def pmake(a, rg):
        return prunus.tensor(a, requires_grad=rg)

    def tmake(a, rg):
        return torch.tensor(a, requires_grad=rg)

    tgg = _second_order("torch", tout, tl, vs, ws, tmake)
    pgg = _second_order("prunus", pout, pl, vs, ws, pmake)
    assert pgg is not None or tgg is None, (
        f"{where}: the gradient made with create_graph=True has no graph"
    )
    shapes = [t.shape for t in tl] + [v.shape for v in vs]
    # torch's first gradient may be a constant (sign's zeros): all its second derivatives are 0
    tgg = tgg or (None,) * len(shapes)
    pgg = pgg or (None,) * len(shapes)
    for k, (p, t, shape) in enumerate(zip(pgg, tgg, shapes)):
        p = np.zeros(shape) if p is None else _np(p, "prunus")
        t = np.zeros(shape) if t is None else _np(t, "torch")
        name = f"input {k}" if k < len(tl) else f"cotangent {k - len(tl)}"
        _close(p, t, info.grad_tol[dtype], f"{where}: second derivative w.r.t. {name}")


def _float_outputs(out):
    return tuple(o for o in outputs(out) if o.dtype.is_floating_point)


def run_gradcheck(info: OpInfo, sample: SampleInput, raise_exception=True):
    """prunus.autograd.gradcheck of the op at the sample, float64, no torch."""
    leaves, fn = sample.bind(info.op, "prunus", "float64")
    if not leaves:
        return True
    return gradcheck(
        lambda *ls: _float_outputs(fn(*ls)),
        leaves,
        raise_exception=raise_exception,
        **info.gradcheck_kwargs,
    )


def run_gradgradcheck(info: OpInfo, sample: SampleInput, raise_exception=True):
    """gradcheck of the first gradient as a function of (inputs, cotangents): checks the second
    derivatives numerically, float64, no torch."""
    leaves, fn = sample.bind(info.op, "prunus", "float64")
    if not leaves:
        return True
    outs = _float_outputs(fn(*leaves))
    outs = [o for o in outs if o.requires_grad]
    if not outs:
        return True
    rng = np.random.default_rng(0)
    vs = [prunus.tensor(rng.standard_normal(o.shape), requires_grad=True) for o in outs]
    n = len(leaves)

    def first_grad(*args):
        with prunus.enable_grad():
            g = prunus.autograd.grad(
                _diff_outputs(_float_outputs(fn(*args[:n]))),
                list(args[:n]),
                list(args[n:]),
                create_graph=True,
                allow_unused=True,
            )
        return tuple(x for x in g if x is not None and x.requires_grad)

    if not first_grad(*leaves, *vs):
        return True
    return gradcheck(
        first_grad, list(leaves) + vs, raise_exception=raise_exception, **info.gradcheck_kwargs
    )


# -- the table itself -------------------------------------------------------------------------

# the ops the table must cover
REQUIRED = """
add sub mul div neg pow exp log log1p expm1 sqrt rsqrt abs sign clamp maximum minimum where sin
cos tanh sigmoid relu leaky_relu elu gelu softplus erf sum mean var std max min amax amin
logsumexp prod argmax argmin reshape view flatten squeeze unsqueeze transpose permute expand
broadcast_to cat stack split chunk pad flip repeat gather index_select masked_fill tril triu
getitem matmul softmax log_softmax remainder clone
""".split()  # noqa: SIM905


def test_table_covers_the_required_ops():
    names = [r.name for r in OP_DB]
    assert len(names) == len(set(names)), "duplicate record names"
    missing = sorted(set(REQUIRED) - set(names))
    assert not missing, f"ops without a record: {missing}"
    for name in ("tanh", "sigmoid", "exp", "log", "mul", "matmul", "softmax"):
        assert next(r for r in OP_DB if r.name == name).gradgrad, f"{name} must check gradgrad"


@pytest.mark.parametrize("info", OP_DB, ids=lambda r: r.name)
def test_record_is_well_formed(info):
    samples = info.samples()
    assert len(samples) >= 3, f"{info.name}: fewer than 3 sample inputs"
    for s in samples:
        for a in s.arrs():
            assert np.asarray(a.value).dtype == np.float64, (
                f"{info.name} [{s.desc}]: Arr must be float64"
            )
            assert np.all(np.isfinite(a.value)), f"{info.name} [{s.desc}]: non-finite input"
    if info.differentiable:
        sizes = [
            np.asarray(a.value).size
            for s in samples
            if s.gradcheck
            for a in s.arrs()
            if a.requires_grad
        ]
        assert sizes and max(sizes) <= 24, (
            f"{info.name}: gradcheck inputs must stay small (<= 24 elements)"
        )
    if info.binary:

        def two_shapes(s):
            shapes = [a.shape for a in s.arrs()]
            return len(shapes) >= 2 and len(set(shapes)) > 1

        def noncontig(s):
            return any(a.view is not None for a in s.arrs())

        assert any(two_shapes(s) for s in samples), f"{info.name}: no broadcasting sample"
        assert any(noncontig(s) for s in samples), f"{info.name}: no non-contiguous sample"


def test_samples_are_deterministic():
    a, b = OP_DB[0].samples(), OP_DB[0].samples()
    for x, y in zip(a, b):
        for u, v in zip(x.arrs(), y.arrs()):
            np.testing.assert_array_equal(u.value, v.value)


# -- 1. forward vs torch --------------------------------------------------------------------------


@pytest.mark.parametrize("info, dtype", _params(OP_DB))
def test_forward_vs_torch(info, dtype):
    pytest.importorskip("torch")
    for sample in info.samples():
        check_forward(info, sample, dtype)


# -- 2. gradients vs torch ----------------------------------------------------------------------


@pytest.mark.parametrize("info, dtype", _params(DIFF))
def test_grad_vs_torch(info, dtype):
    pytest.importorskip("torch")
    for k, sample in enumerate(info.samples()):
        check_grad_vs_torch(info, sample, dtype, _rng(info, k, dtype))


# -- 3. numerical gradient check, no torch -------------------------------------------------------


@pytest.mark.parametrize("info", DIFF, ids=lambda r: r.name)
def test_gradcheck(info):
    for sample in info.samples():
        if sample.gradcheck:
            try:
                run_gradcheck(info, sample)
            except GradcheckError as e:
                raise AssertionError(f"{info.name} [{sample.desc}]: {e}") from None


# -- 4. second derivatives -----------------------------------------------------------------------


@pytest.mark.parametrize("info, dtype", _params(GRADGRAD))
def test_gradgrad_vs_torch(info, dtype):
    pytest.importorskip("torch")
    for k, sample in enumerate(info.samples()):
        check_gradgrad_vs_torch(info, sample, dtype, _rng(info, k, "gg" + dtype))


@pytest.mark.parametrize("info", GRADGRAD, ids=lambda r: r.name)
def test_gradgradcheck(info):
    for sample in info.samples():
        if sample.gradcheck:
            try:
                run_gradgradcheck(info, sample)
            except GradcheckError as e:
                raise AssertionError(
                    f"{info.name} [{sample.desc}] (second derivative): {e}"
                ) from None


def test_table_and_gradcheck_need_no_torch():
    """Importing the table, drawing every sample and gradchecking runs with torch unimportable."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import op_db, test_op_db as t\n"
        "for r in op_db.OP_DB: r.samples()\n"
        "r = op_db.OPS['mul']\n"
        "for s in r.samples(): t.run_gradcheck(r, s); t.run_gradgradcheck(r, s)\n"
        "loaded = {m.split('.')[0] for m, mod in sys.modules.items() if mod is not None}\n"
        "assert 'torch' not in loaded\n"
    )
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    r = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]


# -- negative controls -----------------------------------------------------------------------------


class OffMul(Op):
    """Mul whose backward is 1% off for the first input."""

    def forward(self, a, b):
        return a * b

    def backward(self, g):
        a, b = self.inputs
        return g * b * 1.01, g * a


class TanhGrad(Op):
    """g * (1 - tanh(x)^2) as a primitive whose own backward is 1% off (in x)."""

    def forward(self, g, x):
        t = self.xp.tanh(x)
        return g * (1 - t * t)

    def backward(self, gg):
        g, x = self.inputs
        t = x.tanh()
        return gg * (1 - t * t), gg * g * (-2.0 * 1.01) * t * (1 - t * t)


class OffTanh(Op):
    """tanh with a correct first derivative and a 1% wrong second derivative."""

    def forward(self, x):
        return self.xp.tanh(x)

    def backward(self, g):
        return TanhGrad.apply(g, self.inputs[0])


def _control_samples(rng):
    return [
        SampleInput(
            (Arr(rng.standard_normal((3, 4)) + 2.0), Arr(rng.standard_normal((3, 4)) + 2.0)),
            desc="same shape",
        )
    ]


BAD_MUL = OpInfo("bad_mul", lambda a, b: OffMul.apply(a, b), T.mul, _control_samples)
BAD_TANH = OpInfo(
    "bad_tanh",
    lambda x: OffTanh.apply(x),
    T.tanh,
    lambda rng: [SampleInput((Arr(rng.standard_normal((3, 4))),), desc="(3,4)")],
)


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_control_torch_helpers(dtype):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    (s,) = BAD_MUL.samples()
    check_forward(BAD_MUL, s, dtype)  # the forward is right ...
    with pytest.raises(AssertionError, match="gradient of input 0"):  # ... the backward is not
        check_grad_vs_torch(BAD_MUL, s, dtype, rng)
    (s,) = BAD_TANH.samples()
    check_grad_vs_torch(BAD_TANH, s, dtype, rng)  # first derivative right ...
    with pytest.raises(AssertionError, match="second derivative"):  # ... second wrong
        check_gradgrad_vs_torch(BAD_TANH, s, dtype, rng)


def test_negative_control_gradcheck():
    (s,) = BAD_MUL.samples()
    with pytest.raises(GradcheckError):
        run_gradcheck(BAD_MUL, s)
    assert run_gradcheck(BAD_MUL, s, raise_exception=False) is False
    (s,) = BAD_TANH.samples()
    assert run_gradcheck(BAD_TANH, s)
    with pytest.raises(GradcheckError):
        run_gradgradcheck(BAD_TANH, s)
    assert run_gradgradcheck(BAD_TANH, s, raise_exception=False) is False


def test_generators_keep_their_margins():
    """The generators keep inputs off the kinks they promise to avoid."""
    from op_samples import away, distinct

    rng = np.random.default_rng(1)
    x = away(rng, (1000,), (0.0, 0.5), margin=0.1)
    assert np.min(np.abs(x)) >= 0.1 and np.min(np.abs(x - 0.5)) >= 0.1
    d = np.sort(distinct(rng, (50,)).ravel())
    assert np.min(np.diff(d)) >= 0.1
    assert math.isfinite(float(d.sum()))
