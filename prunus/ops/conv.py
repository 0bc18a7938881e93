"""2-D convolution and pooling as primitives (NCHW, PyTorch's semantics), forward above backward.

Conv2d runs as im2col (a strided view copied once) plus one GEMM. Its input gradient and weight
gradient are primitives too (Conv2dBackwardInput: the transposed convolution; Conv2dBackwardWeight),
and the three ops' backwards are written with each other, so derivatives of every order are exact
(create_graph=True works through conv). Pooling ops are linear in their gradient, so MaxPool2d's
scatter/gather pair and AvgPool2d's pair are each other's backward: second derivatives are exact too.
The kernels use only NumPy calls that CuPy shares (as_strided, matmul, copyto(where=)), so nothing
here is backend-specific. AdaptiveAvgPool2d is a composite (mean, avg_pool2d, or two matmuls).
"""

from __future__ import annotations

from typing import NamedTuple

from prunus.autograd import Op, is_grad_enabled
from prunus.errors import ArgumentError, DTypeError, ShapeError, fmt_shape
from prunus.ops.movement import broadcast_to, reshape
from prunus.tensor import Tensor

# -- geometry ---------------------------------------------------------------------------------


class Geom(NamedTuple):
    """Sizes of one convolution or pooling: input (n, c, h, w), kernel (kh, kw), output channels o
    (c for pooling), stride, padding, dilation, groups, output (oh, ow), padded buffer (hp, wp)."""

    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    groups: int
    oh: int
    ow: int
    hp: int
    wp: int
    # Conv layout. batched: columns (N, K, L), one GEMM per sample, output already NCHW. folded:
    # columns (K, N*L), one GEMM for the batch, output transposed to NCHW. The transposes cost
    # about 1/K of the GEMM, the per-sample GEMMs lose efficiency when L is small: measured on
    # LeNet-5 (float32, b128, 1 thread) batched won for conv1 (K=25, L=576: 1.4 vs 2.3 ms forward,
    # 0.9 vs 2.8 ms weight grad), folded for conv2 (K=500, L=64: 27 vs 31 ms fwd+bwd).
    batched: bool = False

    @property
    def overlapping(self) -> bool:
        """Whether two windows can share an input element (then backward must accumulate)."""
        return self.sh < self.dh * (self.kh - 1) + 1 or self.sw < self.dw * (self.kw - 1) + 1


def _window(xp, buf, g: Geom, i: int, j: int):
    """The (.., oh, ow) view of `buf` (.., hp, wp) seen by kernel offset (i, j) at every output."""
    r, s = i * g.dh, j * g.dw
    return buf[..., r : r + g.sh * (g.oh - 1) + 1 : g.sh, s : s + g.sw * (g.ow - 1) + 1 : g.sw]


def _pad(xp, x, g: Geom, value=0.0):
    """x in a (n, c, hp, wp) buffer at offset (ph, pw), the rest `value`; x itself when it fits."""
    if g.ph == 0 and g.pw == 0 and g.hp == g.h and g.wp == g.w:
        return x
    buf = xp.full((g.n, g.c, g.hp, g.wp), value, dtype=x.dtype)
    buf[:, :, g.ph : g.ph + g.h, g.pw : g.pw + g.w] = x
    return buf


def _crop(buf, g: Geom):
    if g.ph == 0 and g.pw == 0 and g.hp == g.h and g.wp == g.w:
        return buf
    return buf[..., g.ph : g.ph + g.h, g.pw : g.pw + g.w]


# -- convolution kernels (arrays in, arrays out) ----------------------------------------------
#
# Each kernel splits the batch into ranges through `kernels.parallel_for` (prunus/backend/
# threads.py) and writes every range straight into its slice of one preallocated result.
#
# The folded layout keeps the batch innermost (C, kh, kw, oh, ow, n): then every strided copy of
# im2col and every strided add of col2im runs over rows of n elements instead of ow (8 in
# LeNet-5's conv2), which measured 2.3x faster for im2col and 3.8x for col2im there, transposes
# included (float32, batch 128, one thread: 1.5 vs 2.7 ms and 1.6 vs 6.1 ms).


