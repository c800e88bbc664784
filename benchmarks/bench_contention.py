"""EM on a busy machine (issue 14, item 5): gmmlib with its thread policy against scikit-learn,
with 0, 1 and 2 busy background processes, in the same run.

A laptop or a CI runner is shared. Each busy process is a pure-Python loop that keeps one core
at 100 % (as another user's job would); on this 2-core machine two of them take every core.
gmmlib's fit runs inside ``gmmlib._threads.fit_threads(N*K*D*D)`` from torch's default thread
count (``--threads`` to change it), so the policy picks the count it uses (column *threads*;
*other runnable tasks seen* is what it saw: the busy processes plus whatever else ran).
scikit-learn runs on 1 BLAS thread, its fastest at every load measured (its default 2 threads
were 1.0-24x slower), so gmmlib is compared with scikit-learn at its best. Both fit the same
data from the same start, as in ``bench_em.py``, one fit each in turn so that both see the same
load: seconds per EM iteration. scikit-learn fits ``--iters`` iterations or more and gmmlib as
many as make its fit about as long, scikit-learn's at least a quarter second (measured once,
quiet, on one thread each): this host's speed drifts by a quarter from one half second to the
next, and a fit of a few milliseconds, or several times shorter than the other's, can fall whole
in one time slice or one fast stretch. All loads are measured ``--rounds`` times; cells give the
range over rounds of each round's median, and the ratio scikit-learn / gmmlib (above 1: gmmlib
is faster) is taken within a round. *slowdown*: the median of each library's fits under load
(all rounds) over its median with no busy process. gmmlib's can include losing a second core it
used on the quiet machine, so it is also given on one thread (*1 thread*: fits with torch on 1
thread, timed in the same turns; its slowdown is against its own time with no busy process),
which is scikit-learn's setting. *no policy*: gmmlib on the entry thread count, as before the
policy (first round, fits of 2 iterations, one or 0.5 s).

    python benchmarks/bench_contention.py            # -> benchmarks/results/contention.md
    python benchmarks/bench_contention.py --quick    # one small size, one round, prints only

Measured, not asserted: the table is the result.
"""
import argparse
import math
import multiprocessing as mp
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture as SkGMM
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from bench_em import make_data, start, time_gmmlib, _size  # noqa: E402

import gmmlib  # noqa: E402
from gmmlib._threads import _running_elsewhere, fit_threads  # noqa: E402
from gmmlib.em import fit_em  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "contention.md"


def _burn(stop, parent, ready):
    """Keep one core busy until ``stop`` is set, or the benchmark that started it is gone (a
    killed benchmark never sets ``stop``: its burners would spin on, orphaned, for good)."""
    ready.set()
    x = 1.0
    while not stop.is_set() and os.getppid() == parent:
        for _ in range(100_000):
            x = x * 1.0000001 % 7.0


class Busy:
    """``n`` busy background processes while the block runs, entered once all of them spin: a
    spawned process first imports this module (torch, scikit-learn, gmmlib: seconds of other
    work), which a fixed wait let overlap the first fits timed under load."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        ready = [ctx.Event() for _ in range(self.n)]
        self.procs = [ctx.Process(target=_burn, args=(self.stop, os.getpid(), r), daemon=True)
                      for r in ready]
        for p in self.procs:
            p.start()
        for r in ready:
            if not r.wait(timeout=120):
                raise RuntimeError("a busy process did not start within 120 s")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for p in self.procs:
            p.join(timeout=5)


def _sklearn_fit(model0, X, iters):
    """A scikit-learn fit from gmmlib's start, as ``bench_em.time_sklearn`` times it (full)."""
    precisions = np.linalg.inv(model0.sklearn_covariances().numpy())
    sk = SkGMM(model0.n_components, covariance_type="full", max_iter=iters, tol=0.0,
               init_params="random_from_data",  # its start is replaced: skip a KMeans fit
               weights_init=model0.weights.numpy(), means_init=model0.means.numpy(),
               precisions_init=precisions)

    def fit():
        with threadpool_limits(1, user_api="blas"):
            sk.fit(X)  # each fit restarts from the *_init
    return fit


