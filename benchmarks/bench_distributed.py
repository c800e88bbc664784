"""EM across processes: 1 process against 2 (torch.distributed, gloo on 127.0.0.1), N = 1e6.

The data are ``bench_scale.BlobStream``'s (D = 8, K = 8 blobs, generated batch by batch,
seeded per batch). The single process holds all N rows in memory; each of the 2 ranks,
launched by ``python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1``
on this script (``rank-worker``), generates only its half of the batches and passes that
shard to ``fit_em(..., distributed=True)``, which all-reduces each pass's sums. Every fit
starts from the same saved model (k-means++ on the first 20 000 rows, float64; cast for
float32) with ``init=None``, runs ``iters + 1`` iterations with tol=0, and its seconds per
iteration is ``FitHistory.seconds_per_step`` (the first pass excluded; the slower rank counts).

Threads: each rank runs 1 thread; the single process runs with 1 and with 2. On a 2-core
machine the fair comparison is **2 processes x 1 thread against 1 process x 2 threads** (both
use both cores); 1 process x 1 thread shows what one core does. *max |Δ|*: the largest
absolute difference of the final weights, means and covariances between the 2-process fit and
the 1-process, 1-thread fit from the same start (the 1-process 2-thread fit's difference from
it is shown alongside: how much the summation order alone moves the result).

Every configuration runs ``--repeat`` times, alternating; cells give min-max over repeats.

    python benchmarks/bench_distributed.py                 # -> benchmarks/results/distributed.md
    python benchmarks/bench_distributed.py --n 1e5 --iters 2 --repeat 1 --out /tmp/d.md
"""
import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _report import publish  # noqa: E402
from bench_scale import BlobStream, D, K  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "distributed.md"
DTYPES = {"float64": torch.float64, "float32": torch.float32}
FAMILY = "full"
RANK_WORKER = "rank-worker"  # first argument of the script as torch.distributed.run runs it


def _fit(shard, start: dict, dtype, iters: int, distributed: bool):
    """EM from ``start`` on ``shard``; returns (seconds per iteration, final parameters)."""
    import gmmlib
    model = gmmlib.GaussianMixture(K, D, FAMILY, dtype=dtype)
    model.load_state_dict(start)
    h = gmmlib.fit_em(model, shard, init=None, max_iter=iters + 1, tol=0.0, progress=False,
                      distributed=distributed)
    params = {"weights": model.weights.detach().double(), "means": model.means.detach().double(),
              "covariances": model.covariances.detach().double()}
    return h.seconds_per_step, params, h.loss[-1]


def rank_worker(outdir: str, n: int, iters: int, dtypes: list, tag: str):
    """One rank of the 2-process fit (run by torch.distributed.run): its half of the data."""
    import torch.distributed as dist
    import gmmlib
    warnings.filterwarnings("ignore", category=gmmlib.ConvergenceWarning)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}
    for name in dtypes:
        dtype = DTYPES[name]
        shard = BlobStream(n, dtype=dtype).shard(rank, world).tensor()
        start = torch.load(Path(outdir) / f"start_{name}.pt", weights_only=False)
        dist.barrier()
        out[name] = _fit(shard, start, dtype, iters, True)
    torch.save(out, Path(outdir) / f"{tag}_rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(outdir, n, iters, dtypes, tag):
    """Launch the 2 ranks; returns per dtype (s/it of the slower rank, rank 0's parameters,
    largest parameter difference between the ranks, final loss)."""
    cmd = [sys.executable, "-W", "ignore", "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(Path(__file__).resolve()), RANK_WORKER,  # one JSON word: torchrun's parser
           json.dumps(dict(outdir=str(outdir), n=n, iters=iters, dtypes=list(dtypes), tag=tag))]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"torch.distributed.run failed:\n{r.stderr[-20000:]}")
    ranks = [torch.load(Path(outdir) / f"{tag}_rank{i}.pt", weights_only=False) for i in (0, 1)]
    out = {}
    for name in dtypes:
        (s0, p0, l0), (s1, p1, _) = ranks[0][name], ranks[1][name]
        out[name] = (max(s0, s1), p0, max_diff(p0, p1), l0)
    return out


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def make_start(n, outdir):
    """k-means++ on the first 20 000 rows, float64, saved per dtype; returns the state dicts."""
    import gmmlib
    X = BlobStream(min(n, 20_000), dtype=torch.float64).tensor()
    model = gmmlib.GaussianMixture(K, D, FAMILY, dtype=torch.float64)
    gmmlib.initialize(model, X, "kmeans++", generator=0)
    starts = {}
    for name, dt in DTYPES.items():
        m = gmmlib.GaussianMixture(K, D, FAMILY, dtype=dt)
        m.load_state_dict(model.state_dict())
        starts[name] = m.state_dict()
        torch.save(starts[name], Path(outdir) / f"start_{name}.pt")
    return starts


def _rng(values, fmt):
    a, b = format(min(values), fmt), format(max(values), fmt)
    return a if a == b else f"{a}–{b}"


