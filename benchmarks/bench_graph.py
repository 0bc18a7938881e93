"""Static-graph benchmark: prunus.compile against prunus eager, PyTorch eager and ONNX Runtime.

Four parts, each with the same inputs and the same thread count for every contender:

* train: bench_train.py's full training step (batch 128: forward, cross-entropy, zero_grad,
  backward, SGD with momentum 0.9 and weight decay 5e-4) of LeNet-300-100 and LeNet-5, as prunus
  eager, as `prunus.compile(step)` and as PyTorch eager, in samples/s. Before timing, 3 steps of
  compiled and eager prunus from the same weights must give bit-identical losses, gradients and
  weights, and eager prunus must match torch (bench_train.check_steps). The compiled step is warmed
  until it replays its cached graph; a trace while timing is an error.
* infer: LeNet-300-100 in eval mode under no_grad, batch-1 latency and batch-256 throughput of
  prunus eager, prunus compiled, PyTorch eager and ONNX Runtime (CPUExecutionProvider, the same
  thread count) running an ONNX export of the same model: prunus.onnx.export when it works, else
  torch.onnx.export of the torch twin. All outputs are checked against eager prunus first.
* memory: the peak memory of one training step, eager vs compiled prunus, with tracemalloc (NumPy
  reports its arrays to it; PyTorch's CPU allocator does not, so torch has no figure here).
* graph: node counts of the compiled training graphs, the passes' report when
  prunus.graph.passes has one, and where a step's time goes: every op's forward is timed (self
  time), so a step splits into time in the kernels and time outside them (module, autograd and
  optimizer Python for eager; the executor loop for compiled), by op and, for the compiled
  graphs, by node.

The issue's targets are printed next to the measured ratios (goals, never assertions). Contenders
run interleaved for several rounds (bench_core.measure, whose thread setup, load measurement and
JSON writing this script imports, as it imports bench_train's models, data and checks).

    python benchmarks/bench_graph.py                  # 2 threads, 7 rounds, ~2 min
    python benchmarks/bench_graph.py --threads 1 --wait-quiet 30
    python benchmarks/bench_graph.py --quick          # a few seconds, for smoke tests
    python benchmarks/bench_graph.py --only train_lenet5,infer_b1

Thread counts are fixed through environment variables before NumPy or PyTorch is imported (this
module imports neither at top level), plus torch.set_num_threads and ONNX Runtime's SessionOptions.
"""

from __future__ import annotations

import datetime
import gc
import os
import sys
import tempfile
import time
import tracemalloc
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_core as core  # (neither imports NumPy nor PyTorch at top level)
import bench_train as bt

SCHEMA = "prunus-bench-graph/1"
CHECK_STEPS = 3
CASES = {
    "train_lenet_300_100": "LeNet-300-100 train step, b128",
    "train_lenet5": "LeNet-5 train step, b128",
    "infer_b1": "LeNet-300-100 inference, b1",
    "infer_b256": "LeNet-300-100 inference, b256",
}
INFER_BATCH = {"infer_b1": 1, "infer_b256": 256}
# The targets: (case, ratio key, "min"/"max", bound, what). Ratios are speed ratios
# (the other contender's time / this one's) except `compiled_latency_over_ort`, a time ratio.
TARGETS = [
    ("train_lenet_300_100", "compiled_vs_eager", "min", 1.3,
     "LeNet-300-100 train: compiled / prunus eager samples/s"),
    ("train_lenet_300_100", "compiled_vs_torch", "min", 1.5,
     "LeNet-300-100 train: compiled / PyTorch eager samples/s"),
    ("train_lenet5", "compiled_vs_eager", "min", 1.2,
     "LeNet-5 train: compiled / prunus eager samples/s"),
    ("infer_b1", "compiled_latency_over_ort", "max", 2.0,
     "b1 inference: compiled latency / ONNX Runtime latency"),
    ("infer_b256", "compiled_vs_torch", "min", 1.0,
     "b256 inference: compiled / PyTorch eager samples/s"),
]
CONTENDERS = {
    "eager": "prunus eager",
    "compiled": "prunus.compile: the cached graph replayed by prunus.graph.Executor",
    "compiled_module": "training only: prunus.compile(model) in the eager loop (loss, backward "
                       "and SGD eager; the model's forward and backward run its graph)",
    "torch": "PyTorch eager (the torch.nn twin of bench_train.py, weights copied from prunus)",
    "onnxruntime": "ONNX Runtime CPUExecutionProvider on an ONNX export of the same model",
}
MB = 1 << 20

