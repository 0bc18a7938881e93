"""prunus.train: the fit/evaluate loops, metrics, callbacks (checkpoints, early stopping, LR
schedules) and the progress bar, on a small MLP and synthetic data."""

from __future__ import annotations

import io

import numpy as np
import pytest

import prunus
from prunus import errors as E
from prunus import nn, optim
from prunus.data import DataLoader, TensorDataset
from prunus.train import (
    Callback,
    EarlyStopping,
    Metrics,
    ModelCheckpoint,
    ProgressBar,
    Trainer,
    accuracy,
    fit,
    list_checkpoints,
)
from prunus.train.recipes import CAFFE_LENET, RECIPES, InvLR, make_scheduler, recipe


def _problem(n=512, seed=0):
    g = prunus.Generator().manual_seed(seed)
    x = prunus.randn(n, 10, generator=g)
    y = (x[:, 0] - x[:, 2] > 0).long()
    return TensorDataset(x, y)


def _model(seed=0, dropout=0.0):
    prunus.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 2))


def _loader(ds, bs=32, shuffle=True):
    return DataLoader(ds, batch_size=bs, shuffle=shuffle, generator=prunus.Generator().manual_seed(1))


def test_accuracy_topk():
    out = prunus.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    y = prunus.tensor([2, 0, 1, 0])
    top1, top2, top3 = accuracy(out, y, topk=(1, 2, 3))
    assert (top1, top2, top3) == (0.25, 0.75, 1.0)
    assert accuracy(out, y, topk=(5,)) == [1.0]  # k > classes: everything is in the top k
    with pytest.raises(E.ShapeError):
        accuracy(out, prunus.tensor([0, 1]))
    with pytest.raises(E.ArgumentError):
        accuracy(out, y, topk=(0,))


def test_metrics_weight_by_batch_size():
    m = Metrics(topk=(1,))
    m.update(1.0, prunus.tensor([[1.0, 0.0]] * 3), prunus.tensor([0, 0, 1]))
    m.update(4.0, prunus.tensor([[0.0, 1.0]]), prunus.tensor([1]))
    r = m.compute()
    assert r["loss"] == pytest.approx((3 * 1.0 + 4.0) / 4) and r["acc"] == pytest.approx(3 / 4)


def test_fit_learns_and_reports_metrics():
    ds = _problem()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = fit(model, opt, _loader(ds), _loader(ds, 256, False), epochs=4, progress=False)
    h = trainer.history
    assert [e["epoch"] for e in h] == [1, 2, 3, 4] and h[-1]["step"] == 4 * 16
    assert h[-1]["val_acc"] > 0.95 and h[-1]["loss"] < h[0]["loss"]
    assert set(h[-1]) >= {"loss", "acc", "val_loss", "val_acc", "time"}
    assert model.training  # fit leaves the model in train mode; evaluate restored it


def test_evaluate_uses_eval_mode_and_no_grad():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((self.training, prunus.is_grad_enabled()))
            return x

    model = nn.Sequential(nn.Linear(10, 2), Probe())
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1))
    model.train()
    trainer.evaluate(_loader(_problem(64), 32, False))
    assert seen == [(False, False)] * 2 and model.training
    seen.clear()
    trainer.fit(_loader(_problem(64)), epochs=1)
    assert seen == [(True, True)] * 2


def test_max_steps_and_callback_hooks_order():
    calls = []

    class Rec(Callback):
        def on_fit_start(self, t): calls.append("fit_start")
        def on_epoch_start(self, t): calls.append(f"epoch_start{t.epoch}")
        def on_batch_end(self, t, logs): calls.append(logs["step"])
        def on_epoch_end(self, t, logs): calls.append(f"epoch_end{logs['epoch']}")
        def on_fit_end(self, t): calls.append("fit_end")

    model = _model()
    t = Trainer(model, optim.SGD(model.parameters(), lr=0.1), callbacks=[Rec()])
    t.fit(_loader(_problem(96)), epochs=5, max_steps=4)  # 3 batches an epoch
    assert calls == ["fit_start", "epoch_start0", 1, 2, 3, "epoch_end1", "epoch_start1", 4, "fit_end"]
    assert (t.step, t.epoch, t.batch_in_epoch) == (4, 1, 1)


def test_lr_schedules_per_step_and_per_epoch():
    model = _model()
    opt = optim.SGD(model.parameters(), lr=1.0)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    Trainer(model, opt, scheduler=sched, scheduler_interval="step").fit(_loader(_problem(96)), epochs=1)
    assert opt.param_groups[0]["lr"] == 0.125  # 3 steps
    model = _model()
    opt = optim.SGD(model.parameters(), lr=1.0)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    Trainer(model, opt, scheduler=sched).fit(_loader(_problem(96)), epochs=2)
    assert opt.param_groups[0]["lr"] == 0.25  # 2 epochs


