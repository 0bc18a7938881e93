"""Core benchmark: prunus side by side with PyTorch eager (and hand-written NumPy) in one run.

Two groups, each on the same inputs and the same thread count for every contender:

* dispatch: per-op overhead on tiny tensors -- a 1-element add forward+backward, and forward-only
  (under no_grad) add, mul, 2x2 matmul, relu and sum;
* mlp: LeNet-300-100 (784-300-100-10, Linear+ReLU, Linear+ReLU, Linear) at batch 128, float32:
  a training step (forward, cross-entropy, backward, grads cleared) and an inference forward.

Contenders run interleaved (A B C A B C ...) for several rounds after a warm-up; each round runs
a contender long enough to last about --round-time seconds. We report the median per-iteration
time, the min-max spread over rounds, and ratios of medians. Before timing, every benchmark checks
that the contenders compute the same values (allclose), so the timings compare equal work.

    python benchmarks/bench_core.py                 # 2 threads, 7 rounds, ~1 min
    python benchmarks/bench_core.py --threads 1
    python benchmarks/bench_core.py --quick         # a few seconds, for smoke tests
    python benchmarks/bench_core.py --profile       # also cProfile the prunus MLP step and add

Thread counts are fixed through environment variables before NumPy or PyTorch is imported (this
module imports neither at top level), plus torch.set_num_threads.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import operator
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
SCHEMA = "prunus-bench-core/1"

# Set by main() once the thread environment is in place.
np = torch = P = F = None


# -- arguments and environment ---------------------------------------------------------------


def common_parser(kind: str, what: str, quick_rounds: int, round_time: float):
    """The options every benchmark script shares; `kind` names the JSON file, `what` the unit
    --only picks (benchmarks, models) and --wait-quiet waits before."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2,
                   help="threads for NumPy/OpenBLAS and PyTorch (default 2)")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"interleaved rounds (default 7, --quick {quick_rounds})")
    p.add_argument("--round-time", type=float, default=None,
                   help=f"seconds each contender runs per round (default {round_time}, --quick 0.01)")
    p.add_argument("--quick", action="store_true", help="a few seconds in all, for smoke testing")
    p.add_argument("--only", default=None, help=f"comma-separated {what} names (or prefixes) to run")
    p.add_argument("--out", default=None,
                   help=f"JSON path (default benchmarks/results/{kind}-<date>-t<threads>.json)")
    p.add_argument("--no-json", action="store_true", help="print the tables only")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help=f"before each {what}, wait up to S seconds for other processes to leave "
                        "the CPUs idle (for shared machines; default 0: don't wait)")
    p.add_argument("--gap", type=float, default=None, metavar="S",
                   help="idle seconds before each timed run, so that BLAS threads spinning after "
                        "one contender don't slow the next (default 0.2 with more than one "
                        "thread, else 0)")
    p.set_defaults(_quick_rounds=quick_rounds, _round_time=round_time)
    return p


def finish_args(p, args):
    """Fill the defaults that depend on --quick/--threads and check the ranges."""
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.rounds is None:
        args.rounds = args._quick_rounds if args.quick else 7
    if args.round_time is None:
        args.round_time = 0.01 if args.quick else args._round_time
    if args.gap is None:
        args.gap = 0.2 if args.threads > 1 and not args.quick else 0.0
    if args.rounds < 1 or args.round_time <= 0:
        p.error("--rounds must be >= 1 and --round-time > 0")
    return args


def parse_args(argv=None):
    p = common_parser("core", "benchmark", quick_rounds=3, round_time=0.2)
    p.add_argument("--profile", action="store_true",
                   help="also cProfile the prunus MLP training step and 1-element add fwd+bwd")
    return finish_args(p, p.parse_args(argv))


def select(names, only, what: str):
    """The names --only picks (comma-separated prefixes), all without it; None (after printing
    an error) when it matches nothing."""
    names = list(names)
    if not only:
        return names
    keys = [k.strip() for k in only.split(",") if k.strip()]
    picked = [n for n in names if any(n.startswith(k) for k in keys)]
    if not picked:
        print(f"error: --only {only!r} matches no {what} ({', '.join(names)})", file=sys.stderr)
        return None
    return picked


