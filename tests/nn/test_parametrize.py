"""prunus.nn.utils.parametrize (torch.nn.utils.parametrize; prunus.nn.parametrize re-exports
it): the parametrized value on each access, gradients to the original, chains, assignment through
right_inverse, removal, caching, PyTorch's state_dict keys, Module.to / deepcopy / optimizers /
compile on the original, and errors."""

import copy

import numpy as np
import pytest

import prunus
import prunus.nn.functional as F
from prunus import nn, optim
from prunus.errors import ArgumentError, DTypeError, ShapeError, StateDictError
from prunus.nn import parametrize as P


class Scale(nn.Module):
    """w * factor, with right_inverse w / factor; counts its forwards."""

    def __init__(self, factor=2.0):
        super().__init__()
        self.factor = factor
        self.calls = 0

    def forward(self, w):
        self.calls += 1
        return w * self.factor

    def right_inverse(self, w):
        return w / self.factor


class Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


class LearnedScale(nn.Module):  # a parametrization with a parameter of its own
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(prunus.tensor(3.0))

    def forward(self, w):
        return w * self.s


class NoInverse(nn.Module):
    def forward(self, w):
        return w + 1


def _lin(seed=0):
    prunus.manual_seed(seed)
    return nn.Linear(4, 3)


def test_weight_is_computed_from_the_original_on_each_access():
    lin = _lin()
    w0 = lin.weight
    before = w0.detach().numpy().copy()
    assert P.register_parametrization(lin, "weight", Mask(prunus.ones(3, 4))) is lin
    assert P.is_parametrized(lin) and P.is_parametrized(lin, "weight")
    assert not P.is_parametrized(lin, "bias") and not P.is_parametrized(_lin())
    orig = lin.parametrizations.weight.original
    assert orig is w0 and isinstance(orig, nn.Parameter)  # same object: optimizers keep working
    np.testing.assert_array_equal(orig.detach().numpy(), before)
    with prunus.no_grad():
        lin.parametrizations.weight[0].mask[0] = 0.0
    w = lin.weight
    assert not w.is_leaf and w.requires_grad  # differentiable, recomputed each time
    np.testing.assert_array_equal(w.detach().numpy()[0], 0)
    np.testing.assert_array_equal(w.detach().numpy()[1:], before[1:])
    assert type(lin) is nn.Linear  # no per-instance subclass


def test_parameters_state_dict_keys_and_forward_follow_pytorch():
    lin = _lin()
    P.register_parametrization(lin, "weight", Mask(prunus.ones(3, 4)))
    assert [n for n, _ in lin.named_parameters()] == ["bias", "parametrizations.weight.original"]
    assert list(lin.state_dict()) == ["bias", "parametrizations.weight.original",
                                      "parametrizations.weight.0.mask"]
    x = prunus.randn(5, 4)
    np.testing.assert_array_equal(lin(x).detach().numpy(),
                                  F.linear(x, lin.weight, lin.bias).detach().numpy())


def test_state_dict_keys_match_torch():
    torch = pytest.importorskip("torch")
    import torch.nn.utils.parametrize as TP

    class TMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", torch.ones(3, 4))

        def forward(self, w):
            return w * self.mask

    t = torch.nn.Linear(4, 3)
    TP.register_parametrization(t, "weight", TMask())
    ours = _lin()
    P.register_parametrization(ours, "weight", Mask(prunus.ones(3, 4)))
    assert list(ours.state_dict()) == list(t.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in t.named_parameters()]


def test_gradients_reach_the_original_and_the_parametrizations_parameters():
    lin = _lin()
    P.register_parametrization(lin, "weight", LearnedScale())
    assert [n for n, _ in lin.named_parameters()] == [
        "bias", "parametrizations.weight.original", "parametrizations.weight.0.s"]
    x = prunus.randn(5, 4)
    lin(x).sum().backward()
    orig = lin.parametrizations.weight.original
    g = np.ones((5, 3), np.float32).T @ x.numpy()  # d sum / d W (3, 4)
    np.testing.assert_allclose(orig.grad.numpy(), 3.0 * g, rtol=1e-5)
    expected_s = float((g * orig.detach().numpy()).sum())
    np.testing.assert_allclose(lin.parametrizations.weight[0].s.grad.item(), expected_s, rtol=1e-5)


def test_chained_parametrizations_apply_in_order():
    lin = _lin()
    raw = lin.weight.detach().numpy().copy()
    mask = prunus.tensor(np.tile([1.0, 0.0, 1.0, 0.0], (3, 1)).astype(np.float32))
    P.register_parametrization(lin, "weight", Mask(mask))
    P.register_parametrization(lin, "weight", NoInverse())  # (w * mask) + 1
    assert len(lin.parametrizations.weight) == 2
    np.testing.assert_allclose(lin.weight.detach().numpy(), raw * mask.numpy() + 1)
    assert "parametrizations.weight.1" not in lin.state_dict()  # no state of its own


