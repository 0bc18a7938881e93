"""Module, Parameter and the containers: registration, traversal, modes, to(), state dicts and
their errors, hooks, repr; and every op of the op table run with Parameters as inputs."""

from __future__ import annotations

import copy

import numpy as np
import op_samples
import pytest
from op_db import OP_DB

import prunus
from prunus import nn
from prunus.errors import DTypeError, StateDictError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.fc2 = nn.Linear(3, 2)
        self.scale = nn.Parameter(prunus.ones(1))
        self.register_buffer("steps", prunus.zeros(()))
        self.register_buffer("scratch", prunus.zeros(2), persistent=False)

    def forward(self, x):
        return self.fc2(self.bn(self.fc1(x)).relu()) * self.scale


def test_registration_and_traversal():
    m = Net()
    assert [n for n, _ in m.named_parameters()] == [
        "scale", "fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "fc2.weight", "fc2.bias"
    ]
    assert [n for n, _ in m.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in m.named_buffers()] == [
        "steps", "scratch", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"
    ]
    assert [n for n, _ in m.named_children()] == ["fc1", "bn", "fc2"]
    assert [n for n, _ in m.named_modules()] == ["", "fc1", "bn", "fc2"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad and p.is_leaf for p in m.parameters())
    assert "scratch" not in m.state_dict() and "steps" in m.state_dict()
    m.extra = prunus.zeros(3)  # a plain tensor attribute is not a buffer
    assert "extra" not in dict(m.named_buffers())
    del m.fc2
    assert "fc2.weight" not in dict(m.named_parameters())


def test_shared_parameters_and_modules_are_listed_once():
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(m.parameters())) == 2
    assert len(list(m.modules())) == 3
    tied = nn.Module()
    tied.a, tied.b = nn.Linear(2, 2), nn.Linear(2, 2)
    tied.b.weight = tied.a.weight
    assert len(list(tied.parameters())) == 3
    assert list(tied.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_assignment_rules():
    m = nn.Module()
    m.w = nn.Parameter(prunus.zeros(2))
    with pytest.raises(DTypeError, match="Parameter or None"):
        m.w = prunus.zeros(2)
    m.w = None
    assert list(m.parameters()) == [] and m.w is None
    m.register_parameter("v", None)
    m.add_module("sub", nn.ReLU())
    assert isinstance(m.sub, nn.ReLU)
    with pytest.raises(AttributeError, match="super"):
        class Bad(nn.Module):
            def __init__(self):
                self.x = 1
        Bad()
    with pytest.raises(AttributeError):
        _ = m.nothing


def test_train_eval_zero_grad_apply_requires_grad():
    m = Net()
    assert m.training and m.bn.training
    assert m.eval() is m and not m.bn.training and not m.training
    m.train()
    assert m.fc1.training
    m(prunus.randn(5, 4)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0 for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen == ["Linear", "BatchNorm1d", "Linear", "Net"]
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())


def test_to_keeps_parameter_identity():
    m = Net()
    params = list(m.parameters())
    m(prunus.randn(5, 4)).sum().backward()
    assert m.double() is m
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    assert all(p.dtype is prunus.float64 and p.grad.dtype is prunus.float64 for p in params)
    assert m.bn.running_mean.dtype is prunus.float64
    assert m.bn.num_batches_tracked.dtype is prunus.int64  # only floating tensors change
    m.to("cpu", prunus.float32)
    assert m.fc1.weight.dtype is prunus.float32
    m(prunus.randn(5, 4)).sum().backward()  # still trains


def test_state_dict_round_trip_and_sharing():
    a, b = Net(), Net()
    sd = a.state_dict()
    assert not any(t.requires_grad for t in sd.values())
    assert np.shares_memory(sd["fc1.weight"].numpy(), a.fc1.weight.data)
    missing, unexpected = b.load_state_dict(sd)
    assert missing == [] and unexpected == []
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k].numpy())
    assert isinstance(b.fc1.weight, nn.Parameter)


def test_load_state_dict_accepts_any_layout_and_arrays():
    m = nn.Linear(4, 3)
    w = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    m.load_state_dict({"weight": prunus.from_numpy(w), "bias": np.ones(3, np.float32)})
    np.testing.assert_array_equal(m.weight.data, w)
    assert m.weight.data.flags.c_contiguous
    np.testing.assert_array_equal(m.bias.data, 1)


