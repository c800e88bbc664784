"""What the variance floor costs: the same fit with ``min_variance = 1e-6`` against ``0``, same run.

With a floor ``v`` the covariance is ``L Lᵀ + v I``: every gradient step takes a QR (the Cholesky
factor of ``L Lᵀ + v I``) and its backward for the full and tied families, and every EM
iteration one more Cholesky of (K', D, D) (plus an eigendecomposition for a component the
floor binds). Without a floor neither is needed. Both columns run the same code on the same
data from the same start, alternately, ``--rounds`` times; the table gives the median
milliseconds per step or iteration and the range of the ratio over the rounds.

    python benchmarks/bench_floor.py            # the table -> benchmarks/results/floor.md
    python benchmarks/bench_floor.py --quick    # the demo size only; prints only
"""
import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

import gmmlib

RESULTS = Path(__file__).parent / "results" / "floor.md"
# (method, N, D, K, family, steps): the demo of `python -m gmmlib` and the EM benchmark's size
CASES = [("gd", 1000, 2, 5, "full", 200), ("gd", 100_000, 16, 16, "full", 5),
         ("gd", 100_000, 16, 16, "tied", 5), ("gd", 100_000, 16, 16, "diagonal", 5),
         ("em", 1000, 2, 5, "full", 50), ("em", 100_000, 16, 16, "full", 5),
         ("em", 100_000, 16, 16, "diagonal", 5)]


def time_fit(method, X, start, v, steps) -> float:
    """Milliseconds per step of one fit from ``start`` with floor ``v``."""
    model = gmmlib.GaussianMixture(start.n_components, start.n_features, start.family.name,
                                   min_variance=0.0, dtype=X.dtype)
    model.load_state_dict(start.state_dict())
    model.min_variance = v
    t = time.perf_counter()
    if method == "gd":
        gmmlib.fit_gd(model, X, iterations=steps, init=None, reset_collapsed=False, progress=False)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gmmlib.fit_em(model, X, init=None, max_iter=steps, tol=0.0, progress=False)
    return 1e3 * (time.perf_counter() - t) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cases = CASES[:1] if a.quick else CASES
    rows = []
    for method, N, D, K, family, steps in cases:
        X = gmmlib.generate_data(N, K, D, seed=0).X
        start = gmmlib.initialize(gmmlib.GaussianMixture(K, D, family, min_variance=0.0, dtype=X.dtype),
                                  X, "kmeans++", generator=0)
        time_fit(method, X, start, 1e-6, 1)  # warm-up
        on, off = [], []
        for _ in range(a.rounds):  # alternate, so drift in the machine's load hits both
            on.append(time_fit(method, X, start, 1e-6, steps))
            off.append(time_fit(method, X, start, 0.0, steps))
        ratios = sorted(x / y for x, y in zip(on, off))
        rows.append(f"| {method} | ({N:.0e}, {D}, {K}) | {family} | {statistics.median(off):.3g} | "
                    f"{statistics.median(on):.3g} | {statistics.median(ratios):.2f} "
                    f"({ratios[0]:.2f}-{ratios[-1]:.2f}) |")
        print(rows[-1], flush=True)
    head = [f"# The variance floor's cost ({time.strftime('%Y-%m-%d')})", "",
            f"torch {torch.__version__}, {a.threads} thread(s), {platform.processor() or platform.machine()}, "
            f"load average at the end {os.getloadavg()[0]:.1f}; float64; {a.rounds} alternating rounds.",
            "", "| method | (N, D, K) | family | ms/step, no floor | ms/step, floor 1e-6 | "
            "ratio: median (range) |", "|---|---|---|---|---|---|"]
    table = "\n".join(head + rows) + "\n"
    out = a.out or (None if a.quick else RESULTS)
    if out is not None:
        out.write_text(table)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