def time_cell(model0, X, iters, g_iters, repeat, budget=1.0, most=30):
    """gmmlib inside ``fit_threads``, scikit-learn and gmmlib on 1 thread, one fit each in turn
    so that all see the same load: every fit's seconds per iteration (three lists), the thread
    counts the policy chose and the other runnable tasks it saw. scikit-learn fits ``iters``
    iterations, gmmlib ``g_iters`` (:func:`matched_iterations`: fits of about equal length)."""
    Xt = torch.as_tensor(X)
    N, D = Xt.shape
    K = model0.n_components
    model = gmmlib.GaussianMixture(K, D, "full", dtype=Xt.dtype)
    sk_fit, chosen, seen = _sklearn_fit(model0, X, iters), set(), set()

    def ours():
        with fit_threads(N * K * D * D) as n:  # full covariances: the E- and M-step's N*K*D*D
            chosen.add(n)
            fit_em(model, Xt, init=None, max_iter=g_iters, tol=0.0, progress=False)

    def one_thread():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fit_em(model, Xt, init=None, max_iter=g_iters, tol=0.0, progress=False)
        finally:
            torch.set_num_threads(before)

    times, spent, runs = ([], [], []), 0.0, 0
    while runs < repeat or (spent < budget and runs < most):
        for i, (fit, n_iter) in enumerate(((ours, g_iters), (sk_fit, iters), (one_thread, g_iters))):
            if i != 1:
                model.load_state_dict(model0.state_dict())
            if i == 0:
                seen.add(_running_elsewhere())  # what the policy is about to see
            t = time.perf_counter()
            fit()
            took = time.perf_counter() - t
            times[i].append(took / n_iter)
            spent += took
        runs += 1
    return (*times, chosen, seen)


def matched_iterations(model0, X, iters, min_fit=0.25, most=400):
    """``(scikit-learn's, gmmlib's)`` iterations per fit: scikit-learn's at least ``iters`` and
    enough for a fit of ``min_fit`` seconds, gmmlib's as many as make its fit about as long
    (quiet, one thread each, the second of two fits each). A fit of a few milliseconds falls
    whole in one time slice of a shared core, or in a fast or a slow stretch of this host;
    fits of a quarter second, of equal length, average over many."""
    Xt = torch.as_tensor(X)
    model = gmmlib.GaussianMixture(model0.n_components, Xt.shape[1], "full", dtype=Xt.dtype)

    def ours():
        model.load_state_dict(model0.state_dict())
        fit_em(model, Xt, init=None, max_iter=iters, tol=0.0, progress=False)

    def second(fit):
        fit()
        t = time.perf_counter()
        fit()
        return time.perf_counter() - t

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sk_fit, ours_fit = second(_sklearn_fit(model0, X, iters)), second(ours)
    finally:
        torch.set_num_threads(before)
    sk_iters = min(most, max(iters, math.ceil(iters * min_fit / sk_fit)))
    return sk_iters, int(min(most, max(sk_iters, round(sk_iters * sk_fit / ours_fit))))


