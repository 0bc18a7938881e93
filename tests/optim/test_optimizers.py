"""prunus.optim vs torch.optim, step by step: the same parameters and the same random gradients
for 20 steps in float64 (rtol 1e-10), for every optimizer and option; state dict round trips;
bad hyperparameters and parameter lists."""

from __future__ import annotations

import numpy as np
import pytest

import prunus
from prunus import optim
from prunus.errors import ArgumentError, DTypeError, ShapeError

SHAPES = [(4, 3), (3,), (2, 2, 2)]
STEPS = 20

# (name, kwargs for every group, per-group overrides or None)
CASES = [
    ("SGD", {"lr": 0.1}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}, None),
    ("SGD", {"lr": 0.1, "maximize": True}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "maximize": True}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1}, None),
    (
        "SGD",
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True},
        None,
    ),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, [{"lr": 0.01}, {"momentum": 0.5, "weight_decay": 0.1}]),
    ("Adam", {"lr": 0.01}, None),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-6}, None),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}, None),
    ("Adam", {"lr": 0.01, "amsgrad": True}, None),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.05, "maximize": True}, None),
    ("Adam", {"lr": 0.01}, [{"lr": 0.1, "amsgrad": True}, {"betas": (0.5, 0.6)}]),
    ("AdamW", {"lr": 0.01}, None),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}, None),
    ("AdamW", {"lr": 0.01, "maximize": True}, [{"weight_decay": 0.0}, {"lr": 0.02}]),
    ("RMSprop", {"lr": 0.01}, None),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1}, None),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}, None),
    ("RMSprop", {"lr": 0.01, "centered": True}, None),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "maximize": True}, None),
    ("RMSprop", {"lr": 0.01}, [{"centered": True}, {"momentum": 0.9, "lr": 0.001}]),
    ("Adagrad", {"lr": 0.1}, None),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1}, None),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-6, "maximize": True}, None),
    ("Adagrad", {"lr": 0.1}, [{"lr": 0.5}, {"lr_decay": 0.1}]),
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)]


def _init(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _grads(seed=1):
    rng = np.random.default_rng(seed)
    # parameter 1 gets no gradient on some steps: the optimizer must skip it; parameter 2 gets
    # its first gradient on step 1, when the others' state has already started
    skip = {(1, t) for t in range(2, STEPS, 3)} | {(2, 0)}
    return [
        [None if (i, t) in skip else rng.standard_normal(s) for i, s in enumerate(SHAPES)]
        for t in range(STEPS)
    ]


def _groups(params, groups):
    if groups is None:
        return params
    return [{"params": params[:1], **groups[0]}, {"params": params[1:], **groups[1]}]


def _prunus_run(name, kwargs, groups, init, grads, split=None):
    ps = [prunus.tensor(a, dtype=prunus.float64, requires_grad=True) for a in init]
    opt = getattr(optim, name)(_groups(ps, groups), **kwargs)
    out = []
    for t, gs in enumerate(grads):
        if split is not None and t == split:  # continue in a fresh optimizer from a state dict
            sd = opt.state_dict()
            opt = getattr(optim, name)(_groups(ps, groups), **kwargs)
            opt.load_state_dict(sd)
        for p, g in zip(ps, gs):
            p.grad = None if g is None else prunus.tensor(g, dtype=prunus.float64)
        opt.step()
        out.append([p.detach().numpy().copy() for p in ps])
    return out, opt


def _torch_run(name, kwargs, groups, init, grads):
    torch = pytest.importorskip("torch")
    ps = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in init]
    opt = getattr(torch.optim, name)(_groups(ps, groups), **kwargs)
    out = []
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append([p.detach().numpy().copy() for p in ps])
    return out, opt


@pytest.mark.parametrize("name,kwargs,groups", CASES, ids=IDS)
def test_matches_torch(name, kwargs, groups):
    init, grads = _init(), _grads()
    ours, opt = _prunus_run(name, kwargs, groups, init, grads)
    theirs, topt = _torch_run(name, kwargs, groups, init, grads)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        for i, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-13, err_msg=f"step {t} param {i}")
    # the state dict has PyTorch's structure: the same indices, state keys and group keys
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    for k in sd["state"]:
        assert sd["state"][k].keys() == tsd["state"][k].keys()
        for key, v in sd["state"][k].items():
            if key == "step":
                assert v.item() == tsd["state"][k][key].item()
            else:
                np.testing.assert_allclose(
                    v.numpy(), tsd["state"][k][key].numpy(), rtol=1e-10, atol=1e-13
                )
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        assert g["params"] == tg["params"]
        assert set(g) <= set(tg)
        assert all(g[k] == tg[k] for k in g)


