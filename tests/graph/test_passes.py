"""Graph passes (prunus/graph/passes/): each one changes the graph it should, leaves it well formed,
and the executor then gives bit for bit what eager gives on fresh random inputs; negative
controls for state, in-place writes, randomness and results handed out; compiled LeNet training
with the default passes replays eager exactly; the before/after report."""

import numpy as np
import pytest
from train_steps import cross_entropy_step

import prunus
import prunus.nn.functional as F
from prunus import models, optim
from prunus.errors import ArgumentError
from prunus.graph import Executor, capture
from prunus.graph.ir import CONST, NODE, SAVED, Ref
from prunus.graph.passes import (
    DEFAULT,
    PASSES,
    format_report,
    peak_bytes,
    run_passes,
    run_with_report,
)
from prunus.graph.passes._rewrite import iter_refs
from prunus.graph.passes.cse import same_attr
from prunus.ops._util import constant
from prunus.ops.movement import Reshape

RNG = np.random.default_rng(0)


def _rand(*shape, dtype=np.float32):
    return prunus.tensor(RNG.standard_normal(shape).astype(dtype))


def _check_well_formed(g):
    assert [n.index for n in g.nodes] == list(range(len(g.nodes)))
    assert [v.index for v in g.values] == list(range(len(g.values)))
    produced = {}
    for n in g.nodes:
        assert g.values[n.output].kind == NODE and g.values[n.output].node == n.index
        produced[n.output] = n.index
        for i in n.inputs:
            v = g.values[i]
            assert v.kind != NODE or produced.get(i, len(g.nodes)) < n.index, "read before made"
            assert v.kind != SAVED or v.node < n.index
        for r in iter_refs(n.attrs):
            assert n.has_refs
            assert (r.value is not None and r.value < len(g.values)) or r.node < n.index
    for v in g.values:
        if v.kind in (NODE, SAVED):
            assert 0 <= v.node < len(g.nodes)
    assert all(i < len(g.values) for i in g.outputs)
    assert all(i < len(g.values) for _, i in g.grad_outputs)


def _bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
    if a.dtype.kind == "f":
        np.testing.assert_array_equal(np.signbit(a), np.signbit(b))  # -0.0 is not 0.0


def _grads_replay_eager(g, fn, shape, trials=3):
    """The optimized graph `g` of fn(x) (which backpropagates into x.grad) sets the gradient eager
    sets, bit for bit, on fresh random inputs of `shape`."""
    ex = Executor(g)
    for _ in range(trials):
        x = _rand(*shape)
        x.requires_grad = True
        fn(x)
        want = x.grad.detach().numpy().copy()
        ex.run((x,), {})
        _bits_equal(x.grad.numpy(), want)


def _as_list(r):
    return list(r) if isinstance(r, (tuple, list)) else [r]


def _optimized(fn, inputs, passes):
    """Capture fn on inputs and run the passes; (graph, nodes before, rows)."""
    g, _, reasons = capture(fn, *inputs)
    assert reasons == []
    before = len(g.nodes)
    rows = run_passes(g, passes)
    _check_well_formed(g)
    return g, before, rows


def _same_as_eager(g, fn, make_inputs, trials=4, seed=None):
    ex = Executor(g)
    for _ in range(trials):
        inputs = make_inputs()
        if seed is not None:
            prunus.manual_seed(seed)
        want = fn(*inputs)
        if seed is not None:
            prunus.manual_seed(seed)
        got = ex.run(inputs, {})
        for a, b in zip(_as_list(want), _as_list(got)):
            _bits_equal(a.detach().numpy(), b.detach().numpy())


def _ops(g):
    return [n.name for n in g.nodes]


# -- dce ---------------------------------------------------------------------------------------


