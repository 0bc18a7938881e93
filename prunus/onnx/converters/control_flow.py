"""ONNX converters for prunus/graph/control_flow.py: Cond -> If, WhileLoop -> Loop, and Output (the
results after the first of either) as that If/Loop node's further outputs. Branches and loop
bodies are converted into ONNX subgraphs by the same converters (`Context.child`); a subgraph
reads the outer graph's values (operands, lifted tensors, initializers) by their outer names.
"""

from __future__ import annotations

import numpy as np

from prunus.graph.control_flow import Cond, Output, WhileLoop
from prunus.graph.ir import Ref
from prunus.onnx.converters._fold import fold_constants
from prunus.onnx.converters._registry import converts

# -- subgraphs ------------------------------------------------------------------------------------


def _difference(a, b):
    """What differs between two captures of one subgraph (None when they match node for node)."""
    if len(a.nodes) != len(b.nodes) or len(a.values) != len(b.values) \
            or len(a.inputs) != len(b.inputs) or len(a.outputs) != len(b.outputs):
        return f"{len(a.nodes)} nodes at one size, {len(b.nodes)} at the other"
    for x, y in zip(a.nodes, b.nodes):
        if x.op is not y.op or x.inputs != y.inputs:
            return (f"node {x.index} is {x.name}{tuple(x.inputs)} at one size, "
                    f"{y.name}{tuple(y.inputs)} at the other")
    for x, y in zip(a.values, b.values):
        if x.kind != y.kind or len(x.shape) != len(y.shape):
            return f"value %{x.index} is {x.kind} {x.shape} at one size, {y.kind} {y.shape} at the other"
    return None


def _sub_variants(ctx, node, attr: str, what: str) -> list:
    """The subgraph `attr` of `node` as captured at the other sizes of the dynamic axes (each
    capture traced its own branches, which must have come out the same)."""
    g = node.attrs[attr]
    out = []
    for sym, vg in zip(ctx.symbols, ctx.variants):
        other = vg.nodes[node.index].attrs[attr]
        problem = _difference(g, other)
        if problem is not None:
            raise ctx.fail(
                f"its {what} records a different graph when dynamic axis {sym!r} changes "
                f"({problem}), so that axis can't be dynamic in one ONNX graph; export it static"
            )
        out.append(other)
    return out


def _sub(ctx, node, attr: str, what: str, input_names, nodes=None):
    """Convert subgraph `attr` of `node` in a child context whose inputs are `input_names`;
    returns the child (its nodes hold the subgraph's ONNX nodes)."""
    g = node.attrs[attr]
    variants = _sub_variants(ctx, node, attr, what)
    sub = ctx.child(g, variants, nodes=nodes, where=f"the {what} of {ctx.describe(node)}")
    sub.folded = fold_constants(g, variants, sub.sigs, ctx.to_numpy, ctx.state_names)
    for vi, name in zip(g.inputs, input_names):
        sub.bind(vi, name)
    sub.convert_nodes()
    return sub


def _graph_outputs(sub, items) -> list:
    """ValueInfos for a subgraph's outputs, items = (name, value index or a ready ValueInfo
    maker): an output must be made inside the subgraph and be listed once, so one that is an
    input, an outer name, an initializer or a repeat goes through an Identity."""
    made = {o for n in sub.nodes for o in n.output}
    used, infos = set(), []
    for name, info in items:
        if name not in made or name in used:
            name = sub.emit("Identity", [name])
            made.add(name)
        used.add(name)
        infos.append(sub.value_info(info, name) if isinstance(info, int) else info(name))
    return infos


def _bool_scalar(ctx, vi: int) -> str:
    """Value `vi` (one element, any shape and dtype: prunus takes its truth) as the bool scalar
    that If and Loop need."""
    name = ctx.name(vi)
    if ctx.shape(vi) != ():
        name = ctx.emit("Reshape", [name, ctx.ints([])])
    if ctx.np_dtype(vi) != np.bool_:
        name = ctx.cast(name, np.bool_)
    return name


# -- the results of a multi-result op --------------------------------------------------------------


def _result_names(ctx, node, first: str, n: int):
    """ONNX names of all `n` results of control-flow `node`: `first`, then the outputs of the
    Output nodes that pick results 1.. (fresh names for results nothing reads). Also
    (name, value) pairs for further Output nodes that pick a result already named."""
    picks: dict = {}
    me = Ref(node=node.index)
    for o in ctx.graph.nodes:
        if o.op is Output and o.attrs.get("fwd") == me:
            picks.setdefault(o.attrs["index"], []).append(o.output)
    names = [first]
    for i in range(1, n):
        vis = picks.get(i)
        names.append(ctx.name(vis[0]) if vis else ctx.fresh(f"{node.name.lower()}_unused_{i}"))
    repeats = [(names[i], vi) for i, vis in picks.items() for vi in vis[1:]]
    return names, repeats


def _emit_results(ctx, node, op_type, inputs, first, n, **attrs) -> None:
    names, repeats = _result_names(ctx, node, first, n)
    ctx.emit(op_type, inputs, names, **attrs)
    for name, vi in repeats:
        ctx.emit("Identity", [name], ctx.name(vi))