def check_threads(machine: dict, threads: int) -> None:
    """Warn when torch or OpenBLAS did not take the thread count asked for."""
    if machine["torch_threads"] != threads or machine["openblas_threads"] not in (None, threads):
        print(f"warning: asked for {threads} threads, got torch {machine['torch_threads']}, "
              f"OpenBLAS {machine['openblas_threads']}", file=sys.stderr)


def set_thread_env(n: int) -> None:
    """Must run before NumPy/PyTorch are imported: the BLAS pools read these once, at load."""
    late = [m for m in ("numpy", "torch") if m in sys.modules]
    if late:
        print(f"warning: {', '.join(late)} already imported; thread env vars may not apply",
              file=sys.stderr)
    for var in THREAD_VARS:
        os.environ[var] = str(n)


def import_frameworks(threads: int) -> None:
    global np, torch, P, F
    if REPO not in sys.path:  # benchmark this checkout's prunus, installed or not
        sys.path.insert(0, REPO)
    import numpy
    import torch as _torch
    import torch.nn.functional as _F

    import prunus

    _torch.set_num_threads(threads)
    prunus.set_num_threads(threads)
    np, torch, P, F = numpy, _torch, prunus, _F


def openblas_info():
    """NumPy's OpenBLAS: (threads in use, config string), read from the loaded library."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        return None, None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        threads = config = None
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                fn = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if fn is not None and threads is None:
                    fn.restype = ctypes.c_int
                    threads = int(fn())
                fn = getattr(lib, f"{prefix}get_config{suffix}", None)
                if fn is not None and config is None:
                    fn.restype = ctypes.c_char_p
                    config = fn().decode(errors="replace")
        if threads is not None:
            return threads, config
    return None, None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state():
    import subprocess

    try:
        def git(*a):
            return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True,
                                  timeout=5, check=False).stdout.strip()

        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "prunus")
        return {"commit": head or None, "prunus_dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "prunus_dirty": None}


def machine_info(threads: int) -> dict:
    blas_threads, blas_config = openblas_info()
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas_name = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001  (only informative)
        blas_name = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "threads": threads,
        "numpy_version": np.__version__,
        "numpy_blas": blas_name,
        "openblas_threads": blas_threads,
        "openblas_config": blas_config,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "prunus_version": getattr(P, "__version__", None),
        "prunus_path": os.path.dirname(P.__file__),
        "git": git_state(),
        "env": {v: os.environ.get(v) for v in THREAD_VARS},
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# -- timing ----------------------------------------------------------------------------------


def _busy_jiffies():
    """(all CPUs' busy jiffies, this process's jiffies): their difference is other processes'."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # minus idle and iowait
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return busy, int(fields[11]) + int(fields[12])  # utime + stime, all threads
    except (OSError, ValueError, IndexError):
        return None


NOISY = 0.2  # CPUs busy with other processes above which a benchmark is flagged
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def other_load(j0, j1, seconds: float):
    """CPUs kept busy by other processes between two _busy_jiffies() samples."""
    if not j0 or not j1 or seconds <= 0:
        return None
    return max(0.0, ((j1[0] - j0[0]) - (j1[1] - j0[1])) / CLK_TCK / seconds)


def wait_quiet(limit_s: float, window: float = 0.5, need: int = 2):
    """Wait (at most limit_s) until other processes leave the CPUs idle for `need` windows."""
    if limit_s <= 0:
        return 0.0
    t_end = time.perf_counter() + limit_s
    t_start = time.perf_counter()
    quiet = 0
    while time.perf_counter() < t_end:
        j0, t0 = _busy_jiffies(), time.perf_counter()
        time.sleep(window)
        load = other_load(j0, _busy_jiffies(), time.perf_counter() - t0)
        if load is None:
            break
        quiet = quiet + 1 if load < NOISY / 2 else 0
        if quiet >= need:
            break
    return time.perf_counter() - t_start