def run(n=1_000_000, iters=5, repeat=2, dtypes=("float64", "float32")):
    """Every configuration ``repeat`` times; returns (rows of the table, raw results)."""
    import gmmlib
    warnings.filterwarnings("ignore", category=gmmlib.ConvergenceWarning)
    entry = torch.get_num_threads()
    raw = {name: {"1x1": [], "1x2": [], "2x1": [], "diff": [], "diff_threads": [],
                  "diff_ranks": [], "nll": [], "load": []} for name in dtypes}
    with tempfile.TemporaryDirectory() as tmp:
        starts = make_start(n, tmp)
        data = {name: BlobStream(n, dtype=DTYPES[name]).tensor() for name in dtypes}
        try:
            for rep in range(repeat):
                two = two_processes(tmp, n, iters, list(dtypes), f"r{rep}")
                for name in dtypes:
                    one = {}
                    for th in (1, 2):
                        torch.set_num_threads(th)
                        one[th] = _fit(data[name], starts[name], DTYPES[name], iters, False)
                    r = raw[name]
                    r["1x1"].append(one[1][0])
                    r["1x2"].append(one[2][0])
                    r["2x1"].append(two[name][0])
                    r["diff"].append(max_diff(two[name][1], one[1][1]))
                    r["diff_threads"].append(max_diff(one[2][1], one[1][1]))
                    r["diff_ranks"].append(two[name][2])
                    r["nll"].append(one[1][2])
                    r["load"].append(os.getloadavg()[0])
                    print(f"[{rep + 1}/{repeat}] {name}: 1x1 {one[1][0]:.4f}, 1x2 {one[2][0]:.4f}, "
                          f"2x1 {two[name][0]:.4f} s/it, max|Δ| {r['diff'][-1]:.2e} "
                          f"(load {os.getloadavg()[0]:.2f})", flush=True)
        finally:
            torch.set_num_threads(entry)
    rows = []
    for name in dtypes:
        r = raw[name]
        for label, key in (("1 x 1 thread", "1x1"), ("1 x 2 threads", "1x2"),
                           ("2 x 1 thread (gloo)", "2x1")):
            best = min(r[key])
            rows.append([f"{n:.0e}".replace("e+0", "e"), name, label, _rng(r[key], ".3g"),
                         f"{min(r['1x1']) / best:.2f}x", f"{min(r['1x2']) / best:.2f}x",
                         (_rng(r["diff"], ".1e") + f" (ranks agree to {max(r['diff_ranks']):.0e})")
                         if key == "2x1" else
                         (_rng(r["diff_threads"], ".1e") if key == "1x2" else "reference"),
                         _rng(r["load"], ".1f")])
    return rows, raw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=lambda s: int(float(s)), default=1_000_000)
    ap.add_argument("--iters", type=int, default=5, help="timed EM iterations (tol=0)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=list(DTYPES))
    ap.add_argument("--out", default=None, help=f"Markdown file (default {RESULTS} at N = 1e6)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [RANK_WORKER]:
        return rank_worker(**json.loads(argv[1]))
    args = ap.parse_args(argv)

    out = Path(args.out) if args.out else (RESULTS if args.n == 1_000_000 else None)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    rows, raw = run(args.n, args.iters, args.repeat, tuple(args.dtypes))
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()
    header = ["N", "dtype", "processes x threads", "EM s/it", "speed-up over 1 x 1 (best)",
              "speed-up over 1 x 2 (best)", "max abs Δ of final parameters vs 1 x 1",
              "load (1 min)"]
    lines = ["# EM on 1 process against 2 (torch.distributed, gloo), seconds per iteration", "",
             f"D = {D}, K = {K}, {FAMILY} covariance · same start (k-means++ on 20 000 rows), "
             f"init=None · {args.iters} timed iterations (tol=0; FitHistory.seconds_per_step, "
             f"slower rank) · {args.repeat} run(s), alternating (min–max) · data in memory, "
             f"each rank holding its half · torch {torch.__version__} · numpy {np.__version__} · "
             f"Python {platform.python_version()} · {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs", "",
             f"Load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load0)} at the start, "
             f"{', '.join(f'{v:.2f}' for v in load1)} at the end (above 2 means other processes "
             f"shared the cores). Run took {elapsed:.0f} s.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", f"On this {os.cpu_count()}-core machine the honest comparison is 2 processes "
              "x 1 thread against 1 process x 2 threads: both use both cores. 1 x 1 thread is "
              "what one core does alone. Speed-ups divide the best s/it of each configuration. "
              "*load*: the 1-minute load average after each round (above 2: the cores were "
              "shared, and the 2-thread process suffers most; see `bench_contention.py`). The "
              "1 x 2 row's |Δ| is the 2-thread single-process fit's "
              "difference from the 1-thread one (summation order alone). Regenerate with "
              "`python benchmarks/bench_distributed.py`."]
    text = "\n".join(lines) + "\n"
    publish(text, out)
    return rows, raw


if __name__ == "__main__":
    main()
