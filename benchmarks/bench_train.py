"""Training benchmark: samples/s of LeNet-300-100 and LeNet-5 training, prunus vs PyTorch eager.

Each contender runs a full training step on the same in-memory batch (128 random MNIST-shaped
float32 images with random labels; 8 such batches are cycled, in the same order on both sides):
forward, cross-entropy, zero_grad, backward, and an SGD step (momentum 0.9, weight decay 5e-4), or
with --optimizer adam an Adam step (lr 1e-3, weight decay 5e-4; both frameworks' default Adam).
The models are prunus.models.lenet_300_100 / lenet5 and torch.nn twins built here with the prunus
model's weights copied in. Before timing, two steps on each side must give the same losses and
updated weights (allclose, float32 tolerances), so the timings compare equal work.

Contenders run interleaved (prunus torch prunus torch ...) for several rounds after a warm-up, as
in bench_core.py (whose helpers this script imports). We report the median samples/s, the min-max
over rounds, the ratio prunus/torch, and where the prunus step spends its time: every
prunus.autograd.Op.apply and every Op.backward rule is wrapped with a timer for a few hundred
extra steps, and the top ops by self time are listed in µs per step.

    python benchmarks/bench_train.py                 # 2 threads, 7 rounds, ~1 min
    python benchmarks/bench_train.py --threads 1
    python benchmarks/bench_train.py --quick         # a few seconds, for smoke tests
    python benchmarks/bench_train.py --only lenet5
    python benchmarks/bench_train.py --optimizer adam

Thread counts are fixed through environment variables before NumPy or PyTorch is imported (this
module imports neither at top level), plus torch.set_num_threads.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_core as core  # (imports neither NumPy nor PyTorch at top level)

SCHEMA = "prunus-bench-train/1"
BATCH = 128
N_BATCHES = 8  # distinct in-memory batches, cycled
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
ADAM_LR = 1e-3
OPTIMIZER = "sgd"  # or "adam" (--optimizer); bench_graph.py uses the SGD step
MODELS = {
    "lenet_300_100": "LeNet-300-100 train step, b128",
    "lenet5": "LeNet-5 train step, b128",
}

np = torch = P = None  # set by main() once the thread environment is in place


def parse_args(argv=None):
    p = core.common_parser("train", "model", quick_rounds=2, round_time=0.3)
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--breakdown-steps", type=int, default=None, metavar="N",
                   help="prunus steps timed op by op for the breakdown (default: about 1 s worth, "
                        "--quick 3)")
    p.add_argument("--top", type=int, default=10, help="ops listed in the breakdown (default 10)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="the update of each step (default: sgd, momentum 0.9)")
    return core.finish_args(p, p.parse_args(argv))


# -- models, data, steps ---------------------------------------------------------------------


def torch_twin(name):
    """The torch.nn model with the prunus model's architecture (parameter names match)."""
    tnn = torch.nn

    class LeNet300100(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = tnn.Linear(784, 300), tnn.Linear(300, 100)
            self.fc3 = tnn.Linear(100, 10)

        def forward(self, x):
            x = torch.flatten(x, 1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    class LeNet5(tnn.Module):  # Caffe's: no nonlinearity after the convolutions
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = tnn.Conv2d(1, 20, 5), tnn.Conv2d(20, 50, 5)
            self.fc1, self.fc2 = tnn.Linear(800, 500), tnn.Linear(500, 10)

        def forward(self, x):
            x = tnn.functional.max_pool2d(self.conv1(x), 2)
            x = tnn.functional.max_pool2d(self.conv2(x), 2)
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    return {"lenet_300_100": LeNet300100, "lenet5": LeNet5}[name]()


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32) for _ in range(N_BATCHES)]
    ys = [rng.integers(0, 10, BATCH).astype(np.int64) for _ in range(N_BATCHES)]
    return xs, ys