def calibrate(run, target: float) -> int:
    """Iterations that make `run(n)` last about `target` seconds (this also warms it up)."""
    run(1)
    run(1)
    n, floor = 1, min(target / 4, 0.05)
    while True:
        t0 = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t0
        if dt >= floor:
            return max(1, round(n * target / dt))
        n *= 2 if dt > floor / 8 else 8


def measure(contenders: dict, rounds: int, target: float, gap: float = 0.0) -> dict:
    """Interleave the contenders round by round; per-iteration seconds of every round.

    `gap` seconds of sleep precede each timed run. With several threads this matters: after its
    last call, OpenBLAS keeps a worker spinning for about 0.1 s (THREAD_TIMEOUT), and a torch
    run started in that window loses up to half its speed (measured: 1.4 ms -> 3 ms per MLP step).
    """
    iters = {name: calibrate(run, target) for name, run in contenders.items()}
    per_round = {name: [] for name in contenders}
    load_round = {name: [] for name in contenders}
    j0, w0 = _busy_jiffies(), time.perf_counter()
    slept = 0.0
    for _ in range(rounds):
        for name, run in contenders.items():
            n = iters[name]
            if gap > 0:
                time.sleep(gap)
                slept += gap
            a = _busy_jiffies()
            t0 = time.perf_counter()
            run(n)
            dt = time.perf_counter() - t0
            per_round[name].append(dt / n)
            ld = other_load(a, _busy_jiffies(), dt)  # coarse: the clock ticks at CLK_TCK Hz
            load_round[name].append(None if ld is None else round(ld, 2))
    # CPUs kept busy by other processes while we measured: > NOISY means the numbers are suspect
    other = other_load(j0, _busy_jiffies(), time.perf_counter() - w0 - slept)
    out = {}
    for name, ts in per_round.items():
        us = [t * 1e6 for t in ts]
        out[name] = {
            "median_us": statistics.median(us),
            "min_us": min(us),
            "max_us": max(us),
            "rounds_us": [round(u, 4) for u in us],
            "iters_per_round": iters[name],
            "rounds_other_load_cpus": load_round[name],
        }
    return out, other


# -- inputs ----------------------------------------------------------------------------------


def to_numpy(t):
    """A prunus or torch tensor (or array) as a float64 NumPy array, for comparisons."""
    if isinstance(t, np.ndarray):
        return t.astype(np.float64)
    if torch.is_tensor(t):
        return t.detach().numpy().astype(np.float64)
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def assert_close(name, got: dict, ref: str, rtol=1e-4, atol_scale=1e-5) -> dict:
    """All entries of `got` (contender -> list of arrays) match `ref`'s; the max abs diffs."""
    base = [to_numpy(a) for a in got[ref]]
    diffs = {}
    for who, arrays in got.items():
        if who == ref:
            continue
        worst = 0.0
        if len(arrays) != len(base):
            raise AssertionError(f"{name}: {who} gave {len(arrays)} values, {ref} {len(base)}")
        for i, (a, b) in enumerate(zip(arrays, base)):
            a = to_numpy(a)
            if a.shape != b.shape:
                raise AssertionError(f"{name}: value {i}: {who} shape {a.shape} vs {ref} {b.shape}")
            atol = atol_scale * max(float(np.abs(b).max(initial=0.0)), 1e-30)
            if not np.allclose(a, b, rtol=rtol, atol=atol):
                err = float(np.abs(a - b).max())
                raise AssertionError(
                    f"{name}: value {i} differs between {who} and {ref}: max abs diff {err:.3g}")
            worst = max(worst, float(np.abs(a - b).max(initial=0.0)))
        diffs[f"{who}_vs_{ref}_max_abs_diff"] = worst
    return diffs


# -- group 1: dispatch overhead on tiny tensors ----------------------------------------------


