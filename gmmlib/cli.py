"""Command line: ``python -m gmmlib`` fits a mixture to generated mock data (the seed's demo).

Every option of the seed's ``demo.py`` is kept; ``--visualize`` is a real boolean,
``--plot PATH`` writes the final fit to a picture (PNG unless PATH's extension names
another format matplotlib writes), ``--batch_size`` makes the gradient steps
minibatch steps and ``--method em`` fits by EM instead. Bad input ends with a one-line message and a
non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from ._validation import check_dtype_device
from .families import FAMILIES

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gmmlib",
                                description="Fit a Gaussian mixture model to generated mock data")
    p.add_argument("--samples", type=int, default=1000, help="The number of total samples in dataset")
    p.add_argument("--components", type=int, default=5, help="The number of gaussian components in mixture model")
    p.add_argument("--dims", type=int, default=2, help="The number of data dimensions")
    p.add_argument("--iterations", type=int, default=500, help="The number of optimization steps")
    p.add_argument("--family", choices=list(FAMILIES), default="full", help="Covariance family of the model")
    p.add_argument("--log_freq", type=int, default=100, help="Steps per log event")
    p.add_argument("--radius", type=float, default=8.0, help="Means of the mock data are uniform in [-radius, radius]")
    p.add_argument("--mixture_lr", type=float, default=0.05, help="Learning rate of the mixture weights (pi)")
    p.add_argument("--component_lr", type=float, default=0.05, help="Learning rate of the components (mus, sigmas)")
    p.add_argument("--method", choices=["gd", "em"], default="gd",
                   help="gd: Adam on the mean NLL (the seed's method); em: expectation-maximisation, "
                        "--iterations is then its maximum number of iterations and the learning rates "
                        "and --batch_size do not apply")
    p.add_argument("--batch_size", type=int, default=None,
                   help="Points per optimization step (minibatch Adam, reshuffled every pass); default: all")
    p.add_argument("--visualize", action=argparse.BooleanOptionalAction, default=False,
                   help="Show the fit in a window at the end (needs a display); see --plot for a file")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="Write a picture of the data, fit and loss curve to PATH, in the format its "
                        "extension names (.png, .pdf, .svg, ...; a PATH without one gets .png)")
    p.add_argument("--seed", type=int, default=0, help="Seed for the data, the initialisation and the resets")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="Show a progress bar")
    p.add_argument("--device", default="cpu", help="Where the model and data live: cpu, cuda, cuda:1, ...")
    p.add_argument("--distributed", action="store_true",
                   help="Fit across the processes torchrun starts (torchrun --nproc_per_node 2 -m gmmlib "
                        "... --distributed): every rank makes the same data from --seed and keeps the "
                        "rank-th of world contiguous blocks of rows; gloo on CPUs, nccl on GPUs; rank 0 "
                        "prints and saves")
    p.add_argument("--save", metavar="PATH", default=None,
                   help="Write the fitted model's state_dict to PATH (torch.save; load it into a "
                        "GaussianMixture of the same shape)")
    return p


def run(args) -> float:
    from .data import generate_data
    from .em import fit_em
    from .gd import fit_gd
    from .mixture import GaussianMixture

    if args.log_freq < 1:
        raise ValueError(f"--log_freq must be a positive integer, got {args.log_freq}")
    if (args.plot or args.visualize) and args.dims < 2:
        raise ValueError(f"--plot and --visualize draw two features; --dims {args.dims} has fewer")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    plot_path = _plot_path(args.plot)
    for flag, path in (("--save", args.save), ("--plot", plot_path)):  # before the fit, not after
        if path and (Path(path).is_dir() or not Path(path).resolve().parent.is_dir()):
            raise ValueError(f"{flag} {path}: not a file in an existing directory; pass a file "
                             "path whose directory exists")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:  # torch's "Expected one of cpu, cuda, ..." / "Invalid device string"
        raise ValueError(f"--device {args.device!r} is not a device: {exc}".splitlines()[0]) from None
    check_dtype_device(torch.float64, device)  # one that exists here (a CUDA device needs a GPU)
    X, labels, truth = generate_data(args.samples, args.components, args.dims, args.radius, args.family, args.seed)
    lead, shard = True, X
    if args.distributed:
        rank, world = _join(device)
        lead, shard = rank == 0, X.tensor_split(world)[rank]  # contiguous: the gathered
        # start sample is then X in order, and the fit equals the 1-process one
    _check_device_computes(device, args.device)  # after _join, which picks each rank's GPU
    model = GaussianMixture(args.components, args.dims, args.family, dtype=torch.float64, device=device)
    shard, X = shard.to(device), X.to(device)
    truth = truth.to(device)
    if args.method == "em":
        if args.batch_size is not None:
            raise ValueError("--batch_size is for --method gd; EM's M-step needs every point")
        history = fit_em(model, shard, max_iter=args.iterations, generator=args.seed,
                         log_every=args.log_freq, progress=args.progress and lead,
                         distributed=args.distributed)
    else:
        history = fit_gd(model, shard, iterations=args.iterations, mixture_lr=args.mixture_lr,
                         component_lr=args.component_lr, batch_size=args.batch_size,
                         generator=args.seed, log_every=args.log_freq, progress=args.progress and lead,
                         distributed=args.distributed)
    if not lead:
        return history.final_loss
    if args.save:
        torch.save(model.state_dict(), args.save)
        print(f"wrote {args.save}")
    for snap in history.snapshots:
        print(f"step {snap.step:>6d}  mean NLL {snap.loss:.4f}")
    with torch.no_grad():
        true_nll = float(truth.nll(X))
    unit = "iterations" if args.method == "em" else "steps"
    print(f"final mean NLL {history.final_loss:.4f} after {history.n_iter} {unit} "
          f"({history.wall_time:.2f} s, {len(history.resets)} resets); generating mixture: {true_nll:.4f}")
    if args.plot or args.visualize:
        import matplotlib
        if not args.visualize:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from . import plot
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
        plot.plot_fit(ax0, model, X, labels=labels, title=f"{args.family}, K={args.components}")
        plot.plot_loss(ax1, history)
        ax1.set_title("training loss")
        fig.tight_layout()
        if plot_path:
            fig.savefig(plot_path, dpi=100)
            print(f"wrote {plot_path}")
        if args.visualize:
            plt.show()
    return history.final_loss


def _check_device_computes(device: torch.device, name: str) -> None:
    """A ValueError naming --device when a float64 tensor cannot live on ``device`` here: a
    device torch can name but not use on this machine (mps off a Mac, meta, xla, a GPU index
    beyond the GPUs present)."""
    try:
        float(torch.zeros((), dtype=torch.float64, device=device))  # made there and read back
    except (RuntimeError, AssertionError, ImportError, TypeError) as exc:  # incl. NotImplementedError
        reason = (str(exc).splitlines() or [""])[0].split(". ")[0]  # torch's first sentence
        raise ValueError(f"--device {name!r} cannot hold gmmlib's float64 tensors on this machine "
                         f"({type(exc).__name__}: {reason}); use --device cpu, or cuda on a "
                         "machine with a GPU") from None


def _plot_path(path: str | None) -> str | None:
    """The file ``--plot PATH`` writes: PATH itself, or PATH.png when it has no extension. A
    format matplotlib cannot write is a ValueError now, not after the fit."""
    if not path:
        return path
    suffix = Path(path).suffix
    if not suffix:
        return path + ".png"
    from matplotlib.figure import Figure
    formats = Figure().canvas.get_supported_filetypes()  # {"png": "Portable Network Graphics", ...}
    if suffix[1:].lower() not in formats:
        raise ValueError(f"--plot {path}: matplotlib cannot write {suffix} files; end PATH with one "
                         f"of {', '.join('.' + f for f in sorted(formats))}")
    return path


def _join(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment: (rank, world size)."""
    import os

    import torch.distributed as dist
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError("--distributed runs one process per rank: launch it with torchrun, e.g. "
                         "torchrun --nproc_per_node 2 -m gmmlib --distributed ...")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)  # ConvergenceWarning, divergence
            run(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for w in caught:  # one line each, not Python's file-and-line format
            print(f"warning: {w.message}", file=sys.stderr)
        if args.distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.barrier()  # tear down together: a rank leaving early can abort the other
                dist.destroy_process_group()
    return 0
