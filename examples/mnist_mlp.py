"""Train a 784-300-100-10 MLP (LeNet-300-100) on MNIST with prunus.train.fit and print its test
accuracy. MNIST is read from $PRUNUS_DATA/mnist (or ~/.cache/prunus/mnist; --download fetches it).

    python examples/mnist_mlp.py                  # 2 epochs, about 98% test accuracy
    python examples/mnist_mlp.py --steps 300      # a quick smoke run (CI), about 90%
"""

from __future__ import annotations

import argparse

import prunus
from prunus import nn, optim
from prunus.data import DataLoader
from prunus.data.datasets import MNIST
from prunus.train import Trainer, fit


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--download", action="store_true")
    args = parser.parse_args(argv)

    prunus.manual_seed(args.seed)
    train_set = MNIST(train=True, download=args.download)
    test_set = MNIST(train=False, download=args.download)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                        generator=prunus.Generator().manual_seed(args.seed))
    fit(model, opt, loader, epochs=args.epochs, max_steps=args.steps)

    metrics = Trainer(model, opt).evaluate(DataLoader(test_set, batch_size=1000))
    print(f"test accuracy: {metrics['acc']:.4f}")
    return metrics["acc"]


if __name__ == "__main__":
    main()