def dispatch_cases():
    rng = np.random.default_rng(0)
    a1 = rng.standard_normal(1).astype(np.float32)
    b1 = rng.standard_normal(1).astype(np.float32)
    a22 = rng.standard_normal((2, 2)).astype(np.float32)
    b22 = rng.standard_normal((2, 2)).astype(np.float32)

    def pt(a, grad=True):
        return P.tensor(a, requires_grad=grad)

    def tt(a, grad=True):
        return torch.from_numpy(a.copy()).requires_grad_(grad)

    cases = []
    summed = operator.methodcaller("sum")

    # add forward + backward, 1 element
    px, py = pt(a1), pt(b1)
    tx, ty = tt(a1), tt(b1)

    def add_bwd_prunus(n):
        for _ in range(n):
            z = px + py
            z.backward()
            px.grad = None
            py.grad = None

    def add_bwd_torch(n):
        for _ in range(n):
            z = tx + ty
            z.backward()
            tx.grad = None
            ty.grad = None

    def check_add_bwd():
        vals = {}
        for who, (x, y) in {"prunus": (px, py), "torch": (tx, ty)}.items():
            z = x + y
            z.backward()
            vals[who] = [z.detach(), x.grad, y.grad]
            x.grad = y.grad = None
        vals["numpy"] = [a1 + b1, np.ones(1), np.ones(1)]
        return vals

    cases.append({
        "name": "add_fwd_bwd_1", "group": "dispatch", "title": "add fwd+bwd, 1 elem",
        "contenders": {"prunus": add_bwd_prunus, "torch": add_bwd_torch},
        "check": check_add_bwd,
    })

    # forward-only ops under no_grad (inputs are leaves that require grad, as in a model)
    specs = [
        # (operator.* and methodcaller are C callables: the loop adds no Python frame of ours)
        ("add", "add fwd, 1 elem", (a1, b1), operator.add, operator.add, operator.add),
        ("mul", "mul fwd, 1 elem", (a1, b1), operator.mul, operator.mul, operator.mul),
        ("matmul", "matmul fwd, 2x2", (a22, b22),
         operator.matmul, operator.matmul, operator.matmul),
        ("relu", "relu fwd, 1 elem", (a1,), P.relu, torch.relu, lambda x: np.maximum(x, 0)),
        ("sum", "sum fwd, 1 elem", (a1,), summed, summed, summed),
    ]
    for key, title, arrays, f_p, f_t, f_n in specs:
        cases.append(_forward_case(key, title, arrays, f_p, f_t, f_n, pt, tt))
    return cases


def _forward_case(key, title, arrays, f_p, f_t, f_n, pt, tt):
    p_in = [pt(a) for a in arrays]
    t_in = [tt(a) for a in arrays]
    n_in = [a.copy() for a in arrays]
    # Explicit loops per arity, so no argument unpacking is timed.
    if len(arrays) == 2:
        (pa, pb), (ta, tb), (na, nb) = p_in, t_in, n_in

        def run_p(n):
            with P.no_grad():
                for _ in range(n):
                    f_p(pa, pb)

        def run_t(n):
            with torch.no_grad():
                for _ in range(n):
                    f_t(ta, tb)

        def run_n(n):
            for _ in range(n):
                f_n(na, nb)
    else:
        (pa,), (ta,), (na,) = p_in, t_in, n_in

        def run_p(n):
            with P.no_grad():
                for _ in range(n):
                    f_p(pa)

        def run_t(n):
            with torch.no_grad():
                for _ in range(n):
                    f_t(ta)

        def run_n(n):
            for _ in range(n):
                f_n(na)

    def check():
        with P.no_grad():
            rp = f_p(*p_in)
        with torch.no_grad():
            rt = f_t(*t_in)
        if rp.requires_grad or rt.requires_grad:
            raise AssertionError(f"{key}: output requires grad under no_grad")
        return {"prunus": [rp], "torch": [rt], "numpy": [np.asarray(f_n(*n_in))]}

    return {
        "name": f"{key}_fwd", "group": "dispatch", "title": title,
        "contenders": {"prunus": run_p, "torch": run_t, "numpy": run_n}, "check": check,
    }


# -- group 2: LeNet-300-100 ------------------------------------------------------------------

SIZES = (784, 300, 100, 10)
BATCH = 128


