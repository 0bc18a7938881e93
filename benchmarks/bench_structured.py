"""Structured pruning benchmark: LeNet-5 with half of its convolution filters removed
(prunus.compression.prune_channels, by L1 norm) against the same LeNet-5 unpruned, side by side
in one run: parameters, multiply-accumulates, and the time of an inference batch and of a training
step (medians over interleaved rounds, bench_core.measure).

    python benchmarks/bench_structured.py --threads 1
    python benchmarks/bench_structured.py --amount 0.25 --threads 2
    python benchmarks/bench_structured.py --quick           # a few seconds, for smoke tests

Weights are the random initial ones (the speed does not depend on them); before timing, the
pruned model must compute what the unpruned one computes with the removed filters zeroed
(structured.py's contract), to float32 tolerance.
"""

from __future__ import annotations

import datetime
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_core as core  # (imports neither NumPy nor PyTorch at top level)

INFER_BATCH, TRAIN_BATCH = 256, 128


def parse_args(argv=None):
    p = core.common_parser("structured", "case", quick_rounds=2, round_time=0.3)
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--amount", type=float, default=0.5,
                   help="fraction of each convolution's filters to remove (default 0.5)")
    return core.finish_args(p, p.parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    core.set_thread_env(args.threads)
    core.import_frameworks(args.threads)
    np, P = core.np, core.P
    import prunus.nn.functional as F
    from prunus import models, optim
    from prunus.compression import count_macs, prune_channels

    machine = core.machine_info(args.threads)
    core.check_threads(machine, args.threads)
    started = datetime.datetime.now().astimezone()
    rng = np.random.default_rng(0)
    x_inf = P.tensor(rng.standard_normal((INFER_BATCH, 1, 28, 28)).astype(np.float32))
    x_tr = P.tensor(rng.standard_normal((TRAIN_BATCH, 1, 28, 28)).astype(np.float32))
    y_tr = P.tensor(rng.integers(0, 10, TRAIN_BATCH))

    P.manual_seed(0)
    dense = models.lenet5()
    pruned = models.lenet5()
    pruned.load_state_dict(dense.state_dict())
    removed = prune_channels(pruned, args.amount, example_input=(1, 1, 28, 28))

    # the contract: the unpruned model with the removed filters zeroed computes the same
    zeroed = models.lenet5()
    zeroed.load_state_dict(dense.state_dict())
    with P.no_grad():
        for r in removed:
            conv = dict(zeroed.named_modules())[r.layer]
            conv.weight[r.removed] = 0.0
            if conv.bias is not None:
                conv.bias[r.removed] = 0.0
        a, b = zeroed.eval()(x_inf).numpy(), pruned.eval()(x_inf).numpy()
    if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise SystemExit(f"error: the pruned model differs from the zeroed one by {np.abs(a - b).max():.3g}")

    info = {}
    for name, m in (("dense", dense), ("pruned", pruned)):
        macs = count_macs(m, (1, 1, 28, 28))
        info[name] = {"params": sum(p.numel() for p in m.parameters()), "macs_per_image": sum(macs.values()),
                      "layers": {k: list(v.shape) for k, v in m.state_dict().items() if k.endswith("weight")}}

    def infer(m):
        m.eval()

        def run(n):
            with P.no_grad():
                for _ in range(n):
                    m(x_inf)
        return run

    def train(m):
        opt = optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

        def run(n):
            m.train()
            for _ in range(n):
                opt.zero_grad()
                F.cross_entropy(m(x_tr), y_tr).backward()
                opt.step()
        return run

    results = {}
    for case, make, batch in (("infer", infer, INFER_BATCH), ("train", train, TRAIN_BATCH)):
        P.set_num_threads(args.threads)
        core.wait_quiet(args.wait_quiet)
        res, _ = core.measure({"dense": make(dense), "pruned": make(pruned)}, args.rounds,
                              args.round_time, args.gap)
        results[case] = {"batch": batch, "contenders": res,
                         "speedup": res["dense"]["median_us"] / res["pruned"]["median_us"]}

    print(f"structured pruning, LeNet-5, {args.amount:g} of each convolution's filters removed  "
          f"threads={args.threads}  rounds={args.rounds}  (medians [min-max] over rounds)")
    for name, i in info.items():
        print(f"  {name:<7} {i['params']:>9,} parameters  {i['macs_per_image']:>11,} MACs/image  "
              f"conv1 {i['layers']['conv1.weight']}  conv2 {i['layers']['conv2.weight']}")
    for case, r in results.items():
        what = "inference" if case == "infer" else "training step"
        print(f"{what}, batch {r['batch']}: " + "  ".join(
            f"{who} {m['median_us'] / 1e3:.2f} ms [{m['min_us'] / 1e3:.2f}-{m['max_us'] / 1e3:.2f}]"
            for who, m in r["contenders"].items()) + f"  speedup {r['speedup']:.2f}x")
    core.save_results(args, "structured", started,
                      {"schema": "prunus-bench-structured/1", "date": started.isoformat(timespec="seconds"),
                       "amount": args.amount, "models": info, "results": results, "machine": machine})
    return 0


if __name__ == "__main__":
    sys.exit(main())
