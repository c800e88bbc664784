"""Command line: ``python -m gmmlib`` fits a mixture to generated mock data (the seed's demo).

Every option of the seed's ``demo.py`` is kept; ``--visualize`` is a real boolean,
``--plot PATH`` writes the final fit to a picture (PNG unless PATH's extension names
another format matplotlib writes), ``--batch_size`` makes the gradient steps
minibatch steps and ``--method em`` fits by EM instead. Bad input ends with a one-line message
``error: --FLAG ...`` and exit status 2, never a traceback. Whatever can be checked before the fit
is checked first (the numbers, the device, whether ``--save`` and ``--plot`` can be written), so
that a bad option costs no fit and leaves no file behind.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from ._validation import check_dtype_device
from .families import ALIASES, FAMILIES

__all__ = ["build_parser", "main"]

#: ``--radius`` at most this: the mock data are means uniform in [-radius, radius] plus
#: unit-variance noise, and float64 resolves the noise next to a mean of size r only to r * 1.1e-16
#: (1e-8 of it at 1e8; above ~1e16 the noise vanishes and the printed NLLs mean nothing).
MAX_RADIUS = 1e8
#: ``--samples`` x ``--dims`` at most this (8 TiB of float64 data); below it, data or a model
#: too large for the machine end as an ``error:`` line too (``main``), not a traceback
MAX_VALUES = 2 ** 40
DEFAULT_LR = 0.05


def _family(name: str) -> str:
    """``--family``'s type: scikit-learn's names (``gmmlib.families.ALIASES``) mapped to gmmlib's."""
    return ALIASES.get(name, name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gmmlib",
                                description="Fit a Gaussian mixture model to generated mock data")
    p.add_argument("--samples", type=int, default=1000, help="The number of total samples in dataset")
    p.add_argument("--components", type=int, default=5, help="The number of gaussian components in mixture model")
    p.add_argument("--dims", type=int, default=2, help="The number of data dimensions")
    p.add_argument("--iterations", type=int, default=500, help="The number of optimization steps")
    aliases = ", ".join(f"{a} for {n}" for a, n in ALIASES.items())
    p.add_argument("--family", type=_family, choices=list(FAMILIES), default="full",
                   help=f"Covariance family of the model; scikit-learn's names are accepted too ({aliases})")
    p.add_argument("--log_freq", type=int, default=100, help="Steps per log event")
    p.add_argument("--radius", type=float, default=8.0,
                   help="Means of the mock data are uniform in [-radius, radius]; at most 1e8, so that "
                        "float64 still resolves the data's unit-variance noise next to them (to 1e-8)")
    p.add_argument("--mixture_lr", type=float, default=None,
                   help=f"Learning rate of the mixture weights (pi), --method gd only (default {DEFAULT_LR})")
    p.add_argument("--component_lr", type=float, default=None,
                   help=f"Learning rate of the components (mus, sigmas), --method gd only (default {DEFAULT_LR})")
    p.add_argument("--method", choices=["gd", "em"], default="gd",
                   help="gd: Adam on the mean NLL (the seed's method); em: expectation-maximisation, "
                        "--iterations is then its maximum number of iterations, and the learning rates "
                        "and --batch_size are refused")
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

    plot_path = _check_args(args)  # everything that can be refused before the fit
    device = _device(args.device)
    X, labels, truth = generate_data(args.samples, args.components, args.dims, args.radius, args.family, args.seed)
    lead, shard = True, X
    if args.distributed:
        rank, world = _join(device)
        if args.samples < world:  # tensor_split would hand some rank no rows at all
            raise ValueError(f"--samples {args.samples} is fewer than the {world} ranks: every rank "
                             f"keeps a share of the rows; pass --samples {world} or more, or start "
                             "fewer processes")
        lead, shard = rank == 0, X.tensor_split(world)[rank]  # contiguous: the gathered
        # start sample is then X in order, and the fit equals the 1-process one
    _check_device_computes(device, args.device)  # after _join, which picks each rank's GPU
    model = GaussianMixture(args.components, args.dims, args.family, dtype=torch.float64, device=device)
    shard, X = shard.to(device), X.to(device)
    truth = truth.to(device)
    if args.method == "em":
        history = fit_em(model, shard, max_iter=args.iterations, generator=args.seed,
                         log_every=args.log_freq, progress=args.progress and lead,
                         distributed=args.distributed)
    else:
        history = fit_gd(model, shard, iterations=args.iterations,
                         mixture_lr=_or_default(args.mixture_lr), component_lr=_or_default(args.component_lr),
                         batch_size=args.batch_size,
                         generator=args.seed, log_every=args.log_freq, progress=args.progress and lead,
                         distributed=args.distributed)
    if not lead:
        return history.final_loss
    fig, picture = None, None
    if plot_path or args.visualize:  # drawn (and encoded) first: a failure then writes no file
        fig, picture = _draw(args, model, X, labels, history, plot_path)
    if args.save:
        try:
            torch.save(model.state_dict(), args.save)
        except (OSError, RuntimeError) as exc:  # torch's "open file failed", "invalid file name"
            raise ValueError(f"--save {args.save}: torch.save could not write it ({_first_line(exc)}); "
                             "pass a file path in a writable directory") from None
        print(f"wrote {args.save}")
    unit = "iteration" if args.method == "em" else "step"
    for snap in history.snapshots:
        print(f"{unit} {snap.step:>6d}  mean NLL {snap.loss:.4f}")
    with torch.no_grad():
        true_nll = float(truth.nll(X))
    print(f"final mean NLL {history.final_loss:.4f} after {history.n_iter} {unit}"
          f"{'' if history.n_iter == 1 else 's'} ({history.wall_time:.2f} s, {len(history.resets)} resets); "
          f"generating mixture: {true_nll:.4f}")
    if plot_path:
        try:
            Path(plot_path).write_bytes(picture)
        except OSError as exc:
            saved = f" (--save wrote {args.save})" if args.save else ""
            raise ValueError(f"--plot {plot_path}: cannot write it ({_first_line(exc)}){saved}; pass a "
                             "file path in a writable directory") from None
        print(f"wrote {plot_path}")
    if args.visualize:
        import matplotlib.pyplot as plt
        plt.show()
    elif fig is not None:
        import matplotlib.pyplot as plt
        plt.close(fig)
    return history.final_loss