def test_dce_removes_a_dead_chain_and_keeps_results():
    def fn(x):
        dead = ((x + 1.0) * 2.0).exp().sum()  # noqa: F841
        return x.sin() * 3.0

    g, before, rows = _optimized(fn, [_rand(4, 5)], ["dce"])
    assert rows[0]["report"] == {"removed": 4} and len(g.nodes) == before - 4 == 2
    assert _ops(g) == ["Sin", "Mul"]
    assert sum(v.kind == CONST for v in g.values) == 1  # the dead chain's constants went too
    _same_as_eager(g, fn, lambda: [_rand(4, 5)])


def test_dce_keeps_in_place_writes_and_their_effect():
    buf = prunus.zeros(3)

    def fn(x):
        buf.add_(x)  # nobody reads the result: it matters only through buf
        (x * 5.0).exp()  # dead
        return x * 2.0

    g, before, _ = _optimized(fn, [_rand(3)], ["dce"])
    assert len(g.nodes) == before - 2 and "AddInPlace" in _ops(g)
    x = _rand(3)
    start = buf.numpy().copy()
    Executor(g).run((x,), {})
    _bits_equal(buf.numpy(), start + x.numpy())


def test_dce_keeps_a_dead_dropout_so_later_draws_match():
    def fn(x):
        F.dropout(x, 0.5)  # unused, but it advances the generator
        return F.dropout(x, 0.5) * 2.0

    g, before, rows = _optimized(fn, [_rand(6, 6)], ["dce"])
    assert len(g.nodes) == before and rows[0]["report"]["removed"] == 0
    _same_as_eager(g, fn, lambda: [_rand(6, 6)], seed=7)


def test_dce_keeps_a_node_whose_saved_array_backward_reads():
    def fn(x):
        x.grad = None
        x.exp().sum().backward()  # the loss is unread; Exp's saved output is read by backward

    x = _rand(3, 4)
    x.requires_grad = True
    g, before, _ = _optimized(fn, [x], ["dce"])
    assert "Sum" not in _ops(g) and "Exp" in _ops(g) and len(g.nodes) < before
    ex = Executor(g)
    for _ in range(3):
        x = _rand(3, 4)
        x.requires_grad = True
        ex.run((x,), {})
        _bits_equal(x.grad.numpy(), np.exp(x.detach().numpy()))


@pytest.mark.parametrize("create_graph", [False, True])
def test_dce_keeps_an_op_whose_saved_array_a_later_node_reads(create_graph):
    def fn(x):
        x.grad = None
        # the loss is unread; backward reads LogSumExp's saved max, as an attribute Ref of
        # LogSumExpGrad (plain backward) or as a SAVED value (create_graph)
        prunus.logsumexp(x, 1).sum().backward(create_graph=create_graph)

    x = _rand(3, 4)
    x.requires_grad = True
    g, before, _ = _optimized(fn, [x], ["dce"])
    assert "LogSumExp" in _ops(g) and "Sum" not in _ops(g)[:2] and len(g.nodes) == before - 1
    _grads_replay_eager(g, fn, (3, 4))


def test_dce_renumbers_refs_to_ops():
    prunus.manual_seed(0)
    m = models.lenet_300_100()

    def fn(x, y):
        (x * 3.0).exp()  # dead, in front of everything: every later index moves
        m.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        return loss

    xs = lambda: [_rand(4, 1, 28, 28), prunus.tensor(RNG.integers(0, 10, 4))]
    g, before, _ = _optimized(fn, xs(), ["dce"])
    assert len(g.nodes) == before - 2
    (ce,) = [n for n in g.nodes if n.name == "CrossEntropyBackward"]
    (fwd,) = [r for r in iter_refs(ce.attrs) if r.node is not None]
    assert g.nodes[fwd.node].name == "CrossEntropy"
    ex = Executor(g)
    for _ in range(3):
        x, y = xs()
        want = fn(x, y).detach().numpy()
        grads = [p.grad.numpy().copy() for p in m.parameters()]
        _bits_equal(ex.run((x, y), {}).numpy(), want)
        for p, gr in zip(m.parameters(), grads):
            _bits_equal(p.grad.numpy(), gr)


# -- cse ---------------------------------------------------------------------------------------