@pytest.mark.parametrize("name,kwargs,groups", CASES, ids=IDS)
def test_state_dict_round_trip(name, kwargs, groups):
    """10 steps, state_dict, a fresh optimizer loads it, 10 more == 20 straight steps."""
    init, grads = _init(2), _grads(3)
    straight, _ = _prunus_run(name, kwargs, groups, init, grads)
    resumed, _ = _prunus_run(name, kwargs, groups, init, grads, split=10)
    for a, b in zip(straight, resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_load_state_dict_copies_and_sets_hyperparameters():
    p = prunus.tensor([1.0, 2.0], dtype=prunus.float64, requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = prunus.tensor([1.0, 1.0], dtype=prunus.float64)
    opt.step()
    sd = opt.state_dict()
    q = prunus.tensor([1.0, 2.0], dtype=prunus.float64, requires_grad=True)
    new = optim.SGD([q], lr=0.5)
    new.load_state_dict(sd)
    assert new.param_groups[0]["lr"] == 0.1 and new.param_groups[0]["momentum"] == 0.9
    assert new.param_groups[0]["params"][0] is q
    buf = new.state[q]["momentum_buffer"]
    assert buf.data is not sd["state"][0]["momentum_buffer"].data  # a copy, not an alias


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "Adagrad"])
def test_step_counts_are_tensors_and_older_int_counts_load(name):
    p = prunus.tensor([1.0, 2.0], dtype=prunus.float64, requires_grad=True)
    opt = getattr(optim, name)([p], lr=0.1)
    for _ in range(3):
        p.grad = prunus.tensor([1.0, -1.0], dtype=prunus.float64)
        opt.step()
    step = opt.state[p]["step"]
    assert isinstance(step, prunus.Tensor) and step.shape == () and step.dtype is prunus.float32
    assert step.item() == 3.0
    sd = opt.state_dict()
    sd["state"][0]["step"] = 3  # a state dict from before the counts were tensors
    new = getattr(optim, name)([p], lr=0.1)
    new.load_state_dict(sd)
    assert new.state[p]["step"].item() == 3.0 and new.state[p]["step"] is not step
    for bad in (-1, 2.5, float("nan")):
        sd["state"][0]["step"] = bad
        with pytest.raises(ArgumentError, match="state 'step' of parameter 0 must be a count"):
            getattr(optim, name)([p], lr=0.1).load_state_dict(sd)


def test_load_state_dict_mismatch():
    ps = [prunus.zeros(2, requires_grad=True), prunus.zeros(3, requires_grad=True)]
    opt = optim.Adam(ps)
    for p in ps:
        p.grad = prunus.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ArgumentError, match="2 parameter groups, the optimizer has 1"):
        optim.Adam(ps).load_state_dict({"state": {}, "param_groups": sd["param_groups"] * 2})
    with pytest.raises(ArgumentError, match="group 0 has 2 parameters in the state dict and 1"):
        optim.Adam(ps[:1]).load_state_dict(sd)
    with pytest.raises(ShapeError, match="'exp_avg' of parameter 0 has shape \\(2,\\)"):
        optim.Adam([ps[1], ps[0]]).load_state_dict(sd)
    with pytest.raises(ArgumentError, match="'state' and 'param_groups'"):
        optim.Adam(ps).load_state_dict({"state": {}})


def test_zero_grad():
    p = prunus.ones(3, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = prunus.ones(3)
    opt.zero_grad(set_to_none=False)
    assert p.grad.tolist() == [0.0, 0.0, 0.0]
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # no gradients: nothing happens
    assert p.tolist() == [1.0, 1.0, 1.0]


def test_step_closure_and_training():
    """A closure recomputes the loss with grad on; SGD drives a quadratic to its minimum."""
    w = prunus.tensor([3.0, -2.0], requires_grad=True)
    opt = optim.SGD([w], lr=0.1, momentum=0.5)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with prunus.no_grad():  # step enables grad for the closure itself
        first = opt.step(closure).item()
    for _ in range(100):
        opt.step(closure)
    assert first == 13.0 and abs(w).max().item() < 1e-4


def test_add_param_group_and_defaults():
    a, b = prunus.zeros(2, requires_grad=True), prunus.zeros(2, requires_grad=True)
    opt = optim.Adam([a], lr=0.1)
    opt.add_param_group({"params": b, "lr": 0.2})
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)


def test_float32_params_keep_dtype():
    p = prunus.randn(5, requires_grad=True)
    for cls in (optim.SGD, optim.Adam, optim.RMSprop, optim.Adagrad):
        opt = cls([p], lr=0.1)
        p.grad = prunus.randn(5)
        opt.step()
        assert p.dtype is prunus.float32
        assert all(
            v.dtype is prunus.float32
            for s in opt.state.values()
            for v in s.values()
            if isinstance(v, prunus.Tensor)
        )


