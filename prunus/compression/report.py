"""The compression report in the paper's form (Deep Compression, Tables 2 and 3), from the bytes of
a written .pnz file (a CompressedInfo from container.save / read_info, never a size formula), as a
text table or CSV; and the weight-distribution pictures of the pipeline (before pruning, after
pruning, after quantization) as a PNG (matplotlib, the `prunus[plot]` extra) or as TensorBoard
histograms (tensorboardX, the `prunus[tensorboard]` extra). Both extras are imported lazily.

Columns (P = pruning, Q = quantization by weight sharing, H = Huffman coding):
    #weights            elements of the layer's weight
    weights %           kept (non-pruned) positions, in percent
    weight bits P+Q     bits per stored weight: log2 k for a quantized layer, the dtype's bits else
    weight bits P+Q+H   bits of the Huffman-coded value stream per sparse entry (fillers included)
    index bits P+Q      bits b per relative index
    index bits P+Q+H    bits of the Huffman-coded index stream per entry
    bytes P+Q / P+Q+H   the layer's bytes: codebook + fixed-width streams / the sections written
    rate P+Q / P+Q+H    32-bit dense bytes (4 per weight) / those bytes
A fixed-width value stream needs bits(k + 1) per entry, one more than log2 k when k is a power of
two, because symbol 0 marks a filler (the paper reserves a zero centroid instead).

Rows: one per weight layer (a pruned or quantized tensor, or any dense tensor of 2+ dimensions),
then "total (weights)" as the paper's tables count (biases excluded), "biases & other" (biases,
BatchNorm parameters and buffers) and "total (file)": every tensor plus the file's prefix and JSON
header, i.e. the file size itself.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import NamedTuple

import numpy as np

from prunus._fileio import atomic_write
from prunus.autograd import no_grad
from prunus.errors import ArgumentError, MissingDependencyError
from prunus.tensor import Tensor

__all__ = [
    "ReportRow",
    "format_table",
    "layer_weights",
    "log_weight_histograms",
    "plot_weight_histograms",
    "report_rows",
    "write_csv",
]

PLOT_HINT = 'pip install "prunus[plot]"'


class ReportRow(NamedTuple):
    """One line of the table. Bits are None where they do not apply (no index for a dense
    tensor, no per-entry average for a total)."""

    layer: str
    weights: int
    kept: int
    weight_bits: float | None
    weight_bits_huffman: float | None
    index_bits: float | None
    index_bits_huffman: float | None
    dense32_bytes: int
    bytes_raw: int  # without Huffman coding (P+Q)
    bytes: int  # as written (P+Q+H)

    @property
    def kept_percent(self) -> float:
        return 100.0 * self.kept / self.weights if self.weights else 100.0

    @property
    def rate_raw(self) -> float:
        return self.dense32_bytes / self.bytes_raw if self.bytes_raw else math.inf

    @property
    def rate(self) -> float:
        return self.dense32_bytes / self.bytes if self.bytes else math.inf


def _is_layer(t) -> bool:
    return t.kind != "dense" or len(t.shape) >= 2


def _layer_name(name: str) -> str:
    return name.removesuffix(".weight")


def _row(t) -> ReportRow:
    if t.kind == "shared":
        wb, wbh = float(t.weight_bits), t.value_nbits / t.entries if t.entries else None
    else:
        wb = wbh = float(t.weight_bits)
    sparse = t.kind != "dense"
    return ReportRow(
        layer=_layer_name(t.name), weights=t.weights, kept=t.nonzero, weight_bits=wb,
        weight_bits_huffman=wbh,
        index_bits=float(t.index_bits) if sparse else None,
        index_bits_huffman=(t.index_nbits / t.entries if sparse and t.entries else None),
        dense32_bytes=t.dense32_bytes, bytes_raw=t.raw_bytes, bytes=t.stored_bytes)


def _total(label, tensors, extra_bytes=0) -> ReportRow:
    return ReportRow(
        layer=label, weights=sum(t.weights for t in tensors), kept=sum(t.nonzero for t in tensors),
        weight_bits=None, weight_bits_huffman=None, index_bits=None, index_bits_huffman=None,
        dense32_bytes=sum(t.dense32_bytes for t in tensors),
        bytes_raw=sum(t.raw_bytes for t in tensors) + extra_bytes,
        bytes=sum(t.stored_bytes for t in tensors) + extra_bytes)


def report_rows(info) -> list:
    """The table's rows: a ReportRow per weight layer (file order), then "total (weights)",
    "biases & other" and "total (file)" (whose P+Q+H bytes are the file size)."""
    _check_info(info, "report_rows")
    layers = [t for t in info.tensors if _is_layer(t)]
    others = [t for t in info.tensors if not _is_layer(t)]
    overhead = info.prefix_bytes + info.header_bytes
    rows = [_row(t) for t in layers]
    rows.append(_total("total (weights)", layers))
    rows.append(_total("biases & other", others))
    rows.append(_total("total (file)", info.tensors, overhead))
    return rows


def _check_info(info, fn) -> None:
    from prunus.compression.container import CompressedInfo

    if not isinstance(info, CompressedInfo):
        raise ArgumentError(f"{fn}: expected a CompressedInfo (from compression.save or read_info), "
                            f"got {type(info).__name__}")


def _check_accuracies(accuracies, fn) -> dict:
    if accuracies is None:
        return {}
    if not isinstance(accuracies, dict):
        raise ArgumentError(f"{fn}: accuracies must be a dict {{stage: accuracy in [0, 1]}}, got "
                            f"{type(accuracies).__name__}")
    for stage, acc in accuracies.items():
        if isinstance(acc, bool) or not isinstance(acc, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(acc) <= 1.0:
            raise ArgumentError(f"{fn}: the accuracy of stage {stage!r} must be a fraction in "
                                f"[0, 1] (as Trainer.evaluate's 'acc'), got {acc!r}")
    return {str(k): float(v) for k, v in accuracies.items()}


def _bits(x) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def _rate(x) -> str:
    return "inf" if math.isinf(x) else f"{x:.1f}x"


def format_table(info, accuracies=None) -> str:
    """The per-layer table (layer, #weights, weights %, weight bits and index bits without and
    with Huffman coding, bytes and compression rates without and with Huffman coding), the totals
    with biases excluded and included, the file size, and a line with the accuracy after each
    stage when `accuracies` ({stage: top-1 accuracy in [0, 1]}, in order) is given."""
    _check_info(info, "format_table")
    accs = _check_accuracies(accuracies, "format_table")
    head = [("layer", ""), ("#weights", ""), ("weights%", "(P)"), ("weight bits", "(P+Q)"),
            ("weight bits", "(P+Q+H)"), ("index bits", "(P+Q)"), ("index bits", "(P+Q+H)"),
            ("bytes", "(P+Q)"), ("bytes", "(P+Q+H)"), ("rate", "(P+Q)"), ("rate", "(P+Q+H)")]
    body = []
    rows = report_rows(info)
    for r in rows:
        body.append([r.layer, f"{r.weights:,}", f"{r.kept_percent:.1f}%", _bits(r.weight_bits),
                     _bits(r.weight_bits_huffman), _bits(r.index_bits), _bits(r.index_bits_huffman),
                     f"{r.bytes_raw:,}", f"{r.bytes:,}", _rate(r.rate_raw), _rate(r.rate)])
    cols = list(zip(*[list(h) for h in head]))
    widths = [max(len(c) for c in [head[i][0], head[i][1], *(b[i] for b in body)])
              for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(cols[0]), line(cols[1])]
    rule = "-" * len(out[0])
    n_layers = len(rows) - 3
    out.append(rule)
    out += [line(b) for b in body[:n_layers]]
    out.append(rule)
    out += [line(b) for b in body[n_layers:]]
    total = rows[-1]
    out.append(f"file: {info.file_bytes:,} bytes ({info.prefix_bytes} prefix + {info.header_bytes:,} "
               f"header + {info.file_bytes - info.prefix_bytes - info.header_bytes:,} data); "
               f"32-bit dense: {total.dense32_bytes:,} bytes; {_rate(total.rate)} smaller")
    out.append("P = pruning, Q = quantization (weight sharing), H = Huffman coding; "
               "rate = 32-bit dense bytes / compressed bytes")
    if accs:
        out.append("top-1 accuracy: " + " -> ".join(
            f"{stage} {100 * a:.2f}% (error {100 * (1 - a):.2f}%)" for stage, a in accs.items()))
    return "\n".join(out)


_CSV_COLUMNS = ("layer", "weights", "kept", "kept_percent", "weight_bits_pq", "weight_bits_pqh",
                "index_bits_pq", "index_bits_pqh", "dense32_bytes", "bytes_pq", "bytes_pqh",
                "rate_pq", "rate_pqh", "accuracy")


def write_csv(info, path, accuracies=None) -> None:
    """The table as CSV (atomically): one line per row of format_table with the columns
    layer, weights, kept, kept_percent, weight_bits_pq, weight_bits_pqh, index_bits_pq,
    index_bits_pqh, dense32_bytes, bytes_pq, bytes_pqh, rate_pq, rate_pqh, accuracy; then one
    line per stage of `accuracies` with layer "accuracy: <stage>" and only the accuracy filled.
    Empty cells where a value does not apply."""
    _check_info(info, "write_csv")
    accs = _check_accuracies(accuracies, "write_csv")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_COLUMNS)

    def num(x):
        return "" if x is None else repr(float(x)) if isinstance(x, float) else str(x)

    for r in report_rows(info):
        w.writerow([r.layer, r.weights, r.kept, num(r.kept_percent), num(r.weight_bits),
                    num(r.weight_bits_huffman), num(r.index_bits), num(r.index_bits_huffman),
                    r.dense32_bytes, r.bytes_raw, r.bytes, num(r.rate_raw), num(r.rate), ""])
    for stage, a in accs.items():
        w.writerow([f"accuracy: {stage}"] + [""] * (len(_CSV_COLUMNS) - 2) + [num(a)])
    atomic_write(os.fspath(path), buf.getvalue().encode("utf-8"))


# -- weight distributions ------------------------------------------------------------------------


def layer_weights(model, name: str = "weight") -> np.ndarray:
    """The weight a layer uses now (pruned positions 0, quantized ones their centroid), flat, on
    the host: `model` is a layer, or a model with `name` a state-dict name ("fc1.weight")."""
    path, _, attr = name.rpartition(".")
    module = model
    if path:
        modules = dict(model.named_modules())
        if path not in modules:
            raise ArgumentError(f"layer_weights: {type(model).__name__} has no layer {path!r}")
        module = modules[path]
    try:
        with no_grad():
            t = getattr(module, attr)
    except AttributeError:
        t = None
    if not isinstance(t, Tensor):
        raise ArgumentError(f"layer_weights: {type(module).__name__} has no tensor {attr!r}")
    return np.array(t.device.kernels.to_numpy(t.data), copy=True).reshape(-1)


def _stage_values(stages, fn) -> dict:
    if not isinstance(stages, dict) or not stages:
        raise ArgumentError(f"{fn}: stages must be a non-empty dict {{stage name: weights}}, got "
                            f"{type(stages).__name__}")
    out = {}
    for stage, w in stages.items():
        a = w.device.kernels.to_numpy(w.data) if isinstance(w, Tensor) else np.asarray(w)
        if a.dtype.kind not in "fiu":
            raise ArgumentError(f"{fn}: the weights of stage {stage!r} must be numbers, got {a.dtype}")
        a = a.astype(np.float64).reshape(-1)
        out[str(stage)] = a[(a != 0) & np.isfinite(a)]  # the non-zero (surviving) weights
    return out


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingDependencyError(
            f"weight-distribution plots need matplotlib ({e}); install it with: {PLOT_HINT}"
        ) from None
    return Figure, FigureCanvasAgg


def plot_weight_histograms(stages, path, *, bins: int = 100, title: str | None = None) -> None:
    """Histograms of the non-zero weights of one layer at each stage, one panel per stage over a
    common x axis, written (atomically) as a PNG: the lecture's pictures of pruning removing the
    weights around zero and quantization turning the distribution into k spikes.

    stages: {stage name: weights (Tensor or array)}, e.g. {"before pruning": w0, "after pruning":
    w1, "after quantization": w2} with layer_weights(model, "fc1.weight") taken at each stage.
    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change)."""
    fn = "plot_weight_histograms"
    values = _stage_values(stages, fn)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ArgumentError(f"{fn}: bins must be a positive int, got {bins!r}")
    Figure, FigureCanvasAgg = _matplotlib()
    nonempty = [v for v in values.values() if v.size]
    lo = min((float(v.min()) for v in nonempty), default=-1.0)
    hi = max((float(v.max()) for v in nonempty), default=1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(7, 1.9 * len(values) + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(values), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (stage, v) in zip(axes, values.items()):
        ax.hist(v, bins=edges, color="tab:blue")
        distinct = np.unique(v).size
        ax.set_title(f"{stage}: {v.size:,} non-zero weights"
                     + (f", {distinct} distinct values" if distinct <= 256 else ""), fontsize=9)
        ax.set_ylabel("count")
    axes[-1].set_xlabel("weight value")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(os.fspath(path), buf.getvalue())


def log_weight_histograms(stages, writer, *, layer: str = "weights", step: int = 0,
                          prefix: str = "compression") -> None:
    """The same distributions as TensorBoard histograms, tag "<prefix>/<layer>/<stage>" at `step`.

    writer: a log folder (a tensorboardX SummaryWriter is opened and closed there, as
    prunus.train's TensorBoardLogger writes) or anything with add_histogram(tag, values, step)
    (a SummaryWriter, a TensorBoardLogger's .writer)."""
    fn = "log_weight_histograms"
    values = _stage_values(stages, fn)
    own = not hasattr(writer, "add_histogram")
    if own:
        if not isinstance(writer, (str, os.PathLike)):
            raise ArgumentError(f"{fn}: writer must be a log folder or have add_histogram(), got "
                                f"{type(writer).__name__}")
        from prunus.train.tensorboard import _summary_writer_class

        writer = _summary_writer_class()(logdir=os.fspath(writer))
    try:
        for stage, v in values.items():
            if v.size:  # tensorboardX cannot bin an empty array
                writer.add_histogram(f"{prefix}/{layer}/{stage.replace(' ', '_')}", v, step)
    finally:
        if own:
            writer.close()
