"""Losses vs PyTorch (float64): a table of every loss, option and reduction, forward and the
gradient of the input; plus cross_entropy with class weights and label smoothing through the op
table's checks (gradients and second derivatives vs torch, numerical gradchecks)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from op_db import OpInfo, T
from op_samples import Arr, Idx, SampleInput, normal

import prunus
from prunus import nn
from prunus.errors import ArgumentError, ShapeError

TOL = {"rtol": 1e-10, "atol": 1e-12}
W4 = np.array([0.5, 2.0, 1.0, 1.5])
TARGET = np.array([0, 3, 1, 1, 2])
IGNORED = np.array([0, -100, 1, 3, -100])
CLASSES = "classes"  # input (5, 4) logits, integer target
SAME = "same"  # target of the input's shape
PROB = "prob"  # target in [0, 1]

LOSSES = [
    ("CrossEntropyLoss", {}, CLASSES),
    ("CrossEntropyLoss", {"label_smoothing": 0.15}, CLASSES),
    ("CrossEntropyLoss", {"weight": W4}, CLASSES),
    ("CrossEntropyLoss", {"weight": W4, "label_smoothing": 0.2}, CLASSES),
    ("CrossEntropyLoss", {"ignore_index": 1, "weight": W4, "label_smoothing": 0.1}, CLASSES),
    ("CrossEntropyLoss", {"ignore_index": -100}, "ignored"),
    ("CrossEntropyLoss", {"label_smoothing": 0.3}, "ignored"),
    ("NLLLoss", {}, CLASSES),
    ("NLLLoss", {"weight": W4}, CLASSES),
    ("NLLLoss", {"weight": W4, "ignore_index": 3}, CLASSES),
    ("NLLLoss", {}, "ignored"),
    ("MSELoss", {}, SAME),
    ("L1Loss", {}, SAME),
    ("BCEWithLogitsLoss", {}, PROB),
    ("BCEWithLogitsLoss", {"pos_weight": np.array([1.0, 3.0, 0.5, 2.0])}, PROB),
    ("BCEWithLogitsLoss", {"weight": np.array([0.2, 1.0, 2.0, 1.0])}, PROB),
    ("MultiMarginLoss", {}, CLASSES),
    ("MultiMarginLoss", {"p": 1, "margin": 1.0, "weight": W4}, CLASSES),
    ("MultiMarginLoss", {"p": 2, "margin": 0.7}, CLASSES),
    ("MultiMarginLoss", {"p": 2, "margin": 1.3, "weight": W4}, CLASSES),
]
CASES = [(n, kw, kind, r) for n, kw, kind in LOSSES for r in ("mean", "sum", "none")]


def _id(c):
    name, kw, kind, r = c
    return f"{name}-{','.join(sorted(kw))}-{kind}-{r}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_loss_vs_torch(case):
    torch = pytest.importorskip("torch")
    name, kw, kind, reduction = case
    rng = np.random.default_rng(zlib.crc32(_id(case).encode()))
    x = rng.standard_normal((5, 4)) * 2
    if kind == CLASSES:
        y = TARGET
    elif kind == "ignored":
        y = IGNORED
    elif kind == SAME:
        y = rng.standard_normal((5, 4))
    else:
        y = rng.uniform(0, 1, (5, 4))
    if name == "NLLLoss":  # log-probabilities in
        x = x - np.log(np.exp(x).sum(1, keepdims=True))
    pkw = {k: prunus.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    ours = getattr(nn, name)(reduction=reduction, **pkw)
    theirs = getattr(torch.nn, name)(reduction=reduction, **tkw)
    px, tx = prunus.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    pl, tl = ours(px, prunus.tensor(y)), theirs(tx, torch.tensor(y))
    np.testing.assert_allclose(pl.detach().numpy(), tl.detach().numpy(), **TOL)
    v = rng.standard_normal(tuple(tl.shape))
    pl.backward(prunus.tensor(v))
    tl.backward(torch.tensor(v))
    np.testing.assert_allclose(px.grad.numpy(), tx.grad.numpy(), **TOL)
    if "weight" in kw or "pos_weight" in kw:  # class weights are buffers, as in PyTorch
        assert set(ours.state_dict()) == set(theirs.state_dict())


def test_multi_margin_unbatched_and_functional():
    torch = pytest.importorskip("torch")
    x = np.array([0.1, 0.2, 0.4, 0.8])
    p = nn.functional.multi_margin_loss(prunus.tensor(x), prunus.tensor(3))
    t = torch.nn.functional.multi_margin_loss(torch.tensor(x), torch.tensor(3))
    np.testing.assert_allclose(p.item(), t.item(), **TOL)
    # the lecture's example: scores (3.2, 5.1, -1.7) for a cat (class 0), SVM loss 2.9 (summed, not / C)
    s = nn.functional.multi_margin_loss(prunus.tensor([[3.2, 5.1, -1.7]], dtype=prunus.float64), prunus.tensor([0]))
    np.testing.assert_allclose(s.item() * 3, 2.9, rtol=1e-12)


def test_loss_argument_errors():
    with pytest.raises(ArgumentError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ShapeError, match=r"input \(4, 1\) and target \(4,\)"):
        nn.MSELoss()(prunus.randn(4, 1), prunus.randn(4))
    with pytest.raises(ShapeError, match=r"weight"):
        nn.CrossEntropyLoss(weight=prunus.ones(3))(prunus.randn(2, 4), prunus.tensor([0, 1]))
    with pytest.raises(ArgumentError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)(prunus.randn(2, 4), prunus.tensor([0, 1]))
    with pytest.raises(ArgumentError, match="p must be 1 or 2"):
        nn.MultiMarginLoss(p=3)


# -- cross_entropy with weights and smoothing through the op table's checks ---------------------


def _ce_samples(rng):
    logits = lambda *s: Arr(normal(rng, s))
    w = lambda: Arr(np.array([0.5, 2.0, 1.0]), requires_grad=False)
    t = Idx(np.array([0, 2, 1, 2]))
    return [
        SampleInput((logits(4, 3), t), {"label_smoothing": 0.1}, desc="smoothing, mean"),
        SampleInput((logits(4, 3), t), {"weight": w()}, desc="weights, mean"),
        SampleInput((logits(4, 3), t), {"weight": w(), "label_smoothing": 0.2, "reduction": "sum"},
                    desc="weights + smoothing, sum"),
        SampleInput((logits(4, 3), Idx(np.array([0, -100, 1, 2]))),
                    {"weight": w(), "label_smoothing": 0.3, "reduction": "none"},
                    desc="weights + smoothing + ignore_index, none"),
        SampleInput((logits(4, 3), Idx(np.array([1, 1, 0, 2]))),
                    {"weight": w(), "ignore_index": 1, "label_smoothing": 0.05}, desc="ignore_index=1, mean"),
    ]


CE_INFO = OpInfo("cross_entropy_weighted_smoothed", prunus.cross_entropy, T.nn.functional.cross_entropy, _ce_samples)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_weights_smoothing_vs_torch(dtype):
    pytest.importorskip("torch")
    from ops import test_op_db as t

    for k, s in enumerate(CE_INFO.samples()):
        t.check_forward(CE_INFO, s, dtype)
        t.check_grad_vs_torch(CE_INFO, s, dtype, np.random.default_rng(k))
        t.check_gradgrad_vs_torch(CE_INFO, s, dtype, np.random.default_rng(100 + k))


def test_cross_entropy_weights_smoothing_gradcheck():
    from ops import test_op_db as t

    for s in CE_INFO.samples():
        t.run_gradcheck(CE_INFO, s)
        t.run_gradgradcheck(CE_INFO, s)
