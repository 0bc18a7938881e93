"""What the file-format fuzz tests share (program files in tests/graph, .pnz files in
tests/compression): byte-level mutations, structural edits of a JSON tree, and a guard that turns
a hanging loader into a failure. tests/ is on pytest's pythonpath."""

import contextlib
import json
import signal
import time


def pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def json_paths(obj) -> list:
    """The path (keys from the root) of every node of a JSON tree, the root's () included."""
    out, stack = [], [((), obj)]
    while stack:
        path, o = stack.pop()
        out.append(path)
        if isinstance(o, dict):
            stack.extend(((*path, k), v) for k, v in o.items())
        elif isinstance(o, list):
            stack.extend(((*path, i), v) for i, v in enumerate(o))
    return out


def get_path(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def mutate_json(rng, obj, paths, pool, keys, strings):
    """One structural edit at a random one of `paths` (paths into obj): replace by a value from
    `pool`, delete, add a key from `keys` or an item, renumber, rename to one of `strings`, or copy
    another part over it. Returns the (new) root."""
    path = pick(rng, paths)
    try:
        parent, key = (get_path(obj, path[:-1]), path[-1]) if path else (None, None)
        old = get_path(obj, path)
    except (KeyError, IndexError, TypeError):  # an earlier edit moved it
        return obj
    if path and not isinstance(parent, (dict, list)):  # ... or replaced its parent
        return obj
    if parent is None:
        return pick(rng, [[], {}, None, 0, "x"]) if rng.random() < 0.4 else obj
    r = rng.random()
    if r < 0.3:
        parent[key] = json.loads(json.dumps(pick(rng, pool)))  # a fresh copy
    elif r < 0.45:
        del parent[key]
    elif r < 0.55:
        if isinstance(old, dict):
            old[pick(rng, keys)] = 1
        elif isinstance(old, list):
            old.append(old[0] if old and rng.random() < 0.5 else int(rng.integers(-2, 100)))
        else:
            parent[key] = [old]
    elif r < 0.85 and isinstance(old, int) and not isinstance(old, bool):
        parent[key] = pick(rng, [old + 1, old - 1, -old - 1, old * 1000 + 7, 0, old // 2, 2**40,
                                 old + 8, old - 8])
    elif r < 0.92 and isinstance(old, str):
        parent[key] = pick(rng, strings) if rng.random() < 0.5 else old[::-1] + "x"
    else:
        other = pick(rng, paths)
        if other and other[: len(path)] != path and path[: len(other)] != other:
            try:
                parent[key] = json.loads(json.dumps(get_path(obj, other)))
            except (KeyError, IndexError, TypeError):
                parent[key] = None
        else:
            parent[key] = None
    return obj


def mutate_bytes(rng, data: bytes, kind: int, header_end: int) -> bytes:
    """kind 0: 1-4 byte flips, half of them before header_end; 1: a truncation; 2: 1-16 bytes
    inserted or deleted somewhere."""
    if kind == 0:
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            hi = header_end if rng.random() < 0.5 else len(b)
            b[int(rng.integers(hi))] ^= int(rng.integers(1, 256))
        return bytes(b)
    if kind == 1:
        return data[: int(rng.integers(len(data)))]
    i = int(rng.integers(len(data)))
    if rng.random() < 0.5:
        return data[:i] + rng.bytes(int(rng.integers(1, 17))) + data[i:]
    return data[:i] + data[i + int(rng.integers(1, 17)) :]


@contextlib.contextmanager
def hang_guard(seconds):
    """Fail instead of hanging: SIGALRM after `seconds` (where the platform has it)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(*_):
        raise TimeoutError(f"the fuzz loop ran past {seconds} s: a load hangs")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fuzz(load, fuzzer, n_files, expected, seconds):
    """Load n_files mutations (kind i % fuzzer.KINDS) under a hang guard. Returns (outcomes,
    summary, unexpected): outcomes counts {(kind, "loaded" or the exception's class name)};
    `expected` are the exception classes a damaged file may raise; unexpected lists the first
    five others as (file, kind, repr)."""
    kinds = fuzzer.KINDS
    outcomes, unexpected, slowest = {}, [], 0.0
    t_start = time.perf_counter()
    with hang_guard(seconds):
        for i in range(n_files):
            data = fuzzer.mutate(i % kinds)
            t0 = time.perf_counter()
            try:
                load(data)
                outcome = "loaded"
            except expected as e:
                outcome = type(e).__name__
            except Exception as e:  # noqa: BLE001 - what the fuzz tests look for
                outcome = type(e).__name__
                if len(unexpected) < 5:
                    unexpected.append((i, i % kinds, repr(e)[:300]))
            slowest = max(slowest, time.perf_counter() - t0)
            outcomes[(i % kinds, outcome)] = outcomes.get((i % kinds, outcome), 0) + 1
    summary = (f"{n_files} files in {time.perf_counter() - t_start:.1f} s (slowest load "
               f"{slowest * 1e3:.1f} ms): {sorted(outcomes.items())}")
    return outcomes, summary, unexpected