def _windows(xp, xb, g: Geom, batch_last: bool):
    """The (c, kh, kw, oh, ow) windows of the padded input xb as a strided view: (n, c, kh, kw,
    oh, ow) for xb (n, c, hp, wp), or (c, kh, kw, oh, ow, n) for xb (c, hp, wp, n)."""
    if batch_last:
        sc, sh_, sw_, sn = xb.strides
        shape = (g.c, g.kh, g.kw, g.oh, g.ow, g.n)
        strides = (sc, g.dh * sh_, g.dw * sw_, g.sh * sh_, g.sw * sw_, sn)
    else:
        sn, sc, sh_, sw_ = xb.strides
        shape = (g.n, g.c, g.kh, g.kw, g.oh, g.ow)
        strides = (sn, sc, g.dh * sh_, g.dw * sw_, g.sh * sh_, g.sw * sw_)
    return xp.lib.stride_tricks.as_strided(xb, shape, strides)


def _im2col(xp, x, g: Geom):
    """The columns of x (one batch range; g.n is its size), K ordered (c, kh, kw): (N, G, Kg, L)
    batched, (G, Kg, L*N) folded with the batch innermost."""
    kg = g.c // g.groups * g.kh * g.kw
    if g.batched:
        v = _windows(xp, _pad(xp, x, g), g, False)
        out = xp.empty((g.n, g.groups, kg, g.oh * g.ow), dtype=x.dtype)
        xp.copyto(out.reshape(v.shape), v)
        return out
    xb = xp.zeros((g.c, g.hp, g.wp, g.n), dtype=x.dtype)
    xb[:, g.ph : g.ph + g.h, g.pw : g.pw + g.w] = x.transpose(1, 2, 3, 0)
    v = _windows(xp, xb, g, True)
    out = xp.empty((g.groups, kg, g.oh * g.ow * g.n), dtype=x.dtype)
    xp.copyto(out.reshape(v.shape), v)
    return out


def _mm(a, b):
    """Stacked matmul; one plain GEMM when the stack has a single entry (groups=1)."""
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] == 1 and b.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return a @ b


