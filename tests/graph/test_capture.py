"""prunus.compile and capture: compiled training steps replay eager bit for bit; retracing on new
signatures and failed guards; loud failures for Python control flow on tensor values; the IR's
text and Graphviz forms."""

import pathlib

import numpy as np
import pytest
from train_steps import cross_entropy_step

import prunus
import prunus.nn.functional as F
from prunus import models, nn, optim
from prunus.errors import CaptureError
from prunus.graph import capture

RNG = np.random.default_rng(0)


def _batches(n, batch=16, shape=(1, 28, 28), seed=0):
    rng = np.random.default_rng(seed)
    xs = [prunus.tensor(rng.standard_normal((batch, *shape)).astype(np.float32)) for _ in range(n)]
    ys = [prunus.tensor(rng.integers(0, 10, batch)) for _ in range(n)]
    return xs, ys


def _train(model_fn, compiled, steps=6, opt_kwargs=None, seed=0):
    prunus.manual_seed(seed)
    m = model_fn()
    if opt_kwargs is None:
        opt_kwargs = {"momentum": 0.9, "weight_decay": 5e-4}
    opt = optim.SGD(m.parameters(), lr=0.05, **opt_kwargs)
    xs, ys = _batches(3)

    step = cross_entropy_step(m, opt)

    f = prunus.compile(step) if compiled else step
    losses = [float(f(xs[i % 3], ys[i % 3])) for i in range(steps)]
    return losses, [p.detach().numpy().copy() for p in m.parameters()], f, m


@pytest.mark.parametrize("model", ["lenet_300_100", "lenet5"])
def test_compiled_training_step_replays_eager_bit_for_bit(model):
    le, we, _, _ = _train(getattr(models, model), compiled=False)
    lc, wc, f, m = _train(getattr(models, model), compiled=True)
    assert le == lc
    for a, b in zip(we, wc):
        np.testing.assert_array_equal(a, b)
    # the first step creates the momentum buffers (not reusable), the second is cached
    assert f.traces == 2 and f.retraces == 1 and len(f.cache) == 1
    assert all(p.grad is not None for p in m.parameters())  # .grad is set by the replay too


@pytest.mark.parametrize(("opt_cls", "kwargs", "traces"), [
    (optim.Adam, {"weight_decay": 1e-4}, 2),
    (optim.AdamW, {"amsgrad": True, "maximize": True}, 2),
    (optim.RMSprop, {"momentum": 0.9, "centered": True}, 2),
    (optim.Adagrad, {"lr_decay": 0.1}, 1),  # its state exists from the constructor on
])
def test_optimizers_with_step_counts_are_cached_and_replay_eager(opt_cls, kwargs, traces):
    # the step counts are tensors the update advances, so replays count on (and the bias
    # corrections follow) instead of freezing the traced step's count into the graph
    xs, ys = _batches(3)
    runs = []
    for compiled in (False, True):
        prunus.manual_seed(0)
        m = models.lenet_300_100()
        opt = opt_cls(m.parameters(), lr=1e-3, **kwargs)
        step = cross_entropy_step(m, opt)
        f = prunus.compile(step) if compiled else step
        losses = [float(f(xs[i % 3], ys[i % 3])) for i in range(8)]
        runs.append((losses, [p.detach().numpy().copy() for p in m.parameters()], f, opt))
    (le, we, _, _), (lc, wc, f, opt) = runs
    assert le == lc
    for a, b in zip(we, wc):
        np.testing.assert_array_equal(a, b)
    assert f.traces == traces and len(f.cache) == 1
    assert {st["step"].item() for st in opt.state.values()} == {8.0}


def test_plain_sgd_step_is_cached_at_once_and_grads_match():
    le, _, _, me = _train(models.lenet_300_100, False, opt_kwargs={})
    lc, _, f, mc = _train(models.lenet_300_100, True, opt_kwargs={})
    assert le == lc and f.traces == 1
    for a, b in zip(me.parameters(), mc.parameters()):
        np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())


def test_new_shapes_and_python_arguments_retrace():
    calls = []

    def fn(x, scale):
        calls.append(1)
        return x * scale + 1

    c = prunus.compile(fn)
    a, b = prunus.randn(3, 4), prunus.randn(5, 4)
    for x, s in [(a, 2.0), (a, 2.0), (b, 2.0), (b, 2.0), (a, 3.0), (a, 3.0), (a, 2.0)]:
        np.testing.assert_allclose(c(x, s).numpy(), x.numpy() * s + 1)
    assert c.traces == 3 and c.retraces == 2 and len(calls) == 3 and len(c.cache) == 3
    c(a.to(prunus.float64), 2.0)
    assert c.traces == 4


