"""Smoke test of benchmarks/bench_train.py: it runs (--quick) and writes the JSON it promises.

Timings are never asserted (see DESIGN.md, Tests); this only keeps the script from rotting.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "bench_train.py")
MODELS = ["lenet_300_100", "lenet5"]


def test_bench_train_quick(tmp_path):
    out = tmp_path / "train.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
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
