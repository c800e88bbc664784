"""EM on a GPU: gmmlib.fit_em with model and data on CUDA, against gmmlib and scikit-learn on
the same machine's CPUs and torchgmm on the same GPU, seconds per iteration, one run.

Every side starts from the same parameters (gmmlib's k-means++ start, as in ``bench_em.py``) and
runs ``--iters`` iterations with tol=0. The GPU sides are timed with the device's queue drained
before and after each fit. Columns:

* ``GPU s/it``: ``fit_em`` on the GPU, the data already there, best of several fits (each
  pays its input checks, set-up and final pass, as the CPU columns do);
* ``CPU s/it`` and ``sklearn s/it``: gmmlib and scikit-learn on the machine's CPUs, ``--threads``
  threads, and the GPU's speed-up over each;
* ``torchgmm`` (float32, where it imports): its Lightning module on the same GPU with the data
  there, the marginal cost of an iteration against gmmlib's marginal cost on the GPU, timed in
  interleaved rounds (``bench_em.time_with_peers``'s method: neither side's fixed cost counts);
* ``Δ``: the largest difference between the GPU fit's final means and the CPU fit's (same start,
  same iterations: the same arithmetic up to rounding), and torchgmm's from gmmlib's.

Extra rows (``--extras``): three comparisons of gmmlib's own rules on the device (the full
float32 M-step sums where the rule takes the wide product; where it does not, the centred
products in pieces of rows against one per component; blocks of 2^26 values per temporary
against 2^24); PyCave's published case, 100 EM iterations of [1M, 64] -> 64 diagonal (7.7 s on
a GTX 1080 Ti, its README), timed whole, with torchgmm's 100 epochs beside it; and a stream, 1e7
rows in host memory read by a ``DataLoader(pin_memory=True)`` in batches of 2^20 rows onto the
GPU every iteration (and the same from rows pinned beforehand), against the rows held on the GPU.

    python benchmarks/bench_cuda.py --out benchmarks/results/cuda.md   # where a GPU is
    python benchmarks/bench_cuda.py --device cpu --sizes 2000,2,3 --types full   # the code path, no GPU
"""
import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, TensorDataset

import gmmlib
from _report import publish
from bench_em import (SKLEARN, _cast, _loads, _size, best_of, flops, gmmlib_fit, load_peers,
                      make_data, matmul_peak, start, time_sklearn, time_with_peers, timed,
                      torchgmm_fit)
from gmmlib.em import fit_em

SIZES = [(100_000, 16, 16), (100_000, 64, 16), (1_000_000, 2, 8), (1_000_000, 16, 16)]
TYPES = ["full", "diagonal"]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
PYCAVE = (1_000_000, 64, 64, "diagonal", 100, 7.7)  # N, D, K, family, iterations, seconds
STREAM = (10_000_000, 8, 8, "full", 1 << 20)  # N, D, K, family, batch rows
RESULTS = Path(__file__).parent / "results" / "cuda.md"


def _n(N: int) -> str:
    """1000000 -> '1e6'."""
    return f"{N:.0e}".replace("e+0", "e").replace("e+", "e")


def _means_diff(a, b) -> float:
    return (a.means.detach().cpu().double() - b.means.detach().cpu().double()).abs().max().item()


def row(N, D, K, fam, dname, args, dev, peers):
    """One table row: every side of (N, D, K, family, dtype)."""
    X64 = make_data(N, D, K)
    model0 = start(X64, K, fam)
    X = X64.astype(np.float32) if dname == "float32" else X64
    m0 = model0 if dname == "float64" else _cast(model0, torch.float32)
    g_setup, g_fit = gmmlib_fit(m0, X, args.iters, dev)
    gpu = best_of(g_fit, args.repeat, g_setup, dev) / args.iters
    c_setup, c_fit = gmmlib_fit(m0, X, args.iters)
    cpu = best_of(c_fit, 1, c_setup) / args.iters
    sk = time_sklearn(model0, X, args.iters, 1) if fam in SKLEARN else None
    gf = flops(fam, N, D, K) / gpu / 1e9
    out = [_n(N), D, K, fam, dname, f"{gpu:.5f}",
           f"{gf:.1f} ({100 * gf / args.peaks[dname]:.0f}%)", f"{cpu:.4f}", f"**{cpu / gpu:.0f}x**",
           f"{sk:.4f}" if sk else "—", f"**{sk / gpu:.0f}x**" if sk else "—"]
    if peers:
        if dname == "float32" and "torchgmm" in peers:
            per_it, agree, _ = time_with_peers(m0, X, args.iters, args.repeat, {"torchgmm": 1},
                                               device=dev, sklearn=False)
            t, mine = per_it["torchgmm"], per_it["gmmlib marginal"]
            out += [f"{mine:.5f}", f"{t:.5f}",
                    f"**{t / mine:.1f}x**" if mine > 0 else "— (noise)", f"{agree['torchgmm']:.0e}"]
        else:
            out += ["—"] * 4
    out.append(f"{_means_diff(g_fit.model, c_fit.model):.0e}")
    return out