def mlp_data():
    rng = np.random.default_rng(1)
    params = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        bound = 1.0 / fan_in**0.5  # nn.Linear's default init range
        params.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32))
        params.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
    x = rng.random((BATCH, SIZES[0]), dtype=np.float32)  # pixel-like values in [0, 1)
    labels = rng.integers(0, SIZES[-1], BATCH).astype(np.int64)
    return params, x, labels


def logits_formula(x, W1, b1, W2, b2, W3, b3, relu):
    """Written once, run on prunus and torch tensors alike: the 'same formula' contenders."""
    h = relu(x @ W1.T + b1)
    h = relu(h @ W2.T + b2)
    return h @ W3.T + b3


def loss_formula(logits, labels, logsumexp):
    return (logsumexp(logits, 1) - logits.gather(1, labels[:, None]).squeeze(1)).mean()


def logits_prunus_f(x, W1, b1, W2, b2, W3, b3):
    h = P.relu(P.linear(x, W1, b1))
    h = P.relu(P.linear(h, W2, b2))
    return P.linear(h, W3, b3)


def logits_torch_f(x, W1, b1, W2, b2, W3, b3):
    h = F.relu(F.linear(x, W1, b1))
    h = F.relu(F.linear(h, W2, b2))
    return F.linear(h, W3, b3)


class NumpyMLP:
    """LeNet-300-100 forward and backward by hand: the floor a NumPy framework can reach."""

    def __init__(self, params, x, labels):
        self.W1, self.b1, self.W2, self.b2, self.W3, self.b3 = params
        self.x, self.labels = x, labels
        self.rows = np.arange(len(labels))

    def forward(self, x):
        h1 = x @ self.W1.T
        h1 += self.b1
        np.maximum(h1, 0, out=h1)
        h2 = h1 @ self.W2.T
        h2 += self.b2
        np.maximum(h2, 0, out=h2)
        logits = h2 @ self.W3.T
        logits += self.b3
        return h1, h2, logits

    def step(self):
        x, labels, rows = self.x, self.labels, self.rows
        h1, h2, z = self.forward(x)
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, labels]))
        g = e / s  # d loss / d logits = (softmax - onehot) / batch
        g[rows, labels] -= 1.0
        g *= np.float32(1.0 / len(labels))
        gW3 = g.T @ h2
        gb3 = g.sum(axis=0)
        g2 = g @ self.W3
        g2 *= h2 > 0
        gW2 = g2.T @ h1
        gb2 = g2.sum(axis=0)
        g1 = g2 @ self.W2
        g1 *= h1 > 0
        gW1 = g1.T @ x
        gb1 = g1.sum(axis=0)
        return loss, (gW1, gb1, gW2, gb2, gW3, gb3)