def test_cse_merges_repeats_and_what_they_feed():
    def fn(x):
        a = (x * 2.0).sin() * x.cos()
        b = (x * 2.0).sin() * x.cos()
        return a + b, (x * 2.0).exp()

    g, before, rows = _optimized(fn, [_rand(5, 3)], ["cse"])
    assert rows[0]["report"]["merged"] == 5 and len(g.nodes) == before - 5
    assert _ops(g).count("Mul") == 2 and _ops(g).count("Sin") == 1
    _same_as_eager(g, fn, lambda: [_rand(5, 3)])


def test_cse_compares_attributes_exactly():
    assert same_attr((1, [2.0, None]), (1, [2.0, None]))
    assert not same_attr(0.0, -0.0) and not same_attr(1, 1.0) and not same_attr(True, 1)
    assert same_attr(float("nan"), float("nan"))
    a = np.arange(6).reshape(2, 3)
    assert same_attr(a, a.copy()) and not same_attr(a, a.astype(np.int32))
    assert not same_attr(a, a.reshape(3, 2)) and same_attr(Ref(node=1), Ref(node=1))
    assert same_attr(slice(0, 2), slice(0, 2)) and not same_attr(slice(0, 2), slice(0, 2.0))
    assert not same_attr(object(), object())

    def fn(x):
        return prunus.clamp(x, min=0.0) * prunus.clamp(x, min=-0.0) + prunus.clamp(x, min=0.0)

    g, _, rows = _optimized(fn, [_rand(8)], ["cse"])
    assert rows[0]["report"]["merged"] == 1 and _ops(g).count("Clamp") == 2
    _same_as_eager(g, fn, lambda: [_rand(8)])


def test_cse_never_merges_dropouts():
    def fn(x):
        return F.dropout(x, 0.5) + F.dropout(x, 0.5)

    g, _, rows = _optimized(fn, [_rand(6, 6)], ["cse"])
    assert rows[0]["report"]["merged"] == 0 and _ops(g).count("Dropout") == 2
    _same_as_eager(g, fn, lambda: [_rand(6, 6)], seed=3)


def test_cse_never_merges_reads_of_written_state():
    buf = prunus.ones(4)

    def fn(x):
        a = buf.exp()
        buf.add_(x)
        return a + buf.exp()

    g, _, rows = _optimized(fn, [_rand(4)], ["cse"])
    assert rows[0]["report"]["merged"] == 0
    ex = Executor(g)
    for _ in range(3):
        x = _rand(4)
        start = buf.numpy().copy()
        want = fn(x).numpy()
        after = buf.numpy().copy()
        buf.copy_(prunus.tensor(start))
        _bits_equal(ex.run((x,), {}).numpy(), want)
        _bits_equal(buf.numpy(), after)


def test_cse_never_merges_a_result_written_later():
    def fn(x):
        a = x.exp()
        b = x.exp()
        b.add_(1.0)  # merged, a would see this write
        return a, b

    g, _, rows = _optimized(fn, [_rand(5)], ["cse"])
    assert rows[0]["report"]["merged"] == 0
    _same_as_eager(g, fn, lambda: [_rand(5)])


def test_cse_keeps_two_results_handed_out_two_arrays():
    def fn(x):
        return x.sin(), x.sin(), x.cos() * 2.0 + x.cos()

    g, _, rows = _optimized(fn, [_rand(5)], ["cse"])
    assert rows[0]["report"]["merged"] == 1 and _ops(g).count("Sin") == 2
    _same_as_eager(g, fn, lambda: [_rand(5)])
    r = Executor(g).run((_rand(5),), {})
    assert not np.shares_memory(r[0].numpy(), r[1].numpy())