np = torch = P = None  # set by main() once the thread environment is in place


def parse_args(argv=None):
    p = core.common_parser("graph", "case", quick_rounds=2, round_time=0.3)
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--onnx", choices=("auto", "prunus", "torch"), default="auto",
                   help="exporter of the model ONNX Runtime runs: auto (prunus.onnx.export if it "
                        "works, else torch.onnx.export of the twin), prunus or torch")
    p.add_argument("--breakdown-steps", type=int, default=None, metavar="N",
                   help="calls timed op by op for the breakdown (default: about 1 s worth of each "
                        "case, --quick 3)")
    p.add_argument("--top", type=int, default=12, help="rows of the breakdown tables (default 12)")
    return core.finish_args(p, p.parse_args(argv))


# -- training: compiled step, checks ---------------------------------------------------------


class CompiledTrainer(bt.Trainer):
    """bench_train's prunus Trainer whose step runs through `prunus.compile`."""

    def __init__(self, model, xs, ys):
        super().__init__("prunus", model, xs, ys)
        model, loss_fn, opt = self.model, self.loss_fn, self.opt

        # Trainer.run's step as a function of the batch: a batch read from self.batches inside
        # would be captured as state, and every replay would train on the traced batch.
        def train_step(x, y):
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        self.compiled = P.compile(train_step)

    def step(self):
        x, y = self.batches[self.i]
        self.i = (self.i + 1) % bt.N_BATCHES
        return self.compiled(x, y)

    def run(self, n):
        fn, batches, i = self.compiled, self.batches, self.i
        for _ in range(n):
            x, y = batches[i]
            i = (i + 1) % bt.N_BATCHES
            fn(x, y)
        self.i = i


def build_train(name):
    """(eager prunus, compiled step, compiled module, torch) trainers with the same starting
    weights and data."""
    import prunus.models

    tp, tt = bt.build(name)
    models = [getattr(prunus.models, name)() for _ in range(2)]
    for m in models:
        m.load_state_dict(tp.model.state_dict())
    xs, ys = bt.make_data()
    return tp, CompiledTrainer(models[0], xs, ys), bt.Trainer("prunus", P.compile(models[1]), xs, ys), tt


def _bitwise(what, a, b):
    a, b = a.numpy(), b.numpy()
    if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b):
        diff = int((a != b).sum()) if a.shape == b.shape else a.size
        err = float(np.abs(a.astype(np.float64) - b).max()) if a.shape == b.shape else float("nan")
        raise AssertionError(f"{what} differs between compiled and eager prunus: {diff} of "
                             f"{a.size} elements, max abs diff {err:.3g}")


def check_train(name, tp, tc, tm, tt):
    """CHECK_STEPS steps on each side: eager prunus vs torch within float32 tolerances
    (bench_train.check_steps), compiled vs eager prunus bit for bit (losses, gradients, weights).
    The compiled steps include the traces (the first SGD step makes the momentum buffers, so the
    graph is cached by the second) and at least one replay."""
    out = bt.check_steps(name, tp, tt, CHECK_STEPS)
    for s in range(1, CHECK_STEPS + 1):
        lc = float(tc.step().item())
        le = out[f"step{s}_loss"]["prunus"]
        if lc != le:
            raise AssertionError(f"{name} step {s}: compiled loss {lc!r} != eager loss {le!r}")
        out[f"step{s}_loss"]["compiled"] = lc
        lm = float(tm.step().item())
        if lm != le:
            raise AssertionError(f"{name} step {s}: compiled-module loss {lm!r} != eager loss {le!r}")
        out[f"step{s}_loss"]["compiled_module"] = lm
    for (k, p), (_, q) in zip(tp.model.named_parameters(), tc.model.named_parameters()):
        _bitwise(f"{name}: gradient of {k} after {CHECK_STEPS} steps", p.grad, q.grad)
        _bitwise(f"{name}: {k} after {CHECK_STEPS} steps", p.detach(), q.detach())
    for (k, p), (_, q) in zip(tp.model.named_parameters(), tm.model.named_parameters()):
        _bitwise(f"{name}: {k} after {CHECK_STEPS} steps (compiled module)", p.detach(), q.detach())
    c = tc.compiled
    if not c.cache:
        raise AssertionError(f"{name}: the compiled step cached no graph: {c.not_cached}")
    out["compiled_vs_eager"] = f"bit-identical losses, gradients and weights over {CHECK_STEPS} steps"
    out["compiled_traces_during_check"] = c.traces
    return out