def test_a_compiled_function_follows_its_parameters():
    lin = nn.Linear(4, 3)
    c = prunus.compile(lambda x: lin(x))
    x = prunus.randn(2, 4)
    with prunus.no_grad():
        c(x)
        lin.weight.mul_(2.0)  # state is read live on every run
        np.testing.assert_allclose(c(x).numpy(), lin(x).numpy(), rtol=1e-6)
    assert c.traces == 1


def test_train_eval_switch_is_a_guard():
    prunus.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.Linear(6, 2))
    c = prunus.compile(m)
    x = prunus.randn(4, 6)
    with prunus.no_grad():
        m.eval()
        e1 = c(x).numpy()
        m.train()
        t1 = c(x).numpy()
        m.eval()
        np.testing.assert_array_equal(c(x).numpy(), e1)
        assert c.traces == 2  # eval graph reused after the switch back
        assert not np.array_equal(t1, e1)


def test_dropout_draws_a_fresh_mask_each_run_like_eager():
    def run(compiled):
        prunus.manual_seed(7)
        def fn(x):
            return F.dropout(x, 0.5, training=True)

        f = prunus.compile(fn) if compiled else fn
        x = prunus.ones(8, 8)
        return [f(x).numpy() for _ in range(4)]

    eager, comp = run(False), run(True)
    for a, b in zip(eager, comp):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(comp[2], comp[3])