def mlp_cases():
    params, x_np, lab_np = mlp_data()
    pp = [P.tensor(a, requires_grad=True) for a in params]
    px, plab = P.tensor(x_np), P.tensor(lab_np)
    tp = [torch.from_numpy(a.copy()).requires_grad_() for a in params]
    tx, tlab = torch.from_numpy(x_np.copy()), torch.from_numpy(lab_np.copy())
    tpf = [torch.from_numpy(a.copy()).requires_grad_() for a in params]
    ppf = [P.tensor(a, requires_grad=True) for a in params]
    nmlp = NumpyMLP([a.copy() for a in params], x_np.copy(), lab_np.copy())

    def step_prunus():
        loss = loss_formula(logits_formula(px, *pp, P.relu), plab, P.logsumexp)
        loss.backward()
        return loss

    def step_torch():
        loss = loss_formula(logits_formula(tx, *tp, torch.relu), tlab, torch.logsumexp)
        loss.backward()
        return loss

    def step_prunus_f():
        loss = P.cross_entropy(logits_prunus_f(px, *ppf), plab)
        loss.backward()
        return loss

    def train_prunus_f(n):
        for _ in range(n):
            step_prunus_f()
            for p in ppf:
                p.grad = None

    def infer_prunus_f(n):
        with P.no_grad():
            for _ in range(n):
                logits_prunus_f(px, *ppf)

    def step_torch_f():
        loss = F.cross_entropy(logits_torch_f(tx, *tpf), tlab)
        loss.backward()
        return loss

    def train_prunus(n):
        for _ in range(n):
            step_prunus()
            for p in pp:
                p.grad = None

    def train_torch(n):
        for _ in range(n):
            step_torch()
            for p in tp:
                p.grad = None

    def train_torch_f(n):
        for _ in range(n):
            step_torch_f()
            for p in tpf:
                p.grad = None

    def train_numpy(n):
        for _ in range(n):
            nmlp.step()

    def check_train():
        vals = {}
        for who, step, ps in (("prunus", step_prunus, pp), ("torch", step_torch, tp),
                              ("torch_F", step_torch_f, tpf), ("prunus_F", step_prunus_f, ppf)):
            loss = step()
            vals[who] = [loss.detach()] + [p.grad for p in ps]
            for p in ps:
                p.grad = None
        loss, grads = nmlp.step()
        vals["numpy"] = [np.asarray(loss)] + list(grads)
        return vals

    def infer_prunus(n):
        with P.no_grad():
            for _ in range(n):
                logits_formula(px, *pp, P.relu)

    def infer_torch(n):
        with torch.no_grad():
            for _ in range(n):
                logits_formula(tx, *tp, torch.relu)

    def infer_torch_f(n):
        with torch.no_grad():
            for _ in range(n):
                logits_torch_f(tx, *tpf)

    def infer_numpy(n):
        for _ in range(n):
            nmlp.forward(nmlp.x)

    def check_infer():
        with P.no_grad():
            lp = logits_formula(px, *pp, P.relu)
        with torch.no_grad():
            lt = logits_formula(tx, *tp, torch.relu)
            lf = logits_torch_f(tx, *tpf)
            lpf = logits_prunus_f(px, *ppf)
        return {"prunus": [lp], "torch": [lt], "torch_F": [lf], "prunus_F": [lpf],
                "numpy": [nmlp.forward(nmlp.x)[2]]}

    return [
        {"name": "mlp_train_b128", "group": "mlp", "title": "LeNet-300-100 train step, b128",
         "contenders": {"prunus": train_prunus, "torch": train_torch,
                        "torch_F": train_torch_f, "prunus_F": train_prunus_f, "numpy": train_numpy},
         "check": check_train, "blas_threads": True},
        {"name": "mlp_infer_b128", "group": "mlp", "title": "LeNet-300-100 inference, b128",
         "contenders": {"prunus": infer_prunus, "torch": infer_torch,
                        "torch_F": infer_torch_f, "prunus_F": infer_prunus_f, "numpy": infer_numpy},
         "check": check_infer, "blas_threads": True},
    ]


# -- running and reporting -------------------------------------------------------------------

CONTENDER_NOTES = {
    "prunus": "prunus eager",
    "torch": "PyTorch eager, the same formula as prunus",
    "torch_F": "PyTorch eager with F.linear / F.relu / F.cross_entropy",
    "prunus_F": "prunus eager with prunus.linear / relu / prunus.cross_entropy (fused primitives)",
    "numpy": "hand-written NumPy (no framework): the limit",
}


def ratios(res: dict, key: str = "median_us") -> dict:
    pr = res["prunus"][key]
    out = {}
    for ref in ("torch", "torch_F", "numpy"):
        if ref in res:
            r = res[ref][key]
            out[f"prunus_over_{ref}"] = pr / r          # time ratio: > 1 means prunus slower
            out[f"speed_vs_{ref}"] = r / pr              # > 1 means prunus faster
    if "prunus_F" in res and "torch_F" in res:
        out["prunus_F_speed_vs_torch_F"] = res["torch_F"][key] / res["prunus_F"][key]
        out["prunus_F_speed_vs_torch"] = res["torch"][key] / res["prunus_F"][key]
    if "numpy" in res and "prunus_F" in res:
        out["prunus_F_share_of_numpy"] = res["numpy"][key] / res["prunus_F"][key]
    if "numpy" in res and "torch" in res:
        out["numpy_speed_vs_torch"] = res["torch"][key] / res["numpy"][key]
    return out


def fmt_us(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.1f}"
    return f"{v:.2f}"


