"""The scripts in examples/ run end to end with tiny settings (as CI runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    env = os.environ.get("PRUNUS_DATA")
    base = Path(env).expanduser() if env else REPO.parent / "shared" / "datasets"
    if not (base / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {base / 'mnist'} (set PRUNUS_DATA)")
    return base


def _run(*argv, timeout=120):
    """Run `python *argv` with PRUNUS_DATA set; its stdout (the run must succeed)."""
    env = {**os.environ, "PRUNUS_DATA": str(_data_dir().resolve())}
    out = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                         env=env, timeout=timeout, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _checkpoint(tmp_path, model, steps) -> Path:
    """A checkpoint of `model` after `steps` training steps ('prunus train')."""
    ckpt = tmp_path / "ckpt"
    _run("-m", "prunus.cli", "train", "--model", model, "--epochs", "1", "--limit-steps", steps,
         "--checkpoint-dir", ckpt, "--no-val", "--quiet")
    return max(ckpt.iterdir())


def _example(name) -> Path:
    return REPO / "examples" / name


def test_mnist_mlp_learns_in_a_few_hundred_steps():
    out = _run(_example("mnist_mlp.py"), "--steps", "300", "--batch-size", "64")
    line = [ln for ln in out.splitlines() if ln.startswith("test accuracy:")]
    assert line, out
    assert float(line[-1].split(":")[1]) > 0.80  # chance is 0.10


def test_compression_ablation_runs_end_to_end(tmp_path):
    out = _run(_example("compression_ablation.py"), "--checkpoint", _checkpoint(tmp_path, "lenet_300_100", 30),
               "--bits", "2,3", "--limit-steps", "3", "--test-size", "300", timeout=300)
    rows = [ln.split() for ln in out.splitlines() if ln.split()[:1] in (["linear"], ["density"], ["random"])]
    assert len(rows) == 6 and all(r[1] in ("2", "3") for r in rows)


def test_transfer_learning_beats_training_from_scratch():
    out = _run(_example("transfer_learning.py"), "--source-steps", "100", "--target-epochs", "10")
    acc = {line.split(",")[-1].split(":")[0].strip(): float(line.rsplit(":", 1)[1])
           for line in out.splitlines() if line.startswith("digits 5-9")}
    # 50 labelled images: the frozen features of digits 0-4 carry over (measured 0.77 vs 0.22)
    assert acc["transferred"] > 0.6 and acc["transferred"] > acc["scratch"] + 0.2, out


def test_structured_pruning_example_retrains_the_shrunk_model(tmp_path):
    out = _run(_example("structured_pruning.py"), "--checkpoint", _checkpoint(tmp_path, "lenet5", 150),
               "--epochs", "1", "--steps", "100", "--test-size", "1000", timeout=300)
    assert out.startswith("parameters 431,080 -> 212,045, MACs per image 2,293,000 -> 749,000")
    err = {ln[:12].strip(): float(ln.split()[-1].rstrip("%")) for ln in out.splitlines()[1:]}
    assert set(err) == {"baseline", "pruned", "retrained 1"}
    # retraining recovers what removing filters cost (measured: 5.7% -> 7.2% -> 4.0%)
    assert err["retrained 1"] < err["pruned"] - 1.0