def test_assignment_goes_through_right_inverse():
    lin = _lin()
    P.register_parametrization(lin, "weight", Scale(2.0))
    target = prunus.randn(3, 4)
    lin.weight = target
    np.testing.assert_allclose(lin.parametrizations.weight.original.detach().numpy(),
                               target.numpy() / 2, rtol=1e-6)
    np.testing.assert_allclose(lin.weight.detach().numpy(), target.numpy(), rtol=1e-6)
    with pytest.raises(DTypeError, match="only a Tensor"):
        lin.weight = nn.Parameter(prunus.randn(3, 4))
    with pytest.raises(ShapeError, match=r"\(4, 3\).*expected \(3, 4\)"):
        lin.weight = prunus.randn(4, 3)
    P.register_parametrization(lin, "weight", NoInverse())
    with pytest.raises(ArgumentError, match="NoInverse does not implement right_inverse"):
        lin.weight = target


def test_remove_parametrizations_keeps_the_value_or_the_original():
    for leave in (True, False):
        lin = _lin()
        w0 = lin.weight
        raw = w0.detach().numpy().copy()
        # registering keeps the value: the original becomes right_inverse(w) = w / 2
        P.register_parametrization(lin, "weight", Scale(2.0))
        np.testing.assert_allclose(lin.weight.detach().numpy(), raw)
        P.remove_parametrizations(lin, "weight", leave_parametrized=leave)
        assert lin.weight is w0 and isinstance(lin.weight, nn.Parameter)
        assert not P.is_parametrized(lin) and "parametrizations" not in lin._modules
        np.testing.assert_allclose(lin.weight.detach().numpy(), raw if leave else raw / 2)
        assert sorted(lin.state_dict()) == ["bias", "weight"]
    with pytest.raises(ArgumentError, match="has no parametrization on 'weight'"):
        P.remove_parametrizations(lin, "weight")


def test_removing_one_of_two_keeps_the_other():
    lin = _lin()
    P.register_parametrization(lin, "weight", Scale(2.0))
    P.register_parametrization(lin, "bias", Scale(3.0))
    P.remove_parametrizations(lin, "weight")
    assert P.is_parametrized(lin, "bias") and not P.is_parametrized(lin, "weight")
    assert list(lin.state_dict()) == ["weight", "parametrizations.bias.original"]


def test_remove_all_parametrizations_leaves_plain_values():
    prunus.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    P.register_parametrization(model[0], "weight", Scale(2.0))
    P.register_parametrization(model[0], "bias", Scale(3.0))
    P.register_parametrization(model[2], "weight", Mask(prunus.tensor([[1.0, 0.0, 1.0]] * 2)))
    x = prunus.randn(5, 4)
    with prunus.no_grad():
        want = model(x).numpy()
    assert P.remove_all_parametrizations(model) is model
    assert not any(P.is_parametrized(m) for m in model.modules())
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    with prunus.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), want)
    assert (model[2].weight.detach().numpy()[:, 1] == 0).all()


def test_cached_computes_each_value_once():
    lin = _lin()
    sc = Scale(2.0)
    P.register_parametrization(lin, "weight", sc)
    sc.calls = 0
    with P.cached():
        a, b = lin.weight, lin.weight
        with P.cached():  # nested: still the same cache
            c = lin.weight
    assert a is b is c and sc.calls == 1
    assert lin.weight is not a and sc.calls == 2


def test_to_and_optimizers_act_on_the_original():
    lin = _lin()
    opt = optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)  # made before
    P.register_parametrization(lin, "weight", Mask(prunus.ones(3, 4)))
    lin.double()
    orig = lin.parametrizations.weight.original
    assert orig.dtype is prunus.float64 and lin.parametrizations.weight[0].mask.dtype is prunus.float64
    assert lin.weight.dtype is prunus.float64
    before = orig.detach().numpy().copy()
    lin(prunus.randn(2, 4, dtype=prunus.float64)).sum().backward()
    opt.step()
    assert not np.array_equal(orig.detach().numpy(), before)