def pycave(args, dev, peers):
    """PyCave's case timed whole: ``iters`` EM iterations, float32, data on the GPU."""
    N, D, K, fam, iters, theirs = PYCAVE
    N, iters = args.pycave_rows or N, args.pycave_iters or iters
    X = make_data(N, D, K).astype(np.float32)
    m0 = _cast(start(X.astype(np.float64), K, fam), torch.float32)
    setup, fit = gmmlib_fit(m0, X, iters, dev)
    ours = min(timed(fit, setup, dev) for _ in range(args.repeat))
    line = (f"PyCave's case, [{_n(N)}, {D}] -> {K} {fam}, float32, {iters} EM iterations, data on "
            f"the device: gmmlib {ours:.2f} s whole (input checks, set-up, final pass included)")
    if "torchgmm" in peers:
        t_setup, t_fit = torchgmm_fit(m0, X, iters, dev)
        t = min(timed(t_fit, t_setup, dev) for _ in range(args.repeat))
        line += (f"; torchgmm {t:.2f} s on the same device (its Lightning trainer's start "
                 f"included), {t / ours:.1f}x gmmlib's time; final means {_means_diff(fit.model, t_fit.model):.0e} apart")
    return line + f"; PyCave's README: {theirs} s on a GTX 1080 Ti."


def stream(args, dev):
    """The same fit from rows on the GPU and from pinned host memory through a DataLoader."""
    N, D, K, fam, batch = STREAM
    if args.stream_rows:
        N = args.stream_rows
    X = torch.as_tensor(make_data(N, D, K).astype(np.float32))
    m0 = _cast(start(X[:20_000].double().numpy(), K, fam), torch.float32)
    setup, fit = gmmlib_fit(m0, X, args.iters, dev)
    held = best_of(fit, args.repeat, setup, dev) / args.iters
    gpu = torch.device(dev).type == "cuda"  # main() has checked that CUDA is there
    model = gmmlib.GaussianMixture(K, D, fam, dtype=torch.float32, device=dev)

    def streamed(rows):
        """s/it of the fit over a loader of ``rows``, as a user writes it: gmmlib reads such a
        loader by index (slices here), pinning each batch as the loader would."""
        loader = DataLoader(TensorDataset(rows), batch_size=batch, pin_memory=gpu)

        def fit_stream():
            fit_em(model, loader, init=None, max_iter=args.iters, tol=0.0, progress=False)
        return best_of(fit_stream, args.repeat, lambda: model.load_state_dict(m0.state_dict()),
                       dev) / args.iters
    pageable = streamed(X)
    pinned = streamed(X.pin_memory()) if gpu else pageable  # a slice of it is pinned as it is
    gb = X.numel() * 4 / 1e9
    return (f"Streamed: [{_n(N)}, {D}] -> {K} {fam}, float32, host memory read by "
            f"`DataLoader(TensorDataset(X), batch_size={batch}, pin_memory=True)` every "
            f"iteration: {pageable:.4f} s/it ({gb:.3f} GB a pass, {gb / pageable:.1f} GB/s; each "
            f"batch copied into pinned memory), {pinned:.4f} s/it with X pinned beforehand "
            f"(`X.pin_memory()`; {gb / pinned:.1f} GB/s), against {held:.4f} s/it with the rows "
            f"held on the device; final means {_means_diff(model, fit.model):.0e} apart.")