def _gout_folded(xp, gout, g: Geom):
    """The output gradient (N, O, oh, ow) as (G, Og, L*N), the batch innermost."""
    gt = xp.ascontiguousarray(gout.transpose(1, 2, 3, 0))
    return gt.reshape(g.groups, g.o // g.groups, g.oh * g.ow * g.n)


def _grain(g: Geom) -> int:
    """Smallest batch range worth a thread: about 256k output or column elements (~1 ms: waking a
    worker costs ~0.1 ms, see prunus/backend/threads.py)."""
    return max(1, 2**18 // max(1, g.o * g.oh * g.ow, g.c * g.kh * g.kw * g.oh * g.ow))


def conv_forward(xp, kernels, x, w, b, g: Geom, keep_cols=False):
    """The convolution (N, O, oh, ow), and when `keep_cols` the im2col columns of each batch
    range as {(lo, hi): columns} (else None) for the weight gradient."""
    out = xp.empty((g.n, g.o, g.oh, g.ow), dtype=x.dtype)
    cols = {} if keep_cols else None
    w3 = w.reshape(g.groups, g.o // g.groups, -1)

    def part(lo, hi):
        r = g._replace(n=hi - lo)
        c = _im2col(xp, x[lo:hi], r)
        if cols is not None:
            cols[lo, hi] = c
        res = out[lo:hi]
        if g.batched:
            xp.matmul(w3, c, out=res.reshape(r.n, g.groups, g.o // g.groups, g.oh * g.ow))
            if b is not None:
                res += b.reshape(1, g.o, 1, 1)
            return
        y = _mm(w3, c).reshape(g.o, g.oh, g.ow, r.n).transpose(3, 0, 1, 2)
        if b is not None:  # the NCHW copy and the bias add in one pass
            xp.add(y, b.reshape(1, g.o, 1, 1), out=res)
        else:
            res[...] = y

    kernels.parallel_for(part, g.n, _grain(g))
    return out, cols


def conv_weight_grad(xp, kernels, x, gout, g: Geom, cols=None):
    """sum over the batch of gout x columns^T; `cols`: conv_forward's kept columns, if any (a
    range they don't hold, after a change of thread count, is made again)."""
    og = g.o // g.groups
    partial = {}

    def part(lo, hi):
        r = g._replace(n=hi - lo)
        c = cols.get((lo, hi)) if cols is not None else None
        if c is None:
            c = _im2col(xp, x[lo:hi], r)
        if g.batched:
            g4 = gout[lo:hi].reshape(r.n, g.groups, og, g.oh * g.ow)
            partial[lo] = (g4 @ c.transpose(0, 1, 3, 2)).sum(axis=0)
        else:
            partial[lo] = _mm(_gout_folded(xp, gout[lo:hi], r), c.transpose(0, 2, 1))

    kernels.parallel_for(part, g.n, _grain(g))
    parts = [partial[k] for k in sorted(partial)]  # a fixed order: the sum doesn't vary by run
    gw = parts[0]
    for p in parts[1:]:
        gw += p
    return gw.reshape(g.o, g.c // g.groups, g.kh, g.kw)


def conv_input_grad(xp, kernels, gout, w, g: Geom):
    """The transposed convolution: column gradients W^T g, then col2im as kh*kw strided adds.

    Measured against the "sum of kh*kw shifted matmuls" trick (LeNet-5 conv2, float32, b128):
    col2im 12.9 ms vs 14.7 ms on one thread, 10.3 vs 13.8 on two, so col2im it is.
    """
    og, cg = g.o // g.groups, g.c // g.groups
    w3t = w.reshape(g.groups, og, cg * g.kh * g.kw).transpose(0, 2, 1)
    out = xp.empty((g.n, g.c, g.h, g.w), dtype=gout.dtype)

    def part(lo, hi):
        r = g._replace(n=hi - lo)
        if g.batched:
            dc = (w3t @ gout[lo:hi].reshape(r.n, g.groups, og, g.oh * g.ow))
            dc = dc.reshape(r.n, g.c, g.kh, g.kw, g.oh, g.ow)
            buf = xp.zeros((r.n, g.c, g.hp, g.wp), dtype=dc.dtype)
            for i in range(g.kh):
                for j in range(g.kw):
                    _window(xp, buf, g, i, j)[...] += dc[:, :, i, j]
            out[lo:hi] = _crop(buf, g)
            return
        dc = _mm(w3t, _gout_folded(xp, gout[lo:hi], r)).reshape(g.c, g.kh, g.kw, g.oh, g.ow, r.n)
        buf = xp.zeros((g.c, g.hp, g.wp, r.n), dtype=dc.dtype)
        for i in range(g.kh):
            for j in range(g.kw):
                ri, cj = i * g.dh, j * g.dw
                buf[:, ri : ri + g.sh * (g.oh - 1) + 1 : g.sh, cj : cj + g.sw * (g.ow - 1) + 1 : g.sw] += dc[:, i, j]
        out[lo:hi] = buf[:, g.ph : g.ph + g.h, g.pw : g.pw + g.w].transpose(3, 0, 1, 2)

    kernels.parallel_for(part, g.n, _grain(g))
    return out


# -- convolution ops ----------------------------------------------------------------------------


class Conv2d(Op):
    """conv2d(x, w[, b]). Keeps the im2col columns for the weight gradient when w needs one."""

    def forward(self, x, w, b=None, geo=None):
        self.geo = geo
        keep = is_grad_enabled() and self.inputs[1].requires_grad
        out, cols = conv_forward(self.xp, self.device.kernels, x, w, b, geo, keep)
        if keep:
            self.cols = cols
        return out

    def backward(self, g):
        x, w = self.inputs[0], self.inputs[1]
        needs = self.needs_input_grad
        geo = self.geo
        gx = Conv2dBackwardInput.apply(g, w, geo=geo) if needs[0] else None
        gw = None
        if needs[1]:
            gw = Conv2dBackwardWeight.apply(x, g, geo=geo, fwd=self)
        if len(self.inputs) == 2:
            return gx, gw
        return gx, gw, (ConvBiasGrad.apply(g) if needs[2] else None)


class Conv2dBackwardInput(Op):
    """The input gradient of conv2d (a transposed convolution), bilinear in (g, w)."""

    def forward(self, g, w, geo):
        self.geo = geo
        return conv_input_grad(self.xp, self.device.kernels, g, w, geo)

    def backward(self, gg):
        g, w = self.inputs
        needs = self.needs_input_grad
        dg = Conv2d.apply(gg, w, geo=self.geo) if needs[0] else None
        dw = Conv2dBackwardWeight.apply(gg, g, geo=self.geo) if needs[1] else None
        return dg, dw


class Conv2dBackwardWeight(Op):
    """The weight gradient of conv2d, bilinear in (x, g); `fwd`: the Conv2d op whose im2col
    columns of x it reuses, if it kept them (an op reference, so a captured graph follows it)."""

    def forward(self, x, g, geo, fwd=None):
        self.geo = geo
        cols = None if fwd is None else fwd.__dict__.get("cols")  # the Conv2d's im2col columns
        return conv_weight_grad(self.xp, self.device.kernels, x, g, geo, cols)

    def backward(self, gw):
        x, g = self.inputs
        needs = self.needs_input_grad
        dx = Conv2dBackwardInput.apply(g, gw, geo=self.geo) if needs[0] else None
        dg = Conv2d.apply(x, gw, geo=self.geo) if needs[1] else None
        return dx, dg


class ConvBiasGrad(Op):
    """Sum of g (N, O, H, W) over all but dim 1, as two ones-vector products: in BLAS, several
    times faster than sum(axis=(0, 2, 3)) (see notes/cpu-performance.md)."""

    def forward(self, g):
        xp = self.xp
        n, o = g.shape[0], g.shape[1]
        per = g.reshape(n, o, -1) @ xp.ones(g.shape[2] * g.shape[3], dtype=g.dtype)
        return xp.ones(n, dtype=g.dtype) @ per

    def backward(self, gg):
        g = self.inputs[0]
        return broadcast_to(reshape(gg, (1, g.shape[1], 1, 1)), g.shape)


# -- pooling ops ---------------------------------------------------------------------------------


def _offsets(g: Geom):
    return [(i, j) for i in range(g.kh) for j in range(g.kw)]


def _index_dtype(xp, g: Geom):
    return xp.uint8 if g.kh * g.kw <= 255 else xp.int32


class MaxPool2d(Op):
    """Window maximum; remembers, per output, which kernel offset held it (the first maximum in
    row-major order, as PyTorch; NaN counts as the maximum). kh*kw passes over output-sized views,
    no fancy indexing and no window copy; batch ranges run in parallel."""

    def forward(self, x, geo):
        xp = self.xp
        self.geo = geo
        best = xp.empty((geo.n, geo.c, geo.oh, geo.ow), dtype=x.dtype)
        idx = xp.zeros(best.shape, dtype=_index_dtype(xp, geo))

        def part(lo, hi):
            r = geo._replace(n=hi - lo)
            buf = _pad(xp, x[lo:hi], r, -xp.inf)
            top, at = best[lo:hi], idx[lo:hi]
            for t, (i, j) in enumerate(_offsets(geo)):
                v = _window(xp, buf, geo, i, j)
                if t == 0:
                    top[...] = v
                    continue
                upd = v > top
                upd |= xp.isnan(v)  # NaN wins, as in PyTorch
                # arithmetic, not copyto(where=)/where: those branch per element on a random
                # mask and measured 30x slower (2.1 ms vs 69 us on a (128, 20, 12, 12) view)
                xp.maximum(top, v, out=top)
                at += (t - at) * upd

        self.device.kernels.parallel_for(part, geo.n, _grain(geo))
        self.idx = idx
        return best

    def backward(self, g):
        return MaxPool2dScatter.apply(g, idx=self.idx, geo=self.geo)


class MaxPool2dScatter(Op):
    """MaxPool2d's backward: g put at each window's argmax (added where windows overlap)."""

    def forward(self, g, idx, geo):
        xp = self.xp
        self.idx, self.geo = idx, geo
        out = xp.empty((geo.n, geo.c, geo.h, geo.w), dtype=g.dtype)

        def part(lo, hi):
            r = geo._replace(n=hi - lo)
            padded = (r.hp, r.wp) != (r.h, r.w) or r.ph or r.pw
            buf = xp.zeros((r.n, r.c, r.hp, r.wp), dtype=g.dtype) if padded else out[lo:hi]
            tiles = (r.dh, r.dw, r.sh, r.sw) == (1, 1, r.kh, r.kw) and (r.oh * r.kh, r.ow * r.kw) == (r.h, r.w)
            if not padded and not tiles:
                buf[...] = 0  # the loop below writes every element only when windows tile the input
            gr, at = g[lo:hi], idx[lo:hi]
            for t, (i, j) in enumerate(_offsets(geo)):
                view = _window(xp, buf, geo, i, j)
                if geo.overlapping:
                    view += gr * (at == t)
                else:  # each input element is in one window at most: assign, no read
                    xp.multiply(gr, at == t, out=view)
            if padded:
                out[lo:hi] = _crop(buf, r)

        self.device.kernels.parallel_for(part, geo.n, _grain(geo))
        return out

    def backward(self, gg):
        return MaxPool2dGather.apply(gg, idx=self.idx, geo=self.geo)


class MaxPool2dGather(Op):
    """The adjoint of MaxPool2dScatter: each window's value at its recorded argmax."""

    def forward(self, x, idx, geo):
        xp = self.xp
        self.idx, self.geo = idx, geo
        buf = _pad(xp, x, geo)
        out = xp.zeros(idx.shape, dtype=x.dtype)
        for t, (i, j) in enumerate(_offsets(geo)):
            xp.copyto(out, _window(xp, buf, geo, i, j), where=idx == t)
        return out

    def backward(self, g):
        return MaxPool2dScatter.apply(g, idx=self.idx, geo=self.geo)


class AvgPool2d(Op):
    """Window sums divided by `div`, an (oh, ow) array of window sizes (see avg_pool2d)."""

    def forward(self, x, geo, div):
        xp = self.xp
        self.geo, self.div = geo, div
        buf = _pad(xp, x, geo)
        out = None
        for i, j in _offsets(geo):
            v = _window(xp, buf, geo, i, j)
            if out is None:
                out = v.copy()
            else:
                out += v
        out /= div
        return out

    def backward(self, g):
        return AvgPool2dBackward.apply(g, geo=self.geo, div=self.div)


class AvgPool2dBackward(Op):
    """The adjoint of AvgPool2d: g / div spread over each window."""

    def forward(self, g, geo, div):
        xp = self.xp
        self.geo, self.div = geo, div
        gd = g / div
        buf = xp.zeros((geo.n, geo.c, geo.hp, geo.wp), dtype=g.dtype)
        for i, j in _offsets(geo):
            view = _window(xp, buf, geo, i, j)
            if geo.overlapping:
                view += gd
            else:
                view[...] = gd
        return xp.ascontiguousarray(_crop(buf, geo))

    def backward(self, gg):
        return AvgPool2d.apply(gg, geo=self.geo, div=self.div)



# -- functions: argument checks, geometry, dispatch --------------------------------------------


def _pair(v, name: str, op: str, lo: int) -> tuple:
    t = (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (tuple, list)) else None
    if (
        t is None or len(t) != 2
        or not all(isinstance(a, int) and not isinstance(a, bool) and a >= lo for a in t)
    ):
        raise ArgumentError(f"{op}: {name} must be an int >= {lo} or a pair of them, got {v!r}")
    return t


def _as_batch(x, op: str):
    """x as (N, C, H, W), and whether it was unbatched (C, H, W)."""
    if not isinstance(x, Tensor):
        raise DTypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return reshape(x, (1,) + x.shape), True
    raise ShapeError(f"{op}: expected input of shape (N, C, H, W) or (C, H, W), got {fmt_shape(x.shape)}")


def _unbatch(out, unbatched):
    return reshape(out, out.shape[1:]) if unbatched else out


def _out_size(size, k, s, p, d, ceil, op, x, axis):
    eff = d * (k - 1) + 1
    if size + 2 * p < eff:
        raise ShapeError(
            f"{op}: kernel size {eff} (dilated) in dimension {axis} is larger than the padded "
            f"input size {size + 2 * p} (input {fmt_shape(x.shape)}, padding {p})"
        )
    out = (size + 2 * p - eff + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:  # the last window must start inside the input or padding
        out -= 1
    return out, max(size + 2 * p, (out - 1) * s + eff)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) of input (N, C, H, W) or (C, H, W) with weight
    (O, C/groups, kh, kw) and optional bias (O,); PyTorch's F.conv2d. padding may be 'valid', or
    'same' when every dilated kernel size is odd (symmetric padding)."""
    op = "conv2d"
    x, unbatched = _as_batch(input, op)
    if not isinstance(weight, Tensor) or weight.ndim != 4:
        got = fmt_shape(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ShapeError(f"{op}: weight must be a 4-D tensor (out, in/groups, kh, kw), got {got}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ArgumentError(f"{op}: groups must be a positive int, got {groups!r}")
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    sh, sw = _pair(stride, "stride", op, 1)
    dh, dw = _pair(dilation, "dilation", op, 1)
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same" and (dh * (kh - 1)) % 2 == 0 and (dw * (kw - 1)) % 2 == 0 and (sh, sw) == (1, 1):
            padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        else:
            raise ArgumentError(
                f"{op}: padding={padding!r} is not supported here; use 'valid', ints, or 'same' "
                f"with stride 1 and odd (dilated) kernel sizes"
            )
    ph, pw = _pair(padding, "padding", op, 0)
    if cg * groups != c:
        raise ShapeError(
            f"{op}: input {fmt_shape(x.shape)} has {c} channels (dimension 1) but weight "
            f"{fmt_shape(weight.shape)} with groups={groups} expects {cg * groups}"
        )
    if o % groups:
        raise ShapeError(f"{op}: weight {fmt_shape(weight.shape)}: {o} output channels are not divisible by groups={groups}")
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (o,)):
        got = fmt_shape(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ShapeError(f"{op}: bias must have shape ({o},) for weight {fmt_shape(weight.shape)}, got {got}")
    dt = x.data.dtype
    if dt.kind != "f" or weight.data.dtype != dt or (bias is not None and bias.data.dtype != dt):
        got = ", ".join(t.dtype.name for t in (x, weight, bias) if t is not None)
        raise DTypeError(f"{op}: input, weight and bias must share one floating dtype, got {got}")
    oh, hp = _out_size(h, kh, sh, ph, dh, False, op, x, 2)
    ow, wp = _out_size(w, kw, sw, pw, dw, False, op, x, 3)
    k = cg * kh * kw
    geo = Geom(n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups, oh, ow, hp, wp,
               batched=n == 1 or 4 * k < oh * ow)
    out = Conv2d.apply(x, weight, geo=geo) if bias is None else Conv2d.apply(x, weight, bias, geo=geo)
    return _unbatch(out, unbatched)


def _pool_geom(x, kernel_size, stride, padding, dilation, ceil_mode, op):
    kh, kw = _pair(kernel_size, "kernel_size", op, 1)
    sh, sw = (kh, kw) if stride is None or stride == () else _pair(stride, "stride", op, 1)
    ph, pw = _pair(padding, "padding", op, 0)
    dh, dw = _pair(dilation, "dilation", op, 1)
    if ph > kh // 2 or pw > kw // 2:
        raise ArgumentError(
            f"{op}: padding {(ph, pw)} must be at most half the kernel size {(kh, kw)}"
        )
    n, c, h, w = x.shape
    oh, hp = _out_size(h, kh, sh, ph, dh, ceil_mode, op, x, 2)
    ow, wp = _out_size(w, kw, sw, pw, dw, ceil_mode, op, x, 3)
    return Geom(n, c, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, 1, oh, ow, hp, wp)


def _require_float(x, op):
    if x.data.dtype.kind != "f":
        raise DTypeError(f"{op}: expected a floating-point input, got {x.dtype.name} {fmt_shape(x.shape)}")


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over kh x kw windows of (N, C, H, W) or (C, H, W); stride defaults to the kernel size.
    Padding counts as -inf. The gradient goes to the first maximum of each window."""
    op = "max_pool2d"
    if return_indices:
        raise ArgumentError(f"{op}: return_indices=True is not supported")
    x, unbatched = _as_batch(input, op)
    _require_float(x, op)
    geo = _pool_geom(x, kernel_size, stride, padding, dilation, ceil_mode, op)
    return _unbatch(MaxPool2d.apply(x, geo=geo), unbatched)


def _avg_divisor(xp, dtype, g: Geom, count_include_pad):
    """The (oh, ow) window sizes PyTorch divides by: a window may cover padding but not what ceil
    mode adds beyond it; with count_include_pad=False only input elements count."""

    def sizes(out, size, k, s, p):
        start = xp.arange(out) * s - p
        end = xp.minimum(start + k, size + p)
        if count_include_pad:
            return end - start
        return xp.minimum(end, size) - xp.maximum(start, 0)

    hs = sizes(g.oh, g.h, g.kh, g.sh, g.ph)
    ws = sizes(g.ow, g.w, g.kw, g.sw, g.pw)
    return (hs[:, None] * ws[None, :]).astype(dtype)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over kh x kw windows of (N, C, H, W) or (C, H, W), PyTorch's divisors (see
    _avg_divisor); stride defaults to the kernel size."""
    op = "avg_pool2d"
    x, unbatched = _as_batch(input, op)
    _require_float(x, op)
    geo = _pool_geom(x, kernel_size, stride, padding, 1, ceil_mode, op)
    xp = x.device.xp
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, int) or divisor_override < 1:
            raise ArgumentError(f"{op}: divisor_override must be a positive int, got {divisor_override!r}")
        div = xp.full((geo.oh, geo.ow), divisor_override, dtype=x.data.dtype)
    else:
        div = _avg_divisor(xp, x.data.dtype, geo, count_include_pad)
    return _unbatch(AvgPool2d.apply(x, geo=geo, div=div), unbatched)


def _adaptive_matrix(xp, dtype, out, size):
    """(out, size) averaging matrix of PyTorch's adaptive windows [floor(o*size/out), ceil((o+1)*size/out))."""
    m = xp.zeros((out, size), dtype=dtype)
    for o in range(out):  # a loop over output rows of a small matrix, not over pixels
        a, b = (o * size) // out, -((-(o + 1) * size) // out)
        m[o, a:b] = 1.0 / (b - a)
    return m


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size (int or pair; None keeps that input size), with
    PyTorch's windows. A composite: a mean for 1x1, avg_pool2d when the sizes divide, else two
    matmuls with averaging matrices; its gradients come from those ops."""
    op = "adaptive_avg_pool2d"
    x, unbatched = _as_batch(input, op)
    _require_float(x, op)
    h, w = x.shape[2], x.shape[3]
    sizes = (output_size, output_size) if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    if len(sizes) != 2:
        raise ArgumentError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    oh, ow = (h if sizes[0] is None else sizes[0]), (w if sizes[1] is None else sizes[1])
    _pair((oh, ow), "output_size", op, 1)
    if (oh, ow) == (1, 1):
        out = x.mean((2, 3), keepdim=True)
    elif h % oh == 0 and w % ow == 0:
        out = avg_pool2d(x, (h // oh, w // ow))
    else:
        from prunus.ops._util import constant
        from prunus.ops.linalg import matmul

        xp, dt = x.device.xp, x.data.dtype
        pw_t = constant(_adaptive_matrix(xp, dt, ow, w).T.copy(), x)
        ph_ = constant(_adaptive_matrix(xp, dt, oh, h), x)
        out = matmul(ph_, matmul(x, pw_t))
    return _unbatch(out, unbatched)