def test_inv_policy_matches_caffe():
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.01)
    sched, interval = make_scheduler("inv", opt, gamma=1e-4, power=0.75)
    assert interval == "step" and isinstance(sched, InvLR)
    for _ in range(1000):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * (1 + 1e-4 * 1000) ** -0.75, rel=1e-12)
    c = CAFFE_LENET  # the published solver stays available for comparison
    assert (c["lr"], c["momentum"], c["weight_decay"], c["batch_size"], c["lr_policy"]) == (
        0.01, 0.9, 5e-4, 64, "inv")
    # the shipped recipes: the measured ones of docs/training.md
    assert recipe("lenet_300_100")["lr"] == 0.1 and recipe("lenet5")["lr"] == 0.03
    for name in ("lenet_300_100", "lenet5"):
        r = recipe(name)
        assert (r["momentum"], r["batch_size"], r["epochs"], tuple(r["lr_milestones"])) == (
            0.9, 64, 20, (10, 15))
    assert set(RECIPES) <= set(__import__("prunus.models", fromlist=["MODELS"]).MODELS)


def test_early_stopping():
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.0)  # nothing improves
    stop = EarlyStopping(monitor="val_loss", patience=2)
    t = Trainer(model, opt, callbacks=[stop])
    t.fit(_loader(_problem(64)), _loader(_problem(64), 64, False), epochs=20)
    assert len(t.history) == 4 and stop.stopped_epoch == 4  # best at 1, then 3 epochs without
    with pytest.raises(E.ArgumentError, match="val_acc"):
        Trainer(model, opt, callbacks=[EarlyStopping("val_acc")]).fit(_loader(_problem(64)), epochs=1)


def test_model_checkpoint_keeps_last_k(tmp_path):
    model = _model()
    ck = ModelCheckpoint(tmp_path, every_n_steps=5, every_n_epochs=1, keep_last=2)
    t = Trainer(model, optim.SGD(model.parameters(), lr=0.1), callbacks=[ck])
    t.fit(_loader(_problem(256)), epochs=2, max_steps=13)  # 8 batches an epoch
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["checkpoint-step00000010.safetensors", "checkpoint-step00000013.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    saved = prunus.load(tmp_path / names[-1])
    assert saved["trainer"]["step"] == 13 and saved["trainer"]["batch_in_epoch"] == 5
    with pytest.raises(E.ArgumentError):
        ModelCheckpoint(tmp_path, keep_last=0)


def test_bad_batches_and_callbacks_are_clear_errors():
    model = _model()
    t = Trainer(model, optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(E.ArgumentError, match=r"\(inputs, targets\)"):
        t.fit([prunus.randn(4, 10)], epochs=1)
    with pytest.raises(E.ArgumentError, match="Callback"):
        Trainer(model, optim.SGD(model.parameters(), lr=0.1), callbacks=[object()])
    with pytest.raises(E.ArgumentError):
        t.fit(_loader(_problem(64)), epochs=-1)


def test_progress_bar_modes():
    ds = _problem(128)
    quiet = io.StringIO()
    model = _model()
    fit(model, optim.SGD(model.parameters(), lr=0.1), _loader(ds), _loader(ds, 128, False),
        epochs=2, callbacks=[ProgressBar(quiet=True, file=quiet)])
    assert quiet.getvalue() == ""

    lines = io.StringIO()  # not a terminal: one line per epoch
    model = _model()
    fit(model, optim.SGD(model.parameters(), lr=0.1), _loader(ds), _loader(ds, 128, False),
        epochs=2, max_steps=6, callbacks=[ProgressBar(file=lines)])
    out = lines.getvalue().splitlines()
    assert len(out) == 2 and out[0].startswith("epoch 1/2  step 4  loss ")
    for word in ("acc ", "val_loss", "val_acc", "samples/s"):
        assert word in out[0]
    assert out[1].startswith("stopped at step 6") and "samples/s" in out[1]

    bar = io.StringIO()  # a tqdm bar forced onto a non-terminal
    model = _model()
    fit(model, optim.SGD(model.parameters(), lr=0.1), _loader(ds), epochs=1,
        callbacks=[ProgressBar(file=bar, bar=True)])
    text = bar.getvalue()
    assert "epoch 1/1" in text and "loss=" in text and "acc=" in text and "samples/s=" in text


def test_trainer_moves_batches_and_checkpoints_float32_exactly(tmp_path):
    model = _model()
    t = Trainer(model, optim.SGD(model.parameters(), lr=0.1), device="cpu")
    t.fit(_loader(_problem(64)), epochs=1)
    t.save_checkpoint(tmp_path / "c.safetensors")
    model2 = _model(seed=3)
    t2 = Trainer(model2, optim.SGD(model2.parameters(), lr=0.1))
    t2.load_checkpoint(tmp_path / "c.safetensors")
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), k