def warm(compiled, call, what):
    """Call until `compiled.traces` has not grown for 3 calls in a row, so timing replays."""
    stable = 0
    for _ in range(20):
        before = compiled.traces
        call()
        stable = stable + 1 if compiled.traces == before else 0
        if stable >= 3:
            return compiled.traces
    raise RuntimeError(f"{what}: the compiled function still traces after 20 calls "
                       f"(why not cached: {compiled.not_cached or 'guards fail'})")


# -- inference: models, ONNX export, contenders ----------------------------------------------


def export_onnx(mp, mt, how, path):
    """Write the ONNX model ORT runs; (exporter, note), or (None, why not)."""
    x_np = np.zeros((1, 1, 28, 28), np.float32)
    names = {"input_names": ["x"], "output_names": ["logits"],
             "dynamic_axes": {"x": {0: "batch"}, "logits": {0: "batch"}}}
    why = []
    if how in ("auto", "prunus"):
        try:
            import prunus.onnx as ponnx

            with P.no_grad():
                ponnx.export(mp, (P.tensor(x_np),), path, **names)
            return "prunus.onnx.export", None
        except Exception as e:  # noqa: BLE001  (missing or unfinished: fall back, say why)
            why.append(f"prunus.onnx.export failed: {type(e).__name__}: {e}"[:300])
    if how in ("auto", "torch"):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(mt, (torch.from_numpy(x_np),), path, dynamo=False, **names)
            return "torch.onnx.export(dynamo=False) of the torch twin", "; ".join(why) or None
        except Exception as e:  # noqa: BLE001
            why.append(f"torch.onnx.export failed: {type(e).__name__}: {e}"[:300])
    return None, "; ".join(why)


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def build_infer(args, tmpdir):
    """The eval-mode LeNet-300-100, its compiled form, its torch twin and an ORT session."""
    tp, tt = bt.build("lenet_300_100")  # the same weights on both sides
    mp, mt = tp.model.eval(), tt.model.eval()
    sess = exporter = note = None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        note = "onnxruntime is not installed"
    else:
        path = os.path.join(tmpdir, "lenet_300_100.onnx")
        exporter, note = export_onnx(mp, mt, args.onnx, path)
        if exporter is not None:
            sess = ort_session(path, args.threads)
    return {"eager": mp, "compiled": P.compile(mp), "torch": mt, "sess": sess,
            "exporter": exporter, "note": note}


def infer_case(name, m):
    """Contenders and check of one inference batch size (random MNIST-shaped input)."""
    batch = INFER_BATCH[name]
    x_np = np.random.default_rng(1).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    px, tx = P.tensor(x_np), torch.from_numpy(x_np)
    mp, c, mt, sess = m["eager"], m["compiled"], m["torch"], m["sess"]

    def eager(n):
        with P.no_grad():
            for _ in range(n):
                mp(px)

    def compiled(n):
        with P.no_grad():
            for _ in range(n):
                c(px)

    def torch_eager(n):
        with torch.no_grad():
            for _ in range(n):
                mt(tx)

    contenders = {"eager": eager, "compiled": compiled, "torch": torch_eager}
    if sess is not None:
        run, feed = sess.run, {sess.get_inputs()[0].name: x_np}
        out_names = [sess.get_outputs()[0].name]

        def onnxruntime(n):
            for _ in range(n):
                run(out_names, feed)

        contenders["onnxruntime"] = onnxruntime

    def check():
        with P.no_grad():
            traces = warm(c, lambda: c(px), name)
            ye, yc = mp(px), c(px)
        _bitwise(f"{name}: logits", ye, yc)
        with torch.no_grad():
            got = {"eager": [ye], "torch": [mt(tx)]}
        note = None
        if sess is not None:
            try:
                got["onnxruntime"] = [sess.run(out_names, feed)[0]]
            except Exception as e:  # noqa: BLE001  (a fixed-batch export, say)
                note = f"onnxruntime failed at batch {batch}: {type(e).__name__}: {e}"[:300]
                del contenders["onnxruntime"]
        diffs = core.assert_close(name, got, "eager")
        diffs["compiled_vs_eager"] = "bit-identical"
        diffs["compiled_traces"] = traces
        return diffs, note

    return contenders, check, batch


