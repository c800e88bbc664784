"""EM seconds per iteration: gmmlib.fit_em against scikit-learn's GaussianMixture, same run.

Both sides get the same data, the same starting parameters (gmmlib's k-means++ start, handed to
scikit-learn as weights_init / means_init / precisions_init, with init_params="random_from_data"
so that no KMeans fit runs inside its timed region), the same thread count
(torch.set_num_threads and threadpoolctl for NumPy's BLAS) and run ``--iters`` iterations with
tol=0, so neither stops early. Seconds per iteration = wall time of the whole fit / iterations,
best of at least ``--repeat`` fits (more for fits under 0.5 s); both sides pay their own
input checks, set-up and final E-step. GFLOP/s counts the
dominant products of one iteration (see ``flops``) against a matmul peak measured in the same
run. A CUDA column appears when a GPU is present.

    python benchmarks/bench_em.py            # the full table -> benchmarks/results/em.md
    python benchmarks/bench_em.py --quick    # two sizes, full and diag, float64; prints only
    python benchmarks/bench_em.py --sizes 1e5,64,16 --types diagonal   # any sizes; prints only
"""
import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture as SkGMM
from threadpoolctl import threadpool_limits

import gmmlib
from gmmlib.em import fit_em

SIZES = [(10_000, 2, 3), (100_000, 16, 16), (100_000, 64, 16), (1_000_000, 2, 8)]
TYPES = ["full", "tied", "diagonal", "isotropic", "shared_isotropic", "constant"]
SKLEARN = {f.name: f.sklearn_name for f in gmmlib.FAMILIES.values() if f.sklearn_name}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
RESULTS = Path(__file__).parent / "results" / "em.md"


def flops(family: str, N: int, D: int, K: int) -> float:
    """Floating-point operations of one EM iteration's dominant terms (both sides do this work).

    full: E-step X @ [P_1 … P_K] (2NKD²) + M-step scatters (2NKD²) + means (2NKD);
    tied: E-step 2ND² + scatters 2NKD² + means; diagonal families: E-step two (N,D)x(D,K)
    products (4NKD) + the scatter's two moment products (4NKD) + means (2NKD); constant: no
    scatter.
    """
    if family == "full":
        return 4.0 * N * K * D * D + 2.0 * N * K * D
    if family == "tied":
        return 2.0 * N * D * D + 2.0 * N * K * D * D + 2.0 * N * K * D
    if family == "constant":
        return 6.0 * N * K * D
    return 10.0 * N * K * D


def matmul_peak(dtype, device="cpu", n=2048, repeat=3) -> float:
    """Best GFLOP/s of an n x n matrix product."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def make_data(N, D, K, seed=0):
    """K anisotropic Gaussian clusters with centres spread 3 standard deviations apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(K, D))
    scales = rng.uniform(0.5, 1.5, size=(K, D))
    labels = rng.integers(K, size=N)
    return centres[labels] + rng.normal(size=(N, D)) * scales[labels]


def start(X, K, family):
    """gmmlib's k-means++ start (seeded from a 20k-point subsample), float64."""
    model = gmmlib.GaussianMixture(K, X.shape[1], family, dtype=torch.float64)
    gmmlib.initialize(model, X[:20_000], "kmeans++", generator=0)
    return model


def best_of(fit, repeat, setup=lambda: None, device="cpu", budget=0.5, most=15):
    """Best wall time of ``fit()`` (``setup()`` untimed before each): at least ``repeat`` runs,
    more for short fits, until ``budget`` seconds were spent or ``most`` runs (a fit of a few
    milliseconds is otherwise at the mercy of one descheduling)."""
    best, spent, runs = float("inf"), 0.0, 0
    while runs < repeat or (spent < budget and runs < most):
        setup()
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fit()
        if device == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - t
        best, spent, runs = min(best, took), spent + took, runs + 1
    return best


def time_gmmlib(model0, X, iters, repeat, device="cpu"):
    Xt = torch.as_tensor(X, device=device)
    model = gmmlib.GaussianMixture(model0.n_components, model0.n_features, model0.family.name,
                                   dtype=Xt.dtype, device=device)
    return best_of(lambda: fit_em(model, Xt, init=None, max_iter=iters, tol=0.0, progress=False),
                   repeat, setup=lambda: model.load_state_dict(model0.state_dict()),
                   device=device) / iters


