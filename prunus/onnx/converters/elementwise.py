"""ONNX converters for prunus/ops/elementwise.py: arithmetic, unary math, clamp, maximum/minimum,
where, comparisons and logic. ONNX broadcasts binary ops as NumPy does, so shapes need no care.
"""

from __future__ import annotations

import numpy as np

from prunus.onnx.converters._registry import converts
from prunus.ops import elementwise as E


def _is_bool(ctx, node) -> bool:
    return ctx.np_dtype(node.inputs[0]) == np.bool_


def _is_float(ctx, vi) -> bool:
    return ctx.np_dtype(vi).kind == "f"


def _binary(op_type, bool_op=None):
    def convert(ctx, node):
        # NumPy's + and * on bool arrays are logical or/and; ONNX Add/Mul take no bool
        t = bool_op if bool_op and _is_bool(ctx, node) else op_type
        ctx.emit(t, [ctx.inp(node, 0), ctx.inp(node, 1)], ctx.out(node))

    convert.__name__ = f"convert_{op_type}"
    return convert


def _unary(op_type):
    def convert(ctx, node):
        ctx.emit(op_type, [ctx.inp(node, 0)], ctx.out(node))

    convert.__name__ = f"convert_{op_type}"
    return convert


convert_Add = converts(E.Add)(_binary("Add", "Or"))
convert_Sub = converts(E.Sub)(_binary("Sub"))
convert_Mul = converts(E.Mul)(_binary("Mul", "And"))
convert_Div = converts(E.Div)(_binary("Div"))
convert_Pow = converts(E.Pow)(_binary("Pow"))
convert_Maximum = converts(E.Maximum)(_binary("Max"))
convert_Minimum = converts(E.Minimum)(_binary("Min"))
convert_Eq = converts(E.Eq)(_binary("Equal"))
convert_Lt = converts(E.Lt)(_binary("Less"))
convert_Le = converts(E.Le)(_binary("LessOrEqual"))
convert_Gt = converts(E.Gt)(_binary("Greater"))
convert_Ge = converts(E.Ge)(_binary("GreaterOrEqual"))

convert_Neg = converts(E.Neg)(_unary("Neg"))
convert_Exp = converts(E.Exp)(_unary("Exp"))
convert_Log = converts(E.Log)(_unary("Log"))
convert_Sqrt = converts(E.Sqrt)(_unary("Sqrt"))
convert_Sin = converts(E.Sin)(_unary("Sin"))
convert_Cos = converts(E.Cos)(_unary("Cos"))
convert_Floor = converts(E.Floor)(_unary("Floor"))
convert_Abs = converts(E.Abs)(_unary("Abs"))
convert_Sign = converts(E.Sign)(_unary("Sign"))


@converts(E.Ne)
def convert_Ne(ctx, node):
    eq = ctx.emit("Equal", [ctx.inp(node, 0), ctx.inp(node, 1)])
    ctx.emit("Not", [eq], ctx.out(node))


def _one(ctx, node):
    return ctx.scalar(1, ctx.np_dtype(node.inputs[0]))


@converts(E.Log1p)
def convert_Log1p(ctx, node):
    # ONNX has no log1p; log(1 + x) loses digits only where the result is below ~1e-7 (absolute)
    ctx.emit("Log", [ctx.emit("Add", [ctx.inp(node, 0), _one(ctx, node)])], ctx.out(node))


@converts(E.Expm1)
def convert_Expm1(ctx, node):
    ctx.emit("Sub", [ctx.emit("Exp", [ctx.inp(node, 0)]), _one(ctx, node)], ctx.out(node))


@converts(E.Rsqrt)
def convert_Rsqrt(ctx, node):
    ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.inp(node, 0)])], ctx.out(node))


@converts(E.FloorDivide)
def convert_FloorDivide(ctx, node):
    a, b = ctx.inp(node, 0), ctx.inp(node, 1)
    if _is_float(ctx, node.inputs[0]):
        ctx.emit("Floor", [ctx.emit("Div", [a, b])], ctx.out(node))
        return
    # integer Div truncates; Python floors. a - (a mod b) is a multiple of b (Mod with fmod=0
    # takes the divisor's sign, as Python), so dividing it is exact
    mod = ctx.emit("Mod", [a, b], fmod=0)
    ctx.emit("Div", [ctx.emit("Sub", [a, mod]), b], ctx.out(node))


@converts(E.Remainder)
def convert_Remainder(ctx, node):
    a, b = ctx.inp(node, 0), ctx.inp(node, 1)
    if not _is_float(ctx, node.inputs[0]):
        ctx.emit("Mod", [a, b], ctx.out(node), fmod=0)
        return
    # ONNX's float Mod is C's fmod (the dividend's sign); Python's % takes the divisor's sign:
    # add b where the two signs differ and the remainder is not 0
    r = ctx.emit("Mod", [a, b], fmod=1)
    zero = ctx.scalar(0, ctx.np_dtype(node.inputs[0]))
    differ = ctx.emit("Xor", [ctx.emit("Less", [r, zero]), ctx.emit("Less", [b, zero])])
    fix = ctx.emit("And", [differ, ctx.emit("Not", [ctx.emit("Equal", [r, zero])])])
    ctx.emit("Where", [fix, ctx.emit("Add", [r, b]), r], ctx.out(node))


@converts(E.Clamp)
def convert_Clamp(ctx, node):
    dt = ctx.np_dtype(node.inputs[0])
    lo, hi = node.attrs.get("lo"), node.attrs.get("hi")
    lo_name = "" if lo is None else ctx.scalar(lo, dt)
    hi_name = "" if hi is None else ctx.scalar(hi, dt)
    ctx.emit("Clip", [ctx.inp(node, 0), lo_name, hi_name], ctx.out(node))


@converts(E.Where)
def convert_Where(ctx, node):
    ctx.emit("Where", [ctx.inp(node, 0), ctx.inp(node, 1), ctx.inp(node, 2)], ctx.out(node))


def _logic(op_type):
    def convert(ctx, node):
        # on bool tensors &, |, ^ are logical; on integers they are bitwise (opset 18)
        if _is_bool(ctx, node):
            t = op_type
        else:
            if ctx.opset < 18:
                raise ctx.fail(f"bitwise {op_type} on {ctx.np_dtype(node.inputs[0])} tensors needs "
                               "opset >= 18 (Bitwise" + op_type + ")")
            t = "Bitwise" + op_type
        ctx.emit(t, [ctx.name(i) for i in node.inputs], ctx.out(node))

    convert.__name__ = f"convert_Logical{op_type}"
    return convert


convert_LogicalAnd = converts(E.LogicalAnd)(_logic("And"))
convert_LogicalOr = converts(E.LogicalOr)(_logic("Or"))
convert_LogicalXor = converts(E.LogicalXor)(_logic("Xor"))
convert_LogicalNot = converts(E.LogicalNot)(_logic("Not"))


@converts(E.IsFinite)
def convert_IsFinite(ctx, node):
    x = ctx.inp(node, 0)
    if not _is_float(ctx, node.inputs[0]):  # integers and bools are always finite: x == x
        ctx.emit("Equal", [x, x], ctx.out(node))
        return
    bad = ctx.emit("Or", [ctx.emit("IsInf", [x]), ctx.emit("IsNaN", [x])])
    ctx.emit("Not", [bad], ctx.out(node))
