"""`prunus` CLI: help texts, one-line errors with exit code 2 for bad arguments and 1 for runtime
errors, and a tiny train -> checkpoint -> eval round trip on MNIST."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import prunus
from prunus import cli

REPO = Path(__file__).resolve().parents[2]


def _data_dir() -> Path:
    env = os.environ.get("PRUNUS_DATA")
    base = Path(env).expanduser() if env else REPO.parent / "shared" / "datasets"
    if not (base / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {base / 'mnist'} (set PRUNUS_DATA)")
    return base.resolve()


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "prunus.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120, check=False)


def test_help_texts(capsys):
    for argv, words in [([], ["train", "eval", "export"]),
                        (["train"], ["--model", "--limit-steps", "--resume", "lenet5"]),
                        (["eval"], ["--checkpoint", "--dataset"]),
                        (["export"], ["--checkpoint", "--output", "--dynamic-batch", ".prunus"])]:
        with pytest.raises(SystemExit) as e:
            cli.main([*argv, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        for w in words:
            assert w in out


@pytest.mark.parametrize("argv", [
    [],
    ["fly"],
    ["train"],  # --model is required
    ["train", "--model", "nope"],
    ["train", "--model", "lenet5", "--epochs", "0"],
    ["train", "--model", "lenet5", "--lr", "abc"],
    ["train", "--model", "lenet5", "--batch-size", "-3"],
    ["eval"],
])
def test_bad_arguments_give_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err


def test_runtime_errors_give_one_line_and_exit_1(tmp_path, capsys):
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prunus: error:") and err.count("\n") == 1
    # a dataset that is not there: MNIST's multi-line message comes out on one line
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = cli.main(["train", "--model", "lenet_300_100", "--data-root", str(empty), "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("prunus: error: MNIST") and err.count("\n") == 1
    # --resume with an empty checkpoint folder
    rc = cli.main(["train", "--model", "lenet_300_100", "--resume", "--checkpoint-dir", str(empty),
                   "--data-root", str(empty), "--quiet"])
    assert rc == 1 and "prunus: error:" in capsys.readouterr().err


def test_subprocess_error_has_no_traceback(tmp_path):
    out = _run("train", "--model", "lenet5", "--momentum", "x")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    out = _run("eval", "--checkpoint", str(tmp_path / "nope"))
    assert out.returncode == 1 and out.stderr.startswith("prunus: error:")


def test_train_then_resume_then_eval(tmp_path):
    env = {"PRUNUS_DATA": str(_data_dir())}
    ckpt = tmp_path / "ckpt"
    out = _run("train", "--model", "lenet_300_100", "--dataset", "mnist", "--epochs", "1",
               "--batch-size", "64", "--limit-steps", "30", "--checkpoint-dir", str(ckpt),
               "--checkpoint-every", "20", "--no-val", env=env)
    assert out.returncode == 0, out.stderr
    assert "stopped at step 30" in out.stderr and "samples/s" in out.stderr
    files = sorted(p.name for p in ckpt.iterdir())
    assert files == ["checkpoint-step00000020.safetensors", "checkpoint-step00000030.safetensors"]

    out = _run("train", "--model", "lenet_300_100", "--epochs", "1", "--limit-steps", "60",
               "--checkpoint-dir", str(ckpt), "--resume", "--no-val", "--lr", "0.05", env=env)
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr and "step 30" in out.stderr
    assert (ckpt / "checkpoint-step00000060.safetensors").is_file()

    out = _run("eval", "--checkpoint", str(ckpt / "checkpoint-step00000060.safetensors"), env=env)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("lenet_300_100 on mnist test (10000 images)")
    acc = float(line.split("top-1 accuracy ")[1].split("%")[0])
    assert acc > 50  # 60 steps of SGD are far above chance (10%)


def test_train_compiled_gives_the_eager_checkpoint(tmp_path):
    from prunus.serialization import load

    env = {"PRUNUS_DATA": str(_data_dir())}
    weights = []
    for flags in ([], ["--compile"]):
        ckpt = tmp_path / ("compiled" if flags else "eager")
        out = _run("train", "--model", "lenet5", "--epochs", "1", "--batch-size", "32",
                   "--limit-steps", "6", "--checkpoint-dir", str(ckpt), "--no-val", *flags, env=env)
        assert out.returncode == 0, out.stderr
        assert ("training lenet5 (compiled) on mnist" in out.stderr) == bool(flags)
        weights.append(load(ckpt / "checkpoint-step00000006.safetensors")["model"])
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        np.testing.assert_array_equal(weights[0][k].numpy(), weights[1][k].numpy(), err_msg=k)


def test_export_onnx_and_program(tmp_path):
    env = {"PRUNUS_DATA": str(_data_dir())}
    ckpt = tmp_path / "ckpt"
    out = _run("train", "--model", "lenet5", "--epochs", "1", "--batch-size", "32", "--limit-steps",
               "3", "--checkpoint-dir", str(ckpt), "--no-val", env=env)
    assert out.returncode == 0, out.stderr
    last = max(ckpt.iterdir())
    onnx_path, prog_path = tmp_path / "m.onnx", tmp_path / "m.prunus"
    out = _run("export", "--checkpoint", str(last), "-o", str(onnx_path), "--dynamic-batch")
    assert out.returncode == 0, out.stderr
    assert "lenet5: wrote" in out.stdout
    out = _run("export", "--checkpoint", str(last), "-o", str(prog_path), "--batch-size", "4")
    assert out.returncode == 0, out.stderr
    out = _run("export", "--checkpoint", str(last), "-o", str(tmp_path / "m.bin"))
    assert out.returncode == 1 and "extension" in out.stderr and "Traceback" not in out.stderr

    model, _ = cli._checkpoint_model(str(last))
    model.eval()
    x = prunus.randn(4, 1, 28, 28)
    with prunus.no_grad():
        want = model(x).numpy()
    got = prunus.load_program(str(prog_path))(x).numpy()
    np.testing.assert_array_equal(got, want)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def test_compress_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compress", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for w in ("--checkpoint", "--recipe", "deep-compression", "--epochs-retrain", "--limit-steps", "-o",
              "--prune-scope"):
        assert w in out
    for argv in (["compress"], ["compress", "--checkpoint", "c", "-o", "x.pnz", "--recipe", "zip"],
                 ["compress", "--checkpoint", "c", "-o", "x.pnz", "--epochs-retrain", "-1"],
                 ["compress", "--checkpoint", "c", "-o", "x.pnz", "--prune-scope", "all"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err


def test_compress_smoke_run(tmp_path):
    env = {"PRUNUS_DATA": str(_data_dir())}
    ckpt = tmp_path / "ckpt"
    out = _run("train", "--model", "lenet_300_100", "--epochs", "1", "--limit-steps", "40",
               "--checkpoint-dir", str(ckpt), "--no-val", "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    pnz = tmp_path / "m.pnz"
    out = _run("compress", "--checkpoint", str(max(ckpt.iterdir())), "--dataset", "mnist",
               "--recipe", "deep-compression", "-o", str(pnz), "--epochs-retrain", "1",
               "--prune-scope", "layer",  # the paper's per-layer fractions (the recipe: global)
               "--limit-steps", "3", "--quiet", "--plots", str(tmp_path / "plots"),
               "--logdir", str(tmp_path / "tb"), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # --quiet
    for layer in ("fc1", "fc2", "fc3"):  # before pruning, after pruning, after quantization
        assert (tmp_path / "plots" / f"{layer}_weights.png").read_bytes()[:4] == b"\x89PNG"
    assert any((tmp_path / "tb").iterdir())
    assert "total (weights)" in out.stdout and "fine-tuned" in out.stdout and "encoded" in out.stdout
    kept = {line.split()[0]: line.split()[2] for line in out.stdout.splitlines() if line.startswith("fc")}
    assert kept == {"fc1": "8.0%", "fc2": "9.0%", "fc3": "26.0%"}
    assert pnz.stat().st_size < 60_000  # 8% of the weights at 6 bits, Huffman-coded
    # a missing checkpoint: one line, exit 1
    out = _run("compress", "--checkpoint", str(tmp_path / "missing.safetensors"), "-o", str(pnz), env=env)
    assert out.returncode == 1 and out.stderr.startswith("prunus: error:")


# -- eval --compressed: a .pnz written by prunus.compression.save -------------------------------------


def _small_pnz(path):
    """A pruned + quantized LeNet-300-100 with random weights, saved as .pnz; returns the model."""
    from prunus import models
    from prunus.compression import prune_magnitude, quantize, save

    prunus.manual_seed(0)
    m = models.lenet_300_100()
    for name, s in (("fc1", 0.92), ("fc2", 0.91), ("fc3", 0.74)):
        prune_magnitude(getattr(m, name), sparsity=s)
    quantize(m.fc1, bits=6)
    quantize(m.fc2, bits=6)
    save(m, path, arch="lenet_300_100", meta={"dataset": "mnist"})
    return m


def test_export_a_compressed_model(tmp_path):
    m = _small_pnz(tmp_path / "m.pnz")
    m.eval()
    x = prunus.randn(3, 1, 28, 28)
    with prunus.no_grad():
        want = m(x).numpy()
    out = _run("export", "--compressed", str(tmp_path / "m.pnz"), "-o", str(tmp_path / "m.prunus"),
               "--batch-size", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("lenet_300_100: wrote")
    prog = prunus.load_program(str(tmp_path / "m.prunus"))
    np.testing.assert_array_equal(prog(x).numpy(), want)
    # the program holds plain weights: the pruned zeros and the shared values, no codebook ops
    assert {n.name for n in prog.graph.nodes} <= {"Reshape", "Linear", "ReLU"}
    w = prog.state["fc1.weight"].numpy()
    assert (w == 0).mean() > 0.9 and len(np.unique(w[w != 0])) <= 64
    out = _run("export", "--compressed", str(tmp_path / "m.pnz"), "-o", str(tmp_path / "m.onnx"),
               "--dynamic-batch")
    assert out.returncode == 0, out.stderr
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    out = _run("export", "--checkpoint", "a.safetensors", "--compressed", "b.pnz", "-o", "m.onnx")
    assert out.returncode == 2 and "not allowed with" in out.stderr


def test_eval_compressed_help_and_exclusive_sources(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--help"])
    assert e.value.code == 0 and "--compressed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--checkpoint", "a.safetensors", "--compressed", "b.pnz"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not allowed with argument" in err
    # a corrupted .pnz, or a checkpoint given as --compressed: one line, exit 1, before any data
    path = tmp_path / "m.pnz"
    _small_pnz(path)
    path.write_bytes(path.read_bytes()[:-10])
    assert cli.main(["eval", "--compressed", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prunus: error:") and err.count("\n") == 1 and "truncated" in err
    assert cli.main(["eval", "--compressed", str(tmp_path / "missing.pnz")]) == 1
    assert capsys.readouterr().err.startswith("prunus: error:")


def test_eval_compressed_on_mnist_matches_the_saved_model(tmp_path, capsys, monkeypatch):
    from prunus.data import DataLoader
    from prunus.data.datasets import MNIST
    from prunus.train import Trainer

    monkeypatch.setenv("PRUNUS_DATA", str(_data_dir()))
    path = tmp_path / "lenet300.pnz"
    model = _small_pnz(path)
    assert cli.main(["eval", "--compressed", str(path), "--batch-size", "2000"]) == 0
    line = capsys.readouterr().out.strip()
    size = path.stat().st_size
    assert line.startswith(f"lenet_300_100 [compressed, {size:,} bytes] on mnist test (10000 images)")
    # the file's model computes bit-identical outputs, so the accuracy is the saved model's
    m = Trainer(model, None, topk=(1, 5)).evaluate(DataLoader(MNIST(train=False), batch_size=2000))
    assert f"top-1 accuracy {100 * m['acc']:.2f}%" in line and f"loss {m['loss']:.4f}" in line