def side_by_side(args, dev, what, variants, sizes, fam="full", dname="float32"):
    """Fits of ``fam`` in ``dname`` (a key of ``DTYPES``) under each of ``variants`` ({name:
    (module, attribute, value)}, the value set for the fit, restored after), best of
    ``repeat`` interleaved, per size; each variant's time against the last one's."""
    parts = []
    for N, D, K in sizes:
        X = make_data(N, D, K).astype(dname)
        m0 = _cast(start(X.astype(np.float64), K, fam), DTYPES[dname])
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(args.repeat):
            for name, (module, attr, value) in variants.items():
                before = getattr(module, attr)
                setattr(module, attr, value)
                try:
                    setup, fit = gmmlib_fit(m0, X, args.iters, dev)
                    best[name] = min(best[name], timed(fit, setup, dev) / args.iters)
                finally:
                    setattr(module, attr, before)
        *others, last = best.values()
        ratios = ", ".join(f"{last / t:.2f}x" for t in others)
        parts.append(f"({_n(N)}, {D}, {K}) " + " against ".join(f"{t:.5f}" for t in best.values())
                     + f" s/it ({ratios})")
    return f"{what}, best of {args.repeat} interleaved: " + "; ".join(parts) + "."


def sums_ab(args, dev):
    """Full float32 with the M-step's sums about the shift in float64 (one wide product; what
    a GPU takes since 0ac1554) against the centred float32 sums (the CPU's)."""
    import gmmlib.moments as moments
    centred = lambda dtype, cuda, D, K: dtype == torch.float64  # noqa: E731 (the CPU's rule)
    sizes = [(N, D, K) for N, D, K in args.ab_sizes  # where the wide product applies
             if moments.sums_about_shift(torch.float64, True, D, K)]
    if not sizes:
        return "Full float32's M-step rules: no size given where they differ (D + 1 <= 2K)."
    return side_by_side(args, dev, "Full float32, M-step sums about the shift in float64 (a "
                        "GPU's rule) against centred in float32 (the CPU's)",
                        {"shift": (moments, "sums_about_shift", moments.sums_about_shift),
                         "centred": (moments, "sums_about_shift", centred)}, sizes)


def pieces_ab(args, dev):
    """Where full is centred on a GPU (D + 1 > 2K), its products in pieces of
    ``moments.CUDA_PIECE`` rows (since this session; 16384 too) against one per component."""
    import gmmlib.moments as moments
    sizes = [(N, D, K) for N, D, K in args.ab_sizes
             if not moments.sums_about_shift(torch.float64, True, D, K)]
    if not sizes:
        return "Centred products in pieces: no size given where full is centred on a GPU."
    pieces = list(dict.fromkeys([moments.CUDA_PIECE or 4096, 16384]))  # each once, 0 apart
    variants = {f"{p}": (moments, "CUDA_PIECE", p) for p in pieces + [0]}
    what = ("Full {} where D + 1 > 2K, the centred products in pieces of "
            + " and ".join(map(str, pieces)) + " rows against one per component"
            + (" (on the CPU: one code, CUDA_PIECE is a GPU's)" if dev == "cpu" else ""))
    return " ".join(side_by_side(args, dev, what.format(dname), variants, sizes, dname=dname)
                    for dname in ("float32", "float64"))


def blocks_ab(args, dev):
    """float32 fits in blocks of up to 2^26 values per temporary (``moments.CUDA_VALUES``, the
    cap; a smaller GPU gets fewer) against 2^24, session 15's (fewer, larger kernels)."""
    import gmmlib.moments as moments
    variants = {"2^26": (moments, "CUDA_VALUES", 1 << 26), "2^24": (moments, "CUDA_VALUES", 1 << 24)}
    what = "float32 {}, blocks of up to 2^26 values per temporary against 2^24"
    return " ".join(side_by_side(args, dev, what.format(fam), variants, args.ab_sizes, fam)
                    for fam in ("full", "diagonal"))


