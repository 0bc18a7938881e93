"""Smoke tests of benchmarks/bench_core.py and bench_train.py: each runs (--quick) and writes the
JSON it promises.

Timings are never asserted (see DESIGN.md, Tests); this only keeps the script from rotting.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = [
    "add_fwd_bwd_1", "add_fwd", "mul_fwd", "matmul_fwd", "relu_fwd", "sum_fwd",
    "mlp_train_b128", "mlp_infer_b128",
]


def _run_quick(script, out):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", script), "--quick", "--threads", "1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_bench_core_quick(tmp_path):
    out = tmp_path / "core.json"
    proc = _run_quick("bench_core.py", out)
    assert "speed vs torch" in proc.stdout

    data = json.loads(out.read_text())
    assert {"schema", "date", "machine", "config", "checks", "results"} <= data.keys()
    for key in ("numpy_version", "torch_version", "threads", "cpu_count"):
        assert key in data["machine"]
    assert data["machine"]["threads"] == 1
    assert data["config"]["threads"] == 1
    assert set(data["results"]) == set(BENCHMARKS)
    assert set(data["checks"]) == set(BENCHMARKS)
    for name, r in data["results"].items():
        assert {"prunus", "torch"} <= r["contenders"].keys(), name
        for who, m in r["contenders"].items():
            assert {"median_us", "min_us", "max_us", "rounds_us", "iters_per_round"} <= m.keys()
            assert 0 < m["min_us"] <= m["median_us"] <= m["max_us"], (name, who)
        assert {"prunus_over_torch", "speed_vs_torch"} <= r["ratios"].keys()
    for name in ("mlp_train_b128", "mlp_infer_b128"):
        assert {"prunus", "prunus_F", "torch", "torch_F", "numpy"} == set(data["results"][name]["contenders"])
        assert "speed_vs_numpy" in data["results"][name]["ratios"]


MODELS = ["lenet_300_100", "lenet5"]


def test_bench_train_quick(tmp_path):
    out = tmp_path / "train.json"
    proc = _run_quick("bench_train.py", out)
    assert "prunus/torch" in proc.stdout
    assert "where the prunus step goes" in proc.stdout

    data = json.loads(out.read_text())
    assert {"schema", "date", "machine", "config", "checks", "results", "breakdown"} <= data.keys()
    assert data["machine"]["threads"] == 1
    assert data["config"]["threads"] == 1
    assert set(data["results"]) == set(data["checks"]) == set(data["breakdown"]) == set(MODELS)
    for name, r in data["results"].items():
        assert set(r["contenders"]) == {"prunus", "torch"}
        for who, m in r["contenders"].items():
            assert 0 < m["min_us"] <= m["median_us"] <= m["max_us"], (name, who)
            s = r["samples_per_s"][who]
            assert 0 < s["min_samples_per_s"] <= s["median_samples_per_s"] <= s["max_samples_per_s"]
        assert r["ratios"]["prunus_over_torch_samples_per_s"] > 0
        assert {"step1_max_abs_diff", "step2_max_abs_diff"} <= data["checks"][name].keys()
        b = data["breakdown"][name]
        assert 0 < len(b["top"]) <= 10
        assert {"fwd", "zero", "bwd", "opt"} == set(b["phases"])
        for row in b["top"]:
            assert {"op", "phase", "calls_per_step", "self_us_per_step"} <= row.keys()
