"""ONNX converters for prunus/ops/activation.py: sigmoid, tanh, relu, leaky_relu, elu, gelu (both
forms), erf, softplus, softmax, log_softmax."""

from __future__ import annotations

import math

from prunus.onnx.converters._registry import converts
from prunus.ops import activation as A


def _simple(op_type):
    def convert(ctx, node):
        ctx.emit(op_type, [ctx.inp(node, 0)], ctx.out(node))

    convert.__name__ = f"convert_{op_type}"
    return convert


convert_Sigmoid = converts(A.Sigmoid)(_simple("Sigmoid"))
convert_Tanh = converts(A.Tanh)(_simple("Tanh"))
convert_ReLU = converts(A.ReLU)(_simple("Relu"))
convert_Erf = converts(A.Erf)(_simple("Erf"))


@converts(A.LeakyReLU)
def convert_LeakyReLU(ctx, node):
    ctx.emit("LeakyRelu", [ctx.inp(node, 0)], ctx.out(node), alpha=float(node.attrs["slope"]))


@converts(A.ELU)
def convert_ELU(ctx, node):
    ctx.emit("Elu", [ctx.inp(node, 0)], ctx.out(node), alpha=float(node.attrs["alpha"]))


@converts(A.GELU)
def convert_GELU(ctx, node):
    x, approximate = ctx.inp(node, 0), node.attrs["approximate"]
    if ctx.opset >= 20:  # Gelu became an ONNX op in opset 20
        ctx.emit("Gelu", [x], ctx.out(node), approximate=approximate)
        return
    dt = ctx.np_dtype(node.inputs[0])

    def c(v):
        return ctx.scalar(v, dt)

    if approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = ctx.emit("Mul", [ctx.emit("Mul", [x, x]), x])
        inner = ctx.emit("Add", [x, ctx.emit("Mul", [cube, c(0.044715)])])
        t = ctx.emit("Tanh", [ctx.emit("Mul", [inner, c(math.sqrt(2 / math.pi))])])
    else:  # 0.5 x (1 + erf(x / sqrt(2)))
        t = ctx.emit("Erf", [ctx.emit("Mul", [x, c(1 / math.sqrt(2))])])
    half = ctx.emit("Mul", [ctx.emit("Add", [t, c(1.0)]), c(0.5)])
    ctx.emit("Mul", [x, half], ctx.out(node))


@converts(A.Softplus)
def convert_Softplus(ctx, node):
    x, beta = ctx.inp(node, 0), float(node.attrs["beta"])
    if beta == 1.0:
        ctx.emit("Softplus", [x], ctx.out(node))
        return
    b = ctx.scalar(beta, ctx.np_dtype(node.inputs[0]))
    ctx.emit("Div", [ctx.emit("Softplus", [ctx.emit("Mul", [x, b])]), b], ctx.out(node))


@converts(A.Softmax)
def convert_Softmax(ctx, node):
    ctx.emit("Softmax", [ctx.inp(node, 0)], ctx.out(node), axis=int(node.attrs["dim"]))


@converts(A.LogSoftmax)
def convert_LogSoftmax(ctx, node):
    ctx.emit("LogSoftmax", [ctx.inp(node, 0)], ctx.out(node), axis=int(node.attrs["dim"]))
