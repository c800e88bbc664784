"""Checks at the public edge of gmmlib.

Every public function validates what a user hands it here and raises a ``ValueError`` that
names the argument, says what was wrong and what to do about it. Nothing below this layer
checks again, so the inner loops stay fast.

A public function writes its checks as one table, argument name -> checker, next to it::

    _ARGUMENTS = {"iterations": check_positive_int, "tol": optional(check_positive)}
    iterations, tol = checked(_ARGUMENTS, locals()).values()

A checker takes ``(value, name)`` and returns the value to use (a float, an int, a canonical
name) or raises.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["FLOAT_DTYPES", "as_data", "as_numbers", "numeric_array", "float_dtype_like", "make_generator",
           "check_dtype_device", "check_positive", "check_nonnegative", "check_positive_int",
           "check_nonnegative_int", "check_probability_vector", "optional", "checked",
           "user_stacklevel"]


def _sparse(X) -> bool:
    """A scipy.sparse matrix or array, recognised without importing scipy."""
    return type(X).__module__.startswith("scipy.sparse")


def numeric_array(value, name: str) -> np.ndarray:
    """``value`` as a NumPy array of numbers that torch can take without touching it: C-contiguous
    (``torch.as_tensor`` refuses negative strides) and writeable (torch warns on read-only
    memory); object arrays holding numbers become float64. Copies only when one of these
    needs it. Strings, ragged lists and sparse matrices are a ``ValueError`` naming ``name``."""
    if _sparse(value):
        raise ValueError(f"{name} is a sparse matrix ({type(value).__name__}); gmmlib needs dense "
                         f"data (scikit-learn: 'Sparse data was passed for {name}, but dense data "
                         "is required'): pass X.toarray()")
    try:
        arr = np.asarray(value)
        if arr.dtype == object:
            arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers with a regular shape, got "
                         f"{type(value).__name__}; convert it with np.asarray({name}, dtype=float)") from exc
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must hold numbers, got an array of dtype {arr.dtype}; "
                         f"convert it with np.asarray({name}, dtype=float)")
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, order="C", copy=True)
    return arr


def _overflowed(given: torch.Tensor, converted: torch.Tensor) -> bool:
    """Whether ``converted`` holds infinities that ``given`` did not: finite values past the
    range of the dtype they were converted to."""
    return converted.is_floating_point() and bool(torch.isinf(converted).any()) \
        and not bool(torch.isinf(given).any())


def as_data(X, *, n_features=None, dtype=None, device=None, min_rows=1, name="X",
            owner="the model", keep_grad=False) -> torch.Tensor:
    """Return ``X`` as a 2-D floating tensor ``(N, D)`` on ``device``/``dtype``, or raise.

    The result may share memory with ``X`` (no copy is made when none is needed): callers
    must never write to it. It is detached from ``X``'s autograd graph unless ``keep_grad``
    (the scorers: their densities are differentiable in X). Raises ``ValueError`` when ``X`` is sparse, not numeric, not 2-D,
    has the wrong number of columns (``owner`` expects ``n_features``), holds NaN or infinity,
    or has fewer than ``min_rows`` rows. Messages carry scikit-learn's phrases where its users
    would search for them.
    """
    if isinstance(X, torch.Tensor):
        t = X if keep_grad else X.detach()
    else:
        t = torch.from_numpy(numeric_array(X, name))
    if t.ndim != 2:
        hint = (" Reshape your data either using X.reshape(-1, 1) if your data has a single "
                "feature or X.reshape(1, -1) if it contains a single sample.") if t.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D with shape (n_samples, n_features): expected 2D "
                         f"array, got {t.ndim}D array of shape {tuple(t.shape)} instead.{hint}")
    if n_features is not None and t.shape[1] != n_features:
        raise ValueError(f"{name} has {t.shape[1]} features, but {owner} is expecting "
                         f"{n_features} features as input; pass data with {n_features} columns"
                         + (f" or build the model with n_features={t.shape[1]}"
                            if owner == "the model" else ""))
    if t.shape[0] < min_rows:
        if t.shape[0] == 0:
            raise ValueError(f"{name} is empty: found array with 0 sample(s) (shape="
                             f"{tuple(t.shape)}) while a minimum of {min_rows} is required")
        raise ValueError(f"{name} has {t.shape[0]} sample(s) but a mixture of {min_rows} "
                         f"components needs at least {min_rows} (n_samples={t.shape[0]} should be "
                         f">= n_components={min_rows}); pass more data or use fewer components")
    if t.is_complex():
        raise ValueError(f"{name} is complex (complex data not supported); a mixture of real "
                         "Gaussians needs real data: pass X.real, or stack real and imaginary "
                         "parts as separate features")
    given = t  # before conversion: an overflow of the conversion is named as such
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype() if dtype is None else dtype)
    t = t.to(device=device, dtype=dtype)
    if t.numel() == 0:
        return t
    # one pass, the extremes: NaN or inf anywhere makes them non-finite (aminmax ran 6x faster
    # than the infinity norm over (1e5, 64) float32, measured)
    low, high = torch.aminmax(t.detach())
    largest = float(torch.maximum(-low, high))  # NaN stays NaN; one read back from a GPU
    if not math.isfinite(largest):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        what = "NaN" if bool(torch.isnan(t).any()) else "infinity"
        hint = (f" (values beyond ±{torch.finfo(t.dtype).max:.3g} overflow {t.dtype} when "
                "converted: rescale X)") if what == "infinity" and _overflowed(given, t) else ""
        raise ValueError(f"Input {name} contains {what} in {bad} row(s){hint}; remove or impute "
                         "those rows")
    limit = math.sqrt(torch.finfo(t.dtype).max) * 1e-4  # squared distances stay far from overflow
    if largest > limit:
        raise ValueError(f"{name} has values up to {largest:.3g}, too large for {t.dtype} arithmetic "
                         f"(squared distances would overflow; the limit is {limit:.2g}): rescale X, "
                         "for example standardise each feature")
    return t


def as_numbers(value, name: str, expected: str, *, dtype=None, device=None) -> torch.Tensor:
    """``value`` as a tensor, or a ``ValueError`` saying "``name`` must be ``expected``" instead
    of torch's or numpy's message about strings or ragged lists. May share memory with
    ``value``; callers never write to it."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            t = torch.as_tensor(numeric_array(value, name))
        except ValueError as exc:
            raise ValueError(f"{name} must be {expected}, got {value!r}") from exc
    if t.is_complex():  # the conversion would drop the imaginary part, with only a warning
        raise ValueError(f"{name} must be {expected}, got complex numbers; pass real values")
    out = t.to(dtype=dtype, device=device)
    if _overflowed(t, out):  # named so, not as an infinity given
        raise ValueError(f"{name} has values beyond ±{torch.finfo(out.dtype).max:.3g}, which "
                         f"overflow {out.dtype}: rescale them, or use torch.float64")
    return out


