"""Compressed inference: time to load a Deep Compression .pnz file vs the dense checkpoint it came
from, and to evaluate each on the MNIST test set, side by side in one run (medians over
interleaved rounds, bench_core.measure).

    python benchmarks/bench_compression.py --pnz lenet300.pnz --checkpoint ckpt/s0/checkpoint-step00018760.safetensors
    python benchmarks/bench_compression.py --quick ...      # a few seconds, for smoke tests

The .pnz comes from `prunus compress`; loading it decodes the Huffman streams and relative indices
and rebuilds the quantized layers. Evaluation runs the model as loaded (the quantized model's
weights are codebook[indices] * mask, materialized on each forward) and, for comparison, the same
weights as a plain dense model (the parametrizations removed: what an inference deployment does
after loading). All three must agree on the test accuracy before timing.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_core as core  # (imports neither NumPy nor PyTorch at top level)


def parse_args(argv=None):
    p = core.common_parser("compression", "case", quick_rounds=2, round_time=0.3)
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--pnz", required=True, help="a .pnz file written by 'prunus compress'")
    p.add_argument("--checkpoint", required=True, help="the dense checkpoint it was compressed from")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images")
    return core.finish_args(p, p.parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    core.set_thread_env(args.threads)
    core.import_frameworks(args.threads)
    P = core.P
    from prunus import cli, compression
    from prunus.compression.sensitivity import evaluate_accuracy
    from prunus.data import DataLoader, Subset
    from prunus.data.datasets import MNIST
    from prunus.nn.utils import parametrize

    test_set = MNIST(train=False)
    if args.test_size:
        test_set = Subset(test_set, range(args.test_size))
    loader = DataLoader(test_set, batch_size=1000)

    def load_pnz():
        return compression.load(args.pnz)[0].eval()

    def load_dense():
        return cli._checkpoint_model(args.checkpoint)[0].eval()

    def dense_copy(m):
        return parametrize.remove_all_parametrizations(m)

    pnz, dense, flat = load_pnz(), load_dense(), dense_copy(load_pnz())
    with P.no_grad():
        accs = {k: evaluate_accuracy(m, loader) for k, m in
                (("pnz", pnz), ("pnz_dense", flat), ("checkpoint", dense))}
    if accs["pnz"] != accs["pnz_dense"]:
        raise SystemExit(f"error: the .pnz model and its dense copy disagree: {accs}")

    def runner(fn):
        def run(n):
            for _ in range(n):
                fn()
        return run

    def evaluate(m):
        def fn():
            with P.no_grad():
                evaluate_accuracy(m, loader)
        return fn

    loads, _ = core.measure({"pnz": runner(load_pnz), "checkpoint": runner(load_dense)},
                            args.rounds, args.round_time, args.gap)
    evals, _ = core.measure({"pnz (quantized layers)": runner(evaluate(pnz)),
                             "pnz (dense after load)": runner(evaluate(flat)),
                             "checkpoint": runner(evaluate(dense))},
                            args.rounds, args.round_time, args.gap)
    size = {"pnz": os.path.getsize(args.pnz), "checkpoint": os.path.getsize(args.checkpoint)}
    print(f"compressed inference  threads={args.threads}  rounds={args.rounds}  test images="
          f"{len(test_set)}  (medians [min-max] over rounds)")
    print(f"file sizes: .pnz {size['pnz']:,} B, checkpoint {size['checkpoint']:,} B "
          f"(the checkpoint also holds optimizer state); test accuracy: "
          + ", ".join(f"{k} {100 * v:.2f}%" for k, v in accs.items()))
    for title, res in (("load", loads), ("evaluate the test set", evals)):
        print(f"{title}:")
        for name, r in res.items():
            print(f"  {name:<24} {r['median_us'] / 1e3:>9.2f} ms  [{r['min_us'] / 1e3:.2f}-{r['max_us'] / 1e3:.2f}]")
    import datetime

    core.save_results(args, "compression", datetime.datetime.now().astimezone(),
                      {"schema": "prunus-bench-compression/1", "sizes": size, "accuracy": accs,
                       "load": loads, "evaluate": evals, "machine": core.machine_info(args.threads)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
