"""Streamed EM as N grows: seconds per iteration and the peak memory a fit adds, N = 1e4 .. 1e7.

The data (D = 8, a mixture of K = 8 anisotropic blobs, float32) come from ``BlobStream``, an
``IterableDataset`` that GENERATES every batch when it is read, seeded per batch, so each pass
yields the same rows and the data are never held (1e7 x 8 float32 would be 320 MB).
``gmmlib.fit_em`` reads it once per iteration and keeps only a block at a time.

Each cell runs in its own subprocess (``--worker``), which: imports torch and gmmlib, sets its
thread count, runs a tiny warm-up fit of the same kind, reads ``ru_maxrss`` (the process's peak
resident memory so far), times one pass of the loader alone (*loader s/pass*: the data's
generation cost, which the reader may subtract), runs ``fit_em`` (K = 8, tol=0, ``max_iter =
iters + 1``, k-means start from a reservoir sample of ``init_sample`` = 20 000 rows) and reads
``ru_maxrss`` again. *s/it* is ``FitHistory.seconds_per_step``: the mean gap between consecutive
iterations' records, i.e. an M-step and the next full pass, the first pass and the
initialisation excluded. *peak MB added* is the rise of ``ru_maxrss`` over the fit (and the
loader pass), in MB of 1e6 bytes. The *tensor* rows fit the same data held in memory, generated
after the baseline, so their peak includes the data (N x 8 x 4 bytes) and EM's shifted copy;
they start from k-means on the first 20 000 rows (``gmmlib.initialize``, then ``init=None``),
because ``fit_em`` ignores ``init_sample`` for in-memory data and runs k-means on all N rows
(at 1e6: 20-50 s and ~470 MB on this machine, for a start the streams get in under a second).

Every configuration runs ``--repeat`` times (in alternation); cells give min-max over repeats.
On a busy machine the 2-thread cells are dominated by the other processes (see
``bench_contention.py``): read them with the *load* column.

    python benchmarks/bench_scale.py              # -> benchmarks/results/scale.md (~4 min idle)
    python benchmarks/bench_scale.py --repeat 2   # ranges over two runs of every cell
    python benchmarks/bench_scale.py --sizes 1e4 1e5 --threads 1 --types full   # prints only
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _report import publish  # benchmarks/, on the path when a script here runs or is imported

SIZES = [10_000, 100_000, 1_000_000, 10_000_000]
D, K = 8, 8
BATCH = 1 << 16  # rows per generated batch (2 MB of float32)
RESULTS = Path(__file__).parent / "results" / "scale.md"
TENSOR_N = 1_000_000  # the in-memory row, for contrast


class BlobStream(torch.utils.data.IterableDataset):
    """Rows ``start..stop-1`` (default all ``n``) of a data set of ``n`` rows (n, D) from a
    mixture of ``k`` anisotropic Gaussian blobs (centres 3 standard deviations apart), generated
    batch by batch: batch ``b`` (rows ``b*batch`` on) is drawn from a generator seeded with
    ``(seed, b)``, so every pass yields the same rows, a shard yields exactly its rows of the
    whole, and nothing is held between batches."""

    def __init__(self, n, d=D, k=K, *, batch=BATCH, seed=0, dtype=torch.float32, start=0,
                 stop=None):
        super().__init__()
        self.n, self.d, self.k, self.batch, self.seed, self.dtype = n, d, k, batch, seed, dtype
        self.start, self.stop = start, n if stop is None else stop
        rng = np.random.default_rng(seed)
        self.centres = torch.as_tensor(rng.normal(scale=3.0, size=(k, d)), dtype=dtype)  # (K, D)
        self.scales = torch.as_tensor(rng.uniform(0.5, 1.5, size=(k, d)), dtype=dtype)  # (K, D)

    def shard(self, rank, world):
        """This rank's contiguous share of the rows (sizes differ by at most one)."""
        n = self.stop - self.start
        return BlobStream(self.n, self.d, self.k, batch=self.batch, seed=self.seed,
                          dtype=self.dtype, start=self.start + rank * n // world,
                          stop=self.start + (rank + 1) * n // world)

    def make(self, b):
        """Batch ``b`` of the whole data set, (n_b, D)."""
        n = min(self.batch, self.n - b * self.batch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        labels = torch.randint(self.k, (n,), generator=g)  # (n,)
        noise = torch.randn(n, self.d, generator=g, dtype=self.dtype)  # (n, D)
        return noise.mul_(self.scales[labels]).add_(self.centres[labels])

    def __len__(self):
        return self.stop - self.start

    def __iter__(self):
        for b in range(self.start // self.batch, -(-self.stop // self.batch)):
            x = self.make(b)
            a = b * self.batch
            yield x[max(self.start - a, 0):self.stop - a]

    def tensor(self):
        """The same rows, in memory (N, D), filled batch by batch (no second copy)."""
        X = torch.empty(len(self), self.d, dtype=self.dtype)
        a = 0
        for x in self:
            X[a:a + x.shape[0]] = x
            a += x.shape[0]
        return X


def maxrss_mb() -> float:
    """This process's peak resident memory so far, MB of 1e6 bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def measure(N, family="full", source="stream", threads=1, iters=3, init_sample=20_000,
            dtype=torch.float32):
    """One cell, in THIS process: the warm-up fit, the baseline, the loader pass, the fit.
    Returns a dict of numbers (see the module docstring)."""
    import gmmlib
    warnings.filterwarnings("ignore", category=gmmlib.ConvergenceWarning)
    torch.set_num_threads(threads)

    def fit(data, max_iter):
        model = gmmlib.GaussianMixture(K, D, family, dtype=dtype)
        if isinstance(data, torch.Tensor):  # fit_em would start from k-means on ALL rows
            gmmlib.initialize(model, data[:init_sample], "kmeans", generator=0)
            return gmmlib.fit_em(model, data, max_iter=max_iter, tol=0.0, init=None,
                                 progress=False)
        return gmmlib.fit_em(model, data, max_iter=max_iter, tol=0.0, generator=0,
                             init_sample=init_sample, progress=False)

    warm = BlobStream(min(N, 4 * BATCH), dtype=dtype, seed=1)
    fit(warm if source == "stream" else warm.tensor(), 2)
    base = maxrss_mb()
    stream = BlobStream(N, dtype=dtype)
    t = time.perf_counter()
    if source == "stream":
        for _ in stream:
            pass
        data = stream
    else:
        data = stream.tensor()
    loader = time.perf_counter() - t
    t = time.perf_counter()
    h = fit(data, iters + 1)
    wall = time.perf_counter() - t
    return {"N": N, "family": family, "source": source, "threads": threads, "iters": iters,
            "s_per_it": h.seconds_per_step, "first_pass": h.time[0], "fit_wall": wall,
            "loader": loader, "peak_mb": maxrss_mb() - base, "base_mb": base,
            "nll": h.loss[-1], "data_mb": N * D * torch.finfo(dtype).bits / 8 / 1e6}


def run_cell(cell: dict, timeout=900) -> dict:
    """``measure(**cell)`` in a fresh subprocess (so each peak is its own)."""
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cell)],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"worker {cell} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def iters_for(N: int) -> int:
    """Timed iterations: more where they are cheap."""
    return 8 if N <= 1e4 else 5 if N <= 1e5 else 3 if N <= 1e6 else 2


def cells(sizes, types, threads, tensor_n):
    out = []
    for th in threads:
        for fam in types:
            for N in sizes:
                out.append(dict(N=N, family=fam, source="stream", threads=th, iters=iters_for(N)))
            if tensor_n:
                out.append(dict(N=tensor_n, family=fam, source="tensor", threads=th,
                                iters=iters_for(tensor_n)))
    return out


def _rng(values, fmt):
    lo, hi = min(values), max(values)
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a}–{b}"


def table(results):
    """Markdown table lines from the list of per-repeat results (one list per cell)."""
    header = ["N", "data", "covariance", "threads", "iters timed", "EM s/it", "loader s/pass",
              "EM − loader, s per 1e6 rows (best)", "peak MB added", "data MB", "load (1 min)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for runs in results:
        r0 = runs[0]
        stream = r0["source"] == "stream"
        best = min(r["s_per_it"] for r in runs) - (min(r["loader"] for r in runs) if stream else 0)
        lines.append("| " + " | ".join([
            f"{r0['N']:.0e}".replace("e+0", "e"), r0["source"], r0["family"], str(r0["threads"]),
            str(r0["iters"]), _rng([r["s_per_it"] for r in runs], ".3g"),
            _rng([r["loader"] for r in runs], ".2g") if stream else "— (held)",
            format(1e6 * best / r0["N"], ".3g"), _rng([r["peak_mb"] for r in runs], ".0f"),
            f"{r0['data_mb']:.0f} ({'never held' if stream else 'held'})",
            _rng([r["load"] for r in runs], ".1f") if "load" in r0 else "?",
        ]) + " |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", nargs="+", type=lambda s: int(float(s)), default=None)
    ap.add_argument("--types", nargs="+", default=["full", "diagonal"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--tensor-n", type=lambda s: int(float(s)), default=None,
                    help=f"N of the in-memory contrast row (default {TENSOR_N:.0e}; 0: none)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of every cell, alternating "
                    "(ranges shown; 2 takes ~7 min on 2 idle cores, far longer on busy ones)")
    ap.add_argument("--json", default=None, help="also save every run's numbers to this file")
    ap.add_argument("--out", default=None, help=f"Markdown file (default {RESULTS} for a full "
                    "run; --sizes only prints)")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return None

    sizes = args.sizes or SIZES
    tensor_n = TENSOR_N if args.tensor_n is None else args.tensor_n
    out = Path(args.out) if args.out else (None if args.sizes else RESULTS)
    todo = cells(sizes, args.types, args.threads, tensor_n)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    results = [[] for _ in todo]
    for rep in range(args.repeat):
        for i, cell in enumerate(todo):
            r = run_cell(cell)
            r["load"] = os.getloadavg()[0]
            results[i].append(r)
            print(f"[{rep + 1}/{args.repeat}] {cell} -> s/it {r['s_per_it']:.4g}, loader "
                  f"{r['loader']:.3g} s, peak +{r['peak_mb']:.1f} MB "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()
    import gmmlib  # noqa: F401  (for its version line only)
    lines = ["# Streamed EM at scale: seconds per iteration and peak memory added", "",
             f"D = {D}, K = {K}, float32 · k-means start from a reservoir sample of 20 000 rows · "
             f"tol=0; *EM s/it* = FitHistory.seconds_per_step over *iters timed* iterations "
             f"(first pass and start excluded) · batches of {BATCH} generated rows · each cell in "
             f"its own process, {args.repeat} run(s) each (min–max) · torch {torch.__version__} · "
             f"numpy {np.__version__} · Python {platform.python_version()} · "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "",
             f"Load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load0)} at the start, "
             f"{', '.join(f'{v:.2f}' for v in load1)} at the end (above the thread count means "
             f"other processes shared the cores). Run took {elapsed:.0f} s.", ""]
    lines += table(results)
    lines += ["", "*loader s/pass*: one pass of the generating `IterableDataset` alone, which "
              "every EM pass also pays. *EM − loader (best)*: the fastest run's s/it less the "
              "fastest loader pass, per million rows: flat when the time is linear in N. *load*: "
              "the 1-minute load average as each run ended (above the thread count: the cores "
              "were shared). *peak MB added*: ru_maxrss after the fit minus after import and a "
              "warm-up fit; for `tensor` it includes the data and EM's shifted copy of them "
              "(2 x data MB). Regenerate with `python benchmarks/bench_scale.py`."]
    text = "\n".join(lines) + "\n"
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    publish(text, out)
    return results


if __name__ == "__main__":
    main()