def test_cse_hands_out_at_most_one_merged_result():
    def fn(x):
        a = x.sin()  # read inside; the next two would both become it
        return a * 2.0, x.sin(), x.sin()

    g, _, rows = _optimized(fn, [_rand(5)], ["cse"])
    assert rows[0]["report"]["merged"] == 1
    r = Executor(g).run((_rand(5),), {})
    assert not np.shares_memory(r[1].numpy(), r[2].numpy())
    _same_as_eager(g, fn, lambda: [_rand(5)])


def test_cse_merges_ops_that_later_nodes_refer_to():
    def fn(x):
        x.grad = None
        (prunus.logsumexp(x, 1).sum() + prunus.logsumexp(x, 1).sum() * 2.0).backward()

    x = _rand(3, 4)
    x.requires_grad = True
    g, _, rows = _optimized(fn, [x], ["cse"])
    assert _ops(g).count("LogSumExp") == 1 and rows[0]["report"]["merged"] >= 2
    _grads_replay_eager(g, fn, (3, 4))


def test_cse_merges_reads_of_written_state_when_no_write_is_between():
    buf = prunus.ones(4)

    def fn(x):
        a, b = buf.exp(), buf.exp()  # the same data: the write comes after both
        buf.add_(x)
        return a + b

    g, _, rows = _optimized(fn, [_rand(4)], ["cse"])
    assert rows[0]["report"]["merged"] == 1
    x, start = _rand(4), buf.numpy().copy()
    want = fn(x).numpy()
    buf.copy_(prunus.tensor(start))
    _bits_equal(Executor(g).run((x,), {}).numpy(), want)


def test_cse_never_merges_across_a_write_to_what_both_read():
    buf = prunus.ones(4)

    def fn(x):
        v = buf.reshape(2, 2)  # a view of buf
        a = v.exp()
        buf.add_(x)
        return a + v.exp()

    g, _, rows = _optimized(fn, [_rand(4)], ["cse"])
    assert rows[0]["report"]["merged"] == 0
    x, start = _rand(4), buf.numpy().copy()
    want = fn(x).numpy()
    buf.copy_(prunus.tensor(start))
    _bits_equal(Executor(g).run((x,), {}).numpy(), want)


# -- constant folding --------------------------------------------------------------------------


def test_constant_folding_folds_a_chain_of_constants():
    def fn(x):
        k = constant(2.0, x)
        return x * k.exp() + (k * 3.0).sqrt()

    g, before, rows = _optimized(fn, [_rand(3, 3)], ["constant_folding"])
    assert rows[0]["report"] == {"folded": 3} and len(g.nodes) == before - 3
    assert _ops(g) == ["Mul", "Add"]
    _same_as_eager(g, fn, lambda: [_rand(3, 3)])


def test_constant_folding_in_a_backward_pass():
    def fn(x):
        x.grad = None
        (x**3).sum().backward()  # Pow's backward computes 3 - 1 and 3 == 0 on constants

    x = _rand(4)
    x.requires_grad = True
    g, before, rows = _optimized(fn, [x], ["constant_folding"])
    # 3 - 1 and 3 == 0 fold, and so does backward's seed (a constant ones)
    folded = rows[0]["report"]["folded"]
    assert folded >= 2 and len(g.nodes) == before - folded
    _grads_replay_eager(g, fn, (4,))


def test_constant_folding_never_folds_state():
    w = prunus.tensor([0.5, 1.0, 2.0])

    def fn(x):
        return x * w.exp() + constant(1.0, x).exp()

    c = prunus.compile(fn, passes=["constant_folding"])
    x = _rand(3)
    c(x)
    c(x)  # replayed from the graph
    g = c.graph_for(x)
    assert g is not None and g.pass_reports[0]["report"]["folded"] == 1 and "Exp" in _ops(g)
    for new in ([3.0, -1.0, 0.25], [0.0, 0.0, 7.0]):
        w.copy_(prunus.tensor(new))
        x = _rand(3)
        _bits_equal(c(x).numpy(), fn(x).numpy())
    assert c.traces == 1