# the rows below the table, in their order
EXTRAS = {"stream": lambda args, dev, peers: stream(args, dev),
          "sums": lambda args, dev, peers: sums_ab(args, dev),
          "pieces": lambda args, dev, peers: pieces_ab(args, dev),
          "blocks": lambda args, dev, peers: blocks_ab(args, dev),
          "pycave": pycave}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="the accelerator's side (cpu: the code path "
                    "without a GPU)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU sides' threads")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=None, metavar="N,D,K", type=_size)
    ap.add_argument("--types", nargs="+", default=TYPES, choices=list(SKLEARN))
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--no-extras", action="store_true", help="leave out the rows below the table")
    ap.add_argument("--extras", nargs="+", default=list(EXTRAS), choices=list(EXTRAS),
                    help="which rows below the table (default: all)")
    ap.add_argument("--pycave-rows", type=int, default=None, help="rows of PyCave's case "
                    f"(default {PYCAVE[0]:.0e}; another number is no longer its case)")
    ap.add_argument("--pycave-iters", type=int, default=None, help=f"its iterations (default {PYCAVE[4]})")
    ap.add_argument("--stream-rows", type=int, default=None, help=f"rows of the stream row "
                    f"(default {STREAM[0]:.0e})")
    ap.add_argument("--ab-sizes", nargs="+", metavar="N,D,K", type=_size,
                    default=[(100_000, 64, 16), (1_000_000, 2, 8), (1_000_000, 16, 16)],
                    help="sizes of the full float32 sums' comparison")
    ap.add_argument("--out", default=None, help="Markdown file for the table (printed only "
                    "without it)")
    args = ap.parse_args(argv)
    dev = args.device
    if torch.device(dev).type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_cuda.py: no CUDA device here; --device cpu runs the code path on the CPU")
    peers, missing = load_peers()
    peers.pop("pomegranate", None)  # its GPU path is not what this table compares
    for name, why in missing.items():
        if name != "pomegranate":
            print(f"{name} is not importable, its column is left out ({why})", file=sys.stderr)
    warnings.filterwarnings("ignore", category=gmmlib.ConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*did not converge.*")
    torch.set_num_threads(args.threads)
    args.peaks = {n: matmul_peak(DTYPES[n], dev, n=8192 if dev != "cpu" else 1024)
                  for n in args.dtypes}
    load0, t0 = os.getloadavg(), time.perf_counter()
    header = ["N", "D", "K", "covariance", "dtype", "GPU s/it", "GPU GFLOP/s (% of matmul peak)",
              "CPU s/it", "GPU vs CPU", "sklearn s/it", "GPU vs sklearn"]
    if peers:
        header += ["gmmlib GPU marginal s/it", "torchgmm GPU marginal s/it", "vs torchgmm",
                   "Δmeans torchgmm"]
    header += ["Δmeans GPU vs CPU"]
    name = torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else "none (CPU)"
    peak_text = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in args.peaks.items())
    print(f"{name}; matmul peak {peak_text}", flush=True)
    rows, extras = [], []

    def table(done: bool) -> str:
        lines = [f"# EM on a GPU: gmmlib.fit_em on {name}, against the CPUs and torchgmm", "",
                 f"GPU: {name} · CPU sides: {args.threads} threads of {os.cpu_count()} "
                 f"({platform.processor() or platform.machine()}) · {args.iters} iterations per "
                 f"fit (tol=0), GPU sides best of {args.repeat} or more, CPU sides best of 1 or "
                 f"more (up to 0.5 s) · torch {torch.__version__} · scikit-learn "
                 f"{__import__('sklearn').__version__} · numpy {np.__version__}"
                 + "".join(f" · {n} {v}" for n, v in peers.items())
                 + f" · Python {platform.python_version()}", "",
                 "Measured matmul peak on the GPU side (8192², default precision, so float32 is "
                 f"IEEE, not TF32): {peak_text}. Load average {_loads(load0)} at the start, "
                 f"{_loads(os.getloadavg())} at the end. "
                 + (f"Run took {time.perf_counter() - t0:.0f} s." if done else
                    f"**Partial: written while the run went on, {time.perf_counter() - t0:.0f} s "
                    "in; it stopped before the rest.**"), "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
        lines += [""] + [f"- {e}" for e in extras]
        lines += ["", "Regenerate with `python benchmarks/bench_cuda.py --out "
                  "benchmarks/results/cuda.md` on a machine with a GPU (torchgmm's column where "
                  "it imports; `bash benchmarks/gpu_check.sh` runs the CUDA tests first)."]
        return "\n".join(lines) + "\n"

    def measured(line) -> None:  # a timeout or a crash later still leaves what was measured
        print(" | ".join(map(str, line)) if isinstance(line, list) else line, flush=True)
        if args.out:
            Path(args.out).write_text(table(done=False))

    with threadpool_limits(limits=args.threads):
        for N, D, K in args.sizes or SIZES:
            for fam in args.types:
                for dname in args.dtypes:
                    rows.append(row(N, D, K, fam, dname, args, dev, peers))
                    measured(rows[-1])
        for extra in [] if args.no_extras else args.extras:
            extras.append(EXTRAS[extra](args, dev, peers))
            measured(extras[-1])
    publish(table(done=True), Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
