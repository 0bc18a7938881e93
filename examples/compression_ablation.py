"""Centroid initialization ablation (Han et al. 2016, Section 3.2 / Figure 4): linear vs density vs
random k-means initialization at 2, 3 and 4 bits on a pruned LeNet-300-100, test error before and
after fine-tuning the centroids.

    export PRUNUS_DATA=../shared/datasets OPENBLAS_NUM_THREADS=1 PRUNUS_NUM_THREADS=1
    prunus train --model lenet_300_100 --dataset mnist --checkpoint-dir ckpt/s0 --seed 0 --no-val
    python examples/compression_ablation.py --checkpoint ckpt/s0/checkpoint-step00018760.safetensors

CI runs it with --limit-steps and a small --test-size to check it works end to end.
"""

from __future__ import annotations

import argparse
import copy
import time

import prunus
from prunus import cli
from prunus.compression import pipeline, weight_sharing
from prunus.compression.sensitivity import evaluate_accuracy
from prunus.data import DataLoader, Subset
from prunus.data.datasets import MNIST


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a LeNet-300-100 checkpoint from 'prunus train'")
    p.add_argument("--bits", default="2,3,4", help="codebook sizes to try, as bits (default 2,3,4)")
    p.add_argument("--inits", default="linear,density,random", help="k-means initializations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-steps", type=int, default=None, help="cap every training stage (smoke runs)")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images")
    args = p.parse_args(argv)

    prunus.manual_seed(args.seed)
    model, _ = cli._checkpoint_model(args.checkpoint)
    recipe = pipeline.get_recipe("lenet_300_100")
    train = DataLoader(MNIST(train=True), batch_size=recipe.batch_size, shuffle=True,
                       generator=prunus.Generator().manual_seed(args.seed + 1))
    test_set = MNIST(train=False)
    if args.test_size:
        test_set = Subset(test_set, range(args.test_size))
    test = DataLoader(test_set, batch_size=1000)

    t0 = time.perf_counter()
    pipeline.prune_and_retrain(model, recipe, train, max_steps=args.limit_steps, quiet=True)
    print(f"pruned + retrained: error {100 * (1 - evaluate_accuracy(model, test)):.2f}% "
          f"({time.perf_counter() - t0:.0f} s)")
    print(f"{'init':<8} {'bits':>4} {'error quantized':>16} {'error fine-tuned':>17}")
    for bits in [int(b) for b in args.bits.split(",")]:
        for init in args.inits.split(","):
            m = copy.deepcopy(model)
            weight_sharing.quantize_model(m, bits=bits, init=init,
                                          generator=prunus.Generator().manual_seed(args.seed))
            before = 1 - evaluate_accuracy(m, test)
            pipeline.finetune_centroids(m, train, epochs=recipe.finetune_epochs, lr=recipe.finetune_lr,
                                        max_steps=args.limit_steps, quiet=True)
            after = 1 - evaluate_accuracy(m, test)
            print(f"{init:<8} {bits:>4} {100 * before:>15.2f}% {100 * after:>16.2f}%", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