def test_buffers_can_be_parametrized():
    bn = nn.BatchNorm1d(3)
    P.register_parametrization(bn, "running_var", Scale(2.0))
    np.testing.assert_array_equal(bn.running_var.numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(bn.parametrizations.running_var.original.numpy(), [0.5] * 3)
    assert "parametrizations.running_var.original" in bn.state_dict()
    assert not any("running_var" in n for n, _ in bn.named_parameters())
    P.remove_parametrizations(bn, "running_var")
    assert "running_var" in bn._buffers


def test_conv2d_forward_uses_the_parametrized_weight():
    prunus.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3)
    P.register_parametrization(conv, "weight", Scale(0.5))
    x = prunus.randn(1, 2, 5, 5)
    ref = F.conv2d(x, conv.parametrizations.weight.original * 0.5, conv.bias)
    np.testing.assert_array_equal(conv(x).detach().numpy(), ref.detach().numpy())


def test_state_dict_round_trip_through_save_and_load(tmp_path):
    lin = _lin(0)
    mask = prunus.tensor((np.arange(12).reshape(3, 4) % 3 != 0).astype(np.float32))
    P.register_parametrization(lin, "weight", Mask(mask))
    prunus.save(lin.state_dict(), tmp_path / "m.safetensors")
    other = _lin(1)
    P.register_parametrization(other, "weight", Mask(prunus.ones(3, 4)))
    other.load_state_dict(prunus.load(tmp_path / "m.safetensors"))
    x = prunus.randn(2, 4)
    np.testing.assert_array_equal(other(x).detach().numpy(), lin(x).detach().numpy())
    np.testing.assert_array_equal(other.parametrizations.weight[0].mask.numpy(), mask.numpy())
    with pytest.raises(StateDictError, match="parametrizations.weight.original"):
        _lin().load_state_dict(lin.state_dict())


def test_deepcopy_copies_the_parametrization():
    lin = _lin()
    P.register_parametrization(lin, "weight", Mask(prunus.ones(3, 4)))
    twin = copy.deepcopy(lin)
    assert P.is_parametrized(twin, "weight")
    assert twin.parametrizations.weight.original is not lin.parametrizations.weight.original
    with prunus.no_grad():
        twin.parametrizations.weight[0].mask.zero_()
    assert np.all(twin.weight.detach().numpy() == 0)
    assert np.any(lin.weight.detach().numpy() != 0)


def test_a_compiled_function_reads_the_original_and_mask_live():
    lin = _lin()
    P.register_parametrization(lin, "weight", Mask(prunus.ones(3, 4)))
    c = prunus.compile(lambda x: lin(x))
    x = prunus.randn(2, 4)
    with prunus.no_grad():
        c(x)
        lin.parametrizations.weight[0].mask[:, 0] = 0.0
        lin.parametrizations.weight.original.mul_(2.0)
        np.testing.assert_array_equal(c(x).numpy(), lin(x).numpy())
    assert c.traces == 1


def test_pytorch_import_path():
    """The code lives in the package prunus.nn.utils, as torch.nn.utils.parametrize; every spelling
    (and prunus.nn.parametrize, a re-export) gives the same functions."""
    import prunus.nn.utils.parametrize as TP
    from prunus.nn.utils import parametrize as TP2
    from prunus.nn.utils.parametrize import register_parametrization

    assert TP is TP2 is nn.utils.parametrize and TP.__name__ == "prunus.nn.utils.parametrize"
    assert register_parametrization is P.register_parametrization
    assert P.__all__ == TP.__all__ and all(getattr(P, k) is getattr(TP, k) for k in TP.__all__)


def test_errors_name_the_layer_and_the_tensor():
    lin = _lin()
    with pytest.raises(ArgumentError, match=r"Linear\(in_features=4.*no parameter or buffer.*"
                                            r"parameters: weight, bias"):
        P.register_parametrization(lin, "wieght", Scale())
    with pytest.raises(DTypeError, match="must be a Module"):
        P.register_parametrization(lin, "weight", lambda w: w)
    with pytest.raises(DTypeError, match="expected a Module"):
        P.register_parametrization("lin", "weight", Scale())

    class Flat(nn.Module):
        def forward(self, w):
            return w.reshape(-1)

    with pytest.raises(ShapeError, match=r"gave shape \(12,\), expected \(3, 4\).*unsafe=True"):
        P.register_parametrization(lin, "weight", Flat())
    assert not P.is_parametrized(lin) and isinstance(lin.weight, nn.Parameter)  # nothing changed
    P.register_parametrization(lin, "weight", Flat(), unsafe=True)
    assert lin.weight.shape == (12,)

    class ToDouble(nn.Module):
        def forward(self, w):
            return w.to(prunus.float64)

    lin = _lin()
    P.register_parametrization(lin, "weight", Scale())
    with pytest.raises(DTypeError, match="dtype float64, expected float32"):
        P.register_parametrization(lin, "weight", ToDouble())  # appending is checked too
    with pytest.raises(ArgumentError, match="'weight' of Linear is parametrized"):
        lin.register_parameter("weight", nn.Parameter(prunus.randn(3, 4)))
