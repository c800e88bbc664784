"""Data: the seed project's generator, for every covariance family; Bishop's inverse problem
(the mixture density network's classic test, with its exact conditional density); and the Old
Faithful geyser data, shipped with the package."""
from __future__ import annotations

import numbers

from importlib import resources
from typing import NamedTuple

import numpy as np
import torch

from ._validation import as_numbers, check_dtype_device, check_positive, check_positive_int
from .families import get_family
from .mixture import GaussianMixture

__all__ = ["GeneratedData", "generate_data", "random_covariances", "inverse_problem",
           "inverse_problem_log_prob", "load_faithful"]


class GeneratedData(NamedTuple):
    """Points, the component each came from, and the mixture that generated them."""
    X: torch.Tensor  # (N, D)
    labels: torch.Tensor  # (N,)
    truth: GaussianMixture


def random_covariances(rng: np.random.Generator, n_components: int, n_features: int,
                       covariance_type: str, *, scale: float = 1.0,
                       constant_variance: float = 1.0) -> np.ndarray:
    """Random covariances of a family, in scikit-learn's shape, with variances near ``scale``.

    Full ones are ``Q diag(v) Qᵀ`` with a random rotation ``Q`` and variances ``v`` drawn
    log-uniformly in [scale/4, scale]; the other families restrict that.
    """
    return get_family(covariance_type).random_covariances(
        rng, n_components, n_features, scale=scale, constant_variance=constant_variance)


def generate_data(n_samples: int = 1000, n_components: int = 5, n_features: int = 2,
                  radius: float = 8.0, covariance_type: str = "full", seed: int | None = 0, *,
                  constant_variance: float = 1.0, dtype=torch.float64) -> GeneratedData:
    """Sample a data set from a random mixture, as the seed's demo does.

    Means are uniform in ``[-radius, radius]^D``, weights near-uniform (Dirichlet(5)),
    covariances random members of ``covariance_type`` (see :func:`random_covariances`).
    ``seed``: a non-negative int, or None for fresh entropy (NumPy's ``default_rng``; torch's
    and NumPy's global generators are never used). The points are drawn in float64 and
    returned in ``dtype``, so the same seed gives the same data set in float32, rounded.

    Returns
    -------
    GeneratedData
        ``(X, labels, truth)``: points (N, D), component labels (N,), the true mixture.

    Examples
    --------
    >>> X, labels, truth = generate_data(500, 3, 2, seed=1)
    >>> X.shape, truth.n_components
    (torch.Size([500, 2]), 3)
    """
    N = check_positive_int(n_samples, "n_samples")
    K = check_positive_int(n_components, "n_components")
    D = check_positive_int(n_features, "n_features")
    radius = check_positive(radius, "radius")
    if radius > 1e100:
        raise ValueError(f"radius must be at most 1e100 (the data's squared distances must not "
                         f"overflow), got {radius:g}")
    dtype, _ = check_dtype_device(dtype)
    rng = _rng(seed)
    means = rng.uniform(-radius, radius, size=(K, D))
    weights = rng.dirichlet(np.full(K, 5.0))
    cov = random_covariances(rng, K, D, covariance_type, constant_variance=constant_variance)
    truth = GaussianMixture.from_parameters(weights, means, cov, covariance_type, dtype=torch.float64)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    X, labels = truth.sample(N, generator=gen, return_labels=True)  # float64 whatever dtype
    return GeneratedData(X.to(dtype), labels, truth.to(dtype))


# Bishop's inverse problem: t = f(x) + u, x ~ U(0, 1), u ~ U(-NOISE, NOISE), f(x) = x + 0.3 sin 2 pi x.
_NOISE = 0.1


def _forward_map(x: torch.Tensor) -> torch.Tensor:
    return x + 0.3 * torch.sin(2 * torch.pi * x)


# f' = 1 + 0.6 pi cos(2 pi x) vanishes at a and 1 - a: f rises, falls, rises on these pieces
_TURN = float(np.arccos(-1 / (0.6 * np.pi)) / (2 * np.pi))  # 0.3390
_PIECES = ((0.0, _TURN), (_TURN, 1 - _TURN), (1 - _TURN, 1.0))


def _rng(seed) -> np.random.Generator:
    """NumPy's generator for ``seed``, a non-negative int or None (fresh entropy), or a
    ``ValueError`` naming ``seed``."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    return np.random.default_rng(seed)


def inverse_problem(n_samples: int = 1000, *, seed: int | None = 0,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Bishop's (1994; PRML §5.6) inverse problem: predict ``x`` from ``t``.

    ``x ~ U(0, 1)`` and ``t = f(x) + u`` with ``f(x) = x + 0.3 sin(2 pi x)`` and
    ``u ~ U(-0.1, 0.1)``. The forward map ``x -> t`` is a function; for ``t`` between f's local
    minimum 0.407 and maximum 0.593 the noise-free inverse has three branches, and for ``t``
    in (0.307, 0.693) the targets lie on more than one, so least squares averages branches.

    Returns
    -------
    (t, x) : two (n_samples, 1) tensors: inputs and targets of the inverse problem.

    Examples
    --------
    >>> t, x = inverse_problem(5, seed=0)
    >>> t.shape, x.shape
    (torch.Size([5, 1]), torch.Size([5, 1]))
    """
    n = check_positive_int(n_samples, "n_samples")
    dtype, _ = check_dtype_device(dtype)  # an integer dtype truncated every t and x to 0
    g = torch.Generator().manual_seed(int(_rng(seed).integers(2**62)))
    x = torch.rand(n, 1, generator=g, dtype=torch.float64)
    u = (2 * torch.rand(n, 1, generator=g, dtype=torch.float64) - 1) * _NOISE
    return (_forward_map(x) + u).to(dtype), x.to(dtype)