def _draw(args, model, X, labels, history, plot_path):
    """The figure of the fit, and its bytes in ``plot_path``'s format (None without --plot); a
    ValueError naming --plot when matplotlib cannot encode it."""
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
    if not plot_path:
        return fig, None
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=Path(plot_path).suffix[1:].lower(), dpi=100)
    except Exception as exc:  # a backend's RuntimeError (LaTeX missing), OSError, ...
        plt.close(fig)
        raise ValueError(f"--plot {plot_path}: matplotlib could not draw it ({type(exc).__name__}: "
                         f"{_first_line(exc)}); try .png, .pdf or .svg") from None
    return fig, buffer.getvalue()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _or_default(lr: float | None) -> float:
    return DEFAULT_LR if lr is None else lr


def _check_args(args) -> str | None:
    """Refuse, as a ValueError naming the flag, every option that can be checked before the fit
    (the fit functions check the rest); return the path ``--plot`` writes."""
    for flag, value in (("--iterations", args.iterations), ("--log_freq", args.log_freq),
                        ("--samples", args.samples), ("--components", args.components),
                        ("--dims", args.dims)):
        if value < 1:
            raise ValueError(f"{flag} must be a positive integer, got {value}")
    if args.samples * args.dims > MAX_VALUES:
        raise ValueError(f"--samples {args.samples} x --dims {args.dims} is {args.samples * args.dims:.3g} "
                         f"values, more than any machine holds (at most 2^40 here); lower them")
    if args.samples < args.components:
        raise ValueError(f"--samples {args.samples} is fewer than --components {args.components}: "
                         "a mixture needs at least one point per component; raise --samples or "
                         "lower --components")
    if args.seed is not None and not 0 <= args.seed < 2 ** 64:
        raise ValueError(f"--seed must be an integer in [0, 2**64), got {args.seed}")
    if not (math.isfinite(args.radius) and args.radius > 0):
        raise ValueError(f"--radius must be a positive finite number, got {args.radius:g}")
    if args.radius > MAX_RADIUS:
        raise ValueError(f"--radius must be at most 1e8, got {args.radius:g}: next to means that "
                         "large float64 resolves the data's unit-variance noise only to radius * 1e-16 "
                         "(1e-8 at 1e8, nothing beyond ~1e16, where the NLLs mean nothing)")
    given = [flag for flag, value in (("--mixture_lr", args.mixture_lr),
                                      ("--component_lr", args.component_lr)) if value is not None]
    if args.method == "em":  # options of gd alone are refused, not silently ignored
        if args.batch_size is not None:
            raise ValueError("--batch_size is for --method gd; EM's M-step needs every point")
        if given:
            raise ValueError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for --method "
                             "gd; EM has no learning rate (its M-step is closed-form): drop "
                             f"{'it' if len(given) == 1 else 'them'} or use --method gd")
    else:
        for flag, lr in (("--mixture_lr", _or_default(args.mixture_lr)),
                         ("--component_lr", _or_default(args.component_lr))):
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"{flag} must be a positive finite number, got {lr:g}")
        if args.batch_size is not None and args.batch_size < 1:
            raise ValueError(f"--batch_size must be a positive integer, got {args.batch_size}")
    _check_output("--save", args.save, "model.pt")
    _check_name("--plot", args.plot, "fit.png")
    plot_path = _plot_path(args.plot)
    # the file written: PATH.png when PATH has no extension (PATH may then be a directory)
    _check_output("--plot", plot_path, "fit.png")
    if (args.plot or args.visualize) and args.dims < 2:
        raise ValueError(f"--plot and --visualize draw two features; --dims {args.dims} has fewer")
    if args.visualize and not _has_window():
        if not args.plot:
            raise ValueError(f"--visualize opens a window, but matplotlib's backend is "
                             f"{_backend()!r}, which draws none (no display here?); write the "
                             "figure with --plot fit.png, or set MPLBACKEND to an interactive "
                             "backend such as TkAgg")
        # the same command line on a desktop and on a headless runner: the file is written,
        # the window is left out, and the run says so
        warnings.warn(f"--visualize: matplotlib's backend {_backend()!r} draws no window (no "
                      f"display here?), so none opens; the figure is in {plot_path}",
                      stacklevel=2)
        args.visualize = False
    if args.save and plot_path and (os.path.realpath(args.save) == os.path.realpath(plot_path) or (
            os.path.exists(args.save) and os.path.exists(plot_path) and os.path.samefile(args.save, plot_path))):
        raise ValueError(f"--save and --plot both name {plot_path}: the picture would overwrite the "
                         "model; pass two different paths")
    return plot_path