class Trainer:
    """One framework's model, loss, optimizer and batches; `run(n)` does n training steps."""

    def __init__(self, fw, model, xs, ys):
        self.fw, self.model, self.i = fw, model, 0
        if fw == "prunus":
            import prunus.nn
            import prunus.optim

            self.batches = [(P.tensor(x), P.tensor(y)) for x, y in zip(xs, ys)]
            self.loss_fn = prunus.nn.CrossEntropyLoss()
            optim = prunus.optim
        else:
            self.batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in zip(xs, ys)]
            self.loss_fn = torch.nn.CrossEntropyLoss()
            optim = torch.optim
        if OPTIMIZER == "adam":
            self.opt = optim.Adam(model.parameters(), lr=ADAM_LR, weight_decay=WEIGHT_DECAY)
        else:
            self.opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        model.train()

    def step(self):
        x, y = self.batches[self.i]
        self.i = (self.i + 1) % N_BATCHES
        loss = self.loss_fn(self.model(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss

    def run(self, n):
        model, loss_fn, opt, batches = self.model, self.loss_fn, self.opt, self.batches
        i = self.i
        for _ in range(n):
            x, y = batches[i]
            i = (i + 1) % N_BATCHES
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.i = i

    def params(self):
        return [p.detach() for _, p in self.model.named_parameters()]


def build(name):
    import prunus.models

    ours = getattr(prunus.models, name)()  # float32, PyTorch's default init
    theirs = torch_twin(name)
    ours_names = [k for k, _ in ours.named_parameters()]
    theirs_names = [k for k, _ in theirs.named_parameters()]
    if ours_names != theirs_names:
        raise AssertionError(f"{name}: parameter names differ: {ours_names} vs {theirs_names}")
    theirs.load_state_dict({k: torch.from_numpy(p.numpy().copy())
                            for k, p in ours.state_dict().items()})
    xs, ys = make_data()
    return Trainer("prunus", ours, xs, ys), Trainer("torch", theirs, xs, ys)


def _close(what, a, b, rtol, atol):
    a, b = core.to_numpy(a), core.to_numpy(b)
    if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
        err = float(np.abs(a - b).max()) if a.shape == b.shape else float("nan")
        raise AssertionError(f"{what} differs between prunus and torch: max abs diff {err:.3g} "
                             f"(rtol {rtol}, atol {atol:.3g}; shapes {a.shape} {b.shape})")
    return float(np.abs(a - b).max(initial=0.0))


def check_steps(name, tp, tt, steps=2):
    """`steps` training steps on each side: the same losses, gradients and updated weights (the
    second step goes through the momentum buffer). Float32 tolerances: losses rtol 1e-5; weights
    rtol 1e-4, atol 1e-5 (torch.testing's float32 atol); gradients rtol 1e-3, atol 1e-2 x their
    largest magnitude. The gradients need that much: with 2 threads, torch's LeNet-5 conv1 weight
    gradient (73,728 terms that largely cancel) was 2.5e-3 x its largest magnitude away from a
    float64 reference, and prunus's 4e-7 x. With Adam the weights get atol 5e-5 (5% of its lr): an
    Adam step is about lr per weight whatever the gradient's size, so the last bits of a tiny
    gradient (|g| near eps) move the weight by a fraction of lr. Returns the max abs differences."""
    w_atol = 0.05 * ADAM_LR if OPTIMIZER == "adam" else 1e-5
    out = {}
    names = [k for k, _ in tp.model.named_parameters()]
    for s in range(1, steps + 1):
        lp, lt = tp.step(), tt.step()
        d = {"loss": _close(f"{name} step {s}: loss", lp.detach(), lt.detach(), 1e-5, 0.0)}
        grads = [(p.grad, q.grad) for p, q in zip(tp.model.parameters(), tt.model.parameters())]
        weights = zip(tp.params(), tt.params())
        d["grads"] = max(_close(f"{name} step {s}: gradient of {k}", g, h, 1e-3,
                                1e-2 * float(h.abs().max()))
                         for k, (g, h) in zip(names, grads))
        d["weights"] = max(_close(f"{name} step {s}: updated {k}", w, v, 1e-4, w_atol)
                           for k, (w, v) in zip(names, weights))
        out[f"step{s}_max_abs_diff"] = d
        out[f"step{s}_loss"] = {"prunus": float(lp.item()), "torch": float(lt.item())}
    return out


# -- per-op breakdown of the prunus step -----------------------------------------------------


def _op_classes(root):
    seen, todo = [], [root]
    while todo:
        c = todo.pop()
        for s in c.__subclasses__():
            if s not in seen:
                seen.append(s)
                todo.append(s)
    return [root] + seen


def op_breakdown(trainer, steps: int, top: int) -> dict:
    """Time every Op.apply and Op.backward of `steps` prunus training steps, by op class and phase.

    Self time: an op's time minus that of the ops it calls (backward rules call ops), so the rows
    add up, with `outside ops` (Python in modules, the engine, the optimizer loop), to the step.
    Phases: fwd (forward and loss), zero (zero_grad), bwd (loss.backward), opt (optimizer step).
    """
    from prunus import autograd

    Op = autograd.Op
    pc = time.perf_counter
    stats = {}  # (name, phase) -> [self s, inclusive s, calls]
    acc = [0.0]  # stack of child-time accumulators
    phase = ["fwd"]

    def timed(key, fn, args, kwargs):
        acc.append(0.0)
        t0 = pc()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = pc() - t0
            child = acc.pop()
            acc[-1] += dt
            s = stats.get(key)
            if s is None:
                s = stats[key] = [0.0, 0.0, 0]
            s[0] += dt - child
            s[1] += dt
            s[2] += 1

    raw_apply = Op.__dict__["apply"]

    def apply(cls, *inputs, **attrs):
        return timed((cls.__name__, phase[0]), raw_apply.__func__, (cls, *inputs), attrs)

    m, loss_fn, opt = trainer.model, trainer.loss_fn, trainer.opt
    ph = {"fwd": 0.0, "zero": 0.0, "bwd": 0.0, "opt": 0.0}
    trainer.run(max(2, steps // 10))  # warm, untimed
    patched = []
    try:
        for c in _op_classes(Op):
            if "backward" in c.__dict__:
                orig = c.__dict__["backward"]

                def backward(self, grad, _orig=orig):
                    return timed((type(self).__name__ + ".backward", phase[0]), _orig,
                                 (self, grad), {})

                patched.append((c, orig))
                c.backward = backward
        Op.apply = classmethod(apply)
        t_start = pc()
        for i in range(steps):
            x, y = trainer.batches[i % N_BATCHES]
            t0 = pc()
            phase[0] = "fwd"
            loss = loss_fn(m(x), y)
            t1 = pc()
            phase[0] = "zero"
            opt.zero_grad()
            t2 = pc()
            phase[0] = "bwd"
            loss.backward()
            t3 = pc()
            phase[0] = "opt"
            opt.step()
            t4 = pc()
            ph["fwd"] += t1 - t0
            ph["zero"] += t2 - t1
            ph["bwd"] += t3 - t2
            ph["opt"] += t4 - t3
        total = pc() - t_start
    finally:
        Op.apply = raw_apply
        for c, orig in patched:
            c.backward = orig
    # the same steps without the timers, for the instrumentation overhead
    t0 = pc()
    trainer.run(steps)
    plain = (pc() - t0) / steps * 1e6

    per = 1e6 / steps
    step_us = total * per
    rows = [{"op": k[0], "phase": k[1], "calls_per_step": v[2] / steps,
             "self_us_per_step": v[0] * per, "incl_us_per_step": v[1] * per,
             "self_share": v[0] * per / step_us}
            for k, v in stats.items()]
    rows.sort(key=lambda r: -r["self_us_per_step"])
    in_ops = sum(r["self_us_per_step"] for r in rows)
    phases = {}
    for name, sec in ph.items():
        us = sec * per
        ops_us = sum(r["self_us_per_step"] for r in rows if r["phase"] == name)
        phases[name] = {"us_per_step": us, "in_ops_us_per_step": ops_us,
                        "outside_ops_us_per_step": us - ops_us}
    return {"steps": steps, "step_us_instrumented": step_us, "step_us_plain": plain,
            "in_ops_us_per_step": in_ops, "outside_ops_us_per_step": step_us - in_ops,
            "phases": phases, "top": rows[:top], "all": rows}


# -- reporting -------------------------------------------------------------------------------


def summarize(res: dict) -> dict:
    """samples/s from the µs-per-step medians and extremes; ratios prunus/torch."""
    out = {}
    for who, m in res.items():
        out[who] = {"median_samples_per_s": BATCH / m["median_us"] * 1e6,
                    "min_samples_per_s": BATCH / m["max_us"] * 1e6,
                    "max_samples_per_s": BATCH / m["min_us"] * 1e6}
    p, t = res["prunus"], res["torch"]
    ratios = {"prunus_over_torch_samples_per_s": t["median_us"] / p["median_us"],
              "prunus_over_torch_time": p["median_us"] / t["median_us"],
              "prunus_over_torch_samples_per_s_of_best": t["min_us"] / p["min_us"]}
    return {"samples_per_s": out, "ratios": ratios}


def print_results(results, machine, cfg):
    print()
    print(f"prunus training benchmark  threads={cfg['threads']}  rounds={cfg['rounds']}  "
          f"round_time={cfg['round_time_s']}s  batch={BATCH}  cpus={machine['cpu_count']}  "
          f"numpy {machine['numpy_version']} (OpenBLAS threads {machine['openblas_threads']})  "
          f"torch {machine['torch_version']} (threads {machine['torch_threads']})  "
          f"load avg {', '.join(f'{v:.2f}' for v in machine['loadavg_start'] or [])}")
    o = cfg["optimizer"]
    update = (f"Adam(lr {o['lr']:g}, wd {o['weight_decay']:g})" if o["name"] == "Adam" else
              f"SGD(momentum {o['momentum']:g}, wd {o['weight_decay']:g})")
    print(f"full step: forward, cross-entropy, zero_grad, backward, {update}; "
          "samples/s: median over rounds [min–max over rounds]")
    head = (f"{'model':<32} {'contender':<9} {'samples/s':>10}  {'spread (min–max)':>24}  "
            f"{'ms/step':>8}  {'other CPUs':>10}")
    print(head)
    print("-" * len(head))
    for r in results.values():
        first = True
        for who, s in r["samples_per_s"].items():
            m = r["contenders"][who]
            spread = f"{s['min_samples_per_s']:,.0f}–{s['max_samples_per_s']:,.0f}"
            pct = 100 * (m["max_us"] - m["min_us"]) / m["median_us"]
            loads = [v for v in m["rounds_other_load_cpus"] if v is not None]
            ld = f"{max(loads):.2f}" if loads else "?"
            label = r["title"] if first else ""
            print(f"{label:<32} {who:<9} {s['median_samples_per_s']:>10,.0f}  "
                  f"{spread:>17} ({pct:3.0f}%)  {m['median_us'] / 1e3:>8.2f}  {ld:>10}")
            first = False
    print()
    print("summary: prunus/torch = prunus samples/s / torch samples/s (< 1: prunus slower)")
    noisy = False
    for r in results.values():
        q = r["ratios"]
        line = (f"  {r['title']:<32} prunus/torch {q['prunus_over_torch_samples_per_s']:5.3f}   "
                f"(best rounds {q['prunus_over_torch_samples_per_s_of_best']:5.3f}; "
                f"prunus step takes {q['prunus_over_torch_time']:.2f}x torch's time)")
        other = r.get("other_load_cpus")
        if other is not None and other > core.NOISY:
            line += f"   [noisy: other processes kept {other:.2f} CPUs busy]"
            noisy = True
        print(line)
    if noisy:
        print("warning: other processes were using the CPUs during some benchmarks; their numbers "
              "are not trustworthy (compare the best rounds, or rerun with --wait-quiet)")
    print()


def print_breakdown(title, b):
    print(f"where the prunus step goes: {title}  ({b['steps']} steps timed op by op: "
          f"{b['step_us_instrumented']:,.0f} µs/step instrumented, {b['step_us_plain']:,.0f} "
          "µs/step without the timers)")
    ph = b["phases"]
    print("  phases (µs/step, of which inside ops): " + "   ".join(
        f"{k} {v['us_per_step']:,.0f} ({v['in_ops_us_per_step']:,.0f})" for k, v in ph.items()))
    print(f"  inside ops {b['in_ops_us_per_step']:,.0f} µs/step, outside ops (module/engine/"
          f"optimizer Python) {b['outside_ops_us_per_step']:,.0f} µs/step")
    print(f"  {'op (self time)':<28} {'phase':<5} {'calls':>6} {'self µs':>9} {'share':>6} "
          f"{'incl µs':>9}")
    for r in b["top"]:
        print(f"  {r['op']:<28} {r['phase']:<5} {r['calls_per_step']:>6.1f} "
              f"{r['self_us_per_step']:>9,.0f} {100 * r['self_share']:>5.1f}% "
              f"{r['incl_us_per_step']:>9,.0f}")
    print()


def main(argv=None) -> int:
    global np, torch, P, OPTIMIZER
    args = parse_args(argv)
    OPTIMIZER = args.optimizer
    core.set_thread_env(args.threads)
    core.import_frameworks(args.threads)
    np, torch, P = core.np, core.torch, core.P

    names = core.select(MODELS, args.only, "model")
    if names is None:
        return 2

    machine = core.machine_info(args.threads)
    core.check_threads(machine, args.threads)
    started = datetime.datetime.now().astimezone()
    cfg = {"threads": args.threads, "rounds": args.rounds, "round_time_s": args.round_time,
           "quick": args.quick, "wait_quiet_s": args.wait_quiet, "gap_s": args.gap,
           "batch": BATCH, "distinct_batches": N_BATCHES, "dtype": "float32",
           "optimizer": ({"name": "Adam", "lr": ADAM_LR, "weight_decay": WEIGHT_DECAY}
                         if OPTIMIZER == "adam" else
                         {"name": "SGD", "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY}),
           "loss": "CrossEntropyLoss (mean)", "zero_grad": "set_to_none (both defaults)",
           "gc": "enabled (as in real use)",
           "contenders": {"prunus": "prunus.models.<name> + prunus.nn.CrossEntropyLoss + "
                                    f"prunus.optim.{'Adam' if OPTIMIZER == 'adam' else 'SGD'}",
                          "torch": "torch.nn twin (weights copied from prunus) + "
                                   f"torch.nn.CrossEntropyLoss + torch.optim."
                                   f"{'Adam' if OPTIMIZER == 'adam' else 'SGD'}, eager"}}

    built = {n: build(n) for n in names}
    checks = {n: check_steps(n, *built[n]) for n in names}

    results, breakdowns = {}, {}
    waited = 0.0
    t_start = time.perf_counter()
    for n in names:
        tp, tt = built[n]
        # as if in a process of its own: a model before it may have made prunus take BLAS's
        # threads (prunus/backend/threads.py); set_num_threads gives them back
        P.set_num_threads(args.threads)
        waited += core.wait_quiet(args.wait_quiet)
        res, other = core.measure({"prunus": tp.run, "torch": tt.run}, args.rounds,
                                  args.round_time, args.gap)
        results[n] = {"title": MODELS[n], "unit": "us_per_step", "contenders": res,
                      **summarize(res),
                      "other_load_cpus": None if other is None else round(other, 3)}
        print(f"  {MODELS[n]:<32} done", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start
    for n in names:
        tp = built[n][0]
        P.set_num_threads(args.threads)
        steps = args.breakdown_steps
        if steps is None:
            step_us = results[n]["contenders"]["prunus"]["median_us"]
            steps = 3 if args.quick else max(20, round(1e6 / step_us))  # about 1 s
        breakdowns[n] = op_breakdown(tp, steps, args.top)
    cfg["waited_for_quiet_s"] = round(waited, 1)
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    print_results(results, machine, cfg)
    for n in names:
        print_breakdown(MODELS[n], breakdowns[n])

    payload = {"schema": SCHEMA, "date": started.isoformat(timespec="seconds"),
               "elapsed_s": round(elapsed, 2), "machine": machine, "config": cfg,
               "checks": checks, "results": results, "breakdown": breakdowns}
    core.save_results(args, "train" if OPTIMIZER == "sgd" else f"train-{OPTIMIZER}", started, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
