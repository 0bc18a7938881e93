"""ONNX converters for prunus/ops/conv.py: Conv2d, MaxPool2d, AvgPool2d (adaptive average pooling
is a composite of mean, avg_pool2d or matmuls, and arrives as those).

Pooling reads the traced geometry: ceil mode shows as a padded buffer (hp, wp) larger than the
padded input, exported as extra end padding, and avg_pool2d's divisors (count_include_pad,
divisor_override, ceil mode) are matched to an AveragePool mode or applied as a constant factor.
"""

from __future__ import annotations

import numpy as np

from prunus.onnx.converters._registry import converts
from prunus.ops import conv as C


def _common(geo):
    return {
        "kernel_shape": [geo.kh, geo.kw],
        "strides": [geo.sh, geo.sw],
    }


def _overhang(geo):
    """Padding past the end that ceil mode adds (the buffer beyond the symmetric padding)."""
    return geo.hp - (geo.h + 2 * geo.ph), geo.wp - (geo.w + 2 * geo.pw)


def _geos(ctx, node):
    return ctx.attr_variants(node, "geo")


@converts(C.Conv2d, varying=("geo",))
def convert_Conv2d(ctx, node):
    # every field Conv reads comes from the weight and the layer's arguments, so a dynamic batch
    # or image size (geo.n, geo.h, ...) changes nothing here
    geo = node.attrs["geo"]
    ctx.emit("Conv", [ctx.name(i) for i in node.inputs], ctx.out(node), **_common(geo),
             pads=[geo.ph, geo.pw, geo.ph, geo.pw], dilations=[geo.dh, geo.dw], group=geo.groups)


@converts(C.MaxPool2d, varying=("geo",))
def convert_MaxPool2d(ctx, node):
    geo = node.attrs["geo"]
    eh, ew = _overhang(geo)
    if any(_overhang(g) != (eh, ew) for g in _geos(ctx, node)):
        raise ctx.fail("ceil_mode's extra padding changes with a dynamic image size; export "
                       "with static height and width")
    x = ctx.inp(node, 0)
    pads = [geo.ph, geo.pw, geo.ph + eh, geo.pw + ew]
    if pads[2] >= geo.kh or pads[3] >= geo.kw:
        # onnxruntime wants pads smaller than the kernel: pad with -inf explicitly instead
        low = ctx.scalar(-np.inf, ctx.np_dtype(node.inputs[0]))
        x = ctx.emit("Pad", [x, ctx.ints([0, 0] + pads[:2] + [0, 0] + pads[2:]), low],
                     mode="constant")
        pads = [0, 0, 0, 0]
    ctx.emit("MaxPool", [x], ctx.out(node), **_common(geo), pads=pads,
             dilations=[geo.dh, geo.dw])


def _divisor(geo, include_pad):
    """PyTorch's avg_pool2d window sizes for count_include_pad = include_pad (see
    prunus.ops.conv._avg_divisor): which ONNX AveragePool mode, if any, divides the same way."""

    def sizes(out, size, k, s, p):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        if include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    return np.outer(sizes(geo.oh, geo.h, geo.kh, geo.sh, geo.ph),
                    sizes(geo.ow, geo.w, geo.kw, geo.sw, geo.pw))


def _avg_mode(geo, div):
    """1 or 0: AveragePool's count_include_pad that divides as `div` does; None: neither."""
    if _overhang(geo) != (0, 0):
        return None  # ONNX's ceil-mode windows past the padding are counted differently
    for mode in (1, 0):
        if np.array_equal(div, _divisor(geo, bool(mode))):
            return mode
    return None


@converts(C.AvgPool2d, varying=("geo", "div"))
def convert_AvgPool2d(ctx, node):
    geo, x = node.attrs["geo"], ctx.inp(node, 0)
    divs = [ctx.to_numpy(d) for d in ctx.attr_variants(node, "div")]
    modes = {_avg_mode(g, d) for g, d in zip(_geos(ctx, node), divs)}
    if len(modes) == 1 and None not in modes:
        ctx.emit("AveragePool", [x], ctx.out(node), **_common(geo),
                 pads=[geo.ph, geo.pw, geo.ph, geo.pw], count_include_pad=modes.pop())
        return
    if any(not np.array_equal(divs[0], d) or _overhang(g) != _overhang(geo)
           for g, d in zip(_geos(ctx, node), divs)):
        raise ctx.fail("avg_pool2d's divisors change with a dynamic image size; export with "
                       "static height and width")
    # window sums (an average over a zero-padded buffer, every window whole, times kh*kw), then
    # divided by the op's own divisors
    dt = ctx.np_dtype(node.inputs[0])
    eh, ew = _overhang(geo)
    pads = [0, 0, geo.ph, geo.pw, 0, 0, geo.ph + eh, geo.pw + ew]
    padded = ctx.emit("Pad", [x, ctx.ints(pads), ctx.scalar(0, dt)], mode="constant")
    avg = ctx.emit("AveragePool", [padded], **_common(geo))
    factor = (geo.kh * geo.kw / divs[0].astype(np.float64)).astype(dt)
    ctx.emit("Mul", [avg, ctx.const(factor, "avg_pool_factor")], ctx.out(node))