# matplotlib's backends that draw no window (Agg and the file formats: what it picks where
# there is no display); its own list where it has one (3.9 on)
_NO_WINDOW = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def _backend() -> str:
    import matplotlib
    return matplotlib.get_backend()


def _has_window() -> bool:
    """Whether matplotlib's backend opens a window for ``plt.show()``; --visualize without one
    fitted, showed nothing and exited 0."""
    try:
        from matplotlib.backends import BackendFilter, backend_registry
        no_window = set(backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE))
    except ImportError:  # matplotlib before 3.9
        no_window = _NO_WINDOW
    return _backend().lower() not in no_window


def _check_output(flag: str, path: str | None, example: str) -> None:
    """A ValueError naming ``flag`` unless ``path`` (None: not asked for) is a file that can be
    created or overwritten: not empty, not a directory, in a directory that exists and takes new
    files (tried: ``os.access`` says yes to root even in /proc)."""
    if path is None:
        return
    _check_name(flag, path, example)
    try:
        _check_place(flag, path, example)
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ValueError(f"{flag} {path}: not a usable file path ({exc.strerror or exc}); pass a "
                         f"file path such as {example}") from None


def _check_name(flag: str, path: str | None, example: str) -> None:
    """A ValueError naming ``flag`` when ``path`` is empty or ends with a separator."""
    if path is None:
        return
    if not path.strip():
        raise ValueError(f"{flag} {path!r}: an empty path; pass a file path such as {example}, or "
                         f"leave {flag} out")
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if path.endswith(separators):  # torch.save: "invalid file name", after the whole fit
        raise ValueError(f"{flag} {path}: ends with a path separator, so names a directory; pass "
                         f"a file path, such as {path.rstrip(''.join(separators)) or example}")


