"""Checks at the public edge of gmmlib.

Every public function validates what a user hands it here and raises a ``ValueError`` that
names the argument, says what was wrong and what to do about it. Nothing below this layer
checks again, so the inner loops stay fast.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["as_data", "as_numbers", "float_dtype_like", "make_generator", "check_dtype_device", "check_positive",
           "check_nonnegative", "check_positive_int", "check_nonnegative_int",
           "check_probability_vector"]


def as_data(X, *, n_features=None, dtype=None, device=None, min_rows=1, name="X") -> torch.Tensor:
    """Return ``X`` as a 2-D floating tensor ``(N, D)`` on ``device``/``dtype``, or raise.

    Raises ``ValueError`` when ``X`` is not 2-D, has the wrong number of columns, holds NaN or
    infinity, or has fewer than ``min_rows`` rows.
    """
    if isinstance(X, torch.Tensor):
        t = X.detach()
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ValueError(f"{name} must be array-like of numbers, got {type(X).__name__}") from exc
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must hold numbers, got an array of dtype {arr.dtype}; "
                             "convert it with np.asarray(X, dtype=float)")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        hint = " (use X.reshape(-1, 1) for a single feature)" if t.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D with shape (n_samples, n_features), got shape "
                         f"{tuple(t.shape)}{hint}")
    if n_features is not None and t.shape[1] != n_features:
        raise ValueError(f"{name} has {t.shape[1]} features but the model was built for "
                         f"{n_features}; pass data with {n_features} columns or build the model "
                         f"with n_features={t.shape[1]}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} has {t.shape[0]} samples but at least {min_rows} are needed "
                         f"(a mixture of {min_rows} components needs at least that many points); "
                         "pass more data or use fewer components")
    if t.is_complex():
        raise ValueError(f"{name} is complex; a mixture of real Gaussians needs real data (pass "
                         "X.real, or stack real and imaginary parts as separate features)")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype() if dtype is None else dtype)
    t = t.to(device=device, dtype=dtype)
    if t.numel() == 0:
        return t
    # one reduction, the largest magnitude: NaN or inf anywhere makes it non-finite
    largest = float(torch.linalg.vector_norm(t, ord=math.inf))
    if not math.isfinite(largest):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        hint = (f" (values beyond ±{torch.finfo(t.dtype).max:.3g} overflow {t.dtype} when "
                "converted: rescale X)") if t.dtype != torch.float64 else ""
        raise ValueError(f"{name} contains NaN or infinity in {bad} row(s){hint}; remove or impute "
                         "those rows before fitting")
    limit = math.sqrt(torch.finfo(t.dtype).max) * 1e-4  # squared distances stay far from overflow
    if largest > limit:
        raise ValueError(f"{name} has values up to {largest:.3g}, too large for {t.dtype} arithmetic "
                         f"(squared distances would overflow; the limit is {limit:.2g}): rescale X, "
                         "for example standardise each feature")
    return t


def as_numbers(value, name: str, expected: str, *, dtype=None, device=None) -> torch.Tensor:
    """``value`` as a tensor, or a ``ValueError`` saying "``name`` must be ``expected``" instead
    of torch's or numpy's message about strings or ragged lists."""
    try:
        return torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be {expected}, got {value!r}") from exc


def make_generator(generator=None, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` from ``None`` (seeded from entropy), an int seed, or a generator
    (returned as it is); anything else is a ``ValueError``."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is not None and (isinstance(generator, bool) or not isinstance(generator, numbers.Integral)):
        raise ValueError(f"generator must be None, an int seed or a torch.Generator, got "
                         f"{type(generator).__name__} {generator!r}")
    g = torch.Generator(device=device)
    if generator is None:
        g.seed()
        return g
    try:
        g.manual_seed(int(generator))
    except (RuntimeError, OverflowError, ValueError) as exc:
        raise ValueError(f"generator seed {generator} is out of range; use an int in [0, 2**64)") from exc
    return g


def check_dtype_device(dtype=None, device=None):
    """Return ``(dtype, device)`` if gmmlib can compute in them, else raise ``ValueError``:
    float32 or float64 only (the Cholesky factorisations and triangular solves have no
    half-precision kernels), and a device that exists here."""
    if dtype is not None and dtype not in (torch.float32, torch.float64):
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
        raise ValueError(f"{name} must be finite and non-negative, got {weights.tolist()}")
    total = float(weights.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, they sum to {total:.6g}; divide by their sum")
    return weights