def test_load_state_dict_lists_every_problem_at_once():
    m = Net()
    sd = m.state_dict()
    before = m.fc1.weight.data.copy()
    del sd["fc1.bias"], sd["bn.running_var"]
    sd["fc2.weight"] = prunus.zeros(3, 3)
    sd["bn.weight"] = prunus.zeros(4)
    sd["fc3.weight"] = prunus.zeros(1)
    sd["fc1.weight"] = prunus.zeros(3, 4)
    with pytest.raises(StateDictError) as e:
        m.load_state_dict(sd)
    msg = str(e.value)
    for part in ("fc1.bias", "bn.running_var", "fc3.weight", "fc2.weight: expected shape (2, 3), got (3, 3)",
                 "bn.weight: expected shape (3,), got (4,)", "missing keys (2)", "unexpected keys (1)"):
        assert part in msg, msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, RuntimeError)
    np.testing.assert_array_equal(m.fc1.weight.data, before)  # nothing copied
    with pytest.raises(StateDictError, match="mis-shaped"):  # shapes are checked even when not strict
        m.load_state_dict(sd, strict=False)
    del sd["fc2.weight"], sd["bn.weight"]
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert set(missing) == {"fc1.bias", "bn.running_var", "fc2.weight", "bn.weight"}
    assert unexpected == ["fc3.weight"]
    np.testing.assert_array_equal(m.fc1.weight.data, 0)


def test_hooks_run_and_are_removable():
    m = nn.Linear(2, 2)
    calls = []
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    h2 = m.register_forward_hook(lambda mod, args, out: calls.append(out.shape) or out + 1)
    x = prunus.ones(3, 2)
    y = m(x)
    np.testing.assert_allclose(y.detach().numpy(), np.broadcast_to(m.bias.data + 1, (3, 2)), rtol=1e-6)
    assert calls == [(3, 2)]
    h1.remove()
    h2.remove()
    h2.remove()  # twice is harmless
    np.testing.assert_allclose(m(x).detach().numpy(), prunus.linear(x, m.weight, m.bias).detach().numpy())
    assert calls == [(3, 2)]


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert len(seq) == 2 and isinstance(seq[0], nn.Linear) and isinstance(seq[-1], nn.ReLU)
    assert isinstance(seq[:1], nn.Sequential) and len(seq[:1]) == 1
    seq.append(nn.Linear(3, 1))
    assert seq(prunus.randn(4, 2)).shape == (4, 1)
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(list(ml.parameters())) == 6 and [n for n, _ in ml.named_children()] == ["0", "1", "2"]
    md = nn.ModuleDict({"a": nn.Linear(1, 1), "b": nn.ReLU()})
    assert "a" in md and list(md.keys()) == ["a", "b"] and len(list(md.parameters())) == 2
    from collections import OrderedDict

    named = nn.Sequential(OrderedDict(first=nn.Linear(2, 2), act=nn.Tanh()))
    assert list(named.state_dict()) == ["first.weight", "first.bias"]


def test_repr_matches_pytorch():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(300),
                         nn.LayerNorm(300), nn.BatchNorm2d(3, bias=False, momentum=None),
                         nn.LayerNorm((2, 3), elementwise_affine=False), nn.Linear(300, 10, bias=False), nn.Flatten(), nn.Identity())
    theirs = torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                 torch.nn.BatchNorm1d(300), torch.nn.LayerNorm(300),
                                 torch.nn.BatchNorm2d(3, bias=False, momentum=None),
                                 torch.nn.LayerNorm((2, 3), elementwise_affine=False),
                                 torch.nn.Linear(300, 10, bias=False), torch.nn.Flatten(), torch.nn.Identity())
    assert repr(ours) == repr(theirs)


def test_parameter_basics():
    t = prunus.randn(2, 3)
    p = nn.Parameter(t)
    assert isinstance(p, prunus.Tensor) and p.requires_grad and p.is_leaf
    assert np.shares_memory(p.data, t.data)  # like torch: the Parameter wraps the same storage
    assert repr(p).startswith("Parameter containing:\ntensor(")
    q = copy.deepcopy(p)
    assert isinstance(q, nn.Parameter) and not np.shares_memory(q.data, p.data)
    m2 = copy.deepcopy(nn.Linear(2, 2))
    assert isinstance(m2.weight, nn.Parameter)
    assert not nn.Parameter(t, requires_grad=False).requires_grad


def _parameter_makers():
    def leaf(a, requires_grad):
        return nn.Parameter(prunus.tensor(a), requires_grad=requires_grad)

    def index(a):
        return prunus.tensor(a)

    return leaf, index


@pytest.mark.parametrize("info", OP_DB, ids=lambda r: r.name)
def test_every_op_accepts_parameters(info, monkeypatch):
    """The op table again, with every float input a Parameter: forward and gradients vs torch
    (float64) and gradcheck. Catches fast paths that test `type(x) is Tensor`."""
    pytest.importorskip("torch")
    from ops import test_op_db as t

    monkeypatch.setitem(op_samples._MAKERS, "prunus", _parameter_makers)
    for k, sample in enumerate(info.samples()):
        t.check_forward(info, sample, "float64")
        if info.differentiable:
            t.check_grad_vs_torch(info, sample, "float64", np.random.default_rng(k))
            if sample.gradcheck:
                t.run_gradcheck(info, sample)
