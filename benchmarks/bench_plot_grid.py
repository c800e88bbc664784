"""Density-grid time for plotting: gmmlib's one batched log_prob against peers, same grid, same run.

Peers: scipy.stats (vectorised per component, then a log-sum-exp) and the seed project's way, a
Python loop over pixels (timed on a sample of rows and extrapolated).

    python benchmarks/bench_plot_grid.py [--n 200] [--components 5]
"""
import argparse
import time

import numpy as np
import torch
from scipy import stats
from scipy.special import logsumexp

import gmmlib
from gmmlib.plot import density_grid


def best_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--components", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    X, _, model = gmmlib.generate_data(1000, args.components, 2, 8.0, "full", seed=0)
    lim = (-10.0, 10.0)
    ours = best_of(lambda: density_grid(model, lim, lim, args.n))

    w, m, c = model.weights.numpy(), model.means.numpy(), model.covariances.numpy()
    xs = np.linspace(*lim, args.n)
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    scipy_t = best_of(lambda: logsumexp(np.stack([stats.multivariate_normal(m[k], c[k]).logpdf(grid)
                                                  for k in range(len(w))], 1) + np.log(w), axis=1))
    rows = 4
    with torch.no_grad():
        t = time.perf_counter()
        for i in range(rows * args.n):
            model.log_prob(torch.as_tensor(grid[i:i + 1]))
        loop_t = (time.perf_counter() - t) * args.n / rows

    print(f"density grid {args.n}x{args.n}, K={args.components}, float64, 2 threads")
    print("| method | seconds | ratio to gmmlib |")
    print("|---|---|---|")
    for name, t in [("gmmlib density_grid (one batched log_prob)", ours),
                    ("scipy.stats per component, vectorised", scipy_t),
                    ("python loop over pixels (seed's approach, extrapolated)", loop_t)]:
        print(f"| {name} | {t:.4f} | {t / ours:.1f}x |")


if __name__ == "__main__":
    main()