def _check_place(flag: str, path: str, example: str) -> None:
    """The file-system half of :func:`_check_output`."""
    if Path(path).is_dir():
        raise ValueError(f"{flag} {path}: names a directory; pass a file path, such as "
                         f"{os.path.join(path, example)}")
    parent = Path(os.path.realpath(path)).parent  # (Path.resolve raises on a symlink loop)
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: the directory {parent} does not exist; create it, or pass "
                         "a file path whose directory exists")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{flag} {path}: not writable (permission denied); pass a file path in a "
                         "writable directory")
    try:
        with tempfile.TemporaryFile(dir=parent):  # leaves nothing behind
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: no file can be created in {parent} ({exc.strerror or exc}); "
                         "pass a file path in a writable directory") from None


def _device(name: str) -> torch.device:
    """``--device`` as a torch device that exists here, else a ValueError naming --device."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:  # torch's "Expected one of cpu, cuda, ..." / "Invalid device string"
        raise ValueError(f"--device {name!r} is not a device: {exc}".splitlines()[0]) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} needs CUDA, which this machine does not have; use "
                         "--device cpu")
    try:
        check_dtype_device(torch.float64, device)
    except ValueError as exc:
        raise ValueError(f"--device {name!r}: {exc}") from None
    return device


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
    format matplotlib cannot write, or cannot write here (.pgf without LaTeX), is a ValueError
    now, not after the fit."""
    if not path:
        return path
    suffix = Path(path).suffix
    if not suffix:
        return path + ".png"
    import shutil

    import matplotlib
    from matplotlib.figure import Figure
    formats = Figure().canvas.get_supported_filetypes()  # {"png": "Portable Network Graphics", ...}
    fmt = suffix[1:].lower()
    if fmt not in formats:
        raise ValueError(f"--plot {path}: matplotlib cannot write {suffix} files; end PATH with one "
                         f"of {', '.join('.' + f for f in sorted(formats))}")
    tex = matplotlib.rcParams["pgf.texsystem"]  # matplotlib's RuntimeError only after the fit
    if fmt == "pgf" and shutil.which(tex) is None:
        raise ValueError(f"--plot {path}: matplotlib writes .pgf through LaTeX ({tex}), which is not "
                         "installed here; install it, or end PATH with .pdf or .svg")
    if matplotlib.rcParams["text.usetex"] and shutil.which("latex") is None:
        raise ValueError(f"--plot {path}: matplotlib's text.usetex is on and needs LaTeX (latex), "
                         "which is not installed here; install it, or set text.usetex off")
    return path


def _join(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment: (rank, world size)."""
    import os

    import torch.distributed as dist
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ValueError(f"--distributed runs one process per rank, described by the environment "
                         f"({', '.join(missing)} not set): launch it with torchrun, e.g. "
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
    except (MemoryError, RuntimeError) as exc:  # numpy's and torch's allocators
        if not isinstance(exc, (MemoryError, torch.OutOfMemoryError)) \
                and "DefaultCPUAllocator: can't allocate memory" not in str(exc):
            raise  # any other error is a bug to see whole, not advice about sizes
        print(f"error: the data (--samples x --dims) or the model (--components x --dims², full "
              f"covariances) do not fit in memory ({str(exc).splitlines()[0][-160:]}); lower "
              "--samples, --dims or --components", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist
        # every rank saw the same fit: rank 0 alone reports its warnings, as it alone prints
        if not (args.distributed and dist.is_initialized() and dist.get_rank() != 0):
            for w in caught:  # one line each, not Python's file-and-line format
                print(f"warning: {w.message}", file=sys.stderr)
        if args.distributed:
            if dist.is_initialized():
                dist.barrier()  # tear down together: a rank leaving early can abort the other
                dist.destroy_process_group()
    return 0