def time_sklearn(model0, X, iters, repeat):
    fam = model0.family.name
    cov = model0.sklearn_covariances().numpy()
    precisions = np.linalg.inv(cov) if fam in ("full", "tied") else 1.0 / cov
    dt = X.dtype
    sk = SkGMM(model0.n_components, covariance_type=SKLEARN[fam], max_iter=iters, tol=0.0,
               init_params="random_from_data",  # its start is replaced: skip a KMeans fit
               weights_init=model0.weights.numpy().astype(dt), means_init=model0.means.numpy().astype(dt),
               precisions_init=precisions.astype(dt))
    return best_of(lambda: sk.fit(X), repeat) / iters  # each fit restarts from the *_init


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two sizes, full and diagonal, float64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="EM iterations per timed fit (tol=0)")
    ap.add_argument("--repeat", type=int, default=2, help="timed fits per side at least (more "
                    "for fits under 0.5 s); the best counts")
    ap.add_argument("--sizes", nargs="+", default=None, metavar="N,D,K", type=_size,
                    help="problem sizes instead of the standard four, e.g. 1e5,16,16")
    ap.add_argument("--types", nargs="+", default=None, choices=TYPES)
    ap.add_argument("--dtypes", nargs="+", default=None, choices=list(DTYPES))
    ap.add_argument("--out", default=None, help=f"Markdown file for the table (default {RESULTS} "
                    "for a full run; --quick only prints)")
    args = ap.parse_args(argv)

    sizes = args.sizes or (SIZES[:2] if args.quick else SIZES)
    types = args.types or (["full", "diagonal"] if args.quick else TYPES)
    dtypes = args.dtypes or (["float64"] if args.quick else list(DTYPES))
    out = Path(args.out) if args.out else (None if args.quick or args.sizes else RESULTS)
    cuda = torch.cuda.is_available()

    warnings.filterwarnings("ignore", category=gmmlib.ConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*did not converge.*")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    peaks = {name: matmul_peak(dt) for name, dt in DTYPES.items() if name in dtypes}

    header = ["N", "D", "K", "covariance", "dtype", "gmmlib s/it", "sklearn s/it", "speed-up",
              "gmmlib GFLOP/s", "% of matmul peak"]
    if cuda:
        header += ["CUDA s/it", "CUDA speed-up"]
    rows = []
    t_start = time.perf_counter()
    with threadpool_limits(limits=args.threads):
        for N, D, K in sizes:
            X64 = make_data(N, D, K)
            for fam in types:
                model0 = start(X64, K, fam)
                for dname in dtypes:
                    X = X64.astype(np.float32) if dname == "float32" else X64
                    m0 = model0 if dname == "float64" else _cast(model0, torch.float32)
                    ours = time_gmmlib(m0, X, args.iters, args.repeat)
                    theirs = time_sklearn(model0, X, args.iters, args.repeat) if fam in SKLEARN else None
                    gf = flops(fam, N, D, K) / ours / 1e9
                    row = [f"{N:.0e}".replace("e+0", "e"), D, K, fam, dname, f"{ours:.4f}",
                           f"{theirs:.4f}" if theirs else "—",
                           f"**{theirs / ours:.1f}x**" if theirs else "—",
                           f"{gf:.1f}", f"{100 * gf / peaks[dname]:.0f}%"]
                    if cuda:
                        c = time_gmmlib(m0, X, args.iters, args.repeat + 1, device="cuda")
                        row += [f"{c:.5f}", f"{theirs / c:.0f}x" if theirs else "—"]
                    rows.append(row)
                    print(" | ".join(str(v) for v in row), flush=True)
    elapsed = time.perf_counter() - t_start
    load1 = os.getloadavg()[0]

    lines = [f"# EM: gmmlib.fit_em vs scikit-learn, seconds per iteration", "",
             f"{args.threads} threads · {args.iters} iterations per fit (tol=0), best of "
             f"{args.repeat} or more fits (up to 0.5 s each side) · torch {torch.__version__} · scikit-learn "
             f"{__import__('sklearn').__version__} · numpy {np.__version__} · "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
             + (f" · CUDA: {torch.cuda.get_device_name()}" if cuda else ""), "",
             "Measured matmul peak (2048², same threads): "
             + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
             + f". Load average {load0:.2f} at the start, {load1:.2f} at the end "
             f"(above {args.threads} means other processes shared the cores). "
             f"Run took {elapsed:.0f} s.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    lines += ["", "`—`: scikit-learn has no such covariance type. Regenerate with "
              "`python benchmarks/bench_em.py`."]
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        print(f"saved to {out}")


def _size(text: str):
    """'1e5,16,16' -> (100000, 16, 16)."""
    try:
        N, D, K = (int(float(v)) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is N,D,K such as 1e5,16,16, got {text!r}") from None
    return N, D, K


def _cast(model, dtype):
    m = gmmlib.GaussianMixture(model.n_components, model.n_features, model.family.name, dtype=dtype)
    m.load_state_dict(model.state_dict())
    return m


if __name__ == "__main__":
    main()