def test_learning_rate_change_retraces_and_applies():
    prunus.manual_seed(0)
    m = models.lenet_300_100()
    opt = optim.SGD(m.parameters(), lr=0.05)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    xs, ys = _batches(1)

    step = cross_entropy_step(m, opt)

    c = prunus.compile(step)
    ref = models.lenet_300_100()
    ref.load_state_dict(m.state_dict())
    ropt = optim.SGD(ref.parameters(), lr=0.05)
    rsched = optim.lr_scheduler.StepLR(ropt, step_size=2, gamma=0.1)
    for _ in range(5):
        c(xs[0], ys[0])
        sched.step()
        step_ref = F.cross_entropy(ref(xs[0]), ys[0])
        ropt.zero_grad()
        step_ref.backward()
        ropt.step()
        rsched.step()
    for a, b in zip(m.parameters(), ref.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert c.traces == 3  # lr 0.05, 0.005, 0.0005


def test_gradient_accumulation_without_zero_grad_is_guarded():
    w = prunus.tensor([1.0, 2.0], requires_grad=True)

    def fn(x):
        (w * x).sum().backward()
        return x

    c = prunus.compile(fn)
    x = prunus.tensor([3.0, 4.0])
    for k in range(1, 5):
        c(x)
        np.testing.assert_array_equal(w.grad.numpy(), [3.0 * k, 4.0 * k])


@pytest.mark.parametrize("body, what", [
    (lambda x: x.sum().item(), "item()"),
    (lambda x: x * 2 if x.sum() > 0 else x, "bool()"),
    (lambda x: prunus.tensor(x.numpy() + 1), "numpy()"),
    (lambda x: float(x.sum()), "item()"),
    (lambda x: x.tolist(), "tolist()"),
    (lambda x: np.asarray(x), "NumPy"),
])
def test_python_control_flow_on_values_fails_loudly(body, what):
    c = prunus.compile(body)
    with pytest.raises(CaptureError, match="prunus.cond") as info:
        c(prunus.randn(3))
    assert what in str(info.value) and "on a tensor of shape (" in str(info.value)
    assert c.traces == 0 and not c.cache


def test_returning_live_history_and_odd_values_fail_loudly():
    # (outputs with history are differentiable: tests/graph/test_compiled_autograd.py)
    x = prunus.randn(2, 3, requires_grad=True)
    with pytest.raises(CaptureError, match="did not compute"):
        prunus.compile(lambda a: a)(x * 1)
    with pytest.raises(CaptureError, match="returned a object"):
        prunus.compile(lambda x: object())(prunus.randn(2))
    with pytest.raises(CaptureError, match="cache key"):
        prunus.compile(lambda x, d: x)(prunus.randn(2), {"a": 1})


def test_return_structures_round_trip():
    c = prunus.compile(lambda x: {"a": (x + 1, [x * 2, None]), "n": 3})
    for _ in range(2):
        out = c(prunus.ones(2))
        assert out["n"] == 3 and out["a"][1][1] is None
        np.testing.assert_array_equal(out["a"][0].numpy(), [2.0, 2.0])
        np.testing.assert_array_equal(out["a"][1][0].numpy(), [2.0, 2.0])


def test_graph_print_and_dot_show_forward_backward_and_update():
    _, _, f, _ = _train(models.lenet_300_100, True, steps=2)
    g = f.last_graph
    text = g.print(file=open("/dev/null", "w"))  # noqa: SIM115
    for name in ("Linear", "ReLU", "CrossEntropy", "CrossEntropyBackward", "ReLUGrad", "SGDUpdate"):
        assert name in text
    assert "# writes" in text and ".grad of" in text
    dot = g.to_dot()
    assert dot.startswith('digraph "prunus graph"') and dot.rstrip().endswith("}")
    assert dot.count("shape=box") == len(g.nodes)


def test_capture_returns_the_eager_result_and_records_inputs():
    x = prunus.randn(3, 2)
    g, result, reasons = capture(lambda a: (a * a).sum(0), x)
    np.testing.assert_array_equal(result.numpy(), (x.numpy() ** 2).sum(0))
    assert reasons == [] and len(g.inputs) == 1 and [n.name for n in g.nodes] == ["Mul", "Sum"]


def test_a_compiled_function_called_while_capturing_is_inlined():
    inner = prunus.compile(lambda x: x + 1)
    outer = prunus.compile(lambda x: inner(x) * 2)
    for v in (1.0, 3.0):
        assert outer(prunus.full((2,), v)).tolist() == [2 * (v + 1)] * 2
    assert outer.traces == 1 and inner.traces == 0  # inner ran as part of outer's trace
    assert [n.name for n in outer.last_graph.nodes] == ["Add", "Mul"]
    # the capture function itself still refuses to nest
    with pytest.raises(CaptureError, match="nest"):
        capture(lambda x: capture(lambda y: y, x), prunus.ones(2))


def test_a_compiled_module_copies_exports_and_shows_its_module(tmp_path):
    import copy

    prunus.manual_seed(0)
    m = models.lenet_300_100().eval()
    c = prunus.compile(m)
    x = prunus.randn(2, 1, 28, 28)
    with prunus.no_grad():
        want = c(x).numpy()
        c2 = copy.deepcopy(c)
        assert isinstance(c2, type(c)) and c2.module is not m and c2.traces == 0
        np.testing.assert_array_equal(c2(x).numpy(), want)
    assert repr(c).startswith("CompiledModule(LeNet300100(")
    # methods that return the module return the compiled module: chaining keeps it compiled
    assert c.train() is c and c.eval() is c and c.to("cpu") is c and not c.training
    assert [p.shape for p in c.parameters()] == [p.shape for p in m.parameters()]
    pytest.importorskip("onnx")
    prunus.onnx.export(c, (x,), tmp_path / "m.onnx")  # exported as the module it wraps
    assert (tmp_path / "m.onnx").stat().st_size > 1000


def test_index_tensors_and_loss_targets_are_read_on_every_run():
    idx = prunus.tensor(np.array([0, 2]))
    c = prunus.compile(lambda x: x[idx] * 2)
    x = prunus.arange(5.0)
    assert c(x).tolist() == [0.0, 4.0]
    idx.copy_(prunus.tensor(np.array([4, 1])))
    assert c(x).tolist() == [8.0, 2.0] and c.traces == 1
    z = prunus.randn(4, 5)
    for loss in (F.nll_loss, F.multi_margin_loss, F.cross_entropy):
        c = prunus.compile(lambda z, t, loss=loss: loss(z, t))
        for t in ([0, 1, 2, 3], [4, 4, 4, 4], [1, 0, 1, 0]):
            t = prunus.tensor(np.array(t))
            assert float(c(z, t)) == float(loss(z, t))
        assert c.traces == 1
    i32 = prunus.tensor(np.array([0, 1], dtype=np.int32))
    c = prunus.compile(lambda x: x[i32])
    assert c(x).tolist() == [0.0, 1.0]
    i32.copy_(prunus.tensor(np.array([3, 3], dtype=np.int32)))
    assert c(x).tolist() == [3.0, 3.0]


def test_render_draws_png_and_svg_with_graphviz(tmp_path):
    import shutil

    _, _, f, _ = _train(models.lenet_300_100, True, steps=2)
    if shutil.which("dot") is None:
        with pytest.raises(prunus.errors.MissingDependencyError, match="graphviz"):
            f.last_graph.render(str(tmp_path / "g.png"))
        return
    png = f.last_graph.render(str(tmp_path / "g.png"))
    assert pathlib.Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = f.last_graph.render(str(tmp_path / "g.svg"))
    assert "SGDUpdate" in pathlib.Path(svg).read_text()
    with pytest.raises(prunus.errors.ArgumentError, match=".png"):
        f.last_graph.render(str(tmp_path / "g.txt"))


def test_ops_of_another_thread_stay_out_of_a_capture():
    import threading

    started, release = threading.Event(), threading.Event()
    other = prunus.ones(3)

    def fn(x):
        started.set()
        release.wait(5)  # the other thread runs its ops while this capture is open
        return x * 2

    t = threading.Thread(target=lambda: (started.wait(5), other + 1, other.exp(), release.set()))
    t.start()
    c = prunus.compile(fn)
    out = c(prunus.ones(3))
    t.join(5)
    assert out.tolist() == [2.0, 2.0, 2.0]
    assert [n.name for n in c.last_graph.nodes] == ["Mul"]  # not the other thread's Add and Exp