# -- Cond -> If ------------------------------------------------------------------------------------


def _emit_if(ctx, node, first: str) -> None:
    a = node.attrs
    n_ops, n_true = a["n_operands"], a["n_true"]
    outer = [ctx.name(i) for i in node.inputs[1:]]
    operands, lifted_t, lifted_f = outer[:n_ops], outer[n_ops:n_ops + n_true], outer[n_ops + n_true:]
    branches = {}
    for attr, what, names, key in (("true_graph", "true branch", lifted_t, "then_branch"),
                                   ("false_graph", "false branch", lifted_f, "else_branch")):
        # ONNX branches take no inputs: each reads the operands and its lifted tensors by their
        # outer names, so the branch's inputs are bound to those names
        sub = _sub(ctx, node, attr, what, operands + names)
        g = a[attr]
        outs = _graph_outputs(sub, [(sub.name(vi), vi) for vi in g.outputs])
        branches[key] = ctx.helper.make_graph(sub.nodes, f"{key}_{node.index}", [], outs)
    pred = _bool_scalar(ctx, node.inputs[0])
    _emit_results(ctx, node, "If", [pred], first, len(a["true_graph"].outputs), **branches)


@converts(Cond, varying=("true_graph", "false_graph"))
def convert_Cond(ctx, node):
    _emit_if(ctx, node, ctx.out(node))


# -- WhileLoop -> Loop -----------------------------------------------------------------------------


def _emit_loop(ctx, node, first: str) -> None:
    a = node.attrs
    n_vars, n_cond = a["n_vars"], a["n_cond"]
    outer = [ctx.name(i) for i in node.inputs]
    init, lifted_c, lifted_b = outer[:n_vars], outer[n_vars:n_vars + n_cond], outer[n_vars + n_cond:]
    # ONNX Loop tests its condition before each iteration only through the value it is given and
    # the one the body returns, so cond_fn runs twice: on the initial values out here, and on
    # each iteration's new values at the end of the body (M, the trip limit, stays empty)
    first_test = _sub(ctx, node, "cond_graph", "cond_fn", init + lifted_c, nodes=ctx.nodes)
    go = _bool_scalar(first_test, a["cond_graph"].outputs[0])
    bg = a["body_graph"]
    # the body's own inputs (names are unique across the model, subgraphs included)
    iteration, cond_in = ctx.fresh("iteration_num"), ctx.fresh("cond_in")
    carried = [ctx.fresh(f"loop_var_{k}") for k in range(n_vars)]
    body = _sub(ctx, node, "body_graph", "body_fn", carried + lifted_b)
    new = [body.name(vi) for vi in bg.outputs]
    # cond_fn on the new values, inside the body (a child of the body's context: nested names)
    test = body.child(a["cond_graph"], first_test.variants, nodes=body.nodes,
                      where=f"the cond_fn of {ctx.describe(node)}")
    test.folded = first_test.folded
    for vi, name in zip(a["cond_graph"].inputs, new + lifted_c):
        test.bind(vi, name)
    for vi, name in first_test.outer_constants().items():  # initializers: the body reads them
        test.bind(vi, name)
    test.convert_nodes()
    again = _bool_scalar(test, a["cond_graph"].outputs[0])
    helper, bool_t = ctx.helper, ctx.onnx_type(np.bool_)
    inputs = [helper.make_tensor_value_info(iteration, ctx.onnx_type(np.int64), []),
              helper.make_tensor_value_info(cond_in, bool_t, [])]
    inputs += [body.value_info(vi, name) for vi, name in zip(bg.inputs[:n_vars], carried)]
    outputs = _graph_outputs(body, [(again, lambda n: helper.make_tensor_value_info(n, bool_t, []))]
                             + list(zip(new, bg.outputs)))
    graph = helper.make_graph(body.nodes, f"loop_body_{node.index}", inputs, outputs)
    _emit_results(ctx, node, "Loop", ["", go, *init], first, n_vars, body=graph)


@converts(WhileLoop, varying=("cond_graph", "body_graph"))
def convert_WhileLoop(ctx, node):
    _emit_loop(ctx, node, ctx.out(node))


# -- Output ----------------------------------------------------------------------------------------

_EMIT = {Cond: _emit_if, WhileLoop: _emit_loop}


@converts(Output)
def convert_Output(ctx, node):
    # the If/Loop node that made result 0 wrote this result too (_result_names); it is emitted
    # here only when export folded the op to a constant (every input a parameter or constant),
    # which keeps its first result and not the others
    src = ctx.graph.nodes[node.attrs["fwd"].node]
    emit = _EMIT.get(src.op)
    if emit is None:
        raise ctx.fail(f"it picks result {node.attrs['index']} of {src.name}, which does not "
                       "export to ONNX")
    late = ctx.memo.setdefault("control flow converted late", set())
    if src.output in ctx.folded and src.index not in late:
        late.add(src.index)
        here, ctx.node = ctx.node, src
        try:
            emit(ctx, src, ctx.fresh(f"{src.name.lower()}_{src.output}"))
        finally:
            ctx.node = here
