"""Smoke tests of benchmarks/bench_core.py, bench_train.py, bench_graph.py, bench_compression.py
and bench_structured.py: each runs (--quick) and writes the JSON it promises.

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


def _run_quick(script, out, *extra, env=None):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", script), "--quick", "--threads", "1",
         "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False, env=env,
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


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_bench_train_quick(tmp_path, optimizer):
    out = tmp_path / "train.json"
    proc = _run_quick("bench_train.py", out, "--optimizer", optimizer)
    assert "prunus/torch" in proc.stdout
    assert ("Adam(lr 0.001" in proc.stdout) == (optimizer == "adam")
    assert "where the prunus step goes" in proc.stdout

    data = json.loads(out.read_text())
    assert {"schema", "date", "machine", "config", "checks", "results", "breakdown"} <= data.keys()
    assert data["machine"]["threads"] == 1
    assert data["config"]["threads"] == 1
    assert data["config"]["optimizer"]["name"] == {"sgd": "SGD", "adam": "Adam"}[optimizer]
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


GRAPH_CASES = ["train_lenet_300_100", "train_lenet5", "infer_b1", "infer_b256"]


def test_bench_graph_quick(tmp_path):
    out = tmp_path / "graph.json"
    proc = _run_quick("bench_graph.py", out)
    assert "targets of the issue" in proc.stdout
    assert "where the time goes" in proc.stdout

    data = json.loads(out.read_text())
    assert {"schema", "date", "machine", "config", "checks", "results", "targets", "memory",
            "graphs", "breakdown"} <= data.keys()
    assert data["machine"]["threads"] == data["config"]["threads"] == 1
    assert set(data["results"]) == set(data["checks"]) == set(data["breakdown"]) == set(GRAPH_CASES)
    for name, r in data["results"].items():
        assert {"eager", "compiled", "torch"} <= set(r["contenders"]), name
        for who, m in r["contenders"].items():
            assert 0 < m["min_us"] <= m["median_us"] <= m["max_us"], (name, who)
        assert r["ratios"]["compiled_vs_eager"] > 0
        assert data["checks"][name]["compiled_vs_eager"].startswith("bit-identical")
        if name.startswith("train_"):  # the compiled Module in the eager loop, checked the same way
            assert r["ratios"]["compiled_module_vs_eager"] > 0
            assert data["checks"][name]["step1_loss"]["compiled_module"] == data["checks"][name]["step1_loss"]["prunus"]
    assert len(data["targets"]) == 5
    assert set(data["memory"]) == {"lenet_300_100", "lenet5"}
    for m in data["memory"].values():
        assert m["eager"]["peak_mb"] > 0 and m["compiled"]["peak_mb"] > 0
    for name in ("train_lenet_300_100", "train_lenet5"):
        assert data["graphs"][name]["summary"]["nodes"] > 0
        b = data["breakdown"][name]["compiled"]
        assert len(b["by_node"]) == data["graphs"][name]["summary"]["nodes"]


def test_bench_compression_quick(tmp_path):
    data = os.environ.get("PRUNUS_DATA") or os.path.join(os.path.dirname(REPO), "shared", "datasets")
    if not os.path.isfile(os.path.join(data, "mnist", "t10k-labels-idx1-ubyte.gz")):
        pytest.skip("MNIST not found (set PRUNUS_DATA)")
    env = {**os.environ, "PRUNUS_DATA": os.path.abspath(data)}
    ckpt, pnz = tmp_path / "ckpt", tmp_path / "m.pnz"

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "prunus.cli", *args], capture_output=True,
                              text=True, timeout=120, cwd=REPO, check=False, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]

    cli("train", "--model", "lenet_300_100", "--epochs", "1", "--limit-steps", "20",
        "--checkpoint-dir", str(ckpt), "--no-val", "--quiet")
    last = max(ckpt.iterdir())
    cli("compress", "--checkpoint", str(last), "-o", str(pnz), "--limit-steps", "2", "--quiet")
    out = tmp_path / "compression.json"
    proc = _run_quick("bench_compression.py", out, "--pnz", str(pnz), "--checkpoint", str(last),
                      "--test-size", "200", env=env)
    assert "evaluate the test set" in proc.stdout
    result = json.loads(out.read_text())
    assert result["sizes"]["pnz"] < result["sizes"]["checkpoint"]
    assert result["accuracy"]["pnz"] == result["accuracy"]["pnz_dense"]


def test_bench_structured_quick(tmp_path):
    out = tmp_path / "structured.json"
    proc = _run_quick("bench_structured.py", out)
    assert "speedup" in proc.stdout
    data = json.loads(out.read_text())
    assert data["models"]["pruned"]["params"] < data["models"]["dense"]["params"]
    assert data["models"]["pruned"]["macs_per_image"] < data["models"]["dense"]["macs_per_image"]
    assert data["models"]["pruned"]["layers"]["conv1.weight"] == [10, 1, 5, 5]
    for case in ("infer", "train"):
        assert set(data["results"][case]["contenders"]) == {"dense", "pruned"}
        assert data["results"][case]["speedup"] > 0