def test_constant_folding_keeps_results_handed_out_fresh():
    def fn(x):
        return constant(2.0, x).exp(), x + 1.0

    g, before, rows = _optimized(fn, [_rand(2)], ["constant_folding"])
    assert rows[0]["report"]["folded"] == 0 and len(g.nodes) == before
    ex = Executor(g)
    r1, r2 = ex.run((_rand(2),), {}), ex.run((_rand(2),), {})
    assert not np.shares_memory(r1[0].numpy(), r2[0].numpy())


def test_constant_folding_never_folds_what_is_written_in_place():
    def fn(x):
        k = constant(2.0, x).exp()
        k.mul_(0.5)  # folded, the constant itself would halve on every run
        return x * k

    g, before, rows = _optimized(fn, [_rand(3)], ["constant_folding"])
    assert rows[0]["report"]["folded"] == 0 and len(g.nodes) == before
    ex = Executor(g)
    for _ in range(3):
        x = _rand(3)
        _bits_equal(ex.run((x,), {}).numpy(), fn(x).numpy())


# -- algebraic ---------------------------------------------------------------------------------


def test_algebraic_removes_exact_identities():
    def fn(x, n):
        y = ((x * 1.0) / 1.0 - 0.0) + (-0.0)
        y = 1.0 * y
        return y.exp(), (n + 0) * 1 - 0

    ins = lambda: [_rand(3, 4), prunus.tensor(RNG.integers(-5, 5, (3,)))]
    g, _, rows = _optimized(fn, ins(), ["algebraic"])
    # the last `- 0` stays: the result handed out would otherwise be the caller's own array
    assert rows[0]["report"]["removed"] == 7 and _ops(g) == ["Exp", "Sub"]
    assert g.values[g.nodes[1].inputs[0]].kind == "input"
    _same_as_eager(g, fn, ins)


def test_algebraic_keeps_float_plus_zero_and_shape_or_dtype_changes():
    def fn(x):
        a = x + 0.0  # -0.0 + 0.0 is +0.0: not x
        b = x * constant(np.ones((2, 4)), x)  # broadcasts x up
        c = x * constant(2.0, x) * constant(0.5, x)  # not a constant one, whatever it folds to
        return (a * 2.0, b * 2.0, c * 2.0)

    zeros = lambda: [prunus.tensor(np.array([-0.0, 0.0, -0.0, 1.0], np.float32))]
    g, before, rows = _optimized(fn, zeros(), ["algebraic"])
    assert rows[0]["report"]["removed"] == 0 and len(g.nodes) == before
    _same_as_eager(g, fn, zeros, trials=1)
    _same_as_eager(g, fn, lambda: [_rand(4)])


def test_algebraic_where_with_a_constant_condition():
    def fn(x):
        x.grad = None
        (x**2).sum().backward()  # where(2 == 0, 0, g * 2 * x ** 1)

    x = _rand(5)
    x.requires_grad = True
    g, _, rows = _optimized(fn, [x], ["constant_folding", "algebraic"])
    assert "Where" not in _ops(g) and rows[1]["report"]["removed"] >= 1
    ex = Executor(g)
    for _ in range(3):
        x = _rand(5)
        x.requires_grad = True
        fn(x)
        want = x.grad.numpy().copy()
        ex.run((x,), {})
        _bits_equal(x.grad.numpy(), want)


def test_algebraic_cancels_and_collapses_permutes_and_reshapes():
    def fn(x):
        a = x.permute(1, 2, 0).permute(2, 0, 1)  # cancels
        b = x.permute(1, 2, 0).permute(1, 2, 0)  # one permute (2, 0, 1)
        c = x.reshape(6, 4).reshape(2, 12).reshape(4, 6)  # one reshape
        d = x.reshape(24).reshape(2, 3, 4)  # cancels
        e = Reshape.apply(x, shape=(2, 3, 4))  # to its own shape
        return a * 2.0, b * 2.0, c * 2.0, d + e

    g, _, rows = _optimized(fn, [_rand(2, 3, 4)], ["algebraic"])
    assert rows[0]["report"] == {"removed": 3, "collapsed": 5}
    assert _ops(g).count("Permute") == 1 and _ops(g).count("Reshape") == 1
    (p,) = [n for n in g.nodes if n.name == "Permute"]
    assert p.attrs["dims"] == (2, 0, 1) and g.values[p.inputs[0]].kind == "input"
    _same_as_eager(g, fn, lambda: [_rand(2, 3, 4)])

    def two_d(x):
        return x.t().t() * 2.0

    g, _, _ = _optimized(two_d, [_rand(3, 5)], ["algebraic"])
    assert _ops(g) == ["Mul"]
    _same_as_eager(g, two_d, lambda: [_rand(3, 5)])


