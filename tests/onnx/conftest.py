"""Shared check of the ONNX export tests: export to a file, onnx.checker with full_check, then run
the file in onnxruntime (CPUExecutionProvider) against prunus on several inputs.

With PRUNUS_ONNX_REPORT=1 the largest difference seen per test is printed at the end.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import prunus
import prunus.onnx

RTOL, ATOL = 1e-4, 1e-5
WORST: dict = {}  # test id -> the largest |onnxruntime - prunus| it saw


def _flat(x):
    if isinstance(x, prunus.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _flat(item)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _flat(v)]
    return []


def _args(a):
    return a if isinstance(a, tuple) else (a,)


@pytest.fixture
def roundtrip(tmp_path, request):
    """check(fn, example, runs, opset=17, rtol=, atol=, **export_kwargs) -> (ModelProto, worst):
    export fn at `example`, check the file, and compare onnxruntime with prunus on each of `runs`
    (arguments, as a tuple or one tensor): outputs' shapes and dtypes equal, floats within
    rtol 1e-4 / atol 1e-5, integers and bools exactly."""

    def check(fn, example, runs, opset=17, rtol=RTOL, atol=ATOL, **export_kwargs):
        import onnx
        import onnxruntime as ort

        path = tmp_path / "model.onnx"
        proto = prunus.onnx.export(fn, example, path, opset=opset, **export_kwargs)
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        if isinstance(fn, prunus.nn.Module):
            fn.eval()
        worst = 0.0
        for args in runs:
            args = _args(args)
            feed = dict(zip(names, [a.numpy() for a in args if isinstance(a, prunus.Tensor)]))
            with prunus.no_grad():
                refs = [t.numpy() for t in _flat(fn(*args))]
            got = sess.run(None, feed)
            assert len(got) == len(refs)
            for r, g in zip(refs, got):
                assert g.shape == r.shape and g.dtype == r.dtype, (g.shape, g.dtype, r.shape, r.dtype)
                if r.dtype.kind in "biu":
                    np.testing.assert_array_equal(g, r)
                    continue
                np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
                both = np.isfinite(r) & np.isfinite(g)
                if both.any():
                    worst = max(worst, float(np.abs(g[both].astype(np.float64) - r[both]).max()))
        WORST[request.node.nodeid] = max(worst, WORST.get(request.node.nodeid, 0.0))
        return proto, worst

    return check


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("PRUNUS_ONNX_REPORT") and WORST:
        terminalreporter.write_line("largest |onnxruntime - prunus| per ONNX test:")
        for k, v in sorted(WORST.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"  {v:.3g}  {k}")
