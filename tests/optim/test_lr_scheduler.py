"""Learning-rate schedulers vs torch.optim.lr_scheduler: the lr (and momentum) of every group
over 30 steps, float64 rtol 1e-12, including the step taken at construction and chained
warmup; state dict round trips; bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import prunus
from prunus import optim
from prunus.errors import ArgumentError
from prunus.optim import lr_scheduler as ls

STEPS = 30

# (optimizer name, optimizer kwargs, [(scheduler name, kwargs), ...]); several schedulers on one
# optimizer are stepped in order each step (chaining)
CASES = [
    ("SGD", {}, [("StepLR", {"step_size": 7})]),
    ("SGD", {}, [("StepLR", {"step_size": 3, "gamma": 0.5})]),
    ("SGD", {}, [("MultiStepLR", {"milestones": [5, 12, 12, 20], "gamma": 0.3})]),
    ("SGD", {}, [("ExponentialLR", {"gamma": 0.9})]),
    ("SGD", {}, [("CosineAnnealingLR", {"T_max": 10})]),
    ("Adam", {}, [("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.001})]),
    ("SGD", {}, [("LinearLR", {})]),
    ("SGD", {}, [("LinearLR", {"start_factor": 0.1, "end_factor": 0.5, "total_iters": 12})]),
    ("SGD", {"momentum": 0.9}, [("OneCycleLR", {"max_lr": 0.5, "total_steps": STEPS})]),
    ("Adam", {}, [("OneCycleLR", {"max_lr": [0.1, 0.2], "total_steps": STEPS})]),
    (
        "SGD",
        {"momentum": 0.9},
        [
            (
                "OneCycleLR",
                {
                    "max_lr": 0.5,
                    "epochs": 3,
                    "steps_per_epoch": 10,
                    "anneal_strategy": "linear",
                    "three_phase": True,
                    "pct_start": 0.25,
                },
            )
        ],
    ),
    ("SGD", {}, [("OneCycleLR", {"max_lr": 0.5, "total_steps": STEPS, "cycle_momentum": False})]),
    (
        "SGD",
        {},
        [
            ("LinearLR", {"start_factor": 0.01, "total_iters": 5}),
            ("CosineAnnealingLR", {"T_max": STEPS}),
        ],
    ),
    (
        "Adam",
        {},
        [("LinearLR", {"start_factor": 0.1, "total_iters": 4}), ("ExponentialLR", {"gamma": 0.95})],
    ),
    ("SGD", {}, [("LinearLR", {"total_iters": 3}), ("MultiStepLR", {"milestones": [10, 20]})]),
]
IDS = [f"{i}-" + "+".join(s for s, _ in scheds) for i, (_, _, scheds) in enumerate(CASES)]


def _setup(lib, opt_name, opt_kwargs, scheds):
    t = lib.tensor if lib is prunus else __import__("torch").tensor
    ps = [t([1.0, 2.0], requires_grad=True), t([3.0], requires_grad=True)]
    groups = [{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 0.05}]
    opt = getattr(lib.optim, opt_name)(groups, **opt_kwargs)
    return opt, [getattr(lib.optim.lr_scheduler, n)(opt, **kw) for n, kw in scheds]


def _trace(opt, scheds, steps, split=None, remake=None):
    out = []
    for t in range(steps):
        if t == split:
            osd, ssd = opt.state_dict(), [s.state_dict() for s in scheds]
            opt, scheds = remake()
            opt.load_state_dict(osd)
            for s, sd in zip(scheds, ssd):
                s.load_state_dict(sd)
        row = [g["lr"] for g in opt.param_groups] + list(scheds[-1].get_last_lr())
        for g in opt.param_groups:
            row += [g["momentum"]] if "momentum" in g else [g["betas"][0]] if "betas" in g else []
        out.append(row)
        opt.step()
        for s in scheds:
            s.step()
    return np.array(out, dtype=np.float64)


@pytest.mark.parametrize("opt_name,opt_kwargs,scheds", CASES, ids=IDS)
def test_matches_torch(opt_name, opt_kwargs, scheds):
    torch = pytest.importorskip("torch")
    ours = _trace(*_setup(prunus, opt_name, opt_kwargs, scheds), STEPS)
    theirs = _trace(*_setup(torch, opt_name, opt_kwargs, scheds), STEPS)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)


@pytest.mark.parametrize("opt_name,opt_kwargs,scheds", CASES, ids=IDS)
def test_state_dict_round_trip(opt_name, opt_kwargs, scheds):
    straight = _trace(*_setup(prunus, opt_name, opt_kwargs, scheds), STEPS)
    resumed = _trace(
        *_setup(prunus, opt_name, opt_kwargs, scheds),
        STEPS,
        split=12,
        remake=lambda: _setup(prunus, opt_name, opt_kwargs, scheds),
    )
    np.testing.assert_array_equal(straight, resumed)


def test_chained_scheduler_and_json_state():
    import json

    _opt, (warm, cos) = _setup(
        prunus, "SGD", {}, [("LinearLR", {"total_iters": 4}), ("CosineAnnealingLR", {"T_max": 20})]
    )
    chained = ls.ChainedScheduler([warm, cos])
    _opt2, (warm2, cos2) = _setup(
        prunus, "SGD", {}, [("LinearLR", {"total_iters": 4}), ("CosineAnnealingLR", {"T_max": 20})]
    )
    for _ in range(10):
        chained.step()
        warm2.step()
        cos2.step()
    assert chained.get_last_lr() == cos2.get_last_lr()
    sd = json.loads(json.dumps(chained.state_dict()))  # plain data, as a checkpoint stores it
    assert sd["_schedulers"][1]["last_epoch"] == 10


def test_one_cycle_overrun_and_bad_arguments():
    _opt, (s,) = _setup(
        prunus, "SGD", {"momentum": 0.9}, [("OneCycleLR", {"max_lr": 1.0, "total_steps": 3})]
    )
    for _ in range(3):
        s.step()
    with pytest.raises(ArgumentError, match="stepped 4 times, more than total_steps=3"):
        s.step()
    p = prunus.zeros(1, requires_grad=True)
    with pytest.raises(ArgumentError, match="OneCycleLR: give total_steps"):
        ls.OneCycleLR(optim.SGD([p]), max_lr=0.1)
    with pytest.raises(ArgumentError, match="cycle_momentum needs an optimizer"):
        ls.OneCycleLR(optim.Adagrad([p]), max_lr=0.1, total_steps=5)
    with pytest.raises(ArgumentError, match="max_lr has 2 values for 1 parameter groups"):
        ls.OneCycleLR(optim.SGD([p]), max_lr=[0.1, 0.2], total_steps=5)
    with pytest.raises(ArgumentError, match="StepLR: step_size must be a positive int, got 0"):
        ls.StepLR(optim.SGD([p]), step_size=0)
    with pytest.raises(ArgumentError, match="LinearLR: start_factor must be in"):
        ls.LinearLR(optim.SGD([p]), start_factor=0)
    with pytest.raises(ArgumentError, match="is not an Optimizer"):
        ls.StepLR("sgd", step_size=2)
    with pytest.raises(ArgumentError, match="no 'initial_lr'"):
        ls.StepLR(optim.SGD([p]), step_size=2, last_epoch=5)
