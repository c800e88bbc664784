"""EM seconds per iteration: gmmlib.fit_em against scikit-learn's GaussianMixture, same run.

Both sides get the same data, the same starting parameters (gmmlib's k-means++ start, handed to
scikit-learn as weights_init / means_init / precisions_init, with init_params="random_from_data"
so that no KMeans fit runs inside its timed region), the same thread count
(torch.set_num_threads and threadpoolctl for NumPy's BLAS) and run ``--iters`` iterations with
tol=0, so neither stops early. Seconds per iteration = wall time of the whole fit / iterations,
best of at least ``--repeat`` fits (more for fits under 0.5 s); both sides pay their own
input checks, set-up and final E-step. GFLOP/s counts the
dominant products of one iteration (see ``flops``) against a matmul peak measured in the same
run. The GPU's table is ``bench_cuda.py``'s.

    python benchmarks/bench_em.py            # the full table -> benchmarks/results/em.md
    python benchmarks/bench_em.py --quick    # two sizes, full and diag, float64; prints only
    python benchmarks/bench_em.py --sizes 1e5,64,16 --types diagonal   # any sizes; prints only
    make bench-peers   # + pomegranate and torchgmm columns (--peers) -> benchmarks/results/em_peers.md

``--peers`` adds a column for each of pomegranate and torchgmm that imports (they live in their
own venv, .venv-peers, which ``make bench-peers`` builds; elsewhere their columns are left out
with a note). Those rows are float32, the peers' own dtype, and every side of a row is timed in
interleaved rounds, from the same start; see ``pomegranate_fit`` and ``torchgmm_fit`` for how
each peer is started and kept from stopping early.
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
from sklearn.mixture import GaussianMixture as SkGMM
from threadpoolctl import threadpool_limits

import gmmlib
from _report import publish  # benchmarks/, on the path when a script here runs or is imported
from gmmlib.em import fit_em

# 300 points: the book's data sets' size (Old Faithful has 272), where a fit is per-call
# overhead, not arithmetic
SIZES = [(300, 2, 3), (10_000, 2, 3), (100_000, 16, 16), (100_000, 64, 16), (1_000_000, 2, 8)]
TYPES = ["full", "tied", "diagonal", "isotropic", "shared_isotropic", "constant"]
SKLEARN = {f.name: f.sklearn_name for f in gmmlib.FAMILIES.values() if f.sklearn_name}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
RESULTS = Path(__file__).parent / "results" / "em.md"


def flops(family: str, N: int, D: int, K: int) -> float:
    """Floating-point operations of the products of one gmmlib EM iteration (the elementwise
    work and what is kept between iterations are left out; scikit-learn may do more).

    full: E-step X @ [P_1 … P_K] (2NKD²) + M-step centred scatters (2NKD²) + means (2NKD);
    tied: E-step X @ P (2ND²) and (X P)(mu P)ᵀ (2NKD) + means (2NKD); its ``sum x xᵀ`` is kept
    between iterations; diagonal: E-step two (N,D)x(D,K) products (4NKD) + the M-step's
    ``sum r x`` and ``sum r x²`` (4NKD); isotropic, shared isotropic, constant: one product
    each side (4NKD; the squared norms' terms are O(NK)).
    """
    if family == "full":
        return 4.0 * N * K * D * D + 2.0 * N * K * D
    if family == "tied":
        return 2.0 * N * D * D + 4.0 * N * K * D
    if family == "diagonal":
        return 8.0 * N * K * D
    return 4.0 * N * K * D


def matmul_peak(dtype, device="cpu", n=2048, repeat=3) -> float:
    """Best GFLOP/s of an n x n matrix product."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = min(timed(lambda: a @ b, device=device) for _ in range(repeat))
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


def _sync(device) -> None:
    """Wait for the GPU's queued work (a timer read before it would time the launches)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fit, setup=lambda: None, device="cpu") -> float:
    """Wall time of one ``fit()``, ``setup()`` untimed before it, the device's queue drained
    on both sides."""
    setup()
    _sync(device)
    t = time.perf_counter()
    fit()
    _sync(device)
    return time.perf_counter() - t


def best_of(fit, repeat, setup=lambda: None, device="cpu", budget=0.5, most=15):
    """Best wall time of ``fit()`` (``setup()`` untimed before each): at least ``repeat`` runs,
    more for short fits, until ``budget`` seconds were spent or ``most`` runs (a fit of a few
    milliseconds is otherwise at the mercy of one descheduling)."""
    best, spent, runs = float("inf"), 0.0, 0
    while runs < repeat or (spent < budget and runs < most):
        took = timed(fit, setup, device)
        best, spent, runs = min(best, took), spent + took, runs + 1
    return best


def gmmlib_fit(model0, X, iters, device="cpu"):
    """``(setup, fit)``: ``fit_em`` for ``iters`` iterations (tol=0) from ``model0``'s parameters,
    in X's dtype; ``fit.model`` is the fitted model."""
    Xt = torch.as_tensor(X, device=device)
    model = gmmlib.GaussianMixture(model0.n_components, model0.n_features, model0.family.name,
                                   dtype=Xt.dtype, device=device)

    def fit():
        fit_em(model, Xt, init=None, max_iter=iters, tol=0.0, progress=False)
    fit.model = model
    return lambda: model.load_state_dict(model0.state_dict()), fit


def sklearn_fit(model0, X, iters):
    """``(setup, fit)``: scikit-learn's EM from ``model0``'s parameters, in X's dtype."""
    fam = model0.family.name
    cov = model0.sklearn_covariances().numpy()
    precisions = np.linalg.inv(cov) if fam in ("full", "tied") else 1.0 / cov
    dt = X.dtype
    sk = SkGMM(model0.n_components, covariance_type=SKLEARN[fam], max_iter=iters, tol=0.0,
               init_params="random_from_data",  # its start is replaced: skip a KMeans fit
               weights_init=model0.weights.numpy().astype(dt), means_init=model0.means.numpy().astype(dt),
               precisions_init=precisions.astype(dt))
    return lambda: None, lambda: sk.fit(X)  # each fit restarts from the *_init


def time_gmmlib(model0, X, iters, repeat):
    setup, fit = gmmlib_fit(model0, X, iters)
    return best_of(fit, repeat, setup=setup) / iters


def time_sklearn(model0, X, iters, repeat):
    setup, fit = sklearn_fit(model0, X, iters)
    return best_of(fit, repeat, setup=setup) / iters


# --- Peers (``--peers``): optional, timed only where the package imports ----------------------
# Each peer's covariance types, by gmmlib family name. pomegranate's "sphere" is one variance
# per component (gmmlib's isotropic); it has no tied covariance. torchgmm's are scikit-learn's.
PEERS = {"pomegranate": {"full": "full", "diagonal": "diag", "isotropic": "sphere"},
         "torchgmm": {"full": "full", "tied": "tied", "diagonal": "diag", "isotropic": "spherical"}}
PEER_TYPES = ["full", "tied", "diagonal", "isotropic"]
RESULTS_PEERS = Path(__file__).parent / "results" / "em_peers.md"


def load_peers():
    """``({name: version}, {name: why not})`` for the peers in ``PEERS``: importable or not.

    They live in the benchmark's own environment (``make bench-peers`` builds ``.venv-peers``);
    in the main one they are missing and the peer columns are left out.
    """
    found, missing = {}, {}
    for name in PEERS:
        try:
            if name == "pomegranate":
                import pomegranate.distributions  # noqa: F401
                import pomegranate.gmm  # noqa: F401
            else:
                import logging
                import torchgmm  # sets its own loggers on import: silence them after
                import torchgmm.bayes  # noqa: F401
                for log in ("torchgmm", "pytorch_lightning", "lightning.pytorch", "lightning_fabric",
                            "lightning"):
                    logging.getLogger(log).setLevel(logging.ERROR)
            from importlib.metadata import version
            found[name] = version(name)
        except Exception as err:  # ImportError, or a broken install: either way, no column
            missing[name] = f"{type(err).__name__}: {err}"
    return found, missing


def pomegranate_fit(model0, X, iters):
    """``(setup, fit)``: pomegranate's ``GeneralMixtureModel`` of ``Normal`` components, EM.

    Started exactly at ``model0`` (float32): each ``Normal`` gets its mean and covariance and the
    mixture its priors, so ``fit`` runs no k-means. ``fit`` does ``max_iter`` rounds of
    ``summarize`` (E-step) + ``from_summaries`` (M-step) and stops early only when the
    log-likelihood improves by less than ``tol``: tol=-inf never stops. A fresh model is built in
    ``setup`` (untimed: it also factors the covariances, as the start). ``fit.model()`` returns
    the last fitted model.
    """
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel
    kind = PEERS["pomegranate"][model0.family.name]
    K, D = model0.n_components, model0.n_features
    weights, means = model0.weights.detach().clone(), model0.means.detach().clone()
    cov = model0.sklearn_covariances().detach().clone()  # (K, D, D), (K, D) or (K,)
    if kind == "sphere":  # pomegranate wants the variance repeated D times (covs as means)
        cov = cov[:, None].expand(K, D).contiguous()
    Xt = torch.as_tensor(X)
    held = {}

    def setup():
        dists = [Normal(means[k].clone(), cov[k].clone(), covariance_type=kind) for k in range(K)]
        held["m"] = GeneralMixtureModel(dists, priors=weights.clone(), max_iter=iters,
                                        tol=float("-inf"))

    def fit():
        held["m"].fit(Xt)
    fit.model = lambda: held["m"]
    return setup, fit


def pomegranate_means(fitted):
    return torch.stack([d.means.detach() for d in fitted.distributions])  # (K, D)


def torchgmm_fit(model0, X, iters, device="cpu"):
    """``(setup, fit)``: torchgmm's EM (its ``GaussianMixtureLightningModule`` under the PyTorch
    Lightning trainer its estimator configures), for ``iters`` epochs = EM iterations.

    torchgmm's public ``GaussianMixture.fit`` takes at most ``init_means`` and then derives priors
    and covariances from a hard nearest-mean assignment (an extra pass), so it cannot start at
    given weights and covariances. The same start is set here one level down, as ``fit`` itself
    does after its initialisation: a ``GaussianMixtureModel`` whose buffers
    (``component_probs``, ``means``, ``precisions_cholesky``, scikit-learn's convention) are
    copied from ``model0``, then the estimator's own ``trainer(...).fit(module, loader)`` with
    the full data as one batch. ``convergence_tolerance=0`` adds no early stopping, so every
    epoch runs. On ``device`` (the data too: on a GPU the trainer's accelerator is "gpu"), no
    logger, no checkpoints, no progress bar. ``fit.model`` is the model.
    """
    import tempfile
    from torchgmm.base.data import DataLoader, collate_tensor, dataset_from_tensors
    from torchgmm.bayes import GaussianMixture as TgGMM
    from torchgmm.bayes.gmm.lightning_module import GaussianMixtureLightningModule
    from torchgmm.bayes.gmm.model import GaussianMixtureModel, GaussianMixtureModelConfig
    kind = PEERS["torchgmm"][model0.family.name]
    K, D = model0.n_components, model0.n_features
    _, chol = model0.sklearn_precisions()
    Xt = torch.as_tensor(X, device=device)
    model = GaussianMixtureModel(GaussianMixtureModelConfig(K, D, kind)).to(Xt.dtype).to(device)
    gpu = torch.device(device).type == "cuda"
    estimator = TgGMM(K, covariance_type=kind, convergence_tolerance=0.0, trainer_params=dict(
        max_epochs=iters, accelerator="gpu" if gpu else "cpu", devices=1, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, logger=False,
        default_root_dir=tempfile.gettempdir()))
    threads = torch.get_num_threads()

    def setup():
        with torch.no_grad():
            model.component_probs.copy_(model0.weights.to(device))
            model.means.copy_(model0.means.to(device))
            model.precisions_cholesky.copy_(chol.to(device))

    def fit():
        loader = DataLoader(dataset_from_tensors(Xt), batch_size=len(Xt), collate_fn=collate_tensor)
        module = GaussianMixtureLightningModule(model, convergence_tolerance=0.0,
                                                covariance_regularization=estimator.covariance_regularization)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on dataloader workers etc.
            estimator.trainer().fit(module, loader)
        if torch.get_num_threads() != threads:  # the same thread count as the other sides
            torch.set_num_threads(threads)
    fit.model = model
    return setup, fit


def interleaved(fits, repeat, budget=0.5, most=15, device="cpu"):
    """Best wall time of each ``(setup, fit)`` in ``fits`` (a dict), timed in rounds that run
    every fit once in turn, so that a burst of load from other processes falls on every side
    alike: at least ``repeat`` rounds, more while the rounds took under ``budget`` seconds per fit
    in all, at most ``most``."""
    best = dict.fromkeys(fits, float("inf"))
    spent, rounds = 0.0, 0
    while rounds < repeat or (spent < budget * len(fits) and rounds < most):
        for name, (setup, fit) in fits.items():
            took = timed(fit, setup, device)
            best[name], spent = min(best[name], took), spent + took
        rounds += 1
    return best


def time_with_peers(model0, X, iters, repeat, peers, device="cpu", sklearn=True):
    """Seconds per iteration of gmmlib, scikit-learn and each importable peer that has this
    family, all from ``model0`` (already in X's dtype), timed interleaved. torchgmm's is the
    marginal cost of an iteration, ``(t(iters) - t(1)) / (iters - 1)``, which leaves out the
    fixed cost of a Lightning trainer run; gmmlib's marginal cost (``"gmmlib marginal"``,
    measured likewise in the same rounds) is what it is compared with, so that neither side's
    fixed costs (input checks, set-up, the final pass) count. Returns ``(per_it, agree,
    fixed)``: seconds per iteration by side; per peer, the largest difference between its
    final means and gmmlib's after the same iterations (same start, same algorithm: they agree
    to float32 rounding); and that fixed torchgmm cost in seconds (None without torchgmm).
    gmmlib and torchgmm run on ``device`` (scikit-learn, unless ``sklearn`` is False, and
    pomegranate on the CPU)."""
    fam = model0.family.name
    fits = {"gmmlib": gmmlib_fit(model0, X, iters, device)}
    if sklearn and fam in SKLEARN:
        fits["sklearn"] = sklearn_fit(model0, X, iters)
    if "pomegranate" in peers and fam in PEERS["pomegranate"]:
        fits["pomegranate"] = pomegranate_fit(model0, X, iters)
    if "torchgmm" in peers and fam in PEERS["torchgmm"]:
        fits["gmmlib 1"] = gmmlib_fit(model0, X, 1, device)
        fits["torchgmm 1"] = torchgmm_fit(model0, X, 1, device)
        fits["torchgmm"] = torchgmm_fit(model0, X, iters, device)
    best = interleaved(fits, repeat, device=device)
    per_it = {name: t / iters for name, t in best.items() if not name.endswith(" 1")}
    fixed = None
    if "torchgmm" in best:
        for name in ("gmmlib", "torchgmm"):
            per_it[f"{name} marginal"] = (best[name] - best[f"{name} 1"]) / max(iters - 1, 1)
        per_it["torchgmm"] = per_it.pop("torchgmm marginal")
        fixed = best["torchgmm 1"] - per_it["torchgmm"]
    ours = fits["gmmlib"][1].model.means.detach().cpu()
    agree = {}
    if "pomegranate" in fits:
        agree["pomegranate"] = (pomegranate_means(fits["pomegranate"][1].model()) - ours).abs().max().item()
    if "torchgmm" in fits:
        agree["torchgmm"] = (fits["torchgmm"][1].model.means.cpu() - ours).abs().max().item()
    return per_it, agree, fixed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two sizes, full and diagonal, float64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="EM iterations per timed fit (tol=0)")
    ap.add_argument("--repeat", type=int, default=2, help="timed fits per side at least (more "
                    "for fits under 0.5 s); the best counts")
    ap.add_argument("--sizes", nargs="+", default=None, metavar="N,D,K", type=_size,
                    help="problem sizes instead of the standard five, e.g. 1e5,16,16")
    ap.add_argument("--types", nargs="+", default=None, choices=TYPES)
    ap.add_argument("--dtypes", nargs="+", default=None, choices=list(DTYPES))
    ap.add_argument("--peers", action="store_true", help="add pomegranate and torchgmm columns "
                    "(those that import; `make bench-peers` installs them in .venv-peers), float32 "
                    f"rows, types {' '.join(PEER_TYPES)} by default, all sides timed interleaved; "
                    f"a full run writes {RESULTS_PEERS}")
    ap.add_argument("--out", default=None, help=f"Markdown file for the table (default {RESULTS} "
                    "for a full run; --quick only prints)")
    args = ap.parse_args(argv)

    sizes = args.sizes or (SIZES[1:3] if args.quick else SIZES)
    types = args.types or (["full", "diagonal"] if args.quick else PEER_TYPES if args.peers else TYPES)
    dtypes = args.dtypes or (["float32"] if args.peers else ["float64"] if args.quick else list(DTYPES))
    default_out = RESULTS_PEERS if args.peers else RESULTS
    out = Path(args.out) if args.out else (None if args.quick or args.sizes else default_out)
    peers, missing = load_peers() if args.peers else ({}, {})
    for name, why in missing.items():
        print(f"{name} is not importable, its column is left out ({why}); `make bench-peers` "
              "installs the peers in .venv-peers", file=sys.stderr)

    warnings.filterwarnings("ignore", category=gmmlib.ConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*did not converge.*")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    peaks = {name: matmul_peak(dt) for name, dt in DTYPES.items() if name in dtypes}

    header = ["N", "D", "K", "covariance", "dtype", "gmmlib s/it", "sklearn s/it", "speed-up",
              "gmmlib GFLOP/s", "% of matmul peak"]
    for name in peers:
        header += (["gmmlib marginal s/it", f"{name} marginal s/it", f"vs {name} (marginal)"]
                   if name == "torchgmm" else [f"{name} s/it", f"vs {name}"])
    if peers:
        header += ["max abs Δmeans vs gmmlib", "load (1 min)"]
    rows, fixed_costs = [], []
    t_start = time.perf_counter()
    with threadpool_limits(limits=args.threads):
        for N, D, K in sizes:
            X64 = make_data(N, D, K)
            for fam in types:
                model0 = start(X64, K, fam)
                for dname in dtypes:
                    X = X64.astype(np.float32) if dname == "float32" else X64
                    m0 = model0 if dname == "float64" else _cast(model0, torch.float32)
                    if args.peers:  # the peers run in their own dtype, float32 only
                        per_it, agree, fixed = time_with_peers(
                            m0, X, args.iters, args.repeat, peers if dname == "float32" else {})
                        ours, theirs = per_it["gmmlib"], per_it.get("sklearn")
                        if fixed is not None:
                            fixed_costs.append(fixed)
                    else:
                        ours = time_gmmlib(m0, X, args.iters, args.repeat)
                        theirs = time_sklearn(model0, X, args.iters, args.repeat) if fam in SKLEARN else None
                    gf = flops(fam, N, D, K) / ours / 1e9
                    row = [f"{N:.0e}".replace("e+0", "e"), D, K, fam, dname, f"{ours:.4f}",
                           f"{theirs:.4f}" if theirs else "—",
                           f"**{theirs / ours:.1f}x**" if theirs else "—",
                           f"{gf:.1f}", f"{100 * gf / peaks[dname]:.0f}%"]
                    for name in peers:
                        t = per_it.get(name)
                        if name == "torchgmm":  # marginal against marginal
                            mine = per_it.get("gmmlib marginal")
                            row += [f"{mine:.4f}" if t else "—"]
                            ratio = f"**{t / mine:.1f}x**" if mine and mine > 0 else "— (noise)"
                            row += [f"{t:.4f}", ratio] if t else ["—", "—"]
                        else:
                            row += [f"{t:.4f}", f"**{t / ours:.1f}x**"] if t else ["—", "—"]
                    if peers:
                        row += [", ".join(f"{agree[n]:.0e}" if n in agree else "—" for n in peers),
                                f"{os.getloadavg()[0]:.1f}"]
                    rows.append(row)
                    print(" | ".join(str(v) for v in row), flush=True)
    elapsed = time.perf_counter() - t_start
    load1 = os.getloadavg()

    title = "scikit-learn" + "".join(f", {name}" for name in peers)
    versions = "".join(f" · {name} {v}" for name, v in peers.items())
    if "torchgmm" in peers:
        from importlib.metadata import version
        versions += f" · pytorch-lightning {version('pytorch-lightning')}"
    timing = (f"best of {args.repeat} or more interleaved rounds (one fit of each side per round, "
              "more rounds while they took under 0.5 s per fit)" if args.peers else
              f"best of {args.repeat} or more fits (up to 0.5 s each side)")
    lines = [f"# EM: gmmlib.fit_em vs {title}, seconds per iteration", "",
             f"{args.threads} threads · {args.iters} iterations per fit (tol=0), {timing} · torch "
             f"{torch.__version__} · scikit-learn {__import__('sklearn').__version__} · numpy "
             f"{np.__version__}{versions} · Python {platform.python_version()} · "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "",
             "Measured matmul peak (2048², same threads): "
             + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
             + f". Load average {_loads(load0)} at the start, {_loads(load1)} at the end "
             f"(1/5/15 min; above {args.threads} means other processes shared the cores). "
             f"Run took {elapsed:.0f} s.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    lines += ["", "`—`: scikit-learn has no such covariance type. Regenerate with "
              f"`python benchmarks/bench_em.py{' --peers' if args.peers else ''}`."]
    if args.peers:
        lines += PEER_NOTES + ([f"torchgmm's fixed cost per fit (the Lightning trainer run), "
                                f"t(1) - s/it: from {min(fixed_costs):.2f} to "
                                f"{max(fixed_costs):.2f} s (a difference of two best times: "
                                "noisy, even negative, when the load changed)."]
                               if fixed_costs else [])
        lines += [f"Not importable, left out: {', '.join(missing)}."] if missing else []
    table = "\n".join(lines) + "\n"
    publish(table, out)


PEER_NOTES = [
    "",
    "Peers: every side starts from the same parameters (gmmlib's k-means++ start) on the same "
    "data in the same process, same threads, tol so that nothing stops early; the `vs` columns "
    "are peer s/it / gmmlib s/it (for torchgmm, both marginal: see below). `—` in a peer's "
    "column: it has no such covariance type (pomegranate has no tied). The Δmeans column "
    "(pomegranate, torchgmm) checks that they did the same work: the largest difference of the "
    "final means from gmmlib's.",
    "",
    "- pomegranate: `GeneralMixtureModel` of `Normal(means, covs, covariance_type=...)` "
    "('full', 'diag', 'sphere'), given the start, so no k-means runs; `tol=-inf` (it stops when "
    "the log-likelihood improves by less than tol); seconds per iteration = whole fit / "
    "iterations, as for gmmlib and scikit-learn.",
    "- torchgmm: its public `GaussianMixture.fit` accepts only `init_means` (then one "
    "hard-assignment pass for priors and covariances), so the start is set one level down: a "
    "`GaussianMixtureModel` with the start copied into its buffers, trained by "
    "`GaussianMixtureLightningModule(convergence_tolerance=0)` (no early stopping) under the "
    "estimator's own `trainer()` (CPU, no logger or checkpoints), the whole data as one batch, "
    "which is what `fit` runs after its initialisation. Its s/it is the marginal cost "
    "(t(iters) - t(1)) / (iters - 1): the fixed cost of a trainer run is left out. It is "
    "compared with gmmlib's marginal cost, measured the same way in the same rounds (gmmlib "
    "marginal s/it), so neither side's fixed costs count; before 2026-12-03 the ratio set "
    "torchgmm's marginal cost against gmmlib's whole fit / iterations, which charged gmmlib "
    "its input checks, set-up and final pass (3-62% of its time at 5 iterations, measured).",
]


def _loads(loads):
    return "/".join(f"{v:.2f}" for v in loads)


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