def print_table(results: dict, machine: dict, cfg: dict) -> None:
    print()
    print(f"prunus core benchmark  threads={cfg['threads']}  rounds={cfg['rounds']}  "
          f"round_time={cfg['round_time_s']}s  cpus={machine['cpu_count']}  "
          f"numpy {machine['numpy_version']} (OpenBLAS threads {machine['openblas_threads']})  "
          f"torch {machine['torch_version']} (threads {machine['torch_threads']})")
    print("times are µs per iteration: median over rounds [min–max over rounds]; "
          "x torch = torch median / this median (> 1: faster than torch)")
    head = (f"{'benchmark':<32} {'contender':<8} {'median µs':>10}  {'spread (min–max)':>21} "
            f"{'x torch':>8} {'/ torch':>8}")
    print(head)
    print("-" * len(head))
    for r in results.values():
        res = r["contenders"]
        ref = res["torch"]["median_us"]
        first = True
        for who, m in res.items():
            label = r["title"] if first else ""
            first = False
            spread = f"{fmt_us(m['min_us'])}–{fmt_us(m['max_us'])}"
            pct = 100 * (m["max_us"] - m["min_us"]) / m["median_us"]
            print(f"{label:<32} {who:<8} {fmt_us(m['median_us']):>10}  {spread:>14} ({pct:3.0f}%)"
                  f" {ref / m['median_us']:>8.2f} {m['median_us'] / ref:>8.2f}")
    print()
    print("summary (ratios of medians; speed vs torch = torch time / prunus time, "
          "> 1: prunus faster)")
    noisy = False
    for r in results.values():
        q = r["ratios"]
        line = (f"  {r['title']:<32} prunus/torch {q['prunus_over_torch']:6.2f}   "
                f"speed vs torch {q['speed_vs_torch']:5.2f}")
        if "speed_vs_torch_F" in q:
            line += f"   vs torch F {q['speed_vs_torch_F']:5.2f}"
        if "speed_vs_numpy" in q:
            line += f"   share of numpy limit {100 * q['speed_vs_numpy']:5.1f}%"
        if "prunus_F_speed_vs_torch_F" in q:
            line += (f"\n  {'':<32} prunus_F vs torch_F {q['prunus_F_speed_vs_torch_F']:5.2f}   "
                     f"share of numpy limit {100 * q['prunus_F_share_of_numpy']:5.1f}%")
        other = r.get("other_load_cpus")
        if other is not None and other > NOISY:
            line += f"   [noisy: other processes kept {other:.2f} CPUs busy]"
            noisy = True
        print(line)
    if noisy:
        print("warning: other processes were using the CPUs during some benchmarks; their numbers "
              "are not trustworthy (compare the min columns, or rerun on a quiet machine)")
    print()