# -- time split: in op forwards vs outside ---------------------------------------------------


def forward_breakdown(run, steps, graph=None):
    """Self time of every op's `forward` over `steps` calls of run(1), in µs per call.

    Eager ops and the compiled executor both do their math in Op.forward, so the rest of a call
    (`outside`) is framework overhead: modules, autograd and optimizer Python for eager, the
    executor loop for compiled. With `graph`, top-level forwards are matched to its nodes in order.
    """
    from prunus import autograd

    pc = time.perf_counter
    calls = []  # (op name, self s, inclusive s, top level) in call order
    acc = [0.0]

    def wrap(orig):
        def forward(self, *a, **k):
            acc.append(0.0)
            t0 = pc()
            try:
                return orig(self, *a, **k)
            finally:
                dt = pc() - t0
                child = acc.pop()
                acc[-1] += dt
                calls.append((type(self).__name__, dt - child, dt, len(acc) == 1))
        return forward

    # the timers' own cost per forward (a Python frame, two clock reads, list appends): measured
    # on an empty forward and taken off the outside time, which would otherwise include it
    class Empty:
        def forward(self, x):
            return x

    empty, timed, n_cal = Empty(), wrap(Empty.forward), 20000
    t0 = pc()
    for _ in range(n_cal):
        empty.forward(None)
    t1 = pc()
    for _ in range(n_cal):
        timed(empty, None)
    timer_cost = max(0.0, ((pc() - t1) - (t1 - t0)) / n_cal)
    calls.clear()

    run(2)  # warm, untimed
    # forward and, for nodes memory planning runs in place, forward_into
    patched = [(c, k, c.__dict__[k]) for c in bt._op_classes(autograd.Op)
               for k in ("forward", "forward_into") if k in c.__dict__]
    try:
        for c, k, orig in patched:
            setattr(c, k, wrap(orig))
        t0 = pc()
        run(steps)
        total = pc() - t0
    finally:
        for c, k, orig in patched:
            setattr(c, k, orig)
    t0 = pc()
    run(steps)  # the same calls without the timers: the instrumentation's cost
    plain = (pc() - t0) / steps * 1e6

    per = 1e6 / steps
    by_op = {}
    for name, self_s, _, _ in calls:
        r = by_op.setdefault(name, [0.0, 0])
        r[0] += self_s
        r[1] += 1
    ops = sorted(({"op": k, "calls": v[1] / steps, "us": v[0] * per} for k, v in by_op.items()),
                 key=lambda r: -r["us"])
    in_fw = sum(r["us"] for r in ops)
    timers = len(calls) * timer_cost * per
    out = {"steps": steps, "us_instrumented": total * per, "us_plain": plain,
           "timer_cost_us": timers, "in_forwards_us": in_fw,
           "outside_us": total * per - timers - in_fw, "by_op": ops}
    top = [(n, incl) for n, _, incl, is_top in calls if is_top]
    if graph is not None and len(top) == steps * len(graph.nodes) and all(
            top[i][0] == nd.op.__name__ for i, nd in enumerate(graph.nodes)):
        k = len(graph.nodes)
        out["by_node"] = [
            {"node": nd.index, "op": nd.op.__name__,
             "shape": list(graph.values[nd.output].shape),
             "us": sum(top[s * k + i][1] for s in range(steps)) * per}
            for i, nd in enumerate(graph.nodes)]
    return out


# -- memory ----------------------------------------------------------------------------------


def step_memory(step):
    """tracemalloc around one step: the peak above what was allocated when it began, in MB.

    Tracing starts one step earlier, so the arrays that outlive a step (gradients, buffers) are
    traced and their release counts, as it would in the process's real footprint."""
    gc.collect()
    tracemalloc.start()
    try:
        step()
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"peak_mb": (peak - base) / MB, "after_mb": (cur - base) / MB,
            "traced_at_start_mb": base / MB}


def graph_info(graph):
    """Node counts, ops, and the passes' report and planned peak when prunus has them."""
    ops = {}
    for n in graph.nodes:
        ops[n.op.__name__] = ops.get(n.op.__name__, 0) + 1
    info = {"summary": graph.summary(), "ops": ops}
    try:
        from prunus.graph.passes import report
    except ImportError:
        report = None
    rows = getattr(graph, "pass_reports", None)
    if report is not None and rows and isinstance(rows[0], dict):
        info["passes"] = rows
        info["passes_table"] = report.format_report(rows)
        info["planned_peak_mb"] = report.peak_bytes(graph) / MB
        info["resident_mb"] = {k: v / MB for k, v in report.resident_bytes(graph).items()}
    return info


