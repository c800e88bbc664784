"""EM on a busy machine (issue 14, item 5): gmmlib against scikit-learn with 0, 1 and 2 busy
background processes, in the same run.

A laptop or a CI runner is shared. Each busy process is a pure-Python loop that keeps one core
at 100 % (as another user's job would); on this 2-core machine two of them take every core.
For each load and thread count, both libraries fit the same data from the same start, as in
``bench_em.py`` (whose timing functions this reuses): seconds per EM iteration, best of several
fits, and the ratio scikit-learn / gmmlib (above 1: gmmlib is faster).

    python benchmarks/bench_contention.py            # -> benchmarks/results/contention.md
    python benchmarks/bench_contention.py --quick    # one small size, prints only

Measured, not asserted: the table is the result. Timings on a shared machine vary between
runs; the ratios, measured side by side under the same load, vary less.
"""
import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from bench_em import make_data, start, time_gmmlib, time_sklearn, _size  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "contention.md"


def _burn(stop):
    """Keep one core busy until ``stop`` is set."""
    x = 1.0
    while not stop.is_set():
        for _ in range(100_000):
            x = x * 1.0000001 % 7.0


class Busy:
    """``n`` busy background processes while the block runs."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.procs = [ctx.Process(target=_burn, args=(self.stop,), daemon=True) for _ in range(self.n)]
        for p in self.procs:
            p.start()
        time.sleep(0.5 if self.n else 0.0)  # let them reach full speed
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for p in self.procs:
            p.join(timeout=5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small size; prints only")
    ap.add_argument("--sizes", nargs="+", type=_size, default=None, metavar="N,D,K")
    ap.add_argument("--loads", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sizes = args.sizes or ([(10_000, 2, 3)] if args.quick else [(10_000, 2, 3), (100_000, 16, 16)])
    warnings.simplefilter("ignore")
    rows = []
    header = ("| busy processes | threads | N, D, K | gmmlib s/iter | scikit-learn s/iter "
              "| scikit-learn / gmmlib |")
    print(header)
    for N, D, K in sizes:
        X = make_data(N, D, K)
        model0 = start(X, K, "full")
        for load in args.loads:
            with Busy(load):
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    with threadpool_limits(threads):
                        ours = time_gmmlib(model0, X, args.iters, args.repeat)
                        theirs = time_sklearn(model0, X, args.iters, args.repeat)
                    row = (f"| {load} | {threads} | {N:.0e}, {D}, {K} | {ours:.4g} | {theirs:.4g} "
                           f"| {theirs / ours:.2f}x |")
                    print(row, flush=True)
                    rows.append(row)
    out = None if args.quick and args.out is None else Path(args.out or RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            "# EM under contention: gmmlib against scikit-learn\n\n"
            f"Full covariances, float64, {args.iters} EM iterations per timed fit (tol=0), best of "
            f"at least {args.repeat} fits; busy processes are pure-Python loops, one core each. "
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
            f"torch {torch.__version__}. Written by `python benchmarks/bench_contention.py`.\n\n"
            + header + "\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