def make_generator(generator=None, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` from ``None``, an int seed, or a generator (returned as it is);
    anything else is a ``ValueError``. ``None`` seeds a new generator with one draw from
    torch's global generator, so that ``torch.manual_seed`` makes the fits and initialisations
    called without a generator repeatable, as it does torch's own random functions (and
    :meth:`GaussianMixture.sample`, which draws from the global generator itself). As with
    those, processes forked with the same global state draw the same numbers."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is not None and (isinstance(generator, bool) or not isinstance(generator, numbers.Integral)):
        raise ValueError(f"generator must be None, an int seed or a torch.Generator, got "
                         f"{type(generator).__name__} {generator!r}")
    g = torch.Generator(device=device)
    if generator is None:
        g.manual_seed(int(torch.randint(0, 2 ** 63 - 1, ())))  # one draw from the global generator
        return g
    try:
        g.manual_seed(int(generator))
    except (RuntimeError, OverflowError, ValueError) as exc:
        raise ValueError(f"generator seed {generator} is out of range; use an int in [0, 2**64)") from exc
    return g


# The dtypes gmmlib computes in: the Cholesky factorisations and triangular solves have no
# half-precision kernels (every check of a dtype reads this, with its own message)
FLOAT_DTYPES = (torch.float32, torch.float64)


def check_dtype_device(dtype=None, device=None):
    """Return ``(dtype, device)`` if gmmlib can compute in them, else raise ``ValueError``:
    float32 or float64 only (the Cholesky factorisations and triangular solves have no
    half-precision kernels), and a device that exists here."""
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', "
                             f"got {device!r}") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} needs CUDA, which this machine does not have; use 'cpu'")
    return dtype, device


def float_dtype_like(X) -> torch.dtype:
    """float32 for float32 input (a tensor or an array), float64 for anything else, as
    scikit-learn keeps float32 and promotes the rest."""
    is32 = (isinstance(X, torch.Tensor) and X.dtype == torch.float32) or \
        (isinstance(X, np.ndarray) and X.dtype == np.float32)
    return torch.float32 if is32 else torch.float64


def check_positive(value, name: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_nonnegative(value, name: str) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_nonnegative_int(value, name: str) -> int:
    """Return ``value`` if it is an integer >= 0, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def check_positive_int(value, name: str) -> int:
    """Return ``value`` if it is an integer >= 1, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_probability_vector(weights: torch.Tensor, name: str = "weights") -> torch.Tensor:
    """Raise unless ``weights`` is 1-D, non-negative and sums to 1 (to 1e-6)."""
    if weights.ndim != 1:
        raise ValueError(f"{name} must be 1-D of shape (n_components,), got {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative (they should be in the range "
                         f"[0, 1], in scikit-learn's words), got {weights.tolist()}")
    total = float(weights.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1 (they should be normalized), they sum to "
                         f"{total:.6g}; divide by their sum")
    return weights


def optional(check):
    """The checker ``check`` that lets None through."""
    def check_or_none(value, name: str):
        return None if value is None else check(value, name)
    check_or_none.__doc__ = f"None, or {check.__name__}"
    return check_or_none


def checked(table: dict, values: dict) -> dict:
    """Each argument named in ``table`` (name -> checker), taken from ``values`` (a function's
    ``locals()``) and checked; returns the checked values in the table's order."""
    return {name: check(values[name], name) for name, check in table.items()}


def user_stacklevel() -> int:
    """``warnings.warn``'s ``stacklevel`` for the first frame outside gmmlib, from the function
    that calls ``warnings.warn``: a warning then names the user's line however deep the
    library's own frames run (``unchanged_on_error``'s wrapper, shared helpers, and the
    wrapper of ``@torch.no_grad()`` around a gmmlib function); a fixed level named
    ``mixture.py``'s wrapper for fit_gd's and fit_em's warnings."""
    import os
    import sys
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    decorator = os.path.join("torch", "utils", "_contextlib.py")
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(package)
                                 or frame.f_code.co_filename.endswith(decorator)):
        frame, level = frame.f_back, level + 1
    return level