# -- reporting -------------------------------------------------------------------------------


def ratios(res):
    """Speed ratios of compiled against the others (the other's time / compiled's time)."""
    c = res["compiled"]["median_us"]
    out = {f"compiled_vs_{who}": m["median_us"] / c for who, m in res.items() if who != "compiled"}
    out.update({f"compiled_vs_{who}_of_best": m["min_us"] / res["compiled"]["min_us"]
                for who, m in res.items() if who != "compiled"})
    if "onnxruntime" in res:
        out["compiled_latency_over_ort"] = c / res["onnxruntime"]["median_us"]
    if "compiled_module" in res:
        out["compiled_module_vs_eager"] = res["eager"]["median_us"] / res["compiled_module"]["median_us"]
    return out


def target_rows(results):
    rows = []
    for case, key, kind, bound, what in TARGETS:
        r = results.get(case)
        val = r["ratios"].get(key) if r else None
        met = None if val is None else (val >= bound if kind == "min" else val <= bound)
        if val is None:
            gap = None
        else:  # how far off, as a share of the bound (positive: missed by that much)
            gap = (bound - val) / bound if kind == "min" else (val - bound) / bound
        rows.append({"case": case, "ratio": key, "what": what, "target": bound, "kind": kind,
                     "measured": val, "met": met, "short_by": None if met is not False else gap})
    return rows


def print_results(results, machine, cfg):
    print()
    print(f"prunus static-graph benchmark  threads={cfg['threads']}  rounds={cfg['rounds']}  "
          f"round_time={cfg['round_time_s']}s  cpus={machine['cpu_count']}  "
          f"numpy {machine['numpy_version']} (OpenBLAS threads {machine['openblas_threads']})  "
          f"torch {machine['torch_version']} (threads {machine['torch_threads']})  "
          f"onnxruntime {machine.get('onnxruntime_version')}  "
          f"load avg {', '.join(f'{v:.2f}' for v in machine['loadavg_start'] or [])}")
    print("median over rounds [min–max]; x compiled = this contender's time / compiled's time "
          "(> 1: compiled faster)")
    head = (f"{'case':<31} {'contender':<15} {'samples/s':>10}  {'µs/call':>9}  "
            f"{'spread µs (min–max)':>25}  {'x compiled':>10}  {'other CPUs':>10}")
    print(head)
    print("-" * len(head))
    for r in results.values():
        first = True
        c = r["contenders"]["compiled"]["median_us"]
        for who, m in r["contenders"].items():
            spread = f"{core.fmt_us(m['min_us'])}–{core.fmt_us(m['max_us'])}"
            pct = 100 * (m["max_us"] - m["min_us"]) / m["median_us"]
            loads = [v for v in m["rounds_other_load_cpus"] if v is not None]
            ld = f"{max(loads):.2f}" if loads else "?"
            print(f"{r['title'] if first else '':<31} {who:<15} "
                  f"{r['batch'] / m['median_us'] * 1e6:>10,.0f}  {core.fmt_us(m['median_us']):>9}  "
                  f"{spread:>18} ({pct:3.0f}%)  {m['median_us'] / c:>10.2f}  {ld:>10}")
            first = False
        if r.get("note"):
            print(f"{'':<31} note: {r['note']}")
    print()


def print_targets(rows, results):
    print("targets of the issue (ratios of medians; `best` uses each contender's fastest round)")
    for t in rows:
        sign = ">=" if t["kind"] == "min" else "<="
        if t["measured"] is None:
            why = "not run" if t["case"] not in results else "not measured (see the note above)"
            print(f"  {t['what']:<56} target {sign} {t['target']:.1f}   {why}")
            continue
        best = None
        r = results[t["case"]]["ratios"]
        if t["ratio"].endswith("latency_over_ort"):
            best = 1 / r["compiled_vs_onnxruntime_of_best"]
        else:
            best = r.get(t["ratio"] + "_of_best")
        verdict = "met" if t["met"] else f"MISSED by {100 * t['short_by']:.0f}%"
        print(f"  {t['what']:<56} {t['measured']:5.2f}  (best {best:5.2f})   "
              f"target {sign} {t['target']:.1f}   {verdict}")
    noisy = [r["title"] for r in results.values()
             if r.get("other_load_cpus") is not None and r["other_load_cpus"] > core.NOISY]
    if noisy:
        print(f"warning: other processes kept the CPUs busy during: {', '.join(noisy)}; rerun "
              "those with --wait-quiet (their ratios are not trustworthy)")
    print()


