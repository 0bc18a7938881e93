"""Structured pruning of a trained LeNet-5: remove half of each convolution's filters (by L1 norm),
then retrain briefly, printing the test error at each stage. The pruned model is really smaller
and faster (benchmarks/bench_structured.py); this shows what it costs in accuracy.

    prunus train --model lenet5 --dataset mnist --checkpoint-dir ckpt/l5 --no-val
    python examples/structured_pruning.py --checkpoint ckpt/l5/checkpoint-step00018760.safetensors
    python examples/structured_pruning.py --checkpoint ... --epochs 1 --steps 50 --test-size 1000  # CI
"""

from __future__ import annotations

import argparse

import prunus
from prunus import cli, optim
from prunus.compression import count_macs, prune_channels
from prunus.compression.sensitivity import evaluate_accuracy
from prunus.data import DataLoader, Subset
from prunus.data.datasets import MNIST
from prunus.train import fit


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a LeNet-5 checkpoint from 'prunus train'")
    p.add_argument("--amount", type=float, default=0.5, help="fraction of filters to remove (0.5)")
    p.add_argument("--epochs", type=int, default=3, help="retraining epochs (default 3)")
    p.add_argument("--steps", type=int, default=None, help="stop each retraining epoch early")
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    prunus.manual_seed(args.seed)
    model, _ = cli._checkpoint_model(args.checkpoint)
    test = MNIST(train=False)
    if args.test_size:
        test = Subset(test, range(args.test_size))
    test_loader = DataLoader(test, batch_size=1000)
    train_loader = DataLoader(MNIST(train=True), batch_size=64, shuffle=True,
                              generator=prunus.Generator().manual_seed(args.seed + 1))

    def error():
        return 1.0 - evaluate_accuracy(model, test_loader)

    def macs():
        return sum(count_macs(model, (1, 1, 28, 28)).values())

    errors = {"baseline": error()}
    before = (sum(q.numel() for q in model.parameters()), macs())
    prune_channels(model, args.amount, example_input=(1, 1, 28, 28))
    after = (sum(q.numel() for q in model.parameters()), macs())
    errors["pruned"] = error()
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    for epoch in range(1, args.epochs + 1):
        fit(model, opt, train_loader, epochs=1, max_steps=args.steps, progress=False)
        errors[f"retrained {epoch}"] = error()

    print(f"parameters {before[0]:,} -> {after[0]:,}, MACs per image {before[1]:,} -> {after[1]:,}")
    for stage, e in errors.items():
        print(f"{stage:<12} test error {100 * e:.2f}%")
    return errors


if __name__ == "__main__":
    main()