def _span(values, fmt="{:.4g}"):
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small size, one round; prints only")
    ap.add_argument("--sizes", nargs="+", type=_size, default=None, metavar="N,D,K")
    ap.add_argument("--loads", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch threads at entry to each fit (the most the policy may use); "
                         f"default torch's own, here {torch.get_num_threads()}")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2, help="fits per cell at least (more under 0.5 s)")
    ap.add_argument("--rounds", type=int, default=3, help="times the whole set of loads is measured")
    ap.add_argument("--no-fixed", dest="fixed", action="store_false",
                    help="skip the 'no policy' column (the slowest part at 2 busy processes)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sizes = args.sizes or ([(10_000, 2, 3)] if args.quick else [(10_000, 2, 3), (100_000, 16, 16)])
    rounds = 1 if args.quick else args.rounds
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)

    data, sk_iters, g_iters = {}, {}, {}
    for N, D, K in sizes:
        X = make_data(N, D, K)
        data[N, D, K] = X, start(X, K, "full")
        sk_iters[N, D, K], g_iters[N, D, K] = matched_iterations(data[N, D, K][1], X, args.iters)
    # (size, load) -> per-round medians (s/iter), per-round ratios, every fit's s/iter
    ours, theirs, single, ratio, chosen, busy, fixed, others = {}, {}, {}, {}, {}, {}, {}, []
    every = {}  # (size, load, side) -> s/iter of every fit over all rounds
    load_start, t0 = os.getloadavg(), time.perf_counter()
    for r in range(rounds):
        others.append(_running_elsewhere())  # what else ran, before this round's busy processes
        for load in args.loads:
            with Busy(load):
                for size, (X, model0) in data.items():
                    key = size, load
                    fits = time_cell(model0, X, sk_iters[size], g_iters[size], args.repeat)
                    n, seen = fits[3:]
                    for side, store, times in zip(("ours", "theirs", "single"),
                                                  (ours, theirs, single), fits[:3]):
                        store.setdefault(key, []).append(float(np.median(times)))
                        every.setdefault((*key, side), []).extend(times)
                    o, t = ours[key][-1], theirs[key][-1]
                    ratio.setdefault(key, []).append(t / o)
                    chosen.setdefault(key, set()).update(n)
                    busy.setdefault(key, set()).update(seen)
                    if args.fixed and r == 0:
                        fixed[key] = time_gmmlib(model0, X, min(args.iters, 2), 1)
                    print(f"round {r + 1} | {load} busy | {size} | threads {sorted(n)} | gmmlib {o:.4g} "
                          f"| sklearn {t:.4g} | {t / o:.2f}x | others seen {sorted(seen)}", flush=True)
    elapsed, load_end = time.perf_counter() - t0, os.getloadavg()

    header = ("| busy processes | N, D, K | other runnable tasks seen | threads | gmmlib s/iter "
              "| scikit-learn s/iter | scikit-learn / gmmlib | gmmlib slowdown | scikit-learn slowdown "
              "| gmmlib 1 thread s/iter | gmmlib 1 thread slowdown | gmmlib, no policy s/iter "
              "| iterations per fit, scikit-learn / gmmlib |")
    rows = []
    for size in data:
        for load in args.loads:
            key, quiet = (size, load), (size, 0)
            row = [str(load), ", ".join(f"{v:.0e}" if i == 0 else str(v) for i, v in enumerate(size)),
                   _span([v for v in busy[key] if v is not None] or [0], "{}"),
                   "/".join(map(str, sorted(chosen[key]))), _span(ours[key]), _span(theirs[key]),
                   _span(ratio[key], "{:.2f}x")]
            if quiet in ours:
                def slowdown(side):  # median of every fit under this load over the quiet one's
                    return np.median(every[(*key, side)]) / np.median(every[(*quiet, side)])
                row += [f"{slowdown('ours'):.2f}x", f"{slowdown('theirs'):.2f}x",
                        _span(single[key]), f"{slowdown('single'):.2f}x"]
            else:
                row += ["—", "—", _span(single[key]), "—"]
            row.append(f"{fixed[key]:.4g}" if key in fixed else "—")
            row.append(f"{sk_iters[size]} / {g_iters[size]}")
            rows.append("| " + " | ".join(row) + " |")
    text = (
        "# EM under contention: gmmlib with its thread policy against scikit-learn\n\n"
        f"Full covariances, float64, tol=0. scikit-learn fits at least {args.iters} EM "
        "iterations, enough for a quarter second, and gmmlib as many as make its one-thread fit "
        "about as long on the quiet machine (last column), so both average over the same "
        "stretches of a shared machine. At least "
        f"{args.repeat} fits per cell; {rounds} rounds over all loads; s/iter cells give the "
        "range over rounds of each round's median. "
        f"gmmlib: `fit_em` inside `fit_threads(N*K*D*D)` from {args.threads} torch threads (the "
        "column *threads* is what the policy chose, having seen the *other runnable tasks*); "
        "scikit-learn: 1 BLAS thread, its fastest; the two fit in turn. Busy processes are "
        "pure-Python loops, one core each. *slowdown*: the median s/iter of every fit under load "
        "(all rounds) over the median with none. *1 thread*: gmmlib with torch on 1 thread, in the same turns. *no policy*: gmmlib on the entry thread count, first round only, fits of "
        f"{min(args.iters, 2)} iterations. "
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"torch {torch.__version__}, scikit-learn {__import__('sklearn').__version__}. "
        f"Other runnable tasks before each round (besides this benchmark): "
        f"{', '.join('?' if v is None else str(v) for v in others)}; load average (1, 5, 15 min) "
        f"{', '.join(f'{v:.2f}' for v in load_start)} at the start, "
        f"{', '.join(f'{v:.2f}' for v in load_end)} at the end. Run took {elapsed:.0f} s. "
        "Written by `python benchmarks/bench_contention.py`.\n\n"
        + header + "\n|" + "---|" * header.count(" | ") + "---|\n" + "\n".join(rows) + "\n")
    print("\n" + text)
    out = None if args.quick and args.out is None else Path(args.out or RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