BAD = [
    (lambda ps: optim.SGD(ps, lr=-0.1), ArgumentError, r"SGD: invalid lr=-0.1"),
    (lambda ps: optim.Adam(ps, lr=-1), ArgumentError, r"Adam: invalid lr=-1"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.9)), ArgumentError, r"Adam: invalid betas\[0\]=1.0"),
    (
        lambda ps: optim.AdamW(ps, betas=(0.9, -0.1)),
        ArgumentError,
        r"AdamW: invalid betas\[1\]=-0.1",
    ),
    (lambda ps: optim.Adam(ps, eps=-1e-8), ArgumentError, r"Adam: invalid eps"),
    (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, dampening=0.1),
        ArgumentError,
        r"SGD: nesterov .*dampening=0.1",
    ),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), ArgumentError, r"SGD: nesterov .*momentum=0"),
    (
        lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1),
        ArgumentError,
        r"SGD: invalid weight_decay=-1",
    ),
    (lambda ps: optim.RMSprop(ps, alpha=-0.5), ArgumentError, r"RMSprop: invalid alpha=-0.5"),
    (lambda ps: optim.RMSprop(ps, momentum=-0.5), ArgumentError, r"RMSprop: invalid momentum"),
    (lambda ps: optim.Adagrad(ps, lr_decay=-1), ArgumentError, r"Adagrad: invalid lr_decay=-1"),
    (lambda ps: optim.SGD(ps, lr="0.1"), ArgumentError, r"SGD: lr must be a number, got '0.1'"),
    (
        lambda ps: optim.SGD([{"params": ps, "lr": -2}], lr=0.1),
        ArgumentError,
        r"SGD: invalid lr=-2",
    ),
    (lambda ps: optim.SGD([], lr=0.1), ArgumentError, r"SGD: got an empty parameter list"),
    (lambda ps: optim.Adam(iter([])), ArgumentError, r"Adam: got an empty parameter list"),
    (lambda ps: optim.SGD([ps[0] * 2], lr=0.1), ArgumentError, r"SGD: .*not a leaf"),
    (
        lambda ps: optim.SGD([{"params": ps}, {"params": [ps[1]]}], lr=0.1),
        ArgumentError,
        r"SGD: parameter 0 of group 1 \(shape \(3,\)\) appears more than once",
    ),
    (lambda ps: optim.SGD([ps[0], ps[0]], lr=0.1), ArgumentError, r"appears more than once"),
    (lambda ps: optim.SGD(set(ps), lr=0.1), ArgumentError, r"not a set"),
    (
        lambda ps: optim.SGD([np.zeros(2)], lr=0.1),
        DTypeError,
        r"must be a prunus Tensor, got ndarray",
    ),
    (lambda ps: optim.SGD([{"lr": 0.1}]), ArgumentError, r"has no 'params'"),
]


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_frozen_parameters_are_skipped_until_unfrozen(name):
    w = prunus.ones(3, requires_grad=True)
    frozen = prunus.ones(2)  # requires_grad False: PyTorch's optimizers take it too
    opt = getattr(optim, name)([w, frozen], lr=0.1)
    (w * 2).sum().backward()
    opt.step()
    assert frozen.grad is None and frozen.tolist() == [1.0, 1.0] and w.tolist() != [1.0, 1.0, 1.0]
    frozen.requires_grad_(True)
    opt.zero_grad()
    ((w * 2).sum() + (frozen * 3).sum()).backward()
    opt.step()
    assert frozen.tolist() != [1.0, 1.0]


@pytest.mark.parametrize("make,err,match", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_input(make, err, match):
    ps = [prunus.zeros(2, requires_grad=True), prunus.zeros(3, requires_grad=True)]
    with pytest.raises(err, match=match):
        make(ps)


@pytest.mark.parametrize(("opt_cls", "kwargs"), [
    (optim.SGD, {"momentum": 0.9, "weight_decay": 5e-4}),
    (optim.SGD, {"momentum": 0.9, "nesterov": True, "maximize": True}),
    (optim.SGD, {"weight_decay": 0.1}),
    (optim.Adam, {"weight_decay": 0.1, "amsgrad": True}),
    (optim.AdamW, {"maximize": True}),
])
def test_split_over_threads_is_bitwise_the_unsplit_update(opt_cls, kwargs):
    """A parameter over 2**17 elements is updated in ranges on several threads once prunus holds
    the threads (after a split convolution); elementwise, so bit for bit the one-thread result."""
    from prunus.backend import threads

    rng = np.random.default_rng(0)
    init = rng.standard_normal((400, 400)).astype(np.float32)
    grads = [rng.standard_normal((400, 400)).astype(np.float32) for _ in range(3)]
    before = prunus.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            prunus.set_num_threads(n)
            threads.parallel_for(lambda lo, hi: None, 4)  # a split: prunus now holds the threads
            p = prunus.tensor(init, requires_grad=True)
            opt = opt_cls([p], lr=0.1, **kwargs)
            for g in grads:
                p.grad = prunus.tensor(g)
                opt.step()
            results.append(p.detach().numpy())
    finally:
        prunus.set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[1])
