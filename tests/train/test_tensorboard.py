"""TensorBoardLogger writes event files that TensorBoard's own reader (EventAccumulator) loads,
with the expected scalar and histogram tags; without tensorboardX it fails with one clear error."""

from __future__ import annotations

import builtins

import pytest

import prunus
from prunus import errors as E
from prunus import nn, optim
from prunus.data import DataLoader, TensorDataset
from prunus.train import Trainer


def _fit(logdir):
    from prunus.train import TensorBoardLogger

    g = prunus.Generator().manual_seed(0)
    x = prunus.randn(128, 10, generator=g)
    y = (x[:, 0] > 0).long()
    ds = TensorDataset(x, y)
    prunus.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))
    t = Trainer(model, optim.SGD(model.parameters(), lr=0.1),
                callbacks=[TensorBoardLogger(logdir, log_every_n_steps=2)])
    t.fit(DataLoader(ds, batch_size=32), DataLoader(ds, batch_size=64), epochs=2)
    return t


def test_event_file_is_readable_by_tensorboard(tmp_path):
    pytest.importorskip("tensorboardX")
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    _fit(tmp_path)
    acc = ea_mod.EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/acc", "train/lr", "epoch/loss", "epoch/acc", "epoch/val_loss",
            "epoch/val_acc"} <= set(tags["scalars"])
    hist = set(tags["histograms"])
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert f"weights/{name}" in hist and f"grads/{name}" in hist
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4, 6, 8] and all(e.value > 0 for e in loss)
    assert [e.step for e in acc.Scalars("epoch/val_acc")] == [4, 8]
    h = acc.Histograms("weights/0.weight")
    assert h[-1].step == 8 and h[-1].histogram_value.num == 80


def test_missing_tensorboardx_is_one_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "tensorboardX" or name.startswith("tensorboardX."):
            raise ImportError("No module named 'tensorboardX'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from prunus.train.tensorboard import TensorBoardLogger

    with pytest.raises(E.MissingDependencyError, match=r'pip install "prunus\[tensorboard\]"') as e:
        TensorBoardLogger(tmp_path)
    assert isinstance(e.value, ImportError)
    assert not list(tmp_path.iterdir())