def profile_prunus(cases: dict, iters: int, top: int) -> dict:
    """cProfile the prunus MLP training step and the 1-element add fwd+bwd: µs per step."""
    import cProfile
    import pstats

    out = {}
    jobs = []
    if "mlp_train_b128" in cases:
        jobs.append(("mlp_train_b128", cases["mlp_train_b128"]["contenders"]["prunus"], iters))
    if "add_fwd_bwd_1" in cases:
        jobs.append(("add_fwd_bwd_1", cases["add_fwd_bwd_1"]["contenders"]["prunus"], iters * 20))
    for name, run, n in jobs:
        run(max(1, n // 10))  # warm
        t0 = time.perf_counter()
        run(n)
        plain = (time.perf_counter() - t0) / n * 1e6
        prof = cProfile.Profile()
        prof.enable()
        run(n)
        prof.disable()
        st = pstats.Stats(prof)
        total = st.total_tt / n * 1e6
        rows = []
        for (fname, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():
            if fname == "~":
                where = func
            else:
                short = (os.path.relpath(fname, REPO) if fname.startswith(REPO)
                         else os.path.basename(fname))
                where = f"{short}:{line}({func})"
            rows.append({"function": where, "calls_per_step": nc / n,
                         "tottime_us_per_step": tt / n * 1e6, "cumtime_us_per_step": ct / n * 1e6})
        rows.sort(key=lambda r: -r["cumtime_us_per_step"])
        by_self = sorted(rows, key=lambda r: -r["tottime_us_per_step"])
        out[name] = {"steps": n, "plain_us_per_step": plain, "profiled_us_per_step": total,
                     "top_cumulative": rows[:top], "top_self": by_self[:top]}
        print(f"profile of prunus {name}: {plain:.1f} µs/step unprofiled, {total:.1f} µs/step "
              f"under cProfile ({n} steps); µs per step:")
        print(f"  {'cum µs':>9} {'self µs':>9} {'calls':>7}  function   (top by cumulative)")
        for r in rows[:top]:
            print(f"  {r['cumtime_us_per_step']:9.1f} {r['tottime_us_per_step']:9.1f} "
                  f"{r['calls_per_step']:7.1f}  {r['function']}")
        print(f"  {'self µs':>9} {'cum µs':>9} {'calls':>7}  function   (top by self time)")
        for r in by_self[:top]:
            print(f"  {r['tottime_us_per_step']:9.1f} {r['cumtime_us_per_step']:9.1f} "
                  f"{r['calls_per_step']:7.1f}  {r['function']}")
        print()
    return out


def save_results(args, kind: str, started, payload: dict) -> None:
    """Write payload to --out or benchmarks/results/<kind>-<date>-t<threads>.json (unless
    --no-json) and say where."""
    if args.no_json:
        return
    path = args.out or os.path.join(
        HERE, "results", f"{kind}-{started.strftime('%Y-%m-%d-%H%M%S')}-t{args.threads}.json")
    write_json(path, payload)
    print(f"wrote {os.path.relpath(path)}")


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    set_thread_env(args.threads)
    import_frameworks(args.threads)

    machine = machine_info(args.threads)
    blas_threads = machine["openblas_threads"]
    if machine["torch_threads"] != args.threads or blas_threads not in (None, args.threads):
        print(f"warning: asked for {args.threads} threads, got torch {machine['torch_threads']}, "
              f"OpenBLAS {machine['openblas_threads']}", file=sys.stderr)
    started = datetime.datetime.now().astimezone()
    cfg = {"threads": args.threads, "rounds": args.rounds, "round_time_s": args.round_time,
           "quick": args.quick, "wait_quiet_s": args.wait_quiet,
           "gap_s": args.gap, "batch": BATCH, "mlp_sizes": list(SIZES), "dtype": "float32",
           "gc": "enabled (as in real use)", "contenders": CONTENDER_NOTES}

    cases = dispatch_cases() + mlp_cases()
    picked = select([c["name"] for c in cases], args.only, "benchmark")
    if picked is None:
        return 2
    cases = [c for c in cases if c["name"] in picked]

    checks, results = {}, {}
    for c in cases:  # equal work first: every contender computes the same values
        vals = c["check"]()
        vals = {k: v for k, v in vals.items() if k in c["contenders"] or k == "numpy"}
        checks[c["name"]] = assert_close(c["name"], vals, "torch")
    t_start = time.perf_counter()
    waited = 0.0
    for c in cases:
        waited += wait_quiet(args.wait_quiet)
        gap = args.gap if c.get("blas_threads") else 0.0
        res, other = measure(c["contenders"], args.rounds, args.round_time, gap)
        results[c["name"]] = {"group": c["group"], "title": c["title"], "unit": "us_per_iteration",
                              "contenders": res, "ratios": ratios(res),
                              "ratios_of_min": ratios(res, "min_us"),
                              "other_load_cpus": None if other is None else round(other, 3)}
        print(f"  {c['title']:<32} done", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start
    cfg["waited_for_quiet_s"] = round(waited, 1)
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    print_table(results, machine, cfg)
    profile = None
    if args.profile:
        profile = profile_prunus({c["name"]: c for c in cases},
                                 iters=30 if args.quick else 300, top=25)

    payload = {
        "schema": SCHEMA,
        "date": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 2),
        "machine": machine,
        "config": cfg,
        "checks": checks,
        "results": results,
    }
    if profile is not None:
        payload["profile"] = profile
    save_results(args, "core", started, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