def test_algebraic_never_hands_out_an_array_twice_or_the_callers_own():
    def fn(x):
        y = x * 3.0
        return y * 1.0, y * 1.0, x * 1.0

    g, _, rows = _optimized(fn, [_rand(4)], ["algebraic"])
    assert rows[0]["report"]["removed"] == 1
    x = _rand(4)
    r = Executor(g).run((x,), {})
    assert not np.shares_memory(r[0].numpy(), r[1].numpy())
    assert not np.shares_memory(r[2].numpy(), x.numpy())
    _same_as_eager(g, fn, lambda: [_rand(4)])

    def chain(x):  # a copy, then a view of it: eager's result is not a view of x
        return x.reshape(6).reshape(2, 3, 1)

    x = prunus.randn(3, 2).t()  # not contiguous: x.reshape(6) copies
    g, _, _ = _optimized(chain, [x], ["algebraic"])
    assert not np.shares_memory(Executor(g).run((x,), {}).numpy(), x.numpy())
    assert not np.shares_memory(chain(x).numpy(), x.numpy())


def test_algebraic_never_reads_state_written_in_between():
    buf = prunus.ones(4)
    w = prunus.ones(4)

    def fn(x):
        y = buf * 1.0  # a copy taken before the write below
        buf.add_(x)
        return y * 2.0 + x * w  # w is state, not a constant one

    g, before, rows = _optimized(fn, [_rand(4)], ["algebraic"])
    assert rows[0]["report"]["removed"] == 0 and len(g.nodes) == before
    x, start = _rand(4), buf.numpy().copy()
    want = fn(x).numpy()
    buf.copy_(prunus.tensor(start))
    _bits_equal(Executor(g).run((x,), {}).numpy(), want)
    w.copy_(prunus.tensor([1.0, 2.0, 3.0, 4.0]))
    buf.copy_(prunus.tensor(start))
    want = fn(x).numpy()
    buf.copy_(prunus.tensor(start))
    _bits_equal(Executor(g).run((x,), {}).numpy(), want)


# -- compile, defaults, report -----------------------------------------------------------------


def test_compile_runs_any_subset_of_passes():
    def fn(x):
        (x * 7.0).exp()
        return (x * 1.0).sin() + (x * 1.0).sin() + constant(2.0, x).exp()

    x = _rand(3)
    counts = {}
    for passes in ([], ["dce"], ["cse", "dce"], None, ["dce", "cse", "algebraic", "constant_folding"]):
        c = prunus.compile(fn, passes=passes)
        c(x)
        g = c.graph_for(x)
        assert len(g.pass_reports) == len(DEFAULT if passes is None else passes)
        counts[str(passes)] = len(g.nodes)
        for _ in range(2):
            x2 = _rand(3)
            _bits_equal(c(x2).numpy(), fn(x2).numpy())
    assert counts["[]"] == 9 and counts["['dce']"] == 7 and counts["None"] == 3
    with pytest.raises(ArgumentError, match="unknown pass 'fold'"):
        prunus.compile(fn, passes=["fold"])(x)
    with pytest.raises(ArgumentError, match="list of pass names"):
        prunus.compile(fn, passes="dce")(x)