def print_memory(memory):
    print("peak memory of one training step (tracemalloc, after warm-up; MB above what was "
          "allocated when the step began)")
    print(f"  {'model':<16} {'eager MB':>9} {'compiled MB':>12} {'compiled/eager':>15} "
          f"{'planned peak MB':>16} {'at start MB (eager/compiled)':>29}")
    for name, m in memory.items():
        e, c = m["eager"]["peak_mb"], m["compiled"]["peak_mb"]
        plan = m.get("planned_peak_mb")
        start = f"{m['eager']['traced_at_start_mb']:.2f} / {m['compiled']['traced_at_start_mb']:.2f}"
        print(f"  {name:<16} {e:>9.2f} {c:>12.2f} {c / e:>15.2f} "
              f"{'' if plan is None else f'{plan:.2f}':>16} {start:>29}")
    print("  planned peak: the executor's plan of node outputs and saved arrays "
          "(prunus.graph.passes.report.peak_bytes; without the temporaries inside kernels)")
    print("  torch: n/a (its CPU allocator does not report to tracemalloc)")
    print()


def print_graph(name, info):
    s = info["summary"]
    vals = ", ".join(f"{k} {v}" for k, v in s["values"].items())
    ops = ", ".join(f"{k} {v}" for k, v in sorted(info["ops"].items(), key=lambda kv: -kv[1]))
    print(f"compiled graph of {name}: {s['nodes']} nodes (values: {vals})")
    print(f"  ops: {ops}")
    if "passes_table" in info:
        print("  passes (prunus.graph.passes.report):")
        for line in info["passes_table"].splitlines():
            print("    " + line)
    else:
        print("  passes: no report (prunus.graph.passes.report is not there)")
    print()


def print_breakdown(title, b, top):
    e, c = b["eager"], b["compiled"]
    print(f"where the time goes: {title}  (µs per call, every op's forward timed: {e['steps']} "
          f"calls each; instrumented {e['us_instrumented']:,.0f} / {c['us_instrumented']:,.0f}, "
          f"plain {e['us_plain']:,.0f} / {c['us_plain']:,.0f} eager / compiled)")
    print(f"  eager:    in forwards {e['in_forwards_us']:>9,.1f}   outside {e['outside_us']:>8,.1f}"
          f"   compiled: in forwards {c['in_forwards_us']:>9,.1f}   outside "
          f"{c['outside_us']:>8,.1f}   (timers' own cost taken off: {e['timer_cost_us']:,.1f} / "
          f"{c['timer_cost_us']:,.1f})")
    print(f"  ceiling of any executor with these kernels (eager / eager's forwards): "
          f"{(e['in_forwards_us'] + e['outside_us']) / e['in_forwards_us']:.2f}x eager")
    ce = {r["op"]: r for r in c["by_op"]}
    print(f"  {'op (self time)':<24} {'eager µs':>9} {'calls':>6} {'compiled µs':>12} {'calls':>6}")
    for r in e["by_op"][:top]:
        q = ce.get(r["op"], {"us": 0.0, "calls": 0.0})
        print(f"  {r['op']:<24} {r['us']:>9,.1f} {r['calls']:>6.1f} {q['us']:>12,.1f} "
              f"{q['calls']:>6.1f}")
    if "by_node" in c:
        nodes = sorted(c["by_node"], key=lambda r: -r["us"])[:top]
        print("  compiled graph, slowest nodes (inclusive µs): " + "; ".join(
            f"#{r['node']} {r['op']}{r['shape']} {r['us']:,.1f}" for r in nodes))
    print()


