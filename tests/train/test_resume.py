"""Bit-exact resume: 200 steps straight vs. stop at step 57, checkpoint, resume into fresh objects.

The setups use dropout (default generator), shuffling (its own generator, or the default one),
SGD with momentum and weight decay and a per-step or per-epoch LR schedule, with 32 batches an
epoch (the last one short), so step 57 is in the middle of the second epoch.
"""

from __future__ import annotations

import numpy as np
import pytest

import prunus
from prunus import nn, optim
from prunus.data import DataLoader, TensorDataset
from prunus.train import EarlyStopping, ModelCheckpoint, Trainer, latest_checkpoint

STEPS, STOP = 200, 57


def _data():
    g = prunus.Generator().manual_seed(123)
    x = prunus.randn(1000, 20, generator=g)
    y = ((x[:, 0] + x[:, 1]) > 0).long()
    return TensorDataset(x, y)


def _setup(own_generator: bool, interval: str, init_seed: int):
    """Fresh model/optimizer/scheduler/loader, as a new process would build them."""
    prunus.manual_seed(init_seed)  # a resumed run's fresh weights differ: restore must replace them
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = optim.lr_scheduler.StepLR(opt, step_size=40 if interval == "step" else 2, gamma=0.7)
    gen = prunus.Generator().manual_seed(7) if own_generator else None
    loader = DataLoader(_data(), batch_size=32, shuffle=True, generator=gen)
    return model, opt, sched, loader


def _weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("own_generator", "interval"), [(True, "step"), (False, "epoch")])
def test_resume_is_bitwise_identical(tmp_path, own_generator, interval):
    model, opt, sched, loader = _setup(own_generator, interval, init_seed=0)
    straight = Trainer(model, opt, scheduler=sched, scheduler_interval=interval)
    straight.fit(loader, epochs=100, max_steps=STEPS)
    assert straight.step == STEPS
    expected = _weights(model)

    model, opt, sched, loader = _setup(own_generator, interval, init_seed=0)
    ckpt = ModelCheckpoint(tmp_path, every_n_steps=19, every_n_epochs=None, keep_last=2,
                           save_on_fit_end=False)
    first = Trainer(model, opt, scheduler=sched, scheduler_interval=interval, callbacks=[ckpt])
    first.fit(loader, epochs=100, max_steps=STOP)
    path = latest_checkpoint(tmp_path)
    assert path is not None and path.name == f"checkpoint-step{STOP:08d}.safetensors"
    assert len(list(tmp_path.iterdir())) == 2  # keep_last=2: steps 38 and 57
    assert (first.epoch, first.batch_in_epoch) == (1, STOP - 32)

    prunus.manual_seed(999)  # whatever the new process's RNG holds is overwritten
    model, opt, sched, loader = _setup(own_generator, interval, init_seed=1)
    resumed = Trainer(model, opt, scheduler=sched, scheduler_interval=interval)
    resumed.load_checkpoint(path)
    assert (resumed.step, resumed.epoch, resumed.batch_in_epoch) == (STOP, 1, STOP - 32)
    resumed.fit(loader, epochs=100, max_steps=STEPS)
    got = _weights(model)
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k].dtype == np.float32
        assert np.array_equal(got[k], expected[k]), k
    assert opt.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    # epochs finished after the resume (incl. the one cut by it) have the straight run's metrics
    def drop_time(h):
        return [{k: v for k, v in e.items() if k != "time"} for e in h]

    assert drop_time(resumed.history) == drop_time(straight.history)


def test_resume_at_an_epoch_boundary_with_validation_and_early_stopping(tmp_path):
    def build(seed):
        model, opt, sched, loader = _setup(True, "epoch", init_seed=seed)
        stop = EarlyStopping(monitor="val_acc", patience=50)
        return model, Trainer(model, opt, scheduler=sched, callbacks=[stop]), loader, stop

    model, straight, loader, _ = build(0)
    straight.fit(loader, loader, epochs=4)
    expected = _weights(model)

    model, first, loader, _ = build(0)
    first.fit(loader, loader, epochs=2)  # ends exactly at the end of epoch 2
    first.save_checkpoint(tmp_path / "c.safetensors")
    model, resumed, loader, stop = build(5)
    resumed.load_checkpoint(tmp_path / "c.safetensors")
    assert (resumed.epoch, resumed.batch_in_epoch) == (2, 0)
    assert stop.best == max(h["val_acc"] for h in first.history)  # callback state came back
    resumed.fit(loader, loader, epochs=4)
    for k, v in _weights(model).items():
        assert np.array_equal(v, expected[k]), k
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]


def test_checkpoint_of_a_plain_iterable_loader_replays_its_batches(tmp_path):
    """Loaders that are not DataLoaders (here a list of batches) resume by skipping batches."""
    ds = _data()
    batches = [(ds.tensors[0][i:i + 50], ds.tensors[1][i:i + 50]) for i in range(0, 1000, 50)]

    def build():
        prunus.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 2))
        return model, Trainer(model, optim.SGD(model.parameters(), lr=0.1))

    model, straight = build()
    straight.fit(batches, epochs=2)
    _, first = build()
    first.fit(batches, epochs=2, max_steps=13)
    first.save_checkpoint(tmp_path / "c.safetensors")
    model3, resumed = build()
    resumed.load_checkpoint(tmp_path / "c.safetensors")
    resumed.fit(batches, epochs=2)
    for k, v in _weights(model3).items():
        assert np.array_equal(v, _weights(model)[k]), k