def test_defaults_and_registry():
    assert set(DEFAULT) <= set(PASSES)
    assert {"constant_folding", "algebraic", "cse", "dce"} <= set(DEFAULT)
    assert DEFAULT.index("dce") > DEFAULT.index("cse") and "memory" not in DEFAULT[:-1]
    g, _, _ = capture(lambda x: x.exp(), _rand(2))
    with pytest.raises(ArgumentError, match="'memory' must come last"):
        run_passes(g, ["memory", "dce"])


def test_peak_bytes_follows_the_executor_plan():
    def fn(x):
        return x.exp().sin()  # at Sin: exp's result (dropped after) and sin's

    g, _, _ = capture(fn, _rand(4))
    assert peak_bytes(g) == 32

    def dead(x):
        x.exp()  # an unread result stays until the end of the run
        return x.sin().cos()

    g, _, _ = capture(dead, _rand(4))
    rows = run_with_report(g, ["dce"])
    r = rows[0]
    assert (r["nodes_before"], r["nodes_after"]) == (3, 2)
    assert (r["peak_bytes_before"], r["peak_bytes_after"]) == (48, 32)
    text = format_report(rows)
    assert "dce" in text and "removed=1" in text


# -- end to end --------------------------------------------------------------------------------


def _train(model_fn, compiled, steps=5, batch=8, passes=None, extra=None):
    prunus.manual_seed(0)
    m = model_fn()
    opt = optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(1)
    xs = [prunus.tensor(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)) for _ in range(2)]
    ys = [prunus.tensor(rng.integers(0, 10, batch)) for _ in range(2)]

    step = cross_entropy_step(m, opt, extra)

    f = prunus.compile(step, passes=passes) if compiled else step
    losses = [f(xs[i % 2], ys[i % 2]).detach().numpy() for i in range(steps)]
    return losses, [p.detach().numpy().copy() for p in m.parameters()], f


@pytest.mark.parametrize("model,batch", [("lenet_300_100", 8), ("lenet5", 4)])
def test_default_passes_train_lenet_bit_for_bit(model, batch):
    le, we, _ = _train(getattr(models, model), False, batch=batch)
    lc, wc, f = _train(getattr(models, model), True, batch=batch, passes=list(DEFAULT))
    assert f.traces == 2 and [r["pass"] for r in f.last_graph.pass_reports] == list(DEFAULT)
    for a, b in zip(le + we, lc + wc):
        _bits_equal(a, b)


def test_default_passes_simplify_a_training_step_bit_for_bit():
    def extra(m, loss):
        w = m.fc3.weight
        unused = (m.fc1.weight * 2.0).sum()  # noqa: F841
        # an L2 term written twice, and a scale that folds to one
        l2 = (w**2).sum() * 1e-4 + (w**2).sum() * 1e-4
        return loss * (constant(2.0, loss) - 1.0) + l2

    le, we, _ = _train(models.lenet_300_100, False, extra=extra)
    lc, wc, f = _train(models.lenet_300_100, True, extra=extra)
    rows = {r["pass"]: r for r in f.last_graph.pass_reports}
    assert rows["constant_folding"]["report"]["folded"] >= 1
    assert rows["algebraic"]["report"]["removed"] >= 1
    assert rows["cse"]["report"]["merged"] >= 1 and rows["dce"]["report"]["removed"] >= 1
    assert rows["dce"]["nodes_after"] < rows["constant_folding"]["nodes_before"]
    for a, b in zip(le + we, lc + wc):
        _bits_equal(a, b)


# -- random programs ---------------------------------------------------------------------------

_PERMS = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]


