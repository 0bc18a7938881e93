"""Transfer learning: LeNet-5 trained on MNIST digits 0-4 gives its convolutional features to a
classifier of digits 5-9 that has only a few labelled images, against the same classifier trained
from scratch on them.

The steps are PyTorch's: save the source model's state dict, build the target model with a new
head (5 classes again, here other digits), load every tensor but the head's, freeze the
convolutions (requires_grad_(False)), and train what is left on the small target set.

    python examples/transfer_learning.py                       # about 12 s on one core
    python examples/transfer_learning.py --source-steps 100 --target-epochs 3   # a smoke run (CI)
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import prunus
from prunus import models, optim
from prunus.data import DataLoader, Subset
from prunus.data.datasets import MNIST
from prunus.train import Trainer, fit


def digits(dataset, wanted, limit=None, seed=0):
    """The samples of `dataset` whose label is in `wanted` (the first `limit` per digit, in a
    shuffled order)."""
    labels = dataset.targets.numpy()
    order = np.random.default_rng(seed).permutation(len(labels))
    picked = []
    for d in wanted:
        idx = order[labels[order] == d]
        picked += list(idx[:limit] if limit else idx)
    return Subset(dataset, sorted(picked))


def train(model, data, epochs, lr, seed, max_steps=None):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(data, batch_size=64, shuffle=True, generator=prunus.Generator().manual_seed(seed))
    fit(model, opt, loader, epochs=epochs, max_steps=max_steps, progress=False)
    return opt


def accuracy(model, data):
    return Trainer(model, None).evaluate(DataLoader(data, batch_size=1000))["acc"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source-epochs", type=int, default=1, help="epochs on digits 0-4 (default 1)")
    p.add_argument("--source-steps", type=int, default=None, help="stop the source training early")
    p.add_argument("--per-digit", type=int, default=10, help="labelled target images per digit (default 10)")
    p.add_argument("--target-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--download", action="store_true")
    args = p.parse_args(argv)

    prunus.manual_seed(args.seed)
    # target labels 5..9 become classes 0..4 of the new head
    def shift(y):
        return y - 5

    dl = args.download
    source = digits(MNIST(train=True, download=dl), range(5))
    target = digits(MNIST(train=True, target_transform=shift, download=dl), range(5, 10),
                    args.per_digit, args.seed)
    target_test = digits(MNIST(train=False, target_transform=shift, download=dl), range(5, 10))

    # 1. the source model, saved as a file (as a model from elsewhere would come)
    src = models.lenet5(num_classes=5)
    train(src, source, args.source_epochs, 0.03, args.seed, args.source_steps)
    path = os.path.join(tempfile.mkdtemp(prefix="prunus-transfer-"), "lenet5-digits04.safetensors")
    prunus.save(src.state_dict(), path)

    # 2. the target model: everything but the head from the file, the convolutions frozen
    prunus.manual_seed(args.seed + 1)
    tl = models.lenet5(num_classes=5)
    state = {k: v for k, v in prunus.load(path).items() if not k.startswith("fc2.")}
    tl.load_state_dict(state, strict=False)
    for layer in (tl.conv1, tl.conv2):
        layer.requires_grad_(False)
    train(tl, target, args.target_epochs, 0.01, args.seed)

    # 3. the same architecture from scratch on the same few images
    prunus.manual_seed(args.seed + 1)
    scratch = models.lenet5(num_classes=5)
    train(scratch, target, args.target_epochs, 0.01, args.seed)

    result = {"source 0-4": accuracy(src, digits(MNIST(train=False, download=dl), range(5))),
              "transfer 5-9": accuracy(tl, target_test), "scratch 5-9": accuracy(scratch, target_test)}
    n = len(target)
    print(f"source model, digits 0-4 test accuracy:        {result['source 0-4']:.4f}")
    print(f"digits 5-9 from {n} labelled images, transferred: {result['transfer 5-9']:.4f}")
    print(f"digits 5-9 from {n} labelled images, scratch:     {result['scratch 5-9']:.4f}")
    return result


if __name__ == "__main__":
    main()