def main(argv=None) -> int:
    global np, torch, P
    args = parse_args(argv)
    core.set_thread_env(args.threads)
    core.import_frameworks(args.threads)
    np, torch, P = bt.np, bt.torch, bt.P = core.np, core.torch, core.P

    names = core.select(CASES, args.only, "case")
    if names is None:
        return 2

    machine = core.machine_info(args.threads)
    try:
        import onnxruntime

        machine["onnxruntime_version"] = onnxruntime.__version__
    except ImportError:
        machine["onnxruntime_version"] = None
    core.check_threads(machine, args.threads)
    started = datetime.datetime.now().astimezone()
    cfg = {"threads": args.threads, "rounds": args.rounds, "round_time_s": args.round_time,
           "quick": args.quick, "wait_quiet_s": args.wait_quiet, "gap_s": args.gap,
           "train_batch": bt.BATCH, "distinct_batches": bt.N_BATCHES, "dtype": "float32",
           "optimizer": {"name": "SGD", "lr": bt.LR, "momentum": bt.MOMENTUM,
                         "weight_decay": bt.WEIGHT_DECAY},
           "infer_batches": INFER_BATCH, "onnx": args.onnx, "gc": "enabled (as in real use)",
           "contenders": CONTENDERS}

    checks, results, memory, graphs, breakdowns = {}, {}, {}, {}, {}
    tmpdir = tempfile.mkdtemp(prefix="prunus-bench-graph-")
    infer = None
    waited = 0.0
    t_start = time.perf_counter()
    for name in names:
        P.set_num_threads(args.threads)  # as bench_train: give BLAS its threads back
        note = None
        if name.startswith("train_"):
            model = name[len("train_"):]
            tp, tc, tm, tt = build_train(model)
            checks[name] = check_train(model, tp, tc, tm, tt)
            checks[name]["compiled_traces_after_warmup"] = warm(tc.compiled, tc.step, name)
            checks[name]["compiled_module_traces_after_warmup"] = warm(tm.model, tm.step, name)
            contenders = {"eager": tp.run, "compiled": tc.run, "compiled_module": tm.run, "torch": tt.run}
            batch, compiled, graph = bt.BATCH, tc.compiled, tc.compiled.last_graph
        else:
            if infer is None:
                infer = build_infer(args, tmpdir)
            contenders, check, batch = infer_case(name, infer)
            checks[name], note = check()
            note = "; ".join(x for x in (f"ONNX model by {infer['exporter']}" if infer["exporter"]
                                         else None, infer["note"], note) if x)
            checks[name]["onnx_exporter"] = infer["exporter"]
            compiled = infer["compiled"]
            with P.no_grad():
                graph = compiled.graph_for(P.tensor(np.zeros((batch, 1, 28, 28), np.float32)))
        waited += core.wait_quiet(args.wait_quiet)
        traces = compiled.traces
        res, other = core.measure(contenders, args.rounds, args.round_time, args.gap)
        if compiled.traces != traces:
            raise RuntimeError(f"{name}: the compiled function traced {compiled.traces - traces} "
                               "times while being timed; its times are not a replay's")
        results[name] = {"title": CASES[name], "batch": batch, "unit": "us_per_call",
                         "contenders": res, "ratios": ratios(res), "note": note,
                         "samples_per_s": {w: batch / m["median_us"] * 1e6 for w, m in res.items()},
                         "other_load_cpus": None if other is None else round(other, 3)}
        print(f"  {CASES[name]:<32} done", file=sys.stderr, flush=True)

        # after the timing, so the instrumented steps don't change what was timed
        steps = args.breakdown_steps or (3 if args.quick else max(
            20, round(1e6 / res["compiled"]["median_us"])))
        if name.startswith("train_"):
            graphs[name] = graph_info(graph)
            memory[model] = {"eager": step_memory(tp.step), "compiled": step_memory(tc.step),
                             "planned_peak_mb": graphs[name].get("planned_peak_mb")}
        breakdowns[name] = {"eager": forward_breakdown(contenders["eager"], steps),
                            "compiled": forward_breakdown(contenders["compiled"], steps, graph)}
    elapsed = time.perf_counter() - t_start
    cfg["waited_for_quiet_s"] = round(waited, 1)
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    targets = target_rows(results)
    print_results(results, machine, cfg)
    print_targets(targets, results)
    if memory:
        print_memory(memory)
    for name, info in graphs.items():
        print_graph(CASES[name], info)
    for name, b in breakdowns.items():
        print_breakdown(CASES[name], b, args.top)

    payload = {"schema": SCHEMA, "date": started.isoformat(timespec="seconds"),
               "elapsed_s": round(elapsed, 2), "machine": machine, "config": cfg,
               "checks": checks, "results": results, "targets": targets, "memory": memory,
               "graphs": graphs, "breakdown": breakdowns}
    core.save_results(args, "graph", started, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