def _inverse_on(piece, c: torch.Tensor) -> torch.Tensor:
    """The x in ``piece`` with f(x) = c, for c within f's range on it (bisection, float64)."""
    lo = torch.full_like(c, piece[0])
    hi = torch.full_like(c, piece[1])
    rising = float(_forward_map(torch.tensor(piece[1]))) > float(_forward_map(torch.tensor(piece[0])))
    for _ in range(60):  # 2^-60 of the piece's width: float64 resolution
        mid = (lo + hi) / 2
        below = (_forward_map(mid) < c) == rising
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def _support_length(t: torch.Tensor) -> torch.Tensor:
    """|A(t)|, the length of A(t) = {x in [0, 1] : |t - f(x)| < 0.1}, exactly (to float64)."""
    total = torch.zeros_like(t)
    for piece in _PIECES:
        ends = _forward_map(torch.tensor(piece, dtype=torch.float64))
        lo, hi = ends.min(), ends.max()
        a = _inverse_on(piece, (t - _NOISE).clamp(lo, hi))
        b = _inverse_on(piece, (t + _NOISE).clamp(lo, hi))
        total = total + (b - a).abs()
    return total


def inverse_problem_log_prob(x, t) -> torch.Tensor:
    """The exact conditional log-density ``log p(x | t)`` of :func:`inverse_problem`.

    With ``x`` and the noise uniform, ``p(x | t)`` is uniform on the set
    ``A(t) = {x in [0, 1] : |t - f(x)| < 0.1}`` (one interval or two: the inverse's branches,
    widened by the noise until neighbours touch): ``-log |A(t)|`` there and ``-inf`` elsewhere. ``|A(t)|`` is computed exactly
    from the inverse of ``f`` on its three monotone pieces. Its mean over held-out pairs is
    the Bayes limit of the held-out NLL: no model of ``p(x | t)`` does better on average.

    Parameters
    ----------
    x, t : tensors or arrays of the same shape (e.g. (N, 1) or (N,))
        Targets and inputs; broadcast against each other.

    Returns
    -------
    float64 tensor of their broadcast shape.

    Examples
    --------
    >>> t, x = inverse_problem(4000, seed=1, dtype=torch.float64)
    >>> round(float(-inverse_problem_log_prob(x, t).mean()), 2)  # the Bayes limit of the NLL
    -1.28
    """
    x = as_numbers(x, "x", "a tensor or array of numbers", dtype=torch.float64)
    t = as_numbers(t, "t", "a tensor or array of numbers", dtype=torch.float64)
    for name, v in (("x", x), ("t", t)):
        if bool(v.isnan().any()):  # NaN compared False: -inf, as if impossible (an infinite
            # value is outside A(t), -inf rightly)
            raise ValueError(f"{name} contains NaN; drop those pairs")
    try:
        x, t = torch.broadcast_tensors(x, t)
    except RuntimeError:
        raise ValueError(f"x and t must broadcast against each other (the same shape, e.g. "
                         f"(N, 1)), got {tuple(x.shape)} and {tuple(t.shape)}") from None
    inside = ((t - _forward_map(x)).abs() < _NOISE) & (x >= 0) & (x <= 1)
    return torch.where(inside, -_support_length(t).log(), torch.tensor(-torch.inf, dtype=torch.float64))


def load_faithful(*, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The Old Faithful geyser data: R's ``datasets::faithful``, 272 eruptions.

    Column 0 is the eruption's duration, column 1 the waiting time to the next eruption, both
    in minutes. The data ship inside the package (``gmmlib/datasets/faithful.csv``, copied from
    R): no download, works offline. They are as R has them: the durations were rounded
    (often to whole seconds or to 0.1 minute), the waiting times are whole minutes, and only
    256 of the 272 rows are distinct, so a mixture fitted to them can place a component on
    repeated points: a reason for the variance floor.

    Source: W. Härdle (1991), *Smoothing Techniques with Implementation in S*, Springer; a more
    complete version is in A. Azzalini and A. W. Bowman (1990), "A look at some data on the Old
    Faithful geyser", *Applied Statistics* 39, 357-365. PRML's figures 9.1 and 9.8 use them
    (standardised).

    Returns
    -------
    (272, 2) tensor, ``dtype`` (float64 by default).

    Examples
    --------
    >>> X = load_faithful()
    >>> X.shape, X[0].tolist()
    (torch.Size([272, 2]), [3.6, 79.0])
    """
    text = resources.files("gmmlib").joinpath("datasets/faithful.csv").read_text()
    rows = [line.split(",") for line in text.splitlines() if line and not line.startswith("#")]
    assert rows[0] == ["eruptions", "waiting"], rows[0]
    dtype, _ = check_dtype_device(dtype)  # an integer dtype truncated 3.6 to 3
    return torch.tensor([[float(v) for v in row] for row in rows[1:]], dtype=dtype)