def _program(seed, length=14):
    """A random straight-line program over (2, 3, 4) tensors, built to meet every pass: repeats,
    constants, identities, permute/reshape round trips, dead values, views and in-place writes
    (to a state buffer and to intermediate results)."""
    rng = np.random.default_rng(seed)
    steps = [tuple(rng.integers(0, 1000, 4)) for _ in range(length)]
    buf = prunus.zeros(2, 3, 4)

    def fn(x, y):
        pool = [x, y]
        for kind, a, b, c in steps:
            u, v = pool[a % len(pool)], pool[b % len(pool)]
            k = kind % 12
            if k == 0:
                r = u.sin() * v
            elif k == 1:
                r = u + v if c % 2 else u - v
            elif k == 2:  # identities, exact and not
                r = [u * 1.0, 1.0 * u, u / 1.0, u - 0.0, u + (-0.0), u + 0.0, u * 2.0][c % 7]
            elif k == 3:  # a permute round trip in three steps
                p1, p2 = _PERMS[c % 6], _PERMS[(c // 6) % 6]
                w = u.permute(*p1).permute(*p2)
                composed = [p1[d] for d in p2]
                inv = [0, 0, 0]
                for i, d in enumerate(composed):
                    inv[d] = i
                r = w.permute(*inv)
            elif k == 4:
                r = u.reshape(6, 4).reshape(4, 6).reshape(2, 3, 4) * v
            elif k == 5:  # a constant expression
                r = u * (constant(float(c % 5), u) * 0.5).cos()
            elif k == 6:  # the same subexpression again
                r = u.cos() * v.cos() + u.cos()
            elif k == 7:
                (u.abs() * 3.0).sin()  # dead
                r = -v
            elif k == 8:  # a write to the state buffer, read later through the pool
                buf.add_(u)
                r = buf * 1.0
            elif k == 9:
                r = buf.reshape(24).reshape(2, 3, 4)  # a view of the buffer
            elif k == 10 and c % 3 == 0 and u is not x and u is not y:
                u.mul_(0.5)  # a write into an intermediate (and what views it)
                r = u * 1.0
            else:
                r = prunus.where(u > v, u, v) + prunus.where(u > 0.0, 1.0, 2.0) * 1.0
            pool.append(r)
        return pool[-1], pool[-2] * 2.0, pool[-3]

    return fn, buf


def _special(shape=(2, 3, 4)):
    a = RNG.standard_normal(shape).astype(np.float32)
    a.flat[RNG.integers(0, a.size, 5)] = np.float32(-0.0)
    a.flat[RNG.integers(0, a.size, 3)] = np.float32(0.0)
    return a


@pytest.mark.parametrize("passes", [["constant_folding"], ["algebraic"], ["cse"], ["dce"], None,
                                    [*DEFAULT, "memory"]])
@pytest.mark.parametrize("seed", range(12))
def test_random_programs_replay_eager_bit_for_bit(seed, passes):
    fn, buf = _program(seed)
    x0, y0 = _special(), _special()
    g, _, reasons = capture(fn, prunus.tensor(x0.copy()), prunus.tensor(y0.copy()))
    assert reasons == []
    run_passes(g, passes)
    _check_well_formed(g)
    ex = Executor(g)
    for _ in range(3):
        x0, y0, b0 = _special(), _special(), _special()
        buf.copy_(prunus.tensor(b0))
        xe, ye = prunus.tensor(x0.copy()), prunus.tensor(y0.copy())
        want = fn(xe, ye)
        buf_e = buf.numpy().copy()
        buf.copy_(prunus.tensor(b0))
        xc, yc = prunus.tensor(x0.copy()), prunus.tensor(y0.copy())
        got = ex.run((xc, yc), {})
        for a, b in zip(want, got):
            _bits_equal(a.numpy(), b.numpy())
        _bits_equal(buf.numpy(), buf_e)
        _bits_equal(xc.numpy(), xe.numpy())
        _bits_equal(yc.numpy(), ye.numpy())


def test_random_programs_give_every_pass_work():
    done: dict = {}
    for seed in range(12):
        fn, _ = _program(seed)
        g, _, _ = capture(fn, prunus.tensor(_special()), prunus.tensor(_special()))
        for r in run_passes(g):
            done[r["pass"]] = done.get(r["pass"], 0) + r["nodes_before"] - r["nodes_after"]
    assert all(done[p] > 0 for p in ("constant_folding", "algebraic", "cse", "dce")), done
